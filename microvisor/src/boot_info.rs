//! What the boot loader tells the core: the memory map, the boot modules and
//! the command line, read from either boot protocol.
//!
//! - **PVH** (QEMU `-kernel`): `ebx` points at an `hvm_start_info`
//!   (magic `0x336ec578`) with physical pointers to a module list and an
//!   E820-style memory map.
//! - **Multiboot2** (GRUB): `eax` holds `0x36d76289`, `ebx` points at a tag
//!   list (type 1 command line, 3 module, 6 memory map, 0 end).
//!
//! Both are read through [`PhysicalMemory`], bounds-checked, and condensed
//! into a fixed-size [`BootInfo`]: the core keeps no pointer into loader
//! memory after this. Malformed structures give a [`BootInfoError`].
//!
//! The command line keeps the longest valid UTF-8 prefix of at most
//! [`COMMAND_LINE_MAX`] bytes; a longer or partly invalid line is kept that
//! far and its full length recorded in
//! [`BootInfo::command_line_truncated_from`], so the core can say so
//! ([`BootInfo::command_line_cut`]: how much of how much, and why). A PVH
//! line over 4 KiB cannot be read at all: QEMU's PVH loader copies it into a
//! 4 KiB buffer without a bound, and the overflow overwrites the start info
//! (magic and memory-map pointer) behind it. That case is recognised and
//! reported as [`BootInfoError::CommandLineOverwroteStartInfo`] instead of
//! an unknown protocol.

use microvisor_abi::COMMAND_LINE_MAX;

/// The multiboot2 magic the loader leaves in `eax`.
pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
/// The magic at the start of a PVH `hvm_start_info`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// The most memory-map regions kept.
pub const MAX_REGIONS: usize = 64;
/// The most boot modules kept.
pub const MAX_MODULES: usize = 8;

/// Reads physical memory during boot.
pub trait PhysicalMemory {
    /// Fills `buffer` from physical address `address`; `false` if the range
    /// is not readable.
    fn read(&self, address: u64, buffer: &mut [u8]) -> bool;
}

/// Which protocol booted the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Pvh,
    Multiboot2,
}

impl Protocol {
    /// Name for the banner.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pvh => "pvh",
            Self::Multiboot2 => "multiboot2",
        }
    }
}

/// A memory-map region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub length: u64,
    /// True for usable RAM (E820 / multiboot type 1).
    pub usable: bool,
}

/// A boot module (a file the loader placed in memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub end: u64,
}

/// The condensed boot information.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub protocol: Protocol,
    regions: [Region; MAX_REGIONS],
    region_count: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    /// Regions or modules beyond the fixed capacity, ignored.
    pub dropped: usize,
    command_line: [u8; COMMAND_LINE_MAX],
    command_line_len: usize,
    /// The loader's command line was longer than what is kept (over
    /// [`COMMAND_LINE_MAX`] bytes, or not valid UTF-8 from some byte on): its
    /// length in bytes, counted up to [`COMMAND_LINE_SCAN_MAX`].
    pub command_line_truncated_from: Option<usize>,
    /// The loader's line is at least `command_line_truncated_from` bytes
    /// long, maybe more: a PVH line that filled QEMU's
    /// [`QEMU_PVH_LINE_BUFFER`] was cut where its buffer ends.
    command_line_length_is_lower_bound: bool,
}

/// What the core reports when it kept less than the loader's command line:
/// how much of how much, and why (the line was too long, or it has a byte
/// that is not UTF-8 there). Its `Display` is the warning line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandLineCut {
    /// Bytes kept.
    pub kept: usize,
    /// The loader's line in bytes; at least that many when `at_least`.
    pub length: usize,
    pub at_least: bool,
    /// Where the kept part stopped at a byte that is not valid UTF-8: its
    /// offset and value. `None` when it stopped at the length limit.
    pub invalid_byte: Option<(usize, u8)>,
}

