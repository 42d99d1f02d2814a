//! Opening a database: the file, its format check, and the rebuild of the in-memory lease table
//! and expiry queue from it.
//!
//! What each stored lease has left follows the session's [`RestartPolicy`]: under `Reset`
//! (etcd's rule) its full TTL counted from the moment of opening, so that holders that were
//! waiting for the process to return have a whole TTL to renew; under `Preserve` and `Absolute`
//! what its checkpoint says (see [`crate::restart`]), never more than its TTL. A lease with
//! nothing left comes back claimed, in the writer's retry list: the first expiry batch revokes it
//! with its keys before anything else, whatever the clock reads. The revision and the lease-id
//! high-water mark come back exactly; auto-assigned ids continue after the highest id ever
//! issued.
//!
//! Checkpoints are trusted only if the file says they are current (`checkpoints` in
//! `lessor.meta`). When a session that writes checkpoints opens a file whose checkpoints are not
//! current (the last session ran under `Reset`, so renewals never reached the file, or the file
//! is of format 1), every lease gets its full TTL and every record is rewritten with that, in the
//! same transaction that marks the checkpoints current: a crash right after opening then finds
//! deadlines no older than the open.

use std::path::Path;

use redb::{Database, DatabaseError, ReadableDatabase, StorageBackend, StorageError};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::expiry::ExpiryQueue;
use crate::lease::LeaseId;
use crate::lease_table::{DEAD, LeaseTable, deadline_after};
use crate::restart::{Checkpointing, RestartPolicy, left_after_restart};
use crate::store::{self, Counters};

/// The in-memory state rebuilt from a database.
pub(crate) struct Recovered {
    pub counters: Counters,
    pub table: LeaseTable,
    pub queue: ExpiryQueue,
    /// Leases with nothing left: in the table claimed (`DEAD`), not queued; the first expiry
    /// batch revokes them.
    pub expired: Vec<LeaseId>,
    /// This session's place on the database's uptime.
    pub checkpointing: Checkpointing,
}

/// redb's settings for a lessor's database.
fn redb_builder(config: &Config) -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(config.check_integrity_on_open);
    builder.set_cache_size(config.cache_size);
    builder.set_repair_callback(|session| {
        // redb reports 0.3 only when the latest commit fails its checksums and the repair is
        // about to fall back to the commit before it (see `integrity.rs`). With one-phase
        // commits that is what a commit torn by a crash looks like, and also what damage to the
        // latest commit looks like: redb cannot tell them apart, so it is said out loud.
        let progress = session.progress();
        if progress > 0.1 && progress < 0.5 {
            tracing::warn!(
                "the latest commit of the database fails its checksums: it is rolled back to \
                 the commit before it. A crash during that commit does this; so does damage to \
                 the file, which then loses a commit that was acknowledged \
                 (Builder::two_phase_commit makes the open refuse such a file instead)"
            );
        }
    });
    builder
}

/// Opens (or creates) the redb database file at `path`, first refusing, without writing to
/// it, a file that is a redb database but not one this build can use ([`probe`]).
pub(crate) fn open_file(path: &Path, config: &Config) -> Result<Database> {
    if path.is_dir() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "the path is a directory; give the path of a database file",
            ),
        });
    }
    probe(path, config)?;
    redb_builder(config)
        .create(path)
        .map_err(|e| open_error(path, e))
}

/// The error of opening the redb file at `path`: a file that is not a redb file, or is cut
/// short, is named as such rather than as an I/O error.
pub(crate) fn open_error(path: &Path, e: DatabaseError) -> Error {
    match e {
        // redb reports a file without its magic number as invalid data.
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::NotLessorDatabase(source.to_string())
        }
        DatabaseError::Storage(StorageError::Io(source))
            if source.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupted(format!("the file is truncated ({source})"))
        }
        DatabaseError::Storage(StorageError::Io(source)) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::from(other),
    }
}

