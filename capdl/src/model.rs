//! A checked system: the objects of a valid description, with names
//! resolved to indices and defaults applied.
//!
//! Values of these types exist only after every check in `crate::check`
//! passed, so every index is in range, every limit of the boot spec holds
//! and [`crate::System::lower`] cannot fail. Component `i` is the `i`-th
//! component in declaration order (see `docs/CAPDL.md`), and the same index
//! is its index in the boot spec. The [`Layout`] holds the lowering
//! decisions that can fail (notification bits, capability tables, queue and
//! device addresses); it is computed while checking so that overflowing a
//! limit is reported like any other error.

use microvisor_abi::spec::CapabilityKind;
use microvisor_abi::vcpu::EntryMode;

pub use crate::raw::Start;

/// A checked system description.
#[derive(Clone, Debug)]
pub struct System {
    /// The file the system was loaded from, as named.
    pub root: String,
    pub description: String,
    pub components: Vec<Component>,
    pub queues: Vec<Queue>,
    pub notifications: Vec<Notification>,
    /// Synchronous calls (`[calls.NAME]`), in declaration order.
    pub calls: Vec<Call>,
    /// Virtual machines; VM `i` is record `i` of the spec's VM table.
    pub vms: Vec<Vm>,
    /// The component holding the scheduling-control capability.
    pub scheduling_controller: Option<usize>,
    /// The component every device interrupt line is delivered to, which
    /// passes each on to the driver that lists it.
    pub interrupt_forwarder: Option<usize>,
    /// Disks the emulator attaches.
    pub disks: Vec<MachineDisk>,
    /// NICs the emulator attaches (at most one), after the disks.
    pub nics: Vec<MachineNic>,
    /// Virtual networks (`[networks.NAME]`), in declaration order.
    pub networks: Vec<Network>,
    /// `[test]`: who may inject faults into whom (tests only).
    pub test: Option<FaultInjection>,
    pub layout: Layout,
}

/// A system's `[test]` table: the one component that may inject faults,
/// and the components it may inject into. Each target is one
/// [`CapabilityKind::Injection`] capability of the injector, named after
/// the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultInjection {
    pub injector: usize,
    /// Component indices, in the order `targets` lists them.
    pub targets: Vec<usize>,
}

/// A component: one program in its own address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    /// The boot-image entry (a crate under `components/`) holding its program.
    pub program: String,
    pub args: String,
    /// 0..=255; higher runs first.
    pub priority: u8,
    /// Scheduling-context budget per period, in microseconds.
    pub budget_us: u32,
    pub period_us: u32,
    pub stack_bytes: u64,
    /// Segments and stack together.
    pub memory_bytes: u64,
    pub start: Start,
    pub supervisor: Option<usize>,
    pub max_restarts: u32,
    pub restart_backoff_ms: u32,
    /// The supervisor's watchdog in milliseconds (0: none).
    pub watchdog_ms: u32,
    /// Components whose consumed time this one may read.
    pub observe: Vec<usize>,
    pub ports: Vec<PortGrant>,
    pub mmio: Vec<MmioGrant>,
    /// DMA buffers the core allocates.
    pub dma: Vec<DmaGrant>,
    /// The PCI function it drives.
    pub pci: Option<PciGrant>,
    /// Interrupt lines delivered to this component (through the
    /// interrupt forwarder, but the console's).
    pub interrupts: Vec<LineGrant>,
    /// Tests only: the defect the build tool puts into this component's
    /// ELF before packing (`corrupt` in a `[[component]]` entry). The
    /// damaged copy is its own boot-image entry ([`Component::image_entry`]).
    pub corrupt: Option<String>,
}

impl Component {
    /// The boot-image entry holding this component's program (the spec's
    /// `program` field): the program's name, or, for a corrupted program,
    /// the component's own name, so that the damaged copy does not replace
    /// the program other components run.
    pub fn image_entry(&self) -> &str {
        match self.corrupt {
            Some(_) => &self.name,
            None => &self.program,
        }
    }
}

/// An inclusive range of I/O ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortGrant {
    pub first: u16,
    pub last: u16,
}

/// A DMA buffer: physically contiguous zeroed memory the core chooses,
/// below 4 GiB when `below_4g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaGrant {
    pub size: u64,
    pub below_4g: bool,
}

/// A PCI function a driver names; its MSI vectors are interrupt lines
/// `msi_first_line ..` (also in the component's `interrupts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciGrant {
    pub vendor: u16,
    pub device: u16,
    /// `bus << 8 | device << 3 | function`, when it must be that one.
    pub address: Option<u32>,
    /// Bit n: map BAR n; 0: every memory BAR.
    pub bars: u32,
    pub msi: u32,
    pub msi_first_line: u32,
}

/// A disk the emulator attaches (QEMU's virtio-blk-pci, modern): a fresh
/// zeroed image of `size`, or a copy of `image`. With `files`, the fresh
/// image holds a VMKFS file system the build tool makes, with those virtual
/// disks and redo logs in it (`[disks.NAME]` tables whose store needs its
/// image made: `from`, `base`, `read_only` or no `vm`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineDisk {
    pub size: Option<u64>,
    pub image: Option<std::path::PathBuf>,
    /// Disks first, then the redo logs over them.
    pub files: Vec<StoreFile>,
}

