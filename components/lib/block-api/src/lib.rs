//! The block interface a block driver serves to one client over a queue
//! pair: [`Request`]s on the client's queue to the driver, [`Completion`]s
//! back. Each request carries the client's id, which its completion
//! repeats; several may be in flight and they may complete in any order.
//! A request moves at most [`BLOCK`] bytes (eight 512-byte sectors): data
//! travels inside the messages, so the queues' `slot_size` must hold
//! them ([`REQUEST_BYTES`], [`COMPLETION_BYTES`]).
//!
//! When the driver restarts, the core resets both queues and the client's
//! next queue operation reports it; the client sends again every request
//! it has no completion for. Reads are idempotent and so are writes of the
//! same data to the same sectors, so resending is always safe.
#![no_std]
#![forbid(unsafe_code)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of one sector.
pub const SECTOR: u64 = 512;
/// The most bytes one request moves.
pub const BLOCK: usize = 4096;

/// In a [`Operation::Size`] completion's `sectors`: the disk is read-only
/// (its writes are refused with [`Status::ReadOnly`]).
pub const SIZE_READ_ONLY: u32 = 1;

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Operation {
    /// Read `sectors` sectors from `sector` into the completion's data.
    Read = 0,
    /// Write the request's first `sectors * 512` bytes of data at `sector`.
    Write = 1,
    /// Make every completed write durable.
    Flush = 2,
    /// The disk's size: the completion's `value` is its sector count and
    /// its `sectors` field holds flags ([`SIZE_READ_ONLY`]).
    Size = 3,
    /// The driver's counters: the completion's `value` holds the
    /// interrupts it took, `sectors` the requests it completed.
    Counters = 4,
    /// The client is done: the driver completes what is in flight,
    /// answers, resets the device and exits.
    Detach = 5,
    /// Make `sectors` sectors from `sector` read as zeros, with no data in
    /// the request (up to [`MAX_ZERO_SECTORS`]): a guest's discard or
    /// write-zeroes. The block store serves it; a block driver answers
    /// [`Status::Unsupported`].
    Zero = 6,
}

/// The most sectors one [`Operation::Zero`] covers (1 MiB).
pub const MAX_ZERO_SECTORS: u32 = 2048;

impl Operation {
    /// Decodes an operation number, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Flush,
            3 => Self::Size,
            4 => Self::Counters,
            5 => Self::Detach,
            6 => Self::Zero,
            _ => return None,
        })
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    /// The device reported an I/O error.
    IoError = 1,
    /// The request was malformed: unknown operation, zero or too many
    /// sectors, or past the end of the disk.
    Invalid = 2,
    /// The device does not support it (e.g. flush without the feature).
    Unsupported = 3,
    /// A write to a read-only disk.
    ReadOnly = 4,
}

/// A request from the client.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Request {
    pub id: u64,
    /// An [`Operation`] number.
    pub operation: u32,
    pub sectors: u32,
    pub sector: u64,
    pub reserved: u64,
    pub data: [u8; BLOCK],
}

/// The driver's answer to one request.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Completion {
    pub id: u64,
    /// A [`Status`] number.
    pub status: u32,
    pub sectors: u32,
    /// The size for [`Operation::Size`], the interrupt count for
    /// [`Operation::Counters`].
    pub value: u64,
    pub reserved: u64,
    pub data: [u8; BLOCK],
}

/// A request's fields before its data: what a client that writes the
/// data in place (straight into the queue slot) writes first.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RequestHeader {
    pub id: u64,
    pub operation: u32,
    pub sectors: u32,
    pub sector: u64,
    pub reserved: u64,
}

/// A completion's fields before its data.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CompletionHeader {
    pub id: u64,
    pub status: u32,
    pub sectors: u32,
    pub value: u64,
    pub reserved: u64,
}

/// Where the data starts in a request and in a completion: right after
/// its header.
pub const DATA_OFFSET: usize = size_of::<RequestHeader>();

const _: () = assert!(
    core::mem::offset_of!(Request, data) == DATA_OFFSET
        && core::mem::offset_of!(Completion, data) == DATA_OFFSET
        && size_of::<CompletionHeader>() == DATA_OFFSET
        && core::mem::offset_of!(Request, sector) == core::mem::offset_of!(RequestHeader, sector)
        && core::mem::offset_of!(Completion, value)
            == core::mem::offset_of!(CompletionHeader, value)
);

/// The slot size a request queue needs.
pub const REQUEST_BYTES: usize = size_of::<Request>();
/// The slot size a completion queue needs.
pub const COMPLETION_BYTES: usize = size_of::<Completion>();

