//! IPC queues: typed single-producer, single-consumer rings in memory the
//! core maps into exactly the two ends.
//!
//! The header layout is [`microvisor_abi::queue`]'s. The sender owns
//! `tail`, the receiver `head`; each publishes with release ordering and
//! reads the other's with acquire. A side that finds the ring full (or
//! empty) sets its `*_waiting` flag, re-checks, and sleeps on its
//! notification bit; the other side signals only when it sees that flag
//! after its own update (both sides separate the two with a sequentially
//! consistent fence), so the common case costs no system call and no
//! wake-up is lost (notification bits are sticky). When either end
//! restarts, the core resets the header and bumps `generation`; the next
//! operation on the surviving end reports [`QueueError::PeerRestarted`] and
//! resynchronises. Every message read is copied out of shared memory before
//! the caller sees it, and the caller must validate its fields: the other
//! end may be hostile.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use microvisor_abi::queue::{
    GENERATION_OFFSET, HEAD_OFFSET, QUEUE_MAGIC, RECEIVER_WAITING_OFFSET, SENDER_WAITING_OFFSET,
    SLOTS_OFFSET, TAIL_OFFSET,
};
use microvisor_abi::start::{Resource, ResourceKind, ResourceView};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{notification, syscall};

/// Why a queue operation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The other end restarted; the queue was reset to empty. Carries the
    /// new generation.
    PeerRestarted(u32),
    /// The ring is full (non-blocking send) or empty (non-blocking receive),
    /// or a timed receive ran out of time.
    WouldBlock,
}

/// Why a queue could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The start page lists no such queue end.
    NotGiven,
    /// The message type is larger than the queue's slots.
    MessageTooLarge { message: usize, slot: usize },
    /// The memory at the queue's address does not hold a queue header.
    BadHeader,
}

struct Ring {
    base: usize,
    slot_size: usize,
    slot_count: u64,
    signal: u64,
    bit: u32,
    generation: u32,
}

impl Ring {
    fn open<T>(resource: Option<&Resource>) -> Result<Self, OpenError> {
        let end = match resource.and_then(Resource::view) {
            Some(ResourceView::QueueSend(end) | ResourceView::QueueReceive(end)) => end,
            _ => return Err(OpenError::NotGiven),
        };
        let slot_size = end.slot_size as usize;
        let slot_count = u64::from(end.slot_count);
        if size_of::<T>() > slot_size {
            return Err(OpenError::MessageTooLarge {
                message: size_of::<T>(),
                slot: slot_size,
            });
        }
        let mut ring = Self {
            base: end.address as usize,
            slot_size,
            slot_count,
            signal: end.signal,
            bit: end.bit,
            generation: 0,
        };
        if ring.word32(0).load(Ordering::Acquire) != QUEUE_MAGIC {
            return Err(OpenError::BadHeader);
        }
        ring.generation = ring.word32(GENERATION_OFFSET).load(Ordering::Acquire);
        Ok(ring)
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the core maps the queue's header page read-write at
        // `base` for the life of this component (checked by the magic in
        // `open`); the offsets are fixed, 8-byte aligned and in the page.
        unsafe { &*((self.base + offset) as *const AtomicU64) }
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as for `word64`, 4-byte aligned.
        unsafe { &*((self.base + offset) as *const AtomicU32) }
    }

    fn slot(&self, index: u64) -> *mut u8 {
        (self.base + SLOTS_OFFSET + (index % self.slot_count) as usize * self.slot_size) as *mut u8
    }

    /// Reports a reset by the core (the other end restarted).
    fn check_generation(&mut self) -> Result<(), QueueError> {
        let generation = self.word32(GENERATION_OFFSET).load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            return Err(QueueError::PeerRestarted(generation));
        }
        Ok(())
    }
}

/// The sending end of a queue of `T`.
pub struct Sender<T> {
    ring: Ring,
    /// Defer the receiver's wake-up to this component's next wait.
    defer: bool,
    _message: PhantomData<T>,
}

/// The receiving end of a queue of `T`.
pub struct Receiver<T> {
    ring: Ring,
    _message: PhantomData<T>,
}

impl<T: IntoBytes + Immutable> Sender<T> {
    /// Opens the sending end called `name`.
    pub fn open(start: &crate::Start, name: &str) -> Result<Self, OpenError> {
        Self::from_resource(start.resource(name, ResourceKind::QueueSend))
    }

