//! The engine: what every [`Lessor`](crate::Lessor) handle, the ticker and the keep-alive
//! thread share. Each operation of the API is a request to the commit pipeline plus what it
//! means for the leases in memory.
//!
//! # Implementation
//!
//! Shared state, and who guards it:
//! - `table` ([`LeaseTable`]): live leases and their atomic deadlines. Renew finds its lease
//!   there without a lock and compare-and-swaps the deadline; it does nothing else.
//! - `pipeline` ([`Pipeline`], `pipeline.rs`): the store, the write buffer, the counters and the
//!   read snapshot, under its writer lock; the [`Lifecycle`] bookkeeping (claims waiting for a
//!   retry, the expiry clock) lives under the same lock.
//! - `queue` ([`ExpiryQueue`]): an entry per live lease, by deadline.
//! - `state`: open, closed, or poisoned by a storage failure.
//! - `hub`: subscribers and watchers; `keepalives`: the keep-alive manager and its thread.
//! - `reaping` ([`Reaping`], `reap.rs`): the leases revoked whose hidden keys are still being
//!   deleted, chunk by chunk.
//!
//! Lock order: the store (read) → the writer → `queue` → a `table` shard's mutex; the syncer's,
//! the hub's, `reaping`'s and the keep-alive manager's mutexes may be taken under the writer and
//! take nothing under them. Nothing waits on a channel, reads the clock or does disk I/O while holding the
//! writer or anything after it. Renew takes no lock.
//!
//! A request is all-or-nothing: its writes to the buffer are undone if it fails its checks, and
//! memory (the lease table) changes only once it has been applied (a revocation claims its lease
//! first, and gives it back if the request fails: `lifecycle.rs`). Under
//! [`Durability::Immediate`] a call returns once a flush has made its request durable, and reads
//! and events see nothing before that; under [`Durability::Batched`] it returns once applied,
//! and reads and events see it at once. A storage error poisons the lessor: writes are refused,
//! reads and renewals go on, until [`Engine::reload`] has reopened the database (the ticker does
//! that by itself, with backoff).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase};

use crate::clock::{now_nanos, wall_nanos};
use crate::config::Config;
use crate::durability::{Durability, Ticket};
use crate::error::{Error, Result};
use crate::events::{Change, Hub, RevokeCause};
use crate::expiry::ExpiryQueue;
use crate::flusher::Flusher;
use crate::integrity::Problem;
use crate::keepalive::{EndReason, KeepAlives};
use crate::lease::{Lease, LeaseId, LeaseInfo, Revision};
use crate::lease_table::{LeaseTable, deadline_after, room_for_grant};
use crate::lifecycle::{Lifecycle, Reaping};
use crate::overlay::{Layers, Query, Tables};
use crate::pipeline::{Hooks, Pipeline};
use crate::record::LeaseRecord;
use crate::recovery;
use crate::reload::{self, Source};
use crate::restart::Checkpointing;
use crate::stats::{Health, Metrics, Stats};
use crate::store;
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

/// `Engine::state`: open for business.
const OPEN: u8 = 0;
/// `Engine::state`: closed by `close` or by dropping the last handle.
const CLOSED: u8 = 1;
/// `Engine::state`: storage failed; writes are refused until [`Engine::reload`] has reopened
/// the database.
const POISONED: u8 = 2;

