//! The lease lifecycle's bookkeeping: the one home of the claim → apply → settle, or give back /
//! retry, protocol. No redb, no clock, no channels: every function takes `now` and the in-memory
//! structures, and says what to do.
//!
//! # Implementation
//!
//! A lease leaves the table in three steps. It is *claimed* (its deadline word becomes dead, so
//! renew refuses it from then on), its revocation is *applied* to the write buffer, and once
//! that is visible (durable under `Immediate`) it is *removed*. A user revocation under
//! `Immediate` claims only at the end, once durable ([`revocable_later`]), so that nobody sees the
//! lease go before; meanwhile the buffer's deleted record keeps requests from using it.
//!
//! [`revocable_later`]: Lifecycle::revocable_later Whoever claims a lease owns it
//! until one of these ends it:
//! - the request applies and becomes visible: the lease leaves the table (`pipeline.rs`);
//! - a user revocation fails its checks: the lease gets its deadline back, marked expired
//!   ([`LeaseTable::restore`]), unless storage failed, when it gets it back as it was
//!   ([`LeaseTable::unclaim`]), since the reload finds it in the file;
//! - an expiry batch fails: its leases stay claimed and go first at the next attempt (`retry`).
//!
//! Invariants: a lease in `retry` is claimed in the table; a claimed lease is in `retry`, or
//! owned by a request being applied or waiting to become durable; `high_water` never goes back,
//! so a clock that steps back cannot expire a lease granted or renewed since before its TTL.
//!
//! [`Reaping`] is the bookkeeping of revocations in steps (`reap.rs`): the leases whose hidden
//! keys are still to be deleted, and where each got to.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::events::RevokeCause;
use crate::expiry::ExpiryQueue;
use crate::lease::LeaseId;
use crate::lease_table::LeaseTable;

/// Guarded by the pipeline's writer lock (`pipeline::Writer::life`).
#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Leases claimed for expiry whose revocation did not commit, or restored at open with
    /// nothing left; revoked first next time.
    retry: Vec<LeaseId>,
    /// The highest time the expiry path has seen.
    high_water: u64,
    /// The deadlines of leases claimed by expiry and not yet revoked, for the lateness
    /// histogram; cleared by each applied expiry batch.
    claimed_deadlines: Vec<(LeaseId, u64)>,
}

impl Lifecycle {
    /// Starts with `retry`: leases restored at open with nothing left (claimed in the table).
    pub(crate) fn new(retry: Vec<LeaseId>) -> Lifecycle {
        Lifecycle {
            retry,
            ..Lifecycle::default()
        }
    }

    /// After a reload: the file says which leases are claimed and must be revoked first.
    pub(crate) fn reloaded(&mut self, retry: Vec<LeaseId>) {
        self.retry = retry;
    }

    /// The expiry path's time: `now` raised to the highest it has seen, which it becomes.
    pub(crate) fn advance(&mut self, now: u64) -> u64 {
        self.high_water = self.high_water.max(now);
        self.high_water
    }

    /// When the ticker must act: now (0) if leases wait for a retry, else the earliest queued
    /// deadline.
    pub(crate) fn next_due(&self, queue: &ExpiryQueue) -> Option<u64> {
        if self.retry.is_empty() {
            queue.next_deadline()
        } else {
            Some(0)
        }
    }

    /// Claims the leases due at `now` from `queue`, up to `batch` in all with those waiting
    /// for a retry. Returns whether there is anything to revoke ([`take_batch`]).
    ///
    /// [`take_batch`]: Self::take_batch
    pub(crate) fn claim_due(
        &mut self,
        now: u64,
        queue: &mut ExpiryQueue,
        table: &LeaseTable,
        batch: usize,
    ) -> bool {
        let room = batch.saturating_sub(self.retry.len());
        let due = queue.pop_due(now, room, |id, queued| table.check_due(id, queued, now));
        self.retry.extend(due.iter().map(|&(id, _)| id));
        self.claimed_deadlines.extend(due);
        !self.retry.is_empty()
    }

    /// The leases to revoke in this expiry batch, in deadline order (retries first).
    pub(crate) fn take_batch(&mut self) -> Vec<LeaseId> {
        std::mem::take(&mut self.retry)
    }

