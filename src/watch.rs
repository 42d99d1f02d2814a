//! Watches on keys: [`Watch`], [`WatchEvent`], and the history that `watch_from` replays.
//!
//! # Implementation
//!
//! [`Watchers`] lives inside the event hub (under its mutex). It keeps:
//! - the *history*: the last events (puts and deletes), up to a count and a byte budget, each
//!   with a sequence number; and `compacted`, the highest revision some of whose events have
//!   been dropped from it (at open: the database's revision, since history is not stored);
//! - one *slot* per watch: its prefix, its first revision, a bounded channel, and whether it is
//!   *lagging*.
//!
//! Publishing sends each new event to every matching slot that is not lagging. A slot whose
//! channel is full becomes lagging at the first event it could not take, and publishing skips
//! it from then on, so a slow watcher never blocks a writer. The watch's own `recv` catches it
//! up: when its channel runs dry, it copies the events it missed from the history (under the
//! hub's mutex, so nothing is published in between) until it is current again. A new watch
//! starts as a lagging slot positioned at its first revision, so replaying history and
//! following live events are one mechanism, and nothing is missed or delivered twice.
//!
//! Only when the history has dropped events a lagging watch still needed does the watch end,
//! with [`WatchEnd::Compacted`]; the caller then reads again and watches from there.
//!
//! A watch is also a [`Stream`], and it can be waited on with `select!` through its *ready*
//! channel ([`Watch::ready`]). Each slot holds a [`Notifier`]: publishing takes the wakers of
//! the slots it delivered to (and puts a token in their ready channels) under the hub's mutex,
//! and [`Hub`] wakes them once it has released the mutex; ending a slot (close, reopen) does the
//! same after dropping its sending ends. Lock order: the engine's writer lock, then the hub's
//! mutex, then a slot's waker cell (a leaf, see [`signal`](crate::signal)). A waker is never
//! called with any of them held.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crossbeam_channel::{
    Receiver, RecvError, RecvTimeoutError, Sender, TryRecvError, TrySendError,
};

use crate::error::{Error, Result};
use crate::events::{Change, Hub, RevokeCause};
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::signal::{Notifier, WakerCell, poll_recv};
use futures_core::Stream;

/// Capacity of each watch's channel; beyond it, the watch catches up from the history.
///
/// The channel is crossbeam's unbounded (linked blocks, allocated as events arrive) held to
/// this bound by its only sender, the hub ([`Slot::send`]): a bounded channel would allocate
/// all its slots up front, ~28 KiB per idle watch (measured by `benches/async_api.rs`).
const CHANNEL: usize = 256;

/// Bytes an event is counted for in the history budget, besides its key and value.
pub(crate) const EVENT_OVERHEAD: usize = 96;

/// A change to a key, delivered by a [`Watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The key was written; its revision is `kv.mod_revision`.
    Put(KeyValue),
    /// The key was deleted.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The revision of the deletion.
        revision: Revision,
        /// Why it was deleted.
        cause: DeleteCause,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &[u8] {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    fn size(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                WatchEvent::Put(kv) => kv.key.len() + kv.value.len(),
                WatchEvent::Delete { key, .. } => key.len(),
            }
    }
}

/// Why a key was deleted. (etcd's watchers cannot tell; ours can.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeleteCause {
    /// By [`delete`](crate::Lessor::delete) or a transaction.
    Deleted,
    /// Its lease was revoked.
    LeaseRevoked(LeaseId),
    /// Its lease expired.
    LeaseExpired(LeaseId),
    /// The backend does not say. Every delete seen by a watch on etcd (`EtcdLessor`) has this
    /// cause: etcd's delete events carry the key and the revision only, the same for a
    /// `delete`, a revocation and an expiry. The embedded [`Lessor`](crate::Lessor) never
    /// reports it.
    Unknown,
}

