//! PVH entry for an ELF kernel (a Linux `vmlinux`, or anything else with
//! the note), as Xen and QEMU `-kernel` boot it: the 32-bit entry from the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note, an `hvm_start_info` in EBX (Xen
//! `include/public/arch-x86/hvm/start_info.h`, version 1).
//!
//! [`load`] plans before it writes: the `PT_LOAD` segments at their
//! physical addresses (each in RAM, none overlapping anything placed), then
//! in the lowest free RAM from 4 KiB the GDT page, one boot-information
//! block (`hvm_start_info`, the module list, the memory map) and the command
//! line, and the initrd as module 0 in the highest free RAM below 4 GiB.
//! Everything it passes lies below 4 GiB (the entry runs with paging off)
//! and nothing at address 0 (which the structure reads as "absent"). The
//! vCPU starts in 32-bit protected mode, paging off, flat 4 GiB segments,
//! TR base 0 limit 0x67, interrupts off, EBX = the start info.
//!
//! The entry must lie in a segment's file bytes; the note's descriptor may
//! be 4 or 8 bytes (Linux writes a pointer-sized one) but must fit 32 bits.

use microvisor_abi::vcpu::VcpuState;

use crate::Memory;
use crate::elf::{Elf, ElfError};
use crate::layout::{self, Boot, BootFiles, FOUR_GIB, GuestLayout, Item, LayoutError, MAX_REGIONS};
use crate::le::{put_u32, put_u64, u32_at, u64_at};
use crate::setup::{self, GDT_BYTES};

/// The note's type; its name is "Xen".
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `hvm_start_info.magic`: "xEn3" with the 0x80 bit of the "E" set.
pub const START_MAGIC: u32 = 0x336e_c578;
/// The structure version with the memory map.
pub const START_VERSION: u32 = 1;
/// `hvm_start_info`, `hvm_modlist_entry` and `hvm_memmap_table_entry`.
const START_INFO_BYTES: usize = 56;
const MODULE_BYTES: usize = 32;
const MEMMAP_ENTRY_BYTES: usize = 24;
/// The largest boot-information block: start info, one module, the map.
const INFO_MAX: usize = START_INFO_BYTES + MODULE_BYTES + MEMMAP_ENTRY_BYTES * MAX_REGIONS;

/// `hvm_start_info` fields.
mod start {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const NR_MODULES: usize = 12;
    pub const MODLIST_PADDR: usize = 16;
    pub const CMDLINE_PADDR: usize = 24;
    pub const RSDP_PADDR: usize = 32;
    pub const MEMMAP_PADDR: usize = 40;
    pub const MEMMAP_ENTRIES: usize = 48;
}

/// Why a PVH kernel was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The ELF file itself.
    Elf(ElfError),
    /// No "Xen" note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
    NoPvhEntry,
    /// The entry note's descriptor has `size` bytes, not 4 or 8.
    BadEntryNote { size: usize },
    /// The entry does not fit 32 bits.
    EntryAbove4GiB { entry: u64 },
    /// The entry is not in any segment's file bytes.
    EntryOutsideImage { entry: u32 },
    /// The command line has a NUL at `at`.
    CommandLineHasNul { at: usize },
    /// No room, or an overlap, in guest memory (the item says what).
    Layout(LayoutError),
}

layout::wrap_errors!(PvhError { Elf(ElfError), Layout(LayoutError) });

impl core::fmt::Display for PvhError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(error) => write!(f, "{error}"),
            Self::NoPvhEntry => write!(
                f,
                "no XEN_ELFNOTE_PHYS32_ENTRY note: the kernel has no PVH entry"
            ),
            Self::BadEntryNote { size } => write!(
                f,
                "the PVH entry note has {size} bytes of descriptor, not 4 or 8"
            ),
            Self::EntryAbove4GiB { entry } => {
                write!(f, "the PVH entry {entry:#x} lies above 4 GiB")
            }
            Self::EntryOutsideImage { entry } => {
                write!(f, "the PVH entry {entry:#x} is not in the kernel's code")
            }
            Self::CommandLineHasNul { at } => {
                write!(f, "the command line has a NUL byte at {at}")
            }
            Self::Layout(error) => write!(f, "{error}"),
        }
    }
}

