//! Messages and their payload codec (bincode 2, always decoded through one
//! configuration with a size limit).

use privtel_model::{
    BatchId, BinarySighting, BinaryVerdict, Category, CountryCode, CustomerId, DeviceId, Digest, Domain,
    DomainSighting, DomainVerdict, Program, Record, Reputation, ThreatLevel, UserId,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::{DEFAULT_MAX_PAYLOAD, FLAG_LZ4, Frame};

/// The bincode configuration of every payload: standard (varint) encoding,
/// and a limit equal to the largest frame, so a length prefix inside a
/// payload can never ask for more memory than a frame may hold. (bincode's
/// default configuration has no limit: nine bytes can ask for terabytes.)
pub(crate) fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ DEFAULT_MAX_PAYLOAD as usize }>()
}

/// The most entries a [`Hello`]'s lists (its versions, its consent) may
/// hold: a program or a version is named once, and there are far fewer of
/// either. A longer list is refused when the hello is decoded.
pub const MAX_HELLO_LIST: usize = 64;

/// The agent's opening message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Hello {
    /// Protocol versions the agent speaks (at most [`MAX_HELLO_LIST`]).
    #[serde(deserialize_with = "few")]
    pub versions: Vec<u8>,
    /// The agent's software version.
    pub agent_version: String,
    /// The customer.
    pub customer: CustomerId,
    /// The device.
    pub device: DeviceId,
    /// Consent per program, as the agent's policy states it (at most
    /// [`MAX_HELLO_LIST`] entries).
    #[serde(deserialize_with = "few")]
    pub consent: Vec<(Program, bool)>,
    /// The version of the privacy policy that produced the data.
    pub policy_version: u32,
    /// The sending spool's id: random, nonzero, made once with the spool. A
    /// reinstalled agent (a new spool) is a new stream of the same device,
    /// with sequence numbers of its own.
    pub stream: u64,
}

impl Hello {
    /// A hello speaking every version of this build.
    pub fn new(
        agent_version: impl Into<String>,
        customer: CustomerId,
        device: DeviceId,
        consent: Vec<(Program, bool)>,
        policy_version: u32,
    ) -> Self {
        Self {
            versions: crate::SUPPORTED_VERSIONS.to_vec(),
            agent_version: agent_version.into(),
            customer,
            device,
            consent,
            policy_version,
            stream: 1,
        }
    }

    /// The same hello for the spool stream `stream`.
    #[must_use]
    pub fn with_stream(mut self, stream: u64) -> Self {
        self.stream = stream;
        self
    }
}

/// The opening of an Enhance session (kind 12): an enrichment-only
/// exchange that names nothing of the device. Unlike [`Hello`] it has no
/// customer, no device, no spool stream and no consent: the service takes
/// the customer from the connection's client certificate and keeps nothing
/// of the device with what the session sends. It is answered with a
/// [`Welcome`] (high-water mark 0); the session then carries only
/// [`Sightings`], [`EnrichQuery`], [`VersionQuery`](crate::VersionQuery)
/// and [`Goodbye`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct EnhanceHello {
    /// Protocol versions the agent speaks (at most [`MAX_HELLO_LIST`]).
    #[serde(deserialize_with = "few")]
    pub versions: Vec<u8>,
    /// The agent's software version.
    pub agent_version: String,
}

impl EnhanceHello {
    /// An Enhance hello speaking every version of this build.
    pub fn new(agent_version: impl Into<String>) -> Self {
        Self { versions: crate::SUPPORTED_VERSIONS.to_vec(), agent_version: agent_version.into() }
    }
}

/// The enrichment upload of an Enhance session (kind 13): binaries by
/// their digests, size, format and first-seen day, web sites by their
/// registrable name and first-seen day — no device, user, path or file
/// name. Answered with an [`EnrichAnswer::Direct`] holding one verdict per
/// binary and domain, in order. Sending the same sightings again is
/// harmless: the service keeps them by content (customer and digest or
/// name), not by sequence.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Sightings {
    /// The upload's id, echoed as the answer's query id.
    pub query_id: u64,
    /// Binaries (at most [`crate::MAX_QUERY_ITEMS`]).
    #[serde(deserialize_with = "bounded")]
    pub binaries: Vec<BinarySighting>,
    /// Registrable domains (at most [`crate::MAX_QUERY_ITEMS`]).
    #[serde(deserialize_with = "bounded")]
    pub domains: Vec<DomainSighting>,
}

