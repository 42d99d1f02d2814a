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
    Compare, Durability, Error, KeepAliveOptions, LeaseId, Lessor, ManualClock, Op, Txn, WatchEnd,
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
    for lid in l.leases().unwrap() {
        let info = l.time_to_live(lid).unwrap();
        leases.insert(lid.get(), (info.ttl, info.keys.into_iter().collect()));
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
    let l = open(disk, clock, Durability::Immediate);
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
            l.txn(
                Txn::new()
                    .when(Compare::exists("/plain"))
                    .then(Op::put("/t", "t"))
                    .then(Op::delete("/a/1")),
            )
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
    let mut landed = Vec::new();
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
                        matches!(l.put("/refused", "x"), Err(Error::Poisoned)),
                        "{case}: a poisoned lessor must refuse writes"
                    );
                    // Healthy holders keep their leases while the disk fails: renewals work,
                    // and reads answer what was acknowledged (or refuse, never a wrong answer).
                    assert!(l.renew(id(3)).is_ok(), "{case}: renew while poisoned");
                    match l.get("/plain") {
                        Ok(kv) => assert!(kv.is_some_and(|kv| kv.value == b"p"), "{case}"),
                        Err(e) => assert!(matches!(e, Error::Poisoned), "{case}: {e:?}"),
                    }
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
                } else if state(&l) == after {
                    // The fault came after redb had made the commit durable (its file shrink
                    // after the last fsync): the call happened, though it reported failure.
                    landed.push(case.clone());
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
        "{cases} faults injected; I/O calls per operation [read, write, set_len, sync]:\n  {}\n\
         failed but happened after all: {landed:?}",
        report.join("\n  ")
    );
    // Only a fault after the commit point may leave a failed call in effect: redb's shrink of
    // the file, its last I/O (set_len), never a write or a sync here (a failed sync loses
    // unsynced data on this disk).
    assert!(
        landed.iter().all(|case| case.contains("SetLen")),
        "{landed:?}"
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
        let alive: BTreeSet<LeaseId> = l.leases().unwrap().into_iter().collect();
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
        assert_eq!(
            l.leases().unwrap().into_iter().collect::<BTreeSet<_>>(),
            alive
        );
        l.close().unwrap();
    }
}

/// Under `Batched`, a failed flush undoes nothing acknowledged while the process lives: the
/// acknowledged writes stay readable, renewals go on, writes are refused until a flush succeeds,
/// and the reload writes them to the reopened file.
#[test]
fn a_failed_batched_flush_undoes_nothing_acknowledged() {
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
    let pending = l.grant(secs(60)).unwrap().id;
    l.put_with_lease("/pending", "p", pending).unwrap();
    l.revoke(durable).unwrap(); // a lock released: it must not come back
    let ka = l
        .keep_alive_with(
            pending,
            KeepAliveOptions::new().interval(Duration::from_millis(5)),
        )
        .unwrap();
    disk.fail_nth(Io::Sync, 0);
    assert!(matches!(l.sync(), Err(Error::Storage(_))));
    assert!(l.health().poisoned);
    // Writes wait for a flush to succeed; reads and renewals answer what was acknowledged.
    assert!(matches!(l.put("/x", "x"), Err(Error::Poisoned)));
    assert!(l.renew(pending).is_ok());
    assert_eq!(l.leases().unwrap(), vec![pending]);
    assert_eq!(l.get("/pending").unwrap().unwrap().value, b"p");
    assert_eq!(l.get("/durable").unwrap(), None);
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
    assert_eq!(l.leases().unwrap(), vec![pending]);
    assert_eq!(l.get("/pending").unwrap().unwrap().value, b"p");
    assert_eq!(
        l.get("/durable").unwrap(),
        None,
        "the revoked lock came back"
    );
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        ka.ended(),
        None,
        "an acknowledged lease keeps its keep-alive"
    );
    // Writes work again; new watches and subscriptions too.
    let watch = l.watch("/w").unwrap();
    l.put("/w", "1").unwrap();
    assert!(watch.recv().is_ok());
    l.verify().unwrap();
    // Everything acknowledged reached the disk: a power cut now loses none of it.
    l.sync().unwrap();
    let survivor = disk.after_power_loss();
    drop(ka);
    l.close().unwrap();
    let l = open(
        &survivor,
        &clock,
        Durability::Batched {
            max_delay: Duration::from_secs(3600),
        },
    );
    assert_eq!(l.leases().unwrap(), vec![pending]);
    assert_eq!(l.get("/pending").unwrap().unwrap().value, b"p");
    assert_eq!(l.get("/durable").unwrap(), None);
    assert_eq!(l.get("/w").unwrap().unwrap().value, b"1");
    l.close().unwrap();
}