    /// Opens the sending end a start-page resource describes.
    fn from_resource(resource: Option<&Resource>) -> Result<Self, OpenError> {
        Ok(Self {
            ring: Ring::open::<T>(resource)?,
            defer: false,
            _message: PhantomData,
        })
    }

    /// Makes this end defer the receiver's wake-up to the component's next
    /// wait (see [`crate::notification`]): for a component that always
    /// waits after sending — a client awaiting a reply, a server returning
    /// to its request queue — this saves a system call per message. The
    /// signal is also sent by a yield, an exit or
    /// [`crate::notification::flush`].
    pub fn deferring(mut self) -> Self {
        self.defer = true;
        self
    }

    /// The notification bit this end sleeps on.
    pub fn bit(&self) -> u32 {
        self.ring.bit
    }

    /// Sends as many of `messages` as fit without waiting, signalling the
    /// receiver once if it sleeps. Returns how many were sent.
    pub fn try_send_batch(&mut self, messages: &[T]) -> Result<usize, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Relaxed);
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Acquire);
        let room = ring.slot_count.saturating_sub(tail.wrapping_sub(head)) as usize;
        let count = room.min(messages.len());
        for (offset, message) in messages[..count].iter().enumerate() {
            let bytes = message.as_bytes();
            // SAFETY: the slot lies inside the queue memory (index modulo
            // slot_count) and holds slot_size >= size_of::<T>() bytes; the
            // receiver does not read it until `tail` is published below.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    ring.slot(tail + offset as u64),
                    bytes.len(),
                )
            };
        }
        if count > 0 {
            self.publish(tail + count as u64);
        }
        Ok(count)
    }

    /// Sends one message without waiting.
    pub fn try_send(&mut self, message: &T) -> Result<(), QueueError> {
        match self.try_send_batch(core::slice::from_ref(message))? {
            1 => Ok(()),
            _ => Err(QueueError::WouldBlock),
        }
    }

    /// Sends one message, sleeping while the ring is full.
    pub fn send(&mut self, message: &T) -> Result<(), QueueError> {
        self.send_batch(core::slice::from_ref(message))
    }

    /// Sends all of `messages`, in order, sleeping while the ring is full.
    pub fn send_batch(&mut self, mut messages: &[T]) -> Result<(), QueueError> {
        while !messages.is_empty() {
            let sent = self.try_send_batch(messages)?;
            messages = &messages[sent..];
            if !messages.is_empty() {
                self.sleep_until_room()?;
            }
        }
        Ok(())
    }

    /// Sends one message written in place, in the slot itself: `fill`
    /// gets the slot (zeroed where it does not write) and says whether to
    /// send it. This is how bulk data (a guest's disk write) reaches the
    /// receiver with one copy. [`QueueError::WouldBlock`] when the ring is
    /// full; the receiver is signalled as by [`Self::try_send_batch`].
    pub fn try_send_in_place(
        &mut self,
        fill: impl FnOnce(&mut SlotWriter<'_>) -> bool,
    ) -> Result<(), QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Relaxed);
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= ring.slot_count {
            return Err(QueueError::WouldBlock);
        }
        let mut writer = SlotWriter {
            slot: ring.slot(tail),
            length: size_of::<T>(),
            _slot: PhantomData,
        };
        // SAFETY: the slot lies inside the queue memory and holds at least
        // size_of::<T>() bytes; the receiver does not read it before `tail`
        // moves past it.
        unsafe { core::ptr::write_bytes(writer.slot, 0, writer.length) };
        if !fill(&mut writer) {
            return Err(QueueError::WouldBlock);
        }
        self.publish(tail + 1);
        Ok(())
    }

    /// Publishes the slots up to `tail` and signals the receiver if it
    /// sleeps.
    fn publish(&self, tail: u64) {
        let ring = &self.ring;
        ring.word64(TAIL_OFFSET).store(tail, Ordering::Release);
        fence(Ordering::SeqCst);
        if ring.word32(RECEIVER_WAITING_OFFSET).load(Ordering::Relaxed) != 0 {
            if self.defer {
                notification::defer_signal(ring.signal);
            } else {
                syscall::signal(ring.signal);
            }
        }
    }

    fn sleep_until_room(&mut self) -> Result<(), QueueError> {
        let ring = &self.ring;
        ring.word32(SENDER_WAITING_OFFSET)
            .store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Relaxed);
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= ring.slot_count {
            notification::wait_for(1 << ring.bit, None);
        }
        ring.word32(SENDER_WAITING_OFFSET)
            .store(0, Ordering::Relaxed);
        self.ring.check_generation()
    }
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable> Receiver<T> {
    /// Opens the receiving end called `name`.
    pub fn open(start: &crate::Start, name: &str) -> Result<Self, OpenError> {
        Self::from_resource(start.resource(name, ResourceKind::QueueReceive))
    }

    /// Opens the receiving end a start-page resource describes.
    fn from_resource(resource: Option<&Resource>) -> Result<Self, OpenError> {
        Ok(Self {
            ring: Ring::open::<T>(resource)?,
            _message: PhantomData,
        })
    }

    /// The notification bit this end sleeps on.
    pub fn bit(&self) -> u32 {
        self.ring.bit
    }

    /// Takes up to `out.len()` messages without waiting, signalling the
    /// sender once if it sleeps. Returns how many were taken.
    pub fn try_receive_batch(&mut self, out: &mut [T]) -> Result<usize, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Relaxed);
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Acquire);
        // A hostile sender may publish any tail: never read more than a
        // ring's worth.
        let available = tail.wrapping_sub(head).min(ring.slot_count) as usize;
        let count = available.min(out.len());
        for (offset, message) in out[..count].iter_mut().enumerate() {
            let bytes = message.as_mut_bytes();
            // SAFETY: the slot lies inside the queue memory and holds at
            // least size_of::<T>() bytes; T is valid for any bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    ring.slot(head + offset as u64),
                    bytes.as_mut_ptr(),
                    bytes.len(),
                )
            };
        }
        if count > 0 {
            self.release(head + count as u64);
        }
        Ok(count)
    }

    /// Frees the slots up to `head` and signals the sender if it sleeps.
    fn release(&self, head: u64) {
        let ring = &self.ring;
        ring.word64(HEAD_OFFSET).store(head, Ordering::Release);
        fence(Ordering::SeqCst);
        if ring.word32(SENDER_WAITING_OFFSET).load(Ordering::Relaxed) != 0 {
            syscall::signal(ring.signal);
        }
    }

    /// Takes one message without waiting.
    pub fn try_receive(&mut self) -> Result<T, QueueError> {
        let mut message = T::new_zeroed();
        self.try_receive_into(&mut message)?;
        Ok(message)
    }

    /// Takes one message into `message` without waiting (the message is not
    /// copied again through return values).
    pub fn try_receive_into(&mut self, message: &mut T) -> Result<(), QueueError> {
        match self.try_receive_batch(core::slice::from_mut(message))? {
            1 => Ok(()),
            _ => Err(QueueError::WouldBlock),
        }
    }

    /// Takes one message, sleeping while the ring is empty.
    pub fn receive(&mut self) -> Result<T, QueueError> {
        self.receive_timeout(None)
    }

    /// Takes one message into `message`, sleeping while the ring is empty.
    pub fn receive_into(&mut self, message: &mut T) -> Result<(), QueueError> {
        loop {
            match self.try_receive_into(message) {
                Err(QueueError::WouldBlock) => self.sleep_until_message(None)?,
                other => return other,
            }
        }
    }

    /// Takes one message, sleeping at most `timeout_us` while the ring is
    /// empty ([`QueueError::WouldBlock`] when the time runs out).
    pub fn receive_timeout(&mut self, timeout_us: Option<u64>) -> Result<T, QueueError> {
        loop {
            match self.try_receive() {
                Err(QueueError::WouldBlock) => self.sleep_until_message(timeout_us)?,
                other => return other,
            }
        }
    }

    /// Takes at least one and up to `out.len()` messages, sleeping while
    /// the ring is empty.
    pub fn receive_batch(&mut self, out: &mut [T]) -> Result<usize, QueueError> {
        loop {
            match self.try_receive_batch(out)? {
                0 => self.sleep_until_message(None)?,
                count => return Ok(count),
            }
        }
    }

    /// Takes one message without waiting, read in place: `read` gets the
    /// slot, copies out what it needs (each byte once: the sender may
    /// change the slot under it) and its answer is returned. With
    /// [`SlotReader::to_guest`], bulk data (a disk read for a guest) leaves
    /// the queue with one copy.
    pub fn try_receive_in_place<R>(
        &mut self,
        read: impl FnOnce(&SlotReader<'_>) -> R,
    ) -> Result<R, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Relaxed);
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Acquire);
        if tail == head {
            return Err(QueueError::WouldBlock);
        }
        let reader = SlotReader {
            slot: ring.slot(head),
            length: size_of::<T>(),
            _slot: PhantomData,
        };
        let answer = read(&reader);
        self.release(head + 1);
        Ok(answer)
    }

    /// For a component that waits for this queue together with other
    /// bits (a driver waiting for its requests and its interrupt): asks
    /// the sender to signal [`Self::bit`] for the next message, and says
    /// whether the ring is empty, so that waiting is safe (`true`) or a
    /// message already came (`false`: take it first). The request stays
    /// until [`Self::disarm`].
    pub fn arm(&self) -> bool {
        let ring = &self.ring;
        ring.word32(RECEIVER_WAITING_OFFSET)
            .store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Relaxed);
        ring.word64(TAIL_OFFSET).load(Ordering::Acquire) == head
    }

    /// Withdraws [`Self::arm`]'s request: the sender need not signal.
    pub fn disarm(&self) {
        self.ring
            .word32(RECEIVER_WAITING_OFFSET)
            .store(0, Ordering::Relaxed);
    }

    fn sleep_until_message(&mut self, timeout_us: Option<u64>) -> Result<(), QueueError> {
        let ring = &self.ring;
        ring.word32(RECEIVER_WAITING_OFFSET)
            .store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let head = ring.word64(HEAD_OFFSET).load(Ordering::Relaxed);
        let tail = ring.word64(TAIL_OFFSET).load(Ordering::Acquire);
        let mut timed_out = false;
        if tail == head {
            timed_out = notification::wait_for(1 << ring.bit, timeout_us).is_none();
        }
        ring.word32(RECEIVER_WAITING_OFFSET)
            .store(0, Ordering::Relaxed);
        self.ring.check_generation()?;
        if timed_out {
            Err(QueueError::WouldBlock)
        } else {
            Ok(())
        }
    }
}

