//! Damaging a database file while a lessor has it open, and opening a damaged file with redb's
//! integrity check off: the body of the `open_damaged` fuzz target
//! (`fuzz/fuzz_targets/open_damaged.rs`) and of its replay on stable (`tests/fuzz_corpus.rs`).
//!
//! An input is a flags byte (the first open's flags, as [`Op::Reopen`]'s; bit 3 also sets
//! `Builder::two_phase_commit` for every open of the run), then operations (a tag byte and its argument bytes; missing bytes
//! read as zero, so every input decodes, see [`decode`]). A lessor is opened on a fresh
//! in-memory disk ([`Image`]), and the operations run against it and against a small model of
//! what was written: puts with and without a lease, grants, deletes, revokes, clock advances,
//! expiry, reads, `verify`, close and reopen (with redb's integrity check on or off, a page
//! cache or none, closed or just dropped), and *damage*: bytes of the file flipped or
//! overwritten under the open lessor, which then goes on using it.
//!
//! The property: every call gives an [`Error`] of a storage kind (`Storage`, `Corrupted`,
//! `Poisoned`...) or the answer the model gives; a key, lease or value that differs from what
//! was written, while the call says `Ok`, is a finding ("silently different"). A panic escaping
//! a call is a finding too (the library contains redb's panics: `src/contain.rs`); a hang is
//! one for the fuzzer's timeout. A write that fails makes what it touched unknown to the model
//! (it may or may not have reached the file): unknown keys and leases are not compared.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use lessor::{Error, KeyValue, LeaseId, Lessor, ManualClock};

use super::open::Image;

/// One step of an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Key number (mod [`KEYS`]), value byte, value length (mod 200).
    Put(u8, u8, u8),
    /// Key, lease (index into the leases granted so far), value byte, value length.
    PutWithLease(u8, u8, u8, u8),
    /// TTL in seconds (mod 20, plus one).
    Grant(u8),
    Delete(u8),
    /// Lease index.
    Revoke(u8),
    /// Hundreds of milliseconds.
    Advance(u8),
    RevokeExpired,
    Get(u8),
    Range,
    Leases,
    Verify,
    /// Flags: bit 0 integrity check on, bit 1 no page cache, bit 2 drop without `close`; bit 3
    /// is the first flags byte's (two-phase commit), whatever the operation says.
    Reopen(u8),
    /// Where (a fraction of the file's length, /65536) and the bits to flip (zero flips 0x01).
    Flip(u16, u8),
    /// Where, how many bytes (mod 64, plus one) and the byte written over them.
    Overwrite(u16, u8, u8),
}

/// How many distinct keys the operations use.
pub const KEYS: u8 = 12;
const TAGS: u8 = 14;

/// The flags byte and the operations of an input (at most 64 operations).
pub fn decode(bytes: &[u8]) -> (u8, Vec<Op>) {
    let mut rest = bytes;
    let mut b = move || match rest.split_first() {
        Some((&first, tail)) => {
            rest = tail;
            Some(first)
        }
        None => None,
    };
    let flags = b().unwrap_or(0);
    let mut ops = Vec::new();
    while ops.len() < 64 {
        let Some(tag) = b() else { break };
        let mut a = || b().unwrap_or(0);
        let op = match tag % TAGS {
            0 => Op::Put(a(), a(), a()),
            1 => Op::PutWithLease(a(), a(), a(), a()),
            2 => Op::Grant(a()),
            3 => Op::Delete(a()),
            4 => Op::Revoke(a()),
            5 => Op::Advance(a()),
            6 => Op::RevokeExpired,
            7 => Op::Get(a()),
            8 => Op::Range,
            9 => Op::Leases,
            10 => Op::Verify,
            11 => Op::Reopen(a()),
            12 => Op::Flip(u16::from_le_bytes([a(), a()]), a()),
            _ => Op::Overwrite(u16::from_le_bytes([a(), a()]), a(), a()),
        };
        ops.push(op);
    }
    (flags, ops)
}

