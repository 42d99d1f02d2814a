//! Watches on etcd: one task per [`Watch`], reading an etcd watch stream and feeding the
//! watch's channel.
//!
//! The watch is created on etcd before [`start`] returns (etcd confirms it), so every change
//! committed after that is delivered. The task maps etcd's events to ours (deletes with
//! [`DeleteCause::Unknown`]: etcd's events do not say why), and waits while the channel is full,
//! which stops it reading the stream: etcd then buffers, as it does for any slow watcher. A
//! stream that breaks is reopened from the revision after the last event delivered; a start
//! revision that etcd has compacted ends the watch with [`WatchEnd::Compacted`]
//! ([`ENDED_COMPACTED`]); the end word is set before the sending end is dropped. Dropping the
//! [`Watch`] aborts the task, which closes the stream.
//!
//! [`WatchEnd::Compacted`]: crate::WatchEnd::Compacted

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use etcd_client as etcd;

use super::Core;
use super::convert;
use super::pool::Retry;
use crate::error::{Error, Result};
use crate::lease::Revision;
use crate::signal::Notifier;
use crate::watch::{DeleteCause, ENDED_CLOSED, ENDED_COMPACTED, RUNNING, Watch, WatchEvent};

/// Capacity of a watch's channel, as for the embedded engine's watches.
const CHANNEL: usize = 256;

/// Longest pause between two attempts to hand an event to a full channel, or to reopen a
/// broken stream.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Aborts the task when the [`Watch`] is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a watch's stream was opened.
enum Opened {
    /// The stream, and the revision after which it delivers changes.
    Stream(Box<etcd::WatchStream>, i64),
    /// etcd refused to start at that revision: compacted up to this one.
    Compacted(i64),
}

/// Opens a watch stream of `prefix` (`exact`: of that key alone, etcd's empty `range_end`) from
/// `from` (0: the next change) and waits for etcd to confirm it; on another endpoint if one
/// fails, until `deadline`. Returns the endpoint it is open on too.
async fn open(
    core: &Core,
    prefix: &[u8],
    exact: bool,
    from: i64,
    deadline: tokio::time::Instant,
) -> Result<(Opened, usize)> {
    let (opened, endpoint) = core
        .pool
        .call(deadline, Retry::Idempotent, None, |c| async move {
            let mut options = etcd::WatchOptions::new();
            if !exact {
                options = options.with_prefix();
            }
            if from > 0 {
                options = options.with_start_revision(from);
            }
            let mut stream = c.watch_client().watch(prefix, Some(options)).await?;
            loop {
                match stream.message().await? {
                    Some(resp) if resp.canceled() && resp.compact_revision() > 0 => {
                        return Ok(Ok(Opened::Compacted(resp.compact_revision())));
                    }
                    Some(resp) if resp.canceled() => {
                        return Ok(Err(Error::Backend(
                            format!("etcd cancelled the watch: {}", resp.cancel_reason()).into(),
                        )));
                    }
                    Some(resp) if resp.created() => {
                        let now = resp.header().map_or(0, etcd::ResponseHeader::revision);
                        // From `from` if asked, else from the revision after the one etcd was at.
                        let after = if from > 0 { from - 1 } else { now };
                        return Ok(Ok(Opened::Stream(Box::new(stream), after)));
                    }
                    Some(_) => {}
                    None => {
                        return Err(etcd::Error::WatchError(
                            "etcd closed the watch stream".to_owned(),
                        ));
                    }
                }
            }
        })
        .await?;
    Ok((opened?, endpoint))
}

/// [`EtcdLessor::watch`](super::EtcdLessor::watch), `watch_from` and `watch_key` (`exact`).
pub(crate) fn start(
    core: &Arc<Core>,
    prefix: &[u8],
    exact: bool,
    from: Option<Revision>,
) -> Result<Watch> {
    let raw_from = from.map_or(0, |r| i64::try_from(r.get()).unwrap_or(i64::MAX));
    let opened = core.run(|deadline| open(core, prefix, exact, raw_from, deadline))?;
    begin(core, prefix, exact, from, opened)
}

/// [`start`] as a future, for the async API: the stream is opened by the caller's executor.
pub(crate) async fn start_async(
    core: &Arc<Core>,
    prefix: &[u8],
    exact: bool,
    from: Option<Revision>,
) -> Result<Watch> {
    let raw_from = from.map_or(0, |r| i64::try_from(r.get()).unwrap_or(i64::MAX));
    let opened = core
        .run_async(|deadline| open(core, prefix, exact, raw_from, deadline))
        .await?;
    begin(core, prefix, exact, from, opened)
}

