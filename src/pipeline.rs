//! The commit pipeline: one queue for every mutating request, and the durability hand-off.
//!
//! # Implementation
//!
//! [`Pipeline::write`] applies one request to the write buffer (`overlay.rs`) under the writer
//! lock, in microseconds and without writing to disk (it reads the last snapshot of the file
//! for what the buffer does not hold), and gives it a sequence number. A flush
//! ([`Pipeline::flush_into`]) freezes the buffer under the writer lock, writes it into ONE redb
//! write transaction committed with fsync while holding no lock but the store's read lock, and
//! installs a fresh read snapshot of the file under the writer lock. Who flushes, and when, is
//! the [`Syncer`]'s business (`durability.rs`): under [`Durability::Immediate`] the first caller
//! that waits with nobody flushing leads the flush for everyone applied before it (group
//! commit); under [`Durability::Batched`] the ticker flushes on time and callers return once
//! applied.
//!
//! The pipeline knows nothing of leases: what a request means for the lease table, the
//! keep-alives, the subscribers and the lessor's state, it tells the engine through [`Hooks`],
//! always under the writer lock, so in request order.
//!
//! The writer lock ([`Writer`]) comes after the store lock and before everything the hooks take
//! (the expiry queue, a lease-table shard, the keep-alive manager, the event hub). Nothing holds
//! it across a disk write, an fsync, a channel wait or a clock read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use redb::Database;

use crate::durability::{
    Durability, FLUSH_BYTES, FLUSH_WRITES, MAX_BYTES, MAX_WRITES, Syncer, Ticket, Turn,
};
use crate::error::{Error, Result};
use crate::events::{Change, RevokeCause};
use crate::lease::LeaseId;
use crate::lease_table::LeaseTable;
use crate::lifecycle::Lifecycle;
use crate::overlay::{Base, Layers, Overlay, Query, Tables};
use crate::store::Counters;

/// Longest a flush leader waits for writers on their way to join its group.
const GATHER: Duration = Duration::from_millis(1);

/// What the pipeline tells the engine; every call is made under the writer lock, in order.
pub(crate) trait Hooks {
    /// A request was applied with these changes (before they are visible under `Immediate`).
    fn applied(&self, changes: &[Change]);
    /// The clock, read before the writer lock is taken, for [`publish`](Self::publish).
    fn now(&self) -> u64;
    /// These changes became visible at clock reading `now`: at apply under `Batched`, once
    /// durable under `Immediate`.
    fn publish(&self, changes: Vec<Change>, now: u64);
    /// The revocation of lease `id`, claimed by its request, is visible: it leaves the table.
    fn revoked(&self, id: LeaseId);
    /// The revocation of lease `id`, which its request left unclaimed (under `Immediate`), is
    /// durable: the lease is claimed and leaves the table now.
    fn revoked_late(&self, id: LeaseId);
    /// The revocation of lease `id` will never be durable (its flush failed): give it back the
    /// deadline word `prior` it had.
    fn give_back(&self, id: LeaseId, prior: u64);
    /// Storage failed with `e`: the lessor must refuse writes until it has reloaded.
    fn failed(&self, e: &Error);
    /// Batched requests wait for a flush: wake the ticker. `false` if there is no ticker.
    fn wake_flusher(&self) -> bool;
    /// A flush committed, with fsync, in `took`.
    fn committed(&self, took: Duration);
}

/// The pipeline's state, guarded by the writer lock.
pub(crate) struct Writer {
    /// As of the last request applied.
    pub(crate) counters: Counters,
    /// Requests applied since open; the sequence numbers the syncer counts durability in.
    pub(crate) seq: u64,
    /// The claim/retry bookkeeping of lease revocations (`lifecycle.rs`).
    pub(crate) life: Lifecycle,
    /// The write buffer filling now.
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
}

impl Writer {
    /// Whether everything applied is in the file.
    pub(crate) fn is_flushed(&self) -> bool {
        self.active.is_empty() && self.frozen.is_none()
    }

