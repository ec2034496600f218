//! Pure retention policy: when records expire (time to live of 7, 14 or 30
//! days), when an inactive device is purged (45 days by default), and when an
//! erasure request is overdue (24 hours).
//!
//! Every decision is a function of a record's times and a `now` passed in by
//! the caller; this crate never reads a clock, a file or the environment.
//!
//! *Status: the layout is in place; the policy types arrive with the retention
//! and storage issue.*
