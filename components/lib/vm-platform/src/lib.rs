//! The world switcher's pure logic: everything about running a guest that
//! does not need the core, so it is tested on the host.
//!
//! - [`bundle`]: guest bundles, a kernel, initrd and command line packed
//!   as one boot-image entry.
//! - [`layout`]: the guest-physical memory map (RAM, reserved, ACPI) and
//!   the placement of everything the loaders put into guest RAM.
//! - [`elf`]: ELF32 and ELF64 x86 executables: checked loadable segments
//!   by physical address, and notes.
//! - [`image`]: reading a guest's ELF image and loading its segments into
//!   guest memory at their physical addresses, refusing anything that does
//!   not fit.
//! - [`linux`]: the Linux boot protocol for a bzImage: the setup header,
//!   the zero page with its e820 map, and the 64-bit entry.
//! - [`multiboot`]: multiboot v1 for ELF32/ELF64 kernels and kernels with
//!   address fields: the information structure and the 32-bit entry.
//! - [`pvh`]: PVH entry for an ELF kernel with the Xen PHYS32_ENTRY note:
//!   `hvm_start_info` with modules and memory map, the 32-bit entry.
//! - [`setup`]: the initial CPU state for 16-bit real-mode, 32-bit
//!   protected-mode and 64-bit long-mode entry, with the GDT every entry
//!   shares and the page tables long mode needs.
//! - [`cpuid`]: the CPUID policy: what the guest really gets, leaf by
//!   leaf, with the hypervisor leaves.
//! - [`uart`]: the 16550A (COM1) whose lines go to the system log, with
//!   its receive FIFO and interrupt line.
//! - [`msr`]: the MSRs a guest may read and write, as CPUID says they
//!   exist; the LAPIC's handed to its model, `#GP` for the rest.
//! - [`clock`]: device clocks against the TSC, for timers that compute
//!   their counters instead of ticking.
//! - [`lapic`]: the local APIC (xAPIC page and x2APIC MSRs, the timer in
//!   one-shot, periodic and TSC-deadline modes).
//! - [`ioapic`]: the IOAPIC's 24 redirection entries, delivering to the
//!   LAPIC.
//! - [`pic`]: the 8259 pair, the LAPIC's ExtINT source in virtual-wire
//!   mode.
//! - [`pit`]: the 8254 timer with port 0x61, for IRQ0 and TSC calibration.
//! - [`interrupts`]: the arbiter that decides what to inject before each
//!   entry, and the [`interrupts::Platform`] that wires the four together.
//! - [`guest_paging`]: the guest's own address translation (segments, every
//!   paging mode), typed `#PF`s, and fetching the instruction at CS:RIP.
//! - [`mmio`]: decoding the instruction that faulted on a device page into a
//!   typed access, and applying its effect to the registers and flags.
//! - [`acpi`]: the VM's ACPI tables (RSDP, XSDT, FADT, MADT, DSDT), built
//!   with [`aml`] into a buffer by way of [`writer`].
//! - [`power`]: the power-off and reset ports the FADT names.
//! - [`pm_timer`]: the ACPI PM timer, Linux's TSC calibration reference.
//! - [`pvclock`]: the paravirtual clock (KVM's `kvmclock` ABI) through
//!   which a guest learns its TSC rate and the wall-clock time.
//! - [`rtc`]: the CMOS real-time clock and CMOS memory at ports 0x70/0x71.
//! - [`fw_cfg`]: QEMU's firmware configuration device at ports 0x510/0x511.
//! - [`pci`]: the PCI host bridge on configuration mechanism #1 and the
//!   slots for PCI functions.
//! - [`virtio_blk`]: a virtio-blk PCI function (one queue, MSI-X and
//!   INTx) whose requests the world switcher carries to the block store.
//!
//! The world-switcher component wires these to the vCPU exits.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod acpi;
pub mod aml;
pub mod bundle;
pub mod clock;
pub mod cpuid;
pub mod cr3;
pub mod cr8;
pub mod disk_requests;
pub mod elf;
pub mod fw_cfg;
pub mod guest_paging;
pub mod image;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod layout;
mod le;
pub mod linux;
pub mod mmio;
pub mod msr;
pub mod multiboot;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod pm_timer;
pub mod power;
pub mod pvclock;
pub mod pvh;
pub mod rtc;
pub mod setup;
pub mod uart;
pub mod virtio_blk;
pub mod virtio_net;
pub mod virtio_pci;
pub mod writer;

// The guests' interface names the hints page's address; the core maps it
// there.
const _: () = assert!(guest_api::hints::ADDRESS == microvisor_abi::vcpu::HINTS_GUEST_PHYSICAL);

