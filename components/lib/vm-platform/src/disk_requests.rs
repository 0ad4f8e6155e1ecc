//! A virtual disk's requests in flight between a guest's virtio-blk device
//! and the block store: each guest request (up to
//! [`virtio_blk::MAX_REQUEST_BYTES`]) is cut into parts of at most
//! [`PART_BYTES`], each part one message to the store, and the guest's
//! request completes when all its parts have.
//!
//! The table is the world switcher's memory of what the guest is owed:
//! nothing of a request lives in the store. When the store restarts (its
//! queues reset, answers in flight lost), [`Requests::resend_all`] makes
//! every part without an answer go out again; reads and writes are
//! idempotent, so sending twice is safe. Every part carries an id that
//! names its slot, the request's sequence number and the part, so an
//! answer to a request the guest no longer waits for (the device was
//! reset) or a second answer to one part is ignored, whatever a hostile
//! store sends.

use crate::virtio_blk::{GuestRequest, Kind, MAX_REQUEST_BYTES, STATUS_IOERR, STATUS_OK, Segment};

/// The most bytes one part moves (the block interface's message).
pub const PART_BYTES: u32 = 4096;
const SECTOR: u64 = 512;
const MAX_PARTS: usize = (MAX_REQUEST_BYTES / PART_BYTES) as usize;
const PART_WORDS: usize = MAX_PARTS / 64;

/// What a part asks of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    Read,
    Write,
    Flush,
    /// Make `sectors` sectors read as zeros (a discard or write-zeroes:
    /// one part however many sectors, no data).
    Zero,
}

/// One message's worth of a guest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// The id its answer must carry.
    pub id: u64,
    pub kind: PartKind,
    pub sector: u64,
    pub sectors: u32,
    /// Where its data starts in the guest request's data (bytes).
    pub offset: u32,
    /// The table slot of its request (for [`Requests::pieces`]).
    pub slot: usize,
}

/// A guest request whose parts all answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    pub head: u16,
    pub status_address: u64,
    /// [`STATUS_OK`] or [`STATUS_IOERR`].
    pub status: u8,
    /// Bytes the device wrote into guest buffers (read data and the
    /// status byte), for the used element.
    pub written: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    request: GuestRequest,
    sequence: u32,
    parts: u16,
    /// Parts sent since the last [`Requests::resend_all`] (in order).
    sent: u16,
    answered: u16,
    done: [u64; PART_WORDS],
    failed: bool,
}

/// Up to `N` guest requests in flight (`N` at most 256).
pub struct Requests<const N: usize> {
    entries: [Option<Entry>; N],
    /// Slots in the order their requests arrived: parts go out oldest
    /// request first.
    order: [u8; N],
    first: usize,
    count: usize,
    sequence: u32,
}

impl<const N: usize> Default for Requests<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Requests<N> {
    pub const fn new() -> Self {
        assert!(N > 0 && N <= 256);
        Self {
            entries: [None; N],
            order: [0; N],
            first: 0,
            count: 0,
            sequence: 0,
        }
    }

    /// Whether another request fits.
    pub fn has_room(&self) -> bool {
        self.count < N
    }

    /// Guest requests in flight.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Takes a read, write or flush (the caller answers the others
    /// itself); `false` when the table is full or the request is of
    /// another kind.
    pub fn admit(&mut self, request: GuestRequest) -> bool {
        let parts = match request.kind {
            Kind::Read | Kind::Write => request.bytes.div_ceil(PART_BYTES),
            Kind::Flush | Kind::Zero => 1,
            Kind::GetId => return false,
        };
        if !self.has_room() || parts == 0 || parts as usize > MAX_PARTS {
            return false;
        }
        let Some(slot) = self.entries.iter().position(Option::is_none) else {
            return false;
        };
        self.sequence = self.sequence.wrapping_add(1);
        self.entries[slot] = Some(Entry {
            request,
            sequence: self.sequence,
            parts: parts as u16,
            sent: 0,
            answered: 0,
            done: [0; PART_WORDS],
            failed: false,
        });
        self.order[(self.first + self.count) % N] = slot as u8;
        self.count += 1;
        true
    }

    /// The next part to send, oldest request first; the caller sends it
    /// and then calls [`Requests::sent`] (or leaves it for later when the
    /// queue is full).
    pub fn next_part(&self) -> Option<Part> {
        (0..self.count).find_map(|i| {
            let slot = usize::from(self.order[(self.first + i) % N]);
            let entry = self.entries[slot].as_ref()?;
            let index = (entry.sent..entry.parts).find(|&part| !is_done(entry, part))?;
            Some(part_of(entry, slot, index))
        })
    }

