//! The conformance suite: one set of tests, written against the `LeaseStore` trait, that every
//! backend must pass. `tests/conformance_embedded.rs` runs it on `Lessor` (with a manual clock,
//! in every `cargo test`); `tests/conformance_etcd.rs` runs it on `EtcdLessor` against a real
//! etcd server (feature `etcd`).
//!
//! A backend comes with a [`Harness`]: the store under test, a key prefix of the test's own (the
//! etcd tests share one server), and a way to let time pass (a manual clock's `advance`, or a
//! real sleep on etcd, whose leases live by the server's clock). TTLs are etcd's minimum, 2 s,
//! so that both backends grant exactly what is asked.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod blocking;
pub mod concurrency;
pub mod differences;
pub mod etcd_server;

pub use concurrency::*;
pub use differences::*;

use std::time::{Duration, Instant};

use lessor::{
    CmpOp, Compare, DeleteCause, EndReason, Error, KeepAliveOptions, LeaseId, LeaseStore, Op,
    OpResponse, Txn, WatchEvent,
};

/// The TTL the tests grant: etcd's minimum with its default election timeout.
pub const TTL: Duration = Duration::from_secs(2);

/// How long a test waits for a backend's own thread or server to act (the ticker, etcd's
/// expiry loop, a keep-alive task) before failing.
pub const ACT: Duration = Duration::from_secs(10);

/// A backend under test.
pub trait Harness {
    /// The store type.
    type Store: LeaseStore;

    /// The store under test; fresh for each test (its own database, or its own connection).
    fn store(&self) -> &Self::Store;

    /// The prefix every key of this test starts with, unique to the test.
    fn prefix(&self) -> &str;

    /// Lets `by` pass for the store's leases.
    fn pass(&self, by: Duration);

    /// The backend's minimum TTL: shorter ones are raised to it.
    fn min_ttl(&self) -> Duration;

    /// Whether watches report why a key was deleted (etcd's cannot).
    fn knows_delete_causes(&self) -> bool;

    /// An id that no lease has, for `grant_with_id`.
    fn fresh_id(&self) -> LeaseId;

    /// Whether the store is etcd (the tests in `differences.rs` assert each backend's way).
    fn is_etcd(&self) -> bool;

    /// A key under this test's prefix.
    fn key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.prefix()).into_bytes()
    }
}

/// Every test of the suite, in one list, so that each backend runs them all: `$m!(a, b, ...)`.
#[macro_export]
macro_rules! all_cases {
    ($m:ident) => {
        $m!(
            grant_renew_time_to_live_revoke,
            ttl_below_the_minimum_is_raised,
            ttl_above_the_maximum_is_refused,
            grant_with_id_takes_the_id_once,
            put_with_lease_then_revoke_deletes_the_keys,
            put_with_a_dead_lease_is_refused,
            expiry_deletes_the_keys_and_kills_the_lease,
            renewals_postpone_expiry,
            attach_and_detach_move_keys,
            key_value_basics,
            txn_lock_and_compare_and_swap,
            txn_with_a_dead_lease_writes_nothing,
            watch_sees_changes_in_order_with_causes,
            watch_from_after_a_read_misses_nothing,
            watch_key_sees_only_that_key,
            streams_deliver_and_lost_resolves,
            streams_end_when_the_store_closes,
            keep_alive_renews_until_cancelled,
            keep_alive_ends_when_the_lease_is_revoked,
            keep_alive_refuses_bad_requests,
            keep_alive_revoke_on_drop,
            keep_alive_run_for_finishes,
            mutex_excludes_many_threads,
            mutex_waiters_acquire_in_queue_order,
            mutex_try_lock_fails_at_once_leaving_no_key,
            mutex_lock_until_timeout_leaves_no_key,
            mutex_passes_on_when_the_holders_session_expires,
            mutex_fencing_refuses_a_stale_holder,
            election_proclaim_resign_failover_observe,
            ttl_granularity_and_rounding,
            attach_is_a_rewrite_on_etcd_only,
            delete_causes,
            watch_from_zero,
            size_limits,
            lease_id_ranges,
            revision_and_readiness
        );
    };
}

