//! What the core does with CPU exceptions and interrupts.
//!
//! A trap from ring 3 that is an exception ends the component
//! (`crate::lifecycle::fault`); the rest of the system goes on. The timer
//! interrupt runs the scheduler. The console's interrupt (when the system
//! delivers console input) moves the received bytes to the holder's ring
//! and tells the holder. Other interrupts are not routed to components
//! yet; a stray or spurious one is ignored. A trap inside the
//! core itself is a core bug or a hardware failure: the report names the
//! vector, error code, RIP, CR2 and the component that was running, and
//! the machine stops with a failure verdict rather than hang.

use microvisor_abi::fault::FaultKind;

use microvisor::interrupt_lines::Fired;

use crate::arch::entry::Frame;
use crate::arch::interrupts::CONSOLE_VECTOR;
use crate::arch::timer::{self, TIMER_VECTOR};
use crate::arch::{cpu, interrupts, ioapic, serial};
use crate::kernel::{self, Kernel};
use crate::lifecycle::{self, EXCEPTION_NAMES, Fault};

/// The vectors the legacy PICs may still deliver spuriously after being
/// masked (remapped to 0x20..0x2f), and the local APIC's spurious vector.
fn is_spurious(vector: u64) -> bool {
    (0x20..0x30).contains(&vector) || vector == 0xff
}

/// Handles a trap taken in ring 3 and returns the frame to resume.
pub fn user_trap(kernel: &mut Kernel, vector: u64, error: u64) -> *const Frame {
    let index = kernel.current_index();
    if vector == TIMER_VECTOR {
        timer::end_of_interrupt();
        kernel.alarm_fired();
        return kernel.schedule();
    }
    if vector == CONSOLE_VECTOR && kernel.console_input.holder().is_some() {
        console_interrupt(kernel);
        return kernel.schedule();
    }
    if let Some(line) = forwarded_line(vector) {
        line_interrupt(kernel, line);
        return kernel.schedule();
    }
    if is_spurious(vector) {
        return kernel.frame_of(index);
    }
    let fault = match vector {
        14 => Fault::new(FaultKind::PageFault, cpu::read_cr2(), error),
        6 => Fault::new(FaultKind::InvalidInstruction, 0, 0),
        13 => Fault::new(FaultKind::GeneralProtection, 0, error),
        _ => Fault::new(FaultKind::Exception, 0, vector),
    };
    lifecycle::fault(kernel, index, fault, &[]);
    kernel.schedule()
}

/// Whether a trap taken in ring 0 is an expected case: an interrupt of
/// the idle loop (which holds no state) by the timer, the console or the
/// legacy PIC's spurious lines.
pub fn is_idle_interrupt(frame: &Frame) -> bool {
    (frame.vector == TIMER_VECTOR
        || is_spurious(frame.vector)
        || forwarded_line(frame.vector).is_some())
        && kernel::running_component().is_none()
}

/// The device line (IOAPIC input or MSI vector) an interrupt vector
/// stands for, if it is one.
fn forwarded_line(vector: u64) -> Option<u64> {
    let line = vector.checked_sub(ioapic::LINE_VECTOR_BASE)?;
    (line < microvisor::interrupt_lines::LINES as u64).then_some(line)
}

/// Device line `line` fired: marked pending (a level-triggered line
/// masked) and the forwarder's bit for it set; an edge while pending is
/// remembered and the line masked (`microvisor::interrupt_lines`). Nothing
/// else here decides who gets it.
fn line_interrupt(kernel: &mut Kernel, line: u64) {
    let fired = kernel.lines.fired(line);
    // Masked before the EOI, so a level line still asserted does not
    // interrupt again at once.
    if matches!(fired, Fired::Signal { mask: true, .. } | Fired::Again) {
        ioapic::mask(line);
    }
    timer::end_of_interrupt();
    if let Fired::Signal {
        signal: (forwarder, bits),
        ..
    } = fired
    {
        kernel.notify(forwarder, bits);
    }
}

/// Handles an interrupt of the idle loop.
pub fn idle_interrupt(kernel: &mut Kernel, vector: u64) -> *const Frame {
    if vector == TIMER_VECTOR {
        timer::end_of_interrupt();
        kernel.alarm_fired();
    } else if vector == CONSOLE_VECTOR && kernel.console_input.holder().is_some() {
        console_interrupt(kernel);
    } else if let Some(line) = forwarded_line(vector) {
        line_interrupt(kernel, line);
    }
    kernel.schedule()
}

/// The console received bytes: into the holder's ring (at most a FIFO's
/// worth per interrupt, so a flood cannot hold the core), then the holder
/// is told, and its VM, if it runs one, leaves the guest so it looks.
fn console_interrupt(kernel: &mut Kernel) {
    const PER_INTERRUPT: usize = 64;
    let mut arrived = 0;
    while arrived < PER_INTERRUPT
        && let Some(byte) = serial::received()
    {
        kernel.console_input.push(byte);
        arrived += 1;
    }
    interrupts::end_of_console_interrupt();
    let Some((holder, bits)) = kernel.console_input.holder() else {
        return;
    };
    if arrived > 0 {
        kernel.notify(holder, bits);
    }
}

/// Handles any other trap taken in ring 0: the spurious vector is ignored,
/// everything else is fatal.
pub fn kernel_trap(frame: &Frame) -> *const Frame {
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
    kernel::with_running_name(|name| match name {
        Some(name) => log::error!("  while serving component '{name}'"),
        None => log::error!("  outside any component"),
    });
    crate::shutdown::halt(false, "fatal exception in the core")
}
