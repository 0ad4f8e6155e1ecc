//! Quantities as people write them in a system config: durations, sizes,
//! numbers (decimal or hex), I/O-port ranges and interrupt lines.
//!
//! Each type parses from the text forms the format documents and
//! deserializes from TOML with an `expected ...` description that ends up in
//! the diagnostics, so a wrong value reads "`budget` expects a duration such
//! as \"2ms\"" rather than a serde type name. Parsing is pure and never
//! panics; arithmetic is checked, so "99999999999s" is an error, not a wrap.
//! The `format_*` functions print values the way the format reads them.

use std::fmt;

use microvisor_abi::spec::Wiring;
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

/// Splits "123 unit" into its digits (with `_` separators removed) and unit.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(end);
    if digits.is_empty() || digits.starts_with('_') {
        return None;
    }
    let value = digits.replace('_', "").parse::<u64>().ok()?;
    Some((value, unit.trim()))
}

/// Why [`parse_scaled`] refused a text.
enum Scaled {
    /// It does not start with a number.
    NotANumber,
    /// The unit after the number is not one of the units (maybe empty).
    UnknownUnit(String),
    /// Anything else, as a message.
    Invalid(String),
}

/// A number with a unit, in the smallest unit: "1.5ms", with `ms` scaling
/// by 10^6, is 1_500_000. A fraction is allowed when the value comes out a
/// whole number of the smallest unit, which `what` names ("nanoseconds").
fn parse_scaled(text: &str, units: &[(&str, u64)], what: &str) -> Result<u64, Scaled> {
    let (whole, rest) = split_number(text).ok_or(Scaled::NotANumber)?;
    let (fraction, unit) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let (digits, unit) = after.split_at(end);
            if digits.is_empty() {
                return Err(Scaled::Invalid(format!(
                    "\"{text}\" has no digits after its '.'"
                )));
            }
            (digits, unit.trim())
        }
        None => ("", rest),
    };
    let scale = units
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| Scaled::UnknownUnit(unit.to_string()))?;
    // whole * scale + fraction * scale / 10^digits, exactly.
    let significant = fraction.trim_end_matches('0');
    let part = match significant.len() {
        0 => Some(0),
        length => 10u128
            .checked_pow(length as u32)
            .zip(significant.parse::<u128>().ok())
            .and_then(|(denominator, numerator)| {
                let product = numerator * u128::from(scale);
                (product % denominator == 0).then_some(product / denominator)
            }),
    };
    let Some(part) = part else {
        return Err(Scaled::Invalid(format!(
            "\"{text}\" is not a whole number of {what}"
        )));
    };
    u128::from(whole)
        .checked_mul(u128::from(scale))
        .and_then(|value| value.checked_add(part))
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| Scaled::Invalid(format!("\"{text}\" is too large")))
}

/// A non-negative integer written in decimal, or in hex with `0x`.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) if !hex.is_empty() && !hex.starts_with('_') => {
            u64::from_str_radix(&hex.replace('_', ""), 16).ok()
        }
        Some(_) => None,
        None => split_number(trimmed)
            .filter(|(_, unit)| unit.is_empty())
            .map(|(value, _)| value),
    };
    parsed.ok_or_else(|| {
        format!("\"{text}\" is not a number (write decimal, or hex such as \"0x3f8\")")
    })
}

/// Microseconds may be written `us`, `µs` (U+00B5 MICRO SIGN) or `μs`
/// (U+03BC GREEK SMALL LETTER MU): keyboards produce both.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// A duration in nanoseconds: `"10ms"`, `"250us"`, `"1.5ms"`, `"500ns"`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    parse_scaled(text, &DURATION_UNITS, "nanoseconds").map_err(|error| match error {
        Scaled::NotANumber => {
            format!("\"{text}\" is not a duration (write a number and a unit, such as \"10ms\")")
        }
        Scaled::UnknownUnit(unit) if unit.is_empty() => format!(
            "\"{text}\" has no unit (write ns, us, ms or s, such as \"{}ms\")",
            text.trim()
        ),
        Scaled::UnknownUnit(unit) => {
            let hint =
                crate::diagnostic::closest(&unit, DURATION_UNITS.iter().map(|(name, _)| *name))
                    .map_or(String::new(), |close| format!("; did you mean '{close}'?"));
            format!("\"{text}\" has an unknown unit '{unit}' (use ns, us, ms or s{hint})")
        }
        Scaled::Invalid(message) => message,
    })
}

