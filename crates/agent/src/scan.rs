//! The scan collector: hashed executables become records.

use std::path::Path;

use privtel_hash::ScanReport;
use privtel_model::{
    Binary, BinaryExecution, DeviceId, Event, EventBody, EventId, Personal, Program, Record, RecordBody,
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
/// ids (and the service stores each once).
fn scan_event_id(device: &DeviceId, path: &Path, sha256: &privtel_model::Digest) -> EventId {
    crate::event_id::derive(
        "privtel-agent 2026-11 scan event id",
        &[device.as_str().as_bytes(), path.as_os_str().as_encoded_bytes(), sha256.as_bytes()],
    )
}

/// Records for every hashed executable of a scan: the binary (enrichment)
/// and one execution event by `user`.
pub fn records_from_scan(
    scan: &ScanReport,
    device: &DeviceId,
    user: Option<&UserId>,
    now: Timestamp,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(scan.hashed.len() * 2);
    for file in &scan.hashed {
        let Some(sha256) = file.digests.sha256 else { continue };
        let path = file.path.display().to_string();
        out.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Binary(Binary {
                sha256,
                blake3: file.digests.blake3,
                file_name: file
                    .path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: Personal::Clear(path.clone()),
                version: None,
                publisher: None,
                size: file.size,
                format: file.format.clone(),
            }),
        });
        out.push(Record {
            program: Program::Enrichment,
            body: RecordBody::Event(Event {
                id: scan_event_id(device, &file.path, &sha256),
                device: device.clone(),
                user: user.cloned(),
                recorded_at: now,
                body: EventBody::Execution(BinaryExecution {
                    sha256,
                    username: user.map_or(Personal::Withheld, |u| Personal::Clear(u.to_string())),
                    path: Personal::Clear(path),
                    start: file.modified.map_or(Personal::Withheld, Personal::Clear),
                    duration: Personal::Withheld,
                }),
            }),
        });
    }
    out
}
