//! The store: a mounted VMKFS file system with its metadata in RAM.
//!
//! Purpose: create, delete, resize, rename, list and stat files; open them
//! exclusively (read-write) or shared (read-only); read and write their data;
//! stack copy-on-write redo logs over them, commit and discard those logs.
//!
//! Invariants:
//! - All metadata lives in RAM after mount. Reading or writing a disk file (a
//!   preallocated virtual disk) does no metadata I/O at all: the block pointer
//!   comes from RAM and the one data I/O goes straight to the device.
//! - Metadata changes reach the disk only as journal transactions (see
//!   [`crate::journal`] for the protocol). Every metadata operation (create,
//!   delete, resize, rename, snapshot, commit, discard) commits its
//!   transaction before it returns, and thereby also makes every earlier data
//!   write durable. Writes into a redo log that allocate new blocks mark
//!   metadata dirty in RAM; [`Store::flush`] commits it.
//! - A block freed by an operation is reusable only after that operation's
//!   transaction is durable, so acknowledged data can never be overwritten
//!   through a reused block.
//! - A redo log's new block is written (copy of the parent's block merged with
//!   the new bytes) before the pointer to it is journaled, and every device is
//!   flushed before a transaction is written, so a committed pointer never
//!   names unwritten data.
//! - Redo logs form a tree over a disk: a file may have several redo logs
//!   directly over it (a shared read-only base with one copy-on-write log per
//!   VM), each log has exactly one parent, and every chain ends at a disk.
//! - A file with any redo log over it is frozen: it opens read-only and
//!   cannot be deleted or resized until all its logs are committed or
//!   discarded. A log's blocks are its own (its copy-ups, and blocks merged
//!   from its own child), never shared with a sibling, so discarding one log
//!   leaves the others intact.
//! - A log is committed only when it is its parent's only log: merging it
//!   would change what its siblings read.
//! - After any failed metadata write the store refuses further work
//!   ([`StoreError::Failed`]); remounting recovers from the journal.
//! - A store mounted with [`Store::mount_read_only`] never writes: it replays
//!   a journal transaction not yet in place in RAM only, and refuses every
//!   change ([`StoreError::ReadOnly`]).
//!
//! Callers: the block-store component, the host tooling (`disk` commands),
//! the tests and benchmarks.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::device::{BlockDevice, DeviceError, IoKind, SECTOR_SIZE};
use crate::error::{FormatError, MountError, Resource, StoreError};
use crate::format::{
    FormatOptions, Layout, MAP_BITS_PER_PAGE, PAGE_SIZE, POINTERS_PER_BLOCK, Page, PageAddress,
    PageKind, Pointer, encode_superblock,
};
use crate::journal::{self, Transaction};
use crate::load::{Loaded, load};
use crate::records::{
    Bitmap, FileKind, FileRecord, Slot, block_count, encode_descriptor, name_is_valid,
    pointer_block_count,
};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Shared: any number of read-only handles, no writer.
    ReadOnly,
    /// Exclusive: the only handle of the file.
    ReadWrite,
}

/// An open file. Copyable; stale once closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileHandle {
    index: u32,
    serial: u32,
}

#[derive(Clone, Copy, Debug)]
struct HandleEntry {
    slot: u32,
    mode: OpenMode,
    serial: u32,
    live: bool,
}

/// What `list` and `stat` report about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub kind: FileKind,
    pub length: u64,
    /// The file this redo log is over.
    pub parent: Option<String>,
    /// The redo logs directly over this file, sorted by name (empty when
    /// none; the file is frozen while there is any).
    pub redo_logs: Vec<String>,
    /// Data blocks the file itself owns.
    pub allocated_blocks: u64,
    pub readers: u32,
    pub writer: bool,
}

/// Space and geometry of a mounted file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceInfo {
    pub block_size: u32,
    pub devices: u32,
    pub data_blocks: u64,
    pub free_data_blocks: u64,
    pub pointer_slots: u64,
    pub free_pointer_slots: u64,
    pub files: u32,
    pub max_files: u32,
    pub largest_file: u64,
    pub journal_entries: u32,
}

/// A metadata page changed in RAM and not yet journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Descriptor(u32),
    PointerBlock { slot: u32, index: u32 },
    PointerMap { device: u32, page: u32 },
    DataMap { device: u32, page: u32 },
}

/// Largest buffer used for zeroing and copying data.
const COPY_CHUNK: usize = 1 << 20;

/// A mounted file system over one or more block devices.
pub struct Store<D: BlockDevice> {
    devices: Vec<D>,
    layout: Layout,
    block_shift: u32,
    slots: Vec<Slot>,
    pointer_maps: Vec<Bitmap>,
    data_maps: Vec<Bitmap>,
    dirty: BTreeSet<Dirty>,
    sequence: u64,
    handles: Vec<HandleEntry>,
    readers: Vec<u32>,
    writers: Vec<bool>,
    failed: bool,
    /// Mounted with [`Store::mount_read_only`]: nothing is ever written.
    read_only: bool,
    data_cursors: Vec<u32>,
}

fn device_error(device: u32) -> impl Fn(DeviceError) -> StoreError {
    move |error| StoreError::Device { device, error }
}

