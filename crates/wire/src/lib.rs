//! The wire protocol between agents and the service: frames, versioned
//! messages, a bincode codec that always decodes with a size limit, and a
//! blocking transport over any `Read + Write` (TLS with rustls).
//!
//! *Status: the layout is in place; the protocol arrives with the wire
//! protocol issue.*
