//! The deadline word: one lease's deadline and state in one atomic, and every way it changes.
//!
//! # Implementation
//!
//! Each entry of the [`LeaseTable`](crate::lease_table::LeaseTable) holds a [`Deadline`]: one
//! `AtomicU64` in nanoseconds of the lessor's clock, which also carries the lease's state:
//! - `1..=2^63-1`: alive until then. [`PENDING`] (the largest) marks a lease granted but not yet
//!   [`settle`](Deadline::settle)d: its grant is not acknowledged yet (under `Immediate`, not yet
//!   durable), so it is not alive to anyone (renew and readers get `None`) until it settles.
//! - [`EXPIRED`] bit set: someone saw the deadline pass; the low bits keep the deadline.
//! - [`DEAD`] (0): claimed for revocation, by `revoke` or by expiry.
//! - [`MOVED`] (`u64::MAX`): this entry's array is being replaced; look again in the new one.
//!
//! `now` is clamped to [`MAX_DEADLINE`] like every real deadline, so no clock reading turns a
//! deadline into a marker.
//!
//! A lease ends by a *claim* (a CAS to `DEAD`); renew succeeds only by a CAS from a live
//! deadline, so between a renew and a claim exactly one wins: a lease is never both renewed and
//! expired. Whoever sees a deadline pass sets its `EXPIRED` bit by CAS; a renew that read the
//! clock earlier and lands its CAS later then fails on the changed word.
//!
//! Invariants (model-checked under loom by the tests at the bottom of this file; see
//! docs/design.md, "Model checking"):
//! - a renew that returned `true` took effect before any claim: the claim returns a word at
//!   least the renewal's deadline, and no expiry claims the lease before that deadline;
//! - a lease someone was told is dead ([`alive`](Deadline::alive) returned `None`, or it was
//!   claimed) is never renewed again: only [`unclaim`](Deadline::unclaim), after a revocation
//!   that failed in storage, brings it back, and exactly as it was when claimed;
//! - a lease is claimed at most once, by `claim` or by [`check_due`](Deadline::check_due);
//! - [`move_out`](Deadline::move_out) returns the word's last value: every change made before it
//!   is copied to the new array, every one after it fails with [`Moved`] and is retried there.
//!
//! Changes are CASes or a swap, `AcqRel` (`Acquire` on failure and for loads), except two plain
//! stores under the shard mutex: [`set`](Deadline::set), on an entry not yet published, and
//! [`retire`](Deadline::retire), on a claimed one about to become a tombstone.

use crate::sync::{AtomicU64, Ordering};

/// The deadline of a lease that has been claimed for revocation.
pub(crate) const DEAD: u64 = 0;

/// Set on a deadline that someone has seen pass; the low bits keep the deadline.
pub(crate) const EXPIRED: u64 = 1 << 63;

/// The deadline word of an entry whose array is being replaced.
pub(crate) const MOVED: u64 = u64::MAX;

/// The deadline of a lease granted but not yet given its first deadline: alive until
/// [`Deadline::settle`] replaces it, moments later. Above every real deadline and every `now`
/// (both are clamped to [`MAX_DEADLINE`]), so it is never marked expired, and distinct from
/// `MOVED` with or without the `EXPIRED` bit.
pub(crate) const PENDING: u64 = EXPIRED - 1;

/// The latest real deadline (about 292 years of clock time); `now` is clamped to it too.
pub(crate) const MAX_DEADLINE: u64 = EXPIRED - 2;

/// The deadline of a lease renewed (or granted) at `now` with `ttl`, both in nanoseconds.
/// Never `DEAD`, never with the `EXPIRED` bit, saturating instead of overflowing.
pub(crate) fn deadline_after(now: u64, ttl: u64) -> u64 {
    now.saturating_add(ttl).clamp(1, MAX_DEADLINE)
}

/// Whether a lease granted at `now` (with a TTL of at least 1 ns) is alive at `now`: its
/// deadline saturates at [`MAX_DEADLINE`], so once the clock has reached that, every new
/// deadline is already past. A grant at such a `now` must fail rather than return a dead lease.
pub(crate) fn room_for_grant(now: u64) -> bool {
    now < MAX_DEADLINE
}

