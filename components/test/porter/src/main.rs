//! Uses the I/O ports the system grants it, then one it was not granted.
//!
//! With `ports = ["0x70-0x71"]` it reads the CMOS RTC's register A through
//! them (a real device: QEMU's RTC answers 0x26 after firmware) and
//! prints the value; then it reads `port=` (default 0x80, which it holds no
//! grant for), and the core must stop it with a general protection fault.
//! If that read returns, it says so and exits with 1.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::ports::{inb, outb};
use runtime::println;

runtime::component!(main);

/// The CMOS index and data ports.
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
/// RTC register A (time base and rate).
const REGISTER_A: u8 = 0x0a;

fn main(start: &runtime::Start) -> i32 {
    let arguments = start.arguments(&["port"]).or_exit();
    let ungranted: u32 = arguments.number("port", 0x80).or_exit();
    let Ok(ungranted) = u16::try_from(ungranted) else {
        println!("porter: port={ungranted:#x} is not a port (0 to 0xffff)");
        return 2;
    };
    outb(CMOS_INDEX, REGISTER_A);
    let value = inb(CMOS_DATA);
    println!("porter: CMOS register A reads {value:#04x} through the granted ports 0x70-0x71");
    println!("porter: reading port {ungranted:#x}, which was not granted");
    let stray = inb(ungranted);
    println!(
        "porter: port {ungranted:#x} answered {stray:#x}: the core let an ungranted port through"
    );
    1
}
