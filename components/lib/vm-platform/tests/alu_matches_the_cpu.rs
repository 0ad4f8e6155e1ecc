//! The emulated arithmetic group against the CPU that runs the tests: for
//! random operands, widths, operations and carry-in, `AluOperation::compute`
//! must give the result and the six arithmetic flags the host's own
//! `add`/`or`/`adc`/`sbb`/`and`/`sub`/`xor`/`cmp`/`test` give. AF after the
//! logic operations is undefined on the CPU, so it is not compared there.
//!
//! This is the one place in vm-platform with `unsafe`: inline assembly that
//! loads RFLAGS, runs one register-to-register instruction and reads RFLAGS
//! back. It exists only in this test crate, on x86-64 hosts.
#![cfg(target_arch = "x86_64")]

use proptest::prelude::*;
use vm_platform::mmio::{ARITHMETIC_FLAGS, AluOperation, Width};

/// Reserved RFLAGS bit 1, always set.
const RESERVED: u64 = 1 << 1;
const ADJUST: u64 = 1 << 4;

/// Runs `$instruction left, right` on the host in the register width the
/// template modifier `$modifier` names, starting from `$flags`.
macro_rules! host {
    ($instruction:literal, $modifier:literal, $left:expr, $right:expr, $flags:expr) => {{
        let mut left: u64 = $left;
        let mut flags: u64 = $flags;
        // SAFETY: the block pushes `flags` (arithmetic bits and the
        // reserved bit only: no TF, IF, DF or AC change) and pops it into
        // RFLAGS, runs one register-only instruction, and pushes RFLAGS to
        // pop it into `flags`. It touches no memory but the stack slot it
        // pushes and pops (asm! without `nostack` may use the stack), and
        // leaves RSP as it found it.
        unsafe {
            core::arch::asm!(
                "push {flags}",
                "popfq",
                concat!($instruction, " {left", $modifier, "}, {right", $modifier, "}"),
                "pushfq",
                "pop {flags}",
                left = inout(reg) left,
                right = in(reg) $right,
                flags = inout(reg) flags,
            );
        }
        (left, flags)
    }};
}

/// Dispatches on the width for one instruction.
macro_rules! widths {
    ($instruction:literal, $width:expr, $left:expr, $right:expr, $flags:expr) => {
        match $width {
            Width::Byte => host!($instruction, ":l", $left, $right, $flags),
            Width::Word => host!($instruction, ":x", $left, $right, $flags),
            Width::Dword => host!($instruction, ":e", $left, $right, $flags),
            Width::Qword => host!($instruction, ":r", $left, $right, $flags),
        }
    };
}

/// The host's result (cut to `width`) and arithmetic flags.
fn on_host(operation: AluOperation, width: Width, left: u64, right: u64, flags: u64) -> (u64, u64) {
    let flags = flags & ARITHMETIC_FLAGS | RESERVED;
    let (result, flags) = match operation {
        AluOperation::Add => widths!("add", width, left, right, flags),
        AluOperation::Or => widths!("or", width, left, right, flags),
        AluOperation::Adc => widths!("adc", width, left, right, flags),
        AluOperation::Sbb => widths!("sbb", width, left, right, flags),
        AluOperation::And => widths!("and", width, left, right, flags),
        AluOperation::Sub => widths!("sub", width, left, right, flags),
        AluOperation::Xor => widths!("xor", width, left, right, flags),
        AluOperation::Cmp => widths!("cmp", width, left, right, flags),
        AluOperation::Test => widths!("test", width, left, right, flags),
    };
    (result & width.mask(), flags & ARITHMETIC_FLAGS)
}

fn operation() -> impl Strategy<Value = AluOperation> {
    prop::sample::select(vec![
        AluOperation::Add,
        AluOperation::Or,
        AluOperation::Adc,
        AluOperation::Sbb,
        AluOperation::And,
        AluOperation::Sub,
        AluOperation::Xor,
        AluOperation::Cmp,
        AluOperation::Test,
    ])
}

fn width() -> impl Strategy<Value = Width> {
    prop::sample::select(vec![Width::Byte, Width::Word, Width::Dword, Width::Qword])
}

/// Operands that hit the edges (zero, all ones, sign bits) as often as
/// random ones.
fn operand() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        prop::sample::select(vec![
            0,
            1,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(50_000))]

    #[test]
    fn arithmetic_matches_the_host(
        operation in operation(),
        width in width(),
        left in operand(),
        right in operand(),
        flags in any::<u64>(),
    ) {
        let flags = flags & ARITHMETIC_FLAGS | RESERVED;
        let (ours, our_flags) = operation.compute(width, left, right, flags);
        let (theirs, their_flags) = on_host(operation, width, left, right, flags);
        let logic = matches!(
            operation,
            AluOperation::And | AluOperation::Or | AluOperation::Xor | AluOperation::Test
        );
        let compared = if logic { ARITHMETIC_FLAGS & !ADJUST } else { ARITHMETIC_FLAGS };
        if operation.writes_result() {
            prop_assert_eq!(ours, theirs);
        }
        prop_assert_eq!(our_flags & compared, their_flags & compared);
        prop_assert_eq!(our_flags & !ARITHMETIC_FLAGS, flags & !ARITHMETIC_FLAGS);
    }
}
