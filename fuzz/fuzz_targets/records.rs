//! Decodes arbitrary bytes as every on-disk record type; a panic, or a record that decodes but
//! does not survive re-encoding, is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lessor::__fuzz::records(data) {
        panic!("{e}");
    }
});