/// State shared by every handle, the ticker and the keep-alive thread; see the module docs.
pub(crate) struct Engine {
    pub(crate) config: Config,
    /// `Some` for a file-backed database; for messages and `Debug`.
    pub(crate) path: Option<PathBuf>,
    /// Where the database is opened again from after a storage failure (`reload.rs`).
    source: Source,
    /// [`OPEN`], [`CLOSED`] or [`POISONED`]; every public call checks it first.
    state: AtomicU8,
    /// Live leases; the renew path.
    pub(crate) table: LeaseTable,
    /// The commit pipeline: the store, the write buffer, the counters.
    pub(crate) pipeline: Pipeline,
    /// One entry per live lease, by deadline.
    queue: CachePadded<Mutex<ExpiryQueue>>,
    /// Hands visible changes to subscribers and watchers.
    hub: Arc<Hub>,
    /// Wakes the ticker when a grant creates a deadline earlier than the one it sleeps until.
    ticker_wake: Option<Sender<()>>,
    /// The deadline the ticker sleeps until; `u64::MAX` while it is awake or has nothing queued.
    pub(crate) ticker_sleeps_until: CachePadded<AtomicU64>,
    /// The expiry clock (`Lifecycle::advance`), readable without the lock: every clock reading
    /// is raised to it, so that a clock that steps back cannot have expiry end a lease granted
    /// or renewed since before its TTL.
    time_floor: CachePadded<AtomicU64>,
    /// Failed expiry batches (and reload attempts) since open, and the last failure's message.
    pub(crate) ticker_failures: CachePadded<AtomicU64>,
    pub(crate) ticker_last_error: Mutex<Option<String>>,
    /// Storage failures since open, and successful reloads after them.
    pub(crate) failures: AtomicU64,
    pub(crate) reloads: AtomicU64,
    /// Counters and histograms for [`Lessor::stats`](crate::Lessor::stats) (`stats.rs`).
    pub(crate) metrics: CachePadded<Metrics>,
    /// Keep-alives and their thread (`keepalive.rs`); its mutex comes after the writer.
    pub(crate) keepalives: CachePadded<KeepAlives>,
    /// Where this session is on the database's uptime, and what its checkpoints wrote.
    pub(crate) checkpointing: Checkpointing,
    /// The leases revoked whose hidden keys are still being deleted (`reap.rs`).
    pub(crate) reaping: Mutex<Reaping>,
    /// The thread that flushes for async calls (`flusher.rs`); its mutex is a leaf.
    pub(crate) flusher: Flusher,
}

/// A grant applied, for [`Engine::grant_settled`] once durable.
pub(crate) struct Granted {
    id: LeaseId,
    ttl: u64,
    revision: Revision,
}

/// A request applied to the write buffer: its outcome, and what to wait for before it may be
/// acknowledged. The blocking API waits with [`Applied::wait`]; the async one polls the
/// pipeline for the ticket (`async_lessor.rs`).
#[must_use = "a request must be waited for before acknowledging it"]
pub(crate) struct Applied<T> {
    pub(crate) result: Result<T>,
    pub(crate) ticket: Ticket,
}

impl<T> Applied<T> {
    /// Refused before anything was applied.
    fn refused(e: Error) -> Applied<T> {
        Applied {
            result: Err(e),
            ticket: Ticket::DONE,
        }
    }

    /// Waits (leading the flush if nobody is) until durable, then gives the outcome.
    pub(crate) fn wait(self, engine: &Engine) -> Result<T> {
        engine.pipeline.await_durable(engine, self.ticket)?;
        self.result
    }
}

