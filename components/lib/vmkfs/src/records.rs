//! The in-RAM form of the metadata and its encoding into pages.
//!
//! Purpose: after mount every piece of metadata lives here: one [`Slot`] per
//! file-descriptor-table entry (with the file's pointer blocks expanded into a
//! flat vector of block pointers) and one [`Bitmap`] per allocation map. The
//! encoders produce exactly the pages the loader decodes.
//!
//! Invariants: a [`FileRecord`] has `blocks.len() == block_count(length)` and
//! `pointer_blocks.len() == blocks.len().div_ceil(1024)`; a disk file has no
//! null block pointer and no null pointer-block pointer; a redo log may have
//! both (holes read through to its parent). Bits past a bitmap's length are
//! zero.
//!
//! Callers: the store, the loader and the checker.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use zerocopy::{FromZeros, IntoBytes};

use crate::checksum::crc32c;
use crate::format::{
    DescriptorPage, HEADER_SIZE, KIND_DISK, KIND_REDO_LOG, MAP_BITS_PER_PAGE, MapPage,
    NAME_CAPACITY, NO_PARENT, PAGE_SIZE, POINTERS_PER_BLOCK, Page, PageAddress, PageKind, Pointer,
    STATUS_ALLOCATED, STATUS_FREE, seal_page,
};

/// What a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A virtual disk: every block allocated at creation.
    Disk,
    /// A copy-on-write redo log over its parent: blocks appear as they are written.
    RedoLog,
}

impl FileKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Disk => KIND_DISK,
            Self::RedoLog => KIND_REDO_LOG,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            KIND_DISK => Some(Self::Disk),
            KIND_REDO_LOG => Some(Self::RedoLog),
            _ => None,
        }
    }
}

/// One file's metadata, as held in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileRecord {
    pub name: String,
    pub kind: FileKind,
    pub length: u64,
    pub parent: Option<u32>,
    /// Where each pointer block lives (null: none yet, redo logs only).
    pub pointer_blocks: Vec<Pointer>,
    /// Every data-block pointer of the file, in file order.
    pub blocks: Vec<Pointer>,
}

/// Data blocks needed for `length` bytes.
pub(crate) fn block_count(length: u64, block_size: u32) -> u64 {
    length.div_ceil(u64::from(block_size))
}

/// Pointer blocks needed for `blocks` data blocks.
pub(crate) fn pointer_block_count(blocks: u64) -> u64 {
    blocks.div_ceil(POINTERS_PER_BLOCK as u64)
}

impl FileRecord {
    /// The 4 KiB pointer block number `index`, as on disk.
    pub fn encode_pointer_block(&self, index: usize) -> Page {
        let mut page = [0xFFu8; PAGE_SIZE];
        let start = index * POINTERS_PER_BLOCK;
        let end = (start + POINTERS_PER_BLOCK).min(self.blocks.len());
        for (position, pointer) in self.blocks[start..end].iter().enumerate() {
            page[position * 4..position * 4 + 4].copy_from_slice(&pointer.raw().to_le_bytes());
        }
        page
    }

    /// Blocks of this file that it owns (not holes).
    pub fn allocated_blocks(&self) -> u64 {
        self.blocks
            .iter()
            .filter(|pointer| !pointer.is_null())
            .count() as u64
    }
}

/// Decodes a pointer block into its 1024 pointers.
pub(crate) fn decode_pointer_block(page: &Page) -> impl Iterator<Item = Pointer> + '_ {
    page.chunks_exact(4).map(|bytes| {
        Pointer::from_raw(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    })
}

/// A file-descriptor-table slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Free,
    File(FileRecord),
    /// Unreadable on disk (only while checking; mount refuses such images).
    Damaged,
}

impl Slot {
    pub fn file(&self) -> Option<&FileRecord> {
        match self {
            Self::File(file) => Some(file),
            _ => None,
        }
    }
}

