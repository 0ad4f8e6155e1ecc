//! AMD SVM's control block (VMCB): its layout and the pure halves of the vCPU run path.
//!
//! The ring-0 backend (`arch::x86_64::svm`) owns the instructions (VMRUN,
//! VMLOAD, VMSAVE, CLGI, STGI); everything that is only data lives here so
//! it can be tested on the host: the [`Vmcb`] with its architectural offsets
//! asserted, the core's mandatory intercepts ([`Vmcb::init`]), the dirty-mask
//! write-back of the shared [`VcpuState`] with exact VMCB clean bits
//! ([`write_back`]), the copy-out at exit ([`read_out`]), exit decoding into
//! the architecture-neutral [`ExitReason`] ([`decode_exit`]), the MSR and
//! I/O permission maps, and ASID assignment ([`AsidAllocator`]).
//!
//! Guest general-purpose registers other than RAX and RSP are not part of
//! the VMCB: the backend's entry code loads them from the state page's
//! [`VcpuState::gpr`] and saves them there, so neither the write-back nor
//! the copy-out touches them. The segment and descriptor-table registers
//! are copied out only at the exits that need them
//! ([`publishes_segments`]; [`microvisor_abi::vcpu::published`]).

use core::mem::offset_of;

use microvisor_abi::vcpu::{
    CR3_DECODED, DescriptorTable, ExitReason, IoExit, Segment, VcpuState, XSETBV_IGNORED, dirty,
    event, gpr, npf, published, window,
};

/// A VMCB segment register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VmcbSegment {
    pub selector: u16,
    pub attributes: u16,
    pub limit: u32,
    pub base: u64,
}

/// The VMCB: control area (0x000..0x400) and state-save area (0x400..).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(4096))]
pub struct Vmcb {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    reserved_018: [u8; 0x24],
    pub pause_filter_threshold: u16,
    pub pause_filter_count: u16,
    pub iopm_base: u64,
    pub msrpm_base: u64,
    pub tsc_offset: u64,
    pub asid: u32,
    pub tlb_control: u8,
    reserved_05d: [u8; 3],
    pub int_ctl: u64,
    pub int_state: u64,
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u64,
    pub nested_ctl: u64,
    pub avic_bar: u64,
    pub ghcb: u64,
    pub event_inject: u64,
    pub nested_cr3: u64,
    pub lbr_virtualization: u64,
    pub clean: u32,
    reserved_0c4: u32,
    pub next_rip: u64,
    pub instruction_bytes_fetched: u8,
    pub instruction_bytes: [u8; 15],
    reserved_0e0: [u8; 0x320],
    // State-save area.
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    reserved_4a0: [u8; 0x2b],
    pub cpl: u8,
    reserved_4cc: u32,
    pub efer: u64,
    reserved_4d8: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    reserved_580: [u8; 0x58],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_address: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    reserved_648: [u8; 0x20],
    pub g_pat: u64,
    reserved_670: [u8; 0x990],
}

const _: () = assert!(size_of::<Vmcb>() == 4096);
const _: () = assert!(offset_of!(Vmcb, intercept_misc1) == 0x0c);
const _: () = assert!(offset_of!(Vmcb, pause_filter_threshold) == 0x3c);
const _: () = assert!(offset_of!(Vmcb, iopm_base) == 0x40);
const _: () = assert!(offset_of!(Vmcb, asid) == 0x58);
const _: () = assert!(offset_of!(Vmcb, tlb_control) == 0x5c);
const _: () = assert!(offset_of!(Vmcb, int_ctl) == 0x60);
const _: () = assert!(offset_of!(Vmcb, exit_code) == 0x70);
const _: () = assert!(offset_of!(Vmcb, exit_int_info) == 0x88);
const _: () = assert!(offset_of!(Vmcb, nested_ctl) == 0x90);
const _: () = assert!(offset_of!(Vmcb, event_inject) == 0xa8);
const _: () = assert!(offset_of!(Vmcb, nested_cr3) == 0xb0);
const _: () = assert!(offset_of!(Vmcb, clean) == 0xc0);
const _: () = assert!(offset_of!(Vmcb, next_rip) == 0xc8);
const _: () = assert!(offset_of!(Vmcb, es) == 0x400);
const _: () = assert!(offset_of!(Vmcb, tr) == 0x490);
const _: () = assert!(offset_of!(Vmcb, cpl) == 0x4cb);
const _: () = assert!(offset_of!(Vmcb, efer) == 0x4d0);
const _: () = assert!(offset_of!(Vmcb, cr4) == 0x548);
const _: () = assert!(offset_of!(Vmcb, rip) == 0x578);
const _: () = assert!(offset_of!(Vmcb, rsp) == 0x5d8);
const _: () = assert!(offset_of!(Vmcb, rax) == 0x5f8);
const _: () = assert!(offset_of!(Vmcb, cr2) == 0x640);
const _: () = assert!(offset_of!(Vmcb, g_pat) == 0x668);

/// `intercept_misc1` bits.
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const SMI: u32 = 1 << 2;
    pub const INIT: u32 = 1 << 3;
    /// A virtual interrupt (V_IRQ) became deliverable: the interrupt
    /// window.
    pub const VINTR: u32 = 1 << 4;
    pub const RDTSC: u32 = 1 << 14;
    pub const IRET: u32 = 1 << 20;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const PAUSE: u32 = 1 << 23;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO: u32 = 1 << 27;
    pub const MSR: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// `intercept_misc2` bits.
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const WBINVD: u32 = 1 << 9;
    pub const XSETBV: u32 = 1 << 13;
}

/// VMCB clean bits: a set bit tells the CPU the field group is unchanged
/// since the last VMRUN of this VMCB on this CPU.
pub mod clean {
    pub const INTERCEPTS: u32 = 1 << 0;
    pub const IOPM: u32 = 1 << 1;
    pub const ASID: u32 = 1 << 2;
    pub const TPR: u32 = 1 << 3;
    pub const NESTED_PAGING: u32 = 1 << 4;
    pub const CONTROL_REGISTERS: u32 = 1 << 5;
    pub const DEBUG_REGISTERS: u32 = 1 << 6;
    pub const DESCRIPTOR_TABLES: u32 = 1 << 7;
    pub const SEGMENTS: u32 = 1 << 8;
    pub const CR2: u32 = 1 << 9;
    pub const LBR: u32 = 1 << 10;
    pub const AVIC: u32 = 1 << 11;
    /// Every group this core uses.
    pub const ALL: u32 = (1 << 12) - 1;
}

/// SVM exit codes this core names.
pub mod exit {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const XSETBV: u64 = 0x8d;
    pub const WRITE_CR3: u64 = 0x13;
    pub const WRITE_CR8: u64 = 0x18;
    pub const INVD: u64 = 0x76;
    pub const WBINVD: u64 = 0x89;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID: the guest state failed VMRUN's consistency checks.
    pub const INVALID: u64 = u64::MAX;
}

/// EFER.SVME: must stay set in the guest's EFER (hidden from the guest).
pub const EFER_SVME: u64 = 1 << 12;
/// `int_ctl`: physical interrupts are masked by the host's RFLAGS.IF, the
/// guest's IF masks only virtual interrupts.
pub const V_INTR_MASKING: u64 = 1 << 24;
/// `int_ctl`: a virtual interrupt is pending. With the VINTR intercept the
/// guest exits as soon as it could take it: the core uses it only to
/// report the interrupt window, never to deliver a vector.
pub const V_IRQ: u64 = 1 << 8;
/// `int_ctl`: the pending virtual interrupt ignores the virtual TPR.
pub const V_IGN_TPR: u64 = 1 << 20;
/// `int_ctl`: the virtual TPR, which a guest's MOV to/from CR8 reads and
/// writes without an exit (with [`V_INTR_MASKING`]).
pub const V_TPR: u64 = 0xf;
/// `intercept_cr`: MOV to CR8.
pub const INTERCEPT_CR8_WRITE: u32 = 1 << (16 + 8);
/// `intercept_cr`: MOV to CR3 (an optional intercept).
pub const INTERCEPT_CR3_WRITE: u32 = 1 << (16 + 3);
/// EXITINFO1 of a CR access with decode assists: a MOV, the register in
/// bits 0..4.
const CR_ACCESS_MOV: u64 = 1 << 63;
/// `nested_ctl`: nested paging on.
pub const NESTED_PAGING: u64 = 1 << 0;
/// `tlb_control`: flush this guest's (ASID's) TLB entries at VMRUN.
pub const TLB_FLUSH_GUEST: u8 = 3;
/// `tlb_control`: flush everything at VMRUN.
pub const TLB_FLUSH_ALL: u8 = 1;

/// Intercepts the core always sets: host interrupts and signals exit to
/// the core; port I/O and MSRs go through the permission maps; CPUID, HLT,
/// hypercalls and shutdown go to the world switcher; the virtualization
/// instructions themselves, cache invalidation without write-back and
/// XSETBV (XCR0 is not switched between guests and the core) are never
/// the guest's.
pub const MANDATORY_MISC1: u32 = misc1::INTR
    | misc1::NMI
    | misc1::SMI
    | misc1::INIT
    | misc1::CPUID
    | misc1::INVD
    | misc1::HLT
    | misc1::INVLPGA
    | misc1::IOIO
    | misc1::MSR
    | misc1::SHUTDOWN;
