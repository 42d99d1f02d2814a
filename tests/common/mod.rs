//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lessor::{LeaseId, Lessor, ManualClock};

pub mod invariants;

/// A small deterministic PRNG (xorshift64*), for workloads that must be replayable from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero, which xorshift would keep forever; spread nearby seeds apart.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform enough in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A lease id from a literal.
pub fn id(n: u64) -> LeaseId {
    LeaseId::new(n).expect("test ids are valid")
}

/// A temporary folder holding one database path, removed when dropped.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn test_dir() -> TestDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessor.redb");
    TestDir { dir, path }
}

/// A lessor on `path` driven by `clock`, without a ticker: tests call `revoke_expired`.
pub fn manual_at(path: &std::path::Path, clock: &ManualClock) -> Lessor {
    Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open(path)
        .unwrap()
}

/// A fresh database with a manual clock and no ticker.
pub fn manual() -> (Lessor, ManualClock, TestDir) {
    let dir = test_dir();
    let clock = ManualClock::new();
    let lessor = manual_at(&dir.path, &clock);
    (lessor, clock, dir)
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls `cond` until it holds or `limit` of real time passes. For waiting on another thread
/// (the ticker) to act, never for waiting on a TTL: tests move a manual clock for that.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

pub mod faults;

/// A disk in memory that outlives the lessors opened on it, so tests can close and reopen a
/// database without paying an fsync per commit. Clones share the same bytes, and the switch
/// that makes `sync_data` fail.
#[derive(Clone, Debug, Default)]
pub struct MemDisk(
    std::sync::Arc<parking_lot::RwLock<Vec<u8>>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

impl MemDisk {
    pub fn new() -> MemDisk {
        MemDisk::default()
    }

    /// Makes every later `sync_data` fail (or succeed again).
    pub fn fail_syncs(&self, fail: bool) {
        self.1.store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Opens a lessor on this disk with a manual clock and no ticker.
    pub fn open(&self, clock: &ManualClock) -> lessor::Result<Lessor> {
        Lessor::builder()
            .clock(clock.clone())
            .ticker(false)
            .open_with_backend(self.clone())
    }
}

impl redb::StorageBackend for MemDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.read().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let data = self.0.read();
        let start = offset as usize;
        let src = data
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::other("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.write().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected sync failure"));
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut disk = self.0.write();
        let start = offset as usize;
        if disk.len() < start + data.len() {
            return Err(std::io::Error::other("write past the end"));
        }
        disk[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A disk that loses power on demand: writes land in a volatile image, `sync_data` copies it to
/// the durable one, and [`PowerDisk::after_power_loss`] gives a disk holding only what was
/// synced (every unsynced write lost: the harshest crash a disk may show). Each sync can be made
/// slow, as a real disk's is, and is counted.
#[derive(Clone, Debug, Default)]
pub struct PowerDisk {
    volatile: MemDisk,
    durable: std::sync::Arc<parking_lot::Mutex<Vec<u8>>>,
    syncs: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sync_delay: std::sync::Arc<parking_lot::Mutex<Duration>>,
}

impl PowerDisk {
    pub fn new(sync_delay: Duration) -> PowerDisk {
        let d = PowerDisk::default();
        *d.sync_delay.lock() = sync_delay;
        d
    }

    /// How many `sync_data` calls succeeded.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A disk as this one would be found after a power cut now: only what was synced.
    pub fn after_power_loss(&self) -> MemDisk {
        let image = self.durable.lock().clone();
        let disk = MemDisk::new();
        *disk.0.write() = image;
        disk
    }
}

impl redb::StorageBackend for PowerDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.volatile.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.volatile.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.volatile.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let delay = *self.sync_delay.lock();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        *self.durable.lock() = self.volatile.0.read().clone();
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.volatile.write(offset, data)
    }
}
