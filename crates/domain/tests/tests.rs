//! Integration tests of privtel-domain, built as one binary.

mod contract;
mod official;
mod props;
