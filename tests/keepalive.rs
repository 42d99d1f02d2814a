//! Keep-alives: renewal on schedule, the latest-response channel, every way a keep-alive ends,
//! revoke-on-drop, close, and 10,000 (or, ignored by default, 100,000) at once. Time moves only
//! by a manual clock; tests wait (boundedly) only for the keep-alive thread to act.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{MemDisk, id, secs, test_dir, wait_until};
use crossbeam_channel::RecvTimeoutError;
use lessor::{
    EndReason, Error, KeepAlive, KeepAliveOptions, KeepAliveResponse, Lessor, ManualClock,
};

/// How long a test waits for the keep-alive thread to act; never reached when all is well.
const PATIENCE: Duration = Duration::from_secs(20);

/// An in-memory lessor on a manual clock, without a ticker.
fn lessor() -> (Lessor, ManualClock) {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    (l, clock)
}

fn response(id: lessor::LeaseId, ttl: Duration) -> KeepAliveResponse {
    KeepAliveResponse { id, ttl }
}

/// The next response, waiting for the thread to renew.
fn next_response(ka: &KeepAlive) -> KeepAliveResponse {
    ka.responses()
        .recv_timeout(PATIENCE)
        .expect("the keep-alive thread renews")
}

/// Waits for the keep-alive to end and returns why.
fn wait_ended(ka: &KeepAlive) -> Option<EndReason> {
    wait_until(PATIENCE, || ka.ended().is_some());
    ka.ended()
}

/// Drains the channel and checks it disconnects (without any clock movement).
fn assert_disconnects(ka: &KeepAlive) {
    loop {
        match ka.responses().recv_timeout(PATIENCE) {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => panic!("the responses channel stayed open"),
        }
    }
}

fn remaining(l: &Lessor, lease: lessor::LeaseId) -> Option<Duration> {
    l.time_to_live(lease).ok().map(|info| info.remaining)
}

#[test]
fn renews_every_third_of_the_ttl() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let unkept = l.grant(secs(9)).unwrap();
    l.put_with_lease("/kept", "1", lease.id).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    assert_eq!(ka.id(), lease.id);
    // renewed once before returning: the first response is already there
    assert_eq!(ka.responses().try_recv(), Ok(response(lease.id, secs(9))));
    for _ in 0..12 {
        clock.advance(secs(3));
        assert_eq!(next_response(&ka), response(lease.id, secs(9)));
        assert_eq!(remaining(&l, lease.id), Some(secs(9))); // renewed at the current time
    }
    // 36 s, four TTLs: alive and kept, while the lease nobody renewed is long gone
    assert_eq!(ka.ended(), None);
    assert_eq!(l.revoke_expired().unwrap(), vec![unkept.id]);
    assert!(l.get("/kept").unwrap().is_some());
}

#[test]
fn a_custom_interval_is_used_and_one_not_shorter_than_the_ttl_is_refused() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let every = |d| KeepAliveOptions::new().interval(d);
    let ka = l.keep_alive_with(lease.id, every(secs(1))).unwrap();
    ka.responses().try_recv().unwrap();
    for _ in 0..3 {
        clock.advance(secs(1));
        next_response(&ka);
        assert_eq!(remaining(&l, lease.id), Some(secs(9)));
    }
    for too_long in [secs(9), secs(10)] {
        assert!(matches!(
            l.keep_alive_with(lease.id, every(too_long)),
            Err(Error::InvalidConfig(_))
        ));
    }
    // zero is raised to the 1 ms floor, not refused
    let fast = l.keep_alive_with(lease.id, every(Duration::ZERO)).unwrap();
    clock.advance(Duration::from_millis(1));
    next_response(&fast);
}

#[test]
fn a_consumer_that_never_reads_never_blocks_renewal_and_holds_only_the_latest() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    for _ in 0..12 {
        clock.advance(secs(3));
        assert!(wait_until(PATIENCE, || remaining(&l, lease.id) == Some(secs(9))));
        assert_eq!(ka.responses().len(), 1);
    }
    assert_eq!(ka.responses().try_iter().count(), 1);
    assert_eq!(ka.ended(), None);
}

