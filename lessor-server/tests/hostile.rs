//! Arbitrary requests, straight to the services (no socket): every one gets an answer or one
//! of etcd's errors, never a panic or an internal error, and the database stays consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lessor_server::Limits;
use lessor_server::pb::etcdserverpb::{
    self as pb, compare, kv_server::Kv, lease_server::Lease, request_op,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tonic::{Code, Request};

/// Keys from a small alphabet, with the edge cases: empty, "\0", 0xff bytes.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(vec![0]),
        Just(vec![0xff, 0xff]),
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'/'), Just(0u8), Just(0xffu8)],
            1..4
        ),
    ]
}

fn small_i64() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..8, Just(i64::MAX), Just(i64::MIN)]
}

fn range() -> impl Strategy<Value = pb::RangeRequest> {
    (
        key(),
        key(),
        small_i64(),
        small_i64(),
        -1i32..6,
        -1i32..4,
        any::<(bool, bool)>(),
        small_i64(),
        small_i64(),
    )
        .prop_map(
            |(
                key,
                range_end,
                limit,
                revision,
                sort_target,
                sort_order,
                (keys_only, count_only),
                min,
                max,
            )| {
                pb::RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    min_mod_revision: min,
                    max_create_revision: max,
                    ..pb::RangeRequest::default()
                }
            },
        )
}

fn put() -> impl Strategy<Value = pb::PutRequest> {
    (key(), key(), small_i64(), any::<(bool, bool, bool)>()).prop_map(
        |(key, value, lease, (prev_kv, iv, il))| pb::PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value: iv,
            ignore_lease: il,
        },
    )
}

fn delete() -> impl Strategy<Value = pb::DeleteRangeRequest> {
    (key(), key(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = pb::Compare> {
    (
        -1i32..5,
        -1i32..6,
        key(),
        key(),
        small_i64(),
        key(),
        0..6usize,
    )
        .prop_map(
            |(result, target, key, range_end, n, value, which)| pb::Compare {
                result,
                target,
                key,
                range_end,
                target_union: match which {
                    0 => Some(compare::TargetUnion::Version(n)),
                    1 => Some(compare::TargetUnion::CreateRevision(n)),
                    2 => Some(compare::TargetUnion::ModRevision(n)),
                    3 => Some(compare::TargetUnion::Value(value)),
                    4 => Some(compare::TargetUnion::Lease(n)),
                    _ => None,
                },
            },
        )
}

fn txn() -> impl Strategy<Value = pb::TxnRequest> {
    let leaf = (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(op(None), 0..4),
        proptest::collection::vec(op(None), 0..3),
    )
        .prop_map(|(compare, success, failure)| pb::TxnRequest {
            compare,
            success,
            failure,
        });
    leaf.prop_recursive(3, 12, 3, |inner| {
        (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(op(Some(inner.clone().boxed())), 0..4),
            proptest::collection::vec(op(Some(inner.boxed())), 0..3),
        )
            .prop_map(|(compare, success, failure)| pb::TxnRequest {
                compare,
                success,
                failure,
            })
    })
}

fn op(nested: Option<BoxedStrategy<pb::TxnRequest>>) -> BoxedStrategy<pb::RequestOp> {
    let base = prop_oneof![
        range().prop_map(request_op::Request::RequestRange),
        put().prop_map(request_op::Request::RequestPut),
        delete().prop_map(request_op::Request::RequestDeleteRange),
    ];
    let request = match nested {
        Some(t) => prop_oneof![3 => base, 1 => t.prop_map(request_op::Request::RequestTxn)].boxed(),
        None => base.boxed(),
    };
    proptest::option::weighted(0.95, request)
        .prop_map(|request| pb::RequestOp { request })
        .boxed()
}

#[derive(Debug, Clone)]
enum Call {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(i64),
    Grant(i64, i64),
    Revoke(i64),
    TimeToLive(i64, bool),
    /// Bytes decoded as a transaction, if they decode.
    Raw(Vec<u8>),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        range().prop_map(Call::Range),
        put().prop_map(Call::Put),
        delete().prop_map(Call::Delete),
        txn().prop_map(Call::Txn),
        small_i64().prop_map(Call::Compact),
        (small_i64(), small_i64()).prop_map(|(ttl, id)| Call::Grant(ttl, id)),
        small_i64().prop_map(Call::Revoke),
        (small_i64(), any::<bool>()).prop_map(|(id, keys)| Call::TimeToLive(id, keys)),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Call::Raw),
    ]
}

/// An error is one a client can act on: not a server fault.
fn acceptable(code: Code) -> Result<(), TestCaseError> {
    prop_assert!(
        !matches!(code, Code::Internal | Code::Unknown | Code::DataLoss),
        "{code:?}"
    );
    Ok(())
}

#[test]
fn arbitrary_requests_get_answers_or_etcds_errors() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(call(), 1..12), |calls| {
            let lessor = lessor::Lessor::builder()
                .clock(lessor::ManualClock::new())
                .open_in_memory()
                .unwrap();
            let limits = Limits::default().max_request_bytes(4096).max_txn_ops(8);
            let kv = lessor_server::__test::kv(lessor.clone(), limits);
            let lease = lessor_server::__test::lease(lessor.clone(), limits);
            rt.block_on(async {
                for call in calls {
                    let code = match call {
                        Call::Range(r) => kv.range(Request::new(r)).await.err(),
                        Call::Put(r) => kv.put(Request::new(r)).await.err(),
                        Call::Delete(r) => kv.delete_range(Request::new(r)).await.err(),
                        Call::Txn(r) => kv.txn(Request::new(r)).await.err(),
                        Call::Compact(revision) => kv
                            .compact(Request::new(pb::CompactionRequest {
                                revision,
                                physical: false,
                            }))
                            .await
                            .err(),
                        Call::Grant(ttl, id) => lease
                            .lease_grant(Request::new(pb::LeaseGrantRequest { ttl, id }))
                            .await
                            .err(),
                        Call::Revoke(id) => lease
                            .lease_revoke(Request::new(pb::LeaseRevokeRequest { id }))
                            .await
                            .err(),
                        Call::TimeToLive(id, keys) => lease
                            .lease_time_to_live(Request::new(pb::LeaseTimeToLiveRequest {
                                id,
                                keys,
                            }))
                            .await
                            .err(),
                        Call::Raw(bytes) => match pb::TxnRequest::decode(bytes.as_slice()) {
                            Ok(r) => kv.txn(Request::new(r)).await.err(),
                            Err(_) => None,
                        },
                    };
                    if let Some(status) = code {
                        acceptable(status.code())?;
                    }
                }
                Ok::<(), TestCaseError>(())
            })?;
            let problems = lessor.verify_report().unwrap();
            prop_assert!(problems.is_empty(), "{problems:?}");
            Ok(())
        })
        .unwrap();
    drop(rt);
}
