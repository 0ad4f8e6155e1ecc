//! Fault injection into a component, for test systems (see
//! `microvisor_abi::inject`): the work behind `Syscall::Inject` once the
//! caller's injection capability and arguments are checked.
//!
//! A crash goes through the same path as a real fault; a hang is a field
//! the scheduler reads (`Component::hang`). Corruption writes through the
//! direct map, never through the target's addresses: memory corruption
//! picks places among the target's own writable pages (its program's
//! writable segments and its stack, as the loader maps them; never queue,
//! DMA or guest memory, which other components or guests share), queue
//! corruption among one queue's header fields, stamps and slots, and a
//! flood writes whole stamped slots (stamp, length and checksum right,
//! the whole slot filled) the way a babbling sender would. The places
//! and bytes come from the caller's seed only.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::elf;
use microvisor_abi::fault::{FaultKind, page_fault};
use microvisor_abi::inject::{NO_QUEUE, Stream, place_in};
use microvisor_abi::queue;
use microvisor_abi::{STACK_TOP, USER_END, USER_MIN};

use crate::arch::memory::{Tables, direct};
use crate::kernel::Kernel;
use crate::lifecycle::{self, Fault};

/// The most writable ranges a component has (its segments and stack).
const MAX_RANGES: usize = 16;

/// Component `target` faults now, as if it had read unmapped `address`.
pub fn crash(kernel: &mut Kernel, target: usize, address: u64) {
    let fault = Fault::new(FaultKind::PageFault, address, page_fault::USER);
    lifecycle::fault(kernel, target, fault, &[]);
}

/// Writes `count` seeded bytes at seeded places of `target`'s own
/// writable memory; answers the first place written (0 when none).
pub fn corrupt_memory(kernel: &mut Kernel, target: usize, seed: u64, count: u64) -> u64 {
    let component = &kernel.components[target];
    let (limit, stack_pages) = (component.memory_pages(), component.stack_pages());
    let mut ranges = [(0u64, 0u64); MAX_RANGES];
    let mut used = 0;
    if let Ok(plan) = elf::plan(component.program(), USER_MIN, USER_END, limit * PAGE_SIZE) {
        for segment in plan.segments().iter().filter(|segment| segment.write) {
            if used < MAX_RANGES - 1 {
                ranges[used] = segment.pages();
                used += 1;
            }
        }
    }
    ranges[used] = (STACK_TOP - stack_pages * PAGE_SIZE, STACK_TOP);
    used += 1;
    let space = component.space();
    let tables = Tables {
        frames: &mut kernel.frames,
    };
    let mut stream = Stream::new(seed);
    let mut first = 0;
    for _ in 0..count {
        let Some(at) = place_in(&ranges[..used], &mut stream) else {
            break;
        };
        let byte = stream.next_u64() as u8;
        let Some(translation) = space
            .translate(&tables, VirtualAddress(at))
            .filter(|t| t.user && t.write)
        else {
            continue;
        };
        // SAFETY: the page is mapped user-writable in the target as its
        // own memory (a writable segment or its stack, built by the
        // loader), so the frame is the target's and in the direct map;
        // one byte inside it is written.
        unsafe { direct(translation.physical).write_volatile(byte) };
        if first == 0 {
            first = at;
        }
    }
    first
}

/// The `pick`-th of the queues `target` is an end of (receiving only, if
/// asked), counted modulo their number.
fn queue_of(kernel: &Kernel, target: usize, pick: u64, receiving: bool) -> Option<usize> {
    let queues = &kernel.queues[..kernel.queue_count];
    let mine = |queue: &&crate::object::Queue| {
        let (sender, receiver) = queue.ends();
        receiver == target || (!receiving && sender == target)
    };
    let count = queues.iter().filter(mine).count() as u64;
    if count == 0 {
        return None;
    }
    let wanted = (pick % count) as usize;
    queues
        .iter()
        .enumerate()
        .filter(|(_, queue)| mine(queue))
        .nth(wanted)
        .map(|(at, _)| at)
}

/// Writes byte `byte` at `offset` of queue memory starting at `memory`.
///
/// # Safety
/// `offset` must lie inside the queue's memory.
unsafe fn poke(memory: PhysicalAddress, offset: u64, byte: u8) {
    let page = PhysicalAddress(memory.0 + offset / PAGE_SIZE * PAGE_SIZE);
    // SAFETY: the caller keeps `offset` inside the queue's contiguous
    // memory, which is in the direct map and owned by the queue.
    unsafe {
        direct(page)
            .add((offset % PAGE_SIZE) as usize)
            .write_volatile(byte)
    };
}

