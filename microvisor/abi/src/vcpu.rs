//! The vCPU state page: what a world switcher sees of its guest's CPU.
//!
//! Every VM has one page of [`VcpuState`], mapped read-write into its world
//! switcher. On every VM exit the core writes the exit (an
//! architecture-neutral [`ExitReason`] with decoded qualifications, plus the
//! raw vendor code) and the guest's register state into it, then returns
//! from [`crate::syscall::Syscall::VcpuRun`]. The world switcher edits the
//! fields it wants to change and passes a dirty mask of [`dirty`] bits with
//! the next `VcpuRun`: the core writes back exactly those fields and nothing
//! else, so a CPUID exit costs RIP and RAX..RDX, not the whole state.
//!
//! Two exceptions keep the common exits short. The general-purpose
//! registers other than RAX and RSP (which the CPU's control block holds)
//! live in the page itself: the core loads them from [`VcpuState::gpr`] at
//! every entry and saves them there at every exit, so what the page holds
//! is what the guest gets (their dirty bits are accepted and change
//! nothing). And the segment and descriptor-table registers are published
//! lazily: only at the exits whose handling needs them (see
//! [`published`]), or when the world switcher asks with [`dirty::FETCH`].
//!
//! The layout is the same for AMD SVM and Intel VMX; the backends translate.
//! Offsets are part of the ABI and asserted below.

use core::mem::offset_of;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A segment register as the CPU caches it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Segment {
    pub selector: u16,
    /// The descriptor's attributes in the compact 12-bit form: type (bits
    /// 0..4), S (4), DPL (5..7), P (7), AVL (8), L (9), D/B (10), G (11).
    pub attributes: u16,
    pub limit: u32,
    pub base: u64,
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DescriptorTable {
    pub limit: u32,
    pub reserved: u32,
    pub base: u64,
}

/// Indices into [`VcpuState::gpr`], in the x86 register-encoding order (so
/// an instruction's register field indexes the array directly).
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R15: usize = 15;
}

/// Dirty-mask bits for [`crate::syscall::Syscall::VcpuRun`]: which fields of
/// the state page the core writes back into the guest before entering it.
pub mod dirty {
    /// General-purpose register `n` (see [`super::gpr`]) is bit `n`.
    pub const fn gpr(n: usize) -> u64 {
        1 << n
    }
    pub const RAX: u64 = 1 << super::gpr::RAX;
    pub const RCX: u64 = 1 << super::gpr::RCX;
    pub const RDX: u64 = 1 << super::gpr::RDX;
    pub const RBX: u64 = 1 << super::gpr::RBX;
    pub const RSP: u64 = 1 << super::gpr::RSP;
    /// All sixteen general-purpose registers.
    pub const GPRS: u64 = 0xffff;
    pub const RIP: u64 = 1 << 16;
    pub const RFLAGS: u64 = 1 << 17;
    pub const CR0: u64 = 1 << 18;
    pub const CR2: u64 = 1 << 19;
    pub const CR3: u64 = 1 << 20;
    pub const CR4: u64 = 1 << 21;
    pub const EFER: u64 = 1 << 22;
    pub const CS: u64 = 1 << 23;
    pub const DS: u64 = 1 << 24;
    pub const ES: u64 = 1 << 25;
    pub const SS: u64 = 1 << 26;
    pub const FS: u64 = 1 << 27;
    pub const GS: u64 = 1 << 28;
    pub const TR: u64 = 1 << 29;
    pub const LDTR: u64 = 1 << 30;
    pub const GDTR: u64 = 1 << 31;
    pub const IDTR: u64 = 1 << 32;
    /// [`super::VcpuState::inject`]: deliver an event at the next entry.
    pub const INJECT: u64 = 1 << 33;
    /// [`super::VcpuState::interrupt_shadow`].
    pub const INTERRUPT_SHADOW: u64 = 1 << 34;
    /// [`super::VcpuState::interrupt_window`]: ask for (or cancel) an
    /// [`super::ExitReason::InterruptWindow`] exit.
    pub const INTERRUPT_WINDOW: u64 = 1 << 35;
    /// [`super::VcpuState::cr8`].
    pub const CR8: u64 = 1 << 36;
    /// [`super::VcpuState::tsc_aux`].
    pub const TSC_AUX: u64 = 1 << 37;
    /// All segment registers.
    pub const SEGMENTS: u64 = CS | DS | ES | SS | FS | GS | TR | LDTR;
    /// Everything the state page holds.
    pub const ALL: u64 = (1 << 38) - 1;
    /// Not a field: a `VcpuRun` with this bit does not enter the guest.
    /// It publishes the guest's lazily published registers (the segment
    /// and descriptor-table registers and the control registers and EFER:
    /// [`super::published`]) as they are now, except the fields the other
    /// bits of the mask name (the world switcher's own edits, not yet
    /// written back, which it passes here so they are kept), writes
    /// nothing back and returns the last exit's reason again.
    pub const FETCH: u64 = 1 << 63;
}

