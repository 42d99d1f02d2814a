//! The seed programs (Go, on etcd's `clientv3`; `tests/go/seeds/`), run as they are — but for
//! the import path and the endpoint — against a real etcd and against `lessor serve`, side by
//! side in parallel threads, each on its own fresh server. Each must behave as on etcd:
//! - `expiry`: prints the put's revision, then "还未过期" every 2 s until the key expires at
//!   ~10 s ("key过期");
//! - `keepalive_cancel`: its keep-alive is cancelled at 5 s, and its consumer's own bug (it
//!   tests `keepChan == nil` for `keepR == nil`) makes it panic on the nil response then;
//! - `keepalive_fixed`: the same with that token fixed: "租约失效" at 5 s, and the key gone one
//!   TTL after the last renewal (~13–15 s).
//!
//! Needs `go`, Debian's `golang-etcd-server-dev` and `etcd`: skipped without them, failing
//! instead when `CI` is set. About 15 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{LessorServe, etcd, go_build, have, timed_lines, wait_exit};

/// What a seed program did.
#[derive(Debug)]
struct SeedRun {
    code: Option<i32>,
    /// Stdout lines, with when each came after the program started.
    lines: Vec<(Duration, String)>,
    stderr: String,
}

impl SeedRun {
    /// When the line starting with `prefix` came, and the line.
    fn at(&self, prefix: &str) -> Option<(Duration, &str)> {
        self.lines
            .iter()
            .find(|(_, l)| l.starts_with(prefix))
            .map(|(t, l)| (*t, l.as_str()))
    }

    /// The main goroutine's lines (the put, the polls, the expiry), with a run of the poll's
    /// "还未过期" as one line: how many polls saw the key depends on when the server expired
    /// it (etcd: up to 500 ms late), which the test's check bounds on each side. The keep-alive consumer's lines are left out: they
    /// interleave with the main goroutine's at the scheduler's whim, and carry the lease id
    /// (the server's choice); [`SeedRun::keepalive_responses`] counts them.
    fn main_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, line) in &self.lines {
            if line.starts_with("收到自动续租应答") {
                continue;
            }
            if let Some(rev) = line.strip_prefix("写入成功：") {
                // The put's revision: a fresh server's own counter (etcd: 2), checked positive.
                let rev: i64 = rev.trim().parse().unwrap();
                assert!(rev > 0, "{line}");
                out.push("写入成功： <revision>".into());
            } else if line == "还未过期" {
                // One line for a run of polls; how many is checked on each side.
                if out.last().is_none_or(|l| l != "还未过期 …") {
                    out.push("还未过期 …".into());
                }
            } else {
                out.push(line.clone());
            }
        }
        out
    }

    fn keepalive_responses(&self) -> usize {
        self.lines
            .iter()
            .filter(|(_, l)| l.starts_with("收到自动续租应答"))
            .count()
    }
}

