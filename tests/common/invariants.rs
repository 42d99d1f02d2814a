//! Whole-database invariants, checked through the public API.
//!
//! [`check`] wants a database at rest: no call in flight and nothing expiring while it reads
//! (a lessor opened with a `ManualClock` and no ticker, or one whose remaining leases are far
//! from their deadlines). It runs [`Lessor::verify`] (the file's own cross-checks) and then
//! asks the same questions through the public API, as a user would:
//! - every key attached to a lease names a live lease, and that lease lists it
//!   (`time_to_live_with_keys(id).keys`), and every key a lease lists names that lease (two-sided);
//! - keys come in strictly ascending order, with `1 <= create_revision <= mod_revision <=
//!   revision` and `version >= 1`;
//! - `range_with_revision` and `revision` agree;
//! - live leases come in strictly ascending order, each with `remaining <= ttl`.

use std::collections::BTreeMap;
use std::time::Duration;

use lessor::{KeyValue, LeaseId, Lessor, Revision};

/// What [`check`] read, for callers that compare it with what they expected.
#[derive(Clone, Debug)]
pub struct State {
    /// Every key, in key order.
    pub kvs: Vec<KeyValue>,
    /// Every live lease and its granted TTL.
    pub leases: BTreeMap<LeaseId, Duration>,
    /// What each live lease had left.
    pub remaining: BTreeMap<LeaseId, Duration>,
    /// The database's revision.
    pub revision: Revision,
}

impl State {
    /// The key `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.kvs
            .binary_search_by(|kv| kv.key.as_slice().cmp(key))
            .ok()
            .map(|i| &self.kvs[i])
    }
}

/// Checks every invariant listed in the module docs; `Err` lists every problem found.
pub fn check(l: &Lessor) -> Result<State, String> {
    let mut problems = Vec::new();
    if let Err(e) = l.verify() {
        problems.push(format!("verify: {e}"));
    }
    let snap = l
        .range_with_revision("")
        .map_err(|e| format!("range: {e}"))?;
    let revision = l.revision().map_err(|e| format!("revision: {e}"))?;
    if snap.revision != revision {
        problems.push(format!(
            "range_with_revision saw {:?} but revision() is {revision:?}",
            snap.revision
        ));
    }
    let ids = l.leases().unwrap();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        problems.push(format!("leases() not strictly ascending: {ids:?}"));
    }
    let mut by_lease: BTreeMap<LeaseId, Vec<Vec<u8>>> =
        ids.iter().map(|&id| (id, Vec::new())).collect();
    for pair in snap.kvs.windows(2) {
        if pair[0].key >= pair[1].key {
            problems.push(format!(
                "range not strictly ascending: {:?} then {:?}",
                pair[0].key, pair[1].key
            ));
        }
    }
    for kv in &snap.kvs {
        let (c, m) = (kv.create_revision, kv.mod_revision);
        if c.get() == 0 || c > m || m > revision || kv.version == 0 {
            problems.push(format!("bad metadata (revision {revision:?}): {kv:?}"));
        }
        if let Some(id) = kv.lease {
            match by_lease.get_mut(&id) {
                Some(keys) => keys.push(kv.key.clone()),
                None => problems.push(format!("{kv:?} names lease {id}, which is not alive")),
            }
        }
    }
    let mut leases = BTreeMap::new();
    let mut remaining = BTreeMap::new();
    for (&id, keys) in &by_lease {
        match l.time_to_live_with_keys(id) {
            Ok(info) => {
                if &info.keys != keys {
                    problems.push(format!(
                        "lease {id} lists keys {:?} but the keys naming it are {:?}",
                        show(&info.keys),
                        show(keys)
                    ));
                }
                if info.remaining > info.ttl {
                    problems.push(format!("lease {id}: {info:?} has more than its TTL left"));
                }
                leases.insert(id, info.ttl);
                remaining.insert(id, info.remaining);
            }
            Err(e) => problems.push(format!("lease {id} is in leases() but time_to_live: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(State {
            kvs: snap.kvs,
            leases,
            remaining,
            revision,
        })
    } else {
        Err(problems.join("\n"))
    }
}

/// Grants a lease and checks its id is above `highest` (auto ids are never reused: above every
/// id ever issued), then revokes it; returns the id. Changes the database: call after [`check`].
pub fn check_next_id(l: &Lessor, highest: u64) -> Result<u64, String> {
    let lease = l
        .grant(Duration::from_secs(3600))
        .map_err(|e| format!("grant: {e}"))?;
    l.revoke(lease.id).map_err(|e| format!("revoke: {e}"))?;
    if lease.id.get() <= highest {
        return Err(format!(
            "a new grant got id {}, but {highest} was already issued",
            lease.id
        ));
    }
    Ok(lease.id.get())
}

fn show(keys: &[Vec<u8>]) -> Vec<String> {
    keys.iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}
