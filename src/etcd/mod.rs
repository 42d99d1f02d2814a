//! [`EtcdLessor`]: the [`LeaseStore`] API on an etcd cluster (cargo feature `etcd`).
//!
//! # Implementation
//!
//! `etcd-client` is asynchronous. Each `EtcdLessor` owns a small tokio runtime: one worker
//! thread, `lessor-etcd`, which drives the connections and timers and runs the background tasks
//! (one per keep-alive, one per watch). Every call is written once, as a future
//! (`Core::run_async`: the request under its deadline, wrapped in `InRuntime`, which enters the
//! runtime's context on each poll):
//! - the blocking methods run that future with `block_on` on the calling thread (refused inside
//!   an async runtime with [`Error::InvalidConfig`], rather than left to stall it or panic);
//! - the [`AsyncLeaseStore`](crate::AsyncLeaseStore) methods (`async_store.rs`) return it, to be
//!   polled by the caller's own executor: tokio's (inside a runtime, where
//!   [`EtcdLessor::connect_async`] connects), `futures::executor`, any other.
//!
//! Shared state lives in [`Core`]:
//! - `pool` ([`pool`]): one `etcd-client` connection per endpoint and the preferred endpoint (an
//!   atomic); every request goes through [`Pool::call`], which retries on the next endpoint as
//!   the request allows (reads and renewals on any transport failure, writes only when they were
//!   never sent), under the call's deadline.
//! - `runtime`: `None` once closed. A blocking call holds its read lock for the call's length,
//!   an async one for each poll; only `close` takes the write lock, so it waits for blocking
//!   calls in flight and for polls in progress, and an async call's next poll answers
//!   [`Error::Closed`].
//! - `registry` (a leaf lock): the running keep-alives and watches, so that `revoke` ends the
//!   keep-alives of its lease as revoked, and `close` ends everything as closed, before the
//!   runtime (and with it every task and channel) is shut down.
//! - `renewers`: open keep-alive streams that [`EtcdLessor::renew`] reuses, one per lease
//!   renewed recently (`etcd-client` has no one-shot renewal: a renewal is a message on a
//!   keep-alive stream).
//!
//! Nothing blocks or calls out under either lock: a renewal takes its stream out of
//! `renewers`, renews on it unlocked, and puts it back, so renewals of different leases run
//! side by side.
//!
//! # One runtime thread
//!
//! One worker thread is enough: measured with `cargo bench --features etcd --bench backends`
//! (which prints where the CPU went), 8 threads or 8 tasks calling at once keep `lessor-etcd`
//! 12–26% busy while the etcd servers use 0.7–1.1 cores of the 2-core machine, and a second
//! worker thread changed nothing (docs/performance.md, "The etcd backend's runtime thread").

mod async_store;
mod convert;
mod keepalive;
mod pool;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use etcd_client as etcd;
use parking_lot::{Mutex, RwLock};
use tokio::runtime::Runtime;

use crate::error::{Error, Result};
use crate::keepalive::{EndReason, KeepAlive, KeepAliveOptions, set_reason};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::lease_store::LeaseStore;
use crate::txn::{OpKind, Txn, TxnResponse};
use crate::watch::{ENDED_CLOSED, RUNNING, Watch};

use self::convert::{header_revision, raw_id};
use self::pool::{Pool, Retry};

/// How many keep-alive streams [`EtcdLessor::renew`] keeps open for reuse.
const RENEWERS: usize = 256;

/// Settings of an [`EtcdLessor`] connection: timeouts, TLS and authentication.
///
/// ```
/// use std::time::Duration;
/// use lessor::EtcdOptions;
///
/// let opts = EtcdOptions::new()
///     .request_timeout(Duration::from_secs(2))
///     .connect_timeout(Duration::from_secs(1))
///     .attempt_timeout(Duration::from_millis(500));
/// # let _ = opts;
/// ```
///
/// A production cluster, with TLS and a user (the endpoints are then `https://`):
///
/// ```no_run
/// use lessor::{EtcdLessor, EtcdOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let opts = EtcdOptions::new()
///     .ca_certificate(std::fs::read("/etc/etcd/ca.pem")?)
///     .client_certificate(
///         std::fs::read("/etc/etcd/client.pem")?,
///         std::fs::read("/etc/etcd/client-key.pem")?,
///     )
///     .user("lessor", "secret");
/// let store = EtcdLessor::connect(
///     ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"],
///     opts,
/// )?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct EtcdOptions {
    request_timeout: Duration,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    keep_alive: (Duration, Duration),
    user: Option<(String, String)>,
    ca_certificate: Option<Vec<u8>>,
    client_certificate: Option<(Vec<u8>, Vec<u8>)>,
    tls_domain: Option<String>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            keep_alive: (Duration::from_secs(10), Duration::from_secs(5)),
            user: None,
            ca_certificate: None,
            client_certificate: None,
            tls_domain: None,
        }
    }
}

impl EtcdOptions {
    /// The defaults: 5 s per request, 5 s to connect, 2 s per attempt on one endpoint, HTTP/2
    /// pings every 10 s (5 s to answer), no TLS, no authentication.
    pub fn new() -> EtcdOptions {
        EtcdOptions::default()
    }

