//! The in-memory lease table: where renew happens.
//!
//! # Implementation
//!
//! Live leases sit in a fixed number of shards, each a `RwLock<HashMap<id, Slot>>` padded to its
//! own cache lines. A slot holds the lease's TTL and its deadline as an `AtomicU64` (nanoseconds
//! of the lessor's clock). Renew takes the read lock of one shard, so renewals of different
//! leases never write a shared cache line, and moves the deadline forward with a compare-and-swap.
//! Nothing on the renew path touches the disk, the expiry queue or any exclusive lock.
//!
//! A lease ends by a *claim*: its deadline is swapped to [`DEAD`] (0). Renew refuses a deadline
//! that is `DEAD` or already past, so between a renew and a claim on the same lease exactly one
//! compare-and-swap wins: a lease is never both renewed and expired.
//!
//! Whoever finds a deadline past (a renew, `time_to_live`, `leases`) sets its [`EXPIRED`] bit.
//! That makes the verdict stick: a renew that read the clock earlier, and whose compare-and-swap
//! lands later, fails on the changed word instead of reviving a lease someone was told is gone.
//! The bit keeps the deadline itself, so expiry still happens in deadline order.
//!
//! Ground rules:
//! - shard write locks are taken only to insert or remove a slot (grant, revoke, expiry, open);
//! - `queued` is written only by holders of the expiry-queue lock (lock order: queue, then shard);
//! - a slot is removed only after its revocation has committed.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::lease::LeaseId;

/// The deadline of a lease that has been claimed for revocation (by `revoke` or by expiry).
/// Real deadlines are always at least 1 (see [`deadline_after`]).
pub(crate) const DEAD: u64 = 0;

/// Set on a deadline that someone has seen pass; the low bits keep the deadline.
pub(crate) const EXPIRED: u64 = 1 << 63;

/// The latest representable deadline (about 292 years of clock time).
const MAX_DEADLINE: u64 = EXPIRED - 1;

/// The deadline of a lease granted but not yet given its first deadline: alive until
/// [`LeaseTable::settle`] replaces it, moments later.
const PENDING: u64 = MAX_DEADLINE;

/// Number of shards: a power of two. 64 keeps two renewing threads apart nearly always while
/// keeping the table's fixed cost at 8 KiB.
const SHARDS: usize = 64;

/// The deadline of a lease renewed (or granted) at `now` with `ttl`, both in nanoseconds.
/// Never `DEAD`, never with the `EXPIRED` bit, saturating instead of overflowing.
pub(crate) fn deadline_after(now: u64, ttl: u64) -> u64 {
    now.saturating_add(ttl).clamp(1, MAX_DEADLINE)
}

/// The deadline of a slot as of `now`, if it is alive. A deadline found past is marked
/// [`EXPIRED`], so that the verdict cannot be undone by a renew working from an older clock
/// reading.
fn observe(slot: &Slot, now: u64) -> Option<u64> {
    let mut cur = slot.deadline.load(Ordering::Acquire);
    loop {
        if cur == DEAD || cur & EXPIRED != 0 {
            return None;
        }
        if cur > now {
            return Some(cur);
        }
        match slot.deadline.compare_exchange_weak(
            cur,
            cur | EXPIRED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return None,
            Err(actual) => cur = actual,
        }
    }
}

/// One live lease.
struct Slot {
    /// The deadline in clock nanoseconds, or `DEAD` once claimed. Renew moves it forward by CAS;
    /// a claim swaps it to `DEAD`.
    deadline: AtomicU64,
    /// The deadline under which this lease's single entry sits in the expiry queue. Guarded by
    /// the expiry-queue lock (an atomic only so that it can be written under a shard read lock).
    queued: AtomicU64,
    /// The granted TTL in nanoseconds; fixed for the slot's life.
    ttl: u64,
}

/// What the expiry queue should do with an entry it popped; see [`LeaseTable::check_due`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// The entry is stale (lease gone, re-granted, or already claimed): drop it.
    Stale,
    /// The lease was renewed: queue it again at this deadline.
    Requeue(u64),
    /// The lease has expired and is now claimed (`DEAD`) for revocation.
    Claimed,
}

#[repr(align(128))]
struct Shard(RwLock<HashMap<u64, Slot, foldhash::fast::RandomState>>);

