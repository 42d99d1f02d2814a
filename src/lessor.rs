//! [`Lessor`]: the handle, and the core every handle and the ticker share.
//!
//! # Implementation
//!
//! Shared state lives in [`Core`]:
//! - `table` ([`LeaseTable`]): live leases and their atomic deadlines. Renew finds its lease
//!   there without a lock and compare-and-swaps the deadline; it does nothing else.
//! - `store`: the redb database, `None` once closed. A flush holds its read lock while it writes;
//!   `close` and the reload take the write lock, so they wait for calls in flight.
//! - `writer` ([`Writer`]): the commit pipeline's state. Every mutating request is applied under
//!   it to the write buffer (`overlay.rs`), in microseconds and without I/O, and gets a sequence
//!   number; it also guards the counters (revision, highest lease id), the read snapshot of the
//!   file, and the leases whose expiry failed to commit.
//! - `syncer` ([`Syncer`]): which sequence numbers are durable, and who flushes (`durability.rs`).
//!   A flush freezes the buffer under `writer`, then writes it in one redb transaction with
//!   fsync holding no lock but the store's read lock, then installs the new snapshot under
//!   `writer`.
//! - `queue` ([`ExpiryQueue`]): an entry per live lease, by deadline.
//! - `state`: open, closed, or poisoned by a storage failure.
//!
//! Lock order: `store` (read) → `writer` → `queue` → a `table` shard's mutex; the syncer's mutex
//! and the keep-alive manager's mutex (`keepalives`) may be taken under `writer` and take nothing
//! under them. Nothing waits on a channel, reads the clock or does disk I/O while holding
//! `writer` or anything after it. Renew takes no lock.
//!
//! A request is all-or-nothing: its writes to the buffer are undone if it fails its checks, and
//! memory (the lease table) changes only once it has been applied (a revocation claims its
//! lease first, and gives it back if the request fails). Under [`Durability::Immediate`] a call
//! returns once a flush has made its request durable, and reads and events see nothing before
//! that; under [`Durability::Batched`] it returns once applied, and reads and events see it at
//! once. A storage error poisons the lessor until [`Core::reload`] has reopened the database and
//! brought memory back in line with the file (`reload.rs`); the ticker does that by itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, MutexGuard, RwLock};
use redb::{Database, ReadableDatabase};

use crate::builder::{Builder, Config};
use crate::clock::{now_nanos, wall_nanos};
use crate::durability::{
    Durability, FLUSH_BYTES, FLUSH_WRITES, MAX_BYTES, MAX_WRITES, Syncer, Ticket, Turn,
};
use crate::error::{Error, Result};
use crate::events::{Change, Hub, LeaseEvent, RevokeCause};
use crate::expiry::ExpiryQueue;
use crate::keepalive::{self, EndReason, KeepAlive, KeepAliveOptions, KeepAlives};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::lease_table::{LeaseTable, Sweep, deadline_after, room_for_grant};
use crate::overlay::{Base, Layers, Overlay, Tables};
use crate::record::LeaseRecord;
use crate::recovery;
use crate::reload::{self, Source};
use crate::restart::Checkpointing;
use crate::stats::{Metrics, Stats};
use crate::store::{self, Counters};
use crate::ticker::Ticker;
use crate::txn::{Txn, TxnRequest, TxnResult};
use crate::watch::Watch;

/// A handle to an open lease database: grant, renew and revoke leases, and read and write the
/// keys attached to them.
///
/// `Lessor` is `Clone + Send + Sync`; clones share one database. Every method is synchronous.
/// Mutating calls return once their change is durable on disk (one redb commit with fsync);
/// [`renew`](Lessor::renew) touches no disk at all. Unless built with
/// [`Builder::ticker(false)`](Builder::ticker), a background thread revokes leases as they
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
    core: Arc<Core>,
    /// The ticker thread, until close joins it.
    ticker: Mutex<Option<Ticker>>,
    /// Held for the whole of `close`.
    closing: Mutex<()>,
}

/// A value on cache lines of its own, so that writes to it do not slow readers of neighbours.
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// State shared by every handle and the ticker thread; see the module docs.
pub(crate) struct Core {
    pub(crate) config: Config,
    /// `Some` for a file-backed database; for messages and `Debug`.
    path: Option<PathBuf>,
    /// Where the database is opened again from after a storage failure (`reload.rs`).
    source: Source,
    /// [`OPEN`], [`CLOSED`] (by `close`) or [`POISONED`] (by a failed commit); every public call
    /// checks it first.
    state: AtomicU8,
    /// Live leases; the renew path.
    pub(crate) table: LeaseTable,
    // The three locks below are written by every read or mutation; padding keeps them off the
    // cache lines renew reads (`state`, `config.clock`, `table`).
    /// The database; `None` once closed.
    store: Padded<RwLock<Option<Database>>>,
    /// The commit pipeline's state: applies requests one at a time, and guards the write
    /// buffer, the read snapshot and the counters.
    writer: Padded<Mutex<Writer>>,
    /// One entry per live lease, by deadline.
    queue: Padded<Mutex<ExpiryQueue>>,
    /// Hands committed changes to subscribers and watchers.
    hub: Arc<Hub>,
    /// Which requests are durable, and who flushes (group commit).
    syncer: Padded<Syncer>,
    /// Requests between entering [`Core::write`] and being applied: a flush leader under
    /// [`Durability::Immediate`] lets them join its group before it freezes the buffer.
    entering: Padded<AtomicUsize>,
    /// How long the last flush took, in nanoseconds: bounds how long a leader gathers.
    last_flush: AtomicU64,
    /// Wakes the ticker when a grant creates a deadline earlier than the one it sleeps until.
    ticker_wake: Option<Sender<()>>,
    /// The deadline the ticker sleeps until; `u64::MAX` while it is awake or has nothing queued.
    pub(crate) ticker_sleeps_until: Padded<AtomicU64>,
    /// `Writer::high_water`, readable without the lock: every clock reading is raised to it,
    /// so that a clock that steps back cannot have expiry end a lease granted or renewed since
    /// before its TTL. Written only by the expiry path.
    time_floor: Padded<AtomicU64>,
    /// Failed expiry batches (and reload attempts) since open, and the last failure's message.
    pub(crate) ticker_failures: Padded<AtomicU64>,
    pub(crate) ticker_last_error: Mutex<Option<String>>,
    /// Storage failures since open, and successful reloads after them.
    failures: AtomicU64,
    reloads: AtomicU64,
    /// Counters and histograms for [`Lessor::stats`] (`stats.rs`).
    pub(crate) metrics: Padded<Metrics>,
    /// Keep-alives and their thread (`keepalive.rs`); its mutex comes after `writer`.
    pub(crate) keepalives: Padded<KeepAlives>,
    /// Where this session is on the database's uptime, and what its checkpoints wrote.
    checkpointing: Checkpointing,
}

/// Longest a flush leader waits for writers already entering [`Core::write`] to join its group.
const GATHER: Duration = Duration::from_millis(1);

