//! The contents of a component's start-information page.
//!
//! At every (re)start the core writes one read-only page into the
//! component (`microvisor_abi::start`): who it is (index, name, arguments,
//! generation) and every resource the boot spec gives it — its capabilities
//! with their handles in this generation, the ends of its queues, the
//! components it supervises with their restart policy, the notification
//! bits others may set in its word, the components that may call it (each
//! named after the caller, with the badge its calls arrive with), its VM's
//! memory, image and state page
//! when it is a world switcher, its device memory and DMA buffers (with
//! their physical addresses), its PCI function (its bus address, IDs, MSI
//! message and mapped BARs), and its interrupt lines (the forwarder's
//! each named after the driver it goes to). This module only
//! computes the page from the spec; the core copies it into a fresh frame.
//! Entries past [`MAX_RESOURCES`] are dropped (capdl refuses systems that
//! would need more).

use microvisor_abi::PAGE_SIZE;
use microvisor_abi::spec::{self, CapabilityKind, MemoryKind, Spec};

use crate::pci;
use microvisor_abi::start::{
    CONSOLE_RESOURCE, MAX_RESOURCES, QueueEnd, Resource, ResourceView, START_MAGIC, StartInfo,
    Supervised,
};
use zerocopy::FromZeros;

/// Who the page is for.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// The component's index in the spec.
    pub index: usize,
    pub name: &'a str,
    pub args: &'a str,
    /// 1 at first start, +1 per restart; part of every handle.
    pub generation: u32,
    /// The TSC's rate, ticks per second.
    pub tsc_hz: u64,
}

/// What the core decided at boot that the page reports besides the spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Given<'a> {
    /// The size of the VM's boot image, for a world switcher whose VM was
    /// created.
    pub guest_image_bytes: Option<u64>,
    /// Per memory grant of the spec: the physical address of its DMA
    /// buffer (0 for device memory).
    pub dma: &'a [u64],
    /// The PCI function the component drives, if it was found.
    pub pci: Option<PciGiven<'a>>,
}

/// A found PCI function and where its MSI messages go.
#[derive(Clone, Copy, Debug)]
pub struct PciGiven<'a> {
    pub function: &'a pci::Function,
    /// The message address of this CPU's local APIC.
    pub msi_address: u64,
    /// The message data (vector) of the first MSI vector.
    pub msi_data: u32,
}

