//! Lease events, and the hub that hands every committed change to subscribers and watchers.
//!
//! # Implementation
//!
//! A mutating call collects what it changed as [`Change`]s while its transaction runs. Once the
//! transaction has committed, and while the writer lock is still held, [`Hub::publish`] turns
//! them into [`LeaseEvent`]s for subscribers and [`WatchEvent`](crate::WatchEvent)s for watchers
//! (see [`watch`](crate::watch)). Publishing under the writer lock is what puts events in commit
//! order; publishing never blocks: every channel is bounded and written with `try_send`.
//!
//! A subscriber whose channel is full misses events; it is told how many with one
//! [`LeaseEvent::Lagged`] at the point where they were missed, as soon as its channel has room
//! again. A subscriber whose receiver is gone is forgotten at the next publish.
//!
//! A channel is full at `event_buffer` events, or once the events in it reach `event_buffer_bytes`
//! (keys, plus a fixed overhead per event: [`LeaseEvent`]'s size): a revocation carries every
//! key of its lease, so a count alone bounds nothing. The channel is crossbeam's, whose receiver
//! the caller holds; the hub tracks the bytes in it on the sending side alone. Each subscriber
//! keeps the size of every event it sent, oldest first; the channel is FIFO and the hub its only
//! sender, so once the channel holds `len` events, all but the last `len` sizes were received and
//! are dropped. A receive racing that count only makes the hub think the channel fuller than it
//! is: the bound holds. An event is sent to an empty channel whatever its size, so that no
//! revocation is too large ever to be seen.
//!
//! [`LeaseEvents`] is the subscriber's end: the receiver, and a [`WakerCell`] that the hub
//! empties after each delivery and at the end, so that the events are a [`Stream`] too. The hub
//! takes the wakers under its mutex and wakes them after releasing it (lock order: the writer
//! lock, the hub's mutex, a waker cell; see [`signal`](crate::signal)).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvError, RecvTimeoutError, Sender, TryRecvError, TrySendError,
};
use futures_core::Stream;
use parking_lot::Mutex;

#[cfg(doc)]
use crate::Builder;
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::signal::{WakerCell, poll_recv};
use crate::watch::{EVENT_OVERHEAD, Watchers};

/// Why a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevokeCause {
    /// Someone called [`revoke`](crate::Lessor::revoke) (or a keep-alive with `revoke_on_drop`
    /// ended).
    Revoked,
    /// Its deadline passed without a renewal.
    Expired,
}

/// Something that happened to a lease, from [`Lessor::subscribe`](crate::Lessor::subscribe).
///
/// Events arrive in commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseEvent {
    /// A lease was granted.
    Granted {
        /// The new lease.
        id: LeaseId,
        /// Its TTL (after raising to the minimum).
        ttl: Duration,
        /// The database's revision when it was granted (a grant does not advance it).
        revision: Revision,
    },
    /// A lease ended, and its keys were deleted in the same transaction.
    Revoked {
        /// The lease.
        id: LeaseId,
        /// The keys deleted with it, in key order.
        keys: Vec<Vec<u8>>,
        /// The revision of the deletion (unchanged from before if it had no keys).
        revision: Revision,
        /// Whether it was revoked or expired.
        cause: RevokeCause,
    },
    /// The subscriber's channel was full (in events, [`Builder::event_buffer`], or in bytes,
    /// [`Builder::event_buffer_bytes`]) and this many events were dropped here: the subscriber
    /// was too slow. Later events follow as usual. A subscriber still behind when
    /// the lessor closes gets this last, if its channel has room by then.
    Lagged(u64),
}

/// Lease events, from [`Lessor::subscribe`](crate::Lessor::subscribe): every grant and every
/// revocation, in commit order. Read them blocking ([`recv`](LeaseEvents::recv),
/// [`recv_timeout`](LeaseEvents::recv_timeout), [`iter`](LeaseEvents::iter)), without blocking
/// ([`try_recv`](LeaseEvents::try_recv)), with `select!` ([`receiver`](LeaseEvents::receiver)),
/// or as a [`Stream`] on any executor. The events end when the lessor closes; dropping this
/// unsubscribes. Each event goes to one reader: threads that share a `LeaseEvents` split the
/// events between them, and only the last task to poll the stream is woken.
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
/// use lessor::{LeaseEvent, Lessor};
///
/// # fn main() -> lessor::Result<()> {
/// let lessor = Lessor::open_in_memory()?;
/// let mut events = lessor.subscribe()?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// lessor.close()?;
/// futures::executor::block_on(async {
///     assert!(matches!(events.next().await, Some(LeaseEvent::Granted { id, .. }) if id == lease.id));
///     assert_eq!(events.next().await, None); // closed
/// });
/// # Ok(()) }
/// ```
pub struct LeaseEvents {
    rx: Receiver<LeaseEvent>,
    /// Where a task polling the stream leaves its waker; emptied by the hub.
    waker: Arc<WakerCell>,
}