impl<D: BlockDevice> Store<D> {
    /// mkfs: lays out a new file system over `devices` and mounts it.
    pub fn format(mut devices: Vec<D>, options: &FormatOptions) -> Result<Self, FormatError> {
        let sizes: Vec<u64> = devices.iter().map(BlockDevice::size).collect();
        let layout = Layout::compute(&sizes, options).map_err(FormatError::Layout)?;
        let shared = &layout.shared;
        let write = |devices: &mut Vec<D>, address: PageAddress, bytes: &[u8], kind: IoKind| {
            devices[address.device as usize]
                .write(address.byte_offset(), bytes, kind)
                .map_err(|error| FormatError::Device {
                    device: address.device,
                    error,
                })
        };
        // Descriptors and maps first, the empty journal next, superblocks last:
        // until the superblocks are written the device is not a file system.
        let mut table = vec![0u8; shared.max_files as usize * PAGE_SIZE];
        for slot in 0..shared.max_files {
            let address = PageAddress::new(0, shared.table_start + u64::from(slot));
            let page = encode_descriptor(&Slot::Free, address, shared.file_system, 0);
            table[slot as usize * PAGE_SIZE..(slot as usize + 1) * PAGE_SIZE]
                .copy_from_slice(&page);
        }
        write(
            &mut devices,
            PageAddress::new(0, shared.table_start),
            &table,
            IoKind::Metadata,
        )?;
        for geometry in &layout.devices {
            let pointer_map = Bitmap::new(geometry.pointer_slots);
            let data_map = Bitmap::new(geometry.data_blocks);
            let pages = geometry.pointer_map_pages + geometry.data_map_pages;
            let mut maps = vec![0u8; pages as usize * PAGE_SIZE];
            for page in 0..pages {
                let bytes = if page < geometry.pointer_map_pages {
                    pointer_map.encode_page(
                        page,
                        PageKind::PointerMap,
                        geometry.pointer_map_address(page),
                        shared.file_system,
                        0,
                    )
                } else {
                    let data_page = page - geometry.pointer_map_pages;
                    data_map.encode_page(
                        data_page,
                        PageKind::DataMap,
                        geometry.data_map_address(data_page),
                        shared.file_system,
                        0,
                    )
                };
                maps[page as usize * PAGE_SIZE..(page as usize + 1) * PAGE_SIZE]
                    .copy_from_slice(&bytes);
            }
            write(
                &mut devices,
                geometry.pointer_map_address(0),
                &maps,
                IoKind::Metadata,
            )?;
        }
        let empty = journal::encode(
            &Transaction {
                sequence: 0,
                pages: Vec::new(),
            },
            shared,
        );
        write(
            &mut devices,
            PageAddress::new(0, shared.journal_start),
            &empty,
            IoKind::Journal,
        )?;
        for (index, device) in devices.iter_mut().enumerate() {
            device.flush().map_err(|error| FormatError::Device {
                device: index as u32,
                error,
            })?;
        }
        for index in 0..layout.devices.len() {
            for copy in 0..2 {
                let page = encode_superblock(&layout, index, copy);
                write(
                    &mut devices,
                    PageAddress::new(index as u32, copy),
                    &page,
                    IoKind::Metadata,
                )?;
            }
        }
        for (index, device) in devices.iter_mut().enumerate() {
            device.flush().map_err(|error| FormatError::Device {
                device: index as u32,
                error,
            })?;
        }
        Self::mount(devices).map_err(FormatError::Verify)
    }

    /// Mounts the file system on `devices` (in file-system order): reads and
    /// checks all metadata, replays a complete journal transaction, and
    /// refuses any image with a problem.
    pub fn mount(devices: Vec<D>) -> Result<Self, MountError> {
        let (mut store, journal) = Self::load_checked(devices, false)?;
        if let Some(transaction) = journal {
            // Replay only pages not already in place, so a clean image mounts without writing.
            let mut stale = Vec::new();
            for (address, image) in transaction.pages {
                let mut current = [0u8; PAGE_SIZE];
                store.devices[address.device as usize]
                    .read(address.byte_offset(), &mut current, IoKind::Metadata)
                    .map_err(|error| MountError::Device {
                        device: address.device,
                        error,
                    })?;
                if current != *image {
                    stale.push((address, image));
                }
            }
            if !stale.is_empty() {
                store.write_in_place(&stale).map_err(mount_error)?;
                store.flush_devices().map_err(mount_error)?;
            }
        }
        Ok(store)
    }

    /// Mounts without ever writing (for devices opened read-only): like
    /// [`Store::mount`], but a journal transaction not yet in place is
    /// replayed in RAM only, so the store sees exactly what a read-write
    /// mount would. Reads work; every change, and opening a file for
    /// writing, is refused with [`StoreError::ReadOnly`].
    pub fn mount_read_only(devices: Vec<D>) -> Result<Self, MountError> {
        Self::load_checked(devices, true).map(|(store, _)| store)
    }

    /// Loads and checks the image (the journal overlaid in RAM) and returns
    /// the store with the journal's complete transaction, if any.
    fn load_checked(
        mut devices: Vec<D>,
        read_only: bool,
    ) -> Result<(Self, Option<Transaction>), MountError> {
        let loaded = load(&mut devices)?;
        if !loaded.problems.is_empty() {
            return Err(MountError::Inconsistent {
                problems: loaded.problems,
            });
        }
        let journal = loaded.journal.clone();
        let mut store = Self::from_loaded(devices, loaded);
        store.read_only = read_only;
        Ok((store, journal))
    }

    fn from_loaded(devices: Vec<D>, loaded: Loaded) -> Self {
        let slot_count = loaded.slots.len();
        Self {
            block_shift: loaded.layout.shared.block_size.trailing_zeros(),
            data_cursors: vec![0; loaded.layout.devices.len()],
            devices,
            layout: loaded.layout,
            slots: loaded.slots,
            pointer_maps: loaded.pointer_maps,
            data_maps: loaded.data_maps,
            dirty: BTreeSet::new(),
            sequence: loaded.sequence,
            handles: Vec::new(),
            readers: vec![0; slot_count],
            writers: vec![false; slot_count],
            failed: false,
            read_only: false,
        }
    }