/// Why a [`Watch`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WatchEnd {
    /// The lessor was closed.
    Closed,
    /// The watch fell so far behind that the history no longer holds events it has not seen.
    /// Read the keys again ([`Lessor::range_with_revision`](crate::Lessor::range_with_revision))
    /// and watch from the revision after that read.
    Compacted,
    /// A write failed in storage. Events of commits that had not reached the disk may have been
    /// sent and then lost with the failure; once the lessor has reloaded from its file
    /// ([`Lessor::health`](crate::Lessor::health), [`Lessor::recover`](crate::Lessor::recover)),
    /// read the keys again and watch from there, as after `Compacted`.
    StorageFailed,
}

pub(crate) const RUNNING: u8 = 0;
pub(crate) const ENDED_CLOSED: u8 = 1;
pub(crate) const ENDED_COMPACTED: u8 = 2;
pub(crate) const ENDED_FAILED: u8 = 3;

/// A stream of changes to the keys under a prefix, from
/// [`Lessor::watch`](crate::Lessor::watch) or [`Lessor::watch_from`](crate::Lessor::watch_from).
///
/// Events arrive after their transaction has committed, in revision order (events of one
/// revision in the order the transaction made them). The stream ends when the lessor closes,
/// or, for a consumer so slow that the history dropped what it had not read, with
/// [`WatchEnd::Compacted`]; [`ended`](Watch::ended) tells which. A watch that is behind when the
/// lessor closes still receives everything committed before the close. Dropping the `Watch`
/// cancels it. A `Watch` has one consumer: it can move between threads but not be shared.
///
/// ```
/// use std::time::Duration;
/// use lessor::{DeleteCause, Lessor, WatchEvent};
///
/// # fn main() -> lessor::Result<()> {
/// let lessor = Lessor::open_in_memory()?;
/// let watch = lessor.watch("/services/")?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// lessor.put_with_lease("/services/api/1", "10.0.0.7:8080", lease.id)?;
/// lessor.revoke(lease.id)?;
///
/// let WatchEvent::Put(kv) = watch.recv().unwrap() else { panic!() };
/// assert_eq!(kv.value, b"10.0.0.7:8080");
/// let WatchEvent::Delete { cause, .. } = watch.recv().unwrap() else { panic!() };
/// assert_eq!(cause, DeleteCause::LeaseRevoked(lease.id));
/// # Ok(()) }
/// ```
pub struct Watch {
    source: Source,
    rx: Receiver<WatchEvent>,
    ended: Arc<AtomicU8>,
    /// Where a task polling the stream leaves its waker.
    waker: Arc<WakerCell>,
    /// A token whenever an event may be waiting; disconnects when the watch ends.
    ready: Receiver<()>,
    /// One consumer at a time (`Send`, not `Sync`): a second thread blocked in `recv` could
    /// sleep through events the first left waiting in the history.
    _one_consumer: std::marker::PhantomData<std::cell::Cell<()>>,
}

/// Where a [`Watch`]'s events come from.
enum Source {
    /// The embedded lessor's hub; `id` names the watch's slot there.
    Hub { hub: Arc<Hub>, id: u64 },
    /// Another backend (etcd) feeding the channel from its own task. Dropping the guard stops
    /// that task; the channel then disconnects.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Remote(#[allow(dead_code)] Box<dyn Send>),
}

impl Watch {
    /// A watch fed by another backend: `rx` receives its events, `ended` holds its end code
    /// ([`RUNNING`], [`ENDED_CLOSED`] or [`ENDED_COMPACTED`], set before the sending end is
    /// dropped), and dropping `guard` stops whatever feeds the channel.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    /// `waker` and `ready` come with the [`Notifier`] that the backend notifies after each
    /// event it sends and drops when the watch ends.
    pub(crate) fn remote(
        rx: Receiver<WatchEvent>,
        ended: Arc<AtomicU8>,
        (waker, ready): (Arc<WakerCell>, Receiver<()>),
        guard: Box<dyn Send>,
    ) -> Watch {
        Watch {
            source: Source::Remote(guard),
            rx,
            ended,
            waker,
            ready,
            _one_consumer: std::marker::PhantomData,
        }
    }

