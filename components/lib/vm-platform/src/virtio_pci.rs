//! The modern (virtio 1.x) PCI transport the world switcher's virtio
//! devices share: one 64-bit memory BAR holding the common configuration
//! ([`COMMON`]), the ISR status ([`ISR`]), the device's own configuration
//! ([`DEVICE_CONFIG`]), the notification area ([`NOTIFY`]) and the MSI-X
//! table ([`MSIX_TABLE`], pending bits at [`MSIX_PBA`]); up to
//! [`MAX_QUEUES`] split virtqueues; MSI-X (a configuration vector and one
//! per queue) or INTx.
//!
//! [`config_space`] is the function's PCI configuration space (its
//! capabilities point into BAR 0); [`Transport`] is the register file and
//! each queue's ring state. A device (`virtio_blk`, `virtio_net`) gives it
//! the features it offers and its configuration bytes, takes the guest's
//! descriptor chains with [`Transport::next_chain`] — which walks a chain
//! in guest memory and refuses a loop, a chain longer than the queue or
//! [`MAX_CHAIN`], a descriptor table outside guest memory, an indirect
//! descriptor (not offered) or a next index out of range — checks the
//! buffers against its own rules (see [`inside`]), ends each with
//! [`Transport::complete`], and raises [`Transport::interrupt`] once per
//! batch. Every queue notifies at the same address (multiplier 0): the
//! value written is the queue's index.
//!
//! The transport keeps nothing of the guest's but register values and ring
//! indices: a device's requests are its owner's to carry out, and a guest
//! reset ([`Written::Reset`]) forgets them.

use crate::guest_paging::GuestPhysical;
use crate::pci::ConfigSpace;
use crate::{GuestRead, Memory, MmioIgnored};

pub const VENDOR: u16 = 0x1af4;
/// BAR 0's size and the register regions in it.
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON: u64 = 0x0000;
pub const ISR: u64 = 0x1000;
pub const DEVICE_CONFIG: u64 = 0x2000;
pub const NOTIFY: u64 = 0x3000;
pub const MSIX_TABLE: u64 = 0x4000;
pub const MSIX_PBA: u64 = 0x5000;
/// The most queues a device has.
pub const MAX_QUEUES: usize = 2;
/// The most MSI-X vectors: configuration changes and one per queue.
pub const MAX_VECTORS: usize = MAX_QUEUES + 1;
/// The most descriptors in one chain.
pub const MAX_CHAIN: usize = 18;
/// The value of a vector register that names no vector.
pub const NO_VECTOR: u16 = 0xffff;
/// Feature bit 32: a modern device.
pub const FEATURE_VERSION_1: u64 = 1 << 32;

const COMMON_BYTES: u64 = 0x38;
const DEVICE_CONFIG_MAX: u64 = 0x1000;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
pub(crate) const DESCRIPTOR_NEXT: u16 = 1;
pub(crate) const DESCRIPTOR_WRITE: u16 = 2;
pub(crate) const DESCRIPTOR_INDIRECT: u16 = 4;
pub(crate) const AVAIL_NO_INTERRUPT: u16 = 1;

/// Where the capabilities sit in configuration space.
pub(crate) const CAP_MSIX: u8 = 0x40;
const CAP_COMMON: u8 = 0x4c;
const CAP_NOTIFY: u8 = 0x5c;
const CAP_ISR: u8 = 0x70;
const CAP_DEVICE: u8 = 0x80;
pub(crate) const MSIX_ENABLE: u16 = 1 << 15;
pub(crate) const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// What a function is, for its configuration space.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The PCI device id (0x1040 + the virtio device type).
    pub device: u16,
    /// Class, subclass and programming interface.
    pub class: u32,
    /// The subsystem id.
    pub subsystem: u16,
    /// MSI-X vectors (at most [`MAX_VECTORS`]).
    pub vectors: u16,
    /// Bytes of the device's own configuration.
    pub device_config_bytes: u32,
}

