//! The write path's figures, as the write-pipeline issue states its targets: one process,
//! a real file in a temporary folder, medians of several repetitions.
//!
//! ```sh
//! cargo bench --bench pipeline                    # every figure
//! cargo bench --bench pipeline -- put revoke      # the figures whose names contain a word
//! cargo bench --bench pipeline -- --quick         # smaller runs, for a quick look
//! ```
//!
//! Figures (one line each, `name value unit`):
//! - `put_with_lease_batched`: µs of wall time per `put_with_lease` on one thread, under
//!   `Batched { 5 ms }`, to fresh keys of one lease; `..._cpu` is the process's CPU time per call
//!   (the ticker's flushes included).
//! - `revoke_1key_batched`: µs per `revoke` of a lease with one key, `Batched { 5 ms }`.
//! - `cycle_not_durable`: grant + put_with_lease + revoke cycles per second on one thread,
//!   `Batched { 5 ms }`.
//! - `durable_grants_T`: grants per second from T threads under `Immediate`, and grants per
//!   fsync (`..._per_fsync`, from `Stats::fsyncs`).
//! - `durable_put_alone`: µs per `put` on one thread under `Immediate`, and `fsync_alone`: µs of
//!   one `fdatasync` of a file in the same folder, for the difference.
//! - `expiry_lateness_8_durable_writers_*`: how late 500 leases (TTLs 50–550 ms) are revoked
//!   while 8 threads grant under `Immediate` (the lessor's `Stats::expiry_lateness`).
//! - `time_to_live_N_keys`, `time_to_live_with_keys_N_keys`: µs a call on a lease with N keys
//!   (100,000 in a full run).
//! - `huge_revoke_N_{batched,immediate}`: the revocation of one lease with N keys (500,000 in a
//!   full run), how long it took, the worst wait of a writer putting other keys meanwhile, and
//!   how late 200 other leases falling due meanwhile expired (p99, max).
//!
//! Run with `--test` (as `cargo bench -- --test` does in CI), every figure runs once, tiny.

// A benchmark: a failure should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use lessor::{Durability, LeaseId, Lessor};

const BATCHED: Durability = Durability::Batched {
    max_delay: Duration::from_millis(5),
};

struct Run {
    /// Calls per repetition.
    n: usize,
    /// Repetitions (the median is reported).
    reps: usize,
    /// Seconds per throughput window.
    window: Duration,
}

/// `LESSOR_BENCH_REVOKE_CHUNK=N` sets `Builder::revoke_chunk_size` (`max`: every revocation in
/// one request, as before revocations in steps), for side-by-side runs of `huge_revoke`;
/// `LESSOR_BENCH_TWO_PHASE=1` runs every figure with `Builder::two_phase_commit(true)`.
fn open(dir: &tempfile::TempDir, durability: Durability) -> Lessor {
    let mut b = Lessor::builder()
        .durability(durability)
        .two_phase_commit(std::env::var_os("LESSOR_BENCH_TWO_PHASE").is_some_and(|v| v == "1"));
    if let Ok(chunk) = std::env::var("LESSOR_BENCH_REVOKE_CHUNK") {
        b = b.revoke_chunk_size(if chunk == "max" {
            usize::MAX
        } else {
            chunk.parse().unwrap()
        });
    }
    b.open(dir.path().join("bench.redb")).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of this process so far: the sum over its threads of the nanoseconds each has run
/// (`/proc/self/task/*/schedstat`, first field), which counts the ticker's flushes too. Threads
/// that have ended are not counted, so measure with the same lessor open.
fn cpu() -> Duration {
    let mut nanos = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            nanos += stat
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(nanos)
}

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.2} {unit}");
    let _ = std::io::stdout().flush();
}

fn put_with_lease_batched(run: &Run) {
    let mut wall = Vec::new();
    let mut cpus = Vec::new();
    for rep in 0..run.reps {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir, BATCHED);
        let lease = l.grant(Duration::from_secs(3600)).unwrap();
        let keys: Vec<String> = (0..run.n).map(|i| format!("/bench/{rep}/{i:08}")).collect();
        let (c0, t0) = (cpu(), Instant::now());
        for k in &keys {
            l.put_with_lease(k, "v", lease.id).unwrap();
        }
        let took = t0.elapsed();
        l.sync().unwrap();
        let c = cpu() - c0;
        wall.push(took.as_secs_f64() * 1e6 / run.n as f64);
        cpus.push(c.as_secs_f64() * 1e6 / run.n as f64);
        l.close().unwrap();
    }
    report("put_with_lease_batched", median(wall), "us/call");
    report("put_with_lease_batched_cpu", median(cpus), "us/call");
}

