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

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::lease::{KeyValue, LeaseId, Revision};
use crate::watch::Watchers;

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
    /// The subscriber's channel was full and this many events were dropped here: the
    /// subscriber was too slow. Later events follow as usual. A subscriber still behind when
    /// the lessor closes gets this last, if its channel has room by then.
    Lagged(u64),
}

/// One change made by a committed transaction, in the order it was made.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Granted {
        id: LeaseId,
        ttl: u64,
        revision: u64,
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
}

/// One subscriber's channel and how many events it has missed since its last delivery.
struct Subscriber {
    tx: Sender<LeaseEvent>,
    missed: u64,
}

impl Subscriber {
    /// Delivers `event` without blocking; `false` once the receiver is gone.
    fn offer(&mut self, event: &LeaseEvent) -> bool {
        if self.missed > 0 {
            match self.tx.try_send(LeaseEvent::Lagged(self.missed)) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
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
    /// Capacity of each subscriber's channel.
    capacity: usize,
}

impl Hub {
    /// A hub for a database at `revision`, keeping up to `history` events (and `history_bytes`
    /// of keys and values) for `watch_from`.
    pub(crate) fn new(revision: u64, capacity: usize, history: usize, history_bytes: usize) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                subscribers: Vec::new(),
                watchers: Watchers::new(revision, history, history_bytes),
                closed: false,
            }),
            capacity: capacity.max(2),
        }
    }

    /// A new subscriber to lease events; `None` once closed.
    pub(crate) fn subscribe(&self) -> Option<Receiver<LeaseEvent>> {
        let mut s = self.state.lock();
        if s.closed {
            return None;
        }
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        s.subscribers.push(Subscriber { tx, missed: 0 });
        Some(rx)
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
        let mut s = self.state.lock();
        if !s.subscribers.is_empty() {
            let events: Vec<LeaseEvent> = changes.iter().filter_map(lease_event).collect();
            if !events.is_empty() {
                s.subscribers
                    .retain_mut(|sub| events.iter().all(|e| sub.offer(e)));
            }
        }
        s.watchers.publish(changes);
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
        let mut s = self.state.lock();
        s.closed = false;
        s.watchers.reopen(revision);
    }

    fn end(&self, failed: bool) {
        let mut s = self.state.lock();
        s.closed = true;
        for sub in s.subscribers.drain(..) {
            if sub.missed > 0 {
                let _ = sub.tx.try_send(LeaseEvent::Lagged(sub.missed));
            }
        }
        s.watchers.close(failed);
    }
}

fn lease_event(change: &Change) -> Option<LeaseEvent> {
    match change {
        Change::Granted { id, ttl, revision } => Some(LeaseEvent::Granted {
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
        Change::Put(_) | Change::Deleted { .. } => None,
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
        }
    }

    #[test]
    fn a_slow_subscriber_gets_one_lagged_marker_where_it_missed_events() {
        let hub = Hub::new(0, 2, 16, 1 << 20);
        let rx = hub.subscribe().unwrap();
        for n in 1..=5 {
            hub.publish(vec![granted(n)]);
        }
        // Room for two: events 1 and 2; 3, 4, 5 are missed.
        let ids = |rx: &Receiver<LeaseEvent>| -> Vec<String> {
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

    #[test]
    fn dropped_subscribers_are_forgotten_and_close_ends_the_rest() {
        let hub = Hub::new(0, 4, 16, 1 << 20);
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