/// The function's configuration space: ids, BAR 0 (64-bit memory of
/// [`BAR_SIZE`] at `bar`, its address bits writable so the guest can size
/// and move it), interrupt pin A, and the capability list.
pub fn config_space(bar: u64, identity: &Identity) -> ConfigSpace {
    let mut config = ConfigSpace::new(VENDOR, identity.device, identity.class, 1);
    // Status: a capability list.
    config.set(0x06, &[0x10, 0x00]);
    config.set(0x2c, &VENDOR.to_le_bytes());
    config.set(0x2e, &identity.subsystem.to_le_bytes());
    config.set(0x10, &((bar as u32) | 0b100).to_le_bytes());
    config.set(0x14, &((bar >> 32) as u32).to_le_bytes());
    config.set_writable(0x10, &(!(BAR_SIZE as u32 - 1) & !0xf).to_le_bytes());
    config.set_writable(0x14, &[0xff; 4]);
    config.set(0x34, &[CAP_MSIX]);
    config.set(0x3d, &[1]);
    // MSI-X: table size - 1, table and PBA in BAR 0.
    config.set(CAP_MSIX, &[0x11, CAP_COMMON]);
    config.set(CAP_MSIX + 2, &(identity.vectors - 1).to_le_bytes());
    config.set(CAP_MSIX + 4, &(MSIX_TABLE as u32).to_le_bytes());
    config.set(CAP_MSIX + 8, &(MSIX_PBA as u32).to_le_bytes());
    config.set_writable(
        CAP_MSIX + 2,
        &(MSIX_ENABLE | MSIX_FUNCTION_MASK).to_le_bytes(),
    );
    let vendor = |config: &mut ConfigSpace,
                  at: u8,
                  next: u8,
                  length: u8,
                  kind: u8,
                  offset: u64,
                  size: u32| {
        config.set(at, &[0x09, next, length, kind, 0]);
        config.set(at + 8, &(offset as u32).to_le_bytes());
        config.set(at + 12, &size.to_le_bytes());
    };
    vendor(&mut config, CAP_COMMON, CAP_NOTIFY, 16, 1, COMMON, 0x38);
    vendor(&mut config, CAP_NOTIFY, CAP_ISR, 20, 2, NOTIFY, 4);
    // Notify multiplier 0: every queue notifies at the same address.
    config.set(CAP_NOTIFY + 16, &0u32.to_le_bytes());
    vendor(&mut config, CAP_ISR, CAP_DEVICE, 16, 3, ISR, 1);
    vendor(
        &mut config,
        CAP_DEVICE,
        0,
        16,
        4,
        DEVICE_CONFIG,
        identity.device_config_bytes,
    );
    config
}

/// BAR 0's address as the guest has programmed it (memory decoding
/// enabled), if any.
pub fn bar_address(config: &ConfigSpace) -> Option<u64> {
    let command = config.read(0x04, 2);
    let low = u64::from(config.read(0x10, 4) & !0xf);
    let high = u64::from(config.read(0x14, 4));
    let address = low | high << 32;
    (command & 0b10 != 0 && address != 0).then_some(address)
}

/// What a register write asks of the device's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Nothing,
    /// The guest notified this queue: take its chains.
    Notify(u16),
    /// The guest reset the device: forget what is in flight (answers must
    /// not reach guest memory).
    Reset,
}

/// How to interrupt the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Write this MSI message (to the local APIC).
    Msi { address: u64, data: u32 },
    /// Assert INTx (level, until the guest reads the ISR status).
    Intx,
}

/// One descriptor of a chain: a guest-physical buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub address: u64,
    pub length: u32,
    /// The device writes it (else it reads it).
    pub writable: bool,
}

/// A chain the guest queued, in order, not yet checked against guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The id [`Transport::complete`] takes.
    pub head: u16,
    pub descriptors: [Descriptor; MAX_CHAIN],
    pub count: usize,
}

impl Chain {
    pub fn as_slice(&self) -> &[Descriptor] {
        &self.descriptors[..self.count]
    }
}

/// A chain the transport cannot walk; its owner completes it (with
/// nothing written) and reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChain {
    pub head: u16,
    pub why: &'static str,
}

/// Whether `length` bytes at `address` lie in guest memory (a buffer of
/// no bytes does not).
pub fn inside(memory: &impl GuestRead, address: u64, length: u32) -> bool {
    let mut byte = [0u8];
    length > 0
        && memory.read(GuestPhysical(address), &mut byte)
        && address
            .checked_add(u64::from(length) - 1)
            .is_some_and(|last| memory.read(GuestPhysical(last), &mut byte))
}

#[derive(Clone, Copy, Debug, Default)]
struct MsixEntry {
    address: u64,
    data: u32,
    masked: bool,
}