/// The page of component `who` in the system `spec`.
pub fn contents(spec: &Spec<'_>, who: Identity<'_>, given: &Given<'_>) -> StartInfo {
    let guest_image_bytes = given.guest_image_bytes;
    let dma = given.dma;
    let mut info = identity_only(who);
    let mut resources = Resources {
        list: [Resource::EMPTY; MAX_RESOURCES],
        count: 0,
    };
    let index = who.index;
    let capabilities = spec.capabilities_of(index);
    let handle = |slot: usize| crate::capability::encode(slot, who.generation);
    let handle_of = |name: &str, kind: CapabilityKind| {
        capabilities
            .iter()
            .position(|c| c.kind == kind as u32 && spec::name_of(&c.name) == Some(name))
            .map_or(u64::MAX, handle)
    };
    for (slot, capability) in capabilities.iter().enumerate() {
        resources.push(
            spec::name_of(&capability.name).unwrap_or(""),
            ResourceView::Capability {
                handle: handle(slot),
                kind: capability.kind,
            },
        );
    }
    for declared in spec.queues {
        let name = spec::name_of(&declared.name).unwrap_or("");
        let end = |address, bit| QueueEnd {
            address,
            slot_size: declared.slot_size,
            slot_count: declared.slot_count,
            bit,
            signal: handle_of(name, CapabilityKind::Notification),
        };
        if declared.sender as usize == index {
            let view = ResourceView::QueueSend(end(declared.sender_address, declared.sender_bit));
            resources.push(name, view);
        }
        if declared.receiver as usize == index {
            let view =
                ResourceView::QueueReceive(end(declared.receiver_address, declared.receiver_bit));
            resources.push(name, view);
        }
    }
    for declared in spec
        .components
        .iter()
        .filter(|c| c.supervisor as usize == index)
    {
        let name = spec::name_of(&declared.name).unwrap_or("");
        let child = Supervised {
            control: handle_of(name, CapabilityKind::ComponentControl),
            fault_bit: declared.fault_bit,
            max_restarts: declared.max_restarts,
            backoff_ms: u64::from(declared.restart_backoff_ms),
            watchdog_ms: declared.watchdog_ms,
        };
        resources.push(name, ResourceView::Supervised(child));
    }
    for declared in spec.capabilities.iter().filter(|c| {
        c.kind == CapabilityKind::Notification as u32
            && c.target as usize == index
            && !spec.queues.iter().any(|q| q.name == c.name)
    }) {
        let name = spec::name_of(&declared.name).unwrap_or("");
        resources.push(
            name,
            ResourceView::Incoming {
                mask: declared.badge,
            },
        );
    }
    // A server learns each caller's badge under the caller's name (capdl
    // gives a client at most one endpoint to a server).
    for declared in spec
        .capabilities
        .iter()
        .filter(|c| c.kind == CapabilityKind::Endpoint as u32 && c.target as usize == index)
    {
        let caller = spec
            .components
            .get(declared.holder as usize)
            .and_then(|caller| spec::name_of(&caller.name))
            .unwrap_or("");
        resources.push(
            caller,
            ResourceView::Caller {
                badge: declared.badge,
            },
        );
    }
    if let (Some((_, declared)), Some(image_bytes)) = (spec.vm_of(index), guest_image_bytes) {
        let name = spec::name_of(&declared.name).unwrap_or("");
        let memory = ResourceView::GuestMemory {
            address: declared.memory_address,
            size: declared.memory_bytes,
            entry: declared.entry,
        };
        resources.push(name, memory);
        let image = ResourceView::GuestImage {
            address: declared.image_address,
            size: image_bytes,
        };
        resources.push(name, image);
        let state = ResourceView::VcpuState {
            address: declared.state_address,
        };
        resources.push(name, state);
    }
    let mine = |component: u32| component as usize == index;
    for grant in spec.port_grants.iter().filter(|g| mine(g.component)) {
        let (first, count) = (u64::from(grant.first), u64::from(grant.count));
        resources.push("ports", ResourceView::Ports { first, count });
    }
    for (index, grant) in spec.memory_grants.iter().enumerate() {
        if !mine(grant.component) {
            continue;
        }
        let (address, size) = (grant.address, grant.size);
        if grant.kind == MemoryKind::Device as u32 {
            resources.push("mmio", ResourceView::Memory { address, size });
        } else if grant.kind == MemoryKind::GuestHints as u32 {
            // Named after the VM's world switcher.
            let switcher = usize::try_from(grant.physical)
                .ok()
                .and_then(|vm| spec.vms.get(vm))
                .and_then(|vm| spec.components.get(vm.switcher as usize))
                .and_then(|switcher| spec::name_of(&switcher.name))
                .unwrap_or("");
            resources.push(switcher, ResourceView::GuestHints { address });
        } else {
            let physical = dma.get(index).copied().unwrap_or(0);
            let view = ResourceView::Dma {
                address,
                size,
                physical,
            };
            resources.push("dma", view);
        }
    }
    if let (Some(declared), Some(found)) = (
        spec.pci_devices.iter().find(|p| mine(p.component)),
        given.pci,
    ) {
        let function = found.function;
        resources.push(
            "pci",
            ResourceView::Pci {
                function: function.address,
                vendor: function.vendor,
                device: function.device,
                msi_vectors: declared.msi_vectors,
                msi_first_line: declared.msi_first_line,
                msi_address: found.msi_address,
                msi_data: found.msi_data,
            },
        );
        let names = ["bar0", "bar1", "bar2", "bar3", "bar4", "bar5"];
        let placed = pci::place_bars(function, declared.bars, declared.window);
        for (name, bar) in names.iter().zip(placed) {
            if let Some(bar) = bar {
                let view = ResourceView::Memory {
                    address: bar.address,
                    size: bar.size,
                };
                resources.push(name, view);
            }
        }
    }
    for grant in spec.interrupt_grants.iter().filter(|g| mine(g.component)) {
        let view = ResourceView::Interrupt {
            line: u64::from(grant.line),
            bit: grant.bit,
        };
        // The forwarder finds each line under its driver's name.
        let owner = spec.components.get(grant.owner as usize);
        let name = if grant.line == microvisor_abi::syscall::CONSOLE_LINE {
            CONSOLE_RESOURCE
        } else if let Some(owner) = owner {
            spec::name_of(&owner.name).unwrap_or("interrupt")
        } else {
            "interrupt"
        };
        resources.push(name, view);
    }
    info.resource_count = resources.count as u32;
    info.resources = resources.list;
    info
}

