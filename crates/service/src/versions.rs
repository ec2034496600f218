//! Update offers: the latest version of each product per channel, and
//! where its installer is (with its SHA-256 and size), read from the
//! settings and checked when they load; and the answer to a version check.
//!
//! Offers are set for every customer at the top of the settings file, or
//! for one customer under its table (a customer's offer for a product and
//! channel replaces the global one):
//!
//! ```toml
//! [versions."Acme Editor".stable]
//! latest = "2.5.0"
//! installer = "https://downloads.example.com/acme-editor-2.5.0.tar.gz"
//! sha256 = "…64 hex digits…"
//! size = 1048576
//! # Another installer for one platform (OS-ARCH as Rust names them).
//! [versions."Acme Editor".stable.platforms."windows-x86_64"]
//! installer = "https://downloads.example.com/acme-editor-2.5.0.msi"
//! sha256 = "…"
//! size = 2097152
//!
//! [customers.acme.versions."Acme Editor".beta]
//! latest = "2.6.0.1"
//! # …
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use privtel_model::{CustomerId, Digest, Program};
use privtel_wire::{
    DottedVersion, ErrorCode, MAX_CHANNEL_LEN, MAX_PLATFORM_LEN, MAX_PRODUCT_LEN, Message, UpdateOffer,
    VersionAnswer, VersionQuery, VersionStatus,
};
use serde::Deserialize;

use crate::Service;

/// What is wrong with one version offer of the settings. The values named
/// are the operator's own text (product names, versions, URLs), never a
/// device's.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// A product, channel or platform name that is empty, too long or
    /// holds a control character.
    #[error("{what} name {value:?} is not 1 to {max} printable bytes")]
    Name {
        /// `product`, `channel` or `platform`.
        what: &'static str,
        /// The name as written.
        value: String,
        /// The longest allowed.
        max: usize,
    },
    /// `latest` is not dotted numbers.
    #[error("latest is {value:?}: expected dotted numbers such as 2.4.1")]
    Latest {
        /// The value as written.
        value: String,
    },
    /// An installer location that is not an `https://` URL.
    #[error("installer is {value:?}: expected an https URL with a host, no credentials and no spaces")]
    NotHttps {
        /// The value as written.
        value: String,
    },
    /// A SHA-256 that is not 64 hex digits.
    #[error("sha256 has {len} characters or a non-hex one: expected 64 hex digits")]
    Sha256 {
        /// Its length.
        len: usize,
    },
    /// An installer of 0 bytes.
    #[error("size is 0: expected the installer's size in bytes")]
    Size,
    /// `installer`, `sha256` and `size` go together.
    #[error("{missing} is missing: installer, sha256 and size go together")]
    Incomplete {
        /// The first one missing.
        missing: &'static str,
    },
    /// Neither an installer nor a platforms table.
    #[error("no installer: expected installer, sha256 and size, or a platforms table")]
    NoInstaller,
}

/// An installer: where, what it hashes to, how large.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Installer {
    /// An `https://` URL.
    pub url: String,
    /// Its SHA-256.
    pub sha256: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// The latest version of one product on one channel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelOffer {
    latest: DottedVersion,
    /// For a platform not named in `platforms`.
    any_platform: Option<Installer>,
    platforms: BTreeMap<String, Installer>,
}

impl ChannelOffer {
    /// The latest version.
    pub fn latest(&self) -> &DottedVersion {
        &self.latest
    }

    /// The installer for `platform`: its own, else the one for every
    /// platform, if any.
    pub fn installer(&self, platform: &str) -> Option<&Installer> {
        self.platforms.get(platform).or(self.any_platform.as_ref())
    }
}

/// Update offers by product and channel, read from the settings: for
/// every customer at the top of the file (`Settings::versions`), or for
/// one under its table (`CustomerSettings::versions`; a customer's offer
/// for a product and channel replaces the global one). Checked at load
/// ([`OfferError`]).
///
/// ```
/// use privtel_service::Settings;
///
/// let sha = "ab".repeat(32);
/// let settings = Settings::from_toml(&format!(r#"
///     [versions."Acme Editor".stable]
///     latest = "2.5.0"
///     installer = "https://downloads.example.com/acme-editor-2.5.0.tar.gz"
///     sha256 = "{sha}"
///     size = 1048576
///     [versions."Acme Editor".stable.platforms."windows-x86_64"]
///     installer = "https://downloads.example.com/acme-editor-2.5.0.msi"
///     sha256 = "{sha}"
///     size = 2097152
/// "#))?;
/// let stable = settings.versions().get("Acme Editor", "stable").expect("offered");
/// assert_eq!(stable.latest().to_string(), "2.5.0");
/// assert!(stable.installer("windows-x86_64").unwrap().url.ends_with(".msi"));
/// assert!(stable.installer("linux-x86_64").unwrap().url.ends_with(".tar.gz"));
///
/// let err = Settings::from_toml("[versions.\"Acme Editor\".stable]\nlatest = \"2.5\"\n").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "settings: versions.\"Acme Editor\".\"stable\": no installer: expected installer, sha256 and size, or a platforms table"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct VersionOffers {
    offers: BTreeMap<String, BTreeMap<String, ChannelOffer>>,
}

impl VersionOffers {
    /// The offer for `product` on `channel`, if any.
    pub fn get(&self, product: &str, channel: &str) -> Option<&ChannelOffer> {
        self.offers.get(product)?.get(channel)
    }