/// Polls `cond` every 10 ms until it holds or [`ACT`] passes.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < ACT {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn not_found(r: lessor::Result<impl std::fmt::Debug>, id: LeaseId) {
    match r {
        Err(Error::LeaseNotFound(got)) => assert_eq!(got, id),
        other => panic!("expected LeaseNotFound({id}), got {other:?}"),
    }
}

pub fn grant_renew_time_to_live_revoke<H: Harness>(h: &H) {
    let s = h.store();
    let lease = s.grant(TTL).unwrap();
    assert_eq!(lease.ttl, TTL);
    assert_eq!(s.renew(lease.id).unwrap(), TTL);
    let info = s.time_to_live(lease.id).unwrap();
    assert_eq!((info.id, info.ttl), (lease.id, TTL));
    assert!(info.remaining <= TTL, "{info:?}");
    assert!(info.keys.is_empty());
    assert!(s.leases().unwrap().contains(&lease.id));

    // (Revisions are compared only where other tests' writes cannot interfere: the etcd suite
    // runs its tests in parallel on one server, whose revision is global.)
    let before = s
        .range_with_revision(h.prefix().as_bytes())
        .unwrap()
        .revision;
    assert!(s.revoke(lease.id).unwrap() >= before);
    not_found(s.renew(lease.id), lease.id);
    not_found(s.time_to_live(lease.id), lease.id);
    not_found(s.revoke(lease.id), lease.id);
    assert!(!s.leases().unwrap().contains(&lease.id));
}

pub fn ttl_below_the_minimum_is_raised<H: Harness>(h: &H) {
    let lease = h.store().grant(Duration::from_millis(1)).unwrap();
    assert_eq!(lease.ttl, h.min_ttl());
    assert_eq!(h.store().time_to_live(lease.id).unwrap().ttl, h.min_ttl());
    h.store().revoke(lease.id).unwrap();
}

pub fn ttl_above_the_maximum_is_refused<H: Harness>(h: &H) {
    let too_long = lessor::MAX_TTL + Duration::from_secs(1);
    assert!(matches!(
        h.store().grant(too_long),
        Err(Error::TtlOutOfRange { ttl, .. }) if ttl == too_long
    ));
}

pub fn grant_with_id_takes_the_id_once<H: Harness>(h: &H) {
    let s = h.store();
    let id = h.fresh_id();
    let lease = s.grant_with_id(id, TTL).unwrap();
    assert_eq!((lease.id, lease.ttl), (id, TTL));
    match s.grant_with_id(id, TTL) {
        Err(Error::LeaseExists(got)) => assert_eq!(got, id),
        other => panic!("expected LeaseExists, got {other:?}"),
    }
    s.revoke(id).unwrap();
}

pub fn put_with_lease_then_revoke_deletes_the_keys<H: Harness>(h: &H) {
    let s = h.store();
    let (a, b, c) = (h.key("a"), h.key("b"), h.key("c"));
    let lease = s.grant(TTL).unwrap();
    let rev_b = s.put_with_lease(&b, b"2", lease.id).unwrap();
    let rev_a = s.put_with_lease(&a, b"1", lease.id).unwrap();
    assert!(rev_a > rev_b);
    s.put(&c, b"3").unwrap();

    let kv = s.get(&a).unwrap().unwrap();
    assert_eq!(kv.value, b"1");
    assert_eq!(kv.lease, Some(lease.id));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev_a, rev_a, 1)
    );
    assert_eq!(
        s.time_to_live_with_keys(lease.id).unwrap().keys,
        vec![a.clone(), b.clone()]
    );

    let rev = s.revoke(lease.id).unwrap();
    assert!(
        rev > rev_a,
        "a revocation that deletes keys advances the revision"
    );
    assert_eq!(s.get(&a).unwrap(), None);
    assert_eq!(s.get(&b).unwrap(), None);
    assert_eq!(s.get(&c).unwrap().unwrap().lease, None);
}

