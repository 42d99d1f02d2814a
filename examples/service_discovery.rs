//! Service discovery on leases: instances register themselves under a lease they keep alive;
//! a watcher keeps the set of live instances from one read plus a watch.
//!
//! ```text
//! cargo run --release --example service_discovery            # lessor-data/services.redb
//! cargo run --release --example service_discovery -- --ttl 1 --instances 4
//! cargo run --release --features etcd --example service_discovery -- --etcd http://127.0.0.1:2379
//! ```
//!
//! The program is written against [`LeaseStore`], so it runs unchanged on the embedded
//! `Lessor` or, with `--etcd URL` (cargo feature `etcd`), on an etcd cluster: `open` below is
//! the only place that knows which. On etcd, TTLs are whole seconds of at least 2 s, and the
//! watcher cannot tell an expiry from a clean shutdown (etcd's delete events carry no cause).
//!
//! - Each instance grants a lease, puts `/services/api/<n> = <address>` under it, and keeps the
//!   lease alive.
//! - The watcher reads `/services/api/` once, with the revision of that read, then watches from
//!   the next revision: it misses no change and sees none twice, however the two interleave.
//! - Instance 1 shuts down cleanly (revokes its lease: it is gone at once). Instance 2 stops
//!   renewing as a crashed process would: it is gone one TTL later, and the watcher is told
//!   its lease expired.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lessor::{DeleteCause, LeaseStore, Lessor, WatchEvent};

const PREFIX: &str = "/services/api/";

struct Args {
    path: PathBuf,
    /// An etcd endpoint to use instead of the file.
    etcd: Option<String>,
    instances: usize,
    ttl: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        path: PathBuf::from("lessor-data").join("services.redb"),
        etcd: None,
        instances: 3,
        ttl: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--db" => a.path = PathBuf::from(value("--db")?),
            "--etcd" => a.etcd = Some(value("--etcd")?),
            "--instances" => {
                let v = value("--instances")?;
                a.instances = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 3)
                    .ok_or(format!("--instances {v}: give a number of at least 3"))?;
            }
            "--ttl" => {
                let v = value("--ttl")?;
                let secs: f64 = v.parse().map_err(|_| format!("--ttl {v}: not a number"))?;
                a.ttl = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--ttl {v}: not a valid duration"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: service_discovery [--db FILE | --etcd URL] [--instances N] [--ttl SECONDS]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Follows the live instances; prints the set at each change. Returns when a change leaves the
/// set empty, or when the lessor closes.
fn watcher(store: &dyn LeaseStore, start: Instant) -> lessor::Result<()> {
    let snapshot = store.range_with_revision(PREFIX.as_bytes())?;
    let mut live: BTreeMap<String, String> = snapshot
        .kvs
        .into_iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect();
    println!(
        "[{:5.2}s] watcher: {} live at revision {}",
        secs(start),
        live.len(),
        snapshot.revision
    );
    let watch = store.watch_from(PREFIX.as_bytes(), snapshot.revision.next())?;
    for event in watch.iter() {
        let why = match &event {
            WatchEvent::Put(kv) => {
                live.insert(text(&kv.key), text(&kv.value));
                "registered".to_string()
            }
            WatchEvent::Delete { key, cause, .. } => {
                live.remove(&text(key));
                match cause {
                    DeleteCause::LeaseExpired(_) => "lease expired".into(),
                    DeleteCause::LeaseRevoked(_) => "deregistered".into(),
                    DeleteCause::Unknown => "gone (etcd does not say why)".into(),
                    other => format!("{other:?}"),
                }
            }
            other => format!("{other:?}"),
        };
        let names: Vec<&str> = live.keys().map(|k| &k[PREFIX.len()..]).collect();
        println!(
            "[{:5.2}s] {} {why} -> live: {names:?}",
            secs(start),
            text(event.key()),
        );
        if live.is_empty() {
            break;
        }
    }
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The one place that knows the backend: a file of the embedded engine, or an etcd cluster.
fn open(args: &Args) -> lessor::Result<Arc<dyn LeaseStore>> {
    if let Some(url) = &args.etcd {
        #[cfg(feature = "etcd")]
        return Ok(Arc::new(lessor::EtcdLessor::connect(
            [url],
            lessor::EtcdOptions::new(),
        )?));
        #[cfg(not(feature = "etcd"))]
        return Err(lessor::Error::InvalidConfig(if url.is_empty() {
            "--etcd needs a URL"
        } else {
            "--etcd needs the example built with --features etcd"
        }));
    }
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| lessor::Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(Arc::new(Lessor::open(&args.path)?))
}

fn run(args: Args) -> lessor::Result<()> {
    let store = open(&args)?;
    // Leftovers of an earlier run (kept alive by nobody) would expire within a TTL anyway.
    for kv in store.range(PREFIX.as_bytes())? {
        store.delete(&kv.key)?;
    }
    let start = Instant::now();
    let watching = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || watcher(&*store, start))
    };

    let mut instances = Vec::new();
    for n in 1..=args.instances {
        let lease = store.grant(args.ttl)?;
        let key = format!("{PREFIX}{n}");
        let addr = format!("10.0.0.{n}:8080");
        store.put_with_lease(key.as_bytes(), addr.as_bytes(), lease.id)?;
        instances.push((n, store.keep_alive(lease.id)?));
        std::thread::sleep(args.ttl / 4);
    }
    std::thread::sleep(args.ttl);

    let mut instances = instances.into_iter();
    if let Some((n, keep_alive)) = instances.next() {
        println!("[{:5.2}s] instance {n} shuts down cleanly", secs(start));
        store.revoke(keep_alive.id())?;
    }
    if let Some((n, keep_alive)) = instances.next() {
        println!(
            "[{:5.2}s] instance {n} hangs: it stops renewing",
            secs(start)
        );
        keep_alive.cancel();
    }
    std::thread::sleep(args.ttl * 2);
    for (n, keep_alive) in instances {
        println!("[{:5.2}s] instance {n} shuts down cleanly", secs(start));
        store.revoke(keep_alive.id())?;
    }
    match watching.join() {
        Ok(result) => result?,
        Err(_) => eprintln!("the watcher panicked"),
    }
    store.close()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
