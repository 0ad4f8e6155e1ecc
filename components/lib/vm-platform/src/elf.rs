//! ELF executables for x86, 32- and 64-bit: the header, the loadable
//! segments by physical address (`p_paddr`) and the notes (`PT_NOTE`
//! segments, then `SHT_NOTE` sections). Used by [`crate::image`], the PVH
//! loader and the multiboot loader.
//!
//! Nothing in the file is trusted. A [`Segments`] value proves: at most
//! [`MAX_SEGMENTS`] loadable segments, at least one, each one's file bytes
//! inside the file, its file size no larger than its memory size, its
//! physical range not wrapping, and no two physical ranges overlapping.
//! Note scanning stops after [`MAX_NOTES`] notes, so a file with thousands
//! of note headers costs bounded work.

use crate::Memory;
use crate::layout::{self, GuestLayout, Item, LayoutError};
use crate::le::{u16_at, u32_at, u64_at};

/// Loadable segments an image may have (Linux's vmlinux has five).
pub const MAX_SEGMENTS: usize = 16;
/// Notes examined at most when looking for one.
pub const MAX_NOTES: usize = 1024;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const SHT_NOTE: u32 = 7;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// The ELF class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// ELFCLASS32, EM_386.
    Elf32,
    /// ELFCLASS64, EM_X86_64.
    Elf64,
}

/// Why an ELF file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    NotElf,
    /// Not a little-endian version-1 x86 (EM_386 for 32-bit, EM_X86_64 for
    /// 64-bit) executable (ET_EXEC).
    WrongKind,
    /// The ELF header runs past the end of the file.
    HeaderTruncated,
    /// Program or section header entries smaller than the class needs.
    EntrySizeTooSmall {
        size: u16,
    },
    /// Program header `index` lies outside the file.
    ProgramHeaderOutsideFile {
        index: usize,
    },
    /// Section header `index` lies outside the file.
    SectionHeaderOutsideFile {
        index: usize,
    },
    /// The file bytes of segment (program header) `index` lie outside the
    /// file.
    SegmentOutsideFile {
        index: usize,
    },
    /// Segment `index` has more file bytes than memory bytes.
    FileLargerThanMemory {
        index: usize,
    },
    /// Segment `index`'s physical range runs past the 64-bit address space.
    SegmentWraps {
        index: usize,
        address: u64,
        size: u64,
    },
    /// Segments `first` and `second` overlap in physical memory.
    SegmentsOverlap {
        first: usize,
        second: usize,
    },
    TooManySegments {
        max: usize,
    },
    /// No loadable segment with a memory size.
    NoLoadableSegment,
    /// The note at file offset `offset` runs past its segment or section.
    MalformedNote {
        offset: u64,
    },
    TooManyNotes {
        max: usize,
    },
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::WrongKind => write!(
                f,
                "not a little-endian x86 ELF executable (EM_386 ELF32 or EM_X86_64 ELF64, ET_EXEC)"
            ),
            Self::HeaderTruncated => write!(f, "the ELF header runs past the end of the file"),
            Self::EntrySizeTooSmall { size } => {
                write!(f, "ELF header table entries of {size} bytes are too small")
            }
            Self::ProgramHeaderOutsideFile { index } => {
                write!(f, "program header {index} lies outside the file")
            }
            Self::SectionHeaderOutsideFile { index } => {
                write!(f, "section header {index} lies outside the file")
            }
            Self::SegmentOutsideFile { index } => {
                write!(f, "segment {index}'s bytes lie outside the file")
            }
            Self::FileLargerThanMemory { index } => {
                write!(f, "segment {index} has more file bytes than memory bytes")
            }
            Self::SegmentWraps {
                index,
                address,
                size,
            } => write!(
                f,
                "segment {index} at {address:#x} ({size:#x} bytes) runs past the address space"
            ),
            Self::SegmentsOverlap { first, second } => {
                write!(
                    f,
                    "segments {first} and {second} overlap in physical memory"
                )
            }
            Self::TooManySegments { max } => {
                write!(f, "more than {max} loadable segments")
            }
            Self::NoLoadableSegment => write!(f, "no loadable segment"),
            Self::MalformedNote { offset } => {
                write!(
                    f,
                    "the note at file offset {offset:#x} runs past its segment"
                )
            }
            Self::TooManyNotes { max } => write!(f, "more than {max} notes"),
        }
    }
}

