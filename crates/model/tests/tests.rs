//! Integration tests of privtel-model, built as one binary.

mod golden;
mod hostile;
mod roundtrip;
mod visitor;
