//! VMKFS: a file system for virtual disks, after the VM kernel file system of
//! seed 004 ([0094]-[0099]).
//!
//! Purpose: store a few large files (virtual disks and their copy-on-write redo
//! logs) on one or more block devices so that a VM's disk I/O runs at the
//! device's speed. Data blocks are large (1 MiB by default, 4 KiB to 64 MiB
//! chosen at mkfs); a file descriptor points to pointer blocks of 1024
//! four-byte (device, block) pointers; all metadata is read into RAM at mount;
//! a virtual disk's blocks are allocated when it is created, so its reads and
//! writes never touch metadata. Metadata changes go through a checksummed
//! journal, so a crash at any point leaves a file system that mounts, keeps
//! its invariants and returns every acknowledged write.
//!
//! Invariants: see [`store`] (operations and durability), [`journal`] (the
//! crash-consistency protocol), [`format`] (the on-disk layout) and [`load`]
//! (what mount checks). No `unsafe`, no panics on any input.
//!
//! Callers: the block-store component (linking this `no_std` + `alloc`
//! library over its virtio-blk or RAM-disk driver) and, with the `std`
//! feature, the host tooling (`cargo run -p build -- disk ...`).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(feature = "std")]
extern crate std;

pub mod check;
pub mod checksum;
pub mod device;
pub mod error;
pub mod fault;
pub mod format;
pub mod journal;
mod load;
mod records;
pub mod store;

#[cfg(feature = "std")]
pub mod bench;
#[cfg(feature = "std")]
pub mod host;

pub use check::{CheckReport, MapKind, Problem, check};
#[cfg(feature = "std")]
pub use device::FileDevice;
pub use device::{
    BlockDevice, CountingDevice, DeviceError, IoCounts, IoKind, IoStatistics, MemoryDevice,
    SECTOR_SIZE,
};
pub use error::{FormatError, MountError, Resource, StoreError};
pub use fault::{CrashPolicy, FaultDevice, SplitMix64, UnflushedFate};
pub use format::{DEFAULT_BLOCK_SIZE, FormatOptions, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PAGE_SIZE};
pub use records::FileKind;
pub use store::{FileHandle, FileInfo, OpenMode, SpaceInfo, Store};
