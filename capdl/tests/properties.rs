//! Properties: random valid systems lower to specs the core accepts with
//! every field preserved, and no mutation of a description panics the
//! loader.

mod common;

use capdl::Options;
use common::{assert_round_trip, load_files};
use microvisor_abi::spec::Spec;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct ComponentPlan {
    priority: u8,
    period_ms: u32,
    budget_percent: u32,
    stack_pages: u32,
    extra_pages: u32,
    /// Index (modulo this component's index) of the supervisor, if any.
    supervisor: Option<usize>,
    start_by_supervisor: bool,
    observe: Vec<usize>,
    port_count: u16,
    interrupt: bool,
    mmio_pages: Option<u64>,
    restart: Option<(u32, u32)>,
}

#[derive(Clone, Debug)]
struct SystemPlan {
    components: Vec<ComponentPlan>,
    queues: Vec<(usize, usize, u32, u32)>,
    notifications: Vec<(usize, usize)>,
    controller: Option<usize>,
    /// Turn the first queue into a call with a reply queue (priorities are
    /// raised so the server is never below the client).
    call: bool,
    /// VMs: switcher, guest memory pages, real-mode entry, a poker (each
    /// modulo the component count; VMs whose switcher already runs one are
    /// left out).
    vms: Vec<(usize, u64, bool, Option<usize>)>,
}

fn component_plan() -> impl Strategy<Value = ComponentPlan> {
    (
        (any::<u8>(), 1u32..=100, 1u32..=100, 1u32..=16, 0u32..=512),
        (
            proptest::option::of(any::<usize>()),
            any::<bool>(),
            proptest::collection::vec(any::<usize>(), 0..3),
        ),
        (
            0u16..=16,
            any::<bool>(),
            proptest::option::of(1u64..=4),
            proptest::option::of((0u32..=10, 1u32..=500)),
        ),
    )
        .prop_map(
            |(
                (priority, period_ms, budget_percent, stack_pages, extra_pages),
                (supervisor, start_by_supervisor, observe),
                (port_count, interrupt, mmio_pages, restart),
            )| ComponentPlan {
                priority,
                period_ms,
                budget_percent,
                stack_pages,
                extra_pages,
                supervisor,
                start_by_supervisor,
                observe,
                port_count,
                interrupt,
                mmio_pages,
                restart,
            },
        )
}

fn system_plan() -> impl Strategy<Value = SystemPlan> {
    (1usize..=8).prop_flat_map(|count| {
        (
            proptest::collection::vec(component_plan(), count),
            proptest::collection::vec((0..count, 0..count, 1u32..=64, 0u32..=8), 0..6),
            proptest::collection::vec((0..count, 0..count), 0..4),
            proptest::option::of(0..count),
            any::<bool>(),
            proptest::collection::vec(
                (
                    0..count,
                    1u64..=512,
                    any::<bool>(),
                    proptest::option::of(0..count),
                ),
                0..4,
            ),
        )
            .prop_map(
                |(components, queues, notifications, controller, call, vms)| SystemPlan {
                    components,
                    queues,
                    notifications,
                    controller,
                    call,
                    vms,
                },
            )
    })
}

