//! Deliberate ELF corruptions for the scenarios that check the core refuses
//! malformed components (`corrupt = "..."` in a `[[component]]` entry of a
//! system or scenario file; capdl checks the name against [`Corruption::names`]).
//!
//! Each [`Corruption`] edits a well-formed ELF64 little-endian executable in
//! place, by hand on the documented header offsets, so the result is exactly
//! the defect named and nothing else. Applying one to a file that lacks what
//! it needs (say, no executable segment) is an error, never a silent no-op.
//! Called by the image packer ([`crate::pack`]) only.

use anyhow::{Result, bail, ensure};

// ELF64 header fields.
const E_ENTRY: usize = 0x18;
const E_PHOFF: usize = 0x20;
const E_PHENTSIZE: usize = 0x36;
const E_PHNUM: usize = 0x38;
const HEADER_SIZE: usize = 0x40;
// Program header fields, relative to the header's start.
const P_TYPE: usize = 0;
const P_FLAGS: usize = 4;
const P_OFFSET: usize = 8;
const P_VADDR: usize = 0x10;
const P_PADDR: usize = 0x18;
const P_MEMSZ: usize = 0x28;
const PROGRAM_HEADER_SIZE: usize = 0x38;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// A defect to put into a component's ELF before packing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Bytes 1..4 become `BAD`: not an ELF file at all.
    BadMagic,
    /// Only the first 200 bytes remain: the program headers are cut off.
    Truncated,
    /// The first load segment's file offset moves 1 MiB past its place,
    /// outside the file.
    SegmentOutsideFile,
    /// The executable load segment also becomes writable.
    WxSegment,
    /// The entry point moves to 0x1000_0000, outside every segment.
    EntryOutsideCode,
    /// The first load segment is placed at 0xffff_ffff_8000_0000, in the
    /// core's half of the address space.
    KernelAddress,
    /// The second load segment is placed at the first one's address (and
    /// file offset, so that only the overlap is wrong).
    OverlappingSegments,
    /// The first load segment's memory size becomes 2^46 bytes.
    HugeSegment,
}

impl Corruption {
    /// Every corruption, in documentation order.
    pub const ALL: [Self; 8] = [
        Self::BadMagic,
        Self::Truncated,
        Self::SegmentOutsideFile,
        Self::WxSegment,
        Self::EntryOutsideCode,
        Self::KernelAddress,
        Self::OverlappingSegments,
        Self::HugeSegment,
    ];

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadMagic => "bad-magic",
            Self::Truncated => "truncated",
            Self::SegmentOutsideFile => "segment-outside-file",
            Self::WxSegment => "wx-segment",
            Self::EntryOutsideCode => "entry-outside-code",
            Self::KernelAddress => "kernel-address",
            Self::OverlappingSegments => "overlapping-segments",
            Self::HugeSegment => "huge-segment",
        }
    }

    /// The corruption a configuration file names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|corruption| corruption.name() == name)
    }

    /// The names of all corruptions: what `corrupt` may say (capdl checks
    /// it, [`capdl::Options::corruptions`]).
    pub fn names() -> Vec<String> {
        Self::ALL
            .iter()
            .map(|corruption| corruption.name().to_string())
            .collect()
    }

    /// Applies the corruption to ELF bytes.
    pub fn apply(self, elf: &mut Vec<u8>) -> Result<()> {
        match self {
            Self::BadMagic => {
                ensure!(elf.len() >= 4, "the file is shorter than an ELF magic");
                elf[1..4].copy_from_slice(b"BAD");
            }
            Self::Truncated => {
                ensure!(elf.len() > 200, "the file is already 200 bytes or shorter");
                elf.truncate(200);
            }
            Self::SegmentOutsideFile => {
                let first = load_segments(elf)?[0];
                let offset = read_u64(elf, first + P_OFFSET);
                write_u64(elf, first + P_OFFSET, offset + 0x10_0000);
            }
            Self::WxSegment => {
                let executable = load_segments(elf)?
                    .into_iter()
                    .find(|&header| read_u32(elf, header + P_FLAGS) & PF_X != 0);
                let Some(header) = executable else {
                    bail!("the ELF has no executable load segment");
                };
                let flags = read_u32(elf, header + P_FLAGS);
                write_u32(elf, header + P_FLAGS, flags | PF_W);
            }
            Self::EntryOutsideCode => {
                check_header(elf)?;
                write_u64(elf, E_ENTRY, 0x1000_0000);
            }
            Self::KernelAddress => {
                let first = load_segments(elf)?[0];
                write_u64(elf, first + P_VADDR, 0xffff_ffff_8000_0000);
                write_u64(elf, first + P_PADDR, 0xffff_ffff_8000_0000);
            }
            Self::OverlappingSegments => {
                let segments = load_segments(elf)?;
                ensure!(segments.len() >= 2, "the ELF has only one load segment");
                let (first, second) = (segments[0], segments[1]);
                for field in [P_OFFSET, P_VADDR, P_PADDR] {
                    let value = read_u64(elf, first + field);
                    write_u64(elf, second + field, value);
                }
            }
            Self::HugeSegment => {
                let first = load_segments(elf)?[0];
                write_u64(elf, first + P_MEMSZ, 1 << 46);
            }
        }
        Ok(())
    }
}