impl MsixEntry {
    /// The 16 bytes of the table entry: address, data, vector control.
    fn bytes(&self) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&self.address.to_le_bytes());
        raw[8..12].copy_from_slice(&self.data.to_le_bytes());
        raw[12..16].copy_from_slice(&u32::from(self.masked).to_le_bytes());
        raw
    }
}

/// One queue's registers and ring indices.
#[derive(Clone, Copy, Debug)]
struct Ring {
    size: u16,
    vector: u16,
    enabled: bool,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_index: u16,
}

/// The transport's registers and queue state.
#[derive(Clone, Debug)]
pub struct Transport {
    offered: u64,
    queues: u16,
    queue_max: u16,
    vectors: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_vector: u16,
    /// The queue the queue registers show.
    queue_select: u16,
    rings: [Ring; MAX_QUEUES],
    isr: u8,
    msix: [MsixEntry; MAX_VECTORS],
    msix_control: u16,
}

impl Transport {
    /// A reset transport offering `offered` features, with `queues` queues
    /// of at most `queue_max` entries (a power of two) and `vectors` MSI-X
    /// vectors (both bounded by [`MAX_QUEUES`] and [`MAX_VECTORS`]).
    pub fn new(offered: u64, queues: u16, queue_max: u16, vectors: u16) -> Self {
        let ring = Ring {
            size: queue_max,
            vector: NO_VECTOR,
            enabled: false,
            desc: 0,
            avail: 0,
            used: 0,
            last_avail: 0,
            used_index: 0,
        };
        Self {
            offered,
            queues: queues.min(MAX_QUEUES as u16),
            queue_max,
            vectors: vectors.min(MAX_VECTORS as u16),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            rings: [ring; MAX_QUEUES],
            isr: 0,
            msix: [MsixEntry {
                masked: true,
                ..MsixEntry::default()
            }; MAX_VECTORS],
            msix_control: 0,
        }
    }

    /// The features the driver accepted.
    pub fn negotiated(&self) -> u64 {
        self.driver_features
    }

    /// Follows the MSI-X capability's control word after the guest wrote
    /// configuration space.
    pub fn config_written(&mut self, config: &ConfigSpace) {
        self.msix_control = config.read(CAP_MSIX + 2, 2) as u16;
    }

    /// Whether INTx is asserted (MSI-X off and the queue bit set in the
    /// ISR status).
    pub fn intx_asserted(&self) -> bool {
        self.msix_control & MSIX_ENABLE == 0 && self.isr & 1 != 0
    }

    /// Back to the state after [`Transport::new`], but for the MSI-X table
    /// and control, which live in configuration space and BAR memory the
    /// virtio reset does not touch.
    fn reset(&mut self) {
        let (msix, control) = (self.msix, self.msix_control);
        *self = Self::new(self.offered, self.queues, self.queue_max, self.vectors);
        self.msix = msix;
        self.msix_control = control;
    }

    /// A guest read of `size` bytes at `offset` in BAR 0, the device's
    /// configuration being `device_config`. Reading the ISR status clears
    /// it (and deasserts INTx).
    pub fn read(
        &mut self,
        offset: u64,
        size: u8,
        device_config: &[u8],
    ) -> Result<u64, MmioIgnored> {
        check_access(offset, size)?;
        let table_end = MSIX_TABLE + 16 * u64::from(self.vectors);
        let value = match offset {
            COMMON..COMMON_BYTES => self.common_read(offset - COMMON, size),
            ISR => {
                let isr = self.isr;
                self.isr = 0;
                u64::from(isr)
            }
            _ if (DEVICE_CONFIG..DEVICE_CONFIG + DEVICE_CONFIG_MAX).contains(&offset) => {
                bytes(device_config, (offset - DEVICE_CONFIG) as usize, size)
            }
            _ if (MSIX_TABLE..table_end).contains(&offset) => {
                let raw = self.msix[((offset - MSIX_TABLE) / 16) as usize].bytes();
                bytes(&raw, ((offset - MSIX_TABLE) % 16) as usize, size)
            }
            // No vector is ever left pending: a masked one is dropped.
            MSIX_PBA..0x5008 => 0,
            _ if offset < BAR_SIZE => 0,
            _ => return Err(MmioIgnored::OutOfRange(offset)),
        };
        Ok(value)
    }

