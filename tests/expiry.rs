//! Expiry: order, batching, the ticker thread (driven by a manual clock, plus one real-clock
//! end-to-end run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{id, manual, secs, test_dir, wait_until};
use lessor::{Lessor, ManualClock};

#[test]
fn expired_leases_are_revoked_in_deadline_order_ties_by_id() {
    let (l, clock, _dir) = manual();
    l.grant_with_id(id(5), secs(3)).unwrap();
    l.grant_with_id(id(2), secs(3)).unwrap();
    l.grant_with_id(id(9), secs(1)).unwrap();
    l.grant_with_id(id(1), secs(2)).unwrap();
    l.grant_with_id(id(3), secs(60)).unwrap();
    clock.advance(secs(5));
    assert_eq!(
        l.revoke_expired().unwrap(),
        vec![id(9), id(1), id(2), id(5)]
    );
    assert_eq!(l.leases().unwrap(), vec![id(3)]);
}

#[test]
fn renewed_leases_expire_at_their_new_deadline() {
    let (l, clock, _dir) = manual();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(10)).unwrap();
    clock.advance(secs(5));
    l.renew(a.id).unwrap(); // a: 15 s, b: 10 s
    clock.advance(secs(5));
    assert_eq!(l.revoke_expired().unwrap(), vec![b.id]);
    clock.advance(secs(4));
    assert_eq!(l.revoke_expired().unwrap(), vec![]);
    clock.advance(secs(1));
    assert_eq!(l.revoke_expired().unwrap(), vec![a.id]);
}

#[test]
fn expiry_deletes_keys_and_advances_the_revision_once_per_lease() {
    let (l, clock, _dir) = manual();
    let a = l.grant(secs(1)).unwrap();
    let b = l.grant(secs(1)).unwrap();
    let c = l.grant(secs(1)).unwrap();
    l.put_with_lease("/a1", "", a.id).unwrap();
    l.put_with_lease("/a2", "", a.id).unwrap();
    l.put_with_lease("/b1", "", b.id).unwrap();
    let before = l.revision().unwrap().get();
    clock.advance(secs(1));
    assert_eq!(l.revoke_expired().unwrap(), vec![a.id, b.id, c.id]);
    assert!(l.range("").unwrap().is_empty());
    assert_eq!(l.revision().unwrap().get(), before + 2); // c had no keys
    l.verify().unwrap();
}

#[test]
fn large_bursts_are_revoked_in_bounded_batches_in_order() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .expiry_batch_size(7)
        .open(&dir.path)
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..50u64 {
        let lease = l.grant(secs(1 + i % 5)).unwrap();
        l.put_with_lease(format!("/k{i}"), "", lease.id).unwrap();
        expected.push((1 + i % 5, lease.id));
    }
    expected.sort();
    clock.advance(secs(10));
    let got = l.revoke_expired().unwrap();
    assert_eq!(
        got,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    assert!(l.range("").unwrap().is_empty());
    l.verify().unwrap();
}

#[test]
fn revoked_leases_leave_no_queue_entry_behind_that_matters() {
    // Revoke, then re-grant the same id: the old queue entry must not expire the new lease.
    let clock = ManualClock::new();
    let l = common::MemDisk::new().open(&clock).unwrap();
    l.grant_with_id(id(1), secs(5)).unwrap();
    l.revoke(id(1)).unwrap();
    l.grant_with_id(id(1), secs(20)).unwrap();
    clock.advance(secs(10));
    assert_eq!(l.revoke_expired().unwrap(), vec![]);
    assert_eq!(l.time_to_live(id(1)).unwrap().remaining, secs(10));
    // many revocations: the stale entries are compacted away and nothing else changes
    for _ in 0..3000 {
        let lease = l.grant(secs(100)).unwrap();
        l.revoke(lease.id).unwrap();
    }
    clock.advance(secs(10));
    assert_eq!(l.revoke_expired().unwrap(), vec![id(1)]);
}

#[test]
fn granting_an_expired_but_unrevoked_id_revokes_the_old_lease_first() {
    let (l, clock, _dir) = manual();
    l.grant_with_id(id(8), secs(1)).unwrap();
    l.put_with_lease("/old", "", id(8)).unwrap();
    clock.advance(secs(2));
    let lease = l.grant_with_id(id(8), secs(10)).unwrap();
    assert_eq!(
        lease.revision.get(),
        2,
        "the old lease's keys went at revision 2"
    );
    assert!(l.get("/old").unwrap().is_none());
    assert!(l.time_to_live_with_keys(id(8)).unwrap().keys.is_empty());
    assert_eq!(l.revoke_expired().unwrap(), vec![]);
    l.verify().unwrap();
}

#[test]
fn the_ticker_revokes_when_a_manual_clock_passes_a_deadline() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open(&dir.path)
        .unwrap();
    assert!(l.health().ticker_running);
    let lease = l.grant(secs(10)).unwrap();
    l.put_with_lease("/cron/lock/job1", "10001", lease.id)
        .unwrap();
    clock.advance(secs(9));
    assert!(l.get("/cron/lock/job1").unwrap().is_some());
    clock.advance(secs(1));
    assert!(wait_until(secs(10), || l
        .get("/cron/lock/job1")
        .unwrap()
        .is_none()));
    assert!(l.leases().unwrap().is_empty());
    l.verify().unwrap();
    l.close().unwrap();
    assert!(!l.health().ticker_running);
    assert_eq!(l.health().ticker_failures, 0);
}

#[test]
fn the_ticker_handles_many_deadlines_in_turn() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open(&dir.path)
        .unwrap();
    for s in 1..=5 {
        let lease = l.grant(secs(s)).unwrap();
        l.put_with_lease(format!("/k{s}"), "", lease.id).unwrap();
    }
    for s in 1..=5usize {
        clock.advance(secs(1));
        assert!(wait_until(secs(10), || l.range("/k").unwrap().len() == 5 - s));
    }
}

/// The one test on the real clock: a grant that creates an earlier deadline must wake a ticker
/// that sleeps until a much later one.
#[test]
fn real_clock_end_to_end_ticker_wakes_for_an_earlier_deadline() {
    let dir = test_dir();
    let l = Lessor::builder()
        .min_ttl(Duration::from_millis(1))
        .open(&dir.path)
        .unwrap();
    let long = l.grant(secs(3600)).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // let the ticker go to sleep on 1 h
    let short = l.grant(Duration::from_millis(50)).unwrap();
    l.put_with_lease("/short", "", short.id).unwrap();
    assert!(
        wait_until(secs(10), || l.get("/short").unwrap().is_none()),
        "the ticker did not wake for the earlier deadline"
    );
    assert_eq!(l.leases().unwrap(), vec![long.id]);
}