/// [`VcpuState::published`] bits: which lazily published parts of the
/// page are the guest's current state.
///
/// The core publishes the segment registers (CS, DS, ES, SS, FS, GS, TR,
/// LDTR) and the descriptor-table registers (GDTR, IDTR) only at the
/// exits whose handling may need them: every exit but CPUID, port I/O
/// other than string I/O, RDMSR/WRMSR, HLT, WBINVD/INVD, the interrupt
/// window and IRET. It publishes CR0, CR2, CR3, CR4 and EFER at every exit
/// but CPUID and port I/O other than string I/O (the two commonest exits,
/// whose handling never reads them). A run that ends before entering
/// leaves both groups as they were, unless it was re-issued after a host
/// interrupt: that one publishes everything. After the other exits a
/// group's fields hold whatever was last published or written, and its
/// bit is clear; a `VcpuRun` with [`super::dirty::FETCH`] publishes both.
/// Everything else in the page is published at every exit.
pub mod published {
    /// The segment and descriptor-table registers are current.
    pub const SEGMENTS: u64 = 1 << 0;
    /// CR0, CR2, CR3, CR4 and EFER are current.
    pub const CONTROL: u64 = 1 << 1;
    /// Both groups: the whole page is current.
    pub const ALL: u64 = SEGMENTS | CONTROL;
}

/// Why the guest left, architecture-neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitReason {
    /// CPUID: the leaf is in RAX, the subleaf in RCX.
    Cpuid = 1,
    /// Port I/O; [`VcpuState::qualification`] is an [`IoExit`].
    Io = 2,
    /// RDMSR (`qualification` 0) or WRMSR (1); the MSR is in RCX.
    Msr = 3,
    /// HLT.
    Hlt = 4,
    /// A hypercall instruction (VMMCALL / VMCALL).
    Hypercall = 5,
    /// A guest-physical access outside guest memory (or not permitted):
    /// [`VcpuState::guest_physical`] is the address, `qualification` the
    /// [`npf`] access bits.
    NestedPageFault = 6,
    /// Shutdown: the guest triple-faulted.
    Shutdown = 7,
    /// The CPU refused the guest state at entry.
    InvalidState = 8,
    /// An intercepted exception: `qualification` is the vector,
    /// `qualification2` the error code.
    Exception = 9,
    /// [`crate::syscall::Syscall::VcpuPoke`] asked the vCPU to stop.
    Poked = 10,
    /// An intercept the world switcher asked for with no neutral name;
    /// see [`VcpuState::raw_exit`].
    Other = 11,
    /// The time limit given to [`crate::syscall::Syscall::VcpuRun`] passed.
    TimeLimit = 12,
    /// The guest can take an external interrupt now (its RFLAGS.IF is set
    /// and it is not in an interrupt shadow), and the world switcher asked
    /// to know ([`VcpuState::interrupt_window`]): inject it now.
    InterruptWindow = 13,
    /// The guest is about to execute IRET and the world switcher asked to
    /// know ([`window::IRET`]): the end of the handler of an NMI it
    /// injected. RIP is the IRET's; the request is cancelled (the
    /// instruction runs at the next entry).
    Iret = 14,
    /// XSETBV. XCR0 is the CPU's, shared by every guest and the core, so
    /// the core never lets a guest write it. With `qualification` 0 the
    /// instruction is at RIP, not executed: the register's index is in RCX,
    /// the value in EDX:EAX, and the world switcher answers (skips it or
    /// injects a fault). With [`XSETBV_IGNORED`] the CPU ignored the
    /// intercept (QEMU's TCG does) and a guest XSETBV ran: the core found
    /// XCR0 changed to `qualification2` at this exit, erased the extended
    /// state it enabled and restored XCR0; RIP is wherever the guest was,
    /// and what else the exit was is lost, so the VM cannot go on.
    Xsetbv = 15,
    /// MOV to CR8, not executed, while the world switcher asked for it
    /// ([`window::CR8`]) or for an interrupt window: the instruction is at
    /// RIP (its source register must be decoded: CPUs without decode
    /// assists, QEMU's TCG among them, do not say which).
    Cr8Write = 16,
    /// MOV to CR3, not executed, while the world switcher asked for it
    /// ([`intercept::CR3_WRITE`]): the instruction is at RIP. Where the
    /// CPU decoded it, `qualification` is [`CR3_DECODED`] plus the source
    /// register's [`gpr`] index; else 0, and the world switcher decodes it
    /// (QEMU's TCG does not decode). The world switcher sets
    /// [`VcpuState::cr3`] (with [`dirty::CR3`], which makes the core flush
    /// the guest's TLB as the instruction would) and moves RIP on.
    Cr3Write = 17,
    /// WBINVD (`qualification` 0), while the world switcher asked for it
    /// ([`intercept::WBINVD`]), or INVD (`qualification` 1, always
    /// intercepted: it would discard the host's dirty cache lines); not
    /// executed, 2 bytes at RIP.
    Wbinvd = 18,
}

