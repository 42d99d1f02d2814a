//! `AsyncLessor`: writes wait for the flusher thread's fsync without blocking the task, on
//! tokio (current-thread and multi-thread) and `futures::executor`; mixed with blocking
//! callers; cancellation leaves a write done or not done; close. Databases are real files
//! under `Durability::Immediate` unless a test says otherwise. No test sleeps for an expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::StreamExt;
use futures::executor::block_on;
use lessor::{
    AsyncLessor, Compare, DeleteCause, Durability, Error, Lessor, ManualClock, Op, Txn, WatchEvent,
};

fn open(path: &Path) -> Lessor {
    Lessor::builder().ticker(false).open(path).unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn concurrent_tasks_on_a_current_thread_runtime_all_commit_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.redb");
    let lessor = AsyncLessor::from(open(&path));
    current_thread().block_on(async {
        let lease = lessor.grant(Duration::from_secs(60)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let l = lessor.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..10 {
                    l.put_with_lease(format!("/t/{i}/{j}"), "v", lease.id)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(lessor.range("/t/").await.unwrap().len(), 640);
        lessor.close().await.unwrap();
    });
    // Every acknowledged write is in the file.
    let reopened = open(&path);
    assert_eq!(reopened.range("/t/").unwrap().len(), 640);
    reopened.verify().unwrap();
}

#[test]
fn async_and_blocking_writers_share_a_database_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let blocking = open(&path);
    let lessor = AsyncLessor::from(blocking.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let l = blocking.clone();
            std::thread::spawn(move || {
                for j in 0..50 {
                    l.put(format!("/sync/{i}/{j}"), "v").unwrap();
                }
            })
        })
        .collect();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let l = lessor.clone();
                tokio::spawn(async move {
                    for j in 0..50 {
                        let lease = l.grant(Duration::from_secs(30)).await.unwrap();
                        l.put_with_lease(format!("/async/{i}/{j}"), "v", lease.id)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    for t in threads {
        t.join().unwrap();
    }
    block_on(lessor.close()).unwrap();
    let reopened = open(&path);
    assert_eq!(reopened.range("/sync/").unwrap().len(), 200);
    assert_eq!(reopened.range("/async/").unwrap().len(), 400);
    assert_eq!(reopened.leases().unwrap().len(), 400);
}

#[test]
fn a_write_dropped_after_its_first_poll_is_done_and_one_never_polled_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let lessor = AsyncLessor::from(open(&path));

    // Never polled: nothing happens.
    drop(lessor.put("/never", "v"));

    // Polled once, then dropped while waiting for its fsync: applied, and made durable by the
    // flush it asked for.
    {
        let mut fut = pin!(lessor.put("/once", "v"));
        // Under Immediate, a write is not acknowledged at its first poll: the fsync happens on
        // the flusher thread, not on the polling one.
        let first = poll_once(fut.as_mut());
        assert!(first.is_pending() || matches!(first, Poll::Ready(Ok(_))));
    }
    block_on(async {
        lessor.sync().await.unwrap();
        assert!(lessor.get("/never").await.unwrap().is_none());
        assert_eq!(lessor.get("/once").await.unwrap().unwrap().value, b"v");
        lessor.close().await.unwrap();
    });
    let reopened = open(&path);
    assert!(reopened.get("/never").unwrap().is_none());
    assert!(reopened.get("/once").unwrap().is_some());
}

#[test]
fn a_first_poll_under_immediate_leaves_the_fsync_to_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = AsyncLessor::from(open(&dir.path().join("d.redb")));
    // Nobody else writes: the only way this put becomes durable is a flush, which a task never
    // runs itself, so its first poll is pending, and it completes once woken.
    let mut fut = pin!(lessor.put("/k", "v"));
    assert!(poll_once(fut.as_mut()).is_pending());
    let revision = block_on(fut).unwrap();
    assert_eq!(revision.get(), 1);
    block_on(lessor.close()).unwrap();
}

#[test]
fn batched_writes_are_ready_at_once_and_sync_makes_them_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.redb");
    let lessor = AsyncLessor::from(
        Lessor::builder()
            .ticker(false)
            .durability(Durability::Batched {
                max_delay: Duration::from_secs(3600),
            })
            .open(&path)
            .unwrap(),
    );
    let mut fut = pin!(lessor.put("/batched", "v"));
    assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(_))));
    block_on(async {
        lessor.sync().await.unwrap();
    });
    // The file has it before close: read it through a backup copy of the running database.
    let copy = dir.path().join("copy.redb");
    lessor.lessor().backup(&copy).unwrap();
    assert!(open(&copy).get("/batched").unwrap().is_some());
    block_on(lessor.close()).unwrap();
}

