//! One-pass hashing of bytes and readers: SHA-256, BLAKE3, or both from one
//! read.

use std::io::{self, Read};

use privtel_model::{Digest, HashAlg};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Which digests to compute.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Algorithms {
    /// SHA-256 only.
    Sha256,
    /// BLAKE3 only.
    Blake3,
    /// Both, from one read of the bytes.
    #[default]
    Both,
}

impl Algorithms {
    /// Whether SHA-256 is computed.
    pub fn sha256(self) -> bool {
        matches!(self, Self::Sha256 | Self::Both)
    }

    /// Whether BLAKE3 is computed.
    pub fn blake3(self) -> bool {
        matches!(self, Self::Blake3 | Self::Both)
    }

    /// Whether `digests` holds every digest these algorithms produce.
    pub fn satisfied_by(self, digests: &Digests) -> bool {
        (!self.sha256() || digests.sha256.is_some()) && (!self.blake3() || digests.blake3.is_some())
    }
}

impl From<HashAlg> for Algorithms {
    fn from(alg: HashAlg) -> Self {
        match alg {
            HashAlg::Blake3 => Self::Blake3,
            // `HashAlg` is non-exhaustive; SHA-256 is the identity the
            // enrichment service uses, so it is the safe reading of a new one.
            _ => Self::Sha256,
        }
    }
}

/// The digests of one input: each is `Some` when it was asked for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Digests {
    /// SHA-256, if computed.
    pub sha256: Option<Digest>,
    /// BLAKE3, if computed.
    pub blake3: Option<Digest>,
}

impl Digests {
    /// The digest of `alg`, if computed.
    pub fn get(&self, alg: HashAlg) -> Option<Digest> {
        match alg {
            HashAlg::Blake3 => self.blake3,
            _ => self.sha256,
        }
    }
}

/// An incremental hasher that feeds every chunk to the selected algorithms.
///
/// ```
/// use privtel_hash::{Algorithms, Hasher};
///
/// let mut h = Hasher::new(Algorithms::Both);
/// h.update(b"hello ");
/// h.update(b"world");
/// let d = h.finalize();
/// assert_eq!(
///     d.sha256.unwrap().to_string(),
///     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
/// );
/// ```
#[derive(Clone, Debug)]
pub struct Hasher {
    sha256: Option<sha2::Sha256>,
    blake3: Option<blake3::Hasher>,
}

impl Hasher {
    /// A hasher for `algorithms`.
    pub fn new(algorithms: Algorithms) -> Self {
        Self {
            sha256: algorithms.sha256().then(sha2::Sha256::new),
            blake3: algorithms.blake3().then(blake3::Hasher::new),
        }
    }

    /// Feeds `bytes` to every selected algorithm.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        if let Some(h) = &mut self.sha256 {
            h.update(bytes);
        }
        if let Some(h) = &mut self.blake3 {
            h.update(bytes);
        }
        self
    }

    /// Feeds `bytes` to every selected algorithm using the current rayon
    /// pool: SHA-256 and BLAKE3 side by side when both are selected, BLAKE3
    /// alone split across cores. For large chunks (a megabyte or more).
    pub(crate) fn update_parallel(&mut self, bytes: &[u8]) -> &mut Self {
        match (&mut self.sha256, &mut self.blake3) {
            (Some(s), Some(b)) => {
                rayon::join(|| s.update(bytes), || b.update(bytes));
            }
            (None, Some(b)) => {
                b.update_rayon(bytes);
            }
            (Some(s), None) => s.update(bytes),
            (None, None) => {}
        }
        self
    }

    /// The digests of everything fed so far.
    pub fn finalize(self) -> Digests {
        Digests {
            sha256: self.sha256.map(|h| Digest::from_bytes(h.finalize().into())),
            blake3: self.blake3.map(|h| Digest::from_bytes(*h.finalize().as_bytes())),
        }
    }
}

/// Writing to a `Hasher` feeds it, as with `sha2` and `blake3` hashers, so
/// [`io::copy`] hashes a reader, and anything that writes to an
/// [`io::Write`] (an encoder, a formatter) can be hashed without a buffer.
/// Writing never fails and takes every byte.
///
/// ```
/// use std::io::Write as _;
/// use privtel_hash::{Algorithms, Hasher};
///
/// let mut h = Hasher::new(Algorithms::Sha256);
/// let who = "world";
/// write!(h, "hello {who}")?;
/// std::io::copy(&mut &b""[..], &mut h)?;
/// assert_eq!(
///     h.finalize().sha256.unwrap().to_string(),
///     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.update(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The digest of `bytes` under one algorithm.
///
/// ```
/// use privtel_hash::digest;
/// use privtel_model::HashAlg;
///
/// assert_eq!(
///     digest(HashAlg::Blake3, b"").to_string(),
///     "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
/// );
/// ```
pub fn digest(alg: HashAlg, bytes: &[u8]) -> Digest {
    let digests = Hasher::new(alg.into()).update(bytes).clone().finalize();
    // `Algorithms::from(alg)` always computes the digest `get(alg)` reads.
    digests.get(alg).unwrap_or_else(|| Digest::from_bytes([0; 32]))
}

/// Inputs at least this long are hashed on several threads when that is
/// allowed: below it, handing work to another core costs more than it saves.
pub(crate) const PARALLEL_MIN: usize = 1 << 20;

/// The digests of an in-memory input. With `parallel`, large inputs are
/// hashed on the current rayon pool: SHA-256 and BLAKE3 on two cores at
/// once, and BLAKE3 alone on every core.
pub fn digest_bytes(algorithms: Algorithms, bytes: &[u8], parallel: bool) -> Digests {
    if !parallel || bytes.len() < PARALLEL_MIN {
        return Hasher::new(algorithms).update(bytes).clone().finalize();
    }
    let sha = || Digest::from_bytes(sha2::Sha256::digest(bytes).into());
    let b3 = || {
        let mut h = blake3::Hasher::new();
        h.update_rayon(bytes);
        Digest::from_bytes(*h.finalize().as_bytes())
    };
    match algorithms {
        Algorithms::Sha256 => Digests { sha256: Some(sha()), blake3: None },
        Algorithms::Blake3 => Digests { sha256: None, blake3: Some(b3()) },
        Algorithms::Both => {
            // SHA-256 cannot be split; BLAKE3 runs beside it and takes spare
            // cores through work stealing.
            let (s, b) = rayon::join(sha, b3);
            Digests { sha256: Some(s), blake3: Some(b) }
        }
    }
}

/// Size of the read buffer for readers and small files: large enough that a
/// read costs little next to hashing it, small enough to stay in L2.
pub(crate) const READ_BUF: usize = 256 * 1024;

/// The digests of everything `reader` yields, read once in large chunks.
///
/// # Errors
///
/// The reader's error, if a read fails (interrupted reads are retried).
pub fn digest_reader(algorithms: Algorithms, mut reader: impl Read) -> io::Result<(Digests, u64)> {
    let mut hasher = Hasher::new(algorithms);
    let mut buf = vec![0; READ_BUF];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok((hasher.finalize(), total)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
