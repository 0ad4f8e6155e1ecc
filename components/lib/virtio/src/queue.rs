//! The split virtqueue (spec 2.7), driver side.
//!
//! A queue is three areas in memory shared with the device, laid out by
//! [`SplitQueue::layout`]:
//!
//! - the **descriptor table** (driver writes): `size` descriptors of 16
//!   bytes, `addr: u64, len: u32, flags: u16, next: u16`, chained by
//!   `next` while `flags` has `NEXT`; `WRITE` marks a buffer the device
//!   writes rather than reads;
//! - the **available ring** (driver writes): `flags: u16, idx: u16,
//!   ring: [u16; size], used_event: u16`: the heads of the chains the
//!   driver offers;
//! - the **used ring** (device writes): `flags: u16, idx: u16,
//!   ring: [{id: u32, len: u32}; size], avail_event: u16`: the heads of
//!   the chains the device is done with and how many bytes it wrote.
//!
//! Both `idx` fields are free-running 16-bit counters; the slot of index
//! `i` is `i % size`, which the power-of-two size keeps consistent across
//! the wrap from 65535 to 0.
//!
//! The driver keeps its own state and never reads back what it wrote into
//! shared memory: the free descriptors are a list linked through
//! `SplitQueue::next` (not through the table's `next` fields), and for
//! every chain in flight it keeps the chain's length and the bytes the
//! device may write, indexed by head. Freeing a chain walks the driver's
//! links, so a device that scribbles over the descriptor table cannot make
//! the driver free the wrong descriptors. Every used entry is checked
//! against that state before it is believed ([`DeviceError`]), so the
//! number of free descriptors plus those in chains in flight is always the
//! queue size.
//!
//! Ordering. The device must see a chain's descriptors and its ring entry
//! before the available index that publishes them, and the driver must
//! read a used entry only after the used index that covers it. The
//! [`DmaMemory`] accesses are volatile, so the compiler keeps them in
//! program order; the CPU's order is what [`SplitQueue::add`] (a release
//! fence before the index store) and [`SplitQueue::pop_used`] (an acquire
//! fence after the index load) add. On x86 both fences are compiler
//! barriers only (stores are not reordered with stores, loads not with
//! loads). Deciding whether to notify after publishing is a store followed
//! by a load, which x86 does reorder: [`SplitQueue::device_wants_notification`]
//! puts a full fence (`mfence`) between them.
//!
//! Notification suppression by event index (`VIRTIO_F_EVENT_IDX`) is not
//! used: the driver does not offer that feature, and `used_event` and
//! `avail_event` stay zero.

use core::sync::atomic::{Ordering, fence};

use crate::DmaMemory;

/// The largest queue this driver sets up. The device's maximum may be
/// larger; [`choose_size`] picks the size to use.
pub const MAX_QUEUE_SIZE: u16 = 256;

const MAX: usize = MAX_QUEUE_SIZE as usize;

/// Bytes per descriptor.
const DESC_SIZE: u64 = 16;
/// Descriptor flag: the chain continues at `next`.
const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
const DESC_F_WRITE: u16 = 2;
/// Used ring flag: the device does not need notifications.
const USED_F_NO_NOTIFY: u16 = 1;

/// Ring header: `flags: u16, idx: u16`.
const RING_HEADER: u64 = 4;
/// Offset of `idx` in either ring.
const RING_IDX: u64 = 2;
/// Bytes per available ring entry.
const AVAIL_ENTRY: u64 = 2;
/// Bytes per used ring entry.
const USED_ENTRY: u64 = 8;
/// The trailing event field of either ring.
const RING_EVENT: u64 = 2;

/// Alignments of the three areas (spec 2.7, table "Virtqueue Part
/// Alignment").
const DESC_ALIGN: u64 = 16;
const AVAIL_ALIGN: u64 = 2;
const USED_ALIGN: u64 = 4;

/// The queue size to set up for a device whose maximum is `device_max`
/// (its `queue_size` register): the largest power of two no larger than it
/// or [`MAX_QUEUE_SIZE`]. `None` for 0, a queue the device does not have.
pub fn choose_size(device_max: u16) -> Option<u16> {
    device_max
        .min(MAX_QUEUE_SIZE)
        .checked_ilog2()
        .map(|bit| 1 << bit)
}

/// One buffer of a descriptor chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The buffer's physical (device) address.
    pub physical: u64,
    /// Its length in bytes.
    pub length: u32,
    /// Whether the device writes it (otherwise it reads it).
    pub device_writes: bool,
}

/// A chain the device is done with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The chain's head, as [`SplitQueue::add`] returned it.
    pub head: u16,
    /// The bytes the device wrote into the chain's device-writable
    /// buffers, at most their total length.
    pub length: u32,
}

