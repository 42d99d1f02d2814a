//! Injected I/O faults: every mutating operation, with a fault at each of its I/O calls of each
//! kind (read, write, set_len, sync_data); group commit, batched mode and the ticker under
//! faults; and recovery (`Lessor::recover`, or the ticker by itself) once the fault clears.
//!
//! For every (operation, I/O kind, call number): the operation either succeeds, and its effect
//! is there, or fails with a storage error, and once the lessor has reloaded from the file its
//! effect is not there while everything committed before is; in both cases `verify` finds
//! memory and file in agreement and the lessor takes writes again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::faults::{FaultDisk, Io};
use common::{id, secs, wait_until};
use lessor::{
    Compare, Durability, EndReason, Error, KeepAliveOptions, LeaseId, Lessor, ManualClock, Op,
    WatchEnd,
};

/// What a lessor holds, as seen through the public API: each live lease's TTL and keys, and
/// every key's value and lease.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    leases: BTreeMap<u64, (Duration, BTreeSet<Vec<u8>>)>,
    keys: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>,
}

fn state(l: &Lessor) -> State {
    let mut leases = BTreeMap::new();
    for lid in l.leases() {
        let info = l.time_to_live(lid).unwrap();
        leases.insert(
            lid.get(),
            (info.granted_ttl, info.keys.into_iter().collect()),
        );
    }
    let keys = l
        .range("")
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.lease.map(LeaseId::get))))
        .collect();
    State { leases, keys }
}

/// The baseline every case starts from: lease 1 (60 s) with `/a/1` and `/a/2`, lease 2 (5 s)
/// with `/b/1`, lease 3 (60 s) with no keys, and `/plain` on no lease.
fn baseline(disk: &FaultDisk, clock: &ManualClock) -> Lessor {
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_with_backend(disk.clone())
        .unwrap();
    let a = l.grant(secs(60)).unwrap().id;
    let b = l.grant(secs(5)).unwrap().id;
    l.grant(secs(60)).unwrap();
    l.put_with_lease("/a/1", "1", a).unwrap();
    l.put_with_lease("/a/2", "2", a).unwrap();
    l.put_with_lease("/b/1", "1", b).unwrap();
    l.put("/plain", "p").unwrap();
    // Reopened, so that redb's cache is cold and the operation reads from the disk too.
    l.close().unwrap();
    open(disk, clock, Durability::Immediate)
}

type Operation = fn(&Lessor, &ManualClock) -> lessor::Result<()>;

/// Every mutating operation, on the baseline.
fn operations() -> Vec<(&'static str, Operation)> {
    vec![
        ("grant", |l, _| l.grant(secs(30)).map(drop)),
        ("grant_with_id", |l, _| {
            l.grant_with_id(id(100), secs(30)).map(drop)
        }),
        ("revoke", |l, _| l.revoke(id(1)).map(drop)),
        ("put", |l, _| l.put("/new", "x").map(drop)),
        ("overwrite", |l, _| l.put("/plain", "q").map(drop)),
        ("put_with_lease", |l, _| {
            l.put_with_lease("/a/3", "3", id(1)).map(drop)
        }),
        ("delete", |l, _| l.delete("/a/1").map(drop)),
        ("attach", |l, _| l.attach(id(3), ["/plain"])),
        ("detach", |l, _| l.detach(id(1), ["/a/2"])),
        ("txn", |l, _| {
            l.txn()
                .when(Compare::exists("/plain"))
                .then(Op::put("/t", "t"))
                .then(Op::delete("/a/1"))
                .commit()
                .map(drop)
        }),
        ("put_large", |l, _| {
            // Grows the file: set_len.
            l.put_with_lease("/large", vec![9u8; 1 << 20], id(3))
                .map(drop)
        }),
        ("get", |l, _| l.get("/a/1").map(drop)),
        ("range", |l, _| l.range("/").map(drop)),
        ("time_to_live", |l, _| l.time_to_live(id(1)).map(drop)),
        ("expiry", |l, clock| {
            clock.advance(secs(10));
            l.revoke_expired().map(drop)
        }),
    ]
}

