//! A component's life after boot: faults, stops and restarts.
//!
//! A fault ends the component: the core reports what happened (kind,
//! address, error code, instruction pointer; the first
//! [`REPORTED_FAULTS`] of a component in full, later ones only counted),
//! keeps the fault record for its supervisor, stops it, returns its memory
//! and notifies the supervisor. Restarting re-runs the boot-time build
//! (`crate::loader`) from the program in the boot image: memory
//! re-initialised, queue ends reset with their generation bumped (and the
//! peer woken, so it notices), notification word cleared, a new
//! generation (old capability handles become stale).

use microvisor_abi::fault::{FaultKind, page_fault};

use crate::kernel::Kernel;
use crate::loader::{self, LoadError};
use crate::object::ComponentState;
use crate::object::component::REPORTED_FAULTS;

/// Architectural names of the exception vectors.
pub const EXCEPTION_NAMES: [&str; 32] = [
    "divide error (#DE)",
    "debug (#DB)",
    "non-maskable interrupt",
    "breakpoint (#BP)",
    "overflow (#OF)",
    "bound range exceeded (#BR)",
    "invalid opcode (#UD)",
    "device not available (#NM)",
    "double fault (#DF)",
    "coprocessor segment overrun",
    "invalid TSS (#TS)",
    "segment not present (#NP)",
    "stack-segment fault (#SS)",
    "general protection fault (#GP)",
    "page fault (#PF)",
    "reserved vector 15",
    "x87 floating-point error (#MF)",
    "alignment check (#AC)",
    "machine check (#MC)",
    "SIMD floating-point error (#XM)",
    "virtualization exception (#VE)",
    "control protection (#CP)",
    "reserved vector 22",
    "reserved vector 23",
    "reserved vector 24",
    "reserved vector 25",
    "reserved vector 26",
    "reserved vector 27",
    "hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "security exception (#SX)",
    "reserved vector 31",
];

/// A fault, as the core reports it.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub address: u64,
    pub detail: u64,
}

impl Fault {
    pub fn new(kind: FaultKind, address: u64, detail: u64) -> Self {
        Self {
            kind,
            address,
            detail,
        }
    }
}

/// Reports `fault` for component `index`, stops it, frees its memory and
/// notifies its supervisor, if it has one.
pub fn fault(kernel: &mut Kernel, index: usize, fault: Fault, message: &[u8]) {
    let count = kernel.components[index].fault_count() + 1;
    if count <= REPORTED_FAULTS {
        report(kernel, index, fault, message);
    }
    if count == REPORTED_FAULTS {
        log::warn!(
            "component '{}' has faulted {count} times; further faults are counted, not reported",
            kernel.components[index].name()
        );
    }
    kernel.components[index].record_fault(fault.kind as u32, fault.address, fault.detail);
    stop(kernel, index, ComponentState::Faulted);
    if let Some(supervisor) = kernel.notify_supervisor(index)
        && count <= REPORTED_FAULTS
    {
        log::info!(
            "supervisor '{}' notified",
            kernel.components[supervisor].name()
        );
    }
}

