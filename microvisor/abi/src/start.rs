//! The start-information page.
//!
//! At entry a component finds, at [`crate::START_INFO_ADDRESS`] (also passed
//! in `rdi`), one read-only page that tells it who it is — its name,
//! argument string and generation — and what it was given: every
//! capability handle, queue end, incoming notification bit, caller (a
//! component that may call it, with the badge it is known by), interrupt
//! line and device grant, each as a named [`Resource`]. The core writes it
//! at every (re)start; the component only reads it.

#[cfg(test)]
use zerocopy::FromZeros;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `b"MVSTART\0"` as a little-endian word.
pub const START_MAGIC: u64 = u64::from_le_bytes(*b"MVSTART\0");
/// The most resources the page lists.
pub const MAX_RESOURCES: usize = 48;

/// What a [`Resource`] is; [`ResourceView`] says what each kind holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ResourceKind {
    /// A capability: `handle`; `size` is its [`crate::spec::CapabilityKind`].
    Capability = 1,
    /// The sending end of a queue at `address`; `handle` signals the
    /// receiver; `bit` is set in this component's word when space frees up;
    /// `size` is `slot_size | slot_count << 32`.
    QueueSend = 2,
    /// The receiving end of a queue at `address`; `handle` signals the
    /// sender; `bit` is set in this component's word when messages arrive.
    QueueReceive = 3,
    /// Bits another component may set in this component's word (`bit` is
    /// the lowest, `size` the mask), e.g. a declared notification.
    Incoming = 4,
    /// A supervised component: `handle` is the component-control
    /// capability, `bit` is set when it faults, `address` is its restart
    /// limit and `size` its initial back-off in milliseconds.
    Supervised = 5,
    /// An interrupt line (`address`) delivered as `bit`.
    Interrupt = 6,
    /// I/O ports `address .. address + size`.
    Ports = 7,
    /// Device memory at `address`, `size` bytes.
    Memory = 8,
    /// The guest-physical memory of the VM `name`, mapped at `address`
    /// (guest-physical 0), `size` bytes; `bit` is its
    /// [`crate::vcpu::EntryMode`].
    GuestMemory = 9,
    /// A read-only copy of the VM's boot image (an ELF) at `address`,
    /// `size` bytes.
    GuestImage = 10,
    /// The VM's [`crate::vcpu::VcpuState`] page at `address`.
    VcpuState = 11,
    /// A DMA buffer at `address`, `size` bytes, physically contiguous from
    /// `handle` (the address a device is given).
    Dma = 12,
    /// The PCI function the component drives: `bit` its bus address,
    /// `size` its IDs and MSI vector count, `address` and `handle` where
    /// its MSI messages go (see [`ResourceView::Pci`]).
    Pci = 13,
    /// The guest-hints page of the VM whose world switcher is `name`,
    /// mapped read-only at `address` (one page).
    GuestHints = 14,
    /// A component that may call this one
    /// ([`crate::spec::CapabilityKind::Endpoint`]), named after it: `size`
    /// is the badge [`crate::syscall::Syscall::ReplyWait`] answers for its
    /// calls (never 0).
    Caller = 15,
}

impl ResourceKind {
    /// Decodes a kind, or `None`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            1 => Self::Capability,
            2 => Self::QueueSend,
            3 => Self::QueueReceive,
            4 => Self::Incoming,
            5 => Self::Supervised,
            6 => Self::Interrupt,
            7 => Self::Ports,
            8 => Self::Memory,
            9 => Self::GuestMemory,
            10 => Self::GuestImage,
            11 => Self::VcpuState,
            12 => Self::Dma,
            13 => Self::Pci,
            14 => Self::GuestHints,
            15 => Self::Caller,
            _ => return None,
        })
    }
}

/// One named thing a component was given, as the page stores it: a kind
/// and four fields whose meaning depends on the kind. Nothing outside this
/// module reads or writes the fields by position: [`Resource::new`] builds
/// one from its typed [`ResourceView`], and [`Resource::view`] reads it
/// back, so a field is never used for something its name does not say.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Resource {
    name: [u8; 32],
    /// A [`ResourceKind`].
    kind: u32,
    bit: u32,
    handle: u64,
    address: u64,
    size: u64,
}

