//! The server: checks the configuration, binds, and serves the services until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::Config;
use crate::engine::Engine;
use crate::kv::Kv;
use crate::lease::Lease;
use crate::maintenance::Maintenance;
use crate::proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::stopping::Stopping;
use crate::watch::WatchService;

/// Why the server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listen address is not loopback, and neither TLS nor `insecure` was configured.
    #[error(
        "refusing to listen on {0} without TLS: anyone who reaches it could read, write and revoke \
         everything; configure TLS, or set `insecure` if the network is trusted"
    )]
    Insecure(SocketAddr),
    /// A limit is zero (the message names it).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The address could not be bound (in use, no permission...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed (TLS set-up, or the listener).
    #[error("server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The lessor refused the start-up write (see [`Server::bind`]): closed, poisoned, or
    /// storage failed.
    #[error("the lessor: {0}")]
    Lessor(#[from] lessor::Error),
}

/// A server over a [`lessor::Lessor`], not yet listening: [`Server::bind`] binds its address,
/// [`Bound::serve`] serves it.
///
/// ```no_run
/// use lessor_server::{Config, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let lessor = lessor::Lessor::open("data.redb")?;
/// let server = Server::new(lessor, Config::new("127.0.0.1:0".parse()?))?;
/// let bound = server.bind().await?;
/// println!("serving etcd's API on {}", bound.local_addr());
/// bound.serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    lessor: lessor::Lessor,
    config: Config,
}

impl Server {
    /// A server for `lessor` with `config`.
    ///
    /// # Errors
    /// [`ServeError::Insecure`] for a listen address that is not loopback, unless TLS is
    /// configured or [`Config::insecure`] is set; [`ServeError::InvalidConfig`] for a limit of
    /// zero.
    pub fn new(lessor: lessor::Lessor, config: Config) -> Result<Server, ServeError> {
        if !config.listen.ip().is_loopback() && config.tls.is_none() && !config.insecure {
            return Err(ServeError::Insecure(config.listen));
        }
        let l = &config.limits;
        if l.max_request_bytes == 0 {
            return Err(ServeError::InvalidConfig(
                "max_request_bytes must be above 0",
            ));
        }
        if l.max_streams_per_connection == 0 {
            return Err(ServeError::InvalidConfig(
                "max_streams_per_connection must be above 0",
            ));
        }
        if l.max_txn_ops == 0 {
            return Err(ServeError::InvalidConfig("max_txn_ops must be above 0"));
        }
        if config.progress_notify_interval.is_zero() {
            return Err(ServeError::InvalidConfig(
                "progress_notify_interval must be above 0",
            ));
        }
        Ok(Server { lessor, config })
    }

    /// Binds the listen address (and reads the TLS files): clients can connect once this
    /// returns, and are answered once [`Bound::serve`] runs. A store never written (at revision
    /// 0) is first brought to revision 2 by a put and a delete of an internal key, so that
    /// clients' first write is above revision 1, as on etcd (clientv3's locks and elections rely
    /// on it; see [`Config::etcd_start_revision`]).
    ///
    /// # Errors
    /// [`ServeError::Bind`], [`ServeError::TlsFile`], [`ServeError::Lessor`].
    pub async fn bind(self) -> Result<Bound, ServeError> {
        if self.config.etcd_start_revision {
            crate::engine::past_revision_one(&self.lessor).await?;
        }
        let tls = match &self.config.tls {
            None => None,
            Some(t) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|source| ServeError::TlsFile {
                        path: path.clone(),
                        source,
                    })
                };
                let mut tls = ServerTlsConfig::new()
                    .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
                if let Some(ca) = &t.client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
                }
                Some(tls)
            }
        };
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Bound {
            server: self,
            listener,
            local,
            tls,
        })
    }
}

/// A server bound to its address: [`serve`](Bound::serve) it.
#[derive(Debug)]
pub struct Bound {
    server: Server,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<ServerTlsConfig>,
}

impl Bound {
    /// The address the server listens on (with the port chosen, if the configuration's was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until the listener fails. Dropping the future stops accepting connections and
    /// ends the open Watch and LeaseKeepAlive streams.
    ///
    /// # Errors
    /// [`ServeError::Transport`].
    pub async fn serve(self) -> Result<(), ServeError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting and lets calls in flight finish
    /// (streams end when their clients close them).
    ///
    /// # Errors
    /// [`ServeError::Transport`].
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let Bound {
            server,
            listener,
            local,
            tls,
        } = self;
        let config = &server.config;
        let limits = config.limits;
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let stopping = Stopping(stopping);
        let signal = async move {
            signal.await;
            // Streams end (UNAVAILABLE, as etcd's when it stops) so that connections close.
            let _ = stop.send(true);
        };
        let engine = Engine::new(server.lessor.clone());
        let max = limits.max_message_bytes();
        let maintenance =
            Maintenance::new(engine.clone(), config.name.clone(), local, tls.is_some());
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let router = builder
            .add_service(
                KvServer::new(Kv::new(engine.clone(), limits)).max_decoding_message_size(max),
            )
            .add_service(
                WatchServer::new(WatchService::new(engine.clone(), config, stopping.clone()))
                    .max_decoding_message_size(max),
            )
            .add_service(
                LeaseServer::new(Lease::new(engine.clone(), &limits, stopping))
                    .max_decoding_message_size(max),
            )
            .add_service(MaintenanceServer::new(maintenance.clone()).max_decoding_message_size(max))
            .add_service(ClusterServer::new(maintenance).max_decoding_message_size(max));
        tracing::info!(addr = %local, "serving etcd's v3 API");
        // Small frames go out at once: with Nagle's algorithm, a stream's response waits for
        // the client's delayed ACK of the one before (~40 ms per keep-alive answer).
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(conn) = &conn
                && let Err(e) = conn.set_nodelay(true)
            {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            conn
        });
        router
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }
}

/// Serves etcd's v3 API for `lessor` on `addr` (loopback, without TLS), until the future is
/// dropped: [`Server::new`] with [`Config::new(addr)`](Config::new), bound and served.
///
/// # Errors
/// As [`Server::new`], [`Server::bind`] and [`Bound::serve`].
pub async fn serve(lessor: lessor::Lessor, addr: SocketAddr) -> Result<(), ServeError> {
    Server::new(lessor, Config::new(addr))?
        .bind()
        .await?
        .serve()
        .await
}
