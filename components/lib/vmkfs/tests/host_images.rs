//! Host tests of image files (the `std` feature): what the `disk` tool
//! relies on after a crash. An image whose last journal transaction is not
//! yet in place (a process killed right after the commit) must open
//! read-only with the transaction replayed in RAM, and fsck must report it;
//! an import interrupted anywhere must leave no file or the whole file;
//! an image in use by one user is refused to another that would conflict.

mod common;

use std::path::PathBuf;

use tempfile::TempDir;

use common::{pattern, small_options};
use vmkfs::host;
use vmkfs::{
    BlockDevice, CrashPolicy, DeviceError, FaultDevice, FileDevice, IoKind, MemoryDevice, OpenMode,
    Problem, Store, UnflushedFate, check,
};

/// A scratch directory, removed when the guard is dropped.
fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("vmkfs-host-images-")
        .tempdir()
        .expect("scratch directory")
}

/// A device that, once armed, drops every in-place metadata write: the
/// journal transaction is written and flushed, its pages never reach their
/// homes — what a process killed right after a commit leaves behind.
struct LoseInPlaceWrites {
    inner: FileDevice,
    armed: bool,
}

impl BlockDevice for LoseInPlaceWrites {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError> {
        self.inner.read(offset, buffer, kind)
    }

    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError> {
        if self.armed && kind == IoKind::Metadata {
            return Ok(());
        }
        self.inner.write(offset, data, kind)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.inner.flush()
    }
}

/// An image holding `kept` (known contents) whose journal holds the creation
/// of `fresh`, not in place.
fn image_with_pending_journal(scratch: &TempDir) -> Vec<PathBuf> {
    let images = vec![scratch.path().join("store.img")];
    let mut store = host::format_image(&images, 2 << 20, &small_options(), false).unwrap();
    store.create("kept", 16 * 1024).unwrap();
    let handle = store.open("kept", OpenMode::ReadWrite).unwrap();
    store.write(handle, 0, &pattern(7, 0, 16 * 1024)).unwrap();
    store.close(handle).unwrap();
    store.unmount().unwrap();
    let device = FileDevice::open(&images[0], true).unwrap();
    let mut store = Store::mount(vec![LoseInPlaceWrites {
        inner: device,
        armed: false,
    }])
    .unwrap();
    store.devices_mut()[0].armed = true;
    store.create("fresh", 8192).unwrap();
    drop(store.into_devices());
    images
}

#[test]
fn a_read_only_mount_replays_the_journal_in_ram_and_writes_nothing() {
    let scratch = scratch();
    let images = image_with_pending_journal(&scratch);
    let before = std::fs::read(&images[0]).unwrap();
    let mut store = host::mount_image(&images, false).expect("read-only mount after a crash");
    assert!(store.is_read_only());
    let names: Vec<String> = store.list().into_iter().map(|file| file.name).collect();
    assert_eq!(names, ["kept", "fresh"]);
    assert_eq!(store.stat("fresh").unwrap().length, 8192);
    let handle = store.open("kept", OpenMode::ReadOnly).unwrap();
    let mut contents = vec![0u8; 16 * 1024];
    store.read(handle, 0, &mut contents).unwrap();
    assert_eq!(contents, pattern(7, 0, 16 * 1024));
    store.close(handle).unwrap();
    let handle = store.open("fresh", OpenMode::ReadOnly).unwrap();
    let mut contents = vec![1u8; 8192];
    store.read(handle, 0, &mut contents).unwrap();
    assert!(contents.iter().all(|&byte| byte == 0));
    store.close(handle).unwrap();
    // Changes are refused with the reason, not with a host I/O error.
    for refused in [
        store.create("other", 512).unwrap_err(),
        store.rename("kept", "moved").unwrap_err(),
        store.open("kept", OpenMode::ReadWrite).unwrap_err(),
    ] {
        assert_eq!(refused, vmkfs::StoreError::ReadOnly);
        assert!(refused.to_string().contains("read-only"), "{refused}");
    }
    store.unmount().unwrap();
    assert!(
        std::fs::read(&images[0]).unwrap() == before,
        "a read-only mount changed the image"
    );
}

