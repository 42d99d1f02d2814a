//! Reading a key range: the keys of `[start, end)` in either key order, the first `limit` of
//! them read whole, every one of them counted ([`RangeOptions`], [`Page`]).
//!
//! # Implementation
//!
//! A read sees the write buffer's layers over the file (`overlay.rs`). [`Walk`] merges the
//! file's keys, from one lazy redb range walked forward or backward, with the buffer's entries
//! in the range (a few thousand at most, copied out under the writer lock by `Query::Between`):
//! the newest layer wins, and a buffer entry replaces the file's record of the same key. The
//! first `limit` visible keys (not deleted, not hidden by a revocation in progress) are decoded,
//! checked (checksum, lease record: `Base::owned`) and copied.
//!
//! The keys past the page are counted, never decoded:
//! - while no lease is being revoked, no key is hidden, so the count is the file's keys in the
//!   range ([`count_in_file`]), plus the buffer's keys in the range that the file lacks, minus
//!   those the buffer deletes (one lookup each);
//! - while a lease is being revoked, the walk goes on to the end of the range, reading of each
//!   key its lease id alone, the record's first field ([`record::kv_lease`]), to leave hidden
//!   keys out.
//!
//! Invariants: the keys of a page are exactly the first `limit` keys, in the order asked, of the
//! full read ([`Layers::range_between`], which is this walk with no limit); `count` is that full
//! read's length. Records past the page are not read, so damage to them is not reported by this
//! read (the full read reports it).
//
// Counting: redb keeps each table's length but no counts inside the tree, and its range iterator
// costs 70-100 ns a key on the project's 2-core VM even when neither key nor value is looked at;
// reading a key with a 100-byte value whole (checksum, decode, two allocations) costs about four
// times that. Walking the keys outside the range instead, and subtracting from the length, wins
// when the range is most of the table (`"\0"` from the first key: every key); so `count_in_file`
// walks both, one key outside for every `INSIDE_PER_OUTSIDE` inside, and stops at whichever ends
// first: at most 1/16 more than the plain walk when the range is the smaller part, and 17 times
// the outside when it is the larger. Measured with benches/kv.rs (`range`, docs/performance.md):
// 100,000 keys of 200,000, limit 10: 9.9 ms against 46 ms for the whole read; every key of
// 200,000 counted: 2.5 us against 111 ms.

use std::cmp::Ordering;
use std::ops::Bound;

use crate::error::Result;
use crate::lease::{KeyValue, Revision};
use crate::overlay::{Base, Entry, FileRange, Layers};
use crate::record;
use crate::store;

/// How [`Lessor::range_page`](crate::Lessor::range_page) reads a range: how many keys, in which
/// order, with or without their values. Every key of the range is counted whatever the limit.
///
/// ```
/// use lessor::RangeOptions;
///
/// // The last 10 keys of the range, the highest first, without their values.
/// let options = RangeOptions::new().limit(10).descending(true).keys_only(true);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    limit: Option<usize>,
    descending: bool,
    keys_only: bool,
}

impl RangeOptions {
    /// Every key, in ascending key order, with its value: the defaults of each setter below.
    #[must_use]
    pub fn new() -> RangeOptions {
        RangeOptions::default()
    }

    /// Returns at most `limit` keys, the first ones in the order read. Default: no limit.
    /// `limit(0)` returns no key, only the count.
    #[must_use]
    pub fn limit(self, limit: usize) -> RangeOptions {
        RangeOptions {
            limit: Some(limit),
            ..self
        }
    }

    /// Reads in descending key order (`true`): the page is then the last keys of the range,
    /// last first. Default: `false`, ascending.
    #[must_use]
    pub fn descending(self, descending: bool) -> RangeOptions {
        RangeOptions { descending, ..self }
    }

    /// Returns the keys with empty values (`true`), their other fields as usual; the values are
    /// not copied. Default: `false`, with values.
    #[must_use]
    pub fn keys_only(self, keys_only: bool) -> RangeOptions {
        RangeOptions { keys_only, ..self }
    }
}

