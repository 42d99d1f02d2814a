//! Crash tests with real processes: a child (this test binary, re-executed) runs a random mix
//! of grant, renew, put, put_with_lease, attach, detach, delete, revoke and sync on a real file,
//! with the system clock and a ticker expiring short leases, and prints a line before each
//! operation starts and after it returns. The parent kills it with SIGKILL at a random moment,
//! reopens the file (with a `ManualClock` and no ticker, so nothing expires while it looks), and
//! checks every operation against what the operations around it allow, then the invariants.
//! A round runs one to three child lives on the same file, each continuing from what the last
//! kill left; it runs under `Durability::Immediate` or `Batched`, with one to four threads, and
//! under `RestartPolicy::Reset` or `Preserve` (checkpoints every 10–60 ms, racing the kill). A
//! lease with more than two keys is revoked in steps (`Builder::revoke_chunk_size(2)`).
//! Every round also checks the checker: a few changes to the reopened state that contradict an
//! acknowledged operation (a lease or key lost, a key back to an overwritten value, the
//! revision back) must each be reported.
//!
//! CI runs [`CI_ROUNDS`] rounds (fewer only if they take longer than [`CI_BUDGET`]);
//! `LESSOR_CRASH_ROUNDS=N` runs N; `LESSOR_CRASH_SEED=S` replays from seed S (a failure prints
//! the command).
//!
//! # What the checker knows
//!
//! The child writes each line with one `write` on the locked stdout, so the lines of its
//! threads never interleave, and their order is real-time order: an operation whose
//! acknowledgement comes before another's start line finished before the other began
//! (*definitely before*). An operation is *possible* if it was acknowledged with success or
//! was in flight at the kill (started, never acknowledged); one acknowledged with an error did
//! nothing. It is *certain* (on disk) if acknowledged with success and, under `Batched`, acked
//! before the start of an acknowledged `sync`, or before the start of an operation whose effect
//! is seen after the kill (a put whose value is there, a grant whose lease is there: redb makes
//! a prefix of the commits durable). Under `Immediate` every acknowledged operation is certain.
//!
//! A lease may have expired before the kill unless an acknowledged grant or renewal that
//! started at wall time `s` promises it life until `s + ttl` (its deadline is the clock after
//! the call began plus the TTL), past the kill. Times are wall-clock readings of both
//! processes, compared with a margin of [`MARGIN`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::invariants::{self, State};
use common::{Rng, test_dir};
use lessor::{Durability, Error, LeaseId, Lessor, ManualClock, RestartPolicy};
use parking_lot::Mutex;

/// Rounds CI runs, unless they take longer than [`CI_BUDGET`].
const CI_ROUNDS: u64 = 30;
/// No round is started after this much time in CI (each takes well under a second).
const CI_BUDGET: Duration = Duration::from_secs(60);
/// Set in the child: `<path>|<seed>|<batched max_delay in ms, 0 = immediate>|<threads>|<life>|
/// <checkpoint interval in ms under RestartPolicy::Preserve, 0 = Reset>`.
const CHILD_ENV: &str = "LESSOR_CRASH_CHILD";
const TEST: &str = "killed_processes_keep_every_acknowledged_operation";
/// Slack for comparing wall-clock readings of two processes and the moment of the kill.
const MARGIN: Duration = Duration::from_millis(30);
/// Keys the child writes: few, so that operations collide.
const KEYS: u64 = 12;

