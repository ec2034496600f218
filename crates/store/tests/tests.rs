//! Integration tests of privtel-store, built as one binary.

mod aggregate;
mod customer_keys;
mod engine;
mod golden;
mod group;
mod spool;
mod tenant;
