//! The version check (kinds 14 and 15): a product's installed version goes
//! up, the latest version and where its installer is (with the installer's
//! SHA-256 and size) come back. Also [`DottedVersion`], the comparison both
//! sides use.
//!
//! A version check names nothing of the device: it travels in the
//! anonymous session an [`EnhanceHello`](crate::EnhanceHello) opens (the
//! service knows the customer from the client certificate), so the service
//! learns that some device of the customer runs a version, not which one.
//! That a device checked is recorded, if the customer's policy keeps it,
//! as a `VersionCheck` event through the device's filter and spool like
//! every other record.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use privtel_model::Digest;
use serde::{Deserialize, Serialize};

/// The longest product name a query or an offer may carry (bytes).
pub const MAX_PRODUCT_LEN: usize = 128;
/// The longest version text (bytes).
pub const MAX_VERSION_LEN: usize = 64;
/// The longest channel name (bytes).
pub const MAX_CHANNEL_LEN: usize = 32;
/// The longest platform name (bytes), such as `linux-x86_64`.
pub const MAX_PLATFORM_LEN: usize = 32;
/// The longest installer URL (bytes).
pub const MAX_URL_LEN: usize = 2048;
/// The most dot-separated parts a [`DottedVersion`] may have.
pub const MAX_VERSION_PARTS: usize = 8;

/// Why a version text, a query's field or an offer is refused. Messages
/// name the field and what was expected, never the value (the value came
/// from the other side).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// Not a dotted numeric version.
    #[error("{field} is not a dotted numeric version: expected 1 to 8 parts of 1 to 9 digits, such as 2.4.1")]
    NotDotted {
        /// Which field (`current version`, `latest version`, …).
        field: &'static str,
    },
    /// A text field empty, too long, or holding control characters.
    #[error("{field} has {len} bytes or a control character: expected 1 to {max} printable bytes")]
    Text {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// An installer location that is not an `https://` URL with a host and
    /// no credentials.
    #[error("installer location is not an https URL with a host, no credentials and no spaces")]
    NotHttps,
    /// An offer whose version is not newer than the version installed.
    #[error("the offered version is not newer than the installed one")]
    NotNewer,
    /// An answer whose status and content disagree (an update without an
    /// offer, or an unknown status).
    #[error("version answer status {status} with{} an offer", if *.has_offer { "" } else { "out" })]
    Inconsistent {
        /// The status code.
        status: u16,
        /// Whether an offer came with it.
        has_offer: bool,
    },
}

/// A version as dotted numbers (`2.4.10`), compared part by part as
/// numbers, a missing part counting as 0 (`1.2` equals `1.2.0`, `1.10` is
/// after `1.9`). Anything else (letters, signs, empty parts, pre-release
/// tags) is refused: what cannot be compared is never offered.
///
/// ```
/// use privtel_wire::DottedVersion;
///
/// let old: DottedVersion = "2.4.9".parse()?;
/// let new: DottedVersion = "2.4.10".parse()?;
/// assert!(old < new);
/// assert_eq!("1.2".parse::<DottedVersion>()?, "1.2.0".parse::<DottedVersion>()?);
/// assert_eq!(new.to_string(), "2.4.10");
/// assert!("2.4-beta".parse::<DottedVersion>().is_err());
/// # Ok::<(), privtel_wire::VersionError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DottedVersion {
    /// The parts without trailing zeros (the comparison's key).
    key: Vec<u32>,
    /// The text as written.
    text: String,
}

impl DottedVersion {
    /// Parses `text`, naming `field` in the error.
    ///
    /// # Errors
    ///
    /// [`VersionError::NotDotted`].
    pub fn parse_field(text: &str, field: &'static str) -> Result<Self, VersionError> {
        let bad = VersionError::NotDotted { field };
        if text.is_empty() || text.len() > MAX_VERSION_LEN {
            return Err(bad);
        }
        let mut key = Vec::new();
        for part in text.split('.') {
            if key.len() == MAX_VERSION_PARTS
                || part.is_empty()
                || part.len() > 9
                || !part.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad);
            }
            key.push(part.parse::<u32>().map_err(|_| bad)?);
        }
        while key.last() == Some(&0) {
            key.pop();
        }
        Ok(Self { key, text: text.to_owned() })
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for DottedVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, VersionError> {
        Self::parse_field(s, "version")
    }
}

