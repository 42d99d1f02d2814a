//! `dump` and `restore`: a database as JSON lines, and back.
//!
//! The dump format (version [`DUMP_FORMAT`]) is one JSON object a line, each with a `type`:
//! a `header` first (format, revision, and how many leases and keys follow, so that a cut
//! file is noticed), then one `lease` line per lease by id, then one `key` line per key in key
//! order (keys and values as text, or hex under `key_hex`/`value_hex`; see `output.rs`).
//! Readers ignore fields they do not know.
//!
//! `restore` never writes into the database it replaces: it reads and checks the whole dump,
//! writes it into a new file beside the target (`.NAME.restore-PID.tmp`), fsyncs it, and renames
//! it over the target only once it is complete (then fsyncs the folder). A restore that fails or
//! is killed leaves the old file as it was; a killed one may leave its temporary file behind.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lessor::{Durability, Error, Inspector, LeaseId, Lessor, Op, Txn};
use serde::{Deserialize, Serialize};

use crate::args::Cli;
use crate::db;
use crate::duration::millis;
use crate::failure::{CliResult, ERROR, Failure, NOT_FOUND};
use crate::output::{JsonKv, count, write_json};

/// The version of the dump format this build writes and reads.
const DUMP_FORMAT: u64 = 1;

/// The longest line `restore` reads, in bytes (without its newline): room for the largest key
/// and value the default limits allow (4 KiB and 1 MiB), hex-encoded or JSON-escaped. Longer
/// lines are refused without being read whole.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Keys written per transaction by `restore`.
const KEYS_PER_TXN: usize = 1000;

/// The fsync delay `restore` runs with: it syncs once at the end anyway.
const RESTORE_MAX_DELAY: Duration = Duration::from_millis(200);

/// One line of a dump.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Header {
        format: u64,
        revision: u64,
        leases: u64,
        keys: u64,
    },
    Lease {
        id: u64,
        ttl_ms: u64,
        remaining_ms: u64,
    },
    Key(JsonKv),
}

pub fn dump(cli: &Cli, out: &mut dyn Write) -> CliResult {
    let inspector = db::open_read(cli)?;
    let read = inspector
        .leases()
        .and_then(|infos| Ok((infos, inspector.range_with_revision("")?)));
    drop(inspector);
    let (infos, snapshot) = read.map_err(|e| Failure::at(&cli.db, e))?;
    // The inspector leaves out the keys of leases with nothing left; a key whose lease is not
    // in the file at all (`verify` reports it) is left out too, so that the dump restores.
    let live: HashSet<LeaseId> = infos.iter().map(|i| i.id).collect();
    let kvs: Vec<_> = snapshot
        .kvs
        .iter()
        .filter(|kv| kv.lease.is_none_or(|id| live.contains(&id)))
        .collect();

    let mut out = BufWriter::new(out);
    write_json(
        &mut out,
        &Line::Header {
            format: DUMP_FORMAT,
            revision: snapshot.revision.get(),
            leases: infos.len() as u64,
            keys: kvs.len() as u64,
        },
    )?;
    for info in &infos {
        write_json(
            &mut out,
            &Line::Lease {
                id: info.id.get(),
                ttl_ms: millis(info.ttl),
                remaining_ms: millis(info.remaining),
            },
        )?;
    }
    for kv in kvs {
        write_json(&mut out, &Line::Key(JsonKv::new(kv)))?;
    }
    out.flush()?;
    Ok(())
}

/// Keys with their values, in key order.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A dump, checked: what `restore` writes.
#[derive(Debug, Default)]
struct Dump {
    /// Lease ids and TTLs, by id.
    leases: BTreeMap<LeaseId, Duration>,
    /// Keys with their values, by lease (`None`: no lease), in key order.
    keys: BTreeMap<Option<LeaseId>, Pairs>,
    key_count: usize,
}

pub fn restore(cli: &Cli, out: &mut dyn Write, file: &Path, force: bool) -> CliResult {
    let dump = if file == Path::new("-") {
        parse(BufReader::new(std::io::stdin().lock()), "stdin")?
    } else {
        let opened = std::fs::File::open(file).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                ERROR
            };
            Failure::new(code, format!("cannot read {}: {e}", file.display()))
        })?;
        parse(BufReader::new(opened), &file.display().to_string())?
    };
    let target = Target::check(cli, force)?;
    let temp = target.temp_path()?;
    // Created here, never an existing file: from now on the file is ours to remove.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| Failure::new(ERROR, format!("cannot create {}: {e}", temp.display())))?;
    let revision = match write_new(cli, &temp, &dump, target.max_lease_id)
        .and_then(|revision| target.replace_with(&temp).map(|()| revision))
    {
        Ok(revision) => revision,
        Err(failure) => {
            // Best effort: the failure is what the user needs to know.
            let _ = std::fs::remove_file(&temp);
            return Err(failure);
        }
    };
    if cli.json {
        #[derive(Serialize)]
        struct Restored {
            leases: usize,
            keys: usize,
            revision: u64,
        }
        write_json(
            out,
            &Restored {
                leases: dump.leases.len(),
                keys: dump.key_count,
                revision,
            },
        )?;
    } else {
        writeln!(
            out,
            "restored {} and {} into {} (revision {revision})",
            count(dump.leases.len(), "lease"),
            count(dump.key_count, "key"),
            cli.db.display()
        )?;
    }
    Ok(())
}

