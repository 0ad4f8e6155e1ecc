//! Components and queues: instantiating them from the boot spec, building
//! a component's address space, stopping and restarting it.
//!
//! A component's address space holds exactly its ELF segments (with the
//! rights the program headers give, never writable and executable), a
//! stack below [`STACK_TOP`] with an unmapped guard page beneath it, its
//! read-only start-information page, and the memory of the queues it is an
//! end of (shared with the other end, never released with it); the core's
//! upper half is shared but supervisor-only. Every owned frame is fresh and
//! zeroed. Building either completes or leaves nothing behind.
//!
//! Restarting re-runs the same build from the program in the boot image:
//! memory re-initialised, queue ends reset with their generation bumped
//! (and the peer woken, so it notices), notification word cleared, the
//! capability table's generation bumped (old handles become stale).

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::elf::{self, ElfError};
use microvisor::paging::{self, AddressSpace, MapError, Permissions, WxViolation};
use microvisor::sched::SchedulingContext;
use microvisor_abi::fault::FaultRecord;
use microvisor_abi::queue;
use microvisor_abi::spec::{self, CapabilityKind, Spec};
use microvisor_abi::start::{MAX_RESOURCES, Resource, ResourceKind, START_MAGIC, StartInfo};
use microvisor_abi::{STACK_TOP, START_INFO_ADDRESS, USER_END, USER_MIN};
use zerocopy::{FromZeros, IntoBytes};

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::state::Kernel;

/// The most components a system may have.
pub const MAX_COMPONENTS: usize = spec::MAX_COMPONENTS;
/// The most queues.
pub const MAX_QUEUES: usize = spec::MAX_QUEUES;
/// The most capabilities one component holds.
pub const MAX_CAPABILITIES: usize = spec::MAX_CAPABILITIES_PER_COMPONENT;

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    /// Can run (unless its scheduling context is depleted).
    Ready,
    /// Blocked in `Wait`.
    Waiting,
    /// Ended itself with this exit code.
    Exited(i32),
    /// Stopped by the core after a fault.
    Faulted,
    /// Stopped by its supervisor.
    Stopped,
    /// Declared to wait for its supervisor to start it.
    NotStarted,
}

/// One slot of a capability table.
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    pub kind: CapabilityKind,
    /// A component index (unused for scheduling control), or a VM index
    /// for VMCS and vCPU capabilities.
    pub target: usize,
    pub badge: u64,
}

/// A queue's shared memory.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    pub memory: PhysicalAddress,
    pub pages: u64,
    pub sender: usize,
    pub receiver: usize,
    pub slot_size: u32,
    pub slot_count: u32,
    pub generation: u32,
}

impl Queue {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        memory: PhysicalAddress(0),
        pages: 0,
        sender: 0,
        receiver: 0,
        slot_size: 0,
        slot_count: 0,
        generation: 0,
    };
}

/// One component and its single thread.
pub struct Component {
    name: [u8; 32],
    name_len: usize,
    args: [u8; 64],
    args_len: usize,
    /// Its ELF program, inside the boot image.
    pub program: &'static [u8],
    pub state: ComponentState,
    pub space: AddressSpace,
    pub frame: Frame,
    pub capabilities: [Option<Capability>; MAX_CAPABILITIES],
    pub capability_count: usize,
    /// 1 at first start, +1 per restart; part of every capability handle.
    pub generation: u32,
    /// The notification word.
    pub notification: u64,
    /// When a timed `Wait` ends (TSC).
    pub wake_at: Option<u64>,
    pub priority: u32,
    pub scheduling: SchedulingContext,
    pub supervisor: Option<usize>,
    pub fault_bit: u32,
    pub fault: Option<FaultRecord>,
    pub fault_count: u32,
    pub stack_pages: u64,
    pub memory_pages: u64,
}