const SIZE_UNITS: [(&str, u64); 4] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// A size in bytes: `"64KiB"`, `"1.5MiB"`, `"4096"`, `"0x1000"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    if let Ok(bytes) = parse_number(text) {
        return Ok(bytes);
    }
    // A plain "2.5" is bytes too (and must come out whole).
    let units: Vec<(&str, u64)> = std::iter::once(("", 1)).chain(SIZE_UNITS).collect();
    parse_scaled(text, &units, "bytes").map_err(|error| match error {
        Scaled::NotANumber => {
            format!("\"{text}\" is not a size (write a number and a unit, such as \"64KiB\")")
        }
        Scaled::UnknownUnit(unit) => {
            let binary = match unit.to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => Some("KiB"),
                "m" | "mb" | "mib" => Some("MiB"),
                "g" | "gb" | "gib" => Some("GiB"),
                "b" | "bytes" => Some("B"),
                _ => None,
            };
            let hint = binary.map_or(String::new(), |close| format!("; did you mean '{close}'?"));
            format!("\"{text}\" has an unknown unit '{unit}' (use B, KiB, MiB or GiB{hint})")
        }
        Scaled::Invalid(message) => message,
    })
}

/// An inclusive range of I/O ports: `"0x3f8-0x3ff"`, `"0x60"`.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (parse_number(first)?, parse_number(last)?),
        None => {
            let port = parse_number(text)?;
            (port, port)
        }
    };
    if last > 0xffff {
        return Err(format!(
            "port range \"{text}\" goes past the last port 0xffff"
        ));
    }
    if first > last {
        return Err(format!("port range \"{text}\" ends before it starts"));
    }
    Ok((first as u16, last as u16))
}

/// Prints nanoseconds in the largest unit that divides them exactly.
pub fn format_duration(nanoseconds: u64) -> String {
    for (unit, scale) in [("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)] {
        if nanoseconds != 0 && nanoseconds.is_multiple_of(scale) {
            return format!("{}{unit}", nanoseconds / scale);
        }
    }
    format!("{nanoseconds}ns")
}

/// Prints bytes in the largest binary unit that divides them exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// Implements `Deserialize` for a newtype over `u64` that accepts TOML
/// integers (when `$integers` is true) and strings through a parser.
macro_rules! quantity {
    ($name:ident, $parse:expr, $expecting:literal, $integers:literal) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct QuantityVisitor;
                impl Visitor<'_> for QuantityVisitor {
                    type Value = $name;
                    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                        formatter.write_str($expecting)
                    }
                    fn visit_u64<E: de::Error>(self, value: u64) -> Result<$name, E> {
                        if $integers {
                            Ok($name(value))
                        } else {
                            Err(E::invalid_type(Unexpected::Unsigned(value), &self))
                        }
                    }
                    fn visit_i64<E: de::Error>(self, value: i64) -> Result<$name, E> {
                        match u64::try_from(value) {
                            Ok(value) => self.visit_u64(value),
                            Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
                        }
                    }
                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$name, E> {
                        $parse(text).map($name).map_err(E::custom)
                    }
                }
                deserializer.deserialize_any(QuantityVisitor)
            }
        }
    };
}

/// A non-negative integer; strings such as `"0x3f8"` are read as hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number(pub u64);
quantity!(Number, parse_number, "a non-negative integer", true);

/// A duration in nanoseconds, written as a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub u64);
quantity!(
    Duration,
    parse_duration,
    "a duration such as \"10ms\"",
    false
);

