//! An embedded, in-process lease engine: what etcd's lease subsystem gives a cluster, in one
//! process and one [redb](https://docs.rs/redb) file.
//!
//! A *lease* is a promise that expires: it is granted with a TTL, kept alive by renewing it, and
//! ends when it is revoked or when a TTL passes without a renewal. Keys of the embedded key-value
//! store can be *attached* to a lease; when the lease ends, its keys are deleted with it, in one
//! transaction. That is the building block of sessions, locks with a TTL, service registries and
//! worker heartbeats: a holder that crashes stops renewing, and what it held disappears.
//!
//! ```
//! use std::time::Duration;
//! use lessor::Lessor;
//!
//! # fn main() -> lessor::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("data.redb");
//! let lessor = Lessor::open(&path)?;                       // a background ticker runs expiry
//! let lease = lessor.grant(Duration::from_secs(10))?;
//! let rev = lessor.put_with_lease("/cron/lock/job1", "10001", lease.id)?;
//! println!("put at revision {rev}");
//!
//! lessor.renew(lease.id)?;                                 // 10 s more, no disk write
//! let info = lessor.time_to_live_with_keys(lease.id)?;
//! assert_eq!(info.keys, vec![b"/cron/lock/job1".to_vec()]);
//!
//! lessor.revoke(lease.id)?;                                // the key goes with it
//! assert!(lessor.get("/cron/lock/job1")?.is_none());
//! # Ok(()) }
//! ```
//!
//! # Concepts
//! - **Lease** ([`LeaseId`], [`Lease`]): granted with a TTL between the lessor's minimum (shorter
//!   TTLs are raised to it) and maximum. It is dead the instant its deadline passes: `renew`,
//!   `time_to_live`, `attach` and `put_with_lease` refuse it with [`Error::LeaseNotFound`] even
//!   before the ticker has revoked it, and a lease that has been refused is never resurrected.
//! - **Renew**: moves the deadline to now + TTL. It happens in memory only, without locks, in
//!   tens of nanoseconds (a few hundred with a million leases out of cache).
//! - **Attachment**: a key belongs to at most one lease. [`Lessor::put_with_lease`] writes a key
//!   onto a lease, as etcd's put-with-lease does; [`Lessor::attach`] and [`Lessor::detach`] move
//!   existing keys onto or off a lease without changing them. When the lease ends, its keys are
//!   deleted in the same transaction.
//! - **Revision** ([`Revision`]): one counter for the whole database, advanced by every put,
//!   every delete, and every revocation that deletes keys.
//! - **Keep-alive** ([`KeepAlive`]): [`Lessor::keep_alive`] renews a lease every third of its TTL
//!   from one shared background thread until the handle is cancelled or dropped (or until a
//!   deadline: [`Lessor::keep_alive_until`]), as etcd's client does; its channel holds the
//!   latest [`KeepAliveResponse`], and [`KeepAlive::ended`] says why it stopped
//!   ([`EndReason`]); [`KeepAlive::lost`] is a future of that reason. Stopping it never revokes
//!   the lease: it expires one TTL later, as in etcd.
//! - **Events** ([`Lessor::subscribe`], [`LeaseEvents`]): every grant and revocation, in commit
//!   order, saying whether a lease was revoked or expired.
//! - **Watches** ([`Lessor::watch`], [`Lessor::watch_from`], [`Lessor::watch_key`]): puts and
//!   deletes under a prefix (or of one key), after commit, in revision order, each delete with
//!   its cause. Read with [`Lessor::range_with_revision`], then watch from the next revision:
//!   nothing is missed and nothing is seen twice.
//! - **Streams**: [`Watch`], [`LeaseEvents`] and [`KeepAlive`] are [`Stream`]s as well as
//!   blocking receivers, on any executor (there is no runtime of ours); [`Watch::ready`] and
//!   [`LeaseEvents::receiver`] let a thread wait on them with `select!`.
//! - **Async** ([`AsyncLessor`]): the same operations as `async fn`s whose futures never block
//!   their executor: a write is applied on the task and its fsync runs on the lessor's
//!   `lessor-flusher` thread. [`AsyncLeaseStore`] is the async trait both backends implement.
//! - **Transactions** ([`Lessor::txn`], [`Txn`]): etcd's compare-then-act, in one transaction: the
//!   building block of locks (put the key if absent, under your lease).
//! - **Expiry**: a background thread, the ticker, sleeps until the earliest deadline and revokes
//!   expired leases in deadline order, many per transaction. [`Lessor::revoke_expired`] does the
//!   same on demand.
//! - **Restart**: leases, keys and the revision survive a restart. What a lease has left then is
//!   the [`RestartPolicy`]'s choice: its full TTL again, as in etcd (the default), what it had
//!   left when the database closed, or what its wall-clock deadline leaves.
//! - **Inspection** ([`Inspector`]): a database file read without writing a byte to it, for
//!   tools and backups: leases as a restart policy would give them, keys, counts and checks.
//! - **Time** comes from a [`Clock`]: [`SystemClock`] by default, [`ManualClock`] for tests.
//!
//! # Threads and durability
//! [`Lessor::open`] starts one thread, `lessor-ticker`; the first keep-alive starts a second,
//! `lessor-keepalive`, which serves every keep-alive of the lessor. [`Lessor::close`] (or
//! dropping the last handle) stops and joins both. Every mutating call (grant, put, delete,
//! attach, detach, revoke, a transaction) is a request to one commit pipeline: applied, all or
//! nothing, to an in-memory write buffer, which a flush writes in one redb transaction with one
//! fsync for everything applied since the last. With [`Durability::Immediate`] (the default) a
//! call returns once that flush is durable, concurrent calls sharing it, and watchers,
//! subscribers and readers see nothing before; with [`Durability::Batched`] calls return once
//! applied (visible at once) and are fsynced within `max_delay` (see [`Lessor::sync`]). Renewals are not written: by
//! default every lease starts a fresh TTL after a restart anyway; under
//! [`RestartPolicy::Preserve`] and [`RestartPolicy::Absolute`] the ticker writes the new
//! deadlines in batches, every few seconds.
//!
//! # From one process to a cluster
//! [`LeaseStore`] is the API the embedded [`Lessor`] shares with `EtcdLessor` (cargo feature
//! `etcd`, off by default), which speaks to an etcd cluster with the same lease semantics.
//! Code written against `&dyn LeaseStore` (or `S: LeaseStore`) runs on either: only the line
//! that opens the store changes. The trait's docs list where etcd differs (whole-second TTLs,
//! attach as a rewrite, deletes whose cause is unknown).
//!
//! # Failures and observability
//! If the disk fails under a write, that call gets [`Error::Storage`] and every call after it
//! [`Error::Poisoned`], until the lessor has reopened the database and reloaded memory from it:
//! the ticker does that by itself, retrying with backoff while the fault lasts, and
//! [`Lessor::recover`] does it at once. [`Lessor::health`] says whether that is under way;
//! [`Lessor::stats`] gives counters, gauges and latency percentiles (and, with the `metrics`
//! feature, publishes them through the `metrics` facade); grants, revocations, expiries,
//! recoveries and failures are [`tracing`](https://docs.rs/tracing) events, printed only if the
//! application installs a subscriber.
//!
//! The design (disk format, locks, the expiry algorithm) is written down in `docs/design.md`;
//! what each wrong or hostile input gets (which [`Error`], or which documented behaviour), in
//! `docs/hostile-input.md`.

