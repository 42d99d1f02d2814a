//! The commit pipeline (issue 12, items 1 and 2): concurrent groups in which some requests
//! fail, checked against the reference model (`tests/support/model.rs`); under
//! `Durability::Immediate`, nothing readable or published before its fsync and every
//! acknowledged call durable; under `Durability::Batched`, sequential calls sharing commits.
//!
//! `PIPELINE_CASES=N` runs N cases of each concurrent model test (default 24: about half a
//! second; 2,000 take about a minute).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support {
    pub mod model;
}

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::faults::{FaultDisk, Io};
use common::{MemDisk, PowerDisk, id, secs};
use lessor::{
    CmpOp, Compare, Durability, LeaseEvent, LeaseId, Lessor, ManualClock, OpResponse, Txn,
    WatchEvent,
};
use parking_lot::{Condvar, Mutex};
use proptest::prelude::*;
use support::model::{Model, Op, Out, Sut, compare, compare_events, err, key};

// ---------------------------------------------------------------------------------------------
// 1. Concurrent groups against the reference model
// ---------------------------------------------------------------------------------------------
//
// Each thread owns its leases and keys (a partition), and shares a few keys that only plain
// puts and lease-less compare-and-puts touch. That makes every call's result a function of the
// thread's own earlier calls and of the writes that advance the revision, whose order the
// revisions they return give. The acknowledged calls are then merged into one sequence that
// respects each thread's program order and the revision order:
// - a call that advanced the revision to `r` (a put, a txn that wrote, a revocation that
//   deleted keys) goes right after the one that made `r - 1`;
// - a call that observed revision `r` without advancing it (a grant: its `Granted` event says
//   at which revision; a txn that wrote nothing; a revocation without keys) goes after `r` and
//   before `r + 1`;
// - any other call (a failure, an attach or detach) reads and writes only its thread's
//   partition, so it may go anywhere after its thread's previous call.
// The reference model replays that sequence and must predict every result, the lease events
// (matched to their calls), every key event of a watch on all keys, and the final state, which
// a power cut (after `sync` under `Batched`) must keep whole. Requests that fail write a poison
// value first where they can, so a write left behind by one shows in the state or the events.

const THREADS: usize = 4;
/// Per thread: leases `base + 1 ..= base + LEASES`, never-granted lease `base + DEAD`, keys
/// `/k{base} .. /k{base + KEYS_PER - 1}`, with `base = 10 * (thread + 1)`.
const LEASES: u64 = 4;
const DEAD: u64 = 9;
const KEYS_PER: usize = 4;
/// Keys every thread writes (plain puts and lease-less compare-and-puts only): `/k0../k2`.
const SHARED: usize = 3;
/// The value requests that must fail write: no key may ever hold it.
const POISON: u8 = 0xEE;
const MAX_KEY: usize = 64;

/// One request of a thread.
#[derive(Clone, Debug)]
enum Req {
    /// A request the reference model knows.
    Model(Op),
    /// `txn().then(put(key, POISON)).then(put(<key over the limit>, ...))`: `KeyTooLarge`.
    TooLarge(usize),
    /// `txn().when(absent(<key never written>)).then(put(key, POISON)).then(put_with_lease(
    /// other, POISON, <lease never granted>))`: `LeaseNotFound`, its first put undone.
    DeadPair(usize, usize),
}

