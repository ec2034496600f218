//! Connection threads kept for the next connection.
//!
//! Each connection is served by a thread of its own (blocking rustls, a
//! deadline per frame). Creating a thread for every connection and
//! letting it end afterwards costs the thread's creation and teardown
//! (its stack and signal stack mapped and unmapped, the thread's
//! allocator cache started empty and freed): about 0.16 ms a connection
//! for a bare rustls server on a 2-core guest (`docs/PERFORMANCE.md`),
//! a quarter of its handshake. [`Workers`] keeps up to `max_idle` (see
//! [`Workers::new`]) finished threads waiting for the next connection (each for at most `linger`), and creates a new thread
//! only when none is waiting. Threads beyond that number end when their
//! connection does, so 10,000 idle connections still need 10,000
//! threads while they last, and no more than `max_idle` afterwards.
//! [`Workers::close`] lets the waiting threads go at once (the accept
//! loop calls it when it stops); each pool keeps its own `max_idle`.
//!
//! The service's own accept loop ([`Service::serve_tls`](crate::Service))
//! uses it; it is public for servers that accept connections themselves.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A job: one connection to serve.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// The jobs handed over and the threads waiting for one.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads waiting in [`Workers::wait`]: a job is queued only while
    /// more threads wait than jobs are queued, so every queued job has a
    /// thread that will take it.
    waiting: usize,
    /// No thread waits for a job any more ([`Workers::close`]).
    closed: bool,
}

/// Threads that serve one job each at a time and wait for the next (see
/// the [module docs](self)).
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use privtel_service::Workers;
///
/// let workers = Workers::new("example", 256 << 10, 8, Duration::from_secs(10));
/// let (tx, rx) = mpsc::channel();
/// for i in 0..3 {
///     let tx = tx.clone();
///     workers.run(move || tx.send(i * 10).unwrap()).expect("a thread");
/// }
/// let mut got: Vec<i32> = (0..3).map(|_| rx.recv().unwrap()).collect();
/// got.sort();
/// assert_eq!(got, [0, 10, 20]);
/// ```
pub struct Workers {
    queue: Mutex<Queue>,
    ready: Condvar,
    max_idle: usize,
    linger: Duration,
    stack: usize,
    name: &'static str,
}

impl Workers {
    /// A pool keeping at most `max_idle` threads (of `stack` bytes of
    /// stack, named `name`), each waiting at most `linger` for its next
    /// job.
    pub fn new(name: &'static str, stack: usize, max_idle: usize, linger: Duration) -> Arc<Self> {
        Arc::new(Self { queue: Mutex::default(), ready: Condvar::new(), max_idle, linger, stack, name })
    }

