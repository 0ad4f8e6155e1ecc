//! A queue: a shared-memory ring from one component to another.
//!
//! The core allocates a queue's memory at boot (fresh, zeroed, physically
//! contiguous), writes its header (geometry, magic, generation; see
//! `microvisor_abi::queue`) and maps it into exactly its two ends at the
//! addresses the spec gives; the memory belongs to the queue, never to an
//! end, so it outlives their restarts. When an end restarts, the queue is
//! reset: indices cleared and the generation bumped, so the other end
//! notices it talks to a new life. The ring protocol itself is the
//! components' (`runtime::queue`); the core never reads the slots, and
//! writes them only when a test system injects a fault into an end
//! (`crate::inject`: random bytes, or a flood of stamped messages).

use microvisor::address::{PAGE_SIZE, PhysicalAddress};
use microvisor::frame::FrameAllocator;
use microvisor_abi::queue;
use microvisor_abi::spec::{self, QueueSpec};

use crate::arch::memory::direct;

/// One queue.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    memory: PhysicalAddress,
    pages: u64,
    sender: usize,
    receiver: usize,
    sender_address: u64,
    receiver_address: u64,
    /// Set in the receiver's word when messages arrive (and at resets).
    receiver_bit: u32,
    /// Set in the sender's word when space frees up (and at resets).
    sender_bit: u32,
    slot_size: u32,
    slot_count: u32,
    generation: u32,
}

/// There was no contiguous memory for a queue.
#[derive(Clone, Copy, Debug)]
pub struct OutOfMemory;

impl Queue {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        memory: PhysicalAddress(0),
        pages: 0,
        sender: 0,
        receiver: 0,
        sender_address: 0,
        receiver_address: 0,
        receiver_bit: 0,
        sender_bit: 0,
        slot_size: 0,
        slot_count: 0,
        generation: 0,
    };

    /// Allocates and initialises the queue the spec declares.
    pub fn create(
        frames: &mut FrameAllocator<'_>,
        declared: &QueueSpec,
    ) -> Result<Self, OutOfMemory> {
        let pages = spec::queue_pages(declared.slot_size, declared.slot_count);
        let memory = frames.allocate_contiguous(pages).ok_or(OutOfMemory)?;
        // SAFETY: fresh frames, in the direct map, owned by this queue.
        unsafe { core::ptr::write_bytes(direct(memory), 0, (pages * PAGE_SIZE) as usize) };
        let queue = Self {
            memory,
            pages,
            sender: declared.sender as usize,
            receiver: declared.receiver as usize,
            sender_address: declared.sender_address,
            receiver_address: declared.receiver_address,
            receiver_bit: declared.receiver_bit,
            sender_bit: declared.sender_bit,
            slot_size: declared.slot_size,
            slot_count: declared.slot_count,
            generation: 1,
        };
        queue.write_header();
        Ok(queue)
    }

    /// Where the queue appears in component `index`, if it is an end.
    pub fn address_in(&self, index: usize) -> Option<u64> {
        if self.sender == index {
            Some(self.sender_address)
        } else if self.receiver == index {
            Some(self.receiver_address)
        } else {
            None
        }
    }

    /// The physical pages of its memory.
    pub fn pages(&self) -> impl Iterator<Item = PhysicalAddress> + use<> {
        let first = self.memory.0;
        (0..self.pages).map(move |page| PhysicalAddress(first + page * PAGE_SIZE))
    }

    /// When component `index` is an end: the other end and the bit to set
    /// in its word.
    pub fn peer_of(&self, index: usize) -> Option<(usize, u32)> {
        if self.sender == index {
            Some((self.receiver, self.receiver_bit))
        } else if self.receiver == index {
            Some((self.sender, self.sender_bit))
        } else {
            None
        }
    }

    /// The sender and receiver components.
    pub fn ends(&self) -> (usize, usize) {
        (self.sender, self.receiver)
    }

    /// Slot size and count.
    pub fn geometry(&self) -> (u32, u32) {
        (self.slot_size, self.slot_count)
    }

    /// The receiver and the bit that tells it messages arrived.
    pub fn receiver_bit(&self) -> (usize, u32) {
        (self.receiver, self.receiver_bit)
    }

    /// The first byte of its memory, in the direct map.
    pub fn memory(&self) -> PhysicalAddress {
        self.memory
    }

    /// Empties the ring and bumps its generation.
    pub fn reset(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.write_header();
    }

    fn write_header(&self) {
        let header = direct(self.memory);
        let put32 = |offset: usize, value: u32| {
            // SAFETY: the header page belongs to the queue and is in the
            // direct map; offsets are inside the page and 4-byte aligned.
            unsafe { header.add(offset).cast::<u32>().write_volatile(value) }
        };
        let put64 = |offset: usize, value: u64| {
            // SAFETY: as above, 8-byte aligned.
            unsafe { header.add(offset).cast::<u64>().write_volatile(value) }
        };
        for slot in 0..self.slot_count.min(queue::MAX_SLOTS) as usize {
            let stamp = queue::STAMPS_OFFSET + queue::STAMP_BYTES * slot;
            put32(stamp, 0);
            put32(stamp + queue::STAMP_CHECKSUM, 0);
            put32(stamp + queue::STAMP_LENGTH, 0);
        }
        put64(queue::HEAD_OFFSET, 0);
        put64(queue::TAIL_OFFSET, 0);
        put32(queue::RECEIVER_WAITING_OFFSET, 0);
        put32(queue::SENDER_WAITING_OFFSET, 0);
        put32(queue::SLOT_SIZE_OFFSET, self.slot_size);
        put32(queue::SLOT_COUNT_OFFSET, self.slot_count);
        put32(queue::MAGIC_OFFSET, queue::QUEUE_MAGIC);
        put32(queue::GENERATION_OFFSET, self.generation);
    }
}
