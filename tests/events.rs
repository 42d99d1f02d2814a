//! Lease events (`subscribe`) and key watches (`watch`, `watch_from`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{MemDisk, id, secs};
use lessor::{
    Error, KeyValue, LeaseEvent, Lessor, ManualClock, Revision, RevokeCause, Txn, WatchEnd,
    WatchEvent,
};

fn mem(clock: &ManualClock) -> Lessor {
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap()
}

/// A compact rendering of a watch event: `put k=v@rev` or `del k@rev cause`.
fn show(e: &WatchEvent) -> String {
    let key = String::from_utf8_lossy(e.key()).into_owned();
    match e {
        WatchEvent::Put(kv) => format!(
            "put {key}={}@{}",
            String::from_utf8_lossy(&kv.value),
            kv.mod_revision
        ),
        WatchEvent::Delete {
            revision, cause, ..
        } => format!("del {key}@{revision} {cause:?}"),
        other => format!("{other:?}"),
    }
}

fn drain(w: &lessor::Watch) -> Vec<String> {
    std::iter::from_fn(|| w.try_recv().ok())
        .map(|e| show(&e))
        .collect()
}

#[test]
fn lease_events_say_granted_revoked_and_expired_in_commit_order() {
    let clock = ManualClock::new();
    let l = mem(&clock);
    let events = l.subscribe().unwrap();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(5)).unwrap();
    l.put_with_lease("/a/1", "x", a.id).unwrap();
    l.put_with_lease("/a/2", "y", a.id).unwrap();
    l.put_with_lease("/b/1", "z", b.id).unwrap();
    l.revoke(a.id).unwrap();
    clock.advance(secs(6));
    l.revoke_expired().unwrap();
    let c = l.grant(secs(1)).unwrap();
    let got: Vec<LeaseEvent> = events.try_iter().collect();
    assert_eq!(
        got,
        vec![
            LeaseEvent::Granted {
                id: a.id,
                ttl: secs(10),
                revision: Revision::new(0)
            },
            LeaseEvent::Granted {
                id: b.id,
                ttl: secs(5),
                revision: Revision::new(0)
            },
            LeaseEvent::Revoked {
                id: a.id,
                keys: vec![b"/a/1".to_vec(), b"/a/2".to_vec()],
                revision: Revision::new(4),
                cause: RevokeCause::Revoked
            },
            LeaseEvent::Revoked {
                id: b.id,
                keys: vec![b"/b/1".to_vec()],
                revision: Revision::new(5),
                cause: RevokeCause::Expired
            },
            LeaseEvent::Granted {
                id: c.id,
                ttl: secs(1),
                revision: Revision::new(5)
            },
        ]
    );
}

#[test]
fn regranting_an_expired_id_reports_its_expiry_first() {
    let clock = ManualClock::new();
    let l = mem(&clock);
    l.grant_with_id(id(7), secs(1)).unwrap();
    l.put_with_lease("/k", "v", id(7)).unwrap();
    let events = l.subscribe().unwrap();
    clock.advance(secs(2));
    l.grant_with_id(id(7), secs(1)).unwrap();
    let got: Vec<LeaseEvent> = events.try_iter().collect();
    assert!(matches!(
        &got[..],
        [
            LeaseEvent::Revoked { id: r, keys, cause: RevokeCause::Expired, .. },
            LeaseEvent::Granted { id: g, .. },
        ] if *r == id(7) && *g == id(7) && keys == &vec![b"/k".to_vec()]
    ));
}

#[test]
fn a_slow_subscriber_is_told_it_lagged_and_never_blocks_writers() {
    let l = Lessor::builder()
        .ticker(false)
        .event_buffer(4)
        .open_in_memory()
        .unwrap();
    let events = l.subscribe().unwrap();
    for _ in 0..10 {
        l.grant(secs(10)).unwrap(); // would block forever if publishing waited
    }
    let first: Vec<LeaseEvent> = events.try_iter().collect();
    assert_eq!(first.len(), 4);
    let last = l.grant(secs(10)).unwrap();
    let next: Vec<LeaseEvent> = events.try_iter().collect();
    assert!(
        matches!(&next[..], [LeaseEvent::Lagged(6), LeaseEvent::Granted { id, .. }] if *id == last.id),
        "{next:?}"
    );
}

