//! Scenario benchmarks: end-to-end figures of a lessor running on the system clock, its real
//! ticker and a real file, printed as one table beside the targets they are held to.
//!
//! Run it with `cargo bench --bench scenarios` (about 9 minutes on 2 cores). Flags, after `--`:
//! - `--quick`: every lease count 10× smaller, and the expiry and keep-alive windows too (about
//!   a minute);
//! - `--runs N`: runs per figure (default 3); every figure printed is the median of its runs,
//!   with the smallest and largest beside it;
//! - `--only expiry,burst,recovery,memory,keepalive`: only these scenarios;
//! - `--dump DIR`: also write scenario 1's raw figures to `DIR/expiry-<durability>-<run>.csv`
//!   (per lease: deadline in ms from the window's start, lateness in ms), to plot or to look for
//!   a pattern in the tail;
//! - `--test` (what CI runs; also implied when `--bench` is missing, as under
//!   `cargo test --benches`): every scenario once at a tiny size, in seconds. The table is
//!   printed, but its figures say nothing about the targets.
//!
//! # The scenarios, and how each is measured
//!
//! 1. **Expiry lateness.** Leases expiring at 10,000 a second for 10 s: 100,000 leases granted
//!    up front, each with the TTL that puts its deadline at its place in a uniform spread over a
//!    window that starts once the setup is done. The figure is, per lease, the time its
//!    revocation reached a subscriber (`Lessor::subscribe`, `LeaseEvent::Revoked`, stamped with
//!    `Instant::now()` on receipt; the event is published right after the commit, so receipt is
//!    the commit plus one channel hop) minus its deadline; p50, p99 and max over the leases of a
//!    run. The deadline is read back with `time_to_live` after the grants (`Instant` before the
//!    call + `remaining`; the lessor reads its clock first thing in that call, so this is exact
//!    to a fraction of a microsecond). Deadlines taken as "grant returned + TTL" would be off by
//!    up to the grant call, which under `Durability::Immediate` includes waiting for a shared
//!    fsync. Run under `Durability::Batched { max_delay: 5 ms }` (every commit in memory, an
//!    fsync at least every 5 ms) and under `Durability::Immediate`, the default (every expiry
//!    batch fsynced). The subscriber's channel (`event_buffer`) holds every event of the run, so
//!    it never lags.
//! 2. **Expiry burst.** 100,000 leases with one 16-byte key each, every deadline at the same
//!    instant `T` (each TTL is `T` minus the time read just before its grant, so deadlines fall
//!    in `[T, T + one grant call]`). The figure is the time from `T` until the subscriber receives
//!    the last revocation; each revocation deletes its key in the same commit, and at the end
//!    `range` checks that no key is left. Both durabilities, as above.
//! 3. **Recovery.** A file holding 1,000,000 leases (TTL one day) and 1,000,000 keys (one
//!    16-byte key each), built once per process and reused by every run. The figure is the time
//!    `Lessor::open` takes to return, in a fresh child process (the file is in the OS page
//!    cache: these are warm opens), with the default settings (`check_integrity_on_open(true)`,
//!    which verifies the checksum of every page, so reads the whole file) and with
//!    `Builder::check_integrity_on_open(false)`. Each child also reports its resident memory
//!    growth across the open.
//! 4. **Memory.** Resident bytes per live lease: `VmRSS` from `/proc/self/status` before and
//!    after granting 1,000,000 leases and putting one 16-byte key (empty value) on each, divided
//!    by 1,000,000. Each measurement runs in a fresh child process, on `open_in_memory()` and on
//!    a file. In memory, redb keeps the whole database image in our heap, so that figure counts
//!    the database itself; the file figure is the fair one: the OS page cache is not our RSS.
//!    It still counts redb's own page cache (up to 1 GiB by default, in our heap), which keeps
//!    the pages written. The file size per lease is printed too.
//! 5. **Keep-alive load.** 100,000 leases (TTL 10 s) each kept alive by `Lessor::keep_alive`
//!    (a renewal every 3.33 s: 30,000 renewals a second). The figure is the CPU time of the
//!    `lessor-keepalive` thread (utime + stime of the task whose `comm` starts with
//!    `lessor-keepaliv` in `/proc/self/task/*/stat`, in ticks of `USER_HZ` = 100 Hz) over six
//!    renewal intervals (20 s, starting half an interval after the last registration; each
//!    lease is kept alive right after its grant, so the renewals spread over the setup), as a
//!    share of one core. The ticker thread's share is printed too: it still wakes at the leases'
//!    old deadlines (renewals do not touch the expiry queue) and requeues them. Under the
//!    default durability, `Immediate`.
//!
//! Setup is kept out of every timed figure. Grants under `Immediate` come from 16 threads, so
//! that they share fsyncs; keys are put 1,000 to a transaction (`Lessor::txn`); grants under
//! `Batched` come from one thread. The window of scenarios 1 and 2 starts after a setup budget:
//! 1.5× the setup's time as estimated from a short calibration on the same lessor, plus 1 s
//! (0.5 s with `--quick`, 0.1 s in test mode); a run whose setup overruns it panics rather than
//! report a wrong figure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: any failure must stop it loudly rather than print a wrong figure"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lessor::{Durability, KeepAlive, LeaseEvent, LeaseId, Lessor, Op, Txn};

