//! x86-64 four-level page tables: building them and checking them.
//!
//! [`AddressSpace`] maps pages with explicit [`Permissions`]; it refuses a
//! mapping that would be both writable and executable, a misaligned or
//! non-canonical address, and a page that is already mapped. Intermediate
//! entries are always present + writable (+ user in the lower half): the
//! leaf alone decides the rights, which keeps the effective permission of a
//! page equal to what was asked for.
//!
//! [`check_wx`] walks a live hierarchy and proves the core's invariants: no
//! leaf is both writable and executable, no page in the upper (core) half is
//! reachable from ring 3. (That the core never executes a ring-3 page is
//! SMEP's job at run time.)
//!
//! Memory for tables comes through the [`TableMemory`] trait, so the same
//! code runs on the host over a `Vec` and in the core over the direct
//! physical map.

use crate::address::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysicalAddress, VirtualAddress};

/// Entry bits (Intel SDM vol. 3, 4.5).
pub mod entry {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const HUGE: u64 = 1 << 7;
    pub const GLOBAL: u64 = 1 << 8;
    /// Page-level write-through and cache disable (device memory).
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// Software bit: the frame is shared (queue memory, device memory) and
    /// is not released when this address space is cleared.
    pub const SHARED: u64 = 1 << 9;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Bits 51..12: the physical address of the next table or the page.
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// The first address of the upper (core) half.
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// What a mapping allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Permissions {
    pub write: bool,
    pub execute: bool,
    pub user: bool,
    pub global: bool,
    /// Uncached (device memory).
    pub uncached: bool,
    /// Not owned by this address space: never released by
    /// [`AddressSpace::clear_user_half`].
    pub shared: bool,
}

impl Permissions {
    /// Read-only, not executable.
    pub const READ: Self = Self {
        write: false,
        execute: false,
        user: false,
        global: false,
        uncached: false,
        shared: false,
    };
    /// Read + write, not executable.
    pub const READ_WRITE: Self = Self {
        write: true,
        ..Self::READ
    };
    /// Read + execute.
    pub const READ_EXECUTE: Self = Self {
        execute: true,
        ..Self::READ
    };

    /// The same rights, for ring 3.
    pub const fn for_user(self) -> Self {
        Self { user: true, ..self }
    }

    /// The same rights, for a frame this address space does not own.
    pub const fn shared(self) -> Self {
        Self {
            shared: true,
            ..self
        }
    }

    /// The same rights, uncached (for device registers).
    pub const fn uncached(self) -> Self {
        Self {
            uncached: true,
            ..self
        }
    }

    /// The same rights, global (kept in the TLB across address spaces).
    pub const fn global(self) -> Self {
        Self {
            global: true,
            ..self
        }
    }

    fn leaf_bits(self) -> u64 {
        let mut bits = entry::PRESENT | entry::ACCESSED;
        if self.write {
            bits |= entry::WRITABLE | entry::DIRTY;
        }
        if !self.execute {
            bits |= entry::NO_EXECUTE;
        }
        if self.user {
            bits |= entry::USER;
        }
        if self.global {
            bits |= entry::GLOBAL;
        }
        if self.uncached {
            bits |= entry::WRITE_THROUGH | entry::CACHE_DISABLE;
        }
        if self.shared {
            bits |= entry::SHARED;
        }
        bits
    }
}

/// Why a mapping was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Writable and executable at once: W^X forbids it.
    WriteAndExecute,
    /// An address is not aligned to the page size.
    Misaligned,
    /// The virtual address is not canonical.
    NonCanonical,
    /// A user mapping in the upper half or a core mapping in the lower half.
    WrongHalf,
    /// Something is already mapped there.
    AlreadyMapped,
    /// No memory for a page table.
    OutOfMemory,
}

/// Where page tables live.
pub trait TableMemory {
    /// A fresh, zeroed 4 KiB frame for a table.
    fn allocate_table(&mut self) -> Option<PhysicalAddress>;
    /// Returns a table frame to the pool.
    fn free_table(&mut self, table: PhysicalAddress);
    /// Returns a frame that a leaf entry mapped (when an address space is
    /// cleared).
    fn release_page(&mut self, frame: PhysicalAddress);
    /// Reads entry `index` of the table at `table`.
    fn read(&self, table: PhysicalAddress, index: usize) -> u64;
    /// Writes entry `index` of the table at `table`.
    fn write(&mut self, table: PhysicalAddress, index: usize, value: u64);
}

/// A page-table hierarchy identified by its root (PML4) frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressSpace {
    pub root: PhysicalAddress,
}