    /// The part [`Requests::next_part`] gave went out.
    pub fn sent(&mut self, part: &Part) {
        if let Some(entry) = self.entries[part.slot].as_mut() {
            let index = (part.id & 0xff) as u16 + 1;
            entry.sent = entry.sent.max(index);
        }
    }

    /// The part an answer with `id` is for, if it is in flight and not
    /// answered yet (what a read's data is checked against before it is
    /// copied to the guest).
    pub fn part(&self, id: u64) -> Option<Part> {
        let (sequence, slot, index) = split_id(id);
        let entry = self.entries.get(slot)?.as_ref()?;
        (entry.sequence == sequence && index < entry.parts && !is_done(entry, index))
            .then(|| part_of(entry, slot, index))
    }

    /// An answer with `id`: `ok` when the store carried it out. Returns
    /// the finished guest request when this was its last part; answers
    /// to nothing in flight, or repeated, change nothing.
    pub fn answered(&mut self, id: u64, ok: bool) -> Option<Finished> {
        let (sequence, slot, part) = split_id(id);
        let entry = self.entries.get_mut(slot)?.as_mut()?;
        if entry.sequence != sequence || part >= entry.parts || is_done(entry, part) {
            return None;
        }
        entry.done[usize::from(part / 64)] |= 1 << (part % 64);
        entry.answered += 1;
        entry.failed |= !ok;
        if entry.answered < entry.parts {
            return None;
        }
        let request = entry.request;
        let failed = entry.failed;
        self.entries[slot] = None;
        self.forget_finished();
        let read = request.kind == Kind::Read && !failed;
        Some(Finished {
            head: request.head,
            status_address: request.status,
            status: if failed { STATUS_IOERR } else { STATUS_OK },
            written: if read { request.bytes + 1 } else { 1 },
        })
    }

    /// Drops finished requests from the arrival order, keeping the order
    /// of the rest, so that `count` is the requests in flight.
    fn forget_finished(&mut self) {
        let mut kept = 0;
        for i in 0..self.count {
            let slot = self.order[(self.first + i) % N];
            if self.entries[usize::from(slot)].is_some() {
                self.order[(self.first + kept) % N] = slot;
                kept += 1;
            }
        }
        self.count = kept;
    }

    /// The store restarted: every part without an answer goes out again.
    pub fn resend_all(&mut self) {
        for entry in self.entries.iter_mut().flatten() {
            entry.sent = 0;
        }
    }

    /// The guest reset the device: every request is forgotten (answers
    /// still on their way are ignored).
    pub fn clear(&mut self) {
        self.entries = [None; N];
        self.first = 0;
        self.count = 0;
    }

    /// The guest-physical pieces of `length` bytes at `offset` in the
    /// data of the request in `slot`, in order (a part's data spans at
    /// most [`PART_BYTES`], so at most that many segments).
    pub fn pieces(&self, slot: usize, offset: u32, length: u32) -> Pieces {
        let mut pieces = Pieces {
            items: [Segment::default(); crate::virtio_blk::MAX_SEGMENTS],
            count: 0,
        };
        let Some(entry) = self.entries.get(slot).and_then(Option::as_ref) else {
            return pieces;
        };
        let (mut start, end) = (offset, offset.saturating_add(length));
        let mut at = 0u32;
        for segment in &entry.request.segments[..entry.request.count] {
            let segment_end = at + segment.length;
            if start < end && start < segment_end && at <= start {
                let within = start - at;
                let take = (segment_end - start).min(end - start);
                pieces.items[pieces.count] = Segment {
                    address: segment.address + u64::from(within),
                    length: take,
                };
                pieces.count += 1;
                start += take;
            }
            at = segment_end;
        }
        pieces
    }
}

/// Guest-physical pieces of a part's data.
pub struct Pieces {
    items: [Segment; crate::virtio_blk::MAX_SEGMENTS],
    count: usize,
}

impl Pieces {
    pub fn as_slice(&self) -> &[Segment] {
        &self.items[..self.count]
    }
}

/// An answer's id: the request's sequence number, its slot, the part.
fn split_id(id: u64) -> (u32, usize, u16) {
    if id >> 48 != 0 {
        // Never sent: a forged id must not alias a real one.
        return (0, usize::MAX, 0);
    }
    (
        (id >> 16) as u32,
        usize::from(id as u16 >> 8),
        u16::from(id as u8),
    )
}

