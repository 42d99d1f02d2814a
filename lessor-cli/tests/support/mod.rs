//! Helpers shared by the command-line tool's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use lessor::LeaseId;

/// A lease id from a literal.
pub fn id(n: u64) -> LeaseId {
    LeaseId::new(n).expect("test ids are valid")
}

/// A temporary folder holding one database path, removed when dropped.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn test_dir() -> TestDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessor.redb");
    TestDir { dir, path }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