#[test]
fn subscriptions_and_watches_end_when_the_lessor_closes() {
    let l = Lessor::open_in_memory().unwrap();
    let events = l.subscribe().unwrap();
    let watch = l.watch("").unwrap();
    l.put("/k", "v").unwrap();
    l.close().unwrap();
    assert!(events.recv().is_err()); // closed, and a put is not a lease event
    assert_eq!(drain(&watch), ["put /k=v@1"]);
    assert!(watch.recv().is_err());
    assert_eq!(watch.ended(), Some(WatchEnd::Closed));
    assert!(matches!(l.subscribe(), Err(Error::Closed)));
    assert!(matches!(l.watch(""), Err(Error::Closed)));
}

#[test]
fn watches_see_puts_and_deletes_with_their_cause() {
    let clock = ManualClock::new();
    let l = mem(&clock);
    let w = l.watch("/svc/").unwrap();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(5)).unwrap();
    l.put_with_lease("/svc/a", "1", a.id).unwrap();
    l.put_with_lease("/svc/b", "2", b.id).unwrap();
    l.put("/other", "ignored").unwrap();
    l.put("/svc/c", "3").unwrap();
    l.put("/svc/c", "4").unwrap();
    l.delete("/svc/c").unwrap();
    l.delete("/svc/missing").unwrap();
    l.revoke(a.id).unwrap();
    clock.advance(secs(6));
    l.revoke_expired().unwrap();
    assert_eq!(
        drain(&w),
        [
            "put /svc/a=1@1".to_string(),
            "put /svc/b=2@2".into(),
            "put /svc/c=3@4".into(),
            "put /svc/c=4@5".into(),
            "del /svc/c@6 Deleted".into(),
            format!("del /svc/a@7 LeaseRevoked({:?})", a.id),
            format!("del /svc/b@8 LeaseExpired({:?})", b.id),
        ]
    );
}

#[test]
fn put_events_carry_the_whole_key() {
    let l = Lessor::open_in_memory().unwrap();
    let w = l.watch("/k").unwrap();
    let lease = l.grant(secs(10)).unwrap();
    l.put("/k", "a").unwrap();
    l.put_with_lease("/k", "b", lease.id).unwrap();
    let got: Vec<WatchEvent> = std::iter::from_fn(|| w.try_recv().ok()).collect();
    assert_eq!(
        got,
        vec![
            WatchEvent::Put(KeyValue {
                key: b"/k".to_vec(),
                value: b"a".to_vec(),
                lease: None,
                create_revision: Revision::new(1),
                mod_revision: Revision::new(1),
                version: 1,
            }),
            WatchEvent::Put(KeyValue {
                key: b"/k".to_vec(),
                value: b"b".to_vec(),
                lease: Some(lease.id),
                create_revision: Revision::new(1),
                mod_revision: Revision::new(2),
                version: 2,
            }),
        ]
    );
}

#[test]
fn watch_from_replays_history_then_follows_live_changes() {
    let l = Lessor::open_in_memory().unwrap();
    for i in 1..=5 {
        l.put(format!("/k{i}"), "v").unwrap();
    }
    let w = l.watch_from("/", Revision::new(3)).unwrap();
    l.put("/k6", "v").unwrap();
    assert_eq!(
        drain(&w),
        ["put /k3=v@3", "put /k4=v@4", "put /k5=v@5", "put /k6=v@6"]
    );
    // A future revision: nothing until it comes.
    let later = l.watch_from("/", Revision::new(8)).unwrap();
    l.put("/k7", "v").unwrap();
    l.put("/k8", "v").unwrap();
    assert_eq!(drain(&later), ["put /k8=v@8"]);
}

