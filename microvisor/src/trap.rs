//! What the core does with CPU exceptions and interrupts.
//!
//! A trap from ring 3 that is an exception ends the component: the core
//! prints what happened (kind, address, error code, instruction pointer),
//! stops it, returns its memory and runs the next thread; the rest of the
//! system goes on. Interrupts are not routed to components yet; a stray or
//! spurious one is counted and ignored. A trap inside the core itself is a
//! core bug or a hardware failure: the report names the vector, error code,
//! RIP, CR2 and the component that was running, and the machine stops with
//! a failure verdict rather than hang.

use microvisor_abi::fault::{FaultKind, page_fault};

use microvisor_abi::fault::FaultRecord;

use crate::arch::cpu;
use crate::arch::entry::Frame;
use crate::arch::timer::{self, TIMER_VECTOR};
use crate::component::{self, ComponentState};
use crate::state::{self, Kernel};

/// Architectural names of the exception vectors.
const EXCEPTION_NAMES: [&str; 32] = [
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

/// The vectors the legacy PICs may still deliver spuriously after being
/// masked (remapped to 0x20..0x2f), and the local APIC's spurious vector.
fn is_spurious(vector: u64) -> bool {
    (0x20..0x30).contains(&vector) || vector == 0xff
}

/// Faults of one component reported in full; later ones are only counted
/// (a component restarted thousands of times must not flood the console).
pub const REPORTED_FAULTS: u32 = 8;

/// A fault, as the core reports it.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub address: u64,
    pub detail: u64,
}

/// Handles a trap taken in ring 3 and returns the frame to resume.
pub fn user_trap(vector: u64, error: u64) -> *const Frame {
    // SAFETY: one call per entry from ring 3 (see `state`).
    let kernel = unsafe { state::kernel() };
    let index = kernel.current_index();
    if vector == TIMER_VECTOR {
        timer::end_of_interrupt();
        return kernel.schedule();
    }
    if is_spurious(vector) {
        return &kernel.components[index].frame;
    }
    let fault = match vector {
        14 => Fault {
            kind: FaultKind::PageFault,
            address: cpu::read_cr2(),
            detail: error,
        },
        6 => Fault {
            kind: FaultKind::InvalidInstruction,
            address: 0,
            detail: 0,
        },
        13 => Fault {
            kind: FaultKind::GeneralProtection,
            address: 0,
            detail: error,
        },
        _ => Fault {
            kind: FaultKind::Exception,
            address: 0,
            detail: vector,
        },
    };
    fault_component(kernel, index, fault, &[]);
    kernel.schedule()
}

/// Reports `fault` for component `index`, stops it, frees its memory and
/// notifies its supervisor, if it has one.
pub fn fault_component(kernel: &mut Kernel, index: usize, fault: Fault, message: &[u8]) {
    let count = kernel.components[index].fault_count + 1;
    if count <= REPORTED_FAULTS {
        report(kernel, index, fault, message);
    }
    if count == REPORTED_FAULTS {
        log::warn!(
            "component '{}' has faulted {count} times; further faults are counted, not reported",
            kernel.components[index].name()
        );
    }
    let component = &mut kernel.components[index];
    component.fault_count = count;
    component.fault = Some(FaultRecord {
        kind: fault.kind as u32,
        count: component.fault_count,
        address: fault.address,
        detail: fault.detail,
        rip: component.frame.rip,
        generation: u64::from(component.generation),
    });
    component::stop(kernel, index, ComponentState::Faulted);
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
    let rip = component.frame.rip;
    let rsp = component.frame.rsp;
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

/// Handles a trap taken in ring 0. The timer interrupting the idle loop
/// is the one expected case; everything else is fatal.
pub fn kernel_trap(frame: &Frame) -> *const Frame {
    if frame.vector == TIMER_VECTOR && state::running_component().is_none() {
        timer::end_of_interrupt();
        // SAFETY: the idle loop holds no reference to the kernel state; this
        // is the only use in this entry.
        let kernel = unsafe { state::kernel() };
        return kernel.schedule();
    }
    if frame.vector == timer::SPURIOUS_VECTOR {
        return frame;
    }
    fatal_trap(frame)
}

fn fatal_trap(frame: &Frame) -> ! {
    let vector = frame.vector as usize;
    let what = EXCEPTION_NAMES
        .get(vector)
        .copied()
        .unwrap_or("unexpected interrupt");
    let cr2 = cpu::read_cr2();
    log::error!("FATAL: {what} (vector {vector}) in the core");
    log::error!(
        "  error code {:#x}, rip {:#x}, rsp {:#x}, rflags {:#x}, cr2 {cr2:#x}, cr3 {:#x}",
        frame.error,
        frame.rip,
        frame.rsp,
        frame.rflags,
        cpu::read_cr3()
    );
    log::error!(
        "  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp
    );
    state::with_running_name(|name| match name {
        Some(name) => log::error!("  while serving component '{name}'"),
        None => log::error!("  outside any component"),
    });
    crate::shutdown::halt(false, "fatal exception in the core")
}
