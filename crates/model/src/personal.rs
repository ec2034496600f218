//! Personal data as a type: [`Personal<T>`], the four forms a personal value
//! can take, and the visitor ([`VisitPersonal`]) that reaches every personal
//! field of a record without knowing its type.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::device::Privileges;
use crate::error::{Error, Result};
use crate::id::UserId;
use crate::serde_text;
use crate::timestamp::Timestamp;
use crate::values::{Domain, Geohash};

/// What kind of personal data a field holds, as the design's privacy notice
/// groups it. The customer's policy and the privacy manifest speak in these.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataCategory {
    /// Who a person is: name, job title, email, phone, login, IP address.
    Identifier,
    /// What a person did on the network: URLs, domains, destination IPs,
    /// page load times.
    NetworkActivity,
    /// What a person did on the device: login times and durations,
    /// privileges, application use, the device's own name.
    DeviceInformation,
    /// Technical values that can still point at a person, such as a file path
    /// under a home folder.
    Technical,
    /// Free text written by or about a person (crash messages, feedback).
    FreeText,
}

impl DataCategory {
    /// Every category, in declaration order.
    pub const ALL: [Self; 5] =
        [Self::Identifier, Self::NetworkActivity, Self::DeviceInformation, Self::Technical, Self::FreeText];

    /// The snake_case name used in policy files and manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identifier => "identifier",
            Self::NetworkActivity => "network_activity",
            Self::DeviceInformation => "device_information",
            Self::Technical => "technical",
            Self::FreeText => "free_text",
        }
    }
}

impl fmt::Display for DataCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The shape of a personal value, which decides how it can be generalised
/// (a URL to its registrable domain, an IP to a prefix, …).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ValueKind {
    /// A login or account name (`alice`, `CORP\alice`).
    Login,
    /// A first or last name.
    Name,
    /// Any other short identifying text (job title, device name, fingerprint).
    Text,
    /// An email address or UPN; generalises to its domain.
    Email,
    /// A phone number.
    Phone,
    /// A file system path.
    Path,
    /// A full URL; generalises to its registrable domain.
    Url,
    /// A host name; generalises to its registrable domain.
    Host,
    /// An IPv4 or IPv6 address; generalises to a prefix.
    Ip,
    /// An instant; generalises to the minute, hour or day.
    Timestamp,
    /// A duration; generalises to a bucket.
    Duration,
    /// A geohash; generalises to fewer characters.
    Geohash,
    /// Account privileges.
    Privileges,
    /// Free text; generalising means scrubbing identifiers out of it.
    FreeText,
}

/// The form a personal field is kept in: the customer chooses one per field.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// The four forms are the privacy contract with customers; a fifth would be a
// change of that contract, not a compatible addition.
#[allow(clippy::exhaustive_enums)]
pub enum Treatment {
    /// Kept as it is.
    Clear,
    /// Replaced by a keyed pseudonym ([`Pseudonym`]).
    Pseudonymise,
    /// Replaced by a coarser value of the same kind ([`Generalised`]).
    Generalise,
    /// Never recorded ([`Personal::Withheld`]).
    Drop,
}

impl Treatment {
    /// Every treatment, from least to most private.
    pub const ALL: [Self; 4] = [Self::Clear, Self::Generalise, Self::Pseudonymise, Self::Drop];

    /// The lowercase name used in policy files (`clear`, `pseudonymise`,
    /// `generalise`, `drop`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "clear",
            Self::Pseudonymise => "pseudonymise",
            Self::Generalise => "generalise",
            Self::Drop => "drop",
        }
    }
}

impl fmt::Display for Treatment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Treatment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::parse("treatment", s, "one of 'clear', 'pseudonymise', 'generalise', 'drop'")
        })
    }
}

/// The static description of one personal field of the model.
///
/// Every personal field has exactly one `FieldSpec`, listed in
/// [`crate::fields::ALL`]; the visitor hands it out with the value, so a
/// policy can look a field up by path and a manifest can list them all.
#[derive(Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FieldSpec {
    /// Dotted path, `<record>.<field>` (`user.email`). Unique in the model;
    /// policy files name fields by it.
    pub path: &'static str,
    /// The privacy category.
    pub category: DataCategory,
    /// The shape of the value.
    pub kind: ValueKind,
    /// The most private treatment that still lets the field serve its
    /// program; what a policy that says nothing about the field gets.
    pub default_treatment: Treatment,
    /// Why the field is collected at all, in one line for the manifest.
    pub purpose: &'static str,
}

