//! Property test: random sequences of operations, checked after every step against a naive
//! model of what the lessor should hold (leases, deadlines, keys, revisions, expiry order).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::MemDisk;
use lessor::{Error, LeaseId, Lessor, ManualClock};
use proptest::prelude::*;

const KEYS: usize = 6;
const IDS: u64 = 12;

fn key(i: usize) -> Vec<u8> {
    format!("/k{i}").into_bytes()
}

#[derive(Debug, Clone)]
enum Op {
    Grant(u64),
    GrantWithId(u64, u64),
    Renew(u64),
    Put(usize, u8, Option<u64>),
    Delete(usize),
    Attach(u64, Vec<usize>),
    Detach(u64, Vec<usize>),
    Revoke(u64),
    TimeToLive(u64),
    Advance(u64),
    RevokeExpired,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let ttl = 1..8u64; // seconds
    let lease = 1..=IDS;
    let keys = prop::collection::vec(0..KEYS, 0..3);
    prop_oneof![
        3 => ttl.clone().prop_map(Op::Grant),
        1 => (lease.clone(), ttl).prop_map(|(i, t)| Op::GrantWithId(i, t)),
        3 => lease.clone().prop_map(Op::Renew),
        4 => (0..KEYS, any::<u8>(), prop::option::of(lease.clone()))
            .prop_map(|(k, v, l)| Op::Put(k, v, l)),
        1 => (0..KEYS).prop_map(Op::Delete),
        2 => (lease.clone(), keys.clone()).prop_map(|(l, k)| Op::Attach(l, k)),
        1 => (lease.clone(), keys).prop_map(|(l, k)| Op::Detach(l, k)),
        2 => lease.clone().prop_map(Op::Revoke),
        1 => lease.prop_map(Op::TimeToLive),
        3 => (0..4000u64).prop_map(Op::Advance), // milliseconds
        2 => Just(Op::RevokeExpired),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct MKey {
    value: Vec<u8>,
    lease: Option<u64>,
    create: u64,
    modified: u64,
    version: u64,
}

#[derive(Debug, Clone, Copy)]
struct MLease {
    ttl: u64,
    deadline: u64,
}

/// The naive model: maps and a clock, no concurrency, no storage.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    leases: BTreeMap<u64, MLease>,
    keys: BTreeMap<Vec<u8>, MKey>,
    revision: u64,
    max_id: u64,
}

/// What a call returned, reduced to what the model can predict.
#[derive(Debug, PartialEq)]
enum Out {
    Ok,
    Id(u64),
    Ttl(u64),
    Rev(u64),
    Bool(bool),
    Ids(Vec<u64>),
    Info(u64, u64, Vec<Vec<u8>>),
    LeaseNotFound,
    LeaseExists,
    KeyNotFound,
    KeyNotAttached,
    Other(String),
}

fn err(e: Error) -> Out {
    match e {
        Error::LeaseNotFound(_) => Out::LeaseNotFound,
        Error::LeaseExists(_) => Out::LeaseExists,
        Error::KeyNotFound(_) => Out::KeyNotFound,
        Error::KeyNotAttached { .. } => Out::KeyNotAttached,
        other => Out::Other(other.to_string()),
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Model {
    fn alive(&self, id: u64) -> bool {
        self.leases.get(&id).is_some_and(|l| l.deadline > self.now)
    }

    /// Deletes a lease and its keys; advances the revision if any key went.
    fn remove_lease(&mut self, id: u64) {
        self.leases.remove(&id);
        let before = self.keys.len();
        self.keys.retain(|_, k| k.lease != Some(id));
        if self.keys.len() != before {
            self.revision += 1;
        }
    }

    fn grant(&mut self, id: u64, ttl: u64) -> Out {
        if self.leases.contains_key(&id) {
            if self.alive(id) {
                return Out::LeaseExists;
            }
            self.remove_lease(id); // dead but not yet revoked
        }
        self.leases.insert(
            id,
            MLease {
                ttl,
                deadline: self.now + ttl,
            },
        );
        self.max_id = self.max_id.max(id);
        Out::Id(id)
    }

    fn revoke_expired(&mut self) -> Out {
        let mut due: Vec<(u64, u64)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= self.now)
            .map(|(&id, l)| (l.deadline, id))
            .collect();
        due.sort();
        for &(_, id) in &due {
            self.remove_lease(id);
        }
        Out::Ids(due.into_iter().map(|(_, id)| id).collect())
    }

    fn apply(&mut self, op: &Op) -> Out {
        match *op {
            Op::Grant(t) => self.grant(self.max_id + 1, t * 1_000_000_000),
            Op::GrantWithId(id, t) => self.grant(id, t * 1_000_000_000),
            Op::Renew(id) => {
                if !self.alive(id) {
                    return Out::LeaseNotFound;
                }
                let now = self.now;
                let l = self.leases.get_mut(&id).unwrap();
                l.deadline = now + l.ttl;
                Out::Ttl(l.ttl)
            }
            Op::Put(k, v, lease) => {
                if let Some(id) = lease
                    && !self.alive(id)
                {
                    return Out::LeaseNotFound;
                }
                self.revision += 1;
                let rev = self.revision;
                let old = self.keys.get(&key(k)).cloned();
                self.keys.insert(
                    key(k),
                    MKey {
                        value: vec![v],
                        lease,
                        create: old.as_ref().map_or(rev, |o| o.create),
                        modified: rev,
                        version: old.map_or(1, |o| o.version + 1),
                    },
                );
                Out::Rev(rev)
            }
            Op::Delete(k) => {
                let existed = self.keys.remove(&key(k)).is_some();
                if existed {
                    self.revision += 1;
                }
                Out::Bool(existed)
            }
            Op::Attach(id, ref ks) => {
                if !self.alive(id) {
                    return Out::LeaseNotFound;
                }
                if ks.iter().any(|&k| !self.keys.contains_key(&key(k))) {
                    return Out::KeyNotFound;
                }
                for &k in ks {
                    self.keys.get_mut(&key(k)).unwrap().lease = Some(id);
                }
                Out::Ok
            }
            Op::Detach(id, ref ks) => {
                if !self.alive(id) {
                    return Out::LeaseNotFound;
                }
                for &k in ks {
                    match self.keys.get(&key(k)) {
                        None => return Out::KeyNotFound,
                        Some(kv) if kv.lease != Some(id) => return Out::KeyNotAttached,
                        Some(_) => {}
                    }
                }
                for &k in ks {
                    self.keys.get_mut(&key(k)).unwrap().lease = None;
                }
                Out::Ok
            }
            Op::Revoke(id) => {
                if !self.leases.contains_key(&id) {
                    return Out::LeaseNotFound;
                }
                self.remove_lease(id);
                Out::Rev(self.revision)
            }
            Op::TimeToLive(id) => {
                if !self.alive(id) {
                    return Out::LeaseNotFound;
                }
                let l = self.leases[&id];
                let keys = self
                    .keys
                    .iter()
                    .filter(|(_, kv)| kv.lease == Some(id))
                    .map(|(k, _)| k.clone())
                    .collect();
                Out::Info(l.ttl, l.deadline - self.now, keys)
            }
            Op::Advance(ms) => {
                self.now += ms * 1_000_000;
                Out::Ok
            }
            Op::RevokeExpired => self.revoke_expired(),
            Op::Reopen => {
                // close() revokes what has expired; opening restarts every TTL
                self.revoke_expired();
                let now = self.now;
                for l in self.leases.values_mut() {
                    l.deadline = now + l.ttl;
                }
                Out::Ok
            }
        }
    }
}

fn run(l: &mut Lessor, disk: &MemDisk, clock: &ManualClock, op: &Op) -> Out {
    let lid = |n: u64| LeaseId::new(n).unwrap();
    let keys = |ks: &[usize]| ks.iter().map(|&k| key(k)).collect::<Vec<_>>();
    match *op {
        Op::Grant(t) => l
            .grant(Duration::from_secs(t))
            .map_or_else(err, |g| Out::Id(g.id.get())),
        Op::GrantWithId(id, t) => l
            .grant_with_id(lid(id), Duration::from_secs(t))
            .map_or_else(err, |g| Out::Id(g.id.get())),
        Op::Renew(id) => l.renew(lid(id)).map_or_else(err, |t| Out::Ttl(nanos(t))),
        Op::Put(k, v, lease) => {
            let r = match lease {
                Some(id) => l.put_with_lease(key(k), [v], lid(id)),
                None => l.put(key(k), [v]),
            };
            r.map_or_else(err, |r| Out::Rev(r.get()))
        }
        Op::Delete(k) => l.delete(key(k)).map_or_else(err, Out::Bool),
        Op::Attach(id, ref ks) => l.attach(lid(id), keys(ks)).map_or_else(err, |()| Out::Ok),
        Op::Detach(id, ref ks) => l.detach(lid(id), keys(ks)).map_or_else(err, |()| Out::Ok),
        Op::Revoke(id) => l.revoke(lid(id)).map_or_else(err, |r| Out::Rev(r.get())),
        Op::TimeToLive(id) => l.time_to_live(lid(id)).map_or_else(err, |i| {
            Out::Info(nanos(i.granted_ttl), nanos(i.remaining), i.keys)
        }),
        Op::Advance(ms) => {
            clock.advance(Duration::from_millis(ms));
            Out::Ok
        }
        Op::RevokeExpired => l.revoke_expired().map_or_else(err, |ids| {
            Out::Ids(ids.into_iter().map(LeaseId::get).collect())
        }),
        Op::Reopen => {
            l.close().unwrap();
            *l = disk.open(clock).unwrap();
            Out::Ok
        }
    }
}

/// Everything observable must match the model.
fn compare(l: &Lessor, m: &Model) -> Result<(), TestCaseError> {
    let alive: Vec<u64> = m.leases.keys().copied().filter(|&id| m.alive(id)).collect();
    prop_assert_eq!(
        l.leases().into_iter().map(LeaseId::get).collect::<Vec<_>>(),
        alive.clone()
    );
    prop_assert_eq!(l.revision().unwrap().get(), m.revision);
    let kvs = l.range("").unwrap();
    prop_assert_eq!(kvs.len(), m.keys.len());
    for kv in kvs {
        let want = &m.keys[&kv.key];
        let got = MKey {
            value: kv.value,
            lease: kv.lease.map(LeaseId::get),
            create: kv.create_revision.get(),
            modified: kv.mod_revision.get(),
            version: kv.version,
        };
        prop_assert_eq!(&got, want);
    }
    for id in alive {
        let info = l.time_to_live(LeaseId::new(id).unwrap()).unwrap();
        prop_assert_eq!(nanos(info.remaining), m.leases[&id].deadline - m.now);
    }
    Ok(())
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs N (the default config reads it).
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn lessor_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let disk = MemDisk::new();
        let clock = ManualClock::new();
        let mut l = disk.open(&clock).unwrap();
        let mut m = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let want = m.apply(op);
            let got = run(&mut l, &disk, &clock, op);
            prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            compare(&l, &m)?;
        }
        l.verify().unwrap();
    }
}