/// The batched durability of the scenarios: etcd's trade-off (the `Durability` docs' example).
const BATCHED: Durability = Durability::Batched {
    max_delay: Duration::from_millis(5),
};

/// Threads granting at once under `Immediate`, so that their commits share fsyncs.
const GRANT_THREADS: usize = 16;

/// Keys put per transaction during setup.
const PUTS_PER_TXN: usize = 1_000;

/// TTL of leases that must not expire while a scenario runs.
const LONG_TTL: Duration = Duration::from_secs(24 * 3600);

/// Clock ticks per second in `/proc/*/stat` (`USER_HZ`): 100 on every Linux architecture that
/// matters here.
const USER_HZ: f64 = 100.0;

/// The scenario names accepted by `--only`, in the order they run.
const SCENARIOS: [&str; 5] = ["expiry", "burst", "recovery", "memory", "keepalive"];

/// How big a run is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scale {
    Full,
    Quick,
    Test,
}

/// Every size a scenario uses.
struct Sizes {
    /// Scenario 1: leases, and the window their deadlines spread over.
    expiry_leases: usize,
    expiry_window: Duration,
    /// Scenario 2: leases (one key each) expiring at one instant.
    burst_leases: usize,
    /// Scenario 3: leases (one key each) in the file reopened.
    recovery_leases: usize,
    /// Scenario 4: leases (one key each) whose memory is measured.
    memory_leases: usize,
    /// Scenario 5: keep-alives, their leases' TTL, and the renewal intervals measured.
    keepalives: usize,
    keepalive_ttl: Duration,
    keepalive_intervals: u32,
    /// Leases granted to estimate the cost of the setup before a timed window is placed.
    calibration_leases: usize,
    /// Time added to 1.5× the estimated setup before a timed window starts.
    setup_slack: Duration,
}

impl Sizes {
    fn new(scale: Scale) -> Sizes {
        match scale {
            Scale::Full => Sizes {
                expiry_leases: 100_000,
                expiry_window: Duration::from_secs(10),
                burst_leases: 100_000,
                recovery_leases: 1_000_000,
                memory_leases: 1_000_000,
                keepalives: 100_000,
                keepalive_ttl: Duration::from_secs(10),
                keepalive_intervals: 6,
                calibration_leases: 2_000,
                setup_slack: Duration::from_secs(1),
            },
            Scale::Quick => Sizes {
                expiry_leases: 10_000,
                expiry_window: Duration::from_secs(1),
                burst_leases: 10_000,
                recovery_leases: 100_000,
                memory_leases: 100_000,
                keepalives: 10_000,
                keepalive_ttl: Duration::from_secs(1),
                keepalive_intervals: 6,
                calibration_leases: 500,
                setup_slack: Duration::from_millis(500),
            },
            Scale::Test => Sizes {
                expiry_leases: 200,
                expiry_window: Duration::from_millis(200),
                burst_leases: 200,
                recovery_leases: 2_000,
                memory_leases: 2_000,
                keepalives: 100,
                keepalive_ttl: Duration::from_millis(300),
                keepalive_intervals: 3,
                calibration_leases: 50,
                setup_slack: Duration::from_millis(100),
            },
        }
    }
}