/// A slot being written by [`Sender::try_send_in_place`]: bounds-checked
/// copies into shared memory.
pub struct SlotWriter<'a> {
    slot: *mut u8,
    length: usize,
    _slot: PhantomData<&'a mut [u8]>,
}

impl SlotWriter<'_> {
    /// Copies `bytes` to `offset`; `false` (nothing written) past the
    /// message's end.
    pub fn put(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.length)
        {
            return false;
        }
        // SAFETY: inside the slot (checked); shared memory that no Rust
        // reference covers.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.slot.add(offset), bytes.len())
        };
        true
    }

    /// Copies `length` bytes of guest memory at `address` to `offset`;
    /// `false` past the message's end or outside guest memory.
    pub fn put_guest(
        &mut self,
        offset: usize,
        memory: &crate::vm::GuestMemory,
        address: u64,
        length: usize,
    ) -> bool {
        if offset
            .checked_add(length)
            .is_none_or(|end| end > self.length)
        {
            return false;
        }
        // SAFETY: the destination is inside the slot (checked), which no
        // Rust reference covers.
        unsafe { memory.copy_out(address, self.slot.add(offset), length) }.is_ok()
    }
}

/// A slot being read by [`Receiver::try_receive_in_place`].
pub struct SlotReader<'a> {
    slot: *const u8,
    length: usize,
    _slot: PhantomData<&'a [u8]>,
}