/// Every live lease, sharded; see the module docs.
pub(crate) struct LeaseTable {
    /// Each shard's lock guards its map's shape (insert, remove); slots change through atomics.
    shards: Box<[Shard]>,
    /// Picks a shard from an id; independent of the maps' own hashers.
    router: foldhash::fast::FixedState,
}

impl LeaseTable {
    pub(crate) fn new() -> LeaseTable {
        LeaseTable {
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(HashMap::default())))
                .collect(),
            router: foldhash::fast::FixedState::with_seed(0x6c65_7373_6f72),
        }
    }

    fn shard(&self, id: u64) -> &RwLock<HashMap<u64, Slot, foldhash::fast::RandomState>> {
        let h = self.router.hash_one(id);
        &self.shards[(h >> 58) as usize % SHARDS].0
    }

    /// Adds a lease just granted, alive until [`settle`](Self::settle) gives it its deadline
    /// (or replaces a claimed one with the same id).
    pub(crate) fn insert_pending(&self, id: LeaseId, ttl: u64) {
        self.insert(id, ttl, PENDING);
    }

    /// Gives a lease inserted by [`insert_pending`](Self::insert_pending) its first deadline;
    /// the caller holds the expiry-queue lock and queues the lease if this returns `true`.
    /// `false` if it was revoked meanwhile.
    pub(crate) fn settle(&self, id: LeaseId, deadline: u64) -> bool {
        let map = self.shard(id.get()).read();
        let Some(slot) = map.get(&id.get()) else {
            return false;
        };
        let settled = slot
            .deadline
            .compare_exchange(PENDING, deadline, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if settled {
            slot.queued.store(deadline, Ordering::Relaxed);
        }
        settled
    }

    /// Adds a lease with a known deadline (recovery), or replaces a claimed one with the same id.
    pub(crate) fn insert(&self, id: LeaseId, ttl: u64, deadline: u64) {
        let slot = Slot {
            deadline: AtomicU64::new(deadline),
            queued: AtomicU64::new(deadline),
            ttl,
        };
        self.shard(id.get()).write().insert(id.get(), slot);
    }

    /// Removes a lease; called once its revocation has committed.
    pub(crate) fn remove(&self, id: LeaseId) {
        self.shard(id.get()).write().remove(&id.get());
    }

    /// Removes every lease (on close).
    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            *s.0.write() = HashMap::default();
        }
    }

    /// The renew path: if the lease is alive at `now`, moves its deadline to `now + ttl` (never
    /// backwards) and returns its TTL in nanoseconds; `None` if it is unknown, claimed or expired.
    #[inline]
    pub(crate) fn renew(&self, id: LeaseId, now: u64) -> Option<u64> {
        let map = self.shard(id.get()).read();
        let slot = map.get(&id.get())?;
        let target = deadline_after(now, slot.ttl);
        let mut cur = slot.deadline.load(Ordering::Acquire);
        loop {
            if cur > now && cur < EXPIRED {
                if cur >= target {
                    return Some(slot.ttl); // a concurrent renew already went further
                }
                match slot.deadline.compare_exchange_weak(
                    cur,
                    target,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(slot.ttl),
                    Err(actual) => cur = actual,
                }
            } else {
                // Claimed, marked, or past: observe() marks a past deadline so it stays dead. If
                // a concurrent renew got there first, try again from its deadline.
                cur = observe(slot, now)?;
            }
        }
    }

    /// `(ttl, deadline)` of a lease alive at `now`; marks it expired if its deadline has passed.
    pub(crate) fn alive(&self, id: LeaseId, now: u64) -> Option<(u64, u64)> {
        let map = self.shard(id.get()).read();
        let slot = map.get(&id.get())?;
        observe(slot, now).map(|d| (slot.ttl, d))
    }

    /// Whether the table has a slot for `id`, alive, expired or claimed.
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.shard(id.get()).read().contains_key(&id.get())
    }

    /// Claims a lease for revocation whatever its deadline, returning the deadline it had (to
    /// [`restore`](Self::restore) if the revocation fails), or `None` if there is no slot or it
    /// was already claimed.
    pub(crate) fn claim(&self, id: LeaseId) -> Option<u64> {
        let map = self.shard(id.get()).read();
        let slot = map.get(&id.get())?;
        match slot.deadline.swap(DEAD, Ordering::AcqRel) {
            DEAD => None,
            d => Some(d),
        }
    }

    /// Undoes a [`claim`](Self::claim) whose revocation did not commit.
    pub(crate) fn restore(&self, id: LeaseId, deadline: u64) {
        if let Some(slot) = self.shard(id.get()).read().get(&id.get()) {
            let _ =
                slot.deadline
                    .compare_exchange(DEAD, deadline, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Decides the fate of an expiry-queue entry `(queued, id)` popped at `now`; the caller holds
    /// the queue lock. Claims the lease if it has expired.
    pub(crate) fn check_due(&self, id: LeaseId, queued: u64, now: u64) -> Due {
        let map = self.shard(id.get()).read();
        let Some(slot) = map.get(&id.get()) else {
            return Due::Stale;
        };
        if slot.queued.load(Ordering::Relaxed) != queued {
            return Due::Stale; // an entry of an earlier lease with this id
        }
        let mut cur = slot.deadline.load(Ordering::Acquire);
        loop {
            if cur == DEAD {
                return Due::Stale;
            }
            let deadline = cur & !EXPIRED;
            if deadline != queued || deadline > now {
                // Renewed since it was queued (deadlines only grow). Re-queue it at its real
                // deadline even if that has passed too: claiming it now would revoke it ahead of
                // leases whose deadlines fall between the two.
                slot.queued.store(deadline, Ordering::Relaxed);
                return Due::Requeue(deadline);
            }
            // Due and not renewed since queued: claim it, unless a renew lands first.
            match slot
                .deadline
                .compare_exchange(cur, DEAD, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Due::Claimed,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The deadline a live (unclaimed) lease's queue entry sits at.
    pub(crate) fn queued_at(&self, id: LeaseId) -> Option<u64> {
        let map = self.shard(id.get()).read();
        let slot = map.get(&id.get())?;
        (slot.deadline.load(Ordering::Acquire) != DEAD).then(|| slot.queued.load(Ordering::Relaxed))
    }

    /// Ids of the leases alive at `now`, ascending.
    pub(crate) fn alive_ids(&self, now: u64) -> Vec<LeaseId> {
        let mut ids = Vec::new();
        for s in self.shards.iter() {
            let map = s.0.read();
            ids.extend(
                map.iter()
                    .filter(|(_, slot)| observe(slot, now).is_some())
                    .filter_map(|(&id, _)| LeaseId::new(id)),
            );
        }
        ids.sort_unstable();
        ids
    }

    /// Ids of every slot (alive, expired or claimed), ascending.
    pub(crate) fn all_ids(&self) -> Vec<LeaseId> {
        let mut ids = Vec::new();
        for s in self.shards.iter() {
            ids.extend(s.0.read().keys().filter_map(|&id| LeaseId::new(id)));
        }
        ids.sort_unstable();
        ids
    }

    /// Number of slots (alive, expired or claimed).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
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
    fn pending_leases_are_alive_until_settled() {
        let t = LeaseTable::new();
        t.insert_pending(id(1), 10);
        assert!(t.alive(id(1), 1_000).is_some());
        assert!(t.settle(id(1), 1_010));
        assert!(!t.settle(id(1), 2_000));
        assert_eq!(t.alive(id(1), 1_000), Some((10, 1_010)));
        assert_eq!(t.queued_at(id(1)), Some(1_010));
        assert!(!t.settle(id(2), 5)); // unknown
    }

    #[test]
    fn claim_beats_later_renewals_and_restore_undoes_it() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        assert_eq!(t.claim(id(1)), Some(10));
        assert_eq!(t.claim(id(1)), None);
        assert_eq!(t.renew(id(1), 0), None);
        t.restore(id(1), 10);
        assert_eq!(t.renew(id(1), 0), Some(10));
    }

    #[test]
    fn check_due_requeues_renewed_claims_expired_and_drops_stale() {
        let t = LeaseTable::new();
        t.insert(id(1), 10, 10);
        t.renew(id(1), 5); // deadline 15, still queued at 10
        assert_eq!(t.check_due(id(1), 10, 10), Due::Requeue(15));
        // renewed and expired again: still re-queued, so that expiry stays in deadline order
        t.insert(id(2), 10, 10);
        t.renew(id(2), 5);
        assert_eq!(t.check_due(id(2), 10, 99), Due::Requeue(15));
        assert_eq!(t.check_due(id(2), 15, 99), Due::Claimed);
        assert_eq!(t.check_due(id(1), 10, 15), Due::Stale); // old entry
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
    fn racing_renew_and_claim_never_both_win() {
        use std::sync::Arc;
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
            assert_eq!(t.renew(id(1), 0), None);
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
    }
}
