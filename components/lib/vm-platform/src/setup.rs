//! The CPU state a guest starts in.
//!
//! - **Real mode** ([`real_mode`]): as a CPU leaves reset, 16-bit, paging
//!   and protection off, at the first byte of the image: CS.base is the
//!   image's lowest address (a hidden base, like the reset vector's) and
//!   IP 0, the data segments share that base.
//! - **Long mode** ([`long_mode`]): 64-bit at the ELF entry, with identity
//!   paging of the first 4 GiB of guest-physical space (2 MiB pages; what
//!   lies past guest memory faults in the nested tables, not in the guest's
//!   own), a flat GDT with a 64-bit code segment and a TSS, interrupts off,
//!   and the stack just below the set-up area.
//!
//! The page tables and GDT occupy the top [`SETUP_BYTES`] of guest memory,
//! which guest images must leave free.

use microvisor_abi::vcpu::{DescriptorTable, Segment, VcpuState, dirty};

use crate::Memory;

/// Bytes at the top of guest memory the long-mode set-up uses.
pub const SETUP_BYTES: u64 = 64 * 1024;
/// Guest-physical bytes the long-mode identity map covers.
pub const IDENTITY_BYTES: u64 = 4 << 30;

/// Control-register bits.
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// Selectors of the long-mode GDT.
pub const CODE64: u16 = 0x08;
pub const DATA: u16 = 0x10;
pub const TSS: u16 = 0x18;

/// Why the set-up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// Guest memory is too small for the set-up area plus anything else.
    TooSmall,
    /// The real-mode entry is not reachable from real mode (above 1 MiB +
    /// 64 KiB) .
    EntryTooHigh(u64),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooSmall => write!(f, "guest memory is too small for the long-mode set-up"),
            Self::EntryTooHigh(at) => write!(f, "real-mode entry {at:#x} lies above 1 MiB"),
        }
    }
}

fn segment(selector: u16, attributes: u16, base: u64, limit: u32) -> Segment {
    Segment {
        selector,
        attributes,
        limit,
        base,
    }
}

/// Real-mode start at `base` (the image's lowest address). Returns the
/// dirty mask of everything it set.
pub fn real_mode(state: &mut VcpuState, base: u64) -> Result<u64, SetupError> {
    if base > 0x10_0000 {
        return Err(SetupError::EntryTooHigh(base));
    }
    let selector = (base >> 4) as u16;
    let code = segment(selector, 0x9b, base, 0xffff);
    let data = segment(selector, 0x93, base, 0xffff);
    state.cs = code;
    (state.ds, state.es, state.ss, state.fs, state.gs) = (data, data, data, data, data);
    state.tr = segment(0, 0x8b, 0, 0xffff);
    state.ldtr = segment(0, 0x82, 0, 0xffff);
    state.gdtr = DescriptorTable {
        limit: 0xffff,
        reserved: 0,
        base: 0,
    };
    state.idtr = state.gdtr;
    state.cr0 = CR0_ET;
    state.cr3 = 0;
    state.cr4 = 0;
    state.efer = 0;
    state.gpr = [0; 16];
    state.rip = 0;
    state.rflags = 0x2;
    Ok(dirty::ALL & !dirty::INJECT)
}

