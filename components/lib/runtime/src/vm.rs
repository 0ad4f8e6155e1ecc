//! A world switcher's view of its VM: guest memory, the boot image, the
//! vCPU state page and the VMCS/vCPU capabilities, found in the
//! start-information page.
//!
//! The core maps the VM's guest-physical memory, a read-only copy of its
//! boot image and its [`VcpuState`] page into the world switcher; this
//! module wraps them so the world switcher itself needs no `unsafe`. Guest
//! memory is accessed with volatile copies (the guest writes it too), and
//! every access is bounds-checked against the VM's memory size.

use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_abi::start::{ResourceKind, ResourceView};
use microvisor_abi::vcpu::{EntryMode, ExitReason, VcpuState, dirty, published};

use crate::{Start, syscall};

/// Guest-physical memory from 0 to `size`, mapped into this component.
#[derive(Clone, Copy, Debug)]
pub struct GuestMemory {
    base: *mut u8,
    size: u64,
}

/// A guest-physical range outside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    pub address: u64,
    pub length: u64,
}

impl GuestMemory {
    /// Wraps `size` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + size` must be mapped read-write for the life of the
    /// program and used only through this value (and by the guest).
    pub unsafe fn new(base: *mut u8, size: u64) -> Self {
        Self { base, size }
    }

    /// Bytes of guest memory.
    pub fn size(&self) -> u64 {
        self.size
    }

    #[inline]
    fn check(&self, address: u64, length: u64) -> Result<usize, OutOfRange> {
        match address.checked_add(length) {
            Some(end) if end <= self.size => Ok(address as usize),
            _ => Err(OutOfRange { address, length }),
        }
    }

    /// Copies guest memory at `address` into `into`.
    pub fn read(&self, address: u64, into: &mut [u8]) -> Result<(), OutOfRange> {
        let offset = self.check(address, into.len() as u64)?;
        // SAFETY: offset + into.len() <= size (checked), inside the mapping
        // (`new`'s contract).
        unsafe { volatile_read(self.base.add(offset), into) };
        Ok(())
    }

    /// The little-endian `u64` at `address`: one volatile read when it is
    /// 8-aligned (a page-table entry), else byte by byte.
    #[inline]
    pub fn read_u64(&self, address: u64) -> Result<u64, OutOfRange> {
        let offset = self.check(address, WORD as u64)?;
        // SAFETY: offset + 8 <= size (checked), inside the mapping; the
        // word read is aligned.
        unsafe {
            let at = self.base.add(offset);
            if (at as usize).is_multiple_of(WORD) {
                return Ok(u64::from_le(at.cast::<u64>().read_volatile()));
            }
            let mut bytes = [0u8; WORD];
            volatile_read(at, &mut bytes);
            Ok(u64::from_le_bytes(bytes))
        }
    }

    /// The little-endian `u32` at `address` (as [`GuestMemory::read_u64`]).
    #[inline]
    pub fn read_u32(&self, address: u64) -> Result<u32, OutOfRange> {
        let offset = self.check(address, 4)?;
        // SAFETY: as in `read_u64`.
        unsafe {
            let at = self.base.add(offset);
            if (at as usize).is_multiple_of(4) {
                return Ok(u32::from_le(at.cast::<u32>().read_volatile()));
            }
            let mut bytes = [0u8; 4];
            volatile_read(at, &mut bytes);
            Ok(u32::from_le_bytes(bytes))
        }
    }

    /// Copies `bytes` into guest memory at `address`.
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let offset = self.check(address, bytes.len() as u64)?;
        // SAFETY: as in `read`.
        unsafe { volatile_write(self.base.add(offset), bytes) };
        Ok(())
    }

    /// Fills `length` bytes at `address` with `value`.
    pub fn fill(&self, address: u64, length: u64, value: u8) -> Result<(), OutOfRange> {
        let offset = self.check(address, length)?;
        for i in 0..length as usize {
            // SAFETY: as in `read`.
            unsafe { self.base.add(offset + i).write_volatile(value) };
        }
        Ok(())
    }

    /// Writes a little-endian `u64`.
    pub fn write_u64(&self, address: u64, value: u64) -> Result<(), OutOfRange> {
        self.write(address, &value.to_le_bytes())
    }

    /// Copies `length` bytes of guest memory at `address` to `to`.
    ///
    /// # Safety
    /// `to..to + length` must be writable memory that no Rust reference
    /// covers (a queue slot).
    pub(crate) unsafe fn copy_out(
        &self,
        address: u64,
        to: *mut u8,
        length: usize,
    ) -> Result<(), OutOfRange> {
        let offset = self.check(address, length as u64)?;
        // SAFETY: the source is inside the mapping (checked); the
        // destination is the caller's; guest memory and queue slots never
        // overlap (the core maps them from different frames).
        unsafe { core::ptr::copy_nonoverlapping(self.base.add(offset), to, length) };
        Ok(())
    }

    /// Copies `length` bytes from `from` into guest memory at `address`.
    ///
    /// # Safety
    /// `from..from + length` must be readable memory (a queue slot).
    pub(crate) unsafe fn copy_in(
        &self,
        address: u64,
        from: *const u8,
        length: usize,
    ) -> Result<(), OutOfRange> {
        let offset = self.check(address, length as u64)?;
        // SAFETY: as in `copy_out`, the other way.
        unsafe { core::ptr::copy_nonoverlapping(from, self.base.add(offset), length) };
        Ok(())
    }
}