/// The same model on a real file, fewer cases: a commit here costs an fsync.
#[test]
fn lessor_matches_the_model_on_a_real_file() {
    let dir = common::test_dir();
    let clock = ManualClock::new();
    let open = |clock: &ManualClock| common::manual_at(&dir.path, clock);
    let mut l = open(&clock);
    let mut m = Model::default();
    let ops = [
        Op::Grant(5),
        Op::Put(0, 1, Some(1)),
        Op::Grant(2),
        Op::Put(1, 2, Some(2)),
        Op::Put(2, 3, None),
        Op::Attach(2, vec![2]),
        Op::Advance(1500),
        Op::Renew(2),
        Op::Reopen,
        Op::Advance(2500),
        Op::RevokeExpired,
        Op::Advance(3000),
        Op::Reopen,
        Op::Detach(2, vec![1]),
        Op::Advance(5000),
        Op::RevokeExpired,
        Op::Reopen,
    ];
    for op in &ops {
        let want = m.apply(op);
        let got = match op {
            Op::Reopen => {
                l.close().unwrap();
                l = open(&clock);
                Out::Ok
            }
            other => run(&mut l, &MemDisk::new(), &clock, other),
        };
        assert_eq!(got, want, "{op:?}");
        compare(&l, &m).unwrap();
    }
    l.verify().unwrap();
}