impl Component {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        name: [0; 32],
        name_len: 0,
        args: [0; 64],
        args_len: 0,
        program: &[],
        state: ComponentState::Exited(0),
        space: AddressSpace {
            root: PhysicalAddress(0),
        },
        frame: Frame::ZERO,
        capabilities: [None; MAX_CAPABILITIES],
        capability_count: 0,
        generation: 0,
        notification: 0,
        wake_at: None,
        priority: 0,
        scheduling: SchedulingContext::UNLIMITED,
        supervisor: None,
        fault_bit: 0,
        fault: None,
        fault_count: 0,
        stack_pages: 0,
        memory_pages: 0,
    };

    /// The component's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    fn args(&self) -> &str {
        core::str::from_utf8(&self.args[..self.args_len]).unwrap_or("")
    }

    /// Whether the component may still run at some point.
    pub fn is_alive(&self) -> bool {
        matches!(self.state, ComponentState::Ready | ComponentState::Waiting)
    }

    /// The handle of capability slot `slot` in the current generation.
    pub fn handle(&self, slot: usize) -> u64 {
        microvisor::capability::encode(slot, self.generation)
    }
}

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

/// What a component is declared as, before it is built.
pub struct Declaration<'a> {
    pub name: &'a str,
    pub args: &'a str,
    pub program: &'static [u8],
    pub priority: u32,
    pub budget_us: u64,
    pub period_us: u64,
    pub stack_pages: u64,
    pub memory_pages: u64,
    pub start: bool,
    pub supervisor: Option<usize>,
    pub fault_bit: u32,
}

/// Adds a component slot (not yet built) and returns its index.
pub fn declare(kernel: &mut Kernel, declaration: &Declaration<'_>) -> Result<usize, LoadError> {
    if declaration.name == "core" {
        return Err(LoadError::ReservedName);
    }
    let index = kernel.component_count;
    if index == MAX_COMPONENTS {
        return Err(LoadError::TooMany);
    }
    let now = crate::arch::timer::now();
    let clock = kernel.clock;
    let component = &mut kernel.components[index];
    *component = Component::EMPTY;
    component.name[..declaration.name.len()].copy_from_slice(declaration.name.as_bytes());
    component.name_len = declaration.name.len();
    component.args[..declaration.args.len()].copy_from_slice(declaration.args.as_bytes());
    component.args_len = declaration.args.len();
    component.program = declaration.program;
    component.priority = declaration.priority;
    component.scheduling = SchedulingContext::new(
        clock.ticks_from_us(declaration.budget_us),
        clock.ticks_from_us(declaration.period_us),
        now,
    );
    component.stack_pages = declaration.stack_pages;
    component.memory_pages = declaration.memory_pages;
    component.supervisor = declaration.supervisor;
    component.fault_bit = declaration.fault_bit;
    component.generation = 1;
    component.state = if declaration.start {
        ComponentState::Ready
    } else {
        ComponentState::NotStarted
    };
    kernel.component_count += 1;
    Ok(index)
}

/// Allocates and initialises the memory of every queue in the spec.
pub fn create_queues(kernel: &mut Kernel, spec: &Spec<'_>) -> Result<(), LoadError> {
    for declared in spec.queues {
        let pages = spec::queue_pages(declared.slot_size, declared.slot_count);
        let memory = kernel
            .frames
            .allocate_contiguous(pages)
            .ok_or(LoadError::OutOfMemory)?;
        // SAFETY: fresh frames, in the direct map.
        unsafe { core::ptr::write_bytes(direct(memory), 0, (pages * PAGE_SIZE) as usize) };
        let queue = Queue {
            memory,
            pages,
            sender: declared.sender as usize,
            receiver: declared.receiver as usize,
            slot_size: declared.slot_size,
            slot_count: declared.slot_count,
            generation: 1,
        };
        write_queue_header(&queue);
        kernel.queues[kernel.queue_count] = queue;
        kernel.queue_count += 1;
    }
    Ok(())
}

