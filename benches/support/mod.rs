//! What the criterion benches share: test-mode detection, a cache of fixtures by size, a tiny
//! PRNG, and criterion's settings. Included by each bench with `mod support;`; a bench uses
//! what it needs.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;

/// In test mode (`--test`, or no `--bench` as under `cargo test --benches`) criterion runs each
/// benchmark once, so fixtures hold at most this many leases; the sizes above it share one.
pub const TEST_MODE_MAX_LEASES: usize = 1_000;

/// Whether criterion runs in test mode, by its own rule: `--test` given, or `--bench` missing.
pub fn test_mode() -> bool {
    let mut bench = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--test" => return true,
            "--bench" => bench = true,
            _ => {}
        }
    }
    !bench
}

/// Fixtures by lease count, built on first use (so that a filtered run builds only what it
/// needs) and kept for every group that uses that size. In test mode sizes are capped at
/// [`TEST_MODE_MAX_LEASES`].
pub struct BySize<T>(Vec<(usize, T)>);

impl<T> BySize<T> {
    pub fn new() -> Self {
        BySize(Vec::new())
    }

    /// The fixture for `n` leases, built by `build` the first time.
    pub fn get(&mut self, n: usize, build: impl FnOnce(usize) -> T) -> &mut T {
        let n = if test_mode() {
            n.min(TEST_MODE_MAX_LEASES)
        } else {
            n
        };
        let i = match self.0.iter().position(|(size, _)| *size == n) {
            Some(i) => i,
            None => {
                self.0.push((n, build(n)));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// splitmix64: a tiny deterministic PRNG, good enough to pick leases.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (Lemire's multiply-shift; the bias is negligible here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Criterion as every bench here runs it (`criterion_group!` would define an undocumented
/// public function, which the crate's `missing_docs` lint refuses, so each bench's `main`
/// calls this and its groups).
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args()
}
