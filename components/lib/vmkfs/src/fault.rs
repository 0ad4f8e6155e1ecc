//! A fault-injecting block device for the crash, corruption and error tests.
//!
//! Purpose: model what a real disk with a volatile write cache does when power
//! fails. Writes land in the cache (reads see them at once) and become durable
//! only when a flush returns. A crash can be armed at write number N (counting
//! from zero): that write never completes, and every write issued since the
//! last flush is then persisted, dropped or torn according to a
//! [`CrashPolicy`]. Reads of chosen sectors can be made to fail.
//!
//! Invariants: the durable image changes only at a flush or at the crash; after
//! the crash every operation fails with [`DeviceError::Crashed`]; a torn write
//! persists a subset of its sectors, each sector whole (the sector is the unit
//! of atomicity), unless the policy asks for a byte-level tear inside one sector.
//!
//! Callers: the tests (`tests/crash.rs` and the unit tests); it is public so
//! the block-store component's own tests can use it too.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::device::{BlockDevice, DeviceError, IoKind, MemoryDevice, SECTOR_SIZE, check_request};

/// A small deterministic pseudo-random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.state;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// What happens to writes issued since the last flush when the device crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnflushedFate {
    /// Every earlier unflushed write survives; the crashing write is lost.
    KeepAll,
    /// Every unflushed write is lost, the crashing write too.
    DropAll,
    /// Each unflushed write, and the crashing write, independently survives,
    /// is lost, or is torn (a random subset of its sectors survives).
    Random,
}

/// How a crash resolves the write cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPolicy {
    pub unflushed: UnflushedFate,
    /// When a write is torn, also tear one of its sectors at a byte boundary
    /// (a device without sector atomicity).
    pub tear_inside_sector: bool,
    pub seed: u64,
}

impl CrashPolicy {
    pub const fn new(unflushed: UnflushedFate, seed: u64) -> Self {
        Self {
            unflushed,
            tear_inside_sector: false,
            seed,
        }
    }
}

struct PendingWrite {
    offset: u64,
    data: Vec<u8>,
}

/// A memory-backed device with a volatile write cache and injectable faults.
pub struct FaultDevice {
    durable: MemoryDevice,
    volatile: MemoryDevice,
    pending: Vec<PendingWrite>,
    writes_issued: u64,
    flushes_issued: u64,
    crash: Option<(u64, CrashPolicy)>,
    crashed: bool,
    failing_sectors: BTreeSet<u64>,
    torn_sectors: Vec<u64>,
}

impl FaultDevice {
    /// A device whose durable (and visible) contents are `image`.
    pub fn new(image: MemoryDevice) -> Self {
        Self {
            volatile: image.clone(),
            durable: image,
            pending: Vec::new(),
            writes_issued: 0,
            flushes_issued: 0,
            crash: None,
            crashed: false,
            failing_sectors: BTreeSet::new(),
            torn_sectors: Vec::new(),
        }
    }

    /// Arms a crash at write number `index` (the first write is number 0).
    pub fn crash_at_write(&mut self, index: u64, policy: CrashPolicy) {
        self.crash = Some((index, policy));
    }

    /// Crashes now, as a power cut between two operations.
    pub fn crash_now(&mut self, policy: CrashPolicy) {
        self.resolve(None, policy);
    }

    /// Makes every read touching the sector containing `offset` fail.
    pub fn fail_reads_of_sector(&mut self, offset: u64) {
        self.failing_sectors.insert(offset / SECTOR_SIZE as u64);
    }

    pub fn heal_reads(&mut self) {
        self.failing_sectors.clear();
    }

    /// Writes issued so far (including the crashing one).
    pub fn writes_issued(&self) -> u64 {
        self.writes_issued
    }

    pub fn flushes_issued(&self) -> u64 {
        self.flushes_issued
    }

    pub fn has_crashed(&self) -> bool {
        self.crashed
    }

    /// Device offsets of sectors torn at a byte boundary by the crash.
    pub fn torn_sectors(&self) -> &[u64] {
        &self.torn_sectors
    }

