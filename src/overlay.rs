//! The write buffer: changes applied and acknowledged but not yet in the redb file, and the
//! layered view through which requests and reads see them.
//!
//! # Implementation
//!
//! A mutating request never opens a redb transaction of its own. It is applied to the
//! [`Overlay`] that is filling (`active`): an ordered map per table from key to the entry's new
//! state (its encoded record, or deleted). The commit pipeline (`pipeline.rs`) later freezes the
//! whole overlay, writes it into ONE redb write transaction, commits it with fsync, and swaps in
//! a fresh read snapshot of the file ([`Base`]). While that flush runs, the frozen overlay stays
//! readable and a new active one fills on top of it.
//!
//! A lookup goes top-down: the active overlay, the frozen one, then the base snapshot; the first
//! layer that knows the entry answers. Invariants:
//! - the base is the file as of the last successful commit, and every commit is durable, so the
//!   base is always durable;
//! - `frozen` exists only while its flush runs, and is dropped in the same critical section that
//!   installs the base it became, so no reader ever sees a state without it;
//! - each request is all-or-nothing: its writes are logged in `undo` while it runs, and a request
//!   that fails its checks is rolled back before anyone else can see the overlay.
//!
//! Entries are absolute (the record itself, never a delta), so writing the same overlay twice
//! leaves the same file: a flush whose commit reached the disk but reported failure can be
//! written again.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTableMetadata, WriteTransaction};

use crate::error::{Error, Result};
use crate::events::Change;
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::lease_table::LeaseTable;
use crate::range::RangeOptions;
use crate::record::{Checkpoint, KvRecord, LeaseRecord};
use crate::store::{self, Counters, KV, LEASE_KEYS, LEASES, META, REVOKING};

/// An entry's state in an overlay: its encoded record, or `None` for deleted.
pub(crate) type Entry = Option<Vec<u8>>;

/// What a request wrote, so that it can be undone if the request fails.
enum Undo {
    Kv(Vec<u8>, Option<Entry>),
    Lease(u64, Option<Entry>),
    LeaseKey((u64, Vec<u8>), Option<bool>),
    Meta(&'static str, Option<u64>),
    Revoking(u64, Option<Option<u64>>),
}

/// Writes applied on top of the layers below; see the module docs.
#[derive(Default)]
pub(crate) struct Overlay {
    kv: BTreeMap<Vec<u8>, Entry>,
    leases: BTreeMap<u64, Entry>,
    /// `(lease, key)` index entries: `true` present, `false` removed.
    lease_keys: BTreeMap<(u64, Vec<u8>), bool>,
    meta: BTreeMap<&'static str, u64>,
    /// Leases whose revocation started (`Some(revision)`) or ended (`None`): while a lease is
    /// being revoked, the keys still attached to it are hidden (see `reap.rs`).
    revoking: BTreeMap<u64, Option<u64>>,
    /// Keys, and attached keys, added minus removed relative to the layers below.
    kv_delta: i64,
    attached_delta: i64,
    /// Low-level writes applied, for the flush threshold.
    writes: usize,
    /// Bytes of keys and values held, for the flush threshold.
    bytes: usize,
    /// The running request's writes, newest last; empty between requests.
    undo: Vec<Undo>,
    /// The deltas as the running request found them.
    saved: (i64, i64, usize, usize),
    /// What the requests in this overlay changed, in order: published once it is durable
    /// (under [`Durability::Immediate`](crate::Durability::Immediate)).
    pub(crate) changes: Vec<Change>,
    /// The leases its requests revoked, still claimed in the table until it is durable, with
    /// the deadline word to give back if that fails (see `Batch::claims` in `pipeline.rs`).
    pub(crate) claims: Vec<(LeaseId, Option<u64>)>,
    /// The leases its requests revoked without claiming them yet (under `Immediate`): claimed
    /// and dropped from the table once it is durable, so that nobody sees them go before.
    pub(crate) deferred: Vec<LeaseId>,
}

impl Overlay {
    /// Whether nothing has been written to it.
    pub(crate) fn is_empty(&self) -> bool {
        self.writes == 0
            && self.changes.is_empty()
            && self.claims.is_empty()
            && self.deferred.is_empty()
    }

    /// The leases this overlay marks as being revoked.
    pub(crate) fn revoking_marks(&self) -> impl Iterator<Item = u64> + '_ {
        self.revoking
            .iter()
            .filter_map(|(&id, state)| state.is_some().then_some(id))
    }