/// See [`MANDATORY_MISC1`].
pub const MANDATORY_MISC2: u32 = misc2::VMRUN
    | misc2::VMMCALL
    | misc2::VMLOAD
    | misc2::VMSAVE
    | misc2::STGI
    | misc2::CLGI
    | misc2::SKINIT
    | misc2::XSETBV;
/// Exceptions intercepted unconditionally: machine check (#MC) belongs
/// to the host.
pub const MANDATORY_EXCEPTIONS: u32 = 1 << 18;

impl Vmcb {
    /// An all-zero VMCB.
    pub const ZERO: Self = Self {
        intercept_cr: 0,
        intercept_dr: 0,
        intercept_exceptions: 0,
        intercept_misc1: 0,
        intercept_misc2: 0,
        intercept_misc3: 0,
        reserved_018: [0; 0x24],
        pause_filter_threshold: 0,
        pause_filter_count: 0,
        iopm_base: 0,
        msrpm_base: 0,
        tsc_offset: 0,
        asid: 0,
        tlb_control: 0,
        reserved_05d: [0; 3],
        int_ctl: 0,
        int_state: 0,
        exit_code: 0,
        exit_info1: 0,
        exit_info2: 0,
        exit_int_info: 0,
        nested_ctl: 0,
        avic_bar: 0,
        ghcb: 0,
        event_inject: 0,
        nested_cr3: 0,
        lbr_virtualization: 0,
        clean: 0,
        reserved_0c4: 0,
        next_rip: 0,
        instruction_bytes_fetched: 0,
        instruction_bytes: [0; 15],
        reserved_0e0: [0; 0x320],
        es: SEGMENT_ZERO,
        cs: SEGMENT_ZERO,
        ss: SEGMENT_ZERO,
        ds: SEGMENT_ZERO,
        fs: SEGMENT_ZERO,
        gs: SEGMENT_ZERO,
        gdtr: SEGMENT_ZERO,
        ldtr: SEGMENT_ZERO,
        idtr: SEGMENT_ZERO,
        tr: SEGMENT_ZERO,
        reserved_4a0: [0; 0x2b],
        cpl: 0,
        reserved_4cc: 0,
        efer: 0,
        reserved_4d8: [0; 0x70],
        cr4: 0,
        cr3: 0,
        cr0: 0,
        dr7: 0,
        dr6: 0,
        rflags: 0,
        rip: 0,
        reserved_580: [0; 0x58],
        rsp: 0,
        s_cet: 0,
        ssp: 0,
        isst_address: 0,
        rax: 0,
        star: 0,
        lstar: 0,
        cstar: 0,
        sfmask: 0,
        kernel_gs_base: 0,
        sysenter_cs: 0,
        sysenter_esp: 0,
        sysenter_eip: 0,
        cr2: 0,
        reserved_648: [0; 0x20],
        g_pat: 0,
        reserved_670: [0; 0x990],
    };

    /// Resets to the power-on state of a CPU (all registers as after
    /// INIT, 16-bit real mode at 0) with the core's mandatory intercepts,
    /// the permission maps and nested paging at `nested_cr3`, tagged
    /// `asid`. Every clean bit is clear: the CPU reloads everything.
    pub fn init(&mut self, iopm: u64, msrpm: u64, nested_cr3: u64, asid: u32) {
        *self = Self::ZERO;
        self.intercept_misc1 = MANDATORY_MISC1;
        self.intercept_misc2 = MANDATORY_MISC2;
        self.intercept_exceptions = MANDATORY_EXCEPTIONS;
        self.iopm_base = iopm;
        self.msrpm_base = msrpm;
        self.asid = asid;
        self.tlb_control = TLB_FLUSH_GUEST;
        self.int_ctl = V_INTR_MASKING;
        self.nested_ctl = NESTED_PAGING;
        self.nested_cr3 = nested_cr3;
        // The power-on PAT: WB, WT, UC-, UC repeated.
        self.g_pat = 0x0007_0406_0007_0406;
        let data = VmcbSegment {
            selector: 0,
            attributes: 0x93,
            limit: 0xffff,
            base: 0,
        };
        self.cs = VmcbSegment {
            attributes: 0x9b,
            ..data
        };
        (self.ds, self.es, self.ss, self.fs, self.gs) = (data, data, data, data, data);
        self.gdtr.limit = 0xffff;
        self.idtr.limit = 0xffff;
        self.ldtr = VmcbSegment {
            attributes: 0x82,
            ..data
        };
        self.tr = VmcbSegment {
            attributes: 0x8b,
            ..data
        };
        self.cr0 = 0x6000_0010; // CD, NW, ET
        self.rflags = 0x2;
        self.dr6 = 0xffff_0ff0;
        self.dr7 = 0x400;
        self.efer = EFER_SVME;
        self.clean = 0;
    }

    /// Sets the optional intercepts ([`microvisor_abi::vcpu::intercept`]
    /// bits) on top of the mandatory ones.
    pub fn set_optional_intercepts(&mut self, mask: u64) {
        use microvisor_abi::vcpu::intercept;
        let mut misc1 = MANDATORY_MISC1;
        let mut misc2 = MANDATORY_MISC2;
        if mask & intercept::RDTSC != 0 {
            misc1 |= misc1::RDTSC;
            misc2 |= misc2::RDTSCP;
        }
        if mask & intercept::WBINVD != 0 {
            misc2 |= misc2::WBINVD;
        }
        if mask & intercept::PAUSE != 0 {
            misc1 |= misc1::PAUSE;
        }
        if mask & intercept::CR3_WRITE != 0 {
            self.intercept_cr |= INTERCEPT_CR3_WRITE;
        } else {
            self.intercept_cr &= !INTERCEPT_CR3_WRITE;
        }
        // Pending window requests are the state page's, not optional
        // intercepts: keep them.
        misc1 |= self.intercept_misc1 & (misc1::VINTR | misc1::IRET);
        self.intercept_misc1 = misc1;
        self.intercept_misc2 = misc2;
        self.clean &= !clean::INTERCEPTS;
    }
}

const SEGMENT_ZERO: VmcbSegment = VmcbSegment {
    selector: 0,
    attributes: 0,
    limit: 0,
    base: 0,
};

fn to_vmcb(segment: &Segment) -> VmcbSegment {
    VmcbSegment {
        selector: segment.selector,
        attributes: segment.attributes,
        limit: segment.limit,
        base: segment.base,
    }
}

fn from_vmcb(segment: &VmcbSegment) -> Segment {
    Segment {
        selector: segment.selector,
        attributes: segment.attributes,
        limit: segment.limit,
        base: segment.base,
    }
}

fn table_to_vmcb(table: &DescriptorTable) -> VmcbSegment {
    VmcbSegment {
        selector: 0,
        attributes: 0,
        limit: table.limit,
        base: table.base,
    }
}

fn table_from_vmcb(table: &VmcbSegment) -> DescriptorTable {
    DescriptorTable {
        limit: table.limit,
        reserved: 0,
        base: table.base,
    }
}

/// Writes the fields of `state` named by `mask` into the VMCB, clearing
/// exactly the clean bits of the groups it touched; returns the mask
/// (within [`dirty::ALL`]). Bits outside [`dirty::ALL`] are ignored, and so
/// are the bits of the general-purpose registers other than RAX and RSP:
/// those are the state page's own ([`VcpuState::gpr`]), loaded at every
/// entry. RAX, RSP and RIP, which most exits' handling writes, are
/// written here, everything else by `write_back_rare`.
#[inline]
pub fn write_back(vmcb: &mut Vmcb, state: &VcpuState, mask: u64) -> u64 {
    let mask = mask & dirty::ALL;
    if mask & dirty::RAX != 0 {
        vmcb.rax = state.gpr[gpr::RAX];
    }
    if mask & dirty::RSP != 0 {
        vmcb.rsp = state.gpr[gpr::RSP];
    }
    if mask & dirty::RIP != 0 {
        vmcb.rip = state.rip;
    }
    if mask & RARE != 0 {
        write_back_rare(vmcb, state, mask);
    }
    mask
}

/// The dirty bits [`write_back`] hands to [`write_back_rare`].
const RARE: u64 = dirty::ALL & !(dirty::GPRS | dirty::RIP);

