//! `serve`: the database over etcd's v3 gRPC API (the `lessor-server` crate), until Ctrl-C or
//! SIGTERM, then closed cleanly.

use std::io::Write;

use std::time::Duration;

use lessor::Durability;
use lessor_server::{Config, Limits, Server, TlsConfig};

use crate::args::{Cli, DurabilityMode, ServeArgs};
use crate::db::{self, Access};
use crate::failure::{CliResult, ERROR, Failure};

/// How long streams still open at a stop signal may go on before they are closed.
const GRACE: Duration = Duration::from_secs(2);

/// Opens `--db` as a service would (the restart policy of `--restart-policy`, the durability of
/// `--durability`), serves it until a signal, and closes it.
pub fn serve(cli: &Cli, _out: &mut dyn Write, args: &ServeArgs) -> CliResult {
    let config = config(args);
    let durability = match args.durability {
        DurabilityMode::Immediate => Durability::Immediate,
        DurabilityMode::Batched => Durability::Batched {
            max_delay: args.max_delay,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lessor-serve")
        .build()
        .map_err(|e| Failure::new(ERROR, format!("cannot start the runtime: {e}")))?;
    let lessor = db::open_with(cli, Access::Create, |b| b.durability(durability))?;
    let served = runtime.block_on(async {
        // Signals first: a service that could not be stopped cleanly must not start.
        let stop = stop_signal()?;
        let server = Server::new(lessor.clone(), config).map_err(serve_failure)?;
        let bound = server.bind().await.map_err(serve_failure)?;
        eprintln!("listening on {}", bound.local_addr());
        // At the signal the server stops accepting and lets calls in flight finish; streams
        // (watches, keep-alives) end only when their clients close them, so they get GRACE,
        // then what is left is closed with the runtime.
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            stop.await;
            eprintln!("stopping");
            let _ = stopped_tx.send(());
        };
        let grace = async move {
            if stopped_rx.await.is_ok() {
                tokio::time::sleep(GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = bound.serve_with_shutdown(stop) => served.map_err(serve_failure)?,
            () = grace => eprintln!(
                "streams still open {} s after the signal: closing them",
                GRACE.as_secs()
            ),
        }
        Ok::<(), Failure>(())
    });
    // Streams still open end with the runtime; then the file is closed whatever happened.
    drop(runtime);
    let closed = db::close(cli, lessor);
    served.and(closed)
}

/// The server's settings from the command line: the library's defaults where no flag is given.
fn config(args: &ServeArgs) -> Config {
    let mut limits = Limits::default();
    if let Some(n) = args.max_request_bytes {
        limits.max_request_bytes = n;
    }
    if let Some(n) = args.max_streams_per_connection {
        limits.max_streams_per_connection = n;
    }
    if let Some(n) = args.max_watches_per_stream {
        limits.max_watches_per_stream = n;
    }
    if let Some(n) = args.max_keepalive_streams {
        limits.max_keepalive_streams = n;
    }
    if let Some(n) = args.max_txn_ops {
        limits.max_txn_ops = n;
    }
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
        }),
        // clap requires --cert and --key together.
        _ => None,
    };
    let config = Config::new(args.listen)
        .insecure(args.insecure)
        .limits(limits);
    match tls {
        Some(tls) => config.tls(tls),
        None => config,
    }
}

fn serve_failure(e: lessor_server::ServeError) -> Failure {
    Failure::new(ERROR, e.to_string())
}

/// A future that resolves at the first Ctrl-C (SIGINT) or SIGTERM. Registers the handlers now,
/// so that a signal arriving from here on stops the service cleanly.
#[cfg(unix)]
fn stop_signal() -> CliResult<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| Failure::new(ERROR, format!("cannot handle {name}: {e}")))
    };
    let mut interrupt = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = handler(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// A future that resolves at the first Ctrl-C.
#[cfg(not(unix))]
fn stop_signal() -> CliResult<impl Future<Output = ()>> {
    Ok(async {
        // Without a handler, Ctrl-C would kill the process: an error here waits forever.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
