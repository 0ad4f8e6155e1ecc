//! The boot spec: the system description the core instantiates at boot.
//!
//! The `capdl` tool lowers a system config to this binary form and the
//! build tool packs it into the boot image as the entry named `spec`
//! (kind [`crate::image::EntryKind::Spec`]). The core creates exactly the
//! objects listed here — components, their scheduling contexts, queues,
//! capabilities, grants — and nothing at run time.
//!
//! Byte layout (little-endian): a [`SpecHeader`], then seven tables of
//! fixed-size records, each located by a [`Table`] (offset from the start
//! of the spec, record count). [`Spec::parse`] checks the magic, version,
//! every table's bounds and alignment, and every cross-reference (component
//! indices, capability ranges, names); it never panics. Semantic checks
//! with people-friendly messages live in `capdl`; the core re-checks only
//! what its own safety depends on.
//!
//! Objects are referred to by index: component `i` is the `i`-th
//! [`ComponentSpec`]. Every component owns one notification word (64 bits);
//! capabilities of kind [`CapabilityKind::Notification`] signal a target's
//! word with their badge bits.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::image::NameKind;

/// `MVSPEC\0\0`.
pub const SPEC_MAGIC: [u8; 8] = *b"MVSPEC\0\0";
/// The format version this code reads and writes.
pub const SPEC_VERSION: u32 = 4;
/// The largest queue slot: a message of a 4 KiB block with its header
/// fits, several pages a slot.
pub const MAX_SLOT_SIZE: u32 = 64 << 10;
/// "No component" in index fields.
pub const NONE: u32 = u32::MAX;
/// The most components, queues, capabilities and grants of each kind.
pub const MAX_COMPONENTS: usize = 32;
pub const MAX_QUEUES: usize = 64;
pub const MAX_CAPABILITIES: usize = 512;
pub const MAX_GRANTS: usize = 64;
pub const MAX_VMS: usize = 16;
/// The most guest-physical memory one VM may have (1 GiB).
pub const MAX_GUEST_MEMORY: u64 = 1 << 30;
/// The most capabilities one component may hold.
pub const MAX_CAPABILITIES_PER_COMPONENT: usize = 32;
/// The lowest priority; higher numbers run first.
pub const MAX_PRIORITY: u32 = 255;

/// Pages of memory a queue occupies in each end's address space: one header
/// page (indices, generation, wait flags; see `crate::queue`) and the slots.
pub const fn queue_pages(slot_size: u32, slot_count: u32) -> u64 {
    1 + (slot_size as u64 * slot_count as u64).div_ceil(4096)
}

/// Where a table lies in the spec.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Table {
    /// Offset from the start of the spec, 8-byte aligned.
    pub offset: u32,
    /// Number of records.
    pub count: u32,
}

/// The fixed header.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SpecHeader {
    pub magic: [u8; 8],
    pub version: u32,
    /// Length of the whole spec in bytes.
    pub total_size: u32,
    pub components: Table,
    pub queues: Table,
    pub capabilities: Table,
    pub port_grants: Table,
    pub memory_grants: Table,
    pub interrupt_grants: Table,
    pub vms: Table,
    pub pci_devices: Table,
    /// Index of the component holding scheduling control, or [`NONE`].
    pub scheduling_controller: u32,
    /// Index of the interrupt forwarder, or [`NONE`]: the component every
    /// device interrupt line (but the console's) is delivered to, which
    /// passes each on to its driver and unmasks it.
    pub interrupt_forwarder: u32,
}

/// A component.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ComponentSpec {
    /// The component's name, NUL-padded (`[a-z0-9_-]`, not `core`).
    pub name: [u8; 32],
    /// The boot-image entry holding its ELF program.
    pub program: [u8; 32],
    /// The argument string, `args_len` bytes of UTF-8.
    pub args: [u8; 64],
    pub args_len: u32,
    /// Priority, 0..=[`MAX_PRIORITY`]; higher runs first.
    pub priority: u32,
    /// Scheduling-context budget per period, in microseconds. A budget equal
    /// to the period means the component is never throttled.
    pub budget_us: u32,
    /// Scheduling-context period, in microseconds: at most
    /// [`crate::syscall::MAX_PERIOD_US`], as for `SchedulingConfigure`.
    pub period_us: u32,
    /// Stack size in 4 KiB pages.
    pub stack_pages: u32,
    /// Most memory (segments + stack) the component may occupy, in pages.
    pub memory_pages: u32,
    /// Index of the supervising component, or [`NONE`].
    pub supervisor: u32,
    /// 1: runs from boot; 0: waits until its supervisor starts it.
    pub start: u32,
    /// Restart policy for the supervisor: most restarts, then hold.
    pub max_restarts: u32,
    /// Restart policy: initial back-off in milliseconds (doubles each time).
    pub restart_backoff_ms: u32,
    /// The notification bit the supervisor receives when this one faults.
    pub fault_bit: u32,
    /// First index of this component's capabilities in the capability table.
    pub capability_first: u32,
    /// Number of capabilities (consecutive from `capability_first`).
    pub capability_count: u32,
    /// Restart policy: the supervisor's watchdog, in milliseconds (0:
    /// none; see [`crate::start::Supervised::watchdog_ms`]).
    pub watchdog_ms: u32,
}

/// A queue: a shared ring from `sender` to `receiver`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct QueueSpec {
    pub name: [u8; 32],
    pub sender: u32,
    pub receiver: u32,
    /// Bytes per slot (a multiple of 8, at most 4096).
    pub slot_size: u32,
    /// Slots in the ring (a power of two).
    pub slot_count: u32,
    /// Where the queue memory appears in the sender's address space.
    pub sender_address: u64,
    /// Where it appears in the receiver's.
    pub receiver_address: u64,
    /// Bit set in the receiver's notification when messages arrive.
    pub receiver_bit: u32,
    /// Bit set in the sender's notification when space frees up.
    pub sender_bit: u32,
}

