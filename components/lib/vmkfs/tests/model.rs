//! Property test: the store against a plain in-memory model under random
//! sequences of every operation, including remounts. The model predicts the
//! outcome (success or which refusal) of every operation and the exact
//! contents of every file. Redo logs form a tree: a file may have several
//! logs over it, and a log commits only when it is its parent's only log.

mod common;

use std::collections::BTreeMap;

use common::small_options;
use proptest::prelude::*;
use vmkfs::{FileKind, MemoryDevice, OpenMode, Resource, Store, StoreError, check};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const BLOCK: u64 = 4096;

#[derive(Clone, Debug)]
enum Operation {
    Create {
        name: usize,
        sectors: u64,
    },
    Delete {
        name: usize,
    },
    Resize {
        name: usize,
        sectors: u64,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Write {
        name: usize,
        sector: u64,
        count: u64,
        seed: u64,
    },
    Read {
        name: usize,
        sector: u64,
        count: u64,
    },
    Snapshot {
        base: usize,
        log: usize,
    },
    Commit {
        log: usize,
    },
    Discard {
        log: usize,
    },
    Flush,
    Remount,
}

fn operation() -> impl Strategy<Value = Operation> {
    let name = 0..NAMES.len();
    let sectors = 0u64..(24 * BLOCK / 512);
    prop_oneof![
        3 => (name.clone(), sectors.clone()).prop_map(|(name, sectors)| Operation::Create { name, sectors }),
        1 => name.clone().prop_map(|name| Operation::Delete { name }),
        1 => (name.clone(), sectors.clone()).prop_map(|(name, sectors)| Operation::Resize { name, sectors }),
        1 => (name.clone(), name.clone()).prop_map(|(from, to)| Operation::Rename { from, to }),
        6 => (name.clone(), sectors.clone(), 1u64..40, any::<u64>())
            .prop_map(|(name, sector, count, seed)| Operation::Write { name, sector, count, seed }),
        3 => (name.clone(), sectors, 1u64..40).prop_map(|(name, sector, count)| Operation::Read { name, sector, count }),
        4 => (name.clone(), name.clone()).prop_map(|(base, log)| Operation::Snapshot { base, log }),
        2 => name.clone().prop_map(|log| Operation::Commit { log }),
        1 => name.prop_map(|log| Operation::Discard { log }),
        1 => Just(Operation::Flush),
        1 => Just(Operation::Remount),
    ]
}

#[derive(Clone, Debug)]
struct ModelFile {
    kind: FileKind,
    parent: Option<String>,
    contents: Vec<u8>,
}

#[derive(Default)]
struct Model {
    files: BTreeMap<String, ModelFile>,
}

impl Model {
    /// The redo logs directly over `name`, in name order (the map's order).
    fn redo_logs(&self, name: &str) -> Vec<String> {
        self.files
            .iter()
            .filter(|(_, file)| file.parent.as_deref() == Some(name))
            .map(|(child, _)| child.clone())
            .collect()
    }

    /// The redo log over `name` that a refusal names: the first by name.
    fn first_redo_log(&self, name: &str) -> Option<String> {
        self.redo_logs(name).into_iter().next()
    }

    fn not_found(&self, name: &str) -> Option<StoreError> {
        (!self.files.contains_key(name)).then(|| StoreError::NotFound { name: name.into() })
    }

    fn has_log(&self, name: &str) -> Option<StoreError> {
        self.first_redo_log(name)
            .map(|redo_log| StoreError::HasRedoLog {
                name: name.into(),
                redo_log,
            })
    }

    fn full(&self) -> Option<StoreError> {
        (self.files.len() == 16).then_some(StoreError::NoSpace(Resource::FileTable { slots: 16 }))
    }

    fn redo_log_checks(&self, log: &str) -> Option<StoreError> {
        self.not_found(log)
            .or_else(|| {
                (self.files[log].kind != FileKind::RedoLog)
                    .then(|| StoreError::NotRedoLog { name: log.into() })
            })
            .or_else(|| self.has_log(log))
    }

