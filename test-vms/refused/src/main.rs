//! Touches the local APIC's page with an instruction the world switcher's
//! MMIO decoder does not emulate (`inc dword [TPR]`): under our hypervisor
//! the VM must be stopped with a report naming the access and the
//! instruction, and nothing else is harmed. If the instruction completes
//! (natively it does), the test says so and fails.
#![no_std]
#![no_main]

use guest_runtime::{fail, println};

guest_runtime::entry!("refused", main);

/// The LAPIC's task-priority register.
const TASK_PRIORITY: u64 = 0xfee0_0080;

fn main() -> u32 {
    println!("refused: incrementing the LAPIC's TPR in place");
    // SAFETY: the LAPIC page is device memory, identity-mapped by the boot
    // tables; the increment changes only the TPR (on hardware).
    unsafe {
        core::arch::asm!(
            "inc dword ptr [{address}]",
            address = in(reg) TASK_PRIORITY,
            options(nostack),
        );
    }
    fail(format_args!("the increment of a device register completed"))
}