/// Encodes a descriptor page for `slot`; the pointer-block checksums are
/// computed from the file's pointer blocks in RAM.
pub(crate) fn encode_descriptor(
    slot: &Slot,
    address: PageAddress,
    file_system: [u8; 16],
    sequence: u64,
) -> Page {
    let mut descriptor = DescriptorPage::new_zeroed();
    for entry in &mut descriptor.entries {
        entry.pointer.set(Pointer::NULL.raw());
    }
    descriptor.parent.set(NO_PARENT);
    descriptor.status = STATUS_FREE;
    if let Slot::File(file) = slot {
        descriptor.status = STATUS_ALLOCATED;
        descriptor.kind = file.kind.code();
        descriptor.name_length = file.name.len() as u8;
        descriptor.name[..file.name.len()].copy_from_slice(file.name.as_bytes());
        descriptor.parent.set(file.parent.unwrap_or(NO_PARENT));
        descriptor.length.set(file.length);
        descriptor
            .pointer_block_count
            .set(file.pointer_blocks.len() as u32);
        for (index, pointer) in file.pointer_blocks.iter().enumerate() {
            descriptor.entries[index].pointer.set(pointer.raw());
            if !pointer.is_null() {
                descriptor.entries[index]
                    .checksum
                    .set(crc32c(&file.encode_pointer_block(index)));
            }
        }
    }
    let mut page = [0u8; PAGE_SIZE];
    page.copy_from_slice(descriptor.as_bytes());
    seal_page(
        &mut page,
        PageKind::Descriptor,
        address,
        file_system,
        sequence,
    );
    page
}

/// Checks a file name: 1 to 184 bytes of UTF-8, no NUL, no '/', no control characters.
pub(crate) fn name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_CAPACITY
        && !name
            .chars()
            .any(|character| character == '/' || character.is_control())
}

/// An allocation bitmap held in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    length: u32,
    set_count: u32,
}

impl Bitmap {
    pub fn new(length: u32) -> Self {
        Self {
            words: vec![0; (length as usize).div_ceil(64)],
            length,
            set_count: 0,
        }
    }

    pub fn length(&self) -> u32 {
        self.length
    }

    pub fn free_count(&self) -> u32 {
        self.length - self.set_count
    }

