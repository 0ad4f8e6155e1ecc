//! fsck: report every problem in an image and repair what can be repaired
//! without guessing.
//!
//! Purpose: the checker loads an image the way mount does (journal overlaid,
//! every invariant checked) but, instead of refusing, lists the
//! [`Problem`]s. With repair it then fixes exactly these, because each has a
//! single right answer:
//! - a complete journal transaction not yet in place (the image was not
//!   unmounted cleanly; reported as [`Problem::JournalNotInPlace`]) is
//!   replayed into place;
//! - a damaged or disagreeing superblock copy is rewritten from the good one;
//! - allocation maps that disagree with what the files own (leaked blocks,
//!   owned blocks marked free, damaged map pages) are rebuilt from the files,
//!   but only when every descriptor and pointer block is readable and no block
//!   is owned twice, so the files' ownership is known exactly.
//!
//! Damaged descriptors or pointer blocks, doubly owned blocks, broken
//! redo-log chains and bad names are reported and left alone: repairing them
//! means choosing which data to lose, which is a person's decision.
//!
//! Invariants: repairs go through the journal like any metadata update, so a
//! crash during fsck leaves an image fsck can still repair.
//!
//! Callers: the `disk fsck` tool, the tests (as the invariant oracle after
//! every crash), and the block-store component at start-up if it chooses.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::device::BlockDevice;
use crate::error::MountError;
use crate::format::{PageFault, Pointer};
use crate::load::{Loaded, load};
use crate::store::Store;

/// Which allocation map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    PointerBlocks,
    DataBlocks,
}

impl fmt::Display for MapKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::PointerBlocks => "pointer-block",
            Self::DataBlocks => "data-block",
        })
    }
}

/// One thing wrong with an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The journal's complete transaction is not yet written in place (the
    /// image was not unmounted cleanly). Mounts see it replayed; a repair or
    /// a read-write mount writes it.
    JournalNotInPlace {
        pages: usize,
    },
    SuperblockCopy {
        device: u32,
        copy: u64,
        fault: PageFault,
    },
    SuperblockCopiesDiffer {
        device: u32,
    },
    DescriptorPage {
        slot: u32,
        fault: PageFault,
    },
    DescriptorField {
        slot: u32,
        reason: String,
    },
    MissingPointerBlock {
        name: String,
        index: u32,
    },
    PointerBlockOutOfRange {
        name: String,
        index: u32,
        pointer: Pointer,
    },
    PointerBlockChecksum {
        name: String,
        index: u32,
        stored: u32,
        computed: u32,
    },
    MissingBlock {
        name: String,
        index: u64,
    },
    BlockOutOfRange {
        name: String,
        index: u64,
        pointer: Pointer,
    },
    BlockPastEnd {
        name: String,
        index: u64,
    },
    MapPage {
        device: u32,
        map: MapKind,
        page: u32,
        fault: PageFault,
    },
    MapBitsPastEnd {
        device: u32,
        map: MapKind,
    },
    DuplicateName {
        name: String,
        first: u32,
        second: u32,
    },
    Parent {
        name: String,
        reason: String,
    },
    OwnedTwice {
        map: MapKind,
        pointer: Pointer,
        first: String,
        second: String,
    },
    Leaked {
        device: u32,
        map: MapKind,
        count: u64,
        first: u32,
    },
    MarkedFree {
        device: u32,
        map: MapKind,
        count: u64,
        first: u32,
    },
}

impl Problem {
    /// True for the problems fsck repairs (given the conditions in the module documentation).
    pub fn is_map_problem(&self) -> bool {
        matches!(
            self,
            Self::MapPage { .. }
                | Self::MapBitsPastEnd { .. }
                | Self::Leaked { .. }
                | Self::MarkedFree { .. }
        )
    }

    /// True for the problem every repair (and every read-write mount) fixes.
    pub fn is_journal_problem(&self) -> bool {
        matches!(self, Self::JournalNotInPlace { .. })
    }

