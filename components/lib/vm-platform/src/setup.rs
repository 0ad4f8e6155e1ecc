//! The CPU state a guest starts in.
//!
//! - **Real mode** ([`real_mode`]): as a CPU leaves reset, 16-bit, paging
//!   and protection off, at the first byte of the image: CS.base is the
//!   image's lowest address (a hidden base, like the reset vector's) and
//!   IP 0, the data segments share that base.
//! - **Long mode** ([`long_mode`], or [`write_long_mode_tables`] plus
//!   [`enter_long_mode`] for tables the caller placed): 64-bit, with
//!   identity paging of the first 4 GiB of guest-physical space (2 MiB
//!   pages; what lies past guest memory faults in the nested tables, not in
//!   the guest's own), the flat GDT below with its TSS, interrupts off.
//! - **32-bit protected mode** ([`enter_protected_mode`]), paging off, flat
//!   4 GiB code and data segments, interrupts off: the state PVH and
//!   multiboot kernels are entered in.
//!
//! Every entry uses one GDT ([`write_gdt`]): null, 32-bit code
//! ([`CODE32`]), 64-bit code ([`CODE64`]), flat data ([`DATA`]) and a TSS
//! ([`TSS`]). Its selectors are the ones Linux's 64-bit boot protocol
//! requires (`__BOOT_CS` 0x10, `__BOOT_DS` 0x18), which no other protocol
//! constrains. [`long_mode`] keeps its tables and GDT in the top
//! [`SETUP_BYTES`] of guest memory, which its guest images must leave free;
//! the loaders place theirs through [`crate::layout`].

use microvisor_abi::vcpu::{DescriptorTable, Segment, VcpuState, dirty, gpr};

use crate::Memory;
use crate::layout::{self, LayoutError};

/// Bytes at the top of guest memory the long-mode set-up uses.
pub const SETUP_BYTES: u64 = 64 * 1024;
/// Guest-physical bytes the long-mode identity map covers.
pub const IDENTITY_BYTES: u64 = 4 << 30;
/// Bytes of the GDT page (descriptors, then the TSS at +0x100).
pub const GDT_BYTES: u64 = 0x1000;
/// Bytes of the long-mode tables: PML4, PDPT, four page directories, then
/// the GDT page.
pub const LONG_MODE_TABLES_BYTES: u64 = 0x6000 + GDT_BYTES;

/// Control-register bits.
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the always-one bit: IF, TF and VM clear.
pub const RFLAGS_RESET: u64 = 0x2;

/// Selectors of the GDT.
pub const CODE32: u16 = 0x08;
pub const CODE64: u16 = 0x10;
pub const DATA: u16 = 0x18;
pub const TSS: u16 = 0x20;

/// The descriptors, in selector order (the TSS descriptor is built from
/// the GDT's address).
const CODE32_DESCRIPTOR: u64 = 0x00cf_9b00_0000_ffff;
const CODE64_DESCRIPTOR: u64 = 0x00af_9b00_0000_ffff;
const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;
const TSS_OFFSET: u64 = 0x100;
const TSS_LIMIT: u32 = 0x67;
/// Hidden-state attributes: accessed execute/read code, present, with D
/// (32-bit) or L (64-bit) and G; accessed read/write data with D/B and G.
const CODE32_ATTRIBUTES: u16 = 0xc9b;
const CODE64_ATTRIBUTES: u16 = 0xa9b;
const DATA_ATTRIBUTES: u16 = 0xc93;
/// A busy 32/64-bit TSS, present.
const BUSY_TSS_ATTRIBUTES: u16 = 0x8b;
/// An LDT, present (unused: selector 0).
const LDT_ATTRIBUTES: u16 = 0x82;

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

/// Where [`write_gdt`] put the GDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gdt {
    pub base: u64,
    pub limit: u32,
    /// The TSS the descriptor at [`TSS`] points to.
    pub tss: u64,
}

fn segment(selector: u16, attributes: u16, base: u64, limit: u32) -> Segment {
    Segment {
        selector,
        attributes,
        limit,
        base,
    }
}

