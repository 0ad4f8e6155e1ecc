//! A component: one address space, one thread, a capability table, a
//! notification word, a scheduling context and its side of synchronous
//! calls.
//!
//! Components are declared at boot from the spec and never created at run
//! time; a slot is reused only by restarting the same component. The
//! thread's life is [`ComponentState`]; every change of state happens in a
//! method here: declared (ready or waiting for its supervisor) or refused
//! at load, blocked in `Wait` and woken (by a signal or its timeout),
//! blocked in `Call` (its request not yet taken, then waiting for the
//! reply) or in `ReplyWait` (serving: waiting for a request or a signal),
//! stopped (exited, faulted or stopped by its supervisor, its memory
//! returned), and restarted with a new generation (old capability handles
//! become stale). The address space itself is built by `crate::loader`.

use microvisor::address::PhysicalAddress;
use microvisor::paging::AddressSpace;
use microvisor::sched::{Candidate, SchedulingContext};
use microvisor::time::Clock;
use microvisor_abi::fault::FaultRecord;
use microvisor_abi::spec::CapabilitySpec;
use microvisor_abi::syscall::{MESSAGE_WORDS, Registers, Status};

use super::capability::{Capability, CapabilityTable};
use super::notification::Notification;
use crate::arch::entry::Frame;
use crate::arch::memory::Tables;
use microvisor_abi::spec::CapabilityKind;

/// Faults of one component reported in full; later ones are only counted
/// (a component restarted thousands of times must not flood the console).
pub const REPORTED_FAULTS: u32 = 8;

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    /// Can run (unless its scheduling context is depleted).
    Ready,
    /// Blocked in `Wait`.
    Waiting,
    /// Blocked in `ReplyWait`: waits for a call, a signal or its timeout.
    Serving,
    /// Blocked in `Call` to component `server`, which has not taken the
    /// request yet; `badge` is what the server will learn it by.
    Sending { server: usize, badge: u64 },
    /// Blocked in `Call`: `server` took the request and owes the reply.
    Calling { server: usize },
    /// Ended itself with this exit code.
    Exited(i32),
    /// Stopped by the core after a fault.
    Faulted,
    /// Stopped by its supervisor.
    Stopped,
    /// Declared to wait for its supervisor to start it.
    NotStarted,
    /// Refused at load (its program or its VM unusable): never ran.
    Refused,
}

/// What a component is declared as, before it is built.
pub struct Declaration<'a> {
    pub name: &'a str,
    pub args: &'a str,
    /// Its ELF program, inside the boot image.
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

/// One component and its single thread.
pub struct Component {
    name: [u8; 32],
    name_len: usize,
    args: [u8; 64],
    args_len: usize,
    program: &'static [u8],
    state: ComponentState,
    space: AddressSpace,
    frame: Frame,
    capabilities: CapabilityTable,
    /// 1 at first start, +1 per restart; part of every capability handle.
    generation: u32,
    notification: Notification,
    /// When a timed `Wait` ends (TSC).
    wake_at: Option<u64>,
    /// That timeout is lazy: it does not keep a finished system alive.
    lazy: bool,
    priority: u32,
    scheduling: SchedulingContext,
    supervisor: Option<usize>,
    fault_bit: u32,
    fault: Option<FaultRecord>,
    fault_count: u32,
    stack_pages: u64,
    memory_pages: u64,
    /// Not scheduled until then (TSC): an injected hang.
    hung_until: Option<u64>,
    /// Since when it has been runnable without coming back to `Wait`
    /// (TSC): set when it is woken or started, restarted by a polling
    /// `Wait`, cleared while it waits. What a supervisor's watchdog reads.
    busy_since: Option<u64>,
    /// The vCPU handle its last `VcpuRun` named and the VM it names, once
    /// checked: the capability table never changes after boot, a VM once
    /// created stays created and keeps its switcher, and the handle
    /// carries this life's generation — so until the next life (which
    /// forgets it) the same handle names the same VM, and the world
    /// switcher's run loop is not checked again at every exit.
    checked_vcpu: Option<(u64, usize)>,
    /// The caller whose request it took last and has not answered.
    reply_to: Option<usize>,
    /// The endpoint handle its last `Call` named, with the server and
    /// badge it names, once checked: as for `checked_vcpu`, the same
    /// handle names the same server until the next life.
    checked_endpoint: Option<(u64, usize, u64)>,
}

