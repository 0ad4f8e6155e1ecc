//! virtio-blk requests (spec 5.2).
//!
//! A request is one descriptor chain of up to three buffers
//! ([`request_segments`]): the 16-byte header the device reads
//! ([`RequestHeader`]: type, reserved, sector), the data (read by the
//! device for a write, written by it for a read or an id request; absent
//! for a flush), and the one status byte the device writes last. The
//! driver fills the status byte with [`STATUS_UNWRITTEN`] before
//! submitting, so a device that returns the chain without writing it is
//! not taken to have succeeded ([`read_status`]).
//!
//! Sectors are 512 bytes whatever the device's `blk_size`, which is only
//! the device's preferred granularity; [`check_range`] keeps a request
//! whole sectors inside the capacity the device reported.

use crate::DmaMemory;
use crate::queue::Segment;

/// Bytes per sector: the unit of the header's `sector` and of the
/// capacity.
pub const SECTOR_SIZE: u32 = 512;
/// Bytes of the request header.
pub const HEADER_SIZE: u32 = 16;
/// Bytes an id request ([`RequestType::GetId`]) returns: the serial
/// number, NUL-padded.
pub const ID_SIZE: u32 = 20;

/// Feature bit: the device is read-only.
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// Feature bit: the device reports its block size ([`CONFIG_BLK_SIZE`]).
pub const VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
/// Feature bit: the device has a write cache and takes flush requests.
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;
/// Feature bit: the device takes discard requests ([`RequestType::Discard`]).
pub const VIRTIO_BLK_F_DISCARD: u32 = 13;
/// Feature bit: the device takes write-zeroes requests
/// ([`RequestType::WriteZeroes`]).
pub const VIRTIO_BLK_F_WRITE_ZEROES: u32 = 14;
/// Bytes of one discard / write-zeroes range ([`write_range`]).
pub const RANGE_SIZE: u32 = 16;

/// Device configuration offset of `capacity: u64`, in sectors. The driver
/// reads it as two 32-bit halves, retrying while `config_generation`
/// changes.
pub const CONFIG_CAPACITY: u32 = 0x00;
/// Device configuration offset of `blk_size: u32`, present with
/// [`VIRTIO_BLK_F_BLK_SIZE`].
pub const CONFIG_BLK_SIZE: u32 = 0x14;

/// Status byte: success.
pub const STATUS_OK: u8 = 0;
/// Status byte: the device failed the request.
pub const STATUS_IOERR: u8 = 1;
/// Status byte: the device does not support the request.
pub const STATUS_UNSUPP: u8 = 2;
/// Status byte as the driver leaves it before submitting: not a value a
/// device writes.
pub const STATUS_UNWRITTEN: u8 = 0xff;

/// A request's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    /// Read sectors (`VIRTIO_BLK_T_IN`).
    In = 0,
    /// Write sectors (`VIRTIO_BLK_T_OUT`).
    Out = 1,
    /// Flush the write cache (`VIRTIO_BLK_T_FLUSH`).
    Flush = 4,
    /// Read the device id (`VIRTIO_BLK_T_GET_ID`).
    GetId = 8,
    /// The sectors of the range that follows are no longer needed
    /// (`VIRTIO_BLK_T_DISCARD`).
    Discard = 11,
    /// The sectors of the range that follows read as zeros from now on
    /// (`VIRTIO_BLK_T_WRITE_ZEROES`).
    WriteZeroes = 13,
}

/// A request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// What the request does.
    pub kind: RequestType,
    /// The first sector read or written; 0 for the other types.
    pub sector: u64,
}

impl RequestHeader {
    /// Read sectors from `sector` on.
    pub fn read(sector: u64) -> Self {
        Self {
            kind: RequestType::In,
            sector,
        }
    }

    /// Write sectors from `sector` on.
    pub fn write(sector: u64) -> Self {
        Self {
            kind: RequestType::Out,
            sector,
        }
    }

    /// Flush (the spec requires sector 0).
    pub fn flush() -> Self {
        Self {
            kind: RequestType::Flush,
            sector: 0,
        }
    }

