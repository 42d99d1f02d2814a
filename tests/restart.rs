//! Restart policies: what each lease has left after a clean close, after a crash (a lessor that
//! is never closed, and a real process killed with SIGKILL), and after a policy switch; the
//! checkpoints that make it so; and the upgrade of format-1 files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{MemDisk, id, secs, test_dir, wait_until};
use lessor::{Clock, Error, LeaseId, Lessor, ManualClock, RestartPolicy};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const POLICIES: [RestartPolicy; 3] = [
    RestartPolicy::Reset,
    RestartPolicy::Preserve,
    RestartPolicy::Absolute,
];

const META: TableDefinition<&str, u64> = TableDefinition::new("lessor.meta");
const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("lessor.leases");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("lessor.kv");
const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lessor.lease_keys");

/// A view of a [`MemDisk`] that a simulated crash cuts off: once [`Fenced::crash`] is called,
/// every I/O through it fails, as if its process had died, while a new view of the same bytes
/// opens the database as the next process would. (A lessor that is forgotten rather than closed
/// keeps its ticker thread; the fence makes sure it can no longer touch the file.)
#[derive(Clone, Debug)]
struct Fenced {
    disk: MemDisk,
    alive: Arc<AtomicBool>,
}

impl Fenced {
    fn new(disk: &MemDisk) -> Fenced {
        Fenced {
            disk: disk.clone(),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }

    fn crash(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> std::io::Result<()> {
        if self.alive.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(std::io::Error::other("the process has crashed"))
        }
    }
}

impl redb::StorageBackend for Fenced {
    fn len(&self) -> std::io::Result<u64> {
        self.check()?;
        self.disk.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.check()?;
        self.disk.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.disk.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.disk.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.disk.write(offset, data)
    }
}

/// A lessor on `disk` (seen through a fresh fence) under `policy`, driven by `clock`.
fn open(
    disk: &MemDisk,
    clock: &ManualClock,
    policy: RestartPolicy,
    ticker: bool,
) -> (Lessor, Fenced) {
    let fenced = Fenced::new(disk);
    let lessor = Lessor::builder()
        .clock(clock.clone())
        .restart_policy(policy)
        .ticker(ticker)
        .open_with_backend(fenced.clone())
        .unwrap();
    (lessor, fenced)
}

/// The TTL lease `id` has left.
fn left(l: &Lessor, id: LeaseId) -> Duration {
    l.time_to_live(id).unwrap().remaining
}

/// `clock`'s wall time plus `by`, for a clock that reopens the database after a downtime.
fn later(clock: &ManualClock, by: Duration) -> ManualClock {
    ManualClock::starting_at(clock.wall() + by)
}

/// "Crashes" the process that runs `l`: it is never closed (no final expiry, no final
/// checkpoint, its ticker thread lives on) and can no longer reach the disk.
fn crash(l: Lessor, fence: &Fenced) {
    fence.crash();
    std::mem::forget(l);
}

#[test]
fn each_policy_across_a_clean_close() {
    for policy in POLICIES {
        let disk = MemDisk::new();
        let clock = ManualClock::new();
        let (l, _) = open(&disk, &clock, policy, false);
        let a = l.grant(secs(10)).unwrap(); // never renewed
        let b = l.grant(secs(10)).unwrap(); // renewed at 2 s: until 12 s
        let c = l.grant(secs(10)).unwrap(); // renewed at 1 s and 3 s: until 13 s
        let d = l.grant(secs(5)).unwrap(); // renewed at 1 s: until 6 s
        l.put_with_lease("/d", "held", d.id).unwrap();
        clock.advance(secs(1));
        l.renew(c.id).unwrap();
        l.renew(d.id).unwrap();
        clock.advance(secs(1));
        l.renew(b.id).unwrap();
        clock.advance(secs(1));
        l.renew(c.id).unwrap();
        clock.advance(secs(1));
        let rev = l.revision().unwrap();
        l.close().unwrap();
        let written = l.health().checkpointed_leases;

        // Reopened with the wall clock 3 s later: the process was down for 3 s.
        let reopened = later(&clock, secs(3));
        let (l, _) = open(&disk, &reopened, policy, false);
        let got: Vec<_> = [a.id, b.id, c.id].iter().map(|&i| left(&l, i)).collect();
        match policy {
            RestartPolicy::Reset => {
                assert_eq!(written, 0, "{policy:?}: no checkpoint work at all");
                assert_eq!(got, [secs(10); 3]);
                assert_eq!(left(&l, d.id), secs(5));
            }
            RestartPolicy::Preserve => {
                // renewed ones were written by close; the others still say what grant wrote
                assert_eq!(written, 3, "{policy:?}");
                assert_eq!(got, [secs(6), secs(8), secs(9)]);
                assert_eq!(left(&l, d.id), secs(2));
            }
            _ => {
                assert_eq!(written, 3, "{policy:?}");
                assert_eq!(got, [secs(3), secs(5), secs(6)]);
                // d's wall-clock deadline (6 s) passed while it was down (at 7 s): dead at once
                assert!(matches!(l.time_to_live(d.id), Err(Error::LeaseNotFound(_))));
                assert!(matches!(l.renew(d.id), Err(Error::LeaseNotFound(_))));
                assert!(!l.leases().unwrap().contains(&d.id));
                assert_eq!(l.revoke_expired().unwrap(), vec![d.id]);
                assert!(l.get("/d").unwrap().is_none());
                assert_eq!(l.revision().unwrap().get(), rev.get() + 1);
            }
        }
        l.verify().unwrap();
        // expiry carries on from the restored deadlines
        reopened.advance(got[0]);
        let due = match policy {
            RestartPolicy::Reset => vec![d.id, a.id, b.id, c.id],
            RestartPolicy::Preserve => vec![d.id, a.id],
            _ => vec![a.id],
        };
        assert_eq!(l.revoke_expired().unwrap(), due, "{policy:?}");
    }
}

#[test]
fn a_lease_whose_wall_deadline_passed_while_down_is_revoked_at_once_by_the_ticker() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let (l, _) = open(&disk, &clock, RestartPolicy::Absolute, false);
    let lock = l.grant(secs(5)).unwrap();
    let session = l.grant(secs(60)).unwrap();
    l.put_with_lease("/lock", "holder-1", lock.id).unwrap();
    l.put_with_lease("/session", "s", session.id).unwrap();
    clock.advance(secs(1));
    let rev = l.revision().unwrap();
    l.close().unwrap();

