//! The kernel table: every object the core holds, and the scheduler.
//!
//! There is exactly one [`Kernel`], installed at boot. The core runs on
//! one CPU with interrupts disabled whenever it executes (the idle loop is
//! the only ring-0 code with interrupts on, and it holds no state), and
//! every entry finishes — returns to a thread or to the idle loop, or halts
//! — before the next begins. The table is reached only through
//! [`with_kernel`], which takes the entry's [`Entry`] token by value: the
//! arch entry points make one token per entry (`crate::entry`), so a second
//! `&mut Kernel` inside one entry cannot be made without writing `unsafe`,
//! and no reference outlives the closure. Traps taken inside the core are
//! fatal and read only the separately kept running-component index.
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

use microvisor::console_input::ConsoleInput;
use microvisor::device_memory::NotDevices;
use microvisor::frame::FrameAllocator;
use microvisor::interrupt_lines::InterruptLines;
use microvisor::paging::AddressSpace;
use microvisor::sched;
use microvisor::time::Clock;
use microvisor::verdict::{Tally, Verdict};
use microvisor_abi::spec::{
    MAX_COMPONENTS, MAX_GRANTS, MAX_PCI, MAX_QUEUES, MAX_VMS, PciSpec, Spec,
};

use crate::arch::descriptors;
use crate::arch::entry::{self, Frame};
use crate::arch::svm::Svm;
use crate::arch::timer::{self, Alarm};
use crate::object::component::REPORTED_FAULTS;
use crate::object::{Component, ComponentState, Queue, Vm};
use microvisor_abi::syscall::Status;

/// Threads of equal priority share the CPU in slices of this length.
const TIME_SLICE_US: u64 = 10_000;

/// Everything the core knows after boot.
pub struct Kernel {
    pub frames: FrameAllocator<'static>,
    pub kernel_space: AddressSpace,
    /// The address space in CR3.
    loaded_space: AddressSpace,
    pub components: [Component; MAX_COMPONENTS],
    pub component_count: usize,
    pub queues: [Queue; MAX_QUEUES],
    pub queue_count: usize,
    pub vms: [Vm; MAX_VMS],
    pub vm_count: usize,
    /// The SVM backend, once enabled (only when the spec declares VMs).
    pub svm: Option<Svm>,
    /// The system description.
    pub spec: Spec<'static>,
    /// The component running now (None while idle).
    running: Option<usize>,
    /// The component that ran last (for round robin), as of the last
    /// scheduling decision (`running` is the one since).
    last: Option<usize>,
    /// When the running component was dispatched (TSC).
    dispatched_at: u64,
    /// When the running component's quantum ends (TSC), while it holds
    /// one (`sched::choose_holding`).
    quantum_until: Option<u64>,
    pub clock: Clock,
    /// The idle loop's frame.
    idle: Frame,
    /// The deadline the APIC timer is armed for (TSC), if any.
    armed: Option<u64>,
    /// The VM whose x87/SSE registers are in the CPU, if any: nothing
    /// else uses them (the core and components are soft-float), so they
    /// are switched only when another VM runs.
    pub fpu_owner: Option<usize>,
    /// Input from the system console and the component it goes to.
    pub console_input: ConsoleInput,
    /// Components with I/O port grants (bit n: component n).
    pub port_holders: u32,
    /// The component whose grants the I/O bitmap holds.
    ports_loaded: Option<usize>,
    /// Physical ranges no memory grant may map (RAM, the core, modules).
    pub not_devices: NotDevices,
    /// Device interrupt lines delivered to the interrupt forwarder.
    pub lines: InterruptLines,
    /// Per memory grant of the spec: the first frame of its DMA buffer,
    /// once allocated (0 before, and for device memory). A buffer stays
    /// its component's across restarts: the device may still write to it.
    pub dma: [u64; MAX_GRANTS],
    /// Per PCI device of the spec: the function found at boot.
    pub pci: [Option<microvisor::pci::Function>; MAX_PCI],
}

struct KernelCell(UnsafeCell<MaybeUninit<Kernel>>);

// SAFETY: see the module documentation: one CPU, entries never overlap,
// and the only access is through `with_kernel` (one per entry token).
unsafe impl Sync for KernelCell {}

