//! The metadata journal: one checksummed transaction at a time, written to a
//! fixed region of device 0 before any metadata page is updated in place.
//!
//! Purpose: make every metadata change atomic across crashes. A transaction is
//! a header page, a list of page addresses, and the full new image of each
//! page. The header's own checksum covers the header; its payload checksum
//! covers the address list and the images. A transaction counts only if both
//! checksums hold, so a torn or partly dropped transaction is simply absent.
//!
//! Invariants (the protocol, kept by [`crate::Store`]): (1) every device is
//! flushed before a transaction is written, so the data its pointers name and
//! the in-place pages of the previous transaction are durable; (2) device 0 is
//! flushed after the transaction is written and before the operation returns;
//! (3) only then are the pages written in place, and they are not flushed
//! until the next transaction begins. Hence the journal region always holds
//! either the newest transaction or a torn newer one whose predecessor is
//! already fully in place, and replaying the journal's valid transaction at
//! mount is always correct and idempotent.
//!
//! Callers: the store (commit, mount replay), the loader, the checker.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::checksum::Crc32c;
use crate::device::{BlockDevice, DeviceError, IoKind};
use crate::format::{
    JournalHeaderPage, PAGE_SIZE, Page, PageAddress, PageKind, SharedGeometry, seal_page,
    verify_page,
};

/// A decoded (or about to be written) transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub sequence: u64,
    pub pages: Vec<(PageAddress, Box<Page>)>,
}

/// A journal whose header checksum holds but whose contents cannot be a
/// transaction this code wrote: a hostile or corrupted image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalFault {
    EntryCount { count: u32, capacity: u32 },
    AddressPages { found: u32, expected: u32 },
    Address { address: PageAddress },
    DuplicateAddress { address: PageAddress },
}

impl fmt::Display for JournalFault {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EntryCount { count, capacity } => {
                write!(
                    formatter,
                    "journal transaction claims {count} pages; the journal holds {capacity}"
                )
            }
            Self::AddressPages { found, expected } => {
                write!(
                    formatter,
                    "journal transaction has {found} address pages, its page count needs {expected}"
                )
            }
            Self::Address { address } => {
                write!(
                    formatter,
                    "journal transaction would overwrite {address}, which is not a metadata page"
                )
            }
            Self::DuplicateAddress { address } => {
                write!(formatter, "journal transaction names {address} twice")
            }
        }
    }
}

impl core::error::Error for JournalFault {}

fn address_pages_for(entries: usize) -> usize {
    (entries * 8).div_ceil(PAGE_SIZE)
}

/// The bytes of a transaction, to be written at the start of the journal region.
pub fn encode(transaction: &Transaction, shared: &SharedGeometry) -> Vec<u8> {
    let entries = transaction.pages.len();
    let address_pages = address_pages_for(entries);
    let mut bytes = vec![0u8; (1 + address_pages + entries) * PAGE_SIZE];
    let (header_bytes, rest) = bytes.split_at_mut(PAGE_SIZE);
    let (address_bytes, image_bytes) = rest.split_at_mut(address_pages * PAGE_SIZE);
    for (index, (address, image)) in transaction.pages.iter().enumerate() {
        address_bytes[index * 8..index * 8 + 8].copy_from_slice(&address.encode().to_le_bytes());
        image_bytes[index * PAGE_SIZE..(index + 1) * PAGE_SIZE].copy_from_slice(&image[..]);
    }
    let mut payload = Crc32c::new();
    payload.update(address_bytes);
    payload.update(image_bytes);
    let mut header = JournalHeaderPage::new_zeroed();
    header.entry_count.set(entries as u32);
    header.address_pages.set(address_pages as u32);
    header.payload_checksum.set(payload.finish());
    let mut page = [0u8; PAGE_SIZE];
    page.copy_from_slice(header.as_bytes());
    seal_page(
        &mut page,
        PageKind::JournalHeader,
        PageAddress::new(0, shared.journal_start),
        shared.file_system,
        transaction.sequence,
    );
    header_bytes.copy_from_slice(&page);
    bytes
}

/// What the journal region holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalState {
    /// A complete transaction, to be replayed.
    Complete(Transaction),
    /// No complete transaction (a torn one, or a damaged header); the sequence
    /// number is the header's when the header itself is intact.
    Incomplete { sequence: Option<u64> },
}

