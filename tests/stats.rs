//! `Lessor::stats`: every counter and gauge moves with the work it counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{manual, secs, wait_until};
use lessor::{KeepAliveOptions, Lessor, ManualClock};

#[test]
fn counters_and_gauges_follow_the_work() {
    let (l, clock, _dir) = manual();
    let s = l.stats().unwrap();
    assert_eq!(
        (s.leases, s.keys, s.grants, s.renews, s.expiries),
        (0, 0, 0, 0, 0)
    );
    assert!(s.file_size.unwrap() > 0);

    let a = l.grant(secs(10)).unwrap().id;
    let b = l.grant(secs(10)).unwrap().id;
    let c = l.grant(secs(5)).unwrap().id;
    l.put_with_lease("/a", "1", a).unwrap();
    l.put_with_lease("/c", "1", c).unwrap();
    l.put("/plain", "1").unwrap();
    for _ in 0..5 {
        l.renew(a).unwrap();
    }
    assert!(l.renew(lessor::LeaseId::new(999).unwrap()).is_err()); // not counted
    l.revoke(b).unwrap();
    let s = l.stats().unwrap();
    assert_eq!((s.leases, s.keys, s.attached_keys), (2, 3, 2), "{s:?}");
    assert_eq!((s.grants, s.renews, s.revokes, s.expiries), (3, 5, 1, 0));
    assert_eq!(s.revision, 3); // three puts; grants and revocations without keys make none
    assert!(s.commits >= 4 && s.fsyncs >= 4, "{s:?}");
    assert_eq!(s.commit_latency.count, s.commits);
    assert!(s.commit_latency.max >= s.commit_latency.p99);

    // `c` expires at 5 s and is revoked at 7 s: 2 s late, by the lessor's clock.
    clock.advance(secs(7));
    assert_eq!(l.revoke_expired().unwrap(), vec![c]);
    let s = l.stats().unwrap();
    assert_eq!((s.leases, s.keys, s.attached_keys), (1, 2, 1));
    assert_eq!((s.expiries, s.expiry_batches), (1, 1));
    let late = s.expiry_lateness;
    assert_eq!(
        (late.count, late.p50, late.p99, late.max),
        (1, secs(2), secs(2), secs(2))
    );
    assert_eq!(
        (
            s.health.storage_failures,
            s.health.reloads,
            s.health.ticker_failures
        ),
        (0, 0, 0)
    );
}

#[test]
fn keep_alive_renewals_count_as_renewals() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open_in_memory()
        .unwrap();
    assert_eq!(l.stats().unwrap().file_size, None);
    let lease = l.grant(secs(9)).unwrap();
    let ka = l
        .keep_alive_with(lease.id, KeepAliveOptions::new().interval(secs(3)))
        .unwrap();
    for n in 1..=3u64 {
        clock.advance(secs(3));
        assert!(
            wait_until(Duration::from_secs(5), || l.stats().unwrap().renews > n),
            "{:?}",
            l.stats()
        );
    }
    drop(ka);
}