    /// A guest write of `size` bytes of `value` at `offset` in BAR 0 (the
    /// device's configuration is read-only).
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<Written, MmioIgnored> {
        check_access(offset, size)?;
        let table_end = MSIX_TABLE + 16 * u64::from(self.vectors);
        match offset {
            COMMON..COMMON_BYTES => return Ok(self.common_write(offset - COMMON, size, value)),
            NOTIFY..0x3004 => {
                let queue = value as u16;
                return Ok(if queue < self.queues {
                    Written::Notify(queue)
                } else {
                    Written::Nothing
                });
            }
            _ if (MSIX_TABLE..table_end).contains(&offset) => {
                let index = ((offset - MSIX_TABLE) / 16) as usize;
                let mut raw = self.msix[index].bytes();
                let at = ((offset - MSIX_TABLE) % 16) as usize;
                raw[at..at + usize::from(size)]
                    .copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
                self.msix[index] = MsixEntry {
                    address: u64::from_le_bytes(raw[..8].try_into().unwrap_or_default()),
                    data: u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default()),
                    masked: raw[12] & 1 != 0,
                };
            }
            _ if offset < BAR_SIZE => {}
            _ => return Err(MmioIgnored::OutOfRange(offset)),
        }
        Ok(Written::Nothing)
    }

    fn selected(&self) -> Option<&Ring> {
        (self.queue_select < self.queues).then(|| &self.rings[usize::from(self.queue_select)])
    }

    fn common_read(&self, offset: u64, size: u8) -> u64 {
        let features = self.offered >> (32 * u64::from(self.device_feature_select.min(2)));
        let mut raw = [0u8; COMMON_BYTES as usize];
        raw[0..4].copy_from_slice(&self.device_feature_select.to_le_bytes());
        raw[4..8].copy_from_slice(&(features as u32).to_le_bytes());
        raw[8..12].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        let driver = self.driver_features >> (32 * u64::from(self.driver_feature_select.min(2)));
        raw[12..16].copy_from_slice(&(driver as u32).to_le_bytes());
        raw[16..18].copy_from_slice(&self.config_vector.to_le_bytes());
        raw[18..20].copy_from_slice(&self.queues.to_le_bytes());
        raw[20] = self.status;
        raw[21] = 0;
        raw[22..24].copy_from_slice(&self.queue_select.to_le_bytes());
        let Some(ring) = self.selected() else {
            // No such queue: size 0, the rest 0.
            return bytes(&raw[..24], offset as usize, size);
        };
        raw[24..26].copy_from_slice(&ring.size.to_le_bytes());
        raw[26..28].copy_from_slice(&ring.vector.to_le_bytes());
        raw[28..30].copy_from_slice(&u16::from(ring.enabled).to_le_bytes());
        // Notify offset 0: every queue notifies at NOTIFY.
        raw[30..32].copy_from_slice(&0u16.to_le_bytes());
        raw[32..40].copy_from_slice(&ring.desc.to_le_bytes());
        raw[40..48].copy_from_slice(&ring.avail.to_le_bytes());
        raw[48..56].copy_from_slice(&ring.used.to_le_bytes());
        bytes(&raw, offset as usize, size)
    }

    fn common_write(&mut self, offset: u64, size: u8, value: u64) -> Written {
        let set64 = |field: &mut u64, at: u64| {
            let shift = 8 * (offset - at);
            let mask = if size == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * u64::from(size))) - 1
            };
            *field = (*field & !(mask << shift)) | ((value & mask) << shift);
        };
        let vectors = self.vectors;
        let vector = |value: u64| {
            let value = value as u16;
            if value < vectors { value } else { NO_VECTOR }
        };
        match offset {
            0x00 => self.device_feature_select = value as u32,
            0x08 => self.driver_feature_select = value as u32,
            0x0c => {
                let shift = 32 * u64::from(self.driver_feature_select.min(2));
                if shift < 64 {
                    let mask = 0xffff_ffffu64 << shift;
                    self.driver_features =
                        (self.driver_features & !mask) | ((value << shift) & mask);
                }
                return Written::Nothing;
            }
            0x10 => self.config_vector = vector(value),
            0x14 => {
                let status = value as u8;
                if status == 0 {
                    self.reset();
                    return Written::Reset;
                }
                // FEATURES_OK only for features the device offers.
                self.status = if status & STATUS_FEATURES_OK != 0
                    && self.driver_features & !self.offered != 0
                {
                    status & !STATUS_FEATURES_OK
                } else {
                    status
                };
            }
            0x16 => self.queue_select = value as u16,
            _ => {
                let queue_max = self.queue_max;
                let select = usize::from(self.queue_select);
                // Queue registers of a queue that does not exist.
                let Some(ring) = self.rings[..usize::from(self.queues)].get_mut(select) else {
                    return Written::Nothing;
                };
                match offset {
                    0x18 => {
                        let size = value as u16;
                        if size.is_power_of_two() && size <= queue_max && !ring.enabled {
                            ring.size = size;
                        }
                    }
                    0x1a => ring.vector = vector(value),
                    0x1c => ring.enabled = value & 1 != 0 && ring.size != 0,
                    0x20..0x28 if !ring.enabled => set64(&mut ring.desc, 0x20),
                    0x28..0x30 if !ring.enabled => set64(&mut ring.avail, 0x28),
                    0x30..0x38 if !ring.enabled => set64(&mut ring.used, 0x30),
                    _ => {}
                }
            }
        }
        Written::Nothing
    }

    /// Whether `queue` runs: the driver is ready and the queue enabled.
    pub fn running(&self, queue: u16) -> bool {
        self.status & STATUS_DRIVER_OK != 0
            && self.rings[..usize::from(self.queues)]
                .get(usize::from(queue))
                .is_some_and(|ring| ring.enabled && ring.size != 0)
    }

    /// The next chain the guest queued on `queue`, if any, walked in guest
    /// memory, or why it cannot be.
    pub fn next_chain(
        &mut self,
        queue: u16,
        memory: &impl GuestRead,
    ) -> Option<Result<Chain, BadChain>> {
        if !self.running(queue) {
            return None;
        }
        let ring = &mut self.rings[usize::from(queue)];
        let avail_index = read_u16(memory, ring.avail + 2)?;
        if avail_index == ring.last_avail {
            return None;
        }
        let slot = u64::from(ring.last_avail % ring.size);
        let head = read_u16(memory, ring.avail + 4 + 2 * slot)?;
        ring.last_avail = ring.last_avail.wrapping_add(1);
        let ring = *ring;
        Some(walk(&ring, memory, head))
    }

    /// Whether `queue` holds chains not yet taken.
    pub fn has_chains(&self, queue: u16, memory: &impl GuestRead) -> bool {
        self.running(queue) && {
            let ring = &self.rings[usize::from(queue)];
            read_u16(memory, ring.avail + 2).is_some_and(|index| index != ring.last_avail)
        }
    }

    /// Ends the chain with head `head` on `queue`: a used element saying
    /// the device wrote `written` bytes. The caller raises
    /// [`Self::interrupt`] once for a batch.
    pub fn complete(
        &mut self,
        queue: u16,
        memory: &mut impl Memory,
        head: u16,
        written: u32,
    ) -> bool {
        if !self.running(queue) {
            return false;
        }
        let ring = &mut self.rings[usize::from(queue)];
        let slot = u64::from(ring.used_index % ring.size);
        let mut element = [0u8; 8];
        element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        element[4..].copy_from_slice(&written.to_le_bytes());
        let placed = memory.write(ring.used + 4 + 8 * slot, &element);
        ring.used_index = ring.used_index.wrapping_add(1);
        // The index after the element: a guest reading the index sees it.
        placed && memory.write(ring.used + 2, &ring.used_index.to_le_bytes())
    }

    /// The interrupt for `queue`'s completions just written, if the guest
    /// wants one: the queue's MSI-X message when MSI-X is on (none if its
    /// vector is unset or masked), else INTx.
    pub fn interrupt(&mut self, queue: u16, memory: &impl GuestRead) -> Option<Interrupt> {
        let ring = self.rings[..usize::from(self.queues)].get(usize::from(queue))?;
        if read_u16(memory, ring.avail).is_some_and(|flags| flags & AVAIL_NO_INTERRUPT != 0) {
            return None;
        }
        let vector = ring.vector;
        self.isr |= 1;
        if self.msix_control & MSIX_ENABLE == 0 {
            return Some(Interrupt::Intx);
        }
        let entry = self.msix[..usize::from(self.vectors)].get(usize::from(vector))?;
        (self.msix_control & MSIX_FUNCTION_MASK == 0 && !entry.masked).then_some(Interrupt::Msi {
            address: entry.address,
            data: entry.data,
        })
    }
}

