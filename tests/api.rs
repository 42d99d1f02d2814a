//! The public API, call by call: leases, keys, attachments, revisions, limits, close.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{id, manual, secs};
use lessor::{Error, Lessor, Revision};

#[test]
fn grant_assigns_ascending_ids_and_reports_ttl_and_revision() {
    let (l, _clock, _dir) = manual();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(20)).unwrap();
    assert_eq!(a.id, id(1));
    assert_eq!(b.id, id(2));
    assert_eq!(a.ttl, secs(10));
    assert_eq!(a.revision, Revision::default());
    l.put("/x", "1").unwrap();
    assert_eq!(l.grant(secs(1)).unwrap().revision.get(), 1);
    assert_eq!(l.leases().unwrap(), vec![id(1), id(2), id(3)]);
}

#[test]
fn ttls_below_the_minimum_are_raised_and_above_the_maximum_refused() {
    let l = Lessor::builder()
        .min_ttl(secs(2))
        .max_ttl(secs(100))
        .ticker(false)
        .open_in_memory()
        .unwrap();
    assert_eq!(l.grant(Duration::ZERO).unwrap().ttl, secs(2));
    assert_eq!(l.grant(secs(100)).unwrap().ttl, secs(100));
    for ttl in [secs(101), Duration::MAX] {
        assert!(matches!(
            l.grant(ttl),
            Err(Error::TtlOutOfRange { max, .. }) if max == secs(100)
        ));
    }
    assert!(matches!(
        Lessor::builder()
            .min_ttl(secs(5))
            .max_ttl(secs(1))
            .open_in_memory(),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn grant_with_id_refuses_live_ids_and_auto_ids_skip_past_it() {
    let (l, _clock, _dir) = manual();
    l.grant_with_id(id(42), secs(10)).unwrap();
    assert!(matches!(
        l.grant_with_id(id(42), secs(10)),
        Err(Error::LeaseExists(x)) if x == id(42)
    ));
    assert_eq!(l.grant(secs(10)).unwrap().id, id(43));
    // a lower explicit id is fine, and does not pull auto ids back
    l.grant_with_id(id(7), secs(10)).unwrap();
    assert_eq!(l.grant(secs(10)).unwrap().id, id(44));
}

#[test]
fn auto_ids_run_out_at_i64_max_with_a_clear_error() {
    let (l, _clock, _dir) = manual();
    l.grant_with_id(lessor::LeaseId::MAX, secs(10)).unwrap();
    assert!(matches!(l.grant(secs(10)), Err(Error::LeaseIdsExhausted)));
    l.grant_with_id(id(5), secs(10)).unwrap();
}

#[test]
fn a_lease_is_dead_the_instant_its_deadline_passes() {
    let (l, clock, _dir) = manual();
    let lease = l.grant(secs(10)).unwrap();
    l.put("/k", "v").unwrap();
    clock.advance(secs(10) - Duration::from_nanos(1));
    assert_eq!(
        l.time_to_live(lease.id).unwrap().remaining,
        Duration::from_nanos(1)
    );
    clock.advance(Duration::from_nanos(1));
    let not_found =
        |r: lessor::Result<_>| matches!(r, Err(Error::LeaseNotFound(x)) if x == lease.id);
    assert!(not_found(l.renew(lease.id).map(|_| ())));
    assert!(not_found(l.time_to_live(lease.id).map(|_| ())));
    assert!(not_found(l.attach(lease.id, ["/k"])));
    assert!(not_found(l.detach(lease.id, ["/k"])));
    assert!(not_found(
        l.put_with_lease("/k2", "v", lease.id).map(|_| ())
    ));
    assert!(l.leases().unwrap().is_empty());
    // dead but not yet revoked: the ticker is off, so revoke_expired does it
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert!(not_found(l.revoke(lease.id).map(|_| ())));
}

#[test]
fn renew_restores_the_full_ttl() {
    let (l, clock, _dir) = manual();
    let lease = l.grant(secs(10)).unwrap();
    clock.advance(secs(7));
    assert_eq!(l.renew(lease.id).unwrap(), secs(10));
    assert_eq!(l.time_to_live(lease.id).unwrap().remaining, secs(10));
    clock.advance(secs(9));
    assert_eq!(l.revoke_expired().unwrap(), vec![]);
    clock.advance(secs(1));
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert!(matches!(l.renew(id(99)), Err(Error::LeaseNotFound(_))));
}

#[test]
fn revoke_deletes_the_lease_and_all_its_keys_in_one_revision() {
    let (l, _clock, _dir) = manual();
    let lease = l.grant(secs(10)).unwrap();
    let other = l.grant(secs(10)).unwrap();
    for k in ["/a", "/b", "/c"] {
        l.put_with_lease(k, "v", lease.id).unwrap();
    }
    l.put_with_lease("/d", "v", other.id).unwrap();
    l.put("/e", "v").unwrap();
    let before = l.revision().unwrap();
    let rev = l.revoke(lease.id).unwrap();
    assert_eq!(rev.get(), before.get() + 1);
    let left: Vec<_> = l.range("/").unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(left, vec![b"/d".to_vec(), b"/e".to_vec()]);
    assert_eq!(l.leases().unwrap(), vec![other.id]);
    // a revoke that deletes no key does not advance the revision
    let empty = l.grant(secs(10)).unwrap();
    assert_eq!(l.revoke(empty.id).unwrap(), rev);
    l.verify().unwrap();
}

#[test]
fn puts_track_create_and_mod_revisions_and_versions() {
    let (l, _clock, _dir) = manual();
    let r1 = l.put("/k", "a").unwrap();
    let r2 = l.put("/other", "x").unwrap();
    let r3 = l.put("/k", "b").unwrap();
    assert_eq!((r1.get(), r2.get(), r3.get()), (1, 2, 3));
    let kv = l.get("/k").unwrap().unwrap();
    assert_eq!(kv.value, b"b");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r3);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, None);
    assert!(l.delete("/k").unwrap());
    assert!(!l.delete("/k").unwrap());
    assert_eq!(l.revision().unwrap().get(), 4);
    let r5 = l.put("/k", "c").unwrap();
    let kv = l.get("/k").unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r5, 1));
}

