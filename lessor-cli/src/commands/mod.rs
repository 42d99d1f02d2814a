//! One function per subcommand, grouped by what they work on. Each opens the database, does
//! its work, prints to `out`, and closes the database.

mod backup;
mod keys;
mod leases;
mod serve;
mod stats;
mod verify;

use std::io::Write;

use crate::args::{Cli, Command};
use crate::failure::CliResult;

/// Runs the command of `cli`, printing to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> CliResult {
    match &cli.command {
        Command::Leases => leases::leases(cli, out),
        Command::Ttl { id, keys } => leases::ttl(cli, out, *id, *keys),
        Command::Grant { ttl, id } => leases::grant(cli, out, *ttl, *id),
        Command::Revoke { id } => leases::revoke(cli, out, *id),
        Command::KeepAlive { id, run_for } => leases::keep_alive(cli, out, *id, *run_for),
        Command::Put { key, value, lease } => keys::put(
            cli,
            out,
            key.as_encoded_bytes(),
            value.as_encoded_bytes(),
            *lease,
        ),
        Command::Get { key, value_only } => {
            keys::get(cli, out, key.as_encoded_bytes(), *value_only)
        }
        Command::Range { prefix } => keys::range(cli, out, prefix.as_encoded_bytes()),
        Command::Del { key } => keys::del(cli, out, key.as_encoded_bytes()),
        Command::Watch {
            prefix,
            run_for,
            count,
        } => keys::watch(cli, out, prefix.as_encoded_bytes(), *run_for, *count),
        Command::Stats => stats::stats(cli, out),
        Command::Verify => verify::verify(cli, out),
        Command::Dump => backup::dump(cli, out),
        Command::Restore { file, force } => backup::restore(cli, out, file, *force),
        Command::Serve(args) => serve::serve(cli, out, args),
    }
}
