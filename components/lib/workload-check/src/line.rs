//! The line contract: what a self-checking workload prints on its console
//! and a campaign reads back (each VM's lines reach the system console as
//! `[<vm name>] <text>`).
//!
//! - `CHECK <workload> ok <n>`: progress; the workload completed its n-th
//!   checked unit (a diskcheck round whose read-back was right, a batch of
//!   netcheck echoes verified). `n` counts from 1 in each boot and only
//!   grows (it may skip: diskcheck numbers its lines by round, and a round
//!   that found something wrong prints none). A workload prints one at
//!   least every ~200 ms of its progress under QEMU's TCG and not much
//!   more often than every ~50 ms.
//! - `CHECK <workload> LOST <detail>`: an acknowledged write was lost: a
//!   block whose write completed and was flushed reads back with other
//!   data (the detail names the block, the round it was written in and
//!   what was found). The workload goes on.
//! - `CHECK <workload> BROKEN <detail>`: any other silent breakage the
//!   workload sees: a request completed with an error status or not at
//!   all, data damaged on the way (a frame whose checksum is wrong, an
//!   echo with the wrong payload), the device gone. The workload goes on
//!   where it can.
//!
//! `<workload>` is [`DISK`] for diskcheck and [`NET`] for netcheck: a word
//! of ASCII lowercase letters, digits, `-` and `_`. Nothing follows `<n>`
//! on an `ok` line; a detail is free text, never empty.

use core::fmt;

/// The first word of every line of the contract.
pub const PREFIX: &str = "CHECK";
/// diskcheck's workload name.
pub const DISK: &str = "disk";
/// netcheck's workload name.
pub const NET: &str = "net";

/// What a line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `ok <n>`: the n-th checked unit completed.
    Ok(u64),
    /// `LOST <detail>`: an acknowledged write was lost.
    Lost(&'a str),
    /// `BROKEN <detail>`: any other breakage the workload saw.
    Broken(&'a str),
}

/// A line of the contract, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check<'a> {
    pub workload: &'a str,
    pub event: Event<'a>,
}

/// A line to print: its [`fmt::Display`] writes it without the newline.
pub struct Report<'a> {
    workload: &'a str,
    what: What<'a>,
}

enum What<'a> {
    Ok(u64),
    Lost(fmt::Arguments<'a>),
    Broken(fmt::Arguments<'a>),
}

/// `CHECK <workload> ok <n>`.
pub fn ok(workload: &str, n: u64) -> Report<'_> {
    Report {
        workload,
        what: What::Ok(n),
    }
}

/// `CHECK <workload> LOST <detail>`.
pub fn lost<'a>(workload: &'a str, detail: fmt::Arguments<'a>) -> Report<'a> {
    Report {
        workload,
        what: What::Lost(detail),
    }
}

/// `CHECK <workload> BROKEN <detail>`.
pub fn broken<'a>(workload: &'a str, detail: fmt::Arguments<'a>) -> Report<'a> {
    Report {
        workload,
        what: What::Broken(detail),
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let workload = self.workload;
        match &self.what {
            What::Ok(n) => write!(formatter, "{PREFIX} {workload} ok {n}"),
            What::Lost(detail) => write!(formatter, "{PREFIX} {workload} LOST {detail}"),
            What::Broken(detail) => write!(formatter, "{PREFIX} {workload} BROKEN {detail}"),
        }
    }
}

/// Parses a line's text (what the VM printed, without the console's
/// `[<vm name>] ` prefix; trailing white space is ignored). `None` for a
/// line that is not of the contract, or that breaks it (an `ok` without
/// a number or with more after it, an empty detail, a bad workload name).
pub fn parse(text: &str) -> Option<Check<'_>> {
    let rest = text.trim_end().strip_prefix(PREFIX)?.strip_prefix(' ')?;
    let (workload, rest) = rest.split_once(' ')?;
    if workload.is_empty()
        || !workload.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        })
    {
        return None;
    }
    let event = if let Some(number) = rest.strip_prefix("ok ") {
        if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        Event::Ok(number.parse().ok()?)
    } else if let Some(detail) = rest.strip_prefix("LOST ") {
        Event::Lost(nonempty(detail)?)
    } else if let Some(detail) = rest.strip_prefix("BROKEN ") {
        Event::Broken(nonempty(detail)?)
    } else {
        return None;
    };
    Some(Check { workload, event })
}

/// Parses a system console line, `[<vm name>] <text>`: the VM's name and
/// the line of the contract, if it is one.
pub fn parse_console(line: &str) -> Option<(&str, Check<'_>)> {
    let (name, text) = line.strip_prefix('[')?.split_once("] ")?;
    if name.is_empty() {
        return None;
    }
    Some((name, parse(text)?))
}

