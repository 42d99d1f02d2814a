//! The same small workload on the backends, side by side, from one run: for each of N leases,
//! grant, renew (twice: etcd's first renewal of a lease opens its keep-alive stream), put a key
//! with the lease, revoke. Through `&dyn LeaseStore`, so every backend runs the same code; on 1
//! thread, then on 8 (each with its share of the leases), for the throughput; then as 8 tasks
//! on a tokio runtime through `&dyn AsyncLeaseStore` (the embedded engine as an `AsyncLessor`).
//!
//! The embedded `Lessor` works on a temporary file with its default durability (an fsync per
//! mutating call); etcd is started here on 127.0.0.1 with its data in a temporary folder (its
//! default: an fsync of its WAL per write), reached over loopback gRPC: one member, then a
//! 3-member cluster (every write replicated to a quorum; the client given every member).
//!
//! After the tables, where the CPU went in each run (Linux only): the `lessor-etcd` runtime
//! thread, the whole bench process, and the etcd servers it started, each in % of one core
//! over the run's wall time. The etcd backend drives every connection from that one thread;
//! these lines say whether it is the limit (docs/performance.md, "The etcd backend's thread").
//!
//! `cargo bench --features etcd --bench backends [-- N]` (N leases, default 300). Needs the `etcd`
//! and `etcdctl` binaries (Debian's `etcd-server` and `etcd-client`, or `$LESSOR_ETCD` and
//! `$LESSOR_ETCDCTL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/etcd_cluster.rs"]
mod etcd_cluster;
#[path = "../tests/conformance/etcd_server.rs"]
mod etcd_server;

use std::time::{Duration, Instant};

use lessor::{AsyncLeaseStore, AsyncLessor, EtcdLessor, EtcdOptions, LeaseStore, Lessor};

const OPS: [&str; 5] = [
    "grant",
    "renew (1st)",
    "renew (2nd)",
    "put_with_lease",
    "revoke",
];

/// Runs the workload for `n` leases on `threads` threads; the time of each op, by op, and the
/// wall time of the whole.
fn run(store: &dyn LeaseStore, threads: usize, n: usize) -> (Vec<Vec<Duration>>, Duration) {
    let start = Instant::now();
    let per_thread: Vec<Vec<Vec<Duration>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || workload(store, t, n / threads)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed();
    (merge(per_thread), wall)
}

/// Each op's times from every thread or task, in one list per op.
fn merge(per_caller: Vec<Vec<Vec<Duration>>>) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::new(); OPS.len()];
    for t in per_caller {
        for (op, d) in t.into_iter().enumerate() {
            times[op].extend(d);
        }
    }
    times
}

/// Runs the workload `n` times on this thread (`thread` names its keys); the time of each op.
fn workload(store: &dyn LeaseStore, thread: usize, n: usize) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(n); OPS.len()];
    let mut timed = |op: usize, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        times[op].push(start.elapsed());
    };
    for i in 0..n {
        let mut lease = None;
        timed(0, &mut || {
            lease = Some(store.grant(Duration::from_secs(60)).unwrap())
        });
        let id = lease.unwrap().id;
        timed(1, &mut || {
            store.renew(id).unwrap();
        });
        timed(2, &mut || {
            store.renew(id).unwrap();
        });
        let key = format!("/bench/workers/{thread}/{i}");
        timed(3, &mut || {
            store.put_with_lease(key.as_bytes(), b"up", id).unwrap();
        });
        timed(4, &mut || {
            store.revoke(id).unwrap();
        });
    }
    times
}

/// Runs the workload for `n` leases as `tasks` tasks on a tokio runtime (2 workers), through
/// the async trait; as [`run`].
fn run_async(
    rt: &tokio::runtime::Runtime,
    store: &dyn AsyncLeaseStore,
    tasks: usize,
    n: usize,
) -> (Vec<Vec<Duration>>, Duration) {
    // The tasks borrow `store`: `block_on` of a join of them, rather than `spawn` ('static).
    let start = Instant::now();
    let per_task = rt.block_on(futures::future::join_all(
        (0..tasks).map(|t| workload_async(store, t, n / tasks)),
    ));
    let wall = start.elapsed();
    (merge(per_task), wall)
}

