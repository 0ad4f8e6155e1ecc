//! The boot image: one file carrying every component into the machine.
//!
//! QEMU's PVH loader takes a single `-initrd` and GRUB a `module2`, so the
//! build tool packs all components into one image and the core unpacks it.
//! Byte layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `MVIMAGE\0` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | entry count `n` (at most [`MAX_ENTRIES`]) |
//! | 16 | 8 | total image length in bytes |
//! | 24 | 8 | reserved, zero |
//! | 32 | 128 × n | entry table ([`EntryHeader`]) |
//! | … | | entry contents, each at a 4 KiB-aligned offset |
//!
//! An entry is a name (1–32 bytes of `[a-z0-9_-]`), a kind, an argument
//! string and the offset and size of its contents. [`Image::parse`] checks
//! the header, every entry's bounds, that names are well-formed and unique,
//! and that contents do not overlap the table or each other; it never
//! panics on any input. Whether an entry's *contents* make sense (an ELF file
//! that loads) is the consumer's business, so that one bad component can be
//! refused while the others start.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `MVIMAGE\0`.
pub const MAGIC: [u8; 8] = *b"MVIMAGE\0";
/// The only format version this code reads and writes.
pub const VERSION: u32 = 1;
/// The most entries an image may hold.
pub const MAX_ENTRIES: usize = 64;
/// Alignment of entry contents in the image.
pub const CONTENT_ALIGN: u64 = 4096;

/// The fixed header at offset 0.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ImageHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub entry_count: u32,
    pub total_size: u64,
    pub reserved: u64,
}

/// One entry in the table that follows the header.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EntryHeader {
    pub name: [u8; 32],
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
    pub args: [u8; 64],
    pub args_len: u32,
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<ImageHeader>() == 32);
const _: () = assert!(core::mem::size_of::<EntryHeader>() == 128);

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EntryKind {
    /// A ring-3 program: an ELF64 executable.
    Component = 1,
    /// The boot spec (see [`crate::spec`]); at most one, named `spec`.
    Spec = 2,
    /// A guest image (an ELF64 with physical load addresses), loaded into
    /// guest memory by a world switcher.
    Guest = 3,
}

impl EntryKind {
    fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Component),
            2 => Some(Self::Spec),
            3 => Some(Self::Guest),
            _ => None,
        }
    }
}

/// Why an image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the header or than the length it claims.
    Truncated { needed: u64, have: u64 },
    /// The magic bytes are wrong: this is not a boot image.
    BadMagic,
    /// Written by a different version of the format.
    UnsupportedVersion(u32),
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries(u32),
    /// Entry `index` has a name that is empty, too long or not `[a-z0-9_-]`.
    BadName { index: usize },
    /// Two entries share a name.
    DuplicateName { index: usize },
    /// Entry `index` has an unknown kind.
    UnknownKind { index: usize, kind: u32 },
    /// Entry `index`'s argument string is too long or not UTF-8.
    BadArgs { index: usize },
    /// Entry `index`'s contents are misaligned or lie outside the image.
    OutOfBounds { index: usize },
    /// Entry `index`'s contents overlap the table or another entry.
    Overlap { index: usize },
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated { needed, have } => {
                write!(f, "image truncated: needs {needed} bytes, has {have}")
            }
            Self::BadMagic => write!(f, "not a microvisor boot image (bad magic)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "image format version {v} (this core reads {VERSION})")
            }
            Self::TooManyEntries(n) => write!(f, "{n} entries (at most {MAX_ENTRIES})"),
            Self::BadName { index } => write!(f, "entry {index}: malformed name"),
            Self::DuplicateName { index } => write!(f, "entry {index}: duplicate name"),
            Self::UnknownKind { index, kind } => write!(f, "entry {index}: unknown kind {kind}"),
            Self::BadArgs { index } => write!(f, "entry {index}: malformed argument string"),
            Self::OutOfBounds { index } => {
                write!(f, "entry {index}: contents misaligned or outside the image")
            }
            Self::Overlap { index } => write!(f, "entry {index}: contents overlap another"),
        }
    }
}

/// A parsed, bounds-checked image borrowing the underlying bytes.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    table: &'a [EntryHeader],
}

