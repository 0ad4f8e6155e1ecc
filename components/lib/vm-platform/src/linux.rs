//! The Linux x86 boot protocol for a bzImage, entered at its 64-bit entry
//! (Linux `Documentation/arch/x86/boot.rst`, "64-bit Boot Protocol";
//! `boot_params` as in `arch/x86/include/uapi/asm/bootparam.h`).
//!
//! [`SetupHeader::parse`] checks the file: the setup header at 0x1f1
//! ("HdrS" at 0x202, boot flag 0xAA55, protocol 2.12 or newer so that
//! `xloadflags` exists, `XLF_KERNEL_64`, `LOADED_HIGH`, a header length from
//! the jump at 0x200 that reaches `init_size` and fits `boot_params`), and
//! that the protected-mode part (from `(setup_sects + 1) * 512`, 0 sectors
//! meaning 4) holds the `syssize` paragraphs the header promises.
//!
//! [`load`] then plans everything before writing anything: the kernel at
//! `pref_address` when its `max(init_size, file bytes)` fits there, else the
//! lowest RAM above it aligned to `kernel_alignment` (2 MiB at least), or
//! exactly at `pref_address` for a non-relocatable kernel; so the kernel's
//! run-time start (`align_up(load, kernel_alignment)`, never below
//! `pref_address`) is the load address and its `init_size` is reserved
//! there. The long-mode tables, the zero page and the command line go into
//! the lowest free RAM from 4 KiB; the initrd into the highest free RAM
//! whose end is below `initrd_addr_max` and 4 GiB. Everything is below
//! 4 GiB, so the 4 GiB identity map covers what the protocol asks to be
//! mapped (the kernel's `init_size`, the zero page, the command line). The
//! vCPU starts in long mode at load + 0x200 with RSI = the zero page, the
//! GDT's `__BOOT_CS`/`__BOOT_DS`, interrupts off.
//!
//! Not supported: the 16-bit and 32-bit entries, loading above 4 GiB
//! (`XLF_CAN_BE_LOADED_ABOVE_4G`), `setup_data` (so more than 128 e820
//! entries; the memory map holds at most 32), EFI handover.

use microvisor_abi::vcpu::{VcpuState, gpr};

use crate::Memory;
use crate::layout::{
    self, Boot, BootFiles, FOUR_GIB, GuestLayout, Item, LayoutError, MAX_REGIONS, MemoryMap, PAGE,
};
use crate::le::{put_u32, put_u64, u8_at, u16_at, u32_at, u64_at};
use crate::setup::{self, LONG_MODE_TABLES_BYTES};

/// Where the setup header starts, in the file and in `boot_params`.
pub const SETUP_HEADER: usize = 0x1f1;
/// "HdrS" at 0x202.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// The boot flag at 0x1fe.
pub const BOOT_FLAG: u16 = 0xaa55;
/// Protocol 2.12: the first with `xloadflags`, which says whether the
/// 64-bit entry exists.
pub const MIN_VERSION: u16 = 0x020c;
/// `loadflags`: the protected-mode part is loaded high (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags`: the kernel has the 64-bit entry at 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry's offset in the protected-mode part.
pub const ENTRY_64: u64 = 0x200;
/// `boot_params` is one page.
pub const ZERO_PAGE_BYTES: u64 = 0x1000;
/// The least alignment a 64-bit kernel is loaded at (`CONFIG_PHYSICAL_ALIGN`
/// is a multiple of it on x86-64).
pub const MIN_KERNEL_ALIGN: u64 = 2 << 20;
/// Where a kernel with `pref_address` 0 goes (the classic bzImage address).
const DEFAULT_LOAD: u64 = 0x10_0000;
/// The header must reach `init_size` (0x260..0x264).
const HEADER_END_MIN: usize = 0x264;
/// `boot_params` has room for the header up to 0x290.
const HEADER_END_MAX: usize = 0x290;

/// Setup header fields, at their offsets in the file and in `boot_params`.
mod field {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
}

/// `boot_params` fields outside the setup header.
mod zero_page {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
    pub const E820_ENTRY_BYTES: usize = 20;
    pub const E820_MAX: usize = 128;
}

const _: () = assert!(MAX_REGIONS <= zero_page::E820_MAX);

/// `type_of_loader` for a loader without an assigned id.
const UNDEFINED_LOADER: u8 = 0xff;

