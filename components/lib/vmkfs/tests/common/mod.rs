//! Helpers shared by the integration tests: small formats, data patterns.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use vmkfs::checksum::crc32c;
use vmkfs::format::{Layout, MAGIC, PAGE_SIZE, page_checksum};
use vmkfs::{BlockDevice, CountingDevice, FormatOptions, MemoryDevice, Store};

/// A small format for tests: 4 KiB blocks, 16 files, files up to 8 pointer blocks.
pub fn small_options() -> FormatOptions {
    FormatOptions {
        block_size: 4096,
        max_files: 16,
        pointer_blocks_per_file: 8,
        file_system: *b"vmkfs-test-image",
        ..FormatOptions::default()
    }
}

pub fn new_store(size: u64) -> Store<CountingDevice<MemoryDevice>> {
    Store::format(
        vec![CountingDevice::new(MemoryDevice::new(size))],
        &small_options(),
    )
    .expect("mkfs")
}

pub fn new_store_with(size: u64, options: &FormatOptions) -> Store<MemoryDevice> {
    Store::format(vec![MemoryDevice::new(size)], options).expect("mkfs")
}

/// Deterministic bytes for a (seed, offset) pair: distinguishable across writes.
pub fn pattern(seed: u64, offset: u64, length: usize) -> Vec<u8> {
    (0..length as u64)
        .map(|index| {
            let position = offset + index;
            let mixed = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (position / 8).wrapping_mul(0xBF58_476D_1CE4_E5B9))
                >> ((position % 8) * 8);
            (mixed as u8) | 1
        })
        .collect()
}

/// Remount through unmount (clean) and return the new store.
pub fn remount<D: BlockDevice>(store: Store<D>) -> Store<D> {
    let devices = store.unmount().expect("unmount");
    Store::mount(devices).expect("mount")
}

/// Byte offset where device 0's data region starts (the metadata lies before it).
pub fn metadata_end(layout: &Layout) -> usize {
    layout.devices[0].data_start as usize
}

/// Recomputes every checksum: pointer-block checksums in descriptors, page
/// checksums of headed pages, the journal's payload checksum.
pub fn reseal(image: &mut [u8], layout: &Layout) {
    let shared = &layout.shared;
    let device = &layout.devices[0];
    for slot in 0..u64::from(shared.max_files) {
        let page = ((shared.table_start + slot) as usize) * PAGE_SIZE;
        for entry in 0..480usize {
            let at = page + 256 + entry * 8;
            let pointer = u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
            if pointer != u32::MAX
                && pointer >> 26 == 0
                && (pointer & ((1 << 26) - 1)) < device.pointer_slots
            {
                let block = ((device.pointer_start + u64::from(pointer & ((1 << 26) - 1)))
                    as usize)
                    * PAGE_SIZE;
                let checksum = crc32c(&image[block..block + PAGE_SIZE]);
                image[at + 4..at + 8].copy_from_slice(&checksum.to_le_bytes());
            }
        }
    }
    let journal = (shared.journal_start as usize) * PAGE_SIZE;
    let entries =
        u32::from_le_bytes(image[journal + 48..journal + 52].try_into().unwrap()) as usize;
    let address_pages =
        u32::from_le_bytes(image[journal + 52..journal + 56].try_into().unwrap()) as usize;
    let payload = (address_pages + entries) * PAGE_SIZE;
    if entries <= shared.journal_entries as usize && journal + PAGE_SIZE + payload <= image.len() {
        let checksum = crc32c(&image[journal + PAGE_SIZE..journal + PAGE_SIZE + payload]);
        image[journal + 56..journal + 60].copy_from_slice(&checksum.to_le_bytes());
    }
    for page in image[..metadata_end(layout)].chunks_exact_mut(PAGE_SIZE) {
        if u32::from_le_bytes(page[..4].try_into().unwrap()) == MAGIC {
            let page: &mut [u8; PAGE_SIZE] = page.try_into().unwrap();
            let checksum = page_checksum(page);
            page[8..12].copy_from_slice(&checksum.to_le_bytes());
        }
    }
}
