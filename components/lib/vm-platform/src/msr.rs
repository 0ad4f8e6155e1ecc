//! Model-specific registers as the guest sees them.
//!
//! The core passes the MSRs that VMLOAD/VMSAVE switch straight to the guest
//! and intercepts all others; this is the world switcher's table of the
//! intercepted ones it answers, consistent with the CPUID
//! [`Policy`](crate::cpuid::Policy) of the same VM: an MSR exists here only
//! where CPUID says it does. Everything else raises `#GP(0)`, as an
//! unimplemented MSR does on hardware, and so does a write that sets a
//! reserved bit or an invalid memory type. What is kept:
//!
//! - `EFER` lives in the vCPU state; NXE and FFXSR are writable only when
//!   CPUID shows NX and FFXSR; LMSLE, TCE and SVME never are.
//! - `TSC` reads the caller's time-stamp counter (the guest runs the host's
//!   TSC unchanged); writes are accepted and change nothing, since the core
//!   exposes no TSC offset.
//! - `PAT` and the MTRRs (capability: 8 variable ranges, fixed ranges,
//!   write-combining; the default type, the 11 fixed-range and 16
//!   variable-range MSRs) are kept and checked, and start as firmware
//!   leaves them for RAM that is all write-back: MTRRs enabled, default
//!   type write-back, no fixed or variable range in use. They describe the
//!   guest's memory, which nested paging maps write-back whatever they
//!   say. (Linux 6.1 initialises PAT only when MTRRs are enabled.)
//! - `PATCH_LEVEL`/`BIOS_SIGN_ID` reads 0: no microcode is loaded. It and
//!   the other constant MSRs (MTRR capability; on AMD `SYSCFG` with none
//!   of its memory-controller features, `VM_CR` with SVM disabled and
//!   locked; on Intel `MISC_ENABLE` with fast strings on, BTS and PEBS
//!   unavailable) accept a write of the value they hold, which is how
//!   Intel asks for the microcode revision, and raise `#GP` for any other.
//! - AMD's four legacy performance counters and their event selects
//!   (`0xC0010000`–`0xC0010007`; CPUID hides the counter extensions): the
//!   selects keep what is written (reserved bits as on hardware); the
//!   counters accept writes but always read 0. **Nothing counts**, and the
//!   guest must know: Linux's `check_hw_exists` writes a counter and reads
//!   it back, finds the value gone and reports "Broken PMU hardware
//!   detected, using software events only" — which keeps it from using
//!   RDPMC, an instruction the emulated CPU does not execute (a guest that
//!   believed in the counters took `#UD` in `native_read_pmc`).
//! - AMD's `HWCR` reads TscFreqSel (read-only; writes to it are ignored)
//!   and keeps the bits that have no effect a guest can see (TLB cache
//!   disable, flush-filter disable, IGNNE emulation); `NB_CFG` keeps
//!   EnableCf8ExtCfg, which Linux sets (the PCI host bridge answers
//!   configuration type 1 only, so the bit changes nothing there).
//! - `IA32_APIC_BASE`, `IA32_TSC_DEADLINE` and the x2APIC MSRs belong to the
//!   LAPIC model: when the platform has it ([`PlatformFeatures`]), an
//!   access is answered [`Unhandled::Lapic`] for the caller to hand over;
//!   without it they raise `#GP`.
//! - The paravirtual clock's two MSRs ([`guest_api::kvm`]) likewise belong
//!   to [`crate::pvclock`], which writes guest memory: answered
//!   [`Unhandled::Clock`] when the platform has it.
//!
//! - `TSC_AUX` (where CPUID shows RDTSCP or RDPID) lives in the vCPU state:
//!   the core loads it into the CPU around each entry, since RDTSCP and
//!   RDPID read it there without an exit. It has 32 bits; a write that
//!   sets any of the upper ones raises `#GP`.
//!
//! Not here, so `#GP`: `SPEC_CTRL` and
//! `PRED_CMD` (hidden), `PKRS` (PKS hidden), machine-check, thermal,
//! power, debug-store, OSVW and the SVM MSRs; Linux probes the AMD ones it
//! uses at start-up without CPUID (`DE_CFG`, `CPUID_FN_1`, `0xC0011005`)
//! with exception-safe accesses.

use guest_api::kvm;
use microvisor_abi::vcpu::{VcpuState, dirty};

use crate::cpuid::{PlatformFeatures, Policy, Vendor};