/// The rest of [`write_back`]: everything but the general-purpose
/// registers and RIP.
#[inline(never)]
fn write_back_rare(vmcb: &mut Vmcb, state: &VcpuState, mask: u64) {
    if mask & dirty::RFLAGS != 0 {
        // Bit 1 is fixed to 1; reserved bits stay clear.
        vmcb.rflags = (state.rflags & 0x003f_7fd5) | 0x2;
    }
    if mask & (dirty::CR0 | dirty::CR3 | dirty::CR4 | dirty::EFER) != 0 {
        if mask & dirty::CR0 != 0 {
            vmcb.cr0 = state.cr0;
        }
        if mask & dirty::CR3 != 0 {
            vmcb.cr3 = state.cr3;
        }
        if mask & dirty::CR4 != 0 {
            vmcb.cr4 = state.cr4;
        }
        if mask & dirty::EFER != 0 {
            vmcb.efer = state.efer | EFER_SVME;
        }
        vmcb.clean &= !clean::CONTROL_REGISTERS;
        // As the guest's own MOV to a control register would: its
        // translations under the old paging state go (all of them: the
        // core does not keep PCID-tagged ones apart).
        vmcb.tlb_control = TLB_FLUSH_GUEST;
    }
    if mask & dirty::CR2 != 0 {
        vmcb.cr2 = state.cr2;
        vmcb.clean &= !clean::CR2;
    }
    if mask & (dirty::CS | dirty::DS | dirty::ES | dirty::SS) != 0 {
        if mask & dirty::CS != 0 {
            vmcb.cs = to_vmcb(&state.cs);
        }
        if mask & dirty::DS != 0 {
            vmcb.ds = to_vmcb(&state.ds);
        }
        if mask & dirty::ES != 0 {
            vmcb.es = to_vmcb(&state.es);
        }
        if mask & dirty::SS != 0 {
            vmcb.ss = to_vmcb(&state.ss);
        }
        // CPL is SS.DPL in protected mode, 0 in real mode.
        vmcb.cpl = if vmcb.cr0 & 1 != 0 {
            ((vmcb.ss.attributes >> 5) & 3) as u8
        } else {
            0
        };
        vmcb.clean &= !clean::SEGMENTS;
    }
    // FS, GS, TR and LDTR are loaded by VMLOAD, not cached: no clean bit.
    if mask & dirty::FS != 0 {
        vmcb.fs = to_vmcb(&state.fs);
    }
    if mask & dirty::GS != 0 {
        vmcb.gs = to_vmcb(&state.gs);
    }
    if mask & dirty::TR != 0 {
        vmcb.tr = to_vmcb(&state.tr);
    }
    if mask & dirty::LDTR != 0 {
        vmcb.ldtr = to_vmcb(&state.ldtr);
    }
    if mask & (dirty::GDTR | dirty::IDTR) != 0 {
        if mask & dirty::GDTR != 0 {
            vmcb.gdtr = table_to_vmcb(&state.gdtr);
        }
        if mask & dirty::IDTR != 0 {
            vmcb.idtr = table_to_vmcb(&state.idtr);
        }
        vmcb.clean &= !clean::DESCRIPTOR_TABLES;
    }
    if mask & dirty::INJECT != 0 {
        // Only the architecturally defined bits; type 1 is reserved.
        let event = state.inject & 0xffff_ffff_8000_0fff;
        let kind = (event >> 8) & 7;
        vmcb.event_inject = if event & (1 << 31) != 0 && kind != 1 && kind <= 4 {
            event
        } else {
            0
        };
    }
    if mask & dirty::INTERRUPT_SHADOW != 0 {
        vmcb.int_state = state.interrupt_shadow & 1;
    }
    if mask & dirty::INTERRUPT_WINDOW != 0 {
        let windows = state.interrupt_window;
        request_interrupt_window(vmcb, windows & window::INTERRUPT != 0);
        request_iret_exit(vmcb, windows & window::IRET != 0);
        // Also during every interrupt window: see `window::CR8`. The
        // optional CR3 intercept is kept.
        let cr8 = if windows & (window::INTERRUPT | window::CR8) != 0 {
            INTERCEPT_CR8_WRITE
        } else {
            0
        };
        vmcb.intercept_cr = (vmcb.intercept_cr & INTERCEPT_CR3_WRITE) | cr8;
    }
    if mask & dirty::CR8 != 0 {
        vmcb.int_ctl = (vmcb.int_ctl & !V_TPR) | (state.cr8 & V_TPR);
        vmcb.clean &= !clean::TPR;
    }
}

/// Asks for (or cancels) an exit as soon as the guest can take an
/// external interrupt: a virtual interrupt that ignores the virtual TPR,
/// and the VINTR intercept that turns its delivery into an exit.
fn request_interrupt_window(vmcb: &mut Vmcb, request: bool) {
    if request {
        vmcb.int_ctl |= V_IRQ | V_IGN_TPR;
        vmcb.intercept_misc1 |= misc1::VINTR;
    } else {
        vmcb.int_ctl &= !(V_IRQ | V_IGN_TPR);
        vmcb.intercept_misc1 &= !misc1::VINTR;
    }
    vmcb.clean &= !(clean::TPR | clean::INTERCEPTS);
}

/// Asks for (or cancels) an exit before the guest's next IRET.
fn request_iret_exit(vmcb: &mut Vmcb, request: bool) {
    if request {
        vmcb.intercept_misc1 |= misc1::IRET;
    } else {
        vmcb.intercept_misc1 &= !misc1::IRET;
    }
    vmcb.clean &= !clean::INTERCEPTS;
}

/// Copies the guest state out of the VMCB into the state page after an
/// exit (the exit fields are [`decode_exit`]'s): everything, the lazily
/// published registers too ([`read_out_control`], [`read_out_segments`]).
pub fn read_out(vmcb: &Vmcb, state: &mut VcpuState) {
    read_out_common(vmcb, state);
    read_out_control(vmcb, state);
    read_out_segments(vmcb, state);
}

/// What every exit publishes: RAX and RSP (the other general-purpose
/// registers are saved into the page by the entry code itself), RIP,
/// RFLAGS, the interrupt state, the pending window requests and the
/// virtual TPR. Marks the lazily published registers stale.
#[inline]
pub fn read_out_common(vmcb: &Vmcb, state: &mut VcpuState) {
    read_out_common_with(vmcb, state, windows(vmcb));
}

/// [`read_out_common`] with the window requests `windows` already known
/// ([`windows`] of `vmcb`, which a caller may keep: see there).
#[inline]
pub fn read_out_common_with(vmcb: &Vmcb, state: &mut VcpuState, windows: u64) {
    state.gpr[gpr::RAX] = vmcb.rax;
    state.gpr[gpr::RSP] = vmcb.rsp;
    state.rip = vmcb.rip;
    state.rflags = vmcb.rflags;
    state.interrupt_shadow = vmcb.int_state & 1;
    state.inject = 0;
    state.interrupt_window = windows;
    state.cr8 = vmcb.int_ctl & V_TPR;
    state.published = 0;
}

/// Publishes CR0, CR2, CR3, CR4 and EFER ([`published::CONTROL`]).
#[inline]
pub fn read_out_control(vmcb: &Vmcb, state: &mut VcpuState) {
    read_out_control_except(vmcb, state, 0);
}

/// Publishes CR0, CR2, CR3, CR4 and EFER but those `keep` names
/// ([`dirty`] bits: the world switcher's edits not yet written back), and
/// marks them current ([`published::CONTROL`]).
#[inline]
pub fn read_out_control_except(vmcb: &Vmcb, state: &mut VcpuState, keep: u64) {
    let pairs = [
        (dirty::CR0, vmcb.cr0, &mut state.cr0),
        (dirty::CR2, vmcb.cr2, &mut state.cr2),
        (dirty::CR3, vmcb.cr3, &mut state.cr3),
        (dirty::CR4, vmcb.cr4, &mut state.cr4),
        (dirty::EFER, vmcb.efer & !EFER_SVME, &mut state.efer),
    ];
    for (bit, from, to) in pairs {
        if keep & bit == 0 {
            *to = from;
        }
    }
    state.published |= published::CONTROL;
}

/// The window requests `vmcb`'s intercepts hold, as
/// [`VcpuState::interrupt_window`] publishes them. The CPU never changes
/// intercepts; the core changes the ones this reads only in
/// [`Vmcb::init`], in [`write_back`] with [`dirty::INTERRUPT_WINDOW`] and
/// in [`finish_exit`] at an IRET exit ([`Vmcb::set_optional_intercepts`]
/// keeps them), so a caller may keep the value between those.
#[inline]
pub fn windows(vmcb: &Vmcb) -> u64 {
    let pending = |bit: u32, flag: u64| {
        if vmcb.intercept_misc1 & bit != 0 {
            flag
        } else {
            0
        }
    };
    let cr8_alone =
        vmcb.intercept_cr & INTERCEPT_CR8_WRITE != 0 && vmcb.intercept_misc1 & misc1::VINTR == 0;
    pending(misc1::VINTR, window::INTERRUPT)
        | pending(misc1::IRET, window::IRET)
        | if cr8_alone { window::CR8 } else { 0 }
}

/// Publishes the segment and descriptor-table registers
/// ([`published::SEGMENTS`]).
#[inline(never)]
pub fn read_out_segments(vmcb: &Vmcb, state: &mut VcpuState) {
    read_out_segments_except(vmcb, state, 0);
}

