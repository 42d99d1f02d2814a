//! A load test against a running server (ours or etcd), with the `etcd-client` crate:
//! `cargo run --release -p lessor-server --example load -- ADDR [CLIENTS] [SECONDS] [SERVER_PID]`.
//!
//! Runs, for SECONDS each (default 3), with CLIENTS connections (default 8) each driven by one
//! task: put with a lease, KeepAliveOnce (a keep-alive stream opened, one request, closed),
//! grant then revoke. Prints operations per second. With SERVER_PID (Linux), also opens 1000
//! idle watch streams, then 1000 idle keep-alive streams, and prints the server's resident
//! memory growth per stream.

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, WatchOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: load ADDR [CLIENTS] [SECONDS] [SERVER_PID]")?;
    let clients: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let secs: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let pid: Option<u32> = args.next().map(|s| s.parse()).transpose()?;
    let window = Duration::from_secs(secs);

    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Client::connect([addr.clone()], None).await?);
    }
    let lease = conns[0].lease_grant(60, None).await?.id();

    for op in ["put-with-lease", "keep-alive-once", "grant+revoke"] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, c) in conns.iter().enumerate() {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < window {
                    match op {
                        "put-with-lease" => {
                            let key = format!("/load/{i}/{}", n % 1000);
                            c.put(key, "v", Some(PutOptions::new().with_lease(lease)))
                                .await?;
                        }
                        "keep-alive-once" => {
                            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                            keeper.keep_alive().await?;
                            stream.message().await?;
                        }
                        _ => {
                            let id = c.lease_grant(60, None).await?.id();
                            c.lease_revoke(id).await?;
                        }
                    }
                    n += 1;
                }
                Ok::<u64, etcd_client::Error>(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        let rate = total as f64 / start.elapsed().as_secs_f64();
        println!("{op:>16}: {rate:>9.0} ops/s ({clients} clients)");
    }
    conns[0].lease_revoke(lease).await?;

    if let Some(pid) = pid {
        let before = rss_kib(pid)?;
        let mut watches = Vec::new();
        for i in 0..1000 {
            let c = &mut conns[i % clients];
            let opts = WatchOptions::new().with_prefix();
            let mut w = c.watch(format!("/idle/{i}/"), Some(opts)).await?;
            w.message().await?; // created
            watches.push(w);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let watched = rss_kib(pid)?;
        let lease = conns[0].lease_grant(600, None).await?.id();
        let mut keepalives = Vec::new();
        for i in 0..1000 {
            let (mut keeper, mut stream) = conns[i % clients].lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await?;
            keepalives.push((keeper, stream));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = rss_kib(pid)?;
        println!(
            "server RSS: {before} KiB; +{:.1} KiB per idle watch stream; +{:.1} KiB per idle keep-alive stream",
            (watched as f64 - before as f64) / 1000.0,
            (kept as f64 - watched as f64) / 1000.0
        );
    }
    Ok(())
}

/// A process's resident memory, in KiB (Linux).
fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}
