//! Guest-physical layout for the loaders: which ranges are RAM (the
//! [`MemoryMap`] the caller declares, also what the guest is told in its
//! e820-style map) and what a loader placed where (the [`GuestLayout`]).
//!
//! Invariants: a [`MemoryMap`] is sorted, its regions are non-empty, do not
//! overflow or overlap, and every RAM region lies inside the guest memory it
//! was built for. A [`GuestLayout`]'s placements lie wholly in RAM and never
//! overlap each other; nothing is placed at guest-physical page 0 unless a
//! caller asks for it by address (0 means "absent" in the boot structures).
//! The caller decides where devices live by leaving those ranges out of RAM
//! (see [`MemoryMap::pc`]); the loaders only use RAM, so a caller that places
//! ACPI tables or device windows first, or looks at [`GuestLayout::placed`]
//! after a loader ran, never collides with what a loader wrote.

use microvisor_abi::vcpu::{VcpuState, gpr};

use crate::Memory;
use crate::setup::{self, Gdt};

/// Regions a [`MemoryMap`] holds at most.
pub const MAX_REGIONS: usize = 32;
/// Placements a [`GuestLayout`] holds at most.
pub const MAX_PLACEMENTS: usize = 32;
/// Where loaders start looking for room for small structures: above page 0.
pub const LOWEST_PLACEMENT: u64 = 0x1000;
/// The first byte above 32-bit physical addresses.
pub const FOUR_GIB: u64 = 1 << 32;
/// Page size and the alignment of everything the loaders place.
pub const PAGE: u64 = 0x1000;

/// What a range of guest-physical addresses is, with the e820 / ACPI
/// address-range type codes the guest is told (the same codes in Linux's
/// e820, Xen's `hvm_memmap_table_entry` and the multiboot memory map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Usable RAM (type 1): the only kind loaders place anything in.
    Ram,
    /// Reserved (type 2): device windows, firmware, holes.
    Reserved,
    /// ACPI tables, reclaimable after they are read (type 3).
    Acpi,
    /// ACPI non-volatile storage (type 4).
    Nvs,
    /// Defective RAM (type 5).
    Unusable,
}

impl RegionKind {
    /// The e820 type code.
    pub const fn e820_type(self) -> u32 {
        match self {
            Self::Ram => 1,
            Self::Reserved => 2,
            Self::Acpi => 3,
            Self::Nvs => 4,
            Self::Unusable => 5,
        }
    }
}

/// One range of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub size: u64,
    pub kind: RegionKind,
}

impl Region {
    pub const fn new(start: u64, size: u64, kind: RegionKind) -> Self {
        Self { start, size, kind }
    }

    /// One past the last byte (never overflows in a validated map).
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// What a placement holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The kernel: a loaded segment, or the memory it needs to start
    /// (a bzImage's `init_size`).
    Kernel,
    /// The GDT, and for a 64-bit entry the identity page tables.
    BootTables,
    /// The boot information block: Linux's zero page, PVH's
    /// `hvm_start_info` with its lists, the multiboot information with its
    /// lists.
    BootInfo,
    /// Command lines and other strings the boot information points to.
    CommandLine,
    /// An initrd or boot module.
    Module,
    /// Something the caller placed (ACPI tables, say), with its own tag.
    Caller(u32),
}

/// A range a loader (or the caller) occupied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub item: Item,
    pub start: u64,
    pub size: u64,
}

impl Placement {
    pub const fn new(item: Item, start: u64, size: u64) -> Self {
        Self { item, start, size }
    }

    pub const fn end(&self) -> u64 {
        self.start + self.size
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end() && self.start < end
    }
}

