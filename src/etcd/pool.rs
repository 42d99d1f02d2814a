//! Failover between the endpoints of a cluster: one `etcd-client` connection per endpoint, and
//! the rule for retrying a call on another.
//!
//! `etcd-client` balances a client's requests over every endpoint it was given, and a request
//! routed to a member that is down fails: with one member of three down, about a quarter of
//! all calls failed. So each endpoint gets a client of its own, created on first use (creating
//! one authenticates when a user is set, a round trip), and calls go to the *preferred*
//! endpoint, the last that answered. An attempt that finds the endpoint unreachable or silent
//! moves the preference to the next endpoint, for this call's retry and for every later call.
//!
//! # Retries
//! - [`Retry::Idempotent`] (reads, renewals, opening a watch or a keep-alive stream): any
//!   [`Kind::Unavailable`](super::convert::Kind::Unavailable) error, or no answer within the
//!   attempt timeout ([`EtcdOptions::attempt_timeout`](super::EtcdOptions::attempt_timeout)),
//!   is retried on the next endpoint, round after round with a short pause, until the call's
//!   deadline.
//! - [`Retry::Write`] (puts, deletes, transactions, grants, revokes): retried on the next
//!   endpoint only when the request provably never left this client: the connection (TCP, TLS,
//!   or authentication) could not be made. Any other failure, or no answer by the deadline, is
//!   [`Error::Unavailable`] at once: the write may have committed (etcd's own rule; its Go
//!   client retries writes in the same cases only).
//!
//! Every attempt runs under the call's deadline: no call outlives it.
//!
//! Shared state: `preferred` (an atomic index, moved by compare-and-swap so that two attempts
//! failing on one endpoint move it once) and each endpoint's client (set once).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client as etcd;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::convert::{self, Kind, classify, error};
use crate::error::{Error, Result};
use crate::lease::LeaseId;

/// Whether a failed call may be sent again; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Sending it twice does no harm: retried on any transport failure.
    Idempotent,
    /// Retried only if it never went out.
    Write,
}

/// The longest pause between two rounds over every endpoint.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// One endpoint and its connection.
struct Endpoint {
    url: String,
    client: OnceCell<etcd::Client>,
}

/// The endpoints of a cluster; see the module docs.
pub(crate) struct Pool {
    endpoints: Vec<Endpoint>,
    /// Index of the endpoint calls try first.
    preferred: AtomicUsize,
    connect: etcd::ConnectOptions,
    attempt_timeout: Duration,
}

impl Pool {
    /// A pool over `urls` (not empty); no connection is made yet.
    pub(crate) fn new(
        urls: Vec<String>,
        connect: etcd::ConnectOptions,
        attempt_timeout: Duration,
    ) -> Pool {
        Pool {
            endpoints: urls
                .into_iter()
                .map(|url| Endpoint {
                    url,
                    client: OnceCell::new(),
                })
                .collect(),
            preferred: AtomicUsize::new(0),
            connect,
            attempt_timeout,
        }
    }

