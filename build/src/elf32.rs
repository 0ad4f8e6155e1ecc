//! ELF32 copies of test VMs that carry a multiboot header, as Xen's
//! `mkelf32` makes of its 64-bit image: multiboot loaders (GRUB's,
//! QEMU's, the world switcher's for `kind = "multiboot"`) read ELF32
//! executables, and our test VMs are linked as ELF64 (the only bare-metal
//! target stable Rust has is `x86_64-unknown-none`, and a linker cannot
//! put 64-bit objects into a 32-bit file).
//!
//! [`from_elf64`] keeps every loadable segment (each must lie below
//! 4 GiB, where ELF32 can name it), enters at the 32-bit multiboot entry
//! (the symbol [`ENTRY_SYMBOL`], which the guest runtime defines) instead
//! of the 64-bit `e_entry`, and places each segment at a file offset
//! congruent to its address modulo 4 KiB, the first at 4 KiB, so the
//! multiboot header (in the first segment's first bytes) lies within the
//! 8 KiB a loader searches. The result is checked: it must parse as ELF32
//! with the same segments, and its multiboot header must be found and
//! carry no address fields, so that loaders take the ELF path.

use anyhow::{Context, Result, bail};
use vm_platform::elf::{Class, Elf};

/// The 32-bit entry the guest runtime gives multiboot loaders.
pub const ENTRY_SYMBOL: &str = "guest_start_multiboot";
/// The symbol a test VM's multiboot header carries: only images with it
/// get an ELF32 copy.
pub const HEADER_SYMBOL: &str = "guest_multiboot_header";

const ELF32_HEADER: usize = 52;
const ELF32_PROGRAM_HEADER: usize = 32;
const PAGE: u64 = 0x1000;
const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const EM_386: u16 = 3;
const ET_EXEC: u16 = 2;
/// Program header flags: read, write, execute, as the ELF64 had them.
const PF_MASK: u32 = 0x7;

/// The value of symbol `name` in an ELF64 file's `.symtab`, if it has one.
pub fn symbol(image: &[u8], name: &str) -> Result<Option<u64>> {
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(image.get(at..at + 8)?.try_into().ok()?))
    };
    let truncated = || anyhow::anyhow!("the ELF64 file's section headers are cut short");
    if image.get(..5) != Some(b"\x7fELF\x02") {
        bail!("not an ELF64 file");
    }
    let sections = usize::try_from(u64_at(40).ok_or_else(truncated)?)?;
    let size = usize::from(u16_at(58).ok_or_else(truncated)?);
    let count = usize::from(u16_at(60).ok_or_else(truncated)?);
    if count > 0 && size < 64 {
        bail!("the ELF64 file's section headers are {size} bytes, fewer than 64");
    }
    let section = |index: usize| -> Option<(u32, usize, usize, u32, usize)> {
        let at = sections.checked_add(index.checked_mul(size)?)?;
        Some((
            u32_at(at + 4)?,
            usize::try_from(u64_at(at + 24)?).ok()?,
            usize::try_from(u64_at(at + 32)?).ok()?,
            u32_at(at + 40)?,
            usize::try_from(u64_at(at + 56)?).ok()?,
        ))
    };
    for index in 0..count {
        let (kind, offset, bytes, link, entry_size) = section(index).ok_or_else(truncated)?;
        if kind != SHT_SYMTAB {
            continue;
        }
        if entry_size < 24 {
            bail!("the symbol table's entries are {entry_size} bytes, fewer than 24");
        }
        let (_, strings, string_bytes, _, _) =
            section(usize::try_from(link)?).ok_or_else(truncated)?;
        let names = image
            .get(strings..strings.saturating_add(string_bytes))
            .context("the string table lies outside the file")?;
        let symbols = image
            .get(offset..offset.saturating_add(bytes))
            .context("the symbol table lies outside the file")?;
        for entry in symbols.chunks_exact(entry_size) {
            let start = u32::from_le_bytes(entry[..4].try_into()?) as usize;
            let Some(rest) = names.get(start..) else {
                bail!("a symbol's name lies outside the string table");
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..end] == name.as_bytes() {
                return Ok(Some(u64::from_le_bytes(entry[8..16].try_into()?)));
            }
        }
    }
    Ok(None)
}