    /// Waits for the next event. `Err` once the watch has ended and every event before the end
    /// has been received.
    pub fn recv(&self) -> Result<WatchEvent, RecvError> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Ok(event),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => {}
            }
            if !self.catch_up() {
                return self.rx.recv();
            }
        }
    }

    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<WatchEvent, RecvTimeoutError> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Ok(event),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if !self.catch_up() {
                return self.rx.recv_timeout(timeout);
            }
        }
    }

    /// The next event if one is ready.
    pub fn try_recv(&self) -> Result<WatchEvent, TryRecvError> {
        loop {
            match self.rx.try_recv() {
                Err(TryRecvError::Empty) if self.catch_up() => {}
                other => return other,
            }
        }
    }

    /// Blocks for each event in turn until the watch ends.
    pub fn iter(&self) -> impl Iterator<Item = WatchEvent> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }

    /// A channel to wait on the watch with `select!`, beside other channels. It holds a token
    /// whenever an event may be waiting, and disconnects once the watch has ended. When it is
    /// ready, take the events with [`try_recv`](Watch::try_recv) until it says
    /// [`Empty`](TryRecvError::Empty) (or `Disconnected`: the watch has ended), then wait again.
    ///
    /// The events themselves are not on this channel: a watch that fell behind catches up from
    /// the history inside `try_recv`, which a bare event channel could not do. A token may
    /// be stale (the events it announced already taken): `try_recv` then says `Empty`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lessor::Lessor;
    /// use lessor::crossbeam_channel::{after, select};
    ///
    /// # fn main() -> lessor::Result<()> {
    /// let lessor = Lessor::open_in_memory()?;
    /// let watch = lessor.watch("/jobs/")?;
    /// lessor.put("/jobs/1", "queued")?;
    /// let mut seen = Vec::new();
    /// select! {
    ///     recv(watch.ready()) -> _ => {
    ///         while let Ok(event) = watch.try_recv() {
    ///             seen.push(event.key().to_vec());
    ///         }
    ///     }
    ///     recv(after(Duration::from_secs(5))) -> _ => panic!("no event"),
    /// }
    /// assert_eq!(seen, [b"/jobs/1".to_vec()]);
    /// # Ok(()) }
    /// ```
    pub fn ready(&self) -> &Receiver<()> {
        &self.ready
    }

    /// Why the watch ended, once it has.
    pub fn ended(&self) -> Option<WatchEnd> {
        match self.ended.load(Ordering::Acquire) {
            ENDED_CLOSED => Some(WatchEnd::Closed),
            ENDED_COMPACTED => Some(WatchEnd::Compacted),
            ENDED_FAILED => Some(WatchEnd::StorageFailed),
            _ => None,
        }
    }

    /// Copies missed events from the history into the channel if the watch is lagging;
    /// `false` if it was not (so waiting on the channel is right).
    fn catch_up(&self) -> bool {
        match &self.source {
            Source::Hub { hub, id } => hub.with_watchers_any(|w| w.catch_up(*id)),
            Source::Remote(_) => false,
        }
    }
}

/// The events, as [`recv`](Watch::recv) returns them, without blocking a thread: the stream
/// ends (`None`) when the watch does ([`ended`](Watch::ended) says why). Works on any executor.
///
/// ```
/// use futures::StreamExt;
/// use lessor::{Lessor, WatchEvent};
///
/// # fn main() -> lessor::Result<()> {
/// let lessor = Lessor::open_in_memory()?;
/// let mut watch = lessor.watch("/config/")?;
/// lessor.put("/config/mode", "fast")?;
/// lessor.close()?;
/// futures::executor::block_on(async {
///     let Some(WatchEvent::Put(kv)) = watch.next().await else { panic!() };
///     assert_eq!(kv.value, b"fast");
///     assert_eq!(watch.next().await, None); // the lessor closed
/// });
/// # Ok(()) }
/// ```
impl Stream for Watch {
    type Item = WatchEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        let this = self.get_mut();
        poll_recv(&this.rx, &this.waker, cx, || this.catch_up(), || false)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Source::Hub { hub, id } = &self.source {
            hub.with_watchers_any(|w| w.remove(*id));
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = match &self.source {
            Source::Hub { id, .. } => Some(*id),
            Source::Remote(_) => None,
        };
        f.debug_struct("Watch")
            .field("id", &id)
            .field("ended", &self.ended())
            .finish()
    }
}