/// Why a map or a placement was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    TooManyRegions {
        count: usize,
        max: usize,
    },
    /// Region `index` has size 0.
    EmptyRegion {
        index: usize,
    },
    /// Region `index` runs past the end of the 64-bit address space.
    RegionOverflows {
        index: usize,
    },
    /// Region `index` starts before region `index - 1` ends (unsorted or
    /// overlapping).
    RegionsOverlap {
        index: usize,
    },
    /// RAM region `index` ends at `end`, past the `memory` bytes of guest
    /// memory that back it.
    RamOutsideMemory {
        index: usize,
        end: u64,
        memory: u64,
    },
    /// The map has no RAM.
    NoRam,
    /// Guest memory has `memory` bytes, fewer than the map was built for.
    MemorySmaller {
        memory: u64,
        map: u64,
    },
    TooManyPlacements {
        max: usize,
    },
    /// A zero-sized `item`.
    EmptyPlacement {
        item: Item,
    },
    /// An alignment that is not a power of two.
    BadAlignment {
        item: Item,
        align: u64,
    },
    /// `item` at `start`, `size` bytes, is not wholly in RAM.
    NotInRam {
        item: Item,
        start: u64,
        size: u64,
    },
    /// `item` at `start`, `size` bytes, overlaps `with`.
    Overlap {
        item: Item,
        start: u64,
        size: u64,
        with: Placement,
    },
    /// No free RAM for `size` bytes of `item` between `above` and `below`.
    NoRoom {
        item: Item,
        size: u64,
        above: u64,
        below: u64,
    },
    /// Guest memory refused a write the layout allowed (the memory is not
    /// the one the layout was built for).
    MemoryRefused {
        address: u64,
        size: u64,
    },
}

impl core::fmt::Display for Item {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Kernel => write!(f, "the kernel"),
            Self::BootTables => write!(f, "the boot GDT and page tables"),
            Self::BootInfo => write!(f, "the boot information"),
            Self::CommandLine => write!(f, "the command line"),
            Self::Module => write!(f, "the initrd or module"),
            Self::Caller(tag) => write!(f, "caller item {tag}"),
        }
    }
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooManyRegions { count, max } => {
                write!(
                    f,
                    "the memory map has {count} regions, at most {max} are supported"
                )
            }
            Self::EmptyRegion { index } => write!(f, "memory-map region {index} is empty"),
            Self::RegionOverflows { index } => {
                write!(
                    f,
                    "memory-map region {index} runs past the 64-bit address space"
                )
            }
            Self::RegionsOverlap { index } => write!(
                f,
                "memory-map region {index} starts before the previous one ends (unsorted or overlapping)"
            ),
            Self::RamOutsideMemory { index, end, memory } => write!(
                f,
                "RAM region {index} ends at {end:#x}, past the {memory:#x} bytes of guest memory"
            ),
            Self::NoRam => write!(f, "the memory map has no RAM"),
            Self::MemorySmaller { memory, map } => write!(
                f,
                "guest memory has {memory:#x} bytes, the memory map needs {map:#x}"
            ),
            Self::TooManyPlacements { max } => {
                write!(f, "more than {max} placements in guest memory")
            }
            Self::EmptyPlacement { item } => write!(f, "{item} is empty"),
            Self::BadAlignment { item, align } => {
                write!(f, "{item}: alignment {align:#x} is not a power of two")
            }
            Self::NotInRam { item, start, size } => write!(
                f,
                "{item} at {start:#x} ({size:#x} bytes) does not lie in guest RAM"
            ),
            Self::Overlap {
                item,
                start,
                size,
                with,
            } => write!(
                f,
                "{item} at {start:#x} ({size:#x} bytes) overlaps {} at {:#x} ({:#x} bytes)",
                with.item, with.start, with.size
            ),
            Self::NoRoom {
                item,
                size,
                above,
                below,
            } => write!(
                f,
                "no free RAM for {item} ({size:#x} bytes) between {above:#x} and {below:#x}"
            ),
            Self::MemoryRefused { address, size } => {
                write!(f, "guest memory refused {size:#x} bytes at {address:#x}")
            }
        }
    }
}

/// The guest-physical memory map: RAM, reserved and ACPI ranges, sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    count: usize,
    memory_size: u64,
}

