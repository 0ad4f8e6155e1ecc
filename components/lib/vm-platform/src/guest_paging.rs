//! The guest's own address translation: from a segment and offset to a
//! guest-virtual (linear) address, and from there to a guest-physical
//! address by walking the page tables the guest keeps in its memory.
//!
//! The world switcher needs this where the CPU gives it no help: to fetch
//! the instruction at CS:RIP after a nested page fault, and to reach the
//! guest-RAM side of a `movs` whose other side is a device. Every mode the
//! CPU has is covered: paging off (linear is physical), 32-bit paging with
//! 4 MiB pages (PSE, PSE-36), PAE, 4-level and 5-level (CR4.LA57) long
//! mode with 2 MiB and 1 GiB pages. The walk checks present, write and user
//! rights the way the CPU does (CR0.WP, EFER.NXE, CR4.SMEP and CR4.SMAP
//! with RFLAGS.AC) and a few reserved bits, and reports a denial as a typed
//! [`PageFault`] with the error code the CPU would push, so the caller can
//! inject `#PF` as the guest expects.
//!
//! [`Paging::translate_noting`] also returns the [`Trail`] of entries a
//! walk read, so a caller can keep a translation and re-check it with one
//! read per level (the MMIO decoder does, `crate::mmio::AccessDecoder`).
//!
//! Everything the guest wrote is untrusted: a table outside guest memory,
//! a non-canonical address, a walk of any shape ends in a typed error,
//! never a panic. What is not modelled: accessed and dirty bits are not
//! set (the walk only reads), segment limits and protection keys are not
//! checked, reserved physical-address bits above MAXPHYADDR are not
//! checked, and PAE's PDPTEs are read from memory at each walk where the
//! CPU caches them at the last CR3 load.

use microvisor_abi::vcpu::{Segment, VcpuState};

use crate::GuestRead;
use crate::setup::{CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA};

/// A guest-virtual address: in x86 terms the linear address, a segment's
/// base plus an offset, before paging. The guest chose it; it means nothing
/// until [`Paging::translate`] has turned it into a [`GuestPhysical`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestVirtual(pub u64);

/// A guest-physical address: what the guest's page tables map to, which
/// the nested page tables map again to host memory. Whether guest RAM lies
/// there is for [`GuestRead`] to say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysical(pub u64);

/// Bytes in the smallest page.
pub const PAGE_SIZE: u64 = 4096;

/// The longest instruction the CPU accepts; a longer one raises `#GP`.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// Control and flag bits beyond those [`crate::setup`] names.
const CR4_PSE: u64 = 1 << 4;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_AC: u64 = 1 << 18;
const RFLAGS_VM: u64 = 1 << 17;

/// Segment attribute bits in [`Segment::attributes`].
const SEGMENT_DPL_SHIFT: u16 = 5;
const SEGMENT_LONG: u16 = 1 << 9;
const SEGMENT_DEFAULT_BIG: u16 = 1 << 10;

/// Page-table entry bits.
const ENTRY_PRESENT: u64 = 1 << 0;
const ENTRY_WRITABLE: u64 = 1 << 1;
const ENTRY_USER: u64 = 1 << 2;
const ENTRY_LARGE: u64 = 1 << 7;
const ENTRY_NO_EXECUTE: u64 = 1 << 63;
/// Bits 51..12: the next table or the page, in 64-bit entries.
const ENTRY_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// PAE PDPTE bits that must be zero: 1, 2, 5..=8 and the no-execute bit.
const PDPTE_RESERVED: u64 = 0x1e6 | ENTRY_NO_EXECUTE;

/// The width of addresses and default operands the CPU runs code with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Real mode, virtual-8086 mode, or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment in protected or compatibility mode.
    Bits32,
    /// 64-bit mode: long mode with a 64-bit (L) code segment.
    Bits64,
}

impl ExecutionMode {
    /// The mode of the guest's current code: 64-bit when EFER.LMA and
    /// CS.L are set; 16-bit in real mode (CR0.PE clear) and virtual-8086
    /// mode; else CS.D chooses 32 or 16.
    pub fn of(state: &VcpuState) -> Self {
        let attributes = state.cs.attributes;
        if state.efer & EFER_LMA != 0 && attributes & SEGMENT_LONG != 0 {
            Self::Bits64
        } else if state.cr0 & CR0_PE == 0 || state.rflags & RFLAGS_VM != 0 {
            Self::Bits16
        } else if attributes & SEGMENT_DEFAULT_BIG != 0 {
            Self::Bits32
        } else {
            Self::Bits16
        }
    }
}

/// The guest's current privilege level: 0 in real mode, 3 in
/// virtual-8086 mode, else SS.DPL (which the CPU keeps equal to the CPL).
pub fn privilege_level(state: &VcpuState) -> u8 {
    if state.cr0 & CR0_PE == 0 {
        0
    } else if state.rflags & RFLAGS_VM != 0 {
        3
    } else {
        ((state.ss.attributes >> SEGMENT_DPL_SHIFT) & 3) as u8
    }
}

/// The guest-virtual address of `offset` in `segment`. In 64-bit mode only
/// FS and GS have a base (the caller says which segment it is through
/// `has_base_in_64bit`); outside it the address wraps at 4 GiB. Segment
/// limits are not checked.
pub fn linear_address(
    mode: ExecutionMode,
    segment: &Segment,
    has_base_in_64bit: bool,
    offset: u64,
) -> GuestVirtual {
    match mode {
        ExecutionMode::Bits64 if has_base_in_64bit => {
            GuestVirtual(segment.base.wrapping_add(offset))
        }
        ExecutionMode::Bits64 => GuestVirtual(offset),
        ExecutionMode::Bits16 | ExecutionMode::Bits32 => {
            GuestVirtual(segment.base.wrapping_add(offset) & 0xffff_ffff)
        }
    }
}

/// What an access does with the memory it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessType {
    Read,
    Write,
    /// An instruction fetch.
    Fetch,
}

/// The paging structure the guest has enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: guest-virtual is guest-physical (below 4 GiB).
    Off,
    /// 32-bit paging, two levels of 4-byte entries; `large_pages` is
    /// CR4.PSE (4 MiB pages in the directory).
    Bits32 { large_pages: bool },
    /// PAE: a 4-entry PDPT and two levels of 8-byte entries.
    Pae,
    /// 4-level long-mode paging.
    Level4,
    /// 5-level long-mode paging (CR4.LA57).
    Level5,
}

