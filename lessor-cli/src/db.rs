//! Opening and closing the database file a command works on: read commands open it read-only
//! (an [`Inspector`]), write commands as a service does (a [`Lessor`]).

use std::path::Path;

use lessor::{Builder, Error, Inspector, Lessor};

use crate::args::Cli;
use crate::failure::{CliResult, Failure, NOT_FOUND};

/// Whether a command may create the database file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    /// The file must exist: a typo in `--db` must not leave an empty database behind.
    Existing,
    /// A missing file is created (grant, put, restore).
    Create,
}

/// Opens `--db` with the default settings but the restart policy of `--restart-policy`.
pub fn open(cli: &Cli, access: Access) -> CliResult<Lessor> {
    open_with(cli, access, |b| b)
}

/// As [`open`], with other settings on top (`restore` batches its fsyncs).
pub fn open_with(
    cli: &Cli,
    access: Access,
    configure: impl FnOnce(Builder) -> Builder,
) -> CliResult<Lessor> {
    let path = &cli.db;
    if access == Access::Existing {
        check_exists(path)?;
    }
    let builder = Lessor::builder().restart_policy(cli.restart_policy.into());
    configure(builder)
        .open(path)
        .map_err(|e| Failure::at(path, e))
}

/// Opens the existing `--db` read-only: nothing is written to the file, and leases have what
/// `--restart-policy` would give them.
pub fn open_read(cli: &Cli) -> CliResult<Inspector> {
    let path = &cli.db;
    check_exists(path)?;
    let inspector =
        Inspector::open(path, cli.restart_policy.into()).map_err(|e| read_failure(path, e))?;
    if inspector.repaired_in_memory() {
        eprintln!(
            "note: {} cannot be read without a repair (a crash left it so, or it is damaged); it is read \
             through a copy repaired in memory, and left as it is",
            path.display()
        );
    }
    Ok(inspector)
}

/// The failure of opening `path` read-only.
pub fn read_failure(path: &Path, err: Error) -> Failure {
    match err {
        Error::Io { source, .. } => Failure::new(
            crate::failure::ERROR,
            format!("cannot read {}: {source}", path.display()),
        ),
        other => Failure::at(path, other),
    }
}

/// Fails with [`NOT_FOUND`] unless `path` exists.
pub fn check_exists(path: &Path) -> CliResult {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::new(
            NOT_FOUND,
            format!(
                "database file {} not found (give it with --db or LESSOR_DB)",
                path.display()
            ),
        )),
        Err(e) => Err(Failure::new(
            crate::failure::ERROR,
            format!("cannot open {}: {e}", path.display()),
        )),
    }
}

/// Closes the database, reporting a failure to write its last changes.
pub fn close(cli: &Cli, lessor: Lessor) -> CliResult {
    lessor.close().map_err(|e| Failure::at(&cli.db, e))
}
