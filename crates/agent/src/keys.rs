//! Key files: 32 secret bytes, created 0600 from the operating system's
//! randomness on first use, and refused when group or others may read them;
//! and the customer's pseudonym key ring (docs/KEYS.md), kept the same way.

use std::io::{Read as _, Write as _};
use std::path::Path;

use privtel_filter::{KeyRing, Maintenance, PseudonymKey};
use privtel_model::{KeyId, Timestamp};

use crate::error::KeyError;

/// Loads the 32-byte secret at `path`, or creates it (mode 0600, from the
/// operating system's randomness, synced to disk) if there is none.
///
/// # Errors
///
/// [`KeyError::TooOpen`] if group or others may read an existing file (on
/// Unix); [`KeyError::Length`] if it does not hold exactly 32 bytes;
/// [`KeyError::Io`] if it cannot be read or created.
///
/// # Example
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("spool.key");
/// let made = privtel_agent::load_or_create_key(&path)?;
/// assert_eq!(privtel_agent::load_or_create_key(&path)?, made);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_or_create_key(path: impl AsRef<Path>) -> Result<[u8; 32], KeyError> {
    let path = path.as_ref();
    let io = |source| KeyError::Io { path: path.to_owned(), error: source };
    match std::fs::File::open(path) {
        Ok(file) => read_key(path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
            // Written whole and synced under a temporary name, then linked
            // into place (which fails if another process was first): a crash
            // never leaves a short key file behind.
            let tmp = temporary_beside(path);
            let linked = write_private(&tmp, &secret).and_then(|()| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        // The new name is durable once its folder is synced.
                        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                    }
                    Ok(secret)
                }
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &std::fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

/// Reads the customer's pseudonym key ring at `path` (its text form,
/// [`KeyRing::to_text`]); a missing file is an empty ring.
///
/// # Errors
///
/// [`KeyError::TooOpen`] if group or others may read it (on Unix);
/// [`KeyError::Ring`] if it does not parse; [`KeyError::Io`] if it cannot
/// be read.
pub fn load_key_ring(path: impl AsRef<Path>) -> Result<KeyRing, KeyError> {
    let path = path.as_ref();
    let io = |error| KeyError::Io { path: path.to_owned(), error };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyRing::new()),
        Err(e) => return Err(io(e)),
    };
    check_mode(path, &file.metadata().map_err(io)?)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    KeyRing::from_text(&text).map_err(|error| KeyError::Ring { path: path.to_owned(), error })
}

/// Writes `ring` to `path`: mode 0600, whole and synced under a temporary
/// name, then renamed over the old file (a crash leaves the old ring or
/// the new one, never half of one). A destroyed key's secret is not in the
/// new file; the old file's blocks are the file system's to reuse.
///
/// # Errors
///
/// [`KeyError::Io`] if it cannot be written.
pub fn save_key_ring(path: impl AsRef<Path>, ring: &KeyRing) -> Result<(), KeyError> {
    let path = path.as_ref();
    let io = |error| KeyError::Io { path: path.to_owned(), error };
    let tmp = temporary_beside(path);
    let renamed = write_private(&tmp, ring.to_text().as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn random_secret() -> Result<[u8; 32], KeyError> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(secret)
}

/// Rotates the ring at `path` on demand: a new current key from the
/// operating system's randomness (the previous one retired at `now`);
/// returns its id. Creates the ring if there is none.
///
/// # Errors
///
/// As [`load_key_ring`] and [`save_key_ring`]; [`KeyError::Random`].
///
/// # Example
///
/// ```
/// use privtel_model::{KeyId, Timestamp};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("pseudonym.keys");
/// let now = Timestamp::from_unix_seconds(1_800_000_000)?;
/// assert_eq!(privtel_agent::rotate_key_ring(&path, now)?, KeyId::new(1));
/// assert_eq!(privtel_agent::rotate_key_ring(&path, now)?, KeyId::new(2));
/// assert_eq!(privtel_agent::current_pseudonym_key(&path)?.id(), KeyId::new(2));
/// privtel_agent::destroy_key(&path, KeyId::new(1), now)?;
/// assert!(privtel_agent::load_key_ring(&path)?.key(KeyId::new(1)).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn rotate_key_ring(path: impl AsRef<Path>, now: Timestamp) -> Result<KeyId, KeyError> {
    let path = path.as_ref();
    let mut ring = load_key_ring(path)?;
    let id = ring
        .rotate(random_secret()?, now)
        .map_err(|error| KeyError::Ring { path: path.to_owned(), error })?;
    save_key_ring(path, &ring)?;
    Ok(id)
}

/// Destroys key `id` of the ring at `path` at the customer's request: its
/// secret is erased from the file and the destruction recorded. Returns
/// `false` if it was already destroyed.
///
/// # Errors
///
/// As [`load_key_ring`] and [`save_key_ring`]; [`KeyError::Ring`] for an
/// unknown key or the current one.
pub fn destroy_key(path: impl AsRef<Path>, id: KeyId, now: Timestamp) -> Result<bool, KeyError> {
    let path = path.as_ref();
    let mut ring = load_key_ring(path)?;
    let done = ring.destroy(id, now).map_err(|error| KeyError::Ring { path: path.to_owned(), error })?;
    if done {
        save_key_ring(path, &ring)?;
    }
    Ok(done)
}

