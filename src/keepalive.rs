//! Keep-alives: a lease renewed on a schedule until told to stop, as etcd's client `KeepAlive`.
//!
//! [`Lessor::keep_alive`](crate::Lessor::keep_alive) and its siblings renew a lease once, then
//! every interval (a third of its TTL by default) from a background thread, and return a
//! [`KeepAlive`] handle. Each renewal puts a [`KeepAliveResponse`] in the handle's channel. The
//! keep-alive ends when the handle is cancelled or dropped, when its `run_for`/`until` time comes,
//! when the lease is revoked or expires, or when the lessor closes; [`KeepAlive::ended`] says
//! which ([`EndReason`]), and the channel disconnects once drained.
//!
//! # Implementation
//!
//! One thread, `lessor-keepalive`, serves every keep-alive of a lessor; it is started by the
//! first keep-alive, and `close` stops and joins it. Its work lives in [`KeepAlives`] (a field of
//! `Engine`), under one mutex:
//! - a slab of slots, one per running keep-alive: lease, interval, stop time, the channel's
//!   sending end plus a clone of its receiving end, and the end-reason word it shares with the
//!   handle. Free slots are reused; each registration gets a generation never used before, so a
//!   handle or queue entry naming a slot reused since is recognised as stale;
//! - a binary min-heap of `(next renewal, generation, slot)`. Invariant: each running
//!   keep-alive has exactly one entry of its generation, except while the thread holds it popped
//!   (between [`KeepAlives::take_due`] and [`KeepAlives::apply`]). Entries of ended keep-alives
//!   stay until popped, or until stale entries outnumber live ones and the heap is compacted;
//! - an index from lease id to the slots keeping that lease alive (a chain through the slots),
//!   so that a revocation finds them.
//!
//! The thread's loop: read the clock; under the mutex pop up to [`BATCH`] due entries, cloning
//! their channel ends; release it; renew each in the lease table (lock-free, no I/O) and offer
//! its response; take the mutex again to queue each at its next renewal or end it; repeat until
//! nothing is due, then sleep (`select!`) until the earliest entry, a wake-up from a registration
//! due earlier than that, a jump of a [`ManualClock`](crate::ManualClock), or the stop channel.
//! A tick costs O(due · log n).
//!
//! No panic ends the thread silently. Each renewal runs under `catch_unwind` ([`contain`]): one
//! that panics (the lessor's clock is the caller's code) is counted and recorded, and its
//! keep-alive is queued again an interval later, so the schedule's invariant holds. A panic
//! elsewhere in a pass (reading the clock, say) is counted and recorded too, and the thread
//! tries again after a backoff (10 ms doubling to 1 s). Should the thread end all the same, it
//! records why; [`Lessor::health`](crate::Lessor::health) reports all of it
//! ([`KeepAlives::health`]).
//!
//! Ground rules:
//! - The mutex is a leaf. Nothing else is locked while it is held (the one thread spawn happens
//!   under it, once); no clock is read, no channel sent on, no channel end dropped under it.
//!   `Engine`'s writer lock may be held when it is taken ([`KeepAlives::leases_ended`]), never the
//!   reverse: the thread never touches the store or the writer.
//! - A keep-alive's end reason is set once, by compare-and-swap from "running", always before
//!   its slot's channel ends are dropped: a consumer that sees the channel disconnect reads the
//!   reason. Whoever sets it, every path that ends a keep-alive also frees its slot.
//! - The responses channel holds one message; the thread replaces a response nobody took with
//!   the newer one ([`offer_latest`]), so a consumer that never reads never blocks renewals.
//! - A keep-alive with `revoke_on_drop` also has an [`Owed`] word in the manager, kept until
//!   its handle is cancelled or dropped (whether the keep-alive still runs or not) and set when
//!   its lease ends; the handle revokes only while it is clear, checking under the writer lock.
//!
//! Waiting without a thread: the handle is a [`Stream`] of its responses, and [`KeepAlive::lost`]
//! a future of its end. Both wait on the keep-alive's [`Wakers`], shared by the handle, its slot
//! and the thread's [`Due`] copy. The thread wakes the responses' task after offering a response
//! (with no lock held); the end wakes every task when the slot is dropped, which happens after
//! the reason is set and never under the mutex (see the ground rules above), and when the handle
//! itself cancels. The wakers' mutexes are leaves ([`signal`](crate::signal)).
//!
//! Why a keep-alive ended, revoked or expired: a revocation that commits calls
//! [`KeepAlives::leases_ended`] with its cause. A keep-alive registers before its first renewal,
//! so any revocation that beats a renewal of it finds it registered. A renewal that fails
//! without that notification looks at the table: a deadline passed (`EXPIRED` bit) ends it as
//! [`EndReason::Expired`] (a lessor without a ticker may never revoke the lease); a lease claimed
//! for revocation (`DEAD`) keeps it waiting for the notification (or for `close`); a lease gone
//! from the table waits one more interval for the notification, then ends as expired.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, never, select};
use futures_core::Stream;
use parking_lot::Mutex;

use crate::contain::contain;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lease::LeaseId;
use crate::signal::{WakerCell, WakerList, poll_recv};

/// The shortest interval between renewals; shorter ones, zero included, are raised to it.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The first wait after a pass of the thread panicked; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Most due entries the thread takes per hold of the mutex, so that a registration or a
/// revocation (which holds the writer) never waits long behind a large tick.
const BATCH: usize = 256;

/// The end-reason word of a keep-alive still running.
pub(crate) const RUNNING: u8 = 0;

/// One renewal of a kept-alive lease, as received from [`KeepAlive::responses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepAliveResponse {
    /// The lease renewed.
    pub id: LeaseId,
    /// Its TTL: the lease now expires this long after the renewal.
    pub ttl: Duration,
}

/// Why a keep-alive stopped renewing its lease; see [`KeepAlive::ended`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The lease was revoked by [`Lessor::revoke`](crate::Lessor::revoke) (from any handle or
    /// thread) while it was alive. On `EtcdLessor` (feature `etcd`): revoked through the
    /// same connection, or etcd answered a renewal, before the keep-alive's local deadline,
    /// that the lease is gone.
    Revoked,
    /// The lease expired: its deadline passed before a renewal (the clock jumped, or the
    /// keep-alive thread was held up for a whole TTL), or an expired lease was revoked by expiry or
    /// replaced by [`grant_with_id`](crate::Lessor::grant_with_id).
    ///
    /// On `EtcdLessor` (feature `etcd`): the keep-alive's local deadline
    /// ([`KeepAlive::deadline`]) passed without a newer successful renewal (etcd unreachable,
    /// frozen or too slow), at the deadline and whatever the network does then; an answer
    /// that comes later is not read. The lease may still live on the server a little longer,
    /// but no one should rely on holding it.
    Expired,
    /// [`KeepAlive::cancel`] was called, or the handle dropped. The lease was not revoked (unless
    /// the keep-alive was started with [`revoke_on_drop`](KeepAliveOptions::revoke_on_drop)).
    Cancelled,
    /// The lessor was closed.
    Closed,
    /// The keep-alive's [`run_for`](KeepAliveOptions::run_for) or `until` time came. The lease
    /// was renewed a last time as of that time and lives one TTL more.
    Finished,
    /// A write failed in storage, and the file the lessor reloaded from has no such lease: its
    /// grant never reached the disk (with [`Durability::Batched`](crate::Durability::Batched),
    /// or a grant whose caller was told it failed).
    Lost,
}

