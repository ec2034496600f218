//! Parsers of the text files the Linux collectors read (`/proc/PID/stat`,
//! `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`, `/proc/cpuinfo`,
//! `/etc/os-release`, `/etc/group`). Pure functions of the text, so they
//! are tested and fuzzed on every system; a text that does not have the
//! expected shape is a [`ProcError`] naming the file and what was
//! expected, never the value.

use privtel_model::Privileges;

/// A `/proc` or `/etc` text that does not have the expected shape.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{file}: {expected}")]
#[non_exhaustive]
pub struct ProcError {
    /// The file, with `PID` for a process's number (`/proc/PID/stat`).
    pub file: &'static str,
    /// What was expected there.
    pub expected: &'static str,
}

fn err(file: &'static str, expected: &'static str) -> ProcError {
    ProcError { file, expected }
}

/// What the collectors use of `/proc/PID/stat`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ProcStat {
    /// The process id (field 1).
    pub pid: u32,
    /// The state letter (field 3): `R`, `S`, `Z` (a zombie has no
    /// executable left), …
    pub state: char,
    /// When the process started, in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so the fields after it are
/// counted from the *last* `)`.
///
/// ```
/// use privtel_agent::collect::parse_proc_stat;
///
/// let line = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615";
/// let stat = parse_proc_stat(line)?;
/// assert_eq!((stat.pid, stat.state, stat.start_ticks), (4242, 'S', 987654));
/// assert!(parse_proc_stat("4242 (cut").is_err());
/// # Ok::<(), privtel_agent::collect::ProcError>(())
/// ```
///
/// # Errors
///
/// [`ProcError`] when there is no `pid (comm)` head or field 22 is not a
/// number.
pub fn parse_proc_stat(text: &str) -> Result<ProcStat, ProcError> {
    const FILE: &str = "/proc/PID/stat";
    let open = text.find('(').ok_or(err(FILE, "expected 'pid (command)' then fields"))?;
    let close = text.rfind(')').filter(|&c| c > open).ok_or(err(FILE, "expected ')' after the command"))?;
    let pid = text[..open].trim().parse().map_err(|_| err(FILE, "expected the process id first"))?;
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let state = rest
        .next()
        .and_then(|s| {
            let mut c = s.chars();
            c.next().filter(|_| c.next().is_none())
        })
        .ok_or(err(FILE, "expected a one-letter state in field 3"))?;
    // Field 22 is the 20th after the state (field 3).
    let start_ticks = rest
        .nth(18)
        .and_then(|s| s.parse().ok())
        .ok_or(err(FILE, "expected the start time in clock ticks in field 22"))?;
    Ok(ProcStat { pid, state, start_ticks })
}

/// The boot time (`btime`, seconds since 1970) from `/proc/stat`.
///
/// ```
/// assert_eq!(privtel_agent::collect::parse_boot_time("cpu 1 2 3\nbtime 1764547200\n"), Ok(1764547200));
/// assert!(privtel_agent::collect::parse_boot_time("cpu 1 2 3\n").is_err());
/// ```
///
/// # Errors
///
/// [`ProcError`] when no `btime` line holds a non-negative number.
pub fn parse_boot_time(text: &str) -> Result<i64, ProcError> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&v| v >= 0)
        .ok_or(err("/proc/stat", "expected a line 'btime SECONDS'"))
}

/// What the collectors use of `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (kernels since 3.14), else `MemFree`.
    pub available: u64,
}

/// Parses `/proc/meminfo` (`Key:   value kB` lines).
///
/// ```
/// let m = privtel_agent::collect::parse_meminfo("MemTotal:  2048 kB\nMemFree: 512 kB\nMemAvailable: 1024 kB\n")?;
/// assert_eq!((m.total, m.available), (2048 * 1024, 1024 * 1024));
/// # Ok::<(), privtel_agent::collect::ProcError>(())
/// ```
///
/// # Errors
///
/// [`ProcError`] when `MemTotal` or both of `MemAvailable` and `MemFree`
/// are missing or not numbers of kB.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ProcError> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k != key {
                return None;
            }
            let v = v.trim();
            let n = v.strip_suffix(" kB").unwrap_or(v).trim().parse::<u64>().ok()?;
            n.checked_mul(1024)
        })
    };
    let total = get("MemTotal").ok_or(err("/proc/meminfo", "expected 'MemTotal: N kB'"))?;
    let available = get("MemAvailable")
        .or_else(|| get("MemFree"))
        .ok_or(err("/proc/meminfo", "expected 'MemAvailable: N kB' or 'MemFree: N kB'"))?;
    Ok(MemInfo { total, available })
}

/// `/proc/loadavg`: the load averages and the number of processes.
#[derive(Clone, Copy, PartialEq, Debug)]
#[non_exhaustive]
pub struct LoadAvg {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
    /// Threads running now.
    pub running: u32,
    /// Threads in all.
    pub total: u32,
}

