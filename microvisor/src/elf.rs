//! ELF64 load planning for ring-3 components.
//!
//! [`plan`] reads an ELF file that came out of the boot image — untrusted
//! bytes — and produces a [`LoadPlan`]: the entry point and up to
//! [`MAX_SEGMENTS`] loadable segments with their rights. It refuses, with an
//! [`ElfError`] naming the problem, anything the loader could not map safely:
//! a wrong class, machine or type, program headers or segment contents
//! outside the file, a segment outside the user half or the configured size
//! limit, a segment that is writable and executable, two segments sharing a
//! page, an entry point outside executable code. Nothing here panics on any
//! input; the core then copies bytes exactly as the plan says.

use crate::address::{PAGE_SIZE, align_down, align_up};

/// The most loadable segments a component may have.
pub const MAX_SEGMENTS: usize = 8;

const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

/// Why an ELF file cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the ELF header.
    TooShort,
    /// Not an ELF file.
    BadMagic,
    /// Not ELFCLASS64.
    NotElf64,
    /// Not little-endian.
    NotLittleEndian,
    /// Not ELF version 1.
    BadVersion,
    /// Not an executable (ET_EXEC); the type found.
    NotExecutable(u16),
    /// Not for x86-64; the machine found.
    WrongMachine(u16),
    /// The program header table is malformed or outside the file.
    BadProgramHeaders,
    /// More loadable segments than [`MAX_SEGMENTS`].
    TooManySegments,
    /// No loadable segment.
    NoSegments,
    /// Segment `index`'s file contents lie outside the file.
    SegmentOutsideFile { index: usize },
    /// Segment `index` has more file bytes than memory bytes.
    FileLargerThanMemory { index: usize },
    /// Segment `index` is not congruent to its file offset modulo the page size.
    Misaligned { index: usize },
    /// Segment `index` lies (partly) outside the user address range.
    OutsideUserSpace { index: usize, address: u64 },
    /// The segments together exceed the size limit.
    TooLarge { bytes: u64, limit: u64 },
    /// Segment `index` is writable and executable.
    WritableAndExecutable { index: usize },
    /// Segments `first` and `second` share a page.
    Overlap { first: usize, second: usize },
    /// The entry point is not inside an executable segment.
    EntryNotInCode { entry: u64 },
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooShort => write!(f, "file too short for an ELF header"),
            Self::BadMagic => write!(f, "not an ELF file (bad magic)"),
            Self::NotElf64 => write!(f, "not a 64-bit ELF file"),
            Self::NotLittleEndian => write!(f, "not a little-endian ELF file"),
            Self::BadVersion => write!(f, "unknown ELF version"),
            Self::NotExecutable(t) => write!(f, "ELF type {t} is not an executable"),
            Self::WrongMachine(m) => write!(f, "ELF machine {m} is not x86-64"),
            Self::BadProgramHeaders => {
                write!(f, "program header table malformed or outside the file")
            }
            Self::TooManySegments => write!(f, "more than {MAX_SEGMENTS} loadable segments"),
            Self::NoSegments => write!(f, "no loadable segment"),
            Self::SegmentOutsideFile { index } => {
                write!(f, "segment {index}: contents lie outside the file")
            }
            Self::FileLargerThanMemory { index } => {
                write!(f, "segment {index}: file size exceeds memory size")
            }
            Self::Misaligned { index } => {
                write!(
                    f,
                    "segment {index}: address and file offset differ modulo the page size"
                )
            }
            Self::OutsideUserSpace { index, address } => {
                write!(
                    f,
                    "segment {index}: address {address:#x} outside user space"
                )
            }
            Self::TooLarge { bytes, limit } => {
                write!(f, "segments need {bytes} bytes, the limit is {limit}")
            }
            Self::WritableAndExecutable { index } => {
                write!(f, "segment {index}: writable and executable (W^X)")
            }
            Self::Overlap { first, second } => {
                write!(f, "segments {first} and {second} share a page")
            }
            Self::EntryNotInCode { entry } => {
                write!(f, "entry point {entry:#x} is not in an executable segment")
            }
        }
    }
}

/// One loadable segment, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub virtual_address: u64,
    pub memory_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub write: bool,
    pub execute: bool,
}

impl Segment {
    /// First page and one past the last page the segment touches.
    pub fn pages(&self) -> (u64, u64) {
        let start = align_down(self.virtual_address, PAGE_SIZE);
        // `plan` checked that this neither overflows nor leaves user space.
        let end = align_up(self.virtual_address + self.memory_size, PAGE_SIZE).unwrap_or(u64::MAX);
        (start, end)
    }

