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
    let io = |source| KeyError::Io { path: path.to_owned(), source };
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
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(&secret).and_then(|()| file.sync_all()).map_err(io)?;
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
