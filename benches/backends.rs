//! The same small workload on the backends, side by side, from one run: for each of N leases,
//! grant, renew (twice: etcd's first renewal of a lease opens its keep-alive stream), put a key
//! with the lease, revoke. Through `&dyn LeaseStore`, so every backend runs the same code; on 1
//! thread, then on 8 (each with its share of the leases), for the throughput.
//!
//! The embedded `Lessor` works on a temporary file with its default durability (an fsync per
//! mutating call); etcd is started here on 127.0.0.1 with its data in a temporary folder (its
//! default: an fsync of its WAL per write), reached over loopback gRPC: one member, then a
//! 3-member cluster (every write replicated to a quorum; the client given every member).
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

use lessor::{EtcdLessor, EtcdOptions, LeaseStore, Lessor};

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
    let mut times = vec![Vec::new(); OPS.len()];
    for t in per_thread {
        for (op, d) in t.into_iter().enumerate() {
            times[op].extend(d);
        }
    }
    (times, wall)
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
    let mut results: Vec<(&str, Vec<Run>)> = Vec::new();
    let measure = |store: &dyn LeaseStore| {
        run(store, 1, n / 10); // warm-up
        THREADS
            .iter()
            .map(|&threads| {
                let (times, wall) = run(store, threads, n);
                (threads, times, wall)
            })
            .collect::<Vec<_>>()
    };

    let embedded = Lessor::open(dir.path().join("bench.redb")).unwrap();
    results.push(("Lessor (file)", measure(&embedded)));
    embedded.close().unwrap();

    let server = etcd_server::EtcdServer::start();
    let etcd = connect(std::slice::from_ref(&server.endpoint));
    results.push(("etcd, 1 member", measure(&etcd)));
    etcd.close().unwrap();
    drop(server);

    let cluster = etcd_cluster::Cluster::start(3);
    cluster.wait_leader();
    let etcd = connect(&cluster.endpoints());
    results.push(("etcd, 3 members", measure(&etcd)));
    etcd.close().unwrap();
    drop(cluster);

    for (k, &threads) in THREADS.iter().enumerate() {
        println!("\n{n} leases on {threads} thread(s); median (p99) per call");
        print!("{:<16}", "op");
        for (name, _) in &results {
            print!(" {name:>24}");
        }
        println!();
        for (op, op_name) in OPS.iter().enumerate() {
            print!("{op_name:<16}");
            for (_, runs) in &mut results {
                let times = &mut runs[k].1[op];
                let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
                print!(" {:>24}", format!("{} ({})", show(p50), show(p99)));
            }
            println!();
        }
        print!("{:<16}", "leases/s");
        for (_, runs) in &results {
            print!(" {:>24.0}", n as f64 / runs[k].2.as_secs_f64());
        }
        println!();
    }
}

/// One measurement: the thread count, each op's times, the wall time.
type Run = (usize, Vec<Vec<Duration>>, Duration);

/// The thread counts measured.
const THREADS: [usize; 2] = [1, 8];

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
