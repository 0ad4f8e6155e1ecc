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
//! end may be hostile. A message copied out is checked against its
//! slot's checksum on the copy; one read in place (bulk data straight
//! into a guest's buffer) after the read, which therefore commits
//! nothing until it is known whole ([`InPlace`]).
//!
//! Each end keeps its own index privately and only publishes it, so a
//! stray write to the header cannot move it; the sender publishes its
//! tail only over the tail it wrote behind (a compare-and-swap), so a
//! message another writer slipped into the slot it was filling (a
//! flood) is never taken for its own. The other end's index is
//! believed only while it is possible (the ring never holds more than its
//! slots), and a message only when its slot's stamp names it and the
//! checksum of the bytes the stamp says it fills matches (a message
//! shorter than its type — a block request without data — fills and
//! costs only its length; the rest reads as zero): a corrupted
//! or replayed index would otherwise make the receiver take stale slots —
//! old requests, executed twice. An end that finds either impossible
//! asks the core to reset the queue (`QueueReset`) and reports
//! [`QueueError::PeerRestarted`], so both ends take the path they take
//! when the other restarts (in-flight messages resent or forgotten)
//! rather than trusting a broken ring.
//!
//! The `*_waiting` flags only save signals; a stray write that clears one
//! would leave the sleeper asleep with work in its ring. So no wait of a
//! component with queues sleeps longer than [`RECHECK_US`] at a time
//! without looking ([`due_bits`]): a receive end whose ring holds
//! messages, or a send end whose ring has room while it waits, counts as
//! signalled.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use microvisor_abi::queue::{
    Checksum, GENERATION_OFFSET, HEAD_OFFSET, MAX_SLOTS, QUEUE_MAGIC, RECEIVER_WAITING_OFFSET,
    SENDER_WAITING_OFFSET, SLOTS_OFFSET, STAMP_BYTES, STAMP_CHECKSUM, STAMP_LENGTH, STAMPS_OFFSET,
    TAIL_OFFSET, stamp,
};
use microvisor_abi::start::{Resource, ResourceKind, ResourceView};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{notification, syscall};

/// The longest a component with queues sleeps without looking at them
/// for a lost wake-up.
pub const RECHECK_US: u64 = 250_000;

/// This component's start page, once [`watch_for_lost_wakeups`] has it.
static START: core::sync::atomic::AtomicPtr<microvisor_abi::start::StartInfo> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Lets waits look at this component's queues (`runtime::enter` calls it).
pub(crate) fn watch_for_lost_wakeups(info: &'static microvisor_abi::start::StartInfo) {
    let has_queues = info.views().any(|(_, view)| {
        matches!(
            view,
            ResourceView::QueueSend(_) | ResourceView::QueueReceive(_)
        )
    });
    if has_queues {
        START.store(core::ptr::from_ref(info).cast_mut(), Ordering::Relaxed);
    }
}

/// Whether waits must look at the queues every [`RECHECK_US`].
#[inline]
pub fn watching() -> bool {
    !START.load(Ordering::Relaxed).is_null()
}

/// The notification bits of queue ends that have work although nobody
/// signalled: messages in a receive end's ring, or room in a send end's
/// ring while it waits for room. Read from the headers (both indices as
/// published), so it needs no end's state.
pub fn due_bits() -> u64 {
    let info = START.load(Ordering::Relaxed);
    if info.is_null() {
        return 0;
    }
    // SAFETY: set from the `&'static StartInfo` the entry checked; the
    // page stays mapped read-only for the component's life.
    let info = unsafe { &*info };
    let mut bits = 0;
    for (_, view) in info.views() {
        let (end, receiving) = match view {
            ResourceView::QueueReceive(end) => (end, true),
            ResourceView::QueueSend(end) => (end, false),
            _ => continue,
        };
        if end.slot_count == 0 || end.slot_count > MAX_SLOTS || end.bit >= 64 {
            continue;
        }
        let word64 = |offset: usize| {
            // SAFETY: the core maps each queue's header page read-write at
            // its address for the component's life; fixed aligned offsets.
            unsafe { &*((end.address as usize + offset) as *const AtomicU64) }
                .load(Ordering::Acquire)
        };
        let word32 = |offset: usize| {
            // SAFETY: as above.
            unsafe { &*((end.address as usize + offset) as *const AtomicU32) }
                .load(Ordering::Relaxed)
        };
        let used = word64(TAIL_OFFSET).wrapping_sub(word64(HEAD_OFFSET));
        let due = if receiving {
            used != 0
        } else {
            word32(SENDER_WAITING_OFFSET) != 0 && used < u64::from(end.slot_count)
        };
        if due {
            bits |= 1 << end.bit;
        }
    }
    bits
}

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
    /// This end's own index (the sender's tail, the receiver's head),
    /// kept here and only published to the header.
    own: u64,
    /// Where this end publishes `own`: [`TAIL_OFFSET`] or [`HEAD_OFFSET`].
    own_offset: usize,
}