/// Runs `exe` with `ETCD_ENDPOINT=endpoint`, for at most `limit`.
fn run(exe: &std::path::Path, endpoint: &str, limit: Duration) -> SeedRun {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .env("ETCD_ENDPOINT", endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = timed_lines(child.stdout.take().unwrap(), start);
    let stderr = timed_lines(child.stderr.take().unwrap(), start);
    let status = wait_exit(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    SeedRun {
        code: status.and_then(|s| s.code()),
        lines: stdout.join().unwrap(),
        stderr: stderr
            .join()
            .unwrap()
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Builds `program`, runs it against a fresh etcd and a fresh `lessor serve` at once, checks
/// each run with `check`, and compares their main lines.
fn side_by_side(program: &str, limit: Duration, check: fn(&str, &SeedRun)) {
    if !have(&["etcd", "go", "clientv3"]) {
        return;
    }
    let exe = go_build(&format!("tests/go/seeds/{program}"));
    let (etcd_server, etcd_endpoint) = etcd();
    let lessor = LessorServe::start(&[]);
    let on = |endpoint: String| {
        let exe = exe.clone();
        std::thread::spawn(move || run(&exe, &endpoint, limit))
    };
    let on_etcd = on(etcd_endpoint);
    let on_lessor = on(lessor.endpoint.clone());
    let (on_etcd, on_lessor) = (on_etcd.join().unwrap(), on_lessor.join().unwrap());
    drop(etcd_server);
    check("etcd", &on_etcd);
    check("lessor serve", &on_lessor);
    assert_eq!(
        on_etcd.main_lines(),
        on_lessor.main_lines(),
        "\netcd: {on_etcd:#?}\nlessor serve: {on_lessor:#?}"
    );
}

#[test]
fn expiry_seed_sees_the_key_expire_at_10_s() {
    side_by_side("expiry", Duration::from_secs(30), |side, run| {
        assert_eq!(run.code, Some(0), "{side}: {run:#?}");
        let (put, _) = run.at("写入成功：").unwrap();
        let (gone, _) = run.at("key过期").unwrap();
        let lived = gone - put;
        // Polled every 2 s: seen gone at the first poll after 10 s.
        assert!(
            lived >= Duration::from_millis(9_500) && lived < Duration::from_secs(13),
            "{side}: the key lived {lived:?}: {run:#?}"
        );
        let polls = run.lines.iter().filter(|(_, l)| l == "还未过期").count();
        assert!((5..=6).contains(&polls), "{side}: {polls} polls: {run:#?}");
    });
}

#[test]
fn keepalive_seed_panics_on_its_own_bug_at_5_s() {
    side_by_side("keepalive_cancel", Duration::from_secs(30), |side, run| {
        // Go's exit code for a panic, with the nil dereference of keepR.ID.
        assert_eq!(run.code, Some(2), "{side}: {run:#?}");
        assert!(
            run.stderr.contains("nil pointer dereference"),
            "{side}: {run:#?}"
        );
        assert!(run.at("写入成功：").is_some(), "{side}: {run:#?}");
        assert!(run.at("key过期").is_none(), "{side}: {run:#?}");
        // It dies when the keep-alive's 5 s context ends: its last line is about then.
        let (last, _) = run.lines.last().map(|(t, l)| (*t, l)).unwrap();
        assert!(last < Duration::from_secs(6), "{side}: {run:#?}");
        assert!(run.keepalive_responses() >= 2, "{side}: {run:#?}");
    });
}

#[test]
fn fixed_keepalive_seed_sees_the_key_gone_a_ttl_after_its_last_renewal() {
    side_by_side("keepalive_fixed", Duration::from_secs(40), |side, run| {
        assert_eq!(run.code, Some(0), "{side}: {run:#?}");
        let (put, _) = run.at("写入成功：").unwrap();
        let (lost, _) = run.at("租约失效").unwrap();
        let (gone, _) = run.at("key过期").unwrap();
        // The keep-alive ends with its 5 s context...
        let cancelled = lost - put;
        assert!(
            cancelled > Duration::from_millis(4_500) && cancelled < Duration::from_secs(6),
            "{side}: keep-alive ended after {cancelled:?}: {run:#?}"
        );
        // ...its last renewal was before, so the key lives 10 s after that one, < 5 + 10 s,
        // seen by the first poll after: about 14 s.
        let (last_renewal, _) = run
            .lines
            .iter()
            .filter(|(_, l)| l.starts_with("收到自动续租应答"))
            .map(|(t, l)| (*t, l))
            .next_back()
            .unwrap();
        let after = gone - last_renewal;
        assert!(
            after >= Duration::from_millis(9_500) && after < Duration::from_secs(13),
            "{side}: the key was seen gone {after:?} after the last renewal: {run:#?}"
        );
        let lived = gone - put;
        assert!(
            lived > Duration::from_secs(12) && lived < Duration::from_secs(17),
            "{side}: the key lived {lived:?}: {run:#?}"
        );
    });
}
