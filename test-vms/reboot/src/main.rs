//! A warm reboot through the platform's ACPI reset register: on its first
//! boot under our hypervisor the guest writes the reset value; the world
//! switcher boots the VM again from its image, and the guest, seeing one
//! restart in its identity, passes. Elsewhere it has nothing to show and
//! passes at once.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::{fail, hypervisor, println};

guest_runtime::entry!("reboot", main);

fn main() -> u32 {
    if !guest_runtime::detect().has_hypercalls() {
        println!("reboot: not under our hypervisor; nothing to reset");
        println!("TEST reboot PASS");
        return 0;
    }
    let restarts = hypervisor::identify().restarts;
    if restarts == 0 {
        println!("reboot: first boot; asking for an ACPI reset");
        hypervisor::acpi_reset();
        fail(format_args!("the ACPI reset did not reset the VM"));
    }
    println!("reboot: booted again after the reset (restart {restarts})");
    println!("TEST reboot PASS");
    0
}
