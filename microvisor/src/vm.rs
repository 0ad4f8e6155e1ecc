//! Virtual machines: the VMCS and vCPU objects and their system calls.
//!
//! A VM is created at boot from its spec record, never at run time: its
//! guest-physical memory (fresh, zeroed frames), nested page tables mapping
//! exactly that memory, a read-only copy of its boot image, its state page
//! and its control block. The memory, the image copy and the state page are
//! also mapped into its world switcher (see `component::build`), which is
//! the only component that can run it; any holder of its vCPU capability
//! can poke it.
//!
//! `VcpuRun` is the world switcher's thread entering the guest: the guest
//! runs on that thread's scheduling context, so its time is charged, and
//! its budget enforced, like any component's. A host interrupt that ends
//! guest mode does not reach the world switcher: the call is rewound so the
//! thread re-issues it after the interrupt was handled (possibly after other
//! threads ran), with an empty dirty mask because the state page did not
//! change.
//!
//! The backend is AMD SVM today; the interface — state page, dirty mask,
//! neutral exit reasons — is the same for the VMX backend to come.

use microvisor::address::{PAGE_SIZE, PhysicalAddress};
use microvisor::npt::NestedTables;
use microvisor::vmcb::{self, GuestRegisters, Vmcb};
use microvisor_abi::spec::{self, MAX_VMS, Spec};
use microvisor_abi::syscall::{Syscall, WAIT_FOREVER};
use microvisor_abi::vcpu::{ExitReason, VcpuState, dirty, intercept};

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::arch::svm::{self as backend, Svm};
use crate::arch::timer;
use crate::state::Kernel;

/// One virtual machine with its single vCPU.
pub struct Vm {
    name: [u8; 32],
    name_len: usize,
    pub switcher: usize,
    pub vmcb: PhysicalAddress,
    pub state: PhysicalAddress,
    pub memory: PhysicalAddress,
    pub memory_bytes: u64,
    pub image: PhysicalAddress,
    pub image_bytes: u64,
    pub nested: NestedTables,
    pub registers: GuestRegisters,
    /// An event whose delivery the last exit interrupted, to re-inject.
    pub pending_event: u64,
    /// A poke is pending: the next run returns at once.
    pub poked: bool,
    /// The current run's time limit (TSC), kept across rewinds.
    pub deadline: Option<u64>,
    /// The thread is re-issuing a rewound run.
    pub rewound: bool,
    /// Created and runnable (false when creation failed).
    pub ready: bool,
}

impl Vm {
    pub const EMPTY: Self = Self {
        name: [0; 32],
        name_len: 0,
        switcher: usize::MAX,
        vmcb: PhysicalAddress(0),
        state: PhysicalAddress(0),
        memory: PhysicalAddress(0),
        memory_bytes: 0,
        image: PhysicalAddress(0),
        image_bytes: 0,
        nested: NestedTables {
            root: PhysicalAddress(0),
        },
        registers: [0; 16],
        pending_event: 0,
        poked: false,
        deadline: None,
        rewound: false,
        ready: false,
    };

    /// The VM's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    fn vmcb(&self) -> &'static mut Vmcb {
        // SAFETY: the VMCB is a page owned by this VM, in the direct map;
        // entries never overlap (see `state`), so this is the only
        // reference while it lives.
        unsafe { &mut *direct(self.vmcb).cast::<Vmcb>() }
    }

    fn state_page(&self) -> &'static mut VcpuState {
        // SAFETY: the state page is a page owned by this VM, in the direct
        // map. Its world switcher writes it only while it runs in ring 3,
        // never during this entry (one CPU); every bit pattern is a valid
        // VcpuState.
        unsafe { &mut *direct(self.state).cast::<VcpuState>() }
    }
}

/// Why a VM was not created.
#[derive(Clone, Copy, Debug)]
pub enum CreateError {
    MissingImage,
    OutOfMemory,
}

impl core::fmt::Display for CreateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::MissingImage => write!(f, "its guest image is not in the boot image"),
            Self::OutOfMemory => write!(f, "out of physical memory for its guest memory"),
        }
    }
}

fn zeroed(kernel: &mut Kernel, pages: u64) -> Result<PhysicalAddress, CreateError> {
    let first = kernel
        .frames
        .allocate_contiguous(pages)
        .ok_or(CreateError::OutOfMemory)?;
    // SAFETY: fresh frames from the allocator, in the direct map.
    unsafe { core::ptr::write_bytes(direct(first), 0, (pages * PAGE_SIZE) as usize) };
    Ok(first)
}

