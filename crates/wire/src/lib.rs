//! The wire protocol between agents and the service: frames, versioned
//! messages, a bincode codec that always decodes with a size limit, private
//! enrichment lookups, and a blocking transport over any `Read + Write`
//! (TLS 1.2/1.3 with rustls behind the `tls` feature).
//!
//! The protocol is written down in `docs/PROTOCOL.md`; golden files in
//! `tests/data/v2-*.bin` pin version 2 (the `v1-*` files are kept as
//! proof that version 1 frames are refused by their version).
//!
//! # Overview
//!
//! * [`Frame`], [`encode_frame`], [`decode_frame`], [`read_frame`]: an
//!   18-byte header (magic `PT`, version, kind, flags, length, checksum)
//!   and a payload; the length is checked against a maximum (16 MiB by
//!   default) before anything is allocated.
//! * [`Message`]: Hello/Welcome, Batch/Ack, EnrichQuery/EnrichAnswer,
//!   EnrollRequest/Enrolled, EnhanceHello/Sightings (the anonymous
//!   enrichment session: no device named; [`Connection::server_open`]
//!   takes either opening),
//!   VersionQuery/VersionAnswer (the version check, in that anonymous
//!   session; [`DottedVersion`] compares versions),
//!   Command, Error, Goodbye; payloads are bincode 2 through one
//!   configuration with a limit.
//! * [`Connection`]: send/recv, negotiation (highest common version),
//!   unknown kinds skipped after negotiation.
//! * [`VerdictIndex`], [`private_query`], [`verdicts_for`]: private lookups
//!   by hash prefix with padded buckets.
//!
//! # Example
//!
//! A message to a frame's bytes and back, as a connection sends and
//! receives it (version 2, no compression, the default size limit):
//!
//! ```
//! use privtel_wire::{DEFAULT_MAX_PAYLOAD, Goodbye, Message, decode_frame, encode_frame};
//!
//! let msg = Message::Goodbye(Goodbye { reason: "cycle done".into() });
//! let mut bytes = Vec::new();
//! encode_frame(&msg.to_frame(2, false)?, DEFAULT_MAX_PAYLOAD, &mut bytes)?;
//! let (frame, used) = decode_frame(&bytes, DEFAULT_MAX_PAYLOAD)?;
//! assert_eq!(used, bytes.len());
//! assert_eq!(Message::from_frame(&frame, DEFAULT_MAX_PAYLOAD)?, msg);
//!
//! // A damaged frame is refused with a typed error, never a panic.
//! bytes[20] ^= 1;
//! assert!(decode_frame(&bytes, DEFAULT_MAX_PAYLOAD).is_err());
//! # Ok::<(), privtel_wire::Error>(())
//! ```
//!
//! # Crate features
//!
//! * `tls` — [`tls`] module: rustls (ring provider) client and server
//!   configurations and streams.
//! * `certs` — adds `tls::generate_identity`: a CA and server certificates
//!   made with rcgen (implies `tls`).
//! * `lz4` — LZ4 payload compression (flag bit 0), with the decompressed
//!   size checked against the maximum and against
//!   [`MAX_LZ4_EXPANSION`] times the compressed size before allocating.

mod conn;
mod enrich;
mod error;
mod frame;
mod message;
#[cfg(feature = "tls")]
pub mod tls;
mod version;

#[allow(deprecated)]
pub use conn::error;
pub use conn::{Connection, DEADLINE_TICK, Opening};
pub use enrich::{
    DEFAULT_PAD_TO, DEFAULT_PREFIX_LEN, MAX_PREFIX_LEN, MAX_QUERY_ITEMS, MIN_PREFIX_LEN, VerdictIndex,
    domain_digest, parse_reputation, prefix, private_query, verdicts_for,
};
pub use error::{DeadlineKind, Error, QueryError, Result};
pub use frame::{
    DEFAULT_MAX_PAYLOAD, FLAG_LZ4, Frame, HEADER_LEN, MAGIC, MAX_LZ4_EXPANSION, READ_CHUNK,
    SUPPORTED_VERSIONS, decode_frame, encode_frame, read_frame, write_frame,
};
pub use message::{
    Ack, Action, Batch, BinaryEntry, Bucket, Command, DomainEntry, EnhanceHello, EnrichAnswer, EnrichQuery,
    EnrollRequest, Enrolled, ErrorCode, ErrorMessage, Goodbye, HashPrefix, Hello, MAX_HELLO_LIST, Message,
    RejectCode, Rejection, RetryPolicy, Sightings, Welcome,
};
pub use version::{
    DottedVersion, MAX_CHANNEL_LEN, MAX_PLATFORM_LEN, MAX_PRODUCT_LEN, MAX_URL_LEN, MAX_VERSION_LEN,
    MAX_VERSION_PARTS, UpdateOffer, VersionAnswer, VersionError, VersionQuery, VersionStatus,
    check_installer_url,
};

// The model types this crate's API takes and returns, so that a program
// using this crate needs no `privtel-model` dependency of a matching
// version: the model as a whole (to build records), and the types of its
// signatures by name. (Deadlines here are `std::time::Duration`.)
pub use privtel_model as model;
pub use privtel_model::{
    BatchId, BinarySighting, BinaryVerdict, Category, CountryCode, CustomerId, DeviceId, Digest, Domain,
    DomainSighting, DomainVerdict, Program, Record, Reputation, ThreatLevel,
};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
