//! The same small workload on both backends, side by side, from one run: for each of N leases,
//! grant, renew (twice: etcd's first renewal of a lease opens its keep-alive stream), put a key
//! with the lease, revoke. Single thread, through `&dyn LeaseStore`, so both run the same code.
//!
//! The embedded `Lessor` works on a temporary file with its default durability (an fsync per
//! mutating call); etcd is a one-member server started here on 127.0.0.1 with its data in a
//! temporary folder (its default: an fsync of its WAL per write), reached over loopback gRPC.
//!
//! `cargo bench --features etcd --bench backends [-- N]` (N leases, default 300). Needs the `etcd`
//! binary (Debian's `etcd-server`, or `$LESSOR_ETCD`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Runs the workload `n` times; the time of each op, by op.
fn workload(store: &dyn LeaseStore, n: usize) -> Vec<Vec<Duration>> {
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
        let key = format!("/bench/workers/{i}");
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
    let embedded = Lessor::open(dir.path().join("bench.redb")).unwrap();
    workload(&embedded, n / 10); // warm-up
    let mut local = workload(&embedded, n);
    embedded.close().unwrap();

    let server = etcd_server::EtcdServer::start();
    let start = Instant::now();
    let etcd = loop {
        match EtcdLessor::connect([server.endpoint.as_str()], EtcdOptions::new()) {
            Ok(etcd) => break etcd,
            Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("etcd: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    workload(&etcd, n / 10); // warm-up
    let mut remote = workload(&etcd, n);
    etcd.close().unwrap();
    drop(server);

    println!("{n} leases, single thread; median (p99) per call");
    println!(
        "{:<16} {:>22} {:>22} {:>8}",
        "op", "Lessor (file, fsync)", "EtcdLessor (loopback)", "ratio"
    );
    for (op, name) in OPS.iter().enumerate() {
        let (l50, l99) = (
            percentile(&mut local[op], 0.5),
            percentile(&mut local[op], 0.99),
        );
        let (r50, r99) = (
            percentile(&mut remote[op], 0.5),
            percentile(&mut remote[op], 0.99),
        );
        println!(
            "{:<16} {:>22} {:>22} {:>7.1}x",
            name,
            format!("{} ({})", show(l50), show(l99)),
            format!("{} ({})", show(r50), show(r99)),
            r50.as_secs_f64() / l50.as_secs_f64().max(1e-9)
        );
    }
    let total = |t: &[Vec<Duration>]| t.iter().flatten().sum::<Duration>();
    println!(
        "whole workload (sum of every call): Lessor {:.2} s, EtcdLessor {:.2} s",
        total(&local).as_secs_f64(),
        total(&remote).as_secs_f64()
    );
}