impl SlotReader<'_> {
    /// Copies the bytes at `offset` into `into`; `false` past the
    /// message's end.
    pub fn get(&self, offset: usize, into: &mut [u8]) -> bool {
        if offset
            .checked_add(into.len())
            .is_none_or(|end| end > self.length)
        {
            return false;
        }
        // SAFETY: inside the slot (checked).
        unsafe {
            core::ptr::copy_nonoverlapping(self.slot.add(offset), into.as_mut_ptr(), into.len())
        };
        true
    }

    /// The message's first `size_of::<H>()` bytes as an `H` (a header
    /// whose fields the caller then validates).
    pub fn header<H: FromBytes + IntoBytes>(&self) -> Option<H> {
        let mut header = H::new_zeroed();
        self.get(0, header.as_mut_bytes()).then_some(header)
    }

    /// Copies `length` bytes at `offset` into guest memory at `address`;
    /// `false` past the message's end or outside guest memory.
    pub fn to_guest(
        &self,
        offset: usize,
        length: usize,
        memory: &crate::vm::GuestMemory,
        address: u64,
    ) -> bool {
        if offset
            .checked_add(length)
            .is_none_or(|end| end > self.length)
        {
            return false;
        }
        // SAFETY: the source is inside the slot (checked).
        unsafe { memory.copy_in(address, self.slot.add(offset), length) }.is_ok()
    }
}

