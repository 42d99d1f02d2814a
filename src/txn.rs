//! Transactions: compare, then act, as one all-or-nothing request ([`Txn`](crate::Txn)).
//!
//! The shape is etcd's: a list of comparisons on keys, all of which must hold; the `then` ops
//! run if they do, the `otherwise` ops if not. Everything happens in one write transaction,
//! so nothing can change between the comparison and the ops, and all the writes of a
//! transaction share one revision.

use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::events::Change;
use crate::lease::{KeyValue, LeaseId, Revision};
use crate::pipeline::Batch;

/// How a [`Compare`] compares the key's field with the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// field == value
    Equal,
    /// field != value
    NotEqual,
    /// field < value
    Less,
    /// field > value
    Greater,
}

impl CmpOp {
    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Equal => ord == Ordering::Equal,
            CmpOp::NotEqual => ord != Ordering::Equal,
            CmpOp::Less => ord == Ordering::Less,
            CmpOp::Greater => ord == Ordering::Greater,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Exists(bool),
    Value(CmpOp, Vec<u8>),
    Version(CmpOp, u64),
    CreateRevision(CmpOp, u64),
    ModRevision(CmpOp, u64),
    Lease(CmpOp, u64),
}

/// A condition on one key, checked inside a [`Txn`](crate::Txn).
///
/// As in etcd, a missing key has version, create revision and mod revision 0 and no lease, so
/// `Compare::create_revision(key, CmpOp::Equal, Revision::new(0))` means "the key does not
/// exist"; comparing the value of a missing key is false whatever the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub(crate) key: Vec<u8>,
    pub(crate) target: Target,
}

impl Compare {
    /// The key exists.
    pub fn exists(key: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, Target::Exists(true))
    }

    /// The key does not exist.
    pub fn absent(key: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, Target::Exists(false))
    }

    /// The key's value compared with `value`, bytewise.
    pub fn value(key: impl AsRef<[u8]>, op: CmpOp, value: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, Target::Value(op, value.as_ref().to_vec()))
    }

    /// The key's version (puts since creation; 0 if missing).
    pub fn version(key: impl AsRef<[u8]>, op: CmpOp, version: u64) -> Compare {
        Compare::new(key, Target::Version(op, version))
    }

    /// The revision that created the key (0 if missing).
    pub fn create_revision(key: impl AsRef<[u8]>, op: CmpOp, revision: Revision) -> Compare {
        Compare::new(key, Target::CreateRevision(op, revision.get()))
    }

    /// The revision of the key's last put (0 if missing).
    pub fn mod_revision(key: impl AsRef<[u8]>, op: CmpOp, revision: Revision) -> Compare {
        Compare::new(key, Target::ModRevision(op, revision.get()))
    }

    /// The lease the key is attached to (`None`, compared as 0, if none or missing).
    pub fn lease(key: impl AsRef<[u8]>, op: CmpOp, lease: Option<LeaseId>) -> Compare {
        Compare::new(key, Target::Lease(op, lease.map_or(0, LeaseId::get)))
    }

    fn new(key: impl AsRef<[u8]>, target: Target) -> Compare {
        Compare {
            key: key.as_ref().to_vec(),
            target,
        }
    }

    fn holds(&self, kv: Option<&KeyValue>) -> bool {
        let num = |f: fn(&KeyValue) -> u64| kv.map_or(0, f);
        match &self.target {
            Target::Exists(want) => kv.is_some() == *want,
            Target::Value(op, v) => kv.is_some_and(|kv| op.holds(kv.value.as_slice().cmp(v))),
            Target::Version(op, n) => op.holds(num(|kv| kv.version).cmp(n)),
            Target::CreateRevision(op, n) => op.holds(num(|kv| kv.create_revision.get()).cmp(n)),
            Target::ModRevision(op, n) => op.holds(num(|kv| kv.mod_revision.get()).cmp(n)),
            Target::Lease(op, n) => op.holds(num(|kv| kv.lease.map_or(0, LeaseId::get)).cmp(n)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put {
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete,
    Get,
    Range,
}

/// One operation of a [`Txn`](crate::Txn)'s `then` or `otherwise` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub(crate) key: Vec<u8>,
    pub(crate) kind: OpKind,
}

impl Op {
    /// Writes `key = value` with no lease (detaching it from any).
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Op {
        Op::new(
            key,
            OpKind::Put {
                value: value.as_ref().to_vec(),
                lease: None,
            },
        )
    }

    /// Writes `key = value` attached to lease `id`, which must be alive.
    pub fn put_with_lease(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, id: LeaseId) -> Op {
        Op::new(
            key,
            OpKind::Put {
                value: value.as_ref().to_vec(),
                lease: Some(id),
            },
        )
    }

    /// Deletes the key if it exists.
    pub fn delete(key: impl AsRef<[u8]>) -> Op {
        Op::new(key, OpKind::Delete)
    }

    /// Reads the key, seeing the writes of earlier ops of the same transaction.
    pub fn get(key: impl AsRef<[u8]>) -> Op {
        Op::new(key, OpKind::Get)
    }

    /// Reads every key that starts with `prefix`, in key order (`b""`: all keys), seeing the
    /// writes of earlier ops of the same transaction. One transaction can so both write and read
    /// a whole prefix at one revision: a lock attempt puts its key and sees every waiter.
    pub fn range(prefix: impl AsRef<[u8]>) -> Op {
        Op::new(prefix, OpKind::Range)
    }

    fn new(key: impl AsRef<[u8]>, kind: OpKind) -> Op {
        Op {
            key: key.as_ref().to_vec(),
            kind,
        }
    }
}

/// What one [`Op`] did, in [`TxnResponse::responses`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpResponse {
    /// The put was done, at the transaction's revision.
    Put,
    /// Whether the deleted key existed.
    Delete {
        /// `false` if there was nothing to delete.
        existed: bool,
    },
    /// The key as read.
    Get(Option<KeyValue>),
    /// The keys under the prefix of an [`Op::range`], in key order.
    Range(Vec<KeyValue>),
}

/// The outcome of [`Lessor::txn`](crate::Lessor::txn).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every comparison held (so the `then` ops ran, else the `otherwise` ops).
    pub succeeded: bool,
    /// The database's revision after the transaction: that of its writes, if it wrote.
    pub revision: Revision,
    /// One response per op that ran, in order.
    pub responses: Vec<OpResponse>,
}