pub fn put_with_a_dead_lease_is_refused<H: Harness>(h: &H) {
    let s = h.store();
    let lease = s.grant(TTL).unwrap();
    s.revoke(lease.id).unwrap();
    not_found(s.put_with_lease(&h.key("k"), b"v", lease.id), lease.id);
    let never = h.fresh_id();
    not_found(s.put_with_lease(&h.key("k"), b"v", never), never);
    assert_eq!(s.get(&h.key("k")).unwrap(), None);
}

pub fn expiry_deletes_the_keys_and_kills_the_lease<H: Harness>(h: &H) {
    let s = h.store();
    let k = h.key("session");
    let lease = s.grant(TTL).unwrap();
    s.put_with_lease(&k, b"alive", lease.id).unwrap();
    let watch = s.watch(h.prefix().as_bytes()).unwrap();

    h.pass(TTL + Duration::from_millis(100));
    not_found(s.renew(lease.id), lease.id);
    assert!(
        eventually(|| s.get(&k).unwrap().is_none()),
        "the key outlived its lease"
    );
    not_found(s.time_to_live(lease.id), lease.id);
    assert!(!s.leases().unwrap().contains(&lease.id));

    match watch.recv_timeout(ACT).unwrap() {
        WatchEvent::Delete { key, cause, .. } => {
            assert_eq!(key, k);
            if h.knows_delete_causes() {
                assert_eq!(cause, DeleteCause::LeaseExpired(lease.id));
            } else {
                assert_eq!(cause, DeleteCause::Unknown);
            }
        }
        other => panic!("expected the key's deletion, got {other:?}"),
    }
}

pub fn renewals_postpone_expiry<H: Harness>(h: &H) {
    let s = h.store();
    let k = h.key("worker");
    let lease = s.grant(TTL).unwrap();
    s.put_with_lease(&k, b"up", lease.id).unwrap();
    for _ in 0..2 {
        h.pass(TTL * 2 / 3);
        assert_eq!(s.renew(lease.id).unwrap(), TTL);
    }
    // 4/3 TTL after the grant: alive thanks to the renewals.
    assert!(s.get(&k).unwrap().is_some());
    assert_eq!(
        s.time_to_live_with_keys(lease.id).unwrap().keys,
        vec![k.clone()]
    );
    h.pass(TTL + Duration::from_millis(100));
    assert!(eventually(|| s.get(&k).unwrap().is_none()));
    not_found(s.renew(lease.id), lease.id);
}

pub fn attach_and_detach_move_keys<H: Harness>(h: &H) {
    let s = h.store();
    let (a, b, missing) = (h.key("a"), h.key("b"), h.key("missing"));
    s.put(&a, b"1").unwrap();
    s.put(&b, b"2").unwrap();
    let lease = s.grant(TTL).unwrap();

    s.attach(lease.id, &[&a[..], &b[..]]).unwrap();
    assert_eq!(s.get(&a).unwrap().unwrap().lease, Some(lease.id));
    assert_eq!(s.get(&a).unwrap().unwrap().value, b"1");
    assert_eq!(
        s.time_to_live_with_keys(lease.id).unwrap().keys,
        vec![a.clone(), b.clone()]
    );

    // All or nothing: a missing key attaches nothing.
    let other = s.grant(TTL).unwrap();
    match s.attach(other.id, &[&a[..], &missing[..]]) {
        Err(Error::KeyNotFound(key)) => assert_eq!(key, missing),
        r => panic!("expected KeyNotFound, got {r:?}"),
    }
    assert_eq!(s.get(&a).unwrap().unwrap().lease, Some(lease.id));
    s.revoke(other.id).unwrap();

    s.detach(lease.id, &[&a[..]]).unwrap();
    assert_eq!(s.get(&a).unwrap().unwrap().lease, None);
    match s.detach(lease.id, &[&a[..]]) {
        Err(Error::KeyNotAttached { key, lease: l }) => assert_eq!((key, l), (a.clone(), lease.id)),
        r => panic!("expected KeyNotAttached, got {r:?}"),
    }
    match s.detach(lease.id, &[&missing[..]]) {
        Err(Error::KeyNotFound(key)) => assert_eq!(key, missing),
        r => panic!("expected KeyNotFound, got {r:?}"),
    }
    let dead = s.grant(TTL).unwrap();
    s.revoke(dead.id).unwrap();
    not_found(s.attach(dead.id, &[&a[..]]), dead.id);

    s.revoke(lease.id).unwrap();
    assert_eq!(
        s.get(&a).unwrap().unwrap().value,
        b"1",
        "detached: survives its old lease"
    );
    assert_eq!(s.get(&b).unwrap(), None, "attached: deleted with the lease");
}

