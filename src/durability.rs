//! When a change is on disk: [`Durability`], and the group commit behind it.
//!
//! # Implementation
//!
//! Every write is one redb transaction, committed under the writer lock. redb offers two
//! commits: `Immediate` (fsync before it returns) and `None` (in memory; made durable by the
//! next `Immediate` commit, all or nothing per transaction). The [`Syncer`] picks one for each
//! commit:
//!
//! - [`Durability::Immediate`], group commit: a writer that finds other writers queued behind
//!   it on the writer lock commits with `None` and leaves; the last writer of the queue commits
//!   `Immediate`, and its fsync makes everything before it durable. Writers that committed with
//!   `None` wait (after releasing the writer lock) until the durable sequence number passes
//!   theirs. A lone writer commits `Immediate` at once, as before. While one fsync runs, the
//!   next writers queue up, so the queue (and the batch) grows with the load.
//! - [`Durability::Batched`]: every commit is `None`, except that of the first writer to find the
//!   oldest unflushed commit `max_delay` old; when writes stop, the ticker flushes at
//!   `max_delay`. Grants, which take no transaction, leave the flush to the ticker (or, without
//!   one, flush themselves when it is due). Calls return at their commit.
//!
//! A writer whose transaction aborts, or that must flush, and finds no writer queued, makes an
//! empty `Immediate` commit itself if anything is unflushed, so no waiter is left behind.

use std::time::{Duration, Instant};

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

/// Most grants queued in batched mode before one flushes them at once, whatever `max_delay`.
const MAX_QUEUED_GRANTS: usize = 10_000;

/// What the syncer guards.
struct State {
    /// Sequence number of the last commit known to be on disk.
    durable: u64,
    /// When the oldest commit not yet on disk was made; `None` when everything is durable.
    unflushed_since: Option<Instant>,
    /// A flush failed (the lessor is poisoned), or the lessor closed: waiters stop waiting.
    ended: Option<Ended>,
    /// Commits a failed flush left not known to be durable, as `(first, last)` sequence
    /// numbers: their waiters fail even after [`Syncer::reopen`]. One range per failure.
    lost: Vec<(u64, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Failed,
    Closed,
}

/// Picks each commit's redb durability and lets writers wait for theirs; see the module docs.
pub(crate) struct Syncer {
    mode: Durability,
    /// Whether a ticker flushes batched commits; if not, writers do it themselves.
    ticker: bool,
    /// Writers blocked on the writer lock, in `Core::write`.
    queued: std::sync::atomic::AtomicUsize,
    /// Guards the durable sequence number and the flush clock. A leaf lock: taken under the
    /// writer, or alone by waiters.
    state: Mutex<State>,
    /// Signalled when `durable` advances or the syncer ends.
    advanced: Condvar,
}

/// What a writer holding the writer lock must do at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Commit with fsync: this commit makes every earlier one durable.
    Durable,
    /// Commit without fsync; a later durable commit covers it.
    Deferred,
}

/// A commit that is not yet known to be durable; [`Syncer::wait`] for it after releasing the
/// writer lock.
#[must_use = "a deferred commit must be waited for before acknowledging it"]
#[derive(Debug)]
pub(crate) struct Ticket(Option<u64>);

impl Ticket {
    pub(crate) const DONE: Ticket = Ticket(None);
}

impl Syncer {
    pub(crate) fn new(mode: Durability, ticker: bool) -> Syncer {
        Syncer {
            mode,
            ticker,
            queued: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(State {
                durable: 0,
                unflushed_since: None,
                ended: None,
                lost: Vec::new(),
            }),
            advanced: Condvar::new(),
        }
    }

    pub(crate) fn mode(&self) -> Durability {
        self.mode
    }

    /// Whether a grant that has just queued its record (the `queued`-th waiting) flushes the
    /// queue itself. Immediate: if it is the last writer of the queue (group commit). Batched:
    /// only when the queue is long, or `max_delay` is up and no ticker flushes on time; with a
    /// ticker, no grant pays for everyone's fsync.
    pub(crate) fn flush_queued_grants(&self, queued: usize) -> bool {
        match self.mode {
            Durability::Immediate => self.choose() == Commit::Durable,
            Durability::Batched { .. } => {
                queued >= MAX_QUEUED_GRANTS || (!self.ticker && self.choose() == Commit::Durable)
            }
        }
    }

