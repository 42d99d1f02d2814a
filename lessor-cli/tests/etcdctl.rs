//! etcdctl (etcd's own command-line client, Debian's `etcd-client`, 3.4) against `lessor serve`
//! and against a real etcd started beside it: each test runs one script of etcdctl commands on
//! both, in parallel threads, and compares the two transcripts (stdout, the `Error:` lines of
//! stderr, exit codes).
//!
//! What differs legitimately is normalised, each for a stated reason (see [`Side::norm`]):
//! lease ids, revisions (as offsets from each server's own start), cluster and member ids,
//! remaining TTLs, and etcdctl's own diagnostic log lines. Everything else must be equal.
//!
//! Needs `etcd` and `etcdctl`: skipped without them, failing instead when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{LessorServe, Spawned, etcd, etcdctl, have};

/// One server's side of a comparison: its endpoint, and the transcript of the script so far.
struct Side {
    endpoint: String,
    /// Lease ids met so far, as etcdctl prints them (hex), in order: `{L1}`, `{L2}`...
    ids: Vec<String>,
    /// The server's revision before the script's first write.
    base_revision: i64,
    transcript: Vec<String>,
}

impl Side {
    fn new(endpoint: String) -> Side {
        let mut side = Side {
            endpoint,
            ids: Vec::new(),
            base_revision: 0,
            transcript: Vec::new(),
        };
        // Both servers start empty, but what revision an empty store is at is the server's own
        // business (etcd: 1): revisions in the transcripts are offsets from it.
        let ran = etcdctl(&side.endpoint, &["get", "-w", "json", "/nothing"], "");
        assert_eq!(ran.code, 0, "{ran:?}");
        let header: Value = serde_json::from_str(&ran.stdout).unwrap();
        // (A revision of 0 is not in the JSON at all: proto3 leaves out zero fields.)
        side.base_revision = header["header"]["revision"].as_i64().unwrap_or(0);
        side
    }

    /// The label of lease id `hex`, learning it if new.
    fn label(&mut self, hex: &str) -> String {
        let n = match self.ids.iter().position(|id| id == hex) {
            Some(i) => i + 1,
            None => {
                self.ids.push(hex.to_string());
                self.ids.len()
            }
        };
        format!("{{L{n}}}")
    }

    /// `{Ln}` in an argument replaced by that lease's id.
    fn subst(&self, arg: &str) -> String {
        let mut arg = arg.to_string();
        for (i, hex) in self.ids.iter().enumerate() {
            arg = arg.replace(&format!("{{L{}}}", i + 1), hex);
        }
        arg
    }

    /// Runs etcdctl with `args` (and `stdin`), records the normalised result, returns it raw.
    fn ctl_in(&mut self, args: &[&str], stdin: &str) -> support::Ran {
        let real: Vec<String> = args.iter().map(|a| self.subst(a)).collect();
        let real: Vec<&str> = real.iter().map(String::as_str).collect();
        let ran = etcdctl(&self.endpoint, &real, stdin);
        let mut entry = format!("$ etcdctl {}", args.join(" "));
        if !stdin.is_empty() {
            entry.push_str(&format!(" <<< {stdin:?}"));
        }
        let listing = args.starts_with(&["lease", "list"]);
        entry.push('\n');
        entry.push_str(&self.norm(&ran.stdout, listing));
        // etcdctl's client logs retries on stderr as JSON with timestamps and connection
        // names: diagnostics of the client, not results. Its `Error:` lines are results.
        for line in ran.stderr.lines().filter(|l| l.starts_with("Error:")) {
            entry.push_str(&format!("\n(stderr) {line}"));
        }
        if ran.code != 0 {
            entry.push_str(&format!("\n(exit {})", ran.code));
        }
        self.transcript.push(entry);
        ran
    }

    fn ctl(&mut self, args: &[&str]) -> support::Ran {
        self.ctl_in(args, "")
    }

