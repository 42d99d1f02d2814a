//! `Lessor::backup`: a consistent copy while the lessor runs, that opens as a lessor database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{secs, test_dir};
use lessor::{Durability, Error, Inspector, Lessor, ManualClock, RestartPolicy};

/// The files in the folder, by name.
fn files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_backup_taken_while_writes_go_on_opens_with_every_lease_and_key_acknowledged_before_it() {
    let t = test_dir();
    let copy = t.dir.path().join("backup.redb");
    let l = Lessor::open(&t.path).unwrap();
    let mut before = BTreeSet::new();
    for n in 0..50 {
        let lease = l.grant(secs(600)).unwrap();
        let key = format!("/before/{n:03}");
        l.put_with_lease(&key, "v", lease.id).unwrap();
        before.insert((lease.id, key));
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lease = l.grant(secs(600)).unwrap();
                l.put_with_lease(format!("/during/{n:06}"), "v", lease.id)
                    .unwrap();
                if n.is_multiple_of(3) {
                    l.revoke(lease.id).unwrap();
                }
                n += 1;
            }
            n
        });
        std::thread::sleep(Duration::from_millis(20));
        l.backup(&copy).unwrap();
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
    });
    // No temporary file is left beside it.
    assert_eq!(
        files(t.dir.path()),
        ["backup.redb", "lessor.redb"].map(String::from).into()
    );
    // Read-only, as the CLI's dump and verify read it: consistent, everything from before.
    let inspector = Inspector::open(&copy, RestartPolicy::Reset).unwrap();
    assert!(inspector.verify_report().unwrap().is_empty());
    let leases = inspector.leases().unwrap();
    for (id, key) in &before {
        let info = leases
            .iter()
            .find(|i| i.id == *id)
            .expect("lease in the copy");
        assert_eq!(info.keys, vec![key.as_bytes().to_vec()]);
    }
    // Each lease has at most its one key (the writer grants, then puts, in two calls).
    assert!(leases.iter().all(|info| info.keys.len() <= 1));
    drop(inspector);
    // And it opens as a lessor database, while the original runs on.
    let restored = Lessor::open(&copy).unwrap();
    restored.verify().unwrap();
    for (id, key) in &before {
        assert_eq!(restored.get(key).unwrap().unwrap().lease, Some(*id));
    }
    restored.close().unwrap();
    l.verify().unwrap();
}

#[test]
fn a_backup_holds_batched_changes_acknowledged_but_not_yet_flushed() {
    let t = test_dir();
    let copy = t.dir.path().join("backup.redb");
    let l = Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .durability(Durability::Batched {
            max_delay: secs(3600),
        })
        .open(&t.path)
        .unwrap();
    let lease = l.grant(secs(60)).unwrap();
    l.put_with_lease("/batched", "v", lease.id).unwrap();
    l.put("/plain", "w").unwrap();
    l.backup(&copy).unwrap();
    let inspector = Inspector::open(&copy, RestartPolicy::Reset).unwrap();
    assert_eq!(
        inspector.get("/batched").unwrap().unwrap().lease,
        Some(lease.id)
    );
    assert_eq!(inspector.get("/plain").unwrap().unwrap().value, b"w");
    assert_eq!(inspector.revision(), l.revision().unwrap());
}

#[test]
fn a_backup_replaces_an_older_one_and_an_in_memory_lessor_can_be_backed_up() {
    let t = test_dir();
    let copy = t.dir.path().join("backup.redb");
    let l = Lessor::open_in_memory().unwrap();
    l.put("/a", "1").unwrap();
    l.backup(&copy).unwrap();
    l.put("/a", "2").unwrap();
    l.backup(&copy).unwrap();
    let inspector = Inspector::open(&copy, RestartPolicy::Reset).unwrap();
    assert_eq!(inspector.get("/a").unwrap().unwrap().value, b"2");
    assert_eq!(files(t.dir.path()), ["backup.redb".to_owned()].into());
}

#[test]
fn a_backup_to_an_open_database_a_directory_or_a_missing_folder_is_refused_and_leaves_nothing() {
    let t = test_dir();
    let l = Lessor::open(&t.path).unwrap();
    l.put("/k", "v").unwrap();
    let before = std::fs::read(&t.path).unwrap();
    // Its own file: the live database is never replaced.
    assert!(matches!(l.backup(&t.path), Err(Error::AlreadyOpen)));
    assert_eq!(std::fs::read(&t.path).unwrap(), before);
    // A directory.
    match l.backup(t.dir.path()) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::IsADirectory);
        }
        other => panic!("{other:?}"),
    }
    // A folder that does not exist.
    let missing = t.dir.path().join("no/such/folder/backup.redb");
    match l.backup(&missing) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(files(t.dir.path()), ["lessor.redb".to_owned()].into());
    l.verify().unwrap();
    l.close().unwrap();
    assert!(matches!(
        l.backup(t.dir.path().join("late.redb")),
        Err(Error::Closed)
    ));
}
