//! Transactions: comparisons, then/otherwise, one revision, all or nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{id, secs};
use lessor::{CmpOp, Compare, Error, Lessor, ManualClock, Op, OpResponse, Revision, Txn};

fn lessor() -> Lessor {
    Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .open_in_memory()
        .unwrap()
}

/// Whether a transaction with this one comparison succeeds.
fn holds(l: &Lessor, c: Compare) -> bool {
    l.txn(Txn::new().when(c)).unwrap().succeeded
}

#[test]
fn every_comparison_target_and_operator() {
    let l = lessor();
    let lease = l.grant(secs(10)).unwrap();
    l.put("/k", "b").unwrap(); // rev 1
    l.put_with_lease("/k", "b", lease.id).unwrap(); // rev 2, version 2
    let r = Revision::new;

    assert!(holds(&l, Compare::exists("/k")));
    assert!(!holds(&l, Compare::absent("/k")));
    assert!(holds(&l, Compare::absent("/none")));
    assert!(!holds(&l, Compare::exists("/none")));

    assert!(holds(&l, Compare::value("/k", CmpOp::Equal, "b")));
    assert!(holds(&l, Compare::value("/k", CmpOp::NotEqual, "a")));
    assert!(holds(&l, Compare::value("/k", CmpOp::Greater, "a")));
    assert!(holds(&l, Compare::value("/k", CmpOp::Less, "c")));
    assert!(!holds(&l, Compare::value("/k", CmpOp::Less, "b")));

    assert!(holds(&l, Compare::version("/k", CmpOp::Equal, 2)));
    assert!(holds(&l, Compare::version("/k", CmpOp::Greater, 1)));
    assert!(holds(
        &l,
        Compare::create_revision("/k", CmpOp::Equal, r(1))
    ));
    assert!(holds(&l, Compare::mod_revision("/k", CmpOp::Equal, r(2))));
    assert!(holds(&l, Compare::mod_revision("/k", CmpOp::Less, r(3))));
    assert!(holds(
        &l,
        Compare::lease("/k", CmpOp::Equal, Some(lease.id))
    ));
    assert!(holds(&l, Compare::lease("/k", CmpOp::NotEqual, None)));

    // A missing key: version and revisions 0, no lease, and no value compares true.
    assert!(holds(&l, Compare::version("/none", CmpOp::Equal, 0)));
    assert!(holds(
        &l,
        Compare::create_revision("/none", CmpOp::Equal, r(0))
    ));
    assert!(holds(
        &l,
        Compare::mod_revision("/none", CmpOp::Equal, r(0))
    ));
    assert!(holds(&l, Compare::lease("/none", CmpOp::Equal, None)));
    for op in [CmpOp::Equal, CmpOp::NotEqual, CmpOp::Less, CmpOp::Greater] {
        assert!(!holds(&l, Compare::value("/none", op, "")));
    }
}

#[test]
fn all_comparisons_must_hold_and_the_right_branch_runs() {
    let l = lessor();
    l.put("/a", "1").unwrap();
    let res = l
        .txn(
            Txn::new()
                .when(Compare::value("/a", CmpOp::Equal, "1"))
                .when(Compare::exists("/b"))
                .then(Op::put("/then", "x"))
                .otherwise(Op::put("/else", "y"))
                .otherwise(Op::get("/a")),
        )
        .unwrap();
    assert!(!res.succeeded);
    assert_eq!(res.revision, Revision::new(2));
    assert_eq!(res.responses.len(), 2);
    assert_eq!(res.responses[0], OpResponse::Put);
    let OpResponse::Get(Some(kv)) = &res.responses[1] else {
        panic!("{:?}", res.responses)
    };
    assert_eq!(kv.value, b"1");
    assert!(l.get("/then").unwrap().is_none());
    assert_eq!(l.get("/else").unwrap().unwrap().value, b"y");
}

