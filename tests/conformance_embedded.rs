//! The conformance suite (`tests/conformance/`) on the embedded `Lessor`: in memory, with a
//! `ManualClock` that the suite advances instead of sleeping, and the ticker and keep-alive
//! threads running as in production.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod conformance;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conformance::Harness;
use lessor::{LeaseId, Lessor, ManualClock};

struct Embedded {
    lessor: Lessor,
    clock: ManualClock,
}

impl Embedded {
    fn new() -> Embedded {
        let clock = ManualClock::new();
        let lessor = Lessor::builder()
            .clock(clock.clone())
            .open_in_memory()
            .unwrap();
        Embedded { lessor, clock }
    }
}

impl Harness for Embedded {
    type Store = Lessor;

    fn store(&self) -> &Lessor {
        &self.lessor
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

macro_rules! embedded_tests {
    ($($case:ident),*) => {$(
        #[test]
        fn $case() {
            let h = Embedded::new();
            conformance::$case(&h);
            h.lessor.close().unwrap();
        }
    )*};
}

all_cases!(embedded_tests);
