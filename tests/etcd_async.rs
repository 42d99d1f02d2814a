//! The etcd backend from async code: `EtcdLessor::connect_async` and the `AsyncLeaseStore`
//! methods inside a current-thread tokio runtime (where the blocking API refuses, since it would
//! stall the executor), on a real etcd started by the test on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "conformance/etcd_server.rs"]
mod etcd_server;

use std::time::Duration;

use etcd_server::EtcdServer;
use futures::StreamExt;
use lessor::{AsyncLeaseStore, EndReason, Error, EtcdLessor, EtcdOptions, WatchEvent};

#[test]
fn the_async_api_works_inside_a_current_thread_runtime() {
    let server = EtcdServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // etcd may take a moment to answer after it starts.
        let mut tries = 0;
        let store = loop {
            match EtcdLessor::connect_async([server.endpoint.as_str()], EtcdOptions::new()).await {
                Ok(store) => break store,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("etcd did not answer: {e}"),
            }
        };
        // The blocking API refuses here rather than stall the executor (or panic).
        assert!(matches!(
            EtcdLessor::grant(&store, Duration::from_secs(5)),
            Err(Error::InvalidConfig(_) | Error::Unavailable(_) | Error::Backend(_))
        ));

        let store: &dyn AsyncLeaseStore = &store;
        store.ready().await.unwrap();
        let lease = store.grant(Duration::from_secs(5)).await.unwrap();
        let mut watch = store.watch_key(b"/async/lock").await.unwrap();
        let put = store
            .put_with_lease(b"/async/lock", b"me", lease.id)
            .await
            .unwrap();
        match watch.next().await.unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, put),
            other => panic!("{other:?}"),
        }
        let mut keep = store.keep_alive(lease.id).await.unwrap();
        assert!(keep.next().await.is_some());
        assert!(store.renew(lease.id).await.unwrap() >= Duration::from_secs(1));
        let info = store.time_to_live_with_keys(lease.id).await.unwrap();
        assert_eq!(info.keys, vec![b"/async/lock".to_vec()]);
        assert!(store.leases().await.unwrap().contains(&lease.id));
        let lost = keep.lost();
        store.revoke(lease.id).await.unwrap();
        assert_eq!(lost.await, EndReason::Revoked);
        assert!(matches!(
            watch.next().await.unwrap(),
            WatchEvent::Delete { .. }
        ));
        assert!(store.get(b"/async/lock").await.unwrap().is_none());
        assert!(store.revision().await.unwrap() > put);
        store.close().await.unwrap();
        assert!(matches!(
            store.get(b"/async/lock").await,
            Err(Error::Closed)
        ));
    });
}