/// What a capability lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CapabilityKind {
    /// Signal `target`'s notification word with `badge` bits.
    Notification = 1,
    /// Configure any scheduling context (budget, period, priority).
    SchedulingControl = 2,
    /// Read the fault of, restart and stop `target` (held by supervisors).
    ComponentControl = 3,
    /// Read the consumed time of `target`'s scheduling context.
    SchedulingContext = 4,
    /// The VMCS of VM `target` (an index in the VM table): guest state,
    /// intercept controls, reset.
    Vmcs = 5,
    /// The vCPU of VM `target`: run it (its world switcher only) or poke it.
    Vcpu = 6,
    /// Inject faults into component `target` (crash, hang, corrupt its
    /// memory or queues, flood its queues): granted only by a system's
    /// `[test]` table, for fault-injection campaigns.
    Injection = 7,
    /// Call component `target` ([`crate::syscall::Syscall::Call`]), which
    /// serves with [`crate::syscall::Syscall::ReplyWait`] and learns the
    /// caller by `badge` (nonzero).
    Endpoint = 8,
}

impl CapabilityKind {
    /// Decodes a kind, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Notification,
            2 => Self::SchedulingControl,
            3 => Self::ComponentControl,
            4 => Self::SchedulingContext,
            5 => Self::Vmcs,
            6 => Self::Vcpu,
            7 => Self::Injection,
            8 => Self::Endpoint,
            _ => return None,
        })
    }
}

/// One capability, held by `holder`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CapabilitySpec {
    /// The name the holder knows it by (e.g. `pong.notify`).
    pub name: [u8; 32],
    pub holder: u32,
    /// A [`CapabilityKind`].
    pub kind: u32,
    /// The object: a component index, a VM index for [`CapabilityKind::Vmcs`]
    /// and [`CapabilityKind::Vcpu`], or [`NONE`] for scheduling control.
    pub target: u32,
    pub reserved: u32,
    /// Notification bits, for [`CapabilityKind::Notification`]; the
    /// caller's name for its server, for [`CapabilityKind::Endpoint`].
    pub badge: u64,
}

/// I/O ports a driver component may use.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PortGrant {
    pub component: u32,
    pub first: u16,
    pub count: u16,
}

/// The I/O ports the core keeps for itself, with what they are: no
/// component may be granted any of them (capdl refuses such a grant with
/// its file and line, and [`Spec::parse`] again at boot).
pub const CORE_PORTS: [(u16, u16, &str); 7] = [
    (0x20, 2, "the primary 8259"),
    (0x40, 4, "the PIT"),
    (0x61, 1, "the PIT's gate"),
    (0xa0, 2, "the secondary 8259"),
    (0xf4, 1, "the exit device"),
    (0x3f8, 8, "COM1, the core's console"),
    (0xcf8, 8, "the PCI configuration ports"),
];

/// What of the core's own ports `first .. first + count` overlaps, if any.
pub fn core_port_overlap(first: u16, count: u16) -> Option<&'static str> {
    let end = u32::from(first) + u32::from(count);
    CORE_PORTS
        .iter()
        .find(|&&(base, size, _)| {
            u32::from(first) < u32::from(base) + u32::from(size) && u32::from(base) < end
        })
        .map(|&(_, _, what)| what)
}

/// The device pages the core keeps for itself, with what they are: no
/// memory grant may include them.
pub const CORE_DEVICE_PAGES: [(u64, &str); 2] = [
    (0xfec0_0000, "the IOAPIC's registers"),
    (0xfee0_0000, "the local APIC's registers"),
];

/// What of the core's own device pages `physical .. physical + size`
/// includes, if any.
pub fn core_device_overlap(physical: u64, size: u64) -> Option<&'static str> {
    let end = physical.saturating_add(size);
    CORE_DEVICE_PAGES
        .iter()
        .find(|&&(page, _)| physical < page + crate::PAGE_SIZE && page < end)
        .map(|&(_, what)| what)
}

/// Memory mapped into a driver component: a device's registers at
/// `physical`, or a DMA buffer whose frames the core chooses.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct MemoryGrant {
    pub component: u32,
    /// A [`MemoryKind`] number.
    pub kind: u32,
    /// The device memory's address; 0 for a DMA buffer.
    pub physical: u64,
    pub size: u64,
    /// Where it appears in the component.
    pub address: u64,
}

/// What a [`MemoryGrant`] maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MemoryKind {
    /// Device registers at the grant's physical address (uncached).
    Device = 0,
    /// A DMA buffer: physically contiguous zeroed frames anywhere in RAM.
    Dma = 1,
    /// A DMA buffer below 4 GiB, for devices that address only 32 bits.
    Dma32 = 2,
    /// A VM's guest-hints page (`physical` is the VM's index in the spec,
    /// `size` one page), mapped read-only: what the guest writes there
    /// the component reads without an exit. The core gives every VM one,
    /// at guest-physical [`crate::vcpu::HINTS_GUEST_PHYSICAL`].
    GuestHints = 3,
}

impl MemoryKind {
    /// Decodes a kind number, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Device,
            1 => Self::Dma,
            2 => Self::Dma32,
            3 => Self::GuestHints,
            _ => return None,
        })
    }
}

/// The largest DMA buffer (physically contiguous, so it must be found in
/// one run of free frames).
pub const MAX_DMA_BYTES: u64 = 4 << 20;

/// An interrupt line delivered to a component as a notification bit.
///
/// The console's line goes to the component that reads the console. Every
/// other line goes to the interrupt forwarder (`component` is the
/// forwarder, `owner` the driver it passes the line on to) and is wired at
/// the IOAPIC as `wiring` says.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InterruptGrant {
    pub component: u32,
    pub line: u32,
    pub bit: u32,
    /// A [`Wiring`] number.
    pub wiring: u32,
    /// The driver the forwarder passes the line on to, or [`NONE`].
    pub owner: u32,
    pub reserved: u32,
}

/// A PCI function a driver component is given: found by the core at boot
/// by its IDs (and bus address, when given); the memory BARs in `bars`
/// are mapped from `window` in the component, and its configuration
/// space is reached through `PciConfig`. MSI vectors are interrupt lines
/// `msi_first_line ..` (see [`FIRST_MSI_LINE`]).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PciSpec {
    pub component: u32,
    pub vendor: u16,
    pub device: u16,
    /// `bus << 8 | device << 3 | function`, or [`NONE`]: the first match.
    pub address: u32,
    /// Bit n: map BAR n (memory BARs only).
    pub bars: u32,
    pub msi_vectors: u32,
    /// The interrupt line of the first MSI vector (the others follow).
    pub msi_first_line: u32,
    /// Where the BARs are mapped in the component, one after the other
    /// with a guard page after each.
    pub window: u64,
}

/// Interrupt lines from this one up are MSI vectors (the IOAPIC's inputs
/// are 0..24).
pub const FIRST_MSI_LINE: u32 = 24;
/// Interrupt lines, IOAPIC inputs and MSI vectors together.
pub const INTERRUPT_LINES: u32 = 32;
/// The most PCI functions a system is given.
pub const MAX_PCI: usize = 8;

