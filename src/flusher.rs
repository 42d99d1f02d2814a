//! The flusher thread: leads the flushes that [`AsyncLessor`](crate::AsyncLessor) calls wait
//! for, so that no task ever blocks its executor on an fsync.
//!
//! # Implementation
//!
//! A blocking caller that must wait for its request to be durable leads the flush itself when
//! nobody else is flushing (`durability.rs`). A task cannot: the flush is a redb commit with
//! fsync. So an async call applies its request on the task (microseconds under the writer lock,
//! no I/O but reads of pages the snapshot may not have cached), then polls the [`Syncer`] for
//! its sequence number, and, if it is not durable yet, asks this thread for a flush up to it.
//! The thread takes every sequence number asked for so far and waits for the highest one the way
//! a blocking caller would ([`Pipeline::await_durable`]): it leads the flush if nobody is
//! flushing (gathering the requests still entering, as any leader does), or waits for the
//! running one and then leads the next. Tasks are woken by the syncer as each flush ends.
//!
//! So one thread serves every async writer, and their requests share fsyncs (group commit)
//! as blocking callers' do, and with them. Blocking and async callers can be mixed freely.
//!
//! The thread is started by the first async call that waits for a flush, named
//! `lessor-flusher`, and stopped and joined at close (after the last flush, so that every
//! request applied before the close is durable or its task told why not). A flush that fails
//! fails its waiters through the syncer, as for blocking callers; the thread goes on.
//!
//! [`Syncer`]: crate::durability::Syncer
//! [`Pipeline::await_durable`]: crate::pipeline::Pipeline::await_durable

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The flusher thread's handle, kept by the engine.
#[derive(Default)]
pub(crate) struct Flusher {
    /// The running thread, started on first use; `closed` once the lessor has closed. Held
    /// only to start the thread or hand it a sequence number (a channel send that never blocks),
    /// and by close to take it; a leaf lock.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    thread: Option<Thread>,
    closed: bool,
}

struct Thread {
    /// Sequence numbers to make durable; dropping it stops the thread.
    asks: Sender<u64>,
    join: JoinHandle<()>,
}

impl Flusher {
    /// Asks for a flush that makes request `seq` durable, starting the thread if needed with
    /// the flush `make_flush` returns: it waits, as a blocking caller would, until the request of
    /// the sequence number it is given is durable (leading the flush if nobody is).
    ///
    /// # Errors
    /// [`Error::Closed`] once the lessor has closed, [`Error::Spawn`] if the thread could not be
    /// started.
    pub(crate) fn ask<F>(&self, seq: u64, make_flush: impl FnOnce() -> F) -> Result<()>
    where
        F: Fn(u64) + Send + 'static,
    {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Error::Closed);
        }
        if let Some(thread) = &state.thread
            && !thread.join.is_finished()
            && thread.asks.send(seq).is_ok()
        {
            return Ok(());
        }
        let (asks, rx) = crossbeam_channel::unbounded();
        let flush = make_flush();
        let join = std::thread::Builder::new()
            .name("lessor-flusher".into())
            .spawn(move || run(&flush, &rx))
            .map_err(Error::Spawn)?;
        // Never fails: the thread holds the receiver until this sender is dropped.
        let _ = asks.send(seq);
        state.thread = Some(Thread { asks, join });
        Ok(())
    }

    /// Stops and joins the thread; later asks get [`Error::Closed`]. Called by close once the
    /// syncer has ended, so that the thread is not waiting for a flush.
    pub(crate) fn close(&self) {
        let thread = {
            let mut state = self.state.lock();
            state.closed = true;
            state.thread.take()
        };
        if let Some(Thread { asks, join }) = thread {
            drop(asks);
            // The thread never closes the lessor, so this never joins the calling thread.
            let _ = join.join();
        }
    }
}

/// The thread's loop: waits for asks, and makes the highest sequence number asked durable.
fn run(flush: &impl Fn(u64), asks: &Receiver<u64>) {
    while let Ok(mut seq) = asks.recv() {
        seq = asks.try_iter().fold(seq, u64::max);
        // Failures reach the waiting tasks through the syncer (poisoned, closed); a panic in
        // redb is contained by the flush itself, and this one only guards the thread.
        let outcome = crate::contain::contain(|| flush(seq));
        if let Err(panic) = outcome {
            tracing::error!(panic = %panic, "the flusher contained a panic");
        }
    }
}
