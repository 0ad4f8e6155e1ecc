//! Guest images: ELF64 executables whose program headers give physical
//! load addresses (`p_paddr`), loaded into guest memory as a boot loader
//! would. Nothing in the image is trusted: every offset, size and address
//! is checked, and an image that does not fit its VM is refused with the
//! reason.

use crate::Memory;

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
        }
    }
}

const PT_LOAD: u32 = 1;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Loads `image` into `memory`, below `limit` (the world switcher keeps the
/// memory above for its own set-up). Memory not covered by a segment is
/// left as it is (the caller clears it first).
pub fn load(image: &[u8], memory: &mut impl Memory, limit: u64) -> Result<Loaded, ImageError> {
    if image.get(..4) != Some(b"\x7fELF") {
        return Err(ImageError::NotElf);
    }
    // ELFCLASS64, little-endian, version 1; ET_EXEC; EM_X86_64.
    if image.get(4..7) != Some(&[2, 1, 1])
        || u16_at(image, 16) != Some(2)
        || u16_at(image, 18) != Some(62)
    {
        return Err(ImageError::WrongKind);
    }
    let truncated = ImageError::Truncated;
    let entry = u64_at(image, 24).ok_or(truncated)?;
    let phoff = u64_at(image, 32).ok_or(truncated)? as usize;
    let phentsize = usize::from(u16_at(image, 54).ok_or(truncated)?);
    let phnum = usize::from(u16_at(image, 56).ok_or(truncated)?);
    if phentsize < 56 {
        return Err(truncated);
    }
    let limit = limit.min(memory.size());
    let mut loaded = Loaded {
        entry,
        lowest: u64::MAX,
        highest: 0,
        segments: 0,
    };
    // Check every segment before writing any.
    for pass in 0..2 {
        for index in 0..phnum {
            let header = phoff
                .checked_add(index.checked_mul(phentsize).ok_or(truncated)?)
                .ok_or(truncated)?;
            if u32_at(image, header).ok_or(truncated)? != PT_LOAD {
                continue;
            }
            let offset = u64_at(image, header + 8).ok_or(truncated)?;
            let address = u64_at(image, header + 24).ok_or(truncated)?;
            let file_size = u64_at(image, header + 32).ok_or(truncated)?;
            let memory_size = u64_at(image, header + 40).ok_or(truncated)?;
            if memory_size == 0 {
                continue;
            }
            let file_end = offset.checked_add(file_size).ok_or(truncated)?;
            if file_size > memory_size || file_end > image.len() as u64 {
                return Err(truncated);
            }
            let fits = address
                .checked_add(memory_size)
                .is_some_and(|end| end <= limit);
            if !fits {
                return Err(ImageError::OutsideMemory {
                    address,
                    size: memory_size,
                    limit,
                });
            }
            if pass == 0 {
                loaded.lowest = loaded.lowest.min(address);
                loaded.highest = loaded.highest.max(address + memory_size);
                loaded.segments += 1;
                continue;
            }
            let bytes = &image[offset as usize..file_end as usize];
            let written = memory.write(address, bytes)
                && memory.fill(address + file_size, memory_size - file_size, 0);
            if !written {
                return Err(ImageError::OutsideMemory {
                    address,
                    size: memory_size,
                    limit,
                });
            }
        }
        if loaded.segments == 0 {
            return Err(ImageError::Empty);
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;

    /// A minimal ELF with the given (paddr, file bytes, memsz) segments.
    pub fn elf(entry: u64, segments: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let mut out = vec![0u8; 64 + 56 * segments.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4..7].copy_from_slice(&[2, 1, 1]);
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (address, bytes, memsz)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(bytes);
            let h = 64 + 56 * i;
            out[h..h + 4].copy_from_slice(&1u32.to_le_bytes());
            out[h + 8..h + 16].copy_from_slice(&offset.to_le_bytes());
            out[h + 16..h + 24].copy_from_slice(&address.to_le_bytes());
            out[h + 24..h + 32].copy_from_slice(&address.to_le_bytes());
            out[h + 32..h + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            out[h + 40..h + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        out
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
        // Nothing was written by the refused loads.
        assert!(memory.0.iter().all(|&b| b == 0));
    }
}