/// An etcd-style transaction: `when` every comparison holds, `then` these ops, `otherwise`
/// those. Built apart from any backend, and run by the `txn` of each:
/// [`Lessor::txn`](crate::Lessor::txn), [`AsyncLessor::txn`](crate::AsyncLessor::txn),
/// [`LeaseStore::txn`](crate::LeaseStore::txn), [`AsyncLeaseStore::txn`](crate::AsyncLeaseStore::txn).
///
/// ```
/// use std::time::Duration;
/// use lessor::{Compare, LeaseStore, Lessor, Op, Txn};
///
/// # fn main() -> lessor::Result<()> {
/// let store = Lessor::open_in_memory()?;
/// let me = LeaseStore::grant(&store, Duration::from_secs(10))?;
/// let lock = Txn::new()
///     .when(Compare::absent("/cron/lock/job1"))
///     .then(Op::put_with_lease("/cron/lock/job1", "worker-1", me.id))
///     .otherwise(Op::get("/cron/lock/job1"));
/// assert!(store.txn(lock.clone())?.succeeded);
/// assert!(!store.txn(lock)?.succeeded); // held now
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a transaction does nothing until passed to a `txn` call"]
pub struct Txn {
    pub(crate) compares: Vec<Compare>,
    pub(crate) then: Vec<Op>,
    pub(crate) otherwise: Vec<Op>,
}

impl Txn {
    /// An empty transaction (it succeeds and does nothing).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a comparison; all of them must hold.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an op to run if every comparison holds.
    pub fn then(mut self, op: Op) -> Self {
        self.then.push(op);
        self
    }

    /// Adds an op to run if a comparison fails.
    pub fn otherwise(mut self, op: Op) -> Self {
        self.otherwise.push(op);
        self
    }

    /// Checks every key and value against the limits, and that no branch writes a key twice
    /// (as etcd refuses: one revision cannot hold two versions of a key).
    pub(crate) fn check(
        &self,
        check_key: impl Fn(&[u8]) -> Result<()>,
        check_value: impl Fn(&[u8]) -> Result<()>,
    ) -> Result<()> {
        for c in &self.compares {
            check_key(&c.key)?;
        }
        for ops in [&self.then, &self.otherwise] {
            let mut written = std::collections::HashSet::new();
            for op in ops {
                // A range's prefix may be empty (every key); any other key may not.
                if !(op.kind == OpKind::Range && op.key.is_empty()) {
                    check_key(&op.key)?;
                }
                if let OpKind::Put { value, .. } = &op.kind {
                    check_value(value)?;
                }
                if !matches!(op.kind, OpKind::Get | OpKind::Range)
                    && !written.insert(op.key.as_slice())
                {
                    return Err(Error::InvalidKey(
                        "a transaction branch writes the same key twice",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs the transaction in `batch`; `alive` says whether a lease may be put with.
    pub(crate) fn run(
        &self,
        batch: &mut Batch<'_>,
        alive: impl Fn(LeaseId, &crate::overlay::Tables<'_>) -> Result<()>,
    ) -> Result<(bool, Vec<OpResponse>)> {
        let mut succeeded = true;
        for c in &self.compares {
            if !c.holds(batch.tables.get(&c.key)?.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &self.then
        } else {
            &self.otherwise
        };
        // Every write shares one revision, taken at the first write.
        let mut revision = None;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.kind {
                OpKind::Get => OpResponse::Get(batch.tables.get(&op.key)?),
                OpKind::Range => OpResponse::Range(batch.tables.range(&op.key)?),
                OpKind::Put { value, lease } => {
                    if let Some(id) = lease {
                        alive(*id, &batch.tables)?;
                    }
                    let rev = write_revision(&mut revision, batch)?;
                    let kv = batch.tables.put(&op.key, value, *lease, rev)?;
                    batch.changes.push(Change::Put(kv));
                    OpResponse::Put
                }
                OpKind::Delete => {
                    let existed = batch.tables.get(&op.key)?.is_some();
                    if existed {
                        let rev = write_revision(&mut revision, batch)?;
                        batch.tables.delete(&op.key)?;
                        batch.changes.push(Change::Deleted {
                            key: op.key.clone(),
                            revision: rev,
                        });
                    }
                    OpResponse::Delete { existed }
                }
            };
            responses.push(response);
        }
        Ok((succeeded, responses))
    }
}

/// The revision of the transaction's writes: taken (advancing the counter) at the first write.
fn write_revision(revision: &mut Option<u64>, batch: &mut Batch<'_>) -> Result<u64> {
    match *revision {
        Some(r) => Ok(r),
        None => Ok(*revision.insert(batch.counters.bump_revision()?)),
    }
}