/// Where a queue's three areas lie, in bytes from the queue's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// The descriptor table (always 0: the start is 16-aligned).
    pub desc: u64,
    /// The available ring.
    pub avail: u64,
    /// The used ring.
    pub used: u64,
    /// The bytes the queue occupies.
    pub bytes: u64,
}

/// Why a queue cannot be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The size is zero, not a power of two, or above [`MAX_QUEUE_SIZE`].
    InvalidSize { size: u16 },
    /// The base offset is not 16-aligned.
    MisalignedOffset { offset: u64 },
    /// One of the areas' physical addresses is not aligned as the spec
    /// requires.
    MisalignedPhysical { physical: u64 },
}

/// Why a chain cannot be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// No segments.
    Empty,
    /// A segment of no bytes (QEMU takes one for a broken driver).
    EmptySegment { index: usize },
    /// More segments than the queue has descriptors: the chain can never
    /// fit.
    TooManySegments { segments: usize, size: u16 },
    /// A device-readable segment follows a device-writable one, which the
    /// spec forbids (2.7.4.2).
    ReadableAfterWritable { index: usize },
    /// The chain is 4 GiB or longer; the spec allows at most 2^32 bytes
    /// and the used length is 32 bits.
    TooManyBytes,
    /// Not enough free descriptors now; completions free some.
    NoSpace { needed: u16, free: u16 },
}

/// A used-ring value a correct device never writes. The queue is unchanged
/// and unusable: the driver resets the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The used index is more than `in_flight` entries ahead of the last
    /// one seen (or behind it): the device returned chains it was never
    /// given.
    UsedIndexTooFar {
        idx: u16,
        last_seen: u16,
        in_flight: u16,
    },
    /// A used entry's id is not a descriptor index.
    IdOutOfRange { id: u32 },
    /// A used entry's id is not the head of a chain in flight.
    NotInFlight { head: u16 },
    /// A used entry claims more bytes written than the chain's
    /// device-writable buffers hold.
    LengthTooLong {
        head: u16,
        length: u32,
        writable: u32,
    },
}

/// The driver's side of one split virtqueue.
///
/// It does not hold the memory: every call that touches the rings takes
/// the [`DmaMemory`] the queue was created in, which must be the same
/// buffer each time.
#[derive(Debug)]
pub struct SplitQueue {
    size: u16,
    /// Offsets of the three areas in the memory.
    desc: u64,
    avail: u64,
    used: u64,
    /// Their physical addresses, for the device.
    desc_physical: u64,
    avail_physical: u64,
    used_physical: u64,
    /// The driver's links: the free list through free descriptors, the
    /// chain order through descriptors in flight. Every value is below
    /// `size`.
    next: [u16; MAX],
    /// The first free descriptor, meaningful while `free` is not zero.
    free_head: u16,
    free: u16,
    /// Per head of a chain in flight, the chain's descriptors (0 for a
    /// descriptor that is not such a head) ...
    chain_len: [u16; MAX],
    /// ... and the bytes the device may write into it.
    writable: [u32; MAX],
    /// Chains added and not yet returned.
    in_flight: u16,
    /// The available index the next chain gets.
    avail_idx: u16,
    /// The used index up to which entries have been consumed.
    last_used: u16,
}

impl SplitQueue {
    /// Where the areas of a queue of `size` descriptors lie, relative to a
    /// 16-aligned start.
    pub const fn layout(size: u16) -> QueueLayout {
        let n = size as u64;
        let desc = 0;
        let avail = desc + DESC_SIZE * n;
        let avail_end = avail + RING_HEADER + AVAIL_ENTRY * n + RING_EVENT;
        let used = avail_end.next_multiple_of(USED_ALIGN);
        let bytes = used + RING_HEADER + USED_ENTRY * n + RING_EVENT;
        QueueLayout {
            desc,
            avail,
            used,
            bytes,
        }
    }