/// How the agent should retry after a failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct RetryPolicy {
    /// First wait, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest wait, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial_backoff_ms: 500, max_backoff_ms: 300_000 }
    }
}

/// The service's answer to [`Hello`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Welcome {
    /// The version chosen: the highest both speak.
    pub version: u8,
    /// The largest frame payload the service accepts.
    pub max_payload: u32,
    /// The most records the service accepts in one batch.
    pub max_batch_records: u32,
    /// How to retry.
    pub retry: RetryPolicy,
    /// The device's high-water mark: everything at or below it is stored.
    pub high_water: u64,
}

impl Welcome {
    /// A welcome for `version` with default limits.
    pub fn new(version: u8, high_water: u64) -> Self {
        Self {
            version,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_batch_records: 10_000,
            retry: RetryPolicy::default(),
            high_water,
        }
    }
}

/// Records of one program, with the sequence number of the first.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Batch {
    /// The program.
    pub program: Program,
    /// The batch's id; a retry keeps it.
    pub batch_id: BatchId,
    /// Sequence number of the first record; the rest follow one by one.
    pub first_seq: u64,
    /// The records.
    pub records: Vec<Record>,
    /// Sequence numbers just below `first_seq` that the device no longer
    /// holds and will never send (purged with a program's consent, expired
    /// or evicted before they left): the service accepts a batch starting
    /// at most `skipped` above its high-water mark + 1, moves the mark over
    /// them and counts them. Any other gap is refused.
    pub skipped: u64,
    /// The digest of the policy the device applied to these records
    /// (`privtel_filter::Policy::digest`), so the service can tell a device
    /// running an outdated policy.
    pub policy_hash: [u8; 32],
}

/// Why the service refused a record: an explicit number on the wire (never
/// a Rust declaration position), so codes stay stable as codes are added.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RejectCode(pub u16);

impl RejectCode {
    /// The store cannot take the batch now (full, locked, draining): retry.
    pub const UNAVAILABLE: Self = Self(1);
    /// Too many records or batches for now (a rate limit): retry later.
    pub const RATE_LIMITED: Self = Self(2);
    /// The batch's first sequence number leaves a gap above the high-water
    /// mark, or is out of range: nothing of the batch is stored.
    pub const SEQUENCE: Self = Self(3);
    /// The record's program is off for the customer.
    pub const PROGRAM_OFF: Self = Self(10);
    /// A personal field is in a form the customer's policy does not allow.
    pub const FIELD_FORM: Self = Self(11);
    /// The record is dated too far in the future.
    pub const FUTURE: Self = Self(12);
    /// The record's program differs from its batch's.
    pub const WRONG_PROGRAM: Self = Self(13);
    /// The customer has no settings at the service (fail closed).
    pub const UNKNOWN_CUSTOMER: Self = Self(14);
    /// The record is of a kind the program does not carry.
    pub const KIND: Self = Self(15);
    /// An interaction event with a web application or action the
    /// customer's policy does not define.
    pub const INTERACTION: Self = Self(16);

    /// The code in words (`"program off"`), or `"code N"` for one this build
    /// does not know.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let known = match self {
            Self::UNAVAILABLE => "unavailable",
            Self::RATE_LIMITED => "rate limited",
            Self::SEQUENCE => "sequence",
            Self::PROGRAM_OFF => "program off",
            Self::FIELD_FORM => "field form",
            Self::FUTURE => "future",
            Self::WRONG_PROGRAM => "wrong program",
            Self::UNKNOWN_CUSTOMER => "unknown customer",
            Self::KIND => "kind",
            Self::INTERACTION => "interaction not defined",
            Self(n) => return format!("code {n}").into(),
        };
        known.into()
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// One record the service refused.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Rejection {
    /// Its sequence number.
    pub seq: u64,
    /// Why, as a stable code.
    pub code: RejectCode,
    /// Why, in words.
    pub reason: String,
    /// Whether sending it again may succeed (as OTLP tells the two apart).
    pub retryable: bool,
}

