//! What [`Lessor::verify_report`](crate::Lessor::verify_report) finds ([`Problem`]), and
//! redb's own integrity check (its page checksums and allocator state) for
//! [`Lessor::verify`](crate::Lessor::verify), run without stopping renewals.
//!
//! redb's `Database::check_integrity` needs the database to itself (`&mut`, and no read
//! transaction alive), and may repair the file it checks. A running lessor always holds a read
//! snapshot, and a repair under it would change the file behind its memory; a read-only second
//! open of the same file is refused while the lessor holds it. So the check runs on a copy:
//!
//! - [`check_file`] is called by `verify_report` while it holds the writer lock with the write
//!   buffer empty and no flush in flight: every commit is fsynced and none is being written, so
//!   the file's bytes are one consistent redb state. Renewals take no lock and never wait for
//!   it; writes wait for the copy, as they already wait for `verify`'s own scan.
//! - The file is read into memory (memory as large as the file, for the length of the call) and
//!   opened there. A copy of an open database reads as one that was not closed, so redb repairs
//!   it at open: if the latest commit fails its checksums, redb would fall back to the previous
//!   one; the check reports that instead of repairing. Then `check_integrity` runs on the copy.
//! - redb may panic on damage it meets; that is contained and reported as a problem too.
//!
//! A database on a caller's [`StorageBackend`](redb::StorageBackend) (or in memory) has no file
//! to copy: only the lessor's own checks run for it.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::InMemoryBackend;
use redb::{Database, DatabaseError, StorageBackend};

use crate::contain::contain;
use crate::error::{Error, Result};

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// One problem found by [`Lessor::verify_report`](crate::Lessor::verify_report) or
/// [`Inspector::verify_report`](crate::Inspector::verify_report): a broken invariant of the
/// database. Lease ids are raw (`u64`), as stored: one may be out of range. `Display` gives
/// the one-line description the command-line tool prints.
///
/// ```
/// # fn main() -> lessor::Result<()> {
/// let lessor = lessor::Lessor::open_in_memory()?;
/// for problem in lessor.verify_report()? {
///     eprintln!("{problem}"); // none here
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A lease's id is 0 or above `i64::MAX`.
    LeaseIdOutOfRange {
        /// The stored id.
        lease: u64,
    },
    /// A lease's id is above the database's id high-water mark (ids could be reused).
    LeaseIdAboveHighWater {
        /// The stored id.
        lease: u64,
        /// The high-water mark.
        max: u64,
    },
    /// A lease's record does not decode, or fails its checksum.
    BadLeaseRecord {
        /// The stored id.
        lease: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// A lease marked as being revoked (its keys deleted in steps) still has its record.
    RevokingLeaseHasRecord {
        /// The lease.
        lease: u64,
    },
    /// A lease was marked as revoked at a revision after the database's.
    RevokedAfterTheRevision {
        /// The lease.
        lease: u64,
        /// The revision of its mark.
        revision: u64,
        /// The database's revision.
        database_revision: u64,
    },
    /// A key's record does not decode, or fails its checksum.
    BadKeyRecord {
        /// The key.
        key: Vec<u8>,
        /// What is wrong with it.
        detail: String,
    },
    /// A key's create and mod revisions are out of order, or after the database's revision.
    KeyRevisionsOutOfOrder {
        /// The key.
        key: Vec<u8>,
        /// Its create revision.
        create_revision: u64,
        /// Its mod revision.
        mod_revision: u64,
        /// The database's revision.
        database_revision: u64,
    },
    /// A key is attached to a lease that does not exist.
    KeyOfMissingLease {
        /// The key.
        key: Vec<u8>,
        /// The lease it names.
        lease: u64,
    },
    /// A key is attached to a lease but missing from that lease's index.
    KeyMissingFromIndex {
        /// The key.
        key: Vec<u8>,
        /// Its lease.
        lease: u64,
    },
    /// A lease's index lists a key that is not attached to it.
    IndexedKeyNotAttached {
        /// The key.
        key: Vec<u8>,
        /// The lease whose index lists it.
        lease: u64,
        /// Where the key really is: `None` if it does not exist, `Some(0)` if attached to no
        /// lease, else the lease it is attached to.
        owner: Option<u64>,
    },
    /// The index lists a lease that does not exist.
    IndexOfMissingLease {
        /// The lease.
        lease: u64,
    },
    /// The leases in memory are not those in the file (only a running lessor checks this).
    MemoryDiffersFromFile {
        /// Leases in memory.
        in_memory: usize,
        /// Leases in the file.
        in_file: usize,
    },
    /// redb's integrity check failed on the file (page checksums, allocator state, or a
    /// damaged latest commit).
    FileDamaged {
        /// What redb said.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |k: &[u8]| k.escape_ascii().to_string();
        match self {
            Problem::LeaseIdOutOfRange { lease } => write!(f, "lease id {lease} is out of range"),
            Problem::LeaseIdAboveHighWater { lease, max } => {
                write!(f, "lease {lease} is above the id high-water mark {max}")
            }
            Problem::BadLeaseRecord { lease, detail } => write!(f, "lease {lease}: {detail}"),
            Problem::RevokingLeaseHasRecord { lease } => {
                write!(f, "lease {lease} is being revoked but still has its record")
            }
            Problem::RevokedAfterTheRevision {
                lease,
                revision,
                database_revision,
            } => write!(
                f,
                "lease {lease} was revoked at revision {revision}, after the database revision {database_revision}"
            ),
            Problem::BadKeyRecord { key, detail } => write!(f, "key {}: {detail}", show(key)),
            Problem::KeyRevisionsOutOfOrder {
                key,
                create_revision,
                mod_revision,
                database_revision,
            } => write!(
                f,
                "key {}: revisions {create_revision}..{mod_revision} do not fit the database revision {database_revision}",
                show(key)
            ),
            Problem::KeyOfMissingLease { key, lease } => write!(
                f,
                "key {} is attached to lease {lease}, which does not exist",
                show(key)
            ),
            Problem::KeyMissingFromIndex { key, lease } => write!(
                f,
                "key {} is attached to lease {lease} but missing from its index",
                show(key)
            ),
            Problem::IndexedKeyNotAttached { key, lease, owner } => write!(
                f,
                "index lists key {} under lease {lease}, but the key {}",
                show(key),
                match owner {
                    None => "does not exist".to_string(),
                    Some(0) => "has no lease".to_string(),
                    Some(o) => format!("is attached to lease {o}"),
                }
            ),
            Problem::IndexOfMissingLease { lease } => {
                write!(f, "index lists lease {lease}, which does not exist")
            }
            Problem::MemoryDiffersFromFile { in_memory, in_file } => write!(
                f,
                "leases in memory ({in_memory}) differ from leases in the file ({in_file})"
            ),
            Problem::FileDamaged { detail } => write!(f, "{detail}"),
        }
    }
}