impl Ring {
    fn open<T>(resource: Option<&Resource>, sending: bool) -> Result<Self, OpenError> {
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
            own: 0,
            own_offset: if sending { TAIL_OFFSET } else { HEAD_OFFSET },
        };
        if ring.word32(0).load(Ordering::Acquire) != QUEUE_MAGIC
            || slot_count > u64::from(MAX_SLOTS)
            || !slot_size.is_multiple_of(8)
        {
            return Err(OpenError::BadHeader);
        }
        ring.generation = ring.word32(GENERATION_OFFSET).load(Ordering::Acquire);
        ring.own = ring.word64(ring.own_offset).load(Ordering::Relaxed);
        Ok(ring)
    }

    /// The other end's index (acquire: what it published before is
    /// visible).
    #[inline(always)]
    fn other(&self) -> u64 {
        let offset = if self.own_offset == TAIL_OFFSET {
            HEAD_OFFSET
        } else {
            TAIL_OFFSET
        };
        self.word64(offset).load(Ordering::Acquire)
    }

    /// Messages in the ring by the two indices, or `None` when that is
    /// impossible (more than the ring holds: a corrupted index).
    #[inline(always)]
    fn used(&self, tail: u64, head: u64) -> Option<u64> {
        Some(tail.wrapping_sub(head)).filter(|&used| used <= self.slot_count)
    }

    /// Where the stamp of message `index` starts in the header.
    #[inline(always)]
    fn stamp_at(&self, index: u64) -> usize {
        STAMPS_OFFSET + STAMP_BYTES * (index % self.slot_count) as usize
    }

    #[inline(always)]
    fn stamp_word(&self, index: u64) -> &AtomicU32 {
        self.word32(self.stamp_at(index))
    }

    #[inline(always)]
    fn checksum_word(&self, index: u64) -> &AtomicU32 {
        self.word32(self.stamp_at(index) + STAMP_CHECKSUM)
    }

    #[inline(always)]
    fn length_word(&self, index: u64) -> &AtomicU32 {
        self.word32(self.stamp_at(index) + STAMP_LENGTH)
    }

    /// The length stamped for message `index` if it is possible: a
    /// multiple of 8 no larger than the slot.
    #[inline(always)]
    fn stamped_length(&self, index: u64) -> Option<usize> {
        let length = self.length_word(index).load(Ordering::Relaxed) as usize;
        (length <= self.slot_size && length.is_multiple_of(8)).then_some(length)
    }

    /// The checksum of the first `length` bytes (a multiple of 8) of the
    /// slot of message `index`, read word by word.
    fn slot_checksum(&self, index: u64, length: usize) -> u32 {
        self.sum_rest(
            self.slot(index).cast(),
            0,
            length / 8,
            Checksum::new(length),
        )
        .finish()
    }

    /// Stamps the slot of message `index` once its first `length` bytes
    /// (a multiple of 8) are written.
    fn stamp(&self, index: u64, length: usize) {
        self.checksum_word(index)
            .store(self.slot_checksum(index, length), Ordering::Relaxed);
        self.length_word(index)
            .store(length as u32, Ordering::Relaxed);
        self.stamp_word(index)
            .store(stamp(index), Ordering::Relaxed);
    }

    /// Writes `bytes` (a message, or the part of it that matters: the
    /// rest reads as zero) into the slot of message `index` and stamps
    /// it. The checksum is taken of the bytes in this end's own memory,
    /// not read back from the slot; a length that is not a multiple of 8
    /// has its last word padded with zeros in the slot.
    #[inline(always)]
    fn write_stamped(&self, index: u64, bytes: &[u8]) {
        let slot = self.slot(index);
        // SAFETY: the slot lies inside the queue memory and holds
        // slot_size >= bytes.len() bytes (checked at open and by the
        // callers); shared memory no Rust reference covers, which the
        // receiver does not read before `tail` moves past it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), slot, bytes.len()) };
        let length = bytes.len().next_multiple_of(8);
        let mut sum = Checksum::new(length);
        let whole = sum_words(&mut sum, bytes);
        let tail = &bytes[whole * 8..];
        if !tail.is_empty() {
            let mut padded = [0u8; 8];
            padded[..tail.len()].copy_from_slice(tail);
            let word = u64::from_le_bytes(padded);
            // SAFETY: the padded word is inside the slot (slot sizes are
            // multiples of 8; slots are 8-aligned).
            unsafe { slot.cast::<u64>().add(whole).write_volatile(word.to_le()) };
            sum.word(word);
        }
        self.checksum_word(index)
            .store(sum.finish(), Ordering::Relaxed);
        self.length_word(index)
            .store(length as u32, Ordering::Relaxed);
        self.stamp_word(index)
            .store(stamp(index), Ordering::Relaxed);
    }

    /// Copies the slot of message `index` into `message` and says whether
    /// it held that message, intact: its stamp names it, its length is
    /// possible and the checksum matches the copy (taken of this end's
    /// own memory, so a sender changing the slot meanwhile is caught, not
    /// half-believed). Bytes of `message` past the stamped length are
    /// zero; slot bytes inside the length but past `message` are summed,
    /// not copied. On `false`, `message` holds whatever was read.
    #[inline(always)]
    fn read_stamped<T: FromBytes + IntoBytes>(&self, index: u64, message: &mut T) -> bool {
        if self.stamp_word(index).load(Ordering::Relaxed) != stamp(index) {
            return false;
        }
        let length = self.length_word(index).load(Ordering::Relaxed) as usize;
        let bytes = message.as_mut_bytes();
        if length != bytes.len().next_multiple_of(8) {
            return self.read_stamped_part(index, length, bytes);
        }
        // The whole message, the common case: its size known here.
        let mut sum = Checksum::new(length);
        self.copy_summed(index, bytes, &mut sum);
        self.checksum_word(index).load(Ordering::Relaxed) == sum.finish()
    }

    /// Copies the first `bytes.len()` bytes of the slot of message
    /// `index` into `bytes` and adds them to `sum`, a partial last word
    /// as the slot holds it (its padding included, the copy's tail taken
    /// from that very read); returns the words summed.
    #[inline(always)]
    fn copy_summed(&self, index: u64, bytes: &mut [u8], sum: &mut Checksum) -> usize {
        let slot = self.slot(index);
        let whole = bytes.len() / 8;
        // SAFETY: the slot lies inside the queue memory and holds at least
        // bytes.len() bytes (at most size_of::<T>() <= slot_size).
        unsafe { core::ptr::copy_nonoverlapping(slot, bytes.as_mut_ptr(), whole * 8) };
        sum_words(sum, &bytes[..whole * 8]);
        let partial = bytes.len() - whole * 8;
        if partial == 0 {
            return whole;
        }
        // SAFETY: inside the slot (slot sizes are multiples of 8; slots
        // are 8-aligned).
        let word = u64::from_le(unsafe { slot.cast::<u64>().add(whole).read_volatile() });
        sum.word(word);
        bytes[whole * 8..].copy_from_slice(&word.to_le_bytes()[..partial]);
        whole + 1
    }

    /// [`Self::read_stamped`] of a message whose stamped `length` is not
    /// its type's (padded) size: shorter (the rest of `bytes` zeroed),
    /// longer (a flood's whole slot: the stamped bytes past the message
    /// summed, not copied), or impossible (`false`).
    #[inline(never)]
    fn read_stamped_part(&self, index: u64, length: usize, bytes: &mut [u8]) -> bool {
        if length > self.slot_size || !length.is_multiple_of(8) {
            return false;
        }
        let take = length.min(bytes.len());
        let mut sum = Checksum::new(length);
        let words = self.copy_summed(index, &mut bytes[..take], &mut sum);
        bytes[take..].fill(0);
        if words < length / 8 {
            sum = self.sum_rest(self.slot(index).cast(), words, length / 8, sum);
        }
        self.checksum_word(index).load(Ordering::Relaxed) == sum.finish()
    }

    /// Adds the words `from..to` of `slot` to `sum` (out of line, so that
    /// a message copied whole pays nothing for it).
    #[inline(never)]
    fn sum_rest(&self, slot: *const u64, from: usize, to: usize, mut sum: Checksum) -> Checksum {
        let to = to.min(self.slot_size / 8);
        let read = |word: usize| {
            // SAFETY: inside the slot (`slot_size` bytes, 8-aligned;
            // `word < to`); a volatile read of shared memory the other
            // end may write.
            u64::from_le(unsafe { slot.add(word).read_volatile() })
        };
        let mut word = from;
        // Eight words a turn, as `sum_words`.
        while word + 8 <= to {
            for at in word..word + 8 {
                sum.word(read(at));
            }
            word += 8;
        }
        while word < to {
            sum.word(read(word));
            word += 1;
        }
        sum
    }

    /// Publishes this end's index again if a stray write changed it in
    /// the header, and wakes the other end, which may wait on the wrong
    /// value (a sender for room the receiver made long ago).
    #[inline(always)]
    fn republish(&self) {
        let published = self.word64(self.own_offset);
        if published.load(Ordering::Relaxed) != self.own {
            published.store(self.own, Ordering::Release);
            fence(Ordering::SeqCst);
            self.wake_other();
        }
    }

    #[cfg(not(test))]
    fn wake_other(&self) {
        syscall::signal(self.signal);
    }

    #[cfg(test)]
    fn wake_other(&self) {}

    /// Publishes this end's index.
    #[inline(always)]
    fn publish_own(&mut self, value: u64) {
        self.own = value;
        self.word64(self.own_offset).store(value, Ordering::Release);
    }

    /// The ring is impossible (a corrupted index or stamp): has the core
    /// reset it, as a restart of either end would, and reports it the
    /// same way.
    #[cold]
    fn recover(&mut self) -> QueueError {
        self.reset_by_core();
        let generation = self.word32(GENERATION_OFFSET).load(Ordering::Acquire);
        self.generation = generation;
        self.own = self.word64(self.own_offset).load(Ordering::Relaxed);
        QueueError::PeerRestarted(generation)
    }

    #[cfg(not(test))]
    fn reset_by_core(&self) {
        syscall::queue_reset(self.base as u64);
    }

    /// The host tests' stand-in for the core's reset.
    #[cfg(test)]
    fn reset_by_core(&self) {
        for slot in 0..self.slot_count {
            self.stamp_word(slot).store(0, Ordering::Relaxed);
            self.checksum_word(slot).store(0, Ordering::Relaxed);
        }
        self.word64(HEAD_OFFSET).store(0, Ordering::Relaxed);
        self.word64(TAIL_OFFSET).store(0, Ordering::Relaxed);
        let generation = self.word32(GENERATION_OFFSET).load(Ordering::Relaxed);
        self.word32(GENERATION_OFFSET)
            .store(generation.wrapping_add(1), Ordering::Release);
    }

    #[inline(always)]
    fn word64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the core maps the queue's header page read-write at
        // `base` for the life of this component (checked by the magic in
        // `open`); the offsets are fixed, 8-byte aligned and in the page.
        unsafe { &*((self.base + offset) as *const AtomicU64) }
    }

    #[inline(always)]
    fn word32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: as for `word64`, 4-byte aligned.
        unsafe { &*((self.base + offset) as *const AtomicU32) }
    }

    #[inline(always)]
    fn slot(&self, index: u64) -> *mut u8 {
        (self.base + SLOTS_OFFSET + (index % self.slot_count) as usize * self.slot_size) as *mut u8
    }

    /// Reports a reset by the core (the other end restarted).
    #[inline(always)]
    fn check_generation(&mut self) -> Result<(), QueueError> {
        let generation = self.word32(GENERATION_OFFSET).load(Ordering::Acquire);
        if generation != self.generation {
            return self.generation_changed(generation);
        }
        Ok(())
    }

    /// [`Self::check_generation`] when the generation changed.
    #[cold]
    #[inline(never)]
    fn generation_changed(&mut self, generation: u32) -> Result<(), QueueError> {
        // The core's reset zeroes this end's published index, which only
        // this end writes otherwise. Any other value means a stray write
        // changed the generation: the ring cannot be trusted (this end's
        // index in the header may be stray too, and stale slots keep
        // their stamps), so it is reset for real.
        if self.word64(self.own_offset).load(Ordering::Relaxed) != 0 {
            return Err(self.recover());
        }
        self.generation = generation;
        self.own = 0;
        Err(QueueError::PeerRestarted(generation))
    }
}