#[test]
fn fsck_reports_a_journal_not_in_place_and_repair_replays_it() {
    let scratch = scratch();
    let images = image_with_pending_journal(&scratch);
    let mut devices = host::open_devices(&images, false).unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(
        matches!(
            report.problems[..],
            [Problem::JournalNotInPlace { pages }] if pages > 0
        ),
        "{report}"
    );
    assert!(!report.is_clean());
    let text = report.to_string();
    assert!(
        text.contains("not in place") && text.contains("repair"),
        "{text}"
    );
    // Closed first: the repair needs the image to itself.
    drop(devices);
    let mut devices = host::open_devices(&images, true).unwrap();
    let report = check(&mut devices, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.repaired.len(), 1, "{report}");
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
    drop(devices);
    let store = host::mount_image(&images, false).unwrap();
    assert_eq!(store.list().len(), 2);
}

#[test]
fn a_read_write_mount_replays_the_journal_in_place() {
    let scratch = scratch();
    let images = image_with_pending_journal(&scratch);
    host::mount_image(&images, true).unwrap().unmount().unwrap();
    let mut devices = host::open_devices(&images, false).unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
}

/// The disk `name` must be absent, or hold exactly `contents` then zeros to
/// its length.
fn absent_or_complete(
    store: &mut Store<MemoryDevice>,
    name: &str,
    contents: &[u8],
) -> Result<bool, String> {
    let Ok(info) = store.stat(name) else {
        return Ok(false);
    };
    let handle = store.open(name, OpenMode::ReadOnly).unwrap();
    let mut found = vec![0u8; info.length as usize];
    store.read(handle, 0, &mut found).unwrap();
    store.close(handle).unwrap();
    if found.len() < contents.len() || found[..contents.len()] != *contents {
        return Err(format!(
            "'{name}' exists with contents other than the source"
        ));
    }
    if found[contents.len()..].iter().any(|&byte| byte != 0) {
        return Err(format!(
            "'{name}' has bytes past the source that are not zero"
        ));
    }
    Ok(true)
}

#[test]
fn an_import_crashed_at_any_write_leaves_no_file_or_the_whole_file() {
    let scratch = scratch();
    let source = scratch.path().join("source.bin");
    let contents = pattern(3, 0, 40 * 1024 + 100);
    std::fs::write(&source, &contents).unwrap();
    let mut store = Store::format(vec![MemoryDevice::new(2 << 20)], &small_options()).unwrap();
    store.create("kept", 8192).unwrap();
    let image = store.unmount().unwrap().pop().unwrap();
    let import = |device: FaultDevice| {
        let mut store = Store::mount(vec![device]).unwrap();
        let result = host::import_file(&mut store, "imported", &source, None);
        (result, store.into_devices().pop().unwrap())
    };
    let (result, device) = import(FaultDevice::new(image.clone()));
    assert_eq!(result.unwrap().length, 41_472);
    let total = device.writes_issued();
    assert!(total > 10, "the import issues {total} writes");
    let mut complete = 0;
    for crash_point in 0..total {
        for fate in [UnflushedFate::KeepAll, UnflushedFate::DropAll] {
            let mut device = FaultDevice::new(image.clone());
            device.crash_at_write(crash_point, CrashPolicy::new(fate, crash_point));
            let (result, device) = import(device);
            assert!(result.is_err(), "write {crash_point} of {total} crashed");
            let mut store = Store::mount(vec![device.into_durable()]).unwrap();
            match absent_or_complete(&mut store, "imported", &contents) {
                Ok(present) => complete += usize::from(present),
                Err(message) => {
                    panic!("crash at write {crash_point} of {total} ({fate:?}): {message}")
                }
            }
            assert!(store.stat("kept").is_ok());
            let mut devices = store.unmount().unwrap();
            let report = check(&mut devices, false).unwrap();
            assert!(report.problems.is_empty(), "{report}");
        }
    }
    // Only a crash in the in-place writes after the final commit leaves the whole file.
    assert!(complete > 0 && complete < 2 * total as usize);
}

#[test]
fn a_failed_import_leaves_no_file() {
    let scratch = scratch();
    let mut store = Store::format(vec![MemoryDevice::new(2 << 20)], &small_options()).unwrap();
    let free = store.space().free_data_blocks;
    // A directory opens but cannot be read: the copy fails after the disk was made.
    let error = host::import_file(&mut store, "imported", scratch.path(), Some(8192)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&scratch.path().display().to_string()),
        "{error}"
    );
    assert!(store.stat("imported").is_err());
    assert_eq!(store.space().free_data_blocks, free);
    let mut devices = store.unmount().unwrap();
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
    let store = Store::mount(devices).unwrap();
    assert!(store.list().is_empty());
    assert_eq!(store.space().free_data_blocks, free);
}

