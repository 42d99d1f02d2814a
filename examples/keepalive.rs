//! The second seed program, in Rust: grant a 10 s lease, put `/cron/lock/job1 = 10001` under it,
//! and keep the lease alive, printing every renewal from a consumer thread.
//!
//! ```text
//! cargo run --release --example keepalive                      # renew until Ctrl-C
//! cargo run --release --example keepalive -- --seconds 12      # ... or for 12 s, then stop
//! cargo run --release --example keepalive -- --cancel-after 5  # renew for 5 s, watch it expire
//! cargo run --release --example keepalive -- --db /tmp/ka.redb # another database file
//! ```
//!
//! The keep-alive renews the lease every third of its TTL (3.3 s). By default it runs until the
//! process is interrupted; with `--seconds N` the demo cancels it after N s and closes the
//! database (the lease is not revoked: it expires 10 s after its last renewal).
//!
//! With `--cancel-after N` the keep-alive stops renewing N s after it started
//! (`Lessor::keep_alive_until`, which renews a last time at that instant), and the program looks
//! every 2 s until the key is gone: it lives N s + the TTL in all, about 15 s.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lessor::{KeepAlive, Lessor};

const KEY: &str = "/cron/lock/job1";
const POLL: Duration = Duration::from_secs(2);

struct Args {
    path: PathBuf,
    ttl: Duration,
    /// Variant 1: stop the demo after this long (`None`: run until interrupted).
    seconds: Option<Duration>,
    /// Variant 2: stop renewing after this long, then watch the key expire.
    cancel_after: Option<Duration>,
}

fn seconds(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let v = value.ok_or(format!("{flag} needs a number of seconds"))?;
    let secs: f64 = v
        .parse()
        .map_err(|_| format!("{flag} {v}: not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag} {v}: not a valid duration"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        path: PathBuf::from("lessor-data").join("keepalive.redb"),
        ttl: Duration::from_secs(10),
        seconds: None,
        cancel_after: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--db" => args.path = PathBuf::from(argv.next().ok_or("--db needs a path")?),
            "--ttl" => args.ttl = seconds("--ttl", argv.next())?,
            "--seconds" => args.seconds = Some(seconds("--seconds", argv.next())?),
            "--cancel-after" => args.cancel_after = Some(seconds("--cancel-after", argv.next())?),
            "-h" | "--help" => {
                return Err("usage: keepalive [--db FILE] [--ttl SECONDS] \
                     [--seconds N | --cancel-after N]"
                    .into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.seconds.is_some() && args.cancel_after.is_some() {
        return Err("--seconds and --cancel-after are two different demos: pick one".into());
    }
    Ok(args)
}

/// Prints every renewal of `ka` from a thread of its own; the thread ends with the keep-alive.
fn print_responses(ka: &KeepAlive, start: Instant) -> std::thread::JoinHandle<()> {
    let responses = ka.responses().clone();
    std::thread::spawn(move || {
        for r in responses {
            println!(
                "[{:5.1}s] lease {} renewed: TTL {:?}",
                start.elapsed().as_secs_f64(),
                r.id,
                r.ttl
            );
        }
    })
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

    match args.cancel_after {
        None => {
            let ka = lessor.keep_alive(lease.id)?;
            let consumer = print_responses(&ka, start);
            match args.seconds {
                None => println!(
                    "keeping lease {} alive until interrupted (Ctrl-C)",
                    lease.id
                ),
                Some(limit) => {
                    println!("keeping lease {} alive for {limit:?}", lease.id);
                    std::thread::sleep(limit);
                    ka.cancel();
                }
            }
            // Ends when the keep-alive does: cancelled above, or the lease revoked elsewhere.
            let _ = consumer.join();
            if let Some(reason) = ka.ended() {
                println!("keep-alive ended: {reason}");
            }
        }
        Some(after) => {
            let ka = lessor.keep_alive_until(lease.id, start + after)?;
            println!("keeping lease {} alive for {after:?}", lease.id);
            let _ = print_responses(&ka, start).join(); // until the keep-alive finishes
            if let Some(reason) = ka.ended() {
                println!(
                    "[{:5.1}s] keep-alive ended: {reason}",
                    start.elapsed().as_secs_f64()
                );
            }
            watch_expiry(&lessor, lease.id, start)?;
        }
    }
    lessor.close()
}

/// Looks every 2 s (or just after the lease's deadline, if sooner) until the key is gone.
fn watch_expiry(lessor: &Lessor, lease: lessor::LeaseId, start: Instant) -> lessor::Result<()> {
    loop {
        if lessor.get(KEY)?.is_none() {
            let lived = start.elapsed().as_secs_f64();
            println!("[{lived:5.1}s] key gone: it lived {lived:.1}s after the put");
            return Ok(());
        }
        let left = lessor.time_to_live(lease).map(|info| info.remaining);
        match left {
            Ok(left) => println!(
                "[{:5.1}s] not expired yet: {KEY} is there, lease {lease} has {:.1}s left",
                start.elapsed().as_secs_f64(),
                left.as_secs_f64()
            ),
            Err(_) => println!(
                "[{:5.1}s] lease {lease} expired; the ticker is revoking it",
                start.elapsed().as_secs_f64()
            ),
        }
        let wait = left.map_or(Duration::from_millis(50), |left| {
            POLL.min(left + Duration::from_millis(50))
        });
        std::thread::sleep(wait);
    }
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
