//! Lowering: notification bits, capability tables, queue and device
//! addresses, the boot spec of every example, and the listing.

mod common;

use std::path::{Path, PathBuf};

use capdl::Options;
use capdl::{DEVICE_WINDOW, ProgramSet, QUEUE_WINDOW};
use common::{assert_round_trip, system};
use microvisor_abi::PAGE_SIZE;
use microvisor_abi::spec::{CapabilityKind, MemoryKind, NONE, Spec, Wiring, name_of, queue_pages};
use microvisor_abi::vcpu::EntryMode;

fn examples() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths
}

/// Every program the examples name (the lead adds programs as scenarios
/// need them; whether they exist is the build tool's check, not this one).
fn example_programs() -> ProgramSet {
    let mut names = Vec::new();
    for path in examples() {
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(components) = table.get("components").and_then(|c| c.as_table()) else {
            continue;
        };
        for (name, component) in components {
            let program = component
                .get("program")
                .and_then(|p| p.as_str())
                .unwrap_or(name);
            names.push(program.to_string());
        }
    }
    ProgramSet::new("components/", names)
}

#[test]
fn every_example_lowers_to_a_spec_the_core_accepts() {
    let paths = examples();
    assert!(paths.len() >= 6, "examples: {paths:?}");
    for path in paths {
        let loaded = capdl::load(&path, &example_programs());
        let system = loaded.unwrap_or_else(|errors| panic!("{}:\n{errors}", path.display()));
        assert_round_trip(&system);
        let lowered = system.lower();
        assert_eq!(lowered.spec, system.spec());
        assert_eq!(lowered.programs.len(), system.components.len());
    }
}

#[test]
fn ping_pong_is_a_call_path_with_crossed_bits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ping-pong.toml");
    let system = capdl::load(&path, &example_programs()).unwrap();
    assert_eq!(system.queues[0].reply, Some(1));
    let layout = &system.layout;
    // requests: ping -> pong. Bits in pong's word then ping's.
    assert_eq!(
        (layout.queues[0].receiver_bit, layout.queues[0].sender_bit),
        (0, 0)
    );
    // replies: pong -> ping.
    assert_eq!(
        (layout.queues[1].receiver_bit, layout.queues[1].sender_bit),
        (1, 1)
    );
    let lowered = system.lower();
    let programs: Vec<_> = lowered
        .programs
        .iter()
        .map(|p| (p.component.as_str(), p.program.as_str(), p.args.as_str()))
        .collect();
    assert_eq!(
        programs,
        [("ping", "ping", "rounds=100000"), ("pong", "pong", "")]
    );
    let entries: Vec<_> = lowered
        .image_programs()
        .into_iter()
        .map(|program| program.entry)
        .collect();
    assert_eq!(entries, ["ping", "pong"]);
}

#[test]
fn defaults() {
    let system = system("[components.hello]\n");
    let hello = &system.components[0];
    assert_eq!(hello.program, "hello");
    assert_eq!(hello.priority, 100);
    assert_eq!((hello.budget_us, hello.period_us), (10_000, 10_000));
    assert_eq!(hello.stack_bytes, 16 * PAGE_SIZE);
    assert_eq!(hello.memory_bytes, 4096 * PAGE_SIZE);
    assert_eq!((hello.max_restarts, hello.restart_backoff_ms), (3, 10));
    assert_eq!(hello.start, capdl::Start::Boot);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    assert_eq!(
        (
            spec.components[0].stack_pages,
            spec.components[0].memory_pages
        ),
        (16, 4096)
    );
    assert_eq!(spec.components[0].supervisor, NONE);
    assert_eq!(spec.header.scheduling_controller, NONE);
}

