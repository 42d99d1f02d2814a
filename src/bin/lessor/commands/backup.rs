//! `dump` and `restore`: a database as JSON lines, and back.
//!
//! The dump format (version [`DUMP_FORMAT`]) is one JSON object a line, each with a `type`:
//! a `header` first (format, revision, and how many leases and keys follow, so that a cut
//! file is noticed), then one `lease` line per lease by id, then one `key` line per key in key
//! order (keys and values as text, or hex under `key_hex`/`value_hex`; see `output.rs`).
//! Readers ignore fields they do not know.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use lessor::{Durability, Error, LeaseId, Lessor, Op};
use serde::{Deserialize, Serialize};

use crate::args::Cli;
use crate::commands::leases::lease_infos;
use crate::db::{self, Access};
use crate::duration::millis;
use crate::failure::{CliResult, ERROR, Failure, NOT_FOUND};
use crate::output::{JsonKv, count, write_json};

/// The version of the dump format this build writes and reads.
const DUMP_FORMAT: u64 = 1;

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
    let lessor = db::open(cli, Access::Existing)?;
    let read = lease_infos(&lessor).and_then(|infos| Ok((infos, lessor.range_with_revision("")?)));
    db::close(cli, lessor)?;
    let (infos, snapshot) = read?;
    // The leases were read first: a key whose lease is not among them belongs to a lease that
    // expired in between, and goes with it.
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
                ttl_ms: millis(info.granted_ttl),
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
    let lessor = db::open_with(cli, Access::Create, |b| {
        b.durability(Durability::Batched {
            max_delay: RESTORE_MAX_DELAY,
        })
    })?;
    let loaded = load(cli, &lessor, &dump, force).and_then(|()| {
        lessor.sync()?;
        Ok(lessor.revision()?)
    });
    db::close(cli, lessor)?;
    let revision = loaded?.get();
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

/// Reads and checks a whole dump: nothing is written unless all of it is good.
fn parse(input: impl BufRead, name: &str) -> CliResult<Dump> {
    let bad = |line: usize, why: String| Failure::new(ERROR, format!("{name}: line {line}: {why}"));
    let mut dump = Dump::default();
    let mut header = None;
    let mut seen_keys = BTreeSet::new();
    let mut key_leases = Vec::new();
    for (index, text) in input.lines().enumerate() {
        let n = index + 1;
        let text = text.map_err(|e| Failure::new(ERROR, format!("cannot read {name}: {e}")))?;
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

/// Writes `dump` into `lessor`: each lease, and its keys in the same or a following
/// transaction, soon enough that its TTL has not run out; then the keys without a lease.
fn load(cli: &Cli, lessor: &Lessor, dump: &Dump, force: bool) -> CliResult {
    let leases = lessor.leases();
    let keys = lessor.range("")?;
    let mut batch = Batch::new(lessor);
    if !leases.is_empty() || !keys.is_empty() {
        if !force {
            return Err(Failure::new(
                ERROR,
                format!(
                    "{} already holds {} and {}: restore into an empty database, or use \
                     --force to delete them first",
                    cli.db.display(),
                    count(leases.len(), "lease"),
                    count(keys.len(), "key")
                ),
            ));
        }
        for id in leases {
            match lessor.revoke(id) {
                Ok(_) | Err(Error::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for kv in lessor.range("")? {
            batch.push(Op::delete(&kv.key))?;
        }
        batch.flush()?;
    }
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
        let mut txn = self.lessor.txn();
        for op in self.ops.drain(..) {
            txn = txn.then(op);
        }
        txn.commit()?;
        Ok(())
    }
}
