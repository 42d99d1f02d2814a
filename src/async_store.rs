//! [`AsyncLeaseStore`]: the operations every backend shares, for async code, so that one async
//! service runs on the embedded [`AsyncLessor`] or, with the `etcd` feature, on an etcd cluster.
//!
//! The async twin of [`LeaseStore`](crate::LeaseStore): the same methods with the same
//! contracts, those that may wait returning a [`BoxFuture`]. It is dyn-compatible, so a service
//! can hold an `Arc<dyn AsyncLeaseStore>` and pick its backend at run time; the boxing costs an
//! allocation per call (tens of nanoseconds), and the inherent `async fn`s of [`AsyncLessor`]
//! avoid even that. Every method returns a future, even those that never wait on the embedded
//! engine ([`renew`](AsyncLeaseStore::renew), keep-alives and watches): on etcd each is a
//! round trip (a renewal, or opening a stream).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::async_lessor::AsyncLessor;
use crate::error::Result;
use crate::keepalive::{KeepAlive, KeepAliveOptions};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

/// A boxed future that can be sent between threads: what [`AsyncLeaseStore`]'s methods
/// return, so that the trait stays dyn-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lease store for async code: implemented by [`AsyncLessor`] and, with the `etcd` feature,
/// by `EtcdLessor`. Every method has the contract of the [`LeaseStore`](crate::LeaseStore)
/// method of the same name (whose docs list where the backends differ); those that may wait
/// for the disk or the network return a future, which never blocks its executor.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lessor::{AsyncLeaseStore, AsyncLessor, Lessor};
///
/// /// Registers an instance under a lease; runs on any backend.
/// async fn register(store: &dyn AsyncLeaseStore, name: &str, addr: &str) -> lessor::Result<lessor::LeaseId> {
///     let lease = store.grant(Duration::from_secs(10)).await?;
///     let key = format!("/services/{name}");
///     store.put_with_lease(key.as_bytes(), addr.as_bytes(), lease.id).await?;
///     Ok(lease.id)
/// }
///
/// # fn main() -> lessor::Result<()> {
/// let store: Arc<dyn AsyncLeaseStore> = Arc::new(AsyncLessor::from(Lessor::open_in_memory()?));
/// futures::executor::block_on(async {
///     let id = register(&*store, "api-1", "10.0.0.7:8080").await?;
///     assert_eq!(store.get(b"/services/api-1").await?.unwrap().lease, Some(id));
///     store.revoke(id).await?;
///     assert!(store.get(b"/services/api-1").await?.is_none());
///     store.close().await
/// })
/// # }
/// ```
pub trait AsyncLeaseStore: Send + Sync {
    /// Grants a lease of `ttl` with a new id; see [`LeaseStore::grant`](crate::LeaseStore::grant).
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<Lease>>;

    /// Grants a lease with the id of the caller's choice; see
    /// [`LeaseStore::grant_with_id`](crate::LeaseStore::grant_with_id).
    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> BoxFuture<'_, Result<Lease>>;

    /// Renews a lease once and returns its TTL; see
    /// [`LeaseStore::renew`](crate::LeaseStore::renew). Ready at once on the embedded engine
    /// (whose [`AsyncLessor::renew`] is a plain call); a round trip on etcd.
    fn renew(&self, id: LeaseId) -> BoxFuture<'_, Result<Duration>>;

    /// Revokes a lease, deleting its keys; see [`LeaseStore::revoke`](crate::LeaseStore::revoke).
    fn revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<Revision>>;

    /// A live lease's TTL and time left; see
    /// [`LeaseStore::time_to_live`](crate::LeaseStore::time_to_live).
    fn time_to_live(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>>;

    /// [`time_to_live`](Self::time_to_live) with the lease's keys; see
    /// [`LeaseStore::time_to_live_with_keys`](crate::LeaseStore::time_to_live_with_keys).
    fn time_to_live_with_keys(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>>;

    /// Ids of the live leases; see [`LeaseStore::leases`](crate::LeaseStore::leases).
    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseId>>>;

    /// Keeps a lease alive in the background; see
    /// [`LeaseStore::keep_alive`](crate::LeaseStore::keep_alive). The future resolves once the
    /// keep-alive runs (at once on the embedded engine; once its stream is open on etcd); the
    /// handle is a [`Stream`](crate::Stream) of renewals, with [`KeepAlive::lost`].
    fn keep_alive(&self, id: LeaseId) -> BoxFuture<'_, Result<KeepAlive>> {
        self.keep_alive_with(id, KeepAliveOptions::default())
    }

    /// [`keep_alive`](Self::keep_alive) with options; see
    /// [`LeaseStore::keep_alive_with`](crate::LeaseStore::keep_alive_with).
    fn keep_alive_with(
        &self,
        id: LeaseId,
        opts: KeepAliveOptions,
    ) -> BoxFuture<'_, Result<KeepAlive>>;

    /// Attaches existing keys to a lease; see [`LeaseStore::attach`](crate::LeaseStore::attach).
    fn attach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>>;

    /// Detaches keys from a lease; see [`LeaseStore::detach`](crate::LeaseStore::detach).
    fn detach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>>;

    /// Writes a key with no lease; see [`LeaseStore::put`](crate::LeaseStore::put).
    fn put<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> BoxFuture<'a, Result<Revision>>;

    /// Writes a key attached to a lease; see
    /// [`LeaseStore::put_with_lease`](crate::LeaseStore::put_with_lease).
    fn put_with_lease<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        id: LeaseId,
    ) -> BoxFuture<'a, Result<Revision>>;

