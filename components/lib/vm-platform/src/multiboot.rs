//! Multiboot (version 1, specification 0.6.96) for ELF32 and ELF64
//! kernels, and for any kernel whose header carries the address fields.
//!
//! [`Header::find`] looks for the header in the first 8192 bytes, at a
//! 4-byte-aligned offset, with magic 0x1BADB002 and a checksum that makes
//! magic + flags + checksum zero. The flags are honoured as follows:
//!
//! - bit 0 (page-align modules): every module is page-aligned anyway;
//! - bit 1 (memory information): always given, `mem_lower`/`mem_upper` and
//!   the full memory map;
//! - bit 2 (video mode): a request this loader cannot meet (there is no
//!   display); it is ignored, and the information's flags say no video
//!   information was given (bits 11 and 12 clear), which the kernel must
//!   check anyway. QEMU's loader does the same;
//! - any other bit of 0..15 is a requirement this loader does not know,
//!   and the kernel is refused (the specification asks for that);
//! - bit 16 (address fields): the file is loaded from the offset the fields
//!   give (`header offset - (header_addr - load_addr)`) to `load_end_addr`
//!   (0: the end of the file) at `load_addr`, the bss to `bss_end_addr` is
//!   zeroed, and the entry is `entry_addr`; without it the file must be an
//!   ELF32 or ELF64 executable, loaded by `p_paddr`, whose `e_entry` is
//!   translated to a physical address through the segment holding it (as
//!   GRUB does, for higher-half kernels). The entry must lie in the loaded
//!   code and below 4 GiB.
//!
//! [`load`] plans before it writes, like the other loaders: the kernel at
//! its addresses, then in the lowest free RAM from 4 KiB the GDT page, the
//! information block (the `multiboot_info`, the module list, the memory map
//! with each entry's `size` at offset -4 of `base_addr`) and the strings
//! (the command line, whose first word is the kernel's name as GRUB passes
//! it, the boot loader's name, each module's string), and the modules in
//! the highest free RAM below 4 GiB. The vCPU starts in 32-bit protected
//! mode, paging off, flat segments, interrupts off, EAX = 0x2BADB002 and
//! EBX = the information.

use microvisor_abi::vcpu::{VcpuState, gpr};

use crate::Memory;
use crate::elf::{Elf, ElfError, Segments};
use crate::layout::{self, Boot, FOUR_GIB, GuestLayout, Item, LayoutError, MemoryMap};
use crate::le::{put_u32, put_u64, u32_at};
use crate::setup::{self, GDT_BYTES};

/// The header's magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What EAX holds at the entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// The header lies in the file's first bytes.
pub const SEARCH_BYTES: usize = 8192;
/// Header flags.
pub const PAGE_ALIGN_MODULES: u32 = 1 << 0;
pub const MEMORY_INFO: u32 = 1 << 1;
pub const VIDEO_MODE: u32 = 1 << 2;
pub const ADDRESS_FIELDS: u32 = 1 << 16;
/// The requirement bits (0..15) this loader meets or knowingly ignores.
const KNOWN_REQUIREMENTS: u32 = PAGE_ALIGN_MODULES | MEMORY_INFO | VIDEO_MODE;
/// Modules a kernel may be given.
pub const MAX_MODULES: usize = 8;
/// The boot loader's name in the information.
pub const LOADER_NAME: &[u8] = b"microvisor";

/// `multiboot_info` flags and fields.
mod info {
    pub const MEMORY: u32 = 1 << 0;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODULES: u32 = 1 << 3;
    pub const MEMORY_MAP: u32 = 1 << 6;
    pub const LOADER_NAME: u32 = 1 << 9;
    pub const FLAGS: usize = 0;
    pub const MEM_LOWER: usize = 4;
    pub const MEM_UPPER: usize = 8;
    pub const CMDLINE_ADDR: usize = 16;
    pub const MODS_COUNT: usize = 20;
    pub const MODS_ADDR: usize = 24;
    pub const MMAP_LENGTH: usize = 44;
    pub const MMAP_ADDR: usize = 48;
    pub const BOOT_LOADER_NAME: usize = 64;
    /// Room for every field through the framebuffer's (116 bytes).
    pub const BYTES: usize = 0x80;
    pub const MODULE_BYTES: usize = 16;
    /// `size` (4 bytes, the rest's length: 20), `base_addr`, `length`,
    /// `type`.
    pub const MMAP_ENTRY_BYTES: usize = 24;
}

/// The information block's largest size.
const INFO_MAX: usize =
    info::BYTES + info::MODULE_BYTES * MAX_MODULES + info::MMAP_ENTRY_BYTES * layout::MAX_REGIONS;

/// The address fields (flag 16), all physical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// A checked multiboot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its offset in the file.
    pub offset: usize,
    pub flags: u32,
    /// Present when flag 16 is set.
    pub addresses: Option<Addresses>,
}