/// Publishes the segment and descriptor-table registers but those `keep`
/// names ([`dirty`] bits: the world switcher's edits not yet written
/// back), and marks them current ([`published::SEGMENTS`]).
pub fn read_out_segments_except(vmcb: &Vmcb, state: &mut VcpuState, keep: u64) {
    let pairs = [
        (dirty::CS, &vmcb.cs, &mut state.cs),
        (dirty::DS, &vmcb.ds, &mut state.ds),
        (dirty::ES, &vmcb.es, &mut state.es),
        (dirty::SS, &vmcb.ss, &mut state.ss),
        (dirty::FS, &vmcb.fs, &mut state.fs),
        (dirty::GS, &vmcb.gs, &mut state.gs),
        (dirty::TR, &vmcb.tr, &mut state.tr),
        (dirty::LDTR, &vmcb.ldtr, &mut state.ldtr),
    ];
    for (bit, from, to) in pairs {
        if keep & bit == 0 {
            *to = from_vmcb(from);
        }
    }
    if keep & dirty::GDTR == 0 {
        state.gdtr = table_from_vmcb(&vmcb.gdtr);
    }
    if keep & dirty::IDTR == 0 {
        state.idtr = table_from_vmcb(&vmcb.idtr);
    }
    state.published |= published::SEGMENTS;
}

/// A fetch ([`dirty::FETCH`]): publishes each lazily published group
/// whose [`VcpuState::published`] bit is clear, but the fields `keep`
/// names (the world switcher's edits not yet written back). A group the
/// last exit published is left alone: the page holds it, with whatever
/// the switcher has edited since.
pub fn fetch_stale(vmcb: &Vmcb, state: &mut VcpuState, keep: u64) {
    if state.published & published::CONTROL == 0 {
        read_out_control_except(vmcb, state, keep);
    }
    if state.published & published::SEGMENTS == 0 {
        read_out_segments_except(vmcb, state, keep);
    }
}

/// Whether the world switcher's handling of an exit of `reason` (with
/// qualification `qualification`) may need the segment and
/// descriptor-table registers: every exit but the common ones that never
/// look at them (see [`published`]).
#[inline]
pub fn publishes_segments(reason: ExitReason, qualification: u64) -> bool {
    match reason {
        ExitReason::Cpuid
        | ExitReason::Msr
        | ExitReason::Hlt
        | ExitReason::Wbinvd
        | ExitReason::InterruptWindow
        | ExitReason::Iret => false,
        ExitReason::Io => IoExit::decode(qualification).string,
        _ => true,
    }
}

/// Whether the world switcher's handling of an exit of `reason` (with
/// qualification `qualification`) may need the control registers and
/// EFER: every exit but CPUID and port I/O other than string I/O (see
/// [`published`]). Every exit [`publishes_segments`] names is one.
#[inline]
pub fn publishes_control(reason: ExitReason, qualification: u64) -> bool {
    match reason {
        ExitReason::Cpuid => false,
        ExitReason::Io => IoExit::decode(qualification).string,
        _ => true,
    }
}

/// Prepares a VMCB for entry: writes back the state-page fields `mask`
/// names ([`write_back`]), re-injects an event whose delivery the last
/// exit interrupted unless the world switcher injects one itself, counts
/// the entry in the state page, and forgets every clean bit when the CPU
/// has no VMCB clean-bits support.
#[inline]
pub fn prepare_entry(
    vmcb: &mut Vmcb,
    state: &mut VcpuState,
    mask: u64,
    pending_event: &mut u64,
    clean_bits: bool,
) {
    let writes = write_back(vmcb, state, mask);
    if mask & dirty::INJECT == 0 && *pending_event != 0 {
        vmcb.event_inject = core::mem::take(pending_event);
    }
    state.last_writes = writes;
    state.entries += 1;
    if !clean_bits {
        vmcb.clean = 0;
    }
}

/// Takes the VMCB back after an exit: everything it holds is cached again
/// (all clean bits), no TLB flush or injection is left pending, an IRET
/// exit cancels its request (else the guest could never execute the
/// instruction), and an event whose delivery the exit interrupted is kept
/// in `pending_event` for the next entry. Returns the decoded exit.
#[inline]
pub fn finish_exit(vmcb: &mut Vmcb, next_rip_valid: bool, pending_event: &mut u64) -> Exit {
    finish_exit_with(vmcb, pending_event, |vmcb| {
        decode_exit(vmcb, next_rip_valid)
    })
}

/// [`finish_exit`] with the exit decoded by `decode` (one of
/// [`decode_exit`]'s arms, when the caller already matched the exit code:
/// each arm then publishes its own constants without a merged record).
#[inline(always)]
pub fn finish_exit_with(
    vmcb: &mut Vmcb,
    pending_event: &mut u64,
    decode: impl FnOnce(&Vmcb) -> Exit,
) -> Exit {
    vmcb.clean = clean::ALL;
    vmcb.tlb_control = 0;
    vmcb.event_inject = 0;
    let exit = decode(vmcb);
    if vmcb.exit_code == exit::IRET {
        request_iret_exit(vmcb, false);
    }
    if vmcb.exit_int_info & (1 << 31) != 0 {
        *pending_event = vmcb.exit_int_info;
    }
    exit
}

/// Publishes the guest's state without an exit of its own (a run that
/// entered the guest, was interrupted by the host and ends before entering
/// again): [`read_out`] and the event whose delivery was interrupted, if
/// any ([`VcpuState::exit_event`]). Rare, so kept out of the run path.
#[cold]
#[inline(never)]
pub fn publish_guest(vmcb: &Vmcb, state: &mut VcpuState, pending_event: u64) {
    read_out(vmcb, state);
    state.exit_event = pending_event;
}

/// Publishes an exit for the world switcher: the guest state
/// ([`read_out_common`], with `windows` the [`windows`] of `vmcb`;
/// [`read_out_control`] and [`read_out_segments`] where
/// [`publishes_control`] and [`publishes_segments`] say the exit needs
/// them, or `at_least` names them: publishing more than an exit needs is
/// always correct, and a caller that knows its exits need a group spares
/// the test) and the exit's fields, `reason` being the exit's.
#[inline]
pub fn publish_exit(
    vmcb: &Vmcb,
    state: &mut VcpuState,
    exit: &Exit,
    reason: ExitReason,
    (windows, pending_event): (u64, u64),
    at_least: u64,
) {
    read_out_common_with(vmcb, state, windows);
    if at_least & published::CONTROL != 0 || publishes_control(reason, exit.qualification) {
        read_out_control(vmcb, state);
        if at_least & published::SEGMENTS != 0 || publishes_segments(reason, exit.qualification) {
            read_out_segments(vmcb, state);
        }
    }
    state.exit_reason = reason as u32;
    state.instruction_length = exit.instruction_length;
    state.raw_exit = vmcb.exit_code;
    state.qualification = exit.qualification;
    state.qualification2 = exit.qualification2;
    state.guest_physical = exit.guest_physical;
    state.exit_event = pending_event;
}

/// Dirty bits of runs that ended before entering the guest (a poke or a
/// time limit), kept for the next entry: the world switcher wrote those
/// fields for an entry that did not happen, and an RIP advanced past an
/// emulated instruction or an injected interrupt must not be lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unapplied(u64);

impl Unapplied {
    pub const NONE: Self = Self(0);

    /// Ends a run without entering the guest: only the exit fields change,
    /// and `mask` is kept. An injection the run carried is published as
    /// the pending event ([`VcpuState::exit_event`]), which the core
    /// delivers at the next entry unless another is injected, so the
    /// world switcher neither decides a second one over it nor believes
    /// it delivered.
    pub fn end_early(&mut self, state: &mut VcpuState, reason: ExitReason, mask: u64) {
        self.0 |= mask;
        state.exit_reason = reason as u32;
        state.raw_exit = 0;
        state.instruction_length = 0;
        if self.0 & dirty::INJECT != 0 && state.inject & event::VALID != 0 {
            state.exit_event = state.inject;
        }
    }

    /// The dirty bits kept for the next entry.
    pub fn pending(&self) -> u64 {
        self.0
    }

    /// The mask of the next entry: `mask` and everything kept.
    pub fn with(&mut self, mask: u64) -> u64 {
        mask | core::mem::take(&mut self.0)
    }
}

/// An exit, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// `None` for a host interrupt or signal: the core handles it and
    /// re-enters without involving the world switcher.
    pub reason: Option<ExitReason>,
    pub qualification: u64,
    pub qualification2: u64,
    pub guest_physical: u64,
    /// Length of the exiting instruction when known, else 0.
    pub instruction_length: u32,
}

impl Exit {
    /// The exit reported instead of whatever ended guest mode when the
    /// guest changed XCR0 to `found` behind an ignored XSETBV intercept.
    pub fn xcr0_changed(found: u64) -> Self {
        Self {
            reason: Some(ExitReason::Xsetbv),
            qualification: XSETBV_IGNORED,
            qualification2: found,
            guest_physical: 0,
            instruction_length: 0,
        }
    }
}

/// Decodes the exit recorded in `vmcb`. `next_rip_valid` says whether the
/// CPU writes `next_rip` (the NRIP-save feature); without it the length is
/// known only for I/O exits, whose EXITINFO2 is always the next RIP. CPUID
/// and port-I/O exits, the commonest, are decoded inline.
#[inline(always)]
pub fn decode_exit(vmcb: &Vmcb, next_rip_valid: bool) -> Exit {
    match vmcb.exit_code {
        exit::CPUID => saved_length_exit(vmcb, next_rip_valid, Some(ExitReason::Cpuid)),
        exit::IOIO => decode_io_exit(vmcb),
        _ => decode_other_exit(vmcb, next_rip_valid),
    }
}

