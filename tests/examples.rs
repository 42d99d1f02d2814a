//! Every program in `examples/` runs as a child process, with arguments that keep it short, on a
//! database in a temporary folder: it must exit with status 0 and print the line that says it
//! did what it shows. The examples run in parallel threads (several wait on real time: their
//! leases have real TTLs, which is what they demonstrate), so the whole file takes a few
//! seconds. A test also checks that every file in `examples/` has its case here.
//!
//! `cargo test` builds the examples into `target/<profile>/examples/`, beside this test's own
//! `target/<profile>/deps/`. The test runs `cargo build --examples` once first anyway, with the
//! same profile and features: a no-op after `cargo test`, and what builds them (or rebuilds
//! them after an edit) under `cargo test --test examples`, which does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest an example may take before it is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// One run of an example: its arguments (`{db}` stands for a fresh database path) and the lines
/// its output must contain.
struct Case {
    example: &'static str,
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        example: "lease_expiry",
        args: &["{db}", "--ttl", "0.5"],
        expect: &["put /cron/lock/job1 = 10001", "key expired"],
    },
    Case {
        example: "keepalive",
        args: &["--db", "{db}", "--ttl", "0.3", "--seconds", "1"],
        expect: &[
            "renewed: TTL 300ms",
            "keep-alive ended: the keep-alive was cancelled",
        ],
    },
    Case {
        example: "keepalive",
        args: &["--db", "{db}", "--ttl", "0.3", "--cancel-after", "0.5"],
        expect: &["keep-alive ended: the keep-alive's time was up", "key gone"],
    },
    Case {
        example: "lock",
        args: &["--db", "{db}", "--workers", "2", "--ttl", "0.5"],
        expect: &[
            "worker-0 crashes holding the lock",
            "worker-1 holds /cron/lock/job1",
            "never held by two at once",
        ],
    },
    Case {
        example: "election",
        args: &["--db", "{db}", "--candidates", "2", "--ttl", "0.5"],
        expect: &["candidate-2 resigns", "leadership passed in campaign order"],
    },
    Case {
        example: "service_discovery",
        args: &["--db", "{db}", "--ttl", "0.5", "--instances", "3"],
        expect: &[
            "/services/api/2 lease expired",
            "/services/api/3 deregistered",
        ],
    },
    Case {
        example: "tokio_service",
        args: &["--db", "{db}", "--run-for", "3", "--instances", "3"],
        expect: &[
            "fencing token",
            "operator: revokes lease",
            "lost its lease (the lease was revoked)",
            "down (lease revoked)",
            "--run-for is over: shutting down",
            "deregistered: lease revoked",
            "main: closed cleanly",
        ],
    },
];

/// The binary of example `name`, after building every example once (see the module docs).
fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(build_examples);
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the examples with this test's profile and features, into the target directory this
/// test was built in; returns their folder, `target/<profile>/examples`.
fn build_examples() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap(); // target/<profile>
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let profile = if profile == "debug" { "dev" } else { profile };
    let features: Vec<&str> = [
        ("cli", cfg!(feature = "cli")),
        ("metrics", cfg!(feature = "metrics")),
        ("etcd", cfg!(feature = "etcd")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let status = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--examples", "--no-default-features"])
        .args(["--profile", profile])
        .args(["--features", &features.join(",")])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --examples failed: {status}");
    profile_dir.join("examples")
}

/// What a finished child said.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Starts example `name` with `args`, `{db}` replaced by a path in `dir`.
fn start(name: &str, args: &[&str], dir: &Path) -> Child {
    let db = dir.join("example.redb");
    let args = args.iter().map(|a| {
        if *a == "{db}" {
            db.clone()
        } else {
            PathBuf::from(a)
        }
    });
    Command::new(binary(name))
        .args(args)
        .current_dir(dir) // anything an example writes beside its database stays in `dir`
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting example {name}: {e}"))
}

/// Waits for `child` to exit, killing it after [`LIMIT`]; reads everything it printed.
fn finish(mut child: Child, started: Instant) -> Ran {
    let out = child.stdout.take().map(read_all);
    let err = child.stderr.take().map(read_all);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10)); // polls the child, not a lease
    };
    Ran {
        status,
        stdout: out.map(|t| t.join().unwrap()).unwrap_or_default(),
        stderr: err.map(|t| t.join().unwrap()).unwrap_or_default(),
        took: started.elapsed(),
    }
}

/// Reads `pipe` to its end on a thread of its own, so that a child never blocks on a full pipe.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// What is wrong with a run that should have exited 0 printing every line of `expect`.
fn check(what: &str, ran: &Ran, expect: &[&str]) -> Option<String> {
    let missing: Vec<&&str> = expect
        .iter()
        .filter(|e| !ran.stdout.contains(**e))
        .collect();
    if ran.status.success() && missing.is_empty() {
        return None;
    }
    Some(format!(
        "{what}: {} after {:.1?}, missing {missing:?}\n--- stdout\n{}--- stderr\n{}",
        ran.status, ran.took, ran.stdout, ran.stderr
    ))
}

#[test]
fn every_example_runs_to_the_end_and_exits_0() {
    binary("lease_expiry"); // build once, before the clocks start
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = CASES
            .iter()
            .map(|case| {
                s.spawn(move || {
                    let dir = tempfile::tempdir().unwrap();
                    let started = Instant::now();
                    let ran = finish(start(case.example, case.args, dir.path()), started);
                    let what = format!("{} {}", case.example, case.args.join(" "));
                    check(&what, &ran, case.expect)
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|run| run.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_in_examples_has_a_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let cased: BTreeSet<String> = CASES.iter().map(|c| c.example.to_string()).collect();
    assert_eq!(files, cased, "examples/ and the cases here differ");
}

/// Ctrl-C (SIGINT) makes `tokio_service` shut down as `--run-for` does: every instance revokes
/// its lease, the lessor closes, exit status 0.
#[cfg(unix)]
#[test]
fn tokio_service_shuts_down_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    binary("tokio_service");
    let started = Instant::now();
    let mut child = start(
        "tokio_service",
        &["--db", "{db}", "--instances", "2"],
        dir.path(),
    );
    // Wait until an instance holds the lock: the signal handler is installed by then (main
    // enters its select! right after spawning the instances, well before their writes commit).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("fencing token") {
            break;
        }
    }
    if !seen.contains("fencing token") {
        let ran = finish(child, started); // its stdout has ended: it has exited
        panic!(
            "no instance took the lock ({}):\n{seen}{}",
            ran.status, ran.stderr
        );
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The rest of stdout, read on while the child shuts down.
    let rest = std::thread::spawn(move || {
        lines
            .map_while(Result::ok)
            .map(|line| line + "\n")
            .collect::<String>()
    });
    let mut ran = finish(child, started);
    ran.stdout = seen + &rest.join().unwrap();
    let expect = [
        "main: Ctrl-C: shutting down",
        "node-1: deregistered: lease revoked",
        "node-2: deregistered: lease revoked",
        "main: closed cleanly",
    ];
    if let Some(failure) = check("tokio_service, then SIGINT", &ran, &expect) {
        panic!("{failure}");
    }
}
