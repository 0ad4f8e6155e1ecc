//! A little-endian byte writer over a caller's buffer, for the firmware
//! tables the world switcher builds without a heap.
//!
//! Writes past the end of the buffer are dropped and remembered, as is a
//! builder's complaint about its input ([`Writer::fail`]): the writer never
//! panics, and [`Writer::finish`] reports the first error once at the end,
//! so that builders can chain many writes without checking each.
//! [`Writer::insert`] makes room inside what was written (AML package
//! lengths are only known after their contents).

/// Why a table could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer was too small for what was to be written.
    Overflow,
    /// A builder was given something it cannot encode (a bad AML name, an
    /// ISA IRQ above 15, too many package elements...).
    Invalid,
}

/// Bytes written so far into a borrowed buffer.
pub struct Writer<'a> {
    buffer: &'a mut [u8],
    length: usize,
    error: Option<Error>,
}

impl<'a> Writer<'a> {
    pub fn new(buffer: &'a mut [u8]) -> Self {
        Self {
            buffer,
            length: 0,
            error: None,
        }
    }

    /// Records `error` unless an earlier one is recorded; later writes
    /// still happen but [`Writer::finish`] fails.
    pub fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// Bytes written so far (its position for the next write).
    pub fn position(&self) -> usize {
        self.length
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes(&[value]);
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// `count` zero bytes.
    pub fn zeros(&mut self, count: usize) {
        for _ in 0..count {
            self.u8(0);
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        let end = self.length.saturating_add(bytes.len());
        match self.buffer.get_mut(self.length..end) {
            Some(slot) if self.error != Some(Error::Overflow) => {
                slot.copy_from_slice(bytes);
                self.length = end;
            }
            _ => self.fail(Error::Overflow),
        }
    }

    /// Overwrites already-written bytes at `position`; out-of-range patches
    /// count as overflow.
    pub fn patch(&mut self, position: usize, bytes: &[u8]) {
        let end = position.saturating_add(bytes.len());
        match self.buffer.get_mut(position..end) {
            Some(slot) if end <= self.length => slot.copy_from_slice(bytes),
            _ => self.fail(Error::Overflow),
        }
    }

    /// Inserts `bytes` at `position`, moving what follows it up.
    pub fn insert(&mut self, position: usize, bytes: &[u8]) {
        let end = self.length.saturating_add(bytes.len());
        if self.error == Some(Error::Overflow) || position > self.length || end > self.buffer.len()
        {
            self.fail(Error::Overflow);
            return;
        }
        self.buffer
            .copy_within(position..self.length, position + bytes.len());
        self.buffer[position..position + bytes.len()].copy_from_slice(bytes);
        self.length = end;
    }

    /// What was written since `position`.
    pub fn written_since(&self, position: usize) -> &[u8] {
        self.buffer.get(position..self.length).unwrap_or(&[])
    }

    /// Sets the byte at `position` so that the bytes from there to the end
    /// sum to zero (an ACPI checksum); the byte must already be written.
    pub fn checksum(&mut self, start: usize, position: usize) {
        let sum = self
            .written_since(start)
            .iter()
            .fold(0u8, |sum, &byte| sum.wrapping_add(byte));
        let old = self.buffer.get(position).copied().unwrap_or(0);
        self.patch(position, &[old.wrapping_sub(sum)]);
    }

    /// The number of bytes written, or the first error.
    pub fn finish(self) -> Result<usize, Error> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_little_endian_and_reports_overflow_once_at_the_end() {
        let mut buffer = [0u8; 8];
        let mut writer = Writer::new(&mut buffer);
        writer.u16(0x1234);
        writer.u32(0xdead_beef);
        assert_eq!(writer.position(), 6);
        writer.u32(1);
        writer.u8(7);
        assert_eq!(writer.finish(), Err(Error::Overflow));
        assert_eq!(buffer[..6], [0x34, 0x12, 0xef, 0xbe, 0xad, 0xde]);
    }

    #[test]
    fn insert_moves_the_tail_and_checksum_zeroes_the_sum() {
        let mut buffer = [0u8; 8];
        let mut writer = Writer::new(&mut buffer);
        writer.bytes(&[1, 2, 3]);
        writer.insert(1, &[9, 9]);
        assert_eq!(writer.written_since(0), &[1, 9, 9, 2, 3]);
        writer.u8(0);
        writer.checksum(0, 5);
        let sum = writer
            .written_since(0)
            .iter()
            .fold(0u8, |s, &b| s.wrapping_add(b));
        assert_eq!(sum, 0);
        writer.insert(7, &[1]);
        writer.patch(6, &[1]);
        assert_eq!(writer.finish(), Err(Error::Overflow), "out-of-range edits");
    }
}