    pub fn is_superblock_problem(&self) -> bool {
        matches!(
            self,
            Self::SuperblockCopy { .. } | Self::SuperblockCopiesDiffer { .. }
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::JournalNotInPlace { pages } => write!(
                formatter,
                "the journal holds a committed transaction whose {pages} pages are not in place \
                 (the image was not unmounted cleanly: a crash or a killed process); \
                 mounts see it replayed, a repair or any read-write mount writes it in place"
            ),
            Self::SuperblockCopy {
                device,
                copy,
                fault,
            } => {
                let which = if *copy == 0 { "primary" } else { "backup" };
                write!(
                    formatter,
                    "the {which} superblock of device {device} is damaged: {fault}"
                )
            }
            Self::SuperblockCopiesDiffer { device } => {
                write!(
                    formatter,
                    "the two superblock copies of device {device} disagree"
                )
            }
            Self::DescriptorPage { slot, fault } => {
                write!(formatter, "file descriptor {slot} is damaged: {fault}")
            }
            Self::DescriptorField { slot, reason } => {
                write!(formatter, "file descriptor {slot}: {reason}")
            }
            Self::MissingPointerBlock { name, index } => {
                write!(
                    formatter,
                    "the disk '{name}' has no pointer block {index} (disks are fully allocated)"
                )
            }
            Self::PointerBlockOutOfRange {
                name,
                index,
                pointer,
            } => {
                write!(
                    formatter,
                    "pointer block {index} of '{name}' is at {pointer}, outside the pointer-block region"
                )
            }
            Self::PointerBlockChecksum {
                name,
                index,
                stored,
                computed,
            } => write!(
                formatter,
                "pointer block {index} of '{name}' is damaged (checksum {computed:#010x}, descriptor says {stored:#010x})"
            ),
            Self::MissingBlock { name, index } => {
                write!(
                    formatter,
                    "the disk '{name}' has no block {index} (disks are fully allocated)"
                )
            }
            Self::BlockOutOfRange {
                name,
                index,
                pointer,
            } => {
                write!(
                    formatter,
                    "block {index} of '{name}' points to {pointer}, past the end of the data region"
                )
            }
            Self::BlockPastEnd { name, index } => {
                write!(
                    formatter,
                    "'{name}' has a block pointer at index {index}, past its length"
                )
            }
            Self::MapPage {
                device,
                map,
                page,
                fault,
            } => {
                write!(
                    formatter,
                    "page {page} of the {map} allocation map of device {device} is damaged: {fault}"
                )
            }
            Self::MapBitsPastEnd { device, map } => {
                write!(
                    formatter,
                    "the {map} allocation map of device {device} marks blocks past its end"
                )
            }
            Self::DuplicateName {
                name,
                first,
                second,
            } => {
                write!(
                    formatter,
                    "file descriptors {first} and {second} are both named '{name}'"
                )
            }
            Self::Parent { name, reason } => write!(formatter, "the redo log '{name}' {reason}"),
            Self::OwnedTwice {
                map,
                pointer,
                first,
                second,
            } => {
                write!(
                    formatter,
                    "{map} {pointer} is owned by both '{first}' and '{second}'"
                )
            }
            Self::Leaked {
                device,
                map,
                count,
                first,
            } => write!(
                formatter,
                "{count} {map}s of device {device} are marked in use but owned by no file (first: {first})"
            ),
            Self::MarkedFree {
                device,
                map,
                count,
                first,
            } => write!(
                formatter,
                "{count} {map}s of device {device} are owned by a file but marked free (first: {first})"
            ),
        }
    }
}

/// What fsck found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Every problem found before any repair.
    pub problems: Vec<Problem>,
    /// Problems repaired.
    pub repaired: Vec<Problem>,
    /// Problems left in the image after this run.
    pub remaining: Vec<Problem>,
    pub files: usize,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.remaining.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "{} files", self.files)?;
        for problem in &self.problems {
            let state = if self.repaired.contains(problem) {
                "repaired"
            } else {
                "NOT repaired"
            };
            let state = if self.remaining.contains(problem) || self.repaired.contains(problem) {
                state
            } else {
                ""
            };
            writeln!(formatter, "problem: {problem} {state}")?;
        }
        if self.problems.is_empty() {
            writeln!(formatter, "no problems")?;
        } else if self.remaining.is_empty() {
            writeln!(formatter, "all problems repaired")?;
        } else {
            writeln!(formatter, "{} problems remain", self.remaining.len())?;
        }
        Ok(())
    }
}

/// Checks the file system on `devices`; with `repair`, fixes what can be
/// fixed safely (see the module documentation) and checks again.
pub fn check<D: BlockDevice>(devices: &mut [D], repair: bool) -> Result<CheckReport, MountError> {
    let loaded = load(devices)?;
    let mut report = CheckReport {
        problems: problems_of(&loaded),
        files: loaded
            .slots
            .iter()
            .filter(|slot| slot.file().is_some())
            .count(),
        ..CheckReport::default()
    };
    if !repair {
        report.remaining = report.problems.clone();
        return Ok(report);
    }
    let rebuild_maps =
        loaded.maps_rebuildable && loaded.problems.iter().any(Problem::is_map_problem);
    let mut repaired: Vec<Problem> = report
        .problems
        .iter()
        .filter(|problem| {
            problem.is_journal_problem()
                || problem.is_superblock_problem()
                || (rebuild_maps && problem.is_map_problem())
        })
        .cloned()
        .collect();
    Store::repair(devices, loaded, rebuild_maps)?;
    report.remaining = problems_of(&load(devices)?);
    repaired.retain(|problem| !report.remaining.contains(problem));
    report.repaired = repaired;
    Ok(report)
}

/// The loader's problems, after a journal transaction not in place (which the
/// loader overlays and mount accepts, so it is not among them).
fn problems_of(loaded: &Loaded) -> Vec<Problem> {
    let mut problems = Vec::with_capacity(loaded.problems.len() + 1);
    if loaded.journal_pages_pending > 0 {
        problems.push(Problem::JournalNotInPlace {
            pages: loaded.journal_pages_pending,
        });
    }
    problems.extend(loaded.problems.iter().cloned());
    problems
}
