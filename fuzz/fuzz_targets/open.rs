//! Opens arbitrary bytes as a database file (`tests/support/open.rs`, `check_open`): the open
//! must give a clear error or a lessor; a lessor that opens must survive reads, writes, an
//! expiry, a close and a reopen, and stay consistent if it was. A panic is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/open.rs"]
mod open;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = open::check_open(data) {
        panic!("{e}");
    }
});
