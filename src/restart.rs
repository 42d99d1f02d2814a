//! Restart policies: what a lease's deadline becomes when its database is reopened, and the
//! checkpoints that carry deadlines across a restart.
//!
//! # Implementation
//!
//! Deadlines in memory are readings of the lessor's [`Clock`](crate::Clock), whose epoch is
//! usually the start of the process, so they mean nothing to the next process. A checkpoint
//! therefore stores a lease's deadline on two timelines that outlive the process:
//!
//! - **uptime**: the time the database has been open, summed over every session. `lessor.meta`
//!   stores the uptime as of the last checkpoint; a lease record stores the uptime at which the
//!   lease expires. Their difference is the TTL the lease had left, not counting the time the
//!   database was closed: [`RestartPolicy::Preserve`].
//! - **wall**: nanoseconds since the Unix epoch, from [`Clock::wall`](crate::Clock::wall). The
//!   record's wall deadline minus the wall time at reopening is the TTL left counting the
//!   downtime: [`RestartPolicy::Absolute`].
//!
//! A lease's deadline on both timelines stays true until the lease is renewed, so a checkpoint
//! only rewrites the leases renewed since their last one, plus the uptime (one `meta` entry).
//! Both timelines are always written, whatever the policy of the session, so the next open may
//! choose another policy. A session under [`RestartPolicy::Reset`] writes no checkpoints, so its
//! renewals never reach the file; it clears the `checkpoints` flag in `lessor.meta`, and the next
//! session that does checkpoint starts by giving every lease a full TTL and rewriting all of
//! them (see [`crate::recovery`]).
//!
//! Invariants, for every stored lease while checkpoints are current: its record's deadlines are
//! those of its in-memory deadline as of the last checkpoint that wrote it (or its grant), and
//! its table entry's `checkpointed` word is that in-memory deadline, so "renewed since" is a
//! comparison of two words.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::record::Checkpoint;

/// What a lease's deadline becomes when its database is reopened.
///
/// Chosen per open with [`Builder::restart_policy`](crate::Builder::restart_policy). The file
/// keeps what every policy needs, so a database may be reopened under another policy than the
/// one it was last opened with. Whatever the policy, a restored lease never gets more than its
/// TTL, and keys, revisions and lease ids are restored exactly.
///
/// Under `Preserve` and `Absolute` the ticker writes checkpoints every
/// [`checkpoint_interval`](crate::Builder::checkpoint_interval) (default 5 s): the deadlines of
/// the leases renewed since the last checkpoint, in batches, never on the renew path. A grant
/// writes its lease's deadline and a clean [`close`](crate::Lessor::close) writes every deadline
/// that changed, so after a clean close the deadlines are exact; after a crash they are those of
/// the last checkpoint, at most one interval old (a lease renewed since then comes back with
/// what it had left at its previous checkpoint, so possibly with less time than the renewal
/// gave it, never more than its TTL).
///
/// ```
/// use std::time::Duration;
/// use lessor::{Clock, Lessor, ManualClock, RestartPolicy};
///
/// # fn main() -> lessor::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("data.redb");
/// let open = |clock: &ManualClock, policy| {
///     Lessor::builder().clock(clock.clone()).restart_policy(policy).open(&path)
/// };
/// let clock = ManualClock::new();
/// let lessor = open(&clock, RestartPolicy::Preserve)?;
/// let lease = lessor.grant(Duration::from_secs(10))?;
/// clock.advance(Duration::from_secs(4));
/// lessor.close()?; // writes what each lease has left: 6 s
///
/// // Reopened a minute later: the downtime does not count under `Preserve` ...
/// let later = ManualClock::starting_at(clock.wall() + Duration::from_secs(60));
/// let lessor = open(&later, RestartPolicy::Preserve)?;
/// assert_eq!(lessor.time_to_live(lease.id)?.remaining, Duration::from_secs(6));
/// lessor.close()?;
///
/// // ... but it does under `Absolute`: the lease's wall-clock deadline has passed, so it is
/// // dead as soon as the database opens, and the ticker revokes it with its keys.
/// let lessor = open(&later, RestartPolicy::Absolute)?;
/// assert!(lessor.time_to_live(lease.id).is_err());
///
/// // `Reset`, the default, would have given it a full 10 s again.
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Every lease gets its full TTL again, counted from the reopening: etcd's rule.
    ///
    /// The safest choice for holders: one that could not renew while the database was down
    /// (perhaps because it runs in the same process) gets a whole TTL to come back. Costs
    /// nothing while running: no checkpoints are written. A lease can outlive its holder by up to
    /// one TTL per restart. The default.
    #[default]
    Reset,
    /// Every lease gets the TTL it had left as of the last checkpoint or clean close: a restart
    /// gives no lease extra life, but the time the database was closed does not count.
    ///
    /// Pick it when holders cannot renew while the database is down, yet a lease must not gain a
    /// fresh TTL from every restart. Relies on the monotonic clock only.
    Preserve,
    /// Every lease keeps its wall-clock deadline: the time the database was closed counts, and a
    /// lease whose deadline passed meanwhile is dead as soon as the database opens; the first
    /// expiry batch (the ticker's, at once) revokes it with its keys.
    ///
    /// Pick it when a lease must not outlive its deadline even across a crash, e.g. a lock whose
    /// holder has moved on. Relies on the wall clock ([`Clock::wall`](crate::Clock::wall)) being
    /// sane across the restart: a clock set forwards expires leases early; one set backwards
    /// never gives a lease more than its TTL.
    Absolute,
}