/// A `[[component]]` entry means exactly what an image without a spec
/// meant to the core before every image carried one (priority 100, budget
/// and period 10ms, 16 stack pages, 4096 memory pages, started at boot,
/// unsupervised), so the scenarios written as lists boot as before.
#[test]
fn a_component_list_lowers_to_the_settings_of_the_old_spec_less_boot() {
    let system = system(
        "[[component]]\nname = \"first\"\nprogram = \"hello\"\nargs = \"count=3\"\n\
         [[component]]\nname = \"crasher\"\n",
    );
    assert_round_trip(&system);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let records: Vec<_> = spec
        .components
        .iter()
        .map(|record| {
            (
                name_of(&record.name).unwrap(),
                name_of(&record.program).unwrap(),
                &record.args[..record.args_len as usize],
                (record.priority, record.budget_us, record.period_us),
                (record.stack_pages, record.memory_pages),
                (record.start, record.supervisor, record.capability_count),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            (
                "first",
                "hello",
                &b"count=3"[..],
                (100, 10_000, 10_000),
                (16, 4096),
                (1, NONE, 0)
            ),
            (
                "crasher",
                "crasher",
                &b""[..],
                (100, 10_000, 10_000),
                (16, 4096),
                (1, NONE, 0)
            ),
        ]
    );
    assert!(spec.queues.is_empty() && spec.vms.is_empty());
}

#[test]
fn both_forms_of_components_are_numbered_in_the_order_written() {
    let system = system(
        "[[component]]\nname = \"a\"\n[components.b]\n[[component]]\nname = \"c\"\n\
         [queues.q]\nfrom = \"a\"\nto = \"c\"\nslot_size = 8\nslots = 2\n",
    );
    let names: Vec<_> = system.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!((system.queues[0].sender, system.queues[0].receiver), (0, 2));
}

#[test]
fn a_corrupted_program_is_its_own_image_entry() {
    let options = capdl::Options {
        corruptions: vec!["bad-magic".into()],
        ..capdl::Options::default()
    };
    let text = "[[component]]\nname = \"broken\"\nprogram = \"hello\"\ncorrupt = \"bad-magic\"\n\
                [[component]]\nname = \"hello\"\n[[component]]\nname = \"again\"\nprogram = \"hello\"\n";
    let system = common::load_files(&[("main.toml", text)], &options).unwrap();
    let lowered = system.lower();
    let spec = Spec::parse(&lowered.spec).unwrap();
    let programs: Vec<_> = spec
        .components
        .iter()
        .map(|record| name_of(&record.program).unwrap())
        .collect();
    assert_eq!(programs, ["broken", "hello", "hello"]);
    assert_eq!(
        lowered.image_programs(),
        [
            capdl::ImageProgram {
                entry: "broken".into(),
                program: "hello".into(),
                corrupt: Some("bad-magic".into()),
            },
            capdl::ImageProgram {
                entry: "hello".into(),
                program: "hello".into(),
                corrupt: None,
            },
        ]
    );
    assert!(lowered.cdl.contains(
        "  broken = component (index: 0, program: hello, corrupt: bad-magic, entry: broken, start: boot)"
    ));
}

#[test]
fn budget_defaults_to_the_period() {
    let system = system("[components.hello]\nperiod = \"20ms\"\n");
    assert_eq!(
        (
            system.components[0].budget_us,
            system.components[0].period_us
        ),
        (20_000, 20_000)
    );
}

#[test]
fn notification_bits_are_allocated_faults_queues_notifications_interrupts() {
    let system = system(
        "[system]\ninterrupt_forwarder = \"supervisor\"\n[components.supervisor]\n\
         [components.a]\nsupervisor = \"supervisor\"\n\
         [components.b]\nsupervisor = \"supervisor\"\ninterrupts = [3, \"9 level-high\"]\n\
         [queues.q]\nfrom = \"a\"\nto = \"supervisor\"\nslot_size = 8\nslots = 2\n\
         [queues.r]\nfrom = \"b\"\nto = \"a\"\nslot_size = 8\nslots = 2\n\
         [notifications.kick]\nfrom = \"a\"\nto = \"b\"\n",
    );
    let layout = &system.layout;
    assert_eq!(
        layout.fault_bits,
        [0, 0, 1],
        "a and b in the supervisor's word"
    );
    assert_eq!(
        (layout.queues[0].receiver_bit, layout.queues[0].sender_bit),
        (2, 0)
    );
    assert_eq!(
        (layout.queues[1].receiver_bit, layout.queues[1].sender_bit),
        (1, 0)
    );
    assert_eq!(layout.notification_bits, [1]);
    assert_eq!(layout.interrupt_bits, [vec![], vec![], vec![2, 3]]);
    let bits = |fired, acknowledged, ready| {
        Some(capdl::ForwarderBits {
            fired,
            acknowledged,
            ready,
        })
    };
    assert_eq!(
        layout.forwarder_bits,
        [vec![], vec![], vec![bits(3, 4, 5), bits(6, 7, 8)]]
    );
    assert_eq!(
        layout.bit_uses,
        [
            vec![
                "fault of 'a'",
                "fault of 'b'",
                "queue 'q' has messages",
                "interrupt line 3 fired (for 'b')",
                "interrupt line 3 acknowledged by 'b'",
                "interrupt line 3: 'b' (re)started",
                "interrupt line 9 fired (for 'b')",
                "interrupt line 9 acknowledged by 'b'",
                "interrupt line 9: 'b' (re)started",
            ],
            vec!["queue 'q' has space", "queue 'r' has messages"],
            vec![
                "queue 'r' has space",
                "notification 'kick'",
                "interrupt line 3",
                "interrupt line 9"
            ],
        ]
    );
    // The forwarder delivers to the driver; the driver acknowledges and
    // says it (re)started to the forwarder.
    let notifications = |holder: usize| -> Vec<(String, Option<usize>, u64)> {
        layout.capabilities[holder]
            .iter()
            .filter(|capability| capability.name.starts_with("irq"))
            .map(|capability| (capability.name.clone(), capability.target, capability.badge))
            .collect()
    };
    assert_eq!(
        notifications(0),
        [
            ("irq3".into(), Some(2), 1 << 2),
            ("irq9".into(), Some(2), 1 << 3)
        ]
    );
    assert_eq!(
        notifications(2),
        [
            ("irq3.ack".into(), Some(0), 1 << 4),
            ("irq3.ready".into(), Some(0), 1 << 5),
            ("irq9.ack".into(), Some(0), 1 << 7),
            ("irq9.ready".into(), Some(0), 1 << 8),
        ]
    );
    // The core delivers both lines to the forwarder, on its bits.
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    assert_eq!(spec.header.interrupt_forwarder, 0);
    let grants: Vec<_> = spec
        .interrupt_grants
        .iter()
        .map(|g| (g.component, g.line, g.bit, g.wiring, g.owner))
        .collect();
    assert_eq!(
        grants,
        [
            (0, 3, 3, Wiring::Default as u32, 2),
            (0, 9, 6, Wiring::LevelHigh as u32, 2)
        ]
    );
    assert_round_trip(&system);
}

#[test]
fn capability_tables_follow_the_documented_order() {
    let system = system(
        "[system]\nscheduling_controller = \"supervisor\"\n\
         [components.supervisor]\n\
         [components.a]\nsupervisor = \"supervisor\"\nobserve = [\"b\"]\n\
         [components.b]\n\
         [queues.q]\nfrom = \"a\"\nto = \"b\"\nslot_size = 8\nslots = 2\n\
         [notifications.kick]\nfrom = \"b\"\nto = \"a\"\n",
    );
    let table = |index: usize| -> Vec<(String, CapabilityKind, Option<usize>, u64)> {
        system.layout.capabilities[index]
            .iter()
            .map(|c| (c.name.clone(), c.kind, c.target, c.badge))
            .collect()
    };
    use CapabilityKind::*;
    assert_eq!(
        table(0),
        [
            ("a".into(), ComponentControl, Some(1), 0),
            ("scheduling".into(), SchedulingControl, None, 0),
            ("supervisor.sc".into(), SchedulingContext, Some(0), 0),
            ("a.sc".into(), SchedulingContext, Some(1), 0),
            ("b.sc".into(), SchedulingContext, Some(2), 0),
        ]
    );
    // a: q's sender bit is a's 0... the badge signals b's receiver bit.
    let q = system.layout.queues[0];
    assert_eq!(
        table(1),
        [
            ("q".into(), Notification, Some(2), 1 << q.receiver_bit),
            ("b.sc".into(), SchedulingContext, Some(2), 0),
        ]
    );
    assert_eq!(
        table(2),
        [
            ("q".into(), Notification, Some(1), 1 << q.sender_bit),
            (
                "kick".into(),
                Notification,
                Some(1),
                1 << system.layout.notification_bits[0]
            ),
        ]
    );
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let ranges: Vec<_> = spec
        .components
        .iter()
        .map(|c| (c.capability_first, c.capability_count))
        .collect();
    assert_eq!(ranges, [(0, 5), (5, 2), (7, 2)]);
    assert_eq!(spec.header.scheduling_controller, 0);
}

#[test]
fn queues_are_placed_per_component_with_guard_pages() {
    let system = system(
        "[components.a]\n[components.b]\n[components.c]\n\
         [queues.one]\nfrom = \"a\"\nto = \"b\"\nslot_size = 64\nslots = 256\n\
         [queues.two]\nfrom = \"c\"\nto = \"a\"\nslot_size = 4096\nslots = 4\n\
         [queues.three]\nfrom = \"a\"\nto = \"c\"\nslot_size = 8\nslots = 1\n",
    );
    let placements = &system.layout.queues;
    let one = queue_pages(64, 256);
    let two = queue_pages(4096, 4);
    assert_eq!((one, two, placements[2].pages), (5, 5, 2));
    assert_eq!(placements[0].sender_address, QUEUE_WINDOW);
    assert_eq!(placements[0].receiver_address, QUEUE_WINDOW);
    assert_eq!(placements[1].sender_address, QUEUE_WINDOW);
    assert_eq!(
        placements[1].receiver_address,
        QUEUE_WINDOW + (one + 1) * PAGE_SIZE
    );
    assert_eq!(
        placements[2].sender_address,
        QUEUE_WINDOW + (one + 1 + two + 1) * PAGE_SIZE
    );
    assert_eq!(
        placements[2].receiver_address,
        QUEUE_WINDOW + (two + 1) * PAGE_SIZE
    );
    // Within each component the mappings are page-aligned and separated.
    for component in 0..3 {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (queue, placement) in system.queues.iter().zip(placements) {
            for (end, address) in [
                (queue.sender, placement.sender_address),
                (queue.receiver, placement.receiver_address),
            ] {
                if end == component {
                    assert_eq!(address % PAGE_SIZE, 0);
                    ranges.push((address, address + placement.pages * PAGE_SIZE));
                }
            }
        }
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 + PAGE_SIZE <= pair[1].0,
                "guard page between {pair:?}"
            );
        }
    }
}