/// The service's answer to a [`Batch`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Ack {
    /// The batch answered.
    pub batch_id: BatchId,
    /// Everything up to this sequence number is stored (or rejected for
    /// good); the agent may delete it.
    pub accepted_up_to: u64,
    /// Records refused.
    pub rejections: Vec<Rejection>,
    /// Wait this long before sending more, if set.
    pub retry_after_ms: Option<u64>,
}

/// A prefix of a SHA-256 digest (1 to 32 bytes).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct HashPrefix(pub Vec<u8>);

/// What the device asks about.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EnrichQuery {
    /// Full SHA-256 digests of binaries and registrable domains.
    Direct {
        /// The query's id, echoed in the answer.
        query_id: u64,
        /// Binaries by SHA-256 (at most [`crate::MAX_QUERY_ITEMS`]).
        #[serde(deserialize_with = "bounded")]
        binaries: Vec<Digest>,
        /// Registrable domains (at most [`crate::MAX_QUERY_ITEMS`]).
        #[serde(deserialize_with = "bounded")]
        domains: Vec<Domain>,
    },
    /// Only prefixes: of binaries' SHA-256, and of the SHA-256 of each
    /// domain's name. The service learns buckets, not binaries or domains.
    Private {
        /// The query's id.
        query_id: u64,
        /// Prefixes of binary digests (at most [`crate::MAX_QUERY_ITEMS`]).
        #[serde(deserialize_with = "bounded")]
        binaries: Vec<HashPrefix>,
        /// Prefixes of domain-name digests (at most
        /// [`crate::MAX_QUERY_ITEMS`]).
        #[serde(deserialize_with = "bounded")]
        domains: Vec<HashPrefix>,
    },
}

/// A verdict on a binary in a private answer, by full digest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct BinaryEntry {
    /// The binary's SHA-256.
    pub sha256: Digest,
    /// Its threat level.
    pub threat: ThreatLevel,
    /// Its category, if known.
    pub category: Option<Category>,
}

/// A verdict on a domain in a private answer, by the digest of its name.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct DomainEntry {
    /// SHA-256 of the registrable domain's name.
    pub name_sha256: Digest,
    /// Its reputation.
    pub reputation: Reputation,
    /// Its category, if known.
    pub category: Option<Category>,
    /// Where it is hosted, if known.
    pub hosting_country: Option<CountryCode>,
}

/// Every known entry of one bucket, padded to a fixed count.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Bucket<T> {
    /// The prefix asked for.
    pub prefix: HashPrefix,
    /// Entries (real ones and padding, in digest order).
    pub entries: Vec<T>,
}

/// The service's answer to an [`EnrichQuery`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EnrichAnswer {
    /// Verdicts for a direct query, `-` where unknown.
    Direct {
        /// The query's id.
        query_id: u64,
        /// One verdict per binary asked about.
        #[serde(deserialize_with = "bounded")]
        binaries: Vec<BinaryVerdict>,
        /// One verdict per domain asked about.
        #[serde(deserialize_with = "bounded")]
        domains: Vec<DomainVerdict>,
    },
    /// Buckets for a private query.
    Private {
        /// The query's id.
        query_id: u64,
        /// One bucket per binary prefix asked about.
        #[serde(deserialize_with = "bounded")]
        binaries: Vec<Bucket<BinaryEntry>>,
        /// One bucket per domain prefix asked about.
        #[serde(deserialize_with = "bounded")]
        domains: Vec<Bucket<DomainEntry>>,
    },
}

/// Decodes a list of at most [`crate::MAX_QUERY_ITEMS`] entries, refusing a
/// longer one from its length prefix, before decoding any entry: a 16 MiB
/// query of one-byte entries would otherwise become 16 million values of
/// 24 bytes or more each.
fn bounded<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    at_most::<{ crate::MAX_QUERY_ITEMS }, D, T>(d)
}