/// Why a bzImage was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// The file has `length` bytes; `needed` are needed to read what is
    /// missing (the header, the setup sectors, or the `syssize` paragraphs).
    Truncated { needed: u64, length: u64 },
    /// No "HdrS" at 0x202: not a bzImage (or a pre-2.00 kernel).
    BadMagic { found: u32 },
    /// No 0xAA55 at 0x1fe.
    BadBootFlag { found: u16 },
    /// Protocol older than 2.12 has no 64-bit entry flag.
    ProtocolTooOld { version: u16 },
    /// The jump at 0x200 (0xEB, offset) gives a setup header that ends
    /// before `init_size` or past the room `boot_params` has.
    BadHeaderLength { jump: [u8; 2] },
    /// `LOADED_HIGH` is clear: a zImage.
    NotBzImage,
    /// `XLF_KERNEL_64` is clear: no 64-bit entry.
    No64BitEntry,
    /// A relocatable kernel's `kernel_alignment` is not a power of two.
    BadAlignment { alignment: u32 },
    /// A non-relocatable kernel whose `pref_address` + `init_size` reach
    /// past 4 GiB, out of the identity map.
    KernelAbove4GiB { address: u64 },
    /// The command line has `length` bytes, more than `cmdline_size`.
    CommandLineTooLong { length: usize, max: u32 },
    /// The command line has a NUL at `at` (it would end there).
    CommandLineHasNul { at: usize },
    /// No room, or an overlap, in guest memory (the item says what).
    Layout(LayoutError),
}

layout::wrap_errors!(LinuxError { Layout(LayoutError) });

impl core::fmt::Display for LinuxError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated { needed, length } => write!(
                f,
                "the bzImage has {length} bytes, its header says it needs {needed}"
            ),
            Self::BadMagic { found } => {
                write!(f, "no \"HdrS\" at 0x202 (found {found:#x}): not a bzImage")
            }
            Self::BadBootFlag { found } => {
                write!(f, "no boot flag 0xaa55 at 0x1fe (found {found:#x})")
            }
            Self::ProtocolTooOld { version } => write!(
                f,
                "boot protocol {}.{:02} is older than 2.12, which has the 64-bit entry",
                version >> 8,
                version & 0xff
            ),
            Self::BadHeaderLength { jump } => write!(
                f,
                "the jump {:02x} {:02x} at 0x200 gives a setup header that does not reach init_size or does not fit boot_params",
                jump[0], jump[1]
            ),
            Self::NotBzImage => write!(f, "LOADED_HIGH is clear: a zImage, not a bzImage"),
            Self::No64BitEntry => {
                write!(f, "XLF_KERNEL_64 is clear: the kernel has no 64-bit entry")
            }
            Self::BadAlignment { alignment } => {
                write!(f, "kernel_alignment {alignment:#x} is not a power of two")
            }
            Self::KernelAbove4GiB { address } => write!(
                f,
                "the non-relocatable kernel at {address:#x} reaches past 4 GiB"
            ),
            Self::CommandLineTooLong { length, max } => write!(
                f,
                "the command line has {length} bytes, the kernel takes at most {max}"
            ),
            Self::CommandLineHasNul { at } => {
                write!(f, "the command line has a NUL byte at {at}")
            }
            Self::Layout(error) => write!(f, "{error}"),
        }
    }
}

/// The checked setup header of a bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub version: u16,
    /// Setup sectors (0 in the file reads as 4).
    pub setup_sects: u8,
    pub loadflags: u8,
    pub xloadflags: u16,
    /// Protected-mode size in 16-byte paragraphs.
    pub syssize: u32,
    /// The highest byte address an initrd may occupy.
    pub initrd_addr_max: u32,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    /// The longest command line, without the NUL.
    pub cmdline_size: u32,
    pub pref_address: u64,
    pub init_size: u32,
    /// One past the header's last byte (0x202 + the jump's offset).
    pub header_end: usize,
}

