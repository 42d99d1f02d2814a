//! Checkpoints: writing each renewed lease's deadline to the file, in batches off the renew
//! path, so that a restart under [`RestartPolicy::Preserve`](crate::RestartPolicy::Preserve) or
//! [`Absolute`](crate::RestartPolicy::Absolute) gives every lease what it had. What a checkpoint
//! holds, and what a lease has left after a restart, is the restart policy's business
//! (`restart.rs`); this module decides which leases to write and writes them as requests of the
//! commit pipeline.
//!
//! A lease needs a checkpoint when its deadline differs from the one last written
//! ([`LeaseTable::changed`](crate::lease_table::LeaseTable)); renew never writes one. The
//! ticker runs a pass every `checkpoint_interval`, and `close` runs one last pass.

use crate::clock::wall_nanos;
use crate::engine::Engine;
use crate::error::Result;
use crate::lease_table::Sweep;

/// Writes, in one request, the checkpoints of up to `limit` leases renewed since their last one
/// (continuing `sweep`'s pass through the table) and the database's uptime; returns how many
/// leases it wrote. Does nothing while no lease is in the table.
pub(crate) fn checkpoint(engine: &Engine, sweep: &mut Sweep, limit: usize) -> Result<usize> {
    if engine.table.len() == 0 {
        sweep.finish();
        return Ok(0);
    }
    let stamp = engine
        .checkpointing
        .stamp(engine.now(), wall_nanos(&*engine.config.clock));
    let mut written = Vec::new();
    let (w, result, ticket) = engine.pipeline.write(engine, |_, b| {
        for (id, deadline, ttl) in engine.table.changed(sweep, limit) {
            // A lease without a readable record is left out (and stays changed).
            if b.tables
                .set_checkpoint(id, stamp.checkpoint(deadline, ttl))?
            {
                written.push((id, deadline));
            }
        }
        b.tables.set_uptime(stamp.uptime)
    });
    result?;
    for &(id, deadline) in &written {
        engine.table.mark_checkpointed(id, deadline);
    }
    engine.checkpointing.committed(written.len());
    engine.pipeline.finish(engine, w, ticket)?;
    Ok(written.len())
}

/// One pass of checkpoints over the whole table, in batches; nothing under `Reset`.
pub(crate) fn checkpoint_all(engine: &Engine) -> Result<()> {
    if !engine.config.restart_policy.checkpoints() {
        return Ok(());
    }
    let mut sweep = Sweep::default();
    while !sweep.done() {
        checkpoint(engine, &mut sweep, engine.config.checkpoint_batch)?;
    }
    Ok(())
}