impl core::fmt::Display for CommandLineCut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let at_least = if self.at_least { "at least " } else { "" };
        write!(
            f,
            "boot command line truncated to {} of {at_least}{} bytes: ",
            self.kept, self.length
        )?;
        match self.invalid_byte {
            Some((offset, byte)) => write!(
                f,
                "it stopped at an invalid UTF-8 byte ({byte:#04x} at offset {offset}); \
                 the core keeps only the valid text before it"
            ),
            None if self.kept < COMMAND_LINE_MAX => write!(
                f,
                "the core keeps at most {COMMAND_LINE_MAX} bytes, and a character crossed \
                 that limit"
            ),
            None => write!(f, "the core keeps at most {COMMAND_LINE_MAX} bytes"),
        }
    }
}

/// How far an unterminated command line is followed to count its length.
pub const COMMAND_LINE_SCAN_MAX: u64 = 1 << 20;
/// The size of QEMU's PVH loader's command-line buffer, NUL included.
pub const QEMU_PVH_LINE_BUFFER: u64 = 4096;
/// How far below the start info a PVH command line may begin to be taken
/// for one that overran it (QEMU's loader places its buffer just below,
/// with the 32-byte module entry between).
const OVERRUN_DISTANCE_MAX: u64 = 1 << 16;

/// Why the boot information could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Neither the multiboot2 magic nor a PVH start-info structure.
    UnknownProtocol { eax: u32 },
    /// A structure could not be read at this physical address.
    Unreadable { address: u64 },
    /// A structure's fields are inconsistent (named).
    Malformed(&'static str),
    /// The loader gave no memory map.
    NoMemoryMap,
    /// No PVH magic at `start_info`, but the start info's command-line
    /// pointer leads, just below it, to [`QEMU_PVH_LINE_BUFFER`] bytes
    /// without a NUL: a command line too long for QEMU's PVH loader filled
    /// its buffer and overwrote the start info behind it.
    CommandLineOverwroteStartInfo { start_info: u64, command_line: u64 },
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownProtocol { eax } => write!(
                f,
                "booted by an unknown protocol (eax={eax:#x}): use PVH (QEMU -kernel) or multiboot2 (GRUB)"
            ),
            Self::Unreadable { address } => {
                write!(f, "boot information unreadable at {address:#x}")
            }
            Self::Malformed(what) => write!(f, "malformed boot information: {what}"),
            Self::NoMemoryMap => write!(f, "the boot loader supplied no memory map"),
            Self::CommandLineOverwroteStartInfo {
                start_info,
                command_line,
            } => write!(
                f,
                "the boot command line at {command_line:#x} is longer than QEMU's 4 KiB PVH \
                 buffer and overwrote the start info at {start_info:#x} (its magic and memory \
                 map are lost): pass at most {COMMAND_LINE_MAX} bytes (the core keeps no more)"
            ),
        }
    }
}

impl BootInfo {
    fn empty(protocol: Protocol) -> Self {
        Self {
            protocol,
            regions: [Region::default(); MAX_REGIONS],
            region_count: 0,
            modules: [Module::default(); MAX_MODULES],
            module_count: 0,
            dropped: 0,
            command_line: [0; COMMAND_LINE_MAX],
            command_line_len: 0,
            command_line_truncated_from: None,
            command_line_length_is_lower_bound: false,
        }
    }

    /// Reads the NUL-terminated command line at `address`, looking at most
    /// `limit` bytes far: keeps its longest valid UTF-8 prefix of at most
    /// [`COMMAND_LINE_MAX`] bytes and records the full length when that is
    /// not all of it. The line ends at its NUL, at `limit`, or where memory
    /// stops being readable.
    fn read_command_line(&mut self, memory: &impl PhysicalMemory, address: u64, limit: u64) {
        if address == 0 {
            return;
        }
        let kept = &mut self.command_line;
        let length = text_length(memory, address, limit, |index, byte| {
            if let Some(slot) = kept.get_mut(index) {
                *slot = byte;
            }
        });
        let stored = &self.command_line[..length.min(COMMAND_LINE_MAX)];
        self.command_line_len = match core::str::from_utf8(stored) {
            Ok(text) => text.len(),
            Err(error) => error.valid_up_to(),
        };
        if self.command_line_len < length {
            self.command_line_truncated_from = Some(length);
        }
    }

