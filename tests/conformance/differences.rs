//! Where the backends differ, pinned down: each test runs on both and asserts what each does,
//! as the [`LeaseStore`](lessor::LeaseStore) docs list it. A change in either backend's
//! behaviour fails here first, and the docs must follow.
//!
//! Two differences need a cluster or a fault and are pinned in `tests/etcd_faults.rs`: the
//! lease TTL reset on a leader change, and a failed write that may have committed.

use std::time::Duration;

use lessor::{DeleteCause, Error, LeaseId, LeaseStore, Revision, WatchEvent};

use super::{ACT, Harness, TTL};

/// TTLs: the embedded engine keeps them to the nanosecond (raised to its minimum); etcd rounds
/// up to whole seconds and raises to its minimum (2 s), and reports the time left in whole
/// seconds, rounded down.
pub fn ttl_granularity_and_rounding<H: Harness>(h: &H) {
    let s = h.store();
    let odd = Duration::from_millis(2_500);
    let lease = s.grant(odd).unwrap();
    let info = s.time_to_live(lease.id).unwrap();
    let tiny = s.grant(Duration::from_millis(1)).unwrap();
    if h.is_etcd() {
        assert_eq!(
            lease.ttl,
            Duration::from_secs(3),
            "rounded up to whole seconds"
        );
        assert_eq!(info.ttl, Duration::from_secs(3));
        assert_eq!(info.remaining.subsec_nanos(), 0, "whole seconds");
        assert!(info.remaining <= Duration::from_secs(3));
        assert_eq!(tiny.ttl, Duration::from_secs(2), "etcd's minimum");
    } else {
        assert_eq!(lease.ttl, odd, "kept as asked");
        assert_eq!(info.ttl, odd);
        assert_eq!(info.remaining, odd, "no time passed on the manual clock");
        assert_eq!(
            tiny.ttl,
            h.min_ttl(),
            "the builder's minimum (10 ms by default)"
        );
    }
    for l in [lease, tiny] {
        s.revoke(l.id).unwrap();
    }
}

/// Attach: the embedded engine moves the key to the lease in place (same revision and
/// version, no watch event); etcd rewrites it with its own value (a new revision, the version
/// grows, watchers see a put).
pub fn attach_is_a_rewrite_on_etcd_only<H: Harness>(h: &H) {
    let s = h.store();
    let key = h.key("attached");
    s.put(&key, b"v").unwrap();
    let before = s.get(&key).unwrap().unwrap();
    let watch = s.watch_key(&key).unwrap();
    let lease = s.grant(TTL).unwrap();
    s.attach(lease.id, &[key.as_slice()]).unwrap();
    let after = s.get(&key).unwrap().unwrap();
    assert_eq!(
        (after.lease, after.value.as_slice()),
        (Some(lease.id), b"v".as_slice())
    );
    if h.is_etcd() {
        assert!(after.mod_revision > before.mod_revision);
        assert_eq!(after.version, before.version + 1);
        match watch.recv_timeout(ACT).unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.lease, Some(lease.id)),
            other => panic!("{other:?}"),
        }
    } else {
        assert_eq!(after.mod_revision, before.mod_revision);
        assert_eq!(after.version, before.version);
        assert!(watch.try_recv().is_err(), "no event for an attach");
    }
    s.revoke(lease.id).unwrap();
}

/// Delete causes: the embedded engine says why a key went (deleted, lease revoked, lease
/// expired); etcd's events do not, so every delete is `Unknown` there.
pub fn delete_causes<H: Harness>(h: &H) {
    let s = h.store();
    let (deleted, revoked, expired) = (
        h.key("dc/deleted"),
        h.key("dc/revoked"),
        h.key("dc/expired"),
    );
    let watch = s.watch(h.key("dc/").as_slice()).unwrap();
    let a = s.grant(TTL).unwrap();
    let b = s.grant(TTL).unwrap();
    s.put(&deleted, b"1").unwrap();
    s.put_with_lease(&revoked, b"1", a.id).unwrap();
    s.put_with_lease(&expired, b"1", b.id).unwrap();
    s.delete(&deleted).unwrap();
    s.revoke(a.id).unwrap();
    h.pass(TTL + Duration::from_millis(1_500));
    let mut causes = Vec::new();
    while causes.len() < 3 {
        if let WatchEvent::Delete { key, cause, .. } = watch.recv_timeout(ACT).unwrap() {
            causes.push((key, cause));
        }
    }
    if h.is_etcd() {
        assert!(
            causes.iter().all(|(_, c)| *c == DeleteCause::Unknown),
            "{causes:?}"
        );
    } else {
        assert_eq!(
            causes,
            vec![
                (deleted, DeleteCause::Deleted),
                (revoked, DeleteCause::LeaseRevoked(a.id)),
                (expired, DeleteCause::LeaseExpired(b.id)),
            ]
        );
    }
}