impl LeaseEvents {
    /// Waits for the next event. `Err` once the lessor has closed and every event before has
    /// been received.
    pub fn recv(&self) -> Result<LeaseEvent, RecvError> {
        self.rx.recv()
    }

    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<LeaseEvent, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Waits until `deadline` for the next event.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<LeaseEvent, RecvTimeoutError> {
        self.rx.recv_deadline(deadline)
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Result<LeaseEvent, TryRecvError> {
        self.rx.try_recv()
    }

    /// Blocks for each event in turn until the lessor closes.
    pub fn iter(&self) -> impl Iterator<Item = LeaseEvent> + '_ {
        self.rx.iter()
    }

    /// The events that are ready now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = LeaseEvent> + '_ {
        self.rx.try_iter()
    }

    /// The channel the events arrive on, to wait on them with `select!` beside other channels
    /// (crossbeam's, re-exported as [`lessor::crossbeam_channel`](crate::crossbeam_channel)).
    /// Unlike a [`Watch`](crate::Watch), lease events have no history to catch up from, so the
    /// bare channel is the whole stream.
    pub fn receiver(&self) -> &Receiver<LeaseEvent> {
        &self.rx
    }
}

impl Stream for LeaseEvents {
    type Item = LeaseEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LeaseEvent>> {
        poll_recv(&self.rx, &self.waker, cx, || false, || false)
    }
}

impl IntoIterator for LeaseEvents {
    type Item = LeaseEvent;
    type IntoIter = crossbeam_channel::IntoIter<LeaseEvent>;

    fn into_iter(self) -> Self::IntoIter {
        self.rx.into_iter()
    }
}

impl<'a> IntoIterator for &'a LeaseEvents {
    type Item = LeaseEvent;
    type IntoIter = crossbeam_channel::Iter<'a, LeaseEvent>;

    fn into_iter(self) -> Self::IntoIter {
        self.rx.iter()
    }
}

impl std::fmt::Debug for LeaseEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseEvents")
            .field("waiting", &self.rx.len())
            .finish()
    }
}

/// One change made by a committed transaction, in the order it was made.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Granted {
        id: LeaseId,
        ttl: u64,
        revision: u64,
        /// The deadline its record says (its grant's checkpoint, on this clock): the lease's
        /// first deadline, set when it becomes visible, may be later.
        written: u64,
    },
    Revoked {
        id: LeaseId,
        keys: Vec<Vec<u8>>,
        revision: u64,
        cause: RevokeCause,
    },
    Put(KeyValue),
    Deleted {
        key: Vec<u8>,
        revision: u64,
    },
    /// Keys of lease `id` deleted after its revocation, which hid them (`reap.rs`): watch
    /// events, not a lease event.
    Reaped {
        id: LeaseId,
        keys: Vec<Vec<u8>>,
        revision: u64,
        cause: RevokeCause,
    },
}

/// One subscriber's channel, how many events it has missed since its last delivery, and the
/// bytes in its channel.
struct Subscriber {
    tx: Sender<LeaseEvent>,
    waker: Arc<WakerCell>,
    /// An event was sent since the waker was last taken.
    unnotified: bool,
    missed: u64,
    /// The size of each event sent that may not have been received yet, oldest first.
    sizes: VecDeque<usize>,
    /// Their sum.
    bytes: usize,
}

/// What became of an event offered to a subscriber's channel.
enum Sent {
    Delivered,
    /// No room, in events or in bytes.
    Full,
    /// The receiver is gone.
    Gone,
}

