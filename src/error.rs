//! The one error type of the crate.

use std::time::Duration;

use crate::lease::LeaseId;

/// A specialised `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `lessor`.
///
/// Variants are named after the condition, not the operation that met it, so one `match` arm
/// serves every method: [`Error::LeaseNotFound`] means the same thing from `renew`, `attach` or
/// `time_to_live`. The enum is `#[non_exhaustive]`: later versions may add variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lease does not exist: it was never granted, was revoked, or its deadline has passed
    /// (a lease is dead the instant its deadline passes, before the ticker has revoked it).
    #[error("lease {0} not found (never granted, revoked or expired)")]
    LeaseNotFound(LeaseId),

    /// `grant_with_id` named an id that belongs to a live lease.
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),

    /// A lease id is 0 or above `i64::MAX` (the ids etcd accepts are positive `i64`s). A
    /// negative `i64` is carried as its two's-complement `u64`, and the message shows both.
    #[error("invalid lease id {}: ids are 1..=i64::MAX", show_id(*.0))]
    InvalidLeaseId(u64),

    /// Every auto-assignable lease id has been issued: the highest id ever issued (possibly by
    /// `grant_with_id`) is `i64::MAX`. Ids are never reused, so grant with explicit ids instead.
    #[error(
        "no lease ids left to assign: the highest id ever issued is i64::MAX; grant with \
         explicit ids (grant_with_id) instead"
    )]
    LeaseIdsExhausted,

    /// A requested TTL is above the lessor's maximum.
    #[error("TTL {ttl:?} is above the maximum of {max:?}")]
    TtlOutOfRange {
        /// The TTL that was asked for.
        ttl: Duration,
        /// The configured maximum ([`Builder::max_ttl`](crate::Builder::max_ttl)).
        max: Duration,
    },

    /// The lessor's clock has reached the last deadline a lease can have: 2^63 ns (about 292
    /// years) after the clock's epoch. A lease granted now would be dead on arrival, so none
    /// is granted. (A lessor opens only on a clock below 2^62 ns: this takes a clock that
    /// jumped, or a process that ran for 146 years.)
    #[error(
        "the clock reads {now:?} since its epoch, at or past the last deadline a lease can have \
         (2^63 ns, about 292 years): a lease granted now would be dead at once"
    )]
    ClockOutOfRange {
        /// The clock's reading.
        now: Duration,
    },

    /// The key does not exist.
    #[error("key {} not found", show_key(.0))]
    KeyNotFound(Vec<u8>),

    /// `detach` named a key that exists but is not attached to that lease.
    #[error("key {} is not attached to lease {lease}", show_key(.key))]
    KeyNotAttached {
        /// The key.
        key: Vec<u8>,
        /// The lease it was to be detached from.
        lease: LeaseId,
    },

    /// The key is not acceptable (today: it is empty).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),

    /// The key is longer than the configured limit.
    #[error("key of {len} bytes is above the limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the key.
        len: usize,
        /// The limit ([`Builder::max_key_size`](crate::Builder::max_key_size)).
        max: usize,
    },

    /// The value is longer than the configured limit.
    #[error("value of {len} bytes is above the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the value.
        len: usize,
        /// The limit ([`Builder::max_value_size`](crate::Builder::max_value_size)).
        max: usize,
    },

    /// `watch_from` asked for a revision whose events are no longer kept: the history holds
    /// events from `oldest` on (it is kept in memory, so after a reopen it starts at the
    /// database's revision). Read the keys again and watch from the revision after that read.
    #[error("revision {requested} has been compacted: the watch history starts at {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: crate::lease::Revision,
        /// The oldest revision a watch can start from now.
        oldest: crate::lease::Revision,
    },

    /// A [`Builder`](crate::Builder) setting is outside the range its setter documents, or two
    /// settings contradict each other (the message names the setting and its allowed range);
    /// or a keep-alive was given an interval not shorter than its lease's TTL.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),

    /// The storage layer failed: an I/O error, a full disk, a failed commit. What the failing
    /// call was doing did not happen, with one exception no storage engine can rule out: when
    /// the fault strikes after the commit was already durable (a final fsync that failed after
    /// the data reached the disk, or redb's file shrink right after its last fsync), the change
    /// is in the file, and the lessor, reloading from the file, holds it. Read back after
    /// [`Lessor::recover`](crate::Lessor::recover) when it matters. A write failure poisons the
    /// lessor until it has reloaded ([`Error::Poisoned`]).
    #[error("storage error: {0}")]
    Storage(#[source] redb::Error),

    /// Opening or creating the database file failed: a missing folder, a directory, no
    /// permission. The message says what to fix for the common cases.
    #[error("cannot open {path}: {source}{}", io_hint(source))]
    Io {
        /// The path that was being opened.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A background thread (the ticker, or the keep-alive thread) could not be started (the
    /// system is out of threads or memory).
    #[error("cannot start a background thread: {0}")]
    Spawn(#[source] std::io::Error),

    /// The file is damaged: a record that does not decode, an index that disagrees with the data.
    #[error("database corrupted: {0}")]
    Corrupted(String),

    /// The file is not a `lessor` database: not a redb file at all, or a redb database written by
    /// something else. It is left untouched.
    #[error("not a lessor database: {0}")]
    NotLessorDatabase(String),

    /// The file was written by a newer `lessor` whose format this version cannot read.
    #[error("incompatible database format {found}: this version reads formats 1 to {supported}")]
    IncompatibleFormat {
        /// The format version found in the file.
        found: u64,
        /// The newest format version this build reads, and the one it writes (older files are
        /// upgraded to it when opened).
        supported: u64,
    },

    /// The database is already open, in this process or another one.
    #[error("database is already open (by this or another process)")]
    AlreadyOpen,

    /// The lessor was closed; open the database again to use it.
    #[error("lessor is closed")]
    Closed,

    /// The backend could not be reached or did not answer in time: an etcd cluster
    /// (`EtcdLessor`, feature `etcd`) that is down, partitioned or without a leader. The
    /// call may or may not have taken effect; the transport's error is the source.
    #[error("backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The backend refused the call for a reason that has no variant of its own (for etcd: a
    /// permission, a request above its size limit, an unexpected answer); its error is the
    /// source.
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// An earlier write failed in storage ([`Error::Storage`]). Whether that write reached the
    /// disk is unknown and redb refuses further work, so every call fails with this until the
    /// database has been reopened and memory reloaded from it: the ticker does that by itself,
    /// retrying while the fault lasts, and [`Lessor::recover`](crate::Lessor::recover) does it at
    /// once. The file then says what was committed. Retrying the call later is safe.
    #[error("a write failed in storage; the database is being reloaded (retry, or call recover)")]
    Poisoned,

    /// A [`Mutex`](crate::concurrency::Mutex) was held by another session:
    /// [`try_lock`](crate::concurrency::Mutex::try_lock) found it so, or
    /// [`lock_until`](crate::concurrency::Mutex::lock_until) reached its deadline. The attempt
    /// removed its own key, so it leaves nothing behind to block later waiters.
    #[error("the lock is held by another session")]
    Locked,

    /// [`Election::proclaim`](crate::concurrency::Election::proclaim) was called by a
    /// campaigner that is not (or is no longer) the leader: it never won, it resigned, or its
    /// key was deleted (its session's lease ended).
    #[error("not the leader of this election")]
    NotLeader,

    /// The lease of a [`Session`](crate::concurrency::Session) ended (expired, revoked, or the
    /// store closed) while a lock or a campaign was waiting under it: its key is gone, so the
    /// wait cannot succeed. Start a new session.
    #[error("the session's lease {0} was lost (expired or revoked)")]
    SessionExpired(LeaseId),
}

/// Renders a key for an error message: as text when it is UTF-8, else as escaped bytes.
fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("b\"{}\"", key.escape_ascii()),
    }
}

