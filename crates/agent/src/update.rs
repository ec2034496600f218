//! The version check and the installer's verification: ask the service
//! whether a newer version of a product exists ([`Agent::check_version`]),
//! and accept a downloaded installer only once its SHA-256 matches the
//! offer ([`verify_installer`]).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use privtel_model::{Digest, Program, Timestamp};
use privtel_wire::{Connection, DottedVersion, Message, UpdateOffer, VersionQuery, VersionStatus};

use crate::agent::Agent;
use crate::error::AgentError;

/// What a version check found.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum VersionOffer {
    /// The version installed is the latest (or newer).
    UpToDate {
        /// The latest version the service knows.
        latest: String,
    },
    /// A newer version: download [`UpdateOffer::installer`], then
    /// [`verify_installer`] it before use.
    Update(UpdateOffer),
    /// The service offers nothing for this product, channel and platform.
    UnknownProduct,
    /// The version-check program is off (in this device's policy: nothing
    /// was sent; or at the service, for the customer).
    Off,
}

impl Agent {
    /// Asks the service whether a newer version of `product` than
    /// `current` (dotted numbers) exists on `channel`, for this build's
    /// platform ([`VersionQuery::this_platform`]).
    ///
    /// On a connection of its own, as [`Agent::enhance`]: it opens with an
    /// [`EnhanceHello`](privtel_wire::EnhanceHello) (no customer, device or
    /// user named; the service knows the customer from the client
    /// certificate), sends one [`VersionQuery`] — product, version,
    /// channel, platform — takes the answer and says goodbye. The audit
    /// log gets both messages sent. Nothing is sent when the policy has
    /// the version-check program off ([`VersionOffer::Off`]).
    ///
    /// An offer is checked before it is returned: its version must be
    /// dotted numbers and newer than `current`, its installer an
    /// `https://` URL; anything else is an error, never an offer. The
    /// check itself is not recorded here: an application records a
    /// `VersionCheck` event through [`Agent::collect`] (the filtered path)
    /// if it wants it kept.
    ///
    /// # Errors
    ///
    /// [`AgentError::Version`] for a query out of bounds (checked before
    /// anything is sent) or an offer that does not hold; a wire error;
    /// [`AgentError::Refused`] when the service answers with an error;
    /// [`AgentError::Protocol`] for an answer out of turn.
    pub fn check_version<S: Read + Write>(
        &mut self,
        conn: &mut Connection<S>,
        product: &str,
        current: &str,
        channel: &str,
        now: Timestamp,
    ) -> Result<VersionOffer, AgentError> {
        if !self.filter().enabled(Program::VersionCheck) {
            return Ok(VersionOffer::Off);
        }
        let query = VersionQuery::new(self.next_query_id(), product, current, channel)?;
        let installed = DottedVersion::parse_field(current, "current version")?;
        let hello = privtel_wire::EnhanceHello::new(env!("CARGO_PKG_VERSION"));
        self.audit(&Message::EnhanceHello(hello.clone()), now)?;
        conn.client_enhance_handshake(&hello)?;
        let query_id = query.query_id;
        self.send(conn, &Message::VersionQuery(query), now)?;
        let answer = match conn.recv()? {
            Message::VersionAnswer(a) if a.query_id == query_id => a,
            Message::Error(e) => {
                return Err(AgentError::Refused { message: e.message, retryable: e.retryable });
            }
            other => return Err(AgentError::Protocol { expected: "version answer", got: other.kind_name() }),
        };
        let inconsistent = || privtel_wire::VersionError::Inconsistent {
            status: answer.status.0,
            has_offer: answer.offer.is_some(),
        };
        let offer = match (answer.status, &answer.offer) {
            (VersionStatus::UPDATE, Some(offer)) => {
                offer.check(&installed)?;
                VersionOffer::Update(offer.clone())
            }
            (VersionStatus::UP_TO_DATE, None) => {
                let latest = answer.latest.clone().ok_or_else(inconsistent)?;
                DottedVersion::parse_field(&latest, "latest version")?;
                VersionOffer::UpToDate { latest }
            }
            (VersionStatus::UNKNOWN_PRODUCT, None) => VersionOffer::UnknownProduct,
            (VersionStatus::PROGRAM_OFF, None) => VersionOffer::Off,
            _ => return Err(inconsistent().into()),
        };
        self.goodbye(conn, now)?;
        Ok(offer)
    }
}