/// The inverse of [`decode`] (for seeds).
pub fn encode(flags: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![flags];
    for op in ops {
        match *op {
            Op::Put(k, v, n) => out.extend([0, k, v, n]),
            Op::PutWithLease(k, l, v, n) => out.extend([1, k, l, v, n]),
            Op::Grant(t) => out.extend([2, t]),
            Op::Delete(k) => out.extend([3, k]),
            Op::Revoke(l) => out.extend([4, l]),
            Op::Advance(t) => out.extend([5, t]),
            Op::RevokeExpired => out.push(6),
            Op::Get(k) => out.extend([7, k]),
            Op::Range => out.push(8),
            Op::Leases => out.push(9),
            Op::Verify => out.push(10),
            Op::Reopen(f) => out.extend([11, f]),
            Op::Flip(at, x) => {
                out.push(12);
                out.extend(at.to_le_bytes());
                out.push(x);
            }
            Op::Overwrite(at, n, x) => {
                out.push(13);
                out.extend(at.to_le_bytes());
                out.extend([n, x]);
            }
        }
    }
    out
}

fn key(k: u8) -> Vec<u8> {
    format!("/k/{}", k % KEYS).into_bytes()
}

fn value(v: u8, n: u8) -> Vec<u8> {
    // Not all one byte: a flip inside a value changes what it reads.
    (0..usize::from(n % 200))
        .map(|i| v.wrapping_add(i as u8))
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    value: Vec<u8>,
    lease: Option<u64>,
    mod_revision: u64,
}

#[derive(Clone, Debug)]
struct LeaseM {
    ttl: Duration,
    deadline: Duration,
}

/// What was written, as far as it is known.
#[derive(Default)]
pub struct Model {
    now: Duration,
    keys: BTreeMap<Vec<u8>, Entry>,
    unknown_keys: BTreeSet<Vec<u8>>,
    leases: BTreeMap<u64, LeaseM>,
    unknown_leases: BTreeSet<u64>,
    /// Every lease id granted, in order, for [`Op::PutWithLease`] and [`Op::Revoke`].
    granted: Vec<u64>,
    /// Whether a grant failed: it may have reached the file, and its lease come back at a
    /// reopen, under an id the model never saw.
    failed_grant: bool,
}

impl Model {
    fn forget_key(&mut self, k: &[u8]) {
        self.keys.remove(k);
        self.unknown_keys.insert(k.to_vec());
    }

    fn forget_lease(&mut self, id: u64) {
        self.leases.remove(&id);
        self.unknown_leases.insert(id);
        let attached: Vec<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in attached {
            self.forget_key(&k);
        }
    }

    fn set_key(&mut self, k: Vec<u8>, e: Entry) {
        self.unknown_keys.remove(&k);
        self.keys.insert(k, e);
    }

    fn remove_lease(&mut self, id: u64) {
        self.leases.remove(&id);
        self.unknown_leases.remove(&id);
        self.keys.retain(|_, e| e.lease != Some(id));
    }

    fn lease(&self, idx: u8) -> Option<u64> {
        if self.granted.is_empty() {
            None
        } else {
            Some(self.granted[usize::from(idx) % self.granted.len()])
        }
    }

    /// A key read back (`got`, from a call that succeeded) against what was written.
    fn check_key(&self, k: &[u8], got: Option<&KeyValue>) -> Result<(), String> {
        if self.unknown_keys.contains(k) {
            return Ok(());
        }
        let want = self.keys.get(k);
        let same = match (want, got) {
            (None, None) => true,
            (Some(w), Some(g)) => {
                w.value == g.value
                    && w.lease == g.lease.map(LeaseId::get)
                    && w.mod_revision == g.mod_revision.get()
                    && g.key == k
            }
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(format!(
                "silently different: key {:?} read as {got:?}, written as {want:?}",
                String::from_utf8_lossy(k)
            ))
        }
    }

