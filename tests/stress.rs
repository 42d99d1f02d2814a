//! Concurrency stress: eight worker threads mix every operation (grant, grant_with_id, renew,
//! keep-alive, revoke, revoke_expired, put, put_with_lease, attach, detach, delete, get, range,
//! transactions) while the ticker expires leases of 10–100 ms, a watch on every key and a lease
//! subscriber consume events, and the main thread verifies the database as it goes. Then the
//! full invariant check, the watch replayed over the snapshot it started from against the final
//! state, and the same checks after a close and reopen.
//!
//! Runs for [`CI_SECS`]; `LESSOR_STRESS_SECS=N` runs it for N seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{MemDisk, Rng, invariants, wait_until};
use lessor::{
    CmpOp, Compare, Durability, Error, KeepAlive, KeepAliveOptions, KeyValue, LeaseEvent, LeaseId,
    Lessor, ManualClock, Op, Revision, Txn, WatchEnd, WatchEvent,
};
use parking_lot::Mutex;

const CI_SECS: u64 = 5;
const WORKERS: u64 = 8;
/// Keys the workers write, under `/s/`: few, so that operations collide.
const KEYS: u64 = 48;
/// `grant_with_id` picks ids from here, so they are reused once dead.
const FIXED_IDS: std::ops::Range<u64> = 1_000_000..1_000_016;
/// The key whose put ends the watch consumer's run.
const END: &[u8] = b"/end";

/// Errors a racing workload may meet: a lease expired or was revoked by another thread, a key
/// was deleted meanwhile, or a fixed id is still in use.
fn expected(e: &Error) -> bool {
    matches!(
        e,
        Error::LeaseNotFound(_)
            | Error::KeyNotFound(_)
            | Error::KeyNotAttached { .. }
            | Error::LeaseExists(_)
    )
}

/// What every worker shares.
struct Shared {
    l: Lessor,
    stop: AtomicBool,
    /// Leases granted lately, for others to use (some long dead).
    pool: Mutex<Vec<LeaseId>>,
    /// The highest id any grant has returned so far.
    highest_id: AtomicU64,
    /// Every auto id returned, to prove none is handed out twice.
    auto_ids: Mutex<HashSet<u64>>,
    ops: AtomicU64,
    errors: AtomicU64,
    /// Private leases (see [`Private`]) seen renewed, and refused once their deadline passed.
    private_renewed: AtomicU64,
    private_refused: AtomicU64,
}