fn write_queue_header(queue: &Queue) {
    let header = direct(queue.memory);
    let put32 = |offset: usize, value: u32| {
        // SAFETY: the header page belongs to the queue and is in the direct
        // map; offsets are inside the page and 4-byte aligned.
        unsafe { header.add(offset).cast::<u32>().write_volatile(value) }
    };
    let put64 = |offset: usize, value: u64| {
        // SAFETY: as above, 8-byte aligned.
        unsafe { header.add(offset).cast::<u64>().write_volatile(value) }
    };
    put64(queue::HEAD_OFFSET, 0);
    put64(queue::TAIL_OFFSET, 0);
    put32(queue::RECEIVER_WAITING_OFFSET, 0);
    put32(queue::SENDER_WAITING_OFFSET, 0);
    put32(queue::SLOT_SIZE_OFFSET, queue.slot_size);
    put32(queue::SLOT_COUNT_OFFSET, queue.slot_count);
    put32(queue::MAGIC_OFFSET, queue::QUEUE_MAGIC);
    put32(queue::GENERATION_OFFSET, queue.generation);
}

/// Gives component `index` its capability table from the spec.
pub fn install_capabilities(kernel: &mut Kernel, index: usize, spec: &Spec<'_>) {
    let component = &mut kernel.components[index];
    for (slot, declared) in spec.capabilities_of(index).iter().enumerate() {
        // Spec::parse checked kinds and targets.
        let Some(kind) = CapabilityKind::from_u32(declared.kind) else {
            continue;
        };
        component.capabilities[slot] = Some(Capability {
            kind,
            target: declared.target as usize,
            badge: declared.badge,
        });
    }
    component.capability_count = spec.capabilities_of(index).len();
}

/// Builds component `index`'s address space and initial thread state from
/// its program. On error nothing stays allocated.
pub fn build(kernel: &mut Kernel, index: usize) -> Result<(u64, usize), LoadError> {
    let program = kernel.components[index].program;
    let plan = elf::plan(
        program,
        USER_MIN,
        USER_END,
        kernel.components[index].memory_pages * PAGE_SIZE,
    )
    .map_err(LoadError::Elf)?;
    let vm = crate::vm::of_switcher(kernel, index).map(|vm| &kernel.vms[vm]);
    if vm.is_some_and(|vm| !vm.ready) {
        return Err(LoadError::VmUnavailable);
    }
    let guest = vm.map(|vm| {
        (
            vm.memory,
            vm.memory_bytes,
            vm.image,
            vm.image_bytes,
            vm.state,
        )
    });
    let stack_pages = kernel.components[index].stack_pages;
    let needed = plan.memory_pages() + stack_pages;
    let limit = kernel.components[index].memory_pages;
    if needed > limit {
        return Err(LoadError::OverLimit {
            pages: needed,
            limit,
        });
    }
    let start_info = start_info(kernel, index);
    let kernel_space = kernel.kernel_space;
    let (spec, queues) = (kernel.spec, &kernel.queues[..kernel.queue_count]);
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
            map_owned(
                &space,
                &mut tables,
                STACK_TOP - page * PAGE_SIZE,
                frame,
                Permissions::READ_WRITE.for_user(),
            )?;
        }
        let frame = fresh_frame(&mut tables)?;
        let bytes = start_info.as_bytes();
        // SAFETY: a fresh frame in the direct map; StartInfo fits in a page.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), direct(frame), bytes.len()) };
        map_owned(
            &space,
            &mut tables,
            START_INFO_ADDRESS,
            frame,
            Permissions::READ.for_user(),
        )?;
        if let Some(spec) = spec {
            map_queues(&space, &mut tables, index, queues, &spec)?;
            if let (Some(guest), Some((_, declared))) = (guest, spec.vm_of(index)) {
                map_guest(&space, &mut tables, guest, declared)?;
            }
        }
        paging::check_wx(&tables, &space).map_err(LoadError::Wx)?;
        Ok(())
    })();
    if let Err(error) = result {
        space.clear_user_half(&mut tables);
        let _ = tables.frames.free(space.root);
        return Err(error);
    }
    let component = &mut kernel.components[index];
    component.space = space;
    component.frame = Frame::new_thread(plan.entry, STACK_TOP, START_INFO_ADDRESS);
    Ok((plan.entry, plan.segments().len()))
}

