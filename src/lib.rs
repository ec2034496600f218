//! privtel: privacy-first endpoint and product telemetry, as one dependency.
//!
//! This facade only re-exports the member crates, so `privtel::model::Record`
//! is `privtel_model::Record`. Each crate is behind a cargo feature of the
//! same name; the defaults turn on everything. A program that needs one piece
//! turns the defaults off and names it — the filter alone compiles no SQLite,
//! no rustls and no ring:
//!
//! ```toml
//! privtel = { version = "0.1", default-features = false, features = ["filter"] }
//! ```
//!
//! # One dependency
//!
//! Every type a crate's API takes or returns is reachable through the
//! facade: the model as [`model`] (with `time`'s `Duration` and
//! `OffsetDateTime` as `model::Duration` and `model::OffsetDateTime`), and
//! each member crate re-exports the model types of its own signatures
//! (`privtel::filter::Record`, `privtel::hash::Digest`,
//! `privtel::store::RetentionPolicy`, …). A program needs no
//! `privtel-model` or `time` dependency of its own; `tests/downstream.rs`
//! hashes, normalises, filters, frames and spools that way, and fails if it
//! names another crate.
//!
//! ```
//! # #[cfg(feature = "hash")] {
//! use privtel::hash::{HashAlg, digest};
//! use privtel::model::{Duration, EventId, Timestamp};
//!
//! let id = EventId::random();
//! let now = Timestamp::now();
//! let later = now.checked_add(Duration::minutes(5)).expect("in range");
//! assert!(later > now && id != EventId::random());
//! assert_eq!(
//!     digest(HashAlg::Sha256, b"hello world").to_string(),
//!     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
//! );
//! # }
//! ```
//!
//! # The map
//!
//! | module | crate | feature | layer | role |
//! |---|---|---|---|---|
//! | [`model`] | `privtel-model` | always | 0 | ids, devices, users, binaries, domains, events, programs, verdicts; personal fields typed as personal |
//! | `retention` | `privtel-retention` | `retention` | 1 | pure policy: what expires when, deletion deadlines |
//! | `domain` | `privtel-domain` | `domain` | 1 | URL or host to canonical host and registrable domain |
//! | `hash` | `privtel-hash` | `hash` | 1 | one-pass SHA-256 + BLAKE3 of files and trees |
//! | `wire` | `privtel-wire` | `wire` (`tls`, `certs`, `lz4`) | 1 | frames, messages, bincode codec with limits, deadlines, TLS |
//! | `authority` | `privtel-authority` | `tls` | 2 | enrollment: a CA per customer, tokens, client certificates, mutual TLS |
//! | `filter` | `privtel-filter` | `filter` | 2 | consent, per-field treatment, scrubbing, k-anonymity |
//! | `store` | `privtel-store` | `store` | 2 | SQLite spool and engine store, sweeps, export, erasure |
//! | `access` | `privtel-access` | `access` | 2 | operator access: grants, the hash-chained access log, signed checkpoints, the customer's verifier |
//! | `agent` | `privtel-agent` | `agent` | 3 | the device side: collectors, filter → outbox → upload, enrichment |
//! | `service` | `privtel-service` | `service` | 3 | the service side: identities from certificates, per-customer settings enforced, ingest, enrichment |
//!
//! A crate depends only on crates of a lower layer; the agent and the
//! service do not depend on each other. The architecture, the invariants and
//! the protocol are written down in the repository's `docs/` folder.
//!
//! # Crate features
//!
//! * one per crate: `retention`, `domain`, `hash`, `wire`, `filter`,
//!   `store`, `access`, `agent`, `service` (each turns on what it needs
//!   below it; `service` turns on `access`);
//! * `tls` — the TLS transport of `wire`, mutual TLS and enrollment
//!   (`authority`; its server side with `service`), the service's TLS
//!   accept loop and the agent's enrollment;
//! * `certs` — certificate generation (rcgen) for a service, the demo and
//!   tests;
//! * `lz4` — LZ4 payload compression on the wire;
//! * `engine-pg` — the engine store on PostgreSQL (`engine_pg`, the
//!   `postgres` client); off by default.
//!
//! Default: `agent`, `service`, `tls`, `certs`, `lz4` (everything but
//! `engine-pg`).

#[cfg(feature = "access")]
pub use privtel_access as access;
#[cfg(feature = "agent")]
pub use privtel_agent as agent;
#[cfg(feature = "tls")]
pub use privtel_authority as authority;
#[cfg(feature = "domain")]
pub use privtel_domain as domain;
#[cfg(feature = "engine-pg")]
pub use privtel_engine_pg as engine_pg;
#[cfg(feature = "filter")]
pub use privtel_filter as filter;
#[cfg(feature = "hash")]
pub use privtel_hash as hash;
pub use privtel_model as model;
#[cfg(feature = "retention")]
pub use privtel_retention as retention;
#[cfg(feature = "service")]
pub use privtel_service as service;
#[cfg(feature = "store")]
pub use privtel_store as store;
#[cfg(feature = "wire")]
pub use privtel_wire as wire;
