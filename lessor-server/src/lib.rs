//! etcd's v3 gRPC API served over an embedded [`lessor`]: `etcdctl`, Go's `clientv3` and any
//! other etcd client work against a process that holds a lessor, unchanged.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let lessor = lessor::Lessor::open("leases.redb")?;
//!     // The service keeps using its lessor in-process...
//!     let lease = lessor.grant(Duration::from_secs(30))?;
//!     lessor.put_with_lease("/services/api/1", "10.0.0.7:8080", lease.id)?;
//!     // ...and other processes see it through etcd's API:
//!     //   ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379 get --prefix /services/
//!     lessor_server::serve(lessor, "127.0.0.1:2379".parse()?).await?;
//!     Ok(())
//! }
//! ```
//!
//! [`Server`] gives the rest: a port chosen by the system ([`Bound::local_addr`]), TLS with
//! client certificates ([`TlsConfig`]), [`Limits`], and a shutdown signal
//! ([`Bound::serve_with_shutdown`]).
//!
//! # What is served
//! - **KV**: Range (`range_end`, prefixes, `"\0"` ends, limit, sort, count-only, keys-only,
//!   revision bounds), Put (`lease`, `prev_kv`, `ignore_value`, `ignore_lease`), DeleteRange
//!   (`prev_kv`, every key at one revision), Txn (every compare target and result, compares
//!   over ranges, nested transactions), Compact.
//! - **Watch**: many watches per stream, over keys, prefixes and ranges, from a start
//!   revision still in the engine's history, with `prev_kv`, the NOPUT/NODELETE filters,
//!   progress notifications and progress requests.
//! - **Lease**: Grant, Revoke, the KeepAlive stream, TimeToLive (with keys), Leases.
//! - **Maintenance**: Status and Alarm (none is ever raised); **Cluster**: MemberList (one
//!   member). Every other method answers UNIMPLEMENTED.
//!
//! Errors carry etcd's gRPC codes and messages, so that clients map them to their own error
//! values ("etcdserver: requested lease not found" is NOT_FOUND, a read at an older revision
//! "etcdserver: mvcc: required revision has been compacted"...).
//!
//! # What is refused, and why
//! The engine keeps the current version of each key and a bounded in-memory history of
//! changes, not etcd's multi-version store. So a read at a revision older than the current one
//! is answered with etcd's `ErrCompacted` (a newer one with `ErrFutureRev`), as etcd does after
//! a compaction; a watch can start at any revision its history still holds; `prev_kv` on a
//! watch is served only from the next revision on; and inside a transaction, a range at a
//! given revision and a put with `ignore_value`/`ignore_lease` answer UNIMPLEMENTED. Nothing
//! is answered approximately. The crate's README has the full table.
//!
//! # Security
//! The server listens on loopback unless told otherwise. Any other address needs TLS (a
//! certificate and key, and optionally a CA that client certificates must chain to) or
//! [`Config::insecure`]: without either, [`Server::new`] refuses it. There is no
//! authentication besides client certificates: whoever can connect can read, write and revoke
//! everything.

mod config;
mod engine;
mod errors;
mod kv;
mod lease;
mod maintenance;
mod proto;
mod server;
mod stopping;
mod watch;

pub use crate::config::{Config, Limits, TlsConfig};
pub use crate::server::{Bound, ServeError, Server, serve};

/// The generated protobuf types and service traits of the API served (etcd's `etcdserverpb`
/// and `mvccpb` packages, from our own `.proto` files). Not a stable API: for tests, tools and
/// the fuzz target.
#[doc(hidden)]
pub mod pb {
    pub use crate::proto::{etcdserverpb, mvccpb};
}

/// Entry points for tests and the fuzz target: the services themselves, to call without a
/// socket. Not part of the API.
#[doc(hidden)]
pub mod __test {
    use crate::engine::Engine;

    /// The KV service over `lessor`.
    pub fn kv(
        lessor: lessor::Lessor,
        limits: crate::Limits,
    ) -> impl crate::pb::etcdserverpb::kv_server::Kv {
        crate::kv::Kv::new(Engine::new(lessor), limits)
    }

    /// The Lease service over `lessor`.
    pub fn lease(
        lessor: lessor::Lessor,
        limits: crate::Limits,
    ) -> impl crate::pb::etcdserverpb::lease_server::Lease {
        crate::lease::Lease::new(
            Engine::new(lessor),
            &limits,
            crate::stopping::Stopping::never(),
        )
    }

    /// The Watch service over `lessor`, with `config`'s limits and progress interval.
    pub fn watch(
        lessor: lessor::Lessor,
        config: &crate::Config,
    ) -> impl crate::pb::etcdserverpb::watch_server::Watch {
        crate::watch::WatchService::new(
            Engine::new(lessor),
            config,
            crate::stopping::Stopping::never(),
        )
    }

    /// The Maintenance and Cluster services over `lessor`, as a member named `name` that
    /// clients reach at `addr` (plain text).
    pub fn maintenance(
        lessor: lessor::Lessor,
        name: &str,
        addr: std::net::SocketAddr,
    ) -> impl crate::pb::etcdserverpb::maintenance_server::Maintenance
    + crate::pb::etcdserverpb::cluster_server::Cluster {
        crate::maintenance::Maintenance::new(Engine::new(lessor), name.to_owned(), addr, false)
    }

    /// The largest message the gRPC layer decodes under `limits` (what the server gives
    /// tonic's `max_decoding_message_size`).
    pub fn max_message_bytes(limits: &crate::Limits) -> usize {
        limits.max_message_bytes()
    }
}
