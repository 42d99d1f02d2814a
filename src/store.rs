//! Persistence: the redb tables, the format version, and every read and write of them.
//!
//! # Disk format (format version 2)
//!
//! | table | key | value |
//! |---|---|---|
//! | `lessor.meta` | `&str` | `u64`: `format`, `revision`, `max_lease_id`, `uptime`, `checkpoints` |
//! | `lessor.leases` | lease id `u64` | [`LeaseRecord`] (v1 or v2) |
//! | `lessor.kv` | key `&[u8]` | [`KvRecord`] (value and metadata) |
//! | `lessor.lease_keys` | `(lease id u64, key &[u8])` | `()` |
//!
//! `lease_keys` indexes `kv` by lease so that a revocation finds its keys with one range scan.
//! The invariants [`verify`] checks: every key whose record names a lease has that lease and
//! its index entry; every index entry has its key and lease; no key or lease is newer than the
//! stored revision or lease-id high-water mark.
//!
//! `uptime` is the database's uptime (nanoseconds open, summed over its sessions) as of the last
//! checkpoint, and `checkpoints` is 1 while the leases' checkpoints are current, 0 after a
//! session that did not write them (see [`crate::restart`]); both read as 0 when absent.
//!
//! Format 1 had no `uptime`, no `checkpoints`, and only v1 lease records. Opening a format-1 file
//! upgrades it in one write transaction: `format` becomes 2 (so that an older build refuses the
//! file rather than misreading v2 records), and its v1 records, which decode as leases without a
//! checkpoint, are rewritten as v2 if the session writes checkpoints.
//!
//! Functions here only read and write tables; the caller owns the transaction, the counters and
//! the in-memory state.

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, TableHandle, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::record::{Checkpoint, KvRecord, LeaseRecord};

/// The format this build writes, and the newest it reads (it reads every format from 1 up).
/// Bump it when a table or record changes meaning.
pub(crate) const FORMAT_VERSION: u64 = 2;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("lessor.meta");
pub(crate) const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
pub(crate) const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> =
    TableDefinition::new("lessor.lease_keys");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_MAX_LEASE_ID: &str = "max_lease_id";