/// One call's request or reply: the message registers
/// (`microvisor_abi::syscall::MESSAGE_REGISTERS`).
pub type Message = [u64; MESSAGE_WORDS];

const NO_SPACE: AddressSpace = AddressSpace {
    root: PhysicalAddress(0),
};

impl Component {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        name: [0; 32],
        name_len: 0,
        args: [0; 64],
        args_len: 0,
        program: &[],
        state: ComponentState::Exited(0),
        space: NO_SPACE,
        frame: Frame::ZERO,
        capabilities: CapabilityTable::EMPTY,
        generation: 0,
        notification: Notification::EMPTY,
        wake_at: None,
        lazy: false,
        priority: 0,
        scheduling: SchedulingContext::UNLIMITED,
        supervisor: None,
        fault_bit: 0,
        fault: None,
        fault_count: 0,
        stack_pages: 0,
        memory_pages: 0,
        hung_until: None,
        busy_since: None,
        checked_vcpu: None,
        reply_to: None,
        checked_endpoint: None,
    };

    /// A declared component in its first generation, not yet built. Names
    /// and arguments longer than their fields are cut (the spec parser
    /// bounds both).
    pub fn declare(declaration: &Declaration<'_>, clock: &Clock, now: u64) -> Self {
        let mut component = Self::EMPTY;
        let name = &declaration.name.as_bytes()[..declaration.name.len().min(32)];
        component.name[..name.len()].copy_from_slice(name);
        component.name_len = name.len();
        let args = &declaration.args.as_bytes()[..declaration.args.len().min(64)];
        component.args[..args.len()].copy_from_slice(args);
        component.args_len = args.len();
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
        component.busy_since = Some(now);
        component
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Its argument string.
    pub fn args(&self) -> &str {
        core::str::from_utf8(&self.args[..self.args_len]).unwrap_or("")
    }

    /// Its ELF program, inside the boot image.
    pub fn program(&self) -> &'static [u8] {
        self.program
    }

    pub fn state(&self) -> ComponentState {
        self.state
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn priority(&self) -> u32 {
        self.priority
    }

    pub fn supervisor(&self) -> Option<usize> {
        self.supervisor
    }

    /// The supervisor to tell when this component ends, with the bit to
    /// set in its word.
    pub fn supervisor_bit(&self) -> Option<(usize, u32)> {
        Some((self.supervisor?, self.fault_bit))
    }

    /// Its last fault, kept until it restarts.
    pub fn fault(&self) -> Option<FaultRecord> {
        self.fault
    }

    /// Faults in all its lives.
    pub fn fault_count(&self) -> u32 {
        self.fault_count
    }

    pub fn stack_pages(&self) -> u64 {
        self.stack_pages
    }

    pub fn memory_pages(&self) -> u64 {
        self.memory_pages
    }

    pub fn space(&self) -> AddressSpace {
        self.space
    }

    /// Whether an address space is built for it.
    pub fn has_space(&self) -> bool {
        self.space.root.0 != 0
    }

    pub fn scheduling(&self) -> &SchedulingContext {
        &self.scheduling
    }

    /// The thread's saved registers.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The system call the thread made (its saved registers).
    pub fn call_registers(&self) -> Registers {
        let frame = &self.frame;
        Registers {
            number: frame.rax,
            arguments: [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8],
        }
    }

    /// Makes its system call return `status` and `value` when it resumes.
    pub fn answer(&mut self, status: Status, value: u64) {
        self.frame.rax = status as u64;
        self.frame.rdx = value;
    }

    /// Makes its system call return [`Status::Ok`], leaving `rdx` as it is.
    pub fn answer_ok(&mut self) {
        self.frame.rax = Status::Ok as u64;
    }

    /// Makes the thread issue the system call it just made (a 2-byte
    /// `syscall`) again when it resumes, as call `number` with `rsi`
    /// replaced by `rsi`.
    pub fn reissue(&mut self, number: u64, rsi: u64) {
        self.frame.rip -= 2;
        self.frame.rax = number;
        self.frame.rsi = rsi;
    }

    /// Whether it may still run at some point.
    pub fn is_alive(&self) -> bool {
        self.state == ComponentState::Ready || self.is_blocked()
    }

    /// Whether it is blocked in a system call (`Wait`, `Call` or
    /// `ReplyWait`) until something wakes it.
    pub fn is_blocked(&self) -> bool {
        matches!(
            self.state,
            ComponentState::Waiting
                | ComponentState::Serving
                | ComponentState::Sending { .. }
                | ComponentState::Calling { .. }
        )
    }

    /// What the scheduler needs to know of it.
    pub fn candidate(&self) -> Candidate {
        let runnable = self.state == ComponentState::Ready && self.hung_until.is_none();
        Candidate {
            ready: runnable && !self.scheduling.is_depleted(),
            slack: runnable && self.scheduling.on_slack(),
            priority: self.priority,
        }
    }

    /// Whether a signal would make this component ready at once: it
    /// waits and is not held by an injected hang (the IPC fast path's
    /// test of the woken side).
    #[inline(always)]
    pub fn wakes_on_signal(&self) -> bool {
        self.state == ComponentState::Waiting && self.hung_until.is_none()
    }

    /// Whether bits are set that its next `Wait` would take at once.
    #[inline(always)]
    pub fn has_pending_bits(&self) -> bool {
        self.notification != Notification::EMPTY
    }

    /// Wakes it from `Wait` with `bits` and whatever was pending (it
    /// waits, and the two are not both empty): [`Self::signal`]'s wake-up,
    /// and the IPC fast path's, which has checked both.
    #[inline(always)]
    pub fn wake(&mut self, bits: u64, now: u64) {
        self.notification.set(bits);
        let bits = self.notification.take().unwrap_or(0);
        self.answer(Status::Ok, bits);
        self.make_ready(now);
    }

    /// Ends whatever it was blocked in (its answer already in its frame):
    /// ready, no timeout, runnable since `now` (what a watchdog reads).
    #[inline(always)]
    fn make_ready(&mut self, now: u64) {
        self.wake_at = None;
        self.state = ComponentState::Ready;
        self.busy_since = Some(now);
    }

    /// Blocks it in `state` until what that state waits for or `deadline`
    /// (TSC), the timeout `lazy` or not.
    #[inline(always)]
    fn block_in(&mut self, state: ComponentState, deadline: Option<u64>, lazy: bool) {
        self.state = state;
        self.wake_at = deadline;
        self.lazy = lazy;
        self.busy_since = None;
    }

    /// Blocks it in `Wait` until a signal or `deadline` (TSC): what
    /// [`Self::wait`] does when nothing is pending, and the IPC fast
    /// path, which has checked that nothing is.
    #[inline(always)]
    pub fn block(&mut self, deadline: Option<u64>, lazy: bool) {
        self.block_in(ComponentState::Waiting, deadline, lazy);
    }

    /// The message in its registers: the request of a `Call`, the reply
    /// of a `ReplyWait`.
    #[inline(always)]
    pub fn message(&self) -> Message {
        let f = &self.frame;
        [f.rdx, f.r10, f.r8, f.r9, f.r12, f.r13, f.r14, f.r15]
    }

    /// Puts `message` in its message registers.
    #[inline(always)]
    fn set_message(&mut self, message: &Message) {
        let f = &mut self.frame;
        [f.rdx, f.r10, f.r8, f.r9, f.r12, f.r13, f.r14, f.r15] = *message;
    }

    /// The caller whose request it took last and has not answered yet.
    #[inline(always)]
    pub fn reply_to(&self) -> Option<usize> {
        self.reply_to
    }

    /// Forgets the caller it owes a reply to, returning it.
    #[inline(always)]
    pub fn take_reply_to(&mut self) -> Option<usize> {
        self.reply_to.take()
    }

    /// Whether it waits for the reply of `server` (which took its
    /// request) and is not held by an injected hang.
    #[inline(always)]
    pub fn awaits_reply_of(&self, server: usize) -> bool {
        self.state == (ComponentState::Calling { server }) && self.hung_until.is_none()
    }

    /// Whether it waits in `ReplyWait` and is not held by an injected
    /// hang: a request makes it ready at once.
    #[inline(always)]
    pub fn serves(&self) -> bool {
        self.state == ComponentState::Serving && self.hung_until.is_none()
    }

    /// Blocks it in `Call` to `server`, which has not taken the request,
    /// until `deadline` (TSC).
    pub fn send_call(&mut self, server: usize, badge: u64, deadline: Option<u64>) {
        self.block_in(ComponentState::Sending { server, badge }, deadline, false);
    }

    /// Its request was taken by `server`: it waits for the reply (the
    /// deadline of its `Call` still holds).
    #[inline(always)]
    pub fn request_taken(&mut self, server: usize) {
        self.state = ComponentState::Calling { server };
    }

    /// Blocks it in `Call`, its request taken at once by `server`, until
    /// `deadline` (TSC): the fast path's block.
    #[inline(always)]
    pub fn block_calling(&mut self, server: usize, deadline: Option<u64>) {
        self.block_in(ComponentState::Calling { server }, deadline, false);
    }

    /// Blocks it in `ReplyWait` until a request, a signal or `deadline`
    /// (TSC).
    #[inline(always)]
    pub fn block_serving(&mut self, deadline: Option<u64>) {
        self.block_in(ComponentState::Serving, deadline, false);
    }

    /// Gives it (serving, or about to return from `ReplyWait`) the
    /// request of the caller `caller` known by `badge`, which it now owes
    /// a reply; it becomes ready. The request is `message`, or (`None`)
    /// left in the caller's frame for the return to ring 3 to load (an
    /// IPC fast path's hand-over, `crate::arch::entry::Resume`).
    #[inline(always)]
    pub fn take_request(&mut self, caller: usize, badge: u64, message: Option<&Message>, now: u64) {
        if let Some(message) = message {
            self.set_message(message);
        }
        self.frame.rax = Status::Ok as u64;
        self.frame.rdi = badge;
        self.reply_to = Some(caller);
        self.make_ready(now);
    }

    /// Ends its `Call` with `status` and the reply `message` (none when
    /// not `Ok`, or left in the server's frame for the return to ring 3
    /// to load: an IPC fast path's hand-over); it becomes ready.
    #[inline(always)]
    pub fn end_call(&mut self, status: Status, message: Option<&Message>, now: u64) {
        if let Some(message) = message {
            self.set_message(message);
        }
        self.frame.rax = status as u64;
        self.make_ready(now);
    }

    /// Answers its `ReplyWait` with the pending notification bits (a
    /// signal, not a request: badge 0), if any, making it ready; returns
    /// whether it did.
    pub fn serve_signal(&mut self, now: u64) -> bool {
        let Some(bits) = self.notification.take() else {
            return false;
        };
        self.frame.rax = Status::Ok as u64;
        self.frame.rdi = 0;
        self.frame.rsi = bits;
        self.make_ready(now);
        true
    }

    /// Its scheduling context, to bring up to date (the IPC fast path
    /// refills the woken side's before reading its budget).
    pub fn scheduling_mut(&mut self) -> &mut SchedulingContext {
        &mut self.scheduling
    }

    /// When an injected hang ends, while it lasts.
    pub fn hung_until(&self) -> Option<u64> {
        self.hung_until.filter(|_| self.is_alive())
    }

    /// Stops scheduling it until `until` (TSC): an injected hang. Nothing
    /// else changes: signals and timeouts still reach it.
    pub fn hang(&mut self, until: u64) {
        self.hung_until = Some(until);
    }

    /// Time units it has been runnable without coming back to `Wait`, as
    /// of `now` (0 while it waits or once it has ended).
    pub fn busy_for(&self, now: u64) -> u64 {
        match (self.state, self.busy_since) {
            (ComponentState::Ready, Some(since)) => now.saturating_sub(since),
            _ => 0,
        }
    }

    /// When it waits with a timeout: when that ends.
    pub fn timeout(&self) -> Option<u64> {
        self.wake_at.filter(|_| self.is_blocked())
    }

    /// Its timeout, unless lazy: what may still wake it with work to do.
    pub fn essential_timeout(&self) -> Option<u64> {
        self.timeout().filter(|_| !self.lazy)
    }

    /// Marks the timeout of the `Wait` it just made lazy or not.
    pub fn set_lazy(&mut self, lazy: bool) {
        self.lazy = lazy;
    }

    /// When it is ready but out of budget: when its budget refills.
    pub fn refill_at(&self) -> Option<u64> {
        (self.state == ComponentState::Ready && self.scheduling.is_depleted())
            .then(|| self.scheduling.next_refill())
    }

    /// The capability `handle` names in this generation, if of `kind`.
    pub fn capability(&self, handle: u64, kind: CapabilityKind) -> Option<Capability> {
        self.capabilities.lookup(handle, self.generation, kind)
    }

    /// Gives it its capability table.
    pub fn install_capabilities(&mut self, declared: &[CapabilitySpec]) {
        self.capabilities = CapabilityTable::from_spec(declared);
    }

    /// Sets `bits` in its notification word, waking it if it waits: its
    /// `Wait` then answers the word (and clears it).
    pub fn signal(&mut self, bits: u64) {
        let pending = bits != 0 || self.has_pending_bits();
        match self.state {
            ComponentState::Waiting if pending => self.wake(bits, crate::arch::timer::now()),
            ComponentState::Serving if pending => {
                self.notification.set(bits);
                self.serve_signal(crate::arch::timer::now());
            }
            _ => self.notification.set(bits),
        }
    }

    /// Its `Wait` for at most `timeout_us` (`None`: no timeout; 0 polls):
    /// answers at once with the pending bits, or with
    /// [`Status::TimedOut`] when polling, and returns `false`; otherwise
    /// blocks until the deadline `deadline` gives for the timeout and
    /// returns `true`.
    #[inline(always)]
    pub fn wait(
        &mut self,
        timeout_us: Option<u64>,
        now: u64,
        deadline: impl FnOnce(u64) -> u64,
    ) -> bool {
        // Coming back to `Wait` is the sign of life a watchdog looks for.
        self.busy_since = Some(now);
        if let Some(bits) = self.notification.take() {
            self.answer(Status::Ok, bits);
            return false;
        }
        if timeout_us == Some(0) {
            self.answer(Status::TimedOut, 0);
            return false;
        }
        self.block(timeout_us.map(deadline), false);
        true
    }

    /// Refills its budget as of `now` and ends a blocking call (`Wait`,
    /// `Call`, `ReplyWait`) whose timeout passed.
    pub fn catch_up(&mut self, now: u64) {
        self.scheduling.refill(now);
        if self.is_blocked() && self.wake_at.is_some_and(|at| at <= now) {
            self.answer(Status::TimedOut, 0);
            self.make_ready(now);
        }
        if self.hung_until.is_some_and(|until| until <= now) {
            self.hung_until = None;
        }
    }

    /// Charges `elapsed` time units of running, as of `now`.
    #[inline(always)]
    pub fn charge(&mut self, elapsed: u64, now: u64) {
        self.scheduling.charge(elapsed, now);
    }

    /// New budget, period (time units), priority and whether it may run
    /// on slack, from `now`.
    pub fn configure(
        &mut self,
        (budget, period): (u64, u64),
        priority: u32,
        (slack, quantum): (bool, u64),
        now: u64,
    ) {
        self.scheduling.configure(budget, period, now);
        self.scheduling.set_slack(slack);
        self.scheduling.set_quantum(quantum);
        self.priority = priority;
    }

    /// Records a fault of this life and returns how many it has had in all.
    pub fn record_fault(&mut self, kind: u32, address: u64, detail: u64) -> u32 {
        self.fault_count += 1;
        self.fault = Some(FaultRecord {
            kind,
            count: self.fault_count,
            address,
            detail,
            rip: self.frame.rip,
            generation: u64::from(self.generation),
        });
        self.fault_count
    }

    /// Stops it in `state` and returns its own memory (queue and guest
    /// memory stay with their objects). The page-table root is kept until
    /// [`Component::release_space`].
    pub fn stop(&mut self, state: ComponentState, tables: &mut Tables<'_, '_>) {
        self.state = state;
        self.wake_at = None;
        if self.has_space() {
            self.space.clear_user_half(tables);
        }
    }

    /// Forgets its (cleared) address space and returns the root, if any;
    /// the caller frees it once it is not loaded.
    pub fn release_space(&mut self) -> Option<PhysicalAddress> {
        let root = self.space.root;
        self.space = NO_SPACE;
        (root.0 != 0).then_some(root)
    }

    /// Begins a new life: generation bumped (old handles become stale),
    /// notification word cleared, the last fault forgotten (the supervisor
    /// read it before restarting), no timeout.
    pub fn begin_new_life(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.notification = Notification::EMPTY;
        self.fault = None;
        self.wake_at = None;
        self.hung_until = None;
        self.checked_vcpu = None;
        self.reply_to = None;
        self.checked_endpoint = None;
    }

    /// The VM `handle` names, if it is the vCPU handle last checked in
    /// this life ([`Self::remember_vcpu`]).
    #[inline(always)]
    pub fn checked_vcpu(&self, handle: u64) -> Option<usize> {
        self.checked_vcpu
            .and_then(|(checked, vm)| (checked == handle).then_some(vm))
    }

    /// The server and badge `handle` names, if it is the endpoint handle
    /// last checked in this life ([`Self::remember_endpoint`]).
    #[inline(always)]
    pub fn checked_endpoint(&self, handle: u64) -> Option<(usize, u64)> {
        match self.checked_endpoint {
            Some((checked, server, badge)) if checked == handle => Some((server, badge)),
            _ => None,
        }
    }

    /// Remembers that `handle`, an endpoint capability of this life,
    /// names `server` with `badge`.
    pub fn remember_endpoint(&mut self, handle: u64, server: usize, badge: u64) {
        self.checked_endpoint = Some((handle, server, badge));
    }

    /// Remembers that `handle`, a vCPU capability of this life, names
    /// VM `vm`, which this component runs.
    pub fn remember_vcpu(&mut self, handle: u64, vm: usize) {
        self.checked_vcpu = Some((handle, vm));
    }

    /// Installs a built address space and the thread's first frame.
    pub fn install(&mut self, space: AddressSpace, frame: Frame) {
        self.space = space;
        self.frame = frame;
    }

    /// Makes a restarted component ready, its budget refilled as of `now`.
    pub fn start(&mut self, now: u64) {
        self.scheduling.refill(now);
        self.state = ComponentState::Ready;
        self.busy_since = Some(now);
    }

    /// Marks a component the core refused to load: stopped for good, and
    /// no supervisor may restart it.
    pub fn refuse(&mut self) {
        self.state = ComponentState::Refused;
        self.supervisor = None;
    }

    /// Its supervisor holds it where it ended (faulted) or before it
    /// started: stopped, its memory already returned or never given.
    pub fn hold(&mut self) {
        self.state = ComponentState::Stopped;
        self.wake_at = None;
    }

    /// Marks a restart that failed: it stays faulted.
    pub fn fail_restart(&mut self) {
        self.state = ComponentState::Faulted;
    }
}
