//! QEMU's firmware configuration device over its traditional I/O
//! interface (QEMU's `docs/specs/fw_cfg.rst`): a 16-bit write to port
//! 0x510 selects an item and rewinds it, and each byte read from port 0x511
//! returns the item's next byte (a byte read of 0x510 does the same, as in
//! QEMU), zero past its end or for an item that does not exist. Byte writes
//! are ignored, as QEMU ignores them since 2.4.
//!
//! Items: the signature `"QEMU"`, the interface id (bit 0, traditional
//! interface, only: there is **no DMA interface**, so bit 1 is clear and
//! port 0x514 is not decoded — the guest loader and Linux's `qemu_fw_cfg`
//! then read byte by byte), `FW_CFG_RAM_SIZE`, `FW_CFG_NB_CPUS`,
//! `FW_CFG_MAX_CPUS`, and the file directory, whose first file is
//! [`E820_FILE`] (QEMU's `etc/e820`: 20-byte little-endian entries of base,
//! length and type 1 = RAM, computed from [`GuestRam`]) followed by the
//! caller's files in the order given. The directory's numbers are
//! big-endian, as the specification says. Nothing here is writable by the
//! guest except the selector.

use crate::GuestRam;

pub const SELECTOR_PORT: u16 = 0x510;
pub const DATA_PORT: u16 = 0x511;

pub const SIGNATURE: u16 = 0x00;
pub const ID: u16 = 0x01;
pub const RAM_SIZE: u16 = 0x03;
pub const NB_CPUS: u16 = 0x05;
pub const MAX_CPUS: u16 = 0x0f;
pub const FILE_DIR: u16 = 0x19;
/// The selector of the first file.
pub const FILE_FIRST: u16 = 0x20;

/// The interface id: traditional I/O only, no DMA.
const ID_TRADITIONAL: u32 = 1;
/// Selector bits that are not the item number: write channel and
/// architecture-local items (none here).
const KEY_WRITE: u16 = 0x4000;
const KEY_ARCH_LOCAL: u16 = 0x8000;

/// A directory entry's name field, NUL included.
pub const NAME_MAX: usize = 56;
const DIRECTORY_ENTRY: usize = 64;
/// The built-in memory map file.
pub const E820_FILE: &str = "etc/e820";
const E820_ENTRY: usize = 20;
const E820_RAM: u32 = 1;
const FOUR_GIB: u64 = 1 << 32;

/// A named blob the guest can read.
#[derive(Clone, Copy, Debug)]
pub struct File<'a> {
    /// Path-like name, at most [`NAME_MAX`] - 1 bytes.
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Why the device could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A file name is empty, too long or contains NUL.
    Name,
    /// More files than selectors.
    TooManyFiles,
}

/// The fw_cfg device: the selected item and how far it was read.
pub struct FwCfg<'a> {
    selector: u16,
    offset: u64,
    cpus: u16,
    ram: GuestRam,
    files: &'a [File<'a>],
}