const _: () = assert!(REQUEST_BYTES == 4128 && COMPLETION_BYTES == 4128);

impl Request {
    /// A request without data.
    pub const fn new(id: u64, operation: Operation, sector: u64, sectors: u32) -> Self {
        Self {
            id,
            operation: operation as u32,
            sectors,
            sector,
            reserved: 0,
            data: [0; BLOCK],
        }
    }

    /// The bytes of data it carries or asks for, if its operation and
    /// sector count are valid (none for a zeroing, whatever its sectors).
    pub fn bytes(&self) -> Option<usize> {
        match Operation::from_u32(self.operation)? {
            Operation::Read | Operation::Write => {
                let bytes = self.sectors as usize * SECTOR as usize;
                (self.sectors > 0 && bytes <= BLOCK).then_some(bytes)
            }
            Operation::Zero => (self.sectors > 0 && self.sectors <= MAX_ZERO_SECTORS).then_some(0),
            Operation::Flush | Operation::Size | Operation::Counters | Operation::Detach => Some(0),
        }
    }

    /// How much of it a queue must carry (`queue::Sender::send_prefix`):
    /// the header, and the data of a write (the rest reads as zero at
    /// the other end, and costs nothing).
    pub fn sent_bytes(&self) -> usize {
        let data = match Operation::from_u32(self.operation) {
            Some(Operation::Write) => self.sectors as usize * SECTOR as usize,
            _ => 0,
        };
        DATA_OFFSET + data.min(BLOCK)
    }
}

impl RequestHeader {
    /// The header of a request without data (its data bytes are zero).
    pub const fn new(id: u64, operation: Operation, sector: u64, sectors: u32) -> Self {
        Self {
            id,
            operation: operation as u32,
            sectors,
            sector,
            reserved: 0,
        }
    }
}

impl Completion {
    /// The completion of request `id` with `status` and no data.
    pub const fn new(id: u64, status: Status) -> Self {
        Self {
            id,
            status: status as u32,
            sectors: 0,
            value: 0,
            reserved: 0,
            data: [0; BLOCK],
        }
    }

    /// How much of it, the answer to `operation`, a queue must carry:
    /// the header, and the data of a read that succeeded.
    pub fn sent_bytes(&self, operation: u32) -> usize {
        let data = if operation == Operation::Read as u32 && self.status == Status::Ok as u32 {
            self.sectors as usize * SECTOR as usize
        } else {
            0
        };
        DATA_OFFSET + data.min(BLOCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_data_only_for_reads_and_writes_of_a_block_at_most() {
        let bytes = |operation, sectors| Request::new(1, operation, 0, sectors).bytes();
        assert_eq!(bytes(Operation::Read, 8), Some(4096));
        assert_eq!(bytes(Operation::Write, 1), Some(512));
        assert_eq!(bytes(Operation::Write, 9), None);
        assert_eq!(bytes(Operation::Read, 0), None);
        assert_eq!(bytes(Operation::Flush, 0), Some(0));
        assert_eq!(bytes(Operation::Zero, MAX_ZERO_SECTORS), Some(0));
        assert_eq!(bytes(Operation::Zero, MAX_ZERO_SECTORS + 1), None);
        assert_eq!(bytes(Operation::Zero, 0), None);
        let mut unknown = Request::new(1, Operation::Read, 0, 8);
        unknown.operation = 7;
        assert_eq!(unknown.bytes(), None);
    }

    #[test]
    fn only_a_write_and_a_good_read_send_their_data() {
        let request = |operation, sectors| Request::new(1, operation, 0, sectors).sent_bytes();
        assert_eq!(request(Operation::Write, 8), DATA_OFFSET + 4096);
        assert_eq!(request(Operation::Write, 1), DATA_OFFSET + 512);
        assert_eq!(request(Operation::Write, 1000), DATA_OFFSET + BLOCK);
        assert_eq!(request(Operation::Read, 8), DATA_OFFSET);
        assert_eq!(request(Operation::Zero, 8), DATA_OFFSET);
        let mut completion = Completion::new(1, Status::Ok);
        completion.sectors = 8;
        let read = Operation::Read as u32;
        assert_eq!(completion.sent_bytes(read), DATA_OFFSET + 4096);
        assert_eq!(completion.sent_bytes(Operation::Write as u32), DATA_OFFSET);
        completion.status = Status::IoError as u32;
        assert_eq!(completion.sent_bytes(read), DATA_OFFSET);
    }
}