/// The rest of a start, once the stream is open: the task, spawned on the runtime.
fn begin(
    core: &Arc<Core>,
    prefix: &[u8],
    exact: bool,
    from: Option<Revision>,
    (opened, endpoint): (Opened, usize),
) -> Result<Watch> {
    let (stream, after) = match opened {
        Opened::Stream(stream, after) => (stream, after),
        Opened::Compacted(oldest) => {
            return Err(Error::Compacted {
                requested: from.unwrap_or_default(),
                oldest: convert::revision(oldest.saturating_add(1)),
            });
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(CHANNEL);
    let ended = Arc::new(AtomicU8::new(RUNNING));
    let (notifier, waker, ready) = Notifier::new();
    let key = core
        .register_watch(Arc::clone(&ended))
        .ok_or(Error::Closed)?;
    let task = Task {
        core: Arc::clone(core),
        key,
        prefix: prefix.to_vec(),
        exact,
        next: after.saturating_add(1),
        endpoint,
        ended: Arc::clone(&ended),
        tx: Some(tx),
        notifier: Some(notifier),
    };
    let abort = {
        let guard = core.runtime.read();
        guard
            .as_ref()
            .map(|rt| rt.spawn(task.run(stream)).abort_handle())
    };
    let Some(abort) = abort else {
        core.unregister(key);
        return Err(Error::Closed);
    };
    Ok(Watch::remote(
        rx,
        ended,
        (waker, ready),
        Box::new(AbortOnDrop(abort)),
    ))
}

/// A watch's task; see the module docs.
struct Task {
    core: Arc<Core>,
    /// Its key in the registry.
    key: u64,
    prefix: Vec<u8>,
    /// Watches the key `prefix` alone.
    exact: bool,
    /// The revision to reopen the stream from: the one after the last event delivered.
    next: i64,
    /// The endpoint the stream is open on.
    endpoint: usize,
    ended: Arc<AtomicU8>,
    /// `None` only while the task is dropped.
    tx: Option<Sender<WatchEvent>>,
    /// Notified after each event; dropped (disconnecting the ready channel) with the task.
    notifier: Option<Notifier>,
}

impl Drop for Task {
    /// Whether the task ran to its end, was aborted with its `Watch` or dropped with the
    /// runtime (`close`): disconnect the watch's channels, then wake its task.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(waker) = self.notifier.take().and_then(|n| n.notify()) {
            waker.wake();
        }
    }
}

impl Task {
    async fn run(mut self, stream: Box<etcd::WatchStream>) {
        let code = self.follow(stream).await;
        let _ = self
            .ended
            .compare_exchange(RUNNING, code, Ordering::AcqRel, Ordering::Acquire);
        self.core.unregister(self.key);
        // `self` drops here, after the end word: the watch's channels disconnect and its task
        // is woken (`Drop for Task`).
    }

    /// Follows the stream, reopening it when it breaks; returns the end code.
    async fn follow(&mut self, mut stream: Box<etcd::WatchStream>) -> u8 {
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return if resp.compact_revision() > 0 {
                            ENDED_COMPACTED
                        } else {
                            ENDED_CLOSED
                        };
                    }
                    for event in resp.events() {
                        let Some(ours) = event_of(event) else {
                            continue;
                        };
                        let revision = ours.revision().get();
                        let Some(tx) = &self.tx else {
                            return ENDED_CLOSED;
                        };
                        if !deliver(tx, ours).await {
                            return ENDED_CLOSED; // the Watch is gone
                        }
                        if let Some(waker) = self.notifier.as_ref().and_then(Notifier::notify) {
                            waker.wake();
                        }
                        self.next = i64::try_from(revision)
                            .unwrap_or(i64::MAX)
                            .saturating_add(1);
                    }
                }
                Ok(None) | Err(_) => match self.reopen().await {
                    Some(Opened::Stream(s, _)) => stream = s,
                    Some(Opened::Compacted(_)) => return ENDED_COMPACTED,
                    None => return ENDED_CLOSED,
                },
            }
        }
    }

    /// Reopens the stream from `next`, retrying with a growing pause until etcd answers;
    /// `None` if the watch is no longer wanted.
    async fn reopen(&mut self) -> Option<Opened> {
        self.core.pool.failed(self.endpoint);
        let mut pause = Duration::from_millis(10);
        loop {
            if !self.core.is_open() {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF * 10);
            let deadline = tokio::time::Instant::now() + self.core.options.request_timeout;
            if let Ok((opened, endpoint)) =
                open(&self.core, &self.prefix, self.exact, self.next, deadline).await
            {
                self.endpoint = endpoint;
                return Some(opened);
            }
        }
    }
}

/// Our event for etcd's.
fn event_of(event: &etcd::Event) -> Option<WatchEvent> {
    let kv = event.kv()?;
    Some(match event.event_type() {
        etcd::EventType::Put => WatchEvent::Put(convert::key_value(kv)),
        etcd::EventType::Delete => WatchEvent::Delete {
            key: kv.key().to_vec(),
            revision: convert::revision(kv.mod_revision()),
            cause: DeleteCause::Unknown,
        },
    })
}

/// Hands `event` to the channel, waiting while it is full; `false` if the receiver is gone.
async fn deliver(tx: &Sender<WatchEvent>, mut event: WatchEvent) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        match tx.try_send(event) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(e)) => {
                event = e;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}