/// One entry of a parsed image.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub name: &'a str,
    pub kind: EntryKind,
    pub args: &'a str,
    /// Offset of the contents from the start of the image.
    pub offset: u64,
    pub contents: &'a [u8],
}

/// Which names a check is for: the characters allowed differ by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// What a system names: boot-image entries, components, programs,
    /// queues, notifications, VMs, guest images — `[a-z0-9_-]`.
    Plain,
    /// A name in a boot-spec or start-page record, which also names
    /// capabilities made from two names (`pong.notify`, `hello.vmcs`,
    /// `spinner.sc`) — `[a-z0-9_.-]`.
    Record,
}

/// Checks a name: 1–32 bytes of `[a-z0-9_-]`, and `.` too for a
/// [`NameKind::Record`]. The one name check of the workspace: image
/// entries, `capdl` and the build tool use it with [`NameKind::Plain`],
/// the boot spec and start pages ([`crate::spec::name_of`]) with
/// [`NameKind::Record`].
pub fn is_valid_name(name: &str, kind: NameKind) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || (b == b'.' && kind == NameKind::Record)
        })
}

/// Reads a NUL-padded 32-byte name field: `Some` when it holds a valid name
/// of `kind` ([`is_valid_name`]) followed only by NULs.
pub fn name_in_field(raw: &[u8; 32], kind: NameKind) -> Option<&str> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let (name, padding) = raw.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return None;
    }
    let name = core::str::from_utf8(name).ok()?;
    is_valid_name(name, kind).then_some(name)
}

impl<'a> Image<'a> {
    /// Parses and checks an image. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let have = bytes.len() as u64;
        let (header, rest) =
            ImageHeader::read_from_prefix(bytes).map_err(|_| ImageError::Truncated {
                needed: core::mem::size_of::<ImageHeader>() as u64,
                have,
            })?;
        if header.magic != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if header.version != VERSION {
            return Err(ImageError::UnsupportedVersion(header.version));
        }
        if header.total_size > have {
            return Err(ImageError::Truncated {
                needed: header.total_size,
                have,
            });
        }
        let count = header.entry_count as usize;
        if count > MAX_ENTRIES {
            return Err(ImageError::TooManyEntries(header.entry_count));
        }
        let bytes = &bytes[..header.total_size as usize];
        let table_end = (32 + count * 128) as u64;
        let (table, _) =
            <[EntryHeader]>::ref_from_prefix_with_elems(rest, count).map_err(|_| {
                ImageError::Truncated {
                    needed: table_end,
                    have: header.total_size,
                }
            })?;
        if table_end > header.total_size {
            return Err(ImageError::Truncated {
                needed: table_end,
                have: header.total_size,
            });
        }
        for (index, entry) in table.iter().enumerate() {
            let name =
                name_in_field(&entry.name, NameKind::Plain).ok_or(ImageError::BadName { index })?;
            if table[..index]
                .iter()
                .any(|other| name_in_field(&other.name, NameKind::Plain) == Some(name))
            {
                return Err(ImageError::DuplicateName { index });
            }
            EntryKind::from_u32(entry.kind).ok_or(ImageError::UnknownKind {
                index,
                kind: entry.kind,
            })?;
            if entry.args_len as usize > entry.args.len()
                || core::str::from_utf8(&entry.args[..entry.args_len as usize]).is_err()
            {
                return Err(ImageError::BadArgs { index });
            }
            let end = entry
                .offset
                .checked_add(entry.size)
                .ok_or(ImageError::OutOfBounds { index })?;
            if entry.offset % CONTENT_ALIGN != 0 || end > header.total_size {
                return Err(ImageError::OutOfBounds { index });
            }
            if entry.offset < table_end {
                return Err(ImageError::Overlap { index });
            }
            let overlaps = table[..index].iter().any(|other| {
                entry.size != 0
                    && other.size != 0
                    && entry.offset < other.offset + other.size
                    && other.offset < end
            });
            if overlaps {
                return Err(ImageError::Overlap { index });
            }
        }
        Ok(Self { bytes, table })
    }

    /// How many entries the image holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the image holds no entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The entries, in table order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        let bytes = self.bytes;
        // Every field was validated by `parse`; the fallbacks are unreachable.
        self.table.iter().map(move |entry| Entry {
            name: name_in_field(&entry.name, NameKind::Plain).unwrap_or(""),
            kind: EntryKind::from_u32(entry.kind).unwrap_or(EntryKind::Component),
            args: core::str::from_utf8(&entry.args[..entry.args_len as usize]).unwrap_or(""),
            offset: entry.offset,
            contents: bytes
                .get(entry.offset as usize..(entry.offset + entry.size) as usize)
                .unwrap_or(&[]),
        })
    }
}

