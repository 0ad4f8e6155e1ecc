//! The `virtio` crate's driver logic on a ring-3 driver component's
//! hardware, shared by the drivers of QEMU's virtio-blk and virtio-net PCI
//! functions (`components/system/virtio-blk`, `components/system/virtio-net`):
//!
//! - [`Dma`]: the component's DMA buffer as the memory the device shares;
//! - [`Registers`]: a register window in one of the function's BARs (the
//!   common configuration, the notification area, the ISR status byte,
//!   the device configuration);
//! - [`Signal`] and [`Device::open`]: how the device interrupts (an MSI-X
//!   vector the core gave the component, or its INTx pin's IOAPIC line),
//!   and the set-up in virtio 1.x order — reset, features, MSI-X entry 0
//!   (or INTx), then the driver's queues ([`Device::queue`]) and
//!   [`Device::ready`].
//!
//! What a driver does with its queues stays in the driver.
#![no_std]
#![forbid(unsafe_code)]

use runtime::dma::Buffer;
use runtime::mmio::Region;
use runtime::pci::{Function, MsiVector};
use virtio::DmaMemory;
use virtio::pci::{self as vpci, CapRegion, VirtioCaps, common};
use virtio::setup::{self, CommonRegisters, SetUpError};

/// The DMA buffer as the virtio crate sees it (reads outside it read 0,
/// writes outside it are dropped: the crate never makes them).
pub struct Dma(pub Buffer);

impl DmaMemory for Dma {
    fn read8(&self, offset: u64) -> u8 {
        self.0.read8(offset).unwrap_or(0)
    }
    fn read16(&self, offset: u64) -> u16 {
        self.0.read16(offset).unwrap_or(0)
    }
    fn read32(&self, offset: u64) -> u32 {
        self.0.read32(offset).unwrap_or(0)
    }
    fn read64(&self, offset: u64) -> u64 {
        self.0.read64(offset).unwrap_or(0)
    }
    fn write8(&self, offset: u64, value: u8) {
        self.0.write8(offset, value);
    }
    fn write16(&self, offset: u64, value: u16) {
        self.0.write16(offset, value);
    }
    fn write32(&self, offset: u64, value: u32) {
        self.0.write32(offset, value);
    }
    fn write64(&self, offset: u64, value: u64) {
        self.0.write64(offset, value);
    }
    fn physical(&self, offset: u64) -> u64 {
        self.0.physical(offset).unwrap_or(0)
    }
}

/// A register region of the device: a window into one of its BARs.
/// Reads outside the BAR read all ones, as a missing device does.
pub struct Registers {
    bar: Region,
    base: u64,
}

impl Registers {
    /// The region `region` of the function's BARs, if that BAR is mapped
    /// and holds it.
    pub fn new(start: &runtime::Start, region: CapRegion) -> Option<Self> {
        let bar = Function::bar(start, usize::from(region.bar))?;
        region.within(bar.size()).then_some(Self {
            bar,
            base: u64::from(region.offset),
        })
    }
    pub fn read8(&self, offset: u32) -> u8 {
        self.bar
            .read8(self.base + u64::from(offset))
            .unwrap_or(0xff)
    }
    pub fn read16(&self, offset: u32) -> u16 {
        self.bar
            .read16(self.base + u64::from(offset))
            .unwrap_or(0xffff)
    }
    pub fn read32(&self, offset: u32) -> u32 {
        self.bar
            .read32(self.base + u64::from(offset))
            .unwrap_or(u32::MAX)
    }
    pub fn write8(&self, offset: u32, value: u8) {
        self.bar.write8(self.base + u64::from(offset), value);
    }
    pub fn write16(&self, offset: u32, value: u16) {
        self.bar.write16(self.base + u64::from(offset), value);
    }
    pub fn write32(&self, offset: u32, value: u32) {
        self.bar.write32(self.base + u64::from(offset), value);
    }
}

impl CommonRegisters for Registers {
    fn read8(&self, offset: u32) -> u8 {
        Registers::read8(self, offset)
    }
    fn read16(&self, offset: u32) -> u16 {
        Registers::read16(self, offset)
    }
    fn read32(&self, offset: u32) -> u32 {
        Registers::read32(self, offset)
    }
    fn write8(&self, offset: u32, value: u8) {
        Registers::write8(self, offset, value);
    }
    fn write16(&self, offset: u32, value: u16) {
        Registers::write16(self, offset, value);
    }
    fn write32(&self, offset: u32, value: u32) {
        Registers::write32(self, offset, value);
    }
}

/// How the device interrupts.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    /// MSI-X entry 0 sends this vector's message.
    Msi(MsiVector),
    /// Its INTx pin, wired to this IOAPIC line.
    Intx(u32),
}

impl Signal {
    /// The MSI vector the core gave the function, else the INTx line the
    /// system file names (`intx=N`); `None` without either.
    pub fn choose(function: &Function, intx: Option<u32>) -> Option<Self> {
        match (function.msi(0), intx) {
            (Some(msi), _) => Some(Self::Msi(msi)),
            (None, Some(line)) => Some(Self::Intx(line)),
            (None, None) => None,
        }
    }

    /// The interrupt line the driver waits on.
    pub fn line(self) -> u32 {
        match self {
            Self::Msi(msi) => msi.line,
            Self::Intx(line) => line,
        }
    }

    /// How it reads in a driver's start line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Msi(_) => "MSI-X vector 0",
            Self::Intx(_) => "INTx",
        }
    }
}

