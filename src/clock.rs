//! Where time comes from: the [`Clock`] trait, [`SystemClock`] and [`ManualClock`].
//!
//! The lessor reads time only through a `Clock`, and its core logic takes `now` as an argument,
//! so tests (ours and users') drive expiry by moving a [`ManualClock`] instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// A source of monotonic time for a [`Lessor`](crate::Lessor).
///
/// `now` is the time elapsed since the clock's own epoch; it must read less than 2^62 ns (146
/// years) when a lessor opens ([`Error::InvalidConfig`](crate::Error::InvalidConfig) otherwise).
/// It should never go backwards; if a clock does step back, no lease expires early because of
/// it, and none comes back to life: renewals never move a deadline backwards, a lease someone
/// was told is dead stays dead, and the lessor's time never falls below the highest reading its
/// expiry has used (it stands still until the clock catches up). Leases may then live longer,
/// by at most the step back.
///
/// Implement it to feed the lessor a clock of your own; use [`ManualClock`] in tests.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time elapsed since this clock's epoch.
    fn now(&self) -> Duration;

    /// A channel that receives a message whenever this clock jumps forward by other means than
    /// the passing of real time ([`ManualClock::advance`]), so that a sleeping ticker wakes up and
    /// looks again. Clocks that follow real time return `None` (the default).
    fn jumps(&self) -> Option<Receiver<()>> {
        None
    }

    /// The wall-clock time: [`SystemTime::now`] by default.
    ///
    /// The lessor never uses it to expire leases while it runs (that is [`now`](Clock::now)'s
    /// job); it only stamps checkpoints with wall-clock deadlines, so that
    /// [`RestartPolicy::Absolute`](crate::RestartPolicy::Absolute) can count the time that
    /// passed while the process was down. A clock that implements `now` for tests should
    /// implement this too, as [`ManualClock`] does.
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The default clock: monotonic system time ([`std::time::Instant`]), immune to wall-clock
/// changes such as NTP steps.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    epoch: Instant,
}

impl SystemClock {
    /// A clock whose epoch is now.
    pub fn new() -> SystemClock {
        SystemClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// A clock that moves only when told to: for tests of anything that expires.
///
/// Clones share the same time. A lessor built with it expires leases when the clock is
/// [`advance`](ManualClock::advance)d past their deadlines; its ticker, if running, wakes up at
/// every advance.
///
/// Its wall-clock time ([`Clock::wall`]) is a fixed starting point plus [`now`](Clock::now):
/// 2023-11-14 22:13:20 UTC for [`ManualClock::new`], or the instant given to
/// [`ManualClock::starting_at`], which is how a test reopens a database "later".
///
/// ```
/// use std::time::Duration;
/// use lessor::{Clock, Lessor, ManualClock};
///
/// # fn main() -> lessor::Result<()> {
/// let clock = ManualClock::new();
/// let lessor = Lessor::builder().clock(clock.clone()).ticker(false).open_in_memory()?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
///
/// clock.advance(Duration::from_secs(9));
/// assert_eq!(lessor.renew(lease.id)?, Duration::from_secs(10)); // deadline now at 19 s
///
/// clock.advance(Duration::from_secs(10));
/// assert!(lessor.renew(lease.id).is_err()); // dead the instant its deadline passed
/// assert_eq!(lessor.revoke_expired()?, vec![lease.id]);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    /// Current time in nanoseconds since the epoch; only ever grows.
    nanos: AtomicU64,
    /// The wall-clock time at which `nanos` was zero; fixed.
    wall_start: SystemTime,
    /// Guards the list of tickers to wake at each advance; senders whose receiver is gone are
    /// dropped at the next advance.
    wakers: Mutex<Vec<Sender<()>>>,
}

/// The wall-clock start of [`ManualClock::new`]: 1,700,000,000 s after the Unix epoch.
const MANUAL_WALL_START: Duration = Duration::from_secs(1_700_000_000);

impl Default for ManualInner {
    fn default() -> Self {
        ManualInner {
            nanos: AtomicU64::new(0),
            wall_start: UNIX_EPOCH + MANUAL_WALL_START,
            wakers: Mutex::new(Vec::new()),
        }
    }
}

impl ManualClock {
    /// A clock at time zero, whose wall-clock time starts at 1,700,000,000 s after the Unix
    /// epoch.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// A clock at time zero whose wall-clock time starts at `wall`: for a test that reopens a
    /// database as if the process had been down until then.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{Clock, ManualClock};
    ///
    /// let before = ManualClock::new();
    /// before.advance(Duration::from_secs(4));
    /// let after = ManualClock::starting_at(before.wall() + Duration::from_secs(3));
    /// assert_eq!(after.now(), Duration::ZERO);
    /// assert_eq!(after.wall().duration_since(before.wall()).unwrap(), Duration::from_secs(3));
    /// ```
    pub fn starting_at(wall: SystemTime) -> ManualClock {
        ManualClock {
            inner: Arc::new(ManualInner {
                wall_start: wall,
                ..ManualInner::default()
            }),
        }
    }

