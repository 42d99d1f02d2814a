//! Keep-alives and renewals on etcd's lease keep-alive stream.
//!
//! A keep-alive is one task on the `EtcdLessor`'s runtime with a keep-alive stream of its own:
//! it sends a renewal every interval and reads etcd's answer. It shares the end-reason word and
//! the responses channel with its [`KeepAlive`] handle, and follows the handle's rules: the
//! reason is set (compare-and-swap from running) before the task drops its sending end, and
//! responses replace an unread one ([`offer_latest`]).
//!
//! # The local deadline
//!
//! The task keeps the lease's deadline as this client can prove it: the time the last
//! successful renewal was *sent* plus the TTL etcd returned for it: the server renewed the lease
//! no earlier than that, so this is never later than etcd's own deadline (clock drift aside).
//! etcd's Go client measures from the answer's arrival instead; see `docs/design.md`. The handle reads it
//! ([`KeepAlive::deadline`]) from a [`LocalDeadline`] the task writes after each renewal.
//! Invariants:
//! - The task always waits on a timer at the local deadline, while it sleeps between renewals
//!   and while a renewal or reconnect is in flight: when it passes, the keep-alive ends at once
//!   as [`EndReason::Expired`], whatever the network does.
//! - Every renewal and reconnect runs under a timeout below the TTL ([`attempt_limit`]); one
//!   that fails or times out drops the stream, marks its endpoint failed, and is retried (on a
//!   new stream, on the next endpoint) after [`RETRY`] at most, until the local deadline.
//! - [`EndReason::Revoked`] only when etcd answered a renewal, before the local deadline, that
//!   the lease is gone (TTL 0, or not found on reconnect). An answer after the deadline is never
//!   read: the deadline's timer wins, and its reason is final.
//!
//! Why else it ends: the handle's `cancel` (reason set there), this handle's `revoke` of the
//! lease or `close` (reason set by `Core`), `run_for` (finished).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use etcd_client as etcd;
use tokio::sync::Notify;

use super::convert::{self, raw_id};
use super::pool::Retry;
use super::{Core, RENEWERS};
use crate::error::{Error, Result};
use crate::keepalive::{
    EndReason, KeepAlive, KeepAliveOptions, KeepAliveResponse, RUNNING, RemoteKeepAlive, Wakers,
    offer_latest, set_reason,
};
use crate::lease::LeaseId;

/// How long a broken keep-alive waits before reopening its stream, at most.
const RETRY: Duration = Duration::from_millis(200);

/// The shortest time a renewal or reconnect of a keep-alive is given before it is retried.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// How long one renewal or reconnect of a keep-alive may take: a third of the TTL, at most the
/// connection's request timeout, at least [`MIN_ATTEMPT`]. Below the TTL (etcd's TTLs are whole
/// seconds, so at least 1 s), so that a lost request leaves time to retry before the deadline.
fn attempt_limit(ttl: Duration, request_timeout: Duration) -> Duration {
    (ttl / 3).min(request_timeout).max(MIN_ATTEMPT)
}

/// The local deadline of one keep-alive, shared by its task (the only writer) and its handle:
/// nanoseconds after `base`. Lock-free; a reader sees the latest renewal's deadline or the one
/// before.
pub(crate) struct LocalDeadline {
    base: Instant,
    nanos: AtomicU64,
}

impl LocalDeadline {
    fn new(at: Instant) -> LocalDeadline {
        LocalDeadline {
            base: at,
            nanos: AtomicU64::new(0),
        }
    }

    fn set(&self, at: Instant) {
        let nanos = nanos(at.saturating_duration_since(self.base));
        self.nanos.store(nanos, Ordering::Release);
    }

