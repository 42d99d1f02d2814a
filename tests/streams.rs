//! Streams: watches, lease events and keep-alives driven as `futures_core::Stream`s (and
//! `KeepAlive::lost()` as a future) under `futures::executor::block_on` and a current-thread
//! tokio runtime; `Watch::ready()` under `select!`; `watch_key`. Time moves only by a manual
//! clock: expiry comes from `revoke_expired`, never from sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use futures::executor::block_on;
use lessor::crossbeam_channel::{after, select};
use lessor::{
    DeleteCause, EndReason, LeaseEvent, Lessor, ManualClock, RevokeCause, WatchEnd, WatchEvent,
};

/// How long a test waits for something that should happen at once; never reached when all is
/// well.
const PATIENCE: Duration = Duration::from_secs(20);

/// An in-memory lessor on a manual clock, without a ticker.
fn lessor() -> (Lessor, ManualClock) {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    (l, clock)
}

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn watch_events_arrive_and_the_stream_ends_on_close_block_on() {
    let (l, _) = lessor();
    let mut watch = l.watch("/s/").unwrap();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                l.put(format!("/s/{i:03}"), "v").unwrap();
            }
            l.close().unwrap();
        })
    };
    let keys: Vec<Vec<u8>> = block_on(watch.by_ref().map(|e| e.key().to_vec()).collect());
    writer.join().unwrap();
    let want: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("/s/{i:03}").into_bytes())
        .collect();
    assert_eq!(keys, want);
    assert_eq!(watch.ended(), Some(WatchEnd::Closed));
}

#[test]
fn a_watch_that_falls_behind_catches_up_as_a_stream() {
    let (l, _) = lessor();
    let mut watch = l.watch("/s/").unwrap();
    // More than a watch's channel holds: the rest comes from the history.
    for i in 0..1_000 {
        l.put(format!("/s/{i:04}"), "v").unwrap();
    }
    l.close().unwrap();
    let n = block_on(watch.by_ref().count());
    assert_eq!(n, 1_000);
}

#[test]
fn watch_events_arrive_on_a_current_thread_tokio_runtime() {
    let (l, _) = lessor();
    let mut watch = l.watch("/s/").unwrap();
    tokio().block_on(async {
        let writer = {
            let l = l.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    tokio::time::sleep(Duration::from_millis(1)).await; // yield to the reader
                    l.put(format!("/s/{i}"), "v").unwrap();
                }
                l.close().unwrap();
            })
        };
        let mut n = 0;
        while let Some(event) = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap() {
            assert_eq!(event.key(), format!("/s/{n}").as_bytes());
            n += 1;
        }
        assert_eq!(n, 10);
        writer.await.unwrap();
    });
}

#[test]
fn a_pending_watch_wakes_on_close() {
    let (l, _) = lessor();
    let mut watch = l.watch("/s/").unwrap();
    tokio().block_on(async {
        let reader = tokio::spawn(async move { watch.next().await });
        tokio::task::yield_now().await; // the reader is pending now
        l.close().unwrap();
        let got = tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, None);
    });
}

/// That a dropped watch's slot is gone is checked inside (`watch.rs`'s unit tests); here, that
/// dropping watches, pending or not, disturbs nothing else.
#[test]
fn dropping_watches_pending_or_not_leaves_the_others_working() {
    let (l, _) = lessor();
    let watch = l.watch("/s/").unwrap();
    let kept = l.watch("/s/").unwrap();
    drop(watch);
    // A dropped watch holds nothing: far more writes than a channel holds go through, and the
    // history bounds what is kept for the watch that is still there.
    for i in 0..1_000 {
        l.put(format!("/s/{i}"), "v").unwrap();
    }
    assert_eq!(kept.iter().take(1_000).count(), 1_000);
    // A stream dropped while pending is cancelled too.
    tokio().block_on(async {
        let mut pending = l.watch("/s/").unwrap();
        let next = tokio::time::timeout(Duration::from_millis(10), pending.next()).await;
        assert!(next.is_err(), "nothing yet");
        drop(pending);
        l.put("/s/after", "v").unwrap();
    });
}