/// How a device drives its interrupt line, as the IOAPIC must sample it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Wiring {
    /// As a PC's firmware wires it: ISA lines (0-15) edge-triggered and
    /// active high, PCI lines (16-23) level-triggered and active low.
    Default = 0,
    EdgeHigh = 1,
    EdgeLow = 2,
    LevelHigh = 3,
    LevelLow = 4,
}

impl Wiring {
    /// Decodes a wiring number, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Default,
            1 => Self::EdgeHigh,
            2 => Self::EdgeLow,
            3 => Self::LevelHigh,
            4 => Self::LevelLow,
            _ => return None,
        })
    }

    /// `Default` made explicit for `line`.
    pub const fn resolve(self, line: u32) -> Self {
        match self {
            Self::Default if line >= 16 => Self::LevelLow,
            Self::Default => Self::EdgeHigh,
            other => other,
        }
    }

    /// Whether the line is level-triggered.
    pub const fn level(self) -> bool {
        matches!(self, Self::LevelHigh | Self::LevelLow)
    }

    /// Whether the line is active low.
    pub const fn active_low(self) -> bool {
        matches!(self, Self::EdgeLow | Self::LevelLow)
    }

    /// The name the system file uses (`"level-high"`); `None` for `Default`.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Self::Default => None,
            Self::EdgeHigh => Some("edge-high"),
            Self::EdgeLow => Some("edge-low"),
            Self::LevelHigh => Some("level-high"),
            Self::LevelLow => Some("level-low"),
        }
    }
}

/// A virtual machine: one vCPU run by the thread of its world switcher (on
/// that thread's scheduling context), guest-physical memory from 0 to
/// `memory_bytes`, mapped into the switcher too, and the boot image it
/// starts from.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VmSpec {
    pub name: [u8; 32],
    /// The boot-image entry (kind [`crate::image::EntryKind::Guest`]).
    pub image: [u8; 32],
    /// The component that runs it; at most one VM per switcher.
    pub switcher: u32,
    /// A [`crate::vcpu::EntryMode`].
    pub entry: u32,
    /// Guest-physical memory, a multiple of 4 KiB up to [`MAX_GUEST_MEMORY`].
    pub memory_bytes: u64,
    /// Where guest memory appears in the switcher.
    pub memory_address: u64,
    /// Where the read-only copy of the image appears in the switcher.
    pub image_address: u64,
    /// Where the [`crate::vcpu::VcpuState`] page appears in the switcher.
    pub state_address: u64,
}

const _: () = assert!(size_of::<SpecHeader>() == 88);
const _: () = assert!(size_of::<PciSpec>() == 32);
const _: () = assert!(size_of::<VmSpec>() == 104);
const _: () = assert!(size_of::<ComponentSpec>() == 184);
const _: () = assert!(size_of::<QueueSpec>() == 72);
const _: () = assert!(size_of::<CapabilitySpec>() == 56);
const _: () = assert!(size_of::<PortGrant>() == 8);
const _: () = assert!(size_of::<MemoryGrant>() == 32);
const _: () = assert!(size_of::<InterruptGrant>() == 24);

/// Why a spec was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    Truncated,
    BadMagic,
    UnsupportedVersion(u32),
    /// A table is misaligned, out of bounds or too long (named).
    BadTable(&'static str),
    /// A record refers to a component that does not exist.
    BadComponentIndex {
        table: &'static str,
        index: usize,
    },
    /// A component's capability range is outside the capability table, or
    /// ranges overlap, or a capability's holder disagrees with its range.
    BadCapabilityRange {
        component: usize,
    },
    /// A capability has an unknown kind.
    BadCapabilityKind {
        index: usize,
    },
    /// A name is malformed or duplicated (table, index).
    BadName {
        table: &'static str,
        index: usize,
    },
    /// A field is out of range (table, index, field).
    BadField {
        table: &'static str,
        index: usize,
        field: &'static str,
    },
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "spec truncated"),
            Self::BadMagic => write!(f, "not a boot spec (bad magic)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "spec version {v} (this core reads {SPEC_VERSION})")
            }
            Self::BadTable(t) => write!(f, "{t} table misaligned, out of bounds or too long"),
            Self::BadComponentIndex { table, index } => {
                write!(
                    f,
                    "{table} {index}: refers to a component that does not exist"
                )
            }
            Self::BadCapabilityRange { component } => {
                write!(f, "component {component}: capability range is inconsistent")
            }
            Self::BadCapabilityKind { index } => write!(f, "capability {index}: unknown kind"),
            Self::BadName { table, index } => {
                write!(f, "{table} {index}: malformed or duplicate name")
            }
            Self::BadField {
                table,
                index,
                field,
            } => write!(f, "{table} {index}: {field} out of range"),
        }
    }
}

/// A parsed, cross-checked spec borrowing its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub header: &'a SpecHeader,
    pub components: &'a [ComponentSpec],
    pub queues: &'a [QueueSpec],
    pub capabilities: &'a [CapabilitySpec],
    pub port_grants: &'a [PortGrant],
    pub memory_grants: &'a [MemoryGrant],
    pub interrupt_grants: &'a [InterruptGrant],
    pub vms: &'a [VmSpec],
    pub pci_devices: &'a [PciSpec],
}

/// Reads a record's NUL-padded name field: `Some` when it is 1..=32 bytes
/// of `[a-z0-9_.-]` followed only by NULs (the workspace's one name check,
/// [`crate::image::is_valid_name`], for [`NameKind::Record`]: records also
/// hold capability names such as `pong.notify`).
pub fn name_of(raw: &[u8; 32]) -> Option<&str> {
    crate::image::name_in_field(raw, NameKind::Record)
}

/// Whether `bytes` at page-aligned `address` lie in the part of a
/// component's address space the core maps shared memory into: at or above
/// [`crate::USER_MIN`], below the stack ([`crate::STACK_TOP`]).
fn in_user_range(address: u64, bytes: u64) -> bool {
    address.is_multiple_of(4096)
        && address >= crate::USER_MIN
        && address
            .checked_add(bytes)
            .is_some_and(|end| end <= crate::STACK_TOP)
}

/// Fills a NUL-padded name field (truncating at 32 bytes).
pub fn name_field(name: &str) -> [u8; 32] {
    let mut raw = [0; 32];
    let len = name.len().min(32);
    raw[..len].copy_from_slice(&name.as_bytes()[..len]);
    raw
}

