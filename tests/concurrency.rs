//! Threads against the real ticker: grants, renewals, puts, attachments and revocations racing
//! with expiry, then a full consistency check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{MemDisk, wait_until};
use lessor::{Error, LeaseId, Lessor, ManualClock};

/// A small deterministic PRNG, one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Errors a racing workload may legitimately meet: the lease expired or was revoked by another
/// thread, or a key was deleted meanwhile.
fn expected(e: &Error) -> bool {
    matches!(
        e,
        Error::LeaseNotFound(_) | Error::KeyNotFound(_) | Error::KeyNotAttached { .. }
    )
}

#[test]
fn threads_racing_the_ticker_leave_a_consistent_database() {
    let disk = MemDisk::new();
    let l = Lessor::builder()
        .min_ttl(Duration::from_millis(1))
        .expiry_batch_size(16)
        .open_with_backend(disk.clone())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));

    // The keeper renews one lease far more often than its TTL: it must never be lost.
    let keeper = l.grant(Duration::from_secs(2)).unwrap();
    l.put_with_lease("/keeper", "alive", keeper.id).unwrap();
    let keeper_thread = {
        let (l, stop) = (l.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut renewals = 0u64;
            while !stop.load(Ordering::Relaxed) {
                l.renew(keeper.id)
                    .expect("a lease renewed every 2 ms was lost");
                renewals += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            renewals
        })
    };

    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (l, stop, ops) = (l.clone(), Arc::clone(&stop), Arc::clone(&ops));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut mine: Vec<LeaseId> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/w/{}", rng.below(64));
                    let result = match rng.below(10) {
                        0 | 1 => l
                            .grant(Duration::from_millis(1 + rng.below(40)))
                            .map(|g| mine.push(g.id)),
                        2 | 3 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            l.put_with_lease(&key, "v", id).map(drop)
                        }
                        4 | 5 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            l.renew(id).map(drop)
                        }
                        6 if !mine.is_empty() => {
                            let id = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                            l.revoke(id).map(drop)
                        }
                        7 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            l.attach(id, [&key]).map(drop)
                        }
                        8 => l.put(&key, "free").map(drop),
                        _ => l.delete(&key).map(drop),
                    };
                    if let Err(e) = result {
                        assert!(expected(&e), "unexpected error: {e:?}");
                    }
                    mine.truncate(32);
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        l.verify().unwrap(); // consistent at any moment, not only at the end
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(keeper_thread.join().unwrap() > 0);
    assert!(ops.load(Ordering::Relaxed) > 100, "the workload barely ran");

    // Every short lease expires within its TTL plus the ticker's reaction time.
    assert!(wait_until(Duration::from_secs(10), || l.leases().unwrap()
        == vec![keeper.id]));
    assert!(wait_until(Duration::from_secs(10), || {
        l.range("")
            .unwrap()
            .iter()
            .all(|kv| kv.lease.is_none() || kv.lease == Some(keeper.id))
    }));
    assert_eq!(l.get("/keeper").unwrap().unwrap().lease, Some(keeper.id));
    l.verify().unwrap();
    assert_eq!(l.health().ticker_failures, 0);
    l.close().unwrap();

    // And the file says the same after a reopen.
    let clock = ManualClock::new();
    let l = disk.open(&clock).unwrap();
    assert_eq!(l.leases().unwrap(), vec![keeper.id]);
    l.verify().unwrap();
}

#[test]
fn renew_and_expiry_never_both_win() {
    // A manual clock sits exactly at the deadline of many leases while one thread renews them
    // and another revokes what has expired. Each lease ends up either renewed (alive, with its
    // full TTL ahead) or revoked (gone everywhere), never both and never neither.
    for round in 0..10 {
        let clock = ManualClock::new();
        let l = MemDisk::new().open(&clock).unwrap();
        let ids: Vec<LeaseId> = (0..200)
            .map(|_| l.grant(Duration::from_secs(10)).unwrap().id)
            .collect();
        for id in &ids {
            l.put_with_lease(format!("/k{}", id.get()), "", *id)
                .unwrap();
        }
        clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
        let renewer = {
            let (l, ids) = (l.clone(), ids.clone());
            std::thread::spawn(move || {
                let mut renewed = Vec::new();
                for id in ids.iter().rev() {
                    if l.renew(*id).is_ok() {
                        renewed.push(*id);
                    }
                }
                renewed
            })
        };
        clock.advance(Duration::from_nanos(if round % 2 == 0 { 1 } else { 0 }));
        let revoked = l.revoke_expired().unwrap();
        let renewed = renewer.join().unwrap();
        let revoked_again = l.revoke_expired().unwrap();
        let alive_now = l.leases().unwrap();
        for id in &ids {
            let was_renewed = renewed.contains(id);
            let was_revoked = revoked.contains(id) || revoked_again.contains(id);
            assert!(
                was_renewed != was_revoked,
                "lease {id}: renewed {was_renewed}, revoked {was_revoked}"
            );
            let alive = alive_now.contains(id);
            let key = l.get(format!("/k{}", id.get())).unwrap();
            assert_eq!(alive, key.is_some(), "lease {id} and its key disagree");
        }
        l.verify().unwrap();
    }
}
