//! Coming back from a storage failure without a restart: reopen the database and bring memory
//! back in line with the file.
//!
//! redb refuses all work after an I/O error until the database is reopened, and a commit that
//! failed may or may not have reached the disk. So a storage error poisons the lessor (every
//! call refuses with [`Error::Poisoned`](crate::Error::Poisoned)), and then the ticker (with
//! backoff) or [`Lessor::recover`](crate::Lessor::recover) reloads: it drops the `Database`,
//! opens it again from its [`Source`] (redb repairs the file back to its last durable commit),
//! and reconciles the lease table with the leases the file holds ([`plan`]). The file is the
//! truth:
//! - a lease in the file and alive in memory keeps its in-memory deadline (renewals never touch
//!   the disk, so memory knows better); one still waiting for its first deadline (a grant that
//!   failed after reaching the file) gets the deadline the file gives it;
//! - a lease in the file that memory had claimed for revocation is revoked first by expiry;
//! - a lease in the file that memory had dropped (its revocation was lost) comes back with what
//!   the restart policy gives a lease at open;
//! - a lease in memory but not in the file (its grant was lost) is dropped, and its keep-alives
//!   end with [`EndReason::Lost`](crate::EndReason::Lost).
//!
//! The revision and the lease-id high-water mark never go back: each is the larger of memory's
//! and the file's, so a revision or an auto id that anyone saw is never issued twice. Keys live
//! only in the file, so they need nothing.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use redb::{BackendError, Database, StorageBackend};

/// What redb's backend I/O methods fail with (with `std`).
type BackendIoError = std::io::Error;

use crate::config::Config;
use crate::error::Result;
use crate::lease::LeaseId;
use crate::lease_table::LeaseTable;
use crate::recovery;

/// Where a lessor's database comes from, so that it can be opened again.
pub(crate) enum Source {
    /// A file opened by path.
    File(PathBuf),
    /// A storage backend (in memory, or the caller's), kept alive across reopens.
    Backend(Arc<dyn Reopen>),
}

/// A backend a database can be opened on again after the last one was dropped.
pub(crate) trait Reopen: Send + Sync {
    /// Opens a new database on the backend.
    fn open(&self, config: &Config) -> Result<Database>;
    /// Releases the backend for good (the lessor has closed).
    fn close(&self);
}

impl Source {
    /// Opens the database (again).
    pub(crate) fn open(&self, config: &Config) -> Result<Database> {
        match self {
            Source::File(path) => recovery::open_file(path, config),
            Source::Backend(backend) => backend.open(config),
        }
    }

    /// Releases what the source holds once the lessor has closed.
    pub(crate) fn close(&self) {
        if let Source::Backend(backend) = self {
            backend.close();
        }
    }
}

/// A caller's backend, shared by every `Database` a lessor opens on it. redb calls
/// [`StorageBackend::close`] when a `Database` drops; that is not passed on, since the lessor may
/// open the backend again. [`Reopen::close`] passes it on at the lessor's close.
pub(crate) struct Shared<B>(pub(crate) Arc<B>);

impl<B> fmt::Debug for Shared<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shared(..)")
    }
}

impl<B: StorageBackend> Reopen for Shared<B> {
    fn open(&self, config: &Config) -> Result<Database> {
        recovery::open_backend(Shared(Arc::clone(&self.0)), config)
    }

    fn close(&self) {
        let _ = self.0.close();
    }
}

type Bound = std::ops::Bound<u64>;

impl<B: StorageBackend> StorageBackend for Shared<B> {
    fn len(&self) -> std::result::Result<u64, BackendIoError> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), BackendIoError> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), BackendIoError> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::result::Result<(), BackendIoError> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), BackendIoError> {
        self.0.write(offset, data)
    }

    fn close(&self) -> std::result::Result<(), BackendIoError> {
        Ok(()) // see the type's docs
    }

    fn try_lock_range(&self, start: Bound, end: Bound) -> std::result::Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound,
        end: Bound,
    ) -> std::result::Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound, end: Bound) -> std::result::Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound, end: Bound) -> std::result::Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound, end: Bound) -> std::result::Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound,
        end: Bound,
    ) -> std::result::Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// What a reload does to the lease table; see the module docs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// In memory, not in the file: drop them and end their keep-alives.
    pub lost: Vec<LeaseId>,
    /// In the file, not in memory: add them as `(id, ttl, deadline word)` from the file's
    /// rebuild (a claimed word means nothing is left: revoke first).
    pub added: Vec<(LeaseId, u64, u64)>,
    /// In both and alive in memory: keep memory's deadline.
    pub kept: Vec<LeaseId>,
    /// In both, and in memory still waiting for its first deadline (its grant failed after
    /// reaching the file, or is still returning): settle it on the file's word.
    pub settle: Vec<(LeaseId, u64)>,
    /// In the file and claimed (memory's, or the file's rebuild's if added): expiry revokes them
    /// first.
    pub retry: Vec<LeaseId>,
}

