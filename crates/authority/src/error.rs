//! Error types. None of them ever repeats an enrollment token or a key;
//! customer and device ids are opaque keys (never personal by construction,
//! see `privtel_model::id`) and are named where an operator needs them.

#[cfg(feature = "server")]
use privtel_model::{CustomerId, DeviceId};

/// The result of the register's administrative operations.
#[cfg(feature = "server")]
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the register itself and its administrative operations.
#[cfg(feature = "server")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be read or written.
    #[error("authority database: {action}: {reason}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// SQLite's words.
        reason: String,
    },
    /// The database file (or its folder) could not be opened or created.
    #[error("authority database {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the database file, which holds every
    /// customer's CA key.
    #[error("authority database {path} has mode {mode:o}: expected no access for group and others (0600)")]
    TooOpen {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The database was written by another schema version.
    #[error("authority database schema version {found}: expected {expected}")]
    Schema {
        /// The version found.
        found: i64,
        /// The version this build reads.
        expected: i64,
    },
    /// No authority exists for this customer (see `Authority::add_customer`).
    #[error("no enrollment authority for customer {customer}: expected a customer added with add_customer")]
    UnknownCustomer {
        /// The customer.
        customer: CustomerId,
    },
    /// An argument out of range.
    #[error("invalid {what}: expected {expected}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// What is allowed.
        expected: &'static str,
    },
    /// Making a key, a certificate or a random number failed.
    #[error("{action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// The library's words.
        reason: String,
    },
}

#[cfg(feature = "server")]
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database { action: "query", reason: e.to_string() }
    }
}

/// Why an enrollment or a renewal was refused. Messages name what was
/// expected and never repeat the token.
#[cfg(feature = "server")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// An enrollment without a token.
    #[error("enrollment without a token: expected a token from the customer's administrator")]
    TokenMissing,
    /// Not of the token format (`ptenr_` and 64 hex digits).
    #[error("malformed enrollment token: expected 'ptenr_' and 64 hex digits")]
    TokenMalformed,
    /// No such token was ever issued.
    #[error("unknown enrollment token: expected a token issued by the customer's administrator")]
    TokenUnknown,
    /// The token's lifetime is over.
    #[error("expired enrollment token: expected a token used before its expiry")]
    TokenExpired,
    /// Every use of the token is spent.
    #[error("enrollment token used up: expected a token with uses left")]
    TokenUsedUp,
    /// The administrator revoked the token.
    #[error("revoked enrollment token: expected a token that is not revoked")]
    TokenRevoked,
    /// The token belongs to another customer than the request names.
    #[error("enrollment token of another customer: expected a token issued for customer {customer}")]
    TokenWrongCustomer {
        /// The customer the request names.
        customer: CustomerId,
    },
    /// The CSR could not be read or its signature does not verify.
    #[error("invalid certificate signing request: expected {expected}")]
    Csr {
        /// What was expected.
        expected: &'static str,
    },
    /// The device is enrolled with another key: a second machine claims
    /// its identity (a clone), or a reinstall the administrator has not
    /// reset. Reported.
    #[error(
        "device {customer}/{device} is already enrolled with another key: expected the administrator to reset it first"
    )]
    AlreadyEnrolled {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// The device is revoked.
    #[error("device {customer}/{device} is revoked: expected a device that is not revoked")]
    Revoked {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// A renewal for a device the register does not hold (reset since the
    /// connection was authenticated).
    #[error("device {customer}/{device} is not enrolled: expected an enrolled device")]
    NotEnrolled {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// A renewal over a connection whose key is no longer the registered one.
    #[error("device {customer}/{device} renews with a key that is not its registered key")]
    KeyMismatch {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// A renewal within [`crate::RENEWAL_INTERVAL`] of the device's last
    /// one: retry after `retry_after_s` seconds.
    #[error(
        "device {customer}/{device} renewed less than a minute ago: expected a renewal in {retry_after_s} s or later"
    )]
    RenewedTooSoon {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
        /// Seconds until a renewal is taken.
        retry_after_s: u64,
    },
    /// The register failed.
    #[error(transparent)]
    Authority(#[from] Error),
}

#[cfg(feature = "server")]
impl From<rusqlite::Error> for EnrollError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Authority(e.into())
    }
}