    /// Runs `job` on a waiting thread, or on a new one when none waits.
    /// Returns whether a thread was made for it.
    ///
    /// # Errors
    ///
    /// The thread could not be created (the job is dropped, not run).
    pub fn run(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) -> io::Result<bool> {
        let job: Job = Box::new(job);
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if !q.closed && q.waiting > q.jobs.len() {
                q.jobs.push_back(job);
                drop(q);
                self.ready.notify_one();
                return Ok(false);
            }
        }
        let me = Arc::clone(self);
        std::thread::Builder::new().name(self.name.into()).stack_size(self.stack).spawn(move || {
            job();
            while let Some(next) = me.wait() {
                next();
            }
        })?;
        Ok(true)
    }

    /// Lets the threads waiting for a job end now, and every thread end
    /// when its job is done; a job run after this gets a thread of its
    /// own. Jobs handed over already are run first.
    pub fn close(&self) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.ready.notify_all();
    }

    /// The next job for a thread whose job is done, or `None` when it
    /// should end: `max_idle` threads wait already, none came within
    /// `linger`, or the pool is closed.
    fn wait(&self) -> Option<Job> {
        let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.closed || q.waiting >= self.max_idle {
            return None;
        }
        q.waiting += 1;
        let deadline = Instant::now() + self.linger;
        loop {
            if let Some(job) = q.jobs.pop_front() {
                q.waiting -= 1;
                return Some(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if q.closed || left.is_zero() {
                q.waiting -= 1;
                return None;
            }
            q = self.ready.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Threads waiting for a job now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::mpsc;
    use std::time::Instant;

    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_finished_thread_serves_the_next_job() {
        let w = Workers::new("t", 128 << 10, 4, Duration::from_secs(30));
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        assert!(w.run(move || t.send(std::thread::current().id()).unwrap()).unwrap(), "none waited: made");
        let first = rx.recv().unwrap();
        until("the thread to wait", || w.waiting() == 1);
        for _ in 0..20 {
            let t = tx.clone();
            assert!(!w.run(move || t.send(std::thread::current().id()).unwrap()).unwrap(), "one waited");
            assert_eq!(rx.recv().unwrap(), first, "one job at a time goes to the one waiting thread");
            until("the thread to wait again", || w.waiting() == 1);
        }
    }

    #[test]
    fn jobs_beyond_the_waiting_threads_get_threads_of_their_own_and_none_is_lost() {
        let w = Workers::new("t", 128 << 10, 3, Duration::from_secs(30));
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        // 10 jobs blocked at once: each needs a thread of its own.
        for i in 0..10 {
            let (tx, gate) = (tx.clone(), Arc::clone(&gate));
            w.run(move || {
                let (open, cv) = &*gate;
                let mut o = open.lock().unwrap();
                while !*o {
                    o = cv.wait(o).unwrap();
                }
                tx.send((i, std::thread::current().id())).unwrap();
            })
            .unwrap();
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let got: Vec<_> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        let jobs: HashSet<_> = got.iter().map(|(i, _)| *i).collect();
        let threads: HashSet<_> = got.iter().map(|(_, t)| *t).collect();
        assert_eq!(jobs.len(), 10);
        assert_eq!(threads.len(), 10, "jobs running at once each had a thread");
        // Only max_idle of the 10 stay.
        until("three threads to wait", || w.waiting() == 3);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.waiting(), 3);
        // 1,000 jobs handed over as fast as they come: every one runs.
        for i in 0..1_000 {
            let tx = tx.clone();
            w.run(move || tx.send((i, std::thread::current().id())).unwrap()).unwrap();
        }
        let ran: HashSet<_> =
            (0..1_000).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().0).collect();
        assert_eq!(ran.len(), 1_000);
    }

    #[test]
    fn an_idle_thread_ends_after_its_linger() {
        let w = Workers::new("t", 128 << 10, 4, Duration::from_millis(100));
        let (tx, rx) = mpsc::channel();
        assert!(w.run(move || tx.send(()).unwrap()).unwrap());
        rx.recv().unwrap();
        until("the thread to wait", || w.waiting() == 1);
        let t0 = Instant::now();
        until("the thread to end", || w.waiting() == 0);
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A job after that gets a new thread and runs.
        let (tx, rx) = mpsc::channel();
        assert!(w.run(move || tx.send(()).unwrap()).unwrap(), "none waited: made");
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn jobs_arriving_as_threads_time_out_all_run() {
        // A linger about as long as the gaps between jobs: some jobs are
        // queued just as their thread's wait runs out.
        let w = Workers::new("t", 128 << 10, 8, Duration::from_millis(1));
        let (tx, rx) = mpsc::channel();
        for i in 0..2_000u32 {
            let tx = tx.clone();
            w.run(move || tx.send(i).unwrap()).unwrap();
            if i % 7 == 0 {
                std::thread::sleep(Duration::from_micros(u64::from(i % 5) * 300));
            }
        }
        let ran: HashSet<_> = (0..2_000).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert_eq!(ran.len(), 2_000);
    }

    #[test]
    fn a_job_that_panics_ends_its_thread_only() {
        let w = Workers::new("t", 128 << 10, 4, Duration::from_secs(30));
        assert!(w.run(|| panic!("a job that fails")).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.waiting(), 0, "the thread that panicked does not wait");
        let (tx, rx) = mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            w.run(move || tx.send(i).unwrap()).unwrap();
        }
        let ran: HashSet<_> = (0..10).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert_eq!(ran.len(), 10);
    }

    #[test]
    fn a_closed_pool_lets_its_threads_go_and_still_runs_jobs() {
        let w = Workers::new("t", 128 << 10, 4, Duration::from_secs(600));
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        w.run(move || t.send(()).unwrap()).unwrap();
        rx.recv().unwrap();
        until("the thread to wait", || w.waiting() == 1);
        w.close();
        until("the thread to leave at once, not after its linger", || w.waiting() == 0);
        assert!(w.run(move || tx.send(()).unwrap()).unwrap(), "a thread of its own");
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(w.waiting(), 0, "and it does not stay");
    }

    #[test]
    fn no_thread_is_kept_when_none_may_be() {
        let w = Workers::new("t", 128 << 10, 0, Duration::from_secs(30));
        for _ in 0..5 {
            let (tx, rx) = mpsc::channel();
            assert!(w.run(move || tx.send(()).unwrap()).unwrap(), "a thread each");
            rx.recv().unwrap();
            // Finished: with a thread kept, the next would reuse it.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
