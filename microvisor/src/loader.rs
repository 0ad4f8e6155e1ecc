//! Building a component's address space from its program.
//!
//! A component's address space holds exactly its ELF segments (with the
//! rights the program headers give, never writable and executable), a
//! stack below [`STACK_TOP`] with an unmapped guard page beneath it, its
//! read-only start-information page (`microvisor::start_page`), the memory
//! of the queues it is an end of (shared with the other end, never
//! released with it), the device memory it was granted (uncached, shared;
//! never over RAM, the core or the boot image, which refuses the
//! component) and, for a world switcher, its VM's memory, image copy and
//! state page (shared, they belong to the VM); the core's upper
//! half is shared but supervisor-only. Every owned frame is fresh and
//! zeroed. Building either completes or leaves nothing behind. The same
//! build runs at boot and at every restart.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::elf::{self, ElfError};
use microvisor::paging::{self, AddressSpace, MapError, Permissions, WxViolation};
use microvisor::start_page::{self, Given, Identity, PciGiven};
use microvisor_abi::spec::{MAX_COMPONENTS, MAX_VMS, MemoryKind, VmSpec};
use microvisor_abi::{STACK_TOP, START_INFO_ADDRESS, USER_END, USER_MIN};
use zerocopy::IntoBytes;

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::kernel::Kernel;
use crate::object::Queue;
use crate::object::vm::GuestMapping;

/// Why a component was not loaded.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// The ELF file is unusable.
    Elf(ElfError),
    /// Mapping failed.
    Map(MapError),
    /// Out of physical memory.
    OutOfMemory,
    /// The program needs more memory than the component may have.
    OverLimit { pages: u64, limit: u64 },
    /// The finished address space broke W^X (a core bug if ever seen).
    Wx(WxViolation),
    /// The system already has [`MAX_COMPONENTS`].
    TooMany,
    /// The name is reserved for the core.
    ReservedName,
    /// The spec names a program the boot image does not hold.
    MissingProgram,
    /// It runs a VM that could not be created (reported when it was not).
    VmUnavailable,
    /// A memory grant lies over RAM, the core's image or a boot module.
    NotDeviceMemory { physical: u64, size: u64 },
    /// No run of free frames (below 4 GiB when asked) holds a DMA buffer.
    NoDmaMemory { size: u64, below_4g: bool },
    /// The PCI function it drives was not found at boot.
    PciAbsent { vendor: u16, device: u16 },
    /// Its PCI function has no memory BAR `bar`, which the system asks
    /// to map.
    PciNoBar { bar: usize },
    /// A BAR of its PCI function lies over RAM, the core, the core's
    /// device pages or another driver's device.
    BarNotMappable { physical: u64, size: u64 },
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(error) => write!(f, "{error}"),
            Self::Map(error) => write!(f, "cannot map its memory: {error:?}"),
            Self::OutOfMemory => write!(f, "out of physical memory"),
            Self::OverLimit { pages, limit } => {
                write!(f, "needs {pages} pages of memory, its limit is {limit}")
            }
            Self::Wx(violation) => write!(f, "its address space breaks W^X: {violation:?}"),
            Self::TooMany => write!(f, "more than {MAX_COMPONENTS} components"),
            Self::ReservedName => write!(f, "the name 'core' is reserved"),
            Self::MissingProgram => write!(f, "its program is not in the boot image"),
            Self::VmUnavailable => write!(f, "the VM it runs was not created"),
            Self::NotDeviceMemory { physical, size } => write!(
                f,
                "its mmio grant {physical:#x} + {size:#x} lies over RAM, the core or the boot image, not device memory"
            ),
            Self::PciAbsent { vendor, device } => {
                write!(f, "its PCI device {vendor:04x}:{device:04x} is not present")
            }
            Self::PciNoBar { bar } => write!(
                f,
                "its PCI function has no memory BAR {bar}, which the system asks to map"
            ),
            Self::BarNotMappable { physical, size } => write!(
                f,
                "its PCI function's BAR at {physical:#x} + {size:#x} lies over RAM, the core, the core's device pages or another driver's device"
            ),
            Self::NoDmaMemory { size, below_4g } => write!(
                f,
                "no {size:#x} bytes of physically contiguous free memory{} for its DMA buffer",
                if *below_4g { " below 4 GiB" } else { "" }
            ),
        }
    }
}

impl From<MapError> for LoadError {
    fn from(error: MapError) -> Self {
        match error {
            MapError::OutOfMemory => Self::OutOfMemory,
            other => Self::Map(other),
        }
    }
}

