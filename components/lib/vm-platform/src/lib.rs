//! The world switcher's pure logic: everything about running a guest that
//! does not need the core, so it is tested on the host.
//!
//! - [`image`]: reading a guest's ELF image and loading its segments into
//!   guest memory at their physical addresses, refusing anything that does
//!   not fit.
//! - [`setup`]: the initial CPU state for 16-bit real-mode and 64-bit
//!   long-mode entry, including the page tables and GDT long mode needs.
//! - [`cpuid`]: what the guest sees of CPUID, with the hypervisor leaves.
//! - [`uart`]: the 16550A (COM1) whose lines go to the system log, with
//!   its receive FIFO and interrupt line.
//! - [`msr`]: the MSRs a guest may read and write, `#GP` for the rest.
//! - [`acpi`]: the VM's ACPI tables (RSDP, XSDT, FADT, MADT, DSDT), built
//!   with [`aml`] into a buffer by way of [`writer`].
//! - [`power`]: the power-off and reset ports the FADT names.
//! - [`rtc`]: the CMOS real-time clock and CMOS memory at ports 0x70/0x71.
//! - [`fw_cfg`]: QEMU's firmware configuration device at ports 0x510/0x511.
//! - [`pci`]: the PCI host bridge on configuration mechanism #1 and the
//!   slots for future PCI functions.
//!
//! The world-switcher component wires these to the vCPU exits.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod aml;
pub mod cpuid;
pub mod fw_cfg;
pub mod image;
pub mod msr;
pub mod pci;
pub mod power;
pub mod rtc;
pub mod setup;
pub mod uart;
pub mod writer;

/// How much RAM the guest has below and above the 4 GiB line (what
/// firmware reports in CMOS and fw_cfg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    pub below_4g: u64,
    pub above_4g: u64,
}

/// Guest memory as the loader and set-up code see it.
pub trait Memory {
    /// Bytes of guest memory.
    fn size(&self) -> u64;
    /// Copies `bytes` to guest-physical `address`; `false` if out of range.
    fn write(&mut self, address: u64, bytes: &[u8]) -> bool;
    /// Fills `length` bytes at `address` with `value`; `false` if out of
    /// range.
    fn fill(&mut self, address: u64, length: u64, value: u8) -> bool;
}

#[cfg(test)]
pub(crate) mod testing {
    /// Guest memory in a vector.
    pub struct VecMemory(pub Vec<u8>);

    impl super::Memory for VecMemory {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn write(&mut self, address: u64, bytes: &[u8]) -> bool {
            let Some(end) = (address as usize).checked_add(bytes.len()) else {
                return false;
            };
            match self.0.get_mut(address as usize..end) {
                Some(slot) => {
                    slot.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
        fn fill(&mut self, address: u64, length: u64, value: u8) -> bool {
            let Some(end) = (address as usize).checked_add(length as usize) else {
                return false;
            };
            match self.0.get_mut(address as usize..end) {
                Some(slot) => {
                    slot.fill(value);
                    true
                }
                None => false,
            }
        }
    }
}
