//! One-pass SHA-256 and BLAKE3 of byte slices, readers, files and directory
//! trees, executable format detection, and a hash cache.
//!
//! Devices report the binaries that run on them by hash, never by content.
//!
//! *Status: the layout is in place; the hasher arrives with the binary
//! hashing issue.*