/// Why a translation failed on the guest's own tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReason {
    /// An entry on the way has its present bit clear.
    NotPresent,
    /// The entries deny this access (write, user, execute, SMEP, SMAP).
    Protection,
    /// An entry has a reserved bit set.
    Reserved,
}

/// A page fault the guest's tables raise: inject `#PF` with
/// [`PageFault::error_code`] and CR2 = `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    pub address: GuestVirtual,
    /// The level of the deciding entry: 1 is the page table (4 KiB pages),
    /// 2 the directory, 3 the PDPT, 4 the PML4, 5 the PML5. For a
    /// protection fault it is the level that mapped the page, the rights
    /// of all levels above it being combined.
    pub level: u8,
    pub reason: FaultReason,
    /// The error code the CPU pushes for this fault.
    pub error_code: u32,
}

/// Why a guest-virtual address has no guest-physical one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TranslationError {
    /// The guest's tables deny the access: the guest's own `#PF`.
    PageFault(PageFault),
    /// The address is not canonical in long mode: the CPU raises `#GP`
    /// (`#SS` for stack accesses).
    NonCanonical(GuestVirtual),
    /// A table entry at `address`, on `level`, lies outside guest memory:
    /// the guest pointed its tables at nothing it owns.
    TableOutsideMemory { level: u8, address: GuestPhysical },
}

impl core::fmt::Display for TranslationError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PageFault(fault) => write!(
                f,
                "page fault at {:#x} ({:?} at level {}, error code {:#x})",
                fault.address.0, fault.reason, fault.level, fault.error_code
            ),
            Self::NonCanonical(address) => {
                write!(f, "non-canonical address {:#x}", address.0)
            }
            Self::TableOutsideMemory { level, address } => write!(
                f,
                "level-{level} page-table entry at guest-physical {:#x} is outside guest memory",
                address.0
            ),
        }
    }
}

/// Why bytes at a guest-virtual address could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    Translation(TranslationError),
    /// The address translates to guest-physical `.0`, where there is no
    /// guest RAM (a device page or nothing).
    OutsideMemory(GuestPhysical),
}

impl From<TranslationError> for ReadError {
    fn from(error: TranslationError) -> Self {
        Self::Translation(error)
    }
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Translation(error) => error.fmt(f),
            Self::OutsideMemory(address) => {
                write!(f, "guest-physical {:#x} is not guest RAM", address.0)
            }
        }
    }
}

/// Everything a translation depends on, taken from the vCPU state by
/// [`Paging::of`] (or built by hand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub mode: PagingMode,
    /// CR3: the root table's address (and, ignored here, cache bits).
    pub root: u64,
    /// CR0.WP: supervisor writes obey read-only pages.
    pub write_protect: bool,
    /// EFER.NXE: bit 63 forbids fetches (and is reserved when clear).
    pub no_execute: bool,
    /// CR4.SMEP: supervisor fetches from user pages fault.
    pub smep: bool,
    /// CR4.SMAP with RFLAGS.AC clear: supervisor data accesses to user
    /// pages fault.
    pub smap: bool,
    /// The access is made at CPL 3.
    pub user: bool,
}

