//! A blocking connection over any `Read + Write`: framing, negotiation, and
//! skipping of unknown message kinds after negotiation.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::frame::{DEFAULT_MAX_PAYLOAD, SUPPORTED_VERSIONS, read_frame, write_frame};
use crate::message::{ErrorCode, ErrorMessage, Hello, Message, Welcome};

/// One side of a conversation.
///
/// ```
/// use privtel_wire::{Connection, Goodbye, Message};
///
/// let mut wire = Vec::new();
/// Connection::new(&mut wire).send(&Message::Goodbye(Goodbye { reason: "done".into() }))?;
/// let got = Connection::new(wire.as_slice()).recv()?;
/// assert!(matches!(got, Message::Goodbye(g) if g.reason == "done"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    max_payload: u32,
    version: Option<u8>,
    compress: bool,
    /// Frames of unknown kinds skipped after negotiation.
    skipped: u64,
}

impl<S> Connection<S> {
    /// A connection with the default limits, not yet negotiated.
    pub fn new(stream: S) -> Self {
        Self { stream, max_payload: DEFAULT_MAX_PAYLOAD, version: None, compress: false, skipped: 0 }
    }

    /// Refuse frames above `max` bytes of payload.
    #[must_use]
    pub fn with_max_payload(mut self, max: u32) -> Self {
        self.max_payload = max;
        self
    }

    /// Compress payloads sent (with the `lz4` feature; ignored without).
    #[must_use]
    pub fn with_compression(mut self, yes: bool) -> Self {
        self.compress = yes;
        self
    }

    /// The negotiated version, once there is one.
    pub fn version(&self) -> Option<u8> {
        self.version
    }

    /// Frames of unknown kinds skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl<S: Write> Connection<S> {
    /// Sends one message.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], [`Error::TooLarge`] or [`Error::Io`].
    pub fn send(&mut self, msg: &Message) -> Result<()> {
        let version = self.version.unwrap_or(SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1]);
        let frame = msg.to_frame(version, self.compress)?;
        write_frame(&mut self.stream, &frame, self.max_payload)
    }
}

impl<S: Read> Connection<S> {
    /// Receives one message. After negotiation, frames of unknown kinds are
    /// skipped (a newer peer may send messages this build does not know);
    /// before it they are an error.
    ///
    /// # Errors
    ///
    /// Any frame or decode error; [`Error::Closed`] at a clean end.
    pub fn recv(&mut self) -> Result<Message> {
        loop {
            let frame = read_frame(&mut self.stream, self.max_payload)?;
            match Message::from_frame(&frame, self.max_payload) {
                Err(Error::UnknownKind { .. }) if self.version.is_some() => self.skipped += 1,
                other => return other,
            }
        }
    }
}

impl<S: Read + Write> Connection<S> {
    /// The agent's side of negotiation: sends `hello`, returns the service's
    /// welcome.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the service refuses; [`Error::Unexpected`] for
    /// any other answer; frame errors.
    pub fn client_handshake(&mut self, hello: &Hello) -> Result<Welcome> {
        self.send(&Message::Hello(hello.clone()))?;
        match self.recv()? {
            Message::Welcome(w) if hello.versions.contains(&w.version) => {
                self.version = Some(w.version);
                Ok(w)
            }
            Message::Welcome(w) => {
                Err(Error::UnsupportedVersion { version: w.version, supported: SUPPORTED_VERSIONS })
            }
            Message::Error(e) => Err(Error::Remote { code: e.code, message: e.message }),
            other => Err(Error::Unexpected { expected: "welcome", got: other.kind_name() }),
        }
    }

    /// The service's side: reads the agent's hello, picks the highest common
    /// version, and sends the welcome `welcome(hello, version)` builds.
    /// Without a common version, sends an error and fails.
    ///
    /// # Errors
    ///
    /// [`Error::NoCommonVersion`], [`Error::Unexpected`], frame errors.
    pub fn server_handshake(&mut self, welcome: impl FnOnce(&Hello, u8) -> Welcome) -> Result<Hello> {
        let hello = match self.recv()? {
            Message::Hello(h) => h,
            other => {
                let _ = self.send(&error(ErrorCode::Protocol, "expected hello", false));
                return Err(Error::Unexpected { expected: "hello", got: other.kind_name() });
            }
        };
        let Some(version) = SUPPORTED_VERSIONS.iter().rev().find(|v| hello.versions.contains(v)).copied()
        else {
            let _ = self.send(&error(ErrorCode::UnsupportedVersion, "no common protocol version", false));
            return Err(Error::NoCommonVersion { ours: SUPPORTED_VERSIONS.to_vec(), theirs: hello.versions });
        };
        self.version = Some(version);
        self.send(&Message::Welcome(welcome(&hello, version)))?;
        Ok(hello)
    }
}

/// An error message.
pub fn error(code: ErrorCode, message: &str, retryable: bool) -> Message {
    Message::Error(ErrorMessage { code, message: message.to_owned(), retryable })
}