/// What the command line asked for.
struct Settings {
    scale: Scale,
    runs: usize,
    only: Vec<String>,
    dump: Option<PathBuf>,
}

impl Settings {
    fn from_args(args: &[String]) -> Settings {
        let mut test = false;
        let mut bench = false;
        let mut quick = false;
        let mut runs = None;
        let mut dump = None;
        let mut only: Vec<String> = SCENARIOS.iter().map(|s| (*s).to_owned()).collect();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--test" => test = true,
                "--bench" => bench = true,
                "--quick" => quick = true,
                "--runs" => {
                    let n = args.next().and_then(|n| n.parse::<usize>().ok());
                    runs = Some(n.filter(|&n| n > 0).expect("--runs takes a count above 0"));
                }
                "--only" => {
                    let list = args.next().expect("--only takes a list of scenarios");
                    only = list.split(',').map(str::to_owned).collect();
                    for name in &only {
                        assert!(
                            SCENARIOS.contains(&name.as_str()),
                            "unknown scenario {name:?}; known: {SCENARIOS:?}"
                        );
                    }
                }
                "--dump" => {
                    dump = Some(PathBuf::from(
                        args.next().expect("--dump takes a directory"),
                    ));
                }
                other => eprintln!("scenarios: ignoring argument {other:?}"),
            }
        }
        // criterion's rule: `--test` given, or `--bench` missing (as under `cargo test`).
        let scale = if test || !bench {
            Scale::Test
        } else if quick {
            Scale::Quick
        } else {
            Scale::Full
        };
        let runs = runs.unwrap_or(if scale == Scale::Test { 1 } else { 3 });
        Settings {
            scale,
            runs,
            only,
            dump,
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring: memory, CPU, percentiles.

/// This process's resident set size, in bytes (`VmRSS`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// CPU time (user + system) of this process's thread whose name starts with `name`, if any.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state ppid ...`: comm may hold spaces and parentheses, so split at the
        // last ')'. Fields 14 and 15 (utime, stime) are the 12th and 13th after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(name) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
        return Some(Duration::from_secs_f64(ticks as f64 / USER_HZ));
    }
    None
}

/// The nearest-rank `p`th percentile of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a - b` in milliseconds, negative if `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => ms(d),
        None => -ms(b - a),
    }
}

/// The 16-byte key of lease number `i` (`prefix` is 3 bytes).
fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:013}")
}

/// Prefix of the keys of the scenarios' leases.
const KEYS: &str = "/k/";

// ---------------------------------------------------------------------------------------------
// Setup helpers.

/// Grants `n` leases from `threads` threads, lease `i` with TTL `ttl(i, now)` where `now` is read
/// just before its grant; returns the ids in index order.
fn grant_many(
    lessor: &Lessor,
    n: usize,
    threads: usize,
    ttl: impl Fn(usize, Instant) -> Duration + Sync,
) -> Vec<LeaseId> {
    let ttl = &ttl;
    let parts: Vec<Vec<(usize, LeaseId)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let ttl = ttl(i, Instant::now());
                            (i, lessor.grant(ttl).expect("grant a lease").id)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut ids = vec![None; n];
    for (i, id) in parts.into_iter().flatten() {
        ids[i] = Some(id);
    }
    ids.into_iter().map(Option::unwrap).collect()
}

/// Puts key `first + j` (empty value) attached to `ids[j]`, `PUTS_PER_TXN` keys a transaction.
fn put_keys(lessor: &Lessor, prefix: &str, first: usize, ids: &[LeaseId]) {
    for (c, chunk) in ids.chunks(PUTS_PER_TXN).enumerate() {
        let mut txn = Txn::new();
        for (j, &id) in chunk.iter().enumerate() {
            txn = txn.then(Op::put_with_lease(
                key(prefix, first + c * PUTS_PER_TXN + j),
                b"",
                id,
            ));
        }
        assert!(lessor.txn(txn).expect("put keys").succeeded);
    }
}

