//! Hostile and wrong input, one test per row of `docs/hostile-input.md`: every bad call gets a
//! clear `Error` (or the documented behaviour), and what was committed before it is intact
//! afterwards (same keys, leases and revision, and `verify()` passes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestDir, id, secs, test_dir};
use lessor::{
    Clock, Compare, EndReason, Error, KeepAliveOptions, KeyValue, LeaseId, Lessor, MAX_TTL,
    ManualClock, Op, Revision, Txn, WatchEnd,
};

// ---------------------------------------------------------------------------------------------
// Set-up shared by the rows: a baseline of committed data, compared after the bad calls.

/// A lessor on a file, driven by a manual clock, with committed data: lease `base` (1000 s)
/// holding `/base/a` and `/base/b`, and `/plain` attached to no lease.
struct Fixture {
    l: Lessor,
    clock: ManualClock,
    dir: TestDir,
    base: LeaseId,
}

/// What must survive a bad call: every key, the live leases, the revision.
#[derive(Debug, PartialEq)]
struct State {
    kvs: Vec<KeyValue>,
    leases: Vec<LeaseId>,
    revision: Revision,
}

fn fixture() -> Fixture {
    fixture_with(Lessor::builder())
}

fn fixture_with(builder: lessor::Builder) -> Fixture {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = builder
        .clock(clock.clone())
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let base = l.grant(secs(1000)).unwrap().id;
    l.put_with_lease("/base/a", "1", base).unwrap();
    l.put_with_lease("/base/b", "2", base).unwrap();
    l.put("/plain", "p").unwrap();
    Fixture {
        l,
        clock,
        dir,
        base,
    }
}

fn state(l: &Lessor) -> State {
    State {
        kvs: l.range("").unwrap(),
        leases: l.leases().unwrap(),
        revision: l.revision().unwrap(),
    }
}

impl Fixture {
    /// Nothing committed changed, the file is consistent, and the base lease still owns its keys.
    #[track_caller]
    fn assert_intact(&self, before: &State) {
        assert_eq!(&state(&self.l), before, "committed data changed");
        self.l.verify().unwrap();
        assert_eq!(
            self.l.time_to_live_with_keys(self.base).unwrap().keys,
            vec![b"/base/a".to_vec(), b"/base/b".to_vec()]
        );
    }

    /// Closes, reopens the file, and checks that the baseline came back.
    #[track_caller]
    fn assert_intact_after_reopen(self, before: &State) {
        self.l.close().unwrap();
        let l = common::manual_at(&self.dir.path, &self.clock);
        l.verify().unwrap();
        assert_eq!(l.range("").unwrap(), before.kvs);
        assert_eq!(l.leases().unwrap(), before.leases);
        assert_eq!(l.revision().unwrap(), before.revision);
        l.close().unwrap();
    }
}