/// Adds the whole 8-byte words of `bytes` (this end's own memory) to
/// `sum`; returns how many there were.
#[inline(always)]
fn sum_words(sum: &mut Checksum, bytes: &[u8]) -> usize {
    let word = |bytes: &[u8]| {
        let mut value = [0u8; 8];
        value.copy_from_slice(bytes);
        u64::from_le_bytes(value)
    };
    // Eight words a turn: the sum is a chain, so this only saves the
    // loop's own steps (a length known only at run time is not unrolled
    // by the compiler, and one known is unrolled less).
    let eights = bytes.chunks_exact(64);
    let rest = eights.remainder();
    for eight in eights {
        for at in (0..64).step_by(8) {
            sum.word(word(&eight[at..at + 8]));
        }
    }
    for bytes in rest.chunks_exact(8) {
        sum.word(word(bytes));
    }
    bytes.len() / 8
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
            ring: Ring::open::<T>(resource, true)?,
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
    #[inline(always)]
    pub fn try_send_batch(&mut self, messages: &[T]) -> Result<usize, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        ring.republish();
        let tail = ring.own;
        let Some(used) = ring.used(tail, ring.other()) else {
            return Err(self.ring.recover());
        };
        let room = (ring.slot_count - used) as usize;
        let count = room.min(messages.len());
        for (offset, message) in messages[..count].iter().enumerate() {
            ring.write_stamped(tail + offset as u64, message.as_bytes());
        }
        if count > 0 {
            self.publish(tail + count as u64)?;
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
    #[inline(always)]
    pub fn send(&mut self, message: &T) -> Result<(), QueueError> {
        while self.try_send_batch(core::slice::from_ref(message))? == 0 {
            self.sleep_until_room()?;
        }
        Ok(())
    }

    /// Sends the first `length` bytes of `message` (all of it if it is
    /// shorter) without waiting: the receiver reads the rest as zero, and
    /// neither end copies or sums it. For a message whose tail is unused
    /// (a block request without data, a short frame).
    /// [`QueueError::WouldBlock`] when the ring is full.
    pub fn try_send_prefix(&mut self, message: &T, length: usize) -> Result<(), QueueError> {
        let tail = self.free_tail()?;
        let bytes = message.as_bytes();
        self.ring
            .write_stamped(tail, &bytes[..length.min(bytes.len())]);
        self.publish(tail + 1)
    }

    /// The tail, when the ring has room for one more message there
    /// ([`QueueError::WouldBlock`] when full; an impossible ring reset).
    #[inline(always)]
    fn free_tail(&mut self) -> Result<u64, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        ring.republish();
        let tail = ring.own;
        match ring.used(tail, ring.other()) {
            None => Err(self.ring.recover()),
            Some(used) if used == ring.slot_count => Err(QueueError::WouldBlock),
            Some(_) => Ok(tail),
        }
    }

    /// [`Self::try_send_prefix`], sleeping while the ring is full.
    pub fn send_prefix(&mut self, message: &T, length: usize) -> Result<(), QueueError> {
        loop {
            match self.try_send_prefix(message, length) {
                Err(QueueError::WouldBlock) => self.sleep_until_room()?,
                done => return done,
            }
        }
    }

    /// Sends all of `messages`, in order, sleeping while the ring is full.
    #[inline(always)]
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
    /// gets the slot and says whether to send it. The message ends where
    /// the furthest write ended: bytes it skipped below that are zeroed,
    /// and the receiver reads everything past it as zero. This is how
    /// bulk data (a guest's disk write) reaches the receiver with one
    /// copy, and a header alone costs no more than a header.
    /// [`QueueError::WouldBlock`] when the ring is full; the receiver is
    /// signalled as by [`Self::try_send_batch`].
    pub fn try_send_in_place(
        &mut self,
        fill: impl FnOnce(&mut SlotWriter<'_>) -> bool,
    ) -> Result<(), QueueError> {
        let tail = self.free_tail()?;
        let ring = &self.ring;
        let mut writer = SlotWriter {
            slot: ring.slot(tail),
            length: size_of::<T>(),
            filled: 0,
            _slot: PhantomData,
        };
        if !fill(&mut writer) {
            return Err(QueueError::WouldBlock);
        }
        // The last word's padding (slots hold at least that: their sizes
        // are multiples of 8).
        let length = writer.filled.next_multiple_of(8);
        writer.zero(writer.filled, length);
        ring.stamp(tail, length);
        self.publish(tail + 1)
    }

    /// Publishes the slots up to `tail` and signals the receiver if it
    /// sleeps — if the header still holds the tail this end wrote behind.
    /// Anything else moved it while the slots were being written: a flood
    /// (another writer, which may have put its own stamped message in the
    /// very slot this end was filling, for the receiver to take instead),
    /// a stray write, or the core's reset. Publishing over it would let
    /// the message go unread while this end counts it sent (a guest's disk
    /// request the store never saw), so the queue is reset, or the core's
    /// reset reported, and the caller sends again what it has no answer
    /// for. One compare-and-swap: no moment between the test and the
    /// publishing for another writer to slip into.
    #[inline(always)]
    fn publish(&mut self, tail: u64) -> Result<(), QueueError> {
        let written_behind = self.ring.own;
        if self
            .ring
            .word64(TAIL_OFFSET)
            .compare_exchange(written_behind, tail, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return Err(self.tail_moved());
        }
        self.ring.own = tail;
        let ring = &self.ring;
        fence(Ordering::SeqCst);
        if ring.word32(RECEIVER_WAITING_OFFSET).load(Ordering::Relaxed) != 0 {
            if self.defer {
                notification::defer_signal(ring.signal);
            } else {
                syscall::signal(ring.signal);
            }
        }
        Ok(())
    }

    /// [`Self::publish`] found the tail moved: the core's reset is
    /// reported as it is; anything else resets the queue.
    #[cold]
    #[inline(never)]
    fn tail_moved(&mut self) -> QueueError {
        match self.ring.check_generation() {
            Err(reset) => reset,
            Ok(()) => self.ring.recover(),
        }
    }

    fn sleep_until_room(&mut self) -> Result<(), QueueError> {
        let ring = &self.ring;
        ring.word32(SENDER_WAITING_OFFSET)
            .store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // A full ring sleeps; an impossible one is left to the next send,
        // which resets it.
        if ring.used(ring.own, ring.other()) == Some(ring.slot_count) {
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
            ring: Ring::open::<T>(resource, false)?,
            _message: PhantomData,
        })
    }

    /// The notification bit this end sleeps on.
    pub fn bit(&self) -> u32 {
        self.ring.bit
    }

    /// Takes up to `out.len()` messages without waiting, signalling the
    /// sender once if it sleeps. Returns how many were taken.
    #[inline(always)]
    pub fn try_receive_batch(&mut self, out: &mut [T]) -> Result<usize, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        ring.republish();
        let head = ring.own;
        // A hostile or corrupted tail may say anything: never read more
        // than a ring's worth, nor a slot whose stamp names another
        // message.
        let Some(available) = ring.used(ring.other(), head) else {
            return Err(self.ring.recover());
        };
        let count = (available as usize).min(out.len());
        for (offset, message) in out[..count].iter_mut().enumerate() {
            if !ring.read_stamped(head + offset as u64, message) {
                return Err(self.ring.recover());
            }
        }
        if count > 0 {
            self.release(head + count as u64);
        }
        Ok(count)
    }

    /// Frees the slots up to `head` and signals the sender if it sleeps.
    fn release(&mut self, head: u64) {
        self.ring.publish_own(head);
        let ring = &self.ring;
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
    #[inline(always)]
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
    #[inline(always)]
    pub fn receive_into(&mut self, message: &mut T) -> Result<(), QueueError> {
        loop {
            if self.looks_empty() {
                self.sleep_until_message(None)?;
            }
            match self.try_receive_into(message) {
                Err(QueueError::WouldBlock) => {}
                other => return other,
            }
        }
    }

    /// Whether a receive would find nothing and no reset to report: the
    /// other end's published index is this end's own (a cheap test
    /// before sleeping, which tests again after asking for a signal; a
    /// ring it cannot judge is left to the receive, which resets it).
    #[inline(always)]
    fn looks_empty(&self) -> bool {
        let ring = &self.ring;
        ring.other() == ring.own
            && ring.word32(GENERATION_OFFSET).load(Ordering::Relaxed) == ring.generation
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
    #[inline(always)]
    pub fn receive_batch(&mut self, out: &mut [T]) -> Result<usize, QueueError> {
        loop {
            if self.looks_empty() {
                self.sleep_until_message(None)?;
            }
            match self.try_receive_batch(out)? {
                0 => {}
                count => return Ok(count),
            }
        }
    }

    /// Takes one message without waiting, read in place: `read` gets the
    /// slot, copies out what it needs (with [`SlotReader::to_guest`], bulk
    /// data such as a disk read for a guest leaves the queue with one
    /// copy) and answers what it found. The slot is checked *after* the
    /// read, against the checksum stamped with it: a message damaged in
    /// the slot, or changed while `read` copied it (this end preempted
    /// mid-copy while something wrote the slot), comes back
    /// [`InPlace::Torn`] and the queue is reset, as for a damaged message
    /// read by copy. So `read` must commit nothing — no request marked
    /// answered, no buffer handed back to a guest: the caller does that
    /// with the answer of an [`InPlace::Whole`] read, and undoes what a
    /// torn one took.
    pub fn try_receive_in_place<R>(
        &mut self,
        read: impl FnOnce(&SlotReader<'_>) -> R,
    ) -> Result<InPlace<R>, QueueError> {
        self.ring.check_generation()?;
        let ring = &self.ring;
        ring.republish();
        let head = ring.own;
        match ring.used(ring.other(), head) {
            None => return Err(self.ring.recover()),
            Some(0) => return Err(QueueError::WouldBlock),
            Some(_) if ring.stamp_word(head).load(Ordering::Relaxed) != stamp(head) => {
                return Err(self.ring.recover());
            }
            Some(_) => {}
        }
        let ring = &self.ring;
        let Some(filled) = ring.stamped_length(head) else {
            return Err(self.ring.recover());
        };
        let stamped = ring.checksum_word(head).load(Ordering::Relaxed);
        let reader = SlotReader {
            slot: ring.slot(head),
            length: size_of::<T>(),
            filled,
            _slot: PhantomData,
        };
        let answer = read(&reader);
        // Every read of the slot above before the sum below: the slot
        // summed to what was stamped before the read, after it, held
        // the message all through (another whole message stamped over
        // it sums to its own checksum, not this one).
        fence(Ordering::Acquire);
        if ring.slot_checksum(head, filled) == stamped {
            self.release(head + 1);
            Ok(InPlace::Whole(answer))
        } else {
            self.torn();
            Ok(InPlace::Torn(answer))
        }
    }

    /// An in-place read found its slot damaged or changed: the queue is
    /// reset (the sender then sends again what it has no answer for).
    #[cold]
    #[inline(never)]
    fn torn(&mut self) {
        let _ = self.ring.recover();
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
        ring.other() == ring.own
    }

    /// Withdraws [`Self::arm`]'s request: the sender need not signal.
    pub fn disarm(&self) {
        self.ring
            .word32(RECEIVER_WAITING_OFFSET)
            .store(0, Ordering::Relaxed);
    }

    #[inline(always)]
    fn sleep_until_message(&mut self, timeout_us: Option<u64>) -> Result<(), QueueError> {
        let ring = &self.ring;
        ring.word32(RECEIVER_WAITING_OFFSET)
            .store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mut timed_out = false;
        if ring.other() == ring.own {
            // Without a timeout (a server between requests, a client
            // awaiting its answer) the short wait, inlined.
            timed_out = match timeout_us {
                None => {
                    notification::wait_forever(1 << ring.bit);
                    false
                }
                Some(_) => notification::wait_for(1 << ring.bit, timeout_us).is_none(),
            };
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
    /// How far the message reaches: the end of the furthest write.
    filled: usize,
    _slot: PhantomData<&'a mut [u8]>,
}

impl SlotWriter<'_> {
    /// Copies `bytes` to `offset`; `false` (nothing written) past the
    /// message's end.
    pub fn put(&mut self, offset: usize, bytes: &[u8]) -> bool {
        let Some(end) = self.extend(offset, bytes.len()) else {
            return false;
        };
        // SAFETY: inside the slot (checked); shared memory that no Rust
        // reference covers.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.slot.add(offset), bytes.len())
        };
        self.filled = self.filled.max(end);
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
        let Some(end) = self.extend(offset, length) else {
            return false;
        };
        // SAFETY: the destination is inside the slot (checked), which no
        // Rust reference covers.
        let copied = unsafe { memory.copy_out(address, self.slot.add(offset), length) }.is_ok();
        // (What a failed copy left is part of the message, as zeros or
        // guest bytes: the caller does not send it.)
        self.filled = self.filled.max(end);
        copied
    }

    /// Checks that `length` bytes at `offset` lie inside the message and
    /// zeroes what a write there would skip past the furthest so far;
    /// the write's end.
    fn extend(&mut self, offset: usize, length: usize) -> Option<usize> {
        let end = offset
            .checked_add(length)
            .filter(|&end| end <= self.length)?;
        if offset > self.filled {
            self.zero(self.filled, offset);
        }
        Some(end)
    }

    /// Zeroes the slot's bytes `from..to` (inside the slot).
    fn zero(&mut self, from: usize, to: usize) {
        if to > from {
            // SAFETY: `to` is at most the message's length rounded up to
            // 8, inside the slot (slot sizes are multiples of 8).
            unsafe { core::ptr::write_bytes(self.slot.add(from), 0, to - from) };
        }
    }
}

/// What [`Receiver::try_receive_in_place`] read.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum InPlace<R> {
    /// The slot held the sender's message, unchanged, all through the
    /// read: act on the answer.
    Whole(R),
    /// The slot was damaged, or changed while it was read: what was
    /// copied out may be torn. The queue was reset as for
    /// [`QueueError::PeerRestarted`]: undo what the answer took (a guest
    /// buffer goes back empty) and send again what awaits an answer.
    Torn(R),
}

/// A slot being read by [`Receiver::try_receive_in_place`].
pub struct SlotReader<'a> {
    slot: *const u8,
    /// The message type's size: no read reaches past it.
    length: usize,
    /// What the sender filled (the stamped length): the rest reads as
    /// zero.
    filled: usize,
    _slot: PhantomData<&'a [u8]>,
}

