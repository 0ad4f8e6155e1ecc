//! Reports what CPUID says about the hypervisor beneath: our signature with
//! its feature leaf, another hypervisor's signature, or none. Under ours it
//! also reports features whose visibility our CPUID policy fixes whatever
//! the host (see `vm_platform::cpuid`). Passes in every case; the scenario
//! decides which lines it expects.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::arch::cpuid_count;
use guest_runtime::{Hypervisor, cpuid, println};

guest_runtime::entry!("cpuid", main);

fn main() -> u32 {
    let hypervisor = guest_runtime::detect();
    match hypervisor {
        Hypervisor::Native => println!("cpuid: running native"),
        Hypervisor::Microvisor {
            max_leaf,
            features,
            version,
        } => println!(
            "cpuid: hypervisor signature={} max_leaf={max_leaf:#x} features={features:#x} version={version}",
            printable(&guest_runtime::api::SIGNATURE)
        ),
        Hypervisor::Other {
            max_leaf,
            signature,
        } => println!(
            "cpuid: other hypervisor signature={} max_leaf={max_leaf:#x}",
            printable(&signature)
        ),
    }
    if matches!(hypervisor, Hypervisor::Microvisor { .. }) {
        report_policy();
    }
    println!("TEST cpuid PASS");
    0
}

/// Features our policy hides or shows on every host, as 0 or 1, and the
/// linear-address width (48 without LA57).
fn report_policy() {
    let bit = |value: u32, bit: u32| (value >> bit) & 1;
    let leaf1 = cpuid(1);
    let leaf7 = cpuid_count(7, 0);
    let extended1 = cpuid(0x8000_0001);
    let linear = (cpuid(0x8000_0008).eax >> 8) & 0xff;
    println!(
        "cpuid: policy vmx={} svm={} xsave={} avx={} mce={} rdtscp={} la57={} mtrr={} linear={linear}",
        bit(leaf1.ecx, 5),
        bit(extended1.ecx, 2),
        bit(leaf1.ecx, 26),
        bit(leaf1.ecx, 28),
        bit(leaf1.edx, 7),
        bit(extended1.edx, 27),
        bit(leaf7.ecx, 16),
        bit(leaf1.edx, 12),
    );
}

/// The signature as text, non-printable bytes as `.`.
fn printable(signature: &[u8; 12]) -> Printable<'_> {
    Printable(signature)
}

struct Printable<'a>(&'a [u8; 12]);

impl core::fmt::Display for Printable<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &byte in self.0 {
            let shown = if byte.is_ascii_graphic() {
                byte as char
            } else {
                '.'
            };
            core::fmt::Write::write_char(formatter, shown)?;
        }
        Ok(())
    }
}