    /// Read the device id.
    pub fn get_id() -> Self {
        Self {
            kind: RequestType::GetId,
            sector: 0,
        }
    }

    /// Discard the range that follows the header.
    pub fn discard() -> Self {
        Self {
            kind: RequestType::Discard,
            sector: 0,
        }
    }

    /// Zero the range that follows the header.
    pub fn write_zeroes() -> Self {
        Self {
            kind: RequestType::WriteZeroes,
            sector: 0,
        }
    }

    /// Writes the header's 16 bytes at `offset`, which is 8-aligned.
    pub fn write_to<M: DmaMemory + ?Sized>(&self, memory: &M, offset: u64) {
        memory.write32(offset, self.kind as u32);
        memory.write32(offset + 4, 0);
        memory.write64(offset + 8, self.sector);
    }
}

/// Writes the [`RANGE_SIZE`] bytes of a discard / write-zeroes range at
/// `offset` (8-aligned): `sectors` sectors from `sector`, no flags (a
/// write-zeroes may not unmap).
pub fn write_range<M: DmaMemory + ?Sized>(memory: &M, offset: u64, sector: u64, sectors: u32) {
    memory.write64(offset, sector);
    memory.write32(offset + 8, sectors);
    memory.write32(offset + 12, 0);
}

/// The status the device reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// [`STATUS_OK`].
    Ok,
    /// [`STATUS_IOERR`].
    IoError,
    /// [`STATUS_UNSUPP`].
    Unsupported,
    /// Any other byte, [`STATUS_UNWRITTEN`] included: the device broke the
    /// protocol.
    Invalid(u8),
}

impl Status {
    /// The status a status byte holds.
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            STATUS_OK => Self::Ok,
            STATUS_IOERR => Self::IoError,
            STATUS_UNSUPP => Self::Unsupported,
            other => Self::Invalid(other),
        }
    }
}

/// Marks the status byte at `offset` unwritten; call before submitting.
pub fn prepare_status<M: DmaMemory + ?Sized>(memory: &M, offset: u64) {
    memory.write8(offset, STATUS_UNWRITTEN);
}

/// The status the device wrote at `offset`; call once the chain is used.
pub fn read_status<M: DmaMemory + ?Sized>(memory: &M, offset: u64) -> Status {
    Status::from_byte(memory.read8(offset))
}

/// The chain for a request: the header (device-readable,
/// [`HEADER_SIZE`] bytes), the data if any, and the status byte
/// (device-writable). Returns the segments and how many of them to pass
/// to [`crate::queue::SplitQueue::add`].
///
/// The data's direction is the caller's: device-readable for
/// [`RequestType::Out`], device-writable for [`RequestType::In`] and
/// [`RequestType::GetId`]. Either way the chain has its device-readable
/// segments first.
pub fn request_segments(
    header_physical: u64,
    data: Option<Segment>,
    status_physical: u64,
) -> ([Segment; 3], usize) {
    let header = Segment {
        physical: header_physical,
        length: HEADER_SIZE,
        device_writes: false,
    };
    let status = Segment {
        physical: status_physical,
        length: 1,
        device_writes: true,
    };
    match data {
        Some(data) => ([header, data, status], 3),
        None => ([header, status, status], 2),
    }
}

/// Why a read or write request is refused before it reaches the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// No bytes.
    Empty,
    /// The length is not a whole number of sectors.
    NotSectorMultiple { length: u32 },
    /// The sectors run past the capacity.
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
}