/// Why a multiboot kernel was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// No header magic at a 4-byte-aligned offset in the first 8192 bytes.
    NoHeader,
    /// The header at `offset` has the magic but a wrong checksum.
    BadChecksum {
        offset: usize,
    },
    /// Requirement flags (bits 0..15) this loader does not know.
    UnsupportedRequirements {
        bits: u32,
    },
    /// The file has `length` bytes; `needed` are needed (the address
    /// fields, or the bytes they say to load).
    Truncated {
        needed: u64,
        length: u64,
    },
    /// `load_addr` lies above `header_addr`.
    LoadAboveHeader {
        load_addr: u32,
        header_addr: u32,
    },
    /// The address fields put the start of the load before the file's
    /// first byte.
    LoadBeforeFile {
        load_addr: u32,
        header_addr: u32,
    },
    /// `load_end_addr` is not above `load_addr`.
    LoadEndBeforeLoad {
        load_addr: u32,
        load_end_addr: u32,
    },
    /// `bss_end_addr` lies below the end of the load.
    BssEndBeforeLoadEnd {
        bss_end_addr: u32,
        load_end: u64,
    },
    /// Not an ELF file, and the header has no address fields.
    NeedsAddressFields,
    /// The entry (as the file gives it) is not in the loaded code.
    EntryOutsideImage {
        entry: u64,
    },
    /// The entry's physical address does not fit 32 bits.
    EntryAbove4GiB {
        entry: u64,
    },
    TooManyModules {
        count: usize,
        max: usize,
    },
    /// Module `index` has no bytes.
    EmptyModule {
        index: usize,
    },
    /// The kernel's name is empty or has white space or a NUL (it is the
    /// command line's first word).
    BadName,
    /// The command line has a NUL at `at`.
    CommandLineHasNul {
        at: usize,
    },
    /// Module `index`'s string has a NUL at `at`.
    ModuleStringHasNul {
        index: usize,
        at: usize,
    },
    Elf(ElfError),
    /// No room, or an overlap, in guest memory (the item says what).
    Layout(LayoutError),
}

layout::wrap_errors!(MultibootError { Elf(ElfError), Layout(LayoutError) });

impl core::fmt::Display for MultibootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoHeader => write!(f, "no multiboot header in the first {SEARCH_BYTES} bytes"),
            Self::BadChecksum { offset } => {
                write!(
                    f,
                    "the multiboot header at {offset:#x} has a wrong checksum"
                )
            }
            Self::UnsupportedRequirements { bits } => write!(
                f,
                "the kernel requires multiboot features {bits:#x} this loader does not have"
            ),
            Self::Truncated { needed, length } => write!(
                f,
                "the kernel has {length} bytes, its multiboot header needs {needed}"
            ),
            Self::LoadAboveHeader {
                load_addr,
                header_addr,
            } => write!(
                f,
                "load_addr {load_addr:#x} lies above header_addr {header_addr:#x}"
            ),
            Self::LoadBeforeFile {
                load_addr,
                header_addr,
            } => write!(
                f,
                "load_addr {load_addr:#x} with header_addr {header_addr:#x} starts before the file"
            ),
            Self::LoadEndBeforeLoad {
                load_addr,
                load_end_addr,
            } => write!(
                f,
                "load_end_addr {load_end_addr:#x} is not above load_addr {load_addr:#x}"
            ),
            Self::BssEndBeforeLoadEnd {
                bss_end_addr,
                load_end,
            } => write!(
                f,
                "bss_end_addr {bss_end_addr:#x} lies below the load's end {load_end:#x}"
            ),
            Self::NeedsAddressFields => write!(
                f,
                "not an ELF file and the multiboot header has no address fields"
            ),
            Self::EntryOutsideImage { entry } => {
                write!(f, "the entry {entry:#x} is not in the kernel's code")
            }
            Self::EntryAbove4GiB { entry } => {
                write!(
                    f,
                    "the entry's physical address {entry:#x} lies above 4 GiB"
                )
            }
            Self::TooManyModules { count, max } => {
                write!(f, "{count} modules, at most {max} are supported")
            }
            Self::EmptyModule { index } => write!(f, "module {index} is empty"),
            Self::BadName => write!(f, "the kernel's name is empty or has white space or a NUL"),
            Self::CommandLineHasNul { at } => {
                write!(f, "the command line has a NUL byte at {at}")
            }
            Self::ModuleStringHasNul { index, at } => {
                write!(f, "module {index}'s string has a NUL byte at {at}")
            }
            Self::Elf(error) => write!(f, "{error}"),
            Self::Layout(error) => write!(f, "{error}"),
        }
    }
}

impl Header {
    /// Finds and checks the header.
    pub fn find(image: &[u8]) -> Result<Self, MultibootError> {
        let area = &image[..image.len().min(SEARCH_BYTES)];
        let mut bad_checksum = None;
        for offset in (0..area.len().saturating_sub(11)).step_by(4) {
            let word = |at: usize| u32_at(area, offset + at).unwrap_or(0);
            if word(0) != HEADER_MAGIC {
                continue;
            }
            let flags = word(4);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(word(8)) != 0 {
                bad_checksum.get_or_insert(offset);
                continue;
            }
            return Self::read(image, offset, flags);
        }
        Err(match bad_checksum {
            Some(offset) => MultibootError::BadChecksum { offset },
            None => MultibootError::NoHeader,
        })
    }

