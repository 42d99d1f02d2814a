//! [`Builder`]: every setting of a [`Lessor`], with its default.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::lessor::Lessor;
use crate::recovery;
use crate::reload::{Shared, Source};
use crate::restart::RestartPolicy;

/// etcd's largest TTL (`MaxLeaseTTL`), and ours: 9,000,000,000 s, about 285 years.
pub const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The latest a clock may read when a lessor opens on it: 2^62 ns, about 146 years, which
/// leaves as long again before deadlines (nanoseconds below 2^63) run out.
const MAX_CLOCK_AT_OPEN: Duration = Duration::from_nanos(1 << 62);

// The allowed range of every setting, checked at open (`Builder::validate`). The upper bounds
// are far above any real use; they exist so that a mistyped or hostile value (`usize::MAX`)
// is refused with a message instead of overflowing, or allocating, later.

/// Largest `max_key_size`: 1 MiB. Keys are copied into the index table, events and watches.
const KEY_SIZE_LIMIT: usize = 1 << 20;
/// Largest `max_value_size`: 512 MiB, well inside redb's 3 GiB per stored value.
const VALUE_SIZE_LIMIT: usize = 512 << 20;
/// Largest `event_buffer`: a subscriber's channel is allocated whole when it subscribes.
const EVENT_BUFFER_LIMIT: usize = 1 << 20;
/// Largest `event_buffer_bytes`: 64 GiB, as the watch history.
const EVENT_BUFFER_BYTES_LIMIT: u64 = 64 << 30;
/// Largest `watch_history` in events.
const WATCH_HISTORY_EVENTS_LIMIT: usize = 100_000_000;
/// Largest `watch_history` in bytes: 64 GiB.
const WATCH_HISTORY_BYTES_LIMIT: u64 = 64 << 30;
/// Largest `expiry_batch_size` and `checkpoint_batch_size`: one write transaction's worth.
const BATCH_LIMIT: usize = 1_000_000;
/// Longest `checkpoint_interval`: one day.
const CHECKPOINT_INTERVAL_LIMIT: Duration = Duration::from_secs(86_400);
/// Longest `max_delay` of [`Durability::Batched`]: one hour of acknowledged changes at risk.
const MAX_DELAY_LIMIT: Duration = Duration::from_secs(3600);

/// Default [`Builder::revoke_chunk_size`]: a chunk's deletions take a few milliseconds.
const DEFAULT_REVOKE_CHUNK: usize = 1024;

/// Default [`Builder::cache_size`]: 16 MiB (see there why).
const DEFAULT_CACHE_SIZE: usize = 16 << 20;

/// Builds a [`Lessor`] with settings other than the defaults of [`Lessor::open`].
///
/// ```
/// use std::time::Duration;
/// use lessor::{Lessor, ManualClock};
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// let clock = ManualClock::new();
/// let lessor = Lessor::builder()
///     .min_ttl(Duration::from_secs(1))
///     .max_ttl(Duration::from_secs(3600))
///     .clock(clock.clone())
///     .ticker(false)
///     .open(&path)?;
/// assert_eq!(lessor.grant(Duration::ZERO)?.ttl, Duration::from_secs(1));
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            config: Config {
                min_ttl: Duration::from_millis(10),
                max_ttl: MAX_TTL,
                clock: Arc::new(SystemClock::new()),
                ticker: true,
                max_key_size: 4096,
                max_value_size: 1 << 20,
                expiry_batch: 1000,
                revoke_chunk: DEFAULT_REVOKE_CHUNK,
                check_integrity_on_open: true,
                durability: Durability::Immediate,
                event_buffer: 1024,
                event_buffer_bytes: 64 << 20,
                watch_history: 10_000,
                watch_history_bytes: 64 << 20,
                restart_policy: RestartPolicy::Reset,
                checkpoint_interval: Duration::from_secs(5),
                checkpoint_batch: 10_000,
                cache_size: DEFAULT_CACHE_SIZE,
                two_phase_commit: false,
            },
        }
    }
}

