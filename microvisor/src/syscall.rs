//! The system calls: one function per call, and the dispatcher.
//!
//! The caller's saved registers are decoded into a typed
//! `microvisor_abi::syscall::Call` (the same decoding the runtime's
//! encoding is tested against), and each call has one function here. A
//! call either answers in the caller's frame (`rax` status, `rdx` value) or
//! ends the caller with a fault: an unknown number, a buffer that is not
//! the caller's memory, a length or value out of range, a capability handle
//! that is stale, forged or of the wrong kind. User memory is never
//! dereferenced through user addresses: each page of a buffer is looked up
//! in the caller's own page tables and accessed through the direct map, so
//! a hostile pointer can at worst fault its owner.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::user::{BufferError, UserBuffer};
use microvisor_abi::fault::FaultKind;
use microvisor_abi::inject::{Kind, MAX_BYTES, MAX_FLOOD, MAX_HANG_US};
use microvisor_abi::spec::{CapabilityKind, MAX_PRIORITY};
use microvisor_abi::syscall::{
    Call, LAZY_TIMEOUT, LOG_WRITE_MAX, MAX_PERIOD_US, MAX_QUANTUM_US, REPLY,
    SCHEDULING_QUANTUM_SHIFT, SCHEDULING_SLACK, Status, UserBytes, WAIT_FOREVER,
};
use microvisor_abi::{USER_END, USER_MIN};
use zerocopy::IntoBytes;

use crate::arch::entry::{Frame, Resume};
use crate::arch::memory::{Tables, direct};
use crate::arch::timer;
use crate::kernel::Kernel;
use crate::lifecycle::{self, Fault};
use crate::object::ComponentState;
use crate::object::component::REPORTED_FAULTS;

/// `SignalWait`, the call IPC rides on: its fast path when
/// [`Kernel::direct_switch`] finds that the general pass could decide
/// nothing else (signal the named notification, block, and run the woken
/// component), or else [`dispatch`] from the start — no signal to send, a
/// bad or foreign handle (which faults the caller there), a poll, or any
/// case the general pass must decide. The fast path changes nothing
/// before it is sure it applies.
#[inline(always)]
pub fn signal_wait_entry(kernel: &mut Kernel) -> *const Frame {
    let caller = kernel.current_index();
    let component = &kernel.components[caller];
    let frame = component.frame();
    let (handle, timeout_us, lazy) = (frame.rdi, frame.rsi, frame.rdx == LAZY_TIMEOUT);
    if timeout_us != 0
        && let Some(capability) = component.capability(handle, CapabilityKind::Notification)
    {
        let deadline = deadline_after(kernel.clock, timeout_us);
        if let Some(next) = kernel.direct_switch(
            (caller, capability.target, capability.badge),
            (deadline, lazy),
        ) {
            return next;
        }
    }
    dispatch(kernel)
}

/// The deadline (TSC) a timeout of `timeout_us` (or [`WAIT_FOREVER`])
/// sets when the clock reads `now`.
#[inline(always)]
fn deadline_after(
    clock: microvisor::time::Clock,
    timeout_us: u64,
) -> impl FnOnce(u64) -> Option<u64> {
    move |now: u64| {
        (timeout_us != WAIT_FOREVER).then(|| now.saturating_add(clock.ticks_from_us(timeout_us)))
    }
}

/// `Call`: its fast path when the handle is the one the caller's last
/// `Call` named (checked then, `Component::checked_endpoint`) and
/// [`Kernel::call_switch`] finds the server serving and the general pass
/// could decide nothing else (the server runs next, with the request in
/// the caller's frame: the stub loads it from there), or else
/// [`dispatch`] from the start (which checks the handle, faulting a bad
/// one, and remembers a good one).
#[inline(always)]
pub fn call_entry(kernel: &mut Kernel) -> Resume {
    let caller = kernel.current_index();
    let component = &kernel.components[caller];
    let (handle, timeout_us) = (component.frame().rdi, component.frame().rsi);
    if let Some((server, badge)) = component.checked_endpoint(handle) {
        let deadline = deadline_after(kernel.clock, timeout_us);
        if let Some(next) = kernel.call_switch((caller, server, badge), deadline) {
            return Resume {
                frame: next,
                message: kernel.frame_of(caller),
            };
        }
    }
    Resume::frame(dispatch(kernel))
}

