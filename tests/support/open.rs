//! Opening arbitrary bytes as a database: the body of the `open` fuzz target
//! (`fuzz/fuzz_targets/open.rs`) and of its replay on stable (`tests/fuzz_corpus.rs`).
//!
//! An input is read one of two ways:
//! - **file**: bytes that begin with redb's magic number are the database file itself, as it
//!   would be found on disk (a real file, truncated, bit-flipped...). redb checks its checksums
//!   at open, so most damage stops there, with an error.
//! - **tables**: anything else is decoded ([`Tables::decode`]) into the contents of lessor's four
//!   tables (metadata, lease records, key records, the lease-to-keys index), which are written
//!   with redb into a fresh database: a valid redb file holding arbitrary lessor data, the way
//!   to reach the code behind redb's checksums.
//!
//! Each database is opened under every restart policy (they read the lease records
//! differently). The open must give a lessor or a clear error (storage, corruption, not a
//! lessor database, incompatible format). A lessor that opens must answer reads, take a grant
//! and puts, expire every lease once the clock has run out, close, and open again; if `verify`
//! found it consistent at open, all of that must succeed (but a grant may find the lease ids
//! exhausted, and nothing is required of writes when the revision counter is at its top) and it
//! must still be consistent after. A panic anywhere is a finding.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use lessor::{Error, KeyValue, LeaseId, Lessor, ManualClock, RestartPolicy, Revision};
use parking_lot::RwLock;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// redb's magic number, the first bytes of every redb file.
pub const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The largest the in-memory disk may grow: a corrupted header must not make a test allocate
/// gigabytes. A real disk would be full: redb gets an I/O error.
const DISK_LIMIT: u64 = 64 << 20;

/// lessor's tables, as `src/store.rs` defines them (the disk format in `docs/design.md`).
const META: TableDefinition<&str, u64> = TableDefinition::new("lessor.meta");
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lessor.lease_keys");
/// A table lessor does not know, next to its own.
const FOREIGN: TableDefinition<&str, u64> = TableDefinition::new("not.lessor");

/// The names [`Tables::decode`] picks metadata entries from: lessor's, and one it ignores.
const META_NAMES: [&str; 6] = [
    "format",
    "revision",
    "max_lease_id",
    "uptime",
    "checkpoints",
    "unknown",
];

const POLICIES: [RestartPolicy; 3] = [
    RestartPolicy::Reset,
    RestartPolicy::Preserve,
    RestartPolicy::Absolute,
];

/// A disk in memory holding a file image, growing up to [`DISK_LIMIT`].
#[derive(Clone, Debug, Default)]
pub struct Image(Arc<RwLock<Vec<u8>>>);

impl Image {
    pub fn new(bytes: Vec<u8>) -> Image {
        Image(Arc::new(RwLock::new(bytes)))
    }

    /// A copy of the bytes on the disk now.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.read().clone()
    }

    /// Changes the bytes on the disk in place, under whatever has it open (damage).
    pub fn damage(&self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.0.write());
    }
}

impl redb::StorageBackend for Image {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.read().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let data = self.0.read();
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| data.get(start..start.checked_add(out.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > DISK_LIMIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the test disk is full",
            ));
        }
        self.0.write().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut disk = self.0.write();
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|start| disk.get_mut(start..start.checked_add(data.len())?))
            .ok_or_else(|| std::io::Error::other("write past the end"))?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// The contents of lessor's tables, written into a fresh database by [`Tables::image`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tables {
    pub meta: Vec<(&'static str, u64)>,
    pub leases: Vec<(u64, Vec<u8>)>,
    pub kv: Vec<(Vec<u8>, Vec<u8>)>,
    pub lease_keys: Vec<(u64, Vec<u8>)>,
    /// Whether a table lessor does not know is there too.
    pub foreign: bool,
}

impl Tables {
    /// Reads entries until the bytes run out: a tag byte (mod 5: metadata, lease, key, index
    /// entry, foreign table), then the entry's fields: numbers as postcard-style varints (LEB128),
    /// byte strings as a length byte and the bytes. Missing bytes read as zero; every input
    /// decodes.
    pub fn decode(bytes: &[u8]) -> Tables {
        let mut input = Input(bytes);
        let mut t = Tables::default();
        while !input.0.is_empty() {
            match input.byte() % 5 {
                0 => {
                    let name = META_NAMES[usize::from(input.byte()) % META_NAMES.len()];
                    t.meta.push((name, input.varint()));
                }
                1 => t.leases.push((input.varint(), input.bytes())),
                2 => t.kv.push((input.bytes(), input.bytes())),
                3 => t.lease_keys.push((input.varint(), input.bytes())),
                _ => t.foreign = true,
            }
        }
        t
    }