/// Where every VM's guest-hints page appears in its physical address
/// space (outside RAM, below the IOAPIC and LAPIC pages): one page the
/// guest may read and write, which components granted it
/// ([`crate::spec::MemoryKind::GuestHints`]) see read-only. Its layout is
/// the guests' interface (`guest_api::hints`), not the core's.
pub const HINTS_GUEST_PHYSICAL: u64 = 0xfeb0_0000;

/// [`ExitReason::Cr3Write`]'s `qualification` bit when the CPU named the
/// source register.
pub const CR3_DECODED: u64 = 1 << 63;

impl ExitReason {
    /// Decodes a reason, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Cpuid,
            2 => Self::Io,
            3 => Self::Msr,
            4 => Self::Hlt,
            5 => Self::Hypercall,
            6 => Self::NestedPageFault,
            7 => Self::Shutdown,
            8 => Self::InvalidState,
            9 => Self::Exception,
            10 => Self::Poked,
            11 => Self::Other,
            12 => Self::TimeLimit,
            13 => Self::InterruptWindow,
            14 => Self::Iret,
            15 => Self::Xsetbv,
            16 => Self::Cr8Write,
            17 => Self::Cr3Write,
            18 => Self::Wbinvd,
            _ => return None,
        })
    }
}

/// `qualification` of an [`ExitReason::Xsetbv`] exit found after the
/// fact: the CPU did not intercept the guest's XSETBV.
pub const XSETBV_IGNORED: u64 = 1;

/// The qualification of an [`ExitReason::Io`] exit, packed in a `u64` as
/// the SVM EXITINFO1 word has it (so the core publishes that word as it
/// is, masked to these fields): bit 0 set for IN, bit 2 for a string
/// instruction (INS/OUTS), bit 3 for a REP prefix, bits 4, 5 and 6 for an
/// access of 1, 2 or 4 bytes (one of them set), port in bits 16..32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// 1, 2 or 4.
    pub size: u8,
    pub input: bool,
    pub string: bool,
    pub rep: bool,
}

impl IoExit {
    /// The bits of a qualification that carry fields.
    pub const FIELDS: u64 = 0xffff_007d;

    /// Packs the qualification (a size other than 1 or 2 packs as 4).
    pub const fn encode(self) -> u64 {
        let size = match self.size {
            1 => 1 << 4,
            2 => 1 << 5,
            _ => 1 << 6,
        };
        (self.port as u64) << 16
            | size
            | self.input as u64
            | (self.string as u64) << 2
            | (self.rep as u64) << 3
    }

