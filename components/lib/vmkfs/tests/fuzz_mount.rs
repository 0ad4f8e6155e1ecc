//! Mount fuzzing: proptest over mutated images. Whatever the bytes, mount and
//! fsck return (never panic); an image mount accepts is consistent (fsck finds
//! nothing) and usable; an image fsck repairs to clean mounts.
//!
//! Random flips mostly die at a checksum, so one strategy also re-seals every
//! checksum after mutating (a hostile image rather than a damaged one), which
//! drives the mutations into the field and cross-structure validation.

mod common;

use common::{metadata_end, pattern, reseal, small_options};
use proptest::prelude::*;
use vmkfs::format::{Layout, PAGE_SIZE};
use vmkfs::{MemoryDevice, OpenMode, Store, check};

struct Image {
    bytes: Vec<u8>,
    layout: Layout,
}

/// A small image with disks, a written redo log over a stacked log, and a
/// complete transaction in the journal.
fn base_image() -> Image {
    let mut store =
        Store::format(vec![MemoryDevice::new(1 << 20)], &small_options()).expect("mkfs");
    store.create("disk", 40 * 1024).unwrap();
    store.create("other", 8 * 1024).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    store.write(handle, 0, &pattern(1, 0, 40 * 1024)).unwrap();
    store.close(handle).unwrap();
    store.snapshot("disk", "log").unwrap();
    store.snapshot("log", "log2").unwrap();
    let handle = store.open("log2", OpenMode::ReadWrite).unwrap();
    store.write(handle, 4096, &pattern(2, 0, 8192)).unwrap();
    store.close(handle).unwrap();
    let layout = store.layout().clone();
    let bytes = store.unmount().unwrap().pop().unwrap().into_bytes();
    Image { bytes, layout }
}

/// Mount must not panic; if it accepts, the file system must be consistent and usable.
fn exercise(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let device = MemoryDevice::from_bytes(bytes.clone());
    if let Ok(mut store) = Store::mount(vec![device]) {
        for info in store.list() {
            let handle = store
                .open(&info.name, OpenMode::ReadOnly)
                .expect("open after mount");
            let mut buffer = vec![0u8; info.length as usize];
            store
                .read(handle, 0, &mut buffer)
                .expect("read after mount");
            store.close(handle).expect("close");
        }
        let _ = store.create("fresh", 4096);
        let mut devices = store.unmount().expect("unmount");
        let report = check(&mut devices, false).expect("fsck of a mountable image");
        prop_assert!(
            report.problems.is_empty(),
            "mount accepted what fsck rejects:\n{}",
            report
        );
        Store::mount(devices).expect("remount");
    }
    // fsck must not panic either; after a repair that claims success, mount must work.
    let mut devices = vec![MemoryDevice::from_bytes(bytes)];
    if let Ok(report) = check(&mut devices, true)
        && report.is_clean()
    {
        prop_assert!(
            Store::mount(devices).is_ok(),
            "fsck said clean, mount refused:\n{}",
            report
        );
    }
    Ok(())
}

fn mutations() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn mount_survives_random_damage(mutations in mutations()) {
        let image = base_image();
        let mut bytes = image.bytes.clone();
        let end = metadata_end(&image.layout);
        for (position, value) in mutations {
            bytes[position % end] ^= value | 1;
        }
        exercise(bytes)?;
    }

    #[test]
    fn mount_survives_hostile_resealed_images(mutations in mutations(), page_choice in any::<usize>()) {
        let image = base_image();
        let mut bytes = image.bytes.clone();
        let pages = metadata_end(&image.layout) / PAGE_SIZE;
        // Concentrate on one page's fields (skip the checksum, which is recomputed).
        let page = page_choice % pages;
        for (position, value) in mutations {
            let offset = 12 + position % (PAGE_SIZE - 12);
            bytes[page * PAGE_SIZE + offset] = value;
        }
        reseal(&mut bytes, &image.layout);
        exercise(bytes)?;
    }

    #[test]
    fn mount_survives_resealed_field_values(field in 0usize..120, value in any::<u32>(), page_choice in any::<usize>()) {
        // Overwrite one aligned 32-bit field of a header or structure with an arbitrary value.
        let image = base_image();
        let mut bytes = image.bytes.clone();
        let pages = metadata_end(&image.layout) / PAGE_SIZE;
        let page = page_choice % pages;
        let offset = page * PAGE_SIZE + 12 + field * 4;
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        reseal(&mut bytes, &image.layout);
        exercise(bytes)?;
    }

    #[test]
    fn mount_survives_truncated_and_garbage_images(length in 0usize..(1 << 20), seed in any::<u64>()) {
        let image = base_image();
        let mut bytes = image.bytes.clone();
        bytes.truncate(length);
        exercise(bytes)?;
        let garbage = pattern(seed, 0, 64 * 1024);
        exercise(garbage)?;
    }
}

#[test]
fn the_base_image_is_clean_and_reseal_is_neutral() {
    let image = base_image();
    let mut bytes = image.bytes.clone();
    reseal(&mut bytes, &image.layout);
    assert!(
        bytes == image.bytes,
        "resealing an intact image changes nothing"
    );
    let mut devices = vec![MemoryDevice::from_bytes(bytes)];
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
}