    /// What was cut off the command line and why, when something was.
    pub fn command_line_cut(&self) -> Option<CommandLineCut> {
        let length = self.command_line_truncated_from?;
        let kept = self.command_line_len;
        let stored = &self.command_line[..length.min(COMMAND_LINE_MAX)];
        // An error with a length is a bad byte; without one, a character
        // cut at the end of what is stored.
        let invalid_byte = core::str::from_utf8(stored)
            .err()
            .and_then(|error| error.error_len())
            .map(|_| (kept, stored[kept]));
        Some(CommandLineCut {
            kept,
            length,
            at_least: self.command_line_length_is_lower_bound,
            invalid_byte,
        })
    }

    /// The boot command line ("" if none): what was kept of it, always
    /// valid UTF-8 (see [`BootInfo::command_line_truncated_from`]).
    pub fn command_line(&self) -> &str {
        let kept = &self.command_line[..self.command_line_len];
        // read_command_line keeps only a valid prefix; "" is unreachable.
        core::str::from_utf8(kept).unwrap_or("")
    }

    /// The value of `key=value` on the command line.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.command_line()
            .split_ascii_whitespace()
            .find_map(|word| {
                let (k, v) = word.split_once('=')?;
                (k == key).then_some(v)
            })
    }

    fn push_region(&mut self, region: Region) {
        if region.length == 0 {
            return;
        }
        if self.region_count == MAX_REGIONS {
            self.dropped += 1;
        } else {
            self.regions[self.region_count] = region;
            self.region_count += 1;
        }
    }

    fn push_module(&mut self, module: Module) -> Result<(), BootInfoError> {
        if module.end < module.start {
            return Err(BootInfoError::Malformed("module ends before it starts"));
        }
        if self.module_count == MAX_MODULES {
            self.dropped += 1;
        } else {
            self.modules[self.module_count] = module;
            self.module_count += 1;
        }
        Ok(())
    }

    /// The memory map.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.region_count]
    }

    /// The boot modules, in loader order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// One past the highest usable RAM address.
    pub fn top_of_ram(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.usable)
            .map(|r| r.start.saturating_add(r.length))
            .max()
            .unwrap_or(0)
    }

    /// Reads the boot information left by the loader: `eax` and `ebx` as
    /// they were at the 32-bit entry point.
    pub fn read(memory: &impl PhysicalMemory, eax: u32, ebx: u32) -> Result<Self, BootInfoError> {
        if eax == MULTIBOOT2_MAGIC {
            return Self::read_multiboot2(memory, u64::from(ebx));
        }
        let magic = read_u32(memory, u64::from(ebx))?;
        if magic == PVH_MAGIC {
            return Self::read_pvh(memory, u64::from(ebx));
        }
        if let Some(command_line) = overrun_command_line(memory, u64::from(ebx)) {
            return Err(BootInfoError::CommandLineOverwroteStartInfo {
                start_info: u64::from(ebx),
                command_line,
            });
        }
        Err(BootInfoError::UnknownProtocol { eax })
    }

    fn read_pvh(memory: &impl PhysicalMemory, address: u64) -> Result<Self, BootInfoError> {
        let mut info = Self::empty(Protocol::Pvh);
        let version = read_u32(memory, address + 4)?;
        let module_count = read_u32(memory, address + 12)?;
        let module_list = read_u64(memory, address + 16)?;
        info.read_command_line(
            memory,
            read_u64(memory, address + 24)?,
            COMMAND_LINE_SCAN_MAX,
        );
        // A line that reaches the end of QEMU's buffer overran it; what
        // QEMU wrote after it (the module entry) ended it there.
        info.command_line_length_is_lower_bound = info
            .command_line_truncated_from
            .is_some_and(|length| length as u64 >= QEMU_PVH_LINE_BUFFER);
        for index in 0..u64::from(module_count).min(64) {
            let entry = module_list + index * 32;
            let start = read_u64(memory, entry)?;
            let size = read_u64(memory, entry + 8)?;
            let end = start
                .checked_add(size)
                .ok_or(BootInfoError::Malformed("module size overflows"))?;
            info.push_module(Module { start, end })?;
        }
        if version < 1 {
            return Err(BootInfoError::NoMemoryMap);
        }
        let map = read_u64(memory, address + 40)?;
        let entries = read_u32(memory, address + 48)?;
        if entries == 0 {
            return Err(BootInfoError::NoMemoryMap);
        }
        for index in 0..u64::from(entries).min(1024) {
            let entry = map + index * 24;
            info.push_region(Region {
                start: read_u64(memory, entry)?,
                length: read_u64(memory, entry + 8)?,
                usable: read_u32(memory, entry + 16)? == 1,
            });
        }
        Ok(info)
    }

    fn read_multiboot2(memory: &impl PhysicalMemory, address: u64) -> Result<Self, BootInfoError> {
        let mut info = Self::empty(Protocol::Multiboot2);
        let total = u64::from(read_u32(memory, address)?);
        if !(16..=1 << 20).contains(&total) {
            return Err(BootInfoError::Malformed("multiboot2 information size"));
        }
        let end = address + total;
        let mut tag = address + 8;
        let mut saw_map = false;
        while tag + 8 <= end {
            let kind = read_u32(memory, tag)?;
            let size = u64::from(read_u32(memory, tag + 4)?);
            if size < 8 || tag + size > end {
                return Err(BootInfoError::Malformed("multiboot2 tag size"));
            }
            match kind {
                0 => break,
                1 => info.read_command_line(memory, tag + 8, size - 8),
                3 => {
                    if size < 16 {
                        return Err(BootInfoError::Malformed("multiboot2 module tag"));
                    }
                    let start = u64::from(read_u32(memory, tag + 8)?);
                    let module_end = u64::from(read_u32(memory, tag + 12)?);
                    info.push_module(Module {
                        start,
                        end: module_end,
                    })?;
                }
                6 => {
                    let entry_size = u64::from(read_u32(memory, tag + 8)?);
                    if entry_size < 24 || size < 16 {
                        return Err(BootInfoError::Malformed("multiboot2 memory-map entry size"));
                    }
                    saw_map = true;
                    let mut entry = tag + 16;
                    while entry + entry_size <= tag + size {
                        info.push_region(Region {
                            start: read_u64(memory, entry)?,
                            length: read_u64(memory, entry + 8)?,
                            usable: read_u32(memory, entry + 16)? == 1,
                        });
                        entry += entry_size;
                    }
                }
                _ => {}
            }
            tag += size.div_ceil(8) * 8;
        }
        if !saw_map {
            return Err(BootInfoError::NoMemoryMap);
        }
        Ok(info)
    }
}

