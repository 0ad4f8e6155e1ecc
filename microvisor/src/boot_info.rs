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
    command_line: [u8; MAX_COMMAND_LINE],
    command_line_len: usize,
}

/// The longest command line kept.
pub const MAX_COMMAND_LINE: usize = 256;

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
            command_line: [0; MAX_COMMAND_LINE],
            command_line_len: 0,
        }
    }

    /// Reads a NUL-terminated command line at `address` (truncated at
    /// [`MAX_COMMAND_LINE`] bytes; an unreadable one is left empty).
    fn read_command_line(&mut self, memory: &impl PhysicalMemory, address: u64) {
        if address == 0 {
            return;
        }
        for index in 0..MAX_COMMAND_LINE {
            let mut byte = [0];
            if !memory.read(address + index as u64, &mut byte) || byte[0] == 0 {
                break;
            }
            self.command_line[index] = byte[0];
            self.command_line_len = index + 1;
        }
    }

    /// The boot command line ("" if none or not UTF-8).
    pub fn command_line(&self) -> &str {
        core::str::from_utf8(&self.command_line[..self.command_line_len]).unwrap_or("")
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
        Err(BootInfoError::UnknownProtocol { eax })
    }

    fn read_pvh(memory: &impl PhysicalMemory, address: u64) -> Result<Self, BootInfoError> {
        let mut info = Self::empty(Protocol::Pvh);
        let version = read_u32(memory, address + 4)?;
        let module_count = read_u32(memory, address + 12)?;
        let module_list = read_u64(memory, address + 16)?;
        info.read_command_line(memory, read_u64(memory, address + 24)?);
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
                1 => info.read_command_line(memory, tag + 8),
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
