//! MOV to CR8, emulated when the core intercepts it
//! (`ExitReason::Cr8Write`).
//!
//! CR8 is the task priority (the local APIC's TPR bits 7:4). A 64-bit
//! guest's MOV to CR8 normally runs without an exit (the CPU keeps a
//! virtual TPR); it exits only while the world switcher waits for it
//! (an interrupt the task priority holds back) or during an interrupt
//! window. CPUs without decode assists (QEMU's TCG) do not say which
//! register the instruction reads, so it is fetched through the guest's
//! page tables and decoded here: optional legacy prefixes, a REX prefix
//! whose R bit reaches CR8, `0F 22 /r` with the register form implied (the
//! `mod` field is ignored, as the CPU does), or AMD's `LOCK MOV CR0` that
//! means CR8 outside 64-bit mode. The value must fit in four bits, else
//! the CPU raises `#GP(0)`.

use microvisor_abi::vcpu::{VcpuState, dirty, event};

use crate::GuestRead;
use crate::guest_paging::{
    ExecutionMode, InstructionBytes, MAX_INSTRUCTION_LENGTH, fetch_instruction,
};
use crate::lapic::Lapic;
use crate::mmio::{DecodeError, DecodeFailure, MmioError};

/// A decoded MOV to CR8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr8Write {
    /// The source register's number (`VcpuState::gpr` index).
    pub source: usize,
    /// Bytes, prefixes included.
    pub length: u8,
}

/// A decoded MOV to a control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlWrite {
    /// The control register's number (0-15).
    pub register: u8,
    /// The source register's number (`VcpuState::gpr` index).
    pub source: usize,
    /// Bytes, prefixes included.
    pub length: u8,
}

/// Decodes `bytes` as a MOV to a control register in `mode`: optional
/// legacy prefixes, a REX prefix (R extends the control register, B the
/// source), `0F 22 /r` with the register form implied, and AMD's
/// `LOCK MOV CR0` for CR8.
pub fn decode_control_write(
    bytes: &[u8],
    mode: ExecutionMode,
) -> Result<ControlWrite, DecodeFailure> {
    let mut position = 0;
    let mut next = || {
        if position >= MAX_INSTRUCTION_LENGTH {
            return Err(DecodeFailure::TooLong);
        }
        let byte = *bytes.get(position).ok_or(DecodeFailure::Truncated)?;
        position += 1;
        Ok(byte)
    };
    let mut lock = false;
    let mut rex = 0u8;
    let opcode = loop {
        let byte = next()?;
        match byte {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf2 | 0xf3 => rex = 0,
            0xf0 => {
                lock = true;
                rex = 0;
            }
            0x40..=0x4f if mode == ExecutionMode::Bits64 => rex = byte,
            _ => break byte,
        }
    };
    if opcode != 0x0f || next()? != 0x22 {
        return Err(DecodeFailure::Unsupported {
            mnemonic: "not a mov to a control register",
        });
    }
    let modrm = next()?;
    let mut register = ((modrm >> 3) & 7) | ((rex & 4) << 1);
    if lock && register == 0 {
        register = 8;
    }
    Ok(ControlWrite {
        register,
        source: usize::from((modrm & 7) | ((rex & 1) << 3)),
        length: position as u8,
    })
}

/// Decodes `bytes` as a MOV to CR8 in `mode`.
pub fn decode(bytes: &[u8], mode: ExecutionMode) -> Result<Cr8Write, DecodeFailure> {
    let write = decode_control_write(bytes, mode)?;
    if write.register != 8 {
        return Err(DecodeFailure::Unsupported {
            mnemonic: "mov to a control register other than cr8",
        });
    }
    Ok(Cr8Write {
        source: write.source,
        length: write.length,
    })
}

/// Emulates the MOV to CR8 at the guest's RIP on `lapic`: the TPR takes
/// the value and RIP moves past the instruction (the new CR8 reaches the
/// guest at the next entry, from the LAPIC). A value above 15 injects
/// `#GP(0)` instead. Returns the dirty bits; an instruction that cannot be
/// fetched injects the fault the fetch met, one that is not a MOV to CR8
/// is an error (the core exits only for those).
pub fn emulate(
    state: &mut VcpuState,
    memory: &impl GuestRead,
    lapic: &mut Lapic,
) -> Result<u64, MmioError> {
    let mode = ExecutionMode::of(state);
    let bytes = fetch_instruction(memory, state).map_err(MmioError::Fetch)?;
    let write = decode(bytes.bytes(), mode).map_err(|failure| decode_error(failure, bytes))?;
    let mut value = state.gpr[write.source];
    if mode != ExecutionMode::Bits64 {
        value &= 0xffff_ffff;
    }
    if lapic.set_cr8(value).is_err() {
        state.inject = event::GP0;
        return Ok(dirty::INJECT);
    }
    state.rip = state.rip.wrapping_add(u64::from(write.length));
    if mode != ExecutionMode::Bits64 {
        state.rip &= 0xffff_ffff;
    }
    Ok(dirty::RIP)
}