impl EndReason {
    fn code(self) -> u8 {
        match self {
            EndReason::Revoked => 1,
            EndReason::Expired => 2,
            EndReason::Cancelled => 3,
            EndReason::Closed => 4,
            EndReason::Finished => 5,
            EndReason::Lost => 6,
        }
    }

    fn from_code(code: u8) -> Option<EndReason> {
        match code {
            1 => Some(EndReason::Revoked),
            2 => Some(EndReason::Expired),
            3 => Some(EndReason::Cancelled),
            4 => Some(EndReason::Closed),
            5 => Some(EndReason::Finished),
            6 => Some(EndReason::Lost),
            _ => None,
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::Revoked => "the lease was revoked",
            EndReason::Expired => "the lease expired",
            EndReason::Cancelled => "the keep-alive was cancelled",
            EndReason::Closed => "the lessor was closed",
            EndReason::Finished => "the keep-alive's time was up",
            EndReason::Lost => "the lease's grant was lost in a storage failure",
        })
    }
}

/// Settings of a keep-alive, for [`Lessor::keep_alive_with`](crate::Lessor::keep_alive_with).
///
/// ```
/// use std::time::Duration;
/// use lessor::KeepAliveOptions;
///
/// let opts = KeepAliveOptions::new()
///     .interval(Duration::from_secs(1))
///     .run_for(Duration::from_secs(60))
///     .revoke_on_drop(true);
/// # let _ = opts;
/// ```
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepAliveOptions {
    interval: Option<Duration>,
    run_for: Option<Duration>,
    revoke_on_drop: bool,
}

impl KeepAliveOptions {
    /// The defaults: renew every third of the TTL, until cancelled, never revoking.
    pub fn new() -> KeepAliveOptions {
        KeepAliveOptions::default()
    }

    /// Time between renewals. Default: a third of the lease's TTL (etcd's client does the same),
    /// at least 1 ms. Intervals below 1 ms, zero included, are raised to 1 ms. Starting the
    /// keep-alive fails with [`Error::InvalidConfig`] if the interval is not shorter than the
    /// lease's TTL: the lease would expire between renewals.
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = Some(every);
        self
    }

    /// Stop renewing after this long, measured on the lessor's [`Clock`](crate::Clock) from the
    /// start. The last renewal counts as made at that time, so the lease lives `run_for` plus its
    /// TTL in all; the keep-alive then ends with [`EndReason::Finished`]. Default: no limit.
    pub fn run_for(mut self, limit: Duration) -> Self {
        self.run_for = Some(limit);
        self
    }

    /// Whether dropping or cancelling the handle revokes the lease (its keys go with it).
    /// Default: `false`, etcd's rule: stopping a keep-alive lets the lease expire one TTL after its
    /// last renewal. With `true`, [`KeepAlive::cancel`] and dropping the [`KeepAlive`] revoke the
    /// lease, once, in the calling thread: a disk write (a redb commit with fsync) inside `drop`.
    /// Errors are ignored: a lease that cannot be revoked simply expires. Nothing is revoked if the
    /// keep-alive had already ended because the lease ended or the lessor closed. A handle only
    /// ever revokes the lease it kept alive: once that lease has ended (even after the keep-alive
    /// finished), a later lease granted under the same id is left alone, as etcd's
    /// `Session.Close` revokes its own lease and no other.
    pub fn revoke_on_drop(mut self, on: bool) -> Self {
        self.revoke_on_drop = on;
        self
    }

    /// The [`run_for`](KeepAliveOptions::run_for) limit, if any.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn run_for_limit(&self) -> Option<Duration> {
        self.run_for
    }

    /// Whether [`revoke_on_drop`](KeepAliveOptions::revoke_on_drop) is on.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn revokes_on_drop(&self) -> bool {
        self.revoke_on_drop
    }

    /// The interval for a lease of `ttl` nanoseconds, in nanoseconds.
    pub(crate) fn interval_for(&self, ttl: u64) -> Result<u64> {
        let floor = nanos(MIN_INTERVAL);
        match self.interval {
            None => Ok((ttl / 3).max(floor)),
            Some(every) => {
                let every = nanos(every).max(floor);
                if every >= ttl {
                    return Err(Error::InvalidConfig(
                        "keep-alive interval must be shorter than the lease's TTL",
                    ));
                }
                Ok(every)
            }
        }
    }
}

/// A running keep-alive: renews its lease on a schedule until cancelled or dropped.
///
/// Returned by [`Lessor::keep_alive`](crate::Lessor::keep_alive),
/// [`keep_alive_until`](crate::Lessor::keep_alive_until) and
/// [`keep_alive_with`](crate::Lessor::keep_alive_with). Every renewal puts a
/// [`KeepAliveResponse`] in [`responses`](KeepAlive::responses), a channel that holds only the
/// latest one: reading it is optional, and a consumer that never reads never slows renewals.
/// When the keep-alive ends, [`ended`](KeepAlive::ended) says why, and the channel disconnects
/// once drained, so `for r in ka.responses()` ends with the keep-alive.
///
/// The handle does not keep the database open: once the last [`Lessor`](crate::Lessor) clone is
/// dropped (or [`close`](crate::Lessor::close) called), the keep-alive ends with
/// [`EndReason::Closed`], and the handle may outlive it harmlessly.
///
/// ```
/// use std::time::Duration;
/// use lessor::{EndReason, Lessor};
///
/// # fn main() -> lessor::Result<()> {
/// let lessor = Lessor::open_in_memory()?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// let ka = lessor.keep_alive(lease.id)?; // renewed now, then every 3.3 s
/// let first = ka.responses().try_recv().unwrap();
/// assert_eq!((first.id, first.ttl), (lease.id, Duration::from_secs(10)));
///
/// lessor.revoke(lease.id)?; // the lease ends: so does the keep-alive
/// assert_eq!(ka.ended(), Some(EndReason::Revoked));
/// for response in ka.responses() {} // the channel has disconnected: this loop ends
/// # Ok(()) }
/// ```
pub struct KeepAlive {
    id: LeaseId,
    driver: Driver,
    /// The end reason, shared with the keep-alive's slot ([`RUNNING`] until it ends).
    reason: Arc<AtomicU8>,
    /// The tasks waiting on the responses or the end, shared with the slot.
    wakers: Arc<Wakers>,
    responses: Receiver<KeepAliveResponse>,
    /// Set while a revoke-on-drop is owed; the first `cancel` or `drop` takes it.
    revoke: AtomicBool,
}