#[test]
fn device_grants_are_lowered() {
    let system = system(
        "[system]\ninterrupt_forwarder = \"c\"\n\
         [components.driver]\nports = [\"0x2f8-0x2ff\", 0x60]\n\
         mmio = [{ physical = \"0xfebd0000\", size = \"8KiB\" }, { physical = \"0xfed00000\", size = 4096 }]\n\
         interrupts = [3]\n[components.c]\n",
    );
    assert_eq!(
        system.layout.mmio_addresses[0],
        [DEVICE_WINDOW, DEVICE_WINDOW + 3 * PAGE_SIZE]
    );
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let ports: Vec<_> = spec
        .port_grants
        .iter()
        .map(|g| (g.first, g.count))
        .collect();
    assert_eq!(ports, [(0x2f8, 8), (0x60, 1)]);
    assert_eq!(spec.memory_grants[1].physical, 0xfed0_0000);
    // Line 3 reaches the forwarder (component 1) on its first bit, for
    // the driver (component 0).
    let grant = spec.interrupt_grants[0];
    assert_eq!(
        (grant.component, grant.line, grant.bit, grant.owner),
        (1, 3, 0, 0)
    );
    assert_round_trip(&system);
}

#[test]
fn dma_buffers_follow_device_memory_in_the_device_window() {
    let system = system(
        "[components.driver]\nmmio = [{ physical = \"0xfebd0000\", size = \"8KiB\" }]\n\
         dma = [{ size = \"64KiB\" }, { size = \"4KiB\", below_4g = true }]\n",
    );
    let layout = &system.layout;
    assert_eq!(layout.mmio_addresses[0], [DEVICE_WINDOW]);
    assert_eq!(
        layout.dma_addresses[0],
        [
            DEVICE_WINDOW + 3 * PAGE_SIZE,
            DEVICE_WINDOW + 3 * PAGE_SIZE + 17 * PAGE_SIZE
        ]
    );
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let kinds: Vec<_> = spec
        .memory_grants
        .iter()
        .map(|g| (g.kind, g.physical, g.size))
        .collect();
    assert_eq!(
        kinds,
        [
            (MemoryKind::Device as u32, 0xfebd_0000, 8192),
            (MemoryKind::Dma as u32, 0, 65536),
            (MemoryKind::Dma32 as u32, 0, 4096)
        ]
    );
    let cdl = system.cdl();
    assert!(
        cdl.contains("    dma 4KiB, physically contiguous, zeroed, below 4GiB\n"),
        "{cdl}"
    );
    assert!(
        cdl.contains(": dma buffer (64KiB, physically contiguous, zeroed)\n"),
        "{cdl}"
    );
    assert_round_trip(&system);
}

#[test]
fn pci_functions_take_msi_lines_and_a_window() {
    let system = system(
        "[system]\ninterrupt_forwarder = \"c\"\n[components.c]\n\
         [components.blk]\nprogram = \"a\"\npci = { vendor = \"0x1af4\", device = \"0x1042\", bars = [4], msi = 2 }\n\
         dma = [{ size = \"64KiB\" }]\n\
         [components.net]\nprogram = \"b\"\npci = { vendor = \"0x1af4\", device = \"0x1041\", address = \"00:05.0\", msi = 1 }\n\
         [machine]\ndisks = [{ size = \"8MiB\" }]\n",
    );
    let layout = &system.layout;
    assert_eq!(
        layout.pci_windows,
        [
            None,
            Some(DEVICE_WINDOW + 17 * PAGE_SIZE),
            Some(DEVICE_WINDOW)
        ]
    );
    let lines = |index: usize| -> Vec<u32> {
        system.components[index]
            .interrupts
            .iter()
            .map(|grant| grant.line)
            .collect()
    };
    assert_eq!(lines(1), [24, 25]);
    assert_eq!(lines(2), [26]);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let pci: Vec<_> = spec
        .pci_devices
        .iter()
        .map(|p| {
            (
                p.component,
                p.vendor,
                p.device,
                p.address,
                p.bars,
                p.msi_vectors,
                p.msi_first_line,
            )
        })
        .collect();
    assert_eq!(
        pci,
        [
            (1, 0x1af4, 0x1042, NONE, 1 << 4, 2, 24),
            (2, 0x1af4, 0x1041, 5 << 3, 0, 1, 26)
        ]
    );
    // The MSI lines go to the forwarder like any other.
    let grants: Vec<_> = spec
        .interrupt_grants
        .iter()
        .map(|g| (g.component, g.line, g.owner))
        .collect();
    assert_eq!(grants, [(0, 24, 1), (0, 25, 1), (0, 26, 2)]);
    let cdl = system.cdl();
    assert!(
        cdl.contains("    pci 1af4:1042 at any address, BARs 4, MSI vectors as lines 24..=25\n"),
        "{cdl}"
    );
    assert!(
        cdl.contains("machine {\n  disk 0: virtio-blk-pci (1af4:1042), 8MiB zeroed\n}"),
        "{cdl}"
    );
    assert_eq!(
        system.disks,
        [capdl::MachineDisk {
            size: Some(8 << 20),
            image: None,
            files: Vec::new(),
        }]
    );
    assert_round_trip(&system);
}

#[test]
fn the_widest_grant_is_every_port_above_the_cores() {
    // Every port would include the core's own (refused in checks.rs);
    // everything above them is one record.
    let system = system("[components.driver]\nports = [\"0xd00-0xffff\"]\n");
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let ports: Vec<_> = spec
        .port_grants
        .iter()
        .map(|g| (g.first, g.count))
        .collect();
    assert_eq!(ports, [(0xd00, 0xf300)]);
}

