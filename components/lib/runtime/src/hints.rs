//! A VM's guest-hints page, as a component the system grants it to (the
//! QoS controller) sees it: one page the guest writes and the core maps
//! here read-only (`microvisor_abi::spec::MemoryKind::GuestHints`), named
//! after the VM's world switcher. Reads are volatile 32-bit loads: the
//! guest changes the page at any time, and the reader never writes it.

use microvisor_abi::start::ResourceView;

use crate::Start;

/// The guest-hints page of one VM.
#[derive(Clone, Copy, Debug)]
pub struct GuestHints {
    base: *const u32,
}

impl GuestHints {
    /// The page of the VM whose world switcher is `switcher`, if the
    /// system grants it.
    pub fn open(start: &Start, switcher: &str) -> Option<Self> {
        start.views().find_map(|(name, view)| match view {
            ResourceView::GuestHints { address } if name == switcher => Some(Self {
                base: address as *const u32,
            }),
            _ => None,
        })
    }

    /// The little-endian `u32` at byte `offset` of the page (4-aligned;
    /// `None` outside the page or unaligned).
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset + 4 > microvisor_abi::PAGE_SIZE as usize {
            return None;
        }
        // SAFETY: the core maps the whole page readable at `base` for the
        // life of this component (the start page says so); the offset is
        // inside it and aligned; a volatile read of a `u32` that the guest
        // may write concurrently yields some value it wrote, never
        // undefined behaviour on this target.
        Some(u32::from_le(unsafe {
            core::ptr::read_volatile(self.base.add(offset / 4))
        }))
    }
}
