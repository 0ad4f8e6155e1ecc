//! The virtio PCI transport (spec 4.1): where a device's configuration
//! structures are, and the register map of the common one.
//!
//! A virtio PCI function describes its structures with vendor-specific
//! capabilities (id 0x09) in configuration space, each naming a BAR, an
//! offset and a length: the common configuration (feature negotiation,
//! device status, queue setup; [`common`]), the notification area (where
//! the driver writes a queue's index to notify it), the ISR status byte
//! and the device-specific configuration. [`virtio_caps`] finds them and
//! [`msix`] the MSI-X capability.
//!
//! Configuration space comes from the device and is not trusted. Both
//! functions work on a snapshot of its 256 bytes ([`snapshot`]), so the
//! device cannot change it between checks and use, and the walk of the
//! capability list is bounded: it fails on a pointer into the header or
//! not 4-aligned, and on a list longer than the 48 capabilities that fit
//! (a loop). Within the list, the first usable capability of each type
//! wins, as the spec asks; one that is not usable (running past
//! configuration space, shorter than its structure, a reserved BAR, a
//! region too small for its registers) is skipped, and reported only if no
//! usable one of its type follows. Nothing here panics on any input.
//!
//! What stays with the driver: checking each region against the size of
//! its BAR ([`CapRegion::within`]), and that the BAR is a memory BAR.

/// The PCI vendor id of virtio devices.
pub const VENDOR_ID: u16 = 0x1af4;
/// The PCI device id of a virtio 1.x block device (0x1040 + device
/// type 2).
pub const DEVICE_ID_BLK: u16 = 0x1042;
/// The PCI device id of a transitional block device, which also offers
/// the modern interface this crate drives.
pub const DEVICE_ID_BLK_TRANSITIONAL: u16 = 0x1001;

/// `cfg_type` of the common configuration structure ([`common`]).
pub const CAP_COMMON: u8 = 1;
/// `cfg_type` of the notification area.
pub const CAP_NOTIFY: u8 = 2;
/// `cfg_type` of the ISR status byte.
pub const CAP_ISR: u8 = 3;
/// `cfg_type` of the device-specific configuration.
pub const CAP_DEVICE: u8 = 4;
/// `cfg_type` of the PCI configuration access window (not used here).
pub const CAP_PCI: u8 = 5;

/// The MSI-X vector value that means no vector (for `msix_config` and
/// `queue_msix_vector`); the device also reads it back when it could not
/// allocate the vector asked for.
pub const NO_VECTOR: u16 = 0xffff;

/// ISR status bit: a queue has used buffers (INTx only).
pub const ISR_QUEUE: u8 = 1;
/// ISR status bit: the device configuration changed (INTx only).
pub const ISR_CONFIG: u8 = 2;

/// Offset of the message control register in the MSI-X capability.
pub const MSIX_CONTROL: u8 = 2;
/// Message control: MSI-X enabled.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Message control: every vector masked.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes per MSI-X table entry: message address low and high, data,
/// vector control.
pub const MSIX_ENTRY_SIZE: u32 = 16;
/// Offset of the vector control word in an MSI-X table entry.
pub const MSIX_ENTRY_VECTOR_CONTROL: u32 = 12;
/// Vector control: the vector is masked.
pub const MSIX_ENTRY_MASKED: u32 = 1;

pub mod common {
    //! The common configuration structure (spec 4.1.4.3): register
    //! offsets in its region and their widths. Features are read and
    //! written 32 bits at a time through the select registers; the queue
    //! registers apply to the queue `queue_select` names. 64-bit registers
    //! are written as two 32-bit halves, low first.

