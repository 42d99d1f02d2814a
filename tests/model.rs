//! Property test: random sequences of operations, checked after every step against a naive
//! model of what the lessor should hold (leases, deadlines, keys, revisions, expiry order) and
//! of the exact events it should publish (lease events, and the key events of a watch on every
//! key and of watches started from past revisions). The model and the interpreter live in
//! `tests/support/model.rs`, shared with the `ops` fuzz target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support {
    pub mod model;
}

use common::MemDisk;
use lessor::ManualClock;
use proptest::prelude::*;
use support::model::{IDS, KEYS, Model, Op, Out, Sut, check, compare, compare_events, run};

fn op() -> impl Strategy<Value = Op> {
    let ttl = 1..8u64; // seconds
    let lease = 1..=IDS;
    let keys = prop::collection::vec(0..KEYS, 0..3);
    prop_oneof![
        3 => ttl.clone().prop_map(Op::Grant),
        1 => (lease.clone(), ttl).prop_map(|(i, t)| Op::GrantWithId(i, t)),
        3 => lease.clone().prop_map(Op::Renew),
        4 => (0..KEYS, any::<u8>(), prop::option::of(lease.clone()))
            .prop_map(|(k, v, l)| Op::Put(k, v, l)),
        1 => (0..KEYS).prop_map(Op::Delete),
        2 => (lease.clone(), keys.clone()).prop_map(|(l, k)| Op::Attach(l, k)),
        1 => (lease.clone(), keys).prop_map(|(l, k)| Op::Detach(l, k)),
        2 => lease.clone().prop_map(Op::Revoke),
        1 => lease.prop_map(Op::TimeToLive),
        3 => (0..4000u64).prop_map(Op::Advance), // milliseconds
        2 => Just(Op::RevokeExpired),
        1 => Just(Op::Reopen),
        2 => (0..KEYS, 0..3u64, any::<u8>(), prop::option::of(1..=IDS))
            .prop_map(|(k, v, x, l)| Op::CasPut(k, v, x, l)),
        1 => (0..8u64).prop_map(Op::WatchFrom),
        2 => (1..=IDS).prop_map(Op::KeepAlive),
        1 => (1..=IDS).prop_map(Op::StopKeepAlive),
    ]
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs N (the default config reads it).
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn lessor_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        check(&ops, false).map_err(TestCaseError::fail)?;
    }

    /// Batched durability: grants are queued without a transaction, every other call commits
    /// without fsync; what callers see must not differ.
    #[test]
    fn lessor_matches_the_model_batched(ops in prop::collection::vec(op(), 1..60)) {
        check(&ops, true).map_err(TestCaseError::fail)?;
    }
}

/// The same model on a real file, fewer cases: a commit here costs an fsync.
#[test]
fn lessor_matches_the_model_on_a_real_file() {
    let dir = common::test_dir();
    let clock = ManualClock::new();
    let open = |clock: &ManualClock| common::manual_at(&dir.path, clock);
    let mut sut = Sut::new(open(&clock));
    let mut m = Model::default();
    let ops = [
        Op::Grant(5),
        Op::Put(0, 1, Some(1)),
        Op::Grant(2),
        Op::Put(1, 2, Some(2)),
        Op::Put(2, 3, None),
        Op::Attach(2, vec![2]),
        Op::Advance(1500),
        Op::Renew(2),
        Op::Reopen,
        Op::Advance(2500),
        Op::RevokeExpired,
        Op::Advance(3000),
        Op::Reopen,
        Op::Detach(2, vec![1]),
        Op::Advance(5000),
        Op::RevokeExpired,
        Op::Reopen,
    ];
    for op in &ops {
        let want = m.apply(op);
        let got = match op {
            Op::Reopen => {
                sut.l.close().unwrap();
                Out::Ok
            }
            other => run(&mut sut, &MemDisk::new(), &clock, false, other),
        };
        assert_eq!(got, want, "{op:?}");
        compare_events(&sut, &mut m).unwrap();
        if matches!(op, Op::Reopen) {
            sut = Sut::new(open(&clock));
            m.new_history();
        }
        compare(&sut.l, &m).unwrap();
    }
    sut.l.verify().unwrap();
}
