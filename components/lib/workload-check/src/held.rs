//! The held write of the block store's deliberately broken fixture
//! (`fixture=hold-write`, for tests only): the store acknowledges each
//! write as soon as it arrives but keeps the latest one only here, in
//! memory, and writes it to the disk when the next write arrives; reads
//! are answered with it laid over what the disk holds ([`HeldWrite::overlay`]),
//! and a flush is acknowledged without writing it out. So the store
//! behaves correctly until it restarts: a crash between a write's
//! acknowledgement and the next write loses an acknowledged, flushed
//! write, which a campaign's disk workload must report as `CHECK disk
//! LOST ...`.

/// The most bytes one write holds (a `block_api` request's).
pub const MAX_BYTES: usize = 4096;

/// At most one write kept in memory instead of on the disk.
pub struct HeldWrite {
    offset: u64,
    length: usize,
    held: bool,
    data: [u8; MAX_BYTES],
}

impl Default for HeldWrite {
    fn default() -> Self {
        Self::new()
    }
}

impl HeldWrite {
    /// Nothing held.
    pub const fn new() -> Self {
        Self {
            offset: 0,
            length: 0,
            held: false,
            data: [0; MAX_BYTES],
        }
    }

    /// Where the held write goes and how long it is, if one is held.
    pub fn held(&self) -> Option<(u64, usize)> {
        self.held.then_some((self.offset, self.length))
    }

    /// Takes the held write out, to be written to the disk now: its
    /// offset and data. Nothing is held afterwards.
    pub fn take(&mut self) -> Option<(u64, &[u8])> {
        if !self.held {
            return None;
        }
        self.held = false;
        Some((self.offset, &self.data[..self.length]))
    }

    /// Holds `data` for `offset` (after what was held was taken out:
    /// [`HeldWrite::take`]). A write longer than [`MAX_BYTES`] is not
    /// held: `false`, and nothing is held.
    pub fn hold(&mut self, offset: u64, data: &[u8]) -> bool {
        if data.len() > MAX_BYTES {
            self.held = false;
            return false;
        }
        self.data[..data.len()].copy_from_slice(data);
        self.offset = offset;
        self.length = data.len();
        self.held = true;
        true
    }

    /// Lays the held write over `buffer`, which holds what the disk has at
    /// `offset`: the bytes the two share are the held write's.
    pub fn overlay(&self, offset: u64, buffer: &mut [u8]) {
        if !self.held {
            return;
        }
        let start = self.offset.max(offset);
        let end = self
            .offset
            .saturating_add(self.length as u64)
            .min(offset.saturating_add(buffer.len() as u64));
        if start >= end {
            return;
        }
        let length = (end - start) as usize;
        let into = (start - offset) as usize;
        let from = (start - self.offset) as usize;
        buffer[into..into + length].copy_from_slice(&self.data[from..from + length]);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    /// The fixture over a disk of `bytes` bytes: what a store with it
    /// would write, read back and hold.
    struct Model {
        disk: Vec<u8>,
        held: HeldWrite,
    }

    impl Model {
        fn new(bytes: usize) -> Self {
            Self {
                disk: vec![0; bytes],
                held: HeldWrite::new(),
            }
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            if let Some((at, old)) = self.held.take() {
                let at = at as usize;
                self.disk[at..at + old.len()].copy_from_slice(old);
            }
            assert!(self.held.hold(offset, data));
        }

        fn read(&self, offset: u64, length: usize) -> Vec<u8> {
            let mut buffer = self.disk[offset as usize..offset as usize + length].to_vec();
            self.held.overlay(offset, &mut buffer);
            buffer
        }

        /// A restart: memory is gone, the disk stays.
        fn restart(&mut self) {
            self.held = HeldWrite::new();
        }
    }

    #[test]
    fn reads_see_the_held_write_until_a_restart_loses_it() {
        let mut model = Model::new(4 * MAX_BYTES);
        model.write(0, &[1; MAX_BYTES]);
        model.write(MAX_BYTES as u64, &[2; MAX_BYTES]);
        // The first went to the disk when the second came; the second is
        // held, and reads see it.
        assert_eq!(model.disk[..MAX_BYTES], [1; MAX_BYTES]);
        assert_eq!(model.disk[MAX_BYTES..2 * MAX_BYTES], [0; MAX_BYTES]);
        assert_eq!(model.read(MAX_BYTES as u64, MAX_BYTES), vec![2; MAX_BYTES]);
        assert_eq!(model.held.held(), Some((MAX_BYTES as u64, MAX_BYTES)));
        // A flush writes nothing out; a restart loses it.
        model.restart();
        assert_eq!(model.read(MAX_BYTES as u64, MAX_BYTES), vec![0; MAX_BYTES]);
        assert_eq!(model.read(0, MAX_BYTES), vec![1; MAX_BYTES]);
    }

    #[test]
    fn overlay_covers_exactly_the_bytes_shared() {
        let mut held = HeldWrite::new();
        assert!(held.hold(1024, &[7; 512]));
        for (offset, length) in [
            (0u64, 4096usize),
            (1024, 512),
            (1280, 512),
            (0, 1100),
            (1535, 1),
            (1536, 512),
            (0, 1024),
            (2000, 100),
        ] {
            let mut buffer = vec![0u8; length];
            held.overlay(offset, &mut buffer);
            for (index, &byte) in buffer.iter().enumerate() {
                let at = offset + index as u64;
                let expected = if (1024..1536).contains(&at) { 7 } else { 0 };
                assert_eq!(
                    byte, expected,
                    "offset {offset} length {length} byte {index}"
                );
            }
        }
        // Near the end of the address space nothing overflows.
        assert!(held.hold(u64::MAX - 10, &[1; 8]));
        let mut buffer = [0u8; 16];
        held.overlay(u64::MAX - 16, &mut buffer);
        assert_eq!(buffer, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn take_empties_and_oversized_writes_are_not_held() {
        let mut held = HeldWrite::default();
        assert!(held.take().is_none());
        assert!(held.hold(512, &[3; 512]));
        let (offset, data) = held.take().unwrap();
        assert_eq!((offset, data.len(), data[0]), (512, 512, 3));
        assert!(held.take().is_none());
        let mut buffer = [0u8; 512];
        held.overlay(512, &mut buffer);
        assert_eq!(buffer, [0; 512]);
        assert!(!held.hold(0, &[1; MAX_BYTES + 1]));
        assert_eq!(held.held(), None);
    }
}