/// Where a header table is.
#[derive(Clone, Copy, Debug)]
struct Table {
    offset: u64,
    entry_size: usize,
    count: usize,
}

impl Table {
    /// The file offset of entry `index`, if the whole entry is in the file.
    fn entry(&self, index: usize, minimum: usize, file: usize) -> Option<usize> {
        let at = usize::try_from(self.offset)
            .ok()?
            .checked_add(index.checked_mul(self.entry_size)?)?;
        (at.checked_add(minimum)? <= file).then_some(at)
    }
}

/// A parsed ELF header over the file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    image: &'a [u8],
    pub class: Class,
    /// `e_entry`, as the file says (a virtual address).
    pub entry: u64,
    program: Table,
    sections: Table,
}

/// A program header, with fields widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProgramHeader {
    kind: u32,
    offset: u64,
    virtual_address: u64,
    physical_address: u64,
    file_size: u64,
    memory_size: u64,
    align: u64,
}

/// A checked loadable segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its program header's index.
    pub index: usize,
    pub offset: u64,
    pub virtual_address: u64,
    pub physical_address: u64,
    pub file_size: u64,
    pub memory_size: u64,
}

impl Segment {
    /// One past its last physical byte.
    pub const fn end(&self) -> u64 {
        self.physical_address + self.memory_size
    }
}

