//! The ticker: a background thread that revokes leases as they expire, and writes checkpoints.
//!
//! # Implementation
//!
//! The thread (`lessor-ticker`) loops: revoke every batch that is due; then, unless the restart
//! policy is `Reset`, if the checkpoint interval has passed since the last pass, write one pass
//! of checkpoints (the leases renewed since their last one, in batches of
//! `checkpoint_batch_size`, one transaction each); then sleep until the earliest queued deadline
//! or the next checkpoint time, whichever comes first. It publishes that time in
//! `Engine::ticker_sleeps_until` before sleeping (and `u64::MAX` while awake), so a grant that
//! queues an earlier deadline sends it a wake-up; a [`ManualClock`](crate::ManualClock) wakes it
//! at every advance. There is no fixed polling interval: an idle lessor's ticker sleeps until the
//! next deadline (or checkpoint).
//!
//! A batch (of expiry or of checkpoints) that fails to commit is retried after a backoff (10 ms
//! doubling to 1 s); the failure is counted in [`Lessor::health`](crate::Lessor::health). A
//! storage failure poisons the lessor: the ticker then reopens the database and reloads from it
//! (`reload.rs`) before anything else, retried with the same backoff while the fault lasts, so
//! expiry resumes by itself once the fault clears. The thread never exits on an error, only
//! when its stop channel closes; `close` then joins it.
//!
//! Each pass (everything between two sleeps) runs under `catch_unwind` ([`contain`]): a panic
//! from storage (redb panics on some damage it meets after open) or from the clock is counted
//! and recorded like a failed batch, and retried with the same backoff. Should the thread end
//! all the same (a panic outside a pass), it records why in [`Ticker`], and
//! [`Lessor::health`](crate::Lessor::health) reports it as not running, with the reason.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use parking_lot::Mutex;

use crate::contain::contain;
use crate::engine::Engine;

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The running ticker thread.
pub(crate) struct Ticker {
    /// Dropping it tells the thread to stop.
    stop: Sender<()>,
    thread: JoinHandle<()>,
    /// Why the thread ended, if it ended other than by [`Ticker::stop`]; written once, by the
    /// thread as it ends.
    stopped: Arc<Mutex<Option<String>>>,
}

impl Ticker {
    /// Starts the thread; `wake` receives a message when a grant queues an earlier deadline.
    pub(crate) fn spawn(core: Arc<Engine>, wake: Receiver<()>) -> std::io::Result<Ticker> {
        let (stop, stop_rx) = crossbeam_channel::bounded(0);
        // Checkpoint intervals count from the open, not from whenever the thread gets going.
        let opened = core.now();
        let stopped = Arc::new(Mutex::new(None));
        let why = Arc::clone(&stopped);
        let thread = std::thread::Builder::new()
            .name("lessor-ticker".into())
            .spawn(move || {
                // Passes contain their own panics; this catches one outside them.
                let reason = match contain(|| run(&core, opened, &wake, &stop_rx)) {
                    Ok(()) => return,
                    Err(panic) => format!("the ticker thread {panic}"),
                };
                tracing::error!(reason = %reason, "the ticker stopped; no lease expires");
                *why.lock() = Some(reason);
            })?;
        Ok(Ticker {
            stop,
            thread,
            stopped,
        })
    }

    /// Stops the thread and waits for it to finish its current batch.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }

