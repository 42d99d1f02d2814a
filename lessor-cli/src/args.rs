//! The command line: global options, subcommands, their help and examples.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lessor::{LeaseId, RestartPolicy};

use crate::duration;
use crate::failure::EXIT_CODES;

const ABOUT: &str = "Inspect and edit a lessor database file: leases, keys, backups.";

const LONG_ABOUT: &str = "\
Inspect and edit a lessor database file: leases, keys, backups.

lessor works on a database file that no process has open: a stopped service's file, or a copy or
backup of it. A running service holds a lock on its file; lessor then fails with exit code 4.

Read commands (leases, ttl, get, range, dump, verify, stats) open the file read-only and never
write to it: it stays byte for byte the same, and a read-only file in a read-only folder will
do. They show each lease with what the restart policy would give it if a service opened the
file now (by default its full TTL again), and leave out leases that would have nothing left,
with their keys. A file redb must repair to read (after some crashes) is repaired in a copy
in memory.

Write commands (grant, revoke, keep-alive, put, del, watch) open the database as a service does:
leases get what the restart policy gives them, and while the command runs its own ticker
revokes leases that expire. restore writes a new file and renames it over the old one.

serve opens it as a service, and serves it over etcd's v3 gRPC API until stopped: etcdctl and
etcd's clients then work on it, while it runs.

Read commands fail if the file does not exist; grant, put, restore and serve create it.";

/// The `--help` footer of the top-level command.
const FOOTER: &str = "\
Examples:
  lessor --db /var/lib/app/leases.redb leases
  lessor grant 30s
  lessor put /cron/lock/job1 10001 --lease 7
  lessor --json range /services/
  lessor dump > backup.jsonl && lessor --db new.redb restore backup.jsonl
  lessor serve --listen 127.0.0.1:2379

The database is --db, else $LESSOR_DB, else ./lessor.redb.

";

#[derive(Parser, Debug)]
#[command(
    name = "lessor",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = format!("{FOOTER}{EXIT_CODES}"),
    propagate_version = true
)]
pub struct Cli {
    /// The database file.
    #[arg(
        long,
        global = true,
        env = "LESSOR_DB",
        default_value = "lessor.redb",
        value_name = "PATH"
    )]
    pub db: PathBuf,

    /// Print JSON instead of text: one document, or one per line for watch and keep-alive.
    #[arg(long, global = true)]
    pub json: bool,

    /// What each lease has left when the command opens the file; use the one your service uses.
    /// Read commands show it without writing anything.
    #[arg(long, global = true, value_enum, default_value_t = Policy::Reset, value_name = "POLICY")]
    pub restart_policy: Policy,

    #[command(subcommand)]
    pub command: Command,
}

/// `--restart-policy`: lessor's [`RestartPolicy`], as a command-line value.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every lease gets its full TTL again (etcd's rule; lessor's default).
    Reset,
    /// Every lease gets what it had left when the file was last closed or checkpointed.
    Preserve,
    /// Every lease keeps its wall-clock deadline; leases past it are revoked at once.
    Absolute,
}

impl From<Policy> for RestartPolicy {
    fn from(p: Policy) -> RestartPolicy {
        match p {
            Policy::Reset => RestartPolicy::Reset,
            Policy::Preserve => RestartPolicy::Preserve,
            Policy::Absolute => RestartPolicy::Absolute,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the live leases: id, TTL, time left, number of keys.
    #[command(after_help = "Examples:\n  lessor leases\n  lessor --json leases")]
    Leases,

    /// Show a lease's time left and granted TTL (and its keys with --keys).
    #[command(
        after_help = "Examples:\n  lessor ttl 7\n  lessor ttl 7 --keys\n  lessor --json ttl 7 --keys"
    )]
    Ttl {
        /// The lease id.
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
        /// Also list the keys attached to the lease.
        #[arg(long)]
        keys: bool,
    },

    /// Grant a new lease (creates the database file if it does not exist).
    #[command(after_help = "\
TTLs below 10ms are raised to 10ms. The lease lives TTL after the command ends only if
something renews it: a service opening the file under the reset policy gives it a full TTL.

Examples:
  lessor grant 30s
  lessor grant 500ms
  lessor grant 1m30s --id 42
  lessor --json grant 10")]
    Grant {
        /// The TTL: a number of seconds, or with units: 500ms, 10s, 2m, 1h, 1m30s.
        #[arg(value_parser = duration::parse)]
        ttl: Duration,
        /// Grant the lease with this id instead of the next free one.
        #[arg(long, value_parser = parse_lease_id)]
        id: Option<LeaseId>,
    },

