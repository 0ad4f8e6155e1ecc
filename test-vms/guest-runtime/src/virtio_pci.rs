//! The virtio PCI transport as the test VMs' own drivers use it (the
//! `virtio` crate decides, its set-up sequence `virtio::setup` included;
//! this module reaches the hardware through [`crate::devices`]): finding virtio functions on bus 0, locating a
//! function's configuration structures and MSI-X table in its memory BARs,
//! feature negotiation, routing MSI-X entries to this CPU's local APIC,
//! and setting up split virtqueues in the DMA area ([`Dma`]). What a
//! driver does with its device (requests, frames, device configuration)
//! stays in the test VM.
//!
//! The steps are a driver's set-up in virtio 1.x order (spec 3.1.1):
//! [`Function::locate`], [`Function::negotiate`], [`Function::route_msix`],
//! [`Function::set_up_queue`] for each queue, [`Function::driver_ok`].
#![forbid(unsafe_code)]

use virtio::DmaMemory;
use virtio::pci::{self as vpci, MsixCap, VirtioCaps, common};
use virtio::queue::SplitQueue;
use virtio::setup::{self, CommonRegisters, SetUpError};

use crate::devices::{self, dma_area};
use crate::interrupts;

/// The DMA area from an offset on, reached by offsets from there through
/// the volatile accessors of [`crate::devices`].
#[derive(Clone, Copy, Debug)]
pub struct Dma {
    base: u64,
}

impl Dma {
    /// The DMA area from `offset` bytes on (a part a driver keeps for
    /// itself; [`devices::DMA_BYTES`] bounds it).
    pub fn from_offset(offset: u64) -> Self {
        Self {
            base: dma_area() + offset,
        }
    }
}

impl DmaMemory for Dma {
    fn read8(&self, offset: u64) -> u8 {
        devices::read8(self.base + offset)
    }
    fn read16(&self, offset: u64) -> u16 {
        devices::read16(self.base + offset)
    }
    fn read32(&self, offset: u64) -> u32 {
        devices::read32(self.base + offset)
    }
    fn read64(&self, offset: u64) -> u64 {
        devices::read64(self.base + offset)
    }
    fn write8(&self, offset: u64, value: u8) {
        devices::write8(self.base + offset, value)
    }
    fn write16(&self, offset: u64, value: u16) {
        devices::write16(self.base + offset, value)
    }
    fn write32(&self, offset: u64, value: u32) {
        devices::write32(self.base + offset, value)
    }
    fn write64(&self, offset: u64, value: u64) {
        devices::write64(self.base + offset, value)
    }
    fn physical(&self, offset: u64) -> u64 {
        self.base + offset
    }
}

/// The functions (device numbers, function 0) on bus 0 with virtio's
/// vendor id and one of `device_ids`, in slot order.
pub fn functions(device_ids: &[u16]) -> impl Iterator<Item = u8> + '_ {
    (0..32u8).filter(move |&device| {
        let ids = devices::pci_read32(device, 0, 0);
        let (vendor, id) = (ids as u16, (ids >> 16) as u16);
        vendor == vpci::VENDOR_ID && device_ids.contains(&id)
    })
}

/// The local APIC's spurious-interrupt vector register, and the value
/// that software-enables the APIC with spurious vector 0xff.
const LAPIC_SPURIOUS: u32 = 0xf0;
const LAPIC_ENABLED: u32 = 0x1ff;
/// An MSI's address for the local APIC of CPU 0 (physical destination
/// mode, no redirection hint).
const MSI_ADDRESS: u32 = 0xfee0_0000;

/// A virtio function on bus 0, its registers located.
pub struct Function {
    /// Its device number on bus 0 (function 0).
    pub device: u8,
    /// Where its configuration structures are.
    pub caps: VirtioCaps,
    /// Its MSI-X capability.
    pub msix: MsixCap,
    /// The common configuration's address.
    pub common: u64,
    /// The notification area's BAR's address.
    pub notify_base: u64,
    /// The device-specific configuration's address.
    pub device_config: u64,
    /// The MSI-X table's address.
    pub msix_table: u64,
}