fn revoke_1key_batched(run: &Run) {
    let mut wall = Vec::new();
    for _ in 0..run.reps {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir, BATCHED);
        let ids: Vec<LeaseId> = (0..run.n)
            .map(|i| {
                let id = l.grant(Duration::from_secs(3600)).unwrap().id;
                l.put_with_lease(format!("/r/{i:08}"), "v", id).unwrap();
                id
            })
            .collect();
        l.sync().unwrap();
        let t0 = Instant::now();
        for id in ids {
            l.revoke(id).unwrap();
        }
        wall.push(t0.elapsed().as_secs_f64() * 1e6 / run.n as f64);
        l.close().unwrap();
    }
    report("revoke_1key_batched", median(wall), "us/call");
}

fn cycle_not_durable(run: &Run) {
    let mut rates = Vec::new();
    for _ in 0..run.reps {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir, BATCHED);
        let t0 = Instant::now();
        for i in 0..run.n {
            let id = l.grant(Duration::from_secs(3600)).unwrap().id;
            l.put_with_lease(format!("/c/{i:08}"), "v", id).unwrap();
            l.revoke(id).unwrap();
        }
        rates.push(run.n as f64 / t0.elapsed().as_secs_f64());
        l.close().unwrap();
    }
    report("cycle_not_durable", median(rates), "cycles/s");
}

fn durable_grants(run: &Run, threads: usize) {
    let mut rates = Vec::new();
    let mut per_fsync = Vec::new();
    for _ in 0..run.reps {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir, Durability::Immediate);
        let before = l.stats().unwrap();
        let stop = Instant::now() + run.window;
        let t0 = Instant::now();
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || {
                        let mut n = 0u64;
                        while Instant::now() < stop {
                            l.grant(Duration::from_secs(3600)).unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let took = t0.elapsed();
        let after = l.stats().unwrap();
        rates.push(granted as f64 / took.as_secs_f64());
        let fsyncs = after.fsyncs.saturating_sub(before.fsyncs).max(1);
        per_fsync.push(granted as f64 / fsyncs as f64);
        l.close().unwrap();
    }
    report(
        &format!("durable_grants_{threads}"),
        median(rates),
        "grants/s",
    );
    report(
        &format!("durable_grants_{threads}_per_fsync"),
        median(per_fsync),
        "grants/fsync",
    );
}

fn durable_put_alone(run: &Run) {
    let n = (run.n / 20).max(1);
    let mut calls = Vec::new();
    let mut fsyncs = Vec::new();
    for _ in 0..run.reps {
        let dir = tempfile::tempdir().unwrap();
        let l = open(&dir, Durability::Immediate);
        for i in 0..n {
            let t0 = Instant::now();
            l.put(format!("/p/{i:08}"), "v").unwrap();
            calls.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        l.close().unwrap();
        let mut f = std::fs::File::create(dir.path().join("fsync")).unwrap();
        for _ in 0..n {
            f.write_all(&[0u8; 4096]).unwrap();
            let t0 = Instant::now();
            f.sync_data().unwrap();
            fsyncs.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    report("durable_put_alone", median(calls), "us/call");
    report("fsync_alone", median(fsyncs), "us");
}

/// Other writers' worst wait while one lease with `keys` keys is revoked: a writer thread puts
/// 1,000 times a second and records its slowest call while the revoke runs, and 200 other leases (TTLs
/// spread over the first 2 s of the revoke) expire meanwhile: their lateness, from
/// `Stats::expiry_lateness`. The keys are written under `Batched`, then the file is reopened with
/// `durability` for the measurement.
fn huge_revoke(keys: usize, durability: Durability, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir, BATCHED);
    let big = l.grant(Duration::from_secs(3600)).unwrap().id;
    for i in 0..keys {
        l.put_with_lease(format!("/big/{i:08}"), "v", big).unwrap();
    }
    l.close().unwrap();
    let l = open(&dir, durability);
    for i in 0..200u64 {
        l.grant(Duration::from_millis(100 + 10 * i)).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (revoke_took, worst) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut worst = Duration::ZERO;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                l.put(format!("/other/{i}"), "v").unwrap();
                worst = worst.max(t0.elapsed());
                i += 1;
                // A writer of its own pace (1,000 puts/s), not one that saturates the disk by
                // itself: what it waits for is the revocation.
                std::thread::sleep(Duration::from_millis(1));
            }
            worst
        });
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        l.revoke(big).unwrap();
        let took = t0.elapsed();
        // Every other lease is due by now (or soon): let the ticker expire them.
        while !l.leases().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
            if t0.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (took, writer.join().unwrap())
    });
    let lateness = l.stats().unwrap().expiry_lateness;
    l.close().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    report(
        &format!("huge_revoke_{keys}_{label}_took"),
        ms(revoke_took),
        "ms",
    );
    report(
        &format!("huge_revoke_{keys}_{label}_other_writer_worst_wait"),
        ms(worst),
        "ms",
    );
    report(
        &format!("huge_revoke_{keys}_{label}_other_expiry_lateness_p99"),
        ms(lateness.p99),
        "ms",
    );
    report(
        &format!("huge_revoke_{keys}_{label}_other_expiry_lateness_max"),
        ms(lateness.max),
        "ms",
    );
}