/// `ReplyWait`: its fast path when it replies and
/// [`Kernel::reply_switch`] finds the caller waiting and the general pass
/// could decide nothing else (the caller runs next, with the reply in
/// the server's frame: the stub loads it from there), or else
/// [`dispatch`] from the start.
#[inline(always)]
pub fn reply_wait_entry(kernel: &mut Kernel) -> Resume {
    let server = kernel.current_index();
    let frame = kernel.components[server].frame();
    if frame.rdi == REPLY {
        let deadline = deadline_after(kernel.clock, frame.rsi);
        if let Some(next) = kernel.reply_switch(server, deadline) {
            return Resume {
                frame: next,
                message: kernel.frame_of(server),
            };
        }
    }
    Resume::frame(dispatch(kernel))
}

/// `VcpuRun`, the world switcher's call at every exit, decoded from the
/// caller's registers as `Call::decode` does but without the general
/// dispatcher's decoding and matching of every call; the checks are
/// [`vcpu_run`]'s own.
#[inline(always)]
pub fn vcpu_run_entry(kernel: &mut Kernel) -> *const Frame {
    let caller = kernel.current_index();
    let frame = kernel.components[caller].frame();
    let (vcpu, dirty, limit) = (frame.rdi, frame.rsi, frame.rdx);
    let limit_us = (limit != WAIT_FOREVER).then_some(limit);
    match vcpu_run(kernel, caller, vcpu, dirty, limit_us) {
        Ok(Next::Resume) => kernel.frame_of(caller),
        Ok(Next::Schedule) => kernel.schedule(),
        Err(fault) => {
            lifecycle::fault(kernel, caller, fault, &[]);
            kernel.schedule()
        }
    }
}

/// What a handled call asks for next.
enum Next {
    /// Resume the caller with `rax`/`rdx` as set.
    Resume,
    /// Let the scheduler choose.
    Schedule,
}

/// A call's outcome: what next, or a fault that ends the caller.
type Outcome = Result<Next, Fault>;

/// Handles the system call of the running component and returns the frame
/// to resume.
#[inline(never)]
pub fn dispatch(kernel: &mut Kernel) -> *const Frame {
    let index = kernel.current_index();
    match handle(kernel, index) {
        Ok(Next::Resume) => kernel.frame_of(index),
        Ok(Next::Schedule) => kernel.schedule(),
        Err(fault) => {
            lifecycle::fault(kernel, index, fault, &[]);
            kernel.schedule()
        }
    }
}

fn handle(kernel: &mut Kernel, caller: usize) -> Outcome {
    let call = Call::decode(kernel.components[caller].call_registers())
        .map_err(|number| Fault::new(FaultKind::BadSyscall, 0, number))?;
    let k = kernel;
    match call {
        Call::Null => answer(k, caller, Status::Ok, 0),
        Call::LogWrite { text } => log_write(k, caller, text),
        Call::Yield => yield_now(k, caller),
        Call::Exit { code } => exit(k, caller, code),
        Call::Panic { message } => panic(k, caller, message),
        Call::Signal { notification } => signal(k, caller, notification),
        Call::Wait { timeout_us } => wait(k, caller, timeout_us),
        Call::Time => time(k, caller),
        Call::SchedulingRead { context } => scheduling_read(k, caller, context),
        Call::SchedulingConfigure {
            control,
            context,
            budget_us,
            period_us,
            priority,
        } => scheduling_configure(
            k,
            caller,
            control,
            context,
            (budget_us, period_us, priority),
        ),
        Call::ComponentFault { component, record } => component_fault(k, caller, component, record),
        Call::ComponentRestart { component } => component_restart(k, caller, component),
        Call::ComponentStop { component } => component_stop(k, caller, component),
        Call::SignalWait {
            notification,
            timeout_us,
            lazy,
        } => signal_wait(k, caller, notification, (timeout_us, lazy)),
        Call::VcpuRun {
            vcpu,
            dirty,
            limit_us,
        } => vcpu_run(k, caller, vcpu, dirty, limit_us),
        Call::VcpuPoke { vcpu } => vcpu_poke(k, caller, vcpu),
        Call::VmcsControl { vmcs, intercepts } => vmcs_control(k, caller, vmcs, intercepts),
        Call::VmcsReset { vmcs } => vmcs_reset(k, caller, vmcs),
        Call::GuestLog { vmcs, text } => guest_log(k, caller, vmcs, text),
        Call::ConsoleRead { buffer } => console_read(k, caller, buffer),
        Call::InterruptUnmask { line } => interrupt_unmask(k, caller, line),
        Call::InterruptPending => interrupt_pending(k, caller),
        Call::PciConfig {
            offset,
            width,
            write,
            value,
        } => pci_config(k, caller, offset, width, write, value),
        Call::Inject {
            injection,
            kind,
            argument,
            count,
        } => inject(k, caller, injection, kind, (argument, count)),
        Call::ComponentStatus { component } => component_status(k, caller, component),
        Call::QueueReset { address } => queue_reset(k, caller, address),
        Call::Call {
            endpoint,
            timeout_us,
        } => call_server(k, caller, endpoint, timeout_us),
        Call::ReplyWait { reply, timeout_us } => reply_wait(k, caller, reply, timeout_us),
    }
}