/// One end of a queue: its memory, its geometry, the notification bit set
/// in this component's word when the other end acts, and the handle that
/// signals the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueEnd {
    pub address: u64,
    pub slot_size: u32,
    pub slot_count: u32,
    pub bit: u32,
    /// A notification capability handle naming the other end, or
    /// `u64::MAX` when the component holds none.
    pub signal: u64,
}

/// A component this one supervises, with the restart policy the system
/// description gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supervised {
    /// Its component-control capability handle (`u64::MAX`: none).
    pub control: u64,
    /// The bit set in the supervisor's word when it faults or exits.
    pub fault_bit: u32,
    /// Most restarts before the supervisor holds it.
    pub max_restarts: u32,
    /// The first restart's back-off, in milliseconds (it doubles).
    pub backoff_ms: u64,
    /// The watchdog: restart it when it has been busy without coming back
    /// to `Wait` this long, in milliseconds (0: no watchdog).
    pub watchdog_ms: u32,
}

/// The name of the [`ResourceView::Interrupt`] of the system console's
/// line ([`crate::syscall::CONSOLE_LINE`]): the component that holds it
/// takes console input with [`crate::syscall::Syscall::ConsoleRead`].
pub const CONSOLE_RESOURCE: &str = "console";

/// What a [`Resource`] says, typed by its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceView {
    /// A capability handle and its [`crate::spec::CapabilityKind`] number.
    Capability { handle: u64, kind: u32 },
    /// The sending end of a queue (its `bit` is set when space frees up).
    QueueSend(QueueEnd),
    /// The receiving end of a queue (its `bit` is set when messages arrive).
    QueueReceive(QueueEnd),
    /// Bits another component may set in this component's word, e.g. a
    /// declared notification.
    Incoming { mask: u64 },
    /// A supervised component.
    Supervised(Supervised),
    /// An interrupt line delivered as `bit`.
    Interrupt { line: u64, bit: u32 },
    /// I/O ports `first .. first + count`.
    Ports { first: u64, count: u64 },
    /// Device memory.
    Memory { address: u64, size: u64 },
    /// The guest-physical memory of a VM (guest-physical 0 at `address`)
    /// and its [`crate::vcpu::EntryMode`] number.
    GuestMemory { address: u64, size: u64, entry: u32 },
    /// A read-only copy of a VM's boot image (an ELF).
    GuestImage { address: u64, size: u64 },
    /// A VM's [`crate::vcpu::VcpuState`] page.
    VcpuState { address: u64 },
    /// A VM's guest-hints page, read-only (named after its world
    /// switcher).
    GuestHints { address: u64 },
    /// A component that may call this one (named after it): `badge` is
    /// what [`crate::syscall::Syscall::ReplyWait`] answers in `rdi` for
    /// its calls, nonzero and distinct among this component's callers.
    Caller { badge: u64 },
    /// A DMA buffer: mapped at `address`, `size` bytes, physically
    /// contiguous from `physical`.
    Dma {
        address: u64,
        size: u64,
        physical: u64,
    },
    /// The PCI function the component drives (`function` is `bus << 8 |
    /// device << 3 | function`). Its MSI vector k is programmed with
    /// address `msi_address` and data `msi_data + k`, and arrives as
    /// interrupt line `msi_first_line + k` (`irqN` on the start page).
    Pci {
        function: u32,
        vendor: u16,
        device: u16,
        msi_vectors: u32,
        msi_first_line: u32,
        msi_address: u64,
        msi_data: u32,
    },
}

