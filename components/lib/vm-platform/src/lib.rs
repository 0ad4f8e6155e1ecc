//! The world switcher's pure logic: everything about running a guest that
//! does not need the core, so it is tested on the host.
//!
//! - [`image`]: reading a guest's ELF image and loading its segments into
//!   guest memory at their physical addresses, refusing anything that does
//!   not fit.
//! - [`setup`]: the initial CPU state for 16-bit real-mode and 64-bit
//!   long-mode entry, including the page tables and GDT long mode needs.
//! - [`cpuid`]: what the guest sees of CPUID, with the hypervisor leaves.
//! - [`uart`]: the 16550 model whose lines go to the system log.
//! - [`msr`]: the MSRs a guest may read and write, `#GP` for the rest.
//! - [`guest_paging`]: the guest's own address translation (segments, every
//!   paging mode), typed `#PF`s, and fetching the instruction at CS:RIP.
//! - [`mmio`]: decoding the instruction that faulted on a device page into a
//!   typed access, and applying its effect to the registers and flags.
//!
//! The world-switcher component wires these to the vCPU exits.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod cpuid;
pub mod guest_paging;
pub mod image;
pub mod mmio;
pub mod msr;
pub mod setup;
pub mod uart;

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

/// Read access to guest-physical memory: the guest's page tables and
/// instructions, and the guest-RAM side of a string instruction.
pub trait GuestRead {
    /// Copies the bytes at `address` into `into`; `false` if any of them
    /// lies outside guest RAM (then `into` holds nothing meaningful).
    fn read(&self, address: guest_paging::GuestPhysical, into: &mut [u8]) -> bool;
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

    impl super::GuestRead for VecMemory {
        fn read(&self, address: super::guest_paging::GuestPhysical, into: &mut [u8]) -> bool {
            let Some(end) = (address.0 as usize).checked_add(into.len()) else {
                return false;
            };
            match self.0.get(address.0 as usize..end) {
                Some(bytes) => {
                    into.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        }
    }
}
