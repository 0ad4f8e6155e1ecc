//! Lowering a checked system to the boot spec and the capDL-style listing.
//!
//! Both outputs are written from the same [`System`] and its [`Layout`], so
//! the listing shows exactly what the core will build: component `i` of the
//! listing is record `i` of the spec, capabilities appear in table order,
//! and every bit, badge and address is the one in the spec. Lowering cannot
//! fail: everything that could make it fail is a check in `crate::check`.
//! The listing is for people; nothing parses it.

use std::fmt::Write;

use microvisor_abi::spec::{
    CapabilityKind, CapabilitySpec, ComponentSpec, InterruptGrant, MemoryGrant, MemoryKind, NONE,
    PciSpec, PortGrant, QueueSpec, SpecBuilder, VmSpec, name_field,
};
use microvisor_abi::vcpu::EntryMode;

use crate::check::{VM_IMAGE_ADDRESS, VM_MEMORY_ADDRESS, VM_STATE_ADDRESS, port_pieces};
use crate::model::{Start, System};
use crate::units::{format_duration, format_size};

/// What the build tool packs: the spec, the listing, which program each
/// component runs and which guest images the VMs start from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    /// The binary boot spec (the image entry named `spec`).
    pub spec: Vec<u8>,
    /// The capDL-style listing.
    pub cdl: String,
    /// One per component, in spec order.
    pub programs: Vec<ProgramUse>,
    /// The distinct guest images the VMs start from, sorted, by image name
    /// (`hello` for `test-vms/hello`); the image must hold each as the entry
    /// `vm-<image>` (kind `Guest`, see [`crate::guest_entry_name`]).
    /// Images of unmodified guests are not listed: see [`Lowered::kernels`].
    pub guests: Vec<String>,
    /// The unmodified guests: the boot-image entry each bundle goes in,
    /// with its files and command line, in VM order.
    pub kernels: Vec<(String, crate::KernelGuest)>,
}

/// A component's program and arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramUse {
    pub component: String,
    /// The crate under `components/` whose ELF it runs.
    pub program: String,
    pub args: String,
    /// The boot-image entry holding that ELF (see
    /// [`crate::Component::image_entry`]).
    pub entry: String,
    /// Tests only: the defect the build tool puts into that entry's copy.
    pub corrupt: Option<String>,
}

/// A program entry the boot image must hold: the ELF of `program`, damaged
/// by `corrupt` if set, under the name `entry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProgram {
    pub entry: String,
    pub program: String,
    pub corrupt: Option<String>,
}

impl Lowered {
    /// The program entries the image must hold, each once, sorted by entry
    /// name.
    pub fn image_programs(&self) -> Vec<ImageProgram> {
        let mut programs: Vec<ImageProgram> = self
            .programs
            .iter()
            .map(|use_| ImageProgram {
                entry: use_.entry.clone(),
                program: use_.program.clone(),
                corrupt: use_.corrupt.clone(),
            })
            .collect();
        programs.sort_by(|a, b| a.entry.cmp(&b.entry));
        programs.dedup();
        programs
    }
}

impl System {
    /// Both outputs and the program list.
    pub fn lower(&self) -> Lowered {
        Lowered {
            spec: self.spec(),
            cdl: self.cdl(),
            kernels: self
                .vms
                .iter()
                .filter_map(|vm| Some((vm.image_entry(), vm.kernel.clone()?)))
                .collect(),
            guests: {
                let mut guests: Vec<String> = self
                    .vms
                    .iter()
                    .filter(|vm| vm.kernel.is_none())
                    .map(|vm| vm.image.clone())
                    .collect();
                guests.sort_unstable();
                guests.dedup();
                guests
            },
            programs: self
                .components
                .iter()
                .map(|component| ProgramUse {
                    component: component.name.clone(),
                    program: component.program.clone(),
                    args: component.args.clone(),
                    entry: component.image_entry().to_string(),
                    corrupt: component.corrupt.clone(),
                })
                .collect(),
        }
    }