    fn read(image: &[u8], offset: usize, flags: u32) -> Result<Self, MultibootError> {
        let unknown = flags & 0xffff & !KNOWN_REQUIREMENTS;
        if unknown != 0 {
            return Err(MultibootError::UnsupportedRequirements { bits: unknown });
        }
        let addresses = if flags & ADDRESS_FIELDS == 0 {
            None
        } else {
            let field = |index: usize| {
                u32_at(image, offset + 12 + 4 * index).ok_or(MultibootError::Truncated {
                    needed: (offset + 32) as u64,
                    length: image.len() as u64,
                })
            };
            Some(Addresses {
                header_addr: field(0)?,
                load_addr: field(1)?,
                load_end_addr: field(2)?,
                bss_end_addr: field(3)?,
                entry_addr: field(4)?,
            })
        };
        Ok(Self {
            offset,
            flags,
            addresses,
        })
    }
}

/// What a multiboot loader boots.
#[derive(Clone, Copy, Debug)]
pub struct MultibootFiles<'a> {
    /// The kernel file.
    pub kernel: &'a [u8],
    /// The kernel's name: the command line's first word.
    pub name: &'a [u8],
    /// The rest of the command line, without a NUL.
    pub cmdline: &'a [u8],
    pub modules: &'a [Module<'a>],
}

/// A boot module and its string.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub bytes: &'a [u8],
    /// Its string (conventionally its name and arguments), without a NUL.
    pub string: &'a [u8],
}

/// The kernel image and its physical entry, from the address fields.
fn from_fields<'a>(
    image: &'a [u8],
    offset: usize,
    fields: Addresses,
) -> Result<(Segments<'a>, u32), MultibootError> {
    let Addresses {
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
        entry_addr,
    } = fields;
    let before_header =
        header_addr
            .checked_sub(load_addr)
            .ok_or(MultibootError::LoadAboveHeader {
                load_addr,
                header_addr,
            })?;
    let start =
        offset
            .checked_sub(before_header as usize)
            .ok_or(MultibootError::LoadBeforeFile {
                load_addr,
                header_addr,
            })?;
    let load = u64::from(load_addr);
    let size = match load_end_addr {
        0 => (image.len() - start) as u64,
        end if end > load_addr => u64::from(end - load_addr),
        _ => {
            return Err(MultibootError::LoadEndBeforeLoad {
                load_addr,
                load_end_addr,
            });
        }
    };
    if start as u64 + size > image.len() as u64 {
        return Err(MultibootError::Truncated {
            needed: start as u64 + size,
            length: image.len() as u64,
        });
    }
    let load_end = load + size;
    let end = match bss_end_addr {
        0 => load_end,
        bss_end if u64::from(bss_end) >= load_end => u64::from(bss_end),
        _ => {
            return Err(MultibootError::BssEndBeforeLoadEnd {
                bss_end_addr,
                load_end,
            });
        }
    };
    if !(load..load_end).contains(&u64::from(entry_addr)) {
        return Err(MultibootError::EntryOutsideImage {
            entry: u64::from(entry_addr),
        });
    }
    let segments = Segments::flat(image, start as u64, load, size, end - load)?;
    Ok((segments, entry_addr))
}

/// The kernel image and its physical entry, from the ELF headers.
fn from_elf(image: &[u8]) -> Result<(Segments<'_>, u32), MultibootError> {
    let elf = Elf::parse(image).map_err(|error| match error {
        ElfError::NotElf => MultibootError::NeedsAddressFields,
        other => MultibootError::Elf(other),
    })?;
    let segments = elf.segments()?;
    let entry = segments
        .physical(elf.entry)
        .filter(|&physical| segments.holds_code(physical))
        .ok_or(MultibootError::EntryOutsideImage { entry: elf.entry })?;
    let entry = u32::try_from(entry).map_err(|_| MultibootError::EntryAbove4GiB { entry })?;
    Ok((segments, entry))
}

/// `mem_lower` and `mem_upper` in KiB: RAM from 0 (at most 640 KiB), and
/// contiguous RAM from 1 MiB.
fn memory_sizes(map: &MemoryMap) -> (u32, u32) {
    const MIB: u64 = 1 << 20;
    let mut lower = 0;
    let mut upper = 0;
    for (start, end) in map.ram_runs() {
        if start == 0 {
            lower = end.min(640 << 10) >> 10;
        }
        if start <= MIB && MIB < end {
            upper = ((end - MIB) >> 10).min(u64::from(u32::MAX));
        }
    }
    (lower as u32, upper as u32)
}

/// Checks the strings; returns the strings block's size.
fn check_strings(files: &MultibootFiles) -> Result<u64, MultibootError> {
    let bad_name = |b: &u8| b.is_ascii_whitespace() || *b == 0;
    if files.name.is_empty() || files.name.iter().any(bad_name) {
        return Err(MultibootError::BadName);
    }
    if let Some(at) = files.cmdline.iter().position(|&b| b == 0) {
        return Err(MultibootError::CommandLineHasNul { at });
    }
    if files.modules.len() > MAX_MODULES {
        return Err(MultibootError::TooManyModules {
            count: files.modules.len(),
            max: MAX_MODULES,
        });
    }
    let mut size = command_line_length(files) + 1 + LOADER_NAME.len() as u64 + 1;
    for (index, module) in files.modules.iter().enumerate() {
        if module.bytes.is_empty() {
            return Err(MultibootError::EmptyModule { index });
        }
        if let Some(at) = module.string.iter().position(|&b| b == 0) {
            return Err(MultibootError::ModuleStringHasNul { index, at });
        }
        size += module.string.len() as u64 + 1;
    }
    Ok(size)
}

