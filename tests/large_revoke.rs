//! Revoking a lease with more keys than `Builder::revoke_chunk_size`: in steps, atomic to
//! readers, resumed after a reopen (`src/reap.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{secs, test_dir};
use lessor::{
    Durability, Error, LeaseEvent, LeaseId, Lessor, ManualClock, RangeOptions, WatchEvent,
};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const CHUNK: usize = 8;

fn open(path: &std::path::Path, clock: &ManualClock, durability: Durability) -> Lessor {
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .durability(durability)
        .revoke_chunk_size(CHUNK)
        .open(path)
        .unwrap()
}

fn big_key(i: usize) -> String {
    format!("/big/{i:05}")
}

/// A lease with `n` keys, and two keys of no lease around them.
fn fill(l: &Lessor, n: usize) -> LeaseId {
    let lease = l.grant(secs(10)).unwrap().id;
    l.put("/a", "before").unwrap();
    for i in 0..n {
        l.put_with_lease(big_key(i), "v", lease).unwrap();
    }
    l.put("/z", "after").unwrap();
    lease
}

fn raw_counts(path: &std::path::Path) -> (u64, u64, u64) {
    let db = redb::Database::open(path).unwrap();
    let read = db.begin_read().unwrap();
    let kv: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
    let index: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lessor.lease_keys");
    let revoking: TableDefinition<u64, u64> = TableDefinition::new("lessor.revoking");
    (
        read.open_table(kv).unwrap().len().unwrap(),
        read.open_table(index).unwrap().len().unwrap(),
        read.open_table(revoking).unwrap().len().unwrap(),
    )
}

#[test]
fn a_revoke_deletes_every_key_in_chunks_and_watchers_see_each_deletion_once() {
    for durability in [
        Durability::Immediate,
        Durability::Batched {
            max_delay: Duration::from_millis(5),
        },
    ] {
        let dir = test_dir();
        let clock = ManualClock::new();
        let l = open(&dir.path, &clock, durability);
        let n = 5 * CHUNK + 3;
        let lease = fill(&l, n);
        let before = l.revision().unwrap();
        let events = l.subscribe().unwrap();
        let watch = l.watch("/big/").unwrap();
        let rev = l.revoke(lease).unwrap();
        // The revocation's revision is the first chunk's.
        assert_eq!(rev.get(), before.get() + 1);
        assert_eq!(l.range("/big/").unwrap(), vec![]);
        assert_eq!(l.range("").unwrap().len(), 2);
        assert!(matches!(
            l.time_to_live(lease),
            Err(Error::LeaseNotFound(_))
        ));
        // Every key's deletion, once, in key order, at increasing revisions.
        let mut deleted = Vec::new();
        let mut last = 0;
        while let Ok(e) = watch.try_recv() {
            let WatchEvent::Delete { key, revision, .. } = e else {
                panic!("{e:?}")
            };
            assert!(revision.get() >= last);
            last = revision.get();
            deleted.push(String::from_utf8(key).unwrap());
        }
        assert_eq!(deleted, (0..n).map(big_key).collect::<Vec<_>>());
        assert_eq!(last, l.revision().unwrap().get());
        assert_eq!(last, before.get() + n.div_ceil(CHUNK) as u64);
        // The lease event: the revocation, with its first chunk.
        let revoked = events
            .try_iter()
            .find_map(|e| match e {
                LeaseEvent::Revoked {
                    id, keys, revision, ..
                } => Some((id, keys, revision)),
                _ => None,
            })
            .unwrap();
        assert_eq!((revoked.0, revoked.1.len(), revoked.2), (lease, CHUNK, rev));
        // The id is free again once every key is gone.
        l.grant_with_id(lease, secs(5)).unwrap();
        assert_eq!(
            l.time_to_live_with_keys(lease).unwrap().keys,
            Vec::<Vec<u8>>::new()
        );
        l.verify().unwrap();
        let stats = l.stats().unwrap();
        assert_eq!((stats.keys, stats.attached_keys), (2, 0));
        l.close().unwrap();
        assert_eq!(raw_counts(&dir.path), (2, 0, 0));
    }
}