#[test]
fn threads_mixing_every_operation_keep_every_invariant() {
    let secs = std::env::var("LESSOR_STRESS_SECS")
        .ok()
        .map_or(CI_SECS, |s| {
            s.parse().expect("LESSOR_STRESS_SECS is a number")
        });
    let seed = std::env::var("LESSOR_STRESS_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().unwrap(),
    );
    eprintln!("stress: seed {seed} (LESSOR_STRESS_SEED), {secs} s");
    let mut pauses = Rng::new(seed);
    // Odd seeds run batched: commits return before their fsync, the ticker flushes.
    let durability = if seed % 2 == 1 {
        Durability::Batched {
            max_delay: Duration::from_millis(2),
        }
    } else {
        Durability::Immediate
    };
    let disk = MemDisk::new();
    let l = Lessor::builder()
        .min_ttl(Duration::from_millis(1))
        .expiry_batch_size(8)
        .durability(durability)
        // Small enough that the slow consumers below fall behind now and then.
        .event_buffer(256)
        .watch_history(4000, 16 << 20)
        .open_with_backend(disk.clone())
        .unwrap();

    // A lease kept alive by a keep-alive all along: it must never be lost.
    // Its id is above the fixed ones, so that auto ids never fall among them (a private lease
    // could otherwise be replaced by another worker's `grant_with_id` once dead).
    let keeper = l
        .grant_with_id(LeaseId::new(FIXED_IDS.end).unwrap(), Duration::from_secs(2))
        .unwrap();
    l.put_with_lease("/keeper", "alive", keeper.id).unwrap();
    let keeper_ka = l.keep_alive(keeper.id).unwrap();

    let snapshot = l.range_with_revision("").unwrap();
    let watch = l.watch_from("", snapshot.revision.next()).unwrap();
    let watcher = {
        let l = l.clone();
        let rng = Rng::new(pauses.next());
        std::thread::spawn(move || consume_watch(&l, watch, snapshot, rng))
    };
    let events = l.subscribe().unwrap();
    let rng = Rng::new(pauses.next());
    let subscriber = std::thread::spawn(move || consume_lease_events(events, rng));

    let shared = Arc::new(Shared {
        l: l.clone(),
        stop: AtomicBool::new(false),
        pool: Mutex::new(Vec::new()),
        highest_id: AtomicU64::new(keeper.id.get()),
        auto_ids: Mutex::new(HashSet::from([keeper.id.get()])),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        private_renewed: AtomicU64::new(0),
        private_refused: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|t| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn(move || work(&shared, t, Rng::new(seed ^ (t + 1) << 40)))
                .unwrap()
        })
        .collect();

    let start = Instant::now();
    let mut verified = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(100));
        // Consistent at any moment, not only at rest: verify holds the writer while it looks.
        l.verify().unwrap();
        verified += 1;
        assert_eq!(keeper_ka.ended(), None, "the keep-alive ended");
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let ops = shared.ops.load(Ordering::Relaxed);
    eprintln!(
        "stress: {ops} ops ({} expected errors) by {WORKERS} threads in {:.1?}, {verified} \
         verifies while running",
        shared.errors.load(Ordering::Relaxed),
        start.elapsed()
    );
    assert!(ops > 1000, "the workload barely ran: {ops} ops");
    let (renewed, refused) = (
        shared.private_renewed.load(Ordering::Relaxed),
        shared.private_refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "stress: private leases renewed {renewed} times, refused after their deadline {refused}"
    );
    assert!(
        renewed > 0 && refused > 0,
        "the private-lease checks never ran"
    );

    // At rest: every lease but the keeper expires within its TTL, and the ticker revokes it
    // (with its keys) soon after. `leases()` drops a lease at its deadline, its keys go at its
    // revocation: wait for both.
    let at_rest = || {
        l.leases().unwrap() == vec![keeper.id]
            && l.range("")
                .unwrap()
                .iter()
                .all(|kv| kv.lease.is_none() || kv.lease == Some(keeper.id))
    };
    assert!(
        wait_until(Duration::from_secs(20), at_rest),
        "leases left: {:?}, keys: {:?}",
        l.leases().unwrap(),
        l.range("").unwrap()
    );
    assert_eq!(
        l.get("/keeper").unwrap().map(|kv| kv.lease),
        Some(Some(keeper.id))
    );
    invariants::check(&l).unwrap();
    let health = l.health();
    assert_eq!(health.ticker_failures, 0, "{health:?}");

    // The watch, replayed over its snapshot, ends exactly at the final state.
    let end = l.put(END, "done").unwrap();
    let replayed = watcher.join().unwrap();
    let now = l.range_with_revision("").unwrap();
    assert_eq!(now.revision, end);
    assert_eq!(
        replayed.state,
        without_leases(&now.kvs),
        "the watch replayed over its snapshot differs from the final state"
    );
    eprintln!(
        "stress: watch saw {} events up to revision {end:?} ({} restarts after Compacted)",
        replayed.events, replayed.restarts
    );

    drop(keeper_ka);
    let highest = shared.highest_id.load(Ordering::Relaxed);
    let before_close = l.range("").unwrap();
    l.close().unwrap();
    let lease_events = subscriber.join().unwrap();
    eprintln!("stress: lease events: {lease_events:?}");

    // And the file says the same after a reopen.
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    let state = invariants::check(&l).unwrap();
    assert_eq!(
        state.leases.keys().copied().collect::<Vec<_>>(),
        vec![keeper.id]
    );
    assert_eq!(state.kvs, before_close);
    invariants::check_next_id(&l, highest).unwrap();
    l.close().unwrap();
}