#[cfg(feature = "server")]
impl EnrollError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> privtel_wire::ErrorCode {
        use privtel_wire::ErrorCode;
        match self {
            Self::Csr { .. } | Self::TokenMalformed => ErrorCode::Malformed,
            Self::Authority(_) => ErrorCode::Internal,
            Self::RenewedTooSoon { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::Forbidden,
        }
    }

    /// Whether the same request may succeed later without an administrator
    /// doing anything (only a failure of the register itself).
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Authority(Error::Database { .. }) | Self::RenewedTooSoon { .. })
    }

    /// The refusal as a wire error message for the device. A failure of the
    /// register is not described to the device (its words are for the
    /// service's log).
    ///
    /// ```
    /// let e = privtel_authority::EnrollError::TokenExpired;
    /// let m = e.to_error_message();
    /// assert_eq!(m.code, privtel_wire::ErrorCode::Forbidden);
    /// assert!(m.message.contains("expired"));
    /// ```
    pub fn to_error_message(&self) -> privtel_wire::ErrorMessage {
        let message = match self {
            Self::Authority(_) => "the enrollment authority failed".to_owned(),
            other => other.to_string(),
        };
        privtel_wire::ErrorMessage { code: self.code(), message, retryable: self.retryable() }
    }
}

/// Why a connection's certificate does not authenticate a device.
#[cfg(feature = "server")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The connection presented no certificate (it may only enroll).
    #[error("no client certificate: expected a device certificate (a device without one may only enroll)")]
    NoCertificate,
    /// The certificate names no device identity, or cannot be read.
    #[error("unusable client certificate: expected {expected}")]
    BadCertificate {
        /// What was expected.
        expected: &'static str,
    },
    /// The customer it names has no authority here.
    #[error("client certificate of an unknown customer: expected a customer of this service")]
    UnknownCustomer,
    /// The chain does not verify against the named customer's authority
    /// (another customer's CA, expired, not for client authentication).
    #[error("client certificate not issued by its customer's authority: {reason}")]
    Untrusted {
        /// rustls' words.
        reason: String,
    },
    /// The device is not enrolled (reset since the certificate was issued).
    /// Reported.
    #[error("device {customer}/{device} is not enrolled: expected an enrolled device")]
    NotEnrolled {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// The device is revoked. Reported.
    #[error("device {customer}/{device} is revoked")]
    Revoked {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// The certificate's key is not the device's registered key: an old
    /// certificate of a renewed device, or a clone. Reported.
    #[error("device {customer}/{device} presented a key that is not its registered key: clone suspected")]
    CloneSuspected {
        /// The customer.
        customer: CustomerId,
        /// The device.
        device: DeviceId,
    },
    /// The register failed.
    #[error(transparent)]
    Authority(#[from] Error),
}

#[cfg(feature = "server")]
impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Authority(e.into())
    }
}

/// Errors of the device side.
#[cfg(feature = "client")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Making the key or the CSR failed.
    #[error("{action}: {reason}")]
    Crypto {
        /// What was being done.
        action: &'static str,
        /// The library's words.
        reason: String,
    },
    /// A PEM text does not hold what it should.
    #[error("{what}: expected {expected}")]
    Pem {
        /// Which text.
        what: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// The issued certificate is not usable for this device.
    #[error("issued certificate refused: expected {expected}")]
    Certificate {
        /// What was expected.
        expected: &'static str,
    },
    /// The credentials file could not be read or written.
    #[error("credentials {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the credentials file (it holds the key).
    #[error("credentials {path} have mode {mode:o}: expected no access for group and others (0600)")]
    TooOpen {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Tls(String),
}
