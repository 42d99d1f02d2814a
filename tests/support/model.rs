//! The reference model of a lessor, and the interpreter that runs one sequence of operations
//! against a real lessor and the model at once, comparing them after every step.
//!
//! Shared by the property test (`tests/model.rs`, which generates `Op`s with proptest), the `ops`
//! fuzz target (`fuzz/fuzz_targets/ops.rs`, which decodes them from bytes with [`decode`]) and
//! the replay of that target's corpus on stable (`tests/fuzz_corpus.rs`). Every includer declares
//! `mod common;` (`tests/common/mod.rs`) at its root: the model runs on its in-memory disk.
//!
//! The model: maps and a clock, no concurrency, no storage. It predicts every call's result, the
//! leases, keys and revision, each remaining TTL, the lease events and the key events of a watch
//! on every key and of watches started from past revisions, what the keep-alive thread renews at
//! a clock advance, and what a close and reopen keep (under `RestartPolicy::Reset`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{self, MemDisk};
use lessor::{
    CmpOp, Compare, Error, KeyValue, LeaseEvent, LeaseId, Lessor, ManualClock, OpResponse,
    RangeOptions, Revision, Txn, Watch, WatchEvent,
};

/// Returns `Err(message)` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Returns `Err` naming both sides from the enclosing function unless `got == want`.
macro_rules! ensure_eq {
    ($got:expr, $want:expr) => {
        ensure_eq!($got, $want, "{}", stringify!($got))
    };
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!(
                "{}\n   lessor: {:?}\n    model: {:?}",
                format_args!($($fmt)+),
                got,
                want
            ));
        }
    }};
}

pub const KEYS: usize = 6;
pub const IDS: u64 = 12;

pub fn key(i: usize) -> Vec<u8> {
    format!("/k{i}").into_bytes()
}

/// One step: an API call, a clock advance, or a close and reopen. Lease ids are 1 to [`IDS`],
/// keys are `/k0` to `/k5` (indexes below [`KEYS`]), TTLs whole seconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
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
    /// when version(key) == v then put(key, value, lease) else delete(key), get(key)
    CasPut(usize, u64, u8, Option<u64>),
    /// A watch on every key from this many revisions back; drained at once.
    WatchFrom(u64),
    /// Starts a keep-alive (renewing every TTL/3 on the keep-alive thread).
    KeepAlive(u64),
    /// Cancels the keep-alive of a lease, if it has one.
    StopKeepAlive(u64),
}

/// The most operations [`decode`] reads from one input: keeps every fuzz input's run short.
pub const MAX_OPS: usize = 100;

/// Reads fuzzer bytes as a durability and a sequence of operations. The first byte picks the
/// durability (odd: `Batched`); then each operation is a tag byte, whose low four bits pick one
/// of the 16 operations, followed by its arguments, one byte each (two for a clock advance,
/// little-endian), reduced into the ranges the property test draws from. Bytes missing at the
/// end read as zero; at most [`MAX_OPS`] operations are read. Every input decodes.
pub fn decode(bytes: &[u8]) -> (bool, Vec<Op>) {
    let mut input = Input(bytes);
    let batched = input.byte() & 1 == 1;
    let mut ops = Vec::new();
    while !input.0.is_empty() && ops.len() < MAX_OPS {
        let op = match input.byte() & 0x0f {
            0 => Op::Grant(input.ttl()),
            1 => Op::GrantWithId(input.lease(), input.ttl()),
            2 => Op::Renew(input.lease()),
            3 => Op::Put(input.key(), input.byte(), input.maybe_lease()),
            4 => Op::Delete(input.key()),
            5 => Op::Attach(input.lease(), input.keys()),
            6 => Op::Detach(input.lease(), input.keys()),
            7 => Op::Revoke(input.lease()),
            8 => Op::TimeToLive(input.lease()),
            9 => Op::Advance(input.millis()),
            10 => Op::RevokeExpired,
            11 => Op::Reopen,
            12 => Op::CasPut(
                input.key(),
                u64::from(input.byte() % 3),
                input.byte(),
                input.maybe_lease(),
            ),
            13 => Op::WatchFrom(u64::from(input.byte() % 8)),
            14 => Op::KeepAlive(input.lease()),
            _ => Op::StopKeepAlive(input.lease()),
        };
        ops.push(op);
    }
    (batched, ops)
}

