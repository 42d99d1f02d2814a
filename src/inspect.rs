//! Reading a database file without writing to it: [`Inspector`], for tools, backups and
//! forensics (the `lessor` command line's read commands), as `etcdutl` and `sqlite3 -readonly`
//! read theirs.
//!
//! Opening a database with [`Lessor`](crate::Lessor) writes to it even if nothing is changed
//! afterwards: it records the session's restart policy, rewrites checkpoints and revokes leases
//! whose time is up. An [`Inspector`] does none of that:
//!
//! - The file is opened for reading only (redb's [`ReadOnlyDatabase`]), so it stays byte for
//!   byte the same, and a read-only file in a read-only folder can be inspected.
//! - It holds a shared lock while open: a service cannot open the file meanwhile, and an
//!   inspector cannot open a file a service holds ([`Error::AlreadyOpen`]).
//! - What each lease has left is what a session opening the file under the given
//!   [`RestartPolicy`] would give it, computed from the file alone at the moment of opening (or
//!   at the wall time given to [`Inspector::open_at`]). Time stands still for an inspector.
//! - A lease left with nothing is dead, as it is for a session: it is not listed, `time_to_live`
//!   refuses it, and the keys attached to it are left out of `get` and `range`, as the session's
//!   first expiry batch would delete them. They are still in the file, and in `stats`' key
//!   counts.
//!
//! Every call reads one redb snapshot taken at open, so calls agree with one another.
//!
//! Some files redb cannot read without a repair, and a repair writes: one a crash left before its
//! last commit's allocator state reached the disk, or one cut short. The inspector then reads
//! the whole file into memory, under a shared lock (`flock`, which a redb writer also takes on
//! Linux: a service cannot open the file meanwhile), and repairs that copy: memory as large as
//! the file, and the file is left as it is ([`Inspector::repaired_in_memory`] says so).

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use redb::{
    Database, DatabaseError, Key, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError, Value,
};

use crate::error::{Error, Result};
use crate::integrity::Problem;
use crate::lease::{KeyValue, LeaseId, LeaseInfo, Revision, Snapshot};
use crate::record::LeaseRecord;
use crate::restart::{RestartPolicy, left_at_open};
use crate::store::{self, KV, LEASE_KEYS, LEASES, Meta};

/// A lessor database file opened read-only: leases, keys and checks, without writing a byte.
///
/// ```
/// use std::time::Duration;
/// use lessor::{Inspector, Lessor, RestartPolicy};
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// let service = Lessor::open(&path)?;
/// let lease = service.grant(Duration::from_secs(30))?;
/// service.put_with_lease("/lock", "holder", lease.id)?;
/// service.close()?;
///
/// let before = std::fs::read(&path).unwrap();
/// let inspector = Inspector::open(&path, RestartPolicy::Reset)?;
/// let leases = inspector.leases()?;
/// assert_eq!(leases[0].remaining, Duration::from_secs(30)); // Reset: a full TTL again
/// assert_eq!(leases[0].keys, vec![b"/lock".to_vec()]);
/// assert!(inspector.verify_report()?.is_empty());
/// drop(inspector);
/// assert_eq!(std::fs::read(&path).unwrap(), before);
/// # Ok(()) }
/// ```
pub struct Inspector {
    // Dropped before `db`: the tables and the transaction read through it.
    tables: Tables,
    read: ReadTransaction,
    db: Handle,
    path: PathBuf,
    /// `None` for a redb file without tables, which a session would initialise: empty.
    meta: Option<Meta>,
    policy: RestartPolicy,
    /// The wall time the leases' time left is computed for, in nanoseconds since the epoch.
    wall: u64,
    /// The file's size at open.
    file_bytes: u64,
}

/// How an inspector reads its file.
enum Handle {
    /// Opened read-only by redb.
    File(ReadOnlyDatabase),
    /// A copy in memory, repaired there; `lock` is the file, kept open with a shared `flock`.
    Repaired { db: Database, lock: File },
}