fn thread_req(t: usize) -> impl Strategy<Value = Req> {
    let base = 10 * (t as u64 + 1);
    let lease = (1..=LEASES).prop_map(move |i| base + i);
    // Mostly live-able leases, sometimes the never-granted one.
    let any_lease = prop_oneof![4 => lease.clone(), 1 => Just(base + DEAD)];
    let own = (0..KEYS_PER).prop_map(move |j| base as usize + j);
    let shared = 0..SHARED;
    let own_keys = prop::collection::vec(own.clone(), 1..3);
    let value = 0..200u8;
    prop_oneof![
        3 => (lease.clone(), 1..8u64).prop_map(|(l, ttl)| Req::Model(Op::GrantWithId(l, ttl))),
        4 => (own.clone(), value.clone(), prop::option::of(any_lease.clone()))
            .prop_map(|(k, v, l)| Req::Model(Op::Put(k, v, l))),
        3 => (shared.clone(), value.clone()).prop_map(|(k, v)| Req::Model(Op::Put(k, v, None))),
        2 => (any_lease.clone(), own_keys.clone())
            .prop_map(|(l, ks)| Req::Model(Op::Attach(l, ks))),
        1 => (any_lease.clone(), own_keys).prop_map(|(l, ks)| Req::Model(Op::Detach(l, ks))),
        2 => any_lease.clone().prop_map(|l| Req::Model(Op::Revoke(l))),
        2 => (own.clone(), 0..3u64, value.clone(), prop::option::of(any_lease))
            .prop_map(|(k, ver, v, l)| Req::Model(Op::CasPut(k, ver, v, l))),
        2 => (shared, 0..4u64, value).prop_map(|(k, ver, v)| Req::Model(Op::CasPut(k, ver, v, None))),
        1 => own.clone().prop_map(Req::TooLarge),
        2 => (own.clone(), 1..KEYS_PER).prop_map(move |(a, off)| {
            Req::DeadPair(a, base as usize + (a - base as usize + off) % KEYS_PER)
        }),
    ]
}

fn workload() -> impl Strategy<Value = Vec<Vec<Req>>> {
    (0..THREADS)
        .map(|t| prop::collection::vec(thread_req(t), 1..40))
        .collect::<Vec<_>>()
}

/// The lease id `Req::DeadPair` of a key uses: its thread's never-granted one.
fn dead_lease_of(k: usize) -> u64 {
    (k as u64 / 10) * 10 + DEAD
}

fn lid(n: u64) -> LeaseId {
    id(n)
}