impl Paging {
    /// The guest's current translation, for accesses at its current
    /// privilege level.
    pub fn of(state: &VcpuState) -> Self {
        let mode = if state.cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if state.cr4 & CR4_PAE == 0 {
            PagingMode::Bits32 {
                large_pages: state.cr4 & CR4_PSE != 0,
            }
        } else if state.efer & EFER_LMA == 0 {
            PagingMode::Pae
        } else if state.cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        };
        Self {
            mode,
            root: state.cr3,
            write_protect: state.cr0 & CR0_WP != 0,
            no_execute: state.efer & EFER_NXE != 0,
            smep: state.cr4 & CR4_SMEP != 0,
            smap: state.cr4 & CR4_SMAP != 0 && state.rflags & RFLAGS_AC == 0,
            user: privilege_level(state) == 3,
        }
    }

    /// Translates `address` for `access`, walking the guest's tables in
    /// `memory`.
    pub fn translate(
        &self,
        memory: &impl GuestRead,
        address: GuestVirtual,
        access: AccessType,
    ) -> Result<GuestPhysical, TranslationError> {
        self.walk(memory, address, access, &mut Trail::default())
    }

    /// [`Paging::translate`], also returning the entries the walk read.
    pub fn translate_noting(
        &self,
        memory: &impl GuestRead,
        address: GuestVirtual,
        access: AccessType,
    ) -> Result<(GuestPhysical, Trail), TranslationError> {
        let mut trail = Trail::default();
        let physical = self.walk(memory, address, access, &mut trail)?;
        Ok((physical, trail))
    }

    /// [`Paging::translate`], noting in `trail` every entry it read.
    fn walk(
        &self,
        memory: &impl GuestRead,
        address: GuestVirtual,
        access: AccessType,
        trail: &mut Trail,
    ) -> Result<GuestPhysical, TranslationError> {
        let linear = address.0;
        // Levels walked, the first level's table, the entry size and the
        // index bits of the top level.
        let (top, entry_bytes, top_bits) = match self.mode {
            PagingMode::Off => return Ok(GuestPhysical(linear & 0xffff_ffff)),
            PagingMode::Bits32 { .. } => (2u8, 4u64, 10u32),
            PagingMode::Pae => (3, 8, 2),
            PagingMode::Level4 => (4, 8, 9),
            PagingMode::Level5 => (5, 8, 9),
        };
        let linear = match self.mode {
            PagingMode::Level4 | PagingMode::Level5 => {
                let bits = if top == 5 { 57 } else { 48 };
                let shift = 64 - bits;
                if ((linear << shift) as i64 >> shift) as u64 != linear {
                    return Err(TranslationError::NonCanonical(address));
                }
                linear
            }
            _ => linear & 0xffff_ffff,
        };
        let fault = |level: u8, reason: FaultReason| {
            TranslationError::PageFault(PageFault {
                address,
                level,
                reason,
                error_code: self.error_code(access, reason),
            })
        };
        let mut table = match self.mode {
            PagingMode::Bits32 { .. } => self.root & 0xffff_f000,
            PagingMode::Pae => self.root & 0xffff_ffe0,
            _ => self.root & ENTRY_ADDRESS,
        };
        let (mut writable, mut user, mut executable) = (true, true, true);
        let mut level = top;
        loop {
            // The index's lowest bit: 12 for level 1, then 10 (32-bit) or
            // 9 bits per level.
            let per_level = if entry_bytes == 4 { 10 } else { 9 };
            let shift = 12 + per_level * u32::from(level - 1);
            let bits = if level == top { top_bits } else { per_level };
            let index = (linear >> shift) & ((1 << bits) - 1);
            let at = GuestPhysical(table + index * entry_bytes);
            let entry = read_entry(memory, at, entry_bytes)
                .ok_or(TranslationError::TableOutsideMemory { level, address: at })?;
            trail.note(at, entry, entry_bytes);
            if entry & ENTRY_PRESENT == 0 {
                return Err(fault(level, FaultReason::NotPresent));
            }
            if self.reserved(entry, level) {
                return Err(fault(level, FaultReason::Reserved));
            }
            // PAE's PDPTEs carry no rights.
            if !(self.mode == PagingMode::Pae && level == 3) {
                writable &= entry & ENTRY_WRITABLE != 0;
                user &= entry & ENTRY_USER != 0;
                executable &= !(self.no_execute && entry & ENTRY_NO_EXECUTE != 0);
            }
            let page = self.page(entry, level);
            if let Some((frame, size)) = page {
                let allowed = self.allows(access, writable, user, executable);
                if !allowed {
                    return Err(fault(level, FaultReason::Protection));
                }
                return Ok(GuestPhysical(frame + (linear & (size - 1))));
            }
            table = if entry_bytes == 4 {
                entry & 0xffff_f000
            } else {
                entry & ENTRY_ADDRESS
            };
            level -= 1;
        }
    }

    /// Reads `into.len()` bytes at `address` for `access`, translating
    /// each page on the way.
    pub fn read(
        &self,
        memory: &impl GuestRead,
        address: GuestVirtual,
        access: AccessType,
        into: &mut [u8],
    ) -> Result<(), ReadError> {
        let mut done = 0;
        while done < into.len() {
            let at = GuestVirtual(address.0.wrapping_add(done as u64));
            let in_page = (PAGE_SIZE - at.0 % PAGE_SIZE) as usize;
            let chunk = in_page.min(into.len() - done);
            let physical = self.translate(memory, at, access)?;
            if !memory.read(physical, &mut into[done..done + chunk]) {
                return Err(ReadError::OutsideMemory(physical));
            }
            done += chunk;
        }
        Ok(())
    }

    /// The frame and size of the page `entry` maps at `level`, or `None`
    /// when it points to another table.
    fn page(&self, entry: u64, level: u8) -> Option<(u64, u64)> {
        const KIB_4: u64 = 1 << 12;
        const MIB_2: u64 = 1 << 21;
        const MIB_4: u64 = 1 << 22;
        const GIB_1: u64 = 1 << 30;
        let large = entry & ENTRY_LARGE != 0;
        match (self.mode, level) {
            (PagingMode::Bits32 { .. }, 1) => Some((entry & 0xffff_f000, KIB_4)),
            (PagingMode::Bits32 { large_pages: true }, 2) if large => {
                // PSE-36: bits 13..=20 are physical bits 32..=39.
                let high = (entry >> 13) & 0xff;
                Some(((entry & 0xffc0_0000) | high << 32, MIB_4))
            }
            (_, 1) => Some((entry & ENTRY_ADDRESS, KIB_4)),
            (PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5, 2) if large => {
                Some((entry & ENTRY_ADDRESS & !(MIB_2 - 1), MIB_2))
            }
            (PagingMode::Level4 | PagingMode::Level5, 3) if large => {
                Some((entry & ENTRY_ADDRESS & !(GIB_1 - 1), GIB_1))
            }
            _ => None,
        }
    }

    /// Whether `entry` on `level` has a reserved bit set that this walk
    /// checks.
    fn reserved(&self, entry: u64, level: u8) -> bool {
        let large = entry & ENTRY_LARGE != 0;
        match self.mode {
            PagingMode::Off => false,
            // PSE-40 reserves bit 21 of a 4 MiB entry.
            PagingMode::Bits32 { large_pages } => {
                large_pages && level == 2 && large && entry & 1 << 21 != 0
            }
            PagingMode::Pae if level == 3 => entry & PDPTE_RESERVED != 0,
            PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5 => {
                let no_execute = !self.no_execute && entry & ENTRY_NO_EXECUTE != 0;
                // A large page's frame must be aligned: bits 13 up to the
                // page size are reserved (bit 12 is PAT).
                let misaligned = match level {
                    2 if large => entry & 0x001f_e000 != 0,
                    3 if large => entry & 0x3fff_e000 != 0,
                    _ => false,
                };
                // No large pages above the PDPT.
                let large_too_high = level >= 4 && large;
                no_execute || misaligned || large_too_high
            }
        }
    }

    /// Whether the combined rights allow `access`.
    fn allows(&self, access: AccessType, writable: bool, user: bool, executable: bool) -> bool {
        if self.user {
            return user
                && match access {
                    AccessType::Read => true,
                    AccessType::Write => writable,
                    AccessType::Fetch => executable,
                };
        }
        match access {
            AccessType::Read => !(user && self.smap),
            AccessType::Write => !(user && self.smap) && (writable || !self.write_protect),
            AccessType::Fetch => executable && !(user && self.smep),
        }
    }

    /// The `#PF` error code: P, W/R, U/S, RSVD and I/D (the last only when
    /// no-execute or SMEP is on, as the CPU reports it).
    fn error_code(&self, access: AccessType, reason: FaultReason) -> u32 {
        let mut code = 0;
        if reason != FaultReason::NotPresent {
            code |= 1;
        }
        if access == AccessType::Write {
            code |= 1 << 1;
        }
        if self.user {
            code |= 1 << 2;
        }
        if reason == FaultReason::Reserved {
            code |= 1 << 3;
        }
        let paging_has_no_execute =
            !matches!(self.mode, PagingMode::Bits32 { .. }) && self.no_execute;
        if access == AccessType::Fetch && (paging_has_no_execute || self.smep) {
            code |= 1 << 4;
        }
        code
    }
}