/// The tasks waiting on a keep-alive: one on its responses (the handle's [`Stream`]), any
/// number on its end ([`Lost`]). See the module docs.
#[derive(Default)]
pub(crate) struct Wakers {
    responses: WakerCell,
    lost: WakerList,
}

impl Wakers {
    /// Wakes the task waiting on the responses: one was offered. Call with no lock held.
    pub(crate) fn response(&self) {
        self.responses.wake();
    }

    /// Wakes every task: the keep-alive ended (its reason is set). Call with no lock held.
    pub(crate) fn ended(&self) {
        self.responses.wake();
        self.lost.wake_all();
    }
}

/// What renews a [`KeepAlive`]'s lease.
enum Driver {
    /// The embedded lessor's `lessor-keepalive` thread; `ticket` names the registration.
    /// `gone`, for a keep-alive with [`revoke_on_drop`](KeepAliveOptions::revoke_on_drop), is
    /// its [`Owed`] word: set once the lease it kept alive has ended.
    Local {
        core: Arc<Engine>,
        ticket: Ticket,
        gone: Option<Arc<AtomicBool>>,
    },
    /// Another backend (etcd), through its own task.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Remote(Box<dyn RemoteKeepAlive>),
}

/// A keep-alive run by another backend than the embedded lessor (etcd). The backend shares the
/// end-reason word and the responses channel with the [`KeepAlive`] (see
/// [`KeepAlive::remote`]) and follows the same rules: it sets the reason (by [`set_reason`])
/// before it drops its sending end, and offers responses with [`offer_latest`].
pub(crate) trait RemoteKeepAlive: Send + Sync {
    /// Stops renewing: the handle was cancelled or dropped (the reason is already set).
    fn stop(&self);
    /// Revokes the lease for [`KeepAliveOptions::revoke_on_drop`]; errors are ignored, and a
    /// backend that is closed does nothing.
    fn revoke(&self, id: LeaseId);
    /// The local deadline: when the lease ends, as of the last renewal the backend confirmed.
    fn deadline(&self) -> Instant;
}

impl KeepAlive {
    /// A keep-alive run by another backend: `reason` is its end-reason word (running until
    /// [`set_reason`] sets it), `responses` the receiving end of a `bounded(1)` channel,
    /// `wakers` those the backend wakes after each response ([`Wakers::response`]) and once it
    /// has set the reason ([`Wakers::ended`]).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn remote(
        id: LeaseId,
        reason: Arc<AtomicU8>,
        wakers: Arc<Wakers>,
        responses: Receiver<KeepAliveResponse>,
        revoke_on_drop: bool,
        driver: Box<dyn RemoteKeepAlive>,
    ) -> KeepAlive {
        KeepAlive {
            id,
            driver: Driver::Remote(driver),
            reason,
            wakers,
            responses,
            revoke: AtomicBool::new(revoke_on_drop),
        }
    }

    /// The lease kept alive.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The renewals: each successful one sends a [`KeepAliveResponse`]. The channel holds the
    /// latest response not yet taken (an older one is replaced), and disconnects once the
    /// keep-alive has ended and it is drained. Clone the receiver to read it from another thread.
    pub fn responses(&self) -> &Receiver<KeepAliveResponse> {
        &self.responses
    }

    /// Stops renewing. The lease is not revoked: it expires one TTL after its last renewal
    /// (unless started with [`revoke_on_drop`](KeepAliveOptions::revoke_on_drop), which revokes it
    /// here). [`ended`](KeepAlive::ended) then reports [`EndReason::Cancelled`], unless the
    /// keep-alive had already ended. Calling it again does nothing; dropping the handle cancels.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use lessor::EndReason;
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = lessor::Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// let ka = lessor.keep_alive(lease.id)?;
    /// ka.cancel();
    /// assert_eq!(ka.ended(), Some(EndReason::Cancelled));
    /// assert!(lessor.time_to_live(lease.id).is_ok()); // alive until its TTL runs out
    /// # Ok(()) }
    /// ```
    pub fn cancel(&self) {
        if set_reason(&self.reason, EndReason::Cancelled) {
            match &self.driver {
                Driver::Local { core, ticket, .. } => core.keepalives.remove(*ticket),
                Driver::Remote(remote) => remote.stop(),
            }
            self.wakers.ended();
        }
        if !self.revoke.swap(false, Ordering::AcqRel) {
            return;
        }
        let revoke = matches!(
            self.ended(),
            Some(EndReason::Cancelled | EndReason::Finished)
        );
        // Errors are ignored, as documented: the lease then expires.
        match &self.driver {
            Driver::Local { core, gone, .. } => {
                let Some(gone) = gone else { return };
                if revoke && core.is_open() {
                    // Asked under the writer lock, where every lease's end is announced: the
                    // lease under this id is still the one this keep-alive kept alive, not a
                    // later grant that reuses the id.
                    let _ = core.revoke_if(self.id, || !gone.load(Ordering::Acquire));
                }
                core.keepalives.forget_owed(self.id, gone);
            }
            Driver::Remote(remote) => {
                if revoke {
                    remote.revoke(self.id);
                }
            }
        }
    }

    /// The lease's deadline as this keep-alive knows it: the time until which its lease is
    /// alive for sure, for a holder to fence its work (stop writing under the lock a safety
    /// margin before it). `None` once the keep-alive has ended as revoked, expired, lost or
    /// closed: the lease is gone, or nothing vouches for it any more. While the keep-alive
    /// runs, and after it was cancelled or finished, the deadline of the last renewal.
    ///
    /// - On `EtcdLessor` (feature `etcd`), the *local deadline*: the time the last
    ///   successful renewal was sent plus the TTL etcd returned, on this process's monotonic
    ///   clock. etcd's own deadline is later (it renewed on receipt), so a holder that stops
    ///   by this instant has stopped before any other client can take the lease, clock drift
    ///   aside. When it passes without a newer renewal, the keep-alive ends as
    ///   [`EndReason::Expired`] at once.
    /// - On [`Lessor`](crate::Lessor), the lease's deadline in the lease table (whoever renewed
    ///   it last), read on the lessor's [`Clock`](crate::Clock) and mapped to an [`Instant`]
    ///   as of this call: with a [`ManualClock`](crate::ManualClock) it moves only when that
    ///   clock does.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use lessor::Lessor;
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// let ka = lessor.keep_alive(lease.id)?;
    /// let margin = Duration::from_millis(500);
    /// // Do a piece of work under the lease only if it will still be held when it is done.
    /// let held = ka.deadline().is_some_and(|d| Instant::now() + margin < d);
    /// assert!(held);
    /// lessor.revoke(lease.id)?;
    /// assert_eq!(ka.deadline(), None);
    /// # Ok(()) }
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        match self.ended() {
            None | Some(EndReason::Cancelled | EndReason::Finished) => {}
            Some(_) => return None,
        }
        match &self.driver {
            Driver::Local { core, .. } => {
                let deadline = core.table.deadline_of(self.id)?;
                let (now, at) = (core.now(), Instant::now());
                if deadline >= now {
                    at.checked_add(Duration::from_nanos(deadline - now))
                } else {
                    at.checked_sub(Duration::from_nanos(now - deadline))
                }
            }
            Driver::Remote(remote) => Some(remote.deadline()),
        }
    }

    /// Why the keep-alive ended, or `None` while it runs. Set before the channel disconnects.
    pub fn ended(&self) -> Option<EndReason> {
        EndReason::from_code(self.reason.load(Ordering::Acquire))
    }

    /// A future that resolves with the [`EndReason`] once the keep-alive ends: how a lock
    /// holder learns, without polling, that its lease was revoked or expired (or that the
    /// lessor closed). Ready at once if it has ended already. It does not borrow the handle:
    /// it can be moved into another task, and dropping it changes nothing; dropping the
    /// handle cancels the keep-alive, and the future then resolves with
    /// [`EndReason::Cancelled`]. Works on any executor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::{EndReason, Lessor};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let lease = lessor.grant(Duration::from_secs(10))?;
    /// let ka = lessor.keep_alive(lease.id)?;
    /// let lost = ka.lost();
    /// lessor.revoke(lease.id)?;
    /// assert_eq!(futures::executor::block_on(lost), EndReason::Revoked);
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> Lost {
        Lost {
            reason: Arc::clone(&self.reason),
            wakers: Arc::clone(&self.wakers),
        }
    }
}

