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
    leases: usize,
    keys: usize,
    /// Health of the ticker of this command's own session.
    ticker_running: bool,
    ticker_failures: u64,
    poisoned: bool,
}

// Built from the public calls that exist today. `leases` and `keys` cost a scan (the keys one
// reads every value); a library call returning the counts kept in memory would replace the
// body of this function, and nothing else.
fn collect(lessor: &Lessor, path: &Path) -> CliResult<Stats> {
    let health = lessor.health();
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| Failure::new(crate::failure::ERROR, format!("{}: {e}", path.display())))?
        .len();
    Ok(Stats {
        file: path.display().to_string(),
        file_bytes,
        revision: lessor.revision()?.get(),
        leases: lessor.leases().len(),
        keys: lessor.range("")?.len(),
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
            ("health", health),
        ],
    )?;
    Ok(())
}
