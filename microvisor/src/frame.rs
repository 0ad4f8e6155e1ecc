//! The physical-frame allocator.
//!
//! A bitmap over a fixed span of physical memory, one bit per 4 KiB frame,
//! set when the frame is free. It starts with every frame used; the boot
//! code frees the usable regions of the firmware's memory map and then
//! reserves everything that is in use (the core's image, the boot modules,
//! the first MiB, regions the firmware marks reserved). Because reservations
//! are applied after all frees, overlapping or unordered memory maps cannot
//! make a reserved frame allocatable. Freeing a frame twice, or a frame the
//! allocator does not track, is an error, never a silent corruption.
//!
//! Only the core calls this, at boot and when components are loaded or torn
//! down; it allocates no memory of its own (the bitmap is given to it).

use crate::address::{PAGE_SIZE, PhysicalAddress, align_down, align_up};

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not 4 KiB aligned.
    Misaligned(PhysicalAddress),
    /// The address lies outside the tracked span.
    Untracked(PhysicalAddress),
    /// The frame is already free.
    DoubleFree(PhysicalAddress),
}

/// A bitmap frame allocator.
pub struct FrameAllocator<'a> {
    bitmap: &'a mut [u64],
    base: u64,
    frames: u64,
    free: u64,
    hint: usize,
}

impl<'a> FrameAllocator<'a> {
    /// Tracks `bitmap.len() * 64` frames starting at physical address 0,
    /// all initially used.
    pub fn new(bitmap: &'a mut [u64]) -> Self {
        bitmap.fill(0);
        let frames = bitmap.len() as u64 * 64;
        Self {
            bitmap,
            base: 0,
            frames,
            free: 0,
            hint: 0,
        }
    }

    /// One past the highest physical address tracked.
    pub fn tracked_end(&self) -> u64 {
        self.base + self.frames * PAGE_SIZE
    }

    fn index(&self, address: u64) -> Option<u64> {
        let frame = address.checked_sub(self.base)? / PAGE_SIZE;
        (frame < self.frames).then_some(frame)
    }

    fn set(&mut self, frame: u64, free: bool) {
        let (word, bit) = ((frame / 64) as usize, frame % 64);
        let was_free = self.bitmap[word] & (1 << bit) != 0;
        if free && !was_free {
            self.bitmap[word] |= 1 << bit;
            self.free += 1;
        } else if !free && was_free {
            self.bitmap[word] &= !(1 << bit);
            self.free -= 1;
        }
    }

    /// Marks every whole frame inside `[start, end)` free. Parts outside the
    /// tracked span are ignored.
    pub fn add_free_range(&mut self, start: u64, end: u64) {
        let Some(first) = align_up(start, PAGE_SIZE) else {
            return;
        };
        let last = align_down(end, PAGE_SIZE).min(self.tracked_end());
        let mut address = first.max(self.base);
        while address < last {
            if let Some(frame) = self.index(address) {
                self.set(frame, true);
            }
            address += PAGE_SIZE;
        }
    }

    /// Marks every frame touching `[start, end)` used.
    pub fn reserve_range(&mut self, start: u64, end: u64) {
        let mut address = align_down(start, PAGE_SIZE).max(self.base);
        let end = end.min(self.tracked_end());
        while address < end {
            if let Some(frame) = self.index(address) {
                self.set(frame, false);
            }
            address += PAGE_SIZE;
        }
    }

