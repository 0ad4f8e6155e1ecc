//! Host tests of image files (the `std` feature): what the `disk` tool
//! relies on after a crash. An image whose last journal transaction is not
//! yet in place (a process killed right after the commit) must open
//! read-only with the transaction replayed in RAM, and fsck must report it.

mod common;

use std::path::PathBuf;

use common::{pattern, small_options};
use vmkfs::host;
use vmkfs::{BlockDevice, DeviceError, FileDevice, IoKind, OpenMode, Problem, Store, check};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("vmkfs-host-images-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch directory");
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
fn image_with_pending_journal(scratch: &Scratch) -> Vec<PathBuf> {
    let images = vec![scratch.path("store.img")];
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
    let scratch = Scratch::new("read-only");
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
    let scratch = Scratch::new("fsck-journal");
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
    let mut devices = host::open_devices(&images, true).unwrap();
    let report = check(&mut devices, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.repaired.len(), 1, "{report}");
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
    let store = host::mount_image(&images, false).unwrap();
    assert_eq!(store.list().len(), 2);
}

#[test]
fn a_read_write_mount_replays_the_journal_in_place() {
    let scratch = Scratch::new("read-write");
    let images = image_with_pending_journal(&scratch);
    host::mount_image(&images, true).unwrap().unmount().unwrap();
    let mut devices = host::open_devices(&images, false).unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
}