/// The error of a call that must fail.
#[track_caller]
fn err<T>(r: lessor::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error, the call succeeded"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_not_found<T>(r: lessor::Result<T>, want: LeaseId) {
    match err(r) {
        Error::LeaseNotFound(got) if got == want => {}
        other => panic!("expected LeaseNotFound({want}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TTLs

#[test]
fn ttl_zero_or_below_min_ttl_is_raised_to_min_ttl() {
    let fx = fixture_with(Lessor::builder().min_ttl(secs(2)));
    let before = state(&fx.l);
    for ttl in [Duration::ZERO, Duration::from_nanos(1), secs(1)] {
        let lease = fx.l.grant(ttl).unwrap();
        assert_eq!(lease.ttl, secs(2), "{ttl:?}");
        assert_eq!(fx.l.time_to_live(lease.id).unwrap().ttl, secs(2));
        fx.l.revoke(lease.id).unwrap();
    }
    // the default minimum is 10 ms; a zero TTL is not an instant expiry
    let l = Lessor::builder()
        .clock(fx.clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let lease = l.grant(Duration::ZERO).unwrap();
    assert_eq!(lease.ttl, Duration::from_millis(10));
    assert!(l.renew(lease.id).is_ok());
    fx.clock.advance(Duration::from_millis(10));
    assert_not_found(l.renew(lease.id), lease.id);
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    fx.assert_intact(&before);
}

#[test]
fn ttl_above_max_ttl_and_duration_max_get_ttl_out_of_range() {
    let max = secs(2000);
    let fx = fixture_with(Lessor::builder().max_ttl(max));
    let before = state(&fx.l);
    assert_eq!(fx.l.grant(max).unwrap().ttl, max); // at the limit
    let before = State {
        leases: fx.l.leases().unwrap(),
        ..before
    };
    for ttl in [max + Duration::from_nanos(1), Duration::MAX] {
        for r in [fx.l.grant(ttl), fx.l.grant_with_id(id(500), ttl)] {
            match err(r) {
                Error::TtlOutOfRange { ttl: got, max } => {
                    assert_eq!((got, max), (ttl, secs(2000)));
                }
                other => panic!("{ttl:?}: {other:?}"),
            }
        }
    }
    assert!(fx.l.time_to_live(id(500)).is_err());
    fx.assert_intact(&before);
}

#[test]
fn ttl_of_max_ttl_is_accepted_and_a_larger_max_ttl_is_lowered_to_it() {
    // Builder::max_ttl(Duration::MAX) is lowered to MAX_TTL (etcd's 9e9 s).
    let fx = fixture_with(Lessor::builder().max_ttl(Duration::MAX));
    let before = state(&fx.l);
    let lease = fx.l.grant(MAX_TTL).unwrap();
    assert_eq!(lease.ttl, MAX_TTL);
    assert!(matches!(
        err(fx.l.grant(MAX_TTL + Duration::from_nanos(1))),
        Error::TtlOutOfRange { max, .. } if max == MAX_TTL
    ));
    assert_eq!(fx.l.renew(lease.id).unwrap(), MAX_TTL);
    assert_eq!(fx.l.time_to_live(lease.id).unwrap().remaining, MAX_TTL);
    let before = State {
        leases: fx.l.leases().unwrap(),
        ..before
    };
    fx.assert_intact(&before);
    // a billion seconds later only the 1000 s lease has expired
    fx.clock.advance(secs(1_000_000_000));
    assert_eq!(fx.l.revoke_expired().unwrap(), vec![fx.base]);
    assert!(fx.l.renew(lease.id).is_ok());
    assert_eq!(fx.l.leases().unwrap(), vec![lease.id]);
    fx.l.verify().unwrap();
}

#[test]
fn huge_ttl_on_a_clock_far_from_its_epoch_saturates_and_never_wraps() {
    // 100 years on the clock, then a 285-year TTL: now + TTL is past the 2^63 ns (292 years)
    // that deadlines can express.
    let clock = ManualClock::new();
    clock.advance(secs(100 * 365 * 86_400));
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let keep = l.grant(secs(1000)).unwrap();
    l.put_with_lease("/keep", "v", keep.id).unwrap();
    let huge = l.grant(MAX_TTL).unwrap();
    assert!(l.renew(huge.id).is_ok());
    let info = l.time_to_live(huge.id).unwrap();
    assert!(info.remaining > secs(190 * 365 * 86_400), "{info:?}"); // saturated: 192 years
    assert!(info.remaining <= MAX_TTL);
    clock.advance(secs(999));
    assert!(l.revoke_expired().unwrap().is_empty());
    assert!(l.renew(huge.id).is_ok());
    clock.advance(secs(1));
    assert_eq!(l.revoke_expired().unwrap(), vec![keep.id]);
    assert_eq!(l.leases().unwrap(), vec![huge.id]);
    l.verify().unwrap();
}

#[test]
fn keep_alive_interval_zero_is_raised_and_not_below_the_ttl_is_invalid_config() {
    let fx = fixture();
    let before = state(&fx.l);
    let lease = fx.l.grant(secs(10)).unwrap();
    for every in [secs(10), secs(11), Duration::MAX] {
        let r =
            fx.l.keep_alive_with(lease.id, KeepAliveOptions::new().interval(every));
        assert!(matches!(err(r), Error::InvalidConfig(_)), "{every:?}");
    }
    let ka =
        fx.l.keep_alive_with(lease.id, KeepAliveOptions::new().interval(Duration::ZERO))
            .unwrap(); // raised to 1 ms
    assert_eq!(ka.ended(), None);
    ka.cancel();
    // run_for(Duration::MAX) and an `until` far in the future saturate
    let ka =
        fx.l.keep_alive_with(lease.id, KeepAliveOptions::new().run_for(Duration::MAX))
            .unwrap();
    let far = Instant::now() + secs(1000 * 365 * 86_400);
    let ka2 = fx.l.keep_alive_until(lease.id, far).unwrap();
    // an `until` in the past renews once and finishes
    let ka3 = fx.l.keep_alive_until(lease.id, Instant::now()).unwrap();
    assert!(common::wait_until(secs(10), || ka3.ended() == Some(EndReason::Finished)));
    drop((ka, ka2));
    fx.l.revoke(lease.id).unwrap();
    fx.assert_intact(&before);
}

// ---------------------------------------------------------------------------------------------
// Ids

#[test]
fn ids_zero_negative_and_above_i64_max_are_not_lease_ids() {
    assert_eq!(LeaseId::new(0), None);
    assert_eq!(LeaseId::new(i64::MAX as u64 + 1), None);
    assert_eq!(LeaseId::new(u64::MAX), None);
    assert_eq!(LeaseId::new(i64::MAX as u64), Some(LeaseId::MAX));
    for (raw, shown) in [(0u64, "0"), (u64::MAX, "18446744073709551615")] {
        let e = LeaseId::try_from(raw).unwrap_err();
        assert!(matches!(e, Error::InvalidLeaseId(v) if v == raw));
        assert!(e.to_string().contains(shown), "{e}");
    }
    // etcd ids are i64: negative ones are refused, and the message shows the i64
    for raw in [-1i64, i64::MIN, 0] {
        let e = LeaseId::try_from(raw).unwrap_err();
        assert!(matches!(e, Error::InvalidLeaseId(v) if v == raw as u64));
        assert!(e.to_string().contains(&format!("{raw}")), "{e}");
    }
    assert_eq!(LeaseId::try_from(i64::MAX).unwrap(), LeaseId::MAX);
    // text: negative numbers are reported as themselves, not as 0
    for (text, raw) in [
        ("-1", u64::MAX),
        ("0", 0),
        ("9223372036854775808", i64::MAX as u64 + 1),
        ("abc", 0),
        ("", 0),
    ] {
        let e = text.parse::<LeaseId>().unwrap_err();
        assert!(
            matches!(e, Error::InvalidLeaseId(v) if v == raw),
            "{text:?}: {e:?}"
        );
    }
    assert!(
        "-1".parse::<LeaseId>()
            .unwrap_err()
            .to_string()
            .contains("-1")
    );
    assert_eq!(" 42 ".parse::<LeaseId>().unwrap(), id(42));
}

#[test]
fn id_i64_max_works_everywhere_then_auto_ids_are_exhausted() {
    let fx = fixture();
    let max = LeaseId::MAX;
    let lease = fx.l.grant_with_id(max, secs(10)).unwrap();
    assert_eq!(lease.id, max);
    assert!(fx.l.renew(max).is_ok());
    fx.l.put_with_lease("/max/a", "v", max).unwrap();
    fx.l.put("/max/b", "v").unwrap();
    fx.l.attach(max, ["/max/b"]).unwrap();
    fx.l.detach(max, ["/max/b"]).unwrap();
    fx.l.txn(Txn::new().then(Op::put_with_lease("/max/c", "v", max)))
        .unwrap();
    assert_eq!(
        fx.l.time_to_live_with_keys(max).unwrap().keys,
        vec![b"/max/a".to_vec(), b"/max/c".to_vec()]
    );
    drop(fx.l.keep_alive(max).unwrap());
    assert!(matches!(
        err(fx.l.grant_with_id(max, secs(1))),
        Error::LeaseExists(x) if x == max
    ));
    fx.l.revoke(max).unwrap();
    let before = state(&fx.l);
    // auto ids never reuse an id: after i64::MAX there is none left, revoked or not
    assert!(matches!(err(fx.l.grant(secs(1))), Error::LeaseIdsExhausted));
    assert!(
        err(fx.l.grant(secs(1)))
            .to_string()
            .contains("grant with explicit ids")
    );
    fx.assert_intact(&before);
    let l = fx.l.clone();
    let (dir, clock) = (&fx.dir, fx.clock.clone());
    l.close().unwrap();
    let l = common::manual_at(&dir.path, &clock);
    assert!(matches!(err(l.grant(secs(1))), Error::LeaseIdsExhausted));
    let explicit = l.grant_with_id(id(77), secs(1)).unwrap(); // explicit ids still work
    assert_eq!(explicit.id, id(77));
    l.close().unwrap();
}

#[test]
fn grant_with_id_of_a_live_lease_gets_lease_exists() {
    let fx = fixture();
    let before = state(&fx.l);
    assert!(matches!(
        err(fx.l.grant_with_id(fx.base, secs(1))),
        Error::LeaseExists(x) if x == fx.base
    ));
    // one nanosecond before its deadline it is still live
    fx.clock.advance(secs(1000) - Duration::from_nanos(1));
    assert!(matches!(
        err(fx.l.grant_with_id(fx.base, secs(1))),
        Error::LeaseExists(_)
    ));
    fx.assert_intact(&before);
}

/// Every call that names a lease, on an id whose lease is not alive.
#[track_caller]
fn assert_dead_everywhere(l: &Lessor, dead: LeaseId) {
    assert_not_found(l.renew(dead), dead);
    assert_not_found(l.time_to_live(dead), dead);
    assert_not_found(l.put_with_lease("/new", "v", dead), dead);
    assert_not_found(l.attach(dead, ["/plain"]), dead);
    assert_not_found(l.detach(dead, ["/plain"]), dead);
    assert_not_found(l.keep_alive(dead), dead);
    assert_not_found(l.keep_alive_until(dead, Instant::now() + secs(60)), dead);
    assert_not_found(
        l.keep_alive_with(dead, KeepAliveOptions::new().revoke_on_drop(true)),
        dead,
    );
    assert_not_found(
        l.txn(
            Txn::new()
                .then(Op::put("/new2", "v"))
                .then(Op::put_with_lease("/new", "v", dead)),
        ),
        dead,
    );
    // a put_with_lease in the branch that does not run is not looked at
    let r = l
        .txn(
            Txn::new()
                .when(Compare::absent("/plain"))
                .then(Op::put_with_lease("/new", "v", dead)),
        )
        .unwrap();
    assert!(!r.succeeded);
    assert!(!l.leases().unwrap().contains(&dead));
    assert!(l.get("/new").unwrap().is_none());
    assert!(l.get("/new2").unwrap().is_none());
}

#[test]
fn unknown_revoked_and_expired_ids_get_lease_not_found_from_every_method() {
    let fx = fixture();
    let unknown = id(999);
    let revoked = fx.l.grant(secs(10)).unwrap().id;
    fx.l.put_with_lease("/revoked/k", "v", revoked).unwrap();
    fx.l.revoke(revoked).unwrap();
    let expired = fx.l.grant(secs(5)).unwrap().id;
    fx.l.put_with_lease("/expired/k", "v", expired).unwrap();
    fx.clock.advance(secs(5)); // dead now, but not revoked (no ticker)
    let before = state(&fx.l);
    assert!(before.kvs.iter().any(|kv| kv.key == b"/expired/k"));

    for dead in [unknown, revoked, expired] {
        assert_dead_everywhere(&fx.l, dead);
        // detaching its own key is refused the same way
        assert_not_found(fx.l.detach(dead, ["/expired/k"]), dead);
    }
    for dead in [unknown, revoked] {
        assert_not_found(fx.l.revoke(dead), dead);
    }
    // a txn put_with_lease on a dead lease aborts the whole transaction
    assert_eq!(state(&fx.l), before);
    fx.l.verify().unwrap();

    // the documented exceptions: an expired lease not yet revoked can be revoked (its key goes)
    let rev = fx.l.revoke(expired).unwrap();
    assert_eq!(rev, before.revision.next());
    assert!(fx.l.get("/expired/k").unwrap().is_none());
    assert_not_found(fx.l.revoke(expired), expired);
    // ...and grant_with_id may take an unknown or revoked id again (auto ids never do)
    fx.l.grant_with_id(revoked, secs(10)).unwrap();
    fx.l.grant_with_id(unknown, secs(10)).unwrap();
    assert!(
        fx.l.time_to_live_with_keys(revoked)
            .unwrap()
            .keys
            .is_empty()
    );
    fx.l.revoke(revoked).unwrap();
    fx.l.revoke(unknown).unwrap();
    let after = State {
        kvs: before
            .kvs
            .into_iter()
            .filter(|kv| kv.key != b"/expired/k")
            .collect(),
        leases: vec![fx.base],
        revision: rev,
    };
    fx.assert_intact(&after);
    fx.assert_intact_after_reopen(&after);
}

#[test]
fn grant_with_id_of_an_expired_lease_revokes_it_and_grants_afresh() {
    let fx = fixture();
    let old = fx.l.grant(secs(5)).unwrap().id;
    fx.l.put_with_lease("/old/k", "v", old).unwrap();
    let events = fx.l.subscribe().unwrap();
    fx.clock.advance(secs(5));
    let rev_before = fx.l.revision().unwrap();
    let fresh = fx.l.grant_with_id(old, secs(10)).unwrap();
    assert_eq!(fresh.id, old);
    assert!(fx.l.get("/old/k").unwrap().is_none()); // deleted as expiry would
    assert_eq!(fx.l.revision().unwrap(), rev_before.next());
    assert!(fx.l.time_to_live_with_keys(old).unwrap().keys.is_empty());
    assert!(matches!(
        events.try_recv(),
        Ok(lessor::LeaseEvent::Revoked {
            cause: lessor::RevokeCause::Expired,
            ..
        })
    ));
    fx.l.verify().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Keys and values

#[test]
fn empty_keys_get_invalid_key_from_every_write() {
    let fx = fixture();
    let before = state(&fx.l);
    let l = &fx.l;
    let b = fx.base;
    let results = [
        err(l.put("", "v")),
        err(l.put_with_lease("", "v", b)),
        err(l.delete("")),
        err(l.attach(b, [""])),
        err(l.detach(b, [""])),
        err(l.attach(b, ["/plain", ""])), // all or nothing
        err(l.txn(Txn::new().then(Op::put("", "v")))),
        err(l.txn(Txn::new().then(Op::put_with_lease("", "v", b)))),
        err(l.txn(Txn::new().then(Op::delete("")))),
        err(l.txn(Txn::new().then(Op::get("")))),
        err(l.txn(Txn::new().when(Compare::exists("")))),
        err(l.txn(Txn::new().otherwise(Op::put("", "v")))),
    ];
    for (i, e) in results.into_iter().enumerate() {
        assert!(matches!(e, Error::InvalidKey(_)), "call {i}: {e:?}");
        assert!(e.to_string().contains("empty"), "call {i}: {e}");
    }
    // reads are not checked: no key is empty, and "" as a prefix means every key
    assert_eq!(l.get("").unwrap(), None);
    assert_eq!(l.range("").unwrap().len(), 3);
    drop(l.watch("").unwrap());
    fx.assert_intact(&before);
}

/// Every call that takes a key, with a key of `len` bytes; `Ok` where accepted.
fn key_calls(l: &Lessor, base: LeaseId, len: usize) -> Vec<(&'static str, lessor::Result<()>)> {
    let k = vec![b'k'; len];
    let k2 = vec![b'j'; len];
    let ok = |r: lessor::Result<Revision>| r.map(|_| ());
    vec![
        ("put", ok(l.put(&k, "v"))),
        ("put_with_lease", ok(l.put_with_lease(&k2, "v", base))),
        ("detach", l.detach(base, [&k2])),
        ("attach", l.attach(base, [&k])),
        (
            "txn compare",
            l.txn(Txn::new().when(Compare::exists(&k))).map(|_| ()),
        ),
        ("txn get", l.txn(Txn::new().then(Op::get(&k))).map(|_| ())),
        (
            "txn put",
            l.txn(Txn::new().then(Op::put(&k, "w"))).map(|_| ()),
        ),
        (
            "txn put_with_lease",
            l.txn(
                Txn::new()
                    .otherwise(Op::put_with_lease(&k2, "w", base))
                    .when(Compare::absent(&k)),
            )
            .map(|_| ()),
        ),
        ("delete", l.delete(&k).map(|_| ())),
        (
            "txn delete",
            l.txn(Txn::new().then(Op::delete(&k2))).map(|_| ()),
        ),
    ]
}

#[test]
fn keys_at_max_key_size_are_accepted_and_one_byte_over_get_key_too_large() {
    for max in [16, 4096] {
        let builder = Lessor::builder();
        let builder = if max == 4096 {
            builder // the default
        } else {
            builder.max_key_size(max)
        };
        let fx = fixture_with(builder);
        let before = state(&fx.l);
        for (call, r) in key_calls(&fx.l, fx.base, max + 1) {
            match r {
                Err(Error::KeyTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
                other => panic!("{call} with a key of {} bytes: {other:?}", max + 1),
            }
        }
        fx.assert_intact(&before);
        for (call, r) in key_calls(&fx.l, fx.base, max) {
            assert!(r.is_ok(), "{call} with a key of {max} bytes: {r:?}");
        }
        // reads are not limited: an over-long key or prefix is simply not there
        let long = vec![b'k'; max + 1];
        assert_eq!(fx.l.get(&long).unwrap(), None);
        assert!(fx.l.range(&long).unwrap().is_empty());
        drop(fx.l.watch(&long).unwrap());
        fx.l.verify().unwrap();
        assert_eq!(fx.l.get("/plain").unwrap(), before.kvs[2].clone().into());
    }
}

#[test]
fn values_at_max_value_size_are_accepted_and_one_byte_over_get_value_too_large() {
    for max in [32, 1 << 20] {
        let builder = Lessor::builder();
        let builder = if max == 1 << 20 {
            builder // the default
        } else {
            builder.max_value_size(max)
        };
        let fx = fixture_with(builder);
        let before = state(&fx.l);
        let over = vec![b'v'; max + 1];
        let b = fx.base;
        let results = [
            err(fx.l.put("/v", &over)),
            err(fx.l.put_with_lease("/v", &over, b)),
            err(fx.l.put("/plain", &over)), // an existing key keeps its value
            err(fx.l.txn(Txn::new().then(Op::put("/v", &over)))),
            err(fx
                .l
                .txn(Txn::new().otherwise(Op::put_with_lease("/v", &over, b)))),
        ];
        for (i, e) in results.into_iter().enumerate() {
            match e {
                Error::ValueTooLarge { len, max: m } => assert_eq!((len, m), (max + 1, max)),
                other => panic!("call {i}: {other:?}"),
            }
        }
        fx.assert_intact(&before);
        let at = vec![b'v'; max];
        fx.l.put("/v1", &at).unwrap();
        fx.l.put_with_lease("/v2", &at, b).unwrap();
        fx.l.txn(Txn::new().then(Op::put("/v3", &at))).unwrap();
        fx.l.put("/empty", "").unwrap(); // an empty value is a value
        assert_eq!(fx.l.get("/v2").unwrap().unwrap().value.len(), max);
        assert_eq!(fx.l.get("/empty").unwrap().unwrap().value, b"");
        // a comparison's value is never stored, so it is not limited
        let cmp = Compare::value("/plain", lessor::CmpOp::Equal, &over);
        assert!(!fx.l.txn(Txn::new().when(cmp)).unwrap().succeeded);
        fx.l.verify().unwrap();
    }
}

#[test]
fn a_transaction_branch_writing_one_key_twice_gets_invalid_key() {
    let fx = fixture();
    let before = state(&fx.l);
    let e = err(fx
        .l
        .txn(Txn::new().then(Op::put("/x", "1")).then(Op::delete("/x"))));
    assert!(
        matches!(e, Error::InvalidKey(m) if m.contains("twice")),
        "{e:?}"
    );
    fx.assert_intact(&before);
}

// ---------------------------------------------------------------------------------------------
// Attach and detach

#[test]
fn attach_of_a_missing_key_gets_key_not_found_and_attaches_nothing() {
    let fx = fixture();
    let before = state(&fx.l);
    let other = fx.l.grant(secs(100)).unwrap().id;
    let before = State {
        leases: fx.l.leases().unwrap(),
        ..before
    };
    let e = err(fx.l.attach(other, ["/plain", "/missing", "/base/a"]));
    assert!(
        matches!(&e, Error::KeyNotFound(k) if k == b"/missing"),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"/missing\""), "{e}");
    assert!(fx.l.time_to_live_with_keys(other).unwrap().keys.is_empty());
    assert_eq!(fx.l.get("/plain").unwrap().unwrap().lease, None);
    fx.assert_intact(&before);
}

#[test]
fn attach_to_a_dead_lease_gets_lease_not_found() {
    let fx = fixture();
    let revoked = fx.l.grant(secs(10)).unwrap().id;
    fx.l.revoke(revoked).unwrap();
    let expired = fx.l.grant(secs(10)).unwrap().id;
    fx.clock.advance(secs(10));
    let before = state(&fx.l);
    for dead in [revoked, expired, id(12345)] {
        assert_not_found(fx.l.attach(dead, ["/plain", "/base/a"]), dead);
        // a missing key does not mask the dead lease
        assert_not_found(fx.l.attach(dead, ["/missing"]), dead);
    }
    assert_eq!(fx.l.get("/plain").unwrap().unwrap().lease, None);
    fx.assert_intact(&before);
}

#[test]
fn detach_of_keys_not_attached_gets_key_not_attached_and_detaches_nothing() {
    let fx = fixture();
    let other = fx.l.grant(secs(100)).unwrap().id;
    fx.l.put_with_lease("/other", "o", other).unwrap();
    let before = state(&fx.l);
    // a key with no lease, and a key of another lease
    for key in ["/plain", "/other"] {
        let e = err(fx.l.detach(fx.base, ["/base/a", key]));
        assert!(
            matches!(&e, Error::KeyNotAttached { key: k, lease } if k == key.as_bytes() && *lease == fx.base),
            "{e:?}"
        );
        assert!(e.to_string().contains("is not attached to lease"), "{e}");
    }
    let e = err(fx.l.detach(fx.base, ["/base/a", "/missing"]));
    assert!(
        matches!(&e, Error::KeyNotFound(k) if k == b"/missing"),
        "{e:?}"
    );
    // detaching twice: the second time it is no longer attached
    fx.l.detach(other, ["/other", "/other"]).unwrap(); // named twice counts once
    assert!(matches!(
        err(fx.l.detach(other, ["/other"])),
        Error::KeyNotAttached { .. }
    ));
    fx.l.attach(other, ["/other"]).unwrap();
    fx.assert_intact(&before);
}

#[test]
fn attach_and_detach_of_no_keys_do_nothing() {
    let fx = fixture();
    let before = state(&fx.l);
    fx.l.attach(fx.base, Vec::<&[u8]>::new()).unwrap();
    fx.l.detach(fx.base, Vec::<&[u8]>::new()).unwrap();
    assert_not_found(fx.l.attach(id(404), Vec::<&[u8]>::new()), id(404));
    fx.assert_intact(&before);
}

// ---------------------------------------------------------------------------------------------
// Files

/// A closed database with the baseline's data in it; returns its bytes and state.
fn closed_database() -> (TestDir, ManualClock, Vec<u8>, State) {
    let fx = fixture();
    let before = state(&fx.l);
    fx.l.close().unwrap();
    let bytes = std::fs::read(&fx.dir.path).unwrap();
    (fx.dir, fx.clock, bytes, before)
}

/// Opens `path` again with the original bytes back in place and checks the data.
#[track_caller]
fn assert_restores(path: &Path, clock: &ManualClock, bytes: &[u8], before: &State) {
    std::fs::write(path, bytes).unwrap();
    let l = common::manual_at(path, clock);
    l.verify().unwrap();
    assert_eq!(l.range("").unwrap(), before.kvs);
    assert_eq!(l.revision().unwrap(), before.revision);
    l.close().unwrap();
}

/// Pseudo-random bytes (xorshift), reproducible.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn a_file_that_is_not_a_database_gets_not_lessor_database_and_is_untouched() {
    let dir = test_dir();
    let text = b"# my notes\nnot a database at all\n".repeat(300);
    for (what, bytes) in [
        ("text", text),
        ("random", noise(64 * 1024, 0x9e37_79b9_7f4a_7c15)),
        ("a few bytes", b"xy".to_vec()),
    ] {
        std::fs::write(&dir.path, &bytes).unwrap();
        let e = err(Lessor::open(&dir.path));
        assert!(matches!(e, Error::NotLessorDatabase(_)), "{what}: {e:?}");
        assert!(e.to_string().starts_with("not a lessor database"), "{e}");
        assert_eq!(
            std::fs::read(&dir.path).unwrap(),
            bytes,
            "{what} was modified"
        );
    }
}

#[test]
fn a_truncated_database_is_refused_and_the_full_file_opens_intact() {
    let (dir, clock, bytes, before) = closed_database();
    let len = bytes.len();
    let mut cuts = vec![
        1,
        16,
        100,
        511,
        512,
        4095,
        4096,
        4097,
        len / 2,
        len - 4096,
        len - 1,
    ];
    cuts.sort_unstable();
    cuts.dedup();
    for keep in cuts {
        std::fs::write(&dir.path, &bytes[..keep]).unwrap();
        let e = err(Lessor::open(&dir.path));
        // cut inside redb's 9-byte magic number: not a database; anywhere later: damaged
        let expected = match keep {
            0..9 => matches!(e, Error::NotLessorDatabase(_)),
            _ => matches!(&e, Error::Corrupted(m) if m.contains("truncated")),
        };
        assert!(expected, "cut at {keep} of {len} bytes: {e:?}");
        assert_eq!(
            std::fs::read(&dir.path).unwrap().len(),
            keep,
            "cut at {keep}: modified"
        );
    }
    // an empty file is a new database (there was nothing in it to lose)
    std::fs::write(&dir.path, b"").unwrap();
    let l = common::manual_at(&dir.path, &clock);
    assert!(l.range("").unwrap().is_empty());
    l.close().unwrap();
    assert_restores(&dir.path, &clock, &bytes, &before);
}

/// Every entry of lessor's four tables in the file at `path`, read through redb directly: what
/// a refused open must leave as it was. (redb itself rewrites its allocator state when a file is
/// opened and closed, so the bytes may differ.)
fn dump(path: &Path) -> Vec<String> {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let db = redb::Database::open(path).unwrap();
    let read = db.begin_read().unwrap();
    let mut out = Vec::new();
    let meta: TableDefinition<&str, u64> = TableDefinition::new("lessor.meta");
    for e in read.open_table(meta).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        out.push(format!("meta {} = {}", k.value(), v.value()));
    }
    let leases: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
    for e in read.open_table(leases).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        out.push(format!("lease {} = {:?}", k.value(), v.value()));
    }
    let kv: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
    for e in read.open_table(kv).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        out.push(format!("kv {:?} = {:?}", k.value(), v.value()));
    }
    let index: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lessor.lease_keys");
    for e in read.open_table(index).unwrap().iter().unwrap() {
        out.push(format!("index {:?}", e.unwrap().0.value()));
    }
    out
}

/// Sets `lessor.meta` entry `key` of the database at `path` to `value` (`None`: removes it),
/// through redb directly.
fn set_meta(path: &Path, key: &str, value: Option<u64>) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("lessor.meta");
        let mut meta = txn.open_table(def).unwrap();
        match value {
            Some(v) => drop(meta.insert(key, v).unwrap()),
            None => drop(meta.remove(key).unwrap()),
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_database_of_a_future_format_gets_incompatible_format_and_is_untouched() {
    let (dir, clock, bytes, before) = closed_database();
    for format in [4, 99, u64::MAX, 0] {
        set_meta(&dir.path, "format", Some(format));
        let on_disk = dump(&dir.path);
        let e = err(Lessor::open(&dir.path));
        assert!(
            matches!(e, Error::IncompatibleFormat { found, supported: 3 } if found == format),
            "{e:?}"
        );
        assert!(e.to_string().contains("reads formats 1 to 3"), "{e}");
        assert_eq!(
            dump(&dir.path),
            on_disk,
            "format {format}: the tables were modified"
        );
    }
    // no format at all: damaged metadata
    set_meta(&dir.path, "format", None);
    let e = err(Lessor::open(&dir.path));
    assert!(
        matches!(&e, Error::Corrupted(m) if m.contains("format")),
        "{e:?}"
    );
    // the file as this version wrote it opens intact (and setting it back by hand works too)
    set_meta(&dir.path, "format", Some(3));
    let l = common::manual_at(&dir.path, &clock);
    assert_eq!(l.range("").unwrap(), before.kvs);
    l.close().unwrap();
    assert_restores(&dir.path, &clock, &bytes, &before);
}

#[test]
fn a_redb_database_of_another_program_gets_not_lessor_database() {
    let dir = test_dir();
    {
        let db = redb::Database::create(&dir.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let t: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("users");
            txn.open_table(t).unwrap().insert("ada", "admin").unwrap();
        }
        txn.commit().unwrap();
    }
    let e = err(Lessor::open(&dir.path));
    assert!(matches!(e, Error::NotLessorDatabase(_)), "{e:?}");
    assert!(e.to_string().contains("tables are not lessor's"), "{e}");
    // untouched: still the one table, with its one row
    let db = redb::Database::open(&dir.path).unwrap();
    let read = redb::ReadableDatabase::begin_read(&db).unwrap();
    assert_eq!(read.list_tables().unwrap().count(), 1);
    let t: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("users");
    let users = read.open_table(t).unwrap();
    assert_eq!(users.get("ada").unwrap().unwrap().value(), "admin");
}

/// Set in the child of `a_read_only_file_gets_io_permission_denied`: the path to open.
const READ_ONLY_CHILD: &str = "LESSOR_TEST_READ_ONLY_CHILD";

/// What opening `path` gave, as one line the parent can check.
fn report_open(path: &str) -> String {
    match Lessor::open(path) {
        Err(e @ Error::Io { .. }) if e.to_string().contains("lessor needs to read and write") => {
            "permission-denied".to_string()
        }
        Err(e) => format!("unexpected error {e:?}"),
        Ok(l) => {
            let n = l.range("").map(|kvs| kvs.len());
            format!("opened ({n:?} keys)")
        }
    }
}

#[test]
fn a_read_only_file_gets_io_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(path) = std::env::var(READ_ONLY_CHILD) {
        println!("child: {}", report_open(&path));
        return;
    }
    let (dir, clock, bytes, before) = closed_database();
    let set_mode = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(&dir.path, 0o444);
    // Root (CAP_DAC_OVERRIDE) ignores file permissions: detect it by trying to write.
    let enforced = std::fs::OpenOptions::new()
        .write(true)
        .open(&dir.path)
        .is_err();
    let got = if enforced {
        report_open(dir.path.to_str().unwrap())
    } else {
        // As root, a read-only file opens read-write like any other; check the refusal as an
        // unprivileged user instead: this test binary again, as uid/gid 65534 ("nobody").
        use std::os::unix::process::CommandExt;
        set_mode(dir.dir.path(), 0o755);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "a_read_only_file_gets_io_permission_denied",
                "--exact",
                "--nocapture",
            ])
            .env(READ_ONLY_CHILD, &dir.path)
            .uid(65534)
            .gid(65534)
            .output();
        match out {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                match stdout.lines().find_map(|l| l.strip_prefix("child: ")) {
                    Some(line) => line.to_string(),
                    None => {
                        // e.g. the test binary is not readable by that user
                        eprintln!("skipped: the unprivileged child did not run: {stdout}");
                        return;
                    }
                }
            }
            Err(e) => {
                eprintln!("skipped: running as root and cannot start an unprivileged child: {e}");
                return;
            }
        }
    };
    assert_eq!(got, "permission-denied");
    assert_eq!(std::fs::read(&dir.path).unwrap(), bytes);
    set_mode(&dir.path, 0o644);
    assert_restores(&dir.path, &clock, &bytes, &before);
}

