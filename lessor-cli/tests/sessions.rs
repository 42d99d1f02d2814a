//! etcd's own `clientv3/concurrency` (Go; `tests/go/sessions/`) against `lessor serve`, and
//! against a real etcd beside it for reference: 8 goroutines with their own sessions take one
//! `Mutex` in turn and campaign in one `Election` (no two holders or leaders at once, no lost
//! increment); and an election fails over when the leader's process is killed with SIGKILL
//! (no resignation: its session's lease must expire).
//!
//! Needs `go`, Debian's `golang-etcd-server-dev` and `etcd`: skipped without them, failing
//! instead when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{LessorServe, Lines, etcd, go_build, have, signal};

const PROGRAM: &str = "tests/go/sessions";

/// Runs `script` with the endpoint of a fresh etcd and of a fresh `lessor serve`, at once.
fn on_both(script: fn(&str, &str)) {
    if !have(&["etcd", "go", "clientv3"]) {
        return;
    }
    go_build(PROGRAM);
    let (etcd_server, etcd_endpoint) = etcd();
    let lessor = LessorServe::start(&[]);
    let on_etcd = std::thread::spawn(move || script("etcd", &etcd_endpoint));
    let endpoint = lessor.endpoint.clone();
    let on_lessor = std::thread::spawn(move || script("lessor serve", &endpoint));
    let (on_etcd, on_lessor) = (on_etcd.join(), on_lessor.join());
    drop(etcd_server);
    on_lessor.expect("on lessor serve");
    on_etcd.expect("on etcd");
}

fn program(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(go_build(PROGRAM));
    command.arg(format!("-endpoint={endpoint}")).args(args);
    command
}

#[test]
fn mutex_and_election_exclude_among_8_goroutines() {
    on_both(|side, endpoint| {
        let out = program(endpoint, &["-mode=mutex", "-workers=8", "-rounds=10"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{side}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout,
            "counter 80 of 80, lock overlaps 0\n\
             elected 8, leader overlaps 0, wrong leaders 0\n\
             keys left 1\n",
            "{side}"
        );
    });
}

/// A candidate process: `campaign` mode, its stdout read line by line.
struct Candidate {
    child: Child,
    out: Lines,
}

impl Candidate {
    fn start(endpoint: &str, name: &str, ttl: u32) -> Candidate {
        let mut child = program(
            endpoint,
            &[
                "-mode=campaign",
                &format!("-name={name}"),
                &format!("-ttl={ttl}"),
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let out = Lines::new(child.stdout.take().unwrap());
        Candidate { child, out }
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn election_fails_over_when_the_leader_is_killed() {
    on_both(|side, endpoint| {
        const TTL: u32 = 2;
        let a = Candidate::start(endpoint, "a", TTL);
        assert_eq!(
            a.out.next(Duration::from_secs(10), "a elected"),
            "leader a",
            "{side}"
        );
        let b = Candidate::start(endpoint, "b", TTL);
        assert_eq!(
            b.out.next_within(Duration::from_millis(1500)),
            None,
            "{side}: b elected while a leads"
        );
        // SIGKILL: a cannot resign or revoke; its lease expires at most one TTL after its
        // last keep-alive, then b's campaign sees a's key deleted.
        let killed = Instant::now();
        signal(a.child.id(), "KILL");
        assert_eq!(
            b.out.next(Duration::from_secs(10), "b elected"),
            "leader b",
            "{side}"
        );
        let took = killed.elapsed();
        // TTL, plus etcd's expiry check (every 500 ms) and the round trips.
        assert!(
            took < Duration::from_secs(u64::from(TTL)) + Duration::from_millis(1500),
            "{side}: b elected {took:?} after a was killed"
        );
        eprintln!("{side}: failover {took:?} after SIGKILL (TTL {TTL} s)");
    });
}
