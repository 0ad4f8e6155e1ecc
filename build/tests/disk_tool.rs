//! The `disk` subcommand as a user meets it: the real `mvbuild` binary run on
//! small images, its exit status, its output and what it leaves on disk.
//! Bad input must give one clear error line and exit status 2, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// A scratch directory, removed when the guard is dropped.
fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("mvbuild-disk-")
        .tempdir()
        .expect("scratch directory")
}

fn disk(arguments: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mvbuild"));
    command.arg("disk").args(arguments);
    command
}

fn run(arguments: &[&str]) -> Output {
    disk(arguments).output().expect("mvbuild runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and expects success.
fn ok(arguments: &[&str]) -> String {
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
fn refused(arguments: &[&str]) -> String {
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

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 scratch path")
}

/// A 2 MiB image with 4 KiB blocks.
fn small_image(scratch: &TempDir) -> PathBuf {
    let image = scratch.path().join("store.img");
    ok(&[
        "mkfs",
        path(&image),
        "--size",
        "2M",
        "--block-size",
        "4K",
        "--max-files",
        "8",
        "--pointer-blocks-per-file",
        "2",
    ]);
    image
}

#[test]
fn sizes_too_large_for_64_bits_are_refused_clearly() {
    let scratch = scratch();
    let image = small_image(&scratch);
    let image = path(&image);
    ok(&["create", "-i", image, "disk", "--size", "8K"]);
    let source = scratch.path().join("source.bin");
    std::fs::write(&source, b"data").unwrap();
    let huge = u64::MAX.to_string();
    for arguments in [
        vec!["create", "-i", image, "big", "--size", &huge],
        vec!["resize", "-i", image, "disk", "--size", &huge],
        vec!["import", "-i", image, path(&source), "--size", &huge],
    ] {
        let message = refused(&arguments);
        assert!(
            message.contains(&huge) && message.contains("too large"),
            "{arguments:?}: {message}"
        );
    }
    let listing = ok(&["ls", "-i", image]);
    assert!(listing.contains("1 files"), "{listing}");
}
