//! `stats`: numbers about a database.

use std::io::Write;
use std::path::Path;

use lessor::Lessor;
use serde::Serialize;

use crate::args::Cli;
use crate::db::{self, Access};
use crate::failure::{CliResult, Failure};
use crate::output::{self, write_fields, write_json};

/// What `stats` reports; also its JSON form.
#[derive(Serialize, Debug)]
struct Stats {
    /// The database file.
    file: String,
    /// Its size on disk, in bytes.
    file_bytes: u64,
    revision: u64,
    leases: u64,
    keys: u64,
    /// Keys attached to a lease.
    attached_keys: u64,
    /// Leases this command's own session revoked as expired (at open, or while it ran).
    expired_now: u64,
    /// Health of the ticker of this command's own session.
    ticker_running: bool,
    ticker_failures: u64,
    poisoned: bool,
}

/// The library's figures (`Lessor::stats`: counts kept in memory or in redb's table headers,
/// O(1)) and health, for this file.
fn collect(lessor: &Lessor, path: &Path) -> CliResult<Stats> {
    let health = lessor.health();
    let s = lessor.stats()?;
    let file_bytes = match s.file_size {
        Some(bytes) => bytes,
        None => std::fs::metadata(path)
            .map_err(|e| Failure::new(crate::failure::ERROR, format!("{}: {e}", path.display())))?
            .len(),
    };
    Ok(Stats {
        file: path.display().to_string(),
        file_bytes,
        revision: s.revision,
        leases: s.leases,
        keys: s.keys,
        attached_keys: s.attached_keys,
        expired_now: s.expiries,
        ticker_running: health.ticker_running,
        ticker_failures: health.ticker_failures,
        poisoned: health.poisoned,
    })
}

pub fn stats(cli: &Cli, out: &mut dyn Write) -> CliResult {
    let lessor = db::open(cli, Access::Existing)?;
    let stats = collect(&lessor, &cli.db);
    db::close(cli, lessor)?;
    let stats = stats?;
    if cli.json {
        write_json(out, &stats)?;
        return Ok(());
    }
    let health = if stats.poisoned {
        "poisoned: a write failed in storage".to_owned()
    } else if stats.ticker_failures > 0 {
        format!("{} expiry batches failed", stats.ticker_failures)
    } else if !stats.ticker_running {
        "the ticker is not running".to_owned()
    } else {
        "ok".to_owned()
    };
    write_fields(
        out,
        &[
            ("file", stats.file),
            (
                "size",
                format!(
                    "{} ({} bytes)",
                    output::size(stats.file_bytes),
                    stats.file_bytes
                ),
            ),
            ("revision", stats.revision.to_string()),
            ("leases", stats.leases.to_string()),
            ("keys", stats.keys.to_string()),
            ("attached keys", stats.attached_keys.to_string()),
            ("health", health),
        ],
    )?;
    Ok(())
}
