//! Small validated value types: domain names, country codes, geohashes,
//! category labels, scores, and an account's privileges.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest host name in ASCII form (RFC 1035, without the trailing dot).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest label of a host name (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// A host name in canonical form: lowercase ASCII (punycode for IDN), labels
/// of 1 to 63 letters, digits, `-` or `_`, at most 253 bytes, no trailing dot,
/// and not ending in a numeric label (which a URL parser would read as IPv4).
///
/// This type only *checks* the canonical form. Turning what a browser or log
/// wrote (`HTTPS://WWW.Example.COM.:443/x`) into it is the job of
/// `privtel-domain`, which also finds the registrable domain.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    /// Checks that `name` is already canonical and wraps it.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] naming what is expected (never the value) if it is
    /// not canonical.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        match domain_problem(&name) {
            None => Ok(Self(name)),
            Some(expected) => Err(Error::rejected("domain", &name, expected)),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned `String`.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The labels, left to right.
    pub fn labels(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('.')
    }
}

fn domain_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
        return Some("1 to 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Some("labels of 1 to 63 bytes with no leading, trailing or double dot");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Some("lowercase ascii letters, digits, '-' or '_' (punycode for idn)");
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("a name whose last label is not a number (that is an ip address)");
    }
    None
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({:?})", self.0)
    }
}

impl FromStr for Domain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for Domain {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<Domain> for String {
    fn from(d: Domain) -> Self {
        d.0
    }
}

/// Every officially assigned ISO 3166-1 alpha-2 code (249, as of the 2024
/// edition), sorted, two bytes each.
const ISO_3166_ALPHA2: &str = "\
ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ\
CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFO\
FRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJE\
JMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMO\
MPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPW\
PYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTM\
TNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZW";

/// A country as an ISO 3166-1 alpha-2 code (`DE`, `US`): where a domain is
/// hosted, for example.
///
/// Only officially assigned codes are accepted; lowercase input is
/// uppercased. An unknown country is not a `CountryCode` but `None` where one
/// is optional, printed as `-`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Every assigned code, in alphabetical order.
    pub fn all() -> impl Iterator<Item = Self> {
        ISO_3166_ALPHA2.as_bytes().chunks_exact(2).map(|c| Self([c[0], c[1]]))
    }

    /// The code as two uppercase letters.
    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII letters; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for CountryCode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            let code = [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()];
            if ISO_3166_ALPHA2.as_bytes().chunks_exact(2).any(|c| c == code) {
                return Ok(Self(code));
            }
        }
        Err(Error::rejected("country code", s, "an assigned iso 3166-1 alpha-2 code such as 'DE'"))
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl TryFrom<String> for CountryCode {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<CountryCode> for String {
    fn from(c: CountryCode) -> Self {
        c.as_str().to_owned()
    }
}

const GEOHASH_ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
/// Longest geohash kept: 12 characters is already a few centimetres.
pub const MAX_GEOHASH_LEN: usize = 12;

/// A location as a geohash of 1 to 12 characters (`u33d` is Berlin within
/// about 20 km). Fewer characters mean a coarser location, which is how a
/// geohash is generalised.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Geohash(String);

impl Geohash {
    /// Checks and wraps a geohash; uppercase input is lowercased.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] if `s` is empty, longer than 12 characters, or holds a
    /// character outside the geohash alphabet (which has no `a`, `i`, `l`, `o`).
    pub fn new(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        if lower.is_empty()
            || lower.len() > MAX_GEOHASH_LEN
            || !lower.bytes().all(|b| GEOHASH_ALPHABET.contains(&b))
        {
            return Err(Error::rejected(
                "geohash",
                s,
                "1 to 12 characters of 0-9 and b-z without a, i, l, o",
            ));
        }
        Ok(Self(lower))
    }

    /// The geohash as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first `len` characters (at least 1): the same place, coarser.
    #[must_use]
    pub fn truncated(&self, len: usize) -> Self {
        Self(self.0[..len.clamp(1, self.0.len())].to_owned())
    }
}

impl fmt::Display for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Geohash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Geohash({:?})", self.0)
    }
}

impl FromStr for Geohash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for Geohash {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(&s)
    }
}

impl From<Geohash> for String {
    fn from(g: Geohash) -> Self {
        g.0
    }
}

/// Longest category label, in bytes.
pub const MAX_CATEGORY_LEN: usize = 64;

/// A category label from the enrichment service (`browser`, `file sharing`).
///
/// The vendor's taxonomy grows without a protocol change, so this is
/// validated text rather than an enum: 1 to 64 bytes, no control characters,
/// no leading or trailing space, and not `-`, which is how an unknown category
/// (`Option::<Category>::None`) prints.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Category(String);

