//! The server against a client we did not write: the `etcd-client` crate, over a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};
use lessor_server::{Config, Limits, ServeError, Server};
use tonic::Code;

/// A server over `lessor` on a free loopback port, and a client of it. These tests count
/// revisions from the engine's own 0, so the start-up write that brings a fresh store past
/// revision 1 is off here; it has a test of its own below (and lessor-cli's etcdctl test).
async fn start_with(lessor: lessor::Lessor, limits: Limits) -> Client {
    let config = Config::new("127.0.0.1:0".parse().unwrap())
        .limits(limits)
        .etcd_start_revision(false);
    let bound = Server::new(lessor, config).unwrap().bind().await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve());
    Client::connect([addr.to_string()], None).await.unwrap()
}

async fn start() -> Client {
    start_with(lessor::Lessor::open_in_memory().unwrap(), Limits::default()).await
}

#[tokio::test]
async fn a_fresh_store_is_brought_past_revision_one_and_the_internal_key_never_shows() {
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let config = Config::new("127.0.0.1:0".parse().unwrap());
    let bound = Server::new(lessor.clone(), config)
        .unwrap()
        .bind()
        .await
        .unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve());
    let mut c = Client::connect([addr.to_string()], None).await.unwrap();
    // As on etcd, the first write is above revision 1 (etcd's is at 2; ours at 3).
    let put = c.put("/first", "x", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 3);
    // Nothing of the start-up write is left, and a watch from the start does not see it.
    let all = c
        .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), 1);
    let mut stream = c
        .watch(
            "",
            Some(
                etcd_client::WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(1),
            ),
        )
        .await
        .unwrap();
    let mut keys = Vec::new();
    while keys.is_empty() {
        let resp = stream.message().await.unwrap().unwrap();
        keys.extend(resp.events().iter().map(|e| e.kv().unwrap().key().to_vec()));
    }
    assert_eq!(keys, vec![b"/first".to_vec()]);
    // A store already written is left as it is.
    let again = Server::new(lessor.clone(), Config::new("127.0.0.1:0".parse().unwrap()))
        .unwrap()
        .bind()
        .await
        .unwrap();
    drop(again);
    assert_eq!(lessor.revision().unwrap().get(), 3);
}

/// The gRPC status of a failed call.
fn status(e: etcd_client::Error) -> (Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_owned()),
        other => panic!("not a gRPC status: {other}"),
    }
}