#[test]
fn range_then_watch_from_the_next_revision_misses_nothing_and_repeats_nothing() {
    let l = Lessor::open_in_memory().unwrap();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || {
            for i in 0..400u32 {
                let key = format!("/svc/{}", i % 37);
                if i % 5 == 4 {
                    l.delete(&key).unwrap();
                } else {
                    l.put(&key, i.to_string()).unwrap();
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(5));
    let snap = l.range_with_revision("/svc/").unwrap();
    let w = l.watch_from("/svc/", snap.revision.next()).unwrap();
    writer.join().unwrap();
    let end = l.revision().unwrap();

    let mut state: BTreeMap<Vec<u8>, Vec<u8>> =
        snap.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let mut last = snap.revision;
    while last < end {
        let e = w.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            e.revision() > last,
            "{e:?} after {last:?}: out of order or repeated"
        );
        last = e.revision();
        match e {
            WatchEvent::Put(kv) => {
                state.insert(kv.key, kv.value);
            }
            WatchEvent::Delete { key, .. } => {
                assert!(state.remove(&key).is_some(), "deleted a key we never saw");
            }
            other => panic!("{other:?}"),
        }
    }
    let now: BTreeMap<Vec<u8>, Vec<u8>> = l
        .range("/svc/")
        .unwrap()
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(state, now);
    assert!(w.try_recv().is_err());
}

#[test]
fn a_watcher_that_falls_behind_its_channel_catches_up_from_history() {
    let l = Lessor::open_in_memory().unwrap();
    let w = l.watch("/").unwrap();
    for i in 1..=2000u64 {
        l.put("/k", i.to_string()).unwrap(); // the channel holds far fewer
    }
    let revs: Vec<u64> = std::iter::from_fn(|| w.try_recv().ok())
        .map(|e| e.revision().get())
        .collect();
    assert_eq!(revs, (1..=2000).collect::<Vec<_>>());
    l.put("/k", "live").unwrap();
    assert_eq!(drain(&w), ["put /k=live@2001"]);
}

#[test]
fn a_watcher_behind_the_whole_history_ends_compacted() {
    let l = Lessor::builder()
        .watch_history(300, 1 << 20)
        .open_in_memory()
        .unwrap();
    let w = l.watch("/").unwrap();
    for i in 0..1000u64 {
        l.put("/k", i.to_string()).unwrap();
    }
    let got = std::iter::from_fn(|| w.try_recv().ok()).count();
    assert!(got < 1000, "the watch cannot have seen everything");
    assert_eq!(w.ended(), Some(WatchEnd::Compacted));
    // Too old to start from, too.
    assert!(matches!(
        l.watch_from("/", Revision::new(1)),
        Err(Error::Compacted { requested, oldest })
            if requested == Revision::new(1) && oldest == Revision::new(701)
    ));
    assert!(l.watch_from("/", Revision::new(701)).is_ok());
}

#[test]
fn history_is_bounded_by_bytes_too() {
    let l = Lessor::builder()
        .watch_history(1_000_000, 10_000)
        .open_in_memory()
        .unwrap();
    for _ in 0..100 {
        l.put("/k", vec![0u8; 1000]).unwrap();
    }
    assert!(matches!(
        l.watch_from("/", Revision::new(90)),
        Err(Error::Compacted { .. })
    ));
    assert!(l.watch_from("/", Revision::new(95)).is_ok());
}

#[test]
fn after_reopening_history_starts_at_the_current_revision() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    l.put("/a", "1").unwrap();
    l.put("/b", "2").unwrap();
    l.close().unwrap();
    let l = disk.open(&clock).unwrap();
    assert!(matches!(
        l.watch_from("/", Revision::new(2)),
        Err(Error::Compacted { .. })
    ));
    let w = l.watch_from("/", Revision::new(3)).unwrap();
    l.put("/c", "3").unwrap();
    assert_eq!(drain(&w), ["put /c=3@3"]);
}

#[test]
fn transactions_publish_their_writes_at_one_revision() {
    let l = Lessor::open_in_memory().unwrap();
    l.put("/x", "0").unwrap();
    let w = l.watch("/").unwrap();
    l.txn(
        Txn::new()
            .then(lessor::Op::put("/a", "1"))
            .then(lessor::Op::delete("/x"))
            .then(lessor::Op::delete("/nothing"))
            .then(lessor::Op::put("/b", "2")),
    )
    .unwrap();
    assert_eq!(drain(&w), ["put /a=1@2", "del /x@2 Deleted", "put /b=2@2"]);
}

#[test]
fn a_watch_behind_at_close_still_gets_everything_committed_before() {
    let clock = ManualClock::new();
    let l = mem(&clock);
    let lease = l.grant(secs(5)).unwrap();
    let w = l.watch("/k/").unwrap();
    for i in 0..300 {
        l.put_with_lease(format!("/k/{i:03}"), "v", lease.id)
            .unwrap();
    }
    clock.advance(secs(6));
    l.close().unwrap(); // revokes the expired lease: 300 deletes in one batch
    let got: Vec<WatchEvent> = w.iter().collect();
    assert_eq!(w.ended(), Some(WatchEnd::Closed));
    assert_eq!(got.len(), 600);
    assert!(
        got[300..]
            .iter()
            .all(|e| matches!(e, WatchEvent::Delete { .. }))
    );
}

#[test]
fn watch_from_is_not_ended_by_trimming_events_of_other_prefixes() {
    let l = Lessor::builder()
        .ticker(false)
        .watch_history(10, 1 << 20)
        .open_in_memory()
        .unwrap();
    let r = l.put("/b/0", "x").unwrap();
    let w = l.watch_from("/a/", r).unwrap();
    for i in 1..=20 {
        l.put(format!("/b/{i}"), "x").unwrap();
    }
    l.put("/a/1", "y").unwrap();
    assert_eq!(w.recv_timeout(secs(10)).unwrap().key(), b"/a/1");
    assert_eq!(w.ended(), None);
}

