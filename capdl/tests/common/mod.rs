//! Shared test helpers: an in-memory file system and a program set, so
//! tests load descriptions without touching the disk.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use capdl::{Diagnostic, Options, ProgramSet, System};
use microvisor_abi::PAGE_SIZE;
use microvisor_abi::spec::{CapabilityKind, NONE, Spec, name_of};
use microvisor_abi::vcpu::EntryMode;

/// Programs the tests may name.
pub fn programs() -> ProgramSet {
    ProgramSet::new(
        "components/",
        [
            "ping",
            "pong",
            "spinner",
            "measure",
            "supervisor",
            "crasher",
            "peer",
            "hostile",
            "hello",
            "a",
            "b",
            "c",
            "driver",
            "blockstore",
            "block-store",
            "netbridge",
            "virtio-net",
            "qos",
            "world-switcher",
            "vmctl",
        ],
    )
    .with_world_switchers(["world-switcher"])
}

/// Loads `files[0]` from the given (name, text) files.
pub fn load_files(
    files: &[(impl AsRef<str>, impl AsRef<str>)],
    options: &Options,
) -> Result<System, Vec<Diagnostic>> {
    let map: BTreeMap<String, String> = files
        .iter()
        .map(|(name, text)| (name.as_ref().to_string(), text.as_ref().to_string()))
        .collect();
    let read = move |path: &Path| -> io::Result<Vec<u8>> {
        map.get(&path.display().to_string())
            .map(|text| text.clone().into_bytes())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    };
    capdl::load_from(Path::new(files[0].0.as_ref()), &read, &programs(), options).map_err(|d| d.0)
}

/// One line per diagnostic: `file:line:column: message (help: ...)`.
pub fn render(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| match &d.help {
            Some(help) => format!("{}: {} (help: {help})", d.location(), d.message),
            None => format!("{}: {}", d.location(), d.message),
        })
        .collect()
}

/// The rendered errors of a set of files (panics if they load).
pub fn errors_of(files: &[(impl AsRef<str>, impl AsRef<str>)]) -> Vec<String> {
    match load_files(files, &Options::default()) {
        Ok(_) => panic!("expected errors, but the system loaded"),
        Err(diagnostics) => render(&diagnostics),
    }
}

/// The rendered errors of loading `path` from disk (panics if it loads).
pub fn disk_errors(path: &Path) -> Vec<String> {
    match capdl::load(path, &programs()) {
        Ok(_) => panic!("expected errors, but {} loaded", path.display()),
        Err(diagnostics) => render(&diagnostics.0),
    }
}

/// The rendered errors of one file named `main.toml`.
pub fn errors(text: &str) -> Vec<String> {
    errors_of(&[("main.toml", text)])
}

