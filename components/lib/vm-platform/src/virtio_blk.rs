//! A virtio-blk device for guests: a modern (virtio 1.x) PCI function whose
//! registers live in one 64-bit memory BAR, with one request queue, MSI-X
//! (two vectors) and INTx.
//!
//! The function's configuration space ([`config_space`]) carries the
//! virtio vendor capabilities (common configuration at [`COMMON`], ISR
//! status at [`ISR`], device configuration at [`DEVICE_CONFIG`],
//! notification at [`NOTIFY`]) and the MSI-X capability (table at
//! [`MSIX_TABLE`], pending bits at [`MSIX_PBA`]), all in BAR 0 of
//! [`BAR_SIZE`] bytes. [`VirtioBlk`] is the rest of the device: the
//! register file the guest reads and writes through the BAR, and the
//! queue. A guest's notify ([`Written::Notify`]) is one exit for however
//! many requests it queued; the world switcher then takes them one by one
//! with [`VirtioBlk::next_request`], which walks each descriptor chain in
//! guest memory and refuses what is malformed (a loop, a chain longer than
//! the queue, a buffer outside guest RAM, buffers in the wrong direction,
//! data not a whole number of sectors, more than [`MAX_SEGMENTS`] data
//! buffers, an indirect descriptor, which is not offered), and hands back
//! the request with its guest-physical buffers. [`VirtioBlk::complete`]
//! writes the status byte and the used element; the switcher raises one
//! interrupt per batch ([`VirtioBlk::interrupt`]): the MSI-X message the
//! guest programmed for the queue's vector, or INTx (level: asserted from
//! then until the guest reads the ISR status).
//!
//! The device keeps nothing of the guest's but the ring indices, so a
//! request is the world switcher's to carry out and to resend after the
//! block store restarts; the guest sees a delay, never an error.

use crate::guest_paging::GuestPhysical;
use crate::pci::ConfigSpace;
use crate::{GuestRead, Memory, MmioIgnored};

pub const VENDOR: u16 = 0x1af4;
/// 0x1040 + 2, a modern-only block device.
pub const DEVICE: u16 = 0x1042;
/// Mass storage, "other".
pub const CLASS: u32 = 0x01_80_00;
/// BAR 0's size and the register regions in it.
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON: u64 = 0x0000;
pub const ISR: u64 = 0x1000;
pub const DEVICE_CONFIG: u64 = 0x2000;
pub const NOTIFY: u64 = 0x3000;
pub const MSIX_TABLE: u64 = 0x4000;
pub const MSIX_PBA: u64 = 0x5000;
/// The queue's largest size.
pub const QUEUE_MAX: u16 = 128;
/// The most data buffers in one request.
pub const MAX_SEGMENTS: usize = 16;
/// The most bytes one request moves.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// MSI-X vectors: configuration changes and the queue.
pub const MSIX_VECTORS: usize = 2;
/// The value of a vector register that names no vector.
pub const NO_VECTOR: u16 = 0xffff;

const SECTOR: u64 = 512;
const FEATURE_SEG_MAX: u64 = 1 << 2;
const FEATURE_RO: u64 = 1 << 5;
const FEATURE_FLUSH: u64 = 1 << 9;
const FEATURE_DISCARD: u64 = 1 << 13;
const FEATURE_WRITE_ZEROES: u64 = 1 << 14;
const FEATURE_VERSION_1: u64 = 1 << 32;
/// The most sectors one discard or write-zeroes range covers (one range
/// per request).
pub const MAX_ZERO_SECTORS: u32 = MAX_REQUEST_BYTES / SECTOR as u32;
/// The device configuration's length: through `write_zeroes_may_unmap`.
const DEVICE_CONFIG_BYTES: usize = 0x3c;
/// A discard / write-zeroes range: sector, sectors, flags.
const RANGE_BYTES: u32 = 16;
/// The write-zeroes range flag "the device may unmap".
const RANGE_UNMAP: u32 = 1;
const FEATURES: u64 = FEATURE_SEG_MAX | FEATURE_FLUSH | FEATURE_VERSION_1;

const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const DESCRIPTOR_NEXT: u16 = 1;
const DESCRIPTOR_WRITE: u16 = 2;
const DESCRIPTOR_INDIRECT: u16 = 4;
const AVAIL_NO_INTERRUPT: u16 = 1;

/// Where the capabilities sit in configuration space.
const CAP_MSIX: u8 = 0x40;
const CAP_COMMON: u8 = 0x4c;
const CAP_NOTIFY: u8 = 0x5c;
const CAP_ISR: u8 = 0x70;
const CAP_DEVICE: u8 = 0x80;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The function's configuration space: ids, BAR 0 (64-bit memory of
/// [`BAR_SIZE`] at `bar`, its address bits writable so the guest can size
/// and move it), interrupt pin A, and the capability list.
pub fn config_space(bar: u64) -> ConfigSpace {
    let mut config = ConfigSpace::new(VENDOR, DEVICE, CLASS, 1);
    // Status: a capability list.
    config.set(0x06, &[0x10, 0x00]);
    config.set(0x2c, &VENDOR.to_le_bytes());
    config.set(0x2e, &0x1100u16.to_le_bytes());
    config.set(0x10, &((bar as u32) | 0b100).to_le_bytes());
    config.set(0x14, &((bar >> 32) as u32).to_le_bytes());
    config.set_writable(0x10, &(!(BAR_SIZE as u32 - 1) & !0xf).to_le_bytes());
    config.set_writable(0x14, &[0xff; 4]);
    config.set(0x34, &[CAP_MSIX]);
    config.set(0x3d, &[1]);
    // MSI-X: table size - 1, table and PBA in BAR 0.
    config.set(CAP_MSIX, &[0x11, CAP_COMMON]);
    config.set(CAP_MSIX + 2, &(MSIX_VECTORS as u16 - 1).to_le_bytes());
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
        DEVICE_CONFIG_BYTES as u32,
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

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Read into the data buffers.
    Read,
    /// Write from them.
    Write,
    Flush,
    /// Write the device id (20 bytes) into the data buffer.
    GetId,
    /// Make `bytes / 512` sectors from `sector` read as zeros: a discard
    /// (whose contents the guest may not rely on; this device zeroes) or
    /// a write-zeroes, its one range already read from guest memory.
    Zero,
}