    /// Whether the thread has ended (only after `stop`, or a bug).
    pub(crate) fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Why the ticker is not running, for [`Health::ticker_stopped`](crate::Health): `None` while
/// it runs. `ticker` is the lessor's running ticker (`None` once closed, or if it never had
/// one), `configured` whether the lessor was built with one.
pub(crate) fn stopped(ticker: Option<&Ticker>, configured: bool) -> Option<String> {
    match ticker {
        Some(t) if !t.is_finished() => None,
        Some(t) => Some(
            t.stopped
                .lock()
                .clone()
                .unwrap_or_else(|| "the ticker thread ended".to_owned()),
        ),
        None if configured => Some("the lessor is closed".to_owned()),
        None => Some("built without a ticker (Builder::ticker(false))".to_owned()),
    }
}

fn run(core: &Engine, opened: u64, wake: &Receiver<()>, stop: &Receiver<()>) {
    let jumps = core.config.clock.jumps().unwrap_or_else(never);
    let interval = u64::try_from(core.config.checkpoint_interval.as_nanos()).unwrap_or(u64::MAX);
    let mut state = State {
        backoff: None,
        interval,
        next_checkpoint: if core.config.restart_policy.checkpoints() {
            opened.saturating_add(interval)
        } else {
            u64::MAX
        },
        #[cfg(feature = "metrics")]
        next_publish: Instant::now(),
    };
    loop {
        // A panic in a pass (from storage, or the clock) is a failed pass: counted, recorded,
        // retried after the backoff.
        let wait = match contain(|| pass(core, &mut state)) {
            Ok(wait) => wait,
            Err(panic) => {
                let reason = format!("the ticker {panic}");
                failed(core, &reason);
                let b = state.back_off();
                // As after a failed batch: grants meanwhile need not wake it before the retry
                // (unless the clock is what panics; then they do, harmlessly).
                if let Ok(now) = contain(|| core.now()) {
                    let retry_at =
                        now.saturating_add(u64::try_from(b.as_nanos()).unwrap_or(u64::MAX));
                    core.ticker_sleeps_until.store(retry_at, Ordering::Release);
                }
                Some(b)
            }
        };
        let timeout = match wait {
            Some(w) => crossbeam_channel::after(w),
            None => never(),
        };
        select! {
            recv(stop) -> _ => return,
            recv(wake) -> _ => {}
            recv(jumps) -> _ => {}
            recv(timeout) -> _ => {}
        }
    }
}

/// What the ticker's loop keeps from one pass to the next.
struct State {
    /// The last wait after a failure; `None` after a pass that worked.
    backoff: Option<Duration>,
    /// The checkpoint interval, in nanoseconds.
    interval: u64,
    /// When the next pass of checkpoints is due; `u64::MAX` (never) under Reset.
    next_checkpoint: u64,
    #[cfg(feature = "metrics")]
    next_publish: Instant,
}

impl State {
    /// The next wait after a failure: 10 ms, doubling up to 1 s.
    fn back_off(&mut self) -> Duration {
        let b = self
            .backoff
            .map_or(BACKOFF_MIN, |b| (b * 2).min(BACKOFF_MAX));
        self.backoff = Some(b);
        b
    }
}

/// Counts and records a failed pass.
fn failed(core: &Engine, reason: &str) {
    tracing::warn!(error = %reason, "expiry or reload failed; retrying with backoff");
    core.ticker_failures.fetch_add(1, Ordering::Relaxed);
    *core.ticker_last_error.lock() = Some(reason.to_owned());
}

/// One pass: reload if poisoned, expire what is due, flush what is due, checkpoint if due.
/// Returns how long to sleep (`None`: until woken).
fn pass(core: &Engine, state: &mut State) -> Option<Duration> {
    #[cfg(feature = "metrics")]
    if Instant::now() >= state.next_publish {
        if let Ok(stats) = core.stats(core.health(true, None)) {
            crate::stats::publish(&stats);
        }
        state.next_publish = Instant::now() + crate::stats::PUBLISH_EVERY;
    }
    core.ticker_sleeps_until.store(u64::MAX, Ordering::Release);
    // Storage failed: reopen the database and reload from it first (`reload.rs`); while the
    // fault lasts, this fails and is retried with backoff like any failed batch.
    let mut result = if core.is_poisoned() {
        core.reload().map(|_| ())
    } else {
        Ok(())
    };
    // Revoke batch after batch until nothing is due (or a batch fails).
    if result.is_ok() {
        result = core.expire_all(|_| {});
    }
    // Then one chunk of the keys of a large lease being revoked (`reap.rs`): one per pass, so
    // that leases falling due meanwhile wait no longer than a chunk.
    let mut reaping = false;
    if result.is_ok() {
        match crate::reap::step(core, None) {
            Ok(more) => reaping = more,
            Err(e) => result = Err(e),
        }
    }
    // Batched commits whose max_delay is up go to disk.
    if result.is_ok() && core.flush_due().is_some_and(|due| Instant::now() >= due) {
        result = core.sync();
    }
    let now = core.now();
    if result.is_ok() && now >= state.next_checkpoint {
        result = crate::checkpoint::checkpoint_all(core);
        if result.is_ok() {
            state.next_checkpoint = now.saturating_add(state.interval);
        }
    }
    let now = core.now();
    let wait = match result {
        Err(e) => {
            failed(core, &e.to_string());
            let b = state.back_off();
            let retry_at = now.saturating_add(u64::try_from(b.as_nanos()).unwrap_or(u64::MAX));
            core.ticker_sleeps_until.store(retry_at, Ordering::Release);
            Some(b)
        }
        Ok(()) if reaping => {
            state.backoff = None;
            Some(Duration::ZERO)
        }
        Ok(()) => {
            state.backoff = None;
            let next_checkpoint = state.next_checkpoint;
            let wake_at = core
                .next_deadline()
                .map_or(next_checkpoint, |deadline| deadline.min(next_checkpoint));
            (wake_at != u64::MAX).then(|| {
                core.ticker_sleeps_until.store(wake_at, Ordering::Release);
                Duration::from_nanos(wake_at.saturating_sub(now))
            })
        }
    };
    // Real time, not the lessor's clock: the disk does not follow a manual clock.
    let flush_in = core
        .flush_due()
        .map(|due| due.saturating_duration_since(Instant::now()));
    let wait = match (wait, flush_in) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    #[cfg(feature = "metrics")]
    let wait = Some(
        state
            .next_publish
            .saturating_duration_since(Instant::now())
            .min(wait.unwrap_or(Duration::MAX)),
    );
    wait
}
