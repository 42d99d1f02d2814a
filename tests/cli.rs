//! The `lessor` command-line tool: the real binary, run against real database files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{id, secs, test_dir};
use lessor::Lessor;
use serde_json::Value;

/// Exit codes, as `lessor --help` documents them.
const OK: i32 = 0;
const ERROR: i32 = 1;
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const LOCKED: i32 = 4;
const CORRUPTED: i32 = 5;

/// What a run of the binary gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    raw: Vec<u8>,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("the binary exited, not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            raw: out.stdout,
        }
    }

    /// Asserts the run succeeded, and returns its stdout.
    fn ok(&self) -> &str {
        assert_eq!(
            self.code, OK,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts the run failed with `code`, and returns its stderr.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        &self.stderr
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn command(db: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lessor"));
    cmd.env_remove("LESSOR_DB").arg("--db").arg(db);
    cmd
}

/// Runs `lessor --db DB ARGS...`.
fn lessor(db: &Path, args: &[&str]) -> Run {
    Run::from(command(db).args(args).output().unwrap())
}

/// Runs `lessor --db DB ARGS...` with `input` on stdin.
fn lessor_with_input(db: &Path, args: &[&str], input: &[u8]) -> Run {
    let mut child = command(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its input early stops reading it: that is no failure here.
    match child.stdin.take().unwrap().write_all(input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    Run::from(child.wait_with_output().unwrap())
}

/// Lines of a table, split into cells.
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

const SUBCOMMANDS: [&str; 14] = [
    "leases",
    "ttl",
    "grant",
    "revoke",
    "keep-alive",
    "put",
    "get",
    "range",
    "del",
    "watch",
    "stats",
    "verify",
    "dump",
    "restore",
];

#[test]
fn every_command_has_help_with_examples() {
    let dir = test_dir();
    let top = lessor(&dir.path, &["--help"]);
    let top = top.ok();
    for code in [
        "0  success",
        "3  not found",
        "4  the database is locked",
        "5  the database is corrupted",
    ] {
        assert!(
            top.contains(code),
            "exit code {code:?} missing from --help:\n{top}"
        );
    }
    assert!(top.contains("LESSOR_DB"));
    for sub in SUBCOMMANDS {
        assert!(top.contains(sub), "{sub} missing from --help");
        let help = lessor(&dir.path, &[sub, "--help"]);
        let help = help.ok();
        assert!(
            help.contains("Examples:"),
            "{sub} --help has no examples:\n{help}"
        );
        assert!(
            help.contains(&format!("lessor {sub}")) || help.contains(&format!(" {sub} ")),
            "{sub}: {help}"
        );
    }
    assert!(!dir.path.exists(), "--help created the database");
}

#[test]
fn usage_errors_exit_2() {
    let dir = test_dir();
    assert_eq!(lessor(&dir.path, &["frobnicate"]).code, USAGE);
    assert_eq!(lessor(&dir.path, &["grant"]).code, USAGE);
    let bad_ttl = lessor(&dir.path, &["grant", "ten"]);
    assert_eq!(bad_ttl.code, USAGE);
    assert!(
        bad_ttl.stderr.contains("invalid duration"),
        "{}",
        bad_ttl.stderr
    );
    let bad_id = lessor(&dir.path, &["ttl", "0"]);
    assert_eq!(bad_id.code, USAGE);
    assert!(
        bad_id.stderr.contains("invalid lease id"),
        "{}",
        bad_id.stderr
    );
    assert!(!dir.path.exists());
}

#[test]
fn read_commands_refuse_a_missing_file_and_do_not_create_it() {
    let dir = test_dir();
    for args in [
        &["leases"][..],
        &["ttl", "1"],
        &["revoke", "1"],
        &["keep-alive", "1", "--for", "10ms"],
        &["get", "/a"],
        &["range"],
        &["del", "/a"],
        &["watch", "--for", "10ms"],
        &["stats"],
        &["verify"],
        &["dump"],
    ] {
        let run = lessor(&dir.path, args);
        let err = run.failed(NOT_FOUND);
        assert!(err.contains("not found"), "{args:?}: {err}");
        assert!(!dir.path.exists(), "{args:?} created the file");
    }
}

#[test]
fn the_database_comes_from_lessor_db_when_no_db_is_given() {
    let dir = test_dir();
    let run = Command::new(env!("CARGO_BIN_EXE_lessor"))
        .env("LESSOR_DB", &dir.path)
        .args(["grant", "10s"])
        .output()
        .unwrap();
    Run::from(run).ok();
    assert_eq!(
        Lessor::open(&dir.path).unwrap().leases().unwrap(),
        vec![id(1)]
    );
}

#[test]
fn grant_leases_and_ttl() {
    let dir = test_dir();
    let db = &dir.path;
    assert_eq!(
        lessor(db, &["grant", "30s"]).ok(),
        "lease 1 granted with TTL 30s\n"
    );
    assert!(db.exists(), "grant creates the file");
    let granted = lessor(db, &["--json", "grant", "1m30s", "--id", "42"]).json();
    assert_eq!(granted["id"], 42);
    assert_eq!(granted["ttl_ms"], 90_000);
    lessor(db, &["grant", "500ms"]).ok();
    lessor(db, &["put", "/a", "1", "--lease", "42"]).ok();
    lessor(db, &["put", "/b", "2", "--lease", "42"]).ok();

    let table = lessor(db, &["leases"]);
    let rows = cells(table.ok());
    assert_eq!(rows[0], ["ID", "TTL", "REMAINING", "KEYS"]);
    let ids: Vec<_> = rows[1..].iter().map(|r| r[0]).collect();
    assert_eq!(ids, ["1", "42", "43"]);
    assert_eq!((rows[2][1], rows[2][3]), ("1m30s", "2"));
    assert_eq!(rows[3][1], "500ms");
    // Columns are aligned: every row has its TTL where the header has it.
    let at = table.stdout.lines().next().unwrap().find("TTL").unwrap();
    for line in table.stdout.lines() {
        assert_ne!(line.as_bytes()[at], b' ', "{line}");
        assert_eq!(line.as_bytes()[at - 1], b' ', "{line}");
    }

    let all = lessor(db, &["--json", "leases"]).json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1]["id"], 42);
    assert_eq!(all[1]["ttl_ms"], 90_000);
    assert_eq!(all[1]["key_count"], 2);
    let left = all[1]["remaining_ms"].as_u64().unwrap();
    assert!(left > 80_000 && left <= 90_000, "{left}");

    let ttl = lessor(db, &["ttl", "42", "--keys"]);
    let ttl = ttl.ok();
    assert!(ttl.contains("ttl        1m30s"), "{ttl}");
    assert!(ttl.contains("keys       2\n  /a\n  /b\n"), "{ttl}");
    let ttl = lessor(db, &["--json", "ttl", "42", "--keys"]).json();
    assert_eq!(
        ttl["keys"],
        serde_json::json!([{"key": "/a"}, {"key": "/b"}])
    );
    assert_eq!(
        lessor(db, &["--json", "ttl", "42"]).json().get("keys"),
        None
    );

    assert!(
        lessor(db, &["ttl", "7"])
            .failed(NOT_FOUND)
            .contains("lease 7 not found")
    );
    // A TTL above the maximum is the library's refusal: a plain error.
    assert!(
        lessor(db, &["grant", "100000000000s"])
            .failed(ERROR)
            .contains("above the maximum")
    );
    assert!(
        lessor(db, &["grant", "10s", "--id", "42"])
            .failed(ERROR)
            .contains("already exists")
    );
}

#[test]
fn revoke_deletes_the_keys_and_a_second_revoke_is_not_found() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "1m"]).ok();
    lessor(db, &["put", "/s/1", "a", "--lease", "1"]).ok();
    lessor(db, &["put", "/s/2", "b", "--lease", "1"]).ok();
    lessor(db, &["put", "/other", "c"]).ok();
    assert_eq!(
        lessor(db, &["revoke", "1"]).ok(),
        "lease 1 revoked, 2 keys deleted (revision 4)\n"
    );
    assert!(
        lessor(db, &["revoke", "1"])
            .failed(NOT_FOUND)
            .contains("lease 1 not found")
    );
    let l = Lessor::open(db).unwrap();
    assert!(l.leases().unwrap().is_empty());
    assert_eq!(l.range("").unwrap().len(), 1);
    l.close().unwrap();

    lessor(db, &["grant", "1m"]).ok();
    let revoked = lessor(db, &["--json", "revoke", "2"]).json();
    assert_eq!(
        revoked,
        serde_json::json!({"id": 2, "keys_deleted": 0, "revision": 4})
    );
}