/// Decodes one of a hello's lists (versions, consent): at most
/// [`MAX_HELLO_LIST`] entries, refused from the length prefix. The service
/// keeps a hello's consent for the whole session and looks a program up in
/// it for every record; unbounded, a hello of millions of entries would make
/// each record of every later batch cost millions of comparisons.
fn few<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    at_most::<MAX_HELLO_LIST, D, T>(d)
}

/// Decodes a list of at most `MAX` entries, refusing a longer one from its
/// length prefix, before decoding any entry.
fn at_most<'de, const MAX: usize, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<const MAX: usize, T>(std::marker::PhantomData<T>);

    impl<'de, const MAX: usize, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<MAX, T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX} entries")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<T>, A::Error> {
            let max = MAX;
            let hint = seq.size_hint().unwrap_or(0);
            if hint > max {
                return Err(serde::de::Error::invalid_length(hint, &self));
            }
            let mut out = Vec::with_capacity(hint);
            while let Some(x) = seq.next_element()? {
                if out.len() == max {
                    return Err(serde::de::Error::invalid_length(max + 1, &self));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    d.deserialize_seq(Bounded::<MAX, T>(std::marker::PhantomData))
}

/// What the service asks the agent to do.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Action {
    /// Remove every waiting record of a program.
    PurgeProgram(Program),
    /// Export everything held locally about a person.
    ExportPerson(UserId),
    /// Erase everything held locally about a person.
    ErasePerson(UserId),
}

/// A command from the service.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Command {
    /// The command's id.
    pub command_id: u64,
    /// What to do.
    pub action: Action,
}

/// Error codes of [`ErrorMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No common protocol version.
    UnsupportedVersion,
    /// A message the receiver could not decode.
    Malformed,
    /// A message out of order.
    Protocol,
    /// The service is overloaded: retry later.
    Unavailable,
    /// The customer or device is not allowed.
    Forbidden,
    /// Anything else.
    Internal,
}

/// An error report to the peer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct ErrorMessage {
    /// The code.
    pub code: ErrorCode,
    /// Words for a log.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
}

/// A device asking for its client certificate: at enrollment with a token
/// the customer's administrator issued, or, over a connection already
/// authenticated by its certificate, for a renewal (no token).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct EnrollRequest {
    /// The enrollment token (secret; `None` for a renewal).
    pub token: Option<String>,
    /// The customer the device enrolls with.
    pub customer: CustomerId,
    /// The device's id.
    pub device: DeviceId,
    /// A PKCS#10 certificate signing request (DER) for the key the device
    /// generated; the private key never leaves the device.
    pub csr_der: Vec<u8>,
}

impl std::fmt::Display for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "enroll request for {}/{}", self.customer, self.device)
    }
}

/// The service's answer to an [`EnrollRequest`]: the device's certificate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Enrolled {
    /// The client certificate, PEM, naming (customer, device).
    pub cert_pem: String,
    /// The customer's enrollment authority certificate, PEM.
    pub ca_pem: String,
    /// When the certificate expires (unix seconds): renew before.
    pub not_after_unix: i64,
}

/// The end of a conversation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
// A new field is a protocol change (a version bump), so struct literals
// are fine for users of this version.
pub struct Goodbye {
    /// Why, in words.
    pub reason: String,
}

/// Every message of protocol version 2, by kind.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum Message {
    /// Kind 1.
    Hello(Hello),
    /// Kind 2.
    Welcome(Welcome),
    /// Kind 3.
    Batch(Batch),
    /// Kind 4.
    Ack(Ack),
    /// Kind 5.
    EnrichQuery(EnrichQuery),
    /// Kind 6.
    EnrichAnswer(EnrichAnswer),
    /// Kind 7.
    Command(Command),
    /// Kind 8.
    Error(ErrorMessage),
    /// Kind 9.
    Goodbye(Goodbye),
    /// Kind 10.
    EnrollRequest(EnrollRequest),
    /// Kind 11.
    Enrolled(Enrolled),
    /// Kind 12: opens an Enhance session (no device named).
    EnhanceHello(EnhanceHello),
    /// Kind 13: anonymous enrichment upload.
    Sightings(Sightings),
    /// Kind 14: is a newer version of a product out? (anonymous session)
    VersionQuery(crate::VersionQuery),
    /// Kind 15: the answer: up to date, or the latest version's installer.
    VersionAnswer(crate::VersionAnswer),
}

