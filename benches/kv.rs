//! Benchmarks of the key-value family: the writes that tie keys to leases or end them with their
//! lease (`put_with_lease`, `attach`, `revoke`) under each durability mode, the reads
//! (`get`, `time_to_live`) at 1,000, 100,000 and 1,000,000 leases, and a page of a large range
//! against the whole range (`range`).
//!
//! Run it with `cargo bench --bench kv` (a few minutes, most of it waiting for fsyncs in the
//! `immediate` cases; add a filter such as `cargo bench --bench kv -- revoke` to run part of
//! it). `cargo bench --bench kv -- --test` (and `cargo test --benches`) run every benchmark
//! once, as a smoke test, with at most 1,000 leases per lessor so that it takes seconds.
//!
//! # What is measured
//!
//! Every lessor is on a file in a temporary directory (`tempfile`: on the file system of
//! `$TMPDIR`, by default `/tmp`), opened with the default settings (ticker on,
//! `RestartPolicy::Reset`) except durability, and every lease has a TTL of a day, so none
//! expires. Every operation is checked: a benchmark whose operations fail panics. Each
//! benchmark has `Throughput::Elements(1)`: `time` is the time per operation and `thrpt`
//! operations per second. criterion prints `[low estimate high]`, a confidence interval around
//! its estimate of the time per operation; the median is `median.point_estimate` (in ns) in
//! `target/criterion/GROUP/ID/new/estimates.json`.
//!
//! ## Writes: `put_with_lease`, `attach`, `revoke`
//!
//! One fixture per durability mode, `MODE` being `batched_5ms`
//! (`Durability::Batched { max_delay: 5 ms }`: a call returns at its commit, one commit in
//! every 5 ms pays an fsync for the others) or `immediate` (`Durability::Immediate`: every call
//! returns once fsynced; one thread here, so no group commit). It holds 1,000 leases, each with
//! one key, `/bench/key/NNNNNNN`, and 1,000 keys attached to no lease, `/bench/free/NNNNNNN`. It
//! is built in batched mode, closed, and reopened in `MODE`. The benchmarks keep it at that
//! size: a write's cost is dominated by its commit, and grows only with the logarithm of the
//! table sizes.
//!
//! - `put_with_lease/MODE`: overwrites `/bench/key/j` (a 13-byte value), still attached to its
//!   lease `j`, for j = 0, 1, ... 999, 0, ... One iteration is one put: one commit.
//! - `attach/MODE`: attaches `/bench/free/j` to lease `j`. Before each attach, untimed, the key
//!   is put again with no lease (which detaches it), so every timed attach moves a key from no
//!   lease to one; each attach is timed alone.
//! - `revoke/MODE/1_key` and `revoke/MODE/10_keys`: revokes a lease holding 1 or 10 keys,
//!   deleting them. The sample's leases are granted and given their keys (one transaction a
//!   lease) and synced before the clock starts. Every lease revoked is one the setup added, so
//!   the fixture keeps its size.
//!
//! Every sample ends with `Lessor::sync()`, timed, so that its writes are on disk before the
//! clock stops (it returns at once in `immediate` mode): batched writes pay for their fsyncs
//! rather than leave the last ones to the ticker between samples. Under `attach`, the untimed
//! puts share those fsyncs with the timed attachments.
//!
//! ## Reads: `get`, `time_to_live`
//!
//! One fixture per size N, built in batched mode: N leases, lease `i` holding one key,
//! `/bench/key/NNNNNNN` (`i` in 7 digits). Each read picks its key or lease from a precomputed
//! pseudo-random sequence (splitmix64, fixed seed), so reads land all over the tables.
//!
//! - `get/N`: `get` of a random key (a redb read transaction and one B-tree lookup).
//! - `time_to_live/N`: `time_to_live` of a random lease (the lease table alone; its keys are
//!   read only by `time_to_live_with_keys`).
//!
//! ## A page of a range: `range`
//!
//! One fixture: 100,000 keys `/bench/range/NNNNNNN` and 100,000 keys `/bench/other/NNNNNNN`,
//! attached to no lease, each with a 100-byte value, built in batched mode and synced (so every
//! read is of the file). The ranges read:
//!
//! - `limit_10` and `count_only`: `[/bench/range/, /bench/range0)`, etcd's Range of that prefix
//!   (100,000 keys, half of the table), with `limit` 10, or `count_only`;
//! - `count_all`: every key (`[\0, ∞)`, etcd's `get "" --prefix --count-only`), 200,000 keys.
//!
//! Each in two ways:
//! - `RANGE/whole`: what lessor-server did for every Range, and still does for a sort by
//!   anything but the key or with revision bounds: read every key of the range whole
//!   (`range_between`), then keep the first 10 (or none) and count them all;
//! - `RANGE/page`: `range_page` with `limit(10)` (or `limit(0)`): the first 10 keys read whole
//!   (or none), the others counted without being read.
//!
//! A read takes milliseconds, so this group samples flat (each sample the same number of
//! reads), 20 samples.
//!
//! Building the 1,000,000-lease fixture took 5 s on a 2-core VM (printed as
//! `kv bench: built ...`). It happens in the first call of `get/1000000`, which criterion's
//! warm-up absorbs. With `--quick` there is no warm-up, and criterion stops a benchmark after
//! one iteration when its first call outlasts the measurement time (8 s here): on a slower
//! machine, give it more, `cargo bench --bench kv -- --quick --measurement-time 30`.