#[test]
fn put_get_range_del() {
    let dir = test_dir();
    let db = &dir.path;
    assert_eq!(
        lessor(db, &["put", "/config/mode", "fast"]).ok(),
        "OK, revision 1\n"
    );
    assert!(db.exists(), "put creates the file");
    lessor(db, &["grant", "1m"]).ok();
    assert_eq!(
        lessor(
            db,
            &["--json", "put", "/cron/lock/job1", "10001", "--lease", "1"]
        )
        .json()["revision"],
        2
    );
    lessor(db, &["put", "/config/mode", "slow\nand steady"]).ok();

    let get = lessor(db, &["get", "/config/mode"]);
    let fields = cells(get.ok());
    assert_eq!(fields[0], ["key", "/config/mode"]);
    assert_eq!(fields[1], ["value", "slow\\nand", "steady"]);
    assert_eq!(fields[2], ["lease", "-"]);
    assert_eq!(fields[3], ["create_revision", "1"]);
    assert_eq!(fields[4], ["mod_revision", "3"]);
    assert_eq!(fields[5], ["version", "2"]);
    assert_eq!(
        lessor(db, &["get", "/config/mode", "--value-only"]).raw,
        b"slow\nand steady"
    );
    let kv = lessor(db, &["--json", "get", "/cron/lock/job1"]).json();
    assert_eq!(
        kv,
        serde_json::json!({"key": "/cron/lock/job1", "value": "10001", "lease": 1,
            "create_revision": 2, "mod_revision": 2, "version": 1})
    );
    assert!(
        lessor(db, &["get", "/nope"])
            .failed(NOT_FOUND)
            .contains("key \"/nope\" not found")
    );

    let range = lessor(db, &["range", "/c"]);
    let rows = cells(range.ok());
    assert_eq!(
        rows[0],
        ["KEY", "LEASE", "VERSION", "MOD_REVISION", "VALUE"]
    );
    assert_eq!(rows[1][..4], ["/config/mode", "-", "2", "3"]);
    assert_eq!(rows[2], ["/cron/lock/job1", "1", "1", "2", "10001"]);
    assert_eq!(cells(lessor(db, &["range", "/cron/"]).ok()).len(), 2);
    assert_eq!(
        cells(lessor(db, &["range", "/zzz"]).ok()).len(),
        1,
        "an empty range is the header"
    );
    let all = lessor(db, &["--json", "range"]).json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[1]["key"], "/cron/lock/job1");

    assert_eq!(
        lessor(db, &["del", "/config/mode"]).ok(),
        "deleted /config/mode (revision 4)\n"
    );
    assert!(
        lessor(db, &["del", "/config/mode"])
            .failed(NOT_FOUND)
            .contains("not found")
    );
    assert_eq!(
        lessor(db, &["--json", "del", "/cron/lock/job1"]).json()["revision"],
        5
    );
    assert_eq!(
        lessor(db, &["--json", "range"]).json(),
        serde_json::json!([])
    );

    // The library's refusals are plain errors; a lease that does not exist is "not found".
    assert!(
        lessor(db, &["put", "", "x"])
            .failed(ERROR)
            .contains("invalid key")
    );
    assert!(
        lessor(db, &["put", "/k", "v", "--lease", "9"])
            .failed(NOT_FOUND)
            .contains("lease 9")
    );
}

