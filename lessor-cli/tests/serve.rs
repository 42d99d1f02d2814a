//! `lessor serve` as a process: it says where it listens, refuses what it must, and closes the
//! database cleanly on SIGTERM and on Ctrl-C (SIGINT), so that the file is free and whole after.
//! (What it serves is checked with real clients in etcdctl.rs, seeds.rs and sessions.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use lessor::Lessor;
use support::{LessorServe, test_dir};

fn lessor(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lessor"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sigterm_closes_the_database_cleanly() {
    let dir = test_dir();
    // A lease and a key written before, by the library.
    {
        let lessor = Lessor::open(&dir.path).unwrap();
        let lease = lessor.grant(Duration::from_secs(60)).unwrap();
        lessor.put_with_lease("/before", "1", lease.id).unwrap();
        lessor.close().unwrap();
    }
    let mut server = LessorServe::start_on(&dir.path, &[]);
    assert!(
        server.endpoint.starts_with("127.0.0.1:"),
        "{}",
        server.endpoint
    );
    assert!(!server.endpoint.ends_with(":0"), "{}", server.endpoint);
    // While it runs, the file is the server's: the tool is refused with "locked".
    let locked = lessor(&dir.path, &["leases"]);
    assert_eq!(locked.status.code(), Some(4), "{locked:?}");
    let (status, stderr) = server.stop();
    assert!(status.success(), "{status}: {stderr:?}");
    // Free again, and whole: the lease and its key are there.
    let verify = lessor(&dir.path, &["verify"]);
    assert!(verify.status.success(), "{verify:?}");
    let get = lessor(&dir.path, &["get", "/before", "--value-only"]);
    assert_eq!(get.stdout, b"1", "{get:?}");
}

#[test]
fn interrupt_stops_it_too() {
    let mut server = LessorServe::start(&["--durability", "batched", "--max-delay", "5ms"]);
    let db = server.db.clone();
    support::signal(server.pid(), "INT");
    let (status, stderr) = server.stop_after_signal();
    assert!(status.success(), "{status}: {stderr:?}");
    assert!(lessor(&db, &["verify"]).status.success());
}

#[test]
fn a_database_in_use_is_refused() {
    let dir = test_dir();
    let holder = Lessor::open(&dir.path).unwrap();
    let out = lessor(&dir.path, &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{out:?}"
    );
    holder.close().unwrap();
}

#[test]
fn bad_command_lines_are_usage_errors() {
    let dir = test_dir();
    for args in [
        &["serve", "--cert", "c.pem"][..], // no --key
        &["serve", "--key", "k.pem"],      // no --cert
        &["serve", "--insecure", "--cert", "c.pem", "--key", "k.pem"],
        &["serve", "--listen", "localhost"], // not IP:PORT
        &["serve", "--durability", "sometimes"],
        &["serve", "--max-watches-per-stream", "-1"],
    ] {
        let out = lessor(&dir.path, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    assert!(!dir.path.exists(), "a usage error creates no database");
}

#[test]
fn a_port_in_use_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = test_dir();
    let out = lessor(&dir.path, &["serve", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn a_public_address_needs_tls_or_insecure() {
    let dir = test_dir();
    let out = lessor(&dir.path, &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("insecure") || stderr.contains("TLS"),
        "{stderr}"
    );
}
