//! The start-information page.
//!
//! At entry a component finds, at [`crate::START_INFO_ADDRESS`] (also passed
//! in `rdi`), one read-only page that tells it who it is — its name,
//! argument string and generation — and what it was given: every
//! capability handle, queue end, incoming notification bit, interrupt line
//! and device grant, each as a named [`Resource`]. The core writes it at
//! every (re)start; the component only reads it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `b"MVSTART\0"` as a little-endian word.
pub const START_MAGIC: u64 = u64::from_le_bytes(*b"MVSTART\0");
/// The most resources the page lists.
pub const MAX_RESOURCES: usize = 48;

/// What a [`Resource`] is.
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
            _ => return None,
        })
    }
}

/// One named thing a component was given.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Resource {
    pub name: [u8; 32],
    /// A [`ResourceKind`].
    pub kind: u32,
    pub bit: u32,
    pub handle: u64,
    pub address: u64,
    pub size: u64,
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
            .find(|r| r.kind == kind as u32 && crate::spec::name_of(&r.name) == Some(name))
    }
}

fn bounded_str(bytes: &[u8], len: u32) -> &str {
    bytes
        .get(..len as usize)
        .and_then(|b| core::str::from_utf8(b).ok())
        .unwrap_or("")
}