pub const TSC: u32 = 0x10;
pub const TSC_AUX: u32 = 0xc000_0103;
pub const APIC_BASE: u32 = 0x1b;
/// AMD `PATCH_LEVEL`, Intel `BIOS_SIGN_ID`.
pub const PATCH_LEVEL: u32 = 0x8b;
pub const MTRR_CAPABILITIES: u32 = 0xfe;
pub const MISC_ENABLE: u32 = 0x1a0;
/// `MTRR_PHYSBASE0`; bases and masks alternate up to `0x20f`.
pub const MTRR_VARIABLE: u32 = 0x200;
pub const MTRR_FIXED_64K: u32 = 0x250;
pub const MTRR_FIXED_16K: u32 = 0x258;
/// The first of eight 4 KiB fixed-range MTRRs (`0x268`–`0x26f`).
pub const MTRR_FIXED_4K: u32 = 0x268;
pub const PAT: u32 = 0x277;
pub const MTRR_DEFAULT_TYPE: u32 = 0x2ff;
pub const TSC_DEADLINE: u32 = 0x6e0;
/// The x2APIC register MSRs `0x800`–`0x8ff`.
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8ff;
pub const EFER: u32 = 0xc000_0080;
/// AMD `PERF_CTL0`; `PERF_CTL1`–`3` follow, then `PERF_CTR0`–`3`.
pub const PERF_SELECT: u32 = 0xc001_0000;
pub const PERF_COUNTER: u32 = 0xc001_0004;
pub const SYSCFG: u32 = 0xc001_0010;
pub const HWCR: u32 = 0xc001_0015;
pub const NB_CONFIG: u32 = 0xc001_001f;
pub const VM_CR: u32 = 0xc001_0114;
/// AMD's interrupt-pending message register: Linux reads it on the
/// families with the C1E erratum to see whether C1E is on (it is not).
pub const INT_PENDING_MESSAGE: u32 = 0xc001_0055;

/// Variable-range MTRR pairs, and how many legacy counters there are.
const MTRR_VARIABLE_PAIRS: u32 = 8;
const PERF_COUNTERS: u32 = 4;

/// EFER bits a guest may always set: SCE, LME, LMA.
const EFER_WRITABLE: u64 = 1 | 1 << 8 | 1 << 10;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const EFER_FFXSR: u64 = 1 << 14;

/// MTRRcap: 8 variable ranges, fixed ranges, write-combining.
const MTRR_CAPABILITIES_VALUE: u64 = MTRR_VARIABLE_PAIRS as u64 | 1 << 8 | 1 << 10;
/// MTRRdefType: the type in bits 0–7, FE (bit 10), E (bit 11).
const MTRR_DEFAULT_WRITABLE: u64 = 0xcff;
/// Enabled, write-back.
const MTRR_DEFAULT_RESET: u64 = 1 << 11 | 6;
/// The valid bit of a variable-range mask.
const MTRR_MASK_VALID: u64 = 1 << 11;
/// MISC_ENABLE: fast strings, BTS unavailable, PEBS unavailable.
const MISC_ENABLE_VALUE: u64 = 1 | 1 << 11 | 1 << 12;
/// VM_CR: LOCK and SVMDIS.
const VM_CR_VALUE: u64 = 1 << 3 | 1 << 4;
/// PERF_CTL bits reserved on hardware (19, 21, 36–63: Host/GuestOnly
/// included, there being no SVM for the guest).
const PERF_SELECT_RESERVED: u64 = 0xffff_fff0_0028_0000;
/// The counters' width.
const PERF_COUNTER_BITS: u32 = 48;
/// HWCR: TscFreqSel, read-only.
const HWCR_TSC_FREQUENCY_SELECT: u64 = 1 << 24;
/// HWCR bits kept: TlbCacheDis, FFDis, IgnneEm.
const HWCR_WRITABLE: u64 = 1 << 3 | 1 << 6 | 1 << 8;
/// NB_CFG: EnableCf8ExtCfg.
const NB_CONFIG_WRITABLE: u64 = 1 << 46;

/// The access must raise `#GP(0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

/// An access [`Msrs`] does not complete itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhandled {
    /// Raise `#GP(0)`.
    GeneralProtection,
    /// The MSR is the local APIC's (`IA32_APIC_BASE`, `IA32_TSC_DEADLINE`,
    /// x2APIC): hand the access to the LAPIC model.
    Lapic,
    /// The MSR is the paravirtual clock's: hand the access to
    /// [`crate::pvclock::Pvclock`].
    Clock,
}

impl From<GeneralProtection> for Unhandled {
    fn from(_: GeneralProtection) -> Self {
        Unhandled::GeneralProtection
    }
}

/// Where an MSR's value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Efer,
    Tsc,
    TscAux,
    Pat,
    MtrrDefault,
    /// Index into the bases and masks, alternating.
    MtrrVariable(usize),
    MtrrFixed(usize),
    PerfSelect(usize),
    PerfCounter(usize),
    Hwcr,
    NbConfig,
    /// Reads this value; a write of it changes nothing.
    Constant(u64),
    Lapic,
    Clock,
}