/// A register access of 1, 2, 4 or 8 bytes at its own alignment.
fn check_access(offset: u64, size: u8) -> Result<(), MmioIgnored> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(MmioIgnored::Size(size));
    }
    if !offset.is_multiple_of(u64::from(size)) {
        return Err(MmioIgnored::Misaligned(offset));
    }
    Ok(())
}

/// Walks the chain from `head` in `ring`'s descriptor table.
fn walk(ring: &Ring, memory: &impl GuestRead, head: u16) -> Result<Chain, BadChain> {
    let refuse = |why| BadChain { head, why };
    if head >= ring.size {
        return Err(refuse("head out of range"));
    }
    let mut chain = Chain {
        head,
        descriptors: [Descriptor::default(); MAX_CHAIN],
        count: 0,
    };
    let mut index = head;
    loop {
        if chain.count == MAX_CHAIN || chain.count >= usize::from(ring.size) {
            return Err(refuse("chain too long (or a loop)"));
        }
        let at = ring.desc + 16 * u64::from(index);
        let (Some(address), Some(length), Some(flags), Some(next)) = (
            memory.read_u64(GuestPhysical(at)),
            memory.read_u32(GuestPhysical(at + 8)),
            read_u16(memory, at + 12),
            read_u16(memory, at + 14),
        ) else {
            return Err(refuse("descriptor table outside guest memory"));
        };
        if flags & DESCRIPTOR_INDIRECT != 0 {
            return Err(refuse("indirect descriptor (not offered)"));
        }
        chain.descriptors[chain.count] = Descriptor {
            address,
            length,
            writable: flags & DESCRIPTOR_WRITE != 0,
        };
        chain.count += 1;
        if flags & DESCRIPTOR_NEXT == 0 {
            return Ok(chain);
        }
        if next >= ring.size {
            return Err(refuse("next descriptor out of range"));
        }
        index = next;
    }
}

