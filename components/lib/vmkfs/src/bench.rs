//! The block-store benchmark (the `std` feature): 4 KiB random reads and
//! writes through the store against the same device accessed raw, measured in
//! one run, and the metadata I/O the store does meanwhile.
//!
//! Purpose: show the seed's claim that a virtual disk on VMKFS runs at the
//! raw device's speed with zero metadata I/O. One preallocated disk fills the
//! file system; the raw side does the same random 4 KiB offsets over the same
//! byte range of the device (the data region). Within each phase raw and store
//! run the same offsets in alternating batches of 1000 operations (alternating
//! which side goes first), so drift in the shared machine's speed hits both
//! alike; the headline ratio is the median over all batch pairs of the
//! store/raw speed ratio. Write phases end with an untimed flush of each side.
//!
//! Invariants: both sides issue identical I/O sizes and counts through the
//! same counting wrapper, so the only difference is the store's lookup path.
//!
//! Callers: `disk bench` in the build tool and `cargo bench -p vmkfs`.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::device::{BlockDevice, CountingDevice, FileDevice, IoKind, MemoryDevice};
use crate::fault::SplitMix64;
use crate::format::FormatOptions;
use crate::host::HostError;
use crate::store::{FileHandle, OpenMode, Store};

/// Which device the benchmark runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchDevice {
    /// A RAM-backed device (measures the store's CPU overhead against a memcpy).
    Memory,
    /// A host file (page cache; measures against a system call per I/O).
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: BenchDevice,
    /// Device size in bytes.
    pub size: u64,
    pub block_size: u32,
    /// 4 KiB operations per phase.
    pub operations: u64,
    pub rounds: u32,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            device: BenchDevice::Memory,
            size: 256 << 20,
            block_size: 1 << 20,
            operations: 100_000,
            rounds: 7,
            seed: 1,
        }
    }
}

/// Throughput of one phase in MiB/s, and the store/raw speed ratio of each
/// back-to-back batch pair.
#[derive(Clone, Debug, Default)]
pub struct PhaseResult {
    pub raw: f64,
    pub store: f64,
    pub pair_ratios: Vec<f64>,
}