/// The data tables of the snapshot, opened once. `None` for a table the file does not have (a
/// database no session has written to may hold its metadata only): it reads as empty.
struct Tables {
    leases: Option<ReadOnlyTable<u64, &'static [u8]>>,
    kv: Option<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    lease_keys: Option<ReadOnlyTable<(u64, &'static [u8]), ()>>,
    /// Leases being revoked in steps: their keys are hidden (see `reap.rs`).
    revoking: std::collections::BTreeMap<u64, u64>,
}

impl Tables {
    fn open(read: &ReadTransaction, meta: Option<&Meta>) -> Result<Tables> {
        if meta.is_none() {
            return Ok(Tables {
                leases: None,
                kv: None,
                lease_keys: None,
                revoking: Default::default(),
            });
        }
        Ok(Tables {
            leases: optional(read, LEASES)?,
            kv: optional(read, KV)?,
            lease_keys: optional(read, LEASE_KEYS)?,
            revoking: store::revoking(read)?,
        })
    }

    fn complete(&self) -> bool {
        self.leases.is_some() && self.kv.is_some() && self.lease_keys.is_some()
    }

    /// Every stored lease, ascending by id.
    fn lease_records(&self) -> Result<Vec<(LeaseId, LeaseRecord)>> {
        let mut out = Vec::new();
        let Some(leases) = &self.leases else {
            return Ok(out);
        };
        for entry in leases.iter()? {
            let (k, v) = entry?;
            out.push((
                store::lease_id(k.value())?,
                LeaseRecord::decode(k.value(), v.value())?,
            ));
        }
        Ok(out)
    }

    /// Lease `id`'s record, if it is stored.
    fn lease_record(&self, id: LeaseId) -> Result<Option<LeaseRecord>> {
        let Some(leases) = &self.leases else {
            return Ok(None);
        };
        let found = leases.get(id.get())?;
        found
            .map(|v| LeaseRecord::decode(id.get(), v.value()))
            .transpose()
    }

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let Some(kv) = &self.kv else {
            return Ok(None);
        };
        let found = kv.get(key)?;
        let kv = found
            .map(|v| store::key_value(key, v.value()))
            .transpose()?;
        Ok(kv.filter(|kv| !self.hidden(kv)))
    }

    /// Whether `kv` is hidden: attached to a lease being revoked.
    fn hidden(&self, kv: &KeyValue) -> bool {
        kv.lease
            .is_some_and(|l| self.revoking.contains_key(&l.get()))
    }

    /// Every key that starts with `prefix`, in key order.
    fn range(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        let Some(kv) = &self.kv else {
            return Ok(out);
        };
        for entry in kv.range::<&[u8]>(prefix..)? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let kv = store::key_value(key, v.value())?;
            if !self.hidden(&kv) {
                out.push(kv);
            }
        }
        Ok(out)
    }

    /// The keys the index lists under lease `id`, in key order.
    fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let Some(index) = &self.lease_keys else {
            return Ok(keys);
        };
        let start: (u64, &[u8]) = (id.get(), &[]);
        for entry in index.range(start..)? {
            let (k, _) = entry?;
            let (lease, key) = k.value();
            if lease != id.get() {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    /// How many keys there are, and how many are attached to a lease; O(1).
    fn key_counts(&self) -> Result<(u64, u64)> {
        let keys = self.kv.as_ref().map_or(Ok(0), ReadableTableMetadata::len)?;
        let attached = self
            .lease_keys
            .as_ref()
            .map_or(Ok(0), ReadableTableMetadata::len)?;
        Ok((keys, attached))
    }
}

/// Opens table `def` in `read`; `None` if the file does not have it.
fn optional<K: Key + 'static, V: Value + 'static>(
    read: &ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>> {
    match read.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(not_ours(e.into())),
    }
}

/// What [`Inspector::stats`] reports about a database file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStats {
    /// The database's revision.
    pub revision: Revision,
    /// Leases that have time left under the inspector's restart policy.
    pub leases: u64,
    /// Leases stored in the file that have nothing left under that policy: a session opening
    /// the file would revoke them, with their keys, at once.
    pub expired: u64,
    /// Keys stored in the file, including those of expired leases.
    pub keys: u64,
    /// Of those, the keys attached to a lease.
    pub attached_keys: u64,
    /// The highest lease id ever issued in this database (0 if none): auto-assigned ids continue
    /// after it.
    pub max_lease_id: u64,
    /// The file's format version (0 for a file a session has not initialised yet).
    pub format: u64,
    /// Whether the leases' checkpoints in the file are current (the last session wrote them).
    pub checkpoints_current: bool,
    /// The file's size, in bytes.
    pub file_bytes: u64,
}