fn table<'a, T: FromBytes + KnownLayout + Immutable>(
    bytes: &'a [u8],
    table: Table,
    limit: usize,
    name: &'static str,
) -> Result<&'a [T], SpecError> {
    let count = table.count as usize;
    if count > limit || !table.offset.is_multiple_of(8) {
        return Err(SpecError::BadTable(name));
    }
    let start = table.offset as usize;
    let rest = bytes.get(start..).ok_or(SpecError::BadTable(name))?;
    <[T]>::ref_from_prefix_with_elems(rest, count)
        .map(|(records, _)| records)
        .map_err(|_| SpecError::BadTable(name))
}

impl<'a> Spec<'a> {
    /// Parses and cross-checks a spec. Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SpecError> {
        let (header, _) = SpecHeader::ref_from_prefix(bytes).map_err(|_| SpecError::Truncated)?;
        if header.magic != SPEC_MAGIC {
            return Err(SpecError::BadMagic);
        }
        if header.version != SPEC_VERSION {
            return Err(SpecError::UnsupportedVersion(header.version));
        }
        let bytes = bytes
            .get(..header.total_size as usize)
            .ok_or(SpecError::Truncated)?;
        let spec = Self {
            header,
            components: table(bytes, header.components, MAX_COMPONENTS, "component")?,
            queues: table(bytes, header.queues, MAX_QUEUES, "queue")?,
            capabilities: table(bytes, header.capabilities, MAX_CAPABILITIES, "capability")?,
            port_grants: table(bytes, header.port_grants, MAX_GRANTS, "port grant")?,
            memory_grants: table(bytes, header.memory_grants, MAX_GRANTS, "memory grant")?,
            interrupt_grants: table(
                bytes,
                header.interrupt_grants,
                MAX_GRANTS,
                "interrupt grant",
            )?,
            vms: table(bytes, header.vms, MAX_VMS, "vm")?,
            pci_devices: table(bytes, header.pci_devices, MAX_PCI, "pci device")?,
        };
        spec.check()?;
        Ok(spec)
    }

    fn component_exists(&self, index: u32) -> bool {
        (index as usize) < self.components.len()
    }

    fn check(&self) -> Result<(), SpecError> {
        let count = self.components.len() as u32;
        let controller = self.header.scheduling_controller;
        if controller != NONE && controller >= count {
            return Err(SpecError::BadComponentIndex {
                table: "scheduling controller",
                index: 0,
            });
        }
        let forwarder = self.header.interrupt_forwarder;
        if forwarder != NONE && forwarder >= count {
            return Err(SpecError::BadComponentIndex {
                table: "interrupt forwarder",
                index: 0,
            });
        }
        let mut next_capability = 0u32;
        for (index, component) in self.components.iter().enumerate() {
            let bad = |field| SpecError::BadField {
                table: "component",
                index,
                field,
            };
            let name = name_of(&component.name).ok_or(SpecError::BadName {
                table: "component",
                index,
            })?;
            if name == "core"
                || name.contains('.')
                || self.components[..index]
                    .iter()
                    .any(|c| name_of(&c.name) == Some(name))
            {
                return Err(SpecError::BadName {
                    table: "component",
                    index,
                });
            }
            name_of(&component.program).ok_or(SpecError::BadName {
                table: "component program",
                index,
            })?;
            if component.args_len > 64
                || core::str::from_utf8(&component.args[..component.args_len as usize]).is_err()
            {
                return Err(bad("args"));
            }
            if component.priority > MAX_PRIORITY {
                return Err(bad("priority"));
            }
            if component.period_us == 0
                || component.budget_us == 0
                || component.budget_us > component.period_us
                || u64::from(component.period_us) > crate::syscall::MAX_PERIOD_US
            {
                return Err(bad("budget/period"));
            }
            if component.stack_pages == 0
                || component.stack_pages > 256
                || component.memory_pages < component.stack_pages
            {
                return Err(bad("stack/memory pages"));
            }
            if component.supervisor != NONE
                && (component.supervisor >= count || component.supervisor == index as u32)
            {
                return Err(SpecError::BadComponentIndex {
                    table: "component supervisor",
                    index,
                });
            }
            if component.start > 1 || component.fault_bit >= 64 {
                return Err(bad("start/fault_bit"));
            }
            let end = component
                .capability_first
                .checked_add(component.capability_count);
            if component.capability_first != next_capability
                || component.capability_count as usize > MAX_CAPABILITIES_PER_COMPONENT
                || end.is_none_or(|end| end as usize > self.capabilities.len())
            {
                return Err(SpecError::BadCapabilityRange { component: index });
            }
            next_capability += component.capability_count;
            for capability in
                &self.capabilities[component.capability_first as usize..(next_capability as usize)]
            {
                if capability.holder != index as u32 {
                    return Err(SpecError::BadCapabilityRange { component: index });
                }
            }
        }
        if next_capability as usize != self.capabilities.len() {
            return Err(SpecError::BadCapabilityRange {
                component: self.components.len(),
            });
        }
        for (index, capability) in self.capabilities.iter().enumerate() {
            name_of(&capability.name).ok_or(SpecError::BadName {
                table: "capability",
                index,
            })?;
            let kind = CapabilityKind::from_u32(capability.kind)
                .ok_or(SpecError::BadCapabilityKind { index })?;
            let vm = matches!(kind, CapabilityKind::Vmcs | CapabilityKind::Vcpu);
            if vm && capability.target as usize >= self.vms.len() {
                return Err(SpecError::BadField {
                    table: "capability",
                    index,
                    field: "vm",
                });
            }
            let needs_target = kind != CapabilityKind::SchedulingControl && !vm;
            if needs_target && !self.component_exists(capability.target) {
                return Err(SpecError::BadComponentIndex {
                    table: "capability",
                    index,
                });
            }
            // A server learns its callers by badge (0 is a signal), and a
            // component cannot call itself (it would wait for itself).
            if kind == CapabilityKind::Endpoint
                && (capability.badge == 0 || capability.target == capability.holder)
            {
                return Err(SpecError::BadField {
                    table: "capability",
                    index,
                    field: "endpoint",
                });
            }
        }
        for (index, queue) in self.queues.iter().enumerate() {
            let bad = |field| SpecError::BadField {
                table: "queue",
                index,
                field,
            };
            name_of(&queue.name).ok_or(SpecError::BadName {
                table: "queue",
                index,
            })?;
            if !self.component_exists(queue.sender) || !self.component_exists(queue.receiver) {
                return Err(SpecError::BadComponentIndex {
                    table: "queue",
                    index,
                });
            }
            if queue.sender == queue.receiver {
                return Err(bad("ends"));
            }
            if queue.slot_size == 0
                || !queue.slot_size.is_multiple_of(8)
                || queue.slot_size > MAX_SLOT_SIZE
            {
                return Err(bad("slot_size"));
            }
            if !queue.slot_count.is_power_of_two() || queue.slot_count > crate::queue::MAX_SLOTS {
                return Err(bad("slot_count"));
            }
            if queue.sender_bit >= 64 || queue.receiver_bit >= 64 {
                return Err(bad("bit"));
            }
            let bytes = queue_pages(queue.slot_size, queue.slot_count) * 4096;
            if !in_user_range(queue.sender_address, bytes)
                || !in_user_range(queue.receiver_address, bytes)
            {
                return Err(bad("address"));
            }
        }
        for (index, grant) in self.port_grants.iter().enumerate() {
            if !self.component_exists(grant.component) {
                return Err(SpecError::BadComponentIndex {
                    table: "port grant",
                    index,
                });
            }
            if grant.count == 0 || u32::from(grant.first) + u32::from(grant.count) > 0x1_0000 {
                return Err(SpecError::BadField {
                    table: "port grant",
                    index,
                    field: "range",
                });
            }
            if core_port_overlap(grant.first, grant.count).is_some() {
                return Err(SpecError::BadField {
                    table: "port grant",
                    index,
                    field: "range (the core's own ports)",
                });
            }
        }
        for (index, grant) in self.memory_grants.iter().enumerate() {
            if !self.component_exists(grant.component) {
                return Err(SpecError::BadComponentIndex {
                    table: "memory grant",
                    index,
                });
            }
            if grant.kind == MemoryKind::GuestHints as u32 {
                // `physical` is a VM's index.
                if grant.physical >= self.vms.len() as u64
                    || grant.size != 4096
                    || grant.address % 4096 != 0
                {
                    return Err(SpecError::BadField {
                        table: "memory grant",
                        index,
                        field: "guest-hints page (VM index, size or address)",
                    });
                }
                continue;
            }
            let aligned =
                grant.physical % 4096 == 0 && grant.size % 4096 == 0 && grant.address % 4096 == 0;
            if !aligned || grant.size == 0 || grant.physical.checked_add(grant.size).is_none() {
                return Err(SpecError::BadField {
                    table: "memory grant",
                    index,
                    field: "range",
                });
            }
            let bad_dma = |field| SpecError::BadField {
                table: "memory grant",
                index,
                field,
            };
            match MemoryKind::from_u32(grant.kind) {
                None => return Err(bad_dma("kind")),
                Some(MemoryKind::Device) => {}
                Some(MemoryKind::Dma | MemoryKind::Dma32) => {
                    if grant.physical != 0 || grant.size > MAX_DMA_BYTES {
                        return Err(bad_dma("DMA buffer (physical address or size)"));
                    }
                    continue;
                }
                Some(MemoryKind::GuestHints) => continue,
            }
            if core_device_overlap(grant.physical, grant.size).is_some() {
                return Err(SpecError::BadField {
                    table: "memory grant",
                    index,
                    field: "range (the core's own device pages)",
                });
            }
        }
        for (index, grant) in self.interrupt_grants.iter().enumerate() {
            if !self.component_exists(grant.component) {
                return Err(SpecError::BadComponentIndex {
                    table: "interrupt grant",
                    index,
                });
            }
            if grant.line >= INTERRUPT_LINES || grant.bit >= 64 {
                return Err(SpecError::BadField {
                    table: "interrupt grant",
                    index,
                    field: "line/bit",
                });
            }
            if Wiring::from_u32(grant.wiring).is_none()
                || (grant.owner != NONE && !self.component_exists(grant.owner))
            {
                return Err(SpecError::BadField {
                    table: "interrupt grant",
                    index,
                    field: "wiring/owner",
                });
            }
            // A line goes to one component.
            if self.interrupt_grants[..index]
                .iter()
                .any(|earlier| earlier.line == grant.line)
            {
                return Err(SpecError::BadField {
                    table: "interrupt grant",
                    index,
                    field: "line (granted twice)",
                });
            }
        }
        self.check_pci()?;
        self.check_vms()
    }

    fn check_pci(&self) -> Result<(), SpecError> {
        for (index, pci) in self.pci_devices.iter().enumerate() {
            let bad = |field| SpecError::BadField {
                table: "pci device",
                index,
                field,
            };
            if !self.component_exists(pci.component) {
                return Err(SpecError::BadComponentIndex {
                    table: "pci device",
                    index,
                });
            }
            if self.pci_devices[..index]
                .iter()
                .any(|earlier| earlier.component == pci.component)
            {
                return Err(bad("component (given two functions)"));
            }
            if pci.bars >= 1 << 6 || pci.window % 4096 != 0 {
                return Err(bad("bars/window"));
            }
            let msi_end = pci.msi_first_line.checked_add(pci.msi_vectors);
            if pci.msi_vectors > 0
                && (pci.msi_first_line < FIRST_MSI_LINE
                    || msi_end.is_none_or(|end| end > INTERRUPT_LINES))
            {
                return Err(bad("msi lines"));
            }
        }
        Ok(())
    }

    fn check_vms(&self) -> Result<(), SpecError> {
        for (index, vm) in self.vms.iter().enumerate() {
            let bad = |field| SpecError::BadField {
                table: "vm",
                index,
                field,
            };
            let name = name_of(&vm.name).ok_or(SpecError::BadName { table: "vm", index })?;
            let clash = self.vms[..index]
                .iter()
                .any(|other| name_of(&other.name) == Some(name))
                || self
                    .components
                    .iter()
                    .any(|component| name_of(&component.name) == Some(name));
            if clash || name == "core" || name.contains('.') {
                return Err(SpecError::BadName { table: "vm", index });
            }
            name_of(&vm.image).ok_or(SpecError::BadName {
                table: "vm image",
                index,
            })?;
            if !self.component_exists(vm.switcher) {
                return Err(SpecError::BadComponentIndex { table: "vm", index });
            }
            if self.vms[..index]
                .iter()
                .any(|other| other.switcher == vm.switcher)
            {
                return Err(bad("switcher"));
            }
            if crate::vcpu::EntryMode::from_u32(vm.entry).is_none() {
                return Err(bad("entry"));
            }
            if vm.memory_bytes == 0
                || !vm.memory_bytes.is_multiple_of(4096)
                || vm.memory_bytes > MAX_GUEST_MEMORY
            {
                return Err(bad("memory_bytes"));
            }
            if !in_user_range(vm.memory_address, vm.memory_bytes) {
                return Err(bad("memory_address"));
            }
            if !in_user_range(vm.state_address, 4096) {
                return Err(bad("state_address"));
            }
            // The image's size is known only at load; bound it by the largest
            // guest it could fill.
            if !in_user_range(vm.image_address, MAX_GUEST_MEMORY) {
                return Err(bad("image_address"));
            }
        }
        Ok(())
    }

    /// The VM run by component `switcher`, if any.
    pub fn vm_of(&self, switcher: usize) -> Option<(usize, &'a VmSpec)> {
        self.vms
            .iter()
            .enumerate()
            .find(|(_, vm)| vm.switcher as usize == switcher)
    }

    /// The capabilities of component `index`.
    pub fn capabilities_of(&self, index: usize) -> &'a [CapabilitySpec] {
        let component = &self.components[index];
        let first = component.capability_first as usize;
        &self.capabilities[first..first + component.capability_count as usize]
    }
}