/// A NIC the emulator attaches: QEMU's `virtio-net-pci` (1af4:1041,
/// modern only) on the network `backend` gives, with the MAC address
/// `mac`. The ring-3 driver of the card (program `virtio-net`) is a
/// network's uplink ([`Uplink`]); in exclusive mode `mac` is the one VM
/// NIC's MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineNic {
    pub backend: NicBackend,
    pub mac: [u8; 6],
}

impl MachineNic {
    /// Its MAC address as `xx:xx:xx:xx:xx:xx`.
    pub fn mac_text(&self) -> String {
        net_api::MacText(self.mac).to_string()
    }
}

/// What a [`MachineNic`] is connected to on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicBackend {
    /// QEMU's user-mode network (slirp): the guest side is 10.0.2.0/24,
    /// the gateway 10.0.2.2 answers ping.
    User,
}

impl NicBackend {
    /// The name the system file uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::User => "user",
        }
    }
}

/// The MAC address of a [`MachineNic`] whose `[machine]` entry gives none
/// (QEMU's own default).
pub const DEFAULT_NIC_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A file the build tool makes in a machine disk's VMKFS file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreFile {
    pub name: String,
    pub kind: StoreFileKind,
}

/// What a [`StoreFile`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreFileKind {
    /// A preallocated virtual disk of `size` bytes: zeroed, or its first
    /// bytes from the file `from`.
    Disk {
        size: u64,
        from: Option<std::path::PathBuf>,
    },
    /// A copy-on-write redo log over the disk `base`.
    RedoLog { base: String },
}

/// A virtual network: a network bridge switching Ethernet frames between
/// the NICs of its member VMs. Each NIC is the queue pair `NIC-tx` (from
/// the VM's world switcher to the bridge) and `NIC-rx` (back), declared in
/// [`System::queues`] like any other queue; an uplink is the pair `N-C-in`
/// (from its driver `C` to the bridge) and `N-C-out` (back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// The component running the bridge.
    pub bridge: usize,
    /// Slots of each of its queues: frames in flight each way per NIC.
    pub slots: u32,
    /// One per member VM, in the order `members` lists them.
    pub nics: Vec<Nic>,
    /// The machine NIC's driver, which connects the network to the
    /// outside.
    pub uplink: Option<Uplink>,
}

/// A network's uplink: the driver of the machine's NIC, a port of the
/// bridge like a VM's NIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// The component running the driver (program `virtio-net`).
    pub component: usize,
    /// `NETWORK-COMPONENT`, the stem of its queues' names.
    pub name: String,
    pub mode: UplinkMode,
    /// The card's MAC address (in exclusive mode the member NIC's).
    pub mac: [u8; 6],
}

pub use crate::raw::UplinkMode;

/// A VM's NIC on a virtual network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// `NETWORK-VM`, the stem of its queues' names.
    pub name: String,
    /// The VM it belongs to (its index in [`System::vms`]).
    pub vm: usize,
    /// Its MAC address, derived from its name (`net_api::mac_of`: locally
    /// administered, unicast).
    pub mac: [u8; 6],
}

/// An interrupt line and how its device drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineGrant {
    pub line: u32,
    pub wiring: microvisor_abi::spec::Wiring,
}

/// A device memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioGrant {
    pub physical: u64,
    pub size: u64,
}

/// A one-way ring of fixed-size slots from `sender` to `receiver`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub sender: usize,
    pub receiver: usize,
    pub slot_size: u32,
    pub slots: u32,
    /// The queue on which the sender waits for replies (a call path).
    pub reply: Option<usize>,
}

/// A one-way doorbell: `from` may signal one bit in `to`'s word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub name: String,
    pub from: usize,
    pub to: usize,
}

/// A synchronous call: `client` holds an endpoint capability, named after
/// the call, with which it calls `server` (`Syscall::Call`); the server
/// answers with `Syscall::ReplyWait` and tells its clients apart by the
/// badge ([`Layout::call_badges`]). At most one call per (client, server)
/// pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub client: usize,
    pub server: usize,
}

pub use crate::raw::GuestKind;

/// A virtual machine: one vCPU run by the thread of its world switcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    /// The component that runs it (its scheduling context is the VM's).
    pub switcher: usize,
    /// The guest image's name (`hello` for `test-vms/hello`); the boot-image
    /// entry is [`Vm::image_entry`].
    pub image: String,
    /// Guest-physical memory in bytes (whole pages, at most 1 GiB).
    pub memory_bytes: u64,
    pub entry: EntryMode,
    /// Components holding a capability to poke the vCPU, in the order
    /// written.
    pub poke: Vec<usize>,
    /// For an unmodified guest (`kernel = ...`): its files and command
    /// line, which the build tool packs as a guest bundle under
    /// [`Vm::image_entry`] (then [`Vm::image`] is the VM's name).
    pub kernel: Option<KernelGuest>,
    /// The system console's input goes to this VM: its switcher is granted
    /// the console's interrupt line
    /// ([`microvisor_abi::syscall::CONSOLE_LINE`]). At most one VM.
    pub console_input: bool,
}