    /// What survives: the durable image (after a crash, the resolved one).
    pub fn into_durable(self) -> MemoryDevice {
        self.durable
    }

    pub fn durable(&self) -> &MemoryDevice {
        &self.durable
    }

    fn resolve(&mut self, crashing: Option<PendingWrite>, policy: CrashPolicy) {
        let mut random = SplitMix64::new(policy.seed ^ 0x5EED_CAFE);
        let mut writes = core::mem::take(&mut self.pending);
        writes.extend(crashing);
        let count = writes.len();
        for (position, write) in writes.into_iter().enumerate() {
            let is_crashing_write = position + 1 == count && self.crash.is_some() && !self.crashed;
            let fate = match policy.unflushed {
                UnflushedFate::KeepAll if is_crashing_write => 1,
                UnflushedFate::KeepAll => 0,
                UnflushedFate::DropAll => 1,
                UnflushedFate::Random => random.below(3),
            };
            match fate {
                0 => self.persist(write.offset, &write.data),
                1 => {}
                _ => {
                    let sectors = write.data.len() / SECTOR_SIZE;
                    let inside = if policy.tear_inside_sector {
                        Some(random.below(sectors as u64) as usize)
                    } else {
                        None
                    };
                    for sector in 0..sectors {
                        let offset = write.offset + (sector * SECTOR_SIZE) as u64;
                        let bytes = &write.data[sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE];
                        if inside == Some(sector) {
                            let cut = 1 + random.below(SECTOR_SIZE as u64 - 1) as usize;
                            let start = offset as usize;
                            self.durable.bytes_mut()[start..start + cut]
                                .copy_from_slice(&bytes[..cut]);
                            self.torn_sectors.push(offset);
                        } else if random.below(2) == 0 {
                            self.persist(offset, bytes);
                        }
                    }
                }
            }
        }
        self.crashed = true;
        self.volatile = self.durable.clone();
    }

    fn persist(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        self.durable.bytes_mut()[start..start + data.len()].copy_from_slice(data);
    }
}

impl BlockDevice for FaultDevice {
    fn size(&self) -> u64 {
        self.durable.size()
    }

    fn read(&mut self, offset: u64, buffer: &mut [u8], kind: IoKind) -> Result<(), DeviceError> {
        if self.crashed {
            return Err(DeviceError::Crashed);
        }
        check_request(offset, buffer.len(), self.size())?;
        let first = offset / SECTOR_SIZE as u64;
        let last = first + (buffer.len() / SECTOR_SIZE) as u64;
        if let Some(&sector) = self.failing_sectors.range(first..last).next() {
            return Err(DeviceError::Media {
                offset: sector * SECTOR_SIZE as u64,
            });
        }
        self.volatile.read(offset, buffer, kind)
    }