    /// The binary boot spec.
    pub fn spec(&self) -> Vec<u8> {
        let layout = &self.layout;
        let mut builder = SpecBuilder {
            scheduling_controller: self.scheduling_controller.map(|index| index as u32),
            interrupt_forwarder: self.interrupt_forwarder.map(|index| index as u32),
            ..SpecBuilder::default()
        };
        let mut next_capability = 0u32;
        for (index, component) in self.components.iter().enumerate() {
            let mut args = [0u8; 64];
            args[..component.args.len()].copy_from_slice(component.args.as_bytes());
            let capabilities = &layout.capabilities[index];
            builder.components.push(ComponentSpec {
                name: name_field(&component.name),
                program: name_field(component.image_entry()),
                args,
                args_len: component.args.len() as u32,
                priority: u32::from(component.priority),
                budget_us: component.budget_us,
                period_us: component.period_us,
                stack_pages: (component.stack_bytes / microvisor_abi::PAGE_SIZE) as u32,
                memory_pages: (component.memory_bytes / microvisor_abi::PAGE_SIZE) as u32,
                supervisor: component
                    .supervisor
                    .map_or(NONE, |supervisor| supervisor as u32),
                start: u32::from(component.start == Start::Boot),
                max_restarts: component.max_restarts,
                restart_backoff_ms: component.restart_backoff_ms,
                fault_bit: layout.fault_bits[index],
                capability_first: next_capability,
                capability_count: capabilities.len() as u32,
                watchdog_ms: component.watchdog_ms,
            });
            next_capability += capabilities.len() as u32;
            for capability in capabilities {
                builder.capabilities.push(CapabilitySpec {
                    name: name_field(&capability.name),
                    holder: index as u32,
                    kind: capability.kind as u32,
                    target: capability.target.map_or(NONE, |target| target as u32),
                    reserved: 0,
                    badge: capability.badge,
                });
            }
            for grant in &component.ports {
                for (first, count) in port_pieces(grant) {
                    builder.port_grants.push(PortGrant {
                        component: index as u32,
                        first,
                        count,
                    });
                }
            }
            for (region, &address) in component.mmio.iter().zip(&layout.mmio_addresses[index]) {
                builder.memory_grants.push(MemoryGrant {
                    component: index as u32,
                    kind: MemoryKind::Device as u32,
                    physical: region.physical,
                    size: region.size,
                    address,
                });
            }
            for (buffer, &address) in component.dma.iter().zip(&layout.dma_addresses[index]) {
                let kind = if buffer.below_4g {
                    MemoryKind::Dma32
                } else {
                    MemoryKind::Dma
                };
                builder.memory_grants.push(MemoryGrant {
                    component: index as u32,
                    kind: kind as u32,
                    physical: 0,
                    size: buffer.size,
                    address,
                });
            }
            for &(vm, address) in &layout.hints_addresses[index] {
                builder.memory_grants.push(MemoryGrant {
                    component: index as u32,
                    kind: MemoryKind::GuestHints as u32,
                    physical: vm as u64,
                    size: microvisor_abi::PAGE_SIZE,
                    address,
                });
            }
            for ((grant, &bit), forwarder_bits) in component
                .interrupts
                .iter()
                .zip(&layout.interrupt_bits[index])
                .zip(&layout.forwarder_bits[index])
            {
                // A driver's line goes to the forwarder, which passes it on;
                // the console's straight to its reader.
                let (component, bit, owner) = match (forwarder_bits, self.interrupt_forwarder) {
                    (Some(bits), Some(forwarder)) => (forwarder as u32, bits.fired, index as u32),
                    _ => (index as u32, bit, NONE),
                };
                builder.interrupt_grants.push(InterruptGrant {
                    component,
                    line: grant.line,
                    bit,
                    wiring: grant.wiring as u32,
                    owner,
                    reserved: 0,
                });
            }
        }
        for (index, component) in self.components.iter().enumerate() {
            let (Some(pci), Some(window)) = (component.pci, layout.pci_windows[index]) else {
                continue;
            };
            builder.pci_devices.push(PciSpec {
                component: index as u32,
                vendor: pci.vendor,
                device: pci.device,
                address: pci.address.unwrap_or(NONE),
                bars: pci.bars,
                msi_vectors: pci.msi,
                msi_first_line: pci.msi_first_line,
                window,
            });
        }
        for (queue, placement) in self.queues.iter().zip(&layout.queues) {
            builder.queues.push(QueueSpec {
                name: name_field(&queue.name),
                sender: queue.sender as u32,
                receiver: queue.receiver as u32,
                slot_size: queue.slot_size,
                slot_count: queue.slots,
                sender_address: placement.sender_address,
                receiver_address: placement.receiver_address,
                receiver_bit: placement.receiver_bit,
                sender_bit: placement.sender_bit,
            });
        }
        for vm in &self.vms {
            builder.vms.push(VmSpec {
                name: name_field(&vm.name),
                image: name_field(&vm.image_entry()),
                switcher: vm.switcher as u32,
                entry: vm.entry as u32,
                memory_bytes: vm.memory_bytes,
                memory_address: VM_MEMORY_ADDRESS,
                image_address: VM_IMAGE_ADDRESS,
                state_address: VM_STATE_ADDRESS,
            });
        }
        builder.finish()
    }

