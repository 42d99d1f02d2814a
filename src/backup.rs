//! Backups of a running lessor: [`Lessor::backup`].
//!
//! # Implementation
//!
//! 1. Every change acknowledged so far is flushed to the file (the write buffer, as
//!    [`Lessor::sync`] does), then a redb read snapshot of the file is taken. Writes go on
//!    meanwhile: the snapshot is one commit, and later commits do not touch it.
//! 2. The snapshot's tables (`lessor.meta`, `lessor.leases`, `lessor.kv`, `lessor.lease_keys`:
//!    the whole disk format, see `store.rs`) are copied, record by record, into a new redb
//!    database in a temporary file beside the target (`<name>.backup-<pid>-<n>.tmp`, created
//!    exclusively), in one write transaction committed with fsync; the database is closed
//!    cleanly, and the file fsynced again.
//! 3. The temporary file is renamed over the target, and the folder fsynced: a crash leaves the
//!    old target (or none) and perhaps a temporary file, never half a backup under the target's
//!    name. On an error, the temporary file is removed.
//!
//! The copy is a lessor database as a crash at the snapshot's commit would have left it, minus
//! nothing acknowledged: it opens with [`Lessor::open`] (its leases get what the restart policy
//! of that open gives them: by default a full TTL, as after any restart), and
//! [`Inspector`](crate::Inspector) (the CLI's `dump`, `verify`, `leases`...) reads it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Key, ReadTransaction, ReadableTable, TableDefinition, TableError, Value};

use crate::error::{Error, Result};
use crate::lessor::Lessor;
use crate::store::{KV, LEASE_KEYS, LEASES, META, REVOKING};

/// Tells apart the temporary files of backups running at once in one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

impl Lessor {
    /// Writes a consistent copy of the database to `path` while the lessor runs: every lease and
    /// key as of one moment, including every change acknowledged before the call. Writes go on
    /// during the backup; renewals are not slowed.
    ///
    /// The copy is written to a temporary file beside `path`, fsynced, then renamed over `path`
    /// (replacing an older backup there), so that a crash never leaves half a backup under that
    /// name. It is a lessor database: [`Lessor::open`] opens it (its leases get what the restart
    /// policy of that open gives them: a full TTL under the default
    /// [`RestartPolicy::Reset`](crate::RestartPolicy::Reset)), and [`Inspector`](crate::Inspector)
    /// and the command line's `dump` and `verify` read it. To restore, stop the service and put
    /// the copy in place of its file (README, "Backups").
    ///
    /// Renewals live in memory: a lease's deadline in the copy is what its last checkpoint
    /// wrote, which matters only under [`RestartPolicy::Preserve`](crate::RestartPolicy::Preserve)
    /// and [`RestartPolicy::Absolute`](crate::RestartPolicy::Absolute).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path if the folder is missing or not writable, or `path` is a
    /// directory; [`Error::AlreadyOpen`] if `path` is a database held open (this lessor's own
    /// file included); [`Error::Storage`] if writing the copy fails (nothing is left under
    /// `path` then); [`Error::Closed`], [`Error::Poisoned`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{Inspector, Lessor, RestartPolicy};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let (path, copy) = (dir.path().join("data.redb"), dir.path().join("backup.redb"));
    /// let lessor = Lessor::open(&path)?;
    /// let lease = lessor.grant(Duration::from_secs(60))?;
    /// lessor.put_with_lease("/lock", "holder", lease.id)?;
    ///
    /// lessor.backup(&copy)?; // while the lessor runs
    ///
    /// let inspector = Inspector::open(&copy, RestartPolicy::Reset)?;
    /// assert_eq!(inspector.leases()?[0].keys, vec![b"/lock".to_vec()]);
    /// assert!(inspector.verify_report()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn backup(&self, path: impl AsRef<Path>) -> Result<()> {
        let target = path.as_ref();
        refuse_open_target(target)?;
        let snapshot = self.synced_snapshot()?;
        write_copy(&snapshot, target)
    }
}

/// Refuses a target that is a directory, or a file held open (locked) by a database.
fn refuse_open_target(target: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: target.to_path_buf(),
        source,
    };
    let file = match File::open(target) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if file.metadata().map_err(io)?.is_dir() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "the path is a directory; give the path of the backup file",
        )));
    }
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(Error::AlreadyOpen),
        // No `flock` on this file system: nothing to learn.
        Err(TryLockError::Error(_)) => Ok(()),
    }
}

/// Writes the tables of `snapshot` to a temporary file beside `target` and renames it there.
fn write_copy(snapshot: &ReadTransaction, target: &Path) -> Result<()> {
    let name = target.file_name().ok_or_else(|| Error::Io {
        path: target.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file; give the path of the backup file",
        ),
    })?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(
        "{}.backup-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    // Created here, exclusively: never someone else's file.
    drop(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io(&temp))?,
    );
    let temp = Temp(Some(temp));
    let path = temp.path();
    let db = Database::builder()
        .create(path)
        .map_err(|e| crate::recovery::open_error(path, e))?;
    let txn = db.begin_write()?;
    copy(snapshot, &txn, META)?;
    copy(snapshot, &txn, LEASES)?;
    copy(snapshot, &txn, KV)?;
    copy(snapshot, &txn, LEASE_KEYS)?;
    copy(snapshot, &txn, REVOKING)?;
    txn.commit()?;
    db.close()?;
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    std::fs::rename(path, target).map_err(io(target))?;
    temp.keep();
    sync_dir(&dir).map_err(io(&dir))
}

/// Copies table `def` of `from` into `to`, record by record; a table `from` lacks is left out.
fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<()> {
    let source = match from.open_table(def) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut dest = to.open_table(def)?;
    for entry in source.iter()? {
        let (k, v) = entry?;
        dest.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A temporary file, removed when dropped unless kept (renamed into place).
struct Temp(Option<PathBuf>);

impl Temp {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