/// The renewals, as [`responses`](KeepAlive::responses) delivers them (only the latest one not
/// yet taken), without blocking a thread. The stream ends (`None`) once the keep-alive has
/// ended and nothing is waiting; [`ended`](KeepAlive::ended) then says why. Works on any
/// executor.
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
/// use lessor::Lessor;
///
/// # fn main() -> lessor::Result<()> {
/// let lessor = Lessor::open_in_memory()?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// let mut ka = lessor.keep_alive(lease.id)?;
/// futures::executor::block_on(async {
///     let first = ka.next().await.unwrap(); // the renewal made by `keep_alive`
///     assert_eq!(first.ttl, Duration::from_secs(10));
///     lessor.revoke(lease.id).unwrap();
///     assert_eq!(ka.next().await, None);
/// });
/// # Ok(()) }
/// ```
impl Stream for KeepAlive {
    type Item = KeepAliveResponse;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KeepAliveResponse>> {
        let this = self.get_mut();
        poll_recv(
            &this.responses,
            &this.wakers.responses,
            cx,
            || false,
            || this.ended().is_some(),
        )
    }
}

/// The end of a keep-alive, from [`KeepAlive::lost`]: resolves with its [`EndReason`].
#[must_use = "futures do nothing unless polled"]
pub struct Lost {
    reason: Arc<AtomicU8>,
    wakers: Arc<Wakers>,
}

impl Lost {
    fn reason(&self) -> Option<EndReason> {
        EndReason::from_code(self.reason.load(Ordering::Acquire))
    }
}

impl Future for Lost {
    type Output = EndReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EndReason> {
        if let Some(reason) = self.reason() {
            return Poll::Ready(reason);
        }
        self.wakers.lost.register(cx.waker());
        // Again, now that the waker is in place: an end between the two is not slept through.
        match self.reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lost")
            .field("ended", &self.reason())
            .finish()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("id", &self.id)
            .field("ended", &self.ended())
            .finish()
    }
}

/// Starts a keep-alive of lease `id`; the lessor has checked it is open.
pub(crate) fn start(core: &Arc<Engine>, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
    let now = core.now();
    let (ttl, _) = core.table.alive(id, now).ok_or(Error::LeaseNotFound(id))?;
    let interval = opts.interval_for(ttl)?;
    let stop_at = opts.run_for.map(|d| now.saturating_add(nanos(d)));
    let (tx, responses) = crossbeam_channel::bounded(1);
    let first = tx.clone();
    let reason = Arc::new(AtomicU8::new(RUNNING));
    let wakers = Arc::new(Wakers::default());
    let live = Live {
        generation: 0,
        id,
        interval,
        stop_at,
        tx,
        rx: responses.clone(),
        reason: Arc::clone(&reason),
        wakers: Arc::clone(&wakers),
        next_same: None,
        missing: false,
    };
    let due = next_renewal(now, interval, stop_at);
    let gone = opts
        .revoke_on_drop
        .then(|| Arc::new(AtomicBool::new(false)));
    let ticket = core.keepalives.register(core, live, due, gone.as_ref())?;
    // Registered before this renewal: a revocation that lands after it finds the keep-alive and
    // ends it with its cause; one that lands before makes this renewal fail. So the lease this
    // renewal finds is the one `gone` watches.
    let Some(ttl) = core.table.renew(id, now) else {
        core.keepalives.remove(ticket);
        if let Some(gone) = &gone {
            core.keepalives.forget_owed(id, gone);
        }
        return Err(Error::LeaseNotFound(id));
    };
    core.metrics.renews.add(1);
    offer_latest(
        &first,
        &responses,
        KeepAliveResponse {
            id,
            ttl: Duration::from_nanos(ttl),
        },
    );
    Ok(KeepAlive {
        id,
        driver: Driver::Local {
            core: Arc::clone(core),
            ticket,
            gone,
        },
        reason,
        wakers,
        responses,
        revoke: AtomicBool::new(opts.revoke_on_drop),
    })
}

/// Every keep-alive of a lessor, and its thread; a field of `Engine`. See the module docs.
pub(crate) struct KeepAlives {
    /// Guards the keep-alives' slots, their schedule, the lease index, and the thread handle.
    /// A leaf lock: taken with `Engine::writer` held or with nothing held, and nothing is taken
    /// under it.
    inner: Mutex<Inner>,
    /// Wakes the thread when a registration is due before the time it sleeps until. A
    /// `bounded(1)` channel: wake-ups coalesce.
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    /// What went wrong in the thread, for [`KeepAlives::health`]. A leaf lock of its own, taken
    /// by the thread with nothing held.
    status: Mutex<Status>,
}

/// Failures of the `lessor-keepalive` thread; guarded by [`KeepAlives::status`].
#[derive(Default)]
struct Status {
    /// Renewals and passes that panicked.
    failures: u64,
    /// The last one's message.
    last_error: Option<String>,
    /// Why the thread ended, if it ended other than by `close`.
    stopped: Option<String>,
}

/// The keep-alive thread's part of [`Health`](crate::Health), from [`KeepAlives::health`].
pub(crate) struct ThreadHealth {
    /// Whether the thread runs.
    pub(crate) running: bool,
    /// Why it does not, once it has ended; `None` while it runs or before the first keep-alive.
    pub(crate) stopped: Option<String>,
    /// Renewals and passes that panicked since open.
    pub(crate) failures: u64,
    /// The last one's message.
    pub(crate) last_error: Option<String>,
}

