//! Finding out whether we run under a hypervisor, which one, and calling it.
//!
//! Detection ([`detect`]): CPUID leaf 1 `ecx` bit 31 says "some hypervisor";
//! leaf [`CPUID_BASE`] then names it ([`SIGNATURE`] is ours) and gives the
//! highest hypervisor leaf; ours answers [`CPUID_FEATURES`] with the
//! feature bits and the interface version.
//!
//! Hypercalls ([`hypercall`]): `vmmcall` on AMD, `vmcall` on Intel (chosen
//! by the CPU vendor string at start), number in `rax`, arguments in `rbx`,
//! `rcx`, `rdx`, results in `rax`, `rbx`, `rcx` (and `rdx` for IDENTIFY and
//! PROCESS, `rsi` for PROCESS). Both instructions are 3 bytes long
//! ([`HYPERCALL_LENGTH`]); an unknown number raises #UD.
//!
//! Costs ([`Costs`]): what a benchmark spent in VM exits and injected
//! interrupts, from two STATISTICS hypercalls around its work. What one
//! guest process (one CR3) was charged: [`process`].

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use guest_api::{
    CPUID_1_ECX_HYPERVISOR, CPUID_BASE, CPUID_FEATURES, LOG_MAX, SIGNATURE, hypercall as number,
};

use crate::arch::cpuid;

/// The length of the hypercall instruction, for [`crate::expect_fault`].
pub const HYPERCALL_LENGTH: u8 = 3;

/// Set at start on Intel CPUs: hypercalls use `vmcall`.
static INTEL: AtomicBool = AtomicBool::new(false);

/// Picks the hypercall instruction from the CPU vendor.
pub(crate) fn init() {
    let vendor = cpuid(0);
    let intel = vendor.ebx == u32::from_le_bytes(*b"Genu")
        && vendor.edx == u32::from_le_bytes(*b"ineI")
        && vendor.ecx == u32::from_le_bytes(*b"ntel");
    INTEL.store(intel, Ordering::Relaxed);
}

/// What runs beneath this guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypervisor {
    /// CPUID leaf 1 does not report a hypervisor.
    Native,
    /// This project's world switcher.
    Microvisor {
        /// The highest hypervisor leaf (eax of [`CPUID_BASE`]).
        max_leaf: u32,
        /// [`guest_api::features`] bits (eax of [`CPUID_FEATURES`]).
        features: u32,
        /// The interface version (ebx of [`CPUID_FEATURES`]).
        version: u32,
    },
    /// Some other hypervisor.
    Other {
        max_leaf: u32,
        /// The 12 bytes of ebx, ecx, edx of [`CPUID_BASE`].
        signature: [u8; 12],
    },
}

impl Hypervisor {
    /// Whether this is our world switcher offering hypercalls.
    pub fn has_hypercalls(&self) -> bool {
        matches!(self, Self::Microvisor { features, .. }
            if features & guest_api::features::HYPERCALLS != 0)
    }

    /// Whether this is our world switcher offering [`process`] (the
    /// PROCESS hypercall: interface version 3 and later).
    pub fn has_process(&self) -> bool {
        matches!(self, Self::Microvisor { features, version, .. }
            if features & guest_api::features::HYPERCALLS != 0 && *version >= 3)
    }

    /// Whether this is our world switcher offering [`no_work`].
    pub fn has_no_work(&self) -> bool {
        matches!(self, Self::Microvisor { features, .. }
            if features & guest_api::features::HYPERCALLS != 0
                && features & guest_api::features::NO_WORK != 0)
    }

    /// Whether this is our world switcher offering the guest-hints page
    /// ([`crate::hints::Hints`]).
    pub fn has_hints(&self) -> bool {
        matches!(self, Self::Microvisor { features, .. }
            if features & guest_api::features::HINTS != 0)
    }
}

/// Detects the hypervisor (see the module documentation).
pub fn detect() -> Hypervisor {
    if cpuid(1).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return Hypervisor::Native;
    }
    let base = cpuid(CPUID_BASE);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&base.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&base.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&base.edx.to_le_bytes());
    if signature != SIGNATURE {
        return Hypervisor::Other {
            max_leaf: base.eax,
            signature,
        };
    }
    let (features, version) = if base.eax >= CPUID_FEATURES {
        let leaf = cpuid(CPUID_FEATURES);
        (leaf.eax, leaf.ebx)
    } else {
        (0, 0)
    };
    Hypervisor::Microvisor {
        max_leaf: base.eax,
        features,
        version,
    }
}

