//! Model-specific registers as the guest sees them.
//!
//! The core passes the MSRs that VMLOAD/VMSAVE switch straight to the guest
//! and intercepts all others; this is the world switcher's table of the
//! intercepted ones it answers. Everything else raises `#GP(0)`, as an
//! unimplemented MSR does on hardware. EFER lives in the vCPU state; the
//! rest are kept here.

use microvisor_abi::vcpu::{VcpuState, dirty};

pub const EFER: u32 = 0xc000_0080;
pub const TSC: u32 = 0x10;
pub const APIC_BASE: u32 = 0x1b;
pub const MTRR_CAPABILITIES: u32 = 0xfe;
pub const MISC_ENABLE: u32 = 0x1a0;
pub const PAT: u32 = 0x277;
pub const MTRR_DEFAULT_TYPE: u32 = 0x2ff;

/// EFER bits a guest may set: SCE, LME, LMA, NXE, FFXSR.
const EFER_WRITABLE: u64 = 1 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 14;

/// The access must raise `#GP(0)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

/// The emulated MSRs' values.
pub struct Msrs {
    pat: u64,
    mtrr_default: u64,
}

impl Default for Msrs {
    fn default() -> Self {
        Self::new()
    }
}

fn valid_pat(value: u64) -> bool {
    // Each byte is a memory type: 0, 1, 4, 5, 6 or 7.
    value
        .to_le_bytes()
        .iter()
        .all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

impl Msrs {
    pub const fn new() -> Self {
        Self {
            pat: 0x0007_0406_0007_0406,
            mtrr_default: 0,
        }
    }

    /// RDMSR `msr`; `tsc` is the current time-stamp counter.
    pub fn read(&self, msr: u32, state: &VcpuState, tsc: u64) -> Result<u64, GeneralProtection> {
        Ok(match msr {
            EFER => state.efer,
            TSC => tsc,
            // The bootstrap processor's APIC, enabled, at the default base.
            APIC_BASE => 0xfee0_0900,
            MTRR_CAPABILITIES => 0,
            MISC_ENABLE => 1,
            PAT => self.pat,
            MTRR_DEFAULT_TYPE => self.mtrr_default,
            _ => return Err(GeneralProtection),
        })
    }

    /// WRMSR `msr`; returns the state-page fields it changed (a dirty
    /// mask).
    pub fn write(
        &mut self,
        msr: u32,
        value: u64,
        state: &mut VcpuState,
    ) -> Result<u64, GeneralProtection> {
        match msr {
            EFER => {
                if value & !EFER_WRITABLE != 0 {
                    return Err(GeneralProtection);
                }
                // LMA is the CPU's to set; keep the current value.
                state.efer = (value & !(1 << 10)) | (state.efer & (1 << 10));
                return Ok(dirty::EFER);
            }
            PAT if valid_pat(value) => self.pat = value,
            MTRR_DEFAULT_TYPE if value & !0xcff == 0 => self.mtrr_default = value,
            // Writes that change nothing here.
            APIC_BASE if value == 0xfee0_0900 => {}
            MISC_ENABLE | TSC => {}
            _ => return Err(GeneralProtection),
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn efer_writes_check_reserved_bits() {
        let mut msrs = Msrs::new();
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.write(EFER, 1 << 8, &mut state), Ok(dirty::EFER));
        assert_eq!(state.efer, 1 << 8);
        assert_eq!(msrs.read(EFER, &state, 0), Ok(1 << 8));
        assert_eq!(
            msrs.write(EFER, 1 << 12, &mut state),
            Err(GeneralProtection),
            "SVME is not the guest's"
        );
        assert_eq!(state.efer, 1 << 8);
    }

    #[test]
    fn unknown_msrs_raise_gp() {
        let mut msrs = Msrs::new();
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.read(0xc001_1234, &state, 0), Err(GeneralProtection));
        assert_eq!(
            msrs.write(0xc001_1234, 0, &mut state),
            Err(GeneralProtection)
        );
        assert_eq!(
            msrs.read(0xc001_0117, &state, 0),
            Err(GeneralProtection),
            "host save area"
        );
    }

    #[test]
    fn pat_is_validated_and_kept() {
        let mut msrs = Msrs::new();
        let mut state = VcpuState::new_zeroed();
        assert_eq!(msrs.write(PAT, 0x0606_0606_0606_0606, &mut state), Ok(0));
        assert_eq!(msrs.read(PAT, &state, 0), Ok(0x0606_0606_0606_0606));
        assert_eq!(msrs.write(PAT, 0x02, &mut state), Err(GeneralProtection));
        assert_eq!(msrs.read(TSC, &state, 42), Ok(42));
    }
}
