//! Frames: a fixed 18-byte header (magic, version, kind, flags, length,
//! checksum) and a payload.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// First bytes of every frame.
pub const MAGIC: [u8; 2] = *b"PT";
/// Header length: magic (2), version (1), kind (1), flags (1), reserved (1),
/// payload length (4, little-endian), checksum (8).
pub const HEADER_LEN: usize = 18;
/// The default maximum payload: far above a real batch, low enough that a
/// hostile length cannot exhaust memory.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 << 20;
/// The protocol versions this build speaks, oldest first.
///
/// Version 2 (this build) added the spool stream to `Hello`, the policy
/// hash to `Batch`, stable reject codes to `Rejection`, and enrollment
/// (kinds 10 and 11). Version 1 agents cannot authenticate with a client
/// certificate, so the service no longer speaks version 1.
pub const SUPPORTED_VERSIONS: &[u8] = &[2];
/// Flag bit: the payload is LZ4-compressed (feature `lz4`).
pub const FLAG_LZ4: u8 = 0x01;
/// The most a compressed payload may expand: its decompressed size (the
/// size prefix) at most this many times the compressed payload's length,
/// or it is refused before anything is allocated. A peer's bytes then cost
/// at most this many times their number once decompressed (LZ4 itself
/// allows some 255 times). A sender compresses only a payload that stays
/// within it, and sends any other plain.
pub const MAX_LZ4_EXPANSION: u32 = 8;

/// One frame.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct Frame {
    /// Protocol version.
    pub version: u8,
    /// Message kind.
    pub kind: u8,
    /// Flags ([`FLAG_LZ4`]).
    pub flags: u8,
    /// The payload as sent (compressed if the flag says so).
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame.
    pub fn new(version: u8, kind: u8, flags: u8, payload: Vec<u8>) -> Self {
        Self { version, kind, flags, payload }
    }
}

/// BLAKE3 of the first 10 header bytes and the payload, first 8 bytes: the
/// checksum catches corruption, not forgery (TLS does that).
fn checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(payload);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// Appends the encoded frame to `out`.
///
/// # Errors
///
/// [`Error::TooLarge`] if the payload exceeds `max_payload`.
pub fn encode_frame(frame: &Frame, max_payload: u32, out: &mut Vec<u8>) -> Result<()> {
    let len = u32::try_from(frame.payload.len())
        .ok()
        .filter(|&l| l <= max_payload)
        .ok_or(Error::TooLarge { len: frame.payload.len() as u64, max: max_payload })?;
    let mut head = [0u8; 10];
    head[..2].copy_from_slice(&MAGIC);
    head[2] = frame.version;
    head[3] = frame.kind;
    head[4] = frame.flags;
    head[6..10].copy_from_slice(&len.to_le_bytes());
    out.reserve(HEADER_LEN + frame.payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&checksum(&head, &frame.payload).to_le_bytes());
    out.extend_from_slice(&frame.payload);
    Ok(())
}