pub fn key_value_basics<H: Harness>(h: &H) {
    let s = h.store();
    let (x, y, z) = (h.key("x"), h.key("y"), h.key("z"));
    let r1 = s.put(&y, b"1").unwrap();
    let r2 = s.put(&y, b"2").unwrap();
    assert!(r2 > r1);
    let kv = s.get(&y).unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (b"2".as_slice(), 2));
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    s.put(&z, b"3").unwrap();
    s.put(&x, b"4").unwrap();
    let keys: Vec<_> = s
        .range(h.prefix().as_bytes())
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![x.clone(), y.clone(), z.clone()]);

    let before = s
        .range_with_revision(h.prefix().as_bytes())
        .unwrap()
        .revision;
    assert!(s.delete(&y).unwrap());
    assert!(!s.delete(&y).unwrap());
    let after = s
        .range_with_revision(h.prefix().as_bytes())
        .unwrap()
        .revision;
    assert!(after > before, "a delete advances the revision");
    assert_eq!(s.get(&y).unwrap(), None);
    assert!(matches!(s.put(b"", b"v"), Err(Error::InvalidKey(_))));
    assert!(matches!(s.delete(b""), Err(Error::InvalidKey(_))));
}

pub fn txn_lock_and_compare_and_swap<H: Harness>(h: &H) {
    let s = h.store();
    let lock = h.key("lock");
    let me = s.grant(TTL).unwrap();
    let acquire = |who: &[u8], id: LeaseId| {
        Txn::new()
            .when(Compare::absent(&lock))
            .then(Op::put_with_lease(&lock, who, id))
            .then(Op::get(&lock))
            .otherwise(Op::get(&lock))
    };
    let got = s.txn(acquire(b"me", me.id)).unwrap();
    assert!(got.succeeded);
    let OpResponse::Get(Some(held)) = &got.responses[1] else {
        panic!("{got:?}")
    };
    assert_eq!(
        (held.value.as_slice(), held.lease),
        (b"me".as_slice(), Some(me.id))
    );
    assert_eq!(
        held.create_revision, got.revision,
        "the fencing token is the txn's revision"
    );

    let other = s.grant(TTL).unwrap();
    let lost = s.txn(acquire(b"other", other.id)).unwrap();
    assert!(!lost.succeeded);
    let OpResponse::Get(Some(holder)) = &lost.responses[0] else {
        panic!("{lost:?}")
    };
    assert_eq!(holder.value, b"me");
    assert_eq!(
        holder.mod_revision, got.revision,
        "the losing txn wrote nothing"
    );
    assert!(lost.revision >= got.revision);

    // Compare-and-swap on the value and the mod revision.
    let counter = h.key("counter");
    let r = s.put(&counter, b"1").unwrap();
    let cas = |from: &[u8], to: &[u8]| {
        Txn::new()
            .when(Compare::value(&counter, CmpOp::Equal, from))
            .then(Op::put(&counter, to))
    };
    assert!(s.txn(cas(b"1", b"2")).unwrap().succeeded);
    assert!(!s.txn(cas(b"1", b"3")).unwrap().succeeded);
    let stale = Txn::new()
        .when(Compare::mod_revision(&counter, CmpOp::Equal, r))
        .then(Op::delete(&counter));
    assert!(!s.txn(stale).unwrap().succeeded);
    let fresh = Txn::new()
        .when(Compare::version(&counter, CmpOp::Equal, 2))
        .when(Compare::lease(&counter, CmpOp::Equal, None))
        .then(Op::delete(&counter))
        .then(Op::delete(h.key("never")));
    let done = s.txn(fresh).unwrap();
    assert!(done.succeeded);
    assert_eq!(
        done.responses,
        vec![
            OpResponse::Delete { existed: true },
            OpResponse::Delete { existed: false }
        ]
    );
    assert_eq!(s.get(&counter).unwrap(), None);

    // Revoking the holder's lease releases the lock.
    s.revoke(me.id).unwrap();
    assert!(s.txn(acquire(b"other", other.id)).unwrap().succeeded);
    s.revoke(other.id).unwrap();
}

