//! `EtcdLessor` keep-alives under network faults, on a real etcd server (started here on
//! 127.0.0.1, as in the conformance suite) reached through a TCP proxy that the test cuts.
//!
//! What is asserted: the keep-alive's local deadline ([`KeepAlive::deadline`]) ends it as
//! `Expired` within 100 ms of that deadline (and so of the last renewal + TTL) when the
//! network goes silent, whatever the connection does; a renewal lost to a short cut is retried;
//! `Revoked` only when etcd said so. Leases live by etcd's clock, so these tests run in real
//! time (TTL 2 s, etcd's minimum); the margins are explicit constants.
//!
//! Run with `cargo test --features etcd --test etcd_keepalive`; needs the `etcd` binary.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "conformance/etcd_server.rs"]
mod etcd_server;
#[path = "support/tcp_proxy.rs"]
mod tcp_proxy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use lessor::{EndReason, EtcdLessor, EtcdOptions, KeepAlive, KeepAliveResponse};
use tcp_proxy::Proxy;

/// The lease TTL: etcd's minimum with its default election timeout.
const TTL: Duration = Duration::from_secs(2);

/// How late after its deadline a keep-alive may end (issue 16's target).
const LATENESS: Duration = Duration::from_millis(100);

/// Waits until the server has elected itself leader and answers.
fn connect(endpoint: &str) -> EtcdLessor {
    let start = Instant::now();
    loop {
        match EtcdLessor::connect([endpoint], EtcdOptions::new()) {
            Ok(store) => return store,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("etcd did not answer within 30 s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Records when each renewal reached the test, on a thread of its own (until the channel
/// disconnects): the client-side "last renewal" of issue 16's bound.
fn record_renewals(ka: &KeepAlive) -> Arc<Mutex<Vec<(Instant, KeepAliveResponse)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let rx = ka.responses().clone();
    let out = Arc::clone(&log);
    std::thread::spawn(move || {
        for response in rx {
            out.lock().unwrap().push((Instant::now(), response));
        }
    });
    log
}

#[test]
fn a_cut_ends_the_keep_alive_as_expired_at_its_local_deadline() {
    let server = EtcdServer::start();
    let proxy = Proxy::start(&server.endpoint);
    let store = connect(&proxy.endpoint);
    let lease = store.grant(TTL).unwrap();
    let ka = store.keep_alive(lease.id).unwrap();
    let renewals = record_renewals(&ka);
    let lost = ka.lost();

    // A few renewals (every TTL / 3) go through; then the network goes silent.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(ka.ended(), None);
    proxy.cut();
    let cut_at = Instant::now();
    // A renewal in flight at the cut could still land; none can after this.
    std::thread::sleep(Duration::from_millis(50));
    let deadline = ka.deadline().expect("running: a deadline");
    assert!(
        deadline > cut_at && deadline <= cut_at + TTL,
        "{deadline:?}"
    );

    let reason = futures::executor::block_on(lost);
    let ended_at = Instant::now();
    let (last_seen, last) = renewals.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.ttl, TTL);
    assert_eq!(reason, EndReason::Expired);
    assert_eq!(ka.ended(), Some(EndReason::Expired));
    assert_eq!(ka.deadline(), None);
    let past_deadline = ended_at.saturating_duration_since(deadline);
    let past_renewal = ended_at.saturating_duration_since(last_seen + TTL);
    println!(
        "cut {:?} after the last renewal seen; ended {:?} after the local deadline, \
         {:?} after last renewal seen + TTL ({:?} before it)",
        cut_at.saturating_duration_since(last_seen),
        past_deadline,
        past_renewal,
        (last_seen + TTL).saturating_duration_since(ended_at),
    );
    assert!(ended_at >= deadline, "ended before its deadline");
    assert!(past_deadline <= LATENESS, "ended {past_deadline:?} late");
    assert!(past_renewal <= LATENESS, "ended {past_renewal:?} late");
    // The responses channel has disconnected, as for every other end.
    assert_eq!(
        ka.responses().recv_timeout(Duration::from_secs(1)),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    );
    drop(ka);

    // The lease was never revoked: whatever etcd did with it, the end was not `Revoked`, and
    // healing the network does not change it.
    proxy.heal();
    std::thread::sleep(Duration::from_millis(100));
    drop(store);
    drop(server);
}

#[test]
fn a_short_cut_is_survived_by_retrying_before_the_deadline() {
    let server = EtcdServer::start();
    let proxy = Proxy::start(&server.endpoint);
    let store = connect(&proxy.endpoint);
    let lease = store.grant(TTL).unwrap();
    let ka = store.keep_alive(lease.id).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Shorter than the TTL: the renewal due in the cut times out (TTL / 3) and is retried on a
    // new connection once the proxy forwards again, before the local deadline.
    proxy.cut();
    std::thread::sleep(Duration::from_millis(700));
    proxy.heal();
    std::thread::sleep(TTL + Duration::from_millis(500));
    assert_eq!(ka.ended(), None, "the keep-alive should have reconnected");
    let deadline = ka.deadline().unwrap();
    assert!(deadline > Instant::now(), "renewed since the cut");
    ka.cancel();
    assert_eq!(ka.ended(), Some(EndReason::Cancelled));
    assert_eq!(ka.deadline(), Some(deadline), "the lease lives until then");
}

#[test]
fn a_lease_revoked_by_another_client_ends_as_revoked() {
    let server = EtcdServer::start();
    let holder = connect(&server.endpoint);
    let other = connect(&server.endpoint);
    let lease = holder.grant(TTL).unwrap();
    let ka = holder.keep_alive(lease.id).unwrap();
    let before = Instant::now();
    let deadline = ka.deadline().unwrap();
    assert!(
        deadline > before && deadline <= before + TTL,
        "{deadline:?}"
    );
    let lost = ka.lost();
    other.revoke(lease.id).unwrap();
    let revoked_at = Instant::now();
    // The next renewal (within TTL / 3) hears that the lease is gone, before the deadline.
    assert_eq!(futures::executor::block_on(lost), EndReason::Revoked);
    let took = revoked_at.elapsed();
    assert!(took < TTL / 3 + Duration::from_millis(500), "{took:?}");
    assert_eq!(ka.deadline(), None);
}