    /// fsck's repair step: replays the journal, rewrites superblock copies and,
    /// when asked, rebuilds the maps from the files (through the journal).
    pub(crate) fn repair(
        devices: &mut [D],
        loaded: Loaded,
        rebuild_maps: bool,
    ) -> Result<(), MountError> {
        for &(device, copy) in &loaded.superblock_repairs {
            let page = encode_superblock(&loaded.layout, device as usize, copy);
            devices[device as usize]
                .write(
                    PageAddress::new(device, copy).byte_offset(),
                    &page,
                    IoKind::Metadata,
                )
                .map_err(|error| MountError::Device { device, error })?;
        }
        let journal = loaded.journal.clone();
        let owned_pointer_slots = loaded.owned_pointer_slots.clone();
        let owned_data_blocks = loaded.owned_data_blocks.clone();
        let mut store = Store::from_loaded(devices.iter_mut().collect(), loaded);
        if let Some(transaction) = journal {
            store
                .write_in_place(&transaction.pages)
                .map_err(mount_error)?;
        }
        store.flush_devices().map_err(mount_error)?;
        if rebuild_maps {
            store.pointer_maps = owned_pointer_slots;
            store.data_maps = owned_data_blocks;
            for geometry in store.layout.devices.clone() {
                for page in 0..geometry.pointer_map_pages {
                    store.dirty.insert(Dirty::PointerMap {
                        device: geometry.device_index,
                        page,
                    });
                }
                for page in 0..geometry.data_map_pages {
                    store.dirty.insert(Dirty::DataMap {
                        device: geometry.device_index,
                        page,
                    });
                }
            }
            store.commit_transaction().map_err(mount_error)?;
        }
        store.flush_devices().map_err(mount_error)
    }

    /// Flushes everything and hands the devices back.
    pub fn unmount(mut self) -> Result<Vec<D>, StoreError> {
        self.flush()?;
        Ok(self.devices)
    }

    /// Hands the devices back without flushing (a simulated power cut).
    pub fn into_devices(self) -> Vec<D> {
        self.devices
    }

    pub fn devices(&self) -> &[D] {
        &self.devices
    }