    fn check_range(&self, got: &[KeyValue]) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for kv in got {
            if !seen.insert(kv.key.clone()) {
                return Err(format!("silently different: range gave {:?} twice", kv.key));
            }
            self.check_key(&kv.key, Some(kv))?;
        }
        for k in self.keys.keys() {
            if !seen.contains(k) {
                self.check_key(k, None)?;
            }
        }
        Ok(())
    }

    /// The live leases (`leases()`: those with time left) against the model.
    fn check_leases(&self, got: &[LeaseId]) -> Result<(), String> {
        let got: BTreeSet<u64> = got.iter().map(|id| id.get()).collect();
        for id in &got {
            if !self.leases.contains_key(id) && !self.unknown_leases.contains(id) {
                if self.failed_grant && self.granted.iter().all(|g| g != id) {
                    continue;
                }
                return Err(format!(
                    "silently different: lease {id} is alive, never granted or gone ({:?})",
                    self.leases
                ));
            }
        }
        for (id, lease) in &self.leases {
            // At its deadline or past it, a lease not revoked yet is not listed.
            if lease.deadline > self.now && !got.contains(id) {
                return Err(format!(
                    "silently different: lease {id} ({lease:?} at {:?}) is missing from {got:?}",
                    self.now
                ));
            }
        }
        Ok(())
    }
}

/// The errors a damaged file may give.
fn clear(what: &str, e: &Error) -> Result<(), String> {
    match e {
        Error::Storage(_)
        | Error::Corrupted(_)
        | Error::NotLessorDatabase(_)
        | Error::IncompatibleFormat { .. }
        | Error::Poisoned => Ok(()),
        other => Err(format!("{what}: unexpected error {other:?}")),
    }
}

/// Whether the lessor answers reads: `leases()` cannot fail, and gives an empty list when the
/// lessor is poisoned or closed, which is not a different answer.
fn readable(l: &Lessor) -> Result<bool, String> {
    Ok(call("revision", || l.revision())?.is_ok())
}

/// Runs one call of the lessor: a panic escaping it is a finding.
fn call<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        format!("a panic escaped {what}: {msg}")
    })
}

pub fn open(disk: &Image, clock: &ManualClock, flags: u8) -> lessor::Result<Lessor> {
    let mut b = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .check_integrity_on_open(flags & 1 != 0)
        .two_phase_commit(flags & 8 != 0);
    if flags & 2 != 0 {
        b = b.cache_size(0);
    }
    b.open_with_backend(disk.clone())
}

/// Flips or overwrites bytes of the file under the open lessor.
fn damage(disk: &Image, at: u16, len: usize, f: impl Fn(u8) -> u8) {
    disk.damage(|bytes| {
        if bytes.is_empty() {
            return;
        }
        let start = ((u64::from(at) * bytes.len() as u64) >> 16) as usize;
        let end = (start + len).min(bytes.len());
        for b in &mut bytes[start..end] {
            *b = f(*b);
        }
    });
}

/// The whole check of one input: `Err` describes a finding.
pub fn check_damaged(bytes: &[u8]) -> Result<(), String> {
    check_damaged_on(&Image::default(), bytes)
}

/// [`check_damaged`] on a disk of the caller's (empty at first), which it can look at after.
pub fn check_damaged_on(disk: &Image, bytes: &[u8]) -> Result<(), String> {
    let (flags, ops) = decode(bytes);
    let clock = ManualClock::new();
    let mut m = Model::default();
    // The first open is of an empty disk: it always succeeds.
    let mut l = Some(
        call("open", || open(disk, &clock, flags))?
            .map_err(|e| format!("open of an empty disk: {e:?}"))?,
    );
    let two_phase = flags & 8;
    for (step, op) in ops.iter().enumerate() {
        let op = match *op {
            Op::Reopen(f) => Op::Reopen(f & !8 | two_phase),
            ref op => op.clone(),
        };
        run(&mut l, &mut m, disk, &clock, &op).map_err(|e| format!("step {step} {op:?}: {e}"))?;
    }
    if let Some(l) = l.take() {
        if let Ok(kvs) = call("range", || l.range(""))? {
            m.check_range(&kvs)?;
        }
        let _ = call("close", || l.close())?;
    }
    Ok(())
}