static KERNEL: KernelCell = KernelCell(UnsafeCell::new(MaybeUninit::uninit()));

/// Index of the running component plus one (0 = none), for fatal reports.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The right to use the kernel table once: one per entry into the core.
/// Not `Clone` or `Copy`; [`with_kernel`] consumes it.
pub struct Entry {
    _private: (),
}

impl Entry {
    /// The token of a new entry.
    ///
    /// # Safety
    /// At most one token may exist at a time: make it only at the start of
    /// an entry into the core (boot, a trap, a system call), after
    /// [`install`] when it is used, and let it be consumed before the entry
    /// ends.
    pub unsafe fn new() -> Self {
        Self { _private: () }
    }
}

/// Installs the kernel table at boot, field by field in place (the table
/// is far larger than is wise to build on the boot stack).
pub fn install(
    _entry: &Entry,
    frames: FrameAllocator<'static>,
    kernel_space: AddressSpace,
    clock: Clock,
    idle: Frame,
    spec: Spec<'static>,
    not_devices: NotDevices,
) {
    let kernel = KERNEL.0.get().cast::<Kernel>();
    // SAFETY: `_entry` proves no reference to the table exists (boot holds
    // the only token); every field is written before any is read.
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
        addr_of_mut!((*kernel).spec).write(spec);
        addr_of_mut!((*kernel).running).write(None);
        addr_of_mut!((*kernel).last).write(None);
        addr_of_mut!((*kernel).dispatched_at).write(0);
        addr_of_mut!((*kernel).quantum_until).write(None);
        addr_of_mut!((*kernel).clock).write(clock);
        addr_of_mut!((*kernel).idle).write(idle);
        addr_of_mut!((*kernel).armed).write(None);
        addr_of_mut!((*kernel).fpu_owner).write(None);
        addr_of_mut!((*kernel).console_input).write(ConsoleInput::NONE);
        addr_of_mut!((*kernel).port_holders).write(0);
        addr_of_mut!((*kernel).ports_loaded).write(None);
        addr_of_mut!((*kernel).not_devices).write(not_devices);
        addr_of_mut!((*kernel).lines).write(InterruptLines::NONE);
        addr_of_mut!((*kernel).dma).write([0; MAX_GRANTS]);
        addr_of_mut!((*kernel).pci).write([None; MAX_PCI]);
    }
}

/// Runs `work` with the kernel table; `entry` is the entry's token.
#[inline(always)]
pub fn with_kernel<R>(entry: Entry, work: impl FnOnce(&mut Kernel) -> R) -> R {
    let _ = entry;
    // SAFETY: installed at boot before any token is used (the contract of
    // `Entry::new`), and the token was consumed, so this is the only
    // reference; it ends with the closure.
    work(unsafe { (*KERNEL.0.get()).assume_init_mut() })
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
    // SAFETY: RUNNING is only set after `install`, so the table is
    // initialised; `index` < component_count when it was stored; the read
    // happens on the fatal path only (see above).
    let name = unsafe { (*kernel).components.get(index).map(|c| c.name()) };
    report(name);
}

impl Kernel {
    /// The running component's index. Entries from ring 3 only happen while
    /// a component runs, so it is always set there.
    pub fn current_index(&self) -> usize {
        // `RUNNING` is the running index + 1, and an entry from ring 3
        // comes from a running component; a stray 0 (idle) would give an
        // index past the table, which faults the core, not a component.
        RUNNING.load(Ordering::Relaxed).wrapping_sub(1)
    }

    /// The frame of component `index`, to resume it.
    pub fn frame_of(&self, index: usize) -> *const Frame {
        self.components[index].frame()
    }

    /// The declared components.
    pub fn components(&self) -> &[Component] {
        &self.components[..self.component_count]
    }

    /// Loads `space` into CR3 if it is not loaded.
    #[inline(always)]
    pub fn load_space(&mut self, space: AddressSpace) {
        if self.loaded_space != space {
            // SAFETY: every address space shares the core's upper half, so
            // the core keeps running after the switch.
            unsafe { crate::arch::cpu::write_cr3(space.root.0) };
            self.loaded_space = space;
        }
    }