fn answer(kernel: &mut Kernel, caller: usize, status: Status, value: u64) -> Outcome {
    kernel.components[caller].answer(status, value);
    Ok(Next::Resume)
}

/// Answers [`Status::Ok`] and lets the scheduler choose.
fn ok_then_schedule(kernel: &mut Kernel, caller: usize) -> Outcome {
    kernel.components[caller].answer_ok();
    Ok(Next::Schedule)
}

fn bad_argument(value: u64) -> Fault {
    Fault::new(FaultKind::BadArgument, 0, value)
}

/// The target of capability `handle` of `caller`, which must be of `kind`.
fn target(
    kernel: &Kernel,
    caller: usize,
    handle: u64,
    kind: CapabilityKind,
) -> Result<usize, Fault> {
    capability(kernel, caller, handle, kind).map(|capability| capability.target)
}

fn capability(
    kernel: &Kernel,
    caller: usize,
    handle: u64,
    kind: CapabilityKind,
) -> Result<crate::object::Capability, Fault> {
    kernel.components[caller]
        .capability(handle, kind)
        .ok_or(Fault::new(FaultKind::BadCapability, 0, handle))
}

/// The VM a VMCS or vCPU capability of `caller` names, which must have
/// been created.
fn vm(kernel: &Kernel, caller: usize, handle: u64, kind: CapabilityKind) -> Result<usize, Fault> {
    let vm = target(kernel, caller, handle, kind)?;
    match kernel.vms.get(vm) {
        Some(created) if vm < kernel.vm_count && created.is_ready() => Ok(vm),
        _ => Err(bad_argument(handle)),
    }
}

/// A component-control target other than the caller itself.
fn controlled(kernel: &Kernel, caller: usize, handle: u64) -> Result<usize, Fault> {
    let target = target(kernel, caller, handle, CapabilityKind::ComponentControl)?;
    if target == caller {
        return Err(bad_argument(handle));
    }
    Ok(target)
}

fn log_write(kernel: &mut Kernel, caller: usize, text: UserBytes) -> Outcome {
    let mut buffer = [0u8; LOG_WRITE_MAX as usize];
    let length = copy_from_user(kernel, caller, text, &mut buffer)?;
    crate::console::component_line(kernel.components[caller].name(), &buffer[..length]);
    answer(kernel, caller, Status::Ok, 0)
}

fn yield_now(kernel: &mut Kernel, caller: usize) -> Outcome {
    kernel.end_quantum();
    ok_then_schedule(kernel, caller)
}

fn exit(kernel: &mut Kernel, caller: usize, code: i32) -> Outcome {
    let name = kernel.components[caller].name();
    if code == 0 {
        log::info!("component '{name}' exited");
    } else {
        log::warn!("component '{name}' exited with code {code}");
    }
    lifecycle::stop(kernel, caller, ComponentState::Exited(code));
    kernel.notify_supervisor(caller);
    Ok(Next::Schedule)
}

fn panic(kernel: &mut Kernel, caller: usize, message: UserBytes) -> Outcome {
    let mut buffer = [0u8; LOG_WRITE_MAX as usize];
    let length = copy_from_user(kernel, caller, message, &mut buffer)?;
    let fault = Fault::new(FaultKind::Panic, 0, 0);
    lifecycle::fault(kernel, caller, fault, &buffer[..length]);
    Ok(Next::Schedule)
}