impl FieldSpec {
    pub(crate) const fn new(
        path: &'static str,
        category: DataCategory,
        kind: ValueKind,
        default_treatment: Treatment,
        purpose: &'static str,
    ) -> Self {
        Self { path, category, kind, default_treatment, purpose }
    }
}

/// Identifies a pseudonymisation key of a customer. Pseudonyms carry it, so
/// after a key rotation old and new tokens are told apart, and destroying a
/// key tells which tokens became unlinkable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(u32);

impl KeyId {
    /// Wraps a key number.
    pub const fn new(n: u32) -> Self {
        Self(n)
    }

    /// The key number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Length of a pseudonym token in bytes (128 bits: no accidental collision
/// among the values one customer can have, half the size of a full hash).
pub const TOKEN_LEN: usize = 16;

/// A keyed pseudonym: a token computed from a personal value under a
/// customer's secret key, and the id of that key.
///
/// Equal values give equal tokens under one key, so records can still be
/// linked; without the key, the token says nothing about the value. The token
/// is computed by `privtel-filter`; this type only carries it.
///
/// Text form: `k<key id>:<32 hex digits>` (`k7:00ff…`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Pseudonym {
    key_id: KeyId,
    token: [u8; TOKEN_LEN],
}

impl Pseudonym {
    /// Wraps a token and the key it was made with.
    pub const fn new(key_id: KeyId, token: [u8; TOKEN_LEN]) -> Self {
        Self { key_id, token }
    }

    /// The key the token was made with.
    pub const fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The token bytes.
    pub const fn token(&self) -> &[u8; TOKEN_LEN] {
        &self.token
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.key_id)?;
        self.token.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Pseudonym {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::parse("pseudonym", s, "'k<key id>:<32 hex digits>'");
        let (key, hex) = s.split_once(':').ok_or_else(bad)?;
        let key = key.strip_prefix('k').ok_or_else(bad)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let key_id = KeyId(key.parse().map_err(|_| bad())?);
        if hex.len() != 2 * TOKEN_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut token = [0; TOKEN_LEN];
        for (i, byte) in token.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self { key_id, token })
    }
}

impl Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_text::serialize(self, s, |s| {
            use serde::ser::SerializeTuple as _;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.key_id.0)?;
            t.serialize_element(&Token(&self.token))?;
            t.end()
        })
    }
}

impl<'de> Deserialize<'de> for Pseudonym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize(d, |d| {
            let (key, token) = <(u32, TokenOwned)>::deserialize(d)?;
            Ok(Self::new(KeyId(key), token.0))
        })
    }
}

/// A pseudonym token as serde bytes.
struct Token<'a>(&'a [u8; TOKEN_LEN]);

impl Serialize for Token<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_text::serialize_array(self.0, s)
    }
}

struct TokenOwned([u8; TOKEN_LEN]);

impl<'de> Deserialize<'de> for TokenOwned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_text::deserialize_array(d).map(TokenOwned)
    }
}

/// An IP network: an address with every bit after `len` set to zero.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "IpPrefixRepr", into = "IpPrefixRepr")]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Serialize, Deserialize)]
struct IpPrefixRepr {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The prefix of length `len` that contains `addr` (host bits cleared).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `len` exceeds 32 for IPv4 or 128 for IPv6.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(Error::OutOfRange {
                what: "ip prefix length",
                value: i128::from(len),
                expected: "at most 32 for ipv4 and 128 for ipv6",
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        };
        Ok(Self { addr, len })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix has length zero (covers every address of its
    /// family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Self::new(ip, self.len).is_ok_and(|p| p == *self)
    }
}

impl TryFrom<IpPrefixRepr> for IpPrefix {
    type Error = Error;
    fn try_from(r: IpPrefixRepr) -> Result<Self> {
        let p = Self::new(r.addr, r.len)?;
        if p.addr != r.addr {
            return Err(Error::parse(
                "ip prefix",
                &format!("{}/{}", r.addr, r.len),
                "an address whose host bits are zero",
            ));
        }
        Ok(p)
    }
}

impl From<IpPrefix> for IpPrefixRepr {
    fn from(p: IpPrefix) -> Self {
        Self { addr: p.addr, len: p.len }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The unit a generalised timestamp is truncated to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeUnit {
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds (UTC days).
    Day,
}

impl fmt::Display for TimeUnit {
    /// The lowercase name (`minute`, `hour`, `day`), as policy files write it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        })
    }
}

impl TimeUnit {
    /// The unit's length in seconds.
    pub const fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }
}

/// A timestamp truncated to a [`TimeUnit`]: "some time during this hour".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "TimeBucketRepr", into = "TimeBucketRepr")]
pub struct TimeBucket {
    start: Timestamp,
    unit: TimeUnit,
}

#[derive(Serialize, Deserialize)]
struct TimeBucketRepr {
    start: Timestamp,
    unit: TimeUnit,
}

impl TimeBucket {
    /// The bucket of `unit` that contains `at`.
    pub fn containing(at: Timestamp, unit: TimeUnit) -> Self {
        let secs = at.unix_seconds();
        let start = secs - secs.rem_euclid(unit.seconds());
        // `start` is at most `at` and in the same unit, so it is in range; fall
        // back to `at` itself rather than panic if that reasoning were wrong.
        let start = Timestamp::from_unix_seconds(start).unwrap_or(at);
        Self { start, unit }
    }