/// The inverse of [`decode`], for seeds: bytes that decode to `batched` and `ops` (each op
/// in the ranges of [`decode`]; at most [`MAX_OPS`] of them).
pub fn encode(batched: bool, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![u8::from(batched)];
    let lease = |id: u64| u8::try_from(id - 1).unwrap();
    let ttl = |t: u64| u8::try_from(t - 1).unwrap();
    let key = |k: usize| u8::try_from(k).unwrap();
    let maybe = |l: Option<u64>| l.map_or(0, |id| u8::try_from(id).unwrap());
    let keys = |out: &mut Vec<u8>, ks: &[usize]| {
        out.push(u8::try_from(ks.len()).unwrap());
        out.extend(ks.iter().map(|&k| key(k)));
    };
    for op in ops {
        match *op {
            Op::Grant(t) => out.extend([0, ttl(t)]),
            Op::GrantWithId(id, t) => out.extend([1, lease(id), ttl(t)]),
            Op::Renew(id) => out.extend([2, lease(id)]),
            Op::Put(k, v, l) => out.extend([3, key(k), v, maybe(l)]),
            Op::Delete(k) => out.extend([4, key(k)]),
            Op::Attach(id, ref ks) => {
                out.extend([5, lease(id)]);
                keys(&mut out, ks);
            }
            Op::Detach(id, ref ks) => {
                out.extend([6, lease(id)]);
                keys(&mut out, ks);
            }
            Op::Revoke(id) => out.extend([7, lease(id)]),
            Op::TimeToLive(id) => out.extend([8, lease(id)]),
            Op::Advance(ms) => {
                out.push(9);
                out.extend(u16::try_from(ms).unwrap().to_le_bytes());
            }
            Op::RevokeExpired => out.push(10),
            Op::Reopen => out.push(11),
            Op::CasPut(k, version, v, l) => {
                out.extend([12, key(k), u8::try_from(version).unwrap(), v, maybe(l)]);
            }
            Op::WatchFrom(back) => out.extend([13, u8::try_from(back).unwrap()]),
            Op::KeepAlive(id) => out.extend([14, lease(id)]),
            Op::StopKeepAlive(id) => out.extend([15, lease(id)]),
        }
    }
    out
}

