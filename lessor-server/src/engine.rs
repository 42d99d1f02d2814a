//! Every call the services make to the lessor, in one place.
//!
//! The library's API is synchronous. Writes (grants, puts, deletes, transactions, revocations)
//! wait for their commit, fsync included, so they run on tokio's blocking pool; reads and
//! renewals are in-memory and fast, so they run inline. Moving to an async lessor changes this
//! file only.

use std::time::Duration;

use lessor::{
    Lease, LeaseId, LeaseInfo, Lessor, Revision, Snapshot, Stats, TxnRequest, TxnResult, Watch,
};
use tonic::Status;

use crate::errors;

/// The lessor, as the services use it.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    lessor: Lessor,
}

/// A lessor call's result, as a gRPC status on error.
type Result<T> = std::result::Result<T, Status>;

impl Engine {
    pub(crate) fn new(lessor: Lessor) -> Engine {
        Engine { lessor }
    }

    /// Runs a call that writes on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Lessor) -> lessor::Result<T> + Send + 'static,
    ) -> Result<T> {
        let lessor = self.lessor.clone();
        match tokio::task::spawn_blocking(move || f(&lessor)).await {
            Ok(result) => result.map_err(errors::from_lessor),
            Err(e) => Err(Status::internal(format!("lessor: a request failed: {e}"))),
        }
    }

    /// Grants a lease of `ttl`, with this id or one of ours.
    pub(crate) async fn grant(&self, id: Option<LeaseId>, ttl: Duration) -> Result<Lease> {
        self.blocking(move |l| match id {
            Some(id) => l.grant_with_id(id, ttl),
            None => l.grant(ttl),
        })
        .await
    }

    /// Revokes a lease, deleting its keys; the revision after.
    pub(crate) async fn revoke(&self, id: LeaseId) -> Result<Revision> {
        self.blocking(move |l| l.revoke(id)).await
    }

    /// Renews a lease; its TTL.
    pub(crate) fn renew(&self, id: LeaseId) -> Result<Duration> {
        self.lessor.renew(id).map_err(errors::from_lessor)
    }

    /// A lease's TTL and time left, with its keys if asked.
    pub(crate) fn time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseInfo> {
        if keys {
            self.lessor.time_to_live_with_keys(id)
        } else {
            self.lessor.time_to_live(id)
        }
        .map_err(errors::from_lessor)
    }

    /// The live leases' ids.
    pub(crate) fn leases(&self) -> Vec<LeaseId> {
        self.lessor.leases()
    }

    /// Runs a transaction.
    pub(crate) async fn txn(&self, txn: TxnRequest) -> Result<TxnResult> {
        self.blocking(move |l| lessor::LeaseStore::transaction(l, txn))
            .await
    }

    /// The keys of `[start, end)` (`end` `None`: from `start` on), with the revision read.
    pub(crate) fn range(&self, start: &[u8], end: Option<&[u8]>) -> Result<Snapshot> {
        self.lessor
            .range_between(start, end)
            .map_err(errors::from_lessor)
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> Result<Revision> {
        self.lessor.revision().map_err(errors::from_lessor)
    }

    /// Watches the keys starting with `prefix`, from revision `from` on.
    pub(crate) fn watch(&self, prefix: &[u8], from: Revision) -> lessor::Result<Watch> {
        self.lessor.watch_from(prefix, from)
    }

    /// The lessor's counters and sizes.
    pub(crate) fn stats(&self) -> Result<Stats> {
        self.lessor.stats().map_err(errors::from_lessor)
    }
}
