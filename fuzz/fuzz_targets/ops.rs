//! Differential: decodes bytes into a sequence of API calls, clock advances and reopens
//! (`tests/support/model.rs`, `decode`), runs it on a real lessor (manual clock, no ticker, an
//! in-memory disk) and on the reference model of the property tests, and fails at the first
//! step where they disagree; a panic is a finding too.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/model.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = model::check_bytes(data) {
        panic!("the lessor and the model disagree: {e}");
    }
});
