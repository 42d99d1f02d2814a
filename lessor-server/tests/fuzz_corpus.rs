//! Replays the committed corpus and the saved crash reproducers of the `serve` fuzz target
//! (`fuzz/corpus/serve/`, `fuzz/regressions/serve/`) on stable, through the check the target
//! runs (`tests/support/serve.rs`), so that `cargo test` catches a regression without nightly.
//!
//! Ignored tests write the seed corpus (`cargo test -p lessor-server --test fuzz_corpus --
//! --ignored write_serve_seeds`) and replay a directory of inputs
//! (`SERVE_DIR=<dir> [SERVE_TRACE=1] cargo test ... -- --ignored replay_serve_dir`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support {
    #[path = "../../../tests/support/fuzz_inputs.rs"]
    pub mod fuzz_inputs;
    pub mod serve;
}

use std::fs;
use std::path::{Path, PathBuf};

use lessor_server::pb::etcdserverpb::{
    self as pb, compare, request_op, watch_create_request, watch_request,
};
use prost::Message;
use support::serve::{self, Call, Slot};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The input files of `fuzz/<dir>/serve/`.
fn inputs(dir: &str) -> Vec<PathBuf> {
    support::fuzz_inputs::inputs(&fuzz_dir(), dir, "serve")
}

fn replay(files: &[PathBuf]) {
    for path in files {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(e) = serve::check_bytes(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn serve_corpus_replays() {
    let files = inputs("corpus");
    assert!(!files.is_empty(), "fuzz/corpus/serve/ is empty");
    replay(&files);
}

#[test]
fn serve_regressions_replay() {
    replay(&inputs("regressions"));
}

/// The decoder reads back what the seed encoder writes, and every seed passes the check.
#[test]
fn serve_seeds_decode_as_written_and_pass() {
    for (name, calls) in seeds() {
        let bytes = serve::encode(&calls).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serve::decode(&bytes), calls, "{name}");
        if let Err(e) = serve::check(&calls) {
            panic!("{name}: {e}");
        }
    }
}

/// The check catches what it is for: a response that breaks a watch's contract.
#[test]
fn the_watch_check_rejects_an_event_outside_the_range() {
    let create = pb::WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"a".to_vec(),
                ..pb::WatchCreateRequest::default()
            },
        )),
    };
    let header = Some(pb::ResponseHeader::default());
    let created = pb::WatchResponse {
        header,
        watch_id: 0,
        created: true,
        ..pb::WatchResponse::default()
    };
    let event = |key: &[u8]| pb::WatchResponse {
        header,
        watch_id: 0,
        events: vec![lessor_server::pb::mvccpb::Event {
            kv: Some(lessor_server::pb::mvccpb::KeyValue {
                key: key.to_vec(),
                mod_revision: 3,
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..pb::WatchResponse::default()
    };
    let sent = [Some(create)];
    assert!(serve::check_watch(&sent, &[Ok(created.clone()), Ok(event(b"a"))], false).is_ok());
    assert!(serve::check_watch(&sent, &[Ok(created.clone()), Ok(event(b"b"))], false).is_err());
    assert!(serve::check_watch(&sent, &[Ok(event(b"a"))], false).is_err());
    assert!(serve::check_watch(&sent, &[], false).is_err());
}

/// Replays every file of the directory `SERVE_DIR` (a grown corpus, or findings): with
/// `SERVE_TRACE=1`, to read what the inputs do.
#[test]
#[ignore = "replays the directory SERVE_DIR"]
fn replay_serve_dir() {
    let dir = PathBuf::from(std::env::var_os("SERVE_DIR").expect("SERVE_DIR"));
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    replay(&files);
}

/// Writes the seeds into `fuzz/corpus/serve/`, one file per seed, named after it.
#[test]
#[ignore = "writes the seed corpus"]
fn write_serve_seeds() {
    let dir = fuzz_dir().join("corpus").join("serve");
    fs::create_dir_all(&dir).unwrap();
    for (name, calls) in seeds() {
        fs::write(dir.join(name), serve::encode(&calls).unwrap()).unwrap();
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..pb::PutRequest::default()
    }
}

fn range(key: &[u8], range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..pb::RangeRequest::default()
    }
}

fn op(request: request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

fn create(key: &[u8], range_end: &[u8]) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..pb::WatchCreateRequest::default()
    }
}

fn watch(c: watch_request::RequestUnion) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(c),
    }
}