    /// Moves time forward by `by` (saturating at about 584 years) and wakes every ticker that
    /// listens to this clock.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .inner
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
        // Copy the list under the lock, send after releasing it; then forget the listeners
        // that have gone (a full channel is fine: it already holds a wake-up).
        let wakers: Vec<Sender<()>> = self.inner.wakers.lock().clone();
        let gone: Vec<Sender<()>> = wakers
            .into_iter()
            .filter(|tx| matches!(tx.try_send(()), Err(TrySendError::Disconnected(()))))
            .collect();
        if !gone.is_empty() {
            self.inner
                .wakers
                .lock()
                .retain(|tx| !gone.iter().any(|g| g.same_channel(tx)));
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::Acquire))
    }

    fn jumps(&self) -> Option<Receiver<()>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.wakers.lock().push(tx);
        Some(rx)
    }

    fn wall(&self) -> SystemTime {
        let start = self.inner.wall_start;
        start.checked_add(self.now()).unwrap_or(start)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("wall", &self.wall())
            .finish()
    }
}

/// Reads `clock` as nanoseconds, the unit of every deadline inside the crate.
pub(crate) fn now_nanos(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().as_nanos()).unwrap_or(u64::MAX)
}

/// Reads `clock`'s wall-clock time as nanoseconds since the Unix epoch: 0 before it, saturating
/// about 584 years after it.
pub(crate) fn wall_nanos(clock: &dyn Clock) -> u64 {
    clock.wall().duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let c = ManualClock::new();
        let c2 = c.clone();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c2.now(), Duration::from_millis(1500));
        c.advance(Duration::MAX);
        assert_eq!(now_nanos(&c), u64::MAX);
    }

    #[test]
    fn advance_wakes_listeners_and_forgets_dropped_ones() {
        let c = ManualClock::new();
        let rx = c.jumps().unwrap();
        let dropped = c.jumps().unwrap();
        drop(dropped);
        c.advance(Duration::from_secs(1));
        c.advance(Duration::from_secs(1)); // a second wake-up coalesces with the first
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(c.inner.wakers.lock().len(), 1);
    }

    #[test]
    fn manual_wall_time_follows_now_from_its_start() {
        let c = ManualClock::new();
        assert_eq!(wall_nanos(&c), 1_700_000_000 * 1_000_000_000);
        c.advance(Duration::from_millis(1500));
        assert_eq!(wall_nanos(&c), 1_700_000_001_500_000_000);
        let later = ManualClock::starting_at(c.wall() + Duration::from_secs(3));
        assert_eq!(later.now(), Duration::ZERO);
        assert_eq!(wall_nanos(&later), 1_700_000_004_500_000_000);
        let before_epoch = ManualClock::starting_at(UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(wall_nanos(&before_epoch), 0);
        assert!(SystemClock::new().wall() > UNIX_EPOCH);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(c.jumps().is_none());
    }
}
