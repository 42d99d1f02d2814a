//! The first seed program, in Rust: grant a 10 s lease, put `/cron/lock/job1 = 10001` under it,
//! print the put's revision, then look every 2 s until the key is gone.
//!
//! ```text
//! cargo run --release --example lease_expiry                    # lessor-data/lessor.redb, 10 s
//! cargo run --release --example lease_expiry -- --ttl 2         # watch it expire in 2 s
//! cargo run --release --example lease_expiry -- /tmp/my.redb    # another database file
//! ```
//!
//! Nothing renews the lease, so the background ticker revokes it when its TTL runs out, and the
//! key goes with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lessor::Lessor;

const KEY: &str = "/cron/lock/job1";
const POLL: Duration = Duration::from_secs(2);

struct Args {
    path: PathBuf,
    ttl: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut path = PathBuf::from("lessor-data").join("lessor.redb");
    let mut ttl = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ttl" => {
                let v = args.next().ok_or("--ttl needs a number of seconds")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--ttl {v}: not a number of seconds"))?;
                ttl = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--ttl {v}: not a valid duration"))?;
            }
            "-h" | "--help" => {
                return Err("usage: lease_expiry [DATABASE-FILE] [--ttl SECONDS]".into());
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => path = PathBuf::from(other),
        }
    }
    Ok(Args { path, ttl })
}

fn run(args: Args) -> lessor::Result<()> {
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| lessor::Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let lessor = Lessor::open(&args.path)?;
    println!("database: {}", args.path.display());

    let lease = lessor.grant(args.ttl)?;
    println!("granted lease {} with a TTL of {:?}", lease.id, lease.ttl);

    let revision = lessor.put_with_lease(KEY, "10001", lease.id)?;
    println!("put {KEY} = 10001, revision {revision}");

    let start = Instant::now();
    loop {
        match lessor.get(KEY)? {
            None => {
                println!(
                    "key expired ({:.1}s after the put)",
                    start.elapsed().as_secs_f64()
                );
                break;
            }
            Some(kv) => {
                let left = lessor
                    .time_to_live(lease.id)
                    .map(|info| format!("{:.1}s left", info.remaining.as_secs_f64()))
                    .unwrap_or_else(|_| "expiring".into());
                println!(
                    "not expired yet: {KEY} = {} (lease {}, {left})",
                    String::from_utf8_lossy(&kv.value),
                    lease.id,
                );
                std::thread::sleep(POLL);
            }
        }
    }
    lessor.close()
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