#[test]
fn a_compacted_watch_ends_its_stream() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock)
        .ticker(false)
        .watch_history(16, 1 << 20)
        .open_in_memory()
        .unwrap();
    let mut watch = l.watch("/s/").unwrap();
    for i in 0..2_000 {
        l.put(format!("/s/{i}"), "v").unwrap();
    }
    let n = block_on(watch.by_ref().count());
    assert!(n < 2_000, "{n}");
    assert_eq!(watch.ended(), Some(WatchEnd::Compacted));
}

#[test]
fn watch_ready_works_with_select() {
    let (l, _) = lessor();
    let watch = l.watch("/s/").unwrap();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || {
            for i in 0..500 {
                l.put(format!("/s/{i:03}"), "v").unwrap();
            }
            l.close().unwrap();
        })
    };
    let mut n = 0;
    loop {
        select! {
            recv(watch.ready()) -> token => {
                while let Ok(event) = watch.try_recv() {
                    assert_eq!(event.key(), format!("/s/{n:03}").as_bytes());
                    n += 1;
                }
                if token.is_err() && watch.try_recv().is_err() {
                    break; // disconnected: the watch has ended
                }
            }
            recv(after(PATIENCE)) -> _ => panic!("stalled after {n} events"),
        }
    }
    writer.join().unwrap();
    assert_eq!(n, 500);
    assert_eq!(watch.ended(), Some(WatchEnd::Closed));
}

#[test]
fn watch_key_does_not_see_longer_keys() {
    let (l, _) = lessor();
    let mut job1 = l.watch_key("/cron/lock/job1").unwrap();
    l.put("/cron/lock/job10", "a").unwrap();
    l.put("/cron/lock/job1", "b").unwrap();
    l.put("/cron/lock/job1/x", "c").unwrap();
    l.delete("/cron/lock/job1").unwrap();
    l.close().unwrap();
    let keys: Vec<Vec<u8>> = block_on(job1.by_ref().map(|e| e.key().to_vec()).collect());
    assert_eq!(
        keys,
        [b"/cron/lock/job1".to_vec(), b"/cron/lock/job1".to_vec()]
    );
}

#[test]
fn watch_key_from_the_lease_store_trait() {
    let (l, _) = lessor();
    let store: &dyn lessor::LeaseStore = &l;
    let watch = store.watch_key(b"/k").unwrap();
    store.put(b"/k2", b"x").unwrap();
    store.put(b"/k", b"y").unwrap();
    assert_eq!(watch.recv_timeout(PATIENCE).unwrap().key(), b"/k");
    assert!(watch.try_recv().is_err());
}

#[test]
fn lease_events_stream_and_blocking_reads_agree() {
    let (l, clock) = lessor();
    let mut events = l.subscribe().unwrap();
    let a = l.grant(Duration::from_secs(5)).unwrap();
    l.put_with_lease("/a", "1", a.id).unwrap();
    l.revoke(a.id).unwrap();
    let b = l.grant(Duration::from_secs(5)).unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(l.revoke_expired().unwrap(), vec![b.id]);
    assert!(matches!(events.try_recv(), Ok(LeaseEvent::Granted { id, .. }) if id == a.id));
    l.close().unwrap();
    let rest: Vec<LeaseEvent> = block_on(events.by_ref().collect());
    let summary: Vec<_> = rest
        .iter()
        .map(|e| match e {
            LeaseEvent::Granted { id, .. } => ("granted", *id, None),
            LeaseEvent::Revoked { id, cause, .. } => ("revoked", *id, Some(*cause)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("revoked", a.id, Some(RevokeCause::Revoked)),
            ("granted", b.id, None),
            ("revoked", b.id, Some(RevokeCause::Expired)),
        ]
    );
    assert!(events.recv().is_err(), "ended");
}

#[test]
fn lease_events_wake_a_pending_task_on_tokio() {
    let (l, _) = lessor();
    let mut events = l.subscribe().unwrap();
    tokio().block_on(async {
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(event) = events.next().await {
                got.push(event);
            }
            got
        });
        tokio::task::yield_now().await;
        let lease = l.grant(Duration::from_secs(5)).unwrap();
        tokio::task::yield_now().await;
        l.revoke(lease.id).unwrap();
        l.close().unwrap();
        let got = tokio::time::timeout(PATIENCE, reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
    });
}

