//! Benchmark of `Lessor::renew`: renewing a random live lease among N = 1,000, 100,000 and
//! 1,000,000 leases, on 1 thread and on 2 threads at once.
//!
//! Run it with `cargo bench --bench renew` (a few minutes; add a filter such as
//! `cargo bench --bench renew -- 1_thread` to run part of it). `cargo bench --bench renew --
//! --test` (and `cargo test --benches`) run every benchmark once, as a smoke test, with at most
//! 1,000 leases per lessor so that it takes seconds.
//!
//! # How to read the numbers
//!
//! Every lessor is in memory (`open_in_memory`, no ticker) and holds N leases with a TTL of a
//! day, so none expires. Each renewal picks its lease from a precomputed pseudo-random sequence
//! of granted ids (splitmix64, fixed seeds); the timed loop only reads the next id and calls
//! `renew`. Every renewal is checked: a benchmark whose renewals fail panics.
//!
//! - `renew/1_thread/N`: one iteration is one `renew` on one thread. `time` is the time per
//!   renewal; `thrpt` (`Throughput::Elements(1)`) is renewals per second.
//! - `renew/2_threads/N`: two threads, started together by a barrier, each renew their own random
//!   sequence; one iteration is one `renew` on *each* thread, and its time is the wall time from
//!   the first thread's start to the last thread's end divided by the iterations. So `time` is
//!   the latency of one renewal while the other thread renews too (one renewal of each thread
//!   per `time`), and `thrpt` (`Throughput::Elements(2)`) is total renewals per second.
//! - Compare the two groups by `thrpt`: the 2-thread speed-up for a given N is
//!   `thrpt(2_threads) / thrpt(1_thread)`, which equals `2 * time(1_thread) / time(2_threads)`.
//!   Perfect scaling is 2.0; `time(2_threads) / 2` is the amortised cost of one renewal.
//! - criterion prints `[low estimate high]`: a confidence interval around its estimate of the
//!   time per iteration (the regression slope over the samples), not the median. The median is
//!   `median.point_estimate` (in ns) in `target/criterion/renew_1_thread/N/new/estimates.json`
//!   (and `renew_2_threads/...`).
//!
//! The machine's other load competes with the two threads, so on a 2-core machine the 2-thread
//! group is the noisier one.
//!
//! - `memory/random_rmw/N`: no lessor, a baseline: one atomic read-modify-write on a random
//!   cache line of a buffer the size of the lease table at N leases (64 bytes a lease). That is
//!   the part of a renewal no design can avoid; `renew/1_thread/N` minus it is what the lessor
//!   adds (clock, hashing, probing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use lessor::{Durability, LeaseId, Lessor};
use support::{BySize, SplitMix64, TEST_MODE_MAX_LEASES, test_mode};

/// Lease counts benchmarked.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// TTL of every lease: far longer than the benchmark runs, so no lease expires.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// Length of each precomputed id sequence (a power of two; 8 MiB of ids). Each timed call
/// resumes where the previous one stopped and wraps around, so a sample does not replay the
/// sequence from its start; 2^20 picks touch about 63% of a million leases per lap, far more
/// than fits in cache.
const SEQ_LEN: usize = 1 << 20;

/// The seeds of the three sequences: the 1-thread one, then one per thread of the 2-thread
/// group.
const SEEDS: [u64; 3] = [
    0x0123_4567_89ab_cdef,
    0xfedc_ba98_7654_3210,
    0x5eed_5eed_5eed_5eed,
];

/// A sequence of `SEQ_LEN` ids drawn uniformly from `ids`, and where the next run starts.
///
/// The ids themselves are stored (not indices into `ids`) so that the timed loop reads one
/// sequential array instead of adding a second random memory access per renewal.
struct Picks {
    seq: Vec<LeaseId>,
    next: usize,
}

impl Picks {
    fn new(ids: &[LeaseId], seed: u64) -> Picks {
        let mut rng = SplitMix64(seed);
        Picks {
            seq: (0..SEQ_LEN).map(|_| ids[rng.below(ids.len())]).collect(),
            next: 0,
        }
    }

