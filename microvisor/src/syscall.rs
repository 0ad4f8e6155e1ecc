//! The system-call dispatcher.
//!
//! Decodes the number and arguments from the caller's saved frame, checks
//! them, and either answers in the frame (`rax` status, `rdx` value) or
//! ends the caller with a fault: an unknown number, a buffer that is not
//! the caller's memory, a length or value out of range, a capability handle
//! that is stale, forged or of the wrong kind. User memory is never
//! dereferenced through user addresses: each page of a buffer is looked up
//! in the caller's own page tables and accessed through the direct map, so
//! a hostile pointer can at worst fault its owner.

use microvisor::address::{PAGE_SIZE, PhysicalAddress, VirtualAddress};
use microvisor::user::{BufferError, UserBuffer};
use microvisor_abi::fault::FaultKind;
use microvisor_abi::spec::{CapabilityKind, MAX_PRIORITY};
use microvisor_abi::syscall::{LOG_WRITE_MAX, NO_SIGNAL, SELF, Status, Syscall, WAIT_FOREVER};
use microvisor_abi::{USER_END, USER_MIN};
use zerocopy::IntoBytes;

use crate::arch::entry::Frame;
use crate::arch::memory::{Tables, direct};
use crate::arch::timer;
use crate::component::{self, Capability, ComponentState};
use crate::state::{self, Kernel};
use crate::trap::{self, Fault};

/// Answers the calls that need no kernel state directly in the caller's
/// frame; returns `false` when [`dispatch`] must handle the call.
#[inline(always)]
pub fn fast_path(frame: &mut Frame) -> bool {
    if frame.rax == Syscall::Null as u64 {
        frame.rax = Status::Ok as u64;
        return true;
    }
    false
}

/// What a handled call asks for next.
enum Next {
    /// Resume the caller with `rax`/`rdx` as set.
    Resume,
    /// Let the scheduler choose.
    Schedule,
}

/// Handles the system call of the running component and returns the frame
/// to resume.
#[inline(never)]
pub fn dispatch() -> *const Frame {
    // SAFETY: one call per entry from ring 3 (see `state`).
    let kernel = unsafe { state::kernel() };
    let index = kernel.current_index();
    match handle(kernel, index) {
        Ok(Next::Resume) => &kernel.components[index].frame,
        Ok(Next::Schedule) => kernel.schedule(),
        Err(fault) => {
            trap::fault_component(kernel, index, fault, &[]);
            kernel.schedule()
        }
    }
}

fn fault(kind: FaultKind, address: u64, detail: u64) -> Fault {
    Fault {
        kind,
        address,
        detail,
    }
}

fn answer(kernel: &mut Kernel, index: usize, status: Status, value: u64) -> Result<Next, Fault> {
    let frame = &mut kernel.components[index].frame;
    frame.rax = status as u64;
    frame.rdx = value;
    Ok(Next::Resume)
}

/// Looks up `handle` in component `index`'s table, requiring `kind`.
fn capability(
    kernel: &Kernel,
    index: usize,
    handle: u64,
    kind: CapabilityKind,
) -> Result<Capability, Fault> {
    let component = &kernel.components[index];
    microvisor::capability::decode(handle, component.generation, component.capability_count)
        .and_then(|slot| component.capabilities[slot])
        .filter(|capability| capability.kind == kind)
        .ok_or(fault(FaultKind::BadCapability, 0, handle))
}

