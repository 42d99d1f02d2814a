//! Serves etcd's API over a lessor database until Ctrl-C:
//! `cargo run -p lessor-server --example serve -- PATH [ADDR]` (ADDR defaults to
//! 127.0.0.1:2379). Then, e.g., `ETCDCTL_API=3 etcdctl --endpoints=ADDR lease grant 10`.

use lessor_server::{Config, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: serve PATH [ADDR]")?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:2379".to_owned());
    let lessor = lessor::Lessor::open(&path)?;
    let bound = Server::new(lessor, Config::new(addr.parse()?))?
        .bind()
        .await?;
    println!("serving {path} on {}", bound.local_addr());
    bound
        .serve_with_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