/// Names one registration: its slot, and the generation that slot had then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ticket {
    slot: usize,
    generation: u64,
}

/// A running keep-alive's slot.
struct Live {
    /// Unique to this registration; set by [`Inner::insert`].
    generation: u64,
    id: LeaseId,
    /// Nanoseconds between renewals.
    interval: u64,
    /// When to renew a last time and finish, on the lessor's clock.
    stop_at: Option<u64>,
    tx: Sender<KeepAliveResponse>,
    /// The thread's own receiving end: pops a response nobody took to make room for the next.
    rx: Receiver<KeepAliveResponse>,
    reason: Arc<AtomicU8>,
    /// Woken when a response is offered, and when this is dropped (the keep-alive ended).
    wakers: Arc<Wakers>,
    /// The next slot keeping the same lease alive.
    next_same: Option<usize>,
    /// The last renewal found the lease gone from the table, with no notification yet.
    missing: bool,
}

impl Drop for Live {
    /// A slot is dropped only once its reason is set, and never under the mutex (module docs):
    /// the right time to wake the tasks waiting on the end.
    fn drop(&mut self) {
        self.wakers.ended();
    }
}

enum Slot {
    /// Free; links to the next free slot.
    Free(Option<usize>),
    Live(Live),
}

/// Guarded by [`KeepAlives::inner`].
struct Inner {
    slots: Vec<Slot>,
    /// Head of the free-slot list.
    free: Option<usize>,
    /// Live slots.
    live: usize,
    /// The first slot keeping each lease alive; the rest follow `Live::next_same`.
    by_lease: HashMap<LeaseId, usize, foldhash::fast::RandomState>,
    /// `(next renewal, generation, slot)`, earliest first.
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    next_generation: u64,
    /// The [`Owed`] words of the keep-alives with `revoke_on_drop` whose handle has not yet
    /// been cancelled or dropped, by lease: running or not, until their lease ends.
    owed: HashMap<LeaseId, Vec<Owed>, foldhash::fast::RandomState>,
    /// The renewal time the thread sleeps until (`u64::MAX`: none); a registration due earlier
    /// wakes it.
    sleeps_until: u64,
    /// The thread, once started; taken by `close`.
    thread: Option<Thread>,
    /// Set by `close`: no more registrations, no new thread.
    closed: bool,
}

struct Thread {
    /// Dropping it tells the thread to stop.
    stop: Sender<()>,
    join: JoinHandle<()>,
}

/// The word a keep-alive with [`revoke_on_drop`](KeepAliveOptions::revoke_on_drop) shares with
/// [`KeepAlives`]: set when the lease it kept alive ends (revoked, expired and revoked, lost,
/// or the lessor closed). Its handle revokes only while it is clear, checking it under the
/// writer lock, where every lease's end is announced ([`KeepAlives::leases_ended`]) before the
/// id can be granted again: so a handle never revokes a later lease that reuses the id, even
/// after its keep-alive has finished and left the schedule.
type Owed = Arc<AtomicBool>;

/// A due keep-alive, taken out of the lock to be renewed.
struct Due {
    ticket: Ticket,
    id: LeaseId,
    interval: u64,
    stop_at: Option<u64>,
    missing: bool,
    tx: Sender<KeepAliveResponse>,
    rx: Receiver<KeepAliveResponse>,
    wakers: Arc<Wakers>,
}

/// What to do with a keep-alive after a renewal attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Queue it at this time; `true` if the lease was found gone (see `Live::missing`).
    Next(u64, bool),
    End(EndReason),
}

/// What [`KeepAlives::take_due`] found.
enum Step {
    /// Entries to renew (possibly none, if only stale entries were popped); look again after.
    Work,
    /// Nothing due: sleep until this renewal time, or until woken.
    Sleep(Option<u64>),
}

