//! The on-disk format: constants, page layouts, pointers and the layout
//! computation used by `mkfs` and re-checked at mount.
//!
//! Purpose: the single place that knows where every byte lives. Everything is
//! little-endian and addressed in 4 KiB metadata pages. Each device starts with
//! two copies of its superblock (the file-system descriptor); device 0 then
//! holds the journal and the file-descriptor table; every device holds its
//! allocation maps (one for pointer-block slots, one for data blocks), its
//! pointer-block region and, aligned to the block size, its data blocks.
//!
//! Invariants: every metadata page except a pointer block starts with a
//! [`PageHeader`] carrying a magic, the format version, the page kind, a
//! CRC-32C of the page, the file-system identifier and the page's own address,
//! so stale, misdirected and torn pages are all detected. A pointer block is
//! exactly 1024 four-byte pointers; its CRC-32C lives next to the pointer to it
//! in the file descriptor. [`Layout::compute`] is the only producer of a
//! layout and [`Layout::validate`] accepts exactly what it produces.
//!
//! Callers: the store (mkfs, mount, commit), the journal, the checker. The
//! byte-level table is in `docs/VMKFS.md`.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::checksum::Crc32c;

/// Size of every metadata page, and of a pointer block.
pub const PAGE_SIZE: usize = 4096;
/// The format version written by this code; mount refuses any other.
pub const FORMAT_VERSION: u16 = 1;
/// "VMKF", the magic of every headed page.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VMKF");
/// Four-byte pointers in one pointer block.
pub const POINTERS_PER_BLOCK: usize = 1024;
/// Entries in a file descriptor's pointer-block array.
pub const MAX_POINTER_BLOCKS_PER_FILE: u32 = 480;
/// Devices a file system may span (six bits of device number in a pointer).
pub const MAX_DEVICES: u32 = 64;
/// Smallest data block (for tests and small images).
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Largest data block.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// The default data block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;
/// Longest file name in bytes.
pub const NAME_CAPACITY: usize = 184;
/// Bytes of the common page header.
pub const HEADER_SIZE: usize = 48;
/// Allocation bits in one map page.
pub const MAP_BITS_PER_PAGE: u32 = ((PAGE_SIZE - HEADER_SIZE) * 8) as u32;
/// Bits of block number in a pointer.
pub const BLOCK_BITS: u32 = 26;
/// Most data blocks (or pointer-block slots) one device may have.
pub const MAX_BLOCKS_PER_DEVICE: u32 = (1 << BLOCK_BITS) - 2;
/// Most file descriptors a file system may have.
pub const MAX_FILES: u32 = 4096;
/// Pages at the start of every device holding the superblock and its backup.
pub const SUPERBLOCK_PAGES: u64 = 2;
/// Page index of the journal on device 0.
pub const JOURNAL_START: u64 = SUPERBLOCK_PAGES;

/// What a headed page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum PageKind {
    Superblock = 1,
    JournalHeader = 2,
    Descriptor = 3,
    PointerMap = 4,
    DataMap = 5,
}

impl PageKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Superblock => "superblock",
            Self::JournalHeader => "journal header",
            Self::Descriptor => "file descriptor",
            Self::PointerMap => "pointer-block allocation map",
            Self::DataMap => "data-block allocation map",
        }
    }
}

/// Where a metadata page lives: a device and a page index on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageAddress {
    pub device: u32,
    pub page: u64,
}

impl PageAddress {
    pub const fn new(device: u32, page: u64) -> Self {
        Self { device, page }
    }

    /// The 64-bit encoding used in page headers and journal address lists.
    pub fn encode(self) -> u64 {
        (u64::from(self.device) << 56) | self.page
    }

    pub fn decode(raw: u64) -> Self {
        Self {
            device: (raw >> 56) as u32,
            page: raw & ((1 << 56) - 1),
        }
    }

    pub fn byte_offset(self) -> u64 {
        self.page * PAGE_SIZE as u64
    }
}

impl fmt::Display for PageAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "page {} of device {}", self.page, self.device)
    }
}

/// A four-byte (disk, block) pointer: six bits of device, 26 bits of block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pointer(u32);

