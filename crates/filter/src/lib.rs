//! Decides what may leave a device and in what form: consent per program, a
//! treatment per personal field (clear, keyed pseudonym, generalised, or
//! never recorded), free-text scrubbing, and k-anonymous aggregates.
//!
//! *Status: the layout is in place; the filter arrives with the privacy
//! filtering issue.*
