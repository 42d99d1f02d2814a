//! Wakers for the streams ([`Watch`](crate::Watch), [`LeaseEvents`](crate::LeaseEvents),
//! [`KeepAlive`](crate::KeepAlive)), with no runtime of our own.
//!
//! # Implementation
//!
//! A stream's events travel on a crossbeam channel, as for the blocking API; a task waiting on
//! one leaves its [`Waker`] in a [`WakerCell`] shared with the sending side. The consumer's poll
//! ([`poll_recv`]) tries the channel, registers its waker, then tries the channel again, so that
//! an event sent between the first try and the registration is not slept through. The sending
//! side sends first, then takes the waker ([`WakerCell::take`]); whichever of the two comes
//! second sees the other's work.
//!
//! Ground rules:
//! - A `WakerCell`'s mutex is a leaf, held only to store or take the waker: never while waking,
//!   never while taking another lock. A sender that holds a lock of its own (the event hub's
//!   mutex) takes the wakers under it and wakes them once it has released it: a waker is code
//!   of the caller's executor.
//! - An end (the lessor closed, a watch compacted, a keep-alive ended) wakes too, after the
//!   sending end is gone or the end is recorded, so that the woken task sees it.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::Mutex;

/// The waker of the one task waiting on a stream, if any.
#[derive(Default)]
pub(crate) struct WakerCell {
    /// Guards the waker; a leaf lock (see the module docs).
    waker: Mutex<Option<Waker>>,
}

impl WakerCell {
    pub(crate) fn new() -> Arc<WakerCell> {
        Arc::new(WakerCell::default())
    }

    /// Stores `waker` to be woken at the next event or end, replacing any other.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Takes the waker, for the caller to wake once it holds no lock.
    pub(crate) fn take(&self) -> Option<Waker> {
        self.waker.lock().take()
    }

    /// Wakes the waiting task, if any. Call with no lock held.
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}

/// The sending side's hold on a stream that can also be waited on with `select!`: the waker
/// cell, and the sending end of a `bounded(1)` *ready* channel whose receiver the stream hands
/// out (a token in it means "try the stream"; its disconnection, when this is dropped, means
/// "the stream has ended").
pub(crate) struct Notifier {
    cell: Arc<WakerCell>,
    ready: Sender<()>,
}

impl Notifier {
    /// A notifier, the waker cell for the stream to register in, and the ready receiver.
    pub(crate) fn new() -> (Notifier, Arc<WakerCell>, Receiver<()>) {
        let cell = WakerCell::new();
        let (ready, ready_rx) = crossbeam_channel::bounded(1);
        (
            Notifier {
                cell: Arc::clone(&cell),
                ready,
            },
            cell,
            ready_rx,
        )
    }

    /// Marks the stream ready (never blocks) and takes its waker, for the caller to wake once
    /// it holds no lock.
    #[must_use = "the waker must be woken"]
    pub(crate) fn notify(&self) -> Option<Waker> {
        let _ = self.ready.try_send(());
        self.cell.take()
    }
}

/// The wakers of every task waiting on one outcome (a keep-alive's end: several
/// [`Lost`](crate::Lost) futures may wait on it).
#[derive(Default)]
pub(crate) struct WakerList {
    /// Guards the wakers; a leaf lock.
    wakers: Mutex<Vec<Waker>>,
}

impl WakerList {
    /// Adds `waker` unless it is there already.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wakes every waiting task. Call with no lock held.
    pub(crate) fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock());
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Polls `rx` for the next message: `Ready(None)` once it has disconnected and is drained, or
/// once `ended()` says the stream ended and nothing is waiting. `catch_up` refills the channel
/// from elsewhere (a watch's history); it returns `true` if it may have, and the channel is
/// tried again.
pub(crate) fn poll_recv<T>(
    rx: &Receiver<T>,
    cell: &WakerCell,
    cx: &Context<'_>,
    mut catch_up: impl FnMut() -> bool,
    ended: impl Fn() -> bool,
) -> Poll<Option<T>> {
    let mut registered = false;
    loop {
        match rx.try_recv() {
            Ok(message) => return Poll::Ready(Some(message)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        if catch_up() {
            continue;
        }
        if ended() {
            return Poll::Ready(None);
        }
        if registered {
            return Poll::Pending;
        }
        cell.register(cx.waker());
        registered = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pending_poll_is_woken_by_the_next_send_and_by_the_disconnect() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let cell = WakerCell::new();
        let (tx, rx) = crossbeam_channel::bounded(4);
        assert!(poll_recv(&rx, &cell, &cx, || false, || false).is_pending());
        tx.send(7).unwrap();
        cell.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll_recv(&rx, &cell, &cx, || false, || false),
            Poll::Ready(Some(7))
        );
        assert!(poll_recv(&rx, &cell, &cx, || false, || false).is_pending());
        drop(tx);
        cell.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(
            poll_recv(&rx, &cell, &cx, || false, || false),
            Poll::Ready(None)
        );
    }

    #[test]
    fn a_waker_list_wakes_each_task_once() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let list = WakerList::default();
        list.register(&waker);
        list.register(&waker);
        list.wake_all();
        list.wake_all();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