/// Signals the notification capability `handle` of `caller`; returns the
/// target.
fn notify(kernel: &mut Kernel, caller: usize, handle: u64) -> Result<usize, Fault> {
    let capability = capability(kernel, caller, handle, CapabilityKind::Notification)?;
    kernel.notify(capability.target, capability.badge);
    Ok(capability.target)
}

fn signal(kernel: &mut Kernel, caller: usize, notification: u64) -> Outcome {
    let target = notify(kernel, caller, notification)?;
    kernel.components[caller].answer_ok();
    let target = &kernel.components[target];
    let preempt = target.state() == ComponentState::Ready
        && target.priority() > kernel.components[caller].priority();
    Ok(if preempt {
        Next::Schedule
    } else {
        Next::Resume
    })
}

/// `caller` waits on its notification word for at most `timeout_us`
/// (`None`: forever; 0 polls).
fn wait(kernel: &mut Kernel, caller: usize, timeout_us: Option<u64>) -> Outcome {
    let clock = kernel.clock;
    let now = timer::now();
    let blocked = kernel.components[caller].wait(timeout_us, now, |us| {
        now.saturating_add(clock.ticks_from_us(us))
    });
    Ok(if blocked {
        Next::Schedule
    } else {
        Next::Resume
    })
}

fn signal_wait(
    kernel: &mut Kernel,
    caller: usize,
    notification: Option<u64>,
    (timeout_us, lazy): (Option<u64>, bool),
) -> Outcome {
    if let Some(handle) = notification {
        notify(kernel, caller, handle)?;
    }
    let next = wait(kernel, caller, timeout_us);
    kernel.components[caller].set_lazy(lazy);
    next
}

/// `caller` calls the server its endpoint capability `handle` names:
/// the request goes to the server at once when it serves, waits for it
/// otherwise (across its restart), and is answered
/// [`Status::Unanswered`] at once when the server cannot serve again
/// ([`Kernel::may_serve_again`]). A timeout of 0 faults the caller: the
/// call could only time out.
fn call_server(
    kernel: &mut Kernel,
    caller: usize,
    handle: u64,
    timeout_us: Option<u64>,
) -> Outcome {
    let endpoint = capability(kernel, caller, handle, CapabilityKind::Endpoint)?;
    if timeout_us == Some(0) {
        // A call cannot be over at once: it would always time out.
        return Err(bad_argument(0));
    }
    let (server, badge) = (endpoint.target, endpoint.badge);
    kernel.components[caller].remember_endpoint(handle, server, badge);
    let now = timer::now();
    let deadline = deadline_after(kernel.clock, timeout_us.unwrap_or(WAIT_FOREVER))(now);
    if kernel.components[server].state() == ComponentState::Serving {
        let request = kernel.components[caller].message();
        kernel.components[caller].block_calling(server, deadline);
        kernel.components[server].take_request(caller, badge, Some(&request), now);
    } else if kernel.may_serve_again(server) {
        kernel.components[caller].send_call(server, badge, deadline);
    } else {
        return answer(kernel, caller, Status::Unanswered, 0);
    }
    Ok(Next::Schedule)
}

/// `server` answers the caller it owes a reply (with its message when
/// `reply`, else [`Status::Unanswered`]; nothing when that caller has
/// since timed out or ended), then takes pending bits, or the waiting
/// request of the highest priority, or blocks serving for at most
/// `timeout_us` (0 polls).
fn reply_wait(kernel: &mut Kernel, server: usize, reply: bool, timeout_us: Option<u64>) -> Outcome {
    let now = timer::now();
    let mut woke = false;
    if let Some(caller) = kernel.components[server].take_reply_to()
        && kernel.components[caller].state() == (ComponentState::Calling { server })
    {
        let message = kernel.components[server].message();
        let (status, message) = if reply {
            (Status::Ok, Some(&message))
        } else {
            (Status::Unanswered, None)
        };
        kernel.components[caller].end_call(status, message, now);
        woke = true;
    }
    let answered_at_once = if kernel.components[server].serve_signal(now) {
        true
    } else if let Some((caller, badge)) = kernel.waiting_request(server) {
        let request = kernel.components[caller].message();
        kernel.components[caller].request_taken(server);
        kernel.components[server].take_request(caller, badge, Some(&request), now);
        true
    } else if timeout_us == Some(0) {
        kernel.components[server].answer(Status::TimedOut, 0);
        true
    } else {
        let deadline = deadline_after(kernel.clock, timeout_us.unwrap_or(WAIT_FOREVER))(now);
        kernel.components[server].block_serving(deadline);
        false
    };
    Ok(if answered_at_once && !woke {
        Next::Resume
    } else {
        Next::Schedule
    })
}