impl RestartPolicy {
    /// Whether sessions under this policy write checkpoints.
    pub(crate) fn checkpoints(self) -> bool {
        self != RestartPolicy::Reset
    }
}

/// A session's checkpointing: its place on the database's uptime, and what it has written.
pub(crate) struct Checkpointing {
    /// The database's uptime when this session opened, from `lessor.meta`.
    uptime_at_open: u64,
    /// The clock reading at open.
    opened_at: u64,
    /// Checkpoint transactions committed since open; counted under the lessor's writer lock,
    /// read by `health`.
    batches: AtomicU64,
    /// Lease records those transactions wrote; as `batches`.
    leases: AtomicU64,
}

impl Checkpointing {
    pub(crate) fn new(uptime_at_open: u64, opened_at: u64) -> Checkpointing {
        Checkpointing {
            uptime_at_open,
            opened_at,
            batches: AtomicU64::new(0),
            leases: AtomicU64::new(0),
        }
    }

    /// Counts a committed checkpoint transaction that wrote `leases` records.
    pub(crate) fn committed(&self, leases: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.leases
            .fetch_add(u64::try_from(leases).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Checkpoint transactions committed since open.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Lease records written by checkpoints since open.
    pub(crate) fn leases(&self) -> u64 {
        self.leases.load(Ordering::Relaxed)
    }

    /// The timelines at clock reading `now` and wall time `wall` (nanoseconds since the epoch).
    pub(crate) fn stamp(&self, now: u64, wall: u64) -> Stamp {
        Stamp {
            now,
            uptime: self
                .uptime_at_open
                .saturating_add(now.saturating_sub(self.opened_at)),
            wall,
        }
    }
}

/// One instant on the clock and on both timelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The clock reading.
    pub now: u64,
    /// The database's uptime.
    pub uptime: u64,
    /// The wall time, in nanoseconds since the Unix epoch.
    pub wall: u64,
}

impl Stamp {
    /// The checkpoint of a lease with all of its TTL `ttl` left: a grant's.
    pub(crate) fn granted(&self, ttl: u64) -> Checkpoint {
        Checkpoint {
            uptime_deadline: self.uptime.saturating_add(ttl),
            wall_deadline: self.wall.saturating_add(ttl),
        }
    }

    /// The checkpoint of a lease with TTL `ttl` whose in-memory deadline is `deadline`: it has
    /// `deadline - now` left (nothing if that has passed, never more than its TTL).
    pub(crate) fn checkpoint(&self, deadline: u64, ttl: u64) -> Checkpoint {
        let left = deadline.saturating_sub(self.now).min(ttl);
        Checkpoint {
            uptime_deadline: self.uptime.saturating_add(left),
            wall_deadline: self.wall.saturating_add(left),
        }
    }
}

/// What a stored lease has left at reopening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Left {
    /// Nanoseconds of TTL left, at most the TTL; 0 for a lease whose deadline passed.
    pub nanos: u64,
    /// Whether the record says exactly this (so it need not be rewritten until the lease is
    /// renewed); `false` when it had no checkpoint or was clamped.
    pub exact: bool,
}

/// The TTL left to a lease of `ttl` with `checkpoint`, reopened under `policy` when the stored
/// uptime is `uptime` and the wall time `wall`.
pub(crate) fn left_after_restart(
    policy: RestartPolicy,
    ttl: u64,
    checkpoint: Option<Checkpoint>,
    uptime: u64,
    wall: u64,
) -> Left {
    let full = Left {
        nanos: ttl,
        exact: false,
    };
    let Some(c) = checkpoint else {
        return full;
    };
    // A deadline behind the reference leaves nothing; one more than a TTL ahead (a wall clock
    // set back, or a damaged file) leaves the TTL.
    let clamp = |deadline: u64, reference: u64| {
        let left = deadline.saturating_sub(reference);
        Left {
            nanos: left.min(ttl),
            exact: deadline >= reference && left <= ttl,
        }
    };
    match policy {
        RestartPolicy::Reset => full,
        RestartPolicy::Preserve => clamp(c.uptime_deadline, uptime),
        RestartPolicy::Absolute => clamp(c.wall_deadline, wall),
    }
}