/// What a hypercall answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// [`guest_api::OK`] or [`guest_api::BAD_ARGUMENT`].
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    /// Only IDENTIFY and PROCESS answer in rdx; other calls may leave
    /// anything there.
    pub rdx: u64,
    /// Only PROCESS answers in rsi (0 is passed in).
    pub rsi: u64,
}

/// Makes hypercall `number` with arguments `rbx`, `rcx`, `rdx` (and 0 in
/// `rsi`). Only under our hypervisor: elsewhere (or with an unknown
/// number) the instruction raises #UD, fatal unless expected
/// ([`crate::expect_fault`] with [`HYPERCALL_LENGTH`]; the answer is then
/// meaningless).
pub fn hypercall(number: u64, rbx: u64, rcx: u64, rdx: u64) -> Answer {
    let (rax, rbx_out, rcx_out, rdx_out, rsi_out);
    if INTEL.load(Ordering::Relaxed) {
        // SAFETY: the hypervisor reads and writes guest memory only where
        // the call's arguments say (LOG reads the line); rbx is exchanged
        // with a scratch register around the call because LLVM reserves
        // it. Not `nomem`: the hypervisor reads memory, and the call must
        // stay between arming and disarming the fault handler.
        unsafe {
            asm!(
                "xchg {b}, rbx",
                "vmcall",
                "xchg {b}, rbx",
                b = inout(reg) rbx => rbx_out,
                inout("rax") number => rax,
                inout("rcx") rcx => rcx_out,
                inout("rdx") rdx => rdx_out,
                inout("rsi") 0u64 => rsi_out,
                options(nostack),
            );
        }
    } else {
        // SAFETY: as above, with AMD's instruction.
        unsafe {
            asm!(
                "xchg {b}, rbx",
                "vmmcall",
                "xchg {b}, rbx",
                b = inout(reg) rbx => rbx_out,
                inout("rax") number => rax,
                inout("rcx") rcx => rcx_out,
                inout("rdx") rdx => rdx_out,
                inout("rsi") 0u64 => rsi_out,
                options(nostack),
            );
        }
    }
    Answer {
        rax,
        rbx: rbx_out,
        rcx: rcx_out,
        rdx: rdx_out,
        rsi: rsi_out,
    }
}

/// What [`identify`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// rax: [`guest_api::OK`] unless the call failed.
    pub status: u64,
    /// The interface version.
    pub version: u64,
    /// How many times this VM was restarted.
    pub restarts: u64,
    /// The VM's memory size in bytes.
    pub memory: u64,
}

/// [`guest_api::hypercall::IDENTIFY`].
pub fn identify() -> Identity {
    let answer = hypercall(number::IDENTIFY, 0, 0, 0);
    Identity {
        status: answer.rax,
        version: answer.rbx,
        restarts: answer.rcx,
        memory: answer.rdx,
    }
}

/// [`guest_api::hypercall::LOG`]: prints `line` (at most [`LOG_MAX`] bytes;
/// longer text is cut) through the hypervisor. Returns rax. The line's
/// guest-physical address is its address: the image runs identity-mapped.
pub fn log(line: &str) -> u64 {
    let length = (line.len() as u64).min(LOG_MAX);
    hypercall(number::LOG, line.as_ptr() as u64, length, 0).rax
}

/// [`guest_api::hypercall::YIELD`]. Returns rax.
pub fn yield_now() -> u64 {
    hypercall(number::YIELD, 0, 0, 0).rax
}

/// [`guest_api::hypercall::NO_WORK`]: sleeps up to `microseconds`. Returns
/// rax and the microseconds actually slept.
pub fn no_work(microseconds: u64) -> (u64, u64) {
    let answer = hypercall(number::NO_WORK, microseconds, 0, 0);
    (answer.rax, answer.rbx)
}