    /// For the page at `page` (page-aligned, inside [`Self::pages`]): where in
    /// the page file bytes go and which file range they come from, or `None`
    /// when the page holds no file bytes (it stays zero).
    pub fn file_bytes_for_page(&self, page: u64) -> Option<(usize, core::ops::Range<usize>)> {
        let file_start = self.virtual_address;
        let file_end = self.virtual_address + self.file_size;
        let start = page.max(file_start);
        let end = (page + PAGE_SIZE).min(file_end);
        if start >= end {
            return None;
        }
        let offset = self.file_offset + (start - self.virtual_address);
        Some((
            (start - page) as usize,
            offset as usize..(offset + (end - start)) as usize,
        ))
    }
}

/// What to load, where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    pub entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl LoadPlan {
    /// The checked segments, in file order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// Bytes of memory the segments occupy, in whole pages.
    pub fn memory_pages(&self) -> u64 {
        self.segments()
            .iter()
            .map(|s| (s.pages().1 - s.pages().0) / PAGE_SIZE)
            .sum()
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(b)
}

/// Checks `bytes` and plans its loading into `[user_min, user_end)`, with at
/// most `size_limit` bytes of segment memory.
pub fn plan(
    bytes: &[u8],
    user_min: u64,
    user_end: u64,
    size_limit: u64,
) -> Result<LoadPlan, ElfError> {
    if bytes.len() < 64 {
        return Err(ElfError::TooShort);
    }
    if bytes[..4] != *b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if bytes[4] != 2 {
        return Err(ElfError::NotElf64);
    }
    if bytes[5] != 1 {
        return Err(ElfError::NotLittleEndian);
    }
    if bytes[6] != 1 || u32_at(bytes, 0x14) != 1 {
        return Err(ElfError::BadVersion);
    }
    let kind = u16_at(bytes, 0x10);
    if kind != ET_EXEC {
        return Err(ElfError::NotExecutable(kind));
    }
    let machine = u16_at(bytes, 0x12);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let entry = u64_at(bytes, 0x18);
    let header_offset = u64_at(bytes, 0x20);
    let header_size = u64::from(u16_at(bytes, 0x36));
    let header_count = u64::from(u16_at(bytes, 0x38));
    if header_size < 56 {
        return Err(ElfError::BadProgramHeaders);
    }
    let table_end = header_size
        .checked_mul(header_count)
        .and_then(|n| n.checked_add(header_offset))
        .ok_or(ElfError::BadProgramHeaders)?;
    if table_end > bytes.len() as u64 {
        return Err(ElfError::BadProgramHeaders);
    }
    let mut plan = LoadPlan {
        entry,
        segments: [Segment::default(); MAX_SEGMENTS],
        count: 0,
    };
    let mut total = 0u64;
    for header in 0..header_count {
        let at = (header_offset + header * header_size) as usize;
        if u32_at(bytes, at) != PT_LOAD {
            continue;
        }
        let index = plan.count;
        if index == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        let flags = u32_at(bytes, at + 4);
        let segment = Segment {
            file_offset: u64_at(bytes, at + 8),
            virtual_address: u64_at(bytes, at + 0x10),
            file_size: u64_at(bytes, at + 0x20),
            memory_size: u64_at(bytes, at + 0x28),
            write: flags & PF_W != 0,
            execute: flags & PF_X != 0,
        };
        if segment.write && segment.execute {
            return Err(ElfError::WritableAndExecutable { index });
        }
        let file_end = segment.file_offset.checked_add(segment.file_size);
        if file_end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(ElfError::SegmentOutsideFile { index });
        }
        if segment.file_size > segment.memory_size {
            return Err(ElfError::FileLargerThanMemory { index });
        }
        if segment.virtual_address % PAGE_SIZE != segment.file_offset % PAGE_SIZE {
            return Err(ElfError::Misaligned { index });
        }
        let end = segment
            .virtual_address
            .checked_add(segment.memory_size)
            .and_then(|end| align_up(end, PAGE_SIZE));
        if segment.virtual_address < user_min || end.is_none_or(|end| end > user_end) {
            return Err(ElfError::OutsideUserSpace {
                index,
                address: segment.virtual_address,
            });
        }
        let (start, end) = segment.pages();
        total = total.saturating_add(end - start);
        if total > size_limit {
            return Err(ElfError::TooLarge {
                bytes: total,
                limit: size_limit,
            });
        }
        for (first, other) in plan.segments().iter().enumerate() {
            let (other_start, other_end) = other.pages();
            if start < other_end && other_start < end {
                return Err(ElfError::Overlap {
                    first,
                    second: index,
                });
            }
        }
        plan.segments[index] = segment;
        plan.count += 1;
    }
    if plan.count == 0 {
        return Err(ElfError::NoSegments);
    }
    let in_code = plan.segments().iter().any(|s| {
        s.execute && entry >= s.virtual_address && entry - s.virtual_address < s.memory_size
    });
    if !in_code {
        return Err(ElfError::EntryNotInCode { entry });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: u64 = 0x20_0000;
    const END: u64 = 0x7fff_ffff_f000;
    const LIMIT: u64 = 16 << 20;

    /// A small valid executable: text at 0x201000 (RX), data at 0x203000 (RW,
    /// with bss).
    pub fn sample() -> Vec<u8> {
        let mut elf = vec![0u8; 0x3000];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[0x10..0x12].copy_from_slice(&ET_EXEC.to_le_bytes());
        elf[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        elf[0x18..0x20].copy_from_slice(&0x20_1010u64.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let headers = [
            (PF_X | 4, 0x1000u64, 0x20_1000u64, 0x800u64, 0x800u64),
            (PF_W | 4, 0x2000, 0x20_3000, 0x100, 0x2100),
        ];
        for (i, (flags, offset, vaddr, filesz, memsz)) in headers.into_iter().enumerate() {
            let at = 64 + i * 56;
            elf[at..at + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            elf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            elf[at + 0x10..at + 0x18].copy_from_slice(&vaddr.to_le_bytes());
            elf[at + 0x18..at + 0x20].copy_from_slice(&vaddr.to_le_bytes());
            elf[at + 0x20..at + 0x28].copy_from_slice(&filesz.to_le_bytes());
            elf[at + 0x28..at + 0x30].copy_from_slice(&memsz.to_le_bytes());
            elf[at + 0x30..at + 0x38].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        for (i, b) in elf[0x1000..0x2100].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        elf
    }

    fn set_u64(elf: &mut [u8], at: usize, value: u64) {
        elf[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    const PH1: usize = 64;
    const PH2: usize = 64 + 56;

    #[test]
    fn plans_a_valid_file() {
        let plan = plan(&sample(), MIN, END, LIMIT).unwrap();
        assert_eq!(plan.entry, 0x20_1010);
        let [text, data] = plan.segments() else {
            panic!()
        };
        assert!(text.execute && !text.write);
        assert!(data.write && !data.execute);
        assert_eq!(data.pages(), (0x20_3000, 0x20_6000));
        assert_eq!(plan.memory_pages(), 4);
        assert_eq!(
            data.file_bytes_for_page(0x20_3000),
            Some((0, 0x2000..0x2100))
        );
        assert_eq!(data.file_bytes_for_page(0x20_4000), None);
    }

    #[test]
    fn file_bytes_for_unaligned_segments() {
        let segment = Segment {
            virtual_address: 0x20_1560,
            memory_size: 0x2000,
            file_offset: 0x560,
            file_size: 0x1f00,
            write: false,
            execute: true,
        };
        assert_eq!(segment.pages(), (0x20_1000, 0x20_4000));
        assert_eq!(
            segment.file_bytes_for_page(0x20_1000),
            Some((0x560, 0x560..0x1000))
        );
        assert_eq!(
            segment.file_bytes_for_page(0x20_2000),
            Some((0, 0x1000..0x2000))
        );
        assert_eq!(
            segment.file_bytes_for_page(0x20_3000),
            Some((0, 0x2000..0x2460))
        );
    }

    #[test]
    fn refuses_each_malformation() {
        let check = |mutate: &dyn Fn(&mut Vec<u8>), expected: ElfError| {
            let mut elf = sample();
            mutate(&mut elf);
            assert_eq!(plan(&elf, MIN, END, LIMIT), Err(expected));
        };
        check(&|e| e.truncate(10), ElfError::TooShort);
        check(&|e| e[1] = b'X', ElfError::BadMagic);
        check(&|e| e[4] = 1, ElfError::NotElf64);
        check(&|e| e[5] = 2, ElfError::NotLittleEndian);
        check(&|e| e[6] = 0, ElfError::BadVersion);
        check(&|e| e[0x10] = 3, ElfError::NotExecutable(3));
        check(&|e| e[0x12] = 3, ElfError::WrongMachine(3));
        check(
            &|e| set_u64(e, 0x20, 0x10_0000),
            ElfError::BadProgramHeaders,
        );
        check(
            &|e| set_u64(e, 0x20, u64::MAX - 8),
            ElfError::BadProgramHeaders,
        );
        check(&|e| e[0x36] = 8, ElfError::BadProgramHeaders);
        check(&|e| e.truncate(130), ElfError::BadProgramHeaders);
        check(
            &|e| set_u64(e, PH1 + 8, 0x10_1000),
            ElfError::SegmentOutsideFile { index: 0 },
        );
        check(
            &|e| set_u64(e, PH2 + 0x20, u64::MAX),
            ElfError::SegmentOutsideFile { index: 1 },
        );
        check(
            &|e| set_u64(e, PH1 + 0x28, 0x10),
            ElfError::FileLargerThanMemory { index: 0 },
        );
        check(
            &|e| set_u64(e, PH1 + 0x10, 0x20_1008),
            ElfError::Misaligned { index: 0 },
        );
        check(
            &|e| set_u64(e, PH1 + 0x10, 0xffff_ffff_8000_1000),
            ElfError::OutsideUserSpace {
                index: 0,
                address: 0xffff_ffff_8000_1000,
            },
        );
        check(
            &|e| set_u64(e, PH1 + 0x10, 0x1000),
            ElfError::OutsideUserSpace {
                index: 0,
                address: 0x1000,
            },
        );
        check(
            &|e| set_u64(e, PH2 + 0x28, u64::MAX - 0x1000),
            ElfError::OutsideUserSpace {
                index: 1,
                address: 0x20_3000,
            },
        );
        check(
            &|e| set_u64(e, PH2 + 0x28, 1 << 46),
            ElfError::TooLarge {
                bytes: 0x1000 + (1 << 46),
                limit: LIMIT,
            },
        );
        check(
            &|e| e[PH1 + 4] |= PF_W as u8,
            ElfError::WritableAndExecutable { index: 0 },
        );
        check(
            &|e| set_u64(e, PH2 + 0x10, 0x20_1000),
            ElfError::Overlap {
                first: 0,
                second: 1,
            },
        );
        check(
            &|e| set_u64(e, 0x18, 0x20_3000),
            ElfError::EntryNotInCode { entry: 0x20_3000 },
        );
        check(
            &|e| e[PH1] = 0,
            ElfError::EntryNotInCode { entry: 0x20_1010 },
        );
        check(
            &|e| {
                e[PH1] = 0;
                e[PH2] = 0
            },
            ElfError::NoSegments,
        );
    }

    #[test]
    fn refuses_more_segments_than_supported() {
        let mut elf = sample();
        let count = MAX_SEGMENTS + 1;
        elf[0x38..0x3a].copy_from_slice(&(count as u16).to_le_bytes());
        for i in 2..count {
            let at = 64 + i * 56;
            elf.copy_within(PH2..PH2 + 56, at);
            // Each extra data segment on its own pages, no file bytes.
            set_u64(&mut elf, at + 0x10, 0x30_0000 + i as u64 * 0x1_0000);
            set_u64(&mut elf, at + 0x20, 0);
        }
        assert_eq!(plan(&elf, MIN, END, LIMIT), Err(ElfError::TooManySegments));
        elf[0x38] = MAX_SEGMENTS as u8;
        assert_eq!(
            plan(&elf, MIN, END, LIMIT).unwrap().segments().len(),
            MAX_SEGMENTS
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_mutated_files(
            edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..12),
            cut in 0usize..0x3000,
        ) {
            let mut elf = sample();
            for (at, value) in edits {
                elf[at] = value;
            }
            elf.truncate(cut.max(1));
            if let Ok(plan) = plan(&elf, MIN, END, LIMIT) {
                for s in plan.segments() {
                    prop_assert!(s.virtual_address >= MIN);
                    prop_assert!(s.pages().1 <= END);
                    prop_assert!(!(s.write && s.execute));
                    prop_assert!(s.file_offset + s.file_size <= elf.len() as u64);
                    let (a, b) = s.pages();
                    let mut page = a;
                    while page < b {
                        if let Some((into, range)) = s.file_bytes_for_page(page) {
                            prop_assert!(into + range.len() <= PAGE_SIZE as usize);
                            prop_assert!(range.end <= elf.len());
                        }
                        page += PAGE_SIZE;
                    }
                }
            }
        }
    }
}