    /// `device_feature_select: u32`: which 32 feature bits
    /// `device_feature` shows.
    pub const DEVICE_FEATURE_SELECT: u32 = 0x00;
    /// `device_feature: u32` (read-only).
    pub const DEVICE_FEATURE: u32 = 0x04;
    /// `driver_feature_select: u32`.
    pub const DRIVER_FEATURE_SELECT: u32 = 0x08;
    /// `driver_feature: u32`.
    pub const DRIVER_FEATURE: u32 = 0x0c;
    /// `config_msix_vector: u16`: the vector for configuration changes.
    pub const MSIX_CONFIG: u32 = 0x10;
    /// `num_queues: u16` (read-only).
    pub const NUM_QUEUES: u32 = 0x12;
    /// `device_status: u8` (bits in [`crate::status`]; writing 0 resets).
    pub const DEVICE_STATUS: u32 = 0x14;
    /// `config_generation: u8` (read-only): changes when the device
    /// configuration does.
    pub const CONFIG_GENERATION: u32 = 0x15;
    /// `queue_select: u16`.
    pub const QUEUE_SELECT: u32 = 0x16;
    /// `queue_size: u16`: the device's maximum, or the size the driver
    /// chose (see [`crate::queue::choose_size`]); 0 for no such queue.
    pub const QUEUE_SIZE: u32 = 0x18;
    /// `queue_msix_vector: u16`.
    pub const QUEUE_MSIX_VECTOR: u32 = 0x1a;
    /// `queue_enable: u16`: written 1 once the queue is set up.
    pub const QUEUE_ENABLE: u32 = 0x1c;
    /// `queue_notify_off: u16` (read-only): see
    /// [`super::VirtioCaps::notify_offset`].
    pub const QUEUE_NOTIFY_OFF: u32 = 0x1e;
    /// `queue_desc: u64`: the descriptor table's physical address.
    pub const QUEUE_DESC: u32 = 0x20;
    /// `queue_driver: u64`: the available ring's physical address.
    pub const QUEUE_DRIVER: u32 = 0x28;
    /// `queue_device: u64`: the used ring's physical address.
    pub const QUEUE_DEVICE: u32 = 0x30;
    /// The bytes up to and including `queue_device`: the least a common
    /// configuration region may have.
    pub const SIZE: u32 = 0x38;
}

/// Configuration space status register, and its "capabilities list" bit.
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u8 = 1 << 4;
/// The pointer to the first capability.
const CAP_POINTER: u8 = 0x34;
/// Capabilities live after the 64-byte header.
const CAP_FIRST: u8 = 0x40;
/// The most capabilities there can be: 4-byte aligned, after the header.
const MAX_CAPS: usize = (256 - CAP_FIRST as usize) / 4;

const CAP_ID_VENDOR: u8 = 0x09;
const CAP_ID_MSIX: u8 = 0x11;

/// Bytes of `struct virtio_pci_cap`, and of the notify capability with its
/// multiplier.
const VIRTIO_CAP_SIZE: usize = 16;
const NOTIFY_CAP_SIZE: usize = 20;
/// Bytes of the MSI-X capability.
const MSIX_CAP_SIZE: usize = 12;
/// The largest BAR number.
const MAX_BAR: u8 = 5;

/// A register region in a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapRegion {
    /// The BAR, 0 to 5.
    pub bar: u8,
    /// The region's offset in the BAR.
    pub offset: u32,
    /// Its length in bytes, at least the registers the driver uses.
    pub length: u32,
}

impl CapRegion {
    /// Whether the region lies within a BAR of `bar_size` bytes.
    pub fn within(&self, bar_size: u64) -> bool {
        u64::from(self.offset) + u64::from(self.length) <= bar_size
    }
}

/// Where a virtio device's configuration structures are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCaps {
    /// The common configuration, at least [`common::SIZE`] bytes.
    pub common: CapRegion,
    /// The notification area, at least 2 bytes.
    pub notify: CapRegion,
    /// The ISR status byte.
    pub isr: CapRegion,
    /// The device-specific configuration, if the device has one.
    pub device: Option<CapRegion>,
    /// Bytes between queues' notification addresses, per unit of
    /// `queue_notify_off`.
    pub notify_multiplier: u32,
}

impl VirtioCaps {
    /// The offset in the notification area's BAR where the driver writes
    /// (16 bits, the queue's index) to notify the queue whose
    /// `queue_notify_off` this is; `None` if that lies outside the area
    /// or is not 2-aligned.
    pub fn notify_offset(&self, queue_notify_off: u16) -> Option<u64> {
        let within = u64::from(queue_notify_off) * u64::from(self.notify_multiplier);
        let offset = u64::from(self.notify.offset) + within;
        (within + 2 <= u64::from(self.notify.length) && offset.is_multiple_of(2)).then_some(offset)
    }
}

