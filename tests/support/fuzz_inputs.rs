//! The committed inputs of a fuzz target, for the replays under `cargo test`: shared by
//! `tests/fuzz_corpus.rs` and lessor-server's `tests/fuzz_corpus.rs`.

use std::fs;
use std::path::{Path, PathBuf};

/// The input files of `<fuzz>/<dir>/<target>/` (`dir`: `corpus` or `regressions`), sorted;
/// READMEs and dotfiles are not inputs.
pub fn inputs(fuzz: &Path, dir: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz.join(dir).join(target);
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