#[test]
fn an_expiry_hides_every_key_at_once_and_revoke_expired_deletes_them() {
    let (dir, clock) = (test_dir(), ManualClock::new());
    let l = open(&dir.path, &clock, Durability::Immediate);
    let lease = fill(&l, 3 * CHUNK);
    let small = l.grant(secs(10)).unwrap().id;
    l.put_with_lease("/small", "v", small).unwrap();
    clock.advance(secs(11));
    let mut expired = l.revoke_expired().unwrap();
    expired.sort();
    assert_eq!(expired, vec![lease, small]);
    assert_eq!(l.range("").unwrap().len(), 2);
    l.verify().unwrap();
    l.close().unwrap();
    assert_eq!(raw_counts(&dir.path), (2, 0, 0));
}

/// The file as a crash leaves it between the request that revoked a large lease and the end of
/// its deletions: the lease's record gone, its mark in `lessor.revoking`, its keys still there.
fn interrupted(n: usize) -> (common::TestDir, ManualClock, LeaseId) {
    let (dir, clock) = (test_dir(), ManualClock::new());
    let l = open(&dir.path, &clock, Durability::Immediate);
    let lease = fill(&l, n);
    let revision = l.revision().unwrap().get();
    l.close().unwrap();
    let db = redb::Database::open(&dir.path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let leases: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
        let revoking: TableDefinition<u64, u64> = TableDefinition::new("lessor.revoking");
        txn.open_table(leases).unwrap().remove(lease.get()).unwrap();
        txn.open_table(revoking)
            .unwrap()
            .insert(lease.get(), revision)
            .unwrap();
    }
    txn.commit().unwrap();
    (dir, clock, lease)
}

#[test]
fn an_interrupted_revocation_is_hidden_at_open_and_finished_by_revoke_expired() {
    let n = 4 * CHUNK + 1;
    let (dir, clock, lease) = interrupted(n);
    let l = open(&dir.path, &clock, Durability::Immediate);
    l.verify().unwrap();
    assert_eq!(l.range("").unwrap().len(), 2);
    assert_eq!(l.get(big_key(3)).unwrap(), None);
    assert_eq!(l.leases().unwrap(), vec![]);
    // Hidden keys are gone to writers too.
    assert!(!l.delete(big_key(4)).unwrap());
    assert!(matches!(
        l.detach(lease, [big_key(5)]),
        Err(Error::KeyNotFound(_) | Error::LeaseNotFound(_))
    ));
    let other = l.grant(secs(10)).unwrap().id;
    assert!(matches!(
        l.attach(other, [big_key(5)]),
        Err(Error::KeyNotFound(_))
    ));
    // A put creates the key anew, and the revocation leaves it alone.
    let rev = l.put(big_key(6), "new").unwrap();
    let kv = l.get(big_key(6)).unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version, kv.lease), (rev, 1, None));
    // The id is taken until the keys are gone.
    assert!(matches!(
        l.grant_with_id(lease, secs(5)),
        Err(Error::LeaseExists(_))
    ));
    assert_eq!(l.revoke_expired().unwrap(), vec![]);
    assert_eq!(l.range("").unwrap().len(), 3);
    assert_eq!(l.get(big_key(6)).unwrap().unwrap().value, b"new");
    l.grant_with_id(lease, secs(5)).unwrap();
    l.verify().unwrap();
    l.close().unwrap();
    assert_eq!(raw_counts(&dir.path), (3, 0, 0));
}

/// Every page of every range of `l` is the start of the full read of that range, in the order
/// asked, and counts it whole.
fn pages_agree_with_the_full_read(l: &Lessor) {
    let bounds: [(&[u8], Option<&[u8]>); 3] = [
        (b"", None),
        (b"/big/", Some(b"/big0")),
        (b"/big/00010", None),
    ];
    for (start, end) in bounds {
        let all = l.range_between(start, end).unwrap().kvs;
        for descending in [false, true] {
            let mut want = all.clone();
            if descending {
                want.reverse();
            }
            for limit in [0, 1, 2, 3, 100] {
                let options = RangeOptions::new().limit(limit).descending(descending);
                let page = l.range_page(start, end, options).unwrap();
                let shown = limit.min(want.len());
                assert_eq!(page.kvs, want[..shown], "{options:?}");
                assert_eq!(page.count, want.len() as u64, "{options:?}");
                assert_eq!(page.more, shown < want.len(), "{options:?}");
            }
        }
    }
}

