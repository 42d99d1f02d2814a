//! Model checks of the deadline protocol: loom runs each test body under every interleaving of
//! its threads (up to `LOOM_MAX_PREEMPTIONS` preemptions when set) and fails on the first one
//! that breaks an assertion. Clock readings are plain numbers chosen per thread: a renewer given
//! an earlier `now` than another thread is one that read the clock, then was preempted.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib
//! deadline::loom_tests` (see docs/design.md, "Model checking").

#![allow(clippy::unwrap_used)]

use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::*;

/// Every test's lease starts with this deadline (unless pending) ...
const D: u64 = 10;
/// ... and TTL: a renewal at `now` moves the deadline to `now + TTL`.
const TTL: u64 = 10;

/// Runs `f` on a new thread sharing `word`.
fn spawn<R: Send + 'static>(
    word: &Arc<Deadline>,
    f: impl FnOnce(&Deadline) -> R + Send + 'static,
) -> thread::JoinHandle<R> {
    let word = Arc::clone(word);
    thread::spawn(move || f(&word))
}

#[test]
fn renew_with_an_old_clock_reading_vs_expiry_and_a_reader_at_the_deadline() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        // Read the clock at D - 1, just before the deadline.
        let renewer = spawn(&w, |w| w.renew(D - 1, TTL).unwrap());
        // The ticker pops the lease's queue entry at its deadline.
        let expiry = spawn(&w, |w| w.check_due(D, D).unwrap());
        // `time_to_live` & co. at the deadline: sees it pass and says so.
        let told = w.alive(D).unwrap();
        let renewed = renewer.join().unwrap();
        let due = expiry.join().unwrap();
        let target = D - 1 + TTL;

        // Never both renewed and expired: the renewal wins exactly when expiry re-queues.
        if renewed {
            assert_eq!(due, Due::Requeue(target));
            assert_eq!(w.word(), target);
        } else {
            assert_eq!(due, Due::Claimed);
            assert_eq!(w.word(), DEAD);
        }
        // Told dead at the deadline: no renewal comes after, whatever clock reading it holds.
        match told {
            None => assert!(!renewed, "a lease reported dead was renewed"),
            Some(d) => assert!(renewed && d == target, "alive at D only if renewed first"),
        }
    });
}

#[test]
fn renewals_with_stale_and_fresh_clock_readings_never_revive_an_expired_lease() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        let stale = spawn(&w, |w| w.renew(D - 1, TTL).unwrap()); // read the clock before D
        let fresh = spawn(&w, |w| w.renew(D + 1, TTL).unwrap()); // read it after D
        let due = w.check_due(D, D + 1).unwrap();
        let (stale, fresh) = (stale.join().unwrap(), fresh.join().unwrap());

        // The fresh reading finds the lease alive only if the stale renewal moved it first; and
        // once the fresh one was refused (its caller told the lease is gone), the stale one
        // must be refused too.
        assert_eq!(fresh, stale, "fresh renewal {fresh}, stale renewal {stale}");
        assert_eq!(due == Due::Claimed, !stale);
        match w.word() {
            DEAD => assert!(!stale && !fresh),
            word => {
                assert!(stale);
                assert_eq!(word, if fresh { D + 1 + TTL } else { D - 1 + TTL });
            }
        }
    });
}

#[test]
fn renew_vs_revoke_exactly_one_order() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        let a = spawn(&w, |w| w.renew(5, TTL).unwrap()); // to 15
        let b = spawn(&w, |w| w.renew(7, TTL).unwrap()); // to 17
        let claimed = w
            .claim()
            .unwrap()
            .expect("the only claim finds the lease unclaimed");
        let (a, b) = (a.join().unwrap(), b.join().unwrap());

        // A renewal that returned true took effect before the claim, so the claim saw it.
        assert!(
            !a || claimed >= 15,
            "renewal to 15 lost: claim saw {claimed}"
        );
        assert!(
            !b || claimed >= 17,
            "renewal to 17 lost: claim saw {claimed}"
        );
        // And the claim saw no deadline that no successful renewal wrote.
        match claimed {
            D => {}
            15 => assert!(a),
            17 => assert!(b),
            other => panic!("claimed {other}"),
        }
        // Claimed stays claimed.
        assert_eq!(w.word(), DEAD);
        assert_eq!(w.renew(0, TTL), Ok(false));
        assert_eq!(w.claim(), Ok(None));
    });
}

#[test]
fn revoke_vs_expiry_vs_renew_claims_once() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        let renewer = spawn(&w, |w| w.renew(D - 1, TTL).unwrap());
        let expiry = spawn(&w, |w| w.check_due(D, D).unwrap());
        let revoked = w.claim().unwrap();
        let (renewed, due) = (renewer.join().unwrap(), expiry.join().unwrap());

        assert_ne!(
            revoked.is_some(),
            due == Due::Claimed,
            "claimed twice or never"
        );
        if renewed {
            assert_ne!(due, Due::Claimed, "renewed and expired");
            assert_eq!(
                revoked,
                Some(D - 1 + TTL),
                "the revocation missed the renewal"
            );
        }
        assert_eq!(w.word(), DEAD);
    });
}

