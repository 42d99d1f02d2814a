//! The service users write on tokio, over `AsyncLessor`: it registers itself under a lease it
//! keeps alive, takes a lock with a fencing token, keeps the live set of instances from one
//! read plus a watch, reacts to the loss of its lease, and shuts down cleanly on Ctrl-C.
//! Nothing in it blocks the runtime: every write is a future that waits for its fsync without
//! holding a worker thread (the fsync runs on the lessor's `lessor-flusher` thread).
//!
//! ```text
//! cargo run --release --example tokio_service                         # until Ctrl-C
//! cargo run --release --example tokio_service -- --run-for 5 --instances 3
//! cargo run --release --example tokio_service -- --db /tmp/service.redb
//! ```
//!
//! Each instance (a task here, so that one process shows several; a process each in production):
//! - grants a lease, puts `/services/api/<instance> = <address>` under it and keeps it alive;
//! - takes the lock `/locks/api` under the same lease; the lock key's create revision is its
//!   fencing token, and each step of its "work" is written only while the lock key still has it;
//! - when its keep-alive ends (`KeepAlive::lost()`), stops working, drops the lock, and
//!   registers again under a new lease.
//!
//! One task follows the live set. After 1.5 s an "operator" revokes the lease of the lock's
//! holder: watch the holder lose its lease and come back, and another instance take the lock.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lessor::{
    AsyncLessor, CmpOp, Compare, DeleteCause, EndReason, Error, LeaseId, Lessor, Op, Revision, Txn,
    WatchEnd, WatchEvent,
};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