/// The effective result of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub physical: PhysicalAddress,
    pub write: bool,
    pub execute: bool,
    pub user: bool,
    /// Size of the leaf page that maps the address.
    pub page_size: u64,
}

fn check_half(virt: VirtualAddress, user: bool) -> Result<(), MapError> {
    if !virt.is_canonical() {
        return Err(MapError::NonCanonical);
    }
    if user == (virt.0 >= KERNEL_HALF) {
        return Err(MapError::WrongHalf);
    }
    Ok(())
}

impl AddressSpace {
    /// Creates an empty hierarchy.
    pub fn new(memory: &mut impl TableMemory) -> Result<Self, MapError> {
        Ok(Self {
            root: memory.allocate_table().ok_or(MapError::OutOfMemory)?,
        })
    }

    /// Walks down to the table at `level` for `virt`, creating tables.
    fn table_for(
        &self,
        memory: &mut impl TableMemory,
        virt: VirtualAddress,
        level: u32,
        user: bool,
    ) -> Result<PhysicalAddress, MapError> {
        let mut table = self.root;
        for current in (level + 1..=4).rev() {
            let index = virt.table_index(current);
            let value = memory.read(table, index);
            table = if value & entry::PRESENT == 0 {
                let next = memory.allocate_table().ok_or(MapError::OutOfMemory)?;
                let mut bits = entry::PRESENT | entry::WRITABLE;
                if user {
                    bits |= entry::USER;
                }
                memory.write(table, index, next.0 | bits);
                next
            } else if value & entry::HUGE != 0 {
                return Err(MapError::AlreadyMapped);
            } else {
                PhysicalAddress(value & entry::ADDRESS_MASK)
            };
        }
        Ok(table)
    }

    fn map_at_level(
        &self,
        memory: &mut impl TableMemory,
        virt: VirtualAddress,
        physical: PhysicalAddress,
        permissions: Permissions,
        level: u32,
    ) -> Result<(), MapError> {
        if permissions.write && permissions.execute {
            return Err(MapError::WriteAndExecute);
        }
        let size = if level == 1 {
            PAGE_SIZE
        } else {
            LARGE_PAGE_SIZE
        };
        if !virt.0.is_multiple_of(size)
            || !physical.0.is_multiple_of(size)
            || physical.0 & !entry::ADDRESS_MASK != 0
        {
            return Err(MapError::Misaligned);
        }
        check_half(virt, permissions.user)?;
        let table = self.table_for(memory, virt, level, permissions.user)?;
        let index = virt.table_index(level);
        if memory.read(table, index) & entry::PRESENT != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let huge = if level == 2 { entry::HUGE } else { 0 };
        memory.write(table, index, physical.0 | permissions.leaf_bits() | huge);
        Ok(())
    }

    /// Maps one 4 KiB page.
    pub fn map_page(
        &self,
        memory: &mut impl TableMemory,
        virt: VirtualAddress,
        physical: PhysicalAddress,
        permissions: Permissions,
    ) -> Result<(), MapError> {
        self.map_at_level(memory, virt, physical, permissions, 1)
    }

    /// Maps one 2 MiB page.
    pub fn map_large_page(
        &self,
        memory: &mut impl TableMemory,
        virt: VirtualAddress,
        physical: PhysicalAddress,
        permissions: Permissions,
    ) -> Result<(), MapError> {
        self.map_at_level(memory, virt, physical, permissions, 2)
    }

    /// Copies the upper-half root entries of `other` (the core's mappings)
    /// into this hierarchy, so that the core runs in every address space.
    pub fn share_kernel_half(&self, memory: &mut impl TableMemory, other: &AddressSpace) {
        for index in 256..512 {
            let value = memory.read(other.root, index);
            memory.write(self.root, index, value);
        }
    }

    /// Translates `virt`, with the effective rights of the whole walk.
    pub fn translate(
        &self,
        memory: &impl TableMemory,
        virt: VirtualAddress,
    ) -> Option<Translation> {
        if !virt.is_canonical() {
            return None;
        }
        let mut table = self.root;
        let (mut write, mut execute, mut user) = (true, true, true);
        for level in (1..=4).rev() {
            let value = memory.read(table, virt.table_index(level));
            if value & entry::PRESENT == 0 {
                return None;
            }
            write &= value & entry::WRITABLE != 0;
            execute &= value & entry::NO_EXECUTE == 0;
            user &= value & entry::USER != 0;
            let leaf = level == 1 || (value & entry::HUGE != 0);
            if leaf {
                if level > 2 {
                    // 1 GiB pages are never created by this code.
                    return None;
                }
                let page_size = if level == 1 {
                    PAGE_SIZE
                } else {
                    LARGE_PAGE_SIZE
                };
                let base = value & entry::ADDRESS_MASK & !(page_size - 1);
                return Some(Translation {
                    physical: PhysicalAddress(base + virt.0 % page_size),
                    write,
                    execute,
                    user,
                    page_size,
                });
            }
            table = PhysicalAddress(value & entry::ADDRESS_MASK);
        }
        None
    }