/// One worker: random operations until told to stop.
fn work(s: &Shared, t: u64, mut rng: Rng) {
    let l = &s.l;
    let mut keep_alives: Vec<KeepAlive> = Vec::new();
    let mut private = Private::new(t);
    // The highest revision this thread has been told of: later answers never go below it.
    let mut seen = 0u64;
    let mut saw = |r: Revision, strictly: bool| {
        let r = r.get();
        assert!(
            r > seen || (!strictly && r == seen),
            "revision {r} after {seen}"
        );
        seen = r;
    };
    while !s.stop.load(Ordering::Relaxed) {
        let k = rng.below(KEYS);
        let key = format!("/s/{k}");
        let value = rng.next().to_string();
        let lease = {
            let pool = s.pool.lock();
            if pool.is_empty() || rng.chance(5) {
                // An id never granted (others in the pool are long dead). Never a private one.
                LeaseId::new(LeaseId::MAX.get() - rng.below(8)).unwrap()
            } else {
                *rng.pick(&pool)
            }
        };
        let ttl = Duration::from_millis(rng.range(10, 100));
        let result: Result<(), Error> = match rng.below(100) {
            0..=9 => {
                let floor = s.highest_id.load(Ordering::Acquire);
                l.grant(ttl).map(|g| {
                    let id = g.id.get();
                    assert!(id > floor, "auto id {id}, but {floor} was issued before");
                    assert!(s.auto_ids.lock().insert(id), "auto id {id} issued twice");
                    s.highest_id.fetch_max(id, Ordering::AcqRel);
                    share(s, g.id);
                })
            }
            10..=12 => {
                let id = LeaseId::new(rng.range(FIXED_IDS.start, FIXED_IDS.end - 1)).unwrap();
                l.grant_with_id(id, ttl).map(|g| {
                    assert_eq!(g.id, id);
                    s.highest_id.fetch_max(id.get(), Ordering::AcqRel);
                    share(s, id);
                })
            }
            13..=24 => l
                .renew(lease)
                .map(|got| assert!(got >= Duration::from_millis(1))),
            25..=26 => {
                let opts = KeepAliveOptions::new().revoke_on_drop(rng.chance(30));
                l.keep_alive_with(lease, opts).map(|ka| {
                    keep_alives.push(ka);
                    if keep_alives.len() > 3 {
                        let ka = keep_alives.remove(rng.below(4) as usize);
                        if rng.chance(50) {
                            ka.cancel();
                        }
                    }
                })
            }
            27..=30 => l.revoke(lease).map(|r| saw(r, false)),
            31 => l.revoke_expired().map(drop),
            32..=43 => l.put_with_lease(&key, &value, lease).map(|r| saw(r, true)),
            44..=51 => l.put(&key, &value).map(|r| saw(r, true)),
            52..=57 => {
                let other = format!("/s/{}", rng.below(KEYS));
                l.attach(lease, [&key, &other])
            }
            58..=61 => l.detach(lease, [&key]),
            62..=67 => l.delete(&key).map(drop),
            68..=75 => l.get(&key).map(|kv| {
                if let Some(kv) = kv {
                    assert!(kv.create_revision <= kv.mod_revision && kv.version >= 1);
                    assert!(kv.mod_revision.get() <= l.revision().unwrap().get());
                }
            }),
            76..=81 => {
                let prefix = format!("/s/{}", rng.below(5));
                l.range_with_revision(&prefix).map(|snap| {
                    saw(snap.revision, false);
                    assert!(
                        snap.kvs
                            .iter()
                            .all(|kv| kv.key.starts_with(prefix.as_bytes())
                                && kv.mod_revision <= snap.revision)
                    );
                    assert!(snap.kvs.windows(2).all(|w| w[0].key < w[1].key));
                })
            }
            82..=91 => {
                // The lock pattern: create under a lease if absent, else read the holder.
                l.txn(
                    Txn::new()
                        .when(Compare::absent(&key))
                        .then(Op::put_with_lease(&key, &value, lease))
                        .otherwise(Op::get(&key)),
                )
                .map(|r| {
                    saw(r.revision, r.succeeded);
                    if r.succeeded {
                        let got = l.get(&key).unwrap();
                        // Another thread may have changed it since, but never before.
                        if let Some(kv) = got {
                            assert!(kv.create_revision >= r.revision, "{kv:?} vs {r:?}");
                        }
                    }
                })
            }
            _ => {
                // Compare-and-delete, or a two-key write at one revision.
                let other = format!("/s/{}", (k + 1 + rng.below(KEYS - 1)) % KEYS);
                l.txn(
                    Txn::new()
                        .when(Compare::version(&key, CmpOp::Greater, 1))
                        .then(Op::delete(&key))
                        .otherwise(Op::put(&key, &value))
                        .otherwise(Op::put(&other, &value)),
                )
                .map(|r| saw(r.revision, true))
            }
        };
        if let Err(e) = result {
            assert!(expected(&e), "unexpected error: {e:?}");
            s.errors.fetch_add(1, Ordering::Relaxed);
        }
        if rng.chance(10) {
            private.step(s, &mut rng);
        }
        s.ops.fetch_add(1, Ordering::Relaxed);
        if rng.chance(2) {
            std::thread::sleep(Duration::from_millis(rng.below(5)));
        }
    }
}