    /// The inverse of [`Tables::decode`] (for seeds). Byte strings longer than 255 bytes do not
    /// encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let bytes = |out: &mut Vec<u8>, b: &[u8]| {
            out.push(u8::try_from(b.len()).expect("at most 255 bytes"));
            out.extend_from_slice(b);
        };
        for &(name, value) in &self.meta {
            out.push(0);
            out.push(META_NAMES.iter().position(|&n| n == name).unwrap() as u8);
            varint(value, &mut out);
        }
        for (id, record) in &self.leases {
            out.push(1);
            varint(*id, &mut out);
            bytes(&mut out, record);
        }
        for (key, record) in &self.kv {
            out.push(2);
            bytes(&mut out, key);
            bytes(&mut out, record);
        }
        for (id, key) in &self.lease_keys {
            out.push(3);
            varint(*id, &mut out);
            bytes(&mut out, key);
        }
        if self.foreign {
            out.push(4);
        }
        out
    }

    /// Reads the tables of a database (for seeds).
    pub fn read(disk: &Image) -> Tables {
        let db = redb::Database::builder()
            .create_with_backend(disk.clone())
            .unwrap();
        let read = db.begin_read().unwrap();
        let mut t = Tables::default();
        let meta = read.open_table(META).unwrap();
        for entry in meta.iter().unwrap() {
            let (k, v) = entry.unwrap();
            let name = META_NAMES.iter().find(|&&n| n == k.value()).unwrap();
            t.meta.push((name, v.value()));
        }
        for entry in read.open_table(LEASES).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            t.leases.push((k.value(), v.value().to_vec()));
        }
        for entry in read.open_table(KV).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            t.kv.push((k.value().to_vec(), v.value().to_vec()));
        }
        for entry in read.open_table(LEASE_KEYS).unwrap().iter().unwrap() {
            let (k, _) = entry.unwrap();
            let (id, key) = k.value();
            t.lease_keys.push((id, key.to_vec()));
        }
        t
    }

    /// A fresh database holding exactly these entries (a later entry replaces an earlier one
    /// with the same key), written with redb alone.
    pub fn image(&self) -> Result<Vec<u8>, redb::Error> {
        let disk = Image::default();
        let db = redb::Database::builder().create_with_backend(disk.clone())?;
        let txn = db.begin_write()?;
        {
            if !self.meta.is_empty() {
                let mut meta = txn.open_table(META)?;
                for &(name, value) in &self.meta {
                    meta.insert(name, value)?;
                }
            }
            if !self.leases.is_empty() {
                let mut leases = txn.open_table(LEASES)?;
                for (id, record) in &self.leases {
                    leases.insert(id, record.as_slice())?;
                }
            }
            if !self.kv.is_empty() {
                let mut kv = txn.open_table(KV)?;
                for (key, record) in &self.kv {
                    kv.insert(key.as_slice(), record.as_slice())?;
                }
            }
            if !self.lease_keys.is_empty() {
                let mut index = txn.open_table(LEASE_KEYS)?;
                for (id, key) in &self.lease_keys {
                    index.insert((*id, key.as_slice()), ())?;
                }
            }
            if self.foreign {
                txn.open_table(FOREIGN)?.insert("x", 1)?;
            }
        }
        txn.commit()?;
        drop(db);
        Ok(disk.bytes())
    }
}

/// postcard's unsigned varint (LEB128).
pub fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// What is left of a fuzz input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A LEB128 varint of up to ten bytes; bits beyond 64 are dropped.
    fn varint(&mut self) -> u64 {
        let mut n = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte();
            if shift < 64 {
                n |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                break;
            }
        }
        n
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte()).min(self.0.len());
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        head.to_vec()
    }
}

/// The whole check of one input: `Err` describes a finding.
pub fn check_open(bytes: &[u8]) -> Result<(), String> {
    let image = if bytes.starts_with(&REDB_MAGIC) {
        bytes.to_vec()
    } else {
        match Tables::decode(bytes).image() {
            Ok(image) => image,
            // The harness could not write the tables (none of lessor's code ran).
            Err(_) => return Ok(()),
        }
    };
    for policy in POLICIES {
        check_image(image.clone(), policy).map_err(|e| format!("{policy:?}: {e}"))?;
    }
    Ok(())
}

fn open(disk: &Image, clock: &ManualClock, policy: RestartPolicy) -> lessor::Result<Lessor> {
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .restart_policy(policy)
        .open_with_backend(disk.clone())
}

/// An error a damaged or foreign file may give: anything else is a finding.
fn clear(what: &str, e: &Error) -> Result<(), String> {
    match e {
        Error::Storage(_)
        | Error::Corrupted(_)
        | Error::NotLessorDatabase(_)
        | Error::IncompatibleFormat { .. }
        | Error::LeaseIdsExhausted
        | Error::Poisoned => Ok(()),
        other => Err(format!("{what}: unexpected error {other:?}")),
    }
}