impl Subscriber {
    fn new(tx: Sender<LeaseEvent>, waker: Arc<WakerCell>) -> Subscriber {
        Subscriber {
            tx,
            waker,
            unnotified: false,
            missed: 0,
            sizes: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Delivers `event` (of `size` bytes) without blocking, keeping the channel within
    /// `max_bytes`; `false` once the receiver is gone.
    fn offer(&mut self, event: &LeaseEvent, size: usize, max_bytes: usize) -> bool {
        // Forget the sizes of the events received since (the oldest ones: the channel is FIFO).
        while self.sizes.len() > self.tx.len() {
            let received = self.sizes.pop_front().unwrap_or(0);
            self.bytes = self.bytes.saturating_sub(received);
        }
        let mut checked = false;
        if self.missed > 0 {
            // The marker goes in only with the event after it, or the channel would fill with
            // markers one event apart; the two are checked as one.
            if !self.fits(2, EVENT_OVERHEAD.saturating_add(size), max_bytes) {
                self.missed += 1;
                return true;
            }
            checked = true;
            match self.send(
                LeaseEvent::Lagged(self.missed),
                EVENT_OVERHEAD,
                max_bytes,
                true,
            ) {
                Sent::Delivered => self.missed = 0,
                Sent::Full => {
                    self.missed += 1;
                    return true;
                }
                Sent::Gone => return false,
            }
        }
        match self.send(event.clone(), size, max_bytes, checked) {
            Sent::Delivered => true,
            Sent::Full => {
                self.missed += 1;
                true
            }
            Sent::Gone => false,
        }
    }

    /// Whether `events` more events of `bytes` in all fit: room in the channel, and within
    /// `max_bytes` unless the channel is empty.
    fn fits(&self, events: usize, bytes: usize, max_bytes: usize) -> bool {
        let room = self
            .tx
            .capacity()
            .is_none_or(|cap| self.tx.len().saturating_add(events) <= cap);
        room && (self.sizes.is_empty() || self.bytes.saturating_add(bytes) <= max_bytes)
    }

    /// Sends `event` if the channel has room for one more event and for `size` more bytes (an
    /// empty channel always has); `checked`: the caller has made sure of that.
    fn send(&mut self, event: LeaseEvent, size: usize, max_bytes: usize, checked: bool) -> Sent {
        if !checked && !self.fits(1, size, max_bytes) {
            return Sent::Full;
        }
        match self.tx.try_send(event) {
            Ok(()) => {
                self.unnotified = true;
                self.sizes.push_back(size);
                self.bytes = self.bytes.saturating_add(size);
                Sent::Delivered
            }
            Err(TrySendError::Full(_)) => Sent::Full,
            Err(TrySendError::Disconnected(_)) => Sent::Gone,
        }
    }
}

/// The bytes an event is counted for in a subscriber's budget: its keys, and a fixed overhead
/// per event and per key (a key's `Vec`), as the watch history counts.
fn event_size(event: &LeaseEvent) -> usize {
    EVENT_OVERHEAD
        + match event {
            LeaseEvent::Revoked { keys, .. } => keys
                .iter()
                .map(|k| k.len() + std::mem::size_of::<Vec<u8>>())
                .sum(),
            LeaseEvent::Granted { .. } | LeaseEvent::Lagged(_) => 0,
        }
}

/// What the hub guards.
struct HubState {
    subscribers: Vec<Subscriber>,
    watchers: Watchers,
    /// Set by `close`: no more subscriptions or watches.
    closed: bool,
}

/// Hands committed changes to subscribers and watchers; see the module docs.
pub(crate) struct Hub {
    /// Guards the subscribers, the watchers and the watch history. Taken by `publish` under
    /// the writer lock, and by watchers catching up (with no other lock held).
    state: Mutex<HubState>,
    /// Capacity of each subscriber's channel, in events.
    capacity: usize,
    /// Capacity of each subscriber's channel, in bytes (see the module docs).
    capacity_bytes: usize,
}

impl Hub {
    /// A hub for a database at `revision` whose subscribers' channels hold up to `capacity`
    /// events and `capacity_bytes` bytes, keeping up to `history` events (and `history_bytes` of
    /// keys and values) for `watch_from`.
    pub(crate) fn new(
        revision: u64,
        capacity: usize,
        capacity_bytes: usize,
        history: usize,
        history_bytes: usize,
    ) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                subscribers: Vec::new(),
                watchers: Watchers::new(revision, history, history_bytes),
                closed: false,
            }),
            capacity: capacity.max(2),
            capacity_bytes,
        }
    }

    /// A new subscriber to lease events; `None` once closed.
    pub(crate) fn subscribe(&self) -> Option<LeaseEvents> {
        let mut s = self.state.lock();
        if s.closed {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let waker = WakerCell::new();
        s.subscribers.push(Subscriber::new(tx, Arc::clone(&waker)));
        Some(LeaseEvents { rx, waker })
    }

    /// Runs `f` on the watchers, unless closed.
    pub(crate) fn with_watchers<T>(&self, f: impl FnOnce(&mut Watchers) -> T) -> Option<T> {
        let mut s = self.state.lock();
        if s.closed {
            return None;
        }
        Some(f(&mut s.watchers))
    }

    /// Runs `f` on the watchers, even once closed (catch-up and drop of existing watches).
    pub(crate) fn with_watchers_any<T>(&self, f: impl FnOnce(&mut Watchers) -> T) -> T {
        f(&mut self.state.lock().watchers)
    }

    /// Publishes the changes of one committed transaction. Call with the writer lock held.
    pub(crate) fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut wake = Vec::new();
        let mut s = self.state.lock();
        if !s.subscribers.is_empty() {
            let events: Vec<(LeaseEvent, usize)> = changes
                .iter()
                .filter_map(lease_event)
                .map(|e| {
                    let size = event_size(&e);
                    (e, size)
                })
                .collect();
            if !events.is_empty() {
                let max = self.capacity_bytes;
                s.subscribers.retain_mut(|sub| {
                    let kept = events.iter().all(|(e, size)| sub.offer(e, *size, max));
                    if kept && std::mem::take(&mut sub.unnotified) {
                        wake.extend(sub.waker.take());
                    }
                    kept
                });
            }
        }
        s.watchers.publish(changes, &mut wake);
        drop(s);
        wake_all(wake);
    }

    /// Ends every subscription and watch: their channels close once drained.
    /// A subscriber that missed events is told so with a last `Lagged`, if it has room.
    pub(crate) fn close(&self) {
        self.end(false);
    }

    /// As [`close`](Self::close), because a write failed in storage: watches end with
    /// [`WatchEnd::StorageFailed`](crate::WatchEnd::StorageFailed).
    pub(crate) fn fail(&self) {
        self.end(true);
    }

    /// Takes subscriptions and watches again after a failure, at `revision` (see
    /// [`Watchers::reopen`]).
    pub(crate) fn reopen(&self, revision: u64) {
        let mut wake = Vec::new();
        let mut s = self.state.lock();
        s.closed = false;
        s.watchers.reopen(revision, &mut wake);
        drop(s);
        wake_all(wake);
    }

    fn end(&self, failed: bool) {
        let mut wake = Vec::new();
        let mut s = self.state.lock();
        s.closed = true;
        for sub in s.subscribers.drain(..) {
            if sub.missed > 0 {
                let _ = sub.tx.try_send(LeaseEvent::Lagged(sub.missed));
            }
            wake.extend(sub.waker.take());
            // `sub.tx` drops here, before the wake: the woken task sees the end.
        }
        s.watchers.close(failed, &mut wake);
        drop(s);
        wake_all(wake);
    }
}