    pub fn get(&self, index: u32) -> bool {
        self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    pub fn set(&mut self, index: u32) {
        if !self.get(index) {
            self.words[(index / 64) as usize] |= 1 << (index % 64);
            self.set_count += 1;
        }
    }

    pub fn clear(&mut self, index: u32) {
        if self.get(index) {
            self.words[(index / 64) as usize] &= !(1 << (index % 64));
            self.set_count -= 1;
        }
    }

    /// The first clear bit at or after `start`, wrapping around.
    pub fn find_clear(&self, start: u32) -> Option<u32> {
        if self.free_count() == 0 {
            return None;
        }
        let start = if start >= self.length { 0 } else { start };
        self.find_clear_in(start, self.length)
            .or_else(|| self.find_clear_in(0, start))
    }

    fn find_clear_in(&self, start: u32, end: u32) -> Option<u32> {
        let mut index = start;
        while index < end {
            let word = self.words[(index / 64) as usize] | ((1u64 << (index % 64)) - 1);
            if word == u64::MAX {
                index = (index / 64 + 1) * 64;
                continue;
            }
            let found = (index / 64) * 64 + (!word).trailing_zeros();
            return (found < end).then_some(found);
        }
        None
    }

    /// Every index where the two bitmaps differ, with its value in `self`.
    pub fn differences<'a>(&'a self, other: &'a Bitmap) -> impl Iterator<Item = (u32, bool)> + 'a {
        self.words.iter().zip(&other.words).enumerate().flat_map(
            |(word_index, (&mine, &theirs))| {
                let mut difference = mine ^ theirs;
                core::iter::from_fn(move || {
                    if difference == 0 {
                        return None;
                    }
                    let bit = difference.trailing_zeros();
                    difference &= difference - 1;
                    Some((word_index as u32 * 64 + bit, mine & (1 << bit) != 0))
                })
            },
        )
    }

    /// Map page `page` of this bitmap, sealed.
    pub fn encode_page(
        &self,
        page: u32,
        kind: PageKind,
        address: PageAddress,
        file_system: [u8; 16],
        sequence: u64,
    ) -> Page {
        let mut map = MapPage::new_zeroed();
        let first = page * MAP_BITS_PER_PAGE;
        let last = (first + MAP_BITS_PER_PAGE).min(self.length);
        for index in first..last {
            if self.get(index) {
                let offset = (index - first) as usize;
                map.bits[offset / 8] |= 1 << (offset % 8);
            }
        }
        let mut bytes = [0u8; PAGE_SIZE];
        bytes.copy_from_slice(map.as_bytes());
        seal_page(&mut bytes, kind, address, file_system, sequence);
        bytes
    }

    /// Loads map page `page` from a verified page; returns false if bits past
    /// the end of the map are set.
    pub fn decode_page(&mut self, page: u32, bytes: &Page) -> bool {
        let first = page * MAP_BITS_PER_PAGE;
        let mut clean = true;
        for offset in 0..MAP_BITS_PER_PAGE {
            let byte = bytes[HEADER_SIZE + (offset / 8) as usize];
            if byte == 0 {
                continue;
            }
            if byte & (1 << (offset % 8)) != 0 {
                let index = first + offset;
                if index < self.length {
                    self.set(index);
                } else {
                    clean = false;
                }
            }
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{PageAddress, verify_page};

    #[test]
    fn bitmap_set_clear_find() {
        let mut bitmap = Bitmap::new(200);
        assert_eq!(bitmap.find_clear(0), Some(0));
        for index in 0..130 {
            bitmap.set(index);
        }
        bitmap.set(5);
        assert_eq!(bitmap.free_count(), 70);
        assert_eq!(bitmap.find_clear(0), Some(130));
        assert_eq!(bitmap.find_clear(199), Some(199));
        bitmap.set(199);
        assert_eq!(bitmap.find_clear(199), Some(130));
        bitmap.clear(64);
        assert_eq!(bitmap.find_clear(0), Some(64));
        for index in 0..200 {
            bitmap.set(index);
        }
        assert_eq!(bitmap.find_clear(7), None);
        assert_eq!(bitmap.free_count(), 0);
    }

    #[test]
    fn bitmap_pages_round_trip() {
        let length = MAP_BITS_PER_PAGE + 100;
        let mut bitmap = Bitmap::new(length);
        for index in [
            0,
            7,
            8,
            4000,
            MAP_BITS_PER_PAGE - 1,
            MAP_BITS_PER_PAGE,
            length - 1,
        ] {
            bitmap.set(index);
        }
        let mut copy = Bitmap::new(length);
        for page in 0..2 {
            let address = PageAddress::new(0, 10 + u64::from(page));
            let bytes = bitmap.encode_page(page, PageKind::DataMap, address, [1; 16], 3);
            verify_page(&bytes, PageKind::DataMap, address, Some([1; 16])).unwrap();
            assert!(copy.decode_page(page, &bytes));
        }
        assert_eq!(copy, bitmap);
        assert_eq!(bitmap.differences(&copy).count(), 0);
        copy.clear(7);
        copy.set(9);
        let differences: Vec<_> = bitmap.differences(&copy).collect();
        assert_eq!(differences, vec![(7, true), (9, false)]);
    }

    #[test]
    fn names() {
        assert!(name_is_valid("disk-0.vmdk"));
        assert!(!name_is_valid(""));
        assert!(!name_is_valid("a/b"));
        assert!(!name_is_valid("a\0b"));
        assert!(!name_is_valid(&"x".repeat(NAME_CAPACITY + 1)));
    }
}