/// The database a restore replaces, checked, and held (a shared lock, so that no service opens
/// it) until the new file is renamed over it.
struct Target {
    /// The file to replace: `--db`, or the file it links to.
    path: PathBuf,
    /// The open old file, if there is one; holds its lock.
    held: Option<Inspector>,
    /// The old file's permissions, given to the new one.
    permissions: Option<std::fs::Permissions>,
    /// The old database's lease-id high-water mark, which the new one keeps: a lease id is
    /// never reused within a database.
    max_lease_id: u64,
}

impl Target {
    /// Checks `--db`: a missing file or an empty database is replaced; one with leases or keys
    /// only with `force` (also one that is damaged); another
    /// program's file, or one a process has open, never.
    fn check(cli: &Cli, force: bool) -> CliResult<Target> {
        let given = &cli.db;
        let metadata = match std::fs::metadata(given) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Target {
                    path: given.clone(),
                    held: None,
                    permissions: None,
                    max_lease_id: 0,
                });
            }
            Err(e) => {
                return Err(Failure::new(
                    ERROR,
                    format!("cannot read {}: {e}", given.display()),
                ));
            }
        };
        // A link is kept: the file it points to is replaced.
        let path = std::fs::canonicalize(given)
            .map_err(|e| Failure::new(ERROR, format!("cannot read {}: {e}", given.display())))?;
        let mut target = Target {
            path,
            held: None,
            permissions: Some(metadata.permissions()),
            max_lease_id: 0,
        };
        if metadata.len() == 0 {
            // An empty file is what `grant` or `put` would initialise.
            return Ok(target);
        }
        let inspector = match Inspector::open(given, cli.restart_policy.into()) {
            Ok(inspector) => inspector,
            // Damaged: a backup is what replaces it.
            Err(Error::Corrupted(_)) if force => return Ok(target),
            Err(e) => return Err(db::read_failure(given, e)),
        };
        match inspector.stats() {
            Ok(stats) => {
                let leases = stats.leases + stats.expired;
                if !force && (leases > 0 || stats.keys > 0) {
                    return Err(Failure::new(
                        ERROR,
                        format!(
                            "{} already holds {} and {}: restore into an empty database, or \
                             use --force to replace it",
                            cli.db.display(),
                            count(usize::try_from(leases).unwrap_or(usize::MAX), "lease"),
                            count(usize::try_from(stats.keys).unwrap_or(usize::MAX), "key")
                        ),
                    ));
                }
                target.max_lease_id = stats.max_lease_id;
            }
            Err(e) if !force => return Err(Failure::at(&cli.db, e)),
            Err(_) => {}
        }
        target.held = Some(inspector);
        Ok(target)
    }

    /// The temporary file the new database is written to: beside the target, so that the rename
    /// stays on one file system.
    fn temp_path(&self) -> CliResult<PathBuf> {
        let name = self.path.file_name().ok_or_else(|| {
            Failure::new(ERROR, format!("{} is not a file name", self.path.display()))
        })?;
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".restore-{}.tmp", std::process::id()));
        Ok(self.path.with_file_name(temp))
    }

    /// Renames the complete, fsynced `temp` over the target, and fsyncs the folder so that the
    /// rename itself survives a crash.
    fn replace_with(self, temp: &Path) -> CliResult {
        let fail = |what: &str, e: std::io::Error| {
            Failure::new(ERROR, format!("cannot {what} {}: {e}", self.path.display()))
        };
        if let Some(permissions) = &self.permissions {
            std::fs::set_permissions(temp, permissions.clone())
                .map_err(|e| fail("give the old file's permissions to the new", e))?;
        }
        std::fs::File::open(temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("sync the new", e))?;
        std::fs::rename(temp, &self.path).map_err(|e| fail("replace", e))?;
        // The old file's lock goes with it.
        drop(self.held);
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("sync the folder of", e))
    }
}

