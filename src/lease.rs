//! Ids and owned snapshots: [`LeaseId`], [`Revision`], [`Lease`], [`LeaseInfo`], [`KeyValue`].
//!
//! Everything here is plain data handed to callers; none of it refers back into the lessor.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// The id of a lease: a positive integer no larger than `i64::MAX`, so that every id is also a
/// valid etcd lease id.
///
/// Ids assigned by [`Lessor::grant`](crate::Lessor::grant) are never reused within a database:
/// each is one more than the highest id ever issued there. (With
/// [`Durability::Batched`](crate::Durability::Batched), a crash can lose the last grants, and
/// their ids with them: an id nobody can hold any more may then be issued again.)
///
/// ```
/// use lessor::LeaseId;
///
/// let id = LeaseId::new(42).unwrap();
/// assert_eq!(id.get(), 42);
/// assert_eq!(LeaseId::new(0), None);
/// assert_eq!(LeaseId::new(u64::MAX), None);
/// assert_eq!("7".parse::<LeaseId>().unwrap().get(), 7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(NonZeroU64);

impl LeaseId {
    /// The largest id: `i64::MAX`.
    pub const MAX: LeaseId = match NonZeroU64::new(i64::MAX as u64) {
        Some(v) => LeaseId(v),
        None => unreachable!(),
    };

    /// Makes an id, or `None` when `id` is 0 or above `i64::MAX`.
    pub const fn new(id: u64) -> Option<LeaseId> {
        if id > i64::MAX as u64 {
            return None;
        }
        match NonZeroU64::new(id) {
            Some(v) => Some(LeaseId(v)),
            None => None,
        }
    }

    /// The id as an integer.
    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl TryFrom<u64> for LeaseId {
    type Error = Error;

    /// Like [`LeaseId::new`], with [`Error::InvalidLeaseId`] for 0 and values above `i64::MAX`.
    fn try_from(id: u64) -> Result<Self, Error> {
        LeaseId::new(id).ok_or(Error::InvalidLeaseId(id))
    }
}

impl TryFrom<i64> for LeaseId {
    type Error = Error;

    /// etcd's ids are `i64`: zero and negative values are [`Error::InvalidLeaseId`].
    fn try_from(id: i64) -> Result<Self, Error> {
        LeaseId::try_from(id as u64)
    }
}

impl From<LeaseId> for u64 {
    fn from(id: LeaseId) -> u64 {
        id.get()
    }
}

impl FromStr for LeaseId {
    type Err = Error;

    /// Parses a decimal id; anything else is [`Error::InvalidLeaseId`]: a negative number as
    /// `LeaseId::try_from(n: i64)` reports it, and 0 when the text is not a number at all.
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return LeaseId::try_from(n);
        }
        let n: u64 = s.parse().map_err(|_| Error::InvalidLeaseId(0))?;
        LeaseId::try_from(n)
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

/// A position in the database's history.
///
/// One global counter, as in etcd: every `put`, every `delete` that removes a key, and every
/// revocation (by `revoke` or by expiry) that deletes at least one key advances it by one. A fresh
/// database is at revision 0, so every key's revisions are at least 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub(crate) u64);

impl Revision {
    /// A revision from its integer, e.g. one saved earlier with [`get`](Revision::get).
    pub const fn new(revision: u64) -> Revision {
        Revision(revision)
    }

    /// The revision after this one: where a watch continues after a read at this revision.
    pub const fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }

    /// The revision as an integer.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Revision({})", self.0)
    }
}

/// A newly granted lease, as returned by [`Lessor::grant`](crate::Lessor::grant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// Its TTL: the one asked for, raised to the lessor's minimum if it was below.
    pub ttl: Duration,
    /// The database's revision when it was granted (granting does not advance it).
    pub revision: Revision,
}

/// What [`Lessor::time_to_live`](crate::Lessor::time_to_live) reports about a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: LeaseId,
    /// The TTL it was granted with (after raising to the minimum), as [`Lease::ttl`]; each
    /// renewal restores it. etcd calls it `grantedTTL`.
    pub ttl: Duration,
    /// Time left before it expires, as of the call.
    pub remaining: Duration,
    /// The keys attached to it, in key order: filled in by
    /// [`time_to_live_with_keys`](crate::Lessor::time_to_live_with_keys), empty from
    /// [`time_to_live`](crate::Lessor::time_to_live).
    pub keys: Vec<Vec<u8>>,
}

/// A key with its value and metadata, as returned by [`Lessor::get`](crate::Lessor::get) and
/// [`Lessor::range`](crate::Lessor::range).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The lease the key is attached to, if any. The key is deleted when that lease ends.
    pub lease: Option<LeaseId>,
    /// The revision of the put that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the last put to the key.
    pub mod_revision: Revision,
    /// How many puts the key has seen since it was created: 1 after the first.
    pub version: u64,
}

/// Keys read together with the revision the read saw, from
/// [`Lessor::range_with_revision`](crate::Lessor::range_with_revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The keys, in key order.
    pub kvs: Vec<KeyValue>,
    /// The database's revision at the read: watch from [`Revision::next`] of it to see every
    /// later change exactly once.
    pub revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key.escape_ascii().to_string())
            .field("value", &self.value.escape_ascii().to_string())
            .field("lease", &self.lease)
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_positive_i64s() {
        assert_eq!(LeaseId::new(0), None);
        assert_eq!(LeaseId::new(1).map(LeaseId::get), Some(1));
        assert_eq!(LeaseId::new(i64::MAX as u64), Some(LeaseId::MAX));
        assert_eq!(LeaseId::new(i64::MAX as u64 + 1), None);
        assert!(matches!(
            LeaseId::try_from(-1i64),
            Err(Error::InvalidLeaseId(u64::MAX))
        ));
        assert!(matches!(
            LeaseId::try_from(0u64),
            Err(Error::InvalidLeaseId(0))
        ));
        assert!(matches!(
            "x".parse::<LeaseId>(),
            Err(Error::InvalidLeaseId(0))
        ));
        assert_eq!(" 12 ".parse::<LeaseId>().ok(), LeaseId::new(12));
    }

    #[test]
    fn option_of_lease_id_is_a_single_word() {
        assert_eq!(std::mem::size_of::<Option<LeaseId>>(), 8);
    }
}