    // Down for 10 s: the lock's wall-clock deadline passed meanwhile.
    let (l, _) = open(
        &disk,
        &later(&clock, secs(10)),
        RestartPolicy::Absolute,
        true,
    );
    assert!(matches!(l.renew(lock.id), Err(Error::LeaseNotFound(_))));
    assert!(wait_until(secs(10), || l.get("/lock").unwrap().is_none()));
    assert_eq!(l.leases().unwrap(), vec![session.id]);
    assert_eq!(left(&l, session.id), secs(49));
    assert_eq!(l.revision().unwrap().get(), rev.get() + 1);
    l.verify().unwrap();
    // a new holder can take the lock at once
    let next = l.grant(secs(5)).unwrap();
    l.put_with_lease("/lock", "holder-2", next.id).unwrap();
}

#[test]
fn each_policy_across_a_crash_after_a_ticker_checkpoint() {
    for policy in POLICIES {
        let disk = MemDisk::new();
        let clock = ManualClock::new();
        let fenced = Fenced::new(&disk);
        let l = Lessor::builder()
            .clock(clock.clone())
            .restart_policy(policy)
            .checkpoint_interval(secs(5))
            .open_with_backend(fenced.clone())
            .unwrap();
        let a = l.grant(secs(30)).unwrap(); // never renewed
        let b = l.grant(secs(30)).unwrap(); // renewed before the checkpoint
        let c = l.grant(secs(30)).unwrap(); // renewed after it
        clock.advance(secs(2));
        l.renew(b.id).unwrap(); // until 32 s
        clock.advance(secs(3)); // 5 s: the checkpoint interval has passed
        if policy != RestartPolicy::Reset {
            assert!(wait_until(secs(10), || l.health().checkpoints >= 1));
            assert_eq!(l.health().checkpointed_leases, 1, "only b changed");
        }
        clock.advance(secs(2));
        l.renew(c.id).unwrap(); // until 37 s, never written
        clock.advance(secs(1));
        assert_eq!(
            l.health().checkpoints,
            u64::from(policy != RestartPolicy::Reset)
        );
        crash(l, &fenced);

        // The next process starts 2 s of wall time later (at 10 s).
        let (l, _) = open(&disk, &later(&clock, secs(2)), policy, false);
        let got: Vec<_> = [a.id, b.id, c.id].iter().map(|&i| left(&l, i)).collect();
        let want = match policy {
            RestartPolicy::Reset => [secs(30); 3],
            // as of the checkpoint at 5 s; c's renewal at 7 s was lost with the process
            RestartPolicy::Preserve => [secs(25), secs(27), secs(25)],
            // wall-clock deadlines 30, 32, 30 s, reopened at 10 s
            _ => [secs(20), secs(22), secs(20)],
        };
        assert_eq!(got, want, "{policy:?}");
        l.verify().unwrap();
    }
}

