//! MOV to CR3, emulated while the world switcher intercepts it
//! (`ExitReason::Cr3Write`, asked for when the QoS controller wants the
//! guest's CPU time per process).
//!
//! The core names the source register where the CPU decoded the
//! instruction (`CR3_DECODED`); otherwise (QEMU's TCG) it is fetched
//! through the guest's page tables and decoded as [`crate::cr8`] does. The
//! value is what the CPU would load: 32 bits outside long mode, bit 63
//! (with CR4.PCIDE: "do not flush this PCID") cleared — the core flushes
//! the guest's whole TLB at every CR3 it writes back, which keeps what
//! the bit asks for and more. Bits from the guest's physical-address
//! width up, and bit 63 without CR4.PCIDE, raise `#GP(0)` (written back,
//! the CPU would refuse the state at entry and stop the VM instead).

use microvisor_abi::vcpu::{CR3_DECODED, VcpuState, dirty, event};

use crate::GuestRead;
use crate::cr8::{decode_control_write, decode_error};
use crate::guest_paging::{ExecutionMode, fetch_instruction};
use crate::mmio::{DecodeFailure, MmioError};

/// CR3's bit 63 under CR4.PCIDE: keep the PCID's translations.
pub const NO_FLUSH: u64 = 1 << 63;
/// CR4.PCIDE.
const CR4_PCIDE: u64 = 1 << 17;

/// What the instruction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr3Outcome {
    /// CR3 took `value`; the dirty bits to enter with.
    Loaded { value: u64, dirty: u64 },
    /// A fault was injected instead (dirty bits to enter with).
    Faulted { dirty: u64 },
}

/// What CR3 holds after a MOV of `source` (64-bit code when `bits64`,
/// with CR4.PCIDE when `pcide`, physical addresses of `physical_bits`),
/// or `None` for `#GP(0)`.
pub const fn value_loaded(
    source: u64,
    bits64: bool,
    pcide: bool,
    physical_bits: u32,
) -> Option<u64> {
    let value = if bits64 { source } else { source & 0xffff_ffff };
    let no_flush = if pcide { NO_FLUSH } else { 0 };
    let bits = if physical_bits > 52 {
        52
    } else {
        physical_bits
    };
    let reserved = !((1u64 << bits) - 1) & !no_flush;
    if value & reserved != 0 {
        return None;
    }
    Some(value & !NO_FLUSH)
}

/// Emulates the MOV to CR3 at the guest's RIP, for a guest whose
/// physical addresses have `physical_bits` bits.
pub fn emulate(
    state: &mut VcpuState,
    memory: &impl GuestRead,
    physical_bits: u32,
) -> Result<Cr3Outcome, MmioError> {
    let mode = ExecutionMode::of(state);
    let bytes = fetch_instruction(memory, state).map_err(MmioError::Fetch)?;
    let write = decode_control_write(bytes.bytes(), mode)
        .map_err(|failure| decode_error(failure, bytes))?;
    if write.register != 3 {
        return Err(decode_error(
            DecodeFailure::Unsupported {
                mnemonic: "mov to a control register other than cr3",
            },
            bytes,
        ));
    }
    let source = if state.qualification & CR3_DECODED != 0 {
        (state.qualification & 0xf) as usize
    } else {
        write.source
    };
    let pcide = state.cr4 & CR4_PCIDE != 0;
    let loaded = value_loaded(
        state.gpr[source],
        mode == ExecutionMode::Bits64,
        pcide,
        physical_bits,
    );
    let Some(value) = loaded else {
        state.inject = event::GP0;
        return Ok(Cr3Outcome::Faulted {
            dirty: dirty::INJECT,
        });
    };
    state.cr3 = value;
    state.rip = state.rip.wrapping_add(u64::from(write.length));
    if mode != ExecutionMode::Bits64 {
        state.rip &= 0xffff_ffff;
    }
    Ok(Cr3Outcome::Loaded {
        value,
        dirty: dirty::CR3 | dirty::RIP,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use microvisor_abi::vcpu::gpr;
    use zerocopy::FromZeros;

    fn protected_32() -> VcpuState {
        let mut state = VcpuState::new_zeroed();
        state.cr0 = 1;
        state.cs.attributes = 0xc9b;
        state
    }

    #[test]
    fn loads_the_source_register_and_moves_on() {
        let mut memory = VecMemory(vec![0; 0x10000]);
        // mov cr3, ebx / mov cr8, eax (lock form) / mov cr0, eax
        assert!(crate::Memory::write(
            &mut memory,
            0x1000,
            &[0x0f, 0x22, 0xdb]
        ));
        assert!(crate::Memory::write(
            &mut memory,
            0x2000,
            &[0xf0, 0x0f, 0x22, 0xc0]
        ));
        assert!(crate::Memory::write(
            &mut memory,
            0x3000,
            &[0x0f, 0x22, 0xc0]
        ));
        let mut state = protected_32();
        state.rip = 0x1000;
        state.gpr[gpr::RBX] = 0xdead_0000_0012_3018;
        assert_eq!(
            emulate(&mut state, &memory, 48),
            Ok(Cr3Outcome::Loaded {
                value: 0x0012_3018,
                dirty: dirty::CR3 | dirty::RIP
            })
        );
        assert_eq!((state.cr3, state.rip), (0x0012_3018, 0x1003));
        for rip in [0x2000, 0x3000] {
            state.rip = rip;
            assert!(matches!(
                emulate(&mut state, &memory, 48),
                Err(MmioError::Decode(_))
            ));
        }
        // The core's decoded register wins over the bytes' (they agree on
        // hardware; this shows which is used).
        state.rip = 0x1000;
        state.qualification = CR3_DECODED | gpr::RCX as u64;
        state.gpr[gpr::RCX] = 0x5000;
        assert!(emulate(&mut state, &memory, 48).is_ok());
        assert_eq!(state.cr3, 0x5000);
    }

    #[test]
    fn no_flush_bit_is_dropped_and_reserved_bits_fault() {
        assert_eq!(
            value_loaded(NO_FLUSH | 0x7000 | 5, true, true, 48),
            Some(0x7005)
        );
        // Without PCIDE bit 63 is reserved.
        assert_eq!(value_loaded(NO_FLUSH | 0x7000, true, false, 48), None);
        // Bits from the physical-address width up are reserved.
        assert_eq!(value_loaded(1 << 48 | 0x7000, true, true, 48), None);
        assert_eq!(
            value_loaded(1 << 47 | 0x7000, true, true, 48),
            Some(1 << 47 | 0x7000)
        );
        assert_eq!(value_loaded(1 << 52 | 0x7000, true, true, 52), None);
        assert_eq!(
            value_loaded(1 << 51 | 0x7000, true, true, 52),
            Some(1 << 51 | 0x7000)
        );
        // 32-bit code: the upper half is not the instruction's.
        assert_eq!(
            value_loaded(1 << 52 | 0x7000, false, false, 48),
            Some(0x7000)
        );
        let mut memory = VecMemory(vec![0; 0x10000]);
        assert!(crate::Memory::write(
            &mut memory,
            0x1000,
            &[0x0f, 0x22, 0xd8]
        ));
        let mut state = protected_32();
        state.rip = 0x1000;
        state.gpr[gpr::RAX] = 0x7005;
        assert!(emulate(&mut state, &memory, 48).is_ok());
        assert_eq!((state.cr3, state.rip), (0x7005, 0x1003));
    }
}