/// `Ok` if the call succeeded, or failed clearly on a database that was not consistent.
fn must<T>(consistent: bool, what: &str, r: lessor::Result<T>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if consistent => Err(format!("{what} failed on a consistent database: {e:?}")),
        Err(e) => clear(what, &e).map(|()| None),
    }
}

fn check_image(image: Vec<u8>, policy: RestartPolicy) -> Result<(), String> {
    let disk = Image::new(image);
    let clock = ManualClock::new();
    let l = match open(&disk, &clock, policy) {
        Ok(l) => l,
        Err(e) => return clear("open", &e),
    };
    let consistent = match l.verify() {
        Ok(()) => true,
        Err(e) => {
            clear("verify", &e)?;
            false
        }
    };

    // A lease the file says has nothing left (a past wall-clock deadline under `Absolute`, say)
    // comes back dead, its keys still there until expiry runs (there is no ticker here): run it,
    // so that the reads below see a database at rest.
    must(consistent, "revoke_expired", l.revoke_expired())?;

    // Reads agree with each other.
    let leases = l.leases().unwrap();
    for &id in &leases {
        if let Some(info) = must(consistent, "time_to_live", l.time_to_live(id))?
            && info.remaining > info.ttl
        {
            return Err(format!("lease {id}: {info:?} has more left than its TTL"));
        }
    }
    let revision = must(consistent, "revision", l.revision())?;
    // A forged file may hold a revision at the top of its range: every write that needs one
    // then fails, clearly, and expiry cannot delete keys. Writes are held to the strict checks
    // only below it (this check writes fewer than 16 revisions).
    let strict = consistent && revision.is_some_and(|r| r.get() < u64::MAX - 16);
    let kvs = must(consistent, "range", l.range(""))?.unwrap_or_default();
    for kv in kvs.iter().take(16) {
        let got = must(consistent, "get", l.get(&kv.key))?;
        if got.is_some() && got != Some(Some(kv.clone())) {
            return Err(format!("get({:?}) = {got:?}, range gave {kv:?}", kv.key));
        }
        if consistent && kv.lease.is_some_and(|id| !leases.contains(&id)) {
            return Err(format!("{kv:?} is attached to a lease that is not alive"));
        }
    }
    if let Ok(w) = l.watch_from("", Revision::new(1)) {
        while w.try_recv().is_ok() {}
    }

    // Writes.
    let granted = match l.grant(Duration::from_secs(5)) {
        // The id high-water mark may be at the top already (a lease i64::MAX in the file).
        Err(Error::LeaseIdsExhausted) => None,
        r => must(strict, "grant", r)?,
    };
    if let Some(lease) = granted {
        must(
            strict,
            "put_with_lease",
            l.put_with_lease("/fuzz/leased", "v", lease.id),
        )?;
    }
    must(strict, "put", l.put("/fuzz/free", "v"))?;
    if let Some(kv) = kvs.first() {
        match l.delete(&kv.key) {
            // A forged file may hold a key the API refuses (an empty one, say): `verify` finds
            // it, and the refusal is right.
            Err(Error::InvalidKey(_) | Error::KeyTooLarge { .. }) if !consistent => {}
            r => {
                must(strict, "delete", r)?;
            }
        }
    }
    if let Some(&id) = leases.first() {
        must(strict, "revoke", l.revoke(id))?;
    }

    // Run the clock out: every lease expires, however long its TTL.
    clock.advance(Duration::MAX);
    must(strict, "revoke_expired", l.revoke_expired())?;
    if strict {
        let left = l.leases().unwrap();
        if !left.is_empty() {
            return Err(format!("leases {left:?} outlived the end of the clock"));
        }
        check_no_leased_keys(&l)?;
        l.verify()
            .map_err(|e| format!("consistent at open, not after writes and expiry: {e}"))?;
    }
    must(strict, "close", l.close())?;
    drop(l);

    // What was written opens again.
    let clock = ManualClock::new();
    let l = match open(&disk, &clock, policy) {
        Ok(l) => l,
        Err(e) if strict => return Err(format!("reopen failed: {e:?}")),
        Err(e) => return clear("reopen", &e),
    };
    if strict {
        l.verify()
            .map_err(|e| format!("consistent before the close, not after the reopen: {e}"))?;
        if !l.leases().unwrap().is_empty() {
            return Err(format!("leases {:?} came back after expiring", l.leases()));
        }
        check_no_leased_keys(&l)?;
    }
    must(strict, "close after reopen", l.close())?;
    Ok(())
}

fn check_no_leased_keys(l: &Lessor) -> Result<(), String> {
    let kvs: Vec<KeyValue> = l.range("").map_err(|e| format!("range: {e}"))?;
    match kvs.iter().find(|kv| kv.lease.is_some()) {
        Some(kv) => Err(format!("{kv:?} kept its lease after every lease expired")),
        None => Ok(()),
    }
}

/// For seeds: a lease id from a literal.
pub fn id(n: u64) -> LeaseId {
    LeaseId::new(n).expect("a valid id")
}