#[test]
fn supervised_start_is_lowered() {
    let system = system(
        "[components.supervisor]\n[components.hello]\nsupervisor = \"supervisor\"\nstart = \"supervisor\"\n\
         restart = { max = 7, backoff = \"1s\" }\n",
    );
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let hello = &spec.components[1];
    assert_eq!(
        (
            hello.start,
            hello.supervisor,
            hello.max_restarts,
            hello.restart_backoff_ms
        ),
        (0, 0, 7, 1000)
    );
    assert_eq!(spec.components[0].start, 1);
}

#[test]
fn a_watchdog_is_lowered_with_the_restart_policy() {
    let system = system(
        "[components.supervisor]\n[components.hello]\nsupervisor = \"supervisor\"\n\
         restart = { max = 100000, backoff = \"10ms\", watchdog = \"1.5s\" }\n\
         [components.peer]\nsupervisor = \"supervisor\"\n",
    );
    assert_round_trip(&system);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let policies: Vec<_> = spec
        .components
        .iter()
        .map(|c| (c.max_restarts, c.restart_backoff_ms, c.watchdog_ms))
        .collect();
    // Without a watchdog, 0.
    assert_eq!(policies, [(3, 10, 0), (100_000, 10, 1500), (3, 10, 0)]);
    assert!(
        system.cdl().contains(
            "  supervisor supervises hello (fault bit: 0, max_restarts: 100000, backoff: 10ms, watchdog: 1500ms)\n  supervisor supervises peer (fault bit: 1, max_restarts: 3, backoff: 10ms)\n"
        ),
        "{}",
        system.cdl()
    );
}

#[test]
fn injection_capabilities_go_to_the_injector_last() {
    let system = system(
        "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"ws\", \"supervisor\"]\n\
         [components.supervisor]\n\
         [components.store]\nprogram = \"block-store\"\nsupervisor = \"supervisor\"\n\
         [components.injector]\nprogram = \"a\"\nobserve = [\"store\"]\n\
         [components.ws]\nprogram = \"world-switcher\"\n\
         [vms.g]\nswitcher = \"ws\"\npoke = [\"injector\"]\n\
         [notifications.kick]\nfrom = \"injector\"\nto = \"store\"\n",
    );
    assert_round_trip(&system);
    let test = system.test.as_ref().unwrap();
    assert_eq!((test.injector, test.targets.clone()), (2, vec![1, 3, 0]));
    let table: Vec<(String, CapabilityKind, Option<usize>, u64)> = system.layout.capabilities[2]
        .iter()
        .map(|c| (c.name.clone(), c.kind, c.target, c.badge))
        .collect();
    use CapabilityKind::*;
    let kick = 1 << system.layout.notification_bits[0];
    assert_eq!(
        table,
        [
            ("kick".into(), Notification, Some(1), kick),
            ("store.sc".into(), SchedulingContext, Some(1), 0),
            ("g.vcpu".into(), Vcpu, Some(0), 0),
            // In the order [test] lists them, named after their targets.
            ("store".into(), Injection, Some(1), 0),
            ("ws".into(), Injection, Some(3), 0),
            ("supervisor".into(), Injection, Some(0), 0),
        ]
    );
    // Nobody else holds one.
    let others = system
        .layout
        .capabilities
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != 2)
        .flat_map(|(_, table)| table);
    assert!(others.into_iter().all(|c| c.kind != Injection));
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let records: Vec<_> = spec
        .capabilities_of(2)
        .iter()
        .map(|c| (name_of(&c.name).unwrap().to_string(), c.kind, c.target))
        .collect();
    assert_eq!(
        records[3..],
        [
            ("store".to_string(), 7, 1),
            ("ws".to_string(), 7, 3),
            ("supervisor".to_string(), 7, 0),
        ]
    );
    assert_eq!(Injection as u32, 7);
}

#[test]
fn a_system_without_test_grants_no_injection() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fault-restart.toml");
    let system = capdl::load(&path, &example_programs()).unwrap();
    assert!(system.test.is_none());
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    assert!(
        spec.capabilities
            .iter()
            .all(|c| c.kind != CapabilityKind::Injection as u32)
    );
    assert!(!system.cdl().contains("inject"));
}

#[test]
fn listing_of_a_test_system() {
    let mut system = system(
        "[system]\ndescription = \"campaign: an injector crashes and hangs a supervised worker\"\n\
         [test]\ninjector = \"injector\"\ntargets = [\"crasher\", \"peer\"]\n\
         [components.supervisor]\n\
         [components.injector]\nprogram = \"hello\"\n\
         [components.crasher]\nsupervisor = \"supervisor\"\nrestart = { max = 100000, watchdog = \"1s\" }\n\
         [components.peer]\n",
    );
    system.root = "examples/campaign.toml".into();
    let expected = r#"-- capDL-style listing of examples/campaign.toml, written by capdl.
-- For people; the core reads the boot spec (capdl --emit spec).
-- campaign: an injector crashes and hangs a supervised worker
-- Test only: 'injector' may inject faults into 2 components (see test below).

arch x86_64

objects {
  supervisor = component (index: 0, program: supervisor, start: boot)
  supervisor.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  supervisor.vspace = address_space (memory: 16MiB, stack: 64KiB)
  supervisor.notification = notification (bits used: 1 of 64)
  injector = component (index: 1, program: hello, start: boot)
  injector.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  injector.vspace = address_space (memory: 16MiB, stack: 64KiB)
  injector.notification = notification (bits used: 1 of 64)
  crasher = component (index: 2, program: crasher, start: boot)
  crasher.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  crasher.vspace = address_space (memory: 16MiB, stack: 64KiB)
  crasher.notification = notification (bits used: 0 of 64)
  peer = component (index: 3, program: peer, start: boot)
  peer.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  peer.vspace = address_space (memory: 16MiB, stack: 64KiB)
  peer.notification = notification (bits used: 0 of 64)
}

caps {
  supervisor {
    0: crasher = crasher (control: fault, restart, stop)  -- table entry 0
  }
  injector {
    0: crasher = crasher (inject faults: crash, hang, corrupt, flood; test only)  -- table entry 1
    1: peer = peer (inject faults: crash, hang, corrupt, flood; test only)  -- table entry 2
  }
}

bits {
  supervisor.notification {
    0: fault of 'crasher'
  }
  injector.notification {
    0: interrupt line 4
  }
}

mappings {
  -- none
}

grants {
  injector {
    interrupt 4 -> bit 0
  }
}

supervision {
  supervisor supervises crasher (fault bit: 0, max_restarts: 100000, backoff: 10ms, watchdog: 1s)
}

test {
  -- fault injection, granted only by [test]: never in a production system
  injector injects faults into crasher (test only)
  injector injects faults into peer (test only)
}
"#;
    assert_eq!(system.cdl(), expected);
}