#[test]
fn a_crash_before_any_checkpoint_keeps_the_grants_deadlines() {
    for policy in [RestartPolicy::Preserve, RestartPolicy::Absolute] {
        let disk = MemDisk::new();
        let clock = ManualClock::new();
        let (l, fence) = open(&disk, &clock, policy, false);
        clock.advance(secs(1));
        let a = l.grant(secs(10)).unwrap();
        clock.advance(secs(4));
        l.renew(a.id).unwrap();
        crash(l, &fence);
        let (l, _) = open(&disk, &later(&clock, secs(3)), policy, false);
        // Only the grant reached the disk: 10 s from 1 s. Preserve counts no time since the
        // database's last uptime mark (the open, at 0 s), Absolute counts all of it (7 s).
        let want = match policy {
            RestartPolicy::Preserve => secs(10),
            _ => secs(3),
        };
        assert_eq!(left(&l, a.id), want, "{policy:?}");
    }
}

#[test]
fn checkpoints_rewrite_only_renewed_leases_in_bounded_batches() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .restart_policy(RestartPolicy::Preserve)
        .checkpoint_interval(secs(1))
        .checkpoint_batch_size(100)
        .open_with_backend(disk.clone())
        .unwrap();
    let leases: Vec<LeaseId> = (0..250).map(|_| l.grant(secs(60)).unwrap().id).collect();
    clock.advance(Duration::from_millis(500));
    for &i in &leases[..230] {
        l.renew(i).unwrap();
    }
    clock.advance(Duration::from_millis(500)); // 1 s: a pass of 100 + 100 + 30
    assert!(wait_until(secs(10), || l.health().checkpointed_leases == 230));
    assert_eq!(l.health().checkpoints, 3);

    // Nothing renewed: the next pass writes the uptime alone, no lease.
    clock.advance(secs(1));
    assert!(wait_until(secs(10), || l.health().checkpoints == 4));
    assert_eq!(l.health().checkpointed_leases, 230);

    // Five renewed, and a clean close writes exactly those, once.
    for &i in &leases[240..245] {
        l.renew(i).unwrap();
    }
    l.close().unwrap();
    assert_eq!(l.health().checkpointed_leases, 235);
    assert_eq!(l.health().checkpoints, 5);
}

#[test]
fn no_checkpoint_is_ever_written_under_reset() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .checkpoint_interval(Duration::from_millis(1))
        .open_with_backend(disk.clone())
        .unwrap();
    let a = l.grant(secs(60)).unwrap();
    for _ in 0..20 {
        clock.advance(secs(1));
        l.renew(a.id).unwrap();
    }
    // An expiry the ticker must act on shows that it has been round its loop since.
    l.grant(Duration::from_millis(10)).unwrap();
    clock.advance(secs(1));
    assert!(wait_until(secs(10), || l.leases().unwrap() == vec![a.id]));
    l.close().unwrap();
    assert_eq!(l.health().checkpoints, 0);
    assert_eq!(l.health().checkpointed_leases, 0);
    // and the file says so: the next session that checkpoints must not trust these records
    let db = redb::Database::builder()
        .create_with_backend(disk.clone())
        .unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(META).unwrap();
    assert_eq!(meta.get("checkpoints").unwrap().unwrap().value(), 0);
}

