//! CRC-32C (Castagnoli), the checksum on every metadata page and journal
//! transaction.
//!
//! Purpose: detect torn, misdirected or corrupted metadata. The table is built
//! at compile time; the function is pure and allocation-free, so both the
//! on-disk format code and the fault-injection tests call it freely. Data
//! blocks are not checksummed: virtual-disk I/O must run at raw-device speed.

const POLYNOMIAL: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = index as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 != 0 {
                (value >> 1) ^ POLYNOMIAL
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
}

/// A running CRC-32C over several byte slices.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c {
    state: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    pub const fn new() -> Self {
        Self { state: !0 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        for &byte in bytes {
            state = TABLE[((state ^ u32::from(byte)) & 0xFF) as usize] ^ (state >> 8);
        }
        self.state = state;
    }

    pub fn finish(self) -> u32 {
        !self.state
    }
}

/// CRC-32C of one byte slice.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(bytes);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 3720 appendix B.4 test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: [u8; 32] = core::array::from_fn(|index| index as u8);
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn incremental_matches_whole() {
        let data: [u8; 100] = core::array::from_fn(|index| (index * 7) as u8);
        let mut crc = Crc32c::new();
        crc.update(&data[..33]);
        crc.update(&data[33..]);
        assert_eq!(crc.finish(), crc32c(&data));
    }
}
