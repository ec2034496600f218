//! An in-memory duplex pipe: two ends, each `Read + Write`, for serving a
//! protocol in one process without sockets.

use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, Sender, channel};

/// One end of a [`pipe`]. Reading blocks until the other end writes; it
/// returns end of stream once the other end is dropped.
#[derive(Debug)]
pub struct End {
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    budget: Option<usize>,
}

impl End {
    /// Writes fail once `bytes` more have gone out (a connection that dies
    /// mid-conversation).
    #[must_use]
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.budget = Some(bytes);
        self
    }
}

impl Read for End {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(v) => (self.buf, self.pos) = (v, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(budget) = &mut self.budget {
            if *budget < data.len() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            *budget -= data.len();
        }
        self.tx.send(data.to_vec()).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connected pair of ends.
///
/// ```
/// use std::io::{Read, Write};
/// let (mut a, mut b) = privtel_testkit::pipe();
/// a.write_all(b"hi")?;
/// let mut got = [0; 2];
/// b.read_exact(&mut got)?;
/// assert_eq!(&got, b"hi");
/// drop(a);
/// assert_eq!(b.read(&mut got)?, 0, "the other end is gone");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pipe() -> (End, End) {
    let (a_tx, a_rx) = channel();
    let (b_tx, b_rx) = channel();
    let end = |rx, tx| End { rx, tx, buf: Vec::new(), pos: 0, budget: None };
    (end(a_rx, b_tx), end(b_rx, a_tx))
}