/// Grants `n` leases of `LONG_TTL` with one key each, 1,000 at a time (no list of ids is
/// kept, so the bench itself adds nothing to the memory measured).
fn fill(lessor: &Lessor, n: usize) {
    let mut ids = Vec::with_capacity(PUTS_PER_TXN);
    let mut first = 0;
    while first < n {
        ids.clear();
        let count = PUTS_PER_TXN.min(n - first);
        ids.extend((0..count).map(|_| lessor.grant(LONG_TTL).expect("grant a lease").id));
        put_keys(lessor, KEYS, first, &ids);
        first += count;
    }
}

/// What one lease's setup costs, by step.
struct Costs {
    /// A grant, from as many threads as the setup uses.
    grant: Duration,
    /// Putting its key, in a transaction of `PUTS_PER_TXN`.
    put: Duration,
    /// Reading its deadline with `time_to_live`.
    read: Duration,
}

/// Measures [`Costs`] on `n` leases of `LONG_TTL` with keys outside the scenarios' prefix (they
/// stay, and expire long after the scenario).
fn calibrate(lessor: &Lessor, n: usize, threads: usize) -> Costs {
    let per = |d: Duration| d / u32::try_from(n).unwrap();
    let started = Instant::now();
    let ids = grant_many(lessor, n, threads, |_, _| LONG_TTL);
    let grant = per(started.elapsed());
    let started = Instant::now();
    put_keys(lessor, "/c/", 0, &ids);
    let put = per(started.elapsed());
    let started = Instant::now();
    for &id in &ids {
        lessor.time_to_live(id).expect("read a lease");
    }
    let read = per(started.elapsed());
    Costs { grant, put, read }
}

/// When a timed window may start: after 1.5× the setup's `estimate`, plus the slack.
fn setup_budget(sizes: &Sizes, estimate: Duration) -> Instant {
    Instant::now() + estimate * 3 / 2 + sizes.setup_slack
}