fn put(memory: &mut impl Memory, address: u64, value: u64) -> Result<(), LayoutError> {
    layout::write(memory, address, &value.to_le_bytes())
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
    state.tr = segment(0, BUSY_TSS_ATTRIBUTES, 0, 0xffff);
    state.ldtr = segment(0, LDT_ATTRIBUTES, 0, 0xffff);
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
    state.rflags = RFLAGS_RESET;
    Ok(dirty::ALL & !dirty::INJECT)
}

/// Writes the GDT page ([`GDT_BYTES`]) at `at`: the descriptors, then a
/// zeroed TSS.
pub fn write_gdt(memory: &mut impl Memory, at: u64) -> Result<Gdt, LayoutError> {
    layout::zero(memory, at, GDT_BYTES)?;
    let tss = at + TSS_OFFSET;
    let limit = u64::from(TSS_LIMIT);
    let tss_low = limit | (tss & 0xff_ffff) << 16 | 0x89 << 40 | ((tss >> 24) & 0xff) << 56;
    let descriptors: [u64; 6] = [
        0,
        CODE32_DESCRIPTOR,
        CODE64_DESCRIPTOR,
        DATA_DESCRIPTOR,
        tss_low,
        tss >> 32,
    ];
    for (i, descriptor) in descriptors.iter().enumerate() {
        put(memory, at + 8 * i as u64, *descriptor)?;
    }
    Ok(Gdt {
        base: at,
        limit: (8 * descriptors.len() - 1) as u32,
        tss,
    })
}

/// Writes identity page tables for the first [`IDENTITY_BYTES`] (2 MiB
/// pages) and the GDT: [`LONG_MODE_TABLES_BYTES`] from `at`, which must be
/// page-aligned. Returns CR3 and the GDT; a write guest memory refuses is
/// an error.
pub fn write_long_mode_tables(
    memory: &mut impl Memory,
    at: u64,
) -> Result<(u64, Gdt), LayoutError> {
    let (pml4, pdpt, pds) = (at, at + 0x1000, at + 0x2000);
    layout::zero(memory, at, 0x6000)?;
    let table = 0x3; // present, writable
    put(memory, pml4, pdpt | table)?;
    for gib in 0..IDENTITY_BYTES >> 30 {
        let pd = pds + gib * 0x1000;
        put(memory, pdpt + gib * 8, pd | table)?;
        for entry in 0..512u64 {
            let address = (gib << 30) | (entry << 21);
            put(memory, pd + entry * 8, address | table | 0x80)?; // page size
        }
    }
    let gdt = write_gdt(memory, at + 0x6000)?;
    Ok((pml4, gdt))
}

fn load_gdt(state: &mut VcpuState, gdt: Gdt, code: Segment) {
    let data = segment(DATA, DATA_ATTRIBUTES, 0, 0xffff_ffff);
    state.cs = code;
    (state.ds, state.es, state.ss, state.fs, state.gs) = (data, data, data, data, data);
    state.ldtr = segment(0, LDT_ATTRIBUTES, 0, 0);
    state.gdtr = DescriptorTable {
        limit: gdt.limit,
        reserved: 0,
        base: gdt.base,
    };
    state.idtr = DescriptorTable::default();
    state.gpr = [0; 16];
    state.rflags = RFLAGS_RESET;
}

/// 64-bit start at `entry` with the tables [`write_long_mode_tables`]
/// wrote: CS = [`CODE64`], the data segments [`DATA`], TR the GDT's TSS,
/// every general register 0 (the caller sets what its protocol passes),
/// interrupts off. Returns the dirty mask.
pub fn enter_long_mode(state: &mut VcpuState, cr3: u64, gdt: Gdt, entry: u64) -> u64 {
    load_gdt(
        state,
        gdt,
        segment(CODE64, CODE64_ATTRIBUTES, 0, 0xffff_ffff),
    );
    state.tr = segment(TSS, BUSY_TSS_ATTRIBUTES, gdt.tss, TSS_LIMIT);
    state.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    state.cr3 = cr3;
    state.cr4 = CR4_PAE;
    state.efer = EFER_LME | EFER_LMA;
    state.rip = entry;
    dirty::ALL & !dirty::INJECT
}