/// What the expiry queue should do with an entry it popped; see [`Deadline::check_due`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// The entry is stale (lease gone, re-granted, or already claimed): drop it.
    Stale,
    /// The lease was renewed: queue it again at this deadline.
    Requeue(u64),
    /// The lease has expired and is now claimed (`DEAD`) for revocation.
    Claimed,
}

/// The word is [`MOVED`]: its array is being replaced. The caller waits for the rebuild to end
/// and runs the operation again on the new array's entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Moved;

/// One lease's deadline word; see the module docs.
#[derive(Default)]
pub(crate) struct Deadline(AtomicU64);

impl Deadline {
    /// A word holding `word`.
    #[cfg(all(test, loom))]
    fn new(word: u64) -> Deadline {
        Deadline(AtomicU64::new(word))
    }

    /// Writes the word of an entry that no other thread can see yet (published afterwards with
    /// `Release`).
    #[inline]
    pub(crate) fn set(&self, word: u64) {
        self.0.store(word, Ordering::Relaxed);
    }

    /// Sets a claimed lease's word to `DEAD` again before its entry is retired, so that no
    /// operation lands on it (the caller holds the shard mutex: no `MOVED`).
    #[inline]
    pub(crate) fn retire(&self) {
        self.0.store(DEAD, Ordering::Release);
    }

    /// Marks the word [`MOVED`] and returns the value it had: the last one, since every
    /// operation after this fails with [`Moved`]. For the rebuild that copies it to a new array.
    #[inline]
    pub(crate) fn move_out(&self) -> u64 {
        self.0.swap(MOVED, Ordering::AcqRel)
    }

    /// The word as it is, for callers holding the shard mutex (so never `MOVED`).
    #[inline]
    pub(crate) fn word(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// The renew path: if the lease is alive at `now`, moves its deadline to `now + ttl` (never
    /// backwards) and returns `true`; `false` if it is claimed or expired (marking it expired if
    /// its deadline has just passed).
    #[inline]
    pub(crate) fn renew(&self, now: u64, ttl: u64) -> Result<bool, Moved> {
        let now = now.min(MAX_DEADLINE);
        let target = deadline_after(now, ttl);
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur > now && cur < PENDING {
                if cur >= target {
                    return Ok(true); // a concurrent renew went further
                }
                match self
                    .0
                    .compare_exchange_weak(cur, target, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Ok(true),
                    Err(actual) => cur = actual,
                }
            } else {
                match self.observe(now, cur)? {
                    Some(live) => cur = live, // revived by a concurrent renew
                    None => return Ok(false),
                }
            }
        }
    }

    /// The deadline if the lease is alive at `now`; marks it expired if its deadline has passed.
    #[inline]
    pub(crate) fn alive(&self, now: u64) -> Result<Option<u64>, Moved> {
        self.observe(now.min(MAX_DEADLINE), self.0.load(Ordering::Acquire))
    }