/// The PVH entry the kernel's note gives.
pub fn entry_point(elf: &Elf) -> Result<u32, PvhError> {
    let descriptor = elf
        .find_note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY)?
        .ok_or(PvhError::NoPvhEntry)?;
    let entry = match descriptor.len() {
        4 => u32_at(descriptor, 0).map(u64::from),
        8 => u64_at(descriptor, 0),
        size => return Err(PvhError::BadEntryNote { size }),
    }
    .ok_or(PvhError::BadEntryNote {
        size: descriptor.len(),
    })?;
    u32::try_from(entry).map_err(|_| PvhError::EntryAbove4GiB { entry })
}

/// Builds the block at `at`: `hvm_start_info`, then the module list (the
/// initrd, if any), then the memory map; returns it and its length.
fn start_info(
    at: u64,
    layout: &GuestLayout,
    cmdline: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
) -> ([u8; INFO_MAX], usize) {
    let mut block = [0u8; INFO_MAX];
    put_u32(&mut block, start::MAGIC, START_MAGIC);
    put_u32(&mut block, start::VERSION, START_VERSION);
    put_u64(&mut block, start::CMDLINE_PADDR, cmdline);
    put_u64(&mut block, start::RSDP_PADDR, rsdp.unwrap_or(0));
    let mut end = START_INFO_BYTES;
    if let Some((address, size)) = initrd {
        put_u32(&mut block, start::NR_MODULES, 1);
        put_u64(&mut block, start::MODLIST_PADDR, at + end as u64);
        put_u64(&mut block, end, address);
        put_u64(&mut block, end + 8, size);
        end += MODULE_BYTES;
    }
    let regions = layout.map().regions();
    put_u64(&mut block, start::MEMMAP_PADDR, at + end as u64);
    put_u32(&mut block, start::MEMMAP_ENTRIES, regions.len() as u32);
    for region in regions {
        put_u64(&mut block, end, region.start);
        put_u64(&mut block, end + 8, region.size);
        put_u32(&mut block, end + 16, region.kind.e820_type());
        end += MEMMAP_ENTRY_BYTES;
    }
    (block, end)
}