    /// Commit's refusal when the log's parent has other logs over it (checked
    /// after [`Model::redo_log_checks`]; the model never leaves a parent open).
    fn shared_base(&self, log: &str) -> Option<StoreError> {
        let base = self.files[log].parent.clone().expect("a log has a parent");
        self.redo_logs(&base)
            .into_iter()
            .find(|other| other != log)
            .map(|other| StoreError::SharedBase {
                redo_log: log.into(),
                base,
                other,
            })
    }
}

fn pattern(seed: u64, length: usize) -> Vec<u8> {
    let mut random = vmkfs::SplitMix64::new(seed);
    (0..length).map(|_| random.next_u64() as u8).collect()
}

fn expect(
    result: Result<(), StoreError>,
    expected: Option<StoreError>,
    operation: &Operation,
) -> Result<bool, TestCaseError> {
    match (result, expected) {
        (Ok(()), None) => Ok(true),
        (Err(error), Some(expected)) => {
            prop_assert_eq!(error, expected, "{:?}", operation);
            Ok(false)
        }
        (result, expected) => Err(TestCaseError::fail(format!(
            "{operation:?}: store gave {result:?}, model expected {expected:?}"
        ))),
    }
}

fn run(operations: Vec<Operation>) -> Result<(), TestCaseError> {
    let mut store =
        Store::format(vec![MemoryDevice::new(4 << 20)], &small_options()).expect("mkfs");
    let mut model = Model::default();
    for operation in &operations {
        match *operation {
            Operation::Create { name, sectors } => {
                let name = NAMES[name];
                let expected = model
                    .files
                    .contains_key(name)
                    .then(|| StoreError::AlreadyExists { name: name.into() })
                    .or_else(|| model.full());
                if expect(store.create(name, sectors * 512), expected, operation)? {
                    model.files.insert(
                        name.into(),
                        ModelFile {
                            kind: FileKind::Disk,
                            parent: None,
                            contents: vec![0; sectors as usize * 512],
                        },
                    );
                }
            }
            Operation::Delete { name } => {
                let name = NAMES[name];
                let expected = model.not_found(name).or_else(|| model.has_log(name));
                if expect(store.delete(name), expected, operation)? {
                    model.files.remove(name);
                }
            }
            Operation::Resize { name, sectors } => {
                let name = NAMES[name];
                let expected = model
                    .not_found(name)
                    .or_else(|| model.has_log(name))
                    .or_else(|| {
                        (model.files[name].kind == FileKind::RedoLog)
                            .then(|| StoreError::RedoLogLength { name: name.into() })
                    });
                if expect(store.resize(name, sectors * 512), expected, operation)? {
                    model
                        .files
                        .get_mut(name)
                        .expect("exists")
                        .contents
                        .resize(sectors as usize * 512, 0);
                }
            }
            Operation::Rename { from, to } => {
                let (from, to) = (NAMES[from], NAMES[to]);
                let expected = model.not_found(from).or_else(|| {
                    (from != to && model.files.contains_key(to))
                        .then(|| StoreError::AlreadyExists { name: to.into() })
                });
                if expect(store.rename(from, to), expected, operation)? && from != to {
                    let file = model.files.remove(from).expect("exists");
                    model.files.insert(to.into(), file);
                    for file in model.files.values_mut() {
                        if file.parent.as_deref() == Some(from) {
                            file.parent = Some(to.into());
                        }
                    }
                }
            }
            Operation::Write {
                name,
                sector,
                count,
                seed,
            } => {
                let name = NAMES[name];
                let expected = model.not_found(name).or_else(|| model.has_log(name));
                let handle = match store.open(name, OpenMode::ReadWrite) {
                    Ok(handle) => {
                        prop_assert!(
                            expected.is_none(),
                            "{:?}: opened, model expected {:?}",
                            operation,
                            expected
                        );
                        handle
                    }
                    Err(error) => {
                        prop_assert_eq!(Some(error), expected, "{:?}", operation);
                        continue;
                    }
                };
                let length = model.files[name].contents.len() as u64;
                let data = pattern(seed, count as usize * 512);
                let result = store.write(handle, sector * 512, &data);
                store.close(handle).expect("close");
                let expected =
                    (sector * 512 + count * 512 > length).then_some(StoreError::OutOfRange {
                        offset: sector * 512,
                        length: count * 512,
                        file_length: length,
                    });
                if expect(result, expected, operation)? {
                    let start = sector as usize * 512;
                    model.files.get_mut(name).expect("exists").contents[start..start + data.len()]
                        .copy_from_slice(&data);
                }
            }
            Operation::Read {
                name,
                sector,
                count,
            } => {
                let name = NAMES[name];
                let Some(file) = model.files.get(name) else {
                    prop_assert_eq!(
                        store.open(name, OpenMode::ReadOnly),
                        Err(StoreError::NotFound { name: name.into() })
                    );
                    continue;
                };
                let handle = store
                    .open(name, OpenMode::ReadOnly)
                    .expect("open read-only");
                let mut buffer = vec![0u8; count as usize * 512];
                let result = store.read(handle, sector * 512, &mut buffer);
                store.close(handle).expect("close");
                let start = sector as usize * 512;
                if start + buffer.len() <= file.contents.len() {
                    prop_assert!(result.is_ok(), "{:?}: {:?}", operation, result);
                    prop_assert!(
                        buffer == file.contents[start..start + buffer.len()],
                        "{:?}: contents differ",
                        operation
                    );
                } else {
                    prop_assert!(
                        matches!(result, Err(StoreError::OutOfRange { .. })),
                        "{:?}: {:?}",
                        operation,
                        result
                    );
                }
            }
            Operation::Snapshot { base, log } => {
                let (base, log) = (NAMES[base], NAMES[log]);
                // A base that already has logs takes another one.
                let expected = model
                    .not_found(base)
                    .or_else(|| {
                        model
                            .files
                            .contains_key(log)
                            .then(|| StoreError::AlreadyExists { name: log.into() })
                    })
                    .or_else(|| model.full());
                if expect(store.snapshot(base, log), expected, operation)? {
                    let mut file = model.files[base].clone();
                    file.kind = FileKind::RedoLog;
                    file.parent = Some(base.into());
                    model.files.insert(log.into(), file);
                }
            }
            Operation::Commit { log } => {
                let log = NAMES[log];
                let expected = model
                    .redo_log_checks(log)
                    .or_else(|| model.shared_base(log));
                if expect(store.commit_redo_log(log), expected, operation)? {
                    let file = model.files.remove(log).expect("exists");
                    model
                        .files
                        .get_mut(file.parent.as_deref().expect("parent"))
                        .expect("parent exists")
                        .contents = file.contents;
                }
            }
            Operation::Discard { log } => {
                let log = NAMES[log];
                let expected = model.redo_log_checks(log);
                if expect(store.discard_redo_log(log), expected, operation)? {
                    model.files.remove(log);
                }
            }
            Operation::Flush => store.flush().expect("flush"),
            Operation::Remount => {
                let devices = store.unmount().expect("unmount");
                store = Store::mount(devices).expect("remount");
            }
        }
    }
    // Final comparison: listing, contents, and a clean fsck.
    let listing: BTreeMap<_, _> = store
        .list()
        .into_iter()
        .map(|info| {
            (
                info.name,
                (info.kind, info.length, info.parent, info.redo_logs),
            )
        })
        .collect();
    let expected: BTreeMap<_, _> = model
        .files
        .iter()
        .map(|(name, file)| {
            (
                name.clone(),
                (
                    file.kind,
                    file.contents.len() as u64,
                    file.parent.clone(),
                    model.redo_logs(name),
                ),
            )
        })
        .collect();
    prop_assert_eq!(listing, expected);
    for (name, file) in &model.files {
        let handle = store.open(name, OpenMode::ReadOnly).expect("open");
        let mut buffer = vec![0u8; file.contents.len()];
        store.read(handle, 0, &mut buffer).expect("read");
        store.close(handle).expect("close");
        prop_assert!(buffer == file.contents, "contents of '{}' differ", name);
    }
    let mut devices = store.unmount().expect("unmount");
    let report = check(&mut devices, false).expect("fsck");
    prop_assert!(report.problems.is_empty(), "{}", report);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(operations in proptest::collection::vec(operation(), 1..80)) {
        run(operations)?;
    }
}