/// The emulated MSRs' values.
pub struct Msrs {
    vendor: Vendor,
    platform: PlatformFeatures,
    /// `TSC_AUX` exists.
    tsc_aux: bool,
    /// EFER bits the guest may set.
    efer_writable: u64,
    /// Physical-address bits 12 and up that exist.
    address_mask: u64,
    pat: u64,
    mtrr_default: u64,
    mtrr_fixed: [u64; 11],
    mtrr_variable: [u64; 2 * MTRR_VARIABLE_PAIRS as usize],
    perf_select: [u64; PERF_COUNTERS as usize],
    perf_counter: [u64; PERF_COUNTERS as usize],
    hwcr: u64,
    nb_config: u64,
}

/// Whether `memory_type` is an MTRR type: UC, WC, WT, WP or WB.
fn valid_mtrr_type(memory_type: u64) -> bool {
    matches!(memory_type, 0 | 1 | 4 | 5 | 6)
}

fn valid_pat(value: u64) -> bool {
    // Each byte is a memory type: 0, 1, 4, 5, 6 or 7 (UC-).
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

fn valid_fixed_range(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| valid_mtrr_type(u64::from(t)))
}

impl Msrs {
    /// The MSRs at reset for a guest whose CPUID is `policy`'s.
    pub fn new(policy: &Policy) -> Self {
        let mut efer_writable = EFER_WRITABLE;
        if policy.no_execute() {
            efer_writable |= EFER_NXE;
        }
        if policy.fast_fxsave() {
            efer_writable |= EFER_FFXSR;
        }
        let bits = u32::from(policy.physical_address_bits());
        Self {
            vendor: policy.vendor(),
            platform: policy.platform(),
            tsc_aux: policy.tsc_aux(),
            efer_writable,
            address_mask: ((1u64 << bits) - 1) & !0xfff,
            pat: 0x0007_0406_0007_0406,
            mtrr_default: MTRR_DEFAULT_RESET,
            mtrr_fixed: [0; 11],
            mtrr_variable: [0; 2 * MTRR_VARIABLE_PAIRS as usize],
            perf_select: [0; PERF_COUNTERS as usize],
            perf_counter: [0; PERF_COUNTERS as usize],
            hwcr: HWCR_TSC_FREQUENCY_SELECT,
            nb_config: 0,
        }
    }

    /// Where `msr` lives for this guest, `None` if it does not exist.
    fn register(&self, msr: u32) -> Option<Register> {
        let amd = self.vendor == Vendor::Amd;
        let intel = self.vendor == Vendor::Intel;
        let platform = self.platform;
        let variable_last = MTRR_VARIABLE + 2 * MTRR_VARIABLE_PAIRS - 1;
        Some(match msr {
            EFER => Register::Efer,
            TSC => Register::Tsc,
            TSC_AUX if self.tsc_aux => Register::TscAux,
            PAT => Register::Pat,
            MTRR_DEFAULT_TYPE => Register::MtrrDefault,
            MTRR_VARIABLE..=0x2ff if msr <= variable_last => {
                Register::MtrrVariable((msr - MTRR_VARIABLE) as usize)
            }
            MTRR_FIXED_64K => Register::MtrrFixed(0),
            MTRR_FIXED_16K | 0x259 => Register::MtrrFixed((msr - MTRR_FIXED_16K) as usize + 1),
            MTRR_FIXED_4K..=0x26f => Register::MtrrFixed((msr - MTRR_FIXED_4K) as usize + 3),
            MTRR_CAPABILITIES => Register::Constant(MTRR_CAPABILITIES_VALUE),
            PATCH_LEVEL => Register::Constant(0),
            APIC_BASE if platform.apic => Register::Lapic,
            TSC_DEADLINE if platform.tsc_deadline => Register::Lapic,
            X2APIC_FIRST..=X2APIC_LAST if platform.x2apic => Register::Lapic,
            kvm::MSR_WALL_CLOCK | kvm::MSR_SYSTEM_TIME if platform.pvclock => Register::Clock,
            MISC_ENABLE if intel => Register::Constant(MISC_ENABLE_VALUE),
            PERF_SELECT..=0xc001_0003 if amd => Register::PerfSelect((msr - PERF_SELECT) as usize),
            PERF_COUNTER..=0xc001_0007 if amd => {
                Register::PerfCounter((msr - PERF_COUNTER) as usize)
            }
            SYSCFG if amd => Register::Constant(0),
            HWCR if amd => Register::Hwcr,
            NB_CONFIG if amd => Register::NbConfig,
            VM_CR if amd => Register::Constant(VM_CR_VALUE),
            INT_PENDING_MESSAGE if amd => Register::Constant(0),
            _ => return None,
        })
    }