    /// Takes one free frame, lowest addresses first.
    pub fn allocate(&mut self) -> Option<PhysicalAddress> {
        let words = self.bitmap.len();
        for step in 0..words {
            let word = (self.hint + step) % words;
            let bits = self.bitmap[word];
            if bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                let frame = word as u64 * 64 + bit;
                self.set(frame, false);
                self.hint = word;
                return Some(PhysicalAddress(self.base + frame * PAGE_SIZE));
            }
        }
        None
    }

    /// Takes `count` physically contiguous free frames (lowest first) and
    /// returns the first, or `None` if no such run exists.
    pub fn allocate_contiguous(&mut self, count: u64) -> Option<PhysicalAddress> {
        if count == 0 {
            return None;
        }
        let mut run = 0;
        for frame in 0..self.frames {
            let free = self.bitmap[(frame / 64) as usize] & (1 << (frame % 64)) != 0;
            run = if free { run + 1 } else { 0 };
            if run == count {
                let first = frame + 1 - count;
                for taken in first..=frame {
                    self.set(taken, false);
                }
                return Some(PhysicalAddress(self.base + first * PAGE_SIZE));
            }
        }
        None
    }

    /// Returns a frame taken with [`Self::allocate`].
    pub fn free(&mut self, address: PhysicalAddress) -> Result<(), FrameError> {
        if !address.is_page_aligned() {
            return Err(FrameError::Misaligned(address));
        }
        let frame = self
            .index(address.0)
            .ok_or(FrameError::Untracked(address))?;
        if self.is_free(address) {
            return Err(FrameError::DoubleFree(address));
        }
        self.set(frame, true);
        let word = (frame / 64) as usize;
        if word < self.hint {
            self.hint = word;
        }
        Ok(())
    }

    /// Whether the frame at `address` is free.
    pub fn is_free(&self, address: PhysicalAddress) -> bool {
        self.index(address.0)
            .is_some_and(|frame| self.bitmap[(frame / 64) as usize] & (1 << (frame % 64)) != 0)
    }

    /// How many frames are free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn reservations_win_over_frees() {
        let mut bitmap = vec![0u64; 16]; // 1024 frames = 4 MiB
        let mut allocator = FrameAllocator::new(&mut bitmap);
        allocator.add_free_range(0, 0x40_0000);
        allocator.reserve_range(0, 0x10_0000);
        allocator.reserve_range(0x20_0800, 0x20_1000); // partial frame: whole frame reserved
        assert!(!allocator.is_free(PhysicalAddress(0x1000)));
        assert!(!allocator.is_free(PhysicalAddress(0x20_0000)));
        assert_eq!(allocator.free_frames(), 1024 - 256 - 1);
        let mut seen = HashSet::new();
        while let Some(frame) = allocator.allocate() {
            assert!(frame.0 >= 0x10_0000 && frame.0 != 0x20_0000);
            assert!(seen.insert(frame), "frame handed out twice");
        }
        assert_eq!(seen.len(), 1024 - 257);
    }

    #[test]
    fn partial_frames_are_not_freed() {
        let mut bitmap = vec![0u64; 1];
        let mut allocator = FrameAllocator::new(&mut bitmap);
        allocator.add_free_range(0x800, 0x2800);
        assert_eq!(allocator.free_frames(), 1);
        assert_eq!(allocator.allocate(), Some(PhysicalAddress(0x1000)));
        assert_eq!(allocator.allocate(), None);
    }

    #[test]
    fn free_errors() {
        let mut bitmap = vec![0u64; 1];
        let mut allocator = FrameAllocator::new(&mut bitmap);
        allocator.add_free_range(0, 64 * PAGE_SIZE);
        let frame = allocator.allocate().unwrap();
        assert_eq!(allocator.free(frame), Ok(()));
        assert_eq!(allocator.free(frame), Err(FrameError::DoubleFree(frame)));
        assert_eq!(
            allocator.free(PhysicalAddress(0x1001)),
            Err(FrameError::Misaligned(PhysicalAddress(0x1001)))
        );
        let outside = PhysicalAddress(64 * PAGE_SIZE);
        assert_eq!(allocator.free(outside), Err(FrameError::Untracked(outside)));
        // Ranges beyond the tracked span are ignored, not an overflow.
        allocator.add_free_range(u64::MAX - 10, u64::MAX);
        allocator.reserve_range(u64::MAX - 10, u64::MAX);
    }

    #[test]
    fn contiguous_runs() {
        let mut bitmap = vec![0u64; 1];
        let mut allocator = FrameAllocator::new(&mut bitmap);
        allocator.add_free_range(0, 64 * PAGE_SIZE);
        allocator.reserve_range(3 * PAGE_SIZE, 4 * PAGE_SIZE);
        assert_eq!(
            allocator.allocate_contiguous(4),
            Some(PhysicalAddress(4 * PAGE_SIZE))
        );
        assert_eq!(allocator.allocate_contiguous(3), Some(PhysicalAddress(0)));
        assert!(!allocator.is_free(PhysicalAddress(7 * PAGE_SIZE)));
        assert_eq!(allocator.free_frames(), 64 - 8);
        assert_eq!(allocator.allocate_contiguous(57), None);
        assert_eq!(
            allocator.allocate_contiguous(56),
            Some(PhysicalAddress(8 * PAGE_SIZE))
        );
        assert_eq!(allocator.allocate_contiguous(0), None);
    }

    proptest! {
        #[test]
        fn never_hands_out_a_frame_twice(ops in proptest::collection::vec(any::<bool>(), 1..400)) {
            let mut bitmap = vec![0u64; 2];
            let mut allocator = FrameAllocator::new(&mut bitmap);
            allocator.add_free_range(0, 128 * PAGE_SIZE);
            let mut held = Vec::new();
            for allocate in ops {
                if allocate || held.is_empty() {
                    if let Some(frame) = allocator.allocate() {
                        prop_assert!(!held.contains(&frame));
                        held.push(frame);
                    } else {
                        prop_assert_eq!(held.len(), 128);
                    }
                } else {
                    let frame = held.swap_remove(held.len() / 2);
                    prop_assert_eq!(allocator.free(frame), Ok(()));
                }
                prop_assert_eq!(allocator.free_frames() as usize, 128 - held.len());
            }
        }
    }
}
