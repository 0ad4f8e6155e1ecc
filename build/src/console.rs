//! The serial console as the build tool reads it: bytes split into lines,
//! the core's final verdict line, and the matcher scenarios judge lines with.
//!
//! Conventions (from the core): the first line is a banner starting
//! `microvisor `, core lines start `[core] `, component lines start
//! `[<name>] `, and the core's last line is [`HALT_LINE`] followed by
//! `success` or `failure (<reason>)`. Lines are stored without their line
//! ending (`\r\n` or `\n`); bytes that are not UTF-8 are replaced, never
//! fatal. Used by the emulator drivers and the scenario judge.

use microvisor_abi::HALT_LINE;
use serde::Deserialize;

/// What the system said about itself at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure { reason: String },
}

impl Verdict {
    /// The verdict's kind, without the reason.
    pub fn kind(&self) -> VerdictKind {
        match self {
            Self::Success => VerdictKind::Success,
            Self::Failure { .. } => VerdictKind::Failure,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Success => write!(formatter, "success"),
            Self::Failure { reason } if reason.is_empty() => write!(formatter, "failure"),
            Self::Failure { reason } => write!(formatter, "failure ({reason})"),
        }
    }
}

/// A verdict without its reason, as scenario files name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    Success,
    Failure,
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::Success => "success",
            Self::Failure => "failure",
        })
    }
}

/// Reads the core's halt line: `[core] system halted: success` or
/// `[core] system halted: failure (<reason>)`. Any other text after the
/// prefix counts as a failure whose reason is that text.
pub fn parse_halt_line(line: &str) -> Option<Verdict> {
    let rest = line.strip_prefix(HALT_LINE)?.trim();
    if rest == "success" {
        return Some(Verdict::Success);
    }
    let reason = match rest.strip_prefix("failure") {
        Some(reason) => reason.trim().trim_start_matches('(').trim_end_matches(')'),
        None => rest,
    };
    Some(Verdict::Failure {
        reason: reason.to_string(),
    })
}

/// Splits a byte stream into lines as it arrives.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes, returning every line they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(Self::finish(&mut self.pending));
            } else {
                self.pending.push(byte);
            }
        }
        lines
    }

    /// The unterminated rest, if any, once the stream has ended.
    pub fn flush(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| Self::finish(&mut self.pending))
    }

    fn finish(pending: &mut Vec<u8>) -> String {
        if pending.last() == Some(&b'\r') {
            pending.pop();
        }
        let line = String::from_utf8_lossy(pending).into_owned();
        pending.clear();
        line
    }
}

/// The first expectation not met, in order: each text must appear in a line
/// after the place where the previous one was found (later on the same line
/// or on a later line). Returns its index.
pub fn first_unmet(expectations: &[String], lines: &[String]) -> Option<usize> {
    let mut line_index = 0;
    let mut column = 0;
    'expectations: for (index, expected) in expectations.iter().enumerate() {
        while line_index < lines.len() {
            let rest = &lines[line_index][column..];
            if let Some(found) = rest.find(expected.as_str()) {
                column += found + expected.len();
                continue 'expectations;
            }
            line_index += 1;
            column = 0;
        }
        return Some(index);
    }
    None
}

/// The first forbidden text that appears anywhere: (text index, line index).
pub fn first_forbidden(forbidden: &[String], lines: &[String]) -> Option<(usize, usize)> {
    lines.iter().enumerate().find_map(|(line_index, line)| {
        forbidden
            .iter()
            .position(|text| line.contains(text.as_str()))
            .map(|text_index| (text_index, line_index))
    })
}

/// The last `count` lines.
pub fn tail(lines: &[String], count: usize) -> &[String] {
    &lines[lines.len().saturating_sub(count)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|line| line.to_string()).collect()
    }

    #[test]
    fn halt_lines() {
        assert_eq!(
            parse_halt_line("[core] system halted: success"),
            Some(Verdict::Success)
        );
        assert_eq!(
            parse_halt_line("[core] system halted: failure (1 component faulted)"),
            Some(Verdict::Failure {
                reason: "1 component faulted".into()
            })
        );
        assert_eq!(
            parse_halt_line("[core] system halted: failure"),
            Some(Verdict::Failure {
                reason: String::new()
            })
        );
        assert_eq!(
            parse_halt_line("[core] system halted: exploded"),
            Some(Verdict::Failure {
                reason: "exploded".into()
            })
        );
        assert_eq!(
            parse_halt_line("[hello] [core] system halted: success"),
            None
        );
        assert_eq!(
            Verdict::Failure { reason: "x".into() }.to_string(),
            "failure (x)"
        );
        assert_eq!(Verdict::Success.kind(), VerdictKind::Success);
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"micro"), Vec::<String>::new());
        assert_eq!(
            splitter.push(b"visor 0.1\r\n[core] a\n[hel"),
            ["microvisor 0.1", "[core] a"]
        );
        assert_eq!(splitter.push(b"lo] \xff\n"), ["[hello] \u{fffd}"]);
        assert_eq!(splitter.push(b"\n"), [""]);
        assert_eq!(splitter.flush(), None);
        splitter.push(b"partial");
        assert_eq!(splitter.flush().as_deref(), Some("partial"));
    }

    #[test]
    fn expectations_match_in_order() {
        let console = lines(&[
            "microvisor 0.1.0",
            "[hello] Hello from ring 3",
            "[crasher] about to fault: panic",
            "[hello] done",
        ]);
        let expect = |texts: &[&str]| first_unmet(&lines(texts), &console);
        assert_eq!(expect(&[]), None);
        assert_eq!(
            expect(&["microvisor ", "[hello] Hello", "[hello] done"]),
            None
        );
        assert_eq!(expect(&["[hello] done", "[hello] Hello"]), Some(1));
        assert_eq!(
            expect(&["about to fault", "panic"]),
            None,
            "same line, later column"
        );
        assert_eq!(
            expect(&["panic", "about to fault"]),
            Some(1),
            "same line, earlier column"
        );
        assert_eq!(expect(&["[hello]", "[hello]", "[hello]"]), Some(2));
        assert_eq!(expect(&["missing"]), Some(0));
    }

    #[test]
    fn forbidden_text_is_found_anywhere() {
        let console = lines(&["a", "b panic c", "panic"]);
        let forbid = |texts: &[&str]| first_forbidden(&lines(texts), &console);
        assert_eq!(forbid(&["faulted", "panic"]), Some((1, 1)));
        assert_eq!(forbid(&["faulted"]), None);
        assert_eq!(tail(&console, 2), &console[1..]);
        assert_eq!(tail(&console, 10), &console[..]);
    }
}