/// The command line's length: the name, then a space and the rest if any.
fn command_line_length(files: &MultibootFiles) -> u64 {
    let rest = match files.cmdline.len() {
        0 => 0,
        length => length + 1,
    };
    (files.name.len() + rest) as u64
}

/// Writes the strings at `at`: the command line, the loader's name, the
/// module strings. Returns their addresses.
fn write_strings(
    memory: &mut impl Memory,
    at: u64,
    files: &MultibootFiles,
) -> Result<(u64, u64, [u64; MAX_MODULES]), LayoutError> {
    layout::write(memory, at, files.name)?;
    if !files.cmdline.is_empty() {
        let rest = at + files.name.len() as u64;
        layout::write(memory, rest, b" ")?;
        layout::write(memory, rest + 1, files.cmdline)?;
    }
    let mut next = at + command_line_length(files);
    layout::write(memory, next, &[0])?;
    next += 1;
    let name = next;
    layout::write_string(memory, name, LOADER_NAME)?;
    next += LOADER_NAME.len() as u64 + 1;
    let mut strings = [0; MAX_MODULES];
    for (slot, module) in strings.iter_mut().zip(files.modules) {
        layout::write_string(memory, next, module.string)?;
        *slot = next;
        next += module.string.len() as u64 + 1;
    }
    Ok((at, name, strings))
}

/// Where [`load`] put things, for the information block.
struct Placed {
    info: u64,
    cmdline: u64,
    loader_name: u64,
    /// Each module's (start, size, string).
    modules: [(u64, u64, u64); MAX_MODULES],
    count: usize,
}

/// Builds the information block: `multiboot_info`, the module list, the
/// memory map; returns it and its length.
fn information(map: &MemoryMap, placed: &Placed) -> ([u8; INFO_MAX], usize) {
    let mut block = [0u8; INFO_MAX];
    let flags = info::MEMORY | info::CMDLINE | info::MODULES | info::MEMORY_MAP | info::LOADER_NAME;
    let (lower, upper) = memory_sizes(map);
    // Everything is below 4 GiB: the 32-bit fields hold the addresses.
    put_u32(&mut block, info::FLAGS, flags);
    put_u32(&mut block, info::MEM_LOWER, lower);
    put_u32(&mut block, info::MEM_UPPER, upper);
    put_u32(&mut block, info::CMDLINE_ADDR, placed.cmdline as u32);
    put_u32(
        &mut block,
        info::BOOT_LOADER_NAME,
        placed.loader_name as u32,
    );
    let mut end = info::BYTES;
    put_u32(&mut block, info::MODS_COUNT, placed.count as u32);
    put_u32(
        &mut block,
        info::MODS_ADDR,
        (placed.info + end as u64) as u32,
    );
    for &(start, size, string) in &placed.modules[..placed.count] {
        put_u32(&mut block, end, start as u32);
        put_u32(&mut block, end + 4, (start + size) as u32);
        put_u32(&mut block, end + 8, string as u32);
        end += info::MODULE_BYTES;
    }
    let regions = map.regions();
    put_u32(
        &mut block,
        info::MMAP_ADDR,
        (placed.info + end as u64) as u32,
    );
    put_u32(
        &mut block,
        info::MMAP_LENGTH,
        (regions.len() * info::MMAP_ENTRY_BYTES) as u32,
    );
    for region in regions {
        put_u32(&mut block, end, (info::MMAP_ENTRY_BYTES - 4) as u32);
        put_u64(&mut block, end + 4, region.start);
        put_u64(&mut block, end + 12, region.size);
        put_u32(&mut block, end + 20, region.kind.e820_type());
        end += info::MMAP_ENTRY_BYTES;
    }
    (block, end)
}