// A benchmark has no caller to return an error to: a failed setup or operation panics with the
// reason.
#![allow(clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use lessor::{Durability, LeaseId, Lessor, Op, RangeOptions, Txn};
use support::{BySize, SplitMix64};

/// TTL of every lease: far longer than the benchmark runs, so no lease expires.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// `max_delay` of the batched mode.
const MAX_DELAY: Duration = Duration::from_millis(5);

/// The value of every key: an address, as in a service registry.
const VALUE: &[u8] = b"10.0.0.7:8080";

/// Leases (each with one key) in the fixture of the write benchmarks.
const WRITE_LEASES: usize = 1_000;

/// Lease counts of the read benchmarks.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// Keys put in one transaction while building a fixture.
const PUTS_PER_TXN: usize = 1_000;

/// Length of each precomputed pick sequence (a power of two). Each timed call resumes where the
/// previous one stopped and wraps around. 2^16 random picks of a million keys touch nearly
/// every leaf page of the key table (a 4 KiB page holds tens of keys).
const SEQ_LEN: usize = 1 << 16;

/// Seed of the pick sequences.
const SEED: u64 = 0x0123_4567_89ab_cdef;

/// Length of `/bench/key/NNNNNNN`.
const KEY_LEN: usize = 18;

/// A key of the fixtures: `/bench/key/NNNNNNN`, fixed-size so that picks are one flat array.
type Key = [u8; KEY_LEN];

fn key(i: usize) -> Key {
    let s = format!("/bench/key/{i:07}");
    s.as_bytes().try_into().expect("keys have 7 digits")
}

fn free_key(i: usize) -> Vec<u8> {
    format!("/bench/free/{i:07}").into_bytes()
}

/// The durability of the write benchmarks.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Batched,
    Immediate,
}

impl Mode {
    const ALL: [Mode; 2] = [Mode::Batched, Mode::Immediate];

    fn name(self) -> &'static str {
        match self {
            Mode::Batched => "batched_5ms",
            Mode::Immediate => "immediate",
        }
    }

    fn durability(self) -> Durability {
        match self {
            Mode::Batched => Durability::Batched {
                max_delay: MAX_DELAY,
            },
            Mode::Immediate => Durability::Immediate,
        }
    }
}

/// A lessor on a file in a temporary directory (deleted on drop, after the lessor, which is
/// declared first and so dropped first).
struct Db {
    lessor: Lessor,
    dir: tempfile::TempDir,
}

/// The database file's name in its temporary directory.
const FILE: &str = "kv.redb";

fn open(dir: &tempfile::TempDir, mode: Mode) -> Lessor {
    Lessor::builder()
        .max_ttl(TTL)
        .durability(mode.durability())
        .open(dir.path().join(FILE))
        .expect("open a lessor on a file")
}

/// Builds, in batched mode, a database of `n` leases, lease `i` holding `/bench/key/i`, plus
/// `free` keys attached to no lease. Returns it open, and the lease ids in order.
fn build(n: usize, free: usize) -> (Db, Vec<LeaseId>) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let lessor = open(&dir, Mode::Batched);
    let ids: Vec<LeaseId> = (0..n)
        .map(|_| lessor.grant(TTL).expect("grant a lease").id)
        .collect();
    let granted = started.elapsed();
    for (chunk, chunk_ids) in ids.chunks(PUTS_PER_TXN).enumerate() {
        let mut txn = Txn::new();
        for (k, &id) in chunk_ids.iter().enumerate() {
            txn = txn.then(Op::put_with_lease(key(chunk * PUTS_PER_TXN + k), VALUE, id));
        }
        assert!(lessor.txn(txn).expect("put a chunk of keys").succeeded);
    }
    for i in 0..free {
        lessor
            .put(free_key(i), VALUE)
            .expect("put a key with no lease");
    }
    lessor.sync().expect("flush the fixture");
    eprintln!(
        "kv bench: built {n} leases with a key each in {:.1?} (grants {:.1?})",
        started.elapsed(),
        granted
    );
    (Db { lessor, dir }, ids)
}