impl PhaseResult {
    pub fn ratio(&self) -> f64 {
        self.store / self.raw
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub device: String,
    pub disk_bytes: u64,
    pub block_size: u32,
    pub operations: u64,
    pub rounds: u32,
    /// Throughput summed over all rounds.
    pub read: PhaseResult,
    pub write: PhaseResult,
    /// The headline ratios: median over every batch pair of every round.
    pub read_ratio: f64,
    pub write_ratio: f64,
    /// Whole-phase ratios per round, for judging the noise.
    pub read_ratios: Vec<f64>,
    pub write_ratios: Vec<f64>,
    /// Metadata and journal I/Os the store issued during all its data phases.
    pub metadata_ios_during_data_io: u64,
    /// Data I/Os the store issued during its phases.
    pub store_data_ios: u64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            formatter,
            "device: {}, disk of {} MiB, {} KiB blocks, {} random 4 KiB operations per phase, {} rounds",
            self.device,
            self.disk_bytes >> 20,
            self.block_size >> 10,
            self.operations,
            self.rounds
        )?;
        let ratios = |values: &[f64]| {
            values
                .iter()
                .map(|value| alloc::format!("{value:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(
            formatter,
            "random 4 KiB read:  raw {:8.1} MiB/s, store {:8.1} MiB/s, ratio {:.3} (per round: {})",
            self.read.raw,
            self.read.store,
            self.read_ratio,
            ratios(&self.read_ratios)
        )?;
        writeln!(
            formatter,
            "random 4 KiB write: raw {:8.1} MiB/s, store {:8.1} MiB/s, ratio {:.3} (per round: {})",
            self.write.raw,
            self.write.store,
            self.write_ratio,
            ratios(&self.write_ratios)
        )?;
        write!(
            formatter,
            "metadata I/Os during {} store data I/Os: {}",
            self.store_data_ios, self.metadata_ios_during_data_io
        )
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Sums phases (throughputs by total time) and pools their pair ratios.
fn combine(results: &[PhaseResult]) -> (PhaseResult, f64) {
    let raw_time: f64 = results.iter().map(|result| 1.0 / result.raw).sum();
    let store_time: f64 = results.iter().map(|result| 1.0 / result.store).sum();
    let pairs: Vec<f64> = results
        .iter()
        .flat_map(|result| result.pair_ratios.iter().copied())
        .collect();
    let count = results.len() as f64;
    (
        PhaseResult {
            raw: count / raw_time,
            store: count / store_time,
            pair_ratios: Vec::new(),
        },
        median(&pairs),
    )
}

struct Bench<D: BlockDevice> {
    store: Store<CountingDevice<D>>,
    handle: FileHandle,
    raw_start: u64,
    offsets: Vec<u64>,
    buffer: Vec<u8>,
}

/// Operations per batch: raw and store batches alternate, so drift in the
/// machine's speed (other processes, frequency changes) hits both sides alike.
const BATCH: usize = 1000;

impl<D: BlockDevice> Bench<D> {
    fn raw_batch(
        &mut self,
        offsets: core::ops::Range<usize>,
        write: bool,
    ) -> Result<(), HostError> {
        for index in offsets {
            let offset = self.raw_start + self.offsets[index];
            let device = &mut self.store.devices_mut()[0];
            let result = if write {
                device.write(offset, &self.buffer, IoKind::Data)
            } else {
                device.read(offset, &mut self.buffer, IoKind::Data)
            };
            result.map_err(|error| {
                HostError::Store(crate::StoreError::Device { device: 0, error })
            })?;
        }
        Ok(())
    }

    fn store_batch(
        &mut self,
        offsets: core::ops::Range<usize>,
        write: bool,
    ) -> Result<(), HostError> {
        for index in offsets {
            let offset = self.offsets[index];
            if write {
                self.store.write(self.handle, offset, &self.buffer)?;
            } else {
                self.store.read(self.handle, offset, &mut self.buffer)?;
            }
        }
        Ok(())
    }

    /// One phase: every offset once through each side, in alternating batches.
    /// Returns the throughputs in MiB/s and the ratio of each batch pair.
    fn phase(&mut self, write: bool, store_first: bool) -> Result<PhaseResult, HostError> {
        let mut raw_time = Duration::ZERO;
        let mut store_time = Duration::ZERO;
        let count = self.offsets.len();
        let mut start = 0;
        let mut store_first = store_first;
        let mut pair_ratios = Vec::new();
        while start < count {
            let range = start..(start + BATCH).min(count);
            let mut pair = [Duration::ZERO; 2];
            for side_is_store in [store_first, !store_first] {
                let clock = Instant::now();
                if side_is_store {
                    self.store_batch(range.clone(), write)?;
                    pair[1] = clock.elapsed();
                } else {
                    self.raw_batch(range.clone(), write)?;
                    pair[0] = clock.elapsed();
                }
            }
            raw_time += pair[0];
            store_time += pair[1];
            pair_ratios.push(pair[0].as_secs_f64() / pair[1].as_secs_f64().max(1e-12));
            store_first = !store_first;
            start = range.end;
        }
        if write {
            // Durability for both sides, untimed: one flush would otherwise pay for the other's writes.
            self.store.devices_mut()[0].flush().map_err(|error| {
                HostError::Store(crate::StoreError::Device { device: 0, error })
            })?;
            self.store.flush()?;
        }
        Ok(PhaseResult {
            raw: self.throughput(raw_time),
            store: self.throughput(store_time),
            pair_ratios,
        })
    }

    fn throughput(&self, elapsed: Duration) -> f64 {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        (self.offsets.len() as f64 * self.buffer.len() as f64) / seconds / f64::from(1 << 20)
    }
}

fn run_on<D: BlockDevice>(
    device: D,
    name: String,
    options: &BenchOptions,
) -> Result<BenchReport, HostError> {
    let format = FormatOptions {
        block_size: options.block_size,
        max_files: 16,
        ..FormatOptions::default()
    };
    let mut store = Store::format(vec![CountingDevice::new(device)], &format).map_err(|error| {
        HostError::Format {
            paths: Vec::new(),
            error,
        }
    })?;
    let space = store.space();
    let disk_bytes = (space.free_data_blocks * u64::from(space.block_size)).min(space.largest_file);
    store.create("bench", disk_bytes)?;
    let handle = store.open("bench", OpenMode::ReadWrite)?;
    let raw_start = store.layout().devices[0].data_start;
    let mut random = SplitMix64::new(options.seed);
    let pages = disk_bytes / 4096;
    let offsets = (0..options.operations)
        .map(|_| random.below(pages) * 4096)
        .collect();
    let mut bench = Bench {
        store,
        handle,
        raw_start,
        offsets,
        buffer: vec![0x5A; 4096],
    };
    // Warm up both paths once (page cache, allocator).
    bench.phase(false, false)?;
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut metadata_ios = 0;
    let mut store_data_ios = 0;
    for round in 0..options.rounds {
        for write in [false, true] {
            let before = bench.store.devices()[0].statistics();
            let result = bench.phase(write, round % 2 == 1)?;
            let after = bench.store.devices()[0].statistics();
            // Raw I/O is data I/O too; it is subtracted to leave the store's own.
            let raw_ios = bench.offsets.len() as u64;
            metadata_ios += after.metadata_operations() - before.metadata_operations();
            store_data_ios += after.data.operations() - before.data.operations() - raw_ios;
            if write {
                writes.push(result)
            } else {
                reads.push(result)
            }
        }
    }
    Ok(BenchReport {
        device: name,
        disk_bytes,
        block_size: options.block_size,
        operations: options.operations,
        rounds: options.rounds,
        read: combine(&reads).0,
        write: combine(&writes).0,
        read_ratio: combine(&reads).1,
        write_ratio: combine(&writes).1,
        read_ratios: reads.iter().map(PhaseResult::ratio).collect(),
        write_ratios: writes.iter().map(PhaseResult::ratio).collect(),
        metadata_ios_during_data_io: metadata_ios,
        store_data_ios,
    })
}

/// Runs the benchmark; see the module documentation.
pub fn run(options: &BenchOptions) -> Result<BenchReport, HostError> {
    if options.rounds == 0 || options.operations == 0 {
        return Err(HostError::Size(
            "the benchmark needs at least one round and one operation".into(),
        ));
    }
    match &options.device {
        BenchDevice::Memory => {
            // Larger than any allocation can be (the vector's size would overflow).
            if options.size > isize::MAX as u64 {
                return Err(HostError::Size(alloc::format!(
                    "a memory device of {} bytes is larger than this machine can address",
                    options.size
                )));
            }
            run_on(MemoryDevice::new(options.size), "memory".into(), options)
        }
        BenchDevice::File(path) => {
            let device = locked_scratch_file(path, options.size)?;
            let report = run_on(device, alloc::format!("file {}", path.display()), options);
            let _ = std::fs::remove_file(path);
            report
        }
    }
}

/// Creates (or empties) the benchmark's file, locked exclusively before it
/// is emptied, so an image another disk command is using is refused, not
/// destroyed.
fn locked_scratch_file(path: &std::path::Path, size: u64) -> Result<FileDevice, HostError> {
    let file_error = |error| HostError::File {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(file_error)?;
    crate::host::lock(&file, path, true)?;
    file.set_len(0).map_err(file_error)?;
    FileDevice::from_empty_file(file, size).map_err(|error| HostError::Open {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_zero_metadata_io() {
        let options = BenchOptions {
            size: 8 << 20,
            block_size: 65536,
            operations: 500,
            rounds: 2,
            ..BenchOptions::default()
        };
        let report = run(&options).unwrap();
        assert_eq!(report.metadata_ios_during_data_io, 0);
        assert_eq!(report.store_data_ios, 2 * 2 * 500);
        assert!(report.read.raw > 0.0 && report.write.store > 0.0);
        assert_eq!(report.read_ratios.len(), 2);
    }

    #[test]
    fn a_memory_device_too_large_to_allocate_is_refused() {
        let options = BenchOptions {
            size: u64::MAX,
            ..BenchOptions::default()
        };
        let message = run(&options).unwrap_err().to_string();
        assert!(message.contains(&u64::MAX.to_string()), "{message}");
    }
}
