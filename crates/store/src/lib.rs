//! Durable storage on real SQLite: the spool (a device's outbox that loses
//! nothing) and the engine store (the service's events and objects, with
//! idempotent ingest, retention sweeps, export and erasure of one person).
//!
//! *Status: the layout is in place; the stores arrive with the retention and
//! storage issue.*
