//! The Watch service: one bidirectional stream carries many watches.
//!
//! # Implementation
//!
//! Each stream is served by one task, which owns its watches: for each, the lessor's
//! [`Watch`] on the longest prefix common to the whole range (the engine watches prefixes),
//! and what etcd's watch adds on top (the exact range, the filters, the previous values).
//! The task waits on three things at once: the client's next request, the next event of any
//! of its watches, and the progress timer. Events that are ready together go out together,
//! one response per watch, in revision order. Responses pass through a small bounded channel:
//! a client that stops reading stops the task, and the engine's watch history absorbs what it
//! misses until the watch ends with `compact_revision` set, as etcd's would.
//!
//! `prev_kv` is served from a copy of the watched range's keys, read at the revision just
//! before the watch starts and kept up to date by its events; so it is served only for watches
//! that start now or in the future (a past start has no such copy), and it costs memory in
//! proportion to the range.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lessor::{Revision, Watch, WatchEnd, WatchEvent};
use tokio::sync::mpsc::Sender;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use crate::engine::Engine;
use crate::kv::{header, in_range, key_end, rev, to_kv};
use crate::lease::async_stream;
use crate::proto::etcdserverpb::{self as pb, watch_create_request, watch_request, watch_server};
use crate::proto::mvccpb;
use crate::stopping::Stopping;

/// Events taken at once before they are sent.
const MAX_BATCH: usize = 1000;

/// The Watch service.
#[derive(Clone, Debug)]
pub(crate) struct WatchService {
    engine: Engine,
    max_watches: usize,
    progress_interval: Duration,
    stopping: Stopping,
}

impl WatchService {
    pub(crate) fn new(engine: Engine, config: &crate::Config, stopping: Stopping) -> WatchService {
        WatchService {
            engine,
            max_watches: config.limits.max_watches_per_stream,
            progress_interval: config.progress_notify_interval,
            stopping,
        }
    }
}

type WatchResponses =
    Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl watch_server::Watch for WatchService {
    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = request.into_inner();
        let session = Session {
            engine: self.engine.clone(),
            max_watches: self.max_watches,
            watches: HashMap::new(),
            feeds: StreamMap::new(),
            next_id: 0,
        };
        let interval = self.progress_interval;
        let stopping = self.stopping.clone().wait();
        Ok(Response::new(async_stream(move |tx| {
            session.run(inbound, tx, interval, stopping)
        })))
    }
}

/// What a watch's feed yields: an event, then, once, why it ended.
enum Item {
    Event(WatchEvent),
    End(Option<WatchEnd>),
}

/// A lessor watch as a stream that says why it ended before it ends.
struct Feed(Option<Watch>);

