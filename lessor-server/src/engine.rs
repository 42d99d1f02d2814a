//! Every call the services make to the lessor, in one place.
//!
//! Writes (grants, transactions, revocations) go through [`AsyncLessor`]: applied on the task
//! in microseconds, then awaited, without blocking the executor, until the lessor's flusher
//! thread has made them durable (one fsync for every write applied meanwhile). Reads and
//! renewals are in memory and run inline. Any other way to reach the engine changes this file
//! only.

use std::time::Duration;

use lessor::{
    AsyncLessor, Lease, LeaseId, LeaseInfo, Lessor, Page, RangeOptions, Revision, Snapshot, Stats,
    Txn, TxnResponse, Watch,
};
use tonic::Status;

use crate::errors;

/// The lessor, as the services use it.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    lessor: AsyncLessor,
}

/// A lessor call's result, as a gRPC status on error.
type Result<T> = std::result::Result<T, Status>;

impl Engine {
    pub(crate) fn new(lessor: Lessor) -> Engine {
        Engine {
            lessor: AsyncLessor::from(lessor),
        }
    }

    /// The blocking handle, for reads.
    fn sync(&self) -> &Lessor {
        self.lessor.lessor()
    }

    /// Grants a lease of `ttl`, with this id or one of ours.
    pub(crate) async fn grant(&self, id: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        match id {
            Some(id) => self.lessor.grant_with_id(id, ttl).await,
            None => self.lessor.grant(ttl).await,
        }
        .map_err(errors::from_lessor)
    }

    /// Revokes a lease, deleting its keys; the revision after.
    pub(crate) async fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.lessor.revoke(id).await.map_err(errors::from_lessor)
    }

    /// Renews a lease; its TTL.
    pub(crate) fn renew(&self, id: LeaseId) -> Result<Duration> {
        self.lessor.renew(id).map_err(errors::from_lessor)
    }

    /// A lease's TTL and time left, with its keys if asked.
    pub(crate) fn time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseInfo> {
        if keys {
            self.sync().time_to_live_with_keys(id)
        } else {
            self.sync().time_to_live(id)
        }
        .map_err(errors::from_lessor)
    }

    /// The live leases' ids.
    pub(crate) fn leases(&self) -> Result<Vec<LeaseId>> {
        self.sync().leases().map_err(errors::from_lessor)
    }

    /// Runs a transaction.
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.lessor.txn(txn).await.map_err(errors::from_lessor)
    }

    /// The keys of `[start, end)` (`end` `None`: from `start` on), with the revision read.
    pub(crate) fn range(&self, start: &[u8], end: Option<&[u8]>) -> Result<Snapshot> {
        self.sync()
            .range_between(start, end)
            .map_err(errors::from_lessor)
    }

    /// A page of the keys of `[start, end)` (`end` `None`: from `start` on) and the count of
    /// the whole range, reading no more than the page whole.
    pub(crate) fn range_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        options: RangeOptions,
    ) -> Result<Page> {
        self.sync()
            .range_page(start, end, options)
            .map_err(errors::from_lessor)
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> Result<Revision> {
        self.sync().revision().map_err(errors::from_lessor)
    }

    /// Watches the keys starting with `prefix`, from revision `from` on.
    pub(crate) fn watch(&self, prefix: &[u8], from: Revision) -> lessor::Result<Watch> {
        self.lessor.watch_from(prefix, from)
    }

    /// The lessor's counters and sizes.
    pub(crate) fn stats(&self) -> Result<Stats> {
        self.sync().stats().map_err(errors::from_lessor)
    }
}

/// The key [`Server::bind`](crate::Server::bind) writes and deletes once on a store still at revision 0; the
/// services never show it (watch events of it are dropped).
pub(crate) const START_KEY: &[u8] = b"\0lessor-server/start";

/// Brings a store still at revision 0 (never written) past revision 1, so that the first write
/// of a client is above 1, as on etcd (whose empty store is at revision 1). Clients rely on it:
/// clientv3/concurrency's mutex and election wait for the keys created before their own with
/// `WithMaxCreateRev(own - 1)`, where 0 means "no bound", so a lock taken by the very first
/// write of a store at revision 0 waited for its own key forever. A put and a delete of
/// [`START_KEY`]: revision 2, nothing left behind.
pub(crate) async fn past_revision_one(lessor: &lessor::Lessor) -> lessor::Result<()> {
    if lessor.revision()?.get() == 0 {
        let a = lessor::AsyncLessor::from(lessor.clone());
        a.put(START_KEY, "").await?;
        a.delete(START_KEY).await?;
    }
    Ok(())
}