#[cfg(unix)]
#[test]
fn keys_and_values_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = test_dir();
    let db = &dir.path;
    let key = OsStr::from_bytes(b"/bin/\xff\x01");
    let value = OsStr::from_bytes(b"\x80v");
    let run = command(db).arg("put").arg(key).arg(value).output().unwrap();
    Run::from(run).ok();
    let l = Lessor::open(db).unwrap();
    assert_eq!(l.get(b"/bin/\xff\x01").unwrap().unwrap().value, b"\x80v");
    l.close().unwrap();

    let run = Run::from(
        command(db)
            .arg("get")
            .arg(key)
            .arg("--value-only")
            .output()
            .unwrap(),
    );
    assert_eq!(run.raw, b"\x80v");
    let kv = Run::from(
        command(db)
            .args(["--json", "get"])
            .arg(key)
            .output()
            .unwrap(),
    )
    .json();
    assert_eq!(kv["key_hex"], "2f62696e2fff01");
    assert_eq!(kv["value_hex"], "8076");
    assert_eq!(kv.get("key"), None);
    let range = lessor(db, &["range", "/bin/"]);
    assert!(
        range.ok().contains(r#"b"/bin/\xff\x01""#),
        "{}",
        range.stdout
    );
}

#[test]
fn keep_alive_renews_until_its_time_is_up() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "300ms"]).ok();
    let start = Instant::now();
    let run = lessor(db, &["keep-alive", "1", "--for", "700ms"]);
    let took = start.elapsed();
    let lines: Vec<_> = run.ok().lines().collect();
    // Renewed at once, then every 100 ms, and a last time at the end.
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(
        lines.iter().all(|l| *l == "lease 1 kept alive, TTL 300ms"),
        "{lines:?}"
    );
    assert!(took >= Duration::from_millis(700), "{took:?}");
    // The lease outlived its TTL: renewals kept it.
    assert!(lessor(db, &["ttl", "1"]).ok().contains("ttl        300ms"));

    let run = lessor(db, &["--json", "keep-alive", "1", "--for", "50ms"]);
    let first: Value = serde_json::from_str(run.ok().lines().next().unwrap()).unwrap();
    assert_eq!(first, serde_json::json!({"id": 1, "ttl_ms": 300}));

    assert!(
        lessor(db, &["keep-alive", "2", "--for", "50ms"])
            .failed(NOT_FOUND)
            .contains("lease 2 not found")
    );
}

#[test]
fn watch_prints_what_this_process_sees_until_count_or_time() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "300ms"]).ok();
    lessor(db, &["put", "/w/a", "1", "--lease", "1"]).ok();
    lessor(db, &["put", "/elsewhere", "2", "--lease", "1"]).ok();
    // Opening gives the lease its 300 ms again; this process's ticker then expires it.
    let start = Instant::now();
    let run = lessor(db, &["watch", "/w/", "--count", "1", "--for", "20s"]);
    assert_eq!(run.ok(), "DELETE /w/a (revision 3, lease 1 expired)\n");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "--count 1 stopped it"
    );

    lessor(db, &["grant", "200ms"]).ok();
    lessor(db, &["put", "/w/b", "3", "--lease", "2"]).ok();
    let run = lessor(db, &["--json", "watch", "--count", "1", "--for", "20s"]);
    let event: Value = serde_json::from_str(run.ok().trim()).unwrap();
    assert_eq!(
        event,
        serde_json::json!({"type": "delete", "key": "/w/b", "revision": 5, "cause": "expired", "lease": 2})
    );

    // Nothing happens: --for ends it, successfully, having printed nothing.
    let start = Instant::now();
    assert_eq!(lessor(db, &["watch", "--for", "300ms"]).ok(), "");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn stats_agree_with_the_library() {
    let dir = test_dir();
    let db = &dir.path;
    let l = Lessor::open(db).unwrap();
    let a = l.grant(secs(60)).unwrap();
    l.grant(secs(60)).unwrap();
    l.put_with_lease("/a", "1", a.id).unwrap();
    l.put("/b", "2").unwrap();
    l.put("/b", "3").unwrap();
    l.close().unwrap();

    let human = lessor(db, &["stats"]);
    let fields = cells(human.ok());
    assert_eq!(fields[2], ["revision", "3"]);
    assert_eq!(fields[3], ["leases", "2"]);
    assert_eq!(fields[4], ["keys", "2"]);
    assert_eq!(fields[5], ["attached", "keys", "1"]);
    assert_eq!(fields[6], ["expired", "leases", "0"]);
    assert_eq!(fields[7], ["max", "lease", "id", "2"]);
    let stats = lessor(db, &["--json", "stats"]).json();
    assert_eq!(stats["revision"], 3);
    assert_eq!(stats["leases"], 2);
    assert_eq!(stats["keys"], 2);
    assert_eq!(stats["attached_keys"], 1);
    assert_eq!(stats["file_bytes"], std::fs::metadata(db).unwrap().len());
    assert_eq!(stats["expired"], 0);
    assert_eq!(stats["max_lease_id"], 2);
}