    /// RDMSR `msr`; `tsc` is the current time-stamp counter.
    pub fn read(&self, msr: u32, state: &VcpuState, tsc: u64) -> Result<u64, Unhandled> {
        let register = self.register(msr).ok_or(Unhandled::GeneralProtection)?;
        Ok(match register {
            Register::Efer => state.efer,
            Register::Tsc => tsc,
            Register::TscAux => state.tsc_aux & 0xffff_ffff,
            Register::Pat => self.pat,
            Register::MtrrDefault => self.mtrr_default,
            Register::MtrrVariable(i) => self.mtrr_variable[i],
            Register::MtrrFixed(i) => self.mtrr_fixed[i],
            Register::PerfSelect(i) => self.perf_select[i],
            Register::PerfCounter(i) => self.perf_counter[i],
            Register::Hwcr => self.hwcr,
            Register::NbConfig => self.nb_config,
            Register::Constant(value) => value,
            Register::Lapic => return Err(Unhandled::Lapic),
            Register::Clock => return Err(Unhandled::Clock),
        })
    }

    /// WRMSR `msr`; returns the state-page fields it changed (a dirty
    /// mask).
    pub fn write(&mut self, msr: u32, value: u64, state: &mut VcpuState) -> Result<u64, Unhandled> {
        let register = self.register(msr).ok_or(Unhandled::GeneralProtection)?;
        let refuse = Err(Unhandled::GeneralProtection);
        match register {
            Register::Efer => {
                if value & !self.efer_writable != 0 {
                    return refuse;
                }
                // LMA is the CPU's to set; keep the current value.
                state.efer = (value & !EFER_LMA) | (state.efer & EFER_LMA);
                return Ok(dirty::EFER);
            }
            Register::Tsc => {}
            Register::TscAux if value >> 32 == 0 => {
                state.tsc_aux = value;
                return Ok(dirty::TSC_AUX);
            }
            Register::Pat if valid_pat(value) => self.pat = value,
            Register::MtrrDefault
                if value & !MTRR_DEFAULT_WRITABLE == 0 && valid_mtrr_type(value & 0xff) =>
            {
                self.mtrr_default = value;
            }
            // Bases: type and address; masks: address and valid.
            Register::MtrrVariable(i)
                if i % 2 == 0
                    && value & !(self.address_mask | 0xff) == 0
                    && valid_mtrr_type(value & 0xff) =>
            {
                self.mtrr_variable[i] = value;
            }
            Register::MtrrVariable(i)
                if i % 2 == 1 && value & !(self.address_mask | MTRR_MASK_VALID) == 0 =>
            {
                self.mtrr_variable[i] = value;
            }
            Register::MtrrFixed(i) if valid_fixed_range(value) => self.mtrr_fixed[i] = value,
            Register::PerfSelect(i) if value & PERF_SELECT_RESERVED == 0 => {
                self.perf_select[i] = value;
            }
            // Accepted and dropped: see the module documentation.
            Register::PerfCounter(_) if value >> PERF_COUNTER_BITS == 0 => {}
            Register::Hwcr if value & !(HWCR_WRITABLE | HWCR_TSC_FREQUENCY_SELECT) == 0 => {
                self.hwcr = HWCR_TSC_FREQUENCY_SELECT | value & HWCR_WRITABLE;
            }
            Register::NbConfig if value & !NB_CONFIG_WRITABLE == 0 => self.nb_config = value,
            Register::Constant(held) if value == held => {}
            Register::Lapic => return Err(Unhandled::Lapic),
            Register::Clock => return Err(Unhandled::Clock),
            _ => return refuse,
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use zerocopy::FromZeros;

    /// An AMD host like QEMU TCG `-cpu max`: NX, no FFXSR, 40 physical
    /// address bits.
    fn amd_policy(platform: PlatformFeatures) -> Policy {
        host_policy(platform, *b"AuthenticAMD", 1 << 20)
    }

    fn host_policy(platform: PlatformFeatures, vendor: [u8; 12], edx: u32) -> Policy {
        let word =
            |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        Policy::new(platform, |leaf, _| match leaf {
            0 => [0xd, word(0), word(8), word(4)],
            0x8000_0000 => [0x8000_000a, 0, 0, 0],
            0x8000_0001 => [0, 0, 0, edx],
            0x8000_0008 => [0x3028, 0, 0, 0],
            _ => [0; 4],
        })
    }

    fn amd() -> Msrs {
        Msrs::new(&amd_policy(PlatformFeatures::default()))
    }

    const GP: Result<u64, Unhandled> = Err(Unhandled::GeneralProtection);

    /// Each `(msr, value)` of `table` reads `value` (the TSC reads 1234).
    fn assert_reads(msrs: &Msrs, state: &VcpuState, table: &[(u32, u64)]) {
        for &(msr, value) in table {
            assert_eq!(msrs.read(msr, state, 1234), Ok(value), "MSR {msr:#x}");
        }
    }

    #[test]
    fn reset_values() {
        let msrs = amd();
        let mut state = VcpuState::new_zeroed();
        state.efer = 0x500;
        let table: &[(u32, u64)] = &[
            (EFER, 0x500),
            (TSC, 1234),
            (PATCH_LEVEL, 0),
            (MTRR_CAPABILITIES, 0x508),
            (MTRR_DEFAULT_TYPE, 0x806),
            (0x200, 0),
            (0x20f, 0),
            (0x250, 0),
            (0x259, 0),
            (0x26f, 0),
            (PAT, 0x0007_0406_0007_0406),
            (0xc001_0000, 0),
            (0xc001_0007, 0),
            (SYSCFG, 0),
            (HWCR, 1 << 24),
            (NB_CONFIG, 0),
            (VM_CR, 0x18),
        ];
        assert_reads(&msrs, &state, table);
    }

    #[test]
    fn tsc_aux_exists_with_rdtscp_and_holds_32_bits() {
        let policy = host_policy(PlatformFeatures::default(), *b"AuthenticAMD", 1 << 27);
        assert!(policy.tsc_aux());
        let mut msrs = Msrs::new(&policy);
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.read(TSC_AUX, &state, 0), Ok(0));
        assert_eq!(
            msrs.write(TSC_AUX, 0xdead_beef, &mut state),
            Ok(dirty::TSC_AUX)
        );
        assert_eq!(state.tsc_aux, 0xdead_beef);
        assert_eq!(msrs.read(TSC_AUX, &state, 0), Ok(0xdead_beef));
        assert_eq!(msrs.write(TSC_AUX, 1 << 32, &mut state), GP);
        assert_eq!(
            state.tsc_aux, 0xdead_beef,
            "a refused write changes nothing"
        );
        // Without RDTSCP and RDPID the MSR does not exist.
        assert_eq!(amd().read(TSC_AUX, &state, 0), GP);
    }

    #[test]
    fn absent_msrs_raise_gp() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        let absent = [
            0xc001_1234, // nothing
            0xc001_0117, // VM_HSAVE_PA
            0xc000_0103, // TSC_AUX: this host has neither RDTSCP nor RDPID
            0x48,        // SPEC_CTRL
            0x49,        // PRED_CMD
            0x6e1,       // PKRS: PKS hidden
            0x179,       // MCG_CAP: MCE hidden
            0xc001_0200, // PERF_CTL0 of the hidden extension
            0xc001_0008, // past the legacy counters
            0x210,       // past the variable MTRRs
            0x251,       // between fixed MTRRs
            0x25a,
            0x267,
            0x270,
            MISC_ENABLE, // Intel's
            APIC_BASE,   // no LAPIC model on this platform
            TSC_DEADLINE,
            0x802,
            0xc001_0140, // OSVW
            0xc001_1029, // DE_CFG
            0x3a,        // FEATURE_CONTROL
            0x10a,       // ARCH_CAPABILITIES
        ];
        for msr in absent {
            assert_eq!(msrs.read(msr, &state, 0), GP, "read {msr:#x}");
            assert_eq!(msrs.write(msr, 0, &mut state), GP, "write {msr:#x}");
        }
    }

