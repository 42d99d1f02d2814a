//! [`Session`]: a lease kept alive in the background, and told when it is lost.

use std::fmt;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::error::{Error, Result};
use crate::keepalive::{EndReason, KeepAlive};
use crate::lease::LeaseId;
use crate::lease_store::LeaseStore;

/// A lease kept alive for as long as the session lives: what [`Mutex`](super::Mutex) and
/// [`Election`](super::Election) put their keys under, so that a process that dies (stops
/// renewing) releases its locks and leadership within one TTL. etcd's `concurrency.Session`.
///
/// The lease is renewed every third of its TTL by the store's keep-alive
/// ([`LeaseStore::keep_alive`]). [`done`](Session::done) tells when the session ends, and
/// [`ended`](Session::ended) why: the lease expired or was revoked, the store closed, or the
/// session was closed, orphaned or dropped.
///
/// Ending a session:
/// - [`close`](Session::close) revokes the lease: every key under it (held locks, campaigns)
///   is deleted at once, and the next waiter goes ahead.
/// - [`orphan`](Session::orphan), or dropping the session, stops renewing without revoking:
///   the lease and its keys live until its TTL runs out (as when a process dies).
///
/// A `Session` borrows its store; share it between threads by reference (it is `Sync`), or
/// give each thread its own.
///
/// ```
/// use std::time::Duration;
/// use lessor::{EndReason, Lessor};
/// use lessor::concurrency::Session;
///
/// # fn main() -> lessor::Result<()> {
/// let store = Lessor::open_in_memory()?;
/// let session = Session::new(&store, Duration::from_secs(10))?;
/// let done = session.done();
/// assert!(done.try_recv().is_err() && session.ended().is_none()); // running
///
/// store.revoke(session.lease())?;    // someone revokes the lease: the session is lost
/// assert!(done.recv().is_err());     // `done` disconnects (it never carries a message)
/// assert_eq!(session.ended(), Some(EndReason::Revoked));
/// # Ok(()) }
/// ```
pub struct Session<'s, S: LeaseStore + ?Sized> {
    store: &'s S,
    lease: LeaseId,
    keep_alive: KeepAlive,
    /// Disconnects once the keep-alive has ended: its sender lives in the monitor thread.
    done: Receiver<()>,
    /// The `lessor-session` thread, which drains the keep-alive's responses until they end,
    /// then drops the sender of `done`. Taken (and joined) by the first `stop`.
    monitor: Option<JoinHandle<()>>,
}

impl<'s, S: LeaseStore + ?Sized> Session<'s, S> {
    /// Grants a lease of `ttl` and keeps it alive.
    ///
    /// # Errors
    /// The store's errors from [`LeaseStore::grant`] and [`LeaseStore::keep_alive`];
    /// [`Error::Spawn`] if the session's thread cannot be started. The lease is revoked again
    /// if anything after the grant fails.
    pub fn new(store: &'s S, ttl: Duration) -> Result<Self> {
        let lease = store.grant(ttl)?;
        Self::start(store, lease.id).inspect_err(|_| {
            // Best effort: it would expire within its TTL anyway.
            let _ = store.revoke(lease.id);
        })
    }

    /// Adopts a lease that already exists, and keeps it alive from now on. Closing the session
    /// revokes it.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if it is not alive, the store's errors;
    /// [`Error::Spawn`] if the session's thread cannot be started.
    pub fn with_lease(store: &'s S, id: LeaseId) -> Result<Self> {
        Self::start(store, id)
    }

    fn start(store: &'s S, lease: LeaseId) -> Result<Self> {
        let keep_alive = store.keep_alive(lease)?;
        let responses = keep_alive.responses().clone();
        let (tx, done) = crossbeam_channel::bounded::<()>(0);
        let monitor = std::thread::Builder::new()
            .name("lessor-session".into())
            .spawn(move || {
                // The channel disconnects once the keep-alive has ended, whatever the reason.
                for _ in responses.iter() {}
                drop(tx);
            })
            .map_err(Error::Spawn)?;
        Ok(Session {
            store,
            lease,
            keep_alive,
            done,
            monitor: Some(monitor),
        })
    }

    /// The store the session lives in.
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// The session's lease.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// A receiver that disconnects when the session ends: its lease expired or was revoked,
    /// the store closed, or the session was closed or orphaned. It never carries a message, so
    /// `recv()` blocks until then and returns `Err`; it works in `crossbeam_channel::select!`,
    /// and every clone sees the end. [`ended`](Session::ended) says why.
    ///
    /// A lock held or a campaign won under the session must be treated as lost from then on.
    /// On etcd, a revocation by someone else is noticed at the next renewal (within a third of
    /// the TTL); on the embedded store, at once.
    pub fn done(&self) -> Receiver<()> {
        self.done.clone()
    }

    /// Why the session ended, or `None` while its lease is being kept alive.
    /// [`EndReason::Cancelled`] means the session was closed, orphaned or dropped.
    pub fn ended(&self) -> Option<EndReason> {
        self.keep_alive.ended()
    }

    /// Ends the session and revokes its lease, deleting every key under it: locks it held
    /// are released and campaigns withdrawn, at once. A lease already gone is not an error.
    ///
    /// # Errors
    /// The store's errors from [`LeaseStore::revoke`] (the lease then expires within its
    /// TTL, since nothing renews it any more).
    pub fn close(mut self) -> Result<()> {
        self.stop();
        match self.store.revoke(self.lease) {
            Ok(_) | Err(Error::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ends the session without revoking its lease: renewals stop, and the lease and its keys
    /// live until its TTL runs out. What happens when the process dies; useful to hand a lease
    /// over (adopt it with [`with_lease`](Session::with_lease)). Dropping a session does the
    /// same.
    pub fn orphan(mut self) {
        self.stop();
    }

    /// Stops the keep-alive and joins the monitor thread. Idempotent.
    fn stop(&mut self) {
        self.keep_alive.cancel();
        if let Some(monitor) = self.monitor.take() {
            // The thread only drains a channel that `cancel` has just disconnected; it cannot
            // panic, and if it somehow did, there is nothing to report it to.
            let _ = monitor.join();
        }
    }
}

impl<S: LeaseStore + ?Sized> Drop for Session<'_, S> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<S: LeaseStore + ?Sized> fmt::Debug for Session<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &self.lease)
            .field("ended", &self.ended())
            .finish()
    }
}