    /// Counts a writer in the queue for the writer lock while `lock` runs.
    pub(crate) fn queue_for<G>(&self, lock: impl FnOnce() -> G) -> G {
        use std::sync::atomic::Ordering;
        self.queued.fetch_add(1, Ordering::AcqRel);
        let guard = lock();
        self.queued.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    fn nobody_queued(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// How the commit about to be made (under the writer lock) should go.
    pub(crate) fn choose(&self) -> Commit {
        match self.mode {
            Durability::Immediate if self.nobody_queued() => Commit::Durable,
            Durability::Immediate => Commit::Deferred,
            Durability::Batched { max_delay } => {
                let s = self.state.lock();
                match s.unflushed_since {
                    Some(t) if t.elapsed() >= max_delay => Commit::Durable,
                    _ => Commit::Deferred,
                }
            }
        }
    }

    /// Records commit number `seq`, made as `how`. Returns what the caller must wait for, and
    /// whether this commit is the first unflushed one (so the ticker should be woken to flush
    /// it in time).
    pub(crate) fn committed(&self, seq: u64, how: Commit) -> (Ticket, bool) {
        let mut s = self.state.lock();
        match how {
            Commit::Durable => {
                s.durable = s.durable.max(seq);
                s.unflushed_since = None;
                drop(s);
                self.advanced.notify_all();
                (Ticket::DONE, false)
            }
            Commit::Deferred => {
                let first = s.unflushed_since.is_none();
                if first {
                    s.unflushed_since = Some(Instant::now());
                }
                let ticket = match self.mode {
                    Durability::Immediate => Ticket(Some(seq)),
                    Durability::Batched { .. } => Ticket::DONE,
                };
                (ticket, first)
            }
        }
    }

    /// Whether commits up to `seq` (the last one made) still need a flush that nobody queued
    /// will make: an aborted writer in immediate mode must then flush itself.
    pub(crate) fn must_flush_after_abort(&self, seq: u64) -> bool {
        matches!(self.mode, Durability::Immediate)
            && self.nobody_queued()
            && self.state.lock().durable < seq
    }

    /// Whether anything committed is not yet durable.
    pub(crate) fn unflushed(&self) -> bool {
        self.state.lock().unflushed_since.is_some()
    }

    /// When the ticker must flush (batched mode), if anything waits for it.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        match self.mode {
            Durability::Batched { max_delay } => self
                .state
                .lock()
                .unflushed_since
                .map(|t| t.checked_add(max_delay).unwrap_or(t)),
            Durability::Immediate => None,
        }
    }

    /// Waits until commit `ticket` is durable.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the flush that was to cover it failed (the change may or may not
    /// be on disk), [`Error::Closed`] if the lessor closed without flushing it.
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<()> {
        let Some(seq) = ticket.0 else {
            return Ok(());
        };
        let mut s = self.state.lock();
        loop {
            if s.lost
                .iter()
                .any(|&(first, last)| (first..=last).contains(&seq))
            {
                return Err(Error::Poisoned);
            }
            if s.durable >= seq {
                return Ok(());
            }
            match s.ended {
                Some(Ended::Failed) => return Err(Error::Poisoned),
                Some(Ended::Closed) => return Err(Error::Closed),
                None => {}
            }
            // A timeout only bounds the cost of a missed wake-up; none is expected.
            self.advanced.wait_for(&mut s, Duration::from_millis(100));
        }
    }

    /// A flush failed after commit `last` (the last one made): wake every waiter with an error.
    /// Commits after the last durable one up to `last` are lost for good: their waiters fail
    /// even if they only look after a [`reopen`](Self::reopen).
    pub(crate) fn fail(&self, last: u64) {
        let mut s = self.state.lock();
        if s.durable < last {
            let first = s.durable + 1;
            s.lost.push((first, last));
        }
        drop(s);
        self.end(Ended::Failed);
    }

    /// The database was reopened after a failure, with `last` the last commit made before it:
    /// later commits are counted afresh from there, nothing waits for a flush, and waiters of
    /// lost commits still fail.
    pub(crate) fn reopen(&self, last: u64) {
        let mut s = self.state.lock();
        if s.ended == Some(Ended::Failed) {
            s.ended = None;
        }
        s.durable = s.durable.max(last);
        s.unflushed_since = None;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_writer_commits_durably_and_waits_for_nothing() {
        let s = Syncer::new(Durability::Immediate, true);
        assert_eq!(s.choose(), Commit::Durable);
        let (ticket, _) = s.committed(1, Commit::Durable);
        assert!(s.wait(ticket).is_ok());
        assert!(!s.must_flush_after_abort(1));
    }

    #[test]
    fn a_deferred_commit_waits_for_the_next_durable_one() {
        let s = std::sync::Arc::new(Syncer::new(Durability::Immediate, true));
        let (ticket, first) = s.committed(1, Commit::Deferred);
        assert!(first);
        assert!(s.must_flush_after_abort(1));
        let waiter = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.wait(ticket))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        let (_, _) = s.committed(2, Commit::Durable);
        assert!(waiter.join().unwrap().is_ok());
        assert!(!s.unflushed());
    }

    #[test]
    fn a_failed_flush_fails_the_waiters() {
        let s = Syncer::new(Durability::Immediate, true);
        let (ticket, _) = s.committed(1, Commit::Deferred);
        s.fail(1);
        assert!(matches!(s.wait(ticket), Err(Error::Poisoned)));
    }

    #[test]
    fn waiters_of_lost_commits_fail_even_after_a_reopen() {
        let s = Syncer::new(Durability::Immediate, true);
        let (_, _) = s.committed(1, Commit::Durable);
        let (lost, _) = s.committed(2, Commit::Deferred);
        s.fail(2);
        s.reopen(2);
        assert!(matches!(s.wait(lost), Err(Error::Poisoned)));
        assert!(!s.unflushed());
        // Commits after the reopen wait for their own flush again.
        let (next, _) = s.committed(3, Commit::Deferred);
        let (_, _) = s.committed(4, Commit::Durable);
        assert!(s.wait(next).is_ok());
    }

    #[test]
    fn batched_commits_are_deferred_until_max_delay_then_flushed() {
        let s = Syncer::new(
            Durability::Batched {
                max_delay: Duration::from_millis(30),
            },
            false,
        );
        assert_eq!(s.choose(), Commit::Deferred);
        let (ticket, first) = s.committed(1, Commit::Deferred);
        assert!(first && s.wait(ticket).is_ok()); // batched calls do not wait
        assert!(s.flush_due().is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.choose(), Commit::Durable);
    }
}
