//! Integration tests of privtel-access, built as one binary.

mod common;
mod grants;
mod log;
mod requests;