/// Renders a lease id for an error message, with its `i64` reading when that is negative.
fn show_id(id: u64) -> String {
    match i64::try_from(id) {
        Ok(_) => id.to_string(),
        Err(_) => format!("{id} ({} as an i64)", id.cast_signed()),
    }
}

/// What to do about a failure to open the database file, for the cases that have a fix.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => "; its folder does not exist: create it first",
        std::io::ErrorKind::PermissionDenied => {
            "; lessor needs to read and write the file (and to create it, in its folder)"
        }
        _ => "",
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => Error::AlreadyOpen,
            redb::Error::Corrupted(msg) => Error::Corrupted(msg),
            other => Error::Storage(other),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render_as_text_or_escaped_bytes() {
        let e = Error::KeyNotFound(b"/a/b".to_vec());
        assert_eq!(e.to_string(), "key \"/a/b\" not found");
        let e = Error::KeyNotFound(vec![0xff, b'a']);
        assert_eq!(e.to_string(), "key b\"\\xffa\" not found");
    }

    #[test]
    fn messages_show_negative_ids_and_say_what_to_do() {
        let e = Error::InvalidLeaseId(-1i64 as u64);
        assert_eq!(
            e.to_string(),
            "invalid lease id 18446744073709551615 (-1 as an i64): ids are 1..=i64::MAX"
        );
        assert_eq!(
            Error::InvalidLeaseId(0).to_string(),
            "invalid lease id 0: ids are 1..=i64::MAX"
        );
        assert!(
            Error::LeaseIdsExhausted
                .to_string()
                .contains("grant_with_id")
        );
        let missing = Error::Io {
            path: "/a/b".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert!(
            missing.to_string().ends_with("create it first"),
            "{missing}"
        );
        let denied = Error::Io {
            path: "/a/b".into(),
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert!(
            denied.to_string().contains("needs to read and write"),
            "{denied}"
        );
    }

    #[test]
    fn redb_conditions_map_to_our_variants() {
        assert!(matches!(
            Error::from(redb::DatabaseError::DatabaseAlreadyOpen),
            Error::AlreadyOpen
        ));
        assert!(matches!(
            Error::from(redb::StorageError::Corrupted("x".into())),
            Error::Corrupted(m) if m == "x"
        ));
        assert!(matches!(
            Error::from(redb::StorageError::Io(std::io::Error::other("disk"))),
            Error::Storage(_)
        ));
    }
}