macro_rules! kinds {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        impl Message {
    /// An [`ErrorMessage`] to send: its code, a text naming what was
    /// expected (never a personal value), and whether a retry may succeed.
    ///
    /// ```
    /// use privtel_wire::{ErrorCode, Message};
    ///
    /// let m = Message::error(ErrorCode::Unavailable, "too many queries: slow down", true);
    /// assert!(matches!(m, Message::Error(e) if e.retryable && e.code == ErrorCode::Unavailable));
    /// ```
    pub fn error(code: ErrorCode, message: &str, retryable: bool) -> Self {
        Self::Error(ErrorMessage { code, message: message.to_owned(), retryable })
    }

            /// The kind byte of the frame.
            pub fn kind(&self) -> u8 {
                match self { $(Self::$variant(_) => $code,)* }
            }

            /// The kind in words.
            pub fn kind_name(&self) -> &'static str {
                match self { $(Self::$variant(_) => $name,)* }
            }

            /// The payload: the message's bincode encoding.
            ///
            /// # Errors
            ///
            /// [`Error::Encode`] if it exceeds the payload limit.
            pub fn encode_payload(&self) -> Result<Vec<u8>> {
                let encoded = match self {
                    $(Self::$variant(m) => bincode::serde::encode_to_vec(m, config()),)*
                };
                encoded.map_err(|e| Error::Encode { kind: self.kind_name(), reason: e.to_string() })
            }

            /// Decodes the payload of a frame of `kind`.
            ///
            /// # Errors
            ///
            /// [`Error::UnknownKind`] for a kind this build does not know;
            /// [`Error::Decode`] for a payload that is not a valid message,
            /// or that has bytes after it.
            pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Self> {
                match kind {
                    $($code => decode(payload, $name).map(Self::$variant),)*
                    _ => Err(Error::UnknownKind { kind }),
                }
            }
        }
    };
}

kinds! {
    Hello = 1, "hello";
    Welcome = 2, "welcome";
    Batch = 3, "batch";
    Ack = 4, "ack";
    EnrichQuery = 5, "enrich query";
    EnrichAnswer = 6, "enrich answer";
    Command = 7, "command";
    Error = 8, "error";
    Goodbye = 9, "goodbye";
    EnrollRequest = 10, "enroll request";
    Enrolled = 11, "enrolled";
    EnhanceHello = 12, "enhance hello";
    Sightings = 13, "sightings";
    VersionQuery = 14, "version query";
    VersionAnswer = 15, "version answer";
}

/// Appends bincode output to a `Vec` (bincode's `Writer` for `&mut Vec`).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], kind: &'static str) -> Result<T> {
    let (value, used) = bincode::serde::decode_from_slice(payload, config()).map_err(|e| Error::Decode {
        kind,
        offset: 0,
        reason: e.to_string(),
    })?;
    if used != payload.len() {
        return Err(Error::Decode {
            kind,
            offset: used,
            reason: format!("{} bytes after the message", payload.len() - used),
        });
    }
    Ok(value)
}

impl Message {
    /// Appends this message as one frame to `out`, encoding the payload in
    /// place (no intermediate buffer). Uncompressed.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] or [`Error::TooLarge`].
    pub fn encode_frame_into(&self, version: u8, max_payload: u32, out: &mut Vec<u8>) -> Result<()> {
        crate::frame::encode_frame_with(version, self.kind(), 0, max_payload, out, |buf| {
            let writer = VecWriter(buf);
            self.encode_with(writer)
        })
    }

    fn encode_with(&self, writer: VecWriter<'_>) -> Result<()> {
        macro_rules! enc {
            ($m:expr) => {
                bincode::serde::encode_into_writer($m, writer, config())
            };
        }
        let r = match self {
            Self::Hello(m) => enc!(m),
            Self::Welcome(m) => enc!(m),
            Self::Batch(m) => enc!(m),
            Self::Ack(m) => enc!(m),
            Self::EnrichQuery(m) => enc!(m),
            Self::EnrichAnswer(m) => enc!(m),
            Self::Command(m) => enc!(m),
            Self::Error(m) => enc!(m),
            Self::Goodbye(m) => enc!(m),
            Self::EnrollRequest(m) => enc!(m),
            Self::Enrolled(m) => enc!(m),
            Self::EnhanceHello(m) => enc!(m),
            Self::Sightings(m) => enc!(m),
            Self::VersionQuery(m) => enc!(m),
            Self::VersionAnswer(m) => enc!(m),
        };
        r.map_err(|e| Error::Encode { kind: self.kind_name(), reason: e.to_string() })
    }

