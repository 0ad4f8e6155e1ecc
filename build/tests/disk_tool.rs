//! The `disk` subcommand as a user meets it: the real `mvbuild` binary run on
//! small images, its exit status, its output and what it leaves on disk.
//! Bad input must give one clear error line and exit status 2, never a panic.

mod common;

use std::path::PathBuf;

use common::{SMALL_LAYOUT, disk, ok, path, refused, scratch, small_image, text};
use tempfile::TempDir;

/// A small image holding an 8 KiB disk named `disk`, and a 4-byte host
/// file to import: (scratch directory, image, host file).
fn image_with_a_disk() -> (TempDir, PathBuf, PathBuf) {
    let scratch = scratch();
    let image = small_image(&scratch);
    ok(&["create", "-i", path(&image), "disk", "--size", "8K"]);
    let source = scratch.path().join("source.bin");
    std::fs::write(&source, b"data").unwrap();
    (scratch, image, source)
}

#[test]
fn sizes_too_large_for_64_bits_are_refused_clearly() {
    let (_scratch, image, source) = image_with_a_disk();
    let image = path(&image);
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

#[test]
fn a_full_output_is_an_error_and_a_closed_pipe_ends_quietly() {
    let (scratch, image, source) = image_with_a_disk();
    let image = path(&image);
    let target = scratch.path().join("target.bin");
    let commands: [&[&str]; 7] = [
        &["ls", "-i", image],
        &["stat", "-i", image, "disk"],
        &["fsck", "-i", image],
        &["export", "-i", image, "disk", path(&target)],
        &["create", "-i", image, "new", "--size", "4K"],
        &["import", "-i", image, path(&source), "--name", "imported"],
        &["rm", "-i", image, "new"],
    ];
    for arguments in commands {
        let full = std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let output = disk(arguments).stdout(full).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{arguments:?}: {stderr}");
        assert!(
            stderr.starts_with("error: cannot write to standard output: No space left on device")
                && !stderr.contains("panicked"),
            "{arguments:?}: {stderr}"
        );
    }
    ok(&["rm", "-i", image, "imported"]);
    for arguments in commands {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = disk(arguments).stdout(writer).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(141),
            "{arguments:?}: {}",
            text(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{arguments:?}: {}",
            text(&output.stderr)
        );
    }
    // The changes were made; only their reports were lost.
    let listing = ok(&["ls", "-i", image]);
    assert!(
        listing.contains("imported") && !listing.contains("new "),
        "{listing}"
    );
    // A command that fails reports its error even when its output is gone.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = disk(&["stat", "-i", image, "missing"])
        .stdout(writer)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no file named 'missing'"));
}

#[test]
fn a_failed_mkfs_leaves_no_file_it_made_and_touches_no_file_it_did_not() {
    let scratch = scratch();
    let image = scratch.path().join("new.img");
    // Too small for the metadata: refused before any file is made, so the
    // corrected command needs no --force.
    let message = refused(&["mkfs", path(&image), "--size", "10K"]);
    assert!(message.contains("too small"), "{message}");
    assert!(!image.exists());
    let message = refused(&["mkfs", path(&image), "--size", &u64::MAX.to_string()]);
    assert!(message.contains("data blocks"), "{message}");
    assert!(!image.exists());
    ok(&["mkfs", path(&image), "--size", "8M"]);
    // A file the user asked to overwrite is left as it was when the options are wrong.
    let existing = scratch.path().join("existing.img");
    std::fs::write(&existing, b"precious").unwrap();
    let message = refused(&["mkfs", path(&existing), "--size", "10K", "--force"]);
    assert!(message.contains("too small"), "{message}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    // A failure after files were made removes the ones mkfs made, and only those.
    let unreachable = scratch.path().join("no-such-directory").join("second.img");
    let first = scratch.path().join("first.img");
    let message = refused(&["mkfs", path(&first), path(&unreachable), "--size", "8M"]);
    assert!(
        message.contains(path(&unreachable)) && message.contains("No such file"),
        "{message}"
    );
    assert!(!first.exists());
    let message = refused(&[
        "mkfs",
        path(&existing),
        path(&unreachable),
        "--size",
        "8M",
        "--force",
    ]);
    assert!(message.contains(path(&unreachable)), "{message}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    ok(&["mkfs", path(&first), "--size", "8M"]);
}

#[test]
fn an_image_another_process_holds_is_refused_not_waited_for() {
    let (scratch, image, source) = image_with_a_disk();
    let image_path = path(&image);
    let target = scratch.path().join("target.bin");
    let in_use = format!("error: image {image_path} is in use by another disk command");
    let reading: [&[&str]; 4] = [
        &["ls", "-i", image_path],
        &["stat", "-i", image_path, "disk"],
        &["fsck", "-i", image_path],
        &["export", "-i", image_path, "disk", path(&target)],
    ];
    let mut mkfs = vec!["mkfs", image_path, "--force"];
    mkfs.extend(SMALL_LAYOUT);
    let changing: [&[&str]; 9] = [
        &["create", "-i", image_path, "new", "--size", "4K"],
        &["import", "-i", image_path, path(&source), "--name", "new"],
        &["rm", "-i", image_path, "disk"],
        &["rename", "-i", image_path, "disk", "moved"],
        &["resize", "-i", image_path, "disk", "--size", "16K"],
        &["snapshot", "-i", image_path, "disk", "log"],
        &["fsck", "-i", image_path, "--repair"],
        &["commit", "-i", image_path, "disk"],
        &mkfs,
    ];
    let before = std::fs::read(&image).unwrap();
    // This test process holds the lock another disk command would.
    let holder = std::fs::File::open(&image).unwrap();
    holder.try_lock_shared().unwrap();
    for arguments in reading {
        ok(arguments);
    }
    for arguments in changing {
        let message = refused(arguments);
        assert!(
            message.starts_with(&in_use) && message.contains("must be the only one"),
            "{arguments:?}: {message}"
        );
    }
    holder.unlock().unwrap();
    holder.try_lock().unwrap();
    for arguments in reading.iter().chain(&changing) {
        let message = refused(arguments);
        assert!(message.starts_with(&in_use), "{arguments:?}: {message}");
    }
    assert!(
        std::fs::read(&image).unwrap() == before,
        "a refused command changed the image"
    );
    drop(holder);
    ok(&["create", "-i", image_path, "new", "--size", "4K"]);
}

/// Runs `disk arguments` with `input` on a pipe as its standard input.
fn with_piped_input(arguments: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = disk(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Less than a pipe's buffer: written whole even if the tool never reads.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

#[test]
fn a_pipe_or_a_device_is_imported_as_far_as_asked_or_refused_never_reported_empty() {
    let (scratch, image, _source) = image_with_a_disk();
    let image = path(&image);
    let contents: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
    // Without --size a pipe's length is unknown: refused, nothing imported.
    let output = with_piped_input(
        &["import", "-i", image, "--name", "p", "/dev/stdin"],
        &contents,
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: /dev/stdin is a pipe, not a regular file")
            && stderr.contains("pass --size"),
        "{stderr}"
    );
    assert!(ok(&["ls", "-i", image]).contains("1 files"));
    // With --size: all of it, then zeros, and the report says how much came from it.
    let output = with_piped_input(
        &[
            "import",
            "-i",
            image,
            "--name",
            "p",
            "--size",
            "16K",
            "/dev/stdin",
        ],
        &contents,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "imported /dev/stdin as 'p' (16.0 KiB): 10000 bytes from /dev/stdin, the rest zero\n"
    );
    let target = scratch.path().join("p.bin");
    ok(&["export", "-i", image, "p", path(&target)]);
    let exported = std::fs::read(&target).unwrap();
    assert_eq!(exported.len(), 16 * 1024);
    assert_eq!(exported[..contents.len()], contents[..]);
    assert!(exported[contents.len()..].iter().all(|&byte| byte == 0));
    // A --size smaller than the pipe: the part asked for, and the report says the rest was left.
    let output = with_piped_input(
        &[
            "import",
            "-i",
            image,
            "--name",
            "short",
            "--size",
            "4K",
            "/dev/stdin",
        ],
        &contents,
    );
    assert_eq!(
        text(&output.stdout),
        "imported the first 4096 bytes of /dev/stdin as 'short' (4.0 KiB); the source has more: --size bounds the import\n"
    );
    // An endless device: refused without --size, bounded by it.
    let message = refused(&["import", "-i", image, "--name", "z", "/dev/zero"]);
    assert!(
        message.contains("/dev/zero is a character device"),
        "{message}"
    );
    let report = ok(&[
        "import",
        "-i",
        image,
        "--name",
        "z",
        "--size",
        "8K",
        "/dev/zero",
    ]);
    assert!(
        report.starts_with("imported the first 8192 bytes of /dev/zero as 'z' (8.0 KiB)"),
        "{report}"
    );
    let listing = ok(&["ls", "-i", image]);
    assert!(listing.contains("4 files"), "{listing}");
}

#[test]
fn logs_over_a_shared_base_are_listed_discarded_and_then_committed() {
    let (scratch, image, _source) = image_with_a_disk();
    let image = path(&image);
    ok(&["snapshot", "-i", image, "disk", "vm-a"]);
    ok(&["snapshot", "-i", image, "disk", "vm-b"]);
    let listing = ok(&["ls", "-i", image]);
    assert!(listing.contains("frozen under 'vm-a', 'vm-b'"), "{listing}");
    // The base is frozen; one log cannot be merged while the other reads it.
    let message = refused(&["commit", "-i", image, "vm-a"]);
    assert!(
        message.contains("'disk' has other redo logs over it (first: 'vm-b')"),
        "{message}"
    );
    let message = refused(&["rm", "-i", image, "disk"]);
    assert!(message.contains("'disk'"), "{message}");
    // Drop vm-b; then vm-a is the base's only log and merges.
    ok(&["discard", "-i", image, "vm-b"]);
    ok(&["commit", "-i", image, "vm-a"]);
    let listing = ok(&["ls", "-i", image]);
    assert!(!listing.contains("vm-"), "{listing}");
    ok(&["fsck", "-i", image]);
    let target = scratch.path().join("disk.bin");
    ok(&["export", "-i", image, "disk", path(&target)]);
    assert_eq!(std::fs::read(&target).unwrap().len(), 8192);
}
