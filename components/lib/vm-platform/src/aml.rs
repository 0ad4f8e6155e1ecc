//! A small ACPI Machine Language encoder for the DSDT: the few constructs a
//! static platform description needs (ACPI 6.5, chapter 20 "ACPI Machine
//! Language Specification", and 6.4 "Resource Data Types").
//!
//! Everything is written into a [`Writer`]; containers (`Scope`, `Device`,
//! `Package`, resource-template `Buffer`) take a closure for their body and
//! put the package length in front once the body is written. Invalid input
//! (a name that is not a valid NameSeg path, an ISA IRQ above 15) marks the
//! writer failed instead of panicking. Nothing here evaluates AML: methods
//! are not needed for a platform whose devices are fixed.

use crate::writer::{Error, Writer};

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const PARENT_PREFIX_CHAR: u8 = b'^';

/// The most bytes a package length can count (28 bits).
const PACKAGE_LENGTH_MAX: usize = (1 << 28) - 1;

/// The encoding of a package length for `content` bytes that follow it:
/// the bytes and how many of them are used (ACPI 6.5, 20.2.4).
fn package_length(content: usize) -> Option<([u8; 4], usize)> {
    if content < 63 {
        return Some(([content as u8 + 1, 0, 0, 0], 1));
    }
    for count in 2..=4usize {
        let total = content + count;
        if total < 1 << (4 + 8 * (count - 1)) && total <= PACKAGE_LENGTH_MAX {
            let lead = ((count as u8 - 1) << 6) | (total & 0x0f) as u8;
            let rest = (total >> 4).to_le_bytes();
            return Some(([lead, rest[0], rest[1], rest[2]], count));
        }
    }
    None
}

/// Writes `body` and puts its package length in front of it.
fn with_package_length(writer: &mut Writer, body: impl FnOnce(&mut Writer)) {
    let start = writer.position();
    body(writer);
    let content = writer.position() - start;
    match package_length(content) {
        Some((bytes, count)) => writer.insert(start, &bytes[..count]),
        None => writer.fail(Error::Invalid),
    }
}

/// The shortest encoding of an integer (ZeroOp, OneOp or a prefixed
/// constant) and its length.
fn integer_bytes(value: u64) -> ([u8; 9], usize) {
    let mut bytes = [0u8; 9];
    let le = value.to_le_bytes();
    let (prefix, width) = match value {
        0 => return ([ZERO_OP, 0, 0, 0, 0, 0, 0, 0, 0], 1),
        1 => return ([ONE_OP, 0, 0, 0, 0, 0, 0, 0, 0], 1),
        2..=0xff => (BYTE_PREFIX, 1),
        0x100..=0xffff => (WORD_PREFIX, 2),
        0x1_0000..=0xffff_ffff => (DWORD_PREFIX, 4),
        _ => (QWORD_PREFIX, 8),
    };
    bytes[0] = prefix;
    bytes[1..=width].copy_from_slice(&le[..width]);
    (bytes, width + 1)
}

/// An integer constant.
pub fn integer(writer: &mut Writer, value: u64) {
    let (bytes, length) = integer_bytes(value);
    writer.bytes(&bytes[..length]);
}

/// A string constant (ASCII without NUL).
pub fn string(writer: &mut Writer, text: &str) {
    if !text.bytes().all(|byte| (1..=0x7f).contains(&byte)) {
        writer.fail(Error::Invalid);
    }
    writer.u8(STRING_PREFIX);
    writer.bytes(text.as_bytes());
    writer.u8(0);
}

/// A compressed EISA id such as `"PNP0501"` (three upper-case letters and
/// four hex digits), as the DWord ASL's `EisaId()` makes.
pub fn eisa_id(writer: &mut Writer, id: &str) {
    match eisa_id_value(id) {
        Some(value) => {
            writer.u8(DWORD_PREFIX);
            writer.u32(value);
        }
        None => writer.fail(Error::Invalid),
    }
}

fn eisa_id_value(id: &str) -> Option<u32> {
    let bytes = id.as_bytes();
    if bytes.len() != 7 {
        return None;
    }
    let mut value = 0u32;
    for &letter in &bytes[..3] {
        if !letter.is_ascii_uppercase() {
            return None;
        }
        value = value << 5 | u32::from(letter - b'@');
    }
    for &digit in &bytes[3..] {
        value = value << 4 | (digit as char).to_digit(16)?;
    }
    // The id is stored big-endian: the letters come first in memory.
    Some(value.swap_bytes())
}