/// Receives lease events on a thread until `n` revocations have arrived (or `give_up` passes);
/// returns each revoked lease, when its event arrived, and how many keys went with it.
fn collect_revocations(
    rx: lessor::LeaseEvents,
    n: usize,
    give_up: Instant,
) -> std::thread::JoinHandle<Vec<(LeaseId, Instant, usize)>> {
    std::thread::Builder::new()
        .name("bench-subscriber".into())
        .spawn(move || {
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                let event = rx.recv_deadline(give_up);
                let at = Instant::now();
                match event {
                    Ok(LeaseEvent::Revoked { id, keys, .. }) => got.push((id, at, keys.len())),
                    Ok(LeaseEvent::Lagged(missed)) => {
                        panic!("the subscriber lagged: {missed} events lost")
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            got
        })
        .expect("spawn the subscriber")
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Immediate => "Immediate",
        _ => "Batched 5 ms",
    }
}

fn threads_for(d: Durability) -> usize {
    match d {
        Durability::Immediate => GRANT_THREADS,
        _ => 1,
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// Scenario 1, one run: lateness p50, p99 and max, in ms. With `dump`, writes every lease's
/// deadline (ms from the window's start) and lateness there, as CSV.
fn expiry_lateness(
    sizes: &Sizes,
    durability: Durability,
    dir: &Path,
    dump: Option<&Path>,
) -> [f64; 3] {
    let n = sizes.expiry_leases;
    let window = sizes.expiry_window;
    let path = dir.join("expiry.redb");
    let lessor = Lessor::builder()
        .durability(durability)
        .event_buffer(n + 1024)
        .open(&path)
        .expect("open the lessor");
    let threads = threads_for(durability);
    let costs = calibrate(&lessor, sizes.calibration_leases, threads);
    let start = setup_budget(
        sizes,
        (costs.grant + costs.read) * u32::try_from(n).unwrap(),
    );
    let step = window / u32::try_from(n).unwrap();
    let setup = Instant::now();
    // A deadline already passed (the setup overran) gets the minimum TTL; caught below.
    let ids = grant_many(&lessor, n, threads, |i, now| {
        (start + step * u32::try_from(i).unwrap()).saturating_duration_since(now)
    });
    let mut deadlines = HashMap::with_capacity(n);
    for &id in &ids {
        let before = Instant::now();
        let info = lessor.time_to_live(id).expect("read a lease's deadline");
        deadlines.insert(id, before + info.remaining);
    }
    let rx = lessor.subscribe().expect("subscribe");
    let ready = Instant::now();
    assert!(
        ready < start,
        "setup overran its budget by {:?}; the figures would be wrong",
        ready - start
    );
    eprintln!(
        "  setup {:.1?} (grant {:.1?} each), window starts {:.1?} later",
        ready - setup,
        costs.grant,
        start - ready
    );
    let events = collect_revocations(rx, n, start + window + Duration::from_secs(60))
        .join()
        .unwrap();
    assert_eq!(events.len(), n, "not every lease was revoked in time");
    let mut late: Vec<f64> = events
        .iter()
        .map(|(id, at, _)| signed_ms(*at, deadlines[id]))
        .collect();
    if let Some(dump) = dump {
        let mut csv = String::from("deadline_ms,lateness_ms\n");
        for ((id, _, _), l) in events.iter().zip(&late) {
            let _ = writeln!(csv, "{:.3},{l:.3}", signed_ms(deadlines[id], start));
        }
        std::fs::write(dump, csv).expect("write the dump");
    }
    late.sort_by(f64::total_cmp);
    lessor.close().expect("close");
    drop(lessor);
    std::fs::remove_file(&path).expect("remove the file");
    [
        percentile(&late, 50.0),
        percentile(&late, 99.0),
        late[late.len() - 1],
    ]
}

/// Scenario 2, one run: time from the common deadline to the last revocation, in s; and to the
/// first, in ms.
fn expiry_burst(sizes: &Sizes, durability: Durability, dir: &Path) -> [f64; 2] {
    let n = sizes.burst_leases;
    let path = dir.join("burst.redb");
    let lessor = Lessor::builder()
        .durability(durability)
        .event_buffer(n + 1024)
        .open(&path)
        .expect("open the lessor");
    let threads = threads_for(durability);
    let costs = calibrate(&lessor, sizes.calibration_leases, threads);
    let at = setup_budget(sizes, (costs.grant + costs.put) * u32::try_from(n).unwrap());
    let setup = Instant::now();
    let ids = grant_many(&lessor, n, threads, |_, now| {
        at.saturating_duration_since(now)
    });
    put_keys(&lessor, KEYS, 0, &ids);
    let rx = lessor.subscribe().expect("subscribe");
    let ready = Instant::now();
    assert!(
        ready < at,
        "setup overran its budget by {:?}; the figures would be wrong",
        ready - at
    );
    eprintln!(
        "  setup {:.1?} (grant {:.1?} each), burst due {:.1?} later",
        ready - setup,
        costs.grant,
        at - ready
    );
    let events = collect_revocations(rx, n, at + Duration::from_secs(120))
        .join()
        .unwrap();
    assert_eq!(events.len(), n, "not every lease was revoked in time");
    assert_eq!(
        events.iter().map(|e| e.2).sum::<usize>(),
        n,
        "every revocation deletes its one key"
    );
    let first = events.iter().map(|e| e.1).min().unwrap();
    let last = events.iter().map(|e| e.1).max().unwrap();
    let left = lessor.range(KEYS).expect("range").len();
    assert_eq!(left, 0, "keys left after the burst");
    lessor.close().expect("close");
    drop(lessor);
    std::fs::remove_file(&path).expect("remove the file");
    [signed_ms(last, at) / 1e3, signed_ms(first, at)]
}

/// Scenario 3's file: `n` leases and keys, built in batched mode; returns its size in bytes.
fn build_recovery_file(path: &Path, n: usize) -> u64 {
    let started = Instant::now();
    let lessor = Lessor::builder()
        .durability(BATCHED)
        .open(path)
        .expect("open the lessor");
    fill(&lessor, n);
    lessor.close().expect("close");
    let size = std::fs::metadata(path).expect("stat the file").len();
    eprintln!(
        "  built {n} leases + keys in {:.1?}: {:.1} MB, {} bytes a lease",
        started.elapsed(),
        size as f64 / 1e6,
        size / n as u64
    );
    size
}

/// Runs this binary as a child doing one measurement; returns its `key=value` report.
fn child(args: &[&str]) -> HashMap<String, f64> {
    let exe = std::env::current_exe().expect("find this binary");
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("run a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {args:?} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("child-report "))
        .expect("a child report");
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_owned(), v.parse().expect("a number"))
        })
        .collect()
}

/// The child side of [`child`]: `open PATH CHECK N` or `memory file|mem N DIR`.
fn child_main(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str).expect("child arguments");
    match arg(0) {
        "open" => {
            let path = Path::new(arg(1));
            let check = arg(2) == "1";
            let n: usize = arg(3).parse().unwrap();
            let rss = rss_bytes();
            let started = Instant::now();
            let lessor = if check {
                Lessor::open(path)
            } else {
                Lessor::builder().check_integrity_on_open(false).open(path)
            }
            .expect("open the lessor");
            let open = started.elapsed();
            let grown = rss_bytes().saturating_sub(rss);
            let leases = lessor.leases().unwrap().len();
            assert!(leases >= n, "{leases} leases after open, expected {n}");
            let started = Instant::now();
            lessor.close().expect("close");
            println!(
                "child-report open_s={} close_s={} rss_grown={grown}",
                open.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
        }
        "memory" => {
            let n: usize = arg(2).parse().unwrap();
            let builder = Lessor::builder().durability(BATCHED);
            let path = Path::new(arg(3)).join("memory.redb");
            let lessor = match arg(1) {
                "mem" => builder.open_in_memory(),
                _ => builder.open(&path),
            }
            .expect("open the lessor");
            let rss = rss_bytes();
            fill(&lessor, n);
            let grown = rss_bytes().saturating_sub(rss);
            let file = std::fs::metadata(&path).map_or(0, |m| m.len());
            lessor.close().expect("close");
            println!("child-report rss_grown={grown} file={file}");
        }
        other => panic!("unknown child {other:?}"),
    }
}

/// Scenario 5, one run: the keep-alive and ticker threads' CPU, as shares of one core (%).
fn keepalive_load(sizes: &Sizes, dir: &Path) -> [f64; 2] {
    let n = sizes.keepalives;
    let path = dir.join("keepalive.redb");
    let lessor = Lessor::open(&path).expect("open the lessor");
    let setup = Instant::now();
    let ttl = sizes.keepalive_ttl;
    // Each lease is kept alive as soon as it is granted: the whole setup may take longer than
    // a TTL.
    let lessor_ref = &lessor;
    let keepalives: Vec<KeepAlive> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..GRANT_THREADS)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(GRANT_THREADS)
                        .map(|_| {
                            let id = lessor_ref.grant(ttl).expect("grant a lease").id;
                            lessor_ref.keep_alive(id).expect("start a keep-alive")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let registered = Instant::now();
    let interval = ttl / 3;
    eprintln!(
        "  granted {n} leases and kept each alive in {:.1?}",
        registered - setup
    );
    // Half an interval after the last registration: the window holds whole renewal rounds.
    std::thread::sleep((registered + interval / 2).saturating_duration_since(Instant::now()));
    let window = interval * sizes.keepalive_intervals;
    let cpu = || {
        (
            thread_cpu("lessor-keepaliv").expect("the keep-alive thread"),
            thread_cpu("lessor-ticker").expect("the ticker thread"),
        )
    };
    let (ka0, tick0) = cpu();
    let started = Instant::now();
    std::thread::sleep(window);
    let (ka1, tick1) = cpu();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        keepalives.iter().all(|k| k.ended().is_none()),
        "a keep-alive ended"
    );
    assert!(
        lessor.leases().unwrap().len() >= n,
        "a kept-alive lease expired"
    );
    drop(keepalives);
    lessor.close().expect("close");
    drop(lessor);
    std::fs::remove_file(&path).expect("remove the file");
    [
        (ka1 - ka0).as_secs_f64() / elapsed * 100.0,
        (tick1 - tick0).as_secs_f64() / elapsed * 100.0,
    ]
}

// ---------------------------------------------------------------------------------------------
// The table.

#[derive(Clone, Copy)]
enum Unit {
    Ms,
    S,
    Bytes,
    Percent,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Ms => format!("{v:.2} ms"),
            Unit::S => format!("{v:.3} s"),
            Unit::Bytes => format!("{v:.0} B"),
            Unit::Percent => format!("{v:.1} %"),
        }
    }
}