    /// Removes every lower-half (user) mapping, handing each mapped frame
    /// to [`TableMemory::release_page`] and freeing the tables. The upper
    /// half and the root stay.
    pub fn clear_user_half(&self, memory: &mut impl TableMemory) {
        for index in 0..256 {
            let value = memory.read(self.root, index);
            if value & entry::PRESENT != 0 {
                free_subtree(memory, PhysicalAddress(value & entry::ADDRESS_MASK), 3);
                memory.write(self.root, index, 0);
            }
        }
    }
}

fn free_subtree(memory: &mut impl TableMemory, table: PhysicalAddress, level: u32) {
    for index in 0..512 {
        let value = memory.read(table, index);
        if value & entry::PRESENT == 0 {
            continue;
        }
        let address = PhysicalAddress(value & entry::ADDRESS_MASK);
        if level == 1 || value & entry::HUGE != 0 {
            if value & entry::SHARED == 0 {
                memory.release_page(address);
            }
        } else {
            free_subtree(memory, address, level - 1);
        }
    }
    memory.free_table(table);
}

/// A W^X violation found by [`check_wx`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WxViolation {
    /// A page is writable and executable.
    WritableAndExecutable(VirtualAddress),
    /// A page in the core's half is reachable from ring 3.
    UserInKernelHalf(VirtualAddress),
}

/// What [`check_wx`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WxSummary {
    /// Leaf mappings seen.
    pub leaves: u64,
    /// Of which writable.
    pub writable: u64,
    /// Of which executable.
    pub executable: u64,
    /// Of which reachable from ring 3.
    pub user: u64,
}

/// Walks every present leaf of `space` and checks the W^X invariants.
pub fn check_wx(memory: &impl TableMemory, space: &AddressSpace) -> Result<WxSummary, WxViolation> {
    let mut summary = WxSummary::default();
    walk(memory, space.root, 4, 0, (true, true, true), &mut summary)?;
    Ok(summary)
}