/// A size in bytes, written as an integer or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);
quantity!(Size, parse_size, "a size such as \"64KiB\"", true);

/// An inclusive I/O-port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RangeVisitor;
        impl Visitor<'_> for RangeVisitor {
            type Value = PortRange;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a port or port range such as \"0x3f8-0x3ff\"")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<PortRange, E> {
                self.visit_str(&value.to_string())
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<PortRange, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PortRange, E> {
                parse_port_range(text)
                    .map(|(first, last)| PortRange { first, last })
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(RangeVisitor)
    }
}

/// An interrupt line and how its device drives it: `8`, `"8"` or
/// `"9 level-high"` (`edge-high`, `edge-low`, `level-high`, `level-low`;
/// without one, as firmware wires a PC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptLine {
    pub line: u64,
    pub wiring: Wiring,
}

/// Reads `"9"` or `"9 level-high"`.
pub fn parse_interrupt_line(text: &str) -> Result<InterruptLine, String> {
    let text = text.trim();
    let (line, wiring) = match text.split_once(char::is_whitespace) {
        Some((line, wiring)) => (line, Some(wiring.trim())),
        None => (text, None),
    };
    let line = parse_number(line)?;
    let wiring = match wiring {
        None => Wiring::Default,
        Some(name) => [
            Wiring::EdgeHigh,
            Wiring::EdgeLow,
            Wiring::LevelHigh,
            Wiring::LevelLow,
        ]
        .into_iter()
        .find(|wiring| wiring.name() == Some(name))
        .ok_or_else(|| {
            format!(
                "interrupt line \"{text}\": unknown wiring '{name}' (edge-high, edge-low, level-high or level-low)"
            )
        })?,
    };
    Ok(InterruptLine { line, wiring })
}

