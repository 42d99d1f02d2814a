//! Lease commands: `leases`, `ttl`, `grant`, `revoke`, `keep-alive`.

use std::io::Write;
use std::time::Duration;

use lessor::{EndReason, KeepAliveOptions, LeaseId, LeaseInfo, Lessor};
use serde::Serialize;

use crate::args::Cli;
use crate::db::{self, Access};
use crate::duration::{self, millis};
use crate::failure::{CliResult, ERROR, Failure, NOT_FOUND};
use crate::output::{self, JsonKey, Table, write_fields, write_json};

#[derive(Serialize)]
struct JsonLease {
    id: u64,
    ttl_ms: u64,
    remaining_ms: u64,
    key_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<JsonKey>>,
}

impl JsonLease {
    fn new(info: &LeaseInfo, with_keys: bool) -> JsonLease {
        JsonLease {
            id: info.id.get(),
            ttl_ms: millis(info.ttl),
            remaining_ms: millis(info.remaining),
            key_count: info.keys.len(),
            keys: with_keys.then(|| info.keys.iter().map(|k| JsonKey::new(k)).collect()),
        }
    }
}

pub fn leases(cli: &Cli, out: &mut dyn Write) -> CliResult {
    let infos = db::open_read(cli)?
        .leases()
        .map_err(|e| Failure::at(&cli.db, e))?;
    if cli.json {
        let all: Vec<_> = infos.iter().map(|i| JsonLease::new(i, false)).collect();
        write_json(out, &all)?;
    } else {
        let mut table = Table::new(&["ID", "TTL", "REMAINING", "KEYS"]);
        for info in &infos {
            table.row(vec![
                info.id.to_string(),
                duration::format(info.ttl),
                duration::format(info.remaining),
                info.keys.len().to_string(),
            ]);
        }
        table.write(out)?;
    }
    Ok(())
}

pub fn ttl(cli: &Cli, out: &mut dyn Write, id: LeaseId, with_keys: bool) -> CliResult {
    let info = db::open_read(cli)?
        .time_to_live(id)
        .map_err(|e| Failure::at(&cli.db, e))?;
    if cli.json {
        write_json(out, &JsonLease::new(&info, with_keys))?;
        return Ok(());
    }
    write_fields(
        out,
        &[
            ("lease", info.id.to_string()),
            ("ttl", duration::format(info.ttl)),
            ("remaining", duration::format(info.remaining)),
            ("keys", info.keys.len().to_string()),
        ],
    )?;
    if with_keys {
        for key in &info.keys {
            writeln!(out, "  {}", output::show(key))?;
        }
    }
    Ok(())
}

pub fn grant(cli: &Cli, out: &mut dyn Write, ttl: Duration, id: Option<LeaseId>) -> CliResult {
    let lessor = db::open(cli, Access::Create)?;
    let lease = match id {
        Some(id) => lessor.grant_with_id(id, ttl),
        None => lessor.grant(ttl),
    };
    db::close(cli, lessor)?;
    let lease = lease?;
    if cli.json {
        #[derive(Serialize)]
        struct Granted {
            id: u64,
            ttl_ms: u64,
            revision: u64,
        }
        write_json(
            out,
            &Granted {
                id: lease.id.get(),
                ttl_ms: millis(lease.ttl),
                revision: lease.revision.get(),
            },
        )?;
    } else {
        writeln!(
            out,
            "lease {} granted with TTL {}",
            lease.id,
            duration::format(lease.ttl)
        )?;
    }
    Ok(())
}

pub fn revoke(cli: &Cli, out: &mut dyn Write, id: LeaseId) -> CliResult {
    let lessor = db::open(cli, Access::Existing)?;
    // Nothing else has the file open, so the keys read here are the ones the revocation deletes.
    let revoked = lessor
        .time_to_live_with_keys(id)
        .and_then(|info| Ok((info.keys.len(), lessor.revoke(id)?)));
    db::close(cli, lessor)?;
    let (keys, revision) = revoked?;
    if cli.json {
        #[derive(Serialize)]
        struct Revoked {
            id: u64,
            keys_deleted: usize,
            revision: u64,
        }
        write_json(
            out,
            &Revoked {
                id: id.get(),
                keys_deleted: keys,
                revision: revision.get(),
            },
        )?;
    } else {
        let keys = output::count(keys, "key");
        writeln!(
            out,
            "lease {id} revoked, {keys} deleted (revision {revision})"
        )?;
    }
    Ok(())
}

pub fn keep_alive(
    cli: &Cli,
    out: &mut dyn Write,
    id: LeaseId,
    run_for: Option<Duration>,
) -> CliResult {
    let lessor = db::open(cli, Access::Existing)?;
    let result = renew_until_done(cli, out, &lessor, id, run_for);
    db::close(cli, lessor)?;
    result
}

fn renew_until_done(
    cli: &Cli,
    out: &mut dyn Write,
    lessor: &Lessor,
    id: LeaseId,
    run_for: Option<Duration>,
) -> CliResult {
    let mut opts = KeepAliveOptions::new();
    if let Some(limit) = run_for {
        opts = opts.run_for(limit);
    }
    let keep_alive = lessor.keep_alive_with(id, opts)?;
    // The channel holds the latest response; it disconnects when the keep-alive ends.
    for response in keep_alive.responses() {
        if cli.json {
            #[derive(Serialize)]
            struct Renewed {
                id: u64,
                ttl_ms: u64,
            }
            write_json(
                out,
                &Renewed {
                    id: response.id.get(),
                    ttl_ms: millis(response.ttl),
                },
            )?;
        } else {
            writeln!(
                out,
                "lease {} kept alive, TTL {}",
                response.id,
                duration::format(response.ttl)
            )?;
        }
        out.flush()?;
    }
    match keep_alive.ended() {
        Some(EndReason::Finished) | None => Ok(()),
        Some(reason @ (EndReason::Revoked | EndReason::Expired)) => Err(Failure::new(
            NOT_FOUND,
            format!("keep-alive of lease {id} ended: {reason}"),
        )),
        Some(reason) => Err(Failure::new(
            ERROR,
            format!("keep-alive of lease {id} ended: {reason}"),
        )),
    }
}