    /// The first instant of the bucket.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// The bucket's unit.
    pub fn unit(&self) -> TimeUnit {
        self.unit
    }
}

impl TryFrom<TimeBucketRepr> for TimeBucket {
    type Error = Error;
    fn try_from(r: TimeBucketRepr) -> Result<Self> {
        let b = Self::containing(r.start, r.unit);
        if b.start != r.start {
            return Err(Error::parse("time bucket", &r.start.to_string(), "a start on a whole unit"));
        }
        Ok(b)
    }
}

impl From<TimeBucket> for TimeBucketRepr {
    fn from(b: TimeBucket) -> Self {
        Self { start: b.start, unit: b.unit }
    }
}

/// A duration generalised to a range `[lo, hi)`; `hi` is `None` for an
/// open-ended last bucket ("more than an hour").
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "DurationBucketRepr", into = "DurationBucketRepr")]
pub struct DurationBucket {
    lo: Duration,
    hi: Option<Duration>,
}

#[derive(Serialize, Deserialize)]
struct DurationBucketRepr {
    lo: Duration,
    hi: Option<Duration>,
}

impl DurationBucket {
    /// The range `[lo, hi)`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `lo` is negative or `hi` is not above `lo`.
    pub fn new(lo: Duration, hi: Option<Duration>) -> Result<Self> {
        if lo.is_negative() || hi.is_some_and(|hi| hi <= lo) {
            return Err(Error::OutOfRange {
                what: "duration bucket start (ms)",
                value: lo.whole_milliseconds(),
                expected: "a start of zero or more below the end",
            });
        }
        Ok(Self { lo, hi })
    }

    /// The lower bound (inclusive).
    pub fn lo(&self) -> Duration {
        self.lo
    }

    /// The upper bound (exclusive), if any.
    pub fn hi(&self) -> Option<Duration> {
        self.hi
    }
}

impl TryFrom<DurationBucketRepr> for DurationBucket {
    type Error = Error;
    fn try_from(r: DurationBucketRepr) -> Result<Self> {
        Self::new(r.lo, r.hi)
    }
}

impl From<DurationBucket> for DurationBucketRepr {
    fn from(b: DurationBucket) -> Self {
        Self { lo: b.lo, hi: b.hi }
    }
}

/// A coarser value standing in for a personal value.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Generalised {
    /// An IP address reduced to its network.
    IpPrefix(IpPrefix),
    /// An instant reduced to a minute, hour or day.
    Time(TimeBucket),
    /// A duration reduced to a range.
    Duration(DurationBucket),
    /// A URL, host or email address reduced to a (registrable) domain.
    Domain(Domain),
    /// A geohash reduced to fewer characters.
    Geohash(Geohash),
    /// Free text with identifiers replaced by placeholders (`[email]`).
    Text(String),
}

/// A personal value in one of the four forms a policy can choose.
///
/// Every personal field of the model has this type, so nothing personal can
/// be written without a treatment having been chosen for it.
///
/// `Debug` never prints a clear or generalised value (it prints
/// `Clear(<redacted>)`), so a record can be logged with `{:?}` without
/// leaking; pseudonyms, which are safe to log, are printed.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
// Same four forms as `Treatment`: the contract, not an open set.
#[allow(clippy::exhaustive_enums)]
pub enum Personal<T> {
    /// The value itself.
    Clear(T),
    /// A keyed pseudonym of the value.
    Pseudonym(Pseudonym),
    /// A coarser value.
    Generalised(Generalised),
    /// Nothing: the value was never recorded (dropped by policy, or unknown).
    #[default]
    Withheld,
}

impl fmt::Debug for Generalised {
    /// Names the variant only: a generalised value is coarser, but still
    /// about a person (and scrubbed text may hold what a detector missed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::IpPrefix(_) => "IpPrefix",
            Self::Time(_) => "Time",
            Self::Duration(_) => "Duration",
            Self::Domain(_) => "Domain",
            Self::Geohash(_) => "Geohash",
            Self::Text(_) => "Text",
        };
        write!(f, "{kind}(<redacted>)")
    }
}