/// Renews once at 3 s (deadline 12 s), then stops with `stop`; checks that nothing renews it
/// again and that it expires at 12 s, not revoked before.
fn stopping_does_not_revoke(stop: impl FnOnce(KeepAlive) -> Option<EndReason>) {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    l.put_with_lease("/job", "1", lease.id).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    ka.responses().try_recv().unwrap(); // the first renewal's
    clock.advance(secs(3));
    next_response(&ka);
    assert_eq!(stop(ka), Some(EndReason::Cancelled));
    assert_eq!(remaining(&l, lease.id), Some(secs(9)));
    clock.advance(secs(3));
    assert_eq!(remaining(&l, lease.id), Some(secs(6))); // nobody renewed it
    clock.advance(secs(6) - Duration::from_nanos(1));
    assert_eq!(remaining(&l, lease.id), Some(Duration::from_nanos(1)));
    clock.advance(Duration::from_nanos(1)); // 12 s: one TTL after the last renewal
    assert!(matches!(l.renew(lease.id), Err(Error::LeaseNotFound(_))));
    assert!(l.get("/job").unwrap().is_some()); // expired, not revoked: no ticker here
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert!(l.get("/job").unwrap().is_none());
}

#[test]
fn cancel_stops_renewing_without_revoking() {
    stopping_does_not_revoke(|ka| {
        ka.cancel();
        ka.cancel(); // again: nothing more
        assert_disconnects(&ka);
        ka.ended()
    });
}

#[test]
fn dropping_the_handle_stops_renewing_without_revoking() {
    stopping_does_not_revoke(|ka| {
        let responses = ka.responses().clone();
        drop(ka);
        assert!(responses.iter().count() <= 1); // drained, then disconnected
        Some(EndReason::Cancelled)
    });
}

#[test]
fn run_for_finishes_and_the_lease_lives_run_for_plus_ttl() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(10)).unwrap();
    l.put_with_lease("/cron/lock/job1", "10001", lease.id)
        .unwrap();
    let opts = KeepAliveOptions::new().run_for(secs(5));
    let ka = l.keep_alive_with(lease.id, opts).unwrap();
    ka.responses().try_recv().unwrap();
    let step = secs(10) / 3;
    clock.advance(step); // 3.33 s: a renewal
    next_response(&ka);
    assert_eq!(ka.ended(), None);
    clock.advance(step); // 6.67 s: past the 5 s limit: a last renewal as of 5 s, and done
    assert_eq!(wait_ended(&ka), Some(EndReason::Finished));
    assert_disconnects(&ka);
    // 5 s + 10 s = 15 s in all, however late the thread woke
    assert_eq!(remaining(&l, lease.id), Some(secs(15) - step * 2));
    clock.advance(secs(15) - step * 2 - Duration::from_nanos(1));
    assert!(l.time_to_live(lease.id).is_ok());
    clock.advance(Duration::from_nanos(1));
    assert!(l.time_to_live(lease.id).is_err());
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert!(l.get("/cron/lock/job1").unwrap().is_none());
}

#[test]
fn keep_alive_until_stops_at_that_instant_on_the_lessor_clock() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(10)).unwrap();
    let ka = l
        .keep_alive_until(lease.id, Instant::now() + secs(5))
        .unwrap();
    ka.responses().try_recv().unwrap();
    let step = secs(10) / 3;
    clock.advance(step);
    next_response(&ka);
    clock.advance(step);
    assert_eq!(wait_ended(&ka), Some(EndReason::Finished));
    // `until` was turned into a time on the manual clock a little under 5 s
    clock.advance(secs(14) - step * 2);
    assert!(l.time_to_live(lease.id).is_ok());
    clock.advance(secs(1));
    assert!(l.time_to_live(lease.id).is_err());
}

#[test]
fn a_run_for_already_over_renews_once_and_finishes() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(10)).unwrap();
    let ka = l.keep_alive_until(lease.id, Instant::now()).unwrap();
    assert_eq!(wait_ended(&ka), Some(EndReason::Finished));
    assert_eq!(ka.responses().iter().count(), 1);
    clock.advance(secs(10));
    assert!(l.time_to_live(lease.id).is_err());
}

