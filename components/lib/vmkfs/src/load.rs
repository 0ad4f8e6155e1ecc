//! Reading an image into RAM and checking every invariant on the way.
//!
//! Purpose: the one loader behind both mount and fsck. It reads the
//! superblocks, the journal, the file-descriptor table, the allocation maps and
//! every pointer block a file names; it overlays the journal's complete
//! transaction (if any) on what it reads, so it sees the post-crash state
//! without writing anything; and it cross-checks the result: names unique,
//! redo-log chains well formed, every pointer in range, no block or pointer
//! block owned twice, and the maps equal to what the files own (no leak, no
//! owned block marked free).
//!
//! Invariants: it never panics and never allocates more than the device sizes
//! justify, whatever the bytes; problems it can describe are collected as
//! [`Problem`]s, problems that leave nothing to describe (no superblock, a
//! hostile journal, a device error) end the load with a [`MountError`].
//!
//! Callers: [`crate::Store::mount`] (which refuses any problem) and
//! [`crate::check`] (which reports and repairs).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use zerocopy::FromBytes;

use crate::check::{MapKind, Problem};
use crate::checksum::crc32c;
use crate::device::BlockDevice;
use crate::error::MountError;
use crate::format::{
    DescriptorPage, Layout, MAP_BITS_PER_PAGE, NO_PARENT, PAGE_SIZE, POINTERS_PER_BLOCK, Page,
    PageAddress, PageKind, Pointer, STATUS_ALLOCATED, STATUS_FREE, decode_superblock, verify_page,
};
use crate::journal::{self, JournalState, Transaction};
use crate::records::{
    Bitmap, FileKind, FileRecord, Slot, block_count, decode_pointer_block, name_is_valid,
    pointer_block_count,
};

/// Everything read from an image.
pub(crate) struct Loaded {
    pub layout: Layout,
    pub slots: Vec<Slot>,
    pub pointer_maps: Vec<Bitmap>,
    pub data_maps: Vec<Bitmap>,
    /// What the files own, computed from their pointers.
    pub owned_pointer_slots: Vec<Bitmap>,
    pub owned_data_blocks: Vec<Bitmap>,
    /// The complete transaction found in the journal, already overlaid.
    pub journal: Option<Transaction>,
    /// How many of its pages were not yet in place.
    pub journal_pages_pending: usize,
    /// The highest transaction sequence number seen.
    pub sequence: u64,
    pub problems: Vec<Problem>,
    /// Superblock copies to rewrite: (device, copy).
    pub superblock_repairs: Vec<(u32, u64)>,
    /// True when the maps can be rebuilt from the files without losing track of
    /// any block: every descriptor and pointer block readable, no conflicts.
    pub maps_rebuildable: bool,
}

fn device_error(device: usize) -> impl Fn(crate::device::DeviceError) -> MountError {
    move |error| MountError::Device {
        device: device as u32,
        error,
    }
}

fn read_raw<D: BlockDevice>(devices: &mut [D], address: PageAddress) -> Result<Page, MountError> {
    let mut page = [0u8; PAGE_SIZE];
    devices[address.device as usize]
        .read(
            address.byte_offset(),
            &mut page,
            crate::device::IoKind::Metadata,
        )
        .map_err(device_error(address.device as usize))?;
    Ok(page)
}

struct Reader<'a, D> {
    devices: &'a mut [D],
    overlay: BTreeMap<PageAddress, Box<Page>>,
}

impl<D: BlockDevice> Reader<'_, D> {
    fn read(&mut self, address: PageAddress) -> Result<Page, MountError> {
        match self.overlay.get(&address) {
            Some(page) => Ok(**page),
            None => read_raw(self.devices, address),
        }
    }
}

