//! The exhaustive crash test.
//!
//! A mixed workload (creates, writes, flushes, resizes, renames, deletes,
//! redo-log snapshots, copy-on-write writes, commits and discards) runs once to
//! count its device writes W. Then, for every N in 0..=W and for several
//! crash policies, it runs again on a fault-injecting device that crashes at
//! write N (N = W: a power cut after the last operation), resolving the
//! unflushed writes as the policy says (all kept, all dropped, each randomly
//! kept/dropped/torn at sector granularity, or torn inside a sector). The
//! surviving image must mount (mount checks every invariant: checksums, no
//! block owned twice, no leak, pointers in range), fsck must find nothing, the
//! files must be those before or after the interrupted operation, and every
//! sector must hold its acknowledged contents or a write issued after the last
//! acknowledgement.

mod common;

use std::collections::BTreeMap;

use common::small_options;
use vmkfs::{
    BlockDevice, CrashPolicy, FaultDevice, FileKind, MemoryDevice, OpenMode, Store, StoreError,
    UnflushedFate, check,
};

const SECTOR: usize = 512;
const SECTORS_PER_BLOCK: usize = 8;
/// Crash policies tried at every write index.
const POLICIES: usize = 6;

#[derive(Clone, Debug)]
enum Operation {
    Create(&'static str, usize),
    Delete(&'static str),
    Resize(&'static str, usize),
    Rename(&'static str, &'static str),
    Write {
        name: &'static str,
        sector: usize,
        count: usize,
    },
    Flush,
    Snapshot(&'static str, &'static str),
    Commit(&'static str),
    Discard(&'static str),
}

use Operation::{Commit, Create, Delete, Discard, Flush, Rename, Resize, Snapshot, Write};

fn write(name: &'static str, sector: usize, count: usize) -> Operation {
    Write {
        name,
        sector,
        count,
    }
}

/// The workload: every kind of operation, acknowledged and unacknowledged writes, stacked logs.
fn workload() -> Vec<Operation> {
    let mut operations = vec![
        Create("a", 16 * SECTORS_PER_BLOCK),
        write("a", 0, 24),
        write("a", 100, 10),
        Flush,
        Create("b", 8 * SECTORS_PER_BLOCK),
        write("b", 5, 15),
        write("a", 60, 10),
        Resize("a", 20 * SECTORS_PER_BLOCK),
        write("a", 150, 10),
        Flush,
        Snapshot("a", "a1"),
        write("a1", 3, 2),
        write("a1", 30, 10),
        write("a1", 3, 1),
        Flush,
        write("a1", 120, 10),
        Snapshot("a1", "a2"),
        write("a2", 0, 8),
        write("a2", 64, 2),
        write("a2", 6, 4),
        Commit("a2"),
        write("b", 40, 10),
        Delete("b"),
        Create("c", 6 * SECTORS_PER_BLOCK),
        write("c", 0, 48),
        Flush,
        Rename("c", "d"),
        write("a1", 10, 2),
        write("a1", 155, 5),
        Commit("a1"),
        Snapshot("d", "d1"),
        write("d1", 1, 8),
        Flush,
        write("d1", 20, 10),
        Discard("d1"),
        Resize("a", 10 * SECTORS_PER_BLOCK),
        write("a", 70, 10),
        Resize("a", 14 * SECTORS_PER_BLOCK + 4),
        write("d", 40, 8),
    ];
    // A tail of pseudo-random writes and flushes over the survivors, and a final log.
    let mut random = vmkfs::SplitMix64::new(99);
    for step in 0..24 {
        let (name, length) = if step % 3 == 0 {
            ("d", 48)
        } else {
            ("a", 14 * SECTORS_PER_BLOCK + 4)
        };
        let count = 1 + random.below(12) as usize;
        let sector = random.below((length - count) as u64) as usize;
        operations.push(write(name, sector, count));
        if step % 5 == 4 {
            operations.push(Flush);
        }
    }
    operations.extend([
        Snapshot("a", "a3"),
        write("a3", 8, 16),
        Flush,
        write("a3", 40, 4),
    ]);
    operations
}

/// What reading a sector may return: its acknowledged version, then versions written since.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelFile {
    kind: FileKind,
    parent: Option<String>,
    sectors: Vec<Vec<u32>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    files: BTreeMap<String, ModelFile>,
    next_version: u32,
}

/// The bytes of version `version` of sector `sector`: self-identifying, version 0 is zeros.
fn sector_contents(version: u32, sector: usize) -> [u8; SECTOR] {
    let mut bytes = [0u8; SECTOR];
    if version == 0 {
        return bytes;
    }
    bytes[..4].copy_from_slice(&version.to_le_bytes());
    bytes[4..12].copy_from_slice(&(sector as u64).to_le_bytes());
    let fill = common::pattern(u64::from(version), (sector * SECTOR) as u64, SECTOR - 12);
    bytes[12..].copy_from_slice(&fill);
    bytes
}

type Summary = BTreeMap<String, (FileKind, u64, Option<String>)>;

impl Model {
    fn acknowledge(&mut self) {
        for file in self.files.values_mut() {
            for sector in &mut file.sectors {
                let last = *sector.last().expect("a sector has a version");
                *sector = vec![last];
            }
        }
    }

    fn summary(&self) -> Summary {
        self.files
            .iter()
            .map(|(name, file)| {
                (
                    name.clone(),
                    (
                        file.kind,
                        (file.sectors.len() * SECTOR) as u64,
                        file.parent.clone(),
                    ),
                )
            })
            .collect()
    }

    /// Applies an operation's intended effect (a write records its new versions).
    fn apply(&mut self, operation: &Operation) {
        match *operation {
            Create(name, sectors) => {
                self.files.insert(
                    name.into(),
                    ModelFile {
                        kind: FileKind::Disk,
                        parent: None,
                        sectors: vec![vec![0]; sectors],
                    },
                );
            }
            Delete(name) | Discard(name) => {
                self.files.remove(name);
            }
            Resize(name, sectors) => {
                let file = self.files.get_mut(name).expect("resized file exists");
                file.sectors.resize(sectors, vec![0]);
            }
            Rename(from, to) => {
                let file = self.files.remove(from).expect("renamed file exists");
                self.files.insert(to.into(), file);
            }
            Write {
                name,
                sector,
                count,
            } => {
                self.next_version += 1;
                let version = self.next_version;
                let file = self.files.get_mut(name).expect("written file exists");
                for versions in &mut file.sectors[sector..sector + count] {
                    versions.push(version);
                }
            }
            Flush => {}
            Snapshot(base, log) => {
                let mut file = self.files[base].clone();
                file.kind = FileKind::RedoLog;
                file.parent = Some(base.into());
                self.files.insert(log.into(), file);
            }
            Commit(log) => {
                let file = self.files.remove(log).expect("committed log exists");
                let parent = file.parent.clone().expect("a log has a parent");
                self.files.get_mut(&parent).expect("parent exists").sectors = file.sectors;
            }
        }
        if !matches!(operation, Write { .. }) {
            // Every other operation returns only after everything before it is durable.
            self.acknowledge();
        }
    }
}

fn run_operation<D: BlockDevice>(
    store: &mut Store<D>,
    model: &Model,
    operation: &Operation,
) -> Result<(), StoreError> {
    match *operation {
        Create(name, sectors) => store.create(name, (sectors * SECTOR) as u64),
        Delete(name) => store.delete(name),
        Resize(name, sectors) => store.resize(name, (sectors * SECTOR) as u64),
        Rename(from, to) => store.rename(from, to),
        Write {
            name,
            sector,
            count,
        } => {
            let version = model.next_version;
            let mut data = Vec::with_capacity(count * SECTOR);
            for index in sector..sector + count {
                data.extend_from_slice(&sector_contents(version, index));
            }
            let handle = store.open(name, OpenMode::ReadWrite)?;
            let result = store.write(handle, (sector * SECTOR) as u64, &data);
            store.close(handle)?;
            result
        }
        Flush => store.flush(),
        Snapshot(base, log) => store.snapshot(base, log),
        Commit(log) => store.commit_redo_log(log),
        Discard(log) => store.discard_redo_log(log),
    }
}

/// Runs the workload until it ends or an operation fails; returns the model
/// states before and after the operation in flight (equal if none failed).
fn run_workload<D: BlockDevice>(
    store: &mut Store<D>,
    operations: &[Operation],
) -> (Model, Model, bool) {
    let mut model = Model::default();
    for operation in operations {
        let mut after = model.clone();
        after.apply(operation);
        let mut before = model.clone();
        if matches!(operation, Write { .. }) {
            before = after.clone();
        }
        match run_operation(store, &after, operation) {
            Ok(()) => model = after,
            Err(StoreError::Device { .. } | StoreError::Failed) => return (before, after, true),
            Err(error) => panic!("workload operation {operation:?} refused: {error}"),
        }
    }
    (model.clone(), model, false)
}

fn base_image() -> MemoryDevice {
    let store = Store::format(vec![MemoryDevice::new(1 << 20)], &small_options()).expect("mkfs");
    store.unmount().expect("unmount").pop().expect("one device")
}

/// Mounts the surviving image and checks it against the models.
fn verify(
    image: MemoryDevice,
    before: &Model,
    after: &Model,
    any_pending: bool,
) -> Result<(), String> {
    let mut store = Store::mount(vec![image]).map_err(|error| format!("mount refused: {error}"))?;
    let listing: Summary = store
        .list()
        .into_iter()
        .map(|info| (info.name, (info.kind, info.length, info.parent)))
        .collect();
    let model = if listing == before.summary() {
        before
    } else if listing == after.summary() {
        after
    } else {
        return Err(format!(
            "files after recovery {listing:?} are neither those before {:?} nor after {:?}",
            before.summary(),
            after.summary()
        ));
    };
    for (name, file) in &model.files {
        let handle = store
            .open(name, OpenMode::ReadOnly)
            .map_err(|error| error.to_string())?;
        let mut contents = vec![0u8; file.sectors.len() * SECTOR];
        store
            .read(handle, 0, &mut contents)
            .map_err(|error| format!("reading '{name}': {error}"))?;
        store.close(handle).map_err(|error| error.to_string())?;
        for (index, versions) in file.sectors.iter().enumerate() {
            let actual = &contents[index * SECTOR..(index + 1) * SECTOR];
            if any_pending && versions.len() > 1 {
                continue;
            }
            if !versions
                .iter()
                .any(|&version| actual == sector_contents(version, index))
            {
                let found = u32::from_le_bytes(actual[..4].try_into().expect("four bytes"));
                return Err(format!(
                    "sector {index} of '{name}' holds version {found}, acceptable are {versions:?} (acknowledged first)"
                ));
            }
        }
    }
    let mut devices = store
        .unmount()
        .map_err(|error| format!("unmount after recovery: {error}"))?;
    let report = check(&mut devices, false).map_err(|error| format!("fsck refused: {error}"))?;
    if !report.problems.is_empty() {
        return Err(format!("fsck after recovery:\n{report}"));
    }
    // Recovery is idempotent: a second mount sees the same files.
    let store = Store::mount(devices).map_err(|error| format!("second mount refused: {error}"))?;
    if store.list().len() != model.files.len() {
        return Err("a second mount sees different files".into());
    }
    Ok(())
}

fn policies(crash_point: u64) -> [CrashPolicy; POLICIES] {
    [
        CrashPolicy::new(UnflushedFate::KeepAll, crash_point),
        CrashPolicy::new(UnflushedFate::DropAll, crash_point),
        CrashPolicy::new(UnflushedFate::Random, crash_point),
        CrashPolicy::new(UnflushedFate::Random, crash_point ^ 0x1234_5678),
        CrashPolicy::new(UnflushedFate::Random, crash_point.wrapping_mul(0x9E37_79B9)),
        CrashPolicy {
            unflushed: UnflushedFate::Random,
            tear_inside_sector: true,
            seed: crash_point ^ 0xABCD,
        },
    ]
}

#[test]
fn every_crash_point_recovers_acknowledged_data() {
    let operations = workload();
    let image = base_image();
    // A clean run: count the writes and check the final state.
    let mut store = Store::mount(vec![FaultDevice::new(image.clone())]).expect("mount");
    let (model, _, crashed) = run_workload(&mut store, &operations);
    assert!(!crashed);
    let total_writes = store.devices()[0].writes_issued();
    let device = store.unmount().expect("unmount").pop().expect("one device");
    let mut acknowledged = model.clone();
    acknowledged.acknowledge();
    verify(device.into_durable(), &acknowledged, &acknowledged, false).expect("clean run verifies");
    assert!(
        total_writes > 100,
        "the workload issues {total_writes} writes"
    );

    let mut crash_points = 0u64;
    let mut outcomes = BTreeMap::<&str, u64>::new();
    for crash_point in 0..=total_writes {
        for policy in policies(crash_point) {
            let mut device = FaultDevice::new(image.clone());
            if crash_point < total_writes {
                device.crash_at_write(crash_point, policy);
            }
            let mut store = Store::mount(vec![device]).expect("mount before the workload");
            let (before, after, crashed) = run_workload(&mut store, &operations);
            let mut device = store.into_devices().pop().expect("one device");
            if crash_point == total_writes {
                device.crash_now(policy);
            } else {
                assert!(
                    crashed,
                    "the crash at write {crash_point} must interrupt the workload"
                );
            }
            let tear_inside = !device.torn_sectors().is_empty();
            let outcome = verify(device.into_durable(), &before, &after, tear_inside);
            if let Err(message) = outcome {
                panic!("crash at write {crash_point} of {total_writes} with {policy:?}: {message}");
            }
            *outcomes
                .entry(if before == after {
                    "between operations"
                } else {
                    "inside an operation"
                })
                .or_default() += 1;
            crash_points += 1;
        }
    }
    println!(
        "crash test: {} write indices x {POLICIES} policies = {crash_points} crash points checked ({outcomes:?}); workload of {} operations",
        total_writes + 1,
        operations.len()
    );
    assert_eq!(crash_points, (total_writes + 1) * POLICIES as u64);
}

#[test]
fn a_crash_during_recovery_is_recovered_too() {
    // Crash the workload at every write that leaves a complete transaction to
    // replay, then crash the replay itself at each of its writes.
    let operations = workload();
    let image = base_image();
    let mut store = Store::mount(vec![FaultDevice::new(image.clone())]).expect("mount");
    run_workload(&mut store, &operations);
    let total_writes = store.into_devices()[0].writes_issued();
    let mut replays_crashed = 0;
    for crash_point in (0..total_writes).step_by(3) {
        let mut device = FaultDevice::new(image.clone());
        device.crash_at_write(
            crash_point,
            CrashPolicy::new(UnflushedFate::Random, crash_point),
        );
        let mut store = Store::mount(vec![device]).expect("mount");
        let (before, after, _) = run_workload(&mut store, &operations);
        let survivor = store.into_devices().pop().expect("device").into_durable();
        for replay_write in 0.. {
            let mut device = FaultDevice::new(survivor.clone());
            device.crash_at_write(
                replay_write,
                CrashPolicy::new(UnflushedFate::Random, replay_write),
            );
            match Store::mount(vec![&mut device]) {
                Ok(_) => break,
                Err(vmkfs::MountError::Device {
                    error: vmkfs::DeviceError::Crashed,
                    ..
                }) => {}
                Err(error) => panic!("mount at crash point {crash_point}: {error}"),
            }
            replays_crashed += 1;
            verify(device.into_durable(), &before, &after, false).unwrap_or_else(|message| {
                panic!("crash point {crash_point}, replay crash {replay_write}: {message}")
            });
        }
    }
    println!("recovery crash test: {replays_crashed} crashes during journal replay checked");
    assert!(replays_crashed > 0);
}