/// Runs redb's integrity check on a copy of the database file at `path`, returning each problem
/// found as a line (empty: the file passes). `None` (no file) finds nothing. Call only while no
/// commit can be under way (see the module docs).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read.
pub(crate) fn check_file(path: Option<&Path>) -> Result<Vec<Problem>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let copy = read_copy(path)?;
    Ok(check_copy(copy)
        .into_iter()
        .map(|detail| Problem::FileDamaged { detail })
        .collect())
}

/// The file's bytes, in a backend redb can open.
fn read_copy(path: &Path) -> Result<InMemoryBackend> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    copy_into_memory(&mut file).map_err(io)
}

/// Everything `file` holds from where it stands, in a backend redb can open; also the
/// inspector's copy for an in-memory repair (`inspect.rs`).
pub(crate) fn copy_into_memory(file: &mut File) -> std::io::Result<InMemoryBackend> {
    let copy = InMemoryBackend::new();
    let mut chunk = vec![0; CHUNK];
    let mut at = 0u64;
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = at.saturating_add(n as u64);
        copy.set_len(end)?;
        copy.write(at, &chunk[..n])?;
        at = end;
    }
    Ok(copy)
}

/// redb's verdict on a copy of a database: `None` if it passes, else the problem.
fn check_copy(copy: impl StorageBackend) -> Option<String> {
    let fell_back = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&fell_back);
    let checked = contain(move || {
        let mut db = Database::builder()
            .set_repair_callback(move |session| {
                // redb calls this at 0% as a repair starts (always, for a copy of an open
                // database), then at 30% only when the latest commit fails its checksums and
                // it is about to fall back to the one before: damage, in a copy taken between
                // commits. Report it rather than repair it.
                let progress = session.progress();
                if progress > 0.1 && progress < 0.5 {
                    seen.store(true, Ordering::Release);
                    session.abort();
                }
            })
            .create_with_backend(copy)?;
        db.check_integrity()
    });
    let problem = match checked {
        Ok(Ok(true)) => return None,
        Ok(Ok(false)) => "redb's integrity check failed: the file needed a repair".to_owned(),
        Ok(Err(DatabaseError::RepairAborted)) if fell_back.load(Ordering::Acquire) => {
            "redb's integrity check failed: the latest commit fails its checksums".to_owned()
        }
        Ok(Err(e)) => format!("redb's integrity check failed: {e}"),
        Err(panic) => format!("redb's integrity check failed: redb {panic}"),
    };
    Some(problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    /// A redb file's bytes with `rows` rows of a recognisable value, closed cleanly.
    fn image(rows: u64) -> Vec<u8> {
        let backend = InMemoryBackend::new();
        let shared = Arc::new(backend);
        let db = Database::builder()
            .create_with_backend(Bytes(Arc::clone(&shared)))
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for n in 0..rows {
                t.insert(n, b"SENTINEL-SENTINEL-SENTINEL".as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        drop(db);
        let len = shared.len().unwrap();
        let mut out = vec![0; usize::try_from(len).unwrap()];
        shared.read(0, &mut out).unwrap();
        out
    }

    /// Shares an in-memory backend, so that its bytes can be read after the database drops.
    #[derive(Debug)]
    struct Bytes(Arc<InMemoryBackend>);

    impl StorageBackend for Bytes {
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.write(offset, data)
        }
    }

    fn backend(bytes: &[u8]) -> InMemoryBackend {
        let b = InMemoryBackend::new();
        b.set_len(bytes.len() as u64).unwrap();
        b.write(0, bytes).unwrap();
        b
    }

    #[test]
    fn a_sound_copy_passes_and_a_damaged_data_page_is_reported() {
        let bytes = image(50);
        assert_eq!(check_copy(backend(&bytes)), None);
        let mut damaged = bytes.clone();
        let at = damaged.windows(8).position(|w| w == b"SENTINEL").unwrap();
        damaged[at] ^= 0xff;
        let problem = check_copy(backend(&damaged)).unwrap();
        assert!(
            problem.starts_with("redb's integrity check failed"),
            "{problem}"
        );
    }

    #[test]
    fn no_file_means_no_redb_check() {
        assert!(check_file(None).unwrap().is_empty());
    }
}
