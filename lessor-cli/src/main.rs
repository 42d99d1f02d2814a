//! `lessor`: an etcdctl for a lessor database file. See `lessor --help`.
//!
//! Layout: `args` (the command line and its help), `commands` (one function per subcommand),
//! `output` (tables, bytes as text, JSON encodings), `duration` (parsing and printing
//! durations), `db` (opening the file), `failure` (errors and exit codes).

mod args;
mod commands;
mod db;
mod duration;
mod failure;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit here with clap's code, 2; --help and --version with 0.
    let cli = args::Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = commands::run(&cli, &mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("error: {failure}");
            }
            ExitCode::from(failure.code)
        }
    }
}