/// The TTL left to a lease of `ttl` with `checkpoint` when a session under `policy` opens a
/// file whose `checkpoints` flag is `current`, its stored uptime `uptime`, at wall time `wall`:
/// as [`left_after_restart`], except that a policy that checkpoints does not trust checkpoints
/// that are not current and gives the full TTL (the rule of [`crate::recovery`]).
pub(crate) fn left_at_open(
    policy: RestartPolicy,
    current: bool,
    ttl: u64,
    checkpoint: Option<Checkpoint>,
    uptime: u64,
    wall: u64,
) -> Left {
    if policy.checkpoints() && !current {
        return Left {
            nanos: ttl,
            exact: false,
        };
    }
    left_after_restart(policy, ttl, checkpoint, uptime, wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn stamps_continue_the_uptime_of_earlier_sessions() {
        let t = Checkpointing::new(100 * S, 7 * S);
        let s = t.stamp(11 * S, 5_000 * S);
        assert_eq!(s.uptime, 104 * S);
        // a clock reading before the open (a clock that stepped back) counts as the open
        assert_eq!(t.stamp(S, 0).uptime, 100 * S);
        // 6 s left of a 10 s TTL, on both timelines
        let c = s.checkpoint(17 * S, 10 * S);
        assert_eq!(c.uptime_deadline, 110 * S);
        assert_eq!(c.wall_deadline, 5_006 * S);
        assert_eq!(s.granted(10 * S), s.checkpoint(21 * S, 10 * S));
        // past deadlines leave nothing; a deadline more than a TTL ahead leaves the TTL
        assert_eq!(s.checkpoint(3 * S, 10 * S).uptime_deadline, 104 * S);
        assert_eq!(s.checkpoint(u64::MAX, 10 * S).wall_deadline, 5_010 * S);
        assert_eq!(
            Checkpointing::new(u64::MAX, 0)
                .stamp(S, u64::MAX)
                .checkpoint(2 * S, S),
            Checkpoint {
                uptime_deadline: u64::MAX,
                wall_deadline: u64::MAX
            }
        );
    }

    #[test]
    fn each_policy_reads_its_own_timeline() {
        let ttl = 10 * S;
        // Checkpointed with 6 s left at uptime 4 s, wall 1,000 s; reopened at wall 1,003 s.
        let c = Some(Checkpoint {
            uptime_deadline: 10 * S,
            wall_deadline: 1_006 * S,
        });
        let left = |policy| left_after_restart(policy, ttl, c, 4 * S, 1_003 * S);
        assert_eq!(left(RestartPolicy::Reset).nanos, 10 * S);
        assert_eq!(
            left(RestartPolicy::Preserve),
            Left {
                nanos: 6 * S,
                exact: true
            }
        );
        assert_eq!(
            left(RestartPolicy::Absolute),
            Left {
                nanos: 3 * S,
                exact: true
            }
        );
        // no checkpoint (a v1 record): a full TTL under every policy
        for policy in [
            RestartPolicy::Reset,
            RestartPolicy::Preserve,
            RestartPolicy::Absolute,
        ] {
            let l = left_after_restart(policy, ttl, None, 4 * S, 1_003 * S);
            assert_eq!(l.nanos, ttl);
            assert!(!l.exact);
        }
    }

    #[test]
    fn stale_checkpoints_give_a_full_ttl_at_open() {
        let ttl = 10 * S;
        let c = Some(Checkpoint {
            uptime_deadline: S,
            wall_deadline: S,
        });
        for policy in [RestartPolicy::Preserve, RestartPolicy::Absolute] {
            assert_eq!(left_at_open(policy, false, ttl, c, 4 * S, 9 * S).nanos, ttl);
            assert_eq!(left_at_open(policy, true, ttl, c, 4 * S, 9 * S).nanos, 0);
        }
        assert_eq!(
            left_at_open(RestartPolicy::Reset, true, ttl, c, 4 * S, 9 * S).nanos,
            ttl
        );
    }

    #[test]
    fn restored_ttls_are_clamped_to_nothing_and_to_the_ttl() {
        let ttl = 10 * S;
        let c = Some(Checkpoint {
            uptime_deadline: 10 * S,
            wall_deadline: 1_006 * S,
        });
        // wall deadline passed while down: nothing left
        let l = left_after_restart(RestartPolicy::Absolute, ttl, c, 0, 2_000 * S);
        assert_eq!(l.nanos, 0);
        // a wall clock set back by an hour: one TTL, not an hour more
        let later = Some(Checkpoint {
            uptime_deadline: 10 * S,
            wall_deadline: 10_006 * S,
        });
        let l = left_after_restart(RestartPolicy::Absolute, ttl, later, 0, 6_406 * S);
        assert_eq!(
            l,
            Left {
                nanos: ttl,
                exact: false
            }
        );
        // an uptime behind the record (a damaged meta entry): never more than the TTL
        let l = left_after_restart(RestartPolicy::Preserve, ttl, c, 0, 0);
        assert_eq!(l.nanos, ttl);
        // exactly at the deadline: nothing left, and that is what the record says
        let l = left_after_restart(RestartPolicy::Preserve, ttl, c, 10 * S, 0);
        assert_eq!(
            l,
            Left {
                nanos: 0,
                exact: true
            }
        );
    }
}