/// Bytes of the words [`volatile_read`] and [`volatile_write`] move.
const WORD: usize = core::mem::size_of::<u64>();

/// Copies `into.len()` bytes from `from` with volatile reads: single bytes
/// up to the first 8-byte boundary, then whole words, then the tail (a
/// page-table entry is one read, an instruction fetch at most three
/// pieces).
///
/// # Safety
/// `from .. from + into.len()` must be readable.
#[inline]
unsafe fn volatile_read(from: *const u8, into: &mut [u8]) {
    let length = into.len();
    let head = ((WORD - (from as usize) % WORD) % WORD).min(length);
    let words = (length - head) / WORD;
    for (i, byte) in into[..head].iter_mut().enumerate() {
        // SAFETY: i < length (the caller's range).
        *byte = unsafe { from.add(i).read_volatile() };
    }
    for word in 0..words {
        let at = head + word * WORD;
        // SAFETY: `from + at` is 8-aligned (past the head) and the word
        // lies inside the caller's range.
        let value = unsafe { from.add(at).cast::<u64>().read_volatile() };
        into[at..at + WORD].copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in into.iter_mut().enumerate().skip(head + words * WORD) {
        // SAFETY: as for the head.
        *byte = unsafe { from.add(i).read_volatile() };
    }
}

/// Copies `bytes` to `to` with volatile writes, word-wise where aligned
/// (as [`volatile_read`]).
///
/// # Safety
/// `to .. to + bytes.len()` must be writable.
#[inline]
unsafe fn volatile_write(to: *mut u8, bytes: &[u8]) {
    let length = bytes.len();
    let head = ((WORD - (to as usize) % WORD) % WORD).min(length);
    let words = (length - head) / WORD;
    for (i, &byte) in bytes[..head].iter().enumerate() {
        // SAFETY: i < length (the caller's range).
        unsafe { to.add(i).write_volatile(byte) };
    }
    for word in 0..words {
        let at = head + word * WORD;
        let mut value = [0u8; WORD];
        value.copy_from_slice(&bytes[at..at + WORD]);
        // SAFETY: `to + at` is 8-aligned and inside the caller's range.
        unsafe {
            to.add(at)
                .cast::<u64>()
                .write_volatile(u64::from_ne_bytes(value))
        };
    }
    for (i, &byte) in bytes.iter().enumerate().skip(head + words * WORD) {
        // SAFETY: as for the head.
        unsafe { to.add(i).write_volatile(byte) };
    }
}

/// The VM this world switcher runs.
pub struct Vm {
    name: &'static str,
    pub vmcs: u64,
    pub vcpu: u64,
    pub memory: GuestMemory,
    /// The boot image (an ELF), read-only.
    pub image: &'static [u8],
    pub entry: EntryMode,
    state: &'static mut VcpuState,
}

/// Why [`Vm::from_start`] found no VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingVm {
    /// No guest memory in the start page: this component runs no VM.
    NoVm,
    /// The start page lacks the named part of the VM.
    Missing(&'static str),
    /// An earlier call already took the VM: there is one [`Vm`] per
    /// component, since it holds the only `&mut` to the vCPU state page.
    AlreadyTaken,
}

/// Set by the one [`Vm::from_start`] call that wraps the VM's mappings.
static TAKEN: AtomicBool = AtomicBool::new(false);

impl Vm {
    /// Finds the VM in the start-information page. Only the first call
    /// that finds one returns it; later calls return
    /// [`MissingVm::AlreadyTaken`] (the [`Vm`] owns the state page).
    pub fn from_start(start: &Start) -> Result<Self, MissingVm> {
        let info: &'static crate::StartInfo = start.info;
        let (name, memory, size, entry) = info
            .views()
            .find_map(|(name, view)| match view {
                ResourceView::GuestMemory {
                    address,
                    size,
                    entry,
                } => Some((name, address, size, entry)),
                _ => None,
            })
            .ok_or(MissingVm::NoVm)?;
        let find = |kind: ResourceKind, what| {
            info.resource(name, kind)
                .and_then(|r| r.view())
                .ok_or(MissingVm::Missing(what))
        };
        let ResourceView::GuestImage {
            address: image,
            size: image_size,
        } = find(ResourceKind::GuestImage, "image")?
        else {
            return Err(MissingVm::Missing("image"));
        };
        let ResourceView::VcpuState { address: state } =
            find(ResourceKind::VcpuState, "state page")?
        else {
            return Err(MissingVm::Missing("state page"));
        };
        let capability = |suffix: &str, what| -> Result<u64, MissingVm> {
            start
                .capability_of(name, suffix)
                .ok_or(MissingVm::Missing(what))
        };
        let vmcs = capability(".vmcs", "VMCS capability")?;
        let vcpu = capability(".vcpu", "vCPU capability")?;
        let entry = EntryMode::from_u32(entry).ok_or(MissingVm::Missing("entry mode"))?;
        if TAKEN.swap(true, Ordering::AcqRel) {
            return Err(MissingVm::AlreadyTaken);
        }
        // SAFETY: the core maps guest memory read-write, the image copy
        // read-only and the state page read-write at these addresses for
        // the life of this component (see `microvisor_abi::start`). This is
        // the only place that wraps them, and `TAKEN` lets it do so once per
        // component: no second `&'static mut VcpuState` or `GuestMemory`
        // over the same pages can exist, however often safe code calls it.
        unsafe {
            Ok(Self {
                name,
                vmcs,
                vcpu,
                memory: GuestMemory::new(memory as *mut u8, size),
                image: core::slice::from_raw_parts(image as *const u8, image_size as usize),
                entry,
                state: &mut *(state as *mut VcpuState),
            })
        }
    }

    /// The VM's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The shared state page: the last exit and the guest's registers.
    /// Its control, segment and descriptor-table registers are current
    /// only after the exits that publish them ([`published`]); code that
    /// reads them uses [`Vm::full_state`].
    #[inline]
    pub fn state(&mut self) -> &mut VcpuState {
        self.state
    }

    /// The state page with its control, segment and descriptor-table
    /// registers current: when the last exit did not publish them all,
    /// the core is asked for them ([`dirty::FETCH`]), keeping the fields
    /// `pending` names (the caller's edits for the next entry, not yet
    /// written back).
    #[inline]
    pub fn full_state(&mut self, pending: u64) -> &mut VcpuState {
        if self.state.published & published::ALL != published::ALL {
            syscall::vcpu_run(self.vcpu, dirty::FETCH | (pending & dirty::ALL), None);
        }
        self.state
    }

    /// Enters the guest after writing back the fields in `dirty`; returns
    /// at the next exit, or after `limit_us` with
    /// [`ExitReason::TimeLimit`].
    #[inline]
    pub fn run(&mut self, dirty: u64, limit_us: Option<u64>) -> Option<ExitReason> {
        ExitReason::from_u32(syscall::vcpu_run(self.vcpu, dirty, limit_us) as u32)
    }

    /// Back to power-on state (registers, intercepts, a fresh ASID).
    pub fn reset(&mut self) {
        syscall::vmcs_reset(self.vmcs);
    }

    /// One console line prefixed with the VM's name.
    pub fn log(&self, bytes: &[u8]) {
        syscall::guest_log(self.vmcs, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_abi::start::{MAX_RESOURCES, Resource, START_MAGIC, StartInfo};
    use zerocopy::FromZeros;

    /// A start page describing a VM `guest` over host memory (leaked: the
    /// `Vm` it makes lives as long as the program, as on the target).
    fn start_with_a_vm() -> Start {
        let leak = |size: usize| Box::leak(vec![0u8; size].into_boxed_slice()).as_mut_ptr() as u64;
        let resources = [
            Resource::new(
                "guest",
                ResourceView::GuestMemory {
                    address: leak(8192),
                    size: 8192,
                    entry: EntryMode::Long as u32,
                },
            ),
            Resource::new(
                "guest",
                ResourceView::GuestImage {
                    address: leak(64),
                    size: 64,
                },
            ),
            Resource::new(
                "guest",
                ResourceView::VcpuState {
                    address: Box::leak(Box::new(VcpuState::new_zeroed())) as *mut VcpuState as u64,
                },
            ),
            Resource::new(
                "guest.vmcs",
                ResourceView::Capability { handle: 7, kind: 0 },
            ),
            Resource::new(
                "guest.vcpu",
                ResourceView::Capability { handle: 8, kind: 0 },
            ),
        ];
        let mut info = StartInfo::new_zeroed();
        info.magic = START_MAGIC;
        info.resource_count = resources.len() as u32;
        info.resources[..resources.len()].copy_from_slice(&resources);
        assert!(resources.len() <= MAX_RESOURCES);
        Start {
            info: Box::leak(Box::new(info)),
        }
    }

    #[test]
    fn guest_memory_copies_every_length_at_every_alignment() {
        let backing: &'static mut [u64] = Box::leak(vec![0u64; 64].into_boxed_slice());
        // SAFETY: 512 leaked bytes, used only through this value.
        let memory = unsafe { GuestMemory::new(backing.as_mut_ptr().cast::<u8>(), 512) };
        let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        memory.write(0, &pattern).unwrap();
        for start in 0..24u64 {
            for length in 0..40usize {
                let mut into = vec![0xeeu8; length];
                memory.read(start, &mut into).unwrap();
                assert_eq!(
                    into,
                    &pattern[start as usize..start as usize + length],
                    "read {length} at {start}"
                );
                let mut before = vec![0u8; length + 2];
                memory.read(start + 99, &mut before).unwrap();
                let fresh: Vec<u8> = (0..length).map(|i| (i as u8) ^ 0x5a).collect();
                memory.write(start + 100, &fresh).unwrap();
                let mut back = vec![0u8; length + 2];
                memory.read(start + 99, &mut back).unwrap();
                assert_eq!(
                    &back[1..=length],
                    &fresh[..],
                    "write {length} at {}",
                    start + 100
                );
                // Its neighbours are untouched.
                assert_eq!((back[0], back[length + 1]), (before[0], before[length + 1]));
                memory.write(start + 99, &before).unwrap();
            }
        }
        assert!(memory.read(510, &mut [0u8; 4]).is_err());
        for address in [0u64, 8, 3, 500] {
            let mut word = [0u8; 8];
            memory.read(address, &mut word).unwrap();
            assert_eq!(memory.read_u64(address), Ok(u64::from_le_bytes(word)));
            assert_eq!(
                memory.read_u32(address),
                Ok(u32::from_le_bytes(word[..4].try_into().unwrap()))
            );
        }
        assert!(memory.read_u64(505).is_err());
        assert!(memory.read_u32(509).is_err());
        assert!(memory.write(u64::MAX, &[1]).is_err());
    }

    #[test]
    fn the_vm_is_taken_once() {
        let start = start_with_a_vm();
        let mut vm = Vm::from_start(&start).expect("the first call finds the VM");
        assert_eq!((vm.name(), vm.vmcs, vm.vcpu), ("guest", 7, 8));
        assert_eq!(vm.memory.size(), 8192);
        vm.state().exit_reason = 3;
        // A second Vm would be a second &mut over the same state page.
        assert_eq!(Vm::from_start(&start).err(), Some(MissingVm::AlreadyTaken));
        assert_eq!(
            Vm::from_start(&start_with_a_vm()).err(),
            Some(MissingVm::AlreadyTaken)
        );
        assert_eq!(vm.state().exit_reason, 3);
    }

    #[test]
    fn guest_memory_is_bounds_checked() {
        let mut backing = vec![0u8; 4096];
        // SAFETY: the vector outlives the wrapper and is used only through it.
        let memory = unsafe { GuestMemory::new(backing.as_mut_ptr(), 4096) };
        memory.write(4090, b"abcdef").unwrap();
        let mut out = [0u8; 6];
        memory.read(4090, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        assert_eq!(
            memory.write(4091, b"abcdef"),
            Err(OutOfRange {
                address: 4091,
                length: 6
            })
        );
        assert!(memory.read(u64::MAX, &mut out).is_err(), "overflow");
        assert!(memory.fill(0, 4097, 0).is_err());
        memory.write_u64(8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(backing[8], 0x88);
    }
}
