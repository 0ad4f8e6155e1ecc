//! The core's global state and scheduling decisions.
//!
//! There is exactly one [`Kernel`], created at boot. The core runs on one
//! CPU with interrupts disabled whenever it executes (the idle loop is the
//! only ring-0 code with interrupts on, and it holds no state), and every
//! entry finishes — returns to a thread or to the idle loop, or halts —
//! before the next begins. So each entry takes `&mut Kernel` once through
//! [`kernel`] and passes it down; nothing else holds a reference across
//! entries. Traps taken inside the core are fatal and read only the
//! separately kept running-component index.
//!
//! Scheduling: [`Kernel::schedule`] charges the running thread's scheduling
//! context, wakes threads whose timeouts passed, picks the highest-priority
//! ready thread with budget (round robin among equals), and arms the APIC
//! timer for the earliest event that could change that choice. With
//! nothing ready it returns the idle frame; with nothing that could ever run
//! again the system halts with its verdict.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use microvisor::frame::FrameAllocator;
use microvisor::paging::AddressSpace;
use microvisor::sched::{self, Candidate};
use microvisor_abi::spec::Spec;
use microvisor_abi::syscall::Status;

use crate::arch::entry::{self, Frame};
use crate::arch::svm::Svm;
use crate::arch::timer::{self, Clock};
use crate::component::{Component, ComponentState, MAX_COMPONENTS, MAX_QUEUES, Queue};
use crate::vm::Vm;
use microvisor_abi::spec::MAX_VMS;

/// Threads of equal priority share the CPU in slices of this length.
const TIME_SLICE_US: u64 = 10_000;

/// Everything the core knows after boot.
pub struct Kernel {
    pub frames: FrameAllocator<'static>,
    pub kernel_space: AddressSpace,
    /// The address space in CR3.
    pub loaded_space: AddressSpace,
    pub components: [Component; MAX_COMPONENTS],
    pub component_count: usize,
    pub queues: [Queue; MAX_QUEUES],
    pub queue_count: usize,
    pub vms: [Vm; MAX_VMS],
    pub vm_count: usize,
    /// The SVM backend, once enabled (only when the spec declares VMs).
    pub svm: Option<Svm>,
    /// The system description, when the image has one.
    pub spec: Option<Spec<'static>>,
    /// The component running now (None while idle).
    pub running: Option<usize>,
    /// The component that ran last (for round robin).
    pub last: Option<usize>,
    /// When the running component was dispatched (TSC).
    pub dispatched_at: u64,
    /// Components refused at load.
    pub refused: usize,
    pub clock: Clock,
    /// The idle loop's frame.
    pub idle: Frame,
    /// The deadline the APIC timer is armed for (TSC), if any.
    pub armed: Option<u64>,
}

struct KernelCell(UnsafeCell<MaybeUninit<Kernel>>);

// SAFETY: see the module documentation: one CPU, entries never overlap.
unsafe impl Sync for KernelCell {}

static KERNEL: KernelCell = KernelCell(UnsafeCell::new(MaybeUninit::uninit()));

/// Index of the running component plus one (0 = none), for fatal reports.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Installs the kernel state at boot, field by field in place (the state
/// is far larger than is wise to build on the boot stack).
pub fn install(
    frames: FrameAllocator<'static>,
    kernel_space: AddressSpace,
    clock: Clock,
    idle: Frame,
) -> &'static mut Kernel {
    let kernel = KERNEL.0.get().cast::<Kernel>();
    // SAFETY: called once, at boot, before any entry exists; every field is
    // written before the reference is created.
    unsafe {
        addr_of_mut!((*kernel).frames).write(frames);
        addr_of_mut!((*kernel).kernel_space).write(kernel_space);
        addr_of_mut!((*kernel).loaded_space).write(kernel_space);
        let components = addr_of_mut!((*kernel).components).cast::<Component>();
        for index in 0..MAX_COMPONENTS {
            components.add(index).write(Component::EMPTY);
        }
        addr_of_mut!((*kernel).component_count).write(0);
        let queues = addr_of_mut!((*kernel).queues).cast::<Queue>();
        for index in 0..MAX_QUEUES {
            queues.add(index).write(Queue::EMPTY);
        }
        addr_of_mut!((*kernel).queue_count).write(0);
        let vms = addr_of_mut!((*kernel).vms).cast::<Vm>();
        for index in 0..MAX_VMS {
            vms.add(index).write(Vm::EMPTY);
        }
        addr_of_mut!((*kernel).vm_count).write(0);
        addr_of_mut!((*kernel).svm).write(None);
        addr_of_mut!((*kernel).spec).write(None);
        addr_of_mut!((*kernel).running).write(None);
        addr_of_mut!((*kernel).last).write(None);
        addr_of_mut!((*kernel).dispatched_at).write(0);
        addr_of_mut!((*kernel).refused).write(0);
        addr_of_mut!((*kernel).clock).write(clock);
        addr_of_mut!((*kernel).idle).write(idle);
        addr_of_mut!((*kernel).armed).write(None);
        &mut *kernel
    }
}