fn time(kernel: &mut Kernel, caller: usize) -> Outcome {
    let now = kernel.clock.since_boot_ns(timer::now());
    answer(kernel, caller, Status::Ok, now)
}

fn scheduling_read(kernel: &mut Kernel, caller: usize, context: Option<u64>) -> Outcome {
    let target = match context {
        None => caller,
        Some(handle) => target(kernel, caller, handle, CapabilityKind::SchedulingContext)?,
    };
    kernel.account(timer::now());
    let component = &kernel.components[target];
    let status = if component.is_alive() || component.state() == ComponentState::NotStarted {
        Status::Ok
    } else {
        Status::Ended
    };
    let consumed = kernel
        .clock
        .ns_from_ticks(component.scheduling().consumed());
    answer(kernel, caller, status, consumed)
}

fn scheduling_configure(
    kernel: &mut Kernel,
    caller: usize,
    control: u64,
    context: u64,
    (budget, period, priority): (u64, u64, u64),
) -> Outcome {
    target(kernel, caller, control, CapabilityKind::SchedulingControl)?;
    let target = target(kernel, caller, context, CapabilityKind::SchedulingContext)?;
    if period == 0 || budget == 0 || budget > period || period > MAX_PERIOD_US {
        return Err(bad_argument(budget));
    }
    let slack = priority & SCHEDULING_SLACK != 0;
    let quantum_us = priority >> SCHEDULING_QUANTUM_SHIFT;
    // Bits between the slack flag and the quantum.
    let reserved = (priority >> 33) & ((1 << (SCHEDULING_QUANTUM_SHIFT - 33)) - 1);
    let priority = priority & 0xffff_ffff;
    if reserved != 0 || quantum_us > MAX_QUANTUM_US {
        return Err(bad_argument(quantum_us));
    }
    if priority > u64::from(MAX_PRIORITY) {
        return Err(bad_argument(priority));
    }
    let now = timer::now();
    kernel.account(now);
    let (budget, period) = (
        kernel.clock.ticks_from_us(budget),
        kernel.clock.ticks_from_us(period),
    );
    let quantum = kernel.clock.ticks_from_us(quantum_us);
    kernel.components[target].configure((budget, period), priority as u32, (slack, quantum), now);
    ok_then_schedule(kernel, caller)
}

fn component_fault(kernel: &mut Kernel, caller: usize, component: u64, record: u64) -> Outcome {
    let target = target(kernel, caller, component, CapabilityKind::ComponentControl)?;
    let Some(fault) = kernel.components[target].fault() else {
        return answer(kernel, caller, Status::NoFault, 0);
    };
    copy_to_user(kernel, caller, record, fault.as_bytes())?;
    answer(kernel, caller, Status::Ok, 0)
}

fn component_restart(kernel: &mut Kernel, caller: usize, component: u64) -> Outcome {
    let target = controlled(kernel, caller, component)?;
    let result = lifecycle::restart(kernel, target);
    let restarted = &kernel.components[target];
    match result {
        Ok(()) if restarted.fault_count() > REPORTED_FAULTS => {}
        Ok(()) => log::info!(
            "component '{}' restarted (generation {})",
            restarted.name(),
            restarted.generation()
        ),
        Err(error) => log::error!(
            "component '{}' could not be restarted: {error}",
            restarted.name()
        ),
    }
    ok_then_schedule(kernel, caller)
}

fn component_stop(kernel: &mut Kernel, caller: usize, component: u64) -> Outcome {
    let target = controlled(kernel, caller, component)?;
    if kernel.components[target].is_alive() {
        log::info!(
            "component '{}' stopped by its supervisor",
            kernel.components[target].name()
        );
        lifecycle::stop(kernel, target, ComponentState::Stopped);
    } else if matches!(
        kernel.components[target].state(),
        ComponentState::Faulted | ComponentState::NotStarted
    ) {
        // Held where it ended (or before it started): it will not serve
        // again, so the calls that wait for its next life end now.
        kernel.components[target].hold();
        kernel.end_calls_to(target, false);
    }
    answer(kernel, caller, Status::Ok, 0)
}