impl ResourceView {
    /// The kind this view is stored as.
    pub const fn kind(&self) -> ResourceKind {
        match self {
            Self::Capability { .. } => ResourceKind::Capability,
            Self::QueueSend(_) => ResourceKind::QueueSend,
            Self::QueueReceive(_) => ResourceKind::QueueReceive,
            Self::Incoming { .. } => ResourceKind::Incoming,
            Self::Supervised(_) => ResourceKind::Supervised,
            Self::Interrupt { .. } => ResourceKind::Interrupt,
            Self::Ports { .. } => ResourceKind::Ports,
            Self::Memory { .. } => ResourceKind::Memory,
            Self::GuestMemory { .. } => ResourceKind::GuestMemory,
            Self::GuestImage { .. } => ResourceKind::GuestImage,
            Self::VcpuState { .. } => ResourceKind::VcpuState,
            Self::GuestHints { .. } => ResourceKind::GuestHints,
            Self::Caller { .. } => ResourceKind::Caller,
            Self::Dma { .. } => ResourceKind::Dma,
            Self::Pci { .. } => ResourceKind::Pci,
        }
    }
}

impl Resource {
    /// An unused entry (kind 0, which no view has).
    pub const EMPTY: Self = Self {
        name: [0; 32],
        kind: 0,
        bit: 0,
        handle: 0,
        address: 0,
        size: 0,
    };

    /// The entry for `view`, called `name` (cut to 32 bytes).
    pub fn new(name: &str, view: ResourceView) -> Self {
        let (bit, handle, address, size) = match view {
            ResourceView::Capability { handle, kind } => (0, handle, 0, u64::from(kind)),
            ResourceView::QueueSend(end) | ResourceView::QueueReceive(end) => (
                end.bit,
                end.signal,
                end.address,
                u64::from(end.slot_size) | (u64::from(end.slot_count) << 32),
            ),
            ResourceView::Incoming { mask } => (mask.trailing_zeros(), 0, 0, mask),
            ResourceView::Supervised(child) => (
                child.fault_bit,
                child.control,
                u64::from(child.max_restarts) | u64::from(child.watchdog_ms) << 32,
                child.backoff_ms,
            ),
            ResourceView::Interrupt { line, bit } => (bit, 0, line, 0),
            ResourceView::Ports { first, count } => (0, 0, first, count),
            ResourceView::Memory { address, size } => (0, 0, address, size),
            ResourceView::GuestMemory {
                address,
                size,
                entry,
            } => (entry, 0, address, size),
            ResourceView::GuestImage { address, size } => (0, 0, address, size),
            ResourceView::VcpuState { address } | ResourceView::GuestHints { address } => {
                (0, 0, address, crate::PAGE_SIZE)
            }
            ResourceView::Caller { badge } => (0, 0, 0, badge),
            ResourceView::Dma {
                address,
                size,
                physical,
            } => (0, physical, address, size),
            ResourceView::Pci {
                function,
                vendor,
                device,
                msi_vectors,
                msi_first_line,
                msi_address,
                msi_data,
            } => (
                function,
                u64::from(msi_data) | u64::from(msi_first_line) << 32,
                msi_address,
                u64::from(vendor) | u64::from(device) << 16 | u64::from(msi_vectors) << 32,
            ),
        };
        Self {
            name: crate::spec::name_field(name),
            kind: view.kind() as u32,
            bit,
            handle,
            address,
            size,
        }
    }

    /// The resource's name, or `None` if the field is not a valid name.
    pub fn name(&self) -> Option<&str> {
        crate::spec::name_of(&self.name)
    }

    /// The stored kind, or `None` for an unknown one.
    pub fn kind(&self) -> Option<ResourceKind> {
        ResourceKind::from_u32(self.kind)
    }