    #[test]
    fn the_lapic_msrs_go_to_the_lapic_when_there_is_one() {
        let with = |apic, x2apic, tsc_deadline| {
            Msrs::new(&amd_policy(PlatformFeatures {
                apic,
                x2apic,
                tsc_deadline,
                pvclock: false,
            }))
        };
        let mut state = VcpuState::new_zeroed();
        let lapic = Err(Unhandled::Lapic);
        let mut full = with(true, true, true);
        for msr in [APIC_BASE, TSC_DEADLINE, 0x800, 0x830, 0x8ff] {
            assert_eq!(full.read(msr, &state, 0), lapic, "{msr:#x}");
            assert_eq!(full.write(msr, 5, &mut state), lapic, "{msr:#x}");
        }
        let mut xapic = with(true, false, false);
        assert_eq!(xapic.read(APIC_BASE, &state, 0), lapic);
        assert_eq!(xapic.read(TSC_DEADLINE, &state, 0), GP);
        assert_eq!(xapic.write(0x830, 0, &mut state), GP);
        // x2APIC and TSC-deadline mean nothing without an APIC.
        let orphan = with(false, true, true);
        assert_eq!(orphan.read(0x830, &state, 0), GP);
        assert_eq!(orphan.read(TSC_DEADLINE, &state, 0), GP);
        assert_eq!(
            Unhandled::from(GeneralProtection),
            Unhandled::GeneralProtection
        );
    }