/// What is left of a fuzz input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A TTL in whole seconds, 1 to 7.
    fn ttl(&mut self) -> u64 {
        1 + u64::from(self.byte() % 7)
    }

    /// A lease id, 1 to [`IDS`].
    fn lease(&mut self) -> u64 {
        1 + u64::from(self.byte()) % IDS
    }

    /// No lease (one value in `IDS + 1`), or a lease id.
    fn maybe_lease(&mut self) -> Option<u64> {
        match u64::from(self.byte()) % (IDS + 1) {
            0 => None,
            id => Some(id),
        }
    }

    fn key(&mut self) -> usize {
        usize::from(self.byte()) % KEYS
    }

    /// Zero to two keys, repeats allowed.
    fn keys(&mut self) -> Vec<usize> {
        let n = self.byte() % 3;
        (0..n).map(|_| self.key()).collect()
    }

    /// A clock advance of 0 to 9.999 s, in milliseconds: past the longest TTL at times.
    fn millis(&mut self) -> u64 {
        let lo = self.byte();
        let hi = self.byte();
        u64::from(u16::from_le_bytes([lo, hi]) % 10_000)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MKey {
    value: Vec<u8>,
    lease: Option<u64>,
    create: u64,
    modified: u64,
    version: u64,
}

impl From<KeyValue> for MKey {
    /// A key as the lessor read it, in the model's terms.
    fn from(kv: KeyValue) -> MKey {
        MKey {
            value: kv.value,
            lease: kv.lease.map(LeaseId::get),
            create: kv.create_revision.get(),
            modified: kv.mod_revision.get(),
            version: kv.version,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MLease {
    ttl: u64,
    deadline: u64,
}

/// The naive model: maps and a clock, no concurrency, no storage.
#[derive(Debug, Default)]
pub struct Model {
    now: u64,
    leases: BTreeMap<u64, MLease>,
    keys: BTreeMap<Vec<u8>, MKey>,
    revision: u64,
    max_id: u64,
    /// Lease events published since the last check, rendered by `show_lease_event`.
    lease_events: Vec<String>,
    /// Every key event since the database was last opened, rendered by `show_watch_event`.
    key_events: Vec<(u64, String)>,
    /// Key events already compared with the watch on every key.
    key_events_seen: usize,
    /// The revision when the database was last opened: the watch history starts after it.
    opened_at: u64,
    /// Leases with a running keep-alive, and when it renews next.
    kept: BTreeMap<u64, u64>,
    /// Leases the keep-alive thread renewed at the last clock advance.
    renewed: Vec<u64>,
}

/// What a call returned, reduced to what the model can predict.
#[derive(Debug, PartialEq)]
pub enum Out {
    Ok,
    Id(u64),
    Ttl(u64),
    Rev(u64),
    Bool(bool),
    Ids(Vec<u64>),
    Info(u64, u64, Vec<Vec<u8>>),
    Txn(bool, u64, Vec<String>),
    Watched(Vec<String>),
    Compacted,
    LeaseNotFound,
    LeaseExists,
    KeyNotFound,
    KeyNotAttached,
    Other(String),
}

pub fn err(e: Error) -> Out {
    match e {
        Error::LeaseNotFound(_) => Out::LeaseNotFound,
        Error::LeaseExists(_) => Out::LeaseExists,
        Error::KeyNotFound(_) => Out::KeyNotFound,
        Error::KeyNotAttached { .. } => Out::KeyNotAttached,
        Error::Compacted { .. } => Out::Compacted,
        other => Out::Other(other.to_string()),
    }
}

pub fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Model {
    fn alive(&self, id: u64) -> bool {
        self.leases.get(&id).is_some_and(|l| l.deadline > self.now)
    }

    /// Deletes a lease and its keys; advances the revision if any key went.
    fn remove_lease(&mut self, id: u64, expired: bool) {
        self.leases.remove(&id);
        self.kept.remove(&id);
        let gone: Vec<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(_, k)| k.lease == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        if !gone.is_empty() {
            self.revision += 1;
        }
        let cause = if expired { "Expired" } else { "Revoked" };
        for key in &gone {
            self.keys.remove(key);
            self.key_event(format!(
                "del {}@{} Lease{cause}({id})",
                show(key),
                self.revision
            ));
        }
        let keys: Vec<String> = gone.iter().map(|k| show(k)).collect();
        self.lease_events
            .push(format!("revoked {id} {keys:?}@{} {cause}", self.revision));
    }

    /// The database was reopened: the watch history starts again.
    pub fn new_history(&mut self) {
        self.key_events.clear();
        self.key_events_seen = 0;
    }

    fn key_event(&mut self, event: String) {
        self.key_events.push((self.revision, event));
    }

    fn put(&mut self, k: usize, v: u8, lease: Option<u64>, rev: u64) {
        let old = self.keys.get(&key(k)).cloned();
        let kv = MKey {
            value: vec![v],
            lease,
            create: old.as_ref().map_or(rev, |o| o.create),
            modified: rev,
            version: old.map_or(1, |o| o.version + 1),
        };
        self.key_event(show_put(&key(k), &kv));
        self.keys.insert(key(k), kv);
    }

    fn delete(&mut self, k: usize, rev: u64) -> bool {
        let existed = self.keys.remove(&key(k)).is_some();
        if existed {
            self.key_event(format!("del {}@{rev} Deleted", show(&key(k))));
        }
        existed
    }

    fn grant(&mut self, id: u64, ttl: u64) -> Out {
        if self.leases.contains_key(&id) {
            if self.alive(id) {
                return Out::LeaseExists;
            }
            self.remove_lease(id, true); // dead but not yet revoked
        }
        self.leases.insert(
            id,
            MLease {
                ttl,
                deadline: self.now + ttl,
            },
        );
        self.max_id = self.max_id.max(id);
        self.lease_events
            .push(format!("granted {id} {ttl}@{}", self.revision));
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
            self.remove_lease(id, true);
        }
        Out::Ids(due.into_iter().map(|(_, id)| id).collect())
    }

    pub fn apply(&mut self, op: &Op) -> Out {
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
                self.put(k, v, lease, rev);
                Out::Rev(rev)
            }
            Op::Delete(k) => {
                let existed = self.keys.contains_key(&key(k));
                if existed {
                    self.revision += 1;
                }
                Out::Bool(self.delete(k, self.revision))
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
                self.remove_lease(id, false);
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
                // The keep-alive thread wakes at the jump and renews what is due and alive;
                // a lease whose deadline the jump passed is lost, keep-alive or not.
                self.renewed.clear();
                let now = self.now;
                let kept: Vec<(u64, u64)> = self.kept.iter().map(|(&i, &d)| (i, d)).collect();
                for (id, due) in kept {
                    if !self.alive(id) {
                        self.kept.remove(&id);
                    } else if now >= due {
                        let l = self.leases.get_mut(&id).unwrap();
                        l.deadline = now + l.ttl;
                        self.kept.insert(id, now + l.ttl / 3);
                        self.renewed.push(id);
                    }
                }
                Out::Ok
            }
            Op::KeepAlive(id) => {
                if !self.alive(id) {
                    return Out::LeaseNotFound;
                }
                let now = self.now;
                let l = self.leases.get_mut(&id).unwrap();
                l.deadline = now + l.ttl; // the first renewal, before keep_alive returns
                self.kept.insert(id, now + l.ttl / 3);
                Out::Ok
            }
            Op::StopKeepAlive(id) => {
                self.kept.remove(&id);
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
                self.opened_at = self.revision;
                self.kept.clear(); // closing ends every keep-alive
                Out::Ok
            }
            Op::CasPut(k, version, v, lease) => {
                let current = self.keys.get(&key(k)).map_or(0, |kv| kv.version);
                if current == version {
                    if let Some(id) = lease
                        && !self.alive(id)
                    {
                        return Out::LeaseNotFound;
                    }
                    self.revision += 1;
                    let rev = self.revision;
                    self.put(k, v, lease, rev);
                    Out::Txn(true, rev, vec!["put".into()])
                } else {
                    let existed = self.keys.contains_key(&key(k));
                    if existed {
                        self.revision += 1;
                    }
                    self.delete(k, self.revision);
                    Out::Txn(
                        false,
                        self.revision,
                        vec![format!("deleted {existed}"), "get none".into()],
                    )
                }
            }
            Op::WatchFrom(back) => {
                let from = (self.revision + 1).saturating_sub(back).max(1);
                if from <= self.opened_at {
                    return Out::Compacted;
                }
                Out::Watched(
                    self.key_events
                        .iter()
                        .filter(|(rev, _)| *rev >= from)
                        .map(|(_, e)| e.clone())
                        .collect(),
                )
            }
        }
    }
}

/// The lessor under test, with a subscriber and a watch on every key, both renewed at reopen.
pub struct Sut {
    pub l: Lessor,
    pub events: crossbeam_channel::Receiver<LeaseEvent>,
    pub watch: Watch,
    pub keep_alives: BTreeMap<u64, lessor::KeepAlive>,
}

impl Sut {
    pub fn new(l: Lessor) -> Sut {
        Sut {
            events: l.subscribe().unwrap().receiver().clone(),
            watch: l.watch("").unwrap(),
            keep_alives: BTreeMap::new(),
            l,
        }
    }
}

pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

pub fn show_put(key: &[u8], kv: &MKey) -> String {
    format!(
        "put {}={:?} lease {:?} rev {}..{} v{}",
        show(key),
        kv.value,
        kv.lease,
        kv.create,
        kv.modified,
        kv.version
    )
}

pub fn show_watch_event(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Put(kv) => show_put(
            &kv.key,
            &MKey {
                value: kv.value.clone(),
                lease: kv.lease.map(LeaseId::get),
                create: kv.create_revision.get(),
                modified: kv.mod_revision.get(),
                version: kv.version,
            },
        ),
        WatchEvent::Delete {
            key,
            revision,
            cause,
        } => format!("del {}@{revision} {cause:?}", show(key))
            .replace("LeaseId(", "")
            .replace("))", ")"),
        other => format!("{other:?}"),
    }
}

