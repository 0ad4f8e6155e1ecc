//! Checks on what components pass to the core.
//!
//! A system-call argument that names memory is an allegation: a
//! [`UserBuffer`] is built only when the whole range lies in the user half
//! and its length is within the call's limit. The core must still walk the
//! component's page tables for every page before reading (that needs the
//! live tables, so it lives in the ring-0 binary); this module is the part
//! that does not.

use crate::address::UserAddress;

/// Why a buffer argument was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferError {
    /// Longer than the call allows.
    TooLong { length: u64, limit: u64 },
    /// Starts below the user range, ends above it, or wraps around.
    OutsideUserSpace { address: u64, length: u64 },
}

/// A user-space range that lies entirely inside `[user_min, user_end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserBuffer {
    pub address: UserAddress,
    pub length: u64,
}

impl UserBuffer {
    /// Checks `address`/`length` against the user range and `limit`.
    pub fn new(
        address: u64,
        length: u64,
        limit: u64,
        user_min: u64,
        user_end: u64,
    ) -> Result<Self, BufferError> {
        if length > limit {
            return Err(BufferError::TooLong { length, limit });
        }
        let end = address.checked_add(length);
        if address < user_min || end.is_none_or(|end| end > user_end) {
            return Err(BufferError::OutsideUserSpace { address, length });
        }
        Ok(Self {
            address: UserAddress(address),
            length,
        })
    }

    /// The page-aligned addresses of every page the buffer touches.
    pub fn pages(&self, page_size: u64) -> impl Iterator<Item = UserAddress> {
        let first = self.address.0 & !(page_size - 1);
        let end = self.address.0 + self.length;
        let count = if self.length == 0 {
            0
        } else {
            (end - first).div_ceil(page_size)
        };
        (0..count).map(move |i| UserAddress(first + i * page_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: u64 = 0x20_0000;
    const END: u64 = 0x7fff_ffff_f000;

    #[test]
    fn accepts_and_refuses() {
        assert!(UserBuffer::new(0x20_0000, 10, 512, MIN, END).is_ok());
        assert_eq!(
            UserBuffer::new(0x20_0000, 513, 512, MIN, END),
            Err(BufferError::TooLong {
                length: 513,
                limit: 512
            })
        );
        assert!(matches!(
            UserBuffer::new(0x1000, 1, 512, MIN, END),
            Err(BufferError::OutsideUserSpace { .. })
        ));
        assert!(matches!(
            UserBuffer::new(END - 1, 2, 512, MIN, END),
            Err(BufferError::OutsideUserSpace { .. })
        ));
        assert!(matches!(
            UserBuffer::new(0xffff_ffff_8010_0000, 16, 512, MIN, END),
            Err(BufferError::OutsideUserSpace { .. })
        ));
        assert!(matches!(
            UserBuffer::new(u64::MAX, 2, 512, MIN, u64::MAX),
            Err(BufferError::OutsideUserSpace { .. })
        ));
        assert!(UserBuffer::new(END - 1, 1, 512, MIN, END).is_ok());
    }

    #[test]
    fn pages_cover_the_buffer() {
        let b = UserBuffer::new(0x20_0ff0, 0x20, 512, MIN, END).unwrap();
        let pages: Vec<_> = b.pages(4096).map(|p| p.0).collect();
        assert_eq!(pages, vec![0x20_0000, 0x20_1000]);
        let empty = UserBuffer::new(0x20_0ff0, 0, 512, MIN, END).unwrap();
        assert_eq!(empty.pages(4096).count(), 0);
    }

    proptest! {
        #[test]
        fn accepted_buffers_stay_inside(address in any::<u64>(), length in 0u64..1024) {
            if let Ok(b) = UserBuffer::new(address, length, 512, MIN, END) {
                prop_assert!(b.address.0 >= MIN && b.address.0 + b.length <= END);
                prop_assert!(b.length <= 512);
                for page in b.pages(4096) {
                    prop_assert!(page.0 >= MIN - 4096 && page.0 < END);
                }
            }
        }
    }
}