fn read_superblocks<D: BlockDevice>(
    devices: &mut [D],
    problems: &mut Vec<Problem>,
    repairs: &mut Vec<(u32, u64)>,
) -> Result<Layout, MountError> {
    let mut layout: Option<Layout> = None;
    for index in 0..devices.len() {
        let device = index as u32;
        let primary = read_raw(devices, PageAddress::new(device, 0))?;
        let backup = read_raw(devices, PageAddress::new(device, 1))?;
        // A superblock is checked against the device number it claims, so that a
        // device given in the wrong position is named as such (below).
        let claimed = |page: &Page, copy: u64| {
            let address = PageAddress::decode(u64::from_le_bytes(
                page[32..40].try_into().unwrap_or_default(),
            ));
            PageAddress::new(address.device, copy)
        };
        let primary_address = claimed(&primary, 0);
        let backup_address = claimed(&backup, 1);
        let primary_check = verify_page(&primary, PageKind::Superblock, primary_address, None);
        let backup_check = verify_page(&backup, PageKind::Superblock, backup_address, None);
        let chosen = match (&primary_check, &backup_check) {
            (Ok(_), Ok(_)) => {
                if decode_superblock(&primary) != decode_superblock(&backup) {
                    problems.push(Problem::SuperblockCopiesDiffer { device });
                    repairs.push((device, 1));
                }
                primary
            }
            (Ok(_), Err(fault)) => {
                problems.push(Problem::SuperblockCopy {
                    device,
                    copy: 1,
                    fault: *fault,
                });
                repairs.push((device, 1));
                primary
            }
            (Err(fault), Ok(_)) => {
                problems.push(Problem::SuperblockCopy {
                    device,
                    copy: 0,
                    fault: *fault,
                });
                repairs.push((device, 0));
                backup
            }
            (Err(primary), Err(backup)) => {
                return Err(MountError::Superblock {
                    device,
                    primary: *primary,
                    backup: *backup,
                });
            }
        };
        let Ok(header) =
            crate::format::PageHeader::read_from_prefix(&chosen[..]).map(|(header, _)| header)
        else {
            unreachable!("a page holds a header")
        };
        let (shared, geometry) = decode_superblock(&chosen);
        match &mut layout {
            None => {
                if shared.device_count as usize != devices.len() {
                    return Err(MountError::DeviceCount {
                        given: devices.len(),
                        expected: shared.device_count,
                    });
                }
                if geometry.device_index != 0 {
                    return Err(MountError::DevicePosition {
                        device,
                        says: geometry.device_index,
                    });
                }
                layout = Some(Layout {
                    shared,
                    devices: vec![geometry],
                });
            }
            Some(layout) => {
                if header.file_system != layout.shared.file_system {
                    return Err(MountError::ForeignDevice { device });
                }
                if geometry.device_index != device {
                    return Err(MountError::DevicePosition {
                        device,
                        says: geometry.device_index,
                    });
                }
                if shared != layout.shared {
                    return Err(MountError::GeometryDiffers { device });
                }
                layout.devices.push(geometry);
            }
        }
    }
    let layout = layout.ok_or(MountError::NoDevices)?;
    layout.validate().map_err(MountError::Layout)?;
    for (index, geometry) in layout.devices.iter().enumerate() {
        let size = devices[index].size();
        if size < geometry.device_size {
            return Err(MountError::DeviceTooSmall {
                device: index as u32,
                size,
                needed: geometry.device_size,
            });
        }
    }
    Ok(layout)
}

/// True if `address` is a page a journal transaction may write.
pub(crate) fn is_metadata_page(layout: &Layout, address: PageAddress) -> bool {
    let Some(geometry) = layout.devices.get(address.device as usize) else {
        return false;
    };
    let page = address.page;
    let in_range = |start: u64, count: u64| page >= start && page - start < count;
    (address.device == 0
        && in_range(
            layout.shared.table_start,
            u64::from(layout.shared.max_files),
        ))
        || in_range(
            geometry.map_start,
            u64::from(geometry.pointer_map_pages) + u64::from(geometry.data_map_pages),
        )
        || in_range(geometry.pointer_start, u64::from(geometry.pointer_slots))
}

fn pointer_block_in_range(layout: &Layout, pointer: Pointer) -> bool {
    layout
        .devices
        .get(pointer.device() as usize)
        .is_some_and(|device| pointer.block() < device.pointer_slots)
}

fn data_block_in_range(layout: &Layout, pointer: Pointer) -> bool {
    layout
        .devices
        .get(pointer.device() as usize)
        .is_some_and(|device| pointer.block() < device.data_blocks)
}