#[test]
fn switching_policies_never_trusts_checkpoints_a_reset_session_left_stale() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    // Granted under Preserve (checkpointed), then kept alive for 60 s under Reset, which writes
    // no checkpoints: the record's deadlines are a minute stale.
    let (l, _) = open(&disk, &clock, RestartPolicy::Preserve, false);
    let a = l.grant(secs(10)).unwrap();
    l.close().unwrap();
    let (l, fence) = open(&disk, &clock, RestartPolicy::Reset, false);
    for _ in 0..12 {
        clock.advance(secs(5));
        l.renew(a.id).unwrap();
    }
    crash(l, &fence);

    // Under Absolute the stale wall deadline (10 s) would revoke it; it gets a full TTL instead,
    // written at open, so that a crash right away does not bring the stale deadline back.
    let reopened = later(&clock, secs(1));
    let (l, fence) = open(&disk, &reopened, RestartPolicy::Absolute, false);
    assert_eq!(left(&l, a.id), secs(10));
    reopened.advance(secs(2));
    crash(l, &fence);
    let (l, _) = open(
        &disk,
        &later(&reopened, secs(1)),
        RestartPolicy::Absolute,
        false,
    );
    assert_eq!(left(&l, a.id), secs(7));
    l.close().unwrap();
}

#[test]
fn reopening_under_another_policy_reads_the_same_checkpoints() {
    let disk = MemDisk::new();
    let clock = ManualClock::new();
    let (l, _) = open(&disk, &clock, RestartPolicy::Absolute, false);
    let a = l.grant(secs(100)).unwrap();
    clock.advance(secs(10));
    l.close().unwrap(); // 90 s left, wall deadline at 100 s

    // Down 20 s, then 5 s under Preserve: 90 s left as of the open, 85 s at its close.
    let t1 = later(&clock, secs(20));
    let (l, _) = open(&disk, &t1, RestartPolicy::Preserve, false);
    assert_eq!(left(&l, a.id), secs(90));
    t1.advance(secs(5));
    l.close().unwrap();

    // Down 5 s more; Absolute counts every downtime (wall 40 s), Preserve none.
    let t2 = later(&t1, secs(5));
    let (l, _) = open(&disk, &t2, RestartPolicy::Absolute, false);
    assert_eq!(left(&l, a.id), secs(60));
    l.close().unwrap();
    let (l, _) = open(&disk, &t2, RestartPolicy::Preserve, false);
    assert_eq!(left(&l, a.id), secs(85));
    l.close().unwrap();
}

#[test]
fn checkpoints_racing_renewals_grants_and_revocations_keep_the_file_true() {
    // The system clock and a 1 ms interval, so that passes (in batches of 7) run all the time
    // while one thread renews and another grants and revokes, growing and shrinking the shards.
    let disk = MemDisk::new();
    let l = Lessor::builder()
        .restart_policy(RestartPolicy::Preserve)
        .checkpoint_interval(Duration::from_millis(1))
        .checkpoint_batch_size(7)
        .open_with_backend(disk.clone())
        .unwrap();
    let ids: Vec<LeaseId> = (0..200).map(|_| l.grant(secs(60)).unwrap().id).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (l, ids, stop) = (l.clone(), ids.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for &i in &ids {
                    l.renew(i).unwrap();
                }
            }
        })
    };
    let churn = {
        let (l, stop) = (l.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let extra: Vec<LeaseId> = (0..40).map(|_| l.grant(secs(60)).unwrap().id).collect();
                for i in extra {
                    l.revoke(i).unwrap();
                }
            }
        })
    };
    let busy = wait_until(secs(30), || {
        l.health().checkpoints >= 30 && l.health().checkpointed_leases >= 400
    });
    stop.store(true, Ordering::Relaxed);
    renewer.join().unwrap();
    churn.join().unwrap();
    assert!(busy, "{:?}", l.health());
    assert_eq!(l.health().ticker_failures, 0);
    let closed = Instant::now();
    l.close().unwrap();

    // A clean close wrote every deadline exactly: each lease comes back with 60 s less the
    // (real) time between its last renewal and the close.
    let l = Lessor::builder()
        .restart_policy(RestartPolicy::Preserve)
        .ticker(false)
        .open_with_backend(disk)
        .unwrap();
    assert_eq!(l.leases().unwrap(), ids);
    let slack = closed.elapsed() + secs(2);
    for &i in &ids {
        let left = left(&l, i);
        assert!(
            left <= secs(60) && left + slack >= secs(60),
            "{i}: {left:?}"
        );
    }
    l.verify().unwrap();
}

