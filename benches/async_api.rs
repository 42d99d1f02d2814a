//! The async front end's figures (issue 14), each beside the blocking API's in the same run:
//!
//! 1. **Probe lateness.** On a current-thread tokio runtime, a probe task sleeps to 1 ms
//!    deadlines (`tokio::time::sleep_until`, each deadline 1 ms after the previous one's
//!    wake-up) and records how late each wake-up is (`Instant::now()` minus the deadline), while
//!    8 tasks on the same thread write durably (`Durability::Immediate`, a file: a put per
//!    iteration, each awaited), for a fixed window. Three runs side by side: *idle* (the probe
//!    alone: what tokio's timer itself costs, as it rounds deadlines up to its 1 ms ticks, so
//!    an idle probe is ~1 ms late at the median on any machine),
//!    *blocking* (the 8 tasks call `Lessor::put`, which blocks the thread for the fsync: what
//!    the README used to invite), *async* (`AsyncLessor::put`). Printed: p50, p99, max of the
//!    lateness, and writes per second. Also how long the thread was held between two polls of
//!    a second probe that only `yield_now`s in a loop (p99 and max): the time other tasks (and
//!    the OS, on a loaded machine) kept the probe waiting, without the timer's rounding.
//! 2. **Call overhead.** One caller, sequential calls, medians of paired runs:
//!    - durable `put` (`Immediate`, a file): `Lessor::put` on a thread vs
//!      `AsyncLessor::put().await` on a current-thread runtime;
//!    - 8 concurrent durable writers: 8 threads of `Lessor::put` vs 8 tasks on one
//!      current-thread runtime; throughput;
//!    - `get` of a present key (in memory): `Lessor::get` vs `AsyncLessor::get().await`.
//! 3. **Scale.** 100,000 concurrent keep-alives (TTL 10 s) and 10,000 open watches on one
//!    `AsyncLessor`: resident memory (`VmRSS`) per keep-alive and per watch, and the time until
//!    all 10,000 watches, each its own task on a multi-thread runtime, have received one put.
//!
//! Run: `cargo bench --bench async_api` (about 2 minutes). `-- --quick` shortens every window
//! and count 10×; `-- --only probe,overhead,scale` runs only those sections. `--test` (CI, also implied without `--bench`) runs each once at a tiny size.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: any failure must stop it loudly rather than print a wrong figure"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lessor::{AsyncLessor, Durability, Lessor};

#[derive(Clone, Copy)]
struct Sizes {
    window: Duration,
    calls: usize,
    keepalives: usize,
    watches: usize,
    pairs: usize,
}

