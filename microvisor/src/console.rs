//! The system console: the core's log and the components' lines on COM1.
//!
//! Every line starts with a bracketed source: `[core]` for the core (through
//! the `log` crate; warnings and errors say so), `[<component>]` for a
//! component's `LogWrite`. A component's text is sanitised — control
//! characters become `?`, so one call is exactly one line and no component
//! can forge a line that seems to come from the core or another component.

use core::fmt::{self, Write};

use crate::arch::serial;

/// Writes to the UART, turning `\n` into `\r\n`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                serial::write_byte(b'\r');
            }
            serial::write_byte(byte);
        }
        Ok(())
    }
}

/// Prints formatted text on the console (no prefix).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Console, format_args!($($arg)*));
    }};
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => "ERROR ",
            log::Level::Warn => "WARNING ",
            _ => "",
        };
        print!("[core] {level}{}\n", record.args());
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Brings up the UART and routes the `log` crate to it.
pub fn init() {
    serial::init();
    // Only fails if a logger is already set, which cannot happen: this runs
    // once at boot.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Prints one component line: `[name] text`, sanitised.
pub fn component_line(name: &str, text: &[u8]) {
    let mut console = Console;
    let _ = write!(console, "[{name}] ");
    let mut end = text.len();
    while end > 0 && (text[end - 1] == b'\n' || text[end - 1] == b'\r') {
        end -= 1;
    }
    for &byte in &text[..end] {
        let shown = if byte == b'\t' || (0x20..0x7f).contains(&byte) || byte >= 0x80 {
            byte
        } else {
            b'?'
        };
        serial::write_byte(shown);
    }
    let _ = console.write_str("\n");
}
