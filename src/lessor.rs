//! [`Lessor`]: the handle, and the core every handle and the ticker share.
//!
//! A handle owns a share of the [`Engine`] (`engine.rs`), which does the work, and, for the
//! last handle, the ticker thread. Every method checks the engine's state, then asks it: see
//! `engine.rs` for the shared state and the lock order, `pipeline.rs` for how writes reach the
//! disk, `lifecycle.rs` for how a lease leaves the table.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::Database;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::LeaseEvents;
use crate::integrity::Problem;
use crate::keepalive::{self, KeepAlive, KeepAliveOptions};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::overlay::Query;
use crate::range::{Page, RangeOptions};
use crate::reload::Source;
use crate::stats::{Health, Stats};
use crate::ticker::Ticker;
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

/// A handle to an open lease database: grant, renew and revoke leases, and read and write the
/// keys attached to them.
///
/// `Lessor` is `Clone + Send + Sync`; clones share one database. Every method is synchronous.
/// Mutating calls return once their change is durable on disk (one redb commit with fsync);
/// [`renew`](Lessor::renew) touches no disk at all. Unless built with
/// [`Builder::ticker(false)`](crate::Builder::ticker), a background thread revokes leases as they
/// expire, deleting their keys.
///
/// The database closes when [`close`](Lessor::close) is called or the last clone is dropped.
/// Besides the errors each method lists, every call returns [`Error::Closed`] once closed and
/// [`Error::Poisoned`] after a write has failed in storage, until the lessor has reopened the
/// database and reloaded from it (the ticker does, retrying while the fault lasts; so does
/// [`recover`](Lessor::recover)).
///
/// ```
/// use std::time::Duration;
/// use lessor::Lessor;
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// let lessor = Lessor::open(&path)?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// lessor.put_with_lease("/cron/lock/job1", "10001", lease.id)?;
///
/// let kv = lessor.get("/cron/lock/job1")?.unwrap();
/// assert_eq!(kv.value, b"10001");
/// assert_eq!(kv.lease, Some(lease.id));
///
/// lessor.renew(lease.id)?; // keep it alive for another 10 s
/// lessor.revoke(lease.id)?; // ... or end it now: its keys go with it
/// assert_eq!(lessor.get("/cron/lock/job1")?, None);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lessor {
    handle: Arc<Handle>,
}

/// What the handles share. Dropping the last one closes the lessor.
struct Handle {
    engine: Arc<Engine>,
    /// The ticker thread, until close joins it.
    ticker: Mutex<Option<Ticker>>,
    /// Held for the whole of `close`.
    closing: Mutex<()>,
}

impl Lessor {
    pub(crate) fn open_with(config: Config, db: Database, source: Source) -> Result<Lessor> {
        let (engine, wake) = Engine::open(config, db, source)?;
        let ticker = if engine.config.ticker {
            Some(Ticker::spawn(Arc::clone(&engine), wake).map_err(Error::Spawn)?)
        } else {
            None
        };
        Ok(Lessor {
            handle: Arc::new(Handle {
                engine,
                ticker: Mutex::new(ticker),
                closing: Mutex::new(()),
            }),
        })
    }

    /// The engine, for a call that writes: refused once closed, and while poisoned.
    fn core(&self) -> Result<&Engine> {
        let engine = &*self.handle.engine;
        engine.check_writable()?;
        Ok(engine)
    }

    /// The engine, for a call that only reads or renews: refused once closed, but answered
    /// while poisoned (see [`Engine::check_readable`]).
    fn readable(&self) -> Result<&Engine> {
        let engine = &*self.handle.engine;
        engine.check_readable()?;
        Ok(engine)
    }

    /// The engine, for a call that writes (as [`core`](Self::core)), shared: for
    /// `async_lessor.rs`, whose futures may outlive the borrow of the handle.
    pub(crate) fn writable_engine(&self) -> Result<&Arc<Engine>> {
        self.handle.engine.check_writable()?;
        Ok(&self.handle.engine)
    }

    /// A read snapshot of the file holding every change acknowledged so far ([`Engine::sync`]
    /// flushes them first); for `backup.rs`.
    pub(crate) fn synced_snapshot(&self) -> Result<redb::ReadTransaction> {
        let core = self.core()?;
        core.sync()?;
        let guard = core.pipeline.store();
        Ok(redb::ReadableDatabase::begin_read(
            guard.as_ref().ok_or(Error::Closed)?,
        )?)
    }