/// Runs a request the reference model knows, as `support::model::run` does.
fn run_op(l: &Lessor, op: &Op) -> Out {
    let keys = |ks: &[usize]| ks.iter().map(|&k| key(k)).collect::<Vec<_>>();
    match *op {
        Op::GrantWithId(n, t) => l
            .grant_with_id(lid(n), secs(t))
            .map_or_else(err, |g| Out::Id(g.id.get())),
        Op::Put(k, v, lease) => {
            let r = match lease {
                Some(n) => l.put_with_lease(key(k), [v], lid(n)),
                None => l.put(key(k), [v]),
            };
            r.map_or_else(err, |r| Out::Rev(r.get()))
        }
        Op::Attach(n, ref ks) => l.attach(lid(n), keys(ks)).map_or_else(err, |()| Out::Ok),
        Op::Detach(n, ref ks) => l.detach(lid(n), keys(ks)).map_or_else(err, |()| Out::Ok),
        Op::Revoke(n) => l.revoke(lid(n)).map_or_else(err, |r| Out::Rev(r.get())),
        Op::CasPut(k, version, v, lease) => {
            let put = match lease {
                Some(n) => lessor::Op::put_with_lease(key(k), [v], lid(n)),
                None => lessor::Op::put(key(k), [v]),
            };
            l.txn(
                Txn::new()
                    .when(Compare::version(key(k), CmpOp::Equal, version))
                    .then(put)
                    .otherwise(lessor::Op::delete(key(k)))
                    .otherwise(lessor::Op::get(key(k))),
            )
            .map_or_else(err, |r| {
                let responses = r
                    .responses
                    .iter()
                    .map(|x| match x {
                        OpResponse::Put => "put".to_string(),
                        OpResponse::Delete { existed } => format!("deleted {existed}"),
                        OpResponse::Get(None) => "get none".into(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                Out::Txn(r.succeeded, r.revision.get(), responses)
            })
        }
        ref other => unreachable!("not generated: {other:?}"),
    }
}

/// What a request returned.
#[derive(Debug)]
enum Got {
    Model(Out),
    /// A request outside the model: `Ok(revision)` of a txn, or the error.
    Extra(Result<(bool, u64), String>),
}

fn run_req(l: &Lessor, req: &Req) -> Got {
    match *req {
        Req::Model(ref op) => Got::Model(run_op(l, op)),
        Req::TooLarge(k) => Got::Extra(
            l.txn(
                Txn::new()
                    .then(lessor::Op::put(key(k), [POISON]))
                    .then(lessor::Op::put(vec![b'x'; MAX_KEY + 1], [POISON])),
            )
            .map(|r| (r.succeeded, r.revision.get()))
            .map_err(|e| format!("{e:?}")),
        ),
        Req::DeadPair(a, b) => Got::Extra(
            l.txn(
                Txn::new()
                    .when(Compare::absent("/never"))
                    .then(lessor::Op::put(key(a), [POISON]))
                    .then(lessor::Op::put_with_lease(
                        key(b),
                        [POISON],
                        lid(dead_lease_of(b)),
                    )),
            )
            .map(|r| (r.succeeded, r.revision.get()))
            .map_err(|e| format!("{e:?}")),
        ),
    }
}

/// Where an acknowledged call goes in the merged sequence; see the comment above.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Anywhere,
    /// It advanced the revision to this.
    Made(u64),
    /// It ran at this revision without advancing it.
    At(u64),
}

/// One acknowledged call, with the lease event it published (matched by lease id).
#[derive(Debug)]
struct Call {
    thread: usize,
    req: Req,
    got: Got,
    place: Place,
    event: Option<LeaseEvent>,
}

fn event_lease(e: &LeaseEvent) -> u64 {
    match e {
        LeaseEvent::Granted { id, .. } | LeaseEvent::Revoked { id, .. } => id.get(),
        other => panic!("unexpected lease event {other:?}"),
    }
}

/// Places a call, taking its lease event from `events` (per lease id, in publish order).
fn place(
    thread: usize,
    req: Req,
    got: Got,
    events: &mut BTreeMap<u64, VecDeque<LeaseEvent>>,
) -> Result<Call, String> {
    let mut take = |n: u64| {
        events
            .get_mut(&n)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| format!("no lease event for the call {req:?} → {got:?}"))
    };
    let (place, event) = match (&req, &got) {
        (Req::Model(Op::GrantWithId(n, _)), Got::Model(Out::Id(_))) => {
            let e = take(*n)?;
            let LeaseEvent::Granted { revision, .. } = e else {
                return Err(format!("grant of {n}: event {e:?}"));
            };
            (Place::At(revision.get()), Some(e))
        }
        (Req::Model(Op::Revoke(n)), Got::Model(Out::Rev(r))) => {
            let e = take(*n)?;
            let LeaseEvent::Revoked { ref keys, .. } = e else {
                return Err(format!("revoke of {n}: event {e:?}"));
            };
            let place = if keys.is_empty() {
                Place::At(*r)
            } else {
                Place::Made(*r)
            };
            (place, Some(e))
        }
        (Req::Model(Op::Put(..)), Got::Model(Out::Rev(r))) => (Place::Made(*r), None),
        (Req::Model(Op::CasPut(..)), Got::Model(Out::Txn(ok, r, responses))) => {
            let wrote = *ok || responses.first().is_some_and(|s| s == "deleted true");
            (
                if wrote {
                    Place::Made(*r)
                } else {
                    Place::At(*r)
                },
                None,
            )
        }
        _ => (Place::Anywhere, None),
    };
    Ok(Call {
        thread,
        req,
        got,
        place,
        event,
    })
}

/// Merges the threads' calls into one sequence (see the comment above); `Err` if none fits.
fn merge(mut threads: Vec<VecDeque<Call>>) -> Result<Vec<Call>, String> {
    let mut out = Vec::new();
    let mut revision = 0;
    loop {
        let heads: Vec<Option<Place>> =
            threads.iter().map(|q| q.front().map(|c| c.place)).collect();
        if heads.iter().all(Option::is_none) {
            return Ok(out);
        }
        // Calls that do not advance the revision first: one that ran at `revision` must go
        // before the call that made `revision + 1`.
        let pick = heads
            .iter()
            .position(|h| matches!(h, Some(Place::Anywhere)))
            .or_else(|| heads.iter().position(|h| *h == Some(Place::At(revision))))
            .or_else(|| {
                heads
                    .iter()
                    .position(|h| *h == Some(Place::Made(revision + 1)))
            });
        let Some(t) = pick else {
            return Err(format!(
                "no call fits at revision {revision}: the next calls of the threads are \
                 {heads:?}\nmerged so far: {out:#?}"
            ));
        };
        let call = threads[t].pop_front().unwrap();
        if let Place::Made(r) = call.place {
            revision = r;
        }
        out.push(call);
    }
}

/// Checks a request outside the model: it must have failed with its error.
fn check_extra(req: &Req, got: &Got) -> Result<(), String> {
    let want = match req {
        Req::TooLarge(_) => "KeyTooLarge",
        Req::DeadPair(..) => "LeaseNotFound",
        Req::Model(_) => unreachable!(),
    };
    match got {
        Got::Extra(Err(e)) if e.starts_with(want) => Ok(()),
        _ => Err(format!("{req:?}: want {want}, got {got:?}")),
    }
}

fn open_model(disk: impl redb::StorageBackend, clock: &ManualClock, batched: bool) -> Lessor {
    let durability = if batched {
        Durability::Batched {
            max_delay: Duration::from_secs(3600),
        }
    } else {
        Durability::Immediate
    };
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .durability(durability)
        .max_key_size(MAX_KEY)
        .open_with_backend(disk)
        .unwrap()
}

/// Runs one workload: the threads at once on one lessor, then the checks.
fn check_concurrent(work: &[Vec<Req>], batched: bool) -> Result<(), String> {
    // A slow fsync, so that requests pile up behind a flush and groups form.
    let disk = PowerDisk::new(Duration::from_micros(300));
    let clock = ManualClock::new();
    let l = open_model(disk.clone(), &clock, batched);
    let lease_events = l.subscribe().unwrap();
    let watch = l.watch("").unwrap();
    let barrier = Arc::new(Barrier::new(work.len()));
    let logs: Vec<Vec<(Req, Got)>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .iter()
            .map(|reqs| {
                let (l, barrier) = (l.clone(), Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    reqs.iter()
                        .map(|r| (r.clone(), run_req(&l, r)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Lease events come in commit order: revisions never go back.
    let published: Vec<LeaseEvent> = lease_events.try_iter().collect();
    let mut last = 0;
    for e in &published {
        let r = match e {
            LeaseEvent::Granted { revision, .. } | LeaseEvent::Revoked { revision, .. } => {
                revision.get()
            }
            other => return Err(format!("unexpected lease event {other:?}")),
        };
        if r < last {
            return Err(format!("lease events out of order: {published:#?}"));
        }
        last = r;
    }
    let mut by_lease: BTreeMap<u64, VecDeque<LeaseEvent>> = BTreeMap::new();
    for e in published {
        by_lease.entry(event_lease(&e)).or_default().push_back(e);
    }
    let mut threads = Vec::new();
    for (t, log) in logs.into_iter().enumerate() {
        let mut q = VecDeque::new();
        for (req, got) in log {
            q.push_back(place(t, req, got, &mut by_lease)?);
        }
        threads.push(q);
    }
    if let Some((n, left)) = by_lease.iter().find(|(_, q)| !q.is_empty()) {
        return Err(format!("lease events of {n} no call made: {left:?}"));
    }
    let merged = merge(threads)?;

    // Replay on the model; the lease events go to the model's comparison in merged order.
    let mut m = Model::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    for (step, call) in merged.iter().enumerate() {
        let at = || {
            format!(
                "merged step {step} (thread {}): {:?}",
                call.thread, call.req
            )
        };
        match (&call.req, &call.got) {
            (Req::Model(op), Got::Model(got)) => {
                let want = m.apply(op);
                if *got != want {
                    return Err(format!(
                        "{}
   lessor: {got:?}
    model: {want:?}",
                        at()
                    ));
                }
            }
            (req, got) => check_extra(req, got).map_err(|e| format!("{}: {e}", at()))?,
        }
        if let Some(e) = &call.event {
            tx.send(e.clone()).unwrap();
        }
    }
    let sut = Sut {
        l: l.clone(),
        events: rx,
        watch,
        keep_alives: BTreeMap::new(),
    };
    compare_events(&sut, &mut m).map_err(|e| format!("events: {e}"))?;
    compare(&l, &m).map_err(|e| format!("final state: {e}"))?;
    if let Some(kv) = l.range("").unwrap().iter().find(|kv| kv.value == [POISON]) {
        return Err(format!("a failed request's write is visible: {kv:?}"));
    }
    l.verify().map_err(|e| format!("verify: {e}"))?;
    // Everything acknowledged is durable (under `Batched`, once synced).
    if batched {
        l.sync().map_err(|e| format!("sync: {e}"))?;
    }
    std::mem::forget(l);
    let after = open_model(disk.after_power_loss(), &clock, false);
    compare(&after, &m).map_err(|e| format!("after a power cut: {e}"))?;
    after.close().unwrap();
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PIPELINE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Four threads at once under `Immediate`, each request all-or-nothing inside its group.
    #[test]
    fn concurrent_groups_with_failing_requests_match_the_model(work in workload()) {
        check_concurrent(&work, false).map_err(TestCaseError::fail)?;
    }

    /// The same under `Batched { 1 h }`: one buffer shared by the threads, no flush until
    /// `sync`.
    #[test]
    fn concurrent_batched_requests_match_the_model(work in workload()) {
        check_concurrent(&work, true).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Under `Immediate`, nothing is readable or published before its fsync
// ---------------------------------------------------------------------------------------------

/// A disk in memory whose `sync_data`, once armed, blocks until released.
#[derive(Clone, Debug, Default)]
struct GateDisk {
    disk: MemDisk,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    /// Syncs that arrived while armed.
    entered: u64,
}

impl GateDisk {
    fn arm(&self) {
        self.gate.0.lock().armed = true;
    }

    /// Waits until `n` syncs have arrived at the armed gate; `false` after `limit`.
    fn wait_entered(&self, n: u64, limit: Duration) -> bool {
        let (m, cv) = &*self.gate;
        let mut g = m.lock();
        let deadline = std::time::Instant::now() + limit;
        while g.entered < n {
            if cv.wait_until(&mut g, deadline).timed_out() {
                return g.entered >= n;
            }
        }
        true
    }

    fn release(&self) {
        let (m, cv) = &*self.gate;
        m.lock().armed = false;
        cv.notify_all();
    }
}

/// Releases the gate when dropped: a failing assertion must not leave the lessor's close (on
/// unwinding) blocked in a sync forever.
struct Opener(GateDisk);

impl Drop for Opener {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl redb::StorageBackend for GateDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.disk.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.disk.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.disk.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let (m, cv) = &*self.gate;
        let mut g = m.lock();
        if g.armed {
            g.entered += 1;
            cv.notify_all();
            while g.armed {
                cv.wait(&mut g);
            }
        }
        drop(g);
        self.disk.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk.write(offset, data)
    }
}

fn open_on(disk: impl redb::StorageBackend, durability: Durability) -> Lessor {
    Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .durability(durability)
        .open_with_backend(disk)
        .unwrap()
}

fn values(l: &Lessor) -> Vec<(String, String)> {
    l.range("")
        .unwrap()
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// While a writer is blocked in its fsync, the other threads' reads show the state before its
/// request and neither a watch nor a subscriber hears of it; a request applied behind it (its
/// group is the next flush) is not visible either. Once released, both are.
#[test]
fn immediate_reads_and_events_wait_for_the_fsync() {
    let disk = GateDisk::default();
    let l = open_on(disk.clone(), Durability::Immediate);
    let lease = l.grant(secs(60)).unwrap().id;
    l.put("/a", "old").unwrap();
    l.put_with_lease("/b", "old", lease).unwrap();
    let before_rev = l.revision().unwrap();
    let before = pairs(&[("/a", "old"), ("/b", "old")]);
    let watch = l.watch("").unwrap();
    let events = l.subscribe().unwrap();

    let _opener = Opener(disk.clone()); // dropped before `l`
    disk.arm();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || {
            l.txn(
                Txn::new()
                    .then(lessor::Op::put_with_lease("/a", "new", lease))
                    .then(lessor::Op::put("/c", "new")),
            )
            .unwrap()
        })
    };
    assert!(
        disk.wait_entered(1, Duration::from_secs(10)),
        "the write never reached its fsync"
    );
    // A second request, applied while the first one's flush runs: it waits for the next.
    let granter = {
        let l = l.clone();
        std::thread::spawn(move || l.grant_with_id(id(77), secs(60)).unwrap())
    };
    let reviser = {
        let l = l.clone();
        std::thread::spawn(move || l.delete("/b").unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        assert!(!writer.is_finished() && !granter.is_finished() && !reviser.is_finished());
        assert_eq!(l.get("/a").unwrap().unwrap().value, b"old");
        assert_eq!(l.get("/a").unwrap().unwrap().lease, None);
        assert_eq!(l.get("/c").unwrap(), None);
        assert!(l.get("/b").unwrap().is_some());
        assert_eq!(values(&l), before);
        let snap = l.range_with_revision("").unwrap();
        assert_eq!(snap.revision, before_rev);
        assert_eq!(snap.kvs.len(), 2);
        assert_eq!(l.revision().unwrap(), before_rev);
        assert_eq!(
            l.time_to_live_with_keys(lease).unwrap().keys,
            vec![b"/b".to_vec()],
            "time_to_live shows keys of a write not yet durable"
        );
        assert!(
            watch.try_recv().is_err(),
            "a watch heard of a write not yet durable"
        );
        assert!(
            events.try_recv().is_err(),
            "a subscriber heard of a grant not yet durable"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    disk.release();
    let txn = writer.join().unwrap();
    assert!(txn.succeeded);
    assert_eq!(txn.revision.get(), before_rev.get() + 1);
    granter.join().unwrap();
    assert!(reviser.join().unwrap());
    assert_eq!(values(&l), pairs(&[("/a", "new"), ("/c", "new")]));
    assert_eq!(l.revision().unwrap().get(), before_rev.get() + 2);
    assert_eq!(
        l.time_to_live_with_keys(lease).unwrap().keys,
        vec![b"/a".to_vec()]
    );
    assert!(l.time_to_live(id(77)).is_ok());
    let seen: Vec<WatchEvent> = std::iter::from_fn(|| watch.try_recv().ok()).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(matches!(events.try_recv(), Ok(LeaseEvent::Granted { id, .. }) if id.get() == 77));
    l.close().unwrap();
}

/// A flush whose fsync fails: none of the group's callers is acknowledged, a watch and a
/// subscriber hear of none of it, and reads never show it; after recovery, later writes are
/// heard as usual (the watch and the subscriber were working all along).
#[test]
fn immediate_a_failed_flush_publishes_nothing() {
    let disk = FaultDisk::new();
    let l = open_on(disk.clone(), Durability::Immediate);
    let lease = l.grant(secs(60)).unwrap().id;
    l.put("/a", "old").unwrap();
    let before_rev = l.revision().unwrap();
    let watch = l.watch("").unwrap();
    let events = l.subscribe().unwrap();

    disk.fail_always(Io::Sync);
    let results: Vec<bool> = std::thread::scope(|s| {
        let calls: Vec<Box<dyn FnOnce() -> bool + Send>> = vec![
            Box::new(|| l.put("/a", "lost").is_ok()),
            Box::new(|| l.put_with_lease("/b", "lost", lease).is_ok()),
            Box::new(|| l.grant_with_id(id(77), secs(60)).is_ok()),
            Box::new(|| l.revoke(lease).is_ok()),
        ];
        let handles: Vec<_> = calls.into_iter().map(|f| s.spawn(f)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(disk.injected() > 0);
    assert_eq!(
        results, [false; 4],
        "a call whose flush failed was acknowledged"
    );
    // The failure ends the watch and the subscription; what was sent before stays readable.
    let heard: Vec<WatchEvent> = std::iter::from_fn(|| watch.try_recv().ok()).collect();
    assert!(
        heard.is_empty(),
        "a watch heard of failed writes: {heard:?}"
    );
    assert_eq!(watch.ended(), Some(lessor::WatchEnd::StorageFailed));
    let heard: Vec<LeaseEvent> = events.try_iter().collect();
    assert!(
        heard.is_empty(),
        "a subscriber heard of failed writes: {heard:?}"
    );

    disk.heal();
    l.recover().unwrap();
    assert_eq!(values(&l), pairs(&[("/a", "old")]));
    assert_eq!(l.leases().unwrap(), vec![lease]);
    assert_eq!(l.revision().unwrap(), before_rev);
    // Nor does the history of a watch started afresh hold them.
    if let Ok(w) = l.watch_from("", before_rev.next()) {
        assert!(
            w.try_recv().is_err(),
            "the watch history holds a failed write"
        );
    }

    // The pipeline works again, and publishes after its flush.
    let watch = l.watch("").unwrap();
    let events = l.subscribe().unwrap();
    l.put("/a", "later").unwrap();
    l.revoke(lease).unwrap();
    assert!(matches!(watch.try_recv(), Ok(WatchEvent::Put(kv)) if kv.value == b"later"));
    assert!(matches!(events.try_recv(), Ok(LeaseEvent::Revoked { id, .. }) if id == lease));
    assert_eq!(values(&l), pairs(&[("/a", "later")]));
    assert!(l.leases().unwrap().is_empty());
    let rev = l.revision().unwrap();
    l.close().unwrap();
    // Nothing of the failed group comes back from the file either.
    let l = open_on(disk, Durability::Immediate);
    assert_eq!(values(&l), pairs(&[("/a", "later")]));
    assert!(l.leases().unwrap().is_empty());
    assert_eq!(l.revision().unwrap(), rev);
    l.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. Batched: sequential calls share commits
// ---------------------------------------------------------------------------------------------

/// 1,000 sequential puts under `Batched { 1 h }` without a ticker cost at most a few commits;
/// `sync` then makes them durable, and a power cut after it keeps every one.
#[test]
fn batched_sequential_puts_share_a_commit_and_sync_makes_them_durable() {
    let disk = FaultDisk::new();
    let l = open_on(
        disk.clone(),
        Durability::Batched {
            max_delay: Duration::from_secs(3600),
        },
    );
    let before = l.stats().unwrap();
    let syncs = disk.calls(Io::Sync);
    for i in 0..1000 {
        l.put(format!("/k/{i:04}"), format!("v{i}")).unwrap();
    }
    let after = l.stats().unwrap();
    assert!(
        after.commits - before.commits <= 2 && after.fsyncs - before.fsyncs <= 2,
        "1,000 puts made {} commits and {} fsyncs",
        after.commits - before.commits,
        after.fsyncs - before.fsyncs
    );
    assert!(disk.calls(Io::Sync) - syncs <= 2);
    // Acknowledged, hence readable.
    assert_eq!(l.range("/k/").unwrap().len(), 1000);

    l.sync().unwrap();
    let cut = open_on(disk.after_power_loss(), Durability::Immediate);
    let kvs = cut.range("/k/").unwrap();
    assert_eq!(kvs.len(), 1000);
    for (i, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("/k/{i:04}").into_bytes());
        assert_eq!(kv.value, format!("v{i}").into_bytes());
    }
    assert_eq!(cut.revision().unwrap(), l.revision().unwrap());
    cut.close().unwrap();
    std::mem::forget(l); // the "crashed" process never closes
}

// ---------------------------------------------------------------------------------------------
// 4. A lone `Immediate` caller is acknowledged once durable
// ---------------------------------------------------------------------------------------------

/// After each call returns, a power cut keeps it.
#[test]
fn immediate_a_lone_call_is_durable_when_it_returns() {
    let disk = FaultDisk::new();
    let l = open_on(disk.clone(), Durability::Immediate);
    let cut = || open_on(disk.after_power_loss(), Durability::Immediate);

    let lease = l.grant(secs(60)).unwrap().id;
    let c = cut();
    assert_eq!(c.leases().unwrap(), vec![lease]);
    c.close().unwrap();

    let rev = l.put_with_lease("/k", "v1", lease).unwrap();
    let c = cut();
    let kv = c.get("/k").unwrap().expect("an acknowledged put was lost");
    assert_eq!((kv.value, kv.lease), (b"v1".to_vec(), Some(lease)));
    assert_eq!(c.revision().unwrap(), rev);
    c.close().unwrap();

    l.put("/k", "v2").unwrap();
    let c = cut();
    assert_eq!(c.get("/k").unwrap().unwrap().value, b"v2");
    c.close().unwrap();

    let r = l
        .txn(
            Txn::new()
                .then(lessor::Op::put("/t", "x"))
                .then(lessor::Op::delete("/k")),
        )
        .unwrap();
    let c = cut();
    assert_eq!(values(&c), pairs(&[("/t", "x")]));
    assert_eq!(c.revision().unwrap(), r.revision);
    c.close().unwrap();

    l.attach(lease, ["/t"]).unwrap();
    let c = cut();
    assert_eq!(c.get("/t").unwrap().unwrap().lease, Some(lease));
    c.close().unwrap();

    l.revoke(lease).unwrap();
    let c = cut();
    assert!(c.leases().unwrap().is_empty());
    assert!(values(&c).is_empty());
    c.close().unwrap();
    std::mem::forget(l);
}

/// Lease-level reads while a grant and a revocation wait for their flush: under `Immediate`
/// neither may be readable before its fsync (issue 12 item 2, the module docs of `lessor.rs`),
/// since a crash then undoes it.
/// Under `Immediate`, a grant is not alive to anyone before its flush is durable: not listed, no
/// `time_to_live`, no `renew`, and no second grant of its id.
#[test]
fn immediate_a_grant_is_not_alive_before_its_fsync() {
    let disk = GateDisk::default();
    let l = open_on(disk.clone(), Durability::Immediate);
    let kept = l.grant(secs(60)).unwrap().id;
    let before = l.leases().unwrap();

    let _opener = Opener(disk.clone()); // dropped before `l`
    disk.arm();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || l.put("/a", "new").unwrap())
    };
    assert!(disk.wait_entered(1, Duration::from_secs(10)));
    let granter = {
        let l = l.clone();
        std::thread::spawn(move || l.grant_with_id(id(77), secs(60)).unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!granter.is_finished());
    let mut wrong = Vec::new();
    if l.leases().unwrap() != before {
        wrong.push(format!("leases() = {:?}, was {before:?}", l.leases()));
    }
    if let Ok(info) = l.time_to_live(id(77)) {
        wrong.push(format!("time_to_live(77) = {info:?} (grant not durable)"));
    }
    if let Ok(ttl) = l.renew(id(77)) {
        wrong.push(format!("renew(77) = {ttl:?} (grant not durable)"));
    }
    if let Ok(rev) = l.put_with_lease("/on77", "x", id(77)) {
        wrong.push(format!("put_with_lease(77) = {rev:?} (grant not durable)"));
    }
    assert!(l.time_to_live(kept).is_ok());
    disk.release();
    writer.join().unwrap();
    granter.join().unwrap();
    assert!(wrong.is_empty(), "before the fsync:\n{}", wrong.join("\n"));
    // Acknowledged now: alive, renewable, listed.
    assert!(l.renew(id(77)).is_ok());
    assert!(l.leases().unwrap().contains(&id(77)));
    l.close().unwrap();
}

/// Under `Immediate`, a revocation is not seen before its fsync: the lease stays listed,
/// renewable and with its keys to every reader until the flush that makes the revocation
/// durable; requests that would use it (a put with it, a second revocation) see it revoked.
#[test]
fn immediate_a_revocation_is_not_seen_before_its_fsync() {
    let disk = GateDisk::default();
    let l = open_on(disk.clone(), Durability::Immediate);
    let doomed = l.grant(secs(60)).unwrap().id;
    l.put_with_lease("/r", "v", doomed).unwrap();
    let before = l.leases().unwrap();

    let _opener = Opener(disk.clone()); // dropped before `l`
    disk.arm();
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || l.put("/a", "new").unwrap())
    };
    assert!(disk.wait_entered(1, Duration::from_secs(10)));
    let revoker = {
        let l = l.clone();
        std::thread::spawn(move || l.revoke(doomed).unwrap())
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!revoker.is_finished());
    let mut wrong = Vec::new();
    if l.leases().unwrap() != before {
        wrong.push(format!("leases() = {:?}, was {before:?}", l.leases()));
    }
    match l.time_to_live_with_keys(doomed) {
        Ok(info) if info.keys == [b"/r".to_vec()] => {}
        other => wrong.push(format!(
            "time_to_live(doomed) = {other:?} (revocation not durable), while get(/r) = {:?}",
            l.get("/r").unwrap()
        )),
    }
    if let Err(e) = l.renew(doomed) {
        wrong.push(format!("renew(doomed) = {e:?} (revocation not durable)"));
    }
    disk.release();
    writer.join().unwrap();
    revoker.join().unwrap();
    assert!(wrong.is_empty(), "before the fsync:\n{}", wrong.join("\n"));
    l.close().unwrap();
}