/// `watch_from(0)`: revision 0 is before any history. The embedded engine refuses it as
/// compacted; etcd reads 0 as "no start revision", that is from the next change.
pub fn watch_from_zero<H: Harness>(h: &H) {
    let s = h.store();
    let key = h.key("from0");
    s.put(&key, b"before").unwrap();
    let r = s.watch_from(h.key("from0").as_slice(), Revision::new(0));
    if h.is_etcd() {
        let watch = r.unwrap();
        s.put(&key, b"after").unwrap();
        match watch.recv_timeout(ACT).unwrap() {
            WatchEvent::Put(kv) => assert_eq!(
                kv.value, b"after",
                "from now: the earlier put is not replayed"
            ),
            other => panic!("{other:?}"),
        }
    } else {
        assert!(
            matches!(r, Err(Error::Compacted { requested, .. }) if requested == Revision::new(0)),
            "{:?}",
            r.map(|_| ())
        );
    }
}

/// Size limits: both refuse an oversized value with `ValueTooLarge`, at different limits. The
/// embedded engine's is the value's length (1 MiB by default, `Builder::max_value_size`);
/// etcd's is the whole request's (`--max-request-bytes`, 1.5 MiB by default, plus gRPC's
/// framing), so a 1.2 MB value passes there.
pub fn size_limits<H: Harness>(h: &H) {
    let s = h.store();
    let key = h.key("big");
    let huge = vec![b'x'; 2_100_000];
    match s.put(&key, &huge) {
        Err(Error::ValueTooLarge { len, max }) => {
            assert_eq!(len, huge.len());
            assert!(max < len && max >= 1 << 20, "{max}");
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    let large = vec![b'x'; 1_200_000];
    let r = s.put(&key, &large);
    if h.is_etcd() {
        r.unwrap();
        assert_eq!(s.get(&key).unwrap().unwrap().value.len(), large.len());
        s.delete(&key).unwrap();
    } else {
        assert!(
            matches!(r, Err(Error::ValueTooLarge { max, .. }) if max == 1 << 20),
            "{r:?}"
        );
    }
    assert!(s.get(&key).unwrap().is_none());
}

/// Lease ids: both take any id from 1 to `LeaseId::MAX` (`i64::MAX`, etcd's); the embedded
/// engine assigns its own in sequence from 1, etcd from its members' id generator (large,
/// never above `i64::MAX`).
pub fn lease_id_ranges<H: Harness>(h: &H) {
    let s = h.store();
    let a = s.grant(TTL).unwrap();
    let b = s.grant(TTL).unwrap();
    assert!(a.id <= LeaseId::MAX && b.id <= LeaseId::MAX);
    if h.is_etcd() {
        assert!(
            a.id.get() > u64::from(u32::MAX),
            "etcd's ids are large: {}",
            a.id
        );
    } else {
        assert_eq!(b.id.get(), a.id.get() + 1, "in sequence");
    }
    // The top id: taken on both (unless an earlier run of the same etcd took it).
    match s.grant_with_id(LeaseId::MAX, TTL) {
        Ok(top) => {
            assert_eq!(top.id, LeaseId::MAX);
            assert_eq!(s.time_to_live(LeaseId::MAX).unwrap().id, LeaseId::MAX);
            s.revoke(LeaseId::MAX).unwrap();
        }
        Err(Error::LeaseExists(id)) if h.is_etcd() => assert_eq!(id, LeaseId::MAX),
        Err(e) => panic!("{e}"),
    }
    for l in [a, b] {
        s.revoke(l.id).unwrap();
    }
}

/// `revision()` and `ready()` on both: the revision is the last change's, and a store that is
/// open and reachable is ready; closed, it says so.
pub fn revision_and_readiness<H: Harness>(h: &H) {
    let s = h.store();
    s.ready().unwrap();
    let put = s.put(&h.key("rev"), b"1").unwrap();
    let now = s.revision().unwrap();
    assert!(now >= put, "{now} < {put}");
    assert_eq!(
        s.range_with_revision(h.key("rev").as_slice())
            .unwrap()
            .kvs
            .len(),
        1
    );
}
