//! `verify`: the full consistency check.

use std::io::Write;

use lessor::Error;
use serde::Serialize;

use crate::args::Cli;
use crate::db;
use crate::failure::{CORRUPTED, CliResult, Failure};
use crate::output::{count, write_json};

#[derive(Serialize)]
struct Report {
    ok: bool,
    problems: Vec<String>,
}

pub fn verify(cli: &Cli, out: &mut dyn Write) -> CliResult {
    db::check_exists(&cli.db)?;
    let problems = problems(cli)?;
    if cli.json {
        write_json(
            out,
            &Report {
                ok: problems.is_empty(),
                problems: problems.clone(),
            },
        )?;
    } else if problems.is_empty() {
        writeln!(out, "ok")?;
    } else {
        for problem in &problems {
            writeln!(out, "{problem}")?;
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            CORRUPTED,
            format!(
                "{}: {} found",
                cli.db.display(),
                count(problems.len(), "problem")
            ),
        ))
    }
}

/// The problems found, one a string; a file that does not open as a lessor database is one
/// problem. Other failures (locked, I/O) are errors, not findings. Checks the file only,
/// opened read-only.
fn problems(cli: &Cli) -> CliResult<Vec<String>> {
    let inspector = match db::open_read(cli) {
        Ok(inspector) => inspector,
        Err(failure) if failure.code == CORRUPTED => return Ok(vec![failure.message]),
        Err(failure) => return Err(failure),
    };
    match inspector.verify_report() {
        Ok(problems) => Ok(problems.iter().map(ToString::to_string).collect()),
        // A record the report itself cannot read is one more finding.
        Err(Error::Corrupted(problem)) => Ok(vec![problem]),
        Err(e) => Err(Failure::at(&cli.db, e)),
    }
}
