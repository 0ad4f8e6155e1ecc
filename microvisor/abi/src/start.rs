//! The start-information page.
//!
//! At entry a component finds, at [`crate::START_INFO_ADDRESS`] (also passed
//! in `rdi`), one read-only page that tells it who it is: its name and the
//! argument string its system description gave it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `b"MVSTART\0"` as a little-endian word.
pub const START_MAGIC: u64 = u64::from_le_bytes(*b"MVSTART\0");

/// The layout of the start-information page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_MAGIC`].
    pub magic: u64,
    /// Index of this component in the system (boot order).
    pub component_index: u32,
    /// Bytes used in `name`.
    pub name_len: u32,
    /// The component's name (UTF-8, not NUL-terminated).
    pub name: [u8; 32],
    /// Bytes used in `args`.
    pub args_len: u32,
    pub _reserved: u32,
    /// The component's argument string (UTF-8).
    pub args: [u8; 64],
}

const _: () = assert!(core::mem::size_of::<StartInfo>() == 120);

impl StartInfo {
    /// The name, or `""` if the page holds invalid UTF-8 or lengths.
    pub fn name(&self) -> &str {
        bounded_str(&self.name, self.name_len)
    }

    /// The argument string, or `""` if invalid.
    pub fn args(&self) -> &str {
        bounded_str(&self.args, self.args_len)
    }
}

fn bounded_str(bytes: &[u8], len: u32) -> &str {
    bytes
        .get(..len as usize)
        .and_then(|b| core::str::from_utf8(b).ok())
        .unwrap_or("")
}
