//! The scan collector: hashed executables become records.

use std::path::Path;

use privtel_hash::ScanReport;
use privtel_model::{
    BinarySighting, DeviceId, Event, EventBody, EventId, Execution, Personal, Program, Record, RecordBody,
    Timestamp, UserId,
};

use crate::error::AgentError;

/// Checks that every scan root exists and can be read, before a scan that
/// would otherwise report an empty machine.
///
/// # Errors
///
/// [`AgentError::ScanRoot`] naming the first root that does not exist or
/// cannot be read.
pub fn check_scan_roots<P: AsRef<Path>>(roots: &[P]) -> Result<(), AgentError> {
    for root in roots {
        let root = root.as_ref();
        let err = |source| AgentError::ScanRoot { path: root.to_owned(), error: source };
        let meta = std::fs::metadata(root).map_err(err)?;
        if meta.is_dir() {
            std::fs::read_dir(root).map_err(err)?;
        } else {
            std::fs::File::open(root).map_err(err)?;
        }
    }
    Ok(())
}

/// The event id of an execution seen by a scan: from the device, the path
/// and the digest, so scanning an unchanged machine again yields the same
/// ids (and the service stores each once). The agent keys it with the
/// device's secret before the filter (`EventIdKey`): unkeyed, it would give
/// back the path the policy withholds to anyone testing guesses.
fn scan_event_id(device: &DeviceId, path: &Path, sha256: &privtel_model::Digest) -> EventId {
    crate::event_id::derive(
        "privtel-agent 2026-11 scan event id",
        &[device.as_str().as_bytes(), path.as_os_str().as_encoded_bytes(), sha256.as_bytes()],
    )
}

/// The login name of user number `uid` in a `passwd(5)` text (one
/// account a line: `name:password:uid:gid:…`); `None` when no line names
/// that number. Lines that are not of that shape are skipped.
///
/// ```
/// use privtel_agent::login_of_uid;
///
/// let passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\n";
/// assert_eq!(login_of_uid(passwd, 1000), Some("alice"));
/// assert_eq!(login_of_uid(passwd, 0), Some("root"));
/// assert_eq!(login_of_uid(passwd, 7), None);
/// ```
pub fn login_of_uid(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut cols = line.split(':');
        let (name, _, id) = (cols.next()?, cols.next()?, cols.next()?);
        // A name with a control character (a stray `\r`) is no login.
        let plain = !name.is_empty() && !name.starts_with('#') && !name.chars().any(char::is_control);
        (plain && id.parse() == Ok(uid)).then_some(name)
    })
}

/// The operating system's login name of the owner of the file at `path`,
/// where the agent can tell: on Unix, the owner's number looked up in
/// `/etc/passwd` (read once per scan into `passwd`); elsewhere none.
fn owner_login(path: &Path, passwd: &mut Option<String>) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata(path).ok()?.uid();
        let text = passwd.get_or_insert_with(|| std::fs::read_to_string("/etc/passwd").unwrap_or_default());
        login_of_uid(text, uid).map(str::to_owned)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, passwd);
        None
    }
}

/// What the enrichment program sends of a scan (Enhance): one sighting per
/// hashed executable — its digests, size, format and the day of `now` —
/// and nothing of the device, its users or the file's path and name. They
/// leave only through [`Agent::enhance`](crate::Agent::enhance), on a
/// session that names no device.
///
/// ```
/// let scan = privtel_hash::ScanReport::default();
/// assert!(privtel_agent::sightings_from_scan(&scan, privtel_model::Timestamp::UNIX_EPOCH).is_empty());
/// ```
pub fn sightings_from_scan(scan: &ScanReport, now: Timestamp) -> Vec<BinarySighting> {
    scan.hashed
        .iter()
        .filter_map(|file| {
            let sha256 = file.digests.sha256?;
            Some(BinarySighting::new(sha256, file.digests.blake3, file.size, file.format.clone(), now))
        })
        .collect()
}

/// The execution events of a scan: one per hashed executable, concerning
/// `user`, on `device`. The execution's `username` is the operating
/// system's login name of the file's owner (the account that put it
/// there), never the user id; withheld where the agent cannot tell.
///
/// These name a device and a person, so they are not what Enhance sends
/// (see [`sightings_from_scan`] for that): the binaries of a scan are no
/// longer records at all.
pub fn records_from_scan(
    scan: &ScanReport,
    device: &DeviceId,
    user: Option<&UserId>,
    now: Timestamp,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(scan.hashed.len());
    let mut passwd = None;
    for file in &scan.hashed {
        let Some(sha256) = file.digests.sha256 else { continue };
        let path = file.path.display().to_string();
        out.push(Record {
            program: Program::PersonalisedUsage,
            body: RecordBody::Event(Event {
                id: scan_event_id(device, &file.path, &sha256),
                device: device.clone(),
                user: user.cloned(),
                recorded_at: now,
                body: EventBody::Execution(Execution {
                    sha256,
                    username: owner_login(&file.path, &mut passwd)
                        .map_or(Personal::Withheld, Personal::Clear),
                    path: Personal::Clear(path),
                    start: file.modified.map_or(Personal::Withheld, Personal::Clear),
                    duration: Personal::Withheld,
                }),
            }),
        });
    }
    out
}