fn handle(kernel: &mut Kernel, index: usize) -> Result<Next, Fault> {
    let frame = &kernel.components[index].frame;
    let (number, arg0, arg1, arg2, arg3, arg4) = (
        frame.rax, frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8,
    );
    let call = Syscall::from_number(number).ok_or(fault(FaultKind::BadSyscall, 0, number))?;
    match call {
        Syscall::Null => answer(kernel, index, Status::Ok, 0),
        Syscall::LogWrite => {
            let mut buffer = [0u8; LOG_WRITE_MAX as usize];
            let length = copy_from_user(kernel, index, arg0, arg1, &mut buffer)?;
            crate::console::component_line(kernel.components[index].name(), &buffer[..length]);
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::Yield => {
            kernel.components[index].frame.rax = Status::Ok as u64;
            Ok(Next::Schedule)
        }
        Syscall::Exit => {
            let code = arg0 as u32 as i32;
            let name = kernel.components[index].name();
            if code == 0 {
                log::info!("component '{name}' exited");
            } else {
                log::warn!("component '{name}' exited with code {code}");
            }
            component::stop(kernel, index, ComponentState::Exited(code));
            kernel.notify_supervisor(index);
            Ok(Next::Schedule)
        }
        Syscall::Panic => {
            let mut buffer = [0u8; LOG_WRITE_MAX as usize];
            let length = copy_from_user(kernel, index, arg0, arg1, &mut buffer)?;
            trap::fault_component(
                kernel,
                index,
                fault(FaultKind::Panic, 0, 0),
                &buffer[..length],
            );
            Ok(Next::Schedule)
        }
        Syscall::Signal => {
            let target = signal(kernel, index, arg0)?;
            kernel.components[index].frame.rax = Status::Ok as u64;
            let target = &kernel.components[target];
            let preempt = target.state == ComponentState::Ready
                && target.priority > kernel.components[index].priority;
            Ok(if preempt {
                Next::Schedule
            } else {
                Next::Resume
            })
        }
        Syscall::Wait => wait(kernel, index, arg0),
        Syscall::SignalWait => {
            if arg0 != NO_SIGNAL {
                signal(kernel, index, arg0)?;
            }
            wait(kernel, index, arg1)
        }
        Syscall::Time => {
            let now = kernel.clock.since_boot_ns();
            answer(kernel, index, Status::Ok, now)
        }
        Syscall::SchedulingRead => {
            let target = if arg0 == SELF {
                index
            } else {
                capability(kernel, index, arg0, CapabilityKind::SchedulingContext)?.target
            };
            kernel.account(timer::now());
            let consumed = kernel
                .clock
                .ns_from_ticks(kernel.components[target].scheduling.consumed());
            answer(kernel, index, Status::Ok, consumed)
        }
        Syscall::SchedulingConfigure => {
            capability(kernel, index, arg0, CapabilityKind::SchedulingControl)?;
            let target = capability(kernel, index, arg1, CapabilityKind::SchedulingContext)?.target;
            let (budget, period, priority) = (arg2, arg3, arg4);
            if period == 0 || budget == 0 || budget > period || period > 10_000_000 {
                return Err(fault(FaultKind::BadArgument, 0, budget));
            }
            if priority > u64::from(MAX_PRIORITY) {
                return Err(fault(FaultKind::BadArgument, 0, priority));
            }
            let now = timer::now();
            kernel.account(now);
            let clock = kernel.clock;
            let component = &mut kernel.components[target];
            component.scheduling.configure(
                clock.ticks_from_us(budget),
                clock.ticks_from_us(period),
                now,
            );
            component.priority = priority as u32;
            kernel.components[index].frame.rax = Status::Ok as u64;
            Ok(Next::Schedule)
        }
        Syscall::ComponentFault => {
            let target = capability(kernel, index, arg0, CapabilityKind::ComponentControl)?.target;
            let Some(record) = kernel.components[target].fault else {
                return answer(kernel, index, Status::NoFault, 0);
            };
            copy_to_user(kernel, index, arg1, record.as_bytes())?;
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::ComponentRestart => {
            let target = capability(kernel, index, arg0, CapabilityKind::ComponentControl)?.target;
            if target == index {
                return Err(fault(FaultKind::BadArgument, 0, arg0));
            }
            let result = component::restart(kernel, target);
            let restarted = &kernel.components[target];
            match result {
                Ok(()) if restarted.fault_count > trap::REPORTED_FAULTS => {}
                Ok(()) => log::info!(
                    "component '{}' restarted (generation {})",
                    restarted.name(),
                    restarted.generation
                ),
                Err(error) => log::error!(
                    "component '{}' could not be restarted: {error}",
                    restarted.name()
                ),
            }
            kernel.components[index].frame.rax = Status::Ok as u64;
            Ok(Next::Schedule)
        }
        Syscall::ComponentStop => {
            let target = capability(kernel, index, arg0, CapabilityKind::ComponentControl)?.target;
            if target == index {
                return Err(fault(FaultKind::BadArgument, 0, arg0));
            }
            if kernel.components[target].is_alive() {
                log::info!(
                    "component '{}' stopped by its supervisor",
                    kernel.components[target].name()
                );
                component::stop(kernel, target, ComponentState::Stopped);
            }
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::VcpuRun => {
            let vm = vm_capability(kernel, index, arg0, CapabilityKind::Vcpu)?;
            if kernel.vms[vm].switcher != index {
                return Err(fault(FaultKind::BadArgument, 0, arg0));
            }
            match crate::vm::run(kernel, index, vm, arg1, arg2) {
                Some(reason) => answer(kernel, index, Status::Ok, reason as u64),
                // Rewound: the interrupt is taken on the way out, and the
                // thread re-enters the guest when it next runs.
                None => Ok(Next::Resume),
            }
        }
        Syscall::VcpuPoke => {
            let vm = vm_capability(kernel, index, arg0, CapabilityKind::Vcpu)?;
            crate::vm::poke(kernel, vm);
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::VmcsControl => {
            let vm = vm_capability(kernel, index, arg0, CapabilityKind::Vmcs)?;
            if !crate::vm::control(kernel, vm, arg1) {
                return Err(fault(FaultKind::BadArgument, 0, arg1));
            }
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::VmcsReset => {
            let vm = vm_capability(kernel, index, arg0, CapabilityKind::Vmcs)?;
            crate::vm::reset(kernel, vm);
            answer(kernel, index, Status::Ok, 0)
        }
        Syscall::GuestLog => {
            let vm = vm_capability(kernel, index, arg0, CapabilityKind::Vmcs)?;
            let mut buffer = [0u8; LOG_WRITE_MAX as usize];
            let length = copy_from_user(kernel, index, arg1, arg2, &mut buffer)?;
            crate::console::component_line(kernel.vms[vm].name(), &buffer[..length]);
            answer(kernel, index, Status::Ok, 0)
        }
    }
}

/// Looks up a VMCS or vCPU capability of component `index` and returns its
/// VM, which must have been created.
fn vm_capability(
    kernel: &Kernel,
    index: usize,
    handle: u64,
    kind: CapabilityKind,
) -> Result<usize, Fault> {
    let vm = capability(kernel, index, handle, kind)?.target;
    match kernel.vms.get(vm) {
        Some(created) if vm < kernel.vm_count && created.ready => Ok(vm),
        _ => Err(fault(FaultKind::BadArgument, 0, handle)),
    }
}

/// Signals the notification capability `handle` of component `index`;
/// returns the target.
fn signal(kernel: &mut Kernel, index: usize, handle: u64) -> Result<usize, Fault> {
    let capability = capability(kernel, index, handle, CapabilityKind::Notification)?;
    state::notify(
        &mut kernel.components[..kernel.component_count],
        capability.target,
        capability.badge,
    );
    Ok(capability.target)
}

/// Component `index` waits on its notification word for at most
/// `timeout_us` ([`WAIT_FOREVER`]; 0 polls).
fn wait(kernel: &mut Kernel, index: usize, timeout_us: u64) -> Result<Next, Fault> {
    let component = &mut kernel.components[index];
    if component.notification != 0 {
        let bits = core::mem::take(&mut component.notification);
        return answer(kernel, index, Status::Ok, bits);
    }
    if timeout_us == 0 {
        return answer(kernel, index, Status::TimedOut, 0);
    }
    component.state = ComponentState::Waiting;
    component.wake_at = (timeout_us != WAIT_FOREVER)
        .then(|| timer::now().saturating_add(kernel.clock.ticks_from_us(timeout_us)));
    Ok(Next::Schedule)
}

fn user_buffer(address: u64, length: u64, limit: u64) -> Result<UserBuffer, Fault> {
    UserBuffer::new(address, length, limit, USER_MIN, USER_END).map_err(|error| match error {
        BufferError::TooLong { length, .. } => fault(FaultKind::BadArgument, address, length),
        BufferError::OutsideUserSpace { address, length } => {
            fault(FaultKind::BadPointer, address, length)
        }
    })
}

/// Visits each page of a checked user buffer of component `index` with
/// its direct-map address, the byte range within the buffer, and whether
/// the page is writable.
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
    let space = kernel.components[index].space;
    let (address, length) = (user.address.0, user.length);
    // Check every page before touching any.
    for page in user.pages(PAGE_SIZE) {
        space
            .translate(&tables, VirtualAddress(page.0))
            .filter(|t| t.user && (t.write || !write))
            .ok_or(fault(FaultKind::BadPointer, address, length))?;
    }
    let mut done = 0usize;
    for page in user.pages(PAGE_SIZE) {
        let translation = space
            .translate(&tables, VirtualAddress(page.0))
            .ok_or(fault(FaultKind::BadPointer, address, length))?;
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

/// Copies `length` bytes at user address `address` of component `index`
/// into `buffer`.
fn copy_from_user(
    kernel: &mut Kernel,
    index: usize,
    address: u64,
    length: u64,
    buffer: &mut [u8],
) -> Result<usize, Fault> {
    let user = user_buffer(address, length, buffer.len() as u64)?;
    for_each_page(kernel, index, user, false, |from, range| {
        // SAFETY: `from` is the direct-map address of a frame mapped
        // user-readable in the component, with `range.len()` bytes left in
        // its page; `range` lies inside `buffer` (length <= buffer.len()).
        unsafe {
            core::ptr::copy_nonoverlapping(from, buffer[range.clone()].as_mut_ptr(), range.len())
        };
    })?;
    Ok(length as usize)
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
