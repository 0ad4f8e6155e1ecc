//! Reports what CPUID says about the hypervisor beneath: our signature with
//! its feature leaf, another hypervisor's signature, or none. Under ours it
//! also reports features whose visibility our CPUID policy fixes whatever
//! the host (see `vm_platform::cpuid`). Where CPUID shows RDTSCP it
//! checks `TSC_AUX`, natively and under ours: 0 at start, a value written
//! with WRMSR read back by RDTSCP and RDMSR, still there after giving the
//! CPU to other VMs (under ours, the core loads each guest's own around its
//! entries), and under ours a write of bit 32 refused with `#GP`
//! (natively QEMU's TCG accepts it). Otherwise it passes
//! in every case; the scenario decides which lines it expects.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::arch::{self, cpuid_count};
use guest_runtime::{Hypervisor, cpuid, fail, println};

const TSC_AUX: u32 = 0xc000_0103;
/// Bytes of `wrmsr`.
const MSR_INSTRUCTION_LENGTH: u8 = 2;
/// Times the VM gives the CPU away between checks of its `TSC_AUX`.
const YIELDS: u32 = 20;

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
    let ours = matches!(hypervisor, Hypervisor::Microvisor { .. });
    if ours {
        report_policy();
    }
    if cpuid(0x8000_0001).edx & (1 << 27) != 0 {
        tsc_aux(ours);
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

/// `TSC_AUX` as RDTSCP and RDMSR see it (see the module documentation).
/// Under ours the value is the VM's memory size in MiB with 0xa000, so
/// that VMs of different sizes run with different values.
fn tsc_aux(ours: bool) {
    let (_, initial) = arch::rdtscp();
    if initial != 0 {
        fail(format_args!("TSC_AUX starts at {initial:#x}, not 0"));
    }
    let value = if ours {
        0xa000 | (guest_runtime::hypervisor::identify().memory >> 20) as u32
    } else {
        0xa000
    };
    arch::write_tsc_aux(u64::from(value));
    for round in 0..=YIELDS {
        let (_, aux) = arch::rdtscp();
        let read = arch::rdmsr(TSC_AUX);
        if aux != value || read != u64::from(value) {
            fail(format_args!(
                "TSC_AUX {value:#x} read back as {aux:#x} (RDTSCP) and {read:#x} (RDMSR) after {round} yields"
            ));
        }
        if ours {
            guest_runtime::hypervisor::yield_now();
        }
    }
    // The upper half is reserved (#GP on hardware and under KVM; QEMU's
    // TCG takes the write and keeps the low half, so natively this is not
    // asked).
    let reserved = if ours {
        let (_, fault) = guest_runtime::catch_fault(MSR_INSTRUCTION_LENGTH, || {
            arch::write_tsc_aux(1 << 32);
        });
        if fault != Some(13) || arch::rdtscp().1 != value {
            fail(format_args!(
                "a write of TSC_AUX bit 32 gave {fault:?} and left {:#x}, expected #GP and {value:#x}",
                arch::rdtscp().1
            ));
        }
        "; bit 32 raises #GP"
    } else {
        ""
    };
    let yields = if ours { YIELDS } else { 0 };
    println!(
        "cpuid: TSC_AUX starts at 0; {value:#x} read back by RDTSCP and RDMSR across {yields} yields{reserved}"
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