    /// The key entries from `start` up to `end` (excluded; `None`: no end), in key order; none
    /// if `end` is at or before `start`.
    pub(crate) fn kv_between<'o>(
        &'o self,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'o [u8], &'o Entry)> + 'o {
        let entries = if end.is_some_and(|end| end <= start) {
            None
        } else {
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            Some(self.kv.range::<[u8], _>((Bound::Included(start), upper)))
        };
        entries
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_slice(), v))
    }

    /// Low-level writes applied so far.
    pub(crate) fn writes(&self) -> usize {
        self.writes
    }

    /// Bytes of keys and values held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Starts a request: what it writes from now on can be undone.
    pub(crate) fn begin(&mut self) {
        self.undo.clear();
        self.saved = (self.kv_delta, self.attached_delta, self.writes, self.bytes);
    }

    /// Ends a request that succeeded.
    pub(crate) fn keep(&mut self) {
        self.undo.clear();
    }

    /// Undoes everything the running request wrote.
    pub(crate) fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Kv(k, old) => restore(&mut self.kv, k, old),
                Undo::Lease(k, old) => restore(&mut self.leases, k, old),
                Undo::LeaseKey(k, old) => restore(&mut self.lease_keys, k, old),
                Undo::Meta(k, old) => restore(&mut self.meta, k, old),
                Undo::Revoking(k, old) => restore(&mut self.revoking, k, old),
            }
        }
        (self.kv_delta, self.attached_delta, self.writes, self.bytes) = self.saved;
    }

    fn set_kv(&mut self, key: &[u8], entry: Entry) {
        self.writes += 1;
        self.bytes += key.len() + entry.as_ref().map_or(0, Vec::len);
        let old = self.kv.insert(key.to_vec(), entry);
        self.undo.push(Undo::Kv(key.to_vec(), old));
    }

    fn set_lease(&mut self, id: u64, entry: Entry) {
        self.writes += 1;
        self.bytes += 16 + entry.as_ref().map_or(0, Vec::len);
        let old = self.leases.insert(id, entry);
        self.undo.push(Undo::Lease(id, old));
    }

    fn set_lease_key(&mut self, lease: u64, key: &[u8], present: bool) {
        self.writes += 1;
        self.bytes += 8 + key.len();
        let old = self.lease_keys.insert((lease, key.to_vec()), present);
        self.undo.push(Undo::LeaseKey((lease, key.to_vec()), old));
    }

    fn set_revoking(&mut self, lease: u64, revision: Option<u64>) {
        self.writes += 1;
        let old = self.revoking.insert(lease, revision);
        self.undo.push(Undo::Revoking(lease, old));
    }

    fn set_meta(&mut self, name: &'static str, value: u64) {
        self.writes += 1;
        let old = self.meta.insert(name, value);
        self.undo.push(Undo::Meta(name, old));
    }

    /// This overlay with `newer` written on top: what a flush that failed leaves for the next
    /// one, in one layer.
    pub(crate) fn under(mut self, newer: Overlay) -> Overlay {
        self.kv.extend(newer.kv);
        self.leases.extend(newer.leases);
        self.lease_keys.extend(newer.lease_keys);
        self.meta.extend(newer.meta);
        self.revoking.extend(newer.revoking);
        self.kv_delta += newer.kv_delta;
        self.attached_delta += newer.attached_delta;
        self.writes += newer.writes;
        self.bytes += newer.bytes;
        self.changes.extend(newer.changes);
        self.claims.extend(newer.claims);
        self.deferred.extend(newer.deferred);
        self
    }

    /// A copy, for when a frozen overlay is still shared.
    pub(crate) fn duplicate(&self) -> Overlay {
        Overlay {
            kv: self.kv.clone(),
            leases: self.leases.clone(),
            lease_keys: self.lease_keys.clone(),
            meta: self.meta.clone(),
            revoking: self.revoking.clone(),
            kv_delta: self.kv_delta,
            attached_delta: self.attached_delta,
            writes: self.writes,
            bytes: self.bytes,
            undo: Vec::new(),
            saved: self.saved,
            changes: self.changes.clone(),
            claims: self.claims.clone(),
            deferred: self.deferred.clone(),
        }
    }

    /// Writes the whole overlay, and `counters`, into `txn`.
    pub(crate) fn write_to(&self, txn: &WriteTransaction, counters: Counters) -> Result<()> {
        {
            let mut kv = txn.open_table(KV)?;
            for (k, v) in &self.kv {
                match v {
                    Some(v) => drop(kv.insert(k.as_slice(), v.as_slice())?),
                    None => drop(kv.remove(k.as_slice())?),
                }
            }
        }
        {
            let mut leases = txn.open_table(LEASES)?;
            for (k, v) in &self.leases {
                match v {
                    Some(v) => drop(leases.insert(*k, v.as_slice())?),
                    None => drop(leases.remove(*k)?),
                }
            }
        }
        {
            let mut index = txn.open_table(LEASE_KEYS)?;
            for ((lease, key), &present) in &self.lease_keys {
                if present {
                    index.insert((*lease, key.as_slice()), ())?;
                } else {
                    index.remove((*lease, key.as_slice()))?;
                }
            }
        }
        {
            let mut revoking = txn.open_table(REVOKING)?;
            for (k, v) in &self.revoking {
                match v {
                    Some(rev) => drop(revoking.insert(*k, *rev)?),
                    None => drop(revoking.remove(*k)?),
                }
            }
        }
        let mut meta = txn.open_table(META)?;
        for (k, v) in &self.meta {
            meta.insert(*k, *v)?;
        }
        store::write_counters(&mut meta, counters)?;
        Ok(())
    }
}

fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// What a read looks up: the overlay entries it needs, copied out under the writer lock
/// ([`Overlay::slice`]), so that the lookups in the file happen after the lock is released.
#[derive(Clone, Copy)]
pub(crate) enum Query<'q> {
    /// One key.
    Key(&'q [u8]),
    /// The keys starting with a prefix.
    Prefix(&'q [u8]),
    /// The keys from a start on, up to an end (excluded; `None`: no end).
    Between(&'q [u8], Option<&'q [u8]>),
    /// The keys attached to a lease.
    LeaseKeys(LeaseId),
    /// The key counts.
    Counts,
    /// Nothing but the revision.
    Revision,
}

impl Overlay {
    /// The part of this overlay that `q` reads: layered over the same base, it answers `q` as
    /// the whole overlay would.
    pub(crate) fn slice(&self, q: Query<'_>) -> Overlay {
        let mut o = Overlay {
            // Few entries, and every read of keys needs them (they hide keys).
            revoking: self.revoking.clone(),
            ..Overlay::default()
        };
        match q {
            Query::Key(k) => {
                if let Some(e) = self.kv.get(k) {
                    o.kv.insert(k.to_vec(), e.clone());
                }
            }
            Query::Prefix(p) => {
                for (k, v) in self
                    .kv
                    .range::<[u8], _>((Bound::Included(p), Bound::Unbounded))
                {
                    if !k.starts_with(p) {
                        break;
                    }
                    o.kv.insert(k.clone(), v.clone());
                }
            }
            Query::Between(start, end) => {
                for (k, v) in self
                    .kv
                    .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
                {
                    if !before_end(k, end) {
                        break;
                    }
                    o.kv.insert(k.clone(), v.clone());
                }
            }
            Query::LeaseKeys(id) => {
                let lease = id.get();
                for ((l, k), &present) in self.lease_keys.range((lease, Vec::new())..) {
                    if *l != lease {
                        break;
                    }
                    o.lease_keys.insert((lease, k.clone()), present);
                }
            }
            Query::Counts => {
                o.kv_delta = self.kv_delta;
                o.attached_delta = self.attached_delta;
            }
            Query::Revision => {}
        }
        o
    }
}

/// Whether `key` sorts before `end` (`None`: the range has no end).
fn before_end(key: &[u8], end: Option<&[u8]>) -> bool {
    end.is_none_or(|end| key < end)
}

/// The first key after every key that starts with `prefix`, so that the keys with that prefix
/// are `[prefix, end)`; `None` when no key sorts after them all (the prefix is empty, or only
/// `0xff` bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// A read snapshot of the file as of its last commit: the bottom layer.
pub(crate) struct Base {
    kv: ReadOnlyTable<&'static [u8], &'static [u8]>,
    leases: ReadOnlyTable<u64, &'static [u8]>,
    lease_keys: ReadOnlyTable<(u64, &'static [u8]), ()>,
    /// The leases being revoked in the snapshot (few: read whole at each snapshot).
    pub(crate) revoking: BTreeMap<u64, u64>,
    /// The revision stored in the snapshot.
    pub(crate) revision: u64,
}

impl Base {
    /// A snapshot of `db` as of now.
    pub(crate) fn open(db: &Database) -> Result<Base> {
        let read = db.begin_read()?;
        let revision = store::revision(&read)?;
        Ok(Base {
            kv: read.open_table(KV)?,
            leases: read.open_table(LEASES)?,
            lease_keys: read.open_table(LEASE_KEYS)?,
            revoking: store::revoking(&read)?,
            revision,
        })
    }

    fn kv_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(key)?.map(|v| v.value().to_vec()))
    }

    fn lease_get(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.leases.get(id)?.map(|v| v.value().to_vec()))
    }

    /// The keys and attached keys in the snapshot; O(1).
    pub(crate) fn key_counts(&self) -> Result<(u64, u64)> {
        Ok((self.kv.len()?, self.lease_keys.len()?))
    }

    /// `kv`, read from this snapshot, once its lease (if any) is found to have a record in the
    /// same snapshot. A revocation deletes a lease's record and its keys in one commit, so a key
    /// whose lease has no record was left behind by damage (an index entry that lost it while
    /// the file was open): [`Error::Corrupted`], rather than a key attached to a lease that does
    /// not exist. `seen` holds leases already found, so that a range looks each up once.
    ///
    /// A lease in `live` (the lessor's memory) is taken as found without a lookup: a lease
    /// leaves memory only once its revocation is durable, so a lease still there has its record
    /// in any snapshot that has its keys; a lease that is not there is looked up. (A key
    /// orphaned by damage is then missed only while its lease's id is granted again.)
    pub(crate) fn owned(
        &self,
        kv: KeyValue,
        live: Option<&LeaseTable>,
        seen: &mut Vec<u64>,
    ) -> Result<KeyValue> {
        let Some(id) = kv.lease else {
            return Ok(kv);
        };
        if live.is_some_and(|t| t.contains(id)) {
            return Ok(kv);
        }
        let lease = id.get();
        if seen.contains(&lease) {
            return Ok(kv);
        }
        if self.leases.get(lease)?.is_none() {
            return Err(Error::Corrupted(format!(
                "key {} is attached to lease {lease}, which has no record: the file is damaged \
                 (the key outlived its lease's revocation)",
                kv.key.escape_ascii()
            )));
        }
        if seen.len() < 64 {
            seen.push(lease);
        }
        Ok(kv)
    }

    /// The file's keys within `bounds` with their records, read lazily in either direction;
    /// none if the bounds are reversed.
    pub(crate) fn kv_in(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<FileRange> {
        // redb answers reversed bounds with no keys (where `BTreeMap::range` would panic).
        Ok(self.kv.range::<&[u8]>(bounds)?)
    }

    /// How many keys the file holds; O(1) (redb keeps the count of each table).
    pub(crate) fn kv_len(&self) -> Result<u64> {
        Ok(self.kv.len()?)
    }

    /// Whether the file holds `key`, without copying its record.
    pub(crate) fn kv_contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.kv.get(key)?.is_some())
    }
}

