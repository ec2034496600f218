//! Integration tests of privtel-model, built as one binary.

mod hostile;
mod roundtrip;
mod visitor;