impl Inspector {
    /// Opens the database at `path` read-only; the leases get what `policy` would give them if
    /// a session opened the file now (the system's wall clock).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read (it does not exist, is a directory, permission);
    /// [`Error::AlreadyOpen`] if a process has it open for writing;
    /// [`Error::NotLessorDatabase`], [`Error::Corrupted`] (also a file that was not closed
    /// cleanly and whose repair fails), [`Error::IncompatibleFormat`]; [`Error::Storage`].
    pub fn open(path: impl AsRef<Path>, policy: RestartPolicy) -> Result<Inspector> {
        Inspector::open_at(path, policy, SystemTime::now())
    }

    /// As [`open`](Self::open), with the leases' time left computed for wall time `wall`
    /// (only [`RestartPolicy::Absolute`] reads it).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_at(
        path: impl AsRef<Path>,
        policy: RestartPolicy,
        wall: SystemTime,
    ) -> Result<Inspector> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_bytes = std::fs::metadata(path).map_err(io)?.len();
        if path.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "the path is a directory; give the path of a database file",
            )));
        }
        // An empty file is a database no session has initialised yet: read as empty, through
        // the same path (redb opens no empty file read-only).
        if file_bytes == 0 {
            let db = repaired_in_memory(path)?;
            return Inspector::with(db, path, policy, wall, file_bytes);
        }
        let db = match Database::builder().open_read_only(path) {
            Ok(db) => Handle::File(db),
            Err(DatabaseError::RepairAborted) => repaired_in_memory(path)?,
            Err(e) => return Err(crate::recovery::open_error(path, e)),
        };
        Inspector::with(db, path, policy, wall, file_bytes)
    }

    /// An inspector reading `db`, the file at `path`.
    fn with(
        db: Handle,
        path: &Path,
        policy: RestartPolicy,
        wall: SystemTime,
        file_bytes: u64,
    ) -> Result<Inspector> {
        let read = match &db {
            Handle::File(db) => db.begin_read()?,
            Handle::Repaired { db, .. } => db.begin_read()?,
        };
        let meta = store::read_meta(&read).map_err(not_ours)?;
        let tables = Tables::open(&read, meta.as_ref())?;
        let wall = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Ok(Inspector {
            tables,
            read,
            db,
            path: path.to_path_buf(),
            meta,
            policy,
            wall,
            file_bytes,
        })
    }

    /// Releases the file and its lock now, rather than when the inspector is dropped.
    ///
    /// # Errors
    /// [`Error::Storage`] if redb fails to close the file.
    pub fn close(self) -> Result<()> {
        let Inspector {
            tables, read, db, ..
        } = self;
        drop(tables);
        drop(read);
        match db {
            Handle::File(db) => db.close()?,
            Handle::Repaired { db, lock } => {
                drop(db);
                drop(lock);
            }
        }
        Ok(())
    }

    /// Whether redb could not read the file without a repair (a crash or damage), so that it is
    /// read through a copy repaired in memory (the file itself is left as it is).
    pub fn repaired_in_memory(&self) -> bool {
        matches!(self.db, Handle::Repaired { .. }) && self.file_bytes > 0
    }

    /// The database's revision.
    pub fn revision(&self) -> Revision {
        Revision(self.meta.map_or(0, |m| m.counters.revision))
    }

    /// What lease `id` has left, its TTL and its keys.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`] if it is not in the file or has nothing left;
    /// [`Error::Corrupted`] if its record does not decode; [`Error::Storage`].
    pub fn time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let Some(meta) = self.meta else {
            return Err(Error::LeaseNotFound(id));
        };
        let record = self.tables.lease_record(id).map_err(not_ours)?;
        let record = record.ok_or(Error::LeaseNotFound(id))?;
        self.info(&meta, id, &record)?
            .ok_or(Error::LeaseNotFound(id))
    }

    /// Every lease with time left, ascending by id, each with its keys.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if a lease record does not decode; [`Error::Storage`].
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let Some(meta) = self.meta else {
            return Ok(Vec::new());
        };
        let mut infos = Vec::new();
        for (id, record) in self.tables.lease_records().map_err(not_ours)? {
            if let Some(info) = self.info(&meta, id, &record)? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    /// Reads one key; `None` if it is not in the file or belongs to a lease with nothing left.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if its record (or its lease's) does not decode; [`Error::Storage`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>> {
        let Some(meta) = self.meta else {
            return Ok(None);
        };
        let Some(kv) = self.tables.get(key.as_ref()).map_err(not_ours)? else {
            return Ok(None);
        };
        if let Some(id) = kv.lease {
            let record = self.tables.lease_record(id).map_err(not_ours)?;
            if record.is_some_and(|r| self.left(&meta, &r) == 0) {
                return Ok(None);
            }
        }
        Ok(Some(kv))
    }

    /// Every key that starts with `prefix` (every key for `""`), in key order, leaving out
    /// those of leases with nothing left.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if a record does not decode; [`Error::Storage`].
    pub fn range(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<KeyValue>> {
        Ok(self.range_with_revision(prefix)?.kvs)
    }

    /// As [`range`](Self::range), with the revision the keys were read at.
    ///
    /// # Errors
    /// As [`range`](Self::range).
    pub fn range_with_revision(&self, prefix: impl AsRef<[u8]>) -> Result<Snapshot> {
        let revision = self.revision();
        let Some(meta) = self.meta else {
            return Ok(Snapshot {
                kvs: Vec::new(),
                revision,
            });
        };
        let mut dead = HashSet::new();
        for (id, record) in self.tables.lease_records().map_err(not_ours)? {
            if self.left(&meta, &record) == 0 {
                dead.insert(id);
            }
        }
        let mut kvs = self.tables.range(prefix.as_ref()).map_err(not_ours)?;
        kvs.retain(|kv| kv.lease.is_none_or(|id| !dead.contains(&id)));
        Ok(Snapshot { kvs, revision })
    }

    /// Counts of leases and keys, and facts about the file.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if a lease record does not decode; [`Error::Storage`].
    pub fn stats(&self) -> Result<FileStats> {
        let mut stats = FileStats {
            revision: self.revision(),
            leases: 0,
            expired: 0,
            keys: 0,
            attached_keys: 0,
            max_lease_id: 0,
            format: 0,
            checkpoints_current: false,
            file_bytes: self.file_bytes,
        };
        let Some(meta) = self.meta else {
            return Ok(stats);
        };
        for (id, record) in self.tables.lease_records().map_err(not_ours)? {
            if self.left(&meta, &record) == 0 {
                stats.expired += 1;
            } else {
                stats.leases += 1;
            }
            stats.max_lease_id = stats.max_lease_id.max(id.get());
        }
        (stats.keys, stats.attached_keys) = self.tables.key_counts().map_err(not_ours)?;
        stats.max_lease_id = stats.max_lease_id.max(meta.counters.max_lease_id);
        stats.format = meta.format;
        stats.checkpoints_current = meta.checkpoints;
        Ok(stats)
    }

    /// Checks the file's invariants (those of [`Lessor::verify`](crate::Lessor::verify) that
    /// concern the file: records decode, attachments are two-sided, counters are not behind the
    /// data), returning each problem found as its own line; empty when the file is consistent.
    ///
    /// # Errors
    /// [`Error::Storage`] if the file cannot be read, [`Error::Corrupted`] if redb finds its own
    /// structures damaged.
    pub fn verify_report(&self) -> Result<Vec<Problem>> {
        // A file without its data tables holds no data to check.
        if self.meta.is_none() || !self.tables.complete() {
            return Ok(Vec::new());
        }
        Ok(store::verify(&self.read).map_err(not_ours)?.problems)
    }

    /// The nanoseconds lease `record` has left under the inspector's policy.
    fn left(&self, meta: &Meta, record: &LeaseRecord) -> u64 {
        left_at_open(
            self.policy,
            meta.checkpoints,
            record.ttl_nanos,
            record.checkpoint,
            meta.uptime,
            self.wall,
        )
        .nanos
    }

    /// Lease `id`'s info, `None` if it has nothing left.
    fn info(&self, meta: &Meta, id: LeaseId, record: &LeaseRecord) -> Result<Option<LeaseInfo>> {
        let left = self.left(meta, record);
        if left == 0 {
            return Ok(None);
        }
        Ok(Some(LeaseInfo {
            id,
            ttl: Duration::from_nanos(record.ttl_nanos),
            remaining: Duration::from_nanos(left),
            keys: self.tables.lease_keys(id).map_err(not_ours)?,
        }))
    }
}

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field("revision", &self.revision())
            .finish_non_exhaustive()
    }
}