/// Long-mode start at `entry`: writes the page tables and GDT into the top
/// of `memory` and sets `state`. Returns the dirty mask.
pub fn long_mode(
    state: &mut VcpuState,
    memory: &mut impl Memory,
    entry: u64,
) -> Result<u64, SetupError> {
    let size = memory.size();
    if size < 2 * SETUP_BYTES || !size.is_multiple_of(4096) {
        return Err(SetupError::TooSmall);
    }
    let area = size - SETUP_BYTES;
    let (pml4, pdpt, pds, gdt) = (area, area + 0x1000, area + 0x2000, area + 0x6000);
    let mut ok = memory.fill(area, SETUP_BYTES, 0);
    let table = 0x3; // present, writable
    ok &= memory.write(pml4, &(pdpt | table).to_le_bytes());
    for gib in 0..4u64 {
        let pd = pds + gib * 0x1000;
        ok &= memory.write(pdpt + gib * 8, &(pd | table).to_le_bytes());
        for entry in 0..512u64 {
            let address = (gib << 30) | (entry << 21);
            let large = address | table | 0x80; // page size
            ok &= memory.write(pd + entry * 8, &large.to_le_bytes());
        }
    }
    // Null, 64-bit code, data, then a 16-byte TSS descriptor.
    let tss_base = gdt + 0x100;
    let tss_limit = 0x67u64;
    let tss_low =
        tss_limit | (tss_base & 0xff_ffff) << 16 | 0x89 << 40 | ((tss_base >> 24) & 0xff) << 56;
    let descriptors: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        tss_low,
        tss_base >> 32,
    ];
    for (i, descriptor) in descriptors.iter().enumerate() {
        ok &= memory.write(gdt + 8 * i as u64, &descriptor.to_le_bytes());
    }
    if !ok {
        return Err(SetupError::TooSmall);
    }
    let data = segment(DATA, 0xc93, 0, 0xffff_ffff);
    state.cs = segment(CODE64, 0xa9b, 0, 0xffff_ffff);
    (state.ds, state.es, state.ss, state.fs, state.gs) = (data, data, data, data, data);
    state.tr = segment(TSS, 0x8b, tss_base, tss_limit as u32);
    state.ldtr = segment(0, 0x82, 0, 0);
    state.gdtr = DescriptorTable {
        limit: (8 * descriptors.len() - 1) as u32,
        reserved: 0,
        base: gdt,
    };
    state.idtr = DescriptorTable::default();
    state.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    state.cr3 = pml4;
    state.cr4 = CR4_PAE;
    state.efer = EFER_LME | EFER_LMA;
    state.gpr = [0; 16];
    state.gpr[microvisor_abi::vcpu::gpr::RSP] = area;
    state.rip = entry;
    state.rflags = 0x2;
    Ok(dirty::ALL & !dirty::INJECT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use zerocopy::FromZeros;

    fn u64_at(memory: &VecMemory, at: u64) -> u64 {
        u64::from_le_bytes(memory.0[at as usize..at as usize + 8].try_into().unwrap())
    }

    /// Walks the guest's own page tables like the CPU would.
    fn walk(memory: &VecMemory, cr3: u64, virt: u64) -> Option<u64> {
        let pml4e = u64_at(memory, cr3 + ((virt >> 39) & 0x1ff) * 8);
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = u64_at(memory, (pml4e & !0xfff) + ((virt >> 30) & 0x1ff) * 8);
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = u64_at(memory, (pdpte & !0xfff) + ((virt >> 21) & 0x1ff) * 8);
        if pde & 0x81 != 0x81 {
            return None;
        }
        Some((pde & !0x1f_ffff) + (virt & 0x1f_ffff))
    }

    #[test]
    fn long_mode_maps_four_gib_identity_and_a_flat_gdt() {
        let mut memory = VecMemory(vec![0; 2 << 20]);
        let mut state = VcpuState::new_zeroed();
        let mask = long_mode(&mut state, &mut memory, 0x10_0040).unwrap();
        assert_eq!(mask & dirty::INJECT, 0);
        assert_eq!(state.rip, 0x10_0040);
        assert_eq!(state.cr3, (2 << 20) - SETUP_BYTES);
        for address in [0u64, 0x10_1234, 0x4000_0000, 0xffff_ffff] {
            assert_eq!(walk(&memory, state.cr3, address), Some(address));
        }
        assert_eq!(walk(&memory, state.cr3, 0x1_0000_0000), None);
        assert_eq!(state.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(state.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(state.cr4 & CR4_PAE, CR4_PAE);
        // L set, D/B clear: a 64-bit code segment.
        assert_eq!(state.cs.attributes & 0x600, 0x200);
        let gdt = state.gdtr.base;
        assert_eq!(u64_at(&memory, gdt + 8), 0x00af_9b00_0000_ffff);
        assert!(state.gpr[4] <= state.cr3, "stack below the set-up area");
    }

    #[test]
    fn long_mode_needs_room() {
        let mut memory = VecMemory(vec![0; 64 * 1024]);
        let mut state = VcpuState::new_zeroed();
        assert_eq!(
            long_mode(&mut state, &mut memory, 0),
            Err(SetupError::TooSmall)
        );
    }

    #[test]
    fn real_mode_starts_at_the_image_base() {
        let mut state = VcpuState::new_zeroed();
        real_mode(&mut state, 0x10_0000).unwrap();
        assert_eq!(state.cs.base, 0x10_0000);
        assert_eq!(state.rip, 0);
        assert_eq!(state.cr0 & CR0_PE, 0);
        assert_eq!(state.ds.base, 0x10_0000);
        assert_eq!(
            real_mode(&mut state, 0x20_0000),
            Err(SetupError::EntryTooHigh(0x20_0000))
        );
    }
}