impl fmt::Display for DottedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for DottedVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for DottedVersion {}

impl PartialOrd for DottedVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DottedVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        // Trailing zeros are stripped, so lexicographic order of the parts
        // is numeric version order.
        self.key.cmp(&other.key)
    }
}

/// Checks a text field: 1 to `max` bytes, no control character.
///
/// # Errors
///
/// [`VersionError::Text`].
pub(crate) fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), VersionError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(VersionError::Text { field, len: s.len(), max });
    }
    Ok(())
}

/// Checks an installer location: `https://`, a host, no user information
/// (credentials), no whitespace or control characters, at most
/// [`MAX_URL_LEN`] bytes.
///
/// ```
/// use privtel_wire::check_installer_url;
///
/// assert!(check_installer_url("https://downloads.example.com/app-2.4.1.msi").is_ok());
/// assert!(check_installer_url("http://downloads.example.com/app.msi").is_err());
/// assert!(check_installer_url("https://user:pw@example.com/app.msi").is_err());
/// ```
///
/// # Errors
///
/// [`VersionError::NotHttps`].
pub fn check_installer_url(url: &str) -> Result<(), VersionError> {
    let rest = url.strip_prefix("https://").ok_or(VersionError::NotHttps)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if url.len() > MAX_URL_LEN
        || host.is_empty()
        || host.contains('@')
        || host.starts_with(':')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(VersionError::NotHttps);
    }
    Ok(())
}

/// A device asking whether a newer version of a product exists (kind 14).
/// Sent in the anonymous session (after an
/// [`EnhanceHello`](crate::EnhanceHello)): it names the product, the
/// version installed, the update channel and the platform, nothing of the
/// device or its user.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct VersionQuery {
    /// The query's id, echoed in the answer.
    pub query_id: u64,
    /// The product (at most [`MAX_PRODUCT_LEN`] bytes).
    #[serde(deserialize_with = "bounded_product")]
    pub product: String,
    /// The version installed, dotted numbers (at most
    /// [`MAX_VERSION_LEN`] bytes).
    #[serde(deserialize_with = "bounded_version")]
    pub current_version: String,
    /// The update channel, such as `stable` (at most [`MAX_CHANNEL_LEN`]
    /// bytes).
    #[serde(deserialize_with = "bounded_channel")]
    pub channel: String,
    /// The operating system and architecture the installer is for, as
    /// `OS-ARCH` with Rust's names (`linux-x86_64`, `windows-aarch64`; see
    /// [`VersionQuery::this_platform`]); at most [`MAX_PLATFORM_LEN`] bytes.
    #[serde(deserialize_with = "bounded_platform")]
    pub platform: String,
}

impl VersionQuery {
    /// A query for this build's platform, checked: every text within its
    /// bounds and the current version dotted numbers.
    ///
    /// ```
    /// use privtel_wire::VersionQuery;
    ///
    /// let q = VersionQuery::new(1, "Acme Editor", "2.4.1", "stable")?;
    /// assert_eq!(q.platform, VersionQuery::this_platform());
    /// assert!(VersionQuery::new(1, "Acme Editor", "2.4 beta", "stable").is_err());
    /// # Ok::<(), privtel_wire::VersionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`VersionError`] naming the field at fault.
    pub fn new(
        query_id: u64,
        product: &str,
        current_version: &str,
        channel: &str,
    ) -> Result<Self, VersionError> {
        let q = Self {
            query_id,
            product: product.to_owned(),
            current_version: current_version.to_owned(),
            channel: channel.to_owned(),
            platform: Self::this_platform(),
        };
        q.check()?;
        Ok(q)
    }

    /// `OS-ARCH` of this build (`linux-x86_64`).
    pub fn this_platform() -> String {
        format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
    }

    /// Checks every field (what the service does with a query it
    /// received) and returns the installed version.
    ///
    /// # Errors
    ///
    /// [`VersionError`] naming the field at fault.
    pub fn check(&self) -> Result<DottedVersion, VersionError> {
        check_text("product", &self.product, MAX_PRODUCT_LEN)?;
        check_text("channel", &self.channel, MAX_CHANNEL_LEN)?;
        check_text("platform", &self.platform, MAX_PLATFORM_LEN)?;
        DottedVersion::parse_field(&self.current_version, "current version")
    }
}