/// One watch, as the hub sees it.
struct Slot {
    id: u64,
    prefix: Vec<u8>,
    /// Only the key `prefix` itself, not the keys under it.
    exact: bool,
    /// Events below this revision are not for this watch.
    start: u64,
    tx: Sender<WatchEvent>,
    /// Set when the channel was full: publishing skips the slot; `catch_up` copies from
    /// `next_seq` on.
    lagging: bool,
    /// The sequence number of the first event this watch has not been given.
    next_seq: u64,
    ended: Arc<AtomicU8>,
    notifier: Notifier,
    /// An event was sent since the last notification.
    unnotified: bool,
}

/// Whether `key` is for a watch of `prefix` (`exact`: of that key alone).
fn matches(prefix: &[u8], exact: bool, key: &[u8]) -> bool {
    if exact {
        key == prefix
    } else {
        key.starts_with(prefix)
    }
}

impl Slot {
    /// Sends `event` unless the channel holds [`CHANNEL`] events already. The hub is the only
    /// sender, under its mutex, and the receiver only takes events out, so the check holds.
    fn send(&self, event: &WatchEvent) -> std::result::Result<(), TrySendError<()>> {
        if self.tx.len() >= CHANNEL {
            // A disconnected receiver is found at the next send that has room.
            return Err(TrySendError::Full(()));
        }
        self.tx
            .send(event.clone())
            .map_err(|_| TrySendError::Disconnected(()))
    }

    fn wants(&self, event: &WatchEvent) -> bool {
        event.revision().get() >= self.start && matches(&self.prefix, self.exact, event.key())
    }

    /// Offers the event at `seq`; `Err(())` if the receiver is gone.
    fn offer(&mut self, seq: u64, event: &WatchEvent) -> std::result::Result<(), ()> {
        if self.lagging || !self.wants(event) {
            return Ok(());
        }
        match self.send(event) {
            Ok(()) => {
                self.unnotified = true;
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.lagging = true;
                self.next_seq = seq;
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        }
    }
}

/// The watch history and the watches; guarded by the hub's mutex.
pub(crate) struct Watchers {
    history: VecDeque<WatchEvent>,
    /// Sequence number of `history[0]`.
    first_seq: u64,
    /// Bytes the history holds, as counted by `WatchEvent::size`.
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The highest revision some of whose events are no longer in the history.
    compacted: u64,
    /// The revision of the last published change (or of the database at open).
    last: u64,
    slots: Vec<Slot>,
    next_id: u64,
    closed: bool,
}

impl Watchers {
    pub(crate) fn new(revision: u64, max_events: usize, max_bytes: usize) -> Watchers {
        Watchers {
            history: VecDeque::new(),
            first_seq: 0,
            bytes: 0,
            max_events,
            max_bytes,
            compacted: revision,
            last: revision,
            slots: Vec::new(),
            next_id: 0,
            closed: false,
        }
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.history.len() as u64
    }

