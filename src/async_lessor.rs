//! [`AsyncLessor`]: the lessor for async code, whose futures never block their executor.
//!
//! # Implementation
//!
//! A write is a request to the commit pipeline (`pipeline.rs`) in two halves: applying it to
//! the write buffer, in microseconds under the writer lock and without disk I/O, then waiting
//! until a flush has made it durable. The blocking API waits on a condvar, leading the flush
//! itself when nobody else is; a future applies its request at its first poll, then polls the
//! syncer (`durability.rs`) with its waker and asks the flusher thread (`flusher.rs`) for the
//! flush: the fsync happens there, never on the task. What a request means for memory once
//! durable (a grant's first deadline, a revocation's lease leaving the table) is done by the
//! flush itself, as for blocking callers, so a future only reads its outcome.
//!
//! Reads, [`renew`](AsyncLessor::renew), keep-alives, watches and subscriptions never wait
//! for the disk: they are the blocking API's own calls, run inline.
//!
//! No runtime of our own and no dependency on one: the waiting is done with wakers, so the
//! futures run on tokio (multi-thread or current-thread), `futures::executor`, or any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::durability::Ticket;
use crate::engine::{Applied, Engine};
use crate::error::{Error, Result};
use crate::events::LeaseEvents;
use crate::keepalive::{KeepAlive, KeepAliveOptions};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::lessor::Lessor;
use crate::range::{Page, RangeOptions};
use crate::signal::WakerCell;
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

/// A [`Lessor`] for async code: the same operations under the same names, as `async fn`s that
/// never block the executor's thread on an fsync or a flush.
///
/// Made from a lessor with `AsyncLessor::from(lessor)`; `Clone + Send + Sync`, and clones
/// share the database (as do the [`Lessor`] it came from and its clones: blocking and async
/// callers can be mixed, and share fsyncs). The database closes with
/// [`close`](Self::close), or when the last clone of either kind is dropped (that close blocks:
/// in async code, call `close().await` first).
///
/// # What waits, and where
/// - A write ([`grant`](Self::grant), [`put`](Self::put), [`revoke`](Self::revoke),
///   [`txn`](Self::txn)...) is applied on the calling task at its first poll,
///   in microseconds, under the writer lock (which nothing holds across disk I/O). Under
///   [`Durability::Immediate`](crate::Durability::Immediate) the future then waits, without
///   blocking, until the flush that makes it durable has committed: the flush runs on the
///   lessor's own `lessor-flusher` thread, started by the first async write, for every async
///   write applied meanwhile (group commit, shared with blocking callers). Under
///   [`Durability::Batched`](crate::Durability::Batched) it is ready once applied, unless the
///   write buffer is full (then it waits for the flush, as a blocking call would).
/// - Reads ([`get`](Self::get), [`range`](Self::range), [`time_to_live`](Self::time_to_live)...)
///   read memory and the file's page cache inline, as the blocking calls do: they never wait
///   for a write or an fsync.
/// - [`close`](Self::close) runs the blocking close on a thread of its own.
///
/// # Cancellation
/// A write future does its work at its first poll. Dropped before it, nothing happened.
/// Dropped after it, the write is applied, all of it, and becomes durable with the next flush as
/// if awaited (only a storage failure can still undo it, which the awaiting caller would have
/// been told with an error): it is done, never half done. A [`revoke`](Self::revoke) of a
/// lease with more than [`revoke_chunk_size`](crate::Builder::revoke_chunk_size) keys, dropped
/// while deleting them, leaves the rest to the ticker (or to
/// [`revoke_expired`](Lessor::revoke_expired)): they are hidden from every reader already.
///
/// ```
/// use std::time::Duration;
/// use lessor::{AsyncLessor, Lessor};
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// let lessor = AsyncLessor::from(Lessor::open(&path)?);
/// futures::executor::block_on(async {
///     let lease = lessor.grant(Duration::from_secs(10)).await?;
///     lessor.put_with_lease("/cron/lock/job1", "10001", lease.id).await?;
///     assert_eq!(lessor.get("/cron/lock/job1").await?.unwrap().value, b"10001");
///     lessor.renew(lease.id)?; // never waits: a plain call
///     lessor.revoke(lease.id).await?; // its keys go with it
///     assert!(lessor.get("/cron/lock/job1").await?.is_none());
///     lessor.close().await
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncLessor {
    lessor: Lessor,
}