/// The page with who the component is and no resources.
fn identity_only(who: Identity<'_>) -> StartInfo {
    let mut info = StartInfo::new_zeroed();
    info.magic = START_MAGIC;
    info.component_index = who.index as u32;
    let name = &who.name.as_bytes()[..who.name.len().min(info.name.len())];
    info.name_len = name.len() as u32;
    info.name[..name.len()].copy_from_slice(name);
    let args = &who.args.as_bytes()[..who.args.len().min(info.args.len())];
    info.args_len = args.len() as u32;
    info.args[..args.len()].copy_from_slice(args);
    info.generation = who.generation;
    info.tsc_hz = who.tsc_hz;
    info
}

struct Resources {
    list: [Resource; MAX_RESOURCES],
    count: usize,
}

impl Resources {
    fn push(&mut self, name: &str, view: ResourceView) {
        if let Some(slot) = self.list.get_mut(self.count) {
            *slot = Resource::new(name, view);
            self.count += 1;
        }
    }
}

const _: () = assert!(size_of::<StartInfo>() as u64 <= PAGE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_abi::spec::{
        CapabilitySpec, ComponentSpec, InterruptGrant, MemoryGrant, QueueSpec, SpecBuilder, VmSpec,
        name_field,
    };
    use microvisor_abi::start::ResourceKind;

    fn component(name: &str, capability_first: u32, capability_count: u32) -> ComponentSpec {
        ComponentSpec::example(name, capability_first, capability_count)
    }

    fn capability(
        name: &str,
        holder: u32,
        kind: CapabilityKind,
        target: u32,
        badge: u64,
    ) -> CapabilitySpec {
        CapabilitySpec {
            name: name_field(name),
            holder,
            kind: kind as u32,
            target,
            reserved: 0,
            badge,
        }
    }

    /// A supervisor (0) of a world switcher (1) whose VM is `vm`, and a
    /// queue from the supervisor to the switcher.
    fn system() -> Vec<u8> {
        let mut spec = SpecBuilder::default();
        spec.components.push(component("supervisor", 0, 3));
        spec.components.push(component("switcher", 3, 3));
        spec.components[1].supervisor = 0;
        spec.components[1].fault_bit = 6;
        spec.components[1].max_restarts = 5;
        spec.components[1].restart_backoff_ms = 20;
        spec.capabilities = vec![
            capability("requests", 0, CapabilityKind::Notification, 1, 1 << 2),
            capability("switcher", 0, CapabilityKind::ComponentControl, 1, 0),
            capability("wake", 0, CapabilityKind::Notification, 1, 1 << 4),
            capability("vm.vmcs", 1, CapabilityKind::Vmcs, 0, 0),
            capability("vm.vcpu", 1, CapabilityKind::Vcpu, 0, 0),
            capability("requests", 1, CapabilityKind::Notification, 0, 1 << 3),
        ];
        spec.queues.push(QueueSpec {
            name: name_field("requests"),
            sender: 0,
            receiver: 1,
            slot_size: 64,
            slot_count: 16,
            sender_address: 0x10_0000_0000,
            receiver_address: 0x11_0000_0000,
            receiver_bit: 2,
            sender_bit: 3,
        });
        spec.vms.push(VmSpec {
            name: name_field("vm"),
            image: name_field("hello"),
            switcher: 1,
            entry: 1,
            memory_bytes: 1 << 20,
            memory_address: 0x40_0000_0000,
            image_address: 0x41_0000_0000,
            state_address: 0x42_0000_0000,
        });
        spec.interrupt_grants.push(InterruptGrant {
            component: 1,
            line: 4,
            bit: 9,
            wiring: 0,
            owner: spec::NONE,
            reserved: 0,
        });
        // Line 8 reaches component 1 as the forwarder of component 0's.
        spec.interrupt_grants.push(InterruptGrant {
            component: 1,
            line: 8,
            bit: 10,
            wiring: 0,
            owner: 0,
            reserved: 0,
        });
        spec.finish()
    }

    fn views(info: &StartInfo) -> Vec<(String, ResourceView)> {
        info.views().map(|(n, v)| (n.to_string(), v)).collect()
    }

    #[test]
    fn the_supervisor_sees_its_capabilities_queue_and_child() {
        let bytes = system();
        let spec = Spec::parse(&bytes).unwrap();
        let who = Identity {
            index: 0,
            name: "supervisor",
            args: "verbose=1",
            generation: 2,
            tsc_hz: 2_600_000_000,
        };
        let info = contents(&spec, who, &Given::default());
        assert_eq!(info.magic, START_MAGIC);
        assert_eq!(info.name(), "supervisor");
        assert_eq!(info.args(), "verbose=1");
        assert_eq!(info.generation, 2);
        assert_eq!(info.tsc_hz, 2_600_000_000);
        let handle = |slot| crate::capability::encode(slot, 2);
        assert_eq!(
            views(&info),
            [
                (
                    "requests".into(),
                    ResourceView::Capability {
                        handle: handle(0),
                        kind: 1
                    }
                ),
                (
                    "switcher".into(),
                    ResourceView::Capability {
                        handle: handle(1),
                        kind: 3
                    }
                ),
                (
                    "wake".into(),
                    ResourceView::Capability {
                        handle: handle(2),
                        kind: 1
                    }
                ),
                (
                    "requests".into(),
                    ResourceView::QueueSend(QueueEnd {
                        address: 0x10_0000_0000,
                        slot_size: 64,
                        slot_count: 16,
                        bit: 3,
                        signal: handle(0),
                    })
                ),
                (
                    "switcher".into(),
                    ResourceView::Supervised(Supervised {
                        control: handle(1),
                        fault_bit: 6,
                        max_restarts: 5,
                        backoff_ms: 20,
                        watchdog_ms: 0,
                    })
                ),
            ]
        );
    }

    #[test]
    fn a_pci_function_is_listed_with_its_msi_message_and_bars() {
        let mut builder = SpecBuilder::default();
        builder.components.push(component("driver", 0, 0));
        builder.pci_devices.push(microvisor_abi::spec::PciSpec {
            component: 0,
            vendor: 0x1af4,
            device: 0x1042,
            address: spec::NONE,
            bars: 1 << 4,
            msi_vectors: 1,
            msi_first_line: 24,
            window: 0x1000_0000_0000,
        });
        let bytes = builder.finish();
        let spec = Spec::parse(&bytes).unwrap();
        let mut bars = [pci::Bar::default(); 6];
        bars[1] = pci::Bar {
            physical: 0xfebd_1000,
            size: 4096,
            memory: true,
        };
        bars[4] = pci::Bar {
            physical: 0xfe00_4000,
            size: 0x4000,
            memory: true,
        };
        let function = pci::Function {
            address: 0x18,
            vendor: 0x1af4,
            device: 0x1042,
            bars,
        };
        let who = Identity {
            index: 0,
            name: "driver",
            args: "",
            generation: 1,
            tsc_hz: 1,
        };
        let given = Given {
            pci: Some(PciGiven {
                function: &function,
                msi_address: 0xfee0_0000,
                msi_data: 0x68,
            }),
            ..Given::default()
        };
        let info = contents(&spec, who, &given);
        assert_eq!(
            views(&info),
            [
                (
                    "pci".into(),
                    ResourceView::Pci {
                        function: 0x18,
                        vendor: 0x1af4,
                        device: 0x1042,
                        msi_vectors: 1,
                        msi_first_line: 24,
                        msi_address: 0xfee0_0000,
                        msi_data: 0x68
                    }
                ),
                // Only BAR 4 was asked for.
                (
                    "bar4".into(),
                    ResourceView::Memory {
                        address: 0x1000_0000_0000,
                        size: 0x4000
                    }
                ),
            ]
        );
    }

    #[test]
    fn device_memory_and_dma_buffers_are_listed_with_their_addresses() {
        let mut builder = SpecBuilder::default();
        builder.components.push(component("driver", 0, 0));
        for (kind, physical, address) in [
            (MemoryKind::Device, 0xfed0_0000, 0x1000_0000_0000),
            (MemoryKind::Dma32, 0, 0x1000_0000_2000),
        ] {
            builder.memory_grants.push(MemoryGrant {
                component: 0,
                kind: kind as u32,
                physical,
                size: 4096,
                address,
            });
        }
        let bytes = builder.finish();
        let spec = Spec::parse(&bytes).unwrap();
        let who = Identity {
            index: 0,
            name: "driver",
            args: "",
            generation: 1,
            tsc_hz: 1,
        };
        let info = contents(
            &spec,
            who,
            &Given {
                dma: &[0, 0x7f0_0000],
                ..Given::default()
            },
        );
        assert_eq!(
            views(&info),
            [
                (
                    "mmio".into(),
                    ResourceView::Memory {
                        address: 0x1000_0000_0000,
                        size: 4096
                    }
                ),
                (
                    "dma".into(),
                    ResourceView::Dma {
                        address: 0x1000_0000_2000,
                        size: 4096,
                        physical: 0x7f0_0000
                    }
                ),
            ]
        );
    }

    #[test]
    fn the_switcher_sees_its_vm_incoming_bits_and_interrupts() {
        let bytes = system();
        let spec = Spec::parse(&bytes).unwrap();
        let who = Identity {
            index: 1,
            name: "switcher",
            args: "",
            generation: 1,
            tsc_hz: 1_000_000_000,
        };
        let info = contents(
            &spec,
            who,
            &Given {
                guest_image_bytes: Some(5000),
                ..Given::default()
            },
        );
        let found = views(&info);
        let kinds: Vec<_> = found.iter().map(|(_, v)| v.kind()).collect();
        assert_eq!(
            kinds,
            [
                ResourceKind::Capability,
                ResourceKind::Capability,
                ResourceKind::Capability,
                ResourceKind::QueueReceive,
                ResourceKind::Incoming,
                ResourceKind::GuestMemory,
                ResourceKind::GuestImage,
                ResourceKind::VcpuState,
                ResourceKind::Interrupt,
                ResourceKind::Interrupt,
            ]
        );
        // The queue's own notification is not an extra incoming resource.
        assert_eq!(
            found[4],
            ("wake".into(), ResourceView::Incoming { mask: 1 << 4 })
        );
        assert_eq!(
            found[6].1,
            ResourceView::GuestImage {
                address: 0x41_0000_0000,
                size: 5000
            }
        );
        assert_eq!(
            found[8],
            (
                CONSOLE_RESOURCE.into(),
                ResourceView::Interrupt { line: 4, bit: 9 }
            )
        );
        // A forwarded line is named after the driver it goes to.
        let owner = spec::name_of(&spec.components[0].name).unwrap().to_string();
        assert_eq!(
            found[9],
            (owner, ResourceView::Interrupt { line: 8, bit: 10 })
        );
        // The switcher's VM was not created: no guest resources.
        let info = contents(&spec, who, &Given::default());
        assert!(
            info.views()
                .all(|(_, v)| v.kind() != ResourceKind::GuestMemory)
        );
    }

    #[test]
    fn a_server_sees_each_caller_by_name_with_its_badge() {
        // pong (0) serves ping (1) and peer (2); ping also signals pong.
        let mut builder = SpecBuilder::default();
        builder.components.push(component("pong", 0, 0));
        builder.components.push(component("ping", 0, 2));
        builder.components.push(component("peer", 2, 1));
        builder.capabilities = vec![
            capability("kick", 1, CapabilityKind::Notification, 0, 1 << 5),
            capability("echo", 1, CapabilityKind::Endpoint, 0, 1),
            capability("other", 2, CapabilityKind::Endpoint, 0, 2),
        ];
        let bytes = builder.finish();
        let spec = Spec::parse(&bytes).unwrap();
        let who = |index, name| Identity {
            index,
            name,
            args: "",
            generation: 1,
            tsc_hz: 1,
        };
        let server = contents(&spec, who(0, "pong"), &Given::default());
        assert_eq!(
            views(&server),
            [
                ("kick".into(), ResourceView::Incoming { mask: 1 << 5 }),
                ("ping".into(), ResourceView::Caller { badge: 1 }),
                ("peer".into(), ResourceView::Caller { badge: 2 }),
            ]
        );
        assert!(server.resource("peer", ResourceKind::Caller).is_some());
        // A client holds the endpoint as a capability and has no callers.
        let client = contents(&spec, who(1, "ping"), &Given::default());
        assert_eq!(
            views(&client),
            [
                (
                    "kick".into(),
                    ResourceView::Capability {
                        handle: crate::capability::encode(0, 1),
                        kind: 1
                    }
                ),
                (
                    "echo".into(),
                    ResourceView::Capability {
                        handle: crate::capability::encode(1, 1),
                        kind: CapabilityKind::Endpoint as u32
                    }
                ),
            ]
        );
    }

    #[test]
    fn identity_is_bounded_and_the_list_cannot_overflow() {
        let long = "x".repeat(100);
        let info = identity_only(Identity {
            index: 3,
            name: &long,
            args: &long,
            generation: 1,
            tsc_hz: 1,
        });
        assert_eq!(info.name_len, 32);
        assert_eq!(info.args_len, 64);
        assert_eq!(info.resource_count, 0);
        let mut resources = Resources {
            list: [Resource::EMPTY; MAX_RESOURCES],
            count: 0,
        };
        for _ in 0..MAX_RESOURCES + 5 {
            resources.push("a", ResourceView::Incoming { mask: 1 });
        }
        assert_eq!(resources.count, MAX_RESOURCES);
    }
}
