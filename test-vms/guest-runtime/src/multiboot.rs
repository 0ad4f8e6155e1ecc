//! Multiboot (v1) for test VMs: a test VM that links the
//! `guest-multiboot` crate carries a header that sends loaders down their
//! ELF path (QEMU's and our world switcher's boot its ELF32 copy),
//! entering at `guest_start_multiboot`; [`info`] reads what the loader
//! passed and [`Info::verify`] checks it as a kernel must trust it: the
//! memory sizes against the memory map, the image, the information and
//! every module inside available RAM and apart from each other.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::fail;

/// The magic a multiboot loader leaves in EAX.
pub const LOADER_MAGIC: u32 = 0x2bad_b002;
/// Information flags.
pub const MEMORY: u32 = 1 << 0;
pub const COMMAND_LINE: u32 = 1 << 2;
pub const MODULES: u32 = 1 << 3;
pub const MEMORY_MAP: u32 = 1 << 6;
pub const LOADER_NAME: u32 = 1 << 9;
/// The memory map's type for available RAM.
pub const AVAILABLE: u32 = 1;
/// Memory-map entries and modules read (more is refused).
pub const MAX_REGIONS: usize = 32;
pub const MAX_MODULES: usize = 8;
/// Bytes of a string kept.
const STRING_BYTES: usize = 256;

unsafe extern "C" {
    static guest_multiboot_magic: AtomicU32;
    static guest_multiboot_info: AtomicU32;
    static __image_start: u8;
    static __image_end: u8;
}

/// A NUL-terminated string the loader passed, up to [`STRING_BYTES`] - 1
/// bytes of it.
#[derive(Clone, Copy, Debug)]
pub struct Text {
    bytes: [u8; STRING_BYTES],
    length: usize,
    /// Its address and length including the NUL (for overlap checks).
    pub address: u64,
    pub span: u64,
}

impl Text {
    const EMPTY: Self = Self {
        bytes: [0; STRING_BYTES],
        length: 0,
        address: 0,
        span: 0,
    };

    fn read(address: u32) -> Self {
        let mut text = Self::EMPTY;
        text.address = u64::from(address);
        loop {
            let byte = byte_at(text.address + text.span);
            text.span += 1;
            if byte == 0 || text.span > 4096 {
                break;
            }
            if text.length < STRING_BYTES - 1 {
                text.bytes[text.length] = byte;
                text.length += 1;
            }
        }
        text
    }

    /// The text ("" when not UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Region {
    pub base: u64,
    pub length: u64,
    pub kind: u32,
}

impl Region {
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.length)
    }
}

/// One boot module.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub start: u32,
    pub end: u32,
    pub string: Text,
}

impl Module {
    /// Its first bytes, up to `into.len()`; returns how many.
    pub fn read(&self, into: &mut [u8]) -> usize {
        let count = into.len().min((self.end - self.start) as usize);
        for (index, byte) in into[..count].iter_mut().enumerate() {
            *byte = byte_at(u64::from(self.start) + index as u64);
        }
        count
    }

    /// FNV-1a over all its bytes.
    pub fn checksum(&self) -> u32 {
        (u64::from(self.start)..u64::from(self.end)).fold(0x811c_9dc5u32, |hash, at| {
            (hash ^ u32::from(byte_at(at))).wrapping_mul(0x0100_0193)
        })
    }
}

/// What the loader's information structure says.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    /// Where the structure lies.
    pub address: u32,
    pub flags: u32,
    /// KiB of memory below 1 MiB and above it (flag bit 0).
    pub memory_lower: u32,
    pub memory_upper: u32,
    /// Flag bit 2.
    pub command_line: Text,
    /// Flag bit 3.
    pub modules: [Module; MAX_MODULES],
    pub module_count: usize,
    pub module_list: (u64, u64),
    /// Flag bit 6, and where the map lies.
    pub regions: [Region; MAX_REGIONS],
    pub region_count: usize,
    pub map: (u64, u64),
    /// Flag bit 9.
    pub loader_name: Text,
}

