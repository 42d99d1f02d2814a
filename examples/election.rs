//! Leader election with `lessor::concurrency::Election`: the leader hands over when its process
//! stops renewing.
//!
//! ```text
//! cargo run --release --example election                  # 3 candidates, lessor-data/election.redb
//! cargo run --release --example election -- --candidates 4 --ttl 1
//! ```
//!
//! Each candidate (a thread) has a session and campaigns with its address; they are elected in
//! the order they campaigned. An observer prints every leader in turn (`Election::observe`).
//! The leader proclaims a new value once, then "hangs": its session stops renewing (as when
//! its process dies or is paused). Its lease expires one TTL later, its key goes with it, and
//! the next candidate is elected. The last one resigns cleanly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lessor::Lessor;
use lessor::concurrency::{Election, Session};

const ELECTION: &str = "/services/scheduler/leader";

struct Args {
    path: PathBuf,
    candidates: usize,
    ttl: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        path: PathBuf::from("lessor-data").join("election.redb"),
        candidates: 3,
        ttl: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--db" => a.path = PathBuf::from(value("--db")?),
            "--candidates" => {
                let v = value("--candidates")?;
                a.candidates = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 2)
                    .ok_or(format!("--candidates {v}: give a number of at least 2"))?;
            }
            "--ttl" => {
                let v = value("--ttl")?;
                let secs: f64 = v.parse().map_err(|_| format!("--ttl {v}: not a number"))?;
                a.ttl = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--ttl {v}: not a valid duration"))?;
            }
            "-h" | "--help" => {
                return Err("usage: election [--db FILE] [--candidates N] [--ttl SECONDS]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One candidate: campaign, lead briefly, then hang (stop renewing) or, if last, resign.
fn candidate(store: &Lessor, n: usize, last: bool, ttl: Duration) -> Outcome {
    let session = Session::new(store, ttl)?;
    let mut election = Election::new(&session, ELECTION)?;
    let addr = format!("10.0.0.{n}:7000");
    election.campaign(&addr)?;
    println!(
        "candidate-{n} is the leader (token {:?})",
        election.revision()
    );
    election.proclaim(format!("{addr} (ready)"))?;
    std::thread::sleep(ttl / 2);
    if last {
        println!("candidate-{n} resigns");
        election.resign()?;
        session.close()?;
    } else {
        println!("candidate-{n} hangs: its session stops renewing, nothing is released");
        drop(election);
        session.orphan();
    }
    Ok(())
}

fn run(args: Args) -> Outcome {
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let store = Lessor::open(&args.path)?;
    println!("database: {}", args.path.display());
    let watcher = Session::new(&store, args.ttl)?;
    let mut leaders = Election::new(&watcher, ELECTION)?.observe()?;
    let started = Instant::now();
    std::thread::scope(|s| -> Outcome {
        let mut handles = Vec::new();
        for n in 1..=args.candidates {
            let store = &store;
            let last = n == args.candidates;
            handles.push(s.spawn(move || candidate(store, n, last, args.ttl)));
            std::thread::sleep(Duration::from_millis(20)); // campaign in order
        }
        // Each candidate is seen twice: elected, then with its proclaimed value.
        for _ in 0..2 * args.candidates {
            let kv = leaders.recv()?;
            println!(
                "  observed at {:5.2} s: leader {} = {}",
                started.elapsed().as_secs_f64(),
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value)
            );
        }
        for h in handles {
            h.join().map_err(|_| "a candidate panicked")??;
        }
        Ok(())
    })?;
    println!("leadership passed in campaign order; each hand-over took at most one TTL");
    watcher.close()?;
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
