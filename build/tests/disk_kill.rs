//! Crash tests of the real `disk` tool: each changing command (`create`,
//! `rename`, `rm`, `commit`, `resize`, `import`) is run on a copy of one
//! small image with `VMKFS_KILL_AT_WRITE=N`, which makes the process kill
//! itself with SIGKILL just before its Nth device write, for N = 1, 2, ...
//! until the command completes. After every kill: `ls` and `export` work on
//! the image as it was left (the journal replayed in RAM) and show exactly
//! the files before or exactly the files after the command, byte for byte;
//! `fsck` finds nothing wrong but, at most, a journal not yet in place,
//! which `fsck --repair` writes; and after that `ls` and `export` show the
//! same files again.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::{disk, ok, path, scratch, text};
use vmkfs::{FormatOptions, OpenMode, host};

/// Every file of an image: name → (kind column of `ls`, contents through `export`).
type Files = BTreeMap<String, (String, Vec<u8>)>;

/// Deterministic bytes, different for each seed.
fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

const ALPHA: usize = 40 * 1024;
const BETA: usize = 12 * 1024;
const BASE: usize = 32 * 1024;
/// Where the redo log over `base` differs from it.
const LOG_WRITES: [(usize, usize); 2] = [(4096, 4096), (20_480, 512)];
const SOURCE: usize = 30 * 1024 + 7;

/// The image every command starts from: disks `alpha` and `beta`, and a
/// redo log `log` (with two blocks written) over the disk `base`.
fn base_image(image: &Path) -> Files {
    let options = FormatOptions {
        block_size: 4096,
        max_files: 8,
        pointer_blocks_per_file: 2,
        ..FormatOptions::default()
    };
    let mut store = host::format_image(&[image.to_path_buf()], 2 << 20, &options, false).unwrap();
    let mut files = Files::new();
    for (name, seed, length) in [("alpha", 1, ALPHA), ("beta", 2, BETA), ("base", 3, BASE)] {
        store.create(name, length as u64).unwrap();
        let handle = store.open(name, OpenMode::ReadWrite).unwrap();
        store.write(handle, 0, &pattern(seed, length)).unwrap();
        store.close(handle).unwrap();
        files.insert(name.into(), ("disk".into(), pattern(seed, length)));
    }
    store.snapshot("base", "log").unwrap();
    let handle = store.open("log", OpenMode::ReadWrite).unwrap();
    let mut view = pattern(3, BASE);
    for (seed, (offset, length)) in (4..).zip(LOG_WRITES) {
        let bytes = pattern(seed, length);
        store.write(handle, offset as u64, &bytes).unwrap();
        view[offset..offset + length].copy_from_slice(&bytes);
    }
    store.close(handle).unwrap();
    store.unmount().unwrap();
    files.insert("log".into(), ("redo-log".into(), view));
    files
}

/// What `ls` and `export` show of the image.
fn files(image: &str, scratch: &Path) -> Files {
    let listing = ok(&["ls", "-i", image]);
    let mut files = Files::new();
    // Header line, one line per file, then the summary line.
    let lines: Vec<&str> = listing.lines().collect();
    for line in &lines[1..lines.len() - 1] {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let (name, kind, length) = (columns[0], columns[1], columns[2]);
        let target = scratch.join("exported.bin");
        ok(&["export", "-i", image, name, path(&target)]);
        let contents = std::fs::read(&target).unwrap();
        assert_eq!(contents.len().to_string(), length, "{listing}");
        files.insert(name.into(), (kind.into(), contents));
    }
    files
}

/// Runs `fsck`: Ok(true) when it reports a journal not in place (and
/// nothing else), Ok(false) when it reports no problem.
fn fsck_finds_only_a_pending_journal(image: &str) -> Result<bool, String> {
    let output = disk(&["fsck", "-i", image]).output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    match output.status.code() {
        Some(0) if stdout.contains("no problems") => Ok(false),
        Some(2)
            if stdout
                .lines()
                .filter(|line| line.starts_with("problem:"))
                .count()
                == 1
                && stdout.contains("journal holds a committed transaction")
                && stderr.contains("try --repair") =>
        {
            Ok(true)
        }
        _ => Err(format!("fsck: {:?}\n{stdout}{stderr}", output.status)),
    }
}

