//! The core's own address space: its image mapped by section rights, the
//! direct physical map, and access to page tables through it.
//!
//! Layout of the upper half: the direct map of RAM at [`DIRECT_MAP_BASE`]
//! (read-write, never executable, global), and the core's image at
//! [`super::boot::KERNEL_BASE`] + physical address: text read-execute,
//! rodata read-only, data/bss and stacks read-write and not executable,
//! with unmapped guard pages below each stack. Only RAM the firmware
//! reports usable and the boot modules are in the direct map: device
//! memory is never mapped cacheable by accident; the one device page the
//! core uses, the local APIC, is mapped uncached at its own address. The
//! boot segment is not mapped at all once these tables are live.

use microvisor::address::{
    LARGE_PAGE_SIZE, PAGE_SIZE, PhysicalAddress, VirtualAddress, align_down, align_up,
};
use microvisor::boot_info::BootInfo;
use microvisor::frame::FrameAllocator;
use microvisor::paging::{AddressSpace, MapError, Permissions, TableMemory};

use super::boot::{ImageLayout, ImageRange, KERNEL_BASE};

/// Where physical address 0 appears in the core's address space.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// The core-virtual address of physical address `physical`.
pub fn direct(physical: PhysicalAddress) -> *mut u8 {
    (DIRECT_MAP_BASE + physical.0) as *mut u8
}

/// Page tables reached through the direct map, frames from the allocator.
pub struct Tables<'a, 'b> {
    pub frames: &'a mut FrameAllocator<'b>,
}

impl TableMemory for Tables<'_, '_> {
    fn allocate_table(&mut self) -> Option<PhysicalAddress> {
        let frame = self.frames.allocate()?;
        // SAFETY: the frame was just taken from the allocator, so nothing
        // else uses it, and all allocatable RAM is in the direct map.
        unsafe { core::ptr::write_bytes(direct(frame), 0, PAGE_SIZE as usize) };
        Some(frame)
    }

    fn free_table(&mut self, table: PhysicalAddress) {
        // A table frame came from the allocator; failure would be a core bug.
        if let Err(error) = self.frames.free(table) {
            log::error!("page-table frame {table:?} could not be freed: {error:?}");
        }
    }

    fn release_page(&mut self, frame: PhysicalAddress) {
        if let Err(error) = self.frames.free(frame) {
            log::error!("frame {frame:?} could not be released: {error:?}");
        }
    }

    fn read(&self, table: PhysicalAddress, index: usize) -> u64 {
        // SAFETY: `table` is a page-table frame (in the direct map) and
        // index < 512 keeps the read inside it.
        unsafe { direct(table).cast::<u64>().add(index & 511).read_volatile() }
    }

    fn write(&mut self, table: PhysicalAddress, index: usize, value: u64) {
        // SAFETY: as for `read`; page tables are only changed by the core
        // with interrupts disabled.
        unsafe {
            direct(table)
                .cast::<u64>()
                .add(index & 511)
                .write_volatile(value)
        }
    }
}

fn map_range(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    range: ImageRange,
    permissions: Permissions,
) -> Result<u64, MapError> {
    let mut virt = align_down(range.start, PAGE_SIZE);
    let mut pages = 0;
    while virt < range.end {
        space.map_page(
            tables,
            VirtualAddress(virt),
            PhysicalAddress(virt - KERNEL_BASE),
            permissions,
        )?;
        virt += PAGE_SIZE;
        pages += 1;
    }
    Ok(pages)
}

fn map_direct(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    start: u64,
    end: u64,
) -> Result<(), MapError> {
    let rights = Permissions::READ_WRITE.global();
    let mut physical = align_down(start, PAGE_SIZE);
    let end = align_up(end, PAGE_SIZE).ok_or(MapError::Misaligned)?;
    while physical < end {
        let virt = VirtualAddress(DIRECT_MAP_BASE + physical);
        let large = physical.is_multiple_of(LARGE_PAGE_SIZE) && end - physical >= LARGE_PAGE_SIZE;
        let step = if large { LARGE_PAGE_SIZE } else { PAGE_SIZE };
        // Regions may overlap (firmware maps, modules inside RAM): skip what
        // is mapped already.
        if space.translate(tables, virt).is_none() {
            if large {
                // A large page only where no small page exists yet.
                match space.map_large_page(tables, virt, PhysicalAddress(physical), rights) {
                    Ok(()) => {}
                    Err(MapError::AlreadyMapped) => {
                        map_small_run(space, tables, physical, physical + LARGE_PAGE_SIZE, rights)?
                    }
                    Err(error) => return Err(error),
                }
            } else {
                space.map_page(tables, virt, PhysicalAddress(physical), rights)?;
            }
        }
        physical += step;
    }
    Ok(())
}

fn map_small_run(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    start: u64,
    end: u64,
    rights: Permissions,
) -> Result<(), MapError> {
    let mut physical = start;
    while physical < end {
        let virt = VirtualAddress(DIRECT_MAP_BASE + physical);
        if space.translate(tables, virt).is_none() {
            space.map_page(tables, virt, PhysicalAddress(physical), rights)?;
        }
        physical += PAGE_SIZE;
    }
    Ok(())
}

/// What [`build_kernel_space`] mapped.
pub struct KernelSpace {
    pub space: AddressSpace,
    pub text_pages: u64,
    pub rodata_pages: u64,
    pub data_pages: u64,
}

/// Builds the core's page tables.
pub fn build_kernel_space(
    frames: &mut FrameAllocator<'_>,
    layout: &ImageLayout,
    info: &BootInfo,
    apic_physical: u64,
) -> Result<KernelSpace, MapError> {
    let mut tables = Tables { frames };
    let space = AddressSpace::new(&mut tables)?;
    let text_pages = map_range(
        &space,
        &mut tables,
        layout.text,
        Permissions::READ_EXECUTE.global(),
    )?;
    let rodata_pages = map_range(
        &space,
        &mut tables,
        layout.rodata,
        Permissions::READ.global(),
    )?;
    let data = Permissions::READ_WRITE.global();
    let data_pages = map_range(&space, &mut tables, layout.data, data)?
        + map_range(&space, &mut tables, layout.stack, data)?
        + map_range(&space, &mut tables, layout.fault_stack, data)?;
    for region in info.regions().iter().filter(|r| r.usable) {
        map_direct(
            &space,
            &mut tables,
            region.start,
            region.start.saturating_add(region.length),
        )?;
    }
    for module in info.modules() {
        map_direct(&space, &mut tables, module.start, module.end)?;
    }
    space.map_page(
        &mut tables,
        VirtualAddress(super::timer::APIC_VIRTUAL),
        PhysicalAddress(apic_physical),
        Permissions::READ_WRITE.uncached().global(),
    )?;
    space.map_page(
        &mut tables,
        VirtualAddress(super::ioapic::IOAPIC_VIRTUAL),
        PhysicalAddress(super::ioapic::IOAPIC_PHYSICAL),
        Permissions::READ_WRITE.uncached().global(),
    )?;
    Ok(KernelSpace {
        space,
        text_pages,
        rodata_pages,
        data_pages,
    })
}