    pub fn devices_mut(&mut self) -> &mut [D] {
        &mut self.devices
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn block_size(&self) -> u32 {
        self.layout.shared.block_size
    }

    /// Bytes of the largest file this file system can hold.
    pub fn largest_file(&self) -> u64 {
        u64::from(self.layout.shared.pointer_blocks_per_file)
            * POINTERS_PER_BLOCK as u64
            * u64::from(self.block_size())
    }

    /// True if metadata changed in RAM awaits the next flush.
    pub fn has_unflushed_metadata(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn space(&self) -> SpaceInfo {
        SpaceInfo {
            block_size: self.block_size(),
            devices: self.layout.shared.device_count,
            data_blocks: self
                .data_maps
                .iter()
                .map(|map| u64::from(map.length()))
                .sum(),
            free_data_blocks: self
                .data_maps
                .iter()
                .map(|map| u64::from(map.free_count()))
                .sum(),
            pointer_slots: self
                .pointer_maps
                .iter()
                .map(|map| u64::from(map.length()))
                .sum(),
            free_pointer_slots: self
                .pointer_maps
                .iter()
                .map(|map| u64::from(map.free_count()))
                .sum(),
            files: self
                .slots
                .iter()
                .filter(|slot| slot.file().is_some())
                .count() as u32,
            max_files: self.layout.shared.max_files,
            largest_file: self.largest_file(),
            journal_entries: self.layout.shared.journal_entries,
        }
    }

    // ----- Looking files up -----

    fn find(&self, name: &str) -> Result<u32, StoreError> {
        self.slots
            .iter()
            .position(|slot| slot.file().is_some_and(|file| file.name == name))
            .map(|index| index as u32)
            .ok_or_else(|| StoreError::NotFound {
                name: name.to_string(),
            })
    }

    fn file(&self, slot: u32) -> &FileRecord {
        match &self.slots[slot as usize] {
            Slot::File(file) => file,
            _ => unreachable!("slot {slot} was looked up as a file"),
        }
    }

    fn file_mut(&mut self, slot: u32) -> &mut FileRecord {
        match &mut self.slots[slot as usize] {
            Slot::File(file) => file,
            _ => unreachable!("slot {slot} was looked up as a file"),
        }
    }

    /// The redo logs directly over `slot`, in table order.
    fn redo_logs_over(&self, slot: u32) -> impl Iterator<Item = u32> + '_ {
        (0..self.slots.len() as u32).filter(move |&index| {
            self.slots[index as usize]
                .file()
                .is_some_and(|file| file.parent == Some(slot))
        })
    }

    /// Of `slots`, the file with the smallest name (names are unique, so
    /// this is deterministic whatever the table order).
    fn first_by_name(&self, slots: impl Iterator<Item = u32>) -> Option<u32> {
        slots.min_by(|&left, &right| self.file(left).name.cmp(&self.file(right).name))
    }

    /// The redo log directly over `slot` with the smallest name, if any: the
    /// one a refusal names.
    fn first_redo_log(&self, slot: u32) -> Option<u32> {
        self.first_by_name(self.redo_logs_over(slot))
    }

    /// Refuses with [`StoreError::HasRedoLog`] (naming the first log by name)
    /// if any redo log is over `slot`.
    fn check_no_redo_log(&self, slot: u32) -> Result<(), StoreError> {
        match self.first_redo_log(slot) {
            Some(child) => Err(StoreError::HasRedoLog {
                name: self.file(slot).name.clone(),
                redo_log: self.file(child).name.clone(),
            }),
            None => Ok(()),
        }
    }

    fn is_open(&self, slot: u32) -> bool {
        self.readers[slot as usize] > 0 || self.writers[slot as usize]
    }

    fn info(&self, slot: u32) -> FileInfo {
        let file = self.file(slot);
        FileInfo {
            name: file.name.clone(),
            kind: file.kind,
            length: file.length,
            parent: file.parent.map(|parent| self.file(parent).name.clone()),
            redo_logs: {
                let mut names: Vec<String> = self
                    .redo_logs_over(slot)
                    .map(|child| self.file(child).name.clone())
                    .collect();
                names.sort();
                names
            },
            allocated_blocks: file.allocated_blocks(),
            readers: self.readers[slot as usize],
            writer: self.writers[slot as usize],
        }
    }

    /// Every file, in table order.
    pub fn list(&self) -> Vec<FileInfo> {
        (0..self.slots.len() as u32)
            .filter(|&slot| self.slots[slot as usize].file().is_some())
            .map(|slot| self.info(slot))
            .collect()
    }

    pub fn stat(&self, name: &str) -> Result<FileInfo, StoreError> {
        Ok(self.info(self.find(name)?))
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        if self.failed {
            Err(StoreError::Failed)
        } else {
            Ok(())
        }
    }

    /// Usable, and not mounted read-only: the check before any change.
    fn check_writable(&self) -> Result<(), StoreError> {
        self.check_usable()?;
        if self.read_only {
            Err(StoreError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// True when mounted with [`Store::mount_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn check_new_name(&self, name: &str) -> Result<(), StoreError> {
        if !name_is_valid(name) {
            return Err(StoreError::InvalidName {
                name: name.to_string(),
            });
        }
        if self.find(name).is_ok() {
            return Err(StoreError::AlreadyExists {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn free_slot(&self) -> Result<u32, StoreError> {
        self.slots
            .iter()
            .position(|slot| *slot == Slot::Free)
            .map(|index| index as u32)
            .ok_or(StoreError::NoSpace(Resource::FileTable {
                slots: self.layout.shared.max_files,
            }))
    }

    fn check_length(&self, length: u64) -> Result<(), StoreError> {
        if !length.is_multiple_of(SECTOR_SIZE as u64) {
            return Err(StoreError::LengthUnaligned { length });
        }
        if length > self.largest_file() {
            return Err(StoreError::TooLarge {
                length,
                maximum: self.largest_file(),
            });
        }
        Ok(())
    }

    fn check_space(&self, data_blocks: u64, pointer_blocks: u64) -> Result<(), StoreError> {
        let free_data: u64 = self
            .data_maps
            .iter()
            .map(|map| u64::from(map.free_count()))
            .sum();
        if data_blocks > free_data {
            return Err(StoreError::NoSpace(Resource::DataBlocks {
                needed: data_blocks,
                free: free_data,
            }));
        }
        let free_pointers: u64 = self
            .pointer_maps
            .iter()
            .map(|map| u64::from(map.free_count()))
            .sum();
        if pointer_blocks > free_pointers {
            return Err(StoreError::NoSpace(Resource::PointerBlocks {
                needed: pointer_blocks,
                free: free_pointers,
            }));
        }
        Ok(())
    }

    // ----- Allocation (RAM only; journaled by the caller's transaction) -----

    fn allocate_data_block(&mut self) -> Option<Pointer> {
        for device in 0..self.data_maps.len() {
            if let Some(block) = self.data_maps[device].find_clear(self.data_cursors[device]) {
                self.data_maps[device].set(block);
                self.data_cursors[device] = block + 1;
                self.dirty.insert(Dirty::DataMap {
                    device: device as u32,
                    page: block / MAP_BITS_PER_PAGE,
                });
                return Some(Pointer::new(device as u32, block));
            }
        }
        None
    }

    fn free_data_block(&mut self, pointer: Pointer) {
        let device = pointer.device();
        self.data_maps[device as usize].clear(pointer.block());
        self.dirty.insert(Dirty::DataMap {
            device,
            page: pointer.block() / MAP_BITS_PER_PAGE,
        });
    }

    fn allocate_pointer_slot(&mut self) -> Option<Pointer> {
        for device in 0..self.pointer_maps.len() {
            if let Some(block) = self.pointer_maps[device].find_clear(0) {
                self.pointer_maps[device].set(block);
                self.dirty.insert(Dirty::PointerMap {
                    device: device as u32,
                    page: block / MAP_BITS_PER_PAGE,
                });
                return Some(Pointer::new(device as u32, block));
            }
        }
        None
    }

    fn free_pointer_slot(&mut self, pointer: Pointer) {
        let device = pointer.device();
        self.pointer_maps[device as usize].clear(pointer.block());
        self.dirty.insert(Dirty::PointerMap {
            device,
            page: pointer.block() / MAP_BITS_PER_PAGE,
        });
    }

    fn mark_pointer_block(&mut self, slot: u32, index: usize) {
        self.dirty.insert(Dirty::PointerBlock {
            slot,
            index: index as u32,
        });
        self.dirty.insert(Dirty::Descriptor(slot));
    }

    /// Frees every block and pointer block of a file and empties its slot.
    fn release_file(&mut self, slot: u32) {
        let Slot::File(file) = core::mem::replace(&mut self.slots[slot as usize], Slot::Free)
        else {
            return;
        };
        for &pointer in file.blocks.iter().filter(|pointer| !pointer.is_null()) {
            self.free_data_block(pointer);
        }
        for &pointer in file
            .pointer_blocks
            .iter()
            .filter(|pointer| !pointer.is_null())
        {
            self.free_pointer_slot(pointer);
        }
        self.dirty.insert(Dirty::Descriptor(slot));
    }

    // ----- Data I/O helpers -----

    fn data_offset(&self, pointer: Pointer, within: u64) -> u64 {
        self.layout.devices[pointer.device() as usize].data_start
            + (u64::from(pointer.block()) << self.block_shift)
            + within
    }

    /// Writes zeros to `length` bytes of block `pointer` from `within`.
    fn zero_block_range(
        &mut self,
        pointer: Pointer,
        within: u64,
        length: u64,
    ) -> Result<(), StoreError> {
        let zeros = vec![0u8; (length as usize).min(COPY_CHUNK)];
        let mut done = 0;
        while done < length {
            let step = (length - done).min(COPY_CHUNK as u64) as usize;
            let offset = self.data_offset(pointer, within + done);
            self.devices[pointer.device() as usize]
                .write(offset, &zeros[..step], IoKind::Data)
                .map_err(device_error(pointer.device()))?;
            done += step as u64;
        }
        Ok(())
    }

    /// Zeros whole blocks, coalescing runs of adjacent blocks into large writes.
    fn zero_blocks(&mut self, blocks: &[Pointer]) -> Result<(), StoreError> {
        let block_size = u64::from(self.block_size());
        let mut index = 0;
        while index < blocks.len() {
            let first = blocks[index];
            let mut run = 1;
            while index + run < blocks.len()
                && blocks[index + run].device() == first.device()
                && u64::from(blocks[index + run].block()) == u64::from(first.block()) + run as u64
            {
                run += 1;
            }
            self.zero_block_range(first, 0, run as u64 * block_size)?;
            index += run;
        }
        Ok(())
    }

    /// The block holding file block `index` of `slot`, looking through redo logs.
    fn resolve(&self, slot: u32, index: usize) -> Pointer {
        let mut current = slot;
        loop {
            let file = self.file(current);
            let pointer = file.blocks[index];
            match (pointer.is_null(), file.parent) {
                (false, _) | (true, None) => return pointer,
                (true, Some(parent)) => current = parent,
            }
        }
    }

    fn flush_devices(&mut self) -> Result<(), StoreError> {
        for (index, device) in self.devices.iter_mut().enumerate() {
            device.flush().map_err(device_error(index as u32))?;
        }
        Ok(())
    }

    fn write_in_place(&mut self, pages: &[(PageAddress, Box<Page>)]) -> Result<(), StoreError> {
        for (address, page) in pages {
            self.devices[address.device as usize]
                .write(address.byte_offset(), &page[..], IoKind::Metadata)
                .map_err(device_error(address.device))?;
        }
        Ok(())
    }

    // ----- Transactions -----

    fn encode_dirty(&self, sequence: u64) -> Vec<(PageAddress, Box<Page>)> {
        let shared = &self.layout.shared;
        let mut pages = Vec::with_capacity(self.dirty.len());
        for &dirty in &self.dirty {
            match dirty {
                Dirty::Descriptor(slot) => {
                    let address = PageAddress::new(0, shared.table_start + u64::from(slot));
                    let page = encode_descriptor(
                        &self.slots[slot as usize],
                        address,
                        shared.file_system,
                        sequence,
                    );
                    pages.push((address, Box::new(page)));
                }
                Dirty::PointerBlock { slot, index } => {
                    let Some(file) = self.slots[slot as usize].file() else {
                        continue;
                    };
                    let Some(&pointer) = file.pointer_blocks.get(index as usize) else {
                        continue;
                    };
                    if pointer.is_null() {
                        continue;
                    }
                    let address = self.layout.devices[pointer.device() as usize]
                        .pointer_block_address(pointer.block());
                    pages.push((address, Box::new(file.encode_pointer_block(index as usize))));
                }
                Dirty::PointerMap { device, page } => {
                    let address = self.layout.devices[device as usize].pointer_map_address(page);
                    let bytes = self.pointer_maps[device as usize].encode_page(
                        page,
                        PageKind::PointerMap,
                        address,
                        shared.file_system,
                        sequence,
                    );
                    pages.push((address, Box::new(bytes)));
                }
                Dirty::DataMap { device, page } => {
                    let address = self.layout.devices[device as usize].data_map_address(page);
                    let bytes = self.data_maps[device as usize].encode_page(
                        page,
                        PageKind::DataMap,
                        address,
                        shared.file_system,
                        sequence,
                    );
                    pages.push((address, Box::new(bytes)));
                }
            }
        }
        pages
    }

    /// Journals every dirty page, then writes the pages in place; see
    /// [`crate::journal`] for why this order makes the update atomic.
    fn commit_transaction(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let result = self.commit_transaction_steps();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn commit_transaction_steps(&mut self) -> Result<(), StoreError> {
        // 1. Data written so far, and the previous transaction's in-place pages, become durable.
        self.flush_devices()?;
        let sequence = self.sequence + 1;
        let pages = self.encode_dirty(sequence);
        let capacity = self.layout.shared.journal_entries;
        if pages.len() > capacity as usize {
            return Err(StoreError::TransactionTooLarge {
                pages: pages.len(),
                capacity,
            });
        }
        // 2. The transaction is written and made durable: from here on it survives a crash.
        let transaction = Transaction { sequence, pages };
        let bytes = journal::encode(&transaction, &self.layout.shared);
        let journal_offset = self.layout.shared.journal_start * PAGE_SIZE as u64;
        self.devices[0]
            .write(journal_offset, &bytes, IoKind::Journal)
            .map_err(device_error(0))?;
        self.devices[0].flush().map_err(device_error(0))?;
        self.sequence = sequence;
        self.dirty.clear();
        // 3. In-place updates; flushed by step 1 of the next transaction (or replayed from the journal).
        self.write_in_place(&transaction.pages)
    }

    /// Commits metadata left dirty by redo-log writes before an operation adds
    /// its own, so one transaction never holds more than one operation's pages.
    fn commit_pending(&mut self) -> Result<(), StoreError> {
        self.check_writable()?;
        self.commit_transaction()
    }

    /// Makes every write issued so far durable (the acknowledgement point).
    /// On a read-only store there is nothing to flush.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check_usable()?;
        if self.read_only {
            return Ok(());
        }
        if self.dirty.is_empty() {
            self.flush_devices()
        } else {
            self.commit_transaction()
        }
    }

    // ----- File operations -----

    /// Creates a virtual disk of `length` bytes (a multiple of 512), all its
    /// blocks allocated now and zeroed.
    pub fn create(&mut self, name: &str, length: u64) -> Result<(), StoreError> {
        self.create_uncommitted(name, length)?;
        self.commit_transaction()
    }

    /// [`Store::create`] without the commit: the new disk exists in RAM and
    /// can be opened and written, and it reaches the device only with the
    /// next transaction ([`Store::flush`] or any metadata operation). Until
    /// then a crash leaves no trace of it, and [`Store::forget_uncommitted`]
    /// takes it back: how an import is made all-or-nothing.
    pub(crate) fn create_uncommitted(&mut self, name: &str, length: u64) -> Result<(), StoreError> {
        self.commit_pending()?;
        self.check_new_name(name)?;
        self.check_length(length)?;
        let slot = self.free_slot()?;
        let blocks = block_count(length, self.block_size());
        let pointer_blocks = pointer_block_count(blocks);
        self.check_space(blocks, pointer_blocks)?;
        let mut record = FileRecord {
            name: name.to_string(),
            kind: FileKind::Disk,
            length,
            parent: None,
            pointer_blocks: Vec::with_capacity(pointer_blocks as usize),
            blocks: Vec::with_capacity(blocks as usize),
        };
        for _ in 0..blocks {
            let Some(pointer) = self.allocate_data_block() else {
                unreachable!("space was checked")
            };
            record.blocks.push(pointer);
        }
        for _ in 0..pointer_blocks {
            let Some(pointer) = self.allocate_pointer_slot() else {
                unreachable!("space was checked")
            };
            record.pointer_blocks.push(pointer);
        }
        let new_blocks = record.blocks.clone();
        self.slots[slot as usize] = Slot::File(record);
        for index in 0..pointer_blocks as usize {
            self.mark_pointer_block(slot, index);
        }
        self.dirty.insert(Dirty::Descriptor(slot));
        if let Err(error) = self.zero_blocks(&new_blocks) {
            // Nothing was journaled: undo in RAM.
            self.release_file(slot);
            self.failed = true;
            return Err(error);
        }
        Ok(())
    }

    /// Takes back a disk made by [`Store::create_uncommitted`] that is not
    /// committed yet (and is closed): its slot and blocks are free again in
    /// RAM, as they still are on the device. Its blocks never held
    /// acknowledged data, so they may be reused at once. (Only the host
    /// import uses it, hence the `std` feature.)
    #[cfg(feature = "std")]
    pub(crate) fn forget_uncommitted(&mut self, name: &str) {
        if let Ok(slot) = self.find(name)
            && !self.is_open(slot)
        {
            self.release_file(slot);
        }
    }

    /// Deletes a file (a redo log too); it must be closed and have no redo logs over it.
    pub fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        self.commit_pending()?;
        let slot = self.find(name)?;
        self.check_removable(slot)?;
        self.release_file(slot);
        self.commit_transaction()
    }

    fn check_removable(&self, slot: u32) -> Result<(), StoreError> {
        let name = &self.file(slot).name;
        if self.is_open(slot) {
            return Err(StoreError::Busy { name: name.clone() });
        }
        self.check_no_redo_log(slot)
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), StoreError> {
        self.commit_pending()?;
        let slot = self.find(from)?;
        if from == to {
            return Ok(());
        }
        self.check_new_name(to)?;
        self.file_mut(slot).name = to.to_string();
        self.dirty.insert(Dirty::Descriptor(slot));
        self.commit_transaction()
    }

    /// Grows (new bytes read as zero) or shrinks a closed virtual disk that has no redo logs.
    pub fn resize(&mut self, name: &str, length: u64) -> Result<(), StoreError> {
        self.commit_pending()?;
        let slot = self.find(name)?;
        self.check_removable(slot)?;
        if self.file(slot).kind != FileKind::Disk {
            return Err(StoreError::RedoLogLength {
                name: name.to_string(),
            });
        }
        self.check_length(length)?;
        let block_size = u64::from(self.block_size());
        let old_length = self.file(slot).length;
        let old_blocks = self.file(slot).blocks.len() as u64;
        let new_blocks = block_count(length, self.block_size());
        let old_pointer_blocks = self.file(slot).pointer_blocks.len() as u64;
        let new_pointer_blocks = pointer_block_count(new_blocks);
        if length > old_length {
            self.check_space(
                new_blocks - old_blocks,
                new_pointer_blocks.saturating_sub(old_pointer_blocks),
            )?;
            // The tail of the old last block may hold bytes from before a shrink.
            let tail_end = (old_blocks * block_size).min(length);
            if tail_end > old_length {
                let last = self.file(slot).blocks[(old_length / block_size) as usize];
                let within = old_length % block_size;
                self.zero_block_range(last, within, tail_end - old_length)?;
            }
            let mut added = Vec::new();
            for _ in old_blocks..new_blocks {
                let Some(pointer) = self.allocate_data_block() else {
                    unreachable!("space was checked")
                };
                added.push(pointer);
            }
            let mut added_pointer_blocks = Vec::new();
            for _ in old_pointer_blocks..new_pointer_blocks {
                let Some(pointer) = self.allocate_pointer_slot() else {
                    unreachable!("space was checked")
                };
                added_pointer_blocks.push(pointer);
            }
            if let Err(error) = self.zero_blocks(&added) {
                self.failed = true;
                return Err(error);
            }
            let file = self.file_mut(slot);
            file.blocks.extend_from_slice(&added);
            file.pointer_blocks.extend_from_slice(&added_pointer_blocks);
            file.length = length;
            let first_changed = (old_blocks as usize) / POINTERS_PER_BLOCK;
            for index in first_changed..new_pointer_blocks as usize {
                self.mark_pointer_block(slot, index);
            }
        } else {
            let file = self.file_mut(slot);
            let freed_blocks = file.blocks.split_off(new_blocks as usize);
            let freed_pointer_blocks = file.pointer_blocks.split_off(new_pointer_blocks as usize);
            file.length = length;
            for pointer in freed_blocks {
                self.free_data_block(pointer);
            }
            for pointer in freed_pointer_blocks {
                self.free_pointer_slot(pointer);
            }
            if new_blocks > 0 {
                self.mark_pointer_block(slot, (new_blocks as usize - 1) / POINTERS_PER_BLOCK);
            }
        }
        self.dirty.insert(Dirty::Descriptor(slot));
        self.commit_transaction()
    }

    /// Starts a copy-on-write redo log named `redo_log` over `base`: from now
    /// on `base` is frozen and writes go to the log. Logs stack (`base` may be
    /// a redo log itself) and branch: `base` may already have redo logs over
    /// it (it is frozen already), and each log sees its own writes over the
    /// shared base. Refused when `base` is open for writing, `redo_log` is
    /// taken or invalid, or the file table is full.
    pub fn snapshot(&mut self, base: &str, redo_log: &str) -> Result<(), StoreError> {
        self.commit_pending()?;
        let parent = self.find(base)?;
        if self.writers[parent as usize] {
            return Err(StoreError::Busy {
                name: base.to_string(),
            });
        }
        self.check_new_name(redo_log)?;
        let slot = self.free_slot()?;
        let length = self.file(parent).length;
        let blocks = block_count(length, self.block_size()) as usize;
        self.slots[slot as usize] = Slot::File(FileRecord {
            name: redo_log.to_string(),
            kind: FileKind::RedoLog,
            length,
            parent: Some(parent),
            pointer_blocks: vec![Pointer::NULL; pointer_block_count(blocks as u64) as usize],
            blocks: vec![Pointer::NULL; blocks],
        });
        self.dirty.insert(Dirty::Descriptor(slot));
        self.commit_transaction()
    }

    fn redo_log_slot(&self, name: &str) -> Result<u32, StoreError> {
        let slot = self.find(name)?;
        if self.file(slot).kind != FileKind::RedoLog {
            return Err(StoreError::NotRedoLog {
                name: name.to_string(),
            });
        }
        self.check_removable(slot)?;
        Ok(slot)
    }

    /// Merges a redo log into the file under it, in one transaction: the
    /// parent takes over the log's blocks (its replaced blocks are freed) and
    /// the log disappears.
    ///
    /// Checks, in this order: the log exists ([`StoreError::NotFound`]), is a
    /// redo log ([`StoreError::NotRedoLog`]), is closed
    /// ([`StoreError::Busy`] naming the log) and has no redo log over it
    /// ([`StoreError::HasRedoLog`]); then it is its parent's only redo log
    /// ([`StoreError::SharedBase`], naming the first other log by name:
    /// merging would change what the siblings read); then the parent is
    /// closed ([`StoreError::Busy`] naming the parent); then space for any
    /// pointer blocks the parent lacks.
    pub fn commit_redo_log(&mut self, name: &str) -> Result<(), StoreError> {
        self.commit_pending()?;
        let slot = self.redo_log_slot(name)?;
        let Some(parent) = self.file(slot).parent else {
            unreachable!("a redo log has a parent")
        };
        let siblings = self
            .redo_logs_over(parent)
            .filter(|&sibling| sibling != slot);
        if let Some(other) = self.first_by_name(siblings) {
            return Err(StoreError::SharedBase {
                redo_log: name.to_string(),
                base: self.file(parent).name.clone(),
                other: self.file(other).name.clone(),
            });
        }
        if self.is_open(parent) {
            return Err(StoreError::Busy {
                name: self.file(parent).name.clone(),
            });
        }
        // Pointer blocks the parent lacks (when it is a redo log itself).
        let needed = {
            let (log, base) = (self.file(slot), self.file(parent));
            (0..log.pointer_blocks.len())
                .filter(|&index| {
                    base.pointer_blocks[index].is_null()
                        && log.blocks[index * POINTERS_PER_BLOCK
                            ..((index + 1) * POINTERS_PER_BLOCK).min(log.blocks.len())]
                            .iter()
                            .any(|pointer| !pointer.is_null())
                })
                .count() as u64
        };
        self.check_space(0, needed)?;
        let log_blocks = self.file(slot).blocks.clone();
        for (index, &pointer) in log_blocks.iter().enumerate() {
            if pointer.is_null() {
                continue;
            }
            let pointer_block = index / POINTERS_PER_BLOCK;
            if self.file(parent).pointer_blocks[pointer_block].is_null() {
                let Some(location) = self.allocate_pointer_slot() else {
                    unreachable!("space was checked")
                };
                self.file_mut(parent).pointer_blocks[pointer_block] = location;
            }
            let replaced = core::mem::replace(&mut self.file_mut(parent).blocks[index], pointer);
            if !replaced.is_null() {
                self.free_data_block(replaced);
            }
            self.mark_pointer_block(parent, pointer_block);
        }
        // The log's blocks now belong to the parent: free only its pointer blocks and slot.
        let log = self.file_mut(slot);
        log.blocks
            .iter_mut()
            .for_each(|pointer| *pointer = Pointer::NULL);
        self.release_file(slot);
        self.dirty.insert(Dirty::Descriptor(parent));
        self.commit_transaction()
    }

    /// Drops a redo log and every block it holds; the file under it is as
    /// before the snapshot. Sibling logs over the same file are untouched:
    /// every block a log holds is its own (a copy-up or a block merged from
    /// its own child), never shared. Refused when the log is open or has a
    /// redo log over it.
    pub fn discard_redo_log(&mut self, name: &str) -> Result<(), StoreError> {
        self.commit_pending()?;
        let slot = self.redo_log_slot(name)?;
        self.release_file(slot);
        self.commit_transaction()
    }

    // ----- Open files -----

    /// Opens a file: [`OpenMode::ReadWrite`] is exclusive and refused for a
    /// file with any redo log over it; [`OpenMode::ReadOnly`] is shared.
    pub fn open(&mut self, name: &str, mode: OpenMode) -> Result<FileHandle, StoreError> {
        self.check_usable()?;
        let slot = self.find(name)?;
        match mode {
            OpenMode::ReadWrite => {
                self.check_writable()?;
                if self.is_open(slot) {
                    return Err(StoreError::Busy {
                        name: name.to_string(),
                    });
                }
                self.check_no_redo_log(slot)?;
                self.writers[slot as usize] = true;
            }
            OpenMode::ReadOnly => {
                if self.writers[slot as usize] {
                    return Err(StoreError::Busy {
                        name: name.to_string(),
                    });
                }
                self.readers[slot as usize] += 1;
            }
        }
        let index = self
            .handles
            .iter()
            .position(|entry| !entry.live)
            .unwrap_or_else(|| {
                self.handles.push(HandleEntry {
                    slot: 0,
                    mode,
                    serial: 0,
                    live: false,
                });
                self.handles.len() - 1
            });
        let entry = &mut self.handles[index];
        entry.serial = entry.serial.wrapping_add(1);
        *entry = HandleEntry {
            slot,
            mode,
            serial: entry.serial,
            live: true,
        };
        Ok(FileHandle {
            index: index as u32,
            serial: entry.serial,
        })
    }

    fn handle_entry(&self, handle: FileHandle) -> Result<HandleEntry, StoreError> {
        match self.handles.get(handle.index as usize) {
            Some(entry) if entry.live && entry.serial == handle.serial => Ok(*entry),
            _ => Err(StoreError::StaleHandle),
        }
    }

    pub fn close(&mut self, handle: FileHandle) -> Result<(), StoreError> {
        let entry = self.handle_entry(handle)?;
        match entry.mode {
            OpenMode::ReadWrite => self.writers[entry.slot as usize] = false,
            OpenMode::ReadOnly => self.readers[entry.slot as usize] -= 1,
        }
        self.handles[handle.index as usize].live = false;
        Ok(())
    }

    /// Length in bytes of an open file.
    pub fn length(&self, handle: FileHandle) -> Result<u64, StoreError> {
        Ok(self.file(self.handle_entry(handle)?.slot).length)
    }

    fn check_request(&self, slot: u32, offset: u64, length: usize) -> Result<(), StoreError> {
        let length = length as u64;
        if !offset.is_multiple_of(SECTOR_SIZE as u64) || !length.is_multiple_of(SECTOR_SIZE as u64)
        {
            return Err(StoreError::Unaligned { offset, length });
        }
        let file_length = self.file(slot).length;
        match offset.checked_add(length) {
            Some(end) if end <= file_length => Ok(()),
            _ => Err(StoreError::OutOfRange {
                offset,
                length,
                file_length,
            }),
        }
    }

    /// Reads `buffer.len()` bytes at `offset` (both multiples of 512). On a
    /// virtual disk this is one device read per block touched and nothing else.
    pub fn read(
        &mut self,
        handle: FileHandle,
        offset: u64,
        buffer: &mut [u8],
    ) -> Result<(), StoreError> {
        let slot = self.handle_entry(handle)?.slot;
        self.check_request(slot, offset, buffer.len())?;
        let block_mask = (1u64 << self.block_shift) - 1;
        let mut done = 0;
        while done < buffer.len() {
            let position = offset + done as u64;
            let index = (position >> self.block_shift) as usize;
            let within = position & block_mask;
            let step = ((block_mask + 1 - within) as usize).min(buffer.len() - done);
            let pointer = self.resolve(slot, index);
            let device_offset = self.data_offset(pointer, within);
            self.devices[pointer.device() as usize]
                .read(device_offset, &mut buffer[done..done + step], IoKind::Data)
                .map_err(device_error(pointer.device()))?;
            done += step;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (both multiples of 512). On a virtual disk
    /// this is one device write per block touched and nothing else; in a redo
    /// log, the first write to a block copies the block up from below.
    pub fn write(
        &mut self,
        handle: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let entry = self.handle_entry(handle)?;
        let slot = entry.slot;
        if entry.mode != OpenMode::ReadWrite {
            return Err(StoreError::ReadOnlyHandle {
                name: self.file(slot).name.clone(),
            });
        }
        self.check_request(slot, offset, data.len())?;
        let block_mask = (1u64 << self.block_shift) - 1;
        let mut done = 0;
        while done < data.len() {
            let position = offset + done as u64;
            let index = (position >> self.block_shift) as usize;
            let within = position & block_mask;
            let step = ((block_mask + 1 - within) as usize).min(data.len() - done);
            let pointer = self.file(slot).blocks[index];
            if pointer.is_null() {
                self.copy_on_write(slot, index, within, &data[done..done + step])?;
            } else {
                let device_offset = self.data_offset(pointer, within);
                self.devices[pointer.device() as usize]
                    .write(device_offset, &data[done..done + step], IoKind::Data)
                    .map_err(device_error(pointer.device()))?;
            }
            done += step;
        }
        Ok(())
    }

    /// First write to block `index` of redo log `slot`: allocate a block, fill
    /// it from the parent chain around the new bytes, and point the log at it
    /// (in RAM; journaled at the next flush).
    fn copy_on_write(
        &mut self,
        slot: u32,
        index: usize,
        within: u64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        // Keep the pending transaction within the journal: this block adds at most four pages.
        if self.dirty.len() + 4 > self.layout.shared.journal_entries as usize {
            self.commit_transaction()?;
        }
        let pointer_block = index / POINTERS_PER_BLOCK;
        let needs_pointer_block = self.file(slot).pointer_blocks[pointer_block].is_null();
        self.check_space(1, u64::from(needs_pointer_block))?;
        let Some(Some(parent)) = self.slots[slot as usize].file().map(|file| file.parent) else {
            unreachable!("only redo logs have holes")
        };
        let source = self.resolve(parent, index);
        let Some(target) = self.allocate_data_block() else {
            unreachable!("space was checked")
        };
        let block_size = u64::from(self.block_size());
        let end = within + data.len() as u64;
        let copied = self
            .copy_block_range(source, target, 0, within)
            .and_then(|()| self.copy_block_range(source, target, end, block_size - end))
            .and_then(|()| {
                let offset = self.data_offset(target, within);
                self.devices[target.device() as usize]
                    .write(offset, data, IoKind::Data)
                    .map_err(device_error(target.device()))
            });
        if let Err(error) = copied {
            self.free_data_block(target);
            return Err(error);
        }
        if needs_pointer_block {
            let Some(location) = self.allocate_pointer_slot() else {
                unreachable!("space was checked")
            };
            self.file_mut(slot).pointer_blocks[pointer_block] = location;
        }
        self.file_mut(slot).blocks[index] = target;
        self.mark_pointer_block(slot, pointer_block);
        Ok(())
    }

    fn copy_block_range(
        &mut self,
        source: Pointer,
        target: Pointer,
        within: u64,
        length: u64,
    ) -> Result<(), StoreError> {
        let mut buffer = vec![0u8; (length as usize).min(COPY_CHUNK)];
        let mut done = 0;
        while done < length {
            let step = (length - done).min(COPY_CHUNK as u64) as usize;
            let from = self.data_offset(source, within + done);
            self.devices[source.device() as usize]
                .read(from, &mut buffer[..step], IoKind::Data)
                .map_err(device_error(source.device()))?;
            let to = self.data_offset(target, within + done);
            self.devices[target.device() as usize]
                .write(to, &buffer[..step], IoKind::Data)
                .map_err(device_error(target.device()))?;
            done += step as u64;
        }
        Ok(())
    }
}

fn mount_error(error: StoreError) -> MountError {
    match error {
        StoreError::Device { device, error } => MountError::Device { device, error },
        _ => MountError::Device {
            device: 0,
            error: DeviceError::Host(error.to_string()),
        },
    }
}
