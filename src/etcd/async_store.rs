//! [`AsyncLeaseStore`] for [`EtcdLessor`]: every call a future polled by the caller's executor
//! (tokio's, current-thread or multi-thread, or any other), never blocking it. The futures run
//! inside the backend's runtime context (see `InRuntime` in `mod.rs`): the `lessor-etcd`
//! thread drives the connections, timers, keep-alives and watches; the requests themselves are
//! polled by the caller. Each is the blocking method's own body (the blocking API runs these
//! futures with `block_on`), so both have the same retries, timeouts and errors.

use std::time::Duration;

use super::{EtcdLessor, keepalive, watch};
use crate::async_store::{AsyncLeaseStore, BoxFuture};
use crate::error::Result;
use crate::keepalive::{KeepAlive, KeepAliveOptions};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

impl AsyncLeaseStore for EtcdLessor {
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(self.core().grant_async(None, ttl))
    }

    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> BoxFuture<'_, Result<Lease>> {
        Box::pin(self.core().grant_async(Some(id), ttl))
    }

    fn renew(&self, id: LeaseId) -> BoxFuture<'_, Result<Duration>> {
        Box::pin(self.renew_async(id))
    }

    fn revoke(&self, id: LeaseId) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(self.core().revoke_async(id))
    }

    fn time_to_live(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>> {
        Box::pin(self.lease_info_async(id, false))
    }

    fn time_to_live_with_keys(&self, id: LeaseId) -> BoxFuture<'_, Result<LeaseInfo>> {
        Box::pin(self.lease_info_async(id, true))
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseId>>> {
        Box::pin(self.leases_async())
    }

    fn keep_alive_with(
        &self,
        id: LeaseId,
        opts: KeepAliveOptions,
    ) -> BoxFuture<'_, Result<KeepAlive>> {
        Box::pin(keepalive::start_async(self.core(), id, opts))
    }

    fn attach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        let keys = keys.iter().map(|k| k.to_vec()).collect();
        Box::pin(self.core().move_keys_async(id, keys, true))
    }

    fn detach<'a>(&'a self, id: LeaseId, keys: &'a [&'a [u8]]) -> BoxFuture<'a, Result<()>> {
        let keys = keys.iter().map(|k| k.to_vec()).collect();
        Box::pin(self.core().move_keys_async(id, keys, false))
    }

    fn put<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(self.core().put_async(key, value, None))
    }

    fn put_with_lease<'a>(
        &'a self,
        key: &'a [u8],
        value: &'a [u8],
        id: LeaseId,
    ) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(self.core().put_async(key, value, Some(id)))
    }

    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(self.get_async(key))
    }

    fn range<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Vec<KeyValue>>> {
        Box::pin(async move { Ok(self.range_with_revision_async(prefix).await?.kvs) })
    }

    fn range_with_revision<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Snapshot>> {
        Box::pin(self.range_with_revision_async(prefix))
    }

    fn delete<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.delete_async(key))
    }

    fn watch<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(watch::start_async(self.core(), prefix, false, None))
    }

    fn watch_from<'a>(&'a self, prefix: &'a [u8], from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(watch::start_async(self.core(), prefix, false, Some(from)))
    }

    fn watch_key<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(watch::start_async(self.core(), key, true, None))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnResponse>> {
        Box::pin(self.txn_async(txn))
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(self.core().revision_async())
    }

    fn ready(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.ready_async())
    }

    /// Closes as [`EtcdLessor::close`]; inside a runtime the backend's runtime is shut down in
    /// the background rather than joined, so this never blocks the executor.
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(EtcdLessor::close(self)))
    }
}
