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
use microvisor_abi::vcpu::{EntryMode, ExitReason, VcpuState};

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

    fn check(&self, address: u64, length: u64) -> Result<usize, OutOfRange> {
        match address.checked_add(length) {
            Some(end) if end <= self.size => Ok(address as usize),
            _ => Err(OutOfRange { address, length }),
        }
    }

    /// Copies guest memory at `address` into `into`.
    pub fn read(&self, address: u64, into: &mut [u8]) -> Result<(), OutOfRange> {
        let offset = self.check(address, into.len() as u64)?;
        for (i, byte) in into.iter_mut().enumerate() {
            // SAFETY: offset + i < size (checked), inside the mapping
            // (`new`'s contract).
            *byte = unsafe { self.base.add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `bytes` into guest memory at `address`.
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), OutOfRange> {
        let offset = self.check(address, bytes.len() as u64)?;
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { self.base.add(offset + i).write_volatile(*byte) };
        }
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
    pub fn state(&mut self) -> &mut VcpuState {
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
