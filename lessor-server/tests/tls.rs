//! TLS: a server certificate, and client certificates when a client CA is configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use lessor_server::{Config, Server, TlsConfig};

fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(file(name)).unwrap()
}

/// A TLS server on a free loopback port; its address.
async fn start(client_ca: bool) -> std::net::SocketAddr {
    let tls = TlsConfig {
        cert: file("server.pem"),
        key: file("server.key"),
        client_ca: client_ca.then(|| file("ca.pem")),
    };
    let config = Config::new("127.0.0.1:0".parse().unwrap()).tls(tls);
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let bound = Server::new(lessor, config).unwrap().bind().await.unwrap();
    let addr = bound.local_addr();
    tokio::spawn(bound.serve());
    addr
}

async fn connect(addr: std::net::SocketAddr, identity: bool) -> Result<Client, etcd_client::Error> {
    let mut tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pem("ca.pem")))
        .domain_name("localhost");
    if identity {
        tls = tls.identity(Identity::from_pem(pem("client.pem"), pem("client.key")));
    }
    let options = ConnectOptions::new().with_tls(tls);
    Client::connect([format!("https://{addr}")], Some(options)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_tls_and_need_a_certificate_when_a_ca_is_set() {
    let addr = start(false).await;
    let mut c = connect(addr, false).await.unwrap();
    c.put("k", "v", None).await.unwrap();
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"v");
    let url = &c.member_list().await.unwrap().members()[0].client_urls()[0].clone();
    assert!(url.starts_with("https://"), "{url}");

    let addr = start(true).await;
    let mut c = connect(addr, true).await.unwrap();
    c.put("k", "v", None).await.unwrap();
    // Without a client certificate: the handshake (hence the first call) fails.
    let refused = match connect(addr, false).await {
        Err(_) => true,
        Ok(mut c) => c.get("k", None).await.is_err(),
    };
    assert!(refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tls_files_are_named() {
    let tls = TlsConfig {
        cert: file("nonexistent.pem"),
        key: file("server.key"),
        client_ca: None,
    };
    let config = Config::new("127.0.0.1:0".parse().unwrap()).tls(tls);
    let lessor = lessor::Lessor::open_in_memory().unwrap();
    let err = Server::new(lessor, config)
        .unwrap()
        .bind()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent.pem"), "{err}");
}