const META_UPTIME: &str = "uptime";
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
pub(crate) fn init(db: &Database, checkpoints: bool) -> Result<Meta> {
    let read = db.begin_read()?;
    let mut has_meta = false;
    let mut has_other = false;
    for t in read.list_tables()? {
        if t.name() == META.name() {
            has_meta = true;
        } else {
            has_other = true;
        }
    }
    if !has_meta && has_other {
        return Err(Error::NotLessorDatabase(
            "a redb database whose tables are not lessor's".into(),
        ));
    }
    if has_meta {
        let meta = read.open_table(META)?;
        let get = |k: &str| -> Result<Option<u64>> { Ok(meta.get(k)?.map(|v| v.value())) };
        let format = get(META_FORMAT)?
            .ok_or_else(|| Error::Corrupted("metadata has no format version".into()))?;
        if !(1..=FORMAT_VERSION).contains(&format) {
            return Err(Error::IncompatibleFormat {
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        return Ok(Meta {
            counters: Counters {
                revision: get(META_REVISION)?.unwrap_or(0),
                max_lease_id: get(META_MAX_LEASE_ID)?.unwrap_or(0),
            },
            format,
            uptime: get(META_UPTIME)?.unwrap_or(0),
            checkpoints: get(META_CHECKPOINTS)?.unwrap_or(0) != 0,
        });
    }
    drop(read);
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn)?;
        tables.set_format(checkpoints)?;
        tables.set_uptime(0)?;
        tables.set_counters(Counters::default())?;
    }
    txn.commit()?;
    Ok(Meta {
        counters: Counters::default(),
        format: FORMAT_VERSION,
        uptime: 0,
        checkpoints,
    })
}

/// Finishes opening in one write transaction: stores the current format version and the
/// `checkpoints` flag, and rewrites `records`.
pub(crate) fn upgrade(
    db: &Database,
    checkpoints: bool,
    records: &[(LeaseId, LeaseRecord)],
) -> Result<()> {
    let txn = db.begin_write()?;
    {
        let mut tables = Tables::open(&txn)?;
        tables.set_format(checkpoints)?;
        for (id, record) in records {
            tables.insert_lease(*id, record)?;
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
        out.push((id, LeaseRecord::decode(v.value())?));
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
    let get = |k: &str| -> Result<Option<u64>> { Ok(meta.get(k)?.map(|v| v.value())) };
    let format = get(META_FORMAT)?
        .ok_or_else(|| Error::Corrupted("metadata has no format version".into()))?;
    if !(1..=FORMAT_VERSION).contains(&format) {
        return Err(Error::IncompatibleFormat {
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(Meta {
        counters: Counters {
            revision: get(META_REVISION)?.unwrap_or(0),
            max_lease_id: get(META_MAX_LEASE_ID)?.unwrap_or(0),
        },
        format,
        uptime: get(META_UPTIME)?.unwrap_or(0),
        checkpoints: get(META_CHECKPOINTS)?.unwrap_or(0) != 0,
    }))
}

fn lease_id(raw: u64) -> Result<LeaseId> {
    LeaseId::new(raw).ok_or_else(|| Error::Corrupted(format!("invalid lease id {raw} stored")))
}

pub(crate) fn key_value(key: &[u8], bytes: &[u8]) -> Result<KeyValue> {
    let r = KvRecord::decode(bytes)?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: r.value.to_vec(),
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

/// How many keys the database holds, and how many of them are attached to a lease; O(1).
pub(crate) fn key_counts(read: &ReadTransaction) -> Result<(u64, u64)> {
    let keys = read.open_table(KV)?.len()?;
    let attached = read.open_table(LEASE_KEYS)?.len()?;
    Ok((keys, attached))
}

/// Reads one key.
pub(crate) fn get(read: &ReadTransaction, key: &[u8]) -> Result<Option<KeyValue>> {
    let kv = read.open_table(KV)?;
    let found = kv.get(key)?;
    found.map(|v| key_value(key, v.value())).transpose()
}

/// Reads every key that starts with `prefix`, in key order.
pub(crate) fn range(read: &ReadTransaction, prefix: &[u8]) -> Result<Vec<KeyValue>> {
    let kv = read.open_table(KV)?;
    let mut out = Vec::new();
    for entry in kv.range::<&[u8]>(prefix..)? {
        let (k, v) = entry?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        out.push(key_value(key, v.value())?);
    }
    Ok(out)
}

/// The keys attached to lease `id`, in key order.
pub(crate) fn lease_keys(read: &ReadTransaction, id: LeaseId) -> Result<Vec<Vec<u8>>> {
    let index = read.open_table(LEASE_KEYS)?;
    collect_lease_keys(&index, id)
}

fn collect_lease_keys(
    index: &impl ReadableTable<(u64, &'static [u8]), ()>,
    id: LeaseId,
) -> Result<Vec<Vec<u8>>> {
    let start: (u64, &[u8]) = (id.get(), &[]);
    let end: (u64, &[u8]) = (id.get() + 1, &[]);
    let mut keys = Vec::new();
    for entry in index.range(start..end)? {
        let (k, _) = entry?;
        keys.push(k.value().1.to_vec());
    }
    Ok(keys)
}

/// The tables of one write transaction, opened once.
pub(crate) struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    leases: Table<'txn, u64, &'static [u8]>,
    kv: Table<'txn, &'static [u8], &'static [u8]>,
    lease_keys: Table<'txn, (u64, &'static [u8]), ()>,
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            leases: txn.open_table(LEASES)?,
            kv: txn.open_table(KV)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
        })
    }

    /// Stores this build's format version and the `checkpoints` flag.
    fn set_format(&mut self, checkpoints: bool) -> Result<()> {
        self.meta.insert(META_FORMAT, FORMAT_VERSION)?;
        self.meta.insert(META_CHECKPOINTS, u64::from(checkpoints))?;
        Ok(())
    }

    /// Stores the database's uptime as of this checkpoint.
    pub(crate) fn set_uptime(&mut self, uptime: u64) -> Result<()> {
        self.meta.insert(META_UPTIME, uptime)?;
        Ok(())
    }

    /// Stores lease `id`'s checkpoint in its record. `false`, writing nothing, if there is no
    /// such record or it does not decode: one damaged record must not stop the checkpoints of
    /// the others (`verify` and the next open report it).
    pub(crate) fn set_checkpoint(&mut self, id: LeaseId, checkpoint: Checkpoint) -> Result<bool> {
        let record = match self.leases.get(id.get())? {
            Some(bytes) => LeaseRecord::decode(bytes.value()),
            None => return Ok(false),
        };
        let Ok(mut record) = record else {
            return Ok(false);
        };
        record.checkpoint = Some(checkpoint);
        self.insert_lease(id, &record)?;
        Ok(true)
    }

    /// Stores the counters; every write transaction ends with this.
    pub(crate) fn set_counters(&mut self, c: Counters) -> Result<()> {
        self.meta.insert(META_REVISION, c.revision)?;
        self.meta.insert(META_MAX_LEASE_ID, c.max_lease_id)?;
        Ok(())
    }

    pub(crate) fn lease_exists(&self, id: LeaseId) -> Result<bool> {
        Ok(self.leases.get(id.get())?.is_some())
    }

    /// Reads one key, seeing this transaction's writes.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let found = self.kv.get(key)?;
        found.map(|v| key_value(key, v.value())).transpose()
    }

    pub(crate) fn insert_lease(&mut self, id: LeaseId, record: &LeaseRecord) -> Result<()> {
        self.leases.insert(id.get(), record.encode()?.as_slice())?;
        Ok(())
    }

    /// Writes `key = value` at revision `rev`, attached to `lease` (or to none), moving the
    /// index entry if the key was attached to another lease. Returns the key as written.
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        rev: u64,
    ) -> Result<KeyValue> {
        let lease_raw = lease.map_or(0, LeaseId::get);
        let (create_revision, version) = {
            let old = self.kv.get(key)?;
            match old {
                Some(bytes) => {
                    let r = KvRecord::decode(bytes.value())?;
                    if r.lease != 0 && r.lease != lease_raw {
                        self.lease_keys.remove((r.lease, key))?;
                    }
                    (r.create_revision, r.version.saturating_add(1))
                }
                None => (rev, 1),
            }
        };
        let record = KvRecord {
            lease: lease_raw,
            create_revision,
            mod_revision: rev,
            version,
            value,
        };
        self.kv.insert(key, record.encode()?.as_slice())?;
        if lease_raw != 0 {
            self.lease_keys.insert((lease_raw, key), ())?;
        }
        Ok(KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            create_revision: Revision(create_revision),
            mod_revision: Revision(rev),
            version,
        })
    }

    /// Deletes `key` and its index entry; `false` if it did not exist.
    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let lease = match self.kv.remove(key)? {
            Some(bytes) => KvRecord::decode(bytes.value())?.lease,
            None => return Ok(false),
        };
        if lease != 0 {
            self.lease_keys.remove((lease, key))?;
        }
        Ok(true)
    }

    /// Re-attaches existing `key` to `lease` (from another lease or from none), keeping its
    /// value and revisions.
    pub(crate) fn attach(&mut self, lease: LeaseId, key: &[u8]) -> Result<()> {
        let bytes = match self.kv.get(key)? {
            Some(b) => b.value().to_vec(),
            None => return Err(Error::KeyNotFound(key.to_vec())),
        };
        let mut record = KvRecord::decode(&bytes)?;
        if record.lease == lease.get() {
            return Ok(());
        }
        if record.lease != 0 {
            self.lease_keys.remove((record.lease, key))?;
        }
        record.lease = lease.get();
        self.kv.insert(key, record.encode()?.as_slice())?;
        self.lease_keys.insert((lease.get(), key), ())?;
        Ok(())
    }

    /// Detaches `key` from `lease`: the key stays, attached to no lease.
    pub(crate) fn detach(&mut self, lease: LeaseId, key: &[u8]) -> Result<()> {
        let bytes = match self.kv.get(key)? {
            Some(b) => b.value().to_vec(),
            None => return Err(Error::KeyNotFound(key.to_vec())),
        };
        let mut record = KvRecord::decode(&bytes)?;
        if record.lease != lease.get() {
            return Err(Error::KeyNotAttached {
                key: key.to_vec(),
                lease,
            });
        }
        record.lease = 0;
        self.kv.insert(key, record.encode()?.as_slice())?;
        self.lease_keys.remove((lease.get(), key))?;
        Ok(())
    }

    /// Deletes lease `id` and every key attached to it. Returns the deleted keys, in key order.
    pub(crate) fn revoke(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        self.leases.remove(id.get())?;
        let keys = collect_lease_keys(&self.lease_keys, id)?;
        let mut deleted = Vec::with_capacity(keys.len());
        for key in keys {
            self.lease_keys.remove((id.get(), key.as_slice()))?;
            // Only delete a key that really belongs to this lease: a stale index entry must not
            // take another lease's key with it. A record that does not decode is deleted on the
            // index's word, so that one damaged record cannot stop expiry.
            let owner = match self.kv.get(key.as_slice())? {
                Some(bytes) => KvRecord::decode(bytes.value()).map_or(id.get(), |r| r.lease),
                None => continue,
            };
            if owner == id.get() {
                self.kv.remove(key.as_slice())?;
                deleted.push(key);
            }
        }
        Ok(deleted)
    }
}