impl Pointer {
    /// "No block here": a hole in a redo log, or an unused entry.
    pub const NULL: Self = Self(u32::MAX);

    pub fn new(device: u32, block: u32) -> Self {
        debug_assert!(device < MAX_DEVICES && block <= MAX_BLOCKS_PER_DEVICE);
        Self((device << BLOCK_BITS) | block)
    }

    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u32 {
        self.0
    }

    pub const fn is_null(self) -> bool {
        self.0 == u32::MAX
    }

    pub const fn device(self) -> u32 {
        self.0 >> BLOCK_BITS
    }

    pub const fn block(self) -> u32 {
        self.0 & ((1 << BLOCK_BITS) - 1)
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() {
            write!(formatter, "(none)")
        } else {
            write!(
                formatter,
                "block {} of device {}",
                self.block(),
                self.device()
            )
        }
    }
}

/// The header at the start of every metadata page except pointer blocks.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct PageHeader {
    pub magic: U32,
    pub version: U16,
    pub kind: U16,
    pub checksum: U32,
    pub reserved: U32,
    pub file_system: [u8; 16],
    pub address: U64,
    pub sequence: U64,
}

/// The file-system descriptor (superblock), one per device, plus a backup.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SuperblockPage {
    pub header: PageHeader,
    // File-system-wide fields, identical on every device.
    pub block_size: U32,
    pub device_count: U32,
    pub pointer_blocks_per_file: U32,
    pub max_files: U32,
    pub journal_entries: U32,
    pub journal_pages: U32,
    pub journal_start: U64,
    pub table_start: U64,
    pub label: [u8; 32],
    // This device's fields.
    pub device_index: U32,
    pub pointer_slots: U32,
    pub data_blocks: U32,
    pub pointer_map_pages: U32,
    pub data_map_pages: U32,
    pub reserved: U32,
    pub map_start: U64,
    pub pointer_start: U64,
    pub data_start: U64,
    pub device_size: U64,
    pub padding: [u8; PAGE_SIZE - 176],
}

/// One entry of a descriptor's pointer-block array.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct PointerBlockEntry {
    /// Where the pointer block is (device, pointer-block slot), or null.
    pub pointer: U32,
    /// CRC-32C of the 4 KiB pointer block.
    pub checksum: U32,
}

/// Descriptor status: the slot is free.
pub const STATUS_FREE: u8 = 0;
/// Descriptor status: the slot holds a file.
pub const STATUS_ALLOCATED: u8 = 1;
/// File kind: a virtual disk, every block preallocated.
pub const KIND_DISK: u8 = 1;
/// File kind: a copy-on-write redo log over a parent file.
pub const KIND_REDO_LOG: u8 = 2;
/// "No parent" in a descriptor.
pub const NO_PARENT: u32 = u32::MAX;

/// A file descriptor: one page per file-table slot.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DescriptorPage {
    pub header: PageHeader,
    pub status: u8,
    pub kind: u8,
    pub name_length: u8,
    pub reserved: u8,
    pub parent: U32,
    pub length: U64,
    pub pointer_block_count: U32,
    pub reserved_two: U32,
    pub name: [u8; NAME_CAPACITY],
    pub entries: [PointerBlockEntry; MAX_POINTER_BLOCKS_PER_FILE as usize],
}

/// An allocation-map page: one bit per pointer-block slot or data block.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MapPage {
    pub header: PageHeader,
    pub bits: [u8; PAGE_SIZE - HEADER_SIZE],
}

/// The first page of a journal transaction.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct JournalHeaderPage {
    pub header: PageHeader,
    /// Pages in the transaction (images), each named in the address list.
    pub entry_count: U32,
    /// Pages of address list following this header.
    pub address_pages: U32,
    /// CRC-32C over the address pages and the page images.
    pub payload_checksum: U32,
    pub reserved: U32,
    pub padding: [u8; PAGE_SIZE - HEADER_SIZE - 16],
}

