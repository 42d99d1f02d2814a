//! Damages a database file while a lessor has it open, and reopens damaged files with redb's
//! integrity check on or off (`tests/support/damaged.rs`, `check_damaged`): every call must
//! give an error or what was written. A panic escaping a call, or an answer that differs from
//! what was written while the call says `Ok`, is a finding.
//!
//! libfuzzer-sys's panic hook aborts at any panic, even one the library contains and turns
//! into `Error::Corrupted` (`src/contain.rs`), which is allowed here: this target replaces the
//! hook with one that only prints (with `LESSOR_FUZZ_PANICS=1`, and a backtrace under
//! `RUST_BACKTRACE=1`). A panic that escapes a call is caught by the check and reported; a
//! finding prints its description and aborts.
//!
//! `LESSOR_FUZZ_TWO_PHASE=1` runs every input with `Builder::two_phase_commit` (bit 3 of its
//! flags byte set): without it, damage to the latest commit is rolled back by redb's repair,
//! a known limit (`fuzz/known-bugs/open_damaged/README.md`) that the fuzzer finds at once.

#![no_main]

use std::borrow::Cow;
use std::sync::{Once, OnceLock};

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/damaged.rs"]
mod damaged;
#[path = "../../tests/support/open.rs"]
mod open;

static HOOK: Once = Once::new();
static TWO_PHASE: OnceLock<bool> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let verbose = std::env::var_os("LESSOR_FUZZ_PANICS").is_some();
        std::panic::set_hook(Box::new(move |info| {
            if verbose {
                eprintln!("panic (contained or not): {info}");
                eprintln!("{}", std::backtrace::Backtrace::capture());
            }
        }));
    });
    let two_phase = *TWO_PHASE
        .get_or_init(|| std::env::var_os("LESSOR_FUZZ_TWO_PHASE").is_some_and(|v| v == "1"));
    let data = match data.split_first() {
        Some((&flags, rest)) if two_phase => Cow::Owned([&[flags | 8][..], rest].concat()),
        _ => Cow::Borrowed(data),
    };
    if let Err(e) = damaged::check_damaged(&data) {
        // Not a panic: the quiet hook above would not print it.
        eprintln!("open_damaged finding: {e}");
        std::process::abort();
    }
});
