//! The in-memory lease table: where renew happens.
//!
//! # Implementation
//!
//! Live leases sit in 64 shards. Each shard holds an open-addressing array of entries
//! `{ id, deadline, ttl, checkpointed }`, every field an `AtomicU64` (the deadline's wrapped in a
//! [`Deadline`]), 32 bytes, two to a cache line, behind an [`ArcSwap`]. A lookup loads the
//! shard's array (arc-swap's load writes only to a per-thread slot), probes linearly from the
//! id's hash, and works on the entry in place. So renew takes no lock, writes no memory shared
//! with other renewers except its own lease's entry, and usually touches one cache line besides
//! the array header. Nothing on the renew path touches the disk, the expiry queue or the
//! checkpoint word.
//!
//! The deadline word carries the lease's state as well (alive, pending, expired, claimed,
//! moved). It and every operation on it live in [`crate::deadline`], whose docs state the
//! protocol and its invariants: between a renew and a claim exactly one wins, so a lease is never
//! both renewed and expired, and a lease someone was told is gone stays gone. This module finds
//! the entry, runs those operations on it, and runs them again on the new array when one returns
//! [`Moved`].
//!
//! Ground rules for the structure (each shard's mutex serialises insert, remove and rebuild):
//! - an entry is published by storing its id last (`Release`); readers match ids with `Acquire`;
//! - a removed entry's id becomes [`TOMB`] and the entry is never reused within that array, so a
//!   reader that found lease X's entry holds X's entry for as long as it looks;
//! - a rebuild (grow, shrink, purge tombstones) swaps every old entry's deadline to `MOVED`,
//!   copies the value it swapped out into a new array, then publishes the new array. Deadlines
//!   change only by CAS or swap on the one current entry, so nothing is lost; a reader that meets
//!   `MOVED` waits on the shard's mutex (the rebuild holds it until the new array is out) and
//!   looks again;
//! - a slot is removed only after its revocation has committed.
//!
//! `checkpointed` is the deadline whose checkpoint is on disk (see [`crate::restart`]); a lease
//! whose deadline differs has been renewed since and needs a new checkpoint. Renew never touches
//! it. It is written by `settle` (before the CAS that publishes the deadline, which a rebuild's
//! swap is ordered against, so the rebuild copies it or `settle` retries on the new array) and
//! otherwise only under the shard mutex (insert, [`mark_checkpointed`], rebuild), which is also
//! held while [`changed`] reads it.
//!
//! [`mark_checkpointed`]: LeaseTable::mark_checkpointed
//! [`changed`]: LeaseTable::changed

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};

pub(crate) use crate::deadline::{DEAD, Due, deadline_after, room_for_grant};
use crate::deadline::{Deadline, MAX_DEADLINE, MOVED, Moved, PENDING, checkpoint_deadline};
use crate::lease::LeaseId;

/// The id of an entry never used in this array (lease ids are never 0).
const EMPTY: u64 = 0;

/// The id of an entry whose lease was removed; never reused within its array.
const TOMB: u64 = u64::MAX;

/// Number of shards (a power of two): rebuild pauses touch 1/64 of the leases.
const SHARDS: usize = 64;

/// Smallest array per shard.
const MIN_CAPACITY: usize = 16;

/// One lease in an array. 32 bytes, so an entry never straddles two cache lines.
#[repr(align(32))]
#[derive(Default)]
struct Entry {
    /// The lease id; [`EMPTY`] or [`TOMB`] when the entry holds no lease.
    id: AtomicU64,
    /// The deadline word (see [`crate::deadline`]).
    deadline: Deadline,
    /// The granted TTL in nanoseconds; written before the id is published, then fixed.
    ttl: AtomicU64,
    /// The deadline as last checkpointed to disk (see the module docs); not on the renew path.
    checkpointed: AtomicU64,
}

// The deadline word adds nothing to its `AtomicU64` (loom's atomics are larger).
#[cfg(not(loom))]
const _: () = assert!(size_of::<Entry>() == 32);

/// One shard's array of entries: a power-of-two length, at most 7/8 used (live + tombstones),
/// so every probe meets an `EMPTY` entry.
struct Slots {
    entries: Box<[Entry]>,
}

impl Slots {
    fn with_capacity(capacity: usize) -> Slots {
        Slots {
            entries: (0..capacity).map(|_| Entry::default()).collect(),
        }
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The entry holding lease `id`.
    fn find(&self, id: u64, hash: u64) -> Option<&Entry> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.entries.len() {
            let e = &self.entries[i];
            match e.id.load(Ordering::Acquire) {
                x if x == id => return Some(e),
                EMPTY => return None,
                _ => i = (i + 1) & mask,
            }
        }
        None
    }