/// The length of the NUL-terminated text at `address`: the bytes before its
/// NUL, at most `limit`, stopping early where memory is unreadable. Passes
/// each byte and its index to `each`.
fn text_length(
    memory: &impl PhysicalMemory,
    address: u64,
    limit: u64,
    mut each: impl FnMut(usize, u8),
) -> usize {
    let mut length = 0;
    while length < limit {
        let mut byte = [0];
        let readable = address
            .checked_add(length)
            .is_some_and(|at| memory.read(at, &mut byte));
        if !readable || byte[0] == 0 {
            break;
        }
        // length < limit <= COMMAND_LINE_SCAN_MAX, far below usize::MAX.
        each(length as usize, byte[0]);
        length += 1;
    }
    length as usize
}

/// Where the command line of a PVH start info at `start_info` begins, if
/// it lies just below the start info and fills QEMU's whole
/// [`QEMU_PVH_LINE_BUFFER`] without a NUL. QEMU's PVH loader writes the
/// magic before it copies the line and the line pointer (and module entry)
/// after, so a line that overflowed its buffer leaves the pointer intact
/// and the magic overwritten.
fn overrun_command_line(memory: &impl PhysicalMemory, start_info: u64) -> Option<u64> {
    let line = read_u64(memory, start_info.checked_add(24)?).ok()?;
    let distance = start_info.checked_sub(line)?;
    if line == 0 || !(QEMU_PVH_LINE_BUFFER..=OVERRUN_DISTANCE_MAX).contains(&distance) {
        return None;
    }
    let length = text_length(memory, line, QEMU_PVH_LINE_BUFFER, |_, _| {});
    (length as u64 == QEMU_PVH_LINE_BUFFER).then_some(line)
}