pub fn txn_with_a_dead_lease_writes_nothing<H: Harness>(h: &H) {
    let s = h.store();
    let dead = s.grant(TTL).unwrap();
    s.revoke(dead.id).unwrap();
    let txn = Txn::new()
        .then(Op::put(h.key("plain"), b"x"))
        .then(Op::put_with_lease(h.key("leased"), b"y", dead.id));
    not_found(s.txn(txn), dead.id);
    assert_eq!(s.get(&h.key("plain")).unwrap(), None, "all or nothing");
    let twice = Txn::new()
        .then(Op::put(h.key("k"), b"1"))
        .then(Op::delete(h.key("k")));
    assert!(matches!(s.txn(twice), Err(Error::InvalidKey(_))));
}

pub fn watch_sees_changes_in_order_with_causes<H: Harness>(h: &H) {
    let s = h.store();
    let (a, b) = (h.key("a"), h.key("b"));
    let watch = s.watch(h.prefix().as_bytes()).unwrap();
    let unrelated = s.watch(h.key("zzz").as_slice()).unwrap();
    let r1 = s.put(&a, b"1").unwrap();
    let r2 = s.put(&a, b"2").unwrap();
    assert!(s.delete(&a).unwrap());
    let lease = s.grant(TTL).unwrap();
    let r4 = s.put_with_lease(&b, b"x", lease.id).unwrap();
    let r5 = s.revoke(lease.id).unwrap();

    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(watch.recv_timeout(ACT).unwrap());
    }
    let cause = |known: DeleteCause| {
        if h.knows_delete_causes() {
            known
        } else {
            DeleteCause::Unknown
        }
    };
    let WatchEvent::Put(kv) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((&kv.key, kv.version, kv.mod_revision), (&a, 1, r1));
    let WatchEvent::Put(kv) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (&kv.value[..], kv.version, kv.mod_revision),
        (&b"2"[..], 2, r2)
    );
    let WatchEvent::Delete {
        key,
        revision,
        cause: why,
    } = &events[2]
    else {
        panic!("{events:?}")
    };
    assert_eq!((key, *why), (&a, cause(DeleteCause::Deleted)));
    assert!(r2 < *revision && *revision < r4, "{events:?}");
    let WatchEvent::Put(kv) = &events[3] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (&kv.key, kv.lease, kv.mod_revision),
        (&b, Some(lease.id), r4)
    );
    assert_eq!(
        events[4],
        WatchEvent::Delete {
            key: b.clone(),
            revision: r5,
            cause: cause(DeleteCause::LeaseRevoked(lease.id))
        }
    );
    assert!(watch.recv_timeout(Duration::from_millis(200)).is_err());
    assert!(unrelated.try_recv().is_err(), "another prefix sees nothing");
}

