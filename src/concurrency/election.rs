//! [`Election`]: etcd's leader election on a [`Session`], and [`Observe`], the stream of its
//! leaders.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

use super::queue::{self, Turn};
use super::session::Session;
use crate::error::{Error, Result};
use crate::lease::{KeyValue, Revision};
use crate::lease_store::LeaseStore;
use crate::txn::{CmpOp, Compare, Op, Txn};
use crate::watch::{Watch, WatchEnd, WatchEvent};

/// A leader election: campaigners queue under a prefix, first come first served, and the first
/// is the leader, with a value it can change. etcd's `concurrency.Election`, with the same keys.
///
/// A campaigner's key is `prefix/<lease id in hex>`, holding its value, under its session's
/// lease; the leader is the key with the lowest create revision, as for a
/// [`Mutex`](super::Mutex). A leader whose session is lost (its process died, its lease
/// expired) is replaced by the next campaigner within one TTL.
///
/// ```
/// use std::time::Duration;
/// use lessor::{Error, Lessor};
/// use lessor::concurrency::{Election, Session};
///
/// # fn main() -> lessor::Result<()> {
/// let store = Lessor::open_in_memory()?;
/// let (s1, s2) = (
///     Session::new(&store, Duration::from_secs(10))?,
///     Session::new(&store, Duration::from_secs(10))?,
/// );
/// let mut first = Election::new(&s1, "/services/scheduler")?;
/// let mut second = Election::new(&s2, "/services/scheduler")?;
/// let mut leaders = first.observe()?;
///
/// first.campaign("10.0.0.1:7000")?;                    // no one before it: leader at once
/// assert!(matches!(second.proclaim("me"), Err(Error::NotLeader)));
/// first.proclaim("10.0.0.1:7001")?;                    // a new value, still the leader
///
/// std::thread::scope(|s| {
///     let next = s.spawn(|| second.campaign("10.0.0.2:7000")); // waits behind `first`
///     std::thread::sleep(Duration::from_millis(20));
///     first.resign()?;                                 // hands over
///     next.join().unwrap()
/// })?;
/// let leader = second.leader()?.unwrap();
/// assert_eq!(leader.value, b"10.0.0.2:7000");
///
/// // Every leader and value, in order:
/// let seen: Vec<_> = leaders.by_ref().take(3).map(|kv| kv.map(|kv| kv.value)).collect::<lessor::Result<_>>()?;
/// assert_eq!(seen, [&b"10.0.0.1:7000"[..], b"10.0.0.1:7001", b"10.0.0.2:7000"]);
/// # Ok(()) }
/// ```
pub struct Election<'a, S: LeaseStore + ?Sized> {
    session: &'a Session<'a, S>,
    /// The queue's prefix, with its `/`.
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// The create revision of `key` while this campaigner leads.
    leading: Option<Revision>,
}

impl<'a, S: LeaseStore + ?Sized> Election<'a, S> {
    /// An election under `prefix` for `session`; nothing is written until
    /// [`campaign`](Election::campaign). As in etcd, `/` is appended to `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for an empty prefix.
    pub fn new(session: &'a Session<'a, S>, prefix: impl AsRef<[u8]>) -> Result<Self> {
        let prefix = queue::queue_prefix(prefix.as_ref())?;
        let key = queue::participant_key(&prefix, session.lease());
        Ok(Election {
            session,
            prefix,
            key,
            leading: None,
        })
    }

    /// Campaigns with `value` and waits until elected: campaigners are elected in the order
    /// they called `campaign`. A session already campaigning keeps its place and takes the new
    /// value.
    ///
    /// # Errors
    /// [`Error::SessionExpired`] if the session is lost while waiting; [`Error::Closed`] if the
    /// store closes; the store's errors. On an error, the key this call created is removed.
    pub fn campaign(&mut self, value: impl AsRef<[u8]>) -> Result<()> {
        let value = value.as_ref();
        let joined = queue::join(self.session, &self.prefix, &self.key, value)?;
        let rev = joined.kv.create_revision;
        let mut waited = match joined.turn {
            Turn::First => Ok(()),
            Turn::Gone => Err(Error::SessionExpired(self.session.lease())),
            Turn::After(before) => queue::wait(
                self.session,
                &self.prefix,
                &self.key,
                rev,
                before,
                joined.revision,
                None,
            ),
        };
        if waited.is_ok() && !joined.created && joined.kv.value != value {
            waited = self.put_value(rev, value);
        }
        match waited {
            Ok(()) => {
                self.leading = Some(rev);
                Ok(())
            }
            Err(e) => {
                if joined.created {
                    let _ = queue::leave(self.session, &self.key, rev);
                }
                Err(e)
            }
        }
    }