    #[test]
    fn the_clock_msrs_exist_with_the_clock() {
        let mut state = VcpuState::new_zeroed();
        let platform = |pvclock| PlatformFeatures {
            apic: true,
            x2apic: true,
            tsc_deadline: true,
            pvclock,
        };
        let mut with = Msrs::new(&amd_policy(platform(true)));
        let mut without = Msrs::new(&amd_policy(platform(false)));
        for msr in [kvm::MSR_WALL_CLOCK, kvm::MSR_SYSTEM_TIME] {
            assert_eq!(with.read(msr, &state, 0), Err(Unhandled::Clock));
            assert_eq!(with.write(msr, 1, &mut state), Err(Unhandled::Clock));
            assert_eq!(without.read(msr, &state, 0), GP);
            assert_eq!(without.write(msr, 1, &mut state), GP);
        }
        // KVM's older clock MSRs are not offered.
        assert_eq!(with.read(0x11, &state, 0), GP);
        assert_eq!(with.read(0x12, &state, 0), GP);
    }

    #[test]
    fn efer_writes_check_reserved_bits() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.write(EFER, 1 << 8, &mut state), Ok(dirty::EFER));
        assert_eq!(state.efer, 1 << 8);
        assert_eq!(msrs.read(EFER, &state, 0), Ok(1 << 8));
        // SVME 12, LMSLE 13, TCE 15, FFXSR 14 (not shown here), bit 63.
        for bit in [12, 13, 14, 15, 63] {
            assert_eq!(
                msrs.write(EFER, 1 << 8 | 1 << bit, &mut state),
                GP,
                "bit {bit}"
            );
        }
        assert_eq!(state.efer, 1 << 8);
        // NXE is shown; LMA stays the CPU's.
        assert_eq!(msrs.write(EFER, 0xd01, &mut state), Ok(dirty::EFER));
        assert_eq!(state.efer, 0x901);
    }

    #[test]
    fn efer_follows_cpuid_nx_and_ffxsr() {
        let mut state = VcpuState::new_zeroed();
        let platform = PlatformFeatures::default();
        let mut bare = Msrs::new(&host_policy(platform, *b"AuthenticAMD", 0));
        assert_eq!(bare.write(EFER, 1 << 11, &mut state), GP);
        let mut ffxsr = Msrs::new(&host_policy(platform, *b"AuthenticAMD", 1 << 25));
        assert_eq!(ffxsr.write(EFER, 1 << 14, &mut state), Ok(dirty::EFER));
        // Intel has no FFXSR, whatever the bit says.
        let mut intel = Msrs::new(&host_policy(platform, *b"GenuineIntel", 1 << 25 | 1 << 20));
        assert_eq!(intel.write(EFER, 1 << 14, &mut state), GP);
        assert_eq!(intel.write(EFER, 1 << 11, &mut state), Ok(dirty::EFER));
    }

    #[test]
    fn intel_has_misc_enable_and_not_the_amd_msrs() {
        let policy = host_policy(PlatformFeatures::default(), *b"GenuineIntel", 1 << 20);
        let mut msrs = Msrs::new(&policy);
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.read(MISC_ENABLE, &state, 0), Ok(0x1801));
        assert_eq!(msrs.write(MISC_ENABLE, 0x1801, &mut state), Ok(0));
        assert_eq!(msrs.write(MISC_ENABLE, 0x1800, &mut state), GP);
        for msr in [
            PERF_SELECT,
            PERF_COUNTER,
            SYSCFG,
            HWCR,
            NB_CONFIG,
            VM_CR,
            INT_PENDING_MESSAGE,
        ] {
            assert_eq!(msrs.read(msr, &state, 0), GP, "{msr:#x}");
        }
        // Linux asks Intel for the microcode revision by writing 0.
        assert_eq!(msrs.write(PATCH_LEVEL, 0, &mut state), Ok(0));
        assert_eq!(msrs.read(MTRR_CAPABILITIES, &state, 0), Ok(0x508));
    }

    #[test]
    fn constants_accept_only_their_own_value() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        let table: &[(u32, u64)] = &[
            (PATCH_LEVEL, 0),
            (MTRR_CAPABILITIES, 0x508),
            (SYSCFG, 0),
            (VM_CR, 0x18),
            // No C1E: Linux's erratum check reads it at boot.
            (INT_PENDING_MESSAGE, 0),
        ];
        for &(msr, value) in table {
            assert_eq!(msrs.write(msr, value, &mut state), Ok(0), "{msr:#x}");
            assert_eq!(msrs.write(msr, value ^ 1 << 4, &mut state), GP, "{msr:#x}");
            assert_eq!(msrs.read(msr, &state, 0), Ok(value), "{msr:#x}");
        }
        // SVM cannot be unlocked or enabled.
        assert_eq!(msrs.write(VM_CR, 0, &mut state), GP);
        // SME cannot be turned on.
        assert_eq!(msrs.write(SYSCFG, 1 << 23, &mut state), GP);
    }

    #[test]
    fn pat_is_validated_and_kept() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.write(PAT, 0x0606_0606_0606_0606, &mut state), Ok(0));
        assert_eq!(msrs.read(PAT, &state, 0), Ok(0x0606_0606_0606_0606));
        assert_eq!(msrs.write(PAT, 0x02, &mut state), GP);
        assert_eq!(msrs.write(PAT, 0x08 << 56, &mut state), GP);
        assert_eq!(msrs.read(PAT, &state, 0), Ok(0x0606_0606_0606_0606));
        assert_eq!(msrs.read(TSC, &state, 42), Ok(42));
        assert_eq!(msrs.write(TSC, 7, &mut state), Ok(0));
    }

    /// What Linux 6.1's `prepare_set`/`post_set` and `set_mtrr_state` do:
    /// turn MTRRs off, write ranges, turn them back on.
    #[test]
    fn mtrrs_as_linux_programs_them() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        let default = msrs.read(MTRR_DEFAULT_TYPE, &state, 0).unwrap();
        assert_eq!(
            msrs.write(MTRR_DEFAULT_TYPE, default & !0xcff, &mut state),
            Ok(0)
        );
        // 0–2 GiB write-back (40 address bits), the first MiB's types.
        assert_eq!(msrs.write(0x200, 0x6, &mut state), Ok(0));
        assert_eq!(msrs.write(0x201, 0xff_8000_0800, &mut state), Ok(0));
        assert_eq!(
            msrs.write(MTRR_FIXED_64K, 0x0606_0606_0606_0606, &mut state),
            Ok(0)
        );
        assert_eq!(msrs.write(0x259, 0x0000_0000_0101_0101, &mut state), Ok(0));
        assert_eq!(msrs.write(0x26f, 0x0505_0505_0505_0505, &mut state), Ok(0));
        assert_eq!(msrs.write(MTRR_DEFAULT_TYPE, 0xc06, &mut state), Ok(0));
        let table: &[(u32, u64)] = &[
            (0x200, 0x6),
            (0x201, 0xff_8000_0800),
            (0x250, 0x0606_0606_0606_0606),
            (0x258, 0),
            (0x259, 0x0101_0101),
            (0x268, 0),
            (0x26f, 0x0505_0505_0505_0505),
            (MTRR_DEFAULT_TYPE, 0xc06),
        ];
        assert_reads(&msrs, &state, table);
    }

    #[test]
    fn mtrr_writes_refuse_reserved_bits_and_types() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        let refused: &[(u32, u64, &str)] = &[
            (MTRR_DEFAULT_TYPE, 0x802, "type 2"),
            (MTRR_DEFAULT_TYPE, 0x807, "type 7"),
            (MTRR_DEFAULT_TYPE, 0x1806, "bit 12"),
            (MTRR_DEFAULT_TYPE, 0x306, "bits 8-9"),
            (0x200, 0x3, "base type 3"),
            (0x200, 0x106, "base bit 8"),
            (0x202, 1 << 40 | 6, "base above 40 bits"),
            (0x201, 0x400, "mask bit 10"),
            (0x203, 1 << 40 | 0x800, "mask above 40 bits"),
            (0x250, 0x0606_0606_0607_0606, "fixed type 7"),
            (0x268, 0x0200, "fixed type 2"),
            (0x26c, 0x18 << 8, "RdMem/WrMem"),
        ];
        for &(msr, value, what) in refused {
            assert_eq!(msrs.write(msr, value, &mut state), GP, "{msr:#x}: {what}");
        }
        assert_eq!(msrs.read(MTRR_DEFAULT_TYPE, &state, 0), Ok(0x806));
        assert_eq!(msrs.read(0x200, &state, 0), Ok(0));
        // The highest address bit that exists is fine.
        assert_eq!(msrs.write(0x202, 1 << 39 | 4, &mut state), Ok(0));
        assert_eq!(msrs.write(0x20f, 0xff_ffff_f800, &mut state), Ok(0));
    }

    /// Linux's `check_hw_exists`: no select enabled, a counter's value
    /// flipped and read back — and found gone, so Linux uses software
    /// events only.
    #[test]
    fn the_legacy_counters_are_seen_not_to_count() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        for i in 0..4 {
            assert_eq!(msrs.read(PERF_SELECT + i, &state, 0), Ok(0));
        }
        let counter = PERF_COUNTER + 3;
        let value = msrs.read(counter, &state, 0).unwrap() ^ 0xffff;
        assert_eq!(msrs.write(counter, value, &mut state), Ok(0));
        assert_eq!(
            msrs.read(counter, &state, 999),
            Ok(0),
            "the write is not kept"
        );
        // The NMI watchdog's event: cycles, OS and user, interrupt, enable;
        // the counter at -period in 48 bits.
        let select = 0x76 | 1 << 16 | 1 << 17 | 1 << 20 | 1 << 22;
        assert_eq!(msrs.write(PERF_SELECT, select, &mut state), Ok(0));
        let start = (1 << 48) - 1_000_000;
        assert_eq!(msrs.write(PERF_COUNTER, start, &mut state), Ok(0));
        assert_eq!(msrs.read(PERF_SELECT, &state, 0), Ok(select));
        assert_eq!(msrs.read(PERF_COUNTER, &state, u64::MAX), Ok(0));
        // Reserved: select bits 19, 21, 36-63 (Host/GuestOnly 40/41);
        // counter bits 48-63.
        for bit in [19, 21, 36, 40, 41, 63] {
            assert_eq!(
                msrs.write(PERF_SELECT + 1, 1 << bit, &mut state),
                GP,
                "bit {bit}"
            );
        }
        assert_eq!(msrs.write(PERF_COUNTER + 1, 1 << 48, &mut state), GP);
        assert_eq!(msrs.read(PERF_SELECT + 1, &state, 0), Ok(0));
        // EventSelect[11:8] (bits 32-35) is no reserved bit.
        assert_eq!(msrs.write(PERF_SELECT + 2, 0xf << 32, &mut state), Ok(0));
    }

    #[test]
    fn hwcr_keeps_tsc_frequency_select_and_harmless_bits() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        // Read-modify-write as Linux does, and a write that clears the
        // read-only bit: it stays.
        assert_eq!(msrs.write(HWCR, 1 << 24 | 1 << 3, &mut state), Ok(0));
        assert_eq!(msrs.read(HWCR, &state, 0), Ok(1 << 24 | 1 << 3));
        assert_eq!(msrs.write(HWCR, 1 << 6 | 1 << 8, &mut state), Ok(0));
        assert_eq!(msrs.read(HWCR, &state, 0), Ok(1 << 24 | 1 << 6 | 1 << 8));
        // SmmLock 0, INVD-as-WBINVD 4, SseDis 15, McStatusWrEn 18,
        // IRPerfEn 30 (IRPERF hidden), CpuidUserDis 35.
        for bit in [0, 4, 15, 18, 30, 35] {
            assert_eq!(
                msrs.write(HWCR, 1 << 24 | 1 << bit, &mut state),
                GP,
                "bit {bit}"
            );
        }
        assert_eq!(msrs.read(HWCR, &state, 0), Ok(1 << 24 | 1 << 6 | 1 << 8));
    }

    /// Linux's `enable_pci_io_ecs` on every AMD CPU from family 0x10.
    #[test]
    fn nb_config_takes_the_extended_config_bit() {
        let mut msrs = amd();
        let mut state = VcpuState::new_zeroed();
        let value = msrs.read(NB_CONFIG, &state, 0).unwrap();
        assert_eq!(msrs.write(NB_CONFIG, value | 1 << 46, &mut state), Ok(0));
        assert_eq!(msrs.read(NB_CONFIG, &state, 0), Ok(1 << 46));
        assert_eq!(msrs.write(NB_CONFIG, 1 << 54, &mut state), GP);
        assert_eq!(msrs.write(NB_CONFIG, 0, &mut state), Ok(0));
        assert_eq!(msrs.read(NB_CONFIG, &state, 0), Ok(0));
    }

    proptest! {
        /// Any MSR number and value, read or written: no panic; an MSR the
        /// table does not know raises #GP and changes nothing the next
        /// read of a known one shows.
        #[test]
        fn hostile_accesses_never_panic(
            msr in prop_oneof![
                any::<u32>(),
                0u32..0x1000,
                0xc000_0000u32..0xc000_0200,
                0xc001_0000u32..0xc001_0200,
            ],
            value in any::<u64>(),
            apic in any::<bool>(),
            x2apic in any::<bool>(),
            tsc_deadline in any::<bool>(),
            pvclock in any::<bool>(),
            intel in any::<bool>(),
        ) {
            let platform = PlatformFeatures { apic, x2apic, tsc_deadline, pvclock };
            let vendor = if intel { *b"GenuineIntel" } else { *b"AuthenticAMD" };
            let mut msrs = Msrs::new(&host_policy(platform, vendor, 1 << 20));
            let mut state = VcpuState::new_zeroed();
            let known = msrs.register(msr).is_some();
            let read = msrs.read(msr, &state, 5);
            let written = msrs.write(msr, value, &mut state);
            if !known {
                prop_assert_eq!(read, GP);
                prop_assert_eq!(written, GP);
            }
            // A write either took (and reads back, for kept registers) or
            // was refused and left the old value.
            if let (Ok(before), Some(register)) = (read, msrs.register(msr)) {
                let after = msrs.read(msr, &state, 5).unwrap();
                match (written, register) {
                    (Ok(_), Register::Pat | Register::MtrrDefault | Register::MtrrVariable(_)
                        | Register::MtrrFixed(_) | Register::PerfSelect(_)
                        | Register::PerfCounter(_) | Register::NbConfig) => {
                        prop_assert_eq!(after, value);
                    }
                    (Err(_), _) => prop_assert_eq!(after, before),
                    _ => {}
                }
            }
        }
    }
}