/// The MSI-X capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Where the capability is in configuration space; message control is
    /// at `position + MSIX_CONTROL`.
    pub position: u8,
    /// Table entries (vectors), 1 to 2048.
    pub table_size: u16,
    /// The BAR holding the table.
    pub table_bar: u8,
    /// The table's offset in that BAR (8-aligned).
    pub table_offset: u32,
    /// The BAR holding the pending bit array.
    pub pba_bar: u8,
    /// The pending bit array's offset in that BAR (8-aligned).
    pub pba_offset: u32,
}

/// Why configuration space does not describe a usable virtio device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// The status register says there is no capability list.
    NoCapabilityList,
    /// The pointer at `at` points into the header (below 0x40) or is not
    /// 4-aligned.
    BadPointer { at: u8, pointer: u8 },
    /// The list does not end within the capabilities that fit: a loop.
    TooManyCapabilities,
    /// The capability at `position` runs past configuration space.
    Truncated { position: u8 },
    /// The capability at `position` says it is shorter than its structure.
    ShortCapability { position: u8, cap_len: u8 },
    /// The capability at `position` names a reserved BAR.
    BadBar { position: u8, bar: u8 },
    /// The region of the capability at `position` is too small for the
    /// registers of its type (zero, for the ISR and device types).
    RegionTooSmall {
        position: u8,
        cfg_type: u8,
        length: u32,
    },
    /// No capability of a required type.
    Missing { cfg_type: u8 },
}

/// Reads the 256 bytes of configuration space once, through `read`.
pub fn snapshot(read: impl Fn(u8) -> u8) -> [u8; 256] {
    core::array::from_fn(|offset| read(offset as u8))
}

/// Finds the virtio configuration structures.
pub fn virtio_caps(config: &[u8; 256]) -> Result<VirtioCaps, CapError> {
    // Per type (common, notify, ISR, device): the first usable region
    // with its notify multiplier, else the first reason one was not.
    let mut found: [Option<Result<(CapRegion, u32), CapError>>; 4] = [None; 4];
    walk(config, |position, [id, _, cap_len, cfg_type]| {
        if id != CAP_ID_VENDOR {
            return;
        }
        let slot = match cfg_type {
            CAP_COMMON..=CAP_DEVICE => &mut found[usize::from(cfg_type - 1)],
            _ => return,
        };
        if !matches!(slot, Some(Ok(_))) {
            let candidate = virtio_region(config, position, cap_len, cfg_type);
            if slot.is_none() || candidate.is_ok() {
                *slot = Some(candidate);
            }
        }
    })?;
    let [common, notify, isr, device] = found;
    let required =
        |found: Option<_>, cfg_type| found.unwrap_or(Err(CapError::Missing { cfg_type }));
    let (common, _) = required(common, CAP_COMMON)?;
    let (notify, notify_multiplier) = required(notify, CAP_NOTIFY)?;
    let (isr, _) = required(isr, CAP_ISR)?;
    let device = device.transpose()?.map(|(region, _)| region);
    Ok(VirtioCaps {
        common,
        notify,
        isr,
        device,
        notify_multiplier,
    })
}

