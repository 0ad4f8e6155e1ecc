//! Reports what CPUID says about the hypervisor beneath: our signature with
//! its feature leaf, another hypervisor's signature, or none. Passes in
//! every case; the scenario decides which line it expects.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use guest_runtime::{Hypervisor, println};

guest_runtime::entry!("cpuid", main);

fn main() -> u32 {
    match guest_runtime::detect() {
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
    println!("TEST cpuid PASS");
    0
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