/// `Core::state`: open for business.
const OPEN: u8 = 0;
/// `Core::state`: closed by `close` or by dropping the last handle.
const CLOSED: u8 = 1;
/// `Core::state`: a write failed in storage; redb needs a reopen, and memory may no longer match
/// the file, so every call refuses until [`Core::reload`] has reopened it.
const POISONED: u8 = 2;

/// Guarded by `Core::writer`.
struct Writer {
    /// As of the last request applied.
    counters: Counters,
    /// Requests applied since open; the sequence numbers the syncer counts durability in.
    seq: u64,
    /// The write buffer filling now (`overlay.rs`).
    active: Overlay,
    /// The buffer a flush is writing, readable until the snapshot that holds it is installed.
    frozen: Option<Arc<Overlay>>,
    /// A read snapshot of the file as of its last commit.
    base: Arc<Base>,
    /// When the first write went into `active`; `None` while it is empty.
    active_since: Option<Instant>,
    /// The sequence number of the last request frozen for a flush.
    frozen_upto: u64,
    /// Requests the last flush made durable: a leader waits (briefly) for as many.
    last_group: u64,
    /// Leases claimed for expiry whose revocation did not commit, or restored at open with
    /// nothing left; revoked first next time.
    retry: Vec<LeaseId>,
    /// The highest time the expiry path has seen: a clock that steps back cannot undo it.
    high_water: u64,
    /// The deadlines of leases claimed by expiry and not yet revoked, for the lateness
    /// histogram; cleared by each committed expiry batch.
    claimed_deadlines: Vec<(LeaseId, u64)>,
}

/// A snapshot of the ticker's health, from [`Lessor::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the ticker thread is running (`false` if built without one, or once closed).
    pub ticker_running: bool,
    /// Expiry batches that failed to commit since open; each is retried with backoff.
    pub ticker_failures: u64,
    /// The last such failure.
    pub last_ticker_error: Option<String>,
    /// Whether a write failed in storage and the database has not been reloaded since: every
    /// call returns [`Error::Poisoned`] meanwhile. The ticker reloads it (retrying with
    /// backoff while the fault lasts); [`Lessor::recover`] does it at once.
    pub poisoned: bool,
    /// Writes that failed in storage since open (each poisoned the lessor).
    pub storage_failures: u64,
    /// Reloads from the file after such failures since open.
    pub reloads: u64,
    /// Checkpoint transactions committed since open; always 0 under
    /// [`RestartPolicy::Reset`](crate::RestartPolicy::Reset).
    pub checkpoints: u64,
    /// Lease records those checkpoints wrote: one per lease renewed since its last checkpoint.
    pub checkpointed_leases: u64,
}

impl Lessor {
    /// Opens (or creates) the database file at `path` with the default settings: a background
    /// ticker, the system clock, TTLs from 10 ms to etcd's maximum. See [`Builder::open`].
    ///
    /// # Errors
    /// As [`Builder::open`]: [`Error::AlreadyOpen`], [`Error::Io`], [`Error::Corrupted`],
    /// [`Error::NotLessorDatabase`], [`Error::IncompatibleFormat`].
    pub fn open(path: impl AsRef<Path>) -> Result<Lessor> {
        Builder::new().open(path)
    }

    /// Opens a lessor with the default settings whose database lives only in memory; see
    /// [`Builder::open_in_memory`].
    ///
    /// # Errors
    /// [`Error::Storage`] if the in-memory database cannot be set up.
    pub fn open_in_memory() -> Result<Lessor> {
        Builder::new().open_in_memory()
    }