/// `size` bytes of `raw` from `at`, little-endian; zeros past its end.
pub(crate) fn bytes(raw: &[u8], at: usize, size: u8) -> u64 {
    (0..usize::from(size)).fold(0, |value, i| {
        value | u64::from(raw.get(at + i).copied().unwrap_or(0)) << (8 * i)
    })
}

pub(crate) fn read_u16(memory: &impl GuestRead, address: u64) -> Option<u16> {
    let mut bytes = [0u8; 2];
    memory
        .read(GuestPhysical(address), &mut bytes)
        .then(|| u16::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{VecMemory, descriptor};

    fn two_queues() -> Transport {
        Transport::new(FEATURE_VERSION_1 | 1 << 5, 2, 64, 3)
    }

    #[test]
    fn each_queue_has_its_registers_vector_and_notification() {
        let mut transport = two_queues();
        assert_eq!(transport.read(0x12, 2, &[]), Ok(2), "num_queues");
        // Queue 1: its own size, vector and addresses.
        transport.write(0x16, 2, 1).unwrap();
        assert_eq!(transport.read(0x18, 2, &[]), Ok(64));
        transport.write(0x18, 2, 32).unwrap();
        transport.write(0x1a, 2, 2).unwrap();
        transport.write(0x20, 8, 0x1_0000).unwrap();
        transport.write(0x16, 2, 0).unwrap();
        assert_eq!(transport.read(0x18, 2, &[]), Ok(64), "queue 0 untouched");
        assert_eq!(transport.read(0x1a, 2, &[]), Ok(u64::from(NO_VECTOR)));
        transport.write(0x16, 2, 1).unwrap();
        assert_eq!(transport.read(0x18, 2, &[]), Ok(32));
        assert_eq!(transport.read(0x1a, 2, &[]), Ok(2));
        assert_eq!(transport.read(0x20, 8, &[]), Ok(0x1_0000));
        // A vector past the table reads as none; a queue past the count
        // has no registers.
        transport.write(0x1a, 2, 3).unwrap();
        assert_eq!(transport.read(0x1a, 2, &[]), Ok(u64::from(NO_VECTOR)));
        transport.write(0x16, 2, 2).unwrap();
        assert_eq!(transport.read(0x18, 2, &[]), Ok(0));
        transport.write(0x18, 2, 16).unwrap();
        assert_eq!(transport.read(0x18, 2, &[]), Ok(0));
        // The value written to the notification area names the queue.
        assert_eq!(transport.write(NOTIFY, 2, 1), Ok(Written::Notify(1)));
        assert_eq!(transport.write(NOTIFY, 2, 0), Ok(Written::Notify(0)));
        assert_eq!(transport.write(NOTIFY, 2, 2), Ok(Written::Nothing));
        // Three MSI-X entries; past them nothing is stored.
        transport.write(MSIX_TABLE + 32, 8, 0xfee0_0000).unwrap();
        assert_eq!(transport.read(MSIX_TABLE + 32, 8, &[]), Ok(0xfee0_0000));
        transport.write(MSIX_TABLE + 48, 8, 0xfee0_0000).unwrap();
        assert_eq!(transport.read(MSIX_TABLE + 48, 8, &[]), Ok(0));
        // The device's configuration, zeros past its end.
        assert_eq!(
            transport.read(DEVICE_CONFIG + 4, 2, &[1, 2, 3, 4, 5, 6]),
            Ok(0x0605)
        );
        assert_eq!(
            transport.read(DEVICE_CONFIG + 8, 4, &[1, 2, 3, 4, 5, 6]),
            Ok(0)
        );
    }

    #[test]
    fn chains_complete_and_interrupt_per_queue() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let mut transport = two_queues();
        for (queue, base) in [(0u64, 0x1_0000u64), (1, 0x2_0000)] {
            transport.write(0x16, 2, queue).unwrap();
            transport.write(0x18, 2, 8).unwrap();
            transport.write(0x1a, 2, queue + 1).unwrap();
            transport.write(0x20, 8, base).unwrap();
            transport.write(0x28, 8, base + 0x1000).unwrap();
            transport.write(0x30, 8, base + 0x2000).unwrap();
            transport.write(0x1c, 2, 1).unwrap();
        }
        transport.write(MSIX_TABLE + 32, 8, 0xfee0_0000).unwrap();
        transport.write(MSIX_TABLE + 40, 4, 0x52).unwrap();
        transport.write(MSIX_TABLE + 44, 4, 0).unwrap();
        transport.msix_control = MSIX_ENABLE;
        assert!(
            transport.next_chain(1, &memory).is_none(),
            "not running yet"
        );
        transport.write(0x14, 1, 1 | 2 | 8 | 4).unwrap();
        // Queue 1: one chain of two descriptors, readable then writable.
        descriptor(&mut memory, 0x2_0000, 3, 0x5000, 12, DESCRIPTOR_NEXT, 5);
        descriptor(&mut memory, 0x2_0000, 5, 0x6000, 1514, DESCRIPTOR_WRITE, 0);
        assert!(Memory::write(&mut memory, 0x2_1004, &3u16.to_le_bytes()));
        assert!(Memory::write(&mut memory, 0x2_1002, &1u16.to_le_bytes()));
        assert!(transport.has_chains(1, &memory));
        assert!(!transport.has_chains(0, &memory));
        let chain = transport.next_chain(1, &memory).unwrap().unwrap();
        assert_eq!(chain.head, 3);
        assert_eq!(
            chain.as_slice(),
            [
                Descriptor {
                    address: 0x5000,
                    length: 12,
                    writable: false
                },
                Descriptor {
                    address: 0x6000,
                    length: 1514,
                    writable: true
                },
            ]
        );
        assert!(transport.next_chain(1, &memory).is_none());
        assert!(transport.complete(1, &mut memory, 3, 1526));
        assert_eq!(&memory.0[0x2_2002..0x2_2004], &1u16.to_le_bytes());
        assert_eq!(&memory.0[0x2_2004..0x2_200c], &[3, 0, 0, 0, 0xf6, 5, 0, 0]);
        assert_eq!(
            transport.interrupt(1, &memory),
            Some(Interrupt::Msi {
                address: 0xfee0_0000,
                data: 0x52
            })
        );
        // Queue 0's vector 1 was never programmed: masked, no message.
        assert_eq!(transport.interrupt(0, &memory), None);
        assert_eq!(transport.interrupt(2, &memory), None, "no such queue");
        // A loop is refused, not followed.
        descriptor(&mut memory, 0x2_0000, 5, 0x6000, 1514, DESCRIPTOR_NEXT, 3);
        assert!(Memory::write(&mut memory, 0x2_1006, &3u16.to_le_bytes()));
        assert!(Memory::write(&mut memory, 0x2_1002, &2u16.to_le_bytes()));
        assert_eq!(
            transport.next_chain(1, &memory),
            Some(Err(BadChain {
                head: 3,
                why: "chain too long (or a loop)"
            }))
        );
    }
}
