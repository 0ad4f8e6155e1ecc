//! Damaged and hostile images, one kind at a time: mount refuses each with an
//! error naming what is wrong; fsck reports it and repairs what is safe.

mod common;

use common::{pattern, reseal, small_options};
use vmkfs::format::{Layout, PAGE_SIZE, PageFault};
use vmkfs::journal::JournalFault;
use vmkfs::{MapKind, MemoryDevice, MountError, OpenMode, Problem, Store, check};

struct Image {
    bytes: Vec<u8>,
    layout: Layout,
}

impl Image {
    fn page(&mut self, page: u64) -> &mut [u8] {
        let start = page as usize * PAGE_SIZE;
        &mut self.bytes[start..start + PAGE_SIZE]
    }

    fn descriptor_page(&self, slot: u64) -> u64 {
        self.layout.shared.table_start + slot
    }

    fn data_map_page(&self) -> u64 {
        self.layout.devices[0].map_start + u64::from(self.layout.devices[0].pointer_map_pages)
    }

    fn pointer_block_page(&self, slot: u32) -> u64 {
        self.layout.devices[0].pointer_start + u64::from(slot)
    }

    fn mount(&self) -> Result<Store<MemoryDevice>, MountError> {
        Store::mount(vec![MemoryDevice::from_bytes(self.bytes.clone())])
    }

    fn problems(&self) -> Vec<Problem> {
        match self.mount() {
            Err(MountError::Inconsistent { problems }) => problems,
            Err(other) => panic!("expected inconsistent metadata, got: {other}"),
            Ok(_) => panic!("the damaged image mounted"),
        }
    }

    fn reseal(&mut self) {
        reseal(&mut self.bytes, &self.layout);
    }
}

/// Two disks with known contents, in descriptor slots 0 and 1, and a third in slot 2.
fn image() -> Image {
    let mut store = Store::format(vec![MemoryDevice::new(1 << 20)], &small_options()).unwrap();
    store.create("first", 16 * 1024).unwrap();
    store.create("second", 8 * 1024).unwrap();
    let handle = store.open("first", OpenMode::ReadWrite).unwrap();
    store.write(handle, 0, &pattern(1, 0, 16 * 1024)).unwrap();
    store.close(handle).unwrap();
    let layout = store.layout().clone();
    store.create("scratch", 512).unwrap();
    store.delete("scratch").unwrap();
    // The last transaction (a rename in slot 2) is all the journal holds, so the
    // pages the tests damage are not restored by replaying it.
    store.create("spare", 512).unwrap();
    store.rename("spare", "spare-renamed").unwrap();
    Image {
        bytes: store.unmount().unwrap().pop().unwrap().into_bytes(),
        layout,
    }
}

fn first_contents_intact(store: &mut Store<MemoryDevice>) {
    let handle = store.open("first", OpenMode::ReadOnly).unwrap();
    let mut buffer = vec![0u8; 16 * 1024];
    store.read(handle, 0, &mut buffer).unwrap();
    assert_eq!(buffer, pattern(1, 0, 16 * 1024));
    store.close(handle).unwrap();
}