/// Wakes the tasks of streams that got events or ended. Call with no lock held.
fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

fn lease_event(change: &Change) -> Option<LeaseEvent> {
    match change {
        Change::Granted {
            id, ttl, revision, ..
        } => Some(LeaseEvent::Granted {
            id: *id,
            ttl: Duration::from_nanos(*ttl),
            revision: Revision(*revision),
        }),
        Change::Revoked {
            id,
            keys,
            revision,
            cause,
        } => Some(LeaseEvent::Revoked {
            id: *id,
            keys: keys.clone(),
            revision: Revision(*revision),
            cause: *cause,
        }),
        Change::Put(_) | Change::Deleted { .. } | Change::Reaped { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(n: u64) -> Change {
        Change::Granted {
            id: LeaseId::new(n).unwrap(),
            ttl: 1,
            revision: 0,
            written: 0,
        }
    }

    #[test]
    fn a_slow_subscriber_gets_one_lagged_marker_where_it_missed_events() {
        let hub = Hub::new(0, 2, 1 << 20, 16, 1 << 20);
        let rx = hub.subscribe().unwrap();
        for n in 1..=5 {
            hub.publish(vec![granted(n)]);
        }
        // Room for two: events 1 and 2; 3, 4, 5 are missed.
        let ids = |rx: &LeaseEvents| -> Vec<String> {
            rx.try_iter()
                .map(|e| match e {
                    LeaseEvent::Granted { id, .. } => id.to_string(),
                    LeaseEvent::Lagged(n) => format!("lagged {n}"),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(ids(&rx), ["1", "2"]);
        hub.publish(vec![granted(6)]);
        assert_eq!(ids(&rx), ["lagged 3", "6"]);
        hub.publish(vec![granted(7)]);
        assert_eq!(ids(&rx), ["7"]);
    }

    fn revoked(n: u64, keys: usize, key_bytes: usize) -> Change {
        Change::Revoked {
            id: LeaseId::new(n).unwrap(),
            keys: (0..keys).map(|k| vec![k as u8; key_bytes]).collect(),
            revision: n,
            cause: RevokeCause::Expired,
        }
    }

    #[test]
    fn an_undrained_subscriber_holds_a_bounded_number_of_bytes_then_lags() {
        // 1,024 events of room, but 1 MiB: revocations of 100 keys of 1 KiB (about 100 KiB each).
        let hub = Hub::new(0, 1024, 1 << 20, 16, 1 << 20);
        let rx = hub.subscribe().unwrap();
        for n in 1..=100 {
            hub.publish(vec![revoked(n, 100, 1024)]);
        }
        let held: Vec<LeaseEvent> = rx.try_iter().collect();
        let bytes: usize = held.iter().map(event_size).sum();
        assert!(bytes <= 1 << 20, "{bytes} bytes held");
        assert_eq!(held.len(), 9); // 9 × ~105 KiB fit in 1 MiB
        // Drained: the next event comes after one marker for the 91 missed.
        hub.publish(vec![revoked(101, 1, 1)]);
        let next: Vec<LeaseEvent> = rx.try_iter().collect();
        assert!(
            matches!(
                next[..],
                [LeaseEvent::Lagged(91), LeaseEvent::Revoked { .. }]
            ),
            "{next:?}"
        );
        // Received events free their bytes: the channel takes 9 more, and marks the 10 missed.
        for n in 102..=120 {
            hub.publish(vec![revoked(n, 100, 1024)]);
        }
        assert_eq!(rx.try_iter().count(), 9);
        hub.publish(vec![revoked(121, 1, 1)]);
        let next: Vec<LeaseEvent> = rx.try_iter().collect();
        assert!(
            matches!(
                next[..],
                [LeaseEvent::Lagged(10), LeaseEvent::Revoked { .. }]
            ),
            "{next:?}"
        );
    }

    #[test]
    fn an_event_larger_than_the_budget_still_reaches_an_empty_channel() {
        let hub = Hub::new(0, 16, 1000, 16, 1 << 20);
        let rx = hub.subscribe().unwrap();
        hub.publish(vec![revoked(1, 10, 1000)]);
        hub.publish(vec![revoked(2, 10, 1000)]);
        assert!(matches!(rx.try_recv(), Ok(LeaseEvent::Revoked { .. })));
        assert!(rx.try_recv().is_err()); // the second did not fit
        hub.publish(vec![revoked(3, 10, 1000)]);
        assert!(matches!(rx.try_recv(), Ok(LeaseEvent::Lagged(1))));
        assert!(matches!(rx.try_recv(), Ok(LeaseEvent::Revoked { .. })));
    }

    #[test]
    fn dropped_subscribers_are_forgotten_and_close_ends_the_rest() {
        let hub = Hub::new(0, 4, 1 << 20, 16, 1 << 20);
        let gone = hub.subscribe().unwrap();
        let kept = hub.subscribe().unwrap();
        drop(gone);
        hub.publish(vec![granted(1)]);
        assert_eq!(hub.state.lock().subscribers.len(), 1);
        hub.close();
        assert!(matches!(kept.recv(), Ok(LeaseEvent::Granted { .. })));
        assert!(kept.recv().is_err());
        assert!(hub.subscribe().is_none());
    }
}