    /// The capDL-style listing of every object and capability.
    pub fn cdl(&self) -> String {
        let layout = &self.layout;
        let name = |index: usize| self.components[index].name.as_str();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "-- capDL-style listing of {}, written by capdl.",
            self.root
        );
        let _ = writeln!(
            out,
            "-- For people; the core reads the boot spec (capdl --emit spec)."
        );
        if !self.description.is_empty() {
            let _ = writeln!(out, "-- {}", self.description);
        }
        if let Some(test) = &self.test {
            let _ = writeln!(
                out,
                "-- Test only: '{}' may inject faults into {} components (see test below).",
                name(test.injector),
                test.targets.len()
            );
        }
        let _ = writeln!(out, "\narch x86_64\n\nobjects {{");
        for (index, component) in self.components.iter().enumerate() {
            let args = if component.args.is_empty() {
                String::new()
            } else {
                format!(", args: {:?}", component.args)
            };
            let start = match component.start {
                Start::Boot => "boot",
                Start::Supervisor => "supervisor",
            };
            let corrupt = component.corrupt.as_ref().map_or(String::new(), |corrupt| {
                format!(", corrupt: {corrupt}, entry: {}", component.image_entry())
            });
            let _ = writeln!(
                out,
                "  {} = component (index: {index}, program: {}{corrupt}{args}, start: {start})",
                component.name, component.program
            );
            let _ = writeln!(
                out,
                "  {}.sc = sched_context (priority: {}, budget: {}, period: {})",
                component.name,
                component.priority,
                format_duration(u64::from(component.budget_us) * 1000),
                format_duration(u64::from(component.period_us) * 1000)
            );
            let _ = writeln!(
                out,
                "  {}.vspace = address_space (memory: {}, stack: {})",
                component.name,
                format_size(component.memory_bytes),
                format_size(component.stack_bytes)
            );
            let _ = writeln!(
                out,
                "  {}.notification = notification (bits used: {} of 64)",
                component.name,
                layout.bit_uses[index].len()
            );
            // A server's endpoint, with the badge each client calls with.
            let callers: Vec<String> = self
                .calls
                .iter()
                .zip(&layout.call_badges)
                .filter(|(call, _)| call.server == index)
                .map(|(call, badge)| format!("{} (badge {badge})", name(call.client)))
                .collect();
            if !callers.is_empty() {
                let _ = writeln!(
                    out,
                    "  {}.endpoint = endpoint (callers: {})",
                    component.name,
                    callers.join(", ")
                );
            }
        }
        for (queue, placement) in self.queues.iter().zip(&layout.queues) {
            let reply = queue.reply.map_or(String::new(), |reply| {
                format!(", reply: {}", self.queues[reply].name)
            });
            let _ = writeln!(
                out,
                "  {} = queue ({} -> {}, slot_size: {}, slots: {}, pages: {}{reply})",
                queue.name,
                name(queue.sender),
                name(queue.receiver),
                queue.slot_size,
                queue.slots,
                placement.pages
            );
        }
        for (index, vm) in self.vms.iter().enumerate() {
            let start = match &vm.kernel {
                None => format!("entry: {}", entry_text(vm.entry)),
                Some(kernel) => {
                    let mut text =
                        format!("{} kernel: {}", kernel.kind.name(), kernel.kernel.display());
                    if let Some(initrd) = &kernel.initrd {
                        let _ = write!(text, ", initrd: {}", initrd.display());
                    }
                    if !kernel.command_line.is_empty() {
                        let _ = write!(text, ", cmdline: {:?}", kernel.command_line);
                    }
                    text
                }
            };
            let _ = writeln!(
                out,
                "  {} = vm (index: {index}, switcher: {}, image: {}, memory: {}, {start})",
                vm.name,
                name(vm.switcher),
                vm.image_entry(),
                format_size(vm.memory_bytes),
            );
            let _ = writeln!(out, "  {}.vmcs = vmcs", vm.name);
            let _ = writeln!(
                out,
                "  {}.vcpu = vcpu (runs on {}.sc)",
                vm.name,
                name(vm.switcher)
            );
        }
        if self.scheduling_controller.is_some() {
            let _ = writeln!(out, "  scheduling = sched_control");
        }
        if let Some(forwarder) = self.interrupt_forwarder {
            let _ = writeln!(
                out,
                "  interrupts = irq_control (device lines go to {})",
                name(forwarder)
            );
        }
        let _ = writeln!(out, "}}\n\ncaps {{");
        if layout.capabilities.iter().all(Vec::is_empty) {
            let _ = writeln!(out, "  -- none");
        }
        let mut slot_base = 0;
        for (index, capabilities) in layout.capabilities.iter().enumerate() {
            if capabilities.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {} {{", name(index));
            for (slot, capability) in capabilities.iter().enumerate() {
                let object = match (capability.kind, capability.target) {
                    (CapabilityKind::Notification, Some(target)) => {
                        format!(
                            "{}.notification (signal, badge: {:#x})",
                            name(target),
                            capability.badge
                        )
                    }
                    (CapabilityKind::Endpoint, Some(target)) => {
                        format!(
                            "{}.endpoint (call, badge: {})",
                            name(target),
                            capability.badge
                        )
                    }
                    (CapabilityKind::ComponentControl, Some(target)) => {
                        format!("{} (control: fault, restart, stop)", name(target))
                    }
                    (CapabilityKind::SchedulingContext, Some(target)) => {
                        format!("{}.sc (read consumed time)", name(target))
                    }
                    (CapabilityKind::Vmcs, Some(vm)) => {
                        format!(
                            "{}.vmcs (guest state, intercepts, reset)",
                            self.vms[vm].name
                        )
                    }
                    (CapabilityKind::Vcpu, Some(vm)) if self.vms[vm].switcher == index => {
                        format!("{}.vcpu (run, poke)", self.vms[vm].name)
                    }
                    (CapabilityKind::Vcpu, Some(vm)) => {
                        format!("{}.vcpu (poke)", self.vms[vm].name)
                    }
                    (CapabilityKind::Injection, Some(target)) => {
                        format!(
                            "{} (inject faults: crash, hang, corrupt, flood; test only)",
                            name(target)
                        )
                    }
                    _ => "scheduling (configure any sched_context)".to_string(),
                };
                let _ = writeln!(
                    out,
                    "    {slot}: {} = {object}  -- table entry {}",
                    capability.name,
                    slot_base + slot
                );
            }
            slot_base += capabilities.len();
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}\n\nbits {{");
        if layout.bit_uses.iter().all(Vec::is_empty) {
            let _ = writeln!(out, "  -- none");
        }
        for (index, uses) in layout.bit_uses.iter().enumerate() {
            if uses.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {}.notification {{", name(index));
            for (bit, use_) in uses.iter().enumerate() {
                let _ = writeln!(out, "    {bit}: {use_}");
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}\n\nmappings {{");
        let mappings_before = out.len();
        for (index, component) in self.components.iter().enumerate() {
            let mut lines = Vec::new();
            for (queue, placement) in self.queues.iter().zip(&layout.queues) {
                for (end, address, peer, role) in [
                    (
                        queue.sender,
                        placement.sender_address,
                        queue.receiver,
                        "send",
                    ),
                    (
                        queue.receiver,
                        placement.receiver_address,
                        queue.sender,
                        "receive",
                    ),
                ] {
                    if end == index {
                        lines.push((
                            address,
                            format!(
                                "queue {} ({role}, {} pages, shared with {})",
                                queue.name,
                                placement.pages,
                                name(peer)
                            ),
                        ));
                    }
                }
            }
            for (region, address) in component.mmio.iter().zip(&layout.mmio_addresses[index]) {
                lines.push((
                    *address,
                    format!(
                        "device memory {:#x} ({}, uncached)",
                        region.physical,
                        format_size(region.size)
                    ),
                ));
            }
            for (buffer, address) in component.dma.iter().zip(&layout.dma_addresses[index]) {
                lines.push((*address, format!("dma buffer ({})", dma_text(buffer))));
            }
            for &(vm, address) in &layout.hints_addresses[index] {
                lines.push((
                    address,
                    format!(
                        "guest-hints page of VM {} (read-only, written by its guest)",
                        self.vms[vm].name
                    ),
                ));
            }
            if let (Some(pci), Some(window)) = (component.pci, layout.pci_windows[index]) {
                lines.push((
                    window,
                    format!(
                        "BARs of PCI {} (placed at boot, uncached, a guard page after each)",
                        pci_text(&pci)
                    ),
                ));
            }
            if let Some(vm) = self.vm_of(index) {
                let vm = &self.vms[vm];
                lines.push((
                    VM_MEMORY_ADDRESS,
                    format!(
                        "guest memory of VM {} ({}, guest-physical 0)",
                        vm.name,
                        format_size(vm.memory_bytes)
                    ),
                ));
                lines.push((
                    VM_IMAGE_ADDRESS,
                    format!(
                        "image {} of VM {} (read-only, as large as the image)",
                        vm.image_entry(),
                        vm.name
                    ),
                ));
                lines.push((
                    VM_STATE_ADDRESS,
                    format!("vCPU state of VM {} (1 page)", vm.name),
                ));
            }
            if lines.is_empty() {
                continue;
            }
            lines.sort();
            let _ = writeln!(out, "  {}.vspace {{", component.name);
            for (address, text) in lines {
                let _ = writeln!(out, "    {address:#018x}: {text}");
            }
            let _ = writeln!(out, "  }}");
        }
        if out.len() == mappings_before {
            let _ = writeln!(out, "  -- none");
        }
        let _ = writeln!(out, "}}");
        let grants: Vec<usize> = (0..self.components.len())
            .filter(|&index| {
                let component = &self.components[index];
                !component.ports.is_empty()
                    || !component.interrupts.is_empty()
                    || !component.mmio.is_empty()
                    || !component.dma.is_empty()
                    || component.pci.is_some()
            })
            .collect();
        if !grants.is_empty() {
            let _ = writeln!(out, "\ngrants {{");
            for index in grants {
                let component = &self.components[index];
                let _ = writeln!(out, "  {} {{", component.name);
                for grant in &component.ports {
                    let _ = writeln!(out, "    ports {:#x}-{:#x}", grant.first, grant.last);
                }
                for region in &component.mmio {
                    let _ = writeln!(
                        out,
                        "    mmio {:#x} ({})",
                        region.physical,
                        format_size(region.size)
                    );
                }
                for buffer in &component.dma {
                    let _ = writeln!(out, "    dma {}", dma_text(buffer));
                }
                if let Some(pci) = &component.pci {
                    let msi = if pci.msi == 0 {
                        String::new()
                    } else {
                        format!(
                            ", MSI vectors as lines {}..={}",
                            pci.msi_first_line,
                            pci.msi_first_line + pci.msi - 1
                        )
                    };
                    let _ = writeln!(out, "    pci {}{msi}", pci_text(pci));
                }
                for ((grant, bit), forwarder_bits) in component
                    .interrupts
                    .iter()
                    .zip(&layout.interrupt_bits[index])
                    .zip(&layout.forwarder_bits[index])
                {
                    let line = grant.line;
                    let wiring = grant
                        .wiring
                        .name()
                        .map_or(String::new(), |name| format!(" ({name})"));
                    match (forwarder_bits, self.interrupt_forwarder) {
                        (Some(bits), Some(forwarder)) => {
                            let _ = writeln!(
                                out,
                                "    interrupt {line}{wiring} -> bit {bit} via {} (its bits: fired {}, ack {}, ready {})",
                                name(forwarder),
                                bits.fired,
                                bits.acknowledged,
                                bits.ready
                            );
                        }
                        _ => {
                            let _ = writeln!(out, "    interrupt {line}{wiring} -> bit {bit}");
                        }
                    }
                }
                let _ = writeln!(out, "  }}");
            }
            let _ = writeln!(out, "}}");
        }
        if !self.disks.is_empty() || !self.nics.is_empty() {
            let _ = writeln!(out, "\nmachine {{");
            for (index, disk) in self.disks.iter().enumerate() {
                let what = match (&disk.size, &disk.image) {
                    (Some(size), _) => format!("{} zeroed", format_size(*size)),
                    (None, Some(image)) => format!("a copy of {}", image.display()),
                    (None, None) => String::new(),
                };
                let _ = writeln!(out, "  disk {index}: virtio-blk-pci (1af4:1042), {what}");
                for file in &disk.files {
                    let what = match &file.kind {
                        crate::StoreFileKind::Disk {
                            size,
                            from: Some(from),
                        } => {
                            format!("({}) from {}", format_size(*size), from.display())
                        }
                        crate::StoreFileKind::Disk { size, from: None } => {
                            format!("({}) zeroed", format_size(*size))
                        }
                        crate::StoreFileKind::RedoLog { base } => {
                            format!("a redo log over '{base}'")
                        }
                    };
                    let _ = writeln!(out, "    VMKFS disk '{}' {what}", file.name);
                }
            }
            for (index, nic) in self.nics.iter().enumerate() {
                let backend = match nic.backend {
                    crate::NicBackend::User => "user-mode network (gateway 10.0.2.2)",
                };
                let _ = writeln!(
                    out,
                    "  nic {index}: virtio-net-pci (1af4:1041), {backend}, MAC {}",
                    nic.mac_text()
                );
            }
            let _ = writeln!(out, "}}");
        }
        if !self.networks.is_empty() {
            let _ = writeln!(out, "\nnetworks {{");
            for network in &self.networks {
                let _ = writeln!(
                    out,
                    "  {}: bridge {}, {} frames in flight each way per NIC",
                    network.name,
                    name(network.bridge),
                    network.slots
                );
                for nic in &network.nics {
                    let _ = writeln!(
                        out,
                        "    {}: VM '{}', MAC {}",
                        nic.name,
                        self.vms[nic.vm].name,
                        net_api::MacText(nic.mac)
                    );
                }
                if let Some(uplink) = &network.uplink {
                    let mode = match (uplink.mode, network.nics.first()) {
                        (crate::UplinkMode::Exclusive, Some(nic)) => {
                            format!("exclusive: VM '{}' owns the card", self.vms[nic.vm].name)
                        }
                        (mode, _) => mode.name().to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "    {}: uplink '{}' ({mode}), card MAC {}",
                        uplink.name,
                        name(uplink.component),
                        net_api::MacText(uplink.mac)
                    );
                }
            }
            let _ = writeln!(out, "}}");
        }
        let supervised: Vec<usize> = (0..self.components.len())
            .filter(|&index| self.components[index].supervisor.is_some())
            .collect();
        if !supervised.is_empty() {
            let _ = writeln!(out, "\nsupervision {{");
            for index in supervised {
                let component = &self.components[index];
                let supervisor = component.supervisor.map_or("", name);
                let watchdog = match component.watchdog_ms {
                    0 => String::new(),
                    ms => format!(", watchdog: {}", format_duration(u64::from(ms) * 1_000_000)),
                };
                let _ = writeln!(
                    out,
                    "  {supervisor} supervises {} (fault bit: {}, max_restarts: {}, backoff: {}{watchdog})",
                    component.name,
                    layout.fault_bits[index],
                    component.max_restarts,
                    format_duration(u64::from(component.restart_backoff_ms) * 1_000_000)
                );
            }
            let _ = writeln!(out, "}}");
        }
        if let Some(test) = &self.test {
            let _ = writeln!(out, "\ntest {{");
            let _ = writeln!(
                out,
                "  -- fault injection, granted only by [test]: never in a production system"
            );
            for &target in &test.targets {
                let _ = writeln!(
                    out,
                    "  {} injects faults into {} (test only)",
                    name(test.injector),
                    name(target)
                );
            }
            let _ = writeln!(out, "}}");
        }
        out
    }
}

fn entry_text(entry: EntryMode) -> &'static str {
    match entry {
        EntryMode::Long => "long",
        EntryMode::Real => "real",
    }
}

/// "64KiB, physically contiguous, below 4GiB".
fn dma_text(buffer: &crate::DmaGrant) -> String {
    let below = if buffer.below_4g { ", below 4GiB" } else { "" };
    format!(
        "{}, physically contiguous, zeroed{below}",
        format_size(buffer.size)
    )
}

/// "1af4:1042 at 00:03.0, BARs 1, 4" (any bus address, every memory BAR
/// when not given).
fn pci_text(pci: &crate::PciGrant) -> String {
    let at = pci.address.map_or("at any address".to_string(), |address| {
        format!("at {}", crate::check::pci_address_text(address))
    });
    let bars = if pci.bars == 0 {
        "every memory BAR".to_string()
    } else {
        let list: Vec<String> = (0..6)
            .filter(|bar| pci.bars & (1 << bar) != 0)
            .map(|bar: u32| bar.to_string())
            .collect();
        format!("BARs {}", list.join(", "))
    };
    format!("{:04x}:{:04x} {at}, {bars}", pci.vendor, pci.device)
}
