//! Integration tests of privtel-filter, built as one binary.

mod aggregates;
mod canary;
mod docs_tables;
mod interactions;
mod policy;
mod pseudonyms;
