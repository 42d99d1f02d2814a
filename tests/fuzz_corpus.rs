//! Replays the committed corpora and the saved crash reproducers of the fuzz targets (`fuzz/`)
//! on stable, so that `cargo test` catches a regression without nightly or cargo-fuzz: each
//! target's check is shared with the target itself (`records` in `lessor::__fuzz`, `ops` in
//! `tests/support/model.rs`, `open` in `tests/support/open.rs`).
//!
//! The ignored tests write the seed corpora of `ops` and `open`:
//! `cargo test --test fuzz_corpus -- --ignored` (then shrink with `cargo fuzz cmin`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support {
    pub mod model;
    pub mod open;
}

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lessor::{Lessor, ManualClock, RestartPolicy};
use support::model::{self, Op};
use support::open::{self, Image, Tables};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The input files of `fuzz/<dir>/<target>/`, sorted; READMEs and dotfiles are not inputs.
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(dir).join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && name != "README.md"
        })
        .collect();
    files.sort();
    files
}

fn replay(files: &[PathBuf], check: fn(&[u8]) -> Result<(), String>) {
    for path in files {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(e) = check(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let files = inputs("corpus", target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ is empty");
    files
}

#[test]
fn records_corpus_replays() {
    replay(&corpus("records"), lessor::__fuzz::records);
}

#[test]
fn records_regressions_replay() {
    replay(&inputs("regressions", "records"), lessor::__fuzz::records);
}

#[test]
fn ops_corpus_replays() {
    replay(&corpus("ops"), model::check_bytes);
}

#[test]
fn ops_regressions_replay() {
    replay(&inputs("regressions", "ops"), model::check_bytes);
}

#[test]
fn open_corpus_replays() {
    replay(&corpus("open"), open::check_open);
}

#[test]
fn open_regressions_replay() {
    replay(&inputs("regressions", "open"), open::check_open);
}

/// The `ops` decoder reads back what the seed encoder writes.
#[test]
fn ops_seeds_decode_as_written() {
    for (name, batched, ops) in ops_seeds() {
        assert_eq!(
            model::decode(&model::encode(batched, &ops)),
            (batched, ops),
            "{name}"
        );
    }
}

/// The `open` target's table decoder reads back what the seed encoder writes.
#[test]
fn open_table_seeds_decode_as_written() {
    for (name, disk) in open_seed_databases() {
        let tables = Tables::read(&disk);
        assert_eq!(Tables::decode(&tables.encode()), tables, "{name}");
    }
}

fn ops_seeds() -> Vec<(&'static str, bool, Vec<Op>)> {
    use Op::*;
    let life = vec![
        Grant(5),
        Put(0, 1, Some(1)),
        Grant(2),
        Put(1, 2, Some(2)),
        Put(2, 3, None),
        Attach(2, vec![2]),
        Advance(1500),
        Renew(2),
        Reopen,
        Advance(2500),
        RevokeExpired,
        Advance(3000),
        Reopen,
        Detach(2, vec![1]),
        Advance(5000),
        RevokeExpired,
        Reopen,
    ];
    let keep_alive = vec![
        Grant(3),
        KeepAlive(1),
        Put(0, 7, Some(1)),
        Advance(1000),
        Advance(1000),
        TimeToLive(1),
        StopKeepAlive(1),
        Advance(3000),
        RevokeExpired,
    ];
    let txn_watch = vec![
        CasPut(0, 0, 1, None),
        CasPut(0, 1, 2, None),
        CasPut(0, 0, 3, None),
        GrantWithId(7, 4),
        CasPut(1, 0, 4, Some(7)),
        WatchFrom(3),
        Revoke(7),
        WatchFrom(7),
        Delete(0),
        Reopen,
        WatchFrom(1),
    ];
    vec![
        ("life", false, life.clone()),
        ("life-batched", true, life),
        ("keep-alive", false, keep_alive),
        ("txn-watch", false, txn_watch.clone()),
        ("txn-watch-batched", true, txn_watch),
    ]
}

/// Databases written by the library, as the `open` seeds start from.
fn open_seed_databases() -> Vec<(&'static str, Image)> {
    let clock = ManualClock::new();
    let open = |disk: &Image, policy: RestartPolicy| {
        Lessor::builder()
            .clock(clock.clone())
            .ticker(false)
            .restart_policy(policy)
            .open_with_backend(disk.clone())
            .unwrap()
    };
    let mut out = Vec::new();

    let empty = Image::default();
    open(&empty, RestartPolicy::Reset).close().unwrap();
    out.push(("empty", empty));

    let some = Image::default();
    let l = open(&some, RestartPolicy::Reset);
    let a = l.grant(Duration::from_secs(10)).unwrap();
    let b = l.grant(Duration::from_secs(60)).unwrap();
    l.put_with_lease("/a", "1", a.id).unwrap();
    l.put_with_lease("/b", "22", b.id).unwrap();
    l.put("/c", "333").unwrap();
    l.attach(b.id, ["/c"]).unwrap();
    l.put("/d", "").unwrap();
    l.close().unwrap();
    out.push(("leases-and-keys", some));

    let expired = Image::default();
    let l = open(&expired, RestartPolicy::Reset);
    let a = l.grant(Duration::from_secs(1)).unwrap();
    l.put_with_lease("/gone", "x", a.id).unwrap();
    l.grant(Duration::from_secs(100)).unwrap();
    l.put("/stays", "y").unwrap();
    clock.advance(Duration::from_secs(2));
    l.revoke_expired().unwrap();
    l.close().unwrap();
    out.push(("after-expiry", expired));

    let checkpointed = Image::default();
    let l = open(&checkpointed, RestartPolicy::Preserve);
    let a = l.grant(Duration::from_secs(30)).unwrap();
    l.put_with_lease("/p", "1", a.id).unwrap();
    clock.advance(Duration::from_secs(5));
    l.renew(a.id).unwrap();
    l.close().unwrap();
    out.push(("preserve-checkpoints", checkpointed));

    // Format 1: version-1 records, no uptime, no checkpoints.
    let mut lease = vec![1];
    open::varint(10_000_000_000, &mut lease);
    open::varint(0, &mut lease);
    let mut kv = vec![1];
    for n in [1, 1, 1, 1, 2] {
        open::varint(n, &mut kv);
    }
    kv.extend_from_slice(b"v1");
    let format_1 = Tables {
        meta: vec![("format", 1), ("revision", 1), ("max_lease_id", 1)],
        leases: vec![(1, lease)],
        kv: vec![(b"/one".to_vec(), kv)],
        lease_keys: vec![(1, b"/one".to_vec())],
        foreign: false,
    };
    out.push(("format-1", Image::new(format_1.image().unwrap())));
    out
}

/// Writes `fuzz/corpus/ops/` seeds: named sequences, encoded for the `ops` decoder.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_ops_seeds() {
    let dir = fuzz_dir().join("corpus").join("ops");
    fs::create_dir_all(&dir).unwrap();
    for (name, batched, ops) in ops_seeds() {
        let bytes = model::encode(batched, &ops);
        model::check_bytes(&bytes).unwrap();
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// Writes `fuzz/corpus/open/` seeds: each database as its file and as its tables, plus
/// truncated and bit-flipped files.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_open_seeds() {
    let dir = fuzz_dir().join("corpus").join("open");
    fs::create_dir_all(&dir).unwrap();
    let write = |name: String, bytes: &[u8]| {
        open::check_open(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        fs::write(dir.join(name), bytes).unwrap();
    };
    for (name, disk) in open_seed_databases() {
        let file = disk.bytes();
        println!("{name}: {} bytes", file.len());
        write(format!("seed-{name}.tables"), &Tables::read(&disk).encode());
        write(format!("seed-{name}.redb"), &file);
        if name == "leases-and-keys" {
            write(format!("seed-{name}.truncated"), &file[..file.len() / 2]);
            for at in [9, 64, 4096, file.len() / 2] {
                let mut flipped = file.clone();
                flipped[at] ^= 0x10;
                write(format!("seed-{name}.flip-{at}"), &flipped);
            }
        }
    }
    write("seed-empty-file".into(), &[]);
    let foreign = Tables {
        foreign: true,
        ..Tables::default()
    };
    write("seed-foreign-table.tables".into(), &foreign.encode());
    let future = Tables {
        meta: vec![("format", 3)],
        ..Tables::default()
    };
    write("seed-format-3.tables".into(), &future.encode());
}
