//! Guest bundles: a guest someone else wrote — a kernel, an optional
//! initial RAM disk and a command line — packed as one boot-image entry.
//!
//! The core gives a world switcher one read-only copy of its VM's boot
//! image and knows nothing of what is in it; a test VM's image is an ELF
//! file, an unmodified guest's is a bundle: the header below, then the
//! three parts, each at an 8-byte aligned offset. The build tool writes
//! bundles ([`write`], with the `std` feature) from the system file's
//! `kernel`, `initrd` and `cmdline`; the world switcher reads them with
//! [`Bundle::parse`], which checks every offset and length against the
//! bytes it has and refuses anything else with the reason. Which loader
//! boots the kernel (Linux boot protocol, PVH, multiboot) follows from
//! the kernel's own headers and the bundle's [`Kind`].

/// The first eight bytes of a bundle.
pub const MAGIC: [u8; 8] = *b"MVGUEST\0";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_SIZE: usize = 64;
/// The longest command line a bundle carries (Linux's limit on x86 is
/// 2048 bytes including the NUL).
pub const MAX_COMMAND_LINE: usize = 2047;

/// What kind of kernel a bundle holds, as the system file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// A Linux kernel: a bzImage (boot protocol) or an ELF `vmlinux` with
    /// a PVH note.
    Linux = 1,
    /// A Multiboot (v1) kernel, ELF32 or ELF64.
    Multiboot = 2,
}

impl Kind {
    /// The kind stored as `value`, if any.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Linux),
            2 => Some(Self::Multiboot),
            _ => None,
        }
    }

    /// The name the system file uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Multiboot => "multiboot",
        }
    }
}

/// A parsed bundle, borrowing the image's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bundle<'a> {
    pub kind: Kind,
    pub kernel: &'a [u8],
    /// Empty when there is none.
    pub initrd: &'a [u8],
    pub command_line: &'a str,
}

/// Why a bundle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than its header.
    Truncated,
    /// The version is not [`VERSION`].
    Version(u32),
    /// The kind is not a [`Kind`].
    UnknownKind(u32),
    /// A part lies outside the bundle.
    OutOfBounds(&'static str),
    /// The kernel is empty.
    NoKernel,
    /// The command line is too long or not UTF-8.
    BadCommandLine,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "the guest bundle is shorter than its header"),
            Self::Version(version) => write!(
                f,
                "the guest bundle has format version {version}; this world switcher reads version {VERSION}"
            ),
            Self::UnknownKind(kind) => {
                write!(f, "the guest bundle names an unknown kernel kind {kind}")
            }
            Self::OutOfBounds(part) => write!(f, "the guest bundle's {part} lies outside it"),
            Self::NoKernel => write!(f, "the guest bundle holds no kernel"),
            Self::BadCommandLine => write!(
                f,
                "the guest bundle's command line is not UTF-8 or longer than {MAX_COMMAND_LINE} bytes"
            ),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Whether `image` is a bundle (rather than, say, an ELF test VM).
pub fn is_bundle(image: &[u8]) -> bool {
    image.starts_with(&MAGIC)
}

impl<'a> Bundle<'a> {
    /// Reads a bundle, checking every part lies inside `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        if bytes.len() < HEADER_SIZE || !is_bundle(bytes) {
            return Err(BundleError::Truncated);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let kind = u32_at(bytes, 12);
        let kind = Kind::from_u32(kind).ok_or(BundleError::UnknownKind(kind))?;
        let part = |at: usize, name: &'static str| -> Result<&'a [u8], BundleError> {
            let (offset, length) = (u64_at(bytes, at), u64_at(bytes, at + 8));
            let end = offset
                .checked_add(length)
                .ok_or(BundleError::OutOfBounds(name))?;
            if offset < HEADER_SIZE as u64 || end > bytes.len() as u64 {
                return Err(BundleError::OutOfBounds(name));
            }
            Ok(&bytes[offset as usize..end as usize])
        };
        let kernel = part(16, "kernel")?;
        let initrd = part(32, "initrd")?;
        let command_line = part(48, "command line")?;
        if kernel.is_empty() {
            return Err(BundleError::NoKernel);
        }
        if command_line.len() > MAX_COMMAND_LINE {
            return Err(BundleError::BadCommandLine);
        }
        let command_line =
            core::str::from_utf8(command_line).map_err(|_| BundleError::BadCommandLine)?;
        Ok(Self {
            kind,
            kernel,
            initrd,
            command_line,
        })
    }
}

/// Writes a bundle (the build tool's side).
#[cfg(any(test, feature = "std"))]
pub fn write(kind: Kind, kernel: &[u8], initrd: &[u8], command_line: &str) -> std::vec::Vec<u8> {
    let mut out = std::vec![0u8; HEADER_SIZE];
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    for (index, part) in [kernel, initrd, command_line.as_bytes()].iter().enumerate() {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let at = 16 + index * 16;
        let offset = out.len() as u64;
        out[at..at + 8].copy_from_slice(&offset.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bundles_round_trip() {
        let bytes = write(Kind::Linux, b"kernel!", b"initrd", "console=ttyS0");
        assert!(is_bundle(&bytes));
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.kind, Kind::Linux);
        assert_eq!(bundle.kernel, b"kernel!");
        assert_eq!(bundle.initrd, b"initrd");
        assert_eq!(bundle.command_line, "console=ttyS0");
        let bytes = write(Kind::Multiboot, b"k", b"", "");
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(
            (bundle.kind, bundle.initrd, bundle.command_line),
            (Kind::Multiboot, &b""[..], "")
        );
        assert!(!is_bundle(b"\x7fELF"));
    }

    #[test]
    fn damaged_bundles_are_refused_with_the_reason() {
        let good = write(Kind::Linux, b"kernel", b"initrd", "x");
        for length in 0..good.len() {
            assert!(
                Bundle::parse(&good[..length]).is_err(),
                "truncated to {length}"
            );
        }
        let mut bad = good.clone();
        bad[8] = 2;
        assert_eq!(Bundle::parse(&bad), Err(BundleError::Version(2)));
        let mut bad = good.clone();
        bad[12] = 9;
        assert_eq!(Bundle::parse(&bad), Err(BundleError::UnknownKind(9)));
        let mut bad = good.clone();
        bad[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Bundle::parse(&bad), Err(BundleError::OutOfBounds("initrd")));
        let mut bad = good.clone();
        bad[16..24].copy_from_slice(&8u64.to_le_bytes());
        assert_eq!(
            Bundle::parse(&bad),
            Err(BundleError::OutOfBounds("kernel")),
            "inside the header"
        );
        let mut bad = good.clone();
        bad[24..32].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Bundle::parse(&bad), Err(BundleError::NoKernel));
        let bad = write(Kind::Linux, b"k", b"", "\u{e9}");
        let mut bad = bad.clone();
        let at = bad.len() - 1;
        bad[at] = 0xff;
        assert_eq!(Bundle::parse(&bad), Err(BundleError::BadCommandLine));
        let long = "x".repeat(MAX_COMMAND_LINE + 1);
        assert_eq!(
            Bundle::parse(&write(Kind::Linux, b"k", b"", &long)),
            Err(BundleError::BadCommandLine)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&MAGIC);
            }
            let _ = Bundle::parse(&bytes);
        }
    }
}
