//! How the server listens, and its limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where and how the server listens: [`Server::new`](crate::Server::new) takes one.
///
/// The default listens on `127.0.0.1:2379` (etcd's client port, on loopback only), without TLS,
/// with the default [`Limits`]. Listening on any other address needs [`tls`](Config::tls), or
/// [`insecure`](Config::insecure) to accept plain text on purpose.
///
/// ```
/// use lessor_server::{Config, Limits};
///
/// let config = Config::new("127.0.0.1:0".parse().unwrap())
///     .limits(Limits::default().max_watches_per_stream(100));
/// assert!(config.tls.is_none());
/// assert_eq!(config.limits.max_watches_per_stream, 100);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The address to listen on; port 0 picks a free port ([`Bound::local_addr`](crate::Bound::local_addr)
    /// says which). Default `127.0.0.1:2379`.
    pub listen: SocketAddr,
    /// Serve plain text on an address that is not loopback. Anyone who can reach the port can
    /// then read, write and revoke everything: use it only on a network you trust entirely.
    /// Default `false`.
    pub insecure: bool,
    /// Serve TLS with this certificate and key, and require client certificates when a client
    /// CA is given. Default `None`.
    pub tls: Option<TlsConfig>,
    /// Request size, streams and watches.
    pub limits: Limits,
    /// How often a watch created with `progress_notify` gets an empty response while none of
    /// its keys change (etcd's default: 10 minutes).
    pub progress_notify_interval: Duration,
    /// Whether [`Server::bind`](crate::Server::bind) brings a store never written (at revision
    /// 0) to revision 2 first, with a put and a delete of an internal key, so that clients'
    /// first write is above revision 1 as on etcd, whose empty store is at revision 1 (default
    /// `true`). clientv3/concurrency's Mutex and Election rely on it: they wait for the keys
    /// created before their own with `WithMaxCreateRev(own - 1)`, where 0 means "no bound", so
    /// a lock taken by a store's very first write would wait for its own key forever. Turn it
    /// off only for a store no such client uses, to keep the engine's revisions as they are.
    pub etcd_start_revision: bool,
    /// The name this member gives in `MemberList` and `endpoint status`. Default `"lessor"`.
    pub name: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2379)),
            insecure: false,
            tls: None,
            limits: Limits::default(),
            progress_notify_interval: Duration::from_secs(600),
            name: "lessor".to_owned(),
            etcd_start_revision: true,
        }
    }
}

impl Config {
    /// The default configuration listening on `listen`.
    pub fn new(listen: SocketAddr) -> Config {
        Config {
            listen,
            ..Config::default()
        }
    }

    /// Sets [`insecure`](Config::insecure).
    #[must_use]
    pub fn insecure(mut self, insecure: bool) -> Config {
        self.insecure = insecure;
        self
    }

    /// Sets [`tls`](Config::tls).
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Config {
        self.tls = Some(tls);
        self
    }

    /// Sets [`limits`](Config::limits).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Config {
        self.limits = limits;
        self
    }

    /// Sets [`progress_notify_interval`](Config::progress_notify_interval).
    #[must_use]
    pub fn progress_notify_interval(mut self, interval: Duration) -> Config {
        self.progress_notify_interval = interval;
        self
    }

    /// Sets [`etcd_start_revision`](Config::etcd_start_revision).
    #[must_use]
    pub fn etcd_start_revision(mut self, on: bool) -> Config {
        self.etcd_start_revision = on;
        self
    }

    /// Sets [`name`](Config::name).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Config {
        self.name = name.into();
        self
    }
}

/// The PEM files of the server's TLS identity, and optionally the CA that client
/// certificates must be signed by (without it, clients are not asked for one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA certificates (PEM) client certificates must chain to; `None`: no client
    /// certificates.
    pub client_ca: Option<PathBuf>,
}

/// What one client may ask of the server. Each limit reached answers an error, never a
/// stall or unbounded memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest request, in bytes (etcd's `--max-request-bytes`, default 1.5 MiB). A larger
    /// request gets etcd's "etcdserver: request is too large"; the gRPC layer refuses messages
    /// 512 KiB above it without decoding them, as etcd does.
    pub max_request_bytes: usize,
    /// HTTP/2 streams (concurrent calls) one connection may have open. Default 1024.
    pub max_streams_per_connection: u32,
    /// Watches one Watch stream may hold. Default 1024; one more is created already
    /// cancelled, with the reason.
    pub max_watches_per_stream: usize,
    /// LeaseKeepAlive streams open at once, over all connections. Default 10 000; one more is
    /// refused with RESOURCE_EXHAUSTED.
    pub max_keepalive_streams: usize,
    /// Comparisons, and ops per branch, in one transaction (etcd's `--max-txn-ops`, default
    /// 128).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1536 * 1024,
            max_streams_per_connection: 1024,
            max_watches_per_stream: 1024,
            max_keepalive_streams: 10_000,
            max_txn_ops: 128,
        }
    }
}

impl Limits {
    /// Sets [`max_request_bytes`](Limits::max_request_bytes).
    #[must_use]
    pub fn max_request_bytes(mut self, bytes: usize) -> Limits {
        self.max_request_bytes = bytes;
        self
    }

    /// Sets [`max_streams_per_connection`](Limits::max_streams_per_connection).
    #[must_use]
    pub fn max_streams_per_connection(mut self, streams: u32) -> Limits {
        self.max_streams_per_connection = streams;
        self
    }

    /// Sets [`max_watches_per_stream`](Limits::max_watches_per_stream).
    #[must_use]
    pub fn max_watches_per_stream(mut self, watches: usize) -> Limits {
        self.max_watches_per_stream = watches;
        self
    }

    /// Sets [`max_keepalive_streams`](Limits::max_keepalive_streams).
    #[must_use]
    pub fn max_keepalive_streams(mut self, streams: usize) -> Limits {
        self.max_keepalive_streams = streams;
        self
    }

    /// Sets [`max_txn_ops`](Limits::max_txn_ops).
    #[must_use]
    pub fn max_txn_ops(mut self, ops: usize) -> Limits {
        self.max_txn_ops = ops;
        self
    }

    /// What the gRPC layer decodes at most: the request limit plus etcd's allowance for gRPC's
    /// own framing.
    pub(crate) fn max_message_bytes(&self) -> usize {
        self.max_request_bytes.saturating_add(512 * 1024)
    }
}