/// The fixture of the write benchmarks in one mode, and where each benchmark's cycle through
/// its keys stands.
struct Writes {
    db: Db,
    ids: Vec<LeaseId>,
    keys: Vec<Key>,
    free: Vec<Vec<u8>>,
    next_put: usize,
    next_attach: usize,
}

impl Writes {
    fn new(mode: Mode) -> Writes {
        let (db, ids) = build(WRITE_LEASES, WRITE_LEASES);
        db.lessor.close().expect("close the fixture");
        let lessor = open(&db.dir, mode);
        Writes {
            db: Db {
                lessor,
                dir: db.dir,
            },
            ids,
            keys: (0..WRITE_LEASES).map(key).collect(),
            free: (0..WRITE_LEASES).map(free_key).collect(),
            next_put: 0,
            next_attach: 0,
        }
    }
}

/// The write fixtures, by mode, built on first use (so that a filtered run builds only what it
/// needs) and kept for every write benchmark.
struct WriteFixtures([Option<Writes>; 2]);

impl WriteFixtures {
    fn get(&mut self, mode: Mode) -> &mut Writes {
        self.0[mode as usize].get_or_insert_with(|| Writes::new(mode))
    }
}

/// Grants a lease and puts `keys` keys under it, in one transaction.
fn lease_with_keys(lessor: &Lessor, keys: usize) -> LeaseId {
    let id = lessor.grant(TTL).expect("grant a lease").id;
    let mut txn = Txn::new();
    for k in 0..keys {
        txn = txn.then(Op::put_with_lease(
            format!("/bench/revoke/{id}/{k}"),
            VALUE,
            id,
        ));
    }
    assert!(lessor.txn(txn).expect("put the lease's keys").succeeded);
    id
}

