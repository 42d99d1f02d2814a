//! One `lessor-keepalive` thread per lessor, however many keep-alives: counted by name in
//! `/proc/self/task`, so this test has a binary (a process) of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{secs, wait_until};
use lessor::{Lessor, ManualClock};

/// Threads of this process whose name starts with `lessor-keepalive` (Linux keeps 15 bytes of a
/// thread's name, so it shows as `lessor-keepaliv`).
#[cfg(target_os = "linux")]
fn keepalive_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with("lessor-keepaliv"))
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn one_keepalive_thread_serves_every_keep_alive_and_close_joins_it() {
    let clock = ManualClock::new();
    let l = Lessor::builder()
        .clock(clock.clone())
        .ticker(false)
        .open_in_memory()
        .unwrap();
    let leases: Vec<_> = (0..200).map(|_| l.grant(secs(9)).unwrap().id).collect();
    assert_eq!(
        keepalive_threads(),
        0,
        "started lazily, by the first keep-alive"
    );
    let kas: Vec<_> = leases
        .iter()
        .flat_map(|&id| [l.keep_alive(id).unwrap(), l.keep_alive(id).unwrap()])
        .collect();
    // a new thread names itself as it starts: give it a moment
    assert!(wait_until(secs(5), || keepalive_threads() == 1));
    for _ in 0..3 {
        clock.advance(secs(3));
        for ka in &kas {
            ka.responses().recv_timeout(secs(20)).unwrap();
        }
    }
    assert_eq!(keepalive_threads(), 1);
    drop(kas);
    assert_eq!(keepalive_threads(), 1, "kept for the next keep-alive");
    l.close().unwrap();
    // close joins it: gone by the time close returns (the kernel may lag a moment)
    assert!(wait_until(secs(5), || keepalive_threads() == 0));
}
