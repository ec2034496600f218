//! Enrollment of this device (feature `tls`): a key pair made here that
//! never leaves the device, exchanged once — with a token the customer's
//! administrator issued — for a client certificate naming (customer,
//! device). Every later connection authenticates with it (mutual TLS).

use std::io::{Read, Write};
use std::path::Path;

use privtel_authority::{Credentials, DeviceKey};
use privtel_model::{CustomerId, DeviceId};
use privtel_wire::{Connection, Message};

use crate::error::AgentError;

fn client(e: privtel_authority::ClientError) -> AgentError {
    AgentError::Enrollment { error: e.to_string() }
}

/// Enrolls over `conn` (TLS without a client certificate, see
/// [`privtel_authority::enrollment_client_config`]): makes the device's
/// key (kept in `dir` before the request is sent, and used again by the
/// next call if this one is interrupted: the service may have registered
/// it already, and refuses another key for the device), sends `token` and
/// a certificate request, checks the certificate that comes back (for this
/// key, naming this customer and device), and saves the credentials in
/// `dir` (the key file readable by the owner only). Returns them.
///
/// # Errors
///
/// [`AgentError::Refused`] with the service's reason (an expired, used or
/// revoked token; an identity already enrolled with another key);
/// [`AgentError::Enrollment`] if the answer does not hold or cannot be
/// saved; a wire error.
pub fn enroll<S: Read + Write>(
    conn: &mut Connection<S>,
    token: &str,
    customer: &CustomerId,
    device: &DeviceId,
    dir: impl AsRef<Path>,
) -> Result<Credentials, AgentError> {
    let dir = dir.as_ref();
    let key = DeviceKey::pending(dir).map_err(client)?;
    let request = privtel_authority::request(Some(token), customer, device, &key).map_err(client)?;
    conn.send(&Message::EnrollRequest(request))?;
    let credentials = match conn.recv()? {
        Message::Enrolled(enrolled) => {
            privtel_authority::accept(&key, customer, device, enrolled).map_err(client)?
        }
        Message::Error(e) => return Err(AgentError::Refused { message: e.message, retryable: e.retryable }),
        other => return Err(AgentError::Protocol { expected: "enrolled", got: other.kind_name() }),
    };
    credentials.save(dir).map_err(client)?;
    DeviceKey::forget_pending(dir).map_err(client)?;
    Ok(credentials)
}