/// Injects a fault of `kind` into the target of `caller`'s injection
/// capability `handle` (see `microvisor_abi::inject`).
fn inject(
    kernel: &mut Kernel,
    caller: usize,
    handle: u64,
    kind: u64,
    (argument, count): (u64, u64),
) -> Outcome {
    let target = target(kernel, caller, handle, CapabilityKind::Injection)?;
    let kind = Kind::from_u64(kind).ok_or(bad_argument(kind))?;
    let bounded = |limit: u64| {
        if (1..=limit).contains(&count) {
            Ok(count)
        } else {
            Err(bad_argument(count))
        }
    };
    match kind {
        Kind::Hang if argument > MAX_HANG_US => return Err(bad_argument(argument)),
        Kind::CorruptMemory | Kind::CorruptQueue => _ = bounded(MAX_BYTES)?,
        Kind::FloodQueue => _ = bounded(MAX_FLOOD)?,
        _ => {}
    }
    if target == caller {
        return Err(bad_argument(handle));
    }
    if !kernel.components[target].is_alive() {
        return answer(kernel, caller, Status::Ended, 0);
    }
    let value = match kind {
        Kind::Crash => {
            crate::inject::crash(kernel, target, argument);
            0
        }
        Kind::Hang => {
            let until = timer::now().saturating_add(kernel.clock.ticks_from_us(argument));
            kernel.components[target].hang(until);
            0
        }
        Kind::CorruptMemory => crate::inject::corrupt_memory(kernel, target, argument, count),
        Kind::CorruptQueue => crate::inject::corrupt_queue(kernel, target, argument, count),
        Kind::FloodQueue => crate::inject::flood_queue(kernel, target, argument, count),
    };
    kernel.components[caller].answer(Status::Ok, value);
    Ok(Next::Schedule)
}

/// How long a supervised component has been busy without waiting.
fn component_status(kernel: &mut Kernel, caller: usize, component: u64) -> Outcome {
    let target = controlled(kernel, caller, component)?;
    let child = &kernel.components[target];
    if !child.is_alive() {
        return answer(kernel, caller, Status::Ended, 0);
    }
    let busy = kernel.clock.ns_from_ticks(child.busy_for(timer::now())) / 1000;
    answer(kernel, caller, Status::Ok, busy)
}

/// Resets the queue mapped at `address` in `caller`, and every other
/// queue between the same two components: the ends' requests and answers
/// travel on a pair of queues, and a restart would reset both, so each
/// end notices on the queue it is waiting on and resynchronises as after
/// a restart (a sender whose requests were in the reset queue may be
/// waiting for answers on the other).
fn queue_reset(kernel: &mut Kernel, caller: usize, address: u64) -> Outcome {
    let queue = (0..kernel.queue_count)
        .find(|&at| kernel.queues[at].address_in(caller) == Some(address))
        .ok_or(Fault::new(FaultKind::BadArgument, address, address))?;
    let (sender, receiver) = kernel.queues[queue].ends();
    for at in 0..kernel.queue_count {
        let (from, to) = kernel.queues[at].ends();
        if (from, to) == (sender, receiver) || (from, to) == (receiver, sender) {
            crate::lifecycle::reset_queue(kernel, at, caller);
        }
    }
    answer(kernel, caller, Status::Ok, 0)
}

/// The VM the vCPU handle `vcpu` of `caller` names, which `caller` must
/// run; remembered for its next `VcpuRun` (`Component::checked_vcpu`).
#[inline(never)]
fn checked_vcpu(kernel: &mut Kernel, caller: usize, vcpu: u64) -> Result<usize, Fault> {
    let vm = vm(kernel, caller, vcpu, CapabilityKind::Vcpu)?;
    if kernel.vms[vm].switcher() != caller {
        return Err(bad_argument(vcpu));
    }
    kernel.components[caller].remember_vcpu(vcpu, vm);
    Ok(vm)
}