/// Writes a plan as a description that must be valid.
fn render(plan: &SystemPlan) -> String {
    let mut text = String::from("[system]\ndescription = \"generated\"\n");
    if let Some(controller) = plan.controller {
        text.push_str(&format!("scheduling_controller = \"c{controller}\"\n"));
    }
    // Interrupt lines need a forwarder: one more component (the plan refers
    // to components by name, so it may come first).
    let forwarder = plan.components.iter().any(|component| component.interrupt);
    if forwarder {
        text.push_str("interrupt_forwarder = \"irq\"\n[components.irq]\nprogram = \"a\"\n");
    }
    let queues: Vec<(usize, usize, u32, u32)> = plan
        .queues
        .iter()
        .copied()
        .filter(|(from, to, _, _)| from != to)
        .collect();
    let call = plan.call && !queues.is_empty();
    let mut priorities: Vec<u8> = plan.components.iter().map(|c| c.priority).collect();
    if call {
        let (client, server, _, _) = queues[0];
        priorities[server] = priorities[server].max(priorities[client]);
    }
    for (index, component) in plan.components.iter().enumerate() {
        let period_us = component.period_ms * 1000;
        let budget_us = (period_us * component.budget_percent / 100).max(1);
        // A VM's switcher runs the world switcher.
        let program = if plan.vms.iter().any(|(switcher, ..)| *switcher == index) {
            "world-switcher"
        } else {
            "a"
        };
        text.push_str(&format!(
            "[components.c{index}]\nprogram = \"{program}\"\npriority = {}\nperiod = \"{}ms\"\nbudget = \"{budget_us}us\"\n\
             stack = {}\nmemory = \"{}KiB\"\n",
            priorities[index],
            component.period_ms,
            component.stack_pages * 4096,
            (component.stack_pages + component.extra_pages) * 4
        ));
        let supervisor = component
            .supervisor
            .filter(|_| index > 0)
            .map(|s| s % index);
        if let Some(supervisor) = supervisor {
            text.push_str(&format!("supervisor = \"c{supervisor}\"\n"));
            if component.start_by_supervisor {
                text.push_str("start = \"supervisor\"\n");
            }
            if let Some((max, backoff)) = component.restart {
                text.push_str(&format!(
                    "restart = {{ max = {max}, backoff = \"{backoff}ms\" }}\n"
                ));
            }
        }
        let mut observed: Vec<usize> = component
            .observe
            .iter()
            .map(|o| o % plan.components.len())
            .collect();
        observed.sort_unstable();
        observed.dedup();
        let observed: Vec<String> = observed.iter().map(|o| format!("\"c{o}\"")).collect();
        text.push_str(&format!("observe = [{}]\n", observed.join(", ")));
        if component.port_count > 0 {
            let first = 0x1000 + index as u16 * 0x100;
            text.push_str(&format!(
                "ports = [\"{first:#x}-{:#x}\"]\n",
                first + component.port_count - 1
            ));
        }
        if component.interrupt {
            // IOAPIC inputs but the console's (4), one per component.
            let line = if index < 4 { index } else { index + 1 };
            text.push_str(&format!("interrupts = [{line}]\n"));
        }
        if let Some(pages) = component.mmio_pages {
            let physical = 0xfe00_0000u64 + index as u64 * 0x10_0000;
            text.push_str(&format!(
                "mmio = [{{ physical = \"{physical:#x}\", size = \"{}KiB\" }}]\n",
                pages * 4
            ));
        }
    }
    for (index, (from, to, slot_words, slots_log)) in queues.iter().enumerate() {
        text.push_str(&format!(
            "[queues.q{index}]\nfrom = \"c{from}\"\nto = \"c{to}\"\nslot_size = {}\nslots = {}\n",
            slot_words * 8,
            1u32 << slots_log
        ));
        if call && index == 0 {
            text.push_str("reply = \"answer\"\n");
        }
    }
    if call {
        let (client, server, _, _) = queues[0];
        text.push_str(&format!(
            "[queues.answer]\nfrom = \"c{server}\"\nto = \"c{client}\"\nslot_size = 8\nslots = 4\n"
        ));
    }
    for (index, (from, to)) in plan.notifications.iter().enumerate() {
        if from != to {
            text.push_str(&format!(
                "[notifications.n{index}]\nfrom = \"c{from}\"\nto = \"c{to}\"\n"
            ));
        }
    }
    let mut switchers = Vec::new();
    for (index, (switcher, pages, real, poker)) in plan.vms.iter().enumerate() {
        if switchers.contains(switcher) {
            continue;
        }
        switchers.push(*switcher);
        text.push_str(&format!(
            "[vms.v{index}]\nswitcher = \"c{switcher}\"\nimage = \"guest{}\"\nmemory = \"{}KiB\"\nentry = \"{}\"\n",
            index % 2,
            pages * 4,
            if *real { "real" } else { "long" }
        ));
        if let Some(poker) = poker.filter(|poker| poker != switcher) {
            text.push_str(&format!("poke = [\"c{poker}\"]\n"));
        }
    }
    text
}