impl Category {
    /// Checks and wraps a label.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] if the label breaks one of the rules above.
    pub fn new(label: impl Into<String>) -> Result<Self> {
        let label = label.into();
        let ok = !label.is_empty()
            && label.len() <= MAX_CATEGORY_LEN
            && label != "-"
            && label.trim() == label
            && !label.chars().any(char::is_control);
        if ok {
            Ok(Self(label))
        } else {
            Err(Error::rejected(
                "category",
                &label,
                "1 to 64 bytes of text without control characters, not '-'",
            ))
        }
    }

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Category({:?})", self.0)
    }
}

impl FromStr for Category {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for Category {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<Category> for String {
    fn from(c: Category) -> Self {
        c.0
    }
}

/// A score from 0 to 100: the digital-experience score of a device, or a
/// feedback rating scaled to 100.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Score(u8);

impl Score {
    /// The highest score.
    pub const MAX: Self = Self(100);

    /// Checks and wraps a score.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] above 100.
    pub fn new(v: u8) -> Result<Self> {
        if v <= 100 {
            Ok(Self(v))
        } else {
            Err(Error::OutOfRange { what: "score", value: i128::from(v), expected: "0 to 100" })
        }
    }

    /// The score as a number from 0 to 100.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Score {
    type Error = Error;
    fn try_from(v: u8) -> Result<Self> {
        Self::new(v)
    }
}

impl From<Score> for u8 {
    fn from(s: Score) -> Self {
        s.0
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A finite `f64`: a measured value.
///
/// NaN and the infinities are rejected, so that every measurement equals
/// itself, has a JSON form (JSON has no NaN) and sorts.
#[derive(Clone, Copy, PartialEq, PartialOrd, Debug, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Finite(f64);

impl Finite {
    /// Checks and wraps a value.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] for NaN or an infinity.
    pub fn new(v: f64) -> Result<Self> {
        if v.is_finite() {
            Ok(Self(v))
        } else {
            Err(Error::parse("measurement", &v.to_string(), "a finite number"))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Finite {
    type Error = Error;
    fn try_from(v: f64) -> Result<Self> {
        Self::new(v)
    }
}

impl From<Finite> for f64 {
    fn from(v: Finite) -> Self {
        v.0
    }
}

impl fmt::Display for Finite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Formats `Some(x)` as `x` and `None` as `-`, the form the enrichment
/// service and the design use for "unknown".
pub fn display_or_dash<T: fmt::Display>(v: Option<&T>) -> String {
    v.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// The rights an account had when it logged in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Privileges {
    /// A guest or restricted account.
    Guest,
    /// An ordinary account.
    Standard,
    /// A local or domain administrator.
    Administrator,
    /// The operating system itself (`SYSTEM`, `root`).
    System,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, accepted) pairs at the edges of the canonical form.
    const DOMAINS: &[(&str, bool)] = &[
        ("example.com", true),
        ("localhost", true),
        ("xn--bcher-kva.example", true),
        ("_dmarc.example.com", true),
        ("a-b.c0", true),
        ("Example.com", false),
        ("example.com.", false),
        (".example.com", false),
        ("a..b", false),
        ("1.2.3.4", false),
        ("example.123", false),
        ("bücher.example", false),
        ("ex ample.com", false),
        ("", false),
    ];

    #[test]
    fn domain_edge_cases() {
        for (input, ok) in DOMAINS {
            assert_eq!(Domain::new(*input).is_ok(), *ok, "{input}");
        }
        let label = "a".repeat(MAX_LABEL_LEN);
        assert!(Domain::new(format!("{label}.com")).is_ok());
        assert!(Domain::new(format!("a{label}.com")).is_err());
        let long = vec!["a".repeat(61); 4].join(".");
        assert_eq!(long.len(), 247);
        assert!(Domain::new(format!("{long}.abcde")).is_ok());
        assert!(Domain::new(format!("{long}.abcdef")).is_err());
    }

    #[test]
    fn country_codes_are_the_assigned_ones() {
        assert_eq!(CountryCode::all().count(), 249);
        let all: Vec<_> = CountryCode::all().collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "list must be sorted");
        assert_eq!("de".parse::<CountryCode>().unwrap().as_str(), "DE");
        for bad in ["", "D", "DEU", "XX", "ZZ", "1A", "-"] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad}");
        }
        assert_eq!(display_or_dash::<CountryCode>(None), "-");
    }

    #[test]
    fn geohash_alphabet_and_truncation() {
        let g = Geohash::new("U33DC1").unwrap();
        assert_eq!(g.as_str(), "u33dc1");
        assert_eq!(g.truncated(3).as_str(), "u33");
        assert_eq!(g.truncated(0).as_str(), "u");
        assert_eq!(g.truncated(99), g);
        for bad in ["", "u33a", "abc", "0123456789bcd"] {
            assert!(Geohash::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn categories_and_scores() {
        assert!(Category::new("file sharing").is_ok());
        for bad in ["", "-", " x", "x\n", &"c".repeat(65)] {
            assert!(Category::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Score::new(100).unwrap().get(), 100);
        assert!(Score::new(101).is_err());
    }
}