    /// Records lines that a long-running etcdctl printed.
    fn record(&mut self, what: &str, lines: &[String]) {
        let text = lines.join("\n");
        let entry = format!("{what}\n{}", self.norm(&text, false));
        self.transcript.push(entry);
    }

    /// Grants a lease of `ttl` seconds, recording it; its label.
    fn grant(&mut self, ttl: &str) -> String {
        let ran = self.ctl(&["lease", "grant", ttl]);
        assert_eq!(ran.code, 0, "{ran:?}");
        // "lease 694d7a6f9b31f804 granted with TTL(10s)"
        let hex = ran.stdout.split_whitespace().nth(1).unwrap().to_string();
        self.label(&hex)
    }

    /// Learns the lease ids that end the keys under `prefix` (lock and election keys are
    /// `prefix/<lease id>`), in key order, without recording anything.
    fn learn_keys(&mut self, prefix: &str) {
        let ran = etcdctl(
            &self.endpoint,
            &["get", prefix, "--prefix", "--keys-only"],
            "",
        );
        for key in ran.stdout.lines().filter(|l| !l.is_empty()) {
            if let Some(hex) = key.strip_prefix(prefix) {
                self.label(hex);
            }
        }
    }

    /// The revision of a write made with `-w json`, as an absolute revision of this server.
    fn revision_of(ran: &support::Ran) -> i64 {
        let v: Value = serde_json::from_str(&ran.stdout).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// Normalises etcdctl's output. Each rewrite, and why it is fair:
    /// - lease ids become `{Ln}`, numbered in order of first appearance: ids are the server's
    ///   choice (etcd's are random-looking 63-bit numbers, lessor's count up), and clients
    ///   only pass them back;
    /// - in JSON, revisions become offsets from the server's revision before the script (see
    ///   [`Side::new`]), and the header's cluster id, member id and raft term are dropped:
    ///   they name the etcd cluster and its leader's term, which a single process does not
    ///   have (clients only echo them);
    /// - `remaining(Ns)` becomes `remaining(~)` once checked to be positive: time left
    ///   depends on when each server's command ran;
    /// - `lease list` prints ids, and `lease timetolive --keys` the keys, in the server's map
    ///   order (unspecified in etcd, which keeps both in Go maps): they are sorted (the ids
    ///   after they are replaced).
    fn norm(&mut self, text: &str, listing: bool) -> String {
        let mut lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with('{')
                    && let Ok(mut v) = serde_json::from_str::<Value>(line)
                {
                    self.norm_json(&mut v, "");
                    return v.to_string();
                }
                if listing && !self.ids.is_empty() && self.ids.iter().any(|id| id == line) {
                    return self.label(line);
                }
                self.norm_text(line)
            })
            .collect();
        if listing {
            lines[1..].sort();
        }
        lines.join("\n")
    }

    fn norm_text(&mut self, line: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        // "lease <hex>" anywhere; a lock or election key "<name>/<hex>" of a known id.
        while let Some(at) = rest.find("lease ") {
            out.push_str(&rest[..at + 6]);
            rest = &rest[at + 6..];
            let end = rest
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(rest.len());
            if end > 0 {
                out.push_str(&self.label(&rest[..end]));
                rest = &rest[end..];
            }
        }
        out.push_str(rest);
        if let Some((name, tail)) = out.rsplit_once('/')
            && self.ids.iter().any(|id| id == tail)
        {
            out = format!("{name}/{}", self.label(tail));
        }
        if let Some(at) = out.find("attached keys([") {
            let from = at + "attached keys([".len();
            let end = from + out[from..].find("])").unwrap();
            let mut keys: Vec<&str> = out[from..end].split(' ').collect();
            keys.sort_unstable();
            out = format!("{}{}{}", &out[..from], keys.join(" "), &out[end..]);
        }
        if let Some(at) = out.find("remaining(") {
            let from = at + "remaining(".len();
            let end = out[from..].find("s)").map(|e| from + e).unwrap();
            let left: i64 = out[from..end].parse().unwrap();
            assert!(left > 0, "a live lease with {left}s left: {line}");
            out.replace_range(from..end + 1, "~");
        }
        out
    }

    fn norm_json(&mut self, v: &mut Value, key: &str) {
        match v {
            Value::Object(map) => {
                for drop in ["cluster_id", "member_id", "raft_term"] {
                    map.remove(drop);
                }
                for (k, child) in map.iter_mut() {
                    self.norm_json(child, k);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.norm_json(item, key);
                }
            }
            Value::Number(n) => {
                let n = n.as_i64().unwrap();
                match key {
                    "revision" | "create_revision" | "mod_revision" | "compact_revision"
                        if n > 0 =>
                    {
                        *v = Value::from(format!("base+{}", n - self.base_revision));
                    }
                    "ID" | "lease" if n != 0 => {
                        // etcdctl prints ids as %016x.
                        *v = Value::from(self.label(&format!("{n:016x}")));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Runs `script` against a real etcd and against `lessor serve`, at once, and asserts the
/// transcripts are equal.
fn compare(script: fn(&mut Side)) {
    if !have(&["etcd", "etcdctl"]) {
        return;
    }
    let (etcd_server, etcd_endpoint) = etcd();
    let lessor_server = LessorServe::start(&[]);
    let run = |endpoint: String| {
        std::thread::spawn(move || {
            let mut side = Side::new(endpoint);
            script(&mut side);
            side.transcript
        })
    };
    let on_etcd = run(etcd_endpoint);
    let on_lessor = run(lessor_server.endpoint.clone());
    let on_etcd = on_etcd.join().expect("the script ran on etcd");
    let on_lessor = on_lessor.join().expect("the script ran on lessor serve");
    for (e, l) in on_etcd.iter().zip(&on_lessor) {
        assert_eq!(
            e,
            l,
            "\n--- etcd:\n{}\n--- lessor serve:\n{}",
            on_etcd.join("\n"),
            on_lessor.join("\n")
        );
    }
    assert_eq!(on_etcd.len(), on_lessor.len());
    drop(etcd_server);
}

/// The one absolute revision checked: a fresh server's first write. etcd's empty store is at
/// revision 1, so its first write is at 2, and clients count on revisions above 1:
/// clientv3/concurrency's Mutex and Election wait for the keys created before theirs with
/// `WithMaxCreateRev(own create revision - 1)`, where 0 means "no bound", so a lock or
/// campaign made with the first write of a store at revision 0 waits for its own key. A fresh
/// `lessor serve` starts at revision 2 (a put and a delete of an internal key, see
/// `Server::bind`): its first write is at 3, above etcd's 2, which is what clients need.
#[test]
fn a_fresh_servers_first_write_is_above_revision_one() {
    if !have(&["etcd", "etcdctl"]) {
        return;
    }
    let (etcd_server, etcd_endpoint) = etcd();
    let lessor_server = LessorServe::start(&[]);
    let first = |endpoint: &str| {
        let ran = etcdctl(endpoint, &["put", "/first", "x", "-w", "json"], "");
        assert_eq!(ran.code, 0, "{ran:?}");
        Side::revision_of(&ran)
    };
    let (on_lessor, on_etcd) = (first(&lessor_server.endpoint), first(&etcd_endpoint));
    assert_eq!(on_etcd, 2);
    assert!(on_lessor >= on_etcd, "{on_lessor} < {on_etcd}");
    drop(etcd_server);
}

#[test]
fn leases_keys_and_ranges() {
    compare(|s| {
        let l1 = s.grant("10");
        let l2 = s.grant("20");
        s.ctl(&["put", &format!("--lease={l1}"), "/k/one", "v1"]);
        s.ctl(&["put", &format!("--lease={l1}"), "/k/two", "v2"]);
        s.ctl(&["put", "/k/three", "v3"]);
        s.ctl(&["put", &format!("--lease={l2}"), "/k/four", "v4"]);
        s.ctl(&["put", "/other", "x"]);
        s.ctl(&["lease", "timetolive", "--keys", &l1]);
        s.ctl(&["lease", "timetolive", &l2]);
        s.ctl(&["lease", "keep-alive", "--once", &l1]);
        s.ctl(&["lease", "list"]);
        s.ctl(&["get", "/k/one"]);
        s.ctl(&["get", "/k/", "--prefix"]);
        s.ctl(&["get", "/k/", "--prefix", "--sort-by=KEY", "--order=DESCEND"]);
        // With an explicit order: etcd 3.4 with --sort-by=VALUE and no --order sorts only the
        // first limit+1 keys (by key) before it cuts at the limit, a quirk of its own.
        s.ctl(&[
            "get",
            "/k/",
            "--prefix",
            "--sort-by=VALUE",
            "--order=ASCEND",
            "--limit=2",
        ]);
        s.ctl(&[
            "get",
            "/k/",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--limit=1",
        ]);
        s.ctl(&["get", "/k/", "--prefix", "--keys-only"]);
        s.ctl(&["get", "/k/", "--prefix", "--limit=1", "-w", "json"]); // count 4, more
        // A page: the last two keys, without values (etcdctl 3.4 has no --count-only).
        s.ctl(&[
            "get",
            "/k/",
            "--prefix",
            "--order=DESCEND",
            "--limit=2",
            "--keys-only",
            "-w",
            "json",
        ]);
        s.ctl(&["get", "", "--from-key", "--limit=1", "-w", "json"]); // every key counted
        s.ctl(&["get", "/k/", "--prefix", "--limit=9", "-w", "json"]); // a limit above the count
        s.ctl(&["get", "/k/one", "-w", "json"]);
        s.ctl(&["get", "/k/", "/k/th", "-w", "json"]); // a [from, to) range
        s.ctl(&["get", "/k/", "--from-key", "--keys-only"]);
        s.ctl(&["put", "/k/three", "v3b", "--prev-kv"]);
        s.ctl(&["put", "/k/three", "v3c", "-w", "json"]);
        s.ctl(&["get", "/k/three", "-w", "json"]);
        s.ctl(&["del", "/k/three"]);
        s.ctl(&["del", "/k/missing"]);
        s.ctl(&["del", "/k/f", "--prefix", "--prev-kv"]);
        s.ctl(&["lease", "timetolive", "--keys", &l2]); // its key is gone
        s.ctl(&["lease", "revoke", &l1]);
        s.ctl(&["get", "", "--prefix"]);
        s.ctl(&["lease", "revoke", &l1]);
        s.ctl(&["lease", "timetolive", &l1]);
        s.ctl(&["lease", "keep-alive", "--once", &l1]);
        s.ctl(&["put", &format!("--lease={l1}"), "/k/late", "x"]);
        s.ctl(&["lease", "list"]);
        s.ctl(&["del", "", "--prefix"]);
    });
}

#[test]
fn keep_alive_until_revoked() {
    compare(|s| {
        let l1 = s.grant("6");
        let hex = s.subst(&l1);
        // keep-alive prints a response per renewal (the first at once, then every TTL/3 = 2 s),
        // until a renewal finds the lease gone: then "lease ... expired or revoked." and it
        // exits.
        let keeper = Spawned::new(&s.endpoint, &["lease", "keep-alive", &hex]);
        let first = keeper
            .out
            .next(Duration::from_secs(10), "the first keep-alive");
        s.record("$ etcdctl lease keep-alive {L1} (first response)", &[first]);
        s.ctl(&["lease", "revoke", &l1]);
        let (code, rest) = keeper.finish(Duration::from_secs(10));
        // Renewals made before the revocation was seen: as many as 2 s periods passed.
        let rest: Vec<String> = rest
            .into_iter()
            .filter(|l| !l.contains("keepalived"))
            .collect();
        s.record(&format!("(then, exit {code})"), &rest);
    });
}

#[test]
fn watch_from_a_revision() {
    compare(|s| {
        let from = Side::revision_of(&s.ctl(&["put", "/w/one", "1", "-w", "json"]));
        s.ctl(&["put", "/w/two", "2"]);
        s.ctl(&["del", "/w/one"]);
        let l1 = s.grant("10");
        s.ctl(&["put", "/w/two", "3", &format!("--lease={l1}")]);
        s.ctl(&["put", "/elsewhere", "x"]);
        // Replays history from `from` (this side's own revision of the first put), then goes
        // on live: a put and the lease's revocation after it started. A second watch starts
        // now, with --prev-kv. (Not the first: lessor serve refuses --prev-kv on a watch into
        // history, its engine keeping no older values, and says so.)
        let history = Spawned::new(
            &s.endpoint,
            &["watch", "/w/", "--prefix", &format!("--rev={from}")],
        );
        let live = Spawned::new(&s.endpoint, &["watch", "/w/", "--prefix", "--prev-kv"]);
        let mut lines = Vec::new();
        // 4 events of history, each PUT or DELETE, the key, the value: the last value is "3".
        while !lines.iter().any(|l: &String| l == "3") {
            lines.push(
                history
                    .out
                    .next(Duration::from_secs(10), "the replayed events"),
            );
        }
        // The live watch has started once its own watch answers: wait for an event of a key
        // put for that purpose, seen by both.
        s.ctl(&["put", "/w/ready", "r"]);
        let mut live_lines = Vec::new();
        while !live_lines.iter().any(|l: &String| l == "r") {
            live_lines.push(
                live.out
                    .next(Duration::from_secs(10), "the live watch's first event"),
            );
        }
        s.ctl(&["put", "/w/three", "live"]);
        s.ctl(&["lease", "revoke", &l1]);
        // The revocation's delete of /w/two: "DELETE", the key, an empty value; with
        // --prev-kv, the previous key and value too.
        for (watcher, lines, after) in [(&history, &mut lines, 2), (&live, &mut live_lines, 4)] {
            loop {
                let line = watcher.out.next(Duration::from_secs(10), "the live events");
                let done = line == "DELETE";
                lines.push(line);
                if done {
                    break;
                }
            }
            for _ in 0..after {
                lines.push(
                    watcher
                        .out
                        .next(Duration::from_secs(10), "the revocation's delete"),
                );
            }
        }
        let (_, rest) = history.interrupt();
        lines.extend(rest);
        s.record("$ etcdctl watch /w/ --prefix --rev={first put}", &lines);
        let (_, rest) = live.interrupt();
        live_lines.extend(rest);
        s.record("$ etcdctl watch /w/ --prefix --prev-kv", &live_lines);
        // A single key, not a prefix: /w/one again, from before its delete.
        let watcher = Spawned::new(&s.endpoint, &["watch", "/w/one", &format!("--rev={from}")]);
        let mut lines = Vec::new();
        while lines
            .iter()
            .filter(|l: &&String| l.as_str() == "/w/one")
            .count()
            < 2
        {
            lines.push(
                watcher
                    .out
                    .next(Duration::from_secs(10), "the key's events"),
            );
        }
        let (_, rest) = watcher.interrupt();
        lines.extend(rest);
        s.record("$ etcdctl watch /w/one --rev={first put}", &lines);
    });
}

#[test]
fn transactions() {
    compare(|s| {
        s.ctl(&["put", "/t/k", "v1"]);
        // etcdctl txn's stdin: compares, a blank line, success ops, a blank line, failure ops.
        s.ctl_in(
            &["txn"],
            "value(\"/t/k\") = \"v1\"\n\nput /t/k v2\n\nget /t/k\n\n",
        );
        s.ctl_in(
            &["txn"],
            "value(\"/t/k\") = \"v1\"\n\nput /t/k v3\n\nget /t/k\n\n",
        );
        // Put-if-absent, as locks do it: create revision 0 means absent.
        s.ctl_in(
            &["txn"],
            "create(\"/t/lock\") = \"0\"\n\nput /t/lock me\n\nget /t/lock\n\n",
        );
        s.ctl_in(
            &["txn"],
            "create(\"/t/lock\") = \"0\"\n\nput /t/lock you\n\nget /t/lock\n\n",
        );
        s.ctl_in(
            &["txn", "-w", "json"],
            "version(\"/t/k\") = \"2\"\nvalue(\"/t/k\") != \"x\"\n\ndel /t/lock\nput /t/k v4\nget /t/ --prefix\n\n\n",
        );
        s.ctl_in(
            &["txn"],
            "mod(\"/t/k\") > \"1\"\nversion(\"/t/k\") < \"100\"\n\nget /t/k\n\nput /t/k no\n\n",
        );
        s.ctl_in(
            &["txn"],
            "value(\"/t/missing\") = \"x\"\n\nput /t/k no\n\ndel /t/k\n\n",
        );
        s.ctl(&["get", "/t/", "--prefix", "-w", "json"]);
    });
}

#[test]
fn lock_hands_over_on_release() {
    compare(|s| {
        let holder = Spawned::new(&s.endpoint, &["lock", "--ttl=5", "/locks/job1"]);
        // "/locks/job1/<the holder session's lease id>"
        let key = holder.out.next(Duration::from_secs(10), "the lock key");
        let hex = key.rsplit('/').next().unwrap().to_string();
        s.label(&hex);
        s.record("$ etcdctl lock --ttl=5 /locks/job1 (holder)", &[key]);
        // A second locker runs its command once it holds the lock: not while the first does.
        let waiter = Spawned::new(
            &s.endpoint,
            &["lock", "--ttl=5", "/locks/job1", "echo", "ran"],
        );
        let early = waiter.out.next_within(Duration::from_millis(1500));
        assert_eq!(early, None, "the waiter got the lock while it was held");
        s.learn_keys("/locks/job1/"); // the waiter's key, under its own session's lease
        s.ctl(&["get", "/locks/job1", "--prefix", "--keys-only"]);
        let (code, rest) = holder.interrupt(); // Ctrl-C: releases the lock
        s.record(&format!("(holder interrupted, exit {code})"), &rest);
        let started = Instant::now();
        let (code, lines) = waiter.finish(Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the handover waited for a TTL"
        );
        s.record(
            &format!("$ etcdctl lock --ttl=5 /locks/job1 echo ran (exit {code})"),
            &lines,
        );
        s.ctl(&["get", "/locks/", "--prefix", "--keys-only"]);
    });
}

#[test]
fn elections_fail_over() {
    compare(|s| {
        let first = Spawned::new(&s.endpoint, &["elect", "/elect/svc", "one"]);
        let key = first.out.next(Duration::from_secs(10), "the leader key");
        let value = first.out.next(Duration::from_secs(10), "the leader value");
        s.label(key.rsplit('/').next().unwrap());
        s.record("$ etcdctl elect /elect/svc one", &[key, value]);
        let observer = Spawned::new(&s.endpoint, &["elect", "--listen", "/elect/svc"]);
        let seen = vec![
            observer
                .out
                .next(Duration::from_secs(10), "the observed leader"),
            observer
                .out
                .next(Duration::from_secs(10), "the observed value"),
        ];
        s.record("$ etcdctl elect --listen /elect/svc", &seen);
        let second = Spawned::new(&s.endpoint, &["elect", "/elect/svc", "two"]);
        assert_eq!(
            second.out.next_within(Duration::from_millis(1500)),
            None,
            "two leaders"
        );
        let (code, rest) = first.interrupt(); // resigns
        s.record(&format!("(first interrupted, exit {code})"), &rest);
        let key = second
            .out
            .next(Duration::from_secs(10), "the new leader key");
        let value = second
            .out
            .next(Duration::from_secs(10), "the new leader value");
        s.label(key.rsplit('/').next().unwrap());
        s.record("$ etcdctl elect /elect/svc two (elected)", &[key, value]);
        let seen = vec![
            observer
                .out
                .next(Duration::from_secs(10), "the observed new leader"),
            observer
                .out
                .next(Duration::from_secs(10), "the observed new value"),
        ];
        s.record("(the observer)", &seen);
        second.interrupt();
        observer.interrupt();
    });
}