impl Engine {
    /// Recovers the leases of `db` and starts an engine on it; the receiver wakes the ticker.
    pub(crate) fn open(
        config: Config,
        db: Database,
        source: Source,
    ) -> Result<(Arc<Engine>, Receiver<()>)> {
        let clock = &*config.clock;
        let (now, wall) = (now_nanos(clock), wall_nanos(clock));
        let started = Instant::now();
        let recovered =
            crate::contain::storage(|| recovery::recover(&db, config.restart_policy, now, wall))?;
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
            config.event_buffer_bytes,
            config.watch_history,
            config.watch_history_bytes,
        ));
        let pipeline = Pipeline::new(
            config.durability,
            config.two_phase_commit,
            db,
            recovered.counters,
            Lifecycle::new(recovered.expired),
        )?;
        // Revocations a close or a crash interrupted: resumed by the ticker, the next revoke or
        // `revoke_expired`.
        let mut reaping = Reaping::default();
        reaping.reset(pipeline.lock().revoking());
        let engine = Arc::new(Engine {
            hub,
            pipeline,
            path: match &source {
                Source::File(path) => Some(path.clone()),
                Source::Backend(_) => None,
            },
            source,
            state: AtomicU8::new(OPEN),
            table: recovered.table,
            queue: CachePadded::new(Mutex::new(recovered.queue)),
            ticker_wake: config.ticker.then_some(wake_tx),
            ticker_sleeps_until: CachePadded::new(AtomicU64::new(u64::MAX)),
            time_floor: CachePadded::new(AtomicU64::new(0)),
            ticker_failures: CachePadded::new(AtomicU64::new(0)),
            ticker_last_error: Mutex::new(None),
            failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            metrics: CachePadded::new(Metrics::new()),
            keepalives: CachePadded::new(KeepAlives::new()),
            checkpointing: recovered.checkpointing,
            reaping: Mutex::new(reaping),
            flusher: Flusher::default(),
            config,
        });
        Ok((engine, wake_rx))
    }

    /// The clock, in nanoseconds, raised to the time expiry has used (`time_floor`).
    pub(crate) fn now(&self) -> u64 {
        now_nanos(&*self.config.clock).max(self.time_floor.load(Ordering::Relaxed))
    }

    /// Ok for a call that writes: refused once closed, and while poisoned.
    pub(crate) fn check_writable(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            OPEN => Ok(()),
            POISONED => Err(Error::Poisoned),
            _ => Err(Error::Closed),
        }
    }

    /// Ok for a call that only reads or renews: refused once closed. While poisoned it still
    /// answers, from memory and from what the file held before the failure (plus, under
    /// [`Durability::Batched`], the acknowledged writes still waiting for their flush), so that
    /// healthy holders keep their leases while the disk fails.
    pub(crate) fn check_readable(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            OPEN | POISONED => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    /// Runs `f` on what reads see (see [`Pipeline::read`]), with the revision they see.
    pub(crate) fn read<T>(
        &self,
        q: Query<'_>,
        f: impl FnOnce(&Layers<'_>, u64) -> Result<T>,
    ) -> Result<T> {
        let read = crate::contain::storage(|| self.pipeline.read(q, &self.table, f));
        if let Err(e) = &read
            && crate::contain::is_panic(e)
        {
            // Damage the open-time check could not see: nothing from the file is trusted now.
            let _guard = self.pipeline.lock(); // `failed` is called under the writer lock
            Hooks::failed(self, e);
        }
        match self.state.load(Ordering::Acquire) {
            // While poisoned, the snapshot may belong to a database being reopened.
            POISONED => read.map_err(|_| Error::Poisoned),
            CLOSED => Err(Error::Closed),
            _ => read,
        }
    }

    /// Makes every request applied so far durable (one flush), if any is not.
    pub(crate) fn sync(&self) -> Result<()> {
        self.pipeline.sync(self)
    }

    /// When the ticker must flush the write buffer, if it must.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        self.pipeline.flush_due()
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
    pub(crate) fn wake_ticker(&self, deadline: u64) {
        if let Some(tx) = &self.ticker_wake
            && deadline < self.ticker_sleeps_until.load(Ordering::Acquire)
        {
            let _ = tx.try_send(());
        }
    }

    /// The earliest deadline the ticker must act on: now if leases wait for a retry, else the
    /// earliest queued one, if any.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let w = self.pipeline.lock();
        w.life.next_due(&self.queue.lock())
    }

    /// Grants a lease of `ttl`, with id `want` or the next one.
    pub(crate) fn grant(&self, want: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        let applied = self.grant_apply(want, ttl);
        let granted = applied.wait(self)?;
        self.grant_settled(granted)
    }

    /// The first half of [`grant`](Self::grant): applies the grant; once it is durable,
    /// [`grant_settled`](Self::grant_settled) finishes it.
    pub(crate) fn grant_apply(&self, want: Option<LeaseId>, ttl: Duration) -> Applied<Granted> {
        let ttl = match self.config.effective_ttl(ttl) {
            Ok(ttl) => ttl,
            Err(e) => return Applied::refused(e),
        };
        let now = self.now();
        if !room_for_grant(now) {
            return Applied::refused(clock_out_of_range(now));
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
        let (mut w, result, ticket) = self.pipeline.write(self, |life, b| {
            let id = match want {
                Some(id) => id,
                None => LeaseId::new(b.counters.max_lease_id.saturating_add(1))
                    .ok_or(Error::LeaseIdsExhausted)?,
            };
            if b.tables.lease_deleted(id) && self.table.deadline_of(id).is_some() {
                // Its revocation is not durable yet (and left it unclaimed till then).
                return Err(Error::LeaseExists(id));
            }
            if b.tables.is_revoking(id) {
                // Revoked, but its keys are still being deleted (`reap.rs`).
                return Err(Error::LeaseExists(id));
            }
            if life.claim_for_regrant(&self.table, id, now)? {
                replaced = Some(id);
                if b.revoke(id, RevokeCause::Expired, self.config.revoke_chunk)? {
                    // Too many keys to revoke in this request: the ticker revokes it in steps,
                    // after which the id is free.
                    return Err(Error::LeaseExists(id));
                }
            } else if !self.table.contains(id) && b.tables.lease_exists(id)? {
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
                written,
            });
            Ok(id)
        });
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                if let Some(dead) = replaced {
                    w.life.regrant_failed(dead);
                    drop(w);
                    // Revoked by the next expiry pass instead (in steps if it has many keys).
                    self.wake_ticker(0);
                }
                return Applied::refused(e);
            }
        };
        if let Some(dead) = replaced {
            w.life.regrant_applied(dead);
        }
        let revision = Revision(w.counters.revision);
        drop(w);
        Applied {
            result: Ok(Granted { id, ttl, revision }),
            ticket,
        }
    }

    /// The end of every grant, once its record is durable (by then it is visible, with its
    /// first deadline, and queued: its TTL runs from the commit): checks the clock, and counts.
    pub(crate) fn grant_settled(&self, granted: Granted) -> Result<Lease> {
        let Granted { id, ttl, revision } = granted;
        let now = self.now();
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

    /// Writes `key = value`, attached to `lease` or to none.
    pub(crate) fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        self.put_apply(key, value, lease).wait(self)
    }

    /// Applies [`put`](Self::put).
    pub(crate) fn put_apply(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Applied<Revision> {
        if let Err(e) = self
            .config
            .check_key(key)
            .and_then(|()| self.config.check_value(value))
        {
            return Applied::refused(e);
        }
        let now = self.now();
        let (w, result, ticket) = self.pipeline.write(self, |_, b| {
            if let Some(id) = lease {
                self.check_alive(id, now, &b.tables)?;
            }
            let rev = b.counters.bump_revision()?;
            let kv = b.tables.put(key, value, lease, rev)?;
            b.changes.push(Change::Put(kv));
            Ok(rev)
        });
        drop(w);
        Applied {
            result: result.map(Revision),
            ticket,
        }
    }

    /// Deletes `key`; whether it existed.
    pub(crate) fn delete(&self, key: &[u8]) -> Result<bool> {
        self.delete_apply(key).wait(self)
    }

    /// Applies [`delete`](Self::delete).
    pub(crate) fn delete_apply(&self, key: &[u8]) -> Applied<bool> {
        if let Err(e) = self.config.check_key(key) {
            return Applied::refused(e);
        }
        let (w, result, ticket) = self.pipeline.write(self, |_, b| {
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
        drop(w);
        Applied { result, ticket }
    }

    /// Attaches `keys` to lease `id` (or detaches them), all or nothing.
    pub(crate) fn attach_or_detach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
        attach: bool,
    ) -> Result<()> {
        self.attach_or_detach_apply(id, keys, attach).wait(self)
    }

    /// Applies [`attach_or_detach`](Self::attach_or_detach).
    pub(crate) fn attach_or_detach_apply<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
        attach: bool,
    ) -> Applied<()> {
        let mut keys: Vec<K> = keys.into_iter().collect();
        for k in &keys {
            if let Err(e) = self.config.check_key(k.as_ref()) {
                return Applied::refused(e);
            }
        }
        // A key named twice counts once (the second detach would otherwise find it detached).
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.as_ref().to_vec()));
        let now = self.now();
        let (w, result, ticket) = self.pipeline.write(self, |_, b| {
            self.check_alive(id, now, &b.tables)?;
            for k in &keys {
                if attach {
                    b.tables.attach(id, k.as_ref())?;
                } else {
                    b.tables.detach(id, k.as_ref())?;
                }
            }
            Ok(())
        });
        drop(w);
        Applied { result, ticket }
    }

    /// Commits an etcd-style transaction.
    pub(crate) fn txn(&self, spec: &Txn) -> Result<TxnResponse> {
        self.transaction_apply(spec).wait(self)
    }

    /// Applies [`txn`](Self::txn).
    pub(crate) fn transaction_apply(&self, spec: &Txn) -> Applied<TxnResponse> {
        if let Err(e) = spec.check(|k| self.config.check_key(k), |v| self.config.check_value(v)) {
            return Applied::refused(e);
        }
        let now = self.now();
        let (w, result, ticket) = self.pipeline.write(self, |_, b| {
            spec.run(b, |id, tables| self.check_alive(id, now, tables))
        });
        let revision = Revision(w.counters.revision);
        drop(w);
        Applied {
            result: result.map(|(succeeded, responses)| TxnResponse {
                succeeded,
                revision,
                responses,
            }),
            ticket,
        }
    }

    /// What is known of live lease `id`.
    /// What is known of live lease `id`: from the table alone (O(1), no lock), or with its keys
    /// (read through the write buffer and the file).
    pub(crate) fn time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseInfo> {
        let now = self.now();
        let info = |keys| {
            let (ttl, deadline) = self.table.alive(id, now).ok_or(Error::LeaseNotFound(id))?;
            Ok(LeaseInfo {
                id,
                ttl: Duration::from_nanos(ttl),
                remaining: Duration::from_nanos(deadline.saturating_sub(now).min(ttl)),
                keys,
            })
        };
        if !with_keys {
            return info(Vec::new());
        }
        self.read(Query::LeaseKeys(id), |view, _| info(view.lease_keys(id)?))
    }

    /// A new watch of `prefix` (`exact`: of that key alone), from revision `from` or the next
    /// change.
    pub(crate) fn watch(&self, prefix: &[u8], exact: bool, from: Option<u64>) -> Result<Watch> {
        self.hub
            .with_watchers(|w| w.add(&self.hub, prefix, exact, from))
            .ok_or(Error::Closed)?
    }

    /// A new subscription to lease events.
    pub(crate) fn subscribe(&self) -> Result<crate::events::LeaseEvents> {
        self.hub.subscribe().ok_or(Error::Closed)
    }

    /// Whether a request may use lease `id` at `now`: alive in the table, and not revoked by a
    /// request still in the buffer (`tables`).
    fn check_alive(&self, id: LeaseId, now: u64, tables: &Tables<'_>) -> Result<()> {
        match self.table.alive(id, now) {
            Some(_) if !tables.lease_deleted(id) => Ok(()),
            _ => Err(Error::LeaseNotFound(id)),
        }
    }

    /// Revokes lease `id` and its keys.
    pub(crate) fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.revoke_if(id, || true)
    }

    /// Applies [`revoke`](Self::revoke): the revision, and whether the lease has keys left to
    /// delete in steps (`reap.rs`). The ticker is woken for them already.
    pub(crate) fn revoke_apply(&self, id: LeaseId) -> Applied<(Revision, bool)> {
        self.revoke_if_apply(id, || true)
    }

    /// [`revoke`](Self::revoke), if `still_ours()` says, under the writer lock, that the lease is
    /// still the one the caller means; [`Error::LeaseNotFound`] otherwise. Keep-alives are told
    /// of every lease's end under that lock, before its id can be granted again: a keep-alive's
    /// revoke-on-drop uses this to revoke only the lease it kept alive.
    pub(crate) fn revoke_if(
        &self,
        id: LeaseId,
        still_ours: impl FnOnce() -> bool,
    ) -> Result<Revision> {
        self.revoke_if_apply(id, still_ours)
            .wait(self)
            .map(|(revision, _)| revision)
    }

    /// Applies [`revoke_if`](Self::revoke_if); see [`revoke_apply`](Self::revoke_apply).
    fn revoke_if_apply(
        &self,
        id: LeaseId,
        still_ours: impl FnOnce() -> bool,
    ) -> Applied<(Revision, bool)> {
        let mut claimed = None;
        let mut marked = false;
        let (mut w, result, ticket) = self.pipeline.write(self, |life, b| {
            if !still_ours() {
                return Err(Error::LeaseNotFound(id));
            }
            if b.tables.lease_deleted(id) {
                // Revoked by a request not yet durable.
                return Err(Error::LeaseNotFound(id));
            }
            let late = self.pipeline.mode() == Durability::Immediate
                && life.revocable_later(&self.table, id)?;
            if !late {
                claimed = life.claim_for_revoke(&self.table, id)?;
            }
            marked = b.revoke(id, RevokeCause::Revoked, self.config.revoke_chunk)?;
            if late {
                // Claimed once durable: until then it stays alive to everyone (renewals
                // included); requests that would use it see its record deleted.
                b.deferred.push(id);
            } else {
                b.claims.push((id, claimed));
            }
            Ok(())
        });
        if let Err(e) = result {
            w.life.revoke_failed(&self.table, id, claimed, &e);
            return Applied::refused(e);
        }
        w.life.revoke_applied(id);
        if marked {
            self.reaping.lock().add(id, RevokeCause::Revoked);
        }
        self.compact_queue();
        self.metrics.revokes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(lease = id.get(), "lease revoked");
        let revision = Revision(w.counters.revision);
        drop(w);
        if marked {
            // Its other keys, hidden since the request above, are deleted chunk by chunk
            // (`reap.rs`): by `Lessor::revoke` before it returns, else by the ticker.
            self.wake_ticker(0);
        }
        Applied {
            result: Ok((revision, marked)),
            ticket,
        }
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
        self.pipeline.await_durable(self, last)
    }

    /// Revokes up to one batch of expired leases in one request; returns their ids in deadline
    /// order, and what to wait for before they count as revoked on disk. Leases of a batch that
    /// failed stay claimed (dead to callers) and go first at the next attempt.
    fn expire_batch(&self, now: u64) -> Result<(Vec<LeaseId>, Ticket)> {
        // Claim what is due first, under the writer lock but outside any request: a wake-up
        // that only finds renewed leases (requeued) writes nothing.
        {
            let mut w = self.pipeline.lock();
            let now = w.life.advance(now);
            self.time_floor.store(now, Ordering::Relaxed);
            let mut queue = self.queue.lock();
            if !w
                .life
                .claim_due(now, &mut queue, &self.table, self.config.expiry_batch)
            {
                return Ok((Vec::new(), Ticket::DONE));
            }
        }
        let mut batch = Vec::new();
        let mut marked = Vec::new();
        let (mut w, result, ticket) = self.pipeline.write(self, |life, b| {
            batch = life.take_batch();
            marked.clear();
            for &id in &batch {
                // A revocation not yet durable deleted it already: no second revocation.
                if !b.tables.lease_deleted(id)
                    && b.revoke(id, RevokeCause::Expired, self.config.revoke_chunk)?
                {
                    marked.push(id);
                }
                b.claims.push((id, None));
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                if !marked.is_empty() {
                    let mut reaping = self.reaping.lock();
                    for &id in &marked {
                        reaping.add(id, RevokeCause::Expired);
                    }
                }
                let late = w.life.expired(&batch);
                drop(w);
                self.count_expired(&batch, &late);
                Ok((batch, ticket))
            }
            Err(e) => {
                w.life.batch_failed(batch);
                Err(e)
            }
        }
    }

    /// Counts an applied expiry batch, and how late each of its leases was.
    fn count_expired(&self, batch: &[LeaseId], late: &[(LeaseId, u64)]) {
        let m = &self.metrics;
        m.expiry_batches.fetch_add(1, Ordering::Relaxed);
        m.expiries.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now = self.now();
        for &(id, deadline) in late {
            m.lateness.record(now.saturating_sub(deadline));
            tracing::debug!(lease = id.get(), "lease expired");
        }
        tracing::debug!(leases = batch.len(), "expiry batch committed");
    }

    /// Drops queue entries of revoked leases once they outnumber the live ones.
    fn compact_queue(&self) {
        let mut q = self.queue.lock();
        let live = self.table.len();
        if q.len() > 2 * live + 1024 {
            q.compact(|id| self.table.deadline_of(id));
        }
    }

    /// The lessor's health; the ticker's part (`ticker_running`, `ticker_stopped`) is the
    /// caller's, who holds the ticker's handle.
    pub(crate) fn health(&self, ticker_running: bool, ticker_stopped: Option<String>) -> Health {
        let keepalive = self.keepalives.health();
        Health {
            ticker_running,
            ticker_stopped,
            ticker_failures: self.ticker_failures.load(Ordering::Relaxed),
            last_ticker_error: self.ticker_last_error.lock().clone(),
            poisoned: self.is_poisoned(),
            storage_failures: self.failures.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            checkpoints: self.checkpointing.batches(),
            checkpointed_leases: self.checkpointing.leases(),
            keepalive_running: keepalive.running,
            keepalive_stopped: keepalive.stopped,
            keepalive_failures: keepalive.failures,
            last_keepalive_error: keepalive.last_error,
        }
    }

    /// The figures of [`Lessor::stats`](crate::Lessor::stats), with `health`.
    pub(crate) fn stats(&self, health: Health) -> Result<Stats> {
        let (keys, attached_keys) = self.read(Query::Counts, |view, _| view.key_counts())?;
        let m = &self.metrics;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Ok(Stats {
            leases: self.table.len() as u64,
            keys,
            attached_keys,
            revision: self.pipeline.lock().counters.revision,
            file_size: self
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
            commits: load(&m.commits),
            fsyncs: load(&m.fsyncs),
            commit_latency: m.commit_latency.summary(),
            health,
        })
    }

    /// The checks of [`Lessor::verify_report`](crate::Lessor::verify_report): everything applied
    /// goes to the file first; then, holding the writer (so that memory and file stay still
    /// while they are compared), nothing may have come in meanwhile.
    pub(crate) fn verify_report(&self) -> Result<Vec<Problem>> {
        for _ in 0..100 {
            self.sync()?;
            let guard = self.pipeline.store();
            let db = guard.as_ref().ok_or(Error::Closed)?;
            let w = self.pipeline.lock();
            if !w.is_flushed() {
                continue;
            }
            let read = db.begin_read()?;
            let store::Report {
                mut problems,
                leases: on_disk,
            } = crate::contain::storage(|| store::verify(&read))?;
            let in_memory = self.table.all_ids();
            if on_disk != in_memory {
                problems.push(Problem::MemoryDiffersFromFile {
                    in_memory: in_memory.len(),
                    in_file: on_disk.len(),
                });
            }
            problems.extend(crate::integrity::check_file(self.path.as_deref())?);
            drop(w);
            return Ok(problems);
        }
        Err(Error::Unavailable(
            "verify: writes kept coming; try again when the lessor is quieter".into(),
        ))
    }

    /// Starts closing: `None` if it was closed already, else the state it was in.
    pub(crate) fn begin_close(&self) -> Option<u8> {
        match self.state.swap(CLOSED, Ordering::AcqRel) {
            CLOSED => None,
            was => Some(was),
        }
    }

    /// Finishes closing, once the ticker has stopped: ends keep-alives, revokes what has
    /// expired, checkpoints (with `checkpoint_all`, `checkpoint.rs`), flushes the write buffer
    /// and closes the file.
    pub(crate) fn finish_close(
        &self,
        was: u8,
        checkpoint_all: impl FnOnce(&Engine) -> Result<()>,
    ) -> Result<()> {
        self.keepalives.close(); // joins `lessor-keepalive`; keep-alives end `Closed`
        let poisoned = was == POISONED
            // Under Batched, acknowledged writes wait in the buffer: one last try to write them.
            && !(matches!(self.pipeline.mode(), Durability::Batched { .. })
                && self.reopen().is_ok());
        // Revoke what has expired, unless storage failed (then the next open decides).
        let reaped = if poisoned {
            Ok(())
        } else {
            self.expire_all(|_| {})
        };
        // Then the deadlines renewed since the last checkpoint (nothing under Reset).
        let reaped = reaped.and_then(|()| {
            if poisoned {
                Ok(())
            } else {
                checkpoint_all(self)
            }
        });
        // What is buffered goes to disk; then, once no call is in flight, what came meanwhile.
        let reaped = if poisoned {
            reaped
        } else {
            reaped.and(self.sync())
        };
        let db = self.pipeline.store_mut().take();
        let reaped = match &db {
            Some(db) if !poisoned => reaped.and(self.pipeline.flush_last(self, db)),
            _ => reaped,
        };
        self.pipeline.close();
        self.flusher.close(); // joins `lessor-flusher`: its waits ended with the pipeline
        self.table.clear();
        *self.queue.lock() = ExpiryQueue::new();
        self.hub.close();
        // redb writes its allocator state as its `Database` drops, and panics on some damage.
        let dropped = crate::contain::storage(|| {
            drop(db);
            Ok(())
        });
        self.source.close();
        reaped.and(dropped)
    }

    /// Reopens the database after a storage failure. `Ok(false)` if there was nothing to do
    /// (not poisoned).
    ///
    /// Under [`Durability::Batched`] every request in the write buffer was acknowledged, so
    /// memory (the file as of its last commit, plus the buffer) is the truth: nothing is read
    /// back, the buffer is written to the reopened file, and only then are writes accepted
    /// again. Under [`Durability::Immediate`] the buffer was never acknowledged, and memory is
    /// brought back in line with the file (see `reload.rs`).
    ///
    /// Takes the store's write lock, so no call is in flight while memory changes, then the
    /// writer and the queue, as every writer does.
    pub(crate) fn reload(&self) -> Result<bool> {
        if self.state.load(Ordering::Acquire) != POISONED {
            return Ok(false);
        }
        self.reopen()
    }

    fn reopen(&self) -> Result<bool> {
        let mut store = self.pipeline.store_mut();
        // redb lets go of the file (or backend) only when its `Database` drops (which may panic
        // on a damaged file: contained, it lets go all the same).
        let old = store.take();
        let _ = crate::contain::storage(|| {
            drop(old);
            Ok(())
        });
        let db = crate::contain::storage(|| self.source.open(&self.config))?;
        let mut lost = Vec::new();
        let revision = match self.pipeline.mode() {
            Durability::Batched { .. } => {
                self.pipeline.rewrite(self, &db)?;
                self.pipeline.lock().counters.revision
            }
            Durability::Immediate => self.reconcile(&db, &mut lost)?,
        };
        {
            // The revocations in steps as the file (and the buffer) now has them, from the start.
            let w = self.pipeline.lock();
            self.reaping.lock().reset(w.revoking());
        }
        self.hub.reopen(revision);
        if !lost.is_empty() {
            self.keepalives.leases_ended(&lost, EndReason::Lost);
        }
        *store = Some(db);
        let reopened = self
            .state
            .compare_exchange(POISONED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        drop(store);
        if reopened {
            tracing::info!(
                lost = lost.len(),
                revision,
                "reopened the database after a storage failure"
            );
            self.reloads.fetch_add(1, Ordering::Relaxed);
            self.wake_ticker(0); // leases to retry, or deadlines that passed meanwhile
        }
        Ok(reopened)
    }

    /// Brings memory back in line with the file `db` (the file is the truth); returns the
    /// revision, and puts in `lost` the leases memory had that the file has not.
    fn reconcile(&self, db: &Database, lost: &mut Vec<LeaseId>) -> Result<u64> {
        let clock = &*self.config.clock;
        let (now, wall) = (now_nanos(clock), wall_nanos(clock));
        let file = crate::contain::storage(|| {
            recovery::recover(db, self.config.restart_policy, now, wall)
        })?;
        let mut w = self.pipeline.lock();
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
        w.life.reloaded(plan.retry);
        self.pipeline.reset(&mut w, db)?;
        w.counters.revision = w.counters.revision.max(file.counters.revision);
        w.counters.max_lease_id = w.counters.max_lease_id.max(file.counters.max_lease_id);
        lost.extend_from_slice(&plan.lost);
        Ok(w.counters.revision)
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
}

impl Hooks for Engine {
    fn applied(&self, changes: &[Change]) {
        // Keep-alives hear of their lease's end before anyone can grant its id again.
        self.end_keep_alives(changes);
        for c in changes {
            if let Change::Granted { id, ttl, .. } = c {
                // In memory before anyone hears of it.
                self.table.insert_pending(*id, *ttl);
            }
        }
    }

    fn now(&self) -> u64 {
        Engine::now(self)
    }

    fn publish(&self, changes: Vec<Change>, now: u64) {
        // A granted lease gets its first deadline as it becomes visible: whoever hears of it
        // can use it at once, and its TTL runs from its commit.
        for c in &changes {
            if let Change::Granted {
                id, ttl, written, ..
            } = c
            {
                let deadline = deadline_after(now, *ttl);
                if self.table.settle_written(*id, deadline, *written) {
                    self.queue.lock().push(deadline, *id);
                    self.wake_ticker(deadline);
                }
            }
        }
        self.hub.publish(changes);
    }

    fn revoked(&self, id: LeaseId) {
        // Unless a grant of the same id since replaced it.
        self.table.remove_claimed(id);
    }

    fn revoked_late(&self, id: LeaseId) {
        // No grant of its id can have come in between: while its record is deleted in the
        // buffer and its entry unclaimed, a grant of the id gets `LeaseExists`.
        self.table.claim(id);
        self.table.remove_claimed(id);
    }

    fn give_back(&self, id: LeaseId, prior: u64) {
        self.table.unclaim(id, prior);
    }

    fn failed(&self, e: &Error) {
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

    fn wake_flusher(&self) -> bool {
        self.wake_ticker(0);
        self.ticker_wake.is_some()
    }

    fn committed(&self, took: Duration) {
        self.metrics.committed(took, true);
    }
}

/// The error of a grant at clock reading `now`, past the last deadline a lease can have.
fn clock_out_of_range(now: u64) -> Error {
    Error::ClockOutOfRange {
        now: Duration::from_nanos(now),
    }
}