/// Program-header flags of segment `index` in an ELF64 file.
fn flags64(image: &[u8], index: usize) -> u32 {
    let read = |at: usize, bytes: usize| image.get(at..at + bytes);
    let program = read(32, 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    let size = read(54, 2).map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    read(program + index * size + 4, 4)
        .map_or(PF_MASK, |b| u32::from_le_bytes(b.try_into().unwrap()))
        & PF_MASK
}

/// The ELF32 copy of an ELF64 test VM (see the module documentation).
pub fn from_elf64(image: &[u8]) -> Result<Vec<u8>> {
    let elf = Elf::parse(image).map_err(|error| anyhow::anyhow!("{error}"))?;
    if elf.class != Class::Elf64 {
        bail!("already an ELF32 file");
    }
    let segments = elf.segments().map_err(|error| anyhow::anyhow!("{error}"))?;
    let entry = symbol(image, ENTRY_SYMBOL)?
        .with_context(|| format!("no symbol {ENTRY_SYMBOL}, the 32-bit multiboot entry"))?;
    let fits = |value: u64| u32::try_from(value).is_ok();
    if !fits(entry) {
        bail!("the entry {entry:#x} lies above 4 GiB");
    }
    let list = segments.as_slice();
    let mut out = vec![0u8; ELF32_HEADER + ELF32_PROGRAM_HEADER * list.len()];
    out[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    out[18..20].copy_from_slice(&EM_386.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
    out[28..32].copy_from_slice(&(ELF32_HEADER as u32).to_le_bytes());
    out[40..42].copy_from_slice(&(ELF32_HEADER as u16).to_le_bytes());
    out[42..44].copy_from_slice(&(ELF32_PROGRAM_HEADER as u16).to_le_bytes());
    out[44..46].copy_from_slice(&(list.len() as u16).to_le_bytes());
    out[46..48].copy_from_slice(&40u16.to_le_bytes());
    for (index, segment) in list.iter().enumerate() {
        let end = segment
            .virtual_address
            .checked_add(segment.memory_size)
            .zip(segment.physical_address.checked_add(segment.memory_size));
        if !end.is_some_and(|(virtual_end, physical_end)| {
            virtual_end <= 1 << 32 && physical_end <= 1 << 32
        }) {
            bail!(
                "segment {} ({:#x}, {} bytes) reaches above 4 GiB, which ELF32 cannot name",
                segment.index,
                segment.physical_address,
                segment.memory_size
            );
        }
        // The first segment at 4 KiB, each at an offset congruent to its
        // address.
        let mut offset = (out.len() as u64).max(PAGE);
        offset += (segment.virtual_address.wrapping_sub(offset)) % PAGE;
        out.resize(offset as usize, 0);
        let start = segment.offset as usize;
        out.extend_from_slice(&image[start..start + segment.file_size as usize]);
        let values = [
            PT_LOAD,
            offset as u32,
            segment.virtual_address as u32,
            segment.physical_address as u32,
            segment.file_size as u32,
            segment.memory_size as u32,
            flags64(image, segment.index),
            PAGE as u32,
        ];
        let at = ELF32_HEADER + ELF32_PROGRAM_HEADER * index;
        for (field, value) in values.iter().enumerate() {
            out[at + 4 * field..at + 4 * field + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
    check(&out, list)?;
    Ok(out)
}

/// The copy parses as ELF32 with the original's segments and bytes, and
/// its multiboot header sends loaders down the ELF path.
fn check(out: &[u8], original: &[vm_platform::elf::Segment]) -> Result<()> {
    let elf = Elf::parse(out).map_err(|error| anyhow::anyhow!("the ELF32 copy: {error}"))?;
    let segments = elf
        .segments()
        .map_err(|error| anyhow::anyhow!("the ELF32 copy: {error}"))?;
    let shape = |s: &vm_platform::elf::Segment| {
        (
            s.virtual_address,
            s.physical_address,
            s.file_size,
            s.memory_size,
        )
    };
    if elf.class != Class::Elf32
        || !segments
            .as_slice()
            .iter()
            .map(shape)
            .eq(original.iter().map(shape))
    {
        bail!("the ELF32 copy does not hold the original's segments");
    }
    let header = vm_platform::multiboot::Header::find(out)
        .map_err(|error| anyhow::anyhow!("the ELF32 copy: {error}"))?;
    if header.addresses.is_some() {
        bail!(
            "the multiboot header has address fields (flag 16), so loaders would not read the \
             ELF32 file; clear the flag"
        );
    }
    Ok(())
}

/// Writes `<binary>.elf32` next to each test VM binary that carries a
/// multiboot header ([`HEADER_SYMBOL`]); returns them by image name.
pub fn write_copies(
    guests: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> Result<std::collections::BTreeMap<String, std::path::PathBuf>> {
    let mut copies = std::collections::BTreeMap::new();
    for (name, path) in guests {
        let image =
            std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
        if symbol(&image, HEADER_SYMBOL)?.is_none() {
            continue;
        }
        let copy = from_elf64(&image)
            .with_context(|| format!("making an ELF32 copy of {}", path.display()))?;
        let target = path.with_extension("elf32");
        std::fs::write(&target, copy)
            .with_context(|| format!("could not write {}", target.display()))?;
        copies.insert(name.clone(), target);
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 with two segments, a multiboot header (flags `flags`) at
    /// the first segment's start and a symbol table naming the entry.
    fn elf64(flags: u32, high: bool) -> Vec<u8> {
        let mut text = Vec::new();
        for word in [
            0x1bad_b002u32,
            flags,
            0u32.wrapping_sub(0x1bad_b002 + flags),
        ] {
            text.extend_from_slice(&word.to_le_bytes());
        }
        text.resize(0x40, 0x90);
        let data = b"data".to_vec();
        let strings = b"\0guest_start_multiboot\0other\0".to_vec();
        let mut symbols = vec![0u8; 24];
        for (name, value) in [(1u32, 0x10_0010u64), (23, 0x10_0020)] {
            let mut entry = vec![0u8; 24];
            entry[..4].copy_from_slice(&name.to_le_bytes());
            entry[8..16].copy_from_slice(&value.to_le_bytes());
            symbols.extend(entry);
        }
        let phoff = 64;
        let mut out = vec![0u8; phoff + 2 * 56];
        let text_at = out.len();
        out.extend(&text);
        let data_at = out.len();
        out.extend(&data);
        let strings_at = out.len();
        out.extend(&strings);
        let symbols_at = out.len();
        out.extend(&symbols);
        let shoff = out.len();
        out.resize(shoff + 3 * 64, 0);
        out[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&0x10_0040u64.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&2u16.to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&3u16.to_le_bytes());
        let data_address = if high { 0xffff_f000 } else { 0x10_1000 };
        for (index, (offset, address, size, memory, flags)) in [
            (text_at, 0x10_0000u64, text.len(), text.len() as u64, 5u32),
            (data_at, data_address, data.len(), 0x2000, 6),
        ]
        .into_iter()
        .enumerate()
        {
            let at = phoff + 56 * index;
            out[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
            out[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&(offset as u64).to_le_bytes());
            out[at + 16..at + 24].copy_from_slice(&address.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&address.to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&(size as u64).to_le_bytes());
            out[at + 40..at + 48].copy_from_slice(&memory.to_le_bytes());
        }
        // Sections: null, .strtab, .symtab (linked to 1).
        for (index, (kind, offset, size, link, entry)) in [
            (3u32, strings_at, strings.len(), 0u32, 0u64),
            (2, symbols_at, symbols.len(), 1, 24),
        ]
        .into_iter()
        .enumerate()
        {
            let at = shoff + 64 * (index + 1);
            out[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&(offset as u64).to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&(size as u64).to_le_bytes());
            out[at + 40..at + 44].copy_from_slice(&link.to_le_bytes());
            out[at + 56..at + 64].copy_from_slice(&entry.to_le_bytes());
        }
        out
    }

    #[test]
    fn copies_segments_and_enters_at_the_multiboot_entry() {
        let image = elf64(0x3, false);
        assert_eq!(symbol(&image, "other").unwrap(), Some(0x10_0020));
        assert_eq!(symbol(&image, "missing").unwrap(), None);
        let copy = from_elf64(&image).unwrap();
        let elf = Elf::parse(&copy).unwrap();
        assert_eq!(elf.class, Class::Elf32);
        assert_eq!(elf.entry, 0x10_0010, "the 32-bit entry, not e_entry");
        let segments = elf.segments().unwrap();
        let list = segments.as_slice();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].offset, 0x1000, "the first segment at 4 KiB");
        assert_eq!(list[1].offset % 0x1000, 0x10_1000 % 0x1000);
        assert_eq!((list[1].file_size, list[1].memory_size), (4, 0x2000));
        assert_eq!(&copy[list[1].offset as usize..][..4], b"data");
        assert_eq!(flags64(&image, 1), 6);
        // The flags survive (text read+execute, data read+write).
        let flags = |index: usize| {
            u32::from_le_bytes(copy[52 + 32 * index + 24..][..4].try_into().unwrap())
        };
        assert_eq!((flags(0), flags(1)), (5, 6));
        // The world switcher's multiboot loader takes the ELF path.
        let header = vm_platform::multiboot::Header::find(&copy).unwrap();
        assert_eq!(header.addresses, None);
    }

    #[test]
    fn refuses_what_elf32_or_loaders_cannot_take() {
        let kludge = elf64(0x1_0003, false);
        let error = format!("{:#}", from_elf64(&kludge).unwrap_err());
        assert!(error.contains("address fields"), "{error}");
        let high = elf64(0x3, true);
        let error = format!("{:#}", from_elf64(&high).unwrap_err());
        assert!(error.contains("above 4 GiB"), "{error}");
        let mut nameless = elf64(0x3, false);
        let at = nameless
            .windows(21)
            .position(|w| w == b"guest_start_multiboot")
            .unwrap();
        nameless[at] = b'x';
        let error = format!("{:#}", from_elf64(&nameless).unwrap_err());
        assert!(error.contains("no symbol guest_start_multiboot"), "{error}");
        let mut cut = elf64(0x3, false);
        cut.truncate(cut.len() - 70);
        assert!(symbol(&cut, "other").is_err(), "section headers cut short");
        assert!(from_elf64(b"\x7fELF\x01\x01\x01").is_err());
        assert!(from_elf64(&from_elf64(&elf64(0x3, false)).unwrap()).is_err());
    }
}