fn nonempty(detail: &str) -> Option<&str> {
    let detail = detail.trim();
    (!detail.is_empty()).then_some(detail)
}

/// Which of many like reports a workload prints: the first
/// [`Limiter::FIRST`], then every [`Limiter::EVERY`]-th, so that a fault
/// that damages every frame cannot flood the (serial) console.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limiter {
    seen: u64,
}

impl Limiter {
    /// Reports printed before the limit starts.
    pub const FIRST: u64 = 50;
    /// Then one report printed in this many.
    pub const EVERY: u64 = 1000;

    pub const fn new() -> Self {
        Self { seen: 0 }
    }

    /// Counts one more report: `Some(left_out)` when it is to be printed,
    /// with how many were left out since the last one printed.
    pub fn admit(&mut self) -> Option<u64> {
        self.seen = self.seen.saturating_add(1);
        if self.seen <= Self::FIRST {
            Some(0)
        } else if (self.seen - Self::FIRST).is_multiple_of(Self::EVERY) {
            Some(Self::EVERY - 1)
        } else {
            None
        }
    }

    /// Reports counted so far, printed or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;
    use std::string::ToString;

    use super::*;

    #[test]
    fn reports_print_the_contract() {
        assert_eq!(ok(DISK, 7).to_string(), "CHECK disk ok 7");
        assert_eq!(
            lost(DISK, format_args!("block {} (written in round {})", 3, 9)).to_string(),
            "CHECK disk LOST block 3 (written in round 9)"
        );
        assert_eq!(
            broken(
                NET,
                format_args!("an ECHO numbered {} has a bad checksum", 12)
            )
            .to_string(),
            "CHECK net BROKEN an ECHO numbered 12 has a bad checksum"
        );
    }

    #[test]
    fn what_is_printed_parses_back() {
        for n in [1, 41, u64::MAX] {
            let text = ok(NET, n).to_string();
            assert_eq!(
                parse(&text),
                Some(Check {
                    workload: NET,
                    event: Event::Ok(n)
                })
            );
        }
        let text = lost(DISK, format_args!("block 17 holds zeros")).to_string();
        assert_eq!(
            parse(&text),
            Some(Check {
                workload: DISK,
                event: Event::Lost("block 17 holds zeros")
            })
        );
        let text = broken(DISK, format_args!("request timed out")).to_string();
        assert_eq!(
            parse(&text).unwrap().event,
            Event::Broken("request timed out")
        );
    }

    #[test]
    fn parses_console_lines() {
        assert_eq!(
            parse_console("[diskcheck] CHECK disk ok 12"),
            Some((
                "diskcheck",
                Check {
                    workload: DISK,
                    event: Event::Ok(12)
                }
            ))
        );
        assert_eq!(
            parse_console("[b] CHECK net BROKEN a PING numbered 4 is wrong\r\n"),
            Some((
                "b",
                Check {
                    workload: NET,
                    event: Event::Broken("a PING numbered 4 is wrong")
                }
            ))
        );
        assert_eq!(parse_console("[a] netcheck: 500/2000 frames"), None);
        assert_eq!(parse_console("CHECK disk ok 1"), None);
        assert_eq!(parse_console("[] CHECK disk ok 1"), None);
    }

    #[test]
    fn refuses_lines_that_break_the_contract() {
        for text in [
            "",
            "CHECK",
            "CHECK disk",
            "CHECK disk ok",
            "CHECK disk ok ",
            "CHECK disk ok x",
            "CHECK disk ok 12 more",
            "CHECK disk ok -1",
            "CHECK disk ok +1",
            "CHECK disk ok 99999999999999999999999",
            "CHECK disk OK 1",
            "CHECK disk lost block 1",
            "CHECK disk LOST",
            "CHECK disk LOST ",
            "CHECK disk BROKEN   ",
            "CHECK Disk ok 1",
            "CHECK  disk ok 1",
            "CHECKS disk ok 1",
            "check disk ok 1",
            " CHECK disk ok 1",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        assert_eq!(
            parse("CHECK net-2 ok 0"),
            Some(Check {
                workload: "net-2",
                event: Event::Ok(0)
            })
        );
    }

    #[test]
    fn the_limiter_prints_the_first_then_one_in_many() {
        let mut limiter = Limiter::new();
        let printed: std::vec::Vec<(u64, u64)> = (1..=5000)
            .filter_map(|n| limiter.admit().map(|left_out| (n, left_out)))
            .collect();
        assert_eq!(printed.len(), 50 + 4);
        assert!(printed[..50].iter().all(|&(_, left_out)| left_out == 0));
        assert_eq!(
            &printed[50..],
            &[(1050, 999), (2050, 999), (3050, 999), (4050, 999)]
        );
        assert_eq!(limiter.seen(), 5000);
        let _ = format!("{limiter:?}");
    }
}
