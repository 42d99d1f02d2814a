//! The conformance suite (`tests/conformance/`) on `EtcdLessor`, against a real etcd server
//! started here on 127.0.0.1 (free ports, a temporary data folder) and stopped at the end.
//!
//! Run with `cargo test --features etcd --test conformance_etcd [FILTER]`; needs the `etcd`
//! binary (Debian's `etcd-server`, or `$LESSOR_ETCD`). A plain runner (`harness = false`)
//! rather than libtest's, so that the server outlives every test and is stopped after the last:
//! the tests run in parallel threads, each with its own connection and key prefix, and their
//! leases expire in real time (etcd's clock), so the suite takes a few seconds, not one per
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod conformance;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conformance::Harness;
use conformance::blocking::Blocking;
use conformance::etcd_server::EtcdServer;
use lessor::{EtcdLessor, EtcdOptions, LeaseId};

/// The cluster behind a store: `EtcdLessor` itself, or (`Blocking<EtcdLessor>`) the same
/// cluster through `AsyncLeaseStore`, every call `EtcdLessor`'s future polled by
/// `futures::executor::block_on` (no tokio runtime of the test's: the futures run inside the
/// backend's runtime context), so that the suite checks the async backend too.
struct Etcd<S> {
    store: S,
    prefix: String,
}

impl Etcd<EtcdLessor> {
    fn new(endpoint: &str, case: &str) -> Self {
        let store = EtcdLessor::connect([endpoint], EtcdOptions::new()).unwrap();
        Etcd {
            store,
            prefix: format!("/conformance/{case}/"),
        }
    }
}

impl Etcd<Blocking<EtcdLessor>> {
    fn new_async(endpoint: &str, case: &str) -> Self {
        let connect = EtcdLessor::connect_async([endpoint], EtcdOptions::new());
        Etcd {
            store: Blocking(futures::executor::block_on(connect).unwrap()),
            prefix: format!("/conformance-async/{case}/"),
        }
    }
}

impl<S: lessor::LeaseStore> Harness for Etcd<S> {
    type Store = S;

    fn store(&self) -> &S {
        &self.store
    }

    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn pass(&self, by: Duration) {
        std::thread::sleep(by); // etcd's leases live by the server's clock
    }

    fn min_ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn knows_delete_causes(&self) -> bool {
        false
    }

    fn is_etcd(&self) -> bool {
        true
    }

    fn fresh_id(&self) -> LeaseId {
        static NEXT: AtomicU64 = AtomicU64::new(1_000_000);
        LeaseId::new(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap()
    }
}

type Case = (&'static str, fn(&str));

macro_rules! etcd_cases {
    ($($case:ident),*) => {
        const CASES: &[Case] = &[$(
            (stringify!($case), |endpoint| {
                let h = Etcd::new(endpoint, stringify!($case));
                conformance::$case(&h);
                h.store.close().unwrap();
            }),
        )*];
    };
}

all_cases!(etcd_cases);

macro_rules! etcd_async_cases {
    ($($case:ident),*) => {
        const ASYNC_CASES: &[Case] = &[$(
            (concat!("async::", stringify!($case)), |endpoint| {
                let h = Etcd::new_async(endpoint, stringify!($case));
                conformance::$case(&h);
                lessor::LeaseStore::close(&h.store).unwrap();
            }),
        )*];
    };
}

all_cases!(etcd_async_cases);

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cases: Vec<&Case> = CASES
        .iter()
        .chain(ASYNC_CASES)
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    let server = EtcdServer::start();
    let endpoint = server.endpoint.clone();
    // The server listens before it has elected itself leader: wait until it answers.
    let ready = Instant::now();
    while let Err(e) = EtcdLessor::connect([endpoint.as_str()], EtcdOptions::new()) {
        if ready.elapsed() > Duration::from_secs(30) {
            eprintln!("etcd did not answer within 30 s: {e}\n{}", server.log());
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "running {} conformance tests on etcd at {endpoint}",
        cases.len()
    );
    let started = Instant::now();
    let results: Vec<(&str, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(name, run)| {
                let endpoint = endpoint.as_str();
                (*name, scope.spawn(move || run(endpoint)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let ok = h.join().is_ok();
                println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
                (name, ok)
            })
            .collect()
    });
    let failed = results.iter().filter(|(_, ok)| !ok).count();
    let passed = results.len() - failed;
    println!("finished in {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    drop(server); // stops etcd and removes its data
    if failed > 0 {
        std::process::exit(1);
    }
}