impl SetupHeader {
    /// Reads and checks the header and the file's length.
    pub fn parse(image: &[u8]) -> Result<Self, LinuxError> {
        let length = image.len() as u64;
        let truncated = |needed: usize| LinuxError::Truncated {
            needed: needed as u64,
            length,
        };
        let magic = u32_at(image, field::HEADER).ok_or(truncated(field::HEADER + 4))?;
        if magic != HEADER_MAGIC {
            return Err(LinuxError::BadMagic { found: magic });
        }
        // Present: the magic lies past it.
        let boot_flag = u16_at(image, field::BOOT_FLAG).unwrap_or(0);
        if boot_flag != BOOT_FLAG {
            return Err(LinuxError::BadBootFlag { found: boot_flag });
        }
        let version = u16_at(image, field::VERSION).ok_or(truncated(field::VERSION + 2))?;
        if version < MIN_VERSION {
            return Err(LinuxError::ProtocolTooOld { version });
        }
        // In the file: the magic after it was read.
        let jump = [image[field::JUMP], image[field::JUMP + 1]];
        let header_end = field::HEADER as isize + isize::from(jump[1] as i8);
        if jump[0] != 0xeb
            || !(HEADER_END_MIN as isize..=HEADER_END_MAX as isize).contains(&header_end)
        {
            return Err(LinuxError::BadHeaderLength { jump });
        }
        let header_end = header_end as usize;
        let header = image.get(..header_end).ok_or(truncated(header_end))?;
        // Inside the checked header from here on.
        let byte = |at| u8_at(header, at).unwrap_or(0);
        let half = |at| u16_at(header, at).unwrap_or(0);
        let word = |at| u32_at(header, at).unwrap_or(0);
        let parsed = Self {
            version,
            setup_sects: match byte(field::SETUP_SECTS) {
                0 => 4,
                sectors => sectors,
            },
            loadflags: byte(field::LOADFLAGS),
            xloadflags: half(field::XLOADFLAGS),
            syssize: word(field::SYSSIZE),
            initrd_addr_max: word(field::INITRD_ADDR_MAX),
            kernel_alignment: word(field::KERNEL_ALIGNMENT),
            relocatable: byte(field::RELOCATABLE_KERNEL) != 0,
            cmdline_size: word(field::CMDLINE_SIZE),
            pref_address: u64_at(header, field::PREF_ADDRESS).unwrap_or(0),
            init_size: word(field::INIT_SIZE),
            header_end,
        };
        if parsed.loadflags & LOADED_HIGH == 0 {
            return Err(LinuxError::NotBzImage);
        }
        if parsed.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LinuxError::No64BitEntry);
        }
        if parsed.relocatable && !parsed.kernel_alignment.is_power_of_two() {
            return Err(LinuxError::BadAlignment {
                alignment: parsed.kernel_alignment,
            });
        }
        // At least one byte of protected-mode code, and all it promises.
        let offset = parsed.protected_mode_offset() as u64;
        let needed = (offset + u64::from(parsed.syssize) * 16).max(offset + 1);
        if length < needed {
            return Err(LinuxError::Truncated { needed, length });
        }
        Ok(parsed)
    }

    /// Where the protected-mode part starts in the file.
    pub const fn protected_mode_offset(&self) -> usize {
        (self.setup_sects as usize + 1) * 512
    }

    /// One past the highest address the initrd may reach.
    pub fn initrd_end(&self) -> u64 {
        u64::from(self.initrd_addr_max) + 1
    }

    /// Places the kernel's `max(init_size, file bytes)`; returns the load
    /// address.
    fn place_kernel(&self, layout: &mut GuestLayout, file_bytes: u64) -> Result<u64, LinuxError> {
        let size = u64::from(self.init_size)
            .max(file_bytes)
            .next_multiple_of(PAGE);
        let preferred = match self.pref_address {
            0 => DEFAULT_LOAD,
            address => address,
        };
        if self.relocatable {
            let align = u64::from(self.kernel_alignment).max(MIN_KERNEL_ALIGN);
            return Ok(layout.place_low(Item::Kernel, size, align, preferred, FOUR_GIB)?);
        }
        if preferred.checked_add(size).is_none_or(|end| end > FOUR_GIB) {
            return Err(LinuxError::KernelAbove4GiB { address: preferred });
        }
        layout.place_at(Item::Kernel, preferred, size)?;
        Ok(preferred)
    }
}