const _: () = assert!(size_of::<PageHeader>() == HEADER_SIZE);
const _: () = assert!(size_of::<SuperblockPage>() == PAGE_SIZE);
const _: () = assert!(size_of::<DescriptorPage>() == PAGE_SIZE);
const _: () = assert!(size_of::<MapPage>() == PAGE_SIZE);
const _: () = assert!(size_of::<JournalHeaderPage>() == PAGE_SIZE);

/// A metadata page buffer.
pub type Page = [u8; PAGE_SIZE];

/// Why a headed page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFault {
    Magic { found: u32 },
    Version { found: u16 },
    Kind { expected: PageKind, found: u16 },
    Checksum { stored: u32, computed: u32 },
    FileSystem,
    Address { found: PageAddress },
}

impl fmt::Display for PageFault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic { found } => {
                write!(formatter, "bad magic {found:#010x} (not a VMKFS page)")
            }
            Self::Version { found } => {
                write!(
                    formatter,
                    "format version {found}, this code reads version {FORMAT_VERSION}"
                )
            }
            Self::Kind { expected, found } => write!(
                formatter,
                "page kind {found}, expected a {}",
                expected.name()
            ),
            Self::Checksum { stored, computed } => {
                write!(
                    formatter,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Self::FileSystem => write!(formatter, "the page belongs to another file system"),
            Self::Address { found } => {
                write!(formatter, "the page says it is {found} (misdirected write)")
            }
        }
    }
}

impl core::error::Error for PageFault {}

/// CRC-32C of a headed page with its checksum field taken as zero.
pub fn page_checksum(page: &Page) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(&page[..8]);
    crc.update(&[0; 4]);
    crc.update(&page[12..]);
    crc.finish()
}

/// Fills in the header of `page` and seals it with its checksum.
pub fn seal_page(
    page: &mut Page,
    kind: PageKind,
    address: PageAddress,
    file_system: [u8; 16],
    sequence: u64,
) {
    let header = PageHeader {
        magic: U32::new(MAGIC),
        version: U16::new(FORMAT_VERSION),
        kind: U16::new(kind as u16),
        checksum: U32::new(0),
        reserved: U32::new(0),
        file_system,
        address: U64::new(address.encode()),
        sequence: U64::new(sequence),
    };
    page[..HEADER_SIZE].copy_from_slice(header.as_bytes());
    let checksum = page_checksum(page);
    page[8..12].copy_from_slice(&checksum.to_le_bytes());
}

/// Checks a headed page: magic, version, kind, checksum and (when given) the
/// file system it belongs to, and its address.
pub fn verify_page(
    page: &Page,
    kind: PageKind,
    address: PageAddress,
    file_system: Option<[u8; 16]>,
) -> Result<PageHeader, PageFault> {
    let Ok((header, _)) = PageHeader::read_from_prefix(page) else {
        unreachable!("a page is longer than its header")
    };
    if header.magic.get() != MAGIC {
        return Err(PageFault::Magic {
            found: header.magic.get(),
        });
    }
    let computed = page_checksum(page);
    if header.checksum.get() != computed {
        return Err(PageFault::Checksum {
            stored: header.checksum.get(),
            computed,
        });
    }
    if header.version.get() != FORMAT_VERSION {
        return Err(PageFault::Version {
            found: header.version.get(),
        });
    }
    if header.kind.get() != kind as u16 {
        return Err(PageFault::Kind {
            expected: kind,
            found: header.kind.get(),
        });
    }
    if let Some(file_system) = file_system
        && header.file_system != file_system
    {
        return Err(PageFault::FileSystem);
    }
    let found = PageAddress::decode(header.address.get());
    if found != address {
        return Err(PageFault::Address { found });
    }
    Ok(header)
}

/// Parameters chosen at mkfs that shape the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatOptions {
    /// Data block size in bytes: a power of two from 4 KiB to 64 MiB.
    pub block_size: u32,
    /// File-descriptor table slots.
    pub max_files: u32,
    /// Pointer-block entries per descriptor (bounds the largest file).
    pub pointer_blocks_per_file: u32,
    /// Pointer-block slots per device; `None` picks one from the device size.
    pub pointer_slots: Option<u32>,
    /// Identifies this file system; pages of any other are refused.
    pub file_system: [u8; 16],
    pub label: [u8; 32],
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            max_files: 256,
            pointer_blocks_per_file: MAX_POINTER_BLOCKS_PER_FILE,
            pointer_slots: None,
            file_system: *b"VMKFS-default-id",
            label: [0; 32],
        }
    }
}