impl Stream for Feed {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        let Some(watch) = this.0.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *watch).poll_next(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Item::Event(event))),
            Poll::Ready(None) => {
                let end = watch.ended();
                this.0 = None;
                Poll::Ready(Some(Item::End(end)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One watch of a stream, as etcd's client asked for it.
struct State {
    /// The engine's watch is on this prefix; events outside `[start, end)` are dropped.
    prefix: Vec<u8>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    no_put: bool,
    no_delete: bool,
    /// Events below this revision only update `prev` (a `prev_kv` watch reads from earlier).
    first: u64,
    /// With `prev_kv`: the keys of the range as of the last event seen.
    prev: Option<BTreeMap<Vec<u8>, lessor::KeyValue>>,
    progress_notify: bool,
    /// Whether a response went out since the last progress tick.
    active: bool,
    /// The revision of the last event given.
    last: u64,
}

impl State {
    /// etcd's event for ours, if the watch wants it.
    fn event(&mut self, event: &WatchEvent) -> Option<mvccpb::Event> {
        if event.key() == crate::engine::START_KEY
            || !in_range(event.key(), &self.start, self.end.as_deref())
        {
            return None;
        }
        let prev = self.prev.as_mut().map(|keys| match event {
            WatchEvent::Put(kv) => keys.insert(kv.key.clone(), kv.clone()),
            WatchEvent::Delete { key, .. } => keys.remove(key),
            _ => None,
        });
        let revision = event.revision().get();
        if revision < self.first {
            return None;
        }
        self.last = revision;
        let (kind, kv) = match event {
            WatchEvent::Put(kv) if !self.no_put => (mvccpb::event::EventType::Put, to_kv(kv)),
            WatchEvent::Delete { key, revision, .. } if !self.no_delete => (
                mvccpb::event::EventType::Delete,
                mvccpb::KeyValue {
                    key: key.clone(),
                    mod_revision: rev(*revision),
                    ..mvccpb::KeyValue::default()
                },
            ),
            _ => return None,
        };
        Some(mvccpb::Event {
            r#type: kind.into(),
            kv: Some(kv),
            prev_kv: prev.flatten().as_ref().map(to_kv),
        })
    }
}

/// The longest prefix every key of `[start, end)` has (all of them lie between two keys that
/// share it).
fn common_prefix(start: &[u8], end: Option<&[u8]>) -> Vec<u8> {
    let Some(end) = end else {
        return Vec::new();
    };
    let n = start.iter().zip(end).take_while(|(a, b)| a == b).count();
    start[..n].to_vec()
}

/// A stream's watches, served by its task.
struct Session {
    engine: Engine,
    max_watches: usize,
    watches: HashMap<i64, State>,
    feeds: StreamMap<i64, Feed>,
    /// The next id to try for a watch whose client lets us choose.
    next_id: i64,
}

/// The client went away: the stream's task ends.
struct Gone;

/// Sends a response; `Gone` once the client stopped listening.
async fn send(
    tx: &Sender<Result<pb::WatchResponse, Status>>,
    r: pb::WatchResponse,
) -> Result<(), Gone> {
    tx.send(Ok(r)).await.map_err(|_| Gone)
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::WatchRequest>,
        tx: Sender<Result<pb::WatchResponse, Status>>,
        interval: Duration,
        stopping: impl std::future::Future<Output = ()>,
    ) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tokio::pin!(stopping);
        loop {
            let step = tokio::select! {
                () = &mut stopping => {
                    let _ = tx.send(Err(crate::errors::stopped())).await;
                    break;
                }
                request = inbound.next() => match request {
                    Some(Ok(request)) => self.handle(request, &tx).await,
                    // A request that does not decode ends the call with the decoder's error,
                    // as etcd's watch returns its receive error (and as the keep-alive
                    // stream does), not as if the client had closed the stream.
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        Err(Gone)
                    }
                    None => Err(Gone),
                },
                Some(first) = self.feeds.next(), if !self.feeds.is_empty() => {
                    self.deliver(vec![first], &tx).await.map(|_| ())
                }
                _ = ticks.tick() => self.progress_notify(&tx).await,
            };
            if step.is_err() {
                break;
            }
        }
    }

    /// The events ready now, without waiting, added to `batch` (up to [`MAX_BATCH`]); whether
    /// more may be ready.
    fn ready(&mut self, batch: &mut Vec<(i64, Item)>) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while batch.len() < MAX_BATCH {
            match Pin::new(&mut self.feeds).poll_next(&mut cx) {
                Poll::Ready(Some(item)) => batch.push(item),
                Poll::Ready(None) | Poll::Pending => return false,
            }
        }
        true
    }

    /// Sends every event ready now. The engine publishes a commit's events in the critical
    /// section that makes the commit visible to reads, so once this returns, every event of a
    /// revision read before it has been sent.
    async fn deliver_all(
        &mut self,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<(), Gone> {
        while self.deliver(Vec::new(), tx).await? {}
        Ok(())
    }

    /// Sends the events of `batch` and of whatever else is ready (up to [`MAX_BATCH`]), one
    /// response per watch; whether more may be ready.
    async fn deliver(
        &mut self,
        mut batch: Vec<(i64, Item)>,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<bool, Gone> {
        let more = self.ready(&mut batch);
        let mut order: Vec<i64> = Vec::new();
        let mut events: HashMap<i64, Vec<mvccpb::Event>> = HashMap::new();
        let mut ended = Vec::new();
        for (id, item) in batch {
            let Some(state) = self.watches.get_mut(&id) else {
                continue;
            };
            match item {
                Item::Event(e) => {
                    if let Some(event) = state.event(&e) {
                        if !events.contains_key(&id) {
                            order.push(id);
                        }
                        events.entry(id).or_default().push(event);
                    }
                }
                Item::End(why) => ended.push((id, why)),
            }
        }
        let current = self.engine.revision().map_or(0, rev);
        for id in order {
            let events = events.remove(&id).unwrap_or_default();
            let last = self.watches.get_mut(&id).map_or(0, |s| {
                s.active = true;
                s.last
            });
            let revision = current.max(i64::try_from(last).unwrap_or(i64::MAX));
            send(
                tx,
                pb::WatchResponse {
                    header: header(Revision::new(revision.unsigned_abs())),
                    watch_id: id,
                    events,
                    ..pb::WatchResponse::default()
                },
            )
            .await?;
        }
        for (id, why) in ended {
            self.end(id, why, tx).await?;
        }
        Ok(more)
    }

    /// A watch whose engine watch ended: cancelled, with the reason.
    async fn end(
        &mut self,
        id: i64,
        why: Option<WatchEnd>,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<(), Gone> {
        let Some(state) = self.watches.remove(&id) else {
            return Ok(());
        };
        self.feeds.remove(&id);
        let mut response = self.response(id);
        response.canceled = true;
        match why {
            Some(WatchEnd::Compacted) => {
                // What the history holds now: probing from the next event the watch needed.
                let next = Revision::new(state.last.max(state.first.saturating_sub(1)) + 1);
                response.compact_revision = match self.engine.watch(&state.prefix, next) {
                    Err(lessor::Error::Compacted { oldest, .. }) => rev(oldest),
                    _ => rev(next),
                };
            }
            Some(WatchEnd::StorageFailed) => {
                response.cancel_reason =
                    "lessor: a write failed in storage; read again and watch from there".into();
            }
            _ => response.cancel_reason = "lessor: the database was closed".into(),
        }
        send(tx, response).await
    }

    /// An empty response for watch `id`, with the current revision.
    fn response(&self, id: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: header(self.engine.revision().unwrap_or(Revision::new(0))),
            watch_id: id,
            ..pb::WatchResponse::default()
        }
    }

    async fn handle(
        &mut self,
        request: pb::WatchRequest,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<(), Gone> {
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c, tx).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if self.watches.remove(&c.watch_id).is_some() {
                    self.feeds.remove(&c.watch_id);
                    let mut response = self.response(c.watch_id);
                    response.canceled = true;
                    send(tx, response).await?;
                }
                Ok(())
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Every event up to the revision announced goes out before it.
                let revision = self.engine.revision().unwrap_or(Revision::new(0));
                self.deliver_all(tx).await?;
                send(
                    tx,
                    pb::WatchResponse {
                        header: header(revision),
                        watch_id: -1,
                        ..pb::WatchResponse::default()
                    },
                )
                .await
            }
            None => Ok(()),
        }
    }

    /// The answer refusing a create: etcd's is a response both created and cancelled.
    fn refusal(&self, reason: String) -> pb::WatchResponse {
        let mut response = self.response(-1);
        response.created = true;
        response.canceled = true;
        response.cancel_reason = reason;
        response
    }

    async fn create(
        &mut self,
        c: pb::WatchCreateRequest,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<(), Gone> {
        if self.watches.len() >= self.max_watches {
            let reason = format!(
                "lessor: too many watches on this stream (the limit is {})",
                self.max_watches
            );
            return send(tx, self.refusal(reason)).await;
        }
        let id = if c.watch_id != 0 {
            if self.watches.contains_key(&c.watch_id) {
                let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_owned();
                return send(tx, self.refusal(reason)).await;
            }
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id = self.next_id.wrapping_add(1).max(0);
            }
            self.next_id
        };
        let start = c.key.clone();
        let end = match c.range_end.as_slice() {
            [] => Some(key_end(&c.key)),
            [0] => None,
            end => Some(end.to_vec()),
        };
        let prefix = common_prefix(&start, end.as_deref());
        let Ok(current) = self.engine.revision() else {
            return send(tx, self.refusal("lessor: the database is closed".into())).await;
        };
        let asked = u64::try_from(c.start_revision).unwrap_or(0);
        // With prev_kv: the range's keys at the revision before the watch starts.
        let (prev, from) = if c.prev_kv {
            if asked != 0 && asked <= current.get() {
                let reason = "lessor: prev_kv is served only for watches that start at the next \
                              revision or later (the engine keeps no older values)"
                    .to_owned();
                return send(tx, self.refusal(reason)).await;
            }
            match self.engine.range(&start, end.as_deref()) {
                Ok(snap) => {
                    let keys = snap
                        .kvs
                        .into_iter()
                        .map(|kv| (kv.key.clone(), kv))
                        .collect();
                    (Some(keys), snap.revision.next())
                }
                Err(e) => return send(tx, self.refusal(format!("lessor: {}", e.message()))).await,
            }
        } else if asked == 0 {
            (None, current.next())
        } else {
            (None, Revision::new(asked))
        };
        let first = if asked == 0 { from.get() } else { asked };
        let mut created = self.response(id);
        created.header = header(current);
        created.created = true;
        let watch = match self.engine.watch(&prefix, from) {
            Ok(watch) => watch,
            Err(lessor::Error::Compacted { oldest, .. }) => {
                // etcd creates the watch, then cancels it saying how far history reaches.
                send(tx, created).await?;
                let mut response = self.response(id);
                response.canceled = true;
                response.compact_revision = rev(oldest);
                return send(tx, response).await;
            }
            Err(e) => return send(tx, self.refusal(format!("lessor: {e}"))).await,
        };
        let filters = |f: watch_create_request::FilterType| c.filters.contains(&(f as i32));
        self.watches.insert(
            id,
            State {
                prefix,
                start,
                end,
                no_put: filters(watch_create_request::FilterType::Noput),
                no_delete: filters(watch_create_request::FilterType::Nodelete),
                first,
                prev,
                progress_notify: c.progress_notify,
                active: false,
                last: first.saturating_sub(1),
            },
        );
        self.feeds.insert(id, Feed(Some(watch)));
        self.next_id = self.next_id.max(id.wrapping_add(1).max(0));
        send(tx, created).await
    }

    /// For each idle watch that asked for it, an empty response with the current revision.
    async fn progress_notify(
        &mut self,
        tx: &Sender<Result<pb::WatchResponse, Status>>,
    ) -> Result<(), Gone> {
        // The revision first: every event up to it goes out before the notifications.
        let revision = self.engine.revision().unwrap_or(Revision::new(0));
        self.deliver_all(tx).await?;
        let mut idle: Vec<i64> = self
            .watches
            .iter_mut()
            .filter_map(|(id, s)| {
                let idle = s.progress_notify && !s.active;
                s.active = false;
                idle.then_some(*id)
            })
            .collect();
        idle.sort_unstable();
        for id in idle {
            let mut response = self.response(id);
            response.header = header(revision);
            send(tx, response).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_watches_the_prefix_common_to_the_range() {
        assert_eq!(common_prefix(b"/a/b", Some(b"/a/c")), b"/a/");
        assert_eq!(common_prefix(b"/a", Some(b"/a\0")), b"/a");
        assert_eq!(common_prefix(b"/a", None), b"");
        assert_eq!(common_prefix(b"a", Some(b"b")), b"");
    }
}