    /// Revoke a lease: delete it and every key attached to it.
    #[command(after_help = "Examples:\n  lessor revoke 7")]
    Revoke {
        /// The lease id.
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
    },

    /// Renew a lease every third of its TTL until Ctrl-C, or for --for DURATION; print each renewal.
    #[command(after_help = "\
When it stops, the lease has just been renewed and lives one TTL more; what it has left at the
next open is what that open's restart policy gives it. Ctrl-C stops at once and leaves the file
consistent: every write to it is a whole transaction.

Examples:
  lessor keep-alive 7 --for 1m
  lessor --json keep-alive 7 --for 30s")]
    KeepAlive {
        /// The lease id.
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
        /// Stop after this long (default: until Ctrl-C); the lease then lives one TTL more.
        #[arg(long = "for", value_parser = duration::parse, value_name = "DURATION")]
        run_for: Option<Duration>,
    },

    /// Write a key (creates the database file if it does not exist).
    #[command(
        after_help = "Examples:\n  lessor put /config/mode fast\n  lessor put /cron/lock/job1 10001 --lease 7"
    )]
    Put {
        /// The key.
        key: OsString,
        /// The value.
        value: OsString,
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long, value_parser = parse_lease_id)]
        lease: Option<LeaseId>,
    },

    /// Read a key: value, lease, revisions, version.
    #[command(
        after_help = "Examples:\n  lessor get /cron/lock/job1\n  lessor get /config/mode --value-only\n  lessor --json get /cron/lock/job1"
    )]
    Get {
        /// The key.
        key: OsString,
        /// Print only the value, byte for byte, with no newline added.
        #[arg(long, conflicts_with = "json")]
        value_only: bool,
    },

    /// List the keys that start with a prefix (all keys without one), in key order.
    #[command(
        after_help = "Examples:\n  lessor range /services/\n  lessor range\n  lessor --json range /cron/"
    )]
    Range {
        /// The prefix; every key when left out.
        #[arg(default_value = "")]
        prefix: OsString,
    },

    /// Delete a key.
    #[command(after_help = "Examples:\n  lessor del /config/mode")]
    Del {
        /// The key.
        key: OsString,
    },

    /// Print changes to the keys under a prefix as they happen, until --for, --count or Ctrl-C.
    #[command(after_help = "\
