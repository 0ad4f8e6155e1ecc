//! A virtual machine and its single vCPU: the VMCS and vCPU objects.
//!
//! A VM is created at boot from its spec record, never at run time: its
//! guest-physical memory (fresh, zeroed frames), nested page tables
//! mapping exactly that memory, a read-only copy of its boot image, its
//! state page and its control block. The memory, the image copy and the
//! state page are also mapped into its world switcher (`crate::loader`),
//! the only component that can run it.
//!
//! A run is two steps: [`Vm::begin_run`] settles what happens before the
//! guest is entered (a pending poke or an expired time limit end the run at
//! once, keeping its dirty mask for the next entry; a run re-issued after a
//! host interrupt keeps its deadline; [`Vm::begin_unlimited_run`] is its
//! shortcut for a run without a limit when none of this applies), and
//! [`Vm::enter`] writes back the dirty state, enters the guest and
//! publishes the exit. The pure halves (write-back, exit decoding, what is
//! published) are the host-tested `microvisor::vmcb`. The backend is AMD
//! SVM today; the interface — state page, dirty mask, neutral exit reasons
//! — is the same for the VMX backend to come.
//!
//! The control block and the state page are reached only through
//! [`Vm::parts`], which borrows the VM mutably, so no two references to
//! either can exist in the core.

use microvisor::address::{PAGE_SIZE, PhysicalAddress};
use microvisor::npt::NestedTables;
use microvisor::vmcb::{self, Unapplied, Vmcb};
use microvisor_abi::spec::VmSpec;
use microvisor_abi::vcpu::{
    ExitReason, HINTS_GUEST_PHYSICAL, VcpuState, dirty, intercept, published,
};

use crate::arch::cpu::FpuState;
use crate::arch::memory::{Tables, direct};
use crate::arch::svm::{self as backend, Svm};

/// One virtual machine with its single vCPU.
pub struct Vm {
    name: [u8; 32],
    name_len: usize,
    switcher: usize,
    vmcb: PhysicalAddress,
    state: PhysicalAddress,
    memory: PhysicalAddress,
    memory_bytes: u64,
    image: PhysicalAddress,
    image_bytes: u64,
    /// The guest-hints page, at [`HINTS_GUEST_PHYSICAL`] in the guest.
    hints: PhysicalAddress,
    nested: NestedTables,
    /// An event whose delivery the last exit interrupted, to re-inject.
    pending_event: u64,
    /// The window requests the VMCB's intercepts hold
    /// ([`vmcb::windows`]), kept where the core changes them (reset, a
    /// write-back of [`dirty::INTERRUPT_WINDOW`], an IRET exit) so an
    /// exit publishes them without working them out.
    windows: u64,
    /// A poke is pending: the next run returns at once.
    poked: bool,
    /// The current run's time limit (TSC), kept across rewinds.
    deadline: Option<u64>,
    /// The thread is re-issuing a rewound run.
    rewound: bool,
    /// Dirty bits of runs that ended before entering the guest.
    unapplied: Unapplied,
    /// Created and runnable (false when creation failed).
    ready: bool,
    /// Entered at least once since boot (resets do not clear it).
    ever_entered: bool,
    /// The guest's x87/SSE registers while another VM's are in the CPU
    /// (see `crate::vcpu`).
    fpu: FpuState,
    /// The guest's `TSC_AUX`, loaded around its entries (see
    /// `Svm::load_tsc_aux`); taken from the state page with
    /// `dirty::TSC_AUX`.
    tsc_aux: u32,
}

/// Where a VM's memory, image copy and state page are, for mapping them
/// into its world switcher.
#[derive(Clone, Copy, Debug)]
pub struct GuestMapping {
    pub memory: PhysicalAddress,
    pub memory_bytes: u64,
    pub image: PhysicalAddress,
    pub image_bytes: u64,
    pub state: PhysicalAddress,
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

/// What an entry uses of a VM, borrowed from it at once.
struct Parts<'a> {
    vmcb: &'a mut Vmcb,
    state: &'a mut VcpuState,
    pending_event: &'a mut u64,
    windows: &'a mut u64,
}

/// How a run ends before the guest is entered.
pub enum Start {
    /// Enter the guest; arm the alarm for this deadline, if any.
    Enter(Option<u64>),
    /// Do not enter: the run ends with this reason (already published).
    Exit(ExitReason),
}