/// Reads the journal region of device 0. `is_metadata_page` says whether a
/// transaction may name an address.
pub fn read<D: BlockDevice>(
    device: &mut D,
    shared: &SharedGeometry,
    is_metadata_page: impl Fn(PageAddress) -> bool,
) -> Result<Result<JournalState, JournalFault>, DeviceError> {
    let start = shared.journal_start * PAGE_SIZE as u64;
    let mut page = [0u8; PAGE_SIZE];
    device.read(start, &mut page, IoKind::Journal)?;
    let header_address = PageAddress::new(0, shared.journal_start);
    let Ok(header) = verify_page(
        &page,
        PageKind::JournalHeader,
        header_address,
        Some(shared.file_system),
    ) else {
        return Ok(Ok(JournalState::Incomplete { sequence: None }));
    };
    let Ok(body) = JournalHeaderPage::ref_from_bytes(&page[..]) else {
        unreachable!("a journal header is one page")
    };
    let sequence = header.sequence.get();
    let count = body.entry_count.get();
    if count > shared.journal_entries {
        return Ok(Err(JournalFault::EntryCount {
            count,
            capacity: shared.journal_entries,
        }));
    }
    let expected_address_pages = address_pages_for(count as usize) as u32;
    if body.address_pages.get() != expected_address_pages {
        return Ok(Err(JournalFault::AddressPages {
            found: body.address_pages.get(),
            expected: expected_address_pages,
        }));
    }
    let payload_length = (expected_address_pages as usize + count as usize) * PAGE_SIZE;
    let mut payload = vec![0u8; payload_length];
    if payload_length > 0 {
        device.read(start + PAGE_SIZE as u64, &mut payload, IoKind::Journal)?;
    }
    let mut checksum = Crc32c::new();
    checksum.update(&payload);
    if checksum.finish() != body.payload_checksum.get() {
        return Ok(Ok(JournalState::Incomplete {
            sequence: Some(sequence),
        }));
    }
    let (address_bytes, image_bytes) =
        payload.split_at(expected_address_pages as usize * PAGE_SIZE);
    let mut pages: Vec<(PageAddress, Box<Page>)> = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&address_bytes[index * 8..index * 8 + 8]);
        let address = PageAddress::decode(u64::from_le_bytes(raw));
        if !is_metadata_page(address) {
            return Ok(Err(JournalFault::Address { address }));
        }
        if pages.iter().any(|(seen, _)| *seen == address) {
            return Ok(Err(JournalFault::DuplicateAddress { address }));
        }
        let mut image = Box::new([0u8; PAGE_SIZE]);
        image.copy_from_slice(&image_bytes[index * PAGE_SIZE..(index + 1) * PAGE_SIZE]);
        pages.push((address, image));
    }
    Ok(Ok(JournalState::Complete(Transaction { sequence, pages })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use crate::format::{FormatOptions, Layout};

    fn shared() -> SharedGeometry {
        let options = FormatOptions {
            block_size: 4096,
            max_files: 8,
            pointer_blocks_per_file: 4,
            ..FormatOptions::default()
        };
        Layout::compute(&[1 << 20], &options).unwrap().shared
    }

    fn transaction(count: usize) -> Transaction {
        let pages = (0..count)
            .map(|index| {
                (
                    PageAddress::new(0, 100 + index as u64),
                    Box::new([index as u8 + 1; PAGE_SIZE]),
                )
            })
            .collect();
        Transaction {
            sequence: 42,
            pages,
        }
    }

    #[test]
    fn round_trip_and_torn_payload() {
        let shared = shared();
        let mut device = MemoryDevice::new(1 << 20);
        let bytes = encode(&transaction(3), &shared);
        device
            .write(
                shared.journal_start * PAGE_SIZE as u64,
                &bytes,
                IoKind::Journal,
            )
            .unwrap();
        let state = read(&mut device, &shared, |_| true).unwrap().unwrap();
        assert_eq!(state, JournalState::Complete(transaction(3)));
        // Tear the last image: the transaction is no longer complete.
        let last = shared.journal_start * PAGE_SIZE as u64 + bytes.len() as u64 - 512;
        device.write(last, &[0u8; 512], IoKind::Journal).unwrap();
        let state = read(&mut device, &shared, |_| true).unwrap().unwrap();
        assert_eq!(state, JournalState::Incomplete { sequence: Some(42) });
    }

    #[test]
    fn hostile_addresses_are_refused() {
        let shared = shared();
        let mut device = MemoryDevice::new(1 << 20);
        let bytes = encode(&transaction(2), &shared);
        device
            .write(
                shared.journal_start * PAGE_SIZE as u64,
                &bytes,
                IoKind::Journal,
            )
            .unwrap();
        let fault = read(&mut device, &shared, |address| address.page != 101)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            fault,
            JournalFault::Address {
                address: PageAddress::new(0, 101)
            }
        );
    }

    #[test]
    fn empty_region_is_incomplete() {
        let shared = shared();
        let mut device = MemoryDevice::new(1 << 20);
        assert_eq!(
            read(&mut device, &shared, |_| true).unwrap().unwrap(),
            JournalState::Incomplete { sequence: None }
        );
    }
}