fn walk(
    memory: &impl TableMemory,
    table: PhysicalAddress,
    level: u32,
    base: u64,
    rights: (bool, bool, bool),
    summary: &mut WxSummary,
) -> Result<(), WxViolation> {
    for index in 0..512u64 {
        let value = memory.read(table, index as usize);
        if value & entry::PRESENT == 0 {
            continue;
        }
        let mut virt = base | (index << (12 + 9 * (level - 1)));
        if level == 4 && index >= 256 {
            virt |= 0xffff_0000_0000_0000;
        }
        let write = rights.0 && value & entry::WRITABLE != 0;
        let execute = rights.1 && value & entry::NO_EXECUTE == 0;
        let user = rights.2 && value & entry::USER != 0;
        if level == 1 || (level <= 3 && value & entry::HUGE != 0) {
            summary.leaves += 1;
            summary.writable += u64::from(write);
            summary.executable += u64::from(execute);
            summary.user += u64::from(user);
            if write && execute {
                return Err(WxViolation::WritableAndExecutable(VirtualAddress(virt)));
            }
            if user && virt >= KERNEL_HALF {
                return Err(WxViolation::UserInKernelHalf(VirtualAddress(virt)));
            }
        } else {
            walk(
                memory,
                PhysicalAddress(value & entry::ADDRESS_MASK),
                level - 1,
                virt,
                (write, execute, user),
                summary,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Page tables in a hash map, frames handed out from 0x1000 up.
    #[derive(Default)]
    pub struct FakeMemory {
        pub tables: HashMap<u64, [u64; 512]>,
        next: u64,
        pub freed: Vec<u64>,
        pub released: Vec<PhysicalAddress>,
    }

    impl TableMemory for FakeMemory {
        fn allocate_table(&mut self) -> Option<PhysicalAddress> {
            self.next += PAGE_SIZE;
            if self.next > 0x100_0000 {
                return None;
            }
            self.tables.insert(self.next, [0; 512]);
            Some(PhysicalAddress(self.next))
        }
        fn free_table(&mut self, table: PhysicalAddress) {
            self.tables
                .remove(&table.0)
                .expect("freed an unknown table");
            self.freed.push(table.0);
        }
        fn release_page(&mut self, frame: PhysicalAddress) {
            self.released.push(frame);
        }
        fn read(&self, table: PhysicalAddress, index: usize) -> u64 {
            self.tables[&table.0][index]
        }
        fn write(&mut self, table: PhysicalAddress, index: usize, value: u64) {
            self.tables.get_mut(&table.0).unwrap()[index] = value;
        }
    }

    const USER_PAGE: VirtualAddress = VirtualAddress(0x20_0000);
    const KERNEL_PAGE: VirtualAddress = VirtualAddress(0xffff_ffff_8020_0000);

    #[test]
    fn maps_and_translates_with_exact_rights() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        let frame = PhysicalAddress(0x4000_0000);
        space
            .map_page(
                &mut memory,
                USER_PAGE,
                frame,
                Permissions::READ_EXECUTE.for_user(),
            )
            .unwrap();
        let t = space
            .translate(&memory, VirtualAddress(USER_PAGE.0 + 0x123))
            .unwrap();
        assert_eq!(t.physical, PhysicalAddress(0x4000_0123));
        assert!(t.execute && t.user && !t.write);
        assert_eq!(t.page_size, PAGE_SIZE);
        assert!(
            space
                .translate(&memory, VirtualAddress(USER_PAGE.0 + PAGE_SIZE))
                .is_none()
        );
        space
            .map_large_page(
                &mut memory,
                KERNEL_PAGE,
                PhysicalAddress(0x20_0000),
                Permissions::READ_WRITE,
            )
            .unwrap();
        let t = space
            .translate(&memory, VirtualAddress(KERNEL_PAGE.0 + 0x1234))
            .unwrap();
        assert_eq!(t.physical, PhysicalAddress(0x20_1234));
        assert!(t.write && !t.execute && !t.user);
        assert_eq!(t.page_size, LARGE_PAGE_SIZE);
    }

    #[test]
    fn refuses_bad_mappings() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        let frame = PhysicalAddress(0x5000);
        let rwx = Permissions {
            write: true,
            execute: true,
            ..Permissions::READ
        };
        assert_eq!(
            space.map_page(&mut memory, KERNEL_PAGE, frame, rwx),
            Err(MapError::WriteAndExecute)
        );
        assert_eq!(
            space.map_page(
                &mut memory,
                VirtualAddress(0x20_0001),
                frame,
                Permissions::READ.for_user()
            ),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            space.map_page(
                &mut memory,
                VirtualAddress(0x0000_8000_0000_0000),
                frame,
                Permissions::READ
            ),
            Err(MapError::NonCanonical)
        );
        assert_eq!(
            space.map_page(
                &mut memory,
                KERNEL_PAGE,
                frame,
                Permissions::READ.for_user()
            ),
            Err(MapError::WrongHalf)
        );
        assert_eq!(
            space.map_page(&mut memory, USER_PAGE, frame, Permissions::READ),
            Err(MapError::WrongHalf)
        );
        space
            .map_page(&mut memory, USER_PAGE, frame, Permissions::READ.for_user())
            .unwrap();
        assert_eq!(
            space.map_page(&mut memory, USER_PAGE, frame, Permissions::READ.for_user()),
            Err(MapError::AlreadyMapped)
        );
        space
            .map_large_page(
                &mut memory,
                KERNEL_PAGE,
                PhysicalAddress(0),
                Permissions::READ,
            )
            .unwrap();
        assert_eq!(
            space.map_page(
                &mut memory,
                VirtualAddress(KERNEL_PAGE.0 + PAGE_SIZE),
                frame,
                Permissions::READ
            ),
            Err(MapError::AlreadyMapped)
        );
    }

    #[test]
    fn wx_check_passes_on_builder_output() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        let text = Permissions::READ_EXECUTE.global();
        space
            .map_page(&mut memory, KERNEL_PAGE, PhysicalAddress(0x1_0000), text)
            .unwrap();
        let data = VirtualAddress(KERNEL_PAGE.0 + PAGE_SIZE);
        space
            .map_page(
                &mut memory,
                data,
                PhysicalAddress(0x1_1000),
                Permissions::READ_WRITE,
            )
            .unwrap();
        space
            .map_page(
                &mut memory,
                USER_PAGE,
                PhysicalAddress(0x2_0000),
                Permissions::READ_EXECUTE.for_user(),
            )
            .unwrap();
        let summary = check_wx(&memory, &space).unwrap();
        assert_eq!(
            summary,
            WxSummary {
                leaves: 3,
                writable: 1,
                executable: 2,
                user: 1
            }
        );
    }

    #[test]
    fn wx_check_catches_a_deliberately_bad_mapping() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        space
            .map_page(
                &mut memory,
                KERNEL_PAGE,
                PhysicalAddress(0x1_0000),
                Permissions::READ,
            )
            .unwrap();
        // Bypass the builder: make the leaf writable and executable by hand.
        let mut table = space.root;
        for level in (2..=4).rev() {
            table = PhysicalAddress(
                memory.read(table, KERNEL_PAGE.table_index(level)) & entry::ADDRESS_MASK,
            );
        }
        let index = KERNEL_PAGE.table_index(1);
        let value = memory.read(table, index);
        memory.write(table, index, (value | entry::WRITABLE) & !entry::NO_EXECUTE);
        assert_eq!(
            check_wx(&memory, &space),
            Err(WxViolation::WritableAndExecutable(KERNEL_PAGE))
        );
        // And a user bit leaking into the core's half.
        memory.write(table, index, value | entry::USER);
        let root_index = KERNEL_PAGE.table_index(4);
        let root_value = memory.read(space.root, root_index);
        memory.write(space.root, root_index, root_value | entry::USER);
        let mut t = PhysicalAddress(root_value & entry::ADDRESS_MASK);
        for level in (2..=3).rev() {
            let i = KERNEL_PAGE.table_index(level);
            let v = memory.read(t, i);
            memory.write(t, i, v | entry::USER);
            t = PhysicalAddress(v & entry::ADDRESS_MASK);
        }
        assert_eq!(
            check_wx(&memory, &space),
            Err(WxViolation::UserInKernelHalf(KERNEL_PAGE))
        );
    }

    #[test]
    fn intermediate_write_bit_does_not_widen_rights() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        space
            .map_page(
                &mut memory,
                USER_PAGE,
                PhysicalAddress(0x9000),
                Permissions::READ.for_user(),
            )
            .unwrap();
        let t = space.translate(&memory, USER_PAGE).unwrap();
        assert!(!t.write && !t.execute);
    }

    #[test]
    fn clearing_the_user_half_frees_everything_below() {
        let mut memory = FakeMemory::default();
        let kernel = AddressSpace::new(&mut memory).unwrap();
        kernel
            .map_page(
                &mut memory,
                KERNEL_PAGE,
                PhysicalAddress(0x1_0000),
                Permissions::READ,
            )
            .unwrap();
        let space = AddressSpace::new(&mut memory).unwrap();
        space.share_kernel_half(&mut memory, &kernel);
        let mut frames = vec![];
        for i in 0..600u64 {
            let frame = PhysicalAddress(0x100_0000 + i * PAGE_SIZE);
            frames.push(frame);
            space
                .map_page(
                    &mut memory,
                    VirtualAddress(USER_PAGE.0 + i * PAGE_SIZE),
                    frame,
                    Permissions::READ_WRITE.for_user(),
                )
                .unwrap();
        }
        let queue = PhysicalAddress(0x200_0000);
        space
            .map_page(
                &mut memory,
                VirtualAddress(0x4000_0000_0000),
                queue,
                Permissions::READ_WRITE.for_user().shared(),
            )
            .unwrap();
        let tables_before = memory.tables.len();
        space.clear_user_half(&mut memory);
        let mut released = std::mem::take(&mut memory.released);
        released.sort();
        // Every owned frame released, the shared one kept.
        assert_eq!(released, frames);
        // 2 x (PDPT + PD) + 3 PTs freed; the root and the kernel tables remain.
        assert_eq!(memory.freed.len(), 7);
        assert_eq!(memory.tables.len(), tables_before - 7);
        assert!(space.translate(&memory, KERNEL_PAGE).is_some());
        assert!(space.translate(&memory, USER_PAGE).is_none());
    }

    #[test]
    fn out_of_table_memory_is_an_error() {
        let mut memory = FakeMemory::default();
        let space = AddressSpace::new(&mut memory).unwrap();
        let mut result = Ok(());
        for i in 0..5000u64 {
            result = space.map_page(
                &mut memory,
                VirtualAddress(USER_PAGE.0 + i * LARGE_PAGE_SIZE * 512),
                PhysicalAddress(0x1000),
                Permissions::READ.for_user(),
            );
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(MapError::OutOfMemory));
    }
}