fn grant(ttl: i64, id: i64) -> Call {
    Call::Grant(pb::LeaseGrantRequest { ttl, id })
}

/// The seed inputs: each service's main paths and edge values, small.
fn seeds() -> Vec<(&'static str, Vec<Call>)> {
    use request_op::Request as R;
    use watch_request::RequestUnion as W;
    let nested = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: b"a".to_vec(),
            target_union: Some(compare::TargetUnion::Version(0)),
            ..pb::Compare::default()
        }],
        success: vec![
            op(R::RequestPut(pb::PutRequest {
                prev_kv: true,
                ..put(b"a", b"1", 0)
            })),
            op(R::RequestRange(range(b"a", b"\0"))),
        ],
        failure: vec![op(R::RequestDeleteRange(pb::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: true,
        }))],
    };
    let mut outer = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            range_end: b"\0".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(-1)),
        }],
        success: vec![op(R::RequestTxn(nested.clone()))],
        failure: vec![op(R::RequestPut(put(b"b", b"2", 0)))],
    };
    outer.failure.push(pb::RequestOp { request: None });
    vec![
        (
            "kv",
            vec![
                Call::Put(put(b"a", b"1", 0)),
                Call::Put(pb::PutRequest {
                    prev_kv: true,
                    ..put(b"a/b", b"2", 0)
                }),
                Call::Put(pb::PutRequest {
                    ignore_value: true,
                    ..put(b"a", b"", 0)
                }),
                Call::Range(pb::RangeRequest {
                    sort_order: 2,
                    sort_target: 3,
                    limit: 1,
                    ..range(b"a", b"\0")
                }),
                Call::Range(pb::RangeRequest {
                    count_only: true,
                    keys_only: true,
                    revision: 1,
                    ..range(b"\0", b"\0")
                }),
                Call::Delete(pb::DeleteRangeRequest {
                    key: b"a".to_vec(),
                    range_end: b"\0".to_vec(),
                    prev_kv: true,
                }),
                Call::Compact(pb::CompactionRequest {
                    revision: 0,
                    physical: true,
                }),
                Call::Compact(pb::CompactionRequest {
                    revision: i64::MAX,
                    physical: false,
                }),
            ],
        ),
        (
            "kv-edges",
            vec![
                Call::Put(put(b"", b"x", 0)),
                Call::Put(put(b"\0", b"\xff", -1)),
                Call::Put(put(&[b'k'; 320], b"v", 0)),
                Call::Put(put(b"\xff\xff", &[b'k'; 4096], 0)),
                Call::Range(pb::RangeRequest {
                    limit: i64::MIN,
                    sort_order: 99,
                    sort_target: i32::MIN,
                    min_mod_revision: i64::MAX,
                    max_create_revision: -1,
                    ..range(b"\0", b"")
                }),
                Call::Range(range(b"", b"\0")),
                Call::Delete(pb::DeleteRangeRequest {
                    key: b"\xff".to_vec(),
                    range_end: b"\0".to_vec(),
                    prev_kv: false,
                }),
            ],
        ),
        (
            "txn",
            vec![
                Call::Txn(outer.clone()),
                Call::Txn(outer),
                Call::Txn(pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: 7,
                        target: -1,
                        ..pb::Compare::default()
                    }],
                    ..pb::TxnRequest::default()
                }),
                Call::Txn(pb::TxnRequest {
                    success: vec![
                        op(R::RequestPut(put(b"a", b"1", 0))),
                        op(R::RequestPut(put(b"a", b"2", 0))),
                    ],
                    ..pb::TxnRequest::default()
                }),
                Call::Txn(pb::TxnRequest {
                    success: vec![op(R::RequestRange(pb::RangeRequest {
                        revision: 1,
                        ..range(b"a", b"")
                    }))],
                    ..pb::TxnRequest::default()
                }),
                Call::Raw(3, nested.encode_to_vec()),
                Call::DeepTxn(40),
                Call::DeepTxn(60),
                Call::DeepTxn(255),
            ],
        ),
        (
            "leases",
            vec![
                grant(5, 0),
                grant(10, 7),
                grant(10, 7),
                grant(1, -5),
                grant(i64::MAX, 0),
                grant(-1, i64::MAX),
                Call::Put(put(b"l", b"v", 7)),
                Call::Put(pb::PutRequest {
                    ignore_lease: true,
                    ..put(b"l", b"w", 0)
                }),
                Call::TimeToLive(pb::LeaseTimeToLiveRequest { id: 7, keys: true }),
                Call::TimeToLive(pb::LeaseTimeToLiveRequest {
                    id: i64::MIN,
                    keys: true,
                }),
                Call::Leases,
                Call::Advance(6),
                Call::Revoke(pb::LeaseRevokeRequest { id: 7 }),
                Call::Revoke(pb::LeaseRevokeRequest { id: -1 }),
                Call::Leases,
            ],
        ),
        (
            "keepalive",
            vec![
                grant(5, 3),
                Call::KeepAlive(0, pb::LeaseKeepAliveRequest { id: 3 }),
                Call::KeepAlive(0, pb::LeaseKeepAliveRequest { id: -1 }),
                Call::KeepAlive(1, pb::LeaseKeepAliveRequest { id: 3 }),
                Call::KeepAlive(2, pb::LeaseKeepAliveRequest { id: 3 }),
                Call::Close(Slot::KeepAlive(0)),
                Call::KeepAlive(2, pb::LeaseKeepAliveRequest { id: 3 }),
                Call::Frame(Slot::KeepAlive(1), vec![0x08]),
                Call::KeepAlive(1, pb::LeaseKeepAliveRequest { id: 3 }),
                Call::RawBody(Slot::KeepAlive(2), vec![1, 0, 0, 0, 2, 8, 3]),
                Call::RawBody(Slot::KeepAlive(0), vec![0, 0xff, 0xff, 0xff, 0xff]),
                Call::Frame(Slot::KeepAlive(0), vec![0x08, 0x03]),
            ],
        ),
        (
            "watch",
            vec![
                Call::Watch(
                    0,
                    watch(W::CreateRequest(pb::WatchCreateRequest {
                        prev_kv: true,
                        ..create(b"a", b"\0")
                    })),
                ),
                Call::Put(put(b"a/x", b"1", 0)),
                Call::Watch(0, watch(W::ProgressRequest(pb::WatchProgressRequest {}))),
                Call::Watch(
                    0,
                    watch(W::CreateRequest(pb::WatchCreateRequest {
                        watch_id: 5,
                        filters: vec![watch_create_request::FilterType::Noput as i32],
                        ..create(b"a/", b"a0")
                    })),
                ),
                Call::Watch(
                    0,
                    watch(W::CreateRequest(pb::WatchCreateRequest {
                        watch_id: 5,
                        ..create(b"b", b"")
                    })),
                ),
                Call::Delete(pb::DeleteRangeRequest {
                    key: b"a/x".to_vec(),
                    range_end: Vec::new(),
                    prev_kv: false,
                }),
                Call::Watch(
                    0,
                    watch(W::CancelRequest(pb::WatchCancelRequest { watch_id: 5 })),
                ),
                Call::Watch(
                    1,
                    watch(W::CreateRequest(pb::WatchCreateRequest {
                        start_revision: 1,
                        watch_id: -1,
                        ..create(b"", b"\0")
                    })),
                ),
                Call::Watch(
                    1,
                    watch(W::CreateRequest(pb::WatchCreateRequest {
                        start_revision: i64::MAX,
                        ..create(b"\xff", b"")
                    })),
                ),
                Call::Put(put(b"\xff", b"z", 0)),
                Call::Close(Slot::Watch(0)),
                Call::Frame(Slot::Watch(1), vec![0x1a, 0x00]),
                Call::Frame(Slot::Watch(1), vec![0xff]),
                Call::RawBody(Slot::Watch(2), vec![0, 0, 0, 0, 2, 0x1a, 0x00, 0, 0]),
            ],
        ),
        (
            "maintenance",
            vec![
                Call::Status,
                Call::Alarm(pb::AlarmRequest::default()),
                Call::Alarm(pb::AlarmRequest {
                    action: 1,
                    member_id: u64::MAX,
                    alarm: 2,
                }),
                Call::Alarm(pb::AlarmRequest {
                    action: -1,
                    member_id: 0,
                    alarm: i32::MAX,
                }),
                Call::MemberList,
                Call::Raw(9, vec![0x08, 0x01]),
                Call::Raw(0, vec![0x0a, 0x01, b'a', 0x12, 0x01, 0x00]),
                Call::Raw(5, vec![0x08, 0x05, 0x10, 0x09]),
                Call::Raw(1, vec![0xff, 0xff]),
            ],
        ),
    ]
}