/// [`workload`] through the async trait.
async fn workload_async(store: &dyn AsyncLeaseStore, task: usize, n: usize) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(n); OPS.len()];
    for i in 0..n {
        let start = Instant::now();
        let id = store.grant(Duration::from_secs(60)).await.unwrap().id;
        times[0].push(start.elapsed());
        let start = Instant::now();
        store.renew(id).await.unwrap();
        times[1].push(start.elapsed());
        let start = Instant::now();
        store.renew(id).await.unwrap();
        times[2].push(start.elapsed());
        let key = format!("/bench/tasks/{task}/{i}");
        let start = Instant::now();
        store
            .put_with_lease(key.as_bytes(), b"up", id)
            .await
            .unwrap();
        times[3].push(start.elapsed());
        let start = Instant::now();
        store.revoke(id).await.unwrap();
        times[4].push(start.elapsed());
    }
    times
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[i]
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--test` (as `cargo bench -- --test` passes): a smoke run, not a measurement.
    let smoke = args.iter().any(|a| a == "--test");
    let n: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if smoke { 20 } else { 300 });

    let dir = tempfile::tempdir().unwrap();
    // Tasks of the async mode join on this thread (`block_on`): the futures are polled here,
    // and the runtime's 2 workers drive its timers and I/O (the etcd backend has its own).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(&str, Vec<Run>)> = Vec::new();
    let measure = |store: &dyn LeaseStore, store_async: &dyn AsyncLeaseStore| {
        run(store, 1, n / 10); // warm-up
        MODES
            .iter()
            .map(|&(mode, threads)| {
                let cpu = Cpu::now();
                let (times, wall) = if mode == ASYNC {
                    run_async(&rt, store_async, threads, n)
                } else {
                    run(store, threads, n)
                };
                (times, wall, cpu.since(wall))
            })
            .collect::<Vec<_>>()
    };

    let embedded = Lessor::open(dir.path().join("bench.redb")).unwrap();
    let embedded_async = AsyncLessor::from(embedded.clone());
    results.push(("Lessor (file)", measure(&embedded, &embedded_async)));
    drop(embedded_async);
    embedded.close().unwrap();

    let server = etcd_server::EtcdServer::start();
    let etcd = connect(std::slice::from_ref(&server.endpoint));
    results.push(("etcd, 1 member", measure(&etcd, &etcd)));
    etcd.close().unwrap();
    drop(server);

    let cluster = etcd_cluster::Cluster::start(3);
    cluster.wait_leader();
    let etcd = connect(&cluster.endpoints());
    results.push(("etcd, 3 members", measure(&etcd, &etcd)));
    etcd.close().unwrap();
    drop(cluster);

    for (k, &(mode, threads)) in MODES.iter().enumerate() {
        println!("\n{n} leases on {threads} {mode}; median (p99) per call");
        print!("{:<16}", "op");
        for (name, _) in &results {
            print!(" {name:>24}");
        }
        println!();
        for (op, op_name) in OPS.iter().enumerate() {
            print!("{op_name:<16}");
            for (_, runs) in &mut results {
                let times = &mut runs[k].0[op];
                let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
                print!(" {:>24}", format!("{} ({})", show(p50), show(p99)));
            }
            println!();
        }
        print!("{:<16}", "leases/s");
        for (_, runs) in &results {
            print!(" {:>24.0}", n as f64 / runs[k].1.as_secs_f64());
        }
        println!();
        for (label, pick) in [
            ("cpu: lessor-etcd", 0),
            ("cpu: process", 1),
            ("cpu: etcd", 2),
        ] {
            print!("{label:<16}");
            for (_, runs) in &results {
                let used = runs[k].2;
                let share = [used.etcd_thread, used.process, used.servers][pick];
                print!(" {:>24}", format!("{:.0}%", share * 100.0));
            }
            println!();
        }
    }
}

/// One measurement: each op's times, the wall time, where the CPU went.
type Run = (Vec<Vec<Duration>>, Duration, CpuShare);

/// The run modes: the blocking trait from threads, the async trait from tasks.
const BLOCKING: &str = "thread(s)";
const ASYNC: &str = "tasks (async)";
const MODES: [(&str, usize); 3] = [(BLOCKING, 1), (BLOCKING, 8), (ASYNC, 8)];

/// CPU seconds used so far (Linux `/proc`; zeros elsewhere): by the threads named
/// `lessor-etcd`, by this process, by its child processes named `etcd` (the servers).
#[derive(Clone, Copy)]
struct Cpu {
    etcd_thread: f64,
    process: f64,
    servers: f64,
}

/// CPU used over a run, in cores (1.0: one core busy the whole wall time).
#[derive(Clone, Copy, Default)]
struct CpuShare {
    etcd_thread: f64,
    process: f64,
    servers: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let mut etcd_thread = 0.0;
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            if comm(&task.path()) == "lessor-etcd" {
                etcd_thread += cpu_seconds(&task.path());
            }
        }
        let me = std::process::id().to_string();
        let mut servers = 0.0;
        for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let path = proc.path();
            if comm(&path) == "etcd" && stat_field(&path, 1).as_deref() == Some(me.as_str()) {
                servers += cpu_seconds(&path);
            }
        }
        Cpu {
            etcd_thread,
            process: cpu_seconds(std::path::Path::new("/proc/self")),
            servers,
        }
    }

    fn since(self, wall: Duration) -> CpuShare {
        let later = Cpu::now();
        let wall = wall.as_secs_f64();
        CpuShare {
            etcd_thread: (later.etcd_thread - self.etcd_thread) / wall,
            process: (later.process - self.process) / wall,
            servers: (later.servers - self.servers) / wall,
        }
    }
}

/// A process's or thread's name.
fn comm(path: &std::path::Path) -> String {
    std::fs::read_to_string(path.join("comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Field `i` of a `stat` file after the name (0: the state, 1: the parent's pid...).
fn stat_field(path: &std::path::Path, i: usize) -> Option<String> {
    let stat = std::fs::read_to_string(path.join("stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(i).map(str::to_owned)
}

/// User plus system CPU time, in seconds (at the usual 100 ticks per second).
fn cpu_seconds(path: &std::path::Path) -> f64 {
    let ticks = |i| {
        stat_field(path, i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Connects, waiting (up to 30 s) for a leader.
fn connect(endpoints: &[String]) -> EtcdLessor {
    let start = Instant::now();
    loop {
        match EtcdLessor::connect(endpoints, EtcdOptions::new()) {
            Ok(etcd) => break etcd,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("etcd: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
