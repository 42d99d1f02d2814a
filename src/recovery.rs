//! Opening a database: the file, its format check, and the rebuild of the in-memory lease table
//! and expiry queue from it.
//!
//! Recovery follows etcd: every stored lease comes back with its full TTL counted from the
//! moment of opening (its old deadline is not stored), so that holders that were waiting for the
//! process to return have a whole TTL to renew. The revision and the lease-id high-water mark
//! come back exactly; auto-assigned ids continue after the highest id ever issued.

use std::path::Path;

use redb::{Database, DatabaseError, StorageBackend, StorageError};

use crate::builder::Config;
use crate::error::{Error, Result};
use crate::expiry::ExpiryQueue;
use crate::lease_table::{LeaseTable, deadline_after};
use crate::store::{self, Counters};

/// The in-memory state rebuilt from a database.
pub(crate) struct Recovered {
    pub counters: Counters,
    pub table: LeaseTable,
    pub queue: ExpiryQueue,
}

/// redb's settings for a lessor's database.
fn redb_builder(config: &Config) -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(config.check_integrity_on_open);
    builder
}

/// Opens (or creates) the redb database file at `path`.
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
    redb_builder(config).create(path).map_err(|e| match e {
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
    })
}

/// Opens (or creates) a database on any redb storage backend.
pub(crate) fn open_backend(backend: impl StorageBackend, config: &Config) -> Result<Database> {
    Ok(redb_builder(config).create_with_backend(backend)?)
}

/// Checks the format (initialising an empty database) and rebuilds the lease table and the
/// expiry queue, giving every lease a full TTL from `now`.
pub(crate) fn recover(db: &Database, now: u64) -> Result<Recovered> {
    let mut counters = store::init(db)?;
    let table = LeaseTable::new();
    let mut queue = ExpiryQueue::new();
    for (id, record) in store::load_leases(db)? {
        let deadline = deadline_after(now, record.ttl_nanos);
        table.insert(id, record.ttl_nanos, deadline);
        queue.push(deadline, id);
        // A high-water mark below a stored id would let an auto id collide: never trust it.
        counters.max_lease_id = counters.max_lease_id.max(id.get());
    }
    Ok(Recovered {
        counters,
        table,
        queue,
    })
}