/// Appends a frame whose payload `write_payload` appends to `out` itself,
/// without an intermediate buffer: the header is reserved first, then
/// filled in once the payload's length and checksum are known.
///
/// # Errors
///
/// [`Error::TooLarge`], or the payload writer's error (`out` is then
/// truncated back to its old length).
pub(crate) fn encode_frame_with(
    version: u8,
    kind: u8,
    flags: u8,
    max_payload: u32,
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    if let Err(e) = write_payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - HEADER_LEN;
    let Some(len32) = u32::try_from(len).ok().filter(|&l| l <= max_payload) else {
        out.truncate(start);
        return Err(Error::TooLarge { len: len as u64, max: max_payload });
    };
    let mut head = [0u8; 10];
    head[..2].copy_from_slice(&MAGIC);
    head[2] = version;
    head[3] = kind;
    head[4] = flags;
    head[6..10].copy_from_slice(&len32.to_le_bytes());
    let sum = checksum(&head, &out[start + HEADER_LEN..]);
    out[start..start + 10].copy_from_slice(&head);
    out[start + 10..start + HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Checks the frame at the start of `bytes` without copying its payload:
/// (version, kind, flags, payload, bytes used).
pub(crate) fn frame_view(bytes: &[u8], max_payload: u32) -> Result<(u8, u8, u8, &[u8], usize)> {
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Error::Truncated { offset: bytes.len(), needed: HEADER_LEN - bytes.len() })?;
    let (len, sum) = check_header(head, max_payload)?;
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or_else(|| Error::Truncated { offset: bytes.len(), needed: HEADER_LEN + len - bytes.len() })?;
    let found = checksum(&head[..10], payload);
    if found != sum {
        return Err(Error::Checksum { expected: sum, found });
    }
    Ok((head[2], head[3], head[4], payload, HEADER_LEN + len))
}

/// Checks a header; returns the payload length and the checksum.
fn check_header(head: &[u8; HEADER_LEN], max_payload: u32) -> Result<(usize, u64)> {
    if head[..2] != MAGIC {
        return Err(Error::BadMagic { found: [head[0], head[1]] });
    }
    if !SUPPORTED_VERSIONS.contains(&head[2]) {
        return Err(Error::UnsupportedVersion { version: head[2], supported: SUPPORTED_VERSIONS });
    }
    let known = if cfg!(feature = "lz4") { FLAG_LZ4 } else { 0 };
    if head[4] & !known != 0 || head[5] != 0 {
        return Err(Error::BadFlags { flags: head[4] | head[5] });
    }
    let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
    if len > max_payload {
        return Err(Error::TooLarge { len: u64::from(len), max: max_payload });
    }
    let sum = u64::from_le_bytes(head[10..18].try_into().unwrap_or_default());
    Ok((len as usize, sum))
}

fn finish(head: &[u8; HEADER_LEN], payload: Vec<u8>, sum: u64) -> Result<Frame> {
    let found = checksum(&head[..10], &payload);
    if found != sum {
        return Err(Error::Checksum { expected: sum, found });
    }
    Ok(Frame { version: head[2], kind: head[3], flags: head[4], payload })
}

/// Decodes one frame from the start of `bytes`; returns it and the bytes
/// used. The length is checked against `max_payload` before anything is
/// allocated.
///
/// # Errors
///
/// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
/// [`Error::BadFlags`], [`Error::TooLarge`] or [`Error::Checksum`].
pub fn decode_frame(bytes: &[u8], max_payload: u32) -> Result<(Frame, usize)> {
    let (version, kind, flags, payload, used) = frame_view(bytes, max_payload)?;
    Ok((Frame { version, kind, flags, payload: payload.to_vec() }, used))
}

/// Payload bytes are read in chunks of at most this many: the buffer grows
/// with what arrives, never by what a header claims.
pub const READ_CHUNK: usize = 64 << 10;

/// Where frame bytes come from: a plain reader, or one that keeps deadlines
/// (`conn.rs`). `read_some` returns 0 only at the end of the stream.
pub(crate) trait Source {
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize>;
}

/// A reader as it is: `Interrupted` is retried, every other error returned.
pub(crate) struct Plain<'a, R: ?Sized>(pub(crate) &'a mut R);

impl<R: Read + ?Sized> Source for Plain<'_, R> {
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.0.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}

/// Reads one frame from a stream. `Error::Closed` if the stream ends before
/// the first byte of a frame; `Error::Truncated` if it ends inside one.
///
/// The length is checked against `max_payload` from the header; the
/// payload buffer then grows with the bytes that arrive (in chunks of at
/// most [`READ_CHUNK`]), so a header claiming 16 MiB followed by silence
/// holds 64 KiB, not 16 MiB.
///
/// ```
/// use privtel_wire::{Frame, read_frame, write_frame};
///
/// let mut wire = Vec::new();
/// write_frame(&mut wire, &Frame::new(2, 9, 0, b"payload".to_vec()), 1 << 20)?;
/// let frame = read_frame(&mut wire.as_slice(), 1 << 20)?;
/// assert_eq!(frame.payload, b"payload");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As [`decode_frame`], plus [`Error::Io`] and [`Error::Closed`].
pub fn read_frame<R: Read>(r: &mut R, max_payload: u32) -> Result<Frame> {
    read_frame_from(&mut Plain(r), max_payload)
}

/// [`read_frame`] over any [`Source`].
pub(crate) fn read_frame_from(src: &mut impl Source, max_payload: u32) -> Result<Frame> {
    let mut head = [0u8; HEADER_LEN];
    let got = fill(src, &mut head)?;
    if got == 0 {
        return Err(Error::Closed);
    }
    if got < HEADER_LEN {
        return Err(Error::Truncated { offset: got, needed: HEADER_LEN - got });
    }
    let (len, sum) = check_header(&head, max_payload)?;
    let payload = read_payload(src, len)?;
    finish(&head, payload, sum)
}

/// Reads `len` payload bytes into a buffer that grows with what arrives:
/// at most [`READ_CHUNK`] zeroed bytes beyond those received, and never
/// more than `len` in all.
fn read_payload(src: &mut impl Source, len: usize) -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == payload.len() {
            let want = (len - filled).min(READ_CHUNK);
            // Grow geometrically (few copies), but never past `len`: the
            // capacity stays below twice what arrived, or one chunk.
            let target = (payload.capacity() * 2).clamp(filled + want, len);
            payload.reserve_exact(target - payload.len());
            payload.resize(filled + want, 0);
        }
        let n = src.read_some(&mut payload[filled..])?;
        if n == 0 {
            return Err(Error::Truncated { offset: HEADER_LEN + filled, needed: len - filled });
        }
        filled += n;
    }
    Ok(payload)
}

/// Writes one frame and flushes.
///
/// # Errors
///
/// [`Error::TooLarge`] or [`Error::Io`].
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame, max_payload: u32) -> Result<()> {
    let mut buf = Vec::new();
    encode_frame(frame, max_payload, &mut buf)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn fill(src: &mut impl Source, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read_some(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