impl MemoryMap {
    /// Checks `regions` (sorted by address, non-empty, non-overlapping, RAM
    /// inside the `memory_size` bytes of guest memory) and keeps a copy.
    /// Non-RAM regions may lie past guest memory (device windows).
    pub fn new(regions: &[Region], memory_size: u64) -> Result<Self, LayoutError> {
        if regions.len() > MAX_REGIONS {
            return Err(LayoutError::TooManyRegions {
                count: regions.len(),
                max: MAX_REGIONS,
            });
        }
        let mut previous_end = 0;
        for (index, region) in regions.iter().enumerate() {
            if region.size == 0 {
                return Err(LayoutError::EmptyRegion { index });
            }
            let Some(end) = region.start.checked_add(region.size) else {
                return Err(LayoutError::RegionOverflows { index });
            };
            if index > 0 && region.start < previous_end {
                return Err(LayoutError::RegionsOverlap { index });
            }
            if region.kind == RegionKind::Ram && end > memory_size {
                return Err(LayoutError::RamOutsideMemory {
                    index,
                    end,
                    memory: memory_size,
                });
            }
            previous_end = end;
        }
        if !regions.iter().any(|r| r.kind == RegionKind::Ram) {
            return Err(LayoutError::NoRam);
        }
        let mut map = Self {
            regions: [Region::new(0, 0, RegionKind::Reserved); MAX_REGIONS],
            count: regions.len(),
            memory_size,
        };
        map.regions[..regions.len()].copy_from_slice(regions);
        Ok(map)
    }

    /// The PC convention for `memory_size` bytes of contiguous guest memory:
    /// RAM below the EBDA (0..0x9fc00), reserved 0x9fc00..1 MiB (EBDA, VGA
    /// window, BIOS), RAM from 1 MiB up to the memory's end or 0xfec00000,
    /// whichever is lower, and reserved 0xfec00000..4 GiB for the IOAPIC,
    /// LAPIC and other devices. Memory past 0xfec00000 is not offered (it
    /// would sit under the device window).
    pub fn pc(memory_size: u64) -> Result<Self, LayoutError> {
        const EBDA: u64 = 0x9_fc00;
        const HIGH: u64 = 0x10_0000;
        const DEVICES: u64 = 0xfec0_0000;
        let mut regions = [Region::new(0, 0, RegionKind::Reserved); 4];
        let mut count = 0;
        let mut push = |region: Region| {
            if region.size > 0 {
                regions[count] = region;
                count += 1;
            }
        };
        push(Region::new(0, memory_size.min(EBDA), RegionKind::Ram));
        push(Region::new(EBDA, HIGH - EBDA, RegionKind::Reserved));
        let high_end = memory_size.min(DEVICES);
        push(Region::new(
            HIGH,
            high_end.saturating_sub(HIGH),
            RegionKind::Ram,
        ));
        push(Region::new(
            DEVICES,
            FOUR_GIB - DEVICES,
            RegionKind::Reserved,
        ));
        Self::new(&regions[..count], memory_size)
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.count]
    }

    /// The guest memory size the map was checked against.
    pub const fn memory_size(&self) -> u64 {
        self.memory_size
    }

    /// Maximal runs of adjacent RAM regions, as `(start, end)`, ascending.
    pub fn ram_runs(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        let regions = self.regions();
        regions.iter().enumerate().filter_map(move |(i, region)| {
            let continues = |r: &Region, next: &Region| {
                r.kind == RegionKind::Ram && next.kind == RegionKind::Ram && r.end() == next.start
            };
            if region.kind != RegionKind::Ram || (i > 0 && continues(&regions[i - 1], region)) {
                return None;
            }
            let mut end = region.end();
            for pair in regions[i..].windows(2) {
                if !continues(&pair[0], &pair[1]) {
                    break;
                }
                end = pair[1].end();
            }
            Some((region.start, end))
        })
    }

    /// Whether `start..end` lies wholly in RAM.
    pub fn is_ram(&self, start: u64, end: u64) -> bool {
        self.ram_runs()
            .any(|(run_start, run_end)| run_start <= start && end <= run_end)
    }
}

