//! A disk that fails on purpose: [`FaultDisk`] injects an I/O error at a chosen call of a chosen
//! kind, or at every call of a kind until healed, and can lose power.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::MemDisk;

/// The I/O points of a redb storage backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Io {
    Read,
    Write,
    SetLen,
    Sync,
}

impl Io {
    pub const ALL: [Io; 4] = [Io::Read, Io::Write, Io::SetLen, Io::Sync];

    fn index(self) -> usize {
        match self {
            Io::Read => 0,
            Io::Write => 1,
            Io::SetLen => 2,
            Io::Sync => 3,
        }
    }
}

/// When calls of one kind fail.
#[derive(Clone, Copy, Debug, Default)]
enum Plan {
    #[default]
    Never,
    /// The call that many calls from now (0: the next one), once.
    Once(u64),
    /// Every call until healed.
    Always,
}

#[derive(Debug, Default)]
struct State {
    plans: [Plan; 4],
    /// Faults injected so far.
    injected: u64,
}

/// A disk in memory with a volatile image (what writes change and reads see) and a durable one
/// (what `sync_data` copies the volatile image to, and what survives a power cut).
///
/// A failed `write` or `set_len` changes nothing; a failed `read` reads nothing. A failed
/// `sync_data` loses every write since the last good sync, as a disk whose write-back failed
/// does (Linux drops the dirty pages of a failed fsync): the volatile image goes back to the
/// durable one. Clones share everything.
#[derive(Clone, Debug, Default)]
pub struct FaultDisk {
    volatile: MemDisk,
    durable: Arc<Mutex<Vec<u8>>>,
    state: Arc<Mutex<State>>,
    calls: Arc<[AtomicU64; 4]>,
}

impl FaultDisk {
    pub fn new() -> FaultDisk {
        FaultDisk::default()
    }

    /// Calls of `io` made so far (failed ones included).
    pub fn calls(&self, io: Io) -> u64 {
        self.calls[io.index()].load(Ordering::SeqCst)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// Makes the `nth` call of `io` from now (0: the next) fail, once.
    pub fn fail_nth(&self, io: Io, nth: u64) {
        self.state.lock().plans[io.index()] = Plan::Once(nth);
    }

    /// Makes every call of `io` fail until [`heal`](Self::heal).
    pub fn fail_always(&self, io: Io) {
        self.state.lock().plans[io.index()] = Plan::Always;
    }

    /// Ends every injected fault.
    pub fn heal(&self) {
        self.state.lock().plans = [Plan::Never; 4];
    }

    /// A disk as this one would be found after a power cut now: only what was synced.
    pub fn after_power_loss(&self) -> FaultDisk {
        let image = self.durable.lock().clone();
        let disk = FaultDisk::new();
        *disk.volatile.0.write() = image.clone();
        *disk.durable.lock() = image;
        disk
    }

    /// Counts a call of `io`, and says whether it must fail.
    fn enter(&self, io: Io) -> std::io::Result<()> {
        self.calls[io.index()].fetch_add(1, Ordering::SeqCst);
        let mut s = self.state.lock();
        let fail = match s.plans[io.index()] {
            Plan::Never => false,
            Plan::Always => true,
            Plan::Once(0) => {
                s.plans[io.index()] = Plan::Never;
                true
            }
            Plan::Once(n) => {
                s.plans[io.index()] = Plan::Once(n - 1);
                false
            }
        };
        if fail {
            s.injected += 1;
            return Err(std::io::Error::other(format!("injected {io:?} failure")));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FaultDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.volatile.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.enter(Io::Read)?;
        self.volatile.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.enter(Io::SetLen)?;
        self.volatile.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if let Err(e) = self.enter(Io::Sync) {
            // The write-back failed: what was not yet durable is gone.
            *self.volatile.0.write() = self.durable.lock().clone();
            return Err(e);
        }
        *self.durable.lock() = self.volatile.0.read().clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.enter(Io::Write)?;
        self.volatile.write(offset, data)
    }
}
