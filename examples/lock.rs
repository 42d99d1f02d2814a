//! The seed's `/cron/lock/job1`, done right: a fair, fenced lock that dies with its holder,
//! on `lessor::concurrency::Mutex`.
//!
//! ```text
//! cargo run --release --example lock                      # 3 workers, lessor-data/lock.redb
//! cargo run --release --example lock -- --workers 5 --ttl 1
//! ```
//!
//! Several workers (threads: one process owns an embedded database) contend for the lock:
//! - each has a `Session` (a lease kept alive in the background) and a `Mutex` on it; `lock()`
//!   queues the worker's key, `/cron/lock/job1/<lease id>`, and waits for the key just before
//!   its own to go: workers get the lock in the order they asked, and a release wakes one;
//! - the holder's **fencing token** (`Mutex::revision`) is larger for every new holder; its
//!   writes are guarded by `Mutex::is_owner`, so a holder that lost the lock is refused;
//! - `Session::done()` tells the holder at once if its session is lost.
//!
//! Worker 0 "crashes" while holding the lock: its session stops renewing and never releases.
//! Its lease expires one TTL later, its key goes with it, and the next worker in line takes
//! over. The program checks that no two workers ever hold the lock at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lessor::concurrency::{Mutex, Session};
use lessor::{Lessor, Op, Txn};

const LOCK: &str = "/cron/lock/job1";
const STATE: &str = "/cron/state/job1";

struct Args {
    path: PathBuf,
    workers: usize,
    ttl: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        path: PathBuf::from("lessor-data").join("lock.redb"),
        workers: 3,
        ttl: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--db" => a.path = PathBuf::from(value("--db")?),
            "--workers" => {
                let v = value("--workers")?;
                a.workers = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 2)
                    .ok_or(format!("--workers {v}: give a number of at least 2"))?;
            }
            "--ttl" => {
                let v = value("--ttl")?;
                let secs: f64 = v.parse().map_err(|_| format!("--ttl {v}: not a number"))?;
                a.ttl = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--ttl {v}: not a valid duration"))?;
            }
            "-h" | "--help" => {
                return Err("usage: lock [--db FILE] [--workers N] [--ttl SECONDS]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs a short critical section under `lock`: three fenced writes, each refused if the lock
/// has passed on meanwhile.
fn hold(
    store: &Lessor,
    lock: &Mutex<'_, Lessor>,
    me: &str,
    ttl: Duration,
    holders: &AtomicUsize,
) -> Outcome {
    if holders.fetch_add(1, Ordering::SeqCst) != 0 {
        return Err(format!("{me} got the lock while someone else held it").into());
    }
    let token = lock.revision().ok_or("lock() returned without the lock")?;
    println!("{me} holds {LOCK}, fencing token {token}");
    for step in 0..3 {
        let fence = lock.is_owner().ok_or("not held")?;
        let write = Txn::new()
            .when(fence)
            .then(Op::put(STATE, format!("{me} step {step} (token {token})")));
        if !store.txn(write)?.succeeded {
            println!("{me} lost the lock: its write was refused");
            break;
        }
        std::thread::sleep(ttl / 4);
    }
    holders.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

fn worker(
    store: &Lessor,
    n: usize,
    ttl: Duration,
    holders: &AtomicUsize,
    crashed: &parking_lot::Mutex<Option<Instant>>,
) -> Outcome {
    let me = format!("worker-{n}");
    let session = Session::new(store, ttl)?;
    let mut lock = Mutex::new(&session, LOCK)?;
    for _ in 0..2 {
        lock.lock()?;
        if let Some(at) = crashed.lock().take() {
            println!(
                "  the lock was free {:.2} s after its holder crashed (TTL {:.2} s)",
                at.elapsed().as_secs_f64(),
                ttl.as_secs_f64()
            );
        }
        hold(store, &lock, &me, ttl, holders)?;
        println!("{me} releases the lock");
        lock.unlock()?;
    }
    session.close()?;
    Ok(())
}

fn run(args: Args) -> Outcome {
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let store = Lessor::open(&args.path)?;
    println!("database: {}", args.path.display());
    let holders = AtomicUsize::new(0);
    let crashed = parking_lot::Mutex::new(None);
    std::thread::scope(|s| -> Outcome {
        // Worker 0 takes the lock first, then crashes holding it.
        let (locked, first_holds) = std::sync::mpsc::channel();
        let (store, holders, crashed) = (&store, &holders, &crashed);
        let crasher = s.spawn(move || -> Outcome {
            let session = Session::new(store, args.ttl)?;
            let mut lock = Mutex::new(&session, LOCK)?;
            lock.lock()?;
            let _ = locked.send(());
            hold(store, &lock, "worker-0", args.ttl, holders)?;
            println!("worker-0 crashes holding the lock: it stops renewing and never releases");
            *crashed.lock() = Some(Instant::now());
            drop(lock);
            session.orphan();
            Ok(())
        });
        first_holds
            .recv()
            .map_err(|_| "worker-0 could not take the lock")?;
        let workers: Vec<_> = (1..args.workers)
            .map(|n| s.spawn(move || worker(store, n, args.ttl, holders, crashed)))
            .collect();
        crasher.join().map_err(|_| "worker-0 panicked")??;
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    println!("the lock passed from holder to holder in queue order, never held by two at once");
    store.close()?;
    Ok(())
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
