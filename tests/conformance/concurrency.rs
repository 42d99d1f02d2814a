//! Sessions, mutexes and elections (`lessor::concurrency`) on every backend: the semantics that
//! issue 15 pins down. Time passes through the harness (a manual clock, or real time on etcd).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lessor::concurrency::{Election, Mutex, Session};
use lessor::{CmpOp, Compare, EndReason, Error, LeaseStore, Op, OpResponse, Txn};

use super::{ACT, Harness, TTL, eventually};

/// A session TTL long enough not to expire while the harness lets a shorter one expire.
const LONG: Duration = Duration::from_secs(30);

/// How long after a holder's TTL the next waiter may take to acquire (etcd checks expiry
/// every 500 ms; the embedded ticker wakes on the clock's jump).
const BOUND: Duration = Duration::from_millis(1500);

fn keys<H: Harness>(h: &H, prefix: &[u8]) -> usize {
    let mut p = prefix.to_vec();
    p.push(b'/');
    h.store().range(&p).unwrap().len()
}

/// 8 threads × 200 rounds of lock, fenced increment, unlock: never two holders, and every
/// increment guarded by the holder's key lands.
pub fn mutex_excludes_many_threads<H: Harness + Sync>(h: &H) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 200;
    let s = h.store();
    let prefix = h.key("lock");
    let counter = h.key("counter");
    s.put(&counter, b"0").unwrap();
    let holders = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let session = Session::new(s, LONG).unwrap();
                let mut lock = Mutex::new(&session, &prefix).unwrap();
                for _ in 0..ROUNDS {
                    lock.lock().unwrap();
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    let kv = s.get(&counter).unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    let bump = Txn::new()
                        .when(lock.is_owner().unwrap())
                        .when(Compare::mod_revision(
                            &counter,
                            CmpOp::Equal,
                            kv.mod_revision,
                        ))
                        .then(Op::put(&counter, (n + 1).to_string()));
                    assert!(s.txn(bump).unwrap().succeeded, "fenced increment");
                    holders.fetch_sub(1, Ordering::SeqCst);
                    lock.unlock().unwrap();
                }
                session.close().unwrap();
            });
        }
    });
    let total = s.get(&counter).unwrap().unwrap().value;
    assert_eq!(total, (THREADS * ROUNDS).to_string().into_bytes());
    assert_eq!(keys(h, &prefix), 0);
}

/// Waiters acquire in the order they queued.
pub fn mutex_waiters_acquire_in_queue_order<H: Harness + Sync>(h: &H) {
    let s = h.store();
    let prefix = h.key("fifo");
    let first = Session::new(s, LONG).unwrap();
    let mut holder = Mutex::new(&first, &prefix).unwrap();
    holder.lock().unwrap();
    let order = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (order, prefix) = (&order, &prefix);
            scope.spawn(move || {
                let session = Session::new(s, LONG).unwrap();
                let mut lock = Mutex::new(&session, prefix).unwrap();
                lock.lock().unwrap();
                order.lock().push(i);
                lock.unlock().unwrap();
                session.close().unwrap();
            });
            // Queue them one after the other.
            assert!(eventually(|| keys(h, prefix) == i + 2));
        }
        holder.unlock().unwrap();
    });
    assert_eq!(*order.lock(), [0, 1, 2, 3]);
    first.close().unwrap();
}

/// `try_lock` on a held lock fails at once and leaves no key; on a free one it succeeds.
pub fn mutex_try_lock_fails_at_once_leaving_no_key<H: Harness>(h: &H) {
    let s = h.store();
    let prefix = h.key("try");
    let (a, b) = (
        Session::new(s, LONG).unwrap(),
        Session::new(s, LONG).unwrap(),
    );
    let mut la = Mutex::new(&a, &prefix).unwrap();
    let mut lb = Mutex::new(&b, &prefix).unwrap();
    la.try_lock().unwrap();
    let started = Instant::now();
    assert!(matches!(lb.try_lock(), Err(Error::Locked)));
    assert!(started.elapsed() < ACT);
    assert_eq!(keys(h, &prefix), 1);
    assert_eq!(lb.revision(), None);
    la.unlock().unwrap();
    lb.try_lock().unwrap();
    assert!(lb.revision().is_some());
    // Bad input is an error, not a panic.
    assert!(matches!(Mutex::new(&a, ""), Err(Error::InvalidKey(_))));
    assert!(matches!(Election::new(&a, b""), Err(Error::InvalidKey(_))));
    a.close().unwrap();
    b.close().unwrap();
}

/// A `lock_until` that times out leaves no key, and does not block a later waiter.
pub fn mutex_lock_until_timeout_leaves_no_key<H: Harness + Sync>(h: &H) {
    let s = h.store();
    let prefix = h.key("until");
    let (a, b) = (
        Session::new(s, LONG).unwrap(),
        Session::new(s, LONG).unwrap(),
    );
    let mut la = Mutex::new(&a, &prefix).unwrap();
    let mut lb = Mutex::new(&b, &prefix).unwrap();
    la.lock().unwrap();
    let deadline = Instant::now() + Duration::from_millis(200);
    assert!(matches!(lb.lock_until(deadline), Err(Error::Locked)));
    assert!(Instant::now() >= deadline);
    assert_eq!(keys(h, &prefix), 1);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let c = Session::new(s, LONG).unwrap();
            let mut lc = Mutex::new(&c, &prefix).unwrap();
            lc.lock().unwrap();
            tx.send(()).unwrap();
            lc.unlock().unwrap();
            c.close().unwrap();
        });
        assert!(eventually(|| keys(h, &prefix) == 2));
        la.unlock().unwrap();
        rx.recv_timeout(ACT).expect("the later waiter acquires");
    });
    a.close().unwrap();
    b.close().unwrap();
}