    /// The endpoint calls try first.
    pub(crate) fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Acquire)
    }

    /// Endpoint `index` failed: calls that still prefer it move on to the next.
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.endpoints.len().max(1);
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The client of endpoint `index`, connecting it if needed.
    async fn client(&self, index: usize) -> std::result::Result<etcd::Client, etcd::Error> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        endpoint
            .client
            .get_or_try_init(|| {
                etcd::Client::connect([endpoint.url.as_str()], Some(self.connect.clone()))
            })
            .await
            .cloned()
    }

    /// Runs `f` on the preferred endpoint's client, retrying on the next endpoints as `retry`
    /// allows, until `deadline`. `lease` is the lease the call is about (for its errors).
    /// Returns the value and the endpoint that gave it.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        deadline: Instant,
        retry: Retry,
        lease: Option<LeaseId>,
        mut f: F,
    ) -> Result<(T, usize)>
    where
        F: FnMut(etcd::Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd::Error>>,
    {
        let limit_at_start = deadline.saturating_duration_since(Instant::now());
        let mut last: Option<Error> = None;
        let mut attempts = 0usize;
        let mut pause = Duration::from_millis(20);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last.unwrap_or_else(|| convert::timed_out(limit_at_start)));
            }
            if attempts > 0 && attempts.is_multiple_of(self.endpoints.len()) {
                // A full round failed: wait a little before the next (an election, a restart).
                tokio::time::sleep_until((now + pause).min(deadline)).await;
                pause = (pause * 2).min(MAX_PAUSE);
                if Instant::now() >= deadline {
                    return Err(last.unwrap_or_else(|| convert::timed_out(limit_at_start)));
                }
            }
            attempts += 1;
            let index = self.preferred();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = match retry {
                Retry::Idempotent => remaining.min(self.attempt_timeout),
                Retry::Write => remaining,
            };
            let started = Instant::now();
            // Connecting (and authenticating): nothing was sent yet, whatever fails.
            let client = match tokio::time::timeout(limit, self.client(index)).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) if classify(&e) == Kind::Unavailable || never_sent(&e) => {
                    self.failed(index);
                    last = Some(error(e, lease));
                    continue;
                }
                Ok(Err(e)) => return Err(error(e, lease)),
                Err(_) => {
                    self.failed(index);
                    last = Some(convert::timed_out(limit));
                    continue;
                }
            };
            let limit = limit.saturating_sub(started.elapsed());
            match tokio::time::timeout(limit, f(client)).await {
                Ok(Ok(value)) => return Ok((value, index)),
                Ok(Err(e)) => {
                    if classify(&e) != Kind::Unavailable {
                        return Err(error(e, lease));
                    }
                    self.failed(index);
                    if retry == Retry::Write && !never_sent(&e) {
                        return Err(Error::Unavailable(Box::new(MayHaveCommitted(
                            e.to_string(),
                        ))));
                    }
                    last = Some(error(e, lease));
                }
                Err(_) => {
                    self.failed(index);
                    if retry == Retry::Write {
                        return Err(Error::Unavailable(Box::new(MayHaveCommitted(format!(
                            "no answer from etcd at {} within {limit:?}",
                            self.endpoints[index].url
                        )))));
                    }
                    last = Some(convert::timed_out(limit));
                }
            }
        }
    }
}

/// Whether `e` says the request never left this client: the connection to the endpoint (TCP,
/// TLS) could not be made. `tonic` turns a failed connection into an `Unavailable` status
/// carrying the connector's message; a request that was sent fails with an HTTP/2 or server
/// error instead.
fn never_sent(e: &etcd::Error) -> bool {
    match e {
        etcd::Error::TransportError(_) => true,
        etcd::Error::GRpcStatus(status) => {
            i32::from(status.code()) == convert::UNAVAILABLE && is_connect_message(status.message())
        }
        _ => false,
    }
}

/// The messages of a connection that could not be made (`hyper-util`'s connector, and the
/// kernel's refusals it reports).
fn is_connect_message(msg: &str) -> bool {
    const CONNECT: [&str; 5] = [
        "tcp connect error",
        "tcp open error",
        "error trying to connect",
        "Connection refused",
        "dns error",
    ];
    CONNECT.iter().any(|m| msg.contains(m))
}

/// The error of a write that failed after it was sent: it may have committed.
#[derive(Debug)]
struct MayHaveCommitted(String);

impl std::fmt::Display for MayHaveCommitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (the write was sent and may have committed: read before retrying it)",
            self.0
        )
    }
}

impl std::error::Error for MayHaveCommitted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_told_from_failures_after_sending() {
        assert!(is_connect_message("tcp connect error"));
        assert!(is_connect_message(
            "error trying to connect: Connection refused (os error 111)"
        ));
        assert!(!is_connect_message("etcdserver: request timed out"));
        assert!(!is_connect_message("h2 protocol error: connection reset"));
    }

    #[test]
    fn a_failure_moves_the_preference_once() {
        let urls = ["http://a", "http://b", "http://c"]
            .map(String::from)
            .to_vec();
        let pool = Pool::new(urls, etcd::ConnectOptions::new(), Duration::from_secs(1));
        assert_eq!(pool.preferred(), 0);
        pool.failed(0);
        pool.failed(0); // a second attempt that failed on endpoint 0: already moved
        assert_eq!(pool.preferred(), 1);
        pool.failed(1);
        pool.failed(2);
        assert_eq!(pool.preferred(), 0, "wraps around");
    }
}