/// An installer whose bytes matched an offer's SHA-256 and size: the only
/// way to hold one is [`verify_installer`]. It keeps the file open, so
/// what is installed is read from the file that was hashed
/// ([`VerifiedInstaller::into_file`]), even if the path is renamed or
/// replaced since. It cannot stop a process that may write the file itself
/// from changing its bytes after the check: download installers into a
/// folder only this account can write.
#[derive(Debug)]
pub struct VerifiedInstaller {
    path: PathBuf,
    file: File,
    version: String,
    sha256: Digest,
    blake3: Digest,
    size: u64,
}

impl VerifiedInstaller {
    /// Where it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version it installs (the offer's).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Its SHA-256 (the offer's).
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    /// Its BLAKE3, computed in the same read.
    pub fn blake3(&self) -> Digest {
        self.blake3
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open file that was hashed, rewound to its start.
    ///
    /// # Errors
    ///
    /// [`AgentError::Installer`] if it cannot be rewound.
    pub fn into_file(mut self) -> Result<File, AgentError> {
        use std::io::Seek as _;
        self.file.rewind().map_err(|e| AgentError::Installer {
            reason: format!("rewinding the installer: {}", e.kind()),
        })?;
        Ok(self.file)
    }
}

/// Checks a downloaded installer against `offer`: its size first (a file
/// of another size is refused without being read), then its SHA-256 in one
/// read (with BLAKE3 beside it, [`privtel_hash::digest_reader`]). Only a
/// match gives a [`VerifiedInstaller`]; a mismatch names the expected and
/// actual digests (or sizes), never the file's contents.
///
/// ```
/// use privtel_agent::{AgentError, verify_installer};
/// use privtel_wire::UpdateOffer;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("setup.bin");
/// std::fs::write(&path, b"installer bytes")?;
/// let offer = UpdateOffer {
///     latest: "2.5.0".into(),
///     installer: "https://downloads.example.com/setup.bin".into(),
///     sha256: privtel_hash::digest(privtel_hash::HashAlg::Sha256, b"installer bytes"),
///     size: 15,
/// };
/// let verified = verify_installer(&path, &offer)?;
/// assert_eq!(verified.sha256(), offer.sha256);
///
/// std::fs::write(&path, b"installer byteZ")?;
/// let err = verify_installer(&path, &offer).unwrap_err();
/// assert!(matches!(err, AgentError::InstallerDigest { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`AgentError::InstallerSize`], [`AgentError::InstallerDigest`], or
/// [`AgentError::Installer`] when the file cannot be opened or read.
pub fn verify_installer(
    path: impl AsRef<Path>,
    offer: &UpdateOffer,
) -> Result<VerifiedInstaller, AgentError> {
    let path = path.as_ref();
    let unreadable =
        |what: &str, e: std::io::Error| AgentError::Installer { reason: format!("{what}: {}", e.kind()) };
    let mut file = File::open(path).map_err(|e| unreadable("opening the installer", e))?;
    let meta = file.metadata().map_err(|e| unreadable("reading the installer's size", e))?;
    if !meta.is_file() {
        return Err(AgentError::Installer { reason: "the installer is not a regular file".into() });
    }
    if meta.len() != offer.size {
        return Err(AgentError::InstallerSize { expected: offer.size, actual: meta.len() });
    }
    // At most one byte past the size: a file growing while it is read is
    // refused by its size, not hashed on and on.
    let mut limited = (&mut file).take(offer.size.saturating_add(1));
    let (digests, read) = privtel_hash::digest_reader(privtel_hash::Algorithms::Both, &mut limited)
        .map_err(|e| unreadable("reading the installer", e))?;
    if read != offer.size {
        return Err(AgentError::InstallerSize { expected: offer.size, actual: read });
    }
    let (Some(sha256), Some(blake3)) = (digests.sha256, digests.blake3) else {
        return Err(AgentError::Installer { reason: "no digest computed".into() });
    };
    if sha256 != offer.sha256 {
        return Err(AgentError::InstallerDigest { expected: offer.sha256, actual: sha256 });
    }
    Ok(VerifiedInstaller {
        path: path.to_owned(),
        file,
        version: offer.latest.clone(),
        sha256,
        blake3,
        size: read,
    })
}