    /// The first never-used entry on `hash`'s probe sequence. The caller holds the shard mutex
    /// and has checked that the array has room.
    fn vacant(&self, hash: u64) -> Option<&Entry> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        for _ in 0..self.entries.len() {
            let e = &self.entries[i];
            if e.id.load(Ordering::Relaxed) == EMPTY {
                return Some(e);
            }
            i = (i + 1) & mask;
        }
        None
    }
}

/// Bookkeeping of a shard's array, guarded by the shard mutex.
#[derive(Default)]
struct Counts {
    /// Entries holding a lease.
    live: usize,
    /// Entries holding a lease or a tombstone.
    used: usize,
    /// Arrays this shard has had before the current one: a [`Sweep`] that stopped inside an
    /// array it no longer has starts that shard again.
    generation: u64,
}

/// How far a pass of [`LeaseTable::changed`] calls has gone through the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sweep {
    /// The shard to look at next; [`SHARDS`] when the pass is over.
    shard: usize,
    /// The entry of that shard's array to look at next.
    slot: usize,
    /// The `generation` of the array `slot` indexes.
    generation: u64,
}

impl Sweep {
    /// Whether the pass has looked at every shard.
    pub(crate) fn done(&self) -> bool {
        self.shard >= SHARDS
    }

    /// Ends the pass.
    pub(crate) fn finish(&mut self) {
        self.shard = SHARDS;
    }
}

#[repr(align(128))]
struct Shard {
    /// The current array. Loaded without locking; replaced only under `lock`.
    slots: ArcSwap<Slots>,
    /// Serialises insert, remove and rebuild of this shard, and the checkpointer's reads and
    /// writes of `checkpointed`; guards the counts. Readers that meet `MOVED` wait here.
    lock: Mutex<Counts>,
}

/// Every live lease, sharded; see the module docs.
pub(crate) struct LeaseTable {
    shards: Box<[Shard]>,
    /// Hashes ids: the top bits pick the shard, the low bits the position in its array.
    hasher: foldhash::fast::FixedState,
    /// Leases in the table, all shards together (alive, expired or claimed).
    live: AtomicUsize,
}

