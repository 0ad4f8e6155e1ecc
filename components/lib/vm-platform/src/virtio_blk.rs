//! A virtio-blk device for guests: a modern (virtio 1.x) PCI function on
//! the shared transport ([`crate::virtio_pci`]: registers in one 64-bit
//! memory BAR, MSI-X or INTx) with one request queue and two vectors.
//!
//! [`config_space`] is the function's configuration space; [`VirtioBlk`]
//! is the rest of the device: the transport's register file and queue, and
//! the block device's configuration and request rules. A guest's notify ([`Written::Notify`]) is one exit for however
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
use crate::virtio_pci::{self, Chain, Identity, Transport};
#[cfg(test)]
use crate::virtio_pci::{
    AVAIL_NO_INTERRUPT, CAP_MSIX, DESCRIPTOR_INDIRECT, DESCRIPTOR_NEXT, DESCRIPTOR_WRITE,
    MSIX_ENABLE,
};
pub use crate::virtio_pci::{
    BAR_SIZE, COMMON, DEVICE_CONFIG, ISR, Interrupt, MSIX_PBA, MSIX_TABLE, NO_VECTOR, NOTIFY,
    VENDOR, bar_address,
};
use crate::{GuestRead, Memory, MmioIgnored};

/// 0x1040 + 2, a modern-only block device.
pub const DEVICE: u16 = 0x1042;
/// Mass storage, "other".
pub const CLASS: u32 = 0x01_80_00;
/// The queue's largest size.
pub const QUEUE_MAX: u16 = 128;
/// The most data buffers in one request.
pub const MAX_SEGMENTS: usize = virtio_pci::MAX_CHAIN - 2;
/// The most bytes one request moves.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// MSI-X vectors: configuration changes and the queue.
pub const MSIX_VECTORS: usize = 2;

const SECTOR: u64 = 512;
const FEATURE_SEG_MAX: u64 = 1 << 2;
const FEATURE_RO: u64 = 1 << 5;
const FEATURE_FLUSH: u64 = 1 << 9;
const FEATURE_DISCARD: u64 = 1 << 13;
const FEATURE_WRITE_ZEROES: u64 = 1 << 14;
const FEATURES: u64 = FEATURE_SEG_MAX | FEATURE_FLUSH | virtio_pci::FEATURE_VERSION_1;
/// The most sectors one discard or write-zeroes range covers (one range
/// per request).
pub const MAX_ZERO_SECTORS: u32 = MAX_REQUEST_BYTES / SECTOR as u32;
/// The device configuration's length: through `write_zeroes_may_unmap`.
const DEVICE_CONFIG_BYTES: usize = 0x3c;
/// A discard / write-zeroes range: sector, sectors, flags.
const RANGE_BYTES: u32 = 16;
/// The write-zeroes range flag "the device may unmap".
const RANGE_UNMAP: u32 = 1;
/// The request queue.
const QUEUE: u16 = 0;

/// The function's configuration space: ids, BAR 0 at `bar`, interrupt pin
/// A, and the virtio and MSI-X capabilities.
pub fn config_space(bar: u64) -> ConfigSpace {
    virtio_pci::config_space(bar, &IDENTITY)
}

const IDENTITY: Identity = Identity {
    device: DEVICE,
    class: CLASS,
    subsystem: 0x1100,
    vectors: MSIX_VECTORS as u16,
    device_config_bytes: DEVICE_CONFIG_BYTES as u32,
};

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

/// The device: the transport and the disk it shows.
#[derive(Clone, Debug)]
pub struct VirtioBlk {
    transport: Transport,
    capacity: u64,
    /// Offers VIRTIO_BLK_F_RO and refuses writes (discard and
    /// write-zeroes too, which it does not offer).
    read_only: bool,
}

impl VirtioBlk {
    /// A device of `capacity` sectors, reset.
    pub fn new(capacity: u64) -> Self {
        Self::with(capacity, false)
    }

    /// A read-only device of `capacity` sectors: it offers
    /// VIRTIO_BLK_F_RO and refuses writes with an I/O error.
    pub fn new_read_only(capacity: u64) -> Self {
        Self::with(capacity, true)
    }

    fn with(capacity: u64, read_only: bool) -> Self {
        let features = if read_only {
            FEATURES | FEATURE_RO
        } else {
            FEATURES | FEATURE_DISCARD | FEATURE_WRITE_ZEROES
        };
        Self {
            transport: Transport::new(features, 1, QUEUE_MAX, MSIX_VECTORS as u16),
            capacity,
            read_only,
        }
    }

    /// Follows the MSI-X capability's control word after the guest wrote
    /// configuration space.
    pub fn config_written(&mut self, config: &ConfigSpace) {
        self.transport.config_written(config);
    }