fn byte_at(address: u64) -> u8 {
    // SAFETY: the loader put its structures in guest RAM below 4 GiB,
    // which the boot tables identity-map; reading memory has no effect.
    unsafe { (address as *const u8).read_volatile() }
}

fn u32_at(address: u64) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|index| {
        byte_at(address + index as u64)
    }))
}

fn u64_at(address: u64) -> u64 {
    u64::from(u32_at(address)) | u64::from(u32_at(address + 4)) << 32
}

/// The information structure, when the image was entered through
/// multiboot with the loader's magic.
pub fn info() -> Option<Info> {
    // SAFETY: both words are written once by the 32-bit entry code, before
    // any Rust runs, and only read afterwards.
    let (magic, address) = unsafe {
        (
            guest_multiboot_magic.load(Ordering::SeqCst),
            guest_multiboot_info.load(Ordering::SeqCst),
        )
    };
    if magic != LOADER_MAGIC || address == 0 {
        return None;
    }
    let base = u64::from(address);
    let field = |offset: u64| u32_at(base + offset);
    let flags = field(0);
    let mut info = Info {
        address,
        flags,
        memory_lower: field(4),
        memory_upper: field(8),
        command_line: Text::EMPTY,
        modules: [Module {
            start: 0,
            end: 0,
            string: Text::EMPTY,
        }; MAX_MODULES],
        module_count: 0,
        module_list: (0, 0),
        regions: [Region::default(); MAX_REGIONS],
        region_count: 0,
        map: (0, 0),
        loader_name: Text::EMPTY,
    };
    if flags & COMMAND_LINE != 0 {
        info.command_line = Text::read(field(16));
    }
    if flags & MODULES != 0 {
        let (count, list) = (field(20), u64::from(field(24)));
        if count as usize > MAX_MODULES {
            fail(format_args!(
                "multiboot: {count} modules, this kernel reads {MAX_MODULES}"
            ));
        }
        info.module_count = count as usize;
        info.module_list = (list, u64::from(count) * 16);
        for (index, module) in info.modules[..count as usize].iter_mut().enumerate() {
            let at = list + 16 * index as u64;
            *module = Module {
                start: u32_at(at),
                end: u32_at(at + 4),
                string: Text::read(u32_at(at + 8)),
            };
        }
    }
    if flags & MEMORY_MAP != 0 {
        let (length, map) = (u64::from(field(44)), u64::from(field(48)));
        info.map = (map, length);
        // Each entry: its size (not counting itself), then base, length
        // and type.
        let mut at = map;
        while at < map + length {
            let size = u64::from(u32_at(at));
            if size < 20 || info.region_count == MAX_REGIONS {
                fail(format_args!(
                    "multiboot: memory-map entry {} at {at:#x} has size {size} (at least 20) or \
                     the map has more than {MAX_REGIONS} entries",
                    info.region_count
                ));
            }
            info.regions[info.region_count] = Region {
                base: u64_at(at + 4),
                length: u64_at(at + 12),
                kind: u32_at(at + 20),
            };
            info.region_count += 1;
            at += size + 4;
        }
    }
    if flags & LOADER_NAME != 0 {
        info.loader_name = Text::read(field(64));
    }
    Some(info)
}

