//! Lowering: notification bits, capability tables, queue and device
//! addresses, the boot spec of every example, and the listing.

mod common;

use std::path::{Path, PathBuf};

use capdl::{DEVICE_WINDOW, ProgramSet, QUEUE_WINDOW};
use common::{assert_round_trip, system};
use microvisor_abi::PAGE_SIZE;
use microvisor_abi::spec::{CapabilityKind, NONE, Spec, queue_pages};

fn examples() -> Vec<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        // The build tool's interim format, until it moves to this one.
        .filter(|path| !path.ends_with("default.toml"))
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
    assert_eq!(lowered.distinct_programs(), ["ping", "pong"]);
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
        "[components.supervisor]\ninterrupts = [1]\n\
         [components.a]\nsupervisor = \"supervisor\"\n\
         [components.b]\nsupervisor = \"supervisor\"\ninterrupts = [4, 9]\n\
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
    assert_eq!(layout.interrupt_bits, [vec![3], vec![], vec![2, 3]]);
    assert_eq!(
        layout.bit_uses,
        [
            vec![
                "fault of 'a'",
                "fault of 'b'",
                "queue 'q' has messages",
                "interrupt line 1"
            ],
            vec!["queue 'q' has space", "queue 'r' has messages"],
            vec![
                "queue 'r' has space",
                "notification 'kick'",
                "interrupt line 4",
                "interrupt line 9"
            ],
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
        "[components.driver]\nports = [\"0x3f8-0x3ff\", 0x60]\n\
         mmio = [{ physical = \"0xfebd0000\", size = \"8KiB\" }, { physical = \"0xfec00000\", size = 4096 }]\n\
         interrupts = [4]\n",
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
    assert_eq!(ports, [(0x3f8, 8), (0x60, 1)]);
    assert_eq!(spec.memory_grants[1].physical, 0xfec0_0000);
    assert_eq!(
        (spec.interrupt_grants[0].line, spec.interrupt_grants[0].bit),
        (4, 0)
    );
    assert_round_trip(&system);
}

#[test]
fn a_grant_of_every_port_takes_two_records() {
    let system = system("[components.driver]\nports = [\"0-0xffff\"]\n");
    let bytes = system.spec();
    let spec = Spec::parse(&bytes).unwrap();
    let ports: Vec<_> = spec
        .port_grants
        .iter()
        .map(|g| (g.first, g.count))
        .collect();
    assert_eq!(ports, [(0, 0x8000), (0x8000, 0x8000)]);
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
fn listing_shows_grants_and_empty_sections() {
    let system = system("[components.driver]\nports = [\"0x3f8-0x3ff\"]\ninterrupts = [4]\n");
    let cdl = system.cdl();
    assert!(cdl.contains("caps {\n  -- none\n}"), "{cdl}");
    assert!(
        cdl.contains(
            "grants {\n  driver {\n    ports 0x3f8-0x3ff\n    interrupt 4 -> bit 0\n  }\n}"
        ),
        "{cdl}"
    );
}
