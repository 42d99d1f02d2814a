//! The conformance suite (`tests/conformance/`) on the async API: every call goes through
//! `AsyncLeaseStore` on an `AsyncLessor` (see `conformance/blocking.rs`), on a database in a
//! file under `Durability::Immediate`, so that every write waits for the flusher thread's
//! fsync, with a `ManualClock` the suite advances instead of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod conformance;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conformance::Harness;
use conformance::blocking::Blocking;
use lessor::{AsyncLessor, LeaseId, LeaseStore, Lessor, ManualClock};

struct Async {
    store: Blocking<AsyncLessor>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

impl Async {
    fn new() -> Async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let lessor = Lessor::builder()
            .clock(clock.clone())
            .open(dir.path().join("async.redb"))
            .unwrap();
        Async {
            store: Blocking(AsyncLessor::from(lessor)),
            clock,
            _dir: dir,
        }
    }
}

impl Harness for Async {
    type Store = Blocking<AsyncLessor>;

    fn store(&self) -> &Blocking<AsyncLessor> {
        &self.store
    }

    fn prefix(&self) -> &str {
        "/conformance/"
    }

    fn pass(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn min_ttl(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn knows_delete_causes(&self) -> bool {
        true
    }

    fn is_etcd(&self) -> bool {
        false
    }

    fn fresh_id(&self) -> LeaseId {
        static NEXT: AtomicU64 = AtomicU64::new(1_000_000);
        LeaseId::new(NEXT.fetch_add(1, Ordering::Relaxed)).unwrap()
    }
}

macro_rules! async_tests {
    ($($case:ident),*) => {$(
        #[test]
        fn $case() {
            let h = Async::new();
            conformance::$case(&h);
            h.store.close().unwrap();
        }
    )*};
}

all_cases!(async_tests);