    /// The deadline if the word, last seen as `cur`, is alive at `now` (clamped). A deadline
    /// found past is marked [`EXPIRED`], so that the verdict cannot be undone by a renew working
    /// from an older clock reading.
    #[inline]
    fn observe(&self, now: u64, mut cur: u64) -> Result<Option<u64>, Moved> {
        loop {
            if cur == MOVED {
                return Err(Moved);
            }
            if cur == DEAD || cur == PENDING || cur & EXPIRED != 0 {
                return Ok(None);
            }
            if cur > now {
                return Ok(Some(cur));
            }
            match self.0.compare_exchange_weak(
                cur,
                cur | EXPIRED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(None),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Claims the lease for revocation whatever its deadline, returning the word it had (to
    /// [`restore`](Self::restore) or [`unclaim`](Self::unclaim)), or `None` if it was already
    /// claimed.
    pub(crate) fn claim(&self) -> Result<Option<u64>, Moved> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            match cur {
                MOVED => return Err(Moved),
                DEAD => return Ok(None),
                _ => match self.0.compare_exchange_weak(
                    cur,
                    DEAD,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(Some(cur)),
                    Err(actual) => cur = actual,
                },
            }
        }
    }

    /// After a [`claim`](Self::claim) that returned `claimed` and whose revocation did not
    /// commit, puts back that deadline marked expired: the lease stays dead, and expiry claims it
    /// again from its queue entry. `false` for a lease claimed before it was settled (it has no
    /// queue entry), which the caller must see to.
    pub(crate) fn restore(&self, claimed: u64) -> Result<bool, Moved> {
        if claimed == PENDING || claimed == DEAD {
            return Ok(false);
        }
        match self
            .0
            .compare_exchange(DEAD, claimed | EXPIRED, Ordering::AcqRel, Ordering::Acquire)
        {
            Err(MOVED) => Err(Moved),
            _ => Ok(true),
        }
    }

    /// After a [`claim`](Self::claim) that returned `claimed` and whose revocation failed in
    /// storage, puts back the word exactly as it was (the revocation did not happen). `false` for
    /// a lease claimed before it was settled, which the caller must see to.
    pub(crate) fn unclaim(&self, claimed: u64) -> Result<bool, Moved> {
        if claimed == PENDING || claimed == DEAD {
            return Ok(false);
        }
        match self
            .0
            .compare_exchange(DEAD, claimed, Ordering::AcqRel, Ordering::Acquire)
        {
            Err(MOVED) => Err(Moved),
            _ => Ok(true),
        }
    }

    /// Gives a [`PENDING`] lease its first deadline; `false` if it was claimed meanwhile.
    pub(crate) fn settle(&self, deadline: u64) -> Result<bool, Moved> {
        match self
            .0
            .compare_exchange(PENDING, deadline, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(true),
            Err(MOVED) => Err(Moved),
            Err(_) => Ok(false),
        }
    }

    /// Decides the fate of an expiry-queue entry at `queued` popped at `now`; claims the lease
    /// if that entry is at its real deadline and the deadline has passed.
    pub(crate) fn check_due(&self, queued: u64, now: u64) -> Result<Due, Moved> {
        let now = now.min(MAX_DEADLINE);
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur == MOVED {
                return Err(Moved);
            }
            if cur == DEAD || cur == PENDING {
                return Ok(Due::Stale); // claimed, or its own entry is on the way
            }
            let deadline = cur & !EXPIRED;
            if deadline < queued {
                return Ok(Due::Stale); // an earlier lease's entry under this id
            }
            if deadline > queued || deadline > now {
                // Renewed since it was queued. Re-queue it at its real deadline even if that
                // has passed too: claiming it now would revoke it ahead of leases whose
                // deadlines fall between the two.
                return Ok(Due::Requeue(deadline));
            }
            match self
                .0
                .compare_exchange(cur, DEAD, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(Due::Claimed),
                Err(actual) => cur = actual,
            }
        }
    }

    /// The real deadline of a lease not claimed (expired or not).
    pub(crate) fn deadline(&self) -> Result<Option<u64>, Moved> {
        match self.0.load(Ordering::Acquire) {
            MOVED => Err(Moved),
            DEAD => Ok(None),
            d => Ok(Some(d & !EXPIRED)),
        }
    }
}

/// The deadline a word holds for checkpointing: its low bits if it is a live or expired
/// deadline, `None` if claimed, pending or moved.
pub(crate) fn checkpoint_deadline(word: u64) -> Option<u64> {
    match word {
        DEAD | PENDING | MOVED => None,
        _ => Some(word & !EXPIRED),
    }
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_grant_has_room_until_the_last_deadline() {
        // With any TTL of at least 1 ns, a deadline after `now` exists exactly while there is room.
        for now in [
            0,
            1,
            MAX_DEADLINE - 1,
            MAX_DEADLINE,
            PENDING,
            EXPIRED,
            u64::MAX,
        ] {
            let alive = deadline_after(now, 1) > now;
            assert_eq!(room_for_grant(now), alive, "{now}");
        }
        assert!(room_for_grant(MAX_DEADLINE - 1));
        assert!(!room_for_grant(MAX_DEADLINE));
    }
}