#[inline(always)]
fn vcpu_run(
    kernel: &mut Kernel,
    caller: usize,
    vcpu: u64,
    dirty: u64,
    limit_us: Option<u64>,
) -> Outcome {
    let vm = match kernel.components[caller].checked_vcpu(vcpu) {
        Some(vm) => vm,
        None => checked_vcpu(kernel, caller, vcpu)?,
    };
    if dirty & microvisor_abi::vcpu::dirty::FETCH != 0 {
        let reason = kernel.vms[vm].fetch(dirty);
        return answer(kernel, caller, Status::Ok, u64::from(reason));
    }
    match crate::vcpu::run(kernel, caller, vm, dirty, limit_us) {
        Some(reason) => answer(kernel, caller, Status::Ok, reason as u64),
        // Rewound: the interrupt is taken on the way out, and the thread
        // re-enters the guest when it next runs.
        None => Ok(Next::Resume),
    }
}

fn vcpu_poke(kernel: &mut Kernel, caller: usize, vcpu: u64) -> Outcome {
    let vm = vm(kernel, caller, vcpu, CapabilityKind::Vcpu)?;
    kernel.vms[vm].poke();
    answer(kernel, caller, Status::Ok, 0)
}

fn vmcs_control(kernel: &mut Kernel, caller: usize, vmcs: u64, intercepts: u64) -> Outcome {
    let vm = vm(kernel, caller, vmcs, CapabilityKind::Vmcs)?;
    if !kernel.vms[vm].control(intercepts) {
        return Err(bad_argument(intercepts));
    }
    answer(kernel, caller, Status::Ok, 0)
}

fn vmcs_reset(kernel: &mut Kernel, caller: usize, vmcs: u64) -> Outcome {
    let vm = vm(kernel, caller, vmcs, CapabilityKind::Vmcs)?;
    crate::vcpu::reset(kernel, vm);
    answer(kernel, caller, Status::Ok, 0)
}

fn guest_log(kernel: &mut Kernel, caller: usize, vmcs: u64, text: UserBytes) -> Outcome {
    let vm = vm(kernel, caller, vmcs, CapabilityKind::Vmcs)?;
    let mut buffer = [0u8; LOG_WRITE_MAX as usize];
    let length = copy_from_user(kernel, caller, text, &mut buffer)?;
    crate::console::component_line(kernel.vms[vm].name(), &buffer[..length]);
    answer(kernel, caller, Status::Ok, 0)
}

/// Faults a caller that is not the interrupt forwarder.
fn forwarder_only(kernel: &Kernel, caller: usize, line: u64) -> Result<(), Fault> {
    if kernel.lines.forwarder() == Some(caller) {
        Ok(())
    } else {
        Err(Fault::new(FaultKind::BadCapability, 0, line))
    }
}

/// The forwarder releases `line`: unmasked, and pending again at once if
/// an edge came while it was pending.
fn interrupt_unmask(kernel: &mut Kernel, caller: usize, line: u64) -> Outcome {
    forwarder_only(kernel, caller, line)?;
    let Some(released) = kernel.lines.unmask(line) else {
        return Err(bad_argument(line));
    };
    crate::arch::ioapic::unmask(line);
    if let Some((forwarder, bits)) = released.signal {
        kernel.notify(forwarder, bits);
    }
    answer(kernel, caller, Status::Ok, 0)
}

/// The lines that fired and are still masked, for the forwarder.
fn interrupt_pending(kernel: &mut Kernel, caller: usize) -> Outcome {
    forwarder_only(kernel, caller, 0)?;
    let pending = u64::from(kernel.lines.pending());
    answer(kernel, caller, Status::Ok, pending)
}

/// Reads or writes the configuration space of the caller's PCI function;
/// a caller without one faults, an access `microvisor::pci::config_access`
/// refuses is a bad argument.
fn pci_config(
    kernel: &mut Kernel,
    caller: usize,
    offset: u64,
    width: u64,
    write: bool,
    value: u64,
) -> Outcome {
    let Some((_, function)) = kernel.pci_of(caller) else {
        return Err(Fault::new(FaultKind::BadCapability, 0, offset));
    };
    if !microvisor::pci::config_access(offset, width, write) {
        return Err(bad_argument(offset));
    }
    let address = function.address;
    let read = if write {
        crate::arch::pci::write(address, offset as u8, width as u8, value as u32);
        0
    } else {
        crate::arch::pci::read(address, offset as u8, width as u8)
    };
    answer(kernel, caller, Status::Ok, u64::from(read))
}

