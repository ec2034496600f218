//! Binaries, applications and packages, and the digests that identify
//! binaries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fields;
use crate::id::BinaryId;
use crate::personal::Personal;
use crate::serde_text;
use crate::timestamp::Timestamp;
use crate::values::Category;
use crate::visit::{PersonalField, PersonalMut, VisitPersonal};

/// A hash algorithm privtel identifies binaries with.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HashAlg {
    /// SHA-256 (FIPS 180-4): what reputation services index binaries by.
    Sha256,
    /// BLAKE3: several times faster, for caches and local identity.
    Blake3,
}

impl HashAlg {
    /// The lowercase name (`sha256`, `blake3`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for HashAlg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "blake3" => Ok(Self::Blake3),
            _ => Err(Error::parse("hash algorithm", s, "'sha256' or 'blake3'")),
        }
    }
}

/// Length of a [`Digest`] in bytes.
pub const DIGEST_LEN: usize = 32;

/// A 256-bit digest (SHA-256 or BLAKE3; the field it sits in says which).
///
/// Text form: 64 lowercase hex digits, as `sha256sum` and `b3sum` print.
/// Like `blake3::Hash` it offers `as_bytes` rather than `Deref`/`AsRef`, so
/// a digest is never silently used as an ordinary byte slice (and compared
/// as one in a non-constant-time way where that would matter).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; DIGEST_LEN]);

impl Digest {
    /// Wraps 32 bytes.
    pub const fn from_bytes(b: [u8; DIGEST_LEN]) -> Self {
        Self(b)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// The service's id for the binary with this SHA-256 digest: its first
    /// 16 bytes, so that device and service derive the same id.
    pub fn binary_id(&self) -> BinaryId {
        let mut b = [0; 16];
        b.copy_from_slice(&self.0[..16]);
        BinaryId::from_bytes(b)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of 64 bytes: tools print millions of digests, and a
        // `write!` per byte costs ten times as much.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 2 * DIGEST_LEN];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::rejected("digest", s, "64 hex digits");
        // Check the digits first: `from_str_radix` alone would accept a `+`.
        if s.len() != 2 * DIGEST_LEN || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0; DIGEST_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_text::serialize(self, s, |s| serde_text::serialize_array(&self.0, s))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize(d, |d| serde_text::deserialize_array(d).map(Self))
    }
}

/// A CPU architecture named in an executable's header.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Arch {
    /// 32-bit x86.
    X86,
    /// x86-64 / AMD64.
    X86_64,
    /// 32-bit ARM.
    Arm,
    /// 64-bit ARM.
    Aarch64,
    /// 64-bit RISC-V.
    RiscV64,
    /// 64-bit PowerPC.
    PowerPc64,
    /// IBM z/Architecture.
    S390x,
    /// 64-bit LoongArch.
    LoongArch64,
    /// Another machine code, as the header stores it (ELF `e_machine`, PE
    /// `Machine` or Mach-O `cputype`, depending on the format).
    Other(u32),
}

/// The format of an executable file, recognised from its first bytes.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExecutableFormat {
    /// ELF (Linux, BSD).
    Elf {
        /// The machine the code is for.
        arch: Arch,
    },
    /// Portable Executable (Windows): `MZ` with a `PE\0\0` header.
    Pe {
        /// The machine the code is for.
        arch: Arch,
    },
    /// A thin Mach-O file (macOS, iOS).
    MachO {
        /// The CPU the code is for.
        arch: Arch,
    },
    /// A universal ("fat") Mach-O file holding several thin ones.
    MachOUniversal {
        /// The CPUs of the slices, in file order.
        arches: Vec<Arch>,
    },
    /// A script run through `#!`.
    Script {
        /// The interpreter line after `#!`, trimmed (`/usr/bin/env python3`).
        interpreter: String,
    },
}

/// A binary file seen on a device, identified by its digests.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Binary {
    /// SHA-256 of the file's bytes: the identity the enrichment service uses.
    pub sha256: Digest,
    /// BLAKE3 of the file's bytes, where computed.
    pub blake3: Option<Digest>,
    /// The file name without its folder (`chrome.exe`): the last component
    /// of `path`, personal like it (a file name can name a person), and
    /// always in the path's form ([`fields::DERIVED`]).
    ///
    /// Serialized so that rows written when it was plain text still read:
    /// a clear name is the text itself (in JSON and in bincode), other forms
    /// are marked (see the crate's notes on serialization).
    #[serde(with = "crate::compat::personal_text")]
    pub file_name: Personal<String>,
    /// The full path; may hold a user name (`C:\Users\alice\…`), so personal.
    pub path: Personal<String>,
    /// The version from the file's metadata, where present.
    pub version: Option<String>,
    /// The publisher from the file's signature or metadata, where present.
    pub publisher: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// The executable format, `None` when the file is none of the known ones.
    pub format: Option<ExecutableFormat>,
}