/// Decodes descriptor `slot`; `Err` carries the problems that make it unusable.
fn load_descriptor<D: BlockDevice>(
    reader: &mut Reader<'_, D>,
    layout: &Layout,
    slot: u32,
    sequence: &mut u64,
) -> Result<Result<Slot, Vec<Problem>>, MountError> {
    let shared = &layout.shared;
    let address = PageAddress::new(0, shared.table_start + u64::from(slot));
    let page = reader.read(address)?;
    let header = match verify_page(
        &page,
        PageKind::Descriptor,
        address,
        Some(shared.file_system),
    ) {
        Ok(header) => header,
        Err(fault) => return Ok(Err(vec![Problem::DescriptorPage { slot, fault }])),
    };
    *sequence = (*sequence).max(header.sequence.get());
    let Ok(descriptor) = DescriptorPage::ref_from_bytes(&page[..]) else {
        unreachable!("a descriptor is one page")
    };
    let field = |reason: String| Ok(Err(vec![Problem::DescriptorField { slot, reason }]));
    match descriptor.status {
        STATUS_FREE => return Ok(Ok(Slot::Free)),
        STATUS_ALLOCATED => {}
        status => return field(alloc::format!("unknown status {status}")),
    }
    let Some(kind) = FileKind::from_code(descriptor.kind) else {
        return field(alloc::format!("unknown file kind {}", descriptor.kind));
    };
    let name_length = usize::from(descriptor.name_length);
    let name = match core::str::from_utf8(descriptor.name.get(..name_length).unwrap_or(&[])) {
        Ok(name) if name_is_valid(name) && name_length <= descriptor.name.len() => name.to_string(),
        _ => {
            return field(
                "the name is empty, too long, not UTF-8 or contains '/' or control characters"
                    .to_string(),
            );
        }
    };
    let length = descriptor.length.get();
    if !length.is_multiple_of(crate::device::SECTOR_SIZE as u64) {
        return field(alloc::format!(
            "'{name}' has length {length}, not a whole number of sectors"
        ));
    }
    let blocks = block_count(length, shared.block_size);
    let pointer_blocks = pointer_block_count(blocks);
    if pointer_blocks > u64::from(shared.pointer_blocks_per_file) {
        return field(alloc::format!(
            "'{name}' has length {length}, more than its {} pointer blocks can map",
            shared.pointer_blocks_per_file
        ));
    }
    if u64::from(descriptor.pointer_block_count.get()) != pointer_blocks {
        return field(alloc::format!(
            "'{name}' records {} pointer blocks, its length needs {pointer_blocks}",
            descriptor.pointer_block_count.get()
        ));
    }
    let parent = match (kind, descriptor.parent.get()) {
        (FileKind::Disk, NO_PARENT) => None,
        (FileKind::Disk, _) => return field(alloc::format!("the disk '{name}' names a parent")),
        (FileKind::RedoLog, NO_PARENT) => {
            return field(alloc::format!("the redo log '{name}' names no parent"));
        }
        (FileKind::RedoLog, parent) => Some(parent),
    };
    let mut problems = Vec::new();
    for (index, entry) in descriptor
        .entries
        .iter()
        .enumerate()
        .skip(pointer_blocks as usize)
    {
        if !Pointer::from_raw(entry.pointer.get()).is_null() {
            problems.push(Problem::DescriptorField {
                slot,
                reason: alloc::format!(
                    "'{name}' has pointer-block entry {index} set past its length"
                ),
            });
            break;
        }
    }
    let mut record = FileRecord {
        name,
        kind,
        length,
        parent,
        pointer_blocks: Vec::with_capacity(pointer_blocks as usize),
        blocks: Vec::with_capacity(blocks as usize),
    };
    for index in 0..pointer_blocks as usize {
        let entry = descriptor.entries[index];
        let pointer = Pointer::from_raw(entry.pointer.get());
        let first_block = (index * POINTERS_PER_BLOCK) as u64;
        let in_this_block = (blocks - first_block).min(POINTERS_PER_BLOCK as u64) as usize;
        record.pointer_blocks.push(pointer);
        if pointer.is_null() {
            if kind == FileKind::Disk {
                problems.push(Problem::MissingPointerBlock {
                    name: record.name.clone(),
                    index: index as u32,
                });
            }
            record
                .blocks
                .extend(core::iter::repeat_n(Pointer::NULL, in_this_block));
            continue;
        }
        if !pointer_block_in_range(layout, pointer) {
            problems.push(Problem::PointerBlockOutOfRange {
                name: record.name.clone(),
                index: index as u32,
                pointer,
            });
            record
                .blocks
                .extend(core::iter::repeat_n(Pointer::NULL, in_this_block));
            continue;
        }
        let geometry = &layout.devices[pointer.device() as usize];
        let page = reader.read(geometry.pointer_block_address(pointer.block()))?;
        let computed = crc32c(&page);
        if computed != entry.checksum.get() {
            problems.push(Problem::PointerBlockChecksum {
                name: record.name.clone(),
                index: index as u32,
                stored: entry.checksum.get(),
                computed,
            });
            record
                .blocks
                .extend(core::iter::repeat_n(Pointer::NULL, in_this_block));
            continue;
        }
        for (position, block) in decode_pointer_block(&page).enumerate() {
            let file_block = first_block + position as u64;
            if position >= in_this_block {
                if !block.is_null() {
                    problems.push(Problem::BlockPastEnd {
                        name: record.name.clone(),
                        index: file_block,
                    });
                    break;
                }
                continue;
            }
            if block.is_null() {
                if kind == FileKind::Disk {
                    problems.push(Problem::MissingBlock {
                        name: record.name.clone(),
                        index: file_block,
                    });
                }
            } else if !data_block_in_range(layout, block) {
                problems.push(Problem::BlockOutOfRange {
                    name: record.name.clone(),
                    index: file_block,
                    pointer: block,
                });
                record.blocks.push(Pointer::NULL);
                continue;
            }
            record.blocks.push(block);
        }
    }
    if problems.is_empty() {
        Ok(Ok(Slot::File(record)))
    } else {
        Ok(Err(problems))
    }
}