    /// Whether INTx is asserted (MSI-X off and the queue bit set in the
    /// ISR status).
    pub fn intx_asserted(&self) -> bool {
        self.transport.intx_asserted()
    }

    /// The device configuration: capacity, size_max, seg_max, (geometry,
    /// blk_size and topology, not offered: 0), writeback, num_queues, then
    /// the discard and write-zeroes limits: one range of at most
    /// [`MAX_ZERO_SECTORS`], any sector alignment.
    fn device_config(&self) -> [u8; DEVICE_CONFIG_BYTES] {
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
        config
    }

    /// A guest read of `size` bytes at `offset` in BAR 0. Reading the ISR
    /// status clears it (and deasserts INTx).
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioIgnored> {
        let config = self.device_config();
        self.transport.read(offset, size, &config)
    }

    /// A guest write of `size` bytes of `value` at `offset` in BAR 0.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<Written, MmioIgnored> {
        Ok(match self.transport.write(offset, size, value)? {
            virtio_pci::Written::Notify(QUEUE) => Written::Notify,
            virtio_pci::Written::Reset => Written::Reset,
            virtio_pci::Written::Notify(_) | virtio_pci::Written::Nothing => Written::Nothing,
        })
    }

    /// The next request the guest queued, if any: its chain walked and
    /// checked against guest memory, or refused.
    pub fn next_request(
        &mut self,
        memory: &impl GuestRead,
    ) -> Option<Result<GuestRequest, Refused>> {
        let chain = self.transport.next_chain(QUEUE, memory)?;
        Some(match chain {
            Ok(chain) => self.request(memory, &chain),
            Err(bad) => Err(Refused {
                head: bad.head,
                status: None,
                why: bad.why,
            }),
        })
    }

    /// The request a walked chain makes: a 16-byte readable header, data
    /// buffers in the direction the type says, a writable status byte.
    fn request(&self, memory: &impl GuestRead, chain: &Chain) -> Result<GuestRequest, Refused> {
        let head = chain.head;
        let refuse = |status, why| Refused { head, status, why };
        let descriptors = chain.as_slice();
        let inside = |address: u64, bytes: u32| virtio_pci::inside(memory, address, bytes);
        let Some(last) = descriptors.last() else {
            return Err(refuse(None, "no writable status byte"));
        };
        let status = (last.writable && inside(last.address, last.length)).then_some(last.address);
        let Some(status) = status else {
            return Err(refuse(None, "no writable status byte"));
        };
        let header = descriptors[0];
        if descriptors.len() < 2
            || header.writable
            || header.length < 16
            || !inside(header.address, 16)
        {
            return Err(refuse(Some(status), "no readable 16-byte header"));
        }
        let (Some(number), Some(sector)) = (
            memory.read_u32(GuestPhysical(header.address)),
            memory.read_u64(GuestPhysical(header.address + 8)),
        ) else {
            return Err(refuse(Some(status), "header outside guest memory"));
        };
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
        let data = &descriptors[1..descriptors.len() - 1];
        if kind == Kind::Zero {
            return self.zero_request(memory, head, status, number, data);
        }
        if data.len() > MAX_SEGMENTS {
            return Err(refuse(Some(status), "too many data buffers"));
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
        for (slot, buffer) in request.segments.iter_mut().zip(data) {
            if buffer.writable != device_writes || !inside(buffer.address, buffer.length) {
                return Err(refuse(
                    Some(status),
                    "a data buffer in the wrong direction or outside guest memory",
                ));
            }
            *slot = Segment {
                address: buffer.address,
                length: buffer.length,
            };
            total += u64::from(buffer.length);
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
        data: &[virtio_pci::Descriptor],
    ) -> Result<GuestRequest, Refused> {
        let refuse = |why| Refused {
            head,
            status: Some(status),
            why,
        };
        let [range] = data else {
            return Err(refuse(
                "a discard or write-zeroes request needs one range buffer",
            ));
        };
        if range.writable || range.length != RANGE_BYTES {
            return Err(refuse("a range buffer not of 16 readable bytes"));
        }
        let address = range.address;
        let (Some(first), Some(sectors), Some(range_flags)) = (
            memory.read_u64(GuestPhysical(address)),
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
        if !self.transport.running(QUEUE) {
            return false;
        }
        if let Some(address) = status_address {
            memory.write(address, &[status]);
        }
        self.transport.complete(QUEUE, memory, head, written)
    }

    /// The interrupt for completions just written, if the guest wants one:
    /// the queue's MSI-X message when MSI-X is on (none if its vector is
    /// unset or masked), else INTx.
    pub fn interrupt(&mut self, memory: &impl GuestRead) -> Option<Interrupt> {
        self.transport.interrupt(QUEUE, memory)
    }
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
        crate::testing::descriptor(memory, DESC, index, address, length, flags, next);
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
