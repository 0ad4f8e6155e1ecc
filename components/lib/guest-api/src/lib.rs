//! The interface the world switcher offers its guests.
//!
//! Everything a guest can rely on when it runs under this hypervisor, and
//! nothing it needs when it does not: a guest detects us through CPUID
//! ([`CPUID_BASE`], [`SIGNATURE`]) and only then uses hypercalls; the
//! devices ([`UART_BASE`], [`STATUS_PORT`]) behave like the ones QEMU
//! provides, so the same image also runs on a bare (emulated) machine.
//!
//! Hypercalls are `VMMCALL` (AMD) or `VMCALL` (Intel) with the number in
//! `rax` and arguments in `rbx`, `rcx`, `rdx`; the result is in `rax`
//! ([`OK`] or [`BAD_ARGUMENT`]) and, per call, `rbx`/`rcx`. An unknown
//! number raises `#UD`, as the instruction does on a machine without a
//! hypervisor. Guest-physical addresses are guest memory offsets.
#![no_std]

/// The first hypervisor CPUID leaf: `eax` = the highest hypervisor leaf,
/// `ebx`, `ecx`, `edx` = [`SIGNATURE`].
pub const CPUID_BASE: u32 = 0x4000_0000;
/// The feature leaf: `eax` = [`features`] bits, `ebx` = [`INTERFACE_VERSION`].
pub const CPUID_FEATURES: u32 = 0x4000_0001;
/// The highest hypervisor leaf.
pub const CPUID_MAX: u32 = CPUID_FEATURES;
/// CPUID leaf 1 `ecx` bit 31: "running under a hypervisor".
pub const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// The 12-byte signature in `ebx`, `ecx`, `edx` of [`CPUID_BASE`].
pub const SIGNATURE: [u8; 12] = *b"MicrovisorHV";
/// The hypercall interface version in [`CPUID_FEATURES`] `ebx`.
pub const INTERFACE_VERSION: u32 = 4;

/// Feature bits in [`CPUID_FEATURES`] `eax`.
pub mod features {
    /// The hypercalls of [`super::hypercall`] are available.
    pub const HYPERCALLS: u32 = 1 << 0;
    /// [`super::hypercall::NO_WORK`] gives the CPU away.
    pub const NO_WORK: u32 = 1 << 1;
    /// [`super::STATUS_PORT`] ends the VM with a status.
    pub const STATUS_PORT: u32 = 1 << 2;
    /// The guest-hints page is at [`super::hints::ADDRESS`] (interface
    /// version 4).
    pub const HINTS: u32 = 1 << 3;
    /// Everything this world switcher offers.
    pub const ALL: u32 = HYPERCALLS | NO_WORK | STATUS_PORT | HINTS;
}

/// The guest-hints page: one page of the VM's physical address space,
/// outside its RAM, that an enlightened guest writes and the QoS
/// controller reads (mapped read-only into it by the core) without an
/// exit either way: the guest says it has no work, and the priority of
/// the most urgent thread it would run. The core clears it when the VM is
/// reset. Little-endian `u32` fields at these offsets; the rest of the
/// page is reserved (zero).
pub mod hints {
    /// The page's guest-physical address (below the IOAPIC and LAPIC
    /// pages; never RAM in our memory map).
    pub const ADDRESS: u64 = 0xfeb0_0000;
    /// Nonzero: the guest has no work until it writes 0 here. It may
    /// spin meanwhile (reading its own state, no exit); the controller
    /// gives it almost no CPU time (so the spin costs almost nothing) and
    /// gives it its share again within a window of seeing 0.
    pub const NO_WORK: usize = 0;
    /// The priority of the most urgent thread the guest would run now
    /// (0-255, 0 the least); at [`URGENT`] or above the controller runs
    /// the VM above its peers (its share stays what it is).
    pub const PRIORITY: usize = 4;
    /// Incremented by the guest at each update (lets a reader see it
    /// moving); optional.
    pub const SEQUENCE: usize = 8;
    /// [`PRIORITY`] from which a thread is urgent.
    pub const URGENT: u32 = 200;
}