    /// Unpacks a qualification. The size is bits 4..7 read as a number,
    /// which is 1, 2 or 4 for the one bit the CPU sets.
    pub const fn decode(value: u64) -> Self {
        Self {
            port: (value >> 16) as u16,
            size: ((value >> 4) & 7) as u8,
            input: value & 1 != 0,
            string: value & 1 << 2 != 0,
            rep: value & 1 << 3 != 0,
        }
    }
}

/// Access bits in the qualification of [`ExitReason::NestedPageFault`].
pub mod npf {
    /// The guest-physical page is mapped (a permission fault).
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
}

/// An event to inject ([`VcpuState::inject`]) or one whose delivery an exit
/// interrupted ([`VcpuState::exit_event`]): vector in bits 0..8, [`event`]
/// type in 8..11, bit 11 set when an error code is pushed, bit 31 set when
/// valid, error code in 32..64 (the SVM EVENTINJ layout, which VMX's
/// interruption-information field also follows in its low 32 bits).
pub mod event {
    pub const VALID: u64 = 1 << 31;
    pub const HAS_ERROR: u64 = 1 << 11;
    /// Type: external interrupt.
    pub const INTERRUPT: u64 = 0 << 8;
    /// Type: non-maskable interrupt.
    pub const NMI: u64 = 2 << 8;
    /// Type: hardware exception.
    pub const EXCEPTION: u64 = 3 << 8;
    /// Type: software interrupt (INTn).
    pub const SOFTWARE: u64 = 4 << 8;

    /// A hardware exception, with an error code when given.
    pub const fn exception(vector: u8, error: Option<u32>) -> u64 {
        match error {
            Some(code) => VALID | EXCEPTION | HAS_ERROR | vector as u64 | (code as u64) << 32,
            None => VALID | EXCEPTION | vector as u64,
        }
    }

    /// An external interrupt.
    pub const fn interrupt(vector: u8) -> u64 {
        VALID | INTERRUPT | vector as u64
    }

    /// `#UD`.
    pub const UD: u64 = exception(6, None);
    /// `#GP(0)`.
    pub const GP0: u64 = exception(13, Some(0));
}

/// How a VM's CPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EntryMode {
    /// 64-bit long mode at the image's ELF entry, with identity paging of
    /// guest memory, a flat GDT and a stack set up by the world switcher.
    Long = 0,
    /// 16-bit real mode at the first byte of the image's lowest segment
    /// (CS.base = that address, IP = 0), as a CPU leaves reset.
    Real = 1,
}

impl EntryMode {
    /// Decodes a mode, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Long),
            1 => Some(Self::Real),
            _ => None,
        }
    }
}

/// Optional intercepts a world switcher may ask for with
/// [`crate::syscall::Syscall::VmcsControl`]. The core always intercepts what
/// its own safety needs (host interrupts, port I/O, MSRs outside the
/// guest-owned set, CPUID, HLT, hypercalls, shutdown, virtualization
/// instructions); these add to that.
pub mod intercept {
    /// RDTSC and RDTSCP.
    pub const RDTSC: u64 = 1 << 0;
    /// WBINVD ([`super::ExitReason::Wbinvd`]; INVD always exits).
    pub const WBINVD: u64 = 1 << 1;
    /// PAUSE.
    pub const PAUSE: u64 = 1 << 2;
    /// MOV to CR3 ([`super::ExitReason::Cr3Write`]): a guest's address
    /// space switches, for accounting per guest process.
    pub const CR3_WRITE: u64 = 1 << 3;
    /// Every intercept bit this core knows.
    pub const ALL: u64 = RDTSC | WBINVD | PAUSE | CR3_WRITE;
}

