//! The shared header of an IPC queue.
//!
//! A queue's memory, mapped into exactly its two ends, starts with one
//! header page followed by `slot_count` slots of `slot_size` bytes. The
//! header's fields sit on separate cache lines at fixed offsets so that
//! each end writes only its own: the receiver `head` and
//! `receiver_waiting`, the sender `tail` and `sender_waiting`. The core
//! writes `magic`, sizes and `generation` at boot and whenever either end
//! restarts (indices and flags reset to zero, generation incremented), which
//! is how the surviving end notices. Indices count messages since the last
//! reset and wrap at 2^64; slot `i % slot_count` holds message `i`.

/// `b"MVQUEUE\0"` low half, for sanity checks.
pub const QUEUE_MAGIC: u32 = u32::from_le_bytes(*b"MVQU");
/// Offset of `magic: u32`.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of `generation: u32` (changes when either end restarts).
pub const GENERATION_OFFSET: usize = 4;
/// Offset of `slot_size: u32`.
pub const SLOT_SIZE_OFFSET: usize = 8;
/// Offset of `slot_count: u32`.
pub const SLOT_COUNT_OFFSET: usize = 12;
/// Offset of `head: u64`, the next message the receiver will take.
pub const HEAD_OFFSET: usize = 64;
/// Offset of `tail: u64`, the next message the sender will write.
pub const TAIL_OFFSET: usize = 128;
/// Offset of `receiver_waiting: u32` (non-zero while the receiver sleeps).
pub const RECEIVER_WAITING_OFFSET: usize = 192;
/// Offset of `sender_waiting: u32` (non-zero while the sender sleeps).
pub const SENDER_WAITING_OFFSET: usize = 256;
/// Offset of the first slot from the start of the queue memory.
pub const SLOTS_OFFSET: usize = 4096;
/// Offset of the stamps: one `u32` per slot, `i + 1` for message `i`.
pub const STAMPS_OFFSET: usize = 512;
/// The most slots a queue has: the header page holds a stamp for each.
pub const MAX_SLOTS: u32 = 512;
/// The header's fields as (offset, length): where a corrupted header
/// can differ.
pub const HEADER_FIELDS: [(usize, usize); 8] = [
    (MAGIC_OFFSET, 4),
    (GENERATION_OFFSET, 4),
    (SLOT_SIZE_OFFSET, 4),
    (SLOT_COUNT_OFFSET, 4),
    (HEAD_OFFSET, 8),
    (TAIL_OFFSET, 8),
    (RECEIVER_WAITING_OFFSET, 4),
    (SENDER_WAITING_OFFSET, 4),
];

/// The stamp of message `index`.
pub const fn stamp(index: u64) -> u32 {
    index.wrapping_add(1) as u32
}

const _: () = assert!(STAMPS_OFFSET + 4 * MAX_SLOTS as usize <= SLOTS_OFFSET);
const _: () = assert!(SENDER_WAITING_OFFSET + 4 <= STAMPS_OFFSET);