/// One guest buffer, guest-physical.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub address: u64,
    pub length: u32,
}

/// A request the guest queued, its buffers checked to lie in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRequest {
    /// The chain's head: the id [`VirtioBlk::complete`] takes.
    pub head: u16,
    pub kind: Kind,
    pub sector: u64,
    pub segments: [Segment; MAX_SEGMENTS],
    pub count: usize,
    /// Bytes of data in all segments.
    pub bytes: u32,
    /// Where the status byte goes.
    pub status: u64,
}

/// A chain the device refuses; the switcher completes it with an error
/// (status [`STATUS_IOERR`] at `status` when it is known).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub head: u16,
    pub status: Option<u64>,
    pub why: &'static str,
}

pub const STATUS_OK: u8 = 0;
pub const STATUS_IOERR: u8 = 1;
pub const STATUS_UNSUPP: u8 = 2;

/// What a register write asks of the switcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Nothing,
    /// The guest notified the queue: take its requests.
    Notify,
    /// The guest reset the device: forget requests in flight (their
    /// completions must not reach guest memory).
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

/// The device's registers and queue state.
#[derive(Clone, Debug)]
pub struct VirtioBlk {
    capacity: u64,
    /// Offers VIRTIO_BLK_F_RO and refuses writes (discard and
    /// write-zeroes too, which it does not offer).
    read_only: bool,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_vector: u16,
    /// The queue the queue registers show: only queue 0 exists.
    queue_select: u16,
    queue_size: u16,
    queue_vector: u16,
    queue_enabled: bool,
    desc: u64,
    avail: u64,
    used: u64,
    last_avail: u16,
    used_index: u16,
    isr: u8,
    msix: [MsixEntry; MSIX_VECTORS],
    msix_control: u16,
}

