//! The block-device layer under the store.
//!
//! Purpose: one small trait, [`BlockDevice`], through which the store does all
//! its I/O, and the devices that implement it: an in-memory device, a counting
//! wrapper that tallies I/O by kind (how the "no metadata I/O during data I/O"
//! claim is checked), and, with the `std` feature, a host file-backed device
//! (with a process-wide hook before each write, [`set_write_hook`], for the
//! tests that kill the real `disk` tool). The fault-injecting device lives
//! in [`crate::fault`].
//!
//! Invariants: offsets and lengths are multiples of [`SECTOR_SIZE`]; an I/O
//! never reaches past [`BlockDevice::size`]; a write is durable only once a
//! later [`BlockDevice::flush`] has returned. Every I/O names its
//! [`IoKind`] so wrappers can count data and metadata separately.
//!
//! Callers: the store ([`crate::Store`]), the checker ([`crate::check`]), the
//! host tooling and the tests.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// The unit a device reads and writes atomically; offsets and lengths are
/// multiples of it.
pub const SECTOR_SIZE: usize = 512;

/// What an I/O is for; devices may ignore it, wrappers count by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IoKind {
    /// Bytes of a file (a virtual disk), including copy-on-write copies and zeroing.
    Data,
    /// Superblocks, descriptors, allocation maps, pointer blocks.
    Metadata,
    /// Journal transactions (a kind of metadata I/O, counted apart).
    Journal,
}

/// Why a device operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The request reaches past the end of the device.
    OutOfRange { offset: u64, length: u64, size: u64 },
    /// The offset or length is not a multiple of the sector size.
    Unaligned { offset: u64, length: u64 },
    /// The medium failed to read or write the sector at `offset`.
    Media { offset: u64 },
    /// The device has crashed (fault injection); nothing more reaches it.
    Crashed,
    /// The host reported an error (file-backed device).
    Host(String),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange {
                offset,
                length,
                size,
            } => write!(
                formatter,
                "{length} bytes at offset {offset} reach past the end of the {size}-byte device"
            ),
            Self::Unaligned { offset, length } => write!(
                formatter,
                "{length} bytes at offset {offset} are not aligned to {SECTOR_SIZE}-byte sectors"
            ),
            Self::Media { offset } => {
                write!(formatter, "media error in the sector at offset {offset}")
            }
            Self::Crashed => write!(formatter, "the device has crashed"),
            Self::Host(message) => write!(formatter, "host I/O error: {message}"),
        }
    }
}

impl core::error::Error for DeviceError {}

/// A sector-addressed storage device.
pub trait BlockDevice {
    /// Size in bytes (a multiple of [`SECTOR_SIZE`]).
    fn size(&self) -> u64;
    /// Reads `buffer.len()` bytes at `offset`; sees every earlier write, flushed or not.
    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError>;
    /// Writes `data` at `offset`; durable only after the next successful flush.
    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), DeviceError>;
}

/// Checks that a request is sector-aligned and inside a device of `size` bytes.
pub fn check_request(offset: u64, length: usize, size: u64) -> Result<(), DeviceError> {
    let length = length as u64;
    if !offset.is_multiple_of(SECTOR_SIZE as u64) || !length.is_multiple_of(SECTOR_SIZE as u64) {
        return Err(DeviceError::Unaligned { offset, length });
    }
    match offset.checked_add(length) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange {
            offset,
            length,
            size,
        }),
    }
}

/// A device held in a byte vector: the test and benchmark device, and the
/// RAM disk a block-store component can use.
#[derive(Clone, Debug)]
pub struct MemoryDevice {
    bytes: Vec<u8>,
}

impl MemoryDevice {
    /// A zero-filled device of `size` bytes (rounded down to whole sectors).
    pub fn new(size: u64) -> Self {
        let size = size - size % SECTOR_SIZE as u64;
        Self {
            bytes: vec![0; size as usize],
        }
    }

    /// A device holding `bytes` (truncated to whole sectors).
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        let size = bytes.len() - bytes.len() % SECTOR_SIZE;
        bytes.truncate(size);
        Self { bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl BlockDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], _kind: IoKind) -> Result<(), DeviceError> {
        check_request(offset, buffer.len(), self.size())?;
        let start = offset as usize;
        buffer.copy_from_slice(&self.bytes[start..start + buffer.len()]);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8], _kind: IoKind) -> Result<(), DeviceError> {
        check_request(offset, data.len(), self.size())?;
        let start = offset as usize;
        self.bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// Operation counts for one [`IoKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl IoCounts {
    /// Reads plus writes.
    pub fn operations(&self) -> u64 {
        self.reads + self.writes
    }
}