#[test]
fn listing_of_a_supervised_pair() {
    let mut system = system(
        "[system]\ndescription = \"fault-restart: a faulting component is restarted by its supervisor, then held\"\n\
         [components.supervisor]\npriority = 200\n\
         [components.crasher]\nsupervisor = \"supervisor\"\nrestart = { max = 3, backoff = \"10ms\" }\n\
         [components.peer]\nsupervisor = \"supervisor\"\n\
         [queues.reports]\nfrom = \"crasher\"\nto = \"peer\"\nslot_size = 64\nslots = 16\n",
    );
    system.root = "examples/fault-restart.toml".into();
    let expected = r#"-- capDL-style listing of examples/fault-restart.toml, written by capdl.
-- For people; the core reads the boot spec (capdl --emit spec).
-- fault-restart: a faulting component is restarted by its supervisor, then held

arch x86_64

objects {
  supervisor = component (index: 0, program: supervisor, start: boot)
  supervisor.sc = sched_context (priority: 200, budget: 10ms, period: 10ms)
  supervisor.vspace = address_space (memory: 16MiB, stack: 64KiB)
  supervisor.notification = notification (bits used: 2 of 64)
  crasher = component (index: 1, program: crasher, start: boot)
  crasher.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  crasher.vspace = address_space (memory: 16MiB, stack: 64KiB)
  crasher.notification = notification (bits used: 1 of 64)
  peer = component (index: 2, program: peer, start: boot)
  peer.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  peer.vspace = address_space (memory: 16MiB, stack: 64KiB)
  peer.notification = notification (bits used: 1 of 64)
  reports = queue (crasher -> peer, slot_size: 64, slots: 16, pages: 2)
}

caps {
  supervisor {
    0: crasher = crasher (control: fault, restart, stop)  -- table entry 0
    1: peer = peer (control: fault, restart, stop)  -- table entry 1
  }
  crasher {
    0: reports = peer.notification (signal, badge: 0x1)  -- table entry 2
  }
  peer {
    0: reports = crasher.notification (signal, badge: 0x1)  -- table entry 3
  }
}

bits {
  supervisor.notification {
    0: fault of 'crasher'
    1: fault of 'peer'
  }
  crasher.notification {
    0: queue 'reports' has space
  }
  peer.notification {
    0: queue 'reports' has messages
  }
}

mappings {
  crasher.vspace {
    0x0000400000000000: queue reports (send, 2 pages, shared with peer)
  }
  peer.vspace {
    0x0000400000000000: queue reports (receive, 2 pages, shared with crasher)
  }
}

supervision {
  supervisor supervises crasher (fault bit: 0, max_restarts: 3, backoff: 10ms)
  supervisor supervises peer (fault bit: 1, max_restarts: 3, backoff: 10ms)
}
"#;
    assert_eq!(system.cdl(), expected);
}

#[test]
fn calls_are_endpoint_capabilities_badged_per_server() {
    let system = system(
        "[components.pong]\npriority = 120\n[components.ping]\n[components.peer]\n[components.b]\n\
         [notifications.kick]\nfrom = \"ping\"\nto = \"pong\"\n\
         [calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
         [calls.log]\nfrom = \"ping\"\nto = \"b\"\n\
         [calls.other]\nfrom = \"peer\"\nto = \"pong\"\n",
    );
    assert_round_trip(&system);
    let names: Vec<_> = system
        .calls
        .iter()
        .map(|c| (c.name.as_str(), c.client, c.server))
        .collect();
    assert_eq!(names, [("echo", 1, 0), ("log", 1, 3), ("other", 2, 0)]);
    // pong's callers are 1 and 2 in declaration order; b's first is 1.
    assert_eq!(system.layout.call_badges, [1, 1, 2]);
    let table = |index: usize| -> Vec<(String, CapabilityKind, Option<usize>, u64)> {
        system.layout.capabilities[index]
            .iter()
            .map(|c| (c.name.clone(), c.kind, c.target, c.badge))
            .collect()
    };
    use CapabilityKind::*;
    let kick = 1 << system.layout.notification_bits[0];
    // After the notifications it sends.
    assert_eq!(
        table(1),
        [
            ("kick".into(), Notification, Some(0), kick),
            ("echo".into(), Endpoint, Some(0), 1),
            ("log".into(), Endpoint, Some(3), 1),
        ]
    );
    assert_eq!(table(2), [("other".into(), Endpoint, Some(0), 2)]);
    // The servers hold nothing for being called, and no bits are taken.
    assert!(table(0).is_empty() && table(3).is_empty());
    assert_eq!(system.layout.bit_uses[0], ["notification 'kick'"]);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let records: Vec<_> = spec
        .capabilities
        .iter()
        .filter(|c| c.kind == Endpoint as u32)
        .map(|c| (name_of(&c.name).unwrap(), c.holder, c.target, c.badge))
        .collect();
    assert_eq!(
        records,
        [("echo", 1, 0, 1), ("log", 1, 3, 1), ("other", 2, 0, 2)]
    );
    assert_eq!(Endpoint as u32, 8);
}

#[test]
fn listing_of_calls() {
    let mut system = system(
        "[components.pong]\n[components.ping]\n[components.peer]\n\
         [calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
         [calls.other]\nfrom = \"peer\"\nto = \"pong\"\n",
    );
    system.root = "examples/calls.toml".into();
    let expected = r#"-- capDL-style listing of examples/calls.toml, written by capdl.
-- For people; the core reads the boot spec (capdl --emit spec).

arch x86_64

objects {
  pong = component (index: 0, program: pong, start: boot)
  pong.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  pong.vspace = address_space (memory: 16MiB, stack: 64KiB)
  pong.notification = notification (bits used: 0 of 64)
  pong.endpoint = endpoint (callers: ping (badge 1), peer (badge 2))
  ping = component (index: 1, program: ping, start: boot)
  ping.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  ping.vspace = address_space (memory: 16MiB, stack: 64KiB)
  ping.notification = notification (bits used: 0 of 64)
  peer = component (index: 2, program: peer, start: boot)
  peer.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  peer.vspace = address_space (memory: 16MiB, stack: 64KiB)
  peer.notification = notification (bits used: 0 of 64)
}

caps {
  ping {
    0: echo = pong.endpoint (call, badge: 1)  -- table entry 0
  }
  peer {
    0: other = pong.endpoint (call, badge: 2)  -- table entry 1
  }
}

bits {
  -- none
}

mappings {
  -- none
}
"#;
    assert_eq!(system.cdl(), expected);
}

#[test]
fn listing_shows_grants_and_empty_sections() {
    let system = system("[components.driver]\nports = [\"0x2f8-0x2ff\"]\n");
    let cdl = system.cdl();
    assert!(cdl.contains("caps {\n  -- none\n}"), "{cdl}");
    assert!(
        cdl.contains("grants {\n  driver {\n    ports 0x2f8-0x2ff\n  }\n}"),
        "{cdl}"
    );
    let forwarded = common::system(
        "[system]\ninterrupt_forwarder = \"c\"\n[components.driver]\ninterrupts = [\"3 level-low\"]\n[components.c]\n",
    );
    let cdl = forwarded.cdl();
    assert!(
        cdl.contains("  interrupts = irq_control (device lines go to c)\n"),
        "{cdl}"
    );
    assert!(
        cdl.contains(
            "grants {\n  driver {\n    interrupt 3 (level-low) -> bit 0 via c (its bits: fired 0, ack 1, ready 2)\n  }\n}"
        ),
        "{cdl}"
    );
    assert!(
        cdl.contains("    0: irq3 = driver.notification (signal, badge: 0x1)"),
        "{cdl}"
    );
}