impl VirtioBlk {
    /// A device of `capacity` sectors, reset.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            read_only: false,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            queue_size: QUEUE_MAX,
            queue_vector: NO_VECTOR,
            queue_enabled: false,
            desc: 0,
            avail: 0,
            used: 0,
            last_avail: 0,
            used_index: 0,
            isr: 0,
            msix: [MsixEntry {
                masked: true,
                ..MsixEntry::default()
            }; MSIX_VECTORS],
            msix_control: 0,
        }
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

    /// A read-only device of `capacity` sectors: it offers
    /// VIRTIO_BLK_F_RO and refuses writes with an I/O error.
    pub fn new_read_only(capacity: u64) -> Self {
        Self {
            read_only: true,
            ..Self::new(capacity)
        }
    }

    /// The features it offers.
    fn features(&self) -> u64 {
        if self.read_only {
            FEATURES | FEATURE_RO
        } else {
            FEATURES | FEATURE_DISCARD | FEATURE_WRITE_ZEROES
        }
    }

    fn reset(&mut self) {
        let (capacity, msix, control) = (self.capacity, self.msix, self.msix_control);
        *self = Self {
            read_only: self.read_only,
            ..Self::new(capacity)
        };
        self.msix = msix;
        self.msix_control = control;
    }

    /// A guest read of `size` bytes at `offset` in BAR 0. Reading the ISR
    /// status clears it (and deasserts INTx).
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioIgnored> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(MmioIgnored::Size(size));
        }
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(MmioIgnored::Misaligned(offset));
        }
        let value = match offset {
            COMMON..0x38 => self.common_read(offset - COMMON, size),
            ISR => {
                let isr = self.isr;
                self.isr = 0;
                u64::from(isr)
            }
            DEVICE_CONFIG..0x203c => {
                // capacity, size_max, seg_max, (geometry, blk_size and
                // topology, not offered: 0), writeback, num_queues, then
                // the discard and write-zeroes limits: one range of at
                // most MAX_ZERO_SECTORS, any sector alignment.
                let mut config = [0u8; DEVICE_CONFIG_BYTES];
                config[..8].copy_from_slice(&self.capacity.to_le_bytes());
                config[8..12].copy_from_slice(&MAX_REQUEST_BYTES.to_le_bytes());
                config[12..16].copy_from_slice(&(MAX_SEGMENTS as u32).to_le_bytes());
                config[34..36].copy_from_slice(&1u16.to_le_bytes());
                config[36..40].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
                config[40..44].copy_from_slice(&1u32.to_le_bytes());
                config[44..48].copy_from_slice(&1u32.to_le_bytes());
                config[48..52].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
                config[52..56].copy_from_slice(&1u32.to_le_bytes());
                config[56] = 1;
                bytes(&config, (offset - DEVICE_CONFIG) as usize, size)
            }
            MSIX_TABLE..0x4020 => {
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

    /// A guest write of `size` bytes of `value` at `offset` in BAR 0.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<Written, MmioIgnored> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(MmioIgnored::Size(size));
        }
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(MmioIgnored::Misaligned(offset));
        }
        match offset {
            COMMON..0x38 => return Ok(self.common_write(offset - COMMON, size, value)),
            NOTIFY..0x3004 => return Ok(Written::Notify),
            MSIX_TABLE..0x4020 => {
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

    fn common_read(&self, offset: u64, size: u8) -> u64 {
        let features = self.features() >> (32 * u64::from(self.device_feature_select.min(2)));
        let mut raw = [0u8; 0x38];
        raw[0..4].copy_from_slice(&self.device_feature_select.to_le_bytes());
        raw[4..8].copy_from_slice(&(features as u32).to_le_bytes());
        raw[8..12].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        let driver = self.driver_features >> (32 * u64::from(self.driver_feature_select.min(2)));
        raw[12..16].copy_from_slice(&(driver as u32).to_le_bytes());
        raw[16..18].copy_from_slice(&self.config_vector.to_le_bytes());
        raw[18..20].copy_from_slice(&1u16.to_le_bytes());
        raw[20] = self.status;
        raw[21] = 0;
        raw[22..24].copy_from_slice(&self.queue_select.to_le_bytes());
        if self.queue_select != 0 {
            // No such queue: size 0, the rest 0.
            return bytes(&raw[..24], offset as usize, size);
        }
        raw[24..26].copy_from_slice(&self.queue_size.to_le_bytes());
        raw[26..28].copy_from_slice(&self.queue_vector.to_le_bytes());
        raw[28..30].copy_from_slice(&u16::from(self.queue_enabled).to_le_bytes());
        raw[30..32].copy_from_slice(&0u16.to_le_bytes());
        raw[32..40].copy_from_slice(&self.desc.to_le_bytes());
        raw[40..48].copy_from_slice(&self.avail.to_le_bytes());
        raw[48..56].copy_from_slice(&self.used.to_le_bytes());
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
            }
            0x10 => self.config_vector = vector(value as u16),
            0x14 => {
                let status = value as u8;
                if status == 0 {
                    self.reset();
                    return Written::Reset;
                }
                // FEATURES_OK only for features the device offers.
                self.status = if status & STATUS_FEATURES_OK != 0
                    && self.driver_features & !self.features() != 0
                {
                    status & !STATUS_FEATURES_OK
                } else {
                    status
                };
            }
            0x16 => self.queue_select = value as u16,
            // Queue registers of a queue that does not exist.
            0x18..0x38 if self.queue_select != 0 => {}
            0x18 => {
                let size = value as u16;
                if size.is_power_of_two() && size <= QUEUE_MAX && !self.queue_enabled {
                    self.queue_size = size;
                }
            }
            0x1a => self.queue_vector = vector(value as u16),
            0x1c => self.queue_enabled = value & 1 != 0 && self.queue_size != 0,
            0x20..0x28 if !self.queue_enabled => set64(&mut self.desc, 0x20),
            0x28..0x30 if !self.queue_enabled => set64(&mut self.avail, 0x28),
            0x30..0x38 if !self.queue_enabled => set64(&mut self.used, 0x30),
            _ => {}
        }
        Written::Nothing
    }

    fn running(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.queue_enabled && self.queue_size != 0
    }

    /// The next request the guest queued, if any: its chain walked and
    /// checked against guest memory, or refused.
    pub fn next_request(
        &mut self,
        memory: &impl GuestRead,
    ) -> Option<Result<GuestRequest, Refused>> {
        if !self.running() {
            return None;
        }
        let size = self.queue_size;
        let avail_index = read_u16(memory, self.avail + 2)?;
        if avail_index == self.last_avail {
            return None;
        }
        let slot = u64::from(self.last_avail % size);
        let head = read_u16(memory, self.avail + 4 + 2 * slot)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        Some(self.walk(memory, head))
    }

    fn walk(&self, memory: &impl GuestRead, head: u16) -> Result<GuestRequest, Refused> {
        let refuse = |status, why| Refused { head, status, why };
        let size = self.queue_size;
        if head >= size {
            return Err(refuse(None, "head out of range"));
        }
        // The chain's descriptors, in order.
        let mut chain = [(0u64, 0u32, 0u16); MAX_SEGMENTS + 2];
        let mut length = 0;
        let mut index = head;
        loop {
            if length == chain.len() || length >= usize::from(size) {
                return Err(refuse(None, "chain too long (or a loop)"));
            }
            let at = self.desc + 16 * u64::from(index);
            let (Some(address), Some(bytes), Some(flags), Some(next)) = (
                memory.read_u64(GuestPhysical(at)),
                memory.read_u32(GuestPhysical(at + 8)),
                read_u16(memory, at + 12),
                read_u16(memory, at + 14),
            ) else {
                return Err(refuse(None, "descriptor table outside guest memory"));
            };
            if flags & DESCRIPTOR_INDIRECT != 0 {
                return Err(refuse(None, "indirect descriptor (not offered)"));
            }
            chain[length] = (address, bytes, flags);
            length += 1;
            if flags & DESCRIPTOR_NEXT == 0 {
                break;
            }
            if next >= size {
                return Err(refuse(None, "next descriptor out of range"));
            }
            index = next;
        }
        let inside = |address: u64, bytes: u32| {
            let mut byte = [0u8];
            bytes > 0
                && memory.read(GuestPhysical(address), &mut byte)
                && address
                    .checked_add(u64::from(bytes) - 1)
                    .is_some_and(|last| memory.read(GuestPhysical(last), &mut byte))
        };
        let (status_address, status_bytes, status_flags) = chain[length - 1];
        let status = (status_flags & DESCRIPTOR_WRITE != 0 && inside(status_address, status_bytes))
            .then_some(status_address);
        let Some(status) = status else {
            return Err(refuse(None, "no writable status byte"));
        };
        let (header_address, header_bytes, header_flags) = chain[0];
        if length < 2
            || header_flags & DESCRIPTOR_WRITE != 0
            || header_bytes < 16
            || !inside(header_address, 16)
        {
            return Err(refuse(Some(status), "no readable 16-byte header"));
        }
        let (Some(kind), Some(sector)) = (
            memory.read_u32(GuestPhysical(header_address)),
            memory.read_u64(GuestPhysical(header_address + 8)),
        ) else {
            return Err(refuse(Some(status), "header outside guest memory"));
        };
        let number = kind;
        let kind = match number {
            0 => Kind::Read,
            1 | 11 | 13 if self.read_only => {
                return Err(refuse(Some(status), "a write to a read-only disk"));
            }
            1 => Kind::Write,
            4 => Kind::Flush,
            8 => Kind::GetId,
            11 | 13 => Kind::Zero,
            _ => return Err(refuse(Some(status), "unsupported request type")),
        };
        let data = &chain[1..length - 1];
        if data.len() > MAX_SEGMENTS {
            return Err(refuse(Some(status), "too many data buffers"));
        }
        if kind == Kind::Zero {
            return self.zero_request(memory, head, status, number, &chain[1..length - 1]);
        }
        let device_writes = matches!(kind, Kind::Read | Kind::GetId);
        let mut request = GuestRequest {
            head,
            kind,
            sector,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: data.len(),
            bytes: 0,
            status,
        };
        let mut total = 0u64;
        for (slot, &(address, bytes, flags)) in request.segments.iter_mut().zip(data) {
            if (flags & DESCRIPTOR_WRITE != 0) != device_writes || !inside(address, bytes) {
                return Err(refuse(
                    Some(status),
                    "a data buffer in the wrong direction or outside guest memory",
                ));
            }
            *slot = Segment {
                address,
                length: bytes,
            };
            total += u64::from(bytes);
        }
        match kind {
            Kind::Read | Kind::Write => {
                let sectors = total / SECTOR;
                if total == 0
                    || !total.is_multiple_of(SECTOR)
                    || total > u64::from(MAX_REQUEST_BYTES)
                {
                    return Err(refuse(
                        Some(status),
                        "data not a whole number of sectors (or too much)",
                    ));
                }
                if sector
                    .checked_add(sectors)
                    .is_none_or(|end| end > self.capacity)
                {
                    return Err(refuse(Some(status), "past the end of the disk"));
                }
            }
            Kind::GetId if total < 20 => {
                return Err(refuse(Some(status), "id buffer under 20 bytes"));
            }
            Kind::Flush | Kind::GetId | Kind::Zero => {}
        }
        request.bytes = total as u32;
        Ok(request)
    }

    /// A discard (`kind` 11) or write-zeroes (13) chain: one readable
    /// 16-byte range (sector, sectors, flags), checked against the disk
    /// and the limits the configuration gives. The header's own sector
    /// field means nothing for these types.
    fn zero_request(
        &self,
        memory: &impl GuestRead,
        head: u16,
        status: u64,
        kind: u32,
        data: &[(u64, u32, u16)],
    ) -> Result<GuestRequest, Refused> {
        let refuse = |why| Refused {
            head,
            status: Some(status),
            why,
        };
        let [(address, bytes, flags)] = data else {
            return Err(refuse(
                "a discard or write-zeroes request needs one range buffer",
            ));
        };
        if flags & DESCRIPTOR_WRITE != 0 || *bytes != RANGE_BYTES {
            return Err(refuse("a range buffer not of 16 readable bytes"));
        }
        let (Some(first), Some(sectors), Some(range_flags)) = (
            memory.read_u64(GuestPhysical(*address)),
            memory.read_u32(GuestPhysical(address + 8)),
            memory.read_u32(GuestPhysical(address + 12)),
        ) else {
            return Err(refuse("a range outside guest memory"));
        };
        let allowed = if kind == 13 { RANGE_UNMAP } else { 0 };
        if range_flags & !allowed != 0 {
            return Err(refuse("range flags this request type does not have"));
        }
        if sectors == 0 || sectors > MAX_ZERO_SECTORS {
            return Err(refuse("a range of no sectors or more than the limit"));
        }
        if first
            .checked_add(u64::from(sectors))
            .is_none_or(|end| end > self.capacity)
        {
            return Err(refuse("past the end of the disk"));
        }
        Ok(GuestRequest {
            head,
            kind: Kind::Zero,
            sector: first,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
            bytes: sectors * SECTOR as u32,
            status,
        })
    }

    /// Ends the request with chain head `head`: `status` into its status
    /// byte at `status_address` (when known) and a used element saying the
    /// device wrote `written` bytes. The caller raises [`Self::interrupt`]
    /// once for a batch.
    pub fn complete(
        &mut self,
        memory: &mut impl Memory,
        head: u16,
        status_address: Option<u64>,
        status: u8,
        written: u32,
    ) -> bool {
        if !self.running() {
            return false;
        }
        if let Some(address) = status_address {
            memory.write(address, &[status]);
        }
        let slot = u64::from(self.used_index % self.queue_size);
        let mut element = [0u8; 8];
        element[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        element[4..].copy_from_slice(&written.to_le_bytes());
        let placed = memory.write(self.used + 4 + 8 * slot, &element);
        self.used_index = self.used_index.wrapping_add(1);
        // The index after the element: a guest reading the index sees it.
        placed && memory.write(self.used + 2, &self.used_index.to_le_bytes())
    }

    /// The interrupt for completions just written, if the guest wants one:
    /// the queue's MSI-X message when MSI-X is on (none if its vector is
    /// unset or masked), else INTx.
    pub fn interrupt(&mut self, memory: &impl GuestRead) -> Option<Interrupt> {
        if read_u16(memory, self.avail).is_some_and(|flags| flags & AVAIL_NO_INTERRUPT != 0) {
            return None;
        }
        self.isr |= 1;
        if self.msix_control & MSIX_ENABLE == 0 {
            return Some(Interrupt::Intx);
        }
        let entry = self.msix.get(usize::from(self.queue_vector))?;
        (self.msix_control & MSIX_FUNCTION_MASK == 0 && !entry.masked).then_some(Interrupt::Msi {
            address: entry.address,
            data: entry.data,
        })
    }
}

