//! `verify()` runs redb's own integrity check (its checksums) too, on a copy of the file, while
//! the lessor runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::secs;
use lessor::{Error, Lessor, ManualClock, Problem};

const SENTINEL: &[u8] = b"VALUE-THAT-IS-EASY-TO-FIND-IN-THE-FILE";

/// Flips a byte of every copy of `needle` in the file, behind the open database's back.
fn damage(path: &std::path::Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for &at in &hits {
        file.seek(SeekFrom::Start(at as u64 + 3)).unwrap();
        file.write_all(&[bytes[at + 3] ^ 0x20]).unwrap();
    }
    file.sync_all().unwrap();
    hits.len()
}

#[test]
fn verify_reports_pages_damaged_after_a_clean_open_through_redbs_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    let l = Lessor::builder()
        .clock(ManualClock::new())
        .ticker(false)
        .open(&path)
        .unwrap();
    let lease = l.grant(secs(60)).unwrap();
    for n in 0..20 {
        l.put_with_lease(format!("/k/{n}"), SENTINEL, lease.id)
            .unwrap();
    }
    l.verify().unwrap(); // sound, with redb's check too
    assert!(l.verify_report().unwrap().is_empty());

    assert!(damage(&path, SENTINEL) > 0);
    // The lessor's own checks read its cache and see nothing; redb's checksums do.
    let problems = l.verify_report().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::FileDamaged { detail }
                if detail.starts_with("redb's integrity check failed"))),
        "{problems:?}"
    );
    match l.verify() {
        Err(Error::Corrupted(msg)) => assert!(msg.contains("redb's integrity check"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // Renewals never waited on it, and the lessor still works.
    l.renew(lease.id).unwrap();
}

#[test]
fn verify_runs_redbs_check_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    let l = Lessor::open(&path).unwrap();
    let lease = l.grant(secs(60)).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for n in 0..200 {
                l.put_with_lease(format!("/w/{n}"), "v", lease.id).unwrap();
                l.renew(lease.id).unwrap();
            }
        });
        for _ in 0..5 {
            assert_eq!(l.verify_report().unwrap(), Vec::<Problem>::new());
        }
        writer.join().unwrap();
    });
    l.verify().unwrap();
}

#[test]
fn verify_report_names_each_problem_with_its_key_and_lease() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    let l = Lessor::open(&path).unwrap();
    let lease = l.grant(secs(60)).unwrap();
    l.put_with_lease("/a", "1", lease.id).unwrap();
    l.put("/free", "2").unwrap();
    l.close().unwrap();
    // Behind lessor's back: /a loses its index entry, and the index gains an entry for /free
    // (attached to no lease) under the lease.
    {
        let index: redb::TableDefinition<(u64, &[u8]), ()> =
            redb::TableDefinition::new("lessor.lease_keys");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(index).unwrap();
            t.remove((lease.id.get(), &b"/a"[..])).unwrap();
            t.insert((lease.id.get(), &b"/free"[..]), ()).unwrap();
        }
        txn.commit().unwrap();
    }
    let problems = lessor::Inspector::open(&path, lessor::RestartPolicy::default())
        .unwrap()
        .verify_report()
        .unwrap();
    assert_eq!(
        problems,
        vec![
            Problem::KeyMissingFromIndex {
                key: b"/a".to_vec(),
                lease: lease.id.get()
            },
            Problem::IndexedKeyNotAttached {
                key: b"/free".to_vec(),
                lease: lease.id.get(),
                owner: Some(0)
            },
        ]
    );
    assert_eq!(
        problems[1].to_string(),
        "index lists key /free under lease 1, but the key has no lease"
    );
}
