//! The service side (feature `server`): the register in one SQLite file,
//! enrollment and renewal, and the rustls client-certificate verifier.
//!
//! # Why it is built this way
//!
//! * **No cache of device state.** Every [`Authority::identify`] reads the
//!   file, so an administrator revoking or resetting a device from another
//!   process takes effect on that device's next connection, with no restart
//!   and no signal. One indexed read per connection is cheap next to a TLS
//!   handshake. Only each customer's CA certificate (which never changes
//!   once made) is cached, as a ready webpki verifier.
//! * **One use of a token, atomically.** An enrollment checks the token,
//!   the device and issues the certificate inside one `BEGIN IMMEDIATE`
//!   transaction: two devices racing for the last use are serialised by
//!   SQLite's write lock (across threads and processes alike), and a refusal
//!   rolls back, so a bad CSR never costs the customer a use.
//! * **Reports are counters.** A refused identity is reported once per
//!   (kind, customer, device, key) with first/last time and a count, so a
//!   revoked device retrying every minute adds no rows.

mod register;
mod verifier;

pub use register::{
    Authority, DeviceRecord, RENEWAL_INTERVAL, RemovedCustomer, Report, ReportKind, TOKEN_PREFIX,
    server_config,
};