/// The memory map plus what has been placed in guest RAM so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    map: MemoryMap,
    placed: [Placement; MAX_PLACEMENTS],
    count: usize,
}

const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}

impl GuestLayout {
    /// An empty layout over `map`.
    pub const fn new(map: MemoryMap) -> Self {
        Self {
            map,
            placed: [Placement {
                item: Item::Kernel,
                start: 0,
                size: 0,
            }; MAX_PLACEMENTS],
            count: 0,
        }
    }

    pub const fn map(&self) -> &MemoryMap {
        &self.map
    }

    /// Everything placed so far, in the order it was placed.
    pub fn placed(&self) -> &[Placement] {
        &self.placed[..self.count]
    }

    /// The first placement `start..end` overlaps, if any.
    pub fn overlapping(&self, start: u64, end: u64) -> Option<Placement> {
        self.placed()
            .iter()
            .copied()
            .find(|p| p.overlaps(start, end))
    }

    /// Whether `start..start + size` is RAM and free.
    pub fn is_free(&self, start: u64, size: u64) -> bool {
        start.checked_add(size).is_some_and(|end| {
            self.map.is_ram(start, end) && self.overlapping(start, end).is_none()
        })
    }

    /// Refuses guest memory smaller than the map (so every write the layout
    /// allows lands).
    pub fn check_memory(&self, memory: &impl Memory) -> Result<(), LayoutError> {
        if memory.size() < self.map.memory_size {
            return Err(LayoutError::MemorySmaller {
                memory: memory.size(),
                map: self.map.memory_size,
            });
        }
        Ok(())
    }

    fn record(&mut self, item: Item, start: u64, size: u64) -> Result<(), LayoutError> {
        let slot = self
            .placed
            .get_mut(self.count)
            .ok_or(LayoutError::TooManyPlacements {
                max: MAX_PLACEMENTS,
            })?;
        *slot = Placement::new(item, start, size);
        self.count += 1;
        Ok(())
    }

    /// Places `item` at exactly `start`.
    pub fn place_at(&mut self, item: Item, start: u64, size: u64) -> Result<(), LayoutError> {
        if size == 0 {
            return Err(LayoutError::EmptyPlacement { item });
        }
        let not_in_ram = LayoutError::NotInRam { item, start, size };
        let end = start.checked_add(size).ok_or(not_in_ram)?;
        if !self.map.is_ram(start, end) {
            return Err(not_in_ram);
        }
        if let Some(with) = self.overlapping(start, end) {
            return Err(LayoutError::Overlap {
                item,
                start,
                size,
                with,
            });
        }
        self.record(item, start, size)
    }

    fn check_request(item: Item, size: u64, align: u64) -> Result<(), LayoutError> {
        if size == 0 {
            return Err(LayoutError::EmptyPlacement { item });
        }
        if !align.is_power_of_two() {
            return Err(LayoutError::BadAlignment { item, align });
        }
        Ok(())
    }

    /// Records what a search `found` between `above` and `below`.
    fn take(
        &mut self,
        item: Item,
        size: u64,
        found: Option<u64>,
        above: u64,
        below: u64,
    ) -> Result<u64, LayoutError> {
        let start = found.ok_or(LayoutError::NoRoom {
            item,
            size,
            above,
            below,
        })?;
        self.record(item, start, size)?;
        Ok(start)
    }

    /// Places `item` at the lowest `align`-aligned free RAM address at or
    /// above `above` whose end is at or below `below`; returns it.
    pub fn place_low(
        &mut self,
        item: Item,
        size: u64,
        align: u64,
        above: u64,
        below: u64,
    ) -> Result<u64, LayoutError> {
        Self::check_request(item, size, align)?;
        let runs = self.map.ram_runs();
        let found = runs.into_iter().find_map(|(run_start, run_end)| {
            let limit = run_end.min(below);
            let mut candidate = align_up(run_start.max(above), align)?;
            loop {
                let end = candidate.checked_add(size).filter(|&end| end <= limit)?;
                match self.overlapping(candidate, end) {
                    None => return Some(candidate),
                    Some(taken) => candidate = align_up(taken.end(), align)?,
                }
            }
        });
        self.take(item, size, found, above, below)
    }