    /// Registers a watch of `prefix` (`exact`: of that key alone) from revision `from` (`None`:
    /// after the last published).
    pub(crate) fn add(
        &mut self,
        hub: &Arc<Hub>,
        prefix: &[u8],
        exact: bool,
        from: Option<u64>,
    ) -> Result<Watch> {
        let start = from.unwrap_or(self.last.saturating_add(1));
        if start <= self.compacted {
            return Err(Error::Compacted {
                requested: Revision(start),
                oldest: Revision(self.compacted.saturating_add(1)),
            });
        }
        let skip = self.history.partition_point(|e| e.revision().get() < start);
        // Position at the first event this watch wants, so that trimming events of other
        // prefixes cannot end it as compacted.
        let skip = skip
            + self
                .history
                .range(skip..)
                .take_while(|e| !matches(prefix, exact, e.key()))
                .count();
        let next_seq = self.first_seq + skip as u64;
        let (tx, rx) = crossbeam_channel::unbounded();
        let ended = Arc::new(AtomicU8::new(RUNNING));
        let (notifier, waker, ready) = Notifier::new();
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push(Slot {
            id,
            prefix: prefix.to_vec(),
            exact,
            start,
            tx,
            lagging: next_seq < self.end_seq(),
            next_seq,
            ended: Arc::clone(&ended),
            notifier,
            unnotified: false,
        });
        Ok(Watch {
            source: Source::Hub {
                hub: Arc::clone(hub),
                id,
            },
            rx,
            ended,
            waker,
            ready,
            _one_consumer: std::marker::PhantomData,
        })
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.slots.retain(|s| s.id != id);
    }

    /// Appends the events of one committed transaction to the history and sends them to the
    /// watches that are keeping up; adds the wakers of those it sent to to `wake`.
    pub(crate) fn publish(&mut self, changes: Vec<Change>, wake: &mut Vec<Waker>) {
        let first_new = self.end_seq();
        for change in changes {
            match change {
                Change::Granted { .. } => {}
                Change::Put(kv) => self.push(WatchEvent::Put(kv)),
                Change::Deleted { key, revision } => self.push(WatchEvent::Delete {
                    key,
                    revision: Revision(revision),
                    cause: DeleteCause::Deleted,
                }),
                Change::Revoked {
                    id,
                    keys,
                    revision,
                    cause,
                }
                | Change::Reaped {
                    id,
                    keys,
                    revision,
                    cause,
                } => {
                    let cause = match cause {
                        RevokeCause::Revoked => DeleteCause::LeaseRevoked(id),
                        RevokeCause::Expired => DeleteCause::LeaseExpired(id),
                    };
                    for key in keys {
                        self.push(WatchEvent::Delete {
                            key,
                            revision: Revision(revision),
                            cause,
                        });
                    }
                }
            }
        }
        let from = usize::try_from(first_new - self.first_seq).unwrap_or(usize::MAX);
        let history = &self.history;
        let first_seq = self.first_seq;
        self.slots.retain_mut(|slot| {
            let kept = history
                .iter()
                .enumerate()
                .skip(from)
                .all(|(i, event)| slot.offer(first_seq + i as u64, event).is_ok());
            if kept && std::mem::take(&mut slot.unnotified) {
                wake.extend(slot.notifier.notify());
            }
            kept
        });
        self.trim();
    }

    fn push(&mut self, event: WatchEvent) {
        self.last = self.last.max(event.revision().get());
        self.bytes += event.size();
        self.history.push_back(event);
    }

    /// Drops the oldest events beyond the history's budget.
    fn trim(&mut self) {
        while self.history.len() > self.max_events
            || (self.bytes > self.max_bytes && !self.history.is_empty())
        {
            if let Some(old) = self.history.pop_front() {
                self.bytes -= old.size();
                self.first_seq += 1;
                self.compacted = self.compacted.max(old.revision().get());
            }
        }
    }

