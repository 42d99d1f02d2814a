//! The lock recipe of `examples/lock.rs`, driven by a manual clock: put-if-absent under a lease,
//! held by a keep-alive; a holder that stops renewing loses the lock within one TTL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{secs, wait_until};
use lessor::{
    Clock, Compare, DeleteCause, EndReason, Lessor, ManualClock, Op, Txn, TxnResponse, WatchEvent,
};

const KEY: &str = "/cron/lock/job1";

fn try_lock(l: &Lessor, owner: &str, lease: lessor::LeaseId) -> TxnResponse {
    l.txn(
        Txn::new()
            .when(Compare::absent(KEY))
            .then(Op::put_with_lease(KEY, owner, lease))
            .otherwise(Op::get(KEY)),
    )
    .unwrap()
}

#[test]
fn a_holder_that_stops_renewing_loses_the_lock_within_one_ttl() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open_in_memory()
        .unwrap();
    let ttl = secs(3);

    let a = l.grant(ttl).unwrap();
    let a_keep = l.keep_alive(a.id).unwrap();
    let got = try_lock(&l, "a", a.id);
    assert!(got.succeeded);
    let token_a = got.revision;

    // b contends, loses, and watches the key from the revision after its attempt.
    let b = l.grant(ttl).unwrap();
    let b_keep = l.keep_alive(b.id).unwrap();
    let lost = try_lock(&l, "b", b.id);
    assert!(!lost.succeeded);
    let watch = l.watch_from(KEY, lost.revision.next()).unwrap();

    // Moves time on by 0.9 s and waits for both keep-alives to have renewed what is alive.
    let step = |ids: &[lessor::LeaseId]| {
        clock.advance(Duration::from_millis(900));
        for &id in ids {
            assert!(wait_until(secs(10), || l
                .time_to_live(id)
                .is_ok_and(|i| i.remaining > Duration::from_millis(1500))));
        }
    };
    // While a renews, time passes and a keeps the lock.
    for _ in 0..10 {
        step(&[a.id, b.id]);
    }
    assert_eq!(l.get(KEY).unwrap().unwrap().value, b"a");

    // a "crashes": no more renewals. Within one TTL the ticker revokes its lease and the key.
    a_keep.cancel();
    let crashed = clock.now();
    let event = loop {
        step(&[b.id]);
        if let Ok(event) = watch.recv_timeout(Duration::from_millis(50)) {
            break event;
        }
        assert!(clock.now() - crashed <= ttl, "the lock outlived its TTL");
    };
    // Seen at the first step (0.9 s) after the deadline, which was at most one TTL after the
    // crash (the last renewal was before it).
    assert!(
        matches!(&event, WatchEvent::Delete { cause: DeleteCause::LeaseExpired(id), .. } if *id == a.id),
        "{event:?}"
    );
    assert!(clock.now() - crashed < ttl + Duration::from_millis(900));

    // b takes over, with a larger fencing token.
    let won = try_lock(&l, "b", b.id);
    assert!(won.succeeded);
    assert!(won.revision > token_a);
    assert_eq!(l.get(KEY).unwrap().unwrap().create_revision, won.revision);
    assert_eq!(b_keep.ended(), None);
    assert_eq!(a_keep.ended(), Some(EndReason::Cancelled));
}
