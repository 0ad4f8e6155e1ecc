//! Devices a test VM drives itself: PCI configuration space (mechanism #1,
//! ports 0xCF8/0xCFC), device registers in memory BARs, and a DMA area
//! (memory whose physical address the guest hands to a device: the boot
//! tables map physical = virtual, so a static's address is its physical
//! address).

use core::cell::UnsafeCell;

/// Bytes of the DMA area.
pub const DMA_BYTES: usize = 512 * 1024;

#[repr(C, align(4096))]
struct DmaArea(UnsafeCell<[u8; DMA_BYTES]>);

// SAFETY: a test VM runs one CPU; the area is reached only through the
// volatile accessors below and by the device.
unsafe impl Sync for DmaArea {}

static DMA: DmaArea = DmaArea(UnsafeCell::new([0; DMA_BYTES]));

/// The DMA area's physical address (page-aligned, [`DMA_BYTES`] long).
pub fn dma_area() -> u64 {
    DMA.0.get() as u64
}

/// Whether `address..address + size` lies in the DMA area or at or above
/// 3 GiB (where devices' registers are): the only places the accessors
/// below touch, so they cannot write over the program.
fn allowed(address: u64, size: u64) -> bool {
    let dma = dma_area();
    (address >= dma && address + size <= dma + DMA_BYTES as u64)
        || (address >= 0xc000_0000 && address + size <= 1 << 32)
}

macro_rules! accessors {
    ($read:ident, $write:ident, $type:ty) => {
        /// A volatile read at physical `address` (in the DMA area or a
        /// device's registers above 3 GiB; elsewhere all-ones).
        pub fn $read(address: u64) -> $type {
            if !allowed(address, size_of::<$type>() as u64) {
                return <$type>::MAX;
            }
            // SAFETY: identity-mapped (boot tables), naturally sized, in
            // the DMA area or device memory (checked), neither of which
            // holds a Rust object.
            unsafe { (address as *const $type).read_volatile() }
        }

        /// A volatile write at physical `address` (as the read; elsewhere
        /// ignored).
        pub fn $write(address: u64, value: $type) {
            if !allowed(address, size_of::<$type>() as u64) {
                return;
            }
            // SAFETY: as for the read.
            unsafe { (address as *mut $type).write_volatile(value) }
        }
    };
}

accessors!(read8, write8, u8);
accessors!(read16, write16, u16);
accessors!(read32, write32, u32);
accessors!(read64, write64, u64);

/// The dword at `offset` of bus 0's `device`, function `function`.
pub fn pci_read32(device: u8, function: u8, offset: u8) -> u32 {
    let address = pci_address(device, function, offset);
    // SAFETY: the two configuration ports only select and read a register.
    unsafe {
        crate::arch::outl(0xcf8, address);
        crate::arch::inl(0xcfc)
    }
}

/// Writes the dword at `offset` of bus 0's `device`, `function`.
pub fn pci_write32(device: u8, function: u8, offset: u8, value: u32) {
    let address = pci_address(device, function, offset);
    // SAFETY: configuration writes change only the function's registers.
    unsafe {
        crate::arch::outl(0xcf8, address);
        crate::arch::outl(0xcfc, value);
    }
}

/// The configuration address (port 0xCF8) of a dword on bus 0.
fn pci_address(device: u8, function: u8, offset: u8) -> u32 {
    1 << 31
        | u32::from(device & 0x1f) << 11
        | u32::from(function & 7) << 8
        | u32::from(offset & 0xfc)
}

/// The byte at `offset` of a function's configuration space.
pub fn pci_read8(device: u8, function: u8, offset: u8) -> u8 {
    (pci_read32(device, function, offset) >> (8 * (offset & 3))) as u8
}
