//! Revoking a lease with many keys in steps, so that it does not stall everyone.
//!
//! A lease with more than [`Builder::revoke_chunk_size`](crate::Builder::revoke_chunk_size)
//! keys (1024 by default) is not revoked in one request: deleting 500,000 keys would hold the
//! writer lock, and then the flush, for seconds, while every other writer and the expiry of every
//! other lease waits. Instead:
//!
//! 1. The request that revokes it (a [`revoke`](crate::Lessor::revoke), an expiry batch, a
//!    keep-alive's revoke-on-drop) deletes its record and its first chunk of keys, and marks it
//!    in `lessor.revoking` (see `store.rs`). From that request on, every key still attached to
//!    the lease is *hidden*: reads skip it, a put creates the key anew, a delete, attach or
//!    detach does not find it, a compare sees it absent (`overlay.rs`). Readers see the whole
//!    revocation at once, and so does the file after a crash: the mark is in the same commit.
//! 2. Later requests ([`step`]) each delete the next chunk of hidden keys, at a revision of
//!    their own (the watch events of those deletions carry it), and the last one removes the
//!    mark. The writer lock is released between chunks, so other requests and expiry batches
//!    go between them.
//! 3. Who runs the steps: the caller of `revoke`, before it returns; the ticker, one chunk per
//!    pass between its expiry batches; [`Lessor::revoke_expired`](crate::Lessor::revoke_expired)
//!    after its batches. After a close or a crash, the next open finds the marks and resumes.
//!
//! [`Reaping`] is the bookkeeping: which leases have keys left, and where each got to. A cursor
//! only saves a rescan (a revoked lease gets no new keys, so everything before it is gone); the
//! tables, through the write buffer, are the truth: a step whose lease is no longer marked (its
//! revocation was undone by a failure) does nothing and forgets it.

use std::collections::BTreeMap;

use crate::engine::Engine;
use crate::error::Result;
use crate::events::RevokeCause;
use crate::lease::LeaseId;

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

/// Deletes one chunk of hidden keys: of lease `only` if given, else of the first lease with
/// keys left. Returns whether keys are left (of `only`, or of any lease) afterwards; under
/// `Immediate`, returns once the chunk is durable.
pub(crate) fn step(engine: &Engine, only: Option<LeaseId>) -> Result<bool> {
    let Some((id, cause, after)) = engine.reaping.lock().next(only) else {
        return Ok(false);
    };
    let chunk = engine.config.revoke_chunk;
    let (w, result, ticket) = engine.pipeline.write(engine, |_, b| {
        if !b.tables.is_revoking(id) {
            return Ok((None, false));
        }
        b.reap(id, after.as_deref(), chunk, cause)
    });
    let (last, more) = result?;
    let left = {
        let mut reaping = engine.reaping.lock();
        reaping.advanced(id, last, more);
        match only {
            Some(id) => reaping.contains(id),
            None => !reaping.is_empty(),
        }
    };
    engine.pipeline.finish(engine, w, ticket)?;
    // Under `Batched` too, each chunk goes to disk before the next: the write buffer never holds
    // more than about one chunk of them, so other writers never meet its back-pressure, and the
    // flusher (the ticker) is not kept from expiring other leases by large flushes.
    engine.sync()?;
    if !more {
        tracing::debug!(lease = id.get(), "revocation of a large lease finished");
    }
    Ok(left)
}

/// Deletes every hidden key of lease `id`, chunk by chunk.
pub(crate) fn lease(engine: &Engine, id: LeaseId) -> Result<()> {
    while step(engine, Some(id))? {}
    Ok(())
}

/// Deletes every hidden key of every lease being revoked, chunk by chunk.
pub(crate) fn all(engine: &Engine) -> Result<()> {
    while step(engine, None)? {}
    Ok(())
}

#[cfg(test)]
mod tests {
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