fn sizes() -> Sizes {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let test = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    if test {
        Sizes {
            window: Duration::from_millis(200),
            calls: 50,
            keepalives: 200,
            watches: 50,
            pairs: 1,
        }
    } else if quick {
        Sizes {
            window: Duration::from_secs(1),
            calls: 300,
            keepalives: 10_000,
            watches: 1_000,
            pairs: 3,
        }
    } else {
        Sizes {
            window: Duration::from_secs(4),
            calls: 2_000,
            keepalives: 100_000,
            watches: 10_000,
            pairs: 5,
        }
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn durable(path: &Path) -> Lessor {
    Lessor::builder().ticker(false).open(path).unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[derive(Clone, Copy, PartialEq)]
enum Writers {
    None,
    Blocking,
    Async,
}

struct Probe {
    lateness_ms: Vec<f64>,
    /// Every interval between two polls of the yield probe, sorted.
    gaps_ms: Vec<f64>,
    writes_per_sec: f64,
}

/// Scenario 1: see the module docs.
fn probe(writers: Writers, window: Duration, dir: &Path) -> Probe {
    let path = dir.join(format!("probe-{}.redb", writers as u8));
    let _ = std::fs::remove_file(&path);
    let lessor = durable(&path);
    let rt = current_thread();
    let out = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        if writers != Writers::None {
            for i in 0..8 {
                let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
                let blocking = lessor.clone();
                let a = AsyncLessor::from(lessor.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("/probe/{i}/{}", n % 64);
                        match writers {
                            Writers::Blocking => {
                                blocking.put(key, "v").unwrap();
                                // A blocking call never yields: let the others run.
                                tokio::task::yield_now().await;
                            }
                            _ => {
                                a.put(key, "v").await.unwrap();
                            }
                        }
                        n += 1;
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
        }
        // The yield probe: the longest the thread went without coming back to it.
        let gap_stop = Arc::clone(&stop);
        let gaps = tokio::spawn(async move {
            let mut last = Instant::now();
            let mut gaps = Vec::new();
            while !gap_stop.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
                let now = Instant::now();
                gaps.push((now - last).as_secs_f64() * 1e3);
                last = now;
            }
            gaps.sort_by(f64::total_cmp);
            gaps
        });
        let started = Instant::now();
        let mut lateness = Vec::new();
        let mut deadline = Instant::now() + Duration::from_millis(1);
        while started.elapsed() < window {
            tokio::time::sleep_until(deadline.into()).await;
            let woke = Instant::now();
            lateness.push((woke - deadline).as_secs_f64() * 1e3);
            deadline = woke + Duration::from_millis(1);
        }
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        Probe {
            lateness_ms: lateness,
            gaps_ms: gaps.await.unwrap(),
            writes_per_sec: writes.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        }
    });
    lessor.close().unwrap();
    out
}

/// Median per-call time of `calls` sequential durable puts, blocking then async, `pairs` times
/// alternating; returns the medians of each side in µs.
fn put_overhead(s: Sizes, dir: &Path) -> (f64, f64) {
    let lessor = durable(&dir.join("overhead.redb"));
    let a = AsyncLessor::from(lessor.clone());
    let rt = current_thread();
    let (mut sync_us, mut async_us) = (Vec::new(), Vec::new());
    for _ in 0..s.pairs {
        let t = Instant::now();
        for i in 0..s.calls {
            lessor.put(format!("/o/{}", i % 64), "v").unwrap();
        }
        sync_us.push(t.elapsed().as_secs_f64() * 1e6 / s.calls as f64);
        let t = Instant::now();
        rt.block_on(async {
            for i in 0..s.calls {
                a.put(format!("/o/{}", i % 64), "v").await.unwrap();
            }
        });
        async_us.push(t.elapsed().as_secs_f64() * 1e6 / s.calls as f64);
    }
    lessor.close().unwrap();
    (median(sync_us), median(async_us))
}

/// Writes per second of 8 concurrent durable writers: 8 threads (blocking) vs 8 tasks on one
/// current-thread runtime (async), each doing `calls` puts, each side on a lessor of its own;
/// medians of `pairs` alternations. Also the writes per commit and the commits' median latency
/// (fsync included) on each side.
fn eight_writers(s: Sizes, dir: &Path) -> [(f64, f64, Duration); 2] {
    let blocking = durable(&dir.join("eight-blocking.redb"));
    let lessor = durable(&dir.join("eight-async.redb"));
    let a = AsyncLessor::from(lessor.clone());
    let rt = current_thread();
    let (mut sync_ws, mut async_ws) = (Vec::new(), Vec::new());
    for _ in 0..s.pairs {
        let t = Instant::now();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let l = &blocking;
                scope.spawn(move || {
                    for j in 0..s.calls {
                        l.put(format!("/e/{i}/{}", j % 64), "v").unwrap();
                    }
                });
            }
        });
        sync_ws.push((8 * s.calls) as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let a = a.clone();
                    tokio::spawn(async move {
                        for j in 0..s.calls {
                            a.put(format!("/e/{i}/{}", j % 64), "v").await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        async_ws.push((8 * s.calls) as f64 / t.elapsed().as_secs_f64());
    }
    let figures = |l: &Lessor, ws: Vec<f64>| {
        let stats = l.stats().unwrap();
        let per_commit = (8 * s.calls * s.pairs) as f64 / stats.commits.max(1) as f64;
        (median(ws), per_commit, stats.commit_latency.p50)
    };
    let out = [figures(&blocking, sync_ws), figures(&lessor, async_ws)];
    blocking.close().unwrap();
    lessor.close().unwrap();
    out
}

/// Median ns per `get` of a present key, blocking vs awaited (in memory).
fn get_overhead(s: Sizes) -> (f64, f64) {
    let lessor = Lessor::open_in_memory().unwrap();
    lessor.put("/g/key", "value").unwrap();
    let a = AsyncLessor::from(lessor.clone());
    let rt = current_thread();
    let n = s.calls * 50;
    let (mut sync_ns, mut async_ns) = (Vec::new(), Vec::new());
    for _ in 0..s.pairs.max(3) {
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(lessor.get("/g/key").unwrap());
        }
        sync_ns.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                std::hint::black_box(a.get("/g/key").await.unwrap());
            }
        });
        async_ns.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    (median(sync_ns), median(async_ns))
}

struct Scale {
    keepalive_bytes: f64,
    watch_bytes: f64,
    fanout_ms: f64,
}