#[test]
fn revoking_the_lease_ends_its_keep_alives_at_once() {
    let (l, _clock) = lessor();
    let lease = l.grant(secs(10)).unwrap();
    let other = l.grant(secs(10)).unwrap();
    let a = l.keep_alive(lease.id).unwrap();
    let b = l.keep_alive(lease.id).unwrap();
    let c = l.keep_alive(other.id).unwrap();
    l.revoke(lease.id).unwrap();
    // told by the revocation itself, before the next renewal is due
    assert_eq!(a.ended(), Some(EndReason::Revoked));
    assert_eq!(b.ended(), Some(EndReason::Revoked));
    assert_disconnects(&a);
    assert_disconnects(&b);
    assert_eq!(c.ended(), None);
    assert!(matches!(
        l.keep_alive(lease.id),
        Err(Error::LeaseNotFound(x)) if x == lease.id
    ));
}

#[test]
fn expiry_without_a_ticker_ends_keep_alives_with_expired() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    clock.advance(secs(30)); // a jump past the deadline: the renewal comes too late
    assert_eq!(wait_ended(&ka), Some(EndReason::Expired));
    assert_disconnects(&ka);
    // nothing revoked it: it is expired, and still in the file until revoke_expired
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
}

#[test]
fn revoke_expired_ends_keep_alives_with_expired() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    clock.advance(secs(30));
    // races the keep-alive thread: whichever tells first, the cause is expiry
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert_eq!(wait_ended(&ka), Some(EndReason::Expired));
    assert_disconnects(&ka);
}

#[test]
fn the_ticker_expiring_a_lease_ends_its_keep_alive_with_expired() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open_in_memory()
        .unwrap();
    let lease = l.grant(secs(9)).unwrap();
    l.put_with_lease("/k", "v", lease.id).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    clock.advance(secs(30));
    assert_eq!(wait_ended(&ka), Some(EndReason::Expired));
    assert!(wait_until(PATIENCE, || l.get("/k").unwrap().is_none()));
}

#[test]
fn replacing_an_expired_lease_with_grant_with_id_ends_its_keep_alive_with_expired() {
    let (l, clock) = lessor();
    l.grant_with_id(id(7), secs(9)).unwrap();
    let ka = l.keep_alive(id(7)).unwrap();
    clock.advance(secs(30));
    l.grant_with_id(id(7), secs(9)).unwrap();
    assert_eq!(wait_ended(&ka), Some(EndReason::Expired));
    // the new lease under that id is not touched by the old keep-alive
    clock.advance(secs(3));
    assert_eq!(remaining(&l, id(7)), Some(secs(6)));
}

#[test]
fn revoke_on_drop_revokes_on_drop_and_on_cancel() {
    let (l, clock) = lessor();
    let opts = KeepAliveOptions::new().revoke_on_drop(true);

    let dropped = l.grant(secs(10)).unwrap();
    l.put_with_lease("/dropped", "", dropped.id).unwrap();
    drop(l.keep_alive_with(dropped.id, opts).unwrap());
    assert!(l.time_to_live(dropped.id).is_err());
    assert!(l.get("/dropped").unwrap().is_none());

    let cancelled = l.grant(secs(10)).unwrap();
    l.put_with_lease("/cancelled", "", cancelled.id).unwrap();
    let ka = l.keep_alive_with(cancelled.id, opts).unwrap();
    ka.cancel();
    assert_eq!(ka.ended(), Some(EndReason::Cancelled));
    assert!(l.get("/cancelled").unwrap().is_none());
    let rev = l.revision().unwrap();
    ka.cancel();
    drop(ka); // revoked once only
    assert_eq!(l.revision().unwrap(), rev);

    // a keep-alive that finished leaves a live lease: dropping the handle revokes it
    let finished = l.grant(secs(10)).unwrap();
    let ka = l
        .keep_alive_with(finished.id, opts.run_for(secs(1)))
        .unwrap();
    clock.advance(secs(1));
    assert_eq!(wait_ended(&ka), Some(EndReason::Finished));
    assert!(l.time_to_live(finished.id).is_ok());
    drop(ka);
    assert!(l.time_to_live(finished.id).is_err());

    // ... but one that ended with its lease revokes nothing (the id may be granted again)
    let revoked = l.grant(secs(10)).unwrap();
    let ka = l.keep_alive_with(revoked.id, opts).unwrap();
    l.revoke(revoked.id).unwrap();
    l.grant_with_id(revoked.id, secs(10)).unwrap();
    drop(ka);
    assert!(l.time_to_live(revoked.id).is_ok());
}