fn read_u32(memory: &impl PhysicalMemory, address: u64) -> Result<u32, BootInfoError> {
    let mut bytes = [0; 4];
    if !memory.read(address, &mut bytes) {
        return Err(BootInfoError::Unreadable { address });
    }
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(memory: &impl PhysicalMemory, address: u64) -> Result<u64, BootInfoError> {
    let mut bytes = [0; 8];
    if !memory.read(address, &mut bytes) {
        return Err(BootInfoError::Unreadable { address });
    }
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB of fake physical memory at address 0.
    struct Fake(Vec<u8>);

    impl Fake {
        fn new() -> Self {
            Self(vec![0; 0x1_0000])
        }
        fn put(&mut self, address: u64, bytes: &[u8]) {
            self.0[address as usize..address as usize + bytes.len()].copy_from_slice(bytes);
        }
        fn put32(&mut self, address: u64, value: u32) {
            self.put(address, &value.to_le_bytes());
        }
        fn put64(&mut self, address: u64, value: u64) {
            self.put(address, &value.to_le_bytes());
        }
    }

    impl PhysicalMemory for Fake {
        fn read(&self, address: u64, buffer: &mut [u8]) -> bool {
            let Some(end) = (address as usize).checked_add(buffer.len()) else {
                return false;
            };
            match self.0.get(address as usize..end) {
                Some(bytes) => {
                    buffer.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }

    fn pvh() -> Fake {
        let mut m = Fake::new();
        m.put32(0x1000, PVH_MAGIC);
        m.put32(0x1004, 1);
        m.put32(0x100c, 1);
        m.put64(0x1010, 0x2000);
        m.put64(0x1018, 0x3800);
        m.put(0x3800, b"selftest=core-fault quiet\0");
        m.put64(0x1028, 0x3000);
        m.put32(0x1030, 2);
        m.put64(0x2000, 0x80_0000);
        m.put64(0x2008, 0x1234);
        m.put64(0x3000, 0);
        m.put64(0x3008, 0x9_fc00);
        m.put32(0x3010, 1);
        m.put64(0x3018, 0x10_0000);
        m.put64(0x3020, 0x1ff0_0000);
        m.put32(0x3028, 1);
        m
    }

    #[test]
    fn reads_pvh() {
        let info = BootInfo::read(&pvh(), 0, 0x1000).unwrap();
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x80_0000,
                end: 0x80_1234
            }]
        );
        assert_eq!(info.regions().len(), 2);
        assert_eq!(info.top_of_ram(), 0x2000_0000);
        assert_eq!(info.command_line(), "selftest=core-fault quiet");
        assert_eq!(info.option("selftest"), Some("core-fault"));
        assert_eq!(info.option("quiet"), None);
    }

    #[test]
    fn pvh_errors() {
        let mut m = pvh();
        m.put32(0x1030, 0);
        assert_eq!(
            BootInfo::read(&m, 0, 0x1000).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
        let mut m = pvh();
        m.put64(0x1028, 0xfff0);
        assert!(matches!(
            BootInfo::read(&m, 0, 0x1000),
            Err(BootInfoError::Unreadable { .. })
        ));
        let mut m = pvh();
        m.put64(0x2008, u64::MAX);
        assert!(matches!(
            BootInfo::read(&m, 0, 0x1000),
            Err(BootInfoError::Malformed(_))
        ));
        assert_eq!(
            BootInfo::read(&pvh(), 7, 0x1004).unwrap_err(),
            BootInfoError::UnknownProtocol { eax: 7 }
        );
    }

    fn multiboot2() -> Fake {
        let mut m = Fake::new();
        let base = 0x4000;
        // module tag
        m.put32(base + 8, 3);
        m.put32(base + 12, 16 + 7);
        m.put32(base + 16, 0x90_0000);
        m.put32(base + 20, 0x90_5000);
        m.put(base + 24, b"system\0");
        // memory map tag at the next 8-byte boundary (8 + 24 -> 32)
        let map = base + 32;
        m.put32(map, 6);
        m.put32(map + 4, 16 + 2 * 24);
        m.put32(map + 8, 24);
        m.put64(map + 16, 0);
        m.put64(map + 24, 0xa_0000);
        m.put32(map + 32, 1);
        m.put64(map + 40, 0x10_0000);
        m.put64(map + 48, 0x1000_0000);
        m.put32(map + 56, 2);
        let end = map + 16 + 48;
        m.put32(end, 0);
        m.put32(end + 4, 8);
        m.put32(base, (end + 8 - base) as u32);
        m
    }

    #[test]
    fn reads_multiboot2() {
        let info = BootInfo::read(&multiboot2(), MULTIBOOT2_MAGIC, 0x4000).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x90_0000,
                end: 0x90_5000
            }]
        );
        assert_eq!(
            info.regions()[1],
            Region {
                start: 0x10_0000,
                length: 0x1000_0000,
                usable: false
            }
        );
        assert_eq!(info.top_of_ram(), 0xa_0000);
    }

    #[test]
    fn multiboot2_errors() {
        let mut m = multiboot2();
        m.put32(0x4000 + 12, 4);
        assert_eq!(
            BootInfo::read(&m, MULTIBOOT2_MAGIC, 0x4000).unwrap_err(),
            BootInfoError::Malformed("multiboot2 tag size")
        );
        let mut m = multiboot2();
        m.put32(0x4000 + 32, 99); // memory map tag becomes unknown
        assert_eq!(
            BootInfo::read(&m, MULTIBOOT2_MAGIC, 0x4000).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
        let mut m = multiboot2();
        m.put32(0x4000 + 20, 0x10);
        assert!(matches!(
            BootInfo::read(&m, MULTIBOOT2_MAGIC, 0x4000),
            Err(BootInfoError::Malformed(_))
        ));
        let mut m = multiboot2();
        m.put32(0x4000, 0x7fff_ffff);
        assert!(BootInfo::read(&m, MULTIBOOT2_MAGIC, 0x4000).is_err());
    }

    /// The PVH sample with `line` (NUL-terminated) as its command line.
    fn pvh_with_line(line: &[u8]) -> Fake {
        let mut m = pvh();
        m.put(0x3800, line);
        m.put(0x3800 + line.len() as u64, &[0]);
        m
    }

    #[test]
    fn long_command_lines_are_truncated_and_reported() {
        let exact = [b'a'; COMMAND_LINE_MAX];
        let info = BootInfo::read(&pvh_with_line(&exact), 0, 0x1000).unwrap();
        assert_eq!(info.command_line().len(), COMMAND_LINE_MAX);
        assert_eq!(info.command_line_truncated_from, None);

        let mut long = vec![b'x'; 300];
        long[..12].copy_from_slice(b"selftest=one");
        let info = BootInfo::read(&pvh_with_line(&long), 0, 0x1000).unwrap();
        assert_eq!(info.command_line().len(), COMMAND_LINE_MAX);
        assert!(info.command_line().starts_with("selftest=onexx"));
        assert_eq!(info.command_line_truncated_from, Some(300));
        assert_eq!(info.option("selftest"), Some(&info.command_line()[9..]));

        let info = BootInfo::read(&pvh(), 0, 0x1000).unwrap();
        assert_eq!(info.command_line_truncated_from, None);
    }

    #[test]
    fn a_character_cut_at_the_limit_keeps_the_prefix() {
        // 255 ASCII bytes, then 'é' (2 bytes) across the 256-byte limit.
        let mut line = vec![b'a'; COMMAND_LINE_MAX - 1];
        line.extend_from_slice("é quiet".as_bytes());
        let info = BootInfo::read(&pvh_with_line(&line), 0, 0x1000).unwrap();
        assert_eq!(info.command_line(), "a".repeat(COMMAND_LINE_MAX - 1));
        assert_eq!(info.command_line_truncated_from, Some(line.len()));

        // A line that fits but is not UTF-8 from byte 9 on keeps 9 bytes.
        let info = BootInfo::read(&pvh_with_line(b"selftest=\xffx y=1"), 0, 0x1000).unwrap();
        assert_eq!(info.command_line(), "selftest=");
        assert_eq!(info.command_line_truncated_from, Some(15));
        let info = BootInfo::read(&pvh_with_line("mode=ünï".as_bytes()), 0, 0x1000).unwrap();
        assert_eq!(info.command_line(), "mode=ünï");
        assert_eq!(info.command_line_truncated_from, None);
    }

    #[test]
    fn a_cut_says_how_much_of_how_much_and_why() {
        let cut = |line: &[u8]| BootInfo::read(&pvh_with_line(line), 0, 0x1000).unwrap();
        assert_eq!(cut(b"selftest=core-fault").command_line_cut(), None);

        let long = cut(&[b'x'; 300]).command_line_cut().unwrap();
        assert_eq!(
            long,
            CommandLineCut {
                kept: 256,
                length: 300,
                at_least: false,
                invalid_byte: None
            }
        );
        assert_eq!(
            long.to_string(),
            "boot command line truncated to 256 of 300 bytes: the core keeps at most 256 bytes"
        );

        // Not too long: stopped by a byte that is not UTF-8, in the middle.
        let invalid = cut(b"ab\xffcdefghijklm").command_line_cut().unwrap();
        assert_eq!(invalid.invalid_byte, Some((2, 0xff)));
        assert_eq!(
            invalid.to_string(),
            "boot command line truncated to 2 of 14 bytes: it stopped at an invalid UTF-8 \
             byte (0xff at offset 2); the core keeps only the valid text before it"
        );

        // A character cut by the limit is the limit's doing, not a bad byte.
        let mut line = vec![b'a'; COMMAND_LINE_MAX - 1];
        line.extend_from_slice("é quiet".as_bytes());
        assert_eq!(
            cut(&line).command_line_cut().unwrap().to_string(),
            "boot command line truncated to 255 of 263 bytes: the core keeps at most 256 \
             bytes, and a character crossed that limit"
        );
    }

    /// QEMU 7.2's PVH loader as it lays out memory (pc-bios/optionrom
    /// pvh.bin, seen at 0x11c0 and 0x21e0): a 4 KiB command-line buffer, the
    /// 32-byte module entry, then the start info. The magic is written
    /// before the line is copied; the line pointer and module entry after.
    fn qemu_pvh_with_line(length: usize) -> (Fake, u64) {
        let buffer = 0x1000u64;
        let module = buffer + QEMU_PVH_LINE_BUFFER;
        let start_info = module + 32;
        let mut m = pvh();
        let relocated: Vec<u8> = m.0[0x1000..0x1038].to_vec();
        m.put(start_info, &relocated);
        let text: Vec<u8> = (0..length).map(|i| b'A' + (i % 26) as u8).collect();
        m.put(buffer, &text);
        m.put(buffer + length as u64, &[0]);
        m.put64(start_info + 24, buffer);
        m.put64(start_info + 16, module);
        m.put64(module, 0x80_0000);
        m.put64(module + 8, 0x1234);
        m.put64(module + 16, 0);
        (m, start_info)
    }

    #[test]
    fn a_pvh_line_over_4_kib_is_named_not_an_unknown_protocol() {
        let (m, start_info) = qemu_pvh_with_line(4095);
        let info = BootInfo::read(&m, 0, start_info as u32).unwrap();
        assert_eq!(info.command_line().len(), COMMAND_LINE_MAX);
        assert_eq!(info.command_line_truncated_from, Some(4095));
        assert_eq!(info.modules().len(), 1);

        assert!(
            info.command_line_cut()
                .unwrap()
                .to_string()
                .starts_with("boot command line truncated to 256 of 4095 bytes: ")
        );

        // Longer than the buffer but not enough to reach the magic: QEMU's
        // module entry, written after the line, ends it at 4096 bytes, so
        // the length is known only as a lower bound.
        let (m, start_info) = qemu_pvh_with_line(4097);
        let info = BootInfo::read(&m, 0, start_info as u32).unwrap();
        let cut = info.command_line_cut().unwrap();
        assert_eq!((cut.length, cut.at_least), (4096, true));
        assert_eq!(
            cut.to_string(),
            "boot command line truncated to 256 of at least 4096 bytes: the core keeps at most 256 bytes"
        );

        let (m, start_info) = qemu_pvh_with_line(5000);
        let error = BootInfo::read(&m, 0, start_info as u32).unwrap_err();
        assert_eq!(
            error,
            BootInfoError::CommandLineOverwroteStartInfo {
                start_info,
                command_line: 0x1000
            }
        );
        let text = format!("{error}");
        assert!(
            text.contains(
                "longer than QEMU's 4 KiB PVH buffer and overwrote the start info at 0x2020"
            ),
            "{text}"
        );
        assert!(text.contains("pass at most 256 bytes"), "{text}");

        // Garbage with no line running into it stays an unknown protocol.
        let mut m = pvh();
        m.put32(0x1000, 0x5857_5655);
        assert_eq!(
            BootInfo::read(&m, 0, 0x1000).unwrap_err(),
            BootInfoError::UnknownProtocol { eax: 0 }
        );
        // Nor is a line pointer above the start info, or a line below it
        // that ends within 4 KiB.
        m.put64(0x1018, 0x1100);
        m.put(0x1100, &[b'A'; 64]);
        assert_eq!(
            BootInfo::read(&m, 0, 0x1000).unwrap_err(),
            BootInfoError::UnknownProtocol { eax: 0 }
        );
        let (mut m, start_info) = qemu_pvh_with_line(4095);
        m.put32(start_info, 0x5857_5655);
        assert_eq!(
            BootInfo::read(&m, 0, start_info as u32).unwrap_err(),
            BootInfoError::UnknownProtocol { eax: 0 }
        );
        let (mut m, start_info) = qemu_pvh_with_line(5000);
        m.put64(start_info + 24, 0x10);
        assert_eq!(
            BootInfo::read(&m, 0, start_info as u32).unwrap_err(),
            BootInfoError::UnknownProtocol { eax: 0 }
        );
    }

    #[test]
    fn multiboot2_command_lines_are_bounded_by_their_tag() {
        let mut m = multiboot2();
        let base = 0x4000u64;
        let original = m.0[base as usize + 8..base as usize + 0x100].to_vec();
        let line: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
        let tag_size = 8 + line.len() as u64 + 1;
        m.put32(base + 8, 1);
        m.put32(base + 12, tag_size as u32);
        m.put(base + 16, &line);
        m.put(base + 16 + line.len() as u64, &[0]);
        let rest = base + 8 + tag_size.div_ceil(8) * 8;
        m.put(rest, &original);
        let total = m.0[base as usize..base as usize + 4].to_vec();
        let total = u32::from_le_bytes(total.try_into().unwrap()) + (rest - base - 8) as u32;
        m.put32(base, total);
        let info = BootInfo::read(&m, MULTIBOOT2_MAGIC, base as u32).unwrap();
        assert_eq!(info.command_line().as_bytes(), &line[..COMMAND_LINE_MAX]);
        assert_eq!(info.command_line_truncated_from, Some(5000));
        assert_eq!(info.modules().len(), 1);

        // Without a NUL the line ends with its tag.
        m.put(base + 16 + line.len() as u64, b"z");
        let info = BootInfo::read(&m, MULTIBOOT2_MAGIC, base as u32).unwrap();
        assert_eq!(info.command_line_truncated_from, Some(5001));
    }

    #[test]
    fn never_panics_on_noise() {
        let base = multiboot2();
        for at in 0x4000..0x4000 + 120u64 {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut m = Fake(base.0.clone());
                m.0[at as usize] = value;
                let _ = BootInfo::read(&m, MULTIBOOT2_MAGIC, 0x4000);
            }
        }
    }
}
