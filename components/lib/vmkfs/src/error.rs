//! Errors of the store, of mount and of mkfs, in the language of disks and files.
//!
//! Purpose: every refusal names what is wrong (which file, which device, which
//! page, which limit) so a person reading a tool's output or a component's log
//! can act on it. Nothing in this crate panics on bad input; it returns one of
//! these.
//!
//! Callers: everything public in the crate returns them; the tooling prints
//! them with `Display`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::check::Problem;
use crate::device::DeviceError;
use crate::format::{LayoutError, PageFault};
use crate::journal::JournalFault;

/// What ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    FileTable { slots: u32 },
    DataBlocks { needed: u64, free: u64 },
    PointerBlocks { needed: u64, free: u64 },
}

impl fmt::Display for Resource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileTable { slots } => {
                write!(formatter, "all {slots} file-table slots are in use")
            }
            Self::DataBlocks { needed, free } => {
                write!(formatter, "{needed} data blocks needed, {free} free")
            }
            Self::PointerBlocks { needed, free } => {
                write!(formatter, "{needed} pointer blocks needed, {free} free")
            }
        }
    }
}

/// Why a file operation was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    NotFound {
        name: String,
    },
    AlreadyExists {
        name: String,
    },
    InvalidName {
        name: String,
    },
    LengthUnaligned {
        length: u64,
    },
    TooLarge {
        length: u64,
        maximum: u64,
    },
    NoSpace(Resource),
    /// The file is open and the operation needs it closed (or not open for writing).
    Busy {
        name: String,
    },
    NotRedoLog {
        name: String,
    },
    /// The file is the base of one or more redo logs and is frozen until
    /// every one of them is committed or discarded. `redo_log` names the
    /// first of them by name.
    HasRedoLog {
        name: String,
        redo_log: String,
    },
    /// The redo log `redo_log` cannot be committed: its parent `base` has
    /// other redo logs over it (`other` is the first of them by name), and
    /// merging would change what they read.
    SharedBase {
        redo_log: String,
        base: String,
        other: String,
    },
    /// A disk cannot be resized through a redo log, nor a redo log on its own.
    RedoLogLength {
        name: String,
    },
    /// Writing through a read-only handle.
    ReadOnlyHandle {
        name: String,
    },
    /// The handle was closed, or never issued by this store.
    StaleHandle,
    Unaligned {
        offset: u64,
        length: u64,
    },
    OutOfRange {
        offset: u64,
        length: u64,
        file_length: u64,
    },
    Device {
        device: u32,
        error: DeviceError,
    },
    /// A metadata write failed earlier; the store refuses further work until remounted.
    Failed,
    /// The store was mounted read-only ([`crate::Store::mount_read_only`]).
    ReadOnly,
    /// More dirty metadata than the journal holds (a bug: transactions are bounded by design).
    TransactionTooLarge {
        pages: usize,
        capacity: u32,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name } => write!(formatter, "no file named '{name}'"),
            Self::AlreadyExists { name } => {
                write!(formatter, "a file named '{name}' already exists")
            }
            Self::InvalidName { name } => write!(
                formatter,
                "'{name}' is not a valid file name (1 to {} bytes, no '/', no control characters)",
                crate::format::NAME_CAPACITY
            ),
            Self::LengthUnaligned { length } => write!(
                formatter,
                "length {length} is not a whole number of {}-byte sectors",
                crate::device::SECTOR_SIZE
            ),
            Self::TooLarge { length, maximum } => {
                write!(
                    formatter,
                    "length {length} exceeds the largest file this file system can hold ({maximum} bytes)"
                )
            }
            Self::NoSpace(resource) => write!(formatter, "no space: {resource}"),
            Self::Busy { name } => write!(formatter, "'{name}' is open"),
            Self::NotRedoLog { name } => write!(formatter, "'{name}' is not a redo log"),
            Self::HasRedoLog { name, redo_log } => write!(
                formatter,
                "'{name}' has the redo log '{redo_log}' over it; commit or discard its redo logs first"
            ),
            Self::SharedBase {
                redo_log,
                base,
                other,
            } => write!(
                formatter,
                "cannot commit '{redo_log}' into '{base}': '{base}' has other redo logs over it \
                 (first: '{other}') and merging would change what they read; discard the other \
                 logs first, so that '{redo_log}' is the only log over '{base}'"
            ),
            Self::RedoLogLength { name } => {
                write!(
                    formatter,
                    "'{name}' is part of a redo-log chain; its length cannot change"
                )
            }
            Self::ReadOnlyHandle { name } => write!(formatter, "'{name}' was opened read-only"),
            Self::StaleHandle => write!(formatter, "the file handle is closed or unknown"),
            Self::Unaligned { offset, length } => write!(
                formatter,
                "{length} bytes at offset {offset} are not aligned to {}-byte sectors",
                crate::device::SECTOR_SIZE
            ),
            Self::OutOfRange {
                offset,
                length,
                file_length,
            } => {
                write!(
                    formatter,
                    "{length} bytes at offset {offset} reach past the end of the {file_length}-byte file"
                )
            }
            Self::Device { device, error } => write!(formatter, "device {device}: {error}"),
            Self::Failed => write!(
                formatter,
                "a metadata update failed earlier; remount the file system"
            ),
            Self::ReadOnly => write!(
                formatter,
                "the file system is mounted read-only; changes need a read-write mount"
            ),
            Self::TransactionTooLarge { pages, capacity } => {
                write!(
                    formatter,
                    "a transaction of {pages} pages exceeds the journal's {capacity}"
                )
            }
        }
    }
}