#[test]
fn closing_ends_keep_alives_with_closed_and_handles_may_outlive_the_lessor() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let open = || {
        Lessor::builder()
            .clock(clock.clone())
            .open(&dir.path)
            .unwrap()
    };
    let l = open();
    let lease = l.grant(secs(10)).unwrap();
    let opts = KeepAliveOptions::new().revoke_on_drop(true);
    let ka = l.keep_alive_with(lease.id, opts).unwrap();
    l.close().unwrap();
    assert_eq!(ka.ended(), Some(EndReason::Closed));
    assert_disconnects(&ka);
    assert!(matches!(l.keep_alive(lease.id), Err(Error::Closed)));
    ka.cancel(); // harmless, and revokes nothing
    drop(l);
    // the handle did not keep the file open; the lease is back with a full TTL
    let l = open();
    assert_eq!(remaining(&l, lease.id), Some(secs(10)));
    drop(ka);
    assert_eq!(remaining(&l, lease.id), Some(secs(10)));
}

#[test]
fn dropping_the_last_lessor_ends_keep_alives_with_closed() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let clone = l.clone();
    let ka = l.keep_alive(lease.id).unwrap();
    ka.responses().try_recv().unwrap();
    drop(l);
    clock.advance(secs(3));
    next_response(&ka); // a clone still holds it open
    drop(clone);
    assert_eq!(ka.ended(), Some(EndReason::Closed));
    assert_disconnects(&ka);
    clock.advance(secs(3)); // nothing left to wake
}

#[test]
fn keep_alives_renew_through_a_storage_failure_and_the_reload() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    disk.fail_syncs(true);
    assert!(matches!(l.put("/k", "v"), Err(Error::Storage(_))));
    // A keep-alive can even start meanwhile: it renews in memory, like `renew`.
    drop(l.keep_alive(lease.id).unwrap());
    // Renewals go on in memory while the lessor waits to reload: the lease outlives its TTL.
    for _ in 0..6 {
        clock.advance(secs(3));
        next_response(&ka);
    }
    disk.fail_syncs(false);
    l.recover().unwrap();
    assert_eq!(ka.ended(), None);
    assert!(l.time_to_live(lease.id).unwrap().remaining > secs(5));
    clock.advance(secs(3));
    next_response(&ka);
}

#[test]
fn keep_alive_of_a_lease_that_is_not_alive_is_lease_not_found() {
    let (l, clock) = lessor();
    assert!(matches!(l.keep_alive(id(42)), Err(Error::LeaseNotFound(x)) if x == id(42)));
    let revoked = l.grant(secs(10)).unwrap();
    l.revoke(revoked.id).unwrap();
    assert!(matches!(
        l.keep_alive(revoked.id),
        Err(Error::LeaseNotFound(_))
    ));
    let expired = l.grant(secs(10)).unwrap();
    clock.advance(secs(10));
    assert!(matches!(
        l.keep_alive_until(expired.id, Instant::now() + secs(5)),
        Err(Error::LeaseNotFound(_))
    ));
}

