//! privtel: privacy-first endpoint and product telemetry, as one dependency.
//!
//! This facade re-exports the member crates, so `privtel::model::Record` is
//! `privtel_model::Record`. Users who need one piece can depend on that crate
//! alone.
//!
//! # The map
//!
//! | module | crate | layer | role |
//! |---|---|---|---|
//! | [`model`] | `privtel-model` | 0 | ids, devices, users, binaries, domains, events, programs, verdicts; personal fields typed as personal |
//! | [`retention`] | `privtel-retention` | 1 | pure policy: what expires when, deletion deadlines |
//! | [`domain`] | `privtel-domain` | 1 | URL or host to canonical host and registrable domain |
//! | [`hash`] | `privtel-hash` | 1 | one-pass SHA-256 + BLAKE3 of files and trees |
//! | [`wire`] | `privtel-wire` | 1 | frames, messages, bincode codec with limits, TLS |
//! | [`filter`] | `privtel-filter` | 2 | consent, per-field treatment, scrubbing, k-anonymity |
//! | [`store`] | `privtel-store` | 2 | SQLite spool and engine store, sweeps, export, erasure |
//!
//! A crate depends only on crates of a lower layer. On top of them, this
//! crate composes the device side ([`agent`]) and the service side
//! ([`service`]) that the example programs run.

pub mod agent;
pub mod service;

pub use privtel_domain as domain;
pub use privtel_filter as filter;
pub use privtel_hash as hash;
pub use privtel_model as model;
pub use privtel_retention as retention;
pub use privtel_store as store;
pub use privtel_wire as wire;