/// The holder stops renewing (its process dies): the next waiter acquires within the TTL
/// plus a small bound, and the old holder's `done()` has fired.
pub fn mutex_passes_on_when_the_holders_session_expires<H: Harness + Sync>(h: &H) {
    let s = h.store();
    let prefix = h.key("expiry");
    let holder = Session::new(s, TTL).unwrap();
    let mut lock = Mutex::new(&holder, &prefix).unwrap();
    lock.lock().unwrap();
    let token = lock.revision().unwrap();
    let done = holder.done();
    drop(lock);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let w = Session::new(s, LONG).unwrap();
            let mut lw = Mutex::new(&w, &prefix).unwrap();
            lw.lock().unwrap();
            tx.send(lw.revision().unwrap()).unwrap();
            lw.unlock().unwrap();
            w.close().unwrap();
        });
        assert!(eventually(|| keys(h, &prefix) == 2));
        let stopped = Instant::now();
        holder.orphan(); // renewals stop; the lease lives one TTL more
        assert!(done.recv_timeout(ACT).is_err(), "done() fires");
        h.pass(TTL + Duration::from_millis(100));
        let next = rx.recv_timeout(ACT).expect("the waiter acquires");
        assert!(next > token);
        assert!(
            stopped.elapsed() <= TTL + BOUND,
            "acquired {:?} after the holder stopped",
            stopped.elapsed()
        );
    });
}

/// A session whose lease is revoked is told through `done()`; a write fenced by its lock is
/// refused once the lock has passed on, and the new holder's token is larger.
pub fn mutex_fencing_refuses_a_stale_holder<H: Harness>(h: &H) {
    let s = h.store();
    let prefix = h.key("fence");
    let data = h.key("data");
    let (a, b) = (
        Session::new(s, LONG).unwrap(),
        Session::new(s, LONG).unwrap(),
    );
    let mut la = Mutex::new(&a, &prefix).unwrap();
    la.lock().unwrap();
    let stale = la.is_owner().unwrap();
    let token = la.revision().unwrap();
    let write = |fence: Compare, value: &str| {
        s.txn(
            Txn::new()
                .when(fence)
                .then(Op::put(&data, value))
                .otherwise(Op::get(&data)),
        )
        .unwrap()
    };
    assert!(write(stale.clone(), "a").succeeded);

    s.revoke(a.lease()).unwrap(); // the lock is lost under `a`'s feet
    assert!(a.done().recv_timeout(ACT).is_err(), "done() fires");
    assert_eq!(a.ended(), Some(EndReason::Revoked));
    let mut lb = Mutex::new(&b, &prefix).unwrap();
    lb.lock().unwrap();
    assert!(lb.revision().unwrap() > token);
    let refused = write(stale, "stale");
    assert!(!refused.succeeded);
    let OpResponse::Get(Some(kv)) = &refused.responses[0] else {
        panic!("{refused:?}")
    };
    assert_eq!(kv.value, b"a");
    assert!(write(lb.is_owner().unwrap(), "b").succeeded);
    // A waiter of a lost session gets an error, not the lock.
    assert!(matches!(la.lock(), Err(Error::SessionExpired(_))));
    b.close().unwrap();
}

/// Proclaim by a non-leader fails; resign hands over to the next campaigner; the leader's
/// session expiring fails over; `observe()` sees every leader and value in order.
pub fn election_proclaim_resign_failover_observe<H: Harness + Sync>(h: &H) {
    let s = h.store();
    let prefix = h.key("election");
    let (sa, sb) = (
        Session::new(s, LONG).unwrap(),
        Session::new(s, TTL).unwrap(),
    );
    let mut ea = Election::new(&sa, &prefix).unwrap();
    let mut eb = Election::new(&sb, &prefix).unwrap();
    let mut observe = ea.observe().unwrap();
    assert!(ea.leader().unwrap().is_none());

    ea.campaign("a").unwrap();
    assert!(matches!(eb.proclaim("b"), Err(Error::NotLeader)));
    ea.proclaim("a2").unwrap();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| eb.campaign("b"));
        assert!(eventually(|| keys(h, &prefix) == 2));
        ea.resign().unwrap();
        waiting.join().unwrap().unwrap();
    });
    assert!(matches!(ea.proclaim("late"), Err(Error::NotLeader)));
    assert_eq!(ea.leader().unwrap().unwrap().value, b"b");

    // Failover: `b` stops renewing; `c`, queued behind it, takes over.
    let sc = Session::new(s, LONG).unwrap();
    drop(eb); // its key stays, under `sb`'s lease
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        let prefix = &prefix;
        let sc = &sc;
        scope.spawn(move || {
            let mut ec = Election::new(sc, prefix).unwrap();
            ec.campaign("c").unwrap();
            tx.send(()).unwrap();
            ec.resign().unwrap();
        });
        assert!(eventually(|| keys(h, prefix) == 2));
        sb.orphan();
        h.pass(TTL + Duration::from_millis(100));
        rx.recv_timeout(ACT).expect("c is elected");
    });

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let kv = observe.recv_timeout(ACT).unwrap().expect("a leader");
        seen.push(String::from_utf8(kv.value).unwrap());
    }
    assert_eq!(seen, ["a", "a2", "b", "c"]);
    sa.close().unwrap();
    sc.close().unwrap();
}
