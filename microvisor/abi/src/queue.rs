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
/// Offset of the stamps: per slot, a `u32` `i + 1` for message `i`, the
/// `u32` [`checksum`] of the slot's first `length` bytes and that
/// `u32` `length` (a multiple of 8, at most the slot size: the bytes the
/// message fills; the rest of the slot is not part of it and reads as
/// zero).
pub const STAMPS_OFFSET: usize = 512;
/// Bytes of one slot's stamp.
pub const STAMP_BYTES: usize = 12;
/// Offset of the checksum within a stamp.
pub const STAMP_CHECKSUM: usize = 4;
/// Offset of the length within a stamp.
pub const STAMP_LENGTH: usize = 8;
/// The most slots a queue has: the header page holds a stamp for each.
pub const MAX_SLOTS: u32 = 256;
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

/// The checksum of a slot (a multiply-xor hash over its 8-byte words,
/// folded to 32 bits): cheap enough for every message, and any change of
/// a few bytes changes it. Fed word by word, so that shared memory is
/// read with volatile loads, never through a reference.
#[derive(Clone, Copy, Debug)]
pub struct Checksum(u64);

impl Checksum {
    /// A checksum of `bytes` bytes of a slot (the length is part of it).
    pub const fn new(bytes: usize) -> Self {
        Self(0xcbf2_9ce4_8422_2325 ^ bytes as u64)
    }

    /// Adds the next 8-byte word (little-endian).
    #[inline(always)]
    pub fn word(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }

    pub fn finish(self) -> u32 {
        (self.0 ^ self.0 >> 32) as u32
    }
}

/// The [`Checksum`] of `slot` (a multiple of 8 bytes; a shorter tail is
/// padded with zeros).
pub fn checksum(slot: &[u8]) -> u32 {
    let mut sum = Checksum::new(slot.len());
    for word in slot.chunks(8) {
        let mut bytes = [0u8; 8];
        bytes[..word.len()].copy_from_slice(word);
        sum.word(u64::from_le_bytes(bytes));
    }
    sum.finish()
}

const _: () = assert!(STAMPS_OFFSET + STAMP_BYTES * MAX_SLOTS as usize <= SLOTS_OFFSET);
const _: () = assert!(STAMP_CHECKSUM >= 4 && STAMP_LENGTH >= STAMP_CHECKSUM + 4);
const _: () = assert!(STAMP_LENGTH + 4 <= STAMP_BYTES && STAMP_BYTES.is_multiple_of(4));
const _: () = assert!(SENDER_WAITING_OFFSET + 4 <= STAMPS_OFFSET);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_sees_every_byte_and_bit() {
        let slot = [0x5au8; 64];
        let base = checksum(&slot);
        for byte in 0..slot.len() {
            for bit in 0..8 {
                let mut changed = slot;
                changed[byte] ^= 1 << bit;
                assert_ne!(checksum(&changed), base, "byte {byte} bit {bit}");
            }
        }
        assert_ne!(checksum(&[0; 8]), checksum(&[0; 16]), "the length counts");
        assert_ne!(checksum(&[1, 2, 3]), checksum(&[1, 2, 4]));
        let mut sum = Checksum::new(16);
        sum.word(u64::from_le_bytes([1; 8]));
        sum.word(u64::from_le_bytes([2; 8]));
        let mut bytes = [1u8; 16];
        bytes[8..].fill(2);
        assert_eq!(sum.finish(), checksum(&bytes));
    }

    #[test]
    fn stamps_start_at_one() {
        assert_eq!(stamp(0), 1);
        assert_eq!(stamp(u64::from(u32::MAX)), 0);
    }
}