/// Writes `dump` into a new database in the empty file `temp`, and returns its revision. The
/// database's lease-id high-water mark is raised to `max_lease_id`.
fn write_new(cli: &Cli, temp: &Path, dump: &Dump, max_lease_id: u64) -> CliResult<u64> {
    let lessor = Lessor::builder()
        .restart_policy(cli.restart_policy.into())
        .durability(Durability::Batched {
            max_delay: RESTORE_MAX_DELAY,
        })
        .open(temp)
        .map_err(|e| Failure::at(temp, e))?;
    let loaded = load(&lessor, dump)
        .and_then(|()| keep_high_water_mark(&lessor, dump, max_lease_id))
        .and_then(|()| {
            lessor.sync()?;
            Ok(lessor.revision()?)
        });
    lessor.close().map_err(|e| Failure::at(temp, e))?;
    Ok(loaded?.get())
}

/// Raises the new database's lease-id high-water mark to `max_lease_id` if no lease of the
/// dump did: a lease granted there and revoked at once, which deletes no key and leaves the
/// revision as it is.
fn keep_high_water_mark(lessor: &Lessor, dump: &Dump, max_lease_id: u64) -> CliResult {
    let Some(id) = LeaseId::new(max_lease_id) else {
        return Ok(());
    };
    if dump.leases.keys().next_back().is_some_and(|&top| top >= id) {
        return Ok(());
    }
    lessor.grant_with_id(id, Duration::from_secs(60))?;
    lessor.revoke(id)?;
    Ok(())
}

/// Reads and checks a whole dump: nothing is written unless all of it is good.
fn parse(input: impl BufRead, name: &str) -> CliResult<Dump> {
    let bad = |line: usize, why: String| Failure::new(ERROR, format!("{name}: line {line}: {why}"));
    let mut dump = Dump::default();
    let mut header = None;
    let mut seen_keys = BTreeSet::new();
    let mut key_leases = Vec::new();
    let mut lines = BoundedLines::new(input, MAX_LINE_BYTES);
    let mut n = 0;
    while let Some(line) = lines.next_line() {
        n += 1;
        let text = match line {
            Ok(text) => text,
            Err(LineError::TooLong) => {
                return Err(bad(
                    n,
                    format!(
                        "longer than the limit of {} MiB: not a line of a lessor dump",
                        MAX_LINE_BYTES >> 20
                    ),
                ));
            }
            Err(LineError::NotUtf8) => return Err(bad(n, "not UTF-8 text".into())),
            Err(LineError::Io(e)) => {
                return Err(Failure::new(ERROR, format!("cannot read {name}: {e}")));
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text)
            .map_err(|e| bad(n, format!("not a line of a lessor dump: {e}")))?;
        match line {
            Line::Header {
                format,
                leases,
                keys,
                ..
            } => {
                if header.is_some() || n != 1 {
                    return Err(bad(
                        n,
                        "the header must be the first line, and only it".into(),
                    ));
                }
                if format != DUMP_FORMAT {
                    return Err(bad(
                        n,
                        format!(
                            "dump format {format} is not supported (this build reads {DUMP_FORMAT})"
                        ),
                    ));
                }
                header = Some((leases, keys));
            }
            _ if header.is_none() => {
                return Err(bad(n, "the first line must be the dump's header".into()));
            }
            Line::Lease { id, ttl_ms, .. } => {
                let id =
                    LeaseId::new(id).ok_or_else(|| bad(n, format!("invalid lease id {id}")))?;
                if dump
                    .leases
                    .insert(id, Duration::from_millis(ttl_ms))
                    .is_some()
                {
                    return Err(bad(n, format!("lease {id} appears twice")));
                }
            }
            Line::Key(kv) => {
                let key = kv.key.bytes().map_err(|e| bad(n, e))?;
                let value = kv.value.bytes().map_err(|e| bad(n, e))?;
                let lease = match kv.lease {
                    None => None,
                    Some(id) => Some(
                        LeaseId::new(id).ok_or_else(|| bad(n, format!("invalid lease id {id}")))?,
                    ),
                };
                if !seen_keys.insert(key.clone()) {
                    return Err(bad(n, "the key appears twice".into()));
                }
                if let Some(id) = lease {
                    key_leases.push((n, id));
                }
                dump.keys.entry(lease).or_default().push((key, value));
                dump.key_count += 1;
            }
        }
    }
    let Some((leases, keys)) = header else {
        return Err(Failure::new(
            ERROR,
            format!("{name}: empty: not a lessor dump"),
        ));
    };
    for (n, id) in key_leases {
        if !dump.leases.contains_key(&id) {
            return Err(bad(n, format!("the key's lease {id} is not in the dump")));
        }
    }
    if (dump.leases.len() as u64, dump.key_count as u64) != (leases, keys) {
        return Err(Failure::new(
            ERROR,
            format!(
                "{name}: incomplete: the header announces {leases} leases and {keys} keys, the \
                 file holds {} and {}",
                dump.leases.len(),
                dump.key_count
            ),
        ));
    }
    Ok(dump)
}

/// Writes `dump` into the new database `lessor`: each lease, and its keys in the same or a
/// following transaction, soon enough that its TTL has not run out; then the keys without a
/// lease.
fn load(lessor: &Lessor, dump: &Dump) -> CliResult {
    let mut batch = Batch::new(lessor);
    for (&id, &ttl) in &dump.leases {
        let granted = Instant::now();
        lessor.grant_with_id(id, ttl)?;
        for (key, value) in dump.keys.get(&Some(id)).into_iter().flatten() {
            batch.push(Op::put_with_lease(key, value, id))?;
        }
        if ttl < SHORT_TTL {
            batch.flush()?;
        } else {
            if let Some(due) = granted.checked_add(ttl / 4) {
                batch.due_by(due);
            }
            batch.flush_if_due()?;
        }
    }
    for (key, value) in dump.keys.get(&None).into_iter().flatten() {
        batch.push(Op::put(key, value))?;
    }
    batch.flush()
}

/// Leases with a shorter TTL get their keys written right after their grant.
const SHORT_TTL: Duration = Duration::from_secs(1);

/// Writes waiting to be committed together, up to [`KEYS_PER_TXN`] a transaction.
struct Batch<'a> {
    lessor: &'a Lessor,
    ops: Vec<Op>,
    /// When the ops must be committed at the latest: a quarter of the TTL of the shortest lease
    /// they attach keys to, after its grant. `None` when nothing waits.
    due: Option<Instant>,
}