    /// Changes the leader's value, while this campaigner is the leader.
    ///
    /// # Errors
    /// [`Error::NotLeader`] if it is not the leader (it never won, resigned, or its key was
    /// deleted with its session's lease); the store's errors.
    pub fn proclaim(&mut self, value: impl AsRef<[u8]>) -> Result<()> {
        let rev = self.leading.ok_or(Error::NotLeader)?;
        self.put_value(rev, value.as_ref()).inspect_err(|e| {
            if matches!(e, Error::NotLeader | Error::SessionExpired(_)) {
                self.leading = None;
            }
        })
    }

    /// Writes `value` to our key if it is still the one created at `rev`.
    fn put_value(&self, rev: Revision, value: &[u8]) -> Result<()> {
        let lease = self.session.lease();
        let txn = Txn::new()
            .when(Compare::create_revision(&self.key, CmpOp::Equal, rev))
            .then(Op::put_with_lease(&self.key, value, lease));
        let result = self
            .session
            .store()
            .txn(txn)
            .map_err(|e| queue::lost(e, lease))?;
        if result.succeeded {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Gives up leadership: deletes this campaigner's key, which elects the next one. Does
    /// nothing if it is not the leader.
    ///
    /// # Errors
    /// The store's errors (it is then still the leader, unless its session's lease ends).
    pub fn resign(&mut self) -> Result<()> {
        if let Some(rev) = self.leading {
            queue::leave(self.session, &self.key, rev)?;
            self.leading = None;
        }
        Ok(())
    }

    /// The current leader's key (with its value, revisions and lease), or `None` if nobody
    /// campaigns.
    ///
    /// # Errors
    /// The store's errors.
    pub fn leader(&self) -> Result<Option<KeyValue>> {
        let all = self.session.store().range(&self.prefix)?;
        Ok(queue::first(&all).cloned())
    }

    /// Every leader from now on, in order: the current one first (if any), then each new
    /// leader and each new value of a leader, as they commit. See [`Observe`].
    ///
    /// # Errors
    /// The store's errors.
    pub fn observe(&self) -> Result<Observe<'a, S>> {
        Observe::start(self.session.store(), self.prefix.clone())
    }

    /// This campaigner's key: `prefix/<lease id in hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The create revision of the leader's key while this campaigner leads (a fencing token,
    /// as [`Mutex::revision`](super::Mutex::revision)); `None` otherwise.
    pub fn revision(&self) -> Option<Revision> {
        self.leading
    }
}

impl<S: LeaseStore + ?Sized> fmt::Debug for Election<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("leading", &self.leading)
            .finish()
    }
}

/// The leaders of an [`Election`], in order and without gaps, from
/// [`Election::observe`]: each item is the leader's key (value, create and mod revision,
/// lease) whenever the leader or its value changes.
///
/// It replays every change under the election's prefix (one watch, from the revision of a
/// first read), so a leader that held office for a single revision is still seen; changes that
/// commit together (one revision) count as one. Times with no leader are not reported: the
/// next item is the next leader.
///
/// An iterator of `Result<KeyValue>`: it blocks for the next leader, and ends after its first
/// error ([`Error::Closed`] when the store closes, [`Error::Compacted`] if the store's watch
/// history dropped changes the observer had not read yet).
pub struct Observe<'a, S: LeaseStore + ?Sized> {
    store: &'a S,
    prefix: Vec<u8>,
    watch: Watch,
    tracker: Tracker,
    /// The leader found by the first read, reported first.
    initial: Option<KeyValue>,
    /// An event read past the end of a revision, applied next.
    ahead: Option<WatchEvent>,
    /// The revision after the last one applied.
    next: Revision,
    failed: bool,
}

impl<'a, S: LeaseStore + ?Sized> Observe<'a, S> {
    fn start(store: &'a S, prefix: Vec<u8>) -> Result<Self> {
        let snapshot = store.range_with_revision(&prefix)?;
        let watch = store.watch_from(&prefix, snapshot.revision.next())?;
        let mut tracker = Tracker::default();
        for kv in snapshot.kvs {
            tracker.apply(&WatchEvent::Put(kv));
        }
        Ok(Observe {
            store,
            initial: tracker.changed(),
            prefix,
            watch,
            tracker,
            ahead: None,
            next: snapshot.revision.next(),
            failed: false,
        })
    }