/// Runs [`store::check`] on the file at `path` opened read-only, so that a redb database of
/// another program, or of a newer format, is refused before anything writes to it: a
/// read-write open alone rewrites parts of the file (redb's allocator state and header), even
/// if nothing else is written.
///
/// The probe only refuses what it positively recognises. When it cannot read the file (no
/// file, an empty one, not a redb file, locked, damaged, or a file redb must repair first,
/// which it does not do read-only), it lets the read-write open, with its integrity check,
/// decide and report as it always has; `store::init` then checks the tables again, after any
/// repair but before writing anything of lessor's. A panic inside redb on a damaged file is
/// contained the same way.
fn probe(path: &Path, config: &Config) -> Result<()> {
    if std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        return Ok(()); // created, or initialised, by the open
    }
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = Database::builder();
        builder.set_cache_size(config.cache_size);
        let Ok(db) = builder.open_read_only(path) else {
            return Ok(());
        };
        let checked = match db.begin_read() {
            Ok(read) => store::check(&read).map(drop),
            Err(_) => Ok(()),
        };
        drop(db); // releases the file's lock before the read-write open takes it
        checked
    }));
    match checked {
        Ok(Err(e @ (Error::NotLessorDatabase(_) | Error::IncompatibleFormat { .. }))) => Err(e),
        Ok(Err(e @ Error::Corrupted(_))) if is_wrong_types(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Whether `e` is [`store::check`]'s finding of a lessor table of the wrong types (and not
/// damage that an integrity check might still repair).
fn is_wrong_types(e: &Error) -> bool {
    matches!(e, Error::Corrupted(why) if why.starts_with(store::WRONG_TYPES))
}

/// Opens (or creates) a database on any redb storage backend.
pub(crate) fn open_backend(backend: impl StorageBackend, config: &Config) -> Result<Database> {
    Ok(redb_builder(config).create_with_backend(backend)?)
}

/// Checks the format (initialising an empty database, upgrading an older one) and rebuilds the
/// lease table and the expiry queue as `policy` says, at clock reading `now` and wall time
/// `wall` (nanoseconds since the Unix epoch).
pub(crate) fn recover(
    db: &Database,
    policy: RestartPolicy,
    now: u64,
    wall: u64,
) -> Result<Recovered> {
    let checkpoints = policy.checkpoints();
    let meta = store::init(db, checkpoints)?;
    let mut counters = meta.counters;
    let checkpointing = Checkpointing::new(meta.uptime, now);
    let stamp = checkpointing.stamp(now, wall);
    // Under a policy that checkpoints, stale checkpoints are replaced by full TTLs from now.
    let trusted = meta.checkpoints || !checkpoints;
    let mut rewrite = Vec::new();
    let table = LeaseTable::new();
    let mut queue = ExpiryQueue::new();
    let mut expired = Vec::new();
    for (id, mut record) in store::load_leases(db)? {
        let ttl = record.ttl_nanos;
        if !trusted {
            record.checkpoint = Some(stamp.granted(ttl));
            rewrite.push((id, record));
        }
        let left = left_after_restart(policy, ttl, record.checkpoint, meta.uptime, wall);
        if left.nanos == 0 {
            table.insert_checkpointed(id, ttl, DEAD, DEAD);
            expired.push(id);
        } else {
            let deadline = deadline_after(now, left.nanos);
            // A record that does not say exactly this is rewritten by the first checkpoint.
            let checkpointed = if left.exact { deadline } else { DEAD };
            table.insert_checkpointed(id, ttl, deadline, checkpointed);
            queue.push(deadline, id);
        }
        // A high-water mark below a stored id would let an auto id collide: never trust it.
        counters.max_lease_id = counters.max_lease_id.max(id.get());
    }
    if meta.format != store::FORMAT_VERSION || meta.checkpoints != checkpoints {
        store::upgrade(db, checkpoints, &rewrite)?;
    }
    Ok(Recovered {
        counters,
        table,
        queue,
        expired,
        checkpointing,
    })
}