/// An unmodified guest: a kernel, an optional initial RAM disk and a
/// command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGuest {
    pub kind: GuestKind,
    /// The kernel file, resolved against the directory of the system file
    /// that names it.
    pub kernel: std::path::PathBuf,
    pub initrd: Option<std::path::PathBuf>,
    pub command_line: String,
}

impl Vm {
    /// The boot-image entry holding the guest image: `vm-<image>`.
    pub fn image_entry(&self) -> String {
        guest_entry_name(&self.image)
    }
}

/// The boot-image entry name of guest image `image`: `vm-<image>`.
pub fn guest_entry_name(image: &str) -> String {
    format!("{GUEST_ENTRY_PREFIX}{image}")
}

/// Boot-image entries holding guest images start with this; component
/// names and programs may not.
pub const GUEST_ENTRY_PREFIX: &str = "vm-";

/// The boot-image entry holding the spec; no program entry may have this
/// name.
pub const SPEC_ENTRY: &str = "spec";

/// A capability as the lowering emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// The name its holder looks it up by.
    pub name: String,
    pub kind: CapabilityKind,
    /// The object it refers to: a component index (for
    /// [`CapabilityKind::Injection`] the target), a VM index for
    /// [`CapabilityKind::Vmcs`] and [`CapabilityKind::Vcpu`], `None` for
    /// scheduling control.
    pub target: Option<usize>,
    /// Notification bits, for [`CapabilityKind::Notification`]; the
    /// client's badge at its server, for [`CapabilityKind::Endpoint`].
    pub badge: u64,
}

/// Where a queue appears in its two ends' address spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePlacement {
    pub sender_address: u64,
    pub receiver_address: u64,
    /// The bit set in the receiver's word when messages arrive.
    pub receiver_bit: u32,
    /// The bit set in the sender's word when space frees up.
    pub sender_bit: u32,
    /// Pages the queue occupies (header page and slots).
    pub pages: u64,
}

/// The interrupt forwarder's notification bits for one driver's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwarderBits {
    /// Set by the core when the line fires.
    pub fired: u32,
    /// Set by the driver when it has dealt with the interrupt.
    pub acknowledged: u32,
    /// Set by the driver when it (re)starts and can take interrupts.
    pub ready: u32,
}

/// The lowering decisions: bits, capabilities, addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Per component: the bit its supervisor receives when it faults (0
    /// when it has no supervisor).
    pub fault_bits: Vec<u32>,
    /// Per queue.
    pub queues: Vec<QueuePlacement>,
    /// Per notification: the bit in the receiver's word.
    pub notification_bits: Vec<u32>,
    /// Per call: the badge its server knows the client by, the call's
    /// 1-based position among the calls to that server in declaration
    /// order (so each server's callers are 1, 2, 3, ...).
    pub call_badges: Vec<u64>,
    /// Per component, parallel to its `interrupts`: the bit set in its
    /// word when the line fires.
    pub interrupt_bits: Vec<Vec<u32>>,
    /// Per component, parallel to its `interrupts`: the forwarder's bits
    /// for the line (`None` for the console's line, which the core
    /// delivers itself).
    pub forwarder_bits: Vec<Vec<Option<ForwarderBits>>>,
    /// Per component, parallel to its `mmio`: where each region is mapped.
    pub mmio_addresses: Vec<Vec<u64>>,
    /// Per component, parallel to its `dma`: where each buffer is mapped.
    pub dma_addresses: Vec<Vec<u64>>,
    /// Per component: where its PCI function's BARs are mapped from.
    pub pci_windows: Vec<Option<u64>>,
    /// Per component: the VMs whose guest-hints pages it reads (a QoS
    /// scheduling controller reads every VM's), and where each is mapped.
    pub hints_addresses: Vec<Vec<(usize, u64)>>,
    /// Per component, its capability table in order.
    pub capabilities: Vec<Vec<Capability>>,
    /// Per component, what each used notification bit means (index = bit).
    pub bit_uses: Vec<Vec<String>>,
}

impl System {
    /// The index of the component named `name`.
    pub fn component_index(&self, name: &str) -> Option<usize> {
        self.components
            .iter()
            .position(|component| component.name == name)
    }

    /// The VM component `switcher` runs, if any.
    pub fn vm_of(&self, switcher: usize) -> Option<usize> {
        self.vms.iter().position(|vm| vm.switcher == switcher)
    }

    /// The components `supervisor` supervises, in index order.
    pub fn children(&self, supervisor: usize) -> impl Iterator<Item = usize> + '_ {
        self.components
            .iter()
            .enumerate()
            .filter(move |(_, component)| component.supervisor == Some(supervisor))
            .map(|(index, _)| index)
    }
}