/// Creates every VM of the spec. `image_of` finds a guest image by entry
/// name. A VM that cannot be created is reported and left not ready; its
/// world switcher is then refused at load.
pub fn create_all(
    kernel: &mut Kernel,
    spec: &Spec<'static>,
    image_of: impl Fn(&str) -> Option<&'static [u8]>,
) {
    if spec.vms.is_empty() {
        return;
    }
    let svm = match Svm::enable(&mut kernel.frames) {
        Ok(svm) => {
            log::info!(
                "virtualization: AMD SVM with nested paging, {} ASIDs, next-RIP save {}, VMCB clean bits {}",
                svm.asid_count,
                if svm.next_rip { "yes" } else { "no" },
                if svm.vmcb_clean { "yes" } else { "no" }
            );
            Some(svm)
        }
        Err(why) => {
            log::error!("virtualization: {why}; no VM can start");
            for declared in spec.vms {
                let name = spec::name_of(&declared.name).unwrap_or("?");
                log::error!("VM '{name}' not created: guests cannot run here: {why}");
            }
            None
        }
    };
    kernel.svm = svm;
    for (index, declared) in spec.vms.iter().enumerate().take(MAX_VMS) {
        let name = spec::name_of(&declared.name).unwrap_or("?");
        let vm = &mut kernel.vms[index];
        *vm = Vm::EMPTY;
        vm.name[..name.len()].copy_from_slice(name.as_bytes());
        vm.name_len = name.len();
        vm.switcher = declared.switcher as usize;
        kernel.vm_count = index + 1;
        if kernel.svm.is_none() {
            continue;
        }
        let image = spec::name_of(&declared.image).and_then(&image_of);
        match create(kernel, index, declared, image) {
            Ok(()) => log::info!(
                "created VM '{name}': {} KiB of guest memory, run by '{}'",
                declared.memory_bytes / 1024,
                kernel.components[declared.switcher as usize].name()
            ),
            Err(error) => log::error!("VM '{name}' not created: {error}"),
        }
    }
}

fn create(
    kernel: &mut Kernel,
    index: usize,
    declared: &spec::VmSpec,
    image: Option<&'static [u8]>,
) -> Result<(), CreateError> {
    let image = image.ok_or(CreateError::MissingImage)?;
    let pages = declared.memory_bytes / PAGE_SIZE;
    let memory = zeroed(kernel, pages)?;
    let image_pages = (image.len() as u64).div_ceil(PAGE_SIZE).max(1);
    let image_copy = zeroed(kernel, image_pages)?;
    // SAFETY: `image_copy` holds `image_pages` fresh pages, enough for the
    // image; the image lives in the boot module, which nothing writes.
    unsafe { core::ptr::copy_nonoverlapping(image.as_ptr(), direct(image_copy), image.len()) };
    let state = zeroed(kernel, 1)?;
    let vmcb = zeroed(kernel, 1)?;
    let mut tables = Tables {
        frames: &mut kernel.frames,
    };
    let nested = NestedTables::new(&mut tables).map_err(|_| CreateError::OutOfMemory)?;
    nested
        .map_range(&mut tables, memory, pages)
        .map_err(|_| CreateError::OutOfMemory)?;
    let vm = &mut kernel.vms[index];
    vm.memory = memory;
    vm.memory_bytes = declared.memory_bytes;
    vm.image = image_copy;
    vm.image_bytes = image.len() as u64;
    vm.state = state;
    vm.vmcb = vmcb;
    vm.nested = nested;
    reset(kernel, index);
    kernel.vms[index].ready = true;
    Ok(())
}

/// Puts VM `index` in its power-on state with a fresh ASID (also
/// `VmcsReset`).
pub fn reset(kernel: &mut Kernel, index: usize) {
    let Some(svm) = kernel.svm.as_mut() else {
        return;
    };
    let (asid, reused) = svm.asids.take().unwrap_or((1, true));
    let flush = svm.flush_value();
    let (iopm, msrpm) = (svm.iopm.0, svm.msrpm.0);
    let vm = &mut kernel.vms[index];
    let vmcb = vm.vmcb();
    vmcb.init(iopm, msrpm, vm.nested.root.0, asid);
    // A fresh ASID holds no translations; a reused one may.
    vmcb.tlb_control = if reused { flush } else { 0 };
    vm.registers = [0; 16];
    vm.pending_event = 0;
    vm.poked = false;
    vm.deadline = None;
    vm.rewound = false;
    let state = vm.state_page();
    vmcb::read_out(vmcb, &vm.registers, state);
    state.entries = 0;
    state.last_writes = 0;
}

