//! [`Mutex`]: etcd's fair, fenced lock on a [`Session`].

use std::fmt;
use std::time::Instant;

use super::queue::{self, Turn};
use super::session::Session;
use crate::error::{Error, Result};
use crate::lease::Revision;
use crate::lease_store::LeaseStore;
use crate::txn::{CmpOp, Compare};

/// A distributed lock: fair (first come, first served), fenced, and released by itself when its
/// holder's session is lost. etcd's `concurrency.Mutex`, with the same keys.
///
/// Each `Mutex` queues under `prefix/` with the key `prefix/<lease id in hex>`, put under its
/// session's lease. The key with the lowest create revision holds the lock; every other waits
/// for the key just before its own to be deleted, so a release wakes exactly one waiter. A
/// failed attempt costs one transaction.
///
/// [`revision`](Mutex::revision) is the **fencing token**: the create revision of the holder's
/// key, larger for every new holder. Hand it to whatever the critical section writes, so that
/// a holder that lost the lock without knowing (paused past its TTL) is refused; within the
/// store, [`is_owner`](Mutex::is_owner) gives the comparison that guards a transaction.
///
/// A holder whose session is lost (its lease expired or was revoked) no longer holds the lock:
/// [`Session::done`] tells it, and the next waiter acquires once the key is deleted (within
/// one TTL of the last renewal).
///
/// Two `Mutex` values on one session and prefix share one key (as in etcd): they are the same
/// participant, and the lock does not count them. Use one session per contender.
///
/// ```
/// use std::time::Duration;
/// use lessor::{Error, Lessor};
/// use lessor::concurrency::{Mutex, Session};
///
/// # fn main() -> lessor::Result<()> {
/// let store = Lessor::open_in_memory()?;
/// let (alice, bob) = (
///     Session::new(&store, Duration::from_secs(10))?,
///     Session::new(&store, Duration::from_secs(10))?,
/// );
/// let mut a = Mutex::new(&alice, "/cron/lock/job1")?;
/// let mut b = Mutex::new(&bob, "/cron/lock/job1")?;
///
/// a.lock()?;
/// let token = a.revision().unwrap(); // the fencing token
/// assert!(matches!(b.try_lock(), Err(Error::Locked))); // held: fails at once, leaves no key
///
/// std::thread::scope(|s| -> lessor::Result<()> {
///     let waiter = s.spawn(|| b.lock().map(|()| b.revision())); // queues behind `a`
///     std::thread::sleep(Duration::from_millis(20));
///     a.unlock()?;
///     let next = waiter.join().unwrap()?.unwrap();
///     assert!(next > token); // every new holder has a larger token
///     Ok(())
/// })?;
/// # Ok(()) }
/// ```
pub struct Mutex<'a, S: LeaseStore + ?Sized> {
    session: &'a Session<'a, S>,
    /// The queue's prefix, with its `/`.
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// The create revision of `key` while the lock is held.
    held: Option<Revision>,
}

impl<'a, S: LeaseStore + ?Sized> Mutex<'a, S> {
    /// A lock under `prefix` for `session`; nothing is written until [`lock`](Mutex::lock).
    /// As in etcd, `/` is appended to `prefix`: its keys are `prefix/<lease id in hex>`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty prefix.
    pub fn new(session: &'a Session<'a, S>, prefix: impl AsRef<[u8]>) -> Result<Self> {
        let prefix = queue::queue_prefix(prefix.as_ref())?;
        let key = queue::participant_key(&prefix, session.lease());
        Ok(Mutex {
            session,
            prefix,
            key,
            held: None,
        })
    }

    /// Waits until the lock is held. Waiters get it in the order they called `lock`. Calling
    /// it while holding the lock returns at once.
    ///
    /// # Errors
    /// [`Error::SessionExpired`] if the session is lost while waiting (its key is gone);
    /// [`Error::Closed`] if the store closes; the store's errors. On any error the key this
    /// call created is removed (best effort: it goes with the session's lease anyway).
    pub fn lock(&mut self) -> Result<()> {
        self.acquire(None)
    }