/// The kernel state, for one entry.
///
/// # Safety
/// Call once per entry, after [`install`], and drop the reference before
/// leaving the core (see the module documentation).
pub unsafe fn kernel() -> &'static mut Kernel {
    // SAFETY: installed at boot (caller's contract) and not aliased.
    unsafe { (*KERNEL.0.get()).assume_init_mut() }
}

/// The index of the running component, if any (for fatal reports).
pub fn running_component() -> Option<usize> {
    RUNNING.load(Ordering::Relaxed).checked_sub(1)
}

/// Calls `report` with the running component's name, for a fatal report.
///
/// The entry that was interrupted may hold `&mut Kernel`; this reads one
/// name through a raw pointer instead. That is sound only because the
/// caller halts the machine afterwards: the interrupted entry never runs
/// again, so the two accesses can never interleave with a write.
pub fn with_running_name(report: impl FnOnce(Option<&str>)) {
    let Some(index) = running_component() else {
        return report(None);
    };
    let kernel = KERNEL.0.get().cast::<Kernel>();
    // SAFETY: RUNNING is only set after `install`, so the state is
    // initialised; `index` < component_count when it was stored; the read
    // happens on the fatal path only (see above).
    let name = unsafe { (*kernel).components.get(index).map(|c| c.name()) };
    report(name);
}

/// What the scheduler needs to know of a component.
fn candidate(component: &Component) -> Candidate {
    Candidate {
        ready: component.state == ComponentState::Ready && !component.scheduling.is_depleted(),
        priority: component.priority,
    }
}

/// Sets `bits` in component `target`'s notification word, waking it if it
/// waits: its `Wait` then answers the word (and clears it).
pub fn notify(components: &mut [Component], target: usize, bits: u64) {
    let Some(component) = components.get_mut(target) else {
        return;
    };
    component.notification |= bits;
    if component.state == ComponentState::Waiting && component.notification != 0 {
        component.frame.rax = Status::Ok as u64;
        component.frame.rdx = component.notification;
        component.notification = 0;
        component.wake_at = None;
        component.state = ComponentState::Ready;
    }
}

impl Kernel {
    /// The running component's index. Entries from ring 3 only happen while
    /// a component runs, so it is always set there.
    pub fn current_index(&self) -> usize {
        self.running.unwrap_or(0)
    }

    /// Loads `space` into CR3 if it is not loaded.
    pub fn load_space(&mut self, space: AddressSpace) {
        if self.loaded_space != space {
            // SAFETY: every address space shares the core's upper half, so
            // the core keeps running after the switch.
            unsafe { crate::arch::cpu::write_cr3(space.root.0) };
            self.loaded_space = space;
        }
    }

    /// Sets component `index`'s bit in its supervisor's notification word
    /// (it faulted or exited) and returns the supervisor, if it has one.
    pub fn notify_supervisor(&mut self, index: usize) -> Option<usize> {
        let component = &self.components[index];
        let (supervisor, bit) = (component.supervisor?, component.fault_bit);
        notify(
            &mut self.components[..self.component_count],
            supervisor,
            1 << bit,
        );
        Some(supervisor)
    }

    /// Charges the running component for the time since its dispatch.
    pub fn account(&mut self, now: u64) {
        if let Some(index) = self.running {
            let elapsed = now.saturating_sub(self.dispatched_at);
            self.components[index].scheduling.charge(elapsed, now);
            self.dispatched_at = now;
        }
    }

