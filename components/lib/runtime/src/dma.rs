//! DMA buffers, for driver components the system gives them to (`dma =
//! [{ size = "64KiB" }]` in the system file): physically contiguous,
//! zeroed memory the core takes at the component's first start and keeps
//! for it across restarts, mapped into its device window and named `dma`
//! on the start page with its physical address — the address a device is
//! given. A [`Buffer`] reads and writes it with volatile accesses (the
//! device reads and writes it too) and refuses offsets outside it, so
//! drivers need no `unsafe`.
//!
//! Without an IOMMU a device a driver programs can reach all of physical
//! memory, not only these buffers (`docs/CORE.md`).

use microvisor_abi::start::ResourceView;

use crate::mmio::register_access;

/// One DMA buffer, as mapped.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    base: u64,
    size: u64,
    physical: u64,
}

impl Buffer {
    /// The `index`-th DMA buffer of this component (in the order the
    /// system file lists them), if it has one.
    pub fn granted(start: &crate::Start, index: usize) -> Option<Self> {
        start
            .views()
            .filter_map(|(_, view)| match view {
                ResourceView::Dma {
                    address,
                    size,
                    physical,
                } => Some(Self {
                    base: address,
                    size,
                    physical,
                }),
                _ => None,
            })
            .nth(index)
    }

    /// Bytes in the buffer.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The physical address of `offset` (for a device), if it lies inside.
    pub fn physical(&self, offset: u64) -> Option<u64> {
        (offset < self.size).then_some(self.physical + offset)
    }

    /// The address of `bytes` at `offset`, if they lie inside and are
    /// aligned to their size.
    fn at(&self, offset: u64, bytes: u64) -> Option<u64> {
        let end = offset.checked_add(bytes)?;
        (end <= self.size && offset.is_multiple_of(bytes)).then_some(self.base + offset)
    }

    /// The range `offset .. offset + length`, if it lies inside.
    fn span(&self, offset: u64, length: usize) -> Option<u64> {
        let end = offset.checked_add(length as u64)?;
        (end <= self.size).then_some(self.base + offset)
    }

    register_access!(read8, write8, u8);
    register_access!(read16, write16, u16);
    register_access!(read32, write32, u32);
    register_access!(read64, write64, u64);

    /// Copies `into.len()` bytes from `offset`; `false` (nothing copied)
    /// when they do not lie inside. Eight bytes per volatile load where
    /// both sides allow it.
    pub fn read(&self, offset: u64, into: &mut [u8]) -> bool {
        let Some(address) = self.span(offset, into.len()) else {
            return false;
        };
        let mut done = 0;
        if address.is_multiple_of(8) {
            for chunk in into.chunks_exact_mut(8) {
                // SAFETY: inside the buffer (checked above) and 8-aligned;
                // the core mapped it for this component and no Rust object
                // covers it.
                let word = unsafe { ((address + done as u64) as *const u64).read_volatile() };
                chunk.copy_from_slice(&word.to_le_bytes());
                done += 8;
            }
        }
        for (index, byte) in into.iter_mut().enumerate().skip(done) {
            // SAFETY: as above, one byte.
            *byte = unsafe { ((address + index as u64) as *const u8).read_volatile() };
        }
        true
    }

    /// Copies `from` to `offset`; `false` (nothing copied) when it does not
    /// fit. Eight bytes per volatile store where both sides allow it.
    pub fn write(&self, offset: u64, from: &[u8]) -> bool {
        let Some(address) = self.span(offset, from.len()) else {
            return false;
        };
        let mut done = 0;
        if address.is_multiple_of(8) {
            for chunk in from.chunks_exact(8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                // SAFETY: as in `read`.
                unsafe {
                    ((address + done as u64) as *mut u64).write_volatile(u64::from_le_bytes(word))
                };
                done += 8;
            }
        }
        for (index, byte) in from.iter().enumerate().skip(done) {
            // SAFETY: as in `read`, one byte.
            unsafe { ((address + index as u64) as *mut u8).write_volatile(*byte) };
        }
        true
    }
}