    /// What the entry says, or `None` for an unknown kind.
    pub fn view(&self) -> Option<ResourceView> {
        let (bit, handle, address, size) = (self.bit, self.handle, self.address, self.size);
        let queue_end = || QueueEnd {
            address,
            slot_size: size as u32,
            slot_count: (size >> 32) as u32,
            bit,
            signal: handle,
        };
        Some(match self.kind()? {
            ResourceKind::Capability => ResourceView::Capability {
                handle,
                kind: size as u32,
            },
            ResourceKind::QueueSend => ResourceView::QueueSend(queue_end()),
            ResourceKind::QueueReceive => ResourceView::QueueReceive(queue_end()),
            ResourceKind::Incoming => ResourceView::Incoming { mask: size },
            ResourceKind::Supervised => ResourceView::Supervised(Supervised {
                control: handle,
                fault_bit: bit,
                max_restarts: address as u32,
                backoff_ms: size,
                watchdog_ms: (address >> 32) as u32,
            }),
            ResourceKind::Interrupt => ResourceView::Interrupt { line: address, bit },
            ResourceKind::Ports => ResourceView::Ports {
                first: address,
                count: size,
            },
            ResourceKind::Memory => ResourceView::Memory { address, size },
            ResourceKind::GuestMemory => ResourceView::GuestMemory {
                address,
                size,
                entry: bit,
            },
            ResourceKind::GuestImage => ResourceView::GuestImage { address, size },
            ResourceKind::VcpuState => ResourceView::VcpuState { address },
            ResourceKind::GuestHints => ResourceView::GuestHints { address },
            ResourceKind::Caller => ResourceView::Caller { badge: size },
            ResourceKind::Dma => ResourceView::Dma {
                address,
                size,
                physical: handle,
            },
            ResourceKind::Pci => ResourceView::Pci {
                function: bit,
                vendor: size as u16,
                device: (size >> 16) as u16,
                msi_vectors: (size >> 32) as u32,
                msi_first_line: (handle >> 32) as u32,
                msi_address: address,
                msi_data: handle as u32,
            },
        })
    }
}

/// The layout of the start-information page.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_MAGIC`].
    pub magic: u64,
    /// Index of this component in the system (boot order).
    pub component_index: u32,
    /// Bytes used in `name`.
    pub name_len: u32,
    /// The component's name (UTF-8, not NUL-terminated).
    pub name: [u8; 32],
    /// Bytes used in `args`.
    pub args_len: u32,
    /// 1 at first start, one more at each restart.
    pub generation: u32,
    /// The component's argument string (UTF-8).
    pub args: [u8; 64],
    /// Entries used in `resources`.
    pub resource_count: u32,
    pub reserved: u32,
    pub resources: [Resource; MAX_RESOURCES],
    /// The time-stamp counter's rate in ticks per second, as the core
    /// calibrated it at boot (a world switcher's timers count in TSC
    /// ticks; under QEMU's `-icount shift=0` it is 10^9).
    pub tsc_hz: u64,
}

const _: () = assert!(size_of::<Resource>() == 64);
const _: () = assert!(size_of::<StartInfo>() <= 4096);

impl StartInfo {
    /// The name, or `""` if the page holds invalid UTF-8 or lengths.
    pub fn name(&self) -> &str {
        bounded_str(&self.name, self.name_len)
    }

    /// The argument string, or `""` if invalid.
    pub fn args(&self) -> &str {
        bounded_str(&self.args, self.args_len)
    }

    /// The resources listed.
    pub fn resources(&self) -> &[Resource] {
        &self.resources[..(self.resource_count as usize).min(MAX_RESOURCES)]
    }

    /// The resource called `name` of kind `kind`.
    pub fn resource(&self, name: &str, kind: ResourceKind) -> Option<&Resource> {
        self.resources()
            .iter()
            .find(|r| r.kind == kind as u32 && r.name() == Some(name))
    }

    /// Every resource with its name, read through its kind (entries of an
    /// unknown kind or with an invalid name are skipped).
    pub fn views(&self) -> impl Iterator<Item = (&str, ResourceView)> {
        self.resources()
            .iter()
            .filter_map(|r| Some((r.name()?, r.view()?)))
    }
}