impl VisitPersonal for Binary {
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>)) {
        f(PersonalField::new(&fields::BINARY_FILE_NAME, PersonalMut::Text(&mut self.file_name)));
        f(PersonalField::new(&fields::BINARY_PATH, PersonalMut::Text(&mut self.path)));
    }
}

/// A binary as the enrichment program sends it (Enhance): what the file is,
/// never where it lies or whose it is. No device, no user, no path, no
/// file name: two devices with the same file send the same sighting, save
/// for the day.
///
/// ```
/// use privtel_model::{BinarySighting, Digest, Timestamp};
///
/// let at = Timestamp::from_unix_seconds(86_400 * 3 + 5_000)?;
/// let s = BinarySighting::new(Digest::from_bytes([7; 32]), None, 4096, None, at);
/// assert_eq!(s.first_seen_day, 3);
/// # Ok::<(), privtel_model::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BinarySighting {
    /// SHA-256 of the file's bytes.
    pub sha256: Digest,
    /// BLAKE3 of the file's bytes, where computed.
    pub blake3: Option<Digest>,
    /// Size in bytes.
    pub size: u64,
    /// The executable format, `None` when the file is none of the known ones.
    pub format: Option<ExecutableFormat>,
    /// The day the device first saw it, in days since 1970-01-01 (UTC):
    /// never finer, so the sighting dates no one's activity.
    pub first_seen_day: u32,
}

impl BinarySighting {
    /// A sighting first seen at `seen` (kept to its day).
    pub fn new(
        sha256: Digest,
        blake3: Option<Digest>,
        size: u64,
        format: Option<ExecutableFormat>,
        seen: Timestamp,
    ) -> Self {
        Self { sha256, blake3, size, format, first_seen_day: day_of(seen) }
    }
}

/// A web site as the enrichment program sends it (Enhance): its registrable
/// name and the day the device first saw it; no device, no user, no URL.
///
/// ```
/// use privtel_model::{Domain, DomainSighting, Timestamp};
///
/// let s = DomainSighting::new("example.com".parse::<Domain>()?, Timestamp::UNIX_EPOCH);
/// assert_eq!((s.domain.as_str(), s.first_seen_day), ("example.com", 0));
/// # Ok::<(), privtel_model::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DomainSighting {
    /// The registrable domain.
    pub domain: crate::values::Domain,
    /// The day the device first saw it, in days since 1970-01-01 (UTC).
    pub first_seen_day: u32,
}

impl DomainSighting {
    /// A sighting first seen at `seen` (kept to its day).
    pub fn new(domain: crate::values::Domain, seen: Timestamp) -> Self {
        Self { domain, first_seen_day: day_of(seen) }
    }
}

/// Days since 1970-01-01 of `t` (0 before it, saturating far after).
fn day_of(t: Timestamp) -> u32 {
    u32::try_from(t.unix_seconds().div_euclid(86_400)).unwrap_or(if t.unix_seconds() < 0 {
        0
    } else {
        u32::MAX
    })
}

/// An installed application: a product, as opposed to the files it is made of.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Application {
    /// The product name (`Firefox`).
    pub name: String,
    /// The installed version.
    pub version: String,
    /// The publisher, where known.
    pub publisher: Option<String>,
    /// The category from enrichment; `None` is unknown (`-`).
    pub category: Option<Category>,
}

/// The package manager a package came from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PackageManager {
    /// Debian's dpkg/apt.
    Apt,
    /// RPM (dnf, yum, zypper).
    Rpm,
    /// Windows Installer.
    Msi,
    /// MSIX / Microsoft Store.
    Msix,
    /// Homebrew.
    Homebrew,
    /// Snap.
    Snap,
    /// Flatpak.
    Flatpak,
    /// Anything else.
    Other,
}

/// An installed package.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Package {
    /// The package name (`openssl`).
    pub name: String,
    /// The installed version.
    pub version: String,
    /// Where it came from.
    pub manager: PackageManager,
    /// When it was installed, where known.
    pub installed_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_round_trip_and_errors() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = hex.parse().unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(hex.to_uppercase().parse::<Digest>().unwrap(), d);
        assert_eq!(d.binary_id().to_string(), &hex[..32]);
        for bad in ["", &hex[1..], &format!("{hex}0"), &hex.replace('e', "g"), &format!("+{}", &hex[1..])] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        // A multi-byte character must not cause a slicing panic.
        assert!(format!("é{}", &hex[2..]).parse::<Digest>().is_err());
    }
}
