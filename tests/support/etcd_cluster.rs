//! A throwaway etcd cluster for tests: `n` members on 127.0.0.1 with free ports and a temporary
//! folder, that a test can kill (`SIGKILL`), freeze (`SIGSTOP`/`SIGCONT`) and restart one
//! member at a time. Only the processes it started are signalled, by their PIDs; dropping the
//! guard resumes and kills every member still running and removes the data.
//!
//! The binary is `etcd` from `PATH`, or `$LESSOR_ETCD`; the leader is found with `etcdctl`
//! (next to it, or `$LESSOR_ETCDCTL`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member: its ports and, while it runs, its process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    frozen: bool,
}

/// A running cluster; see the module docs.
pub struct Cluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Every listener lives until all ports are known, so that none is handed out twice.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    /// Starts `n` members and waits until each accepts connections (a leader is elected soon
    /// after; see [`Cluster::wait_leader`]).
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary folder for etcd");
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
                frozen: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "lessor-{}-{}",
            std::process::id(),
            dir.path().display().to_string().len()
        );
        let mut cluster = Cluster {
            members,
            initial_cluster,
            token,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        for i in 0..n {
            cluster.wait_listening(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let binary = std::env::var_os("LESSOR_ETCD").unwrap_or_else(|| "etcd".into());
        let m = &self.members[i];
        let client_url = format!("http://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(&binary)
            .arg(format!("--name={}", m.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(&m.name).display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary:?} ({e}): install etcd"));
        self.members[i].child = Some(child);
        self.members[i].frozen = false;
    }

    fn wait_listening(&mut self, i: usize) {
        let start = Instant::now();
        let port = self.members[i].client_port;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(Child::try_wait) {
                panic!("etcd {i} exited with {status}:\n{}", self.log(i));
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd {i} did not listen within 30 s:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i].child.as_ref().expect("member running").id()
    }

    /// Kills member `i` with `SIGKILL` and reaps it; its data stays for [`Cluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].frozen = false;
    }

    /// Restarts member `i` on its data and waits until it listens.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i, "existing");
        self.wait_listening(i);
    }

    fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(i).to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} member {i}");
    }

    /// Freezes member `i` (`SIGSTOP`): its sockets stay open, nothing answers.
    pub fn freeze(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.members[i].frozen = true;
    }

    /// Resumes a frozen member (`SIGCONT`).
    pub fn thaw(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.members[i].frozen = false;
    }

    /// The index of the member that is leader, as `etcdctl endpoint status` reports it; waits
    /// up to 20 s for one.
    pub fn wait_leader(&self) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no leader within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader now, if a running member reports itself as leader.
    pub fn leader(&self) -> Option<usize> {
        let etcdctl = std::env::var_os("LESSOR_ETCDCTL").unwrap_or_else(|| "etcdctl".into());
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() || self.members[i].frozen {
                continue;
            }
            let out = Command::new(&etcdctl)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoint(i)))
                .arg("--command-timeout=1s")
                .args(["endpoint", "status", "-w", "json"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let (Some(member), Some(leader)) = (
                json_number(&text, "\"member_id\":"),
                json_number(&text, "\"leader\":"),
            ) else {
                continue;
            };
            if member == leader {
                return Some(i);
            }
        }
        None
    }
}

/// The number after `field` in `text` (a JSON object printed by etcdctl).
fn json_number(text: &str, field: &str) -> Option<u64> {
    let at = text.find(field)? + field.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].frozen {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.pid(i).to_string())
                    .status();
            }
            self.kill(i);
        }
    }
}