impl KeepAlives {
    pub(crate) fn new() -> KeepAlives {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        KeepAlives {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                free: None,
                live: 0,
                by_lease: HashMap::default(),
                heap: BinaryHeap::new(),
                owed: HashMap::default(),
                next_generation: 1,
                sleeps_until: u64::MAX,
                thread: None,
                closed: false,
            }),
            wake_tx,
            wake_rx,
            status: Mutex::new(Status::default()),
        }
    }

    /// Whether the thread runs, why not, and what failed in it.
    pub(crate) fn health(&self) -> ThreadHealth {
        let (started, finished, closed) = {
            let inner = self.inner.lock();
            let thread = inner.thread.as_ref();
            (
                thread.is_some(),
                thread.is_some_and(|t| t.join.is_finished()),
                inner.closed,
            )
        };
        let status = self.status.lock();
        let stopped = if closed {
            Some("the lessor is closed".to_owned())
        } else if finished {
            Some(
                status
                    .stopped
                    .clone()
                    .unwrap_or_else(|| "the keep-alive thread ended".to_owned()),
            )
        } else {
            None
        };
        ThreadHealth {
            running: started && !finished && !closed,
            stopped,
            failures: status.failures,
            last_error: status.last_error.clone(),
        }
    }

    /// Counts and records a panic contained in the thread.
    fn failed(&self, reason: String) {
        tracing::warn!(error = %reason, "a keep-alive pass failed; renewals go on");
        let mut status = self.status.lock();
        status.failures += 1;
        status.last_error = Some(reason);
    }

    /// Registers `live`, first due at `due`, starting the thread if it is the first; and its
    /// [`Owed`] word, if it revokes on drop.
    fn register(
        &self,
        core: &Arc<Engine>,
        live: Live,
        due: u64,
        owed: Option<&Owed>,
    ) -> Result<Ticket> {
        let (ticket, wake) = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Err(Error::Closed);
            }
            if inner.thread.is_none() {
                // Under the lock so that `close` either finds the thread or stops its start.
                inner.thread = Some(spawn(Arc::clone(core), self.wake_rx.clone())?);
            }
            if let Some(owed) = owed {
                inner
                    .owed
                    .entry(live.id)
                    .or_default()
                    .push(Arc::clone(owed));
            }
            let ticket = inner.insert(live, due);
            (ticket, due < inner.sleeps_until)
        };
        if wake {
            let _ = self.wake_tx.try_send(());
        }
        Ok(ticket)
    }

    /// Ends nothing: forgets a registration (a handle cancelled, or a start that failed).
    fn remove(&self, ticket: Ticket) {
        let removed = {
            let mut inner = self.inner.lock();
            let removed = inner.remove(ticket);
            inner.compact_if_stale();
            removed
        };
        drop(removed); // the channel ends, outside the lock
    }

    /// Forgets the [`Owed`] word `owed` of lease `id`: its handle no longer revokes.
    fn forget_owed(&self, id: LeaseId, owed: &Owed) {
        let mut inner = self.inner.lock();
        if let Some(words) = inner.owed.get_mut(&id) {
            words.retain(|w| !Arc::ptr_eq(w, owed));
            if words.is_empty() {
                inner.owed.remove(&id);
            }
        }
    }

    /// Ends every keep-alive of the leases `ids`, whose revocation has just committed, with
    /// `cause` ([`EndReason::Revoked`] or [`EndReason::Expired`]). Called with the writer held:
    /// takes only this manager's mutex, and never blocks.
    pub(crate) fn leases_ended(&self, ids: &[LeaseId], cause: EndReason) {
        let mut ended = Vec::new();
        {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            if inner.by_lease.is_empty() && inner.owed.is_empty() {
                return;
            }
            for &id in ids {
                for owed in inner.owed.remove(&id).unwrap_or_default() {
                    owed.store(true, Ordering::Release);
                }
                while let Some(&slot) = inner.by_lease.get(&id) {
                    match inner.take(slot) {
                        Some(live) => {
                            set_reason(&live.reason, cause);
                            ended.push(live);
                        }
                        None => {
                            inner.by_lease.remove(&id); // unreachable: the index names live slots
                        }
                    }
                }
            }
            inner.compact_if_stale();
        }
        drop(ended); // disconnects their channels, reason already set
    }

    /// Ends every keep-alive with `reason` (close, or a poisoned lessor).
    fn end_all(&self, reason: EndReason) {
        let slots = {
            let mut inner = self.inner.lock();
            inner.heap.clear();
            inner.by_lease.clear();
            for (_, words) in inner.owed.drain() {
                for owed in words {
                    owed.store(true, Ordering::Release);
                }
            }
            inner.free = None;
            inner.live = 0;
            std::mem::take(&mut inner.slots)
        };
        for slot in &slots {
            if let Slot::Live(live) = slot {
                set_reason(&live.reason, reason);
            }
        }
        drop(slots);
    }

    /// Stops and joins the thread and ends every keep-alive with [`EndReason::Closed`]; later
    /// registrations fail with [`Error::Closed`]. Idempotent.
    pub(crate) fn close(&self) {
        let thread = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.thread.take()
        };
        if let Some(thread) = thread {
            drop(thread.stop);
            let _ = thread.join.join();
        }
        self.end_all(EndReason::Closed);
    }

    /// Pops entries due at `now` into `out` (at most [`BATCH`] live ones).
    fn take_due(&self, now: u64, out: &mut Vec<Due>) -> Step {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut popped = 0;
        while out.len() < BATCH && popped < 4 * BATCH {
            let Some(&Reverse((due, generation, slot))) = inner.heap.peek() else {
                break;
            };
            if due > now {
                break;
            }
            inner.heap.pop();
            popped += 1;
            if let Some(Slot::Live(live)) = inner.slots.get(slot)
                && live.generation == generation
            {
                out.push(Due {
                    ticket: Ticket { slot, generation },
                    id: live.id,
                    interval: live.interval,
                    stop_at: live.stop_at,
                    missing: live.missing,
                    tx: live.tx.clone(),
                    rx: live.rx.clone(),
                    wakers: Arc::clone(&live.wakers),
                });
            }
        }
        if popped > 0 {
            return Step::Work;
        }
        let next = inner.heap.peek().map(|&Reverse((due, _, _))| due);
        inner.sleeps_until = next.unwrap_or(u64::MAX);
        Step::Sleep(next)
    }

    /// Queues or ends each keep-alive renewed by the thread, unless it was removed meanwhile.
    fn apply(&self, outcomes: &mut Vec<(Ticket, Outcome)>) {
        let mut ended = Vec::new();
        {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            for (ticket, outcome) in outcomes.drain(..) {
                match outcome {
                    Outcome::Next(at, missing) => {
                        if let Some(Slot::Live(live)) = inner.slots.get_mut(ticket.slot)
                            && live.generation == ticket.generation
                        {
                            live.missing = missing;
                            inner
                                .heap
                                .push(Reverse((at, ticket.generation, ticket.slot)));
                        }
                    }
                    Outcome::End(reason) => {
                        if let Some(live) = inner.remove(ticket) {
                            set_reason(&live.reason, reason);
                            ended.push(live);
                        }
                    }
                }
            }
            inner.compact_if_stale();
        }
        drop(ended);
    }
}

impl Inner {
    /// Stores `live` in a slot, queued at `due`, under a new generation.
    fn insert(&mut self, mut live: Live, due: u64) -> Ticket {
        let generation = self.next_generation;
        self.next_generation += 1;
        live.generation = generation;
        let slot = match self.free {
            Some(slot) => {
                if let Some(Slot::Free(next)) = self.slots.get(slot) {
                    self.free = *next;
                }
                slot
            }
            None => {
                self.slots.push(Slot::Free(None));
                self.slots.len() - 1
            }
        };
        live.next_same = self.by_lease.insert(live.id, slot);
        self.slots[slot] = Slot::Live(live);
        self.live += 1;
        self.heap.push(Reverse((due, generation, slot)));
        Ticket { slot, generation }
    }

    /// Frees the slot of `ticket` if it still holds that registration.
    fn remove(&mut self, ticket: Ticket) -> Option<Live> {
        match self.slots.get(ticket.slot) {
            Some(Slot::Live(live)) if live.generation == ticket.generation => {
                self.take(ticket.slot)
            }
            _ => None,
        }
    }

    /// Frees `slot` if it is live, unlinking it from the lease index.
    fn take(&mut self, slot: usize) -> Option<Live> {
        let (id, next) = match self.slots.get(slot) {
            Some(Slot::Live(live)) => (live.id, live.next_same),
            _ => return None,
        };
        match self.by_lease.get(&id).copied() {
            Some(head) if head == slot => match next {
                Some(next) => {
                    self.by_lease.insert(id, next);
                }
                None => {
                    self.by_lease.remove(&id);
                }
            },
            Some(mut cur) => {
                while let Some(Slot::Live(prev)) = self.slots.get_mut(cur) {
                    match prev.next_same {
                        Some(n) if n == slot => {
                            prev.next_same = next;
                            break;
                        }
                        Some(n) => cur = n,
                        None => break,
                    }
                }
            }
            None => {}
        }
        self.live -= 1;
        match std::mem::replace(&mut self.slots[slot], Slot::Free(self.free)) {
            Slot::Live(live) => {
                self.free = Some(slot);
                Some(live)
            }
            Slot::Free(_) => None, // checked above
        }
    }

    /// Drops heap entries of ended keep-alives once they outnumber the running ones.
    fn compact_if_stale(&mut self) {
        if self.heap.len() > 2 * self.live + 1024 {
            let Inner { heap, slots, .. } = self;
            heap.retain(|&Reverse((_, generation, slot))| {
                matches!(slots.get(slot), Some(Slot::Live(live)) if live.generation == generation)
            });
        }
    }
}