/// Geometry shared by all devices of a file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedGeometry {
    pub file_system: [u8; 16],
    pub label: [u8; 32],
    pub block_size: u32,
    pub device_count: u32,
    pub pointer_blocks_per_file: u32,
    pub max_files: u32,
    pub journal_entries: u32,
    pub journal_pages: u32,
    pub journal_start: u64,
    pub table_start: u64,
}

/// Geometry of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceGeometry {
    pub device_index: u32,
    pub pointer_slots: u32,
    pub data_blocks: u32,
    pub pointer_map_pages: u32,
    pub data_map_pages: u32,
    pub map_start: u64,
    pub pointer_start: u64,
    /// Byte offset of data block 0 (a multiple of the block size).
    pub data_start: u64,
    /// Bytes of the device the file system uses.
    pub device_size: u64,
}

impl DeviceGeometry {
    pub fn pointer_map_address(&self, page: u32) -> PageAddress {
        PageAddress::new(self.device_index, self.map_start + u64::from(page))
    }

    pub fn data_map_address(&self, page: u32) -> PageAddress {
        PageAddress::new(
            self.device_index,
            self.map_start + u64::from(self.pointer_map_pages) + u64::from(page),
        )
    }

    pub fn pointer_block_address(&self, slot: u32) -> PageAddress {
        PageAddress::new(self.device_index, self.pointer_start + u64::from(slot))
    }
}

/// The whole layout: shared geometry plus one entry per device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shared: SharedGeometry,
    pub devices: alloc::vec::Vec<DeviceGeometry>,
}

/// Why a layout cannot be made or is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    BlockSize(u32),
    DeviceCount(u32),
    MaxFiles(u32),
    PointerBlocksPerFile(u32),
    DeviceTooSmall {
        device: u32,
        size: u64,
    },
    DeviceTooLarge {
        device: u32,
        blocks: u64,
    },
    PointerSlots {
        device: u32,
        slots: u32,
    },
    Mismatch {
        device: u32,
        field: &'static str,
        stored: u64,
        expected: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BlockSize(size) => write!(
                formatter,
                "block size {size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} bytes"
            ),
            Self::DeviceCount(count) => write!(
                formatter,
                "{count} devices; a file system spans 1 to {MAX_DEVICES}"
            ),
            Self::MaxFiles(count) => write!(
                formatter,
                "{count} file slots; allowed are 1 to {MAX_FILES}"
            ),
            Self::PointerBlocksPerFile(count) => write!(
                formatter,
                "{count} pointer blocks per file; allowed are 1 to {MAX_POINTER_BLOCKS_PER_FILE}"
            ),
            Self::DeviceTooSmall { device, size } => {
                write!(
                    formatter,
                    "device {device} ({size} bytes) is too small to hold the metadata and one data block"
                )
            }
            Self::DeviceTooLarge { device, blocks } => write!(
                formatter,
                "device {device} would hold {blocks} data blocks; a pointer addresses at most {MAX_BLOCKS_PER_DEVICE} (use a larger block size)"
            ),
            Self::PointerSlots { device, slots } => {
                write!(
                    formatter,
                    "device {device} asks for {slots} pointer-block slots; allowed are 1 to {MAX_BLOCKS_PER_DEVICE}"
                )
            }
            Self::Mismatch {
                device,
                field,
                stored,
                expected,
            } => write!(
                formatter,
                "device {device}: superblock field {field} is {stored}, the layout rules give {expected}"
            ),
        }
    }
}

impl core::error::Error for LayoutError {}