impl<'de> Deserialize<'de> for InterruptLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor;
        impl Visitor<'_> for LineVisitor {
            type Value = InterruptLine;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an interrupt line such as 8 or \"9 level-high\"")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<InterruptLine, E> {
                Ok(InterruptLine {
                    line: value,
                    wiring: Wiring::Default,
                })
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<InterruptLine, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(value), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<InterruptLine, E> {
                parse_interrupt_line(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(LineVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_lines() {
        assert_eq!(
            parse_interrupt_line("8"),
            Ok(InterruptLine {
                line: 8,
                wiring: Wiring::Default
            })
        );
        assert_eq!(
            parse_interrupt_line(" 9  level-high "),
            Ok(InterruptLine {
                line: 9,
                wiring: Wiring::LevelHigh
            })
        );
        assert_eq!(
            parse_interrupt_line("0x10 edge-low").map(|l| (l.line, l.wiring)),
            Ok((16, Wiring::EdgeLow))
        );
        assert!(
            parse_interrupt_line("9 level")
                .unwrap_err()
                .contains("unknown wiring 'level'")
        );
        assert!(parse_interrupt_line("nine").is_err());
        assert!(parse_interrupt_line("").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("42"), Ok(42));
        assert_eq!(parse_number("0x3f8"), Ok(0x3f8));
        assert_eq!(parse_number("0xfebd_0000"), Ok(0xfebd_0000));
        assert_eq!(parse_number("1_000"), Ok(1000));
        assert_eq!(
            parse_number("0x"),
            Err("\"0x\" is not a number (write decimal, or hex such as \"0x3f8\")".into())
        );
        assert!(parse_number("12ab").is_err());
        assert!(parse_number("99999999999999999999999").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10ms"), Ok(10_000_000));
        assert_eq!(parse_duration("2 ms"), Ok(2_000_000));
        assert_eq!(parse_duration("250us"), Ok(250_000));
        assert_eq!(parse_duration("250µs"), Ok(250_000));
        assert_eq!(parse_duration("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration("7ns"), Ok(7));
        assert_eq!(
            parse_duration("10"),
            Err("\"10\" has no unit (write ns, us, ms or s, such as \"10ms\")".into())
        );
        assert_eq!(
            parse_duration("10sm"),
            Err(
                "\"10sm\" has an unknown unit 'sm' (use ns, us, ms or s; did you mean 'ms'?)"
                    .into()
            )
        );
        assert_eq!(
            parse_duration("fast"),
            Err("\"fast\" is not a duration (write a number and a unit, such as \"10ms\")".into())
        );
        assert_eq!(
            parse_duration("99999999999999s"),
            Err("\"99999999999999s\" is too large".into())
        );
    }

    #[test]
    fn microseconds_in_either_micro_character() {
        assert_eq!(parse_duration("500\u{3bc}s"), Ok(500_000), "Greek mu");
        assert_eq!(parse_duration("500\u{b5}s"), Ok(500_000), "micro sign");
    }

    #[test]
    fn fractions_that_come_out_whole() {
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("0.25s"), Ok(250_000_000));
        assert_eq!(parse_duration("2.000us"), Ok(2_000));
        assert_eq!(
            parse_duration("1.0005us"),
            Err("\"1.0005us\" is not a whole number of nanoseconds".into())
        );
        assert_eq!(
            parse_duration("1.ms"),
            Err("\"1.ms\" has no digits after its '.'".into())
        );
        assert_eq!(
            parse_duration("1.5"),
            Err("\"1.5\" has no unit (write ns, us, ms or s, such as \"1.5ms\")".into())
        );
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("0.5MiB"), Ok(512 << 10));
        assert_eq!(
            parse_size("1.1KiB"),
            Err("\"1.1KiB\" is not a whole number of bytes".into())
        );
        assert_eq!(
            parse_duration("18446744073.709551616s"),
            Err("\"18446744073.709551616s\" is too large".into())
        );
        assert_eq!(
            parse_duration("0.00000000000000000000000000000000000000001s"),
            Err("\"0.00000000000000000000000000000000000000001s\" is not a whole number of nanoseconds".into())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16 MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("12B"), Ok(12));
        assert_eq!(
            parse_size("4KB"),
            Err(
                "\"4KB\" has an unknown unit 'KB' (use B, KiB, MiB or GiB; did you mean 'KiB'?)"
                    .into()
            )
        );
        assert_eq!(
            parse_size("big"),
            Err("\"big\" is not a size (write a number and a unit, such as \"64KiB\")".into())
        );
        assert_eq!(
            parse_size("99999999999GiB"),
            Err("\"99999999999GiB\" is too large".into())
        );
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("0x3f8-0x3ff"), Ok((0x3f8, 0x3ff)));
        assert_eq!(parse_port_range("0x60"), Ok((0x60, 0x60)));
        assert_eq!(parse_port_range("96 - 100"), Ok((96, 100)));
        assert_eq!(
            parse_port_range("0x3ff-0x3f8"),
            Err("port range \"0x3ff-0x3f8\" ends before it starts".into())
        );
        assert_eq!(
            parse_port_range("0xfff0-0x10000"),
            Err("port range \"0xfff0-0x10000\" goes past the last port 0xffff".into())
        );
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(10_000_000), "10ms");
        assert_eq!(format_duration(2_500_000), "2500us");
        assert_eq!(format_duration(1_000_000_000), "1s");
        assert_eq!(format_duration(7), "7ns");
        assert_eq!(format_duration(0), "0ns");
        assert_eq!(format_size(65536), "64KiB");
        assert_eq!(format_size(16 << 20), "16MiB");
        assert_eq!(format_size(4097), "4097B");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn parsers_round_trip_their_formatting() {
        for nanoseconds in [1, 999, 1_000, 1_500_000, 10_000_000, 3_000_000_000] {
            assert_eq!(
                parse_duration(&format_duration(nanoseconds)),
                Ok(nanoseconds)
            );
        }
        for bytes in [1, 4096, 65536, 3 << 20, 5 << 30] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
