//! [`LeaseStore`]: the operations every backend shares, so that one program runs on the
//! embedded [`Lessor`] or, with the `etcd` feature, on an etcd cluster (`EtcdLessor`).
//!
//! The trait is object-safe: keys and values are byte slices (`b"/a"`, `s.as_bytes()`), and
//! a transaction is described by a [`Txn`] (our [`Compare`] and [`Op`] values) rather
//! than by a builder borrowed from one backend. So a program can pick its backend at run time
//! and hold it as a `Box<dyn LeaseStore>` or an `Arc<dyn LeaseStore>`. Handles are the same
//! types on every backend: [`Watch`], [`KeepAlive`].
//!
//! `Lessor` implements the trait by calling its own methods of the same names; its inherent
//! API is unchanged and stays the richer one (`impl AsRef<[u8]>` keys, a ticker, a
//! [`ManualClock`](crate::ManualClock), events, `verify`, `sync`).

use std::time::Duration;

use crate::error::Result;
use crate::keepalive::{KeepAlive, KeepAliveOptions};
use crate::lease::{KeyValue, Lease, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::lessor::Lessor;
use crate::txn::{Txn, TxnResponse};
use crate::watch::Watch;

/// A lease store: leases with TTLs, keys attached to them, renewals, revocation and expiry,
/// watches and transactions. Implemented by the embedded [`Lessor`] and, with the `etcd`
/// feature, by `EtcdLessor` (an etcd cluster).
///
/// Every method has the contract of the [`Lessor`] method of the same name; where a backend
/// departs from it, that backend's docs say so. The differences, each pinned by a test that runs
/// on both backends (`tests/conformance/differences.rs`, or `tests/etcd_faults.rs` where it
/// needs a cluster):
///
/// | | embedded [`Lessor`] | `EtcdLessor` |
/// |---|---|---|
/// | TTL granularity | kept to the nanosecond; raised to [`Builder::min_ttl`](crate::Builder::min_ttl) (10 ms) | whole seconds, rounded up; raised to the cluster's minimum (2 s by default); [`time_to_live`](LeaseStore::time_to_live)'s `remaining` in whole seconds, rounded down |
/// | [`attach`](LeaseStore::attach) / [`detach`](LeaseStore::detach) | in place: same revision and version, no watch event | a rewrite of each key with its own value: a new revision, the version grows, watchers see a put |
/// | delete causes in watches | [`DeleteCause::Deleted`](crate::DeleteCause::Deleted), `LeaseRevoked(id)`, `LeaseExpired(id)` | always [`DeleteCause::Unknown`](crate::DeleteCause::Unknown) |
/// | [`watch_from`](LeaseStore::watch_from)`(0)` | [`Error::Compacted`](crate::Error::Compacted) (0 is before any history) | from the next change (etcd reads 0 as "no start revision") |
/// | size limits | [`Error::ValueTooLarge`](crate::Error::ValueTooLarge) above [`Builder::max_value_size`](crate::Builder::max_value_size) (1 MiB), the value alone | `ValueTooLarge` from [`put`](LeaseStore::put) when etcd refuses the request (`--max-request-bytes`, 1.5 MiB by default, for key, value and framing together); `max` is the limit etcd named (gRPC's, 2 MiB by default) or 1.5 MiB; in a [`txn`](LeaseStore::txn), [`Error::Backend`](crate::Error::Backend) |
/// | lease TTL on a leader change | no leader | every lease's TTL restarts in full when a new leader is elected (etcd's rule): a lease outlives its deadline by up to an election plus one TTL |
/// | a write that fails | did not happen (see [`Error::Storage`](crate::Error::Storage) for the one exception) | [`Error::Unavailable`](crate::Error::Unavailable) after it was sent **may have committed**: read before retrying it. Retried on another endpoint only when it provably never left (connection refused) |
/// | lease ids | assigned in sequence from 1; any id from 1 to [`LeaseId::MAX`] can be asked for | assigned by etcd's members (large, at most [`LeaseId::MAX`], which is `i64::MAX`) |
/// | revisions | start at 0 in a fresh database | start at 1 on a fresh cluster; compare revisions, do not expect values |
///
/// The keep-alive's [`KeepAlive::deadline`] is on both: until when the lease is held for sure.
///
/// ```
/// use std::time::Duration;
/// use lessor::{LeaseStore, Lessor};
///
/// /// Registers an instance under a lease; works on any backend.
/// fn register(store: &dyn LeaseStore, name: &str, addr: &str) -> lessor::Result<lessor::LeaseId> {
///     let lease = store.grant(Duration::from_secs(10))?;
///     store.put_with_lease(format!("/services/{name}").as_bytes(), addr.as_bytes(), lease.id)?;
///     Ok(lease.id)
/// }
///
/// # fn main() -> lessor::Result<()> {
/// let store: Box<dyn LeaseStore> = Box::new(Lessor::open_in_memory()?);
/// let id = register(&*store, "api-1", "10.0.0.7:8080")?;
/// assert_eq!(store.get(b"/services/api-1")?.unwrap().lease, Some(id));
/// store.revoke(id)?;
/// assert!(store.get(b"/services/api-1")?.is_none());
/// # Ok(()) }
/// ```
pub trait LeaseStore: Send + Sync {
    /// Grants a lease of `ttl` with a new id; see [`Lessor::grant`].
    ///
    /// # Errors
    /// [`Error::TtlOutOfRange`](crate::Error::TtlOutOfRange) above the maximum, and the
    /// backend's errors ([`Error::Unavailable`](crate::Error::Unavailable) for etcd,
    /// [`Error::Storage`](crate::Error::Storage) for the embedded engine).
    fn grant(&self, ttl: Duration) -> Result<Lease>;

    /// Grants a lease with the id of the caller's choice; see [`Lessor::grant_with_id`].
    ///
    /// # Errors
    /// [`Error::LeaseExists`](crate::Error::LeaseExists) if the id is taken, and as
    /// [`grant`](LeaseStore::grant).
    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease>;

    /// Renews a lease once and returns its TTL; see [`Lessor::renew`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it is not alive.
    fn renew(&self, id: LeaseId) -> Result<Duration>;

    /// Revokes a lease, deleting its keys; returns the revision after. See [`Lessor::revoke`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it is not alive.
    fn revoke(&self, id: LeaseId) -> Result<Revision>;

    /// The granted TTL and time left of a live lease, without its keys; see
    /// [`Lessor::time_to_live`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it is not alive.
    fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo>;

    /// The granted TTL, time left and keys of a live lease; see
    /// [`Lessor::time_to_live_with_keys`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it is not alive.
    fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo>;

    /// Ids of the live leases, ascending; see [`Lessor::leases`].
    ///
    /// # Errors
    /// The backend's errors (the embedded engine returns an empty list once closed).
    fn leases(&self) -> Result<Vec<LeaseId>>;

    /// Keeps a lease alive with the default options (renewals every third of its TTL) until the
    /// handle is cancelled or dropped; see [`Lessor::keep_alive`].
    ///
    /// On every backend the handle knows until when the lease is held for sure, its *local
    /// deadline*: [`KeepAlive::deadline`]. A lock holder fences its work with it (start a step
    /// only if it ends before the deadline); once it passes without a renewal the keep-alive
    /// ends as [`EndReason::Expired`](crate::EndReason::Expired), network or not.
    ///
    /// # Errors
    /// As [`keep_alive_with`](LeaseStore::keep_alive_with).
    fn keep_alive(&self, id: LeaseId) -> Result<KeepAlive> {
        self.keep_alive_with(id, KeepAliveOptions::default())
    }

    /// Keeps a lease alive with the given options; see [`Lessor::keep_alive_with`]. The first
    /// renewal happens before this returns.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if it is not alive,
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an interval not shorter than
    /// the TTL.
    fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive>;

    /// Attaches existing keys to a lease, all or nothing; see [`Lessor::attach`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound),
    /// [`Error::KeyNotFound`](crate::Error::KeyNotFound).
    fn attach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()>;

    /// Detaches keys from a lease, all or nothing; see [`Lessor::detach`].
    ///
    /// # Errors
    /// [`Error::KeyNotFound`](crate::Error::KeyNotFound),
    /// [`Error::KeyNotAttached`](crate::Error::KeyNotAttached).
    fn detach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()>;

    /// Writes `key = value` with no lease; returns the new revision. See [`Lessor::put`].
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an empty key, and size limits.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision>;

    /// Writes `key = value` attached to a lease; see [`Lessor::put_with_lease`].
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`](crate::Error::LeaseNotFound) if the lease is not alive, and as
    /// [`put`](LeaseStore::put).
    fn put_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<Revision>;

    /// Reads one key; see [`Lessor::get`].
    ///
    /// # Errors
    /// The backend's errors.
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;

    /// Reads the keys under `prefix` in key order (`b""`: all); see [`Lessor::range`].
    ///
    /// # Errors
    /// The backend's errors.
    fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>>;

    /// Reads the keys under `prefix` with the revision of the read; see
    /// [`Lessor::range_with_revision`].
    ///
    /// # Errors
    /// The backend's errors.
    fn range_with_revision(&self, prefix: &[u8]) -> Result<Snapshot>;

    /// Deletes a key; returns whether it existed. See [`Lessor::delete`].
    ///
    /// # Errors
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) for an empty key.
    fn delete(&self, key: &[u8]) -> Result<bool>;

    /// Watches the keys under `prefix` from the next change on; see [`Lessor::watch`]. Every
    /// change committed after this returns is delivered.
    ///
    /// # Errors
    /// The backend's errors.
    fn watch(&self, prefix: &[u8]) -> Result<Watch>;

    /// Watches the keys under `prefix` from revision `from` on; see [`Lessor::watch_from`].
    ///
    /// # Errors
    /// [`Error::Compacted`](crate::Error::Compacted) if the history no longer reaches `from`
    /// (etcd may report that later instead: the watch then ends with
    /// [`WatchEnd::Compacted`](crate::WatchEnd::Compacted)).
    fn watch_from(&self, prefix: &[u8], from: Revision) -> Result<Watch>;

    /// Watches the key `key` alone (not the keys it is a prefix of) from the next change on;
    /// see [`Lessor::watch_key`].
    ///
    /// # Errors
    /// The backend's errors.
    fn watch_key(&self, key: &[u8]) -> Result<Watch>;

    /// Runs a transaction: if every comparison holds, the `then` ops, else the `otherwise`
    /// ops, atomically. See [`Txn`](crate::Txn) for the contract.
    ///
    /// # Errors
    /// As [`Lessor::txn`](crate::Lessor::txn).
    fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// The store's current revision: the revision of its last change. See
    /// [`Lessor::revision`].
    ///
    /// # Errors
    /// The backend's errors.
    fn revision(&self) -> Result<Revision>;

    /// Whether the store can serve calls now, for a readiness probe: `Ok(())`, or the error
    /// that says why not. What a portable service needs to take itself out of a load balancer
    /// (a health endpoint answers 503 on `Err`); it does not change anything.
    ///
    /// - The embedded engine ([`Lessor::ready`]): open, not poisoned by a failed write, and
    ///   its ticker (which expires leases) running if it was built with one. No I/O.
    /// - etcd (`EtcdLessor::ready`): a linearizable read answered within the request timeout
    ///   (so a leader and a quorum are there), and no alarm raised (a full disk makes etcd
    ///   refuse writes).
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed), [`Error::Poisoned`](crate::Error::Poisoned),
    /// [`Error::Unavailable`](crate::Error::Unavailable) (unreachable, no leader, or the
    /// embedded ticker stopped), [`Error::Backend`](crate::Error::Backend) (an etcd alarm).
    fn ready(&self) -> Result<()>;

    /// Closes this handle (every clone of it): keep-alives end with
    /// [`EndReason::Closed`](crate::EndReason::Closed), watches end, later calls get
    /// [`Error::Closed`](crate::Error::Closed). Leases are not revoked. Calling it again does
    /// nothing.
    ///
    /// # Errors
    /// The backend's errors while closing (see [`Lessor::close`]).
    fn close(&self) -> Result<()>;
}

impl LeaseStore for Lessor {
    fn grant(&self, ttl: Duration) -> Result<Lease> {
        Lessor::grant(self, ttl)
    }

    fn grant_with_id(&self, id: LeaseId, ttl: Duration) -> Result<Lease> {
        Lessor::grant_with_id(self, id, ttl)
    }

    fn renew(&self, id: LeaseId) -> Result<Duration> {
        Lessor::renew(self, id)
    }

    fn revoke(&self, id: LeaseId) -> Result<Revision> {
        Lessor::revoke(self, id)
    }

    fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        Lessor::time_to_live(self, id)
    }

    fn time_to_live_with_keys(&self, id: LeaseId) -> Result<LeaseInfo> {
        Lessor::time_to_live_with_keys(self, id)
    }

    fn leases(&self) -> Result<Vec<LeaseId>> {
        Lessor::leases(self)
    }

    fn keep_alive_with(&self, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
        Lessor::keep_alive_with(self, id, opts)
    }

    fn attach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        Lessor::attach(self, id, keys)
    }

    fn detach(&self, id: LeaseId, keys: &[&[u8]]) -> Result<()> {
        Lessor::detach(self, id, keys)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision> {
        Lessor::put(self, key, value)
    }

    fn put_with_lease(&self, key: &[u8], value: &[u8], id: LeaseId) -> Result<Revision> {
        Lessor::put_with_lease(self, key, value, id)
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Lessor::get(self, key)
    }

    fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        Lessor::range(self, prefix)
    }

    fn range_with_revision(&self, prefix: &[u8]) -> Result<Snapshot> {
        Lessor::range_with_revision(self, prefix)
    }

    fn delete(&self, key: &[u8]) -> Result<bool> {
        Lessor::delete(self, key)
    }

    fn watch(&self, prefix: &[u8]) -> Result<Watch> {
        Lessor::watch(self, prefix)
    }

    fn watch_from(&self, prefix: &[u8], from: Revision) -> Result<Watch> {
        Lessor::watch_from(self, prefix, from)
    }

    fn watch_key(&self, key: &[u8]) -> Result<Watch> {
        Lessor::watch_key(self, key)
    }

    fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Lessor::txn(self, txn)
    }

    fn revision(&self) -> Result<Revision> {
        Lessor::revision(self)
    }

    fn ready(&self) -> Result<()> {
        Lessor::ready(self)
    }

    fn close(&self) -> Result<()> {
        Lessor::close(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lessor_is_usable_as_a_trait_object() {
        let store: Box<dyn LeaseStore> = Box::new(Lessor::open_in_memory().unwrap());
        let lease = store.grant(Duration::from_secs(5)).unwrap();
        store.put(b"/a", b"1").unwrap();
        store.attach(lease.id, &[b"/a".as_slice()]).unwrap();
        assert_eq!(
            store.time_to_live_with_keys(lease.id).unwrap().keys,
            vec![b"/a".to_vec()]
        );
        assert_eq!(store.leases().unwrap(), vec![lease.id]);
        store.close().unwrap();
        assert!(matches!(store.leases(), Err(crate::Error::Closed)));
    }
}
