//! Sessions, mutexes and elections: the recipes people build on leases, as etcd's client ships
//! them (`clientv3/concurrency`), generic over any [`LeaseStore`](crate::LeaseStore).
//!
//! - A [`Session`] is a lease kept alive in the background. [`Session::done`] tells when it is
//!   lost: expired, revoked, or the store closed.
//! - A [`Mutex`] is a fair, fenced lock: waiters queue under a prefix, each behind the one
//!   before it, and [`Mutex::revision`] is the fencing token.
//! - An [`Election`] is the same queue with a value: the first in line is the leader; it can
//!   [`proclaim`](Election::proclaim) a new value, [`resign`](Election::resign), and anyone can
//!   [`observe`](Election::observe) every leader in turn.
//!
//! The same code runs on the embedded [`Lessor`](crate::Lessor) and on etcd (`EtcdLessor`),
//! and its keys are etcd's: a lock or an election at `/my/lock` on etcd is the same one that
//! `etcdctl lock /my/lock` or Go's `concurrency.NewMutex(session, "/my/lock")` uses.
//!
//! ```
//! use std::time::Duration;
//! use lessor::Lessor;
//! use lessor::concurrency::{Mutex, Session};
//!
//! # fn main() -> lessor::Result<()> {
//! let store = Lessor::open_in_memory()?;
//! let session = Session::new(&store, Duration::from_secs(10))?;
//! let mut lock = Mutex::new(&session, "/cron/lock/job1")?;
//! lock.lock()?;
//! println!("holding {:?}, fencing token {:?}", lock.key(), lock.revision());
//! lock.unlock()?;
//! session.close()?; // revokes the lease: anything still held under it goes with it
//! # Ok(()) }
//! ```
//!
//! # Implementation
//!
//! Each participant has one key under the prefix, `prefix/<lease id in lower hex>`, written
//! under its session's lease, so that it disappears with the session. The queue's order is the
//! keys' create revisions: the first is the holder (or leader). An attempt is ONE transaction
//! (`queue.rs`): *if my key is absent, put it; in both branches, read my key and the whole
//! prefix*, so a failed attempt costs one commit, and the caller learns at the same revision
//! where it stands and which key is just before it. A waiter then watches that one key from
//! the revision after the attempt (so a delete in between is not missed) and, when it goes,
//! reads the prefix again: it holds the lock once no key older than its own is left. A release
//! so wakes exactly one waiter: no herd.
//!
//! Ground rules:
//! - No state is shared between threads here besides the store: a `Mutex` or `Election` is one
//!   participant, used from one thread at a time (`&mut self`); the `Session` is `Sync` and
//!   shared by reference.
//! - A wait never outlives a lost session: it looks at the session between slices of its watch
//!   (at most 50 ms apart) and re-reads the prefix, where a lost session shows as its
//!   own key being gone.
//! - Giving up (`try_lock`, `lock_until`'s deadline, an error while waiting) removes the key
//!   this attempt created, guarded by its create revision, so nothing is left to block others.
//!   A key the session already had (a second `Mutex` on the same session and prefix) is left.

mod election;
mod mutex;
mod queue;
mod session;

pub use election::{Election, Observe};
pub use mutex::Mutex;
pub use session::Session;