/// The page-table entries one walk read (at most one per level, five
/// levels), from [`Paging::translate_noting`]. A walk depends on nothing
/// but the control state (its [`Paging`] and access type) and these
/// entries, so while [`Trail::still_holds`] the walk would give the same
/// answer: a caller may keep a translation and re-check it with one read
/// per level instead of walking again, and a guest that edits its tables
/// (without an exit) is never translated through a stale entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trail {
    /// Address, value and size of each entry, in the order read.
    entries: [(u64, u64, u64); 5],
    count: usize,
}

impl Trail {
    fn note(&mut self, at: GuestPhysical, entry: u64, bytes: u64) {
        if let Some(slot) = self.entries.get_mut(self.count) {
            *slot = (at.0, entry, bytes);
            self.count += 1;
        }
    }

    /// Whether every entry still holds what the walk read.
    pub fn still_holds(&self, memory: &impl GuestRead) -> bool {
        self.entries[..self.count]
            .iter()
            .all(|&(at, entry, bytes)| read_entry(memory, GuestPhysical(at), bytes) == Some(entry))
    }
}

fn read_entry(memory: &impl GuestRead, at: GuestPhysical, bytes: u64) -> Option<u64> {
    if bytes == 4 {
        memory.read_u32(at).map(u64::from)
    } else {
        memory.read_u64(at)
    }
}

/// Up to [`MAX_INSTRUCTION_LENGTH`] bytes fetched at CS:RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructionBytes {
    bytes: [u8; MAX_INSTRUCTION_LENGTH],
    available: u8,
    /// Why fewer than the maximum were fetched, if so.
    stop: Option<ReadError>,
}

impl InstructionBytes {
    /// Bytes from a buffer (a test, or a caller that fetched them itself);
    /// more than [`MAX_INSTRUCTION_LENGTH`] are cut, and fewer say that
    /// the rest is missing with `stop`.
    pub fn new(bytes: &[u8], stop: Option<ReadError>) -> Self {
        let available = bytes.len().min(MAX_INSTRUCTION_LENGTH);
        let mut buffer = [0; MAX_INSTRUCTION_LENGTH];
        buffer[..available].copy_from_slice(&bytes[..available]);
        Self {
            bytes: buffer,
            available: available as u8,
            stop: if available == MAX_INSTRUCTION_LENGTH {
                None
            } else {
                stop
            },
        }
    }

    /// The bytes fetched.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.available)]
    }

    /// All fifteen bytes, when all were fetched.
    pub fn all(&self) -> Option<[u8; MAX_INSTRUCTION_LENGTH]> {
        (usize::from(self.available) == MAX_INSTRUCTION_LENGTH).then_some(self.bytes)
    }

    /// Why no more bytes could be fetched (`None` when all fifteen were,
    /// or when the caller gave fewer without a reason).
    pub fn stop(&self) -> Option<ReadError> {
        self.stop
    }
}

/// The mode the guest runs in and the linear address of CS:RIP (RIP cut
/// to 32 bits outside 64-bit mode).
pub fn instruction_start(state: &VcpuState) -> (ExecutionMode, GuestVirtual) {
    let mode = ExecutionMode::of(state);
    let rip = match mode {
        ExecutionMode::Bits64 => state.rip,
        ExecutionMode::Bits16 | ExecutionMode::Bits32 => state.rip & 0xffff_ffff,
    };
    (mode, linear_address(mode, &state.cs, false, rip))
}

