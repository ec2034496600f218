//! Key files: 32 secret bytes, created 0600 from the operating system's
//! randomness on first use, and refused when group or others may read them.

use std::io::{Read as _, Write as _};
use std::path::Path;

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
        Ok(mut file) => {
            let meta = file.metadata().map_err(io)?;
            check_mode(path, &meta)?;
            if meta.len() != 32 {
                return Err(KeyError::Length { path: path.to_owned(), found: meta.len() });
            }
            let mut secret = [0u8; 32];
            file.read_exact(&mut secret).map_err(io)?;
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
            // Written whole and synced under a temporary name, then linked
            // into place (which fails if another process was first): a crash
            // never leaves a short key file behind.
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".tmp{}", std::process::id()));
            let tmp = std::path::PathBuf::from(tmp);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let written = options.open(&tmp).and_then(|mut file| {
                file.write_all(&secret)?;
                file.sync_all()
            });
            let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
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