pub fn watch_from_after_a_read_misses_nothing<H: Harness>(h: &H) {
    let s = h.store();
    s.put(&h.key("before"), b"1").unwrap();
    let snapshot = s.range_with_revision(h.prefix().as_bytes()).unwrap();
    assert_eq!(snapshot.kvs.len(), 1);
    let r = s.put(&h.key("between"), b"2").unwrap();
    let watch = s
        .watch_from(h.prefix().as_bytes(), snapshot.revision.next())
        .unwrap();
    s.put(&h.key("after"), b"3").unwrap();
    let first = watch.recv_timeout(ACT).unwrap();
    assert_eq!(
        (first.key(), first.revision()),
        (h.key("between").as_slice(), r)
    );
    assert_eq!(
        watch.recv_timeout(ACT).unwrap().key(),
        h.key("after").as_slice()
    );
}

pub fn watch_key_sees_only_that_key<H: Harness>(h: &H) {
    let s = h.store();
    let (job1, job10) = (h.key("cron/lock/job1"), h.key("cron/lock/job10"));
    let watch = s.watch_key(&job1).unwrap();
    let prefix = s.watch(&job1).unwrap();
    s.put(&job10, b"other").unwrap();
    let r = s.put(&job1, b"mine").unwrap();
    s.delete(&job10).unwrap();
    s.delete(&job1).unwrap();

    let put = watch.recv_timeout(ACT).unwrap();
    assert_eq!((put.key(), put.revision()), (job1.as_slice(), r));
    let WatchEvent::Delete { key, .. } = watch.recv_timeout(ACT).unwrap() else {
        panic!("a delete of job1")
    };
    assert_eq!(key, job1);
    // The prefix watch saw all four; by then the key watch would have had job10's too.
    let seen: Vec<Vec<u8>> = (0..4)
        .map(|_| prefix.recv_timeout(ACT).unwrap().key().to_vec())
        .collect();
    assert_eq!(seen, [&job10[..], &job1, &job10, &job1]);
    assert!(watch.try_recv().is_err(), "job10 is not job1");
}

pub fn streams_deliver_and_lost_resolves<H: Harness>(h: &H) {
    use futures::StreamExt;
    use futures::executor::block_on;

    let s = h.store();
    let k = h.key("streamed");
    let mut watch = s.watch_key(&k).unwrap();
    let lease = s.grant(TTL).unwrap();
    let mut ka = s.keep_alive(lease.id).unwrap();
    let lost = ka.lost();
    let r = s.put_with_lease(&k, b"v", lease.id).unwrap();
    block_on(async {
        let first = ka.next().await.unwrap();
        assert_eq!((first.id, first.ttl), (lease.id, TTL));
        let event = watch.next().await.unwrap();
        assert_eq!((event.key(), event.revision()), (k.as_slice(), r));
    });
    s.revoke(lease.id).unwrap();
    assert_eq!(block_on(lost), EndReason::Revoked);
    block_on(async {
        assert_eq!(
            ka.next().await,
            None,
            "the responses end with the keep-alive"
        );
        let Some(WatchEvent::Delete { key, .. }) = watch.next().await else {
            panic!("the revocation deletes the key")
        };
        assert_eq!(key, k);
    });
}

pub fn streams_end_when_the_store_closes<H: Harness>(h: &H) {
    use futures::StreamExt;
    use futures::executor::block_on;

    let s = h.store();
    let mut watch = s.watch(h.prefix().as_bytes()).unwrap();
    let lease = s.grant(TTL).unwrap();
    let ka = s.keep_alive(lease.id).unwrap();
    let lost = ka.lost();
    // Waiting on another thread; the pause lets it be pending before the close (the outcome is
    // the same if it is not).
    let waiter = std::thread::spawn(move || (block_on(watch.next()), block_on(lost)));
    std::thread::sleep(Duration::from_millis(50));
    s.close().unwrap();
    let (next, reason) = waiter.join().unwrap();
    assert_eq!(next, None);
    assert_eq!(reason, EndReason::Closed);
}