    /// A [`Builder`] for other settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn open_with(config: Config, db: Database, source: Source) -> Result<Lessor> {
        let clock = &*config.clock;
        let (now, wall) = (now_nanos(clock), wall_nanos(clock));
        let started = Instant::now();
        let recovered = recovery::recover(&db, config.restart_policy, now, wall)?;
        tracing::info!(
            leases = recovered.table.len(),
            expired = recovered.expired.len(),
            revision = recovered.counters.revision,
            took_ms = started.elapsed().as_millis() as u64,
            "lessor database opened"
        );
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let hub = Arc::new(Hub::new(
            recovered.counters.revision,
            config.event_buffer,
            config.watch_history,
            config.watch_history_bytes,
        ));
        let base = Arc::new(Base::open(&db)?);
        let core = Arc::new(Core {
            hub,
            syncer: Padded(Syncer::new(config.durability)),
            entering: Padded(AtomicUsize::new(0)),
            last_flush: AtomicU64::new(0),
            path: match &source {
                Source::File(path) => Some(path.clone()),
                Source::Backend(_) => None,
            },
            source,
            state: AtomicU8::new(OPEN),
            table: recovered.table,
            store: Padded(RwLock::new(Some(db))),
            writer: Padded(Mutex::new(Writer {
                counters: recovered.counters,
                seq: 0,
                active: Overlay::default(),
                frozen: None,
                base,
                active_since: None,
                frozen_upto: 0,
                last_group: 0,
                retry: recovered.expired,
                high_water: 0,
                claimed_deadlines: Vec::new(),
            })),
            queue: Padded(Mutex::new(recovered.queue)),
            ticker_wake: config.ticker.then_some(wake_tx),
            ticker_sleeps_until: Padded(AtomicU64::new(u64::MAX)),
            time_floor: Padded(AtomicU64::new(0)),
            ticker_failures: Padded(AtomicU64::new(0)),
            ticker_last_error: Mutex::new(None),
            failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            metrics: Padded(Metrics::new()),
            keepalives: Padded(KeepAlives::new()),
            checkpointing: recovered.checkpointing,
            config,
        });
        let ticker = if core.config.ticker {
            Some(Ticker::spawn(Arc::clone(&core), wake_rx).map_err(Error::Spawn)?)
        } else {
            None
        };
        Ok(Lessor {
            handle: Arc::new(Handle {
                core,
                ticker: Mutex::new(ticker),
                closing: Mutex::new(()),
            }),
        })
    }

    /// The core, for a call that writes: refused once closed, and while poisoned.
    fn core(&self) -> Result<&Core> {
        let core = &*self.handle.core;
        match core.state.load(Ordering::Acquire) {
            OPEN => Ok(core),
            POISONED => Err(Error::Poisoned),
            _ => Err(Error::Closed),
        }
    }

    /// The core, for a call that only reads or renews: refused once closed. While poisoned it
    /// still answers, from memory and from what the file held before the failure (plus, under
    /// [`Durability::Batched`], the acknowledged writes still waiting for their flush), so that
    /// healthy holders keep their leases while the disk fails.
    fn readable(&self) -> Result<&Core> {
        let core = &*self.handle.core;
        match core.state.load(Ordering::Acquire) {
            OPEN | POISONED => Ok(core),
            _ => Err(Error::Closed),
        }
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
    /// until `at` plus its TTL; the keep-alive then ends with [`EndReason::Finished`].
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
        keepalive::start(&self.handle.core, id, opts)
    }

    /// Revokes a lease: deletes it and every key attached to it, in one transaction. Returns the
    /// revision after the revocation (advanced by one if any key was deleted).
    ///
    /// A lease that has expired but not yet been revoked can still be revoked this way.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if there is no such lease, [`Error::Closed`]. If the transaction
    /// fails ([`Error::Storage`], which poisons the lessor, or [`Error::Corrupted`]), the lease is
    /// dead from the call on (renew refuses it) and is revoked by expiry at its deadline, or
    /// restored with the file's state at the next open.
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
        self.core()?.revoke(id)
    }

    /// Revokes every lease whose deadline has passed, in deadline order (ties by id), in batches
    /// of [`Builder::expiry_batch_size`] per transaction. Returns the revoked ids in that order.
    /// This is what the ticker does; call it yourself when built with `ticker(false)`.
    ///
    /// # Errors
    /// [`Error::Storage`] if a batch fails to commit: the batch's leases stay dead (renew refuses
    /// them) and are revoked first at the next call. [`Error::Closed`].
    pub fn revoke_expired(&self) -> Result<Vec<LeaseId>> {
        let core = self.core()?;
        let mut all = Vec::new();
        core.expire_all(|batch| all.extend_from_slice(batch))?;
        Ok(all)
    }

    /// What is known of a live lease: its granted TTL, the time it has left, and its keys.
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
    /// let info = lessor.time_to_live(lease.id)?;
    /// assert_eq!(info.granted_ttl, Duration::from_secs(60));
    /// assert!(info.remaining <= Duration::from_secs(60));
    /// assert_eq!(info.keys, vec![b"/workers/7".to_vec()]);
    /// # Ok(()) }
    /// ```
    pub fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let core = self.readable()?;
        let now = core.now();
        core.read(|view, _| {
            let (ttl, deadline) = core.table.alive(id, now).ok_or(Error::LeaseNotFound(id))?;
            Ok(LeaseInfo {
                id,
                granted_ttl: Duration::from_nanos(ttl),
                remaining: Duration::from_nanos(deadline.saturating_sub(now).min(ttl)),
                keys: view.lease_keys(id)?,
            })
        })
    }

    /// Ids of the live leases, ascending. Empty once closed.
    pub fn leases(&self) -> Vec<LeaseId> {
        match self.readable() {
            Ok(core) => core.table.alive_ids(core.now()),
            Err(_) => Vec::new(),
        }
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
        self.readable()?.read(|view, _| view.get(key.as_ref()))
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
        self.readable()?.read(|view, _| view.range(prefix.as_ref()))
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
        self.readable()?.read(|view, revision| {
            Ok(Snapshot {
                revision: Revision(revision),
                kvs: view.range(prefix.as_ref())?,
            })
        })
    }

    /// Watches the keys that start with `prefix` (`""`: every key) from the next change on.
    /// See [`Watch`].
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn watch(&self, prefix: impl AsRef<[u8]>) -> Result<Watch> {
        self.core()?.watch(prefix.as_ref(), None)
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
        self.core()?.watch(prefix.as_ref(), Some(from.get()))
    }

    /// Subscribes to lease events: every grant and every revocation (with its keys and whether
    /// it was revoked or expired), in commit order, from now on.
    ///
    /// The channel holds [`Builder::event_buffer`](crate::Builder::event_buffer) events. A subscriber that falls further
    /// behind never slows the lessor down: the events it had no room for are dropped and a
    /// [`LeaseEvent::Lagged`] tells it how many, then events continue. Drop the receiver to
    /// unsubscribe. The channel closes when the lessor does.
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
    pub fn subscribe(&self) -> Result<Receiver<LeaseEvent>> {
        self.core()?.hub.subscribe().ok_or(Error::Closed)
    }

    /// Starts an etcd-style transaction; see [`Txn`].
    pub fn txn(&self) -> Txn<'_> {
        Txn::new(self)
    }

    pub(crate) fn commit_txn(&self, spec: &TxnRequest) -> Result<TxnResult> {
        let core = self.core()?;
        spec.check(|k| core.config.check_key(k), |v| core.config.check_value(v))?;
        let now = core.now();
        let (w, result, ticket) = core.write(|_, b| spec.run(b, |id| core.check_alive(id, now)));
        let revision = Revision(w.counters.revision);
        core.finish(w, ticket)?;
        let (succeeded, responses) = result?;
        Ok(TxnResult {
            succeeded,
            revision,
            responses,
        })
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
    /// assert_eq!(lessor.time_to_live(worker.id)?.keys, vec![b"/jobs/7/state".to_vec()]);
    /// lessor.detach(worker.id, ["/jobs/7/state"])?;
    /// assert!(lessor.time_to_live(worker.id)?.keys.is_empty());
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
        self.readable()?.read(|_, revision| Ok(Revision(revision)))
    }

    /// Checks the whole database: every attachment is two-sided (key and lease index agree),
    /// every key's lease exists, every record decodes, the counters are not behind the data, and
    /// the leases in memory are exactly those in the file. Flushes batched changes first.
    ///
    /// # Errors
    /// [`Error::Corrupted`] listing every problem found (as [`verify_report`](Self::verify_report)
    /// gives them, joined by "; "); [`Error::Storage`], [`Error::Closed`].
    pub fn verify(&self) -> Result<()> {
        let problems = self.verify_report()?;
        if problems.is_empty() {
            Ok(())
        } else {
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
    pub fn verify_report(&self) -> Result<Vec<String>> {
        let core = self.core()?;
        // Everything applied goes to the file first; then, holding the writer (so that memory
        // and file stay still while they are compared), check that nothing came in meanwhile.
        for _ in 0..100 {
            core.sync()?;
            let guard = core.store.read();
            let db = guard.as_ref().ok_or(Error::Closed)?;
            let w = core.writer.lock();
            if !w.active.is_empty() || w.frozen.is_some() {
                continue;
            }
            let read = db.begin_read()?;
            let store::Report {
                mut problems,
                leases: on_disk,
            } = store::verify(&read)?;
            let in_memory = core.table.all_ids();
            if on_disk != in_memory {
                problems.push(format!(
                    "leases in memory ({}) differ from leases in the file ({})",
                    in_memory.len(),
                    on_disk.len()
                ));
            }
            drop(w);
            return Ok(problems);
        }
        Err(Error::Unavailable(
            "verify: writes kept coming; try again when the lessor is quieter".into(),
        ))
    }

    /// Makes every change acknowledged so far durable (one fsync), if any is not yet: with
    /// [`Durability::Batched`], what a crash could otherwise lose. Returns at once when nothing
    /// waits (always, with [`Durability::Immediate`]).
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
        let stats = self.readable()?.stats()?;
        #[cfg(feature = "metrics")]
        crate::stats::publish(&stats);
        Ok(stats)
    }

    /// After a storage failure (while [`Health::poisoned`]), reopens the database and brings
    /// memory back in line with the file at once, rather than waiting for the ticker's next
    /// attempt. The file is the truth: changes whose callers were told they failed are not
    /// there, and neither are [`Durability::Batched`] changes that had not reached the disk.
    /// Leases that were renewed in memory keep their deadlines. Watches and subscriptions
    /// ended at the failure; new ones can be made once this returns. Does nothing if the
    /// lessor is not poisoned.
    ///
    /// # Errors
    /// The error reopening the database gave (the fault has not cleared; the lessor stays
    /// poisoned): [`Error::Storage`], [`Error::Io`], [`Error::Corrupted`] and others as for
    /// [`Builder::open`]; [`Error::Closed`].
    pub fn recover(&self) -> Result<()> {
        let core = &*self.handle.core;
        match core.state.load(Ordering::Acquire) {
            CLOSED => Err(Error::Closed),
            _ => core.reload().map(|_| ()),
        }
    }

    /// The ticker's health: whether it runs, how many expiry batches failed, and whether a
    /// storage failure has the lessor waiting to reload its file.
    pub fn health(&self) -> Health {
        let core = &self.handle.core;
        Health {
            ticker_running: self
                .handle
                .ticker
                .lock()
                .as_ref()
                .is_some_and(|t| !t.is_finished()),
            ticker_failures: core.ticker_failures.load(Ordering::Relaxed),
            last_ticker_error: core.ticker_last_error.lock().clone(),
            poisoned: core.state.load(Ordering::Acquire) == POISONED,
            storage_failures: core.failures.load(Ordering::Relaxed),
            reloads: core.reloads.load(Ordering::Relaxed),
            checkpoints: core.checkpointing.batches(),
            checkpointed_leases: core.checkpointing.leases(),
        }
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
        let core = &*self.core;
        let was = core.state.swap(CLOSED, Ordering::AcqRel);
        if was == CLOSED {
            return Ok(());
        }
        let ticker = self.ticker.lock().take();
        if let Some(ticker) = ticker {
            ticker.stop();
        }
        core.keepalives.close(); // joins `lessor-keepalive`; keep-alives end `Closed`
        // Revoke what has expired, unless storage already failed (then the next open decides).
        let reaped = if was == POISONED {
            Ok(())
        } else {
            core.expire_all(|_| {})
        };
        // Then the deadlines renewed since the last checkpoint (nothing under Reset).
        let reaped = reaped.and_then(|()| match was {
            POISONED => Ok(()),
            _ => core.checkpoint_all(),
        });
        // What is buffered goes to disk; then, once no call is in flight, what came in meanwhile.
        let reaped = match was {
            POISONED => reaped,
            _ => reaped.and(core.sync()),
        };
        let db = core.store.write().take();
        let reaped = match &db {
            Some(db) if was != POISONED && core.syncer.lead() => {
                let flushed = core.flush_into(db);
                core.syncer.flush_ended();
                reaped.and(flushed)
            }
            _ => reaped,
        };
        core.syncer.close();
        core.table.clear();
        *core.queue.lock() = ExpiryQueue::new();
        core.hub.close();
        drop(db);
        core.source.close();
        reaped
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Core {
    /// The clock, in nanoseconds, raised to the time expiry has used (`time_floor`).
    pub(crate) fn now(&self) -> u64 {
        now_nanos(&*self.config.clock).max(self.time_floor.load(Ordering::Relaxed))
    }

    /// Runs `f` on what reads see, with the revision they see: under [`Durability::Immediate`]
    /// the file as of its last (durable) commit; under [`Durability::Batched`] every request
    /// applied, through the write buffer (read under the writer lock, which is never held
    /// across I/O).
    fn read<T>(&self, f: impl FnOnce(&Layers<'_>, u64) -> Result<T>) -> Result<T> {
        let read = self.read_snapshot(f);
        match self.state.load(Ordering::Acquire) {
            // While poisoned, the snapshot may belong to a database being reopened.
            POISONED => read.map_err(|_| Error::Poisoned),
            CLOSED => Err(Error::Closed),
            _ => read,
        }
    }

    fn read_snapshot<T>(&self, f: impl FnOnce(&Layers<'_>, u64) -> Result<T>) -> Result<T> {
        match self.syncer.mode() {
            Durability::Immediate => {
                let base = Arc::clone(&self.writer.lock().base);
                let view = Layers {
                    overlays: [None, None],
                    base: &base,
                };
                f(&view, base.revision)
            }
            Durability::Batched { .. } => {
                let w = self.writer.lock();
                let view = Layers {
                    overlays: [Some(&w.active), w.frozen.as_deref()],
                    base: &w.base,
                };
                f(&view, w.counters.revision)
            }
        }
    }

    /// Applies one request to the write buffer. `f` gets a [`Batch`]: the tables as every
    /// request applied before sees them, a copy of the counters to advance (kept only if `f`
    /// succeeds), and a list of the changes it makes, published once they are visible. If `f`
    /// fails, nothing it wrote is kept. Returns the writer, still locked, so that the caller
    /// updates memory (or undoes a claim) before anyone else writes.
    ///
    /// The third value is what the caller must [`Core::finish`] with once it has updated memory:
    /// under [`Durability::Immediate`], the flush that makes the request durable.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Writer, &mut Batch<'_>) -> Result<T>,
    ) -> (MutexGuard<'_, Writer>, Result<T>, Ticket) {
        let guard = self.store.read();
        self.entering.fetch_add(1, Ordering::AcqRel);
        let mut w = self.writer.lock();
        self.entering.fetch_sub(1, Ordering::AcqRel);
        if guard.is_none() {
            return (w, Err(Error::Closed), Ticket::DONE);
        }
        drop(guard);
        let mut active = std::mem::take(&mut w.active);
        let (frozen, base) = (w.frozen.clone(), Arc::clone(&w.base));
        active.begin();
        let mut batch = Batch {
            tables: Tables {
                active: &mut active,
                frozen: frozen.as_deref(),
                base: &base,
            },
            counters: w.counters,
            changes: Vec::new(),
            claims: Vec::new(),
        };
        let out = f(&mut w, &mut batch);
        let Batch {
            counters,
            changes,
            claims,
            ..
        } = batch;
        let mut ticket = Ticket::DONE;
        let result = match out {
            Ok(out) => {
                active.keep();
                w.counters = counters;
                w.seq += 1;
                ticket = self.syncer.ticket(w.seq);
                // Keep-alives hear of their lease's end before anyone can grant its id again.
                self.end_keep_alives(&changes);
                for c in &changes {
                    if let Change::Granted { id, ttl, .. } = c {
                        // In memory before anyone hears of it.
                        self.table.insert_pending(*id, *ttl);
                    }
                }
                match self.syncer.mode() {
                    // Published, and the revoked leases dropped from the table, by the flush
                    // that makes them durable; until then the leases stay claimed (dead).
                    Durability::Immediate => {
                        active.changes.extend(changes);
                        active.claims.extend(claims);
                    }
                    // Visible now: published under the writer lock, in order.
                    Durability::Batched { max_delay } => {
                        for (id, _) in claims {
                            self.table.remove(id);
                        }
                        self.hub.publish(changes);
                        let first = w.active_since.is_none() && !active.is_empty();
                        if first {
                            w.active_since = Some(Instant::now());
                        }
                        let (writes, bytes) = (active.writes(), active.bytes());
                        let full = writes >= FLUSH_WRITES || bytes >= FLUSH_BYTES;
                        let due = full || w.active_since.is_some_and(|t| t.elapsed() >= max_delay);
                        if writes >= MAX_WRITES
                            || bytes >= MAX_BYTES
                            || (due && self.ticker_wake.is_none())
                        {
                            // Back-pressure, or nobody else flushes: this call waits for one.
                            ticket = Ticket(Some(w.seq));
                        } else if first || full {
                            self.wake_ticker(0); // it flushes in time
                        }
                    }
                }
                Ok(out)
            }
            Err(e) => {
                active.rollback();
                Err(e)
            }
        };
        w.active = active;
        self.poison_on_storage_error(&result, w.seq);
        (w, result, ticket)
    }

    /// Releases the writer, then waits until the request of `ticket` is durable.
    fn finish(&self, w: MutexGuard<'_, Writer>, ticket: Ticket) -> Result<()> {
        drop(w);
        self.await_durable(ticket)
    }

    /// Waits until the request of `ticket` is durable, leading the flush that makes it so if
    /// nobody else is flushing (group commit: see `durability.rs`).
    fn await_durable(&self, ticket: Ticket) -> Result<()> {
        let Some(seq) = ticket.0 else {
            return Ok(());
        };
        loop {
            match self.syncer.turn(seq)? {
                Turn::Done => return Ok(()),
                Turn::Lead => {
                    let flushed = {
                        let guard = self.store.read();
                        match guard.as_ref() {
                            Some(db) => self.flush_into(db),
                            None => Err(Error::Closed),
                        }
                    };
                    self.syncer.flush_ended();
                    flushed?;
                }
            }
        }
    }

    /// Makes every request applied so far durable (one flush), if any is not.
    pub(crate) fn sync(&self) -> Result<()> {
        let seq = self.writer.lock().seq;
        if self.syncer.durable_seq() >= seq {
            return Ok(());
        }
        self.await_durable(Ticket(Some(seq)))
    }

    /// Before a leader freezes the buffer: lets writers on their way join the group. It waits,
    /// yielding, while requests are entering [`Core::write`] or fewer requests wait than the
    /// last group made durable (closed-loop callers come back with their next request right
    /// after their acknowledgement), for at most half the last flush's time and [`GATHER`].
    /// A lone caller (a last group of one, nobody entering) waits for nothing.
    fn gather(&self) {
        let last = Duration::from_nanos(self.last_flush.load(Ordering::Relaxed) / 2);
        let until = Instant::now() + last.min(GATHER);
        loop {
            let waiting = {
                let w = self.writer.lock();
                w.seq - w.frozen_upto >= w.last_group
            };
            let entering = self.entering.load(Ordering::Acquire) > 0;
            if (waiting && !entering) || Instant::now() >= until {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Writes the write buffer into `db` in one transaction, committed with fsync, and installs
    /// the new snapshot; then every request applied up to the freeze is durable. The caller is
    /// the one flushing (it led it, see [`Syncer`]); no lock is held while redb works.
    fn flush_into(&self, db: &Database) -> Result<()> {
        if self.syncer.mode() == Durability::Immediate {
            self.gather();
        }
        let (frozen, upto, counters) = {
            let mut w = self.writer.lock();
            w.last_group = w.seq - w.frozen_upto;
            w.frozen_upto = w.seq;
            if w.active.is_empty() {
                let seq = w.seq;
                drop(w);
                self.syncer.durable(seq);
                return Ok(());
            }
            let frozen = Arc::new(std::mem::take(&mut w.active));
            w.frozen = Some(Arc::clone(&frozen));
            w.active_since = None;
            (frozen, w.seq, w.counters)
        };
        let start = Instant::now();
        let committed = (|| {
            let mut txn = db.begin_write()?;
            frozen.write_to(&txn, counters)?;
            txn.set_durability(redb::Durability::Immediate)?;
            txn.commit()?;
            Base::open(db)
        })();
        let mut w = self.writer.lock();
        match committed {
            Ok(base) => {
                let took = start.elapsed();
                self.metrics.committed(took, true);
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                self.last_flush.store(nanos, Ordering::Relaxed);
                w.base = Arc::new(base);
                w.frozen = None;
                for &(id, _) in &frozen.claims {
                    // Unless a grant of the same id since replaced it.
                    self.table.remove_claimed(id);
                }
                if !frozen.changes.is_empty() {
                    // Durable now: visible, in order (flushes are one at a time).
                    let changes = match Arc::try_unwrap(frozen) {
                        Ok(o) => o.changes,
                        Err(shared) => shared.changes.clone(),
                    };
                    self.hub.publish(changes);
                }
                drop(w);
                self.syncer.durable(upto);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "a flush failed; reopening the database");
                match self.syncer.mode() {
                    // Its requests were acknowledged: keep them, under what came since, for
                    // the reload to write again. Waiters (sync, back-pressure) fail this time.
                    Durability::Batched { .. } => {
                        let since = w.active_since;
                        let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|o| o.duplicate());
                        let newer = std::mem::take(&mut w.active);
                        w.active = frozen.under(newer);
                        w.frozen = None;
                        w.active_since = Some(since.unwrap_or_else(Instant::now));
                        self.poison_with(&e, w.seq, false);
                    }
                    // Not acknowledged: their calls fail. Whatever the error, the buffer's fate on
                    // disk is unknown: the reload takes the file as the truth. Revocations whose
                    // calls fail give their leases back first, as they were (expiries stay
                    // claimed: revoked again).
                    Durability::Immediate => {
                        for &(id, prior) in frozen.claims.iter().chain(&w.active.claims) {
                            if let Some(prior) = prior {
                                self.table.unclaim(id, prior);
                            }
                        }
                        self.poison_with(&e, w.seq, true);
                    }
                }
                Err(e)
            }
        }
    }

    /// A storage error poisons: redb refuses further work after an I/O error, and a failed
    /// commit may or may not have reached the disk, so memory is not trusted until the file is
    /// reopened ([`Core::reload`]). Subscriptions and watches end (after what was committed)
    /// and waiters for fsyncs of commits up to `last_commit` are woken with an error. Call with
    /// the writer held.
    fn poison_on_storage_error<T>(&self, result: &Result<T>, last: u64) {
        if let Err(e @ Error::Storage(_)) = result {
            // A read of the file failed while applying a request: the buffer is intact, but
            // under Immediate nothing in it was acknowledged yet.
            let lost = self.syncer.mode() == Durability::Immediate;
            self.poison_with(e, last, lost);
        }
    }

    /// Poisons the lessor after `e`, waking the waiters of requests up to `last` with an error
    /// (for good if `lost`: those requests can never become durable); see
    /// [`poison_on_storage_error`](Self::poison_on_storage_error). Call with the writer held.
    fn poison_with(&self, e: &Error, last: u64, lost: bool) {
        self.syncer.fail(last, lost);
        let poisoned = self
            .state
            .compare_exchange(OPEN, POISONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if poisoned {
            tracing::error!(error = %e, "a write failed in storage; reloading the database");
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.hub.fail();
            self.wake_ticker(0); // it reloads
        }
    }

    /// Reopens the database after a storage failure and reconciles memory with the file (see
    /// `reload.rs`). `Ok(false)` if there was nothing to do (not poisoned).
    ///
    /// Takes the store's write lock, so no call is in flight while memory changes, then the
    /// writer and the queue, as every writer does.
    pub(crate) fn reload(&self) -> Result<bool> {
        let mut store = self.store.write();
        if self.state.load(Ordering::Acquire) != POISONED {
            return Ok(false);
        }
        // redb lets go of the file (or backend) only when its `Database` drops.
        drop(store.take());
        let db = self.source.open(&self.config)?;
        if let Durability::Batched { .. } = self.syncer.mode() {
            return self.reload_batched(store, db);
        }
        let clock = &*self.config.clock;
        let (now, wall) = (now_nanos(clock), wall_nanos(clock));
        let file = recovery::recover(&db, self.config.restart_policy, now, wall)?;
        let mut w = self.writer.lock();
        let plan = reload::plan(&self.table.entries(), &file.table.entries());
        for &id in &plan.lost {
            self.table.claim(id);
            self.table.remove(id);
        }
        {
            let mut queue = self.queue.lock();
            for &(id, ttl, word) in &plan.added {
                // Rewritten by the next checkpoint pass: the file's may be older.
                self.table.insert_checkpointed(id, ttl, word, 0);
                if let Some(deadline) = self.table.deadline_of(id) {
                    queue.push(deadline, id);
                }
            }
        }
        for &(id, word) in &plan.settle {
            if LeaseTable::is_claimed(word) {
                self.table.claim(id); // nothing left: revoked first (in `plan.retry`)
            } else if self.table.settle(id, word) {
                self.queue.lock().push(word, id);
            }
        }
        if self.config.restart_policy.checkpoints() {
            for &id in &plan.kept {
                self.table.forget_checkpoint(id);
            }
        }
        w.retry = plan.retry;
        // The buffer never reached the file (or did, and the file says so): the file is the truth.
        w.active = Overlay::default();
        w.frozen = None;
        w.active_since = None;
        w.frozen_upto = w.seq;
        w.base = Arc::new(Base::open(&db)?);
        w.counters.revision = w.counters.revision.max(file.counters.revision);
        w.counters.max_lease_id = w.counters.max_lease_id.max(file.counters.max_lease_id);
        self.syncer.reopen(Some(w.seq));
        self.hub.reopen(w.counters.revision);
        if !plan.lost.is_empty() {
            self.keepalives.leases_ended(&plan.lost, EndReason::Lost);
        }
        *store = Some(db);
        let reopened = self
            .state
            .compare_exchange(POISONED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let w_revision = w.counters.revision;
        drop(w);
        drop(store);
        if reopened {
            tracing::info!(
                lost = plan.lost.len(),
                back = plan.added.len(),
                kept = plan.kept.len(),
                revision = w_revision,
                "reloaded the database after a storage failure"
            );
            self.reloads.fetch_add(1, Ordering::Relaxed);
            self.wake_ticker(0); // leases to retry, or deadlines that passed meanwhile
        }
        Ok(reopened)
    }

    /// [`reload`](Self::reload) under [`Durability::Batched`]: every request in the write buffer
    /// was acknowledged, so memory (the file as of its last commit, plus the buffer) is the truth
    /// and nothing is read back. The buffer is written to the reopened file (its entries are
    /// absolute, so writing them again over a commit that did land changes nothing); once that
    /// flush succeeds, writes resume. If it fails, the lessor stays poisoned, the buffer intact.
    fn reload_batched(
        &self,
        mut store: parking_lot::RwLockWriteGuard<'_, Option<Database>>,
        db: Database,
    ) -> Result<bool> {
        self.writer.lock().base = Arc::new(Base::open(&db)?);
        self.syncer.reopen(None);
        if self.syncer.lead() {
            let flushed = self.flush_into(&db);
            self.syncer.flush_ended();
            flushed?;
        }
        let revision = self.writer.lock().counters.revision;
        self.hub.reopen(revision);
        *store = Some(db);
        let reopened = self
            .state
            .compare_exchange(POISONED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        drop(store);
        if reopened {
            tracing::info!(
                revision,
                "reopened the database after a storage failure; nothing acknowledged was lost"
            );
            self.reloads.fetch_add(1, Ordering::Relaxed);
            self.wake_ticker(0);
        }
        Ok(reopened)
    }

    /// When the ticker must flush the write buffer ([`Durability::Batched`]), if it holds
    /// anything: `max_delay` after its first write, or now once it holds [`FLUSH_WRITES`].
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        let Durability::Batched { max_delay } = self.syncer.mode() else {
            return None;
        };
        let w = self.writer.lock();
        let since = w.active_since?;
        if w.active.writes() >= FLUSH_WRITES || w.active.bytes() >= FLUSH_BYTES {
            return Some(since);
        }
        Some(since.checked_add(max_delay).unwrap_or(since))
    }

    /// Ends the keep-alives of the leases `changes` revoked, saying why.
    fn end_keep_alives(&self, changes: &[Change]) {
        let mut revoked = Vec::new();
        let mut expired = Vec::new();
        for change in changes {
            if let Change::Revoked { id, cause, .. } = change {
                match cause {
                    RevokeCause::Revoked => revoked.push(*id),
                    RevokeCause::Expired => expired.push(*id),
                }
            }
        }
        for (ids, why) in [(revoked, EndReason::Revoked), (expired, EndReason::Expired)] {
            if !ids.is_empty() {
                self.keepalives.leases_ended(&ids, why);
            }
        }
    }

    fn grant(&self, want: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        let ttl = self.config.effective_ttl(ttl)?;
        let now = self.now();
        if !room_for_grant(now) {
            return Err(clock_out_of_range(now));
        }
        let stamp = self
            .checkpointing
            .stamp(now, wall_nanos(&*self.config.clock));
        let record = LeaseRecord {
            ttl_nanos: ttl,
            granted_revision: 0, // set under the writer
            checkpoint: Some(stamp.granted(ttl)),
        };
        // What the record says the deadline is, on this clock: the TTL itself runs from the
        // commit, so if the commit took time, the next checkpoint pass writes the later one.
        let written = deadline_after(now, ttl);
        // Set when `want` names a dead lease not yet revoked, which this grant revokes.
        let mut replaced = None;
        let (mut w, result, ticket) = self.write(|w, b| {
            let id = match want {
                Some(id) => id,
                None => LeaseId::new(b.counters.max_lease_id.saturating_add(1))
                    .ok_or(Error::LeaseIdsExhausted)?,
            };
            if self.table.contains(id) {
                if self.table.alive(id, now).is_some() {
                    return Err(Error::LeaseExists(id));
                }
                // Dead: expired and not yet revoked (claimed now, or by an expiry batch that
                // failed), or already revoked by a request not yet durable (claimed, and in no
                // retry list), which this grant must not revoke again.
                if self.table.claim(id).is_some() || w.retry.contains(&id) {
                    replaced = Some(id);
                    b.revoke(id, RevokeCause::Expired)?;
                }
            } else if b.tables.lease_exists(id)? {
                return Err(Error::Corrupted(format!(
                    "lease {id} is in the file but not in memory"
                )));
            }
            let record = LeaseRecord {
                granted_revision: b.counters.revision,
                ..record
            };
            b.tables.insert_lease(id, &record)?;
            b.counters.max_lease_id = b.counters.max_lease_id.max(id.get());
            b.changes.push(Change::Granted {
                id,
                ttl,
                revision: b.counters.revision,
            });
            Ok(id)
        });
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                // A dead lease claimed here stays dead; the expiry path revokes it later.
                if let Some(dead) = replaced.filter(|d| !w.retry.contains(d)) {
                    w.retry.push(dead);
                }
                return Err(e);
            }
        };
        w.retry.retain(|&r| Some(r) != replaced);
        let revision = Revision(w.counters.revision);
        drop(w);
        self.settle_grant(id, ttl, written, revision, ticket)
    }

    /// The end of every grant, once its record is applied and the writer released: waits until
    /// it is durable, then gives the lease its first deadline and queues it, and counts. The TTL
    /// runs from here, so the fsync does not eat into it; the clock is read with no lock held.
    fn settle_grant(
        &self,
        id: LeaseId,
        ttl: u64,
        written: u64,
        revision: Revision,
        ticket: Ticket,
    ) -> Result<Lease> {
        // Durable first (under Immediate), so that the TTL runs from the commit.
        self.await_durable(ticket)?;
        let now = self.now();
        let deadline = deadline_after(now, ttl);
        if self.table.settle_written(id, deadline, written) {
            self.queue.lock().push(deadline, id);
            self.wake_ticker(deadline);
        }
        if !room_for_grant(now) {
            // The clock reached the last deadline during the commit: the lease is dead on
            // arrival, and expiry revokes it.
            return Err(clock_out_of_range(now));
        }
        self.metrics.grants.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(lease = id.get(), ttl_ms = ttl / 1_000_000, "lease granted");
        Ok(Lease {
            id,
            ttl: Duration::from_nanos(ttl),
            revision,
        })
    }

    fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        self.config.check_key(key)?;
        self.config.check_value(value)?;
        let now = self.now();
        let (w, result, ticket) = self.write(|_, b| {
            if let Some(id) = lease {
                self.check_alive(id, now)?;
            }
            let rev = b.counters.bump_revision()?;
            let kv = b.tables.put(key, value, lease, rev)?;
            b.changes.push(Change::Put(kv));
            Ok(rev)
        });
        self.finish(w, ticket)?;
        result.map(Revision)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        self.config.check_key(key)?;
        let (w, result, ticket) = self.write(|_, b| {
            let existed = b.tables.delete(key)?;
            if existed {
                let revision = b.counters.bump_revision()?;
                b.changes.push(Change::Deleted {
                    key: key.to_vec(),
                    revision,
                });
            }
            Ok(existed)
        });
        self.finish(w, ticket)?;
        result
    }

    fn attach_or_detach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
        attach: bool,
    ) -> Result<()> {
        let mut keys: Vec<K> = keys.into_iter().collect();
        for k in &keys {
            self.config.check_key(k.as_ref())?;
        }
        // A key named twice counts once (the second detach would otherwise find it detached).
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.as_ref().to_vec()));
        let now = self.now();
        let (w, result, ticket) = self.write(|_, b| {
            self.check_alive(id, now)?;
            for k in &keys {
                if attach {
                    b.tables.attach(id, k.as_ref())?;
                } else {
                    b.tables.detach(id, k.as_ref())?;
                }
            }
            Ok(())
        });
        self.finish(w, ticket)?;
        result
    }

    fn watch(self: &Core, prefix: &[u8], from: Option<u64>) -> Result<Watch> {
        self.hub
            .with_watchers(|w| w.add(&self.hub, prefix, from))
            .ok_or(Error::Closed)?
    }

    fn check_alive(&self, id: LeaseId, now: u64) -> Result<()> {
        match self.table.alive(id, now) {
            Some(_) => Ok(()),
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    pub(crate) fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.revoke_if(id, || true)
    }

    /// [`revoke`](Core::revoke), if `still_ours()`, asked under the writer lock before anything
    /// else, says so; [`Error::LeaseNotFound`] otherwise. Keep-alives are told of every lease's
    /// end under that lock, before its id can be granted again: a keep-alive's revoke-on-drop
    /// uses this to revoke only the lease it kept alive.
    pub(crate) fn revoke_if(
        &self,
        id: LeaseId,
        still_ours: impl FnOnce() -> bool,
    ) -> Result<Revision> {
        let mut claimed = None;
        let (mut w, result, ticket) = self.write(|w, b| {
            if !still_ours() {
                return Err(Error::LeaseNotFound(id));
            }
            claimed = self.table.claim(id);
            // Unclaimed: unknown, or claimed by an expiry batch that failed to commit.
            if claimed.is_none() && !w.retry.contains(&id) {
                return Err(Error::LeaseNotFound(id));
            }
            b.revoke(id, RevokeCause::Revoked)?;
            b.claims.push((id, claimed));
            Ok(())
        });
        if let Err(e) = result {
            // A storage failure poisons, and the reload finds the lease in the file: it lives
            // on as before. Any other failure leaves it dead from the claim on (renewals were
            // refused meanwhile): expiry revokes it later.
            if let Some(prior) = claimed {
                let back = match e {
                    Error::Storage(_) => self.table.unclaim(id, prior),
                    _ => self.table.restore(id, prior),
                };
                if !back && !w.retry.contains(&id) {
                    w.retry.push(id);
                }
            }
            return Err(e);
        }
        w.retry.retain(|&r| r != id);
        self.compact_queue();
        self.metrics.revokes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(lease = id.get(), "lease revoked");
        let revision = Revision(w.counters.revision);
        self.finish(w, ticket)?;
        Ok(revision)
    }

    /// Revokes every expired lease, batch after batch, handing each batch's ids to `each`; in
    /// immediate mode, returns once they are durable (one flush for a backlog of batches).
    pub(crate) fn expire_all(&self, mut each: impl FnMut(&[LeaseId])) -> Result<()> {
        let mut last = Ticket::DONE;
        loop {
            let (batch, ticket) = self.expire_batch(self.now())?;
            each(&batch);
            if ticket.0.is_some() {
                last = ticket;
            }
            if batch.len() < self.config.expiry_batch {
                break;
            }
        }
        self.await_durable(last)
    }

    /// Revokes up to one batch of expired leases in one request; returns their ids in deadline
    /// order, and what to wait for before they count as revoked on disk. Leases of a batch that
    /// failed stay claimed (dead to callers) and go first at the next attempt.
    pub(crate) fn expire_batch(&self, now: u64) -> Result<(Vec<LeaseId>, Ticket)> {
        // Claim what is due first, under the writer lock but outside any request, into the
        // retry list: a wake-up that only finds renewed leases (requeued) writes nothing.
        {
            let mut w = self.writer.lock();
            let now = now.max(w.high_water);
            w.high_water = now;
            self.time_floor.store(now, Ordering::Relaxed);
            let room = self.config.expiry_batch.saturating_sub(w.retry.len());
            let due = self.queue.lock().pop_due(now, room, |id, queued| {
                self.table.check_due(id, queued, now)
            });
            w.retry.extend(due.iter().map(|&(id, _)| id));
            w.claimed_deadlines.extend(due);
            if w.retry.is_empty() {
                return Ok((Vec::new(), Ticket::DONE));
            }
        }
        let mut batch = Vec::new();
        let (mut w, result, ticket) = self.write(|w, b| {
            batch = std::mem::take(&mut w.retry);
            for &id in &batch {
                b.revoke(id, RevokeCause::Expired)?;
                b.claims.push((id, None));
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.count_expired(&mut w, &batch);
                Ok((batch, ticket))
            }
            Err(e) => {
                batch.append(&mut w.retry);
                w.retry = batch;
                Err(e)
            }
        }
    }

    /// The figures of [`Lessor::stats`], whatever the state.
    pub(crate) fn stats(&self) -> Result<Stats> {
        let core = self;
        let (keys, attached_keys) = core.read(|view, _| view.key_counts())?;
        let m = &core.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(Stats {
            leases: core.table.len() as u64,
            keys,
            attached_keys,
            revision: core.writer.lock().counters.revision,
            file_size: core
                .path
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|meta| meta.len()),
            grants: load(&m.grants),
            renews: m.renews.sum(),
            revokes: load(&m.revokes),
            expiries: load(&m.expiries),
            expiry_lateness: m.lateness.summary(),
            expiry_batches: load(&m.expiry_batches),
            ticker_failures: load(&core.ticker_failures),
            commits: load(&m.commits),
            fsyncs: load(&m.fsyncs),
            commit_latency: m.commit_latency.summary(),
            storage_failures: load(&core.failures),
            reloads: load(&core.reloads),
        })
    }

    /// Counts a committed expiry batch, and how late each of its leases was.
    fn count_expired(&self, w: &mut Writer, batch: &[LeaseId]) {
        let m = &self.metrics;
        m.expiry_batches.fetch_add(1, Ordering::Relaxed);
        m.expiries.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now = self.now();
        if !w.claimed_deadlines.is_empty() {
            let revoked: std::collections::HashSet<&LeaseId> = batch.iter().collect();
            for (id, deadline) in w.claimed_deadlines.drain(..) {
                if revoked.contains(&id) {
                    m.lateness.record(now.saturating_sub(deadline));
                    tracing::debug!(lease = id.get(), "lease expired");
                }
            }
        }
        tracing::debug!(leases = batch.len(), "expiry batch committed");
    }

    /// The earliest deadline the ticker must act on: now if leases wait for a retry, else the
    /// earliest queued one, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let w = self.writer.lock();
        if !w.retry.is_empty() {
            return Some(0);
        }
        self.queue.lock().next_deadline()
    }

    /// Whether storage failed and the database is not yet reloaded.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.state.load(Ordering::Acquire) == POISONED
    }

    /// Whether neither closed nor poisoned.
    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) == OPEN
    }

    /// Wakes the ticker if `deadline` is earlier than the one it sleeps until.
    fn wake_ticker(&self, deadline: u64) {
        if let Some(tx) = &self.ticker_wake
            && deadline < self.ticker_sleeps_until.load(Ordering::Acquire)
        {
            let _ = tx.try_send(());
        }
    }

    /// Drops queue entries of revoked leases once they outnumber the live ones.
    fn compact_queue(&self) {
        let mut q = self.queue.lock();
        let live = self.table.len();
        if q.len() > 2 * live + 1024 {
            q.compact(|id| self.table.deadline_of(id));
        }
    }
}