    fn wake_expired(&mut self, now: u64) {
        for component in &mut self.components[..self.component_count] {
            component.scheduling.refill(now);
            if component.state == ComponentState::Waiting
                && component.wake_at.is_some_and(|at| at <= now)
            {
                component.frame.rax = Status::TimedOut as u64;
                component.frame.rdx = 0;
                component.wake_at = None;
                component.state = ComponentState::Ready;
            }
        }
    }

    /// Decides what runs next and returns its frame (see the module
    /// documentation).
    pub fn schedule(&mut self) -> *const Frame {
        let now = timer::now();
        self.account(now);
        self.wake_expired(now);
        let components = &self.components[..self.component_count];
        let chosen = sched::choose_with(components.len(), self.last, |index| {
            candidate(&components[index])
        });
        let next_event = self.next_event(chosen, now);
        if next_event != self.armed {
            match next_event {
                Some(at) => self.clock.arm(at.saturating_sub(now).max(1)),
                None => self.clock.disarm(),
            }
            self.armed = next_event;
        }
        match chosen {
            Some(index) => self.switch_to(index, now),
            None if next_event.is_some() => {
                self.running = None;
                RUNNING.store(0, Ordering::Relaxed);
                &self.idle
            }
            None => self.finish(),
        }
    }

    /// The earliest time at which the scheduling decision may change.
    fn next_event(&self, chosen: Option<usize>, now: u64) -> Option<u64> {
        let mut earliest: Option<u64> = None;
        let mut consider = |at: u64| earliest = Some(earliest.map_or(at, |e: u64| e.min(at)));
        if let Some(index) = chosen {
            let running = &self.components[index];
            if !running.scheduling.is_unlimited() {
                consider(now.saturating_add(running.scheduling.remaining()));
            }
            let shares = self.components[..self.component_count]
                .iter()
                .enumerate()
                .any(|(other, c)| {
                    let c = candidate(c);
                    other != index && c.ready && c.priority == running.priority
                });
            if shares {
                consider(now.saturating_add(self.clock.ticks_from_us(TIME_SLICE_US)));
            }
        }
        for component in &self.components[..self.component_count] {
            if let Some(at) = component
                .wake_at
                .filter(|_| component.state == ComponentState::Waiting)
            {
                consider(at);
            }
            if component.state == ComponentState::Ready && component.scheduling.is_depleted() {
                consider(component.scheduling.next_refill());
            }
        }
        earliest
    }

    /// Makes component `index` the running one and returns its frame.
    fn switch_to(&mut self, index: usize, now: u64) -> *const Frame {
        self.load_space(self.components[index].space);
        self.running = Some(index);
        self.last = Some(index);
        self.dispatched_at = now;
        RUNNING.store(index + 1, Ordering::Relaxed);
        let frame: *const Frame = &self.components[index].frame;
        entry::set_current_frame(frame);
        frame
    }

    /// No component can ever run again: report and halt.
    fn finish(&mut self) -> ! {
        RUNNING.store(0, Ordering::Relaxed);
        let (mut exited, mut failed, mut faulted, mut stopped, mut blocked) = (0, 0, 0, 0, 0);
        for component in &self.components[..self.component_count] {
            match component.state {
                ComponentState::Exited(0) => exited += 1,
                ComponentState::Exited(_) => failed += 1,
                ComponentState::Faulted if component.supervisor.is_none() => faulted += 1,
                ComponentState::Faulted | ComponentState::Stopped => stopped += 1,
                ComponentState::Waiting | ComponentState::NotStarted => blocked += 1,
                ComponentState::Ready => {}
            }
        }
        log::info!(
            "all components finished: {exited} exited, {failed} exited with an error, {faulted} faulted, {stopped} stopped by a supervisor, {blocked} waiting forever, {} refused",
            self.refused
        );
        for component in &self.components[..self.component_count] {
            if component.fault_count > crate::trap::REPORTED_FAULTS {
                log::info!(
                    "component '{}' faulted {} times in all (generation {})",
                    component.name(),
                    component.fault_count,
                    component.generation
                );
            }
        }
        self.load_space(self.kernel_space);
        if failed + faulted + self.refused == 0 {
            crate::shutdown::halt(true, "")
        } else {
            crate::shutdown::halt(false, "a component failed, faulted or was refused")
        }
    }
}