/// Runs the customer's schedule on the ring at `path`
/// ([`KeyRing::maintain`]): rotates when due, destroys retired keys kept
/// past `keep_after_retired`; writes the ring only if something changed.
///
/// # Errors
///
/// As [`load_key_ring`], [`save_key_ring`] and [`rotate_key_ring`].
pub fn maintain_key_ring(
    path: impl AsRef<Path>,
    now: Timestamp,
    rotate_every: Option<time::Duration>,
    keep_after_retired: time::Duration,
) -> Result<Maintenance, KeyError> {
    let path = path.as_ref();
    let mut ring = load_key_ring(path)?;
    let secret = random_secret()?;
    let done = ring
        .maintain(now, rotate_every, keep_after_retired, || secret)
        .map_err(|error| KeyError::Ring { path: path.to_owned(), error })?;
    if done != Maintenance::default() {
        save_key_ring(path, &ring)?;
    }
    Ok(done)
}

/// The key a device pseudonymises with: the ring's current key. A device
/// reads it when it builds its filter, so a rotation reaches it with the
/// next ring file its customer distributes (docs/KEYS.md).
///
/// # Errors
///
/// As [`load_key_ring`]; [`KeyError::NoCurrentKey`] for an empty ring or
/// one whose newest key is destroyed.
pub fn current_pseudonym_key(path: impl AsRef<Path>) -> Result<PseudonymKey, KeyError> {
    let path = path.as_ref();
    load_key_ring(path)?.current().ok_or_else(|| KeyError::NoCurrentKey { path: path.to_owned() })
}

/// `PATH.tmpPID`: where a key file is written before it takes its name.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    std::path::PathBuf::from(tmp)
}

/// Writes `bytes` to a new file at `path`, readable by its owner only
/// (0600 on Unix), and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The 32-byte key in `path`, checked as [`load_or_create_key`] checks it;
/// `None` when there is no such file (nothing is created).
pub(crate) fn load_existing_key(path: &Path) -> Result<Option<[u8; 32]>, KeyError> {
    match std::fs::File::open(path) {
        Ok(file) => read_key(path, file).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(KeyError::Io { path: path.to_owned(), error }),
    }
}

/// Reads an open key file: private (0600), exactly 32 bytes.
fn read_key(path: &Path, mut file: std::fs::File) -> Result<[u8; 32], KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), error: source };
    let meta = file.metadata().map_err(io)?;
    check_mode(path, &meta)?;
    if meta.len() != 32 {
        return Err(KeyError::Length { path: path.to_owned(), found: meta.len() });
    }
    let mut secret = [0u8; 32];
    file.read_exact(&mut secret).map_err(io)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_800_000_000 + days * 86_400).unwrap()
    }

    #[test]
    fn the_ring_file_is_0600_and_survives_rotation_and_destruction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pseudonym.keys");
        assert!(matches!(current_pseudonym_key(&path), Err(KeyError::NoCurrentKey { .. })));
        let k1 = rotate_key_ring(&path, t(0)).unwrap();
        let first = current_pseudonym_key(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let k2 = rotate_key_ring(&path, t(1)).unwrap();
        assert_ne!(k1, k2);
        assert_eq!(current_pseudonym_key(&path).unwrap().id(), k2);
        assert_eq!(load_key_ring(&path).unwrap().key(k1).map(|k| k.id()), Some(first.id()));
        let err = destroy_key(&path, k2, t(2)).unwrap_err();
        assert!(err.to_string().contains("current key"), "{err}");
        assert!(destroy_key(&path, k1, t(2)).unwrap());
        assert!(!destroy_key(&path, k1, t(3)).unwrap());
        let ring = load_key_ring(&path).unwrap();
        assert!(ring.key(k1).is_none());
        assert_eq!(ring.states().next().unwrap().destroyed, Some(t(2)));
        // The schedule: nothing due writes nothing; due, the key rotates.
        let none = maintain_key_ring(&path, t(2), Some(time::Duration::days(90)), time::Duration::days(37));
        assert_eq!(none.unwrap(), Maintenance::default());
        let due = maintain_key_ring(&path, t(91), Some(time::Duration::days(90)), time::Duration::days(37));
        assert_eq!(due.unwrap().rotated, Some(KeyId::new(3)));
        assert_eq!(current_pseudonym_key(&path).unwrap().id(), KeyId::new(3));
    }

    #[cfg(unix)]
    #[test]
    fn a_ring_others_may_read_or_that_does_not_parse_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pseudonym.keys");
        rotate_key_ring(&path, t(0)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_key_ring(&path), Err(KeyError::TooOpen { mode: 0o644, .. })));
        std::fs::write(&path, "privtel key ring v1\nk1 nonsense\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key_ring(&path).unwrap_err();
        assert!(matches!(err, KeyError::Ring { .. }), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