/// Builds images (host side).
#[cfg(feature = "alloc")]
#[derive(Default)]
pub struct ImageBuilder {
    entries: alloc::vec::Vec<(
        alloc::string::String,
        EntryKind,
        alloc::string::String,
        alloc::vec::Vec<u8>,
    )>,
}

#[cfg(feature = "alloc")]
impl ImageBuilder {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry. Fails with a message if the name or arguments do not
    /// fit the format, or the name is taken.
    pub fn add(
        &mut self,
        name: &str,
        kind: EntryKind,
        args: &str,
        contents: alloc::vec::Vec<u8>,
    ) -> Result<(), alloc::string::String> {
        use alloc::string::ToString;
        if !is_valid_name(name, NameKind::Plain) {
            return Err(alloc::format!(
                "'{name}' is not a valid component name (1-32 of a-z, 0-9, '-', '_')"
            ));
        }
        if args.len() > 64 {
            return Err(alloc::format!("arguments of '{name}' exceed 64 bytes"));
        }
        if self.entries.iter().any(|(n, ..)| n == name) {
            return Err(alloc::format!("component name '{name}' used twice"));
        }
        if self.entries.len() == MAX_ENTRIES {
            return Err(alloc::format!("more than {MAX_ENTRIES} entries"));
        }
        self.entries
            .push((name.to_string(), kind, args.to_string(), contents));
        Ok(())
    }

    /// Serialises the image.
    pub fn finish(&self) -> alloc::vec::Vec<u8> {
        let align = |v: u64| v.div_ceil(CONTENT_ALIGN) * CONTENT_ALIGN;
        let mut offset = align(32 + 128 * self.entries.len() as u64);
        let mut table = alloc::vec::Vec::new();
        for (name, kind, args, contents) in &self.entries {
            let mut entry = EntryHeader {
                name: [0; 32],
                kind: *kind as u32,
                flags: 0,
                offset,
                size: contents.len() as u64,
                args: [0; 64],
                args_len: args.len() as u32,
                reserved: 0,
            };
            entry.name[..name.len()].copy_from_slice(name.as_bytes());
            entry.args[..args.len()].copy_from_slice(args.as_bytes());
            table.push(entry);
            offset = align(offset + contents.len() as u64);
        }
        let header = ImageHeader {
            magic: MAGIC,
            version: VERSION,
            entry_count: self.entries.len() as u32,
            total_size: offset,
            reserved: 0,
        };
        let mut out = alloc::vec![0u8; offset as usize];
        out[..32].copy_from_slice(header.as_bytes());
        for (i, entry) in table.iter().enumerate() {
            out[32 + i * 128..32 + (i + 1) * 128].copy_from_slice(entry.as_bytes());
            let start = entry.offset as usize;
            out[start..start + entry.size as usize].copy_from_slice(&self.entries[i].3);
        }
        out
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use alloc::vec;

    fn two() -> alloc::vec::Vec<u8> {
        let mut b = ImageBuilder::new();
        b.add("hello", EntryKind::Component, "count=3", vec![1, 2, 3])
            .unwrap();
        b.add("crasher", EntryKind::Component, "", vec![9; 5000])
            .unwrap();
        b.finish()
    }

    #[test]
    fn round_trip() {
        let bytes = two();
        let image = Image::parse(&bytes).unwrap();
        let entries: alloc::vec::Vec<_> = image.entries().collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "hello");
        assert_eq!(entries[0].args, "count=3");
        assert_eq!(entries[0].contents, &[1, 2, 3]);
        assert_eq!(entries[1].name, "crasher");
        assert_eq!(entries[1].contents.len(), 5000);
        assert_eq!(entries[1].offset % CONTENT_ALIGN, 0);
    }