/// I/O tallies of a [`CountingDevice`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStatistics {
    pub data: IoCounts,
    pub metadata: IoCounts,
    pub journal: IoCounts,
    pub flushes: u64,
}

impl IoStatistics {
    /// Metadata plus journal operations: the I/O that is not file data.
    pub fn metadata_operations(&self) -> u64 {
        self.metadata.operations() + self.journal.operations()
    }

    fn counts_mut(&mut self, kind: IoKind) -> &mut IoCounts {
        match kind {
            IoKind::Data => &mut self.data,
            IoKind::Metadata => &mut self.metadata,
            IoKind::Journal => &mut self.journal,
        }
    }
}

/// Wraps a device and counts its I/O by kind.
#[derive(Clone, Debug)]
pub struct CountingDevice<D> {
    inner: D,
    statistics: IoStatistics,
}

impl<D: BlockDevice> CountingDevice<D> {
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            statistics: IoStatistics::default(),
        }
    }

    pub fn statistics(&self) -> IoStatistics {
        self.statistics
    }

    pub fn reset_statistics(&mut self) {
        self.statistics = IoStatistics::default();
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: BlockDevice> BlockDevice for CountingDevice<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError> {
        let counts = self.statistics.counts_mut(kind);
        counts.reads += 1;
        counts.bytes_read += buffer.len() as u64;
        self.inner.read(offset, buffer, kind)
    }

    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError> {
        let counts = self.statistics.counts_mut(kind);
        counts.writes += 1;
        counts.bytes_written += data.len() as u64;
        self.inner.write(offset, data, kind)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.statistics.flushes += 1;
        self.inner.flush()
    }
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError> {
        (**self).read(offset, buffer, kind)
    }

    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError> {
        (**self).write(offset, data, kind)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }
}

#[cfg(feature = "std")]
pub use host::{FileDevice, set_write_hook};

#[cfg(feature = "std")]
mod host {
    //! A device backed by a host file (image files for the build tool).
    extern crate std;

    use super::{BlockDevice, DeviceError, IoKind, SECTOR_SIZE, check_request};
    use alloc::string::ToString;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;
    use std::sync::OnceLock;

    /// The function [`set_write_hook`] installed.
    type WriteHook = alloc::boxed::Box<dyn Fn() + Send + Sync>;

    static WRITE_HOOK: OnceLock<WriteHook> = OnceLock::new();

    /// A fault hook for tests only: installs `hook`, which then runs just
    /// before every write any [`FileDevice`] of this process issues. The
    /// `disk` tool installs one when `VMKFS_KILL_AT_WRITE` is set, to kill
    /// itself at a chosen write (its crash tests); nothing else should. Only
    /// the first call installs; it returns whether this one did.
    pub fn set_write_hook(hook: WriteHook) -> bool {
        WRITE_HOOK.set(hook).is_ok()
    }

    /// A block device stored in a regular host file.
    #[derive(Debug)]
    pub struct FileDevice {
        file: File,
        size: u64,
    }

    fn host_error(error: std::io::Error) -> DeviceError {
        DeviceError::Host(error.to_string())
    }

    impl FileDevice {
        /// Opens an existing image file; its size is rounded down to whole sectors.
        pub fn open(path: &Path, writable: bool) -> Result<Self, DeviceError> {
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(path)
                .map_err(host_error)?;
            let size = file.metadata().map_err(host_error)?.len();
            Ok(Self {
                file,
                size: size - size % SECTOR_SIZE as u64,
            })
        }

        /// Creates (or truncates) an image file of `size` bytes, sparse where the host allows.
        pub fn create(path: &Path, size: u64) -> Result<Self, DeviceError> {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(host_error)?;
            Self::from_empty_file(file, size)
        }

        /// Makes an empty file, open for reading and writing, an image of
        /// `size` bytes (rounded down to whole sectors) that reads as zero.
        pub fn from_empty_file(file: File, size: u64) -> Result<Self, DeviceError> {
            let size = size - size % SECTOR_SIZE as u64;
            file.set_len(size).map_err(host_error)?;
            Ok(Self { file, size })
        }