/// Maps the memory of every queue component `index` is an end of, shared
/// (the queue owns it, not the address space).
fn map_queues(
    space: &AddressSpace,
    tables: &mut Tables<'_, '_>,
    index: usize,
    queues: &[Queue],
    spec: &Spec<'_>,
) -> Result<(), LoadError> {
    for (queue, declared) in queues.iter().zip(spec.queues) {
        let address = if queue.sender == index {
            declared.sender_address
        } else if queue.receiver == index {
            declared.receiver_address
        } else {
            continue;
        };
        for page in 0..queue.pages {
            space.map_page(
                tables,
                VirtualAddress(address + page * PAGE_SIZE),
                PhysicalAddress(queue.memory.0 + page * PAGE_SIZE),
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
    (memory, memory_bytes, image, image_bytes, state): (
        PhysicalAddress,
        u64,
        PhysicalAddress,
        u64,
        PhysicalAddress,
    ),
    declared: &spec::VmSpec,
) -> Result<(), LoadError> {
    let read_write = Permissions::READ_WRITE.for_user().shared();
    let ranges = [
        (declared.memory_address, memory, memory_bytes, read_write),
        (
            declared.image_address,
            image,
            image_bytes.max(1),
            Permissions::READ.for_user().shared(),
        ),
        (declared.state_address, state, PAGE_SIZE, read_write),
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

fn resource(
    name: &str,
    kind: ResourceKind,
    bit: u32,
    handle: u64,
    address: u64,
    size: u64,
) -> Resource {
    Resource {
        name: spec::name_field(name),
        kind: kind as u32,
        bit,
        handle,
        address,
        size,
    }
}

/// The start-information page of component `index` (generation included).
fn start_info(kernel: &Kernel, index: usize) -> StartInfo {
    let component = &kernel.components[index];
    let mut info = StartInfo::new_zeroed();
    info.magic = START_MAGIC;
    info.component_index = index as u32;
    info.name_len = component.name_len as u32;
    info.name[..component.name_len].copy_from_slice(&component.name[..component.name_len]);
    info.args_len = component.args_len as u32;
    info.args[..component.args_len].copy_from_slice(component.args().as_bytes());
    info.generation = component.generation;
    let Some(spec) = kernel.spec else {
        return info;
    };
    let mut resources = [resource("", ResourceKind::Capability, 0, 0, 0, 0); MAX_RESOURCES];
    let mut count = 0;
    let mut push = |r: Resource| {
        if count < MAX_RESOURCES {
            resources[count] = r;
            count += 1;
        }
    };
    let capabilities = spec.capabilities_of(index);
    let handle_of = |name: &str, kind: CapabilityKind| {
        capabilities
            .iter()
            .position(|c| c.kind == kind as u32 && spec::name_of(&c.name) == Some(name))
            .map_or(u64::MAX, |slot| component.handle(slot))
    };
    for (slot, capability) in capabilities.iter().enumerate() {
        let name = spec::name_of(&capability.name).unwrap_or("");
        push(resource(
            name,
            ResourceKind::Capability,
            0,
            component.handle(slot),
            0,
            u64::from(capability.kind),
        ));
    }
    for declared in spec.queues {
        let name = spec::name_of(&declared.name).unwrap_or("");
        let size = u64::from(declared.slot_size) | (u64::from(declared.slot_count) << 32);
        let signal = handle_of(name, CapabilityKind::Notification);
        if declared.sender as usize == index {
            push(resource(
                name,
                ResourceKind::QueueSend,
                declared.sender_bit,
                signal,
                declared.sender_address,
                size,
            ));
        }
        if declared.receiver as usize == index {
            push(resource(
                name,
                ResourceKind::QueueReceive,
                declared.receiver_bit,
                signal,
                declared.receiver_address,
                size,
            ));
        }
    }
    for (child, declared) in spec.components.iter().enumerate() {
        if declared.supervisor as usize == index {
            let name = spec::name_of(&declared.name).unwrap_or("");
            push(resource(
                name,
                ResourceKind::Supervised,
                declared.fault_bit,
                handle_of(name, CapabilityKind::ComponentControl),
                u64::from(declared.max_restarts),
                u64::from(declared.restart_backoff_ms),
            ));
            let _ = child;
        }
    }
    for (holder, declared) in spec.capabilities.iter().enumerate() {
        let is_queue = spec.queues.iter().any(|q| q.name == declared.name);
        if declared.kind == CapabilityKind::Notification as u32
            && declared.target as usize == index
            && !is_queue
        {
            let name = spec::name_of(&declared.name).unwrap_or("");
            push(resource(
                name,
                ResourceKind::Incoming,
                declared.badge.trailing_zeros(),
                0,
                0,
                declared.badge,
            ));
            let _ = holder;
        }
    }
    if let Some((vm_index, declared)) = spec.vm_of(index) {
        let name = spec::name_of(&declared.name).unwrap_or("");
        let vm = &kernel.vms[vm_index];
        push(resource(
            name,
            ResourceKind::GuestMemory,
            declared.entry,
            0,
            declared.memory_address,
            declared.memory_bytes,
        ));
        push(resource(
            name,
            ResourceKind::GuestImage,
            0,
            0,
            declared.image_address,
            vm.image_bytes,
        ));
        push(resource(
            name,
            ResourceKind::VcpuState,
            0,
            0,
            declared.state_address,
            PAGE_SIZE,
        ));
    }
    for grant in spec
        .interrupt_grants
        .iter()
        .filter(|g| g.component as usize == index)
    {
        push(resource(
            "interrupt",
            ResourceKind::Interrupt,
            grant.bit,
            0,
            u64::from(grant.line),
            0,
        ));
    }
    info.resource_count = count as u32;
    info.resources = resources;
    info
}

/// Stops component `index` in `state` and returns its own memory (queue
/// memory stays with the queue).
pub fn stop(kernel: &mut Kernel, index: usize, state: ComponentState) {
    let mut tables = Tables {
        frames: &mut kernel.frames,
    };
    let component = &mut kernel.components[index];
    component.state = state;
    component.wake_at = None;
    if component.space.root.0 != 0 {
        component.space.clear_user_half(&mut tables);
    }
}

/// Resets every queue component `index` is an end of, bumping its
/// generation, and wakes the other ends so they notice.
fn reset_queues(kernel: &mut Kernel, index: usize) {
    let Some(spec) = kernel.spec else {
        return;
    };
    for (queue, declared) in kernel.queues[..kernel.queue_count]
        .iter_mut()
        .zip(spec.queues)
    {
        let peer_bit = if queue.sender == index {
            Some((queue.receiver, declared.receiver_bit))
        } else if queue.receiver == index {
            Some((queue.sender, declared.sender_bit))
        } else {
            None
        };
        let Some((peer, bit)) = peer_bit else {
            continue;
        };
        queue.generation = queue.generation.wrapping_add(1);
        write_queue_header(queue);
        crate::state::notify(
            &mut kernel.components[..kernel.component_count],
            peer,
            1 << bit,
        );
    }
}

/// Restarts component `index` from its program: everything of the old
/// incarnation is discarded. On failure it stays faulted.
pub fn restart(kernel: &mut Kernel, index: usize) -> Result<(), LoadError> {
    stop(kernel, index, ComponentState::Stopped);
    if kernel.components[index].space.root.0 != 0 {
        let root = kernel.components[index].space.root;
        // Switching away first: the core never runs on tables it frees.
        if kernel.loaded_space.root == root {
            kernel.load_space(kernel.kernel_space);
        }
        let _ = kernel.frames.free(root);
        kernel.components[index].space = AddressSpace {
            root: PhysicalAddress(0),
        };
    }
    let component = &mut kernel.components[index];
    component.generation = component.generation.wrapping_add(1);
    component.notification = 0;
    // The supervisor read the fault before restarting; from now on "no
    // fault" means the new life has not faulted.
    component.fault = None;
    component.wake_at = None;
    reset_queues(kernel, index);
    match build(kernel, index) {
        Ok(_) => {
            let now = crate::arch::timer::now();
            let component = &mut kernel.components[index];
            component.scheduling.refill(now);
            component.state = ComponentState::Ready;
            Ok(())
        }
        Err(error) => {
            kernel.components[index].state = ComponentState::Faulted;
            Err(error)
        }
    }
}
