//! Persistence: the redb tables, the format version, and every read and write of them.
//!
//! # Disk format (format version 3)
//!
//! | table | key | value |
//! |---|---|---|
//! | `lessor.meta` | `&str` | `u64`: `format`, `revision`, `max_lease_id`, `uptime`, `checkpoints` |
//! | `lessor.leases` | lease id `u64` | [`LeaseRecord`] (v1, v2 or v3) |
//! | `lessor.kv` | key `&[u8]` | [`KvRecord`] (value and metadata; v1 or v2) |
//! | `lessor.lease_keys` | `(lease id u64, key &[u8])` | `()` |
//! | `lessor.revoking` | lease id `u64` | the revision of its revocation `u64` |
//!
//! `lease_keys` indexes `kv` by lease so that a revocation finds its keys with one range scan.
//! `revoking` lists the leases revoked whose keys are still being deleted, chunk by chunk (see
//! `reap.rs`): their records are gone, and the keys still attached to them are hidden from every
//! read. The invariants [`verify`] checks: every key whose record names a lease has that lease
//! (or the lease is being revoked) and its index entry; every index entry has its key and lease
//! (or revoking entry); a revoking lease has no record; no key or lease is newer than the stored
//! revision or lease-id high-water mark. Reads check the first on the way: a key read from the
//! file whose lease has neither a record nor a revoking entry is [`Error::Corrupted`].
//!
//! `uptime` is the database's uptime (nanoseconds open, summed over its sessions) as of the last
//! checkpoint, and `checkpoints` is 1 while the leases' checkpoints are current, 0 after a
//! session that did not write them (see [`crate::restart`]); both read as 0 when absent.
//!
//! Format 1 had no `uptime`, no `checkpoints`, and only v1 lease records. Format 2 added them
//! and v2 lease records. Format 3 (this build) writes v3 lease records and v2 key records, which
//! end with a checksum of the record and of its key (see [`crate::record`]); it reads every
//! older record as it was. Opening a format-1 or format-2 file upgrades it in one write
//! transaction: `format` becomes 3 (so that an older build refuses the file with
//! [`Error::IncompatibleFormat`] rather than taking checksummed records for damaged ones), and,
//! from format 1, its v1 records, which decode as leases without a checkpoint, are rewritten if
//! the session writes checkpoints. Records are otherwise rewritten, with their checksum, only
//! when they are next written.
//!
//! Format 2 had no `lessor.revoking`. Opening a format-2 file creates it and stores format 3, so
//! that an older build, which would show the hidden keys of a lease being revoked, refuses the
//! file.
//!
//! Functions here only read and write tables; the caller owns the transaction, the counters and
//! the in-memory state.

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
};

use crate::error::{Error, Result};
use crate::integrity::Problem;
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::record::{KvRecord, LeaseRecord};

/// The format this build writes, and the newest it reads (it reads every format from 1 up).
/// Bump it when a table or record changes meaning, or gains a version an older build would not
/// read.
pub(crate) const FORMAT_VERSION: u64 = 3;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("lessor.meta");
pub(crate) const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
pub(crate) const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new("lessor.lease_keys");
pub(crate) const REVOKING: TableDefinition<u64, u64> = TableDefinition::new("lessor.revoking");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_MAX_LEASE_ID: &str = "max_lease_id";
pub(crate) const META_UPTIME: &str = "uptime";
const META_CHECKPOINTS: &str = "checkpoints";

/// The counters kept in `lessor.meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    /// The database's revision.
    pub revision: u64,
    /// The highest lease id ever issued (auto or explicit); 0 if none.
    pub max_lease_id: u64,
}

impl Counters {
    /// Advances the revision by one and returns it.
    pub(crate) fn bump_revision(&mut self) -> Result<u64> {
        self.revision = self
            .revision
            .checked_add(1)
            .ok_or_else(|| Error::Corrupted("the revision counter is at its maximum".into()))?;
        Ok(self.revision)
    }
}

/// What `lessor.meta` holds, as read at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub counters: Counters,
    /// The file's format version, 1 to [`FORMAT_VERSION`].
    pub format: u64,
    /// The database's uptime as of the last checkpoint.
    pub uptime: u64,
    /// Whether the leases' checkpoints are current.
    pub checkpoints: bool,
}

