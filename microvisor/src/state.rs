//! The core's global state and the round-robin choice of the next thread.
//!
//! There is exactly one [`Kernel`], created at boot. The core runs on one
//! CPU with interrupts disabled whenever it executes, and every entry from
//! ring 3 finishes (returns to ring 3 or halts) before the next begins, so
//! each entry takes `&mut Kernel` once through [`kernel`] and passes it
//! down; nothing else holds a reference across entries. Traps taken inside
//! the core are fatal and read only the separately kept component names.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use microvisor::frame::FrameAllocator;
use microvisor::paging::AddressSpace;

use crate::arch::entry::{self, Frame};
use crate::component::{Component, ComponentState, MAX_COMPONENTS};

/// Everything the core knows after boot.
pub struct Kernel {
    pub frames: FrameAllocator<'static>,
    pub kernel_space: AddressSpace,
    pub components: [Component; MAX_COMPONENTS],
    pub component_count: usize,
    /// The component whose thread runs (or last ran).
    pub current: Option<usize>,
    /// Components refused at load.
    pub refused: usize,
}

struct KernelCell(UnsafeCell<MaybeUninit<Kernel>>);

// SAFETY: see the module documentation: one CPU, entries never overlap.
unsafe impl Sync for KernelCell {}

static KERNEL: KernelCell = KernelCell(UnsafeCell::new(MaybeUninit::uninit()));

/// Index of the running component plus one (0 = none), for fatal reports.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Installs the kernel state at boot.
pub fn install(kernel: Kernel) -> &'static mut Kernel {
    // SAFETY: called once, at boot, before any entry from ring 3 exists.
    unsafe { (*KERNEL.0.get()).write(kernel) }
}

/// The kernel state, for one entry from ring 3.
///
/// # Safety
/// Call once per entry, after [`install`], and drop the reference before
/// returning to ring 3 (see the module documentation).
pub unsafe fn kernel() -> &'static mut Kernel {
    // SAFETY: installed at boot (caller's contract) and not aliased.
    unsafe { (*KERNEL.0.get()).assume_init_mut() }
}

/// The index of the running component, if any (for fatal reports).
pub fn running_component() -> Option<usize> {
    RUNNING.load(Ordering::Relaxed).checked_sub(1)
}

impl Kernel {
    /// The running component's index. Entries from ring 3 only happen while
    /// a component runs, so this is always set there.
    pub fn current_index(&self) -> usize {
        self.current.unwrap_or(0)
    }

    /// Picks the next runnable component after the current one (round
    /// robin), switches to its address space and returns its frame. When
    /// none is left, the system halts with its verdict.
    pub fn schedule(&mut self) -> *const Frame {
        let count = self.component_count;
        let start = self.current.map_or(0, |c| c + 1);
        let next = (0..count)
            .map(|step| (start + step) % count.max(1))
            .find(|&index| self.components[index].state == ComponentState::Runnable);
        match next {
            Some(index) => self.switch_to(index),
            None => self.finish(),
        }
    }

    /// Makes component `index` current and returns its frame.
    pub fn switch_to(&mut self, index: usize) -> *const Frame {
        let component = &self.components[index];
        if self.current != Some(index) {
            // SAFETY: the component's address space shares the core's upper
            // half, so the core keeps running after the switch.
            unsafe { crate::arch::cpu::write_cr3(component.space.root.0) };
        }
        self.current = Some(index);
        RUNNING.store(index + 1, Ordering::Relaxed);
        let frame: *const Frame = &component.frame;
        entry::set_current_frame(frame);
        frame
    }

    /// Every component has ended: report and halt.
    fn finish(&mut self) -> ! {
        RUNNING.store(0, Ordering::Relaxed);
        let (mut exited, mut failed, mut faulted) = (0, 0, 0);
        for component in &self.components[..self.component_count] {
            match component.state {
                ComponentState::Exited(0) => exited += 1,
                ComponentState::Exited(_) => failed += 1,
                ComponentState::Faulted => faulted += 1,
                ComponentState::Runnable => {}
            }
        }
        log::info!(
            "all components finished: {exited} exited, {failed} exited with an error, {faulted} faulted, {} refused",
            self.refused
        );
        // SAFETY: the core's own tables map the core; no user code runs again.
        unsafe { crate::arch::cpu::write_cr3(self.kernel_space.root.0) };
        if failed + faulted + self.refused == 0 {
            crate::shutdown::halt(true, "")
        } else {
            crate::shutdown::halt(false, "a component failed, faulted or was refused")
        }
    }
}