/// Serialises a spec (host side). Records are written in the order given;
/// [`Spec::parse`] of the result checks them.
#[cfg(feature = "alloc")]
#[derive(Default)]
pub struct SpecBuilder {
    pub components: alloc::vec::Vec<ComponentSpec>,
    pub queues: alloc::vec::Vec<QueueSpec>,
    pub capabilities: alloc::vec::Vec<CapabilitySpec>,
    pub port_grants: alloc::vec::Vec<PortGrant>,
    pub memory_grants: alloc::vec::Vec<MemoryGrant>,
    pub interrupt_grants: alloc::vec::Vec<InterruptGrant>,
    pub vms: alloc::vec::Vec<VmSpec>,
    pub pci_devices: alloc::vec::Vec<PciSpec>,
    pub scheduling_controller: Option<u32>,
    pub interrupt_forwarder: Option<u32>,
}

#[cfg(feature = "alloc")]
impl ComponentSpec {
    /// A started component running the program of its own name, with no
    /// supervisor, small settings and capabilities
    /// `capability_first..+capability_count`: for tests that build specs.
    pub fn example(name: &str, capability_first: u32, capability_count: u32) -> Self {
        Self {
            name: name_field(name),
            program: name_field(name),
            args: [0; 64],
            args_len: 0,
            priority: 10,
            budget_us: 10_000,
            period_us: 10_000,
            stack_pages: 16,
            memory_pages: 1024,
            supervisor: NONE,
            start: 1,
            max_restarts: 3,
            restart_backoff_ms: 10,
            fault_bit: 0,
            capability_first,
            capability_count,
            watchdog_ms: 0,
        }
    }
}