/// Checks the format of a freshly opened database, initialising an empty one (with the
/// `checkpoints` flag set to `checkpoints`). Returns what its metadata holds.
/// Its commits are two-phase whatever the session's setting: they happen once, at open, and
/// the latest commit of a file is then never one a crash can have torn.
pub(crate) fn init(db: &Database, checkpoints: bool) -> Result<Meta> {
    if let Some(meta) = check(&db.begin_read()?)? {
        let read = db.begin_read()?;
        let missing = [LEASES.name(), KV.name(), LEASE_KEYS.name(), REVOKING.name()]
            .iter()
            .any(|name| {
                !read
                    .list_tables()
                    .is_ok_and(|mut t| t.any(|t| t.name() == *name))
            });
        drop(read);
        if missing {
            // A database that was never written to has only its metadata: read snapshots need
            // every table.
            let mut txn = db.begin_write()?;
            txn.set_two_phase_commit(true);
            txn.open_table(LEASES)?;
            txn.open_table(KV)?;
            txn.open_table(LEASE_KEYS)?;
            txn.open_table(REVOKING)?;
            txn.commit()?;
        }
        return Ok(meta);
    }
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    {
        let mut meta = txn.open_table(META)?;
        write_format(&mut meta, checkpoints)?;
        meta.insert(META_UPTIME, 0)?;
        write_counters(&mut meta, Counters::default())?;
        // Every table exists from the start, so that read snapshots can open them.
        txn.open_table(LEASES)?;
        txn.open_table(KV)?;
        txn.open_table(LEASE_KEYS)?;
        txn.open_table(REVOKING)?;
    }
    txn.commit()?;
    Ok(Meta {
        counters: Counters::default(),
        format: FORMAT_VERSION,
        uptime: 0,
        checkpoints,
    })
}

/// Checks, reading only, that `read` sees a database this build can use: lessor's, or one
/// with no tables at all (`None`: it is to be initialised). A database with tables but no
/// `lessor.meta` is [`Error::NotLessorDatabase`], and so is a `lessor.meta` of other types;
/// another lessor table of other types than this format's is [`Error::Corrupted`]. The format
/// is checked before the tables' types, which a newer format may have changed.
pub(crate) fn check(read: &ReadTransaction) -> Result<Option<Meta>> {
    let mut has_meta = false;
    let mut has_other = read.list_multimap_tables()?.next().is_some();
    for t in read.list_tables()? {
        if t.name() == META.name() {
            has_meta = true;
        } else {
            has_other = true;
        }
    }
    if !has_meta {
        if has_other {
            return Err(Error::NotLessorDatabase(
                "a redb database whose tables are not lessor's".into(),
            ));
        }
        return Ok(None);
    }
    let meta = read.open_table(META).map_err(|e| {
        wrong_types(e, |why| {
            Error::NotLessorDatabase(format!("its table lessor.meta is not lessor's ({why})"))
        })
    })?;
    let found = meta_of(&meta)?;
    let corrupted = |why: String| Error::Corrupted(format!("{WRONG_TYPES} ({why})"));
    // A table not there yet is created by the first write.
    let absent_ok = |e: redb::TableError| match e {
        redb::TableError::TableDoesNotExist(_) => Ok(()),
        e => Err(wrong_types(e, corrupted)),
    };
    read.open_table(LEASES).map(drop).or_else(absent_ok)?;
    read.open_table(KV).map(drop).or_else(absent_ok)?;
    read.open_table(LEASE_KEYS).map(drop).or_else(absent_ok)?;
    read.open_table(REVOKING).map(drop).or_else(absent_ok)?;
    Ok(Some(found))
}

/// How [`check`]'s [`Error::Corrupted`] for a lessor table of other types begins.
pub(crate) const WRONG_TYPES: &str = "a lessor table has types other than lessor's";

/// A table opened with types other than its own becomes the error `refuse` makes of the
/// reason; any other failure is what it is.
fn wrong_types(e: redb::TableError, refuse: impl FnOnce(String) -> Error) -> Error {
    match e {
        redb::TableError::TableTypeMismatch { .. }
        | redb::TableError::TableIsMultimap(_)
        | redb::TableError::TypeDefinitionChanged { .. } => refuse(e.to_string()),
        e => Error::from(e),
    }
}