/// [`VcpuState::interrupt_window`] bits.
pub mod window {
    /// Exit with [`super::ExitReason::InterruptWindow`] once the guest can
    /// take an external interrupt.
    pub const INTERRUPT: u64 = 1 << 0;
    /// Exit with [`super::ExitReason::Iret`] before the guest's next IRET.
    pub const IRET: u64 = 1 << 1;
    /// Exit with [`super::ExitReason::Cr8Write`] at the guest's next MOV to
    /// CR8 (which otherwise does not exit): for an interrupt its task
    /// priority holds back. The core sets the same intercept whenever
    /// [`INTERRUPT`] is asked for: QEMU 7.2's TCG aborts the whole machine
    /// when a guest writes CR8 while a virtual interrupt is pending, so no
    /// guest may write CR8 during a window.
    pub const CR8: u64 = 1 << 2;
}

/// The shared state page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuState {
    /// An [`ExitReason`].
    pub exit_reason: u32,
    /// Length of the exiting instruction when the core knows it (from the
    /// CPU's next-RIP or the I/O exit information), else 0: the world
    /// switcher must then decode or use the instruction's known length.
    pub instruction_length: u32,
    /// The vendor's raw exit code (SVM EXITCODE or VMX basic exit reason).
    pub raw_exit: u64,
    /// Decoded exit information (see each [`ExitReason`]).
    pub qualification: u64,
    pub qualification2: u64,
    /// The guest-physical address of a nested page fault.
    pub guest_physical: u64,
    /// An event whose delivery the exit interrupted ([`event`] layout). The
    /// core re-injects it at the next entry unless `inject` is written.
    pub exit_event: u64,
    /// General-purpose registers, in [`gpr`] order. All but RAX and RSP
    /// are the guest's registers themselves (loaded from here at every
    /// entry, saved here at every exit: no dirty bit needed); RAX and RSP
    /// are published at every exit and written back with their bits.
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub ss: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub tr: Segment,
    pub ldtr: Segment,
    pub gdtr: DescriptorTable,
    pub idtr: DescriptorTable,
    /// An event to deliver at the next entry ([`event`] layout), written
    /// back when [`dirty::INJECT`] is set.
    pub inject: u64,
    /// 1 when the guest is in an interrupt shadow (after STI or MOV SS).
    pub interrupt_shadow: u64,
    /// Guest entries so far.
    pub entries: u64,
    /// The [`dirty`] bits of the fields the core wrote back at the last
    /// entry (its mask within [`dirty::ALL`]).
    pub last_writes: u64,
    /// Exits the world switcher asks for, [`window`] bits: leave the guest
    /// with [`ExitReason::InterruptWindow`] as soon as it can take an
    /// external interrupt, with [`ExitReason::Iret`] at its next IRET
    /// (written back with [`dirty::INTERRUPT_WINDOW`]; 0 cancels both). At
    /// every exit it says which requests are still pending ([`window::CR8`]
    /// only when asked for without [`window::INTERRUPT`]).
    pub interrupt_window: u64,
    /// The guest's task priority: CR8, which is the local APIC's TPR bits
    /// 7:4 (0–15). A 64-bit guest's MOV to or from CR8 does not exit (the
    /// CPU keeps a virtual TPR), so the core publishes it at every exit;
    /// written back with [`dirty::CR8`].
    pub cr8: u64,
    /// The guest's `TSC_AUX` (what RDTSCP and RDPID read; 32 bits, the
    /// rest ignored): the CPU does not switch it, so the core loads it
    /// around each entry where the CPU has it (else it is ignored), and
    /// keeps 0 there otherwise. Only the world switcher changes it (the
    /// MSR always exits), with [`dirty::TSC_AUX`]; 0 after a reset.
    pub tsc_aux: u64,
    /// Which lazily published parts of the page are current: [`published`]
    /// bits, set by the core at every exit (the world switcher's writes
    /// are ignored).
    pub published: u64,
}

