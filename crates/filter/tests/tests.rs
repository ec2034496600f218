//! Integration tests of privtel-filter, built as one binary.

mod aggregates;
mod canary;
mod policy;
mod pseudonyms;
