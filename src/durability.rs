//! When a change is on disk: [`Durability`], and the group commit behind it.
//!
//! # Implementation
//!
//! Every mutating request is applied to the write buffer (`overlay.rs`) under the writer lock,
//! in microseconds, and gets a sequence number. Nothing reaches redb there: the commit pipeline
//! writes the whole buffer in one transaction, committed with fsync (redb's `Immediate`), so
//! every commit in the file is durable. The [`Syncer`] counts which sequence numbers are durable
//! and elects who flushes:
//!
//! - [`Durability::Immediate`]: a caller waits for its sequence number. If no flush is running,
//!   it leads one itself (no hand-off to another thread): it freezes the buffer, which holds its
//!   own request and every one applied before it, writes it and fsyncs. Callers that arrive
//!   meanwhile apply to the next buffer and wait; when the flush ends, one of them leads the
//!   next, for all of them (a leader/follower write group). So a lone caller pays one fsync, and
//!   the group grows with the load.
//! - [`Durability::Batched`]: a call returns once applied. The ticker flushes the buffer at most
//!   `max_delay` after its first write, at once when it holds [`FLUSH_WRITES`] writes or
//!   [`FLUSH_BYTES`], and at [`sync`](crate::Lessor::sync) and close; a writer that finds
//!   [`MAX_WRITES`] or [`MAX_BYTES`] unflushed waits for a flush (back-pressure), and one without a ticker flushes itself when `max_delay` is up.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// When a mutating call's change is on disk. Chosen with
/// [`Builder::durability`](crate::Builder::durability).
///
/// ```
/// use std::time::Duration;
/// use lessor::{Durability, Lessor};
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// // etcd's trade-off: acknowledged changes may be lost in a crash, up to 5 ms of them.
/// let lessor = Lessor::builder()
///     .durability(Durability::Batched { max_delay: Duration::from_millis(5) })
///     .open(&path)?;
/// let lease = lessor.grant(Duration::from_secs(10))?; // returns without waiting for the disk
/// lessor.sync()?; // everything so far is on disk
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// A mutating call returns only once its change is fsynced (the default). Concurrent
    /// callers share fsyncs (group commit), so many threads writing at once get far more
    /// throughput than one.
    #[default]
    Immediate,
    /// A mutating call returns once its change is committed in memory (visible to every
    /// reader); the changes are fsynced at least every `max_delay` while writes go on, by the
    /// ticker when they stop, and at [`sync`](crate::Lessor::sync) and
    /// [`close`](crate::Lessor::close). A crash loses at most the last `max_delay` of
    /// acknowledged changes, and never part of one: each call's change is all or nothing.
    /// Without a ticker, the changes of the last `max_delay` before a pause stay unflushed
    /// until the next write, `sync` or `close`.
    Batched {
        /// The longest an acknowledged change waits for its fsync while writes go on.
        max_delay: Duration,
    },
}

/// Writes in the buffer at which the ticker flushes at once, whatever `max_delay` (etcd commits
/// its backend batch every 10,000 writes too).
pub(crate) const FLUSH_WRITES: usize = 10_000;

/// Writes in the buffer at which a writer waits for a flush rather than add more.
pub(crate) const MAX_WRITES: usize = 4 * FLUSH_WRITES;

/// Bytes of keys and values in the buffer at which the ticker flushes at once.
pub(crate) const FLUSH_BYTES: usize = 16 << 20;

/// Bytes in the buffer at which a writer waits for a flush rather than add more.
pub(crate) const MAX_BYTES: usize = 4 * FLUSH_BYTES;

/// What the syncer guards.
struct State {
    /// Sequence number of the last request known to be on disk.
    durable: u64,
    /// Whether someone is flushing; they set `durable` when done.
    flushing: bool,
    /// A flush failed (the lessor is poisoned), or the lessor closed: waiters stop waiting.
    ended: Option<Ended>,
    /// Requests a failed flush left not known to be durable, as `(first, last)` sequence
    /// numbers: their waiters fail even after [`Syncer::reopen`]. One range per failure.
    lost: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Failed,
    Closed,
}