#[test]
fn a_directory_path_gets_io_is_a_directory() {
    let dir = test_dir();
    let e = err(Lessor::open(dir.dir.path()));
    match &e {
        Error::Io { path, source } => {
            assert_eq!(path, dir.dir.path());
            assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("give the path of a database file"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(dir.dir.path()).unwrap().count(), 0);
}

#[test]
fn a_path_whose_parent_does_not_exist_gets_io_not_found() {
    let dir = test_dir();
    let path = dir.dir.path().join("missing/sub/lessor.redb");
    let e = err(Lessor::open(&path));
    match &e {
        Error::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(text.contains("missing/sub/lessor.redb"), "{text}");
    assert!(text.contains("create it first"), "{text}");
    assert!(
        !dir.dir.path().join("missing").exists(),
        "folders were created"
    );
}

#[test]
fn the_same_file_opened_twice_in_one_process_gets_already_open() {
    let fx = fixture();
    let before = state(&fx.l);
    assert!(matches!(
        err(Lessor::open(&fx.dir.path)),
        Error::AlreadyOpen
    ));
    // by another spelling of the path, and through a symlink
    let other = fx.dir.dir.path().join(".").join("lessor.redb");
    assert!(matches!(err(Lessor::open(&other)), Error::AlreadyOpen));
    let link = fx.dir.dir.path().join("link.redb");
    std::os::unix::fs::symlink(&fx.dir.path, &link).unwrap();
    let e = err(Lessor::builder().ticker(false).open(&link));
    assert!(matches!(e, Error::AlreadyOpen), "{e:?}");
    assert!(e.to_string().contains("already open"), "{e}");
    // the first lessor is unharmed, and the file is free once it closes
    fx.l.put("/after", "1").unwrap();
    fx.l.delete("/after").unwrap();
    let before = State {
        revision: fx.l.revision().unwrap(),
        ..before
    };
    fx.assert_intact(&before);
    fx.assert_intact_after_reopen(&before);
}

/// Set in the child of `a_file_held_by_another_process_gets_already_open`: the path to hold.
const HOLDER_CHILD: &str = "LESSOR_TEST_HOLD_OPEN_CHILD";

#[test]
fn a_file_held_by_another_process_gets_already_open() {
    if let Ok(path) = std::env::var(HOLDER_CHILD) {
        // The child: hold the database open until the parent closes our stdin.
        let l = Lessor::builder().ticker(false).open(&path).unwrap();
        println!("child: holding");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap() > 0 {}
        l.put("/child", "was here").unwrap();
        l.close().unwrap();
        return;
    }
    let (dir, clock, _bytes, before) = closed_database();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_file_held_by_another_process_gets_already_open",
            "--exact",
            "--nocapture",
        ])
        .env(HOLDER_CHILD, &dir.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("child: holding") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    let e = err(Lessor::open(&dir.path));
    assert!(matches!(e, Error::AlreadyOpen), "{e:?}");
    drop(child.stdin.take()); // let it go
    assert!(child.wait().unwrap().success());
    let l = common::manual_at(&dir.path, &clock);
    l.verify().unwrap();
    assert_eq!(l.get("/child").unwrap().unwrap().value, b"was here");
    l.delete("/child").unwrap();
    let kvs = l.range("").unwrap();
    assert_eq!(kvs, before.kvs);
    l.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[test]
fn every_call_after_close_gets_closed_and_close_twice_is_fine() {
    let fx = fixture();
    let before = state(&fx.l);
    let l = fx.l.clone();
    let ka = l.keep_alive(fx.base).unwrap();
    let watch = l.watch("/").unwrap();
    let events = l.subscribe().unwrap();
    let pending_txn = Txn::new().then(Op::put("/late", "v"));
    l.close().unwrap();
    l.close().unwrap(); // twice: nothing
    fx.l.close().unwrap(); // and from another clone
    let b = fx.base;
    let closed: Vec<(&str, Error)> = vec![
        ("grant", err(l.grant(secs(1)))),
        ("grant_with_id", err(l.grant_with_id(id(9), secs(1)))),
        ("renew", err(l.renew(b))),
        ("revoke", err(l.revoke(b))),
        ("revoke_expired", err(l.revoke_expired())),
        ("time_to_live", err(l.time_to_live(b))),
        ("put", err(l.put("/k", "v"))),
        ("put_with_lease", err(l.put_with_lease("/k", "v", b))),
        ("get", err(l.get("/plain"))),
        ("range", err(l.range(""))),
        ("range_with_revision", err(l.range_with_revision(""))),
        ("delete", err(l.delete("/plain"))),
        ("attach", err(l.attach(b, ["/plain"]))),
        ("detach", err(l.detach(b, ["/base/a"]))),
        ("txn", err(l.txn(Txn::new().then(Op::put("/k", "v"))))),
        ("txn built before close", err(l.txn(pending_txn))),
        ("watch", err(l.watch(""))),
        ("watch_from", err(l.watch_from("", Revision::new(1)))),
        ("subscribe", err(l.subscribe())),
        ("keep_alive", err(l.keep_alive(b))),
        (
            "keep_alive_until",
            err(l.keep_alive_until(b, Instant::now())),
        ),
        (
            "keep_alive_with",
            err(l.keep_alive_with(b, KeepAliveOptions::new())),
        ),
        ("revision", err(l.revision())),
        ("verify", err(l.verify())),
        ("sync", err(l.sync())),
        ("recover", err(l.recover())),
    ];
    for (call, e) in closed {
        assert!(matches!(e, Error::Closed), "{call}: {e:?}");
        assert_eq!(e.to_string(), "lessor is closed", "{call}");
    }
    assert!(matches!(l.leases(), Err(Error::Closed)));
    assert!(!l.health().ticker_running);
    // what was running ends, saying why
    assert_eq!(ka.ended(), Some(EndReason::Closed));
    ka.cancel();
    assert!(watch.recv().is_err());
    assert_eq!(watch.ended(), Some(WatchEnd::Closed));
    assert!(events.recv().is_err());
    drop(l);
    fx.assert_intact_after_reopen(&before);
}

#[test]
fn closing_from_several_threads_at_once_is_fine() {
    let fx = fixture();
    let before = state(&fx.l);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let l = fx.l.clone();
            s.spawn(move || l.close().unwrap());
        }
    });
    assert!(matches!(err(fx.l.get("/plain")), Error::Closed));
    fx.assert_intact_after_reopen(&before);
}