/// A name path: an optional `\` or `^` prefix, then up to 255 NameSegs
/// separated by `.`; segments shorter than four characters are padded with
/// `_` as ASL does.
pub fn name_string(writer: &mut Writer, path: &str) {
    let bytes = path.as_bytes();
    let prefix = bytes
        .iter()
        .take_while(|&&byte| byte == ROOT_CHAR || byte == PARENT_PREFIX_CHAR)
        .count();
    let (prefix_bytes, rest) = bytes.split_at(prefix);
    let valid_prefix = matches!(prefix_bytes, [] | [ROOT_CHAR])
        || prefix_bytes.iter().all(|&byte| byte == PARENT_PREFIX_CHAR);
    if !valid_prefix {
        writer.fail(Error::Invalid);
    }
    writer.bytes(prefix_bytes);
    if rest.is_empty() {
        writer.u8(0); // NullName
        return;
    }
    let count = rest.split(|&byte| byte == b'.').count();
    match count {
        1 => {}
        2 => writer.u8(DUAL_NAME_PREFIX),
        3..=255 => {
            writer.u8(MULTI_NAME_PREFIX);
            writer.u8(count as u8);
        }
        _ => writer.fail(Error::Invalid),
    }
    for segment in rest.split(|&byte| byte == b'.') {
        match name_segment(segment) {
            Some(encoded) => writer.bytes(&encoded),
            None => writer.fail(Error::Invalid),
        }
    }
}

fn name_segment(segment: &[u8]) -> Option<[u8; 4]> {
    let first = *segment.first()?;
    if segment.len() > 4 || !(first.is_ascii_uppercase() || first == b'_') {
        return None;
    }
    let mut encoded = [b'_'; 4];
    for (slot, &byte) in encoded.iter_mut().zip(segment) {
        if !(byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_') {
            return None;
        }
        *slot = byte;
    }
    Some(encoded)
}

/// `Name(name, object)`: `object` writes the value.
pub fn name(writer: &mut Writer, name: &str, object: impl FnOnce(&mut Writer)) {
    writer.u8(NAME_OP);
    name_string(writer, name);
    object(writer);
}

/// `Scope(path) { body }`.
pub fn scope(writer: &mut Writer, path: &str, body: impl FnOnce(&mut Writer)) {
    writer.u8(SCOPE_OP);
    with_package_length(writer, |writer| {
        name_string(writer, path);
        body(writer);
    });
}

/// `Device(name) { body }`.
pub fn device(writer: &mut Writer, name: &str, body: impl FnOnce(&mut Writer)) {
    writer.bytes(&[EXT_OP_PREFIX, DEVICE_OP]);
    with_package_length(writer, |writer| {
        name_string(writer, name);
        body(writer);
    });
}

/// `Package() { integers }`.
pub fn package(writer: &mut Writer, elements: &[u64]) {
    let Ok(count) = u8::try_from(elements.len()) else {
        writer.fail(Error::Invalid);
        return;
    };
    writer.u8(PACKAGE_OP);
    with_package_length(writer, |writer| {
        writer.u8(count);
        for &element in elements {
            integer(writer, element);
        }
    });
}

/// How an interrupt is triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Which level or edge of an interrupt is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    High,
    Low,
}

/// `ResourceTemplate() { body }`: a buffer of resource descriptors ended by
/// an end tag; `body` calls the descriptor functions below.
pub fn resource_template(writer: &mut Writer, body: impl FnOnce(&mut Writer)) {
    writer.u8(BUFFER_OP);
    with_package_length(writer, |writer| {
        let start = writer.position();
        body(writer);
        // End tag, checksum 0 ("treated as valid").
        writer.bytes(&[0x79, 0x00]);
        let (size, length) = integer_bytes((writer.position() - start) as u64);
        writer.insert(start, &size[..length]);
    });
}

/// `IO(Decode16, base, base, 1, length)`: a fixed 16-bit-decoded port
/// range (small descriptor 0x08).
pub fn io(writer: &mut Writer, base: u16, length: u8) {
    writer.bytes(&[0x47, 0x01]);
    writer.u16(base);
    writer.u16(base);
    writer.bytes(&[0x01, length]);
}

/// `IRQNoFlags() { irq }`: an ISA IRQ, edge-triggered and active high
/// (small descriptor 0x04 without the flags byte).
pub fn irq(writer: &mut Writer, irq: u8) {
    if irq > 15 {
        writer.fail(Error::Invalid);
        return;
    }
    writer.u8(0x22);
    writer.u16(1 << irq);
}

/// `Memory32Fixed(ReadWrite or ReadOnly, base, length)` (large descriptor
/// 0x06).
pub fn memory32_fixed(writer: &mut Writer, base: u32, length: u32, writable: bool) {
    writer.bytes(&[0x86, 0x09, 0x00, u8::from(writable)]);
    writer.u32(base);
    writer.u32(length);
}

