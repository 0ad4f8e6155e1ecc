//! Wild accesses, one instruction each, in ring 0 on the boot tables:
//! port reads and writes of every width, MMIO reads and writes of every
//! width in the instruction forms the world switcher's decoder emulates
//! (`mov`, `movzx`/`movsx`, the arithmetic group, `test`, `xchg`, `stos`,
//! `movs`), MSR reads and writes and hypercalls. Each runs as a
//! [`crate::sandbox::probe`]: an exception it raises (a #GP for an MSR
//! nobody has, a #UD for an unknown hypercall, whatever the switcher
//! injects for an access) is counted and the instruction skipped. The
//! encodings are fixed (registers named in the assembly), so their
//! lengths are known.

use core::arch::asm;

use crate::sandbox::probe;

/// Reads `width` bytes (1, 2 or 4) from `port`.
pub fn port_read(port: u16, width: u8) -> u32 {
    let value: u32;
    // SAFETY: port reads touch no memory of the program; what they do to
    // a device is the test (the ports that end the boot are the caller's
    // choice).
    unsafe {
        match width {
            1 => asm!("in al, dx", in("dx") port, out("eax") value, options(nomem, nostack)),
            2 => {
                asm!("xor eax, eax", "in ax, dx", in("dx") port, out("eax") value, options(nomem, nostack))
            }
            _ => asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)),
        }
    }
    value
}

/// Writes `width` bytes (1, 2 or 4) of `value` to `port`.
pub fn port_write(port: u16, width: u8, value: u32) {
    // SAFETY: as for `port_read`.
    unsafe {
        match width {
            1 => asm!("out dx, al", in("dx") port, in("eax") value, options(nomem, nostack)),
            2 => asm!("out dx, ax", in("dx") port, in("eax") value, options(nomem, nostack)),
            _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)),
        }
    }
}

/// RDMSR; `Err(vector)` when it faulted.
pub fn rdmsr(msr: u32) -> Result<u64, u8> {
    match probe(2, || guest_runtime::arch::rdmsr(msr)) {
        (value, None) => Ok(value),
        (_, Some(vector)) => Err(vector),
    }
}

/// WRMSR; `Err(vector)` when it faulted.
pub fn wrmsr(msr: u32, value: u64) -> Result<(), u8> {
    // SAFETY: the callers keep away from the MSRs this guest stands on
    // (`fuzz_edges::guest::msr_write_breaks_guest`) except to end a boot.
    match probe(2, || unsafe { guest_runtime::arch::wrmsr(msr, value) }) {
        ((), None) => Ok(()),
        ((), Some(vector)) => Err(vector),
    }
}

/// A hypercall; `Err(vector)` when it faulted (#UD for a number the
/// hypervisor does not know).
pub fn hypercall(number: u64, rbx: u64, rcx: u64, rdx: u64) -> Result<u64, u8> {
    match probe(guest_runtime::hypervisor::HYPERCALL_LENGTH, || {
        guest_runtime::hypervisor::hypercall(number, rbx, rcx, rdx)
    }) {
        (answer, None) => Ok(answer.rax),
        (_, Some(vector)) => Err(vector),
    }
}

/// The instruction forms of an MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Load,
    Store,
    /// `movzx`/`movsx`/`movsxd` loads.
    Extend,
    /// `or`/`and`/`add`/`xor` into memory.
    Arithmetic,
    /// `test` and `cmp` (read only).
    Compare,
    Exchange,
    /// `stos` of one element.
    Store1,
    /// `movs` of one element, from RAM to the device or back.
    Move,
}

/// Every form, to draw from.
pub const FORMS: [Form; 8] = [
    Form::Load,
    Form::Store,
    Form::Extend,
    Form::Arithmetic,
    Form::Compare,
    Form::Exchange,
    Form::Store1,
    Form::Move,
];

/// A word of RAM for `movs` to copy from and to.
static mut RAM_WORD: u64 = 0;