#[test]
fn whoever_hears_of_a_grant_can_use_the_lease_at_once() {
    let l = Lessor::builder().ticker(false).open_in_memory().unwrap();
    let events = l.subscribe().unwrap();
    let reader = {
        let l = l.clone();
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            for _ in 0..500 {
                if let Ok(LeaseEvent::Granted { id, ttl, .. }) = events.recv() {
                    match l.time_to_live(id) {
                        Ok(info) if info.remaining <= ttl => {}
                        other => bad.push(format!("{id}: {other:?}")),
                    }
                    if let Err(e) = l.renew(id) {
                        bad.push(format!("renew {id}: {e}"));
                    }
                }
            }
            bad
        })
    };
    for _ in 0..500 {
        l.grant(secs(60)).unwrap();
    }
    let bad = reader.join().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn a_subscriber_still_behind_at_close_is_told_it_lagged() {
    let l = Lessor::builder()
        .ticker(false)
        .event_buffer(2)
        .open_in_memory()
        .unwrap();
    let events = l.subscribe().unwrap();
    for _ in 0..5 {
        l.grant(secs(10)).unwrap();
    }
    let _ = events.recv().unwrap(); // room for the marker
    l.close().unwrap();
    let rest: Vec<LeaseEvent> = events.iter().collect();
    assert!(
        matches!(rest.last(), Some(LeaseEvent::Lagged(3))),
        "{rest:?}"
    );
}

#[test]
fn a_storage_failure_ends_subscriptions_and_watches() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    let events = l.subscribe().unwrap();
    let w = l.watch("").unwrap();
    l.put("/a", "1").unwrap();
    disk.fail_syncs(true);
    assert!(l.put("/b", "2").is_err());
    assert_eq!(drain(&w), ["put /a=1@1"]);
    assert_eq!(w.ended(), Some(WatchEnd::StorageFailed));
    assert!(events.recv_timeout(secs(10)).is_err());
    // Once the fault clears and the lessor reloads, new watches see new changes.
    disk.fail_syncs(false);
    l.recover().unwrap();
    // This disk kept the writes of the failed fsync: the put whose caller was told it failed
    // made it to the file after all (a failed fsync leaves the outcome unknown).
    assert_eq!(
        l.get("/b").unwrap().map(|kv| kv.mod_revision.get()),
        Some(2)
    );
    let w = l.watch("").unwrap();
    l.put("/c", "3").unwrap();
    assert_eq!(drain(&w), ["put /c=3@3"]);
}

/// Bytes of the keys a batch of events carries.
fn key_bytes(events: &[LeaseEvent]) -> usize {
    events
        .iter()
        .map(|e| match e {
            LeaseEvent::Revoked { keys, .. } => keys.iter().map(Vec::len).sum(),
            _ => 0,
        })
        .sum()
}

#[test]
fn an_undrained_subscriber_holds_at_most_event_buffer_bytes_then_gets_lagged() {
    // Leases of 64 keys of 1 KiB: each revocation carries 64 KiB. 1,024 events of room would
    // hold 64 MiB; 256 KiB of room holds three.
    let l = Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .event_buffer_bytes(256 << 10)
        .open_in_memory()
        .unwrap();
    let value = vec![b'v'; 10];
    let mut leases = Vec::new();
    for n in 0..20 {
        let lease = l.grant(secs(60)).unwrap();
        let mut txn = Txn::new();
        for k in 0..64 {
            let key = format!("/{n:02}/{k:02}/{}", "k".repeat(1017));
            txn = txn.then(lessor::Op::put_with_lease(key, &value, lease.id));
        }
        l.txn(txn).unwrap();
        leases.push(lease.id);
    }
    let events = l.subscribe().unwrap();
    for &id in &leases {
        l.revoke(id).unwrap();
    }
    let held: Vec<LeaseEvent> = events.try_iter().collect();
    assert!(
        key_bytes(&held) <= 256 << 10,
        "{} bytes held",
        key_bytes(&held)
    );
    assert_eq!(held.len(), 3, "{held:?}");
    // Drained: the next event comes after one marker for the 17 missed.
    let last = l.grant(secs(60)).unwrap();
    let next: Vec<LeaseEvent> = events.try_iter().collect();
    assert!(
        matches!(&next[..], [LeaseEvent::Lagged(17), LeaseEvent::Granted { id, .. }] if *id == last.id),
        "{next:?}"
    );
}
