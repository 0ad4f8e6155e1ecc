//! The host tests' stand-ins for the hardware: [`TestMemory`], a DMA
//! buffer over a byte vector at a made-up physical address, and
//! [`SimDevice`], the device half of one split virtqueue.
//!
//! The device does what a device does and nothing more: it reads the
//! available ring and walks descriptor chains out of shared memory, and
//! writes used entries and the used index. It is also the hostile device:
//! [`SimDevice::write_entry`] and [`SimDevice::set_used_idx`] write any
//! values at all. Memory accesses the library makes out of range or
//! misaligned panic here, so the tests catch them.

use std::cell::RefCell;

use crate::DmaMemory;
use crate::queue::SplitQueue;

/// Where [`TestMemory`] claims to live for the device.
pub const PHYSICAL_BASE: u64 = 0x1_2340_0000;

/// A DMA buffer in a byte vector.
pub struct TestMemory {
    bytes: RefCell<Vec<u8>>,
}

impl TestMemory {
    pub fn new(length: usize) -> Self {
        Self {
            bytes: RefCell::new(vec![0; length]),
        }
    }

    /// The offset of a physical address the device was given.
    pub fn offset_of(&self, physical: u64) -> u64 {
        let offset = physical
            .checked_sub(PHYSICAL_BASE)
            .expect("physical address below the buffer");
        assert!(
            offset < self.bytes.borrow().len() as u64,
            "physical address past the buffer"
        );
        offset
    }

    pub fn read_bytes(&self, offset: u64, length: usize) -> Vec<u8> {
        let start = offset as usize;
        self.bytes.borrow()[start..start + length].to_vec()
    }

    pub fn write_bytes(&self, offset: u64, bytes: &[u8]) {
        let start = offset as usize;
        self.bytes.borrow_mut()[start..start + bytes.len()].copy_from_slice(bytes);
    }

    fn load<const N: usize>(&self, offset: u64) -> [u8; N] {
        assert_eq!(
            offset % N as u64,
            0,
            "misaligned {N}-byte read at {offset:#x}"
        );
        self.read_bytes(offset, N).try_into().unwrap()
    }

    fn store<const N: usize>(&self, offset: u64, bytes: [u8; N]) {
        assert_eq!(
            offset % N as u64,
            0,
            "misaligned {N}-byte write at {offset:#x}"
        );
        self.write_bytes(offset, &bytes);
    }
}

impl DmaMemory for TestMemory {
    fn read8(&self, offset: u64) -> u8 {
        u8::from_le_bytes(self.load(offset))
    }
    fn read16(&self, offset: u64) -> u16 {
        u16::from_le_bytes(self.load(offset))
    }
    fn read32(&self, offset: u64) -> u32 {
        u32::from_le_bytes(self.load(offset))
    }
    fn read64(&self, offset: u64) -> u64 {
        u64::from_le_bytes(self.load(offset))
    }
    fn write8(&self, offset: u64, value: u8) {
        self.store(offset, value.to_le_bytes());
    }
    fn write16(&self, offset: u64, value: u16) {
        self.store(offset, value.to_le_bytes());
    }
    fn write32(&self, offset: u64, value: u32) {
        self.store(offset, value.to_le_bytes());
    }
    fn write64(&self, offset: u64, value: u64) {
        self.store(offset, value.to_le_bytes());
    }
    fn physical(&self, offset: u64) -> u64 {
        PHYSICAL_BASE + offset
    }
}

/// One descriptor as the device read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub index: u16,
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
}

impl Descriptor {
    pub fn device_writes(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// A chain the device took from the available ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub descriptors: Vec<Descriptor>,
}

impl Chain {
    /// The bytes the device may write.
    pub fn writable(&self) -> u32 {
        self.descriptors
            .iter()
            .filter(|d| d.device_writes())
            .map(|d| d.len)
            .sum()
    }
}

/// The device half of a split virtqueue.
pub struct SimDevice {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// The next available entry to take.
    last_avail: u16,
    /// The used index the device publishes next.
    used_idx: u16,
}

impl SimDevice {
    /// The device for `queue`, at the physical addresses the driver gave.
    pub fn new(memory: &TestMemory, queue: &SplitQueue) -> Self {
        Self {
            size: queue.size(),
            desc: memory.offset_of(queue.desc_physical()),
            avail: memory.offset_of(queue.avail_physical()),
            used: memory.offset_of(queue.used_physical()),
            last_avail: 0,
            used_idx: 0,
        }
    }

    /// Takes the next chain from the available ring, if the driver
    /// published one.
    pub fn take(&mut self, memory: &TestMemory) -> Option<Chain> {
        if memory.read16(self.avail + 2) == self.last_avail {
            return None;
        }
        let slot = u64::from(self.last_avail % self.size);
        let head = memory.read16(self.avail + 4 + 2 * slot);
        self.last_avail = self.last_avail.wrapping_add(1);
        let mut descriptors = Vec::new();
        let mut index = head;
        loop {
            assert!(index < self.size, "descriptor index {index} out of range");
            assert!(
                descriptors.len() < usize::from(self.size),
                "descriptor loop"
            );
            let at = self.desc + 16 * u64::from(index);
            let descriptor = Descriptor {
                index,
                addr: memory.read64(at),
                len: memory.read32(at + 8),
                flags: memory.read16(at + 12),
            };
            descriptors.push(descriptor);
            if descriptor.flags & 1 == 0 {
                break;
            }
            index = memory.read16(at + 14);
        }
        Some(Chain { head, descriptors })
    }

    /// Returns the chain at `head` with `length` bytes written.
    pub fn complete(&mut self, memory: &TestMemory, head: u16, length: u32) {
        self.write_entry(memory, self.used_idx, u32::from(head), length);
        self.set_used_idx(memory, self.used_idx.wrapping_add(1));
    }

    /// Writes the used entry for index `idx`, whatever the values.
    pub fn write_entry(&self, memory: &TestMemory, idx: u16, id: u32, length: u32) {
        let entry = self.used + 4 + 8 * u64::from(idx % self.size);
        memory.write32(entry, id);
        memory.write32(entry + 4, length);
    }

    /// Publishes `idx` as the used index, whatever its value.
    pub fn set_used_idx(&mut self, memory: &TestMemory, idx: u16) {
        self.used_idx = idx;
        memory.write16(self.used + 2, idx);
    }

    /// Sets the used ring's flags (bit 0: no notifications wanted).
    pub fn set_used_flags(&self, memory: &TestMemory, flags: u16) {
        memory.write16(self.used, flags);
    }

    /// The used index published so far.
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }
}