/// The VM component `switcher` runs, if it declares one.
pub fn vm_of_switcher(kernel: &Kernel, switcher: usize) -> Option<usize> {
    kernel.vms[..kernel.vm_count]
        .iter()
        .position(|vm| vm.switcher() == switcher)
}

/// Builds component `index`'s address space and initial thread state from
/// its program; returns the entry point and the number of segments. On
/// error nothing stays allocated but the component's DMA buffers, which
/// are its for good.
pub fn build(kernel: &mut Kernel, index: usize) -> Result<(u64, usize), LoadError> {
    pci_present(kernel, index)?;
    dma_buffers(kernel, index)?;
    let component = &kernel.components[index];
    let program = component.program();
    if program.is_empty() {
        return Err(LoadError::MissingProgram);
    }
    let (stack_pages, limit) = (component.stack_pages(), component.memory_pages());
    let plan = elf::plan(program, USER_MIN, USER_END, limit * PAGE_SIZE).map_err(LoadError::Elf)?;
    let vm = vm_of_switcher(kernel, index).map(|vm| &kernel.vms[vm]);
    if vm.is_some_and(|vm| !vm.is_ready()) {
        return Err(LoadError::VmUnavailable);
    }
    let guest = vm.and_then(|vm| vm.mapping());
    let needed = plan.memory_pages() + stack_pages;
    if needed > limit {
        return Err(LoadError::OverLimit {
            pages: needed,
            limit,
        });
    }
    let who = Identity {
        index,
        name: component.name(),
        args: component.args(),
        generation: component.generation(),
        tsc_hz: kernel.clock.tsc_per_ms.saturating_mul(1000),
    };
    let spec = kernel.spec;
    let pci = kernel
        .pci_of(index)
        .map(|(declared, function)| (declared, *function));
    let pci_given = pci.as_ref().map(|(declared, function)| PciGiven {
        function,
        msi_address: 0xfee0_0000 | u64::from(crate::arch::timer::apic_id()) << 12,
        msi_data: (crate::arch::ioapic::LINE_VECTOR_BASE + u64::from(declared.msi_first_line))
            as u32,
    });
    let given = Given {
        guest_image_bytes: guest.map(|g| g.image_bytes),
        dma: &kernel.dma,
        pci: pci_given,
    };
    let start_info = start_page::contents(&spec, who, &given);
    let bars = pci.map(|(declared, function)| {
        microvisor::pci::place_bars(&function, declared.bars, declared.window)
    });
    for bar in bars.iter().flatten().flatten() {
        let (physical, size) = (bar.physical_page, bar.pages * PAGE_SIZE);
        // Not over RAM or the core, not over the core's device pages, and
        // no page shared with another driver's function (a BAR smaller
        // than a page is mapped whole).
        let mine = pci.map(|(_, function)| function.address);
        let shared = kernel.pci.iter().flatten().any(|other| {
            Some(other.address) != mine
                && other.bars.iter().any(|b| {
                    b.memory
                        && b.size > 0
                        && b.physical & !0xfff < physical + size
                        && physical < (b.physical + b.size).next_multiple_of(PAGE_SIZE)
                })
        });
        if kernel.not_devices.overlaps(physical, size)
            || microvisor_abi::spec::core_device_overlap(physical, size).is_some()
            || shared
        {
            return Err(LoadError::BarNotMappable { physical, size });
        }
    }
    let kernel_space = kernel.kernel_space;
    let grants = spec
        .memory_grants
        .iter()
        .enumerate()
        .filter(|(_, grant)| grant.component as usize == index);
    let devices = grants
        .clone()
        .map(|(_, grant)| grant)
        .filter(|grant| grant.kind == MemoryKind::Device as u32);
    let dma = grants
        .clone()
        .filter(|(_, grant)| {
            matches!(
                MemoryKind::from_u32(grant.kind),
                Some(MemoryKind::Dma | MemoryKind::Dma32)
            )
        })
        .map(|(at, grant)| (grant, kernel.dma[at]));
    // Guest-hints pages: the VM's frame, once the VM exists (a VM that
    // could not be created has none, and the grant maps nothing).
    let vms = &kernel.vms[..kernel.vm_count];
    let hints = grants
        .filter(|(_, grant)| grant.kind == MemoryKind::GuestHints as u32)
        .filter_map(|(_, grant)| {
            let vm = vms.get(usize::try_from(grant.physical).ok()?)?;
            Some((grant.address, vm.hints()?))
        });
    let mut hint_pages = [(0u64, PhysicalAddress(0)); MAX_VMS];
    for (slot, page) in hint_pages.iter_mut().zip(hints) {
        *slot = page;
    }
    if let Some(grant) = devices
        .clone()
        .find(|grant| kernel.not_devices.overlaps(grant.physical, grant.size))
    {
        return Err(LoadError::NotDeviceMemory {
            physical: grant.physical,
            size: grant.size,
        });
    }
    let queues = &kernel.queues[..kernel.queue_count];
    let mut tables = Tables {
        frames: &mut kernel.frames,
    };
    let space = AddressSpace::new(&mut tables)?;
    space.share_kernel_half(&mut tables, &kernel_space);
    let result = (|| -> Result<(), LoadError> {
        for segment in plan.segments() {
            let rights = Permissions {
                write: segment.write,
                execute: segment.execute,
                ..Permissions::READ
            }
            .for_user();
            let (start, end) = segment.pages();
            let mut page = start;
            while page < end {
                let frame = fresh_frame(&mut tables)?;
                if let Some((into, from)) = segment.file_bytes_for_page(page) {
                    // SAFETY: `frame` is a fresh frame in the direct map and
                    // `into + from.len()` <= PAGE_SIZE (the plan's contract);
                    // `from` lies inside the program (checked by the plan).
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            program[from.clone()].as_ptr(),
                            direct(frame).add(into),
                            from.len(),
                        );
                    }
                }
                map_owned(&space, &mut tables, page, frame, rights)?;
                page += PAGE_SIZE;
            }
        }
        for page in 1..=stack_pages {
            let frame = fresh_frame(&mut tables)?;
            let rights = Permissions::READ_WRITE.for_user();
            map_owned(
                &space,
                &mut tables,
                STACK_TOP - page * PAGE_SIZE,
                frame,
                rights,
            )?;
        }
        let frame = fresh_frame(&mut tables)?;
        let bytes = start_info.as_bytes();
        // SAFETY: a fresh frame in the direct map; StartInfo fits in a page.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), direct(frame), bytes.len()) };
        let rights = Permissions::READ.for_user();
        map_owned(&space, &mut tables, START_INFO_ADDRESS, frame, rights)?;
        map_queues(&space, &mut tables, index, queues)?;
        // Device registers (granted memory and a PCI function's BARs):
        // uncached, never executable, shared (the frames are the device's,
        // not the component's).
        let registers = Permissions::READ_WRITE.uncached().for_user().shared();
        for grant in devices {
            let pages = grant.size / PAGE_SIZE;
            map_range(
                &space,
                &mut tables,
                grant.address,
                grant.physical,
                pages,
                registers,
            )?;
        }
        for bar in bars.iter().flatten().flatten() {
            let (at, physical) = (bar.mapped_page, bar.physical_page);
            map_range(&space, &mut tables, at, physical, bar.pages, registers)?;
        }
        // DMA buffers: ordinary cacheable memory (the CPU and the device
        // see it coherently), never executable, shared (the frames stay
        // the component's across restarts).
        let buffers = Permissions::READ_WRITE.for_user().shared();
        for (grant, physical) in dma.clone() {
            let pages = grant.size / PAGE_SIZE;
            map_range(&space, &mut tables, grant.address, physical, pages, buffers)?;
        }
        // Guest-hints pages: read-only, never executable, shared (the
        // VM's frame, not the address space's).
        let read_only = Permissions::READ.for_user().shared();
        for &(address, frame) in hint_pages.iter().filter(|(address, _)| *address != 0) {
            map_range(&space, &mut tables, address, frame.0, 1, read_only)?;
        }
        if let (Some(guest), Some((_, declared))) = (guest, spec.vm_of(index)) {
            map_guest(&space, &mut tables, guest, declared)?;
        }
        paging::check_wx(&tables, &space).map_err(LoadError::Wx)?;
        Ok(())
    })();
    if let Err(error) = result {
        space.clear_user_half(&mut tables);
        let _ = tables.frames.free(space.root);
        return Err(error);
    }
    let frame = Frame::new_thread(plan.entry, STACK_TOP, START_INFO_ADDRESS);
    kernel.components[index].install(space, frame);
    Ok((plan.entry, plan.segments().len()))
}

