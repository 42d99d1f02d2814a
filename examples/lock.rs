//! The seed's `/cron/lock/job1`, done right: a lock with a TTL that dies with its holder.
//!
//! ```text
//! cargo run --release --example lock                      # 3 workers, lessor-data/lock.redb
//! cargo run --release --example lock -- --workers 5 --ttl 1
//! ```
//!
//! Several workers (threads: one process owns an embedded database) contend for the lock:
//! - acquiring is one transaction: *if the key is absent, put it under my lease*; the revision
//!   that created the key is the **fencing token**, larger for every new holder, which the
//!   holder hands to whatever it writes so that a stale holder's writes can be refused;
//! - the holder keeps its lease alive with a keep-alive, and checks the keep-alive is still
//!   running before each step of its critical work;
//! - a loser watches the key from the revision of its failed attempt, so it cannot miss the
//!   release, and tries again when the key is deleted;
//! - releasing is revoking the lease: the key goes with it.
//!
//! Worker 0 "crashes" while holding the lock the first time: it stops renewing and never
//! releases. Its lease expires one TTL later, the key goes with it, and another worker takes
//! over. The program checks that no two workers ever hold the lock at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lessor::{Compare, DeleteCause, KeepAlive, Lessor, Op, Revision, TxnResponse, WatchEvent};

const KEY: &str = "/cron/lock/job1";

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

/// A held lock: the lease the key lives under, its keep-alive, and the fencing token.
struct Lock {
    lessor: Lessor,
    keep_alive: KeepAlive,
    token: Revision,
}

impl Lock {
    /// Blocks until the lock is ours.
    fn acquire(lessor: &Lessor, ttl: Duration, owner: &str) -> lessor::Result<Lock> {
        loop {
            let lease = lessor.grant(ttl)?;
            let keep_alive = lessor.keep_alive(lease.id)?;
            let attempt = lessor
                .txn()
                .when(Compare::absent(KEY))
                .then(Op::put_with_lease(KEY, owner, lease.id))
                .otherwise(Op::get(KEY))
                .commit()?;
            if attempt.succeeded {
                return Ok(Lock {
                    lessor: lessor.clone(),
                    keep_alive,
                    token: attempt.revision,
                });
            }
            // Lost: give the lease back, then wait for the key to go. Watching from the
            // revision after our attempt cannot miss a release that happens meanwhile.
            drop(keep_alive);
            lessor.revoke(lease.id)?;
            if let Some(TxnResponse::Get(Some(_))) = attempt.responses.first() {
                let watch = lessor.watch_from(KEY, attempt.revision.next())?;
                for event in watch.iter() {
                    if let WatchEvent::Delete { cause, .. } = event {
                        if let DeleteCause::LeaseExpired(_) = cause {
                            println!(
                                "  ({owner} saw the lock expire: its holder stopped renewing)"
                            );
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Whether the lock is still ours: the keep-alive is running, so the lease is alive.
    fn held(&self) -> bool {
        self.keep_alive.ended().is_none()
    }

    /// Releases the lock: revoking the lease deletes the key.
    fn release(self) -> lessor::Result<()> {
        self.lessor.revoke(self.keep_alive.id())?;
        Ok(())
    }

    /// Simulates a crash: renewals stop, nothing is released; the lease expires by itself.
    fn crash(self) {
        self.keep_alive.cancel();
    }
}

/// What the workers share: how many hold the lock right now (never more than one), and when
/// the crashed holder stopped.
#[derive(Default)]
struct Shared {
    holders: AtomicUsize,
    crashed_at: parking_lot::Mutex<Option<Instant>>,
}

type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Holds `lock` for a short critical section, checking before each step that it is still ours.
fn hold(lock: &Lock, me: &str, ttl: Duration, shared: &Shared) -> Outcome {
    if shared.holders.fetch_add(1, Ordering::SeqCst) != 0 {
        return Err(format!("{me} got the lock while someone else held it").into());
    }
    println!("{me} holds {KEY}, fencing token {}", lock.token);
    for _ in 0..3 {
        if !lock.held() {
            println!("{me} lost the lock");
            break;
        }
        std::thread::sleep(ttl / 4);
    }
    shared.holders.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

/// Takes the lock twice, releasing it each time.
fn worker(lessor: &Lessor, n: usize, ttl: Duration, shared: &Shared) -> Outcome {
    let me = format!("worker-{n}");
    for _ in 0..2 {
        let lock = Lock::acquire(lessor, ttl, &me)?;
        if let Some(at) = shared.crashed_at.lock().take() {
            println!(
                "  the lock was free {:.2} s after its holder crashed (TTL {:.2} s)",
                at.elapsed().as_secs_f64(),
                ttl.as_secs_f64()
            );
        }
        hold(&lock, &me, ttl, shared)?;
        println!("{me} releases the lock");
        lock.release()?;
    }
    Ok(())
}

fn run(args: Args) -> Outcome {
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let lessor = Lessor::open(&args.path)?;
    println!("database: {}", args.path.display());
    // A lock left over by an earlier run (its holder gone) would expire within a TTL anyway.
    lessor.delete(KEY)?;
    let shared = Arc::new(Shared::default());
    let first = Lock::acquire(&lessor, args.ttl, "worker-0")?;
    let workers: Vec<_> = (1..args.workers)
        .map(|n| {
            let (lessor, shared) = (lessor.clone(), Arc::clone(&shared));
            let ttl = args.ttl;
            std::thread::spawn(move || worker(&lessor, n, ttl, &shared))
        })
        .collect();
    hold(&first, "worker-0", args.ttl, &shared)?;
    println!("worker-0 crashes while holding the lock: it stops renewing and never releases");
    *shared.crashed_at.lock() = Some(Instant::now());
    first.crash();
    for w in workers {
        w.join().map_err(|_| "a worker panicked")??;
    }
    println!("the lock passed from holder to holder, never held by two at once");
    lessor.close()?;
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