#[cfg(test)]
mod tests {
    //! The ring code itself, between two host threads: the same atomics and
    //! fences the components use, on a heap buffer laid out like queue
    //! memory. Only the non-blocking operations are used (the blocking ones
    //! sleep through the core).

    use super::*;
    use microvisor_abi::queue::{SLOT_COUNT_OFFSET, SLOT_SIZE_OFFSET};
    use microvisor_abi::start::QueueEnd;
    use std::sync::Arc;

    /// Queue memory on the heap (8-byte aligned, as the atomics need).
    struct Memory(Vec<u64>);

    impl Memory {
        fn new(slot_size: u32, slot_count: u32) -> Arc<Self> {
            let bytes = SLOTS_OFFSET + (slot_size * slot_count) as usize;
            let mut words = vec![0u64; bytes / 8];
            let header = words.as_mut_ptr().cast::<u8>();
            // SAFETY: the offsets are inside the buffer's first page and aligned.
            unsafe {
                header.add(SLOT_SIZE_OFFSET).cast::<u32>().write(slot_size);
                header
                    .add(SLOT_COUNT_OFFSET)
                    .cast::<u32>()
                    .write(slot_count);
                header.add(GENERATION_OFFSET).cast::<u32>().write(1);
                header.add(0).cast::<u32>().write(QUEUE_MAGIC);
            }
            Arc::new(Self(words))
        }

        fn resource(&self, slot_size: u32, slot_count: u32) -> Resource {
            Resource::new(
                "test",
                ResourceView::QueueSend(QueueEnd {
                    address: self.0.as_ptr() as u64,
                    slot_size,
                    slot_count,
                    bit: 0,
                    signal: 0,
                }),
            )
        }

        fn header_u32(&self, offset: usize) -> &AtomicU32 {
            // SAFETY: inside the buffer, aligned, only accessed atomically.
            unsafe { &*(self.0.as_ptr().cast::<u8>().add(offset).cast::<AtomicU32>()) }
        }

        fn header_u64(&self, offset: usize) -> &AtomicU64 {
            // SAFETY: as above.
            unsafe { &*(self.0.as_ptr().cast::<u8>().add(offset).cast::<AtomicU64>()) }
        }
    }

    /// A small deterministic random stream for batch sizes.
    struct Random(u64);

    impl Random {
        fn below(&mut self, limit: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % limit
        }
    }