fn divide_round_up(value: u64, divisor: u64) -> u64 {
    value.div_ceil(divisor)
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// Journal pages needed for `entries` page images: header, address list, images.
pub fn journal_pages_for(entries: u32) -> u32 {
    1 + divide_round_up(u64::from(entries) * 8, PAGE_SIZE as u64) as u32 + entries
}

/// Largest transaction the store ever writes, for a file system of these sizes:
/// two descriptors, one file's pointer blocks, every map page, and slack.
pub fn journal_entries_for(pointer_blocks_per_file: u32, map_pages: u64) -> u64 {
    4 + u64::from(pointer_blocks_per_file) + map_pages
}

/// Default pointer-block slots for a device with room for `blocks` data blocks.
pub fn default_pointer_slots(blocks: u64, max_files: u32) -> u64 {
    (divide_round_up(blocks, POINTERS_PER_BLOCK as u64) + 2 * u64::from(max_files))
        .min(blocks)
        .max(1)
}

struct DevicePlan {
    map_start: u64,
    pointer_slots: u64,
    data_blocks: u64,
    pointer_map_pages: u64,
    data_map_pages: u64,
    pointer_start: u64,
    data_start: u64,
}

fn plan_device(
    size: u64,
    block_size: u64,
    map_start: u64,
    requested_slots: Option<u32>,
    max_files: u32,
) -> Option<DevicePlan> {
    // Shrink the data-block count until the metadata in front of the data fits.
    let mut blocks = size / block_size;
    loop {
        let pointer_slots = match requested_slots {
            Some(slots) => u64::from(slots),
            None => default_pointer_slots(blocks, max_files),
        };
        let pointer_map_pages = divide_round_up(pointer_slots, u64::from(MAP_BITS_PER_PAGE));
        let data_map_pages = divide_round_up(blocks, u64::from(MAP_BITS_PER_PAGE));
        let pointer_start = map_start + pointer_map_pages + data_map_pages;
        let data_start = align_up(
            (pointer_start + pointer_slots) * PAGE_SIZE as u64,
            block_size,
        );
        let fit = size.saturating_sub(data_start) / block_size;
        if fit >= blocks {
            if blocks == 0 {
                return None;
            }
            return Some(DevicePlan {
                map_start,
                pointer_slots,
                data_blocks: blocks,
                pointer_map_pages,
                data_map_pages,
                pointer_start,
                data_start,
            });
        }
        blocks = fit;
    }
}

impl Layout {
    /// Lays out a file system over devices of the given sizes.
    pub fn compute(sizes: &[u64], options: &FormatOptions) -> Result<Self, LayoutError> {
        let block_size = options.block_size;
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(LayoutError::BlockSize(block_size));
        }
        let device_count = sizes.len() as u32;
        if sizes.is_empty() || device_count > MAX_DEVICES {
            return Err(LayoutError::DeviceCount(device_count));
        }
        if !(1..=MAX_FILES).contains(&options.max_files) {
            return Err(LayoutError::MaxFiles(options.max_files));
        }
        if !(1..=MAX_POINTER_BLOCKS_PER_FILE).contains(&options.pointer_blocks_per_file) {
            return Err(LayoutError::PointerBlocksPerFile(
                options.pointer_blocks_per_file,
            ));
        }
        if let Some(slots) = options.pointer_slots
            && !(1..=MAX_BLOCKS_PER_DEVICE).contains(&slots)
        {
            return Err(LayoutError::PointerSlots { device: 0, slots });
        }
        // The journal's size depends on the map sizes of every device, and device 0's
        // map position depends on the journal: size the maps from an upper bound first.
        let mut map_pages_bound = 0u64;
        for &size in sizes {
            let blocks = size / u64::from(block_size);
            let slots = options.pointer_slots.map_or_else(
                || default_pointer_slots(blocks, options.max_files),
                u64::from,
            );
            map_pages_bound += divide_round_up(slots, u64::from(MAP_BITS_PER_PAGE))
                + divide_round_up(blocks, u64::from(MAP_BITS_PER_PAGE));
        }
        let journal_entries = journal_entries_for(options.pointer_blocks_per_file, map_pages_bound);
        let journal_entries =
            u32::try_from(journal_entries).map_err(|_| LayoutError::DeviceTooLarge {
                device: 0,
                blocks: sizes[0] / u64::from(block_size),
            })?;
        let journal_pages = journal_pages_for(journal_entries);
        let table_start = JOURNAL_START + u64::from(journal_pages);
        let shared = SharedGeometry {
            file_system: options.file_system,
            label: options.label,
            block_size,
            device_count,
            pointer_blocks_per_file: options.pointer_blocks_per_file,
            max_files: options.max_files,
            journal_entries,
            journal_pages,
            journal_start: JOURNAL_START,
            table_start,
        };
        let mut devices = alloc::vec::Vec::with_capacity(sizes.len());
        for (index, &size) in sizes.iter().enumerate() {
            let device = index as u32;
            let size = size - size % PAGE_SIZE as u64;
            let map_start = if device == 0 {
                table_start + u64::from(options.max_files)
            } else {
                SUPERBLOCK_PAGES
            };
            let plan = plan_device(
                size,
                u64::from(block_size),
                map_start,
                options.pointer_slots,
                options.max_files,
            )
            .ok_or(LayoutError::DeviceTooSmall { device, size })?;
            if plan.data_blocks > u64::from(MAX_BLOCKS_PER_DEVICE) {
                return Err(LayoutError::DeviceTooLarge {
                    device,
                    blocks: plan.data_blocks,
                });
            }
            if plan.pointer_slots > u64::from(MAX_BLOCKS_PER_DEVICE) {
                return Err(LayoutError::PointerSlots {
                    device,
                    slots: plan.pointer_slots as u32,
                });
            }
            devices.push(DeviceGeometry {
                device_index: device,
                pointer_slots: plan.pointer_slots as u32,
                data_blocks: plan.data_blocks as u32,
                pointer_map_pages: plan.pointer_map_pages as u32,
                data_map_pages: plan.data_map_pages as u32,
                map_start: plan.map_start,
                pointer_start: plan.pointer_start,
                data_start: plan.data_start,
                device_size: size,
            });
        }
        Ok(Self { shared, devices })
    }

    /// Total allocation-map pages over all devices.
    pub fn map_pages(&self) -> u64 {
        self.devices
            .iter()
            .map(|device| u64::from(device.pointer_map_pages) + u64::from(device.data_map_pages))
            .sum()
    }

    /// Checks a layout read from superblocks against the layout rules, field by
    /// field, so a hostile superblock cannot point regions at each other or past
    /// the end of a device.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let shared = &self.shared;
        let block_size = shared.block_size;
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(LayoutError::BlockSize(block_size));
        }
        if !(1..=MAX_DEVICES).contains(&shared.device_count)
            || self.devices.len() != shared.device_count as usize
        {
            return Err(LayoutError::DeviceCount(shared.device_count));
        }
        if !(1..=MAX_FILES).contains(&shared.max_files) {
            return Err(LayoutError::MaxFiles(shared.max_files));
        }
        if !(1..=MAX_POINTER_BLOCKS_PER_FILE).contains(&shared.pointer_blocks_per_file) {
            return Err(LayoutError::PointerBlocksPerFile(
                shared.pointer_blocks_per_file,
            ));
        }
        let mismatch = |device: u32, field: &'static str, stored: u64, expected: u64| {
            if stored == expected {
                Ok(())
            } else {
                Err(LayoutError::Mismatch {
                    device,
                    field,
                    stored,
                    expected,
                })
            }
        };
        mismatch(0, "journal_start", shared.journal_start, JOURNAL_START)?;
        let minimum_entries = journal_entries_for(shared.pointer_blocks_per_file, self.map_pages());
        if u64::from(shared.journal_entries) < minimum_entries
            || shared.journal_entries > MAX_BLOCKS_PER_DEVICE
        {
            return Err(LayoutError::Mismatch {
                device: 0,
                field: "journal_entries",
                stored: u64::from(shared.journal_entries),
                expected: minimum_entries,
            });
        }
        mismatch(
            0,
            "journal_pages",
            u64::from(shared.journal_pages),
            u64::from(journal_pages_for(shared.journal_entries)),
        )?;
        mismatch(
            0,
            "table_start",
            shared.table_start,
            JOURNAL_START + u64::from(shared.journal_pages),
        )?;
        for (index, device) in self.devices.iter().enumerate() {
            let index = index as u32;
            mismatch(
                index,
                "device_index",
                u64::from(device.device_index),
                u64::from(index),
            )?;
            let map_start = if index == 0 {
                shared.table_start + u64::from(shared.max_files)
            } else {
                SUPERBLOCK_PAGES
            };
            mismatch(index, "map_start", device.map_start, map_start)?;
            if !(1..=MAX_BLOCKS_PER_DEVICE).contains(&device.pointer_slots) {
                return Err(LayoutError::PointerSlots {
                    device: index,
                    slots: device.pointer_slots,
                });
            }
            if device.data_blocks == 0 || device.data_blocks > MAX_BLOCKS_PER_DEVICE {
                return Err(LayoutError::DeviceTooLarge {
                    device: index,
                    blocks: u64::from(device.data_blocks),
                });
            }
            let bits = u64::from(MAP_BITS_PER_PAGE);
            mismatch(
                index,
                "pointer_map_pages",
                u64::from(device.pointer_map_pages),
                divide_round_up(u64::from(device.pointer_slots), bits),
            )?;
            mismatch(
                index,
                "data_map_pages",
                u64::from(device.data_map_pages),
                divide_round_up(u64::from(device.data_blocks), bits),
            )?;
            mismatch(
                index,
                "pointer_start",
                device.pointer_start,
                device.map_start
                    + u64::from(device.pointer_map_pages)
                    + u64::from(device.data_map_pages),
            )?;
            mismatch(
                index,
                "data_start",
                device.data_start,
                align_up(
                    (device.pointer_start + u64::from(device.pointer_slots)) * PAGE_SIZE as u64,
                    u64::from(block_size),
                ),
            )?;
            let end = device.data_start + u64::from(device.data_blocks) * u64::from(block_size);
            if end > device.device_size || device.device_size % PAGE_SIZE as u64 != 0 {
                return Err(LayoutError::Mismatch {
                    device: index,
                    field: "device_size",
                    stored: device.device_size,
                    expected: end,
                });
            }
        }
        Ok(())
    }
}