const REGISTRY: &str = "/services/api/";
const LOCK: &str = "/locks/api";
const JOB: &str = "/jobs/api/progress";
const TTL: Duration = Duration::from_secs(2);
const WORK_EVERY: Duration = Duration::from_millis(500);
const OPERATOR_AFTER: Duration = Duration::from_millis(1500);

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Prints a line of the demo: seconds since the start, who, what.
macro_rules! say {
    ($who:expr, $($what:tt)*) => {
        println!("[{:5.2}s] {}: {}", START.elapsed().as_secs_f64(), $who, format_args!($($what)*))
    };
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One instance: registered while its lease lives, working while it holds the lock, and
/// registered again under a new lease whenever it loses the old one. Returns when `stopping`
/// turns `true`, having revoked its lease.
async fn instance(
    db: AsyncLessor,
    me: String,
    addr: String,
    mut stopping: watch::Receiver<bool>,
) -> lessor::Result<()> {
    let key = format!("{REGISTRY}{me}");
    loop {
        // Register: a lease, the address under it, and a keep-alive that renews the lease every
        // TTL/3 from the lessor's keep-alive thread (a renewal touches no disk and no lock).
        let lease = db.grant(TTL).await?;
        db.put_with_lease(&key, &addr, lease.id).await?;
        let keep_alive = db.keep_alive(lease.id)?;
        say!(&me, "registered {key} = {addr}, lease {}", lease.id);

        // Work while the lease lives. `lost()` resolves as soon as the keep-alive ends (lease
        // revoked or expired, lessor closed): nothing polls. When one branch is ready, select!
        // drops the others: lock_and_work stops at its next await, and a write it had started
        // is done or not done, never half (the cancellation rule of AsyncLessor's writes).
        let mut token = None;
        let lost = tokio::select! {
            reason = keep_alive.lost() => Some(reason),
            _ = stopping.wait_for(|stop| *stop) => None,
            Err(e) = lock_and_work(&db, &me, lease.id, &mut token) => return Err(e),
        };
        let Some(reason) = lost else {
            // Shutting down: stop renewing, then revoke. The registration and the lock (if held)
            // go in one transaction, so the next holder takes over now, not a TTL later.
            keep_alive.cancel();
            db.revoke(lease.id).await?;
            say!(&me, "deregistered: lease revoked");
            return Ok(());
        };
        say!(&me, "lost its lease ({reason}): stops working");
        if reason == EndReason::Closed {
            return Ok(());
        }
        if let Some(token) = token {
            // The lock key lived under the lease, so it goes with it; but an expired lease is
            // reported at its deadline, a moment before the ticker deletes its keys. Delete the
            // key now, only if it is still ours (same create revision): never a successor's.
            let release = Txn::new()
                .when(Compare::create_revision(LOCK, CmpOp::Equal, token))
                .then(Op::delete(LOCK));
            if db.txn(release).await?.succeeded {
                say!(&me, "dropped the lock (token {token})");
            } else {
                say!(&me, "its lock (token {token}) went with the lease");
            }
        }
    }
}

/// Takes the lock, works while it holds it, and takes it again if a fenced write finds it lost.
/// Runs until dropped by `instance`'s select!, so it returns only an error. `token` is the
/// fencing token while the lock is held.
async fn lock_and_work(
    db: &AsyncLessor,
    me: &str,
    lease: LeaseId,
    token: &mut Option<Revision>,
) -> lessor::Result<Infallible> {
    loop {
        let held = acquire(db, me, lease).await?;
        *token = Some(held);
        say!(me, "holds {LOCK}, fencing token {held}");
        work(db, me, held).await?;
        *token = None;
        say!(me, "a fenced write was refused: it lost the lock");
    }
}

/// Takes `LOCK` under `lease`, waiting without polling while another instance holds it. Returns
/// the fencing token.
///
/// Why not `lessor::concurrency::Mutex`: it is written for the blocking `LeaseStore`, so its
/// `lock()` parks a thread while it waits, each attempt fsyncs on the calling thread, and it
/// borrows a `Session` (it cannot move into a spawned task). It would have to run on
/// `spawn_blocking`, a pool thread per waiter. This is the same recipe in two calls that never
/// block: a put-if-absent transaction, and a watch of the key. It is not fair (every waiter
/// retries when the key goes, one wins), which suits a few instances of one service; `Mutex`
/// queues its waiters, for many contenders.
async fn acquire(db: &AsyncLessor, me: &str, lease: LeaseId) -> lessor::Result<Revision> {
    loop {
        // Put the key if nobody has it, under our lease: if this process dies, it goes with it.
        let attempt = Txn::new()
            .when(Compare::absent(LOCK))
            .then(Op::put_with_lease(LOCK, me, lease));
        let tried = db.txn(attempt).await?;
        if tried.succeeded {
            // The transaction's revision is the key's create revision: the fencing token,
            // larger for every new holder.
            return Ok(tried.revision);
        }
        // Held. Watch for its deletion from the revision after the one the attempt read: a
        // release in between is replayed from the watch history, not missed. It is a prefix
        // watch, so skip other keys that start with LOCK (such as `/locks/api2`).
        let mut watch = db.watch_from(LOCK, tried.revision.next())?;
        while let Some(event) = watch.next().await {
            if matches!(&event, WatchEvent::Delete { key, .. } if key == LOCK.as_bytes()) {
                break;
            }
        }
        // Deleted, or the watch ended (the lessor closing, or a watch so far behind that its
        // history was dropped): try again either way.
    }
}

/// The "work": a step every WORK_EVERY, each written only while the lock key still has the
/// create revision `token`. That comparison is the fence: a holder that lost the lock without
/// noticing (paused past its TTL) has its writes refused, even if someone else holds the lock
/// again. Give the token to any other system the work writes to, and have it refuse tokens
/// lower than the highest it has seen. Returns when a write is refused.
async fn work(db: &AsyncLessor, me: &str, token: Revision) -> lessor::Result<()> {
    let mut every = tokio::time::interval(WORK_EVERY);
    let mut step = 0u64;
    loop {
        every.tick().await;
        step += 1;
        let fenced = Txn::new()
            .when(Compare::create_revision(LOCK, CmpOp::Equal, token))
            .then(Op::put(JOB, format!("{me}: step {step}, token {token}")));
        if !db.txn(fenced).await?.succeeded {
            return Ok(());
        }
        say!(me, "step {step} done under token {token}");
    }
}

/// Keeps the live set of instances: ONE read, then a watch from the revision after it, each
/// event applied to the map. Nothing is missed and nothing is seen twice, however writes
/// interleave with the read. Returns when the lessor closes (the watch ends).
async fn follow_instances(db: AsyncLessor) -> lessor::Result<()> {
    let name = |key: &[u8]| text(key.strip_prefix(REGISTRY.as_bytes()).unwrap_or(key));
    loop {
        let snapshot = db.range_with_revision(REGISTRY).await?;
        let mut live: BTreeMap<String, String> = snapshot
            .kvs
            .iter()
            .map(|kv| (name(&kv.key), text(&kv.value)))
            .collect();
        let names: Vec<&String> = live.keys().collect();
        let at = snapshot.revision;
        say!("directory", "live at revision {at}: {names:?}");
        let mut watch = db.watch_from(REGISTRY, snapshot.revision.next())?;
        while let Some(event) = watch.next().await {
            let change = match event {
                WatchEvent::Put(kv) => {
                    live.insert(name(&kv.key), text(&kv.value));
                    format!("{} up at {}", name(&kv.key), text(&kv.value))
                }
                WatchEvent::Delete { key, cause, .. } => {
                    live.remove(&name(&key));
                    let why = match cause {
                        DeleteCause::LeaseRevoked(_) => "lease revoked",
                        DeleteCause::LeaseExpired(_) => "lease expired",
                        _ => "deleted",
                    };
                    format!("{} down ({why})", name(&key))
                }
                _ => continue, // a kind of event this program does not know
            };
            let names: Vec<&String> = live.keys().collect();
            say!("directory", "{change}; live: {names:?}");
        }
        match watch.ended() {
            Some(WatchEnd::Closed) | None => return Ok(()),
            Some(end) => say!("directory", "watch ended ({end:?}): reading again"),
        }
    }
}

/// Plays an operator who revokes the lease of the lock's holder, as a lease can end under any
/// holder (revoked, or expired after a pause longer than its TTL).
async fn operator(db: AsyncLessor, mut stopping: watch::Receiver<bool>) -> lessor::Result<()> {
    tokio::select! {
        () = tokio::time::sleep(OPERATOR_AFTER) => {}
        _ = stopping.wait_for(|stop| *stop) => return Ok(()),
    }
    if let Some(holder) = db.get(LOCK).await?
        && let Some(lease) = holder.lease
    {
        let who = text(&holder.value);
        say!(
            "operator",
            "revokes lease {lease} of {who}, the lock holder"
        );
        match db.revoke(lease).await {
            Ok(_) | Err(Error::LeaseNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn run(args: Args) -> Fallible<()> {
    // Opening reads the file and rebuilds memory from it: blocking work, so it goes to tokio's
    // blocking pool like any file I/O. Everything after it is async.
    let path = args.db.clone();
    let db = AsyncLessor::from(
        tokio::task::spawn_blocking(move || -> Fallible<Lessor> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Ok(Lessor::open(&path)?)
        })
        .await??,
    );
    say!("main", "database {}", args.db.display());

    // `true` once the process shuts down: every task selects on it.
    let (stop, stopping) = watch::channel(false);
    let directory = tokio::spawn(follow_instances(db.clone()));
    let operator = tokio::spawn(operator(db.clone(), stopping.clone()));
    let mut instances = JoinSet::new();
    for n in 1..=args.instances {
        let (me, addr) = (format!("node-{n}"), format!("127.0.0.1:{}", 8080 + n));
        instances.spawn(instance(db.clone(), me, addr, stopping.clone()));
    }

    let run_for = async {
        match args.run_for {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let mut outcome = Ok(());
    tokio::select! {
        signal = tokio::signal::ctrl_c() => match signal {
            Ok(()) => say!("main", "Ctrl-C: shutting down"),
            Err(e) => outcome = Err(e.into()), // no signal handler: shut down too
        },
        () = run_for => say!("main", "--run-for is over: shutting down"),
        // An instance ends early only on an error (or a closed lessor): stop the others too.
        Some(ended) = instances.join_next() => outcome = joined(ended),
    }

    // Stop every task that writes, and wait for each to revoke its lease.
    let _ = stop.send(true);
    while let Some(ended) = instances.join_next().await {
        outcome = outcome.and(joined(ended));
    }
    outcome = outcome.and(joined(operator.await));
    // Then close: the ticker, keep-alive and flusher threads are joined on a thread of the
    // lessor's own, not on this task. Every watch ends, so `directory` returns.
    db.close().await?;
    outcome.and(joined(directory.await))?;
    say!("main", "closed cleanly");
    Ok(())
}

/// The outcome of a task: its own error, or its panic.
fn joined(ended: Result<lessor::Result<()>, JoinError>) -> Fallible<()> {
    Ok(ended??)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Args {
    db: PathBuf,
    run_for: Option<Duration>,
    instances: usize,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: tokio_service [--db FILE] [--run-for SECONDS] [--instances N]";
    let mut a = Args {
        db: std::env::temp_dir().join("lessor-tokio-service.redb"),
        run_for: None,
        instances: 3,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(usage.into());
        }
        let v = argv
            .next()
            .ok_or(format!("{flag} needs a value\n{usage}"))?;
        let bad = || format!("{flag} {v}: not valid\n{usage}");
        match flag.as_str() {
            "--db" => a.db = PathBuf::from(&v),
            "--run-for" => {
                let secs = v
                    .parse()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok());
                a.run_for = Some(secs.ok_or_else(bad)?);
            }
            "--instances" => {
                let n = v.parse().ok().filter(|n| (1..=100).contains(n));
                a.instances = n.ok_or_else(bad)?;
            }
            _ => return Err(format!("unknown argument {flag}\n{usage}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    LazyLock::force(&START);
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