pub fn keep_alive_renews_until_cancelled<H: Harness>(h: &H) {
    let s = h.store();
    let k = h.key("kept");
    let lease = s.grant(TTL).unwrap();
    s.put_with_lease(&k, b"1", lease.id).unwrap();
    let ka = s.keep_alive(lease.id).unwrap();
    assert_eq!(ka.id(), lease.id);
    let first = ka
        .responses()
        .try_recv()
        .expect("the first renewal is done before it returns");
    assert_eq!((first.id, first.ttl), (lease.id, TTL));
    assert_eq!(ka.ended(), None);

    // Two TTLs pass, in steps of the renewal interval: the lease lives on.
    for _ in 0..6 {
        h.pass(TTL / 3);
        let r = ka
            .responses()
            .recv_timeout(ACT)
            .expect("a renewal every TTL/3");
        assert_eq!((r.id, r.ttl), (lease.id, TTL));
    }
    assert_eq!(
        s.time_to_live_with_keys(lease.id).unwrap().keys,
        vec![k.clone()]
    );

    ka.cancel();
    assert_eq!(ka.ended(), Some(EndReason::Cancelled));
    assert!(eventually(|| ka
        .responses()
        .try_recv()
        .is_err_and(|e| e.is_disconnected())));
    assert!(
        s.time_to_live(lease.id).is_ok(),
        "cancelling does not revoke"
    );
    h.pass(TTL + Duration::from_millis(100));
    assert!(
        eventually(|| s.get(&k).unwrap().is_none()),
        "then the lease expires"
    );
}

pub fn keep_alive_ends_when_the_lease_is_revoked<H: Harness>(h: &H) {
    let s = h.store();
    let lease = s.grant(TTL).unwrap();
    let ka = s.keep_alive(lease.id).unwrap();
    s.revoke(lease.id).unwrap();
    assert_eq!(ka.ended(), Some(EndReason::Revoked));
    let drained: Vec<_> = ka.responses().iter().collect();
    assert!(
        drained.len() <= 1,
        "at most the first renewal was left: {drained:?}"
    );
}

pub fn keep_alive_refuses_bad_requests<H: Harness>(h: &H) {
    let s = h.store();
    let dead = s.grant(TTL).unwrap();
    s.revoke(dead.id).unwrap();
    not_found(s.keep_alive(dead.id).map(|ka| ka.id()), dead.id);
    let lease = s.grant(TTL).unwrap();
    let too_slow = KeepAliveOptions::new().interval(TTL);
    assert!(matches!(
        s.keep_alive_with(lease.id, too_slow),
        Err(Error::InvalidConfig(_))
    ));
    s.revoke(lease.id).unwrap();
}

pub fn keep_alive_revoke_on_drop<H: Harness>(h: &H) {
    let s = h.store();
    let k = h.key("owned");
    let lease = s.grant(TTL).unwrap();
    s.put_with_lease(&k, b"1", lease.id).unwrap();
    let ka = s
        .keep_alive_with(lease.id, KeepAliveOptions::new().revoke_on_drop(true))
        .unwrap();
    drop(ka);
    not_found(s.time_to_live(lease.id), lease.id);
    assert_eq!(s.get(&k).unwrap(), None);
}

pub fn keep_alive_run_for_finishes<H: Harness>(h: &H) {
    let s = h.store();
    let lease = s.grant(TTL).unwrap();
    let ka = s
        .keep_alive_with(lease.id, KeepAliveOptions::new().run_for(TTL / 2))
        .unwrap();
    h.pass(TTL / 2);
    assert!(eventually(|| ka.ended().is_some()));
    assert_eq!(ka.ended(), Some(EndReason::Finished));
    assert!(
        s.time_to_live(lease.id).is_ok(),
        "renewed a last time: alive one TTL more"
    );
    s.revoke(lease.id).unwrap();
}