/// postcard's unsigned varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Writes a database as format 1 did: lease 1 (TTL 10 s) holding key `/a`, lease 2 (TTL 20 s).
fn write_format_1(disk: &MemDisk, format: u64) {
    let db = redb::Database::builder()
        .create_with_backend(disk.clone())
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", format).unwrap();
        meta.insert("revision", 1).unwrap();
        meta.insert("max_lease_id", 2).unwrap();
        let mut leases = txn.open_table(LEASES).unwrap();
        for (lease, ttl) in [(1, 10_000_000_000), (2, 20_000_000_000)] {
            let mut record = vec![1]; // lease record v1: ttl_nanos, granted_revision
            varint(ttl, &mut record);
            varint(0, &mut record);
            leases.insert(lease, record.as_slice()).unwrap();
        }
        // key record v1: lease, create_revision, mod_revision, version, value
        let mut kv = vec![1];
        for n in [1, 1, 1, 1, 5] {
            varint(n, &mut kv);
        }
        kv.extend_from_slice(b"10001");
        txn.open_table(KV)
            .unwrap()
            .insert(b"/a".as_slice(), kv.as_slice())
            .unwrap();
        txn.open_table(LEASE_KEYS)
            .unwrap()
            .insert((1, b"/a".as_slice()), ())
            .unwrap();
    }
    txn.commit().unwrap();
}

/// `format` and `checkpoints` from the meta table, and the version byte of each lease record.
fn read_format(disk: &MemDisk) -> (u64, u64, Vec<u8>) {
    let db = redb::Database::builder()
        .create_with_backend(disk.clone())
        .unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(META).unwrap();
    let get = |k: &str| meta.get(k).unwrap().map_or(0, |v| v.value());
    let versions = read
        .open_table(LEASES)
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value()[0])
        .collect();
    (get("format"), get("checkpoints"), versions)
}

#[test]
fn a_format_1_file_opens_and_is_upgraded() {
    for policy in POLICIES {
        let disk = MemDisk::new();
        write_format_1(&disk, 1);
        assert_eq!(read_format(&disk), (1, 0, vec![1, 1]));
        let clock = ManualClock::new();
        let (l, _) = open(&disk, &clock, policy, false);
        // no checkpoint in a v1 record: a full TTL under every policy
        assert_eq!(left(&l, id(1)), secs(10), "{policy:?}");
        assert_eq!(left(&l, id(2)), secs(20));
        assert_eq!(
            l.time_to_live_with_keys(id(1)).unwrap().keys,
            vec![b"/a".to_vec()]
        );
        assert_eq!(l.get("/a").unwrap().unwrap().value, b"10001");
        assert_eq!(l.revision().unwrap().get(), 1);
        assert_eq!(l.grant(secs(100)).unwrap().id, id(3));
        l.verify().unwrap();
        clock.advance(secs(4));
        l.close().unwrap();
        let (format, checkpoints, versions) = read_format(&disk);
        assert_eq!(format, 3);
        if policy == RestartPolicy::Reset {
            // nothing rewritten; the grant since writes v3
            assert_eq!((checkpoints, versions), (0, vec![1, 1, 3]));
        } else {
            // rewritten at open with a full TTL from then
            assert_eq!((checkpoints, versions), (1, vec![3, 3, 3]));
            let (l, _) = open(&disk, &clock, policy, false);
            assert_eq!(left(&l, id(1)), secs(6), "{policy:?}");
            l.close().unwrap();
        }
    }
}