#[test]
fn a_file_open_in_another_process_is_locked() {
    let dir = test_dir();
    let db = &dir.path;
    let service = Lessor::open(db).unwrap();
    service.grant(secs(60)).unwrap();
    for args in [&["leases"][..], &["grant", "1s"], &["verify"], &["dump"]] {
        let run = lessor(db, args);
        let err = run.failed(LOCKED);
        assert!(
            err.contains("database is locked by another process (a running service?)"),
            "{err}"
        );
    }
    service.close().unwrap();
    // Once the service has stopped, the file is the tool's.
    assert_eq!(cells(lessor(db, &["leases"]).ok()).len(), 2);
}

#[test]
fn verify_passes_a_sound_database() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "1m"]).ok();
    lessor(db, &["put", "/a", "1", "--lease", "1"]).ok();
    assert_eq!(lessor(db, &["verify"]).ok(), "ok\n");
    assert_eq!(
        lessor(db, &["--json", "verify"]).json(),
        serde_json::json!({"ok": true, "problems": []})
    );
}

#[test]
fn verify_reports_each_problem_and_exits_5() {
    let dir = test_dir();
    let db = &dir.path;
    let l = Lessor::open(db).unwrap();
    let lease = l.grant(secs(60)).unwrap();
    l.put_with_lease("/a", "1", lease.id).unwrap();
    l.put_with_lease("/b", "2", lease.id).unwrap();
    l.close().unwrap();
    // Damage the index behind lessor's back: two keys lose their index entries.
    {
        let index: redb::TableDefinition<(u64, &[u8]), ()> =
            redb::TableDefinition::new("lessor.lease_keys");
        let redb_db = redb::Database::open(db).unwrap();
        let txn = redb_db.begin_write().unwrap();
        {
            let mut t = txn.open_table(index).unwrap();
            t.remove((lease.id.get(), &b"/a"[..])).unwrap();
            t.remove((lease.id.get(), &b"/b"[..])).unwrap();
        }
        txn.commit().unwrap();
    }
    let run = lessor(db, &["verify"]);
    assert!(
        run.failed(CORRUPTED).contains("2 problems found"),
        "{}",
        run.stderr
    );
    let lines: Vec<_> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("key /a is attached to lease 1 but missing from its index"),
        "{lines:?}"
    );
    assert!(lines[1].contains("key /b"), "{lines:?}");
    let report: Value = serde_json::from_str(&lessor(db, &["--json", "verify"]).stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 2);
}

#[test]
fn files_that_are_not_databases_are_corrupted() {
    let dir = test_dir();
    let db = &dir.path;
    std::fs::write(db, b"not a database, just text\n".repeat(500)).unwrap();
    let run = lessor(db, &["verify"]);
    run.failed(CORRUPTED);
    assert!(
        run.stdout.contains("is not a lessor database"),
        "{}",
        run.stdout
    );
    assert!(
        lessor(db, &["leases"])
            .failed(CORRUPTED)
            .contains("is not a lessor database")
    );
    assert!(
        std::fs::read(db).unwrap().starts_with(b"not a database"),
        "left untouched"
    );

    // A database cut short.
    let cut = dir.dir.path().join("cut.redb");
    lessor(&cut, &["grant", "1m"]).ok();
    lessor(&cut, &["put", "/a", "1", "--lease", "1"]).ok();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cut_hash = file_hash(&cut);
    let run = lessor(&cut, &["verify"]);
    run.failed(CORRUPTED);
    assert!(run.stdout.contains("corrupted"), "{}", run.stdout);
    assert!(
        lessor(&cut, &["dump"])
            .failed(CORRUPTED)
            .contains("corrupted")
    );
    // redb cannot read it without a repair; the repair is tried on a copy in memory.
    assert_eq!(file_hash(&cut), cut_hash, "left untouched");
}

#[test]
fn redb_files_of_another_program_or_with_wrong_typed_tables_exit_5_untouched() {
    let dir = test_dir();
    let foreign = dir.dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        let t: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("users");
        txn.open_table(t).unwrap().insert("ada", "admin").unwrap();
        txn.commit().unwrap();
    }
    let retyped = dir.dir.path().join("retyped.redb");
    lessor(&retyped, &["grant", "1m"]).ok();
    {
        let db = redb::Database::create(&retyped).unwrap();
        let txn = db.begin_write().unwrap();
        let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("lessor.kv");
        txn.delete_table(kv).unwrap();
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("lessor.kv");
        txn.open_table(t).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    for (db, says) in [
        (&foreign, "is not a lessor database"),
        (&retyped, "types other than lessor's"),
    ] {
        let bytes = std::fs::read(db).unwrap();
        for args in [
            &["leases"][..],
            &["verify"],
            &["get", "/a"],
            &["grant", "1m"],
        ] {
            let run = lessor(db, args);
            assert_eq!(
                run.code, CORRUPTED,
                "{args:?}: {}{}",
                run.stdout, run.stderr
            );
            assert!(
                run.stderr.contains(says) || run.stdout.contains(says),
                "{args:?}: {}{}",
                run.stdout,
                run.stderr
            );
            assert!(
                std::fs::read(db).unwrap() == bytes,
                "{args:?} modified {}",
                db.display()
            );
        }
    }
}