const _: () = assert!(offset_of!(VcpuState, exit_reason) == 0);
const _: () = assert!(offset_of!(VcpuState, instruction_length) == 4);
const _: () = assert!(offset_of!(VcpuState, raw_exit) == 8);
const _: () = assert!(offset_of!(VcpuState, qualification) == 16);
const _: () = assert!(offset_of!(VcpuState, qualification2) == 24);
const _: () = assert!(offset_of!(VcpuState, guest_physical) == 32);
const _: () = assert!(offset_of!(VcpuState, exit_event) == 40);
const _: () = assert!(offset_of!(VcpuState, gpr) == 48);
const _: () = assert!(offset_of!(VcpuState, rip) == 176);
const _: () = assert!(offset_of!(VcpuState, rflags) == 184);
const _: () = assert!(offset_of!(VcpuState, cr0) == 192);
const _: () = assert!(offset_of!(VcpuState, efer) == 224);
const _: () = assert!(offset_of!(VcpuState, cs) == 232);
const _: () = assert!(offset_of!(VcpuState, ldtr) == 344);
const _: () = assert!(offset_of!(VcpuState, gdtr) == 360);
const _: () = assert!(offset_of!(VcpuState, idtr) == 376);
const _: () = assert!(offset_of!(VcpuState, inject) == 392);
const _: () = assert!(offset_of!(VcpuState, interrupt_shadow) == 400);
const _: () = assert!(offset_of!(VcpuState, entries) == 408);
const _: () = assert!(offset_of!(VcpuState, last_writes) == 416);
const _: () = assert!(offset_of!(VcpuState, interrupt_window) == 424);
const _: () = assert!(offset_of!(VcpuState, cr8) == 432);
const _: () = assert!(offset_of!(VcpuState, tsc_aux) == 440);
const _: () = assert!(offset_of!(VcpuState, published) == 448);
const _: () = assert!(size_of::<VcpuState>() == 456);
const _: () = assert!(size_of::<VcpuState>() <= 4096);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_qualification_round_trips() {
        let exit = IoExit {
            port: 0x3f8,
            size: 1,
            input: false,
            string: true,
            rep: true,
        };
        assert_eq!(IoExit::decode(exit.encode()), exit);
        for size in [1, 2, 4] {
            for input in [false, true] {
                let exit = IoExit {
                    size,
                    input,
                    ..exit
                };
                assert_eq!(IoExit::decode(exit.encode()), exit);
                assert_eq!(exit.encode() & !IoExit::FIELDS, 0);
            }
        }
    }

    #[test]
    fn io_qualification_is_the_svm_exitinfo1_layout() {
        // REP OUTSW to 0x1f0: type 0, STR, REP, SZ16, port in 16..32.
        let io = IoExit::decode((0x1f0 << 16) | (1 << 5) | (1 << 3) | (1 << 2));
        assert_eq!(
            (io.port, io.size, io.input, io.string, io.rep),
            (0x1f0, 2, false, true, true)
        );
        // IN al, 0x60: type 1, SZ8.
        let io = IoExit::decode((0x60 << 16) | (1 << 4) | 1);
        assert_eq!((io.port, io.size, io.input), (0x60, 1, true));
        assert_eq!(IoExit::decode((0xcfc << 16) | (1 << 6)).size, 4);
    }

    #[test]
    fn events_encode_like_eventinj() {
        assert_eq!(event::UD, 0x8000_0306);
        assert_eq!(event::GP0, 0x0000_0000_8000_0b0d);
        assert_eq!(
            event::exception(14, Some(2)),
            0x0000_0002_8000_0b0e,
            "page fault with error code 2"
        );
        assert_eq!(event::interrupt(0x20), 0x8000_0020);
    }

    #[test]
    fn reasons_round_trip() {
        for value in 1..=18 {
            assert_eq!(ExitReason::from_u32(value).unwrap() as u32, value);
        }
        assert_eq!(ExitReason::from_u32(0), None);
        assert_eq!(ExitReason::from_u32(19), None);
    }

    #[test]
    fn dirty_bits_are_distinct_and_cover_all() {
        let bits = [
            dirty::GPRS,
            dirty::RIP,
            dirty::RFLAGS,
            dirty::CR0,
            dirty::CR2,
            dirty::CR3,
            dirty::CR4,
            dirty::EFER,
            dirty::SEGMENTS,
            dirty::GDTR,
            dirty::IDTR,
            dirty::INJECT,
            dirty::INTERRUPT_SHADOW,
            dirty::INTERRUPT_WINDOW,
            dirty::CR8,
            dirty::TSC_AUX,
        ];
        let mut seen = 0u64;
        for bit in bits {
            assert_eq!(seen & bit, 0);
            seen |= bit;
        }
        assert_eq!(seen, dirty::ALL);
    }
}