impl Info {
    /// The memory map's entries.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.region_count]
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// KiB of available RAM in the map.
    pub fn available_kib(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|region| region.kind == AVAILABLE)
            .map(|region| region.length / 1024)
            .sum()
    }

    /// The available region holding all of `[start, end)`, if any.
    pub fn available(&self, start: u64, end: u64) -> Option<&Region> {
        self.regions()
            .iter()
            .find(|region| region.kind == AVAILABLE && region.base <= start && end <= region.end())
    }

    /// Checks what a kernel relies on, failing the test with the first
    /// thing wrong: the flags a kernel asking for memory information must
    /// get, available regions that do not overlap, `mem_lower` and
    /// `mem_upper` in their bounds, RAM at 1 MiB, the image, the
    /// structure, the map, the strings and every module in available RAM,
    /// modules page-aligned (the header asks for it) and apart from the
    /// image, the structure and each other.
    pub fn verify(&self) {
        let needed = MEMORY | MEMORY_MAP;
        if self.flags & needed != needed {
            fail(format_args!(
                "multiboot: flags {:#x} lack the memory sizes or the map",
                self.flags
            ));
        }
        let regions = self.regions();
        for (index, a) in regions.iter().enumerate() {
            if a.length == 0 {
                fail(format_args!("multiboot: memory-map entry {index} is empty"));
            }
            let overlap = regions[index + 1..].iter().any(|b| {
                (a.kind == AVAILABLE || b.kind == AVAILABLE) && a.base < b.end() && b.base < a.end()
            });
            if overlap {
                fail(format_args!(
                    "multiboot: memory-map entry {index} ({:#x}+{:#x}) overlaps another",
                    a.base, a.length
                ));
            }
        }
        // The specification promises no more: `mem_lower` at most 640 KiB,
        // `mem_upper` at most the RAM from 1 MiB to the first hole (QEMU
        // reports its RAM size, the map then keeps firmware tables out).
        let upper = self
            .available(0x10_0000, 0x10_0001)
            .map_or(0, |region| (region.end().min(1 << 32) - 0x10_0000) / 1024);
        if self.memory_lower > 640 || self.memory_upper == 0 || upper == 0 {
            fail(format_args!(
                "multiboot: mem_lower {} KiB, mem_upper {} KiB, and the map has {upper} KiB of \
                 RAM from 1 MiB",
                self.memory_lower, self.memory_upper
            ));
        }
        // Only the linker symbols' addresses are taken.
        let image = (
            &raw const __image_start as u64,
            &raw const __image_end as u64,
        );
        let structure = (u64::from(self.address), u64::from(self.address) + 0x58);
        let mut pieces: [(&str, u64, u64); 4 + MAX_MODULES] = [("", 0, 0); 4 + MAX_MODULES];
        let mut count = 0;
        let mut add = |what: &'static str, start: u64, end: u64| {
            pieces[count] = (what, start, end);
            count += 1;
        };
        add("the image", image.0, image.1);
        add("the information structure", structure.0, structure.1);
        if self.region_count > 0 {
            add("the memory map", self.map.0, self.map.0 + self.map.1);
        }
        if self.module_count > 0 {
            add(
                "the module list",
                self.module_list.0,
                self.module_list.0 + self.module_list.1,
            );
        }
        for module in self.modules() {
            if module.start % 4096 != 0 || module.end <= module.start {
                fail(format_args!(
                    "multiboot: module '{}' at {:#x}..{:#x} is empty or not page-aligned",
                    module.string.as_str(),
                    module.start,
                    module.end
                ));
            }
            add("a module", u64::from(module.start), u64::from(module.end));
        }
        let strings = [&self.command_line, &self.loader_name]
            .into_iter()
            .chain(self.modules().iter().map(|module| &module.string))
            .filter(|text| text.span > 0);
        for text in strings {
            if self
                .available(text.address, text.address + text.span)
                .is_none()
            {
                fail(format_args!(
                    "multiboot: the string '{}' at {:#x} is not in available RAM",
                    text.as_str(),
                    text.address
                ));
            }
        }
        let pieces = &pieces[..count];
        for (index, &(what, start, end)) in pieces.iter().enumerate() {
            if self.available(start, end).is_none() {
                fail(format_args!(
                    "multiboot: {what} at {start:#x}..{end:#x} is not in available RAM"
                ));
            }
            if let Some(&(other, ..)) = pieces[index + 1..]
                .iter()
                .find(|&&(_, s, e)| start < e && s < end)
            {
                fail(format_args!(
                    "multiboot: {what} at {start:#x}..{end:#x} overlaps {other}"
                ));
            }
        }
    }
}
