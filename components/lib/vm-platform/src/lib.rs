//! The world switcher's pure logic: everything about running a guest that
//! does not need the core, so it is tested on the host.
//!
//! - [`bundle`]: guest bundles, a kernel, initrd and command line packed
//!   as one boot-image entry.
//! - [`image`]: reading a guest's ELF image and loading its segments into
//!   guest memory at their physical addresses, refusing anything that does
//!   not fit.
//! - [`setup`]: the initial CPU state for 16-bit real-mode and 64-bit
//!   long-mode entry, including the page tables and GDT long mode needs.
//! - [`cpuid`]: the CPUID policy: what the guest really gets, leaf by
//!   leaf, with the hypervisor leaves.
//! - [`uart`]: the 16550 model whose lines go to the system log.
//! - [`msr`]: the MSRs a guest may read and write, as CPUID says they
//!   exist; the LAPIC's handed to its model, `#GP` for the rest.
//!
//! The world-switcher component wires these to the vCPU exits.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod cpuid;
pub mod image;
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