    /// The longest any call blocks, retries on other endpoints included; past it the call
    /// fails with [`Error::Unavailable`]. Default 5 s.
    pub fn request_timeout(mut self, limit: Duration) -> Self {
        self.request_timeout = limit;
        self
    }

    /// How long [`EtcdLessor::connect`] waits for the cluster to answer, and how long one
    /// endpoint is given to accept a connection. Default 5 s.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// How long one attempt of a call that can be retried (a read, a renewal, opening a watch)
    /// waits on one endpoint before trying the next: what a frozen or cut-off member costs such
    /// a call. Writes are not retried after they were sent, so they wait up to the request
    /// timeout. Default 2 s.
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.attempt_timeout = limit;
        self
    }

    /// HTTP/2 pings on each connection: one every `interval`, and a connection whose ping is
    /// not answered within `timeout` is closed (its streams, watches included, are reopened on
    /// another endpoint). etcd refuses pings more often than every 5 s by default
    /// (`--grpc-keepalive-min-time`). Default 10 s and 5 s.
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = (interval, timeout);
        self
    }

    /// Authenticates as `name` with `password` (etcd's auth); the token is refreshed when etcd
    /// says it expired. Default: none.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Trusts the certificate authority `pem` (PEM-encoded) for the cluster's server
    /// certificates, and turns TLS on: endpoints must then be `https://` (or have no scheme).
    /// Default: no TLS.
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Presents a client certificate and its private key (both PEM-encoded) to the cluster, for
    /// etcd's `--client-cert-auth`; turns TLS on. Default: none.
    pub fn client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_certificate = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name the servers' certificates must carry, when it is not the endpoints' host.
    /// Default: each endpoint's host.
    pub fn tls_domain(mut self, name: impl Into<String>) -> Self {
        self.tls_domain = Some(name.into());
        self
    }

    fn tls(&self) -> bool {
        self.ca_certificate.is_some()
            || self.client_certificate.is_some()
            || self.tls_domain.is_some()
    }

    /// `etcd-client`'s options for one endpoint's connection.
    fn connect_options(&self) -> etcd::ConnectOptions {
        let mut connect = etcd::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(self.keep_alive.0, self.keep_alive.1);
        if let Some((name, password)) = &self.user {
            connect = connect
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        if self.tls() {
            let mut tls = etcd::TlsOptions::new();
            if let Some(ca) = &self.ca_certificate {
                tls = tls.ca_certificate(etcd::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.client_certificate {
                tls = tls.identity(etcd::Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            connect = connect.with_tls(tls);
        }
        connect
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("ca_certificate", &self.ca_certificate.is_some())
            .field("client_certificate", &self.client_certificate.is_some())
            .field("tls_domain", &self.tls_domain)
            .finish()
    }
}

/// The [`LeaseStore`] API on an etcd cluster: what a service uses when several replicas must
/// share leases and locks. The same code runs on the embedded [`Lessor`](crate::Lessor) and on
/// this; only the line that opens the store changes.
///
/// `EtcdLessor` is `Clone + Send + Sync`; clones share one connection. Every method is
/// synchronous (it blocks the calling thread for one or more round trips to the cluster; do
/// not call it from inside an async runtime, use `spawn_blocking` there). The connection
/// closes with [`close`](EtcdLessor::close) or when the last clone is dropped. Methods have
/// the contracts of [`Lessor`](crate::Lessor)'s, with etcd's differences:
///
/// - **TTLs** are whole seconds (rounded up), raised to the cluster's minimum (2 s with etcd's
///   default election timeout); [`time_to_live`](EtcdLessor::time_to_live)'s `remaining` is
///   whole seconds, rounded down.
/// - **Attach and detach** rewrite each key with its own value under the new lease (or none),
///   in one transaction: etcd moves a key between leases only by a put. So, unlike the
///   embedded engine, the revision advances, the version grows, and watchers see a put.
/// - **Watches** cannot tell why a key was deleted: every delete has
///   [`DeleteCause::Unknown`](crate::DeleteCause::Unknown). [`watch_from`](EtcdLessor::watch_from)
///   a compacted revision returns [`Error::Compacted`] or, when etcd reports it after
///   confirming the watch, ends the watch with [`WatchEnd::Compacted`](crate::WatchEnd::Compacted).
///   A broken stream is reopened from the revision after the last event received, so nothing
///   is missed.
/// - **Keep-alives** run on etcd's keep-alive stream, with a *local deadline*
///   ([`KeepAlive::deadline`]): the time the last successful renewal was sent plus the TTL
///   etcd returned. When it passes without a newer renewal (etcd unreachable, frozen, or
///   answering too late), the keep-alive ends at once as [`EndReason::Expired`], whatever the
///   network does; each renewal and reconnect times out well before it (a third of the TTL, at
///   most [`EtcdOptions::request_timeout`]) and is retried. A lease revoked through this handle
///   ends them as [`EndReason::Revoked`] at once; one that etcd says is gone, in an answer that
///   came before the local deadline, too (revoked by another client).
/// - **Failover**: give every member's endpoint. Each endpoint has a connection of its own, and
///   calls go to the last one that answered. Reads, renewals and watch (re)opens move to the
///   next endpoint when one fails or stays silent past [`EtcdOptions::attempt_timeout`];
///   writes only when the request provably never left (the connection could not be made).
///   No call blocks longer than [`EtcdOptions::request_timeout`].
/// - **Errors**: an unreachable cluster, a lost leader or a timeout is [`Error::Unavailable`]
///   (the transport's error attached). **A write that fails with `Unavailable` after it was
///   sent may have committed** (etcd's own rule): read before retrying it. Other refusals
///   without a variant of ours are [`Error::Backend`]. A put that etcd refuses as too large
///   is [`Error::ValueTooLarge`] (etcd limits the whole request: `--max-request-bytes`,
///   1.5 MiB by default).
/// - **Leases on a leader change**: etcd restarts every lease's TTL when a new leader is
///   elected, so a lease can outlive its deadline by an election plus one TTL; the local
///   deadline ([`KeepAlive::deadline`]) never counts on that.
/// - **Revisions** start at 1 on a fresh cluster; granting does not advance them, as in the
///   embedded engine.
///
/// ```no_run
/// use std::time::Duration;
/// use lessor::{EtcdLessor, EtcdOptions, LeaseStore};
///
/// # fn main() -> lessor::Result<()> {
/// let store = EtcdLessor::connect(["http://127.0.0.1:2379"], EtcdOptions::new())?;
/// let lease = store.grant(Duration::from_secs(10))?;
/// store.put_with_lease("/cron/lock/job1", "10001", lease.id)?;
/// store.renew(lease.id)?;
/// store.revoke(lease.id)?; // the key goes with it
/// assert!(store.get("/cron/lock/job1")?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdLessor {
    handle: Arc<Handle>,
}

/// What the clones share; dropping the last one closes the connection.
struct Handle {
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.core.close();
    }
}

/// State shared by every clone, keep-alive handle and task; see the module docs.
pub(crate) struct Core {
    /// The endpoints, one connection each, and which one calls try first.
    pool: Pool,
    options: EtcdOptions,
    /// The runtime; `None` once closed. Read-locked by every call for its length.
    runtime: RwLock<Option<Runtime>>,
    /// Guards the running keep-alives and watches. A leaf lock.
    registry: Mutex<Registry>,
    /// Keep-alive streams kept for [`EtcdLessor::renew`], by lease, with when each was last
    /// used (for eviction).
    renewers: tokio::sync::Mutex<HashMap<LeaseId, keepalive::Renewer>>,
}

/// The background work of an `EtcdLessor`; guarded by `Core::registry`.
#[derive(Default)]
struct Registry {
    closed: bool,
    next: u64,
    keepalives: HashMap<u64, keepalive::Entry>,
    /// Each running watch's end word.
    watches: HashMap<u64, Arc<AtomicU8>>,
}

impl EtcdLessor {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`; several for a
    /// cluster) and checks that it answers.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no endpoint, a zero timeout, or TLS options with an
    /// `http://` endpoint; [`Error::Unavailable`] if no endpoint answers within the connect
    /// timeout;
    /// [`Error::Backend`] for a malformed endpoint or refused credentials; [`Error::Spawn`] if
    /// the runtime thread cannot start.
    pub fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        options: EtcdOptions,
    ) -> Result<EtcdLessor> {
        let endpoints = checked_endpoints(endpoints, &options)?;
        refuse_inside_runtime()?;
        let runtime = runtime()?;
        let pool = Pool::new(
            endpoints,
            options.connect_options(),
            options.attempt_timeout,
        );
        let checked = runtime.block_on(answers(&pool, options.connect_timeout));
        if let Err(e) = checked {
            runtime.shutdown_background();
            return Err(e);
        }
        Ok(EtcdLessor::with(pool, options, runtime))
    }

    /// [`connect`](Self::connect) for async code: the same checks, awaited without blocking,
    /// from any executor (inside a tokio runtime too, where `connect` refuses). The backend
    /// still starts its own runtime thread, which drives the connections and timers; the
    /// [`AsyncLeaseStore`](crate::AsyncLeaseStore) methods are polled by the caller's executor.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_async<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        options: EtcdOptions,
    ) -> Result<EtcdLessor> {
        let endpoints = checked_endpoints(endpoints, &options)?;
        let runtime = runtime()?;
        let pool = Pool::new(
            endpoints,
            options.connect_options(),
            options.attempt_timeout,
        );
        let limit = options.connect_timeout;
        let task = runtime.spawn(async move {
            let checked = answers(&pool, limit).await;
            (pool, checked)
        });
        let (pool, checked) = match task.await {
            Ok(done) => done,
            Err(e) => {
                runtime.shutdown_background();
                return Err(Error::Backend(format!("connecting to etcd: {e}").into()));
            }
        };
        if let Err(e) = checked {
            runtime.shutdown_background();
            return Err(e);
        }
        Ok(EtcdLessor::with(pool, options, runtime))
    }

    fn with(pool: Pool, options: EtcdOptions, runtime: Runtime) -> EtcdLessor {
        EtcdLessor {
            handle: Arc::new(Handle {
                core: Arc::new(Core {
                    pool,
                    options,
                    runtime: RwLock::new(Some(runtime)),
                    registry: Mutex::new(Registry::default()),
                    renewers: tokio::sync::Mutex::new(HashMap::new()),
                }),
            }),
        }
    }

    fn core(&self) -> &Arc<Core> {
        &self.handle.core
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up, at least the cluster's minimum)
    /// with an id etcd chooses.
    ///
    /// # Errors
    /// [`Error::TtlOutOfRange`] above [`MAX_TTL`](crate::MAX_TTL), [`Error::Unavailable`],
    /// [`Error::Closed`].
    pub fn grant(&self, ttl: Duration) -> Result<Lease> {
        self.core().grant(None, ttl)
    }

    /// Grants a lease with the id of the caller's choice.
    ///
    /// # Errors
    /// [`Error::LeaseExists`] if a lease has that id, and as [`grant`](EtcdLessor::grant).
    pub fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        self.core().grant(Some(id), ttl)
    }

    /// Renews a lease once (one message on a keep-alive stream, kept open for the next renewal
    /// of the same lease). Returns its TTL.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if it is not alive, [`Error::Unavailable`], [`Error::Closed`].
    pub fn renew(&self, id: LeaseId) -> Result<Duration> {
        self.core().block(self.renew_async(id))
    }

    pub(crate) async fn renew_async(&self, id: LeaseId) -> Result<Duration> {
        let core = self.core();
        core.run_async(|deadline| keepalive::renew(core, id, deadline))
            .await
    }

    /// Keeps a lease alive with the default options; see
    /// [`Lessor::keep_alive`](crate::Lessor::keep_alive) and the notes on keep-alives above.
    ///
    /// # Errors
    /// As [`keep_alive_with`](EtcdLessor::keep_alive_with).
    pub fn keep_alive(&self, id: LeaseId) -> Result<KeepAlive> {
        self.keep_alive_with(id, KeepAliveOptions::default())
    }

    /// Keeps a lease alive through etcd's keep-alive stream until the handle is cancelled or
    /// dropped, its `run_for` time comes, the lease ends, or this `EtcdLessor` closes. The first
    /// renewal happens before this returns; its response is in
    /// [`KeepAlive::responses`]. `run_for` is measured on the system clock.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::InvalidConfig`] for an interval not shorter than the
    /// TTL, [`Error::Unavailable`], [`Error::Closed`].
    pub fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        keepalive::start(self.core(), id, opts)
    }

    /// Revokes a lease: etcd deletes its keys in the same transaction. Returns the revision
    /// after. Keep-alives of the lease started through this handle end as
    /// [`EndReason::Revoked`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Unavailable`], [`Error::Closed`].
    pub fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.core().revoke(id)
    }

    /// The granted TTL and time left (whole seconds) of a lease, without its keys.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Unavailable`], [`Error::Closed`].
    pub fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.lease_info(id, false)
    }

    /// The granted TTL, time left (whole seconds) and attached keys (in key order) of a lease.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::Unavailable`], [`Error::Closed`].
    pub fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.lease_info(id, true)
    }

    fn lease_info(&self, id: LeaseId, with_keys: bool) -> Result<LeaseInfo> {
        self.core().block(self.lease_info_async(id, with_keys))
    }

    pub(crate) async fn lease_info_async(&self, id: LeaseId, with_keys: bool) -> Result<LeaseInfo> {
        let resp = self
            .core()
            .call_async(Retry::Idempotent, Some(id), |c| async move {
                let opts = etcd::LeaseTimeToLiveOptions::new();
                c.lease_client()
                    .time_to_live(
                        raw_id(id),
                        Some(if with_keys { opts.with_keys() } else { opts }),
                    )
                    .await
            })
            .await?;
        if resp.ttl() < 0 {
            return Err(Error::LeaseNotFound(id));
        }
        let mut keys = resp.keys().to_vec();
        keys.sort();
        Ok(LeaseInfo {
            id,
            ttl: convert::secs(resp.granted_ttl()),
            remaining: convert::secs(resp.ttl()),
            keys,
        })
    }

    /// Ids of the cluster's live leases (all clients'), ascending.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn leases(&self) -> Result<Vec<LeaseId>> {
        self.core().block(self.leases_async())
    }

    pub(crate) async fn leases_async(&self) -> Result<Vec<LeaseId>> {
        let resp = self
            .core()
            .call_async(Retry::Idempotent, None, |c| async move {
                c.lease_client().leases().await
            })
            .await?;
        let mut ids: Vec<LeaseId> = resp
            .leases()
            .iter()
            .filter_map(|l| convert::lease_id(l.id()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Writes `key = value` with no lease (detaching it from any). Returns the new revision.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty key, [`Error::Unavailable`], [`Error::Closed`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Revision> {
        self.core().put(key.as_ref(), value.as_ref(), None)
    }

    /// Writes `key = value` attached to lease `id`. Returns the new revision.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is not alive, and as [`put`](EtcdLessor::put).
    pub fn put_with_lease(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        id: LeaseId,
    ) -> Result<Revision> {
        self.core().put(key.as_ref(), value.as_ref(), Some(id))
    }

    /// Reads one key.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        self.core().block(self.get_async(key.as_ref()))
    }

    pub(crate) async fn get_async(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        if key.is_empty() {
            return Ok(None);
        }
        let resp = self
            .core()
            .call_async(Retry::Idempotent, None, |c| async move {
                c.kv_client().get(key, None).await
            })
            .await?;
        Ok(resp.kvs().first().map(convert::key_value))
    }

    /// Reads every key that starts with `prefix`, in key order (`""`: every key).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn range(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KeyValue>> {
        Ok(self.range_with_revision(prefix)?.kvs)
    }

    /// Reads every key that starts with `prefix`, with the revision the read saw: watch from
    /// the next one to miss nothing.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn range_with_revision(&self, prefix: impl AsRef<[u8]>) -> Result<Snapshot> {
        self.core()
            .block(self.range_with_revision_async(prefix.as_ref()))
    }

    pub(crate) async fn range_with_revision_async(&self, prefix: &[u8]) -> Result<Snapshot> {
        let resp = self
            .core()
            .call_async(Retry::Idempotent, None, |c| async move {
                c.kv_client()
                    .get(prefix, Some(etcd::GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        Ok(Snapshot {
            revision: header_revision(resp.header()),
            kvs: resp.kvs().iter().map(convert::key_value).collect(),
        })
    }

    /// Deletes a key; returns whether it existed.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty key, [`Error::Unavailable`], [`Error::Closed`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.core().block(self.delete_async(key.as_ref()))
    }

    pub(crate) async fn delete_async(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        let resp = self
            .core()
            .call_async(Retry::Write, None, |c| async move {
                c.kv_client().delete(key, None).await
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    /// Attaches existing keys to lease `id`, all or nothing, by rewriting each with its own
    /// value under the lease in one transaction (etcd has no attach: the revision advances
    /// and watchers see puts).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], [`Error::KeyNotFound`] (nothing attached then),
    /// [`Error::InvalidKey`], [`Error::Unavailable`], [`Error::Closed`].
    pub fn attach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        self.core().move_keys(id, keys, true)
    }

    /// Detaches keys from lease `id`, all or nothing, by rewriting each with its own value and
    /// no lease, in one transaction.
    ///
    /// # Errors
    /// [`Error::KeyNotFound`], [`Error::KeyNotAttached`], [`Error::InvalidKey`],
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn detach<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<()> {
        self.core().move_keys(id, keys, false)
    }

    /// Watches the keys that start with `prefix` from the next change on: every change
    /// committed after this returns is delivered. Deletes have
    /// [`DeleteCause::Unknown`](crate::DeleteCause::Unknown).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn watch(&self, prefix: impl AsRef<[u8]>) -> Result<Watch> {
        watch::start(self.core(), prefix.as_ref(), false, None)
    }

    /// Watches the key `key` alone (an etcd watch with an empty `range_end`) from the next
    /// change on; see [`Lessor::watch_key`](crate::Lessor::watch_key).
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn watch_key(&self, key: impl AsRef<[u8]>) -> Result<Watch> {
        watch::start(self.core(), key.as_ref(), true, None)
    }

    /// Watches the keys that start with `prefix` from revision `from` on (etcd keeps history
    /// until it is compacted).
    ///
    /// # Errors
    /// [`Error::Compacted`] if etcd refuses `from` at once (if it reports the compaction after
    /// confirming the watch, the watch ends with
    /// [`WatchEnd::Compacted`](crate::WatchEnd::Compacted) instead); [`Error::Unavailable`],
    /// [`Error::Closed`].
    pub fn watch_from(&self, prefix: impl AsRef<[u8]>, from: Revision) -> Result<Watch> {
        watch::start(self.core(), prefix.as_ref(), false, Some(from))
    }

    /// Runs a transaction as one etcd `Txn`.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if an op that runs puts with a lease that is not alive
    /// (reported with the first lease the transaction names); [`Error::InvalidKey`] for an
    /// empty key or a branch that writes one key twice; [`Error::Unavailable`],
    /// [`Error::Closed`].
    pub fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.core().block(self.txn_async(txn))
    }

    pub(crate) async fn txn_async(&self, txn: Txn) -> Result<TxnResponse> {
        let first_lease = txn
            .then
            .iter()
            .chain(&txn.otherwise)
            .find_map(|op| match op.kind {
                OpKind::Put { lease, .. } => lease,
                _ => None,
            });
        let request = convert::txn(&txn);
        let resp = self
            .core()
            .call_async(Retry::Write, first_lease, |c| {
                let request = request.clone();
                async move { c.kv_client().txn(request).await }
            })
            .await?;
        let ops = if resp.succeeded() {
            &txn.then
        } else {
            &txn.otherwise
        };
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header()),
            responses: resp
                .op_responses()
                .iter()
                .enumerate()
                .map(|(i, r)| convert::op_response(ops.get(i), r))
                .collect(),
        })
    }

    /// The cluster's current revision.
    ///
    /// # Errors
    /// [`Error::Unavailable`], [`Error::Closed`].
    pub fn revision(&self) -> Result<Revision> {
        self.core().revision()
    }

    /// Whether the cluster can serve calls now, for a readiness probe: a linearizable read
    /// answered within the request timeout (a leader and a quorum are there), and no alarm
    /// raised (etcd refuses writes under a `NOSPACE` alarm): two requests, each within the
    /// request timeout. See [`LeaseStore::ready`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] (unreachable, no leader, too slow), [`Error::Backend`] naming the
    /// alarm, [`Error::Closed`].
    pub fn ready(&self) -> Result<()> {
        self.core().block(self.ready_async())
    }

    pub(crate) async fn ready_async(&self) -> Result<()> {
        let core = self.core();
        core.revision_async().await?;
        let resp = core
            .call_async(Retry::Idempotent, None, |c| async move {
                c.maintenance_client()
                    .alarm(etcd::AlarmAction::Get, etcd::AlarmType::None, None)
                    .await
            })
            .await?;
        if let Some(alarm) = resp.alarms().first() {
            return Err(Error::Backend(
                format!(
                    "etcd member {:x} raised the alarm {:?}",
                    alarm.member_id(),
                    alarm.alarm()
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// Closes the connection: keep-alives end with [`EndReason::Closed`] (their leases are not
    /// revoked: they expire one TTL later), watches end with
    /// [`WatchEnd::Closed`](crate::WatchEnd::Closed), calls in flight finish first and later
    /// calls get [`Error::Closed`]. The runtime thread is stopped and joined. Calling it again
    /// does nothing; dropping the last clone closes too.
    ///
    /// # Errors
    /// None today; the `Result` leaves room, as for [`Lessor::close`](crate::Lessor::close).
    pub fn close(&self) -> Result<()> {
        self.core().close()
    }
}

impl Core {
    /// Runs `fut` to completion on the runtime, from the calling thread, under the request
    /// deadline (the blocking API).
    pub(crate) fn run<T, Fut>(&self, fut: impl FnOnce(tokio::time::Instant) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        self.block(self.run_async(fut))
    }

    /// Drives `fut` on the calling thread until it completes (the blocking API), holding the
    /// runtime's read lock so that a close waits for it. Refused inside a runtime, where
    /// blocking would stall the caller's executor: async code uses the
    /// [`AsyncLeaseStore`](crate::AsyncLeaseStore) methods instead.
    fn block<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        refuse_inside_runtime()?;
        let guard = self.runtime.read();
        let runtime = guard.as_ref().ok_or(Error::Closed)?;
        runtime.block_on(fut)
    }

    /// `fut`, under the request deadline, polled by the caller's own executor (any: tokio's,
    /// `futures::executor`...) inside this backend's runtime context (see [`InRuntime`]).
    pub(crate) async fn run_async<T, Fut>(
        &self,
        fut: impl FnOnce(tokio::time::Instant) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let limit = self.options.request_timeout;
        InRuntime {
            core: self,
            fut: Box::pin(async move {
                let deadline = tokio::time::Instant::now() + limit;
                tokio::time::timeout_at(deadline, fut(deadline))
                    .await
                    .unwrap_or_else(|_| Err(convert::timed_out(limit)))
            }),
        }
        .await
    }

    /// [`call`](Self::call) as a future: see [`run_async`](Self::run_async).
    pub(crate) async fn call_async<T, F, Fut>(
        &self,
        retry: Retry,
        lease: Option<LeaseId>,
        f: F,
    ) -> Result<T>
    where
        F: FnMut(etcd::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd::Error>>,
    {
        self.run_async(|deadline| async move {
            self.pool
                .call(deadline, retry, lease, f)
                .await
                .map(|(value, _)| value)
        })
        .await
    }

    /// The cluster's current revision: a count-only read of one key.
    fn revision(&self) -> Result<Revision> {
        self.block(self.revision_async())
    }

    pub(crate) async fn revision_async(&self) -> Result<Revision> {
        let resp = self
            .call_async(Retry::Idempotent, None, |c| async move {
                c.kv_client()
                    .get("\0", Some(etcd::GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        Ok(header_revision(resp.header()))
    }

    fn grant(&self, id: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        self.block(self.grant_async(id, ttl))
    }

    pub(crate) async fn grant_async(&self, id: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        let secs = convert::ttl_secs(ttl)?;
        let resp = self
            .call_async(Retry::Write, id, |c| async move {
                let options = id.map(|id| etcd::LeaseGrantOptions::new().with_id(raw_id(id)));
                c.lease_client().grant(secs, options).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(Error::Backend(resp.error().to_owned().into()));
        }
        let granted = convert::lease_id(resp.id()).ok_or_else(|| {
            Error::Backend(format!("etcd granted an invalid lease id {}", resp.id()).into())
        })?;
        Ok(Lease {
            id: granted,
            ttl: convert::secs(resp.ttl()),
            revision: header_revision(resp.header()),
        })
    }

    pub(crate) fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.block(self.revoke_async(id))
    }

    pub(crate) async fn revoke_async(&self, id: LeaseId) -> Result<Revision> {
        let resp = self
            .call_async(Retry::Write, Some(id), |c| async move {
                c.lease_client().revoke(raw_id(id)).await
            })
            .await?;
        self.renewers.lock().await.remove(&id);
        self.lease_ended(id, EndReason::Revoked);
        Ok(header_revision(resp.header()))
    }

    fn put(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        self.block(self.put_async(key, value, lease))
    }

    pub(crate) async fn put_async(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Revision> {
        check_key(key)?;
        let resp = self
            .call_async(Retry::Write, lease, |c| async move {
                let options = lease.map(|id| etcd::PutOptions::new().with_lease(raw_id(id)));
                c.kv_client().put(key, value, options).await
            })
            .await
            .map_err(|e| match convert::too_large(&e) {
                Some(max) => Error::ValueTooLarge {
                    len: value.len(),
                    max,
                },
                None => e,
            })?;
        Ok(header_revision(resp.header()))
    }

    /// Attaches (`attach`) or detaches keys: one transaction that rewrites each key with its own
    /// value (`ignore_value`) under the lease or none, if every key exists (attach) or is
    /// attached to the lease (detach); otherwise it reads the keys to say which one failed.
    fn move_keys<K: AsRef<[u8]>>(
        &self,
        id: LeaseId,
        keys: impl IntoIterator<Item = K>,
        attach: bool,
    ) -> Result<()> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        self.block(self.move_keys_async(id, keys, attach))
    }

    pub(crate) async fn move_keys_async(
        &self,
        id: LeaseId,
        mut keys: Vec<Vec<u8>>,
        attach: bool,
    ) -> Result<()> {
        keys.sort();
        keys.dedup();
        for key in &keys {
            check_key(key)?;
        }
        if keys.is_empty() {
            // Nothing to move: still say whether the lease is alive, as the embedded engine.
            let resp = self
                .call_async(Retry::Idempotent, Some(id), |c| async move {
                    c.lease_client().time_to_live(raw_id(id), None).await
                })
                .await?;
            return if resp.ttl() < 0 {
                Err(Error::LeaseNotFound(id))
            } else {
                Ok(())
            };
        }
        let compares: Vec<etcd::Compare> = keys
            .iter()
            .map(|k| {
                if attach {
                    etcd::Compare::create_revision(k.clone(), etcd::CompareOp::Greater, 0)
                } else {
                    etcd::Compare::lease(k.clone(), etcd::CompareOp::Equal, raw_id(id))
                }
            })
            .collect();
        let puts: Vec<etcd::TxnOp> = keys
            .iter()
            .map(|k| {
                let options = etcd::PutOptions::new().with_ignore_value();
                let options = if attach {
                    options.with_lease(raw_id(id))
                } else {
                    options
                };
                etcd::TxnOp::put(k.clone(), Vec::new(), Some(options))
            })
            .collect();
        let gets: Vec<etcd::TxnOp> = keys
            .iter()
            .map(|k| etcd::TxnOp::get(k.clone(), None))
            .collect();
        let txn = etcd::Txn::new().when(compares).and_then(puts).or_else(gets);
        let resp = self
            .call_async(Retry::Write, Some(id), |c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        for (key, r) in keys.into_iter().zip(resp.op_responses()) {
            let found = match &r {
                etcd::TxnOpResponse::Get(g) => g.kvs().first().map(convert::key_value),
                _ => None,
            };
            match found {
                None => return Err(Error::KeyNotFound(key)),
                Some(kv) if !attach && kv.lease != Some(id) => {
                    return Err(Error::KeyNotAttached { key, lease: id });
                }
                Some(_) => {}
            }
        }
        // The keys changed between the comparison and the reads: as good as a lost race.
        Err(Error::Backend(
            "keys changed during attach/detach; try again".into(),
        ))
    }

    /// Ends the keep-alives of lease `id` started through this handle, with `reason`.
    fn lease_ended(&self, id: LeaseId, reason: EndReason) {
        let stopped: Vec<Arc<tokio::sync::Notify>> = {
            let registry = self.registry.lock();
            registry
                .keepalives
                .values()
                .filter(|e| e.id == id && set_reason(&e.reason, reason))
                .map(|e| Arc::clone(&e.stop))
                .collect()
        };
        for stop in stopped {
            stop.notify_one();
        }
    }

    /// Registers a keep-alive; `None` once closed.
    fn register_keepalive(&self, entry: keepalive::Entry) -> Option<u64> {
        let mut registry = self.registry.lock();
        if registry.closed {
            return None;
        }
        let key = registry.next;
        registry.next += 1;
        registry.keepalives.insert(key, entry);
        Some(key)
    }

    fn register_watch(&self, ended: Arc<AtomicU8>) -> Option<u64> {
        let mut registry = self.registry.lock();
        if registry.closed {
            return None;
        }
        let key = registry.next;
        registry.next += 1;
        registry.watches.insert(key, ended);
        Some(key)
    }

    fn unregister(&self, key: u64) {
        let mut registry = self.registry.lock();
        registry.keepalives.remove(&key);
        registry.watches.remove(&key);
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.registry.lock().closed
    }

    fn close(&self) -> Result<()> {
        // Waits for calls in flight; a second close finds `None`.
        let Some(runtime) = self.runtime.write().take() else {
            return Ok(());
        };
        let (stops, watches) = {
            let mut registry = self.registry.lock();
            registry.closed = true;
            let stops: Vec<_> = registry
                .keepalives
                .drain()
                .filter(|(_, e)| set_reason(&e.reason, EndReason::Closed))
                .map(|(_, e)| e.stop)
                .collect();
            let watches: Vec<_> = registry.watches.drain().map(|(_, w)| w).collect();
            (stops, watches)
        };
        for stop in stops {
            stop.notify_one();
        }
        for ended in watches {
            let _ =
                ended.compare_exchange(RUNNING, ENDED_CLOSED, Ordering::AcqRel, Ordering::Acquire);
        }
        // Dropping the tasks drops their channels' sending ends: handles see them disconnect,
        // after the end reasons set above.
        if tokio::runtime::Handle::try_current().is_ok() {
            runtime.shutdown_background();
        } else {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
        Ok(())
    }
}

/// etcd refuses empty keys; say so the way the embedded engine does.
fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("keys must not be empty"));
    }
    Ok(())
}

/// The endpoints, once the options are checked against them.
fn checked_endpoints<E: AsRef<str>>(
    endpoints: impl IntoIterator<Item = E>,
    options: &EtcdOptions,
) -> Result<Vec<String>> {
    let endpoints: Vec<String> = endpoints
        .into_iter()
        .map(|e| e.as_ref().to_owned())
        .collect();
    if endpoints.is_empty() {
        return Err(Error::InvalidConfig("no etcd endpoint given"));
    }
    if [
        options.request_timeout,
        options.connect_timeout,
        options.attempt_timeout,
    ]
    .contains(&Duration::ZERO)
    {
        return Err(Error::InvalidConfig(
            "etcd timeouts (request, connect, attempt) must be above zero",
        ));
    }
    if options.tls() && endpoints.iter().any(|e| e.starts_with("http://")) {
        return Err(Error::InvalidConfig(
            "TLS options need https:// endpoints (or endpoints without a scheme)",
        ));
    }
    Ok(endpoints)
}

/// The backend's runtime: one `lessor-etcd` thread for connections, timers and the tasks of
/// keep-alives and watches.
fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lessor-etcd")
        .enable_all()
        .build()
        .map_err(Error::Spawn)
}

/// Whether the cluster answers within `limit`: connecting is lazy, so one endpoint after
/// another is asked for its status (which also checks the credentials). Run on the runtime.
async fn answers(pool: &Pool, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    tokio::time::timeout_at(
        deadline,
        pool.call(deadline, Retry::Idempotent, None, |c| async move {
            c.maintenance_client().status().await
        }),
    )
    .await
    .unwrap_or_else(|_| Err(convert::timed_out(limit)))
    .map(|_| ())
}

/// A future of the etcd client polled by the caller's executor, inside this backend's runtime
/// context: etcd-client's futures and tokio's timers need a tokio context, which the runtime
/// thread drives (connections, timers); the caller's executor only polls. The runtime's read
/// lock is held during each poll, never across one: a close (which takes the write lock and
/// shuts the runtime down) waits for a poll in progress, and the next poll answers
/// [`Error::Closed`] instead of touching a runtime that is gone.
struct InRuntime<'a, F> {
    core: &'a Core,
    fut: std::pin::Pin<Box<F>>,
}

impl<T, F: Future<Output = Result<T>>> Future for InRuntime<'_, F> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        let this = &mut *self;
        // Recursive: the blocking API polls this under the read lock it already holds.
        let guard = this.core.runtime.read_recursive();
        let Some(runtime) = guard.as_ref() else {
            return std::task::Poll::Ready(Err(Error::Closed));
        };
        let _entered = runtime.enter();
        this.fut.as_mut().poll(cx)
    }
}

/// `block_on` inside a runtime would panic: refuse with an error instead.
fn refuse_inside_runtime() -> Result<()> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::InvalidConfig(
            "EtcdLessor's blocking methods refuse inside an async runtime: use its AsyncLeaseStore methods (and connect_async), or spawn_blocking",
        ));
    }
    Ok(())
}

impl fmt::Debug for EtcdLessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLessor")
            .field("options", &self.core().options)
            .field("open", &self.core().is_open())
            .finish()
    }
}

