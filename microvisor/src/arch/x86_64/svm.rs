//! The AMD SVM backend: enabling SVM and entering a guest.
//!
//! [`Svm::enable`] checks the CPU (SVM, nested paging, not disabled by the
//! firmware), turns on EFER.SVME, gives the CPU its host save area, and
//! builds the permission maps every VM shares: the I/O map intercepts every
//! port, the MSR map everything but the MSRs VMLOAD/VMSAVE switch (see
//! [`microvisor::vmcb::fill_msrpm`]). [`enter`] runs a guest until its next
//! exit. The data side — the VMCB, exit decoding, state write-back — is in
//! the host-tested [`microvisor::vmcb`]; this module has the instructions.
//!
//! Entry sequence: with GIF clear (CLGI) the host's VMLOAD-class state is
//! saved to the host VMCB (VMSAVE), the guest's loaded (VMLOAD), and RFLAGS.IF
//! set, because with V_INTR_MASKING the host's IF decides whether physical
//! interrupts end guest mode. VMRUN sets GIF and enters; any exit clears GIF
//! again, so after saving the guest's and reloading the host's state the
//! core clears IF before STGI: an interrupt that caused the exit stays
//! pending until the core returns to ring 3, where it is taken like any
//! other.

use core::arch::global_asm;

use microvisor::address::PhysicalAddress;
use microvisor::frame::FrameAllocator;
use microvisor::vmcb::{self, AsidAllocator, IOPM_BYTES, MSRPM_BYTES};

use super::cpu::{self, msr};
use super::memory::direct;

/// VM_CR: bit 4 (SVMDIS) set means the firmware disabled SVM.
const VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA: where VMRUN saves host state.
const VM_HSAVE_PA: u32 = 0xc001_0117;

/// What the CPU offers and what the core set up for every VM.
pub struct Svm {
    pub iopm: PhysicalAddress,
    pub msrpm: PhysicalAddress,
    /// VMSAVE/VMLOAD area for the host's own FS/GS/TR/LDTR/syscall MSRs.
    pub host: PhysicalAddress,
    pub asids: AsidAllocator,
    /// Guest ASIDs the CPU offers (CPUID 8000_000A EBX).
    pub asid_count: u32,
    /// The CPU writes `next_rip` at exits (NRIP save).
    pub next_rip: bool,
    /// The CPU honours VMCB clean bits.
    pub vmcb_clean: bool,
    /// TLB_CONTROL may flush one ASID (else it flushes everything).
    pub flush_by_asid: bool,
    /// XCR0 as the core keeps it, on a CPU with XSAVE (CR4.OSXSAVE is
    /// then set so the core can read XCR0): see [`Svm::restore_xcr0`].
    pub xcr0: Option<u64>,
    /// The CPU has `TSC_AUX` (RDTSCP or RDPID): see [`Svm::load_tsc_aux`].
    pub tsc_aux: bool,
}

/// Why guests cannot run on this machine.
#[derive(Clone, Copy, Debug)]
pub enum Unavailable {
    NoSvm,
    NoNestedPaging,
    DisabledByFirmware,
    NoAsids,
    OutOfMemory,
}

impl core::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoSvm => "the CPU has no AMD SVM (CPUID 8000_0001 ECX bit 2)",
            Self::NoNestedPaging => {
                "the CPU has SVM but no nested paging (CPUID 8000_000A EDX bit 0)"
            }
            Self::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            Self::NoAsids => "the CPU offers no guest ASIDs",
            Self::OutOfMemory => "out of memory for the SVM permission maps",
        })
    }
}

fn zeroed_frames(frames: &mut FrameAllocator<'_>, count: u64) -> Option<PhysicalAddress> {
    let first = frames.allocate_contiguous(count)?;
    // SAFETY: fresh frames from the allocator, in the direct map.
    unsafe { core::ptr::write_bytes(direct(first), 0, (count * 4096) as usize) };
    Some(first)
}

