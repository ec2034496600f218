//! Device information (OS release, kernel, CPU, memory, disks, the
//! agent's privileges) and performance samples (load, memory, disks).

use privtel_model::{
    ConfigSample, Device, DeviceId, DeviceType, Event, EventBody, Finite, OsFamily, OsInfo,
    PerformanceSample, Personal, Privileges, Program, Record, RecordBody, Timestamp,
};

use super::{CollectError, CpuInfo, HostFiles, MemInfo};

/// The product name of the device's own configuration and performance
/// samples (`PerformanceSample::product`).
pub const DEVICE_PRODUCT: &str = "device";

/// The file systems that hold files, summed (pseudo file systems such as
/// `proc`, `tmpfs` or `cgroup` left out, each device counted once). No
/// mount point is kept: a mount point can name a person
/// (`/media/alice/USB`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct DiskTotals {
    /// File systems counted.
    pub filesystems: u32,
    /// Their size, bytes.
    pub total: u64,
    /// What an unprivileged user may still write, bytes.
    pub available: u64,
}

/// What the device is. `Debug` leaves out the host name (personal).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The OS: family, `PRETTY_NAME` (or `NAME VERSION_ID`), the kernel
    /// release as the build.
    pub os: OsInfo,
    /// The host name (personal: often names its user).
    pub hostname: Option<String>,
    /// The CPU.
    pub cpu: CpuInfo,
    /// The memory.
    pub memory: MemInfo,
    /// The disks.
    pub disks: DiskTotals,
    /// The rights of the account the agent runs as.
    pub privileges: Privileges,
}

impl std::fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceInfo")
            .field("os", &self.os)
            .field("cpu", &self.cpu)
            .field("memory", &self.memory)
            .field("disks", &self.disks)
            .field("privileges", &self.privileges)
            .finish_non_exhaustive()
    }
}

fn event_id(device: &DeviceId, kind: &str, key: &str, now: Timestamp) -> privtel_model::EventId {
    crate::event_id::derive(
        "privtel-agent 2026-12 device sample event id",
        &[device.as_str().as_bytes(), kind.as_bytes(), key.as_bytes(), &now.unix_nanos().to_le_bytes()],
    )
}

fn event(device: &DeviceId, key: &str, now: Timestamp, body: EventBody) -> Record {
    Record {
        program: Program::AnonymousUsage,
        body: RecordBody::Event(Event {
            id: event_id(device, body.kind_name(), key, now),
            device: device.clone(),
            user: None,
            recorded_at: now,
            body,
        }),
    }
}

impl DeviceInfo {
    /// The records of this description, under anonymous usage: a
    /// [`Device`] (host name in clear for the filter to treat, no IP
    /// address) and one configuration event each for the logical CPUs,
    /// the memory, the disks and the agent's privileges (the model's
    /// `Device` has no field for them).
    pub fn records(&self, device: &DeviceId, now: Timestamp) -> Vec<Record> {
        let mut out = vec![Record {
            program: Program::AnonymousUsage,
            body: RecordBody::Device(Device {
                id: device.clone(),
                name: self.hostname.clone().map_or(Personal::Withheld, Personal::Clear),
                os: self.os.clone(),
                device_type: if self.cpu.hypervisor { DeviceType::Virtual } else { DeviceType::Other },
                cpu: self.cpu.model.clone().unwrap_or_else(|| "unknown".to_owned()),
                gpu: None,
                ip: Personal::Withheld,
                last_seen: now,
            }),
        }];
        let privileges = match self.privileges {
            Privileges::Guest => "guest",
            Privileges::Standard => "standard",
            Privileges::Administrator => "administrator",
            Privileges::System => "system",
            _ => "other",
        };
        let settings = [
            ("cpu_logical", self.cpu.logical.to_string()),
            ("memory_total_bytes", self.memory.total.to_string()),
            ("disk_total_bytes", self.disks.total.to_string()),
            ("filesystems", self.disks.filesystems.to_string()),
            ("agent_privileges", privileges.to_owned()),
        ];
        for (key, value) in settings {
            let body = EventBody::Configuration(ConfigSample {
                product: DEVICE_PRODUCT.to_owned(),
                key: key.to_owned(),
                value,
            });
            out.push(event(device, key, now, body));
        }
        out
    }
}

/// Performance samples as records under anonymous usage, one event each.
pub(crate) fn sample_records(
    samples: Vec<PerformanceSample>,
    device: &DeviceId,
    now: Timestamp,
) -> Vec<Record> {
    samples
        .into_iter()
        .map(|s| {
            let key = s.metric.clone();
            event(device, &key, now, EventBody::Performance(s))
        })
        .collect()
}

/// Reads what the device is.
///
/// # Errors
///
/// [`CollectError::NotSupported`] off Linux; [`CollectError::Read`] or
/// [`CollectError::Parse`] when `os-release`, `/proc/cpuinfo` or
/// `/proc/meminfo` cannot be read or parsed.
pub fn device_info(files: &HostFiles) -> Result<DeviceInfo, CollectError> {
    #[cfg(target_os = "linux")]
    {
        linux::device_info(files)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = files;
        Err(super::not_supported("device information"))
    }
}

/// Measures the device now: load averages, threads, memory used and
/// available, disk space used and available, uptime.
///
/// # Errors
///
/// [`CollectError::NotSupported`] off Linux; [`CollectError::Read`] or
/// [`CollectError::Parse`] when `/proc/loadavg` or `/proc/meminfo` cannot
/// be read or parsed.
pub fn performance_samples(files: &HostFiles) -> Result<Vec<PerformanceSample>, CollectError> {
    #[cfg(target_os = "linux")]
    {
        linux::performance_samples(files)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = files;
        Err(super::not_supported("performance"))
    }
}