    /// Whether there is no offer at all.
    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    /// The number of (product, channel) offers.
    pub fn len(&self) -> usize {
        self.offers.values().map(BTreeMap::len).sum()
    }
}

/// `[versions.PRODUCT.CHANNEL]` tables as written.
pub(crate) type VersionsFile = BTreeMap<String, BTreeMap<String, ChannelFile>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelFile {
    latest: String,
    installer: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
    platforms: Option<BTreeMap<String, InstallerFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallerFile {
    installer: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
}

/// Which offer an error is about: (product, channel).
pub(crate) type OfferAt = (String, String);

fn name(what: &'static str, value: &str, max: usize) -> Result<(), OfferError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(OfferError::Name { what, value: value.to_owned(), max });
    }
    Ok(())
}

fn installer(
    url: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
) -> Result<Option<Installer>, OfferError> {
    let (url, sha256, size) = match (url, sha256, size) {
        (None, None, None) => return Ok(None),
        (None, _, _) => return Err(OfferError::Incomplete { missing: "installer" }),
        (_, None, _) => return Err(OfferError::Incomplete { missing: "sha256" }),
        (_, _, None) => return Err(OfferError::Incomplete { missing: "size" }),
        (Some(u), Some(s), Some(n)) => (u, s, n),
    };
    privtel_wire::check_installer_url(&url).map_err(|_| OfferError::NotHttps { value: url.clone() })?;
    // Upper or lower case, as tools print either.
    let sha256 = sha256
        .to_ascii_lowercase()
        .parse::<Digest>()
        .map_err(|_| OfferError::Sha256 { len: sha256.chars().count() })?;
    if size == 0 {
        return Err(OfferError::Size);
    }
    Ok(Some(Installer { url, sha256, size }))
}

/// Checks the `[versions]` tables of a settings file.
pub(crate) fn parse(file: VersionsFile) -> Result<VersionOffers, (OfferAt, OfferError)> {
    let mut out = VersionOffers::default();
    for (product, channels) in file {
        for (channel, c) in channels {
            let at = (product.clone(), channel.clone());
            let offer = (|| {
                name("product", &product, MAX_PRODUCT_LEN)?;
                name("channel", &channel, MAX_CHANNEL_LEN)?;
                let latest = DottedVersion::parse_field(&c.latest, "latest version")
                    .map_err(|_| OfferError::Latest { value: c.latest.clone() })?;
                let any_platform = installer(c.installer, c.sha256, c.size)?;
                let mut platforms = BTreeMap::new();
                for (platform, i) in c.platforms.unwrap_or_default() {
                    name("platform", &platform, MAX_PLATFORM_LEN)?;
                    let i = installer(i.installer, i.sha256, i.size)?
                        .ok_or(OfferError::Incomplete { missing: "installer" })?;
                    platforms.insert(platform, i);
                }
                if any_platform.is_none() && platforms.is_empty() {
                    return Err(OfferError::NoInstaller);
                }
                Ok(ChannelOffer { latest, any_platform, platforms })
            })()
            .map_err(|e| (at.clone(), e))?;
            out.offers.entry(product.clone()).or_default().insert(channel, offer);
        }
    }
    Ok(out)
}

impl Service {
    /// Answers a version check of one of `customer`'s devices from the
    /// settings in force now: nothing when the customer's version-check
    /// program is off; else the customer's offer for the product and
    /// channel (or the global one); up to date when the version installed
    /// is at least the latest; an update with the installer for the
    /// query's platform otherwise. Nothing of the query is kept: it is
    /// counted ([`crate::ServiceStats::version_checks`]).
    pub(crate) fn version_answer(&self, customer: &CustomerId, q: &VersionQuery) -> Message {
        let settings = self.settings();
        let Some(cs) = settings.customer(customer) else {
            return Message::error(
                ErrorCode::Forbidden,
                "the customer has no settings at this service",
                false,
            );
        };
        let current = match q.check() {
            Ok(v) => v,
            Err(e) => return Message::error(ErrorCode::Malformed, &e.to_string(), false),
        };
        let answer = |status, latest: Option<&DottedVersion>, offer| {
            Message::VersionAnswer(VersionAnswer {
                query_id: q.query_id,
                status,
                latest: latest.map(|v| v.as_str().to_owned()),
                offer,
            })
        };
        if !cs.policy().enabled(Program::VersionCheck) {
            self.stats.version_refused.fetch_add(1, Ordering::Relaxed);
            return answer(VersionStatus::PROGRAM_OFF, None, None);
        }
        self.stats.version_checks.fetch_add(1, Ordering::Relaxed);
        let offer = cs
            .versions()
            .get(&q.product, &q.channel)
            .or_else(|| settings.versions().get(&q.product, &q.channel));
        let Some(offer) = offer else { return answer(VersionStatus::UNKNOWN_PRODUCT, None, None) };
        if current >= offer.latest {
            return answer(VersionStatus::UP_TO_DATE, Some(&offer.latest), None);
        }
        let Some(installer) = offer.installer(&q.platform) else {
            return answer(VersionStatus::UNKNOWN_PRODUCT, None, None);
        };
        self.stats.version_offers.fetch_add(1, Ordering::Relaxed);
        let update = UpdateOffer {
            latest: offer.latest.as_str().to_owned(),
            installer: installer.url.clone(),
            sha256: installer.sha256,
            size: installer.size,
        };
        answer(VersionStatus::UPDATE, Some(&offer.latest), Some(update))
    }
}