/// Reads the file at `path` into memory under a shared `flock` and repairs it there; the lock
/// is held by the returned handle.
fn repaired_in_memory(path: &Path) -> Result<Handle> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(Error::AlreadyOpen),
        // No `flock` on this file system: redb's own range locks were free a moment ago.
        Err(TryLockError::Error(_)) => {}
    }
    let copy = crate::integrity::copy_into_memory(&mut file).map_err(io)?;
    let db = Database::builder()
        .create_with_backend(copy)
        .map_err(|e| crate::recovery::open_error(path, e))?;
    Ok(Handle::Repaired { db, lock: file })
}

/// A lessor table of the wrong type, or not a table at all, means another program's file.
fn not_ours(e: Error) -> Error {
    match e {
        Error::Storage(
            ref inner @ (redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)),
        ) => Error::NotLessorDatabase(format!("{} ({inner})", crate::store::WRONG_TYPES)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::lessor::Lessor;

    const S: Duration = Duration::from_secs(1);

    /// A file closed under `Preserve` after 10 s: lease 1 (60 s) with `/a`, lease 2 (15 s) with
    /// `/b`, `/c` without a lease. Returns the wall time of the close.
    fn closed(path: &Path) -> SystemTime {
        let clock = ManualClock::new();
        let l = Lessor::builder()
            .clock(clock.clone())
            .ticker(false)
            .restart_policy(RestartPolicy::Preserve)
            .open(path)
            .unwrap();
        let a = l.grant(60 * S).unwrap();
        let b = l.grant(15 * S).unwrap();
        l.put_with_lease("/a", "1", a.id).unwrap();
        l.put_with_lease("/b", "2", b.id).unwrap();
        l.put("/c", "3").unwrap();
        clock.advance(10 * S);
        l.close().unwrap();
        clock.wall()
    }

    fn keys(kvs: Vec<KeyValue>) -> Vec<Vec<u8>> {
        kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[test]
    fn each_policy_gives_what_a_session_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let wall = closed(&path);
        let before = std::fs::read(&path).unwrap();
        let one = LeaseId::new(1).unwrap();
        let two = LeaseId::new(2).unwrap();

        let reset = Inspector::open_at(&path, RestartPolicy::Reset, wall).unwrap();
        let leases = reset.leases().unwrap();
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[1].remaining, 15 * S);
        assert_eq!(leases[1].keys, [b"/b".to_vec()]);
        assert_eq!(reset.range("").unwrap().len(), 3);
        reset.close().unwrap();

        // `Preserve` does not count the time the file was closed.
        let preserve = Inspector::open_at(&path, RestartPolicy::Preserve, wall + 3600 * S).unwrap();
        assert_eq!(preserve.time_to_live(one).unwrap().remaining, 50 * S);
        assert_eq!(preserve.time_to_live(two).unwrap().remaining, 5 * S);
        let stats = preserve.stats().unwrap();
        assert_eq!((stats.leases, stats.expired, stats.keys), (2, 0, 3));
        assert_eq!(stats.max_lease_id, 2);
        assert!(stats.checkpoints_current);
        assert!(preserve.verify_report().unwrap().is_empty());
        drop(preserve);

        // `Absolute` does: 30 s after the close lease 2 is dead, and its key is not shown.
        let absolute = Inspector::open_at(&path, RestartPolicy::Absolute, wall + 30 * S).unwrap();
        assert_eq!(absolute.time_to_live(one).unwrap().remaining, 20 * S);
        assert!(matches!(
            absolute.time_to_live(two),
            Err(Error::LeaseNotFound(_))
        ));
        assert_eq!(absolute.leases().unwrap().len(), 1);
        assert!(absolute.get("/b").unwrap().is_none());
        assert!(absolute.get("/a").unwrap().is_some());
        assert_eq!(
            keys(absolute.range("/").unwrap()),
            [b"/a".to_vec(), b"/c".to_vec()]
        );
        let stats = absolute.stats().unwrap();
        assert_eq!((stats.leases, stats.expired, stats.keys), (1, 1, 3));
        drop(absolute);
        let later = Inspector::open_at(&path, RestartPolicy::Absolute, wall + 3600 * S).unwrap();
        assert!(later.leases().unwrap().is_empty());
        assert_eq!(keys(later.range("").unwrap()), [b"/c".to_vec()]);
        drop(later);

        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_file_held_by_a_session_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let l = Lessor::open(&path).unwrap();
        assert!(matches!(
            Inspector::open(&path, RestartPolicy::Reset),
            Err(Error::AlreadyOpen)
        ));
        l.close().unwrap();
        let i = Inspector::open(&path, RestartPolicy::Reset).unwrap();
        assert!(matches!(Lessor::open(&path), Err(Error::AlreadyOpen)));
        drop(i);
    }

    #[test]
    fn a_copy_repaired_in_memory_reads_the_same_and_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let wall = closed(&path);
        let before = std::fs::read(&path).unwrap();
        // The path a file left by a crash takes; a clean file takes it here.
        let bytes = before.len() as u64;
        let handle = repaired_in_memory(&path).unwrap();
        let copy = Inspector::with(handle, &path, RestartPolicy::Preserve, wall, bytes).unwrap();
        assert!(copy.repaired_in_memory());
        let file = Inspector::open_at(&path, RestartPolicy::Preserve, wall).unwrap();
        assert_eq!(copy.leases().unwrap(), file.leases().unwrap());
        assert_eq!(copy.range("").unwrap(), file.range("").unwrap());
        assert!(copy.verify_report().unwrap().is_empty());
        drop(file);
        // Its shared lock keeps a session out.
        assert!(matches!(Lessor::open(&path), Err(Error::AlreadyOpen)));
        copy.close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);
        Lessor::open(&path).unwrap().close().unwrap();
    }

    #[test]
    fn other_files_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, b"hello ".repeat(1000)).unwrap();
        assert!(matches!(
            Inspector::open(&text, RestartPolicy::Reset),
            Err(Error::NotLessorDatabase(_))
        ));
        assert!(matches!(
            Inspector::open(dir.path(), RestartPolicy::Reset),
            Err(Error::Io { .. })
        ));
        // Another program's redb file.
        let other = dir.path().join("other.redb");
        {
            let db = redb::Database::create(&other).unwrap();
            let txn = db.begin_write().unwrap();
            let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("theirs");
            txn.open_table(t).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(
            Inspector::open(&other, RestartPolicy::Reset),
            Err(Error::NotLessorDatabase(_))
        ));
        // An empty file, as `Lessor::open` would initialise it, reads as empty, unchanged.
        let zero = dir.path().join("zero.redb");
        std::fs::write(&zero, b"").unwrap();
        let i = Inspector::open(&zero, RestartPolicy::Reset).unwrap();
        assert!(i.leases().unwrap().is_empty());
        assert!(!i.repaired_in_memory());
        drop(i);
        assert_eq!(std::fs::metadata(&zero).unwrap().len(), 0);
        // Lessor's metadata without its data tables reads as empty.
        let meta_only = dir.path().join("meta-only.redb");
        {
            let db = redb::Database::create(&meta_only).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(store::META)
                .unwrap()
                .insert("format", 2)
                .unwrap();
            txn.commit().unwrap();
        }
        let i = Inspector::open(&meta_only, RestartPolicy::Reset).unwrap();
        assert!(i.leases().unwrap().is_empty());
        assert!(i.get("/a").unwrap().is_none());
        assert!(i.verify_report().unwrap().is_empty());
        assert_eq!(i.stats().unwrap().keys, 0);
        drop(i);
        // A redb file with no tables at all reads as empty.
        let empty = dir.path().join("empty.redb");
        drop(redb::Database::create(&empty).unwrap());
        let i = Inspector::open(&empty, RestartPolicy::Reset).unwrap();
        assert!(i.leases().unwrap().is_empty());
        assert!(i.range("").unwrap().is_empty());
        assert_eq!(i.stats().unwrap().format, 0);
    }
}