/// Why an image was refused at mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountError {
    Device {
        device: u32,
        error: DeviceError,
    },
    NoDevices,
    DeviceCount {
        given: usize,
        expected: u32,
    },
    Superblock {
        device: u32,
        primary: PageFault,
        backup: PageFault,
    },
    ForeignDevice {
        device: u32,
    },
    DevicePosition {
        device: u32,
        says: u32,
    },
    GeometryDiffers {
        device: u32,
    },
    Layout(LayoutError),
    DeviceTooSmall {
        device: u32,
        size: u64,
        needed: u64,
    },
    Journal(JournalFault),
    Inconsistent {
        problems: Vec<Problem>,
    },
}

impl fmt::Display for MountError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device { device, error } => write!(formatter, "device {device}: {error}"),
            Self::NoDevices => write!(formatter, "no devices given"),
            Self::DeviceCount { given, expected } => {
                write!(
                    formatter,
                    "{given} devices given, the file system spans {expected}"
                )
            }
            Self::Superblock {
                device,
                primary,
                backup,
            } => write!(
                formatter,
                "device {device} has no readable superblock (primary: {primary}; backup: {backup})"
            ),
            Self::ForeignDevice { device } => {
                write!(formatter, "device {device} belongs to another file system")
            }
            Self::DevicePosition { device, says } => {
                write!(
                    formatter,
                    "device {device} of the list says it is device {says} of the file system"
                )
            }
            Self::GeometryDiffers { device } => {
                write!(
                    formatter,
                    "device {device}'s superblock disagrees with device 0's about the file system"
                )
            }
            Self::Layout(error) => write!(formatter, "bad layout: {error}"),
            Self::DeviceTooSmall {
                device,
                size,
                needed,
            } => {
                write!(
                    formatter,
                    "device {device} has {size} bytes, its superblock needs {needed} (truncated image?)"
                )
            }
            Self::Journal(fault) => write!(formatter, "bad journal: {fault}"),
            Self::Inconsistent { problems } => {
                match problems.first() {
                    Some(first) => write!(formatter, "inconsistent metadata: {first}")?,
                    None => write!(formatter, "inconsistent metadata")?,
                }
                if problems.len() > 1 {
                    write!(formatter, " (and {} more problems)", problems.len() - 1)?;
                }
                write!(formatter, "; run fsck")
            }
        }
    }
}

/// Why mkfs failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    Layout(LayoutError),
    Device {
        device: u32,
        error: DeviceError,
    },
    /// The freshly written image did not mount (a bug, or a device that lies).
    Verify(MountError),
}

impl fmt::Display for FormatError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout(error) => write!(formatter, "cannot lay out the file system: {error}"),
            Self::Device { device, error } => write!(formatter, "device {device}: {error}"),
            Self::Verify(error) => write!(formatter, "the new file system does not mount: {error}"),
        }
    }
}

impl core::error::Error for StoreError {}
impl core::error::Error for MountError {}
impl core::error::Error for FormatError {}