/// Checks the ELF identification: 64-bit, little-endian, a full header.
fn check_header(elf: &[u8]) -> Result<()> {
    ensure!(
        elf.len() >= HEADER_SIZE && elf[..4] == *b"\x7fELF",
        "not an ELF file"
    );
    ensure!(
        elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    Ok(())
}

/// The byte offsets of the PT_LOAD program headers, in table order; at
/// least one.
fn load_segments(elf: &[u8]) -> Result<Vec<usize>> {
    check_header(elf)?;
    let table = usize::try_from(read_u64(elf, E_PHOFF))?;
    let entry_size = usize::from(read_u16(elf, E_PHENTSIZE));
    let count = usize::from(read_u16(elf, E_PHNUM));
    ensure!(
        entry_size >= PROGRAM_HEADER_SIZE,
        "program headers are {entry_size} bytes, expected {PROGRAM_HEADER_SIZE}"
    );
    let end = table
        .checked_add(entry_size * count)
        .filter(|&end| end <= elf.len());
    ensure!(
        end.is_some(),
        "the program header table lies outside the file"
    );
    let loads: Vec<usize> = (0..count)
        .map(|index| table + index * entry_size)
        .filter(|&header| read_u32(elf, header + P_TYPE) == PT_LOAD)
        .collect();
    ensure!(!loads.is_empty(), "the ELF has no load segment");
    Ok(loads)
}

fn read_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

fn write_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn write_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: usize = HEADER_SIZE + PROGRAM_HEADER_SIZE;

    /// A minimal ELF64 executable: header, three program headers (a note,
    /// R+X text at 0x20_0000, RW data at 0x20_1000), 512 bytes of padding.
    fn sample() -> Vec<u8> {
        let mut elf = vec![0u8; 1024];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        write_u64(&mut elf, E_ENTRY, 0x20_0010);
        write_u64(&mut elf, E_PHOFF, HEADER_SIZE as u64);
        elf[E_PHENTSIZE..E_PHENTSIZE + 2]
            .copy_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes());
        elf[E_PHNUM..E_PHNUM + 2].copy_from_slice(&3u16.to_le_bytes());
        let segments = [
            (4u32, 4u32, 0u64, 0u64, 0u64),
            (PT_LOAD, PF_X | 4, 0x200, 0x20_0200, 0x100),
            (PT_LOAD, PF_W | 4, 0x300, 0x20_1300, 0x100),
        ];
        for (index, (kind, flags, offset, address, size)) in segments.into_iter().enumerate() {
            let header = HEADER_SIZE + index * PROGRAM_HEADER_SIZE;
            write_u32(&mut elf, header + P_TYPE, kind);
            write_u32(&mut elf, header + P_FLAGS, flags);
            write_u64(&mut elf, header + P_OFFSET, offset);
            write_u64(&mut elf, header + P_VADDR, address);
            write_u64(&mut elf, header + P_PADDR, address);
            write_u64(&mut elf, header + 0x20, size);
            write_u64(&mut elf, header + P_MEMSZ, size);
            write_u64(&mut elf, header + 0x30, 0x1000);
        }
        elf
    }

    fn corrupted(corruption: Corruption) -> Vec<u8> {
        let mut elf = sample();
        corruption.apply(&mut elf).unwrap();
        elf
    }

    /// The byte positions where two buffers differ.
    fn changes(corruption: Corruption) -> Vec<usize> {
        let (before, after) = (sample(), corrupted(corruption));
        (0..before.len().min(after.len()))
            .filter(|&index| before[index] != after[index])
            .collect()
    }

    #[test]
    fn magic_and_truncation() {
        assert_eq!(&corrupted(Corruption::BadMagic)[..4], b"\x7fBAD");
        assert_eq!(corrupted(Corruption::Truncated).len(), 200);
    }

    #[test]
    fn segment_edits_touch_only_their_field() {
        let data = TEXT + PROGRAM_HEADER_SIZE;
        let elf = corrupted(Corruption::SegmentOutsideFile);
        assert_eq!(read_u64(&elf, TEXT + P_OFFSET), 0x10_0200);
        assert!(
            changes(Corruption::SegmentOutsideFile)
                .iter()
                .all(|&i| (TEXT + P_OFFSET..TEXT + P_OFFSET + 8).contains(&i))
        );

        let elf = corrupted(Corruption::WxSegment);
        assert_eq!(read_u32(&elf, TEXT + P_FLAGS), PF_X | PF_W | 4);
        assert_eq!(changes(Corruption::WxSegment), [TEXT + P_FLAGS]);

        let elf = corrupted(Corruption::EntryOutsideCode);
        assert_eq!(read_u64(&elf, E_ENTRY), 0x1000_0000);

        let elf = corrupted(Corruption::KernelAddress);
        assert_eq!(read_u64(&elf, TEXT + P_VADDR), 0xffff_ffff_8000_0000);
        assert_eq!(read_u64(&elf, TEXT + P_PADDR), 0xffff_ffff_8000_0000);

        let elf = corrupted(Corruption::OverlappingSegments);
        assert_eq!(read_u64(&elf, data + P_VADDR), 0x20_0200);
        assert_eq!(read_u64(&elf, data + P_PADDR), 0x20_0200);
        assert_eq!(read_u64(&elf, data + P_OFFSET), 0x200);
        assert_eq!(read_u32(&elf, data + P_FLAGS), PF_W | 4);

        let elf = corrupted(Corruption::HugeSegment);
        assert_eq!(read_u64(&elf, TEXT + P_MEMSZ), 1 << 46);
        assert_eq!(read_u64(&elf, data + P_MEMSZ), 0x100);
    }

    #[test]
    fn refuses_files_without_what_it_needs() {
        let mut short = vec![0x7f, b'E'];
        assert!(Corruption::BadMagic.apply(&mut short).is_err());
        let mut not_elf = vec![0u8; 300];
        for corruption in Corruption::ALL {
            if matches!(corruption, Corruption::BadMagic | Corruption::Truncated) {
                continue;
            }
            assert!(
                corruption.apply(&mut not_elf).is_err(),
                "{}",
                corruption.name()
            );
        }
        let mut no_code = sample();
        write_u32(&mut no_code, TEXT + P_FLAGS, 4);
        assert!(Corruption::WxSegment.apply(&mut no_code).is_err());
        let mut one_load = sample();
        write_u32(&mut one_load, TEXT + PROGRAM_HEADER_SIZE + P_TYPE, 6);
        assert!(
            Corruption::OverlappingSegments
                .apply(&mut one_load)
                .is_err()
        );
        let mut bad_table = sample();
        write_u64(&mut bad_table, E_PHOFF, u64::MAX - 8);
        assert!(Corruption::HugeSegment.apply(&mut bad_table).is_err());
    }

    #[test]
    fn names_round_trip() {
        for corruption in Corruption::ALL {
            assert_eq!(Corruption::from_name(corruption.name()), Some(corruption));
        }
        assert_eq!(Corruption::names().len(), Corruption::ALL.len());
        assert_eq!(Corruption::from_name("bad_magic"), None);
    }
}