    /// Decodes the frame at the start of `bytes` straight into a message
    /// (the payload is not copied); returns it and the bytes used.
    ///
    /// # Errors
    ///
    /// Any frame error, [`Error::UnknownKind`] or [`Error::Decode`].
    pub fn decode_frame_from(bytes: &[u8], max_payload: u32) -> Result<(Self, usize)> {
        let (_, kind, flags, payload, used) = crate::frame::frame_view(bytes, max_payload)?;
        let msg = if flags & FLAG_LZ4 != 0 {
            Self::decode_payload(kind, &decompress_payload(payload, max_payload)?)?
        } else {
            Self::decode_payload(kind, payload)?
        };
        Ok((msg, used))
    }

    /// The frame of this message at `version`, compressed if asked and the
    /// `lz4` feature is on, and if the payload then expands at most
    /// [`MAX_LZ4_EXPANSION`](crate::MAX_LZ4_EXPANSION) times (a receiver
    /// refuses more); else plain.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`].
    pub fn to_frame(&self, version: u8, compress: bool) -> Result<Frame> {
        let payload = self.encode_payload()?;
        if compress && cfg!(feature = "lz4") {
            let compressed = compress_payload(&payload);
            // Beyond the expansion a receiver takes, the payload goes plain.
            if (payload.len() as u64) <= u64::from(crate::frame::MAX_LZ4_EXPANSION) * compressed.len() as u64
            {
                return Ok(Frame::new(version, self.kind(), FLAG_LZ4, compressed));
            }
        }
        Ok(Frame::new(version, self.kind(), 0, payload))
    }

    /// The message in a frame.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKind`], [`Error::Decode`], or [`Error::BadFlags`] for
    /// a compressed frame without the `lz4` feature.
    pub fn from_frame(frame: &Frame, max_payload: u32) -> Result<Self> {
        if frame.flags & FLAG_LZ4 != 0 {
            let plain = decompress_payload(&frame.payload, max_payload)?;
            return Self::decode_payload(frame.kind, &plain);
        }
        Self::decode_payload(frame.kind, &frame.payload)
    }
}

#[cfg(feature = "lz4")]
fn compress_payload(plain: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(plain)
}

#[cfg(not(feature = "lz4"))]
fn compress_payload(plain: &[u8]) -> Vec<u8> {
    plain.to_vec()
}

/// Decompresses, refusing before allocating a claimed size above `max` or
/// above [`MAX_LZ4_EXPANSION`](crate::MAX_LZ4_EXPANSION) times the
/// compressed payload.
#[cfg(feature = "lz4")]
fn decompress_payload(data: &[u8], max: u32) -> Result<Vec<u8>> {
    let size = data.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(Error::Decode {
        kind: "compressed",
        offset: data.len(),
        reason: "no size prefix".into(),
    })?;
    if size > max {
        return Err(Error::TooLarge { len: u64::from(size), max });
    }
    if u64::from(size) > u64::from(crate::frame::MAX_LZ4_EXPANSION) * data.len() as u64 {
        return Err(Error::Decode {
            kind: "compressed",
            offset: 0,
            reason: format!(
                "a decompressed size of {size} bytes, expected at most {} times the {} compressed bytes",
                crate::frame::MAX_LZ4_EXPANSION,
                data.len()
            ),
        });
    }
    lz4_flex::block::decompress_size_prepended(data).map_err(|e| Error::Decode {
        kind: "compressed",
        offset: 0,
        reason: e.to_string(),
    })
}

#[cfg(not(feature = "lz4"))]
fn decompress_payload(_: &[u8], _: u32) -> Result<Vec<u8>> {
    Err(Error::BadFlags { flags: FLAG_LZ4 })
}