fn spawn(core: Arc<Engine>, wake: Receiver<()>) -> Result<Thread> {
    let (stop, stop_rx) = crossbeam_channel::bounded(0);
    let join = std::thread::Builder::new()
        .name("lessor-keepalive".into())
        .spawn(move || {
            // Passes contain their own panics; this catches one outside them.
            if let Err(panic) = contain(|| run(&core, &wake, &stop_rx)) {
                let reason = format!("the keep-alive thread {panic}");
                tracing::error!(reason = %reason, "the keep-alive thread stopped");
                core.keepalives.status.lock().stopped = Some(reason);
            }
        })
        .map_err(Error::Spawn)?;
    Ok(Thread { stop, join })
}

/// The `lessor-keepalive` thread: renew what is due, sleep until the next renewal; until stopped.
fn run(core: &Engine, wake: &Receiver<()>, stop: &Receiver<()>) {
    let ka = &core.keepalives;
    let jumps = core.config.clock.jumps().unwrap_or_else(never);
    let mut due = Vec::new();
    let mut outcomes = Vec::new();
    let mut backoff: Option<Duration> = None;
    // The clock reading of the last pass that got one.
    let mut last_now = 0;
    loop {
        // A storage failure (poisoned) does not stop renewals: they touch memory only, and the
        // reload keeps the deadlines of the leases the file has (see `reload.rs`).
        let pass = contain(|| {
            // Below u64::MAX, so that every next renewal (at least 1 ms on) is later than `now`.
            let now = core.now().min(u64::MAX - 1);
            last_now = now;
            loop {
                match ka.take_due(now, &mut due) {
                    Step::Sleep(next) => break next.map(|at| at.saturating_sub(now)),
                    Step::Work => {
                        // The clones of the channel ends are dropped here, with no lock held.
                        outcomes.extend(due.drain(..).map(|d| {
                            let outcome =
                                contain(|| renew(core, now, &d)).unwrap_or_else(|panic| {
                                    ka.failed(format!("a keep-alive renewal {panic}"));
                                    // Queued again: the schedule keeps its one entry per keep-alive.
                                    Outcome::Next(now.saturating_add(d.interval), d.missing)
                                });
                            (d.ticket, outcome)
                        }));
                        ka.apply(&mut outcomes);
                    }
                }
            }
        });
        let sleep_for = match pass {
            Ok(sleep_for) => {
                backoff = None;
                sleep_for.map(Duration::from_nanos)
            }
            Err(panic) => {
                ka.failed(format!("the keep-alive thread {panic}"));
                // What the pass took off the schedule and did not put back goes back an
                // interval on, so that each running keep-alive keeps its one entry.
                let retry = due.drain(..).map(|d| {
                    (
                        d.ticket,
                        Outcome::Next(last_now.saturating_add(d.interval), d.missing),
                    )
                });
                outcomes.extend(retry);
                if contain(|| ka.apply(&mut outcomes)).is_err() {
                    outcomes.clear();
                }
                let b = backoff.map_or(BACKOFF_MIN, |b| (b * 2).min(BACKOFF_MAX));
                backoff = Some(b);
                Some(b)
            }
        };
        let timeout = match sleep_for {
            Some(d) => crossbeam_channel::after(d),
            None => never(),
        };
        select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {}
            recv(jumps) -> _ => {}
            recv(timeout) -> _ => {}
        }
    }
}

/// Renews a due keep-alive's lease at `now` and offers the response; says what comes next.
fn renew(core: &Engine, now: u64, d: &Due) -> Outcome {
    let table = &core.table;
    let last = d.stop_at.filter(|&stop| now >= stop);
    let renewed = match last {
        None => table.renew(d.id, now),
        // The last renewal counts as made at the stop time, so that the lease lives exactly
        // `run_for` + TTL however late the thread wakes; only for a lease still alive now.
        Some(stop) => table.alive(d.id, now).and_then(|_| table.renew(d.id, stop)),
    };
    if let Some(ttl) = renewed {
        core.metrics.renews.add(1);
        let response = KeepAliveResponse {
            id: d.id,
            ttl: Duration::from_nanos(ttl),
        };
        offer_latest(&d.tx, &d.rx, response);
        d.wakers.response();
        return match last {
            Some(_) => Outcome::End(EndReason::Finished),
            None => Outcome::Next(next_renewal(now, d.interval, d.stop_at), false),
        };
    }
    let retry = now.saturating_add(d.interval);
    if table.deadline_of(d.id).is_some() {
        Outcome::End(EndReason::Expired) // deadline passed, not (yet) claimed
    } else if table.contains(d.id) {
        Outcome::Next(retry, false) // claimed: its revocation's notification ends this
    } else if d.missing {
        Outcome::End(EndReason::Expired) // gone, and no notification came: say expired
    } else {
        Outcome::Next(retry, true) // gone: its notification may be on its way
    }
}

/// The next renewal after one at `now`: an interval later, or at the stop time if earlier.
fn next_renewal(now: u64, interval: u64, stop_at: Option<u64>) -> u64 {
    let next = now.saturating_add(interval);
    stop_at.map_or(next, |stop| next.min(stop))
}

/// Puts `value` in a `bounded(1)` channel, replacing a message nobody has taken yet: the channel
/// holds only the latest, and a receiver that never reads never blocks the sender. `rx` is the
/// sender's own clone of the receiving end. Gives up after a few rounds lost to another sender
/// (the channel then holds that sender's message, as fresh).
pub(crate) fn offer_latest<T>(tx: &Sender<T>, rx: &Receiver<T>, mut value: T) {
    for _ in 0..4 {
        match tx.try_send(value) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => return,
            Err(TrySendError::Full(v)) => {
                value = v;
                let _ = rx.try_recv();
            }
        }
    }
}