/// Maps the memory of every queue component `index` is an end of, shared
/// (the queue owns it, not the address space).
fn map_queues(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    index: usize,
    queues: &[Queue],
) -> Result<(), LoadError> {
    for queue in queues {
        let Some(address) = queue.address_in(index) else {
            continue;
        };
        for (page, frame) in (0..).zip(queue.pages()) {
            space.map_page(
                tables,
                VirtualAddress(address + page * PAGE_SIZE),
                frame,
                Permissions::READ_WRITE.for_user().shared(),
            )?;
        }
    }
    Ok(())
}

/// Maps a VM's guest memory (read-write), image copy (read-only) and state
/// page (read-write) into its world switcher, shared: they belong to the
/// VM and outlive the switcher's restarts.
fn map_guest(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    guest: GuestMapping,
    declared: &VmSpec,
) -> Result<(), LoadError> {
    let read_write = Permissions::READ_WRITE.for_user().shared();
    let ranges = [
        (
            declared.memory_address,
            guest.memory,
            guest.memory_bytes,
            read_write,
        ),
        (
            declared.image_address,
            guest.image,
            guest.image_bytes.max(1),
            Permissions::READ.for_user().shared(),
        ),
        (declared.state_address, guest.state, PAGE_SIZE, read_write),
    ];
    for (address, first, bytes, rights) in ranges {
        for page in 0..bytes.div_ceil(PAGE_SIZE) {
            space.map_page(
                tables,
                VirtualAddress(address + page * PAGE_SIZE),
                PhysicalAddress(first.0 + page * PAGE_SIZE),
                rights,
            )?;
        }
    }
    Ok(())
}