    /// The leases being revoked (their keys hidden, deleted chunk by chunk), as of the last
    /// request applied.
    pub(crate) fn revoking(&self) -> Vec<LeaseId> {
        let layers = Layers {
            overlays: [Some(&self.active), self.frozen.as_deref()],
            base: &self.base,
            live: None,
        };
        self.base
            .revoking
            .keys()
            .copied()
            .chain(self.active.revoking_marks())
            .chain(self.frozen.iter().flat_map(|f| f.revoking_marks()))
            .filter(|&id| layers.is_revoking(id))
            .filter_map(LeaseId::new)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// What a request works on: see [`Pipeline::write`].
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
    /// The leases it revoked without claiming them (under `Immediate`): claimed and dropped from
    /// the table once the request is durable.
    pub deferred: Vec<LeaseId>,
}

impl Batch<'_> {
    /// Deletes lease `id` and its keys, advancing the revision if it had any. A lease with more
    /// than `chunk` keys loses its first `chunk` here, and is marked as being revoked: its other
    /// keys are hidden from now on and deleted by later requests (`reap.rs`). Returns whether
    /// it was marked.
    pub(crate) fn revoke(&mut self, id: LeaseId, cause: RevokeCause, chunk: usize) -> Result<bool> {
        let next = self.counters.revision.saturating_add(1);
        let (keys, more) = self.tables.revoke(id, chunk, next)?;
        if !keys.is_empty() {
            self.counters.bump_revision()?;
        }
        self.changes.push(Change::Revoked {
            id,
            keys,
            revision: self.counters.revision,
            cause,
        });
        Ok(more)
    }

    /// Deletes the next `chunk` keys of lease `id`, being revoked (for `cause`), after key
    /// `after`, at a new revision. Returns the last key deleted (`None` if none was) and whether
    /// more are left.
    pub(crate) fn reap(
        &mut self,
        id: LeaseId,
        after: Option<&[u8]>,
        chunk: usize,
        cause: RevokeCause,
    ) -> Result<(Option<Vec<u8>>, bool)> {
        let (keys, more) = self.tables.reap(id, after, chunk)?;
        let last = keys.last().cloned();
        if !keys.is_empty() {
            let revision = self.counters.bump_revision()?;
            self.changes.push(Change::Reaped {
                id,
                keys,
                revision,
                cause,
            });
        }
        Ok((last, more))
    }
}

/// The commit pipeline; see the module docs.
pub(crate) struct Pipeline {
    /// The database; `None` once closed, or while a reload reopens it. A flush holds its read
    /// lock while it writes; close and the reload take the write lock.
    store: CachePadded<RwLock<Option<Database>>>,
    /// Applies requests one at a time; guards the buffer, the snapshot and the counters.
    writer: CachePadded<Mutex<Writer>>,
    /// Which requests are durable, and who flushes.
    syncer: CachePadded<Syncer>,
    /// Requests between entering [`Pipeline::write`] and being applied: a leader under
    /// `Immediate` lets them join its group before it freezes the buffer.
    entering: CachePadded<AtomicUsize>,
    /// How long the last flush took, in nanoseconds: bounds how long a leader gathers.
    last_flush: AtomicU64,
    /// Whether commits are two-phase (`Builder::two_phase_commit`).
    two_phase: bool,
}

impl Pipeline {
    /// A pipeline over `db`, whose counters are `counters`.
    pub(crate) fn new(
        mode: Durability,
        two_phase: bool,
        db: Database,
        counters: Counters,
        life: Lifecycle,
    ) -> Result<Pipeline> {
        let base = Arc::new(Base::open(&db)?);
        Ok(Pipeline {
            store: CachePadded::new(RwLock::new(Some(db))),
            writer: CachePadded::new(Mutex::new(Writer {
                counters,
                seq: 0,
                life,
                active: Overlay::default(),
                frozen: None,
                base,
                active_since: None,
                frozen_upto: 0,
                last_group: 0,
            })),
            syncer: CachePadded::new(Syncer::new(mode)),
            entering: CachePadded::new(AtomicUsize::new(0)),
            last_flush: AtomicU64::new(0),
            two_phase,
        })
    }

    pub(crate) fn mode(&self) -> Durability {
        self.syncer.mode()
    }

    /// The writer lock, for bookkeeping outside a request.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// The store, for reading the file directly (`verify`).
    pub(crate) fn store(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.store.read()
    }