    /// Sets up a queue of `size` descriptors at `base` in `memory`, which
    /// must hold [`QueueLayout::bytes`] from there, physically contiguous.
    /// Zeroes the three areas and puts every descriptor on the free list.
    /// The device is told the queue's addresses and size afterwards.
    pub fn new<M: DmaMemory + ?Sized>(
        memory: &M,
        base: u64,
        size: u16,
    ) -> Result<Self, QueueError> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(QueueError::InvalidSize { size });
        }
        if !base.is_multiple_of(DESC_ALIGN) {
            return Err(QueueError::MisalignedOffset { offset: base });
        }
        let layout = Self::layout(size);
        let (desc, avail, used) = (base + layout.desc, base + layout.avail, base + layout.used);
        for (offset, align) in [(desc, DESC_ALIGN), (avail, AVAIL_ALIGN), (used, USED_ALIGN)] {
            let physical = memory.physical(offset);
            if !physical.is_multiple_of(align) {
                return Err(QueueError::MisalignedPhysical { physical });
            }
        }

        // The whole queue is 16-aligned and its size a multiple of 2.
        for offset in (base..base + layout.bytes).step_by(2) {
            memory.write16(offset, 0);
        }

        let mut next = [0; MAX];
        for (index, link) in next.iter_mut().enumerate().take(usize::from(size)) {
            // The last descriptor's link is never followed; 0 keeps it in
            // range.
            *link = (index as u16 + 1) % size;
        }
        Ok(Self {
            size,
            desc,
            avail,
            used,
            desc_physical: memory.physical(desc),
            avail_physical: memory.physical(avail),
            used_physical: memory.physical(used),
            next,
            free_head: 0,
            free: size,
            chain_len: [0; MAX],
            writable: [0; MAX],
            in_flight: 0,
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// The number of descriptors.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The physical address of the descriptor table (`queue_desc`).
    pub fn desc_physical(&self) -> u64 {
        self.desc_physical
    }

    /// The physical address of the available ring (`queue_driver`).
    pub fn avail_physical(&self) -> u64 {
        self.avail_physical
    }

    /// The physical address of the used ring (`queue_device`).
    pub fn used_physical(&self) -> u64 {
        self.used_physical
    }

    /// Chains added and not yet returned by [`SplitQueue::pop_used`].
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Descriptors not in any chain.
    pub fn free_descriptors(&self) -> u16 {
        self.free
    }

    /// Offers the device a chain of `buffers`, device-readable ones first,
    /// and returns its head, by which [`SplitQueue::pop_used`] reports it
    /// done.
    ///
    /// The descriptors and the available ring entry are written before the
    /// available index that publishes them, with a release fence between
    /// (see the module documentation). The device learns of the chain when
    /// the driver notifies it.
    pub fn add<M: DmaMemory + ?Sized>(
        &mut self,
        memory: &M,
        buffers: &[Segment],
    ) -> Result<u16, AddError> {
        if buffers.is_empty() {
            return Err(AddError::Empty);
        }
        if buffers.len() > usize::from(self.size) {
            return Err(AddError::TooManySegments {
                segments: buffers.len(),
                size: self.size,
            });
        }
        let mut total: u32 = 0;
        let mut writable: u32 = 0;
        let mut seen_writable = false;
        for (index, segment) in buffers.iter().enumerate() {
            if segment.length == 0 {
                return Err(AddError::EmptySegment { index });
            }
            total = total
                .checked_add(segment.length)
                .ok_or(AddError::TooManyBytes)?;
            if segment.device_writes {
                seen_writable = true;
                // No larger than `total`, so it does not overflow.
                writable += segment.length;
            } else if seen_writable {
                return Err(AddError::ReadableAfterWritable { index });
            }
        }
        // At most `size`, so it fits.
        let needed = buffers.len() as u16;
        if needed > self.free {
            return Err(AddError::NoSpace {
                needed,
                free: self.free,
            });
        }

        let head = self.free_head;
        let mut index = head;
        for (position, segment) in buffers.iter().enumerate() {
            let link = self.next[usize::from(index)];
            let last = position + 1 == buffers.len();
            let mut flags = 0;
            if segment.device_writes {
                flags |= DESC_F_WRITE;
            }
            if !last {
                flags |= DESC_F_NEXT;
            }
            let at = self.desc + DESC_SIZE * u64::from(index);
            memory.write64(at, segment.physical);
            memory.write32(at + 8, segment.length);
            memory.write16(at + 12, flags);
            memory.write16(at + 14, if last { 0 } else { link });
            if last {
                self.free_head = link;
            } else {
                index = link;
            }
        }
        self.free -= needed;
        self.chain_len[usize::from(head)] = needed;
        self.writable[usize::from(head)] = writable;
        self.in_flight += 1;

        let slot = u64::from(self.avail_idx % self.size);
        memory.write16(self.avail + RING_HEADER + AVAIL_ENTRY * slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::Release);
        memory.write16(self.avail + RING_IDX, self.avail_idx);
        Ok(head)
    }

    /// Whether the device asks to be notified of new chains: false when
    /// it set `VIRTQ_USED_F_NO_NOTIFY`. Call after [`SplitQueue::add`];
    /// it puts a full fence between the available index store and the
    /// flags load. The flag is a hint: notifying anyway is always correct.
    pub fn device_wants_notification<M: DmaMemory + ?Sized>(&self, memory: &M) -> bool {
        fence(Ordering::SeqCst);
        memory.read16(self.used) & USED_F_NO_NOTIFY == 0
    }

    /// The next chain the device is done with, if any, its descriptors
    /// returned to the free list. Call until `Ok(None)`.
    ///
    /// The used index and entry are read once each and checked against
    /// the chains in flight; on a [`DeviceError`] nothing changes and the
    /// driver must reset the device.
    pub fn pop_used<M: DmaMemory + ?Sized>(
        &mut self,
        memory: &M,
    ) -> Result<Option<Used>, DeviceError> {
        let idx = memory.read16(self.used + RING_IDX);
        let pending = idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.in_flight {
            return Err(DeviceError::UsedIndexTooFar {
                idx,
                last_seen: self.last_used,
                in_flight: self.in_flight,
            });
        }
        fence(Ordering::Acquire);

        let slot = u64::from(self.last_used % self.size);
        let entry = self.used + RING_HEADER + USED_ENTRY * slot;
        let id = memory.read32(entry);
        let length = memory.read32(entry + 4);
        let head = match u16::try_from(id) {
            Ok(head) if head < self.size => head,
            _ => return Err(DeviceError::IdOutOfRange { id }),
        };
        let chain_len = self.chain_len[usize::from(head)];
        if chain_len == 0 {
            return Err(DeviceError::NotInFlight { head });
        }
        let writable = self.writable[usize::from(head)];
        if length > writable {
            return Err(DeviceError::LengthTooLong {
                head,
                length,
                writable,
            });
        }

        let mut tail = head;
        for _ in 1..chain_len {
            tail = self.next[usize::from(tail)];
        }
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.free += chain_len;
        self.chain_len[usize::from(head)] = 0;
        self.writable[usize::from(head)] = 0;
        self.in_flight -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        Ok(Some(Used { head, length }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet, VecDeque};

    use proptest::prelude::*;

    use super::*;
    use crate::sim::{Descriptor, PHYSICAL_BASE, SimDevice, TestMemory};

    /// Where the tests put their queues: a 16-aligned offset that is not
    /// zero, so offsets and physical addresses are not confused.
    const BASE: u64 = 0x40;

    fn setup(size: u16) -> (TestMemory, SplitQueue, SimDevice) {
        let memory = TestMemory::new((BASE + SplitQueue::layout(size).bytes) as usize);
        let queue = SplitQueue::new(&memory, BASE, size).unwrap();
        let device = SimDevice::new(&memory, &queue);
        (memory, queue, device)
    }

    fn read(physical: u64, length: u32) -> Segment {
        Segment {
            physical,
            length,
            device_writes: false,
        }
    }

    fn write(physical: u64, length: u32) -> Segment {
        Segment {
            physical,
            length,
            device_writes: true,
        }
    }

    #[test]
    fn layout_follows_the_alignments() {
        assert_eq!(
            SplitQueue::layout(1),
            QueueLayout {
                desc: 0,
                avail: 16,
                used: 24,
                bytes: 38
            }
        );
        assert_eq!(
            SplitQueue::layout(4),
            QueueLayout {
                desc: 0,
                avail: 64,
                used: 80,
                bytes: 118
            }
        );
        assert_eq!(
            SplitQueue::layout(256),
            QueueLayout {
                desc: 0,
                avail: 4096,
                used: 4616,
                bytes: 6670
            }
        );
    }

    #[test]
    fn choose_size_picks_a_power_of_two_within_bounds() {
        assert_eq!(choose_size(0), None);
        assert_eq!(choose_size(1), Some(1));
        assert_eq!(choose_size(3), Some(2));
        assert_eq!(choose_size(128), Some(128));
        assert_eq!(choose_size(1000), Some(256));
        assert_eq!(choose_size(u16::MAX), Some(256));
    }

    #[test]
    fn new_refuses_bad_sizes_and_alignment() {
        let memory = TestMemory::new(0x4000);
        for size in [0, 3, 12, 512, 1024] {
            assert_eq!(
                SplitQueue::new(&memory, 0, size).unwrap_err(),
                QueueError::InvalidSize { size }
            );
        }
        assert_eq!(
            SplitQueue::new(&memory, 8, 4).unwrap_err(),
            QueueError::MisalignedOffset { offset: 8 }
        );

        /// Memory whose physical addresses are 8 bytes off 16-alignment.
        struct Shifted(TestMemory);
        impl DmaMemory for Shifted {
            fn read8(&self, offset: u64) -> u8 {
                self.0.read8(offset)
            }
            fn read16(&self, offset: u64) -> u16 {
                self.0.read16(offset)
            }
            fn read32(&self, offset: u64) -> u32 {
                self.0.read32(offset)
            }
            fn read64(&self, offset: u64) -> u64 {
                self.0.read64(offset)
            }
            fn write8(&self, offset: u64, value: u8) {
                self.0.write8(offset, value)
            }
            fn write16(&self, offset: u64, value: u16) {
                self.0.write16(offset, value)
            }
            fn write32(&self, offset: u64, value: u32) {
                self.0.write32(offset, value)
            }
            fn write64(&self, offset: u64, value: u64) {
                self.0.write64(offset, value)
            }
            fn physical(&self, offset: u64) -> u64 {
                self.0.physical(offset) + 8
            }
        }
        assert_eq!(
            SplitQueue::new(&Shifted(memory), 0x100, 4).unwrap_err(),
            QueueError::MisalignedPhysical {
                physical: PHYSICAL_BASE + 0x108
            }
        );
    }

    #[test]
    fn new_zeroes_the_queue_and_nothing_else() {
        let bytes = SplitQueue::layout(8).bytes;
        let memory = TestMemory::new((BASE + bytes + 16) as usize);
        memory.write_bytes(0, &vec![0xa5; (BASE + bytes + 16) as usize]);
        let queue = SplitQueue::new(&memory, BASE, 8).unwrap();
        assert!(
            memory
                .read_bytes(BASE, bytes as usize)
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            memory
                .read_bytes(0, BASE as usize)
                .iter()
                .all(|&b| b == 0xa5)
        );
        assert!(
            memory
                .read_bytes(BASE + bytes, 16)
                .iter()
                .all(|&b| b == 0xa5)
        );
        assert_eq!(queue.desc_physical(), PHYSICAL_BASE + BASE);
        assert_eq!(queue.avail_physical(), PHYSICAL_BASE + BASE + 128);
        assert_eq!(queue.used_physical(), PHYSICAL_BASE + BASE + 128 + 24);
        assert_eq!(
            (queue.size(), queue.free_descriptors(), queue.in_flight()),
            (8, 8, 0)
        );
    }

    #[test]
    fn add_builds_a_chain_and_publishes_it() {
        let (memory, mut queue, mut device) = setup(8);
        let head = queue
            .add(
                &memory,
                &[read(0x1000, 16), write(0x2000, 512), write(0x3000, 1)],
            )
            .unwrap();
        assert_eq!(memory.read16(BASE + 128 + 2), 1, "available index");
        assert_eq!((queue.free_descriptors(), queue.in_flight()), (5, 1));
        let chain = device.take(&memory).unwrap();
        assert_eq!(chain.head, head);
        assert_eq!(
            chain.descriptors,
            [
                Descriptor {
                    index: 0,
                    addr: 0x1000,
                    len: 16,
                    flags: DESC_F_NEXT
                },
                Descriptor {
                    index: 1,
                    addr: 0x2000,
                    len: 512,
                    flags: DESC_F_NEXT | DESC_F_WRITE
                },
                Descriptor {
                    index: 2,
                    addr: 0x3000,
                    len: 1,
                    flags: DESC_F_WRITE
                },
            ]
        );
        assert!(device.take(&memory).is_none());

        device.complete(&memory, head, 513);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used { head, length: 513 }))
        );
        assert_eq!(queue.pop_used(&memory), Ok(None));
        assert_eq!((queue.free_descriptors(), queue.in_flight()), (8, 0));
    }

    #[test]
    fn freed_descriptors_are_reused() {
        let (memory, mut queue, mut device) = setup(4);
        let first = queue
            .add(&memory, &[read(0x1000, 8), read(0x1008, 8)])
            .unwrap();
        let second = queue.add(&memory, &[write(0x2000, 8)]).unwrap();
        let (a, b) = (device.take(&memory).unwrap(), device.take(&memory).unwrap());
        assert_eq!((a.head, b.head), (first, second));
        device.complete(&memory, first, 0);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used {
                head: first,
                length: 0
            }))
        );
        let third = queue
            .add(
                &memory,
                &[read(0x3000, 1), read(0x3001, 1), write(0x3002, 1)],
            )
            .unwrap();
        let chain = device.take(&memory).unwrap();
        assert_eq!(chain.head, third);
        let indices: HashSet<u16> = chain.descriptors.iter().map(|d| d.index).collect();
        assert_eq!(indices.len(), 3);
        assert!(!indices.contains(&b.descriptors[0].index));
        assert_eq!(queue.free_descriptors(), 0);
    }

    #[test]
    fn add_refuses_malformed_chains() {
        let (memory, mut queue, _) = setup(4);
        assert_eq!(queue.add(&memory, &[]), Err(AddError::Empty));
        assert_eq!(
            queue.add(&memory, &[write(0, 1), read(0, 1)]),
            Err(AddError::ReadableAfterWritable { index: 1 })
        );
        assert_eq!(
            queue.add(&memory, &[read(0, 1), write(0, 1), read(0, 1)]),
            Err(AddError::ReadableAfterWritable { index: 2 })
        );
        assert_eq!(
            queue.add(&memory, &[read(0, 1), write(0, 0)]),
            Err(AddError::EmptySegment { index: 1 })
        );
        assert_eq!(
            queue.add(&memory, &[read(0, 1); 5]),
            Err(AddError::TooManySegments {
                segments: 5,
                size: 4
            })
        );
        assert_eq!(
            queue.add(&memory, &[read(0, u32::MAX), write(0, 1)]),
            Err(AddError::TooManyBytes)
        );
        assert_eq!(memory.read16(BASE + 64 + 2), 0, "nothing published");
        assert_eq!((queue.free_descriptors(), queue.in_flight()), (4, 0));
        assert!(queue.add(&memory, &[read(0, u32::MAX)]).is_ok());
    }

    #[test]
    fn a_full_queue_refuses_until_a_completion() {
        let (memory, mut queue, mut device) = setup(4);
        let first = queue.add(&memory, &[read(0, 1), write(0, 1)]).unwrap();
        queue.add(&memory, &[read(0, 1), write(0, 1)]).unwrap();
        assert_eq!(
            queue.add(&memory, &[write(0, 1)]),
            Err(AddError::NoSpace { needed: 1, free: 0 })
        );
        device.take(&memory).unwrap();
        device.complete(&memory, first, 1);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used {
                head: first,
                length: 1
            }))
        );
        assert_eq!(
            queue.add(&memory, &[read(0, 1), read(0, 1), write(0, 1)]),
            Err(AddError::NoSpace { needed: 3, free: 2 })
        );
        assert!(queue.add(&memory, &[read(0, 1), write(0, 1)]).is_ok());
        assert_eq!(queue.in_flight(), 2);
    }

    #[test]
    fn indices_wrap_around() {
        let (memory, mut queue, mut device) = setup(4);
        let mut total = 0u32;
        // Batches of 1 to 4 chains, completed in reverse, so the wrap of
        // both indices lands inside batches; 70,000 chains wrap them once.
        for round in 0u32.. {
            if total >= 70_000 {
                break;
            }
            let batch = 1 + round % 4;
            let heads: Vec<u16> = (0..batch)
                .map(|i| queue.add(&memory, &[write(u64::from(i), 4)]).unwrap())
                .collect();
            let taken: Vec<u16> = heads
                .iter()
                .map(|_| device.take(&memory).unwrap().head)
                .collect();
            assert_eq!(taken, heads);
            for &head in heads.iter().rev() {
                device.complete(&memory, head, 4);
            }
            for &head in heads.iter().rev() {
                assert_eq!(queue.pop_used(&memory), Ok(Some(Used { head, length: 4 })));
            }
            assert_eq!(queue.pop_used(&memory), Ok(None));
            assert_eq!((queue.free_descriptors(), queue.in_flight()), (4, 0));
            total += heads.len() as u32;
            assert_eq!(
                memory.read16(BASE + 64 + 2),
                total as u16,
                "available index"
            );
            assert_eq!(device.used_idx(), total as u16);
        }
        assert!(device.take(&memory).is_none());
    }

    /// A queue of 4 with two chains in flight: heads 0 (two descriptors,
    /// 8 writable bytes) and 2 (one readable descriptor), both taken by
    /// the device.
    fn two_in_flight() -> (TestMemory, SplitQueue, SimDevice) {
        let (memory, mut queue, mut device) = setup(4);
        assert_eq!(queue.add(&memory, &[read(0, 16), write(0x100, 8)]), Ok(0));
        assert_eq!(queue.add(&memory, &[read(0, 16)]), Ok(2));
        device.take(&memory).unwrap();
        device.take(&memory).unwrap();
        (memory, queue, device)
    }

    /// Checks that a hostile device's error leaves the queue as it was.
    fn assert_refused(memory: &TestMemory, queue: &mut SplitQueue, error: DeviceError) {
        assert_eq!(queue.pop_used(memory), Err(error));
        assert_eq!((queue.free_descriptors(), queue.in_flight()), (1, 2));
        assert_eq!(queue.pop_used(memory), Err(error), "the error stays");
    }

    #[test]
    fn a_used_id_out_of_range_is_refused() {
        let (memory, mut queue, mut device) = two_in_flight();
        for id in [4, 256, 65_536, u32::MAX] {
            device.write_entry(&memory, 0, id, 0);
            device.set_used_idx(&memory, 1);
            assert_refused(&memory, &mut queue, DeviceError::IdOutOfRange { id });
        }
    }

    #[test]
    fn a_used_id_not_in_flight_is_refused() {
        let (memory, mut queue, mut device) = two_in_flight();
        // Descriptor 1 is in a chain but not its head; 3 is free.
        for head in [1, 3] {
            device.write_entry(&memory, 0, u32::from(head), 0);
            device.set_used_idx(&memory, 1);
            assert_refused(&memory, &mut queue, DeviceError::NotInFlight { head });
        }
        // A chain returned twice.
        let (memory, mut queue, mut device) = two_in_flight();
        device.complete(&memory, 2, 0);
        device.complete(&memory, 2, 0);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used { head: 2, length: 0 }))
        );
        assert_eq!(
            queue.pop_used(&memory),
            Err(DeviceError::NotInFlight { head: 2 })
        );
        assert_eq!((queue.free_descriptors(), queue.in_flight()), (2, 1));
    }

    #[test]
    fn a_used_length_past_the_writable_bytes_is_refused() {
        let (memory, mut queue, mut device) = two_in_flight();
        device.complete(&memory, 0, 9);
        assert_refused(
            &memory,
            &mut queue,
            DeviceError::LengthTooLong {
                head: 0,
                length: 9,
                writable: 8,
            },
        );

        let (memory, mut queue, mut device) = two_in_flight();
        device.complete(&memory, 2, 1);
        assert_refused(
            &memory,
            &mut queue,
            DeviceError::LengthTooLong {
                head: 2,
                length: 1,
                writable: 0,
            },
        );

        let (memory, mut queue, mut device) = two_in_flight();
        device.complete(&memory, 0, 8);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used { head: 0, length: 8 }))
        );
    }

    #[test]
    fn a_used_index_too_far_ahead_or_behind_is_refused() {
        let (memory, mut queue, mut device) = two_in_flight();
        device.write_entry(&memory, 0, 0, 0);
        device.write_entry(&memory, 1, 2, 0);
        device.write_entry(&memory, 2, 0, 0);
        for idx in [3, 100, u16::MAX] {
            device.set_used_idx(&memory, idx);
            assert_refused(
                &memory,
                &mut queue,
                DeviceError::UsedIndexTooFar {
                    idx,
                    last_seen: 0,
                    in_flight: 2,
                },
            );
        }
        device.set_used_idx(&memory, 2);
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used { head: 0, length: 0 }))
        );
        assert_eq!(
            queue.pop_used(&memory),
            Ok(Some(Used { head: 2, length: 0 }))
        );
        // Nothing in flight: any movement is too far.
        device.set_used_idx(&memory, 3);
        assert_eq!(
            queue.pop_used(&memory),
            Err(DeviceError::UsedIndexTooFar {
                idx: 3,
                last_seen: 2,
                in_flight: 0
            })
        );
        device.set_used_idx(&memory, 1);
        assert_eq!(
            queue.pop_used(&memory),
            Err(DeviceError::UsedIndexTooFar {
                idx: 1,
                last_seen: 2,
                in_flight: 0
            })
        );
    }

    #[test]
    fn scribbled_descriptors_do_not_change_what_is_freed() {
        let (memory, mut queue, mut device) = setup(4);
        let head = queue
            .add(&memory, &[read(0, 1), read(0, 1), write(0, 1)])
            .unwrap();
        device.take(&memory).unwrap();
        // The device rewrites the whole descriptor table.
        for offset in (BASE..BASE + 64).step_by(8) {
            memory.write64(offset, u64::MAX);
        }
        device.complete(&memory, head, 1);
        assert_eq!(queue.pop_used(&memory), Ok(Some(Used { head, length: 1 })));
        assert_eq!(queue.free_descriptors(), 4);
        let heads: Vec<u16> = (0..4)
            .map(|_| queue.add(&memory, &[write(0, 1)]).unwrap())
            .collect();
        assert_eq!(heads.iter().collect::<HashSet<_>>().len(), 4);
    }

    #[test]
    fn notification_follows_the_used_flags() {
        let (memory, mut queue, device) = setup(4);
        queue.add(&memory, &[write(0, 1)]).unwrap();
        assert!(queue.device_wants_notification(&memory));
        device.set_used_flags(&memory, USED_F_NO_NOTIFY);
        assert!(!queue.device_wants_notification(&memory));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Add a chain of this many readable and writable segments, of
        /// these lengths.
        Add {
            readable: usize,
            writable: usize,
            length: u32,
        },
        /// The device takes the next available chain.
        Take,
        /// The device completes one of the chains it took (chosen by the
        /// selector), reporting some of its writable bytes.
        Complete { which: usize, length: u32 },
        /// The driver pops a used entry.
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..4, 0usize..4, 0u32..5000).prop_map(|(readable, writable, length)| Op::Add {
                readable,
                writable,
                length
            }),
            Just(Op::Take),
            (any::<usize>(), any::<u32>())
                .prop_map(|(which, length)| Op::Complete { which, length }),
            Just(Op::Pop),
        ]
    }

    /// A chain the model knows is in flight.
    struct Added {
        descriptors: u16,
        writable: u32,
        addrs: Vec<u64>,
    }

    proptest! {
        /// Any interleaving of adds, device progress (completions in any
        /// order) and pops keeps every descriptor either free or in exactly
        /// one chain in flight, and pop_used returns exactly the completed
        /// chains, in the order the device completed them. `warmup` chains
        /// run through first, so some cases cross the 16-bit wrap.
        #[test]
        fn descriptors_are_never_lost_or_shared(
            size in prop::sample::select(vec![1u16, 2, 4, 8, 16]),
            warmup in prop_oneof![7 => Just(0u32), 1 => 65_400u32..65_536],
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let (memory, mut queue, mut device) = setup(size);
            for _ in 0..warmup {
                let head = queue.add(&memory, &[write(0, 1)]).unwrap();
                device.take(&memory).unwrap();
                device.complete(&memory, head, 1);
                queue.pop_used(&memory).unwrap().unwrap();
            }

            let mut in_flight: HashMap<u16, Added> = HashMap::new();
            // Descriptor indices of chains the device took, until popped.
            let mut held: HashSet<u16> = HashSet::new();
            let mut taken: Vec<(u16, u32)> = Vec::new();
            let mut taken_indices: HashMap<u16, Vec<u16>> = HashMap::new();
            let mut completed: VecDeque<Used> = VecDeque::new();
            let mut next_addr = 0x1000u64;

            for op in ops {
                match op {
                    Op::Add { readable, writable, length } => {
                        let mut segments = Vec::new();
                        for i in 0..readable + writable {
                            segments.push(Segment { physical: next_addr, length, device_writes: i >= readable });
                            next_addr += 1;
                        }
                        let needed = segments.len() as u16;
                        let free = queue.free_descriptors();
                        let result = queue.add(&memory, &segments);
                        if segments.is_empty() {
                            prop_assert_eq!(result, Err(AddError::Empty));
                        } else if needed > size {
                            prop_assert_eq!(result, Err(AddError::TooManySegments { segments: segments.len(), size }));
                        } else if length == 0 {
                            prop_assert_eq!(result, Err(AddError::EmptySegment { index: 0 }));
                        } else if needed > free {
                            prop_assert_eq!(result, Err(AddError::NoSpace { needed, free }));
                        } else {
                            let head = result.unwrap();
                            let addrs = segments.iter().map(|s| s.physical).collect();
                            let added = Added { descriptors: needed, writable: writable as u32 * length, addrs };
                            prop_assert!(in_flight.insert(head, added).is_none(), "head {} reused", head);
                        }
                    }
                    Op::Take => {
                        if let Some(chain) = device.take(&memory) {
                            let added = &in_flight[&chain.head];
                            let addrs: Vec<u64> = chain.descriptors.iter().map(|d| d.addr).collect();
                            prop_assert_eq!(&addrs, &added.addrs);
                            prop_assert_eq!(chain.writable(), added.writable);
                            let indices: Vec<u16> = chain.descriptors.iter().map(|d| d.index).collect();
                            for &index in &indices {
                                prop_assert!(held.insert(index), "descriptor {} in two chains", index);
                            }
                            taken_indices.insert(chain.head, indices);
                            taken.push((chain.head, chain.writable()));
                        }
                    }
                    Op::Complete { which, length } => {
                        if !taken.is_empty() {
                            let (head, writable) = taken.remove(which % taken.len());
                            let length = length % (writable + 1);
                            device.complete(&memory, head, length);
                            completed.push_back(Used { head, length });
                        }
                    }
                    Op::Pop => {
                        let used = queue.pop_used(&memory).unwrap();
                        prop_assert_eq!(used, completed.pop_front());
                        if let Some(used) = used {
                            in_flight.remove(&used.head).unwrap();
                            for index in taken_indices.remove(&used.head).unwrap() {
                                held.remove(&index);
                            }
                        }
                    }
                }
                let busy: u16 = in_flight.values().map(|added| added.descriptors).sum();
                prop_assert_eq!(queue.free_descriptors() + busy, size);
                prop_assert_eq!(usize::from(queue.in_flight()), in_flight.len());
            }

            // Drain: the device finishes everything, the driver pops it all.
            while let Some(chain) = device.take(&memory) {
                taken.push((chain.head, chain.writable()));
            }
            for (head, writable) in taken {
                device.complete(&memory, head, writable);
                completed.push_back(Used { head, length: writable });
            }
            while let Some(used) = queue.pop_used(&memory).unwrap() {
                prop_assert_eq!(Some(used), completed.pop_front());
            }
            prop_assert!(completed.is_empty());
            prop_assert_eq!((queue.free_descriptors(), queue.in_flight()), (size, 0));
        }
    }
}