/// A sample of `metric` (`unit`), if `value` is finite.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn sample(metric: &str, value: f64, unit: &str) -> Option<PerformanceSample> {
    Some(PerformanceSample {
        product: DEVICE_PRODUCT.to_owned(),
        metric: metric.to_owned(),
        value: Finite::new(value).ok()?,
        unit: unit.to_owned(),
    })
}

/// The OS as the model describes it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn os_info(release: &super::OsRelease, kernel: Option<String>) -> OsInfo {
    let version = release
        .pretty_name
        .clone()
        .or_else(|| match (&release.name, &release.version_id) {
            (Some(n), Some(v)) => Some(format!("{n} {v}")),
            (n, v) => n.clone().or_else(|| v.clone()),
        })
        .unwrap_or_else(|| "Linux".to_owned());
    OsInfo { family: OsFamily::Linux, version, build: kernel }
}

/// File system types that hold no files of their own.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "nsfs",
    "ramfs",
    "rpc_pipefs",
    "efivarfs",
    "squashfs",
    "overlay",
    "nfsd",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// A mount point as `/proc/self/mounts` writes it, with `\040`-style
/// octal escapes undone.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unescape_mount(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeSet;
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    pub(super) fn device_info(files: &HostFiles) -> Result<DeviceInfo, CollectError> {
        let release_path = files.etc.join("os-release");
        let text = std::fs::read_to_string(&release_path)
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .map_err(|error| CollectError::Read { path: release_path, error })?;
        let release = crate::collect::parse_os_release(&text)?;
        let line =
            |name: &str| files.proc_text(name).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let os = os_info(&release, line("sys/kernel/osrelease"));
        let hostname = line("sys/kernel/hostname");
        let cpu = crate::collect::parse_cpuinfo(&files.proc_text("cpuinfo")?)?;
        let memory = crate::collect::parse_meminfo(&files.proc_text("meminfo")?)?;
        let disks = disks(files);
        let privileges = {
            use std::os::unix::fs::MetadataExt as _;
            // The owner of /proc/self is the agent's effective user.
            let uid = std::fs::metadata(files.proc.join("self")).map(|m| m.uid()).ok();
            let passwd = files.etc_text("passwd");
            let group = files.etc_text("group");
            match uid {
                Some(uid) => crate::collect::privileges_of(
                    uid,
                    crate::login_of_uid(&passwd, uid).unwrap_or(""),
                    &group,
                ),
                None => Privileges::Standard,
            }
        };
        Ok(DeviceInfo { os, hostname, cpu, memory, disks, privileges })
    }

    /// The file systems in `/proc/self/mounts` that hold files, summed.
    fn disks(files: &HostFiles) -> DiskTotals {
        let mut totals = DiskTotals::default();
        let Ok(mounts) = files.proc_text("self/mounts") else { return totals };
        let mut seen = BTreeSet::new();
        for line in mounts.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(source), Some(point), Some(kind)) = (f.next(), f.next(), f.next()) else { continue };
            if PSEUDO_FILESYSTEMS.contains(&kind) || !seen.insert(source.to_owned()) {
                continue;
            }
            let point = unescape_mount(point);
            let Ok(st) = rustix::fs::statvfs(std::ffi::OsStr::from_bytes(&point)) else { continue };
            if st.f_blocks == 0 {
                continue;
            }
            totals.filesystems += 1;
            totals.total = totals.total.saturating_add(st.f_blocks.saturating_mul(st.f_frsize));
            totals.available = totals.available.saturating_add(st.f_bavail.saturating_mul(st.f_frsize));
        }
        totals
    }

    pub(super) fn performance_samples(files: &HostFiles) -> Result<Vec<PerformanceSample>, CollectError> {
        let load = crate::collect::parse_loadavg(&files.proc_text("loadavg")?)?;
        let memory = crate::collect::parse_meminfo(&files.proc_text("meminfo")?)?;
        let disks = disks(files);
        let uptime = files
            .proc_text("uptime")
            .ok()
            .and_then(|t| t.split_ascii_whitespace().next().and_then(|v| v.parse::<f64>().ok()));
        let mut out: Vec<PerformanceSample> = [
            sample("load_1m", load.one, "load"),
            sample("load_5m", load.five, "load"),
            sample("load_15m", load.fifteen, "load"),
            sample("threads_running", f64::from(load.running), "count"),
            sample("threads_total", f64::from(load.total), "count"),
            sample("memory_used_bytes", memory.total.saturating_sub(memory.available) as f64, "bytes"),
            sample("memory_available_bytes", memory.available as f64, "bytes"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if disks.filesystems > 0 {
            out.extend(sample(
                "disk_used_bytes",
                disks.total.saturating_sub(disks.available) as f64,
                "bytes",
            ));
            out.extend(sample("disk_available_bytes", disks.available as f64, "bytes"));
        }
        out.extend(uptime.and_then(|u| sample("uptime_seconds", u, "s")));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount(r"/media/a\040b"), b"/media/a b");
        assert_eq!(unescape_mount(r"/x\\"), br"/x\\");
        assert_eq!(unescape_mount(r"/x\04"), br"/x\04");
        assert_eq!(unescape_mount(r"\777"), br"\777");
    }
}
