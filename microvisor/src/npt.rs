//! Nested page tables: the guest-physical to host-physical map of a VM.
//!
//! Nested (AMD NPT) and extended (Intel EPT) paging translate every
//! guest-physical access. This module builds the AMD form, which uses the
//! ordinary long-mode entry format: every guest page is readable, writable
//! and executable by the guest (the guest's own page tables decide its
//! rights) and must carry the user bit, because the CPU treats nested walks
//! as user accesses. Only the pages handed in are mapped, so every access
//! outside guest memory is a nested page fault the core turns into an exit.
//! Unlike [`crate::paging::AddressSpace`] there is no W^X rule here: the
//! guest is not trusted code in the core's address space, and the host
//! never executes from these mappings.

use crate::address::{PAGE_SIZE, PhysicalAddress};
use crate::paging::{TableMemory, entry};

/// The highest guest-physical address + 1 a nested table can map (48 bits).
pub const GUEST_PHYSICAL_LIMIT: u64 = 1 << 48;

/// Why a guest page could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NestedMapError {
    Misaligned,
    OutOfRange,
    AlreadyMapped,
    OutOfMemory,
}

/// A nested page-table hierarchy, identified by its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedTables {
    pub root: PhysicalAddress,
}

const TABLE_BITS: u64 = entry::PRESENT | entry::WRITABLE | entry::USER;
const LEAF_BITS: u64 = TABLE_BITS | entry::ACCESSED | entry::DIRTY;

fn index(guest: u64, level: u32) -> usize {
    ((guest >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl NestedTables {
    /// An empty hierarchy: every guest access faults.
    pub fn new(memory: &mut impl TableMemory) -> Result<Self, NestedMapError> {
        Ok(Self {
            root: memory.allocate_table().ok_or(NestedMapError::OutOfMemory)?,
        })
    }

    /// Maps the 4 KiB guest page at `guest` to `frame`, read-write-execute.
    pub fn map(
        &self,
        memory: &mut impl TableMemory,
        guest: u64,
        frame: PhysicalAddress,
    ) -> Result<(), NestedMapError> {
        if !guest.is_multiple_of(PAGE_SIZE)
            || !frame.0.is_multiple_of(PAGE_SIZE)
            || frame.0 & !entry::ADDRESS_MASK != 0
        {
            return Err(NestedMapError::Misaligned);
        }
        if guest >= GUEST_PHYSICAL_LIMIT {
            return Err(NestedMapError::OutOfRange);
        }
        let mut table = self.root;
        for level in (2..=4).rev() {
            let slot = index(guest, level);
            let value = memory.read(table, slot);
            table = if value & entry::PRESENT == 0 {
                let next = memory.allocate_table().ok_or(NestedMapError::OutOfMemory)?;
                memory.write(table, slot, next.0 | TABLE_BITS);
                next
            } else {
                PhysicalAddress(value & entry::ADDRESS_MASK)
            };
        }
        let slot = index(guest, 1);
        if memory.read(table, slot) & entry::PRESENT != 0 {
            return Err(NestedMapError::AlreadyMapped);
        }
        memory.write(table, slot, frame.0 | LEAF_BITS);
        Ok(())
    }

    /// Maps `pages` consecutive guest pages from guest-physical 0 onto
    /// `pages` consecutive frames from `first`.
    pub fn map_range(
        &self,
        memory: &mut impl TableMemory,
        first: PhysicalAddress,
        pages: u64,
    ) -> Result<(), NestedMapError> {
        for page in 0..pages {
            self.map(
                memory,
                page * PAGE_SIZE,
                PhysicalAddress(first.0 + page * PAGE_SIZE),
            )?;
        }
        Ok(())
    }

    /// The host-physical address of guest-physical `guest`, if mapped.
    pub fn translate(&self, memory: &impl TableMemory, guest: u64) -> Option<PhysicalAddress> {
        if guest >= GUEST_PHYSICAL_LIMIT {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let value = memory.read(table, index(guest, level));
            if value & entry::PRESENT == 0 || value & entry::USER == 0 {
                return None;
            }
            if level == 1 {
                return Some(PhysicalAddress(
                    (value & entry::ADDRESS_MASK) + guest % PAGE_SIZE,
                ));
            }
            table = PhysicalAddress(value & entry::ADDRESS_MASK);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::tests::FakeMemory;

    #[test]
    fn maps_guest_memory_and_nothing_else() {
        let mut memory = FakeMemory::default();
        let tables = NestedTables::new(&mut memory).unwrap();
        let first = PhysicalAddress(0x4000_0000);
        tables.map_range(&mut memory, first, 512).unwrap();
        assert_eq!(
            tables.translate(&memory, 0x1234),
            Some(PhysicalAddress(0x4000_1234))
        );
        assert_eq!(
            tables.translate(&memory, 0x1f_ffff),
            Some(PhysicalAddress(0x401f_ffff))
        );
        assert_eq!(tables.translate(&memory, 0x20_0000), None, "past the end");
        assert_eq!(tables.translate(&memory, 0x4000_0000), None);
        assert_eq!(tables.translate(&memory, u64::MAX), None);
    }

    #[test]
    fn entries_are_user_writable_and_executable() {
        let mut memory = FakeMemory::default();
        let tables = NestedTables::new(&mut memory).unwrap();
        tables
            .map(&mut memory, 0x10_0000, PhysicalAddress(0x8000_0000))
            .unwrap();
        let mut table = tables.root;
        for level in (1..=4).rev() {
            let value = memory.read(table, index(0x10_0000, level));
            assert_eq!(value & TABLE_BITS, TABLE_BITS, "level {level}");
            assert_eq!(value & entry::NO_EXECUTE, 0, "level {level}");
            assert_eq!(value & entry::HUGE, 0);
            table = PhysicalAddress(value & entry::ADDRESS_MASK);
        }
    }

    #[test]
    fn refuses_bad_mappings() {
        let mut memory = FakeMemory::default();
        let tables = NestedTables::new(&mut memory).unwrap();
        let frame = PhysicalAddress(0x8000_0000);
        assert_eq!(
            tables.map(&mut memory, 0x123, frame),
            Err(NestedMapError::Misaligned)
        );
        assert_eq!(
            tables.map(&mut memory, 0, PhysicalAddress(0x8000_0010)),
            Err(NestedMapError::Misaligned)
        );
        assert_eq!(
            tables.map(&mut memory, GUEST_PHYSICAL_LIMIT, frame),
            Err(NestedMapError::OutOfRange)
        );
        tables.map(&mut memory, 0, frame).unwrap();
        assert_eq!(
            tables.map(&mut memory, 0, frame),
            Err(NestedMapError::AlreadyMapped)
        );
    }
}
