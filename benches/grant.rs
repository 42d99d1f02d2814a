//! Benchmark of `Lessor::grant` under each durability mode, on 1 thread and on 8 threads at
//! once: what a grant costs when it must reach the disk, and how far group commit carries
//! concurrent grants.
//!
//! Run it with `cargo bench --bench grant` (a few minutes, most of it in the `immediate` cases,
//! which wait for the disk; add a filter such as `cargo bench --bench grant -- 8_threads` to
//! run part of it). `cargo bench --bench grant -- --test` (and `cargo test --benches`) run
//! every benchmark once, as a smoke test, in seconds.
//!
//! # What is measured
//!
//! Each benchmark grants leases with a TTL of a day (none expires while it runs) on a lessor
//! opened with the default settings (ticker on, `RestartPolicy::Reset`) except durability:
//!
//! - `in_memory`: `open_in_memory()` with the default durability, `Immediate`: the baseline, a
//!   redb commit with no disk under it. redb still takes its durable-commit path (the fsync is a
//!   no-op), and concurrent grants still wait for one another's "fsync" (group commit).
//! - `in_memory_batched_5ms`: `open_in_memory()` with `Durability::Batched { max_delay: 5 ms }`:
//!   no durable commit to make and none to wait for; the cheapest a grant gets.
//! - `immediate`: a file, `Durability::Immediate` (the default): a grant returns once fsynced;
//!   concurrent grants share fsyncs (group commit).
//! - `batched_5ms`: a file, `Durability::Batched { max_delay: 5 ms }`: a grant returns without
//!   waiting for the disk, which gets the grants of the last 5 ms in one fsync.
//!
//! Files live in a temporary directory (`tempfile`, so on the file system of `$TMPDIR`, by
//! default `/tmp`): put `TMPDIR` on the disk you mean to measure.
//!
//! Every sample (each call of criterion's timing routine) gets a fresh, empty database, opened
//! and closed (and deleted) outside the timed part: the database holds only the grants of the
//! sample being timed, from none to a few hundred thousand, whatever the run's length, and
//! every sample starts from the same state. (Keeping one database per benchmark would grow it
//! to millions of leases in the fast modes, each sample timed at another size; revoking between
//! samples would cost a transaction a lease.) A grant's cost grows only with the logarithm of
//! the lease count, small next to a commit.
//!
//! A sample ends with `Lessor::sync()`, timed, so that what it granted is on disk before the
//! clock stops: batched grants pay for their fsyncs, instead of leaving the last ones to the
//! ticker or to the untimed close. It returns at once in `immediate` mode.
//!
//! - `grant/1_thread/MODE`: one iteration is one `grant` on one thread; `time` is the time per
//!   grant, `thrpt` (`Throughput::Elements(1)`) grants per second.
//! - `grant/8_threads/MODE`: eight threads, started together by a barrier, share the
//!   iterations (each grants `iters / 8`); one iteration is still one grant, and its time is the
//!   wall time from the first thread's start to the end of the `sync()` after the last one
//!   finished, divided by the grants. So `time` is the amortised time per grant with eight
//!   callers, and `thrpt` total grants per second: the 8-thread speed-up is
//!   `thrpt(8_threads) / thrpt(1_thread)`. A single grant waits longer than `time`: about
//!   `8 * time`, its share of the queue.
//! - criterion prints `[low estimate high]`, a confidence interval around its estimate of the
//!   time per iteration; the median is `median.point_estimate` (in ns) in
//!   `target/criterion/grant_1_thread/MODE/new/estimates.json` (and `grant_8_threads/...`).
//!
//! Every grant is checked: a benchmark whose grants fail panics.

// A benchmark has no caller to return an error to: a failed setup or operation panics with the
// reason.
#![allow(clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use lessor::{Durability, Lessor};

/// TTL of every lease: far longer than the benchmark runs, so no lease expires.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// `max_delay` of the batched mode: etcd's batch interval is of this order.
const MAX_DELAY: Duration = Duration::from_millis(5);

/// Thread counts benchmarked.
const THREADS: [usize; 2] = [1, 8];

/// Where a benchmark's database lives, and how it commits.
#[derive(Clone, Copy, Debug)]
enum Mode {
    InMemory,
    InMemoryBatched,
    Immediate,
    Batched,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::InMemory,
        Mode::InMemoryBatched,
        Mode::Immediate,
        Mode::Batched,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::InMemory => "in_memory",
            Mode::InMemoryBatched => "in_memory_batched_5ms",
            Mode::Immediate => "immediate",
            Mode::Batched => "batched_5ms",
        }
    }

    fn durability(self) -> Durability {
        match self {
            Mode::InMemory | Mode::Immediate => Durability::Immediate,
            Mode::InMemoryBatched | Mode::Batched => Durability::Batched {
                max_delay: MAX_DELAY,
            },
        }
    }
}

/// A fresh lessor in `mode`, and the temporary directory of its file (deleted on drop, after
/// the lessor, which is declared first and so dropped first).
struct Db {
    lessor: Lessor,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn open(mode: Mode) -> Db {
        let builder = Lessor::builder().max_ttl(TTL).durability(mode.durability());
        match mode {
            Mode::InMemory | Mode::InMemoryBatched => Db {
                lessor: builder.open_in_memory().expect("open an in-memory lessor"),
                _dir: None,
            },
            Mode::Immediate | Mode::Batched => {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let lessor = builder
                    .open(dir.path().join("grant.redb"))
                    .expect("open a lessor on a file");
                Db {
                    lessor,
                    _dir: Some(dir),
                }
            }
        }
    }

    fn close(self) {
        self.lessor.close().expect("close the lessor");
    }
}

/// Grants `n` leases on this thread.
#[inline(never)]
fn grant_n(lessor: &Lessor, n: u64) {
    for _ in 0..n {
        black_box(lessor.grant(black_box(TTL)).expect("grant a lease"));
    }
}

/// Grants `iters` leases from `threads` threads started together, then syncs; returns the wall
/// time from the first thread's start to the end of the sync. Threads are spawned (untimed) at
/// each call.
fn grant_on(lessor: &Lessor, threads: usize, iters: u64) -> Duration {
    let started = if threads == 1 {
        let started = Instant::now();
        grant_n(lessor, iters);
        started
    } else {
        let barrier = Barrier::new(threads);
        let per_thread = iters / threads as u64;
        let extra = iters % threads as u64;
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let barrier = &barrier;
                    let n = per_thread + u64::from(t < extra);
                    s.spawn(move || {
                        barrier.wait();
                        let started = Instant::now();
                        grant_n(lessor, n);
                        started
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a granting thread panicked"))
                .min()
                .expect("at least one thread")
        })
    };
    lessor.sync().expect("sync the grants");
    started.elapsed()
}

fn grant(c: &mut Criterion) {
    for threads in THREADS {
        let group_name = if threads == 1 {
            "grant/1_thread".to_owned()
        } else {
            format!("grant/{threads}_threads")
        };
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Elements(1));
        for mode in Mode::ALL {
            group.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
                b.iter_custom(|iters| {
                    let db = Db::open(mode);
                    let elapsed = grant_on(&db.lessor, threads, iters);
                    db.close();
                    elapsed
                });
            });
        }
        group.finish();
    }
}

fn main() {
    let mut c = support::criterion();
    grant(&mut c);
    c.final_summary();
}