impl Svm {
    /// Checks the CPU and enables SVM (once, at boot, before any guest).
    pub fn enable(frames: &mut FrameAllocator<'_>) -> Result<Self, Unavailable> {
        let extended_max = cpu::cpuid(0x8000_0000, 0)[0];
        if extended_max < 0x8000_000a || cpu::cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0 {
            return Err(Unavailable::NoSvm);
        }
        let [_, asid_count, _, features] = cpu::cpuid(0x8000_000a, 0);
        if features & 1 == 0 {
            return Err(Unavailable::NoNestedPaging);
        }
        if cpu::read_msr(VM_CR) & (1 << 4) != 0 {
            return Err(Unavailable::DisabledByFirmware);
        }
        let asids = AsidAllocator::new(asid_count);
        if asids.clone().take().is_none() {
            return Err(Unavailable::NoAsids);
        }
        let iopm =
            zeroed_frames(frames, (IOPM_BYTES / 4096) as u64).ok_or(Unavailable::OutOfMemory)?;
        let msrpm =
            zeroed_frames(frames, (MSRPM_BYTES / 4096) as u64).ok_or(Unavailable::OutOfMemory)?;
        let host = zeroed_frames(frames, 1).ok_or(Unavailable::OutOfMemory)?;
        let save_area = zeroed_frames(frames, 1).ok_or(Unavailable::OutOfMemory)?;
        // SAFETY: the maps are fresh frames of exactly these sizes in the
        // direct map, owned by the core for the life of the system.
        unsafe {
            core::ptr::write_bytes(direct(iopm), 0xff, IOPM_BYTES);
            vmcb::fill_msrpm(&mut *direct(msrpm).cast::<[u8; MSRPM_BYTES]>());
        }
        // SAFETY: SVME only enables the SVM instructions; the save area is
        // a page the core owns and never uses otherwise.
        unsafe {
            cpu::write_msr(msr::EFER, cpu::read_msr(msr::EFER) | vmcb::EFER_SVME);
            cpu::write_msr(VM_HSAVE_PA, save_area.0);
        }
        let xcr0 = if cpu::cpuid(1, 0)[2] & (1 << 26) != 0 {
            // SAFETY: the CPU has XSAVE, so CR4.OSXSAVE exists; it only
            // enables the XSAVE instructions (XSETBV stays ring 0, and
            // XCR0 keeps its reset value, x87 alone).
            unsafe {
                cpu::write_cr4(cpu::read_cr4() | cpu::cr4::OSXSAVE);
                Some(cpu::xgetbv(0))
            }
        } else {
            None
        };
        let tsc_aux = cpu::cpuid(0x8000_0001, 0)[3] & (1 << 27) != 0
            || (cpu::cpuid(0, 0)[0] >= 7 && cpu::cpuid(7, 0)[2] & (1 << 22) != 0);
        if tsc_aux {
            // SAFETY: the CPU has the MSR (RDTSCP or RDPID); the core
            // never reads it, and 0 is the value it keeps there.
            unsafe { cpu::write_msr(msr::TSC_AUX, 0) };
        }
        Ok(Self {
            iopm,
            msrpm,
            host,
            asids,
            asid_count,
            next_rip: features & (1 << 3) != 0,
            vmcb_clean: features & (1 << 5) != 0,
            flush_by_asid: features & (1 << 6) != 0,
            xcr0,
            tsc_aux,
        })
    }

    /// Puts a guest's `TSC_AUX` in the CPU for its entry (VMRUN does not
    /// switch it); `true` when [`Svm::clear_tsc_aux`] must follow the
    /// exit. A value of 0, or a CPU without the MSR, costs nothing.
    #[inline(always)]
    pub fn load_tsc_aux(&self, value: u32) -> bool {
        if !self.tsc_aux || value == 0 {
            return false;
        }
        // SAFETY: the CPU has the MSR; nothing in the core reads it, and
        // `clear_tsc_aux` puts 0 back before anything else runs.
        unsafe { cpu::write_msr(msr::TSC_AUX, u64::from(value)) };
        true
    }

    /// After an exit: `TSC_AUX` back to the core's 0, so no component or
    /// other guest reads this guest's value.
    #[inline(always)]
    pub fn clear_tsc_aux(&self) {
        // SAFETY: called only after `load_tsc_aux` wrote the MSR, which
        // the CPU therefore has.
        unsafe { cpu::write_msr(msr::TSC_AUX, 0) };
    }