/// Finishes opening in one write transaction: stores the current format version and the
/// `checkpoints` flag, and rewrites `records`.
pub(crate) fn upgrade(
    db: &Database,
    checkpoints: bool,
    records: &[(LeaseId, LeaseRecord)],
) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    {
        write_format(&mut txn.open_table(META)?, checkpoints)?;
        let mut leases = txn.open_table(LEASES)?;
        for (id, record) in records {
            leases.insert(id.get(), record.encode(id.get())?.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Every lease stored in the database, ascending by id.
pub(crate) fn load_leases(db: &Database) -> Result<Vec<(LeaseId, LeaseRecord)>> {
    let read = db.begin_read()?;
    let table = read.open_table(LEASES)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let id = lease_id(k.value())?;
        out.push((id, LeaseRecord::decode(id.get(), v.value())?));
    }
    Ok(out)
}

/// The leases being revoked as of `read` (id → revision of the revocation); empty for a file
/// without the table (format 2, or read-only and never written by format 3).
pub(crate) fn revoking(read: &ReadTransaction) -> Result<std::collections::BTreeMap<u64, u64>> {
    let mut out = std::collections::BTreeMap::new();
    let table = match read.open_table(REVOKING) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.insert(k.value(), v.value());
    }
    Ok(out)
}

/// What `lessor.meta` holds as of `read`, without writing: `None` for a redb file with no
/// tables at all (one that [`init`] would initialise).
///
/// # Errors
/// [`Error::NotLessorDatabase`] if the file has tables but not lessor's metadata;
/// [`Error::Corrupted`] without a format version; [`Error::IncompatibleFormat`].
pub(crate) fn read_meta(read: &ReadTransaction) -> Result<Option<Meta>> {
    let mut has_meta = false;
    let mut has_other = false;
    for t in read.list_tables()? {
        if t.name() == META.name() {
            has_meta = true;
        } else {
            has_other = true;
        }
    }
    if !has_meta {
        return if has_other {
            Err(Error::NotLessorDatabase(
                "a redb database whose tables are not lessor's".into(),
            ))
        } else {
            Ok(None)
        };
    }
    let meta = read.open_table(META)?;
    meta_of(&meta).map(Some)
}

/// What an open `lessor.meta` says, its format checked first.
fn meta_of(meta: &impl ReadableTable<&'static str, u64>) -> Result<Meta> {
    let get = |k: &str| -> Result<Option<u64>> { Ok(meta.get(k)?.map(|v| v.value())) };
    let format = get(META_FORMAT)?
        .ok_or_else(|| Error::Corrupted("metadata has no format version".into()))?;
    if !(1..=FORMAT_VERSION).contains(&format) {
        return Err(Error::IncompatibleFormat {
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Meta {
        counters: Counters {
            revision: get(META_REVISION)?.unwrap_or(0),
            max_lease_id: get(META_MAX_LEASE_ID)?.unwrap_or(0),
        },
        format,
        uptime: get(META_UPTIME)?.unwrap_or(0),
        checkpoints: get(META_CHECKPOINTS)?.unwrap_or(0) != 0,
    })
}

pub(crate) fn lease_id(raw: u64) -> Result<LeaseId> {
    LeaseId::new(raw).ok_or_else(|| Error::Corrupted(format!("invalid lease id {raw} stored")))
}

/// The key stored under `key` with the record `bytes`, its value included.
pub(crate) fn key_value(key: &[u8], bytes: &[u8]) -> Result<KeyValue> {
    decode_key(key, bytes, true)
}

/// The key stored under `key` with the record `bytes`, with its value (`with_value`) or with
/// an empty one. The record is checked whole either way (checksum included).
pub(crate) fn decode_key(key: &[u8], bytes: &[u8], with_value: bool) -> Result<KeyValue> {
    let r = KvRecord::decode(key, bytes)?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: if with_value {
            r.value.to_vec()
        } else {
            Vec::new()
        },
        lease: match r.lease {
            0 => None,
            raw => Some(lease_id(raw)?),
        },
        create_revision: Revision(r.create_revision),
        mod_revision: Revision(r.mod_revision),
        version: r.version,
    })
}

/// The database's revision as of `read`.
pub(crate) fn revision(read: &ReadTransaction) -> Result<u64> {
    let meta = read.open_table(META)?;
    let found = meta.get(META_REVISION)?;
    Ok(found.map_or(0, |v| v.value()))
}

/// Stores the counters in an open `lessor.meta` table; every commit ends with this.
pub(crate) fn write_counters(meta: &mut Table<'_, &'static str, u64>, c: Counters) -> Result<()> {
    meta.insert(META_REVISION, c.revision)?;
    meta.insert(META_MAX_LEASE_ID, c.max_lease_id)?;
    Ok(())
}

/// `lessor.meta`'s format entries: this build's format version and the `checkpoints` flag.
fn write_format(meta: &mut Table<'_, &'static str, u64>, checkpoints: bool) -> Result<()> {
    meta.insert(META_FORMAT, FORMAT_VERSION)?;
    meta.insert(META_CHECKPOINTS, u64::from(checkpoints))?;
    Ok(())
}

/// What [`verify`] found.
pub(crate) struct Report {
    /// Broken invariants; empty when the database is consistent.
    pub problems: Vec<Problem>,
    /// The ids of the stored leases, ascending.
    pub leases: Vec<LeaseId>,
}

/// Checks the invariants listed in the module docs over the whole file.
pub(crate) fn verify(read: &ReadTransaction) -> Result<Report> {
    let mut problems = Vec::new();
    let mut ids = Vec::new();
    let meta = read.open_table(META)?;
    let revision = meta.get(META_REVISION)?.map_or(0, |v| v.value());
    let max_id = meta.get(META_MAX_LEASE_ID)?.map_or(0, |v| v.value());
    let leases = read.open_table(LEASES)?;
    let kv = read.open_table(KV)?;
    let index = read.open_table(LEASE_KEYS)?;
    let revoking = revoking(read)?;
    // A lease being revoked has no record, and still keys and index entries.
    let exists = |lease: u64| -> Result<bool> {
        Ok(revoking.contains_key(&lease) || leases.get(lease)?.is_some())
    };
    for (&id, &rev) in &revoking {
        if leases.get(id)?.is_some() {
            problems.push(Problem::RevokingLeaseHasRecord { lease: id });
        }
        if rev > revision {
            problems.push(Problem::RevokedAfterTheRevision {
                lease: id,
                revision: rev,
                database_revision: revision,
            });
        }
    }

    for entry in leases.iter()? {
        let (k, v) = entry?;
        let id = k.value();
        match LeaseId::new(id) {
            Some(lease) => ids.push(lease),
            None => problems.push(Problem::LeaseIdOutOfRange { lease: id }),
        }
        if id > max_id {
            problems.push(Problem::LeaseIdAboveHighWater {
                lease: id,
                max: max_id,
            });
        }
        if let Err(e) = LeaseRecord::decode(id, v.value()) {
            problems.push(Problem::BadLeaseRecord {
                lease: id,
                detail: e.to_string(),
            });
        }
    }
    for entry in kv.iter()? {
        let (k, v) = entry?;
        let key = k.value();
        let record = match KvRecord::decode(key, v.value()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(Problem::BadKeyRecord {
                    key: key.to_vec(),
                    detail: e.to_string(),
                });
                continue;
            }
        };
        if record.mod_revision > revision || record.create_revision > record.mod_revision {
            problems.push(Problem::KeyRevisionsOutOfOrder {
                key: key.to_vec(),
                create_revision: record.create_revision,
                mod_revision: record.mod_revision,
                database_revision: revision,
            });
        }
        if record.lease != 0 {
            if !exists(record.lease)? {
                problems.push(Problem::KeyOfMissingLease {
                    key: key.to_vec(),
                    lease: record.lease,
                });
            }
            if index.get((record.lease, key))?.is_none() {
                problems.push(Problem::KeyMissingFromIndex {
                    key: key.to_vec(),
                    lease: record.lease,
                });
            }
        }
    }
    for entry in index.iter()? {
        let (k, _) = entry?;
        let (lease, key) = k.value();
        let owner = match kv.get(key)? {
            Some(v) => KvRecord::decode(key, v.value()).map(|r| r.lease).ok(),
            None => None,
        };
        if owner != Some(lease) {
            problems.push(Problem::IndexedKeyNotAttached {
                key: key.to_vec(),
                lease,
                owner,
            });
        }
        if !exists(lease)? {
            problems.push(Problem::IndexOfMissingLease { lease });
        }
    }
    Ok(Report {
        problems,
        leases: ids,
    })
}
