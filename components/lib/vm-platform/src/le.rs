//! Little-endian fields: reading them from untrusted bytes (every read is
//! checked and yields `None` past the end, never a panic) and writing them
//! into the fixed-size structures the loaders build (offsets there are this
//! crate's constants, inside the buffer by construction).

pub(crate) fn u8_at(bytes: &[u8], at: usize) -> Option<u8> {
    bytes.get(at).copied()
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

pub(crate) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked_at_the_end_and_near_overflow() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u16_at(&bytes, 6), Some(0x0807));
        assert_eq!(u16_at(&bytes, 7), None);
        assert_eq!(u32_at(&bytes, 4), Some(0x0807_0605));
        assert_eq!(u32_at(&bytes, 5), None);
        assert_eq!(u64_at(&bytes, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(u64_at(&bytes, 1), None);
        assert_eq!(u64_at(&bytes, usize::MAX - 3), None);
        assert_eq!(u8_at(&bytes, 8), None);
        let mut out = [0u8; 8];
        put_u32(&mut out, 2, 0x0605_0403);
        assert_eq!(out[2..6], bytes[2..6]);
        put_u64(&mut out, 0, 0x0807_0605_0403_0201);
        assert_eq!(out, bytes);
    }
}
