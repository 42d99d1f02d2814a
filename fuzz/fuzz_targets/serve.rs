//! Drives lessor-server's services (KV, Lease, Watch, Maintenance, Cluster) straight, without a
//! socket, with calls decoded from the input (`lessor-server/tests/support/serve.rs`, `decode`):
//! edge-case requests, prost-decoded arbitrary bytes, keep-alive and watch streams fed frames
//! through tonic's decoder. Every call must answer `Ok` or one of etcd's codes for it, the
//! streams must keep their contracts, and the lessor must verify clean at the end; a panic
//! (in a call or in a service's task) is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../lessor-server/tests/support/serve.rs"]
mod serve;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = serve::check_bytes(data) {
        panic!("{e}");
    }
});