/// The single error of one file named `main.toml`.
pub fn error(text: &str) -> String {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

/// Loads one valid file named `main.toml`.
pub fn system(text: &str) -> System {
    match load_files(&[("main.toml", text)], &Options::default()) {
        Ok(system) => system,
        Err(diagnostics) => panic!("expected a valid system, got {:#?}", render(&diagnostics)),
    }
}

/// Checks that the spec of `system` parses and carries every field of the
/// checked system.
pub fn assert_round_trip(system: &System) {
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap_or_else(|error| panic!("{}: {error}", system.root));
    let layout = &system.layout;
    assert_eq!(spec.components.len(), system.components.len());
    assert_eq!(
        spec.header.scheduling_controller,
        system
            .scheduling_controller
            .map_or(NONE, |index| index as u32)
    );
    let mut ports = Vec::new();
    let mut regions = Vec::new();
    let mut lines = Vec::new();
    for (index, (record, component)) in spec.components.iter().zip(&system.components).enumerate() {
        assert_eq!(name_of(&record.name), Some(component.name.as_str()));
        assert_eq!(name_of(&record.program), Some(component.image_entry()));
        assert_eq!(
            &record.args[..record.args_len as usize],
            component.args.as_bytes()
        );
        assert_eq!(record.priority, u32::from(component.priority));
        assert_eq!(record.budget_us, component.budget_us);
        assert_eq!(record.period_us, component.period_us);
        assert_eq!(
            u64::from(record.stack_pages) * PAGE_SIZE,
            component.stack_bytes
        );
        assert_eq!(
            u64::from(record.memory_pages) * PAGE_SIZE,
            component.memory_bytes
        );
        assert_eq!(
            record.supervisor,
            component.supervisor.map_or(NONE, |s| s as u32)
        );
        assert_eq!(record.start == 1, component.start == capdl::Start::Boot);
        assert_eq!(record.max_restarts, component.max_restarts);
        assert_eq!(record.restart_backoff_ms, component.restart_backoff_ms);
        assert_eq!(record.watchdog_ms, component.watchdog_ms);
        assert_eq!(record.fault_bit, layout.fault_bits[index]);
        let capabilities = spec.capabilities_of(index);
        assert_eq!(capabilities.len(), layout.capabilities[index].len());
        for (record, capability) in capabilities.iter().zip(&layout.capabilities[index]) {
            assert_eq!(name_of(&record.name), Some(capability.name.as_str()));
            assert_eq!(CapabilityKind::from_u32(record.kind), Some(capability.kind));
            assert_eq!(record.target, capability.target.map_or(NONE, |t| t as u32));
            assert_eq!(record.badge, capability.badge);
        }
        for grant in &component.ports {
            ports.push((
                index as u32,
                grant.first,
                u32::from(grant.last) - u32::from(grant.first) + 1,
            ));
        }
        for (region, address) in component.mmio.iter().zip(&layout.mmio_addresses[index]) {
            regions.push((index as u32, 0, region.physical, region.size, *address));
        }
        for (buffer, address) in component.dma.iter().zip(&layout.dma_addresses[index]) {
            let kind = 1 + u32::from(buffer.below_4g);
            regions.push((index as u32, kind, 0, buffer.size, *address));
        }
        for &(vm, address) in &layout.hints_addresses[index] {
            regions.push((index as u32, 3, vm as u64, PAGE_SIZE, address));
        }
        for ((grant, bit), forwarder_bits) in component
            .interrupts
            .iter()
            .zip(&layout.interrupt_bits[index])
            .zip(&layout.forwarder_bits[index])
        {
            // A driver's line is granted to the forwarder, on its bit.
            let (holder, bit, owner) = match (forwarder_bits, system.interrupt_forwarder) {
                (Some(bits), Some(forwarder)) => (forwarder as u32, bits.fired, index as u32),
                _ => (index as u32, *bit, NONE),
            };
            lines.push((holder, grant.line, bit, grant.wiring as u32, owner));
        }
    }
    assert_eq!(spec.queues.len(), system.queues.len());
    for (record, (queue, placement)) in spec
        .queues
        .iter()
        .zip(system.queues.iter().zip(&layout.queues))
    {
        assert_eq!(name_of(&record.name), Some(queue.name.as_str()));
        assert_eq!(
            (record.sender, record.receiver),
            (queue.sender as u32, queue.receiver as u32)
        );
        assert_eq!(
            (record.slot_size, record.slot_count),
            (queue.slot_size, queue.slots)
        );
        assert_eq!(record.sender_address, placement.sender_address);
        assert_eq!(record.receiver_address, placement.receiver_address);
        assert_eq!(
            (record.sender_bit, record.receiver_bit),
            (placement.sender_bit, placement.receiver_bit)
        );
    }
    let spec_ports: Vec<_> = spec
        .port_grants
        .iter()
        .map(|g| (g.component, g.first, u32::from(g.count)))
        .collect();
    if ports.iter().all(|(_, _, count)| *count < 0x1_0000) {
        assert_eq!(spec_ports, ports);
    }
    let spec_regions: Vec<_> = spec
        .memory_grants
        .iter()
        .map(|g| (g.component, g.kind, g.physical, g.size, g.address))
        .collect();
    assert_eq!(spec_regions, regions);
    let spec_lines: Vec<_> = spec
        .interrupt_grants
        .iter()
        .map(|g| (g.component, g.line, g.bit, g.wiring, g.owner))
        .collect();
    assert_eq!(spec_lines, lines);
    assert_eq!(
        spec.header.interrupt_forwarder,
        system
            .interrupt_forwarder
            .map_or(NONE, |index| index as u32)
    );
    assert_eq!(spec.vms.len(), system.vms.len());
    for (index, (record, vm)) in spec.vms.iter().zip(&system.vms).enumerate() {
        assert_eq!(name_of(&record.name), Some(vm.name.as_str()));
        assert_eq!(name_of(&record.image), Some(vm.image_entry().as_str()));
        assert_eq!(record.switcher, vm.switcher as u32);
        assert_eq!(EntryMode::from_u32(record.entry), Some(vm.entry));
        assert_eq!(record.memory_bytes, vm.memory_bytes);
        assert_eq!(
            (
                record.memory_address,
                record.image_address,
                record.state_address
            ),
            (
                capdl::VM_MEMORY_ADDRESS,
                capdl::VM_IMAGE_ADDRESS,
                capdl::VM_STATE_ADDRESS
            )
        );
        assert_eq!(spec.vm_of(vm.switcher).map(|(at, _)| at), Some(index));
    }
}