fn fresh_frame(tables: &mut Tables<'_, '_>) -> Result<PhysicalAddress, LoadError> {
    let frame = tables.frames.allocate().ok_or(LoadError::OutOfMemory)?;
    // SAFETY: a frame just taken from the allocator, in the direct map.
    unsafe { core::ptr::write_bytes(direct(frame), 0, PAGE_SIZE as usize) };
    Ok(frame)
}

fn map_owned(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    page: u64,
    frame: PhysicalAddress,
    rights: Permissions,
) -> Result<(), LoadError> {
    space
        .map_page(tables, VirtualAddress(page), frame, rights)
        .map_err(|error| {
            let _ = tables.frames.free(frame);
            LoadError::from(error)
        })
}

/// Component `index`'s DMA buffers: taken at its first start as
/// physically contiguous frames (below 4 GiB when the grant asks) and kept
/// for good, then zeroed at every start.
fn dma_buffers(kernel: &mut Kernel, index: usize) -> Result<(), LoadError> {
    let spec = kernel.spec;
    for (at, grant) in spec.memory_grants.iter().enumerate() {
        let below_4g = match MemoryKind::from_u32(grant.kind) {
            Some(MemoryKind::Dma) => false,
            Some(MemoryKind::Dma32) => true,
            _ => continue,
        };
        if grant.component as usize != index {
            continue;
        }
        let pages = grant.size / PAGE_SIZE;
        if kernel.dma[at] == 0 {
            let unavailable = LoadError::NoDmaMemory {
                size: grant.size,
                below_4g,
            };
            let first = kernel
                .frames
                .allocate_contiguous(pages)
                .ok_or(unavailable)?;
            if below_4g && first.0 + grant.size > 1 << 32 {
                for page in 0..pages {
                    let _ = kernel
                        .frames
                        .free(PhysicalAddress(first.0 + page * PAGE_SIZE));
                }
                return Err(unavailable);
            }
            kernel.dma[at] = first.0;
        }
        for page in 0..pages {
            // SAFETY: the buffer's frames were taken for this component
            // alone and are in the direct map; a page is written whole.
            unsafe {
                core::ptr::write_bytes(
                    direct(PhysicalAddress(kernel.dma[at] + page * PAGE_SIZE)),
                    0,
                    PAGE_SIZE as usize,
                );
            }
        }
    }
    Ok(())
}

/// Maps `pages` pages of physical memory from `physical` at `virtual_`.
fn map_range(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    virtual_: u64,
    physical: u64,
    pages: u64,
    rights: Permissions,
) -> Result<(), LoadError> {
    for page in 0..pages {
        space.map_page(
            tables,
            VirtualAddress(virtual_ + page * PAGE_SIZE),
            PhysicalAddress(physical + page * PAGE_SIZE),
            rights,
        )?;
    }
    Ok(())
}

/// Refuses a driver whose PCI function was not found, or lacks a memory
/// BAR the system asks to map.
fn pci_present(kernel: &Kernel, index: usize) -> Result<(), LoadError> {
    let Some(declared) = kernel
        .spec
        .pci_devices
        .iter()
        .find(|declared| declared.component as usize == index)
    else {
        return Ok(());
    };
    let Some((_, function)) = kernel.pci_of(index) else {
        return Err(LoadError::PciAbsent {
            vendor: declared.vendor,
            device: declared.device,
        });
    };
    match microvisor::pci::missing_bar(function, declared.bars) {
        Some(bar) => Err(LoadError::PciNoBar { bar }),
        None => Ok(()),
    }
}