/// The checked loadable segments of a file (see the module invariants).
#[derive(Clone, Copy, Debug)]
pub struct Segments<'a> {
    image: &'a [u8],
    list: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl<'a> Elf<'a> {
    /// Reads and checks the ELF header.
    pub fn parse(image: &'a [u8]) -> Result<Self, ElfError> {
        if image.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        // Class, little-endian, version 1.
        let class = match image.get(4..7) {
            Some([1, 1, 1]) => Class::Elf32,
            Some([2, 1, 1]) => Class::Elf64,
            _ => return Err(ElfError::WrongKind),
        };
        let truncated = ElfError::HeaderTruncated;
        let (machine, header_size) = match class {
            Class::Elf32 => (EM_386, 52),
            Class::Elf64 => (EM_X86_64, 64),
        };
        if u16_at(image, 16).ok_or(truncated)? != ET_EXEC
            || u16_at(image, 18).ok_or(truncated)? != machine
        {
            return Err(ElfError::WrongKind);
        }
        if image.len() < header_size {
            return Err(truncated);
        }
        // (entry, phoff, shoff, phentsize) offsets; the three u16 counts
        // and sizes follow phentsize.
        let (entry, program, sections, sizes) = match class {
            Class::Elf32 => (
                u32_at(image, 24).map(u64::from),
                u32_at(image, 28).map(u64::from),
                u32_at(image, 32).map(u64::from),
                42,
            ),
            Class::Elf64 => (u64_at(image, 24), u64_at(image, 32), u64_at(image, 40), 54),
        };
        let field = |at| u16_at(image, at).ok_or(truncated);
        let table = |offset: Option<u64>, size: u16, count: u16| -> Result<Table, ElfError> {
            Ok(Table {
                offset: offset.ok_or(truncated)?,
                entry_size: usize::from(size),
                count: usize::from(count),
            })
        };
        let elf = Self {
            image,
            class,
            entry: entry.ok_or(truncated)?,
            program: table(program, field(sizes)?, field(sizes + 2)?)?,
            sections: table(sections, field(sizes + 4)?, field(sizes + 6)?)?,
        };
        let (program_minimum, section_minimum) = elf.entry_sizes();
        for (table, minimum) in [
            (elf.program, program_minimum),
            (elf.sections, section_minimum),
        ] {
            if table.count > 0 && table.entry_size < minimum {
                return Err(ElfError::EntrySizeTooSmall {
                    size: table.entry_size as u16,
                });
            }
        }
        Ok(elf)
    }

    /// The smallest program and section header entries of the class.
    const fn entry_sizes(&self) -> (usize, usize) {
        match self.class {
            Class::Elf32 => (32, 40),
            Class::Elf64 => (56, 64),
        }
    }

    /// A class-sized word (`u32` or `u64`) at `at`.
    fn word(&self, at: usize) -> Option<u64> {
        match self.class {
            Class::Elf32 => u32_at(self.image, at).map(u64::from),
            Class::Elf64 => u64_at(self.image, at),
        }
    }

    fn program_header(&self, index: usize) -> Result<ProgramHeader, ElfError> {
        let outside = ElfError::ProgramHeaderOutsideFile { index };
        let at = self
            .program
            .entry(index, self.entry_sizes().0, self.image.len())
            .ok_or(outside)?;
        // Field offsets: offset, vaddr, paddr, filesz, memsz, align.
        let fields: [usize; 6] = match self.class {
            Class::Elf32 => [4, 8, 12, 16, 20, 28],
            Class::Elf64 => [8, 16, 24, 32, 40, 48],
        };
        let field = |index: usize| self.word(at + fields[index]).unwrap_or(0);
        Ok(ProgramHeader {
            kind: u32_at(self.image, at).ok_or(outside)?,
            offset: field(0),
            virtual_address: field(1),
            physical_address: field(2),
            file_size: field(3),
            memory_size: field(4),
            align: field(5),
        })
    }

    /// The loadable segments, checked (see the module invariants).
    pub fn segments(&self) -> Result<Segments<'a>, ElfError> {
        let mut segments = Segments::empty(self.image);
        for index in 0..self.program.count {
            let header = self.program_header(index)?;
            if header.kind != PT_LOAD || header.memory_size == 0 {
                continue;
            }
            segments.push(Segment {
                index,
                offset: header.offset,
                virtual_address: header.virtual_address,
                physical_address: header.physical_address,
                file_size: header.file_size,
                memory_size: header.memory_size,
            })?;
        }
        if segments.count == 0 {
            return Err(ElfError::NoLoadableSegment);
        }
        Ok(segments)
    }

    /// The descriptor of the first note named `name` (without the NUL) of
    /// type `kind`: `PT_NOTE` segments first, then `SHT_NOTE` sections.
    pub fn find_note(&self, name: &[u8], kind: u32) -> Result<Option<&'a [u8]>, ElfError> {
        let mut budget = MAX_NOTES;
        for index in 0..self.program.count {
            let header = self.program_header(index)?;
            if header.kind != PT_NOTE {
                continue;
            }
            let align = if header.align == 8 { 8 } else { 4 };
            let region = self
                .region(header.offset, header.file_size)
                .ok_or(ElfError::SegmentOutsideFile { index })?;
            if let Some(found) =
                self.scan_notes(region, header.offset, align, name, kind, &mut budget)?
            {
                return Ok(Some(found));
            }
        }
        let (_, minimum) = self.entry_sizes();
        for index in 0..self.sections.count {
            let outside = ElfError::SectionHeaderOutsideFile { index };
            let at = self
                .sections
                .entry(index, minimum, self.image.len())
                .ok_or(outside)?;
            if u32_at(self.image, at + 4) != Some(SHT_NOTE) {
                continue;
            }
            // sh_offset, sh_size, sh_addralign.
            let [offset, size, align] = match self.class {
                Class::Elf32 => [16, 20, 32],
                Class::Elf64 => [24, 32, 48],
            }
            .map(|field| self.word(at + field).unwrap_or(0));
            let align = if align == 8 { 8 } else { 4 };
            let region = self.region(offset, size).ok_or(outside)?;
            if let Some(found) = self.scan_notes(region, offset, align, name, kind, &mut budget)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn region(&self, offset: u64, size: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.image.get(start..end)
    }

    /// Walks the notes in `region` (which starts at file offset `base`).
    fn scan_notes(
        &self,
        region: &'a [u8],
        base: u64,
        align: usize,
        name: &[u8],
        kind: u32,
        budget: &mut usize,
    ) -> Result<Option<&'a [u8]>, ElfError> {
        let round = |value: usize| value.checked_add(align - 1).map(|v| v & !(align - 1));
        let mut at = 0usize;
        // Fewer than 12 bytes left is padding, not a note.
        while region.len() - at >= 12 {
            if *budget == 0 {
                return Err(ElfError::TooManyNotes { max: MAX_NOTES });
            }
            *budget -= 1;
            let malformed = ElfError::MalformedNote {
                offset: base + at as u64,
            };
            let name_size = u32_at(region, at).ok_or(malformed)? as usize;
            let desc_size = u32_at(region, at + 4).ok_or(malformed)? as usize;
            let note_kind = u32_at(region, at + 8).ok_or(malformed)?;
            let name_start = at + 12;
            let name_end = name_start.checked_add(name_size).ok_or(malformed)?;
            let desc_start = round(name_end).ok_or(malformed)?;
            let desc_end = desc_start.checked_add(desc_size).ok_or(malformed)?;
            if desc_end > region.len() {
                return Err(malformed);
            }
            let note_name = &region[name_start..name_end];
            let matches = note_name.strip_suffix(b"\0").unwrap_or(note_name) == name;
            if matches && note_kind == kind {
                return Ok(Some(&region[desc_start..desc_end]));
            }
            // Past the end of the region means this was the last note.
            at = match round(desc_end) {
                Some(next) if next <= region.len() => next,
                _ => break,
            };
        }
        Ok(None)
    }
}