impl<T> Personal<T> {
    /// The clear value, if the field holds one.
    pub fn clear_value(&self) -> Option<&T> {
        match self {
            Self::Clear(v) => Some(v),
            _ => None,
        }
    }

    /// Which of the four forms the field is in.
    pub fn treatment(&self) -> Treatment {
        match self {
            Self::Clear(_) => Treatment::Clear,
            Self::Pseudonym(_) => Treatment::Pseudonymise,
            Self::Generalised(_) => Treatment::Generalise,
            Self::Withheld => Treatment::Drop,
        }
    }

    /// Whether the field holds nothing.
    pub fn is_withheld(&self) -> bool {
        matches!(self, Self::Withheld)
    }

    /// Takes the value out, leaving [`Personal::Withheld`].
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clear(_) => f.write_str("Clear(<redacted>)"),
            Self::Pseudonym(p) => write!(f, "Pseudonym({p})"),
            Self::Generalised(g) => write!(f, "Generalised({g:?})"),
            Self::Withheld => f.write_str("Withheld"),
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(v: T) -> Self {
        Self::Clear(v)
    }
}

/// A mutable reference to one personal field's value, by its Rust type.
///
/// The filter matches on this to read a clear value and put a pseudonym or a
/// generalised value in its place.
#[non_exhaustive]
pub enum PersonalMut<'a> {
    /// A text value (names, emails, URLs, hosts, paths, free text, …).
    Text(&'a mut Personal<String>),
    /// An IP address.
    Ip(&'a mut Personal<IpAddr>),
    /// An instant.
    Timestamp(&'a mut Personal<Timestamp>),
    /// A duration.
    Duration(&'a mut Personal<Duration>),
    /// A geohash.
    Geohash(&'a mut Personal<Geohash>),
    /// Account privileges.
    Privileges(&'a mut Personal<Privileges>),
    /// The user id an event concerns ([`crate::Event::user`]): `None` is
    /// withheld, an id in a pseudonym's text form
    /// ([`UserId::from_pseudonym`]) is pseudonymised, any other id is clear.
    /// It has no generalised form: generalising withholds it.
    UserId(&'a mut Option<UserId>),
}

macro_rules! each_personal {
    ($self:expr, $p:ident => $body:expr, $u:ident => $user:expr) => {
        match $self {
            PersonalMut::Text($p) => $body,
            PersonalMut::Ip($p) => $body,
            PersonalMut::Timestamp($p) => $body,
            PersonalMut::Duration($p) => $body,
            PersonalMut::Geohash($p) => $body,
            PersonalMut::Privileges($p) => $body,
            PersonalMut::UserId($u) => $user,
        }
    };
}

impl PersonalMut<'_> {
    /// The form the value is in now.
    pub fn treatment(&self) -> Treatment {
        each_personal!(self, p => p.treatment(), u => match u {
            None => Treatment::Drop,
            Some(id) if id.pseudonym().is_some() => Treatment::Pseudonymise,
            Some(_) => Treatment::Clear,
        })
    }

    /// Removes the value, leaving [`Personal::Withheld`] (no user id).
    pub fn withhold(&mut self) {
        each_personal!(self, p => **p = Personal::Withheld, u => **u = None)
    }

    /// Replaces the value with a pseudonym.
    pub fn set_pseudonym(&mut self, ps: Pseudonym) {
        each_personal!(self, p => **p = Personal::Pseudonym(ps), u => **u = Some(UserId::from_pseudonym(&ps)))
    }

    /// Replaces the value with a generalised one (a user id, which has no
    /// coarser form, is withheld instead).
    pub fn set_generalised(&mut self, g: Generalised) {
        each_personal!(self, p => **p = Personal::Generalised(g), u => **u = None)
    }

    /// The current pseudonym, if the field holds one.
    pub fn pseudonym(&self) -> Option<Pseudonym> {
        each_personal!(
            self,
            p => match p { Personal::Pseudonym(ps) => Some(*ps), _ => None },
            u => u.as_ref().and_then(UserId::pseudonym)
        )
    }
}

impl fmt::Debug for PersonalMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each_personal!(self, p => fmt::Debug::fmt(&**p, f), u => match (u.as_ref(), self.pseudonym()) {
            (None, _) => f.write_str("Withheld"),
            (Some(_), Some(ps)) => write!(f, "Pseudonym({ps})"),
            (Some(_), None) => f.write_str("Clear(<redacted>)"),
        })
    }
}

/// One personal field handed to a visitor: what it is, and its value.
#[derive(Debug)]
#[non_exhaustive]
pub struct PersonalField<'a> {
    /// The field's static description (path, category, kind, default).
    pub spec: &'static FieldSpec,
    /// The value, mutable.
    pub value: PersonalMut<'a>,
}

impl<'a> PersonalField<'a> {
    /// Pairs a spec with a value. Crates above the model use this only to
    /// build fields for tests; records build theirs in their visitors.
    pub fn new(spec: &'static FieldSpec, value: PersonalMut<'a>) -> Self {
        Self { spec, value }
    }
}

/// Implemented by every record type: visits each personal field, in a fixed
/// order, whatever form it is in (withheld fields are visited too).
///
/// This is the one way privacy code reaches personal data, so a new personal
/// field that is not visited is a bug the model's tests catch: they compare
/// what the visitor reaches with a table of every field.
pub trait VisitPersonal {
    /// Calls `f` once for each personal field of `self`.
    fn visit_personal(&mut self, f: &mut dyn FnMut(PersonalField<'_>));

    /// The specs of the fields `visit_personal` reaches on this value, in
    /// order (a convenience for manifests and tests).
    fn personal_specs(&mut self) -> Vec<&'static FieldSpec> {
        let mut out = Vec::new();
        self.visit_personal(&mut |field| out.push(field.spec));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_clear_or_generalised_values() {
        let canary = "CANARY-4f1c";
        let p: Personal<String> = Personal::Clear(canary.to_owned());
        assert!(!format!("{p:?}").contains(canary));
        assert!(!format!("{p:#?}").contains(canary));
        let g: Personal<String> = Personal::Generalised(Generalised::Text(canary.to_owned()));
        assert!(!format!("{g:?}").contains(canary));
        let mut v = p;
        assert!(!format!("{:?}", PersonalMut::Text(&mut v)).contains(canary));
    }

    #[test]
    fn ip_prefix_masks_host_bits() {
        let p = IpPrefix::new("192.168.17.42".parse().unwrap(), 24).unwrap();
        assert_eq!(p.to_string(), "192.168.17.0/24");
        assert!(p.contains("192.168.17.1".parse().unwrap()));
        assert!(!p.contains("192.168.18.1".parse().unwrap()));
        let v6 = IpPrefix::new("2001:db8:aa:bb::1".parse().unwrap(), 48).unwrap();
        assert_eq!(v6.to_string(), "2001:db8:aa::/48");
        assert_eq!(IpPrefix::new("1.2.3.4".parse().unwrap(), 0).unwrap().to_string(), "0.0.0.0/0");
        assert!(IpPrefix::new("1.2.3.4".parse().unwrap(), 33).is_err());
        assert!(IpPrefix::try_from(IpPrefixRepr { addr: "1.2.3.4".parse().unwrap(), len: 24 }).is_err());
    }

    #[test]
    fn time_buckets_truncate_including_before_1970() {
        let t = Timestamp::from_unix_seconds(3_600 * 5 + 59).unwrap();
        assert_eq!(TimeBucket::containing(t, TimeUnit::Hour).start().unix_seconds(), 18_000);
        let before = Timestamp::from_unix_seconds(-1).unwrap();
        assert_eq!(TimeBucket::containing(before, TimeUnit::Day).start().unix_seconds(), -86_400);
    }

    #[test]
    fn duration_buckets_are_ordered() {
        assert!(DurationBucket::new(Duration::seconds(1), Some(Duration::seconds(10))).is_ok());
        assert!(DurationBucket::new(Duration::seconds(1), None).is_ok());
        assert!(DurationBucket::new(Duration::seconds(10), Some(Duration::seconds(10))).is_err());
        assert!(DurationBucket::new(Duration::seconds(-1), None).is_err());
    }

    #[test]
    fn pseudonym_text_form() {
        let p = Pseudonym::new(KeyId::new(7), [0xab; TOKEN_LEN]);
        let s = p.to_string();
        assert_eq!(s, format!("k7:{}", "ab".repeat(TOKEN_LEN)));
        assert_eq!(s.parse::<Pseudonym>().unwrap(), p);
        for bad in ["", "k7", "7:abab", "k:ab", "k-1:ab", &format!("k7:{}", "zz".repeat(16))] {
            assert!(bad.parse::<Pseudonym>().is_err(), "{bad}");
        }
    }

    #[test]
    fn treatments_parse_by_name_only() {
        for t in Treatment::ALL {
            assert_eq!(t.as_str().parse::<Treatment>().unwrap(), t);
        }
        let err = "hash".parse::<Treatment>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid treatment 'hash': expected one of 'clear', 'pseudonymise', 'generalise', 'drop'"
        );
    }
}
