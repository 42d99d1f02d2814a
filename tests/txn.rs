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

/// The keys of a list of key-values, as strings.
fn keys(kvs: &[lessor::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[test]
fn range_between_reads_half_open_ranges_with_or_without_an_end() {
    let l = lessor();
    for k in ["/a", "/b", "/b/1", "/c", "/d"] {
        l.put(k, "v").unwrap();
    }
    let snap = l.range_between("/b", Some(b"/c")).unwrap();
    assert_eq!(keys(&snap.kvs), ["/b", "/b/1"]);
    assert_eq!(snap.revision, Revision::new(5));
    assert_eq!(
        keys(&l.range_between("/c", None).unwrap().kvs),
        ["/c", "/d"]
    );
    assert_eq!(l.range_between("", None).unwrap().kvs.len(), 5);
    assert!(l.range_between("/c", Some(b"/b")).unwrap().kvs.is_empty());
    assert!(l.range_between("/c", Some(b"/c")).unwrap().kvs.is_empty());
    // A prefix of only 0xff bytes has no end: range reads it through the same code.
    l.put([0xff, 0xff], "v").unwrap();
    l.put([0xff, 0xff, 1], "v").unwrap();
    assert_eq!(l.range([0xff, 0xff]).unwrap().len(), 2);
    assert_eq!(l.range([0xff]).unwrap().len(), 2);
}

#[test]
fn delete_range_deletes_every_key_at_one_revision_and_returns_them() {
    let l = lessor();
    for k in ["/q/1", "/q/2", "/q/3", "/r"] {
        l.put(k, "v").unwrap(); // revs 1..=4
    }
    let watch = l.watch("").unwrap();
    let got = l
        .txn(
            Txn::new()
                .then(Op::delete_range("/q/", Some(b"/q0")))
                .then(Op::range_between("", None)),
        )
        .unwrap();
    assert_eq!(got.revision, Revision::new(5));
    let OpResponse::DeleteRange(deleted) = &got.responses[0] else {
        panic!("{got:?}")
    };
    assert_eq!(keys(deleted), ["/q/1", "/q/2", "/q/3"]);
    assert_eq!(deleted[0].mod_revision, Revision::new(1));
    let OpResponse::Range(left) = &got.responses[1] else {
        panic!()
    };
    assert_eq!(keys(left), ["/r"]);
    for _ in 0..3 {
        assert_eq!(watch.recv().unwrap().revision(), Revision::new(5));
    }
    // Nothing to delete: the revision stays.
    let none = l
        .txn(Txn::new().then(Op::delete_range("/q/", Some(b"/q0"))))
        .unwrap();
    assert_eq!(none.revision, Revision::new(5));
    assert_eq!(none.responses, [OpResponse::DeleteRange(vec![])]);
}

#[test]
fn a_branch_may_not_put_a_key_it_deletes_in_a_range() {
    let l = lessor();
    let err = l
        .txn(
            Txn::new()
                .then(Op::delete_range("/q/", None))
                .then(Op::put("/q/1", "v")),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
    let err = l
        .txn(Txn::new().then(Op::put("/q/1", "v")).then(Op::txn(
            Txn::new().then(Op::delete_range("/q", Some(b"/r"))),
        )))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
    // Outside the range, or in the other branch, is fine.
    l.txn(
        Txn::new()
            .then(Op::delete_range("/q/", Some(b"/q0")))
            .then(Op::put("/q0", "v"))
            .otherwise(Op::put("/q/1", "v")),
    )
    .unwrap();
    assert_eq!(l.revision().unwrap(), Revision::new(1));
}

#[test]
fn a_comparison_over_a_range_holds_for_every_key_or_as_for_a_missing_key() {
    let l = lessor();
    l.put("/q/1", "a").unwrap();
    l.put("/q/2", "b").unwrap();
    let over = |c: Compare| c.over_range(Some(b"/q0"));
    assert!(holds(&l, over(Compare::version("/q/", CmpOp::Equal, 1))));
    assert!(!holds(&l, over(Compare::value("/q/", CmpOp::Equal, "a"))));
    assert!(holds(&l, over(Compare::value("/q/", CmpOp::Less, "c"))));
    assert!(!holds(
        &l,
        over(Compare::mod_revision("/q/", CmpOp::Less, Revision::new(2)))
    ));
    // An empty range: as a missing key.
    let empty = |c: Compare| c.over_range(Some(b"/z0"));
    assert!(holds(
        &l,
        empty(Compare::create_revision(
            "/z/",
            CmpOp::Equal,
            Revision::new(0)
        ))
    ));
    assert!(!holds(
        &l,
        empty(Compare::value("/z/", CmpOp::NotEqual, "x"))
    ));
    assert!(holds(
        &l,
        Compare::version("", CmpOp::Greater, 0).over_range(None)
    ));
}

#[test]
fn nested_transactions_see_earlier_writes_and_share_the_revision() {
    let l = lessor();
    l.put("/a", "1").unwrap(); // rev 1
    let inner = Txn::new()
        .when(Compare::value("/b", CmpOp::Equal, "2"))
        .then(Op::put("/c", "3"))
        .then(Op::get("/c"))
        .otherwise(Op::delete("/a"));
    let got = l
        .txn(
            Txn::new()
                .when(Compare::exists("/a"))
                .then(Op::put("/b", "2"))
                .then(Op::txn(inner)),
        )
        .unwrap();
    assert!(got.succeeded);
    assert_eq!(got.revision, Revision::new(2));
    let OpResponse::Txn {
        succeeded,
        responses,
    } = &got.responses[1]
    else {
        panic!("{got:?}")
    };
    assert!(*succeeded);
    assert_eq!(responses[0], OpResponse::Put);
    let OpResponse::Get(Some(c)) = &responses[1] else {
        panic!()
    };
    assert_eq!(c.mod_revision, Revision::new(2));
    // A nested branch writing what its parent branch writes is refused.
    let twice = Txn::new().otherwise(Op::put("/b", "x"));
    let err = l
        .txn(Txn::new().then(Op::put("/b", "2")).then(Op::txn(twice)))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
}

#[test]
fn transactions_nested_deeper_than_64_levels_are_refused_and_write_nothing() {
    let l = lessor();
    let nest = |levels: usize| {
        let mut txn = Txn::new().then(Op::put("/deep", "v"));
        for _ in 0..levels {
            txn = Txn::new().then(Op::txn(txn));
        }
        txn
    };
    let e = l.txn(nest(65)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidKey(m) if m.contains("nested deeper")),
        "{e}"
    );
    assert!(l.get("/deep").unwrap().is_none());
    // 64 levels are fine, and write at one revision.
    let res = l.txn(nest(64)).unwrap();
    assert!(res.succeeded);
    assert_eq!(l.get("/deep").unwrap().unwrap().mod_revision, res.revision);
}