/// The lines of a dump without what a restore does not keep: revisions, versions, time left.
fn restorable(dump: &str) -> Vec<Value> {
    dump.lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).unwrap();
            let o = v.as_object_mut().unwrap();
            for field in [
                "revision",
                "create_revision",
                "mod_revision",
                "version",
                "remaining_ms",
            ] {
                o.remove(field);
            }
            v
        })
        .collect()
}

#[test]
fn dump_then_restore_gives_the_same_leases_and_keys() {
    let dir = test_dir();
    let db = &dir.path;
    let l = Lessor::open(db).unwrap();
    let a = l.grant(secs(60)).unwrap();
    let b = l
        .grant_with_id(id(1000), Duration::from_millis(1500))
        .unwrap();
    l.grant(secs(3600)).unwrap(); // no keys
    l.put_with_lease("/a/1", "x", a.id).unwrap();
    l.put_with_lease("/a/2", "y", a.id).unwrap();
    l.put_with_lease(b"/b/\xff", b"\xfe\x00", b.id).unwrap();
    l.put("/free", "line\nbreak \"quoted\"").unwrap();
    l.put("/free", "twice").unwrap();
    l.put("/empty", "").unwrap();
    l.close().unwrap();

    let dump = lessor(db, &["dump"]);
    let lines: Vec<Value> = dump
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        serde_json::json!({"type": "header", "format": 1, "revision": 6, "leases": 3, "keys": 5})
    );
    assert_eq!(lines[1]["type"], "lease");
    assert_eq!(
        (lines[1]["id"].clone(), lines[1]["ttl_ms"].clone()),
        (1.into(), 60_000.into())
    );
    assert_eq!(lines[2]["id"], 1000);
    assert_eq!(lines[2]["ttl_ms"], 1500);
    assert_eq!(lines[3]["id"], 1001);
    assert_eq!(lines[4]["key"], "/a/1");
    assert_eq!(lines[6]["key_hex"], "2f622fff");
    assert_eq!(lines[6]["value_hex"], "fe00");
    assert_eq!(lines[6]["lease"], 1000);
    assert_eq!(lines[8]["value"], "twice");
    assert_eq!(lines[8]["version"], 2);

    // Into a new file, from a file.
    let backup = dir.dir.path().join("backup.jsonl");
    std::fs::write(&backup, &dump.raw).unwrap();
    let copy = dir.dir.path().join("copy.redb");
    let restored = lessor(&copy, &["restore", backup.to_str().unwrap()]);
    assert!(
        restored.ok().starts_with("restored 3 leases and 5 keys"),
        "{}",
        restored.stdout
    );
    let again = lessor(&copy, &["dump"]);
    assert_eq!(restorable(again.ok()), restorable(&dump.stdout));
    assert_eq!(lessor(&copy, &["verify"]).ok(), "ok\n");
    let l = Lessor::open(&copy).unwrap();
    assert_eq!(l.get(b"/b/\xff").unwrap().unwrap().lease, Some(id(1000)));
    assert_eq!(
        l.time_to_live(id(1000)).unwrap().ttl,
        Duration::from_millis(1500)
    );
    l.close().unwrap();

    // Into a database that has data: refused, unless --force, which replaces it; from stdin.
    let other = dir.dir.path().join("other.redb");
    lessor(&other, &["grant", "5m", "--id", "77"]).ok();
    lessor(&other, &["put", "/stale", "1"]).ok();
    let refused = lessor_with_input(&other, &["restore", "-"], &dump.raw);
    assert!(
        refused
            .failed(ERROR)
            .contains("already holds 1 lease and 1 key"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        lessor(&other, &["--json", "leases"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let forced =
        lessor_with_input(&other, &["--json", "restore", "-", "--force"], &dump.raw).json();
    assert_eq!(
        (forced["leases"].clone(), forced["keys"].clone()),
        (3.into(), 5.into())
    );
    assert_eq!(
        restorable(lessor(&other, &["dump"]).ok()),
        restorable(&dump.stdout)
    );
}

#[test]
fn restore_checks_the_whole_dump_before_writing() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "1m"]).ok();
    lessor(db, &["put", "/a", "1", "--lease", "1"]).ok();
    lessor(db, &["put", "/b", "2"]).ok();
    let dump = lessor(db, &["dump"]).ok().to_owned();
    let target = dir.dir.path().join("target.redb");

    // Cut short: the header's counts catch it.
    let cut: String = dump.lines().take(3).map(|l| format!("{l}\n")).collect();
    let run = lessor_with_input(&target, &["restore", "-"], cut.as_bytes());
    assert!(run.failed(ERROR).contains("incomplete"), "{}", run.stderr);
    // Not a dump at all, or a key whose lease is missing: the line is named.
    let run = lessor_with_input(&target, &["restore", "-"], b"hello\n");
    assert!(run.failed(ERROR).contains("line 1"), "{}", run.stderr);
    let orphan = dump.replace(r#""lease":1,"create"#, r#""lease":9,"create"#);
    let run = lessor_with_input(&target, &["restore", "-"], orphan.as_bytes());
    assert!(
        run.failed(ERROR).contains("lease 9 is not in the dump"),
        "{}",
        run.stderr
    );
    let newer = dump.replace(r#""format":1"#, r#""format":99"#);
    assert!(
        lessor_with_input(&target, &["restore", "-"], newer.as_bytes())
            .failed(ERROR)
            .contains("format 99")
    );
    assert!(!target.exists(), "nothing was written");

    let missing = dir.dir.path().join("missing.jsonl");
    assert!(
        lessor(&target, &["restore", missing.to_str().unwrap()])
            .failed(NOT_FOUND)
            .contains("cannot read")
    );
}

#[test]
fn the_restart_policy_decides_what_leases_have_left() {
    let dir = test_dir();
    let db = &dir.path;
    let clock = lessor::ManualClock::new();
    let service = Lessor::builder()
        .clock(clock.clone())
        .restart_policy(lessor::RestartPolicy::Preserve)
        .open(db)
        .unwrap();
    service.grant(secs(60)).unwrap();
    clock.advance(secs(45));
    service.close().unwrap(); // 15 s left, written down

    let left = |policy: &str| {
        let ttl = lessor(db, &["--json", "--restart-policy", policy, "ttl", "1"]).json();
        ttl["remaining_ms"].as_u64().unwrap()
    };
    let preserved = left("preserve");
    assert!((14_000..=15_000).contains(&preserved), "{preserved}");
    assert!(left("reset") > 59_000, "the default gives a full TTL again");
    assert_eq!(
        lessor(db, &["--restart-policy", "sometimes", "leases"]).code,
        USAGE
    );
}

/// A hash of the file's bytes: equal before and after a command that must not write.
fn file_hash(path: &Path) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    std::fs::read(path).unwrap().hash(&mut h);
    h.finish()
}

/// Every read command, with the arguments that make it read something of the database that
/// `checkpointed_database` writes.
const READS: [&[&str]; 14] = [
    &["leases"],
    &["--json", "leases"],
    &["ttl", "1", "--keys"],
    &["--json", "ttl", "1"],
    &["get", "/lock"],
    &["--json", "get", "/free"],
    &["range"],
    &["--json", "range", "/"],
    &["dump"],
    &["verify"],
    &["--json", "verify"],
    &["stats"],
    &["--json", "stats"],
    &["get", "/lock", "--value-only"],
];

/// A database closed by a service under `Absolute` one hour ago (by its clock): lease 1 of 60 s
/// (past its wall-clock deadline now) holds `/lock`; lease 2 of ten days holds `/long`; `/free`
/// has no lease.
fn checkpointed_database(db: &Path) {
    let an_hour_ago = std::time::SystemTime::now() - secs(3600);
    let clock = lessor::ManualClock::starting_at(an_hour_ago);
    let service = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .restart_policy(lessor::RestartPolicy::Absolute)
        .open(db)
        .unwrap();
    let lock = service.grant(secs(60)).unwrap();
    let long = service.grant(secs(10 * 86_400)).unwrap();
    service
        .put_with_lease("/lock", "holder-a", lock.id)
        .unwrap();
    service.put_with_lease("/long", "x", long.id).unwrap();
    service.put("/free", "1").unwrap();
    clock.advance(secs(10));
    service.close().unwrap();
}

#[test]
fn read_commands_leave_the_file_byte_identical() {
    let dir = test_dir();
    let db = &dir.path;
    checkpointed_database(db);
    let before = file_hash(db);
    let modified = std::fs::metadata(db).unwrap().modified().unwrap();
    for policy in ["reset", "preserve", "absolute"] {
        for args in READS {
            let run = lessor(db, &[&["--restart-policy", policy][..], args].concat());
            // `get /lock` and `ttl 1` find nothing under `absolute`: the lease is past its deadline.
            assert!(
                run.code == OK || run.code == NOT_FOUND,
                "{policy} {args:?}: {}",
                run.stderr
            );
            assert_eq!(file_hash(db), before, "{policy} {args:?} changed the file");
        }
    }
    assert_eq!(std::fs::metadata(db).unwrap().modified().unwrap(), modified);
}

#[test]
fn a_read_does_not_bring_expired_locks_back() {
    let dir = test_dir();
    let db = &dir.path;
    checkpointed_database(db);
    // The default policy's view: every lease gets its full TTL again.
    let reset = lessor(db, &["--json", "leases"]).json();
    assert_eq!(reset.as_array().unwrap().len(), 2, "{reset}");
    assert_eq!(
        lessor(db, &["get", "/lock", "--value-only"]).ok(),
        "holder-a"
    );
    // That read did not clear the checkpoints: under `absolute` lease 1 is still past its
    // deadline, and its key goes with it, in every read command's view.
    let absolute =
        |args: &[&str]| lessor(db, &[&["--restart-policy", "absolute"][..], args].concat());
    let leases = absolute(&["--json", "leases"]).json();
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    assert_eq!(leases[0]["id"], 2);
    let left = leases[0]["remaining_ms"].as_u64().unwrap();
    assert!(
        (10 * 86_400_000 - 3_660_000..=10 * 86_400_000 - 3_600_000).contains(&left),
        "the wall-clock deadline decides: {left}"
    );
    assert!(
        absolute(&["ttl", "1"])
            .failed(NOT_FOUND)
            .contains("lease 1 not found")
    );
    assert!(
        absolute(&["get", "/lock"])
            .failed(NOT_FOUND)
            .contains("not found")
    );
    let keys: Vec<_> = absolute(&["--json", "range"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["/free", "/long"]);
    let dump = absolute(&["dump"]);
    let header: Value = serde_json::from_str(dump.ok().lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["leases"].clone(), header["keys"].clone()),
        (1.into(), 2.into())
    );
    let stats = absolute(&["--json", "stats"]).json();
    assert_eq!(stats["leases"], 1);
    assert_eq!(stats["expired"], 1);
    // `preserve` counts only the time the database was open: 50 s of lease 1 are left.
    let ttl = lessor(db, &["--json", "--restart-policy", "preserve", "ttl", "1"]).json();
    assert_eq!(ttl["remaining_ms"], 50_000);

    // And the file still says so to a service.
    let service = Lessor::builder()
        .ticker(false)
        .restart_policy(lessor::RestartPolicy::Absolute)
        .open(db)
        .unwrap();
    assert!(matches!(
        service.time_to_live(id(1)),
        Err(lessor::Error::LeaseNotFound(_))
    ));
    service.revoke_expired().unwrap();
    assert!(service.get("/lock").unwrap().is_none());
    assert!(service.get("/long").unwrap().is_some());
    service.close().unwrap();
}

/// Env variable telling this test binary that it is the unprivileged child of
/// `read_commands_work_on_a_read_only_file_in_a_read_only_directory`.
const READ_ONLY_CHILD: &str = "LESSOR_TEST_READ_ONLY_CHILD";

#[test]
fn read_commands_work_on_a_read_only_file_in_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(path) = std::env::var(READ_ONLY_CHILD) {
        // The child, as an unprivileged user: every read command succeeds.
        let db = Path::new(&path);
        for args in READS {
            let run = lessor(db, args);
            println!("child: {args:?} {} {}", run.code, run.stderr.trim());
        }
        return;
    }
    let dir = test_dir();
    let db = &dir.path;
    checkpointed_database(db);
    let before = file_hash(db);
    let set_mode = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    set_mode(db, 0o444);
    set_mode(dir.dir.path(), 0o555);
    // Root (CAP_DAC_OVERRIDE) ignores permissions: detect it by trying to write.
    let enforced = std::fs::OpenOptions::new().write(true).open(db).is_err();
    let report = if enforced {
        READS
            .iter()
            .map(|args| {
                let run = lessor(db, args);
                format!("{args:?} {} {}", run.code, run.stderr.trim())
            })
            .collect::<Vec<_>>()
    } else {
        // As root, check as uid/gid 65534 ("nobody"): this test binary again, which runs the
        // lessor binary.
        use std::os::unix::process::CommandExt;
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "read_commands_work_on_a_read_only_file_in_a_read_only_directory",
                "--exact",
                "--nocapture",
            ])
            .env(READ_ONLY_CHILD, db)
            .uid(65534)
            .gid(65534)
            .output();
        let stdout = match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => {
                eprintln!("skipped: running as root and cannot start an unprivileged child: {e}");
                return;
            }
        };
        let lines: Vec<_> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("child: "))
            .map(str::to_owned)
            .collect();
        if lines.is_empty() {
            // e.g. the test binary is not readable by that user
            eprintln!("skipped: the unprivileged child did not run: {stdout}");
            return;
        }
        lines
    };
    assert_eq!(report.len(), READS.len(), "{report:#?}");
    for (line, args) in report.iter().zip(READS) {
        assert!(line.starts_with(&format!("{args:?} 0")), "{line}");
    }
    set_mode(dir.dir.path(), 0o755);
    assert_eq!(file_hash(db), before);
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_restore_force_leaves_the_old_database_untouched() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "5m", "--id", "77"]).ok();
    lessor(db, &["put", "/old", "1", "--lease", "77"]).ok();
    let before = file_hash(db);
    let listing = files_in(dir.dir.path());

    // Good JSON throughout, but the second key is over the key size limit: found only when
    // it is written, after the first lease and key.
    let long_key = "k".repeat(5000);
    let dump = format!(
        "{{\"type\":\"header\",\"format\":1,\"revision\":3,\"leases\":1,\"keys\":2}}\n\
         {{\"type\":\"lease\",\"id\":1,\"ttl_ms\":60000,\"remaining_ms\":60000}}\n\
         {{\"type\":\"key\",\"key\":\"/a\",\"value\":\"1\",\"lease\":1,\"create_revision\":2,\"mod_revision\":2,\"version\":1}}\n\
         {{\"type\":\"key\",\"key\":\"{long_key}\",\"value\":\"1\",\"lease\":null,\"create_revision\":3,\"mod_revision\":3,\"version\":1}}\n"
    );
    let run = lessor_with_input(db, &["restore", "-", "--force"], dump.as_bytes());
    assert!(
        run.failed(ERROR).contains("above the limit"),
        "{}",
        run.stderr
    );
    assert_eq!(file_hash(db), before, "the old database is untouched");
    assert_eq!(
        files_in(dir.dir.path()),
        listing,
        "no temporary file is left"
    );
    assert_eq!(
        lessor(db, &["ttl", "77", "--keys"]).ok().lines().last(),
        Some("  /old")
    );
}