#[test]
fn an_export_onto_the_image_itself_is_refused_and_changes_nothing() {
    let scratch = scratch();
    let images = vec![scratch.path().join("store.img")];
    let mut store = host::format_image(&images, 2 << 20, &small_options(), false).unwrap();
    store.create("disk", 8192).unwrap();
    store.unmount().unwrap();
    let before = std::fs::read(&images[0]).unwrap();
    let symbolic = scratch.path().join("symbolic.img");
    std::os::unix::fs::symlink(&images[0], &symbolic).unwrap();
    let hard = scratch.path().join("hard.img");
    std::fs::hard_link(&images[0], &hard).unwrap();
    let other_spelling = scratch.path().join(".").join("store.img");
    for target in [&images[0], &symbolic, &hard, &other_spelling] {
        let mut store = host::mount_image(&images, false).unwrap();
        let error = host::export_file(&mut store, "disk", target).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, host::HostError::TargetIsImage { device: 0, .. })
                && message.contains(&target.display().to_string())
                && message.contains("destroy the image"),
            "{message}"
        );
        drop(store);
        assert!(
            std::fs::read(&images[0]).unwrap() == before,
            "exporting onto {} changed the image",
            target.display()
        );
    }
    // A different file is written as before, replacing what it held.
    let target = scratch.path().join("disk.bin");
    std::fs::write(&target, vec![9u8; 20_000]).unwrap();
    let mut store = host::mount_image(&images, false).unwrap();
    assert_eq!(
        host::export_file(&mut store, "disk", &target).unwrap(),
        8192
    );
    assert_eq!(std::fs::read(&target).unwrap(), vec![0u8; 8192]);
}

#[test]
fn an_image_in_use_is_refused_to_a_conflicting_user() {
    let scratch = scratch();
    let images = vec![scratch.path().join("store.img")];
    host::format_image(&images, 2 << 20, &small_options(), false)
        .unwrap()
        .unmount()
        .unwrap();
    let in_use = |error: host::HostError, exclusive: bool| {
        let message = error.to_string();
        assert!(
            matches!(&error, host::HostError::InUse { path, exclusive: wanted }
                if *path == images[0] && *wanted == exclusive)
                && message.starts_with(&format!(
                    "image {} is in use by another disk command",
                    images[0].display()
                )),
            "{message}"
        );
    };
    // A writer excludes every other user, readers included, and mkfs.
    let writer = host::mount_image(&images, true).unwrap();
    in_use(host::mount_image(&images, true).err().unwrap(), true);
    in_use(host::mount_image(&images, false).err().unwrap(), false);
    in_use(host::open_devices(&images, false).err().unwrap(), false);
    in_use(
        host::format_image(&images, 2 << 20, &small_options(), true)
            .err()
            .unwrap(),
        true,
    );
    writer.unmount().unwrap();
    // Readers share the image; a writer waits for none of them: it is refused.
    let first = host::mount_image(&images, false).unwrap();
    let second = host::mount_image(&images, false).unwrap();
    in_use(host::mount_image(&images, true).err().unwrap(), true);
    in_use(host::open_devices(&images, true).err().unwrap(), true);
    drop((first, second));
    // The refused mkfs truncated nothing: the file system is still there.
    let mut store = host::mount_image(&images, true).unwrap();
    store.create("after", 4096).unwrap();
    store.unmount().unwrap();
}

#[test]
fn one_file_listed_twice_is_named_not_taken_for_another_user() {
    let scratch = scratch();
    let image = scratch.path().join("store.img");
    let other_spelling = scratch.path().join(".").join("store.img");
    let twice = vec![image.clone(), other_spelling.clone()];
    let listed_twice = |error: host::HostError| {
        let message = error.to_string();
        assert!(
            matches!(
                error,
                host::HostError::ListedTwice {
                    first: 0,
                    second: 1,
                    ..
                }
            ) && message.starts_with(&format!(
                "{} is listed twice, as device 0 and as device 1",
                other_spelling.display()
            )),
            "{message}"
        );
    };
    // mkfs, with or without --force: the second path is the file it just made.
    for force in [false, true] {
        listed_twice(
            host::format_image(&twice, 2 << 20, &small_options(), force)
                .err()
                .unwrap(),
        );
        assert!(!image.exists(), "the failed mkfs left its file behind");
    }
    host::format_image(
        std::slice::from_ref(&image),
        2 << 20,
        &small_options(),
        false,
    )
    .unwrap()
    .unmount()
    .unwrap();
    for writable in [false, true] {
        listed_twice(host::open_devices(&twice, writable).err().unwrap());
        listed_twice(host::mount_image(&twice, writable).err().unwrap());
    }
}
