//! Helpers shared by the command-line tool's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use lessor::LeaseId;

/// A lease id from a literal.
pub fn id(n: u64) -> LeaseId {
    LeaseId::new(n).expect("test ids are valid")
}

/// A temporary folder holding one database path, removed when dropped.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn test_dir() -> TestDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessor.redb");
    TestDir { dir, path }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---- Real servers and real clients: etcd, `lessor serve`, etcdctl, go ----

#[path = "../../../tests/conformance/etcd_server.rs"]
mod etcd_server;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use etcd_server::EtcdServer;

/// Where Debian's `golang-etcd-server-dev` puts clientv3 (built in GOPATH mode).
pub const GOCODE: &str = "/usr/share/gocode";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether the external tools a test needs are installed: `etcd`, `etcdctl`, `go`, and
/// `clientv3` (Go's etcd client under [`GOCODE`]). Without one, the test is skipped (with a
/// line saying why) — unless `CI` is set, where a missing tool fails it: CI installs them all.
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|&tool| match tool {
            "clientv3" => !Path::new(GOCODE)
                .join("src/go.etcd.io/etcd/clientv3/concurrency")
                .is_dir(),
            "etcd" => std::env::var_os("LESSOR_ETCD").is_none() && !on_path("etcd"),
            other => !on_path(other),
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {} (Debian: apt-get install etcd-server etcd-client golang-go \
         golang-etcd-server-dev)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and this test needs real clients: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Sends `signal` (`TERM`, `INT`, `KILL`...) to the process `pid`, one of ours.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Lines of a child's output, read on a thread as they come.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    // Nobody reads any more; keep draining so that the child never blocks.
                }
            }
        });
        Lines { rx, seen }
    }

    /// The next line, or `None` if none came within `limit` (or the stream ended).
    pub fn next_within(&self, limit: Duration) -> Option<String> {
        self.rx.recv_timeout(limit).ok()
    }

    /// The next line; panics with what was seen if none comes within `limit`.
    pub fn next(&self, limit: Duration, what: &str) -> String {
        self.next_within(limit).unwrap_or_else(|| {
            panic!(
                "no line within {limit:?} ({what}); seen: {:?}",
                self.seen.lock().unwrap()
            )
        })
    }

    /// Every line until the stream ends (the child exited), at most `limit` in all.
    pub fn rest(&self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(RecvTimeoutError::Disconnected) => return lines,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "the stream did not end within {limit:?}; seen: {:?}",
                    self.seen.lock().unwrap()
                ),
            }
        }
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `lessor serve` on a free loopback port (the binary of this package), on a database in a
/// temporary folder; stopped with SIGTERM by [`stop`](LessorServe::stop), killed when dropped.
pub struct LessorServe {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub endpoint: String,
    pub db: PathBuf,
    stderr: Lines,
    _dir: Option<tempfile::TempDir>,
}

impl LessorServe {
    /// A server on a new database, with these extra `serve` options.
    pub fn start(extra: &[&str]) -> LessorServe {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lessor.redb");
        let mut server = LessorServe::start_on(&db, extra);
        server._dir = Some(dir);
        server
    }

    /// A server on the database `db`, with these extra `serve` options.
    pub fn start_on(db: &Path, extra: &[&str]) -> LessorServe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lessor"))
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the lessor binary starts");
        let stderr = Lines::new(child.stderr.take().unwrap());
        // The port is known once it listens: "listening on 127.0.0.1:PORT".
        let first = stderr.next(Duration::from_secs(30), "lessor serve's listening line");
        let endpoint = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line of lessor serve: {first:?}"))
            .trim()
            .to_string();
        LessorServe {
            child,
            endpoint,
            db: db.to_path_buf(),
            stderr,
            _dir: None,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server with SIGTERM; returns its exit status and the rest of its stderr.
    pub fn stop(&mut self) -> (ExitStatus, Vec<String>) {
        signal(self.child.id(), "TERM");
        self.stop_after_signal()
    }

    /// Waits for the server to exit after a signal sent to it; its status and the rest of its
    /// stderr.
    pub fn stop_after_signal(&mut self) -> (ExitStatus, Vec<String>) {
        let status = wait_exit(&mut self.child, Duration::from_secs(20))
            .expect("lessor serve stops within 20 s of SIGTERM");
        (status, self.stderr.rest(Duration::from_secs(5)))
    }
}

impl Drop for LessorServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real etcd, with its endpoint as `127.0.0.1:PORT`.
pub fn etcd() -> (EtcdServer, String) {
    let server = EtcdServer::start();
    let endpoint = server.endpoint.trim_start_matches("http://").to_string();
    (server, endpoint)
}

/// What a finished command gave.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `etcdctl` (API v3) against `endpoint`, feeding it `stdin`.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> Ran {
    let mut child = etcdctl_command(endpoint, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl starts");
    use std::io::Write as _;
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `etcdctl` against `endpoint`, to spawn.
pub fn etcdctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
        .args(args);
    command
}

/// A long-running `etcdctl` (watch, lock, elect, keep-alive), its stdout read line by line.
pub struct Spawned {
    pub child: Child,
    pub out: Lines,
}

impl Spawned {
    pub fn new(endpoint: &str, args: &[&str]) -> Spawned {
        let mut child = etcdctl_command(endpoint, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl starts");
        let out = Lines::new(child.stdout.take().unwrap());
        Spawned { child, out }
    }

    /// Waits for the process to exit by itself; its status code and the rest of its output.
    pub fn finish(mut self, limit: Duration) -> (i32, Vec<String>) {
        let status = wait_exit(&mut self.child, limit)
            .unwrap_or_else(|| panic!("etcdctl did not exit within {limit:?}"));
        (status.code().unwrap_or(-1), self.out.rest(limit))
    }

    /// Interrupts it (as Ctrl-C does) and waits for it to exit.
    pub fn interrupt(self) -> (i32, Vec<String>) {
        signal(self.child.id(), "INT");
        self.finish(Duration::from_secs(10))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the Go program in `dir` (relative to the workspace root, e.g. `tests/go/seeds/expiry`)
/// against Debian's clientv3, in GOPATH mode (no module proxy, no network), once per test
/// binary; returns the executable.
pub fn go_build(dir: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, exe)) = built.iter().find(|(d, _)| d == dir) {
        return exe.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let exe = out.join(dir.replace('/', "_"));
    let result = Command::new("go")
        .current_dir(&root)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOCODE)
        .env("GOFLAGS", "")
        // Go's build cache beside cargo's, kept between runs (HOME may be unset in CI).
        .env("GOCACHE", out.join("cache"))
        .args(["build", "-o"])
        .arg(&exe)
        .arg(format!("./{dir}"))
        .output()
        .expect("go runs");
    assert!(
        result.status.success(),
        "go build ./{dir} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    built.push((dir.to_string(), exe.clone()));
    exe
}

/// Lines of a child's output with the time each came, from `start`.
pub fn timed_lines(
    stream: impl std::io::Read + Send + 'static,
    start: Instant,
) -> std::thread::JoinHandle<Vec<(Duration, String)>> {
    std::thread::spawn(move || {
        BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .map(|line| (start.elapsed(), line))
            .collect()
    })
}