    /// A 64-byte message whose words all derive from its sequence number,
    /// so a torn or stale slot is detected.
    #[derive(
        Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
    )]
    #[repr(C)]
    struct Message([u64; 8]);

    impl Message {
        fn new(sequence: u64) -> Self {
            Self(core::array::from_fn(|i| {
                sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
            }))
        }
    }

    fn stress(slot_count: u32, messages: u64) {
        let memory = Memory::new(64, slot_count);
        let resource = memory.resource(64, slot_count);
        let mut sender = Sender::<Message>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<Message>::from_resource(Some(&resource)).unwrap();
        let keep = Arc::clone(&memory);
        let producer = std::thread::spawn(move || {
            let _memory = keep;
            let mut random = Random(0x1234_5678);
            let mut next = 0u64;
            let mut batch = Vec::new();
            while next < messages {
                let size = (1 + random.below(17)).min(messages - next);
                batch.clear();
                batch.extend((next..next + size).map(Message::new));
                let mut sent = 0;
                while sent < batch.len() {
                    sent += sender.try_send_batch(&batch[sent..]).unwrap();
                    std::hint::spin_loop();
                }
                next += size;
            }
        });
        let mut random = Random(0x8765_4321);
        let mut expected = 0u64;
        let mut batch = vec![Message::default(); 40];
        while expected < messages {
            let want = 1 + random.below(40) as usize;
            let got = receiver.try_receive_batch(&mut batch[..want]).unwrap();
            for message in &batch[..got] {
                assert_eq!(
                    *message,
                    Message::new(expected),
                    "message {expected} wrong or out of order"
                );
                expected += 1;
            }
            if got == 0 {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(receiver.try_receive(), Err(QueueError::WouldBlock));
        drop(memory);
    }

    #[test]
    fn two_threads_small_ring() {
        stress(4, 200_000);
    }

    #[test]
    fn two_threads_large_ring() {
        stress(256, 200_000);
    }

    #[test]
    fn full_and_empty_rings_would_block() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        assert_eq!(receiver.try_receive(), Err(QueueError::WouldBlock));
        assert_eq!(sender.try_send_batch(&[1, 2, 3, 4, 5, 6]), Ok(4));
        assert_eq!(sender.try_send(&7), Err(QueueError::WouldBlock));
        let mut out = [0u64; 8];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(4));
        assert_eq!(out[..4], [1, 2, 3, 4]);
    }

    #[test]
    fn a_reset_is_reported_once_to_each_end() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&1).unwrap();
        // What the core does when one end restarts.
        memory.header_u64(HEAD_OFFSET).store(0, Ordering::Relaxed);
        memory.header_u64(TAIL_OFFSET).store(0, Ordering::Relaxed);
        memory
            .header_u32(GENERATION_OFFSET)
            .store(2, Ordering::Release);
        assert_eq!(sender.try_send(&2), Err(QueueError::PeerRestarted(2)));
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&3).unwrap();
        assert_eq!(receiver.try_receive(), Ok(3));
    }

    #[test]
    fn a_hostile_tail_never_reads_past_the_ring() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        memory
            .header_u64(TAIL_OFFSET)
            .store(u64::MAX - 3, Ordering::Release);
        let mut out = [0u64; 64];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(4));
    }

    #[test]
    fn opening_checks_what_it_is_given() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        assert!(matches!(
            Sender::<u64>::from_resource(None),
            Err(OpenError::NotGiven)
        ));
        assert!(matches!(
            Receiver::<[u64; 2]>::from_resource(Some(&resource)),
            Err(OpenError::MessageTooLarge {
                message: 16,
                slot: 8
            })
        ));
        memory.header_u32(0).store(0, Ordering::Relaxed);
        assert!(matches!(
            Sender::<u64>::from_resource(Some(&resource)),
            Err(OpenError::BadHeader)
        ));
    }

    #[test]
    fn messages_written_and_read_in_place() {
        let memory = Memory::new(64, 2);
        let resource = memory.resource(64, 2);
        let mut sender = Sender::<Message>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<Message>::from_resource(Some(&resource)).unwrap();
        // Written in two pieces; what is not written reads as zero.
        sender
            .try_send_in_place(|slot| {
                slot.put(0, &7u64.to_le_bytes())
                    && slot.put(56, &9u64.to_le_bytes())
                    && !slot.put(60, &[0; 8])
                    && !slot.put(usize::MAX, &[1])
            })
            .unwrap();
        // A fill that says no sends nothing.
        assert_eq!(
            sender.try_send_in_place(|slot| !slot.put(0, &[1])),
            Err(QueueError::WouldBlock)
        );
        sender.try_send(&Message::new(3)).unwrap();
        assert_eq!(
            sender.try_send_in_place(|_| true),
            Err(QueueError::WouldBlock),
            "full"
        );
        let first = receiver
            .try_receive_in_place(|slot| {
                let mut tail = [0u8; 8];
                assert!(slot.get(56, &mut tail));
                assert!(!slot.get(60, &mut tail));
                (slot.header::<u64>(), u64::from_le_bytes(tail))
            })
            .unwrap();
        assert_eq!(first, (Some(7), 9));
        let second = receiver.try_receive_in_place(|slot| slot.header::<Message>());
        assert_eq!(second, Ok(Some(Message::new(3))));
        assert_eq!(
            receiver.try_receive_in_place(|_| ()),
            Err(QueueError::WouldBlock)
        );
    }
}