/// An exit of `reason` with no qualifications, its instruction's length
/// from the saved next RIP when the CPU saves it.
#[inline(always)]
pub fn saved_length_exit(vmcb: &Vmcb, next_rip_valid: bool, reason: Option<ExitReason>) -> Exit {
    Exit {
        reason,
        qualification: 0,
        qualification2: 0,
        guest_physical: 0,
        instruction_length: if next_rip_valid {
            length_to(vmcb, vmcb.next_rip)
        } else {
            0
        },
    }
}

/// The length of the instruction at the guest's RIP when `next` is the
/// RIP after it: 1 to 15, else 0 (unknown).
#[inline(always)]
fn length_to(vmcb: &Vmcb, next: u64) -> u32 {
    let length = next.wrapping_sub(vmcb.rip);
    if (1..=15).contains(&length) {
        length as u32
    } else {
        0
    }
}

/// [`decode_exit`] for a port-I/O exit: EXITINFO1 is the qualification
/// ([`IoExit`] follows its layout), and the length comes from EXITINFO2
/// (the next RIP, which the CPU always saves for these exits).
#[inline(always)]
pub fn decode_io_exit(vmcb: &Vmcb) -> Exit {
    Exit {
        reason: Some(ExitReason::Io),
        qualification: vmcb.exit_info1 & IoExit::FIELDS,
        qualification2: 0,
        guest_physical: 0,
        instruction_length: length_to(vmcb, vmcb.exit_info2),
    }
}

/// [`decode_exit`] for every exit but CPUID and port I/O.
#[inline(never)]
pub fn decode_other_exit(vmcb: &Vmcb, next_rip_valid: bool) -> Exit {
    let code = vmcb.exit_code;
    let (info1, info2) = (vmcb.exit_info1, vmcb.exit_info2);
    let mut exit = saved_length_exit(vmcb, next_rip_valid, None);
    exit.reason = Some(match code {
        exit::INTR | exit::NMI | exit::SMI | exit::INIT => {
            return Exit {
                reason: None,
                ..exit
            };
        }
        exit::CPUID => ExitReason::Cpuid,
        exit::HLT => ExitReason::Hlt,
        exit::VINTR => ExitReason::InterruptWindow,
        exit::IRET => ExitReason::Iret,
        exit::VMMCALL => ExitReason::Hypercall,
        exit::XSETBV => ExitReason::Xsetbv,
        exit::WRITE_CR8 => ExitReason::Cr8Write,
        exit::WRITE_CR3 => {
            if info1 & CR_ACCESS_MOV != 0 {
                exit.qualification = CR3_DECODED | (info1 & 0xf);
            }
            ExitReason::Cr3Write
        }
        exit::WBINVD => ExitReason::Wbinvd,
        exit::INVD => {
            exit.qualification = 1;
            ExitReason::Wbinvd
        }
        exit::SHUTDOWN => ExitReason::Shutdown,
        exit::INVALID => ExitReason::InvalidState,
        exit::MSR => {
            exit.qualification = info1 & 1;
            ExitReason::Msr
        }
        exit::IOIO => return decode_io_exit(vmcb),
        exit::NPF => {
            // EXITINFO1 is a page-fault error code: P, W, U, RSV, I/D.
            let mut access = 0;
            if info1 & 1 != 0 {
                access |= npf::PRESENT;
            }
            if info1 & 2 != 0 {
                access |= npf::WRITE;
            }
            if info1 & 16 != 0 {
                access |= npf::EXECUTE;
            }
            exit.qualification = access;
            exit.guest_physical = info2;
            ExitReason::NestedPageFault
        }
        0x40..=0x5f => {
            exit.qualification = code - exit::EXCEPTION_BASE;
            exit.qualification2 = info1;
            ExitReason::Exception
        }
        _ => {
            exit.qualification = info1;
            exit.qualification2 = info2;
            ExitReason::Other
        }
    });
    exit
}

/// Bytes of the I/O permission map (one bit per port, plus the spill-over
/// of a 4-byte access at port 0xffff).
pub const IOPM_BYTES: usize = 3 * 4096;
/// Bytes of the MSR permission map.
pub const MSRPM_BYTES: usize = 2 * 4096;

/// MSRs the guest reads and writes directly: the ones VMLOAD and VMSAVE
/// switch, so a guest's values never reach the host.
pub const GUEST_OWNED_MSRS: [u32; 10] = [
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
];

/// Where MSR `msr`'s read-intercept bit is in the MSR permission map (byte,
/// bit); the write bit follows it. `None` for MSRs outside the map's three
/// ranges (those are always intercepted).
pub fn msrpm_position(msr: u32) -> Option<(usize, u32)> {
    let (base, offset) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    let bit = offset as usize * 2;
    Some((base + bit / 8, (bit % 8) as u32))
}

/// Fills the MSR permission map: everything intercepted except
/// [`GUEST_OWNED_MSRS`].
pub fn fill_msrpm(map: &mut [u8; MSRPM_BYTES]) {
    map.fill(0xff);
    for msr in GUEST_OWNED_MSRS {
        if let Some((byte, bit)) = msrpm_position(msr) {
            map[byte] &= !(0b11 << bit);
        }
    }
}

/// Hands out ASIDs `1..count` (0 is the host's). A reused ASID may still
/// tag stale translations, so [`AsidAllocator::take`] says when the TLB
/// must be flushed for it.
#[derive(Clone, Copy, Debug)]
pub struct AsidAllocator {
    count: u32,
    next: u32,
    /// One bit per ASID below 64 that was ever handed out.
    used: u64,
}

impl AsidAllocator {
    /// An allocator for a CPU with `count` ASIDs (CPUID 0x8000000A EBX).
    pub const fn new(count: u32) -> Self {
        Self {
            count,
            next: 1,
            used: 0,
        }
    }

    /// The next ASID, and whether its TLB entries must be flushed before
    /// use (it was handed out before). `None` if the CPU has no guest ASID.
    pub fn take(&mut self) -> Option<(u32, bool)> {
        let limit = self.count.min(64);
        if limit < 2 {
            return None;
        }
        let asid = self.next;
        self.next = if asid + 1 >= limit { 1 } else { asid + 1 };
        let reused = self.used & (1 << asid) != 0;
        self.used |= 1 << asid;
        Some((asid, reused))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::boxed::Box;

    use microvisor_abi::vcpu::intercept;
    use zerocopy::FromZeros;

    use super::*;

    fn vmcb() -> Box<Vmcb> {
        let mut vmcb = Box::new(Vmcb::ZERO);
        vmcb.init(0x1000, 0x4000, 0x8000, 1);
        vmcb
    }

    #[test]
    fn init_sets_mandatory_intercepts_and_power_on_state() {
        let vmcb = vmcb();
        assert_eq!(vmcb.intercept_misc1 & MANDATORY_MISC1, MANDATORY_MISC1);
        assert!(vmcb.intercept_misc1 & misc1::INTR != 0);
        assert!(
            vmcb.intercept_misc2 & misc2::VMRUN != 0,
            "VMRUN must be intercepted"
        );
        assert!(
            vmcb.intercept_misc2 & misc2::XSETBV != 0,
            "XCR0 is shared: XSETBV must be intercepted"
        );
        assert_eq!(vmcb.nested_ctl, NESTED_PAGING);
        assert_eq!(vmcb.nested_cr3, 0x8000);
        assert_eq!(vmcb.efer & EFER_SVME, EFER_SVME);
        assert_eq!(vmcb.clean, 0, "a fresh VMCB has nothing cached");
        assert_eq!(vmcb.cr0 & 1, 0, "starts in real mode");
        assert_eq!(vmcb.tlb_control, TLB_FLUSH_GUEST);
    }

    #[test]
    fn optional_intercepts_never_drop_mandatory_ones() {
        let mut vmcb = vmcb();
        vmcb.clean = clean::ALL;
        vmcb.set_optional_intercepts(intercept::RDTSC | intercept::PAUSE);
        assert!(vmcb.intercept_misc1 & misc1::RDTSC != 0);
        assert!(vmcb.intercept_misc1 & misc1::PAUSE != 0);
        assert_eq!(vmcb.clean & clean::INTERCEPTS, 0);
        vmcb.set_optional_intercepts(0);
        assert_eq!(vmcb.intercept_misc1, MANDATORY_MISC1);
        assert_eq!(vmcb.intercept_misc2, MANDATORY_MISC2);
        vmcb.set_optional_intercepts(u64::MAX);
        assert_eq!(vmcb.intercept_misc1 & MANDATORY_MISC1, MANDATORY_MISC1);
    }

    #[test]
    fn cpuid_exit_writes_back_only_rip_and_rax_to_rdx() {
        let mut vmcb = vmcb();
        vmcb.clean = clean::ALL;
        vmcb.cr0 = 0x8000_0011;
        let mut state = VcpuState::new_zeroed();
        read_out(&vmcb, &mut state);
        state.gpr[gpr::RAX] = 1;
        state.gpr[gpr::RBX] = 2;
        state.gpr[gpr::RCX] = 3;
        state.gpr[gpr::RDX] = 4;
        state.gpr[gpr::RSP] = 99; // changed but not marked: must not land
        state.rip = 0x1234;
        state.cr0 = 0; // likewise
        let mask = dirty::RAX | dirty::RBX | dirty::RCX | dirty::RDX | dirty::RIP;
        let writes = write_back(&mut vmcb, &state, mask);
        assert_eq!(writes, mask);
        assert_eq!(vmcb.rax, 1);
        assert_eq!(vmcb.rsp, 0);
        assert_eq!(vmcb.rip, 0x1234);
        assert_eq!(vmcb.cr0, 0x8000_0011);
        assert_eq!(vmcb.clean, clean::ALL, "no cached group was touched");
    }

    #[test]
    fn write_back_clears_exactly_the_touched_clean_bits() {
        let cases = [
            (dirty::CR0, clean::CONTROL_REGISTERS),
            (dirty::EFER, clean::CONTROL_REGISTERS),
            (dirty::CR2, clean::CR2),
            (dirty::SS, clean::SEGMENTS),
            (dirty::IDTR, clean::DESCRIPTOR_TABLES),
            (dirty::FS | dirty::TR, 0),
            (dirty::RIP | dirty::RFLAGS | dirty::GPRS, 0),
        ];
        for (mask, cleared) in cases {
            let mut vmcb = vmcb();
            vmcb.clean = clean::ALL;
            let state = VcpuState::new_zeroed();
            write_back(&mut vmcb, &state, mask);
            assert_eq!(vmcb.clean, clean::ALL & !cleared, "mask {mask:#x}");
        }
    }

    #[test]
    fn efer_keeps_svme_and_hides_it() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.efer = 0x500; // LME | LMA
        write_back(&mut vmcb, &state, dirty::EFER);
        assert_eq!(vmcb.efer, 0x500 | EFER_SVME);
        let mut out = VcpuState::new_zeroed();
        read_out(&vmcb, &mut out);
        assert_eq!(out.efer, 0x500);
    }