mod async_lessor;
mod async_store;
mod backup;
mod builder;
mod checkpoint;
mod clock;
pub mod concurrency;
mod config;
mod contain;
mod deadline;
mod durability;
mod engine;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod events;
mod expiry;
mod flusher;
mod inspect;
mod integrity;
mod keepalive;
mod lease;
mod lease_store;
mod lease_table;
mod lessor;
mod lifecycle;
mod overlay;
mod pipeline;
mod range;
mod reap;
mod record;
mod recovery;
mod reload;
mod restart;
mod signal;
mod stats;
mod store;
mod sync;
mod ticker;
mod txn;
mod watch;

pub use crate::async_lessor::AsyncLessor;
pub use crate::async_store::{AsyncLeaseStore, BoxFuture};
pub use crate::builder::{Builder, MAX_TTL};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::durability::Durability;
pub use crate::error::{Error, Result};
#[cfg(feature = "etcd")]
pub use crate::etcd::{EtcdLessor, EtcdOptions};
pub use crate::events::{LeaseEvent, LeaseEvents, RevokeCause};
pub use crate::inspect::{FileStats, Inspector};
pub use crate::integrity::Problem;
pub use crate::keepalive::{EndReason, KeepAlive, KeepAliveOptions, KeepAliveResponse, Lost};
pub use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
pub use crate::lease_store::LeaseStore;
pub use crate::lessor::Lessor;
pub use crate::range::{Page, RangeOptions};
pub use crate::restart::RestartPolicy;
pub use crate::stats::{Health, Percentiles, Stats};
pub use crate::txn::{CmpOp, Compare, Op, OpResponse, Txn, TxnResponse};
pub use crate::watch::{DeleteCause, Watch, WatchEnd, WatchEvent};
/// The channels the blocking API hands out ([`Watch::ready`], [`LeaseEvents::receiver`],
/// [`KeepAlive::responses`]) are crossbeam's; re-exported so that `select!` over them and the
/// error types (`RecvError`, `TryRecvError`...) come from the same version as ours.
pub use crossbeam_channel;
/// The [`Stream`] trait that [`Watch`], [`LeaseEvents`] and
/// [`KeepAlive`] implement, re-exported for callers without `futures`.
pub use futures_core::Stream;
/// The storage engine, re-exported on purpose: its
/// [`StorageBackend`](redb::StorageBackend) is what
/// [`Builder::open_with_backend`](crate::Builder::open_with_backend) takes, and its
/// [`redb::Error`] is the source of [`Error::Storage`], so callers that implement the one or
/// inspect the other use the same version as ours.
pub use redb;

/// Entry points for the fuzz targets in `fuzz/`; not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    /// Decodes arbitrary bytes as every record type; `Err` names a record that decodes but
    /// does not survive re-encoding. Must never panic.
    pub fn records(bytes: &[u8]) -> Result<(), String> {
        crate::record::check_roundtrip(bytes)
    }
}

/// The README's code blocks, run as doctests so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
