//! Building the system at boot: every object the boot spec declares.
//!
//! In order: the components (declared, not yet built), the queues, the
//! VMs (after enabling the virtualization backend, only when there are
//! any), then each component's capability table and address space. What
//! cannot be built is reported and refused — a component whose program is
//! missing or unusable, a VM that cannot be created (and its world
//! switcher) — and the rest of the system runs; the verdict then says
//! failure. Running out of memory for queues stops the boot, since no
//! component could use its queues.

use microvisor::console_input::ConsoleInput;
use microvisor::interrupt_lines::InterruptLines;
use microvisor::pci;
use microvisor_abi::image::{EntryKind, Image};
use microvisor_abi::spec::{self, Spec};
use microvisor_abi::syscall::CONSOLE_LINE;

use crate::arch::memory::Tables;
use crate::arch::pci as arch_pci;
use crate::arch::svm::Svm;
use crate::arch::{interrupts, ioapic, serial, timer};
use crate::kernel::Kernel;
use crate::loader::{self, LoadError};
use crate::object::{Component, Declaration, Queue, Vm};

/// Creates the system the spec describes. Fails only when the system
/// cannot be built at all.
pub fn instantiate(kernel: &mut Kernel, image: &Image<'static>) -> Result<(), &'static str> {
    let spec = kernel.spec;
    log::info!(
        "boot spec: {} components, {} queues, {} capabilities",
        spec.components.len(),
        spec.queues.len(),
        spec.capabilities.len()
    );
    for declared in spec.components {
        let name = spec::name_of(&declared.name).unwrap_or("?");
        let program_name = spec::name_of(&declared.program).unwrap_or("?");
        let program = image
            .entries()
            .find(|e| e.kind == EntryKind::Component && e.name == program_name)
            .map_or(&[][..], |e| e.contents);
        let declaration = Declaration {
            name,
            args: core::str::from_utf8(&declared.args[..declared.args_len as usize]).unwrap_or(""),
            program,
            priority: declared.priority,
            budget_us: u64::from(declared.budget_us),
            period_us: u64::from(declared.period_us),
            stack_pages: u64::from(declared.stack_pages),
            memory_pages: u64::from(declared.memory_pages),
            start: declared.start == 1,
            supervisor: (declared.supervisor != spec::NONE).then_some(declared.supervisor as usize),
            fault_bit: declared.fault_bit,
        };
        // Spec::parse bounds the component count and checks the names, so
        // declaring cannot fail here.
        declare(kernel, &declaration).map_err(|_| "the spec's components cannot be declared")?;
    }
    for declared in spec.queues {
        let queue = Queue::create(&mut kernel.frames, declared)
            .map_err(|_| "out of physical memory for the queues")?;
        kernel.queues[kernel.queue_count] = queue;
        kernel.queue_count += 1;
    }
    create_vms(kernel, &spec, |name| {
        image
            .entries()
            .find(|e| e.kind == EntryKind::Guest && e.name == name)
            .map(|e| e.contents)
    });
    pci_functions(kernel, &spec);
    for index in 0..kernel.component_count {
        kernel.components[index].install_capabilities(spec.capabilities_of(index));
        build(kernel, index);
    }
    console_input(kernel, &spec);
    interrupt_lines(kernel, &spec);
    for grant in spec.port_grants {
        kernel.port_holders |= 1 << grant.component;
    }
    Ok(())
}

/// Finds the PCI function of every driver that names one: the first
/// match not already given to another (at its bus address, when the spec
/// gives one). A function not present is reported by its driver's name;
/// the loader then refuses that driver.
fn pci_functions(kernel: &mut Kernel, spec: &Spec<'static>) {
    for (at, declared) in spec.pci_devices.iter().enumerate() {
        let address = (declared.address != spec::NONE).then_some(declared.address);
        let taken = kernel.pci;
        let found = pci::find(
            &mut arch_pci::Ports,
            declared.vendor,
            declared.device,
            address,
            |candidate| taken.iter().flatten().any(|f| f.address == candidate),
        );
        let name = kernel.components[declared.component as usize].name();
        match &found {
            Some(function) => {
                let (bus, slot, number) = pci::format_address(function.address);
                log::info!(
                    "PCI {bus:02x}:{slot:02x}.{number} {:04x}:{:04x} goes to '{name}'",
                    declared.vendor,
                    declared.device
                );
            }
            None => match address.map(pci::format_address) {
                Some((bus, slot, number)) => log::error!(
                    "component '{name}': its PCI device {:04x}:{:04x} is not present at {bus:02x}:{slot:02x}.{number}",
                    declared.vendor,
                    declared.device
                ),
                None => log::error!(
                    "component '{name}': its PCI device {:04x}:{:04x} is not present (or each one is another driver's)",
                    declared.vendor,
                    declared.device
                ),
            },
        }
        kernel.pci[at] = found;
    }
}

/// Routes every line the spec grants the interrupt forwarder (but the
/// console's) through the IOAPIC to this CPU; each then arrives on its own
/// vector and is handed to the forwarder (see `crate::trap`).
fn interrupt_lines(kernel: &mut Kernel, spec: &Spec<'static>) {
    let forwarder = spec.header.interrupt_forwarder;
    if forwarder == spec::NONE {
        return;
    }
    kernel.lines = InterruptLines::for_forwarder(forwarder as usize);
    let apic = timer::apic_id();
    for grant in spec
        .interrupt_grants
        .iter()
        .filter(|grant| grant.component == forwarder && grant.line != CONSOLE_LINE)
    {
        let wiring = spec::Wiring::from_u32(grant.wiring)
            .unwrap_or(spec::Wiring::Default)
            .resolve(grant.line);
        // Lines from FIRST_MSI_LINE up are MSI vectors: no IOAPIC input,
        // edge-triggered.
        let msi = grant.line >= spec::FIRST_MSI_LINE;
        let level = wiring.level() && !msi;
        if kernel.lines.add(grant.line, grant.bit, grant.owner, level) && !msi {
            ioapic::route(u64::from(grant.line), wiring, apic);
        }
    }
    log::info!(
        "interrupt lines {:#x} go to the forwarder '{}'",
        kernel.lines.forwarded(),
        kernel.components[forwarder as usize].name()
    );
}

/// Turns the console's receive interrupt on when the spec grants the
/// console's line to a component (at most one: the spec's check refuses a
/// line granted twice).
fn console_input(kernel: &mut Kernel, spec: &Spec<'static>) {
    let Some(grant) = spec
        .interrupt_grants
        .iter()
        .find(|grant| grant.line == CONSOLE_LINE)
    else {
        return;
    };
    let holder = grant.component as usize;
    kernel.console_input = ConsoleInput::for_component(holder, grant.bit);
    timer::accept_legacy_pic();
    interrupts::route_console();
    serial::enable_receive_interrupt();
    log::info!(
        "console input goes to '{}'",
        kernel.components[holder].name()
    );
}

/// Adds a component slot (not yet built) and returns its index.
fn declare(kernel: &mut Kernel, declaration: &Declaration<'_>) -> Result<usize, LoadError> {
    if declaration.name == "core" {
        return Err(LoadError::ReservedName);
    }
    let index = kernel.component_count;
    if index == kernel.components.len() {
        return Err(LoadError::TooMany);
    }
    kernel.components[index] = Component::declare(declaration, &kernel.clock, timer::now());
    kernel.component_count += 1;
    Ok(index)
}

/// Builds component `index`, or reports and refuses it.
fn build(kernel: &mut Kernel, index: usize) {
    let result = loader::build(kernel, index);
    let name = kernel.components[index].name();
    match result {
        Ok((entry, segments)) => {
            log::info!("loaded component '{name}': {segments} segment(s), entry {entry:#x}")
        }
        Err(error) => {
            log::error!("refused component '{name}': {error}");
            kernel.components[index].refuse();
        }
    }
}

/// Creates every VM of the spec. `image_of` finds a guest image by entry
/// name. A VM that cannot be created is reported and left not ready; its
/// world switcher is then refused at load.
fn create_vms(
    kernel: &mut Kernel,
    spec: &Spec<'static>,
    image_of: impl Fn(&str) -> Option<&'static [u8]>,
) {
    if spec.vms.is_empty() {
        return;
    }
    kernel.svm = match Svm::enable(&mut kernel.frames) {
        Ok(svm) => {
            log::info!(
                "virtualization: AMD SVM with nested paging, {} ASIDs, next-RIP save {}, VMCB clean bits {}",
                svm.asid_count,
                if svm.next_rip { "yes" } else { "no" },
                if svm.vmcb_clean { "yes" } else { "no" }
            );
            Some(svm)
        }
        Err(why) => {
            log::error!("virtualization: {why}; no VM can start");
            for declared in spec.vms {
                let name = spec::name_of(&declared.name).unwrap_or("?");
                log::error!("VM '{name}' not created: guests cannot run here: {why}");
            }
            None
        }
    };
    for (index, declared) in spec.vms.iter().enumerate().take(kernel.vms.len()) {
        let name = spec::name_of(&declared.name).unwrap_or("?");
        kernel.vms[index] = Vm::declare(name, declared.switcher as usize);
        kernel.vm_count = index + 1;
        let Some(svm) = kernel.svm.as_mut() else {
            continue;
        };
        let image = spec::name_of(&declared.image).and_then(&image_of);
        let mut tables = Tables {
            frames: &mut kernel.frames,
        };
        match kernel.vms[index].create(&mut tables, svm, declared, image) {
            Ok(()) => log::info!(
                "created VM '{name}': {} KiB of guest memory, run by '{}'",
                declared.memory_bytes / 1024,
                kernel.components[declared.switcher as usize].name()
            ),
            Err(error) => log::error!("VM '{name}' not created: {error}"),
        }
    }
}