/// Checks a command line for a kernel that takes `max` bytes.
fn check_cmdline(cmdline: &[u8], max: u32) -> Result<(), LinuxError> {
    if let Some(at) = cmdline.iter().position(|&b| b == 0) {
        return Err(LinuxError::CommandLineHasNul { at });
    }
    if cmdline.len() as u64 > u64::from(max) {
        return Err(LinuxError::CommandLineTooLong {
            length: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// Where [`load`] put things, for the zero page.
struct Placed {
    kernel: u64,
    cmdline: u64,
    initrd: Option<(u64, u64)>,
    rsdp: Option<u64>,
}

/// Builds `boot_params`: zeroes, the setup header copied from the file,
/// then the fields a loader writes and the e820 map.
fn zero_page(image: &[u8], header: &SetupHeader, map: &MemoryMap, placed: &Placed) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    let range = SETUP_HEADER..header.header_end;
    page[range.clone()].copy_from_slice(&image[range]);
    page[field::TYPE_OF_LOADER] = UNDEFINED_LOADER;
    // Everything is below 4 GiB: the 32-bit halves are the addresses.
    put_u32(&mut page, field::CODE32_START, placed.kernel as u32);
    put_u32(&mut page, field::CMD_LINE_PTR, placed.cmdline as u32);
    put_u32(
        &mut page,
        zero_page::EXT_CMD_LINE_PTR,
        (placed.cmdline >> 32) as u32,
    );
    if let Some((address, size)) = placed.initrd {
        put_u32(&mut page, field::RAMDISK_IMAGE, address as u32);
        put_u32(&mut page, field::RAMDISK_SIZE, size as u32);
        put_u32(
            &mut page,
            zero_page::EXT_RAMDISK_IMAGE,
            (address >> 32) as u32,
        );
        put_u32(&mut page, zero_page::EXT_RAMDISK_SIZE, (size >> 32) as u32);
    }
    if let Some(rsdp) = placed.rsdp {
        put_u64(&mut page, zero_page::ACPI_RSDP_ADDR, rsdp);
    }
    for (index, region) in map.regions().iter().enumerate() {
        let at = zero_page::E820_TABLE + index * zero_page::E820_ENTRY_BYTES;
        put_u64(&mut page, at, region.start);
        put_u64(&mut page, at + 8, region.size);
        put_u32(&mut page, at + 16, region.kind.e820_type());
    }
    page[zero_page::E820_ENTRIES] = map.regions().len() as u8;
    page
}

/// Loads a bzImage into `memory` as the module documentation says, records
/// what it placed in `layout`, and sets `state` for the 64-bit entry. On an
/// error nothing is written and `layout` is unchanged.
pub fn load(
    state: &mut VcpuState,
    memory: &mut impl Memory,
    layout: &mut GuestLayout,
    boot: &BootFiles,
) -> Result<Boot, LinuxError> {
    let header = SetupHeader::parse(boot.kernel)?;
    check_cmdline(boot.cmdline, header.cmdline_size)?;
    layout.check_memory(memory)?;
    let protected_mode = &boot.kernel[header.protected_mode_offset()..];
    let mut plan = *layout;
    let kernel = header.place_kernel(&mut plan, protected_mode.len() as u64)?;
    let tables = plan.place_boot(Item::BootTables, LONG_MODE_TABLES_BYTES)?;
    let info = plan.place_boot(Item::BootInfo, ZERO_PAGE_BYTES)?;
    let cmdline = plan.place_boot(Item::CommandLine, boot.cmdline.len() as u64 + 1)?;
    let initrd_size = boot.initrd.len() as u64;
    let initrd = plan
        .place_module(initrd_size, header.initrd_end())?
        .map(|address| (address, initrd_size));
    let placed = Placed {
        kernel,
        cmdline,
        initrd,
        rsdp: boot.rsdp,
    };
    let params = zero_page(boot.kernel, &header, plan.map(), &placed);
    layout::write(memory, kernel, protected_mode)?;
    let (cr3, gdt) = setup::write_long_mode_tables(memory, tables)?;
    layout::write(memory, info, &params)?;
    layout::write_string(memory, cmdline, boot.cmdline)?;
    if let Some((address, _)) = initrd {
        layout::write(memory, address, boot.initrd)?;
    }
    let entry = kernel + ENTRY_64;
    let dirty = setup::enter_long_mode(state, cr3, gdt, entry);
    state.gpr[gpr::RSI] = info;
    *layout = plan;
    Ok(Boot { entry, info, dirty })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Placement, Region, RegionKind};
    use crate::setup::tests::{assert_segments_match_gdt, walk};
    use crate::testing::{MEMORY, checked_load, load_files, pc_layout};
    use proptest::prelude::*;

    /// The header fields a test bzImage gets.
    #[derive(Clone)]
    struct Kernel {
        setup_sects: u8,
        version: u16,
        loadflags: u8,
        xloadflags: u16,
        relocatable: u8,
        kernel_alignment: u32,
        pref_address: u64,
        init_size: u32,
        cmdline_size: u32,
        initrd_addr_max: u32,
        payload: Vec<u8>,
    }

    impl Default for Kernel {
        /// Like Debian's cloud kernel, scaled down: protocol 2.15,
        /// relocatable, 16 MiB preferred, 2 MiB alignment.
        fn default() -> Self {
            Self {
                setup_sects: 3,
                version: 0x020f,
                loadflags: LOADED_HIGH,
                xloadflags: 0x7f,
                relocatable: 1,
                kernel_alignment: 0x20_0000,
                pref_address: 0x100_0000,
                init_size: 0x40_0000,
                cmdline_size: 2047,
                initrd_addr_max: 0x7fff_ffff,
                payload: (0..0x800u32).map(|i| (i * 7 + 1) as u8).collect(),
            }
        }
    }

    impl Kernel {
        fn image(&self) -> Vec<u8> {
            let sectors = if self.setup_sects == 0 {
                4
            } else {
                self.setup_sects
            };
            // Setup code and whatever follows the header: a pattern that
            // must not reach boot_params.
            let mut out: Vec<u8> = (0..(usize::from(sectors) + 1) * 512)
                .map(|i| (i % 251) as u8 | 1)
                .collect();
            out[0x1ef..0x1f1].fill(0xff); // the sentinel, outside the header
            out[0x1f1] = self.setup_sects;
            let syssize = self.payload.len().div_ceil(16) as u32;
            out[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
            out[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
            out[0x200..0x202].copy_from_slice(&[0xeb, 0x6a]); // header ends at 0x26c
            out[0x202..0x206].copy_from_slice(b"HdrS");
            out[0x206..0x208].copy_from_slice(&self.version.to_le_bytes());
            out[0x210] = 0;
            out[0x211] = self.loadflags;
            out[0x218..0x220].fill(0);
            out[0x228..0x22c].fill(0);
            out[0x22c..0x230].copy_from_slice(&self.initrd_addr_max.to_le_bytes());
            out[0x230..0x234].copy_from_slice(&self.kernel_alignment.to_le_bytes());
            out[0x234] = self.relocatable;
            out[0x236..0x238].copy_from_slice(&self.xloadflags.to_le_bytes());
            out[0x238..0x23c].copy_from_slice(&self.cmdline_size.to_le_bytes());
            out[0x258..0x260].copy_from_slice(&self.pref_address.to_le_bytes());
            out[0x260..0x264].copy_from_slice(&self.init_size.to_le_bytes());
            out.extend_from_slice(&self.payload);
            out
        }
    }

    fn boot<'a>(kernel: &'a [u8], cmdline: &'a [u8], initrd: &'a [u8]) -> BootFiles<'a> {
        BootFiles::new(kernel, cmdline, initrd)
    }

    fn load_into(
        layout: &mut GuestLayout,
        kernel: &Kernel,
        cmdline: &[u8],
        initrd: &[u8],
    ) -> Result<Boot, LinuxError> {
        load_files(layout, &boot(&kernel.image(), cmdline, initrd), load).0
    }

    fn try_load(kernel: &Kernel, cmdline: &[u8], initrd: &[u8]) -> Result<Boot, LinuxError> {
        load_into(&mut pc_layout(), kernel, cmdline, initrd)
    }

    /// A layout whose 16 MiB page is taken.
    fn preferred_taken() -> GuestLayout {
        let mut layout = pc_layout();
        layout
            .place_at(Item::Caller(1), 0x100_0000, 0x1000)
            .unwrap();
        layout
    }

    fn u32_in(memory: &[u8], at: u64) -> u32 {
        u32::from_le_bytes(memory[at as usize..at as usize + 4].try_into().unwrap())
    }

    #[test]
    fn boots_at_the_preferred_address_with_a_full_zero_page() {
        let kernel = Kernel::default();
        let image = kernel.image();
        let initrd: Vec<u8> = (0..0x3001u32).map(|i| (i * 13) as u8).collect();
        let cmdline = b"console=ttyS0 panic=-1";
        let mut layout = pc_layout();
        let (booted, memory, state) = load_files(
            &mut layout,
            &BootFiles {
                rsdp: Some(0xf_5a10),
                ..boot(&image, cmdline, &initrd)
            },
            load,
        );
        let booted = booted.unwrap();
        let ram = &memory.memory.0;

        // The protected-mode part at pref_address, entered at +0x200.
        let load_address = 0x100_0000;
        assert_eq!(
            &ram[load_address..load_address + 0x800],
            &kernel.payload[..]
        );
        assert_eq!(booted.entry, 0x100_0200);
        assert_eq!(state.rip, 0x100_0200);
        assert_eq!(state.gpr[gpr::RSI], booted.info);

        // What was placed where: the kernel's init_size, the tables, the
        // zero page and command line low, the initrd at the top of RAM.
        let placed = layout.placed();
        assert_eq!(
            placed,
            &[
                Placement::new(Item::Kernel, 0x100_0000, 0x40_0000),
                Placement::new(Item::BootTables, 0x1000, 0x7000),
                Placement::new(Item::BootInfo, 0x8000, 0x1000),
                Placement::new(Item::CommandLine, 0x9000, 23),
                Placement::new(Item::Module, MEMORY - 0x4000, 0x3001),
            ]
        );
        let info = booted.info as usize;
        assert_eq!(info, 0x8000);
        let page = &ram[info..info + 4096];

        // The setup header is the file's, to its end at 0x26c, with the
        // loader's fields written; nothing else of the file came along.
        let mut header = image[0x1f1..0x26c].to_vec();
        header[0x210 - 0x1f1] = 0xff; // type_of_loader
        header[0x214 - 0x1f1..0x218 - 0x1f1].copy_from_slice(&0x100_0000u32.to_le_bytes());
        header[0x218 - 0x1f1..0x21c - 0x1f1]
            .copy_from_slice(&((MEMORY - 0x4000) as u32).to_le_bytes());
        header[0x21c - 0x1f1..0x220 - 0x1f1].copy_from_slice(&0x3001u32.to_le_bytes());
        header[0x228 - 0x1f1..0x22c - 0x1f1].copy_from_slice(&0x9000u32.to_le_bytes());
        assert_eq!(&page[0x1f1..0x26c], &header[..]);
        assert_eq!(page[0x1ef], 0, "the sentinel is not copied");
        assert!(page[0x26c..0x2d0].iter().all(|&b| b == 0));
        // ext_ramdisk_image/size and ext_cmd_line_ptr: all below 4 GiB.
        assert_eq!(&page[0xc0..0xcc], &[0; 12]);
        assert_eq!(
            &page[0x70..0x78],
            &0xf_5a10u64.to_le_bytes(),
            "acpi_rsdp_addr"
        );

        // The e820 map, byte by byte: addr (u64), size (u64), type (u32).
        assert_eq!(page[0x1e8], 4, "e820_entries");
        let mut e820 = Vec::new();
        for (addr, size, kind) in [
            (0u64, 0x9_fc00u64, 1u32),
            (0x9_fc00, 0x6_0400, 2),
            (0x10_0000, MEMORY - 0x10_0000, 1),
            (0xfec0_0000, 0x140_0000, 2),
        ] {
            e820.extend_from_slice(&addr.to_le_bytes());
            e820.extend_from_slice(&size.to_le_bytes());
            e820.extend_from_slice(&kind.to_le_bytes());
        }
        assert_eq!(&page[0x2d0..0x2d0 + 80], &e820[..]);
        assert!(page[0x2d0 + 80..].iter().all(|&b| b == 0));
        // Everything else before the header is zero.
        assert!(page[..0x70].iter().all(|&b| b == 0));
        assert!(page[0x78..0xc0].iter().all(|&b| b == 0));
        assert!(page[0xcc..0x1e8].iter().all(|&b| b == 0));

        // The command line and initrd are where the zero page says.
        let cmd_line_ptr = u64::from(u32_in(page, 0x228));
        assert_eq!(
            &ram[cmd_line_ptr as usize..][..23],
            b"console=ttyS0 panic=-1\0"
        );
        let ramdisk = u64::from(u32_in(page, 0x218)) as usize;
        assert_eq!(ramdisk % 4096, 0);
        assert_eq!(&ram[ramdisk..ramdisk + initrd.len()], &initrd[..]);

        // The 64-bit boot protocol's machine state: long mode, __BOOT_CS
        // 0x10 and __BOOT_DS 0x18 flat, interrupts off, and the kernel's
        // init_size, the zero page and the command line identity-mapped.
        assert_eq!(state.cs.selector, 0x10);
        assert_eq!(state.cs.attributes & 0x200, 0x200, "64-bit code");
        for data in [state.ds, state.es, state.ss] {
            assert_eq!(data.selector, 0x18);
        }
        let memory_view = &memory.memory;
        assert_segments_match_gdt(memory_view, &state);
        assert_eq!(state.rflags & (1 << 9), 0);
        assert_eq!(state.efer & setup::EFER_LMA, setup::EFER_LMA);
        for address in [
            0x100_0000,
            0x100_0000 + 0x40_0000 - 1,
            booted.info,
            cmd_line_ptr,
            ramdisk as u64,
        ] {
            assert_eq!(walk(memory_view, state.cr3, address), Some(address));
        }
        assert_eq!(state.cr3, 0x1000);
        assert_eq!(
            booted.dirty & microvisor_abi::vcpu::dirty::RIP,
            microvisor_abi::vcpu::dirty::RIP
        );
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let kernel = Kernel {
            setup_sects: 0,
            ..Kernel::default()
        };
        let header = SetupHeader::parse(&kernel.image()).unwrap();
        assert_eq!(header.setup_sects, 4);
        assert_eq!(header.protected_mode_offset(), 5 * 512);
        let (result, memory, _) =
            load_files(&mut pc_layout(), &boot(&kernel.image(), b"", b""), load);
        result.unwrap();
        assert_eq!(
            &memory.memory.0[0x100_0000..0x100_0800],
            &kernel.payload[..]
        );
    }

    #[test]
    fn a_taken_preferred_address_moves_a_relocatable_kernel_up_aligned() {
        let booted = load_into(&mut preferred_taken(), &Kernel::default(), b"", b"").unwrap();
        assert_eq!(booted.entry, 0x120_0200, "the next 2 MiB boundary");
        // A 16 MiB kernel_alignment is honoured too.
        let aligned = Kernel {
            kernel_alignment: 0x100_0000,
            ..Kernel::default()
        };
        let booted = load_into(&mut preferred_taken(), &aligned, b"", b"").unwrap();
        assert_eq!(booted.entry, 0x200_0200);
        // A non-relocatable kernel goes at pref_address or nowhere.
        let fixed = Kernel {
            relocatable: 0,
            kernel_alignment: 3,
            ..Kernel::default()
        };
        assert!(matches!(
            load_into(&mut preferred_taken(), &fixed, b"", b""),
            Err(LinuxError::Layout(LayoutError::Overlap {
                item: Item::Kernel,
                ..
            }))
        ));
        assert_eq!(try_load(&fixed, b"", b"").unwrap().entry, 0x100_0200);
    }

    #[test]
    fn the_initrd_stays_below_initrd_addr_max() {
        let kernel = Kernel {
            initrd_addr_max: 0x7f_ffff,
            ..Kernel::default()
        };
        let mut layout = pc_layout();
        load_into(&mut layout, &kernel, b"", &[1; 0x1000]).unwrap();
        let initrd = layout
            .placed()
            .iter()
            .find(|p| p.item == Item::Module)
            .unwrap();
        assert_eq!((initrd.start, initrd.end()), (0x7f_f000, 0x80_0000));
        // Nowhere to go.
        let tiny = Kernel {
            initrd_addr_max: 0xfff,
            ..Kernel::default()
        };
        assert!(matches!(
            try_load(&tiny, b"", &[1; 0x1000]),
            Err(LinuxError::Layout(LayoutError::NoRoom {
                item: Item::Module,
                ..
            }))
        ));
        // Bigger than free RAM.
        assert!(matches!(
            try_load(&Kernel::default(), b"", &vec![1; MEMORY as usize]),
            Err(LinuxError::Layout(LayoutError::NoRoom {
                item: Item::Module,
                ..
            }))
        ));
    }

    #[test]
    fn command_lines_are_checked_against_cmdline_size() {
        let kernel = Kernel {
            cmdline_size: 16,
            ..Kernel::default()
        };
        assert!(try_load(&kernel, &[b'a'; 16], b"").is_ok());
        assert_eq!(
            try_load(&kernel, &[b'a'; 17], b""),
            Err(LinuxError::CommandLineTooLong {
                length: 17,
                max: 16
            })
        );
        assert_eq!(
            try_load(&kernel, b"root=/dev/vda\0x", b""),
            Err(LinuxError::CommandLineHasNul { at: 13 })
        );
    }

    #[test]
    fn refuses_what_is_not_a_64_bit_bzimage() {
        let refused = |kernel: Kernel| try_load(&kernel, b"", b"").unwrap_err();
        let mut image = Kernel::default().image();
        image[0x202] = b'h';
        assert_eq!(
            load_files(&mut pc_layout(), &boot(&image, b"", b""), load).0,
            Err(LinuxError::BadMagic { found: 0x5372_6468 })
        );
        let mut image = Kernel::default().image();
        image[0x1fe] = 0;
        assert_eq!(
            SetupHeader::parse(&image),
            Err(LinuxError::BadBootFlag { found: 0xaa00 })
        );
        assert_eq!(
            refused(Kernel {
                version: 0x020b,
                ..Kernel::default()
            }),
            LinuxError::ProtocolTooOld { version: 0x020b }
        );
        assert_eq!(
            refused(Kernel {
                loadflags: 0,
                ..Kernel::default()
            }),
            LinuxError::NotBzImage
        );
        assert_eq!(
            refused(Kernel {
                xloadflags: 0x7e,
                ..Kernel::default()
            }),
            LinuxError::No64BitEntry
        );
        for alignment in [0, 3, 0x30_0000] {
            assert_eq!(
                refused(Kernel {
                    kernel_alignment: alignment,
                    ..Kernel::default()
                }),
                LinuxError::BadAlignment { alignment }
            );
        }
        for jump in [[0xeb, 0x61], [0xeb, 0x8f], [0xeb, 0xf0], [0xe9, 0x6a]] {
            let mut image = Kernel::default().image();
            image[0x200..0x202].copy_from_slice(&jump);
            assert_eq!(
                SetupHeader::parse(&image),
                Err(LinuxError::BadHeaderLength { jump })
            );
        }
    }

    #[test]
    fn refuses_kernels_that_do_not_fit() {
        // init_size larger than RAM above pref_address.
        assert!(matches!(
            try_load(
                &Kernel {
                    init_size: 0xffff_ffff,
                    ..Kernel::default()
                },
                b"",
                b""
            ),
            Err(LinuxError::Layout(LayoutError::NoRoom {
                item: Item::Kernel,
                ..
            }))
        ));
        // A huge pref_address.
        assert!(matches!(
            try_load(
                &Kernel {
                    pref_address: u64::MAX - 0xfff,
                    ..Kernel::default()
                },
                b"",
                b""
            ),
            Err(LinuxError::Layout(LayoutError::NoRoom {
                item: Item::Kernel,
                ..
            }))
        ));
        let fixed = |pref_address| Kernel {
            relocatable: 0,
            pref_address,
            ..Kernel::default()
        };
        assert_eq!(
            try_load(&fixed(u64::MAX - 0xfff), b"", b""),
            Err(LinuxError::KernelAbove4GiB {
                address: u64::MAX - 0xfff
            })
        );
        assert_eq!(
            try_load(&fixed(FOUR_GIB - 0x1000), b"", b""),
            Err(LinuxError::KernelAbove4GiB {
                address: FOUR_GIB - 0x1000
            })
        );
        // In the reserved legacy window.
        assert!(matches!(
            try_load(&fixed(0xa_0000), b"", b""),
            Err(LinuxError::Layout(LayoutError::NotInRam {
                item: Item::Kernel,
                ..
            }))
        ));
        // Guest memory smaller than the memory map.
        let image = Kernel::default().image();
        let halved = checked_load(&mut pc_layout(), MEMORY / 2, |state, memory, layout| {
            load(state, memory, layout, &boot(&image, b"", b""))
        });
        assert_eq!(
            halved.0,
            Err(LinuxError::Layout(LayoutError::MemorySmaller {
                memory: MEMORY / 2,
                map: MEMORY
            }))
        );
        // A memory map with no RAM for the boot structures below 4 GiB.
        let high_only = MemoryMap::new(
            &[Region::new(0x100_0000, 0x40_0000, RegionKind::Ram)],
            MEMORY,
        )
        .unwrap();
        let refused = load_files(
            &mut GuestLayout::new(high_only),
            &boot(&image, b"", b""),
            load,
        );
        assert!(matches!(
            refused.0,
            Err(LinuxError::Layout(LayoutError::NoRoom {
                item: Item::BootTables,
                ..
            }))
        ));
    }

    #[test]
    fn every_truncation_is_refused_as_truncated() {
        let kernel = Kernel::default();
        let image = kernel.image();
        for length in 0..image.len() {
            let (result, _, _) =
                load_files(&mut pc_layout(), &boot(&image[..length], b"", b""), load);
            assert!(
                matches!(result, Err(LinuxError::Truncated { needed, length: got }) if got == length as u64 && needed > got),
                "length {length}: {result:?}"
            );
        }
        // No protected-mode byte at all, even with syssize 0.
        let mut setup_only = Kernel::default().image();
        setup_only.truncate(4 * 512);
        setup_only[0x1f4..0x1f8].fill(0);
        assert_eq!(
            SetupHeader::parse(&setup_only),
            Err(LinuxError::Truncated {
                needed: 4 * 512 + 1,
                length: 4 * 512
            })
        );
        // A syssize larger than the file.
        let mut image = image;
        image[0x1f4..0x1f8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            SetupHeader::parse(&image),
            Err(LinuxError::Truncated {
                needed: 4 * 512 + u64::from(u32::MAX) * 16,
                length: image.len() as u64
            })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x1200)) {
            let (result, _, _) = load_files(&mut pc_layout(), &boot(&bytes, b"x", b"y"), load);
            prop_assert!(result.is_err());
        }

        /// A valid image with bytes of its header overwritten: refused with
        /// nothing written, or loaded inside RAM with its entry at +0x200.
        #[test]
        fn corrupted_headers_never_panic(
            changes in proptest::collection::vec((0x1f1usize..0x270, any::<u8>()), 1..8),
            initrd in 0usize..0x2000,
        ) {
            let mut image = Kernel::default().image();
            for (at, value) in changes {
                image[at] = value;
            }
            let initrd = vec![5u8; initrd];
            let mut layout = pc_layout();
            // A refusal is checked by load_image.
            if let (Ok(booted), _, _) = load_files(&mut layout, &boot(&image, b"quiet", &initrd), load) {
                    let kernel = layout.placed()[0];
                    prop_assert_eq!(kernel.item, Item::Kernel);
                    prop_assert_eq!(booted.entry, kernel.start + ENTRY_64);
                    for placed in layout.placed() {
                        prop_assert!(layout.map().is_ram(placed.start, placed.end()));
                        prop_assert!(placed.end() <= FOUR_GIB);
                    }
            }
        }
    }
}