    /// Places `item` at the highest `align`-aligned free RAM address at or
    /// above `above` whose end is at or below `below`; returns it.
    pub fn place_high(
        &mut self,
        item: Item,
        size: u64,
        align: u64,
        above: u64,
        below: u64,
    ) -> Result<u64, LayoutError> {
        Self::check_request(item, size, align)?;
        let found = self.map.ram_runs().rev().find_map(|(run_start, run_end)| {
            let mut candidate = run_end.min(below).checked_sub(size)? & !(align - 1);
            loop {
                if candidate < run_start.max(above) {
                    return None;
                }
                match self.overlapping(candidate, candidate + size) {
                    None => return Some(candidate),
                    Some(taken) => candidate = taken.start.checked_sub(size)? & !(align - 1),
                }
            }
        });
        self.take(item, size, found, above, below)
    }
}

impl GuestLayout {
    /// The loaders' place for small boot structures (tables, boot
    /// information, strings): the lowest free page-aligned RAM from
    /// [`LOWEST_PLACEMENT`] up, below 4 GiB so 32-bit pointers and entries
    /// reach it.
    pub fn place_boot(&mut self, item: Item, size: u64) -> Result<u64, LayoutError> {
        self.place_low(item, size, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
    }

    /// The loaders' place for an initrd or module of `size` bytes: the
    /// highest free page-aligned RAM whose end is at or below `below` (and
    /// 4 GiB). `None` for an empty module, which is not placed.
    pub fn place_module(&mut self, size: u64, below: u64) -> Result<Option<u64>, LayoutError> {
        if size == 0 {
            return Ok(None);
        }
        let below = below.min(FOUR_GIB);
        self.place_high(Item::Module, size, PAGE, LOWEST_PLACEMENT, below)
            .map(Some)
    }
}

/// Writes `bytes` and a NUL at `address` (a C string [`GuestLayout`] gave
/// `bytes.len() + 1` bytes for).
pub(crate) fn write_string(
    memory: &mut impl Memory,
    address: u64,
    bytes: &[u8],
) -> Result<(), LayoutError> {
    write(memory, address, bytes)?;
    write(memory, address + bytes.len() as u64, &[0])
}

/// Writes `bytes` at `address`, turning a refusal into a typed error.
pub(crate) fn write(
    memory: &mut impl Memory,
    address: u64,
    bytes: &[u8],
) -> Result<(), LayoutError> {
    if memory.write(address, bytes) {
        Ok(())
    } else {
        Err(LayoutError::MemoryRefused {
            address,
            size: bytes.len() as u64,
        })
    }
}

/// Zeroes `size` bytes at `address`, turning a refusal into a typed error.
pub(crate) fn zero(memory: &mut impl Memory, address: u64, size: u64) -> Result<(), LayoutError> {
    if memory.fill(address, size, 0) {
        Ok(())
    } else {
        Err(LayoutError::MemoryRefused { address, size })
    }
}

/// `From` conversions so a loader's error can wrap the shared errors it
/// names (`Layout(LayoutError)`, `Elf(ElfError)`) and `?` them.
macro_rules! wrap_errors {
    ($error:ty { $($variant:ident($inner:ty)),+ $(,)? }) => {
        $(
            impl From<$inner> for $error {
                fn from(error: $inner) -> Self {
                    Self::$variant(error)
                }
            }
        )+
    };
}
pub(crate) use wrap_errors;

/// What a loader hands back besides the vCPU state it set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Where the guest starts (RIP).
    pub entry: u64,
    /// The boot information address passed in a register (RSI for Linux,
    /// EBX for PVH and multiboot).
    pub info: u64,
    /// The dirty mask for the first `VcpuRun`.
    pub dirty: u64,
}

