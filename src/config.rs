//! [`Config`]: the settings of an open lessor, as the [`Builder`](crate::Builder) checked them,
//! and the checks every call makes against them (TTL range, key and value sizes).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::restart::RestartPolicy;

/// Settings of an open lessor, fixed at open.
#[derive(Clone)]
pub(crate) struct Config {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub clock: Arc<dyn Clock>,
    pub ticker: bool,
    pub max_key_size: usize,
    pub max_value_size: usize,
    pub expiry_batch: usize,
    pub revoke_chunk: usize,
    pub check_integrity_on_open: bool,
    pub durability: Durability,
    pub event_buffer: usize,
    pub event_buffer_bytes: usize,
    pub watch_history: usize,
    pub watch_history_bytes: usize,
    pub restart_policy: RestartPolicy,
    pub checkpoint_interval: Duration,
    pub checkpoint_batch: usize,
    pub cache_size: usize,
    pub two_phase_commit: bool,
}

impl Config {
    /// The TTL a grant of `ttl` gets, in nanoseconds: raised to the minimum, refused above the
    /// maximum.
    pub(crate) fn effective_ttl(&self, ttl: Duration) -> Result<u64> {
        if ttl > self.max_ttl {
            return Err(Error::TtlOutOfRange {
                ttl,
                max: self.max_ttl,
            });
        }
        // max_ttl <= MAX_TTL, whose nanoseconds fit a u64 with room to spare. At least 1 ns, so
        // that a lease is alive at the instant of its grant even with a `min_ttl` of zero.
        Ok(u64::try_from(ttl.max(self.min_ttl).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1))
    }

    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidKey("keys must not be empty"));
        }
        if key.len() > self.max_key_size {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max: self.max_key_size,
            });
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_size {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.max_value_size,
            });
        }
        Ok(())
    }
}