impl From<Lessor> for AsyncLessor {
    fn from(lessor: Lessor) -> AsyncLessor {
        AsyncLessor { lessor }
    }
}

impl From<AsyncLessor> for Lessor {
    fn from(lessor: AsyncLessor) -> Lessor {
        lessor.lessor
    }
}

impl std::fmt::Debug for AsyncLessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AsyncLessor").field(&self.lessor).finish()
    }
}

impl AsyncLessor {
    /// The blocking handle on the same database, for what the async API does not have
    /// (`stats`, `health`, `verify`, `backup`...). Its writes block the calling thread.
    pub fn lessor(&self) -> &Lessor {
        &self.lessor
    }

    /// Grants a lease of `ttl` with a new id; see [`Lessor::grant`].
    ///
    /// # Errors
    /// As [`Lessor::grant`].
    pub async fn grant(&self, ttl: Duration) -> Result<Lease> {
        let engine = self.lessor.writable_engine()?;
        let granted = durable(engine, engine.grant_apply(None, ttl)).await?;
        engine.grant_settled(granted)
    }

    /// Grants a lease with the id of the caller's choice; see [`Lessor::grant_with_id`].
    ///
    /// # Errors
    /// As [`Lessor::grant_with_id`].
    pub async fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        let engine = self.lessor.writable_engine()?;
        let granted = durable(engine, engine.grant_apply(Some(id), ttl)).await?;
        engine.grant_settled(granted)
    }

    /// Renews a lease; see [`Lessor::renew`]. A plain call: it touches no disk and takes no
    /// lock, so it never waits.
    ///
    /// # Errors
    /// As [`Lessor::renew`].
    pub fn renew(&self, id: LeaseId) -> Result<Duration> {
        self.lessor.renew(id)
    }

    /// Keeps a lease alive in the background; see [`Lessor::keep_alive`]. The handle is a
    /// [`Stream`](crate::Stream) of renewals, and [`KeepAlive::lost`] a future of its end.
    ///
    /// # Errors
    /// As [`Lessor::keep_alive`].
    pub fn keep_alive(&self, id: LeaseId) -> Result<KeepAlive> {
        self.lessor.keep_alive(id)
    }

    /// [`keep_alive`](Self::keep_alive) with options; see [`Lessor::keep_alive_with`].
    ///
    /// # Errors
    /// As [`Lessor::keep_alive_with`].
    pub fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        self.lessor.keep_alive_with(id, opts)
    }

    /// Revokes a lease, deleting its keys; see [`Lessor::revoke`]. A lease with more than
    /// [`revoke_chunk_size`](crate::Builder::revoke_chunk_size) keys has them deleted chunk by
    /// chunk before this returns, each chunk applied on the task and flushed by the flusher.
    ///
    /// # Errors
    /// As [`Lessor::revoke`].
    pub async fn revoke(&self, id: LeaseId) -> Result<Revision> {
        let engine = self.lessor.writable_engine()?;
        let (revision, marked) = durable(engine, engine.revoke_apply(id)).await?;
        if marked && let Err(e) = reap(engine, id).await {
            tracing::warn!(lease = id.get(), error = %e, "deleting a revoked lease's keys failed; resumed later");
            engine.wake_ticker(0);
        }
        Ok(revision)
    }

    /// What is known of a live lease, without its keys; see [`Lessor::time_to_live`].
    ///
    /// # Errors
    /// As [`Lessor::time_to_live`].
    pub async fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.lessor.time_to_live(id)
    }

    /// [`time_to_live`](Self::time_to_live) with the lease's keys; see
    /// [`Lessor::time_to_live_with_keys`].
    ///
    /// # Errors
    /// As [`Lessor::time_to_live_with_keys`].
    pub async fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.lessor.time_to_live_with_keys(id)
    }

    /// Ids of the live leases, ascending; see [`Lessor::leases`].
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.lessor.leases()
    }

    /// Writes `key = value` attached to lease `id`; see [`Lessor::put_with_lease`].
    ///
    /// # Errors
    /// As [`Lessor::put_with_lease`].
    pub async fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        id: LeaseId,
    ) -> Result<Revision> {
        let engine = self.lessor.writable_engine()?;
        durable(
            engine,
            engine.put_apply(key.as_ref(), value.as_ref(), Some(id)),
        )
        .await
    }

    /// Writes `key = value` with no lease; see [`Lessor::put`].
    ///
    /// # Errors
    /// As [`Lessor::put`].
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        let engine = self.lessor.writable_engine()?;
        durable(engine, engine.put_apply(key.as_ref(), value.as_ref(), None)).await
    }

    /// Deletes a key; whether it existed. See [`Lessor::delete`].
    ///
    /// # Errors
    /// As [`Lessor::delete`].
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let engine = self.lessor.writable_engine()?;
        durable(engine, engine.delete_apply(key.as_ref())).await
    }

    /// Attaches existing keys to lease `id`; see [`Lessor::attach`].
    ///
    /// # Errors
    /// As [`Lessor::attach`].
    pub async fn attach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        let engine = self.lessor.writable_engine()?;
        durable(engine, engine.attach_or_detach_apply(id, keys, true)).await
    }

    /// Detaches keys from lease `id`; see [`Lessor::detach`].
    ///
    /// # Errors
    /// As [`Lessor::detach`].
    pub async fn detach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        let engine = self.lessor.writable_engine()?;
        durable(engine, engine.attach_or_detach_apply(id, keys, false)).await
    }

    /// Reads one key; see [`Lessor::get`].
    ///
    /// # Errors
    /// As [`Lessor::get`].
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        self.lessor.get(key)
    }

    /// Reads every key under `prefix`; see [`Lessor::range`].
    ///
    /// # Errors
    /// As [`Lessor::range`].
    pub async fn range(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KeyValue>> {
        self.lessor.range(prefix)
    }

    /// [`range`](Self::range) with the revision it was read at; see
    /// [`Lessor::range_with_revision`].
    ///
    /// # Errors
    /// As [`Lessor::range_with_revision`].
    pub async fn range_with_revision(&self, prefix: impl AsRef<[u8]>) -> Result<Snapshot> {
        self.lessor.range_with_revision(prefix)
    }

    /// A page of the keys from `start` up to `end`, with the count of the whole range; see
    /// [`Lessor::range_page`].
    ///
    /// # Errors
    /// As [`Lessor::range_page`].
    pub async fn range_page(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        options: RangeOptions,
    ) -> Result<Page> {
        self.lessor.range_page(start, end, options)
    }

    /// The database's current revision; see [`Lessor::revision`].
    ///
    /// # Errors
    /// As [`Lessor::revision`].
    pub async fn revision(&self) -> Result<Revision> {
        self.lessor.revision()
    }

    /// Whether the lessor can serve calls now, for a readiness probe; see [`Lessor::ready`].
    /// Memory only: it never waits.
    ///
    /// # Errors
    /// As [`Lessor::ready`].
    pub async fn ready(&self) -> Result<()> {
        self.lessor.ready()
    }

    /// Watches the keys under `prefix`; see [`Lessor::watch`]. A [`Watch`] is a
    /// [`Stream`](crate::Stream) of events.
    ///
    /// # Errors
    /// As [`Lessor::watch`].
    pub fn watch(&self, prefix: impl AsRef<[u8]>) -> Result<Watch> {
        self.lessor.watch(prefix)
    }

    /// Watches one key exactly; see [`Lessor::watch_key`].
    ///
    /// # Errors
    /// As [`Lessor::watch_key`].
    pub fn watch_key(&self, key: impl AsRef<[u8]>) -> Result<Watch> {
        self.lessor.watch_key(key)
    }

    /// Watches the keys under `prefix` from revision `from`; see [`Lessor::watch_from`].
    ///
    /// # Errors
    /// As [`Lessor::watch_from`].
    pub fn watch_from(&self, prefix: impl AsRef<[u8]>, from: Revision) -> Result<Watch> {
        self.lessor.watch_from(prefix, from)
    }

    /// Subscribes to lease events; see [`Lessor::subscribe`]. [`LeaseEvents`] is a
    /// [`Stream`](crate::Stream).
    ///
    /// # Errors
    /// As [`Lessor::subscribe`].
    pub fn subscribe(&self) -> Result<LeaseEvents> {
        self.lessor.subscribe()
    }

    /// Commits an etcd-style transaction: [`Txn`] says what to compare and what to run
    /// either way; see [`Lessor::txn`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{AsyncLessor, Compare, Lessor, Op, Txn};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = AsyncLessor::from(Lessor::open_in_memory()?);
    /// futures::executor::block_on(async {
    ///     let me = lessor.grant(Duration::from_secs(10)).await?;
    ///     let lock = Txn::new()
    ///         .when(Compare::absent("/cron/lock/job1"))
    ///         .then(Op::put_with_lease("/cron/lock/job1", "worker-1", me.id))
    ///         .otherwise(Op::get("/cron/lock/job1"));
    ///     assert!(lessor.txn(lock).await?.succeeded);
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Lessor::txn`](crate::Lessor::txn).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let engine = self.lessor.writable_engine()?;
        durable(engine, engine.transaction_apply(&txn)).await
    }

    /// Makes every change acknowledged so far durable; see [`Lessor::sync`]. The flush runs on
    /// the flusher thread.
    ///
    /// # Errors
    /// As [`Lessor::sync`].
    pub async fn sync(&self) -> Result<()> {
        let engine = self.lessor.writable_engine()?;
        synced(engine).await
    }

    /// Closes the lessor; see [`Lessor::close`]. The close (joining the ticker, the last
    /// expiry, checkpoint and flush) runs on a thread of its own while the task waits.
    ///
    /// # Errors
    /// As [`Lessor::close`], and [`Error::Spawn`] if that thread could not be started (the
    /// lessor is still open then).
    pub async fn close(&self) -> Result<()> {
        let lessor = self.lessor.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cell = WakerCell::new();
        let wake = Arc::clone(&cell);
        std::thread::Builder::new()
            .name("lessor-close".into())
            .spawn(move || {
                let _ = tx.send(lessor.close());
                drop(tx);
                wake.wake();
            })
            .map_err(Error::Spawn)?;
        Outcome { rx, cell }.await
    }
}

/// Waits, without blocking, until `applied` is durable; then gives its outcome.
async fn durable<T>(engine: &Arc<Engine>, applied: Applied<T>) -> Result<T> {
    if let Some(seq) = applied.ticket.0 {
        Durable::new(engine, seq).await?;
    }
    applied.result
}

/// Waits, without blocking, until every request applied so far is durable.
async fn synced(engine: &Arc<Engine>) -> Result<()> {
    Durable::new(engine, engine.pipeline.applied_seq()).await
}

/// Deletes the hidden keys of revoked lease `id` chunk by chunk, as `reap::lease` does, each
/// chunk applied on the task and flushed by the flusher before the next.
async fn reap(engine: &Arc<Engine>, id: LeaseId) -> Result<()> {
    loop {
        let Some((left, ticket)) = crate::reap::step_apply(engine, Some(id))? else {
            return Ok(());
        };
        durable(
            engine,
            Applied {
                result: Ok(()),
                ticket,
            },
        )
        .await?;
        synced(engine).await?;
        if !left {
            return Ok(());
        }
    }
}

/// The future of a request's durability: see the module docs.
struct Durable<'a> {
    engine: &'a Arc<Engine>,
    seq: u64,
    /// Whether the flusher has been asked for this request's flush.
    asked: bool,
}

impl<'a> Durable<'a> {
    fn new(engine: &'a Arc<Engine>, seq: u64) -> Durable<'a> {
        Durable {
            engine,
            seq,
            asked: false,
        }
    }
}

impl Future for Durable<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let polled = self.engine.pipeline.poll_durable(self.seq, cx);
        if polled.is_pending() && !self.asked {
            // The waker is registered first, so the end of the flush asked for cannot be missed.
            self.asked = true;
            let engine = self.engine;
            let flush = || {
                let engine = Arc::clone(engine);
                move |seq| {
                    // Its failures reach the waiting tasks through the syncer.
                    let _ = engine.pipeline.await_durable(&*engine, Ticket(Some(seq)));
                }
            };
            if let Err(e) = engine.flusher.ask(self.seq, flush) {
                return Poll::Ready(Err(e));
            }
        }
        polled
    }
}

/// The outcome of work done on a thread of its own ([`AsyncLessor::close`]).
struct Outcome<T> {
    rx: Receiver<Result<T>>,
    cell: Arc<WakerCell>,
}

impl<T> Future for Outcome<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match crate::signal::poll_recv(&self.rx, &self.cell, cx, || false, || false) {
            Poll::Ready(Some(outcome)) => Poll::Ready(outcome),
            // The thread ended without an answer: it panicked.
            Poll::Ready(None) => Poll::Ready(Err(Error::Unavailable(
                "the close thread ended without an answer".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}