/// Encodes the superblock of device `index`.
pub fn encode_superblock(layout: &Layout, index: usize, copy: u64) -> Page {
    let shared = &layout.shared;
    let device = &layout.devices[index];
    let mut superblock = SuperblockPage::new_zeroed();
    superblock.block_size.set(shared.block_size);
    superblock.device_count.set(shared.device_count);
    superblock
        .pointer_blocks_per_file
        .set(shared.pointer_blocks_per_file);
    superblock.max_files.set(shared.max_files);
    superblock.journal_entries.set(shared.journal_entries);
    superblock.journal_pages.set(shared.journal_pages);
    superblock.journal_start.set(shared.journal_start);
    superblock.table_start.set(shared.table_start);
    superblock.label = shared.label;
    superblock.device_index.set(device.device_index);
    superblock.pointer_slots.set(device.pointer_slots);
    superblock.data_blocks.set(device.data_blocks);
    superblock.pointer_map_pages.set(device.pointer_map_pages);
    superblock.data_map_pages.set(device.data_map_pages);
    superblock.map_start.set(device.map_start);
    superblock.pointer_start.set(device.pointer_start);
    superblock.data_start.set(device.data_start);
    superblock.device_size.set(device.device_size);
    let mut page = [0u8; PAGE_SIZE];
    page.copy_from_slice(superblock.as_bytes());
    seal_page(
        &mut page,
        PageKind::Superblock,
        PageAddress::new(device.device_index, copy),
        shared.file_system,
        0,
    );
    page
}