    /// Reads one key; see [`LeaseStore::get`](crate::LeaseStore::get).
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Reads every key under a prefix; see [`LeaseStore::range`](crate::LeaseStore::range).
    fn range<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Vec<KeyValue>>>;

    /// [`range`](Self::range) with its revision; see
    /// [`LeaseStore::range_with_revision`](crate::LeaseStore::range_with_revision).
    fn range_with_revision<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Snapshot>>;

    /// Deletes a key; see [`LeaseStore::delete`](crate::LeaseStore::delete).
    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>>;

    /// Watches a prefix; see [`LeaseStore::watch`](crate::LeaseStore::watch). The future
    /// resolves once the watch is registered (at once on the embedded engine; once its stream is
    /// open on etcd); the [`Watch`] is a [`Stream`](crate::Stream).
    fn watch<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Watch>>;

    /// Watches a prefix from a revision; see
    /// [`LeaseStore::watch_from`](crate::LeaseStore::watch_from).
    fn watch_from<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<Watch>>;

    /// Watches one key exactly; see [`LeaseStore::watch_key`](crate::LeaseStore::watch_key).
    fn watch_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Watch>>;

    /// Commits a transaction; see [`LeaseStore::txn`](crate::LeaseStore::txn).
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>>;

    /// The store's current revision; see [`Lessor::revision`](crate::Lessor::revision).
    fn revision(&self) -> BoxFuture<'_, Result<Revision>>;

    /// Whether the store can serve calls now, for a readiness probe; see
    /// [`LeaseStore::ready`](crate::LeaseStore::ready).
    fn ready(&self) -> BoxFuture<'_, Result<()>>;

    /// Closes the store; see [`LeaseStore::close`](crate::LeaseStore::close).
    fn close(&self) -> BoxFuture<'_, Result<()>>;
}

impl AsyncLeaseStore for AsyncLessor {
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(AsyncLessor::grant(self, ttl))
    }

    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(AsyncLessor::grant_with_id(self, id, ttl))
    }

    fn renew(&self, id: LeaseId) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(std::future::ready(AsyncLessor::renew(self, id)))
    }

    fn revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(AsyncLessor::revoke(self, id))
    }

    fn time_to_live(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>> {
        Box::pin(AsyncLessor::time_to_live(self, id))
    }

    fn time_to_live_with_keys(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>> {
        Box::pin(AsyncLessor::time_to_live_with_keys(self, id))
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseId>>> {
        Box::pin(AsyncLessor::leases(self))
    }

    fn keep_alive_with(
        &self,
        id: LeaseId,
        opts: KeepAliveOptions,
    ) -> BoxFuture<'_, Result<KeepAlive>> {
        Box::pin(std::future::ready(AsyncLessor::keep_alive_with(
            self, id, opts,
        )))
    }

    fn attach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        Box::pin(AsyncLessor::attach(self, id, keys.iter().copied()))
    }

    fn detach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        Box::pin(AsyncLessor::detach(self, id, keys.iter().copied()))
    }

    fn put<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(AsyncLessor::put(self, key, value))
    }

    fn put_with_lease<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        id: LeaseId,
    ) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(AsyncLessor::put_with_lease(self, key, value, id))
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(AsyncLessor::get(self, key))
    }

    fn range<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Vec<KeyValue>>> {
        Box::pin(AsyncLessor::range(self, prefix))
    }

    fn range_with_revision<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Snapshot>> {
        Box::pin(AsyncLessor::range_with_revision(self, prefix))
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(AsyncLessor::delete(self, key))
    }

    fn watch<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(std::future::ready(AsyncLessor::watch(self, prefix)))
    }

    fn watch_from<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(std::future::ready(AsyncLessor::watch_from(
            self, prefix, from,
        )))
    }

    fn watch_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(std::future::ready(AsyncLessor::watch_key(self, key)))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        Box::pin(AsyncLessor::txn(self, txn))
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(AsyncLessor::revision(self))
    }

    fn ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(AsyncLessor::ready(self))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(AsyncLessor::close(self))
    }
}