/// The pointer-block maps, the data-block maps, and per device which map pages verified.
type LoadedMaps = (Vec<Bitmap>, Vec<Bitmap>, Vec<Vec<bool>>);

fn load_maps<D: BlockDevice>(
    reader: &mut Reader<'_, D>,
    layout: &Layout,
    problems: &mut Vec<Problem>,
    sequence: &mut u64,
) -> Result<LoadedMaps, MountError> {
    let mut pointer_maps = Vec::new();
    let mut data_maps = Vec::new();
    let mut pages_ok = Vec::new();
    for geometry in &layout.devices {
        let device = geometry.device_index;
        let mut device_pages_ok = Vec::new();
        for map in [MapKind::PointerBlocks, MapKind::DataBlocks] {
            let (pages, length, kind) = match map {
                MapKind::PointerBlocks => (
                    geometry.pointer_map_pages,
                    geometry.pointer_slots,
                    PageKind::PointerMap,
                ),
                MapKind::DataBlocks => (
                    geometry.data_map_pages,
                    geometry.data_blocks,
                    PageKind::DataMap,
                ),
            };
            let mut bitmap = Bitmap::new(length);
            for page_index in 0..pages {
                let address = match map {
                    MapKind::PointerBlocks => geometry.pointer_map_address(page_index),
                    MapKind::DataBlocks => geometry.data_map_address(page_index),
                };
                let page = reader.read(address)?;
                match verify_page(&page, kind, address, Some(layout.shared.file_system)) {
                    Ok(header) => {
                        *sequence = (*sequence).max(header.sequence.get());
                        if !bitmap.decode_page(page_index, &page) {
                            problems.push(Problem::MapBitsPastEnd { device, map });
                        }
                        device_pages_ok.push(true);
                    }
                    Err(fault) => {
                        problems.push(Problem::MapPage {
                            device,
                            map,
                            page: page_index,
                            fault,
                        });
                        device_pages_ok.push(false);
                    }
                }
            }
            match map {
                MapKind::PointerBlocks => pointer_maps.push(bitmap),
                MapKind::DataBlocks => data_maps.push(bitmap),
            }
        }
        pages_ok.push(device_pages_ok);
    }
    Ok((pointer_maps, data_maps, pages_ok))
}

