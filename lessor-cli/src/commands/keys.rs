//! Key commands: `put`, `get`, `range`, `del`, `watch`.

use std::io::Write;
use std::time::{Duration, Instant};

use lessor::crossbeam_channel::RecvTimeoutError;
use lessor::{DeleteCause, Error, KeyValue, LeaseId, WatchEvent};
use serde::Serialize;

use crate::args::Cli;
use crate::db::{self, Access};
use crate::failure::{CliResult, ERROR, Failure};
use crate::output::{self, JsonKey, JsonKv, Table, write_fields, write_json};

/// Values longer than this many characters are cut in `range`'s table.
const TABLE_VALUE_WIDTH: usize = 60;

pub fn put(
    cli: &Cli,
    out: &mut dyn Write,
    key: &[u8],
    value: &[u8],
    lease: Option<LeaseId>,
) -> CliResult {
    let lessor = db::open(cli, Access::Create)?;
    let revision = match lease {
        Some(id) => lessor.put_with_lease(key, value, id),
        None => lessor.put(key, value),
    };
    db::close(cli, lessor)?;
    let revision = revision?;
    if cli.json {
        write_json(
            out,
            &Revision {
                revision: revision.get(),
            },
        )?;
    } else {
        writeln!(out, "OK, revision {revision}")?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Revision {
    revision: u64,
}

pub fn get(cli: &Cli, out: &mut dyn Write, key: &[u8], value_only: bool) -> CliResult {
    let kv = db::open_read(cli)?
        .get(key)
        .map_err(|e| Failure::at(&cli.db, e))?
        .ok_or_else(|| Failure::from(Error::KeyNotFound(key.to_vec())))?;
    if value_only {
        out.write_all(&kv.value)?;
    } else if cli.json {
        write_json(out, &JsonKv::new(&kv))?;
    } else {
        write_fields(
            out,
            &[
                ("key", output::show(&kv.key)),
                ("value", output::show(&kv.value)),
                ("lease", show_lease(kv.lease)),
                ("create_revision", kv.create_revision.to_string()),
                ("mod_revision", kv.mod_revision.to_string()),
                ("version", kv.version.to_string()),
            ],
        )?;
    }
    Ok(())
}

fn show_lease(lease: Option<LeaseId>) -> String {
    lease.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

pub fn range(cli: &Cli, out: &mut dyn Write, prefix: &[u8]) -> CliResult {
    let kvs = db::open_read(cli)?
        .range(prefix)
        .map_err(|e| Failure::at(&cli.db, e))?;
    if cli.json {
        let all: Vec<_> = kvs.iter().map(JsonKv::new).collect();
        write_json(out, &all)?;
        return Ok(());
    }
    let mut table = Table::new(&["KEY", "LEASE", "VERSION", "MOD_REVISION", "VALUE"]);
    for kv in &kvs {
        table.row(row(kv));
    }
    table.write(out)?;
    Ok(())
}

/// A row of `range`'s table; the value last, cut if long, so that the columns stay readable.
fn row(kv: &KeyValue) -> Vec<String> {
    let mut value = output::show(&kv.value);
    if value.chars().count() > TABLE_VALUE_WIDTH {
        value = value
            .chars()
            .take(TABLE_VALUE_WIDTH - 3)
            .collect::<String>()
            + "...";
    }
    vec![
        output::show(&kv.key),
        show_lease(kv.lease),
        kv.version.to_string(),
        kv.mod_revision.to_string(),
        value,
    ]
}

pub fn del(cli: &Cli, out: &mut dyn Write, key: &[u8]) -> CliResult {
    let lessor = db::open(cli, Access::Existing)?;
    let deleted = lessor
        .delete(key)
        .and_then(|existed| Ok((existed, lessor.revision()?)));
    db::close(cli, lessor)?;
    let (existed, revision) = deleted?;
    if !existed {
        return Err(Error::KeyNotFound(key.to_vec()).into());
    }
    if cli.json {
        write_json(
            out,
            &Revision {
                revision: revision.get(),
            },
        )?;
    } else {
        writeln!(out, "deleted {} (revision {revision})", output::show(key))?;
    }
    Ok(())
}

pub fn watch(
    cli: &Cli,
    out: &mut dyn Write,
    prefix: &[u8],
    run_for: Option<Duration>,
    count: Option<u64>,
) -> CliResult {
    let lessor = db::open(cli, Access::Existing)?;
    let result = watch_open(cli, out, &lessor, prefix, run_for, count);
    db::close(cli, lessor)?;
    result
}

fn watch_open(
    cli: &Cli,
    out: &mut dyn Write,
    lessor: &lessor::Lessor,
    prefix: &[u8],
    run_for: Option<Duration>,
    count: Option<u64>,
) -> CliResult {
    let watch = lessor.watch(prefix)?;
    // A time too far to represent is no limit.
    let deadline = run_for.and_then(|d| Instant::now().checked_add(d));
    let mut seen = 0;
    while count.is_none_or(|n| seen < n) {
        let received = match deadline {
            Some(deadline) => {
                watch.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            None => watch.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let event = match received {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                let why = watch
                    .ended()
                    .map_or_else(|| "it ended".to_owned(), |end| format!("{end:?}"));
                return Err(Failure::new(ERROR, format!("the watch stopped: {why}")));
            }
        };
        if cli.json {
            write_json(out, &JsonEvent::new(&event))?;
        } else {
            writeln!(out, "{}", show_event(&event))?;
        }
        out.flush()?;
        seen += 1;
    }
    Ok(())
}

/// A watch event for people: `PUT /a = 1 (revision 5, lease 7)`,
/// `DELETE /a (revision 6, lease 7 expired)`.
fn show_event(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Put(kv) => {
            let lease = kv
                .lease
                .map(|id| format!(", lease {id}"))
                .unwrap_or_default();
            format!(
                "PUT {} = {} (revision {}{lease})",
                output::show(&kv.key),
                output::show(&kv.value),
                kv.mod_revision
            )
        }
        WatchEvent::Delete {
            key,
            revision,
            cause,
        } => {
            let why = match cause {
                DeleteCause::LeaseExpired(id) => format!("lease {id} expired"),
                DeleteCause::LeaseRevoked(id) => format!("lease {id} revoked"),
                DeleteCause::Deleted => "deleted".to_owned(),
                other => format!("{other:?}"),
            };
            format!("DELETE {} (revision {revision}, {why})", output::show(key))
        }
        other => format!("{other:?}"),
    }
}

/// A watch event in JSON: `{"type":"put", ...kv}` or
/// `{"type":"delete","key":..,"revision":..,"cause":"expired","lease":7}`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum JsonEvent {
    Put(JsonKv),
    Delete {
        #[serde(flatten)]
        key: JsonKey,
        revision: u64,
        /// `deleted`, `revoked` or `expired` (`other` for a cause this build does not know).
        cause: &'static str,
        /// The lease revoked or expired.
        lease: Option<u64>,
    },
    /// An event this build does not know, shown with its `Debug` form.
    Other {
        debug: String,
    },
}

impl JsonEvent {
    fn new(event: &WatchEvent) -> JsonEvent {
        match event {
            WatchEvent::Put(kv) => JsonEvent::Put(JsonKv::new(kv)),
            WatchEvent::Delete {
                key,
                revision,
                cause,
            } => {
                let (cause, lease) = match cause {
                    DeleteCause::LeaseExpired(id) => ("expired", Some(id.get())),
                    DeleteCause::LeaseRevoked(id) => ("revoked", Some(id.get())),
                    DeleteCause::Deleted => ("deleted", None),
                    _ => ("other", None),
                };
                JsonEvent::Delete {
                    key: JsonKey::new(key),
                    revision: revision.get(),
                    cause,
                    lease,
                }
            }
            other => JsonEvent::Other {
                debug: format!("{other:?}"),
            },
        }
    }
}