/// Checks a read or write of `length` bytes from `sector` on a device of
/// `capacity` sectors, and returns the number of sectors.
pub fn check_range(capacity: u64, sector: u64, length: u32) -> Result<u64, RangeError> {
    if length == 0 {
        return Err(RangeError::Empty);
    }
    if !length.is_multiple_of(SECTOR_SIZE) {
        return Err(RangeError::NotSectorMultiple { length });
    }
    let sectors = u64::from(length / SECTOR_SIZE);
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(sectors),
        _ => Err(RangeError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::SplitQueue;
    use crate::sim::{Chain, SimDevice, TestMemory};

    #[test]
    fn the_header_is_encoded_little_endian() {
        let memory = TestMemory::new(32);
        memory.write_bytes(0, &[0xaa; 32]);
        RequestHeader::write(0x0123_4567_89ab_cdef).write_to(&memory, 8);
        assert_eq!(
            memory.read_bytes(0, 32),
            [
                [0xaa; 8].as_slice(),
                &[1, 0, 0, 0, 0, 0, 0, 0],
                &[0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01],
                &[0xaa; 8],
            ]
            .concat()
        );
        for (header, kind) in [
            (RequestHeader::read(7), 0),
            (RequestHeader::write(7), 1),
            (RequestHeader::flush(), 4),
            (RequestHeader::get_id(), 8),
            (RequestHeader::discard(), 11),
            (RequestHeader::write_zeroes(), 13),
        ] {
            header.write_to(&memory, 0);
            assert_eq!(memory.read32(0), kind);
            assert_eq!(memory.read64(8), header.sector);
        }
        memory.write_bytes(0, &[0xaa; 32]);
        write_range(&memory, 8, 0x0102_0304_0506_0708, 2048);
        assert_eq!(
            memory.read_bytes(8, 16),
            [8, 7, 6, 5, 4, 3, 2, 1, 0, 8, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn segments_put_the_header_first_and_the_status_last() {
        let data = Segment {
            physical: 0x2000,
            length: 4096,
            device_writes: true,
        };
        let (segments, count) = request_segments(0x1000, Some(data), 0x3000);
        assert_eq!(count, 3);
        assert_eq!(
            segments[0],
            Segment {
                physical: 0x1000,
                length: 16,
                device_writes: false
            }
        );
        assert_eq!(segments[1], data);
        assert_eq!(
            segments[2],
            Segment {
                physical: 0x3000,
                length: 1,
                device_writes: true
            }
        );

        let (segments, count) = request_segments(0x1000, None, 0x3000);
        assert_eq!(count, 2);
        assert_eq!(
            segments[1],
            Segment {
                physical: 0x3000,
                length: 1,
                device_writes: true
            }
        );
    }

    #[test]
    fn status_bytes_decode() {
        assert_eq!(Status::from_byte(0), Status::Ok);
        assert_eq!(Status::from_byte(1), Status::IoError);
        assert_eq!(Status::from_byte(2), Status::Unsupported);
        assert_eq!(Status::from_byte(3), Status::Invalid(3));
        assert_eq!(Status::from_byte(STATUS_UNWRITTEN), Status::Invalid(0xff));
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(check_range(100, 0, 512), Ok(1));
        assert_eq!(check_range(100, 92, 4096), Ok(8));
        assert_eq!(check_range(100, 0, 0), Err(RangeError::Empty));
        assert_eq!(
            check_range(100, 0, 513),
            Err(RangeError::NotSectorMultiple { length: 513 })
        );
        assert_eq!(
            check_range(100, 0, 256),
            Err(RangeError::NotSectorMultiple { length: 256 })
        );
        assert_eq!(
            check_range(100, 93, 4096),
            Err(RangeError::OutOfRange {
                sector: 93,
                sectors: 8,
                capacity: 100
            })
        );
        assert_eq!(
            check_range(100, 100, 512),
            Err(RangeError::OutOfRange {
                sector: 100,
                sectors: 1,
                capacity: 100
            })
        );
        assert_eq!(
            check_range(u64::MAX, u64::MAX, 512),
            Err(RangeError::OutOfRange {
                sector: u64::MAX,
                sectors: 1,
                capacity: u64::MAX
            })
        );
        assert_eq!(
            check_range(0, 0, 512),
            Err(RangeError::OutOfRange {
                sector: 0,
                sectors: 1,
                capacity: 0
            })
        );
    }

    /// A block device over a byte vector, serving one chain as virtio-blk
    /// does; returns the bytes it wrote into the chain.
    fn serve(memory: &TestMemory, disk: &mut [u8], chain: &Chain) -> u32 {
        let header = memory.offset_of(chain.descriptors[0].addr);
        let kind = memory.read32(header);
        let sector = memory.read64(header + 8);
        let status = chain.descriptors.last().unwrap();
        let data = &chain.descriptors[1..chain.descriptors.len() - 1];
        let mut written = 0;
        let byte = match kind {
            0 | 1 => {
                let mut at = sector as usize * SECTOR_SIZE as usize;
                for descriptor in data {
                    let buffer = memory.offset_of(descriptor.addr);
                    let len = descriptor.len as usize;
                    if kind == 0 {
                        memory.write_bytes(buffer, &disk[at..at + len]);
                        written += descriptor.len;
                    } else {
                        disk[at..at + len].copy_from_slice(&memory.read_bytes(buffer, len));
                    }
                    at += len;
                }
                STATUS_OK
            }
            4 => STATUS_OK,
            _ => STATUS_UNSUPP,
        };
        memory.write8(memory.offset_of(status.addr), byte);
        written + 1
    }

    /// A driver and a block device over one buffer: the queue at 0, the
    /// header at 0x200, the status byte at 0x210 and data at 0x400.
    struct Rig {
        memory: TestMemory,
        queue: SplitQueue,
        device: SimDevice,
        disk: Vec<u8>,
    }

    const HEADER: u64 = 0x200;
    const STATUS: u64 = 0x210;
    const DATA: u64 = 0x400;

    impl Rig {
        fn new() -> Self {
            let memory = TestMemory::new(0x2000);
            let queue = SplitQueue::new(&memory, 0, 4).unwrap();
            let device = SimDevice::new(&memory, &queue);
            Self {
                memory,
                queue,
                device,
                disk: vec![0; 16 * SECTOR_SIZE as usize],
            }
        }

        /// The data buffer as a segment.
        fn data(&self, length: u32, device_writes: bool) -> Segment {
            Segment {
                physical: self.memory.physical(DATA),
                length,
                device_writes,
            }
        }

        /// Runs one request to completion; returns the used length and
        /// the status.
        fn run(&mut self, header: RequestHeader, data: Option<Segment>) -> (u32, Status) {
            let memory = &self.memory;
            header.write_to(memory, HEADER);
            prepare_status(memory, STATUS);
            let (segments, count) =
                request_segments(memory.physical(HEADER), data, memory.physical(STATUS));
            let head = self.queue.add(memory, &segments[..count]).unwrap();
            let chain = self.device.take(memory).unwrap();
            let written = serve(memory, &mut self.disk, &chain);
            self.device.complete(memory, chain.head, written);
            let used = self.queue.pop_used(memory).unwrap().unwrap();
            assert_eq!(used.head, head);
            (used.length, read_status(memory, STATUS))
        }
    }

    #[test]
    fn requests_round_trip_through_a_device() {
        let mut rig = Rig::new();
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
        rig.memory.write_bytes(DATA, &pattern);
        assert_eq!(check_range(16, 3, 1024), Ok(2));
        let out = rig.data(1024, false);
        assert_eq!(rig.run(RequestHeader::write(3), Some(out)), (1, Status::Ok));
        assert_eq!(&rig.disk[3 * 512..5 * 512], pattern.as_slice());

        rig.memory.write_bytes(DATA, &[0; 1024]);
        let into = rig.data(1024, true);
        assert_eq!(
            rig.run(RequestHeader::read(3), Some(into)),
            (1025, Status::Ok)
        );
        assert_eq!(rig.memory.read_bytes(DATA, 1024), pattern);

        assert_eq!(rig.run(RequestHeader::flush(), None), (1, Status::Ok));
        let id = rig.data(ID_SIZE, true);
        assert_eq!(
            rig.run(RequestHeader::get_id(), Some(id)),
            (1, Status::Unsupported)
        );
        assert_eq!(rig.queue.free_descriptors(), 4);
    }

    #[test]
    fn an_unwritten_status_is_invalid() {
        let memory = TestMemory::new(8);
        prepare_status(&memory, 5);
        assert_eq!(read_status(&memory, 5), Status::Invalid(STATUS_UNWRITTEN));
    }
}