#[test]
fn keep_alives_survive_concurrent_starts_cancels_revocations_and_clock_jumps() {
    let (l, clock) = lessor();
    let leases: Vec<_> = (0..64).map(|_| l.grant(secs(9)).unwrap().id).collect();
    let leases = Arc::new(leases);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (l, leases) = (l.clone(), Arc::clone(&leases));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for round in 0..200usize {
                    let lease = leases[(round * 7 + w) % leases.len()];
                    if let Ok(ka) = l.keep_alive(lease) {
                        held.push(ka);
                    }
                    if round % 3 == 0 && !held.is_empty() {
                        held.swap_remove(0).cancel();
                    }
                    if w == 0 && round % 50 == 49 {
                        let _ = l.revoke(lease);
                    }
                }
                held
            })
        })
        .collect();
    for _ in 0..20 {
        clock.advance(Duration::from_millis(500));
        std::thread::yield_now();
    }
    let held: Vec<KeepAlive> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // leases nobody kept alive expired (10 s passed, TTL 9 s); some were revoked
    for ka in &held {
        assert!(
            matches!(
                ka.ended(),
                None | Some(EndReason::Revoked | EndReason::Expired)
            ),
            "{ka:?}"
        );
    }
    l.close().unwrap();
    assert!(held.iter().all(|ka| ka.ended().is_some()));
}

/// Resident memory of this process in KiB (Linux), for the report of the large test.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 100,000 leases kept alive at once while the clock moves through four TTLs in interval steps:
/// every lease stays alive and every handle gets a fresh response at every step. About 10 s in
/// a debug build on the 2-core VM, most of it granting (one commit per lease).
#[test]
fn a_hundred_thousand_keep_alives() {
    const N: usize = 100_000;
    let started = Instant::now();
    let (l, clock) = lessor();
    let ttl = secs(30);
    let leases: Vec<_> = (0..N).map(|_| l.grant(ttl).unwrap().id).collect();
    let granted = started.elapsed();
    let rss_before = rss_kib();
    let kas: Vec<KeepAlive> = leases.iter().map(|&id| l.keep_alive(id).unwrap()).collect();
    let kept = started.elapsed() - granted;
    let rss_after = rss_kib();
    for ka in &kas {
        assert_eq!(ka.responses().try_recv().unwrap().ttl, ttl);
    }
    let ticks = Instant::now();
    for _ in 0..12 {
        clock.advance(ttl / 3);
        for ka in &kas {
            assert_eq!(next_response(ka).ttl, ttl);
        }
    }
    let ticks = ticks.elapsed();
    assert_eq!(l.leases().unwrap().len(), N);
    assert!(l.revoke_expired().unwrap().is_empty());
    assert!(kas.iter().all(|ka| ka.ended().is_none()));
    drop(kas);
    let per_handle = rss_before
        .zip(rss_after)
        .map(|(b, a)| format!("{} bytes", a.saturating_sub(b) * 1024 / N as u64));
    eprintln!(
        "{N} keep-alives: grants {:.1} s, keep_alive calls {:.2} s, 12 ticks {:.2} s, \
         {:.1} s in all; memory per keep-alive {per_handle:?}",
        granted.as_secs_f64(),
        kept.as_secs_f64(),
        ticks.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn deadline_is_the_lease_deadline_on_the_lessor_clock_and_none_once_it_ended() {
    let (l, clock) = lessor();
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    // The manual clock stands still: the deadline is 9 s from the call, mapped to an Instant.
    let (before, d, after) = (Instant::now(), ka.deadline().unwrap(), Instant::now());
    assert!(before + secs(9) <= d && d <= after + secs(9), "{d:?}");
    // 5 s on the lessor's clock (a renewal on the way): 4 s left, then 9 again once renewed.
    assert_eq!(next_response(&ka), response(lease.id, secs(9))); // the first renewal's
    clock.advance(secs(5));
    next_response(&ka);
    let (before, d, after) = (Instant::now(), ka.deadline().unwrap(), Instant::now());
    assert!(before + secs(9) <= d && d <= after + secs(9), "{d:?}");
    // Cancelled: the lease lives on until its deadline, which the handle still gives.
    ka.cancel();
    assert!(ka.deadline().is_some());
    // Ended as expired or revoked: no deadline.
    let ka = l.keep_alive(lease.id).unwrap();
    clock.advance(secs(30));
    assert_eq!(wait_ended(&ka), Some(EndReason::Expired));
    assert_eq!(ka.deadline(), None);
}
