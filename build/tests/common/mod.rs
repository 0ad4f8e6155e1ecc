//! Helpers shared by the disk tool's integration tests: scratch
//! directories, running the real `mvbuild disk ...`, small images.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// A scratch directory, removed when the guard is dropped.
pub fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("mvbuild-disk-")
        .tempdir()
        .expect("scratch directory")
}

pub fn disk(arguments: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mvbuild"));
    command.arg("disk").args(arguments);
    command
}

pub fn run(arguments: &[&str]) -> Output {
    disk(arguments).output().expect("mvbuild runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and expects success.
pub fn ok(arguments: &[&str]) -> String {
    let output = run(arguments);
    assert!(
        output.status.success(),
        "disk {arguments:?} failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs and expects the tool's error exit (2, one `error:` line, no panic).
pub fn refused(arguments: &[&str]) -> String {
    let output = run(arguments);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "disk {arguments:?}: {stderr}"
    );
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "disk {arguments:?}: {stderr}"
    );
    stderr
}

pub fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 scratch path")
}

/// The `mkfs` options of [`small_image`]: 2 MiB, 4 KiB blocks, few files.
pub const SMALL_LAYOUT: [&str; 8] = [
    "--size",
    "2M",
    "--block-size",
    "4K",
    "--max-files",
    "8",
    "--pointer-blocks-per-file",
    "2",
];

/// A 2 MiB image with 4 KiB blocks.
pub fn small_image(scratch: &TempDir) -> PathBuf {
    let image = scratch.path().join("store.img");
    let mut arguments = vec!["mkfs", path(&image)];
    arguments.extend(SMALL_LAYOUT);
    ok(&arguments);
    image
}
