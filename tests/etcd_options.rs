//! `EtcdOptions` against real etcd servers: TLS with a CA and client certificates (generated
//! here with the `openssl` command, the server started with `--client-cert-auth`), user and
//! password authentication, and what is refused.
//!
//! Run with `cargo test --features etcd --test etcd_options`; needs `etcd`, `etcdctl` and
//! `openssl`.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "conformance/etcd_server.rs"]
mod etcd_server;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use lessor::{Error, EtcdLessor, EtcdOptions, WatchEvent};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `ca.pem`, `server.pem`/`server.key` (for 127.0.0.1) and `client.pem`/`client.key`
/// (signed by the CA), and `rogue-ca.pem`, a CA that signed none of them. P-256 keys: quick to
/// make, and both rustls and Go accept them.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "rogue-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=lessor test {ca}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=lessor-client")] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// An etcd server that requires TLS and a client certificate signed by `ca.pem`.
fn tls_server() -> (EtcdServer, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let path = dir.path().to_path_buf();
    let file = |name: &str| path.join(name).display().to_string();
    let flags = [
        format!("--cert-file={}", file("server.pem")),
        format!("--key-file={}", file("server.key")),
        format!("--trusted-ca-file={}", file("ca.pem")),
        "--client-cert-auth".to_owned(),
    ];
    (EtcdServer::start_with("https", &flags, Some(dir)), path)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn tls_options(dir: &Path) -> EtcdOptions {
    EtcdOptions::new()
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
        .ca_certificate(read(dir, "ca.pem"))
        .client_certificate(read(dir, "client.pem"), read(dir, "client.key"))
}

/// Connects, waiting (up to 30 s) for the server to elect itself leader.
fn connect(endpoint: &str, options: &EtcdOptions) -> EtcdLessor {
    let start = Instant::now();
    loop {
        match EtcdLessor::connect([endpoint], options.clone()) {
            Ok(store) => return store,
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("etcd did not answer within 30 s: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn tls_with_a_client_certificate_serves_every_kind_of_call() {
    let (server, dir) = tls_server();
    assert!(server.endpoint.starts_with("https://"));
    let store = connect(&server.endpoint, &tls_options(&dir));
    store.ready().unwrap();
    let lease = store.grant(Duration::from_secs(5)).unwrap();
    let watch = store.watch("/tls/").unwrap();
    store.put_with_lease("/tls/a", "1", lease.id).unwrap();
    assert_eq!(store.get("/tls/a").unwrap().unwrap().value, b"1");
    match watch.recv_timeout(Duration::from_secs(5)).unwrap() {
        WatchEvent::Put(kv) => assert_eq!(kv.key, b"/tls/a"),
        other => panic!("{other:?}"),
    }
    let ka = store.keep_alive(lease.id).unwrap();
    assert!(ka.deadline().is_some());
    ka.cancel();
    store.revoke(lease.id).unwrap();
    assert!(store.get("/tls/a").unwrap().is_none());
}

#[test]
fn tls_refuses_an_unknown_server_a_missing_client_certificate_and_plain_http() {
    let (server, dir) = tls_server();
    // Wait until the server answers a good client, so that failures below are the TLS's.
    drop(connect(&server.endpoint, &tls_options(&dir)));
    let quick = |o: EtcdOptions| {
        o.connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2))
    };

    // A CA that did not sign the server's certificate: the client refuses the server.
    let rogue = quick(
        EtcdOptions::new()
            .ca_certificate(read(&dir, "rogue-ca.pem"))
            .client_certificate(read(&dir, "client.pem"), read(&dir, "client.key")),
    );
    let start = Instant::now();
    assert!(EtcdLessor::connect([&server.endpoint], rogue).is_err());
    assert!(start.elapsed() < Duration::from_secs(3));

    // No client certificate: the server refuses the client (--client-cert-auth).
    let anonymous = quick(EtcdOptions::new().ca_certificate(read(&dir, "ca.pem")));
    assert!(EtcdLessor::connect([&server.endpoint], anonymous).is_err());

    // No TLS at all, against a TLS server.
    let plain = server.endpoint.replace("https://", "http://");
    assert!(EtcdLessor::connect([&plain], quick(EtcdOptions::new())).is_err());

    // A zero timeout: a configuration error.
    assert!(matches!(
        EtcdLessor::connect(
            [&server.endpoint],
            tls_options(&dir).attempt_timeout(Duration::ZERO)
        ),
        Err(Error::InvalidConfig(_))
    ));

    // TLS options with an http:// endpoint: a configuration error, before any connection.
    assert!(matches!(
        EtcdLessor::connect([&plain], tls_options(&dir)),
        Err(Error::InvalidConfig(_))
    ));
}

fn etcdctl(endpoint: &str, args: &[&str]) {
    let etcdctl = std::env::var_os("LESSOR_ETCDCTL").unwrap_or_else(|| "etcdctl".into());
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("the etcdctl command");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let server = EtcdServer::start();
    drop(connect(&server.endpoint, &EtcdOptions::new()));
    etcdctl(&server.endpoint, &["user", "add", "root:rootpw"]);
    etcdctl(&server.endpoint, &["auth", "enable"]);

    let store = connect(&server.endpoint, &EtcdOptions::new().user("root", "rootpw"));
    store.ready().unwrap();
    let lease = store.grant(Duration::from_secs(5)).unwrap();
    store.put_with_lease("/auth/a", "1", lease.id).unwrap();
    assert_eq!(store.renew(lease.id).unwrap(), Duration::from_secs(5));
    assert_eq!(store.get("/auth/a").unwrap().unwrap().value, b"1");

    // A wrong password is a refusal (not "unavailable"), at connect.
    let wrong = EtcdLessor::connect([&server.endpoint], EtcdOptions::new().user("root", "nope"));
    assert!(matches!(wrong, Err(Error::Backend(_))), "{wrong:?}");
    // No credentials: etcd refuses the calls that need them.
    match EtcdLessor::connect([&server.endpoint], EtcdOptions::new()) {
        Ok(anonymous) => assert!(matches!(anonymous.get("/auth/a"), Err(Error::Backend(_)))),
        Err(e) => assert!(matches!(e, Error::Backend(_)), "{e:?}"),
    }
}
