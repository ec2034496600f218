//! Limits that hold against a hostile client: token buckets for rates, and
//! the service's connection and deadline settings.

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        Self { rate, burst, tokens: burst, last: now }
    }

    /// The bucket for `rate` and `burst` (the settings changed): with
    /// other figures than its own it starts over full, as a new customer's
    /// does (a debt owed at the old rate is forgiven, and what was saved up
    /// at it is not carried over); the same figures change nothing.
    pub(crate) fn retune(&mut self, rate: u32, burst: u32, now: Instant) {
        let fresh = Self::new(rate, burst, now);
        if fresh.rate != self.rate || fresh.burst != self.burst {
            *self = fresh;
        }
    }

    /// Takes `n` tokens, or says how long until there are enough (a request
    /// larger than the burst waits for a full bucket and is then allowed:
    /// a batch must never be refused for good by its size alone).
    pub(crate) fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let want = (n as f64).min(self.burst);
        if self.tokens >= want {
            self.tokens -= n as f64;
            return Ok(());
        }
        Err(Duration::from_secs_f64(((want - self.tokens) / self.rate).min(3_600.0)))
    }
}

/// The service's limits on connections. Plain data; start from `default()`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Most connections served at once; beyond it a new connection is
    /// closed at once and counted (default 20,000).
    pub max_connections: usize,
    /// Most connections of one device (customer and device, as its
    /// certificate names them) served at once (default 16): beyond it a
    /// connection is answered `Unavailable` (retryable) and closed, so a
    /// copied key or a runaway agent cannot take the connections every
    /// other device needs. An honest agent holds one at a time, and a few
    /// more while a restarted agent's half-open ones wait out `idle`.
    /// A customer may have a cap of its own as well
    /// ([`CustomerSettings::max_connections`](crate::CustomerSettings::max_connections)).
    pub max_per_device: u32,
    /// Most connections in their TLS handshake at once, from every address
    /// together (default 1,024): a silent peer holds a slot for up to
    /// `handshake`, so many of them hold this many and no more of the
    /// `max_connections`. At the cap a connection is closed before any TLS
    /// byte, unless its address holds fewer than a sixteenth of
    /// `max_handshakes_per_address` (4 by default): a new host's first
    /// handshakes always start, so a few flooding hosts cannot shut every
    /// device out. A peer through TLS without a certificate leaves this
    /// count and keeps its address's share.
    pub max_handshakes: usize,
    /// Most connections in their TLS handshake at once from one network
    /// address (default 64; an IPv6 address counts by its /64 network,
    /// which one host usually holds whole, and its /56 and /48 may hold
    /// twice and four times as many): one host opening connections
    /// without end fills its own share, not the service's. Devices behind
    /// one NAT share it, but a handshake takes milliseconds: they meet it
    /// only when thousands start at the same instant, and retry.
    pub max_handshakes_per_address: u32,
    /// Most connections without a certificate (devices enrolling) served
    /// at once, from every address together (default 1,024): beyond it
    /// such a connection is answered `Unavailable` (retryable) and closed
    /// (counted in `over_enrolling`), so strangers through TLS hold at
    /// most this many of `max_connections`, however many addresses they
    /// have. An enrolling connection also gets `handshake` (not `idle`
    /// nor `frame`) for its one request, and a payload of at most
    /// [`MAX_ENROLL_PAYLOAD`](crate::MAX_ENROLL_PAYLOAD).
    pub max_enrolling: usize,
    /// Longest wait for the first byte of a message (default 120 s).
    pub idle: Duration,
    /// Longest time from a message's first byte to its last (default 30 s):
    /// a client dripping bytes is closed when it runs out.
    pub frame: Duration,
    /// Longest TLS handshake (default 10 s).
    pub handshake: Duration,
    /// Messages a second one connection may send (default 200, burst 400);
    /// beyond it batches are deferred with `retry_after`.
    pub messages_per_second: u32,
    /// Stack size of each connection's thread (default 256 KiB: a
    /// connection's work is shallow; 10,000 idle connections stay small).
    pub thread_stack: usize,
    /// Connection threads kept, once their connection ends, for the next
    /// connection (default 64): a thread created for every connection
    /// costs its creation and an allocator cache started cold.
    pub idle_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_per_device: 16,
            max_handshakes: 1_024,
            max_handshakes_per_address: 64,
            max_enrolling: 1_024,
            idle: Duration::from_secs(120),
            frame: Duration::from_secs(30),
            handshake: Duration::from_secs(10),
            messages_per_second: 200,
            thread_stack: 256 << 10,
            idle_threads: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_caps_at_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 200, t0);
        assert_eq!(b.take(200, t0), Ok(()));
        let wait = b.take(50, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(b.take(50, t0 + Duration::from_millis(500)), Ok(()));
        // A long pause saves up no more than the burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.take(200, later), Ok(()));
        assert!(b.take(1, later).is_err());
    }

    #[test]
    fn a_retuned_bucket_starts_over_full_at_its_new_figures() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 400, t0);
        assert_eq!(b.take(1_000, t0), Ok(()), "a debt at the old rate");
        // Lowered: a full bucket of the new burst, then one a second.
        b.retune(1, 4, t0);
        assert_eq!(b.take(4, t0), Ok(()));
        let wait = b.take(1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "one a second now: {wait:?}");
        // Raised: at once.
        b.retune(100, 400, t0);
        assert_eq!(b.take(400, t0), Ok(()));
        // The same figures again change nothing: the bucket stays empty.
        b.retune(100, 400, t0);
        assert!(b.take(1, t0).is_err());
    }

    #[test]
    fn a_request_above_the_burst_waits_for_a_full_bucket_then_passes() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 20, t0);
        assert_eq!(b.take(1_000, t0), Ok(()), "a full bucket lets one oversized batch through");
        let wait = b.take(1_000, t0).unwrap_err();
        assert!(wait.as_secs_f64() > 1_000.0 / 10.0 - 1.0, "and then owes for it: {wait:?}");
    }
}