impl SlotReader<'_> {
    /// Copies the bytes at `offset` into `into` (zeros for those past
    /// what the sender filled); `false` past the message's end.
    pub fn get(&self, offset: usize, into: &mut [u8]) -> bool {
        if offset
            .checked_add(into.len())
            .is_none_or(|end| end > self.length)
        {
            return false;
        }
        let copied = self.filled.saturating_sub(offset).min(into.len());
        // SAFETY: inside the slot (checked).
        unsafe { core::ptr::copy_nonoverlapping(self.slot.add(offset), into.as_mut_ptr(), copied) };
        into[copied..].fill(0);
        true
    }

    /// The message's first `size_of::<H>()` bytes as an `H` (a header
    /// whose fields the caller then validates).
    pub fn header<H: FromBytes + IntoBytes>(&self) -> Option<H> {
        let mut header = H::new_zeroed();
        self.get(0, header.as_mut_bytes()).then_some(header)
    }

    /// Copies `length` bytes at `offset` into guest memory at `address`;
    /// `false` past the message's end or what the sender filled (data
    /// the message does not carry), or outside guest memory.
    pub fn to_guest(
        &self,
        offset: usize,
        length: usize,
        memory: &crate::vm::GuestMemory,
        address: u64,
    ) -> bool {
        if offset
            .checked_add(length)
            .is_none_or(|end| end > self.length.min(self.filled))
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

        /// The `index`-th 8-byte word of the queue memory.
        fn word(&self, index: usize) -> &AtomicU64 {
            self.header_u64(index * 8)
        }

        fn byte(&self, offset: usize) -> &core::sync::atomic::AtomicU8 {
            // SAFETY: inside the buffer, only accessed atomically.
            unsafe { &*(self.0.as_ptr().cast::<u8>().add(offset).cast()) }
        }
    }

    /// A small deterministic random stream for batch sizes.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, limit: u64) -> u64 {
            self.next() % limit
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
        core_reset(&memory, 2);
        assert_eq!(sender.try_send(&2), Err(QueueError::PeerRestarted(2)));
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&3).unwrap();
        assert_eq!(receiver.try_receive(), Ok(3));
    }

    #[test]
    fn an_impossible_tail_resets_the_queue_for_both_ends() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&1).unwrap();
        memory
            .header_u64(TAIL_OFFSET)
            .store(u64::MAX - 3, Ordering::Release);
        let mut out = [0u64; 64];
        assert_eq!(
            receiver.try_receive_batch(&mut out),
            Err(QueueError::PeerRestarted(2)),
            "never a ring's worth of stale slots"
        );
        assert_eq!(sender.try_send(&2), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&3).unwrap();
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(1));
        assert_eq!(out[0], 3);
    }

    #[test]
    fn a_tail_moved_over_stale_slots_is_caught_by_the_stamps() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        // Messages 0..3 sent and taken: their slots hold stale messages.
        sender.try_send_batch(&[10, 11, 12]).unwrap();
        let mut out = [0u64; 4];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(3));
        sender.try_send(&13).unwrap();
        // A stray write moves the tail two past the real one: slots 4 and
        // 5 hold messages 0 and 1 of the previous lap.
        memory.header_u64(TAIL_OFFSET).store(6, Ordering::Release);
        assert_eq!(
            receiver.try_receive_batch(&mut out),
            Err(QueueError::PeerRestarted(2))
        );
        assert_eq!(
            receiver.try_receive_in_place(|_| ()),
            Err(QueueError::WouldBlock)
        );
    }

    #[test]
    fn a_damaged_message_is_never_read() {
        let memory = Memory::new(16, 4);
        let resource = memory.resource(16, 4);
        let mut sender = Sender::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&[1, 2]).unwrap();
        assert_eq!(receiver.try_receive(), Ok([1, 2]));
        sender.try_send(&[3, 4]).unwrap();
        // One byte of the second word of slot 1 changes in flight.
        let word = memory.word(SLOTS_OFFSET / 8 + 2 + 1);
        word.store(word.load(Ordering::Relaxed) ^ 0x100, Ordering::Relaxed);
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        assert_eq!(sender.try_send(&[5, 6]), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&[5, 6]).unwrap();
        assert_eq!(receiver.try_receive(), Ok([5, 6]));
    }

    #[test]
    fn a_prefix_is_all_that_is_sent_and_the_rest_reads_as_zero() {
        // One slot, so that every message lands on the last one's bytes.
        let memory = Memory::new(32, 1);
        let resource = memory.resource(32, 1);
        let mut sender = Sender::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
        let length = |memory: &Memory| {
            memory
                .header_u32(STAMPS_OFFSET + STAMP_LENGTH)
                .load(Ordering::Relaxed)
        };
        sender.try_send(&[9; 4]).unwrap();
        assert_eq!(length(&memory), 32);
        assert_eq!(receiver.try_receive(), Ok([9; 4]));
        sender.send_prefix(&[1, 2, 3, 4], 16).unwrap();
        assert_eq!(length(&memory), 16);
        assert_eq!(receiver.try_receive(), Ok([1, 2, 0, 0]));
        // A length inside a word: the word padded with zeros.
        sender.send_prefix(&[1, u64::MAX, 3, 4], 12).unwrap();
        assert_eq!(length(&memory), 16);
        assert_eq!(receiver.try_receive(), Ok([1, 0xffff_ffff, 0, 0]));
        sender.send_prefix(&[5, 6, 7, 8], 1000).unwrap();
        assert_eq!(
            receiver.try_receive_in_place(|slot| slot.header::<[u64; 4]>()),
            Ok(InPlace::Whole(Some([5, 6, 7, 8])))
        );
    }

    #[test]
    fn every_prefix_of_an_odd_sized_message_arrives_as_sent() {
        // 29 bytes: every length ends somewhere else in a word.
        let memory = Memory::new(32, 2);
        let resource = memory.resource(32, 2);
        let mut sender = Sender::<[u8; 29]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u8; 29]>::from_resource(Some(&resource)).unwrap();
        let message: [u8; 29] = core::array::from_fn(|i| 0xa0 + i as u8);
        for length in 0..=29 {
            let mut expected = [0u8; 29];
            expected[..length].copy_from_slice(&message[..length]);
            // Stale bytes in the slots first: none may show through.
            sender.try_send(&[0xff; 29]).unwrap();
            assert_eq!(receiver.try_receive(), Ok([0xff; 29]));
            sender.send_prefix(&message, length).unwrap();
            assert_eq!(receiver.try_receive(), Ok(expected), "copied, {length}");
            sender.try_send(&[0xff; 29]).unwrap();
            assert_eq!(receiver.try_receive(), Ok([0xff; 29]));
            sender.send_prefix(&message, length).unwrap();
            assert_eq!(
                receiver.try_receive_in_place(|slot| slot.header::<[u8; 29]>()),
                Ok(InPlace::Whole(Some(expected))),
                "in place, {length}"
            );
            sender
                .try_send_in_place(|slot| slot.put(0, &message[..length]))
                .unwrap();
            assert_eq!(
                receiver.try_receive(),
                Ok(expected),
                "written in place, {length}"
            );
        }
    }

    #[test]
    fn an_in_place_message_ends_at_its_furthest_write() {
        let memory = Memory::new(32, 1);
        let resource = memory.resource(32, 1);
        let mut sender = Sender::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&[9; 4]).unwrap();
        assert_eq!(receiver.try_receive(), Ok([9; 4]));
        // Word 2 written alone: words 0 and 1 (the last message's nines)
        // are zeroed, word 3 is not sent.
        sender
            .try_send_in_place(|slot| slot.put(16, &7u64.to_le_bytes()))
            .unwrap();
        assert_eq!(
            memory
                .header_u32(STAMPS_OFFSET + STAMP_LENGTH)
                .load(Ordering::Relaxed),
            24
        );
        assert_eq!(memory.word(SLOTS_OFFSET / 8 + 3).load(Ordering::Relaxed), 9);
        assert_eq!(receiver.try_receive(), Ok([0, 0, 7, 0]));
        // Three bytes: the word's padding zeroed, read in place.
        sender
            .try_send_in_place(|slot| slot.put(0, &[1, 2, 3]))
            .unwrap();
        assert_eq!(
            receiver.try_receive_in_place(|slot| slot.header::<[u64; 4]>()),
            Ok(InPlace::Whole(Some([0x03_02_01, 0, 0, 0])))
        );
    }

    #[test]
    fn an_impossible_length_resets_the_queue() {
        for bad in [7u32, 40, u32::MAX] {
            let memory = Memory::new(32, 4);
            let resource = memory.resource(32, 4);
            let mut sender = Sender::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
            let mut receiver = Receiver::<[u64; 4]>::from_resource(Some(&resource)).unwrap();
            sender.try_send(&[1; 4]).unwrap();
            sender.try_send(&[2; 4]).unwrap();
            memory
                .header_u32(STAMPS_OFFSET + STAMP_LENGTH)
                .store(bad, Ordering::Relaxed);
            memory
                .header_u32(STAMPS_OFFSET + STAMP_BYTES + STAMP_LENGTH)
                .store(bad, Ordering::Relaxed);
            assert_eq!(
                receiver.try_receive(),
                Err(QueueError::PeerRestarted(2)),
                "{bad}"
            );
            assert_eq!(sender.try_send(&[3; 4]), Err(QueueError::PeerRestarted(2)));
            sender.try_send(&[3; 4]).unwrap();
            sender.try_send(&[4; 4]).unwrap();
            memory
                .header_u32(STAMPS_OFFSET + STAMP_BYTES + STAMP_LENGTH)
                .store(bad, Ordering::Relaxed);
            assert_eq!(
                receiver.try_receive_in_place(|slot| slot.header::<[u64; 4]>()),
                Ok(InPlace::Whole(Some([3; 4])))
            );
            assert_eq!(
                receiver.try_receive_in_place(|_| ()),
                Err(QueueError::PeerRestarted(3)),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_slot_filled_past_the_message_is_summed_not_copied() {
        // The core's flood fills whole slots; the receiver's message is
        // smaller than its slot, and still checked over all of it.
        let memory = Memory::new(16, 4);
        let resource = memory.resource(16, 4);
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        let slot = [0x1111u64, 0x2222];
        memory
            .word(SLOTS_OFFSET / 8)
            .store(slot[0], Ordering::Relaxed);
        memory
            .word(SLOTS_OFFSET / 8 + 1)
            .store(slot[1], Ordering::Relaxed);
        let stamp_slot = |sum: u32| {
            memory
                .header_u32(STAMPS_OFFSET)
                .store(stamp(0), Ordering::Relaxed);
            memory
                .header_u32(STAMPS_OFFSET + STAMP_CHECKSUM)
                .store(sum, Ordering::Relaxed);
            memory
                .header_u32(STAMPS_OFFSET + STAMP_LENGTH)
                .store(16, Ordering::Relaxed);
            memory.header_u64(TAIL_OFFSET).store(1, Ordering::Release);
        };
        stamp_slot(microvisor_abi::queue::checksum(slot.as_bytes()));
        assert_eq!(receiver.try_receive(), Ok(0x1111));
        // The same with the word past the message damaged: caught.
        memory.header_u64(HEAD_OFFSET).store(0, Ordering::Release);
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        memory
            .word(SLOTS_OFFSET / 8 + 1)
            .store(0x2223, Ordering::Relaxed);
        stamp_slot(microvisor_abi::queue::checksum(slot.as_bytes()));
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
    }

    #[test]
    fn a_damaged_message_read_in_place_is_torn() {
        let memory = Memory::new(16, 4);
        let resource = memory.resource(16, 4);
        let mut sender = Sender::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&[3, 4]).unwrap();
        let word = memory.word(SLOTS_OFFSET / 8 + 1);
        word.store(word.load(Ordering::Relaxed) ^ 0x100, Ordering::Relaxed);
        // The read sees what the slot holds, but is told it is torn.
        assert_eq!(
            receiver.try_receive_in_place(|slot| slot.header::<[u64; 2]>()),
            Ok(InPlace::Torn(Some([3, 0x104])))
        );
        assert_eq!(sender.try_send(&[5, 6]), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&[5, 6]).unwrap();
        assert_eq!(
            receiver.try_receive_in_place(|slot| slot.header::<[u64; 2]>()),
            Ok(InPlace::Whole(Some([5, 6])))
        );
    }

    /// Reads message `[1, 2]` in place in two halves, with `between` done
    /// to the queue memory after the first: what the read copied, and
    /// what it was told.
    fn read_in_halves(between: impl FnOnce(&Memory)) -> InPlace<[u64; 2]> {
        let memory = Memory::new(16, 4);
        let resource = memory.resource(16, 4);
        let mut sender = Sender::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<[u64; 2]>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&[1, 2]).unwrap();
        let read = receiver
            .try_receive_in_place(|slot| {
                let mut halves = [[0u8; 8]; 2];
                assert!(slot.get(0, &mut halves[0]));
                between(&memory);
                assert!(slot.get(8, &mut halves[1]));
                halves.map(u64::from_le_bytes)
            })
            .unwrap();
        // Torn or not, the queue goes on with a message sent after.
        while sender.try_send(&[7, 8]).is_err() {}
        let next = receiver.try_receive_in_place(|slot| slot.header::<[u64; 2]>());
        assert_eq!(next, Ok(InPlace::Whole(Some([7, 8]))));
        read
    }

    #[test]
    fn a_slot_written_while_it_is_read_in_place_is_torn() {
        assert_eq!(read_in_halves(|_| {}), InPlace::Whole([1, 2]));
        // A stray write into the half not yet copied: the copy holds it.
        let stray = |memory: &Memory| {
            memory
                .word(SLOTS_OFFSET / 8 + 1)
                .store(9, Ordering::Relaxed)
        };
        assert_eq!(read_in_halves(stray), InPlace::Torn([1, 9]));
        // One into the half already copied: the copy is whole, but the
        // slot no longer holds what was sent, which is all the check can
        // know; torn too.
        let stray = |memory: &Memory| memory.word(SLOTS_OFFSET / 8).store(9, Ordering::Relaxed);
        assert_eq!(read_in_halves(stray), InPlace::Torn([1, 2]));
    }

    #[test]
    fn a_message_stamped_over_the_slot_being_read_in_place_is_torn() {
        // Another writer (a flood past a stray head, a second sender)
        // puts a whole stamped message of the same index in the slot
        // while it is read: the slot checks out by itself, and the copy is
        // half of each message.
        let restamp = |memory: &Memory| {
            memory.word(SLOTS_OFFSET / 8).store(5, Ordering::Relaxed);
            memory
                .word(SLOTS_OFFSET / 8 + 1)
                .store(6, Ordering::Relaxed);
            let sum = microvisor_abi::queue::checksum([5u64, 6].as_bytes());
            memory
                .header_u32(STAMPS_OFFSET + STAMP_CHECKSUM)
                .store(sum, Ordering::Relaxed);
        };
        assert_eq!(read_in_halves(restamp), InPlace::Torn([1, 6]));
    }

    #[test]
    fn a_stray_head_that_makes_the_ring_look_full_is_put_back() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        sender.try_send_batch(&[1, 2, 3, 4]).unwrap();
        let mut out = [0u64; 4];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(4));
        // A stray write puts the receiver's published head back to 0: the
        // sender sees a full ring, the receiver an empty one.
        memory.header_u64(HEAD_OFFSET).store(0, Ordering::Release);
        assert_eq!(sender.try_send(&5), Err(QueueError::WouldBlock));
        // The receiver's next look (a lost wake-up check wakes it) puts
        // its index back, and the sender goes on.
        assert_eq!(receiver.try_receive(), Err(QueueError::WouldBlock));
        sender.try_send(&5).unwrap();
        assert_eq!(receiver.try_receive(), Ok(5));
    }

    #[test]
    fn each_end_keeps_its_own_index() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        sender.try_send_batch(&[1, 2]).unwrap();
        // A stray write to the receiver's published head does not move
        // the receiver: it takes both messages and publishes its own.
        memory.header_u64(HEAD_OFFSET).store(1, Ordering::Release);
        let mut out = [0u64; 4];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(2));
        assert_eq!(out[..2], [1, 2]);
        assert_eq!(memory.header_u64(HEAD_OFFSET).load(Ordering::Relaxed), 2);
        sender.try_send(&3).unwrap();
        assert_eq!(receiver.try_receive(), Ok(3));
    }

    /// What the core does when one end restarts: both indices zeroed and
    /// the generation moved to `generation`.
    fn core_reset(memory: &Memory, generation: u32) {
        memory.header_u64(HEAD_OFFSET).store(0, Ordering::Relaxed);
        memory.header_u64(TAIL_OFFSET).store(0, Ordering::Relaxed);
        memory
            .header_u32(GENERATION_OFFSET)
            .store(generation, Ordering::Release);
    }

    /// What the core's flood does to a ring of `slots` 8-byte slots:
    /// stamped garbage (`0xbad0 + index`) for the messages `indices`, and
    /// the tail moved past them.
    fn flood(memory: &Memory, slots: u64, indices: core::ops::Range<u64>) {
        for index in indices.clone() {
            let slot = SLOTS_OFFSET / 8 + (index % slots) as usize;
            let stamp_at = STAMPS_OFFSET + STAMP_BYTES * (index % slots) as usize;
            let message = 0xbad0 + index;
            memory.word(slot).store(message, Ordering::Relaxed);
            memory
                .header_u32(stamp_at)
                .store(stamp(index), Ordering::Relaxed);
            memory.header_u32(stamp_at + STAMP_CHECKSUM).store(
                microvisor_abi::queue::checksum(&message.to_le_bytes()),
                Ordering::Relaxed,
            );
            memory
                .header_u32(stamp_at + STAMP_LENGTH)
                .store(8, Ordering::Relaxed);
        }
        memory
            .header_u64(TAIL_OFFSET)
            .store(indices.end, Ordering::Release);
    }

    #[test]
    fn a_flood_past_the_tail_is_read_then_the_sender_resets() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        sender.try_send(&1).unwrap();
        assert_eq!(receiver.try_receive(), Ok(1));
        flood(&memory, 4, 1..5);
        let mut out = [0u64; 8];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(4));
        assert_eq!(out[..4], [0xbad1, 0xbad2, 0xbad3, 0xbad4]);
        // The real sender's tail is behind the head now: impossible.
        assert_eq!(sender.try_send(&2), Err(QueueError::PeerRestarted(2)));
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&3).unwrap();
        assert_eq!(receiver.try_receive(), Ok(3));
    }

    /// A flood while the sender fills the slot at its tail (its component
    /// preempted mid-copy, the injector running): the flood's stamped
    /// message lands in that very slot and the receiver takes it. The
    /// sender must not then publish the same tail and count its own
    /// message sent — the receiver never saw it (a guest's disk request
    /// lost, the guest waiting for it for ever). It resets the queue and
    /// says so, and its message goes again.
    #[test]
    fn a_flood_into_the_slot_being_filled_is_not_taken_for_the_message() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        assert_eq!(sender.try_send_batch(&[1, 2, 3]), Ok(3));
        let mut out = [0u64; 4];
        assert_eq!(receiver.try_receive_batch(&mut out), Ok(3));
        let sent = sender.try_send_in_place(|slot| {
            // Preempted here: one message's room, flooded and taken.
            flood(&memory, 4, 3..4);
            assert_eq!(receiver.try_receive(), Ok(0xbad3));
            slot.put(0, &4u64.to_le_bytes())
        });
        assert_eq!(sent, Err(QueueError::PeerRestarted(2)));
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&4).unwrap();
        assert_eq!(receiver.try_receive(), Ok(4));
    }

    /// The core resets the queue (the receiver found it impossible, or
    /// restarted) while the sender fills a slot: the sender reports the
    /// reset as any operation would, without a second reset, rather than
    /// publish a tail into the empty ring.
    #[test]
    fn a_reset_while_the_sender_fills_its_slot_is_reported() {
        let memory = Memory::new(8, 4);
        let resource = memory.resource(8, 4);
        let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
        let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
        assert_eq!(sender.try_send(&1), Ok(()));
        assert_eq!(receiver.try_receive(), Ok(1));
        let sent = sender.try_send_in_place(|slot| {
            core_reset(&memory, 2);
            slot.put(0, &2u64.to_le_bytes())
        });
        assert_eq!(sent, Err(QueueError::PeerRestarted(2)));
        assert_eq!(
            memory.header_u32(GENERATION_OFFSET).load(Ordering::Relaxed),
            2,
            "no second reset"
        );
        assert_eq!(receiver.try_receive(), Err(QueueError::PeerRestarted(2)));
        sender.try_send(&2).unwrap();
        assert_eq!(receiver.try_receive(), Ok(2));
    }

    /// Random bytes written anywhere in the header, stamps and slots
    /// while two ends exchange numbered messages: between resets the
    /// receiver sees only messages that were sent, intact, in order, each
    /// once.
    #[test]
    fn header_corruption_never_replays_a_message() {
        let mut random = Random(0x5eed);
        for round in 0..300 {
            let memory = Memory::new(8, 8);
            let resource = memory.resource(8, 8);
            let mut sender = Sender::<u64>::from_resource(Some(&resource)).unwrap();
            let mut receiver = Receiver::<u64>::from_resource(Some(&resource)).unwrap();
            let (mut next, mut last) = (1u64, 0u64);
            for step in 0..400 {
                match random.below(4) {
                    0 => match sender.try_send(&next) {
                        Ok(()) => next += 1,
                        Err(QueueError::PeerRestarted(_)) => {}
                        Err(QueueError::WouldBlock) => {}
                    },
                    1 | 2 => match receiver.try_receive() {
                        Ok(value) => {
                            assert!(
                                value > last && value < next,
                                "round {round} step {step}: got {value} after {last}, sent up to {}",
                                next - 1
                            );
                            last = value;
                        }
                        Err(QueueError::PeerRestarted(_)) => {}
                        Err(QueueError::WouldBlock) => {}
                    },
                    _ => {
                        // One random byte in a header field or stamp (not
                        // the magic or the sizes, which only opening reads).
                        let fields = [
                            (GENERATION_OFFSET, 4),
                            (HEAD_OFFSET, 8),
                            (TAIL_OFFSET, 8),
                            (RECEIVER_WAITING_OFFSET, 4),
                            (SENDER_WAITING_OFFSET, 4),
                            (STAMPS_OFFSET, 64),
                            (SLOTS_OFFSET, 64),
                        ];
                        let (offset, length) = fields[random.below(fields.len() as u64) as usize];
                        let at = offset + random.below(length) as usize;
                        memory
                            .byte(at)
                            .store(random.next() as u8, Ordering::Relaxed);
                        // The waiting flags are only hints here: no one sleeps.
                        memory
                            .header_u32(RECEIVER_WAITING_OFFSET)
                            .store(0, Ordering::Relaxed);
                        memory
                            .header_u32(SENDER_WAITING_OFFSET)
                            .store(0, Ordering::Relaxed);
                    }
                }
            }
            // Liveness: once the stray writes stop, a message gets
            // through within a few tries of each end (no deadlock on a
            // stray index either end believed).
            let mut delivered = false;
            for _ in 0..8 {
                if sender.try_send(&next) == Ok(()) {
                    next += 1;
                }
                for _ in 0..20 {
                    match receiver.try_receive() {
                        Ok(value) => {
                            assert!(
                                value > last && value < next,
                                "round {round}: got {value} after {last}"
                            );
                            last = value;
                            delivered |= value == next - 1;
                        }
                        Err(QueueError::WouldBlock) => break,
                        Err(QueueError::PeerRestarted(_)) => {}
                    }
                }
                if delivered {
                    break;
                }
            }
            assert!(
                delivered,
                "round {round}: the queue stays stuck after the stray writes"
            );
        }
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
        assert_eq!(first, InPlace::Whole((Some(7), 9)));
        let second = receiver.try_receive_in_place(|slot| slot.header::<Message>());
        assert_eq!(second, Ok(InPlace::Whole(Some(Message::new(3)))));
        assert_eq!(
            receiver.try_receive_in_place(|_| ()),
            Err(QueueError::WouldBlock)
        );
    }
}
