//! Exit codes, and the error a command ends with.

use std::fmt;
use std::path::Path;

use lessor::Error;

/// The command did what was asked.
pub const OK: u8 = 0;
/// Any other error: bad input to the library (a TTL above the maximum, an empty key), I/O, a
/// database in use by a newer format, a non-empty database for `restore`.
pub const ERROR: u8 = 1;
/// The command line is wrong (clap's own code: unknown command or option, bad value). Clap
/// exits with it itself; named here for the documentation and the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub const USAGE: u8 = 2;
/// What was named does not exist: the database file, a lease, a key.
pub const NOT_FOUND: u8 = 3;
/// The database file is locked: a running service (or another `lessor`) has it open.
pub const LOCKED: u8 = 4;
/// The database is corrupted or is not a lessor database (`verify` found problems, or opening
/// it failed on its contents).
pub const CORRUPTED: u8 = 5;

/// The "Exit codes" section of `--help`, also in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (invalid input, I/O, restore into a non-empty database, ...)
  2  usage error (unknown command or option, invalid value)
  3  not found: the database file, a lease or a key
  4  the database is locked by another process (a running service?)
  5  the database is corrupted or not a lessor database (verify found problems)";

/// Why a command failed: the exit code and what to tell the user on stderr.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    /// Printed after `error: `; empty for a failure already reported (on stdout, by `verify`).
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failure from a library error met while working on the database at `path`.
    pub fn at(path: &Path, err: Error) -> Failure {
        let shown = path.display();
        match err {
            Error::AlreadyOpen => Failure::new(
                LOCKED,
                format!("{shown}: database is locked by another process (a running service?)"),
            ),
            Error::NotLessorDatabase(why) => Failure::new(
                CORRUPTED,
                format!("{shown} is not a lessor database: {why}"),
            ),
            Error::Corrupted(why) => {
                Failure::new(CORRUPTED, format!("{shown}: database corrupted: {why}"))
            }
            other => Failure::from(other),
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Failure {
        let code = match &err {
            Error::LeaseNotFound(_) | Error::KeyNotFound(_) => NOT_FOUND,
            Error::AlreadyOpen => LOCKED,
            Error::Corrupted(_) | Error::NotLessorDatabase(_) => CORRUPTED,
            _ => ERROR,
        };
        Failure::new(code, err.to_string())
    }
}

impl From<std::io::Error> for Failure {
    /// An error writing the output. A reader that went away (`lessor range | head -1`) asked for
    /// no more: that ends the command quietly, with success.
    fn from(err: std::io::Error) -> Failure {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::new(OK, "")
        } else {
            Failure::new(ERROR, format!("cannot write the output: {err}"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type CliResult<T = ()> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use super::*;
    use crate::args::Cli;

    #[test]
    fn clap_exits_with_our_usage_code() {
        let err = Cli::try_parse_from(["lessor", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(USAGE));
        let err = Cli::try_parse_from(["lessor", "grant", "ten"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(USAGE));
    }

    #[test]
    fn library_errors_get_their_codes() {
        let id = lessor::LeaseId::new(7).unwrap();
        assert_eq!(Failure::from(Error::LeaseNotFound(id)).code, NOT_FOUND);
        assert_eq!(
            Failure::from(Error::KeyNotFound(b"/a".to_vec())).code,
            NOT_FOUND
        );
        let locked = Failure::at(Path::new("x.redb"), Error::AlreadyOpen);
        assert_eq!(locked.code, LOCKED);
        assert!(locked.message.contains("locked by another process"));
        assert_eq!(Failure::from(Error::Corrupted("x".into())).code, CORRUPTED);
        assert_eq!(Failure::from(Error::Closed).code, ERROR);
    }
}