        /// The open image file (for the host helpers' locks).
        pub fn file(&self) -> &File {
            &self.file
        }

        /// Whether `other` is this device's file (the same device and inode,
        /// however it was reached: another path, a symbolic or a hard link).
        pub fn is_same_file(&self, other: &File) -> Result<bool, DeviceError> {
            let mine = self.file.metadata().map_err(host_error)?;
            let theirs = other.metadata().map_err(host_error)?;
            Ok(mine.dev() == theirs.dev() && mine.ino() == theirs.ino())
        }
    }

    impl BlockDevice for FileDevice {
        fn size(&self) -> u64 {
            self.size
        }

        fn read(
            &mut self,
            offset: u64,
            buffer: &mut [u8],
            _kind: IoKind,
        ) -> Result<(), DeviceError> {
            check_request(offset, buffer.len(), self.size)?;
            self.file.read_exact_at(buffer, offset).map_err(host_error)
        }

        fn write(&mut self, offset: u64, data: &[u8], _kind: IoKind) -> Result<(), DeviceError> {
            check_request(offset, data.len(), self.size)?;
            if let Some(hook) = WRITE_HOOK.get() {
                hook();
            }
            self.file.write_all_at(data, offset).map_err(host_error)
        }

        fn flush(&mut self) -> Result<(), DeviceError> {
            self.file.sync_data().map_err(host_error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_device_round_trip_and_bounds() {
        let mut device = MemoryDevice::new(4096);
        device.write(512, &[7u8; 1024], IoKind::Data).unwrap();
        let mut buffer = [0u8; 1024];
        device.read(512, &mut buffer, IoKind::Data).unwrap();
        assert_eq!(buffer, [7u8; 1024]);
        assert_eq!(
            device.write(4096, &[0u8; 512], IoKind::Data),
            Err(DeviceError::OutOfRange {
                offset: 4096,
                length: 512,
                size: 4096
            })
        );
        assert_eq!(
            device.read(100, &mut [0u8; 512], IoKind::Data),
            Err(DeviceError::Unaligned {
                offset: 100,
                length: 512
            })
        );
        // An offset near the top of the address space must not overflow.
        assert!(matches!(
            device.read(u64::MAX - 511, &mut [0u8; 512], IoKind::Data),
            Err(DeviceError::OutOfRange { .. })
        ));
    }

    #[test]
    fn counting_device_counts_by_kind() {
        let mut device = CountingDevice::new(MemoryDevice::new(8192));
        device.write(0, &[1u8; 512], IoKind::Metadata).unwrap();
        device.write(512, &[1u8; 1024], IoKind::Data).unwrap();
        device.read(0, &mut [0u8; 512], IoKind::Data).unwrap();
        device.write(4096, &[1u8; 4096], IoKind::Journal).unwrap();
        device.flush().unwrap();
        let statistics = device.statistics();
        assert_eq!(
            statistics.metadata,
            IoCounts {
                reads: 0,
                writes: 1,
                bytes_read: 0,
                bytes_written: 512
            }
        );
        assert_eq!(
            statistics.data,
            IoCounts {
                reads: 1,
                writes: 1,
                bytes_read: 512,
                bytes_written: 1024
            }
        );
        assert_eq!(statistics.journal.writes, 1);
        assert_eq!(statistics.metadata_operations(), 2);
        assert_eq!(statistics.flushes, 1);
        device.reset_statistics();
        assert_eq!(device.statistics(), IoStatistics::default());
    }

    #[cfg(feature = "std")]
    #[test]
    fn file_device_round_trip() {
        extern crate std;
        let path =
            std::env::temp_dir().join(alloc::format!("vmkfs-device-{}.img", std::process::id()));
        let mut device = FileDevice::create(&path, 8192).unwrap();
        device.write(4096, &[9u8; 512], IoKind::Data).unwrap();
        device.flush().unwrap();
        drop(device);
        let mut device = FileDevice::open(&path, false).unwrap();
        assert_eq!(device.size(), 8192);
        let mut buffer = [0u8; 512];
        device.read(4096, &mut buffer, IoKind::Data).unwrap();
        assert_eq!(buffer, [9u8; 512]);
        std::fs::remove_file(&path).unwrap();
    }
}
