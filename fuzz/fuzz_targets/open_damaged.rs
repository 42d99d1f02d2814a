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

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/open.rs"]
mod open;
#[path = "../../tests/support/damaged.rs"]
mod damaged;

static HOOK: Once = Once::new();

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
    if let Err(e) = damaged::check_damaged(data) {
        // Not a panic: the quiet hook above would not print it.
        eprintln!("open_damaged finding: {e}");
        std::process::abort();
    }
});