/// A page of a key range, from [`Lessor::range_page`](crate::Lessor::range_page): the first keys
/// in the order asked, how many keys the whole range holds, and the revision of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The keys returned: at most the limit, in the order asked.
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds, those returned included.
    pub count: u64,
    /// Whether the range holds keys that were not returned (`count` is above the number
    /// returned).
    pub more: bool,
    /// The database's revision at the read: every key returned and counted is as of this
    /// revision.
    pub revision: Revision,
}

/// One step of a walk over `it`, forward or backward.
fn step<I: DoubleEndedIterator>(it: &mut I, descending: bool) -> Option<I::Item> {
    if descending {
        it.next_back()
    } else {
        it.next()
    }
}

/// A key of the file and its record, as redb's range yields them.
type FileEntry = (
    redb::AccessGuard<'static, &'static [u8]>,
    redb::AccessGuard<'static, &'static [u8]>,
);

/// A key and its record, from the file or from the write buffer.
enum Item<'m> {
    File(FileEntry),
    Memory(&'m [u8], &'m [u8]),
}

impl Item<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Item::File((k, _)) => k.value(),
            Item::Memory(k, _) => k,
        }
    }

    fn record(&self) -> &[u8] {
        match self {
            Item::File((_, v)) => v.value(),
            Item::Memory(_, v) => v,
        }
    }
}

/// The keys of a range as a read sees them, in the order asked: the file's, with the write
/// buffer's entries over them. Deleted keys are skipped; hidden ones are not (see
/// [`Layers::hidden`]).
struct Walk<'m> {
    file: FileRange,
    memory: std::collections::btree_map::IntoIter<&'m [u8], &'m Entry>,
    descending: bool,
    /// The next entry of each side, read ahead.
    next_file: Option<FileEntry>,
    next_memory: Option<(&'m [u8], &'m Entry)>,
}

impl<'m> Walk<'m> {
    fn new(
        mut file: FileRange,
        written: std::collections::BTreeMap<&'m [u8], &'m Entry>,
        descending: bool,
    ) -> Result<Walk<'m>> {
        let mut memory = written.into_iter();
        Ok(Walk {
            next_file: step(&mut file, descending).transpose()?,
            next_memory: step(&mut memory, descending),
            file,
            memory,
            descending,
        })
    }

    fn advance_file(&mut self) -> Result<()> {
        self.next_file = step(&mut self.file, self.descending).transpose()?;
        Ok(())
    }

    /// The next key and its record.
    fn next(&mut self) -> Result<Option<Item<'m>>> {
        loop {
            let order = match (&self.next_file, &self.next_memory) {
                (None, None) => return Ok(None),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((f, _)), Some((m, _))) => {
                    let o = f.value().cmp(m);
                    if self.descending { o.reverse() } else { o }
                }
            };
            if order == Ordering::Less {
                let item = self.next_file.take().map(Item::File);
                self.advance_file()?;
                return Ok(item);
            }
            if order == Ordering::Equal {
                // The buffer's entry replaces the file's record.
                self.advance_file()?;
            }
            let entry = self.next_memory.take();
            self.next_memory = step(&mut self.memory, self.descending);
            if let Some((key, Some(record))) = entry {
                return Ok(Some(Item::Memory(key, record)));
            }
        }
    }
}

/// How many keys of the range the outside walk of [`count_in_file`] lets the inside walk take
/// for each of its own.
const INSIDE_PER_OUTSIDE: u64 = 16;