fn zeroed(frames: &mut Tables<'_, '_>, pages: u64) -> Result<PhysicalAddress, CreateError> {
    let first = frames
        .frames
        .allocate_contiguous(pages)
        .ok_or(CreateError::OutOfMemory)?;
    // SAFETY: fresh frames from the allocator, in the direct map.
    unsafe { core::ptr::write_bytes(direct(first), 0, (pages * PAGE_SIZE) as usize) };
    Ok(first)
}

impl Vm {
    /// An unused slot.
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
        hints: PhysicalAddress(0),
        nested: NestedTables {
            root: PhysicalAddress(0),
        },
        pending_event: 0,
        windows: 0,
        poked: false,
        unapplied: Unapplied::NONE,
        deadline: None,
        rewound: false,
        ready: false,
        ever_entered: false,
        fpu: FpuState::RESET,
        tsc_aux: 0,
    };

    /// A declared VM run by component `switcher`, not yet created.
    pub fn declare(name: &str, switcher: usize) -> Self {
        let mut vm = Self::EMPTY;
        let name = &name.as_bytes()[..name.len().min(32)];
        vm.name[..name.len()].copy_from_slice(name);
        vm.name_len = name.len();
        vm.switcher = switcher;
        vm
    }

    /// The VM's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// The component that runs it.
    pub fn switcher(&self) -> usize {
        self.switcher
    }

    /// Whether it was created and can run.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether its guest was ever entered.
    pub fn ever_entered(&self) -> bool {
        self.ever_entered
    }

    /// Its memory, image copy and state page, once created.
    pub fn mapping(&self) -> Option<GuestMapping> {
        self.ready.then_some(GuestMapping {
            memory: self.memory,
            memory_bytes: self.memory_bytes,
            image: self.image,
            image_bytes: self.image_bytes,
            state: self.state,
        })
    }

    /// Allocates its memory, nested tables, image copy, state page and
    /// control block, and puts it in its power-on state.
    pub fn create(
        &mut self,
        tables: &mut Tables<'_, '_>,
        svm: &mut Svm,
        declared: &VmSpec,
        image: Option<&'static [u8]>,
    ) -> Result<(), CreateError> {
        let image = image.ok_or(CreateError::MissingImage)?;
        let pages = declared.memory_bytes / PAGE_SIZE;
        let memory = zeroed(tables, pages)?;
        let image_pages = (image.len() as u64).div_ceil(PAGE_SIZE).max(1);
        let image_copy = zeroed(tables, image_pages)?;
        // SAFETY: `image_copy` holds `image_pages` fresh pages, enough for
        // the image; the image lives in the boot module, which nothing
        // writes.
        unsafe { core::ptr::copy_nonoverlapping(image.as_ptr(), direct(image_copy), image.len()) };
        let state = zeroed(tables, 1)?;
        let vmcb = zeroed(tables, 1)?;
        let nested = NestedTables::new(tables).map_err(|_| CreateError::OutOfMemory)?;
        nested
            .map_range(tables, memory, pages)
            .map_err(|_| CreateError::OutOfMemory)?;
        let hints = zeroed(tables, 1)?;
        nested
            .map(tables, HINTS_GUEST_PHYSICAL, hints)
            .map_err(|_| CreateError::OutOfMemory)?;
        self.hints = hints;
        self.memory = memory;
        self.memory_bytes = declared.memory_bytes;
        self.image = image_copy;
        self.image_bytes = image.len() as u64;
        self.state = state;
        self.vmcb = vmcb;
        self.nested = nested;
        self.reset(svm);
        self.ready = true;
        Ok(())
    }

    /// The control block, the state page and the pending event, borrowed
    /// together.
    #[inline(always)]
    fn parts(&mut self) -> Parts<'_> {
        // SAFETY: the VMCB and the state page are pages owned by this VM,
        // in the direct map, and set up by `create` before any call here;
        // `&mut self` makes these the only references in the core. The
        // world switcher writes the state page only while it runs in
        // ring 3, never during an entry into the core (one CPU), and every
        // bit pattern is a valid `VcpuState`.
        unsafe {
            Parts {
                vmcb: &mut *direct(self.vmcb).cast::<Vmcb>(),
                state: &mut *direct(self.state).cast::<VcpuState>(),
                pending_event: &mut self.pending_event,
                windows: &mut self.windows,
            }
        }
    }

    /// Its guest-hints page, once created.
    pub fn hints(&self) -> Option<PhysicalAddress> {
        self.ready.then_some(self.hints)
    }

    /// Puts it in its power-on state with a fresh ASID (also `VmcsReset`);
    /// its guest-hints page is cleared.
    pub fn reset(&mut self, svm: &mut Svm) {
        if self.hints.0 != 0 {
            // SAFETY: the hints page is a frame this VM owns, in the
            // direct map; nothing in the core holds a reference to it
            // (the guest and its readers reach it through their own
            // mappings, and neither runs during an entry into the core).
            unsafe { core::ptr::write_bytes(direct(self.hints), 0, PAGE_SIZE as usize) };
        }
        let (asid, reused) = svm.asids.take().unwrap_or((1, true));
        let flush = svm.flush_value();
        let (iopm, msrpm, nested) = (svm.iopm.0, svm.msrpm.0, self.nested.root.0);
        self.pending_event = 0;
        self.poked = false;
        self.deadline = None;
        self.rewound = false;
        self.unapplied = Unapplied::NONE;
        self.fpu = FpuState::RESET;
        self.tsc_aux = 0;
        let parts = self.parts();
        parts.vmcb.init(iopm, msrpm, nested, asid);
        // A fresh ASID holds no translations; a reused one may.
        parts.vmcb.tlb_control = if reused { flush } else { 0 };
        *parts.windows = vmcb::windows(parts.vmcb);
        parts.state.gpr = [0; 16];
        vmcb::read_out(parts.vmcb, parts.state);
        parts.state.entries = 0;
        parts.state.last_writes = 0;
        parts.state.tsc_aux = 0;
    }

    /// Where the guest's x87/SSE registers are kept while it is not the
    /// CPU's FPU owner.
    pub fn fpu(&mut self) -> &mut FpuState {
        &mut self.fpu
    }

    /// Makes the next run return at once with [`ExitReason::Poked`].
    pub fn poke(&mut self) {
        self.poked = true;
    }

    /// Sets its optional intercepts; `false` if `mask` has unknown bits.
    pub fn control(&mut self, mask: u64) -> bool {
        if mask & !intercept::ALL != 0 {
            return false;
        }
        self.parts().vmcb.set_optional_intercepts(mask);
        true
    }

    /// The first step of a run at `now` with dirty bits `mask`: a new run
    /// takes the deadline `deadline` gives; a re-issued one keeps its own.
    /// A run that ends here keeps `mask` for the next entry; a re-issued
    /// one (the guest ran until a host interrupt) first publishes where
    /// the guest is now, so the world switcher never decides on the state
    /// of an earlier exit.
    #[inline(always)]
    pub fn begin_run(
        &mut self,
        now: u64,
        mask: u64,
        deadline: impl FnOnce() -> Option<u64>,
    ) -> Start {
        let resumed = core::mem::take(&mut self.rewound);
        if !resumed {
            self.deadline = deadline();
        }
        let reason = if core::mem::take(&mut self.poked) {
            ExitReason::Poked
        } else {
            match self.deadline {
                Some(deadline) if deadline <= now => {
                    self.deadline = None;
                    ExitReason::TimeLimit
                }
                deadline => return Start::Enter(deadline),
            }
        };
        let mut unapplied = self.unapplied;
        let parts = self.parts();
        if resumed {
            vmcb::publish_guest(parts.vmcb, parts.state, *parts.pending_event);
        }
        unapplied.end_early(parts.state, reason, mask);
        self.unapplied = unapplied;
        Start::Exit(reason)
    }

    /// The first step of a run without a time limit when neither a poke
    /// nor a rewound run's deadline is pending: it enters the guest with no
    /// deadline, which is what [`Vm::begin_run`] decides then, without
    /// reading the clock. `false` (nothing changed): use
    /// [`Vm::begin_run`].
    #[inline(always)]
    pub fn begin_unlimited_run(&mut self) -> bool {
        if self.rewound || self.poked {
            return false;
        }
        self.deadline = None;
        true
    }

    /// `VcpuRun` with [`dirty::FETCH`]: publishes the lazily published
    /// groups the last exit left stale ([`vmcb::fetch_stale`]) as the guest
    /// has them now, except the fields `keep` names and those of runs that
    /// ended before entering (the world switcher's edits, not yet written
    /// back); returns the last exit's reason, which stays in the page.
    pub fn fetch(&mut self, keep: u64) -> u32 {
        let keep = keep | self.unapplied.pending();
        let parts = self.parts();
        vmcb::fetch_stale(parts.vmcb, parts.state, keep);
        parts.state.exit_reason
    }

    /// Enters the guest after writing back the state-page fields in
    /// `mask`, until the next exit, and publishes it. `None` when a host
    /// interrupt ended guest mode: the run must be re-issued (with an
    /// empty mask: the state page did not change) after it is handled.
    #[inline(always)]
    pub fn enter(&mut self, svm: &Svm, mask: u64) -> Option<ExitReason> {
        self.ever_entered = true;
        let mask = self.unapplied.with(mask);
        let vmcb_address = self.vmcb;
        if mask & dirty::TSC_AUX != 0 {
            // 32 bits: the world switcher refuses wider values.
            self.tsc_aux = self.parts().state.tsc_aux as u32;
        }
        let tsc_aux = self.tsc_aux;
        let parts = self.parts();
        let (vmcb, state) = (parts.vmcb, parts.state);
        let (pending, windows) = (parts.pending_event, parts.windows);
        vmcb::prepare_entry(vmcb, state, mask, pending, svm.vmcb_clean);
        if mask & dirty::INTERRUPT_WINDOW != 0 {
            *windows = vmcb::windows(vmcb);
        }
        let loaded = svm.load_tsc_aux(tsc_aux);
        // SAFETY: the VMCB was set up by `reset` for this VM (mandatory
        // intercepts, nested tables over its memory, the shared maps) and
        // the core runs with interrupts disabled; the registers are the
        // state page's, which no one else touches while the core runs.
        unsafe { backend::enter(svm, vmcb_address, &mut state.gpr) };
        if loaded {
            svm.clear_tsc_aux();
        }
        // The commonest exits get their own copy of the rest, so their
        // constant fields are published as constants; every other exit
        // publishes the control registers (all but CPUID and port I/O
        // need them) without testing its reason for them.
        let next_rip = svm.next_rip;
        let published = match vmcb.exit_code {
            vmcb::exit::CPUID => conclude(svm, (vmcb, state), (windows, pending), 0, |vmcb| {
                vmcb::saved_length_exit(vmcb, next_rip, Some(ExitReason::Cpuid))
            }),
            vmcb::exit::IOIO => conclude(
                svm,
                (vmcb, state),
                (windows, pending),
                0,
                vmcb::decode_io_exit,
            ),
            _ => conclude(
                svm,
                (vmcb, state),
                (windows, pending),
                published::CONTROL,
                |vmcb| vmcb::decode_other_exit(vmcb, next_rip),
            ),
        };
        match published {
            Some(_) => self.deadline = None,
            None => self.rewound = true,
        }
        published
    }
}

/// The rest of an exit after guest mode: the VMCB taken back
/// ([`vmcb::finish_exit_with`] with `decode`), the window requests kept
/// current, XCR0 checked, and the exit published (with at least the
/// groups `at_least` names: [`vmcb::publish_exit`]); `None` for a host
/// interrupt (nothing published: the run is re-issued).
#[inline(always)]
fn conclude(
    svm: &Svm,
    (vmcb, state): (&mut Vmcb, &mut VcpuState),
    (windows, pending): (&mut u64, &mut u64),
    at_least: u64,
    decode: impl FnOnce(&Vmcb) -> vmcb::Exit,
) -> Option<ExitReason> {
    let mut exit = vmcb::finish_exit_with(vmcb, pending, decode);
    if vmcb.exit_code == vmcb::exit::IRET {
        // `finish_exit_with` cancelled the IRET request.
        *windows = vmcb::windows(vmcb);
    }
    if let Some(found) = svm.restore_xcr0() {
        exit = vmcb::Exit::xcr0_changed(found);
    }
    let reason = exit.reason?;
    vmcb::publish_exit(vmcb, state, &exit, reason, (*windows, *pending), at_least);
    Some(reason)
}
