//! The atomics of the deadline protocol ([`crate::deadline`]): `std`'s normally, loom's under
//! `--cfg loom`, so that the model-checking tests explore every interleaving of the real code.
//!
//! Only the deadline word goes through here; the rest of the crate uses `std` directly (arc-swap
//! and parking_lot are not loom-aware, so the lease table as a whole cannot run under loom).
//! See docs/design.md, "Model checking", for what is checked and how to run it.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