    /// Grants a lease of `ttl` with a new id: one above the highest id ever issued in this
    /// database, so ids are never reused. A `ttl` below the minimum is raised to it.
    ///
    /// # Errors
    /// [`Error::TtlOutOfRange`] above the maximum TTL, [`Error::LeaseIdsExhausted`] once
    /// `i64::MAX` has been issued, [`Error::ClockOutOfRange`] if the clock has reached the last
    /// deadline a lease can have (a grant never returns a lease already dead),
    /// [`Error::Storage`], [`Error::Closed`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let a = lessor.grant(Duration::from_secs(10))?;
    /// let b = lessor.grant(Duration::from_secs(10))?;
    /// assert!(b.id > a.id);
    /// assert_eq!(a.ttl, Duration::from_secs(10));
    /// # Ok(()) }
    /// ```
    pub fn grant(&self, ttl: Duration) -> Result<Lease> {
        self.core()?.grant(None, ttl)
    }

    /// Grants a lease with the id of the caller's choice.
    ///
    /// An id whose lease has expired but not yet been revoked is revoked (its keys deleted, as
    /// expiry would) and granted afresh in one transaction.
    ///
    /// # Errors
    /// [`Error::LeaseExists`] if the id belongs to a live lease, [`Error::TtlOutOfRange`],
    /// [`Error::ClockOutOfRange`], [`Error::Storage`], [`Error::Closed`].
    pub fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        self.core()?.grant(Some(id), ttl)
    }

    /// Renews a lease once: its deadline becomes now + its TTL. Returns the TTL.
    ///
    /// "Now" is the lessor's clock as read inside this call, not when the caller decided to
    /// renew nor when it gets the answer back. A holder that must know its lease is alive
    /// should therefore time it from a reading taken *before* the call: its own deadline is
    /// then no later than the lessor's, so it never acts on a lease the lessor already
    /// considers expired, whatever the call's delay (a scheduling pause, a slow machine).
    ///
    /// This is the hot path: it does no I/O and takes no lock. Renewals are not written to disk
    /// here: under [`RestartPolicy::Reset`](crate::RestartPolicy::Reset) (the default) every
    /// lease gets its full TTL again after a restart anyway; under the other policies the
    /// ticker's next checkpoint writes the new deadline.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease was never granted, was revoked, or has expired (a
    /// lease is dead the instant its deadline passes, even before the ticker revokes it);
    /// [`Error::Closed`], [`Error::Poisoned`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(5))?;
    /// assert_eq!(lessor.renew(lease.id)?, Duration::from_secs(5));
    /// lessor.revoke(lease.id)?;
    /// assert!(matches!(lessor.renew(lease.id), Err(lessor::Error::LeaseNotFound(_))));
    /// # Ok(()) }
    /// ```
    pub fn renew(&self, id: LeaseId) -> Result<Duration> {
        let core = self.readable()?;
        let now = core.now();
        match core.table.renew(id, now) {
            Some(ttl) => {
                core.metrics.renews.add(1);
                Ok(Duration::from_nanos(ttl))
            }
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    /// Keeps lease `id` alive: renews it now, then every third of its TTL from a background
    /// thread, until the returned [`KeepAlive`] is cancelled or dropped (etcd's `KeepAlive`).
    ///
    /// Stopping a keep-alive does not revoke the lease: it expires one TTL after its last
    /// renewal. The keep-alive also ends when the lease is revoked or expires, or the lessor
    /// closes; [`KeepAlive::ended`] says which. One thread, `lessor-keepalive`, started by the
    /// first keep-alive, serves them all; renewals touch no disk.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is not alive (the first renewal happens before this
    /// returns, and its response is already in [`KeepAlive::responses`]); [`Error::Spawn`] if
    /// the thread cannot be started; [`Error::Closed`], [`Error::Poisoned`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{EndReason, Lessor};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// lessor.put_with_lease("/cron/lock/job1", "10001", lease.id)?;
    ///
    /// let ka = lessor.keep_alive(lease.id)?;
    /// let consumer = {
    ///     let responses = ka.responses().clone();
    ///     std::thread::spawn(move || {
    ///         for r in responses {
    ///             println!("lease {} renewed, TTL {:?}", r.id, r.ttl);
    ///         }
    ///     })
    /// };
    /// // ... the lock is held while the program works ...
    /// drop(ka); // stop renewing: the lease expires 10 s after the last renewal
    /// consumer.join().unwrap();
    /// assert!(lessor.get("/cron/lock/job1")?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn keep_alive(&self, id: LeaseId) -> Result<KeepAlive> {
        self.keep_alive_with(id, KeepAliveOptions::default())
    }

    /// Keeps lease `id` alive until `at`, then stops: [`keep_alive`](Lessor::keep_alive) with
    /// [`KeepAliveOptions::run_for`] of the time from now to `at` (converted once, here, to a
    /// time on the lessor's clock). The last renewal counts as made at `at`, so the lease lives
    /// until `at` plus its TTL; the keep-alive then ends with [`EndReason::Finished`](crate::EndReason::Finished).
    ///
    /// # Errors
    /// As [`keep_alive`](Lessor::keep_alive).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// // renew for 5 s then stop, so the lease lives 5 s + 10 s in all
    /// let ka = lessor.keep_alive_until(lease.id, Instant::now() + Duration::from_secs(5))?;
    /// assert_eq!(ka.ended(), None);
    /// # Ok(()) }
    /// ```
    pub fn keep_alive_until(&self, id: LeaseId, at: Instant) -> Result<KeepAlive> {
        let run_for = at.saturating_duration_since(Instant::now());
        self.keep_alive_with(id, KeepAliveOptions::default().run_for(run_for))
    }

    /// Keeps lease `id` alive with [`KeepAliveOptions`]: another interval, a time limit on the
    /// lessor's clock, revoking the lease when the handle is dropped.
    ///
    /// # Errors
    /// As [`keep_alive`](Lessor::keep_alive), and [`Error::InvalidConfig`] if the interval is not
    /// shorter than the lease's TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{EndReason, KeepAliveOptions, Lessor, ManualClock};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let clock = ManualClock::new();
    /// let lessor = Lessor::builder().clock(clock.clone()).open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// let opts = KeepAliveOptions::new().run_for(Duration::from_secs(5));
    /// let ka = lessor.keep_alive_with(lease.id, opts)?;
    ///
    /// clock.advance(Duration::from_secs(5)); // the thread renews a last time, and finishes
    /// for _ in ka.responses() {} // drains the responses until the channel disconnects
    /// assert_eq!(ka.ended(), Some(EndReason::Finished));
    /// assert_eq!(lessor.time_to_live(lease.id)?.remaining, Duration::from_secs(10));
    /// # Ok(()) }
    /// ```
    pub fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        self.readable()?;
        keepalive::start(&self.handle.engine, id, opts)
    }

    /// Revokes a lease: deletes it and every key attached to it, in one transaction. Returns the
    /// revision after the revocation (advanced by one if any key was deleted).
    ///
    /// A lease that has expired but not yet been revoked can still be revoked this way.
    ///
    /// Under [`Durability::Immediate`](crate::Durability::Immediate) the lease stays alive to
    /// every other caller (listed, renewable, its keys readable) until the call returns, when the
    /// revocation is durable; a request that would use it meanwhile (a put with it, a second
    /// revocation) already finds it revoked. Under
    /// [`Durability::Batched`](crate::Durability::Batched) it is gone at once.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if there is no such lease (or its revocation is already under
    /// way), [`Error::Closed`], [`Error::Poisoned`]. If the flush fails ([`Error::Storage`],
    /// which poisons the lessor), the revocation did not happen: the lease lives on as before.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let session = lessor.grant(Duration::from_secs(30))?;
    /// lessor.put_with_lease("/sessions/42/user", "ada", session.id)?;
    /// lessor.put_with_lease("/sessions/42/cart", "[]", session.id)?;
    /// let rev = lessor.revoke(session.id)?; // log out: both keys go, in one revision
    /// assert_eq!(rev.get(), 3);
    /// assert!(lessor.range("/sessions/42/")?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn revoke(&self, id: LeaseId) -> Result<Revision> {
        let core = self.core()?;
        let revision = core.revoke(id)?;
        // A lease with more keys than `revoke_chunk_size`: they are hidden already, and deleted
        // here, chunk by chunk, before the call returns (`reap.rs`). The revocation stands
        // whatever happens to them: if storage fails meanwhile, the ticker finishes them once
        // the database is reloaded, so this call still reports the revocation it made.
        if let Err(e) = crate::reap::lease(core, id) {
            tracing::warn!(lease = id.get(), error = %e, "deleting a revoked lease's keys failed; resumed later");
            core.wake_ticker(0);
        }
        Ok(revision)
    }

    /// Revokes every lease whose deadline has passed, in deadline order (ties by id), in batches
    /// of [`Builder::expiry_batch_size`](crate::Builder::expiry_batch_size) per transaction. Returns the revoked ids in that order.
    /// This is what the ticker does; call it yourself when built with `ticker(false)`.
    ///
    /// # Errors
    /// [`Error::Storage`] if a batch fails to commit: the batch's leases stay dead (renew refuses
    /// them) and are revoked first at the next call. [`Error::Closed`].
    pub fn revoke_expired(&self) -> Result<Vec<LeaseId>> {
        let core = self.core()?;
        let mut all = Vec::new();
        core.expire_all(|batch| all.extend_from_slice(batch))?;
        // The keys left of leases with too many to revoke in one request (see
        // `Builder::revoke_chunk_size`), chunk by chunk.
        crate::reap::all(core)?;
        Ok(all)
    }

    /// What is known of a live lease: its granted TTL and the time it has left, without its
    /// keys (`keys` is empty): from memory, O(1), taking no lock, as etcd's `TimeToLive` without
    /// `WithAttachedKeys`. [`time_to_live_with_keys`](Self::time_to_live_with_keys) lists them.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if it is not alive, [`Error::Closed`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(60))?;
    /// let info = lessor.time_to_live(lease.id)?;
    /// assert_eq!(info.ttl, Duration::from_secs(60));
    /// assert!(info.remaining <= Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.readable()?.time_to_live(id, false)
    }

    /// [`time_to_live`](Self::time_to_live), with the keys attached to the lease, in key order
    /// (etcd's `WithAttachedKeys`). Costs a read of the lease's index: O(keys).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if it is not alive, [`Error::Storage`], [`Error::Closed`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(60))?;
    /// lessor.put_with_lease("/workers/7", "up", lease.id)?;
    /// let info = lessor.time_to_live_with_keys(lease.id)?;
    /// assert_eq!(info.keys, vec![b"/workers/7".to_vec()]);
    /// # Ok(()) }
    /// ```
    pub fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.readable()?.time_to_live(id, true)
    }

    /// Ids of the live leases, ascending; from memory, taking no lock but each shard's.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn leases(&self) -> Result<Vec<LeaseId>> {
        let core = self.readable()?;
        Ok(core.table.alive_ids(core.now()))
    }

    /// Writes `key = value` attached to lease `id`: the key is deleted when the lease ends.
    /// Returns the new revision. A key attached to another lease moves to this one.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is not alive; [`Error::InvalidKey`],
    /// [`Error::KeyTooLarge`], [`Error::ValueTooLarge`], [`Error::Storage`], [`Error::Closed`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let instance = lessor.grant(Duration::from_secs(10))?;
    /// let rev = lessor.put_with_lease("/services/api/1", "10.0.0.7:8080", instance.id)?;
    /// let kv = lessor.get("/services/api/1")?.unwrap();
    /// assert_eq!((kv.lease, kv.create_revision, kv.version), (Some(instance.id), rev, 1));
    /// # Ok(()) }
    /// ```
    pub fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        id: LeaseId,
    ) -> Result<Revision> {
        self.core()?.put(key.as_ref(), value.as_ref(), Some(id))
    }

    /// Writes `key = value` with no lease: the key stays until deleted. As in etcd, a key that
    /// was attached to a lease is detached from it. Returns the new revision.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`],
    /// [`Error::Storage`], [`Error::Closed`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        self.core()?.put(key.as_ref(), value.as_ref(), None)
    }

    /// Reads one key.
    ///
    /// Keys of a lease that has expired but that the ticker has not revoked yet are still
    /// returned (as in etcd); they go within milliseconds when the ticker runs.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupted`], [`Error::Closed`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        let key = key.as_ref();
        self.readable()?
            .read(Query::Key(key), |view, _| view.get(key))
    }

    /// Reads every key that starts with `prefix`, in key order (`""` reads them all).
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupted`], [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// lessor.put("/cron/b", "2")?;
    /// lessor.put("/cron/a", "1")?;
    /// lessor.put("/other", "3")?;
    /// let keys: Vec<_> = lessor.range("/cron/")?.into_iter().map(|kv| kv.key).collect();
    /// assert_eq!(keys, vec![b"/cron/a".to_vec(), b"/cron/b".to_vec()]);
    /// # Ok(()) }
    /// ```
    pub fn range(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KeyValue>> {
        let prefix = prefix.as_ref();
        self.readable()?
            .read(Query::Prefix(prefix), |view, _| view.range(prefix))
    }

    /// Reads every key that starts with `prefix`, with the revision the read saw: watching
    /// from the revision after it ([`Revision::next`]) continues exactly where the read left
    /// off, missing nothing and repeating nothing.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupted`], [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// lessor.put("/services/api/1", "10.0.0.7:8080")?;
    /// let snapshot = lessor.range_with_revision("/services/")?;
    /// let watch = lessor.watch_from("/services/", snapshot.revision.next())?;
    /// lessor.put("/services/api/2", "10.0.0.8:8080")?;
    /// assert_eq!(snapshot.kvs.len(), 1);
    /// assert_eq!(watch.recv().unwrap().key(), b"/services/api/2");
    /// # Ok(()) }
    /// ```
    pub fn range_with_revision(&self, prefix: impl AsRef<[u8]>) -> Result<Snapshot> {
        let prefix = prefix.as_ref();
        self.readable()?
            .read(Query::Prefix(prefix), |view, revision| {
                Ok(Snapshot {
                    revision: Revision(revision),
                    kvs: view.range(prefix)?,
                })
            })
    }

    /// Reads every key from `start` up to `end`, in key order, with the revision the read saw:
    /// etcd's range `[key, range_end)`. `end` is excluded; `None` reads every key from `start`
    /// on. A prefix is the range from the prefix to the first key after all the keys that
    /// start with it; [`range_with_revision`](Self::range_with_revision) does that for you.
    /// An `end` at or before `start` reads nothing.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupted`], [`Error::Closed`].
    ///
    /// ```
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// for key in ["/jobs/1", "/jobs/2", "/jobs/3"] {
    ///     lessor.put(key, "queued")?;
    /// }
    /// let snapshot = lessor.range_between("/jobs/2", Some(b"/jobs/3"))?;
    /// let keys: Vec<_> = snapshot.kvs.into_iter().map(|kv| kv.key).collect();
    /// assert_eq!(keys, vec![b"/jobs/2".to_vec()]);
    /// assert_eq!(lessor.range_between("/jobs/2", None)?.kvs.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn range_between(&self, start: impl AsRef<[u8]>, end: Option<&[u8]>) -> Result<Snapshot> {
        let start = start.as_ref();
        self.readable()?
            .read(Query::Between(start, end), |view, revision| {
                Ok(Snapshot {
                    revision: Revision(revision),
                    kvs: view.range_between(start, end)?,
                })
            })
    }

    /// Reads a page of the keys from `start` up to `end` (etcd's range `[key, range_end)`, as
    /// in [`range_between`](Self::range_between)): the first keys in the order `options` asks,
    /// at most its limit, and the number of keys in the whole range, all at one revision. This
    /// is etcd's range with a limit, `count` and `more`.
    ///
    /// It costs what it returns: only the keys returned are read whole; every other key of the
    /// range is counted without reading its value. `RangeOptions::new().limit(0)` only counts.
    /// An `end` at or before `start` reads nothing.
    ///
    /// Records are checked (checksums, leases) for the keys returned, as every read checks
    /// them; the keys only counted are not read, so damage to them is reported by the reads
    /// that return them, or by [`verify`](Self::verify).
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Corrupted`], [`Error::Closed`].
    ///
    /// ```
    /// use lessor::{Lessor, RangeOptions};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// for i in 0..5 {
    ///     lessor.put(format!("/jobs/{i}"), "queued")?;
    /// }
    /// lessor.put("/other", "x")?;
    ///
    /// // The last two jobs, last first, out of the five.
    /// let options = RangeOptions::new().limit(2).descending(true);
    /// let page = lessor.range_page("/jobs/", Some(b"/jobs0"), options)?;
    /// let keys: Vec<_> = page.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    /// assert_eq!(keys, [b"/jobs/4".as_slice(), b"/jobs/3"]);
    /// assert_eq!((page.count, page.more), (5, true));
    ///
    /// // Only the count, with no end: every key from "/jobs/3" on.
    /// let page = lessor.range_page("/jobs/3", None, RangeOptions::new().limit(0))?;
    /// assert_eq!((page.kvs.len(), page.count), (0, 3));
    /// assert_eq!(page.revision, lessor.revision()?);
    /// # Ok(()) }
    /// ```
    pub fn range_page(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        options: RangeOptions,
    ) -> Result<Page> {
        let start = start.as_ref();
        self.readable()?
            .read(Query::Between(start, end), |view, revision| {
                let (kvs, count) = view.page(start, end, options)?;
                Ok(Page {
                    more: count > kvs.len() as u64,
                    kvs,
                    count,
                    revision: Revision(revision),
                })
            })
    }

    /// Watches the keys that start with `prefix` (`""`: every key) from the next change on.
    /// See [`Watch`].
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn watch(&self, prefix: impl AsRef<[u8]>) -> Result<Watch> {
        self.core()?.watch(prefix.as_ref(), false, None)
    }

    /// Watches one key, `key` itself and no other, from the next change on. A [`watch`](Lessor::watch)
    /// of `/cron/lock/job1` is a prefix watch and sees `/cron/lock/job10` too; this one does not.
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// ```
    /// use lessor::Lessor;
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let watch = lessor.watch_key("/cron/lock/job1")?;
    /// lessor.put("/cron/lock/job10", "other")?;
    /// lessor.put("/cron/lock/job1", "mine")?;
    /// assert_eq!(watch.recv().unwrap().key(), b"/cron/lock/job1");
    /// assert!(watch.try_recv().is_err());
    /// # Ok(()) }
    /// ```
    pub fn watch_key(&self, key: impl AsRef<[u8]>) -> Result<Watch> {
        self.core()?.watch(key.as_ref(), true, None)
    }

    /// Watches the keys that start with `prefix` from revision `from` on: the changes since
    /// `from` that are still in the watch history come first, then live ones.
    ///
    /// The history is kept in memory, for the last [`Builder::watch_history`](crate::Builder::watch_history) events; it starts
    /// empty when the database is opened.
    ///
    /// # Errors
    /// [`Error::Compacted`] if the history no longer reaches back to `from`; [`Error::Closed`].
    pub fn watch_from(&self, prefix: impl AsRef<[u8]>, from: Revision) -> Result<Watch> {
        self.core()?.watch(prefix.as_ref(), false, Some(from.get()))
    }

    /// Subscribes to lease events: every grant and every revocation (with its keys and whether
    /// it was revoked or expired), in commit order, from now on.
    ///
    /// The channel holds [`Builder::event_buffer`](crate::Builder::event_buffer) events. A subscriber that falls further
    /// behind never slows the lessor down: the events it had no room for are dropped and a
    /// [`LeaseEvent::Lagged`](crate::LeaseEvent::Lagged) tells it how many, then events continue. Drop the [`LeaseEvents`] to
    /// unsubscribe. The events end when the lessor closes. See [`LeaseEvents`] for the ways
    /// to read them (blocking, `select!`, or as a `Stream`).
    ///
    /// # Errors
    /// [`Error::Closed`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{LeaseEvent, Lessor, RevokeCause};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let events = lessor.subscribe()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// lessor.put_with_lease("/workers/7", "up", lease.id)?;
    /// lessor.revoke(lease.id)?;
    /// assert!(matches!(events.recv(), Ok(LeaseEvent::Granted { id, .. }) if id == lease.id));
    /// let Ok(LeaseEvent::Revoked { keys, cause, .. }) = events.recv() else { panic!() };
    /// assert_eq!((keys, cause), (vec![b"/workers/7".to_vec()], RevokeCause::Revoked));
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self) -> Result<LeaseEvents> {
        self.core()?.subscribe()
    }

    /// Runs an etcd-style transaction ([`Txn`]): `when` every comparison holds, `then` its ops,
    /// `otherwise` the others; all in one request, committed durably, its writes at one revision.
    /// A transaction with no comparisons succeeds.
    ///
    /// The classic use is a lock: create the key only if it does not exist, attached to the
    /// holder's lease, and read who holds it either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{Compare, Lessor, Op, OpResponse, Txn};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let me = lessor.grant(Duration::from_secs(10))?;
    /// let got = lessor
    ///     .txn(Txn::new()
    ///     .when(Compare::absent("/cron/lock/job1"))
    ///     .then(Op::put_with_lease("/cron/lock/job1", "worker-1", me.id))
    ///     .otherwise(Op::get("/cron/lock/job1"))
    ///     )?;
    /// assert!(got.succeeded);
    /// // The fencing token: the revision that created the lock key.
    /// let token = lessor.get("/cron/lock/job1")?.unwrap().create_revision;
    /// assert_eq!(token, got.revision);
    ///
    /// let other = lessor.grant(Duration::from_secs(10))?;
    /// let lost = lessor
    ///     .txn(Txn::new()
    ///     .when(Compare::absent("/cron/lock/job1"))
    ///     .then(Op::put_with_lease("/cron/lock/job1", "worker-2", other.id))
    ///     .otherwise(Op::get("/cron/lock/job1"))
    ///     )?;
    /// assert!(!lost.succeeded);
    /// let OpResponse::Get(Some(holder)) = &lost.responses[0] else { panic!() };
    /// assert_eq!(holder.value, b"worker-1");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if an op that runs puts with a lease that is not alive (nothing
    /// is written then); [`Error::InvalidKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`]
    /// for any key or value of any op or comparison, and [`Error::InvalidKey`] if a branch
    /// writes (puts or deletes) one key twice (all checked before anything runs);
    /// [`Error::Storage`], [`Error::Closed`].
    pub fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.core()?.txn(&txn)
    }

    /// Deletes a key (detaching it from its lease). Returns whether it existed; deleting a key
    /// advances the revision, deleting a missing one does not.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::KeyTooLarge`], [`Error::Storage`], [`Error::Closed`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.core()?.delete(key.as_ref())
    }

    /// Attaches existing keys to lease `id`, moving any that belong to another lease. All or
    /// nothing. Values and revisions are unchanged, so this is not a watch event (etcd has no
    /// attach: there a key changes lease only by a put, which a watch sees).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is not alive, [`Error::KeyNotFound`] if a key does
    /// not exist (nothing is attached then), [`Error::InvalidKey`], [`Error::KeyTooLarge`],
    /// [`Error::Storage`], [`Error::Closed`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// lessor.put("/jobs/7/state", "running")?;
    /// let worker = lessor.grant(Duration::from_secs(10))?;
    /// lessor.attach(worker.id, ["/jobs/7/state"])?; // now it dies with the worker
    /// assert_eq!(lessor.time_to_live_with_keys(worker.id)?.keys, vec![b"/jobs/7/state".to_vec()]);
    /// lessor.detach(worker.id, ["/jobs/7/state"])?;
    /// assert!(lessor.time_to_live_with_keys(worker.id)?.keys.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn attach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        self.core()?.attach_or_detach(id, keys, true)
    }

    /// Detaches keys from lease `id`: they stay, attached to no lease. All or nothing.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is not alive, [`Error::KeyNotFound`],
    /// [`Error::KeyNotAttached`] if a key is not attached to this lease, [`Error::InvalidKey`],
    /// [`Error::KeyTooLarge`], [`Error::Storage`], [`Error::Closed`].
    pub fn detach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        self.core()?.attach_or_detach(id, keys, false)
    }

    /// The database's current revision.
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn revision(&self) -> Result<Revision> {
        self.readable()?
            .read(Query::Revision, |_, revision| Ok(Revision(revision)))
    }

    /// Checks the whole database: every attachment is two-sided (key and lease index agree),
    /// every key's lease exists, every record decodes (and matches its checksum), the counters
    /// are not behind the data, and the leases in memory are exactly those in the file; and, for
    /// a database in a file, redb's integrity check (every page's checksum, its allocator state)
    /// on a copy of the file taken between commits. Flushes batched changes first.
    ///
    /// So pages damaged while the lessor runs are found here, unless a commit has been written
    /// over them since: redb does not check a page's checksum when a write copies it, so damage
    /// in a page a later commit rewrote is in that commit, under a fresh checksum, and only the
    /// lessor's own checks (record checksums, the invariants above) can still see it.
    ///
    /// # Errors
    /// [`Error::Corrupted`] listing every problem found (as [`verify_report`](Self::verify_report)
    /// gives them, joined by "; "); [`Error::Storage`], [`Error::Closed`].
    pub fn verify(&self) -> Result<()> {
        let problems = self.verify_report()?;
        if problems.is_empty() {
            Ok(())
        } else {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Err(Error::Corrupted(problems.join("; ")))
        }
    }

    /// The checks of [`verify`](Self::verify), returning each problem found as its own line;
    /// empty when the database is consistent.
    ///
    /// ```
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// lessor.put("/k", "v")?;
    /// assert!(lessor.verify_report()?.is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Storage`] if the file cannot be read; [`Error::Closed`], [`Error::Poisoned`].
    pub fn verify_report(&self) -> Result<Vec<Problem>> {
        self.core()?.verify_report()
    }

    /// Makes every change acknowledged so far durable (one fsync), if any is not yet: with
    /// [`Durability::Batched`](crate::Durability::Batched), what a crash could otherwise lose. Returns at once when nothing
    /// waits (always, with [`Durability::Immediate`](crate::Durability::Immediate)).
    ///
    /// # Errors
    /// [`Error::Storage`] (which poisons the lessor), [`Error::Closed`].
    pub fn sync(&self) -> Result<()> {
        self.core()?.sync()
    }

    /// A snapshot of the lessor's counters and gauges: leases, keys, revision, file size;
    /// grants, renewals, revocations, expiries and how late they were; commits, fsyncs and
    /// their latency; failures and reloads. Counting costs renew one uncontended atomic add.
    ///
    /// # Errors
    /// [`Error::Storage`] reading the key counts, [`Error::Closed`], [`Error::Poisoned`].
    pub fn stats(&self) -> Result<Stats> {
        let core = self.readable()?;
        let stats = core.stats(self.health())?;
        #[cfg(feature = "metrics")]
        crate::stats::publish(&stats);
        Ok(stats)
    }

    /// After a storage failure (while [`Health::poisoned`]), reopens the database and brings
    /// memory back in line with the file at once, rather than waiting for the ticker's next
    /// attempt. The file is the truth: changes whose callers were told they failed are not
    /// there, and neither are [`Durability::Batched`](crate::Durability::Batched) changes that had not reached the disk.
    /// Leases that were renewed in memory keep their deadlines. Watches and subscriptions
    /// ended at the failure; new ones can be made once this returns. Does nothing if the
    /// lessor is not poisoned.
    ///
    /// # Errors
    /// The error reopening the database gave (the fault has not cleared; the lessor stays
    /// poisoned): [`Error::Storage`], [`Error::Io`], [`Error::Corrupted`] and others as for
    /// [`Builder::open`](crate::Builder::open); [`Error::Closed`].
    pub fn recover(&self) -> Result<()> {
        let engine = &*self.handle.engine;
        engine.check_readable()?;
        engine.reload().map(|_| ())
    }

    /// Whether the lessor can serve calls now, for a readiness probe: open, not poisoned by a
    /// failed write, and its ticker (which expires leases) running if it was built with one.
    /// No I/O; see [`LeaseStore::ready`](crate::LeaseStore::ready) and, for the details,
    /// [`health`](Lessor::health).
    ///
    /// ```
    /// use lessor::Lessor;
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// assert!(lessor.ready().is_ok());
    /// lessor.close()?;
    /// assert!(matches!(lessor.ready(), Err(lessor::Error::Closed)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::Poisoned`], [`Error::Unavailable`] if the ticker stopped
    /// (leases would no longer expire by themselves).
    pub fn ready(&self) -> Result<()> {
        let engine = &*self.handle.engine;
        engine.check_writable()?;
        let ticker = self.handle.ticker.lock();
        if engine.config.ticker
            && let Some(why) = crate::ticker::stopped(ticker.as_ref(), true)
        {
            return Err(Error::Unavailable(
                format!("the ticker is not running: {why}").into(),
            ));
        }
        Ok(())
    }

    /// The ticker's health: whether it runs, how many expiry batches failed, and whether a
    /// storage failure has the lessor waiting to reload its file.
    pub fn health(&self) -> Health {
        let core = &self.handle.engine;
        let ticker = self.handle.ticker.lock();
        core.health(
            ticker.as_ref().is_some_and(|t| !t.is_finished()),
            crate::ticker::stopped(ticker.as_ref(), core.config.ticker),
        )
    }

    /// Closes the lessor: stops and joins the ticker, revokes what has already expired (so that
    /// a clean close never gives an expired lease a new TTL at the next open), writes the exact
    /// deadline of every lease renewed since the last checkpoint (unless the restart policy is
    /// [`Reset`](crate::RestartPolicy::Reset)), and closes the file. Calls in flight finish
    /// first; later calls get [`Error::Closed`]. Calling it again does nothing. Dropping the
    /// last clone closes too, ignoring errors.
    ///
    /// # Errors
    /// [`Error::Storage`] if the final expiry or checkpoint could not be committed (those leases
    /// then come back as of what was committed before, at the next open).
    pub fn close(&self) -> Result<()> {
        self.handle.close()
    }
}

impl Handle {
    fn close(&self) -> Result<()> {
        // A second close waits for the first, so that the file is free when either returns.
        let _closing = self.closing.lock();
        let Some(was) = self.engine.begin_close() else {
            return Ok(());
        };
        let ticker = self.ticker.lock().take();
        if let Some(ticker) = ticker {
            ticker.stop();
        }
        self.engine
            .finish_close(was, crate::checkpoint::checkpoint_all)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl fmt::Debug for Lessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.handle.engine;
        f.debug_struct("Lessor")
            .field("path", &core.path)
            .field("open", &core.is_open())
            .field("leases", &core.table.len())
            .finish()
    }
}