const TWO_VMS: &str = "[components.ws-hello]\nprogram = \"world-switcher\"\n\
     [components.vmctl]\n\
     [components.ws-dos]\nprogram = \"world-switcher\"\npriority = 120\n\
     [vms.hello]\nswitcher = \"ws-hello\"\nimage = \"hello\"\nmemory = \"4MiB\"\n\
     priority = 150\nbudget = \"2ms\"\nperiod = \"10ms\"\npoke = [\"vmctl\", \"ws-dos\"]\n\
     [vms.dos]\nswitcher = \"ws-dos\"\nimage = \"hello\"\nentry = \"real\"\npoke = [\"vmctl\"]\n";

#[test]
fn vms_are_lowered_in_declaration_order() {
    let system = system(TWO_VMS);
    assert_round_trip(&system);
    let names: Vec<&str> = system.vms.iter().map(|vm| vm.name.as_str()).collect();
    assert_eq!(names, ["hello", "dos"]);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    assert_eq!(spec.vms.len(), 2);
    let hello = &spec.vms[0];
    assert_eq!(name_of(&hello.name), Some("hello"));
    assert_eq!(name_of(&hello.image), Some("vm-hello"));
    assert_eq!(hello.switcher, 0);
    assert_eq!(hello.entry, EntryMode::Long as u32);
    assert_eq!(hello.memory_bytes, 4 << 20);
    assert_eq!(
        (
            hello.memory_address,
            hello.image_address,
            hello.state_address
        ),
        (
            0x0000_6000_0000_0000,
            0x0000_6800_0000_0000,
            0x0000_7000_0000_0000
        )
    );
    let dos = &spec.vms[1];
    assert_eq!((dos.switcher, dos.entry), (2, EntryMode::Real as u32));
    assert_eq!(dos.memory_bytes, capdl::DEFAULT_VM_MEMORY);
    assert_eq!(name_of(&dos.image), Some("vm-hello"));
    // Every switcher sees its VM at the same addresses.
    assert_eq!(
        (dos.memory_address, dos.image_address, dos.state_address),
        (
            hello.memory_address,
            hello.image_address,
            hello.state_address
        )
    );
    assert_eq!(spec.vm_of(2).map(|(index, _)| index), Some(1));
    assert!(spec.vm_of(1).is_none());
    assert_eq!(system.lower().guests, ["hello"]);
}

#[test]
fn vm_capabilities_go_to_the_switcher_and_the_pokers() {
    let system = system(TWO_VMS);
    let caps = |index: usize| -> Vec<(String, CapabilityKind, Option<usize>)> {
        system.layout.capabilities[index]
            .iter()
            .map(|c| (c.name.clone(), c.kind, c.target))
            .collect()
    };
    let cap = |name: &str, kind, target| (name.to_string(), kind, Some(target));
    assert_eq!(
        caps(0),
        [
            cap("hello.vmcs", CapabilityKind::Vmcs, 0),
            cap("hello.vcpu", CapabilityKind::Vcpu, 0),
        ]
    );
    assert_eq!(
        caps(1),
        [
            cap("hello.vcpu", CapabilityKind::Vcpu, 0),
            cap("dos.vcpu", CapabilityKind::Vcpu, 1),
        ]
    );
    assert_eq!(
        caps(2),
        [
            cap("hello.vcpu", CapabilityKind::Vcpu, 0),
            cap("dos.vmcs", CapabilityKind::Vmcs, 1),
            cap("dos.vcpu", CapabilityKind::Vcpu, 1),
        ]
    );
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let record = &spec.capabilities_of(0)[0];
    assert_eq!(
        (record.kind, record.target),
        (CapabilityKind::Vmcs as u32, 0)
    );
}

#[test]
fn vm_scheduling_is_its_switchers() {
    let system = system(TWO_VMS);
    let ws = &system.components[0];
    assert_eq!(
        (ws.priority, ws.budget_us, ws.period_us),
        (150, 2_000, 10_000)
    );
    let ws_dos = &system.components[2];
    assert_eq!(
        (ws_dos.priority, ws_dos.budget_us, ws_dos.period_us),
        (120, 10_000, 10_000),
        "set on the switcher"
    );
    let only_period = system_of_one_vm("period = \"20ms\"\n");
    assert_eq!(
        (
            only_period.components[0].budget_us,
            only_period.components[0].period_us
        ),
        (20_000, 20_000),
        "the budget defaults to the VM's period"
    );
}

fn system_of_one_vm(extra: &str) -> capdl::System {
    system(&format!(
        "[components.ws]\nprogram = \"world-switcher\"\n[vms.g]\nswitcher = \"ws\"\n{extra}"
    ))
}

#[test]
fn vm_defaults() {
    let system = system_of_one_vm("");
    let vm = &system.vms[0];
    assert_eq!(vm.image, "g", "the image defaults to the VM's name");
    assert_eq!(vm.image_entry(), "vm-g");
    assert_eq!(vm.memory_bytes, 2 << 20);
    assert_eq!(vm.entry, EntryMode::Long);
    assert!(vm.poke.is_empty());
    let ws = &system.components[0];
    assert_eq!(
        (ws.priority, ws.budget_us, ws.period_us),
        (100, 10_000, 10_000)
    );
    assert_eq!(system.lower().guests, ["g"]);
    assert_round_trip(&system);
}

#[test]
fn console_input_is_the_console_line_granted_to_the_switcher() {
    let system = system_of_one_vm("console_input = true\n");
    assert!(system.vms[0].console_input);
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    assert_eq!(spec.interrupt_grants.len(), 1);
    let grant = spec.interrupt_grants[0];
    assert_eq!(
        (grant.component, grant.line),
        (0, microvisor_abi::syscall::CONSOLE_LINE)
    );
    assert!(
        system.cdl().contains("interrupt 4 -> bit"),
        "{}",
        system.cdl()
    );
    assert_round_trip(&system);
    let without = system_of_one_vm("console_input = false\n").spec();
    assert!(Spec::parse(&without).unwrap().interrupt_grants.is_empty());
}

