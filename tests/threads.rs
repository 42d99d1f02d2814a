//! Background threads under panics: a panic from storage or from the clock is contained, counted
//! and reported by `health()`, and the ticker and the keep-alive thread go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use common::{MemDisk, secs, wait_until};
use crossbeam_channel::Receiver;
use lessor::{Clock, Error, Lessor, ManualClock};

const LIMIT: Duration = Duration::from_secs(10);

/// A disk whose reads panic while armed, as redb does on some damage it meets after open (it
/// passes on a backend's panic unchanged).
#[derive(Clone, Debug, Default)]
struct PanicDisk {
    disk: MemDisk,
    armed: Arc<AtomicBool>,
}

impl redb::StorageBackend for PanicDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.disk.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            panic!("injected panic reading {} bytes at {offset}", out.len());
        }
        self.disk.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.disk.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.disk.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk.write(offset, data)
    }
}

/// A manual clock whose readings panic while armed: the clock is the caller's code.
#[derive(Clone, Debug, Default)]
struct PanicClock {
    clock: ManualClock,
    armed: Arc<AtomicBool>,
}

impl Clock for PanicClock {
    fn now(&self) -> Duration {
        if self.armed.load(Ordering::SeqCst) {
            panic!("injected clock panic");
        }
        self.clock.now()
    }

    fn jumps(&self) -> Option<Receiver<()>> {
        self.clock.jumps()
    }

    fn wall(&self) -> SystemTime {
        self.clock.wall()
    }
}

#[test]
fn the_ticker_survives_a_panic_inside_redb_and_health_says_so() {
    let disk = PanicDisk::default();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        // Nothing cached: expiry's reads reach the disk.
        .cache_size(0)
        .open_with_backend(disk.clone())
        .unwrap();
    let lease = l.grant(secs(1)).unwrap();
    l.put_with_lease("/lock", "holder", lease.id).unwrap();
    let before = l.health();
    assert!(before.ticker_running && before.ticker_stopped.is_none());

    disk.armed.store(true, Ordering::SeqCst);
    clock.advance(secs(2)); // wakes the ticker: expiry reads the disk, which panics
    assert!(wait_until(LIMIT, || l.health().ticker_failures >= 1));
    let h = l.health();
    assert!(h.ticker_running, "{h:?}");
    assert_eq!(h.ticker_stopped, None);
    let why = h.last_ticker_error.unwrap_or_default();
    assert!(
        why.contains("panicked") && why.contains("injected panic"),
        "{why}"
    );

    // The panic poisoned the lessor (nothing from the file is trusted until it is reopened).
    // The fault clears: the ticker, still there, reopens it and expires what is due (a lease
    // granted since too).
    disk.armed.store(false, Ordering::SeqCst);
    assert!(
        wait_until(LIMIT, || !l.health().poisoned),
        "{:?}",
        l.health()
    );
    let later = l.grant(secs(1)).unwrap();
    clock.advance(secs(2));
    assert!(wait_until(LIMIT, || matches!(
        l.time_to_live(later.id),
        Err(Error::LeaseNotFound(_))
    ) && l.leases().unwrap().is_empty()));
    assert!(l.health().ticker_running);
}

#[test]
fn the_keep_alive_thread_survives_a_panicking_clock_and_health_says_so() {
    let clock = PanicClock::default();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let h = l.health();
    assert!(!h.keepalive_running && h.keepalive_stopped.is_none()); // not started yet
    assert_eq!(
        h.ticker_stopped.as_deref(),
        Some("built without a ticker (Builder::ticker(false))")
    );
    let lease = l.grant(secs(9)).unwrap();
    let ka = l.keep_alive(lease.id).unwrap();
    assert!(ka.responses().try_recv().is_ok()); // the first renewal, in this thread
    assert!(l.health().keepalive_running);

    clock.armed.store(true, Ordering::SeqCst);
    clock.clock.advance(secs(3)); // wakes the thread, whose clock reading panics
    assert!(wait_until(LIMIT, || l.health().keepalive_failures >= 1));
    let h = l.health();
    assert!(
        h.keepalive_running && h.keepalive_stopped.is_none(),
        "{h:?}"
    );
    let why = h.last_keepalive_error.unwrap_or_default();
    assert!(why.contains("injected clock panic"), "{why}");

    // The clock works again: renewals go on.
    clock.armed.store(false, Ordering::SeqCst);
    clock.clock.advance(secs(3));
    assert!(wait_until(LIMIT, || ka.responses().try_recv().is_ok()));
    assert_eq!(ka.ended(), None);
    l.close().unwrap();
    let h = l.health();
    assert!(!h.keepalive_running && !h.ticker_running);
    assert_eq!(h.keepalive_stopped.as_deref(), Some("the lessor is closed"));
    assert_eq!(
        h.ticker_stopped.as_deref(),
        Some("built without a ticker (Builder::ticker(false))")
    );
}

/// A call whose storage panics (damage the open-time check could not see) gets
/// `Error::Corrupted` and poisons the lessor, never a panic; renewals go on; once the fault
/// clears, `recover` brings it back with nothing lost.
#[test]
fn a_call_whose_storage_panics_gets_corrupted_and_poisons() {
    let disk = PanicDisk::default();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .cache_size(0)
        .open_with_backend(disk.clone())
        .unwrap();
    let lease = l.grant(secs(60)).unwrap();
    l.put_with_lease("/lock", "holder", lease.id).unwrap();

    disk.armed.store(true, Ordering::SeqCst);
    let got = l.put_with_lease("/other", "x", lease.id);
    assert!(
        matches!(&got, Err(Error::Corrupted(why)) if why.contains("injected panic")),
        "{got:?}"
    );
    assert!(l.health().poisoned);
    assert!(matches!(l.put("/x", "x"), Err(Error::Poisoned)));
    // A read answers what was acknowledged, or refuses: never a panic, never a wrong answer.
    match l.get("/lock") {
        Ok(kv) => assert_eq!(kv.unwrap().value, b"holder"),
        Err(e) => assert!(matches!(e, Error::Poisoned | Error::Corrupted(_)), "{e:?}"),
    }
    assert!(l.renew(lease.id).is_ok(), "renewals go on");
    assert!(
        l.recover().is_err(),
        "the fault lasts: reopening fails, contained"
    );

    disk.armed.store(false, Ordering::SeqCst);
    l.recover().unwrap();
    assert!(!l.health().poisoned);
    assert_eq!(l.get("/lock").unwrap().unwrap().value, b"holder");
    assert_eq!(l.get("/other").unwrap(), None);
    l.put("/after", "y").unwrap();
    l.verify().unwrap();
    l.close().unwrap();
}
