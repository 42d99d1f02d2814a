//! `stats`: numbers about a database.

use std::io::Write;

use serde::Serialize;

use crate::args::Cli;
use crate::db;
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
    /// Leases with time left under `--restart-policy`.
    leases: u64,
    /// Keys in the file (those of expired leases included).
    keys: u64,
    /// Keys attached to a lease.
    attached_keys: u64,
    /// Leases with nothing left under `--restart-policy`: a service opening the file under it
    /// would revoke them, with their keys, at once.
    expired: u64,
    /// The highest lease id ever issued; auto-assigned ids continue after it.
    max_lease_id: u64,
}

pub fn stats(cli: &Cli, out: &mut dyn Write) -> CliResult {
    let s = db::open_read(cli)?
        .stats()
        .map_err(|e| Failure::at(&cli.db, e))?;
    let stats = Stats {
        file: cli.db.display().to_string(),
        file_bytes: s.file_bytes,
        revision: s.revision.get(),
        leases: s.leases,
        keys: s.keys,
        attached_keys: s.attached_keys,
        expired: s.expired,
        max_lease_id: s.max_lease_id,
    };
    if cli.json {
        write_json(out, &stats)?;
        return Ok(());
    }
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
            ("expired leases", stats.expired.to_string()),
            ("max lease id", stats.max_lease_id.to_string()),
        ],
    )?;
    Ok(())
}