/// A vector register's value: a vector this device has, else none.
fn vector(value: u16) -> u16 {
    if usize::from(value) < MSIX_VECTORS {
        value
    } else {
        NO_VECTOR
    }
}

/// `size` bytes of `raw` from `at`, little-endian; zeros past its end.
fn bytes(raw: &[u8], at: usize, size: u8) -> u64 {
    (0..usize::from(size)).fold(0, |value, i| {
        value | u64::from(raw.get(at + i).copied().unwrap_or(0)) << (8 * i)
    })
}

fn read_u16(memory: &impl GuestRead, address: u64) -> Option<u16> {
    let mut bytes = [0u8; 2];
    memory
        .read(GuestPhysical(address), &mut bytes)
        .then(|| u16::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use proptest::prelude::*;

    const DESC: u64 = 0x1_0000;
    const AVAIL: u64 = 0x1_1000;
    const USED: u64 = 0x1_2000;

    fn put(memory: &mut VecMemory, address: u64, bytes: &[u8]) {
        assert!(Memory::write(memory, address, bytes));
    }

    /// A device set up as a driver would: features, queue of 8, MSI-X
    /// vector 1 for the queue when `msix`.
    fn running(memory: &mut VecMemory, msix: bool) -> (VirtioBlk, ConfigSpace) {
        set_up(memory, msix, VirtioBlk::new(2048))
    }

    fn set_up(
        memory: &mut VecMemory,
        msix: bool,
        mut device: VirtioBlk,
    ) -> (VirtioBlk, ConfigSpace) {
        let mut config = config_space(0xfe00_0000);
        device.write(0x14, 1, 1 | 2).unwrap();
        device.write(0x08, 4, 1).unwrap();
        device.write(0x0c, 4, 1).unwrap(); // VERSION_1 (bit 32)
        device.write(0x14, 1, 1 | 2 | 8).unwrap();
        assert_eq!(
            device.read(0x14, 1).unwrap() as u8 & 8,
            8,
            "features accepted"
        );
        device.write(0x18, 2, 8).unwrap();
        device.write(0x20, 8, DESC).unwrap();
        device.write(0x28, 4, AVAIL).unwrap();
        device.write(0x2c, 4, 0).unwrap();
        device.write(0x30, 8, USED).unwrap();
        if msix {
            device.write(MSIX_TABLE + 16, 8, 0xfee0_0000).unwrap();
            device.write(MSIX_TABLE + 24, 4, 0x41).unwrap();
            device.write(MSIX_TABLE + 28, 4, 0).unwrap();
            device.write(0x1a, 2, 1).unwrap();
            config.write(CAP_MSIX + 2, 2, u32::from(MSIX_ENABLE));
            device.config_written(&config);
        }
        device.write(0x1c, 2, 1).unwrap();
        device.write(0x14, 1, 1 | 2 | 8 | 4).unwrap();
        put(memory, AVAIL, &[0; 4]);
        put(memory, USED, &[0; 4]);
        (device, config)
    }

    fn descriptor(
        memory: &mut VecMemory,
        index: u16,
        address: u64,
        length: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&address.to_le_bytes());
        raw[8..12].copy_from_slice(&length.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        put(memory, DESC + 16 * u64::from(index), &raw);
    }

    /// Queues chain `head` as the guest's `number`-th request.
    fn offer(memory: &mut VecMemory, number: u16, head: u16) {
        put(
            memory,
            AVAIL + 4 + 2 * u64::from(number % 8),
            &head.to_le_bytes(),
        );
        put(memory, AVAIL + 2, &number.wrapping_add(1).to_le_bytes());
    }

    fn header(memory: &mut VecMemory, at: u64, kind: u32, sector: u64) {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&kind.to_le_bytes());
        raw[8..].copy_from_slice(&sector.to_le_bytes());
        put(memory, at, &raw);
    }

    #[test]
    fn the_configuration_space_is_what_a_virtio_driver_expects() {
        let mut config = config_space(0xfe00_0000);
        let mut snapshot = [0u8; 256];
        for (offset, byte) in snapshot.iter_mut().enumerate() {
            *byte = config.read(offset as u8, 1) as u8;
        }
        let caps = virtio::pci::virtio_caps(&snapshot).unwrap();
        assert_eq!(
            (caps.common.bar, caps.common.offset, caps.common.length),
            (0, 0, 0x38)
        );
        assert_eq!(
            (caps.isr.offset, caps.notify.offset, caps.notify_multiplier),
            (0x1000, 0x3000, 0)
        );
        assert_eq!(caps.device.map(|d| d.offset), Some(0x2000));
        assert_eq!(caps.notify_offset(0), Some(NOTIFY));
        let msix = virtio::pci::msix(&snapshot).unwrap().unwrap();
        assert_eq!(
            (msix.table_size, msix.table_bar, msix.table_offset),
            (2, 0, 0x4000)
        );
        // Sizing BAR 0: all ones read back as the size mask, 64-bit type.
        config.write(0x10, 4, u32::MAX);
        assert_eq!(config.read(0x10, 4), !(BAR_SIZE as u32 - 1) & !0xf | 0b100);
        config.write(0x10, 4, 0xfe00_0000);
        assert_eq!(bar_address(&config), None, "memory decoding off");
        config.write(0x04, 2, 0b10);
        assert_eq!(bar_address(&config), Some(0xfe00_0000));
    }

    #[test]
    fn a_write_request_is_taken_completed_and_interrupts_once() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let (mut device, _) = running(&mut memory, true);
        assert_eq!(device.read(DEVICE_CONFIG, 8).unwrap(), 2048, "capacity");
        header(&mut memory, 0x2000, 1, 8);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, 1, 0x3000, 4096, DESCRIPTOR_NEXT, 2);
        descriptor(&mut memory, 2, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        offer(&mut memory, 0, 0);
        assert_eq!(device.write(NOTIFY, 2, 0), Ok(Written::Notify));
        let request = device.next_request(&memory).unwrap().unwrap();
        assert_eq!(
            (request.head, request.kind, request.sector),
            (0, Kind::Write, 8)
        );
        assert_eq!(
            &request.segments[..request.count],
            [Segment {
                address: 0x3000,
                length: 4096
            }]
        );
        assert_eq!((request.bytes, request.status), (4096, 0x5000));
        assert!(device.next_request(&memory).is_none(), "one request");
        put(&mut memory, 0x5000, &[0xff]);
        assert!(device.complete(&mut memory, 0, Some(0x5000), STATUS_OK, 1));
        assert_eq!(memory.0[0x5000], STATUS_OK);
        assert_eq!(
            &memory.0[USED as usize + 2..USED as usize + 4],
            &1u16.to_le_bytes()
        );
        assert_eq!(
            &memory.0[USED as usize + 4..USED as usize + 12],
            &[0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            device.interrupt(&memory),
            Some(Interrupt::Msi {
                address: 0xfee0_0000,
                data: 0x41
            })
        );
        assert!(!device.intx_asserted(), "MSI-X on");
    }

    #[test]
    fn a_read_only_device_offers_ro_and_refuses_writes() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let mut device = VirtioBlk::new_read_only(2048);
        assert_eq!(
            device.read(0x04, 4).unwrap() & (1 << 5),
            1 << 5,
            "RO offered"
        );
        device.write(0x14, 1, 0).unwrap();
        assert_eq!(
            device.read(0x04, 4).unwrap() & (1 << 5),
            1 << 5,
            "kept by a reset"
        );
        assert_eq!(VirtioBlk::new(8).read(0x04, 4).unwrap() & (1 << 5), 0);
        // A driver that accepts RO (bit 5) gets FEATURES_OK.
        device.write(0x14, 1, 1 | 2).unwrap();
        device.write(0x08, 4, 0).unwrap();
        device.write(0x0c, 4, 1 << 5).unwrap();
        let (mut device, _) = set_up(&mut memory, true, device);
        assert_eq!(device.read(0x14, 1).unwrap() & 8, 8);
        header(&mut memory, 0x2000, 1, 8);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, 1, 0x3000, 512, DESCRIPTOR_NEXT, 2);
        descriptor(&mut memory, 2, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        offer(&mut memory, 0, 0);
        assert_eq!(
            device.next_request(&memory),
            Some(Err(Refused {
                head: 0,
                status: Some(0x5000),
                why: "a write to a read-only disk"
            }))
        );
        header(&mut memory, 0x2000, 0, 8);
        descriptor(
            &mut memory,
            1,
            0x3000,
            512,
            DESCRIPTOR_NEXT | DESCRIPTOR_WRITE,
            2,
        );
        offer(&mut memory, 1, 0);
        let read = device.next_request(&memory).unwrap().unwrap();
        assert_eq!((read.kind, read.bytes), (Kind::Read, 512));
    }

    #[test]
    fn discard_and_write_zeroes_carry_one_checked_range() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        assert_eq!(
            VirtioBlk::new(8).read(0x04, 4).unwrap() & (3 << 13),
            3 << 13,
            "DISCARD and WRITE_ZEROES offered"
        );
        assert_eq!(
            VirtioBlk::new_read_only(8).read(0x04, 4).unwrap() & (3 << 13),
            0
        );
        let (mut device, _) = running(&mut memory, true);
        // The limits in the device configuration.
        assert_eq!(
            device.read(DEVICE_CONFIG + 36, 4),
            Ok(u64::from(MAX_ZERO_SECTORS))
        );
        assert_eq!(device.read(DEVICE_CONFIG + 40, 4), Ok(1));
        assert_eq!(
            device.read(DEVICE_CONFIG + 48, 4),
            Ok(u64::from(MAX_ZERO_SECTORS))
        );
        assert_eq!(device.read(DEVICE_CONFIG + 56, 1), Ok(1));
        let range = |memory: &mut VecMemory, sector: u64, sectors: u32, flags: u32| {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&sector.to_le_bytes());
            raw[8..12].copy_from_slice(&sectors.to_le_bytes());
            raw[12..].copy_from_slice(&flags.to_le_bytes());
            put(memory, 0x3000, &raw);
        };
        let mut number = 0u16;
        let mut submit = |memory: &mut VecMemory, device: &mut VirtioBlk, kind: u32, bytes: u32| {
            header(memory, 0x2000, kind, 0);
            descriptor(memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
            descriptor(memory, 1, 0x3000, bytes, DESCRIPTOR_NEXT, 2);
            descriptor(memory, 2, 0x5000, 1, DESCRIPTOR_WRITE, 0);
            offer(memory, number, 0);
            number += 1;
            device.next_request(memory).unwrap()
        };
        range(&mut memory, 0, 2048, 0);
        let discard = submit(&mut memory, &mut device, 11, 16).unwrap();
        assert_eq!(
            (discard.kind, discard.sector, discard.bytes, discard.count),
            (Kind::Zero, 0, 2048 * 512, 0)
        );
        range(&mut memory, 0, 8, RANGE_UNMAP);
        let zeroes = submit(&mut memory, &mut device, 13, 16).unwrap();
        assert_eq!(
            (zeroes.kind, zeroes.sector, zeroes.bytes),
            (Kind::Zero, 0, 4096)
        );
        // Refused: unmap on a discard, too many sectors, none, past the
        // end, a range buffer of the wrong size.
        let why = |result: Result<GuestRequest, Refused>| result.unwrap_err().why;
        assert_eq!(
            why(submit(&mut memory, &mut device, 11, 16)),
            "range flags this request type does not have"
        );
        range(&mut memory, 0, 2049, 0);
        assert_eq!(
            why(submit(&mut memory, &mut device, 13, 16)),
            "a range of no sectors or more than the limit"
        );
        range(&mut memory, 0, 0, 0);
        assert_eq!(
            why(submit(&mut memory, &mut device, 13, 16)),
            "a range of no sectors or more than the limit"
        );
        range(&mut memory, 2047, 2, 0);
        assert_eq!(
            why(submit(&mut memory, &mut device, 13, 16)),
            "past the end of the disk"
        );
        range(&mut memory, u64::MAX, 2, 0);
        assert_eq!(
            why(submit(&mut memory, &mut device, 13, 16)),
            "past the end of the disk"
        );
        assert_eq!(
            why(submit(&mut memory, &mut device, 11, 32)),
            "a range buffer not of 16 readable bytes"
        );
    }

    #[test]
    fn without_msix_it_is_intx_until_the_isr_is_read() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let (mut device, _) = running(&mut memory, false);
        header(&mut memory, 0x2000, 4, 0);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, 1, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        offer(&mut memory, 0, 0);
        let request = device.next_request(&memory).unwrap().unwrap();
        assert_eq!((request.kind, request.count), (Kind::Flush, 0));
        device.complete(&mut memory, 0, Some(request.status), STATUS_OK, 1);
        assert_eq!(device.interrupt(&memory), Some(Interrupt::Intx));
        assert!(device.intx_asserted());
        assert_eq!(device.read(ISR, 1), Ok(1));
        assert!(!device.intx_asserted(), "reading the ISR deasserts");
        assert_eq!(device.read(ISR, 1), Ok(0));
        // The guest asks for no interrupts.
        put(&mut memory, AVAIL, &AVAIL_NO_INTERRUPT.to_le_bytes());
        assert_eq!(device.interrupt(&memory), None);
    }

    #[test]
    fn malformed_chains_are_refused_with_their_status_byte_when_known() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let (mut device, _) = running(&mut memory, true);
        let mut number = 0u16;
        let mut check = |memory: &mut VecMemory,
                         device: &mut VirtioBlk,
                         head: u16,
                         why: &str,
                         status: Option<u64>| {
            offer(memory, number, head);
            number += 1;
            let refused = device.next_request(memory).unwrap().unwrap_err();
            assert_eq!(
                (refused.head, refused.why, refused.status),
                (head, why, status)
            );
        };
        // A loop: 0 -> 1 -> 0.
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, 1, 0x2000, 16, DESCRIPTOR_NEXT, 0);
        check(
            &mut memory,
            &mut device,
            0,
            "chain too long (or a loop)",
            None,
        );
        // Next out of range; head out of range.
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 9);
        check(
            &mut memory,
            &mut device,
            0,
            "next descriptor out of range",
            None,
        );
        check(&mut memory, &mut device, 8, "head out of range", None);
        // A read whose data buffer the device would only read.
        header(&mut memory, 0x2000, 0, 0);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 1);
        descriptor(&mut memory, 1, 0x3000, 512, DESCRIPTOR_NEXT, 2);
        descriptor(&mut memory, 2, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        check(
            &mut memory,
            &mut device,
            0,
            "a data buffer in the wrong direction or outside guest memory",
            Some(0x5000),
        );
        // A buffer past guest RAM; half a sector; past the disk's end.
        descriptor(
            &mut memory,
            1,
            (1 << 20) - 256,
            512,
            DESCRIPTOR_NEXT | DESCRIPTOR_WRITE,
            2,
        );
        check(
            &mut memory,
            &mut device,
            0,
            "a data buffer in the wrong direction or outside guest memory",
            Some(0x5000),
        );
        descriptor(
            &mut memory,
            1,
            0x3000,
            256,
            DESCRIPTOR_NEXT | DESCRIPTOR_WRITE,
            2,
        );
        check(
            &mut memory,
            &mut device,
            0,
            "data not a whole number of sectors (or too much)",
            Some(0x5000),
        );
        header(&mut memory, 0x2000, 0, 2047);
        descriptor(
            &mut memory,
            1,
            0x3000,
            1024,
            DESCRIPTOR_NEXT | DESCRIPTOR_WRITE,
            2,
        );
        check(
            &mut memory,
            &mut device,
            0,
            "past the end of the disk",
            Some(0x5000),
        );
        // No status byte the device may write; an indirect table.
        descriptor(&mut memory, 2, 0x5000, 1, 0, 0);
        check(&mut memory, &mut device, 0, "no writable status byte", None);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_INDIRECT, 0);
        check(
            &mut memory,
            &mut device,
            0,
            "indirect descriptor (not offered)",
            None,
        );
        // An unknown request type.
        header(&mut memory, 0x2000, 99, 0);
        descriptor(&mut memory, 0, 0x2000, 16, DESCRIPTOR_NEXT, 2);
        descriptor(&mut memory, 2, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        check(
            &mut memory,
            &mut device,
            0,
            "unsupported request type",
            Some(0x5000),
        );
    }

    #[test]
    fn ring_indices_wrap_around() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let (mut device, _) = running(&mut memory, true);
        header(&mut memory, 0x2000, 4, 0);
        descriptor(&mut memory, 3, 0x2000, 16, DESCRIPTOR_NEXT, 4);
        descriptor(&mut memory, 4, 0x5000, 1, DESCRIPTOR_WRITE, 0);
        for number in 0..70_000u32 {
            let number = number as u16;
            offer(&mut memory, number, 3);
            let request = device.next_request(&memory).unwrap().unwrap();
            assert_eq!(request.head, 3);
            assert!(device.complete(&mut memory, 3, Some(request.status), STATUS_OK, 1));
        }
        let used = u16::from_le_bytes([memory.0[USED as usize + 2], memory.0[USED as usize + 3]]);
        assert_eq!(used, 70_000u32 as u16);
    }

    #[test]
    fn a_reset_forgets_the_queue_and_registers_refuse_bad_accesses() {
        let mut memory = VecMemory(vec![0; 1 << 20]);
        let (mut device, _) = running(&mut memory, true);
        assert_eq!(device.write(0x14, 1, 0), Ok(Written::Reset));
        assert_eq!(device.read(0x14, 1), Ok(0));
        assert_eq!(device.read(0x1c, 2), Ok(0), "queue disabled");
        assert!(device.next_request(&memory).is_none());
        assert!(
            !device.complete(&mut memory, 0, None, STATUS_OK, 0),
            "not running"
        );
        assert_eq!(device.read(0x1, 3), Err(MmioIgnored::Size(3)));
        assert_eq!(device.read(0x2, 4), Err(MmioIgnored::Misaligned(2)));
        assert_eq!(
            device.write(BAR_SIZE, 4, 0),
            Err(MmioIgnored::OutOfRange(BAR_SIZE))
        );
        // Only queue 0 exists; unknown features are not accepted.
        device.write(0x16, 2, 1).unwrap();
        assert_eq!(device.read(0x18, 2), Ok(0));
        device.write(0x08, 4, 0).unwrap();
        device.write(0x0c, 4, 1 << 3).unwrap();
        device.write(0x14, 1, 1 | 2 | 8).unwrap();
        assert_eq!(device.read(0x14, 1).unwrap() & 8, 0, "FEATURES_OK refused");
    }

    proptest! {
        /// Whatever the guest puts in its descriptor table and rings, the
        /// device never panics and only ever hands out buffers inside
        /// guest memory.
        #[test]
        fn hostile_rings_never_panic(table in proptest::collection::vec(any::<u8>(), 16 * 8), heads in proptest::collection::vec(0u16..16, 1..20), sectors in any::<u64>()) {
            let mut memory = VecMemory(vec![0; 1 << 20]);
            let (mut device, _) = running(&mut memory, true);
            put(&mut memory, DESC, &table);
            header(&mut memory, 0x2000, 0, sectors % 4096);
            for (number, head) in heads.iter().enumerate() {
                offer(&mut memory, number as u16, *head);
                if let Some(Ok(request)) = device.next_request(&memory) {
                    for segment in &request.segments[..request.count] {
                        prop_assert!(segment.address + u64::from(segment.length) <= 1 << 20);
                    }
                    prop_assert!(request.status < 1 << 20);
                }
            }
        }
    }
}