/// 32-bit protected-mode start at `entry` with the GDT [`write_gdt`]
/// wrote: paging off, CS = [`CODE32`], the data segments [`DATA`], all
/// flat 4 GiB; TR a busy 32-bit TSS with base 0 and limit 0x67 (what PVH
/// asks for); CR0 = PE (and the fixed ET), CR4 = 0, EFER = 0, every
/// general register 0, interrupts off. Returns the dirty mask.
pub fn enter_protected_mode(state: &mut VcpuState, gdt: Gdt, entry: u32) -> u64 {
    load_gdt(
        state,
        gdt,
        segment(CODE32, CODE32_ATTRIBUTES, 0, 0xffff_ffff),
    );
    state.tr = segment(0, BUSY_TSS_ATTRIBUTES, 0, TSS_LIMIT);
    state.cr0 = CR0_PE | CR0_ET;
    state.cr3 = 0;
    state.cr4 = 0;
    state.efer = 0;
    state.rip = u64::from(entry);
    dirty::ALL & !dirty::INJECT
}

/// Long-mode start at `entry`: writes the page tables and GDT into the top
/// of `memory` and sets `state`, with the stack just below them. Returns
/// the dirty mask.
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
    let written =
        layout::zero(memory, area, SETUP_BYTES).and_then(|()| write_long_mode_tables(memory, area));
    let (cr3, gdt) = written.map_err(|_| SetupError::TooSmall)?;
    let mask = enter_long_mode(state, cr3, gdt, entry);
    state.gpr[gpr::RSP] = area;
    Ok(mask)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use zerocopy::FromZeros;

    pub(crate) fn u64_at(memory: &VecMemory, at: u64) -> u64 {
        u64::from_le_bytes(memory.0[at as usize..at as usize + 8].try_into().unwrap())
    }

    /// Walks the guest's own page tables like the CPU would.
    pub(crate) fn walk(memory: &VecMemory, cr3: u64, virt: u64) -> Option<u64> {
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
        assert_eq!(
            u64_at(&memory, gdt + u64::from(CODE64)),
            0x00af_9b00_0000_ffff
        );
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

    /// The hidden segment state the CPU would load for `selector` from the
    /// GDT in guest memory: (base, scaled limit, compact attributes).
    pub(crate) fn descriptor(
        memory: &VecMemory,
        gdtr: DescriptorTable,
        selector: u16,
    ) -> (u64, u32, u16) {
        assert!(
            u32::from(selector) + 7 <= gdtr.limit,
            "selector inside the GDT"
        );
        let d = u64_at(memory, gdtr.base + u64::from(selector));
        let base = (d >> 16) & 0xff_ffff | ((d >> 56) & 0xff) << 24;
        let raw_limit = (d & 0xffff) | ((d >> 48) & 0xf) << 16;
        let attributes = ((d >> 40) & 0xff | ((d >> 52) & 0xf) << 8) as u16;
        let limit = if attributes & 0x800 != 0 {
            (raw_limit << 12 | 0xfff) as u32
        } else {
            raw_limit as u32
        };
        (base, limit, attributes)
    }

    /// Checks that every segment register agrees with its GDT descriptor.
    pub(crate) fn assert_segments_match_gdt(memory: &VecMemory, state: &VcpuState) {
        for (name, register) in [
            ("cs", state.cs),
            ("ds", state.ds),
            ("es", state.es),
            ("ss", state.ss),
            ("fs", state.fs),
            ("gs", state.gs),
        ] {
            assert_eq!(
                descriptor(memory, state.gdtr, register.selector),
                (register.base, register.limit, register.attributes),
                "{name}"
            );
        }
    }

    #[test]
    fn the_gdt_has_linux_boot_selectors_and_a_tss() {
        let mut memory = VecMemory(vec![0xee; 0x4000]);
        let gdt = write_gdt(&mut memory, 0x2000).unwrap();
        assert_eq!(
            gdt,
            Gdt {
                base: 0x2000,
                limit: 47,
                tss: 0x2100
            }
        );
        let gdtr = DescriptorTable {
            limit: gdt.limit,
            reserved: 0,
            base: gdt.base,
        };
        // Linux's 64-bit boot protocol: __BOOT_CS 0x10 flat 64-bit code,
        // __BOOT_DS 0x18 flat read/write data.
        assert_eq!(descriptor(&memory, gdtr, 0x10), (0, 0xffff_ffff, 0xa9b));
        assert_eq!(descriptor(&memory, gdtr, 0x18), (0, 0xffff_ffff, 0xc93));
        assert_eq!(descriptor(&memory, gdtr, 0x08), (0, 0xffff_ffff, 0xc9b));
        // An available 64-bit TSS at +0x100, limit 0x67, and the TSS zeroed.
        assert_eq!(descriptor(&memory, gdtr, TSS), (0x2100, 0x67, 0x89));
        assert_eq!(u64_at(&memory, 0x2000 + 0x28), 0, "TSS base bits 63:32");
        assert!(memory.0[0x2100..0x3000].iter().all(|&b| b == 0));
        assert_eq!(
            write_gdt(&mut memory, 0x3800),
            Err(LayoutError::MemoryRefused {
                address: 0x3800,
                size: GDT_BYTES
            })
        );
    }

    #[test]
    fn long_mode_tables_can_live_anywhere() {
        let mut memory = VecMemory(vec![0xee; 1 << 20]);
        let (cr3, gdt) = write_long_mode_tables(&mut memory, 0x8_0000).unwrap();
        assert_eq!((cr3, gdt.base), (0x8_0000, 0x8_6000));
        let mut state = VcpuState::new_zeroed();
        let mask = enter_long_mode(&mut state, cr3, gdt, 0x100_0200);
        assert_eq!(mask, dirty::ALL & !dirty::INJECT);
        for address in [0u64, 0x100_0200, 0xfee0_0000, IDENTITY_BYTES - 1] {
            assert_eq!(walk(&memory, state.cr3, address), Some(address));
        }
        assert_segments_match_gdt(&memory, &state);
        assert_eq!((state.cs.selector, state.ds.selector), (0x10, 0x18));
        assert_eq!(state.tr.base, gdt.tss);
        assert_eq!(state.rflags & (1 << 9), 0, "interrupts off");
        assert_eq!(state.gpr, [0; 16]);
        assert_eq!(
            write_long_mode_tables(&mut memory, (1 << 20) - 0x5000),
            Err(LayoutError::MemoryRefused {
                address: (1 << 20) - 0x5000,
                size: 0x6000
            })
        );
    }

    #[test]
    fn protected_mode_is_flat_32_bit_without_paging() {
        let mut memory = VecMemory(vec![0; 0x2000]);
        let gdt = write_gdt(&mut memory, 0x1000).unwrap();
        let mut state = VcpuState::new_zeroed();
        state.gpr = [7; 16];
        state.rflags = 0x202;
        let mask = enter_protected_mode(&mut state, gdt, 0x10_0850);
        assert_eq!(mask, dirty::ALL & !dirty::INJECT);
        assert_eq!(state.rip, 0x10_0850);
        assert_eq!(state.cr0, CR0_PE | CR0_ET);
        assert_eq!((state.cr3, state.cr4, state.efer), (0, 0, 0));
        assert_eq!(state.rflags, 0x2, "IF, TF and VM clear");
        assert_eq!(state.gpr, [0; 16]);
        assert_segments_match_gdt(&memory, &state);
        // D set, L clear: 32-bit code; flat 4 GiB.
        assert_eq!(state.cs.attributes & 0x600, 0x400);
        assert_eq!((state.cs.base, state.cs.limit), (0, 0xffff_ffff));
        // PVH: a busy 32-bit TSS with base 0 and limit 0x67.
        assert_eq!(
            (state.tr.base, state.tr.limit, state.tr.attributes),
            (0, 0x67, 0x8b)
        );
    }
}