fn check_chains(slots: &[Slot], problems: &mut Vec<Problem>) {
    let mut names: BTreeMap<&str, u32> = BTreeMap::new();
    for (index, slot) in slots.iter().enumerate() {
        let Slot::File(file) = slot else { continue };
        if let Some(&first) = names.get(file.name.as_str()) {
            problems.push(Problem::DuplicateName {
                name: file.name.clone(),
                first,
                second: index as u32,
            });
        } else {
            names.insert(&file.name, index as u32);
        }
        let Some(parent) = file.parent else { continue };
        let reason = match slots.get(parent as usize) {
            None => Some(alloc::format!(
                "names parent slot {parent}, past the end of the table"
            )),
            Some(_) if parent as usize == index => Some("names itself as parent".to_string()),
            Some(Slot::Free) => Some(alloc::format!("names parent slot {parent}, which is free")),
            Some(Slot::Damaged) => Some(alloc::format!(
                "names parent slot {parent}, which is damaged"
            )),
            Some(Slot::File(parent_file)) if parent_file.length != file.length => {
                Some(alloc::format!(
                    "has length {}, its parent '{}' has {}",
                    file.length,
                    parent_file.name,
                    parent_file.length
                ))
            }
            Some(Slot::File(_)) => None,
        };
        if let Some(reason) = reason {
            problems.push(Problem::Parent {
                name: file.name.clone(),
                reason,
            });
            continue;
        }
        // Several redo logs may share a parent (the logs form a tree over a
        // disk), but every chain must end at a disk within as many steps as
        // there are slots.
        let mut current = parent;
        let mut steps = 0;
        while let Some(Slot::File(ancestor)) = slots.get(current as usize) {
            let Some(next) = ancestor.parent else { break };
            let reason = if next as usize == index {
                "is part of a parent cycle"
            } else if steps >= slots.len() {
                "is over a parent cycle (its chain never reaches a disk)"
            } else {
                current = next;
                steps += 1;
                continue;
            };
            problems.push(Problem::Parent {
                name: file.name.clone(),
                reason: reason.to_string(),
            });
            break;
        }
    }
}

fn check_ownership(
    layout: &Layout,
    slots: &[Slot],
    problems: &mut Vec<Problem>,
) -> (Vec<Bitmap>, Vec<Bitmap>, bool) {
    let mut owned_pointer_slots: Vec<Bitmap> = layout
        .devices
        .iter()
        .map(|device| Bitmap::new(device.pointer_slots))
        .collect();
    let mut owned_data_blocks: Vec<Bitmap> = layout
        .devices
        .iter()
        .map(|device| Bitmap::new(device.data_blocks))
        .collect();
    let mut owner_of_pointer: BTreeMap<Pointer, u32> = BTreeMap::new();
    let mut conflicts = false;
    let mut first_owner_data: BTreeMap<Pointer, u32> = BTreeMap::new();
    for (index, slot) in slots.iter().enumerate() {
        let Slot::File(file) = slot else { continue };
        for &pointer in file
            .pointer_blocks
            .iter()
            .filter(|pointer| !pointer.is_null())
        {
            let map = &mut owned_pointer_slots[pointer.device() as usize];
            if map.get(pointer.block()) {
                conflicts = true;
                let first = owner_of_pointer
                    .get(&pointer)
                    .copied()
                    .unwrap_or(index as u32);
                problems.push(Problem::OwnedTwice {
                    map: MapKind::PointerBlocks,
                    pointer,
                    first: slot_name(slots, first),
                    second: file.name.clone(),
                });
            } else {
                map.set(pointer.block());
                owner_of_pointer.insert(pointer, index as u32);
            }
        }
        for &pointer in file.blocks.iter().filter(|pointer| !pointer.is_null()) {
            let map = &mut owned_data_blocks[pointer.device() as usize];
            if map.get(pointer.block()) {
                conflicts = true;
                // Find the first owner only when reporting (conflicts are rare).
                let first = first_owner_data.get(&pointer).copied().unwrap_or_else(|| {
                    slots
                        .iter()
                        .position(|slot| {
                            slot.file()
                                .is_some_and(|other| other.blocks.contains(&pointer))
                        })
                        .unwrap_or(index) as u32
                });
                first_owner_data.insert(pointer, first);
                problems.push(Problem::OwnedTwice {
                    map: MapKind::DataBlocks,
                    pointer,
                    first: slot_name(slots, first),
                    second: file.name.clone(),
                });
            } else {
                map.set(pointer.block());
            }
        }
    }
    (owned_pointer_slots, owned_data_blocks, conflicts)
}

