//! Ending the system: the verdict line and the emulators' exit devices.
//!
//! The last console line is always `[core] system halted: success` or
//! `[core] system halted: failure (<reason>)`; the build tool reads it on
//! Bochs. Then the core writes the verdict to QEMU's isa-debug-exit port
//! (exit status 1 = success, 3 = failure), `Shutdown` to Bochs's port
//! 0x8900, and halts; on hardware without either device it stays halted.

use microvisor_abi::{EXIT_FAILURE, EXIT_SUCCESS, HALT_LINE};

use crate::arch::cpu;

/// Stops the machine with a verdict.
pub fn halt(success: bool, reason: &str) -> ! {
    if success {
        crate::print!("{HALT_LINE}success\n");
    } else {
        crate::print!("{HALT_LINE}failure ({reason})\n");
    }
    crate::arch::serial::drain();
    cpu::out8(0xf4, if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    for byte in b"Shutdown" {
        cpu::out8(0x8900, *byte);
    }
    cpu::halt_forever()
}