#[test]
fn killed_processes_keep_every_acknowledged_operation() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let asked: Option<u64> = std::env::var("LESSOR_CRASH_ROUNDS")
        .ok()
        .map(|n| n.parse().expect("LESSOR_CRASH_ROUNDS is a number"));
    let base: u64 = match std::env::var("LESSOR_CRASH_SEED") {
        Ok(s) => s.parse().expect("LESSOR_CRASH_SEED is a number"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut round = 0;
    loop {
        match asked {
            Some(n) if round >= n => break,
            None if round >= CI_ROUNDS || started.elapsed() > CI_BUDGET => break,
            _ => {}
        }
        let seed = base.wrapping_add(round);
        if let Err(e) = run_round(seed, &mut stats) {
            panic!(
                "crash round {round} failed: {e}\n\
                 replay: LESSOR_CRASH_SEED={seed} LESSOR_CRASH_ROUNDS=1 cargo test --test crash"
            );
        }
        round += 1;
    }
    eprintln!(
        "crash: {round} rounds, {} kills in {:.1?} (seed {base}): {stats:?}",
        stats.kills,
        started.elapsed()
    );
    if asked.is_none() {
        assert!(round >= 10, "only {round} rounds ran in {CI_BUDGET:?}");
    }
    assert!(stats.acked > 0 && stats.in_flight > 0, "{stats:?}");
}

/// Counts over all rounds, to show the checks had something to check.
#[derive(Debug, Default)]
struct Stats {
    kills: u64,
    acked: u64,
    in_flight: u64,
    batched_kills: u64,
    leases_required: u64,
    leases_maybe_expired: u64,
    keys_pinned: u64,
    keys_loose: u64,
    seen_expired: u64,
    sabotages_caught: u64,
    preserve_kills: u64,
    reaped_at_reopen: u64,
    /// Leases that came back with less than their TTL (only `Preserve` does that).
    partly_used_at_reopen: u64,
}

// ---------------------------------------------------------------------------------------------
// The child

fn wall() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Writes `@@<line>` with one `write` on the locked stdout.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("@@{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

fn child(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split('|').collect();
    let [path, seed, delay, threads, life, preserve] = parts[..] else {
        panic!("bad spec {spec}")
    };
    let seed: u64 = seed.parse().unwrap();
    let delay: u64 = delay.parse().unwrap();
    let threads: u64 = threads.parse().unwrap();
    let durability = match delay {
        0 => Durability::Immediate,
        ms => Durability::Batched {
            max_delay: Duration::from_millis(ms),
        },
    };
    say(&format!("open {}", wall()));
    let l = policy(Lessor::builder(), preserve.parse().unwrap())
        .durability(durability)
        .open(path)
        .unwrap();
    let pool: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(
        l.leases().unwrap().iter().map(|id| id.get()).collect(),
    ));
    say(&format!("ready {}", wall()));
    for t in 0..threads {
        let (l, pool, life) = (l.clone(), Arc::clone(&pool), life.to_string());
        let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x1000_0000_01b3));
        std::thread::spawn(move || {
            for seq in 0.. {
                one_op(&l, &pool, &mut rng, &life, t, seq, delay > 0);
            }
        });
    }
    // Killed long before this; the limit only keeps a child whose parent died from lingering.
    std::thread::sleep(Duration::from_secs(30));
    std::process::exit(3);
}

/// Runs one random operation between its start and acknowledgement lines.
fn one_op(
    l: &Lessor,
    pool: &Mutex<Vec<u64>>,
    rng: &mut Rng,
    life: &str,
    t: u64,
    seq: u64,
    batched: bool,
) {
    let key = format!("/k/{}", rng.below(KEYS));
    let value = format!("{life}.{t}.{seq}");
    let lease = {
        let p = pool.lock();
        if p.is_empty() || rng.chance(3) {
            // Sometimes an id that is probably not a lease at all.
            rng.range(1, p.iter().max().copied().unwrap_or(0) + 3)
        } else {
            *rng.pick(&p)
        }
    };
    let id = LeaseId::new(lease).unwrap();
    let mut r = rng.below(100);
    if !batched && r >= 95 {
        r = rng.below(95);
    }
    let start = |what: String| say(&format!("S {t} {seq} {} {what}", wall()));
    let ack = |what: String| say(&format!("A {t} {seq} {} {what}", wall()));
    let err = |e: Error| match e {
        Error::LeaseNotFound(_) => "err notfound".to_string(),
        Error::KeyNotFound(_) => "err nokey".to_string(),
        Error::KeyNotAttached { .. } => "err notattached".to_string(),
        other => format!("err other:{}", format!("{other:?}").replace(' ', "_")),
    };
    match r {
        0..=14 => {
            let ttl = rng.range(50, 500);
            start(format!("grant {ttl}"));
            match l.grant(Duration::from_millis(ttl)) {
                Ok(g) => {
                    ack(format!("ok {} {}", g.id, g.ttl.as_nanos()));
                    let mut p = pool.lock();
                    p.push(g.id.get());
                    if p.len() > 24 {
                        p.remove(0);
                    }
                }
                Err(e) => ack(err(e)),
            }
        }
        15..=34 => {
            start(format!("renew {lease}"));
            ack(l.renew(id).map_or_else(err, |_| "ok".into()));
        }
        35..=51 => {
            start(format!("putl {key} {value} {lease}"));
            ack(l
                .put_with_lease(&key, &value, id)
                .map_or_else(err, |r| format!("ok {}", r.get())));
        }
        52..=61 => {
            start(format!("put {key} {value}"));
            ack(l
                .put(&key, &value)
                .map_or_else(err, |r| format!("ok {}", r.get())));
        }
        62..=71 => {
            start(format!("attach {lease} {key}"));
            ack(l.attach(id, [&key]).map_or_else(err, |()| "ok".into()));
        }
        72..=79 => {
            start(format!("detach {lease} {key}"));
            ack(l.detach(id, [&key]).map_or_else(err, |()| "ok".into()));
        }
        80..=87 => {
            start(format!("delete {key}"));
            ack(l.delete(&key).map_or_else(err, |b| format!("ok {b}")));
        }
        88..=94 => {
            start(format!("revoke {lease}"));
            match l.revoke(id) {
                Ok(r) => {
                    ack(format!("ok {}", r.get()));
                    pool.lock().retain(|&x| x != lease);
                }
                Err(e) => ack(err(e)),
            }
        }
        _ => {
            start("sync".into());
            ack(l.sync().map_or_else(err, |()| "ok".into()));
        }
    }
    if rng.chance(10) {
        std::thread::sleep(Duration::from_millis(rng.below(30)));
    }
}