    /// Catches watch `id` up from the history; see [`Watch::catch_up`].
    fn catch_up(&mut self, id: u64) -> bool {
        let Some(pos) = self.slots.iter().position(|s| s.id == id) else {
            return false;
        };
        let end = self.end_seq();
        let slot = &mut self.slots[pos];
        if !slot.lagging {
            return false;
        }
        if slot.next_seq < self.first_seq {
            slot.ended.store(ENDED_COMPACTED, Ordering::Release);
            self.slots.swap_remove(pos);
            return true;
        }
        slot.lagging = false;
        let mut seq = slot.next_seq;
        while seq < end {
            let i = usize::try_from(seq - self.first_seq).unwrap_or(usize::MAX);
            let Some(event) = self.history.get(i) else {
                break;
            };
            if slot.wants(event) {
                match slot.send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        slot.lagging = true;
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.slots.swap_remove(pos);
                        return true;
                    }
                }
            }
            seq += 1;
        }
        slot.next_seq = seq;
        if self.closed && !slot.lagging {
            self.slots.swap_remove(pos); // caught up with everything before close: end it
        }
        true
    }

    /// Ends every watch: channels close once drained. `failed`: because storage failed. Adds
    /// the watches' wakers to `wake`.
    pub(crate) fn close(&mut self, failed: bool, wake: &mut Vec<Waker>) {
        self.closed = true;
        let why = if failed { ENDED_FAILED } else { ENDED_CLOSED };
        for slot in &self.slots {
            slot.ended.store(why, Ordering::Release);
            wake.extend(slot.notifier.notify());
        }
        // A lagging watch keeps its slot until it has caught up with what was committed.
        self.slots.retain(|s| s.lagging);
    }

    /// After a failure closed the watches, starts afresh at `revision` (what the reloaded file
    /// says): the history, which may hold events of commits that were lost, is dropped, and so
    /// are watches still catching up on it. Watch ids and event sequence numbers go on from
    /// where they were, so a stale `Watch` can never touch a new one's slot.
    /// Adds the wakers of the watches it ends to `wake`.
    pub(crate) fn reopen(&mut self, revision: u64, wake: &mut Vec<Waker>) {
        let end = self.end_seq();
        wake.extend(self.slots.iter().filter_map(|s| s.notifier.notify()));
        self.slots.clear();
        self.history.clear();
        self.bytes = 0;
        self.first_seq = end;
        self.compacted = revision;
        self.last = revision;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Hub;

    fn put(rev: u64) -> Change {
        Change::Put(KeyValue {
            key: b"/k".to_vec(),
            value: Vec::new(),
            lease: None,
            create_revision: Revision(1),
            mod_revision: Revision(rev),
            version: rev,
        })
    }

    #[test]
    fn dropping_a_watch_removes_its_slot() {
        let hub = Arc::new(Hub::new(0, 4, 1 << 20, 16, 1 << 20));
        let w = hub
            .with_watchers(|ws| ws.add(&hub, b"/", false, None))
            .unwrap()
            .unwrap();
        assert_eq!(hub.with_watchers(|ws| ws.slots.len()), Some(1));
        drop(w);
        assert_eq!(hub.with_watchers(|ws| ws.slots.len()), Some(0));
    }

    #[test]
    fn dropping_a_pending_stream_removes_its_slot() {
        let hub = Arc::new(Hub::new(0, 4, 1 << 20, 16, 1 << 20));
        let mut w = hub
            .with_watchers(|ws| ws.add(&hub, b"/", false, None))
            .unwrap()
            .unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut w).poll_next(&mut cx).is_pending());
        drop(w);
        assert_eq!(hub.with_watchers(|ws| ws.slots.len()), Some(0));
        hub.publish(vec![put(1)]); // nobody to wake, nothing to send
    }

    #[test]
    fn a_key_watch_wants_that_key_only() {
        assert!(matches(b"/job1", true, b"/job1"));
        assert!(!matches(b"/job1", true, b"/job10"));
        assert!(matches(b"/job1", false, b"/job10"));
    }

    #[test]
    fn a_full_channel_makes_the_slot_lag_until_the_watch_catches_up() {
        let hub = Arc::new(Hub::new(0, 4, 1 << 20, 10_000, 1 << 20));
        let w = hub
            .with_watchers(|ws| ws.add(&hub, b"/", false, None))
            .unwrap()
            .unwrap();
        for rev in 1..=(CHANNEL as u64 + 10) {
            hub.publish(vec![put(rev)]);
        }
        let lagging = |hub: &Hub| hub.with_watchers(|ws| ws.slots[0].lagging).unwrap();
        assert!(lagging(&hub));
        for rev in 1..=(CHANNEL as u64 + 10) {
            assert_eq!(w.try_recv().map(|e| e.revision().get()), Ok(rev));
        }
        assert!(!lagging(&hub));
        assert_eq!(w.try_recv(), Err(TryRecvError::Empty));
    }
}