The database is open in this process only, so the changes seen are those this process makes:
keys deleted when their lease expires (by this process's ticker). Changes made by other
programs cannot happen while the file is open here.

Examples:
  lessor watch /services/ --for 1m
  lessor --json watch /cron/ --count 1 --for 30s")]
    Watch {
        /// The prefix; every key when left out.
        #[arg(default_value = "")]
        prefix: OsString,
        /// Stop after this long.
        #[arg(long = "for", value_parser = duration::parse, value_name = "DURATION")]
        run_for: Option<Duration>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },

    /// Show numbers about the database: leases, keys, revision, file size.
    #[command(after_help = "\
leases counts those with time left under --restart-policy; expired leases, those a service
opening the file under it would revoke at once. keys counts every key in the file.

Examples:
  lessor stats
  lessor --json stats")]
    Stats,

    /// Check the whole database; print "ok" or every problem found (exit code 5).
    #[command(after_help = "\
Checks that every record decodes, every key's lease exists and indexes it, every index entry
has its key and lease, and no key or lease is newer than the counters. A file that is not a
lessor database, or is truncated, counts as corrupted. Reads the file only, read-only.

Examples:
  lessor verify
  lessor --db backup.redb verify && echo good")]
    Verify,

    /// Write every lease and key to stdout as JSON lines, for backups and diffs.
    #[command(after_help = "\
Format (one JSON object a line, in this order):
  {\"type\":\"header\",\"format\":1,\"revision\":12,\"leases\":1,\"keys\":1}
  {\"type\":\"lease\",\"id\":7,\"ttl_ms\":10000,\"remaining_ms\":9800}         (by id)
  {\"type\":\"key\",\"key\":\"/a\",\"value\":\"1\",\"lease\":7,\"create_revision\":3,
   \"mod_revision\":5,\"version\":2}                                      (by key)
A key or value that is not UTF-8 is written hex-encoded as key_hex or value_hex instead;
\"lease\" is null for a key without one. remaining_ms is what --restart-policy gives the lease;
leases with nothing left are not written, nor are their keys.

Examples:
  lessor dump > backup.jsonl
  lessor --db old.redb dump | diff - <(lessor --db new.redb dump)")]
    Dump,

    /// Serve the database over etcd's v3 gRPC API until Ctrl-C or SIGTERM (creates the file if
    /// missing): etcdctl and etcd's clients work against it.
    #[command(after_help = "\
The service holds the database file while it runs (other lessor commands then fail with exit
code 4) and closes it cleanly on Ctrl-C or SIGTERM. It prints \"listening on ADDRESS\" on stderr
once it accepts connections (--listen 127.0.0.1:0 picks a free port).

It listens on loopback by default. Another address needs TLS (--cert and --key, and
--client-ca to require client certificates) or --insecure. --insecure serves plaintext with no
authentication: anyone who can reach the port can read, write and revoke everything.

Examples:
  lessor --db /var/lib/app/leases.redb serve
  lessor serve --listen 127.0.0.1:23790 --durability batched --max-delay 10ms
  lessor serve --listen 0.0.0.0:2379 --cert server.pem --key server.key --client-ca ca.pem
  ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 lease grant 10")]
    Serve(ServeArgs),

    /// Load a dump into a database that holds no leases or keys (creates the file if missing).
    #[command(after_help = "\
Restores lease ids, TTLs, keys, values and which lease each key is attached to. It does not
restore revision numbers or versions: each key is written once, at a new revision of a new
database. Each lease gets its full TTL, counted from the restore; lease ids the old database
issued are still never reused.

The input is checked whole first (a line may be at most 16 MiB; a longer one is refused with
its number, without being read whole). The new database is then written to a temporary file
beside the old one (.NAME.restore-PID.tmp), fsynced, and renamed over it only once complete:
a restore that fails, or is interrupted, leaves the old file as it was (an interrupted one may
leave its temporary file, which can be deleted). --force replaces a database that holds leases
or keys, or is damaged; never a file that is not a lessor database, nor one a process has open
(exit code 4). The new file gets the old one's permissions.

Examples:
  lessor --db new.redb restore backup.jsonl
  lessor --db old.redb dump | lessor --db new.redb restore -")]
    Restore {
        /// The dump to read; - for stdin.
        file: PathBuf,
        /// Replace a database that has leases or keys (or is damaged) with the dump's.
        #[arg(long)]
        force: bool,
    },
}

/// The options of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on: IP:PORT.
    #[arg(long, default_value = "127.0.0.1:2379", value_name = "ADDRESS")]
    pub listen: SocketAddr,
    /// Allow plaintext without authentication on a non-loopback address (dangerous).
    #[arg(long, conflicts_with_all = ["cert", "key", "client_ca"])]
    pub insecure: bool,
    /// The server's certificate chain (PEM); serves TLS. Needs --key.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The server certificate's private key (PEM). Needs --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM). Needs --cert and --key.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// When a write is acknowledged: once fsynced (immediate), or once in memory, fsynced
    /// within --max-delay (batched, as etcd's backend batches its commits).
    #[arg(long, value_enum, default_value_t = DurabilityMode::Immediate, value_name = "MODE")]
    pub durability: DurabilityMode,
    /// Under --durability batched, the longest an acknowledged write waits for its fsync.
    #[arg(long, value_parser = duration::parse, default_value = "10ms", value_name = "DURATION")]
    pub max_delay: Duration,
    /// The largest request accepted, in bytes (etcd's --max-request-bytes).
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// The most concurrent streams (calls) on one client connection.
    #[arg(long, value_name = "N")]
    pub max_streams_per_connection: Option<u32>,
    /// The most watches on one watch stream.
    #[arg(long, value_name = "N")]
    pub max_watches_per_stream: Option<usize>,
    /// The most keep-alive streams open at once, over all connections.
    #[arg(long, value_name = "N")]
    pub max_keepalive_streams: Option<usize>,
    /// The most comparisons, and operations per branch, in one transaction (etcd's
    /// --max-txn-ops).
    #[arg(long, value_name = "N")]
    pub max_txn_ops: Option<usize>,
}

/// `serve --durability`: lessor's [`lessor::Durability`] modes, as a command-line value.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityMode {
    /// A write is acknowledged once fsynced (concurrent writes share fsyncs).
    Immediate,
    /// A write is acknowledged once committed in memory, and fsynced within --max-delay.
    Batched,
}

/// A lease id on the command line: a whole number from 1 to `i64::MAX`.
fn parse_lease_id(text: &str) -> Result<LeaseId, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .and_then(LeaseId::new)
        .ok_or_else(|| {
            format!(
                "invalid lease id {text:?}: ids are whole numbers from 1 to {}",
                LeaseId::MAX
            )
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lease_ids_are_checked() {
        assert_eq!(parse_lease_id("7").unwrap().get(), 7);
        assert!(parse_lease_id("0").is_err());
        assert!(parse_lease_id("-1").is_err());
        assert!(parse_lease_id("x").unwrap_err().contains("whole numbers"));
        assert!(parse_lease_id("9223372036854775808").is_err());
    }
}