/// The errors a fault may surface as.
fn is_storage_failure(e: &Error) -> bool {
    matches!(e, Error::Storage(_) | Error::Poisoned)
}

#[test]
fn every_operation_survives_a_fault_at_each_of_its_io_calls() {
    let mut report = Vec::new();
    let mut cases = 0;
    for (name, op) in operations() {
        // A clean run: how many calls of each kind the operation makes, and what it leaves.
        let disk = FaultDisk::new();
        let clock = ManualClock::new();
        let l = baseline(&disk, &clock);
        let before = state(&l);
        let counts: Vec<u64> = Io::ALL.iter().map(|&io| disk.calls(io)).collect();
        op(&l, &clock).unwrap();
        let after = state(&l);
        let read_only = matches!(name, "get" | "range" | "time_to_live");
        assert_eq!(read_only, before == after, "{name}");
        let made: Vec<u64> = Io::ALL
            .iter()
            .zip(&counts)
            .map(|(&io, &c)| disk.calls(io) - c)
            .collect();
        l.close().unwrap();
        report.push(format!("{name}: {made:?}"));

        for (io, &n) in Io::ALL.iter().zip(&made) {
            for nth in 0..n {
                cases += 1;
                let case = format!("{name}, {io:?} call {nth} of {n}");
                let disk = FaultDisk::new();
                let clock = ManualClock::new();
                let l = baseline(&disk, &clock);
                disk.fail_nth(*io, nth);
                let result = op(&l, &clock);
                disk.heal();
                match &result {
                    Ok(()) => {}
                    Err(e) => assert!(is_storage_failure(e), "{case}: {e:?}"),
                }
                if result.is_err() {
                    assert!(l.health().poisoned, "{case}: failed but not poisoned");
                    assert!(
                        matches!(l.get("/plain"), Err(Error::Poisoned)),
                        "{case}: a poisoned lessor must refuse calls"
                    );
                }
                l.recover()
                    .unwrap_or_else(|e| panic!("{case}: recover: {e}"));
                assert!(!l.health().poisoned, "{case}");
                if name == "expiry" {
                    // Expired is expired: a failed expiry is retried, not undone.
                    l.revoke_expired().unwrap();
                    assert_eq!(state(&l), after, "{case}");
                } else if result.is_ok() {
                    assert_eq!(
                        state(&l),
                        after,
                        "{case}: succeeded, so its effect is there"
                    );
                } else {
                    assert_eq!(state(&l), before, "{case}: failed, so no effect");
                }
                l.verify().unwrap_or_else(|e| panic!("{case}: {e}"));
                // Writes work again, and the whole thing survives a reopen.
                let lease = l.grant(secs(60)).unwrap();
                l.put_with_lease("/again", "x", lease.id).unwrap();
                let expected = state(&l);
                // Everything acknowledged is durable: a power cut now loses none of it.
                let survivor = disk.after_power_loss();
                l.close().unwrap();
                let l = open(&survivor, &clock, Durability::Immediate);
                assert_eq!(state(&l), expected, "{case}: after a power cut");
                l.verify().unwrap();
                l.close().unwrap();
            }
        }
    }
    eprintln!(
        "{cases} faults injected; I/O calls per operation [read, write, set_len, sync]:\n  {}",
        report.join("\n  ")
    );
    assert!(cases >= 30, "too few I/O points: {report:?}");
}

#[test]
fn renew_touches_no_disk() {
    let disk = FaultDisk::new();
    let clock = ManualClock::new();
    let l = baseline(&disk, &clock);
    for io in Io::ALL {
        disk.fail_always(io);
    }
    for _ in 0..100 {
        l.renew(id(1)).unwrap();
    }
    assert_eq!(disk.injected(), 0);
}

/// Opens a lessor on `disk` with `clock`, no ticker, `durability`.
fn open(disk: &FaultDisk, clock: &ManualClock, durability: Durability) -> Lessor {
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .durability(durability)
        .open_with_backend(disk.clone())
        .unwrap()
}