/// One MMIO access at `address` (`width`: 1, 2, 4 or 8) in `form`, with
/// `value` for what it writes; returns what it read and the exception it
/// raised, if any. `choice` picks among a form's variants.
pub fn mmio(address: u64, width: u8, form: Form, value: u64, choice: u64) -> (u64, Option<u8>) {
    macro_rules! access {
        ($length:expr, $($asm:tt)*) => {{
            let mut out: u64 = value;
            // SAFETY: `address` is a device page or beyond RAM (the
            // caller's choice); the boot tables map it, so the access
            // exits to the world switcher, which emulates it, injects a
            // fault (skipped here) or stops the VM; no memory of the
            // program is touched (`movs` reads or writes RAM_WORD).
            let (_, fault) = probe($length, || unsafe {
                asm!($($asm)*, inout("rax") out, inout("rdi") address => _, in("rsi") value, options(nostack));
            });
            (out, fault)
        }};
    }
    match (form, width, choice % 4) {
        (Form::Load, 1, _) => access!(2, "mov al, [rdi]"),
        (Form::Load, 2, _) => access!(3, "mov ax, [rdi]"),
        (Form::Load, 4, _) => access!(2, "mov eax, [rdi]"),
        (Form::Load, _, _) => access!(3, "mov rax, [rdi]"),
        (Form::Store, 1, _) => access!(3, "mov [rdi], sil"),
        (Form::Store, 2, _) => access!(3, "mov [rdi], si"),
        (Form::Store, 4, _) => access!(2, "mov [rdi], esi"),
        (Form::Store, _, _) => access!(3, "mov [rdi], rsi"),
        (Form::Extend, 1, 0 | 1) => access!(3, "movzx eax, byte ptr [rdi]"),
        (Form::Extend, 1, _) => access!(4, "movsx rax, byte ptr [rdi]"),
        (Form::Extend, 2, 0 | 1) => access!(3, "movzx eax, word ptr [rdi]"),
        (Form::Extend, 2, _) => access!(4, "movsx rax, word ptr [rdi]"),
        (Form::Extend, _, _) => access!(3, "movsxd rax, dword ptr [rdi]"),
        (Form::Arithmetic, 1, 0) => access!(3, "or [rdi], sil"),
        (Form::Arithmetic, 1, 1) => access!(3, "and [rdi], sil"),
        (Form::Arithmetic, 1, _) => access!(3, "add [rdi], sil"),
        (Form::Arithmetic, 2, _) => access!(3, "xor [rdi], si"),
        (Form::Arithmetic, 4, 0) => access!(2, "or [rdi], esi"),
        (Form::Arithmetic, 4, 1) => access!(2, "and [rdi], esi"),
        (Form::Arithmetic, 4, 2) => access!(2, "sub [rdi], esi"),
        (Form::Arithmetic, 4, _) => access!(2, "add eax, [rdi]"),
        (Form::Arithmetic, _, _) => access!(3, "xor [rdi], rsi"),
        (Form::Compare, 1, _) => access!(3, "test [rdi], sil"),
        (Form::Compare, 2, _) => access!(3, "cmp [rdi], si"),
        (Form::Compare, 4, _) => access!(2, "test [rdi], esi"),
        (Form::Compare, _, _) => access!(3, "cmp rsi, [rdi]"),
        (Form::Exchange, 1, _) => access!(2, "xchg [rdi], al"),
        (Form::Exchange, 2, _) => access!(3, "xchg [rdi], ax"),
        (Form::Exchange, 4, _) => access!(2, "xchg [rdi], eax"),
        (Form::Exchange, _, _) => access!(3, "xchg [rdi], rax"),
        (Form::Store1, 1, _) => access!(1, "stosb"),
        (Form::Store1, 2, _) => access!(2, "stosw"),
        (Form::Store1, 4, _) => access!(1, "stosd"),
        (Form::Store1, _, _) => access!(2, "stosq"),
        (Form::Move, _, _) => {
            let ram = &raw mut RAM_WORD as u64;
            let (from, to) = if choice & 1 == 0 {
                (ram, address)
            } else {
                (address, ram)
            };
            let mut out = 0u64;
            let length = if matches!(width, 2 | 8) { 2 } else { 1 };
            // SAFETY: one of the two operands is RAM_WORD (8 bytes, at
            // most `width` of them copied), the other the device address,
            // as above.
            let (_, fault) = probe(length, || unsafe {
                match width {
                    1 => {
                        asm!("movsb", inout("rsi") from => _, inout("rdi") to => _, options(nostack))
                    }
                    2 => {
                        asm!("movsw", inout("rsi") from => _, inout("rdi") to => _, options(nostack))
                    }
                    4 => {
                        asm!("movsd", inout("rsi") from => _, inout("rdi") to => _, options(nostack))
                    }
                    _ => {
                        asm!("movsq", inout("rsi") from => _, inout("rdi") to => _, options(nostack))
                    }
                }
            });
            if choice & 1 == 1 {
                // SAFETY: a plain read of this guest's own word.
                out = unsafe { (&raw const RAM_WORD).read_volatile() };
            }
            (out, fault)
        }
    }
}
