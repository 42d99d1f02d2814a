//! Restarts: what survives a close or a crash, the format check, and files that are not ours.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{id, manual_at, secs, test_dir};
use lessor::{Error, Lessor, ManualClock};

#[test]
fn reopening_restores_leases_keys_attachments_and_the_revision() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = manual_at(&dir.path, &clock);
    let a = l.grant(secs(10)).unwrap();
    let b = l.grant(secs(60)).unwrap();
    l.put_with_lease("/a", "1", a.id).unwrap();
    l.put_with_lease("/b", "2", b.id).unwrap();
    l.put("/free", "3").unwrap();
    l.put("/a", "1b").unwrap(); // detached by a plain put
    l.attach(a.id, ["/a"]).unwrap();
    let rev = l.revision().unwrap();
    let before = l.range("").unwrap();
    l.close().unwrap();

    clock.advance(secs(8));
    let l = manual_at(&dir.path, &clock);
    assert_eq!(l.leases().unwrap(), vec![a.id, b.id]);
    assert_eq!(l.revision().unwrap(), rev);
    assert_eq!(l.range("").unwrap(), before);
    assert_eq!(
        l.time_to_live_with_keys(a.id).unwrap().keys,
        vec![b"/a".to_vec()]
    );
    // etcd's rule: a full TTL again from the moment of opening
    assert_eq!(l.time_to_live(a.id).unwrap().remaining, secs(10));
    assert_eq!(l.time_to_live(b.id).unwrap().remaining, secs(60));
    l.verify().unwrap();
    // and expiry carries on from there
    clock.advance(secs(10));
    assert_eq!(l.revoke_expired().unwrap(), vec![a.id]);
    assert!(l.get("/a").unwrap().is_none());
}

#[test]
fn auto_ids_continue_after_the_highest_ever_issued() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = manual_at(&dir.path, &clock);
    l.grant(secs(10)).unwrap();
    let top = l.grant(secs(10)).unwrap();
    l.revoke(top.id).unwrap();
    drop(l);
    let l = manual_at(&dir.path, &clock);
    assert_eq!(
        l.grant(secs(10)).unwrap().id,
        id(3),
        "id 2 was revoked, never reused"
    );
    l.grant_with_id(id(100), secs(1)).unwrap();
    l.revoke(id(100)).unwrap();
    drop(l);
    let l = manual_at(&dir.path, &clock);
    assert_eq!(l.grant(secs(10)).unwrap().id, id(101));
}

#[test]
fn a_dropped_lessor_without_close_reopens_intact() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = manual_at(&dir.path, &clock);
    let lease = l.grant(secs(5)).unwrap();
    l.put_with_lease("/k", "v", lease.id).unwrap();
    drop(l);
    let l = manual_at(&dir.path, &clock);
    assert_eq!(l.get("/k").unwrap().unwrap().lease, Some(lease.id));
    l.verify().unwrap();
}

#[test]
fn dropping_the_last_handle_stops_the_ticker_and_frees_the_file() {
    let dir = test_dir();
    let l = Lessor::open(&dir.path).unwrap();
    assert!(l.health().ticker_running);
    let clone = l.clone();
    let lease = l.grant(secs(60)).unwrap();
    drop(l);
    assert!(clone.renew(lease.id).is_ok(), "a clone keeps it open");
    drop(clone);
    let again = Lessor::open(&dir.path).unwrap();
    assert_eq!(again.leases().unwrap(), vec![lease.id]);
}

#[test]
fn a_clean_close_revokes_what_has_expired_instead_of_resurrecting_it() {
    let dir = test_dir();
    let clock = ManualClock::new();
    let l = manual_at(&dir.path, &clock);
    let short = l.grant(secs(1)).unwrap();
    let long = l.grant(secs(100)).unwrap();
    l.put_with_lease("/short", "", short.id).unwrap();
    clock.advance(secs(2));
    l.close().unwrap();
    let l = manual_at(&dir.path, &clock);
    assert_eq!(l.leases().unwrap(), vec![long.id]);
    assert!(l.get("/short").unwrap().is_none());
}

#[test]
fn the_same_file_cannot_be_opened_twice_but_can_after_close() {
    let dir = test_dir();
    let l = Lessor::open(&dir.path).unwrap();
    assert!(matches!(Lessor::open(&dir.path), Err(Error::AlreadyOpen)));
    let clone = l.clone();
    l.close().unwrap();
    // the clone is closed too, and the file is free again
    assert!(matches!(clone.get("/x"), Err(Error::Closed)));
    let again = Lessor::open(&dir.path).unwrap();
    again.close().unwrap();
}

/// Set in the child process of `another_process_gets_already_open`.
const CHILD_ENV: &str = "LESSOR_TEST_OPEN_IN_CHILD";

#[test]
fn another_process_gets_already_open() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // We are the child: report what opening the parent's database gives.
        match Lessor::open(&path) {
            Err(Error::AlreadyOpen) => println!("child: already-open"),
            other => println!("child: unexpected {other:?}"),
        }
        return;
    }
    let dir = test_dir();
    let _l = Lessor::open(&dir.path).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "another_process_gets_already_open",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &dir.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("child: already-open"),
        "child said: {stdout}"
    );
}