    fn write(&mut self, offset: u64, data: &[u8], kind: IoKind) -> Result<(), DeviceError> {
        if self.crashed {
            return Err(DeviceError::Crashed);
        }
        check_request(offset, data.len(), self.size())?;
        let index = self.writes_issued;
        self.writes_issued += 1;
        if let Some((crash_index, policy)) = self.crash
            && crash_index == index
        {
            self.resolve(
                Some(PendingWrite {
                    offset,
                    data: data.to_vec(),
                }),
                policy,
            );
            return Err(DeviceError::Crashed);
        }
        self.volatile.write(offset, data, kind)?;
        self.pending.push(PendingWrite {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.crashed {
            return Err(DeviceError::Crashed);
        }
        self.flushes_issued += 1;
        for write in core::mem::take(&mut self.pending) {
            self.persist(write.offset, &write.data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> FaultDevice {
        FaultDevice::new(MemoryDevice::new(8 * SECTOR_SIZE as u64))
    }

    #[test]
    fn writes_are_visible_at_once_and_durable_after_flush() {
        let mut device = device();
        device.write(0, &[1u8; 512], IoKind::Data).unwrap();
        let mut buffer = [0u8; 512];
        device.read(0, &mut buffer, IoKind::Data).unwrap();
        assert_eq!(buffer, [1u8; 512]);
        assert_eq!(device.durable().bytes()[0], 0);
        device.flush().unwrap();
        assert_eq!(device.durable().bytes()[0], 1);
    }

    #[test]
    fn crash_keep_all_persists_earlier_unflushed_writes_only() {
        let mut device = device();
        device.crash_at_write(2, CrashPolicy::new(UnflushedFate::KeepAll, 0));
        device.write(0, &[1u8; 512], IoKind::Data).unwrap();
        device.write(512, &[2u8; 512], IoKind::Data).unwrap();
        assert_eq!(
            device.write(1024, &[3u8; 512], IoKind::Data),
            Err(DeviceError::Crashed)
        );
        assert!(device.has_crashed());
        assert_eq!(
            device.read(0, &mut [0u8; 512], IoKind::Data),
            Err(DeviceError::Crashed)
        );
        assert_eq!(device.flush(), Err(DeviceError::Crashed));
        let image = device.into_durable();
        assert_eq!(image.bytes()[0], 1);
        assert_eq!(image.bytes()[512], 2);
        assert_eq!(image.bytes()[1024], 0);
    }

    #[test]
    fn crash_drop_all_keeps_only_flushed_writes() {
        let mut device = device();
        device.crash_at_write(2, CrashPolicy::new(UnflushedFate::DropAll, 0));
        device.write(0, &[1u8; 512], IoKind::Data).unwrap();
        device.flush().unwrap();
        device.write(512, &[2u8; 512], IoKind::Data).unwrap();
        assert!(device.write(1024, &[3u8; 512], IoKind::Data).is_err());
        let image = device.into_durable();
        assert_eq!(
            (image.bytes()[0], image.bytes()[512], image.bytes()[1024]),
            (1, 0, 0)
        );
    }

    #[test]
    fn random_crash_tears_at_sector_granularity() {
        // Over many seeds, a torn 8-sector write leaves each sector all-old or all-new,
        // and both mixed outcomes occur.
        let mut saw_partial = false;
        for seed in 0..64 {
            let mut device = device();
            device.crash_at_write(0, CrashPolicy::new(UnflushedFate::Random, seed));
            assert!(device.write(0, &[9u8; 4096], IoKind::Data).is_err());
            let image = device.into_durable();
            let new_sectors = image
                .bytes()
                .chunks(SECTOR_SIZE)
                .filter(|sector| sector.iter().all(|&byte| byte == 9))
                .count();
            for sector in image.bytes().chunks(SECTOR_SIZE) {
                assert!(
                    sector.iter().all(|&byte| byte == 9) || sector.iter().all(|&byte| byte == 0)
                );
            }
            saw_partial |= new_sectors > 0 && new_sectors < 8;
        }
        assert!(saw_partial);
    }

    #[test]
    fn byte_level_tear_is_recorded() {
        let mut torn = 0;
        for seed in 0..64 {
            let mut device = device();
            let policy = CrashPolicy {
                unflushed: UnflushedFate::Random,
                tear_inside_sector: true,
                seed,
            };
            device.crash_at_write(0, policy);
            assert!(device.write(0, &[9u8; 4096], IoKind::Data).is_err());
            torn += device.torn_sectors().len();
            let image = device.into_durable();
            assert!(image.bytes().iter().all(|&byte| byte == 0 || byte == 9));
        }
        assert!(torn > 0);
    }

    #[test]
    fn read_errors_hit_only_the_failing_sector() {
        let mut device = device();
        device.fail_reads_of_sector(1024 + 7);
        assert_eq!(
            device.read(512, &mut [0u8; 1024], IoKind::Data),
            Err(DeviceError::Media { offset: 1024 })
        );
        assert!(device.read(0, &mut [0u8; 1024], IoKind::Data).is_ok());
        device.heal_reads();
        assert!(device.read(512, &mut [0u8; 1024], IoKind::Data).is_ok());
    }
}