    /// Whether `space` is the one in CR3.
    pub fn is_loaded(&self, space: AddressSpace) -> bool {
        self.loaded_space == space
    }

    /// Sets `bits` in component `target`'s notification word, waking it
    /// if it waits. A world switcher that does not wait may be inside
    /// `VcpuRun` (its guest running, or preempted there): its VM is poked,
    /// so the run ends before or at its next entry and the switcher sees
    /// the bits (a block store's completions, console input, a restart
    /// request) without waiting for the guest's next exit.
    pub fn notify(&mut self, target: usize, bits: u64) {
        let Some(component) = self.components[..self.component_count].get_mut(target) else {
            return;
        };
        let waiting = component.is_blocked();
        component.signal(bits);
        if !waiting {
            for vm in self.vms[..self.vm_count].iter_mut() {
                if vm.switcher() == target {
                    vm.poke();
                }
            }
        }
    }

    /// Sets component `index`'s bit in its supervisor's notification word
    /// (it faulted or exited) and returns the supervisor, if it has one.
    pub fn notify_supervisor(&mut self, index: usize) -> Option<usize> {
        let (supervisor, bit) = self.components[index].supervisor_bit()?;
        self.notify(supervisor, 1 << bit);
        Some(supervisor)
    }

    /// Ends the running component's quantum (it yields): the next
    /// decision rotates to its equals.
    pub fn end_quantum(&mut self) {
        self.quantum_until = None;
    }

    /// Charges the running component for the time since its dispatch.
    pub fn account(&mut self, now: u64) {
        if let Some(index) = self.running {
            let elapsed = now.saturating_sub(self.dispatched_at);
            self.components[index].charge(elapsed, now);
            self.dispatched_at = now;
        }
    }

    /// The alarm fired: nothing is armed any more. Without this, an alarm
    /// that fires a little before its deadline (the APIC's count is the
    /// TSC delay scaled and truncated) found the next decision's event
    /// equal to what was armed, armed nothing, and the event — another
    /// thread's timeout, say — waited for whatever called the scheduler
    /// next (seen under `-icount`: a controller's 100 ms wait outlived a
    /// 3 s guest run).
    pub fn alarm_fired(&mut self) {
        self.armed = None;
    }

    /// Makes sure the alarm fires by `deadline` (a vCPU run's time limit)
    /// even if nothing else is due by then.
    pub fn alarm_by(&mut self, deadline: u64, now: u64) {
        if self.armed.is_none_or(|armed| armed > deadline) {
            self.clock.arm(deadline - now);
            self.armed = Some(deadline);
        }
    }

    /// The PCI function component `index` drives, with its spec entry.
    pub fn pci_of(&self, index: usize) -> Option<(&PciSpec, &microvisor::pci::Function)> {
        let (at, declared) = self
            .spec
            .pci_devices
            .iter()
            .enumerate()
            .find(|(_, declared)| declared.component as usize == index)?;
        Some((declared, self.pci[at].as_ref()?))
    }

    /// Whether a device interrupt could still wake a component: the
    /// forwarder lives and so does the driver of a line that is not
    /// masked. Without a timer armed the core then idles rather than
    /// ending the system under a driver waiting for its device.
    fn device_may_wake(&self) -> bool {
        let alive =
            |index: usize| index < self.component_count && self.components[index].is_alive();
        self.lines.forwarder().is_some_and(alive) && self.lines.armed_owners().any(alive)
    }