/// Scenario 3: see the module docs.
fn scale(s: Sizes, dir: &Path) -> Scale {
    let lessor = Lessor::builder()
        .durability(Durability::Batched {
            max_delay: Duration::from_millis(5),
        })
        .open(dir.join("scale.redb"))
        .unwrap();
    let a = AsyncLessor::from(lessor.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let mut ids = Vec::with_capacity(s.keepalives);
        for _ in 0..s.keepalives {
            ids.push(a.grant(Duration::from_secs(10)).await.unwrap().id);
        }
        a.sync().await.unwrap();
        let before = rss_bytes();
        let mut keepalives = Vec::with_capacity(ids.len());
        for &id in &ids {
            keepalives.push(a.keep_alive(id).unwrap());
        }
        let after_keepalives = rss_bytes();
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::with_capacity(s.watches);
        for i in 0..s.watches {
            let mut watch = a.watch(format!("/fan/{}", i % 16)).unwrap();
            let received = Arc::clone(&received);
            tasks.push(tokio::spawn(async move {
                if watch.next().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after_watches = rss_bytes();
        let t = Instant::now();
        // One put per prefix: every watch sees one event.
        for p in 0..16 {
            a.put(format!("/fan/{p}"), "v").await.unwrap();
        }
        for task in tasks {
            task.await.unwrap();
        }
        let fanout = t.elapsed();
        assert_eq!(received.load(Ordering::Relaxed), s.watches as u64);
        // Every keep-alive still runs.
        assert!(
            keepalives.iter().all(|k| k.deadline().is_some()),
            "a keep-alive ended"
        );
        drop(keepalives);
        Scale {
            keepalive_bytes: after_keepalives.saturating_sub(before) as f64 / s.keepalives as f64,
            watch_bytes: after_watches.saturating_sub(after_keepalives) as f64 / s.watches as f64,
            fanout_ms: fanout.as_secs_f64() * 1e3,
        }
    });
    rt.block_on(a.close()).unwrap();
    out
}

fn main() {
    let s = sizes();
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let wants = |what: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w == what))
    };
    let dir = tempfile::tempdir().unwrap();
    println!("# async_api (issue 14); window {:?}", s.window);
    println!();
    if wants("probe") {
        println!("## 1. Probe on a current-thread runtime, 8 durable writers (Immediate, a file)");
        println!(
            "| writers | lateness p50 ms | p99 ms | max ms | thread held p99 ms | max ms | writes/s |"
        );
        println!("|---|---|---|---|---|---|---|");
        for writers in [Writers::None, Writers::Blocking, Writers::Async] {
            let mut p = probe(writers, s.window, dir.path());
            p.lateness_ms.sort_by(f64::total_cmp);
            let name = match writers {
                Writers::None => "none (idle probe)",
                Writers::Blocking => "Lessor::put (blocking)",
                Writers::Async => "AsyncLessor::put",
            };
            println!(
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
                percentile(&p.lateness_ms, 0.5),
                percentile(&p.lateness_ms, 0.99),
                p.lateness_ms.last().copied().unwrap_or(f64::NAN),
                percentile(&p.gaps_ms, 0.99),
                p.gaps_ms.last().copied().unwrap_or(f64::NAN),
                p.writes_per_sec
            );
        }
        println!();
    }
    if wants("overhead") {
        println!("## 2. Call overhead (medians of {} paired runs)", s.pairs);
        let (sync_put, async_put) = put_overhead(s, dir.path());
        println!(
            "- durable put, one caller: blocking {sync_put:.1} µs, async {async_put:.1} µs ({:+.1}%)",
            (async_put / sync_put - 1.0) * 100.0
        );
        let [
            (sync_ws, sync_group, sync_commit),
            (async_ws, async_group, async_commit),
        ] = eight_writers(s, dir.path());
        println!(
            "- 8 durable writers: 8 threads {sync_ws:.0} writes/s ({sync_group:.1} per commit, commit p50 {sync_commit:?}), 8 tasks on one thread {async_ws:.0} writes/s ({async_group:.1} per commit, commit p50 {async_commit:?}) ({:+.1}%)",
            (async_ws / sync_ws - 1.0) * 100.0
        );
        let (sync_get, async_get) = get_overhead(s);
        println!(
            "- get, in memory: blocking {sync_get:.0} ns, async {async_get:.0} ns ({:+.0} ns)",
            async_get - sync_get
        );
        println!();
    }
    if wants("scale") {
        println!(
            "## 3. Scale: {} keep-alives, {} watches on one AsyncLessor",
            s.keepalives, s.watches
        );
        let sc = scale(s, dir.path());
        println!(
            "- resident memory: {:.0} B per keep-alive, {:.0} B per watch (its task included)",
            sc.keepalive_bytes, sc.watch_bytes
        );
        println!(
            "- one put per 16 prefixes reached all {} watches in {:.1} ms",
            s.watches, sc.fanout_ms
        );
    }
}