#[test]
fn lost_resolves_with_revoked() {
    let (l, _) = lessor();
    let lease = l.grant(Duration::from_secs(10)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    let lost = ka.lost();
    tokio().block_on(async {
        let waiter = tokio::spawn(lost);
        tokio::task::yield_now().await; // pending now
        l.revoke(lease.id).unwrap();
        let reason = tokio::time::timeout(PATIENCE, waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reason, EndReason::Revoked);
    });
    assert_eq!(block_on(ka.lost()), EndReason::Revoked, "ready once ended");
}

#[test]
fn lost_resolves_with_expired() {
    let (l, clock) = lessor();
    let lease = l.grant(Duration::from_secs(10)).unwrap();
    let key = "/cron/lock/job1";
    l.put_with_lease(key, "holder", lease.id).unwrap();
    // An interval longer than the TTL is refused; one just under it leaves the lease to expire
    // when the clock jumps past its deadline.
    let ka = l
        .keep_alive_with(
            lease.id,
            lessor::KeepAliveOptions::new().interval(Duration::from_secs(9)),
        )
        .unwrap();
    let lost = ka.lost();
    let mut watch = l.watch_key(key).unwrap();
    let waiter = std::thread::spawn(move || block_on(lost));
    clock.advance(Duration::from_secs(11)); // past the deadline, before the next renewal
    assert_eq!(l.revoke_expired().unwrap(), vec![lease.id]);
    assert_eq!(waiter.join().unwrap(), EndReason::Expired);
    let event = block_on(watch.next()).unwrap();
    assert!(
        matches!(event, WatchEvent::Delete { cause: DeleteCause::LeaseExpired(id), .. } if id == lease.id),
        "{event:?}"
    );
}

#[test]
fn lost_resolves_with_cancelled_and_closed() {
    let (l, _) = lessor();
    let a = l.grant(Duration::from_secs(10)).unwrap();
    let b = l.grant(Duration::from_secs(10)).unwrap();
    let ka = l.keep_alive(a.id).unwrap();
    let lost_a = ka.lost();
    drop(ka);
    assert_eq!(block_on(lost_a), EndReason::Cancelled);
    let kb = l.keep_alive(b.id).unwrap();
    let lost_b = kb.lost();
    let waiter = std::thread::spawn(move || block_on(lost_b));
    l.close().unwrap();
    assert_eq!(waiter.join().unwrap(), EndReason::Closed);
}

#[test]
fn keep_alive_responses_stream_on_tokio() {
    let (l, clock) = lessor();
    let lease = l.grant(Duration::from_secs(3)).unwrap();
    let mut ka = l.keep_alive(lease.id).unwrap();
    tokio().block_on(async {
        let first = ka.next().await.unwrap(); // made by keep_alive itself
        assert_eq!(first.ttl, Duration::from_secs(3));
        clock.advance(Duration::from_secs(1)); // the next renewal is due
        let second = tokio::time::timeout(PATIENCE, ka.next()).await.unwrap();
        assert_eq!(second.map(|r| r.id), Some(lease.id));
        l.revoke(lease.id).unwrap();
        assert_eq!(
            tokio::time::timeout(PATIENCE, ka.next()).await.unwrap(),
            None
        );
    });
    assert_eq!(ka.ended(), Some(EndReason::Revoked));
}