    /// Decides what runs next and returns its frame (see the module
    /// documentation).
    pub fn schedule(&mut self) -> *const Frame {
        let now = timer::now();
        self.account(now);
        for component in &mut self.components[..self.component_count] {
            component.catch_up(now);
        }
        // The one that ran last, for round robin (kept here rather than
        // at every switch: it is the running one, or while idle the last).
        self.last = self.running.or(self.last);
        let components = &self.components[..self.component_count];
        let holder = self
            .running
            .filter(|_| self.quantum_until.is_some_and(|until| now < until));
        let chosen = sched::choose_holding(components.len(), self.last, holder, |index| {
            components[index].candidate()
        });
        if chosen.is_none() || chosen != holder {
            self.quantum_until = chosen.and_then(|index| {
                let quantum = components[index].scheduling().quantum();
                (quantum > 0).then(|| now.saturating_add(quantum))
            });
        }
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
            None if self.may_still_wake() || self.device_may_wake() => {
                self.running = None;
                RUNNING.store(0, Ordering::Relaxed);
                &self.idle
            }
            None => self.finish(),
        }
    }

    /// The IPC fast path (seL4's fastpath idea): the running component
    /// `caller` signals `target` with `bits` and blocks, with its new
    /// timeout at the deadline `deadline` gives for the time now (the
    /// clock is read only once the cheap tests passed), and `target` runs
    /// next — without the general
    /// pass over every component, when that pass could not decide
    /// otherwise. Returns `None` unless all of this holds:
    /// - `target` is another component, waiting and not hung (the signal
    ///   makes it ready), and `caller` has no bits pending (it blocks);
    /// - no other component is ready with `target`'s priority or more
    ///   (the general pass would pick it, or rotate to it);
    /// - neither side adds an event before the armed alarm: `caller`'s
    ///   timeout and the end of `target`'s budget (when it has one) are no
    ///   earlier than the deadline the APIC timer is armed for, so no
    ///   re-arming is needed; everything else that could change the
    ///   decision (other timeouts, refills, hangs' ends) was already
    ///   covered by that alarm, which comes back through the general
    ///   pass when it fires. With no alarm armed (the last general pass
    ///   found nothing to come), neither side may add an event at all:
    ///   no timeout, and a target without a budget;
    /// - a non-zero badge (a signal of no bits wakes nobody), and no
    ///   alarm already due (a due one may have left a timeout or a refill
    ///   for the general pass to catch up with).
    ///
    /// Otherwise the general path (`crate::syscall::dispatch`) handles the
    /// call from the start (a budget-limited target's context may have been
    /// brought up to date on the way, which the general pass does too).
    #[inline(always)]
    pub fn direct_switch(
        &mut self,
        (caller, target, bits): (usize, usize, u64),
        (deadline, lazy): (impl FnOnce(u64) -> Option<u64>, bool),
    ) -> Option<*const Frame> {
        // The cheap tests first: a call the fast path does not take pays
        // little for having been looked at.
        let count = self.component_count;
        if target == caller || target >= count || bits == 0 {
            return None;
        }
        let woken = &self.components[target];
        if !woken.wakes_on_signal() || self.components[caller].has_pending_bits() {
            return None;
        }
        let (now, deadline) = self.may_switch((caller, target), deadline, |_| false)?;
        self.components[caller].block(deadline, lazy);
        self.components[target].wake(bits, now);
        Some(self.finish_switch(caller, target, now))
    }

    /// The fast path of `Call` (see [`Self::direct_switch`] for the
    /// reasoning): the running component `caller` calls `server`, which
    /// serves (blocked in `ReplyWait`, not hung), with the request in its
    /// message registers, known to the server by `badge`; it blocks until
    /// the reply or the deadline `deadline` gives, and the server runs
    /// next with the request — which the caller of this function must
    /// hand over from the caller's frame (`Resume::message`). `None`
    /// (nothing changed) unless [`Self::may_switch`] allows it.
    #[inline(always)]
    pub fn call_switch(
        &mut self,
        (caller, server, badge): (usize, usize, u64),
        deadline: impl FnOnce(u64) -> Option<u64>,
    ) -> Option<*const Frame> {
        if server == caller || server >= self.component_count || !self.components[server].serves() {
            return None;
        }
        let (now, deadline) = self.may_switch((caller, server), deadline, |_| false)?;
        self.components[caller].block_calling(server, deadline);
        // The request stays in the caller's frame: the stub loads it.
        self.components[server].take_request(caller, badge, None, now);
        Some(self.finish_switch(caller, server, now))
    }

    /// The fast path of `ReplyWait` with a reply: the running component
    /// `server` answers the caller it owes a reply (which waits for it and
    /// is not hung) with the reply in its message registers, and blocks
    /// serving until the next request, a signal or the deadline `deadline`
    /// gives; the caller runs next, with the reply handed over from the
    /// server's frame by the caller of this function
    /// (`Resume::message`). `None` (nothing changed) when the
    /// server has bits pending or another caller's request waits (its
    /// `ReplyWait` answers at once), or unless [`Self::may_switch`]
    /// allows it.
    #[inline(always)]
    pub fn reply_switch(
        &mut self,
        server: usize,
        deadline: impl FnOnce(u64) -> Option<u64>,
    ) -> Option<*const Frame> {
        let caller = self.components[server].reply_to()?;
        if !self.components[caller].awaits_reply_of(server)
            || self.components[server].has_pending_bits()
        {
            return None;
        }
        let (now, deadline) = self.may_switch((server, caller), deadline, |other| {
            matches!(other.state(), ComponentState::Sending { server: to, .. } if to == server)
        })?;
        self.components[server].take_reply_to();
        self.components[server].block_serving(deadline);
        // The reply stays in the server's frame: the stub loads it.
        self.components[caller].end_call(Status::Ok, None, now);
        Some(self.finish_switch(server, caller, now))
    }

    /// The caller whose request to `server` waits (not yet taken), of
    /// the highest priority and the lowest index among equals, with its
    /// badge.
    pub fn waiting_request(&self, server: usize) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64, u32)> = None;
        for (index, component) in self.components().iter().enumerate() {
            if let ComponentState::Sending { server: to, badge } = component.state()
                && to == server
                && best.is_none_or(|(_, _, priority)| component.priority() > priority)
            {
                best = Some((index, badge, component.priority()));
            }
        }
        best.map(|(index, badge, _)| (index, badge))
    }

    /// Whether component `index` may still take requests: it lives, or
    /// its supervisor (alive) may yet start it — it waits to be started,
    /// or it faulted and the supervisor has not decided (holding it
    /// stops it); one that exited (its work is done: supervisors restart
    /// faults, not exits), was stopped or held by its supervisor, or was
    /// refused never serves again.
    pub fn may_serve_again(&self, index: usize) -> bool {
        let component = &self.components[index];
        let supervised = || {
            component
                .supervisor()
                .is_some_and(|supervisor| self.components[supervisor].is_alive())
        };
        match component.state() {
            ComponentState::NotStarted | ComponentState::Faulted => supervised(),
            ComponentState::Exited(_) | ComponentState::Stopped | ComponentState::Refused => false,
            _ => true,
        }
    }

    /// Ends the calls that wait on component `index`, which just ended
    /// (or is being restarted, `restarting`): requests it had taken are
    /// answered [`Status::Unanswered`], and so are those it had not when
    /// it cannot serve again ([`Self::may_serve_again`]; a restart keeps
    /// them for its next life). Its own debt of a reply is forgotten. A
    /// supervisor's end may leave its ended components unable to come
    /// back: the calls waiting on those end too.
    pub fn end_calls_to(&mut self, index: usize, restarting: bool) {
        self.components[index].take_reply_to();
        self.end_calls_waiting_on(index, !restarting && !self.may_serve_again(index));
        if restarting {
            // A supervisor's new life may still restart its children.
            return;
        }
        for child in 0..self.component_count {
            if self.components[child].supervisor() == Some(index) && !self.may_serve_again(child) {
                self.end_calls_waiting_on(child, true);
            }
        }
    }

    /// Answers [`Status::Unanswered`] to the calls `server` had taken,
    /// and to those waiting for it when `waiting_too`.
    fn end_calls_waiting_on(&mut self, server: usize, waiting_too: bool) {
        let now = timer::now();
        for component in &mut self.components[..self.component_count] {
            let ends = match component.state() {
                ComponentState::Calling { server: to } => to == server,
                ComponentState::Sending { server: to, .. } => to == server && waiting_too,
                _ => false,
            };
            if ends {
                component.end_call(Status::Unanswered, None, now);
            }
        }
    }

    /// The checks every IPC fast path makes once its own cheap ones
    /// passed, with the clock read once: running `caller` blocks with the
    /// deadline `deadline` gives and `target` becomes ready and runs next.
    /// Allowed (answers the time now and the caller's deadline) when no
    /// alarm is due yet, the caller's deadline is no earlier than the
    /// armed alarm, a budget-limited `target` has budget lasting until it
    /// (with no alarm armed: no deadline and no budget at all), and no
    /// other component is ready with `target`'s priority or more, nor
    /// `rival` (what else would make the general pass decide otherwise).
    #[inline(always)]
    fn may_switch(
        &mut self,
        (caller, target): (usize, usize),
        deadline: impl FnOnce(u64) -> Option<u64>,
        rival: impl Fn(&Component) -> bool,
    ) -> Option<(u64, Option<u64>)> {
        let count = self.component_count;
        let now = timer::now();
        // An alarm already due may have left a timeout or a refill the
        // general pass would catch up with now: it decides then. With no
        // alarm armed, the last general pass found no event to come (no
        // fast path adds one), so the switch may add none: no deadline,
        // no budget to run out.
        let armed = match self.armed {
            Some(armed) if now >= armed => return None,
            Some(armed) => armed,
            None => u64::MAX,
        };
        let deadline = deadline(now);
        if deadline.is_some_and(|at| at < armed) {
            return None;
        }
        let woken = &self.components[target];
        let (unlimited, priority) = (woken.scheduling().is_unlimited(), woken.priority());
        if !unlimited && !self.budget_lasts(target, armed, now) {
            return None;
        }
        for (index, other) in self.components[..count].iter().enumerate() {
            // Conservative: a ready rival that is hung or out of budget
            // only sends the call to the general path.
            if (other.state() == ComponentState::Ready
                && other.priority() >= priority
                && index != caller)
                || rival(other)
            {
                return None;
            }
        }
        Some((now, deadline))
    }

    /// Ends an IPC fast path: charges `caller` (which blocked) for its
    /// run, starts `target`'s quantum and switches to it.
    #[inline(always)]
    fn finish_switch(&mut self, caller: usize, target: usize, now: u64) -> *const Frame {
        let elapsed = now.saturating_sub(self.dispatched_at);
        self.components[caller].charge(elapsed, now);
        let quantum = self.components[target].scheduling().quantum();
        // (Written only when it changes: most contexts have no quantum.)
        if quantum > 0 || self.quantum_until.is_some() {
            self.quantum_until = (quantum > 0).then(|| now.saturating_add(quantum));
        }
        self.switch_to(target, now)
    }

    /// Whether budget-limited `target`, once woken, has budget left that
    /// lasts at least until the `armed` alarm (brought up to date first,
    /// as the general pass would).
    #[inline(never)]
    fn budget_lasts(&mut self, target: usize, armed: u64, now: u64) -> bool {
        let context = self.components[target].scheduling_mut();
        context.refill(now);
        !context.is_depleted()
            && !context.on_slack()
            && now.saturating_add(context.remaining()) >= armed
    }

    /// Whether anything but a lazy timeout is still to come: a timeout,
    /// a refill, a hang's end. When only lazy timeouts are left (the
    /// runtime's rechecks of queues nobody will send on), every component
    /// waits for good and the system is finished.
    fn may_still_wake(&self) -> bool {
        self.components[..self.component_count]
            .iter()
            .any(|component| {
                component.essential_timeout().is_some()
                    || component.refill_at().is_some()
                    || component.hung_until().is_some()
            })
    }

    /// The earliest time at which the scheduling decision may change.
    fn next_event(&self, chosen: Option<usize>, now: u64) -> Option<u64> {
        let mut earliest: Option<u64> = None;
        let mut consider = |at: u64| earliest = Some(earliest.map_or(at, |e: u64| e.min(at)));
        let components = &self.components[..self.component_count];
        if let Some(index) = chosen {
            let running = &components[index];
            // On slack it runs until its refill or until something with
            // budget becomes ready (a refill, below, or a wake-up, which
            // schedules anyway).
            let on_slack = running.scheduling().on_slack();
            if !running.scheduling().is_unlimited() && !on_slack {
                consider(now.saturating_add(running.scheduling().remaining()));
            }
            let shares = components.iter().enumerate().any(|(other, c)| {
                let c = c.candidate();
                let peer = if on_slack { c.slack } else { c.ready };
                other != index && peer && c.priority == running.priority()
            });
            if shares {
                consider(
                    self.quantum_until
                        .unwrap_or(now.saturating_add(self.clock.ticks_from_us(TIME_SLICE_US))),
                );
            }
        }
        for component in components {
            if let Some(at) = component.timeout() {
                consider(at);
            }
            if let Some(at) = component.refill_at() {
                consider(at);
            }
            if let Some(at) = component.hung_until() {
                consider(at);
            }
        }
        earliest
    }

    /// Makes component `index` the running one and returns its frame.
    #[inline(always)]
    fn switch_to(&mut self, index: usize, now: u64) -> *const Frame {
        self.load_space(self.components[index].space());
        self.load_ports(index);
        self.running = Some(index);
        self.dispatched_at = now;
        RUNNING.store(index + 1, Ordering::Relaxed);
        let frame = self.frame_of(index);
        entry::set_current_frame(frame);
        frame
    }

    /// Gives ring 3 the ports component `index` was granted and no others:
    /// one store for a component without grants; the bitmap is rewritten
    /// only when another holder than the last one runs.
    #[inline(always)]
    fn load_ports(&mut self, index: usize) {
        if self.port_holders & (1 << index) == 0 {
            descriptors::deny_ports();
            return;
        }
        self.load_granted_ports(index);
    }

    /// [`Self::load_ports`] for a component with grants.
    #[inline(never)]
    fn load_granted_ports(&mut self, index: usize) {
        if self.ports_loaded != Some(index) {
            let grants = self.spec.port_grants;
            let of = |holder: Option<usize>| {
                grants
                    .iter()
                    .filter(move |grant| Some(grant.component as usize) == holder)
                    .map(|grant| (grant.first, grant.count))
            };
            descriptors::load_ports(of(self.ports_loaded), of(Some(index)));
            self.ports_loaded = Some(index);
        }
        descriptors::allow_ports();
    }

    /// No component can ever run again: report and halt. The verdict is a
    /// failure when a component exited with an error, faulted without a
    /// supervisor or was refused, or when a VM that was created never ran.
    fn finish(&mut self) -> ! {
        RUNNING.store(0, Ordering::Relaxed);
        let mut tally = Tally::default();
        for component in self.components() {
            match component.state() {
                ComponentState::Exited(0) => tally.exited += 1,
                ComponentState::Exited(_) => tally.failed += 1,
                ComponentState::Faulted if component.supervisor().is_none() => tally.faulted += 1,
                ComponentState::Faulted | ComponentState::Stopped => tally.stopped += 1,
                ComponentState::Waiting
                | ComponentState::Serving
                | ComponentState::Sending { .. }
                | ComponentState::Calling { .. }
                | ComponentState::NotStarted => tally.blocked += 1,
                ComponentState::Refused => tally.refused += 1,
                ComponentState::Ready => {}
            }
        }
        log::info!(
            "all components finished: {} exited, {} exited with an error, {} faulted, {} stopped by a supervisor, {} waiting forever, {} refused",
            tally.exited,
            tally.failed,
            tally.faulted,
            tally.stopped,
            tally.blocked,
            tally.refused
        );
        for component in self.components() {
            if component.fault_count() > REPORTED_FAULTS {
                log::info!(
                    "component '{}' faulted {} times in all (generation {})",
                    component.name(),
                    component.fault_count(),
                    component.generation()
                );
            }
        }
        for vm in &self.vms[..self.vm_count] {
            if vm.is_ready() && !vm.ever_entered() {
                tally.vms_never_run += 1;
                let switcher = &self.components[vm.switcher()];
                let why = if switcher.state() == ComponentState::NotStarted {
                    "was never started"
                } else {
                    "never entered it"
                };
                log::error!(
                    "VM '{}' never ran: its switcher '{}' {why}",
                    vm.name(),
                    switcher.name()
                );
            }
        }
        self.load_space(self.kernel_space);
        match tally.verdict() {
            Verdict::Success => crate::shutdown::halt(true, ""),
            Verdict::Failure(reason) => crate::shutdown::halt(false, reason),
        }
    }
}
