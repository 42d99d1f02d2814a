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
//! 3. Who runs the steps: the caller of [`Lessor::revoke`](crate::Lessor::revoke), before it
//!    returns; the ticker, one chunk per pass between its expiry batches (woken when a lease is
//!    marked by anything else, e.g. a keep-alive's revoke-on-drop);
//!    [`Lessor::revoke_expired`](crate::Lessor::revoke_expired) after its batches. After a close
//!    or a crash, the next open finds the marks and resumes.
//!
//! [`Reaping`](crate::lifecycle::Reaping) (in `lifecycle.rs`, with the rest of the pure
//! bookkeeping) says which leases have keys left, and where each got to. A cursor
//! only saves a rescan (a revoked lease gets no new keys, so everything before it is gone); the
//! tables, through the write buffer, are the truth: a step whose lease is no longer marked (its
//! revocation was undone by a failure) does nothing and forgets it.

use crate::durability::Ticket;
use crate::engine::Engine;
use crate::error::Result;
use crate::lease::LeaseId;

/// Deletes one chunk of hidden keys: of lease `only` if given, else of the first lease with
/// keys left. Returns whether keys are left (of `only`, or of any lease) afterwards; under
/// `Immediate`, returns once the chunk is durable.
pub(crate) fn step(engine: &Engine, only: Option<LeaseId>) -> Result<bool> {
    let Some((left, ticket)) = step_apply(engine, only)? else {
        return Ok(false);
    };
    engine.pipeline.await_durable(engine, ticket)?;
    // Under `Batched` too, each chunk goes to disk before the next: the write buffer never holds
    // more than about one chunk of them, so other writers never meet its back-pressure, and the
    // flusher (the ticker) is not kept from expiring other leases by large flushes.
    engine.sync()?;
    Ok(left)
}

/// Applies one [`step`]: `None` if there was nothing to delete; else whether keys are left,
/// and what to wait for before the next step (then the step's chunk must be flushed, as
/// [`step`] does, before the next is applied).
pub(crate) fn step_apply(engine: &Engine, only: Option<LeaseId>) -> Result<Option<(bool, Ticket)>> {
    let Some((id, cause, after)) = engine.reaping.lock().next(only) else {
        return Ok(None);
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
    drop(w);
    if !more {
        tracing::debug!(lease = id.get(), "revocation of a large lease finished");
    }
    Ok(Some((left, ticket)))
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
