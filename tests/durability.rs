//! Durability modes: what survives a power cut, group commit, batched flushing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{MemDisk, PowerDisk, secs, wait_until};
use lessor::{Durability, Error, LeaseId, Lessor, ManualClock};

fn open(disk: impl redb::StorageBackend, durability: Durability, ticker: bool) -> Lessor {
    Lessor::builder()
        .clock(ManualClock::new())
        .ticker(ticker)
        .durability(durability)
        .open_with_backend(disk)
        .unwrap()
}

fn batched(max_delay: Duration) -> Durability {
    Durability::Batched { max_delay }
}

fn reopen(disk: MemDisk) -> Lessor {
    open(disk, Durability::Immediate, false)
}

#[test]
fn immediate_every_acknowledged_grant_from_many_threads_survives_a_power_cut() {
    let disk = PowerDisk::new(Duration::from_millis(2));
    let l = open(disk.clone(), Durability::Immediate, false);
    let threads = 8;
    let per_thread = 25;
    let barrier = Arc::new(Barrier::new(threads));
    let acknowledged: Vec<LeaseId> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (l, barrier) = (l.clone(), Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    (0..per_thread)
                        .map(|_| l.grant(secs(60)).unwrap().id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let grants = (threads * per_thread) as u64;
    // Group commit: concurrent grants shared fsyncs.
    assert!(
        disk.syncs() < grants * 3 / 4,
        "{} fsyncs for {grants} grants",
        disk.syncs()
    );
    // Cut the power without closing: everything acknowledged is on disk.
    let after = reopen(disk.after_power_loss());
    let mut want = acknowledged;
    want.sort();
    assert_eq!(after.leases().unwrap(), want);
    after.verify().unwrap();
    std::mem::forget(l); // the "crashed" process never closes
}

#[test]
fn a_lone_writer_still_fsyncs_every_call() {
    let disk = PowerDisk::new(Duration::ZERO);
    let l = open(disk.clone(), Durability::Immediate, false);
    let before = disk.syncs();
    let lease = l.grant(secs(60)).unwrap();
    l.put_with_lease("/k", "v", lease.id).unwrap();
    assert!(disk.syncs() >= before + 2);
    let after = reopen(disk.after_power_loss());
    assert_eq!(after.get("/k").unwrap().unwrap().lease, Some(lease.id));
    std::mem::forget(l);
}

#[test]
fn failing_and_succeeding_writers_mixed_never_leave_a_waiter_behind() {
    // Writers whose transactions abort (unknown leases) interleave with ones that commit; an
    // aborted last writer must still make the fsync the others wait for.
    let disk = PowerDisk::new(Duration::from_millis(1));
    let l = open(disk.clone(), Durability::Immediate, false);
    let done = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|t| {
                let l = l.clone();
                s.spawn(move || {
                    let mut ok = 0;
                    for i in 0..30 {
                        if (t + i) % 2 == 0 {
                            l.grant(secs(60)).unwrap();
                            ok += 1;
                        } else {
                            let unknown = LeaseId::new(1_000_000 + i as u64).unwrap();
                            assert!(matches!(l.revoke(unknown), Err(Error::LeaseNotFound(_))));
                        }
                    }
                    ok
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    let after = reopen(disk.after_power_loss());
    assert_eq!(after.leases().unwrap().len(), done);
    std::mem::forget(l);
}

/// What a power cut left of "grant a lease, then put /k/0../k/9 on it": a prefix of those
/// calls, each whole. Returns how many of the 11 calls survived.
fn surviving_prefix(l: &Lessor, lease: LeaseId) -> usize {
    l.verify().unwrap();
    let keys: Vec<Vec<u8>> = l
        .range("/k/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let want: Vec<Vec<u8>> = (0..keys.len())
        .map(|i| format!("/k/{i}").into_bytes())
        .collect();
    assert_eq!(
        keys, want,
        "the keys that survived are not a prefix of the puts"
    );
    if l.leases().unwrap().is_empty() {
        assert!(keys.is_empty());
        0
    } else {
        assert_eq!(l.leases().unwrap(), vec![lease]);
        1 + keys.len()
    }
}

#[test]
fn batched_calls_return_before_the_fsync_and_sync_makes_them_durable() {
    let disk = PowerDisk::new(Duration::ZERO);
    let l = open(disk.clone(), batched(Duration::from_secs(3600)), false);
    let before = disk.syncs();
    let lease = l.grant(secs(60)).unwrap();
    for i in 0..10 {
        l.put_with_lease(format!("/k/{i}"), "v", lease.id).unwrap();
    }
    // No fsync per call (redb may still sync when it grows the file).
    assert!(
        disk.syncs() - before < 5,
        "{} fsyncs",
        disk.syncs() - before
    );
    // A power cut now may lose any suffix of the calls, but never part of one.
    let cut = reopen(disk.after_power_loss());
    surviving_prefix(&cut, lease.id);
    cut.close().unwrap();

    l.sync().unwrap();
    let kept = reopen(disk.after_power_loss());
    assert_eq!(surviving_prefix(&kept, lease.id), 11);
    kept.close().unwrap();

    // A revocation is all or nothing across a power cut: lost whole, or kept whole.
    l.revoke(lease.id).unwrap();
    let cut = reopen(disk.after_power_loss());
    let left = surviving_prefix(&cut, lease.id);
    assert!(left == 11 || left == 0, "{left}");
    cut.close().unwrap();
    l.sync().unwrap();
    let after_flush = reopen(disk.after_power_loss());
    assert!(after_flush.leases().unwrap().is_empty() && after_flush.range("").unwrap().is_empty());
    std::mem::forget(l);
}

#[test]
fn batched_writes_are_flushed_by_the_ticker_within_max_delay_once_writes_stop() {
    let disk = PowerDisk::new(Duration::ZERO);
    let l = open(disk.clone(), batched(Duration::from_millis(20)), true);
    let before = disk.syncs();
    let lease = l.grant(secs(60)).unwrap();
    assert!(wait_until(secs(10), || disk.syncs() > before));
    assert_eq!(
        reopen(disk.after_power_loss()).leases().unwrap(),
        vec![lease.id]
    );
    std::mem::forget(l);
}

#[test]
fn batched_writes_going_on_are_flushed_by_the_writers_every_max_delay() {
    let disk = PowerDisk::new(Duration::ZERO);
    // No ticker: only writers flush.
    let l = open(disk.clone(), batched(Duration::from_millis(5)), false);
    let before = disk.syncs();
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(60) {
        l.grant(secs(60)).unwrap();
        n += 1;
    }
    let syncs = disk.syncs() - before;
    assert!(syncs >= 2, "{syncs} fsyncs in 60 ms of writes");
    assert!(syncs < n, "{syncs} fsyncs for {n} grants");
    std::mem::forget(l);
}

#[test]
fn closing_flushes_batched_writes() {
    let disk = PowerDisk::new(Duration::ZERO);
    let l = open(disk.clone(), batched(Duration::from_secs(3600)), false);
    let lease = l.grant(secs(60)).unwrap();
    l.close().unwrap();
    assert_eq!(
        reopen(disk.after_power_loss()).leases().unwrap(),
        vec![lease.id]
    );
}

#[test]
fn sync_with_nothing_to_flush_does_no_io_and_fails_once_closed() {
    let disk = PowerDisk::new(Duration::ZERO);
    let l = open(disk.clone(), Durability::Immediate, false);
    l.grant(secs(60)).unwrap();
    let before = disk.syncs();
    l.sync().unwrap();
    assert_eq!(disk.syncs(), before);
    l.close().unwrap();
    assert!(matches!(l.sync(), Err(Error::Closed)));
}

#[test]
fn an_expiry_backlog_is_revoked_in_batches_with_one_fsync_and_nothing_due_writes_nothing() {
    let disk = PowerDisk::new(Duration::ZERO);
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .expiry_batch_size(10)
        .open_with_backend(disk.clone())
        .unwrap();
    for i in 0..55 {
        let lease = l.grant(secs(1)).unwrap();
        l.put_with_lease(format!("/k/{i:02}"), "v", lease.id)
            .unwrap();
    }
    // Nothing due: no transaction, no fsync.
    let before = disk.syncs();
    assert!(l.revoke_expired().unwrap().is_empty());
    assert_eq!(disk.syncs(), before);
    // Six batches, but the backlog is made durable once, before revoke_expired returns.
    clock.advance(secs(2));
    assert_eq!(l.revoke_expired().unwrap().len(), 55);
    assert!(
        disk.syncs() - before <= 2,
        "{} fsyncs",
        disk.syncs() - before
    );
    let after = reopen(disk.after_power_loss());
    assert!(after.leases().unwrap().is_empty() && after.range("").unwrap().is_empty());
    std::mem::forget(l);
}
