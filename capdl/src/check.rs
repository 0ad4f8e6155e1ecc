//! Validation: every rule a system description must satisfy, reported all
//! at once in the domain's language.
//!
//! Input is the merged [`Document`] from `crate::raw`; output is a
//! [`System`] or every error found. Checks run in passes (names, then each
//! component, then relations between components, then VMs, whose
//! scheduling becomes their switchers', then queues, the queues of virtual
//! disks and networks, calls (`[calls.NAME]`, synchronous calls through
//! endpoints) and notifications, then the layout), and a broken part is left out of later passes instead of
//! stopping them, so a typo in one queue does not hide a memory error in a
//! component. An unresolved name is reported once where it is written,
//! with a "did you mean" over the names that exist. The rules themselves
//! are listed in `docs/CAPDL.md`; each has a unit test pinning its message.

use std::collections::BTreeMap;

use microvisor_abi::PAGE_SIZE;
use microvisor_abi::image::{NameKind, is_valid_name};
use microvisor_abi::spec::{
    CapabilityKind, MAX_CAPABILITIES, MAX_CAPABILITIES_PER_COMPONENT, MAX_COMPONENTS,
    MAX_DMA_BYTES, MAX_GRANTS, MAX_GUEST_MEMORY, MAX_QUEUES, MAX_VMS, queue_pages,
};
use microvisor_abi::spec::{
    FIRST_MSI_LINE, INTERRUPT_LINES as INTERRUPT_LINES_ALL, MAX_PCI, MAX_SLOT_SIZE, Wiring,
};
use microvisor_abi::start::MAX_RESOURCES;
use microvisor_abi::syscall::{CONSOLE_LINE, MAX_PERIOD_US};
use microvisor_abi::vcpu::EntryMode;
use toml::Spanned;

use crate::Options;
use crate::diagnostic::{Diagnostic, SourceMap, Spot, file_error, non_ascii, suggest};
use crate::model::{
    Call, Capability, Component, DEFAULT_NIC_MAC, DmaGrant, FaultInjection, ForwarderBits,
    GUEST_ENTRY_PREFIX, KernelGuest, Layout, LineGrant, MachineDisk, MachineNic, MmioGrant,
    Network, Nic, NicBackend, Notification, PciGrant, PortGrant, Queue, QueuePlacement, SPEC_ENTRY,
    StoreFile, StoreFileKind, System, Uplink, UplinkMode, Vm,
};
use crate::programs::{ProgramSet, WORLD_SWITCHER};
use crate::raw::{
    Document, Entry, GuestKind, RawCall, RawComponent, RawDisk, RawNetwork, RawNic, RawPci, RawVm,
    Setting, Start, TestTable, VmEntry,
};
use crate::units::{Duration, Number, format_duration, format_size};

/// The default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// The default scheduling period (the default budget equals it).
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;
/// The default stack size.
pub const DEFAULT_STACK: u64 = 64 << 10;
/// The default memory limit (segments and stack).
pub const DEFAULT_MEMORY: u64 = 16 << 20;
/// The default restart limit.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// The default initial restart back-off.
pub const DEFAULT_BACKOFF_NS: u64 = 10_000_000;
/// The largest stack the core sets up (256 pages).
pub const MAX_STACK: u64 = 256 * PAGE_SIZE;
/// The longest restart back-off.
pub const MAX_BACKOFF_NS: u64 = 3_600_000_000_000;
/// The shortest watchdog: the supervisor polls it, and a component is
/// preempted and throttled for milliseconds without being stuck.
pub const MIN_WATCHDOG_NS: u64 = 10_000_000;
/// The longest watchdog.
pub const MAX_WATCHDOG_NS: u64 = 60_000_000_000;
/// The block store's program, which a `[disks.NAME]` table's store runs.
pub const BLOCK_STORE: &str = "block-store";
/// The program of the QoS controller: as the scheduling controller, it is
/// sent each VM's statistics.
pub const QOS: &str = "qos";
/// A disk queue's slot: one block-interface message (`block_api`'s
/// `REQUEST_BYTES`).
pub const DISK_SLOT_BYTES: u32 = 4128;
/// A disk queue's default depth.
pub const DISK_SLOTS: u32 = 16;
/// The network bridge's program, which a `[networks.NAME]` table's bridge
/// runs.
pub const NET_BRIDGE: &str = "netbridge";
/// A NIC queue's slot: one Ethernet frame message (`net_api::FRAME_BYTES`).
pub const NET_SLOT_BYTES: u32 = net_api::FRAME_BYTES as u32;
/// A NIC queue's default depth.
pub const NET_SLOTS: u32 = 64;
/// The most NICs a VM has: its world switcher shows at most four
/// virtio-net functions.
pub const MAX_NICS: usize = 4;
/// The program of a network's uplink: the ring-3 driver of the
/// machine's NIC.
pub const VIRTIO_NET: &str = "virtio-net";
/// The PCI IDs of the machine's NIC, QEMU's modern-only `virtio-net-pci`.
pub const VIRTIO_NET_PCI: (u16, u16) = (0x1af4, 0x1041);
/// The most NICs `[machine]` attaches: one uplink drives it.
pub const MAX_MACHINE_NICS: usize = 1;
/// The most slot memory one queue may have.
pub const MAX_QUEUE_BYTES: u64 = 4 << 20;
/// The most slots one queue may have: its header page holds a stamp for
/// each (`microvisor_abi::queue::MAX_SLOTS`).
pub const MAX_SLOTS: u64 = microvisor_abi::queue::MAX_SLOTS as u64;
/// The longest argument string.
pub const MAX_ARGS: usize = 64;
/// Interrupt lines are the IOAPIC's inputs 0..INTERRUPT_LINES.
pub const INTERRUPT_LINES: u64 = FIRST_MSI_LINE as u64;
/// What the device window gives one PCI function's BARs.
pub const PCI_WINDOW: u64 = 64 << 30;
/// The largest disk `[machine]` attaches.
pub const MAX_DISK_BYTES: u64 = 4 << 30;
/// Device memory lies below 2^52 (the architectural physical-address limit).
pub const PHYSICAL_LIMIT: u64 = 1 << 52;
/// Bits in a notification word.
pub const NOTIFICATION_BITS: usize = 64;
/// Where each component's queue window starts (queues are placed upwards
/// from here, a guard page after each).
pub const QUEUE_WINDOW: u64 = 0x0000_4000_0000_0000;
/// Where each component's device window starts (MMIO grants are placed
/// upwards from here, a guard page after each).
pub const DEVICE_WINDOW: u64 = 0x0000_5000_0000_0000;

/// Where a world switcher sees its VM's guest-physical memory (guest
/// address 0 is this address), up to [`MAX_GUEST_MEMORY`]. The device
/// window ends here.
pub const VM_MEMORY_ADDRESS: u64 = 0x0000_6000_0000_0000;
/// Where a world switcher sees the read-only copy of its VM's image (the
/// `vm-<image>` boot-image entry, an ELF); `Spec::parse` reserves
/// [`MAX_GUEST_MEMORY`] for it.
pub const VM_IMAGE_ADDRESS: u64 = 0x0000_6800_0000_0000;
/// Where a world switcher sees its VM's vCPU state page
/// (`microvisor_abi::vcpu::VcpuState`).
pub const VM_STATE_ADDRESS: u64 = 0x0000_7000_0000_0000;
/// The default guest-physical memory of a VM.
pub const DEFAULT_VM_MEMORY: u64 = 2 << 20;

const _: () = assert!(
    NET_SLOT_BYTES.is_multiple_of(8)
        && NET_SLOT_BYTES <= MAX_SLOT_SIZE
        && NET_SLOTS as u64 * NET_SLOT_BYTES as u64 <= MAX_QUEUE_BYTES
);
const _: () = assert!(microvisor_abi::USER_MIN < QUEUE_WINDOW && QUEUE_WINDOW < DEVICE_WINDOW);
const _: () = assert!(DEVICE_WINDOW < microvisor_abi::STACK_TOP - (1 << 40));
// The queue window cannot reach the device window: at most MAX_QUEUES
// queues of at most MAX_QUEUE_BYTES slots, each with a header and a guard page.
const _: () = assert!(
    QUEUE_WINDOW + MAX_QUEUES as u64 * (2 + MAX_QUEUE_BYTES / PAGE_SIZE) * PAGE_SIZE
        <= DEVICE_WINDOW
);
// The device window ends where the VM windows start (checked per component
// in `layout`); the VM windows do not overlap each other nor the stack.
const _: () = assert!(DEVICE_WINDOW < VM_MEMORY_ADDRESS);
const _: () = assert!(VM_MEMORY_ADDRESS + MAX_GUEST_MEMORY <= VM_IMAGE_ADDRESS);
const _: () = assert!(VM_IMAGE_ADDRESS + MAX_GUEST_MEMORY <= VM_STATE_ADDRESS);
const _: () = assert!(VM_STATE_ADDRESS + PAGE_SIZE <= microvisor_abi::STACK_TOP - MAX_STACK);
const _: () = assert!(
    VM_MEMORY_ADDRESS.is_multiple_of(PAGE_SIZE)
        && VM_IMAGE_ADDRESS.is_multiple_of(PAGE_SIZE)
        && VM_STATE_ADDRESS.is_multiple_of(PAGE_SIZE)
);
/// The longest VM name: its capability `NAME.vmcs` must fit in 32 bytes.
pub const MAX_VM_NAME: usize = 32 - ".vmcs".len();
/// The longest command line of an unmodified guest (Linux's limit on x86:
/// 2048 bytes with the NUL; `vm_platform::bundle::MAX_COMMAND_LINE`).
pub const MAX_GUEST_COMMAND_LINE: usize = 2047;
/// The longest image name: its boot-image entry `vm-NAME` must fit in 32.
pub const MAX_IMAGE_NAME: usize = 32 - GUEST_ENTRY_PREFIX.len();

/// Runs every check. `programs` lists the programs that exist.
pub fn check(
    document: Document,
    programs: &ProgramSet,
    options: &Options,
) -> Result<System, Vec<Diagnostic>> {
    let mut checker = Checker {
        sources: &document.sources,
        errors: Vec::new(),
        component_spots: Vec::new(),
        queue_spots: Vec::new(),
        call_spots: Vec::new(),
        test_spots: None,
    };
    let root = document
        .sources
        .files
        .first()
        .map(|file| file.name.clone())
        .unwrap_or_default();
    let system = checker.system(&document, programs, options, root);
    if checker.errors.is_empty() {
        Ok(system)
    } else {
        let mut errors = checker.errors;
        errors.sort_by(|a, b| {
            let file =
                |d: &Diagnostic| document.sources.files.iter().position(|f| f.name == d.file);
            (file(a), a.line, a.column).cmp(&(file(b), b.line, b.column))
        });
        Err(errors)
    }
}

struct Checker<'d> {
    sources: &'d SourceMap,
    errors: Vec<Diagnostic>,
    /// Where each component's name is written, by index.
    component_spots: Vec<Spot>,
    /// Where each checked queue's name is written, by index.
    queue_spots: Vec<Spot>,
    /// Where each checked call's name is written, by index.
    call_spots: Vec<Spot>,
    /// Where a checked `[test]` table's targets are written.
    test_spots: Option<TestSpots>,
}

/// Where a `[test]` table's `targets` are written: the list, and each
/// target kept (parallel to [`FaultInjection::targets`]).
struct TestSpots {
    list: Spot,
    targets: Vec<Spot>,
}

/// Names to indices for one kind of object.
struct Names {
    indices: BTreeMap<String, usize>,
    /// For component names: the VMs, by name, with their switchers as
    /// written, so that a VM named where a component belongs is explained.
    vms: BTreeMap<String, String>,
}

impl Names {
    /// Names of entries in declaration order.
    fn of<T>(entries: &[&Entry<T>]) -> Self {
        Self {
            indices: entries
                .iter()
                .enumerate()
                .map(|(index, entry)| (entry.name.clone(), index))
                .collect(),
            vms: BTreeMap::new(),
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.indices.get(name).copied()
    }

    /// Help for a name that is not found: it names a VM, or is close to a
    /// name that exists.
    fn help(&self, name: &str) -> Option<String> {
        if let Some(switcher) = self.vms.get(name) {
            return Some(format!(
                "'{name}' is a VM, not a component; the component that runs it is its switcher '{switcher}'"
            ));
        }
        suggest(name, self.indices.keys().map(String::as_str))
    }
}

/// The scheduling keys of a component or a VM, as written.
struct SchedulingKeys<'a> {
    priority: Option<&'a Spanned<Number>>,
    budget: Option<&'a Spanned<Duration>>,
    period: Option<&'a Spanned<Duration>>,
}

impl SchedulingKeys<'_> {
    /// Where the first key written is, with its name.
    fn first(&self) -> Option<(&'static str, std::ops::Range<usize>)> {
        [
            ("priority", self.priority.map(Spanned::span)),
            ("budget", self.budget.map(Spanned::span)),
            ("period", self.period.map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| Some((key, span?)))
        .min_by_key(|(_, span)| span.start)
    }
}

/// A `[machine] nics` entry: the NIC and where its `mac` is written (if
/// given, and a good one).
struct WrittenNic {
    nic: MachineNic,
    mac: Option<Spot>,
}

/// The machine's NICs and the uplinks named so far (their network and
/// component), while `[networks.NAME]` tables are checked.
struct Uplinks<'m> {
    machine_nics: &'m mut [WrittenNic],
    named: Vec<(String, usize)>,
}

/// What `[networks.NAME]` tables are checked against.
struct NetworkContext<'a> {
    /// Component names.
    names: &'a Names,
    /// Every VM declared, also one left out as broken.
    vm_names: &'a [&'a str],
    /// The VMs kept.
    vms: &'a [Vm],
    /// The components as written, by index.
    component_entries: &'a [&'a Entry<RawComponent>],
    /// A `[machine] nics` entry was wrong and left out.
    broken_nics: bool,
}

/// Checked scheduling values, defaults applied.
struct Scheduling {
    priority: u8,
    budget_us: u32,
    period_us: u32,
}

/// The first scheduling key of an entry that was written but dropped as
/// wrong (already reported), if any.
fn dropped_scheduling_key<T>(entry: &Entry<T>) -> Option<&'static str> {
    ["priority", "budget", "period"]
        .into_iter()
        .find(|key| entry.was_dropped(key))
}

fn page_multiple(bytes: u64) -> bool {
    bytes.is_multiple_of(PAGE_SIZE)
}

