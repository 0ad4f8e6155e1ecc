//! I/O ports, for driver components the system grants them to (`ports =
//! [...]` in the system file). The core gives a component exactly the
//! ports it was granted: an access to any other port faults the component
//! with a general protection fault, which the core reports to its
//! supervisor, so these functions need no `unsafe` at the call site; what
//! a granted device does with the access is the driver's business.

/// A read and a write function for one access width.
macro_rules! port_access {
    ($read:ident, $write:ident, $type:ty, $register:tt) => {
        #[doc = concat!("Reads a `", stringify!($type), "` from `port`.")]
        #[inline]
        pub fn $read(port: u16) -> $type {
            let value: $type;
            // SAFETY: IN touches no memory; an ungranted port traps to the
            // core, which stops this component.
            unsafe {
                core::arch::asm!(
                    concat!("in ", $register, ", dx"),
                    out($register) value,
                    in("dx") port,
                    options(nomem, nostack),
                )
            };
            value
        }

        #[doc = concat!("Writes a `", stringify!($type), "` to `port`.")]
        #[inline]
        pub fn $write(port: u16, value: $type) {
            // SAFETY: as the read; OUT touches no memory of this program.
            unsafe {
                core::arch::asm!(
                    concat!("out dx, ", $register),
                    in("dx") port,
                    in($register) value,
                    options(nomem, nostack),
                )
            };
        }
    };
}

port_access!(inb, outb, u8, "al");
port_access!(inw, outw, u16, "ax");
port_access!(inl, outl, u32, "eax");
