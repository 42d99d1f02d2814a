//! Keep-alives and renewals on etcd's lease keep-alive stream.
//!
//! A keep-alive is one task on the `EtcdLessor`'s runtime with a keep-alive stream of its own:
//! it sends a renewal every interval and reads etcd's answer. It shares the end-reason word and
//! the responses channel with its [`KeepAlive`] handle, and follows the handle's rules: the
//! reason is set (compare-and-swap from running) before the task drops its sending end, and
//! responses replace an unread one ([`offer_latest`]).
//!
//! Why it ends: the handle's `cancel` (reason set there), this handle's `revoke` of the lease
//! or `close` (reason set by `Core`), `run_for` (finished), or the task's own findings: etcd
//! answers TTL 0 (the lease is gone: revoked if that comes before the lease's deadline as
//! this task last set it, expired after), or etcd cannot be reached until that deadline
//! passes (expired). A broken stream is reopened (which renews too) until then.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use etcd_client as etcd;
use tokio::sync::Notify;

use super::convert::{self, error, raw_id};
use super::{Core, RENEWERS, until};
use crate::error::{Error, Result};
use crate::keepalive::{
    EndReason, KeepAlive, KeepAliveOptions, KeepAliveResponse, RUNNING, RemoteKeepAlive, Wakers,
    offer_latest, set_reason,
};
use crate::lease::LeaseId;

/// How long a broken keep-alive waits before reopening its stream, at most.
const RETRY: Duration = Duration::from_millis(500);

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
    /// The lease's TTL as etcd last reported it.
    ttl: Duration,
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
/// to learn the TTL, which `etcd-client` does not report for the opening renewal.
async fn open(core: &Core, id: LeaseId) -> Result<Renewer> {
    let (mut keeper, mut stream) = core
        .client
        .lease_client()
        .keep_alive(raw_id(id))
        .await
        .map_err(|e| error(e, Some(id)))?;
    match renew_on(&mut keeper, &mut stream)
        .await
        .map_err(|e| error(e, Some(id)))?
    {
        Renewal::Alive(ttl) => Ok(Renewer {
            keeper,
            stream,
            ttl,
            used: Instant::now(),
        }),
        Renewal::Gone => Err(Error::LeaseNotFound(id)),
    }
}

/// [`EtcdLessor::renew`](super::EtcdLessor::renew): a renewal on the lease's cached stream,
/// or on a new one.
pub(crate) async fn renew(core: &Core, id: LeaseId) -> Result<Duration> {
    let cached = core.renewers.lock().await.remove(&id);
    let mut renewer = match cached {
        Some(mut r) => match renew_on(&mut r.keeper, &mut r.stream).await {
            Ok(Renewal::Alive(ttl)) => {
                r.ttl = ttl;
                r
            }
            Ok(Renewal::Gone) => return Err(Error::LeaseNotFound(id)),
            // The stream broke (etcd restarted, a connection dropped): open another.
            Err(_) => open(core, id).await?,
        },
        None => open(core, id).await?,
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
    let renewer = core.run(open(core, id))?;
    let ttl = renewer.ttl;
    let interval = Duration::from_nanos(opts.interval_for(nanos(ttl))?);
    let started = Instant::now();
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
        }),
    ))
}

/// What the [`KeepAlive`] handle calls.
struct Driver {
    core: Arc<Core>,
    stop: Arc<Notify>,
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
    /// When the last renewal that etcd confirmed was sent: the lease lives until this + TTL.
    last_renewed: Instant,
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

impl Task {
    async fn run(mut self, renewer: Renewer) {
        let mut stream = Some((renewer.keeper, renewer.stream));
        let mut next = self.last_renewed + self.interval;
        loop {
            let at = self.stop_at.map_or(next, |s| next.min(s));
            tokio::select! {
                _ = self.stop.notified() => break, // the reason is set already
                _ = tokio::time::sleep(until(at)) => {}
            }
            let finishing = self.stop_at.is_some_and(|s| Instant::now() >= s);
            let sent = Instant::now();
            let outcome = match stream.as_mut() {
                Some((keeper, s)) => renew_on(keeper, s).await,
                None => match open(&self.core, self.id).await {
                    Ok(r) => {
                        stream = Some((r.keeper, r.stream));
                        Ok(Renewal::Alive(r.ttl))
                    }
                    Err(Error::LeaseNotFound(_)) => Ok(Renewal::Gone),
                    Err(_) => Err(etcd::Error::LeaseKeepAliveError("reconnect failed".into())),
                },
            };
            match outcome {
                Ok(Renewal::Alive(ttl)) => {
                    self.ttl = ttl;
                    self.last_renewed = sent;
                    if let Some(tx) = &self.tx {
                        offer_latest(tx, &self.rx, KeepAliveResponse { id: self.id, ttl });
                        self.wakers.response();
                    }
                    if finishing {
                        set_reason(&self.reason, EndReason::Finished);
                        break;
                    }
                    next = sent + self.interval;
                }
                Ok(Renewal::Gone) => {
                    let deadline = self.last_renewed + self.ttl;
                    let reason = if sent < deadline {
                        EndReason::Revoked
                    } else {
                        EndReason::Expired
                    };
                    set_reason(&self.reason, reason);
                    break;
                }
                Err(_) => {
                    if Instant::now() >= self.last_renewed + self.ttl {
                        set_reason(&self.reason, EndReason::Expired);
                        break;
                    }
                    stream = None; // reopen at the next attempt
                    next = Instant::now() + self.interval.min(RETRY);
                }
            }
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