/// How many of the file's keys are in `[start, end)` (`start < end`), without reading a record:
/// the keys inside the range, walked, or the table's length minus the keys outside it, walked
/// one for every [`INSIDE_PER_OUTSIDE`] inside; whichever walk ends first answers.
fn count_in_file(base: &Base, start: &[u8], end: Option<&[u8]>) -> Result<u64> {
    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
    let mut inside = base.kv_in((Bound::Included(start), upper))?;
    let below = base.kv_in((Bound::Unbounded, Bound::Excluded(start)))?;
    let above = match end {
        Some(end) => Some(base.kv_in((Bound::Included(end), Bound::Unbounded))?),
        None => None,
    };
    let mut outside = below.chain(above.into_iter().flatten());
    let (mut walked_inside, mut walked_outside) = (0u64, 0u64);
    loop {
        for _ in 0..INSIDE_PER_OUTSIDE {
            match inside.next() {
                None => return Ok(walked_inside),
                Some(entry) => drop(entry?),
            }
            walked_inside += 1;
        }
        match outside.next() {
            None => return Ok(base.kv_len()?.saturating_sub(walked_outside)),
            Some(entry) => drop(entry?),
        }
        walked_outside += 1;
    }
}

impl Layers<'_> {
    /// The keys from `start` up to `end` (excluded; `None`: no end) as `options` asks for them,
    /// and how many keys the range holds. See the module docs.
    pub(crate) fn page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        options: RangeOptions,
    ) -> Result<(Vec<KeyValue>, u64)> {
        let RangeOptions {
            limit,
            descending,
            keys_only,
        } = options;
        let limit = limit.unwrap_or(usize::MAX);
        let mut kvs = Vec::new();
        let mut count = 0u64;
        if end.is_some_and(|end| end <= start) {
            return Ok((kvs, count));
        }
        // The buffer's entries in the range, the newest layer's winning.
        let mut written = std::collections::BTreeMap::new();
        for o in self.overlays.iter().rev().flatten() {
            written.extend(o.kv_between(start, end));
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let file = self.base.kv_in((Bound::Included(start), upper))?;
        let mut walk = Walk::new(file, written.clone(), descending)?;
        // Leases of the file's keys found to have a record (see `Base::owned`).
        let mut seen = Vec::new();
        while kvs.len() < limit {
            let Some(item) = walk.next()? else {
                return Ok((kvs, count));
            };
            let (key, record) = (item.key(), item.record());
            if self.hidden(key, record) {
                continue;
            }
            let kv = store::decode_key(key, record, !keys_only)?;
            kvs.push(match item {
                Item::File(..) => self.base.owned(kv, self.live, &mut seen)?,
                Item::Memory(..) => kv,
            });
            count += 1;
        }
        // Past the page: counted, not read.
        if self.any_revoking() {
            while let Some(item) = walk.next()? {
                let lease = record::kv_lease(item.record());
                if !lease.is_some_and(|lease| lease != 0 && self.is_revoking(lease)) {
                    count += 1;
                }
            }
            return Ok((kvs, count));
        }
        if walk.next()?.is_none() {
            return Ok((kvs, count));
        }
        drop(walk);
        let mut count = count_in_file(self.base, start, end)?;
        for (key, entry) in written {
            let (now, before) = (entry.is_some(), self.base.kv_contains(key)?);
            if now && !before {
                count += 1;
            } else if before && !now {
                count = count.saturating_sub(1);
            }
        }
        Ok((kvs, count))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use redb::Database;

    use super::*;
    use crate::overlay::{Overlay, Tables};
    use crate::store::{self, Counters};

    fn key(i: usize) -> Vec<u8> {
        format!("k{i:02}").into_bytes()
    }

    /// A file holding `k00`..`k59` (value: the index), and two buffer layers over it: the frozen
    /// one rewrites every fifth key and deletes every seventh, the active one adds `k05a`..`k59a`
    /// every ninth and deletes every eleventh. Returns the layers' data and the keys a read sees.
    fn layered() -> (Database, Overlay, Overlay, BTreeMap<Vec<u8>, Vec<u8>>) {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        store::init(&db, false).unwrap();
        let mut model = BTreeMap::new();
        let mut file = Overlay::default();
        {
            let base = Base::open(&db).unwrap();
            let mut t = Tables {
                active: &mut file,
                frozen: None,
                base: &base,
            };
            for i in 0..60 {
                let value = i.to_string().into_bytes();
                t.put(&key(i), &value, None, 1).unwrap();
                model.insert(key(i), value);
            }
        }
        let txn = db.begin_write().unwrap();
        file.write_to(&txn, Counters::default()).unwrap();
        txn.commit().unwrap();
        let base = Base::open(&db).unwrap();
        let mut frozen = Overlay::default();
        let mut t = Tables {
            active: &mut frozen,
            frozen: None,
            base: &base,
        };
        for i in (0..60).step_by(5) {
            t.put(&key(i), b"new", None, 2).unwrap();
            model.insert(key(i), b"new".to_vec());
        }
        for i in (0..60).step_by(7) {
            t.delete(&key(i)).unwrap();
            model.remove(&key(i));
        }
        let mut active = Overlay::default();
        let mut t = Tables {
            active: &mut active,
            frozen: Some(&frozen),
            base: &base,
        };
        for i in (5..60).step_by(9) {
            let mut k = key(i);
            k.push(b'a');
            t.put(&k, b"added", None, 3).unwrap();
            model.insert(k, b"added".to_vec());
        }
        for i in (0..60).step_by(11) {
            t.delete(&key(i)).unwrap();
            model.remove(&key(i));
        }
        (db, active, frozen, model)
    }

    /// Range bounds around and inside `k00`..`k59`.
    fn bounds() -> Vec<Vec<u8>> {
        let mut b = vec![b"".to_vec(), b"a".to_vec(), b"k".to_vec(), b"z".to_vec()];
        b.extend([0, 1, 2, 5, 10, 30, 45, 57, 58, 59].map(key));
        b.push(b"k05a".to_vec());
        b
    }

    #[test]
    fn the_file_count_walks_the_smaller_side_and_is_exact_either_way() {
        let (db, _, _, _) = layered();
        let base = Base::open(&db).unwrap();
        let all = bounds();
        for start in &all {
            for end in all.iter().map(Some).chain([None]) {
                if end.is_some_and(|end| end <= start) {
                    continue;
                }
                let end = end.map(Vec::as_slice);
                let want = (0..60)
                    .map(key)
                    .filter(|k| k >= start && end.is_none_or(|end| k.as_slice() < end))
                    .count() as u64;
                assert_eq!(count_in_file(&base, start, end).unwrap(), want);
            }
        }
    }

    #[test]
    fn pages_over_layers_are_the_first_keys_of_the_range_and_count_it_whole() {
        let (db, active, frozen, model) = layered();
        let base = Base::open(&db).unwrap();
        let layers = Layers {
            overlays: [Some(&active), Some(&frozen)],
            base: &base,
            live: None,
        };
        let all = bounds();
        for start in &all {
            for end in all.iter().map(Some).chain([None]) {
                let end = end.map(Vec::as_slice);
                let mut want: Vec<(&Vec<u8>, &Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| *k >= start && end.is_none_or(|end| k.as_slice() < end))
                    .collect();
                for descending in [false, true] {
                    if descending {
                        want.reverse();
                    }
                    for limit in [0, 1, 3, 20, 100] {
                        let keys_only = limit == 3;
                        let options = RangeOptions::new()
                            .limit(limit)
                            .descending(descending)
                            .keys_only(keys_only);
                        let (kvs, count) = layers.page(start, end, options).unwrap();
                        assert_eq!(count, want.len() as u64, "{start:?} {end:?} {options:?}");
                        let got: Vec<(&[u8], &[u8])> = kvs
                            .iter()
                            .map(|kv| (kv.key.as_slice(), kv.value.as_slice()))
                            .collect();
                        let expected: Vec<(&[u8], &[u8])> = want
                            .iter()
                            .take(limit)
                            .map(|(k, v)| (k.as_slice(), if keys_only { &[][..] } else { v }))
                            .collect();
                        assert_eq!(got, expected, "{start:?} {end:?} {options:?}");
                    }
                }
            }
        }
    }
}
