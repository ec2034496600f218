//! Integration tests of privtel-store, built as one binary.

mod engine;
mod golden;
mod spool;
mod tenant;
