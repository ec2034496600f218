//! Fixtures and proptest strategies for every privtel model type.
//!
//! Tests of the other crates use these from `tests/` (as a dev-dependency),
//! so every crate tests against the same generated data.
//!
//! Strategies are plain functions returning `impl Strategy`, named after the
//! type (`device()`, `record()`); [`fixtures`] holds one hand-written value of
//! each record kind.

pub mod bench;
#[cfg(feature = "engine")]
pub mod engine_contract;
pub mod fixtures;
mod pipe;
pub mod process;
mod strategies;

pub use pipe::{End, pipe};
pub use strategies::*;