/// Decodes a verified superblock page into its shared and device parts.
pub fn decode_superblock(page: &Page) -> (SharedGeometry, DeviceGeometry) {
    let Ok(superblock) = SuperblockPage::ref_from_bytes(page) else {
        unreachable!("a superblock is one page")
    };
    let shared = SharedGeometry {
        file_system: superblock.header.file_system,
        label: superblock.label,
        block_size: superblock.block_size.get(),
        device_count: superblock.device_count.get(),
        pointer_blocks_per_file: superblock.pointer_blocks_per_file.get(),
        max_files: superblock.max_files.get(),
        journal_entries: superblock.journal_entries.get(),
        journal_pages: superblock.journal_pages.get(),
        journal_start: superblock.journal_start.get(),
        table_start: superblock.table_start.get(),
    };
    let device = DeviceGeometry {
        device_index: superblock.device_index.get(),
        pointer_slots: superblock.pointer_slots.get(),
        data_blocks: superblock.data_blocks.get(),
        pointer_map_pages: superblock.pointer_map_pages.get(),
        data_map_pages: superblock.data_map_pages.get(),
        map_start: superblock.map_start.get(),
        pointer_start: superblock.pointer_start.get(),
        data_start: superblock.data_start.get(),
        device_size: superblock.device_size.get(),
    };
    (shared, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_options() -> FormatOptions {
        FormatOptions {
            block_size: 4096,
            max_files: 16,
            pointer_blocks_per_file: 8,
            ..FormatOptions::default()
        }
    }

    #[test]
    fn pointer_packs_device_and_block() {
        let pointer = Pointer::new(63, MAX_BLOCKS_PER_DEVICE);
        assert_eq!(
            (pointer.device(), pointer.block()),
            (63, MAX_BLOCKS_PER_DEVICE)
        );
        assert!(!pointer.is_null());
        assert!(Pointer::NULL.is_null());
        assert_eq!(Pointer::new(2, 5).raw(), (2 << 26) | 5);
    }

    #[test]
    fn page_address_round_trips() {
        let address = PageAddress::new(17, 123_456);
        assert_eq!(PageAddress::decode(address.encode()), address);
    }

    #[test]
    fn computed_layouts_validate_and_fit() {
        for sizes in [&[4u64 << 20][..], &[4 << 20, 2 << 20], &[64 << 20]] {
            let layout = Layout::compute(sizes, &small_options()).unwrap();
            layout.validate().unwrap();
            for (device, size) in layout.devices.iter().zip(sizes) {
                assert!(device.data_start + u64::from(device.data_blocks) * 4096 <= *size);
                assert!(device.data_blocks > 0);
            }
        }
        let layout = Layout::compute(&[1 << 30], &FormatOptions::default()).unwrap();
        layout.validate().unwrap();
        assert_eq!(
            layout.devices[0].data_start % u64::from(DEFAULT_BLOCK_SIZE),
            0
        );
        assert!(layout.devices[0].data_blocks >= 1000);
    }

    #[test]
    fn layout_rejects_bad_parameters() {
        let bad_block = FormatOptions {
            block_size: 3000,
            ..small_options()
        };
        assert_eq!(
            Layout::compute(&[1 << 20], &bad_block),
            Err(LayoutError::BlockSize(3000))
        );
        assert!(matches!(
            Layout::compute(&[16 << 10], &small_options()),
            Err(LayoutError::DeviceTooSmall { .. })
        ));
        assert_eq!(
            Layout::compute(&[], &small_options()),
            Err(LayoutError::DeviceCount(0))
        );
    }

    #[test]
    fn tampered_layout_is_refused() {
        let mut layout = Layout::compute(&[4 << 20], &small_options()).unwrap();
        layout.devices[0].data_start += 4096;
        assert!(matches!(
            layout.validate(),
            Err(LayoutError::Mismatch {
                field: "data_start",
                ..
            })
        ));
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let layout = Layout::compute(&[4 << 20], &small_options()).unwrap();
        let mut page = encode_superblock(&layout, 0, 0);
        let header =
            verify_page(&page, PageKind::Superblock, PageAddress::new(0, 0), None).unwrap();
        assert_eq!(header.file_system, layout.shared.file_system);
        let (shared, device) = decode_superblock(&page);
        assert_eq!(shared, layout.shared);
        assert_eq!(device, layout.devices[0]);
        assert!(matches!(
            verify_page(&page, PageKind::Superblock, PageAddress::new(0, 1), None),
            Err(PageFault::Address { .. })
        ));
        page[100] ^= 1;
        assert!(matches!(
            verify_page(&page, PageKind::Superblock, PageAddress::new(0, 0), None),
            Err(PageFault::Checksum { .. })
        ));
    }
}