/// Finds the MSI-X capability; `None` if the function has none.
pub fn msix(config: &[u8; 256]) -> Result<Option<MsixCap>, CapError> {
    let mut found = None;
    match walk(config, |position, [id, ..]| {
        if id == CAP_ID_MSIX && found.is_none() {
            found = Some(msix_cap(config, position));
        }
    }) {
        Ok(()) => found.transpose(),
        Err(CapError::NoCapabilityList) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Calls `visit` with the position and the first four bytes (id, next,
/// and two the capability defines) of each capability in list order;
/// fails on a malformed list.
fn walk(config: &[u8; 256], mut visit: impl FnMut(u8, [u8; 4])) -> Result<(), CapError> {
    if config[STATUS] & STATUS_CAP_LIST == 0 {
        return Err(CapError::NoCapabilityList);
    }
    let mut at = CAP_POINTER;
    for _ in 0..=MAX_CAPS {
        let pointer = config[usize::from(at)];
        if pointer == 0 {
            return Ok(());
        }
        if pointer < CAP_FIRST || !pointer.is_multiple_of(4) {
            return Err(CapError::BadPointer { at, pointer });
        }
        // At most 0xfc, so its first dword is in configuration space.
        let position = usize::from(pointer);
        let header = [
            config[position],
            config[position + 1],
            config[position + 2],
            config[position + 3],
        ];
        visit(pointer, header);
        at = pointer + 1;
    }
    Err(CapError::TooManyCapabilities)
}

/// The `size` bytes of the capability at `position`.
fn cap_bytes(config: &[u8; 256], position: u8, size: usize) -> Result<&[u8], CapError> {
    let start = usize::from(position);
    config
        .get(start..start + size)
        .ok_or(CapError::Truncated { position })
}

/// The little-endian 32-bit field at `at`.
fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The region (and for the notify type, the multiplier) of the virtio
/// capability at `position`.
fn virtio_region(
    config: &[u8; 256],
    position: u8,
    cap_len: u8,
    cfg_type: u8,
) -> Result<(CapRegion, u32), CapError> {
    let (size, min_length) = match cfg_type {
        CAP_COMMON => (VIRTIO_CAP_SIZE, common::SIZE),
        CAP_NOTIFY => (NOTIFY_CAP_SIZE, 2),
        _ => (VIRTIO_CAP_SIZE, 1),
    };
    let bytes = cap_bytes(config, position, size.max(usize::from(cap_len)))?;
    if usize::from(cap_len) < size {
        return Err(CapError::ShortCapability { position, cap_len });
    }
    let bar = bytes[4];
    if bar > MAX_BAR {
        return Err(CapError::BadBar { position, bar });
    }
    let region = CapRegion {
        bar,
        offset: le32(bytes, 8),
        length: le32(bytes, 12),
    };
    if region.length < min_length {
        return Err(CapError::RegionTooSmall {
            position,
            cfg_type,
            length: region.length,
        });
    }
    let multiplier = if cfg_type == CAP_NOTIFY {
        le32(bytes, 16)
    } else {
        0
    };
    Ok((region, multiplier))
}

/// The MSI-X capability at `position`.
fn msix_cap(config: &[u8; 256], position: u8) -> Result<MsixCap, CapError> {
    let bytes = cap_bytes(config, position, MSIX_CAP_SIZE)?;
    let control = u16::from_le_bytes([bytes[2], bytes[3]]);
    let (table, pba) = (le32(bytes, 4), le32(bytes, 8));
    // The low 3 bits are the BAR indicator, the rest the offset.
    let (table_bar, pba_bar) = ((table & 7) as u8, (pba & 7) as u8);
    if let Some(bar) = [table_bar, pba_bar].into_iter().find(|&bar| bar > MAX_BAR) {
        return Err(CapError::BadBar { position, bar });
    }
    Ok(MsixCap {
        position,
        table_size: (control & 0x7ff) + 1,
        table_bar,
        table_offset: table & !7,
        pba_bar,
        pba_offset: pba & !7,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn put16(config: &mut [u8; 256], at: u8, value: u16) {
        config[usize::from(at)..usize::from(at) + 2].copy_from_slice(&value.to_le_bytes());
    }

    fn put32(config: &mut [u8; 256], at: u8, value: u32) {
        config[usize::from(at)..usize::from(at) + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// A virtio vendor capability; the notify type gets its multiplier.
    fn vendor(
        config: &mut [u8; 256],
        at: u8,
        next: u8,
        cfg_type: u8,
        region: (u8, u32, u32),
        multiplier: u32,
    ) {
        let cap_len = if cfg_type == CAP_NOTIFY || cfg_type == CAP_PCI {
            20
        } else {
            16
        };
        config[usize::from(at)..usize::from(at) + 4].copy_from_slice(&[
            CAP_ID_VENDOR,
            next,
            cap_len,
            cfg_type,
        ]);
        config[usize::from(at) + 4] = region.0;
        put32(config, at + 8, region.1);
        put32(config, at + 12, region.2);
        if cap_len == 20 {
            put32(config, at + 16, multiplier);
        }
    }

    /// Configuration space as QEMU presents a modern virtio-blk-pci with
    /// one queue (what `lspci -xxx` shows): MSI-X at 0x98 with 2 vectors
    /// in BAR 1, then the PCI configuration access, notify, device, ISR
    /// and common capabilities, all in the 64-bit BAR 4.
    fn qemu_blk() -> [u8; 256] {
        let mut config = [0u8; 256];
        put16(&mut config, 0x00, VENDOR_ID);
        put16(&mut config, 0x02, DEVICE_ID_BLK);
        put16(&mut config, 0x04, 0x0507); // I/O, memory, bus master, INTx off
        put16(&mut config, 0x06, 0x0010); // capability list
        put32(&mut config, 0x08, 0x0100_0001); // mass storage (SCSI), revision 1
        put32(&mut config, 0x14, 0xfebd_1000); // BAR 1: MSI-X
        put32(&mut config, 0x20, 0xfe00_000c); // BAR 4: 64-bit prefetchable
        put16(&mut config, 0x2c, VENDOR_ID);
        put16(&mut config, 0x2e, 0x0002);
        config[0x34] = 0x98;
        config[0x3c] = 0x0b;
        config[0x3d] = 0x01;

        config[0x98..0xa0].copy_from_slice(&[CAP_ID_MSIX, 0x84, 0x01, 0x80, 0x01, 0, 0, 0]);
        put32(&mut config, 0xa0, 0x0000_0801);
        vendor(&mut config, 0x84, 0x70, CAP_PCI, (0, 0, 0), 0);
        vendor(&mut config, 0x70, 0x60, CAP_NOTIFY, (4, 0x3000, 0x1000), 4);
        vendor(&mut config, 0x60, 0x50, CAP_DEVICE, (4, 0x2000, 0x1000), 0);
        vendor(&mut config, 0x50, 0x40, CAP_ISR, (4, 0x1000, 0x1000), 0);
        vendor(&mut config, 0x40, 0x00, CAP_COMMON, (4, 0x0000, 0x1000), 0);
        config
    }

    fn qemu_caps() -> VirtioCaps {
        VirtioCaps {
            common: CapRegion {
                bar: 4,
                offset: 0,
                length: 0x1000,
            },
            notify: CapRegion {
                bar: 4,
                offset: 0x3000,
                length: 0x1000,
            },
            isr: CapRegion {
                bar: 4,
                offset: 0x1000,
                length: 0x1000,
            },
            device: Some(CapRegion {
                bar: 4,
                offset: 0x2000,
                length: 0x1000,
            }),
            notify_multiplier: 4,
        }
    }

    #[test]
    fn qemu_virtio_blk_is_parsed() {
        let config = qemu_blk();
        assert_eq!(virtio_caps(&config), Ok(qemu_caps()));
        assert_eq!(
            msix(&config),
            Ok(Some(MsixCap {
                position: 0x98,
                table_size: 2,
                table_bar: 1,
                table_offset: 0,
                pba_bar: 1,
                pba_offset: 0x800,
            }))
        );
        assert_eq!(snapshot(|offset| config[usize::from(offset)]), config);
    }

    #[test]
    fn notify_offsets_stay_in_the_area() {
        let caps = qemu_caps();
        assert_eq!(caps.notify_offset(0), Some(0x3000));
        assert_eq!(caps.notify_offset(1), Some(0x3004));
        assert_eq!(caps.notify_offset(1023), Some(0x3ffc));
        assert_eq!(caps.notify_offset(1024), None);
        assert_eq!(caps.notify_offset(u16::MAX), None);
        let shared = VirtioCaps {
            notify_multiplier: 0,
            ..caps
        };
        assert_eq!(shared.notify_offset(u16::MAX), Some(0x3000));
        let odd = VirtioCaps {
            notify_multiplier: 3,
            ..caps
        };
        assert_eq!(odd.notify_offset(1), None);
        let huge = VirtioCaps {
            notify_multiplier: u32::MAX,
            ..caps
        };
        assert_eq!(huge.notify_offset(u16::MAX), None);
    }

    #[test]
    fn regions_are_checked_against_the_bar() {
        let region = CapRegion {
            bar: 4,
            offset: 0x3000,
            length: 0x1000,
        };
        assert!(region.within(0x4000));
        assert!(!region.within(0x3fff));
        assert!(
            !CapRegion {
                bar: 0,
                offset: u32::MAX,
                length: u32::MAX
            }
            .within(u64::from(u32::MAX))
        );
    }

    #[test]
    fn a_function_without_a_list_has_no_capabilities() {
        let mut config = qemu_blk();
        config[0x06] = 0;
        assert_eq!(virtio_caps(&config), Err(CapError::NoCapabilityList));
        assert_eq!(msix(&config), Ok(None));
    }

    #[test]
    fn loops_are_refused() {
        let mut config = qemu_blk();
        config[0x41] = 0x98; // common points back to the first
        assert_eq!(virtio_caps(&config), Err(CapError::TooManyCapabilities));
        assert_eq!(msix(&config), Err(CapError::TooManyCapabilities));
        let mut config = qemu_blk();
        config[0x51] = 0x50; // ISR points to itself
        assert_eq!(virtio_caps(&config), Err(CapError::TooManyCapabilities));
    }

    #[test]
    fn the_longest_list_that_fits_is_walked() {
        let mut config = [0u8; 256];
        config[0x06] = STATUS_CAP_LIST;
        config[0x34] = 0x40;
        for at in (0x40..0xfc).step_by(4) {
            config[at] = 0x01; // power management, which is not looked at
            config[at + 1] = at as u8 + 4;
        }
        config[0xfc] = CAP_ID_MSIX;
        assert_eq!(msix(&config), Err(CapError::Truncated { position: 0xfc }));
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Missing {
                cfg_type: CAP_COMMON
            })
        );
    }

    #[test]
    fn bad_pointers_are_refused() {
        let mut config = qemu_blk();
        config[0x34] = 0x30;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::BadPointer {
                at: 0x34,
                pointer: 0x30
            })
        );
        let mut config = qemu_blk();
        config[0x61] = 0x52;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::BadPointer {
                at: 0x61,
                pointer: 0x52
            })
        );
        assert_eq!(
            msix(&config),
            Err(CapError::BadPointer {
                at: 0x61,
                pointer: 0x52
            })
        );
        let mut config = qemu_blk();
        config[0x99] = 0x01;
        assert_eq!(
            msix(&config),
            Err(CapError::BadPointer {
                at: 0x99,
                pointer: 0x01
            })
        );
    }

    #[test]
    fn truncated_capabilities_are_refused() {
        // The common capability moved to the last dword: its 16 bytes run
        // past the end.
        let mut config = qemu_blk();
        config[0x51] = 0xfc;
        config[0xfc..].copy_from_slice(&[CAP_ID_VENDOR, 0, 16, CAP_COMMON]);
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Truncated { position: 0xfc })
        );
        // A capability whose length field runs past the end.
        let mut config = qemu_blk();
        config[0x51] = 0xf0;
        vendor(&mut config, 0xf0, 0, CAP_COMMON, (4, 0, 0x1000), 0);
        assert_eq!(virtio_caps(&config).map(|caps| caps.common.offset), Ok(0));
        config[0xf2] = 17;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Truncated { position: 0xf0 })
        );
        // An MSI-X capability in the last dword.
        let mut config = qemu_blk();
        config[0x41] = 0xfc;
        config[0xfc] = CAP_ID_MSIX;
        config[0x99] = 0x84;
        config[0x98] = 0x01;
        assert_eq!(msix(&config), Err(CapError::Truncated { position: 0xfc }));
    }

    #[test]
    fn short_capabilities_are_refused() {
        let mut config = qemu_blk();
        config[0x72] = 16; // notify without its multiplier
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::ShortCapability {
                position: 0x70,
                cap_len: 16
            })
        );
        config[0x72] = 0;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::ShortCapability {
                position: 0x70,
                cap_len: 0
            })
        );
    }

    #[test]
    fn reserved_bars_are_refused() {
        let mut config = qemu_blk();
        config[0x44] = 6;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::BadBar {
                position: 0x40,
                bar: 6
            })
        );
        config[0x44] = 0xff;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::BadBar {
                position: 0x40,
                bar: 0xff
            })
        );
        let mut config = qemu_blk();
        config[0x9c] = 0x06; // table BIR 6
        assert_eq!(
            msix(&config),
            Err(CapError::BadBar {
                position: 0x98,
                bar: 6
            })
        );
        let mut config = qemu_blk();
        config[0xa0] = 0x07; // PBA BIR 7
        assert_eq!(
            msix(&config),
            Err(CapError::BadBar {
                position: 0x98,
                bar: 7
            })
        );
    }

    #[test]
    fn small_regions_are_refused() {
        let mut config = qemu_blk();
        put32(&mut config, 0x5c, 0); // ISR length 0
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::RegionTooSmall {
                position: 0x50,
                cfg_type: CAP_ISR,
                length: 0
            })
        );
        let mut config = qemu_blk();
        put32(&mut config, 0x4c, common::SIZE - 1);
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::RegionTooSmall {
                position: 0x40,
                cfg_type: CAP_COMMON,
                length: common::SIZE - 1
            })
        );
        let mut config = qemu_blk();
        put32(&mut config, 0x7c, 1);
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::RegionTooSmall {
                position: 0x70,
                cfg_type: CAP_NOTIFY,
                length: 1
            })
        );
        let mut config = qemu_blk();
        put32(&mut config, 0x6c, 0);
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::RegionTooSmall {
                position: 0x60,
                cfg_type: CAP_DEVICE,
                length: 0
            })
        );
    }

    #[test]
    fn an_unusable_capability_is_skipped_for_a_later_one() {
        // A second common capability at 0xb0, after the first, with a
        // reserved BAR in the first.
        let mut config = qemu_blk();
        config[0x41] = 0xb0;
        vendor(&mut config, 0xb0, 0, CAP_COMMON, (2, 0x100, 0x100), 0);
        assert_eq!(
            virtio_caps(&config).map(|caps| caps.common),
            Ok(qemu_caps().common)
        );
        config[0x44] = 6;
        assert_eq!(
            virtio_caps(&config).map(|caps| caps.common),
            Ok(CapRegion {
                bar: 2,
                offset: 0x100,
                length: 0x100
            })
        );
        // Vendor capabilities of other types, and other capabilities, are
        // ignored.
        config[0xb3] = 0x30;
        config[0x98] = 0x05;
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::BadBar {
                position: 0x40,
                bar: 6
            })
        );
        assert_eq!(msix(&config), Ok(None));
    }

    #[test]
    fn missing_capabilities_are_reported() {
        let mut config = qemu_blk();
        config[0x51] = 0; // the list ends before common
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Missing {
                cfg_type: CAP_COMMON
            })
        );
        let mut config = qemu_blk();
        config[0x85] = 0x60; // skips notify
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Missing {
                cfg_type: CAP_NOTIFY
            })
        );
        let mut config = qemu_blk();
        config[0x61] = 0x40; // skips ISR
        assert_eq!(
            virtio_caps(&config),
            Err(CapError::Missing { cfg_type: CAP_ISR })
        );
        let mut config = qemu_blk();
        config[0x71] = 0x50; // skips the device configuration, which is optional
        assert_eq!(
            virtio_caps(&config),
            Ok(VirtioCaps {
                device: None,
                ..qemu_caps()
            })
        );
        let mut config = qemu_blk();
        config[0x34] = 0x84; // skips MSI-X
        assert_eq!(msix(&config), Ok(None));
        assert_eq!(virtio_caps(&config), Ok(qemu_caps()));
    }

    /// What a successful parse promises, whatever the input.
    fn check_promises(config: &[u8; 256]) {
        if let Ok(caps) = virtio_caps(config) {
            for region in [caps.common, caps.notify, caps.isr]
                .into_iter()
                .chain(caps.device)
            {
                assert!(region.bar <= MAX_BAR);
            }
            assert!(caps.common.length >= common::SIZE);
            assert!(caps.notify.length >= 2);
            assert!(caps.isr.length >= 1);
            for off in [0, 1, 2, 0x100, u16::MAX] {
                if let Some(offset) = caps.notify_offset(off) {
                    assert!(
                        offset + 2 <= u64::from(caps.notify.offset) + u64::from(caps.notify.length)
                    );
                }
            }
        }
        if let Ok(Some(msix)) = msix(config) {
            assert!(msix.table_bar <= MAX_BAR && msix.pba_bar <= MAX_BAR);
            assert!((1..=2048).contains(&msix.table_size));
            assert!(msix.position >= CAP_FIRST && msix.position % 4 == 0);
        }
    }

    proptest! {
        /// Arbitrary configuration space never panics the parsers.
        #[test]
        fn arbitrary_config_space_is_safe(bytes in prop::collection::vec(any::<u8>(), 256), list in any::<bool>()) {
            let mut config: [u8; 256] = bytes.try_into().unwrap();
            if list {
                config[0x06] |= STATUS_CAP_LIST;
            }
            check_promises(&config);
        }

        /// Nor does a realistic one with a few bytes changed, which gets
        /// much deeper into the checks.
        #[test]
        fn mutated_qemu_config_space_is_safe(changes in prop::collection::vec((0x34u8..=0xff, any::<u8>()), 1..8)) {
            let mut config = qemu_blk();
            for (at, value) in changes {
                config[usize::from(at)] = value;
            }
            check_promises(&config);
        }
    }
}