/// A device being set up, then driven.
pub struct Device {
    pub common: Registers,
    /// The ISR status register: read on each INTx interrupt, which
    /// deasserts the line (`None` with MSI-X).
    pub isr: Option<Registers>,
    pub notify: Registers,
    /// The device-specific configuration, if it has one.
    pub config: Option<Registers>,
    caps: VirtioCaps,
    /// The features accepted.
    pub features: u64,
    /// The queues' MSI-X vector: 0, or none with INTx.
    vector: u16,
}

/// Why a device could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum OpenError {
    /// Something about the function itself (its capabilities, a BAR).
    Function(&'static str),
    /// What the device answered.
    Device(SetUpError),
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Function(why) => f.write_str(why),
            Self::Device(error) => write!(f, "{error}"),
        }
    }
}

impl From<SetUpError> for OpenError {
    fn from(error: SetUpError) -> Self {
        Self::Device(error)
    }
}

impl Device {
    /// Resets the function's device (its last driver may have left it
    /// running on this same buffer), turns on memory decoding and bus
    /// mastering, negotiates features (`required` and those of `wanted` it
    /// offers) and routes its interrupts as `signal` says: MSI-X entry 0,
    /// or MSI-X off and INTx on. Then the driver sets up its queues.
    pub fn open(
        start: &runtime::Start,
        function: &Function,
        signal: Signal,
        wanted: u64,
        required: u64,
    ) -> Result<Self, OpenError> {
        let config = vpci::snapshot(|offset| function.read8(offset));
        let caps = vpci::virtio_caps(&config)
            .map_err(|_| OpenError::Function("the function has no usable virtio capabilities"))?;
        let msix = vpci::msix(&config)
            .ok()
            .flatten()
            .ok_or(OpenError::Function("the function has no MSI-X capability"))?;
        let common = Registers::new(start, caps.common).ok_or(OpenError::Function(
            "the common configuration's BAR is not mapped",
        ))?;
        let notify = Registers::new(start, caps.notify).ok_or(OpenError::Function(
            "the notification area's BAR is not mapped",
        ))?;
        let device_config = caps.device.and_then(|region| Registers::new(start, region));

        setup::reset(&common)?;
        let command = function.read16(0x04);
        function.write16(0x04, command | 0b110);
        let features = setup::negotiate_features(&common, wanted, required)?;

        let control_at = msix.position + vpci::MSIX_CONTROL;
        let control = function.read16(control_at);
        let vector = match signal {
            Signal::Msi(msi) => {
                let table = Function::bar(start, usize::from(msix.table_bar))
                    .ok_or(OpenError::Function("the MSI-X table's BAR is not mapped"))?;
                let entry = u64::from(msix.table_offset);
                table.write32(entry, msi.address as u32);
                table.write32(entry + 4, (msi.address >> 32) as u32);
                table.write32(entry + 8, msi.data);
                table.write32(entry + u64::from(vpci::MSIX_ENTRY_VECTOR_CONTROL), 0);
                function.write16(
                    control_at,
                    (control | vpci::MSIX_ENABLE) & !vpci::MSIX_FUNCTION_MASK,
                );
                0
            }
            Signal::Intx(_) => {
                function.write16(control_at, control & !vpci::MSIX_ENABLE);
                let command = function.read16(0x04);
                function.write16(0x04, command & !(1 << 10));
                vpci::NO_VECTOR
            }
        };
        common.write16(common::MSIX_CONFIG, vpci::NO_VECTOR);
        let isr = match signal {
            Signal::Msi(_) => None,
            Signal::Intx(_) => Some(Registers::new(start, caps.isr).ok_or(OpenError::Function(
                "the ISR status register's BAR is not mapped",
            ))?),
        };
        Ok(Self {
            common,
            isr,
            notify,
            config: device_config,
            caps,
            features,
            vector,
        })
    }

    /// Sets up queue `index` at `at` in `dma` with at most `max`
    /// descriptors, interrupting as the device does.
    pub fn queue(&self, dma: &Dma, index: u16, at: u64, max: u16) -> Result<Queue, SetUpError> {
        let queue =
            setup::set_up_queue(&self.common, &self.caps, dma, index, at, max, self.vector)?;
        Ok(Queue {
            queue: queue.queue,
            at: (queue.notify_at - u64::from(self.caps.notify.offset)) as u32,
            index,
        })
    }

    /// The driver is ready: the device may use its queues.
    pub fn ready(&self) {
        setup::driver_ok(&self.common);
    }

    /// Resets the device: it stops using the buffer.
    pub fn reset(&self) {
        self.common.write8(common::DEVICE_STATUS, 0);
    }

    /// Marks the device failed (it broke the queue protocol).
    pub fn fail(&self) {
        self.common
            .write8(common::DEVICE_STATUS, virtio::status::FAILED);
    }

    /// On INTx, whether this interrupt is the device's: reading its ISR
    /// status deasserts the line, and a read without the queue bit is
    /// another device's interrupt on a shared line. Always true on MSI-X.
    pub fn interrupt_is_ours(&self) -> bool {
        self.isr
            .as_ref()
            .is_none_or(|isr| isr.read8(0) & vpci::ISR_QUEUE != 0)
    }

    /// Notifies queue `queue` of new buffers.
    pub fn notify(&self, queue: &Queue) {
        self.notify.write16(queue.at, queue.index);
    }
}

/// A queue set up, with where its notifications go.
pub struct Queue {
    pub queue: virtio::queue::SplitQueue,
    /// Its notification address, within the notification area.
    at: u32,
    index: u16,
}