impl<'a> Batch<'a> {
    fn new(lessor: &'a Lessor) -> Batch<'a> {
        Batch {
            lessor,
            ops: Vec::new(),
            due: None,
        }
    }

    fn push(&mut self, op: Op) -> CliResult {
        self.ops.push(op);
        if self.ops.len() >= KEYS_PER_TXN {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes the waiting ops due by `at`, if any wait.
    fn due_by(&mut self, at: Instant) {
        if !self.ops.is_empty() {
            self.due = Some(self.due.map_or(at, |due| due.min(at)));
        }
    }

    fn flush_if_due(&mut self) -> CliResult {
        match self.due {
            Some(due) if Instant::now() >= due => self.flush(),
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> CliResult {
        self.due = None;
        if self.ops.is_empty() {
            return Ok(());
        }
        let mut txn = Txn::new();
        for op in self.ops.drain(..) {
            txn = txn.then(op);
        }
        self.lessor.txn(txn)?;
        Ok(())
    }
}

/// Why a line could not be read.
#[derive(Debug)]
enum LineError {
    /// Longer than the limit; the rest of the line was not read.
    TooLong,
    NotUtf8,
    Io(std::io::Error),
}

/// Lines of at most `limit` bytes (without the newline; a `\r` before it is kept, as JSON
/// whitespace), read without ever holding more than `limit + 1` bytes of one.
struct BoundedLines<R> {
    input: R,
    limit: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    fn new(input: R, limit: usize) -> BoundedLines<R> {
        BoundedLines {
            input,
            limit,
            buf: Vec::new(),
        }
    }

    /// The next line; `None` at the end of the input.
    fn next_line(&mut self) -> Option<Result<String, LineError>> {
        self.buf.clear();
        let cap = u64::try_from(self.limit).map_or(u64::MAX, |l| l.saturating_add(1));
        match (&mut self.input).take(cap).read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(LineError::Io(e))),
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > self.limit {
            return Some(Err(LineError::TooLong));
        }
        Some(String::from_utf8(std::mem::take(&mut self.buf)).map_err(|_| LineError::NotUtf8))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<String> {
        let mut lines = BoundedLines::new(input, limit);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line() {
            out.push(match line {
                Ok(text) => text,
                Err(e) => format!("{e:?}"),
            });
        }
        out
    }

    #[test]
    fn lines_are_bounded() {
        assert_eq!(lines(b"ab\ncd", 2), ["ab", "cd"]);
        assert_eq!(lines(b"ab\n\nc\n", 2), ["ab", "", "c"]);
        // A line one byte over is refused; the reader is not meant to go on after that.
        assert_eq!(lines(b"abc\n", 2)[0], "TooLong");
        assert_eq!(lines(b"abc", 2)[0], "TooLong");
        assert_eq!(lines(b"\xff\n", 2), ["NotUtf8"]);
        assert!(lines(b"", 2).is_empty());
    }
}
