//! The queue of participants under a prefix, shared by [`Mutex`](super::Mutex) and
//! [`Election`](super::Election): where a key stands in it (pure), one attempt to join it (one
//! transaction), and the wait for its turn.
//!
//! Invariant: a participant's place is fixed by its key's create revision. Keys older than it
//! can only go away, and keys that come later are created at higher revisions, so once no
//! older key is left, none ever will be: the turn, once reached, is kept while the key lives.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::session::Session;
use crate::error::{Error, Result};
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::lease_store::LeaseStore;
use crate::txn::{Compare, Op, OpResponse, Txn};
use crate::watch::{WatchEnd, WatchEvent};

/// The longest a wait blocks on its watch before it looks at its session and deadline again.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// The prefix the keys go under: `prefix` with `/` appended, as etcd's `NewMutex` and
/// `NewElection` do (always, so `/a/` gives `/a//`: the same keys as etcd's client).
///
/// # Errors
/// [`Error::InvalidKey`] for an empty prefix (which would queue under `/`, among every key).
pub(crate) fn queue_prefix(prefix: &[u8]) -> Result<Vec<u8>> {
    if prefix.is_empty() {
        return Err(Error::InvalidKey(
            "a lock or election prefix must not be empty",
        ));
    }
    let mut p = prefix.to_vec();
    p.push(b'/');
    Ok(p)
}

/// A participant's key: the queue prefix, then its lease id in lower-case hex (etcd's `%x`).
pub(crate) fn participant_key(queue: &[u8], lease: LeaseId) -> Vec<u8> {
    let mut key = queue.to_vec();
    key.extend_from_slice(format!("{:x}", lease.get()).as_bytes());
    key
}

/// Where a participant stands in the queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// No key older than its own: it holds the lock (leads).
    First,
    /// Behind `key`, the youngest key older than its own: the one to wait for.
    After(Vec<u8>),
    /// Its own key (with its create revision) is not in the queue: its lease ended.
    Gone,
}

/// Where the key `mine`, created at `rev`, stands among `queue` (every key under the prefix).
pub(crate) fn turn(queue: &[KeyValue], mine: &[u8], rev: Revision) -> Turn {
    if !queue
        .iter()
        .any(|kv| kv.key == mine && kv.create_revision == rev)
    {
        return Turn::Gone;
    }
    match queue
        .iter()
        .filter(|kv| kv.create_revision < rev)
        .max_by_key(|kv| kv.create_revision)
    {
        Some(before) => Turn::After(before.key.clone()),
        None => Turn::First,
    }
}

/// The first in the queue (lowest create revision): the holder or leader, if any.
pub(crate) fn first(queue: &[KeyValue]) -> Option<&KeyValue> {
    queue.iter().min_by_key(|kv| kv.create_revision)
}

/// The outcome of one [`join`].
pub(crate) struct Joined {
    /// Whether this attempt created the key (else the session had it already).
    pub(crate) created: bool,
    /// The key as it is after the attempt.
    pub(crate) kv: KeyValue,
    /// Where it stands.
    pub(crate) turn: Turn,
    /// The revision the attempt saw the queue at: a wait watches from the next one.
    pub(crate) revision: Revision,
}

/// Joins the queue under `queue` with `key` = `value` under the session's lease, in one
/// transaction: *if the key is absent, put it; in both branches, read it and the prefix*.
pub(crate) fn join<S: LeaseStore + ?Sized>(
    session: &Session<'_, S>,
    queue: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<Joined> {
    let lease = session.lease();
    let txn = Txn::new()
        .when(Compare::absent(key))
        .then(Op::put_with_lease(key, value, lease))
        .then(Op::get(key))
        .then(Op::range(queue))
        .otherwise(Op::get(key))
        .otherwise(Op::range(queue));
    let result = session.store().txn(txn).map_err(|e| lost(e, lease))?;
    let (own, all) = match result.responses.as_slice() {
        [
            OpResponse::Put,
            OpResponse::Get(Some(own)),
            OpResponse::Range(all),
        ]
        | [OpResponse::Get(Some(own)), OpResponse::Range(all)] => (own, all),
        other => {
            return Err(Error::Backend(
                format!("unexpected answer to a lock attempt: {other:?}").into(),
            ));
        }
    };
    Ok(Joined {
        created: result.succeeded,
        turn: turn(all, key, own.create_revision),
        kv: own.clone(),
        revision: result.revision,
    })
}

/// Waits until `key` (created at `rev`) is first in the queue, starting behind `before` as
/// seen at revision `seen`. `Ok(())` once it is first.
///
/// # Errors
/// [`Error::Locked`] at `deadline`; [`Error::SessionExpired`] once the session is lost (its key
/// gone); [`Error::Closed`] if the store closes; the store's errors.
pub(crate) fn wait<S: LeaseStore + ?Sized>(
    session: &Session<'_, S>,
    queue: &[u8],
    key: &[u8],
    rev: Revision,
    mut before: Vec<u8>,
    mut seen: Revision,
    deadline: Option<Instant>,
) -> Result<()> {
    let store = session.store();
    let lease = session.lease();
    loop {
        wait_delete(session, &before, seen, deadline)?;
        let now = store.range_with_revision(queue)?;
        match turn(&now.kvs, key, rev) {
            Turn::First => return Ok(()),
            Turn::After(next) => (before, seen) = (next, now.revision),
            Turn::Gone => return Err(Error::SessionExpired(lease)),
        }
    }
}

/// Waits until `key` is deleted at a revision after `seen` (or may have been: the watch
/// history no longer reaches `seen`), watching that one key.
fn wait_delete<S: LeaseStore + ?Sized>(
    session: &Session<'_, S>,
    key: &[u8],
    seen: Revision,
    deadline: Option<Instant>,
) -> Result<()> {
    // A prefix watch on the key: events of longer keys that start with it are skipped.
    let watch = match session.store().watch_from(key, seen.next()) {
        Ok(w) => w,
        Err(Error::Compacted { .. }) => return Ok(()), // look again
        Err(e) => return Err(e),
    };
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Locked);
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        match watch.recv_timeout(slice) {
            Ok(WatchEvent::Delete { key: k, .. }) if k == key => return Ok(()),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                if session.ended().is_some() {
                    // Nothing renews the lease any more: whatever this wait would win, the
                    // lease would take away within a TTL.
                    return Err(Error::SessionExpired(session.lease()));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return match watch.ended() {
                    Some(WatchEnd::Compacted) => Ok(()),
                    _ => Err(Error::Closed),
                };
            }
        }
    }
}