impl Boot {
    /// Sets `state` for a 32-bit protected-mode entry at `entry` with `gdt`
    /// and the boot information's address `info` in EBX (PVH, multiboot).
    pub(crate) fn protected_mode(state: &mut VcpuState, gdt: Gdt, entry: u32, info: u64) -> Self {
        let dirty = setup::enter_protected_mode(state, gdt, entry);
        state.gpr[gpr::RBX] = info;
        Self {
            entry: u64::from(entry),
            info,
            dirty,
        }
    }
}

/// What the Linux and PVH loaders boot.
#[derive(Clone, Copy, Debug)]
pub struct BootFiles<'a> {
    /// The kernel file (a bzImage for Linux, an ELF for PVH).
    pub kernel: &'a [u8],
    /// The command line, without a NUL.
    pub cmdline: &'a [u8],
    /// The initrd (empty is none).
    pub initrd: &'a [u8],
    /// The ACPI RSDP's address to pass, if the caller built ACPI tables.
    pub rsdp: Option<u64>,
}

impl<'a> BootFiles<'a> {
    /// A kernel with a command line and an initrd, no RSDP.
    pub const fn new(kernel: &'a [u8], cmdline: &'a [u8], initrd: &'a [u8]) -> Self {
        Self {
            kernel,
            cmdline,
            initrd,
            rsdp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn layout(memory: u64) -> GuestLayout {
        GuestLayout::new(MemoryMap::pc(memory).unwrap())
    }

    #[test]
    fn pc_map_leaves_the_legacy_and_device_windows_out_of_ram() {
        let map = MemoryMap::pc(64 * MIB).unwrap();
        assert_eq!(
            map.regions(),
            &[
                Region::new(0, 0x9_fc00, RegionKind::Ram),
                Region::new(0x9_fc00, 0x6_0400, RegionKind::Reserved),
                Region::new(MIB, 63 * MIB, RegionKind::Ram),
                Region::new(0xfec0_0000, 0x140_0000, RegionKind::Reserved),
            ]
        );
        // 4 GiB of memory: RAM stops below the device window.
        let big = MemoryMap::pc(FOUR_GIB).unwrap();
        assert_eq!(big.regions()[2].end(), 0xfec0_0000);
        // Less than 640 KiB: no high RAM region at all.
        let tiny = MemoryMap::pc(0x8_0000).unwrap();
        assert_eq!(tiny.regions().len(), 3);
        assert!(tiny.is_ram(0x1000, 0x8_0000));
        assert!(!tiny.is_ram(0x1000, 0x8_0001));
    }

    #[test]
    fn maps_are_checked() {
        let ram = |start, size| Region::new(start, size, RegionKind::Ram);
        let reserved = |start, size| Region::new(start, size, RegionKind::Reserved);
        assert_eq!(
            MemoryMap::new(&[ram(0, 0)], MIB),
            Err(LayoutError::EmptyRegion { index: 0 })
        );
        assert_eq!(
            MemoryMap::new(&[ram(0, MIB), reserved(u64::MAX, 2)], MIB),
            Err(LayoutError::RegionOverflows { index: 1 })
        );
        assert_eq!(
            MemoryMap::new(&[ram(0, MIB), ram(MIB - 1, 2)], 4 * MIB),
            Err(LayoutError::RegionsOverlap { index: 1 })
        );
        assert_eq!(
            MemoryMap::new(&[ram(MIB, MIB), ram(0, MIB)], 4 * MIB),
            Err(LayoutError::RegionsOverlap { index: 1 })
        );
        assert_eq!(
            MemoryMap::new(&[ram(0, 2 * MIB)], MIB),
            Err(LayoutError::RamOutsideMemory {
                index: 0,
                end: 2 * MIB,
                memory: MIB
            })
        );
        assert_eq!(
            MemoryMap::new(&[reserved(0, MIB)], MIB),
            Err(LayoutError::NoRam)
        );
        let many = [ram(0, 1); MAX_REGIONS + 1];
        assert_eq!(
            MemoryMap::new(&many, MIB),
            Err(LayoutError::TooManyRegions {
                count: MAX_REGIONS + 1,
                max: MAX_REGIONS
            })
        );
        // Reserved regions may lie past guest memory.
        assert!(MemoryMap::new(&[ram(0, MIB), reserved(FOUR_GIB, MIB)], MIB).is_ok());
    }

    #[test]
    fn adjacent_ram_regions_form_one_run() {
        let ram = |start, size| Region::new(start, size, RegionKind::Ram);
        let map = MemoryMap::new(
            &[
                ram(0, MIB),
                ram(MIB, MIB),
                Region::new(2 * MIB, MIB, RegionKind::Acpi),
                ram(3 * MIB, MIB),
            ],
            4 * MIB,
        )
        .unwrap();
        let runs: Vec<_> = map.ram_runs().collect();
        assert_eq!(runs, [(0, 2 * MIB), (3 * MIB, 4 * MIB)]);
        assert!(map.is_ram(MIB - 8, MIB + 8));
        assert!(!map.is_ram(2 * MIB - 8, 2 * MIB + 8));
        let mut layout = GuestLayout::new(map);
        // Spanning the two adjacent RAM regions is fine, spanning ACPI is not.
        layout.place_at(Item::Kernel, MIB / 2, MIB).unwrap();
        assert_eq!(
            layout.place_at(Item::Module, 2 * MIB - 8, 16),
            Err(LayoutError::NotInRam {
                item: Item::Module,
                start: 2 * MIB - 8,
                size: 16
            })
        );
    }

    #[test]
    fn placements_never_overlap_and_stay_in_ram() {
        let mut layout = layout(16 * MIB);
        layout.place_at(Item::Kernel, 2 * MIB, 4 * MIB).unwrap();
        let kernel = layout.placed()[0];
        assert_eq!(
            layout.place_at(Item::Module, 5 * MIB, MIB + 1),
            Err(LayoutError::Overlap {
                item: Item::Module,
                start: 5 * MIB,
                size: MIB + 1,
                with: kernel
            })
        );
        // Exactly adjacent is not an overlap.
        layout.place_at(Item::Module, 6 * MIB, MIB).unwrap();
        // In the reserved legacy window, past RAM, wrapping, empty.
        for (start, size) in [(0xa_0000, 0x1000), (16 * MIB - 0x1000, 0x2000)] {
            assert_eq!(
                layout.place_at(Item::BootInfo, start, size),
                Err(LayoutError::NotInRam {
                    item: Item::BootInfo,
                    start,
                    size
                })
            );
        }
        assert!(matches!(
            layout.place_at(Item::BootInfo, u64::MAX - 1, 4),
            Err(LayoutError::NotInRam { .. })
        ));
        assert_eq!(
            layout.place_at(Item::BootInfo, MIB, 0),
            Err(LayoutError::EmptyPlacement {
                item: Item::BootInfo
            })
        );
        assert_eq!(layout.placed().len(), 2, "refusals place nothing");
    }

    #[test]
    fn low_placement_takes_the_lowest_free_aligned_room() {
        let mut layout = layout(16 * MIB);
        let first = layout
            .place_low(Item::BootTables, 0x7000, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(first, 0x1000);
        let second = layout
            .place_low(Item::BootInfo, 10, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(second, 0x8000);
        // Too big for low RAM (0x9fc00 bytes): it goes above 1 MiB.
        let big = layout
            .place_low(Item::Kernel, 0x10_0000, 2 * MIB, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(big, 2 * MIB);
        // The next 2 MiB-aligned room skips the kernel.
        let next = layout
            .place_low(Item::Module, 0x1000, 2 * MIB, MIB, FOUR_GIB)
            .unwrap();
        assert_eq!(next, 4 * MIB);
        assert_eq!(
            layout.place_low(Item::Module, 0x1000, 3, 0, FOUR_GIB),
            Err(LayoutError::BadAlignment {
                item: Item::Module,
                align: 3
            })
        );
        assert_eq!(
            layout.place_low(Item::Module, 16 * MIB, PAGE, 0, FOUR_GIB),
            Err(LayoutError::NoRoom {
                item: Item::Module,
                size: 16 * MIB,
                above: 0,
                below: FOUR_GIB
            })
        );
        // `below` is honoured.
        assert!(
            layout
                .place_low(Item::Module, 0x1000, PAGE, 5 * MIB, 5 * MIB + 0x800)
                .is_err()
        );
    }

    #[test]
    fn high_placement_takes_the_highest_free_aligned_room() {
        let mut layout = layout(16 * MIB);
        let top = layout
            .place_high(Item::Module, 0x1800, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(top, 16 * MIB - 0x2000);
        let below_it = layout
            .place_high(Item::Module, 0x1000, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(below_it, 16 * MIB - 0x3000);
        let capped = layout
            .place_high(
                Item::Module,
                0x1000,
                PAGE,
                LOWEST_PLACEMENT,
                8 * MIB + 0x123,
            )
            .unwrap();
        assert_eq!(capped, 8 * MIB - 0x1000);
        // Falls back to low RAM when high RAM is full.
        layout
            .place_at(Item::Kernel, MIB, 7 * MIB - 0x1000)
            .unwrap();
        layout
            .place_at(Item::Kernel, 8 * MIB, 8 * MIB - 0x3000)
            .unwrap();
        let low = layout
            .place_high(Item::Module, 0x1000, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
            .unwrap();
        assert_eq!(low, 0x9_e000);
        assert!(matches!(
            layout.place_high(Item::Module, MIB, PAGE, LOWEST_PLACEMENT, FOUR_GIB),
            Err(LayoutError::NoRoom { .. })
        ));
        assert!(
            layout
                .place_high(Item::Module, 0x1000, PAGE, LOWEST_PLACEMENT, 0xfff)
                .is_err()
        );
        // Page 0 is free RAM here, but below `above`.
        assert_eq!(
            layout.place_high(Item::Module, 0x1000, PAGE, LOWEST_PLACEMENT, 0x1000),
            Err(LayoutError::NoRoom {
                item: Item::Module,
                size: 0x1000,
                above: LOWEST_PLACEMENT,
                below: 0x1000
            })
        );
        assert_eq!(
            layout.place_high(Item::Module, 0x1000, PAGE, LOWEST_PLACEMENT, 0x2000),
            Ok(0x1000)
        );
    }

    #[test]
    fn boot_structures_go_low_and_modules_high_below_4_gib() {
        let map = MemoryMap::new(
            &[
                Region::new(0, 0x9_fc00, RegionKind::Ram),
                Region::new(MIB, FOUR_GIB + MIB, RegionKind::Ram),
            ],
            FOUR_GIB + 2 * MIB,
        )
        .unwrap();
        let mut layout = GuestLayout::new(map);
        assert_eq!(layout.place_boot(Item::BootInfo, 1), Ok(0x1000));
        assert_eq!(layout.place_boot(Item::CommandLine, 0x1001), Ok(0x2000));
        assert_eq!(layout.place_module(0, FOUR_GIB), Ok(None));
        assert_eq!(
            layout.place_module(0x1800, u64::MAX),
            Ok(Some(FOUR_GIB - 0x2000))
        );
        assert_eq!(
            layout.place_module(0x1000, 0x10_0000 + 0x1000),
            Ok(Some(0x10_0000))
        );
        assert_eq!(layout.placed().len(), 4, "the empty module is not placed");
    }

    #[test]
    fn the_placement_table_has_a_limit() {
        let mut layout = layout(16 * MIB);
        for _ in 0..MAX_PLACEMENTS {
            layout
                .place_low(Item::Module, 1, PAGE, LOWEST_PLACEMENT, FOUR_GIB)
                .unwrap();
        }
        assert_eq!(
            layout.place_low(Item::Module, 1, PAGE, LOWEST_PLACEMENT, FOUR_GIB),
            Err(LayoutError::TooManyPlacements {
                max: MAX_PLACEMENTS
            })
        );
        assert!(layout.is_free(0x10_0000, 0x1000));
        assert!(!layout.is_free(0x1000, 1));
    }
}