/// The most bytes one `ConsoleRead` hands over.
const CONSOLE_READ_MAX: usize = 256;

/// Hands the console input that waits to its holder (anyone else faults).
fn console_read(kernel: &mut Kernel, caller: usize, buffer: UserBytes) -> Outcome {
    if kernel.console_input.holder().map(|(holder, _)| holder) != Some(caller) {
        return Err(Fault::new(
            FaultKind::BadCapability,
            0,
            u64::from(microvisor_abi::syscall::CONSOLE_LINE),
        ));
    }
    let mut bytes = [0u8; CONSOLE_READ_MAX];
    let wanted = (buffer.length as usize).min(CONSOLE_READ_MAX);
    // The buffer is checked before any byte leaves the ring.
    user_buffer(buffer.address, wanted as u64, CONSOLE_READ_MAX as u64)?;
    let count = kernel.console_input.take(&mut bytes[..wanted]);
    copy_to_user(kernel, caller, buffer.address, &bytes[..count])?;
    answer(kernel, caller, Status::Ok, count as u64)
}

fn user_buffer(address: u64, length: u64, limit: u64) -> Result<UserBuffer, Fault> {
    UserBuffer::new(address, length, limit, USER_MIN, USER_END).map_err(|error| match error {
        BufferError::TooLong { length, .. } => Fault::new(FaultKind::BadArgument, address, length),
        BufferError::OutsideUserSpace { address, length } => {
            Fault::new(FaultKind::BadPointer, address, length)
        }
    })
}

/// Visits each page of a checked user buffer of component `index` with
/// its direct-map address and the byte range within the buffer; with
/// `write`, every page must be writable.
fn for_each_page(
    kernel: &mut Kernel,
    index: usize,
    user: UserBuffer,
    write: bool,
    mut visit: impl FnMut(*mut u8, core::ops::Range<usize>),
) -> Result<(), Fault> {
    let tables = Tables {
        frames: &mut kernel.frames,
    };
    let space = kernel.components[index].space();
    let (address, length) = (user.address.0, user.length);
    let bad_pointer = Fault::new(FaultKind::BadPointer, address, length);
    // Check every page before touching any.
    for page in user.pages(PAGE_SIZE) {
        space
            .translate(&tables, VirtualAddress(page.0))
            .filter(|t| t.user && (t.write || !write))
            .ok_or(bad_pointer)?;
    }
    let mut done = 0usize;
    for page in user.pages(PAGE_SIZE) {
        let translation = space
            .translate(&tables, VirtualAddress(page.0))
            .ok_or(bad_pointer)?;
        let start = address.max(page.0);
        let end = (address + length).min(page.0 + PAGE_SIZE);
        let count = (end - start) as usize;
        // `page` is page-aligned, so the translation is the frame's base.
        visit(
            direct(PhysicalAddress(translation.physical.0 + (start - page.0))),
            done..done + count,
        );
        done += count;
    }
    Ok(())
}

/// Copies the claimed bytes `from` of component `index` into `buffer`.
fn copy_from_user(
    kernel: &mut Kernel,
    index: usize,
    from: UserBytes,
    buffer: &mut [u8],
) -> Result<usize, Fault> {
    let user = user_buffer(from.address, from.length, buffer.len() as u64)?;
    for_each_page(kernel, index, user, false, |from, range| {
        // SAFETY: `from` is the direct-map address of a frame mapped
        // user-readable in the component, with `range.len()` bytes left in
        // its page; `range` lies inside `buffer` (length <= buffer.len()).
        unsafe {
            core::ptr::copy_nonoverlapping(from, buffer[range.clone()].as_mut_ptr(), range.len())
        };
    })?;
    Ok(from.length as usize)
}

/// Copies `bytes` to user address `address` of component `index`.
fn copy_to_user(
    kernel: &mut Kernel,
    index: usize,
    address: u64,
    bytes: &[u8],
) -> Result<(), Fault> {
    let user = user_buffer(address, bytes.len() as u64, bytes.len() as u64)?;
    for_each_page(kernel, index, user, true, |to, range| {
        // SAFETY: `to` is the direct-map address of a frame mapped
        // user-writable in the component, with `range.len()` bytes left in
        // its page; `range` lies inside `bytes`.
        unsafe { core::ptr::copy_nonoverlapping(bytes[range.clone()].as_ptr(), to, range.len()) };
    })
}