impl LeaseStore for EtcdLessor {
    fn grant(&self, ttl: Duration) -> Result<Lease> {
        EtcdLessor::grant(self, ttl)
    }

    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        EtcdLessor::grant_with_id(self, id, ttl)
    }

    fn renew(&self, id: LeaseId) -> Result<Duration> {
        EtcdLessor::renew(self, id)
    }

    fn revoke(&self, id: LeaseId) -> Result<Revision> {
        EtcdLessor::revoke(self, id)
    }

    fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        EtcdLessor::time_to_live(self, id)
    }

    fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        EtcdLessor::time_to_live_with_keys(self, id)
    }

    fn leases(&self) -> Result<Vec<LeaseId>> {
        EtcdLessor::leases(self)
    }

    fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        EtcdLessor::keep_alive_with(self, id, opts)
    }

    fn attach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        EtcdLessor::attach(self, id, keys)
    }

    fn detach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        EtcdLessor::detach(self, id, keys)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        EtcdLessor::put(self, key, value)
    }

    fn put_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<Revision> {
        EtcdLessor::put_with_lease(self, key, value, id)
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        EtcdLessor::get(self, key)
    }

    fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        EtcdLessor::range(self, prefix)
    }

    fn range_with_revision(&self, prefix: &[u8]) -> Result<Snapshot> {
        EtcdLessor::range_with_revision(self, prefix)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        EtcdLessor::delete(self, key)
    }

    fn watch(&self, prefix: &[u8]) -> Result<Watch> {
        EtcdLessor::watch(self, prefix)
    }

    fn watch_from(&self, prefix: &[u8], from: Revision) -> Result<Watch> {
        EtcdLessor::watch_from(self, prefix, from)
    }

    fn watch_key(&self, key: &[u8]) -> Result<Watch> {
        EtcdLessor::watch_key(self, key)
    }

    fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        EtcdLessor::txn(self, txn)
    }

    fn revision(&self) -> Result<Revision> {
        EtcdLessor::revision(self)
    }

    fn ready(&self) -> Result<()> {
        EtcdLessor::ready(self)
    }

    fn close(&self) -> Result<()> {
        EtcdLessor::close(self)
    }
}
