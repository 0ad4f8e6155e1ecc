//! Address types: physical, kernel-virtual and user-virtual addresses are
//! different types, so one cannot be passed where another is expected.
//!
//! A [`UserAddress`] is an *allegation*: a number a component gave the core.
//! It becomes usable only through [`crate::user`]'s checks and a page-table
//! walk of the component's own address space.

/// Size of a small page and of a physical frame.
pub const PAGE_SIZE: u64 = 4096;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// A physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PhysicalAddress(pub u64);

/// A virtual address in the core's half of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct KernelAddress(pub u64);

/// A virtual address in a component's half, as the component stated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct UserAddress(pub u64);

/// Any virtual address, for page-table code that serves both halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct VirtualAddress(pub u64);

impl PhysicalAddress {
    /// Whether the address is 4 KiB aligned.
    pub const fn is_page_aligned(self) -> bool {
        self.0.is_multiple_of(PAGE_SIZE)
    }
}

impl VirtualAddress {
    /// Whether bits 63..47 are copies of bit 47 (x86-64 canonical form).
    pub const fn is_canonical(self) -> bool {
        let top = self.0 >> 47;
        top == 0 || top == 0x1_ffff
    }

    /// The index into the page table at `level` (4 = PML4 … 1 = PT).
    pub const fn table_index(self, level: u32) -> usize {
        ((self.0 >> (12 + 9 * (level - 1))) & 0x1ff) as usize
    }
}

impl From<UserAddress> for VirtualAddress {
    fn from(address: UserAddress) -> Self {
        Self(address.0)
    }
}

impl From<KernelAddress> for VirtualAddress {
    fn from(address: KernelAddress) -> Self {
        Self(address.0)
    }
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// Rounds `value` up to a multiple of `align` (a power of two), or `None` on
/// overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert!(VirtualAddress(0).is_canonical());
        assert!(VirtualAddress(0x0000_7fff_ffff_ffff).is_canonical());
        assert!(!VirtualAddress(0x0000_8000_0000_0000).is_canonical());
        assert!(VirtualAddress(0xffff_8000_0000_0000).is_canonical());
        assert!(!VirtualAddress(0xfff0_0000_0000_0000).is_canonical());
    }

    #[test]
    fn indices_and_alignment() {
        let v = VirtualAddress(0xffff_ffff_8020_1000);
        assert_eq!(v.table_index(4), 511);
        assert_eq!(v.table_index(3), 510);
        assert_eq!(v.table_index(2), 1);
        assert_eq!(v.table_index(1), 1);
        assert_eq!(align_down(0x1fff, PAGE_SIZE), 0x1000);
        assert_eq!(align_up(0x1001, PAGE_SIZE), Some(0x2000));
        assert_eq!(align_up(u64::MAX, PAGE_SIZE), None);
    }
}