    #[test]
    fn cpl_follows_ss_in_protected_mode() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.ss.attributes = 0x93 | (3 << 5);
        write_back(&mut vmcb, &state, dirty::SS);
        assert_eq!(vmcb.cpl, 0, "real mode runs at CPL 0");
        vmcb.cr0 = 1;
        write_back(&mut vmcb, &state, dirty::SS);
        assert_eq!(vmcb.cpl, 3);
    }

    #[test]
    fn injection_accepts_only_valid_events() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.inject = event::GP0;
        write_back(&mut vmcb, &state, dirty::INJECT);
        assert_eq!(vmcb.event_inject, event::GP0);
        state.inject = (1 << 31) | (1 << 8) | 3; // reserved type 1
        write_back(&mut vmcb, &state, dirty::INJECT);
        assert_eq!(vmcb.event_inject, 0);
        state.inject = event::UD | 0x7000; // reserved bits dropped
        write_back(&mut vmcb, &state, dirty::INJECT);
        assert_eq!(vmcb.event_inject, event::UD);
    }

    #[test]
    fn rflags_reserved_bits_are_forced() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.rflags = u64::MAX;
        write_back(&mut vmcb, &state, dirty::RFLAGS);
        assert_eq!(vmcb.rflags & 0x2, 0x2);
        assert_eq!(vmcb.rflags & (1 << 3 | 1 << 5 | 1 << 15 | 1 << 22), 0);
    }

    #[test]
    fn read_out_round_trips_through_write_back() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        for (n, value) in state.gpr.iter_mut().enumerate() {
            *value = 0x100 + n as u64;
        }
        state.rip = 0x10_0000;
        state.rflags = 0x202;
        state.cr0 = 0x8000_0011;
        state.cr3 = 0x1f_0000;
        state.cr4 = 0x20;
        state.efer = 0x500;
        state.cs = Segment {
            selector: 8,
            attributes: 0xa9b,
            limit: 0xffff_ffff,
            base: 0,
        };
        state.gdtr.limit = 23;
        state.gdtr.base = 0x1f_f000;
        write_back(&mut vmcb, &state, dirty::ALL & !dirty::INJECT);
        let mut out = state;
        read_out(&vmcb, &mut out);
        assert_eq!(out.gpr, state.gpr);
        assert_eq!(out.published, published::ALL);
        assert_eq!((out.rip, out.rflags), (state.rip, state.rflags));
        assert_eq!(
            (out.cr0, out.cr3, out.cr4, out.efer),
            (state.cr0, state.cr3, state.cr4, state.efer)
        );
        assert_eq!(out.cs, state.cs);
        assert_eq!(out.gdtr, state.gdtr);
    }

    #[test]
    fn segments_are_published_only_where_an_exit_needs_them() {
        let mut vmcb = vmcb();
        vmcb.ds.base = 0x1234_0000;
        vmcb.gdtr.base = 0x9000;
        vmcb.cr3 = 0x5000;
        vmcb.efer = 0x500 | EFER_SVME;
        let publish = |vmcb: &mut Vmcb, code: u64, info1: u64| {
            vmcb.exit_code = code;
            vmcb.exit_info1 = info1;
            let mut state = VcpuState::new_zeroed();
            let exit = decode_exit(vmcb, false);
            let reason = exit.reason.unwrap();
            publish_exit(vmcb, &mut state, &exit, reason, (windows(vmcb), 0), 0);
            state
        };
        // Neither group.
        for (code, info1) in [(exit::CPUID, 0), (exit::IOIO, 0x3f8 << 16 | 1 << 4)] {
            let state = publish(&mut vmcb, code, info1);
            assert_eq!(state.published, 0, "exit {code:#x}");
            assert_eq!((state.ds.base, state.gdtr.base), (0, 0));
            assert_eq!((state.cr3, state.efer), (0, 0));
        }
        // The control registers only.
        for (code, info1) in [
            (exit::MSR, 1),
            (exit::HLT, 0),
            (exit::WBINVD, 0),
            (exit::VINTR, 0),
            (exit::IRET, 0),
        ] {
            let state = publish(&mut vmcb, code, info1);
            assert_eq!(state.published, published::CONTROL, "exit {code:#x}");
            assert_eq!((state.ds.base, state.gdtr.base), (0, 0));
            assert_eq!((state.cr3, state.efer), (0x5000, 0x500));
        }
        // Both.
        let string_io = 0x3f8 << 16 | 1 << 4 | 1 << 2;
        for (code, info1) in [(exit::NPF, 2), (exit::IOIO, string_io), (exit::VMMCALL, 0)] {
            let state = publish(&mut vmcb, code, info1);
            assert_eq!(state.published, published::ALL, "exit {code:#x}");
            assert_eq!((state.ds.base, state.gdtr.base), (0x1234_0000, 0x9000));
            assert_eq!((state.cr3, state.efer), (0x5000, 0x500));
        }
        // A fetch publishes only the stale groups: after an exit that
        // published the control registers, an edit of CR3 not named in
        // `keep` survives, and the segments are read.
        let mut state = publish(&mut vmcb, exit::MSR, 1);
        state.cr3 = 0x66;
        fetch_stale(&vmcb, &mut state, 0);
        assert_eq!((state.cr3, state.ds.base), (0x66, 0x1234_0000));
        assert_eq!(state.published, published::ALL);
        // After a CPUID exit both groups are read, but the edits named.
        let mut state = publish(&mut vmcb, exit::CPUID, 0);
        state.cr3 = 0x66;
        state.efer = 0x77;
        fetch_stale(&vmcb, &mut state, dirty::EFER);
        assert_eq!((state.cr3, state.efer), (0x5000, 0x77));
        assert_eq!(state.published, published::ALL);
        // A fetch keeps the world switcher's unwritten edits.
        let mut state = VcpuState::new_zeroed();
        state.ds.base = 0x77;
        state.cr3 = 0x88;
        read_out_segments_except(&vmcb, &mut state, dirty::DS | dirty::CR3);
        read_out_control_except(&vmcb, &mut state, dirty::DS | dirty::CR3);
        assert_eq!((state.ds.base, state.gdtr.base), (0x77, 0x9000));
        assert_eq!((state.cr3, state.efer), (0x88, 0x500));
        assert_eq!(state.published, published::ALL);
    }

    fn exit_of(code: u64, info1: u64, info2: u64) -> Exit {
        let mut vmcb = vmcb();
        vmcb.exit_code = code;
        vmcb.exit_info1 = info1;
        vmcb.exit_info2 = info2;
        vmcb.rip = 0x1000;
        decode_exit(&vmcb, false)
    }

    #[test]
    fn decodes_io_exits() {
        // OUT dx, al to 0x3f8: type 0 (out), SZ8, port in 16..32, next RIP.
        let exit = exit_of(exit::IOIO, (0x3f8 << 16) | (1 << 4), 0x1001);
        assert_eq!(exit.reason, Some(ExitReason::Io));
        let io = IoExit::decode(exit.qualification);
        assert_eq!(
            (io.port, io.size, io.input, io.string, io.rep),
            (0x3f8, 1, false, false, false)
        );
        assert_eq!(exit.instruction_length, 1);
        // REP INSW from 0x1f0, 2-byte instruction.
        let exit = exit_of(
            exit::IOIO,
            (0x1f0 << 16) | (1 << 5) | (1 << 3) | (1 << 2) | 1,
            0x1002,
        );
        let io = IoExit::decode(exit.qualification);
        assert_eq!(
            (io.port, io.size, io.input, io.string, io.rep),
            (0x1f0, 2, true, true, true)
        );
        assert_eq!(exit.instruction_length, 2);
        // 32-bit IN: size 4.
        let exit = exit_of(exit::IOIO, (0xf4 << 16) | (1 << 6) | 1, 0x1002);
        assert_eq!(IoExit::decode(exit.qualification).size, 4);
        // The address-size (7..10) and segment (10..13) bits the CPU also
        // sets are not published.
        let exit = exit_of(
            exit::IOIO,
            (0x3f8 << 16) | (1 << 4) | (1 << 8) | (3 << 10),
            0x1001,
        );
        assert_eq!(exit.qualification, (0x3f8 << 16) | (1 << 4));
    }

    #[test]
    fn decodes_other_exits() {
        assert_eq!(exit_of(exit::CPUID, 0, 0).reason, Some(ExitReason::Cpuid));
        assert_eq!(
            exit_of(exit::CPUID, 0, 0).instruction_length,
            0,
            "no NRIP save"
        );
        assert_eq!(exit_of(exit::HLT, 0, 0).reason, Some(ExitReason::Hlt));
        assert_eq!(
            exit_of(exit::VMMCALL, 0, 0).reason,
            Some(ExitReason::Hypercall)
        );
        assert_eq!(
            exit_of(exit::SHUTDOWN, 0, 0).reason,
            Some(ExitReason::Shutdown)
        );
        assert_eq!(
            exit_of(exit::INVALID, 0, 0).reason,
            Some(ExitReason::InvalidState)
        );
        assert_eq!(exit_of(exit::XSETBV, 0, 0).reason, Some(ExitReason::Xsetbv));
        assert_eq!(exit_of(exit::INTR, 0, 0).reason, None, "host interrupt");
        assert_eq!(exit_of(exit::NMI, 0, 0).reason, None);
        let msr = exit_of(exit::MSR, 1, 0);
        assert_eq!((msr.reason, msr.qualification), (Some(ExitReason::Msr), 1));
        let npf = exit_of(exit::NPF, 0b10110, 0x4000_0000);
        assert_eq!(npf.reason, Some(ExitReason::NestedPageFault));
        assert_eq!(npf.guest_physical, 0x4000_0000);
        assert_eq!(npf.qualification, npf::WRITE | npf::EXECUTE);
        let mc = exit_of(exit::EXCEPTION_BASE + 18, 0, 0);
        assert_eq!(
            (mc.reason, mc.qualification),
            (Some(ExitReason::Exception), 18)
        );
        let other = exit_of(0x6e, 7, 8);
        assert_eq!(
            (other.reason, other.qualification),
            (Some(ExitReason::Other), 7)
        );
    }

    #[test]
    fn next_rip_gives_lengths_when_the_cpu_saves_it() {
        let mut vmcb = vmcb();
        vmcb.exit_code = exit::CPUID;
        vmcb.rip = 0x1000;
        vmcb.next_rip = 0x1002;
        assert_eq!(decode_exit(&vmcb, true).instruction_length, 2);
        vmcb.next_rip = 0x0fff; // nonsense: unknown
        assert_eq!(decode_exit(&vmcb, true).instruction_length, 0);
    }

    #[test]
    fn msr_map_passes_only_guest_owned_msrs() {
        let mut map = Box::new([0u8; MSRPM_BYTES]);
        fill_msrpm(&mut map);
        let intercepted = |msr: u32| {
            let (byte, bit) = msrpm_position(msr).unwrap();
            (map[byte] >> bit) & 0b11
        };
        for msr in GUEST_OWNED_MSRS {
            assert_eq!(intercepted(msr), 0, "{msr:#x}");
        }
        assert_eq!(intercepted(0xc000_0080), 0b11, "EFER is emulated");
        assert_eq!(intercepted(0x1b), 0b11, "APIC base");
        assert_eq!(intercepted(0xc001_0117), 0b11, "the host save area MSR");
        assert_eq!(msrpm_position(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_position(0x4000_0000), None);
    }

    #[test]
    fn cr3_writes_are_intercepted_on_request_and_decoded() {
        let mut vmcb = vmcb();
        vmcb.set_optional_intercepts(intercept::CR3_WRITE);
        assert_eq!(vmcb.intercept_cr, INTERCEPT_CR3_WRITE);
        // An interrupt window's CR8 intercept comes and goes; CR3's stays.
        let mut state = VcpuState::new_zeroed();
        let mut pending = 0;
        state.interrupt_window = window::INTERRUPT;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_cr, INTERCEPT_CR3_WRITE | INTERCEPT_CR8_WRITE);
        state.interrupt_window = 0;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_cr, INTERCEPT_CR3_WRITE);
        // Without decode assists (QEMU's TCG) the switcher decodes.
        vmcb.exit_code = exit::WRITE_CR3;
        vmcb.exit_info1 = 0;
        let decoded = finish_exit(&mut vmcb, false, &mut pending);
        assert_eq!(decoded.reason, Some(ExitReason::Cr3Write));
        assert_eq!(decoded.qualification, 0);
        vmcb.exit_code = exit::WRITE_CR3;
        vmcb.exit_info1 = CR_ACCESS_MOV | 11;
        let decoded = finish_exit(&mut vmcb, false, &mut pending);
        assert_eq!(decoded.qualification, CR3_DECODED | 11);
        // The switcher's new CR3 flushes the guest's TLB, once.
        state.cr3 = 0x5000;
        write_back(&mut vmcb, &state, dirty::CR3 | dirty::RIP);
        assert_eq!((vmcb.cr3, vmcb.tlb_control), (0x5000, TLB_FLUSH_GUEST));
        finish_exit(&mut vmcb, false, &mut pending);
        assert_eq!(vmcb.tlb_control, 0);
        vmcb.set_optional_intercepts(0);
        assert_eq!(vmcb.intercept_cr, 0);
    }

    #[test]
    fn wbinvd_and_invd_are_one_neutral_exit() {
        let mut vmcb = vmcb();
        let mut pending = 0;
        vmcb.set_optional_intercepts(intercept::WBINVD);
        assert!(vmcb.intercept_misc2 & misc2::WBINVD != 0);
        for (code, qualification) in [(exit::WBINVD, 0), (exit::INVD, 1)] {
            vmcb.exit_code = code;
            let decoded = finish_exit(&mut vmcb, false, &mut pending);
            assert_eq!(decoded.reason, Some(ExitReason::Wbinvd));
            assert_eq!(decoded.qualification, qualification);
        }
    }

    #[test]
    fn an_interrupted_event_is_kept_and_reinjected_once() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        let mut pending = 0;
        // An exit in the middle of delivering vector 0x20.
        vmcb.exit_code = exit::NPF;
        vmcb.exit_int_info = (1 << 31) | 0x20;
        vmcb.tlb_control = TLB_FLUSH_GUEST;
        vmcb.event_inject = 5;
        let decoded = finish_exit(&mut vmcb, false, &mut pending);
        assert_eq!(pending, (1 << 31) | 0x20);
        assert_eq!(vmcb.clean, clean::ALL);
        assert_eq!((vmcb.tlb_control, vmcb.event_inject), (0, 0));
        let reason = decoded.reason.unwrap();
        publish_exit(
            &vmcb,
            &mut state,
            &decoded,
            reason,
            (windows(&vmcb), pending),
            0,
        );
        assert_eq!(state.exit_event, pending);
        assert_eq!(state.raw_exit, exit::NPF);
        assert_eq!(state.exit_reason, reason as u32);
        // Re-injected at the next entry, then forgotten.
        prepare_entry(&mut vmcb, &mut state, 0, &mut pending, true);
        assert_eq!(vmcb.event_inject, (1 << 31) | 0x20);
        assert_eq!(pending, 0);
        assert_eq!(state.entries, 1);
        // Unless the world switcher injects an event itself.
        pending = (1 << 31) | 0x21;
        state.inject = (1 << 31) | 0x30;
        prepare_entry(&mut vmcb, &mut state, dirty::INJECT, &mut pending, false);
        assert_eq!(pending, (1 << 31) | 0x21, "kept for later");
        assert_eq!(vmcb.clean, 0, "no clean bits without the CPU's support");
        assert_eq!(state.last_writes, dirty::INJECT);
    }

    #[test]
    fn cr8_is_published_and_written_back_and_windows_can_wait_for_it() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        // The guest's MOV to CR8 lands in V_TPR: published at the exit.
        vmcb.int_ctl |= 7;
        read_out(&vmcb, &mut state);
        assert_eq!(state.cr8, 7);
        // Written back only with its bit, and only the TPR's four bits.
        vmcb.clean = clean::ALL;
        state.cr8 = 0x12;
        write_back(&mut vmcb, &state, dirty::RIP);
        assert_eq!(vmcb.int_ctl & V_TPR, 7);
        write_back(&mut vmcb, &state, dirty::CR8);
        assert_eq!(vmcb.int_ctl & V_TPR, 2);
        assert!(vmcb.int_ctl & V_INTR_MASKING != 0);
        assert_eq!(vmcb.clean & clean::TPR, 0);
        // CR8 writes exit when asked for, and during every interrupt
        // window; the report shows CR8 only when asked alone.
        state.interrupt_window = window::CR8;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_cr, INTERCEPT_CR8_WRITE);
        assert_eq!(vmcb.int_ctl & V_IRQ, 0, "no window");
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, window::CR8);
        state.interrupt_window = window::INTERRUPT;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_cr, INTERCEPT_CR8_WRITE);
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, window::INTERRUPT);
        state.interrupt_window = 0;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_cr, 0);
        assert_eq!(vmcb.int_ctl & V_TPR, 2, "the TPR is not the window's");
        // The exit.
        assert_eq!(
            exit_of(exit::WRITE_CR8, 0, 0).reason,
            Some(ExitReason::Cr8Write)
        );
    }

    #[test]
    fn the_interrupt_window_is_requested_reported_and_cancelled() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        vmcb.clean = clean::ALL;
        state.interrupt_window = 1;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.int_ctl & (V_IRQ | V_IGN_TPR), V_IRQ | V_IGN_TPR);
        assert!(vmcb.intercept_misc1 & misc1::VINTR != 0);
        assert_eq!(vmcb.clean & (clean::TPR | clean::INTERCEPTS), 0);
        assert!(
            vmcb.int_ctl & V_INTR_MASKING != 0,
            "host interrupts stay the host's"
        );
        // Optional intercepts keep the request.
        vmcb.set_optional_intercepts(intercept::RDTSC);
        assert!(vmcb.intercept_misc1 & misc1::VINTR != 0);
        // The exit is decoded and the request shows as pending.
        let exit = exit_of(exit::VINTR, 0, 0);
        assert_eq!(exit.reason, Some(ExitReason::InterruptWindow));
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, 1);
        // Cancelled.
        state.interrupt_window = 0;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.int_ctl & (V_IRQ | V_IGN_TPR), 0);
        assert_eq!(vmcb.intercept_misc1 & misc1::VINTR, 0);
        assert!(vmcb.int_ctl & V_INTR_MASKING != 0);
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, 0);
        // Not written back without its dirty bit.
        state.interrupt_window = 1;
        write_back(&mut vmcb, &state, dirty::RIP);
        assert_eq!(vmcb.intercept_misc1 & misc1::VINTR, 0);
    }

    #[test]
    fn the_iret_exit_is_requested_reported_and_cancelled_by_itself() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.interrupt_window = window::IRET | window::INTERRUPT;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert!(vmcb.intercept_misc1 & misc1::IRET != 0);
        assert!(vmcb.intercept_misc1 & misc1::VINTR != 0);
        // Optional intercepts leave it alone.
        vmcb.set_optional_intercepts(0);
        assert!(vmcb.intercept_misc1 & misc1::IRET != 0);
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, window::IRET | window::INTERRUPT);
        // The exit itself: reported, and the request gone.
        vmcb.exit_code = exit::IRET;
        vmcb.exit_int_info = 0;
        vmcb.clean = 0;
        let mut pending = 0;
        let exit = finish_exit(&mut vmcb, false, &mut pending);
        assert_eq!(exit.reason, Some(ExitReason::Iret));
        assert_eq!(vmcb.intercept_misc1 & misc1::IRET, 0);
        assert_eq!(
            vmcb.clean & clean::INTERCEPTS,
            0,
            "the CPU must reload them"
        );
        read_out(&vmcb, &mut state);
        assert_eq!(state.interrupt_window, window::INTERRUPT);
        // Cancelled by the world switcher.
        state.interrupt_window = window::IRET;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        state.interrupt_window = 0;
        write_back(&mut vmcb, &state, dirty::INTERRUPT_WINDOW);
        assert_eq!(vmcb.intercept_misc1 & (misc1::IRET | misc1::VINTR), 0);
    }

    #[test]
    fn an_interrupted_run_publishes_where_the_guest_is() {
        let mut vmcb = vmcb();
        let mut state = VcpuState::new_zeroed();
        state.rip = 0x1000; // the last exit's
        state.gpr[1] = 7; // saved into the page by the entry code
        vmcb.rip = 0x2000;
        vmcb.rflags = 0x2; // interrupts now off
        let pending = event::interrupt(0x30);
        publish_guest(&vmcb, &mut state, pending);
        let mut unapplied = Unapplied::NONE;
        unapplied.end_early(&mut state, ExitReason::TimeLimit, 0);
        assert_eq!((state.rip, state.rflags), (0x2000, 0x2));
        assert_eq!(state.gpr[1], 7);
        assert_eq!(state.published, published::ALL);
        assert_eq!(state.exit_event, pending);
        assert_eq!(state.exit_reason, ExitReason::TimeLimit as u32);
    }

    #[test]
    fn early_exits_change_only_the_exit_fields() {
        let mut state = VcpuState::new_zeroed();
        state.rip = 0x1234;
        state.raw_exit = 9;
        let mut unapplied = Unapplied::NONE;
        unapplied.end_early(&mut state, ExitReason::Poked, 0);
        assert_eq!(state.exit_reason, ExitReason::Poked as u32);
        assert_eq!(
            (state.raw_exit, state.instruction_length, state.rip),
            (0, 0, 0x1234)
        );
        assert_eq!((state.exit_event, unapplied.with(0)), (0, 0));
    }

    #[test]
    fn early_exits_keep_their_mask_for_the_next_entry() {
        let mut state = VcpuState::new_zeroed();
        let mut vmcb = vmcb();
        let mut pending = 0;
        let mut unapplied = Unapplied::NONE;
        // An emulated OUT (RIP advanced) and an interrupt injected, then
        // a poke ends the run before it enters; a time limit the next.
        state.rip = 0x1002;
        state.inject = event::interrupt(0xec);
        unapplied.end_early(&mut state, ExitReason::Poked, dirty::RIP | dirty::INJECT);
        // The injection is reported pending, so the arbiter adds no other.
        assert_eq!(state.exit_event, event::interrupt(0xec));
        unapplied.end_early(&mut state, ExitReason::TimeLimit, dirty::RAX);
        let mask = unapplied.with(0);
        assert_eq!(mask, dirty::RIP | dirty::INJECT | dirty::RAX);
        prepare_entry(&mut vmcb, &mut state, mask, &mut pending, true);
        assert_eq!(vmcb.rip, 0x1002);
        assert_eq!(vmcb.event_inject, event::interrupt(0xec));
        // Taken once.
        assert_eq!(unapplied.with(dirty::RIP), dirty::RIP);
    }

    /// A kept [`windows`] value, updated only where its documentation
    /// says the core changes the intercepts, always equals the VMCB's,
    /// whatever the world switcher asks for and however the guest exits.
    #[test]
    fn kept_windows_follow_the_intercepts() {
        use proptest::prelude::*;
        let operations = prop::collection::vec((0u8..4, any::<u64>(), 0u8..8), 1..200);
        proptest!(|(operations in operations)| {
            let mut vmcb = vmcb();
            let mut state = VcpuState::new_zeroed();
            let mut pending = 0;
            let mut kept = windows(&vmcb);
            for (kind, bits, requests) in operations {
                match kind {
                    0 => {
                        state.interrupt_window = u64::from(requests);
                        let mask = bits & dirty::ALL;
                        prepare_entry(&mut vmcb, &mut state, mask, &mut pending, bits & 1 != 0);
                        if mask & dirty::INTERRUPT_WINDOW != 0 {
                            kept = windows(&vmcb);
                        }
                    }
                    1 => vmcb.set_optional_intercepts(bits & intercept::ALL),
                    2 => {
                        let codes = [exit::IRET, exit::VINTR, exit::CPUID, exit::IOIO, exit::WRITE_CR8, exit::INTR];
                        vmcb.exit_code = codes[bits as usize % codes.len()];
                        finish_exit(&mut vmcb, false, &mut pending);
                        if vmcb.exit_code == exit::IRET {
                            kept = windows(&vmcb);
                        }
                    }
                    _ => {
                        vmcb.init(0x1000, 0x2000, 0x3000, 1);
                        kept = windows(&vmcb);
                    }
                }
                prop_assert_eq!(kept, windows(&vmcb));
                read_out_common_with(&vmcb, &mut state, kept);
                let published = state.interrupt_window;
                read_out_common(&vmcb, &mut state);
                prop_assert_eq!(published, state.interrupt_window);
            }
        });
    }

    #[test]
    fn asids_wrap_and_ask_for_flushes_on_reuse() {
        let mut asids = AsidAllocator::new(4);
        assert_eq!(asids.take(), Some((1, false)));
        assert_eq!(asids.take(), Some((2, false)));
        assert_eq!(asids.take(), Some((3, false)));
        assert_eq!(asids.take(), Some((1, true)), "reused: flush");
        assert_eq!(AsidAllocator::new(1).take(), None);
    }
}