#[cfg(feature = "alloc")]
impl SpecBuilder {
    /// The spec's bytes.
    pub fn finish(&self) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0u8; size_of::<SpecHeader>()];
        fn put<T: IntoBytes + Immutable>(out: &mut alloc::vec::Vec<u8>, records: &[T]) -> Table {
            while !out.len().is_multiple_of(8) {
                out.push(0);
            }
            let offset = out.len() as u32;
            for record in records {
                out.extend_from_slice(record.as_bytes());
            }
            Table {
                offset,
                count: records.len() as u32,
            }
        }
        let components = put(&mut out, &self.components);
        let queues = put(&mut out, &self.queues);
        let capabilities = put(&mut out, &self.capabilities);
        let port_grants = put(&mut out, &self.port_grants);
        let memory_grants = put(&mut out, &self.memory_grants);
        let interrupt_grants = put(&mut out, &self.interrupt_grants);
        let vms = put(&mut out, &self.vms);
        let pci_devices = put(&mut out, &self.pci_devices);
        let header = SpecHeader {
            magic: SPEC_MAGIC,
            version: SPEC_VERSION,
            total_size: out.len() as u32,
            components,
            queues,
            capabilities,
            port_grants,
            memory_grants,
            interrupt_grants,
            vms,
            pci_devices,
            scheduling_controller: self.scheduling_controller.unwrap_or(NONE),
            interrupt_forwarder: self.interrupt_forwarder.unwrap_or(NONE),
        };
        out[..size_of::<SpecHeader>()].copy_from_slice(header.as_bytes());
        out
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn component(name: &str, capability_first: u32, capability_count: u32) -> ComponentSpec {
        ComponentSpec::example(name, capability_first, capability_count)
    }

    fn sample() -> SpecBuilder {
        let mut spec = SpecBuilder::default();
        spec.components.push(component("ping", 0, 1));
        spec.components.push(component("pong", 1, 1));
        spec.components[1].supervisor = 0;
        for (holder, target) in [(0, 1), (1, 0)] {
            spec.capabilities.push(CapabilitySpec {
                name: name_field("peer.notify"),
                holder,
                kind: CapabilityKind::Notification as u32,
                target,
                reserved: 0,
                badge: 1 << 3,
            });
        }
        spec.queues.push(QueueSpec {
            name: name_field("requests"),
            sender: 0,
            receiver: 1,
            slot_size: 64,
            slot_count: 256,
            sender_address: 0x10_0000_0000,
            receiver_address: 0x10_0000_0000,
            receiver_bit: 3,
            sender_bit: 3,
        });
        spec.port_grants.push(PortGrant {
            component: 1,
            first: 0x2f8,
            count: 8,
        });
        spec
    }

    #[test]
    fn wiring_resolves_by_line() {
        assert_eq!(Wiring::Default.resolve(8), Wiring::EdgeHigh);
        assert_eq!(Wiring::Default.resolve(16), Wiring::LevelLow);
        assert_eq!(Wiring::LevelHigh.resolve(8), Wiring::LevelHigh);
        assert!(Wiring::LevelLow.level() && Wiring::LevelLow.active_low());
        assert!(!Wiring::EdgeHigh.level() && !Wiring::EdgeHigh.active_low());
        for value in 0..5 {
            assert_eq!(Wiring::from_u32(value).map(|w| w as u32), Some(value));
        }
        assert_eq!(Wiring::from_u32(5), None);
    }

    #[test]
    fn round_trip() {
        let bytes = sample().finish();
        let spec = Spec::parse(&bytes).unwrap();
        assert_eq!(spec.components.len(), 2);
        assert_eq!(name_of(&spec.components[1].name), Some("pong"));
        assert_eq!(spec.capabilities_of(1)[0].target, 0);
        assert_eq!(spec.queues[0].slot_count, 256);
        assert_eq!(spec.port_grants[0].first, 0x2f8);
        assert_eq!(spec.header.scheduling_controller, NONE);
    }

    #[test]
    fn refuses_inconsistent_specs() {
        let check = |mutate: &dyn Fn(&mut SpecBuilder), expected: SpecError| {
            let mut spec = sample();
            mutate(&mut spec);
            assert_eq!(Spec::parse(&spec.finish()).unwrap_err(), expected);
        };
        check(
            &|s| s.components[1].name = name_field("ping"),
            SpecError::BadName {
                table: "component",
                index: 1,
            },
        );
        check(
            &|s| s.components[1].name = name_field("core"),
            SpecError::BadName {
                table: "component",
                index: 1,
            },
        );
        check(
            &|s| s.components[0].supervisor = 0,
            SpecError::BadComponentIndex {
                table: "component supervisor",
                index: 0,
            },
        );
        check(
            &|s| {
                for component in [0, 1] {
                    s.interrupt_grants.push(InterruptGrant {
                        component,
                        line: 4,
                        bit: 9,
                        wiring: 0,
                        owner: NONE,
                        reserved: 0,
                    });
                }
            },
            SpecError::BadField {
                table: "interrupt grant",
                index: 1,
                field: "line (granted twice)",
            },
        );
        check(
            &|s| {
                s.interrupt_grants.push(InterruptGrant {
                    component: 0,
                    line: 8,
                    bit: 9,
                    wiring: 5,
                    owner: NONE,
                    reserved: 0,
                });
            },
            SpecError::BadField {
                table: "interrupt grant",
                index: 0,
                field: "wiring/owner",
            },
        );
        let dma = |kind: u32, physical: u64, size: u64| {
            move |s: &mut SpecBuilder| {
                s.memory_grants.push(MemoryGrant {
                    component: 0,
                    kind,
                    physical,
                    size,
                    address: 0x1000_0000_0000,
                })
            }
        };
        let bad_dma = SpecError::BadField {
            table: "memory grant",
            index: 0,
            field: "DMA buffer (physical address or size)",
        };
        check(&dma(MemoryKind::Dma as u32, 0x1000, 4096), bad_dma);
        check(
            &dma(MemoryKind::Dma32 as u32, 0, MAX_DMA_BYTES + 4096),
            bad_dma,
        );
        check(
            &dma(4, 0, 4096),
            SpecError::BadField {
                table: "memory grant",
                index: 0,
                field: "kind",
            },
        );
        // A guest-hints page names a VM of the spec (it has none) and is
        // one page.
        let bad_hints = SpecError::BadField {
            table: "memory grant",
            index: 0,
            field: "guest-hints page (VM index, size or address)",
        };
        check(&dma(MemoryKind::GuestHints as u32, 0, 4096), bad_hints);
        check(
            &|s| s.interrupt_forwarder = Some(9),
            SpecError::BadComponentIndex {
                table: "interrupt forwarder",
                index: 0,
            },
        );
        check(
            &|s| s.components[0].supervisor = 7,
            SpecError::BadComponentIndex {
                table: "component supervisor",
                index: 0,
            },
        );
        check(
            &|s| s.components[0].budget_us = 20_000,
            SpecError::BadField {
                table: "component",
                index: 0,
                field: "budget/period",
            },
        );
        // Longer than SchedulingConfigure accepts: the same limit at boot.
        check(
            &|s| s.components[0].period_us = crate::syscall::MAX_PERIOD_US as u32 + 1,
            SpecError::BadField {
                table: "component",
                index: 0,
                field: "budget/period",
            },
        );
        check(
            &|s| s.components[0].capability_count = 2,
            SpecError::BadCapabilityRange { component: 0 },
        );
        check(
            &|s| s.capabilities[0].holder = 1,
            SpecError::BadCapabilityRange { component: 0 },
        );
        check(
            &|s| s.capabilities[0].kind = 99,
            SpecError::BadCapabilityKind { index: 0 },
        );
        let endpoint = |badge: u64, target: u32| {
            move |s: &mut SpecBuilder| {
                s.capabilities[0].kind = CapabilityKind::Endpoint as u32;
                s.capabilities[0].badge = badge;
                s.capabilities[0].target = target;
            }
        };
        let bad_endpoint = SpecError::BadField {
            table: "capability",
            index: 0,
            field: "endpoint",
        };
        // A caller with no name, and a component calling itself.
        check(&endpoint(0, 1), bad_endpoint);
        check(&endpoint(1, 0), bad_endpoint);
        check(
            &|s| s.capabilities[0].target = 5,
            SpecError::BadComponentIndex {
                table: "capability",
                index: 0,
            },
        );
        check(
            &|s| s.queues[0].receiver = 0,
            SpecError::BadField {
                table: "queue",
                index: 0,
                field: "ends",
            },
        );
        check(
            &|s| s.queues[0].slot_count = 100,
            SpecError::BadField {
                table: "queue",
                index: 0,
                field: "slot_count",
            },
        );
        check(
            &|s| s.queues[0].slot_size = 12,
            SpecError::BadField {
                table: "queue",
                index: 0,
                field: "slot_size",
            },
        );
        check(
            &|s| s.queues[0].sender = 9,
            SpecError::BadComponentIndex {
                table: "queue",
                index: 0,
            },
        );
        let bad_address = SpecError::BadField {
            table: "queue",
            index: 0,
            field: "address",
        };
        check(&|s| s.queues[0].sender_address = 0x1000, bad_address);
        check(
            &|s| s.queues[0].receiver_address = 0xffff_8000_0000_0000,
            bad_address,
        );
        check(
            &|s| s.queues[0].receiver_address = crate::STACK_TOP - 4096,
            bad_address,
        );
        check(
            &|s| s.port_grants[0].first = 0x3fc,
            SpecError::BadField {
                table: "port grant",
                index: 0,
                field: "range (the core's own ports)",
            },
        );
        assert_eq!(core_port_overlap(0x60, 1), None);
        assert_eq!(
            core_port_overlap(0x3f0, 9),
            Some("COM1, the core's console")
        );
        assert_eq!(core_port_overlap(0x3f0, 8), None);
        assert_eq!(core_port_overlap(0x43, 0x1e), Some("the PIT"));
        check(
            &|s| s.port_grants[0].count = 0,
            SpecError::BadField {
                table: "port grant",
                index: 0,
                field: "range",
            },
        );
        check(
            &|s| s.scheduling_controller = Some(4),
            SpecError::BadComponentIndex {
                table: "scheduling controller",
                index: 0,
            },
        );
    }

    /// `sample()` plus VM `guest` run by `ping`, which holds its VMCS and
    /// vCPU capabilities, and `pong` poking it (the addresses capdl uses).
    fn vm_sample() -> SpecBuilder {
        let mut spec = sample();
        spec.vms.push(VmSpec {
            name: name_field("guest"),
            image: name_field("vm-hello"),
            switcher: 0,
            entry: crate::vcpu::EntryMode::Long as u32,
            memory_bytes: 2 << 20,
            memory_address: 0x0000_6000_0000_0000,
            image_address: 0x0000_6800_0000_0000,
            state_address: 0x0000_7000_0000_0000,
        });
        let capability = |name: &str, holder: u32, kind: CapabilityKind| CapabilitySpec {
            name: name_field(name),
            holder,
            kind: kind as u32,
            target: 0,
            reserved: 0,
            badge: 0,
        };
        spec.capabilities
            .insert(1, capability("guest.vmcs", 0, CapabilityKind::Vmcs));
        spec.capabilities
            .insert(2, capability("guest.vcpu", 0, CapabilityKind::Vcpu));
        spec.capabilities
            .push(capability("guest.vcpu", 1, CapabilityKind::Vcpu));
        spec.components[0].capability_count = 3;
        spec.components[1].capability_first = 3;
        spec.components[1].capability_count = 2;
        spec
    }

    #[test]
    fn round_trip_with_a_vm() {
        let bytes = vm_sample().finish();
        let spec = Spec::parse(&bytes).unwrap();
        assert_eq!(spec.vms.len(), 1);
        assert_eq!(name_of(&spec.vms[0].name), Some("guest"));
        assert_eq!(name_of(&spec.vms[0].image), Some("vm-hello"));
        assert_eq!(spec.vm_of(0).map(|(index, _)| index), Some(0));
        assert!(spec.vm_of(1).is_none());
        let kinds: alloc::vec::Vec<_> = spec
            .capabilities_of(0)
            .iter()
            .map(|c| CapabilityKind::from_u32(c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                Some(CapabilityKind::Notification),
                Some(CapabilityKind::Vmcs),
                Some(CapabilityKind::Vcpu)
            ]
        );
        assert_eq!(spec.capabilities_of(1)[1].target, 0);
    }

    #[test]
    fn refuses_inconsistent_vms() {
        let check = |mutate: &dyn Fn(&mut SpecBuilder), expected: SpecError| {
            let mut spec = vm_sample();
            mutate(&mut spec);
            assert_eq!(Spec::parse(&spec.finish()).unwrap_err(), expected);
        };
        let bad = |index, field| SpecError::BadField {
            table: "vm",
            index,
            field,
        };
        check(&|s| s.vms[0].entry = 2, bad(0, "entry"));
        check(
            &|s| {
                let mut second = s.vms[0];
                second.name = name_field("other");
                s.vms.push(second);
            },
            bad(1, "switcher"),
        );
        check(
            &|s| {
                let mut second = s.vms[0];
                second.name = name_field("guest");
                second.switcher = 1;
                s.vms.push(second);
            },
            SpecError::BadName {
                table: "vm",
                index: 1,
            },
        );
        check(
            &|s| s.vms[0].name = name_field("pong"),
            SpecError::BadName {
                table: "vm",
                index: 0,
            },
        );
        check(
            &|s| s.vms[0].name = name_field("core"),
            SpecError::BadName {
                table: "vm",
                index: 0,
            },
        );
        check(
            &|s| s.vms[0].image = [0; 32],
            SpecError::BadName {
                table: "vm image",
                index: 0,
            },
        );
        check(
            &|s| s.vms[0].switcher = 2,
            SpecError::BadComponentIndex {
                table: "vm",
                index: 0,
            },
        );
        check(&|s| s.vms[0].memory_bytes = 0, bad(0, "memory_bytes"));
        check(&|s| s.vms[0].memory_bytes = 4097, bad(0, "memory_bytes"));
        check(
            &|s| s.vms[0].memory_bytes = MAX_GUEST_MEMORY + 4096,
            bad(0, "memory_bytes"),
        );
        check(
            &|s| s.vms[0].memory_address += 0x800,
            bad(0, "memory_address"),
        );
        check(
            &|s| s.vms[0].memory_address = 0x1000,
            bad(0, "memory_address"),
        );
        check(
            &|s| s.vms[0].memory_address = crate::STACK_TOP - 4096,
            bad(0, "memory_address"),
        );
        check(&|s| s.vms[0].image_address += 8, bad(0, "image_address"));
        check(
            &|s| s.vms[0].image_address = crate::STACK_TOP - (1 << 29),
            bad(0, "image_address"),
        );
        check(&|s| s.vms[0].state_address += 1, bad(0, "state_address"));
        check(
            &|s| s.vms[0].state_address = crate::STACK_TOP,
            bad(0, "state_address"),
        );
        check(
            &|s| s.capabilities[1].target = 1,
            SpecError::BadField {
                table: "capability",
                index: 1,
                field: "vm",
            },
        );
        check(
            &|s| s.vms.clear(),
            SpecError::BadField {
                table: "capability",
                index: 1,
                field: "vm",
            },
        );
        let mut many = vm_sample();
        for index in 0..MAX_VMS {
            let mut vm = many.vms[0];
            vm.name = name_field(&alloc::format!("vm{index}"));
            many.vms.push(vm);
        }
        assert_eq!(
            Spec::parse(&many.finish()).unwrap_err(),
            SpecError::BadTable("vm")
        );
    }

    #[test]
    fn never_panics_on_noise_in_a_spec_with_a_vm() {
        let bytes = vm_sample().finish();
        for len in 0..bytes.len() {
            let _ = Spec::parse(&bytes[..len]);
        }
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] = value;
                let _ = Spec::parse(&bad);
            }
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let bytes = sample().finish();
        for len in 0..bytes.len() {
            let _ = Spec::parse(&bytes[..len]);
        }
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] = value;
                let _ = Spec::parse(&bad);
            }
        }
    }
}
