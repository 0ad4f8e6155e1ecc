//! Device memory, for driver components the system grants it to (`mmio =
//! [...]` in the system file): the core maps each grant uncached into the
//! component's device window and names it `mmio` on the start page. A
//! [`Region`] reads and writes its registers with volatile accesses and
//! refuses offsets outside it, so drivers need no `unsafe`.

use microvisor_abi::start::ResourceView;

/// A read and a write method for one register width: `None`/`false`
/// outside the region or unaligned.
macro_rules! register_access {
    ($read:ident, $write:ident, $type:ty) => {
        #[doc = concat!("The `", stringify!($type), "` register at `offset`.")]
        pub fn $read(&self, offset: u64) -> Option<$type> {
            let address = self.at(offset, size_of::<$type>() as u64)?;
            // SAFETY: the core mapped the whole region for this component
            // (the start page says where: device memory uncached, a DMA
            // buffer as its own memory); the address is inside it and
            // aligned; the region is no Rust object of the program, so a
            // volatile access aliases nothing.
            Some(unsafe { (address as *const $type).read_volatile() })
        }

        #[doc = concat!("Writes the `", stringify!($type), "` register at `offset`.")]
        pub fn $write(&self, offset: u64, value: $type) -> bool {
            let Some(address) = self.at(offset, size_of::<$type>() as u64) else {
                return false;
            };
            // SAFETY: as the read; the write reaches the region only.
            unsafe { (address as *mut $type).write_volatile(value) };
            true
        }
    };
}

pub(crate) use register_access;

/// One granted device-memory region, as mapped.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: u64,
    size: u64,
}

impl Region {
    /// The `index`-th device-memory grant of this component (in the order
    /// the system file lists them), if it has one.
    pub fn granted(start: &crate::Start, index: usize) -> Option<Self> {
        start
            .views()
            .filter_map(|(name, view)| match view {
                ResourceView::Memory { address, size } if name == "mmio" => Some(Self {
                    base: address,
                    size,
                }),
                _ => None,
            })
            .nth(index)
    }

    /// The device-memory resource called `name` (a PCI function's `bar4`,
    /// say).
    pub fn named(start: &crate::Start, name: &str) -> Option<Self> {
        match start
            .resource(name, microvisor_abi::start::ResourceKind::Memory)?
            .view()?
        {
            ResourceView::Memory { address, size } => Some(Self {
                base: address,
                size,
            }),
            _ => None,
        }
    }

    /// Bytes in the region.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The address just past the region (a guard page the core leaves
    /// unmapped).
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// The address of `bytes` at `offset`, if they lie inside and are
    /// aligned to their size.
    fn at(&self, offset: u64, bytes: u64) -> Option<u64> {
        let end = offset.checked_add(bytes)?;
        (end <= self.size && offset.is_multiple_of(bytes)).then_some(self.base + offset)
    }

    register_access!(read8, write8, u8);
    register_access!(read16, write16, u16);
    register_access!(read32, write32, u32);
    register_access!(read64, write64, u64);
}
