//! Guest images: ELF64 executables whose program headers give physical
//! load addresses (`p_paddr`), loaded into guest memory as a boot loader
//! would. Nothing in the image is trusted: [`crate::elf`] checks every
//! offset, size and address, and an image that does not fit its VM is
//! refused with the reason before anything is written.

use crate::Memory;
use crate::elf::{Class, Elf, ElfError};

/// What loading found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The ELF entry point (the 64-bit entry).
    pub entry: u64,
    /// The lowest loaded guest-physical address (the real-mode entry).
    pub lowest: u64,
    /// One past the highest loaded address (end of bss included).
    pub highest: u64,
    pub segments: usize,
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    NotElf,
    /// Not a 64-bit little-endian x86-64 executable.
    WrongKind,
    /// A header or segment lies outside the file.
    Truncated,
    /// Segment at `address`, `size` bytes, does not fit below `limit`.
    OutsideMemory {
        address: u64,
        size: u64,
        limit: u64,
    },
    /// No loadable segment.
    Empty,
    /// Segments that overlap, or too many of them.
    Segments(ElfError),
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::WrongKind => write!(f, "not a 64-bit little-endian x86-64 ELF executable"),
            Self::Truncated => write!(f, "a header or segment lies outside the file"),
            Self::OutsideMemory {
                address,
                size,
                limit,
            } => write!(
                f,
                "segment at guest-physical {address:#x} ({size} bytes) does not fit in guest memory below {limit:#x}"
            ),
            Self::Empty => write!(f, "no loadable segment"),
            Self::Segments(error) => write!(f, "{error}"),
        }
    }
}

impl ImageError {
    fn from_elf(error: ElfError, limit: u64) -> Self {
        match error {
            ElfError::NotElf => Self::NotElf,
            ElfError::WrongKind => Self::WrongKind,
            ElfError::HeaderTruncated
            | ElfError::EntrySizeTooSmall { .. }
            | ElfError::ProgramHeaderOutsideFile { .. }
            | ElfError::SectionHeaderOutsideFile { .. }
            | ElfError::SegmentOutsideFile { .. }
            | ElfError::FileLargerThanMemory { .. } => Self::Truncated,
            ElfError::SegmentWraps { address, size, .. } => Self::OutsideMemory {
                address,
                size,
                limit,
            },
            ElfError::NoLoadableSegment => Self::Empty,
            other => Self::Segments(other),
        }
    }
}

/// Loads `image` into `memory`, below `limit` (the world switcher keeps the
/// memory above for its own set-up). Memory not covered by a segment is
/// left as it is (the caller clears it first).
pub fn load(image: &[u8], memory: &mut impl Memory, limit: u64) -> Result<Loaded, ImageError> {
    let limit = limit.min(memory.size());
    let elf = Elf::parse(image).map_err(|e| ImageError::from_elf(e, limit))?;
    if elf.class != Class::Elf64 {
        return Err(ImageError::WrongKind);
    }
    let segments = elf.segments().map_err(|e| ImageError::from_elf(e, limit))?;
    // Check every segment before writing any.
    for segment in segments.as_slice() {
        if segment.end() > limit {
            return Err(ImageError::OutsideMemory {
                address: segment.physical_address,
                size: segment.memory_size,
                limit,
            });
        }
    }
    segments
        .write(memory)
        .map_err(|_| ImageError::OutsideMemory {
            address: segments.lowest(),
            size: segments.highest() - segments.lowest(),
            limit,
        })?;
    Ok(Loaded {
        entry: elf.entry,
        lowest: segments.lowest(),
        highest: segments.highest(),
        segments: segments.as_slice().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::{Load, build};
    use crate::testing::VecMemory;

    /// A minimal ELF64 with the given (paddr, file bytes, memsz) segments.
    pub fn elf(entry: u64, segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let loads: Vec<_> = segments
            .iter()
            .map(|&(address, bytes, size)| Load::at(address, bytes, size))
            .collect();
        build(Class::Elf64, entry, &loads, &[], true)
    }

    #[test]
    fn loads_segments_at_physical_addresses_and_zeroes_bss() {
        let image = elf(
            0x10_0040,
            &[(0x10_0000, b"code", 4), (0x10_1000, b"da", 16)],
        );
        let mut memory = VecMemory(vec![0xaa; 0x20_0000]);
        let loaded = load(&image, &mut memory, 0x1f_0000).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                entry: 0x10_0040,
                lowest: 0x10_0000,
                highest: 0x10_1010,
                segments: 2
            }
        );
        assert_eq!(&memory.0[0x10_0000..0x10_0004], b"code");
        assert_eq!(&memory.0[0x10_1000..0x10_1002], b"da");
        assert!(memory.0[0x10_1002..0x10_1010].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut memory = VecMemory(vec![0; 0x20_0000]);
        let image = elf(0, &[(0x1f_f000, b"x", 0x2000)]);
        assert_eq!(
            load(&image, &mut memory, 0x1f_0000),
            Err(ImageError::OutsideMemory {
                address: 0x1f_f000,
                size: 0x2000,
                limit: 0x1f_0000
            })
        );
        let wrap = elf(0, &[(u64::MAX - 1, b"x", 4)]);
        assert!(matches!(
            load(&wrap, &mut memory, 0x1f_0000),
            Err(ImageError::OutsideMemory { .. })
        ));
        assert_eq!(
            load(b"\x7fELF", &mut memory, 0x1000),
            Err(ImageError::WrongKind)
        );
        assert_eq!(load(b"MZ", &mut memory, 0x1000), Err(ImageError::NotElf));
        assert_eq!(
            load(&elf(0, &[]), &mut memory, 0x1000),
            Err(ImageError::Empty)
        );
        let mut truncated = elf(0, &[(0x1000, b"abcd", 4)]);
        truncated.truncate(truncated.len() - 2);
        assert_eq!(
            load(&truncated, &mut memory, 0x10_0000),
            Err(ImageError::Truncated)
        );
        let overlapping = elf(0, &[(0x1000, b"ab", 0x100), (0x10f0, b"cd", 2)]);
        assert_eq!(
            load(&overlapping, &mut memory, 0x10_0000),
            Err(ImageError::Segments(ElfError::SegmentsOverlap {
                first: 0,
                second: 1
            }))
        );
        let elf32 = build(Class::Elf32, 0, &[Load::at(0x1000, b"x", 1)], &[], true);
        assert_eq!(
            load(&elf32, &mut memory, 0x10_0000),
            Err(ImageError::WrongKind)
        );
        // Nothing was written by the refused loads.
        assert!(memory.0.iter().all(|&b| b == 0));
    }
}