#[test]
fn restore_refuses_a_line_over_the_limit_naming_it() {
    let dir = test_dir();
    let db = &dir.path;
    // 17 MiB of value on line 3: over the 16 MiB a line may have.
    let mut dump = String::from(
        "{\"type\":\"header\",\"format\":1,\"revision\":1,\"leases\":0,\"keys\":1}\n\n",
    );
    dump.push_str("{\"type\":\"key\",\"key\":\"/big\",\"value\":\"");
    dump.push_str(&"v".repeat(17 << 20));
    dump.push_str("\",\"lease\":null,\"create_revision\":1,\"mod_revision\":1,\"version\":1}\n");
    let run = lessor_with_input(db, &["restore", "-"], dump.as_bytes());
    let err = run.failed(ERROR);
    assert!(
        err.contains("stdin: line 3: longer than the limit of 16 MiB"),
        "{err}"
    );
    assert!(!db.exists(), "nothing was written");
}

#[test]
fn a_killed_restore_leaves_the_old_file_untouched() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "5m", "--id", "77"]).ok();
    lessor(db, &["put", "/old", "1", "--lease", "77"]).ok();
    let before = file_hash(db);

    // A dump big enough that writing it takes a while.
    let keys = 100_000;
    let mut dump = format!(
        "{{\"type\":\"header\",\"format\":1,\"revision\":1,\"leases\":1,\"keys\":{keys}}}\n\
         {{\"type\":\"lease\",\"id\":1,\"ttl_ms\":600000,\"remaining_ms\":600000}}\n"
    );
    for i in 0..keys {
        dump.push_str(&format!(
            "{{\"type\":\"key\",\"key\":\"/k/{i:08}\",\"value\":\"{}\",\"lease\":1,\
             \"create_revision\":1,\"mod_revision\":1,\"version\":1}}\n",
            "v".repeat(100)
        ));
    }
    let file = dir.dir.path().join("big.jsonl");
    std::fs::write(&file, &dump).unwrap();
    let listing = files_in(dir.dir.path());
    let mut child = command(db)
        .args(["restore", file.to_str().unwrap(), "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as it writes anything: the old file changes, or a new file appears.
    let start = Instant::now();
    let killed = loop {
        if file_hash(db) != before || files_in(dir.dir.path()) != listing {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "restore hangs");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    assert!(killed, "the restore finished before it could be killed");
    assert_eq!(file_hash(db), before, "the old database is untouched");
    assert_eq!(
        lessor(db, &["ttl", "77", "--keys"]).ok().lines().last(),
        Some("  /old")
    );
    // A second restore finishes, whatever the first one left behind.
    let run = lessor(db, &["restore", file.to_str().unwrap(), "--force"]);
    assert!(
        run.ok().starts_with("restored 1 lease and 100000 keys"),
        "{}",
        run.stdout
    );
    assert!(
        lessor(db, &["ttl", "77"])
            .failed(NOT_FOUND)
            .contains("not found")
    );
}

#[test]
fn restore_never_replaces_another_programs_file() {
    let dir = test_dir();
    let db = &dir.path;
    std::fs::write(db, b"not a database, just text\n".repeat(500)).unwrap();
    let before = file_hash(db);
    let dump = "{\"type\":\"header\",\"format\":1,\"revision\":0,\"leases\":0,\"keys\":0}\n";
    for args in [&["restore", "-"][..], &["restore", "-", "--force"]] {
        let run = lessor_with_input(db, args, dump.as_bytes());
        assert!(
            run.failed(CORRUPTED).contains("is not a lessor database"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(file_hash(db), before);
    assert_eq!(files_in(dir.dir.path()), ["lessor.redb"]);
}

#[test]
fn an_empty_file_reads_as_an_empty_database_and_stays_empty() {
    let dir = test_dir();
    let db = &dir.path;
    std::fs::write(db, b"").unwrap();
    assert_eq!(
        lessor(db, &["--json", "leases"]).json(),
        serde_json::json!([])
    );
    assert_eq!(
        lessor(db, &["--json", "range"]).json(),
        serde_json::json!([])
    );
    assert_eq!(lessor(db, &["verify"]).ok(), "ok\n");
    assert_eq!(lessor(db, &["--json", "stats"]).json()["leases"], 0);
    assert_eq!(std::fs::metadata(db).unwrap().len(), 0, "still empty");
}

#[test]
fn restore_force_keeps_lease_ids_unique() {
    let dir = test_dir();
    let db = &dir.path;
    lessor(db, &["grant", "1m", "--id", "77"]).ok();
    lessor(db, &["revoke", "77"]).ok();
    lessor(db, &["put", "/old", "1"]).ok();
    let dump = "{\"type\":\"header\",\"format\":1,\"revision\":1,\"leases\":1,\"keys\":0}\n\
                {\"type\":\"lease\",\"id\":3,\"ttl_ms\":60000,\"remaining_ms\":60000}\n";
    lessor_with_input(db, &["restore", "-", "--force"], dump.as_bytes()).ok();
    assert_eq!(lessor(db, &["--json", "stats"]).json()["max_lease_id"], 77);
    // The next auto id comes after every id the replaced database issued.
    assert!(
        lessor(db, &["grant", "1m"])
            .ok()
            .starts_with("lease 78 granted")
    );
    assert_eq!(
        lessor(db, &["--json", "range"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn dump_and_verify_read_a_backup_taken_while_the_service_runs() {
    let t = test_dir();
    let copy = t.dir.path().join("backup.redb");
    let service = Lessor::open(&t.path).unwrap();
    let lease = service.grant(secs(600)).unwrap();
    service.put_with_lease("/lock", "holder", lease.id).unwrap();
    service.put("/plain", "v").unwrap();
    service.backup(&copy).unwrap();
    // The service holds its file; the copy is free, and read without being written.
    let before = std::fs::read(&copy).unwrap();
    lessor(&copy, &["verify"]).ok();
    let dump = lessor(&copy, &["dump"]);
    let out = dump.ok();
    assert!(out.contains("/lock") && out.contains("/plain"), "{out}");
    assert!(out.contains(&lease.id.to_string()), "{out}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    lessor(&t.path, &["dump"]).failed(LOCKED);
    service.close().unwrap();
}