#[test]
fn put_without_a_lease_detaches_and_put_with_another_lease_moves() {
    let (l, _clock, _dir) = manual();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(10)).unwrap();
    l.put_with_lease("/k", "1", a.id).unwrap();
    l.put_with_lease("/k", "2", b.id).unwrap();
    assert!(l.time_to_live_with_keys(a.id).unwrap().keys.is_empty());
    assert_eq!(
        l.time_to_live_with_keys(b.id).unwrap().keys,
        vec![b"/k".to_vec()]
    );
    l.put("/k", "3").unwrap();
    assert!(l.time_to_live_with_keys(b.id).unwrap().keys.is_empty());
    assert_eq!(l.get("/k").unwrap().unwrap().lease, None);
    l.revoke(b.id).unwrap();
    assert!(l.get("/k").unwrap().is_some());
    l.verify().unwrap();
}

#[test]
fn attach_moves_existing_keys_all_or_nothing() {
    let (l, _clock, _dir) = manual();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(10)).unwrap();
    l.put("/x", "1").unwrap();
    l.put_with_lease("/y", "2", a.id).unwrap();
    let rev = l.revision().unwrap();
    l.attach(b.id, ["/x", "/y"]).unwrap();
    assert_eq!(
        l.revision().unwrap(),
        rev,
        "attach does not advance the revision"
    );
    assert_eq!(
        l.time_to_live_with_keys(b.id).unwrap().keys,
        vec![b"/x".to_vec(), b"/y".to_vec()]
    );
    assert!(l.time_to_live_with_keys(a.id).unwrap().keys.is_empty());
    // a missing key fails the whole call
    l.put("/z", "3").unwrap();
    assert!(matches!(
        l.attach(a.id, ["/z", "/missing"]),
        Err(Error::KeyNotFound(k)) if k == b"/missing"
    ));
    assert_eq!(l.get("/z").unwrap().unwrap().lease, None);
    l.revoke(b.id).unwrap();
    assert!(l.get("/x").unwrap().is_none() && l.get("/y").unwrap().is_none());
    l.verify().unwrap();
}

#[test]
fn detach_keeps_keys_and_refuses_keys_not_attached() {
    let (l, _clock, _dir) = manual();
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(10)).unwrap();
    l.put_with_lease("/x", "1", a.id).unwrap();
    l.put_with_lease("/y", "2", b.id).unwrap();
    assert!(matches!(
        l.detach(a.id, ["/x", "/y"]),
        Err(Error::KeyNotAttached { key, lease }) if key == b"/y" && lease == a.id
    ));
    assert_eq!(
        l.get("/x").unwrap().unwrap().lease,
        Some(a.id),
        "nothing detached"
    );
    assert!(matches!(
        l.detach(a.id, ["/nope"]),
        Err(Error::KeyNotFound(_))
    ));
    l.detach(a.id, ["/x", "/x"]).unwrap(); // a key named twice counts once
    l.revoke(a.id).unwrap();
    assert_eq!(l.get("/x").unwrap().unwrap().lease, None);
    l.verify().unwrap();
}