    /// An expiry batch failed: its leases stay claimed and go first next time.
    pub(crate) fn batch_failed(&mut self, mut batch: Vec<LeaseId>) {
        batch.append(&mut self.retry);
        self.retry = batch;
    }

    /// An expiry batch was applied: the deadlines its leases had, for the lateness histogram.
    pub(crate) fn expired(&mut self, batch: &[LeaseId]) -> Vec<(LeaseId, u64)> {
        if self.claimed_deadlines.is_empty() {
            return Vec::new();
        }
        let revoked: std::collections::HashSet<&LeaseId> = batch.iter().collect();
        self.claimed_deadlines
            .drain(..)
            .filter(|(id, _)| revoked.contains(id))
            .collect()
    }

    /// A user revocation of `id` claims it. `Ok(Some(prior))`: claimed now, with the deadline
    /// word it had; `Ok(None)`: it was claimed by an expiry batch that failed, and this
    /// revocation takes it over.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is unknown or already being revoked.
    pub(crate) fn claim_for_revoke(&self, table: &LeaseTable, id: LeaseId) -> Result<Option<u64>> {
        let prior = table.claim(id);
        if prior.is_none() && !self.retry.contains(&id) {
            return Err(Error::LeaseNotFound(id));
        }
        Ok(prior)
    }

