//! Replays the committed fuzz corpus and the saved crash reproducers of the `records` fuzz target
//! (`fuzz/`) on stable, so that `cargo test` catches a regression without nightly or cargo-fuzz.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// The input files of `fuzz/<dir>/records/`, sorted; READMEs and dotfiles are not inputs.
fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join("records");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && name != "README.md"
        })
        .collect();
    files.sort();
    files
}

fn replay(files: &[PathBuf]) {
    for path in files {
        let bytes =
            fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(e) = lessor::__fuzz::records(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn corpus_replays() {
    let files = inputs("corpus");
    assert!(!files.is_empty(), "fuzz/corpus/records/ is empty");
    replay(&files);
}

#[test]
fn regressions_replay() {
    replay(&inputs("regressions"));
}