impl LeaseTable {
    pub(crate) fn new() -> LeaseTable {
        LeaseTable {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    slots: ArcSwap::from_pointee(Slots::with_capacity(MIN_CAPACITY)),
                    lock: Mutex::new(Counts::default()),
                })
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x6c65_7373_6f72),
            live: AtomicUsize::new(0),
        }
    }

    fn locate(&self, id: LeaseId) -> (&Shard, u64) {
        let hash = self.hasher.hash_one(id.get());
        (&self.shards[(hash >> 58) as usize % SHARDS], hash)
    }

    /// Runs `f` on lease `id`'s entry, looking again whenever it finds the array being
    /// replaced. `None` if there is no such lease.
    #[inline]
    fn with_entry<R>(
        &self,
        id: LeaseId,
        mut f: impl FnMut(&Entry) -> Result<R, Moved>,
    ) -> Option<R> {
        let (shard, hash) = self.locate(id);
        loop {
            let slots = shard.slots.load();
            match f(slots.find(id.get(), hash)?) {
                Ok(r) => return Some(r),
                Err(Moved) => {
                    drop(slots);
                    // The rebuild that wrote MOVED holds the lock until the new array is out.
                    drop(shard.lock.lock());
                }
            }
        }
    }

    /// Adds a lease just granted, alive until [`settle`](Self::settle) gives it its deadline
    /// (or replaces a claimed one with the same id).
    pub(crate) fn insert_pending(&self, id: LeaseId, ttl: u64) {
        self.insert(id, ttl, PENDING);
    }

    /// Adds a lease with a known deadline, whose checkpoint on disk is that deadline, or
    /// replaces a claimed one with the same id.
    pub(crate) fn insert(&self, id: LeaseId, ttl: u64, deadline: u64) {
        self.insert_checkpointed(id, ttl, deadline, deadline);
    }

    /// Adds a lease with a known deadline (recovery) whose checkpoint on disk is `checkpointed`
    /// (any other value, such as 0, to have it written), or replaces a claimed one.
    pub(crate) fn insert_checkpointed(
        &self,
        id: LeaseId,
        ttl: u64,
        deadline: u64,
        checkpointed: u64,
    ) {
        let (shard, hash) = self.locate(id);
        let mut counts = shard.lock.lock();
        let mut slots = shard.slots.load_full();
        if let Some(old) = slots.find(id.get(), hash) {
            // Callers claim a lease before replacing it; make sure no renew lands on the orphan.
            old.deadline.retire();
            old.id.store(TOMB, Ordering::Release);
            counts.live -= 1;
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
        if (counts.used + 1) * 8 > slots.entries.len() * 7 {
            let capacity = capacity_for(counts.live + 1);
            slots = rebuild(shard, &mut counts, capacity, &self.hasher);
        }
        debug_assert!(slots.vacant(hash).is_some(), "a shard array is full");
        if let Some(e) = slots.vacant(hash) {
            e.ttl.store(ttl, Ordering::Relaxed);
            e.checkpointed.store(checkpointed, Ordering::Relaxed);
            e.deadline.set(deadline);
            e.id.store(id.get(), Ordering::Release);
            counts.live += 1;
            counts.used += 1;
            self.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives a lease inserted by [`insert_pending`](Self::insert_pending) its first deadline,
    /// which its grant checkpointed. `false` if it was revoked meanwhile; the caller queues it if
    /// `true`.
    pub(crate) fn settle(&self, id: LeaseId, deadline: u64) -> bool {
        self.settle_written(id, deadline, deadline)
    }

    /// [`settle`](Self::settle), for a lease whose record on disk says `written` (its grant's
    /// checkpoint, stamped before the commit): if that is not `deadline`, the next checkpoint
    /// pass rewrites the record.
    pub(crate) fn settle_written(&self, id: LeaseId, deadline: u64, written: u64) -> bool {
        self.with_entry(id, |e| {
            // Before the CAS, which publishes it (see the module docs).
            e.checkpointed.store(written, Ordering::Relaxed);
            e.deadline.settle(deadline)
        })
        .unwrap_or(false)
    }

    /// Removes a lease; called once its revocation has committed.
    pub(crate) fn remove(&self, id: LeaseId) {
        let (shard, hash) = self.locate(id);
        let mut counts = shard.lock.lock();
        let slots = shard.slots.load_full();
        if let Some(e) = slots.find(id.get(), hash) {
            e.deadline.retire(); // already claimed by the caller
            e.id.store(TOMB, Ordering::Release);
            counts.live -= 1;
            self.live.fetch_sub(1, Ordering::Relaxed);
            if slots.entries.len() > MIN_CAPACITY && counts.live * 8 < slots.entries.len() {
                let capacity = capacity_for(counts.live);
                rebuild(shard, &mut counts, capacity, &self.hasher);
            }
        }
    }

    /// Removes a lease whose revocation has become durable, if it is still the claimed entry:
    /// a grant of the same id since then replaced it, and stays.
    pub(crate) fn remove_claimed(&self, id: LeaseId) {
        let (shard, hash) = self.locate(id);
        let counts = shard.lock.lock();
        let slots = shard.slots.load_full();
        let claimed = slots
            .find(id.get(), hash)
            .is_some_and(|e| Self::is_claimed(e.deadline.word()));
        drop(counts);
        if claimed {
            self.remove(id);
        }
    }

    /// Removes every lease (on close).
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut counts = shard.lock.lock();
            shard
                .slots
                .store(Arc::new(Slots::with_capacity(MIN_CAPACITY)));
            self.live.fetch_sub(counts.live, Ordering::Relaxed);
            *counts = Counts {
                generation: counts.generation.wrapping_add(1),
                ..Counts::default()
            };
        }
    }

    /// Up to `limit` leases whose deadline differs from the one last checkpointed, as
    /// `(id, deadline, ttl)`, continuing `sweep`'s pass through the table. Expired leases count
    /// (by the deadline their word keeps); claimed and pending ones do not. Call it with a fresh
    /// [`Sweep`] and again until [`Sweep::done`]: every lease changed when the pass began and not
    /// checkpointed since is returned at least once, even if arrays are rebuilt between calls.
    pub(crate) fn changed(&self, sweep: &mut Sweep, limit: usize) -> Vec<(LeaseId, u64, u64)> {
        let limit = limit.max(1); // so that every call moves the pass on
        let mut out = Vec::new();
        while sweep.shard < SHARDS {
            let shard = &self.shards[sweep.shard];
            // Holding the mutex keeps rebuilds (and so MOVED) and markings away while we look.
            let counts = shard.lock.lock();
            if counts.generation != sweep.generation {
                sweep.slot = 0; // the array we stopped in is gone: look at this one whole
            }
            let slots = shard.slots.load();
            while let Some(e) = slots.entries.get(sweep.slot) {
                if out.len() >= limit {
                    sweep.generation = counts.generation;
                    return out;
                }
                sweep.slot += 1;
                let id = e.id.load(Ordering::Acquire);
                if id == EMPTY || id == TOMB {
                    continue;
                }
                let Some(deadline) = checkpoint_deadline(e.deadline.word()) else {
                    continue;
                };
                if deadline != e.checkpointed.load(Ordering::Relaxed) {
                    out.extend(
                        LeaseId::new(id).map(|l| (l, deadline, e.ttl.load(Ordering::Relaxed))),
                    );
                }
            }
            drop(counts);
            sweep.shard += 1;
            sweep.slot = 0;
            sweep.generation = 0;
        }
        out
    }

    /// Records that lease `id`'s checkpoint on disk is now `deadline` (as returned by
    /// [`changed`](Self::changed)); if it was renewed meanwhile, it stays changed.
    pub(crate) fn mark_checkpointed(&self, id: LeaseId, deadline: u64) {
        let (shard, hash) = self.locate(id);
        let _counts = shard.lock.lock();
        if let Some(e) = shard.slots.load().find(id.get(), hash) {
            e.checkpointed.store(deadline, Ordering::Relaxed);
        }
    }

    /// The renew path: if the lease is alive at `now`, moves its deadline to `now + ttl` (never
    /// backwards) and returns its TTL in nanoseconds; `None` if it is unknown, claimed or expired.
    #[inline]
    pub(crate) fn renew(&self, id: LeaseId, now: u64) -> Option<u64> {
        // `Deadline::renew` clamps `now` too; clamping here as well (folded into one by the
        // compiler) keeps the clock arithmetic ahead of the lookup, where it overlaps the probe.
        let now = now.min(MAX_DEADLINE);
        self.with_entry(id, |e| {
            let ttl = e.ttl.load(Ordering::Relaxed);
            Ok(e.deadline.renew(now, ttl)?.then_some(ttl))
        })
        .flatten()
    }

    /// `(ttl, deadline)` of a lease alive at `now`; marks it expired if its deadline has passed.
    pub(crate) fn alive(&self, id: LeaseId, now: u64) -> Option<(u64, u64)> {
        self.with_entry(id, |e| {
            let deadline = e.deadline.alive(now)?;
            Ok(deadline.map(|d| (e.ttl.load(Ordering::Relaxed), d)))
        })
        .flatten()
    }

    /// Whether lease `id` was granted and not yet settled (its grant not yet acknowledged).
    pub(crate) fn is_pending_id(&self, id: LeaseId) -> bool {
        self.with_entry(id, |e| match e.deadline.word() {
            MOVED => Err(Moved),
            word => Ok(Self::is_pending(word)),
        })
        .unwrap_or(false)
    }

    /// Whether the table has an entry for `id`, alive, expired or claimed.
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.with_entry(id, |_| Ok(())).is_some()
    }

    /// Claims a lease for revocation whatever its deadline, returning the deadline word it had
    /// (to [`restore`](Self::restore) if the revocation fails), or `None` if there is no entry or
    /// it was already claimed.
    pub(crate) fn claim(&self, id: LeaseId) -> Option<u64> {
        self.with_entry(id, |e| e.deadline.claim()).flatten()
    }

    /// After a [`claim`](Self::claim) whose revocation did not commit, puts back the deadline the
    /// lease had, marked expired: callers were told it is gone while it was claimed, so it stays
    /// dead, and expiry revokes it from its queue entry at that deadline. Returns `false` for a
    /// lease claimed before it was settled (it has no queue entry): the caller must see to it.
    pub(crate) fn restore(&self, id: LeaseId, claimed: u64) -> bool {
        self.with_entry(id, |e| e.deadline.restore(claimed))
            .unwrap_or(false)
    }

    /// After a [`claim`](Self::claim) whose revocation failed in storage, puts back the deadline
    /// word the lease had, as it was: the lessor reloads from the file, where the lease still
    /// is, so the revocation did not happen. Returns `false` if the lease was claimed before it
    /// was settled (the caller must see to it).
    pub(crate) fn unclaim(&self, id: LeaseId, claimed: u64) -> bool {
        self.with_entry(id, |e| e.deadline.unclaim(claimed))
            .unwrap_or(false)
    }

    /// Decides the fate of an expiry-queue entry `(queued, id)` popped at `now`; claims the lease
    /// if it has expired.
    pub(crate) fn check_due(&self, id: LeaseId, queued: u64, now: u64) -> Due {
        self.with_entry(id, |e| e.deadline.check_due(queued, now))
            .unwrap_or(Due::Stale)
    }

    /// The real deadline of a lease that is in the table and not claimed (expired or not).
    pub(crate) fn deadline_of(&self, id: LeaseId) -> Option<u64> {
        self.with_entry(id, |e| e.deadline.deadline()).flatten()
    }

    /// Ids of the leases alive at `now`, ascending. Marks the expired ones it meets.
    pub(crate) fn alive_ids(&self, now: u64) -> Vec<LeaseId> {
        self.collect_ids(|e| matches!(e.deadline.alive(now), Ok(Some(_))))
    }

    /// Every lease in the table as `(id, ttl, deadline word)`, ascending by id; for reloading
    /// after a storage failure, not for hot paths.
    pub(crate) fn entries(&self) -> Vec<(LeaseId, u64, u64)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let _counts: MutexGuard<'_, Counts> = shard.lock.lock(); // no rebuild, no MOVED
            let slots = shard.slots.load();
            for e in slots.entries.iter() {
                let id = e.id.load(Ordering::Acquire);
                if let (false, Some(id)) = (id == TOMB, LeaseId::new(id)) {
                    out.push((id, e.ttl.load(Ordering::Relaxed), e.deadline.word()));
                }
            }
        }
        out.sort_unstable_by_key(|&(id, _, _)| id);
        out
    }

    /// Whether `word` (from [`entries`](Self::entries)) is a claimed lease's.
    pub(crate) fn is_claimed(word: u64) -> bool {
        word == DEAD
    }

    /// Whether `word` (from [`entries`](Self::entries)) is that of a lease granted but not yet
    /// [settled](Self::settle).
    pub(crate) fn is_pending(word: u64) -> bool {
        word == PENDING
    }

    /// Marks lease `id`'s checkpoint as unwritten, so that the next checkpoint pass writes its
    /// deadline again (after a reload, the file may hold an older one).
    pub(crate) fn forget_checkpoint(&self, id: LeaseId) {
        let (shard, hash) = self.locate(id);
        let _counts = shard.lock.lock(); // `checkpointed` is written under the shard mutex
        if let Some(e) = shard.slots.load().find(id.get(), hash) {
            e.checkpointed.store(DEAD, Ordering::Relaxed);
        }
    }

    /// Ids of every lease in the table (alive, expired or claimed), ascending.
    pub(crate) fn all_ids(&self) -> Vec<LeaseId> {
        self.collect_ids(|_| true)
    }

    fn collect_ids(&self, mut keep: impl FnMut(&Entry) -> bool) -> Vec<LeaseId> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            // Holding the mutex keeps rebuilds (and so MOVED) away while we look.
            let _counts: MutexGuard<'_, Counts> = shard.lock.lock();
            let slots = shard.slots.load();
            for e in slots.entries.iter() {
                let id = e.id.load(Ordering::Acquire);
                if id != EMPTY && id != TOMB && keep(e) {
                    ids.extend(LeaseId::new(id));
                }
            }
        }
        ids.sort_unstable();
        ids
    }

    /// Number of leases in the table (alive, expired or claimed).
    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// The array length for `live` leases: the smallest power of two they fill to at most 7/10.