#[test]
fn a_failed_revocation_restores_the_lease_dead() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        // One holder renews twice; a renewal refused while the lease is claimed means the
        // holder was told it is gone, so the next one must be refused too.
        let holder = spawn(&w, |w| (w.renew(5, TTL).unwrap(), w.renew(6, TTL).unwrap()));
        // `revoke`: claim, the transaction fails, restore.
        let claimed = w.claim().unwrap().expect("unclaimed");
        assert_eq!(w.restore(claimed), Ok(true));
        let (first, second) = holder.join().unwrap();

        assert!(first || !second, "a lease refused a renewal came back");
        assert_eq!(first, claimed >= 15);
        assert_eq!(second, claimed == 16);
        // Restored expired at the deadline it had: dead to everyone, claimed by expiry from its
        // queue entry at that deadline.
        assert_eq!(w.word(), claimed | EXPIRED);
        assert_eq!(w.alive(0), Ok(None));
        assert_eq!(w.renew(0, TTL), Ok(false));
        assert_eq!(w.check_due(claimed, claimed), Ok(Due::Claimed));
    });
}

#[test]
fn an_unclaimed_lease_comes_back_as_it_was() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(D));
        let holder = spawn(&w, |w| (w.renew(5, TTL).unwrap(), w.renew(6, TTL).unwrap()));
        // `revoke` whose transaction fails in storage: claim, then unclaim (the lessor reloads
        // from the file, where the lease still is).
        let claimed = w.claim().unwrap().expect("unclaimed");
        assert_eq!(w.unclaim(claimed), Ok(true));
        let (first, second) = holder.join().unwrap();

        // Renewals refused while it was claimed left nothing behind; the others all count.
        let mut want = claimed;
        if first {
            want = want.max(15);
        }
        if second {
            want = want.max(16);
        }
        assert_eq!(w.word(), want);
        assert_eq!(w.alive(5), Ok(Some(want)));
    });
}

#[test]
fn settle_vs_revoke_and_readers_of_a_pending_lease() {
    loom::model(|| {
        let w = Arc::new(Deadline::new(PENDING));
        let settler = spawn(&w, |w| w.settle(20).unwrap());
        // A reader whose clock is far ahead: a pending lease is alive to nobody until settled,
        // whatever the clock says; a renew never settles it.
        let reader = spawn(&w, |w| w.alive(u64::MAX).unwrap());
        let renewer = spawn(&w, |w| w.renew(1, 10).unwrap());
        let claimed = w.claim().unwrap().expect("unclaimed");
        let (settled, told) = (settler.join().unwrap(), reader.join().unwrap());
        let renewed = renewer.join().unwrap();

        // Exactly one of settle and claim saw PENDING.
        assert_eq!(settled, claimed & !EXPIRED == 20);
        assert!(settled || claimed == PENDING);
        // The reader saw it pending or claimed (not alive), or settled and past (marking it).
        assert_eq!(told, None);
        // A renew succeeded only on the settled lease (whose deadline 20 is past its 11); it
        // never took the place of the settle.
        if renewed {
            assert!(settled && claimed & !EXPIRED == 20);
        }
        if claimed & EXPIRED != 0 {
            assert_eq!(told, None);
        }
        // A lease claimed pending has no queue entry: restoring is the caller's business.
        assert_eq!(w.restore(claimed), Ok(settled));
    });
}

/// One entry of a shard whose array is being replaced: the old entry, the new one, the shard
/// mutex the rebuild holds, and the array pointer (here a flag) it publishes under that mutex.
struct Shard {
    lock: Mutex<()>,
    rebuilt: AtomicBool,
    old: Deadline,
    new: Deadline,
}

impl Shard {
    /// As `LeaseTable::with_entry`: run `f` on the current entry; on `Moved`, wait for the
    /// rebuild on the mutex and look again.
    fn with_entry<R>(&self, f: impl Fn(&Deadline) -> Result<R, Moved>) -> R {
        loop {
            let entry = if self.rebuilt.load(Ordering::Acquire) {
                &self.new
            } else {
                &self.old
            };
            match f(entry) {
                Ok(r) => return r,
                Err(Moved) => drop(self.lock.lock().unwrap()),
            }
        }
    }

    /// As `rebuild`: under the mutex, move the word out of the old entry into the new one and
    /// publish the new array.
    fn rebuild(&self) {
        let _guard = self.lock.lock().unwrap();
        self.new.set(self.old.move_out());
        self.rebuilt.store(true, Ordering::Release);
    }
}

#[test]
fn renew_and_revoke_racing_a_rebuild_lose_nothing() {
    loom::model(|| {
        let s = Arc::new(Shard {
            lock: Mutex::new(()),
            rebuilt: AtomicBool::new(false),
            old: Deadline::new(D),
            new: Deadline::default(),
        });
        let renewer = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.with_entry(|e| e.renew(5, TTL)))
        };
        let revoker = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.with_entry(|e| e.claim()))
        };
        s.rebuild();
        let renewed = renewer.join().unwrap();
        let claimed = revoker.join().unwrap().expect("unclaimed");

        assert_eq!(
            renewed,
            claimed == 15,
            "a renewal or the claim was lost in the move"
        );
        assert_eq!(s.old.word(), MOVED);
        assert_eq!(s.new.word(), DEAD);
    });
}
