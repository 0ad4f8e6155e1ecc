//! Host tests of every store operation, one behaviour per test.

mod common;

use common::{new_store, new_store_with, pattern, remount, small_options};
use vmkfs::{
    BlockDevice, CountingDevice, FaultDevice, FileKind, FormatOptions, IoKind, MemoryDevice,
    MountError, OpenMode, Resource, Store, StoreError, check,
};

const MIB: u64 = 1 << 20;

#[test]
fn fresh_file_system_is_empty_and_clean() {
    let store = new_store(4 * MIB);
    assert!(store.list().is_empty());
    let space = store.space();
    assert_eq!(space.block_size, 4096);
    assert_eq!(space.free_data_blocks, space.data_blocks);
    assert!(
        space.data_blocks > 800,
        "most of the device is data: {space:?}"
    );
    let mut devices = store.unmount().unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
}

#[test]
fn create_list_stat_and_zeroed_contents() {
    let mut store = new_store(4 * MIB);
    store.create("disk-a", 40960).unwrap();
    store.create("disk-b", 512).unwrap();
    let names: Vec<_> = store.list().into_iter().map(|info| info.name).collect();
    assert_eq!(names, ["disk-a", "disk-b"]);
    let info = store.stat("disk-a").unwrap();
    assert_eq!(
        (info.kind, info.length, info.allocated_blocks),
        (FileKind::Disk, 40960, 10)
    );
    assert_eq!(store.stat("disk-b").unwrap().allocated_blocks, 1);
    let handle = store.open("disk-a", OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![0xAA; 40960];
    store.read(handle, 0, &mut buffer).unwrap();
    assert!(buffer.iter().all(|&byte| byte == 0));
    assert_eq!(
        store.stat("missing"),
        Err(StoreError::NotFound {
            name: "missing".into()
        })
    );
    assert_eq!(
        store.create("disk-a", 512),
        Err(StoreError::AlreadyExists {
            name: "disk-a".into()
        })
    );
}

#[test]
fn deleted_blocks_are_zeroed_when_reused() {
    let mut store = new_store(MIB);
    let all = store.space().free_data_blocks * 4096;
    store.create("old", all).unwrap();
    let handle = store.open("old", OpenMode::ReadWrite).unwrap();
    store
        .write(handle, 0, &pattern(1, 0, all as usize))
        .unwrap();
    store.close(handle).unwrap();
    store.delete("old").unwrap();
    store.create("new", all).unwrap();
    let handle = store.open("new", OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![1u8; all as usize];
    store.read(handle, 0, &mut buffer).unwrap();
    assert!(
        buffer.iter().all(|&byte| byte == 0),
        "a new disk must not show a deleted disk's data"
    );
}

#[test]
fn writes_read_back_across_blocks_and_remounts() {
    let mut store = new_store(4 * MIB);
    store.create("disk", 64 * 1024).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    let data = pattern(7, 3584, 10 * 1024);
    store.write(handle, 3584, &data).unwrap();
    let mut buffer = vec![0u8; data.len()];
    store.read(handle, 3584, &mut buffer).unwrap();
    assert_eq!(buffer, data);
    store.close(handle).unwrap();
    let mut store = remount(store);
    let handle = store.open("disk", OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![0u8; data.len()];
    store.read(handle, 3584, &mut buffer).unwrap();
    assert_eq!(buffer, data);
    let mut head = vec![1u8; 3584];
    store.read(handle, 0, &mut head).unwrap();
    assert!(head.iter().all(|&byte| byte == 0));
}

#[test]
fn data_io_on_a_disk_does_no_metadata_io() {
    let mut store = new_store(8 * MIB);
    store.create("disk", 2 * MIB).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    store.devices_mut()[0].reset_statistics();
    let mut random = vmkfs::SplitMix64::new(5);
    let mut buffer = vec![0u8; 4096];
    for round in 0..500u64 {
        let offset = random.below(2 * MIB / 512 - 8) * 512;
        if round % 2 == 0 {
            store
                .write(handle, offset, &pattern(round, offset, 4096))
                .unwrap();
        } else {
            store.read(handle, offset, &mut buffer).unwrap();
        }
        if round % 50 == 0 {
            store.flush().unwrap();
        }
    }
    let statistics = store.devices()[0].statistics();
    assert_eq!(statistics.metadata_operations(), 0, "{statistics:?}");
    assert_eq!(
        statistics.data.operations(),
        statistics.data.reads + statistics.data.writes
    );
    // One device I/O per 4 KiB request that stays inside a block, two when it straddles one.
    assert!(
        statistics.data.operations() >= 500 && statistics.data.operations() <= 1000,
        "{statistics:?}"
    );
    assert_eq!(statistics.flushes, 10);
}

#[test]
fn metadata_operations_do_journal_io() {
    let mut store = new_store(4 * MIB);
    store.devices_mut()[0].reset_statistics();
    store.create("disk", 8192).unwrap();
    let statistics = store.devices()[0].statistics();
    assert_eq!(
        statistics.journal.writes, 1,
        "one transaction per operation"
    );
    assert!(
        statistics.metadata.writes >= 3,
        "descriptor, pointer block, map page written in place"
    );
    assert!(statistics.flushes >= 2);
}

#[test]
fn delete_frees_space_and_refuses_open_files() {
    let mut store = new_store(4 * MIB);
    let free = store.space().free_data_blocks;
    store.create("disk", 100 * 4096).unwrap();
    assert_eq!(store.space().free_data_blocks, free - 100);
    let handle = store.open("disk", OpenMode::ReadOnly).unwrap();
    assert_eq!(
        store.delete("disk"),
        Err(StoreError::Busy {
            name: "disk".into()
        })
    );
    store.close(handle).unwrap();
    store.delete("disk").unwrap();
    assert_eq!(store.space().free_data_blocks, free);
    assert!(store.list().is_empty());
    assert_eq!(
        store.delete("disk"),
        Err(StoreError::NotFound {
            name: "disk".into()
        })
    );
    let store = remount(store);
    assert_eq!(store.space().free_data_blocks, free);
}

#[test]
fn rename_checks_names() {
    let mut store = new_store(4 * MIB);
    store.create("a", 4096).unwrap();
    store.create("b", 4096).unwrap();
    assert_eq!(
        store.rename("a", "b"),
        Err(StoreError::AlreadyExists { name: "b".into() })
    );
    assert_eq!(
        store.rename("a", "x/y"),
        Err(StoreError::InvalidName { name: "x/y".into() })
    );
    assert_eq!(
        store.create("", 4096),
        Err(StoreError::InvalidName {
            name: String::new()
        })
    );
    let long = "n".repeat(185);
    assert_eq!(
        store.create(&long, 4096),
        Err(StoreError::InvalidName { name: long.clone() })
    );
    store.create(&long[..184], 4096).unwrap();
    store.rename("a", "c").unwrap();
    store.rename("c", "c").unwrap();
    let store = remount(store);
    let names: Vec<_> = store.list().into_iter().map(|info| info.name).collect();
    assert_eq!(names, ["c", "b", &long[..184]]);
}

#[test]
fn resize_grows_with_zeros_and_shrinks() {
    let mut store = new_store(8 * MIB);
    store.create("disk", 6144).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    store.write(handle, 0, &pattern(3, 0, 6144)).unwrap();
    store.close(handle).unwrap();
    store.resize("disk", 5120).unwrap();
    assert_eq!(store.stat("disk").unwrap().allocated_blocks, 2);
    store.resize("disk", 1024).unwrap();
    assert_eq!(store.stat("disk").unwrap().allocated_blocks, 1);
    // Growing again must not reveal the bytes cut off before.
    store.resize("disk", 5 * 1024 * 1024 / 4).unwrap();
    let mut store = remount(store);
    let handle = store.open("disk", OpenMode::ReadOnly).unwrap();
    let length = store.length(handle).unwrap();
    let mut buffer = vec![0u8; length as usize];
    store.read(handle, 0, &mut buffer).unwrap();
    assert_eq!(&buffer[..1024], &pattern(3, 0, 1024)[..]);
    assert!(buffer[1024..].iter().all(|&byte| byte == 0));
    assert_eq!(
        store.resize("disk", 4096),
        Err(StoreError::Busy {
            name: "disk".into()
        })
    );
    store.close(handle).unwrap();
    assert_eq!(
        store.resize("disk", 1000),
        Err(StoreError::LengthUnaligned { length: 1000 })
    );
    // Across pointer blocks (1024 blocks each) and back.
    store.resize("disk", 1100 * 4096).unwrap();
    assert_eq!(store.stat("disk").unwrap().allocated_blocks, 1100);
    store.resize("disk", 4096).unwrap();
    let mut devices = remount(store).unmount().unwrap();
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
}

#[test]
fn opens_are_exclusive_for_writing_and_shared_for_reading() {
    let mut store = new_store(4 * MIB);
    store.create("disk", 4096).unwrap();
    let writer = store.open("disk", OpenMode::ReadWrite).unwrap();
    assert_eq!(
        store.open("disk", OpenMode::ReadWrite),
        Err(StoreError::Busy {
            name: "disk".into()
        })
    );
    assert_eq!(
        store.open("disk", OpenMode::ReadOnly),
        Err(StoreError::Busy {
            name: "disk".into()
        })
    );
    store.close(writer).unwrap();
    assert_eq!(store.close(writer), Err(StoreError::StaleHandle));
    assert_eq!(
        store.write(writer, 0, &[0; 512]),
        Err(StoreError::StaleHandle)
    );
    let first = store.open("disk", OpenMode::ReadOnly).unwrap();
    let second = store.open("disk", OpenMode::ReadOnly).unwrap();
    assert_ne!(first, second);
    assert_eq!(store.stat("disk").unwrap().readers, 2);
    assert_eq!(
        store.write(first, 0, &[0; 512]),
        Err(StoreError::ReadOnlyHandle {
            name: "disk".into()
        })
    );
    assert_eq!(
        store.open("disk", OpenMode::ReadWrite),
        Err(StoreError::Busy {
            name: "disk".into()
        })
    );
    store.close(first).unwrap();
    store.close(second).unwrap();
    let reopened = store.open("disk", OpenMode::ReadWrite).unwrap();
    // The slot of a closed handle is reused, but the old handle stays stale.
    assert_eq!(
        store.read(first, 0, &mut [0; 512]),
        Err(StoreError::StaleHandle)
    );
    assert!(store.stat("disk").unwrap().writer);
    store.close(reopened).unwrap();
}

#[test]
fn requests_must_be_aligned_and_in_range() {
    let mut store = new_store(4 * MIB);
    store.create("disk", 8192).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    assert_eq!(
        store.write(handle, 100, &[0; 512]),
        Err(StoreError::Unaligned {
            offset: 100,
            length: 512
        })
    );
    assert_eq!(
        store.read(handle, 0, &mut [0; 100]),
        Err(StoreError::Unaligned {
            offset: 0,
            length: 100
        })
    );
    assert_eq!(
        store.write(handle, 7680, &[0; 1024]),
        Err(StoreError::OutOfRange {
            offset: 7680,
            length: 1024,
            file_length: 8192
        })
    );
    assert!(matches!(
        store.read(handle, u64::MAX - 511, &mut [0; 512]),
        Err(StoreError::OutOfRange { .. })
    ));
    assert_eq!(
        store.create("odd", 1000),
        Err(StoreError::LengthUnaligned { length: 1000 })
    );
}

#[test]
fn space_and_limits_are_enforced() {
    let mut store = new_store(MIB);
    let free = store.space().free_data_blocks;
    assert_eq!(
        store.create("huge", (free + 1) * 4096),
        Err(StoreError::NoSpace(Resource::DataBlocks {
            needed: free + 1,
            free
        }))
    );
    let largest = store.largest_file();
    assert_eq!(largest, 8 * 1024 * 4096);
    assert_eq!(
        store.create("too-large", largest + 4096),
        Err(StoreError::TooLarge {
            length: largest + 4096,
            maximum: largest
        })
    );
    for index in 0..16 {
        store.create(&format!("f{index}"), 512).unwrap();
    }
    assert_eq!(
        store.create("one-more", 512),
        Err(StoreError::NoSpace(Resource::FileTable { slots: 16 }))
    );
    assert!(store.list().len() == 16);
    assert_eq!(store.space().free_data_blocks, free - 16);
}

#[test]
fn redo_log_copy_on_write_commit_and_discard() {
    let mut store = new_store(4 * MIB);
    store.create("base", 32 * 1024).unwrap();
    let handle = store.open("base", OpenMode::ReadWrite).unwrap();
    let original = pattern(1, 0, 32 * 1024);
    store.write(handle, 0, &original).unwrap();
    store.close(handle).unwrap();
    store.snapshot("base", "log").unwrap();
    assert_eq!(store.stat("log").unwrap().parent.as_deref(), Some("base"));
    assert_eq!(store.stat("base").unwrap().redo_logs, ["log"]);
    assert!(store.stat("log").unwrap().redo_logs.is_empty());
    assert_eq!(store.stat("log").unwrap().allocated_blocks, 0);
    // The base is frozen.
    assert_eq!(
        store.open("base", OpenMode::ReadWrite),
        Err(StoreError::HasRedoLog {
            name: "base".into(),
            redo_log: "log".into()
        })
    );
    assert!(matches!(
        store.delete("base"),
        Err(StoreError::HasRedoLog { .. })
    ));
    assert!(matches!(
        store.resize("base", 4096),
        Err(StoreError::HasRedoLog { .. })
    ));
    // A frozen base takes a second log beside the first; while both exist
    // neither commits, and the base stays frozen until both are gone.
    store.snapshot("base", "second").unwrap();
    assert_eq!(store.stat("base").unwrap().redo_logs, ["log", "second"]);
    assert_eq!(
        store.commit_redo_log("log"),
        Err(StoreError::SharedBase {
            redo_log: "log".into(),
            base: "base".into(),
            other: "second".into()
        })
    );
    store.discard_redo_log("second").unwrap();
    assert_eq!(store.stat("base").unwrap().redo_logs, ["log"]);
    assert_eq!(
        store.snapshot("base", "log"),
        Err(StoreError::AlreadyExists { name: "log".into() })
    );
    assert_eq!(
        store.resize("log", 4096),
        Err(StoreError::RedoLogLength { name: "log".into() })
    );
    assert_eq!(
        store.commit_redo_log("base"),
        Err(StoreError::NotRedoLog {
            name: "base".into()
        })
    );
    // Writes land in the log, block by block; a partial block is filled from the base.
    let log = store.open("log", OpenMode::ReadWrite).unwrap();
    let update = pattern(2, 5120, 2048);
    store.write(log, 5120, &update).unwrap();
    assert!(store.has_unflushed_metadata());
    store.flush().unwrap();
    assert!(!store.has_unflushed_metadata());
    assert_eq!(store.stat("log").unwrap().allocated_blocks, 1);
    let mut expected = original.clone();
    expected[5120..7168].copy_from_slice(&update);
    let mut view = vec![0u8; 32 * 1024];
    store.read(log, 0, &mut view).unwrap();
    assert_eq!(view, expected);
    let base = store.open("base", OpenMode::ReadOnly).unwrap();
    store.read(base, 0, &mut view).unwrap();
    assert_eq!(view, original, "the base is unchanged under its log");
    store.close(base).unwrap();
    store.close(log).unwrap();
    // Stack a second log and write through it too.
    store.snapshot("log", "log2").unwrap();
    let log2 = store.open("log2", OpenMode::ReadWrite).unwrap();
    let update2 = pattern(3, 0, 512);
    store.write(log2, 0, &update2).unwrap();
    store.write(log2, 6144, &update2).unwrap();
    store.close(log2).unwrap();
    expected[..512].copy_from_slice(&update2);
    expected[6144..6656].copy_from_slice(&update2);
    let mut store = remount(store);
    let log2 = store.open("log2", OpenMode::ReadOnly).unwrap();
    store.read(log2, 0, &mut view).unwrap();
    assert_eq!(view, expected);
    store.close(log2).unwrap();
    assert!(matches!(
        store.commit_redo_log("log"),
        Err(StoreError::HasRedoLog { .. })
    ));
    let free_before = store.space().free_data_blocks;
    store.commit_redo_log("log2").unwrap();
    // log2 held 2 blocks; block 1 replaced one of log's, block 0 was new to log.
    assert_eq!(store.space().free_data_blocks, free_before + 1);
    store.commit_redo_log("log").unwrap();
    assert_eq!(store.list().len(), 1);
    let base = store.open("base", OpenMode::ReadOnly).unwrap();
    store.read(base, 0, &mut view).unwrap();
    assert_eq!(view, expected, "commits merged both logs into the base");
    store.close(base).unwrap();
    // Discard drops a log and its blocks.
    let free = store.space().free_data_blocks;
    store.snapshot("base", "scratch").unwrap();
    let scratch = store.open("scratch", OpenMode::ReadWrite).unwrap();
    store.write(scratch, 0, &vec![9u8; 32 * 1024]).unwrap();
    store.close(scratch).unwrap();
    store.discard_redo_log("scratch").unwrap();
    assert_eq!(store.space().free_data_blocks, free);
    let base = store.open("base", OpenMode::ReadOnly).unwrap();
    store.read(base, 0, &mut view).unwrap();
    assert_eq!(view, expected);
    store.close(base).unwrap();
    let mut devices = remount(store).unmount().unwrap();
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
}

/// Reads all of `name` through a read-only handle.
fn read_all<D: BlockDevice>(store: &mut Store<D>, name: &str) -> Vec<u8> {
    let handle = store.open(name, OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![0u8; store.length(handle).unwrap() as usize];
    store.read(handle, 0, &mut buffer).unwrap();
    store.close(handle).unwrap();
    buffer
}

fn write_at<D: BlockDevice>(store: &mut Store<D>, name: &str, offset: u64, data: &[u8]) {
    let handle = store.open(name, OpenMode::ReadWrite).unwrap();
    store.write(handle, offset, data).unwrap();
    store.close(handle).unwrap();
}

#[test]
fn several_redo_logs_over_one_shared_base() {
    let mut store = new_store(4 * MIB);
    store.create("base", 32 * 1024).unwrap();
    let original = pattern(1, 0, 32 * 1024);
    write_at(&mut store, "base", 0, &original);
    // "vm-b" takes the lower table slot, so name order differs from table order.
    store.snapshot("base", "vm-b").unwrap();
    store.snapshot("base", "vm-a").unwrap();
    let info = store.stat("base").unwrap();
    assert_eq!(info.redo_logs, ["vm-a", "vm-b"], "sorted by name");
    for log in ["vm-a", "vm-b"] {
        assert_eq!(store.stat(log).unwrap().parent.as_deref(), Some("base"));
    }
    // The base is frozen; refusals name its first log by name.
    let frozen = StoreError::HasRedoLog {
        name: "base".into(),
        redo_log: "vm-a".into(),
    };
    assert_eq!(store.open("base", OpenMode::ReadWrite), Err(frozen.clone()));
    assert_eq!(store.delete("base"), Err(frozen.clone()));
    assert_eq!(store.resize("base", 4096), Err(frozen.clone()));
    // Each log is written differently, overlapping in block 1.
    let update_a = pattern(2, 4096, 6144);
    let update_b = pattern(3, 6144, 4096);
    write_at(&mut store, "vm-a", 4096, &update_a);
    write_at(&mut store, "vm-b", 6144, &update_b);
    store.flush().unwrap();
    let mut expected_a = original.clone();
    expected_a[4096..10240].copy_from_slice(&update_a);
    let mut expected_b = original.clone();
    expected_b[6144..10240].copy_from_slice(&update_b);
    assert_eq!(read_all(&mut store, "vm-a"), expected_a);
    assert_eq!(read_all(&mut store, "vm-b"), expected_b);
    assert_eq!(
        read_all(&mut store, "base"),
        original,
        "the base is unchanged"
    );
    // Neither log commits while the other exists.
    assert_eq!(
        store.commit_redo_log("vm-a"),
        Err(StoreError::SharedBase {
            redo_log: "vm-a".into(),
            base: "base".into(),
            other: "vm-b".into()
        })
    );
    let refusal = store.commit_redo_log("vm-b").unwrap_err();
    assert_eq!(
        refusal,
        StoreError::SharedBase {
            redo_log: "vm-b".into(),
            base: "base".into(),
            other: "vm-a".into()
        }
    );
    assert!(
        refusal.to_string().contains("discard the other logs first"),
        "{refusal}"
    );
    // A third log over one of them: its own check comes before the sibling check.
    store.snapshot("vm-b", "vm-b-child").unwrap();
    assert_eq!(
        store.commit_redo_log("vm-b"),
        Err(StoreError::HasRedoLog {
            name: "vm-b".into(),
            redo_log: "vm-b-child".into()
        })
    );
    // ...and the sibling check comes before the parent's open check.
    let reader = store.open("base", OpenMode::ReadOnly).unwrap();
    assert!(matches!(
        store.commit_redo_log("vm-a"),
        Err(StoreError::SharedBase { .. })
    ));
    store.close(reader).unwrap();
    store.discard_redo_log("vm-b-child").unwrap();
    // Everything survives a remount, and the image is clean with two logs over one base.
    let mut store = remount(store);
    assert_eq!(store.stat("base").unwrap().redo_logs, ["vm-a", "vm-b"]);
    assert_eq!(read_all(&mut store, "vm-a"), expected_a);
    assert_eq!(read_all(&mut store, "vm-b"), expected_b);
    assert_eq!(read_all(&mut store, "base"), original);
    let mut devices = store.unmount().unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
    let mut store = Store::mount(devices).unwrap();
    // Discarding one frees exactly its blocks and leaves its sibling intact.
    let free = store.space().free_data_blocks;
    let owned_a = store.stat("vm-a").unwrap().allocated_blocks;
    assert_eq!(owned_a, 2);
    store.discard_redo_log("vm-a").unwrap();
    assert_eq!(store.space().free_data_blocks, free + owned_a);
    assert_eq!(store.stat("base").unwrap().redo_logs, ["vm-b"]);
    assert_eq!(read_all(&mut store, "vm-b"), expected_b);
    assert_eq!(read_all(&mut store, "base"), original);
    assert_eq!(
        store.open("base", OpenMode::ReadWrite),
        Err(StoreError::HasRedoLog {
            name: "base".into(),
            redo_log: "vm-b".into()
        })
    );
    // Now the only log, "vm-b" commits; the base has its bytes and is writable again.
    let mut store = remount(store);
    store.commit_redo_log("vm-b").unwrap();
    assert_eq!(store.list().len(), 1);
    assert!(store.stat("base").unwrap().redo_logs.is_empty());
    assert_eq!(read_all(&mut store, "base"), expected_b);
    let handle = store.open("base", OpenMode::ReadWrite).unwrap();
    store.close(handle).unwrap();
    let mut store = remount(store);
    assert_eq!(read_all(&mut store, "base"), expected_b);
    let mut devices = store.unmount().unwrap();
    let report = check(&mut devices, false).unwrap();
    assert!(report.problems.is_empty(), "{report}");
}

#[test]
fn redo_log_commit_refuses_open_parent_and_discard_open_log() {
    let mut store = new_store(4 * MIB);
    store.create("base", 4096).unwrap();
    store.snapshot("base", "log").unwrap();
    let reader = store.open("base", OpenMode::ReadOnly).unwrap();
    assert_eq!(
        store.commit_redo_log("log"),
        Err(StoreError::Busy {
            name: "base".into()
        })
    );
    store.close(reader).unwrap();
    let log = store.open("log", OpenMode::ReadOnly).unwrap();
    assert_eq!(
        store.discard_redo_log("log"),
        Err(StoreError::Busy { name: "log".into() })
    );
    store.close(log).unwrap();
    store.discard_redo_log("log").unwrap();
    let writer = store.open("base", OpenMode::ReadWrite).unwrap();
    assert_eq!(
        store.snapshot("base", "log"),
        Err(StoreError::Busy {
            name: "base".into()
        })
    );
    store.close(writer).unwrap();
}

#[test]
fn redo_log_grows_beyond_one_transaction() {
    // A log that allocates more blocks between flushes than one transaction holds
    // commits early by itself; the result must still be exact after a remount.
    let options = FormatOptions {
        pointer_blocks_per_file: 2,
        ..small_options()
    };
    let mut store = Store::format(vec![MemoryDevice::new(20 * MIB)], &options).unwrap();
    let length = 2048 * 4096;
    store.create("base", length).unwrap();
    store.snapshot("base", "log").unwrap();
    let handle = store.open("log", OpenMode::ReadWrite).unwrap();
    for block in 0..2048u64 {
        store
            .write(handle, block * 4096, &pattern(block, 0, 512))
            .unwrap();
    }
    store.close(handle).unwrap();
    let mut store = remount(store);
    assert_eq!(store.stat("log").unwrap().allocated_blocks, 2048);
    let handle = store.open("log", OpenMode::ReadOnly).unwrap();
    for block in (0..2048u64).step_by(97) {
        let mut buffer = vec![0u8; 4096];
        store.read(handle, block * 4096, &mut buffer).unwrap();
        assert_eq!(&buffer[..512], &pattern(block, 0, 512)[..]);
        assert!(buffer[512..].iter().all(|&byte| byte == 0));
    }
}

#[test]
fn a_file_system_spans_several_devices() {
    let devices = vec![
        MemoryDevice::new(MIB),
        MemoryDevice::new(2 * MIB),
        MemoryDevice::new(MIB),
    ];
    let mut store = Store::format(devices, &small_options()).unwrap();
    let space = store.space();
    assert_eq!(space.devices, 3);
    let length = (space.free_data_blocks - 4) * 4096;
    store.create("wide", length).unwrap();
    let handle = store.open("wide", OpenMode::ReadWrite).unwrap();
    let data = pattern(11, 0, length as usize);
    store.write(handle, 0, &data).unwrap();
    store.close(handle).unwrap();
    let devices = store.unmount().unwrap();
    assert!(
        devices
            .iter()
            .all(|device| device.bytes().iter().any(|&byte| byte != 0))
    );
    let mut store = Store::mount(devices).unwrap();
    let handle = store.open("wide", OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![0u8; length as usize];
    store.read(handle, 0, &mut buffer).unwrap();
    assert_eq!(buffer, data);
    store.close(handle).unwrap();
    let mut devices = store.unmount().unwrap();
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
    devices.swap(1, 2);
    let error = Store::mount(devices.clone()).err();
    assert_eq!(
        error,
        Some(MountError::DevicePosition { device: 1, says: 2 })
    );
    devices.swap(1, 2);
    devices.pop();
    assert_eq!(
        Store::mount(devices).err(),
        Some(MountError::DeviceCount {
            given: 2,
            expected: 3
        })
    );
}

#[test]
fn a_device_from_another_file_system_is_refused() {
    let first = Store::format(
        vec![MemoryDevice::new(MIB), MemoryDevice::new(MIB)],
        &small_options(),
    )
    .unwrap();
    let other_options = FormatOptions {
        file_system: *b"another-fs-ident",
        ..small_options()
    };
    let second = Store::format(
        vec![MemoryDevice::new(MIB), MemoryDevice::new(MIB)],
        &other_options,
    )
    .unwrap();
    let mut devices = first.unmount().unwrap();
    devices[1] = second.unmount().unwrap().pop().unwrap();
    assert_eq!(
        Store::mount(devices).err(),
        Some(MountError::ForeignDevice { device: 1 })
    );
}

#[test]
fn default_block_size_of_one_mebibyte() {
    let mut store =
        Store::format(vec![MemoryDevice::new(64 * MIB)], &FormatOptions::default()).unwrap();
    assert_eq!(store.block_size(), 1 << 20);
    assert!(store.space().data_blocks >= 56, "{:?}", store.space());
    store.create("vm", 16 * MIB).unwrap();
    assert_eq!(store.stat("vm").unwrap().allocated_blocks, 16);
    let handle = store.open("vm", OpenMode::ReadWrite).unwrap();
    let data = pattern(4, 0, 8192);
    store.write(handle, MIB - 4096, &data).unwrap();
    let mut buffer = vec![0u8; 8192];
    store.read(handle, MIB - 4096, &mut buffer).unwrap();
    assert_eq!(buffer, data);
    assert_eq!(store.largest_file(), 480 * 1024 * MIB);
}

#[test]
fn block_sizes_from_4_kib_to_64_mib() {
    for block_size in [4096u32, 65536, 1 << 20, 64 << 20] {
        let options = FormatOptions {
            block_size,
            ..small_options()
        };
        let size = 2 * u64::from(block_size) + 2 * MIB;
        let mut store = new_store_with(size, &options);
        assert_eq!(store.block_size(), block_size);
        store.create("disk", u64::from(block_size)).unwrap();
        let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
        store
            .write(handle, u64::from(block_size) - 512, &[5u8; 512])
            .unwrap();
        store.close(handle).unwrap();
        let mut devices = store.unmount().unwrap();
        assert!(check(&mut devices, false).unwrap().problems.is_empty());
    }
    for block_size in [2048u32, 4097, 128 << 20] {
        let options = FormatOptions {
            block_size,
            ..small_options()
        };
        assert!(Store::format(vec![MemoryDevice::new(4 * MIB)], &options).is_err());
    }
}

#[test]
fn read_errors_are_reported_and_the_store_carries_on() {
    let mut store = Store::format(
        vec![FaultDevice::new(MemoryDevice::new(4 * MIB))],
        &small_options(),
    )
    .unwrap();
    store.create("disk", 16384).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    store.write(handle, 0, &[3u8; 16384]).unwrap();
    let data_start = store.layout().devices[0].data_start;
    store.devices_mut()[0].fail_reads_of_sector(data_start + 4096);
    let mut buffer = vec![0u8; 16384];
    assert!(matches!(
        store.read(handle, 0, &mut buffer),
        Err(StoreError::Device {
            device: 0,
            error: vmkfs::DeviceError::Media { .. }
        })
    ));
    store.read(handle, 8192, &mut buffer[..8192]).unwrap();
    store.devices_mut()[0].heal_reads();
    store.read(handle, 0, &mut buffer).unwrap();
    assert!(buffer.iter().all(|&byte| byte == 3));
    store.close(handle).unwrap();
    store.create("second", 4096).unwrap();
}

#[test]
fn read_errors_during_mount_name_the_device() {
    let store = Store::format(
        vec![FaultDevice::new(MemoryDevice::new(MIB))],
        &small_options(),
    )
    .unwrap();
    let mut devices = store.unmount().unwrap();
    devices[0].fail_reads_of_sector(0);
    assert!(matches!(
        Store::mount(devices),
        Err(MountError::Device {
            device: 0,
            error: vmkfs::DeviceError::Media { offset: 0 }
        })
    ));
}

#[test]
fn a_failed_metadata_write_stops_the_store_until_remount() {
    let store = Store::format(
        vec![FaultDevice::new(MemoryDevice::new(4 * MIB))],
        &small_options(),
    )
    .unwrap();
    let mut devices = store.unmount().unwrap();
    let writes = devices[0].writes_issued();
    // Crash at the journal write of the next create (after its zeroing write).
    devices[0].crash_at_write(
        writes + 1,
        vmkfs::CrashPolicy::new(vmkfs::UnflushedFate::KeepAll, 0),
    );
    let mut store = Store::mount(devices).unwrap();
    assert!(matches!(
        store.create("disk", 4096),
        Err(StoreError::Device {
            error: vmkfs::DeviceError::Crashed,
            ..
        })
    ));
    assert_eq!(store.create("other", 4096), Err(StoreError::Failed));
    assert_eq!(store.flush(), Err(StoreError::Failed));
    let device = store.into_devices().pop().unwrap().into_durable();
    let store = Store::mount(vec![device]).unwrap();
    assert!(store.list().is_empty(), "the create was never acknowledged");
}

#[test]
fn counting_device_separates_data_from_metadata() {
    let mut store = Store::format(
        vec![CountingDevice::new(MemoryDevice::new(4 * MIB))],
        &small_options(),
    )
    .unwrap();
    store.create("disk", 4096).unwrap();
    let handle = store.open("disk", OpenMode::ReadWrite).unwrap();
    store.devices_mut()[0].reset_statistics();
    store.write(handle, 0, &[1u8; 4096]).unwrap();
    let statistics = store.devices()[0].statistics();
    assert_eq!(
        (statistics.data.writes, statistics.metadata_operations()),
        (1, 0)
    );
    let device: &mut CountingDevice<MemoryDevice> = &mut store.devices_mut()[0];
    device.read(0, &mut [0u8; 512], IoKind::Metadata).unwrap();
    assert_eq!(device.statistics().metadata.reads, 1);
}