/// Idles forever in rounds of 5 ms: the NO_WORK hypercall when `no_work`
/// (our hypervisor offers it), else a busy wait of 5,000,000 TSC ticks
/// (nothing would wake a HLT with interrupts off). `report` is called
/// with the rounds so far every 100 rounds.
pub fn idle_forever(no_work: bool, report: impl Fn(u64)) -> ! {
    let mut rounds: u64 = 0;
    loop {
        if no_work {
            self::no_work(5000);
        } else {
            crate::spin_ticks(5_000_000);
        }
        rounds += 1;
        if rounds.is_multiple_of(100) {
            report(rounds);
        }
    }
}

/// [`guest_api::hypercall::STATISTICS`]: (status, VM exits, virtual
/// interrupts injected) so far.
pub fn statistics() -> (u64, u64, u64) {
    let answer = hypercall(number::STATISTICS, 0, 0, 0);
    (answer.rax, answer.rbx, answer.rcx)
}

/// What [`process`] answers about one guest process (one CR3 value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessCost {
    /// rax: [`guest_api::OK`] unless the call failed.
    pub status: u64,
    /// rbx: CPU time charged to the process, in nanoseconds.
    pub charged_ns: u64,
    /// rcx: times the guest switched to it from another process.
    pub switches_in: u64,
    /// rdx: processes the world switcher tracks (0 while it does not track
    /// them; then `charged_ns` and `switches_in` are 0 too).
    pub tracked: u64,
    /// rsi: CR3 writes the world switcher saw, in all.
    pub cr3_writes: u64,
}

/// [`guest_api::hypercall::PROCESS`] for the process whose page-table root
/// is `cr3` (its PCID bits and bit 63 are ignored). Interface version 3
/// and later; earlier ones raise #UD.
pub fn process(cr3: u64) -> ProcessCost {
    let answer = hypercall(number::PROCESS, cr3, 0, 0);
    ProcessCost {
        status: answer.rax,
        charged_ns: answer.rbx,
        switches_in: answer.rcx,
        tracked: answer.rdx,
        cr3_writes: answer.rsi,
    }
}

/// Every VM exit and injected interrupt, as our hypervisor counts them
/// ([`statistics`], the STATISTICS hypercall), from one point on; nothing
/// when not `counted` (natively, or under another hypervisor). A
/// benchmark takes one before its work and asks [`Costs::since`] after
/// it for a note to its `BENCH` line.
#[derive(Clone, Copy, Debug)]
pub struct Costs {
    counted: bool,
    exits: u64,
    injections: u64,
}

impl Costs {
    /// The counters now (all zero when not `counted`: no hypercall).
    pub fn now(counted: bool) -> Self {
        let (_, exits, injections) = if counted { statistics() } else { (0, 0, 0) };
        Self {
            counted,
            exits,
            injections,
        }
    }

    /// Per one of `units` (named `unit` in the note, if at all) since
    /// [`Costs::now`], less the one exit the second STATISTICS call is.
    pub fn since(&self, units: usize, unit: Option<&'static str>) -> Spent {
        let now = Self::now(self.counted);
        Spent {
            counted: self.counted,
            exits: (now.exits - self.exits).saturating_sub(1) as f64 / units as f64,
            injections: (now.injections - self.injections) as f64 / units as f64,
            unit,
        }
    }
}

/// What [`Costs::since`] measured, as a note for a BENCH line: nothing
/// when not counted; `; E VM exits and I virtual interrupts per <unit>,
/// every kind` with a unit; `, E VM exits and I virtual interrupts, every
/// kind` without one.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    counted: bool,
    exits: f64,
    injections: f64,
    unit: Option<&'static str>,
}

impl core::fmt::Display for Spent {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (exits, injections) = (self.exits, self.injections);
        match (self.counted, self.unit) {
            (false, _) => Ok(()),
            (true, Some(unit)) => write!(
                formatter,
                "; {exits:.2} VM exits and {injections:.2} virtual interrupts per {unit}, every kind"
            ),
            (true, None) => write!(
                formatter,
                ", {exits:.2} VM exits and {injections:.2} virtual interrupts, every kind"
            ),
        }
    }
}

/// Resets the VM through the platform's ACPI reset register (a warm
/// reboot: the world switcher boots the VM again from its image). Returns
/// only if nothing reset the machine.
pub fn acpi_reset() {
    // SAFETY: the write asks the platform to reset the VM; it touches no
    // memory of the program.
    unsafe { crate::arch::outb(guest_api::ACPI_RESET_PORT, guest_api::ACPI_RESET_VALUE) }
}