impl Builder {
    /// A builder with every setting at its default.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Grants of a shorter TTL get this one instead, as in etcd (so a TTL of zero is not an
    /// instant expiry). Default: 10 ms. Allowed: zero (a lease then lives at least 1 ns) up to
    /// [`max_ttl`](Builder::max_ttl); above it, [`open`](Builder::open) fails with
    /// [`Error::InvalidConfig`].
    pub fn min_ttl(mut self, ttl: Duration) -> Self {
        self.config.min_ttl = ttl;
        self
    }

    /// Grants of a longer TTL fail with [`Error::TtlOutOfRange`]. Default, and the largest value
    /// accepted (larger ones are lowered to it): [`MAX_TTL`], etcd's 9,000,000,000 s.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.config.max_ttl = ttl.min(MAX_TTL);
        self
    }

    /// Where time comes from. Default: [`SystemClock`], monotonic system time. Use a
    /// [`ManualClock`](crate::ManualClock) to drive expiry in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// Whether a background thread (`lessor-ticker`) revokes leases as they expire (and writes
    /// checkpoints, under a [`restart_policy`](Builder::restart_policy) that has them). Default:
    /// `true`. With `false`, expired leases are dead (renew and the rest refuse them) but stay in
    /// the file, with their keys, until the caller runs [`Lessor::revoke_expired`]; and after a
    /// storage failure, nothing reloads the database until the caller runs [`Lessor::recover`].
    pub fn ticker(mut self, on: bool) -> Self {
        self.config.ticker = on;
        self
    }

    /// Longest key accepted, in bytes; longer ones get [`Error::KeyTooLarge`]. Default: 4096.
    /// Allowed: 1 to 1 MiB (1,048,576); others make [`open`](Builder::open) fail with
    /// [`Error::InvalidConfig`].
    pub fn max_key_size(mut self, bytes: usize) -> Self {
        self.config.max_key_size = bytes;
        self
    }

    /// Longest value accepted, in bytes; longer ones get [`Error::ValueTooLarge`].
    /// Default: 1 MiB. Allowed: 0 (only empty values) to 512 MiB (536,870,912); larger ones make
    /// [`open`](Builder::open) fail with [`Error::InvalidConfig`].
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.config.max_value_size = bytes;
        self
    }

    /// Most leases revoked in one transaction when they expire; a larger burst takes several
    /// transactions, letting other writers in between. Default: 1000. Zero is treated as one;
    /// above 1,000,000, [`open`](Builder::open) fails with [`Error::InvalidConfig`].
    pub fn expiry_batch_size(mut self, leases: usize) -> Self {
        self.config.expiry_batch = leases.max(1);
        self
    }

    /// Most keys of one lease deleted in one request when it is revoked or expires. Default:
    /// 1024; zero is treated as one.
    ///
    /// A lease with more keys is revoked in steps, so that it does not stall every other writer
    /// and the expiry of other leases while its keys go (deleting 500,000 keys in one request
    /// holds the writer lock for seconds):
    /// - the request that revokes it deletes its first `keys` keys and its record, and marks it
    ///   as being revoked, durably. From then on its other keys are hidden from every read and
    ///   write, as if deleted: readers see the revocation whole, at once;
    /// - later requests delete the hidden keys, `keys` at a time, each at a revision of its own.
    ///   Other writers and expiry batches go between them. [`Lessor::revoke`] returns once every
    ///   key is deleted (if storage fails meanwhile, it still returns the revocation it made,
    ///   and the ticker deletes the rest after the reload); an expiry leaves the rest to the ticker (or to the next
    ///   [`Lessor::revoke_expired`]); after a crash or a close, the next open resumes;
    /// - what differs from a revocation in one request: a watcher gets the deletions of the
    ///   hidden keys at the later revisions, chunk by chunk; the lease's
    ///   [`LeaseEvent::Revoked`](crate::LeaseEvent::Revoked) lists the first chunk only;
    ///   [`Stats::keys`](crate::Stats) counts hidden keys until they are deleted; and
    ///   [`Lessor::grant_with_id`] of the lease's id gets [`Error::LeaseExists`] until then.
    ///
    /// `usize::MAX` revokes every lease in one request, as etcd does.
    pub fn revoke_chunk_size(mut self, keys: usize) -> Self {
        self.config.revoke_chunk = keys.max(1);
        self
    }

    /// Whether opening a file verifies the checksums of every page first, so that a file damaged
    /// outside `lessor` is refused with [`Error::Corrupted`] instead of being trusted. Costs a
    /// read of the whole file at open. Default: `true`.
    ///
    /// What is and is not caught:
    /// - damage at rest (to a file not open), in a page the latest commit does not own: refused;
    /// - damage to a page of the latest commit: with one-phase commits (the default) redb cannot
    ///   tell it from a commit a crash tore, and rolls the file back to the commit before it,
    ///   which loses that commit although it was acknowledged; a `tracing` warning says so. With
    ///   [`two_phase_commit`](Builder::two_phase_commit) it is refused;
    /// - with the check off, pages are read as they are: a lease or key record whose bytes (or
    ///   key) changed fails its own checksum and is [`Error::Corrupted`] when read, but damage
    ///   to redb's structure (a lost or moved entry) may go unseen;
    /// - pages damaged while the file is open are not checked when read (redb checks checksums
    ///   only here and in [`Lessor::verify`](crate::Lessor::verify)): a damaged record is
    ///   [`Error::Corrupted`] when read, a key orphaned by a damaged index is
    ///   [`Error::Corrupted`] when read; a panic inside redb is [`Error::Corrupted`] and poisons
    ///   the lessor. Other structural damage is found by `verify` or by the next open.
    pub fn check_integrity_on_open(mut self, on: bool) -> Self {
        self.config.check_integrity_on_open = on;
        self
    }

    /// Whether every commit is written in two phases (redb's two-phase commit): its pages and
    /// an fsync, then the header that makes it the latest commit and a second fsync. Default:
    /// `false` (one fsync per commit).
    ///
    /// With one phase, the latest commit's pages are found intact only through their checksums:
    /// an open that finds them failing takes the latest commit for one a crash tore, and rolls
    /// the file back to the commit before it, silently. Damage to a page of the latest commit
    /// (after it was written and acknowledged) looks the same, so it loses that commit instead
    /// of being reported. With two phases the latest commit cannot have been torn, and an open
    /// with [`check_integrity_on_open`](Builder::check_integrity_on_open) (the default) refuses
    /// such a file with [`Error::Corrupted`] instead.
    ///
    /// Costs a second fsync per commit: under [`Durability::Immediate`] about one more fsync of
    /// latency per call (`docs/performance.md`); under [`Durability::Batched`] one per flush.
    pub fn two_phase_commit(mut self, on: bool) -> Self {
        self.config.two_phase_commit = on;
        self
    }

    /// When a mutating call's change is on disk: see [`Durability`]. Default:
    /// [`Durability::Immediate`] (fsynced before the call returns, concurrent calls sharing
    /// fsyncs). A [`Durability::Batched`] `max_delay` above one hour makes
    /// [`open`](Builder::open) fail with [`Error::InvalidConfig`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Capacity of each [`subscribe`](Lessor::subscribe)r's channel, in events; a subscriber
    /// further behind gets a [`LeaseEvent::Lagged`](crate::LeaseEvent::Lagged) marker instead of
    /// the events it had no room for. Default: 1024. Allowed: 2 to 1,048,576 (each channel is
    /// allocated whole at `subscribe`); 0 and 1 are raised to 2, and above the maximum
    /// [`open`](Builder::open) fails with [`Error::InvalidConfig`].
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.config.event_buffer = events.max(2);
        self
    }

    /// The most bytes of events each [`subscribe`](Lessor::subscribe)r's channel holds, counting
    /// the keys of each revocation and 96 bytes per event, as the watch history counts them. A
    /// subscriber that leaves its channel undrained holds no more than this (plus one event: an
    /// event larger than the limit is still delivered to an empty channel); the events it had no
    /// room for are replaced by a [`LeaseEvent::Lagged`](crate::LeaseEvent::Lagged) marker, as
    /// when its [`event_buffer`](Builder::event_buffer) is full. Default: 64 MiB. Allowed: 0 to
    /// 64 GiB (zero: one event at a time); above, [`open`](Builder::open) fails with
    /// [`Error::InvalidConfig`].
    ///
    /// ```
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::builder()
    ///     .event_buffer_bytes(1 << 20) // each subscriber holds at most about 1 MiB of events
    ///     .open_in_memory()?;
    /// # let _ = lessor;
    /// # Ok(()) }
    /// ```
    pub fn event_buffer_bytes(mut self, bytes: usize) -> Self {
        self.config.event_buffer_bytes = bytes;
        self
    }

    /// How far back [`watch_from`](Lessor::watch_from) can start, and how far a slow watch can
    /// fall behind before it ends with [`WatchEnd::Compacted`](crate::WatchEnd::Compacted): the
    /// last `events` key events, and no more than `bytes` of their keys and values (each event
    /// also counts 96 bytes). Kept in memory only. Default: 10,000 events, 64 MiB. Allowed: up
    /// to 100,000,000 events and 64 GiB (zero keeps no history); above either,
    /// [`open`](Builder::open) fails with [`Error::InvalidConfig`].
    pub fn watch_history(mut self, events: usize, bytes: usize) -> Self {
        self.config.watch_history = events;
        self.config.watch_history_bytes = bytes;
        self
    }

    /// What a lease's deadline becomes when the database is reopened: see [`RestartPolicy`].
    /// Chosen anew at every open. Default: [`RestartPolicy::Reset`], a full TTL again, as in
    /// etcd.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.config.restart_policy = policy;
        self
    }

    /// How often the ticker writes checkpoints (the deadlines of the leases renewed since the
    /// last one) under [`RestartPolicy::Preserve`] and [`RestartPolicy::Absolute`]: after a
    /// crash, deadlines are at most this old. Ignored under [`RestartPolicy::Reset`], and
    /// without a ticker (then only grants and [`Lessor::close`] write them). Default: 5 s.
    /// Allowed: above zero, up to one day; otherwise [`open`](Builder::open) fails with
    /// [`Error::InvalidConfig`].
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.config.checkpoint_interval = interval;
        self
    }

    /// Most lease records written in one checkpoint transaction; more changed leases take
    /// several transactions, letting other writers in between. Default: 10,000. Zero is treated
    /// as one; above 1,000,000, [`open`](Builder::open) fails with [`Error::InvalidConfig`].
    pub fn checkpoint_batch_size(mut self, leases: usize) -> Self {
        self.config.checkpoint_batch = leases.max(1);
        self
    }

    /// The most memory, in bytes, redb may use to cache pages of the file: pages read, and pages
    /// written by a transaction before its commit (a larger transaction writes its pages out
    /// early). It is a limit, not an allocation. Default: 16 MiB; any value is accepted (zero
    /// caches nothing).
    ///
    /// Why not redb's own default of 1 GiB: a lessor keeps its leases in memory, in its own
    /// table, and never reads them from the file after opening, so the cache serves only key
    /// reads and the B-tree pages a write walks through. Those are the branch pages (about 1%
    /// of the file) and the leaves being written: 16 MiB holds them for millions of keys, where
    /// 1 GiB let the process grow by the size of every page it ever touched (about 100 bytes a
    /// lease at a million leases with one key each; 64 MiB still cost 57 bytes a lease there,
    /// with no measurable gain in write speed). Raise it for a store whose keys are read often
    /// and do not fit; the operating system's page cache still serves the rest.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.config.cache_size = bytes;
        self
    }

    /// Opens (or creates) the database file at `path` and restores every lease and key in it.
    /// Each restored lease gets what the [`restart_policy`](Builder::restart_policy) says: by
    /// default its full TTL again from now, as in etcd, so holders have time to come back.
    ///
    /// # Errors
    /// [`Error::AlreadyOpen`] if the file is open elsewhere (in this process or another),
    /// [`Error::Io`] if it cannot be opened or created (missing folder, a directory, no
    /// permission), [`Error::NotLessorDatabase`], [`Error::IncompatibleFormat`] or
    /// [`Error::Corrupted`] for a file that is not a database this version can use (a redb
    /// database of another program is refused before anything is written to it), and
    /// [`Error::InvalidConfig`], naming the setting and its allowed range, if a setting is
    /// outside the range its setter documents (`min_ttl` above `max_ttl`, a zero checkpoint
    /// interval, an `event_buffer` of `usize::MAX`...) or the clock reads more than 2^62 ns
    /// (146 years) since its epoch.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Lessor> {
        self.validate()?;
        let path = path.as_ref();
        let db = crate::contain::storage(|| recovery::open_file(path, &self.config))?;
        Lessor::open_with(self.config, db, Source::File(path.to_path_buf()))
    }

    /// Opens a lessor whose database lives only in memory: nothing survives the process, and
    /// commits cost no disk I/O.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] as for [`Builder::open`].
    pub fn open_in_memory(self) -> Result<Lessor> {
        self.open_with_backend(redb::backends::InMemoryBackend::new())
    }

    /// Opens a lessor on any redb [`StorageBackend`](redb::StorageBackend): a file of your own
    /// opening, an encrypted or remote store, or a test backend that injects faults. The backend
    /// provides (or not) the file locking that makes [`Error::AlreadyOpen`] possible. After a
    /// storage failure the lessor opens a new database on the same backend
    /// ([`Lessor::recover`]); the backend's [`close`](redb::StorageBackend::close) is called
    /// once, when the lessor closes.
    ///
    /// # Errors
    /// As [`Builder::open`], but for [`Error::Io`].
    pub fn open_with_backend(self, backend: impl redb::StorageBackend) -> Result<Lessor> {
        self.validate()?;
        let shared = Arc::new(backend);
        let db = crate::contain::storage(|| {
            recovery::open_backend(Shared(Arc::clone(&shared)), &self.config)
        })?;
        Lessor::open_with(self.config, db, Source::Backend(Arc::new(Shared(shared))))
    }

    /// Checks every setting against the range its setter documents.
    fn validate(&self) -> Result<()> {
        let c = &self.config;
        if c.min_ttl > c.max_ttl {
            return Err(Error::InvalidConfig(
                "min_ttl must not be above max_ttl (max_ttl: up to MAX_TTL, 9,000,000,000 s)",
            ));
        }
        if !(1..=KEY_SIZE_LIMIT).contains(&c.max_key_size) {
            return Err(Error::InvalidConfig(
                "max_key_size must be 1 to 1,048,576 bytes (1 MiB)",
            ));
        }
        if c.max_value_size > VALUE_SIZE_LIMIT {
            return Err(Error::InvalidConfig(
                "max_value_size must be 0 to 536,870,912 bytes (512 MiB)",
            ));
        }
        if c.expiry_batch > BATCH_LIMIT {
            return Err(Error::InvalidConfig(
                "expiry_batch_size must be 1 to 1,000,000 leases",
            ));
        }
        if c.event_buffer > EVENT_BUFFER_LIMIT {
            return Err(Error::InvalidConfig(
                "event_buffer must be 2 to 1,048,576 events",
            ));
        }
        if u64::try_from(c.event_buffer_bytes).map_or(true, |b| b > EVENT_BUFFER_BYTES_LIMIT) {
            return Err(Error::InvalidConfig(
                "event_buffer_bytes must be 0 to 64 GiB",
            ));
        }
        if c.watch_history > WATCH_HISTORY_EVENTS_LIMIT
            || u64::try_from(c.watch_history_bytes).map_or(true, |b| b > WATCH_HISTORY_BYTES_LIMIT)
        {
            return Err(Error::InvalidConfig(
                "watch_history must be 0 to 100,000,000 events and 0 to 64 GiB",
            ));
        }
        if c.checkpoint_interval.is_zero() || c.checkpoint_interval > CHECKPOINT_INTERVAL_LIMIT {
            return Err(Error::InvalidConfig(
                "checkpoint_interval must be above zero and at most one day (86,400 s)",
            ));
        }
        if c.checkpoint_batch > BATCH_LIMIT {
            return Err(Error::InvalidConfig(
                "checkpoint_batch_size must be 1 to 1,000,000 leases",
            ));
        }
        if let Durability::Batched { max_delay } = c.durability
            && max_delay > MAX_DELAY_LIMIT
        {
            return Err(Error::InvalidConfig(
                "durability: Batched max_delay must be at most one hour (3,600 s)",
            ));
        }
        // Deadlines are nanoseconds below 2^63: a clock this far from its epoch would leave no
        // room for them, and every lease would be dead at its grant.
        if c.clock.now() >= MAX_CLOCK_AT_OPEN {
            return Err(Error::InvalidConfig(
                "the clock reads more than 2^62 ns (146 years) since its epoch",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("Builder")
            .field("min_ttl", &c.min_ttl)
            .field("max_ttl", &c.max_ttl)
            .field("clock", &c.clock)
            .field("ticker", &c.ticker)
            .field("max_key_size", &c.max_key_size)
            .field("max_value_size", &c.max_value_size)
            .field("expiry_batch_size", &c.expiry_batch)
            .field("revoke_chunk_size", &c.revoke_chunk)
            .field("check_integrity_on_open", &c.check_integrity_on_open)
            .field("durability", &c.durability)
            .field("event_buffer", &c.event_buffer)
            .field("event_buffer_bytes", &c.event_buffer_bytes)
            .field("watch_history", &(c.watch_history, c.watch_history_bytes))
            .field("restart_policy", &c.restart_policy)
            .field("checkpoint_interval", &c.checkpoint_interval)
            .field("checkpoint_batch_size", &c.checkpoint_batch)
            .field("cache_size", &c.cache_size)
            .finish()
    }
}

impl Lessor {
    /// Opens (or creates) the database file at `path` with the default settings: a background
    /// ticker, the system clock, TTLs from 10 ms to etcd's maximum. See [`Builder::open`].
    ///
    /// # Errors
    /// As [`Builder::open`]: [`Error::AlreadyOpen`], [`Error::Io`], [`Error::Corrupted`],
    /// [`Error::NotLessorDatabase`], [`Error::IncompatibleFormat`].
    pub fn open(path: impl AsRef<Path>) -> Result<Lessor> {
        Builder::new().open(path)
    }

    /// Opens a lessor with the default settings whose database lives only in memory; see
    /// [`Builder::open_in_memory`].
    ///
    /// # Errors
    /// [`Error::Storage`] if the in-memory database cannot be set up.
    pub fn open_in_memory() -> Result<Lessor> {
        Builder::new().open_in_memory()
    }

    /// A [`Builder`] for other settings.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_raised_to_the_minimum_and_refused_above_the_maximum() {
        let b = Builder::new()
            .min_ttl(Duration::from_secs(1))
            .max_ttl(Duration::from_secs(10));
        let c = &b.config;
        assert_eq!(c.effective_ttl(Duration::ZERO).unwrap(), 1_000_000_000);
        assert_eq!(
            c.effective_ttl(Duration::from_secs(10)).unwrap(),
            10_000_000_000
        );
        assert!(matches!(
            c.effective_ttl(Duration::from_secs(11)),
            Err(Error::TtlOutOfRange { .. })
        ));
        assert!(matches!(
            c.effective_ttl(Duration::MAX),
            Err(Error::TtlOutOfRange { .. })
        ));
    }

    #[test]
    fn max_ttl_is_capped_and_must_not_be_below_min_ttl() {
        let b = Builder::new().max_ttl(Duration::MAX);
        assert_eq!(b.config.max_ttl, MAX_TTL);
        let b = Builder::new()
            .min_ttl(Duration::from_secs(2))
            .max_ttl(Duration::from_secs(1));
        assert!(matches!(b.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn restart_settings_have_their_documented_defaults_and_limits() {
        let c = Builder::new().config;
        assert_eq!(c.restart_policy, RestartPolicy::Reset);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(5));
        assert_eq!(c.checkpoint_batch, 10_000);
        let b = Builder::new().checkpoint_interval(Duration::ZERO);
        assert!(matches!(b.validate(), Err(Error::InvalidConfig(_))));
        assert!(matches!(
            b.open_in_memory(),
            Err(Error::InvalidConfig(m)) if m.contains("checkpoint_interval must be above zero")
        ));
        assert_eq!(
            Builder::new()
                .checkpoint_batch_size(0)
                .config
                .checkpoint_batch,
            1
        );
    }

    #[test]
    fn keys_and_values_are_checked_against_the_limits() {
        let c = Builder::new().max_key_size(3).max_value_size(2).config;
        assert!(matches!(c.check_key(b""), Err(Error::InvalidKey(_))));
        assert!(c.check_key(b"abc").is_ok());
        assert!(matches!(
            c.check_key(b"abcd"),
            Err(Error::KeyTooLarge { len: 4, max: 3 })
        ));
        assert!(c.check_value(b"").is_ok());
        assert!(matches!(
            c.check_value(b"abc"),
            Err(Error::ValueTooLarge { len: 3, max: 2 })
        ));
    }
}
