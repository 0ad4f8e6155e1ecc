//! Multiboot (v1) for test VMs: a test VM that links the
//! `guest-multiboot` crate carries a header with address fields (so
//! loaders need not read its ELF, which is 64-bit: QEMU and our world
//! switcher both load it as a flat image), entering at
//! `guest_start_multiboot`; [`info`] reads what the loader passed.

use core::sync::atomic::{AtomicU32, Ordering};

/// The magic a multiboot loader leaves in EAX.
pub const LOADER_MAGIC: u32 = 0x2bad_b002;

unsafe extern "C" {
    static guest_multiboot_magic: AtomicU32;
    static guest_multiboot_info: AtomicU32;
}

/// What the loader's information structure says (the parts tests check).
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub flags: u32,
    /// KiB of memory below 1 MiB and above it (flag bit 0).
    pub memory_lower: u32,
    pub memory_upper: u32,
    /// The command line's bytes (flag bit 2), at most 255 of them.
    pub command_line: [u8; 256],
    pub command_line_length: usize,
}

impl Info {
    /// The command line as text ("" when not UTF-8).
    pub fn command_line(&self) -> &str {
        core::str::from_utf8(&self.command_line[..self.command_line_length]).unwrap_or("")
    }
}

/// The information structure, when the image was entered through
/// multiboot with the loader's magic.
pub fn info() -> Option<Info> {
    // SAFETY: both words are written once by the 32-bit entry code, before
    // any Rust runs, and only read afterwards.
    let (magic, address) = unsafe {
        (
            guest_multiboot_magic.load(Ordering::SeqCst),
            guest_multiboot_info.load(Ordering::SeqCst),
        )
    };
    if magic != LOADER_MAGIC || address == 0 {
        return None;
    }
    let read = |offset: u32| -> u32 {
        // SAFETY: the loader put the structure in guest RAM below 4 GiB,
        // which the boot tables identity-map; reads of it have no effect.
        unsafe { ((u64::from(address) + u64::from(offset)) as *const u32).read_volatile() }
    };
    let mut info = Info {
        flags: read(0),
        memory_lower: read(4),
        memory_upper: read(8),
        command_line: [0; 256],
        command_line_length: 0,
    };
    if info.flags & (1 << 2) != 0 {
        let line = u64::from(read(16));
        while info.command_line_length < 255 {
            // SAFETY: as above; the loader ends the string with a NUL.
            let byte =
                unsafe { ((line + info.command_line_length as u64) as *const u8).read_volatile() };
            if byte == 0 {
                break;
            }
            info.command_line[info.command_line_length] = byte;
            info.command_line_length += 1;
        }
    }
    Some(info)
}