fn bounded_str(bytes: &[u8], len: u32) -> &str {
    bytes
        .get(..len as usize)
        .and_then(|b| core::str::from_utf8(b).ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_view() -> [ResourceView; 16] {
        let end = QueueEnd {
            address: 0x10_0000_0000,
            slot_size: 64,
            slot_count: 256,
            bit: 5,
            signal: 0x1_0000_0003,
        };
        [
            ResourceView::Capability {
                handle: 0x2_0000_0001,
                kind: 4,
            },
            ResourceView::QueueSend(end),
            ResourceView::QueueReceive(QueueEnd { bit: 9, ..end }),
            ResourceView::Incoming { mask: 0b1100 },
            ResourceView::Supervised(Supervised {
                control: 0x1_0000_0002,
                fault_bit: 7,
                max_restarts: 3,
                backoff_ms: 10,
                watchdog_ms: 250,
            }),
            ResourceView::Interrupt { line: 11, bit: 12 },
            ResourceView::Ports {
                first: 0x3f8,
                count: 8,
            },
            ResourceView::Memory {
                address: 0xfe00_0000,
                size: 0x1000,
            },
            ResourceView::GuestMemory {
                address: 0x40_0000_0000,
                size: 1 << 20,
                entry: 1,
            },
            ResourceView::GuestImage {
                address: 0x41_0000_0000,
                size: 12_345,
            },
            ResourceView::VcpuState {
                address: 0x42_0000_0000,
            },
            ResourceView::GuestHints {
                address: 0x43_0000_0000,
            },
            ResourceView::Dma {
                address: 0x1000_0000_0000,
                size: 64 << 10,
                physical: 0x7f0_0000,
            },
            ResourceView::Pci {
                function: 0x0018,
                vendor: 0x1af4,
                device: 0x1042,
                msi_vectors: 2,
                msi_first_line: 24,
                msi_address: 0xfee0_0000,
                msi_data: 0x68,
            },
            ResourceView::Supervised(Supervised {
                control: u64::MAX,
                fault_bit: 63,
                max_restarts: u32::MAX,
                backoff_ms: u64::from(u32::MAX),
                watchdog_ms: u32::MAX,
            }),
            ResourceView::Caller { badge: 2 },
        ]
    }

    #[test]
    fn every_view_round_trips() {
        for view in every_view() {
            let resource = Resource::new("queue-1", view);
            assert_eq!(resource.view(), Some(view));
            assert_eq!(resource.kind(), Some(view.kind()));
            assert_eq!(resource.name(), Some("queue-1"));
        }
    }

    #[test]
    fn every_kind_number_decodes_and_a_caller_keeps_its_badge_in_size() {
        for view in every_view() {
            let kind = view.kind();
            assert_eq!(ResourceKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(ResourceKind::from_u32(0), None);
        assert_eq!(ResourceKind::from_u32(16), None);
        // The stored layout is ABI: kind 15, the badge in `size`.
        let caller = Resource::new("ping", ResourceView::Caller { badge: 3 });
        assert_eq!((caller.kind, caller.size), (15, 3));
        assert_eq!((caller.bit, caller.handle, caller.address), (0, 0, 0));
        let mut info = StartInfo::new_zeroed();
        info.resources[0] = Resource::new("ping", ResourceView::Incoming { mask: 1 });
        info.resources[1] = caller;
        info.resource_count = 2;
        let found = info
            .resource("ping", ResourceKind::Caller)
            .map(Resource::view);
        assert_eq!(found, Some(Some(ResourceView::Caller { badge: 3 })));
    }

    #[test]
    fn unknown_kinds_and_empty_entries_have_no_view() {
        assert_eq!(Resource::EMPTY.view(), None);
        assert_eq!(Resource::EMPTY.name(), None);
        let mut info = StartInfo::new_zeroed();
        info.resources[0] = Resource::new("a", every_view()[0]);
        info.resources[1] = Resource::EMPTY;
        info.resources[2] = Resource::new("b", every_view()[3]);
        info.resource_count = 3;
        let names: Vec<_> = info.views().map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(info.resource("b", ResourceKind::Incoming).is_some());
        assert!(info.resource("b", ResourceKind::Capability).is_none());
        // A count past the table is bounded, not trusted.
        info.resource_count = u32::MAX;
        assert_eq!(info.resources().len(), MAX_RESOURCES);
    }
}