fn is_done(entry: &Entry, part: u16) -> bool {
    entry.done[usize::from(part / 64)] & (1 << (part % 64)) != 0
}

fn part_of(entry: &Entry, slot: usize, index: u16) -> Part {
    let request = &entry.request;
    let id = u64::from(entry.sequence) << 16 | (slot as u64) << 8 | u64::from(index);
    let offset = u32::from(index) * PART_BYTES;
    let (kind, sectors) = match request.kind {
        Kind::Read | Kind::GetId => (
            PartKind::Read,
            (request.bytes - offset).min(PART_BYTES) / SECTOR as u32,
        ),
        Kind::Write => (
            PartKind::Write,
            (request.bytes - offset).min(PART_BYTES) / SECTOR as u32,
        ),
        Kind::Flush => (PartKind::Flush, 0),
        Kind::Zero => (PartKind::Zero, request.bytes / SECTOR as u32),
    };
    Part {
        id,
        kind,
        sector: request.sector + u64::from(offset) / SECTOR,
        sectors,
        offset,
        slot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(head: u16, kind: Kind, sector: u64, lengths: &[u32]) -> GuestRequest {
        let mut segments = [Segment::default(); crate::virtio_blk::MAX_SEGMENTS];
        let mut address = 0x10_0000;
        for (segment, &length) in segments.iter_mut().zip(lengths) {
            *segment = Segment { address, length };
            address += 0x10_0000;
        }
        GuestRequest {
            head,
            kind,
            sector,
            segments,
            count: lengths.len(),
            bytes: lengths.iter().sum(),
            status: 0x9000 + u64::from(head),
        }
    }

    #[test]
    fn a_zero_request_is_one_part_of_all_its_sectors() {
        let mut table = Requests::<4>::new();
        let mut zero = request(5, Kind::Zero, 64, &[]);
        zero.bytes = 2048 * 512;
        assert!(table.admit(zero));
        let part = table.next_part().unwrap();
        table.sent(&part);
        assert_eq!(
            (part.kind, part.sector, part.sectors, part.offset),
            (PartKind::Zero, 64, 2048, 0)
        );
        assert!(table.next_part().is_none(), "one part");
        let finished = table.answered(part.id, true).unwrap();
        assert_eq!(
            (finished.head, finished.status, finished.written),
            (5, STATUS_OK, 1)
        );
    }

    #[test]
    fn a_large_write_goes_out_in_parts_and_finishes_once() {
        let mut table = Requests::<4>::new();
        assert!(table.admit(request(7, Kind::Write, 100, &[512, 8192, 1536])));
        let mut parts = Vec::new();
        while let Some(part) = table.next_part() {
            table.sent(&part);
            parts.push(part);
        }
        let spans: Vec<_> = parts
            .iter()
            .map(|p| (p.sector, p.sectors, p.offset))
            .collect();
        assert_eq!(spans, [(100, 8, 0), (108, 8, 4096), (116, 4, 8192)]);
        assert!(parts.iter().all(|p| p.kind == PartKind::Write));
        // The first part's data: 512 bytes of segment 0, 3584 of segment 1.
        let pieces = table.pieces(parts[0].slot, 0, 4096);
        assert_eq!(
            pieces.as_slice(),
            [
                Segment {
                    address: 0x10_0000,
                    length: 512
                },
                Segment {
                    address: 0x20_0000,
                    length: 3584
                }
            ]
        );
        let pieces = table.pieces(parts[2].slot, 8192, 2048);
        assert_eq!(
            pieces.as_slice(),
            [
                Segment {
                    address: 0x20_0000 + 7680,
                    length: 512
                },
                Segment {
                    address: 0x30_0000,
                    length: 1536
                }
            ]
        );
        assert_eq!(table.part(parts[2].id), Some(parts[2]));
        assert_eq!(table.answered(parts[2].id, true), None);
        assert_eq!(table.part(parts[2].id), None, "answered");
        assert_eq!(table.answered(parts[2].id, true), None, "a repeat");
        assert_eq!(table.answered(parts[0].id, true), None);
        let finished = table.answered(parts[1].id, true).unwrap();
        assert_eq!(finished.head, 7);
        assert_eq!(finished.status, STATUS_OK);
        assert_eq!(finished.written, 1);
        assert!(table.is_empty());
        assert_eq!(table.answered(parts[1].id, true), None, "after the end");
    }

    #[test]
    fn a_read_reports_its_bytes_and_a_failed_part_fails_the_request() {
        let mut table = Requests::<4>::new();
        assert!(table.admit(request(1, Kind::Read, 0, &[4096])));
        assert!(table.admit(request(2, Kind::Read, 8, &[8192])));
        assert!(table.admit(request(3, Kind::Flush, 0, &[])));
        assert!(!table.admit(request(4, Kind::GetId, 0, &[20])));
        let parts: Vec<_> = core::iter::from_fn(|| {
            let part = table.next_part()?;
            table.sent(&part);
            Some(part)
        })
        .collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[3].kind, PartKind::Flush);
        assert_eq!(table.answered(parts[0].id, true).unwrap().written, 4097);
        assert_eq!(table.answered(parts[1].id, false), None);
        let failed = table.answered(parts[2].id, true).unwrap();
        assert_eq!(
            (failed.head, failed.status, failed.written),
            (2, STATUS_IOERR, 1)
        );
        assert_eq!(table.answered(parts[3].id, true).unwrap().head, 3);
    }

    #[test]
    fn the_table_refuses_what_does_not_fit() {
        let mut table = Requests::<2>::new();
        assert!(table.admit(request(1, Kind::Read, 0, &[512])));
        assert!(table.admit(request(2, Kind::Read, 0, &[512])));
        assert!(!table.has_room());
        assert!(!table.admit(request(3, Kind::Read, 0, &[512])));
        assert!(!Requests::<2>::new().admit(request(3, Kind::Read, 0, &[])));
    }

    #[test]
    fn a_reset_forgets_and_old_answers_are_ignored() {
        let mut table = Requests::<2>::new();
        assert!(table.admit(request(1, Kind::Write, 0, &[512])));
        let old = table.next_part().unwrap();
        table.clear();
        assert!(table.admit(request(1, Kind::Write, 0, &[512])));
        let new = table.next_part().unwrap();
        assert_eq!(old.slot, new.slot);
        assert_ne!(old.id, new.id);
        assert_eq!(table.answered(old.id, true), None);
        assert!(table.answered(new.id, true).is_some());
    }

    proptest! {
        /// Any mix of requests, answers in any order, repeated answers,
        /// forged ids and store restarts: every request finishes exactly
        /// once, with every one of its parts answered, and parts of older
        /// requests go out first.
        #[test]
        fn every_request_finishes_once(
            sizes in proptest::collection::vec(1u32..=64, 1..20),
            choices in proptest::collection::vec(any::<u64>(), 1..400),
        ) {
            let mut table = Requests::<8>::new();
            let mut waiting: Vec<u16> = (0..sizes.len() as u16).collect();
            let mut outstanding: Vec<Part> = Vec::new();
            let mut finished: Vec<u16> = Vec::new();
            let mut step = 0;
            loop {
                while table.has_room() && !waiting.is_empty() {
                    let head = waiting.remove(0);
                    let bytes = sizes[usize::from(head)] * 512;
                    prop_assert!(table.admit(request(head, Kind::Write, 0, &[bytes])));
                }
                let choice = choices.get(step).copied().unwrap_or(4);
                step += 1;
                match choice % 5 {
                    0 | 1 => {
                        if let Some(part) = table.next_part() {
                            table.sent(&part);
                            outstanding.push(part);
                        }
                    }
                    2 if !outstanding.is_empty() => {
                        let part = outstanding.remove((choice >> 8) as usize % outstanding.len());
                        if let Some(done) = table.answered(part.id, true) {
                            prop_assert!(!finished.contains(&done.head));
                            finished.push(done.head);
                        }
                    }
                    3 => {
                        // A forged or repeated id changes nothing.
                        prop_assert_eq!(table.answered(choice | 1 << 63, true), None);
                    }
                    4 if choice & 0x100 != 0 => {
                        // The store restarted: answers in flight are lost.
                        outstanding.clear();
                        table.resend_all();
                    }
                    _ => {
                        // Drain: send everything, answer everything.
                        while let Some(part) = table.next_part() {
                            table.sent(&part);
                            outstanding.push(part);
                        }
                        for part in outstanding.drain(..) {
                            if let Some(done) = table.answered(part.id, true) {
                                prop_assert!(!finished.contains(&done.head));
                                finished.push(done.head);
                            }
                        }
                    }
                }
                if step > choices.len() && table.is_empty() && waiting.is_empty() {
                    break;
                }
                prop_assert!(step < choices.len() + 10_000, "no progress");
            }
            finished.sort_unstable();
            prop_assert_eq!(finished, (0..sizes.len() as u16).collect::<Vec<_>>());
        }
    }
}