/// Under `RestartPolicy::Preserve` with checkpoints every `ms` if not 0, else `Reset`.
fn policy(b: lessor::Builder, ms: u64) -> lessor::Builder {
    // Every lease with more than two keys is revoked in steps (`src/reap.rs`): its hidden keys
    // must stay hidden across the kill, and the steps resume after it.
    let b = b.revoke_chunk_size(2);
    match ms {
        0 => b,
        ms => b
            .restart_policy(RestartPolicy::Preserve)
            .checkpoint_interval(Duration::from_millis(ms)),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent

/// How a round runs its child lives.
#[derive(Debug)]
struct Plan {
    /// `Batched { max_delay }` in ms, or 0 for `Immediate`.
    batched_ms: u64,
    threads: u64,
    lives: u64,
    /// `RestartPolicy::Preserve` with checkpoints every so many ms, or 0 for `Reset`.
    preserve_ms: u64,
}

fn run_round(seed: u64, stats: &mut Stats) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let plan = Plan {
        batched_ms: if rng.chance(30) { rng.range(5, 60) } else { 0 },
        threads: if rng.chance(40) { 1 } else { rng.range(2, 4) },
        lives: rng.range(1, 3),
        preserve_ms: if rng.chance(25) { rng.range(10, 60) } else { 0 },
    };
    let dir = test_dir();
    let mut before = Initial::default();
    for life in 0..plan.lives {
        let kill_after = Duration::from_millis(rng.range(3, 300));
        let run = run_child(&dir.path, seed ^ (life << 32), &plan, life, kill_after)
            .map_err(|e| format!("life {life} of {plan:?}: {e}"))?;
        stats.kills += 1;
        if plan.batched_ms > 0 {
            stats.batched_kills += 1;
        }
        let l = policy(Lessor::builder(), plan.preserve_ms)
            .clock(ManualClock::new())
            .ticker(false)
            .open(&dir.path)
            .map_err(|e| format!("life {life} of {plan:?}: reopen: {e}"))?;
        if plan.preserve_ms > 0 {
            // Leases whose last checkpoint left them nothing come back dead, for the first
            // expiry to revoke with their keys; the checks below see them gone.
            let reaped = l
                .revoke_expired()
                .map_err(|e| format!("life {life} of {plan:?}: revoke_expired: {e}"))?;
            stats.preserve_kills += 1;
            stats.reaped_at_reopen += reaped.len() as u64;
        }
        let after = invariants::check(&l)
            .map_err(|e| format!("life {life} of {plan:?}, killed after {kill_after:?}: {e}"))?;
        stats.partly_used_at_reopen += after
            .leases
            .iter()
            .filter(|(id, ttl)| after.remaining[*id] < **ttl)
            .count() as u64;
        let batched = plan.batched_ms > 0;
        let mode = (batched, plan.preserve_ms > 0);
        let verdict = check_life(&before, &run, &after, mode, None, stats).map_err(|e| {
            format!(
                "life {life} of {plan:?}, killed after {kill_after:?}:\n{e}\n{}",
                run.transcript()
            )
        })?;
        sabotage(&before, &run, &after, mode, &verdict, stats)?;
        let probe = invariants::check_next_id(&l, verdict.highest_id)
            .map_err(|e| format!("life {life} of {plan:?}: {e}"))?;
        // The next life starts from what is there now (the probe lease is revoked again).
        let after = invariants::check(&l).map_err(|e| format!("after the id probe: {e}"))?;
        l.close().map_err(|e| format!("close: {e}"))?;
        before = Initial {
            state: Some(after),
            highest_id: probe,
        };
    }
    Ok(())
}

/// What the child was given to start from.
#[derive(Default)]
struct Initial {
    /// The state the last check saw; `None` for a new file.
    state: Option<State>,
    /// The highest lease id issued before this life.
    highest_id: u64,
}

/// What a killed child printed, and when it was killed.
struct Run {
    lines: Vec<String>,
    /// Wall time of the child just before it opened the file.
    open_wall: u64,
    /// Wall time just before the kill.
    kill_wall: u64,
}

impl Run {
    fn transcript(&self) -> String {
        let tail = self.lines.len().saturating_sub(400);
        let mut s = format!(
            "child transcript (last {} of {} lines; kill at {}):\n",
            self.lines.len() - tail,
            self.lines.len(),
            self.kill_wall
        );
        for l in &self.lines[tail..] {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

fn run_child(
    path: &std::path::Path,
    seed: u64,
    plan: &Plan,
    life: u64,
    kill_after: Duration,
) -> Result<Run, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!(
                "{}|{seed}|{}|{}|{life}|{}",
                path.display(),
                plan.batched_ms,
                plan.threads,
                plan.preserve_ms
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut out = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match out.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill has no newline: it was never written whole.
            if buf.last() != Some(&b'\n') {
                break;
            }
            let line = String::from_utf8_lossy(&buf);
            // The harness may have written "test <name> ... " on the same line first.
            if let Some(at) = line.find("@@") {
                let line = line[at + 2..].trim_end().to_string();
                if line.starts_with("ready ") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
        }
        lines
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    if ready.is_ok() {
        std::thread::sleep(kill_after);
    }
    let kill_wall = wall();
    child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let lines = reader.join().unwrap();
    if ready.is_err() {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        return Err(format!(
            "the child never got ready ({status}): {lines:?} {err}"
        ));
    }
    let open_wall = lines
        .iter()
        .find_map(|l| l.strip_prefix("open "))
        .and_then(|w| w.parse().ok())
        .ok_or("no open line")?;
    Ok(Run {
        lines,
        open_wall,
        kill_wall,
    })
}

// ---------------------------------------------------------------------------------------------
// The checker

#[derive(Clone, Debug)]
enum Kind {
    Grant,
    Renew(u64),
    Put {
        key: String,
        value: String,
        lease: Option<u64>,
    },
    Delete(String),
    Attach(u64, String),
    Detach(u64, String),
    Revoke(u64),
    Sync,
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    InFlight,
    Ok(Vec<String>),
    Err(String),
}

#[derive(Clone, Debug)]
struct Op {
    /// Positions in the transcript; the initial state's ops come before everything.
    start: i64,
    ack: Option<i64>,
    wall_start: u64,
    wall_ack: u64,
    kind: Kind,
    outcome: Outcome,
    /// Written by an earlier life: on disk before this one began.
    initial: bool,
    /// For a lease of an earlier life: what it had left when this life opened the file, if
    /// not its TTL.
    left: Option<u64>,
}

impl Op {
    fn possible(&self) -> bool {
        !matches!(self.outcome, Outcome::Err(_))
    }

    fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// Finished before `other` began.
    fn before(&self, other: &Op) -> bool {
        self.ack.is_some_and(|a| a < other.start)
    }

    fn result(&self, i: usize) -> Option<&str> {
        match &self.outcome {
            Outcome::Ok(r) => r.get(i).map(String::as_str),
            _ => None,
        }
    }

    /// The id of a granted lease, its TTL in ns.
    fn granted(&self) -> Option<(u64, u64)> {
        match self.kind {
            Kind::Grant => Some((self.result(0)?.parse().ok()?, self.result(1)?.parse().ok()?)),
            _ => None,
        }
    }

    /// The lease this op needs alive.
    fn lease(&self) -> Option<u64> {
        match &self.kind {
            Kind::Renew(l) | Kind::Attach(l, _) | Kind::Detach(l, _) | Kind::Revoke(l) => Some(*l),
            Kind::Put { lease, .. } => *lease,
            _ => None,
        }
    }

    fn key(&self) -> Option<&str> {
        match &self.kind {
            Kind::Put { key, .. } | Kind::Delete(key) => Some(key),
            Kind::Attach(_, key) | Kind::Detach(_, key) => Some(key),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} [{}..{}] -> {:?}",
            self.kind,
            self.start,
            self.ack.map_or("in flight".into(), |a| a.to_string()),
            self.outcome
        )
    }
}

/// Parses the transcript into ops, after the initial state's virtual ones.
fn parse(run: &Run, before: &Initial) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    if let Some(state) = &before.state {
        let virt = |kind: Kind, outcome: Vec<String>| Op {
            start: -2,
            ack: Some(-1),
            wall_start: run.open_wall,
            wall_ack: run.open_wall,
            kind,
            outcome: Outcome::Ok(outcome),
            initial: true,
            left: None,
        };
        for kv in &state.kvs {
            ops.push(virt(
                Kind::Put {
                    key: String::from_utf8(kv.key.clone()).unwrap(),
                    value: String::from_utf8(kv.value.clone()).unwrap(),
                    lease: kv.lease.map(LeaseId::get),
                },
                vec![kv.mod_revision.get().to_string()],
            ));
        }
        for (id, ttl) in &state.leases {
            // The child's open gives it a full TTL under `RestartPolicy::Reset`; under
            // `Preserve`, what it had left when the last check closed the file (as that check
            // saw it: its clock did not move).
            let mut grant = virt(
                Kind::Grant,
                vec![id.get().to_string(), ttl.as_nanos().to_string()],
            );
            grant.left = state.remaining.get(id).map(|r| r.as_nanos() as u64);
            ops.push(grant);
        }
    }
    let mut open: HashMap<(u64, u64), usize> = HashMap::new();
    for (pos, line) in run.lines.iter().enumerate() {
        let w: Vec<&str> = line.split(' ').collect();
        let pos = pos as i64;
        let bad = || format!("bad line {pos}: {line}");
        match w[0] {
            "open" | "ready" => continue,
            "S" | "A" if w.len() >= 5 => {}
            _ => return Err(bad()),
        }
        let t: u64 = w[1].parse().map_err(|_| bad())?;
        let seq: u64 = w[2].parse().map_err(|_| bad())?;
        let at: u64 = w[3].parse().map_err(|_| bad())?;
        let num = |i: usize| -> Result<u64, String> {
            w.get(i).and_then(|s| s.parse().ok()).ok_or_else(bad)
        };
        let text = |i: usize| -> Result<String, String> {
            w.get(i).map(|s| s.to_string()).ok_or_else(bad)
        };
        if w[0] == "S" {
            let kind = match w[4] {
                "grant" => Kind::Grant,
                "renew" => Kind::Renew(num(5)?),
                "putl" => Kind::Put {
                    key: text(5)?,
                    value: text(6)?,
                    lease: Some(num(7)?),
                },
                "put" => Kind::Put {
                    key: text(5)?,
                    value: text(6)?,
                    lease: None,
                },
                "attach" => Kind::Attach(num(5)?, text(6)?),
                "detach" => Kind::Detach(num(5)?, text(6)?),
                "delete" => Kind::Delete(text(5)?),
                "revoke" => Kind::Revoke(num(5)?),
                "sync" => Kind::Sync,
                _ => return Err(bad()),
            };
            open.insert((t, seq), ops.len());
            ops.push(Op {
                start: pos,
                ack: None,
                wall_start: at,
                wall_ack: 0,
                kind,
                outcome: Outcome::InFlight,
                initial: false,
                left: None,
            });
        } else {
            let i = open.remove(&(t, seq)).ok_or_else(bad)?;
            let op = &mut ops[i];
            op.ack = Some(pos);
            op.wall_ack = at;
            op.outcome = match w[4] {
                "ok" => Outcome::Ok(w[5..].iter().map(|s| s.to_string()).collect()),
                "err" => Outcome::Err(text(5)?),
                _ => return Err(bad()),
            };
        }
    }
    Ok(ops)
}

/// What [`check_life`] found to hold, besides the absence of problems.
#[derive(Debug, Default)]
struct Verdict {
    /// The highest lease id a new grant must be above.
    highest_id: u64,
    /// Ops acknowledged before this transcript position are certain (under `Batched`).
    frontier: i64,
    /// The highest revision acknowledged (and certain).
    acked_revision: u64,
    /// Leases that must have survived.
    must_exist_leases: Vec<u64>,
    /// Keys that must have survived.
    must_exist: Vec<String>,
    /// A value each of these keys once had, overwritten by a certain write.
    stale: Vec<(String, String)>,
}

/// Makes sure the checker is not blind: each change to what the reopened file showed that
/// contradicts an acknowledged operation must be reported. `Err` names one that was not.
/// Under `Batched`, what is certain is fixed as the real state showed it (a sabotaged state
/// would otherwise hide the very evidence that made an op certain).
fn sabotage(
    before: &Initial,
    run: &Run,
    after: &State,
    mode: (bool, bool),
    verdict: &Verdict,
    stats: &mut Stats,
) -> Result<(), String> {
    let mut tries: Vec<(String, State)> = Vec::new();
    if let Some(&id) = verdict.must_exist_leases.first() {
        let mut s = after.clone();
        let id = LeaseId::new(id).unwrap();
        s.leases.remove(&id);
        s.kvs.retain(|kv| kv.lease != Some(id));
        tries.push((format!("lease {id} lost"), s));
    }
    if let Some(key) = verdict.must_exist.first() {
        let mut s = after.clone();
        s.kvs.retain(|kv| kv.key != key.as_bytes());
        tries.push((format!("key {key} lost"), s));
    }
    if let Some((key, value)) = verdict.stale.first() {
        let mut s = after.clone();
        for kv in &mut s.kvs {
            if kv.key == key.as_bytes() {
                kv.value = value.clone().into_bytes();
            }
        }
        tries.push((format!("key {key} back to {value}"), s));
    }
    if verdict.acked_revision > 0 {
        let mut s = after.clone();
        s.revision = lessor::Revision::new(verdict.acked_revision - 1);
        tries.push(("the revision went back".into(), s));
    }
    for (what, state) in tries {
        let mut scratch = Stats::default();
        // What is certain stays as the real state showed it: a sabotaged state hides evidence.
        let frontier = Some(verdict.frontier);
        if check_life(before, run, &state, mode, frontier, &mut scratch).is_ok() {
            return Err(format!("the checker did not notice: {what}"));
        }
        stats.sabotages_caught += 1;
    }
    Ok(())
}

/// Checks one killed life: `before` is what it started from, `after` what the reopened file
/// holds.
fn check_life(
    before: &Initial,
    run: &Run,
    after: &State,
    (batched, _preserve): (bool, bool),
    frontier_given: Option<i64>,
    stats: &mut Stats,
) -> Result<Verdict, String> {
    let ops = parse(run, before)?;
    let mut problems = Vec::new();
    let mut verdict = Verdict::default();
    let margin = MARGIN.as_nanos() as u64;
    for op in ops.iter().filter(|o| !o.initial) {
        match op.outcome {
            Outcome::InFlight => stats.in_flight += 1,
            Outcome::Ok(_) => stats.acked += 1,
            Outcome::Err(ref e) if e.starts_with("other") => {
                problems.push(format!("unexpected error: {}", op.describe()))
            }
            Outcome::Err(_) => {}
        }
    }

    // Leases: who granted each, with what TTL.
    let mut grant_of: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some((id, _)) = op.granted()
            && let Some(prev) = grant_of.insert(id, i)
        {
            problems.push(format!(
                "id {id} granted twice: {} and {}",
                ops[prev].describe(),
                op.describe()
            ));
        }
    }
    let ttl_of = |id: u64| {
        grant_of
            .get(&id)
            .and_then(|&g| ops[g].granted())
            .map(|g| g.1)
    };
    // The latest a lease's deadline can be said to be at least at: start of an acknowledged
    // grant or renewal plus the TTL, over those satisfying `filter`.
    let promised = |id: u64, filter: &dyn Fn(&Op) -> bool| -> Option<u64> {
        let ttl = ttl_of(id)?;
        ops.iter()
            .filter(|o| {
                o.ok()
                    && filter(o)
                    && match o.kind {
                        Kind::Grant => o.granted().map(|g| g.0) == Some(id),
                        Kind::Renew(l) => l == id,
                        _ => false,
                    }
            })
            .map(|o| o.wall_start + o.left.unwrap_or(ttl))
            .max()
    };
    let expiry_possible =
        |id: u64| promised(id, &|_| true).is_none_or(|p| run.kill_wall + margin >= p);
    let revoke_possible = |id: u64| {
        ops.iter()
            .any(|o| o.possible() && matches!(o.kind, Kind::Revoke(l) if l == id))
    };
    let end_possible = |id: u64| revoke_possible(id) || expiry_possible(id);

    // During the run: a lease is refused only once it may have ended, and never used after an
    // acknowledged revocation.
    for x in &ops {
        let Some(id) = x.lease() else { continue };
        match &x.outcome {
            Outcome::Err(e) if e == "notfound" => {
                let Some(&g) = grant_of.get(&id) else {
                    continue;
                };
                if !ops[g].before(x) {
                    continue;
                }
                let revoked = ops.iter().any(|o| {
                    o.possible()
                        && matches!(o.kind, Kind::Revoke(l) if l == id)
                        && x.ack.is_some_and(|a| o.start < a)
                });
                let alive_until = promised(id, &|o: &Op| o.before(x));
                if !revoked && alive_until.is_some_and(|p| x.wall_ack + margin < p) {
                    problems.push(format!(
                        "lease {id} refused {}ms before the deadline its last renewal set: {}",
                        (alive_until.unwrap() - x.wall_ack) / 1_000_000,
                        x.describe()
                    ));
                }
            }
            Outcome::Ok(_) => {
                if let Some(r) = ops
                    .iter()
                    .find(|o| o.ok() && matches!(o.kind, Kind::Revoke(l) if l == id) && o.before(x))
                {
                    problems.push(format!(
                        "lease {id} used after its revocation {}: {}",
                        r.describe(),
                        x.describe()
                    ));
                }
            }
            _ => {}
        }
    }

    // What the reopened file shows to have happened: puts whose value is there, grants whose
    // lease is there. Commits are durable in order, so whatever finished before one of them
    // began is durable too.
    let mut put_of_value: HashMap<&str, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Kind::Put { value, .. } = &op.kind {
            put_of_value.insert(value, i);
        }
    }
    let mut frontier = i64::MIN;
    if let Some(f) = frontier_given {
        frontier = f;
    } else if batched {
        for op in &ops {
            if op.ok() && matches!(op.kind, Kind::Sync) {
                frontier = frontier.max(op.start);
            }
        }
        for kv in &after.kvs {
            if let Some(&i) = put_of_value.get(String::from_utf8_lossy(&kv.value).as_ref()) {
                frontier = frontier.max(ops[i].start);
            }
        }
        for id in after.leases.keys() {
            if let Some(&g) = grant_of.get(&id.get()) {
                frontier = frontier.max(ops[g].start);
            }
        }
    }
    verdict.frontier = frontier;
    let certain = |o: &Op| o.ok() && (o.initial || !batched || o.ack.is_some_and(|a| a < frontier));

    // Leases after the kill.
    let in_flight_grants = ops
        .iter()
        .filter(|o| matches!(o.kind, Kind::Grant) && o.outcome == Outcome::InFlight)
        .count();
    let mut unknown = 0;
    for (id, ttl) in &after.leases {
        let id = id.get();
        match grant_of.get(&id) {
            Some(&g) => {
                if ops[g].granted().map(|g| g.1) != Some(ttl.as_nanos() as u64) {
                    problems.push(format!(
                        "lease {id} has TTL {ttl:?}, granted {}",
                        ops[g].describe()
                    ));
                }
            }
            None if id > before.highest_id => unknown += 1,
            None => problems.push(format!(
                "lease {id} is there but was never granted, nor in flight"
            )),
        }
        if let Some(r) = ops
            .iter()
            .find(|o| certain(o) && matches!(o.kind, Kind::Revoke(l) if l == id))
        {
            problems.push(format!(
                "lease {id} is there after its revocation {}",
                r.describe()
            ));
        }
    }
    if unknown > in_flight_grants {
        problems.push(format!(
            "{unknown} leases nobody was told of, with {in_flight_grants} grants in flight"
        ));
    }
    for (&id, &g) in &grant_of {
        if !certain(&ops[g]) {
            continue;
        }
        if end_possible(id) {
            stats.leases_maybe_expired += 1;
            continue;
        }
        stats.leases_required += 1;
        verdict.must_exist_leases.push(id);
        if !after.leases.contains_key(&LeaseId::new(id).unwrap()) {
            problems.push(format!(
                "lease {id} is gone, though never revoked and promised life until {}ms after the \
                 kill: {}",
                (promised(id, &|_| true).unwrap() - run.kill_wall) / 1_000_000,
                ops[g].describe()
            ));
        }
    }
    // Keys whose value is there but whose lease is not: seen by `invariants::check`.

    // Keys after the kill.
    let mut keys: BTreeSet<&str> = ops.iter().filter_map(Op::key).collect();
    let after_keys: Vec<String> = after
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    keys.extend(after_keys.iter().map(String::as_str));
    let revision_before = before.state.as_ref().map_or(0, |s| s.revision.get());
    for key in keys {
        let writes: Vec<&Op> = ops
            .iter()
            .filter(|o| {
                o.possible()
                    && o.key() == Some(key)
                    && matches!(o.kind, Kind::Put { .. } | Kind::Delete(_))
            })
            .collect();
        let sure: Vec<&Op> = writes.iter().copied().filter(|o| certain(o)).collect();
        let superseded = |o: &Op| sure.iter().any(|s| o.before(s));
        // Attachments that may have happened after every certain write.
        let attaches: Vec<&Op> = ops
            .iter()
            .filter(|o| {
                o.possible()
                    && o.key() == Some(key)
                    && matches!(o.kind, Kind::Attach(..))
                    && !superseded(o)
            })
            .collect();
        let latest: Vec<&Op> = writes.iter().copied().filter(|o| !superseded(o)).collect();
        let deleted = latest.iter().any(|o| matches!(o.kind, Kind::Delete(_)));
        let never = sure.is_empty();
        let lease_ended = latest
            .iter()
            .filter_map(|o| match o.kind {
                Kind::Put { lease, .. } => lease,
                _ => None,
            })
            .chain(attaches.iter().filter_map(|o| o.lease()))
            .any(end_possible);
        let absent_allowed = deleted || never || lease_ended;
        match after.get(key.as_bytes()) {
            Some(kv) => {
                let value = String::from_utf8_lossy(&kv.value);
                let Some(&p) = put_of_value.get(value.as_ref()) else {
                    problems.push(format!("{key} = {value}: nobody wrote that"));
                    continue;
                };
                let put = &ops[p];
                if !put.possible() || put.key() != Some(key) {
                    problems.push(format!("{key} = {value}, from {}", put.describe()));
                    continue;
                }
                if superseded(put) {
                    let by = sure.iter().find(|s| put.before(s)).unwrap();
                    problems.push(format!(
                        "{key} = {value}: stale, {} was overwritten by {}",
                        put.describe(),
                        by.describe()
                    ));
                    continue;
                }
                match put.result(0).map(|r| r.parse::<u64>().unwrap()) {
                    Some(rev) if rev != kv.mod_revision.get() => problems.push(format!(
                        "{key} = {value} at revision {:?}, acknowledged at {rev}",
                        kv.mod_revision
                    )),
                    None if kv.mod_revision.get() <= revision_before => problems.push(format!(
                        "{key} = {value} from an op in flight, at an old revision {:?}",
                        kv.mod_revision
                    )),
                    _ => {}
                }
                // Its lease: the put's, or one an attach or detach may have set since.
                let Kind::Put { lease, .. } = put.kind else {
                    unreachable!()
                };
                let mut allowed = BTreeSet::from([lease]);
                for o in &ops {
                    if o.possible() && o.key() == Some(key) && !o.before(put) {
                        match o.kind {
                            Kind::Attach(l, _) => allowed.insert(Some(l)),
                            Kind::Detach(..) => allowed.insert(None),
                            _ => false,
                        };
                    }
                }
                let got = kv.lease.map(LeaseId::get);
                if !allowed.contains(&got) {
                    problems.push(format!(
                        "{key} = {value} is attached to {got:?}, expected one of {allowed:?} \
                         after {}",
                        put.describe()
                    ));
                }
                if latest.len() == 1 && attaches.is_empty() {
                    stats.keys_pinned += 1;
                } else {
                    stats.keys_loose += 1;
                }
                if !absent_allowed {
                    verdict.must_exist.push(key.to_string());
                }
                if let Some(old) = writes
                    .iter()
                    .find(|o| superseded(o) && matches!(o.kind, Kind::Put { .. }))
                    && let Kind::Put { value, .. } = &old.kind
                {
                    verdict.stale.push((key.to_string(), value.clone()));
                }
            }
            None => {
                if absent_allowed {
                    if lease_ended && !deleted && !never {
                        stats.seen_expired += 1;
                    }
                    stats.keys_loose += 1;
                } else {
                    problems.push(format!(
                        "{key} is gone, but the last writes that may have happened are {:?}",
                        latest.iter().map(|o| o.describe()).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }

    // The revision never goes back, and ids are never reused.
    let acked_revision = ops
        .iter()
        .filter(|o| certain(o) && matches!(o.kind, Kind::Put { .. } | Kind::Revoke(_)))
        .filter_map(|o| o.result(0)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    if after.revision.get() < acked_revision.max(revision_before) {
        problems.push(format!(
            "revision {:?} after the kill, but {} was acknowledged and {revision_before} was \
             there before",
            after.revision, acked_revision
        ));
    }
    let highest = ops
        .iter()
        .filter(|o| if batched { certain(o) } else { o.ok() })
        .filter_map(|o| o.granted().map(|g| g.0))
        .chain(after.leases.keys().map(|id| id.get()))
        .max()
        .unwrap_or(0)
        .max(before.highest_id);

    verdict.highest_id = highest;
    verdict.acked_revision = acked_revision;
    if problems.is_empty() {
        Ok(verdict)
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs the crash rounds found, reduced to deterministic tests

/// A disk in memory whose next `sync_data`, once armed, waits until released: holds a commit
/// in the middle of its fsync for as long as a test needs.
#[derive(Clone, Debug, Default)]
struct GateDisk {
    disk: common::MemDisk,
    gate: Arc<(Mutex<Gate>, parking_lot::Condvar)>,
}

#[derive(Debug, Default)]
struct Gate {
    armed: bool,
    entered: bool,
}

impl GateDisk {
    fn arm(&self) {
        self.gate.0.lock().armed = true;
    }

    fn wait_entered(&self) {
        let (m, cv) = &*self.gate;
        let mut g = m.lock();
        while !g.entered {
            cv.wait(&mut g);
        }
    }

    fn release(&self) {
        let (m, cv) = &*self.gate;
        m.lock().armed = false;
        cv.notify_all();
    }
}

impl redb::StorageBackend for GateDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.disk.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.disk.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.disk.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let (m, cv) = &*self.gate;
        let mut g = m.lock();
        if g.armed {
            g.entered = true;
            cv.notify_all();
            while g.armed {
                cv.wait(&mut g);
            }
        }
        drop(g);
        self.disk.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk.write(offset, data)
    }
}

/// Found by the crash rounds under `Preserve` (a lease granted, acknowledged, renewed, never
/// revoked, came back dead after the kill). A grant stamps its record's checkpoint with the
/// clock read when the call begins, but its TTL runs from the clock read after its commit, and
/// `settle` marks the lease checkpointed at that later deadline. Whatever time the commit takes
/// (waiting for the writer lock, the fsync) is thus missing from the record, and since the
/// lease does not count as changed, no checkpoint pass and not even `close` rewrites it: after
/// any reopen under `Preserve` (or `Absolute`) the lease has that much less than it had, or is
/// dead. Fixed: `settle_written` marks the record as saying the earlier deadline, so the next
/// checkpoint pass (or close) writes the one the lease got.
#[test]
fn a_grant_that_waits_for_its_commit_checkpoints_the_deadline_it_got() {
    let disk = GateDisk::default();
    let clock = ManualClock::new();
    let open = || {
        Lessor::builder()
            .clock(clock.clone())
            .ticker(false)
            .restart_policy(RestartPolicy::Preserve)
            .open_with_backend(disk.clone())
            .unwrap()
    };
    let l = open();
    disk.arm();
    let granter = {
        let l = l.clone();
        std::thread::spawn(move || l.grant(Duration::from_secs(10)).unwrap())
    };
    disk.wait_entered(); // the grant is in its fsync
    clock.advance(Duration::from_secs(6));
    disk.release();
    let lease = granter.join().unwrap();
    // The TTL runs from the commit, as documented.
    assert_eq!(
        l.time_to_live(lease.id).unwrap().remaining,
        Duration::from_secs(10)
    );
    l.close().unwrap(); // a clean close "checkpoints exactly"
    let l = open();
    // Downtime does not count under Preserve: it has what it had at close.
    assert_eq!(
        l.time_to_live(lease.id).map(|i| i.remaining).ok(),
        Some(Duration::from_secs(10)),
        "the record kept the deadline of before the commit"
    );
}