impl Checker<'_> {
    fn error(&mut self, spot: &Spot, message: impl Into<String>) -> &mut Diagnostic {
        let diagnostic = self.sources.error(spot, message);
        self.errors.push(diagnostic);
        self.errors.last_mut().expect("just pushed")
    }

    fn file_name(&self, spot: &Spot) -> &str {
        &self.sources.files[spot.file].name
    }

    /// Checks names and drops duplicates; returns the surviving entries.
    fn unique<'e, T>(&mut self, entries: &'e [Entry<T>], kind: &str) -> Vec<&'e Entry<T>> {
        let mut kept: Vec<&Entry<T>> = Vec::new();
        for entry in entries {
            if !is_valid_name(&entry.name, NameKind::Plain) {
                self.error(
                    &entry.spot,
                    format!(
                        "{kind} name '{}' is not 1 to 32 characters of a-z, 0-9, '_' and '-'",
                        entry.name
                    ),
                )
                .help = non_ascii(&entry.name);
                continue;
            }
            if (kind == "component" || kind == "VM") && entry.name == "core" {
                self.error(
                    &entry.spot,
                    format!("{kind} name 'core' is reserved for the microvisor core"),
                );
                continue;
            }
            if kind == "component" && entry.name.starts_with(GUEST_ENTRY_PREFIX) {
                self.error(
                    &entry.spot,
                    format!(
                        "component name '{}' starts with '{GUEST_ENTRY_PREFIX}', which the boot image reserves for guest images",
                        entry.name
                    ),
                )
                .help = Some("rename the component; a guest is declared as [vms.NAME]".into());
                continue;
            }
            if let Some(first) = kept.iter().find(|first| first.name == entry.name) {
                let first_at = self.sources.error(&first.spot, "").location();
                let (first_file, this_file) = (
                    self.file_name(&first.spot).to_string(),
                    self.file_name(&entry.spot),
                );
                let message = if first.spot.file == entry.spot.file {
                    format!("{kind} '{}' is defined twice in {this_file}", entry.name)
                } else {
                    format!(
                        "{kind} '{}' is defined in both {first_file} and {this_file}",
                        entry.name
                    )
                };
                self.error(&entry.spot, message).help =
                    Some(format!("first defined at {first_at}"));
                continue;
            }
            kept.push(entry);
        }
        kept
    }

    fn system(
        &mut self,
        document: &Document,
        programs: &ProgramSet,
        options: &Options,
        root: String,
    ) -> System {
        let components = self.unique(&document.components, "component");
        let queues = self.unique(&document.queues, "queue");
        let notifications = self.unique(&document.notifications, "notification");
        let call_entries = self.unique(&document.calls, "call");
        let names = Names {
            vms: document
                .vms
                .iter()
                .filter_map(|vm| {
                    Some((
                        vm.name.clone(),
                        vm.value.as_ref()?.switcher.get_ref().clone(),
                    ))
                })
                .collect(),
            ..Names::of(&components)
        };
        self.component_spots = components.iter().map(|entry| entry.spot.clone()).collect();

        if document.components.is_empty() && !document.broken_sections {
            self.errors.push(
                file_error(root.clone(), "the system has no components").with_help(
                    "add a component with [components.NAME], or [[component]] and name = \"NAME\"",
                ),
            );
        }
        if let Some(extra) = components.get(MAX_COMPONENTS) {
            let count = components.len();
            self.error(
                &extra.spot,
                format!(
                    "the system has {count} components; the core supports at most {MAX_COMPONENTS}"
                ),
            );
        }
        if let Some(extra) = queues.get(MAX_QUEUES) {
            let count = queues.len();
            self.error(
                &extra.spot,
                format!("the system has {count} queues; the core supports at most {MAX_QUEUES}"),
            );
        }

        let mut checked: Vec<Component> = components
            .iter()
            .map(|entry| self.component(entry, &names, programs, options))
            .collect();
        self.image_entries(&checked);
        self.supervision(&components, &mut checked);
        self.pci_functions(&mut checked);
        self.grants(&checked);
        let vm_entries = self.unique(&document.vms, "VM");
        let vms = self.vms(
            &vm_entries,
            &components,
            &names,
            programs,
            &mut checked,
            options.console.as_deref(),
        );
        let mut queues = self.queues(&queues, &names, &checked);
        let disk_entries = self.unique(&document.virtual_disks, "disk");
        self.virtual_disks(&disk_entries, &names, &vms, &mut checked, &mut queues);
        let network_entries = self.unique(&document.networks, "network");
        // Every VM declared: one left out of `vms` as broken still exists
        // (its errors are reported where it is declared).
        let mut vm_names: Vec<&str> = Vec::new();
        for entry in &document.vms {
            if !vm_names.contains(&entry.name.as_str()) {
                vm_names.push(&entry.name);
            }
        }
        let mut machine_nics = self.machine_nics(&document.nics);
        let networks = self.networks(
            &network_entries,
            &NetworkContext {
                names: &names,
                vm_names: &vm_names,
                vms: &vms,
                component_entries: &components,
                broken_nics: document.broken_nics,
            },
            &mut checked,
            &mut queues,
            &mut machine_nics,
        );
        let calls = self.endpoint_calls(&call_entries, &names);
        self.calls(&queues, &calls, &checked);
        let notifications = self.notifications(&notifications, &names);

        let scheduling_controller = self.system_component(
            document.scheduling_controller.as_ref(),
            "scheduling_controller",
            &names,
        );
        if let (Some(controller), Some(setting)) = (
            scheduling_controller,
            document.scheduling_controller.as_ref(),
        ) {
            self.statistics_queues(controller, &setting.spot, &checked, &vms, &mut queues);
        }
        let interrupt_forwarder = self.system_component(
            document.interrupt_forwarder.as_ref(),
            "interrupt_forwarder",
            &names,
        );
        let forwarder_spot = document
            .interrupt_forwarder
            .as_ref()
            .map(|setting| setting.spot.clone());
        self.forwarding(
            &components,
            &checked,
            interrupt_forwarder,
            forwarder_spot.as_ref(),
        );
        let test = self.test(document.test.as_ref(), &names);
        // The injector reads its plan from the system console (the build
        // tool's `campaign` types it) unless a VM takes the console's
        // input; then it plans from its arguments.
        if let Some(injection) = &test
            && !vms.iter().any(|vm| vm.console_input)
            && let Some(injector) = checked.get_mut(injection.injector)
            && !injector
                .interrupts
                .iter()
                .any(|grant| grant.line == CONSOLE_LINE)
        {
            injector.interrupts.push(LineGrant {
                line: CONSOLE_LINE,
                wiring: Wiring::Default,
            });
        }
        self.memory(&checked, &queues, &vms, options);
        let mut disks = self.disks(&document.disks);
        self.store_image(&disk_entries, &mut disks);

        let mut system = System {
            root,
            description: document
                .description
                .as_ref()
                .map(|setting| setting.value.clone())
                .unwrap_or_default(),
            components: checked,
            queues,
            notifications,
            calls,
            vms,
            scheduling_controller,
            interrupt_forwarder,
            disks,
            nics: machine_nics
                .into_iter()
                .map(|written| written.nic)
                .collect(),
            networks,
            test,
            layout: Layout::default(),
        };
        if self.errors.is_empty() {
            system.layout = self.layout(&system);
        }
        system
    }

    /// A QoS controller as the scheduling controller: each VM's world
    /// switcher gets a queue `<switcher>-stats` to it, of
    /// `qos_api::VmStatistics` messages, on which it reports its VM's
    /// exits, interrupts, halted time, processes and periods, and a queue
    /// `<switcher>-control` from it, of `qos_api::Control` messages, on
    /// which the controller asks for what costs the VM something to
    /// observe.
    fn statistics_queues(
        &mut self,
        controller: usize,
        spot: &Spot,
        components: &[Component],
        vms: &[Vm],
        queues: &mut Vec<Queue>,
    ) {
        if components[controller].program != QOS {
            return;
        }
        let longest = qos_api::QUEUE_SUFFIX
            .len()
            .max(qos_api::CONTROL_SUFFIX.len());
        for vm in vms {
            let switcher = &components[vm.switcher].name;
            if switcher.len() + longest > 32 {
                self.error(
                    spot,
                    format!(
                        "[system] scheduling_controller: VM '{}''s world switcher '{switcher}' would talk to the QoS controller on '{switcher}{}' and '{switcher}{}', longer than 32 characters",
                        vm.name,
                        qos_api::QUEUE_SUFFIX,
                        qos_api::CONTROL_SUFFIX
                    ),
                )
                .help = Some(format!(
                    "a switcher's queues to the QoS controller are SWITCHER{} and SWITCHER{}: shorten the switcher's name to {} characters",
                    qos_api::QUEUE_SUFFIX,
                    qos_api::CONTROL_SUFFIX,
                    32 - longest
                ));
                continue;
            }
            let pair = [
                (
                    qos_api::QUEUE_SUFFIX,
                    "statistics",
                    (vm.switcher, controller),
                    (qos_api::SLOT_BYTES, qos_api::SLOTS),
                ),
                (
                    qos_api::CONTROL_SUFFIX,
                    "control",
                    (controller, vm.switcher),
                    (qos_api::CONTROL_BYTES, qos_api::CONTROL_SLOTS),
                ),
            ];
            for (suffix, kind, (sender, receiver), (slot_size, slots)) in pair {
                let name = format!("{switcher}{suffix}");
                if queues.iter().any(|queue| queue.name == name) {
                    self.error(
                        spot,
                        format!(
                            "[system] scheduling_controller: the QoS controller needs the queue '{name}' for VM '{}''s {kind}, which the system declares itself",
                            vm.name
                        ),
                    )
                    .help = Some(format!("a switcher's {kind} queue is made for it: remove [queues.{name}]"));
                    continue;
                }
                self.queue_spots.push(spot.clone());
                queues.push(Queue {
                    name,
                    sender,
                    receiver,
                    slot_size,
                    slots,
                    reply: None,
                });
            }
        }
    }

    /// `[disks.NAME]`: each virtual disk a VM sees becomes the queue pair
    /// `NAME-requests` (from the VM's world switcher to the store) and
    /// `NAME-completions` (back), of block-interface messages, and the
    /// store's arguments gain `disks=ITEM,...`: `NAME:BYTES` (a disk its VM
    /// opens exclusively, created with that size if the image lacks it),
    /// `NAME:ro` (opened read-only, shared) or `NAME:log` (a redo log over
    /// its `base`, opened exclusively).
    fn virtual_disks(
        &mut self,
        entries: &[&Entry<crate::raw::RawVirtualDisk>],
        names: &Names,
        vms: &[Vm],
        components: &mut [Component],
        queues: &mut Vec<Queue>,
    ) {
        let mut items: Vec<(usize, String)> = Vec::new();
        let disk_names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
        let raw_of = |name: &str| {
            entries
                .iter()
                .find(|entry| entry.name == name)
                .and_then(|entry| entry.value.as_ref())
        };
        for entry in entries {
            let Some(raw) = &entry.value else {
                continue;
            };
            let context = format!("disk '{}'", entry.name);
            let store = self.end(entry, &context, "store component", &raw.store, names);
            if let Some(store) = store
                && components[store].program != BLOCK_STORE
            {
                self.error(
                    &entry.at(&raw.store),
                    format!(
                        "{context}: its store '{}' runs program '{}', not the block store",
                        raw.store.get_ref(),
                        components[store].program
                    ),
                )
                .help = Some(format!("a disk's store runs program = \"{BLOCK_STORE}\""));
            }
            let vm = match &raw.vm {
                None => None,
                Some(name) => {
                    let vm = vms.iter().find(|vm| vm.name == *name.get_ref());
                    if vm.is_none() {
                        let known: Vec<&str> = vms.iter().map(|vm| vm.name.as_str()).collect();
                        let help =
                            suggest(name.get_ref(), known.iter().copied()).unwrap_or_else(|| {
                                if known.is_empty() {
                                    "the system declares no VMs ([vms.NAME])".to_string()
                                } else {
                                    format!("the VMs are {}", known.join(", "))
                                }
                            });
                        self.error(
                            &entry.at(name),
                            format!("{context}: unknown VM '{}'", name.get_ref()),
                        )
                        .help = Some(help);
                        continue;
                    }
                    vm
                }
            };
            let read_only = raw.read_only.as_ref().is_some_and(|flag| *flag.get_ref());
            let logs_over: Vec<&str> = entries
                .iter()
                .filter(|other| {
                    other
                        .value
                        .as_ref()
                        .and_then(|raw| raw.base.as_ref())
                        .is_some_and(|base| *base.get_ref() == entry.name)
                })
                .map(|other| other.name.as_str())
                .collect();
            let size = match (&raw.base, &raw.size) {
                (Some(base), _) => {
                    self.redo_log_base(
                        entry,
                        raw,
                        base,
                        &context,
                        &disk_names,
                        raw_of(base.get_ref()),
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        &entry.spot,
                        format!("{context} has no size"),
                    )
                    .help = Some(
                        "give it size = \"...\", or base = \"DISK\" to make it a redo log over another disk"
                            .into(),
                    );
                    continue;
                }
                (None, Some(size)) => {
                    let bytes = size.get_ref().0;
                    if bytes == 0 || bytes % 512 != 0 {
                        self.error(
                            &entry.at(size),
                            format!(
                                "{context}: size {} is not a positive multiple of 512 bytes",
                                format_size(bytes)
                            ),
                        );
                    }
                    Some(bytes)
                }
            };
            match (&raw.vm, logs_over.first()) {
                (None, None) => {
                    self.error(
                        &entry.spot,
                        format!("{context}: no VM sees it and no redo log is over it"),
                    )
                    .help = Some("give it vm = \"...\", or name it as another disk's base".into());
                }
                // (A log over a log is refused where that log names its base.)
                (Some(name), Some(log)) if !read_only && raw.base.is_none() => {
                    self.error(
                        &entry.at(name),
                        format!(
                            "{context}: the redo log '{log}' over it freezes it, so VM '{}' can only see it read-only",
                            name.get_ref()
                        ),
                    )
                    .help = Some("read_only = true".into());
                }
                _ => {}
            }
            let slots = match &raw.slots {
                Some(value) => self.slots(entry, &context, value),
                None => Some(DISK_SLOTS),
            };
            let (Some(store), Some(vm), Some(slots)) = (store, vm, slots) else {
                continue;
            };
            for (suffix, sender, receiver) in [
                ("requests", vm.switcher, store),
                ("completions", store, vm.switcher),
            ] {
                let name = format!("{}-{suffix}", entry.name);
                if queues.iter().any(|queue| queue.name == name) {
                    self.error(
                        &entry.spot,
                        format!(
                            "{context} needs the queue '{name}', which the system declares itself"
                        ),
                    )
                    .help = Some(format!(
                        "a disk's queues are made for it: remove [queues.{name}] or rename the disk"
                    ));
                    continue;
                }
                self.queue_spots.push(entry.spot.clone());
                queues.push(Queue {
                    name,
                    sender,
                    receiver,
                    slot_size: DISK_SLOT_BYTES,
                    slots,
                    reply: None,
                });
            }
            let item = match (read_only, raw.base.is_some(), size) {
                (true, _, _) => format!("{}:ro", entry.name),
                (false, true, _) => format!("{}:log", entry.name),
                (false, false, bytes) => format!("{}:{}", entry.name, bytes.unwrap_or(0)),
            };
            items.push((store, item));
        }
        if queues.len() > MAX_QUEUES
            && let Some(entry) = entries.last()
        {
            self.error(
                &entry.spot,
                format!(
                    "the system has {} queues with those of its disks; the core supports at most {MAX_QUEUES}",
                    queues.len()
                ),
            );
        }
        for (index, component) in components.iter_mut().enumerate() {
            let listed: Vec<&str> = items
                .iter()
                .filter(|(store, _)| *store == index)
                .map(|(_, item)| item.as_str())
                .collect();
            if listed.is_empty() {
                continue;
            }
            if component
                .args
                .split_whitespace()
                .any(|word| word.starts_with("disks="))
            {
                self.error(
                    &self.component_spots[index].clone(),
                    format!(
                        "component '{}': its args say disks=, which its [disks.NAME] tables write",
                        component.name
                    ),
                );
                continue;
            }
            let separator = if component.args.is_empty() { "" } else { " " };
            component.args = format!("{}{separator}disks={}", component.args, listed.join(","));
            if component.args.len() > MAX_ARGS {
                self.error(
                    &self.component_spots[index].clone(),
                    format!(
                        "component '{}': its args with the disks= its [disks.NAME] tables add are {} bytes (\"{}\"); at most {MAX_ARGS} fit",
                        component.name,
                        component.args.len(),
                        component.args
                    ),
                )
                .help = Some("shorten the disks' names, or serve some from another store".into());
            }
        }
    }

    /// `[networks.NAME]`: each member VM `V` of network `N` gets a NIC
    /// named `N-V`, the queue pair `N-V-tx` (from the VM's world switcher
    /// to the bridge) and `N-V-rx` (back) of frame messages, with the MAC
    /// address `net_api::mac_of("N-V")`; the bridge's arguments gain
    /// `networks=N,...`, the networks it serves in declaration order. An
    /// `uplink` `C` (see [`Self::uplink`]) adds the pair `N-C-in` (from
    /// `C` to the bridge) and `N-C-out` (back) after the NICs'.
    fn networks(
        &mut self,
        entries: &[&Entry<RawNetwork>],
        against: &NetworkContext<'_>,
        components: &mut [Component],
        queues: &mut Vec<Queue>,
        machine_nics: &mut [WrittenNic],
    ) -> Vec<Network> {
        let (names, vm_names, vms) = (against.names, against.vm_names, against.vms);
        let queues_before = queues.len();
        let mut networks = Vec::new();
        // Per network kept: where each NIC's VM is listed.
        let mut member_spots: Vec<Vec<Spot>> = Vec::new();
        // Per network kept: where its uplink is named.
        let mut uplink_spots: Vec<Option<Spot>> = Vec::new();
        let mut uplinks = Uplinks {
            machine_nics,
            named: Vec::new(),
        };
        // Per VM index: the networks it has a NIC on so far.
        let mut nics_of: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        // Every NIC so far: its name, MAC, network and VM.
        let mut seen: Vec<(String, [u8; 6], String, String)> = Vec::new();
        for entry in entries {
            let Some(raw) = &entry.value else {
                continue;
            };
            let context = format!("network '{}'", entry.name);
            let bridge = self.end(entry, &context, "bridge component", &raw.bridge, names);
            if let Some(bridge) = bridge
                && components[bridge].program != NET_BRIDGE
            {
                self.error(
                    &entry.at(&raw.bridge),
                    format!(
                        "{context}: its bridge '{}' runs program '{}', not the network bridge",
                        raw.bridge.get_ref(),
                        components[bridge].program
                    ),
                )
                .help = Some(format!(
                    "a network's bridge runs program = \"{NET_BRIDGE}\""
                ));
            }
            let slots = match &raw.slots {
                Some(value) => self
                    .slots(entry, &context, value)
                    .filter(|&slots| self.net_queue_fits(entry, &context, value, slots)),
                None => Some(NET_SLOTS),
            };
            if raw.members.get_ref().is_empty() {
                self.error(&entry.at(&raw.members), format!("{context} has no members"))
                    .help = Some("list the VMs with a NIC on it: members = [\"VM\", ...]".into());
            }
            let mut nics = Vec::new();
            let mut spots = Vec::new();
            for (position, member) in raw.members.get_ref().iter().enumerate() {
                let vm_name = member.get_ref();
                let spot = entry.at(member);
                if raw.members.get_ref()[..position]
                    .iter()
                    .any(|earlier| earlier.get_ref() == vm_name)
                {
                    self.error(
                        &spot,
                        format!("{context}: VM '{vm_name}' is listed twice in members"),
                    )
                    .help = Some("a VM has one NIC on a network".into());
                    continue;
                }
                if !vm_names.contains(&vm_name.as_str()) {
                    let help = suggest(vm_name, vm_names.iter().copied()).unwrap_or_else(|| {
                        if names.find(vm_name).is_some() {
                            format!(
                                "'{vm_name}' is a component; a network's members are VMs ([vms.NAME])"
                            )
                        } else if vm_names.is_empty() {
                            "the system declares no VMs ([vms.NAME])".to_string()
                        } else {
                            format!("the VMs are {}", vm_names.join(", "))
                        }
                    });
                    self.error(&spot, format!("{context}: unknown VM '{vm_name}'"))
                        .help = Some(help);
                    continue;
                }
                // A VM declared but broken is reported where it is declared.
                let Some(vm) = vms.iter().position(|vm| vm.name == *vm_name) else {
                    continue;
                };
                let nic = format!("{}-{vm_name}", entry.name);
                let (tx, rx) = (format!("{nic}-tx"), format!("{nic}-rx"));
                if !is_valid_name(&tx, NameKind::Plain) || !is_valid_name(&rx, NameKind::Plain) {
                    self.error(
                        &spot,
                        format!(
                            "{context}: the queues of VM '{vm_name}''s NIC, '{tx}' and '{rx}', are longer than 32 characters"
                        ),
                    )
                    .help = Some(
                        "a NIC's queues are named NETWORK-VM-tx and NETWORK-VM-rx: shorten the network's or the VM's name"
                            .into(),
                    );
                    continue;
                }
                let on = nics_of.get(&vm).map_or(&[][..], Vec::as_slice);
                if on.len() >= MAX_NICS {
                    let count = on.len() + 1;
                    let listed = on.join("', '");
                    self.error(
                        &spot,
                        format!(
                            "{context}: VM '{vm_name}' would have {count} NICs; a VM has at most {MAX_NICS}"
                        ),
                    )
                    .help = Some(format!(
                        "its world switcher shows at most {MAX_NICS} virtio-net functions; it is on '{listed}' already"
                    ));
                    continue;
                }
                if let Some((_, _, network, vm)) = seen.iter().find(|(name, ..)| *name == nic) {
                    self.error(
                        &spot,
                        format!(
                            "{context}: VM '{vm_name}''s NIC would be named '{nic}', as is network '{network}''s NIC for VM '{vm}'"
                        ),
                    )
                    .help = Some(
                        "a NIC is named NETWORK-VM, and so are its queues: rename a network or a VM"
                            .into(),
                    );
                    continue;
                }
                // A queue of that name is one the system declares: disks'
                // queues end in -requests and -completions, and an earlier
                // NIC of the same name is refused above.
                let mut clash = false;
                for name in [&tx, &rx] {
                    if queues.iter().any(|queue| queue.name == *name) {
                        clash = true;
                        self.error(
                            &spot,
                            format!(
                                "{context} needs the queue '{name}' for VM '{vm_name}''s NIC, which the system declares itself"
                            ),
                        )
                        .help = Some(format!(
                            "a NIC's queues are made for it: remove [queues.{name}] or rename the network"
                        ));
                    }
                }
                if clash {
                    continue;
                }
                let mac = net_api::mac_of(&nic);
                if let Some((other, _, _, _)) = mac_collision(&seen, &mac) {
                    self.error(
                        &spot,
                        format!(
                            "{context}: VM '{vm_name}''s NIC '{nic}' would have the MAC address {} of NIC '{other}'",
                            net_api::MacText(mac)
                        ),
                    )
                    .help = Some(
                        "a NIC's MAC address is derived from its name, NETWORK-VM: rename the network or the VM"
                            .into(),
                    );
                    continue;
                }
                nics_of.entry(vm).or_default().push(entry.name.clone());
                seen.push((nic.clone(), mac, entry.name.clone(), vm_name.clone()));
                nics.push(Nic { name: nic, vm, mac });
                spots.push(spot);
            }
            let uplink = match (&raw.uplink, &raw.uplink_mode) {
                (Some(_), _) => {
                    self.uplink(entry, against, components, queues, &nics, &mut uplinks)
                }
                (None, Some(mode)) => {
                    self.error(
                        &entry.at(mode),
                        format!("{context}: uplink_mode needs an uplink"),
                    )
                    .help = Some(format!(
                        "name the driver of the machine's NIC: uplink = \"COMPONENT\" (a component running program \"{VIRTIO_NET}\")"
                    ));
                    None
                }
                (None, None) => None,
            };
            let (Some(bridge), Some(slots)) = (bridge, slots) else {
                continue;
            };
            for nic in &nics {
                let switcher = vms[nic.vm].switcher;
                for (suffix, sender, receiver) in
                    [("tx", switcher, bridge), ("rx", bridge, switcher)]
                {
                    self.queue_spots.push(entry.spot.clone());
                    queues.push(Queue {
                        name: format!("{}-{suffix}", nic.name),
                        sender,
                        receiver,
                        slot_size: NET_SLOT_BYTES,
                        slots,
                        reply: None,
                    });
                }
            }
            if let Some(uplink) = &uplink {
                let driver = uplink.component;
                for (suffix, sender, receiver) in [("in", driver, bridge), ("out", bridge, driver)]
                {
                    self.queue_spots.push(entry.spot.clone());
                    queues.push(Queue {
                        name: format!("{}-{suffix}", uplink.name),
                        sender,
                        receiver,
                        slot_size: NET_SLOT_BYTES,
                        slots,
                        reply: None,
                    });
                }
            }
            uplink_spots.push(
                raw.uplink
                    .as_ref()
                    .filter(|_| uplink.is_some())
                    .map(|written| entry.at(written)),
            );
            networks.push(Network {
                name: entry.name.clone(),
                bridge,
                slots,
                nics,
                uplink,
            });
            member_spots.push(spots);
        }
        self.nic_networks(&networks, &member_spots, components);
        self.uplinks_apart(
            &networks,
            &uplink_spots,
            components,
            &seen,
            uplinks.machine_nics,
        );
        if queues.len() > MAX_QUEUES
            && queues_before <= MAX_QUEUES
            && let Some(entry) = entries.last()
        {
            self.error(
                &entry.spot,
                format!(
                    "the system has {} queues with those of its networks; the core supports at most {MAX_QUEUES}",
                    queues.len()
                ),
            )
            .help = Some(
                if networks.iter().any(|network| network.uplink.is_some()) {
                    format!(
                        "each NIC and each uplink takes two queues ({} for the networks' NICs and uplink)",
                        queues.len() - queues_before
                    )
                } else {
                    format!(
                        "each NIC takes two queues ({} for the networks' NICs)",
                        queues.len() - queues_before
                    )
                },
            );
        }
        for (index, component) in components.iter_mut().enumerate() {
            let served: Vec<&str> = networks
                .iter()
                .filter(|network| network.bridge == index)
                .map(|network| network.name.as_str())
                .collect();
            if served.is_empty() {
                continue;
            }
            if component
                .args
                .split_whitespace()
                .any(|word| word.starts_with("networks="))
            {
                self.error(
                    &self.component_spots[index].clone(),
                    format!(
                        "component '{}': its args say networks=, which its [networks.NAME] tables write",
                        component.name
                    ),
                );
                continue;
            }
            let separator = if component.args.is_empty() { "" } else { " " };
            component.args = format!("{}{separator}networks={}", component.args, served.join(","));
            if component.args.len() > MAX_ARGS {
                self.error(
                    &self.component_spots[index].clone(),
                    format!(
                        "component '{}': its args with the networks= its [networks.NAME] tables add are {} bytes (\"{}\"); at most {MAX_ARGS} fit",
                        component.name,
                        component.args.len(),
                        component.args
                    ),
                )
                .help =
                    Some("shorten the networks' names, or serve some from another bridge".into());
            }
        }
        networks
    }

    /// A bridge puts a NIC on the longest of its networks that, followed
    /// by '-', starts the NIC's name: a NIC `N-V` whose name starts with
    /// `M-` for a longer network `M` of the same bridge (network `lan`,
    /// VM `a-x`, and network `lan-a`) would be put on `M`.
    fn nic_networks(
        &mut self,
        networks: &[Network],
        member_spots: &[Vec<Spot>],
        components: &[Component],
    ) {
        for (network, spots) in networks.iter().zip(member_spots) {
            for (nic, spot) in network.nics.iter().zip(spots) {
                let taken_by = networks.iter().find(|other| {
                    other.bridge == network.bridge
                        && other.name.len() > network.name.len()
                        && nic
                            .name
                            .strip_prefix(other.name.as_str())
                            .is_some_and(|rest| rest.starts_with('-'))
                });
                let Some(other) = taken_by else {
                    continue;
                };
                self.error(
                    spot,
                    format!(
                        "network '{}': VM '{}''s NIC '{}' would be put on network '{}' by their bridge '{}', which puts a NIC on the longest of its networks its name starts with",
                        network.name,
                        &nic.name[network.name.len() + 1..],
                        nic.name,
                        other.name,
                        components[network.bridge].name
                    ),
                )
                .help = Some(format!(
                    "rename network '{}' or the VM, or serve one of the networks from another bridge",
                    other.name
                ));
            }
        }
    }

    /// A network's `uplink`: the driver of the machine's NIC (a component
    /// running [`VIRTIO_NET`] with a `pci` grant for the card), of one
    /// network, the system's only one, with a `[machine]` NIC to drive, and
    /// its queues `N-C-in` and `N-C-out` named within 32 characters and
    /// not declared. In exclusive mode the network's one VM owns the card,
    /// which takes that VM's NIC's MAC (set on the machine's NIC here).
    /// `None` (after reporting) when it is not one.
    fn uplink(
        &mut self,
        entry: &Entry<RawNetwork>,
        context: &NetworkContext<'_>,
        components: &[Component],
        queues: &[Queue],
        nics: &[Nic],
        uplinks: &mut Uplinks<'_>,
    ) -> Option<Uplink> {
        let raw = entry.value.as_ref()?;
        let written = raw.uplink.as_ref()?;
        let network = format!("network '{}'", entry.name);
        let spot = entry.at(written);
        let component = self.end(entry, &network, "uplink component", written, context.names)?;
        let driver = &components[component];
        let mut good = true;
        if driver.program != VIRTIO_NET {
            good = false;
            self.error(
                &spot,
                format!(
                    "{network}: its uplink '{}' runs program '{}', not the virtio-net driver",
                    driver.name, driver.program
                ),
            )
            .help = Some(format!(
                "an uplink runs program = \"{VIRTIO_NET}\", the driver of the machine's NIC"
            ));
        }
        let (vendor, device) = VIRTIO_NET_PCI;
        let pci_written = context.component_entries[component]
            .value
            .as_ref()
            .is_some_and(|raw| raw.pci.is_some())
            || context.component_entries[component].was_dropped("pci");
        match driver.pci {
            Some(pci) if (pci.vendor, pci.device) == VIRTIO_NET_PCI => {}
            Some(pci) => {
                good = false;
                self.error(
                    &spot,
                    format!(
                        "{network}: its uplink '{}' drives PCI {:04x}:{:04x}, not the machine's NIC ({vendor:04x}:{device:04x}, virtio-net-pci)",
                        driver.name, pci.vendor, pci.device
                    ),
                )
                .help = Some(format!(
                    "give it pci = {{ vendor = \"{vendor:#06x}\", device = \"{device:#06x}\" }}"
                ));
            }
            // A pci table written wrong is reported where it is written.
            None if pci_written => good = false,
            None => {
                good = false;
                self.error(
                    &spot,
                    format!(
                        "{network}: its uplink '{}' has no pci grant for the machine's NIC ({vendor:04x}:{device:04x}, virtio-net-pci)",
                        driver.name
                    ),
                )
                .help = Some(format!(
                    "give it pci = {{ vendor = \"{vendor:#06x}\", device = \"{device:#06x}\" }}"
                ));
            }
        }
        if let Some((other, _)) = uplinks.named.iter().find(|(_, c)| *c == component) {
            good = false;
            self.error(
                &spot,
                format!(
                    "{network}: component '{}' is already the uplink of network '{other}'",
                    driver.name
                ),
            )
            .help = Some("a driver connects one network to the outside".into());
        } else if let Some((other, _)) = uplinks.named.first() {
            good = false;
            self.error(
                &spot,
                format!(
                    "{network}: network '{other}' has the uplink already; the machine has at most {MAX_MACHINE_NICS} NIC, so the system has at most one uplink"
                ),
            )
            .help = Some("connect one network to the outside".into());
        }
        uplinks.named.push((entry.name.clone(), component));
        if uplinks.machine_nics.is_empty() && !context.broken_nics {
            good = false;
            self.error(
                &spot,
                format!(
                    "{network}: its uplink '{}' drives the machine's NIC, but the system has no [machine] nics",
                    driver.name
                ),
            )
            .help = Some("[machine] nics = [{ backend = \"user\" }]".into());
        }
        let name = format!("{}-{}", entry.name, driver.name);
        let (incoming, outgoing) = (format!("{name}-in"), format!("{name}-out"));
        if !is_valid_name(&incoming, NameKind::Plain) || !is_valid_name(&outgoing, NameKind::Plain)
        {
            self.error(
                &spot,
                format!(
                    "{network}: the queues of its uplink '{}', '{incoming}' and '{outgoing}', are longer than 32 characters",
                    driver.name
                ),
            )
            .help = Some(
                "an uplink's queues are named NETWORK-COMPONENT-in and NETWORK-COMPONENT-out: shorten the network's or the component's name"
                    .into(),
            );
            return None;
        }
        for queue in [&incoming, &outgoing] {
            if queues.iter().any(|declared| declared.name == *queue) {
                good = false;
                self.error(
                    &spot,
                    format!(
                        "{network} needs the queue '{queue}' for its uplink '{}', which the system declares itself",
                        driver.name
                    ),
                )
                .help = Some(format!(
                    "an uplink's queues are made for it: remove [queues.{queue}] or rename the network"
                ));
            }
        }
        // A mode written wrong is reported where it is written.
        if entry.was_dropped("uplink_mode") {
            return None;
        }
        let mode = raw
            .uplink_mode
            .as_ref()
            .map_or(UplinkMode::Shared, |mode| *mode.get_ref());
        let card = uplinks.machine_nics.first_mut();
        let mac = match mode {
            UplinkMode::Shared => card.map_or(DEFAULT_NIC_MAC, |card| card.nic.mac),
            UplinkMode::Exclusive => {
                let mode_spot = raw
                    .uplink_mode
                    .as_ref()
                    .map_or(spot.clone(), |mode| entry.at(mode));
                let members = raw.members.get_ref();
                if members.len() > 1 {
                    self.error(
                        &mode_spot,
                        format!(
                            "{network}: in exclusive mode one VM owns the machine's NIC, but the network has {} members",
                            members.len()
                        ),
                    )
                    .help = Some(
                        "list the one VM that owns the card (the outside sees it as the card), or use uplink_mode = \"shared\""
                            .into(),
                    );
                    return None;
                }
                // No member is reported already, and so is a member that
                // has no NIC.
                let [nic] = nics else {
                    return None;
                };
                let vm = &context.vms[nic.vm].name;
                if let Some(card) = card {
                    if let Some(mac_spot) = card.mac.clone() {
                        self.error(
                            &mac_spot,
                            format!(
                                "[machine] nic mac {}: network '{}' is exclusive, and in exclusive mode the card takes VM '{vm}''s NIC's MAC ({})",
                                card.nic.mac_text(),
                                entry.name,
                                net_api::MacText(nic.mac)
                            ),
                        )
                        .help = Some(
                            "remove the card's mac, or use uplink_mode = \"shared\"".into(),
                        );
                        return None;
                    }
                    card.nic.mac = nic.mac;
                }
                nic.mac
            }
        };
        good.then_some(Uplink {
            component,
            name,
            mode,
            mac,
        })
    }

    /// Uplinks against every NIC, once all networks are read: an uplink
    /// `N-C` is named as no NIC is, is not put on a longer network of the
    /// same bridge (as [`Self::nic_networks`] says for NICs), and in shared
    /// mode its card's MAC is no NIC's.
    fn uplinks_apart(
        &mut self,
        networks: &[Network],
        uplink_spots: &[Option<Spot>],
        components: &[Component],
        seen: &[(String, [u8; 6], String, String)],
        machine_nics: &[WrittenNic],
    ) {
        for (network, spot) in networks.iter().zip(uplink_spots) {
            let (Some(uplink), Some(spot)) = (&network.uplink, spot) else {
                continue;
            };
            let context = format!("network '{}'", network.name);
            let driver = &components[uplink.component].name;
            if let Some((_, _, other, vm)) = seen.iter().find(|(name, ..)| *name == uplink.name) {
                self.error(
                    spot,
                    format!(
                        "{context}: its uplink '{driver}' would be named '{}', as is network '{other}''s NIC for VM '{vm}'",
                        uplink.name
                    ),
                )
                .help = Some(
                    "an uplink is named NETWORK-COMPONENT and a NIC NETWORK-VM: rename a network, the component or the VM"
                        .into(),
                );
            }
            let taken_by = networks.iter().find(|other| {
                other.bridge == network.bridge
                    && other.name.len() > network.name.len()
                    && uplink
                        .name
                        .strip_prefix(other.name.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            });
            if let Some(other) = taken_by {
                self.error(
                    spot,
                    format!(
                        "{context}: its uplink '{driver}' ('{}') would be put on network '{}' by their bridge '{}', which puts a port on the longest of its networks its name starts with",
                        uplink.name,
                        other.name,
                        components[network.bridge].name
                    ),
                )
                .help = Some(format!(
                    "rename network '{}' or the component, or serve one of the networks from another bridge",
                    other.name
                ));
            }
            if uplink.mode != UplinkMode::Shared {
                continue;
            }
            if let Some((nic, ..)) = mac_collision(seen, &uplink.mac) {
                let at = machine_nics
                    .first()
                    .and_then(|card| card.mac.clone())
                    .unwrap_or_else(|| spot.clone());
                self.error(
                    &at,
                    format!(
                        "{context}: the card of its uplink '{driver}' would have the MAC address {} of NIC '{nic}'",
                        net_api::MacText(uplink.mac)
                    ),
                )
                .help = Some(format!(
                    "in shared mode the card keeps its own MAC ([machine] nics' mac, default {}), which no NIC may have: give the card another",
                    net_api::MacText(DEFAULT_NIC_MAC)
                ));
            }
        }
    }

    /// `[machine] nics`: at most [`MAX_MACHINE_NICS`], each on the `user`
    /// backend, with a unicast MAC that is not all zeros (QEMU's
    /// [`DEFAULT_NIC_MAC`] when none is given). An entry with a wrong
    /// value is kept (its error reported) so that an uplink does not also
    /// miss it.
    fn machine_nics(&mut self, raw: &[(Spot, RawNic)]) -> Vec<WrittenNic> {
        let mut nics = Vec::new();
        for (index, (spot, nic)) in raw.iter().enumerate() {
            let at = |value: &Spanned<String>| Spot {
                file: spot.file,
                span: value.span(),
            };
            if index == MAX_MACHINE_NICS {
                self.error(
                    spot,
                    format!(
                        "[machine] the system has {} NICs; the machine has at most {MAX_MACHINE_NICS}",
                        raw.len()
                    ),
                )
                .help = Some("one network's uplink drives the machine's one NIC".into());
            }
            let backend = nic.backend.get_ref();
            if backend != NicBackend::User.name() {
                self.error(
                    &at(&nic.backend),
                    format!(
                        "[machine] nic backend \"{backend}\" is not supported; the only backend is \"user\" (QEMU's user-mode network)"
                    ),
                )
                .help = suggest(backend, [NicBackend::User.name()]);
            }
            let mut mac = DEFAULT_NIC_MAC;
            let mut given_at = None;
            if let Some(text) = &nic.mac {
                match parse_mac(text.get_ref()) {
                    None => {
                        self.error(
                            &at(text),
                            format!(
                                "[machine] nic mac \"{}\" is not six hex bytes separated by ':' (such as \"{}\")",
                                text.get_ref(),
                                net_api::MacText(DEFAULT_NIC_MAC)
                            ),
                        );
                    }
                    Some(given) if given == [0; 6] => {
                        self.error(
                            &at(text),
                            format!(
                                "[machine] nic mac {} is all zeros, which is no NIC's address",
                                net_api::MacText(given)
                            ),
                        );
                    }
                    Some(given) if net_api::is_group(&given) => {
                        let mut unicast = given;
                        unicast[0] &= !1;
                        self.error(
                            &at(text),
                            format!(
                                "[machine] nic mac {} is a group (multicast) address: the low bit of its first byte is set",
                                net_api::MacText(given)
                            ),
                        )
                        .help = Some(format!(
                            "a NIC's own address is unicast, such as {}",
                            net_api::MacText(unicast)
                        ));
                    }
                    Some(given) => {
                        mac = given;
                        given_at = Some(at(text));
                    }
                }
            }
            nics.push(WrittenNic {
                nic: MachineNic {
                    backend: NicBackend::User,
                    mac,
                },
                mac: given_at,
            });
        }
        nics
    }

    /// Whether a NIC queue of `slots` frames fits in [`MAX_QUEUE_BYTES`];
    /// reports it if not.
    fn net_queue_fits(
        &mut self,
        entry: &Entry<RawNetwork>,
        context: &str,
        value: &Spanned<Number>,
        slots: u32,
    ) -> bool {
        let bytes = u64::from(slots) * u64::from(NET_SLOT_BYTES);
        if bytes <= MAX_QUEUE_BYTES {
            return true;
        }
        let most = 1u64 << (MAX_QUEUE_BYTES / u64::from(NET_SLOT_BYTES)).ilog2();
        self.error(
            &entry.at(value),
            format!(
                "{context}: slots {slots} make each NIC queue {} of slots ({slots} x {NET_SLOT_BYTES} bytes); a queue holds at most {}",
                format_size_rounded(bytes),
                format_size(MAX_QUEUE_BYTES)
            ),
        )
        .help = Some(format!("use {most} or fewer"));
        false
    }

    /// Checks a redo log's `base`: another disk of the same store, itself
    /// a disk (not a log); the log has neither size nor `from` of its own.
    fn redo_log_base(
        &mut self,
        entry: &Entry<crate::raw::RawVirtualDisk>,
        raw: &crate::raw::RawVirtualDisk,
        base: &Spanned<String>,
        context: &str,
        disk_names: &[&str],
        target: Option<&crate::raw::RawVirtualDisk>,
    ) {
        if let Some(size) = &raw.size {
            self.error(
                &entry.at(size),
                format!(
                    "{context}: a redo log has the size of its base '{}'",
                    base.get_ref()
                ),
            )
            .help = Some("remove size".into());
        }
        if let Some(from) = &raw.from {
            self.error(
                &entry.at(from),
                format!(
                    "{context}: a redo log starts empty over its base; `from` belongs to the base '{}'",
                    base.get_ref()
                ),
            );
        }
        match target {
            None => {
                let others = disk_names
                    .iter()
                    .copied()
                    .filter(|name| *name != entry.name);
                self.error(
                    &entry.at(base),
                    format!("{context}: unknown base disk '{}'", base.get_ref()),
                )
                .help = suggest(base.get_ref(), others);
            }
            Some(_) if *base.get_ref() == entry.name => {
                self.error(&entry.at(base), format!("{context} cannot be its own base"));
            }
            Some(target) if target.base.is_some() => {
                self.error(
                    &entry.at(base),
                    format!(
                        "{context}: its base '{}' is a redo log itself; a redo log's base is a disk",
                        base.get_ref()
                    ),
                );
            }
            Some(target) if target.store.get_ref() != raw.store.get_ref() => {
                self.error(
                    &entry.at(base),
                    format!(
                        "{context}: its base '{}' is kept by store '{}', not '{}'",
                        base.get_ref(),
                        target.store.get_ref(),
                        raw.store.get_ref()
                    ),
                );
            }
            Some(_) => {}
        }
    }

    /// The store image the build tool makes: when a `[disks.NAME]` table
    /// needs it (`from`, `base`, `read_only` or no `vm`: contents or files
    /// the store would not make itself), the system's one fresh `[machine]`
    /// disk holds a VMKFS file system with every disk of that store (files
    /// relative to the system file) and then the redo logs over them.
    fn store_image(
        &mut self,
        entries: &[&Entry<crate::raw::RawVirtualDisk>],
        disks: &mut [MachineDisk],
    ) {
        let needs = |raw: &crate::raw::RawVirtualDisk| {
            raw.from.is_some()
                || raw.base.is_some()
                || raw.read_only.as_ref().is_some_and(|flag| *flag.get_ref())
                || raw.vm.is_none()
        };
        let Some((first, raw)) = entries
            .iter()
            .find_map(|entry| Some((*entry, entry.value.as_ref().filter(|raw| needs(raw))?)))
        else {
            return;
        };
        let context = format!("disk '{}'", first.name);
        let why = if let Some(from) = &raw.from {
            (first.at(from), "`from`")
        } else if let Some(base) = &raw.base {
            (first.at(base), "a redo log")
        } else if let Some(flag) = &raw.read_only {
            (first.at(flag), "a read-only disk")
        } else {
            (first.spot.clone(), "a disk only redo logs see")
        };
        let fresh: Vec<usize> = (0..disks.len())
            .filter(|&index| disks[index].size.is_some())
            .collect();
        let [target] = fresh[..] else {
            self.error(
                &why.0,
                format!(
                    "{context}: {} needs exactly one fresh [machine] disk for the store's file system, which the build tool makes (the system has {})",
                    why.1,
                    fresh.len()
                ),
            )
            .help = Some("[machine] disks = [{ size = \"32MiB\" }]".into());
            return;
        };
        let store = raw.store.get_ref();
        let mut logs = Vec::new();
        for entry in entries {
            let Some(raw) = &entry.value else {
                continue;
            };
            if raw.store.get_ref() != store {
                if needs(raw) {
                    self.error(
                        &entry.at(&raw.store),
                        format!(
                            "disk '{}': its store '{}' would need an image made too; the build tool makes one, for '{store}' (disk '{}')",
                            entry.name,
                            raw.store.get_ref(),
                            first.name
                        ),
                    );
                }
                continue;
            }
            if let Some(from) = &raw.from
                && from.get_ref().is_empty()
            {
                self.error(
                    &entry.at(from),
                    format!("disk '{}': `from` names no file", entry.name),
                );
                continue;
            }
            match (&raw.base, &raw.size) {
                (Some(base), _) => logs.push(StoreFile {
                    name: entry.name.clone(),
                    kind: StoreFileKind::RedoLog {
                        base: base.get_ref().clone(),
                    },
                }),
                (None, Some(size)) => disks[target].files.push(StoreFile {
                    name: entry.name.clone(),
                    kind: StoreFileKind::Disk {
                        size: size.get_ref().0,
                        from: raw.from.as_ref().map(|from| {
                            std::path::Path::new(&self.sources.files[entry.spot.file].name)
                                .parent()
                                .unwrap_or(std::path::Path::new(""))
                                .join(from.get_ref())
                        }),
                    },
                }),
                (None, None) => {}
            }
        }
        disks[target].files.extend(logs);
    }

    /// One component's own fields; references to others are resolved here
    /// and their relations checked in later passes.
    fn component(
        &mut self,
        entry: &Entry<RawComponent>,
        names: &Names,
        programs: &ProgramSet,
        options: &Options,
    ) -> Component {
        let name = entry.name.clone();
        let mut component = Component {
            name: name.clone(),
            program: name.clone(),
            args: String::new(),
            priority: DEFAULT_PRIORITY,
            budget_us: (DEFAULT_PERIOD_NS / 1000) as u32,
            period_us: (DEFAULT_PERIOD_NS / 1000) as u32,
            stack_bytes: DEFAULT_STACK,
            memory_bytes: DEFAULT_MEMORY,
            start: Start::Boot,
            supervisor: None,
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_backoff_ms: (DEFAULT_BACKOFF_NS / 1_000_000) as u32,
            watchdog_ms: 0,
            observe: Vec::new(),
            ports: Vec::new(),
            mmio: Vec::new(),
            dma: Vec::new(),
            pci: None,
            interrupts: Vec::new(),
            corrupt: None,
        };
        let Some(raw) = &entry.value else {
            return component;
        };
        let context = format!("component '{name}'");

        // Program and arguments.
        let (program, program_spot, defaulted) = match &raw.program {
            Some(program) => (program.get_ref().clone(), entry.at(program), false),
            None => (name.clone(), entry.spot.clone(), true),
        };
        if program.starts_with(GUEST_ENTRY_PREFIX) && !defaulted {
            self.error(
                &program_spot,
                format!(
                    "{context}: program name '{program}' starts with '{GUEST_ENTRY_PREFIX}', which the boot image reserves for guest images"
                ),
            );
        } else if !programs.contains(&program) && !entry.was_dropped("program") {
            let note = if defaulted {
                " (the program defaults to the component's name)"
            } else {
                ""
            };
            let help = suggest(&program, programs.names()).or_else(|| {
                Some(if programs.is_empty() {
                    format!("{} hold no programs", programs.folders().join(" and "))
                } else {
                    format!(
                        "the programs are: {}",
                        programs.names().collect::<Vec<_>>().join(", ")
                    )
                })
            });
            self.error(
                &program_spot,
                format!(
                    "{context}: no program '{program}' in {}{note}",
                    programs.folders().join(" or ")
                ),
            )
            .help = help;
        }
        component.program = program;
        if let Some(args) = &raw.args {
            if args.get_ref().len() > MAX_ARGS {
                self.error(
                    &entry.at(args),
                    format!(
                        "{context}: args are {} bytes; at most {MAX_ARGS} fit",
                        args.get_ref().len()
                    ),
                );
            }
            component.args = args.get_ref().clone();
        }
        if let Some(corrupt) = &raw.corrupt {
            component.corrupt = self.corruption(entry, &context, corrupt, options);
        }

        // Scheduling.
        let keys = SchedulingKeys {
            priority: raw.priority.as_ref(),
            budget: raw.budget.as_ref(),
            period: raw.period.as_ref(),
        };
        let scheduling = self.scheduling(entry, &context, &keys);
        component.priority = scheduling.priority;
        component.budget_us = scheduling.budget_us;
        component.period_us = scheduling.period_us;

        // Memory.
        if let Some(stack) = &raw.stack {
            let bytes = stack.get_ref().0;
            if !page_multiple(bytes) {
                self.error(
                    &entry.at(stack),
                    format!(
                        "{context}: stack {} is not a multiple of the 4KiB page size",
                        format_size(bytes)
                    ),
                );
            } else if bytes == 0 || bytes > MAX_STACK {
                self.error(
                    &entry.at(stack),
                    format!(
                        "{context}: stack {} is outside 4KiB to {}",
                        format_size(bytes),
                        format_size(MAX_STACK)
                    ),
                );
            } else {
                component.stack_bytes = bytes;
            }
        }
        if let Some(memory) = &raw.memory {
            let bytes = memory.get_ref().0;
            if bytes == 0 || !page_multiple(bytes) {
                self.error(
                    &entry.at(memory),
                    format!(
                        "{context}: memory {} is not a positive multiple of the 4KiB page size",
                        format_size(bytes)
                    ),
                );
            } else if bytes / PAGE_SIZE > u64::from(u32::MAX) {
                self.error(
                    &entry.at(memory),
                    format!(
                        "{context}: memory {} is more than the boot spec can describe ({} pages)",
                        format_size(bytes),
                        u32::MAX
                    ),
                );
            } else {
                component.memory_bytes = bytes;
                if component.stack_bytes > bytes {
                    self.error(
                        &entry.at(memory),
                        format!(
                            "{context}: memory {} cannot hold the stack of {}",
                            format_size(bytes),
                            format_size(component.stack_bytes)
                        ),
                    )
                    .help = Some("memory covers the program's segments and its stack".into());
                }
            }
        }

        // Start, supervision and restart policy.
        if let Some(start) = &raw.start {
            component.start = *start.get_ref();
        }
        if let Some(supervisor) = &raw.supervisor {
            let found = names.find(supervisor.get_ref());
            if found.is_none() {
                let help = names.help(supervisor.get_ref());
                self.error(
                    &entry.at(supervisor),
                    format!("{context}: unknown supervisor '{}'", supervisor.get_ref()),
                )
                .help = help;
            }
            component.supervisor = found;
        }
        if let (Some(start), None) = (&raw.start, &raw.supervisor)
            && *start.get_ref() == Start::Supervisor
            && !entry.was_dropped("supervisor")
        {
            self.error(
                &entry.at(start),
                format!("{context}: start = \"supervisor\" needs a supervisor to start it"),
            )
            .help = Some("add supervisor = \"NAME\", or start at boot".into());
        }
        if let Some(restart) = &raw.restart {
            let policy = restart.get_ref();
            if raw.supervisor.is_none() && !entry.was_dropped("supervisor") {
                if let Some(watchdog) = &policy.watchdog {
                    self.error(
                        &entry.at(watchdog),
                        format!(
                            "{context}: a watchdog needs a supervisor to restart the component"
                        ),
                    )
                    .help = Some(format!(
                        "name a supervisor: supervisor = \"NAME\" (it polls the watchdog and restarts '{name}')"
                    ));
                } else {
                    self.error(
                        &entry.at(restart),
                        format!("{context}: a restart policy needs a supervisor to apply it"),
                    )
                    .help = Some("add supervisor = \"NAME\", or remove restart".into());
                }
            }
            if let Some(max) = &policy.max {
                match u32::try_from(max.get_ref().0) {
                    Ok(max) => component.max_restarts = max,
                    Err(_) => {
                        self.error(
                            &entry.at(max),
                            format!(
                                "{context}: restart max {} is more than {}",
                                max.get_ref().0,
                                u32::MAX
                            ),
                        );
                    }
                }
            }
            if let Some(backoff) = &policy.backoff {
                let nanoseconds = backoff.get_ref().0;
                if nanoseconds % 1_000_000 != 0 {
                    self.error(
                        &entry.at(backoff),
                        format!(
                            "{context}: restart backoff {} is not a whole number of milliseconds",
                            format_duration(nanoseconds)
                        ),
                    );
                } else if nanoseconds > MAX_BACKOFF_NS {
                    self.error(
                        &entry.at(backoff),
                        format!(
                            "{context}: restart backoff {} is longer than {}",
                            format_duration(nanoseconds),
                            format_duration(MAX_BACKOFF_NS)
                        ),
                    );
                } else {
                    component.restart_backoff_ms = (nanoseconds / 1_000_000) as u32;
                }
            }
            if let Some(watchdog) = &policy.watchdog {
                let nanoseconds = watchdog.get_ref().0;
                let spot = entry.at(watchdog);
                let shown = format_duration(nanoseconds);
                if nanoseconds % 1_000_000 != 0 {
                    self.error(
                        &spot,
                        format!(
                            "{context}: restart watchdog {shown} is not a whole number of milliseconds"
                        ),
                    );
                } else if nanoseconds < MIN_WATCHDOG_NS {
                    let help = if nanoseconds == 0 {
                        "leave watchdog out for no watchdog".to_string()
                    } else {
                        "a component may be preempted or throttled that long without being stuck"
                            .to_string()
                    };
                    self.error(
                        &spot,
                        format!(
                            "{context}: restart watchdog {shown} is shorter than {}",
                            format_duration(MIN_WATCHDOG_NS)
                        ),
                    )
                    .help = Some(help);
                } else if nanoseconds > MAX_WATCHDOG_NS {
                    self.error(
                        &spot,
                        format!(
                            "{context}: restart watchdog {shown} is longer than {}",
                            format_duration(MAX_WATCHDOG_NS)
                        ),
                    );
                } else {
                    component.watchdog_ms = (nanoseconds / 1_000_000) as u32;
                }
            }
        }

        // Observation.
        for observed in raw.observe.iter().flatten() {
            let Some(index) = names.find(observed.get_ref()) else {
                let help = names.help(observed.get_ref());
                self.error(
                    &entry.at(observed),
                    format!(
                        "{context}: cannot observe unknown component '{}'",
                        observed.get_ref()
                    ),
                )
                .help = help;
                continue;
            };
            if component.observe.contains(&index) {
                self.error(
                    &entry.at(observed),
                    format!("{context} observes '{}' twice", observed.get_ref()),
                );
                continue;
            }
            component.observe.push(index);
        }

        // Device grants (overlaps between grants are checked in `grants`).
        for ports in raw.ports.iter().flatten() {
            let range = ports.get_ref();
            let mut core_owned = None;
            // Split in pieces of at most 0xffff ports, as the spec does.
            let mut first = u32::from(range.first);
            while first <= u32::from(range.last) && core_owned.is_none() {
                let piece = (u32::from(range.last) - first + 1).min(0xffff);
                core_owned = microvisor_abi::spec::core_port_overlap(first as u16, piece as u16);
                first += piece;
            }
            if let Some(what) = core_owned {
                let shown = if range.first == range.last {
                    format!("port {:#x} is", range.first)
                } else {
                    format!("ports {:#x}-{:#x} include", range.first, range.last)
                };
                self.error(
                    &entry.at(ports),
                    format!("{context}: {shown} {what}, which the core keeps for itself"),
                )
                .help = Some(format!(
                    "the core's own ports are {}",
                    microvisor_abi::spec::CORE_PORTS
                        .iter()
                        .map(|(base, size, _)| if *size == 1 {
                            format!("{base:#x}")
                        } else {
                            format!("{base:#x}-{:#x}", base + size - 1)
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            component.ports.push(PortGrant {
                first: range.first,
                last: range.last,
            });
        }
        for region in raw.mmio.iter().flatten() {
            let (physical, size) = (
                region.get_ref().physical.get_ref().0,
                region.get_ref().size.get_ref().0,
            );
            let physical_spot = entry.at(&region.get_ref().physical);
            let size_spot = entry.at(&region.get_ref().size);
            let mut good = true;
            if !page_multiple(physical) {
                good = false;
                self.error(
                    &physical_spot,
                    format!("{context}: mmio physical address {physical:#x} is not page-aligned"),
                )
                .help = Some(format!(
                    "device memory is granted in whole 4KiB pages; {:#x} is the page start",
                    physical & !(PAGE_SIZE - 1)
                ));
            }
            if size == 0 || !page_multiple(size) {
                good = false;
                self.error(
                    &size_spot,
                    format!(
                        "{context}: mmio size {} is not a positive multiple of the 4KiB page size",
                        format_size(size)
                    ),
                );
            }
            if physical
                .checked_add(size)
                .is_none_or(|end| end > PHYSICAL_LIMIT)
            {
                good = false;
                self.error(
                    &physical_spot,
                    format!(
                        "{context}: mmio region {physical:#x} + {} ends beyond the 52-bit physical address space",
                        format_size(size)
                    ),
                );
            }
            let end = physical.saturating_add(size);
            // RAM: below the legacy video window, and from 1 MiB to the
            // machine's memory (the core checks its real map again at boot).
            let in_ram =
                physical < 0xa_0000 || (physical < options.machine_memory && end > 0x10_0000);
            if good && in_ram {
                good = false;
                self.error(
                    &physical_spot,
                    format!(
                        "{context}: mmio {physical:#x} + {} lies in RAM (below 640KiB, or between 1MiB and the machine's {}), not device memory",
                        format_size(size),
                        format_size(options.machine_memory)
                    ),
                )
                .help = Some("device memory lies above the machine's RAM (QEMU's PCI window starts at 0xe0000000) or in the legacy window 0xa0000-0xfffff".into());
            }
            if good && let Some(what) = microvisor_abi::spec::core_device_overlap(physical, size) {
                good = false;
                self.error(
                    &physical_spot,
                    format!(
                        "{context}: mmio {physical:#x} + {} includes {what}, which the core keeps for itself",
                        format_size(size)
                    ),
                );
            }
            if good {
                component.mmio.push(MmioGrant { physical, size });
            }
        }
        for buffer in raw.dma.iter().flatten() {
            let raw_buffer = buffer.get_ref();
            let size = raw_buffer.size.get_ref().0;
            if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > MAX_DMA_BYTES {
                self.error(
                    &entry.at(&raw_buffer.size),
                    format!(
                        "{context}: dma size {} is not a multiple of the 4KiB page size from 4KiB to {} (a buffer is physically contiguous)",
                        format_size(size),
                        format_size(MAX_DMA_BYTES)
                    ),
                );
                continue;
            }
            component.dma.push(DmaGrant {
                size,
                below_4g: raw_buffer
                    .below_4g
                    .as_ref()
                    .is_some_and(|value| *value.get_ref()),
            });
        }
        for line in raw.interrupts.iter().flatten() {
            let value = line.get_ref().line;
            if value >= INTERRUPT_LINES {
                self.error(
                    &entry.at(line),
                    format!(
                        "{context}: interrupt line {value} is out of range (the IOAPIC's inputs 0 to {})",
                        INTERRUPT_LINES - 1
                    ),
                );
                continue;
            }
            let value = value as u32;
            if value == CONSOLE_LINE {
                self.error(
                    &entry.at(line),
                    format!(
                        "{context}: interrupt line {CONSOLE_LINE} is the system console's (COM1), which the core owns"
                    ),
                )
                .help = Some("a VM reads the console with `console_input = true`".into());
                continue;
            }
            if component.interrupts.iter().any(|grant| grant.line == value) {
                self.error(
                    &entry.at(line),
                    format!("{context}: interrupt line {value} is listed twice"),
                );
                continue;
            }
            component.interrupts.push(LineGrant {
                line: value,
                wiring: line.get_ref().wiring,
            });
        }
        if let Some(pci) = &raw.pci {
            component.pci = self.pci(entry, &context, pci.get_ref());
        }
        component
    }

    /// A component's `pci` table.
    fn pci(
        &mut self,
        entry: &Entry<RawComponent>,
        context: &str,
        raw: &RawPci,
    ) -> Option<PciGrant> {
        let mut good = true;
        let mut id = |this: &mut Self, value: &Spanned<Number>, what: &str| {
            let number = value.get_ref().0;
            if number > 0xffff {
                good = false;
                this.error(
                    &entry.at(value),
                    format!("{context}: pci {what} {number:#x} is not a 16-bit ID"),
                );
            }
            number as u16
        };
        let vendor = id(self, &raw.vendor, "vendor");
        let device = id(self, &raw.device, "device");
        let address = match &raw.address {
            None => None,
            Some(text) => match parse_pci_address(text.get_ref()) {
                Some(address) => Some(address),
                None => {
                    good = false;
                    self.error(
                        &entry.at(text),
                        format!(
                            "{context}: pci address \"{}\" is not bus:device.function (such as \"00:03.0\")",
                            text.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        let mut bars = 0u32;
        for bar in raw.bars.iter().flatten() {
            let number = bar.get_ref().0;
            if number > 5 || bars & (1 << number) != 0 {
                good = false;
                let why = if number > 5 {
                    "is not a BAR (0 to 5)"
                } else {
                    "is listed twice"
                };
                self.error(&entry.at(bar), format!("{context}: pci bar {number} {why}"));
                continue;
            }
            bars |= 1 << number;
        }
        if raw.bars.as_ref().is_some_and(Vec::is_empty) {
            good = false;
            let spot = entry.at(raw
                .bars
                .as_ref()
                .and(Some(&raw.vendor))
                .unwrap_or(&raw.vendor));
            self.error(
                &spot,
                format!(
                    "{context}: pci bars = [] maps no BAR; leave it out to map every memory BAR"
                ),
            );
        }
        let msi = raw.msi.as_ref().map_or(0, |msi| msi.get_ref().0);
        let most = u64::from(INTERRUPT_LINES_ALL - FIRST_MSI_LINE);
        if msi > most {
            good = false;
            let spot = raw
                .msi
                .as_ref()
                .map_or(entry.spot.clone(), |msi| entry.at(msi));
            self.error(
                &spot,
                format!(
                    "{context}: pci msi {msi} is more than the {most} MSI vectors the core has"
                ),
            );
        }
        good.then_some(PciGrant {
            vendor,
            device,
            address,
            bars,
            msi: msi as u32,
            msi_first_line: 0,
        })
    }

    /// Gives each driver's MSI vectors their interrupt lines, from
    /// [`FIRST_MSI_LINE`] in component order, and checks what the core
    /// can give: [`MAX_PCI`] functions, each bus address once.
    fn pci_functions(&mut self, components: &mut [Component]) {
        let mut next = FIRST_MSI_LINE;
        let mut given = 0;
        let mut addresses: Vec<(u32, usize)> = Vec::new();
        for index in 0..components.len() {
            let spot = self.component_spots[index].clone();
            let Some(pci) = components[index].pci.as_mut() else {
                continue;
            };
            given += 1;
            if given > MAX_PCI {
                self.error(
                    &spot,
                    format!("the system gives {given} PCI functions; the core supports at most {MAX_PCI}"),
                );
            }
            if let Some(address) = pci.address {
                if let Some((_, other)) = addresses.iter().find(|(at, _)| *at == address) {
                    let other = components[*other].name.clone();
                    self.error(
                        &spot,
                        format!(
                            "component '{}': pci address {} is already given to '{other}'",
                            components[index].name,
                            pci_address_text(address)
                        ),
                    );
                }
                addresses.push((address, index));
            }
            if pci.msi == 0 {
                continue;
            }
            if next + pci.msi > INTERRUPT_LINES_ALL {
                self.error(
                    &spot,
                    format!(
                        "component '{}': the system asks for more than the {} MSI vectors the core has",
                        components[index].name,
                        INTERRUPT_LINES_ALL - FIRST_MSI_LINE
                    ),
                );
                continue;
            }
            pci.msi_first_line = next;
            let lines = next..next + pci.msi;
            next += pci.msi;
            components[index]
                .interrupts
                .extend(lines.map(|line| LineGrant {
                    line,
                    wiring: Wiring::Default,
                }));
        }
    }

    /// A `corrupt` value: one of the defects the caller can apply.
    fn corruption(
        &mut self,
        entry: &Entry<RawComponent>,
        context: &str,
        corrupt: &Spanned<String>,
        options: &Options,
    ) -> Option<String> {
        let value = corrupt.get_ref();
        if options.corruptions.contains(value) {
            return Some(value.clone());
        }
        let known = options.corruptions.iter().map(String::as_str);
        let (message, help) = if options.corruptions.is_empty() {
            (
                format!(
                    "{context}: corrupt = \"{value}\" asks to damage the program before packing, which only the build tool's tests can do"
                ),
                "remove corrupt, or boot this system with cargo run -p build".to_string(),
            )
        } else {
            (
                format!("{context}: unknown corruption '{value}'"),
                suggest(value, known.clone()).unwrap_or_else(|| {
                    format!(
                        "the corruptions are: {}",
                        known.collect::<Vec<_>>().join(", ")
                    )
                }),
            )
        };
        self.error(&entry.at(corrupt), message).help = Some(help);
        None
    }

    /// Every component's program is packed under a boot-image entry name
    /// ([`Component::image_entry`]): a corrupted copy under its component's
    /// name must not take the name of a program other components run, and
    /// no program may take the spec's entry.
    fn image_entries(&mut self, components: &[Component]) {
        for (index, component) in components.iter().enumerate() {
            let entry = component.image_entry();
            let spot = self.component_spots[index].clone();
            if entry == SPEC_ENTRY {
                self.error(
                    &spot,
                    format!(
                        "component '{}': its program would be packed as the boot-image entry '{SPEC_ENTRY}', which holds the boot spec",
                        component.name
                    ),
                )
                .help = Some(format!("rename the {}", if component.corrupt.is_some() { "component" } else { "program" }));
                continue;
            }
            if component.corrupt.is_none() {
                continue;
            }
            if let Some(other) = components
                .iter()
                .find(|other| other.corrupt.is_none() && other.program == entry)
            {
                self.error(
                    &spot,
                    format!(
                        "component '{}': its corrupted program is packed as the boot-image entry '{entry}', which holds program '{entry}' for component '{}'",
                        component.name, other.name
                    ),
                )
                .help = Some("rename the corrupted component".into());
            }
        }
    }

    /// Priority, budget and period from their keys (each optional),
    /// defaults for the missing ones: the budget defaults to the period.
    fn scheduling<T>(
        &mut self,
        entry: &Entry<T>,
        context: &str,
        keys: &SchedulingKeys<'_>,
    ) -> Scheduling {
        let mut scheduling = Scheduling {
            priority: DEFAULT_PRIORITY,
            budget_us: (DEFAULT_PERIOD_NS / 1000) as u32,
            period_us: (DEFAULT_PERIOD_NS / 1000) as u32,
        };
        if let Some(priority) = keys.priority {
            match u8::try_from(priority.get_ref().0) {
                Ok(value) => scheduling.priority = value,
                Err(_) => {
                    self.error(
                        &entry.at(priority),
                        format!(
                            "{context}: priority {} is out of range (0 to 255, higher runs first)",
                            priority.get_ref().0
                        ),
                    );
                }
            }
        }
        let period = keys
            .period
            .and_then(|period| self.scheduling_time(entry, context, "period", period));
        if let Some(period) = period {
            scheduling.period_us = period;
        }
        let budget = keys
            .budget
            .and_then(|budget| self.scheduling_time(entry, context, "budget", budget));
        scheduling.budget_us = budget.unwrap_or(scheduling.period_us);
        if let (Some(budget_spanned), Some(budget)) = (keys.budget, budget)
            && !entry.was_dropped("period")
            && (keys.period.is_none() || period.is_some())
            && budget > scheduling.period_us
        {
            self.error(
                &entry.at(budget_spanned),
                format!(
                    "{context}: budget {} is longer than its period {}",
                    format_duration(u64::from(budget) * 1000),
                    format_duration(u64::from(scheduling.period_us) * 1000)
                ),
            )
            .help = Some("a budget is at most its period (equal means never throttled)".into());
        }
        scheduling
    }

    /// A budget or period: positive, whole microseconds, at most
    /// [`MAX_PERIOD_US`] (what the core's `SchedulingConfigure` accepts).
    fn scheduling_time<T>(
        &mut self,
        entry: &Entry<T>,
        context: &str,
        what: &str,
        value: &Spanned<Duration>,
    ) -> Option<u32> {
        let nanoseconds = value.get_ref().0;
        let spot = entry.at(value);
        if nanoseconds == 0 {
            self.error(&spot, format!("{context}: {what} must be longer than zero"));
            return None;
        }
        if !nanoseconds.is_multiple_of(1000) {
            self.error(
                &spot,
                format!(
                    "{context}: {what} {} is not a whole number of microseconds",
                    format_duration(nanoseconds)
                ),
            );
            return None;
        }
        let microseconds = nanoseconds / 1000;
        if microseconds > MAX_PERIOD_US {
            self.error(
                &spot,
                format!(
                    "{context}: {what} {} is longer than the longest period the core accepts ({})",
                    format_duration(nanoseconds),
                    format_duration(MAX_PERIOD_US * 1000)
                ),
            )
            .help = Some(
                "budgets and periods are at most microvisor_abi::syscall::MAX_PERIOD_US, \
                 the limit of SchedulingConfigure"
                    .into(),
            );
            return None;
        }
        // At most MAX_PERIOD_US, which fits the spec's 32 bits.
        u32::try_from(microseconds).ok()
    }

    /// Self-supervision and supervisor cycles.
    fn supervision(&mut self, entries: &[&Entry<RawComponent>], components: &mut [Component]) {
        for (index, entry) in entries.iter().enumerate() {
            if components[index].supervisor == Some(index) {
                let spot = entry
                    .value
                    .as_ref()
                    .and_then(|raw| raw.supervisor.as_ref())
                    .map_or(entry.spot.clone(), |supervisor| entry.at(supervisor));
                self.error(
                    &spot,
                    format!("component '{}' cannot supervise itself", entry.name),
                );
                components[index].supervisor = None;
            }
        }
        // Follow supervisor links from every component; a walk that returns
        // to a component already on it is a cycle, reported once at its
        // lowest-indexed member.
        let mut reported = vec![false; components.len()];
        for start in 0..components.len() {
            let mut path = vec![start];
            let mut current = start;
            while let Some(next) = components[current].supervisor {
                if let Some(at) = path.iter().position(|&member| member == next) {
                    let cycle = &path[at..];
                    let lowest = *cycle.iter().min().expect("a cycle has members");
                    if lowest == start && !reported[start] {
                        reported[start] = true;
                        let mut names: Vec<&str> =
                            cycle.iter().map(|&i| components[i].name.as_str()).collect();
                        names.push(&components[start].name);
                        let spot = entries[start]
                            .value
                            .as_ref()
                            .and_then(|raw| raw.supervisor.as_ref())
                            .map_or(entries[start].spot.clone(), |supervisor| {
                                entries[start].at(supervisor)
                            });
                        self.error(
                            &spot,
                            format!("supervisor cycle: {}", names.join(" supervised by ")),
                        )
                        .help = Some(
                            "supervision must form a tree: some component has no supervisor".into(),
                        );
                    }
                    break;
                }
                path.push(next);
                current = next;
            }
        }
        for index in 0..components.len() {
            if reported[index] {
                components[index].supervisor = None;
            }
        }
    }

    /// Port, MMIO and interrupt grants must not overlap, within a component
    /// or between two, and must fit the spec's grant tables.
    fn grants(&mut self, components: &[Component]) {
        let mut ports: Vec<(usize, PortGrant)> = Vec::new();
        let mut regions: Vec<(usize, MmioGrant)> = Vec::new();
        let mut lines: Vec<(usize, u32)> = Vec::new();
        let describe = |owner: usize, index: usize, what: &str| {
            if owner == index {
                format!("its own {what}")
            } else {
                format!("{what} granted to '{}'", components[owner].name)
            }
        };
        for (index, component) in components.iter().enumerate() {
            let spot = self.component_spots[index].clone();
            let context = format!("component '{}'", component.name);
            for grant in &component.ports {
                if let Some((owner, other)) = ports
                    .iter()
                    .find(|(_, other)| grant.first <= other.last && other.first <= grant.last)
                {
                    let message = format!(
                        "{context}: ports {} overlap {}",
                        port_text(grant),
                        describe(*owner, index, &format!("ports {}", port_text(other)))
                    );
                    self.error(&spot, message);
                }
                ports.push((index, *grant));
            }
            for region in &component.mmio {
                if let Some((owner, other)) = regions.iter().find(|(_, other)| {
                    region.physical < other.physical + other.size
                        && other.physical < region.physical + region.size
                }) {
                    let message = format!(
                        "{context}: mmio {} overlaps {}",
                        mmio_text(region),
                        describe(*owner, index, &format!("mmio {}", mmio_text(other)))
                    );
                    self.error(&spot, message);
                }
                regions.push((index, *region));
            }
            for line in component.interrupts.iter().map(|grant| grant.line) {
                if let Some((owner, _)) = lines
                    .iter()
                    .find(|(owner, other)| *other == line && *owner != index)
                {
                    let message = format!(
                        "{context}: interrupt line {line} is already delivered to '{}'",
                        components[*owner].name
                    );
                    self.error(&spot, message).help =
                        Some("an interrupt line goes to one component".into());
                }
                lines.push((index, line));
            }
        }
        let mut port_owners: Vec<usize> = Vec::new();
        for (index, component) in components.iter().enumerate() {
            for grant in &component.ports {
                port_owners.extend(port_pieces(grant).iter().map(|_| index));
            }
        }
        // Device memory and DMA buffers share the spec's memory grants.
        let mut region_owners: Vec<usize> = regions.iter().map(|(owner, _)| *owner).collect();
        for (index, component) in components.iter().enumerate() {
            region_owners.extend(component.dma.iter().map(|_| index));
        }
        let line_owners: Vec<usize> = lines.iter().map(|(owner, _)| *owner).collect();
        for (owners, what) in [
            (port_owners, "port ranges"),
            (region_owners, "mmio regions and DMA buffers"),
            (line_owners, "interrupt lines"),
        ] {
            if let Some(&owner) = owners.get(MAX_GRANTS) {
                let spot = self.component_spots[owner].clone();
                let count = owners.len();
                self.error(
                    &spot,
                    format!(
                        "the system grants {count} {what}; the core supports at most {MAX_GRANTS}"
                    ),
                );
            }
        }
    }

    /// `[machine] disks`: each a size or an image (resolved against the
    /// directory of the file that names it).
    fn disks(&mut self, raw: &[(Spot, RawDisk)]) -> Vec<MachineDisk> {
        let mut disks = Vec::new();
        for (spot, disk) in raw {
            match (&disk.size, &disk.image) {
                (Some(size), None) => {
                    let bytes = size.get_ref().0;
                    if bytes == 0 || !bytes.is_multiple_of(PAGE_SIZE) || bytes > MAX_DISK_BYTES {
                        let at = Spot {
                            file: spot.file,
                            span: size.span(),
                        };
                        self.error(
                            &at,
                            format!(
                                "[machine] disk size {} is not a multiple of 4KiB from 4KiB to {}",
                                format_size(bytes),
                                format_size(MAX_DISK_BYTES)
                            ),
                        );
                        continue;
                    }
                    disks.push(MachineDisk {
                        size: Some(bytes),
                        image: None,
                        files: Vec::new(),
                    });
                }
                (None, Some(image)) if !image.get_ref().is_empty() => {
                    let directory = std::path::Path::new(&self.sources.files[spot.file].name)
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default();
                    disks.push(MachineDisk {
                        size: None,
                        image: Some(directory.join(image.get_ref())),
                        files: Vec::new(),
                    });
                }
                _ => {
                    self.error(spot, "[machine] a disk is `{ size = \"8MiB\" }` (fresh, zeroed) or `{ image = \"path\" }` (a copy of a file), one of the two");
                }
            }
        }
        disks
    }

    /// `[test]`: the injector and its targets are distinct declared
    /// components, each target listed once.
    fn test(&mut self, table: Option<&TestTable>, names: &Names) -> Option<FaultInjection> {
        let table = table?;
        let raw = table.value.as_ref()?;
        let injector_name = raw.injector.get_ref();
        let injector = names.find(injector_name);
        if injector.is_none() {
            let spot = table.at(&raw.injector);
            match names.vms.get(injector_name) {
                Some(switcher) => {
                    self.error(
                        &spot,
                        format!("[test] injector: '{injector_name}' is a VM, not a component"),
                    )
                    .help = Some(format!(
                        "a component injects faults; the component that runs '{injector_name}' is its world switcher '{switcher}'"
                    ));
                }
                None => {
                    let help = names.help(injector_name);
                    self.error(
                        &spot,
                        format!("[test] injector: unknown component '{injector_name}'"),
                    )
                    .help = help;
                }
            }
        }
        let list = table.at(&raw.targets);
        if raw.targets.get_ref().is_empty() {
            self.error(&list, "[test] targets is empty").help = Some(format!(
                "list the components '{injector_name}' may inject faults into: targets = [\"NAME\", ...]"
            ));
        }
        let mut targets: Vec<usize> = Vec::new();
        let mut spots: Vec<Spot> = Vec::new();
        for target in raw.targets.get_ref() {
            let name = target.get_ref();
            let spot = table.at(target);
            let Some(index) = names.find(name) else {
                match names.vms.get(name) {
                    Some(switcher) => {
                        self.error(
                            &spot,
                            format!("[test] targets: '{name}' is a VM, not a component"),
                        )
                        .help = Some(format!(
                            "inject into its world switcher: targets = [\"{switcher}\"]"
                        ));
                    }
                    None => {
                        let help = names.help(name);
                        self.error(&spot, format!("[test] targets: unknown component '{name}'"))
                            .help = help;
                    }
                }
                continue;
            };
            if let Some(at) = targets.iter().position(|&earlier| earlier == index) {
                let first = self.sources.error(&spots[at], "").location();
                self.error(&spot, format!("[test] targets: '{name}' is listed twice"))
                    .help = Some(format!("first listed at {first}"));
                continue;
            }
            if injector == Some(index) {
                self.error(
                    &spot,
                    format!(
                        "[test] targets: the injector '{name}' cannot inject faults into itself"
                    ),
                )
                .help = Some(format!("remove '{name}' from targets"));
                continue;
            }
            targets.push(index);
            spots.push(spot);
        }
        self.test_spots = Some(TestSpots {
            list,
            targets: spots,
        });
        Some(FaultInjection {
            injector: injector?,
            targets,
        })
    }

    /// The component a `[system]` setting names, if it is set and exists.
    fn system_component(
        &mut self,
        setting: Option<&Setting>,
        key: &str,
        names: &Names,
    ) -> Option<usize> {
        let setting = setting?;
        let found = names.find(&setting.value);
        if found.is_none() {
            let help = names.help(&setting.value);
            self.error(
                &setting.spot,
                format!("[system] {key}: unknown component '{}'", setting.value),
            )
            .help = help;
        }
        found
    }

    /// Interrupt lines go through the forwarder: a system whose drivers
    /// list lines needs one, and the forwarder lists none itself.
    fn forwarding(
        &mut self,
        entries: &[&Entry<RawComponent>],
        components: &[Component],
        forwarder: Option<usize>,
        forwarder_spot: Option<&Spot>,
    ) {
        for (index, (entry, component)) in entries.iter().zip(components).enumerate() {
            let Some(raw) = &entry.value else { continue };
            if component.interrupts.is_empty() {
                continue;
            }
            // At the first line listed, else at its MSI vectors.
            let spot = match (raw.interrupts.iter().flatten().next(), &raw.pci) {
                (Some(first), _) => entry.at(first),
                (None, Some(pci)) => entry.at(pci),
                (None, None) => continue,
            };
            if forwarder == Some(index) {
                let message = format!(
                    "component '{}' is the interrupt forwarder and cannot own interrupt lines itself",
                    component.name
                );
                let help = forwarder_spot
                    .map(|spot| self.sources.error(spot, "").location())
                    .map(|at| format!("it is named the forwarder at {at}"));
                self.error(&spot, message).help = help;
            } else if forwarder.is_none() {
                let message = format!(
                    "component '{}' lists interrupt lines (or MSI vectors), but the system has no interrupt forwarder to deliver them",
                    component.name
                );
                self.error(&spot, message).help = Some(
                    "name one in `[system] interrupt_forwarder = \"...\"` (a component running the irq-forwarder program)".into(),
                );
            }
        }
    }

    /// Virtual machines: names, switcher, image, memory, entry mode,
    /// scheduling (applied to the switcher) and pokers. A VM with a bad
    /// name or switcher is left out of later passes.
    fn vms(
        &mut self,
        entries: &[&Entry<RawVm>],
        component_entries: &[&Entry<RawComponent>],
        names: &Names,
        programs: &ProgramSet,
        components: &mut [Component],
        console: Option<&str>,
    ) -> Vec<Vm> {
        if let Some(extra) = entries.get(MAX_VMS) {
            let count = entries.len();
            self.error(
                &extra.spot,
                format!("the system has {count} VMs; the core supports at most {MAX_VMS}"),
            );
        }
        let mut vms: Vec<Vm> = Vec::new();
        // Per switcher: the VM it runs (by name), for "one VM per switcher".
        let mut runs: BTreeMap<usize, String> = BTreeMap::new();
        for &entry in entries {
            let name = &entry.name;
            let context = format!("VM '{name}'");
            let mut good = true;
            if let Some(component) = names.find(name) {
                good = false;
                let at = self
                    .sources
                    .error(&self.component_spots[component], "")
                    .location();
                self.error(
                    &entry.spot,
                    format!("VM '{name}' has the same name as component '{name}'"),
                )
                .help = Some(format!(
                    "components and VMs share one name space; the component is defined at {at}"
                ));
            }
            if name.len() > MAX_VM_NAME {
                good = false;
                self.error(
                    &entry.spot,
                    format!(
                        "VM name '{name}' is longer than {MAX_VM_NAME} characters: its capabilities '{name}.vmcs' and '{name}.vcpu' must fit in 32"
                    ),
                );
            }
            let Some(raw) = &entry.value else { continue };

            let switcher = self.end(entry, &context, "switcher", &raw.switcher, names);
            good &= switcher.is_some();
            if let Some(switcher) = switcher {
                if let Some(first) = runs.get(&switcher) {
                    good = false;
                    let message = format!(
                        "component '{}' already runs VM '{first}'; a world switcher runs one VM",
                        components[switcher].name
                    );
                    self.error(&entry.at(&raw.switcher), message).help =
                        Some("declare another component to switch this VM".into());
                } else {
                    runs.insert(switcher, name.clone());
                }
                let component = &components[switcher];
                if programs.is_world_switcher(&component.program) == Some(false) {
                    let switchers: Vec<&str> = programs.world_switchers().collect();
                    let message = format!(
                        "{context}: its switcher '{}' runs program '{}', which is not a world switcher",
                        component.name, component.program
                    );
                    self.error(&entry.at(&raw.switcher), message).help = Some(format!(
                        "a switcher runs a program whose Cargo.toml declares [package.metadata.microvisor] role = \"{WORLD_SWITCHER}\" ({})",
                        if switchers.is_empty() {
                            "there is none".to_string()
                        } else {
                            format!("here: {}", switchers.join(", "))
                        }
                    ));
                }
            }

            let kernel = self.kernel_guest(entry, &context, raw);
            good &= kernel.is_ok();
            let kernel = kernel.unwrap_or(None);
            if let (Some(_), Some(image)) = (&kernel, &raw.image) {
                good = false;
                self.error(
                    &entry.at(image),
                    format!(
                        "{context}: a VM starts from a test VM image or from a kernel, not both"
                    ),
                );
            }
            if let (Some(_), Some(entry_key)) = (&kernel, &raw.entry) {
                good = false;
                self.error(
                    &entry.at(entry_key),
                    format!("{context}: 'entry' applies to test VM images; a kernel's own format says how it starts"),
                );
            }
            let image = match &raw.image {
                Some(image) => {
                    let text = image.get_ref();
                    if !is_valid_name(text, NameKind::Plain) || text.len() > MAX_IMAGE_NAME {
                        good = false;
                        self.error(
                            &entry.at(image),
                            format!(
                                "{context}: image name '{text}' is not 1 to {MAX_IMAGE_NAME} characters of a-z, 0-9, '_' and '-'"
                            ),
                        )
                        .help = Some(format!(
                            "the boot image holds it as '{GUEST_ENTRY_PREFIX}{text}', at most 32 characters"
                        ));
                    }
                    text.clone()
                }
                None => name.clone(),
            };

            let mut memory_bytes = DEFAULT_VM_MEMORY;
            if let Some(memory) = &raw.memory {
                let bytes = memory.get_ref().0;
                if bytes == 0 || !page_multiple(bytes) {
                    good = false;
                    self.error(
                        &entry.at(memory),
                        format!(
                            "{context}: memory {} is not a positive multiple of the 4KiB page size",
                            format_size(bytes)
                        ),
                    );
                } else if bytes > MAX_GUEST_MEMORY {
                    good = false;
                    self.error(
                        &entry.at(memory),
                        format!(
                            "{context}: memory {} is more than a VM may have ({})",
                            format_size(bytes),
                            format_size(MAX_GUEST_MEMORY)
                        ),
                    );
                } else {
                    memory_bytes = bytes;
                }
            }
            let entry_mode = match raw.entry.as_ref().map(Spanned::get_ref) {
                None | Some(VmEntry::Long) => EntryMode::Long,
                Some(VmEntry::Real) => EntryMode::Real,
            };

            // Scheduling: the vCPU runs on its switcher's scheduling context.
            let keys = SchedulingKeys {
                priority: raw.priority.as_ref(),
                budget: raw.budget.as_ref(),
                period: raw.period.as_ref(),
            };
            let scheduling = self.scheduling(entry, &context, &keys);
            let vm_sets = keys.first().is_some() || dropped_scheduling_key(entry).is_some();
            if let Some(switcher) = switcher
                && vm_sets
            {
                let switcher_entry = component_entries[switcher];
                let switcher_sets = switcher_entry.value.as_ref().and_then(|raw| {
                    SchedulingKeys {
                        priority: raw.priority.as_ref(),
                        budget: raw.budget.as_ref(),
                        period: raw.period.as_ref(),
                    }
                    .first()
                    .map(|(key, span)| {
                        let spot = Spot {
                            file: switcher_entry.spot.file,
                            span,
                        };
                        let at = self.sources.error(&spot, "").location();
                        format!("{key} at {at}")
                    })
                });
                let switcher_sets = switcher_sets.or_else(|| {
                    dropped_scheduling_key(switcher_entry).map(|key| {
                        let at = self.sources.error(&switcher_entry.spot, "").location();
                        format!("{key} in its table at {at}")
                    })
                });
                let switcher_name = &components[switcher].name;
                if let Some(where_) = switcher_sets {
                    let spot = keys.first().map_or(entry.spot.clone(), |(_, span)| Spot {
                        file: entry.spot.file,
                        span,
                    });
                    let message = format!(
                        "set the scheduling of VM '{name}' on the VM or on its switcher '{switcher_name}', not both"
                    );
                    self.error(&spot, message).help = Some(format!(
                        "the VM's vCPU runs on the switcher's scheduling context; '{switcher_name}' sets {where_}"
                    ));
                } else if good {
                    let component = &mut components[switcher];
                    component.priority = scheduling.priority;
                    component.budget_us = scheduling.budget_us;
                    component.period_us = scheduling.period_us;
                }
            }

            let mut poke: Vec<usize> = Vec::new();
            for poker in raw.poke.iter().flatten() {
                let Some(index) = names.find(poker.get_ref()) else {
                    let help = names.help(poker.get_ref());
                    self.error(
                        &entry.at(poker),
                        format!(
                            "{context}: poke names unknown component '{}'",
                            poker.get_ref()
                        ),
                    )
                    .help = help;
                    continue;
                };
                if Some(index) == switcher {
                    self.error(
                        &entry.at(poker),
                        format!(
                            "{context}: poke names its switcher '{}', which already holds '{name}.vcpu'",
                            poker.get_ref()
                        ),
                    )
                    .help = Some("poke lists the other components that may stop the vCPU".into());
                    continue;
                }
                if poke.contains(&index) {
                    self.error(
                        &entry.at(poker),
                        format!("{context}: poke names '{}' twice", poker.get_ref()),
                    );
                    continue;
                }
                poke.push(index);
            }

            let console_input = raw
                .console_input
                .as_ref()
                .is_some_and(|value| *value.get_ref())
                || console == Some(name.as_str());
            if console_input {
                let spot = raw
                    .console_input
                    .as_ref()
                    .map_or(entry.spot.clone(), |value| entry.at(value));
                if let Some(other) = vms.iter().find(|vm| vm.console_input) {
                    good = false;
                    self.error(
                        &spot,
                        format!(
                            "{context}: console_input: the console's input already goes to VM '{}'",
                            other.name
                        ),
                    )
                    .help = Some("one VM reads the system console".into());
                } else if let Some(switcher) = switcher
                    && components[switcher]
                        .interrupts
                        .iter()
                        .any(|grant| grant.line == CONSOLE_LINE)
                {
                    good = false;
                    self.error(
                        &spot,
                        format!(
                            "{context}: console_input: its switcher '{}' already lists interrupt line {CONSOLE_LINE}",
                            components[switcher].name
                        ),
                    );
                }
            }

            if let (true, Some(switcher)) = (good, switcher) {
                if console_input {
                    components[switcher].interrupts.push(LineGrant {
                        line: CONSOLE_LINE,
                        wiring: Wiring::Default,
                    });
                }
                vms.push(Vm {
                    name: name.clone(),
                    switcher,
                    image,
                    memory_bytes,
                    entry: entry_mode,
                    poke,
                    kernel,
                    console_input,
                });
            }
        }
        if let Some(wanted) = console
            && !entries.iter().any(|entry| entry.name == wanted)
        {
            let spot = entries
                .first()
                .map(|entry| entry.spot.clone())
                .unwrap_or_default();
            let names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
            let help = match crate::diagnostic::closest(wanted, names.iter().copied()) {
                Some(close) => format!("did you mean '{close}'?"),
                None if names.is_empty() => "the system declares no VM".to_string(),
                None => format!("the VMs are: {}", names.join(", ")),
            };
            self.error(
                &spot,
                format!("the console's input is asked for VM '{wanted}', which the system does not declare"),
            )
            .help = Some(help);
        }
        // A guest bundle is packed under its VM's name, as a test VM image
        // of that name would be.
        for (index, vm) in vms.iter().enumerate() {
            if vm.kernel.is_none() {
                continue;
            }
            if let Some(other) = vms
                .iter()
                .enumerate()
                .find(|(other, used)| *other != index && used.image == vm.image)
                .map(|(_, other)| other)
            {
                let spot = entries
                    .iter()
                    .find(|entry| entry.name == other.name)
                    .map_or_else(|| entries[0].spot.clone(), |entry| entry.spot.clone());
                self.error(
                    &spot,
                    format!(
                        "VM '{}' starts from image '{}', the name under which VM '{}' packs its kernel",
                        other.name, other.image, vm.name
                    ),
                )
                .help = Some(format!("name VM '{}' or the image differently", vm.name));
            }
        }
        vms
    }

    /// The kernel, initrd and command line of an unmodified guest, if the
    /// VM names a kernel; `Err` after reporting what is wrong.
    fn kernel_guest(
        &mut self,
        entry: &Entry<RawVm>,
        context: &str,
        raw: &RawVm,
    ) -> Result<Option<KernelGuest>, ()> {
        let Some(kernel) = &raw.kernel else {
            let stray = [
                ("initrd", raw.initrd.as_ref().map(Spanned::span)),
                ("cmdline", raw.cmdline.as_ref().map(Spanned::span)),
            ]
            .into_iter()
            .chain(std::iter::once((
                "kind",
                raw.kind.as_ref().map(Spanned::span),
            )))
            .find_map(|(key, span)| Some((key, span?)));
            if let Some((key, span)) = stray {
                let spot = Spot {
                    file: entry.spot.file,
                    span,
                };
                self.error(&spot, format!("{context}: '{key}' needs a 'kernel'"))
                    .help = Some("an unmodified guest is `kernel = \"path\"` with an optional `initrd`, `cmdline` and `kind`".into());
                return Err(());
            }
            return Ok(None);
        };
        let directory = std::path::Path::new(&self.sources.files[entry.spot.file].name)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut good = true;
        let mut path = |key: &str, value: &Spanned<String>, this: &mut Self| {
            let text = value.get_ref();
            if text.is_empty() || text.contains('\0') {
                good = false;
                this.error(
                    &entry.at(value),
                    format!("{context}: '{key}' is not a file path"),
                );
            }
            directory.join(text)
        };
        let kernel_path = path("kernel", kernel, self);
        let initrd = raw
            .initrd
            .as_ref()
            .map(|initrd| path("initrd", initrd, self));
        let command_line = match &raw.cmdline {
            Some(line) => {
                let text = line.get_ref();
                if text.len() > MAX_GUEST_COMMAND_LINE {
                    good = false;
                    self.error(
                        &entry.at(line),
                        format!(
                            "{context}: the command line is {} bytes; a guest takes at most {MAX_GUEST_COMMAND_LINE}",
                            text.len()
                        ),
                    );
                } else if let Some(bad) = text.chars().find(|c| c.is_control()) {
                    good = false;
                    self.error(
                        &entry.at(line),
                        format!(
                            "{context}: the command line holds the control character {}",
                            crate::diagnostic::describe_character(bad)
                        ),
                    );
                }
                text.clone()
            }
            None => String::new(),
        };
        let kind = raw
            .kind
            .as_ref()
            .map_or(GuestKind::Linux, |kind| *kind.get_ref());
        if !good {
            return Err(());
        }
        Ok(Some(KernelGuest {
            kind,
            kernel: kernel_path,
            initrd,
            command_line,
        }))
    }

    fn queues(
        &mut self,
        entries: &[&Entry<crate::raw::RawQueue>],
        names: &Names,
        components: &[Component],
    ) -> Vec<Queue> {
        let queue_names = Names::of(entries);
        let mut queues = Vec::new();
        // Raw queue index -> checked queue index, for resolving replies.
        let mut kept: Vec<Option<usize>> = Vec::new();
        let mut replies: Vec<(usize, &Spanned<String>, &Entry<crate::raw::RawQueue>)> = Vec::new();
        for entry in entries {
            let Some(raw) = &entry.value else {
                kept.push(None);
                continue;
            };
            let context = format!("queue '{}'", entry.name);
            if let Some(reply) = &raw.reply
                && queue_names.find(reply.get_ref()).is_none()
            {
                let help = queue_names.help(reply.get_ref());
                self.error(
                    &entry.at(reply),
                    format!("{context}: unknown reply queue '{}'", reply.get_ref()),
                )
                .help = help;
            }
            let sender = self.end(entry, &context, "sender", &raw.from, names);
            let receiver = self.end(entry, &context, "receiver", &raw.to, names);
            let mut good = sender.is_some() && receiver.is_some();
            if sender.is_some() && sender == receiver {
                good = false;
                self.error(
                    &entry.at(&raw.to),
                    format!("{context} connects '{}' to itself", raw.from.get_ref()),
                )
                .help = Some("a queue joins two different components".into());
            }
            let slot_size = self.slot_size(entry, &context, &raw.slot_size);
            let slots = self.slots(entry, &context, &raw.slots);
            good &= slot_size.is_some() && slots.is_some();
            if let (Some(slot_size), Some(slots)) = (slot_size, slots) {
                let bytes = u64::from(slot_size) * u64::from(slots);
                if bytes > MAX_QUEUE_BYTES {
                    good = false;
                    self.error(
                        &entry.spot,
                        format!(
                            "{context} has {} of slots ({slots} x {slot_size} bytes); a queue holds at most {}",
                            format_size(bytes),
                            format_size(MAX_QUEUE_BYTES)
                        ),
                    );
                }
            }
            if good {
                kept.push(Some(queues.len()));
                if let Some(reply) = &raw.reply
                    && queue_names.find(reply.get_ref()).is_some()
                {
                    replies.push((queues.len(), reply, entry));
                }
                self.queue_spots.push(entry.spot.clone());
                queues.push(Queue {
                    name: entry.name.clone(),
                    sender: sender.unwrap_or_default(),
                    receiver: receiver.unwrap_or_default(),
                    slot_size: slot_size.unwrap_or_default(),
                    slots: slots.unwrap_or_default(),
                    reply: None,
                });
            } else {
                kept.push(None);
            }
        }
        let mut reply_of: Vec<Option<usize>> = vec![None; queues.len()];
        for (index, reply, entry) in replies {
            let context = format!("queue '{}'", entry.name);
            let Some(raw_index) = queue_names.find(reply.get_ref()) else {
                continue;
            };
            let Some(target) = kept[raw_index] else {
                continue;
            };
            let (request, answer) = (&queues[index], &queues[target]);
            if answer.sender != request.receiver || answer.receiver != request.sender {
                let (client, server) = (
                    &components[request.sender].name,
                    &components[request.receiver].name,
                );
                self.error(
                    &entry.at(reply),
                    format!(
                        "{context}: reply queue '{}' runs from '{}' to '{}', not back from '{server}' to '{client}'",
                        answer.name, components[answer.sender].name, components[answer.receiver].name
                    ),
                );
                continue;
            }
            if let Some(first) = reply_of[target] {
                let first_name = queues[first].name.clone();
                self.error(
                    &entry.at(reply),
                    format!(
                        "queue '{}' is the reply queue of both '{first_name}' and '{}'",
                        queues[target].name, entry.name
                    ),
                );
                continue;
            }
            reply_of[target] = Some(index);
            queues[index].reply = Some(target);
        }
        queues
    }

    fn end(
        &mut self,
        entry: &Entry<impl Sized>,
        context: &str,
        role: &str,
        name: &Spanned<String>,
        names: &Names,
    ) -> Option<usize> {
        let found = names.find(name.get_ref());
        if found.is_none() {
            let help = names.help(name.get_ref());
            self.error(
                &entry.at(name),
                format!("{context}: unknown {role} '{}'", name.get_ref()),
            )
            .help = help;
        }
        found
    }

    fn slot_size(
        &mut self,
        entry: &Entry<crate::raw::RawQueue>,
        context: &str,
        value: &Spanned<Number>,
    ) -> Option<u32> {
        let size = value.get_ref().0;
        if size == 0 || !size.is_multiple_of(8) {
            self.error(
                &entry.at(value),
                format!("{context}: slot_size {size} is not a positive multiple of 8 bytes"),
            );
            return None;
        }
        if size > u64::from(MAX_SLOT_SIZE) {
            self.error(
                &entry.at(value),
                format!(
                    "{context}: slot_size {size} is larger than {}",
                    format_size(u64::from(MAX_SLOT_SIZE))
                ),
            );
            return None;
        }
        Some(size as u32)
    }

    fn slots(
        &mut self,
        entry: &Entry<impl Sized>,
        context: &str,
        value: &Spanned<Number>,
    ) -> Option<u32> {
        let slots = value.get_ref().0;
        if !slots.is_power_of_two() {
            let lower = if slots == 0 { 1 } else { 1u64 << slots.ilog2() };
            self.error(
                &entry.at(value),
                format!("{context}: slots {slots} is not a power of two"),
            )
            .help = Some(format!("use {lower} or {}", lower * 2));
            return None;
        }
        if slots > MAX_SLOTS {
            self.error(
                &entry.at(value),
                format!("{context}: slots {slots} is more than {MAX_SLOTS}"),
            );
            return None;
        }
        Some(slots as u32)
    }

    /// Call paths: a queue with a `reply` is a call from its sender (the
    /// client, which waits for the reply) to its receiver (the server), and
    /// so is a `[calls.NAME]` table (through an endpoint). A server must not
    /// run below its client, and calls of both kinds together must not form
    /// a cycle.
    fn calls(&mut self, queues: &[Queue], endpoint_calls: &[Call], components: &[Component]) {
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            let Some(reply) = queue.reply else { continue };
            let (client, server) = (&components[queue.sender], &components[queue.receiver]);
            calls.push((queue.sender, queue.receiver));
            if server.priority < client.priority {
                let spot = self.queue_spots[index].clone();
                self.error(
                    &spot,
                    format!(
                        "priority inversion on call path '{}' -> '{}': server '{}' (priority {}) runs below its client '{}' (priority {})",
                        queue.name, queues[reply].name, server.name, server.priority, client.name, client.priority
                    ),
                )
                .help = Some(format!(
                    "a client waiting for its reply is delayed by everything between the two priorities; give '{}' priority {} or more",
                    server.name, client.priority
                ));
            }
        }
        for (index, call) in endpoint_calls.iter().enumerate() {
            let (client, server) = (&components[call.client], &components[call.server]);
            calls.push((call.client, call.server));
            if server.priority < client.priority {
                let spot = self.call_spots[index].clone();
                self.error(
                    &spot,
                    format!(
                        "priority inversion on call '{}': server '{}' (priority {}) runs below its client '{}' (priority {})",
                        call.name, server.name, server.priority, client.name, client.priority
                    ),
                )
                .help = Some(format!(
                    "a client waiting for its reply is delayed by everything between the two priorities; give '{}' priority {} or more",
                    server.name, client.priority
                ));
            }
        }
        // A cycle in the client -> server graph, reported once at its lowest member.
        let mut reported = vec![false; components.len()];
        for start in 0..components.len() {
            let mut stack = vec![(start, vec![start])];
            let mut seen = vec![false; components.len()];
            while let Some((current, path)) = stack.pop() {
                for &(client, server) in &calls {
                    if client != current {
                        continue;
                    }
                    if server == start {
                        if path.iter().all(|&member| member >= start) && !reported[start] {
                            reported[start] = true;
                            let mut names: Vec<&str> =
                                path.iter().map(|&i| components[i].name.as_str()).collect();
                            names.push(&components[start].name);
                            let spot = self.component_spots[start].clone();
                            self.error(&spot, format!("call cycle: {}", names.join(" calls ")))
                                .help = Some(
                                "components that wait for each other's replies can deadlock".into(),
                            );
                        }
                    } else if !seen[server] && !path.contains(&server) {
                        seen[server] = true;
                        let mut longer = path.clone();
                        longer.push(server);
                        stack.push((server, longer));
                    }
                }
            }
        }
    }

    /// `[calls.NAME]`: a client calls a different server, through one
    /// call per (client, server) pair, since the server knows each client
    /// by one badge.
    fn endpoint_calls(&mut self, entries: &[&Entry<RawCall>], names: &Names) -> Vec<Call> {
        let mut calls: Vec<Call> = Vec::new();
        for entry in entries {
            let Some(raw) = &entry.value else { continue };
            let context = format!("call '{}'", entry.name);
            let client = self.end(entry, &context, "client", &raw.from, names);
            let server = self.end(entry, &context, "server", &raw.to, names);
            let (Some(client), Some(server)) = (client, server) else {
                continue;
            };
            if client == server {
                self.error(
                    &entry.at(&raw.to),
                    format!("{context} connects '{}' to itself", raw.from.get_ref()),
                )
                .help =
                    Some("a component cannot call itself: it would wait for its own reply".into());
                continue;
            }
            let twice = calls
                .iter()
                .position(|call| call.client == client && call.server == server);
            if let Some(first) = twice {
                let first_at = self.sources.error(&self.call_spots[first], "").location();
                let first_name = calls[first].name.clone();
                self.error(
                    &entry.spot,
                    format!(
                        "calls '{first_name}' and '{}' both let '{}' call '{}'",
                        entry.name,
                        raw.from.get_ref(),
                        raw.to.get_ref()
                    ),
                )
                .help = Some(format!(
                    "a server knows each client by one badge: declare one call per client and server ('{first_name}' is at {first_at})"
                ));
                continue;
            }
            self.call_spots.push(entry.spot.clone());
            calls.push(Call {
                name: entry.name.clone(),
                client,
                server,
            });
        }
        calls
    }

    fn notifications(
        &mut self,
        entries: &[&Entry<crate::raw::RawNotification>],
        names: &Names,
    ) -> Vec<Notification> {
        let mut notifications = Vec::new();
        for entry in entries {
            let Some(raw) = &entry.value else { continue };
            let context = format!("notification '{}'", entry.name);
            let from = self.end(entry, &context, "sender", &raw.from, names);
            let to = self.end(entry, &context, "receiver", &raw.to, names);
            if from.is_some() && from == to {
                self.error(
                    &entry.at(&raw.to),
                    format!("{context} connects '{}' to itself", raw.from.get_ref()),
                );
                continue;
            }
            if let (Some(from), Some(to)) = (from, to) {
                notifications.push(Notification {
                    name: entry.name.clone(),
                    from,
                    to,
                });
            }
        }
        notifications
    }

    /// All components' memory, all queues and all VMs' guest memory must
    /// fit the machine.
    fn memory(
        &mut self,
        components: &[Component],
        queues: &[Queue],
        vms: &[Vm],
        options: &Options,
    ) {
        let queue_bytes: u64 = queues
            .iter()
            .map(|q| queue_pages(q.slot_size, q.slots) * PAGE_SIZE)
            .sum();
        let vm_bytes: u64 = vms.iter().map(|vm| vm.memory_bytes).sum();
        let component_bytes: u64 = components
            .iter()
            .map(|c| c.memory_bytes + c.dma.iter().map(|b| b.size).sum::<u64>())
            .sum();
        let total = component_bytes
            .saturating_add(queue_bytes)
            .saturating_add(vm_bytes);
        if total <= options.machine_memory {
            return;
        }
        // Report at the component whose memory first crosses the limit.
        let mut running = queue_bytes.saturating_add(vm_bytes);
        let mut at = components.len().saturating_sub(1);
        for (index, component) in components.iter().enumerate() {
            running = running.saturating_add(component.memory_bytes);
            if running > options.machine_memory {
                at = index;
                break;
            }
        }
        let spot = self.component_spots.get(at).cloned().unwrap_or_default();
        let mut largest: Vec<&Component> = components.iter().collect();
        largest.sort_by_key(|c| std::cmp::Reverse(c.memory_bytes));
        let list: Vec<String> = largest
            .iter()
            .take(3)
            .map(|c| format!("'{}' {}", c.name, format_size(c.memory_bytes)))
            .collect();
        let vm_part = if vms.is_empty() {
            String::new()
        } else {
            format!(", VMs {}", format_size_rounded(vm_bytes))
        };
        self.error(
            &spot,
            format!(
                "the system needs {} (components {}, queues {}{vm_part}) but the machine has {}",
                format_size_rounded(total),
                format_size_rounded(component_bytes),
                format_size_rounded(queue_bytes),
                format_size(options.machine_memory)
            ),
        )
        .help = Some(format!("the largest components: {}", list.join(", ")));
    }

    /// Notification bits, capability tables and addresses.
    fn layout(&mut self, system: &System) -> Layout {
        let count = system.components.len();
        let mut layout = Layout {
            fault_bits: vec![0; count],
            interrupt_bits: vec![Vec::new(); count],
            forwarder_bits: vec![Vec::new(); count],
            mmio_addresses: vec![Vec::new(); count],
            dma_addresses: vec![Vec::new(); count],
            pci_windows: vec![None; count],
            hints_addresses: vec![Vec::new(); count],
            capabilities: vec![Vec::new(); count],
            bit_uses: vec![Vec::new(); count],
            ..Layout::default()
        };

        // Bits: fault bits, then queue bits, then notifications, then interrupts.
        let take = |layout: &mut Layout, component: usize, use_: String| {
            layout.bit_uses[component].push(use_);
            (layout.bit_uses[component].len() - 1) as u32
        };
        for (index, component) in system.components.iter().enumerate() {
            if let Some(supervisor) = component.supervisor {
                layout.fault_bits[index] = take(
                    &mut layout,
                    supervisor,
                    format!("fault of '{}'", component.name),
                );
            }
        }
        let mut queue_cursor = vec![QUEUE_WINDOW; count];
        for queue in &system.queues {
            let receiver_bit = take(
                &mut layout,
                queue.receiver,
                format!("queue '{}' has messages", queue.name),
            );
            let sender_bit = take(
                &mut layout,
                queue.sender,
                format!("queue '{}' has space", queue.name),
            );
            let pages = queue_pages(queue.slot_size, queue.slots);
            let mut place = |component: usize| {
                let address = queue_cursor[component];
                queue_cursor[component] += (pages + 1) * PAGE_SIZE;
                address
            };
            let sender_address = place(queue.sender);
            let receiver_address = place(queue.receiver);
            layout.queues.push(QueuePlacement {
                sender_address,
                receiver_address,
                receiver_bit,
                sender_bit,
                pages,
            });
        }
        for notification in &system.notifications {
            let bit = take(
                &mut layout,
                notification.to,
                format!("notification '{}'", notification.name),
            );
            layout.notification_bits.push(bit);
        }
        // Badges: each server numbers its callers 1, 2, 3, ... in
        // declaration order.
        let mut callers = vec![0u64; count];
        for call in &system.calls {
            callers[call.server] += 1;
            layout.call_badges.push(callers[call.server]);
        }
        for (index, component) in system.components.iter().enumerate() {
            for grant in &component.interrupts {
                let line = grant.line;
                let bit = take(&mut layout, index, format!("interrupt line {line}"));
                layout.interrupt_bits[index].push(bit);
                let forwarder = system.interrupt_forwarder.filter(|_| line != CONSOLE_LINE);
                let bits = forwarder.map(|forwarder| {
                    let driver = &component.name;
                    ForwarderBits {
                        fired: take(
                            &mut layout,
                            forwarder,
                            format!("interrupt line {line} fired (for '{driver}')"),
                        ),
                        acknowledged: take(
                            &mut layout,
                            forwarder,
                            format!("interrupt line {line} acknowledged by '{driver}'"),
                        ),
                        ready: take(
                            &mut layout,
                            forwarder,
                            format!("interrupt line {line}: '{driver}' (re)started"),
                        ),
                    }
                });
                layout.forwarder_bits[index].push(bits);
            }
            let mut cursor = DEVICE_WINDOW;
            for region in &component.mmio {
                layout.mmio_addresses[index].push(cursor);
                cursor = cursor.saturating_add(region.size + PAGE_SIZE);
            }
            for buffer in &component.dma {
                layout.dma_addresses[index].push(cursor);
                cursor = cursor.saturating_add(buffer.size + PAGE_SIZE);
            }
            if component.pci.is_some() {
                layout.pci_windows[index] = Some(cursor);
                cursor = cursor.saturating_add(PCI_WINDOW);
            }
            // A QoS controller reads every VM's guest-hints page.
            if system.scheduling_controller == Some(index) && component.program == QOS {
                for vm in 0..system.vms.len() {
                    layout.hints_addresses[index].push((vm, cursor));
                    cursor = cursor.saturating_add(2 * PAGE_SIZE);
                }
            }
            if cursor > VM_MEMORY_ADDRESS {
                let spot = self.component_spots[index].clone();
                self.error(
                    &spot,
                    format!(
                        "component '{}': its mmio regions and DMA buffers need more than its device window of {} (with a guard page after each)",
                        component.name,
                        format_size(VM_MEMORY_ADDRESS - DEVICE_WINDOW)
                    ),
                );
            }
        }
        for (index, uses) in layout.bit_uses.iter().enumerate() {
            if uses.len() > NOTIFICATION_BITS {
                let kinds = ["fault of", "queue", "notification", "interrupt"];
                let counts: Vec<String> = kinds
                    .iter()
                    .map(|kind| {
                        (
                            kind,
                            uses.iter().filter(|use_| use_.starts_with(kind)).count(),
                        )
                    })
                    .filter(|(_, n)| *n > 0)
                    .map(|(kind, n)| format!("{n} {}", kind.trim_end_matches(" of")))
                    .collect();
                let spot = self.component_spots[index].clone();
                self.error(
                    &spot,
                    format!(
                        "component '{}' needs {} notification bits ({}); a notification word has {NOTIFICATION_BITS}",
                        system.components[index].name,
                        uses.len(),
                        counts.join(", ")
                    ),
                );
            }
        }

        // Capabilities, per holder in a fixed order.
        let notification_badge = |bit: u32| {
            if (bit as usize) < NOTIFICATION_BITS {
                1u64 << bit
            } else {
                0
            }
        };
        for (queue, placement) in system.queues.iter().zip(&layout.queues) {
            layout.capabilities[queue.sender].push(Capability {
                name: queue.name.clone(),
                kind: CapabilityKind::Notification,
                target: Some(queue.receiver),
                badge: notification_badge(placement.receiver_bit),
            });
            layout.capabilities[queue.receiver].push(Capability {
                name: queue.name.clone(),
                kind: CapabilityKind::Notification,
                target: Some(queue.sender),
                badge: notification_badge(placement.sender_bit),
            });
        }
        for (notification, &bit) in system.notifications.iter().zip(&layout.notification_bits) {
            layout.capabilities[notification.from].push(Capability {
                name: notification.name.clone(),
                kind: CapabilityKind::Notification,
                target: Some(notification.to),
                badge: notification_badge(bit),
            });
        }
        for (call, &badge) in system.calls.iter().zip(&layout.call_badges) {
            layout.capabilities[call.client].push(Capability {
                name: call.name.clone(),
                kind: CapabilityKind::Endpoint,
                target: Some(call.server),
                badge,
            });
        }
        for (index, component) in system.components.iter().enumerate() {
            for ((grant, &bit), bits) in component
                .interrupts
                .iter()
                .zip(&layout.interrupt_bits[index])
                .zip(&layout.forwarder_bits[index])
            {
                let (Some(bits), Some(forwarder)) = (bits, system.interrupt_forwarder) else {
                    continue;
                };
                let name = format!("irq{}", grant.line);
                let deliver = Capability {
                    name: name.clone(),
                    kind: CapabilityKind::Notification,
                    target: Some(index),
                    badge: notification_badge(bit),
                };
                let to_forwarder = |suffix: &str, bit: u32| Capability {
                    name: format!("{name}.{suffix}"),
                    kind: CapabilityKind::Notification,
                    target: Some(forwarder),
                    badge: notification_badge(bit),
                };
                let acknowledge = to_forwarder("ack", bits.acknowledged);
                let ready = to_forwarder("ready", bits.ready);
                layout.capabilities[forwarder].push(deliver);
                layout.capabilities[index].push(acknowledge);
                layout.capabilities[index].push(ready);
            }
        }
        for (index, component) in system.components.iter().enumerate() {
            if let Some(supervisor) = component.supervisor {
                layout.capabilities[supervisor].push(Capability {
                    name: component.name.clone(),
                    kind: CapabilityKind::ComponentControl,
                    target: Some(index),
                    badge: 0,
                });
            }
        }
        let context_capability = |target: usize| Capability {
            name: format!("{}.sc", system.components[target].name),
            kind: CapabilityKind::SchedulingContext,
            target: Some(target),
            badge: 0,
        };
        for (index, component) in system.components.iter().enumerate() {
            if system.scheduling_controller == Some(index) {
                layout.capabilities[index].push(Capability {
                    name: "scheduling".into(),
                    kind: CapabilityKind::SchedulingControl,
                    target: None,
                    badge: 0,
                });
                for target in 0..count {
                    layout.capabilities[index].push(context_capability(target));
                }
            } else {
                for &target in &component.observe {
                    layout.capabilities[index].push(context_capability(target));
                }
            }
        }
        for (index, vm) in system.vms.iter().enumerate() {
            let vm_capability = |kind: CapabilityKind, suffix: &str| Capability {
                name: format!("{}.{suffix}", vm.name),
                kind,
                target: Some(index),
                badge: 0,
            };
            layout.capabilities[vm.switcher].push(vm_capability(CapabilityKind::Vmcs, "vmcs"));
            layout.capabilities[vm.switcher].push(vm_capability(CapabilityKind::Vcpu, "vcpu"));
            for &poker in &vm.poke {
                layout.capabilities[poker].push(vm_capability(CapabilityKind::Vcpu, "vcpu"));
            }
        }
        if let Some(test) = &system.test {
            for &target in &test.targets {
                layout.capabilities[test.injector].push(Capability {
                    name: system.components[target].name.clone(),
                    kind: CapabilityKind::Injection,
                    target: Some(target),
                    badge: 0,
                });
            }
        }
        let mut total = 0;
        for (index, capabilities) in layout.capabilities.iter().enumerate() {
            let spot = self.component_spots[index].clone();
            let name = &system.components[index].name;
            total += capabilities.len();
            let injections = injection_count(system, index);
            if capabilities.len() > MAX_CAPABILITIES_PER_COMPONENT
                && capabilities.len() - injections <= MAX_CAPABILITIES_PER_COMPONENT
            {
                // The targets are what makes it too many.
                let own = capabilities.len() - injections;
                let room = MAX_CAPABILITIES_PER_COMPONENT - own;
                let spot = self.test_list_spot();
                self.error(
                    &spot,
                    format!(
                        "[test] targets: the injector '{name}' would hold {} capabilities, {injections} of them to inject faults; a component holds at most {MAX_CAPABILITIES_PER_COMPONENT}",
                        capabilities.len()
                    ),
                )
                .help = Some(format!(
                    "'{name}' holds {own} capabilities besides them, so it may inject into at most {room} components: list fewer targets, or inject from a component that holds fewer capabilities"
                ));
            } else if capabilities.len() > MAX_CAPABILITIES_PER_COMPONENT {
                self.error(
                    &spot,
                    format!(
                        "component '{name}' would hold {} capabilities; a component holds at most {MAX_CAPABILITIES_PER_COMPONENT}",
                        capabilities.len()
                    ),
                );
            }
            for (position, capability) in capabilities.iter().enumerate() {
                if capability.name.len() > 32 {
                    self.error(
                        &spot,
                        format!(
                            "component '{name}' would hold a capability named '{}', longer than 32 characters",
                            capability.name
                        ),
                    )
                    .help = Some("shorten the component name to 29 characters or fewer".into());
                }
                let earlier = capabilities[..position]
                    .iter()
                    .find(|earlier| earlier.name == capability.name);
                if let Some(earlier) = earlier
                    && capability.kind == CapabilityKind::Injection
                {
                    // Injection capabilities come last: the earlier one is
                    // the injector's own.
                    let target_at = position + injections - capabilities.len();
                    let spot = self.test_target_spot(target_at);
                    self.error(
                        &spot,
                        format!(
                            "[test] targets: the injector '{name}' already holds a capability named '{}' ({}); its capability to inject faults into '{}' would have the same name",
                            capability.name,
                            kind_text(earlier.kind),
                            capability.name
                        ),
                    )
                    .help = Some(format!(
                        "a component finds its capabilities by name: inject from a component that holds no other capability named '{}'",
                        capability.name
                    ));
                } else if earlier.is_some() {
                    self.error(
                        &spot,
                        format!("component '{name}' would hold two capabilities named '{}'", capability.name),
                    )
                    .help = Some("queues, notifications, calls and supervised components it holds need distinct names".into());
                }
            }
        }
        if total > MAX_CAPABILITIES {
            let spot = self.component_spots.last().cloned().unwrap_or_default();
            self.error(
                &spot,
                format!("the system has {total} capabilities; the core supports at most {MAX_CAPABILITIES}"),
            );
        }
        self.start_pages(system, &layout);
        layout
    }

    /// Every resource a component is given is listed on its start page,
    /// which holds [`MAX_RESOURCES`]: a system that would need more is
    /// refused rather than started with some missing.
    fn start_pages(&mut self, system: &System, layout: &Layout) {
        for (index, component) in system.components.iter().enumerate() {
            let incoming = layout
                .capabilities
                .iter()
                .flatten()
                .filter(|capability| {
                    capability.kind == CapabilityKind::Notification
                        && capability.target == Some(index)
                        && !system
                            .queues
                            .iter()
                            .any(|queue| queue.name == capability.name)
                })
                .count();
            let queue_ends = system
                .queues
                .iter()
                .map(|queue| {
                    usize::from(queue.sender == index) + usize::from(queue.receiver == index)
                })
                .sum::<usize>();
            // A server finds each client under the client's name.
            let callers = system
                .calls
                .iter()
                .filter(|call| call.server == index)
                .count();
            let vm = if system.vm_of(index).is_some() { 3 } else { 0 };
            let ports: usize = component
                .ports
                .iter()
                .map(|grant| port_pieces(grant).len())
                .sum();
            let needed = layout.capabilities[index].len()
                + queue_ends
                + system.children(index).count()
                + incoming
                + callers
                + vm
                + ports
                + component.mmio.len()
                + component.dma.len()
                // The function, and up to six BARs.
                + if component.pci.is_some() { 7 } else { 0 }
                + layout.forwarder_bits[index]
                    .iter()
                    .filter(|bits| bits.is_none())
                    .count()
                + if system.interrupt_forwarder == Some(index) {
                    layout.forwarder_bits.iter().flatten().flatten().count()
                } else {
                    0
                };
            let injections = injection_count(system, index);
            if needed > MAX_RESOURCES && needed - injections <= MAX_RESOURCES {
                // The targets are what makes it too many.
                let own = needed - injections;
                let room = MAX_RESOURCES - own;
                let spot = self.test_list_spot();
                self.error(
                    &spot,
                    format!(
                        "[test] targets: the injector '{}' would be given {needed} resources, {injections} of them capabilities to inject faults; its start page lists at most {MAX_RESOURCES}",
                        component.name
                    ),
                )
                .help = Some(format!(
                    "'{}' is given {own} resources besides them, so it may inject into at most {room} components: list fewer targets, or inject from a component that is given fewer resources",
                    component.name
                ));
            } else if needed > MAX_RESOURCES {
                let spot = self.component_spots[index].clone();
                self.error(
                    &spot,
                    format!(
                        "component '{}' would be given {needed} resources (capabilities, queue ends, notifications, grants); its start page lists at most {MAX_RESOURCES}",
                        component.name
                    ),
                );
            }
        }
    }
}

impl Checker<'_> {
    /// Where `[test] targets` is written.
    fn test_list_spot(&self) -> Spot {
        self.test_spots
            .as_ref()
            .map(|spots| spots.list.clone())
            .unwrap_or_default()
    }

    /// Where the `index`-th kept target of `[test]` is written.
    fn test_target_spot(&self, index: usize) -> Spot {
        self.test_spots
            .as_ref()
            .and_then(|spots| spots.targets.get(index).cloned())
            .unwrap_or_else(|| self.test_list_spot())
    }
}

/// How many capabilities to inject faults component `index` holds.
fn injection_count(system: &System, index: usize) -> usize {
    system
        .test
        .as_ref()
        .filter(|test| test.injector == index)
        .map_or(0, |test| test.targets.len())
}

/// What a capability of `kind` is, for messages.
fn kind_text(kind: CapabilityKind) -> &'static str {
    match kind {
        CapabilityKind::Notification => {
            "a notification capability, for a queue, a notification or an interrupt line"
        }
        CapabilityKind::ComponentControl => "the control capability of a component it supervises",
        CapabilityKind::SchedulingControl => "the scheduling-control capability",
        CapabilityKind::SchedulingContext => "a scheduling-context capability",
        CapabilityKind::Vmcs => "a VMCS capability",
        CapabilityKind::Vcpu => "a vCPU capability",
        CapabilityKind::Injection => "a capability to inject faults",
        CapabilityKind::Endpoint => "an endpoint capability, for a call",
    }
}

/// The pieces a port grant is emitted as: the spec's `count` is 16 bits, so
/// a range of all 65536 ports takes two records.
pub fn port_pieces(grant: &PortGrant) -> Vec<(u16, u16)> {
    let count = u32::from(grant.last) - u32::from(grant.first) + 1;
    if count <= u32::from(u16::MAX) {
        vec![(grant.first, count as u16)]
    } else {
        vec![(0, 0x8000), (0x8000, 0x8000)]
    }
}

fn port_text(grant: &PortGrant) -> String {
    if grant.first == grant.last {
        format!("{:#x}", grant.first)
    } else {
        format!("{:#x}-{:#x}", grant.first, grant.last)
    }
}

fn mmio_text(grant: &MmioGrant) -> String {
    format!(
        "{:#x}-{:#x}",
        grant.physical,
        grant.physical + grant.size - 1
    )
}

/// The NIC among `seen` (name, MAC, network, VM) whose MAC address is
/// `mac`, if any. MAC addresses are hashes of NIC names, so two names may
/// (very rarely) share one.
fn mac_collision<'s>(
    seen: &'s [(String, [u8; 6], String, String)],
    mac: &[u8; 6],
) -> Option<&'s (String, [u8; 6], String, String)> {
    seen.iter().find(|(_, other, ..)| other == mac)
}

/// `"xx:xx:xx:xx:xx:xx"` (hex, either case) as a MAC address.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A size rounded to whole KiB or MiB for summaries.
fn format_size_rounded(bytes: u64) -> String {
    if bytes >= 1 << 20 && !bytes.is_multiple_of(1 << 20) {
        format!("{:.1}MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format_size(bytes)
    }
}

/// `"bb:dd.f"` (hex bus and device, function 0-7) as a bus address.
pub fn parse_pci_address(text: &str) -> Option<u32> {
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let bus = u32::from_str_radix(bus, 16)
        .ok()
        .filter(|b| *b < 256 && !bus.is_empty())?;
    let device = u32::from_str_radix(device, 16).ok().filter(|d| *d < 32)?;
    let function = function.parse::<u32>().ok().filter(|f| *f < 8)?;
    Some(bus << 8 | device << 3 | function)
}

/// A bus address as `bb:dd.f`.
pub fn pci_address_text(address: u32) -> String {
    format!(
        "{:02x}:{:02x}.{}",
        address >> 8,
        (address >> 3) & 0x1f,
        address & 7
    )
}