/// What [`verify`] found.
pub(crate) struct Report {
    /// Broken invariants; empty when the database is consistent.
    pub problems: Vec<String>,
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
    let show = |k: &[u8]| k.escape_ascii().to_string();

    for entry in leases.iter()? {
        let (k, v) = entry?;
        let id = k.value();
        match LeaseId::new(id) {
            Some(lease) => ids.push(lease),
            None => problems.push(format!("lease id {id} is out of range")),
        }
        if id > max_id {
            problems.push(format!(
                "lease {id} is above the id high-water mark {max_id}"
            ));
        }
        if let Err(e) = LeaseRecord::decode(v.value()) {
            problems.push(format!("lease {id}: {e}"));
        }
    }
    for entry in kv.iter()? {
        let (k, v) = entry?;
        let key = k.value();
        let record = match KvRecord::decode(v.value()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("key {}: {e}", show(key)));
                continue;
            }
        };
        if record.mod_revision > revision || record.create_revision > record.mod_revision {
            problems.push(format!(
                "key {}: revisions {}..{} do not fit the database revision {revision}",
                show(key),
                record.create_revision,
                record.mod_revision
            ));
        }
        if record.lease != 0 {
            if leases.get(record.lease)?.is_none() {
                problems.push(format!(
                    "key {} is attached to lease {}, which does not exist",
                    show(key),
                    record.lease
                ));
            }
            if index.get((record.lease, key))?.is_none() {
                problems.push(format!(
                    "key {} is attached to lease {} but missing from its index",
                    show(key),
                    record.lease
                ));
            }
        }
    }
    for entry in index.iter()? {
        let (k, _) = entry?;
        let (lease, key) = k.value();
        let owner = match kv.get(key)? {
            Some(v) => KvRecord::decode(v.value()).map(|r| r.lease).ok(),
            None => None,
        };
        if owner != Some(lease) {
            problems.push(format!(
                "index lists key {} under lease {lease}, but the key {}",
                show(key),
                match owner {
                    None => "does not exist".to_string(),
                    Some(0) => "has no lease".to_string(),
                    Some(o) => format!("is attached to lease {o}"),
                }
            ));
        }
        if leases.get(lease)?.is_none() {
            problems.push(format!("index lists lease {lease}, which does not exist"));
        }
    }
    Ok(Report {
        problems,
        leases: ids,
    })
}