/// Writes `count` seeded bytes into one of `target`'s queues: half in the
/// header's fields and stamps, half in the slots. Answers the queue.
pub fn corrupt_queue(kernel: &mut Kernel, target: usize, seed: u64, count: u64) -> u64 {
    let mut stream = Stream::new(seed);
    let Some(at) = queue_of(kernel, target, stream.next_u64(), false) else {
        return NO_QUEUE;
    };
    let queue = &kernel.queues[at];
    let (slot_size, slot_count) = queue.geometry();
    let memory = queue.memory();
    let mut header = [(0u64, 0u64); queue::HEADER_FIELDS.len() + 1];
    for (range, &(offset, length)) in header.iter_mut().zip(&queue::HEADER_FIELDS) {
        *range = (offset as u64, (offset + length) as u64);
    }
    let stamps = queue::STAMPS_OFFSET as u64;
    let stamp_bytes = queue::STAMP_BYTES as u64 * u64::from(slot_count);
    header[queue::HEADER_FIELDS.len()] = (stamps, stamps + stamp_bytes);
    let slots = queue::SLOTS_OFFSET as u64;
    let slot_bytes = u64::from(slot_size) * u64::from(slot_count);
    for _ in 0..count {
        let ranges: &[(u64, u64)] = if stream.next_u64() & 1 == 0 {
            &header
        } else {
            &[(slots, slots + slot_bytes)]
        };
        let Some(offset) = place_in(ranges, &mut stream) else {
            continue;
        };
        // SAFETY: every range lies inside the queue's memory: the header
        // fields and stamps in its first page (`queue::MAX_SLOTS` bounds
        // the stamps), the slots in the pages `queue_pages` allocated.
        unsafe { poke(memory, offset, stream.next_u64() as u8) };
    }
    at as u64
}

/// Fills one of the queues `target` receives from with up to `count`
/// seeded, stamped messages past the current tail and signals `target`.
/// Answers the queue.
pub fn flood_queue(kernel: &mut Kernel, target: usize, seed: u64, count: u64) -> u64 {
    let mut stream = Stream::new(seed);
    let Some(at) = queue_of(kernel, target, stream.next_u64(), true) else {
        return NO_QUEUE;
    };
    let queue = &kernel.queues[at];
    let (slot_size, slot_count) = queue.geometry();
    let memory = queue.memory();
    let header = direct(memory);
    // SAFETY: the header page is the queue's, in the direct map; the
    // offsets are the ABI's, inside it and aligned.
    let (head, tail) = unsafe {
        (
            header.add(queue::HEAD_OFFSET).cast::<u64>().read_volatile(),
            header.add(queue::TAIL_OFFSET).cast::<u64>().read_volatile(),
        )
    };
    // Whatever the indices say (they may be corrupt already), never more
    // than a ring's worth past the receiver's head.
    let free =
        u64::from(slot_count).saturating_sub(tail.wrapping_sub(head).min(u64::from(slot_count)));
    let messages = count.min(free);
    for message in tail..tail.wrapping_add(messages) {
        let slot = message % u64::from(slot_count);
        let start = queue::SLOTS_OFFSET as u64 + slot * u64::from(slot_size);
        let mut sum = queue::Checksum::new(slot_size as usize);
        for offset in (start..start + u64::from(slot_size)).step_by(8) {
            let word = stream.next_u64();
            sum.word(word);
            for (byte, value) in word.to_le_bytes().iter().enumerate() {
                // SAFETY: inside slot `slot` of the queue's slot pages
                // (slot sizes are multiples of 8).
                unsafe { poke(memory, offset + byte as u64, *value) };
            }
        }
        let stamp_at = queue::STAMPS_OFFSET + queue::STAMP_BYTES * slot as usize;
        // SAFETY: stamp `slot` lies in the header page (slot_count is at
        // most queue::MAX_SLOTS, checked at boot); 4-byte aligned.
        unsafe {
            header
                .add(stamp_at + queue::STAMP_LENGTH)
                .cast::<u32>()
                .write_volatile(slot_size);
            header
                .add(stamp_at + queue::STAMP_CHECKSUM)
                .cast::<u32>()
                .write_volatile(sum.finish());
            header
                .add(stamp_at)
                .cast::<u32>()
                .write_volatile(queue::stamp(message));
        }
    }
    // SAFETY: as above.
    unsafe {
        header
            .add(queue::TAIL_OFFSET)
            .cast::<u64>()
            .write_volatile(tail.wrapping_add(messages))
    };
    let (receiver, bit) = queue.receiver_bit();
    kernel.notify(receiver, 1 << bit);
    at as u64
}