/// An iterator over a key range of the file, from [`Base::kv_in`].
pub(crate) type FileRange = redb::Range<'static, &'static [u8], &'static [u8]>;

/// Overlay layers, newest first, over a base: what a request or a read sees.
#[derive(Clone, Copy)]
pub(crate) struct Layers<'a> {
    pub(crate) overlays: [Option<&'a Overlay>; 2],
    pub(crate) base: &'a Base,
    /// The live leases in memory, when the read has them: a key of the file attached to one of
    /// them is not looked up again (see [`Base::owned`]).
    pub(crate) live: Option<&'a LeaseTable>,
}

impl Layers<'_> {
    pub(crate) fn overlays(&self) -> impl Iterator<Item = &Overlay> {
        self.overlays.iter().flatten().copied()
    }

    fn kv_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for o in self.overlays() {
            if let Some(e) = o.kv.get(key) {
                return Ok(e.clone());
            }
        }
        self.base.kv_get(key)
    }

    fn lease_raw(&self, id: u64) -> Result<Option<Vec<u8>>> {
        for o in self.overlays() {
            if let Some(e) = o.leases.get(&id) {
                return Ok(e.clone());
            }
        }
        self.base.lease_get(id)
    }

    /// Whether any lease is being revoked: if not, no key is hidden and no record needs a look.
    pub(crate) fn any_revoking(&self) -> bool {
        !self.base.revoking.is_empty() || self.overlays().any(|o| !o.revoking.is_empty())
    }

    /// Whether lease `lease` is being revoked: its keys are deleted chunk by chunk, and hidden
    /// meanwhile.
    pub(crate) fn is_revoking(&self, lease: u64) -> bool {
        for o in self.overlays() {
            if let Some(state) = o.revoking.get(&lease) {
                return state.is_some();
            }
        }
        self.base.revoking.contains_key(&lease)
    }

    /// Whether the key whose record is `bytes` is hidden: attached to a lease being revoked. A
    /// record that does not decode is not hidden (reading it gives the error).
    pub(crate) fn hidden(&self, key: &[u8], bytes: &[u8]) -> bool {
        self.any_revoking()
            && KvRecord::decode(key, bytes).is_ok_and(|r| r.lease != 0 && self.is_revoking(r.lease))
    }

    /// A key's record, unless the key is missing or hidden.
    fn kv_visible(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv_raw(key)?.filter(|bytes| !self.hidden(key, bytes)))
    }

    /// Reads one key.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        for o in self.overlays() {
            if let Some(e) = o.kv.get(key) {
                return e
                    .as_ref()
                    .filter(|bytes| !self.hidden(key, bytes))
                    .map(|bytes| store::key_value(key, bytes))
                    .transpose();
            }
        }
        // A hidden key's lease has no record: skipped before `owned` would call it damage.
        self.base
            .kv_get(key)?
            .filter(|bytes| !self.hidden(key, bytes))
            .map(|bytes| {
                self.base
                    .owned(store::key_value(key, &bytes)?, self.live, &mut Vec::new())
            })
            .transpose()
    }

    /// Every key starting with `prefix`, in key order.
    pub(crate) fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.range_between(prefix, prefix_end(prefix).as_deref())
    }

    /// Every key from `start` up to `end` (excluded; `None`: no end), in key order.
    pub(crate) fn range_between(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<KeyValue>> {
        Ok(self.page(start, end, RangeOptions::new())?.0)
    }

    /// Up to `limit` keys attached to lease `id`, in key order, from the one after `after` (from
    /// the first if `None`). Reads no more of the index than it returns, plus the overlays'
    /// entries for the lease.
    pub(crate) fn lease_keys_from(
        &self,
        id: LeaseId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let lease = id.get();
        let lower = match after {
            Some(a) => Bound::Excluded((lease, a.to_vec())),
            None => Bound::Included((lease, Vec::new())),
        };
        // The overlays' entries for the lease, the newest layer winning.
        let mut newer = BTreeMap::new();
        for o in self.overlays.iter().rev().flatten() {
            for ((l, key), &present) in o.lease_keys.range((lower.clone(), Bound::Unbounded)) {
                if *l != lease {
                    break;
                }
                newer.insert(key.clone(), present);
            }
        }
        let mut newer = newer.into_iter().peekable();
        let start: (u64, &[u8]) = (lease, after.unwrap_or(&[]));
        let mut index = self.base.lease_keys.range(start..)?;
        let mut index_done = false;
        let mut next_in_file = move || -> Result<Option<Vec<u8>>> {
            if index_done {
                return Ok(None);
            }
            for entry in index.by_ref() {
                let (k, _) = entry?;
                let (l, key) = k.value();
                if l != lease {
                    break;
                }
                if Some(key) != after {
                    return Ok(Some(key.to_vec()));
                }
            }
            // The index range is past the lease's entries: never read it again.
            index_done = true;
            Ok(None)
        };
        let mut file = next_in_file()?;
        let mut out = Vec::new();
        while out.len() < limit {
            // An overlay entry at or before the file's next key goes first (and overrides it).
            if let Some((key, present)) =
                newer.next_if(|(k, _)| file.as_ref().is_none_or(|f| k <= f))
            {
                if file.as_ref() == Some(&key) {
                    file = next_in_file()?;
                }
                if present {
                    out.push(key);
                }
                continue;
            }
            match file.take() {
                Some(key) => {
                    out.push(key);
                    file = next_in_file()?;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The keys attached to lease `id`, in key order.
    pub(crate) fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        self.lease_keys_from(id, None, usize::MAX)
    }

    /// How many keys there are, and how many of them are attached to a lease.
    pub(crate) fn key_counts(&self) -> Result<(u64, u64)> {
        let (keys, attached) = self.base.key_counts()?;
        // Summed first: a layer's delta may be negative only because of the one below it.
        let (kv, at) = self.overlays().fold((0i64, 0i64), |(k, a), o| {
            (k + o.kv_delta, a + o.attached_delta)
        });
        Ok((
            keys.saturating_add_signed(kv),
            attached.saturating_add_signed(at),
        ))
    }
}

/// What a request writes through: the active overlay over the frozen one and the base. The same
/// operations as etcd's store, each reading what earlier requests (and this one) wrote.
pub(crate) struct Tables<'a> {
    pub(crate) active: &'a mut Overlay,
    pub(crate) frozen: Option<&'a Overlay>,
    pub(crate) base: &'a Base,
}

impl Tables<'_> {
    fn layers(&self) -> Layers<'_> {
        Layers {
            overlays: [Some(&*self.active), self.frozen],
            base: self.base,
            live: None,
        }
    }

    fn put_kv(&mut self, key: &[u8], record: &KvRecord<'_>, existed: bool) -> Result<()> {
        if !existed {
            self.active.kv_delta += 1;
        }
        self.active.set_kv(key, Some(record.encode(key)?));
        Ok(())
    }

    /// Adds (`present`) or removes the index entry `(lease, key)`. Every caller knows from the
    /// key's record that the entry is in the opposite state (the index mirrors the records: see
    /// `store.rs`), so nothing is looked up; a file whose index disagrees is `verify`'s to report.
    fn index(&mut self, lease: u64, key: &[u8], present: bool) -> Result<()> {
        if lease == 0 {
            return Ok(());
        }
        self.active.attached_delta += if present { 1 } else { -1 };
        self.active.set_lease_key(lease, key, present);
        Ok(())
    }

    /// Whether a request not yet durable deleted lease `id`'s record (revoked it): the buffer
    /// alone says so, no file read.
    pub(crate) fn lease_deleted(&self, id: LeaseId) -> bool {
        [Some(&*self.active), self.frozen]
            .into_iter()
            .flatten()
            .find_map(|o| o.leases.get(&id.get()))
            .is_some_and(Option::is_none)
    }

    /// Whether lease `id` has a record.
    pub(crate) fn lease_exists(&self, id: LeaseId) -> Result<bool> {
        Ok(self.layers().lease_raw(id.get())?.is_some())
    }

    /// Reads one key, seeing this request's writes.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.layers().get(key)
    }

    /// Whether lease `id` is being revoked (its keys hidden, deleted chunk by chunk).
    pub(crate) fn is_revoking(&self, id: LeaseId) -> bool {
        self.layers().is_revoking(id.get())
    }

    /// Reads every key starting with `prefix`, in key order, seeing this request's writes.
    pub(crate) fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        self.layers().range(prefix)
    }

    /// Reads every key from `start` up to `end` (excluded; `None`: no end), in key order,
    /// seeing this request's writes.
    pub(crate) fn range_between(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<KeyValue>> {
        self.layers().range_between(start, end)
    }

    /// Stores lease `id`'s record.
    pub(crate) fn insert_lease(&mut self, id: LeaseId, record: &LeaseRecord) -> Result<()> {
        self.active
            .set_lease(id.get(), Some(record.encode(id.get())?));
        Ok(())
    }

    /// Stores the database's uptime as of this checkpoint.
    pub(crate) fn set_uptime(&mut self, uptime: u64) -> Result<()> {
        self.active.set_meta(store::META_UPTIME, uptime);
        Ok(())
    }

    /// Stores lease `id`'s checkpoint in its record. `false`, writing nothing, if there is no
    /// such record or it does not decode: one damaged record must not stop the checkpoints of
    /// the others (`verify` and the next open report it).
    pub(crate) fn set_checkpoint(&mut self, id: LeaseId, checkpoint: Checkpoint) -> Result<bool> {
        let Some(bytes) = self.layers().lease_raw(id.get())? else {
            return Ok(false);
        };
        let Ok(mut record) = LeaseRecord::decode(id.get(), &bytes) else {
            return Ok(false);
        };
        record.checkpoint = Some(checkpoint);
        self.insert_lease(id, &record)?;
        Ok(true)
    }

    /// Writes `key = value` at revision `rev`, attached to `lease` (or to none), moving the
    /// index entry if the key was attached to another lease. Returns the key as written.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        rev: u64,
    ) -> Result<KeyValue> {
        let lease_raw = lease.map_or(0, LeaseId::get);
        let old = self.layers().kv_raw(key)?;
        let (create_revision, version, old_lease) = match &old {
            // A hidden key (of a lease being revoked) is gone: this put creates the key anew,
            // and takes the record and index entry from the revocation still to delete them.
            Some(bytes) if self.layers().hidden(key, bytes) => {
                let gone = KvRecord::decode(key, bytes)?.lease;
                self.index(gone, key, false)?;
                (rev, 1, 0)
            }
            Some(bytes) => {
                let r = KvRecord::decode(key, bytes)?;
                (r.create_revision, r.version.saturating_add(1), r.lease)
            }
            None => (rev, 1, 0),
        };
        if old_lease != 0 && old_lease != lease_raw {
            self.index(old_lease, key, false)?;
        }
        let record = KvRecord {
            lease: lease_raw,
            create_revision,
            mod_revision: rev,
            version,
            value,
        };
        self.put_kv(key, &record, old.is_some())?;
        if lease_raw != 0 && old_lease != lease_raw {
            self.index(lease_raw, key, true)?;
        }
        Ok(KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            create_revision: Revision(create_revision),
            mod_revision: Revision(rev),
            version,
        })
    }

    /// Deletes `key` and its index entry; `false` if it did not exist.
    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let Some(bytes) = self.layers().kv_visible(key)? else {
            return Ok(false);
        };
        // A record that does not decode is deleted all the same; its index entry, if any,
        // stays for `verify` to report.
        let lease = KvRecord::decode(key, &bytes).map_or(0, |r| r.lease);
        self.active.kv_delta -= 1;
        self.active.set_kv(key, None);
        self.index(lease, key, false)?;
        Ok(true)
    }

    /// Re-attaches existing `key` to `lease` (from another lease or from none), keeping its
    /// value and revisions.
    pub(crate) fn attach(&mut self, lease: LeaseId, key: &[u8]) -> Result<()> {
        let Some(bytes) = self.layers().kv_visible(key)? else {
            return Err(Error::KeyNotFound(key.to_vec()));
        };
        let mut record = KvRecord::decode(key, &bytes)?;
        if record.lease == lease.get() {
            return Ok(());
        }
        self.index(record.lease, key, false)?;
        record.lease = lease.get();
        self.put_kv(key, &record, true)?;
        self.index(lease.get(), key, true)
    }

    /// Detaches `key` from `lease`: the key stays, attached to no lease.
    pub(crate) fn detach(&mut self, lease: LeaseId, key: &[u8]) -> Result<()> {
        let Some(bytes) = self.layers().kv_visible(key)? else {
            return Err(Error::KeyNotFound(key.to_vec()));
        };
        let mut record = KvRecord::decode(key, &bytes)?;
        if record.lease != lease.get() {
            return Err(Error::KeyNotAttached {
                key: key.to_vec(),
                lease,
            });
        }
        record.lease = 0;
        self.put_kv(key, &record, true)?;
        self.index(lease.get(), key, false)
    }

    /// Deletes lease `id` and up to `chunk` keys attached to it. Returns the deleted keys, in
    /// key order, and whether more are left: then the lease is marked as being revoked at
    /// `revision` ([`reap`](Self::reap) deletes the rest), which hides them from now on.
    pub(crate) fn revoke(
        &mut self,
        id: LeaseId,
        chunk: usize,
        revision: u64,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let (keys, more) = self.next_chunk(id, None, chunk)?;
        // Deleting a record that is not there deletes nothing: no need to look first.
        self.active.set_lease(id.get(), None);
        if more {
            self.active.set_revoking(id.get(), Some(revision));
        }
        Ok((self.delete_attached(id, keys)?, more))
    }

    /// Deletes up to `chunk` more keys of lease `id`, which is being revoked, from the one after
    /// `after`. Returns them, and whether more are left; if none are, the revocation is over.
    pub(crate) fn reap(
        &mut self,
        id: LeaseId,
        after: Option<&[u8]>,
        chunk: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let (keys, more) = self.next_chunk(id, after, chunk)?;
        if !more {
            self.active.set_revoking(id.get(), None);
        }
        Ok((self.delete_attached(id, keys)?, more))
    }

    /// Up to `chunk` keys of lease `id` after `after`, and whether more are left.
    fn next_chunk(
        &self,
        id: LeaseId,
        after: Option<&[u8]>,
        chunk: usize,
    ) -> Result<(Vec<Vec<u8>>, bool)> {
        let mut keys = self
            .layers()
            .lease_keys_from(id, after, chunk.saturating_add(1))?;
        let more = keys.len() > chunk;
        keys.truncate(chunk);
        Ok((keys, more))
    }

    /// Deletes `keys`, listed in lease `id`'s index, and their index entries.
    fn delete_attached(&mut self, id: LeaseId, keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            // Listed, so present: remove it without looking it up again.
            self.active.attached_delta -= 1;
            self.active.set_lease_key(id.get(), &key, false);
            // Only delete a key that really belongs to this lease: a stale index entry must not
            // take another lease's key with it. A record that does not decode is deleted on the
            // index's word, so that one damaged record cannot stop expiry.
            let owner = match self.layers().kv_raw(&key)? {
                Some(bytes) => KvRecord::decode(&key, &bytes).map_or(id.get(), |r| r.lease),
                None => continue,
            };
            if owner == id.get() {
                self.active.kv_delta -= 1;
                self.active.set_kv(&key, None);
                deleted.push(key);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Database {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        store::init(&db, false).unwrap();
        db
    }

    fn lease(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    fn record() -> LeaseRecord {
        LeaseRecord {
            ttl_nanos: 1_000_000_000,
            granted_revision: 0,
            checkpoint: Some(Checkpoint {
                uptime_deadline: 1,
                wall_deadline: 1,
            }),
        }
    }

    #[test]
    fn a_key_in_the_file_whose_lease_has_no_record_is_corrupted_not_an_answer() {
        // What a damaged index leaves after a revocation: the lease's record is gone, one of
        // its keys is not (the index entry that listed it was damaged).
        let db = db();
        let base = Base::open(&db).unwrap();
        let mut o = Overlay::default();
        {
            let mut t = Tables {
                active: &mut o,
                frozen: None,
                base: &base,
            };
            t.insert_lease(lease(1), &record()).unwrap();
            t.insert_lease(lease(2), &record()).unwrap();
            t.put(b"/a", b"1", Some(lease(1)), 1).unwrap();
            t.put(b"/b", b"2", Some(lease(2)), 2).unwrap();
            t.put(b"/c", b"3", None, 3).unwrap();
        }
        let txn = db.begin_write().unwrap();
        o.write_to(&txn, Counters::default()).unwrap();
        txn.open_table(LEASES).unwrap().remove(1).unwrap();
        txn.commit().unwrap();
        let base = Base::open(&db).unwrap();
        let file = Layers {
            overlays: [None, None],
            base: &base,
            live: None,
        };
        for got in [file.get(b"/a").map(drop), file.range(b"").map(drop)] {
            assert!(
                matches!(&got, Err(Error::Corrupted(why)) if why.contains("lease 1")),
                "{got:?}"
            );
        }
        assert_eq!(file.get(b"/b").unwrap().unwrap().value, b"2");
        assert_eq!(file.range(b"/c").unwrap().len(), 1);
        // Written over by a request, the key is what the request wrote.
        let mut active = Overlay::default();
        let mut t = Tables {
            active: &mut active,
            frozen: None,
            base: &base,
        };
        t.put(b"/a", b"new", None, 4).unwrap();
        let layers = Layers {
            overlays: [Some(&active), None],
            base: &base,
            live: None,
        };
        assert_eq!(layers.get(b"/a").unwrap().unwrap().value, b"new");
        let all: Vec<Vec<u8>> = layers
            .range(b"")
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(all, [b"/a".to_vec(), b"/b".to_vec(), b"/c".to_vec()]);
    }

    #[test]
    fn a_failed_request_leaves_no_trace() {
        let db = db();
        let base = Base::open(&db).unwrap();
        let mut active = Overlay::default();
        let mut t = Tables {
            active: &mut active,
            frozen: None,
            base: &base,
        };
        t.active.begin();
        t.put(b"/a", b"1", None, 1).unwrap();
        t.active.keep();
        t.active.begin();
        t.put(b"/a", b"2", Some(lease(7)), 2).unwrap();
        t.put(b"/b", b"3", None, 2).unwrap();
        assert!(t.attach(lease(7), b"/missing").is_err());
        t.active.rollback();
        let layers = Layers {
            overlays: [Some(&active), None],
            base: &base,
            live: None,
        };
        assert_eq!(layers.get(b"/a").unwrap().unwrap().value, b"1");
        assert_eq!(layers.get(b"/b").unwrap(), None);
        assert!(layers.lease_keys(lease(7)).unwrap().is_empty());
        assert_eq!(layers.key_counts().unwrap(), (1, 0));
    }

    #[test]
    fn layers_merge_top_down_and_write_through_to_the_file() {
        let db = db();
        let base = Base::open(&db).unwrap();
        let mut frozen = Overlay::default();
        {
            let mut t = Tables {
                active: &mut frozen,
                frozen: None,
                base: &base,
            };
            t.insert_lease(lease(1), &record()).unwrap();
            t.put(b"/k/1", b"a", Some(lease(1)), 1).unwrap();
            t.put(b"/k/2", b"b", Some(lease(1)), 2).unwrap();
        }
        let mut active = Overlay::default();
        {
            let mut t = Tables {
                active: &mut active,
                frozen: Some(&frozen),
                base: &base,
            };
            assert!(t.delete(b"/k/1").unwrap());
            t.put(b"/k/3", b"c", None, 3).unwrap();
            t.put(b"/k/2", b"B", Some(lease(1)), 4).unwrap();
        }
        let layers = Layers {
            overlays: [Some(&active), Some(&frozen)],
            base: &base,
            live: None,
        };
        let keys: Vec<_> = layers.range(b"/k/").unwrap();
        let names: Vec<&[u8]> = keys.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(names, [b"/k/2".as_slice(), b"/k/3"]);
        assert_eq!((keys[0].version, keys[0].create_revision.get()), (2, 2));
        assert_eq!(layers.lease_keys(lease(1)).unwrap(), vec![b"/k/2".to_vec()]);
        assert_eq!(layers.key_counts().unwrap(), (2, 1));

        // Written in order, the two overlays leave the file as the layers showed it.
        for o in [&frozen, &active] {
            let txn = db.begin_write().unwrap();
            o.write_to(&txn, Counters::default()).unwrap();
            txn.commit().unwrap();
        }
        let base = Base::open(&db).unwrap();
        let file = Layers {
            overlays: [None, None],
            base: &base,
            live: None,
        };
        assert_eq!(file.range(b"/k/").unwrap(), keys);
        assert_eq!(file.lease_keys(lease(1)).unwrap(), vec![b"/k/2".to_vec()]);
        assert_eq!(file.key_counts().unwrap(), (2, 1));
    }
}