#[test]
fn the_console_can_be_given_to_a_vm_by_name() {
    let text = "[components.ws]\nprogram = \"world-switcher\"\n[vms.g]\nswitcher = \"ws\"\n";
    let options = |console: &str| capdl::Options {
        console: Some(console.to_string()),
        ..capdl::Options::default()
    };
    let given = common::load_files(&[("main.toml", text)], &options("g")).unwrap();
    assert!(given.vms[0].console_input);
    let spec_bytes = given.spec();
    let spec = Spec::parse(&spec_bytes).unwrap();
    assert_eq!(
        spec.interrupt_grants[0].line,
        microvisor_abi::syscall::CONSOLE_LINE
    );
    let unknown = common::load_files(&[("main.toml", text)], &options("h")).unwrap_err();
    assert_eq!(
        common::render(&unknown),
        [
            "main.toml:3:6: the console's input is asked for VM 'h', which the system does not declare (help: did you mean 'g'?)"
        ]
    );
}

#[test]
fn vm_windows_do_not_meet_queues_or_devices() {
    let text = "[components.ws]\nprogram = \"world-switcher\"\n\
         mmio = [{ physical = \"0xfebd0000\", size = \"64KiB\" }]\n[components.b]\nprogram = \"a\"\n\
         [queues.q]\nfrom = \"ws\"\nto = \"b\"\nslot_size = 16384\nslots = 256\n\
         [vms.g]\nswitcher = \"ws\"\nmemory = \"1GiB\"\n";
    let options = capdl::Options {
        machine_memory: 2 << 30,
        ..Options::default()
    };
    let system = common::load_files(&[("main.toml", text)], &options).unwrap();
    assert_round_trip(&system);
    let layout = &system.layout;
    let queue_end = layout.queues[0].sender_address + layout.queues[0].pages * PAGE_SIZE;
    assert!(queue_end <= DEVICE_WINDOW);
    assert!(layout.mmio_addresses[0][0] + (64 << 10) <= capdl::VM_MEMORY_ADDRESS);
    // The VM windows' own order and the stack are asserted at compile time
    // in capdl's check module.
}

#[test]
fn listing_of_a_vm() {
    let mut system = system(
        "[components.ws-hello]\nprogram = \"world-switcher\"\n\
         [components.vmctl]\n\
         [vms.hello]\nswitcher = \"ws-hello\"\npriority = 150\nbudget = \"2ms\"\npoke = [\"vmctl\"]\n",
    );
    system.root = "examples/vm-hello.toml".into();
    let expected = r#"-- capDL-style listing of examples/vm-hello.toml, written by capdl.
-- For people; the core reads the boot spec (capdl --emit spec).

arch x86_64

objects {
  ws-hello = component (index: 0, program: world-switcher, start: boot)
  ws-hello.sc = sched_context (priority: 150, budget: 2ms, period: 10ms)
  ws-hello.vspace = address_space (memory: 16MiB, stack: 64KiB)
  ws-hello.notification = notification (bits used: 0 of 64)
  vmctl = component (index: 1, program: vmctl, start: boot)
  vmctl.sc = sched_context (priority: 100, budget: 10ms, period: 10ms)
  vmctl.vspace = address_space (memory: 16MiB, stack: 64KiB)
  vmctl.notification = notification (bits used: 0 of 64)
  hello = vm (index: 0, switcher: ws-hello, image: vm-hello, memory: 2MiB, entry: long)
  hello.vmcs = vmcs
  hello.vcpu = vcpu (runs on ws-hello.sc)
}

caps {
  ws-hello {
    0: hello.vmcs = hello.vmcs (guest state, intercepts, reset)  -- table entry 0
    1: hello.vcpu = hello.vcpu (run, poke)  -- table entry 1
  }
  vmctl {
    0: hello.vcpu = hello.vcpu (poke)  -- table entry 2
  }
}

bits {
  -- none
}

mappings {
  ws-hello.vspace {
    0x0000600000000000: guest memory of VM hello (2MiB, guest-physical 0)
    0x0000680000000000: image vm-hello of VM hello (read-only, as large as the image)
    0x0000700000000000: vCPU state of VM hello (1 page)
  }
}
"#;
    assert_eq!(system.cdl(), expected);
}

#[test]
fn listing_of_networks() {
    let system = system(
        "[components.bridge]\nprogram = \"netbridge\"\n\
         [components.ws-a]\nprogram = \"world-switcher\"\n\
         [components.ws-b]\nprogram = \"world-switcher\"\n\
         [vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n\
         [vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\n\
         [networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\n\
         [networks.dmz]\nbridge = \"bridge\"\nmembers = [\"b\"]\nslots = 32\n",
    );
    assert_round_trip(&system);
    let cdl = system.cdl();
    // The MACs are net_api::mac_of of the NIC names, as the switchers show
    // them.
    assert_eq!(
        net_api::mac_of("lan-a"),
        [0x32, 0xb5, 0x18, 0x55, 0xec, 0x0b]
    );
    assert!(
        cdl.ends_with(
            "\nnetworks {\n\
             \x20 lan: bridge bridge, 64 frames in flight each way per NIC\n\
             \x20   lan-a: VM 'a', MAC 32:b5:18:55:ec:0b\n\
             \x20   lan-b: VM 'b', MAC 7e:b3:18:55:ec:0a\n\
             \x20 dmz: bridge bridge, 32 frames in flight each way per NIC\n\
             \x20   dmz-b: VM 'b', MAC 2e:da:f5:e3:b7:f7\n\
             }\n"
        ),
        "{cdl}"
    );
    assert!(
        cdl.contains(
            "  bridge = component (index: 0, program: netbridge, args: \"networks=lan,dmz\", start: boot)\n"
        ),
        "{cdl}"
    );
    assert!(
        cdl.contains(
            "  dmz-b-rx = queue (bridge -> ws-b, slot_size: 1528, slots: 32, pages: 13)\n"
        ),
        "{cdl}"
    );
    // No network, no block.
    assert!(
        !common::system("[components.a]\n")
            .cdl()
            .contains("networks {")
    );
}

/// A bridge, two VMs and the driver `nic` of the machine's NIC.
const UPLINK_SYSTEM: &str = "[components.bridge]\nprogram = \"netbridge\"\n\
     [components.ws-a]\nprogram = \"world-switcher\"\n\
     [components.ws-b]\nprogram = \"world-switcher\"\n\
     [components.nic]\nprogram = \"virtio-net\"\npci = { vendor = \"0x1af4\", device = \"0x1041\" }\n\
     [vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n\
     [vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\n\
     [machine]\ndisks = [{ size = \"8MiB\" }]\nnics = [{ backend = \"user\" }]\n";