impl<'a> Segments<'a> {
    const fn empty(image: &'a [u8]) -> Self {
        let none = Segment {
            index: 0,
            offset: 0,
            virtual_address: 0,
            physical_address: 0,
            file_size: 0,
            memory_size: 0,
        };
        Self {
            image,
            list: [none; MAX_SEGMENTS],
            count: 0,
        }
    }

    /// Adds `segment` if it keeps the invariants (see the module).
    fn push(&mut self, segment: Segment) -> Result<(), ElfError> {
        let index = segment.index;
        let in_file = segment
            .offset
            .checked_add(segment.file_size)
            .is_some_and(|end| end <= self.image.len() as u64);
        if !in_file {
            return Err(ElfError::SegmentOutsideFile { index });
        }
        if segment.file_size > segment.memory_size {
            return Err(ElfError::FileLargerThanMemory { index });
        }
        if segment
            .physical_address
            .checked_add(segment.memory_size)
            .is_none()
        {
            return Err(ElfError::SegmentWraps {
                index,
                address: segment.physical_address,
                size: segment.memory_size,
            });
        }
        if let Some(other) = self.as_slice().iter().find(|other| {
            segment.physical_address < other.end() && other.physical_address < segment.end()
        }) {
            return Err(ElfError::SegmentsOverlap {
                first: other.index,
                second: index,
            });
        }
        let slot = self
            .list
            .get_mut(self.count)
            .ok_or(ElfError::TooManySegments { max: MAX_SEGMENTS })?;
        *slot = segment;
        self.count += 1;
        Ok(())
    }

    /// A flat image's one segment: `file_size` bytes of `image` from
    /// `offset`, at `physical`, zeroes up to `memory_size` (checked like an
    /// ELF segment; its index is 0, its virtual address the physical one).
    pub fn flat(
        image: &'a [u8],
        offset: u64,
        physical: u64,
        file_size: u64,
        memory_size: u64,
    ) -> Result<Self, ElfError> {
        let mut segments = Self::empty(image);
        segments.push(Segment {
            index: 0,
            offset,
            virtual_address: physical,
            physical_address: physical,
            file_size,
            memory_size,
        })?;
        Ok(segments)
    }

    pub fn as_slice(&self) -> &[Segment] {
        &self.list[..self.count]
    }

    /// The lowest physical address loaded.
    pub fn lowest(&self) -> u64 {
        self.as_slice()
            .iter()
            .map(|s| s.physical_address)
            .min()
            .unwrap_or(0)
    }

    /// One past the highest physical address loaded (bss included).
    pub fn highest(&self) -> u64 {
        self.as_slice().iter().map(Segment::end).max().unwrap_or(0)
    }

    /// The physical address of `virtual_address`, through the segment that
    /// contains it.
    pub fn physical(&self, virtual_address: u64) -> Option<u64> {
        self.as_slice().iter().find_map(|s| {
            let delta = virtual_address.checked_sub(s.virtual_address)?;
            (delta < s.memory_size).then(|| s.physical_address + delta)
        })
    }

    /// Whether `address` is inside a segment's file bytes (code, not bss).
    pub fn holds_code(&self, address: u64) -> bool {
        self.as_slice()
            .iter()
            .any(|s| address >= s.physical_address && address - s.physical_address < s.file_size)
    }

    /// Places every segment in `layout` as [`Item::Kernel`], at its
    /// physical address.
    pub fn place(&self, layout: &mut GuestLayout) -> Result<(), LayoutError> {
        for segment in self.as_slice() {
            layout.place_at(Item::Kernel, segment.physical_address, segment.memory_size)?;
        }
        Ok(())
    }

