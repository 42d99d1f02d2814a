//! Counters, gauges and histograms of a lessor's work, and the [`Stats`] snapshot
//! [`Lessor::stats`](crate::Lessor::stats) returns.
//!
//! # Implementation
//!
//! Every figure is a relaxed atomic that the code doing the work bumps, off any lock. Renewals,
//! the one hot path, count in a [`Striped`] counter: each thread adds to a stripe of its own (by
//! a thread-local index), on a cache line no other stripe shares, so two threads renewing never
//! fight over the counter's line and the lease table's lines stay untouched. Expiry lateness and
//! commit latency go into [`Histogram`]s of log-linear buckets (four per power of two, so a
//! percentile is exact to within 19%), with the exact maximum beside them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Stripes of a [`Striped`] counter: more than the threads that renew at once, on most
/// machines; threads beyond share stripes (still exact, only slower).
const STRIPES: usize = 16;

/// A counter bumped by many threads at once; see the module docs.
pub(crate) struct Striped {
    stripes: [CachePadded<AtomicU64>; STRIPES],
}

thread_local! {
    /// This thread's stripe, handed out round-robin at its first bump.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The next stripe to hand out.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

impl Striped {
    pub(crate) fn new() -> Striped {
        Striped {
            stripes: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let stripe = STRIPE.with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        });
        self.stripes[stripe].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Sub-buckets per power of two.
const SUB: usize = 4;
/// Buckets: values below `SUB` exactly, then `SUB` per power of two up to 2^64.
const BUCKETS: usize = SUB + (64 - 2) * SUB;

/// A histogram of nanosecond durations; see the module docs.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    pub(crate) fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// The bucket of `v`: exact below `SUB`, else by its top three bits.
    fn bucket(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let top = 63 - v.leading_zeros() as usize; // >= 2
        let sub = ((v >> (top - 2)) & (SUB as u64 - 1)) as usize;
        SUB + (top - 2) * SUB + sub
    }

    /// The largest value bucket `i` holds.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let top = (i - SUB) / SUB + 2;
        let sub = ((i - SUB) % SUB) as u64;
        let low = (1u64 << top) | (sub << (top - 2));
        low.saturating_add((1u64 << (top - 2)) - 1)
    }

    pub(crate) fn record(&self, nanos: u64) {
        self.buckets[Self::bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(nanos, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> Percentiles {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let max = self.max.load(Ordering::Relaxed);
        // The smallest bucket bound at or above the q-th value, never above the maximum.
        let at = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((count as f64 * q).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(Self::upper(i).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        Percentiles {
            count,
            p50: at(0.50),
            p99: at(0.99),
            max: Duration::from_nanos(max),
        }
    }
}

/// A distribution of durations, summarised: how many, the median, the 99th percentile (both
/// exact to within 19%, never above `max`) and the exact maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest value.
    pub max: Duration,
}

/// What a lessor counts as it works; shared by the handle, the ticker and the keep-alive thread.
pub(crate) struct Metrics {
    pub grants: AtomicU64,
    /// Renewals by [`Lessor::renew`](crate::Lessor::renew) and by keep-alives.
    pub renews: Striped,
    /// Revocations by callers (not expiry).
    pub revokes: AtomicU64,
    /// Leases revoked by expiry.
    pub expiries: AtomicU64,
    /// How late after its deadline each expired lease was revoked, by the lessor's clock.
    pub lateness: Histogram,
    /// Expiry batches committed.
    pub expiry_batches: AtomicU64,
    /// Transactions committed (a flush of queued grants counts as one), and how long each took.
    pub commits: AtomicU64,
    pub commit_latency: Histogram,
    /// Commits made with fsync.
    pub fsyncs: AtomicU64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            grants: AtomicU64::new(0),
            renews: Striped::new(),
            revokes: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            lateness: Histogram::new(),
            expiry_batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            commit_latency: Histogram::new(),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// Counts one committed transaction that took `took`, with or without fsync.
    pub(crate) fn committed(&self, took: Duration, durable: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_latency
            .record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        if durable {
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A snapshot of a lessor's counters and gauges, from [`Lessor::stats`](crate::Lessor::stats).
/// Counters count since the lessor was opened; gauges are as of the call.
///
/// ```
/// # fn main() -> lessor::Result<()> {
/// let lessor = lessor::Lessor::open_in_memory()?;
/// let lease = lessor.grant(std::time::Duration::from_secs(10))?;
/// lessor.put_with_lease("/service/a", "10.0.0.1", lease.id)?;
/// lessor.renew(lease.id)?;
/// let stats = lessor.stats()?;
/// assert_eq!((stats.leases, stats.attached_keys, stats.grants, stats.renews), (1, 1, 1, 1));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Gauge: leases alive now.
    pub leases: u64,
    /// Gauge: keys in the database.
    pub keys: u64,
    /// Gauge: keys attached to a lease.
    pub attached_keys: u64,
    /// Gauge: the database's revision.
    pub revision: u64,
    /// Gauge: the database file's size in bytes; `None` for a database not opened by path.
    pub file_size: Option<u64>,
    /// Leases granted.
    pub grants: u64,
    /// Renewals, by [`renew`](crate::Lessor::renew) and by keep-alives.
    pub renews: u64,
    /// Leases revoked by callers.
    pub revokes: u64,
    /// Leases revoked by expiry.
    pub expiries: u64,
    /// How late after its deadline each expired lease was revoked (by the lessor's clock).
    pub expiry_lateness: Percentiles,
    /// Expiry batches committed (one transaction each).
    pub expiry_batches: u64,
    /// Transactions committed, and how long each commit took (real time).
    pub commits: u64,
    /// Of those, commits made with fsync.
    pub fsyncs: u64,
    /// Commit latency: the commit of each transaction, fsync included when it had one.
    pub commit_latency: Percentiles,
    /// The lessor's health as [`Lessor::health`](crate::Lessor::health) gives it: whether its
    /// threads run, failures of the ticker and of storage, reloads, checkpoints.
    pub health: Health,
}

/// A snapshot of the lessor's health: its threads, and storage failures. From
/// [`Lessor::health`](crate::Lessor::health) (memory only, no I/O: cheap enough for a liveness
/// probe), and as [`Stats::health`] in every [`Stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the ticker thread is running (`false` if built without one, or once closed).
    pub ticker_running: bool,
    /// Why the ticker is not running: `None` while it runs; otherwise "the lessor is closed",
    /// "built without a ticker", or what ended it (a panic outside the passes that contain
    /// them). While it is not running, no lease expires by itself.
    pub ticker_stopped: Option<String>,
    /// Ticker passes that failed since open (an expiry batch that did not commit, a reload that
    /// failed, or a panic the ticker contained); each is retried with backoff.
    pub ticker_failures: u64,
    /// The last such failure.
    pub last_ticker_error: Option<String>,
    /// Whether a write failed in storage and the database has not been reloaded since: every
    /// call returns [`Error::Poisoned`](crate::Error::Poisoned) meanwhile. The ticker reloads it (retrying with
    /// backoff while the fault lasts); [`Lessor::recover`](crate::Lessor::recover) does it at once.
    pub poisoned: bool,
    /// Writes that failed in storage since open (each poisoned the lessor).
    pub storage_failures: u64,
    /// Reloads from the file after such failures since open.
    pub reloads: u64,
    /// Checkpoint transactions committed since open; always 0 under
    /// [`RestartPolicy::Reset`](crate::RestartPolicy::Reset).
    pub checkpoints: u64,
    /// Lease records those checkpoints wrote: one per lease renewed since its last checkpoint.
    pub checkpointed_leases: u64,
    /// Whether the keep-alive thread (`lessor-keepalive`, started by the first keep-alive) is
    /// running.
    pub keepalive_running: bool,
    /// Why the keep-alive thread is not running once it has been started: "the lessor is
    /// closed", or what ended it. `None` while it runs, and before the first keep-alive.
    pub keepalive_stopped: Option<String>,
    /// Panics the keep-alive thread contained since open (in a renewal, or around them): each
    /// was counted here and the thread went on.
    pub keepalive_failures: u64,
    /// The last such panic.
    pub last_keepalive_error: Option<String>,
}

/// How often the ticker publishes [`Stats`] through the `metrics` facade.
#[cfg(feature = "metrics")]
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Publishes a snapshot through the [`metrics`] facade (feature `metrics`): counters as
/// `lessor_*_total` (set to their absolute value), gauges as `lessor_*`, and each
/// [`Percentiles`] as a summary: gauges `lessor_*_seconds{quantile="0.5"|"0.99"|"1"}` with a
/// counter `lessor_*_seconds_count`. The ticker calls it every second; so does every
/// [`Lessor::stats`](crate::Lessor::stats).
#[cfg(feature = "metrics")]
pub(crate) fn publish(s: &Stats) {
    use metrics::{counter, gauge};
    for (name, value) in [
        ("lessor_leases", s.leases),
        ("lessor_keys", s.keys),
        ("lessor_attached_keys", s.attached_keys),
        ("lessor_revision", s.revision),
    ] {
        gauge!(name).set(value as f64);
    }
    if let Some(bytes) = s.file_size {
        gauge!("lessor_file_size_bytes").set(bytes as f64);
    }
    for (name, value) in [
        ("lessor_grants_total", s.grants),
        ("lessor_renews_total", s.renews),
        ("lessor_revokes_total", s.revokes),
        ("lessor_expiries_total", s.expiries),
        ("lessor_expiry_batches_total", s.expiry_batches),
        ("lessor_ticker_failures_total", s.health.ticker_failures),
        ("lessor_commits_total", s.commits),
        ("lessor_fsyncs_total", s.fsyncs),
        ("lessor_storage_failures_total", s.health.storage_failures),
        ("lessor_reloads_total", s.health.reloads),
    ] {
        counter!(name).absolute(value);
    }
    for (name, count, p) in [
        (
            "lessor_expiry_lateness_seconds",
            "lessor_expiry_lateness_seconds_count",
            s.expiry_lateness,
        ),
        (
            "lessor_commit_latency_seconds",
            "lessor_commit_latency_seconds_count",
            s.commit_latency,
        ),
    ] {
        for (quantile, value) in [("0.5", p.p50), ("0.99", p.p99), ("1", p.max)] {
            gauge!(name, "quantile" => quantile).set(value.as_secs_f64());
        }
        counter!(count).absolute(p.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_and_bound_it_within_a_fifth() {
        let mut last = 0;
        for v in (0..10_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = Histogram::bucket(v);
            assert!(i < BUCKETS, "{v}");
            assert!(i >= last || v > 10_000, "buckets are monotonic");
            last = i;
            let upper = Histogram::upper(i);
            assert!(upper >= v, "{v} above its bucket's bound {upper}");
            assert!(upper - v <= v / 4 + 1, "{v}: bound {upper} too loose");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = Histogram::new();
        assert_eq!(h.summary(), Percentiles::default());
        for ms in 1..=100u64 {
            h.record(ms * 1_000_000);
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_millis(100));
        let within = |got: Duration, want: u64| {
            let want = Duration::from_millis(want);
            got >= want && got <= want + want / 4
        };
        assert!(within(s.p50, 50), "{s:?}");
        assert!(within(s.p99, 99), "{s:?}");
    }

    #[test]
    fn striped_counts_add_up_across_threads() {
        let c = std::sync::Arc::new(Striped::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || (0..10_000).for_each(|_| c.add(1)))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(c.sum(), 40_000);
    }
}