#[test]
fn listing_of_a_shared_uplink() {
    let system = system(&format!(
        "{UPLINK_SYSTEM}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\nuplink = \"nic\"\n"
    ));
    assert_round_trip(&system);
    let cdl = system.cdl();
    assert!(
        cdl.contains(
            "\nmachine {\n\
             \x20 disk 0: virtio-blk-pci (1af4:1042), 8MiB zeroed\n\
             \x20 nic 0: virtio-net-pci (1af4:1041), user-mode network (gateway 10.0.2.2), MAC 52:54:00:12:34:56\n\
             }\n"
        ),
        "{cdl}"
    );
    assert!(
        cdl.ends_with(
            "\nnetworks {\n\
             \x20 lan: bridge bridge, 64 frames in flight each way per NIC\n\
             \x20   lan-a: VM 'a', MAC 32:b5:18:55:ec:0b\n\
             \x20   lan-b: VM 'b', MAC 7e:b3:18:55:ec:0a\n\
             \x20   lan-nic: uplink 'nic' (shared), card MAC 52:54:00:12:34:56\n\
             }\n"
        ),
        "{cdl}"
    );
    // The uplink's queues follow the NICs', of the same size; the bridge
    // and the driver hold them like any others.
    assert!(
        cdl.contains(
            "  lan-b-rx = queue (bridge -> ws-b, slot_size: 1528, slots: 64, pages: 25)\n\
             \x20 lan-nic-in = queue (nic -> bridge, slot_size: 1528, slots: 64, pages: 25)\n\
             \x20 lan-nic-out = queue (bridge -> nic, slot_size: 1528, slots: 64, pages: 25)\n"
        ),
        "{cdl}"
    );
    assert!(
        cdl.contains("  bridge = component (index: 0, program: netbridge, args: \"networks=lan\", start: boot)\n"),
        "{cdl}"
    );
    assert!(
        cdl.contains("  nic = component (index: 3, program: virtio-net, start: boot)\n"),
        "{cdl}"
    );
    let names = |index: usize| -> Vec<&str> {
        system.layout.capabilities[index]
            .iter()
            .map(|capability| capability.name.as_str())
            .collect()
    };
    assert_eq!(
        names(0),
        [
            "lan-a-tx",
            "lan-a-rx",
            "lan-b-tx",
            "lan-b-rx",
            "lan-nic-in",
            "lan-nic-out"
        ]
    );
    assert_eq!(names(3), ["lan-nic-in", "lan-nic-out"]);
    let spec_bytes = system.spec();
    let spec = Spec::parse(&spec_bytes).unwrap();
    let queues: Vec<_> = spec
        .queues
        .iter()
        .map(|q| {
            (
                name_of(&q.name).unwrap(),
                q.sender,
                q.receiver,
                q.slot_size,
                q.slot_count,
            )
        })
        .collect();
    assert_eq!(
        &queues[4..],
        [
            ("lan-nic-in", 3, 0, 1528, 64),
            ("lan-nic-out", 0, 3, 1528, 64)
        ]
    );
}

#[test]
fn listing_of_an_exclusive_uplink() {
    let system = system(&format!(
        "{UPLINK_SYSTEM}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\n\
         [networks.out]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"nic\"\nuplink_mode = \"exclusive\"\nslots = 16\n"
    ));
    assert_round_trip(&system);
    let cdl = system.cdl();
    let mac = net_api::MacText(net_api::mac_of("out-b")).to_string();
    assert!(
        cdl.contains(&format!(
            "  nic 0: virtio-net-pci (1af4:1041), user-mode network (gateway 10.0.2.2), MAC {mac}\n"
        )),
        "{cdl}"
    );
    assert!(
        cdl.ends_with(&format!(
            "\x20 out: bridge bridge, 16 frames in flight each way per NIC\n\
             \x20   out-b: VM 'b', MAC {mac}\n\
             \x20   out-nic: uplink 'nic' (exclusive: VM 'b' owns the card), card MAC {mac}\n\
             }}\n"
        )),
        "{cdl}"
    );
    assert!(
        cdl.contains(
            "  out-nic-in = queue (nic -> bridge, slot_size: 1528, slots: 16, pages: 7)\n"
        ),
        "{cdl}"
    );
    // A machine NIC without disks has a machine block of its own.
    let system = common::system(
        "[components.a]\n[machine]\nnics = [{ backend = \"user\", mac = \"02:00:00:00:00:01\" }]\n",
    );
    assert!(
        system.cdl().ends_with(
            "\nmachine {\n\
             \x20 nic 0: virtio-net-pci (1af4:1041), user-mode network (gateway 10.0.2.2), MAC 02:00:00:00:00:01\n\
             }\n"
        ),
        "{}",
        system.cdl()
    );
}

/// With the QoS controller as the scheduling controller, each VM's world
/// switcher reports to it on `<switcher>-stats` and hears its requests on
/// `<switcher>-control`; with another controller, nothing is added.
#[test]
fn a_qos_controller_gets_each_vms_statistics_queue() {
    let text = |controller: &str| {
        format!(
            "[system]\nscheduling_controller = \"{controller}\"\n[components.qos]\n[components.supervisor]\n[components.ws-a]\nprogram = \"world-switcher\"\n[components.ws-b]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws-a\"\n[vms.b]\nswitcher = \"ws-b\"\n"
        )
    };
    let with_qos = system(&text("qos"));
    let qos = with_qos
        .components
        .iter()
        .position(|c| c.name == "qos")
        .unwrap();
    let stats: Vec<_> = with_qos
        .queues
        .iter()
        .filter(|queue| queue.name.ends_with("-stats"))
        .map(|queue| {
            (
                queue.name.as_str(),
                with_qos.components[queue.sender].name.as_str(),
                queue.receiver,
                queue.slot_size,
                queue.slots,
            )
        })
        .collect();
    assert_eq!(
        stats,
        [
            (
                "ws-a-stats",
                "ws-a",
                qos,
                qos_api::SLOT_BYTES,
                qos_api::SLOTS
            ),
            (
                "ws-b-stats",
                "ws-b",
                qos,
                qos_api::SLOT_BYTES,
                qos_api::SLOTS
            ),
        ]
    );
    let control: Vec<_> = with_qos
        .queues
        .iter()
        .filter(|queue| queue.name.ends_with("-control"))
        .map(|queue| {
            (
                queue.name.as_str(),
                queue.sender,
                with_qos.components[queue.receiver].name.as_str(),
                queue.slot_size,
            )
        })
        .collect();
    assert_eq!(
        control,
        [
            ("ws-a-control", qos, "ws-a", qos_api::CONTROL_BYTES),
            ("ws-b-control", qos, "ws-b", qos_api::CONTROL_BYTES),
        ]
    );
    // And it reads each VM's guest-hints page.
    let hints: Vec<usize> = with_qos.layout.hints_addresses[qos]
        .iter()
        .map(|&(vm, _)| vm)
        .collect();
    assert_eq!(hints, [0, 1]);
    assert_round_trip(&with_qos);
    let other = system(&text("supervisor"));
    assert!(other.layout.hints_addresses.iter().all(Vec::is_empty));
    assert!(
        other
            .queues
            .iter()
            .all(|queue| !queue.name.ends_with("-stats") && !queue.name.ends_with("-control"))
    );
}
