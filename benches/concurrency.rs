//! `lessor::concurrency` against its targets (issue 15), from one run:
//! - uncontended `lock()` + `unlock()` on the embedded store, under `Durability::Batched` and
//!   `Durability::Immediate` (a temporary file: real fsyncs), median and p99;
//! - hand-off latency: from `unlock()` returning to the next waiter's `lock()` returning,
//!   median and p99, on the embedded store and, with feature `etcd` and the `etcd` binary, on
//!   a real one-member server started here (loopback gRPC, fsync per write).
//!
//! `cargo bench --bench concurrency [-- N]` (N rounds, default 2000 uncontended, N/4 hand-offs);
//! add `--features etcd` for etcd's hand-off. `-- --test` is a smoke run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "etcd")]
#[path = "../tests/conformance/etcd_server.rs"]
mod etcd_server;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lessor::concurrency::{Mutex, Session};
use lessor::{Durability, LeaseStore, Lessor};

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

fn report(name: &str, times: &mut [Duration]) {
    let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
    println!(
        "{name:<44} n={:<6} median {:>10}  p99 {:>10}",
        times.len(),
        show(p50),
        show(p99)
    );
}

/// Uncontended lock + unlock, `n` times.
fn uncontended(store: &dyn LeaseStore, n: usize) -> Vec<Duration> {
    let session = Session::new(store, Duration::from_secs(60)).unwrap();
    let mut lock = Mutex::new(&session, "/bench/uncontended").unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        lock.lock().unwrap();
        lock.unlock().unwrap();
        times.push(start.elapsed());
    }
    session.close().unwrap();
    times
}

/// Two threads pass the lock back and forth `n` times; each time, from the holder's
/// `unlock()` returning to the waiter's `lock()` returning.
fn hand_off(store: &dyn LeaseStore, prefix: &str, n: usize) -> Vec<Duration> {
    let (released_tx, released_rx) = mpsc::channel::<Instant>();
    let (acquired_tx, acquired_rx) = mpsc::channel::<Duration>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let mut times = Vec::with_capacity(n);
    std::thread::scope(|s| {
        // The waiter: queues, then reports how long after the release it got the lock.
        s.spawn(move || {
            let session = Session::new(store, Duration::from_secs(60)).unwrap();
            let mut lock = Mutex::new(&session, prefix).unwrap();
            for _ in 0..n {
                go_rx.recv().unwrap(); // the other side holds the lock: queue behind it
                lock.lock().unwrap();
                let released: Instant = released_rx.recv().unwrap();
                acquired_tx.send(released.elapsed()).unwrap();
                lock.unlock().unwrap();
            }
            session.close().unwrap();
        });
        let session = Session::new(store, Duration::from_secs(60)).unwrap();
        let mut lock = Mutex::new(&session, prefix).unwrap();
        let mut queue = prefix.as_bytes().to_vec();
        queue.push(b'/');
        for _ in 0..n {
            lock.lock().unwrap();
            go_tx.send(()).unwrap();
            // Wait until the waiter's key is queued behind ours.
            while store.range(&queue).unwrap().len() < 2 {
                std::thread::yield_now();
            }
            lock.unlock().unwrap();
            released_tx.send(Instant::now()).unwrap();
            times.push(acquired_rx.recv().unwrap());
        }
        session.close().unwrap();
    });
    times
}

fn embedded(durability: Durability) -> (tempfile::TempDir, Lessor) {
    let dir = tempfile::tempdir().unwrap();
    let store = Lessor::builder()
        .durability(durability)
        .open(dir.path().join("bench.redb"))
        .unwrap();
    (dir, store)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test");
    let n: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if smoke { 20 } else { 2000 });
    let batched = Durability::Batched {
        max_delay: Duration::from_millis(5),
    };
    println!("lessor::concurrency, {n} rounds");

    let (_dir, store) = embedded(batched);
    report(
        "embedded Batched: lock + unlock, uncontended",
        &mut uncontended(&store, n),
    );
    report(
        "embedded Batched: hand-off unlock -> lock",
        &mut hand_off(&store, "/bench/handoff", n / 4),
    );
    store.close().unwrap();

    let (_dir, store) = embedded(Durability::Immediate);
    report(
        "embedded Immediate: lock + unlock, uncontended",
        &mut uncontended(&store, n / 4),
    );
    report(
        "embedded Immediate: hand-off unlock -> lock",
        &mut hand_off(&store, "/bench/handoff", n / 8),
    );
    store.close().unwrap();

    #[cfg(feature = "etcd")]
    etcd(n, smoke);
}

#[cfg(feature = "etcd")]
fn etcd(n: usize, smoke: bool) {
    use lessor::{EtcdLessor, EtcdOptions};
    if std::process::Command::new(std::env::var("LESSOR_ETCD").unwrap_or("etcd".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        println!("etcd: no etcd binary, skipped");
        return;
    }
    let server = etcd_server::EtcdServer::start();
    let ready = Instant::now();
    let store = loop {
        match EtcdLessor::connect([server.endpoint.as_str()], EtcdOptions::new()) {
            Ok(s) => break s,
            Err(e) if ready.elapsed() > Duration::from_secs(30) => panic!("etcd: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let rounds = if smoke { 10 } else { (n / 8).max(50) };
    report(
        "etcd: lock + unlock, uncontended",
        &mut uncontended(&store, rounds),
    );
    report(
        "etcd: hand-off unlock -> lock",
        &mut hand_off(&store, "/bench/handoff", rounds),
    );
    store.close().unwrap();
}