/// A valid description to mutate: it uses every kind of table and value.
const SEED: &str = r#"include = ["base.toml"]
[system]
description = "seed"
scheduling_controller = "ping"
interrupt_forwarder = "pong"
[components.ping]
args = "rounds=10"
priority = 10
budget = "2ms"
period = "10ms"
stack = "64KiB"
memory = "4MiB"
observe = ["pong"]
ports = ["0x2f8-0x2ff"]
mmio = [{ physical = "0xfebd0000", size = "4KiB" }]
interrupts = [3]
[components.pong]
priority = 20
supervisor = "ping"
start = "supervisor"
restart = { max = 3, backoff = "10ms" }
[queues.requests]
from = "ping"
to = "pong"
slot_size = 64
slots = 256
reply = "replies"
[queues.replies]
from = "pong"
to = "ping"
slot_size = 64
slots = 256
[notifications.kick]
from = "pong"
to = "ping"
[vms.guest]
switcher = "hello"
image = "hello"
memory = "2MiB"
entry = "real"
priority = 5
budget = "1ms"
period = "5ms"
poke = ["ping"]
"#;

const BASE: &str = "[components.hello]\nprogram = \"world-switcher\"\n";

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: usize, length: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, character: char },
    Swap { first: usize, second: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(at, length)| Mutation::Delete { at, length }),
        (any::<usize>(), "[\\[\\]{}\"=\\n.,#a-z0-9_ -]{1,8}")
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), proptest::char::any())
            .prop_map(|(at, character)| Mutation::Replace { at, character }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(first, second)| Mutation::Swap { first, second }),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut characters: Vec<char> = text.chars().collect();
    for mutation in mutations {
        let length = characters.len().max(1);
        match mutation {
            Mutation::Delete { at, length: count } => {
                let start = at % length;
                let end = (start + count).min(characters.len());
                if start < end {
                    characters.drain(start..end);
                }
            }
            Mutation::Insert { at, text } => {
                let at = (at % length).min(characters.len());
                characters.splice(at..at, text.chars());
            }
            Mutation::Replace { at, character } => {
                if !characters.is_empty() {
                    characters[at % length] = *character;
                }
            }
            Mutation::Swap { first, second } => {
                // Swap two lines.
                let joined: String = characters.iter().collect();
                let mut lines: Vec<&str> = joined.split('\n').collect();
                let count = lines.len();
                lines.swap(first % count, second % count);
                characters = lines.join("\n").chars().collect();
            }
        }
    }
    characters.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn random_valid_systems_lower_to_accepted_specs(plan in system_plan()) {
        let text = render(&plan);
        let system = match load_files(&[("main.toml", &text)], &Options::default()) {
            Ok(system) => system,
            Err(errors) => panic!("{text}\n{:#?}", common::render(&errors)),
        };
        assert_round_trip(&system);
        let cdl = system.cdl();
        prop_assert!(cdl.contains("objects {"), "{}", cdl);
    }

    #[test]
    fn mutated_descriptions_never_panic_the_loader(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let text = apply(SEED, &mutations);
        match load_files(&[("main.toml", text.as_str()), ("base.toml", BASE)], &Options::default()) {
            Ok(system) => {
                let spec = system.spec();
                prop_assert!(Spec::parse(&spec).is_ok(), "{text}");
                let _ = system.cdl();
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for error in &errors {
                    prop_assert!(!error.message.is_empty());
                    prop_assert!(error.line <= text.lines().count() + 1, "{error:?}");
                }
            }
        }
    }
}

#[test]
fn the_seed_is_valid() {
    let system = load_files(
        &[("main.toml", SEED), ("base.toml", BASE)],
        &Options::default(),
    )
    .unwrap();
    assert_eq!(system.components.len(), 3);
    assert_eq!(system.vms.len(), 1);
    assert_eq!(
        system.components[0].priority, 5,
        "the VM's scheduling is hello's"
    );
    assert_round_trip(&system);
}