/// Where the installer of a newer version is, and what it must hash to.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct UpdateOffer {
    /// The latest version (dotted numbers).
    #[serde(deserialize_with = "bounded_version")]
    pub latest: String,
    /// The installer's location: an `https://` URL (at most
    /// [`MAX_URL_LEN`] bytes).
    #[serde(deserialize_with = "bounded_url")]
    pub installer: String,
    /// The installer's SHA-256: a download is usable only if it matches.
    pub sha256: Digest,
    /// The installer's size in bytes.
    pub size: u64,
}

impl UpdateOffer {
    /// Checks an offer received for an installed version `current`: the
    /// latest version dotted and newer, the location an `https://` URL.
    ///
    /// # Errors
    ///
    /// [`VersionError::NotDotted`], [`VersionError::NotNewer`] or
    /// [`VersionError::NotHttps`].
    pub fn check(&self, current: &DottedVersion) -> Result<DottedVersion, VersionError> {
        let latest = DottedVersion::parse_field(&self.latest, "latest version")?;
        if latest <= *current {
            return Err(VersionError::NotNewer);
        }
        check_installer_url(&self.installer)?;
        Ok(latest)
    }
}

/// The outcome of a version check: an explicit number on the wire (never
/// a Rust declaration position), as [`crate::RejectCode`] is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionStatus(pub u16);

impl VersionStatus {
    /// The version installed is the latest (or newer): `latest` names it.
    pub const UP_TO_DATE: Self = Self(1);
    /// A newer version exists: `offer` says where its installer is.
    pub const UPDATE: Self = Self(2);
    /// The service offers nothing for this product, channel and platform.
    pub const UNKNOWN_PRODUCT: Self = Self(3);
    /// The customer's version-check program is off: nothing is offered.
    pub const PROGRAM_OFF: Self = Self(4);

    /// The status in words, or `"status N"` for one this build does not
    /// know.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let known = match self {
            Self::UP_TO_DATE => "up to date",
            Self::UPDATE => "update",
            Self::UNKNOWN_PRODUCT => "unknown product",
            Self::PROGRAM_OFF => "program off",
            Self(n) => return format!("status {n}").into(),
        };
        known.into()
    }
}

impl fmt::Display for VersionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The service's answer to a [`VersionQuery`] (kind 15).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct VersionAnswer {
    /// The query answered.
    pub query_id: u64,
    /// What the answer says.
    pub status: VersionStatus,
    /// The latest version, for [`VersionStatus::UP_TO_DATE`] and
    /// [`VersionStatus::UPDATE`].
    #[serde(deserialize_with = "bounded_opt_version")]
    pub latest: Option<String>,
    /// The installer, for [`VersionStatus::UPDATE`] only.
    pub offer: Option<UpdateOffer>,
}

macro_rules! bounded_text {
    ($($name:ident = $max:expr;)*) => {$(
        fn $name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
            d.deserialize_str(Bounded::<{ $max }>)
        }
    )*};
}

bounded_text! {
    bounded_product = MAX_PRODUCT_LEN;
    bounded_version = MAX_VERSION_LEN;
    bounded_channel = MAX_CHANNEL_LEN;
    bounded_platform = MAX_PLATFORM_LEN;
    bounded_url = MAX_URL_LEN;
}

fn bounded_opt_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptBounded::<MAX_VERSION_LEN>)
}

/// A string of at most `MAX` bytes, refused from its length before it is
/// copied out of the payload.
struct Bounded<const MAX: usize>;

impl<const MAX: usize> Bounded<MAX> {
    fn check<E: serde::de::Error>(&self, v: &str) -> Result<String, E> {
        if v.len() > MAX {
            return Err(E::invalid_length(v.len(), self));
        }
        Ok(v.to_owned())
    }
}

impl<'de, const MAX: usize> serde::de::Visitor<'de> for Bounded<MAX> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {MAX} bytes")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        self.check(v)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        if v.len() > MAX {
            return Err(E::invalid_length(v.len(), &self));
        }
        Ok(v)
    }
}

/// An optional [`Bounded`] string.
struct OptBounded<const MAX: usize>;

impl<'de, const MAX: usize> serde::de::Visitor<'de> for OptBounded<MAX> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an optional string of at most {MAX} bytes")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(Bounded::<MAX>).map(Some)
    }
}