/// Compares the table's entries with those rebuilt from the file, both as
/// [`LeaseTable::entries`] gives them (ascending by id).
pub(crate) fn plan(memory: &[(LeaseId, u64, u64)], file: &[(LeaseId, u64, u64)]) -> Plan {
    let mut plan = Plan::default();
    let (mut m, mut f) = (memory.iter().peekable(), file.iter().peekable());
    loop {
        match (m.peek(), f.peek()) {
            (None, None) => return plan,
            (Some(&&(id, _, _)), None) => {
                plan.lost.push(id);
                m.next();
            }
            (Some(&&(mid, _, _)), Some(&&(fid, _, _))) if mid < fid => {
                plan.lost.push(mid);
                m.next();
            }
            (Some(&&(mid, _, word)), Some(&&(fid, _, file_word))) if mid == fid => {
                if LeaseTable::is_claimed(word) {
                    plan.retry.push(mid);
                } else if LeaseTable::is_pending(word) {
                    plan.settle.push((mid, file_word));
                    if LeaseTable::is_claimed(file_word) {
                        plan.retry.push(mid);
                    }
                } else {
                    plan.kept.push(mid);
                }
                m.next();
                f.next();
            }
            (_, Some(&&(fid, ttl, word))) => {
                plan.added.push((fid, ttl, word));
                if LeaseTable::is_claimed(word) {
                    plan.retry.push(fid);
                }
                f.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease_table::DEAD;

    fn id(n: u64) -> LeaseId {
        LeaseId::new(n).unwrap()
    }

    #[test]
    fn the_file_decides_which_leases_exist_and_memory_keeps_its_deadlines() {
        let memory = [
            (id(1), 10, 500),  // in both, alive: kept
            (id(2), 10, DEAD), // in both, claimed: retried
            (id(3), 10, 700),  // grant lost
            (id(6), 10, 900),  // grant lost, after the file's last
        ];
        let file = [
            (id(1), 10, 100),
            (id(2), 10, 100),
            (id(4), 20, 300),  // revocation lost: comes back
            (id(5), 20, DEAD), // came back with nothing left
        ];
        assert_eq!(
            plan(&memory, &file),
            Plan {
                lost: vec![id(3), id(6)],
                added: vec![(id(4), 20, 300), (id(5), 20, DEAD)],
                kept: vec![id(1)],
                settle: vec![],
                retry: vec![id(2), id(5)],
            }
        );
    }

    #[test]
    fn a_lease_still_pending_in_memory_takes_the_files_deadline() {
        let pending = crate::lease_table::LeaseTable::new();
        pending.insert_pending(id(9), 10);
        let memory = pending.entries();
        let plan = plan(&memory, &[(id(9), 10, 500)]);
        assert_eq!(plan.settle, vec![(id(9), 500)]);
        assert!(plan.kept.is_empty() && plan.lost.is_empty() && plan.retry.is_empty());
        let claimed = plan_for_dead(&memory);
        assert_eq!(claimed.settle, vec![(id(9), DEAD)]);
        assert_eq!(claimed.retry, vec![id(9)]);
    }

    fn plan_for_dead(memory: &[(LeaseId, u64, u64)]) -> Plan {
        plan(memory, &[(id(9), 10, DEAD)])
    }

    #[test]
    fn empty_sides() {
        assert_eq!(plan(&[], &[]), Plan::default());
        let one = [(id(7), 1, 2)];
        assert_eq!(plan(&one, &[]).lost, vec![id(7)]);
        assert_eq!(plan(&[], &one).added, vec![(id(7), 1, 2)]);
    }
}