fn keys(kvs: &[etcd_client::KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_keep_alive_live_and_revoke_with_their_keys() {
    let mut c = start().await;
    let lease = c.lease_grant(10, None).await.unwrap();
    assert_eq!(lease.ttl(), 10);
    let id = lease.id();
    assert!(id > 0);
    let put = c
        .put(
            "/cron/lock/job1",
            "10001",
            Some(PutOptions::new().with_lease(id)),
        )
        .await
        .unwrap();
    assert_eq!(put.header().unwrap().revision(), 1);

    let info = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(info.granted_ttl(), 10);
    assert!((9..=10).contains(&info.ttl()), "{}", info.ttl());
    assert_eq!(info.keys(), [b"/cron/lock/job1".to_vec()]);
    let leases = c.leases().await.unwrap();
    assert_eq!(
        leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>(),
        [id]
    );

    let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (id, 10));
    }

    let revoked = c.lease_revoke(id).await.unwrap();
    assert_eq!(revoked.header().unwrap().revision(), 2);
    assert!(
        c.get("/cron/lock/job1", None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
    );
    // What etcd answers for a lease that is gone: TTL 0 to a keep-alive, -1 to TimeToLive,
    // NOT_FOUND to a revoke or a put.
    keeper.keep_alive().await.unwrap();
    assert_eq!(responses.message().await.unwrap().unwrap().ttl(), 0);
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    let not_found = (
        Code::NotFound,
        "etcdserver: requested lease not found".to_owned(),
    );
    assert_eq!(status(c.lease_revoke(id).await.unwrap_err()), not_found);
    let put = c
        .put("k", "v", Some(PutOptions::new().with_lease(id)))
        .await;
    assert_eq!(status(put.unwrap_err()), not_found);
    let put = c
        .put("k", "v", Some(PutOptions::new().with_lease(-5)))
        .await;
    assert_eq!(status(put.unwrap_err()), not_found);

    // Our choice of id, or the client's; a live id cannot be granted twice.
    let chosen = c
        .lease_grant(5, Some(etcd_client::LeaseGrantOptions::new().with_id(777)))
        .await
        .unwrap();
    assert_eq!(chosen.id(), 777);
    let again = c
        .lease_grant(5, Some(etcd_client::LeaseGrantOptions::new().with_id(777)))
        .await;
    assert_eq!(
        status(again.unwrap_err()),
        (
            Code::FailedPrecondition,
            "etcdserver: lease already exists".to_owned()
        )
    );
    let huge = c.lease_grant(i64::MAX, None).await;
    assert_eq!(
        status(huge.unwrap_err()).1,
        "etcdserver: too large lease TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_sort_limit_count_and_filter_as_etcd() {
    let mut c = start().await;
    for (k, v) in [("/p/c", "1"), ("/p/a", "3"), ("/p/b", "2"), ("/q", "x")] {
        c.put(k, v, None).await.unwrap(); // revisions 1..=4
    }
    c.put("/p/a", "4", None).await.unwrap(); // rev 5: /p/a version 2

    let all = c
        .get("/p/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(all.kvs()), ["/p/a", "/p/b", "/p/c"]);
    assert_eq!((all.count(), all.more()), (3, false));
    assert_eq!(all.header().unwrap().revision(), 5);
    let a = &all.kvs()[0];
    assert_eq!(
        (a.create_revision(), a.mod_revision(), a.version()),
        (2, 5, 2)
    );

    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(2);
    let top = c.get("/p/", Some(opts)).await.unwrap();
    assert_eq!(keys(top.kvs()), ["/p/b", "/p/a"]);
    assert_eq!((top.count(), top.more()), (3, true));

    let by_value = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Value, SortOrder::None);
    let v = c.get("/p/", Some(by_value)).await.unwrap();
    assert_eq!(keys(v.kvs()), ["/p/c", "/p/b", "/p/a"]);

    let counted = c
        .get(
            "/p/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await;
    let counted = counted.unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (3, 0));
    let bare = c
        .get(
            "/p/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await;
    assert!(bare.unwrap().kvs().iter().all(|kv| kv.value().is_empty()));

    let from = c
        .get("/p/b", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(from.kvs()), ["/p/b", "/p/c", "/q"]);
    let between = c
        .get("/p/a", Some(GetOptions::new().with_range("/p/c")))
        .await
        .unwrap();
    assert_eq!(keys(between.kvs()), ["/p/a", "/p/b"]);
    let everything = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(everything.count(), 4);
    let newest = GetOptions::new().with_prefix().with_min_mod_revision(3);
    assert_eq!(
        keys(c.get("/p/", Some(newest)).await.unwrap().kvs()),
        ["/p/a", "/p/b"]
    );
    let oldest = GetOptions::new().with_prefix().with_max_create_revision(2);
    assert_eq!(
        keys(c.get("/p/", Some(oldest)).await.unwrap().kvs()),
        ["/p/a", "/p/c"]
    );

    // Only the current revision can be read.
    let now = c
        .get("/q", Some(GetOptions::new().with_revision(5)))
        .await
        .unwrap();
    assert_eq!(now.kvs().len(), 1);
    let old = c.get("/q", Some(GetOptions::new().with_revision(4))).await;
    assert_eq!(
        status(old.unwrap_err()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_owned()
        )
    );
    let future = c.get("/q", Some(GetOptions::new().with_revision(6))).await;
    assert_eq!(
        status(future.unwrap_err()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".to_owned()
        )
    );
    let empty = c.get("", None).await;
    assert_eq!(
        status(empty.unwrap_err()),
        (
            Code::InvalidArgument,
            "etcdserver: key is not provided".to_owned()
        )
    );

    // Compact: accepted up to the current revision.
    assert_eq!(
        c.compact(5, None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision(),
        5
    );
    assert_eq!(
        status(c.compact(6, None).await.unwrap_err()).0,
        Code::OutOfRange
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_return_previous_values_and_keep_values_or_leases() {
    let mut c = start().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();
    let first = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(first.prev_key().is_none());
    let second = c
        .put(
            "k",
            "v2",
            Some(PutOptions::new().with_prev_key().with_lease(lease)),
        )
        .await
        .unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"v1");
    assert_eq!(second.header().unwrap().revision(), 2);

    // ignore_value keeps v2 and changes the lease; ignore_lease keeps the lease.
    c.put("k", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease(), kv.version()), (&b"v2"[..], 0, 3));
    c.put("k", "v3", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    c.put("k", "v4", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"v4"[..], lease));

    let missing = c
        .put("none", "", Some(PutOptions::new().with_ignore_value()))
        .await;
    assert_eq!(
        status(missing.unwrap_err()),
        (
            Code::InvalidArgument,
            "etcdserver: key not found".to_owned()
        )
    );
    let both = c
        .put("k", "x", Some(PutOptions::new().with_ignore_value()))
        .await;
    assert_eq!(status(both.unwrap_err()).1, "etcdserver: value is provided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_range_deletes_every_key_at_one_revision() {
    let mut c = start().await;
    for k in ["/d/1", "/d/2", "/d/3", "/e"] {
        c.put(k, "v", None).await.unwrap();
    }
    let deleted = c
        .delete(
            "/d/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(keys(deleted.prev_kvs()), ["/d/1", "/d/2", "/d/3"]);
    assert_eq!(deleted.header().unwrap().revision(), 5);
    let nothing = c
        .delete("/d/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(
        (nothing.deleted(), nothing.header().unwrap().revision()),
        (0, 5)
    );
    let one = c.delete("/e", None).await.unwrap();
    assert_eq!((one.deleted(), one.header().unwrap().revision()), (1, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_compare_every_target_and_nest() {
    let mut c = start().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();
    c.put("/t/a", "1", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap(); // rev 1
    c.put("/t/b", "2", None).await.unwrap(); // rev 2

    let holds = |cmp: Compare| Txn::new().when([cmp]);
    let cases = [
        (Compare::value("/t/a", CompareOp::Equal, "1"), true),
        (Compare::value("/t/a", CompareOp::NotEqual, "1"), false),
        (Compare::value("/t/none", CompareOp::NotEqual, "1"), false),
        (Compare::version("/t/a", CompareOp::Equal, 1), true),
        (Compare::version("/t/none", CompareOp::Equal, 0), true),
        (
            Compare::create_revision("/t/b", CompareOp::Greater, 1),
            true,
        ),
        (Compare::mod_revision("/t/b", CompareOp::Less, 2), false),
        (Compare::lease("/t/a", CompareOp::Equal, lease), true),
        (Compare::lease("/t/b", CompareOp::Equal, 0), true),
        (Compare::version("/t/a", CompareOp::Greater, -1), true),
        (
            Compare::version("/t/", CompareOp::Equal, 1).with_prefix(),
            true,
        ),
        (
            Compare::mod_revision("/t/", CompareOp::Less, 2).with_prefix(),
            false,
        ),
    ];
    for (i, (cmp, expected)) in cases.into_iter().enumerate() {
        let got = c.txn(holds(cmp)).await.unwrap().succeeded();
        assert_eq!(got, expected, "case {i}");
    }

    // A lock: put if absent, read the holder either way; nested transaction on the other side.
    let lock = Txn::new()
        .when([Compare::create_revision("/lock", CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put("/lock", "me", Some(PutOptions::new().with_lease(lease))),
            TxnOp::get("/t/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else([TxnOp::txn(
            Txn::new()
                .when([Compare::value("/lock", CompareOp::Equal, "me")])
                .and_then([TxnOp::delete(
                    "/lock",
                    Some(DeleteOptions::new().with_prev_key()),
                )]),
        )]);
    let won = c.txn(lock.clone()).await.unwrap();
    assert!(won.succeeded());
    assert_eq!(won.header().unwrap().revision(), 3);
    let TxnOpResponse::Get(read) = &won.op_responses()[1] else {
        panic!()
    };
    assert_eq!(keys(read.kvs()), ["/t/a", "/t/b"]);
    let again = c.txn(lock).await.unwrap();
    assert!(!again.succeeded());
    let TxnOpResponse::Txn(inner) = &again.op_responses()[0] else {
        panic!()
    };
    assert!(inner.succeeded());
    let TxnOpResponse::Delete(d) = &inner.op_responses()[0] else {
        panic!()
    };
    assert_eq!((d.deleted(), d.prev_kvs()[0].value()), (1, &b"me"[..]));
    assert_eq!(again.header().unwrap().revision(), 4);

    let twice = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    assert_eq!(
        status(c.txn(twice).await.unwrap_err()),
        (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request".to_owned()
        )
    );
    let overlap = Txn::new().and_then([
        TxnOp::delete("/t/", Some(DeleteOptions::new().with_prefix())),
        TxnOp::put("/t/a", "1", None),
    ]);
    assert_eq!(
        status(c.txn(overlap).await.unwrap_err()).1,
        "etcdserver: duplicate key given in txn request"
    );
    let many = Txn::new().and_then(
        (0..129)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        status(c.txn(many).await.unwrap_err()).1,
        "etcdserver: too many operations in txn request"
    );
    let at_rev =
        Txn::new().and_then([TxnOp::get("/t/a", Some(GetOptions::new().with_revision(1)))]);
    assert_eq!(
        status(c.txn(at_rev).await.unwrap_err()).0,
        Code::Unimplemented
    );
}

/// The next watch response, within a few seconds.
async fn next(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a watch response in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_replay_from_a_revision_filter_and_cancel() {
    let mut c = start().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();
    c.put("/w/a", "1", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap(); // rev 1
    c.put("/w/b", "2", None).await.unwrap(); // rev 2
    c.put("/x", "3", None).await.unwrap(); // rev 3

    let opts = WatchOptions::new().with_prefix().with_start_revision(1);
    let mut stream = c.watch("/w/", Some(opts)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let id = created.watch_id();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = next(&mut stream).await;
        assert_eq!(r.watch_id(), id);
        seen.extend(r.events().iter().map(|e| e.kv().unwrap().clone()));
    }
    assert_eq!(keys(&seen), ["/w/a", "/w/b"]);
    assert_eq!(
        (seen[0].mod_revision(), seen[0].lease(), seen[0].version()),
        (1, lease, 1)
    );

    // A second watch on the same stream: one key, previous values, no puts.
    let opts = WatchOptions::new()
        .with_prev_key()
        .with_filters([WatchFilterType::NoPut]);
    stream.watch("/w/b", Some(opts)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let second = created.watch_id();
    assert_ne!(second, id);
    c.put("/w/b", "22", None).await.unwrap(); // rev 4: both see... only the first (NOPUT)
    c.lease_revoke(lease).await.unwrap(); // rev 5: /w/a deleted
    c.delete("/w/b", None).await.unwrap(); // rev 6
    let mut first_events = Vec::new();
    let mut second_events = Vec::new();
    while first_events.len() < 3 || second_events.is_empty() {
        let r = next(&mut stream).await;
        let events = if r.watch_id() == id {
            &mut first_events
        } else {
            &mut second_events
        };
        events.extend(r.events().iter().cloned());
    }
    use etcd_client::EventType;
    let kinds: Vec<_> = first_events
        .iter()
        .map(|e| (e.event_type(), e.kv().unwrap().mod_revision()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put, 4),
            (EventType::Delete, 5),
            (EventType::Delete, 6)
        ]
    );
    assert_eq!(second_events.len(), 1);
    let gone = &second_events[0];
    assert_eq!(gone.event_type(), EventType::Delete);
    assert_eq!(gone.kv().unwrap().key(), b"/w/b");
    assert_eq!(gone.prev_kv().unwrap().value(), b"22");

    stream.cancel(second).await.unwrap();
    let cancelled = next(&mut stream).await;
    assert!(cancelled.canceled());
    assert_eq!(cancelled.watch_id(), second);

    // A progress request: answered with the current revision, for no watch in particular.
    stream.request_progress().await.unwrap();
    let progress = next(&mut stream).await;
    assert_eq!(
        (progress.watch_id(), progress.header().unwrap().revision()),
        (-1, 6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_history_is_cancelled_with_the_compact_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let lessor = lessor::Lessor::open(&path).unwrap();
    for v in ["1", "2", "3"] {
        lessor.put("/k", v).unwrap();
    }
    lessor.close().unwrap();
    drop(lessor);
    // Reopened: the watch history starts at revision 3.
    let mut c = start_with(lessor::Lessor::open(&path).unwrap(), Limits::default()).await;
    let mut stream = c
        .watch("/k", Some(WatchOptions::new().with_start_revision(1)))
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    let r = next(&mut stream).await;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), 4);
    // From where history reaches, it works.
    stream
        .watch("/k", Some(WatchOptions::new().with_start_revision(4)))
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled());
    c.put("/k", "4", None).await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.events()[0].kv().unwrap().value(), b"4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_members_and_alarms_describe_one_member() {
    let mut c = start().await;
    c.put("k", "v", None).await.unwrap();
    let status = c.status().await.unwrap();
    assert_eq!(status.version(), "3.4.0");
    assert_eq!(status.raft_index(), 1);
    assert_eq!(status.leader(), status.header().unwrap().member_id());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert!(members.members()[0].client_urls()[0].starts_with("http://127.0.0.1:"));
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(alarms.alarms().is_empty());
    // A service we do not serve, and a method of one we do.
    assert_eq!(
        status_of(c.role_list().await.unwrap_err()),
        Code::Unimplemented
    );
    assert_eq!(
        status_of(c.defragment().await.unwrap_err()),
        Code::Unimplemented
    );
}

fn status_of(e: etcd_client::Error) -> Code {
    status(e).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_errors() {
    let limits = Limits::default()
        .max_request_bytes(1024)
        .max_watches_per_stream(2)
        .max_keepalive_streams(1);
    let mut c = start_with(lessor::Lessor::open_in_memory().unwrap(), limits).await;
    let big = c.put("k", vec![b'x'; 2048], None).await;
    assert_eq!(
        status(big.unwrap_err()),
        (
            Code::InvalidArgument,
            "etcdserver: request is too large".to_owned()
        )
    );
    // Far above: refused by the gRPC layer before decoding.
    let huge = c.put("k", vec![b'x'; 1 << 20], None).await;
    assert!(huge.is_err());

    let mut stream = c.watch("a", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    stream.watch("b", None).await.unwrap();
    assert!(!next(&mut stream).await.canceled());
    stream.watch("c", None).await.unwrap();
    let refused = next(&mut stream).await;
    assert!(refused.canceled());
    assert!(
        refused.cancel_reason().contains("too many watches"),
        "{}",
        refused.cancel_reason()
    );

    let lease = c.lease_grant(10, None).await.unwrap().id();
    let (_keeper, _responses) = c.lease_keep_alive(lease).await.unwrap();
    let second = c.lease_keep_alive(lease).await;
    assert_eq!(status_of(second.unwrap_err()), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_over_ranges_from_the_future_and_prev_kv_limits() {
    let mut c = start().await;
    c.put("/r/a", "1", None).await.unwrap(); // rev 1
    // From "/r/b" to the end of the keyspace, starting at revision 3 (in the future).
    let opts = WatchOptions::new().with_from_key().with_start_revision(3);
    let mut stream = c.watch("/r/b", Some(opts)).await.unwrap();
    assert!(next(&mut stream).await.created());
    c.put("/r/c", "2", None).await.unwrap(); // rev 2: before the start
    c.put("/r/a", "3", None).await.unwrap(); // rev 3: outside the range
    c.put("/z", "4", None).await.unwrap(); // rev 4
    let r = next(&mut stream).await;
    let seen: Vec<_> = r
        .events()
        .iter()
        .map(|e| e.kv().unwrap().mod_revision())
        .collect();
    assert_eq!(seen, [4]);

    // prev_kv from the past: the engine has no older values, so the watch is refused.
    let opts = WatchOptions::new().with_prev_key().with_start_revision(2);
    stream.watch("/r/", Some(opts.with_prefix())).await.unwrap();
    let refused = next(&mut stream).await;
    assert!(refused.created() && refused.canceled());
    assert!(
        refused.cancel_reason().contains("prev_kv"),
        "{}",
        refused.cancel_reason()
    );

    // prev_kv from now on, over a prefix: a put's previous value, and none for a new key.
    let opts = WatchOptions::new().with_prev_key().with_prefix();
    stream.watch("/r/", Some(opts)).await.unwrap();
    let id = next(&mut stream).await.watch_id();
    c.put("/r/a", "5", None).await.unwrap();
    c.put("/r/new", "6", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let r = next(&mut stream).await;
        if r.watch_id() == id {
            events.extend(r.events().iter().cloned());
        }
    }
    assert_eq!(events[0].prev_kv().unwrap().value(), b"3");
    assert!(events[1].prev_kv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watches_that_ask_get_progress_notifications() {
    let config = Config::new("127.0.0.1:0".parse().unwrap())
        .etcd_start_revision(false)
        .progress_notify_interval(Duration::from_millis(100));
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let bound = Server::new(lessor, config).unwrap().bind().await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve());
    let mut c = Client::connect([addr.to_string()], None).await.unwrap();
    let mut stream = c
        .watch("/n", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    let id = next(&mut stream).await.watch_id();
    stream.watch("/quiet", None).await.unwrap(); // does not ask: never notified
    let quiet = next(&mut stream).await.watch_id();
    c.put("/n", "1", None).await.unwrap();
    let event = next(&mut stream).await;
    assert_eq!((event.watch_id(), event.events().len()), (id, 1));
    for _ in 0..2 {
        let progress = next(&mut stream).await;
        assert_eq!(progress.watch_id(), id);
        assert_ne!(progress.watch_id(), quiet);
        assert!(progress.events().is_empty());
        assert_eq!(progress.header().unwrap().revision(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_returns() {
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let config = Config::new("127.0.0.1:0".parse().unwrap());
    let bound = Server::new(lessor, config).unwrap().bind().await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let mut c = Client::connect([addr.to_string()], None).await.unwrap();
    let mut watch = c.watch("k", None).await.unwrap();
    assert!(next(&mut watch).await.created());
    let lease = c.lease_grant(10, None).await.unwrap().id();
    let (_keeper, mut keepalive) = c.lease_keep_alive(lease).await.unwrap();
    stop.send(()).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), server).await;
    done.expect("the server stops although streams were open")
        .unwrap()
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap();
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let ended = tokio::time::timeout(Duration::from_secs(5), keepalive.message())
        .await
        .unwrap();
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}

#[test]
fn other_addresses_need_tls_or_insecure() {
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let open = Config::new("0.0.0.0:0".parse().unwrap());
    let err = Server::new(lessor.clone(), open.clone()).unwrap_err();
    assert!(matches!(err, ServeError::Insecure(_)), "{err}");
    assert!(Server::new(lessor.clone(), open.insecure(true)).is_ok());
    assert!(Server::new(lessor, Config::new("[::1]:0".parse().unwrap())).is_ok());
}