#[test]
fn every_operation_works_and_reports_errors_as_the_blocking_api() {
    let clock = ManualClock::new();
    let lessor = AsyncLessor::from(
        Lessor::builder()
            .clock(clock.clone())
            .ticker(false)
            .open_in_memory()
            .unwrap(),
    );
    block_on(async {
        let lease = lessor.grant(Duration::from_secs(10)).await.unwrap();
        let chosen = lessor
            .grant_with_id(lessor::LeaseId::new(77).unwrap(), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(matches!(
            lessor
                .grant_with_id(chosen.id, Duration::from_secs(10))
                .await,
            Err(Error::LeaseExists(_))
        ));
        assert_eq!(lessor.leases().await.unwrap(), vec![lease.id, chosen.id]);
        lessor.put("/a", "1").await.unwrap();
        lessor.attach(lease.id, ["/a"]).await.unwrap();
        assert_eq!(
            lessor.time_to_live_with_keys(lease.id).await.unwrap().keys,
            vec![b"/a".to_vec()]
        );
        lessor.detach(lease.id, ["/a"]).await.unwrap();
        assert!(matches!(
            lessor.attach(lease.id, ["/missing"]).await,
            Err(Error::KeyNotFound(_))
        ));
        let txn = Txn::new()
            .when(Compare::absent("/lock"))
            .then(Op::put_with_lease("/lock", "me", lease.id));
        let result = lessor.txn(txn).await.unwrap();
        assert!(result.succeeded);
        assert_eq!(lessor.revision().await.unwrap(), result.revision);
        let options = lessor::RangeOptions::new().limit(1).descending(true);
        let page = lessor.range_page("/", None, options).await.unwrap();
        assert_eq!(page.kvs[0].key, b"/lock");
        assert_eq!(
            (page.count, page.more, page.revision),
            (2, true, result.revision)
        );
        assert!(lessor.delete("/a").await.unwrap());
        assert!(!lessor.delete("/a").await.unwrap());
        assert_eq!(
            lessor.time_to_live(lease.id).await.unwrap().ttl,
            Duration::from_secs(10)
        );
        lessor.renew(lease.id).unwrap();
        clock.advance(Duration::from_secs(11));
        assert!(matches!(
            lessor.put_with_lease("/late", "v", lease.id).await,
            Err(Error::LeaseNotFound(_))
        ));
        assert!(matches!(
            lessor.put("", "v").await,
            Err(Error::InvalidKey(_))
        ));
        lessor.close().await.unwrap();
        assert!(matches!(lessor.put("/a", "1").await, Err(Error::Closed)));
        assert!(matches!(lessor.leases().await, Err(Error::Closed)));
        assert!(matches!(lessor.sync().await, Err(Error::Closed)));
        // Closing again does nothing.
        lessor.close().await.unwrap();
    });
}

#[test]
fn a_large_revocation_deletes_every_key_in_chunks_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = AsyncLessor::from(
        Lessor::builder()
            .ticker(false)
            .revoke_chunk_size(3)
            .open(dir.path().join("f.redb"))
            .unwrap(),
    );
    current_thread().block_on(async {
        let lease = lessor.grant(Duration::from_secs(60)).await.unwrap();
        for i in 0..10 {
            lessor
                .put_with_lease(format!("/big/{i:02}"), "v", lease.id)
                .await
                .unwrap();
        }
        let mut watch = lessor.watch("/big/").unwrap();
        lessor.revoke(lease.id).await.unwrap();
        assert!(lessor.range("/big/").await.unwrap().is_empty());
        let mut deleted = 0;
        while deleted < 10 {
            match watch.next().await.unwrap() {
                WatchEvent::Delete { cause, .. } => {
                    assert_eq!(cause, DeleteCause::LeaseRevoked(lease.id));
                    deleted += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The id is free once every key is gone.
        lessor
            .grant_with_id(lease.id, Duration::from_secs(1))
            .await
            .unwrap();
        lessor.close().await.unwrap();
    });
}

#[test]
fn the_async_trait_is_dyn_compatible_and_send() {
    fn assert_send<T: Send>(_: &T) {}
    let store: Arc<dyn lessor::AsyncLeaseStore> =
        Arc::new(AsyncLessor::from(Lessor::open_in_memory().unwrap()));
    let fut = store.put(b"/k", b"v");
    assert_send(&fut);
    block_on(fut).unwrap();
    let l = AsyncLessor::from(Lessor::open_in_memory().unwrap());
    assert_send(&l.put("/k", "v"));
    assert_send(&l.grant(Duration::from_secs(1)));
    assert_send(&l.revoke(lessor::LeaseId::new(1).unwrap()));
    assert_send(&l.close());
    block_on(store.close()).unwrap();
}