/// `time_to_live` of a lease with `keys` keys, with and without its keys: µs a call (median of
/// `reps` rounds of 1,000 calls, or of 5 calls with the keys).
fn time_to_live_big(keys: usize, reps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir, BATCHED);
    let big = l.grant(Duration::from_secs(3600)).unwrap().id;
    for i in 0..keys {
        l.put_with_lease(format!("/big/{i:08}"), "v", big).unwrap();
    }
    l.sync().unwrap();
    let per_call = |calls: u32, f: &dyn Fn()| {
        let t0 = Instant::now();
        for _ in 0..calls {
            f();
        }
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
    };
    let without: Vec<f64> = (0..reps)
        .map(|_| {
            per_call(1000, &|| {
                assert!(l.time_to_live(big).unwrap().keys.is_empty());
            })
        })
        .collect();
    let with: Vec<f64> = (0..reps)
        .map(|_| {
            per_call(5, &|| {
                assert_eq!(l.time_to_live_with_keys(big).unwrap().keys.len(), keys);
            })
        })
        .collect();
    l.close().unwrap();
    report(&format!("time_to_live_{keys}_keys"), median(without), "us");
    report(
        &format!("time_to_live_with_keys_{keys}_keys"),
        median(with),
        "us",
    );
}

/// Expiry lateness (p50 / p99 / max, by the lessor's clock) of `n` leases with TTLs spread over
/// 50–550 ms, while 8 threads grant durably (`Immediate`) the whole time.
fn expiry_lateness_under_writers(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(&dir, Durability::Immediate);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lateness = std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    l.grant(Duration::from_secs(3600)).unwrap();
                }
            });
        }
        let ids: Vec<LeaseId> = (0..n)
            .map(|i| {
                let ttl = Duration::from_millis(50 + (i as u64 * 500) / n as u64);
                l.grant(ttl).unwrap().id
            })
            .collect();
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up && l.stats().unwrap().expiries < ids.len() as u64 {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        l.stats().unwrap().expiry_lateness
    });
    l.close().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    report(
        "expiry_lateness_8_durable_writers_p50",
        ms(lateness.p50),
        "ms",
    );
    report(
        "expiry_lateness_8_durable_writers_p99",
        ms(lateness.p99),
        "ms",
    );
    report(
        "expiry_lateness_8_durable_writers_max",
        ms(lateness.max),
        "ms",
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let test = args.iter().any(|a| a == "--test");
    let quick = args.iter().any(|a| a == "--quick");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let run = if test {
        Run {
            n: 20,
            reps: 1,
            window: Duration::from_millis(20),
        }
    } else if quick {
        Run {
            n: 5_000,
            reps: 3,
            window: Duration::from_millis(500),
        }
    } else {
        Run {
            n: 20_000,
            reps: 5,
            window: Duration::from_secs(1),
        }
    };
    if wanted("put_with_lease_batched") {
        put_with_lease_batched(&run);
    }
    if wanted("revoke_1key_batched") {
        revoke_1key_batched(&run);
    }
    if wanted("cycle_not_durable") {
        cycle_not_durable(&run);
    }
    for threads in [1, 8, 128] {
        if wanted(&format!("durable_grants_{threads}")) {
            durable_grants(&run, threads);
        }
    }
    if wanted("durable_put_alone") {
        durable_put_alone(&run);
    }
    if wanted("expiry_lateness") {
        expiry_lateness_under_writers(if test { 5 } else { 500 });
    }
    if wanted("time_to_live") {
        time_to_live_big(if test { 100 } else { 100_000 }, run.reps);
    }
    let keys = if test { 100 } else { run.n * 25 };
    if wanted("huge_revoke_batched") || wanted("huge_revoke") {
        huge_revoke(keys, BATCHED, "batched");
    }
    if wanted("huge_revoke_immediate") || wanted("huge_revoke") {
        huge_revoke(keys, Durability::Immediate, "immediate");
    }
}