/// Fetches the instruction at CS:RIP: fifteen bytes, or as many as lie
/// before the first page that cannot be fetched (not present, not
/// executable, or not guest RAM), with the reason. An instruction that
/// ends before that page needs none of its bytes; one that does not fails
/// to decode with this reason (the guest's own `#PF`, say). An error is
/// returned only when not even the first byte can be fetched.
pub fn fetch_instruction(
    memory: &impl GuestRead,
    state: &VcpuState,
) -> Result<InstructionBytes, ReadError> {
    let (mode, start) = instruction_start(state);
    let paging = Paging::of(state);
    let mut bytes = [0u8; MAX_INSTRUCTION_LENGTH];
    let first = (PAGE_SIZE - start.0 % PAGE_SIZE).min(MAX_INSTRUCTION_LENGTH as u64) as usize;
    paging.read(memory, start, AccessType::Fetch, &mut bytes[..first])?;
    let second = GuestVirtual(start.0.wrapping_add(first as u64));
    let second = match mode {
        ExecutionMode::Bits64 => second,
        ExecutionMode::Bits16 | ExecutionMode::Bits32 => GuestVirtual(second.0 & 0xffff_ffff),
    };
    let stop = paging
        .read(memory, second, AccessType::Fetch, &mut bytes[first..])
        .err();
    let available = if stop.is_some() {
        first
    } else {
        MAX_INSTRUCTION_LENGTH
    };
    Ok(InstructionBytes::new(&bytes[..available], stop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::VecMemory;
    use zerocopy::FromZeros;

    const P: u64 = ENTRY_PRESENT;
    const RW: u64 = ENTRY_WRITABLE;
    const US: u64 = ENTRY_USER;
    const PS: u64 = ENTRY_LARGE;
    const NX: u64 = ENTRY_NO_EXECUTE;
    const MIB: u64 = 1 << 20;

    /// Guest memory with page tables allocated from 1 MiB up.
    struct Tables {
        memory: VecMemory,
        next: u64,
    }

    impl Tables {
        fn new() -> Self {
            Self {
                memory: VecMemory(vec![0; 16 * MIB as usize]),
                next: MIB,
            }
        }

        fn table(&mut self) -> u64 {
            self.next += PAGE_SIZE;
            self.next - PAGE_SIZE
        }

        fn set(&mut self, table: u64, index: u64, entry: u64, bytes: u64) {
            let at = (table + index * bytes) as usize;
            self.memory.0[at..at + bytes as usize]
                .copy_from_slice(&entry.to_le_bytes()[..bytes as usize]);
        }

        fn get(&self, table: u64, index: u64) -> u64 {
            let at = (table + index * 8) as usize;
            u64::from_le_bytes(self.memory.0[at..at + 8].try_into().unwrap())
        }

        /// Maps `linear` in long-mode tables under `root` with `levels`
        /// levels, ending at `leaf_level` with `leaf` (frame and flags);
        /// the tables above get `upper` flags. Returns the tables walked,
        /// top first.
        fn map(
            &mut self,
            root: u64,
            levels: u8,
            linear: u64,
            leaf_level: u8,
            leaf: u64,
            upper: u64,
        ) -> Vec<u64> {
            let mut table = root;
            let mut walked = vec![root];
            for level in (leaf_level..=levels).rev() {
                let index = (linear >> (12 + 9 * u32::from(level - 1))) & 0x1ff;
                if level == leaf_level {
                    self.set(table, index, leaf, 8);
                    break;
                }
                let existing = self.get(table, index);
                let next = if existing & P != 0 {
                    existing & ENTRY_ADDRESS
                } else {
                    let next = self.table();
                    self.set(table, index, next | upper, 8);
                    next
                };
                walked.push(next);
                table = next;
            }
            walked
        }
    }

    fn paging(mode: PagingMode, root: u64) -> Paging {
        Paging {
            mode,
            root,
            write_protect: true,
            no_execute: true,
            smep: false,
            smap: false,
            user: false,
        }
    }

    fn fault_of(result: Result<GuestPhysical, TranslationError>) -> PageFault {
        match result {
            Err(TranslationError::PageFault(fault)) => fault,
            other => panic!("expected a page fault, got {other:?}"),
        }
    }

    #[test]
    fn paging_off_is_identity_below_4_gib() {
        let memory = VecMemory(vec![]);
        let off = paging(PagingMode::Off, 0);
        for address in [0, 0x1234, 0xffff_ffff] {
            assert_eq!(
                off.translate(&memory, GuestVirtual(address), AccessType::Write),
                Ok(GuestPhysical(address))
            );
        }
        assert_eq!(
            off.translate(&memory, GuestVirtual(0x1_0000_0010), AccessType::Read),
            Ok(GuestPhysical(0x10)),
            "linear addresses outside long mode wrap at 4 GiB"
        );
    }

    #[test]
    fn bits32_small_and_large_pages() {
        let mut tables = Tables::new();
        let directory = tables.table();
        let page_table = tables.table();
        tables.set(directory, 1, page_table | P | RW | US, 4);
        tables.set(page_table, 1, 0x20_3000 | P | RW | US, 4);
        // A 4 MiB page for 8..12 MiB, and one with PSE-36 high bits.
        tables.set(directory, 2, 0x0080_0000 | P | RW | PS, 4);
        tables.set(directory, 3, 0x00c0_0000 | 0x3 << 13 | P | PS, 4);
        let pse = paging(PagingMode::Bits32 { large_pages: true }, directory | 0x18);
        let read = |p: &Paging, address: u64| {
            p.translate(&tables.memory, GuestVirtual(address), AccessType::Read)
        };
        assert_eq!(read(&pse, 0x0040_1234), Ok(GuestPhysical(0x20_3234)));
        assert_eq!(read(&pse, 0x0085_6789), Ok(GuestPhysical(0x0085_6789)));
        assert_eq!(read(&pse, 0x00c0_0042), Ok(GuestPhysical(0x3_00c0_0042)));
        // The upper 32 bits of the address are not looked at.
        assert_eq!(
            read(&pse, 0xffff_0000_0040_1234),
            Ok(GuestPhysical(0x20_3234))
        );
        // Without CR4.PSE the large entry points to a table of zeros.
        let no_pse = paging(PagingMode::Bits32 { large_pages: false }, directory);
        let fault = fault_of(read(&no_pse, 0x0085_6789));
        assert_eq!(
            (fault.level, fault.reason, fault.error_code),
            (1, FaultReason::NotPresent, 0)
        );
        // Not present in the directory.
        let fault = fault_of(read(&pse, 0x0100_0000));
        assert_eq!((fault.level, fault.reason), (2, FaultReason::NotPresent));
        assert_eq!(fault.address, GuestVirtual(0x0100_0000));
    }

    #[test]
    fn bits32_reserved_bit_of_a_large_page() {
        let mut tables = Tables::new();
        let directory = tables.table();
        tables.set(directory, 0, 1 << 21 | P | PS, 4);
        let pse = paging(PagingMode::Bits32 { large_pages: true }, directory);
        let fault =
            fault_of(pse.translate(&tables.memory, GuestVirtual(0x1000), AccessType::Write));
        assert_eq!((fault.level, fault.reason), (2, FaultReason::Reserved));
        assert_eq!(fault.error_code, 0b1011, "P, W and RSVD");
    }

    #[test]
    fn pae_small_and_large_pages() {
        let mut tables = Tables::new();
        let block = tables.table();
        // The PDPT is 32-byte aligned, anywhere in its page.
        let pdpt = block + 0x40;
        let directory = tables.table();
        let page_table = tables.table();
        tables.set(pdpt, 3, directory | P, 8);
        tables.set(directory, 0, page_table | P | RW, 8);
        tables.set(page_table, 5, 0x1_2345_6000 | P | RW, 8);
        tables.set(directory, 1, 0x0020_0000 | P | PS, 8);
        let pae = paging(PagingMode::Pae, pdpt);
        let read =
            |address: u64| pae.translate(&tables.memory, GuestVirtual(address), AccessType::Read);
        assert_eq!(read(0xc000_5abc), Ok(GuestPhysical(0x1_2345_6abc)));
        assert_eq!(read(0xc02f_0001), Ok(GuestPhysical(0x002f_0001)));
        let fault = fault_of(read(0x8000_0000));
        assert_eq!((fault.level, fault.reason), (3, FaultReason::NotPresent));
        // PDPTEs have no rights and reserve bit 1 and the NX bit.
        tables.set(pdpt, 2, directory | P | RW, 8);
        let fault =
            fault_of(pae.translate(&tables.memory, GuestVirtual(0x8000_0000), AccessType::Read));
        assert_eq!((fault.level, fault.reason), (3, FaultReason::Reserved));
        tables.set(pdpt, 2, directory | P | NX, 8);
        let fault =
            fault_of(pae.translate(&tables.memory, GuestVirtual(0x8000_0000), AccessType::Read));
        assert_eq!((fault.level, fault.reason), (3, FaultReason::Reserved));
    }

    #[test]
    fn long_mode_pages_of_every_size() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        tables.map(root, 4, 0x7f12_3456_7000, 1, 0x0030_1000 | all, all);
        tables.map(
            root,
            4,
            0xffff_8000_0020_0000,
            2,
            0x0060_0000 | all | PS,
            all,
        );
        tables.map(
            root,
            4,
            0x0000_0040_0000_0000,
            3,
            0x8000_0000 | all | PS,
            all,
        );
        let four = paging(PagingMode::Level4, root);
        let read =
            |address: u64| four.translate(&tables.memory, GuestVirtual(address), AccessType::Read);
        assert_eq!(read(0x7f12_3456_7abc), Ok(GuestPhysical(0x0030_1abc)));
        assert_eq!(read(0xffff_8000_002f_fff8), Ok(GuestPhysical(0x006f_fff8)));
        assert_eq!(read(0x0000_0040_3fff_0001), Ok(GuestPhysical(0xbfff_0001)));
        assert_eq!(
            read(0x0000_8000_0000_0000),
            Err(TranslationError::NonCanonical(GuestVirtual(
                0x0000_8000_0000_0000
            )))
        );
    }

    #[test]
    fn five_levels_reach_above_the_48_bit_half() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        let high = 0x0001_0000_0000_1000; // bit 48 set
        tables.map(root, 5, high, 1, 0x0031_0000 | all, all);
        let five = paging(PagingMode::Level5, root);
        let four = paging(PagingMode::Level4, root);
        assert_eq!(
            four.translate(&tables.memory, GuestVirtual(high), AccessType::Read),
            Err(TranslationError::NonCanonical(GuestVirtual(high))),
            "bit 48 set is non-canonical with four levels"
        );
        assert_eq!(
            five.translate(&tables.memory, GuestVirtual(high + 8), AccessType::Write),
            Ok(GuestPhysical(0x0031_0008))
        );
        assert_eq!(
            five.translate(
                &tables.memory,
                GuestVirtual(0x0100_0000_0000_0000),
                AccessType::Read
            ),
            Err(TranslationError::NonCanonical(GuestVirtual(
                0x0100_0000_0000_0000
            )))
        );
        let fault = fault_of(five.translate(
            &tables.memory,
            GuestVirtual(0x00ff_0000_0000_0000),
            AccessType::Read,
        ));
        assert_eq!((fault.level, fault.reason), (5, FaultReason::NotPresent));
    }

    #[test]
    fn not_present_names_the_level() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        let linear = 0x1234_5678_9000;
        let walked = tables.map(root, 4, linear, 1, 0x0040_0000 | all, all);
        let four = paging(PagingMode::Level4, root);
        assert!(
            four.translate(&tables.memory, GuestVirtual(linear), AccessType::Read)
                .is_ok()
        );
        // Clear the present bit from the leaf up.
        for level in 1..=4u8 {
            let table = walked[usize::from(4 - level)];
            let index = (linear >> (12 + 9 * u32::from(level - 1))) & 0x1ff;
            let entry = tables.get(table, index);
            tables.set(table, index, entry & !P, 8);
            let fault =
                fault_of(four.translate(&tables.memory, GuestVirtual(linear), AccessType::Read));
            assert_eq!(
                (fault.level, fault.reason, fault.error_code),
                (level, FaultReason::NotPresent, 0)
            );
            tables.set(table, index, entry, 8);
        }
    }

    #[test]
    fn a_trail_names_the_entries_a_walk_read() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        tables.map(root, 4, 0x40_0000, 1, 0x9000 | all, all);
        let four = paging(PagingMode::Level4, root);
        let (physical, trail) = four
            .translate_noting(&tables.memory, GuestVirtual(0x40_0123), AccessType::Read)
            .unwrap();
        assert_eq!(physical, GuestPhysical(0x9123));
        assert_eq!(trail.count, 4, "one entry per level");
        assert!(trail.still_holds(&tables.memory));
        // Any entry of the walk changed, even to an equivalent value, and
        // the trail no longer holds.
        let (at, entry, _) = trail.entries[2];
        assert!(crate::Memory::write(
            &mut tables.memory,
            at,
            &(entry | 1 << 9).to_le_bytes()
        ));
        assert!(!trail.still_holds(&tables.memory));
        assert_eq!(
            four.translate(&tables.memory, GuestVirtual(0x40_0123), AccessType::Read),
            Ok(physical)
        );
    }

    #[test]
    fn reserved_bits_in_long_mode() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        tables.map(root, 4, 0x20_0000, 2, 0x40_0000 | 1 << 13 | all | PS, all);
        tables.map(
            root,
            4,
            0x4000_0000,
            3,
            0x4000_0000 | 1 << 21 | all | PS,
            all,
        );
        tables.map(root, 4, 0x1000, 1, 0x5000 | all | NX, all);
        let mut four = paging(PagingMode::Level4, root);
        let read = |p: &Paging, address: u64| {
            p.translate(&tables.memory, GuestVirtual(address), AccessType::Read)
        };
        let fault = fault_of(read(&four, 0x20_0000));
        assert_eq!(
            (fault.level, fault.reason, fault.error_code),
            (2, FaultReason::Reserved, 0b1001)
        );
        let fault = fault_of(read(&four, 0x4000_0000));
        assert_eq!((fault.level, fault.reason), (3, FaultReason::Reserved));
        assert_eq!(read(&four, 0x1000), Ok(GuestPhysical(0x5000)));
        four.no_execute = false;
        let fault = fault_of(read(&four, 0x1000));
        assert_eq!(
            (fault.level, fault.reason),
            (1, FaultReason::Reserved),
            "NX without EFER.NXE"
        );
        // No large pages in the PML4.
        let mut tables = Tables::new();
        let root = tables.table();
        tables.set(root, 0, all | PS, 8);
        let four = paging(PagingMode::Level4, root);
        let fault =
            fault_of(four.translate(&tables.memory, GuestVirtual(0x1000), AccessType::Read));
        assert_eq!((fault.level, fault.reason), (4, FaultReason::Reserved));
    }

    /// Tables mapping 0x1000 with the leaf's `leaf` rights and `upper`
    /// rights above.
    fn rights(leaf: u64, upper: u64) -> (Tables, u64) {
        let mut tables = Tables::new();
        let root = tables.table();
        tables.map(root, 4, 0x1000, 1, 0x7000 | leaf, upper);
        (tables, root)
    }

    /// One access checked against tables of given rights.
    struct RightsCase {
        leaf: u64,
        upper: u64,
        user: bool,
        write_protect: bool,
        smep: bool,
        smap: bool,
        access: AccessType,
        /// The error code of the expected protection fault, if any.
        fault: Option<u32>,
    }

    /// A supervisor access with CR0.WP set, allowed, to a page with
    /// `leaf` rights under tables with `upper` rights.
    fn case(leaf: u64, upper: u64, access: AccessType) -> RightsCase {
        RightsCase {
            leaf,
            upper,
            user: false,
            write_protect: true,
            smep: false,
            smap: false,
            access,
            fault: None,
        }
    }

    #[test]
    fn rights_are_checked_like_the_cpu() {
        use AccessType::{Fetch, Read, Write};
        let all = P | RW | US;
        let user = |c: RightsCase| RightsCase { user: true, ..c };
        let fault = |code: u32, c: RightsCase| RightsCase {
            fault: Some(code),
            ..c
        };
        let cases = [
            user(case(all, all, Write)),
            fault(0b101, user(case(P | RW, all, Read))),
            fault(0b111, user(case(P | US, all, Write))),
            // A right cleared above the leaf counts.
            fault(0b101, user(case(all, P | RW, Read))),
            fault(0b111, user(case(all, P | US, Write))),
            // Supervisor writes to read-only pages: CR0.WP decides.
            RightsCase {
                write_protect: false,
                ..case(P, P | RW, Write)
            },
            fault(0b011, case(P, P | RW, Write)),
            // No-execute, anywhere on the walk.
            fault(0b10001, case(P | NX, P | RW, Fetch)),
            fault(0b10001, case(P, P | RW | NX, Fetch)),
            case(P | NX, P | RW, Read),
            // SMEP: no supervisor fetch from user pages.
            case(P | US, all, Fetch),
            fault(
                0b10001,
                RightsCase {
                    smep: true,
                    ..case(P | US, all, Fetch)
                },
            ),
            // SMAP: no supervisor data access to user pages.
            fault(
                0b001,
                RightsCase {
                    smap: true,
                    ..case(P | US, all, Read)
                },
            ),
            fault(
                0b011,
                RightsCase {
                    smap: true,
                    ..case(all, all, Write)
                },
            ),
            case(P | US, all, Read),
            RightsCase {
                smap: true,
                ..case(P, P | RW, Read)
            },
        ];
        for (number, case) in cases.iter().enumerate() {
            let (tables, root) = rights(case.leaf, case.upper);
            let walk = Paging {
                user: case.user,
                write_protect: case.write_protect,
                smep: case.smep,
                smap: case.smap,
                ..paging(PagingMode::Level4, root)
            };
            let result = walk.translate(&tables.memory, GuestVirtual(0x1008), case.access);
            match case.fault {
                None => assert_eq!(result, Ok(GuestPhysical(0x7008)), "case {number}"),
                Some(code) => {
                    let fault = fault_of(result);
                    assert_eq!(
                        (fault.reason, fault.level, fault.error_code),
                        (FaultReason::Protection, 1, code),
                        "case {number}"
                    );
                }
            }
        }
    }

    #[test]
    fn tables_outside_memory_are_reported() {
        let memory = VecMemory(vec![0; 0x1000]);
        let four = paging(PagingMode::Level4, 0x10_0000);
        assert_eq!(
            four.translate(&memory, GuestVirtual(0), AccessType::Read),
            Err(TranslationError::TableOutsideMemory {
                level: 4,
                address: GuestPhysical(0x10_0000)
            })
        );
    }

    fn long_mode_state(root: u64) -> VcpuState {
        let mut state = VcpuState::new_zeroed();
        state.cr0 = CR0_PE | CR0_PG | CR0_WP;
        state.cr4 = CR4_PAE;
        state.efer = EFER_LMA | EFER_NXE;
        state.cr3 = root;
        state.cs.attributes = 0xa9b;
        state.ss.attributes = 0xc93;
        state
    }

    #[test]
    fn paging_of_reads_the_control_registers() {
        let mut state = long_mode_state(0x5000);
        assert_eq!(
            Paging::of(&state),
            Paging {
                smep: false,
                ..paging(PagingMode::Level4, 0x5000)
            }
        );
        assert_eq!(ExecutionMode::of(&state), ExecutionMode::Bits64);
        state.cr4 |= CR4_LA57 | CR4_SMEP | CR4_SMAP;
        state.ss.attributes |= 3 << SEGMENT_DPL_SHIFT;
        let five = Paging::of(&state);
        assert_eq!(
            (five.mode, five.smep, five.smap, five.user),
            (PagingMode::Level5, true, true, true)
        );
        state.rflags |= RFLAGS_AC;
        assert!(!Paging::of(&state).smap, "RFLAGS.AC lifts SMAP");
        state.efer = 0;
        state.cs.attributes = 0xc9b;
        assert_eq!(Paging::of(&state).mode, PagingMode::Pae);
        assert_eq!(ExecutionMode::of(&state), ExecutionMode::Bits32);
        state.cr4 = CR4_PSE;
        assert_eq!(
            Paging::of(&state).mode,
            PagingMode::Bits32 { large_pages: true }
        );
        state.cr0 = CR0_PE;
        assert_eq!(Paging::of(&state).mode, PagingMode::Off);
        state.cr0 = 0;
        assert_eq!(ExecutionMode::of(&state), ExecutionMode::Bits16);
        assert_eq!(privilege_level(&state), 0);
        state.cr0 = CR0_PE;
        state.rflags |= RFLAGS_VM;
        assert_eq!(
            (ExecutionMode::of(&state), privilege_level(&state)),
            (ExecutionMode::Bits16, 3)
        );
    }

    #[test]
    fn reads_cross_pages_to_separate_frames() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        tables.map(root, 4, 0x40_0000, 1, 0x3_0000 | all, all);
        tables.map(root, 4, 0x40_1000, 1, 0x1_0000 | all, all);
        tables.memory.0[0x3_0ffc..0x3_1000].copy_from_slice(&[1, 2, 3, 4]);
        tables.memory.0[0x1_0000..0x1_0004].copy_from_slice(&[5, 6, 7, 8]);
        let four = paging(PagingMode::Level4, root);
        let mut bytes = [0; 8];
        four.read(
            &tables.memory,
            GuestVirtual(0x40_0ffc),
            AccessType::Read,
            &mut bytes,
        )
        .unwrap();
        assert_eq!(bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
        // A page mapped outside guest RAM.
        tables.map(root, 4, 0x40_2000, 1, 0xfee0_0000 | all, all);
        assert_eq!(
            four.read(
                &tables.memory,
                GuestVirtual(0x40_1ffc),
                AccessType::Read,
                &mut bytes
            ),
            Err(ReadError::OutsideMemory(GuestPhysical(0xfee0_0000)))
        );
    }

    #[test]
    fn fetch_reads_fifteen_bytes_across_a_page() {
        let mut tables = Tables::new();
        let root = tables.table();
        let all = P | RW | US;
        tables.map(root, 4, 0x40_0000, 1, 0x3_0000 | all, all);
        tables.map(root, 4, 0x40_1000, 1, 0x1_0000 | all, all);
        for (i, byte) in tables.memory.0[0x3_0ff8..0x3_1000].iter_mut().enumerate() {
            *byte = i as u8;
        }
        for (i, byte) in tables.memory.0[0x1_0000..0x1_0010].iter_mut().enumerate() {
            *byte = 0x80 + i as u8;
        }
        let mut state = long_mode_state(root);
        state.rip = 0x40_0ff8;
        let fetched = fetch_instruction(&tables.memory, &state).unwrap();
        assert_eq!(
            fetched.bytes(),
            [
                0, 1, 2, 3, 4, 5, 6, 7, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86
            ]
        );
        assert_eq!(fetched.stop(), None);
        state.rip = 0x40_0ff0;
        assert_eq!(
            fetch_instruction(&tables.memory, &state)
                .unwrap()
                .bytes()
                .len(),
            15
        );
        // The next page is not present: the bytes before it, and why.
        state.rip = 0x40_1ffa;
        let fetched = fetch_instruction(&tables.memory, &state).unwrap();
        assert_eq!(fetched.bytes().len(), 6);
        let Some(ReadError::Translation(TranslationError::PageFault(fault))) = fetched.stop()
        else {
            panic!("{:?}", fetched.stop());
        };
        assert_eq!(
            (fault.address, fault.error_code),
            (GuestVirtual(0x40_2000), 0b10000)
        );
        // Not even the first byte.
        state.rip = 0x40_2000;
        assert!(matches!(
            fetch_instruction(&tables.memory, &state),
            Err(ReadError::Translation(TranslationError::PageFault(_)))
        ));
        // Executing from a page that is not guest RAM.
        tables.map(root, 4, 0x40_2000, 1, 0xfee0_0000 | all, all);
        assert_eq!(
            fetch_instruction(&tables.memory, &state),
            Err(ReadError::OutsideMemory(GuestPhysical(0xfee0_0000)))
        );
        // A no-execute page.
        tables.map(root, 4, 0x40_2000, 1, 0x2_0000 | all | NX, all);
        let Err(ReadError::Translation(TranslationError::PageFault(fault))) =
            fetch_instruction(&tables.memory, &state)
        else {
            panic!("no-execute page fetched");
        };
        assert_eq!(
            (fault.reason, fault.error_code),
            (FaultReason::Protection, 0b10001)
        );
    }

    #[test]
    fn fetch_in_real_mode_adds_the_code_base() {
        let mut memory = VecMemory(vec![0; 0x2_0000]);
        memory.0[0x1_2345..0x1_2348].copy_from_slice(&[0x90, 0x91, 0x92]);
        let mut state = VcpuState::new_zeroed();
        state.cs.base = 0x1_2000;
        state.rip = 0x345;
        let fetched = fetch_instruction(&memory, &state).unwrap();
        assert_eq!(&fetched.bytes()[..3], [0x90, 0x91, 0x92]);
        // Fetching at the end of guest RAM stops there.
        state.rip = 0xfffa;
        state.cs.base = 0x1_0000;
        let fetched = fetch_instruction(&memory, &state).unwrap();
        assert_eq!(fetched.bytes().len(), 6);
        assert_eq!(
            fetched.stop(),
            Some(ReadError::OutsideMemory(GuestPhysical(0x2_0000)))
        );
    }

    fn any_paging() -> impl proptest::strategy::Strategy<Value = Paging> {
        use proptest::prelude::*;
        let mode = prop::sample::select(vec![
            PagingMode::Off,
            PagingMode::Bits32 { large_pages: false },
            PagingMode::Bits32 { large_pages: true },
            PagingMode::Pae,
            PagingMode::Level4,
            PagingMode::Level5,
        ]);
        (mode, any::<u64>(), any::<[bool; 5]>()).prop_map(|(mode, root, bits)| Paging {
            mode,
            // Mostly inside the random memory, sometimes anywhere.
            root: if bits[0] { root } else { root % 0x4000 },
            write_protect: bits[1],
            no_execute: bits[2],
            smep: bits[3],
            smap: bits[4],
            user: root & 1 != 0,
        })
    }

    proptest::proptest! {
        #[test]
        fn walks_over_random_tables_never_panic(
            paging in any_paging(),
            seed in proptest::arbitrary::any::<u64>(),
            address in proptest::arbitrary::any::<u64>(),
            access in proptest::sample::select(vec![AccessType::Read, AccessType::Write, AccessType::Fetch]),
        ) {
            // 16 KiB of xorshift noise shaped like entries: present, with
            // random rights and size bits, pointing inside the 16 KiB
            // (the upper half is zero or the NX bit, which reads as a
            // not-present 32-bit entry).
            let mut state = seed | 1;
            let mut tables = Vec::with_capacity(0x4000);
            while tables.len() < 0x4000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let entry = (state & 0x3fff) | ENTRY_PRESENT | (state & ENTRY_NO_EXECUTE);
                tables.extend_from_slice(&entry.to_le_bytes());
            }
            let memory = VecMemory(tables);
            match paging.translate(&memory, GuestVirtual(address), access) {
                // The offset in the smallest page survives any mapping.
                Ok(GuestPhysical(physical)) => {
                    proptest::prop_assert_eq!(physical % PAGE_SIZE, address % PAGE_SIZE)
                }
                Err(TranslationError::PageFault(fault)) => {
                    proptest::prop_assert!((1..=5).contains(&fault.level));
                    proptest::prop_assert_eq!(fault.address, GuestVirtual(address));
                }
                Err(_) => {}
            }
            let mut bytes = [0; 15];
            let _ = paging.read(&memory, GuestVirtual(address), access, &mut bytes);
        }
    }

    #[test]
    fn instruction_bytes_cut_at_fifteen() {
        let long = InstructionBytes::new(
            &[0x66; 20],
            Some(ReadError::OutsideMemory(GuestPhysical(0))),
        );
        assert_eq!(long.bytes().len(), MAX_INSTRUCTION_LENGTH);
        assert_eq!(long.stop(), None, "fifteen bytes need no reason");
    }
}