fn capacity_for(live: usize) -> usize {
    (live * 10 / 7 + 1).next_power_of_two().max(MIN_CAPACITY)
}

/// Replaces `shard`'s array by one of `capacity` entries holding its live leases; the caller
/// holds the shard mutex. Returns the new array.
fn rebuild(
    shard: &Shard,
    counts: &mut Counts,
    capacity: usize,
    hasher: &foldhash::fast::FixedState,
) -> Arc<Slots> {
    let old = shard.slots.load_full();
    let new = Arc::new(Slots::with_capacity(capacity));
    for e in old.entries.iter() {
        let id = e.id.load(Ordering::Acquire);
        if id == EMPTY || id == TOMB {
            continue;
        }
        // From here on every CAS on the old entry fails; the value swapped out is the last.
        let deadline = e.deadline.move_out();
        if let Some(slot) = new.vacant(hasher.hash_one(id)) {
            slot.ttl
                .store(e.ttl.load(Ordering::Relaxed), Ordering::Relaxed);
            // After the swap: a `settle` that stored it before its CAS is seen here.
            slot.checkpointed
                .store(e.checkpointed.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.deadline.set(deadline);
            slot.id.store(id, Ordering::Release);
        }
    }
    shard.slots.store(Arc::clone(&new));
    counts.used = counts.live;
    counts.generation = counts.generation.wrapping_add(1);
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    #[test]
    fn renew_moves_the_deadline_forward_only_while_alive() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        assert_eq!(t.renew(id(1), 5), Some(10));
        assert_eq!(t.alive(id(1), 5), Some((10, 15)));
        // never backwards: a renew with an older `now` leaves the later deadline
        assert_eq!(t.renew(id(1), 1), Some(10));
        assert_eq!(t.alive(id(1), 5), Some((10, 15)));
        // dead the instant the deadline passes
        assert_eq!(t.renew(id(1), 15), None);
        assert_eq!(t.alive(id(1), 15), None);
        assert_eq!(t.renew(id(2), 0), None);
    }

    #[test]
    fn a_lease_seen_dead_stays_dead_for_renewals_with_an_older_clock_reading() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        assert_eq!(t.renew(id(1), 10), None); // refused at 10 ...
        assert_eq!(t.renew(id(1), 5), None); // ... so a renew that read the clock at 5 fails too
        assert_eq!(t.alive(id(1), 5), None);
        t.insert(id(2), 10, 10);
        assert_eq!(t.alive(id(2), 12), None); // seen dead by time_to_live & co. as well
        assert_eq!(t.renew(id(2), 9), None);
        // the mark keeps the deadline: expiry claims it from its own queue entry
        assert_eq!(t.check_due(id(2), 10, 10), Due::Claimed);
    }

    #[test]
    fn pending_leases_are_alive_to_nobody_until_settled() {
        let t = LeaseTable::new();
        t.insert_pending(id(1), 10);
        // Its grant is not acknowledged yet: not alive, not renewable, but there.
        assert!(t.alive(id(1), 1_000).is_none());
        assert_eq!(t.renew(id(1), 1_000), None);
        assert!(t.contains(id(1)) && t.is_pending_id(id(1)));
        assert_eq!(t.check_due(id(1), 5, 1_000), Due::Stale);
        assert!(t.settle(id(1), 1_010));
        assert!(!t.settle(id(1), 2_000));
        assert_eq!(t.alive(id(1), 1_000), Some((10, 1_010)));
        assert!(!t.settle(id(2), 5)); // unknown
    }

    #[test]
    fn claim_beats_later_renewals_and_restore_undoes_it() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        assert_eq!(t.claim(id(1)), Some(10));
        assert_eq!(t.claim(id(1)), None);
        assert_eq!(t.renew(id(1), 0), None);
        assert_eq!(t.deadline_of(id(1)), None);
        // restored dead: renewals were refused while it was claimed, so they stay refused ...
        assert!(t.restore(id(1), 10));
        assert_eq!(t.renew(id(1), 0), None);
        // ... and expiry takes it from its queue entry
        assert_eq!(t.deadline_of(id(1)), Some(10));
        assert_eq!(t.check_due(id(1), 10, 10), Due::Claimed);
        // a lease claimed before it was settled has no queue entry: the caller handles it
        t.insert_pending(id(2), 10);
        let claimed = t.claim(id(2)).unwrap();
        assert!(!t.settle(id(2), 50));
        assert!(!t.restore(id(2), claimed));
    }

    #[test]
    fn a_saturated_clock_never_turns_a_deadline_into_a_marker() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, deadline_after(u64::MAX - 100, 10));
        t.insert_pending(id(2), 10);
        assert_eq!(t.alive(id(1), u64::MAX), None); // expired, marked
        assert!(t.alive(id(2), u64::MAX).is_none()); // pending: alive to nobody yet
        assert!(t.is_pending_id(id(2))); // and not marked expired
        assert_eq!(t.renew(id(1), u64::MAX), None);
        assert_eq!(t.deadline_of(id(1)), Some(MAX_DEADLINE));
        assert_eq!(t.check_due(id(1), MAX_DEADLINE, u64::MAX), Due::Claimed);
        assert!(t.settle(id(2), MAX_DEADLINE));
    }

    #[test]
    fn check_due_requeues_renewed_claims_expired_and_drops_stale() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        t.renew(id(1), 5); // deadline 15, still queued at 10
        assert_eq!(t.check_due(id(1), 10, 10), Due::Requeue(15));
        // renewed and expired again: still re-queued, so that expiry stays in deadline order
        assert_eq!(t.check_due(id(1), 10, 99), Due::Requeue(15));
        assert_eq!(t.check_due(id(1), 20, 99), Due::Stale); // an entry later than the lease
        assert_eq!(t.check_due(id(1), 15, 15), Due::Claimed);
        assert_eq!(t.check_due(id(1), 15, 15), Due::Stale); // already claimed
        assert_eq!(t.check_due(id(9), 15, 15), Due::Stale); // unknown
    }

    #[test]
    fn deadlines_are_never_dead_and_never_overflow() {
        assert_eq!(deadline_after(0, 0), 1);
        assert_eq!(deadline_after(u64::MAX - 1, 5), MAX_DEADLINE);
        assert_eq!(deadline_after(5, 10), 15);
    }

    #[test]
    fn grows_shrinks_and_replaces_without_losing_deadlines() {
        let t = LeaseTable::new();
        for n in 1..=5_000 {
            t.insert(id(n), 100_000, 100_000 + n);
        }
        assert_eq!(t.len(), 5_000);
        for n in (1..=5_000).step_by(7) {
            assert_eq!(t.renew(id(n), 50_000), Some(100_000));
        }
        for n in 1..=4_990 {
            if n % 3 != 0 {
                assert!(t.claim(id(n)).is_some());
                t.remove(id(n));
            }
        }
        for n in 1..=5_000u64 {
            let want = if n <= 4_990 && n % 3 != 0 {
                None
            } else if (n - 1) % 7 == 0 {
                Some(150_000)
            } else {
                Some(100_000 + n)
            };
            assert_eq!(t.deadline_of(id(n)), want, "lease {n}");
        }
        // re-granting a claimed id replaces its entry
        t.claim(id(3));
        t.insert(id(3), 50, 60);
        assert_eq!(t.alive(id(3), 0), Some((50, 60)));
        assert_eq!(t.all_ids().len(), t.len());
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(!t.contains(id(3)));
    }

    #[test]
    fn racing_renew_and_claim_never_both_win() {
        for _ in 0..200 {
            let t = Arc::new(LeaseTable::new());
            t.insert(id(1), 1_000, 1_000);
            let t2 = Arc::clone(&t);
            let renewer = std::thread::spawn(move || {
                let mut now = 0;
                while t2.renew(id(1), now % 999).is_some() {
                    now += 1;
                }
            });
            assert!(t.claim(id(1)).is_some());
            renewer.join().unwrap();
            // had a renew's CAS landed after the claim, the slot would be alive again
            assert_eq!(t.alive(id(1), 0), None);
        }
    }

    #[test]
    fn renewals_racing_rebuilds_are_never_lost() {
        // One thread renews lease 1 forever forward while another grows and shrinks its shard.
        let t = Arc::new(LeaseTable::new());
        t.insert(id(1), 1_000_000, 1_000_000);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t2, stop2) = (Arc::clone(&t), Arc::clone(&stop));
        let renewer = std::thread::spawn(move || {
            let mut now = 0;
            while !stop2.load(Ordering::Relaxed) {
                now += 1;
                assert_eq!(t2.renew(id(1), now), Some(1_000_000));
            }
            now
        });
        for round in 0..20u64 {
            let ids: Vec<LeaseId> = (2..2_000).map(|n| id(n + round * 10_000)).collect();
            for &i in &ids {
                t.insert(i, 1, 1);
            }
            for &i in &ids {
                t.remove(i);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let last = renewer.join().unwrap();
        assert_eq!(t.deadline_of(id(1)), Some(last + 1_000_000));
    }

    /// Every changed lease of one whole pass, in batches of `limit`, marking each batch.
    fn sweep_all(t: &LeaseTable, limit: usize) -> (Vec<(LeaseId, u64, u64)>, usize) {
        let mut sweep = Sweep::default();
        let (mut all, mut batches) = (Vec::new(), 0);
        while !sweep.done() {
            let batch = t.changed(&mut sweep, limit);
            assert!(batch.len() <= limit);
            for &(i, d, _) in &batch {
                t.mark_checkpointed(i, d);
            }
            all.extend(batch);
            batches += 1;
        }
        all.sort_unstable();
        (all, batches)
    }

    #[test]
    fn changed_lists_renewed_leases_until_they_are_marked() {
        let t = LeaseTable::new();
        for n in 1..=6 {
            t.insert(id(n), 10, 10); // checkpointed at its deadline
        }
        assert_eq!(sweep_all(&t, 100).0, vec![]);
        t.renew(id(2), 5); // 15
        t.renew(id(3), 5);
        t.alive(id(3), 16); // expired since: the word keeps 15 under the EXPIRED bit
        t.renew(id(4), 5);
        t.claim(id(4)); // claimed: its revocation is on the way, nothing to write
        t.insert_pending(id(7), 10); // granted, not settled: the grant writes it
        t.insert_checkpointed(id(8), 10, 10, DEAD); // recovered, record to rewrite
        let (changed, _) = sweep_all(&t, 100);
        assert_eq!(
            changed,
            vec![(id(2), 15, 10), (id(3), 15, 10), (id(8), 10, 10)]
        );
        assert_eq!(sweep_all(&t, 100).0, vec![], "marked: nothing left");
        // a settled grant is checkpointed at its first deadline
        assert!(t.settle(id(7), 12));
        assert_eq!(sweep_all(&t, 100).0, vec![]);
        // renewed after the scan but before the marking: still changed
        t.renew(id(1), 6); // 16
        let mut sweep = Sweep::default();
        let batch = t.changed(&mut sweep, 100);
        assert_eq!(batch, vec![(id(1), 16, 10)]);
        t.renew(id(1), 7); // 17
        t.mark_checkpointed(id(1), 16);
        assert_eq!(sweep_all(&t, 100).0, vec![(id(1), 17, 10)]);
    }

    #[test]
    fn changed_comes_in_bounded_batches_and_survives_rebuilds() {
        let t = LeaseTable::new();
        for n in 1..=3_000 {
            t.insert(id(n), 1_000, 1_000);
        }
        for n in (1..=3_000).step_by(2) {
            t.renew(id(n), 500);
        }
        let (changed, batches) = sweep_all(&t, 100);
        assert_eq!(changed.len(), 1_500);
        assert!(batches >= 15, "{batches} batches");
        assert!(
            changed
                .iter()
                .all(|&(i, d, _)| i.get() % 2 == 1 && d == 1_500)
        );

        // A pass interrupted by rebuilds (growing and shrinking every shard) still finds every
        // lease changed before it began, and rebuilds keep what was marked.
        for n in (2..=3_000).step_by(2) {
            t.renew(id(n), 600);
        }
        let mut sweep = Sweep::default();
        let mut found = Vec::new();
        let mut round = 0u64;
        while !sweep.done() {
            let batch = t.changed(&mut sweep, 50);
            for &(i, d, _) in &batch {
                t.mark_checkpointed(i, d);
            }
            found.extend(batch.into_iter().map(|(i, _, _)| i));
            let extra: Vec<LeaseId> = (0..800).map(|n| id(100_000 + round * 1_000 + n)).collect();
            for &i in &extra {
                t.insert(i, 1, 1);
            }
            for &i in &extra {
                t.remove(i);
            }
            round += 1;
        }
        found.sort_unstable();
        found.dedup();
        let want: Vec<LeaseId> = (2..=3_000).step_by(2).map(id).collect();
        assert_eq!(found, want);
        assert_eq!(sweep_all(&t, 100).0, vec![], "marks survived the rebuilds");
        // and a lease renewed after its marking shows up again
        t.renew(id(2), 700);
        assert_eq!(sweep_all(&t, 100).0, vec![(id(2), 1_700, 1_000)]);
        // after a clear, a pass that had stopped in an old array starts the new one whole
        let mut sweep = Sweep::default();
        t.renew(id(4), 800);
        t.renew(id(6), 800);
        let first = t.changed(&mut sweep, 1)[0].0;
        t.clear();
        t.insert_checkpointed(first, 10, 10, DEAD); // same shard as where the pass stopped
        let mut rest = Vec::new();
        while !sweep.done() {
            rest.extend(t.changed(&mut sweep, 1));
        }
        assert_eq!(rest, vec![(first, 10, 10)]);
    }

    #[test]
    fn settle_keeps_its_checkpoint_across_a_racing_rebuild() {
        // One thread grants and settles while another grows and shrinks the same shards: a
        // settled lease must never look changed.
        for round in 0..20u64 {
            let t = Arc::new(LeaseTable::new());
            let t2 = Arc::clone(&t);
            let base = round * 10_000;
            let churn = std::thread::spawn(move || {
                for n in 0..2_000 {
                    t2.insert(id(base + 5_000 + n), 1, 1);
                }
                for n in 0..2_000 {
                    t2.remove(id(base + 5_000 + n));
                }
            });
            for n in 1..=500 {
                t.insert_pending(id(base + n), 10);
                assert!(t.settle(id(base + n), 100 + n));
            }
            churn.join().unwrap();
            assert_eq!(sweep_all(&t, 10_000).0, vec![]);
        }
    }

    #[test]
    fn alive_ids_are_sorted_and_skip_dead() {
        let t = LeaseTable::new();
        for n in [5, 3, 9, 1] {
            t.insert(id(n), 10, 10);
        }
        t.claim(id(3));
        assert_eq!(t.alive_ids(0), vec![id(1), id(5), id(9)]);
        assert_eq!(t.all_ids(), vec![id(1), id(3), id(5), id(9)]);
        assert_eq!(t.len(), 4);
        t.remove(id(3));
        assert_eq!(t.len(), 3);
        assert_eq!(t.alive_ids(10), vec![]);
    }
}
