//! The PCI function a driver component drives (`pci = { vendor = ...,
//! device = ... }` in the system file): found by the core at boot, its
//! memory BARs mapped into the component (`bar0` .. `bar5` on the start
//! page, as [`Region`]s), its configuration space reached through the
//! `PciConfig` call, and its MSI vectors delivered as interrupt lines
//! through the interrupt forwarder (`runtime::irq`).

use microvisor_abi::start::{ResourceKind, ResourceView};

use crate::mmio::Region;
use crate::syscall;

/// The function, as the start page describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// `bus << 8 | device << 3 | function`.
    pub address: u32,
    pub vendor: u16,
    pub device: u16,
    msi_vectors: u32,
    msi_first_line: u32,
    msi_address: u64,
    msi_data: u32,
}

/// Where one MSI vector's message goes and how it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiVector {
    /// The message address and data to program (an MSI-X table entry).
    pub address: u64,
    pub data: u32,
    /// The interrupt line it arrives as (`irqN`).
    pub line: u32,
}

impl Function {
    /// The function this component was given, if it was found at boot
    /// (a driver whose function is absent is never started).
    pub fn given(start: &crate::Start) -> Option<Self> {
        match start.resource("pci", ResourceKind::Pci)?.view()? {
            ResourceView::Pci {
                function,
                vendor,
                device,
                msi_vectors,
                msi_first_line,
                msi_address,
                msi_data,
            } => Some(Self {
                address: function,
                vendor,
                device,
                msi_vectors,
                msi_first_line,
                msi_address,
                msi_data,
            }),
            _ => None,
        }
    }

    /// `bus:device.function`.
    pub fn location(&self) -> (u32, u32, u32) {
        (
            self.address >> 8,
            (self.address >> 3) & 0x1f,
            self.address & 7,
        )
    }

    /// Memory BAR `index` as mapped, if the system asked for it.
    pub fn bar(start: &crate::Start, index: usize) -> Option<Region> {
        let name = ["bar0", "bar1", "bar2", "bar3", "bar4", "bar5"].get(index)?;
        Region::named(start, name)
    }

    /// MSI vector `index`, if the system gives that many.
    pub fn msi(&self, index: u32) -> Option<MsiVector> {
        (index < self.msi_vectors).then_some(MsiVector {
            address: self.msi_address,
            data: self.msi_data + index,
            line: self.msi_first_line + index,
        })
    }

    /// MSI vectors the system gives.
    pub fn msi_vectors(&self) -> u32 {
        self.msi_vectors
    }

    /// Reads a byte of configuration space.
    pub fn read8(&self, offset: u8) -> u8 {
        syscall::pci_config(u64::from(offset), 1, false, 0).unwrap_or(0xff) as u8
    }

    /// Reads a 16-bit word (aligned).
    pub fn read16(&self, offset: u8) -> u16 {
        syscall::pci_config(u64::from(offset), 2, false, 0).unwrap_or(0xffff) as u16
    }

    /// Reads a 32-bit word (aligned).
    pub fn read32(&self, offset: u8) -> u32 {
        syscall::pci_config(u64::from(offset), 4, false, 0).unwrap_or(u32::MAX)
    }

    /// Writes a 16-bit word (aligned); `false` if the core refused it.
    pub fn write16(&self, offset: u8, value: u16) -> bool {
        syscall::pci_config(u64::from(offset), 2, true, u64::from(value)).is_some()
    }

    /// Writes a 32-bit word (aligned); `false` if the core refused it.
    pub fn write32(&self, offset: u8, value: u32) -> bool {
        syscall::pci_config(u64::from(offset), 4, true, u64::from(value)).is_some()
    }
}