#[test]
fn a_damaged_primary_superblock_is_named_and_restored_from_the_backup() {
    let mut image = image();
    image.page(0)[200] ^= 0xFF;
    let problems = image.problems();
    assert!(
        matches!(
            problems[..],
            [Problem::SuperblockCopy {
                device: 0,
                copy: 0,
                fault: PageFault::Checksum { .. }
            }]
        ),
        "{problems:?}"
    );
    let message = image.mount().err().unwrap().to_string();
    assert!(
        message.contains("primary superblock of device 0 is damaged"),
        "{message}"
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    let report = check(&mut devices, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.repaired.len(), 1);
    first_contents_intact(&mut Store::mount(devices).unwrap());
}

#[test]
fn no_readable_superblock_is_refused() {
    let mut image = image();
    image.page(0)[0] ^= 1;
    image.page(1)[100] ^= 1;
    let error = image.mount().err().unwrap();
    assert!(matches!(
        error,
        MountError::Superblock {
            device: 0,
            primary: PageFault::Magic { .. },
            backup: PageFault::Checksum { .. }
        }
    ));
    assert!(error.to_string().contains("no readable superblock"));
    assert!(check(&mut [MemoryDevice::from_bytes(image.bytes)], true).is_err());
}

#[test]
fn a_newer_format_version_is_refused() {
    let mut image = image();
    image.page(0)[4] = 2;
    image.page(1)[4] = 2;
    image.reseal();
    let error = image.mount().err().unwrap();
    assert!(
        matches!(
            error,
            MountError::Superblock {
                primary: PageFault::Version { found: 2 },
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("format version 2"));
}

#[test]
fn a_hostile_superblock_layout_is_refused() {
    let mut image = image();
    // data_start (offset 160) moved into the metadata.
    for page in [0, 1] {
        image.page(page)[160..168].copy_from_slice(&4096u64.to_le_bytes());
    }
    image.reseal();
    let error = image.mount().err().unwrap();
    assert!(matches!(error, MountError::Layout(_)), "{error}");
    assert!(error.to_string().contains("data_start"), "{error}");
}

#[test]
fn a_truncated_image_is_refused() {
    let mut image = image();
    image.bytes.truncate(image.bytes.len() - 8192);
    let error = image.mount().err().unwrap();
    assert!(
        matches!(error, MountError::DeviceTooSmall { device: 0, .. }),
        "{error}"
    );
}

#[test]
fn a_damaged_descriptor_is_reported_not_guessed_at() {
    let mut image = image();
    let page = image.descriptor_page(0);
    image.page(page)[300] ^= 4;
    let problems = image.problems();
    assert!(
        matches!(
            problems[..],
            [Problem::DescriptorPage {
                slot: 0,
                fault: PageFault::Checksum { .. }
            }]
        ),
        "{problems:?}"
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    let report = check(&mut devices, true).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.repaired.is_empty(),
        "fsck must not guess which blocks the file owned: {report}"
    );
    assert!(
        report.to_string().contains("file descriptor 0 is damaged"),
        "{report}"
    );
}

#[test]
fn a_misdirected_descriptor_is_caught() {
    let mut image = image();
    let (from, to) = (image.descriptor_page(0), image.descriptor_page(5));
    let copy = image.page(from).to_vec();
    image.page(to).copy_from_slice(&copy);
    let problems = image.problems();
    assert!(
        matches!(
            problems[0],
            Problem::DescriptorPage {
                slot: 5,
                fault: PageFault::Address { .. }
            }
        ),
        "{problems:?}"
    );
}

#[test]
fn a_page_of_another_file_system_is_caught() {
    let mut image = image();
    let other_options = vmkfs::FormatOptions {
        file_system: *b"a-different-fsid",
        ..small_options()
    };
    let other = Store::format(vec![MemoryDevice::new(1 << 20)], &other_options).unwrap();
    let other_bytes = other.unmount().unwrap().pop().unwrap().into_bytes();
    let page = image.descriptor_page(3) as usize;
    image.bytes[page * PAGE_SIZE..(page + 1) * PAGE_SIZE]
        .copy_from_slice(&other_bytes[page * PAGE_SIZE..(page + 1) * PAGE_SIZE]);
    let problems = image.problems();
    assert_eq!(
        problems,
        vec![Problem::DescriptorPage {
            slot: 3,
            fault: PageFault::FileSystem
        }]
    );
}

#[test]
fn a_leaked_block_is_reported_and_repaired() {
    let mut image = image();
    let map = image.data_map_page();
    image.page(map)[48 + 10] |= 0x10; // block 84: far from the files
    image.reseal();
    let problems = image.problems();
    assert_eq!(
        problems,
        vec![Problem::Leaked {
            device: 0,
            map: MapKind::DataBlocks,
            count: 1,
            first: 84
        }]
    );
    assert!(
        image
            .mount()
            .err()
            .unwrap()
            .to_string()
            .contains("marked in use but owned by no file")
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    let report = check(&mut devices, true).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.repaired, problems);
    let mut store = Store::mount(devices).unwrap();
    first_contents_intact(&mut store);
    assert_eq!(
        store.space().free_data_blocks,
        store.space().data_blocks - 7
    );
}

#[test]
fn an_owned_block_marked_free_is_reported_and_repaired() {
    let mut image = image();
    let map = image.data_map_page();
    image.page(map)[48] &= !0x02; // block 1 belongs to "first"
    image.reseal();
    let problems = image.problems();
    assert_eq!(
        problems,
        vec![Problem::MarkedFree {
            device: 0,
            map: MapKind::DataBlocks,
            count: 1,
            first: 1
        }]
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    assert!(check(&mut devices, true).unwrap().is_clean());
    first_contents_intact(&mut Store::mount(devices).unwrap());
}

#[test]
fn a_damaged_map_page_is_rebuilt_from_the_files() {
    let mut image = image();
    let map = image.data_map_page();
    image.page(map)[1000] ^= 0xFF;
    let problems = image.problems();
    assert!(
        matches!(
            problems[..],
            [Problem::MapPage {
                device: 0,
                map: MapKind::DataBlocks,
                page: 0,
                ..
            }]
        ),
        "{problems:?}"
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    assert!(check(&mut devices, true).unwrap().is_clean());
    let store = Store::mount(devices).unwrap();
    assert_eq!(
        store.space().free_data_blocks,
        store.space().data_blocks - 7
    );
}

#[test]
fn a_pointer_past_the_data_region_is_refused() {
    let mut image = image();
    let pointer_block = image.pointer_block_page(0);
    image.page(pointer_block)[..4].copy_from_slice(&5000u32.to_le_bytes());
    image.reseal();
    let problems = image.problems();
    assert!(
        problems
            .iter()
            .any(|problem| matches!(problem, Problem::BlockOutOfRange { index: 0, .. })),
        "{problems:?}"
    );
    assert!(
        image
            .mount()
            .err()
            .unwrap()
            .to_string()
            .contains("past the end of the data region")
    );
}

#[test]
fn a_damaged_pointer_block_is_caught_by_the_descriptor_checksum() {
    let mut image = image();
    let pointer_block = image.pointer_block_page(1);
    image.page(pointer_block)[0] ^= 1;
    let problems = image.problems();
    assert!(
        matches!(&problems[0], Problem::PointerBlockChecksum { name, index: 0, .. } if name == "second"),
        "{problems:?}"
    );
}

#[test]
fn a_block_owned_twice_is_refused_and_left_for_a_person() {
    let mut image = image();
    // Point block 0 of "second" at block 0 of "first".
    let first_block = {
        let page = image.pointer_block_page(0);
        image.page(page)[..4].to_vec()
    };
    let pointer_block = image.pointer_block_page(1);
    image.page(pointer_block)[..4].copy_from_slice(&first_block);
    image.reseal();
    let problems = image.problems();
    assert!(
        problems.iter().any(|problem| matches!(problem, Problem::OwnedTwice { map: MapKind::DataBlocks, first, second, .. } if first == "first" && second == "second")),
        "{problems:?}"
    );
    let mut devices = vec![MemoryDevice::from_bytes(image.bytes.clone())];
    let report = check(&mut devices, true).unwrap();
    assert!(!report.is_clean());
    assert!(
        report.repaired.is_empty(),
        "maps are not rebuilt while ownership is ambiguous: {report}"
    );
}

#[test]
fn a_hostile_redo_log_chain_is_refused() {
    let mut image = image();
    // Turn "second" (slot 1) into a redo log whose parent is itself.
    let page = image.descriptor_page(1);
    image.page(page)[49] = 2;
    image.page(page)[52..56].copy_from_slice(&1u32.to_le_bytes());
    image.reseal();
    let problems = image.problems();
    assert!(
        problems.contains(&Problem::Parent {
            name: "second".into(),
            reason: "names itself as parent".into()
        }),
        "{problems:?}"
    );
}

#[test]
fn redo_logs_sharing_a_parent_are_clean_but_a_parent_cycle_is_refused() {
    // Slots 0-2: three files of one length; "log-a" and "log-b" both over "base".
    let mut store = Store::format(vec![MemoryDevice::new(1 << 20)], &small_options()).unwrap();
    store.create("base", 8 * 1024).unwrap();
    store.snapshot("base", "log-a").unwrap();
    store.snapshot("base", "log-b").unwrap();
    // The journal's last transaction touches slot 3 only, so replaying it
    // does not undo the damage below.
    store.create("spare", 512).unwrap();
    let layout = store.layout().clone();
    let mut devices = store.unmount().unwrap();
    assert!(check(&mut devices, false).unwrap().problems.is_empty());
    let mut image = Image {
        bytes: devices.pop().unwrap().into_bytes(),
        layout,
    };
    // Make "base" a redo log over "log-a": base and log-a form a cycle, and
    // log-b sits over it.
    let page = image.descriptor_page(0);
    image.page(page)[49] = 2;
    image.page(page)[52..56].copy_from_slice(&1u32.to_le_bytes());
    image.reseal();
    let problems = image.problems();
    for (name, reason) in [
        ("base", "is part of a parent cycle"),
        ("log-a", "is part of a parent cycle"),
        (
            "log-b",
            "is over a parent cycle (its chain never reaches a disk)",
        ),
    ] {
        assert!(
            problems.contains(&Problem::Parent {
                name: name.into(),
                reason: reason.into()
            }),
            "{name}: {problems:?}"
        );
    }
}

#[test]
fn a_journal_naming_a_data_block_is_refused() {
    let mut image = image();
    let journal = image.layout.shared.journal_start;
    let data_page = image.layout.devices[0].data_start / PAGE_SIZE as u64;
    // The journal's first address entry now names a data page; checksums are made valid.
    let address_page = journal + 1;
    image.page(address_page)[..8].copy_from_slice(&data_page.to_le_bytes());
    image.reseal();
    let error = image.mount().err().unwrap();
    assert!(
        matches!(error, MountError::Journal(JournalFault::Address { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("not a metadata page"), "{error}");
}

#[test]
fn a_torn_journal_is_ignored() {
    let mut image = image();
    let journal = image.layout.shared.journal_start;
    image.page(journal + 2)[17] ^= 1;
    let mut store = image.mount().expect("a torn transaction is simply absent");
    first_contents_intact(&mut store);
}
