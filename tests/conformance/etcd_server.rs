//! A throwaway etcd server for tests and benches: one member on 127.0.0.1 with free ports and
//! a temporary data folder, stopped (killed and reaped) when the guard is dropped.
//!
//! The binary is `etcd` from `PATH` (Debian's `etcd-server` package), or `$LESSOR_ETCD`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd server; dropping it stops the server and removes its data.
pub struct EtcdServer {
    child: Child,
    /// `http://127.0.0.1:PORT`, for `EtcdLessor::connect`.
    pub endpoint: String,
    /// Its data folder and log file, removed with the guard.
    dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts a server and waits (up to 30 s) until it accepts connections. Panics with the
    /// server's log if it cannot start.
    pub fn start() -> EtcdServer {
        EtcdServer::start_with("http", &[], None)
    }

    /// Starts a server whose client URL has `scheme` (`https` with TLS flags in `extra`), with
    /// `extra` flags, in `dir` if given (a folder the test prepared, with certificates).
    pub fn start_with(
        scheme: &str,
        extra: &[String],
        dir: Option<tempfile::TempDir>,
    ) -> EtcdServer {
        let binary = std::env::var_os("LESSOR_ETCD").unwrap_or_else(|| "etcd".into());
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("a temporary folder for etcd"));
        // Ask the OS for two free loopback ports; both listeners live until both are known.
        let (client, peer) = {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let b = TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log: PathBuf = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .arg("--name=lessor-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=lessor-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary:?} ({e}): install etcd (Debian: apt-get install \
                     etcd-server) or set LESSOR_ETCD to its path"
                )
            });
        let mut server = EtcdServer {
            child,
            endpoint: client_url,
            dir,
        };
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", client)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("etcd exited with {status}:\n{}", server.log());
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("etcd did not listen within 30 s:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
