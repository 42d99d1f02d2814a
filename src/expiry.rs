//! The expiry queue: which lease is due next. No locks, no clock: the caller passes `now` and
//! holds the lock that guards the queue.
//!
//! # Implementation
//!
//! A binary min-heap of `(deadline, id)`. Renew does not touch it: a renewal only moves the
//! lease's deadline in the [`LeaseTable`](crate::lease_table::LeaseTable). When an entry comes
//! due, the table says whether the lease was renewed meanwhile (the entry goes back in at the new
//! deadline, even if that has passed too), expired (it is claimed and returned), or is gone (the
//! entry is dropped). So each live lease has an entry whose deadline is at most the lease's real
//! deadline, and a lease is claimed only from an entry at its real deadline: popping in heap order
//! yields expired leases in deadline order, ties broken by id.
//!
//! Entries of leases that were revoked stay until they come due or until [`compact`] drops them;
//! the lessor calls it when stale entries outnumber live ones. A lease revoked and granted again
//! under the same id may briefly have two entries; the later one is dropped as stale when it
//! comes due, or by `compact`.
//!
//! [`compact`]: ExpiryQueue::compact

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::lease::LeaseId;
use crate::lease_table::Due;

/// Min-heap of `(deadline, lease id)` in clock nanoseconds.
#[derive(Default)]
pub(crate) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(u64, LeaseId)>>,
}

impl ExpiryQueue {
    pub(crate) fn new() -> ExpiryQueue {
        ExpiryQueue::default()
    }

    /// Queues `id` to be looked at when `deadline` comes.
    pub(crate) fn push(&mut self, deadline: u64, id: LeaseId) {
        self.heap.push(Reverse((deadline, id)));
    }

    /// The earliest queued deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _))| *d)
    }

    /// Number of entries, stale ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Pops every entry due at `now`, up to `limit` claimed leases, asking `check(id, queued)`
    /// what each entry means. Returns the claimed leases with the deadline they were queued at,
    /// in deadline order, ties by id.
    pub(crate) fn pop_due(
        &mut self,
        now: u64,
        limit: usize,
        mut check: impl FnMut(LeaseId, u64) -> Due,
    ) -> Vec<(LeaseId, u64)> {
        let mut claimed = Vec::new();
        while claimed.len() < limit {
            let Some(&Reverse((deadline, id))) = self.heap.peek() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.heap.pop();
            match check(id, deadline) {
                Due::Stale => {}
                Due::Requeue(later) => self.push(later, id),
                Due::Claimed => claimed.push((id, deadline)),
            }
        }
        claimed
    }

    /// Drops stale entries: those of leases `deadline_of` does not know (revoked) or whose real
    /// deadline is earlier than the entry (an earlier lease under the same id), and all but the
    /// earliest entry of each lease.
    pub(crate) fn compact(&mut self, deadline_of: impl Fn(LeaseId) -> Option<u64>) {
        let mut entries: Vec<(u64, LeaseId)> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(e)| e)
            .collect();
        entries.sort_unstable_by_key(|&(d, id)| (id, d));
        entries.dedup_by_key(|&mut (_, id)| id);
        entries.retain(|&(d, id)| deadline_of(id).is_some_and(|real| d <= real));
        self.heap = entries.into_iter().map(Reverse).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    #[test]
    fn pops_due_entries_in_deadline_then_id_order() {
        let mut q = ExpiryQueue::new();
        q.push(30, id(1));
        q.push(10, id(7));
        q.push(10, id(2));
        q.push(50, id(3));
        let got = q.pop_due(30, usize::MAX, |_, _| Due::Claimed);
        assert_eq!(got, vec![(id(2), 10), (id(7), 10), (id(1), 30)]);
        assert_eq!(q.next_deadline(), Some(50));
    }

    #[test]
    fn requeued_entries_wait_for_their_new_deadline_and_stale_ones_vanish() {
        let mut q = ExpiryQueue::new();
        q.push(10, id(1));
        q.push(10, id(2));
        let got = q.pop_due(10, usize::MAX, |id, _| {
            if id.get() == 1 {
                Due::Requeue(20)
            } else {
                Due::Stale
            }
        });
        assert!(got.is_empty());
        assert_eq!(q.len(), 1);
        assert_eq!(q.next_deadline(), Some(20));
    }

    #[test]
    fn stops_at_the_limit_and_leaves_the_rest_queued() {
        let mut q = ExpiryQueue::new();
        for n in 1..=10 {
            q.push(n, id(n));
        }
        let got = q.pop_due(100, 3, |_, _| Due::Claimed);
        assert_eq!(got.len(), 3);
        assert_eq!(q.len(), 7);
        assert_eq!(q.next_deadline(), Some(4));
    }

    #[test]
    fn compact_keeps_one_entry_per_known_lease() {
        let mut q = ExpiryQueue::new();
        q.push(10, id(1)); // lease 1, deadline 30: keep the earliest entry only
        q.push(20, id(1));
        q.push(10, id(2)); // revoked
        q.push(50, id(3)); // an earlier lease's entry: lease 3's deadline is 40
        q.push(40, id(3));
        q.compact(|id| match id.get() {
            1 => Some(30),
            3 => Some(40),
            _ => None,
        });
        let got = q.pop_due(u64::MAX, usize::MAX, |_, _| Due::Claimed);
        assert_eq!(got, vec![(id(1), 10), (id(3), 40)]);
    }
}