pub fn show_lease_event(e: &LeaseEvent) -> String {
    match e {
        LeaseEvent::Granted { id, ttl, revision } => {
            format!("granted {id} {}@{revision}", nanos(*ttl))
        }
        LeaseEvent::Revoked {
            id,
            keys,
            revision,
            cause,
        } => {
            let keys: Vec<String> = keys.iter().map(|k| show(k)).collect();
            format!("revoked {id} {keys:?}@{revision} {cause:?}")
        }
        other => format!("{other:?}"),
    }
}

/// Opens the model's disk, with group-committed (`Immediate`) or batched durability.
pub fn open(disk: &MemDisk, clock: &ManualClock, batched: bool) -> Lessor {
    let durability = if batched {
        lessor::Durability::Batched {
            max_delay: Duration::from_secs(3600),
        }
    } else {
        lessor::Durability::Immediate
    };
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .durability(durability)
        .open_with_backend(disk.clone())
        .unwrap()
}

pub fn run(sut: &mut Sut, disk: &MemDisk, clock: &ManualClock, batched: bool, op: &Op) -> Out {
    match *op {
        Op::KeepAlive(id) => {
            sut.keep_alives.remove(&id); // one keep-alive a lease, as the model has it
            return match sut.l.keep_alive(LeaseId::new(id).unwrap()) {
                Ok(k) => {
                    sut.keep_alives.insert(id, k);
                    Out::Ok
                }
                Err(e) => err(e),
            };
        }
        Op::StopKeepAlive(id) => {
            sut.keep_alives.remove(&id);
            return Out::Ok;
        }
        _ => {}
    }
    let l = &mut sut.l;
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
        Op::TimeToLive(id) => l
            .time_to_live_with_keys(lid(id))
            .map_or_else(err, |i| Out::Info(nanos(i.ttl), nanos(i.remaining), i.keys)),
        Op::Advance(ms) => {
            clock.advance(Duration::from_millis(ms));
            Out::Ok
        }
        Op::KeepAlive(_) | Op::StopKeepAlive(_) => unreachable!("handled above"),
        Op::RevokeExpired => l.revoke_expired().map_or_else(err, |ids| {
            Out::Ids(ids.into_iter().map(LeaseId::get).collect())
        }),
        Op::Reopen => {
            l.close().unwrap();
            *l = open(disk, clock, batched);
            Out::Ok
        }
        Op::CasPut(k, version, v, lease) => {
            let put = match lease {
                Some(id) => lessor::Op::put_with_lease(key(k), [v], lid(id)),
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
        Op::WatchFrom(back) => {
            let now = l.revision().unwrap().get();
            let from = (now + 1).saturating_sub(back).max(1);
            l.watch_from("", Revision::new(from)).map_or_else(err, |w| {
                Out::Watched(
                    std::iter::from_fn(|| w.try_recv().ok())
                        .map(|e| show_watch_event(&e))
                        .collect(),
                )
            })
        }
    }
}

/// Waits (in real time, boundedly) for the keep-alive thread to renew what the model says it
/// renewed at the last clock advance.
pub fn wait_for_keep_alives(l: &Lessor, m: &Model) -> Result<(), String> {
    for &id in &m.renewed {
        let want = m.leases[&id].ttl;
        let renewed = common::wait_until(Duration::from_secs(10), || {
            l.time_to_live(LeaseId::new(id).unwrap())
                .is_ok_and(|i| nanos(i.remaining) == want)
        });
        ensure!(renewed, "the keep-alive of lease {} did not renew it", id);
    }
    Ok(())
}

/// The events published since the last check must be exactly the model's.
pub fn compare_events(sut: &Sut, m: &mut Model) -> Result<(), String> {
    let got: Vec<String> = sut
        .events
        .try_iter()
        .map(|e| show_lease_event(&e))
        .collect();
    ensure_eq!(&got, &m.lease_events);
    m.lease_events.clear();
    let got: Vec<String> = std::iter::from_fn(|| sut.watch.try_recv().ok())
        .map(|e| show_watch_event(&e))
        .collect();
    let want: Vec<String> = m.key_events[m.key_events_seen..]
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    ensure_eq!(got, want);
    m.key_events_seen = m.key_events.len();
    Ok(())
}

/// Everything observable must match the model.
pub fn compare(l: &Lessor, m: &Model) -> Result<(), String> {
    let alive: Vec<u64> = m.leases.keys().copied().filter(|&id| m.alive(id)).collect();
    ensure_eq!(
        l.leases()
            .unwrap()
            .into_iter()
            .map(LeaseId::get)
            .collect::<Vec<_>>(),
        alive.clone()
    );
    ensure_eq!(l.revision().unwrap().get(), m.revision);
    let kvs = l.range("").unwrap();
    ensure_eq!(kvs.len(), m.keys.len());
    for kv in kvs {
        let want = &m.keys[&kv.key];
        let got = MKey::from(kv);
        ensure_eq!(&got, want);
    }
    for id in alive {
        let info = l.time_to_live(LeaseId::new(id).unwrap()).unwrap();
        ensure_eq!(nanos(info.remaining), m.leases[&id].deadline - m.now);
    }
    compare_pages(l, m)
}

/// Pages of a few ranges (one of them reversed, so empty), in both orders, with and without
/// values, against the model's keys.
fn compare_pages(l: &Lessor, m: &Model) -> Result<(), String> {
    let bounds: [(&[u8], Option<&[u8]>); 4] = [
        (b"/k", None),
        (b"/k1", Some(b"/k4")),
        (b"/k3", Some(b"/k3\0")),
        (b"/k4", Some(b"/k2")),
    ];
    for (start, end) in bounds {
        let mut want: Vec<(&Vec<u8>, &MKey)> = m
            .keys
            .iter()
            .filter(|(k, _)| k.as_slice() >= start && end.is_none_or(|e| k.as_slice() < e))
            .collect();
        for descending in [false, true] {
            if descending {
                want.reverse();
            }
            for limit in [None, Some(0), Some(2)] {
                let keys_only = descending == (limit == Some(2));
                let mut options = RangeOptions::new()
                    .descending(descending)
                    .keys_only(keys_only);
                if let Some(n) = limit {
                    options = options.limit(n);
                }
                let page = l.range_page(start, end, options).unwrap();
                let shown = limit.unwrap_or(usize::MAX).min(want.len());
                let what = format!("range_page({start:?}, {end:?}, {options:?})");
                ensure_eq!(page.count, want.len() as u64, "{what}: count");
                ensure_eq!(page.more, shown < want.len(), "{what}: more");
                ensure_eq!(page.revision.get(), m.revision, "{what}: revision");
                ensure_eq!(page.kvs.len(), shown, "{what}: keys returned");
                for (kv, (key, mkey)) in page.kvs.into_iter().zip(&want) {
                    ensure_eq!(&kv.key, *key, "{what}: key");
                    let got = MKey::from(kv);
                    let want = MKey {
                        value: if keys_only {
                            Vec::new()
                        } else {
                            mkey.value.clone()
                        },
                        ..(*mkey).clone()
                    };
                    ensure_eq!(got, want, "{what}: key {}", key.escape_ascii());
                }
            }
        }
    }
    Ok(())
}

/// Runs `ops` against a fresh lessor and the model, checking everything after every step.
pub fn check(ops: &[Op], batched: bool) -> Result<(), String> {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let mut sut = Sut::new(open(&disk, &clock, batched));
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        step_and_compare(&mut sut, &mut m, &disk, &clock, batched, op)
            .map_err(|e| format!("step {step}: {op:?}: {e}"))?;
    }
    sut.l
        .verify()
        .map_err(|e| format!("verify after the last step: {e}"))
}

/// Runs one operation on both sides and compares everything observable.
fn step_and_compare(
    sut: &mut Sut,
    m: &mut Model,
    disk: &MemDisk,
    clock: &ManualClock,
    batched: bool,
    op: &Op,
) -> Result<(), String> {
    let want = m.apply(op);
    let got = run(sut, disk, clock, batched, op);
    ensure_eq!(got, want, "the call's result");
    if matches!(op, Op::Advance(_)) {
        wait_for_keep_alives(&sut.l, m)?;
    }
    compare_events(sut, m)?;
    if matches!(op, Op::Reopen) {
        // The old subscriptions ended with the close; follow the new database, whose
        // watch history starts afresh.
        ensure!(
            sut.events.try_recv().is_err() && sut.watch.ended().is_some(),
            "the subscriptions of the closed lessor did not end"
        );
        let l = sut.l.clone();
        *sut = Sut::new(l);
        m.new_history();
    }
    compare(&sut.l, m)
}

/// Decodes fuzzer bytes and runs them with [`check`]: the `ops` fuzz target's whole body.
pub fn check_bytes(bytes: &[u8]) -> Result<(), String> {
    let (batched, ops) = decode(bytes);
    check(&ops, batched)
}