    fn get(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// A running keep-alive, as the registry sees it.
pub(crate) struct Entry {
    pub(crate) id: LeaseId,
    pub(crate) reason: Arc<AtomicU8>,
    /// Wakes the task to stop (it then exits without renewing again).
    pub(crate) stop: Arc<Notify>,
}

/// An open keep-alive stream of one lease.
pub(crate) struct Renewer {
    keeper: etcd::LeaseKeeper,
    stream: etcd::LeaseKeepAliveStream,
    /// The endpoint the stream is open on (in the pool).
    endpoint: usize,
    /// The lease's TTL as etcd last reported it.
    ttl: Duration,
    /// When the renewal that reported `ttl` was sent.
    sent: Instant,
    used: Instant,
}

/// What one renewal on a stream found.
enum Renewal {
    /// Renewed; the lease's TTL.
    Alive(Duration),
    /// etcd answered that the lease does not exist.
    Gone,
}

/// Sends one renewal on `keeper` and reads its answer.
async fn renew_on(
    keeper: &mut etcd::LeaseKeeper,
    stream: &mut etcd::LeaseKeepAliveStream,
) -> std::result::Result<Renewal, etcd::Error> {
    keeper.keep_alive().await?;
    match stream.message().await? {
        Some(resp) if resp.ttl() > 0 => Ok(Renewal::Alive(convert::secs(resp.ttl()))),
        Some(_) => Ok(Renewal::Gone),
        None => Err(etcd::Error::LeaseKeepAliveError(
            "keep-alive stream closed".to_owned(),
        )),
    }
}

/// Opens a keep-alive stream for `id` (etcd renews the lease as it opens) and renews once more
/// to learn the TTL, which `etcd-client` does not report for the opening renewal; on another
/// endpoint if one fails, until `deadline`.
async fn open(core: &Core, id: LeaseId, deadline: tokio::time::Instant) -> Result<Renewer> {
    let ((keeper, stream, sent, renewal), endpoint) = core
        .pool
        .call(deadline, Retry::Idempotent, Some(id), |c| async move {
            let (mut keeper, mut stream) = c.lease_client().keep_alive(raw_id(id)).await?;
            let sent = Instant::now();
            let renewal = renew_on(&mut keeper, &mut stream).await?;
            Ok((keeper, stream, sent, renewal))
        })
        .await?;
    match renewal {
        Renewal::Alive(ttl) => Ok(Renewer {
            keeper,
            stream,
            endpoint,
            ttl,
            sent,
            used: Instant::now(),
        }),
        Renewal::Gone => Err(Error::LeaseNotFound(id)),
    }
}

/// [`EtcdLessor::renew`](super::EtcdLessor::renew): a renewal on the lease's cached stream,
/// or on a new one (on another endpoint if the stream's failed), until `deadline`.
pub(crate) async fn renew(
    core: &Core,
    id: LeaseId,
    deadline: tokio::time::Instant,
) -> Result<Duration> {
    let cached = core.renewers.lock().await.remove(&id);
    let mut renewer = match cached {
        Some(mut r) => {
            let limit = core.options.attempt_timeout;
            let at = deadline.min(tokio::time::Instant::now() + limit);
            match tokio::time::timeout_at(at, renew_on(&mut r.keeper, &mut r.stream)).await {
                Ok(Ok(Renewal::Alive(ttl))) => {
                    r.ttl = ttl;
                    r
                }
                Ok(Ok(Renewal::Gone)) => return Err(Error::LeaseNotFound(id)),
                // The stream broke or went silent (a member down, a connection dropped): open
                // another, on the next endpoint.
                Ok(Err(_)) | Err(_) => {
                    core.pool.failed(r.endpoint);
                    open(core, id, deadline).await?
                }
            }
        }
        None => open(core, id, deadline).await?,
    };
    renewer.used = Instant::now();
    let ttl = renewer.ttl;
    let mut renewers = core.renewers.lock().await;
    if renewers.len() >= RENEWERS
        && let Some(oldest) = renewers.iter().min_by_key(|(_, r)| r.used).map(|(k, _)| *k)
    {
        renewers.remove(&oldest);
    }
    renewers.insert(id, renewer);
    Ok(ttl)
}

/// [`EtcdLessor::keep_alive_with`](super::EtcdLessor::keep_alive_with).
pub(crate) fn start(core: &Arc<Core>, id: LeaseId, opts: KeepAliveOptions) -> Result<KeepAlive> {
    let renewer = core.run(|deadline| open(core, id, deadline))?;
    begin(core, id, opts, renewer)
}

/// [`start`] as a future, for the async API: the stream is opened by the caller's executor.
pub(crate) async fn start_async(
    core: &Arc<Core>,
    id: LeaseId,
    opts: KeepAliveOptions,
) -> Result<KeepAlive> {
    let renewer = core.run_async(|deadline| open(core, id, deadline)).await?;
    begin(core, id, opts, renewer)
}

/// The rest of a start, once the first renewal answered: the task, spawned on the runtime.
fn begin(
    core: &Arc<Core>,
    id: LeaseId,
    opts: KeepAliveOptions,
    renewer: Renewer,
) -> Result<KeepAlive> {
    let ttl = renewer.ttl;
    let interval = Duration::from_nanos(opts.interval_for(nanos(ttl))?);
    let started = renewer.sent;
    let deadline = Arc::new(LocalDeadline::new(started));
    deadline.set(started + ttl);
    let (tx, responses) = crossbeam_channel::bounded(1);
    offer_latest(&tx, &responses, KeepAliveResponse { id, ttl });
    let reason = Arc::new(AtomicU8::new(RUNNING));
    let wakers = Arc::new(Wakers::default());
    let stop = Arc::new(Notify::new());
    let key = core
        .register_keepalive(Entry {
            id,
            reason: Arc::clone(&reason),
            stop: Arc::clone(&stop),
        })
        .ok_or(Error::Closed)?;
    let task = Task {
        core: Arc::clone(core),
        key,
        id,
        ttl,
        interval,
        stop_at: opts.run_for_limit().map(|d| started + d),
        last_renewed: started,
        deadline: Arc::clone(&deadline),
        reason: Arc::clone(&reason),
        wakers: Arc::clone(&wakers),
        stop: Arc::clone(&stop),
        tx: Some(tx),
        rx: responses.clone(),
    };
    let spawned = {
        let guard = core.runtime.read();
        guard.as_ref().map(|rt| {
            rt.spawn(task.run(renewer));
        })
    };
    if spawned.is_none() {
        core.unregister(key);
        set_reason(&reason, EndReason::Closed);
        return Err(Error::Closed);
    }
    Ok(KeepAlive::remote(
        id,
        reason,
        wakers,
        responses,
        opts.revokes_on_drop(),
        Box::new(Driver {
            core: Arc::clone(core),
            stop,
            deadline,
        }),
    ))
}

/// What the [`KeepAlive`] handle calls.
struct Driver {
    core: Arc<Core>,
    stop: Arc<Notify>,
    deadline: Arc<LocalDeadline>,
}

impl RemoteKeepAlive for Driver {
    fn stop(&self) {
        self.stop.notify_one();
    }

    fn revoke(&self, id: LeaseId) {
        if self.core.is_open() {
            let _ = self.core.revoke(id);
        }
    }

    fn deadline(&self) -> Instant {
        self.deadline.get()
    }
}

/// A keep-alive's task; see the module docs.
struct Task {
    core: Arc<Core>,
    /// Its key in the registry.
    key: u64,
    id: LeaseId,
    ttl: Duration,
    interval: Duration,
    stop_at: Option<Instant>,
    /// When the last renewal that etcd confirmed was sent: the lease lives until this + TTL,
    /// the local deadline.
    last_renewed: Instant,
    /// The local deadline, as the handle reads it.
    deadline: Arc<LocalDeadline>,
    reason: Arc<AtomicU8>,
    /// Woken after each response, and when the task ends or is dropped (with the runtime).
    wakers: Arc<Wakers>,
    stop: Arc<Notify>,
    /// `None` only while the task is dropped.
    tx: Option<Sender<KeepAliveResponse>>,
    rx: Receiver<KeepAliveResponse>,
}

impl Drop for Task {
    /// Whether the task ran to its end or was dropped with the runtime (`close`), its reason is
    /// set by now: disconnect the handle's channel, then wake whoever waits on it.
    fn drop(&mut self) {
        self.tx = None;
        self.wakers.ended();
    }
}

/// A keep-alive's open stream, and the endpoint it is on.
type Stream = (etcd::LeaseKeeper, etcd::LeaseKeepAliveStream, usize);

/// What one renewal attempt of a keep-alive found, by `deadline`; `Err` for a broken or silent
/// stream (its endpoint is then marked failed), a failed reconnect or any other error
/// (retried until the local deadline).
async fn attempt(
    core: &Core,
    id: LeaseId,
    stream: &mut Option<Stream>,
    deadline: tokio::time::Instant,
) -> std::result::Result<Renewal, ()> {
    match stream.as_mut() {
        Some((keeper, s, endpoint)) => {
            match tokio::time::timeout_at(deadline, renew_on(keeper, s)).await {
                Ok(Ok(renewal)) => Ok(renewal),
                Ok(Err(_)) | Err(_) => {
                    core.pool.failed(*endpoint);
                    Err(())
                }
            }
        }
        None => match open(core, id, deadline).await {
            Ok(r) => {
                *stream = Some((r.keeper, r.stream, r.endpoint));
                Ok(Renewal::Alive(r.ttl))
            }
            Err(Error::LeaseNotFound(_)) => Ok(Renewal::Gone),
            Err(_) => Err(()),
        },
    }
}

impl Task {
    async fn run(mut self, renewer: Renewer) {
        let mut stream = Some((renewer.keeper, renewer.stream, renewer.endpoint));
        let mut next = self.last_renewed + self.interval;
        // `None`: the reason was set by whoever stopped the task.
        let ended = loop {
            let deadline = tokio::time::Instant::from_std(self.last_renewed + self.ttl);
            let at = self.stop_at.map_or(next, |s| next.min(s));
            // `biased`: a stop, then the deadline, win over a renewal ready at the same poll.
            tokio::select! {
                biased;
                () = self.stop.notified() => break None,
                () = tokio::time::sleep_until(deadline) => break Some(EndReason::Expired),
                () = tokio::time::sleep_until(at.into()) => {}
            }
            let finishing = self.stop_at.is_some_and(|s| Instant::now() >= s);
            let sent = Instant::now();
            let limit = attempt_limit(self.ttl, self.core.options.request_timeout);
            let outcome = tokio::select! {
                biased;
                () = self.stop.notified() => break None,
                () = tokio::time::sleep_until(deadline) => break Some(EndReason::Expired),
                outcome = attempt(
                    &self.core,
                    self.id,
                    &mut stream,
                    tokio::time::Instant::from_std(sent + limit),
                ) => outcome,
            };
            match outcome {
                Ok(Renewal::Alive(ttl)) => {
                    self.ttl = ttl;
                    self.last_renewed = sent;
                    self.deadline.set(sent + ttl);
                    if let Some(tx) = &self.tx {
                        offer_latest(tx, &self.rx, KeepAliveResponse { id: self.id, ttl });
                        self.wakers.response();
                    }
                    if finishing {
                        break Some(EndReason::Finished);
                    }
                    next = sent + self.interval;
                }
                // Answered before the local deadline (the timer above would have won): the
                // lease was revoked, by another client or through etcd.
                Ok(Renewal::Gone) => break Some(EndReason::Revoked),
                Err(()) => {
                    // The stream may still deliver the lost answer: open another.
                    stream = None;
                    next = Instant::now() + self.interval.min(RETRY);
                }
            }
        };
        if let Some(reason) = ended {
            set_reason(&self.reason, reason);
        }
        self.core.unregister(self.key);
        // `self` drops here, after the reason was set: the handle's channel disconnects and
        // its tasks are woken (`Drop for Task`).
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_time_out_below_the_ttl() {
        let secs = Duration::from_secs;
        // A third of the TTL, capped by the request timeout, raised to the floor.
        assert_eq!(attempt_limit(secs(3), secs(5)), secs(1));
        assert_eq!(attempt_limit(secs(60), secs(5)), secs(5));
        assert_eq!(attempt_limit(secs(3), Duration::ZERO), MIN_ATTEMPT);
        for ttl in 1..=120 {
            assert!(attempt_limit(secs(ttl), secs(5)) < secs(ttl));
        }
    }

    #[test]
    fn the_local_deadline_reads_what_was_set() {
        let base = Instant::now();
        let d = LocalDeadline::new(base);
        assert_eq!(d.get(), base);
        d.set(base + Duration::from_millis(2500));
        assert_eq!(d.get(), base + Duration::from_millis(2500));
        // Before the base (never, as the task only moves forward): saturates to it.
        if let Some(earlier) = base.checked_sub(Duration::from_secs(1)) {
            d.set(earlier);
            assert_eq!(d.get(), base);
        }
    }
}