    /// Renews `iters` leases of the sequence, starting where the last call stopped; returns how
    /// many renewals succeeded.
    #[inline(never)]
    fn renew(&mut self, lessor: &Lessor, iters: u64) -> u64 {
        let mask = SEQ_LEN - 1;
        let mut pos = self.next;
        let mut ok = 0u64;
        for _ in 0..iters {
            let id = self.seq[pos];
            pos = (pos + 1) & mask;
            ok += u64::from(black_box(lessor.renew(black_box(id))).is_ok());
        }
        self.next = pos;
        ok
    }
}

/// A lessor with `n` live leases and the id sequences that renew them.
struct Fixture {
    lessor: Lessor,
    picks: [Picks; 3],
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let started = Instant::now();
        // Batched: grants are queued, not committed one by one, so a million take seconds.
        let lessor = Lessor::builder()
            .ticker(false)
            .max_ttl(TTL)
            .durability(Durability::Batched {
                max_delay: Duration::from_millis(5),
            })
            .open_in_memory()
            .expect("open an in-memory lessor");
        let ids: Vec<LeaseId> = (0..n)
            .map(|_| lessor.grant(TTL).expect("grant a lease").id)
            .collect();
        let picks = SEEDS.map(|seed| Picks::new(&ids, seed));
        eprintln!(
            "renew bench: granted {n} leases in {:.1?}",
            started.elapsed()
        );
        Fixture { lessor, picks }
    }
}

fn renew(c: &mut Criterion) {
    let mut fixtures = BySize::new();

    let mut group = c.benchmark_group("renew/1_thread");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let f = fixtures.get(n, Fixture::new);
            b.iter_custom(|iters| {
                let started = Instant::now();
                let ok = f.picks[0].renew(&f.lessor, iters);
                let elapsed = started.elapsed();
                assert_eq!(ok, iters, "some renewals failed");
                elapsed
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("renew/2_threads");
    group.throughput(Throughput::Elements(2));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let f = fixtures.get(n, Fixture::new);
            let [_, a, b_picks] = &mut f.picks;
            let lessor = &f.lessor;
            b.iter_custom(|iters| {
                let barrier = Barrier::new(2);
                let run = |picks: &mut Picks| {
                    barrier.wait();
                    let started = Instant::now();
                    let ok = picks.renew(lessor, iters);
                    (started, Instant::now(), ok)
                };
                let (r1, r2) = std::thread::scope(|s| {
                    let t1 = s.spawn(|| run(a));
                    let t2 = s.spawn(|| run(b_picks));
                    (t1.join().unwrap(), t2.join().unwrap())
                });
                assert_eq!((r1.2, r2.2), (iters, iters), "some renewals failed");
                r1.1.max(r2.1) - r1.0.min(r2.0)
            });
        });
    }
    group.finish();
}

/// `lines` cache lines, and a random sequence of them to update.
struct Lines {
    words: Vec<AtomicU64>,
    seq: Vec<u32>,
    next: usize,
}

impl Lines {
    fn new(lines: usize) -> Lines {
        let mut rng = SplitMix64(SEEDS[0]);
        Lines {
            words: (0..lines * 8).map(|_| AtomicU64::new(0)).collect(),
            seq: (0..SEQ_LEN).map(|_| rng.below(lines) as u32).collect(),
            next: 0,
        }
    }

    /// One atomic read-modify-write on each of the next `iters` lines of the sequence.
    #[inline(never)]
    fn update(&mut self, iters: u64) {
        let mask = SEQ_LEN - 1;
        let mut pos = self.next;
        for _ in 0..iters {
            let line = self.seq[pos] as usize;
            pos = (pos + 1) & mask;
            black_box(self.words[line * 8].fetch_add(1, Ordering::AcqRel));
        }
        self.next = pos;
    }
}

/// What renew cannot avoid: an atomic read-modify-write (its compare-and-swap) on a cache line
/// at a random place in a table of N leases. This group times exactly that, with no lessor, on a
/// buffer of the table's size at each N (32-byte entries at the table's ~60% fill: about 64 bytes
/// a lease), in the same run as the renew groups, so that `renew/1_thread/N` can be read against
/// the memory system of the machine it ran on.
fn memory_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/random_rmw");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let lines = if test_mode() {
            n.min(TEST_MODE_MAX_LEASES)
        } else {
            n
        };
        let mut buffer = Lines::new(lines);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                buffer.update(iters);
                started.elapsed()
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = support::criterion();
    renew(&mut c);
    memory_baseline(&mut c);
    c.final_summary();
}