#[test]
fn a_failed_group_fsync_fails_exactly_the_grants_it_covered() {
    for round in 0..20 {
        let disk = FaultDisk::new();
        let clock = ManualClock::new();
        let l = open(&disk, &clock, Durability::Immediate);
        let before = state(&l);
        disk.fail_nth(Io::Sync, 3 + round % 5);
        let results: Vec<Vec<(LeaseId, bool)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u64)
                .map(|t| {
                    let l = l.clone();
                    s.spawn(move || {
                        (0..10u64)
                            .map(|i| {
                                let want = id(1 + t * 100 + i);
                                match l.grant_with_id(want, secs(60)) {
                                    Ok(_) => (want, true),
                                    Err(e) => {
                                        assert!(is_storage_failure(&e), "{e:?}");
                                        (want, false)
                                    }
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        l.recover().unwrap();
        let alive: BTreeSet<LeaseId> = l.leases().into_iter().collect();
        let mut failed = 0;
        for (lid, ok) in results.iter().flatten() {
            if *ok {
                assert!(
                    alive.contains(lid),
                    "round {round}: acknowledged {lid} lost"
                );
            } else {
                failed += 1;
                assert!(!alive.contains(lid), "round {round}: failed {lid} is there");
            }
        }
        assert!(failed > 0, "round {round}: the fault hit nothing");
        assert_eq!(before.keys, state(&l).keys);
        l.verify().unwrap();
        l.close().unwrap();
        // A power cut now keeps exactly what the lessor holds.
        let l = open(&disk.after_power_loss(), &clock, Durability::Immediate);
        assert_eq!(l.leases().into_iter().collect::<BTreeSet<_>>(), alive);
        l.close().unwrap();
    }
}

#[test]
fn a_failed_batched_flush_loses_what_was_not_durable_and_ends_its_keep_alives() {
    let disk = FaultDisk::new();
    let clock = ManualClock::new();
    let l = open(
        &disk,
        &clock,
        Durability::Batched {
            max_delay: Duration::from_secs(3600),
        },
    );
    let durable = l.grant(secs(60)).unwrap().id;
    l.put_with_lease("/durable", "d", durable).unwrap();
    l.sync().unwrap();
    let events = l.subscribe().unwrap();
    let watch = l.watch("").unwrap();
    let lost = l.grant(secs(60)).unwrap().id;
    l.put_with_lease("/lost", "l", lost).unwrap();
    let ka = l
        .keep_alive_with(
            lost,
            KeepAliveOptions::new().interval(Duration::from_millis(5)),
        )
        .unwrap();
    let kept = l
        .keep_alive_with(
            durable,
            KeepAliveOptions::new().interval(Duration::from_millis(5)),
        )
        .unwrap();
    disk.fail_nth(Io::Sync, 0);
    assert!(matches!(l.sync(), Err(Error::Storage(_))));
    assert!(matches!(l.put("/x", "x"), Err(Error::Poisoned)));
    assert!(l.health().poisoned);
    // Subscriptions and watches end, saying why.
    assert!(events.iter().count() >= 1);
    while watch.recv().is_ok() {}
    assert_eq!(watch.ended(), Some(WatchEnd::StorageFailed));

    l.recover().unwrap();
    let h = l.health();
    assert!(
        !h.poisoned && h.storage_failures == 1 && h.reloads == 1,
        "{h:?}"
    );
    assert_eq!(l.leases(), vec![durable]);
    assert_eq!(l.get("/lost").unwrap(), None);
    assert_eq!(l.get("/durable").unwrap().unwrap().value, b"d");
    assert!(wait_until(Duration::from_secs(5), || ka.ended().is_some()));
    assert_eq!(ka.ended(), Some(EndReason::Lost));
    assert_eq!(
        kept.ended(),
        None,
        "a lease that survived keeps its keep-alive"
    );
    // The auto id of the lost lease is not issued again.
    assert!(l.grant(secs(60)).unwrap().id > lost);
    // New watches and subscriptions work.
    let watch = l.watch("/w").unwrap();
    l.put("/w", "1").unwrap();
    assert!(watch.recv().is_ok());
    l.verify().unwrap();
    l.close().unwrap();
}

#[test]
fn calls_refuse_while_poisoned_and_recover_fails_while_the_fault_lasts() {
    let disk = FaultDisk::new();
    let clock = ManualClock::new();
    let l = baseline(&disk, &clock);
    let before = state(&l);
    disk.fail_always(Io::Write);
    assert!(matches!(l.put("/x", "x"), Err(Error::Storage(_))));
    for call in [
        l.grant(secs(10)).map(drop),
        l.renew(id(1)).map(drop),
        l.get("/plain").map(drop),
        l.revoke(id(1)).map(drop),
        l.subscribe().map(drop),
    ] {
        assert!(matches!(call, Err(Error::Poisoned)), "{call:?}");
    }
    // Reopening needs writes (redb repairs the file): it fails, and stays poisoned.
    for _ in 0..3 {
        assert!(l.recover().is_err());
        assert!(l.health().poisoned);
    }
    disk.heal();
    l.recover().unwrap();
    assert_eq!(state(&l), before);
    l.verify().unwrap();
    // A second recover has nothing to do.
    l.recover().unwrap();
    assert_eq!(l.health().reloads, 1);
    l.close().unwrap();
    assert!(matches!(l.recover(), Err(Error::Closed)));
}

#[test]
fn the_ticker_retries_through_a_lasting_fault_and_expiry_resumes_when_it_clears() {
    for io in [Io::Write, Io::Sync] {
        let disk = FaultDisk::new();
        let clock = ManualClock::new();
        let l = Lessor::builder()
            .clock(clock.clone())
            .open_with_backend(disk.clone())
            .unwrap();
        let short = l.grant(secs(5)).unwrap().id;
        let long = l.grant(secs(600)).unwrap().id;
        l.put_with_lease("/short", "s", short).unwrap();
        l.put_with_lease("/long", "l", long).unwrap();
        disk.fail_always(io);
        clock.advance(secs(10)); // `short` expires; its revocation fails
        assert!(
            wait_until(Duration::from_secs(10), || l.health().ticker_failures >= 3),
            "{io:?}: {:?}",
            l.health()
        );
        let h = l.health();
        assert!(h.poisoned && h.ticker_running, "{io:?}: {h:?}");
        assert!(h.last_ticker_error.is_some());
        disk.heal();
        clock.advance(secs(10));
        assert!(
            wait_until(Duration::from_secs(10), || !l.health().poisoned
                && l.get("/short").ok() == Some(None)),
            "{io:?}: expiry did not resume: {:?}",
            l.health()
        );
        assert_eq!(l.leases(), vec![long]);
        assert_eq!(l.get("/long").unwrap().unwrap().value, b"l");
        assert!(l.health().reloads >= 1);
        l.verify().unwrap();
        l.close().unwrap();
    }
}

#[test]
fn a_fault_while_opening_gives_an_error_and_loses_nothing() {
    let disk = FaultDisk::new();
    let clock = ManualClock::new();
    let l = baseline(&disk, &clock);
    let expected = state(&l);
    l.close().unwrap();
    let counts: Vec<u64> = Io::ALL.iter().map(|&io| disk.calls(io)).collect();
    open(&disk, &clock, Durability::Immediate).close().unwrap();
    let made: Vec<u64> = Io::ALL
        .iter()
        .zip(&counts)
        .map(|(&io, &c)| disk.calls(io) - c)
        .collect();
    let mut cases = 0;
    for (io, &n) in Io::ALL.iter().zip(&made) {
        for nth in 0..n {
            cases += 1;
            disk.fail_nth(*io, nth);
            let opened = Lessor::builder()
                .clock(clock.clone())
                .ticker(false)
                .open_with_backend(disk.clone());
            disk.heal();
            match opened {
                Ok(l) => {
                    // The fault hit something the open could do without (or redb retried).
                    l.recover().unwrap();
                    assert_eq!(state(&l), expected, "{io:?} call {nth}");
                    l.close().unwrap();
                }
                Err(e) => assert!(
                    matches!(e, Error::Storage(_) | Error::Corrupted(_)),
                    "{io:?} call {nth}: {e:?}"
                ),
            }
            let l = open(&disk, &clock, Durability::Immediate);
            assert_eq!(state(&l), expected, "{io:?} call {nth}: after a clean open");
            l.verify().unwrap();
            l.close().unwrap();
        }
    }
    assert!(cases >= 5, "{made:?}");
}