/// Removes `key` if it is still the one created at `rev` (so never a later incarnation).
pub(crate) fn leave<S: LeaseStore + ?Sized>(
    session: &Session<'_, S>,
    key: &[u8],
    rev: Revision,
) -> Result<()> {
    let txn = Txn::new()
        .when(Compare::create_revision(key, crate::txn::CmpOp::Equal, rev))
        .then(Op::delete(key));
    session.store().txn(txn)?;
    Ok(())
}

/// The session's own lease refused: reported as the session's loss.
pub(crate) fn lost(e: Error, lease: LeaseId) -> Error {
    match e {
        Error::LeaseNotFound(id) if id == lease => Error::SessionExpired(lease),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: u64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: Vec::new(),
            lease: None,
            create_revision: Revision(rev),
            mod_revision: Revision(rev),
            version: 1,
        }
    }

    #[test]
    fn prefixes_get_a_slash_as_in_etcd_and_empty_ones_are_refused() {
        assert_eq!(queue_prefix(b"/lock").unwrap(), b"/lock/");
        assert_eq!(queue_prefix(b"/lock/").unwrap(), b"/lock//");
        assert!(matches!(queue_prefix(b""), Err(Error::InvalidKey(_))));
    }

    #[test]
    fn keys_end_in_the_lease_id_in_lower_hex() {
        let id = LeaseId::new(0x694d_7a3c_bb12).unwrap();
        assert_eq!(participant_key(b"/l/", id), b"/l/694d7a3cbb12");
        assert_eq!(
            participant_key(b"/l/", LeaseId::MAX),
            b"/l/7fffffffffffffff"
        );
    }

    #[test]
    fn the_oldest_key_is_first_and_each_waits_for_the_one_just_before_it() {
        // Key order and create order differ on purpose.
        let q = [kv("/l/a", 9), kv("/l/b", 3), kv("/l/c", 5), kv("/l/d", 7)];
        assert_eq!(turn(&q, b"/l/b", Revision(3)), Turn::First);
        assert_eq!(
            turn(&q, b"/l/c", Revision(5)),
            Turn::After(b"/l/b".to_vec())
        );
        assert_eq!(
            turn(&q, b"/l/d", Revision(7)),
            Turn::After(b"/l/c".to_vec())
        );
        assert_eq!(
            turn(&q, b"/l/a", Revision(9)),
            Turn::After(b"/l/d".to_vec())
        );
        assert_eq!(first(&q).map(|kv| kv.key.clone()), Some(b"/l/b".to_vec()));
        assert_eq!(first(&[]), None);
    }

    #[test]
    fn a_key_missing_or_recreated_is_gone() {
        let q = [kv("/l/b", 3), kv("/l/c", 8)];
        assert_eq!(turn(&q, b"/l/a", Revision(2)), Turn::Gone);
        // Same key, a later incarnation: not the one this participant created.
        assert_eq!(turn(&q, b"/l/c", Revision(5)), Turn::Gone);
        assert_eq!(turn(&[], b"/l/c", Revision(5)), Turn::Gone);
    }

    #[test]
    fn only_the_sessions_own_lease_becomes_session_expired() {
        let mine = LeaseId::new(7).unwrap();
        let other = LeaseId::new(8).unwrap();
        assert!(matches!(
            lost(Error::LeaseNotFound(mine), mine),
            Error::SessionExpired(id) if id == mine
        ));
        assert!(matches!(
            lost(Error::LeaseNotFound(other), mine),
            Error::LeaseNotFound(id) if id == other
        ));
    }
}