/// Counts durable requests and elects who flushes; see the module docs.
pub(crate) struct Syncer {
    mode: Durability,
    /// Guards the durable sequence number and the flushing flag. A leaf lock: taken under the
    /// writer, or alone by waiters; never held across I/O.
    state: Mutex<State>,
    /// Signalled when `durable` advances, a flush ends, or the syncer ends.
    advanced: Condvar,
    /// The tasks of [`AsyncLessor`](crate::AsyncLessor) calls waiting for their request
    /// ([`poll`](Self::poll)), woken with the condvar's waiters. Registered under `state`, so
    /// that a flush ending after the check cannot be missed; woken after `state` is released.
    /// A leaf lock.
    tasks: Mutex<Vec<Waker>>,
}

/// What a caller waiting for its request must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It is durable.
    Done,
    /// Nobody is flushing: the caller flushes, then calls [`Syncer::flush_ended`].
    Lead,
}

/// A request that is not yet known to be durable; wait for it after releasing the writer lock.
#[must_use = "a request must be waited for before acknowledging it"]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(pub(crate) Option<u64>);

impl Ticket {
    pub(crate) const DONE: Ticket = Ticket(None);
}

impl Syncer {
    pub(crate) fn new(mode: Durability) -> Syncer {
        Syncer {
            mode,
            state: Mutex::new(State {
                durable: 0,
                flushing: false,
                ended: None,
                lost: Vec::new(),
            }),
            advanced: Condvar::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn mode(&self) -> Durability {
        self.mode
    }

    /// What a request with sequence number `seq` waits for before it is acknowledged.
    pub(crate) fn ticket(&self, seq: u64) -> Ticket {
        match self.mode {
            Durability::Immediate => Ticket(Some(seq)),
            Durability::Batched { .. } => Ticket::DONE,
        }
    }

    /// Blocks until request `seq` is durable ([`Turn::Done`]) or nobody is flushing
    /// ([`Turn::Lead`]: the caller is now the one flushing).
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the flush that was to cover it failed (the change may or may not
    /// be on disk), [`Error::Closed`] if the lessor closed without flushing it.
    pub(crate) fn turn(&self, seq: u64) -> Result<Turn> {
        let mut s = self.state.lock();
        loop {
            if s.lost
                .iter()
                .any(|&(first, last)| (first..=last).contains(&seq))
            {
                return Err(Error::Poisoned);
            }
            if s.durable >= seq {
                return Ok(Turn::Done);
            }
            match s.ended {
                Some(Ended::Failed) => return Err(Error::Poisoned),
                Some(Ended::Closed) => return Err(Error::Closed),
                None => {}
            }
            if !s.flushing {
                s.flushing = true;
                return Ok(Turn::Lead);
            }
            // A timeout only bounds the cost of a missed wake-up; none is expected.
            self.advanced.wait_for(&mut s, Duration::from_millis(100));
        }
    }

    /// [`turn`](Self::turn) for a task: `Ready(Ok)` once request `seq` is durable,
    /// `Ready(Err)` as `turn` fails; otherwise registers the task's waker, to be woken when a
    /// flush ends or the syncer ends, and returns `Pending`. It never leads a flush: the
    /// caller asks the flusher thread (`flusher.rs`) for one.
    pub(crate) fn poll(&self, seq: u64, cx: &Context<'_>) -> Poll<Result<()>> {
        let s = self.state.lock();
        if s.lost
            .iter()
            .any(|&(first, last)| (first..=last).contains(&seq))
        {
            return Poll::Ready(Err(Error::Poisoned));
        }
        if s.durable >= seq {
            return Poll::Ready(Ok(()));
        }
        match s.ended {
            Some(Ended::Failed) => return Poll::Ready(Err(Error::Poisoned)),
            Some(Ended::Closed) => return Poll::Ready(Err(Error::Closed)),
            None => {}
        }
        let mut tasks = self.tasks.lock();
        if !tasks.last().is_some_and(|w| w.will_wake(cx.waker())) {
            tasks.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Wakes every task waiting in [`poll`](Self::poll). Call with no lock held.
    fn wake_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for waker in tasks {
            waker.wake();
        }
    }

    /// Becomes the one flushing, waiting for a running flush to end first; `false` once ended.
    pub(crate) fn lead(&self) -> bool {
        let mut s = self.state.lock();
        loop {
            if s.ended.is_some() {
                return false;
            }
            if !s.flushing {
                s.flushing = true;
                return true;
            }
            self.advanced.wait_for(&mut s, Duration::from_millis(100));
        }
    }

    /// Requests up to `seq` are on disk. Called by the one flushing, before [`flush_ended`].
    ///
    /// [`flush_ended`]: Self::flush_ended
    pub(crate) fn durable(&self, seq: u64) {
        let mut s = self.state.lock();
        s.durable = s.durable.max(seq);
    }

    /// The flush (led after [`Turn::Lead`] or [`lead`](Self::lead)) is over; wakes the waiters,
    /// one of which may lead the next.
    pub(crate) fn flush_ended(&self) {
        self.state.lock().flushing = false;
        self.advanced.notify_all();
        self.wake_tasks();
    }

    /// The highest durable sequence number.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.state.lock().durable
    }

    /// A flush failed with requests up to `last` applied: wake every waiter with an error. If
    /// `lost`, requests after the last durable one up to `last` are lost for good: their waiters
    /// fail even if they only look after a [`reopen`](Self::reopen).
    pub(crate) fn fail(&self, last: u64, lost: bool) {
        let mut s = self.state.lock();
        if lost && s.durable < last {
            let first = s.durable + 1;
            s.lost.push((first, last));
        }
        drop(s);
        self.end(Ended::Failed);
    }

    /// The database was reopened after a failure. With `Some(last)`, the last request applied
    /// before it, requests up to it are settled (durable, or lost for good if a failure said
    /// so); with `None`, they wait for a flush still to come.
    pub(crate) fn reopen(&self, last: Option<u64>) {
        let mut s = self.state.lock();
        if s.ended == Some(Ended::Failed) {
            s.ended = None;
        }
        if let Some(last) = last {
            s.durable = s.durable.max(last);
        }
        drop(s);
        self.wake_tasks();
    }

    /// The lessor closed (after its last flush): wake every waiter.
    pub(crate) fn close(&self) {
        self.end(Ended::Closed);
    }

    fn end(&self, how: Ended) {
        let mut s = self.state.lock();
        if s.ended.is_none() {
            s.ended = Some(how);
        }
        drop(s);
        self.advanced.notify_all();
        self.wake_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_writer_leads_its_own_flush() {
        let s = Syncer::new(Durability::Immediate);
        assert_eq!(s.turn(1).unwrap(), Turn::Lead);
        s.durable(1);
        s.flush_ended();
        assert_eq!(s.turn(1).unwrap(), Turn::Done);
    }

    #[test]
    fn a_follower_waits_for_the_leaders_flush() {
        let s = std::sync::Arc::new(Syncer::new(Durability::Immediate));
        assert_eq!(s.turn(1).unwrap(), Turn::Lead);
        let follower = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.turn(2))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!follower.is_finished());
        s.durable(2); // the leader's flush covered the follower's request too
        s.flush_ended();
        assert_eq!(follower.join().unwrap().unwrap(), Turn::Done);
    }

    #[test]
    fn a_failed_flush_fails_the_waiters_even_after_a_reopen() {
        let s = Syncer::new(Durability::Immediate);
        s.durable(1);
        assert_eq!(s.turn(2).unwrap(), Turn::Lead);
        s.fail(3, true);
        s.flush_ended();
        assert!(matches!(s.turn(2), Err(Error::Poisoned)));
        s.reopen(Some(3));
        assert!(matches!(s.turn(3), Err(Error::Poisoned)));
        assert_eq!(s.turn(1).unwrap(), Turn::Done);
        // Requests after the reopen wait for their own flush again.
        assert_eq!(s.turn(4).unwrap(), Turn::Lead);
    }

    #[test]
    fn batched_requests_wait_for_nothing() {
        let s = Syncer::new(Durability::Batched {
            max_delay: Duration::from_millis(30),
        });
        assert!(s.ticket(1).0.is_none());
        assert_eq!(Syncer::new(Durability::Immediate).ticket(1).0, Some(1));
    }
}