#[test]
fn range_is_a_prefix_scan_in_key_order() {
    let (l, _clock, _dir) = manual();
    for k in ["/b/2", "/a", "/b/1", "/b", "/c", "/b/\u{ff}"] {
        l.put(k, k).unwrap();
    }
    let keys = |p: &str| -> Vec<String> {
        l.range(p)
            .unwrap()
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    };
    assert_eq!(keys("/b/"), ["/b/1", "/b/2", "/b/\u{ff}"]);
    assert_eq!(keys("/b"), ["/b", "/b/1", "/b/2", "/b/\u{ff}"]);
    assert_eq!(keys("").len(), 6);
    assert!(keys("/zzz").is_empty());
}

#[test]
fn keys_and_values_are_checked() {
    let l = Lessor::builder()
        .max_key_size(8)
        .max_value_size(4)
        .ticker(false)
        .open_in_memory()
        .unwrap();
    assert!(matches!(l.put("", "v"), Err(Error::InvalidKey(_))));
    assert!(matches!(
        l.put("123456789", "v"),
        Err(Error::KeyTooLarge { len: 9, max: 8 })
    ));
    assert!(matches!(
        l.put("k", "12345"),
        Err(Error::ValueTooLarge { len: 5, max: 4 })
    ));
    l.put("12345678", "1234").unwrap();
    l.put("k", "").unwrap();
    assert_eq!(l.get("k").unwrap().unwrap().value, b"");
    assert!(matches!(l.delete(""), Err(Error::InvalidKey(_))));
    let lease = l.grant(secs(10)).unwrap();
    assert!(matches!(
        l.attach(lease.id, [""]),
        Err(Error::InvalidKey(_))
    ));
    assert_eq!(l.get(b"\xff\x00binary").unwrap(), None);
}

#[test]
fn time_to_live_reports_remaining_time_and_keys() {
    let (l, clock, _dir) = manual();
    let lease = l.grant(secs(30)).unwrap();
    l.put_with_lease("/b", "", lease.id).unwrap();
    l.put_with_lease("/a", "", lease.id).unwrap();
    clock.advance(secs(12));
    let info = l.time_to_live_with_keys(lease.id).unwrap();
    assert_eq!(info.id, lease.id);
    assert_eq!(info.ttl, secs(30));
    assert_eq!(info.remaining, secs(18));
    assert_eq!(info.keys, vec![b"/a".to_vec(), b"/b".to_vec()]);
    // Without the keys: the same, from memory.
    let quick = l.time_to_live(lease.id).unwrap();
    assert_eq!((quick.ttl, quick.remaining), (secs(30), secs(18)));
    assert!(quick.keys.is_empty());
}

#[test]
fn calls_after_close_get_closed_and_close_is_idempotent() {
    let (l, _clock, _dir) = manual();
    let lease = l.grant(secs(10)).unwrap();
    let clone = l.clone();
    l.close().unwrap();
    l.close().unwrap();
    assert!(matches!(clone.renew(lease.id), Err(Error::Closed)));
    assert!(matches!(clone.grant(secs(1)), Err(Error::Closed)));
    assert!(matches!(clone.get("/k"), Err(Error::Closed)));
    assert!(matches!(clone.put("/k", "v"), Err(Error::Closed)));
    assert!(matches!(clone.revoke_expired(), Err(Error::Closed)));
    assert!(matches!(clone.leases(), Err(Error::Closed)));
    assert!(!clone.health().ticker_running);
}

#[test]
fn lessor_is_a_send_sync_clone_handle() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Lessor>();
}

#[test]
fn errors_read_well() {
    let (l, _clock, _dir) = manual();
    let e = l.renew(id(9)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "lease 9 not found (never granted, revoked or expired)"
    );
    let e = l
        .attach(l.grant(secs(1)).unwrap().id, ["/nope"])
        .unwrap_err();
    assert_eq!(e.to_string(), "key \"/nope\" not found");
}