#[test]
fn pages_and_counts_leave_out_the_keys_of_a_revocation_in_progress() {
    for durability in [
        Durability::Immediate,
        Durability::Batched {
            max_delay: Duration::from_secs(3600),
        },
    ] {
        let (dir, clock, _lease) = interrupted(4 * CHUNK + 1);
        let l = open(&dir.path, &clock, durability);
        pages_agree_with_the_full_read(&l);
        let all = RangeOptions::new();
        assert_eq!(l.range_page("", None, all.limit(0)).unwrap().count, 2);
        // A key written anew over a hidden one: in the write buffer under Batched.
        l.put(big_key(6), "new").unwrap();
        l.put(big_key(12), "new").unwrap();
        pages_agree_with_the_full_read(&l);
        let page = l.range_page("/big/", Some(b"/big0"), all.limit(1)).unwrap();
        assert_eq!(
            (page.kvs[0].key.as_slice(), page.count),
            (big_key(6).as_bytes(), 2)
        );
        assert_eq!(l.range_page("", None, all.limit(0)).unwrap().count, 4);
        l.close().unwrap();
    }
}

#[test]
fn the_ticker_resumes_an_interrupted_revocation() {
    let (dir, _clock, _lease) = interrupted(6 * CHUNK);
    let l = Lessor::builder()
        .revoke_chunk_size(CHUNK)
        .open(&dir.path)
        .unwrap();
    assert_eq!(l.range("").unwrap().len(), 2);
    assert!(common::wait_until(secs(10), || l.stats().unwrap().keys == 2));
    l.verify().unwrap();
    l.close().unwrap();
    assert_eq!(raw_counts(&dir.path), (2, 0, 0));
}

#[test]
fn readers_never_see_part_of_a_large_revocation() {
    let (dir, clock) = (test_dir(), ManualClock::new());
    let l = open(
        &dir.path,
        &clock,
        Durability::Batched {
            max_delay: Duration::from_millis(1),
        },
    );
    let n = 200 * CHUNK;
    let lease = fill(&l, n);
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let seen = l.range("/big/").unwrap().len();
                assert!(seen == n || seen == 0, "a reader saw {seen} of {n} keys");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
        while reads.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        l.revoke(lease).unwrap();
        done.store(true, Ordering::Release);
        reader.join().unwrap();
    });
    assert_eq!(l.range("/big/").unwrap(), vec![]);
    l.verify().unwrap();
}

#[test]
fn a_chunk_size_of_usize_max_revokes_in_one_request() {
    let dir = test_dir();
    let l = Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .durability(Durability::Batched {
            max_delay: Duration::from_millis(5),
        })
        .revoke_chunk_size(usize::MAX)
        .open(&dir.path)
        .unwrap();
    let lease = fill(&l, 5000);
    let before = l.revision().unwrap().get();
    let watch = l.watch("/big/").unwrap();
    l.revoke(lease).unwrap();
    assert_eq!(l.revision().unwrap().get(), before + 1);
    assert_eq!(std::iter::from_fn(|| watch.try_recv().ok()).count(), 5000);
}

#[test]
fn a_grant_with_the_id_of_an_expired_large_lease_waits_for_its_keys_to_go() {
    let (dir, clock) = (test_dir(), ManualClock::new());
    let l = open(&dir.path, &clock, Durability::Immediate);
    let lease = fill(&l, 3 * CHUNK);
    clock.advance(secs(11));
    // Too many keys to revoke within the grant: refused, and nothing changed.
    assert!(matches!(
        l.grant_with_id(lease, secs(5)),
        Err(Error::LeaseExists(_))
    ));
    assert_eq!(l.range("").unwrap().len(), 2 + 3 * CHUNK);
    assert_eq!(l.revoke_expired().unwrap(), vec![lease]);
    assert_eq!(l.range("").unwrap().len(), 2);
    l.grant_with_id(lease, secs(5)).unwrap();
    l.verify().unwrap();
}