/// Parses `/proc/loadavg` (`0.52 0.58 0.59 2/734 12345`).
///
/// ```
/// let l = privtel_agent::collect::parse_loadavg("0.52 0.58 0.59 2/734 12345\n")?;
/// assert_eq!((l.one, l.running, l.total), (0.52, 2, 734));
/// assert!(privtel_agent::collect::parse_loadavg("0.52 nan 1 2/3 4").is_err());
/// # Ok::<(), privtel_agent::collect::ProcError>(())
/// ```
///
/// # Errors
///
/// [`ProcError`] when it is not three finite non-negative numbers and
/// `running/total`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ProcError> {
    let e = err("/proc/loadavg", "expected three load averages and 'running/total'");
    let mut f = text.split_ascii_whitespace();
    let mut load =
        || f.next().and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0).ok_or(e);
    let (one, five, fifteen) = (load()?, load()?, load()?);
    let (running, total) = f.next().and_then(|v| v.split_once('/')).ok_or(e)?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        running: running.parse().map_err(|_| e)?,
        total: total.parse().map_err(|_| e)?,
    })
}

/// What the collectors use of `/proc/cpuinfo`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct CpuInfo {
    /// The first `model name` (x86) or `Model`/`Hardware` (ARM), if any.
    pub model: Option<String>,
    /// Logical processors (`processor` lines).
    pub logical: u32,
    /// Whether the `hypervisor` flag is set (a virtual machine).
    pub hypervisor: bool,
}

/// Parses `/proc/cpuinfo`.
///
/// ```
/// let c = privtel_agent::collect::parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t: fpu hypervisor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14\n")?;
/// assert_eq!((c.model.as_deref(), c.logical, c.hypervisor), (Some("AMD EPYC 9R14"), 2, true));
/// # Ok::<(), privtel_agent::collect::ProcError>(())
/// ```
///
/// # Errors
///
/// [`ProcError`] when no `processor` line is found.
pub fn parse_cpuinfo(text: &str) -> Result<CpuInfo, ProcError> {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => info.logical = info.logical.saturating_add(1),
            "model name" | "Model" | "Hardware" if info.model.is_none() && !v.is_empty() => {
                info.model = Some(v.chars().filter(|c| !c.is_control()).take(128).collect());
            }
            "flags" | "Features" => info.hypervisor |= v.split_ascii_whitespace().any(|f| f == "hypervisor"),
            _ => {}
        }
    }
    if info.logical == 0 {
        return Err(err("/proc/cpuinfo", "expected at least one 'processor' line"));
    }
    Ok(info)
}

/// What the collectors use of `/etc/os-release`.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct OsRelease {
    /// `NAME` (`Debian GNU/Linux`).
    pub name: Option<String>,
    /// `VERSION_ID` (`12`).
    pub version_id: Option<String>,
    /// `PRETTY_NAME` (`Debian GNU/Linux 12 (bookworm)`).
    pub pretty_name: Option<String>,
}

/// Parses `/etc/os-release` (`KEY=value` lines, values optionally quoted).
///
/// ```
/// let r = privtel_agent::collect::parse_os_release("NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n# c\nPRETTY_NAME='Debian 12'\n")?;
/// assert_eq!((r.name.as_deref(), r.version_id.as_deref(), r.pretty_name.as_deref()), (Some("Debian GNU/Linux"), Some("12"), Some("Debian 12")));
/// # Ok::<(), privtel_agent::collect::ProcError>(())
/// ```
///
/// # Errors
///
/// [`ProcError`] when none of `NAME`, `VERSION_ID` and `PRETTY_NAME` is
/// given.
pub fn parse_os_release(text: &str) -> Result<OsRelease, ProcError> {
    let mut out = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else { continue };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        let v: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
        let slot = match k {
            "NAME" => &mut out.name,
            "VERSION_ID" => &mut out.version_id,
            "PRETTY_NAME" => &mut out.pretty_name,
            _ => continue,
        };
        *slot = Some(v).filter(|v| !v.is_empty());
    }
    if out == OsRelease::default() {
        return Err(err("/etc/os-release", "expected NAME, VERSION_ID or PRETTY_NAME"));
    }
    Ok(out)
}

/// The groups that make an account an administrator on common
/// distributions (Debian's `sudo`, Red Hat's `wheel`, Ubuntu's older
/// `admin`).
pub const ADMIN_GROUPS: [&str; 3] = ["sudo", "wheel", "admin"];

/// The rights of the account `login` (number `uid`): [`Privileges::System`]
/// for uid 0, [`Privileges::Administrator`] for a member of one of the
/// [`ADMIN_GROUPS`] in `group` (the text of `/etc/group`), else
/// [`Privileges::Standard`]. Lines of `group` that are not
/// `name:password:gid:members` are skipped.
///
/// ```
/// use privtel_agent::collect::privileges_of;
/// use privtel_model::Privileges;
///
/// let group = "root:x:0:\nsudo:x:27:alice,bob\nusers:x:100:carol\n";
/// assert_eq!(privileges_of(0, "root", group), Privileges::System);
/// assert_eq!(privileges_of(1000, "bob", group), Privileges::Administrator);
/// assert_eq!(privileges_of(1001, "carol", group), Privileges::Standard);
/// ```
pub fn privileges_of(uid: u32, login: &str, group: &str) -> Privileges {
    if uid == 0 {
        return Privileges::System;
    }
    let admin = group.lines().any(|line| {
        let mut cols = line.split(':');
        let (Some(name), Some(_), Some(_), Some(members)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            return false;
        };
        ADMIN_GROUPS.contains(&name) && members.split(',').any(|m| m.trim() == login)
    });
    if admin { Privileges::Administrator } else { Privileges::Standard }
}