fn writes(c: &mut Criterion) {
    let mut fixtures = WriteFixtures([None, None]);

    let mut group = c.benchmark_group("put_with_lease");
    group.throughput(Throughput::Elements(1));
    for mode in Mode::ALL {
        group.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            let f = fixtures.get(mode);
            let lessor = &f.db.lessor;
            b.iter_custom(|iters| {
                let mut j = f.next_put;
                let started = Instant::now();
                for _ in 0..iters {
                    let rev = lessor.put_with_lease(f.keys[j], VALUE, f.ids[j]);
                    black_box(rev.expect("put a key"));
                    j = (j + 1) % WRITE_LEASES;
                }
                lessor.sync().expect("sync the puts");
                let elapsed = started.elapsed();
                f.next_put = j;
                elapsed
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("attach");
    group.throughput(Throughput::Elements(1));
    for mode in Mode::ALL {
        group.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            let f = fixtures.get(mode);
            let lessor = &f.db.lessor;
            b.iter_custom(|iters| {
                let mut j = f.next_attach;
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: the key, attached to no lease.
                    lessor.put(&f.free[j], VALUE).expect("detach the key");
                    let started = Instant::now();
                    lessor
                        .attach(f.ids[j], [&f.free[j]])
                        .expect("attach the key");
                    elapsed += started.elapsed();
                    j = (j + 1) % WRITE_LEASES;
                }
                let started = Instant::now();
                lessor.sync().expect("sync the attachments");
                elapsed += started.elapsed();
                f.next_attach = j;
                elapsed
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("revoke");
    group.throughput(Throughput::Elements(1));
    for mode in Mode::ALL {
        for (keys, name) in [(1, "1_key"), (10, "10_keys")] {
            group.bench_function(BenchmarkId::new(mode.name(), name), |b| {
                let lessor = &fixtures.get(mode).db.lessor;
                b.iter_custom(|iters| {
                    // Untimed: the leases to revoke, on disk.
                    let ids: Vec<LeaseId> =
                        (0..iters).map(|_| lease_with_keys(lessor, keys)).collect();
                    lessor.sync().expect("sync the setup");
                    let started = Instant::now();
                    for &id in &ids {
                        black_box(lessor.revoke(id).expect("revoke the lease"));
                    }
                    lessor.sync().expect("sync the revocations");
                    started.elapsed()
                });
            });
        }
    }
    group.finish();

    for (mode, f) in Mode::ALL.into_iter().zip(fixtures.0) {
        if let Some(f) = f {
            f.db.lessor
                .verify()
                .expect("the write fixture is consistent");
            f.db.lessor.close().expect("close the fixture");
            eprintln!("kv bench: closed the {} fixture", mode.name());
        }
    }
}

/// A fixture of `n` leases with a key each, and the random picks that read it.
struct Reads {
    db: Db,
    /// Lease ids, in a random order of picks.
    ids: Vec<LeaseId>,
    /// Keys, in a random order of picks.
    keys: Vec<Key>,
    next: usize,
}

impl Reads {
    fn new(n: usize) -> Reads {
        let (db, ids) = build(n, 0);
        let mut rng = SplitMix64(SEED);
        let picks: Vec<usize> = (0..SEQ_LEN).map(|_| rng.below(n)).collect();
        Reads {
            db,
            ids: picks.iter().map(|&i| ids[i]).collect(),
            keys: picks.iter().map(|&i| key(i)).collect(),
            next: 0,
        }
    }
}

fn reads(c: &mut Criterion) {
    let mut fixtures = BySize::new(); // the read fixtures, kept for both read benchmarks

    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let f = fixtures.get(n, Reads::new);
            b.iter_custom(|iters| {
                let mask = SEQ_LEN - 1;
                let mut pos = f.next;
                let started = Instant::now();
                for _ in 0..iters {
                    let kv = f.db.lessor.get(black_box(f.keys[pos])).expect("get a key");
                    assert!(black_box(kv).is_some(), "a key is missing");
                    pos = (pos + 1) & mask;
                }
                let elapsed = started.elapsed();
                f.next = pos;
                elapsed
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("time_to_live");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let f = fixtures.get(n, Reads::new);
            b.iter_custom(|iters| {
                let mask = SEQ_LEN - 1;
                let mut pos = f.next;
                let started = Instant::now();
                for _ in 0..iters {
                    let info =
                        f.db.lessor
                            .time_to_live(black_box(f.ids[pos]))
                            .expect("time_to_live of a live lease");
                    assert!(black_box(info).keys.is_empty(), "keys without asking");
                    pos = (pos + 1) & mask;
                }
                let elapsed = started.elapsed();
                f.next = pos;
                elapsed
            });
        });
    }
    group.finish();
}

/// Keys of the range fixture under each of its two prefixes (in test mode,
/// [`support::TEST_MODE_MAX_LEASES`]).
const RANGE_KEYS: usize = 100_000;

/// Length of each value of the range fixture.
const RANGE_VALUE_LEN: usize = 100;

/// A lessor holding `n` keys `/bench/range/NNNNNNN` and `n` keys `/bench/other/NNNNNNN`, of no
/// lease, with 100-byte values, synced.
fn build_range(n: usize) -> Db {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let lessor = open(&dir, Mode::Batched);
    let value = [b'v'; RANGE_VALUE_LEN];
    for prefix in ["/bench/range/", "/bench/other/"] {
        for chunk in (0..n).collect::<Vec<_>>().chunks(PUTS_PER_TXN) {
            let txn = chunk.iter().fold(Txn::new(), |txn, i| {
                txn.then(Op::put(format!("{prefix}{i:07}"), value))
            });
            assert!(lessor.txn(txn).expect("put a chunk of keys").succeeded);
        }
    }
    lessor.sync().expect("flush the fixture");
    eprintln!(
        "kv bench: built 2 x {n} keys of {RANGE_VALUE_LEN} bytes in {:.1?}",
        started.elapsed()
    );
    Db { lessor, dir }
}

fn ranges(c: &mut Criterion) {
    let n = if support::test_mode() {
        RANGE_KEYS.min(support::TEST_MODE_MAX_LEASES)
    } else {
        RANGE_KEYS
    };
    let mut fixture = None;
    let prefix: (&[u8], Option<&[u8]>) = (b"/bench/range/", Some(b"/bench/range0"));
    let everything: (&[u8], Option<&[u8]>) = (b"\0", None);
    let mut group = c.benchmark_group("range");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(20);
    for (name, (start, end), limit, keys) in [
        ("limit_10", prefix, 10, n),
        ("count_only", prefix, 0, n),
        ("count_all", everything, 0, 2 * n),
    ] {
        group.bench_function(BenchmarkId::new(name, "whole"), |b| {
            let lessor = &fixture.get_or_insert_with(|| build_range(n)).lessor;
            b.iter(|| {
                let mut kvs = lessor
                    .range_between(black_box(start), end)
                    .expect("read the range")
                    .kvs;
                let count = kvs.len();
                kvs.truncate(limit);
                assert_eq!(count, keys, "a key is missing");
                black_box((kvs, count))
            });
        });
        group.bench_function(BenchmarkId::new(name, "page"), |b| {
            let lessor = &fixture.get_or_insert_with(|| build_range(n)).lessor;
            let options = RangeOptions::new().limit(limit);
            b.iter(|| {
                let page = lessor
                    .range_page(black_box(start), end, options)
                    .expect("read a page of the range");
                assert_eq!((page.kvs.len(), page.count), (limit, keys as u64));
                black_box(page)
            });
        });
    }
    group.finish();
    if let Some(db) = fixture {
        db.lessor.close().expect("close the range fixture");
    }
}

fn main() {
    let mut c = support::criterion();
    writes(&mut c);
    reads(&mut c);
    ranges(&mut c);
    c.final_summary();
}