    /// Copies every segment's file bytes to its physical address and
    /// zeroes the rest of its memory size.
    pub fn write(&self, memory: &mut impl Memory) -> Result<(), LayoutError> {
        for segment in self.as_slice() {
            // In the file: checked when the segments were built.
            let start = segment.offset as usize;
            let bytes = &self.image[start..start + segment.file_size as usize];
            layout::write(memory, segment.physical_address, bytes)?;
            let bss = segment.memory_size - segment.file_size;
            if bss > 0 {
                layout::zero(memory, segment.physical_address + segment.file_size, bss)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A loadable segment for [`build`]: physical and virtual address, file
    /// bytes, memory size.
    #[derive(Clone, Copy)]
    pub struct Load<'a> {
        pub physical: u64,
        pub virtual_address: u64,
        pub bytes: &'a [u8],
        pub memory_size: u64,
    }

    impl<'a> Load<'a> {
        pub fn at(physical: u64, bytes: &'a [u8], memory_size: u64) -> Self {
            Self {
                physical,
                virtual_address: physical,
                bytes,
                memory_size,
            }
        }
    }

    /// A note for [`build`]: name (without NUL), type, descriptor.
    pub type Note<'a> = (&'a [u8], u32, &'a [u8]);

    /// Puts a class-sized word at `at`.
    fn put_word(out: &mut [u8], class: Class, at: usize, value: u64) {
        match class {
            Class::Elf32 => out[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes()),
            Class::Elf64 => out[at..at + 8].copy_from_slice(&value.to_le_bytes()),
        }
    }

    /// Encodes notes with 4-byte alignment.
    pub fn encode_notes(notes: &[Note]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, desc) in notes {
            out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
            out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(name);
            out.push(0);
            out.resize(out.len().next_multiple_of(4), 0);
            out.extend_from_slice(desc);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    /// A minimal executable: the loads, then the notes as one `PT_NOTE`
    /// segment (`in_segment`) or one `SHT_NOTE` section.
    pub fn build(
        class: Class,
        entry: u64,
        loads: &[Load],
        notes: &[Note],
        in_segment: bool,
    ) -> Vec<u8> {
        let (header, phentsize, shentsize) = match class {
            Class::Elf32 => (52, 32, 40),
            Class::Elf64 => (64, 56, 64),
        };
        let note_bytes = encode_notes(notes);
        let note_segment = in_segment && !notes.is_empty();
        let note_section = !in_segment && !notes.is_empty();
        let phnum = loads.len() + usize::from(note_segment);
        let mut out = vec![0u8; header + phentsize * phnum];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if class == Class::Elf32 { 1 } else { 2 };
        out[5..7].copy_from_slice(&[1, 1]);
        out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        let machine = if class == Class::Elf32 {
            EM_386
        } else {
            EM_X86_64
        };
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        put_word(&mut out, class, 24, entry);
        let (phoff_at, shoff_at, sizes) = match class {
            Class::Elf32 => (28, 32, 42),
            Class::Elf64 => (32, 40, 54),
        };
        put_word(&mut out, class, phoff_at, header as u64);
        out[sizes..sizes + 2].copy_from_slice(&(phentsize as u16).to_le_bytes());
        out[sizes + 2..sizes + 4].copy_from_slice(&(phnum as u16).to_le_bytes());
        out[sizes + 4..sizes + 6].copy_from_slice(&(shentsize as u16).to_le_bytes());
        let fields: [usize; 6] = match class {
            Class::Elf32 => [4, 8, 12, 16, 20, 28],
            Class::Elf64 => [8, 16, 24, 32, 40, 48],
        };
        let put_header = |out: &mut Vec<u8>, index: usize, kind: u32, values: [u64; 6]| {
            let at = header + phentsize * index;
            out[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            for (field, value) in fields.iter().zip(values) {
                put_word(out, class, at + field, value);
            }
        };
        for (index, load) in loads.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(load.bytes);
            let values = [
                offset,
                load.virtual_address,
                load.physical,
                load.bytes.len() as u64,
                load.memory_size,
                0x1000,
            ];
            put_header(&mut out, index, PT_LOAD, values);
        }
        if notes.is_empty() {
            return out;
        }
        let note_offset = out.len() as u64;
        out.extend_from_slice(&note_bytes);
        let note_size = note_bytes.len() as u64;
        if note_segment {
            let values = [note_offset, 0, 0, note_size, note_size, 4];
            put_header(&mut out, loads.len(), PT_NOTE, values);
        }
        if note_section {
            // A null section and the note section.
            let shoff = out.len() as u64;
            out.resize(out.len() + 2 * shentsize, 0);
            let at = shoff as usize + shentsize;
            out[at + 4..at + 8].copy_from_slice(&SHT_NOTE.to_le_bytes());
            let [offset, size, align] = match class {
                Class::Elf32 => [16, 20, 32],
                Class::Elf64 => [24, 32, 48],
            };
            put_word(&mut out, class, at + offset, note_offset);
            put_word(&mut out, class, at + size, note_size);
            put_word(&mut out, class, at + align, 4);
            put_word(&mut out, class, shoff_at, shoff);
            out[sizes + 6..sizes + 8].copy_from_slice(&2u16.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_both_classes() {
        for class in [Class::Elf32, Class::Elf64] {
            let image = build(
                class,
                0x10_0010,
                &[
                    Load::at(0x10_0000, b"text", 0x10),
                    Load {
                        physical: 0x20_0000,
                        virtual_address: 0xc020_0000,
                        bytes: b"data",
                        memory_size: 0x2000,
                    },
                ],
                &[],
                true,
            );
            let elf = Elf::parse(&image).unwrap();
            assert_eq!(elf.class, class);
            assert_eq!(elf.entry, 0x10_0010);
            let segments = elf.segments().unwrap();
            assert_eq!(segments.as_slice().len(), 2);
            assert_eq!(segments.lowest(), 0x10_0000);
            assert_eq!(segments.highest(), 0x20_2000);
            assert_eq!(segments.physical(0xc020_0100), Some(0x20_0100));
            assert_eq!(segments.physical(0xc020_2000), None);
            assert!(segments.holds_code(0x20_0003));
            assert!(!segments.holds_code(0x20_0004), "bss is not code");
        }
    }

    #[test]
    fn finds_notes_in_segments_and_sections() {
        let notes: [Note; 3] = [
            (b"GNU", 3, b"build-id"),
            (b"Xen", 5, b"xen-3.0"),
            (b"Xen", 18, &0x10_0040u32.to_le_bytes()),
        ];
        for class in [Class::Elf32, Class::Elf64] {
            for in_segment in [true, false] {
                let image = build(
                    class,
                    0,
                    &[Load::at(0x10_0000, b"x", 1)],
                    &notes,
                    in_segment,
                );
                let elf = Elf::parse(&image).unwrap();
                assert_eq!(
                    elf.find_note(b"Xen", 18).unwrap(),
                    Some(&0x10_0040u32.to_le_bytes()[..])
                );
                assert_eq!(elf.find_note(b"Xen", 5).unwrap(), Some(&b"xen-3.0"[..]));
                assert_eq!(elf.find_note(b"Xe", 18).unwrap(), None);
                assert_eq!(elf.find_note(b"Linux", 18).unwrap(), None);
            }
        }
    }

    #[test]
    fn refuses_malformed_notes_and_note_floods() {
        let mut image = build(
            Class::Elf64,
            0,
            &[Load::at(0x1000, b"x", 1)],
            &[(b"Xen", 18, b"abcd")],
            true,
        );
        // The descriptor size runs past the segment.
        let note = image.len() - 20;
        image[note + 4..note + 8].copy_from_slice(&100u32.to_le_bytes());
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(
            elf.find_note(b"Xen", 18),
            Err(ElfError::MalformedNote {
                offset: note as u64
            })
        );
        // Thousands of empty notes cost bounded work.
        let flood = vec![(&b""[..], 1u32, &b""[..]); MAX_NOTES + 1];
        let image = build(Class::Elf64, 0, &[Load::at(0x1000, b"x", 1)], &flood, true);
        assert_eq!(
            Elf::parse(&image).unwrap().find_note(b"Xen", 18),
            Err(ElfError::TooManyNotes { max: MAX_NOTES })
        );
    }

    #[test]
    fn refuses_hostile_segments() {
        let segments = |loads: &[Load]| {
            let image = build(Class::Elf64, 0, loads, &[], true);
            Elf::parse(&image).and_then(|elf| elf.segments().map(|s| s.as_slice().len()))
        };
        assert_eq!(
            segments(&[
                Load::at(0x1000, b"abcd", 0x1000),
                Load::at(0x1800, b"", 0x10)
            ]),
            Err(ElfError::SegmentsOverlap {
                first: 0,
                second: 1
            })
        );
        assert_eq!(
            segments(&[Load::at(0x1000, b"abcd", 2)]),
            Err(ElfError::FileLargerThanMemory { index: 0 })
        );
        assert_eq!(
            segments(&[Load::at(u64::MAX - 1, b"", 4)]),
            Err(ElfError::SegmentWraps {
                index: 0,
                address: u64::MAX - 1,
                size: 4
            })
        );
        let many: Vec<_> = (0..=MAX_SEGMENTS as u64)
            .map(|i| Load::at(i * 0x1000, b"", 1))
            .collect();
        assert_eq!(
            segments(&many),
            Err(ElfError::TooManySegments { max: MAX_SEGMENTS })
        );
        assert_eq!(
            segments(&[Load::at(0, b"", 0)]),
            Err(ElfError::NoLoadableSegment)
        );
        // A segment whose bytes run past the file, and one with a huge offset.
        let mut image = build(Class::Elf64, 0, &[Load::at(0x1000, b"abcd", 4)], &[], true);
        image.truncate(image.len() - 1);
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(
            elf.segments().map(|_| ()),
            Err(ElfError::SegmentOutsideFile { index: 0 })
        );
        let mut image = build(Class::Elf64, 0, &[Load::at(0x1000, b"abcd", 4)], &[], true);
        image[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(
            elf.segments().map(|_| ()),
            Err(ElfError::SegmentOutsideFile { index: 0 })
        );
        // A program header table past the end of the file.
        let mut image = build(Class::Elf32, 0, &[Load::at(0x1000, b"abcd", 4)], &[], true);
        image[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let elf = Elf::parse(&image).unwrap();
        assert_eq!(
            elf.segments().map(|_| ()),
            Err(ElfError::ProgramHeaderOutsideFile { index: 0 })
        );
    }

    #[test]
    fn flat_images_are_one_checked_segment() {
        let image = [7u8; 0x100];
        let flat = Segments::flat(&image, 0x40, 0x10_0000, 0xc0, 0x1000).unwrap();
        assert_eq!(flat.as_slice().len(), 1);
        assert_eq!((flat.lowest(), flat.highest()), (0x10_0000, 0x10_1000));
        assert!(flat.holds_code(0x10_00bf) && !flat.holds_code(0x10_00c0));
        assert_eq!(
            Segments::flat(&image, 0x40, 0x10_0000, 0xc1, 0x1000).err(),
            Some(ElfError::SegmentOutsideFile { index: 0 })
        );
        assert_eq!(
            Segments::flat(&image, 0, 0x10_0000, 0x10, 0x8).err(),
            Some(ElfError::FileLargerThanMemory { index: 0 })
        );
        assert_eq!(
            Segments::flat(&image, 0, u64::MAX, 0x10, 0x10).err(),
            Some(ElfError::SegmentWraps {
                index: 0,
                address: u64::MAX,
                size: 0x10
            })
        );
    }

    #[test]
    fn refuses_what_is_not_an_x86_executable() {
        let good = build(Class::Elf32, 0, &[Load::at(0x1000, b"x", 1)], &[], true);
        assert!(Elf::parse(&good).is_ok());
        assert_eq!(Elf::parse(b"MZ").err(), Some(ElfError::NotElf));
        assert_eq!(Elf::parse(b"\x7fELF").err(), Some(ElfError::WrongKind));
        for (at, value) in [(4, 3u8), (5, 2), (6, 0), (16, 3), (18, 62)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(
                Elf::parse(&bad).err(),
                Some(ElfError::WrongKind),
                "byte {at}"
            );
        }
        let mut small = good.clone();
        small[42] = 16;
        assert_eq!(
            Elf::parse(&small).err(),
            Some(ElfError::EntrySizeTooSmall { size: 16 })
        );
        for length in 7..52 {
            assert_eq!(
                Elf::parse(&good[..length]).err(),
                Some(ElfError::HeaderTruncated),
                "length {length}"
            );
        }
    }
}