/// Writes a database as format 2 did: lease 1 (TTL 10 s, a v2 record: a checkpoint, no
/// checksum) holding key `/a` (a v1 record: no checksum), with current checkpoints.
fn write_format_2(disk: &MemDisk) {
    write_format_1(disk, 2);
    let db = redb::Database::builder()
        .create_with_backend(disk.clone())
        .unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("checkpoints", 1).unwrap();
        meta.insert("uptime", 0).unwrap();
        let mut leases = txn.open_table(LEASES).unwrap();
        leases.remove(2).unwrap();
        // lease record v2: ttl_nanos, granted_revision, uptime_deadline, wall_deadline
        let mut record = vec![2];
        for n in [10_000_000_000, 0, 10_000_000_000, u64::MAX >> 2] {
            varint(n, &mut record);
        }
        leases.insert(1, record.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_format_2_file_opens_its_records_without_checksums_and_is_upgraded() {
    let disk = MemDisk::new();
    write_format_2(&disk);
    assert_eq!(read_format(&disk), (2, 1, vec![2]));
    let clock = ManualClock::new();
    let (l, _) = open(&disk, &clock, RestartPolicy::Preserve, false);
    assert_eq!(left(&l, id(1)), secs(10));
    assert_eq!(
        l.time_to_live_with_keys(id(1)).unwrap().keys,
        vec![b"/a".to_vec()]
    );
    assert_eq!(l.get("/a").unwrap().unwrap().value, b"10001");
    l.put("/b", "new").unwrap();
    l.verify().unwrap();
    l.close().unwrap();
    // Format 3 now; the lease's record, not renewed, is not rewritten: still v2.
    assert_eq!(read_format(&disk), (3, 1, vec![2]));
    let (l, _) = open(&disk, &clock, RestartPolicy::Preserve, false);
    assert_eq!(l.get("/a").unwrap().unwrap().value, b"10001");
    assert_eq!(l.get("/b").unwrap().unwrap().value, b"new");
    assert_eq!(l.leases().unwrap(), vec![id(1)]);
    l.verify().unwrap();
    l.close().unwrap();
}

#[test]
fn a_newer_format_is_refused_and_left_alone() {
    let disk = MemDisk::new();
    write_format_1(&disk, 4);
    let err = Lessor::builder()
        .ticker(false)
        .open_with_backend(disk.clone())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::IncompatibleFormat {
                found: 4,
                supported: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(read_format(&disk), (4, 0, vec![1, 1]));
}

/// Set in the child process of the killed-process tests: `<policy>|<path>`.
const CHILD_ENV: &str = "LESSOR_TEST_RESTART_CHILD";

/// The child: grants two leases on the real file at `path`, renews the second one a second
/// later, waits for a checkpoint to write it, prints what both have left and the wall time, and
/// waits to be killed.
fn child(spec: &str) -> ! {
    let (policy, path) = spec.split_once('|').unwrap();
    let policy = match policy {
        "preserve" => RestartPolicy::Preserve,
        _ => RestartPolicy::Absolute,
    };
    let l = Lessor::builder()
        .restart_policy(policy)
        .checkpoint_interval(Duration::from_millis(100))
        .open(path)
        .unwrap();
    let a = l.grant(secs(60)).unwrap();
    let b = l.grant(secs(60)).unwrap();
    l.put_with_lease("/a", "", a.id).unwrap();
    // So that b's deadline is a second away from its grant's: not waiting for any expiry.
    std::thread::sleep(secs(1));
    l.renew(b.id).unwrap();
    let before = l.health().checkpointed_leases;
    assert!(wait_until(secs(30), || l.health().checkpointed_leases > before));
    // That count may come from a pass that read b's deadline just before the renewal (a loaded
    // machine widens the window); the pass after it writes the renewal. Give it a second.
    let first = l.health().checkpointed_leases;
    wait_until(secs(1), || l.health().checkpointed_leases > first);
    let (left_a, left_b) = (left(&l, a.id), left(&l, b.id));
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    println!(
        "ready {} {} {}",
        left_a.as_nanos(),
        left_b.as_nanos(),
        wall.as_nanos()
    );
    // Killed long before this; the limit only keeps a parent that died from leaving us behind.
    std::thread::sleep(secs(120));
    std::process::exit(1);
}

/// What [`kill_child_and_reopen`] saw.
struct Killed {
    /// What the child printed: what leases 1 and 2 had left, and the wall time then.
    printed: [Duration; 3],
    /// Real time between reading that and the kill.
    killed_after: Duration,
    /// What the reopened leases 1 and 2 have left.
    got: [Duration; 2],
    /// The wall time right after reading them.
    wall: Duration,
}

/// Runs the child in a new process under `policy`, kills it with SIGKILL once it is ready, and
/// reopens its file.
fn kill_child_and_reopen(test: &str, policy: &str) -> Killed {
    let dir = test_dir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{policy}|{}", dir.path.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut said = String::new();
    for line in BufReader::new(stdout).lines() {
        // The harness may have written "test <name> ... " on the same line first.
        let line = line.unwrap();
        if let Some(at) = line.find("ready ") {
            said = line[at..].to_string();
            break;
        }
    }
    let read_at = Instant::now();
    child.kill().unwrap(); // SIGKILL: no close, no final checkpoint
    let killed_after = read_at.elapsed();
    child.wait().unwrap();
    assert!(!said.is_empty(), "the child never got ready");
    let printed: Vec<Duration> = said
        .split_whitespace()
        .skip(1)
        .map(|n| Duration::from_nanos(n.parse().unwrap()))
        .collect();

    let policy = if policy == "preserve" {
        RestartPolicy::Preserve
    } else {
        RestartPolicy::Absolute
    };
    let l = Lessor::builder()
        .restart_policy(policy)
        .ticker(false)
        .open(&dir.path)
        .unwrap();
    let got = [left(&l, id(1)), left(&l, id(2))];
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(
        l.time_to_live_with_keys(id(1)).unwrap().keys,
        vec![b"/a".to_vec()]
    );
    l.verify().unwrap();
    l.close().unwrap();
    Killed {
        printed: [printed[0], printed[1], printed[2]],
        killed_after,
        got,
        wall,
    }
}

/// `got` is within `tolerance` of `want`.
fn near(got: Duration, want: Duration, tolerance: Duration) -> bool {
    got.abs_diff(want) <= tolerance
}

#[test]
fn a_killed_process_restores_wall_clock_deadlines_under_absolute() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let test = "a_killed_process_restores_wall_clock_deadlines_under_absolute";
    let Killed {
        printed: [a, b, printed_at],
        got: [got_a, got_b],
        wall: now,
        ..
    } = kill_child_and_reopen(test, "absolute");
    // Each deadline is where the child saw it, in wall-clock time; what is left is that minus
    // the wall time passed since. The real clock is involved: allow for scheduling.
    let passed = now.saturating_sub(printed_at);
    let tolerance = Duration::from_millis(400);
    assert!(
        near(got_a, a.saturating_sub(passed), tolerance),
        "a: {got_a:?} vs {a:?} - {passed:?}"
    );
    assert!(
        near(got_b, b.saturating_sub(passed), tolerance),
        "b: {got_b:?} vs {b:?} - {passed:?}"
    );
    // b's renewal (a second after a's grant) reached the file
    assert!(
        got_b > got_a + Duration::from_millis(600),
        "{got_a:?} {got_b:?}"
    );
}

#[test]
fn a_killed_process_restores_remaining_ttls_under_preserve() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let test = "a_killed_process_restores_remaining_ttls_under_preserve";
    let Killed {
        printed: [a, b, _],
        killed_after,
        got: [got_a, got_b],
        ..
    } = kill_child_and_reopen(test, "preserve");
    // What was left as of the child's last checkpoint: checkpoints ran every 100 ms until the
    // kill, so somewhere between what it printed (minus the time until the kill) and that (plus
    // one interval); the time the file was closed does not count.
    let slack = Duration::from_millis(400);
    for (got, printed) in [(got_a, a), (got_b, b)] {
        assert!(got <= printed + slack, "{got:?} vs printed {printed:?}");
        assert!(
            got + killed_after + slack >= printed,
            "{got:?} vs printed {printed:?}, killed {killed_after:?} later"
        );
    }
    assert!(
        got_b > got_a + Duration::from_millis(600),
        "{got_a:?} {got_b:?}"
    );
}