    /// Waits for the next leader (or new value of the leader).
    ///
    /// # Errors
    /// [`Error::Closed`] once the store closes, [`Error::Compacted`] if changes were lost.
    pub fn recv(&mut self) -> Result<KeyValue> {
        loop {
            if let Some(kv) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(kv);
            }
        }
    }

    /// Waits up to `timeout` for the next leader; `Ok(None)` if none came.
    ///
    /// # Errors
    /// As [`recv`](Observe::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<KeyValue>> {
        let deadline = Instant::now().checked_add(timeout);
        if let Some(kv) = self.initial.take() {
            return Ok(Some(kv));
        }
        loop {
            let event = match self.ahead.take() {
                Some(e) => e,
                None => {
                    let left =
                        deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
                    match self.watch.recv_timeout(left) {
                        Ok(e) => e,
                        Err(RecvTimeoutError::Timeout) => return Ok(None),
                        Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
                    }
                }
            };
            let rev = event.revision();
            self.tracker.apply(&event);
            // The rest of the same revision (one transaction, one revocation) first.
            loop {
                match self.watch.try_recv() {
                    Ok(e) if e.revision() == rev => self.tracker.apply(&e),
                    Ok(e) => {
                        self.ahead = Some(e);
                        break;
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.next = rev.next();
            if let Some(kv) = self.tracker.changed() {
                return Ok(Some(kv));
            }
        }
    }

    /// Why the watch ended, as an error.
    fn ended(&self) -> Error {
        match self.watch.ended() {
            Some(WatchEnd::Compacted) => match self.store.watch_from(&self.prefix, self.next) {
                Err(e) => e,
                Ok(_) => Error::Compacted {
                    requested: self.next,
                    oldest: self.next,
                },
            },
            _ => Error::Closed,
        }
    }
}

impl<S: LeaseStore + ?Sized> Iterator for Observe<'_, S> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.recv();
        self.failed = item.is_err();
        Some(item)
    }
}

impl<S: LeaseStore + ?Sized> fmt::Debug for Observe<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observe")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("next", &self.next)
            .finish()
    }
}

/// The election's keys as replayed from a watch, and the leader they make. Pure.
#[derive(Default)]
struct Tracker {
    keys: BTreeMap<Vec<u8>, KeyValue>,
    /// The leader last reported: key, create revision, mod revision.
    shown: Option<(Vec<u8>, Revision, Revision)>,
}

impl Tracker {
    fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Put(kv) => {
                self.keys.insert(kv.key.clone(), kv.clone());
            }
            WatchEvent::Delete { key, .. } => {
                self.keys.remove(key);
            }
        }
    }

    /// The leader, if it (or its value) changed since the last call.
    fn changed(&mut self) -> Option<KeyValue> {
        let Some(leader) = self
            .keys
            .values()
            .min_by_key(|kv| kv.create_revision)
            .cloned()
        else {
            self.shown = None;
            return None;
        };
        let id = (
            leader.key.clone(),
            leader.create_revision,
            leader.mod_revision,
        );
        if self.shown.as_ref() == Some(&id) {
            return None;
        }
        self.shown = Some(id);
        Some(leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::DeleteCause;

    fn put(key: &str, create: u64, rev: u64, value: &str) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease: None,
            create_revision: Revision(create),
            mod_revision: Revision(rev),
            version: rev - create + 1,
        })
    }

    fn delete(key: &str, rev: u64) -> WatchEvent {
        WatchEvent::Delete {
            key: key.as_bytes().to_vec(),
            revision: Revision(rev),
            cause: DeleteCause::Deleted,
        }
    }

    fn leader(t: &mut Tracker) -> Option<(String, String)> {
        t.changed().map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
    }

    fn some(k: &str, v: &str) -> Option<(String, String)> {
        Some((k.into(), v.into()))
    }

    #[test]
    fn reports_each_leader_and_each_new_value_once() {
        let mut t = Tracker::default();
        assert_eq!(leader(&mut t), None);
        t.apply(&put("/e/b", 2, 2, "b"));
        assert_eq!(leader(&mut t), some("/e/b", "b"));
        t.apply(&put("/e/a", 3, 3, "a")); // queues behind: no change
        assert_eq!(leader(&mut t), None);
        t.apply(&put("/e/a", 3, 4, "a2")); // a waiter's new value: no change
        assert_eq!(leader(&mut t), None);
        t.apply(&put("/e/b", 2, 5, "b2")); // the leader's new value
        assert_eq!(leader(&mut t), some("/e/b", "b2"));
        t.apply(&delete("/e/b", 6));
        assert_eq!(leader(&mut t), some("/e/a", "a2"));
        t.apply(&delete("/e/a", 7));
        assert_eq!(leader(&mut t), None);
        // The same key again is a new leader.
        t.apply(&put("/e/a", 8, 8, "a3"));
        assert_eq!(leader(&mut t), some("/e/a", "a3"));
    }
}
