//! The Lease service: Grant, Revoke, the KeepAlive stream, TimeToLive and Leases.
//!
//! etcd's lease ids are `i64`s; ours are positive (`1..=i64::MAX`), so a negative id names no
//! lease. TTLs are whole seconds on the wire: a TTL below the lessor's minimum is raised to it,
//! as etcd does, and what a lease has left is reported in whole seconds, rounded down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lessor::LeaseId;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::Engine;
use crate::errors;
use crate::kv::header;
use crate::proto::etcdserverpb::{self as pb, lease_server};
use crate::stopping::Stopping;

/// Whole seconds of a duration, as etcd's TTL fields carry them.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A lease id from the wire; `None` for one no lease can have (0 or negative).
fn lease_id(id: i64) -> Option<LeaseId> {
    u64::try_from(id).ok().and_then(LeaseId::new)
}

/// The Lease service.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    engine: Engine,
    /// KeepAlive streams open now, over all connections.
    keepalive_streams: Arc<AtomicUsize>,
    max_keepalive_streams: usize,
    stopping: Stopping,
}

impl Lease {
    pub(crate) fn new(engine: Engine, limits: &crate::Limits, stopping: Stopping) -> Lease {
        Lease {
            engine,
            keepalive_streams: Arc::new(AtomicUsize::new(0)),
            max_keepalive_streams: limits.max_keepalive_streams,
            stopping,
        }
    }

    /// The answer to one keep-alive request: the lease's TTL after the renewal, or 0 if it is
    /// not alive (etcd's answer, which clients read as "expired").
    fn keep_alive_once(
        engine: &Engine,
        req: &pb::LeaseKeepAliveRequest,
    ) -> pb::LeaseKeepAliveResponse {
        let ttl = match lease_id(req.id) {
            Some(id) => engine.renew(id).map_or(0, secs),
            None => 0,
        };
        let revision = engine.revision().unwrap_or(lessor::Revision::new(0));
        pb::LeaseKeepAliveResponse {
            header: header(revision),
            id: req.id,
            ttl,
        }
    }
}

/// Counts one open KeepAlive stream until dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The responses of a KeepAlive stream: one per request, in order, computed as the stream is
/// polled. Ends when the client's requests end, after an error in them (answered with it), or
/// when the server stops (answered with UNAVAILABLE).
struct KeepAliveResponses {
    engine: Engine,
    inbound: Streaming<pb::LeaseKeepAliveRequest>,
    /// Completes once the server is stopping.
    stopping: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Held for the stream's life.
    _slot: StreamSlot,
    /// Whether the last response was given.
    ended: bool,
}

impl Stream for KeepAliveResponses {
    type Item = Result<pb::LeaseKeepAliveResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.stopping.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(Some(Err(errors::stopped())));
        }
        let next = match Pin::new(&mut self.inbound).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        Poll::Ready(match next {
            None => {
                self.ended = true;
                None
            }
            Some(Ok(req)) => Some(Ok(Lease::keep_alive_once(&self.engine, &req))),
            Some(Err(status)) => {
                self.ended = true;
                Some(Err(status))
            }
        })
    }
}

/// The responses of a KeepAlive stream.
type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl lease_server::Lease for Lease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let id = match req.id {
            0 => None,
            id => Some(lease_id(id).ok_or_else(|| errors::invalid_lease_id(id))?),
        };
        // A TTL of 0 or below is raised to the minimum, as etcd does.
        let ttl = Duration::from_secs(u64::try_from(req.ttl).unwrap_or(0));
        let lease = self.engine.grant(id, ttl).await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(lease.revision),
            id: lease.id.get().cast_signed(),
            ttl: secs(lease.ttl),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = lease_id(request.into_inner().id).ok_or_else(errors::lease_not_found)?;
        let revision = self.engine.revoke(id).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(revision),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let open = self.keepalive_streams.fetch_add(1, Ordering::AcqRel);
        let slot = StreamSlot(Arc::clone(&self.keepalive_streams));
        if open >= self.max_keepalive_streams {
            tracing::warn!(
                limit = self.max_keepalive_streams,
                "a keep-alive stream was refused: the limit of open keep-alive streams is reached"
            );
            return Err(errors::too_many_requests());
        }
        // One response per request, in order; renewals are in memory, so each is answered as
        // tonic polls for the next response: no task or channel of its own.
        let responses = KeepAliveResponses {
            engine: self.engine.clone(),
            inbound: request.into_inner(),
            stopping: Box::pin(self.stopping.clone().wait()),
            _slot: slot,
            ended: false,
        };
        Ok(Response::new(Box::pin(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let revision = self.engine.revision()?;
        let info = lease_id(req.id).map(|id| self.engine.time_to_live(id, req.keys));
        let response = match info {
            Some(Ok(info)) => pb::LeaseTimeToLiveResponse {
                header: header(revision),
                id: req.id,
                ttl: secs(info.remaining),
                granted_ttl: secs(info.ttl),
                keys: info.keys,
            },
            // etcd answers a lease that is not alive with TTL -1, not an error.
            None => not_alive(req.id, revision),
            Some(Err(e)) if e.code() == tonic::Code::NotFound => not_alive(req.id, revision),
            Some(Err(e)) => return Err(e),
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let revision = self.engine.revision()?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(revision),
            leases: self
                .engine
                .leases()?
                .into_iter()
                .map(|id| pb::LeaseStatus {
                    id: id.get().cast_signed(),
                })
                .collect(),
        }))
    }
}

/// TimeToLive's answer for a lease that is not alive.
fn not_alive(id: i64, revision: lessor::Revision) -> pb::LeaseTimeToLiveResponse {
    pb::LeaseTimeToLiveResponse {
        header: header(revision),
        id,
        ttl: -1,
        granted_ttl: 0,
        keys: Vec::new(),
    }
}

/// A response stream fed by a task: `body` gets the sending end of a small channel, whose
/// capacity bounds what waits for a slow client.
pub(crate) fn async_stream<T, F, Fut>(
    body: F,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