impl Function {
    /// Reads the configuration space of bus 0's `device` (function 0),
    /// finds its virtio structures and MSI-X table in its memory BARs, and
    /// turns on memory decoding and bus mastering.
    pub fn locate(device: u8) -> Result<Self, &'static str> {
        let config = vpci::snapshot(|offset| devices::pci_read8(device, 0, offset));
        let caps = vpci::virtio_caps(&config).map_err(|_| "no usable virtio capabilities")?;
        let msix = vpci::msix(&config)
            .ok()
            .flatten()
            .ok_or("no MSI-X capability")?;
        let bar_of = |index: u8| bar(device, index);
        let common = bar_of(caps.common.bar).ok_or("the common configuration's BAR")?
            + u64::from(caps.common.offset);
        let notify_base = bar_of(caps.notify.bar).ok_or("the notification BAR")?;
        let device_config = caps
            .device
            .and_then(|region| Some(bar_of(region.bar)? + u64::from(region.offset)))
            .ok_or("the device configuration's BAR")?;
        let msix_table =
            bar_of(msix.table_bar).ok_or("the MSI-X table's BAR")? + u64::from(msix.table_offset);
        // Memory decoding and bus mastering.
        let command = devices::pci_read32(device, 0, 0x04);
        devices::pci_write32(device, 0, 0x04, command | 0b110);
        Ok(Self {
            device,
            caps,
            msix,
            common,
            notify_base,
            device_config,
            msix_table,
        })
    }

    /// The address of the common configuration's register at `offset`
    /// (one of [`common`]'s).
    pub fn register(&self, offset: u32) -> u64 {
        self.common + u64::from(offset)
    }

    /// Resets the device, acknowledges it, and accepts what it offers of
    /// `wanted` and all of `required` (else fails with `lacking`); fails
    /// if it then refuses FEATURES_OK. Returns the accepted features.
    pub fn negotiate(
        &self,
        wanted: u64,
        required: u64,
        lacking: &'static str,
    ) -> Result<u64, &'static str> {
        let registers = self.registers();
        setup::reset(&registers).map_err(|_| "the device did not reset")?;
        setup::negotiate_features(&registers, wanted, required).map_err(|error| match error {
            SetUpError::Lacks(_) => lacking,
            _ => "the device refused the features",
        })
    }

    /// Software-enables this CPU's local APIC (spurious vector 0xff) with
    /// end of interrupt on, points each `(entry, vector)` of `routes` at
    /// it (in that order; entries unmasked), enables MSI-X, and gives
    /// configuration changes entry `config` (`None`: no vector).
    pub fn route_msix(&self, routes: &[(u16, u8)], config: Option<u16>) {
        interrupts::lapic_write(LAPIC_SPURIOUS, LAPIC_ENABLED);
        interrupts::use_lapic();
        for &(entry, vector) in routes {
            let at = self.msix_table + u64::from(entry) * u64::from(vpci::MSIX_ENTRY_SIZE);
            devices::write32(at, MSI_ADDRESS);
            devices::write32(at + 4, 0);
            devices::write32(at + 8, u32::from(vector));
            devices::write32(at + 12, 0);
        }
        let cap = devices::pci_read32(self.device, 0, self.msix.position);
        let control = ((cap >> 16) as u16 | vpci::MSIX_ENABLE) & !vpci::MSIX_FUNCTION_MASK;
        devices::pci_write32(
            self.device,
            0,
            self.msix.position,
            (cap & 0xffff) | u32::from(control) << 16,
        );
        devices::write16(
            self.register(common::MSIX_CONFIG),
            config.unwrap_or(vpci::NO_VECTOR),
        );
    }

    /// Sets up and enables queue `index` with at most `max` descriptors at
    /// offset `at` of `dma`, its interrupts on MSI-X entry `entry`.
    /// Returns the queue and the address to write to notify it.
    pub fn set_up_queue(
        &self,
        dma: &Dma,
        index: u16,
        at: u64,
        max: u16,
        entry: u16,
    ) -> Result<(SplitQueue, u64), QueueError> {
        let queue = setup::set_up_queue(&self.registers(), &self.caps, dma, index, at, max, entry)
            .map_err(|error| match error {
                SetUpError::QueueDoesNotFit(_) => QueueError::DoesNotFit,
                SetUpError::VectorRefused(_) => QueueError::VectorRefused,
                SetUpError::NotifyOutside(_) => QueueError::NotifyOutside,
                _ => QueueError::Missing,
            })?;
        Ok((queue.queue, self.notify_base + queue.notify_at))
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok(&self) {
        setup::driver_ok(&self.registers());
    }

    /// The common configuration as `virtio::setup` reaches it.
    fn registers(&self) -> CommonConfig {
        CommonConfig(self.common)
    }
}

/// The address memory BAR `index` of bus 0's `device` (function 0) holds;
/// `None` for an I/O BAR.
fn bar(device: u8, index: u8) -> Option<u64> {
    let offset = 0x10 + 4 * index;
    let low = devices::pci_read32(device, 0, offset);
    if low & 1 != 0 {
        return None;
    }
    let high = if low & 0b110 == 0b100 {
        devices::pci_read32(device, 0, offset + 4)
    } else {
        0
    };
    Some(u64::from(low & !0xf) | u64::from(high) << 32)
}

/// Why [`Function::set_up_queue`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The device has no such queue (size 0).
    Missing,
    /// The queue does not fit where it was to go.
    DoesNotFit,
    /// The device did not keep the queue's MSI-X entry.
    VectorRefused,
    /// The queue's notification address lies outside its area.
    NotifyOutside,
}

impl QueueError {
    /// What went wrong, of a device's only queue (`only`) or of one of
    /// its queues.
    pub fn why(self, only: bool) -> &'static str {
        match (self, only) {
            (Self::Missing, true) => "the device has no queue",
            (Self::Missing, false) => "a queue the device lacks",
            (Self::DoesNotFit, true) => "the queue does not fit",
            (Self::DoesNotFit, false) => "a queue does not fit",
            (Self::VectorRefused, true) => "the device refused the queue's MSI-X vector",
            (Self::VectorRefused, false) => "the device refused a queue's MSI-X vector",
            (Self::NotifyOutside, true) => "the notification address is outside its area",
            (Self::NotifyOutside, false) => "a notification address is outside its area",
        }
    }
}

/// The common configuration structure at an address in a memory BAR.
struct CommonConfig(u64);

impl CommonRegisters for CommonConfig {
    fn read8(&self, offset: u32) -> u8 {
        devices::read8(self.0 + u64::from(offset))
    }
    fn read16(&self, offset: u32) -> u16 {
        devices::read16(self.0 + u64::from(offset))
    }
    fn read32(&self, offset: u32) -> u32 {
        devices::read32(self.0 + u64::from(offset))
    }
    fn write8(&self, offset: u32, value: u8) {
        devices::write8(self.0 + u64::from(offset), value);
    }
    fn write16(&self, offset: u32, value: u16) {
        devices::write16(self.0 + u64::from(offset), value);
    }
    fn write32(&self, offset: u32, value: u32) {
        devices::write32(self.0 + u64::from(offset), value);
    }
}