/// How much RAM the guest has below and above the 4 GiB line (what
/// firmware reports in CMOS and fw_cfg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRam {
    pub below_4g: u64,
    pub above_4g: u64,
}

/// Why a device model did not perform an MMIO access. The world switcher
/// logs it, drops a write and answers a read with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioIgnored {
    /// Not an access size the registers allow.
    Size(u8),
    /// Not aligned to its size.
    Misaligned(u64),
    /// Outside the device's window.
    OutOfRange(u64),
    /// The device does not decode its window now (a LAPIC globally
    /// disabled or in x2APIC mode).
    NotDecoded,
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

/// Read access to guest-physical memory: the guest's page tables and
/// instructions, and the guest-RAM side of a string instruction.
pub trait GuestRead {
    /// Copies the bytes at `address` into `into`; `false` if any of them
    /// lies outside guest RAM (then `into` holds nothing meaningful).
    fn read(&self, address: guest_paging::GuestPhysical, into: &mut [u8]) -> bool;

    /// The little-endian `u64` at `address` (a page-table entry), `None`
    /// outside guest RAM. Implementations may read an aligned one in a
    /// single access: the page walk reads one per level.
    fn read_u64(&self, address: guest_paging::GuestPhysical) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.read(address, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }

    /// The little-endian `u32` at `address` (a 32-bit paging entry).
    fn read_u32(&self, address: guest_paging::GuestPhysical) -> Option<u32> {
        let mut bytes = [0u8; 4];
        self.read(address, &mut bytes)
            .then(|| u32::from_le_bytes(bytes))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use microvisor_abi::vcpu::VcpuState;
    use zerocopy::FromZeros;

    use crate::layout::{Boot, BootFiles, GuestLayout, MemoryMap};

    /// Guest memory in a vector.
    pub struct VecMemory(pub Vec<u8>);

    /// Writes virtqueue descriptor `index` of the table at `table`: a
    /// buffer of `length` bytes at `address`, its flags and next index.
    pub fn descriptor(
        memory: &mut VecMemory,
        table: u64,
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
        let at = table + 16 * u64::from(index);
        memory.0[at as usize..at as usize + 16].copy_from_slice(&raw);
    }

    /// Guest memory that counts the writes and fills it is asked for (so a
    /// test can check that a refused load wrote nothing).
    pub struct Counting {
        pub memory: VecMemory,
        pub writes: usize,
    }

    impl Counting {
        /// `size` zeroed bytes (allocated lazily by the host).
        pub fn zeroed(size: usize) -> Self {
            Self {
                memory: VecMemory(vec![0; size]),
                writes: 0,
            }
        }
    }

    /// The guest memory the loader tests use: 64 MiB, the PC map.
    pub const MEMORY: u64 = 64 << 20;

    pub fn pc_layout() -> GuestLayout {
        GuestLayout::new(MemoryMap::pc(MEMORY).unwrap())
    }

    /// Runs `load` on a fresh vCPU state, fresh zeroed memory of `size`
    /// bytes and `layout`; checks that a refusal wrote nothing and placed
    /// nothing. Returns the result, the memory and the state.
    pub fn checked_load<T, E>(
        layout: &mut GuestLayout,
        size: u64,
        load: impl FnOnce(&mut VcpuState, &mut Counting, &mut GuestLayout) -> Result<T, E>,
    ) -> (Result<T, E>, Counting, VcpuState) {
        let mut memory = Counting::zeroed(size as usize);
        let mut state = VcpuState::new_zeroed();
        let before = *layout;
        let result = load(&mut state, &mut memory, layout);
        if result.is_err() {
            assert_eq!(memory.writes, 0, "a refused load writes nothing");
            assert_eq!(*layout, before, "a refused load places nothing");
        }
        (result, memory, state)
    }

    /// [`checked_load`] of a Linux or PVH loader with [`MEMORY`] bytes.
    pub fn load_files<E>(
        layout: &mut GuestLayout,
        files: &BootFiles,
        loader: impl FnOnce(
            &mut VcpuState,
            &mut Counting,
            &mut GuestLayout,
            &BootFiles,
        ) -> Result<Boot, E>,
    ) -> (Result<Boot, E>, Counting, VcpuState) {
        checked_load(layout, MEMORY, |state, memory, layout| {
            loader(state, memory, layout, files)
        })
    }

    impl super::Memory for Counting {
        fn size(&self) -> u64 {
            self.memory.size()
        }
        fn write(&mut self, address: u64, bytes: &[u8]) -> bool {
            self.writes += 1;
            self.memory.write(address, bytes)
        }
        fn fill(&mut self, address: u64, length: u64, value: u8) -> bool {
            self.writes += 1;
            self.memory.fill(address, length, value)
        }
    }

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