impl<'a> FwCfg<'a> {
    pub fn new(cpus: u16, ram: GuestRam, files: &'a [File<'a>]) -> Result<Self, Error> {
        if files.iter().any(|file| {
            file.name.is_empty() || file.name.len() >= NAME_MAX || file.name.contains('\0')
        }) {
            return Err(Error::Name);
        }
        if files.len() >= usize::from(KEY_WRITE - FILE_FIRST - 1) {
            return Err(Error::TooManyFiles);
        }
        Ok(Self {
            selector: SIGNATURE,
            offset: 0,
            cpus,
            ram,
            files,
        })
    }

    /// Whether `port` belongs to the device.
    pub fn decodes(port: u16) -> bool {
        port == SELECTOR_PORT || port == DATA_PORT
    }

    /// An OUT of `size` bytes (1, 2 or 4) to `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == SELECTOR_PORT && size == 2 {
            self.selector = value as u16;
            self.offset = 0;
        }
    }

    /// An IN of `size` bytes from `port`; all-ones for accesses the device
    /// does not answer.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        if !Self::decodes(port) || size != 1 {
            return u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4)));
        }
        let byte = self.item_byte(self.offset);
        self.offset = self.offset.saturating_add(1);
        u32::from(byte)
    }

    /// The byte at `offset` of the selected item.
    fn item_byte(&self, offset: u64) -> u8 {
        if self.selector & KEY_ARCH_LOCAL != 0 {
            return 0;
        }
        let key = self.selector & !KEY_WRITE;
        let at = |bytes: &[u8]| bytes.get(offset as usize).copied().unwrap_or(0);
        match key {
            SIGNATURE => at(b"QEMU"),
            ID => at(&ID_TRADITIONAL.to_le_bytes()),
            RAM_SIZE => at(&(self.ram.below_4g + self.ram.above_4g).to_le_bytes()),
            NB_CPUS | MAX_CPUS => at(&self.cpus.to_le_bytes()),
            FILE_DIR => self.directory_byte(offset),
            FILE_FIRST => self.e820_byte(offset),
            _ => match self
                .files
                .get(usize::from(key.wrapping_sub(FILE_FIRST + 1)))
            {
                Some(file) if key > FILE_FIRST => at(file.data),
                _ => 0,
            },
        }
    }

    /// The number of files, the built-in ones included.
    fn file_count(&self) -> usize {
        self.files.len() + 1
    }

    /// File `index`'s name and size.
    fn file_entry(&self, index: usize) -> Option<(&str, u64)> {
        match index.checked_sub(1) {
            None => Some((E820_FILE, self.e820_length() as u64)),
            Some(index) => self
                .files
                .get(index)
                .map(|file| (file.name, file.data.len() as u64)),
        }
    }

    fn directory_byte(&self, offset: u64) -> u8 {
        let offset = offset as usize;
        if offset < 4 {
            return (self.file_count() as u32).to_be_bytes()[offset];
        }
        let (index, field) = (
            (offset - 4) / DIRECTORY_ENTRY,
            (offset - 4) % DIRECTORY_ENTRY,
        );
        let Some((name, size)) = self.file_entry(index) else {
            return 0;
        };
        let select = FILE_FIRST + index as u16;
        match field {
            0..4 => (size.min(u64::from(u32::MAX)) as u32).to_be_bytes()[field],
            4..6 => select.to_be_bytes()[field - 4],
            6..8 => 0,
            _ => name.as_bytes().get(field - 8).copied().unwrap_or(0),
        }
    }

    /// RAM below 4 GiB from 0, and above 4 GiB from 4 GiB, if any.
    fn e820_entries(&self) -> [(u64, u64); 2] {
        [(0, self.ram.below_4g), (FOUR_GIB, self.ram.above_4g)]
    }

    fn e820_length(&self) -> usize {
        self.e820_entries()
            .iter()
            .filter(|(_, length)| *length > 0)
            .count()
            * E820_ENTRY
    }

    fn e820_byte(&self, offset: u64) -> u8 {
        let offset = offset as usize;
        let entry = self
            .e820_entries()
            .into_iter()
            .filter(|(_, length)| *length > 0)
            .nth(offset / E820_ENTRY);
        let Some((base, length)) = entry else {
            return 0;
        };
        let mut bytes = [0u8; E820_ENTRY];
        bytes[..8].copy_from_slice(&base.to_le_bytes());
        bytes[8..16].copy_from_slice(&length.to_le_bytes());
        bytes[16..].copy_from_slice(&E820_RAM.to_le_bytes());
        bytes[offset % E820_ENTRY]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RAM: GuestRam = GuestRam {
        below_4g: 256 << 20,
        above_4g: 1 << 30,
    };

    fn item(device: &mut FwCfg, key: u16, length: usize) -> Vec<u8> {
        device.write(SELECTOR_PORT, 2, u32::from(key));
        (0..length)
            .map(|_| device.read(DATA_PORT, 1) as u8)
            .collect()
    }

    #[test]
    fn legacy_items_read_as_qemu_writes_them() {
        let mut device = FwCfg::new(2, RAM, &[]).unwrap();
        assert_eq!(item(&mut device, SIGNATURE, 4), b"QEMU");
        assert_eq!(item(&mut device, ID, 4), [1, 0, 0, 0], "no DMA");
        assert_eq!(
            item(&mut device, RAM_SIZE, 8),
            ((256u64 << 20) + (1 << 30)).to_le_bytes()
        );
        assert_eq!(item(&mut device, NB_CPUS, 2), [2, 0]);
        assert_eq!(item(&mut device, MAX_CPUS, 2), [2, 0]);
        assert_eq!(item(&mut device, 0x7777, 4), [0; 4], "no such item");
        assert_eq!(item(&mut device, KEY_ARCH_LOCAL, 4), [0; 4]);
        assert_eq!(
            item(&mut device, SIGNATURE, 6),
            b"QEMU\0\0",
            "zero past the end"
        );
    }

    #[test]
    fn selecting_rewinds_and_only_word_writes_select() {
        let mut device = FwCfg::new(1, RAM, &[]).unwrap();
        assert_eq!(item(&mut device, SIGNATURE, 2), b"QE");
        assert_eq!(device.read(SELECTOR_PORT, 1), u32::from(b'M'));
        device.write(SELECTOR_PORT, 1, u32::from(ID));
        device.write(DATA_PORT, 1, 0);
        assert_eq!(device.read(DATA_PORT, 1), u32::from(b'U'));
        assert_eq!(device.read(DATA_PORT, 2), 0xffff);
        assert_eq!(device.read(DATA_PORT, 4), u32::MAX);
        assert_eq!(item(&mut device, SIGNATURE, 1), b"Q");
    }

    #[test]
    fn file_directory_lists_e820_and_the_callers_files() {
        let files = [File {
            name: "etc/microvisor/vm-name",
            data: b"linux",
        }];
        let mut device = FwCfg::new(1, RAM, &files).unwrap();
        let directory = item(&mut device, FILE_DIR, 4 + 2 * 64 + 8);
        assert_eq!(directory[..4], [0, 0, 0, 2], "big-endian count");
        let entry = |index: usize| &directory[4 + index * 64..4 + (index + 1) * 64];
        assert_eq!(entry(0)[..8], [0, 0, 0, 40, 0, 0x20, 0, 0]);
        assert_eq!(&entry(0)[8..16], b"etc/e820");
        assert!(entry(0)[16..].iter().all(|&b| b == 0));
        assert_eq!(entry(1)[..8], [0, 0, 0, 5, 0, 0x21, 0, 0]);
        assert_eq!(&entry(1)[8..31], b"etc/microvisor/vm-name\0");
        assert_eq!(directory[4 + 128..], [0; 8]);

        assert_eq!(item(&mut device, 0x21, 5), b"linux");
        let e820 = item(&mut device, 0x20, 40);
        let field = |at: usize| u64::from_le_bytes(e820[at..at + 8].try_into().unwrap());
        assert_eq!((field(0), field(8)), (0, 256 << 20));
        assert_eq!(e820[16..20], [1, 0, 0, 0]);
        assert_eq!((field(20), field(28)), (1 << 32, 1 << 30));
        assert_eq!(item(&mut device, 0x22, 2), [0, 0], "past the last file");
    }

    #[test]
    fn e820_leaves_out_empty_ranges_and_names_are_checked() {
        let low = GuestRam {
            below_4g: 64 << 20,
            above_4g: 0,
        };
        let mut device = FwCfg::new(1, low, &[]).unwrap();
        assert_eq!(item(&mut device, FILE_DIR, 8)[4..], [0, 0, 0, 20]);
        let long = "x".repeat(NAME_MAX);
        for name in ["", long.as_str(), "a\0b"] {
            let files = [File { name, data: &[] }];
            assert_eq!(FwCfg::new(1, low, &files).err(), Some(Error::Name));
        }
    }

    proptest! {
        #[test]
        fn hostile_port_sequences_never_panic(
            accesses in proptest::collection::vec(
                (any::<bool>(), 0x50fu16..0x513, 1u8..5, any::<u32>()), 0..300),
        ) {
            let files = [File { name: "etc/x", data: b"abc" }];
            let mut device = FwCfg::new(1, RAM, &files).unwrap();
            for (is_write, port, size, value) in accesses {
                if is_write {
                    device.write(port, size, value);
                } else {
                    let value = device.read(port, size);
                    prop_assert!(size >= 4 || value >> (8 * size) == 0);
                }
            }
        }
    }
}
