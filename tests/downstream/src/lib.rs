//! Empty: the package exists for its tests (`tests/downstream.rs`), which
//! use `privtel` as a downstream program would, with nothing else.