// ---------------------------------------------------------------------------------------------
// Clock

/// A clock whose time is set by the test, backwards included.
#[derive(Clone, Debug, Default)]
struct SteppingClock(Arc<AtomicU64>);

impl SteppingClock {
    fn set(&self, t: Duration) {
        self.0.store(t.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

#[test]
fn a_clock_that_goes_backwards_never_revives_a_lease_nor_expires_one_early() {
    let clock = SteppingClock::default();
    let dir = test_dir();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let base = l.grant(secs(1000)).unwrap().id;
    l.put_with_lease("/base", "b", base).unwrap();
    l.put("/plain", "p").unwrap();
    let revoked = l.grant(secs(10)).unwrap().id; // deadline 10 s
    l.put_with_lease("/revoked", "r", revoked).unwrap();
    let seen_dead = l.grant(secs(20)).unwrap().id; // deadline 20 s
    l.put_with_lease("/seen", "s", seen_dead).unwrap();
    let renewed = l.grant(secs(30)).unwrap().id;

    clock.set(secs(15));
    assert_eq!(l.revoke_expired().unwrap(), vec![revoked]); // expiry has seen 15 s
    clock.set(secs(25));
    l.renew(renewed).unwrap(); // deadline 55 s
    assert_not_found(l.time_to_live(seen_dead), seen_dead); // someone was told it is dead

    // the clock steps back to 5 s
    clock.set(secs(5));
    // a revoked lease stays revoked, its keys stay deleted
    assert_not_found(l.renew(revoked), revoked);
    assert!(l.get("/revoked").unwrap().is_none());
    // a lease someone saw expire stays dead for every call, though the clock says 5 s < 20 s
    assert_dead_everywhere(&l, seen_dead);
    assert!(!l.leases().unwrap().contains(&seen_dead));
    // renew never moves a deadline backwards: `renewed` still lives to 55 s
    assert_eq!(l.renew(renewed).unwrap(), secs(30));
    assert!(l.time_to_live(renewed).unwrap().remaining <= secs(30));

    // A lease granted after the step back lives at least its TTL on the clock's readings
    // (5 s + 5 s), and at most that plus the step back of what expiry had seen (15 s + 5 s).
    let late = l.grant(secs(5)).unwrap().id;
    l.put_with_lease("/late", "l", late).unwrap();
    assert!(
        l.revoke_expired().unwrap().is_empty(),
        "revoked before its TTL"
    );
    assert!(l.renew(late).is_ok());
    clock.set(secs(10) - Duration::from_nanos(1));
    assert!(
        l.revoke_expired().unwrap().is_empty(),
        "revoked before its TTL"
    );
    assert!(l.time_to_live(late).is_ok());
    assert!(l.get("/late").unwrap().is_some());
    // the lease seen dead is revoked at its deadline, with its key
    clock.set(secs(20));
    assert_eq!(l.revoke_expired().unwrap(), vec![seen_dead, late]);
    assert!(l.get("/seen").unwrap().is_none());
    assert!(l.get("/late").unwrap().is_none());

    clock.set(secs(55) - Duration::from_nanos(1));
    assert!(l.revoke_expired().unwrap().is_empty());
    clock.set(secs(55));
    assert_eq!(l.revoke_expired().unwrap(), vec![renewed]);
    assert_eq!(l.leases().unwrap(), vec![base]);
    assert_eq!(l.get("/base").unwrap().unwrap().value, b"b");
    l.verify().unwrap();
    l.close().unwrap();
}

#[test]
fn a_clock_reading_more_than_146_years_at_open_gets_invalid_config() {
    let clock = SteppingClock::default();
    clock.set(Duration::from_nanos(1 << 62));
    let dir = test_dir();
    for r in [
        Lessor::builder().clock(clock.clone()).open(&dir.path),
        Lessor::builder().clock(clock.clone()).open_in_memory(),
    ] {
        let e = err(r);
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("146 years")),
            "{e:?}"
        );
    }
    assert!(!dir.path.exists(), "a file was created");
    // Duration::MAX from a broken clock: the same, no panic
    let broken = SteppingClock::default();
    broken.set(Duration::from_nanos(u64::MAX));
    assert!(matches!(
        err(Lessor::builder().clock(broken).open_in_memory()),
        Error::InvalidConfig(_)
    ));
    // one nanosecond less is fine
    clock.set(Duration::from_nanos((1 << 62) - 1));
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let lease = l.grant(MAX_TTL).unwrap();
    assert!(l.renew(lease.id).is_ok());
    l.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Settings

#[test]
fn every_builder_setting_out_of_range_gets_invalid_config_naming_it() {
    use lessor::Durability;
    let dir = test_dir();
    let b = Lessor::builder;
    let cases: Vec<(&str, lessor::Builder)> = vec![
        ("event_buffer", b().event_buffer(usize::MAX)),
        ("event_buffer", b().event_buffer(1 << 32)),
        ("event_buffer", b().event_buffer((1 << 20) + 1)),
        ("event_buffer_bytes", b().event_buffer_bytes((64 << 30) + 1)),
        ("event_buffer_bytes", b().event_buffer_bytes(usize::MAX)),
        ("max_key_size", b().max_key_size(0)),
        ("max_key_size", b().max_key_size((1 << 20) + 1)),
        ("max_key_size", b().max_key_size(usize::MAX)),
        ("max_value_size", b().max_value_size((512 << 20) + 1)),
        ("max_value_size", b().max_value_size(usize::MAX)),
        ("expiry_batch_size", b().expiry_batch_size(1_000_001)),
        ("expiry_batch_size", b().expiry_batch_size(usize::MAX)),
        (
            "checkpoint_batch_size",
            b().checkpoint_batch_size(usize::MAX),
        ),
        ("watch_history", b().watch_history(usize::MAX, 1 << 20)),
        ("watch_history", b().watch_history(100_000_001, 1 << 20)),
        ("watch_history", b().watch_history(10, usize::MAX)),
        (
            "checkpoint_interval",
            b().checkpoint_interval(Duration::ZERO),
        ),
        (
            "checkpoint_interval",
            b().checkpoint_interval(Duration::MAX),
        ),
        ("checkpoint_interval", b().checkpoint_interval(secs(86_401))),
        (
            "max_delay",
            b().durability(Durability::Batched {
                max_delay: Duration::MAX,
            }),
        ),
        (
            "max_delay",
            b().durability(Durability::Batched {
                max_delay: secs(3601),
            }),
        ),
        ("min_ttl", b().min_ttl(secs(10)).max_ttl(secs(9))),
    ];
    for (setting, builder) in cases {
        let shown = format!("{builder:?}");
        for r in [
            builder.clone().ticker(false).open(&dir.path),
            builder.ticker(false).open_in_memory(),
        ] {
            match err(r) {
                Error::InvalidConfig(m) => {
                    assert!(m.contains(setting), "{setting}: {m}");
                    // the allowed range is in the message
                    assert!(m.contains(" to ") || m.contains("at most"), "{m}");
                }
                other => panic!("{shown}: expected InvalidConfig, got {other:?}"),
            }
        }
        assert!(!dir.path.exists(), "{shown}: a file was created");
    }
    // the ends of each range are accepted, and work
    let l = Lessor::builder()
        .event_buffer(1 << 20)
        .event_buffer_bytes(64 << 30)
        .max_key_size(1 << 20)
        .max_value_size(512 << 20)
        .expiry_batch_size(1_000_000)
        .checkpoint_batch_size(1_000_000)
        .watch_history(100_000_000, 64 << 30)
        .checkpoint_interval(secs(86_400))
        .durability(Durability::Batched {
            max_delay: secs(3600),
        })
        .cache_size(usize::MAX)
        .min_ttl(Duration::ZERO)
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let lease = l.grant(secs(10)).unwrap();
    l.put_with_lease(vec![b'k'; 1 << 20], "v", lease.id)
        .unwrap();
    l.close().unwrap();
    let l = Lessor::builder()
        .event_buffer(0) // raised to 2
        .event_buffer_bytes(0) // one event at a time
        .max_key_size(1)
        .max_value_size(0)
        .expiry_batch_size(0) // raised to 1
        .checkpoint_batch_size(0) // raised to 1
        .watch_history(0, 0)
        .checkpoint_interval(Duration::from_nanos(1))
        .durability(Durability::Batched {
            max_delay: Duration::ZERO,
        })
        .cache_size(0)
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let events = l.subscribe().unwrap();
    l.put("k", "").unwrap();
    assert!(matches!(err(l.put("kk", "")), Error::KeyTooLarge { .. }));
    assert!(matches!(err(l.put("k", "v")), Error::ValueTooLarge { .. }));
    assert_eq!(l.get("k").unwrap().unwrap().value, b"");
    drop(events);
    l.close().unwrap();
}

#[test]
fn a_min_ttl_of_zero_and_a_ttl_of_zero_give_a_lease_alive_at_its_grant() {
    let clock = ManualClock::new();
    clock.advance(secs(5));
    let l = Lessor::builder()
        .min_ttl(Duration::ZERO)
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let lease = l.grant(Duration::ZERO).unwrap();
    assert_eq!(lease.ttl, Duration::from_nanos(1));
    assert!(l.renew(lease.id).is_ok(), "dead on arrival");
    assert_eq!(
        l.time_to_live(lease.id).unwrap().remaining,
        Duration::from_nanos(1)
    );
    clock.advance(Duration::from_nanos(1));
    assert_not_found(l.renew(lease.id), lease.id);
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
}

// ---------------------------------------------------------------------------------------------
// The clock, after open

#[test]
fn a_clock_past_2_63_ns_after_open_gets_clock_out_of_range_never_a_dead_lease() {
    let clock = SteppingClock::default();
    let dir = test_dir();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let base = l.grant(secs(1000)).unwrap().id;
    l.put_with_lease("/base", "b", base).unwrap();
    l.put("/plain", "p").unwrap();
    let revision = l.revision().unwrap();
    // the last nanoseconds before the end: a grant is alive, its deadline saturated
    clock.set(Duration::from_nanos((1 << 63) - 3));
    let late = l.grant(secs(10)).unwrap();
    assert!(l.renew(late.id).is_ok());
    assert_eq!(
        l.time_to_live(late.id).unwrap().remaining,
        Duration::from_nanos(1)
    );
    for now in [
        Duration::from_nanos((1 << 63) - 2),
        Duration::from_nanos(1 << 63),
        Duration::from_nanos(u64::MAX),
        Duration::MAX,
    ] {
        clock.set(now);
        for r in [l.grant(secs(10)), l.grant_with_id(id(77), MAX_TTL)] {
            match err(r) {
                Error::ClockOutOfRange { now: got } => {
                    assert!(got >= Duration::from_nanos((1 << 63) - 2), "{got:?}");
                }
                other => panic!("{now:?}: expected ClockOutOfRange, got {other:?}"),
            }
        }
        assert!(
            err(l.grant(secs(1)))
                .to_string()
                .contains("a lease granted now would be dead at once")
        );
        // nothing was granted, and every lease is dead; no call panics
        assert!(l.leases().unwrap().is_empty(), "{now:?}");
        assert_not_found(l.renew(base), base);
        assert_not_found(l.time_to_live(late.id), late.id);
        assert_eq!(l.revision().unwrap(), revision);
    }
    let mut expired = l.revoke_expired().unwrap();
    expired.sort();
    assert_eq!(expired, vec![base, late.id]);
    assert_eq!(l.get("/plain").unwrap().unwrap().value, b"p");
    assert!(l.get("/base").unwrap().is_none());
    l.verify().unwrap();
    l.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Files of another program

/// Writes tables in a redb write transaction, as another program would.
type Writes = Box<dyn Fn(&redb::WriteTransaction)>;

/// Writes a redb database at `path` through `f`, as another program would, and returns its
/// bytes once closed.
fn foreign_file(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) -> Vec<u8> {
    {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }
    std::fs::read(path).unwrap()
}

#[test]
fn a_redb_database_of_another_program_is_refused_before_anything_is_written() {
    let dir = test_dir();
    let users: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("users");
    let tags: redb::MultimapTableDefinition<&str, &str> =
        redb::MultimapTableDefinition::new("tags");
    let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("lessor.kv");
    let files: Vec<(&str, Writes)> = vec![
        (
            "a table of its own",
            Box::new(move |txn| {
                txn.open_table(users)
                    .unwrap()
                    .insert("ada", "admin")
                    .unwrap();
            }),
        ),
        (
            "only a multimap table",
            Box::new(move |txn| {
                txn.open_multimap_table(tags)
                    .unwrap()
                    .insert("ada", "x")
                    .unwrap();
            }),
        ),
        (
            "a table named like lessor's, but no lessor.meta",
            Box::new(move |txn| {
                txn.open_table(kv)
                    .unwrap()
                    .insert(&b"k"[..], &b"v"[..])
                    .unwrap();
            }),
        ),
    ];
    for (what, f) in files {
        let _ = std::fs::remove_file(&dir.path);
        let bytes = foreign_file(&dir.path, f);
        for check in [true, false] {
            let r = Lessor::builder()
                .check_integrity_on_open(check)
                .open(&dir.path);
            let e = err(r);
            assert!(matches!(e, Error::NotLessorDatabase(_)), "{what}: {e:?}");
            assert!(
                std::fs::read(&dir.path).unwrap() == bytes,
                "{what}: the file was modified"
            );
        }
    }
}

#[test]
fn wrong_typed_lessor_tables_get_not_lessor_database_or_corrupted() {
    let dir = test_dir();
    // lessor.meta of other types: another program's table of that name
    let meta: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("lessor.meta");
    let bytes = foreign_file(&dir.path, |txn| {
        txn.open_table(meta).unwrap().insert("format", "2").unwrap();
    });
    let e = err(Lessor::open(&dir.path));
    assert!(
        matches!(&e, Error::NotLessorDatabase(m) if m.contains("lessor.meta")),
        "{e:?}"
    );
    assert!(
        std::fs::read(&dir.path).unwrap() == bytes,
        "the file was modified"
    );

    // a lessor database whose lessor.kv, lessor.leases or lessor.lease_keys has other types
    let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("lessor.kv");
    let leases: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("lessor.leases");
    let index: redb::TableDefinition<(u64, &[u8]), ()> =
        redb::TableDefinition::new("lessor.lease_keys");
    let retype: Vec<(&str, Writes)> = vec![
        (
            "lessor.kv as u64 -> u64",
            Box::new(move |txn| {
                txn.delete_table(kv).unwrap();
                let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("lessor.kv");
                txn.open_table(t).unwrap().insert(1, 2).unwrap();
            }),
        ),
        (
            "lessor.leases as a multimap table",
            Box::new(move |txn| {
                txn.delete_table(leases).unwrap();
                let t: redb::MultimapTableDefinition<u64, u64> =
                    redb::MultimapTableDefinition::new("lessor.leases");
                txn.open_multimap_table(t).unwrap().insert(1, 2).unwrap();
            }),
        ),
        (
            "lessor.lease_keys as &str -> &str",
            Box::new(move |txn| {
                txn.delete_table(index).unwrap();
                let t: redb::TableDefinition<&str, &str> =
                    redb::TableDefinition::new("lessor.lease_keys");
                txn.open_table(t).unwrap().insert("a", "b").unwrap();
            }),
        ),
    ];
    for (what, f) in retype {
        let _ = std::fs::remove_file(&dir.path);
        let clock = ManualClock::new();
        let l = common::manual_at(&dir.path, &clock);
        let lease = l.grant(secs(100)).unwrap();
        l.put_with_lease("/a", "1", lease.id).unwrap();
        l.close().unwrap();
        {
            let db = redb::Database::create(&dir.path).unwrap();
            let txn = db.begin_write().unwrap();
            f(&txn);
            txn.commit().unwrap();
        }
        let bytes = std::fs::read(&dir.path).unwrap();
        for check in [true, false] {
            let r = Lessor::builder()
                .check_integrity_on_open(check)
                .open(&dir.path);
            match err(r) {
                Error::Corrupted(m) => assert!(m.contains("types"), "{what}: {m}"),
                other => panic!("{what}: expected Corrupted, got {other:?}"),
            }
            assert!(
                std::fs::read(&dir.path).unwrap() == bytes,
                "{what}: the file was modified"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keep-alives

#[test]
fn a_finished_revoke_on_drop_keep_alive_never_revokes_a_lease_that_reuses_its_id() {
    let fx = fixture();
    let before = state(&fx.l);
    let (l, clock) = (&fx.l, &fx.clock);
    let finished = |ka: &lessor::KeepAlive| {
        // the channel disconnects once the keep-alive has ended
        while ka.responses().recv_timeout(secs(10)).is_ok() {}
        assert_eq!(ka.ended(), Some(EndReason::Finished));
    };
    let opts = KeepAliveOptions::new()
        .run_for(secs(1))
        .revoke_on_drop(true);

    // The issue's repro: finished, its lease expired and revoked, the id granted again.
    let old = l.grant_with_id(id(42), secs(10)).unwrap();
    let ka = l.keep_alive_with(old.id, opts).unwrap();
    clock.advance(secs(1));
    finished(&ka);
    clock.advance(secs(11));
    assert_eq!(l.revoke_expired().unwrap(), vec![id(42)]);
    let new = l.grant_with_id(id(42), secs(10)).unwrap();
    l.put_with_lease("/new", "n", new.id).unwrap();
    drop(ka);
    assert!(l.time_to_live(id(42)).is_ok(), "the new lease was revoked");
    assert_eq!(l.get("/new").unwrap().unwrap().lease, Some(id(42)));

    // The same when the old lease was expired, not yet revoked, and replaced by the grant.
    let ka = l.keep_alive_with(id(42), opts).unwrap();
    clock.advance(secs(1));
    finished(&ka);
    clock.advance(secs(11));
    l.grant_with_id(id(42), secs(10)).unwrap(); // revokes the expired one, with /new
    l.put_with_lease("/newer", "n", id(42)).unwrap();
    ka.cancel();
    assert!(
        l.time_to_live(id(42)).is_ok(),
        "the newer lease was revoked"
    );
    assert!(l.get("/newer").unwrap().is_some());

    // A finished keep-alive whose lease lives on still revokes it, once.
    let own = l.grant(secs(10)).unwrap();
    l.put_with_lease("/own", "o", own.id).unwrap();
    let ka = l.keep_alive_with(own.id, opts).unwrap();
    clock.advance(secs(1));
    finished(&ka);
    drop(ka);
    assert_not_found(l.time_to_live(own.id), own.id);
    assert!(l.get("/own").unwrap().is_none());

    // So does a keep-alive cancelled while running.
    let run = l.grant(secs(10)).unwrap();
    let ka = l
        .keep_alive_with(run.id, KeepAliveOptions::new().revoke_on_drop(true))
        .unwrap();
    drop(ka);
    assert_not_found(l.time_to_live(run.id), run.id);

    l.revoke(id(42)).unwrap();
    // the baseline is intact (the revision moved with this test's own writes)
    let after = state(l);
    assert_eq!((after.kvs, after.leases), (before.kvs, before.leases));
    l.verify().unwrap();
}