    #[test]
    fn refuses_bad_headers() {
        let bytes = two();
        assert!(matches!(
            Image::parse(&bytes[..10]),
            Err(ImageError::Truncated { .. })
        ));
        assert!(matches!(
            Image::parse(&bytes[..bytes.len() - 1]),
            Err(ImageError::Truncated { .. })
        ));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Image::parse(&bad).unwrap_err(), ImageError::BadMagic);
        let mut bad = bytes.clone();
        bad[8] = 7;
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::UnsupportedVersion(7)
        );
        let mut bad = bytes.clone();
        bad[12] = 200;
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::TooManyEntries(200)
        );
    }

    #[test]
    fn refuses_bad_entries() {
        let bytes = two();
        let entry1 = 32 + 128;
        let mut bad = bytes.clone();
        bad[entry1..entry1 + 5].copy_from_slice(b"hello");
        bad[entry1 + 5..entry1 + 7].copy_from_slice(&[0, 0]);
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::DuplicateName { index: 1 }
        );
        let mut bad = bytes.clone();
        bad[entry1] = b'A';
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::BadName { index: 1 }
        );
        let mut bad = bytes.clone();
        bad[entry1 + 32] = 9;
        assert!(matches!(
            Image::parse(&bad),
            Err(ImageError::UnknownKind { index: 1, kind: 9 })
        ));
        // Point entry 1 at entry 0's contents.
        let mut bad = bytes.clone();
        let off0 = bad[32 + 40..32 + 48].to_vec();
        bad[entry1 + 40..entry1 + 48].copy_from_slice(&off0);
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::Overlap { index: 1 }
        );
        // Size running past the end.
        let mut bad = bytes.clone();
        bad[entry1 + 48..entry1 + 56].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::OutOfBounds { index: 1 }
        );
        // Contents inside the table.
        let mut bad = bytes.clone();
        bad[entry1 + 40..entry1 + 48].copy_from_slice(&0u64.to_le_bytes());
        assert!(Image::parse(&bad).is_err());
        let mut bad = bytes;
        bad[entry1 + 120] = 65;
        assert_eq!(
            Image::parse(&bad).unwrap_err(),
            ImageError::BadArgs { index: 1 }
        );
    }

    #[test]
    fn builder_refuses_bad_names() {
        let mut b = ImageBuilder::new();
        assert!(b.add("Hello", EntryKind::Component, "", vec![]).is_err());
        assert!(b.add("", EntryKind::Component, "", vec![]).is_err());
        assert!(
            b.add(&"x".repeat(33), EntryKind::Component, "", vec![])
                .is_err()
        );
        // A NUL would end the name in the table: "a\0" is not "a".
        assert!(b.add("a\0", EntryKind::Component, "", vec![]).is_err());
        b.add("a", EntryKind::Component, "", vec![]).unwrap();
        assert!(b.add("a", EntryKind::Component, "", vec![]).is_err());
        assert!(is_valid_name("vm-hello_2", NameKind::Plain));
        assert!(!is_valid_name("p\u{43e}ng", NameKind::Plain));
        // Capability names join two names with a dot: records only.
        assert!(!is_valid_name("pong.notify", NameKind::Plain));
        assert!(is_valid_name("pong.notify", NameKind::Record));
        for bad in ["", "Pong", "a/b", &"x".repeat(33)] {
            assert!(!is_valid_name(bad, NameKind::Record), "{bad:?}");
        }
        let mut field = [0u8; 32];
        field[..11].copy_from_slice(b"pong.notify");
        assert_eq!(name_in_field(&field, NameKind::Record), Some("pong.notify"));
        assert_eq!(name_in_field(&field, NameKind::Plain), None);
        field[20] = b'x';
        assert_eq!(name_in_field(&field, NameKind::Record), None);
    }

    #[test]
    fn never_panics_on_noise() {
        // A cheap deterministic fuzz: every single-byte corruption of a valid
        // image and every truncation parses or fails cleanly.
        let bytes = two();
        for len in 0..bytes.len().min(600) {
            let _ = Image::parse(&bytes[..len]);
        }
        for pos in 0..(32 + 2 * 128) {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[pos] = value;
                if let Ok(image) = Image::parse(&bad) {
                    for entry in image.entries() {
                        assert!(entry.contents.len() as u64 <= bad.len() as u64);
                    }
                }
            }
        }
    }
}