/// `Interrupt(ResourceConsumer, trigger, polarity, Exclusive) { gsi }`
/// (large descriptor 0x09, extended interrupt).
pub fn interrupt(writer: &mut Writer, gsi: u32, trigger: Trigger, polarity: Polarity) {
    let mut flags = 0x01; // consumer, exclusive
    if trigger == Trigger::Edge {
        flags |= 0x02;
    }
    if polarity == Polarity::Low {
        flags |= 0x04;
    }
    writer.bytes(&[0x89, 0x06, 0x00, flags, 0x01]);
    writer.u32(gsi);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(body: impl FnOnce(&mut Writer)) -> Result<Vec<u8>, Error> {
        let mut buffer = [0u8; 512];
        let mut writer = Writer::new(&mut buffer);
        body(&mut writer);
        let length = writer.finish()?;
        Ok(buffer[..length].to_vec())
    }

    #[test]
    fn package_lengths_follow_the_spec_encoding() {
        assert_eq!(package_length(0), Some(([1, 0, 0, 0], 1)));
        assert_eq!(package_length(62), Some(([63, 0, 0, 0], 1)));
        // 63 bytes of content + 2 length bytes = 65 = 0x41.
        assert_eq!(package_length(63), Some(([0x41, 0x04, 0, 0], 2)));
        // The largest two-byte length is 0xfff in total.
        assert_eq!(package_length(0xffd), Some(([0x4f, 0xff, 0, 0], 2)));
        assert_eq!(package_length(0xffe), Some(([0x81, 0x00, 0x01, 0], 3)));
        assert_eq!(package_length(PACKAGE_LENGTH_MAX), None);
    }

    #[test]
    fn integers_use_the_shortest_encoding() {
        let bytes = encode(|w| {
            for value in [0, 1, 5, 0x3f8, 0xfee0_0000, 1 << 32] {
                integer(w, value);
            }
        });
        assert_eq!(
            bytes.unwrap(),
            [
                0x00, 0x01, 0x0a, 0x05, 0x0b, 0xf8, 0x03, 0x0c, 0x00, 0x00, 0xe0, 0xfe, 0x0e, 0, 0,
                0, 0, 1, 0, 0, 0
            ]
        );
    }

    #[test]
    fn eisa_ids_compress_as_asl_does() {
        // PNP0501 is the well-known 0x0105d041.
        assert_eq!(eisa_id_value("PNP0501"), Some(0x0105_d041));
        assert_eq!(eisa_id_value("PNP0B00"), Some(0x000b_d041));
        assert_eq!(eisa_id_value("pnp0501"), None);
        assert_eq!(eisa_id_value("PNP05G1"), None);
        assert_eq!(encode(|w| eisa_id(w, "PNP")), Err(Error::Invalid));
    }

    #[test]
    fn names_are_padded_and_prefixed() {
        assert_eq!(encode(|w| name_string(w, "_S5")).unwrap(), b"_S5_");
        assert_eq!(encode(|w| name_string(w, "\\_SB")).unwrap(), b"\\_SB_");
        assert_eq!(
            encode(|w| name_string(w, "\\_SB.COM1")).unwrap(),
            b"\\\x2e_SB_COM1"
        );
        assert_eq!(
            encode(|w| name_string(w, "^^A.B.C")).unwrap(),
            b"^^\x2f\x03A___B___C___"
        );
        assert_eq!(encode(|w| name_string(w, "\\")).unwrap(), b"\\\0");
        for bad in ["1ABC", "ABCDE", "A..B", "a", "\\^A", "A-B"] {
            assert_eq!(
                encode(|w| name_string(w, bad)),
                Err(Error::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn s5_package_matches_hand_encoding() {
        // Name (_S5, Package (4) { 5, 0, 0, 0 })
        let bytes = encode(|w| name(w, "_S5", |w| package(w, &[5, 0, 0, 0]))).unwrap();
        assert_eq!(
            bytes,
            [
                0x08, b'_', b'S', b'5', b'_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00
            ]
        );
    }

    #[test]
    fn resource_descriptors_match_hand_encoding() {
        let bytes = encode(|w| {
            resource_template(w, |w| {
                io(w, 0x3f8, 8);
                irq(w, 4);
            })
        })
        .unwrap();
        assert_eq!(
            bytes,
            [
                0x11, 0x10, 0x0a, 0x0d, // Buffer, PkgLength 16, size 13
                0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, // IO
                0x22, 0x10, 0x00, // IRQNoFlags {4}
                0x79, 0x00, // end tag
            ]
        );
        let bytes = encode(|w| {
            memory32_fixed(w, 0xfeb0_0000, 0x200, true);
            interrupt(w, 16, Trigger::Level, Polarity::High);
            interrupt(w, 9, Trigger::Edge, Polarity::Low);
        })
        .unwrap();
        assert_eq!(
            bytes,
            [
                0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xb0, 0xfe, 0x00, 0x02, 0x00, 0x00, //
                0x89, 0x06, 0x00, 0x01, 0x01, 0x10, 0x00, 0x00, 0x00, //
                0x89, 0x06, 0x00, 0x07, 0x01, 0x09, 0x00, 0x00, 0x00,
            ]
        );
        assert_eq!(encode(|w| irq(w, 16)), Err(Error::Invalid));
    }

    #[test]
    fn long_bodies_get_multi_byte_package_lengths() {
        let bytes = encode(|w| {
            scope(w, "\\_SB", |w| {
                for _ in 0..20 {
                    name(w, "X", |w| integer(w, 0))
                }
            })
        })
        .unwrap();
        // 5 name bytes + 20 * 6 = 125 content bytes, + 2 length bytes = 127.
        assert_eq!(bytes[..3], [0x10, 0x4f, 0x07]);
        assert_eq!(bytes.len(), 1 + 2 + 125);
    }
}