#[test]
fn writes_share_one_revision_and_gets_see_earlier_writes() {
    let l = lessor();
    l.put("/old", "o").unwrap(); // rev 1
    let res = l
        .txn(
            Txn::new()
                .then(Op::put("/a", "2"))
                .then(Op::get("/a"))
                .then(Op::delete("/old"))
                .then(Op::delete("/missing"))
                .then(Op::get("/old")),
        )
        .unwrap();
    assert!(res.succeeded);
    assert_eq!(res.revision, Revision::new(2));
    let OpResponse::Get(Some(a)) = &res.responses[1] else {
        panic!()
    };
    assert_eq!(
        (a.value.as_slice(), a.mod_revision, a.version),
        (&b"2"[..], Revision::new(2), 1)
    );
    assert_eq!(res.responses[2], OpResponse::Delete { existed: true });
    assert_eq!(res.responses[3], OpResponse::Delete { existed: false });
    assert_eq!(res.responses[4], OpResponse::Get(None));
    assert_eq!(l.revision().unwrap(), Revision::new(2));
}

#[test]
fn a_read_only_transaction_does_not_advance_the_revision() {
    let l = lessor();
    l.put("/a", "1").unwrap();
    let res = l
        .txn(Txn::new().then(Op::get("/a")).then(Op::delete("/missing")))
        .unwrap();
    assert_eq!(res.revision, Revision::new(1));
    assert_eq!(l.revision().unwrap(), Revision::new(1));
}

#[test]
fn a_dead_lease_aborts_the_whole_transaction() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let lease = l.grant(secs(1)).unwrap();
    l.put("/keep", "1").unwrap();
    clock.advance(secs(2));
    let err = l
        .txn(
            Txn::new()
                .then(Op::put("/a", "1"))
                .then(Op::delete("/keep"))
                .then(Op::put_with_lease("/b", "2", lease.id)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound(i) if i == lease.id));
    assert!(l.get("/a").unwrap().is_none());
    assert!(l.get("/keep").unwrap().is_some());
    assert_eq!(l.revision().unwrap(), Revision::new(1));
    // Only the branch that runs matters.
    let ok = l
        .txn(
            Txn::new()
                .when(Compare::exists("/nothing"))
                .then(Op::put_with_lease("/b", "2", id(999)))
                .otherwise(Op::put("/c", "3")),
        )
        .unwrap();
    assert!(!ok.succeeded);
}

#[test]
fn bad_keys_and_values_are_refused_before_anything_runs() {
    let l = Lessor::builder()
        .max_key_size(8)
        .max_value_size(4)
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let e = l
        .txn(
            Txn::new()
                .then(Op::put("/a", "1"))
                .otherwise(Op::put("", "x")),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidKey(_)));
    let e = l
        .txn(Txn::new().when(Compare::exists("/much-too-long")))
        .unwrap_err();
    assert!(matches!(e, Error::KeyTooLarge { .. }));
    let e = l.txn(Txn::new().then(Op::put("/a", "12345"))).unwrap_err();
    assert!(matches!(e, Error::ValueTooLarge { .. }));
    assert!(l.get("/a").unwrap().is_none());
}

#[test]
fn put_if_absent_admits_exactly_one_of_many_contenders() {
    let l = Lessor::open_in_memory().unwrap();
    let winners: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let l = l.clone();
                s.spawn(move || {
                    let me = l.grant(secs(10)).unwrap();
                    l.txn(
                        Txn::new()
                            .when(Compare::absent("/lock"))
                            .then(Op::put_with_lease("/lock", format!("{i}"), me.id)),
                    )
                    .unwrap()
                    .succeeded as usize
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn an_empty_transaction_succeeds_and_closed_lessors_refuse() {
    let l = lessor();
    let res = l.txn(Txn::new()).unwrap();
    assert!(res.succeeded && res.responses.is_empty());
    l.close().unwrap();
    assert!(matches!(l.txn(Txn::new()), Err(Error::Closed)));
}

#[test]
fn a_branch_that_writes_one_key_twice_is_refused_as_etcd_does() {
    let l = lessor();
    for (a, b) in [
        (Op::put("/k", "1"), Op::put("/k", "2")),
        (Op::put("/k", "1"), Op::delete("/k")),
        (Op::delete("/k"), Op::delete("/k")),
    ] {
        let e = l.txn(Txn::new().then(a).then(b)).unwrap_err();
        assert!(matches!(e, Error::InvalidKey(_)), "{e}");
    }
    // Reading a key twice, or writing it once in each branch, is fine.
    l.txn(
        Txn::new()
            .then(Op::put("/k", "1"))
            .then(Op::get("/k"))
            .then(Op::get("/k"))
            .otherwise(Op::put("/k", "2")),
    )
    .unwrap();
    assert_eq!(l.get("/k").unwrap().unwrap().version, 1);
}