/// A lease only one worker knows of, with one key (`/p/<worker>`) that only it writes. Its
/// deadline is known from both sides: a grant or renewal that began at `a` and returned at `b`
/// set it between `a + ttl` and `b + ttl` (the lessor reads the same monotonic clock). So a
/// renewal must succeed before the lower bound, must fail after the upper one, and the key must
/// be there while the lease must be alive.
struct Private {
    key: String,
    held: Option<Held>,
    /// Earlier private leases, dead; the ticker may not have revoked them (and their key) yet.
    dead: Vec<LeaseId>,
}

struct Held {
    id: LeaseId,
    ttl: Duration,
    /// The lease lives at least until then...
    promised: Instant,
    /// ... and at most until then.
    doomed: Instant,
    /// Whether its key was written.
    keyed: bool,
}

impl Private {
    fn new(t: u64) -> Private {
        Private {
            key: format!("/p/{t}"),
            held: None,
            dead: Vec::new(),
        }
    }

    fn step(&mut self, s: &Shared, rng: &mut Rng) {
        let l = &s.l;
        let Some(h) = &mut self.held else {
            let ttl = Duration::from_millis(rng.range(20, 100));
            let began = Instant::now();
            let g = l.grant(ttl).unwrap();
            self.held = Some(Held {
                id: g.id,
                ttl,
                promised: began + ttl,
                doomed: Instant::now() + ttl,
                keyed: false,
            });
            return;
        };
        let began = Instant::now();
        match l.renew(h.id) {
            Ok(_) => {
                assert!(
                    began < h.doomed,
                    "lease {} renewed {:?} after its deadline",
                    h.id,
                    began - h.doomed
                );
                h.promised = began + h.ttl;
                h.doomed = Instant::now() + h.ttl;
                s.private_renewed.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::LeaseNotFound(_)) => {
                let late = Instant::now();
                assert!(
                    late >= h.promised,
                    "lease {} refused {:?} before its deadline",
                    h.id,
                    h.promised - late
                );
                s.private_refused.fetch_add(1, Ordering::Relaxed);
                self.dead.push(h.id);
                if self.dead.len() > 4 {
                    self.dead.remove(0);
                }
                self.held = None;
                return;
            }
            Err(e) => panic!("renew: {e:?}"),
        }
        if !h.keyed && rng.chance(50) {
            match l.put_with_lease(&self.key, "mine", h.id) {
                Ok(_) => h.keyed = true,
                Err(Error::LeaseNotFound(_)) => assert!(
                    Instant::now() >= h.promised,
                    "put refused: lease {} had {:?} left",
                    h.id,
                    h.promised.saturating_duration_since(Instant::now())
                ),
                Err(e) => panic!("put: {e:?}"),
            }
        }
        let kv = l.get(&self.key).unwrap();
        match kv {
            Some(kv) if kv.lease == Some(h.id) => assert!(h.keyed, "{kv:?}: never written"),
            Some(kv) => assert!(
                !h.keyed && kv.lease.is_some_and(|id| self.dead.contains(&id)),
                "{kv:?}, but lease {} holds it (written: {})",
                h.id,
                h.keyed
            ),
            None => assert!(
                !h.keyed || Instant::now() >= h.promised,
                "{} gone while its lease {} had {:?} left",
                self.key,
                h.id,
                h.promised.saturating_duration_since(Instant::now())
            ),
        }
        if rng.chance(10) {
            // Past its deadline: the next renewal must fail.
            std::thread::sleep(h.ttl + Duration::from_millis(2));
        }
    }
}

fn share(s: &Shared, id: LeaseId) {
    let mut pool = s.pool.lock();
    pool.push(id);
    if pool.len() > 64 {
        pool.remove(0);
    }
}

/// A key's state as watch events tell it: everything but its lease (attach and detach change
/// the lease without an event).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
}

fn without_leases(kvs: &[KeyValue]) -> BTreeMap<Vec<u8>, Seen> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                Seen {
                    value: kv.value.clone(),
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                },
            )
        })
        .collect()
}