/// A full disk under `Batched`: writes refused meanwhile with a clear error, none of the
/// acknowledged ones undone, however many flushes fail; once the disk heals, the ticker's retry
/// writes them all.
#[test]
fn a_lasting_batched_fault_undoes_nothing_and_the_ticker_writes_it_all_once_healed() {
    let disk = FaultDisk::new();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .durability(Durability::Batched {
            max_delay: Duration::from_millis(2),
        })
        .open_with_backend(disk.clone())
        .unwrap();
    let lease = l.grant(secs(600)).unwrap().id;
    let mut acknowledged = Vec::new();
    disk.fail_always(Io::Write);
    let start = std::time::Instant::now();
    let mut refused = 0;
    while start.elapsed() < Duration::from_millis(300) {
        let key = format!("/k/{}", acknowledged.len() + refused);
        match l.put_with_lease(&key, "v", lease) {
            Ok(_) => acknowledged.push(key),
            Err(Error::Poisoned) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
        l.renew(lease).unwrap();
    }
    assert!(l.health().storage_failures >= 1 && refused > 0);
    for key in &acknowledged {
        assert!(l.get(key).unwrap_or(None).is_some() || l.health().poisoned);
    }
    disk.heal();
    assert!(
        wait_until(Duration::from_secs(10), || !l.health().poisoned),
        "{:?}",
        l.health()
    );
    l.sync().unwrap();
    let keys: BTreeSet<Vec<u8>> = l
        .range("/k/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    for key in &acknowledged {
        assert!(
            keys.contains(key.as_bytes()),
            "{key} was acknowledged, then lost"
        );
    }
    let survivor = disk.after_power_loss();
    l.close().unwrap();
    let l = open(&survivor, &clock, Durability::Immediate);
    assert_eq!(l.range("/k/").unwrap().len(), acknowledged.len());
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
        l.revoke(id(1)).map(drop),
        l.subscribe().map(drop),
    ] {
        assert!(matches!(call, Err(Error::Poisoned)), "{call:?}");
    }
    // Renewals (and reads, where the snapshot still answers) go on while the disk fails.
    assert!(l.renew(id(1)).is_ok());
    assert!(matches!(
        l.get("/plain"),
        Ok(Some(_)) | Err(Error::Poisoned)
    ));
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
        assert_eq!(l.leases().unwrap(), vec![long]);
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

/// Random sequences of operations, each possibly hit by a fault at a random I/O call, checked
/// after every step against a model that applies exactly the operations that succeeded.
mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Grant(u64),
        Renew(usize),
        Revoke(usize),
        Put(u8, Option<usize>),
        Delete(u8),
        Attach(usize, u8),
        Detach(usize, u8),
        Advance(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1..20u64).prop_map(Step::Grant),
            any::<usize>().prop_map(Step::Renew),
            any::<usize>().prop_map(Step::Revoke),
            (0..6u8, proptest::option::of(any::<usize>())).prop_map(|(k, l)| Step::Put(k, l)),
            (0..6u8).prop_map(Step::Delete),
            (any::<usize>(), 0..6u8).prop_map(|(l, k)| Step::Attach(l, k)),
            (any::<usize>(), 0..6u8).prop_map(|(l, k)| Step::Detach(l, k)),
            (1..8u64).prop_map(Step::Advance),
        ]
    }

    /// A fault to inject before a step: none, or the `nth` call of an I/O kind.
    fn fault() -> impl Strategy<Value = Option<(Io, u64)>> {
        proptest::option::weighted(
            0.3,
            (
                prop_oneof![
                    Just(Io::Write),
                    Just(Io::Sync),
                    Just(Io::Read),
                    Just(Io::SetLen)
                ],
                0..10u64,
            ),
        )
    }

    /// The model: live leases (id → (ttl, deadline) in seconds), keys (key → lease), the highest
    /// lease id issued, and the time.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Model {
        now: u64,
        leases: BTreeMap<u64, (u64, u64)>,
        keys: BTreeMap<Vec<u8>, Option<u64>>,
        max_id: u64,
    }

    impl Model {
        fn pick(&self, i: usize) -> Option<u64> {
            let ids: Vec<u64> = self.leases.keys().copied().collect();
            (!ids.is_empty()).then(|| ids[i % ids.len()])
        }

        fn expire(&mut self) {
            let now = self.now;
            let dead: Vec<u64> = self
                .leases
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                self.revoke(id);
            }
        }

        fn revoke(&mut self, id: u64) {
            self.leases.remove(&id);
            self.keys.retain(|_, lease| *lease != Some(id));
        }

        /// What the lessor call for `step` is, with its arguments resolved against this model,
        /// or `None` if the step does not apply (no lease to pick, key not there...).
        fn resolve(&self, step: &Step) -> Option<Call> {
            Some(match *step {
                Step::Grant(ttl) => Call::Grant(ttl),
                Step::Renew(i) => Call::Renew(self.pick(i)?),
                Step::Revoke(i) => Call::Revoke(self.pick(i)?),
                Step::Put(k, lease) => Call::Put(key(k), lease.and_then(|i| self.pick(i))),
                Step::Delete(k) => Call::Delete(key(k)),
                Step::Attach(i, k) if self.keys.contains_key(&key(k)) => {
                    Call::Attach(self.pick(i)?, key(k))
                }
                Step::Detach(i, k) => {
                    let id = self.pick(i)?;
                    (self.keys.get(&key(k)) == Some(&Some(id)))
                        .then_some(Call::Detach(id, key(k)))?
                }
                Step::Advance(s) => Call::Advance(s),
                _ => return None,
            })
        }

        /// The model after `call` succeeded.
        fn apply(&self, call: &Call) -> Model {
            let mut m = self.clone();
            match call {
                Call::Grant(ttl) => {
                    m.max_id += 1;
                    m.leases.insert(m.max_id, (*ttl, m.now + ttl));
                }
                Call::Renew(id) => {
                    let now = m.now;
                    if let Some((ttl, deadline)) = m.leases.get_mut(id) {
                        *deadline = now + *ttl;
                    }
                }
                Call::Revoke(id) => m.revoke(*id),
                Call::Put(k, lease) => {
                    m.keys.insert(k.clone(), *lease);
                }
                Call::Delete(k) => {
                    m.keys.remove(k);
                }
                Call::Attach(id, k) => {
                    m.keys.insert(k.clone(), Some(*id));
                }
                Call::Detach(_, k) => {
                    m.keys.insert(k.clone(), None);
                }
                Call::Advance(_) => m.expire(),
            }
            m
        }
    }

    /// A step resolved against the model.
    #[derive(Clone, Debug)]
    enum Call {
        Grant(u64),
        Renew(u64),
        Revoke(u64),
        Put(Vec<u8>, Option<u64>),
        Delete(Vec<u8>),
        Attach(u64, Vec<u8>),
        Detach(u64, Vec<u8>),
        Advance(u64),
    }

    fn key(k: u8) -> Vec<u8> {
        format!("/k{k}").into_bytes()
    }

    fn lid(id: u64) -> LeaseId {
        LeaseId::new(id).unwrap()
    }

    /// Makes `call`; `Ok(true)` if it succeeded, `Ok(false)` if storage failed.
    fn run(l: &Lessor, clock: &ManualClock, call: &Call) -> Result<bool, TestCaseError> {
        let result = match call {
            Call::Grant(ttl) => l.grant(secs(*ttl)).map(drop),
            Call::Renew(id) => l.renew(lid(*id)).map(drop),
            Call::Revoke(id) => l.revoke(lid(*id)).map(drop),
            Call::Put(k, Some(id)) => l.put_with_lease(k, "v", lid(*id)).map(drop),
            Call::Put(k, None) => l.put(k, "v").map(drop),
            Call::Delete(k) => l.delete(k).map(drop),
            Call::Attach(id, k) => l.attach(lid(*id), [k]),
            Call::Detach(id, k) => l.detach(lid(*id), [k]),
            Call::Advance(s) => {
                clock.advance(secs(*s));
                l.revoke_expired().map(drop)
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if is_storage_failure(&e) => Ok(false),
            Err(e) => Err(TestCaseError::fail(format!("{call:?}: {e:?}"))),
        }
    }

    /// The model as the lessor shows it (`max_id` and `now` taken from `like`: a new grant's id
    /// checks `max_id`).
    fn observe(l: &Lessor, like: &Model) -> Model {
        let mut seen = Model {
            now: like.now,
            max_id: like.max_id,
            ..Model::default()
        };
        for id in l.leases().unwrap() {
            let info = l.time_to_live(id).unwrap();
            let ttl = info.ttl.as_secs();
            seen.leases
                .insert(id.get(), (ttl, like.now + info.remaining.as_secs()));
        }
        seen.keys = l
            .range("")
            .unwrap()
            .into_iter()
            .map(|kv| (kv.key, kv.lease.map(LeaseId::get)))
            .collect();
        seen
    }

    /// Runs the steps; returns how many failed, and how many of those had happened after all.
    fn check(steps: &[(Step, Option<(Io, u64)>)]) -> Result<(u32, u32), TestCaseError> {
        let disk = FaultDisk::new();
        let clock = ManualClock::new();
        let l = open(&disk, &clock, Durability::Immediate);
        let mut m = Model::default();
        let (mut failed, mut landed) = (0, 0);
        for (n, (step, fault)) in steps.iter().enumerate() {
            let Some(call) = m.resolve(step) else {
                continue;
            };
            if let Call::Advance(s) = call {
                m.now += s;
            }
            if let Some((io, nth)) = fault {
                disk.fail_nth(*io, *nth);
            }
            let ok = run(&l, &clock, &call)?;
            disk.heal();
            let mut after = m.apply(&call);
            if ok {
                m = after;
            } else {
                failed += 1;
                l.recover().unwrap();
                // Told it failed: it did not happen, unless the fault came after redb had made
                // the commit durable (its last fsync, or the file shrink after it), in which
                // case the reloaded file has it. Expiry is retried either way.
                l.revoke_expired().unwrap();
                after.expire();
                let mut before = m.clone();
                before.expire();
                before.max_id = after.max_id; // a failed grant's id is never issued again
                let seen = observe(&l, &after);
                if seen == after && seen != before {
                    landed += 1;
                    m = after;
                } else {
                    prop_assert_eq!(&seen, &before, "step {} {:?} fault {:?}", n, call, fault);
                    m = before;
                }
            }
            // Expired leases are gone once expiry has run, whatever failed before.
            l.revoke_expired().unwrap();
            m.expire();
            prop_assert_eq!(
                observe(&l, &m),
                m.clone(),
                "step {} {:?} fault {:?}",
                n,
                call,
                fault
            );
            l.verify().unwrap();
        }
        l.close().unwrap();
        Ok((failed, landed))
    }

    proptest! {
        // 64 cases in CI; PROPTEST_CASES=N runs N.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_operations_under_random_faults_match_the_model(
            steps in prop::collection::vec((step(), fault()), 1..40)
        ) {
            check(&steps)?;
        }
    }

    /// How often a failed call had happened after all, over a fixed set of random runs.
    #[test]
    fn failed_calls_that_happened_after_all_are_rare_and_counted() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut failed, mut landed) = (0, 0);
        for _ in 0..64 {
            let steps = prop::collection::vec((step(), fault()), 40)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let (f, l) = check(&steps).unwrap();
            failed += f;
            landed += l;
        }
        eprintln!("{failed} calls failed; {landed} of them had happened after all");
        assert!(failed > 50, "faults hit too few calls: {failed}");
    }
}
