//! Runs the suite through [`AsyncLeaseStore`]: `Blocking` is a `LeaseStore` whose every method
//! calls the async trait's and waits for its future with `futures::executor::block_on` (a
//! runtime-agnostic executor of the test's own), so that every case exercises the async
//! backend, not the blocking one.

use std::time::Duration;

use futures::executor::block_on;
use lessor::{
    AsyncLeaseStore, KeepAlive, KeepAliveOptions, KeyValue, Lease, LeaseId, LeaseInfo, LeaseStore,
    Result, Revision, Snapshot, Txn, TxnResponse, Watch,
};

/// A `LeaseStore` over an `AsyncLeaseStore`: see the module docs.
pub struct Blocking<S>(pub S);

impl<S: AsyncLeaseStore> LeaseStore for Blocking<S> {
    fn grant(&self, ttl: Duration) -> Result<Lease> {
        block_on(self.0.grant(ttl))
    }

    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        block_on(self.0.grant_with_id(id, ttl))
    }

    fn renew(&self, id: LeaseId) -> Result<Duration> {
        block_on(self.0.renew(id))
    }

    fn revoke(&self, id: LeaseId) -> Result<Revision> {
        block_on(self.0.revoke(id))
    }

    fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        block_on(self.0.time_to_live(id))
    }

    fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        block_on(self.0.time_to_live_with_keys(id))
    }

    fn leases(&self) -> Result<Vec<LeaseId>> {
        block_on(self.0.leases())
    }

    fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        block_on(self.0.keep_alive_with(id, opts))
    }

    fn attach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        block_on(self.0.attach(id, keys))
    }

    fn detach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        block_on(self.0.detach(id, keys))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        block_on(self.0.put(key, value))
    }

    fn put_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<Revision> {
        block_on(self.0.put_with_lease(key, value, id))
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        block_on(self.0.get(key))
    }

    fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        block_on(self.0.range(prefix))
    }

    fn range_with_revision(&self, prefix: &[u8]) -> Result<Snapshot> {
        block_on(self.0.range_with_revision(prefix))
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        block_on(self.0.delete(key))
    }

    fn watch(&self, prefix: &[u8]) -> Result<Watch> {
        block_on(self.0.watch(prefix))
    }

    fn watch_from(&self, prefix: &[u8], from: Revision) -> Result<Watch> {
        block_on(self.0.watch_from(prefix, from))
    }

    fn watch_key(&self, key: &[u8]) -> Result<Watch> {
        block_on(self.0.watch_key(key))
    }

    fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        block_on(self.0.txn(txn))
    }

    fn revision(&self) -> Result<Revision> {
        block_on(self.0.revision())
    }

    fn ready(&self) -> Result<()> {
        block_on(self.0.ready())
    }

    fn close(&self) -> Result<()> {
        block_on(self.0.close())
    }
}