/// Kills `arguments` (run on a fresh copy of the base image) at every one of
/// its writes and checks the image each time; returns how many kills left
/// a journal not in place.
fn kill_at_every_write(arguments: &[&str], change: impl Fn(&mut Files)) -> usize {
    let scratch = scratch();
    let base = scratch.path().join("base.img");
    let before = base_image(&base);
    let mut after = before.clone();
    change(&mut after);
    assert_ne!(before, after);
    let image = scratch.path().join("work.img");
    let image_text = path(&image);
    let mut pending_journals = 0;
    for kill_at in 1.. {
        assert!(kill_at < 1000, "disk {arguments:?} never completes");
        std::fs::copy(&base, &image).unwrap();
        let output = disk(&[arguments[0], "-i", image_text])
            .args(&arguments[1..])
            .env("VMKFS_KILL_AT_WRITE", kill_at.to_string())
            .output()
            .unwrap();
        let at = format!("disk {arguments:?} killed before write {kill_at}");
        if output.status.success() {
            assert!(kill_at > 1, "disk {arguments:?} wrote nothing");
            assert_eq!(files(image_text, scratch.path()), after, "{arguments:?}");
            assert_eq!(fsck_finds_only_a_pending_journal(image_text), Ok(false));
            println!(
                "disk {arguments:?}: killed before each of its {} writes, {pending_journals} times with a journal not in place",
                kill_at - 1
            );
            return pending_journals;
        }
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "{at}: {:?} {}",
            output.status,
            text(&output.stderr)
        );
        let seen = files(image_text, scratch.path());
        assert!(
            seen == before || seen == after,
            "{at}: the files are neither those before nor those after: {:?}",
            seen.keys()
        );
        match fsck_finds_only_a_pending_journal(image_text) {
            Ok(pending) => pending_journals += usize::from(pending),
            Err(message) => panic!("{at}: {message}"),
        }
        ok(&["fsck", "-i", image_text, "--repair"]);
        assert_eq!(
            fsck_finds_only_a_pending_journal(image_text),
            Ok(false),
            "{at}"
        );
        assert!(
            files(image_text, scratch.path()) == seen,
            "{at}: the files changed when the journal was written in place"
        );
    }
    unreachable!("the loop returns when the command completes")
}

#[test]
fn create_killed_at_every_write() {
    let pending = kill_at_every_write(&["create", "new", "--size", "64K"], |files| {
        files.insert("new".into(), ("disk".into(), vec![0; 64 * 1024]));
    });
    assert!(pending > 0);
}

#[test]
fn rename_killed_at_every_write() {
    let pending = kill_at_every_write(&["rename", "alpha", "gamma"], |files| {
        let alpha = files.remove("alpha").unwrap();
        files.insert("gamma".into(), alpha);
    });
    assert!(pending > 0);
}

#[test]
fn rm_killed_at_every_write() {
    let pending = kill_at_every_write(&["rm", "beta"], |files| {
        files.remove("beta");
    });
    assert!(pending > 0);
}

#[test]
fn commit_killed_at_every_write() {
    let pending = kill_at_every_write(&["commit", "log"], |files| {
        let (_, merged) = files.remove("log").unwrap();
        files.insert("base".into(), ("disk".into(), merged));
    });
    assert!(pending > 0);
}

#[test]
fn resize_killed_at_every_write() {
    for (size, length) in [("60K", 60 * 1024), ("20K", 20 * 1024)] {
        let pending = kill_at_every_write(&["resize", "alpha", "--size", size], |files| {
            let (_, contents) = files.get_mut("alpha").unwrap();
            contents.resize(length, 0);
        });
        assert!(pending > 0, "resize to {size}");
    }
}

#[test]
fn import_killed_at_every_write() {
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), pattern(9, SOURCE)).unwrap();
    let pending = kill_at_every_write(
        &["import", path(source.path()), "--name", "imported"],
        |files| {
            let mut contents = pattern(9, SOURCE);
            contents.resize(SOURCE.next_multiple_of(512), 0);
            files.insert("imported".into(), ("disk".into(), contents));
        },
    );
    assert!(pending > 0);
}