    /// Whether a user revocation of `id` may leave its claim until the revocation is durable
    /// (`Immediate`): `true` if the lease is in the table and unclaimed (alive, or expired and
    /// not yet taken by expiry); `false` if an expiry batch that failed claimed it, and the
    /// revocation takes it over as it is ([`claim_for_revoke`](Self::claim_for_revoke)).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if the lease is unknown, or claimed by a revocation in flight.
    pub(crate) fn revocable_later(&self, table: &LeaseTable, id: LeaseId) -> Result<bool> {
        if self.retry.contains(&id) {
            return Ok(false);
        }
        match table.deadline_of(id) {
            Some(_) => Ok(true),
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    /// The user revocation of `id` was applied.
    pub(crate) fn revoke_applied(&mut self, id: LeaseId) {
        self.retry.retain(|&r| r != id);
    }

    /// The user revocation of `id`, claimed with `prior`, failed with `e` before it was applied.
    /// After a storage failure the lease lives on as it was (the reload finds it in the file);
    /// after any other failure it stays dead (renewals were refused meanwhile), and expiry
    /// revokes it later.
    pub(crate) fn revoke_failed(
        &mut self,
        table: &LeaseTable,
        id: LeaseId,
        prior: Option<u64>,
        e: &Error,
    ) {
        if let Some(prior) = prior {
            let back = match e {
                Error::Storage(_) => table.unclaim(id, prior),
                _ => table.restore(id, prior),
            };
            if !back && !self.retry.contains(&id) {
                self.retry.push(id);
            }
        }
    }

    /// A grant of the explicit id `id` at `now`: whether the lease it names must be revoked in
    /// the same request first. Dead leases are: expired and not yet revoked (claimed now, or by
    /// an expiry batch that failed). One whose revocation is applied but not yet durable is
    /// claimed and in no retry list: it is not revoked again.
    ///
    /// # Errors
    /// [`Error::LeaseExists`] if the lease is alive, or its grant is not yet acknowledged.
    pub(crate) fn claim_for_regrant(
        &self,
        table: &LeaseTable,
        id: LeaseId,
        now: u64,
    ) -> Result<bool> {
        if !table.contains(id) {
            return Ok(false);
        }
        // Alive, or granted by a request not yet acknowledged.
        if table.alive(id, now).is_some() || table.is_pending_id(id) {
            return Err(Error::LeaseExists(id));
        }
        Ok(table.claim(id).is_some() || self.retry.contains(&id))
    }

    /// The grant that was to revoke dead lease `id` first was applied.
    pub(crate) fn regrant_applied(&mut self, id: LeaseId) {
        self.retry.retain(|&r| r != id);
    }

    /// The grant that claimed dead lease `id` failed: the lease stays dead, and expiry revokes
    /// it later.
    pub(crate) fn regrant_failed(&mut self, id: LeaseId) {
        if !self.retry.contains(&id) {
            self.retry.push(id);
        }
    }
}

/// The leases whose hidden keys are still to be deleted: why each was revoked (what its watch
/// events say), and the last key deleted.
#[derive(Debug, Default)]
pub(crate) struct Reaping {
    cursors: BTreeMap<LeaseId, (RevokeCause, Option<Vec<u8>>)>,
}

impl Reaping {
    /// Starts reaping `id` (from its first key), unless it is already.
    pub(crate) fn add(&mut self, id: LeaseId, cause: RevokeCause) {
        self.cursors.entry(id).or_insert((cause, None));
    }

    /// Forgets every lease, then reaps `ids` from their first key (after a reload or an open).
    /// The file does not say why they were revoked: their events say revoked.
    pub(crate) fn reset(&mut self, ids: impl IntoIterator<Item = LeaseId>) {
        self.cursors.clear();
        for id in ids {
            self.add(id, RevokeCause::Revoked);
        }
    }

    /// The lease to reap next (`only` if given and pending), why it was revoked, and where to
    /// resume.
    pub(crate) fn next(
        &self,
        only: Option<LeaseId>,
    ) -> Option<(LeaseId, RevokeCause, Option<Vec<u8>>)> {
        let (id, (cause, cursor)) = match only {
            Some(id) => (id, self.cursors.get(&id)?),
            None => self.cursors.first_key_value().map(|(&id, c)| (id, c))?,
        };
        Some((id, *cause, cursor.clone()))
    }

    /// A step on `id` deleted up to `last` (`None`: nothing), and `more` keys are left or not.
    pub(crate) fn advanced(&mut self, id: LeaseId, last: Option<Vec<u8>>, more: bool) {
        if !more {
            self.cursors.remove(&id);
            return;
        }
        if let (Some((_, cursor)), Some(last)) = (self.cursors.get_mut(&id), last) {
            // Steps on one lease are serialised by the writer lock, but their bookkeeping is
            // not: keep the furthest.
            if cursor.as_ref().is_none_or(|c| *c < last) {
                *cursor = Some(last);
            }
        }
    }

    /// Whether lease `id` has keys left.
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.cursors.contains_key(&id)
    }

    /// Whether no lease has keys left.
    pub(crate) fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease_table::Due;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    /// Leases 1..=n with TTL 10 and deadline 10·i, queued.
    fn setup(n: u64) -> (LeaseTable, ExpiryQueue) {
        let table = LeaseTable::new();
        let mut queue = ExpiryQueue::new();
        for i in 1..=n {
            table.insert(id(i), 10, 10 * i);
            queue.push(10 * i, id(i));
        }
        (table, queue)
    }

    #[test]
    fn expiry_claims_what_is_due_in_deadline_order_and_retries_a_failed_batch_first() {
        let (table, mut queue) = setup(5);
        let mut life = Lifecycle::default();
        let now = life.advance(35);
        assert!(life.claim_due(now, &mut queue, &table, 2));
        let batch = life.take_batch();
        assert_eq!(batch, vec![id(1), id(2)]);
        assert_eq!(table.renew(id(1), now), None, "claimed: renew refuses it");
        life.batch_failed(batch);
        assert_eq!(life.next_due(&queue), Some(0), "a retry is due at once");
        // The next batch starts with the failed one and has no room for lease 3.
        assert!(life.claim_due(now, &mut queue, &table, 2));
        assert_eq!(life.take_batch(), vec![id(1), id(2)]);
        assert!(life.claim_due(now, &mut queue, &table, 2));
        assert_eq!(life.take_batch(), vec![id(3)]);
        assert!(!life.claim_due(now, &mut queue, &table, 2));
    }

    #[test]
    fn the_expiry_clock_never_goes_back() {
        let mut life = Lifecycle::default();
        assert_eq!(life.advance(100), 100);
        assert_eq!(life.advance(40), 100);
    }

    #[test]
    fn a_renewed_lease_is_requeued_not_claimed() {
        let (table, mut queue) = setup(1);
        let mut life = Lifecycle::default();
        assert_eq!(table.renew(id(1), 5), Some(10)); // deadline 15 now
        assert!(!life.claim_due(12, &mut queue, &table, 10));
        assert_eq!(queue.next_deadline(), Some(15));
        assert_eq!(table.check_due(id(1), 15, 16), Due::Claimed);
    }

    #[test]
    fn a_revocation_claims_once_and_gives_back_as_its_failure_says() {
        let (table, _) = setup(2);
        let mut life = Lifecycle::default();
        let prior = life.claim_for_revoke(&table, id(1)).unwrap();
        assert!(prior.is_some());
        assert!(matches!(
            life.claim_for_revoke(&table, id(1)),
            Err(Error::LeaseNotFound(_))
        ));
        // Storage failed: the lease is back as it was, alive.
        let storage = Error::Storage(redb::Error::Io(std::io::Error::other("disk")));
        life.revoke_failed(&table, id(1), prior, &storage);
        assert!(table.alive(id(1), 0).is_some());
        // Any other failure: back, but dead.
        let prior = life.claim_for_revoke(&table, id(2)).unwrap();
        life.revoke_failed(&table, id(2), prior, &Error::Closed);
        assert!(table.alive(id(2), 0).is_none());
        assert!(table.contains(id(2)));
    }

    #[test]
    fn a_revocation_takes_over_a_lease_a_failed_expiry_claimed() {
        let (table, mut queue) = setup(1);
        let mut life = Lifecycle::default();
        assert!(life.claim_due(10, &mut queue, &table, 10));
        let batch = life.take_batch();
        life.batch_failed(batch);
        assert_eq!(life.claim_for_revoke(&table, id(1)).unwrap(), None);
        life.revoke_applied(id(1));
        assert_eq!(life.next_due(&queue), None);
    }

    #[test]
    fn a_regrant_revokes_a_dead_lease_once_and_refuses_a_live_one() {
        let (table, _) = setup(2);
        let mut life = Lifecycle::default();
        assert!(matches!(
            life.claim_for_regrant(&table, id(2), 5),
            Err(Error::LeaseExists(_))
        ));
        assert!(
            !life.claim_for_regrant(&table, id(9), 5).unwrap(),
            "unknown"
        );
        // Lease 1 is dead at 10: this grant claims it and revokes it first.
        assert!(life.claim_for_regrant(&table, id(1), 10).unwrap());
        // Claimed by a revocation not yet durable (not in retry): not revoked again.
        assert!(!life.claim_for_regrant(&table, id(1), 10).unwrap());
        // A failed grant leaves it dead, queued for expiry.
        life.regrant_failed(id(1));
        assert!(life.claim_for_regrant(&table, id(1), 10).unwrap());
        life.regrant_applied(id(1));
        assert_eq!(life.next_due(&ExpiryQueue::new()), None);
    }
}

#[cfg(test)]
mod reaping_tests {
    use super::*;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    #[test]
    fn cursors_move_forward_and_end_with_the_last_chunk() {
        let mut r = Reaping::default();
        r.add(id(7), RevokeCause::Expired);
        r.add(id(3), RevokeCause::Revoked);
        assert_eq!(r.next(None), Some((id(3), RevokeCause::Revoked, None)));
        r.advanced(id(3), Some(b"/b".to_vec()), true);
        // A step that ran late with an older cursor does not move it back.
        r.advanced(id(3), Some(b"/a".to_vec()), true);
        let at_b = Some((id(3), RevokeCause::Revoked, Some(b"/b".to_vec())));
        assert_eq!(r.next(Some(id(3))), at_b);
        // Adding again does not restart it.
        r.add(id(3), RevokeCause::Expired);
        assert_eq!(r.next(Some(id(3))), at_b);
        r.advanced(id(3), None, false);
        assert!(!r.contains(id(3)));
        assert_eq!(r.next(None), Some((id(7), RevokeCause::Expired, None)));
        assert_eq!(r.next(Some(id(3))), None);
        r.reset([id(9)]);
        assert_eq!(r.next(None), Some((id(9), RevokeCause::Revoked, None)));
        r.advanced(id(9), Some(b"/z".to_vec()), false);
        assert!(r.is_empty());
    }
}