/// Sets a keep-alive's end reason unless it has one; `true` if this call set it.
pub(crate) fn set_reason(word: &AtomicU8, reason: EndReason) -> bool {
    word.compare_exchange(RUNNING, reason.code(), Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    fn live(lease: u64) -> (Live, Receiver<KeepAliveResponse>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let live = Live {
            generation: 0,
            id: id(lease),
            interval: 10,
            stop_at: None,
            tx,
            rx: rx.clone(),
            reason: Arc::new(AtomicU8::new(RUNNING)),
            wakers: Arc::default(),
            next_same: None,
            missing: false,
        };
        (live, rx)
    }

    #[test]
    fn the_channel_keeps_only_the_latest_value_and_never_blocks() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let user = rx.clone();
        for n in 0..10 {
            offer_latest(&tx, &rx, n);
        }
        assert_eq!(user.len(), 1);
        assert_eq!(user.try_recv(), Ok(9));
        offer_latest(&tx, &rx, 10);
        assert_eq!(user.try_recv(), Ok(10));
        // once the sender and its receiver clone are gone, the user drains then disconnects
        offer_latest(&tx, &rx, 11);
        drop((tx, rx));
        assert_eq!(user.recv(), Ok(11));
        assert!(user.recv().is_err());
    }

    #[test]
    fn intervals_default_to_a_third_of_the_ttl_with_a_floor() {
        let ms = nanos(Duration::from_millis(1));
        let default = KeepAliveOptions::new();
        assert_eq!(default.interval_for(9_000 * ms).ok(), Some(3_000 * ms));
        assert_eq!(default.interval_for(ms).ok(), Some(ms)); // floor
        let every = |d| KeepAliveOptions::new().interval(d);
        assert_eq!(
            every(Duration::from_secs(1)).interval_for(9_000 * ms).ok(),
            Some(1_000 * ms)
        );
        assert_eq!(
            every(Duration::ZERO).interval_for(9_000 * ms).ok(),
            Some(ms)
        );
        assert!(matches!(
            every(Duration::from_secs(9)).interval_for(9_000 * ms),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn end_reasons_round_trip_and_are_set_once() {
        for r in [
            EndReason::Revoked,
            EndReason::Expired,
            EndReason::Cancelled,
            EndReason::Closed,
            EndReason::Finished,
        ] {
            assert_eq!(EndReason::from_code(r.code()), Some(r));
            assert!(!r.to_string().is_empty());
        }
        assert_eq!(EndReason::from_code(RUNNING), None);
        let word = AtomicU8::new(RUNNING);
        assert!(set_reason(&word, EndReason::Cancelled));
        assert!(!set_reason(&word, EndReason::Revoked));
        assert_eq!(
            EndReason::from_code(word.load(Ordering::Relaxed)),
            Some(EndReason::Cancelled)
        );
    }

    #[test]
    fn slots_are_reused_under_new_generations_and_the_lease_index_follows() {
        let m = KeepAlives::new();
        let mut inner = m.inner.lock();
        let (a, _ra) = live(7);
        let (b, _rb) = live(7);
        let (c, _rc) = live(7);
        let (d, _rd) = live(8);
        let ta = inner.insert(a, 1);
        let tb = inner.insert(b, 2);
        let tc = inner.insert(c, 3);
        let td = inner.insert(d, 4);
        assert_eq!(inner.live, 4);
        // unlink the middle of lease 7's chain, then reuse its slot for another lease
        assert!(inner.remove(tb).is_some());
        assert!(inner.remove(tb).is_none());
        let (e, _re) = live(9);
        let te = inner.insert(e, 5);
        assert_eq!(te.slot, tb.slot);
        assert_ne!(te.generation, tb.generation);
        assert!(inner.remove(tb).is_none()); // the old ticket no longer names the slot
        // lease 7 still has a and c, found through the index
        let mut seven = Vec::new();
        while let Some(&slot) = inner.by_lease.get(&id(7)) {
            seven.push(inner.take(slot).map(|l| l.generation));
        }
        seven.sort();
        assert_eq!(seven, vec![Some(ta.generation), Some(tc.generation)]);
        assert!(inner.remove(td).is_some());
        assert!(inner.remove(te).is_some());
        assert_eq!(inner.live, 0);
        assert!(inner.by_lease.is_empty());
        assert_eq!(inner.heap.len(), 5); // stale entries stay until popped or compacted
    }

    #[test]
    fn stale_heap_entries_are_compacted_once_they_dominate() {
        let m = KeepAlives::new();
        let mut inner = m.inner.lock();
        let (keep, _rk) = live(1);
        let kept = inner.insert(keep, 0);
        for n in 0..2_000u64 {
            let (l, _r) = live(2 + n);
            let t = inner.insert(l, n);
            inner.remove(t);
            inner.compact_if_stale();
        }
        assert!(inner.heap.len() <= 2 * inner.live + 1024 + 1);
        assert!(
            inner
                .heap
                .iter()
                .any(|&Reverse((_, generation, slot))| (slot, generation)
                    == (kept.slot, kept.generation))
        );
    }

    #[test]
    fn leases_ended_sets_the_cause_and_disconnects() {
        let m = KeepAlives::new();
        let (a, ra) = live(7);
        let (b, rb) = live(7);
        let (c, rc) = live(8);
        let reasons = [&a.reason, &b.reason, &c.reason].map(Arc::clone);
        {
            let mut inner = m.inner.lock();
            inner.insert(a, 1);
            inner.insert(b, 1);
            inner.insert(c, 1);
        }
        m.leases_ended(&[id(7), id(9)], EndReason::Revoked);
        assert!(ra.recv().is_err() && rb.recv().is_err());
        for r in &reasons[..2] {
            assert_eq!(r.load(Ordering::Acquire), EndReason::Revoked.code());
        }
        assert_eq!(reasons[2].load(Ordering::Acquire), RUNNING);
        m.close();
        assert_eq!(reasons[2].load(Ordering::Acquire), EndReason::Closed.code());
        assert!(rc.recv().is_err());
    }

    #[test]
    fn owed_words_are_set_when_their_lease_ends_or_the_lessor_closes() {
        let m = KeepAlives::new();
        let words: Vec<Owed> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
        {
            let mut inner = m.inner.lock();
            inner
                .owed
                .entry(id(7))
                .or_default()
                .push(Arc::clone(&words[0]));
            inner
                .owed
                .entry(id(7))
                .or_default()
                .push(Arc::clone(&words[1]));
            inner
                .owed
                .entry(id(8))
                .or_default()
                .push(Arc::clone(&words[2]));
        }
        // no running keep-alive at all: the owed words are still told
        m.leases_ended(&[id(7)], EndReason::Expired);
        assert!(words[0].load(Ordering::Acquire) && words[1].load(Ordering::Acquire));
        assert!(!words[2].load(Ordering::Acquire));
        assert!(!m.inner.lock().owed.contains_key(&id(7)));
        // a forgotten word is not set any more, and its entry goes
        m.forget_owed(id(8), &words[2]);
        assert!(m.inner.lock().owed.is_empty());
        let late = Arc::new(AtomicBool::new(false));
        m.inner
            .lock()
            .owed
            .entry(id(9))
            .or_default()
            .push(Arc::clone(&late));
        m.close();
        assert!(late.load(Ordering::Acquire));
        assert!(!words[2].load(Ordering::Acquire));
    }

    #[test]
    fn due_entries_come_out_in_order_and_stale_ones_are_skipped() {
        let m = KeepAlives::new();
        let tickets: Vec<Ticket> = {
            let mut inner = m.inner.lock();
            (1..=3).map(|n| inner.insert(live(n).0, 10 * n)).collect()
        };
        m.remove(tickets[0]);
        let mut out = Vec::new();
        assert!(matches!(m.take_due(25, &mut out), Step::Work));
        assert_eq!(
            out.iter().map(|d| d.ticket).collect::<Vec<_>>(),
            vec![tickets[1]]
        );
        out.clear();
        assert!(matches!(m.take_due(25, &mut out), Step::Sleep(Some(30))));
        assert_eq!(m.inner.lock().sleeps_until, 30);
    }
}