/// The paravirtual clock a Linux guest already knows: KVM's `kvmclock`
/// ABI, offered at a second hypervisor leaf range so our own leaves stay
/// at [`CPUID_BASE`] (Linux looks for the KVM signature at every
/// `0x40000000 + n * 0x100`).
///
/// A guest that finds [`kvm::SIGNATURE`] at [`kvm::CPUID_BASE`] reads
/// [`kvm::features`] at [`kvm::CPUID_FEATURES`] `eax`, and writes the
/// guest-physical address of a `pvclock_vcpu_time_info` (32 bytes, bit 0
/// set to enable) to [`kvm::MSR_SYSTEM_TIME`] and of a
/// `pvclock_wall_clock` (12 bytes) to [`kvm::MSR_WALL_CLOCK`]; the world
/// switcher fills them. The time information carries the TSC rate as a
/// multiplier and shift, so the guest learns its TSC frequency without
/// calibrating it and without a command-line option. The TSC runs
/// unchanged and at a constant rate on the one vCPU, so the information
/// is written once and marked stable. Nothing else of KVM's interface is
/// offered: no other feature bit is set and its hypercalls are not ours.
pub mod kvm {
    /// `eax` = [`CPUID_FEATURES`]; `ebx`, `ecx`, `edx` = [`SIGNATURE`].
    pub const CPUID_BASE: u32 = 0x4000_0100;
    /// `eax` = [`features`] bits; `ebx`, `ecx`, `edx` = 0 (no hints).
    pub const CPUID_FEATURES: u32 = 0x4000_0101;
    /// KVM's signature.
    pub const SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";
    /// `MSR_KVM_WALL_CLOCK_NEW`: the address of the wall-clock structure,
    /// written once with the Unix time at which the clock read 0.
    pub const MSR_WALL_CLOCK: u32 = 0x4b56_4d00;
    /// `MSR_KVM_SYSTEM_TIME_NEW`: the address of the time information,
    /// bit 0 = enabled.
    pub const MSR_SYSTEM_TIME: u32 = 0x4b56_4d01;

    /// Feature bits in [`CPUID_FEATURES`] `eax`, KVM's numbering.
    pub mod features {
        /// Port 0x80 needs no delay writes (it does nothing here).
        pub const NOP_IO_DELAY: u32 = 1 << 1;
        /// The clock at [`super::MSR_SYSTEM_TIME`] and
        /// [`super::MSR_WALL_CLOCK`].
        pub const CLOCKSOURCE2: u32 = 1 << 3;
        /// The time information's stable flag may be trusted: the clock
        /// never goes backwards between vCPUs (there is one).
        pub const CLOCKSOURCE_STABLE: u32 = 1 << 24;
        /// Everything offered.
        pub const ALL: u32 = NOP_IO_DELAY | CLOCKSOURCE2 | CLOCKSOURCE_STABLE;
    }
}

/// Hypercall numbers (in `rax`). Only the guest's kernel may call: from
/// CPL 3 the instruction raises #UD.
pub mod hypercall {
    /// Who am I: answers `rbx` = [`super::INTERFACE_VERSION`], `rcx` = how
    /// many times this VM was booted again (restart requests and its own
    /// resets), `rdx` = its memory size in bytes.
    pub const IDENTIFY: u64 = 0;
    /// Log one line: `rbx` = guest-physical address, `rcx` = length (at
    /// most [`super::LOG_MAX`]). Printed prefixed with the VM's name.
    pub const LOG: u64 = 1;
    /// Give the CPU to others now; resumes at the next scheduling round.
    pub const YIELD: u64 = 2;
    /// "I have no work": `rbx` = the longest wait in microseconds. The VM
    /// sleeps until an event for it arrives or the time has passed; answers
    /// `rbx` = microseconds actually slept.
    pub const NO_WORK: u64 = 3;
    /// What the VM has cost so far, since its world switcher started
    /// (interface version 2):
    /// answers `rbx` = VM exits (every kind, this call's own included),
    /// `rcx` = virtual interrupts injected. A guest measures a piece of
    /// work by the difference of two calls (less the one exit the second
    /// call is).
    pub const STATISTICS: u64 = 4;
    /// What one guest process has cost, as the world switcher accounts it
    /// while the QoS controller asks it to track the guest's processes
    /// (it then intercepts MOV to CR3; interface version 3): `rbx` = a
    /// CR3 value (its PCID bits 0..12 and bit 63 are ignored, so the user
    /// and kernel roots of a KPTI pair are one process). Answers `rbx` =
    /// CPU time charged to that process in nanoseconds, `rcx` = times it
    /// was switched to from another process, `rdx` = processes tracked
    /// (0 while the switcher does not track them: then `rbx` = `rcx` =
    /// 0), `rsi` = CR3 writes seen in all. A process not seen yet is
    /// charged 0.
    pub const PROCESS: u64 = 5;
}

/// Hypercall result: done.
pub const OK: u64 = 0;
/// Hypercall result: an argument is out of range (e.g. a buffer outside
/// guest memory).
pub const BAD_ARGUMENT: u64 = u64::MAX;
/// The longest [`hypercall::LOG`] line.
pub const LOG_MAX: u64 = 256;

/// The 16550 UART (COM1): transmit at `+0`, line status at `+5` (bit 5 =
/// transmitter ready, always set). Output lines appear in the system log
/// prefixed with the VM's name.
pub const UART_BASE: u16 = 0x3f8;
/// The test-status port, like QEMU's isa-debug-exit: a 32-bit `OUT` of `v`
/// ends the VM; 0 means the guest's test passed. (QEMU's device exits with
/// status `2v + 1`, so a native run that passes exits with 1.)
pub const STATUS_PORT: u16 = 0xf4;
/// The ACPI reset register the FADT names (an I/O port): writing
/// [`ACPI_RESET_VALUE`] resets the VM, as a warm reboot.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// The value that resets the VM through [`ACPI_RESET_PORT`].
pub const ACPI_RESET_VALUE: u8 = 0x42;