fn slot_name(slots: &[Slot], slot: u32) -> String {
    slots
        .get(slot as usize)
        .and_then(Slot::file)
        .map(|file| file.name.clone())
        .unwrap_or_default()
}

fn compare_maps(
    device: u32,
    map: MapKind,
    recorded: &Bitmap,
    owned: &Bitmap,
    pages_ok: &[bool],
    problems: &mut Vec<Problem>,
) {
    let mut leaked = (0u64, None);
    let mut marked_free = (0u64, None);
    for (index, recorded_bit) in recorded.differences(owned) {
        if !pages_ok
            .get((index / MAP_BITS_PER_PAGE) as usize)
            .copied()
            .unwrap_or(false)
        {
            continue;
        }
        let counter = if recorded_bit {
            &mut leaked
        } else {
            &mut marked_free
        };
        counter.0 += 1;
        counter.1.get_or_insert(index);
    }
    if let (count, Some(first)) = leaked {
        problems.push(Problem::Leaked {
            device,
            map,
            count,
            first,
        });
    }
    if let (count, Some(first)) = marked_free {
        problems.push(Problem::MarkedFree {
            device,
            map,
            count,
            first,
        });
    }
}

/// Loads an image; see the module documentation.
pub(crate) fn load<D: BlockDevice>(devices: &mut [D]) -> Result<Loaded, MountError> {
    if devices.is_empty() {
        return Err(MountError::NoDevices);
    }
    let mut problems = Vec::new();
    let mut superblock_repairs = Vec::new();
    let layout = read_superblocks(devices, &mut problems, &mut superblock_repairs)?;
    let state = journal::read(&mut devices[0], &layout.shared, |address| {
        is_metadata_page(&layout, address)
    })
    .map_err(device_error(0))?
    .map_err(MountError::Journal)?;
    let (journal, mut sequence) = match state {
        JournalState::Complete(transaction) => {
            let sequence = transaction.sequence;
            (Some(transaction), sequence)
        }
        JournalState::Incomplete { sequence } => (None, sequence.unwrap_or(0)),
    };
    // Pages of the journal's transaction not yet in place (a crash before they were written).
    let mut journal_pages_pending = 0;
    for (address, image) in journal
        .iter()
        .flat_map(|transaction| transaction.pages.iter())
    {
        if read_raw(devices, *address)? != **image {
            journal_pages_pending += 1;
        }
    }
    let overlay = journal
        .iter()
        .flat_map(|transaction| transaction.pages.iter().cloned())
        .collect();
    let mut reader = Reader { devices, overlay };
    let mut slots = Vec::with_capacity(layout.shared.max_files as usize);
    let mut readable = true;
    for slot in 0..layout.shared.max_files {
        match load_descriptor(&mut reader, &layout, slot, &mut sequence)? {
            Ok(loaded) => slots.push(loaded),
            Err(descriptor_problems) => {
                problems.extend(descriptor_problems);
                slots.push(Slot::Damaged);
                readable = false;
            }
        }
    }
    let (pointer_maps, data_maps, pages_ok) =
        load_maps(&mut reader, &layout, &mut problems, &mut sequence)?;
    check_chains(&slots, &mut problems);
    let (owned_pointer_slots, owned_data_blocks, conflicts) =
        check_ownership(&layout, &slots, &mut problems);
    if readable {
        for geometry in &layout.devices {
            let device = geometry.device_index as usize;
            let pointer_pages = geometry.pointer_map_pages as usize;
            compare_maps(
                geometry.device_index,
                MapKind::PointerBlocks,
                &pointer_maps[device],
                &owned_pointer_slots[device],
                &pages_ok[device][..pointer_pages],
                &mut problems,
            );
            compare_maps(
                geometry.device_index,
                MapKind::DataBlocks,
                &data_maps[device],
                &owned_data_blocks[device],
                &pages_ok[device][pointer_pages..],
                &mut problems,
            );
        }
    }
    Ok(Loaded {
        layout,
        slots,
        pointer_maps,
        data_maps,
        owned_pointer_slots,
        owned_data_blocks,
        journal,
        journal_pages_pending,
        sequence,
        problems,
        superblock_repairs,
        maps_rebuildable: readable && !conflicts,
    })
}