    /// The store, exclusively: no flush or request is in flight while it is held.
    pub(crate) fn store_mut(&self) -> RwLockWriteGuard<'_, Option<Database>> {
        self.store.write()
    }

    /// Runs `f` on what reads see, with the revision they see: under `Immediate` the file as
    /// of its last (durable) commit; under `Batched` every request applied, through the write
    /// buffer. Only the overlay entries `q` needs are copied under the writer lock; `f` runs,
    /// and reads the file, after it is released.
    pub(crate) fn read<T>(
        &self,
        q: Query<'_>,
        live: &LeaseTable,
        f: impl FnOnce(&Layers<'_>, u64) -> Result<T>,
    ) -> Result<T> {
        let (slices, base, revision) = {
            let w = self.writer.lock();
            let slices = match self.syncer.mode() {
                Durability::Immediate => None,
                Durability::Batched { .. } => {
                    Some((w.active.slice(q), w.frozen.as_ref().map(|o| o.slice(q))))
                }
            };
            let revision = match slices {
                None => w.base.revision,
                Some(_) => w.counters.revision,
            };
            (slices, Arc::clone(&w.base), revision)
        };
        let view = Layers {
            overlays: match &slices {
                None => [None, None],
                Some((active, frozen)) => [Some(active), frozen.as_ref()],
            },
            base: &base,
            live: Some(live),
        };
        f(&view, revision)
    }

    /// Applies one request to the write buffer. `f` gets the lifecycle bookkeeping and a
    /// [`Batch`]: the tables as every request applied before sees them, a copy of the counters
    /// to advance (kept only if `f` succeeds), and lists of the changes it makes and the leases
    /// it revokes. If `f` fails, nothing it wrote is kept. Returns the writer, still locked, so
    /// that the caller updates memory (or undoes a claim) before anyone else writes, and what to
    /// [`finish`](Self::finish) with.
    pub(crate) fn write<T>(
        &self,
        hooks: &dyn Hooks,
        f: impl FnOnce(&mut Lifecycle, &mut Batch<'_>) -> Result<T>,
    ) -> (MutexGuard<'_, Writer>, Result<T>, Ticket) {
        let guard = self.store.read();
        // For what becomes visible at apply (Batched): read before the lock, as every clock read.
        let now = match self.syncer.mode() {
            Durability::Batched { .. } => hooks.now(),
            Durability::Immediate => 0,
        };
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
            deferred: Vec::new(),
        };
        let life = &mut w.life;
        let out = crate::contain::storage(|| f(life, &mut batch));
        let Batch {
            counters,
            changes,
            claims,
            deferred,
            ..
        } = batch;
        let mut ticket = Ticket::DONE;
        let result = match out {
            Ok(out) => {
                active.keep();
                w.counters = counters;
                w.seq += 1;
                ticket = self.syncer.ticket(w.seq);
                hooks.applied(&changes);
                match self.syncer.mode() {
                    // Published, and the revoked leases dropped from the table, by the flush
                    // that makes them durable; until then the leases stay claimed (dead).
                    Durability::Immediate => {
                        active.changes.extend(changes);
                        active.claims.extend(claims);
                        active.deferred.extend(deferred);
                    }
                    // Visible now: published under the writer lock, in order.
                    Durability::Batched { max_delay } => {
                        for (id, _) in claims {
                            hooks.revoked(id);
                        }
                        for id in deferred {
                            hooks.revoked_late(id);
                        }
                        hooks.publish(changes, now);
                        let first = w.active_since.is_none() && !active.is_empty();
                        if first {
                            w.active_since = Some(Instant::now());
                        }
                        let (writes, bytes) = (active.writes(), active.bytes());
                        let full = writes >= FLUSH_WRITES || bytes >= FLUSH_BYTES;
                        let must = writes >= MAX_WRITES || bytes >= MAX_BYTES;
                        let due = full || w.active_since.is_some_and(|t| t.elapsed() >= max_delay);
                        if must {
                            // Back-pressure: this call waits for a flush.
                            ticket = Ticket(Some(w.seq));
                        } else if first || full || due {
                            // The ticker flushes in time; without one, this call does.
                            let flusher = hooks.wake_flusher();
                            if due && !flusher {
                                ticket = Ticket(Some(w.seq));
                            }
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
        if let Err(e) = &result
            && (matches!(e, Error::Storage(_)) || crate::contain::is_panic(e))
        {
            // A read of the file failed (or redb panicked) while applying: the buffer is intact,
            // but under Immediate nothing in it was acknowledged yet.
            let lost = self.syncer.mode() == Durability::Immediate;
            self.fail(hooks, &w, e, lost);
        }
        (w, result, ticket)
    }

    /// Releases the writer, then waits until the request of `ticket` is durable.
    pub(crate) fn finish(
        &self,
        hooks: &dyn Hooks,
        w: MutexGuard<'_, Writer>,
        ticket: Ticket,
    ) -> Result<()> {
        drop(w);
        self.await_durable(hooks, ticket)
    }

    /// Waits until the request of `ticket` is durable, leading the flush that makes it so if
    /// nobody else is flushing (group commit: see `durability.rs`).
    pub(crate) fn await_durable(&self, hooks: &dyn Hooks, ticket: Ticket) -> Result<()> {
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
                            Some(db) => self.flush_into(hooks, db),
                            None => Err(Error::Closed),
                        }
                    };
                    self.syncer.flush_ended();
                    flushed?;
                }
            }
        }
    }

    /// [`await_durable`](Self::await_durable) for a task: never blocks, never leads a flush
    /// (see `flusher.rs`); registers the task's waker while the request of `seq` is not durable.
    pub(crate) fn poll_durable(
        &self,
        seq: u64,
        cx: &std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        self.syncer.poll(seq, cx)
    }

    /// The sequence number of the last request applied: once it is durable, so is everything
    /// acknowledged before (what [`sync`](Self::sync) waits for).
    pub(crate) fn applied_seq(&self) -> u64 {
        self.writer.lock().seq
    }

    /// Makes every request applied so far durable (one flush), if any is not.
    pub(crate) fn sync(&self, hooks: &dyn Hooks) -> Result<()> {
        let seq = self.writer.lock().seq;
        if self.syncer.durable_seq() >= seq {
            return Ok(());
        }
        self.await_durable(hooks, Ticket(Some(seq)))
    }

    /// Flushes with the store held exclusively (close): becomes the one flushing first.
    pub(crate) fn flush_last(&self, hooks: &dyn Hooks, db: &Database) -> Result<()> {
        if !self.syncer.lead() {
            return Ok(());
        }
        let flushed = self.flush_into(hooks, db);
        self.syncer.flush_ended();
        flushed
    }

    /// Wakes every waiter: the lessor closed.
    pub(crate) fn close(&self) {
        self.syncer.close();
    }

    /// When the ticker must flush the write buffer (`Batched`), if it holds anything:
    /// `max_delay` after its first write, or now once it is full.
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

    /// Before a leader freezes the buffer: lets writers on their way join the group. It waits,
    /// yielding, while requests are entering [`write`](Self::write) or fewer requests wait than
    /// the last group made durable (closed-loop callers come back with their next request right
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
    fn flush_into(&self, hooks: &dyn Hooks, db: &Database) -> Result<()> {
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
        let committed = crate::contain::storage(|| {
            let mut txn = db.begin_write()?;
            frozen.write_to(&txn, counters)?;
            txn.set_durability(redb::Durability::Immediate)?;
            txn.set_two_phase_commit(self.two_phase);
            txn.commit()?;
            Base::open(db)
        });
        let now = hooks.now();
        let mut w = self.writer.lock();
        match committed {
            Ok(base) => {
                let took = start.elapsed();
                hooks.committed(took);
                let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                self.last_flush.store(nanos, Ordering::Relaxed);
                w.base = Arc::new(base);
                w.frozen = None;
                for &(id, _) in &frozen.claims {
                    hooks.revoked(id);
                }
                for &id in &frozen.deferred {
                    hooks.revoked_late(id);
                }
                if !frozen.changes.is_empty() {
                    // Durable now: visible, in order (flushes are one at a time).
                    let changes = match Arc::try_unwrap(frozen) {
                        Ok(o) => o.changes,
                        Err(shared) => shared.changes.clone(),
                    };
                    hooks.publish(changes, now);
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
                        self.fail(hooks, &w, &e, false);
                    }
                    // Not acknowledged: their calls fail. Whatever the error, the buffer's fate
                    // on disk is unknown: the reload takes the file as the truth. Revocations
                    // whose calls fail give their leases back first, as they were (expiries
                    // stay claimed: revoked again).
                    Durability::Immediate => {
                        for &(id, prior) in frozen.claims.iter().chain(&w.active.claims) {
                            if let Some(prior) = prior {
                                hooks.give_back(id, prior);
                            }
                        }
                        self.fail(hooks, &w, &e, true);
                    }
                }
                Err(e)
            }
        }
    }

    /// Storage failed with `e` while requests up to `w.seq` were applied: wakes their waiters
    /// with an error (for good if `lost`: those requests can never become durable), and tells
    /// the engine.
    fn fail(&self, hooks: &dyn Hooks, w: &Writer, e: &Error, lost: bool) {
        self.syncer.fail(w.seq, lost);
        hooks.failed(e);
    }

    /// After a reload under `Immediate` reopened the file as `db`: the buffer never reached the
    /// file (or did, and the file says so), so it goes; requests so far are settled. Called with
    /// the store held exclusively.
    pub(crate) fn reset(&self, w: &mut Writer, db: &Database) -> Result<()> {
        w.active = Overlay::default();
        w.frozen = None;
        w.active_since = None;
        w.frozen_upto = w.seq;
        w.base = Arc::new(Base::open(db)?);
        self.syncer.reopen(Some(w.seq));
        Ok(())
    }

    /// After a reload under `Batched` reopened the file as `db`: every request in the buffer was
    /// acknowledged, so memory (the file as of its last commit, plus the buffer) is the truth and
    /// nothing is read back. Writes the buffer to `db` (its entries are absolute, so writing them
    /// again over a commit that did land changes nothing). Called with the store held
    /// exclusively.
    pub(crate) fn rewrite(&self, hooks: &dyn Hooks, db: &Database) -> Result<()> {
        self.writer.lock().base = Arc::new(Base::open(db)?);
        self.syncer.reopen(None);
        self.flush_last(hooks, db)
    }
}