    /// As [`lock`](Mutex::lock), giving up at `deadline`: then its key is removed, leaving
    /// nothing behind to block later waiters.
    ///
    /// # Errors
    /// [`Error::Locked`] when the deadline passes first, and as [`lock`](Mutex::lock).
    pub fn lock_until(&mut self, deadline: Instant) -> Result<()> {
        self.acquire(Some(deadline))
    }

    /// Takes the lock if nobody holds it, without waiting. One transaction when free; when held,
    /// a second one removes the key the attempt queued.
    ///
    /// # Errors
    /// [`Error::Locked`] if another session holds it (or waits before this one);
    /// [`Error::SessionExpired`] if the session's lease is gone; the store's errors.
    pub fn try_lock(&mut self) -> Result<()> {
        let joined = queue::join(self.session, &self.prefix, &self.key, b"")?;
        let rev = joined.kv.create_revision;
        match joined.turn {
            Turn::First => {
                self.held = Some(rev);
                Ok(())
            }
            Turn::After(_) => {
                if joined.created {
                    queue::leave(self.session, &self.key, rev)?;
                }
                Err(Error::Locked)
            }
            Turn::Gone => Err(Error::SessionExpired(self.session.lease())),
        }
    }

    fn acquire(&mut self, deadline: Option<Instant>) -> Result<()> {
        let joined = queue::join(self.session, &self.prefix, &self.key, b"")?;
        let rev = joined.kv.create_revision;
        let waited = match joined.turn {
            Turn::First => Ok(()),
            Turn::Gone => Err(Error::SessionExpired(self.session.lease())),
            Turn::After(before) => queue::wait(
                self.session,
                &self.prefix,
                &self.key,
                rev,
                before,
                joined.revision,
                deadline,
            ),
        };
        match waited {
            Ok(()) => {
                self.held = Some(rev);
                Ok(())
            }
            Err(e) => {
                if joined.created {
                    // Best effort: the error says what went wrong; the key dies with the lease.
                    let _ = queue::leave(self.session, &self.key, rev);
                }
                Err(e)
            }
        }
    }

    /// Releases the lock: deletes this session's key, which wakes the next waiter. Does
    /// nothing if the lock is not held.
    ///
    /// # Errors
    /// The store's errors (the lock is then still held, unless the session's lease ends).
    pub fn unlock(&mut self) -> Result<()> {
        if let Some(rev) = self.held {
            queue::leave(self.session, &self.key, rev)?;
            self.held = None;
        }
        Ok(())
    }

    /// This participant's key: `prefix/<lease id in hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The fencing token while the lock is held: the create revision of its key. `None` when
    /// not held (by this `Mutex`).
    pub fn revision(&self) -> Option<Revision> {
        self.held
    }

    /// A comparison that holds exactly while this lock is still held: its key exists with the
    /// create revision it was acquired with. Put it in a transaction's `when` to fence its
    /// writes. `None` when not held. (etcd's `Mutex.IsOwner`.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use lessor::{Lessor, LeaseStore, Op, Txn};
    /// # use lessor::concurrency::{Mutex, Session};
    /// # fn main() -> lessor::Result<()> {
    /// # let store = Lessor::open_in_memory()?;
    /// # let session = Session::new(&store, Duration::from_secs(10))?;
    /// let mut lock = Mutex::new(&session, "/jobs/lock")?;
    /// lock.lock()?;
    /// let fenced = Txn::new()
    ///     .when(lock.is_owner().unwrap())
    ///     .then(Op::put("/jobs/state", "done"));
    /// assert!(store.txn(fenced)?.succeeded); // refused once the lock has passed on
    /// # Ok(()) }
    /// ```
    pub fn is_owner(&self) -> Option<Compare> {
        self.held
            .map(|rev| Compare::create_revision(&self.key, CmpOp::Equal, rev))
    }
}

impl<S: LeaseStore + ?Sized> fmt::Debug for Mutex<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("held", &self.held)
            .finish()
    }
}