#[test]
fn a_future_format_version_is_refused() {
    let dir = test_dir();
    Lessor::open(&dir.path).unwrap().close().unwrap();
    {
        let db = redb::Database::open(&dir.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("lessor.meta");
            txn.open_table(meta).unwrap().insert("format", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(matches!(
        Lessor::open(&dir.path),
        Err(Error::IncompatibleFormat {
            found: 99,
            supported: 3
        })
    ));
}

#[test]
fn a_redb_database_of_someone_else_is_refused() {
    let dir = test_dir();
    {
        let db = redb::Database::create(&dir.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("users");
            txn.open_table(t).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    assert!(matches!(
        Lessor::open(&dir.path),
        Err(Error::NotLessorDatabase(_))
    ));
    // and it was not touched
    let db = redb::Database::open(&dir.path).unwrap();
    let read = redb::ReadableDatabase::begin_read(&db).unwrap();
    assert_eq!(read.list_tables().unwrap().count(), 1);
}

#[test]
fn a_file_that_is_not_a_database_gets_an_error_not_a_panic() {
    let dir = test_dir();
    std::fs::write(
        &dir.path,
        b"hello, I am a text file and not a database at all\n".repeat(200),
    )
    .unwrap();
    let err = Lessor::open(&dir.path).unwrap_err();
    assert!(
        matches!(err, Error::NotLessorDatabase(_)),
        "unexpected: {err:?}"
    );
    assert!(err.to_string().contains("magic number"), "{err}");
    // the file is left as it was
    assert!(std::fs::read(&dir.path).unwrap().starts_with(b"hello"));
}

#[test]
fn a_truncated_database_gets_an_error_not_a_panic() {
    let dir = test_dir();
    let l = Lessor::open(&dir.path).unwrap();
    let lease = l.grant(secs(10)).unwrap();
    l.put_with_lease("/k", "v", lease.id).unwrap();
    l.close().unwrap();
    let bytes = std::fs::read(&dir.path).unwrap();
    for keep in [0, 100, 512, 4096, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&dir.path, &bytes[..keep]).unwrap();
        match Lessor::open(&dir.path) {
            // an empty file is a new database
            Ok(l) => assert!(
                keep == 0 && l.leases().unwrap().is_empty(),
                "opened a torn file of {keep}"
            ),
            Err(e) => assert!(
                matches!(
                    e,
                    Error::Corrupted(_) | Error::NotLessorDatabase(_) | Error::Storage(_)
                ),
                "{keep} bytes: {e:?}"
            ),
        }
    }
}

#[test]
fn bad_paths_get_io_errors() {
    let dir = test_dir();
    let err = Lessor::open(dir.dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "a directory: {err:?}");
    let err = Lessor::open(dir.dir.path().join("missing/sub/db.redb")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "a missing parent: {err:?}");
    assert!(err.to_string().contains("missing/sub/db.redb"));
}

#[test]
fn reopening_many_times_keeps_everything() {
    // Reopen on a memory disk (no fsync): 20 restarts with work in between.
    let disk = common::MemDisk::new();
    let clock = ManualClock::new();
    for round in 0..20u64 {
        let l = disk.open(&clock).unwrap();
        assert_eq!(l.range("").unwrap().len() as u64, round);
        let lease = l.grant(secs(1000)).unwrap();
        assert_eq!(lease.id, id(round + 1));
        l.put_with_lease(format!("/r{round}"), "", lease.id)
            .unwrap();
        l.verify().unwrap();
        if round % 2 == 0 {
            l.close().unwrap();
        }
        clock.advance(Duration::from_millis(10));
    }
}

#[test]
fn a_failed_commit_poisons_the_lessor_until_it_is_reopened() {
    let disk = common::MemDisk::new();
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    let lease = l.grant(secs(10)).unwrap();
    l.put_with_lease("/kept", "1", lease.id).unwrap();

    disk.fail_syncs(true);
    assert!(matches!(l.put("/lost?", "2"), Err(Error::Storage(_))));
    // Whether that write reached the disk is unknown, so writes wait for the reload; reads
    // answer what was acknowledged (never the failed write), and renewals go on.
    assert!(l.renew(lease.id).is_ok());
    assert_eq!(l.get("/kept").unwrap().unwrap().value, b"1");
    assert!(matches!(l.get("/lost?"), Ok(None) | Err(Error::Poisoned)));
    assert!(matches!(l.grant(secs(1)), Err(Error::Poisoned)));
    assert!(l.health().poisoned);
    l.close().unwrap();
    assert!(matches!(l.renew(lease.id), Err(Error::Closed)));

    disk.fail_syncs(false);
    let l = disk.open(&clock).unwrap();
    assert!(!l.health().poisoned);
    assert_eq!(l.leases().unwrap(), vec![lease.id]);
    assert_eq!(l.get("/kept").unwrap().unwrap().value, b"1");
    l.verify().unwrap();
    l.put("/after", "3").unwrap();
}

#[test]
fn the_ticker_stops_revoking_once_storage_fails_and_close_still_works() {
    let disk = common::MemDisk::new();
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .open_with_backend(disk.clone())
        .unwrap();
    let lease = l.grant(secs(1)).unwrap();
    l.put_with_lease("/k", "", lease.id).unwrap();
    disk.fail_syncs(true);
    clock.advance(secs(2));
    assert!(common::wait_until(secs(10), || l.health().poisoned));
    assert!(l.health().ticker_failures >= 1);
    l.close().unwrap();
    disk.fail_syncs(false);
    // Whether the failed expiry reached the disk is unknown; either way the lease and its key
    // went together, or came back together (with a full TTL).
    let l = disk.open(&clock).unwrap();
    let lease_back = l.leases().unwrap() == vec![lease.id];
    assert_eq!(lease_back, l.get("/k").unwrap().is_some());
    l.verify().unwrap();
}