/// Loads a multiboot kernel into `memory` as the module documentation says,
/// records what it placed in `layout`, and sets `state` for the entry. On
/// an error nothing is written and `layout` is unchanged.
pub fn load(
    state: &mut VcpuState,
    memory: &mut impl Memory,
    layout: &mut GuestLayout,
    files: &MultibootFiles,
) -> Result<Boot, MultibootError> {
    let header = Header::find(files.kernel)?;
    let (segments, entry) = match header.addresses {
        Some(fields) => from_fields(files.kernel, header.offset, fields)?,
        None => from_elf(files.kernel)?,
    };
    let strings_size = check_strings(files)?;
    layout.check_memory(memory)?;
    let mut plan = *layout;
    segments.place(&mut plan)?;
    let gdt = plan.place_boot(Item::BootTables, GDT_BYTES)?;
    let info_size = info::BYTES
        + info::MODULE_BYTES * files.modules.len()
        + info::MMAP_ENTRY_BYTES * plan.map().regions().len();
    let info = plan.place_boot(Item::BootInfo, info_size as u64)?;
    let strings = plan.place_boot(Item::CommandLine, strings_size)?;
    let mut modules = [(0, 0, 0); MAX_MODULES];
    for (slot, module) in modules.iter_mut().zip(files.modules) {
        let size = module.bytes.len() as u64;
        // Not empty (checked): always placed.
        slot.0 = plan.place_module(size, FOUR_GIB)?.unwrap_or(0);
        slot.1 = size;
    }
    segments.write(memory)?;
    let gdt = setup::write_gdt(memory, gdt)?;
    let (cmdline, loader_name, module_strings) = write_strings(memory, strings, files)?;
    for ((start, _, string), (module, &address)) in modules
        .iter_mut()
        .zip(files.modules.iter().zip(&module_strings))
    {
        layout::write(memory, *start, module.bytes)?;
        *string = address;
    }
    let placed = Placed {
        info,
        cmdline,
        loader_name,
        modules,
        count: files.modules.len(),
    };
    let (block, length) = information(plan.map(), &placed);
    layout::write(memory, info, &block[..length])?;
    let booted = Boot::protected_mode(state, gdt, entry, info);
    state.gpr[gpr::RAX] = u64::from(BOOTLOADER_MAGIC);
    *layout = plan;
    Ok(booted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Class;
    use crate::elf::tests::{Load, build};
    use crate::layout::Placement;
    use crate::setup::tests::assert_segments_match_gdt;
    use crate::testing::{Counting, MEMORY, checked_load, pc_layout};
    use proptest::prelude::*;
    use zerocopy::FromZeros;

    /// A header with `flags`, the right checksum and the address fields.
    fn header(flags: u32, fields: Option<[u32; 5]>) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(
            &0u32
                .wrapping_sub(HEADER_MAGIC)
                .wrapping_sub(flags)
                .to_le_bytes(),
        );
        for field in fields.into_iter().flatten() {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out
    }

    /// A flat kernel: 0x40 bytes of code, the header at 0x40, more code;
    /// linked at 1 MiB, `load_end` 1 MiB + 0x100, bss to 1 MiB + 0x3000,
    /// entry at 1 MiB + 0x80.
    fn flat(flags: u32) -> Vec<u8> {
        let mut out = vec![0x90u8; 0x40];
        out.extend(header(
            flags | ADDRESS_FIELDS,
            Some([0x10_0040, 0x10_0000, 0x10_0100, 0x10_3000, 0x10_0080]),
        ));
        out.resize(0x100, 0xf4);
        out
    }

    /// An ELF kernel whose first segment starts with the header.
    fn elf(class: Class, flags: u32, virtual_base: u64) -> Vec<u8> {
        let mut text = header(flags, None);
        text.resize(0x200, 0xcc);
        let load = |physical: u64, bytes, size| Load {
            physical,
            virtual_address: virtual_base + physical,
            bytes,
            memory_size: size,
        };
        build(
            class,
            virtual_base + 0x10_0010,
            &[
                load(0x10_0000, &text[..], 0x200),
                load(0x10_1000, &b"data"[..], 0x1000),
            ],
            &[],
            true,
        )
    }

    fn files<'a>(kernel: &'a [u8], modules: &'a [Module<'a>]) -> MultibootFiles<'a> {
        MultibootFiles {
            kernel,
            name: b"kernel.elf",
            cmdline: b"console=ttyS0",
            modules,
        }
    }

    fn try_load(files: &MultibootFiles) -> Result<Boot, MultibootError> {
        load_into(&mut pc_layout(), files).0
    }

    fn load_into(
        layout: &mut GuestLayout,
        files: &MultibootFiles,
    ) -> (Result<Boot, MultibootError>, Counting, VcpuState) {
        checked_load(layout, MEMORY, |state, memory, layout| {
            load(state, memory, layout, files)
        })
    }

    fn u32_in(bytes: &[u8], at: u64) -> u32 {
        u32::from_le_bytes(bytes[at as usize..at as usize + 4].try_into().unwrap())
    }

    fn c_string(bytes: &[u8], at: u32) -> &[u8] {
        let tail = &bytes[at as usize..];
        &tail[..tail.iter().position(|&b| b == 0).unwrap()]
    }

    #[test]
    fn boots_a_kernel_with_address_fields_and_the_full_information() {
        let kernel = flat(PAGE_ALIGN_MODULES | MEMORY_INFO);
        let modules = [
            Module {
                bytes: &[1; 0x1234],
                string: b"initrd.img",
            },
            Module {
                bytes: &[2; 0x10],
                string: b"",
            },
        ];
        let mut memory = Counting::zeroed(MEMORY as usize);
        // Stale bytes where the bss goes: the loader must zero them.
        memory.memory.0[0x10_0100..0x10_3000].fill(0xaa);
        let mut layout = pc_layout();
        let mut state = VcpuState::new_zeroed();
        let booted = load(
            &mut state,
            &mut memory,
            &mut layout,
            &files(&kernel, &modules),
        )
        .unwrap();
        let ram = &memory.memory.0;
        assert_eq!(&ram[0x10_0000..0x10_0100], &kernel[..]);
        assert!(
            ram[0x10_0100..0x10_3000].iter().all(|&b| b == 0),
            "bss zeroed"
        );
        assert_eq!(
            layout.placed(),
            &[
                Placement::new(Item::Kernel, 0x10_0000, 0x3000),
                Placement::new(Item::BootTables, 0x1000, 0x1000),
                Placement::new(Item::BootInfo, 0x2000, 0x80 + 2 * 16 + 4 * 24),
                Placement::new(Item::CommandLine, 0x3000, 25 + 11 + 11 + 1),
                Placement::new(Item::Module, MEMORY - 0x2000, 0x1234),
                Placement::new(Item::Module, MEMORY - 0x3000, 0x10),
            ]
        );

        // multiboot_info, byte by byte.
        let info = booted.info;
        let fields = |at| u32_in(ram, info + at);
        assert_eq!(
            fields(0),
            0b10_0100_1101,
            "flags: mem, cmdline, mods, mmap, loader name"
        );
        assert_eq!(
            (fields(4), fields(8)),
            (639, 63 * 1024),
            "mem_lower, mem_upper in KiB"
        );
        assert_eq!(fields(12), 0, "no boot device");
        assert_eq!(c_string(ram, fields(16)), b"kernel.elf console=ttyS0");
        assert_eq!(c_string(ram, fields(64)), b"microvisor");
        assert_eq!(
            &ram[info as usize + 28..info as usize + 44],
            &[0; 16],
            "no symbols"
        );
        assert!(
            ram[info as usize + 52..info as usize + 64]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            ram[info as usize + 68..info as usize + 0x80]
                .iter()
                .all(|&b| b == 0),
            "no video"
        );
        // Modules: mod_start, mod_end (exclusive), string, reserved.
        assert_eq!((fields(20), fields(24)), (2, 0x2080));
        let module = |index: u64, at: u64| u32_in(ram, 0x2080 + 16 * index + at);
        assert_eq!(
            (module(0, 0), module(0, 4), module(0, 12)),
            (
                (MEMORY - 0x2000) as u32,
                (MEMORY - 0x2000 + 0x1234) as u32,
                0
            )
        );
        assert_eq!(c_string(ram, module(0, 8)), b"initrd.img");
        assert_eq!(
            (module(1, 0), module(1, 4)),
            ((MEMORY - 0x3000) as u32, (MEMORY - 0x3000 + 0x10) as u32)
        );
        assert_eq!(c_string(ram, module(1, 8)), b"");
        assert_eq!(module(0, 0) % 4096, 0, "page-aligned modules");
        assert_eq!(&ram[module(0, 0) as usize..][..0x1234], &[1; 0x1234][..]);
        // The memory map: mmap_addr points at the first entry's size.
        assert_eq!((fields(44), fields(48)), (4 * 24, 0x20a0));
        let mut expected = Vec::new();
        for (base, length, kind) in [
            (0u64, 0x9_fc00u64, 1u32),
            (0x9_fc00, 0x6_0400, 2),
            (0x10_0000, MEMORY - 0x10_0000, 1),
            (0xfec0_0000, 0x140_0000, 2),
        ] {
            expected.extend_from_slice(&20u32.to_le_bytes());
            expected.extend_from_slice(&base.to_le_bytes());
            expected.extend_from_slice(&length.to_le_bytes());
            expected.extend_from_slice(&kind.to_le_bytes());
        }
        assert_eq!(&ram[0x20a0..0x20a0 + 96], &expected[..]);

        // The machine state the specification gives.
        assert_eq!(booted.entry, 0x10_0080);
        assert_eq!(state.rip, 0x10_0080);
        assert_eq!(state.gpr[gpr::RAX], 0x2bad_b002);
        assert_eq!(state.gpr[gpr::RBX], info);
        assert_eq!(state.cr0 & (setup::CR0_PE | setup::CR0_PG), setup::CR0_PE);
        assert_eq!(state.rflags & (1 << 9 | 1 << 17), 0);
        assert_segments_match_gdt(&memory.memory, &state);
        assert_eq!(state.cs.attributes & 0x600, 0x400, "32-bit code");
    }

    #[test]
    fn boots_elf32_and_higher_half_elf64_kernels() {
        for (class, base) in [
            (Class::Elf32, 0),
            (Class::Elf32, 0xc000_0000),
            (Class::Elf64, 0xffff_ffff_8000_0000),
        ] {
            let kernel = elf(class, MEMORY_INFO, base);
            let (booted, memory, state) = load_into(&mut pc_layout(), &files(&kernel, &[]));
            let booted = booted.unwrap();
            assert_eq!(
                booted.entry, 0x10_0010,
                "{class:?} at {base:#x}: e_entry made physical"
            );
            assert_eq!(state.rip, 0x10_0010);
            let ram = &memory.memory.0;
            assert_eq!(&ram[0x10_0000..0x10_0004], &HEADER_MAGIC.to_le_bytes());
            assert_eq!(&ram[0x10_1000..0x10_1004], b"data");
            assert_eq!(u32_in(ram, booted.info + 20), 0, "no modules");
        }
    }

    #[test]
    fn the_video_request_is_ignored_and_unknown_requirements_refused() {
        let kernel = flat(VIDEO_MODE);
        let (booted, memory, _) = load_into(&mut pc_layout(), &files(&kernel, &[]));
        let flags = u32_in(&memory.memory.0, booted.unwrap().info);
        assert_eq!(
            flags & (1 << 11 | 1 << 12),
            0,
            "no VBE or framebuffer information"
        );
        assert_eq!(
            try_load(&files(&flat(1 << 3 | 1 << 15), &[])),
            Err(MultibootError::UnsupportedRequirements {
                bits: 1 << 3 | 1 << 15
            })
        );
        // Optional bits (17..31) are not requirements.
        assert!(try_load(&files(&flat(1 << 20), &[])).is_ok());
    }

    #[test]
    fn finds_only_well_formed_headers() {
        let at = |offset: usize, flags: u32| {
            let mut kernel = vec![0u8; offset];
            kernel.extend(header(flags, None));
            kernel.resize(SEARCH_BYTES + 64, 0);
            kernel
        };
        assert_eq!(Header::find(&at(0x1000, 0)).map(|h| h.offset), Ok(0x1000));
        assert_eq!(
            Header::find(&at(SEARCH_BYTES - 12, 0)).map(|h| h.offset),
            Ok(SEARCH_BYTES - 12)
        );
        assert_eq!(
            Header::find(&at(SEARCH_BYTES - 8, 0)),
            Err(MultibootError::NoHeader)
        );
        assert_eq!(
            Header::find(&at(0x1002, 0)),
            Err(MultibootError::NoHeader),
            "not 4-aligned"
        );
        let mut bad = at(0x100, 0);
        bad[0x108] ^= 1;
        assert_eq!(
            Header::find(&bad),
            Err(MultibootError::BadChecksum { offset: 0x100 })
        );
        // A later good header wins over an earlier stray magic.
        let mut both = at(0x200, 0);
        both[0x100..0x104].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        assert_eq!(Header::find(&both).map(|h| h.offset), Ok(0x200));
        assert_eq!(Header::find(b""), Err(MultibootError::NoHeader));
        // Address fields cut off by the end of the file.
        let mut short = header(ADDRESS_FIELDS, Some([0; 5]));
        short.truncate(20);
        assert_eq!(
            Header::find(&short),
            Err(MultibootError::Truncated {
                needed: 32,
                length: 20
            })
        );
    }

    /// A 0x100-byte flat kernel with its header at 0x40 and these address
    /// fields.
    fn with_fields(fields: [u32; 5]) -> Vec<u8> {
        let mut kernel = vec![0x90u8; 0x40];
        kernel.extend(header(ADDRESS_FIELDS, Some(fields)));
        kernel.resize(0x100, 0xf4);
        kernel
    }

    #[test]
    fn refuses_inconsistent_address_fields() {
        let with = |fields| try_load(&files(&with_fields(fields), &[]));
        assert!(with([0x10_0040, 0x10_0000, 0x10_0100, 0, 0x10_0000]).is_ok());
        // load_end_addr 0: the whole file.
        assert!(with([0x10_0040, 0x10_0000, 0, 0, 0x10_00ff]).is_ok());
        let cases = [
            (
                [0x10_0040, 0x10_0041, 0x10_0100, 0, 0x10_0080],
                MultibootError::LoadAboveHeader {
                    load_addr: 0x10_0041,
                    header_addr: 0x10_0040,
                },
            ),
            (
                [0x10_0040, 0x0f_ffff, 0x10_0100, 0, 0x10_0080],
                MultibootError::LoadBeforeFile {
                    load_addr: 0x0f_ffff,
                    header_addr: 0x10_0040,
                },
            ),
            (
                [0x10_0040, 0x10_0000, 0x10_0000, 0, 0x10_0000],
                MultibootError::LoadEndBeforeLoad {
                    load_addr: 0x10_0000,
                    load_end_addr: 0x10_0000,
                },
            ),
            (
                [0x10_0040, 0x10_0000, 0x10_0101, 0, 0x10_0080],
                MultibootError::Truncated {
                    needed: 0x101,
                    length: 0x100,
                },
            ),
            (
                [0x10_0040, 0x10_0000, 0xffff_ffff, 0, 0x10_0080],
                MultibootError::Truncated {
                    needed: 0xffef_ffff,
                    length: 0x100,
                },
            ),
            (
                [0x10_0040, 0x10_0000, 0x10_0100, 0x10_00ff, 0x10_0080],
                MultibootError::BssEndBeforeLoadEnd {
                    bss_end_addr: 0x10_00ff,
                    load_end: 0x10_0100,
                },
            ),
            (
                [0x10_0040, 0x10_0000, 0x10_0100, 0x10_2000, 0x10_0100],
                MultibootError::EntryOutsideImage { entry: 0x10_0100 },
            ),
            (
                [0x10_0040, 0x10_0000, 0x10_0100, 0x10_2000, 0x0f_ffff],
                MultibootError::EntryOutsideImage { entry: 0x0f_ffff },
            ),
        ];
        for (fields, error) in cases {
            assert_eq!(with(fields), Err(error), "{fields:x?}");
        }
        // Outside RAM: in the legacy window, in the device window, past
        // memory; and a bss running into the device window.
        for load in [0xa_0000u32, 0xfee0_0000, MEMORY as u32] {
            assert!(matches!(
                with([load + 0x40, load, load + 0x100, 0, load]),
                Err(MultibootError::Layout(LayoutError::NotInRam {
                    item: Item::Kernel,
                    ..
                }))
            ));
        }
        assert!(matches!(
            with([0x10_0040, 0x10_0000, 0x10_0100, 0xffff_ffff, 0x10_0080]),
            Err(MultibootError::Layout(LayoutError::NotInRam {
                item: Item::Kernel,
                ..
            }))
        ));
    }

    #[test]
    fn refuses_bad_elf_kernels() {
        // Neither ELF nor address fields.
        let mut raw = header(0, None);
        raw.resize(0x100, 0);
        assert_eq!(
            try_load(&files(&raw, &[])),
            Err(MultibootError::NeedsAddressFields)
        );
        // The entry outside every segment, and in bss.
        for entry in [0x20_0000u64, 0x10_1800] {
            let mut kernel = elf(Class::Elf32, 0, 0);
            kernel[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
            assert_eq!(
                try_load(&files(&kernel, &[])),
                Err(MultibootError::EntryOutsideImage { entry })
            );
        }
        // A physical entry above 4 GiB.
        let mut text = header(0, None);
        text.resize(0x20, 0);
        let high = build(
            Class::Elf64,
            0x1_0000_0000,
            &[Load::at(0x1_0000_0000, &text, 0x20)],
            &[],
            true,
        );
        assert_eq!(
            try_load(&files(&high, &[])),
            Err(MultibootError::EntryAbove4GiB {
                entry: 0x1_0000_0000
            })
        );
        // Overlapping segments.
        let overlapping = build(
            Class::Elf32,
            0x10_0000,
            &[
                Load::at(0x10_0000, &text, 0x100),
                Load::at(0x10_0080, b"x", 1),
            ],
            &[],
            true,
        );
        assert_eq!(
            try_load(&files(&overlapping, &[])),
            Err(MultibootError::Elf(ElfError::SegmentsOverlap {
                first: 0,
                second: 1
            }))
        );
    }

    #[test]
    fn refuses_bad_strings_and_modules() {
        let kernel = flat(0);
        let with = |name: &[u8], cmdline: &[u8], modules: &[Module]| {
            try_load(&MultibootFiles {
                kernel: &kernel,
                name,
                cmdline,
                modules,
            })
        };
        for name in [&b""[..], b"my kernel", b"a\tb", b"k\0"] {
            assert_eq!(
                with(name, b"", &[]),
                Err(MultibootError::BadName),
                "{name:?}"
            );
        }
        assert_eq!(
            with(b"k", b"a\0", &[]),
            Err(MultibootError::CommandLineHasNul { at: 1 })
        );
        let module = Module {
            bytes: b"m",
            string: b"m",
        };
        assert_eq!(
            with(
                b"k",
                b"",
                &[
                    module,
                    Module {
                        string: b"x\0",
                        ..module
                    }
                ]
            ),
            Err(MultibootError::ModuleStringHasNul { index: 1, at: 1 })
        );
        assert_eq!(
            with(
                b"k",
                b"",
                &[
                    module,
                    Module {
                        bytes: b"",
                        ..module
                    }
                ]
            ),
            Err(MultibootError::EmptyModule { index: 1 })
        );
        assert_eq!(
            with(b"k", b"", &[module; MAX_MODULES + 1]),
            Err(MultibootError::TooManyModules {
                count: MAX_MODULES + 1,
                max: MAX_MODULES
            })
        );
        let huge = vec![0; MEMORY as usize];
        assert!(matches!(
            with(
                b"k",
                b"",
                &[Module {
                    bytes: &huge,
                    string: b""
                }]
            ),
            Err(MultibootError::Layout(LayoutError::NoRoom {
                item: Item::Module,
                ..
            }))
        ));
        // No arguments: the command line is the name alone.
        let (booted, memory, _) = load_into(
            &mut pc_layout(),
            &MultibootFiles {
                kernel: &kernel,
                name: b"k",
                cmdline: b"",
                modules: &[module; MAX_MODULES],
            },
        );
        let ram = &memory.memory.0;
        assert_eq!(c_string(ram, u32_in(ram, booted.unwrap().info + 16)), b"k");
    }

    #[test]
    fn every_truncation_is_refused() {
        for kernel in [flat(0), elf(Class::Elf64, 0, 0)] {
            for length in 0..kernel.len() {
                let result = try_load(&files(&kernel[..length], &[]));
                assert!(result.is_err(), "length {length}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..0x400)) {
            prop_assert!(try_load(&files(&bytes, &[])).is_err());
        }

        /// Address fields near a consistent set, with random known flags:
        /// refused with nothing written (checked by load_into), or loaded
        /// with the entry in the kernel's code.
        #[test]
        fn random_address_fields_never_panic(
            flags in any::<u32>().prop_map(|f| f & (KNOWN_REQUIREMENTS | 0xffff_0000)),
            load in prop_oneof![0x9_f000u32..0xa_0000, 0x10_0000u32..0x11_0000],
            deltas in (-0x60i64..0x20, -0x20i64..0x140, -0x20i64..0x4000, -0x20i64..0x140),
        ) {
            let at = |delta: i64| (i64::from(load) + delta) as u32;
            let (header_at, load_end, bss_end, entry) = deltas;
            let fields = [at(0x40 + header_at), load, at(load_end), at(bss_end), at(entry)];
            let mut kernel = with_fields(fields);
            kernel[0x44..0x48].copy_from_slice(&(flags | ADDRESS_FIELDS).to_le_bytes());
            let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags | ADDRESS_FIELDS);
            kernel[0x48..0x4c].copy_from_slice(&checksum.to_le_bytes());
            let mut layout = pc_layout();
            if let (Ok(booted), memory, _) = load_into(&mut layout, &files(&kernel, &[])) {
                let placed = layout.placed()[0];
                prop_assert!(placed.start <= booted.entry && booted.entry < placed.end());
                let ram = &memory.memory.0;
                prop_assert_eq!(ram[booted.entry as usize], kernel[(booted.entry - u64::from(load)) as usize + (0x40 - (fields[0] - load)) as usize]);
            }
        }
    }
}
