//! What the hostile programs attack with, as pure logic the host tests
//! run:
//!
//! - [`random`]: a small seeded generator (xorshift64*), the same in a
//!   component, in a guest and on the host, so a seed names a run;
//! - [`calls`]: the system-call fuzzer of the `hostile` component — edge
//!   values of every kind of argument (capability handles, user pointers,
//!   lengths, timeouts, scheduling parameters, call numbers), calls that
//!   start from one the component may make and have one argument changed
//!   to an edge ("mutated"), wild ones, the outcome the core's rules
//!   predict for each (it returns, or it faults the caller), and the
//!   guard that no call it makes can end it on purpose, sleep for long or
//!   change another component;
//! - [`guest`]: the targets of the `hostile` test VM: I/O ports, MMIO
//!   addresses (beyond RAM, the LAPIC and IOAPIC pages, the guest-hints
//!   page, PCI BARs, unaligned and straddling), MSRs, access widths.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod calls;
pub mod guest;
pub mod random;

pub use random::Random;