    /// After a guest ran: `None` when XCR0 is as the core keeps it, else
    /// the value the guest gave it. XSETBV is always intercepted, but a CPU
    /// that ignores the intercept (QEMU's TCG does) lets a guest write the
    /// XCR0 every guest and the core share; the core then erases the
    /// extended state the guest enabled (its registers may hold the
    /// guest's data) and restores XCR0 before anything else runs.
    #[inline(always)]
    pub fn restore_xcr0(&self) -> Option<u64> {
        let kept = self.xcr0?;
        // SAFETY: `xcr0` is `Some` only when `enable` set CR4.OSXSAVE.
        let found = unsafe { cpu::xgetbv(0) };
        if found == kept {
            return None;
        }
        reset_xcr0(kept, found);
        Some(found)
    }

    /// The TLB_CONTROL value that flushes a reused ASID.
    pub fn flush_value(&self) -> u8 {
        if self.flush_by_asid {
            vmcb::TLB_FLUSH_GUEST
        } else {
            vmcb::TLB_FLUSH_ALL
        }
    }
}

/// Erases the extended state a guest enabled in `found` and puts XCR0
/// back to `kept`.
#[cold]
fn reset_xcr0(kept: u64, found: u64) {
    // SAFETY: CR4.OSXSAVE is set (the caller found XCR0 readable); the
    // components initialized are those of the XCR0 in force (`found`)
    // beyond x87 and SSE, whose registers the core switches per VM; the
    // value restored is the one the CPU had at boot.
    unsafe {
        cpu::xrstor_initial(found & !0b11);
        cpu::xsetbv0(kept);
    }
}

global_asm!(
    r#"
    .pushsection .text.svm, "ax"
    .balign 16
    .global svm_enter
// svm_enter(vmcb: rdi, registers: rsi, host: rdx); `registers` is the
// state page's `gpr` array (the RAX and RSP slots are the VMCB's, not
// touched here)
svm_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdx
    push rsi
    clgi
    mov rax, rdx
    vmsave rax
    mov rax, rdi
    mov rcx, [rsi + 1 * 8]
    mov rdx, [rsi + 2 * 8]
    mov rbx, [rsi + 3 * 8]
    mov rbp, [rsi + 5 * 8]
    mov rdi, [rsi + 7 * 8]
    mov r8, [rsi + 8 * 8]
    mov r9, [rsi + 9 * 8]
    mov r10, [rsi + 10 * 8]
    mov r11, [rsi + 11 * 8]
    mov r12, [rsi + 12 * 8]
    mov r13, [rsi + 13 * 8]
    mov r14, [rsi + 14 * 8]
    mov r15, [rsi + 15 * 8]
    mov rsi, [rsi + 6 * 8]
    vmload rax
    sti
    vmrun rax
    vmsave rax
    push rsi
    mov rsi, [rsp + 8]
    mov [rsi + 1 * 8], rcx
    mov [rsi + 2 * 8], rdx
    mov [rsi + 3 * 8], rbx
    mov [rsi + 5 * 8], rbp
    mov [rsi + 7 * 8], rdi
    mov [rsi + 8 * 8], r8
    mov [rsi + 9 * 8], r9
    mov [rsi + 10 * 8], r10
    mov [rsi + 11 * 8], r11
    mov [rsi + 12 * 8], r12
    mov [rsi + 13 * 8], r13
    mov [rsi + 14 * 8], r14
    mov [rsi + 15 * 8], r15
    pop rcx
    mov [rsi + 6 * 8], rcx
    mov rax, [rsp + 8]
    vmload rax
    cli
    stgi
    add rsp, 16
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .popsection
"#
);

unsafe extern "C" {
    fn svm_enter(vmcb: u64, registers: *mut [u64; 16], host: u64);
}

/// Runs the guest of `vmcb` until its next exit, with its
/// general-purpose registers but RAX and RSP (which are the VMCB's) loaded
/// from `registers` and saved there.
///
/// # Safety
/// SVM must be enabled ([`Svm::enable`]); `vmcb` must be the physical
/// address of a VMCB set up by [`microvisor::vmcb::Vmcb::init`] (mandatory
/// intercepts, nested paging over guest memory only, permission maps of
/// `svm`), not in use by anything else; interrupts must be disabled.
pub unsafe fn enter(svm: &Svm, vmcb: PhysicalAddress, registers: &mut [u64; 16]) {
    // SAFETY: the caller's contract: the VMCB confines the guest, so the
    // only effects are on the guest's state, the VMCB and `registers`; the
    // host state is saved and restored around the run.
    unsafe { svm_enter(vmcb.0, registers, svm.host.0) }
}