pub fn run(
    slot: &mut Option<Lessor>,
    m: &mut Model,
    disk: &Image,
    clock: &ManualClock,
    op: &Op,
) -> Result<(), String> {
    if let Op::Reopen(flags) = *op {
        if let Some(l) = slot.take() {
            // A close revokes the leases that have expired (and deletes their keys); a drop
            // does too, ignoring errors, so whether it did is unknown.
            let closed = if flags & 4 == 0 {
                match call("close", || l.close())? {
                    Ok(()) => true,
                    Err(e) => {
                        clear("close", &e)?;
                        false
                    }
                }
            } else {
                call("drop", || drop(l))?;
                false
            };
            let due: Vec<(u64, Duration)> = m
                .leases
                .iter()
                .filter(|(_, lease)| lease.deadline <= m.now)
                .map(|(&id, lease)| (id, lease.deadline))
                .collect();
            for (id, deadline) in due {
                if closed && deadline < m.now {
                    m.remove_lease(id);
                } else {
                    m.forget_lease(id);
                }
            }
        }
        match call("reopen", || open(disk, clock, flags))? {
            Ok(l) => {
                // Reset: every lease gets its full TTL again from now.
                for lease in m.leases.values_mut() {
                    lease.deadline = m.now + lease.ttl;
                }
                let leases = call("leases", || l.leases().unwrap_or_default())?;
                if readable(&l)? {
                    m.check_leases(&leases)
                        .map_err(|e| format!("after the reopen: {e}"))?;
                }
                if let Ok(kvs) = call("range", || l.range(""))? {
                    m.check_range(&kvs)
                        .map_err(|e| format!("after the reopen: {e}"))?;
                }
                *slot = Some(l);
            }
            Err(e) => clear("reopen", &e)?,
        }
        return Ok(());
    }
    match *op {
        Op::Flip(at, x) => {
            let x = if x == 0 { 1 } else { x };
            damage(disk, at, 1, |b| b ^ x);
            return Ok(());
        }
        Op::Overwrite(at, n, x) => {
            damage(disk, at, usize::from(n % 64) + 1, |_| x);
            return Ok(());
        }
        Op::Advance(t) => {
            let by = Duration::from_millis(100 * u64::from(t));
            clock.advance(by);
            m.now += by;
            return Ok(());
        }
        _ => {}
    }
    // The other operations need an open lessor: a reopen that failed leaves none.
    let Some(l) = slot.as_ref() else {
        return Ok(());
    };
    match *op {
        Op::Put(k, v, n) => {
            let (k, v) = (key(k), value(v, n));
            match call("put", || l.put(&k, &v))? {
                Ok(rev) => m.set_key(
                    k,
                    Entry {
                        value: v,
                        lease: None,
                        mod_revision: rev.get(),
                    },
                ),
                Err(e) => {
                    clear("put", &e)?;
                    m.forget_key(&k);
                }
            }
        }
        Op::PutWithLease(k, idx, v, n) => {
            let Some(id) = m.lease(idx) else {
                return Ok(());
            };
            let (k, v) = (key(k), value(v, n));
            let lease_id = LeaseId::new(id).expect("a granted id");
            match call("put_with_lease", || l.put_with_lease(&k, &v, lease_id))? {
                Ok(rev) => {
                    if !m.leases.contains_key(&id) && !m.unknown_leases.contains(&id) {
                        return Err(format!(
                            "silently different: put_with_lease took lease {id}, which is gone"
                        ));
                    }
                    m.set_key(
                        k,
                        Entry {
                            value: v,
                            lease: Some(id),
                            mod_revision: rev.get(),
                        },
                    );
                }
                Err(Error::LeaseNotFound(_)) => {
                    if m.leases
                        .get(&id)
                        .is_some_and(|lease| lease.deadline > m.now)
                    {
                        return Err(format!(
                            "silently different: put_with_lease: lease {id} not found, \
                             granted and alive"
                        ));
                    }
                }
                Err(e) => {
                    clear("put_with_lease", &e)?;
                    m.forget_key(&k);
                }
            }
        }
        Op::Grant(t) => {
            let ttl = Duration::from_secs(u64::from(t % 20) + 1);
            match call("grant", || l.grant(ttl))? {
                Ok(lease) => {
                    let id = lease.id.get();
                    if lease.ttl != ttl {
                        return Err(format!("grant({ttl:?}) gave {lease:?}"));
                    }
                    if m.leases.contains_key(&id) {
                        return Err(format!("grant gave lease {id}, which is alive"));
                    }
                    m.unknown_leases.remove(&id);
                    m.leases.insert(
                        id,
                        LeaseM {
                            ttl,
                            deadline: m.now + ttl,
                        },
                    );
                    m.granted.push(id);
                }
                Err(e) => {
                    clear("grant", &e)?;
                    m.failed_grant = true;
                }
            }
        }
        Op::Delete(k) => {
            let k = key(k);
            match call("delete", || l.delete(&k))? {
                Ok(existed) => {
                    if !m.unknown_keys.contains(&k) && existed != m.keys.contains_key(&k) {
                        return Err(format!(
                            "silently different: delete({:?}) = {existed}, model has {:?}",
                            String::from_utf8_lossy(&k),
                            m.keys.get(&k)
                        ));
                    }
                    m.keys.remove(&k);
                    m.unknown_keys.remove(&k);
                }
                Err(e) => {
                    clear("delete", &e)?;
                    m.forget_key(&k);
                }
            }
        }
        Op::Revoke(idx) => {
            let Some(id) = m.lease(idx) else {
                return Ok(());
            };
            let lease_id = LeaseId::new(id).expect("a granted id");
            match call("revoke", || l.revoke(lease_id))? {
                Ok(_) => {
                    if !m.leases.contains_key(&id) && !m.unknown_leases.contains(&id) {
                        return Err(format!(
                            "silently different: revoked lease {id}, which was gone"
                        ));
                    }
                    m.remove_lease(id);
                }
                Err(Error::LeaseNotFound(_)) => {
                    if m.leases.contains_key(&id) {
                        return Err(format!(
                            "silently different: revoke: lease {id} not found, granted \
                             and not revoked"
                        ));
                    }
                }
                Err(e) => {
                    clear("revoke", &e)?;
                    m.forget_lease(id);
                }
            }
        }
        Op::RevokeExpired => match call("revoke_expired", || l.revoke_expired())? {
            Ok(ids) => {
                for id in ids {
                    let id = id.get();
                    if let Some(lease) = m.leases.get(&id)
                        && lease.deadline > m.now
                    {
                        return Err(format!(
                            "silently different: lease {id} expired early: {lease:?} at {:?}",
                            m.now
                        ));
                    }
                    if !m.leases.contains_key(&id) && !m.unknown_leases.contains(&id) {
                        return Err(format!(
                            "silently different: lease {id} expired, never granted or gone"
                        ));
                    }
                    m.remove_lease(id);
                }
            }
            Err(e) => {
                clear("revoke_expired", &e)?;
                let due: Vec<u64> = m
                    .leases
                    .iter()
                    .filter(|(_, lease)| lease.deadline <= m.now)
                    .map(|(&id, _)| id)
                    .collect();
                for id in due {
                    m.forget_lease(id);
                }
            }
        },
        Op::Get(k) => {
            let k = key(k);
            match call("get", || l.get(&k))? {
                Ok(got) => m.check_key(&k, got.as_ref())?,
                Err(e) => clear("get", &e)?,
            }
        }
        Op::Range => match call("range", || l.range(""))? {
            Ok(kvs) => m.check_range(&kvs)?,
            Err(e) => clear("range", &e)?,
        },
        Op::Leases => {
            let leases = call("leases", || l.leases().unwrap_or_default())?;
            if readable(l)? {
                m.check_leases(&leases)?;
            }
            for id in leases {
                match call("time_to_live", || l.time_to_live(id))? {
                    Ok(info) => {
                        if let Some(lease) = m.leases.get(&id.get())
                            && (info.ttl != lease.ttl || info.remaining > lease.ttl)
                        {
                            return Err(format!(
                                "silently different: lease {id}: {info:?}, granted {lease:?}"
                            ));
                        }
                    }
                    Err(Error::LeaseNotFound(_)) => {}
                    Err(e) => clear("time_to_live", &e)?,
                }
            }
        }
        Op::Verify => {
            if let Err(e) = call("verify", || l.verify())? {
                clear("verify", &e)?;
            }
        }
        Op::Reopen(_) | Op::Flip(..) | Op::Overwrite(..) | Op::Advance(_) => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