fn report(kernel: &Kernel, index: usize, fault: Fault, message: &[u8]) {
    let component = &kernel.components[index];
    let name = component.name();
    let (rip, rsp) = (component.frame().rip, component.frame().rsp);
    match fault.kind {
        FaultKind::PageFault => {
            let access = if fault.detail & page_fault::FETCH != 0 {
                "instruction fetch"
            } else if fault.detail & page_fault::WRITE != 0 {
                "write"
            } else {
                "read"
            };
            let cause = if fault.detail & page_fault::PRESENT != 0 {
                "protection violation"
            } else {
                "not mapped"
            };
            log::error!(
                "component '{name}' faulted: page fault, {access} at {:#x} ({cause}, error code {:#x}), rip {rip:#x}, rsp {rsp:#x}; stopped",
                fault.address,
                fault.detail
            );
        }
        FaultKind::Exception => {
            let vector = fault.detail as usize;
            let what = EXCEPTION_NAMES.get(vector).copied().unwrap_or("interrupt");
            log::error!(
                "component '{name}' faulted: {what}, vector {vector}, rip {rip:#x}, rsp {rsp:#x}; stopped"
            );
        }
        FaultKind::GeneralProtection => log::error!(
            "component '{name}' faulted: general protection fault (error code {:#x}), rip {rip:#x}, rsp {rsp:#x}; stopped",
            fault.detail
        ),
        FaultKind::BadSyscall => log::error!(
            "component '{name}' faulted: unknown system call {:#x}, rip {rip:#x}; stopped",
            fault.detail
        ),
        FaultKind::BadPointer => log::error!(
            "component '{name}' faulted: bad pointer passed to a system call: {:#x} (length {}) is not readable memory of the component, rip {rip:#x}; stopped",
            fault.address,
            fault.detail
        ),
        FaultKind::BadArgument => log::error!(
            "component '{name}' faulted: system-call argument out of range ({}), rip {rip:#x}; stopped",
            fault.detail
        ),
        FaultKind::Panic => log::error!(
            "component '{name}' faulted: panic: {}; stopped",
            core::str::from_utf8(message).unwrap_or("(message not UTF-8)")
        ),
        FaultKind::InvalidInstruction => {
            log::error!(
                "component '{name}' faulted: invalid instruction (#UD), rip {rip:#x}, rsp {rsp:#x}; stopped"
            )
        }
        FaultKind::BadCapability => log::error!(
            "component '{name}' faulted: stale, forged or wrong-kind capability handle {:#x}, rip {rip:#x}; stopped",
            fault.detail
        ),
    }
}

/// Stops component `index` in `state` and returns its own memory (queue
/// and guest memory stay with their objects); the calls waiting on it
/// end as [`Kernel::end_calls_to`] says.
pub fn stop(kernel: &mut Kernel, index: usize, state: ComponentState) {
    stop_ending_calls(kernel, index, state, false);
}

/// [`stop`], the calls ended as for a restart when `restarting`.
fn stop_ending_calls(kernel: &mut Kernel, index: usize, state: ComponentState, restarting: bool) {
    let mut tables = crate::arch::memory::Tables {
        frames: &mut kernel.frames,
    };
    kernel.components[index].stop(state, &mut tables);
    kernel.end_calls_to(index, restarting);
}

/// Restarts component `index` from its program: everything of the old
/// life is discarded. On failure it stays faulted.
pub fn restart(kernel: &mut Kernel, index: usize) -> Result<(), LoadError> {
    // Requests it had not taken wait for the new life.
    stop_ending_calls(kernel, index, ComponentState::Stopped, true);
    let space = kernel.components[index].space();
    if let Some(root) = kernel.components[index].release_space() {
        // Switching away first: the core never runs on tables it frees.
        if kernel.is_loaded(space) {
            kernel.load_space(kernel.kernel_space);
        }
        let _ = kernel.frames.free(root);
    }
    kernel.components[index].begin_new_life();
    reset_queues(kernel, index);
    match loader::build(kernel, index) {
        Ok(_) => {
            kernel.components[index].start(crate::arch::timer::now());
            Ok(())
        }
        Err(error) => {
            kernel.components[index].fail_restart();
            Err(error)
        }
    }
}

/// Resets every queue component `index` is an end of, bumping its
/// generation, and wakes the other ends so they notice.
fn reset_queues(kernel: &mut Kernel, index: usize) {
    for queue_index in 0..kernel.queue_count {
        if kernel.queues[queue_index].peer_of(index).is_some() {
            reset_queue(kernel, queue_index, index);
        }
    }
}

/// Resets queue `queue_index` on behalf of its end `index` (restarted, or
/// finding the ring impossible) and wakes the other end so it notices.
pub fn reset_queue(kernel: &mut Kernel, queue_index: usize, index: usize) {
    let queue = &mut kernel.queues[queue_index];
    queue.reset();
    if let Some((peer, bit)) = queue.peer_of(index) {
        kernel.notify(peer, 1 << bit);
    }
}