impl Core {
    /// Writes, in one transaction, the checkpoints of up to `limit` leases renewed since their
    /// last one (continuing `sweep`'s pass through the table) and the database's uptime; returns
    /// how many leases it wrote. Does nothing while no lease is in the table.
    pub(crate) fn checkpoint(&self, sweep: &mut Sweep, limit: usize) -> Result<usize> {
        if self.table.len() == 0 {
            sweep.finish();
            return Ok(0);
        }
        let stamp = self
            .checkpointing
            .stamp(self.now(), wall_nanos(&*self.config.clock));
        let mut written = Vec::new();
        let (w, result, ticket) = self.write(|_, b| {
            for (id, deadline, ttl) in self.table.changed(sweep, limit) {
                // A lease without a readable record is left out (and stays changed).
                if b.tables
                    .set_checkpoint(id, stamp.checkpoint(deadline, ttl))?
                {
                    written.push((id, deadline));
                }
            }
            b.tables.set_uptime(stamp.uptime)
        });
        result?;
        for &(id, deadline) in &written {
            self.table.mark_checkpointed(id, deadline);
        }
        self.checkpointing.committed(written.len());
        self.finish(w, ticket)?;
        Ok(written.len())
    }

    /// One pass of checkpoints over the whole table, in batches; nothing under `Reset`.
    pub(crate) fn checkpoint_all(&self) -> Result<()> {
        if !self.config.restart_policy.checkpoints() {
            return Ok(());
        }
        let mut sweep = Sweep::default();
        while !sweep.done() {
            self.checkpoint(&mut sweep, self.config.checkpoint_batch)?;
        }
        Ok(())
    }
}