pub(crate) fn decode_error(failure: DecodeFailure, bytes: InstructionBytes) -> MmioError {
    MmioError::Decode(DecodeError { failure, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_abi::vcpu::gpr;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_forms_guests_use() {
        let bits64 = ExecutionMode::Bits64;
        // mov cr8, rax / rcx / r15
        assert_eq!(
            decode(&[0x44, 0x0f, 0x22, 0xc0], bits64),
            Ok(Cr8Write {
                source: gpr::RAX,
                length: 4
            })
        );
        assert_eq!(
            decode(&[0x44, 0x0f, 0x22, 0xc1], bits64).map(|w| w.source),
            Ok(gpr::RCX)
        );
        assert_eq!(
            decode(&[0x4d, 0x0f, 0x22, 0xc7], bits64).map(|w| w.source),
            Ok(gpr::R15)
        );
        // The mod field is ignored; prefixes count in the length.
        assert_eq!(
            decode(&[0x2e, 0x44, 0x0f, 0x22, 0x02], bits64),
            Ok(Cr8Write {
                source: gpr::RDX,
                length: 5
            })
        );
        // AMD's alternative encoding, also in 32-bit code.
        assert_eq!(
            decode(&[0xf0, 0x0f, 0x22, 0xc3], ExecutionMode::Bits32),
            Ok(Cr8Write {
                source: gpr::RBX,
                length: 4
            })
        );
        // A REX prefix that is not last does not count: this is CR0.
        assert!(matches!(
            decode(&[0x44, 0x66, 0x0f, 0x22, 0xc0], bits64),
            Err(DecodeFailure::Unsupported { .. })
        ));
        // Outside 64-bit mode 0x44 is `inc esp`, not a prefix.
        assert!(matches!(
            decode(&[0x44, 0x0f, 0x22, 0xc0], ExecutionMode::Bits32),
            Err(DecodeFailure::Unsupported { .. })
        ));
        assert!(matches!(
            decode(&[0x0f, 0x20, 0xc0], bits64),
            Err(DecodeFailure::Unsupported { .. })
        ));
        assert_eq!(decode(&[0x44, 0x0f], bits64), Err(DecodeFailure::Truncated));
        assert_eq!(decode(&[0x66; 20], bits64), Err(DecodeFailure::TooLong));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            for mode in [ExecutionMode::Bits16, ExecutionMode::Bits32, ExecutionMode::Bits64] {
                if let Ok(write) = decode(&bytes, mode) {
                    prop_assert!(write.source < 16);
                    prop_assert!(usize::from(write.length) <= MAX_INSTRUCTION_LENGTH);
                }
            }
        }
    }

    #[test]
    fn emulation_sets_the_tpr_or_injects_gp() {
        use crate::clock::Clock;
        use crate::testing::VecMemory;
        use zerocopy::FromZeros;
        // 32-bit protected mode without paging: AMD's `lock mov cr0, ecx`.
        let mut memory = VecMemory(vec![0; 0x10000]);
        assert!(crate::Memory::write(
            &mut memory,
            0x1000,
            &[0xf0, 0x0f, 0x22, 0xc1]
        ));
        let mut state = VcpuState::new_zeroed();
        state.cr0 = 1;
        state.cs.attributes = 0xc9b;
        state.rip = 0x1000;
        state.gpr[gpr::RCX] = 0xffff_ffff_0000_0009;
        let mut lapic = Lapic::new(Clock::new(1_000_000_000, 1_000_000_000).unwrap(), 48);
        assert_eq!(emulate(&mut state, &memory, &mut lapic), Ok(dirty::RIP));
        assert_eq!((state.rip, lapic.cr8()), (0x1004, 9), "32-bit source");
        state.rip = 0x1000;
        state.gpr[gpr::RCX] = 16;
        assert_eq!(emulate(&mut state, &memory, &mut lapic), Ok(dirty::INJECT));
        assert_eq!(
            (state.inject, state.rip, lapic.cr8()),
            (event::GP0, 0x1000, 9)
        );
        // Not a MOV to CR8: an error for the world switcher to report.
        state.rip = 0x2000;
        assert!(matches!(
            emulate(&mut state, &memory, &mut lapic),
            Err(MmioError::Decode(_))
        ));
    }
}