/// The VM component `switcher` runs, if it was created.
pub fn of_switcher(kernel: &Kernel, switcher: usize) -> Option<usize> {
    kernel.vms[..kernel.vm_count]
        .iter()
        .position(|vm| vm.switcher == switcher)
}

/// Ends a run without entering the guest.
fn early_exit(state: &mut VcpuState, reason: ExitReason) -> Option<ExitReason> {
    state.exit_reason = reason as u32;
    state.raw_exit = 0;
    state.instruction_length = 0;
    Some(reason)
}

/// `VcpuRun` by component `caller` on VM `index` with `mask` and a time
/// limit of `limit_us` ([`WAIT_FOREVER`]: none). Returns the exit reason,
/// or `None` when a host interrupt ended guest mode and the call was
/// rewound to be issued again.
pub fn run(
    kernel: &mut Kernel,
    caller: usize,
    index: usize,
    mask: u64,
    limit_us: u64,
) -> Option<ExitReason> {
    let now = timer::now();
    let vm = &mut kernel.vms[index];
    if !core::mem::take(&mut vm.rewound) {
        vm.deadline = (limit_us != WAIT_FOREVER)
            .then(|| now.saturating_add(kernel.clock.ticks_from_us(limit_us)));
    }
    let state = vm.state_page();
    if core::mem::take(&mut vm.poked) {
        return early_exit(state, ExitReason::Poked);
    }
    if let Some(deadline) = vm.deadline {
        if deadline <= now {
            vm.deadline = None;
            return early_exit(state, ExitReason::TimeLimit);
        }
        // The alarm must fire by the deadline even if nothing else is due.
        if kernel.armed.is_none_or(|armed| armed > deadline) {
            kernel.clock.arm(deadline - now);
            kernel.armed = Some(deadline);
        }
    }
    let Some(svm) = kernel.svm.as_ref() else {
        return Some(ExitReason::InvalidState);
    };
    let vm = &mut kernel.vms[index];
    let vmcb = vm.vmcb();
    let writes = vmcb::write_back(vmcb, &mut vm.registers, state, mask);
    if mask & dirty::INJECT == 0 && vm.pending_event != 0 {
        vmcb.event_inject = core::mem::take(&mut vm.pending_event);
    }
    state.last_writes = u64::from(writes);
    state.entries += 1;
    if !svm.vmcb_clean {
        vmcb.clean = 0;
    }
    // SAFETY: the VMCB was set up by `reset` for this VM (mandatory
    // intercepts, nested tables over its memory, the shared maps) and the
    // core runs with interrupts disabled.
    unsafe { backend::enter(svm, vm.vmcb, &mut vm.registers) };
    vmcb.clean = vmcb::clean::ALL;
    vmcb.tlb_control = 0;
    vmcb.event_inject = 0;
    let exit = vmcb::decode_exit(vmcb, svm.next_rip);
    if vmcb.exit_int_info & (1 << 31) != 0 {
        vm.pending_event = vmcb.exit_int_info;
    }
    let Some(reason) = exit.reason else {
        vm.rewound = true;
        rewind(&mut kernel.components[caller].frame);
        return None;
    };
    vm.deadline = None;
    vmcb::read_out(vmcb, &vm.registers, state);
    state.exit_reason = reason as u32;
    state.instruction_length = exit.instruction_length;
    state.raw_exit = vmcb.exit_code;
    state.qualification = exit.qualification;
    state.qualification2 = exit.qualification2;
    state.guest_physical = exit.guest_physical;
    state.exit_event = vm.pending_event;
    Some(reason)
}

/// Makes the thread re-issue its `VcpuRun` (a 2-byte `syscall`) with an
/// empty dirty mask once it resumes.
fn rewind(frame: &mut Frame) {
    frame.rip -= 2;
    frame.rax = Syscall::VcpuRun as u64;
    frame.rsi = 0;
}

/// `VcpuPoke`.
pub fn poke(kernel: &mut Kernel, index: usize) {
    kernel.vms[index].poked = true;
}

/// `VmcsControl`: `false` if `mask` has unknown bits.
pub fn control(kernel: &mut Kernel, index: usize, mask: u64) -> bool {
    if mask & !intercept::ALL != 0 {
        return false;
    }
    kernel.vms[index].vmcb().set_optional_intercepts(mask);
    true
}