/// Loads a PVH kernel into `memory` as the module documentation says,
/// records what it placed in `layout`, and sets `state` for the 32-bit
/// entry. On an error nothing is written and `layout` is unchanged.
pub fn load(
    state: &mut VcpuState,
    memory: &mut impl Memory,
    layout: &mut GuestLayout,
    boot: &BootFiles,
) -> Result<Boot, PvhError> {
    let elf = Elf::parse(boot.kernel)?;
    let segments = elf.segments()?;
    let entry = entry_point(&elf)?;
    if !segments.holds_code(u64::from(entry)) {
        return Err(PvhError::EntryOutsideImage { entry });
    }
    if let Some(at) = boot.cmdline.iter().position(|&b| b == 0) {
        return Err(PvhError::CommandLineHasNul { at });
    }
    layout.check_memory(memory)?;
    let mut plan = *layout;
    segments.place(&mut plan)?;
    let gdt = plan.place_boot(Item::BootTables, GDT_BYTES)?;
    let modules = usize::from(!boot.initrd.is_empty());
    let info_bytes =
        START_INFO_BYTES + MODULE_BYTES * modules + MEMMAP_ENTRY_BYTES * plan.map().regions().len();
    let info = plan.place_boot(Item::BootInfo, info_bytes as u64)?;
    let cmdline = plan.place_boot(Item::CommandLine, boot.cmdline.len() as u64 + 1)?;
    let initrd_size = boot.initrd.len() as u64;
    let initrd = plan
        .place_module(initrd_size, FOUR_GIB)?
        .map(|address| (address, initrd_size));
    let (block, length) = start_info(info, &plan, cmdline, initrd, boot.rsdp);
    segments.write(memory)?;
    let gdt = setup::write_gdt(memory, gdt)?;
    layout::write(memory, info, &block[..length])?;
    layout::write_string(memory, cmdline, boot.cmdline)?;
    if let Some((address, _)) = initrd {
        layout::write(memory, address, boot.initrd)?;
    }
    let booted = Boot::protected_mode(state, gdt, entry, info);
    *layout = plan;
    Ok(booted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Class;
    use crate::elf::tests::{Load, Note, build};
    use crate::layout::{MemoryMap, Placement, Region, RegionKind};
    use crate::setup::tests::assert_segments_match_gdt;
    use crate::testing::{MEMORY, checked_load, load_files, pc_layout};
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const TEXT: &[u8] = b"\xfa\xf4pvh entry code and more text";

    /// A kernel with text at 16 MiB, data and bss above, and the note.
    fn kernel(class: Class, notes: &[Note], in_segment: bool) -> Vec<u8> {
        build(
            class,
            0xffff_ffff_8100_0000,
            &[
                Load {
                    physical: 0x100_0000,
                    virtual_address: 0xffff_ffff_8100_0000,
                    bytes: TEXT,
                    memory_size: TEXT.len() as u64,
                },
                Load {
                    physical: 0x120_0000,
                    virtual_address: 0xffff_ffff_8120_0000,
                    bytes: b"data",
                    memory_size: 0x3000,
                },
            ],
            notes,
            in_segment,
        )
    }

    fn entry_note(entry: &[u8]) -> [Note<'_>; 2] {
        [(b"Xen", 6, b"linux\0"), (b"Xen", 18, entry)]
    }

    fn boot<'a>(kernel: &'a [u8], cmdline: &'a [u8], initrd: &'a [u8]) -> BootFiles<'a> {
        BootFiles::new(kernel, cmdline, initrd)
    }

    fn try_load(layout: &mut GuestLayout, boot: &BootFiles) -> Result<Boot, PvhError> {
        load_files(layout, boot, load).0
    }

    fn u64_in(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn boots_a_vmlinux_like_kernel_with_the_start_info() {
        let image = kernel(
            Class::Elf64,
            &entry_note(&0x100_0001u64.to_le_bytes()),
            true,
        );
        let initrd = vec![0x5a; 0x2345];
        let mut layout = pc_layout();
        let (booted, memory, state) = load_files(
            &mut layout,
            &BootFiles {
                rsdp: Some(0xe_0000),
                ..boot(&image, b"console=ttyS0", &initrd)
            },
            load,
        );
        let booted = booted.unwrap();
        let ram = &memory.memory.0;
        assert_eq!(&ram[0x100_0000..0x100_0000 + TEXT.len()], TEXT);
        assert_eq!(&ram[0x120_0000..0x120_0004], b"data");
        assert_eq!(
            layout.placed(),
            &[
                Placement::new(Item::Kernel, 0x100_0000, TEXT.len() as u64),
                Placement::new(Item::Kernel, 0x120_0000, 0x3000),
                Placement::new(Item::BootTables, 0x1000, 0x1000),
                Placement::new(Item::BootInfo, 0x2000, 56 + 32 + 4 * 24),
                Placement::new(Item::CommandLine, 0x3000, 14),
                Placement::new(Item::Module, MEMORY - 0x3000, 0x2345),
            ]
        );
        assert_eq!(
            booted,
            Boot {
                entry: 0x100_0001,
                info: 0x2000,
                dirty: booted.dirty
            }
        );

        // hvm_start_info, byte by byte.
        let info = &ram[0x2000..0x2000 + 56 + 32 + 96];
        let mut expected = Vec::new();
        expected.extend_from_slice(&0x336e_c578u32.to_le_bytes()); // magic
        expected.extend_from_slice(&1u32.to_le_bytes()); // version
        expected.extend_from_slice(&0u32.to_le_bytes()); // flags
        expected.extend_from_slice(&1u32.to_le_bytes()); // nr_modules
        expected.extend_from_slice(&0x2038u64.to_le_bytes()); // modlist_paddr
        expected.extend_from_slice(&0x3000u64.to_le_bytes()); // cmdline_paddr
        expected.extend_from_slice(&0xe_0000u64.to_le_bytes()); // rsdp_paddr
        expected.extend_from_slice(&0x2058u64.to_le_bytes()); // memmap_paddr
        expected.extend_from_slice(&4u32.to_le_bytes()); // memmap_entries
        expected.extend_from_slice(&0u32.to_le_bytes()); // reserved
        // hvm_modlist_entry: paddr, size, cmdline_paddr (none), reserved.
        for value in [MEMORY - 0x3000, 0x2345, 0, 0] {
            expected.extend_from_slice(&value.to_le_bytes());
        }
        // hvm_memmap_table_entry: addr, size, type, reserved.
        for (addr, size, kind) in [
            (0u64, 0x9_fc00u64, 1u32),
            (0x9_fc00, 0x6_0400, 2),
            (0x10_0000, MEMORY - 0x10_0000, 1),
            (0xfec0_0000, 0x140_0000, 2),
        ] {
            expected.extend_from_slice(&addr.to_le_bytes());
            expected.extend_from_slice(&size.to_le_bytes());
            expected.extend_from_slice(&kind.to_le_bytes());
            expected.extend_from_slice(&0u32.to_le_bytes());
        }
        assert_eq!(info, &expected[..]);
        assert_eq!(&ram[0x3000..0x300e], b"console=ttyS0\0");
        assert!(
            ram[MEMORY as usize - 0x3000..][..0x2345]
                .iter()
                .all(|&b| b == 0x5a)
        );

        // The PVH machine state.
        assert_eq!(state.rip, 0x100_0001);
        assert_eq!(state.gpr[microvisor_abi::vcpu::gpr::RBX], 0x2000);
        assert_eq!(state.cr0 & (setup::CR0_PE | setup::CR0_PG), setup::CR0_PE);
        assert_eq!((state.cr4, state.efer), (0, 0));
        assert_eq!(state.rflags & (1 << 9 | 1 << 8 | 1 << 17), 0);
        assert_eq!((state.tr.base, state.tr.limit), (0, 0x67));
        assert_segments_match_gdt(&memory.memory, &state);
        assert_eq!(state.cs.attributes & 0x600, 0x400, "32-bit code");
    }

    #[test]
    fn finds_the_entry_in_every_form() {
        for class in [Class::Elf32, Class::Elf64] {
            for in_segment in [true, false] {
                for descriptor in [
                    &0x100_0004u32.to_le_bytes()[..],
                    &0x100_0004u64.to_le_bytes(),
                ] {
                    let image = kernel(class, &entry_note(descriptor), in_segment);
                    let booted = try_load(&mut pc_layout(), &boot(&image, b"", b"")).unwrap();
                    assert_eq!(booted.entry, 0x100_0004);
                }
            }
        }
        // Without an initrd: no modules, the map right after the start info.
        let image = kernel(
            Class::Elf32,
            &entry_note(&0x100_0000u32.to_le_bytes()),
            true,
        );
        let (booted, memory, _) = load_files(&mut pc_layout(), &boot(&image, b"", b""), load);
        let booted = booted.unwrap();
        let info = &memory.memory.0[booted.info as usize..][..56];
        assert_eq!(&info[12..24], &[0; 12], "nr_modules, modlist_paddr");
        assert_eq!(u64_in(info, 40), booted.info + 56, "memmap_paddr");
        assert_eq!(u64_in(info, 32), 0, "no RSDP given");
    }

    #[test]
    fn refuses_kernels_without_a_usable_entry() {
        let refused =
            |image: &[u8]| try_load(&mut pc_layout(), &boot(image, b"", b"")).unwrap_err();
        assert_eq!(
            refused(&kernel(Class::Elf64, &[], true)),
            PvhError::NoPvhEntry
        );
        assert_eq!(
            refused(&kernel(Class::Elf64, &[(b"Xen", 6, b"linux\0")], false)),
            PvhError::NoPvhEntry
        );
        assert_eq!(
            refused(&kernel(Class::Elf64, &entry_note(b"\x00\x10"), true)),
            PvhError::BadEntryNote { size: 2 }
        );
        assert_eq!(
            refused(&kernel(
                Class::Elf64,
                &entry_note(&0x1_0100_0000u64.to_le_bytes()),
                true
            )),
            PvhError::EntryAbove4GiB {
                entry: 0x1_0100_0000
            }
        );
        // In bss, and nowhere near the image.
        for entry in [0x120_0004u32, 0x120_1000, 0x8000] {
            assert_eq!(
                refused(&kernel(
                    Class::Elf64,
                    &entry_note(&entry.to_le_bytes()),
                    true
                )),
                PvhError::EntryOutsideImage { entry }
            );
        }
        assert_eq!(
            refused(b"\x7fELF\x02\x01\x01"),
            PvhError::Elf(ElfError::HeaderTruncated)
        );
        let image = kernel(
            Class::Elf64,
            &entry_note(&0x100_0000u32.to_le_bytes()),
            true,
        );
        assert_eq!(
            try_load(&mut pc_layout(), &boot(&image, b"a\0b", b"")),
            Err(PvhError::CommandLineHasNul { at: 1 })
        );
    }

    #[test]
    fn refuses_segments_outside_ram_or_on_each_other() {
        let entry = 0x10_0000u32.to_le_bytes();
        let note = entry_note(&entry);
        let refused = |loads: &[Load]| {
            let image = build(Class::Elf64, 0, loads, &note, true);
            try_load(&mut pc_layout(), &boot(&image, b"", b"")).unwrap_err()
        };
        let code = Load::at(0x10_0000, b"code", 4);
        // Past guest memory, in the legacy window, in the device window.
        for address in [MEMORY - 2, 0xa_0000, 0xfee0_0000, u64::MAX - 0x10] {
            let error = refused(&[code, Load::at(address, b"", 4)]);
            assert!(
                matches!(
                    error,
                    PvhError::Layout(LayoutError::NotInRam {
                        item: Item::Kernel,
                        ..
                    })
                ),
                "{address:#x}: {error:?}"
            );
        }
        assert_eq!(
            refused(&[code, Load::at(u64::MAX - 1, b"", 4)]),
            PvhError::Elf(ElfError::SegmentWraps {
                index: 1,
                address: u64::MAX - 1,
                size: 4
            })
        );
        assert_eq!(
            refused(&[code, Load::at(0x10_0002, b"", 4)]),
            PvhError::Elf(ElfError::SegmentsOverlap {
                first: 0,
                second: 1
            })
        );
        // On something the caller placed (its ACPI tables, say).
        let image = build(Class::Elf64, 0, &[code], &note, true);
        let mut layout = pc_layout();
        layout.place_at(Item::Caller(7), 0x10_0000, 0x1000).unwrap();
        assert!(matches!(
            try_load(&mut layout, &boot(&image, b"", b"")),
            Err(PvhError::Layout(LayoutError::Overlap {
                item: Item::Kernel,
                ..
            }))
        ));
        // An initrd bigger than RAM.
        assert!(matches!(
            try_load(
                &mut pc_layout(),
                &boot(&image, b"", &vec![0; MEMORY as usize])
            ),
            Err(PvhError::Layout(LayoutError::NoRoom {
                item: Item::Module,
                ..
            }))
        ));
        // Free RAM only above 4 GiB: the boot information is not put where
        // a 32-bit entry cannot reach it.
        let high = MemoryMap::new(
            &[
                Region::new(0x10_0000, 0x1000, RegionKind::Ram),
                Region::new(FOUR_GIB, MIB, RegionKind::Ram),
            ],
            FOUR_GIB + MIB,
        )
        .unwrap();
        let refused = checked_load(
            &mut GuestLayout::new(high),
            FOUR_GIB + MIB,
            |state, memory, layout| load(state, memory, layout, &boot(&image, b"", b"")),
        );
        assert!(matches!(
            refused.0,
            Err(PvhError::Layout(LayoutError::NoRoom {
                item: Item::BootTables,
                ..
            }))
        ));
        // Guest memory smaller than its map.
        let small = checked_load(&mut pc_layout(), MIB, |state, memory, layout| {
            load(state, memory, layout, &boot(&image, b"", b""))
        });
        assert_eq!(
            small.0,
            Err(PvhError::Layout(LayoutError::MemorySmaller {
                memory: MIB,
                map: MEMORY
            }))
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        for in_segment in [true, false] {
            let image = kernel(
                Class::Elf64,
                &entry_note(&0x100_0000u32.to_le_bytes()),
                in_segment,
            );
            for length in 0..image.len() {
                let result = try_load(&mut pc_layout(), &boot(&image[..length], b"", b""));
                assert!(result.is_err(), "length {length}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x400)) {
            prop_assert!(try_load(&mut pc_layout(), &boot(&bytes, b"", b"x")).is_err());
        }

        /// A valid kernel with some bytes changed: refused with nothing
        /// written, or loaded with its entry in RAM below 4 GiB.
        #[test]
        fn corrupted_kernels_never_panic(
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut image = kernel(Class::Elf64, &entry_note(&0x100_0000u32.to_le_bytes()), true);
            let length = image.len();
            for (at, value) in changes {
                image[at.index(length)] = value;
            }
            let mut layout = pc_layout();
            // A refusal is checked by try_load.
            if let Ok(booted) = try_load(&mut layout, &boot(&image, b"", b"i")) {
                prop_assert!(booted.entry < FOUR_GIB);
                prop_assert!(layout.map().is_ram(booted.entry, booted.entry + 1));
            }
        }
    }
}