/// One line of the table: a figure's value in every run, and its target (an upper bound).
struct Row {
    scenario: String,
    figure: String,
    unit: Unit,
    values: Vec<f64>,
    target: Option<f64>,
}

fn row(scenario: &str, figure: &str, unit: Unit, values: Vec<f64>, target: Option<f64>) -> Row {
    Row {
        scenario: scenario.to_owned(),
        figure: figure.to_owned(),
        unit,
        values,
        target,
    }
}

/// Prints the rows; `verdicts` compares each median with its target.
fn print_table(rows: &[Row], verdicts: bool) {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let med = median(&r.values);
            let lo = r.values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let spread = if r.values.len() > 1 {
                format!("{} .. {}", r.unit.show(lo), r.unit.show(hi))
            } else {
                "(1 run)".to_owned()
            };
            let (target, verdict) = match r.target {
                Some(t) if !verdicts => (format!("<= {}", r.unit.show(t)), "-".to_owned()),
                Some(t) if med <= t => (format!("<= {}", r.unit.show(t)), "ok".to_owned()),
                Some(t) => (
                    format!("<= {}", r.unit.show(t)),
                    format!("MISS x{:.1}", med / t),
                ),
                None => (String::new(), String::new()),
            };
            [
                r.scenario.clone(),
                r.figure.clone(),
                r.unit.show(med),
                spread,
                target,
                verdict,
            ]
        })
        .collect();
    let header = [
        "scenario",
        "figure",
        "median",
        "min .. max of runs",
        "target",
        "",
    ];
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(widths).enumerate() {
            if i == 2 || i == 4 {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        println!("{}", s.trim_end());
    };
    line(&header.map(str::to_owned));
    println!(
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * widths.len())
    );
    let mut last = String::new();
    for c in &cells {
        let mut c = c.clone();
        if c[0] == last {
            c[0].clear();
        } else {
            last.clone_from(&c[0]);
        }
        line(&c);
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let kernel: Vec<&str> = kernel.split_whitespace().take(3).collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "{cores} cores (available_parallelism), {cpu}, {}",
        kernel.join(" ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child_main(&args[1..]);
        return;
    }
    let settings = Settings::from_args(&args);
    let sizes = Sizes::new(settings.scale);
    let runs = settings.runs;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let mut rows = Vec::new();
    eprintln!(
        "scenarios: {:?} size, {runs} run(s) per figure",
        settings.scale
    );

    if settings.wants("expiry") {
        for d in [BATCHED, Durability::Immediate] {
            let mut figures = [Vec::new(), Vec::new(), Vec::new()];
            for run in 1..=runs {
                eprintln!("expiry lateness, {}, run {run}/{runs}", durability_name(d));
                let dump = settings.dump.as_ref().map(|dir| {
                    let mode = durability_name(d).split(' ').next().unwrap_or("");
                    dir.join(format!("expiry-{}-{run}.csv", mode.to_lowercase()))
                });
                let got = expiry_lateness(&sizes, d, dir.path(), dump.as_deref());
                for (v, f) in got.into_iter().zip(&mut figures) {
                    f.push(v);
                }
            }
            let name = format!(
                "1 expiry lateness ({} leases over {:?}), {}",
                sizes.expiry_leases,
                sizes.expiry_window,
                durability_name(d)
            );
            let [p50, p99, max] = figures;
            rows.push(row(&name, "p50", Unit::Ms, p50, None));
            rows.push(row(&name, "p99", Unit::Ms, p99, Some(5.0)));
            rows.push(row(&name, "max", Unit::Ms, max, Some(50.0)));
        }
    }

    if settings.wants("burst") {
        for d in [BATCHED, Durability::Immediate] {
            let (mut drain, mut first) = (Vec::new(), Vec::new());
            for run in 1..=runs {
                eprintln!("expiry burst, {}, run {run}/{runs}", durability_name(d));
                let [last, start] = expiry_burst(&sizes, d, dir.path());
                drain.push(last);
                first.push(start);
            }
            let name = format!(
                "2 expiry burst ({} leases + keys), {}",
                sizes.burst_leases,
                durability_name(d)
            );
            rows.push(row(&name, "all revoked", Unit::S, drain, Some(1.0)));
            rows.push(row(&name, "first revoked", Unit::Ms, first, None));
        }
    }

    if settings.wants("recovery") {
        let n = sizes.recovery_leases;
        eprintln!("recovery: building the file");
        let path = dir.path().join("recovery.redb");
        build_recovery_file(&path, n);
        let path_arg = path.to_str().expect("a UTF-8 temporary path");
        let n_arg = n.to_string();
        let mut open = [Vec::new(), Vec::new()];
        let mut grown = Vec::new();
        for run in 1..=runs {
            eprintln!("recovery, run {run}/{runs}");
            for (check, times) in ["1", "0"].into_iter().zip(&mut open) {
                let r = child(&["open", path_arg, check, &n_arg]);
                times.push(r["open_s"]);
                if check == "0" {
                    grown.push(r["rss_grown"] / n as f64);
                }
            }
        }
        std::fs::remove_file(&path).expect("remove the file");
        let name = format!("3 recovery ({n} leases + keys)");
        let [checked, unchecked] = open;
        rows.push(row(&name, "Lessor::open", Unit::S, checked, Some(2.0)));
        rows.push(row(&name, "integrity check off", Unit::S, unchecked, None));
        rows.push(row(
            &name,
            "RSS per lease after open",
            Unit::Bytes,
            grown,
            None,
        ));
    }

    if settings.wants("memory") {
        let n = sizes.memory_leases;
        let n_arg = n.to_string();
        let dir_arg = dir.path().to_str().expect("a UTF-8 temporary path");
        let (mut file, mut mem, mut disk) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=runs {
            eprintln!("memory, run {run}/{runs}");
            let r = child(&["memory", "file", &n_arg, dir_arg]);
            file.push(r["rss_grown"] / n as f64);
            disk.push(r["file"] / n as f64);
            std::fs::remove_file(dir.path().join("memory.redb")).expect("remove the file");
            let r = child(&["memory", "mem", &n_arg, dir_arg]);
            mem.push(r["rss_grown"] / n as f64);
        }
        let name = format!("4 memory ({n} leases, 16-byte keys)");
        rows.push(row(
            &name,
            "RSS per lease, file (fair)",
            Unit::Bytes,
            file,
            Some(128.0),
        ));
        rows.push(row(
            &name,
            "RSS per lease, in memory",
            Unit::Bytes,
            mem,
            None,
        ));
        rows.push(row(&name, "file bytes per lease", Unit::Bytes, disk, None));
    }

    if settings.wants("keepalive") {
        let (mut ka, mut ticker) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            eprintln!("keep-alive load, run {run}/{runs}");
            let [k, t] = keepalive_load(&sizes, dir.path());
            ka.push(k);
            ticker.push(t);
        }
        let window = sizes.keepalive_ttl / 3 * sizes.keepalive_intervals;
        let name = format!(
            "5 keep-alive load ({} keep-alives, TTL {:?}, over {:.1?})",
            sizes.keepalives, sizes.keepalive_ttl, window
        );
        rows.push(row(&name, "lessor-keepalive CPU", Unit::Percent, ka, None));
        rows.push(row(&name, "lessor-ticker CPU", Unit::Percent, ticker, None));
    }

    println!();
    println!(
        "lessor scenarios ({:?} size): each figure is the median of {runs} run(s); CPU is % of one core",
        settings.scale
    );
    println!("machine: {}", machine());
    println!();
    print_table(&rows, settings.scale != Scale::Test);
    println!();
    println!("total time: {:.1?}", started.elapsed());
    if settings.scale == Scale::Test {
        println!("(test mode: tiny sizes, the figures say nothing about the targets)");
    }
}
