//! A TCP proxy that a test controls, to cut one client off from an etcd member without
//! touching the host's network (no iptables): shared by `tests/etcd_keepalive.rs` and
//! `tests/etcd_faults.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A TCP proxy between the client and etcd, on std threads. While cut, it forwards nothing in
/// either direction and holds every connection open (new ones too): a black hole, the worst
/// case for a client, which sees neither data nor an error. `heal` closes the connections it
/// held, so that the client reconnects, and forwards again.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, for `EtcdLessor::connect`.
    pub endpoint: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    cut: AtomicBool,
    /// Drops what the server sends only: requests arrive, answers are lost.
    cut_answers: AtomicBool,
    /// Every connection accepted, both of its sockets, to close on `heal`.
    conns: Mutex<Vec<(TcpStream, TcpStream)>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState {
            cut: AtomicBool::new(false),
            cut_answers: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let pair = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    shared.conns.lock().unwrap().push(pair);
                    pump(
                        &shared,
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        false,
                    );
                    pump(&shared, server, client, true);
                }
            })
            .unwrap();
        Proxy { endpoint, state }
    }

    /// Stops forwarding; connections stay open.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding the server's answers only: requests still reach it (and take effect),
    /// the client hears nothing back.
    pub fn cut_answers(&self) {
        self.state.cut_answers.store(true, Ordering::SeqCst);
    }

    /// Closes every connection (their streams are corrupt: data was dropped) and forwards again.
    pub fn heal(&self) {
        let conns: Vec<_> = self.state.conns.lock().unwrap().drain(..).collect();
        for (a, b) in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.cut_answers.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread of its own until either closes, dropping the bytes while
/// the proxy is cut (`answers`: this is the server-to-client direction).
fn pump(state: &Arc<ProxyState>, mut from: TcpStream, mut to: TcpStream, answers: bool) {
    let state = Arc::clone(state);
    std::thread::Builder::new()
        .name("proxy-pump".into())
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if state.cut.load(Ordering::SeqCst)
                    || (answers && state.cut_answers.load(Ordering::SeqCst))
                {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        })
        .unwrap();
}