/// The error of a grant at clock reading `now`, past the last deadline a lease can have.
fn clock_out_of_range(now: u64) -> Error {
    Error::ClockOutOfRange {
        now: Duration::from_nanos(now),
    }
}

impl Batch<'_> {
    /// Deletes lease `id` and its keys, advancing the revision if it had any.
    fn revoke(&mut self, id: LeaseId, cause: RevokeCause) -> Result<()> {
        let keys = self.tables.revoke(id)?;
        if !keys.is_empty() {
            self.counters.bump_revision()?;
        }
        self.changes.push(Change::Revoked {
            id,
            keys,
            revision: self.counters.revision,
            cause,
        });
        Ok(())
    }
}

/// What a request works on: see [`Core::write`].
pub(crate) struct Batch<'a> {
    /// The tables, through the write buffer.
    pub tables: Tables<'a>,
    /// The counters as they will be if the request succeeds.
    pub counters: Counters,
    /// What the request changed, in order; published once visible.
    pub changes: Vec<Change>,
    /// The leases it revoked, claimed in the table, with the deadline word each had if a
    /// failure to make the revocation durable gives it back (`None`: it stays dead).
    pub claims: Vec<(LeaseId, Option<u64>)>,
}

impl fmt::Debug for Lessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.handle.core;
        f.debug_struct("Lessor")
            .field("path", &core.path)
            .field("state", &core.state.load(Ordering::Relaxed))
            .field("leases", &core.table.len())
            .finish()
    }
}