struct Replayed {
    state: BTreeMap<Vec<u8>, Seen>,
    events: u64,
    restarts: u64,
}

/// Replays a watch on every key over the snapshot it started from, checking each event against
/// the state so far, until the put of [`END`]. A watch that falls behind the history ends
/// `Compacted`; it is then restarted from a new snapshot, as the docs say to.
fn consume_watch(
    l: &Lessor,
    mut watch: lessor::Watch,
    snapshot: lessor::Snapshot,
    mut rng: Rng,
) -> Replayed {
    let mut state = without_leases(&snapshot.kvs);
    let mut base = snapshot.revision;
    let mut last = base;
    let mut events = 0;
    let mut restarts = 0;
    loop {
        let e = match watch.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => e,
            Err(_) => {
                assert_eq!(
                    watch.ended(),
                    Some(WatchEnd::Compacted),
                    "the watch stopped"
                );
                let snap = l.range_with_revision("").unwrap();
                assert!(snap.revision >= last);
                state = without_leases(&snap.kvs);
                last = snap.revision;
                base = snap.revision;
                watch = l.watch_from("", snap.revision.next()).unwrap();
                restarts += 1;
                continue;
            }
        };
        events += 1;
        // Now and then, fall behind: the watch catches up from history, or ends compacted.
        if rng.chance(1) && rng.chance(10) {
            std::thread::sleep(Duration::from_millis(rng.range(10, 300)));
        }
        // Events of one transaction share a revision; transactions come in revision order.
        assert!(
            e.revision() >= last && e.revision() > base,
            "{e:?} after revision {last:?}"
        );
        last = e.revision();
        match e {
            WatchEvent::Put(kv) => {
                let prior = state.get(&kv.key);
                let (create, version) = match prior {
                    Some(p) => (p.create_revision, p.version + 1),
                    None => (kv.mod_revision, 1),
                };
                assert_eq!(
                    (kv.create_revision, kv.version),
                    (create, version),
                    "{kv:?} after {prior:?}"
                );
                let done = kv.key == END;
                state.insert(
                    kv.key.clone(),
                    Seen {
                        value: kv.value,
                        create_revision: kv.create_revision,
                        mod_revision: kv.mod_revision,
                        version: kv.version,
                    },
                );
                if done {
                    return Replayed {
                        state,
                        events,
                        restarts,
                    };
                }
            }
            WatchEvent::Delete { key, revision, .. } => {
                assert!(
                    state.remove(&key).is_some(),
                    "deleted {:?} at {revision:?}, which the watch never saw",
                    String::from_utf8_lossy(&key)
                );
            }
            other => panic!("unknown event {other:?}"),
        }
    }
}

/// What the lease subscriber saw.
#[derive(Debug, Default)]
struct LeaseEvents {
    granted: u64,
    revoked: u64,
    expired: u64,
    lagged: u64,
}

/// Reads lease events until the lessor closes: revisions never go back, and between two
/// `Lagged` markers no lease is granted while alive or ended twice.
fn consume_lease_events(events: lessor::LeaseEvents, mut rng: Rng) -> LeaseEvents {
    let mut seen = LeaseEvents::default();
    // What the events so far say of each lease: alive or not. Forgotten at a `Lagged`.
    let mut alive: HashMap<LeaseId, bool> = HashMap::new();
    let mut last = Revision::new(0);
    for e in events {
        if rng.chance(1) && rng.chance(10) {
            std::thread::sleep(Duration::from_millis(rng.range(10, 200)));
        }
        let revision = match &e {
            LeaseEvent::Granted { id, revision, .. } => {
                seen.granted += 1;
                assert_ne!(alive.insert(*id, true), Some(true), "{e:?} while alive");
                *revision
            }
            LeaseEvent::Revoked {
                id,
                revision,
                cause,
                ..
            } => {
                match cause {
                    lessor::RevokeCause::Revoked => seen.revoked += 1,
                    _ => seen.expired += 1,
                }
                assert_ne!(alive.insert(*id, false), Some(false), "{e:?} twice");
                *revision
            }
            LeaseEvent::Lagged(n) => {
                seen.lagged += n;
                alive.clear();
                continue;
            }
            other => panic!("unknown event {other:?}"),
        };
        assert!(revision >= last, "{e:?} after revision {last:?}");
        last = revision;
    }
    seen
}
