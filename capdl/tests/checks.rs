//! One test per check: each feeds a description with exactly that mistake
//! and pins the full message, location and help text.

mod common;

use std::path::Path;

use capdl::Options;
use common::{error, errors, errors_of, load_files, render};

// ---------------------------------------------------------------- syntax

#[test]
fn toml_syntax_error() {
    assert_eq!(
        error("[components.a]\npriority = \n"),
        "main.toml:2:12: TOML syntax: string values must be quoted, expected literal string"
    );
}

#[test]
fn toml_duplicate_key() {
    assert_eq!(
        error("[components.a]\npriority = 1\npriority = 2\n"),
        "main.toml:3:1: duplicate key 'priority' in [components.a] (help: first set at main.toml:2:1)"
    );
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        error("[components.a]\n[queue.q]\nfrom = \"a\"\n"),
        "main.toml:2:2: unknown top-level key 'queue' (help: did you mean 'queues'?)"
    );
}

#[test]
fn unknown_top_level_key_far_from_any() {
    assert_eq!(
        error("[components.a]\n[devices]\n"),
        "main.toml:2:2: unknown top-level key 'devices' (help: a system file has only include, system, test, machine, components, component, queues, notifications, calls, vms, disks, networks)"
    );
}

#[test]
fn a_misspelt_section_is_not_also_an_empty_system() {
    assert_eq!(
        error("[componets.a]\n"),
        "main.toml:1:2: unknown top-level key 'componets' (help: did you mean 'components'?)"
    );
}

#[test]
fn unknown_component_field() {
    assert_eq!(
        error("[components.a]\nprioity = 3\n"),
        "main.toml:2:1: component 'a': unknown field 'prioity' (help: did you mean 'priority'?)"
    );
}

#[test]
fn unknown_field_lists_the_fields_when_nothing_is_close() {
    assert_eq!(
        error("[components.a]\ncolour = \"red\"\n"),
        "main.toml:2:1: component 'a': unknown field 'colour' (help: the fields are: program, args, priority, budget, period, stack, memory, start, supervisor, restart, observe, ports, mmio, dma, pci, interrupts)"
    );
}

#[test]
fn unknown_field_in_a_nested_table() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"supervisor\"\n[components.a]\nsupervisor = \"s\"\nrestart = { maxx = 3 }\n"
        ),
        "main.toml:5:13: component 'a': unknown field 'maxx' in 'restart' (help: did you mean 'max'?)"
    );
}

#[test]
fn unknown_system_queue_and_notification_fields() {
    assert_eq!(
        errors(
            "[system]\ndescriptoin = \"x\"\n[components.a]\n[components.b]\n\
             [queues.q]\nfrom = \"a\"\nto = \"b\"\nslot_size = 8\nslots = 2\nslot = 4\n\
             [notifications.n]\nfrom = \"a\"\nto = \"b\"\nbits = 1\n"
        ),
        [
            "main.toml:2:1: [system]: unknown field 'descriptoin' (help: did you mean 'description'?)",
            "main.toml:10:1: queue 'q': unknown field 'slot' (help: did you mean 'slots'?)",
            "main.toml:14:1: notification 'n': unknown field 'bits' (help: the fields are: from, to)",
        ]
    );
}

#[test]
fn every_error_in_one_table_is_reported() {
    assert_eq!(
        errors("[components.a]\npriority = \"high\"\nstack = true\nwhatever = 1\n"),
        [
            "main.toml:2:12: component 'a': invalid 'priority': \"high\" is not a number (write decimal, or hex such as \"0x3f8\")",
            "main.toml:3:9: component 'a': 'stack' expects a size such as \"64KiB\", found boolean `true`",
            "main.toml:4:1: component 'a': unknown field 'whatever' (help: the fields are: program, args, priority, budget, period, stack, memory, start, supervisor, restart, observe, ports, mmio, dma, pci, interrupts)",
        ]
    );
}

#[test]
fn wrong_value_type() {
    assert_eq!(
        error("[components.a]\nobserve = \"b\"\n"),
        "main.toml:2:11: component 'a': 'observe' expects a list, found string \"b\""
    );
}

#[test]
fn negative_number() {
    assert_eq!(
        error("[components.a]\npriority = -1\n"),
        "main.toml:2:12: component 'a': 'priority' expects a non-negative integer, found integer `-1`"
    );
}

#[test]
fn bad_number_text() {
    assert_eq!(
        error("[components.a]\ninterrupts = [\"0xzz\"]\n"),
        "main.toml:2:15: component 'a': invalid 'interrupts[0]': \"0xzz\" is not a number (write decimal, or hex such as \"0x3f8\")"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        error("[components.a]\nperiod = \"10sm\"\n"),
        "main.toml:2:10: component 'a': invalid 'period': \"10sm\" has an unknown unit 'sm' (use ns, us, ms or s; did you mean 'ms'?)"
    );
}

#[test]
fn duration_without_unit() {
    assert_eq!(
        error("[components.a]\nbudget = 5\n"),
        "main.toml:2:10: component 'a': 'budget' expects a duration such as \"10ms\", found integer `5`"
    );
}

#[test]
fn bad_size() {
    assert_eq!(
        error("[components.a]\nmemory = \"4MB\"\n"),
        "main.toml:2:10: component 'a': invalid 'memory': \"4MB\" has an unknown unit 'MB' (use B, KiB, MiB or GiB; did you mean 'MiB'?)"
    );
}

#[test]
fn bad_port_range() {
    assert_eq!(
        error("[components.a]\nports = [\"0x3ff-0x3f8\"]\n"),
        "main.toml:2:10: component 'a': invalid 'ports[0]': port range \"0x3ff-0x3f8\" ends before it starts"
    );
}

#[test]
fn bad_start_value() {
    assert_eq!(
        error("[components.a]\nstart = \"boto\"\n"),
        "main.toml:2:9: component 'a': 'start' must be \"boot\" or \"supervisor\", not \"boto\" (help: did you mean 'boot'?)"
    );
}

#[test]
fn missing_required_field() {
    assert_eq!(
        error("[components.a]\n[components.b]\n[queues.q]\nfrom = \"a\"\nto = \"b\"\nslots = 4\n"),
        "main.toml:3:1: queue 'q' is missing 'slot_size'"
    );
}

#[test]
fn missing_field_in_a_nested_table() {
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0x1000\" }]\n"),
        "main.toml:2:9: component 'a' is missing 'mmio[0].size'"
    );
}

#[test]
fn section_that_is_not_a_table() {
    assert_eq!(
        error("components = 3\n"),
        "main.toml:1:1: 'components' must be a table of components (help: write [components.NAME])"
    );
}

#[test]
fn entry_that_is_not_a_table() {
    assert_eq!(
        error("[components]\na = 3\n"),
        "main.toml:2:1: component 'a' must be a table (help: write [components.a] followed by its fields)"
    );
}

// -------------------------------------------------------------- includes

#[test]
fn include_that_is_not_a_list() {
    assert_eq!(
        error("include = \"base.toml\"\n[components.a]\n"),
        "main.toml:1:11: 'include' must be a list of file names (help: write include = [\"base.toml\"])"
    );
}

#[test]
fn include_file_missing() {
    assert_eq!(
        error("include = [\"bsae.toml\"]\n[components.a]\n"),
        "main.toml:1:12: cannot read included file 'bsae.toml' (bsae.toml): No such file or directory"
    );
}

#[test]
fn include_cycle() {
    assert_eq!(
        errors_of(&[
            ("main.toml", "include = [\"a.toml\"]\n[components.a]\n"),
            ("a.toml", "include = [\"b.toml\"]\n"),
            ("b.toml", "include = [\"./main.toml\"]\n"),
        ]),
        ["b.toml:1:12: include cycle: main.toml -> a.toml -> b.toml -> main.toml"]
    );
}

#[test]
fn syntax_error_in_an_included_file() {
    assert_eq!(
        errors_of(&[
            ("main.toml", "include = [\"base.toml\"]\n[components.a]\n"),
            ("base.toml", "[components.b\n"),
        ]),
        ["base.toml:1:14: TOML syntax: unclosed table, expected `]`"]
    );
}

#[test]
fn includes_nested_too_deep() {
    let names: Vec<String> = (0..18).map(|i| format!("f{i}.toml")).collect();
    let mut files: Vec<(String, String)> = (0..18)
        .map(|i| {
            (
                names[i].clone(),
                if i < 17 {
                    format!("include = [\"{}\"]\n", names[i + 1])
                } else {
                    String::new()
                },
            )
        })
        .collect();
    files[0].1.push_str("[components.a]\n");
    assert_eq!(
        errors_of(&files),
        ["f15.toml:1:12: includes nest more than 16 files deep"]
    );
}

#[test]
fn missing_files_suggest_a_sibling() {
    let directory = std::env::temp_dir().join(format!("capdl-include-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("base.toml"), "[components.hello]\n").unwrap();
    std::fs::write(directory.join("main.toml"), "include = [\"bsae.toml\"]\n").unwrap();
    let errors = common::disk_errors(&directory.join("main.toml"));
    let dir = directory.display();
    assert_eq!(
        errors,
        [format!(
            "{dir}/main.toml:1:12: cannot read included file 'bsae.toml' ({dir}/bsae.toml): No such file or directory (os error 2) (help: did you mean 'base.toml'?)"
        )]
    );
    // The system file itself, too.
    assert_eq!(
        common::disk_errors(&directory.join("mian.toml")),
        [format!(
            "{dir}/mian.toml: cannot read the system description: No such file or directory (os error 2) (help: did you mean '{dir}/main.toml'?)"
        )]
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn duplicate_component_across_includes() {
    assert_eq!(
        errors_of(&[
            (
                "main.toml",
                "include = [\"base.toml\"]\n[components.a]\npriority = 3\n"
            ),
            ("base.toml", "\n[components.a]\n"),
        ]),
        [
            "main.toml:2:13: component 'a' is defined in both base.toml and main.toml (help: first defined at base.toml:2:13)"
        ]
    );
}

#[test]
fn duplicate_queue_across_includes() {
    let queue = "[queues.q]\nfrom = \"a\"\nto = \"b\"\nslot_size = 8\nslots = 2\n";
    assert_eq!(
        errors_of(&[
            ("main.toml", &format!("include = [\"base.toml\"]\n{queue}")),
            (
                "base.toml",
                &format!("[components.a]\n[components.b]\n{queue}")
            ),
        ]),
        [
            "main.toml:2:9: queue 'q' is defined in both base.toml and main.toml (help: first defined at base.toml:3:9)"
        ]
    );
}

#[test]
fn system_field_set_in_two_files() {
    assert_eq!(
        errors_of(&[
            (
                "main.toml",
                "include = [\"base.toml\"]\n[system]\ndescription = \"two\"\n"
            ),
            (
                "base.toml",
                "[system]\ndescription = \"one\"\n[components.a]\n"
            ),
        ]),
        [
            "main.toml:3:15: [system] description is set in both base.toml and main.toml (help: first set at base.toml:2:15)"
        ]
    );
}

#[test]
fn diamond_includes_load_each_file_once() {
    let loaded = load_files(
        &[
            ("main.toml", "include = [\"left.toml\", \"right.toml\"]\n"),
            ("left.toml", "include = [\"base.toml\"]\n[components.a]\n"),
            ("right.toml", "include = [\"base.toml\"]\n[components.b]\n"),
            ("base.toml", "[components.hello]\n"),
        ],
        &Options::default(),
    )
    .unwrap();
    let names: Vec<&str> = loaded.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["hello", "a", "b"],
        "includes come before the including file"
    );
}

#[test]
fn root_file_missing() {
    assert_eq!(
        errors_of(&[("main.toml", ""), ("other.toml", "")]).len(),
        1,
        "an empty file is a system without components"
    );
    let missing = capdl::load(
        std::path::Path::new("/nonexistent/system.toml"),
        &common::programs(),
    )
    .unwrap_err();
    assert_eq!(
        render(&missing.0),
        [
            "/nonexistent/system.toml: cannot read the system description: No such file or directory (os error 2)"
        ]
    );
}

// ----------------------------------------------------------------- names

#[test]
fn invalid_component_name() {
    assert_eq!(
        error("[components.Ping]\n"),
        "main.toml:1:13: component name 'Ping' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
    );
}

#[test]
fn component_name_too_long() {
    assert_eq!(
        error(
            "[components.a]\n[components.abcdefghijklmnopqrstuvwxyz0123456789]\nprogram = \"a\"\n"
        ),
        "main.toml:2:13: component name 'abcdefghijklmnopqrstuvwxyz0123456789' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
    );
}

#[test]
fn component_named_core() {
    assert_eq!(
        error("[components.a]\n[components.core]\nprogram = \"a\"\n"),
        "main.toml:2:13: component name 'core' is reserved for the microvisor core"
    );
}

#[test]
fn invalid_queue_name() {
    assert_eq!(
        error(
            "[components.a]\n[components.b]\n[queues.\"a.b\"]\nfrom = \"a\"\nto = \"b\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:3:9: queue name 'a.b' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
    );
}

#[test]
fn no_components() {
    assert_eq!(
        error("[system]\ndescription = \"empty\"\n"),
        "main.toml: the system has no components (help: add a component with [components.NAME], or [[component]] and name = \"NAME\")"
    );
}

#[test]
fn too_many_components() {
    let text: String = (0..33)
        .map(|i| format!("[components.c{i}]\nprogram = \"a\"\nmemory = \"1MiB\"\n"))
        .collect();
    assert_eq!(
        error(&text),
        "main.toml:97:13: the system has 33 components; the core supports at most 32"
    );
}

#[test]
fn too_many_queues() {
    let mut text = String::from("[components.a]\n[components.b]\n");
    for i in 0..65 {
        text.push_str(&format!(
            "[queues.q{i}]\nfrom = \"a\"\nto = \"b\"\nslot_size = 8\nslots = 1\n"
        ));
    }
    let all = errors(&text);
    assert_eq!(
        all[0],
        "main.toml:323:9: the system has 65 queues; the core supports at most 64"
    );
}

// ------------------------------------------------------------- programs

#[test]
fn unknown_program() {
    assert_eq!(
        error("[components.a]\nprogram = \"pnog\"\n"),
        "main.toml:2:11: component 'a': no program 'pnog' in components/system/ or components/test/ (help: did you mean 'pong'?)"
    );
}

#[test]
fn no_programs_at_all_names_the_empty_group_folders() {
    let read = |_: &std::path::Path| Ok(b"[components.a]\n".to_vec());
    let programs = capdl::ProgramSet::new("components/", Vec::<String>::new());
    let path = std::path::Path::new("main.toml");
    let diagnostics = capdl::load_from(path, &read, &programs, &Options::default()).unwrap_err();
    assert_eq!(
        render(&diagnostics.0),
        [
            "main.toml:1:13: component 'a': no program 'a' in components/system/ or components/test/ (the program defaults to the component's name) (help: components/system/ and components/test/ hold no programs)"
        ]
    );
}

#[test]
fn unknown_default_program_lists_programs() {
    assert_eq!(
        error("[components.xyzzy]\n"),
        "main.toml:1:13: component 'xyzzy': no program 'xyzzy' in components/system/ or components/test/ (the program defaults to the component's name) (help: the programs are: a, b, block-store, blockstore, c, crasher, driver, hello, hostile, measure, netbridge, peer, ping, pong, qos, spinner, supervisor, virtio-net, vmctl, world-switcher)"
    );
}

/// A QoS controller as the scheduling controller is sent each VM's
/// statistics on a queue `<switcher>-stats` capdl makes; the name must fit
/// and be free.
#[test]
fn statistics_queues_fit_and_are_free() {
    let switcher = "w".repeat(25);
    assert_eq!(
        error(&format!(
            "[system]\nscheduling_controller = \"qos\"\n[components.qos]\n[components.{switcher}]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"{switcher}\"\n"
        )),
        format!(
            "main.toml:2:25: [system] scheduling_controller: VM 'a''s world switcher '{switcher}' would talk to the QoS controller on '{switcher}-stats' and '{switcher}-control', longer than 32 characters (help: a switcher's queues to the QoS controller are SWITCHER-stats and SWITCHER-control: shorten the switcher's name to 24 characters)"
        )
    );
    assert_eq!(
        error(
            "[system]\nscheduling_controller = \"qos\"\n[components.qos]\n[components.ws]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws\"\n[queues.ws-stats]\nfrom = \"ws\"\nto = \"qos\"\nslot_size = 64\nslots = 4\n"
        ),
        "main.toml:2:25: [system] scheduling_controller: the QoS controller needs the queue 'ws-stats' for VM 'a''s statistics, which the system declares itself (help: a switcher's statistics queue is made for it: remove [queues.ws-stats])"
    );
    assert_eq!(
        error(
            "[system]\nscheduling_controller = \"qos\"\n[components.qos]\n[components.ws]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws\"\n[queues.ws-control]\nfrom = \"qos\"\nto = \"ws\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:2:25: [system] scheduling_controller: the QoS controller needs the queue 'ws-control' for VM 'a''s control, which the system declares itself (help: a switcher's control queue is made for it: remove [queues.ws-control])"
    );
}

#[test]
fn args_too_long() {
    let args = "x".repeat(65);
    assert_eq!(
        error(&format!("[components.a]\nargs = \"{args}\"\n")),
        "main.toml:2:8: component 'a': args are 65 bytes; at most 64 fit"
    );
}

// ------------------------------------------------------------ scheduling

#[test]
fn priority_out_of_range() {
    assert_eq!(
        error("[components.a]\npriority = 256\n"),
        "main.toml:2:12: component 'a': priority 256 is out of range (0 to 255, higher runs first)"
    );
}

#[test]
fn zero_period() {
    assert_eq!(
        error("[components.a]\nperiod = \"0ms\"\n"),
        "main.toml:2:10: component 'a': period must be longer than zero"
    );
}

#[test]
fn zero_budget() {
    assert_eq!(
        error("[components.a]\nbudget = \"0us\"\n"),
        "main.toml:2:10: component 'a': budget must be longer than zero"
    );
}

#[test]
fn budget_longer_than_period() {
    assert_eq!(
        error("[components.a]\nbudget = \"20ms\"\nperiod = \"10ms\"\n"),
        "main.toml:2:10: component 'a': budget 20ms is longer than its period 10ms (help: a budget is at most its period (equal means never throttled))"
    );
}

#[test]
fn budget_longer_than_default_period() {
    assert_eq!(
        error("[components.a]\nbudget = \"11ms\"\n"),
        "main.toml:2:10: component 'a': budget 11ms is longer than its period 10ms (help: a budget is at most its period (equal means never throttled))"
    );
}

#[test]
fn sub_microsecond_duration() {
    assert_eq!(
        error("[components.a]\nbudget = \"1500ns\"\n"),
        "main.toml:2:10: component 'a': budget 1500ns is not a whole number of microseconds"
    );
}

#[test]
fn period_too_long() {
    assert_eq!(
        error("[components.a]\nperiod = \"5000s\"\n"),
        "main.toml:2:10: component 'a': period 5000s is longer than the longest period the core accepts (10s) (help: budgets and periods are at most microvisor_abi::syscall::MAX_PERIOD_US, the limit of SchedulingConfigure)"
    );
    // The core's limit, not the spec's 32 bits: an hour fits the spec but
    // SchedulingConfigure would fault on it.
    assert_eq!(
        error("[components.a]\nperiod = \"3600s\"\n"),
        "main.toml:2:10: component 'a': period 3600s is longer than the longest period the core accepts (10s) (help: budgets and periods are at most microvisor_abi::syscall::MAX_PERIOD_US, the limit of SchedulingConfigure)"
    );
    let too_long = |line: u32, what: &str| {
        format!(
            "main.toml:{line}:10: component 'a': {what} 10000001us is longer than the longest period the core accepts (10s) (help: budgets and periods are at most microvisor_abi::syscall::MAX_PERIOD_US, the limit of SchedulingConfigure)"
        )
    };
    assert_eq!(
        errors("[components.a]\nperiod = \"10000001us\"\nbudget = \"10000001us\"\n"),
        [too_long(2, "period"), too_long(3, "budget")]
    );
    let system = common::system("[components.a]\nperiod = \"10s\"\nbudget = \"10s\"\n");
    let limit = microvisor_abi::syscall::MAX_PERIOD_US;
    assert_eq!(
        (
            u64::from(system.components[0].period_us),
            u64::from(system.components[0].budget_us)
        ),
        (limit, limit)
    );
}

// ---------------------------------------------------------------- memory

#[test]
fn stack_not_a_page_multiple() {
    assert_eq!(
        error("[components.a]\nstack = 10000\n"),
        "main.toml:2:9: component 'a': stack 10000B is not a multiple of the 4KiB page size"
    );
}

#[test]
fn stack_too_large() {
    assert_eq!(
        error("[components.a]\nstack = \"2MiB\"\n"),
        "main.toml:2:9: component 'a': stack 2MiB is outside 4KiB to 1MiB"
    );
}

#[test]
fn zero_stack() {
    assert_eq!(
        error("[components.a]\nstack = 0\n"),
        "main.toml:2:9: component 'a': stack 0B is outside 4KiB to 1MiB"
    );
}

#[test]
fn memory_not_a_page_multiple() {
    assert_eq!(
        error("[components.a]\nmemory = \"1001KiB\"\n"),
        "main.toml:2:10: component 'a': memory 1001KiB is not a positive multiple of the 4KiB page size"
    );
}

#[test]
fn memory_beyond_the_spec() {
    assert_eq!(
        error("[components.a]\nmemory = \"32768GiB\"\n"),
        "main.toml:2:10: component 'a': memory 32768GiB is more than the boot spec can describe (4294967295 pages)"
    );
}

#[test]
fn stack_larger_than_memory() {
    assert_eq!(
        error("[components.a]\nstack = \"64KiB\"\nmemory = \"32KiB\"\n"),
        "main.toml:3:10: component 'a': memory 32KiB cannot hold the stack of 64KiB (help: memory covers the program's segments and its stack)"
    );
}

#[test]
fn system_larger_than_the_machine() {
    assert_eq!(
        error("[components.a]\nmemory = \"300MiB\"\n[components.b]\nmemory = \"200MiB\"\n"),
        "main.toml:3:13: the system needs 500MiB (components 500MiB, queues 0B) but the machine has 448MiB (help: the largest components: 'a' 300MiB, 'b' 200MiB)"
    );
}

#[test]
fn machine_size_is_configurable() {
    let text = "[components.a]\nmemory = \"300MiB\"\n";
    assert!(load_files(&[("main.toml", text)], &Options::default()).is_ok());
    let small = Options {
        machine_memory: 256 << 20,
        ..Options::default()
    };
    assert_eq!(
        render(&load_files(&[("main.toml", text)], &small).unwrap_err()),
        [
            "main.toml:1:13: the system needs 300MiB (components 300MiB, queues 0B) but the machine has 256MiB (help: the largest components: 'a' 300MiB)"
        ]
    );
}

// ----------------------------------------------------- start, supervision

#[test]
fn start_by_supervisor_without_one() {
    assert_eq!(
        error("[components.a]\nstart = \"supervisor\"\n"),
        "main.toml:2:9: component 'a': start = \"supervisor\" needs a supervisor to start it (help: add supervisor = \"NAME\", or start at boot)"
    );
}

#[test]
fn unknown_supervisor() {
    assert_eq!(
        error("[components.supervisor]\n[components.a]\nsupervisor = \"supervsior\"\n"),
        "main.toml:3:14: component 'a': unknown supervisor 'supervsior' (help: did you mean 'supervisor'?)"
    );
}

#[test]
fn supervising_itself() {
    assert_eq!(
        error("[components.a]\nsupervisor = \"a\"\n"),
        "main.toml:2:14: component 'a' cannot supervise itself"
    );
}

#[test]
fn supervisor_cycle() {
    assert_eq!(
        error(
            "[components.a]\nsupervisor = \"b\"\n[components.b]\nsupervisor = \"c\"\n[components.c]\nsupervisor = \"a\"\n"
        ),
        "main.toml:2:14: supervisor cycle: a supervised by b supervised by c supervised by a (help: supervision must form a tree: some component has no supervisor)"
    );
}

#[test]
fn restart_without_supervisor() {
    assert_eq!(
        error("[components.a]\nrestart = { max = 2 }\n"),
        "main.toml:2:11: component 'a': a restart policy needs a supervisor to apply it (help: add supervisor = \"NAME\", or remove restart)"
    );
}

#[test]
fn restart_max_too_large() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { max = 5000000000 }\n"
        ),
        "main.toml:5:19: component 'a': restart max 5000000000 is more than 4294967295"
    );
}

#[test]
fn backoff_not_whole_milliseconds() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { backoff = \"1500us\" }\n"
        ),
        "main.toml:5:23: component 'a': restart backoff 1500us is not a whole number of milliseconds"
    );
}

#[test]
fn backoff_too_long() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { backoff = \"7200s\" }\n"
        ),
        "main.toml:5:23: component 'a': restart backoff 7200s is longer than 3600s"
    );
}

#[test]
fn restart_max_takes_a_campaigns_restarts() {
    // Fault-injection campaigns restart one component thousands of times.
    let system = common::system(
        "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { max = 100000 }\n",
    );
    assert_eq!(system.components[1].max_restarts, 100_000);
    let system = common::system(
        "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { max = 4294967295 }\n",
    );
    assert_eq!(system.components[1].max_restarts, u32::MAX);
}

#[test]
fn watchdog_without_supervisor() {
    assert_eq!(
        error("[components.a]\nrestart = { watchdog = \"1s\" }\n"),
        "main.toml:2:24: component 'a': a watchdog needs a supervisor to restart the component (help: name a supervisor: supervisor = \"NAME\" (it polls the watchdog and restarts 'a'))"
    );
}

#[test]
fn watchdog_not_whole_milliseconds() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { watchdog = \"10500us\" }\n"
        ),
        "main.toml:5:24: component 'a': restart watchdog 10500us is not a whole number of milliseconds"
    );
}

#[test]
fn watchdog_too_short() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { watchdog = \"9ms\" }\n"
        ),
        "main.toml:5:24: component 'a': restart watchdog 9ms is shorter than 10ms (help: a component may be preempted or throttled that long without being stuck)"
    );
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { watchdog = \"0ms\" }\n"
        ),
        "main.toml:5:24: component 'a': restart watchdog 0ns is shorter than 10ms (help: leave watchdog out for no watchdog)"
    );
}

#[test]
fn watchdog_too_long() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { watchdog = \"61s\" }\n"
        ),
        "main.toml:5:24: component 'a': restart watchdog 61s is longer than 60s"
    );
}

#[test]
fn watchdog_limits_are_inclusive() {
    for (written, ms) in [("10ms", 10), ("60s", 60_000), ("1.5s", 1500)] {
        let system = common::system(&format!(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = {{ watchdog = \"{written}\" }}\n"
        ));
        assert_eq!(system.components[1].watchdog_ms, ms);
        assert_eq!(system.components[0].watchdog_ms, 0);
    }
}

#[test]
fn watchdog_misspelt() {
    assert_eq!(
        error(
            "[components.s]\nprogram = \"a\"\n[components.a]\nsupervisor = \"s\"\nrestart = { watchdgo = \"1s\" }\n"
        ),
        "main.toml:5:13: component 'a': unknown field 'watchdgo' in 'restart' (help: did you mean 'watchdog'?)"
    );
}

// ------------------------------------------------------------ observation

#[test]
fn observe_unknown_component() {
    assert_eq!(
        error("[components.spinner]\n[components.measure]\nobserve = [\"spinnner\"]\n"),
        "main.toml:3:12: component 'measure': cannot observe unknown component 'spinnner' (help: did you mean 'spinner'?)"
    );
}

#[test]
fn observe_twice() {
    assert_eq!(
        error("[components.spinner]\n[components.measure]\nobserve = [\"spinner\", \"spinner\"]\n"),
        "main.toml:3:23: component 'measure' observes 'spinner' twice"
    );
}

#[test]
fn unknown_scheduling_controller() {
    assert_eq!(
        error("[system]\nscheduling_controller = \"qso\"\n[components.a]\n"),
        "main.toml:2:25: [system] scheduling_controller: unknown component 'qso'"
    );
    assert_eq!(
        error("[system]\nscheduling_controller = \"hellp\"\n[components.hello]\n"),
        "main.toml:2:25: [system] scheduling_controller: unknown component 'hellp' (help: did you mean 'hello'?)"
    );
}

// ---------------------------------------------------------------- queues

const TWO: &str = "[components.ping]\n[components.pong]\n";

#[test]
fn queue_unknown_sender() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"pign\"\nto = \"pong\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:4:8: queue 'q': unknown sender 'pign' (help: did you mean 'ping'?)"
    );
}

#[test]
fn queue_unknown_receiver() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pnog\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:5:6: queue 'q': unknown receiver 'pnog' (help: did you mean 'pong'?)"
    );
}

#[test]
fn queue_to_itself() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"ping\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:5:6: queue 'q' connects 'ping' to itself (help: a queue joins two different components)"
    );
}

#[test]
fn slot_size_not_a_multiple_of_eight() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 12\nslots = 2\n"
        )),
        "main.toml:6:13: queue 'q': slot_size 12 is not a positive multiple of 8 bytes"
    );
}

#[test]
fn slot_size_larger_than_the_limit() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 65544\nslots = 2\n"
        )),
        "main.toml:6:13: queue 'q': slot_size 65544 is larger than 64KiB"
    );
}

#[test]
fn slots_not_a_power_of_two() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 100\n"
        )),
        "main.toml:7:9: queue 'q': slots 100 is not a power of two (help: use 64 or 128)"
    );
}

#[test]
fn too_many_slots() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 512\n"
        )),
        "main.toml:7:9: queue 'q': slots 512 is more than 256"
    );
}

#[test]
fn queue_too_large() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.q]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 32768\nslots = 256\n"
        )),
        "main.toml:3:9: queue 'q' has 8MiB of slots (256 x 32768 bytes); a queue holds at most 4MiB"
    );
}

#[test]
fn unknown_reply_queue() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.requests]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\nreply = \"replise\"\n\
             [queues.replies]\nfrom = \"pong\"\nto = \"ping\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:8:9: queue 'requests': unknown reply queue 'replise' (help: did you mean 'replies'?)"
    );
}

#[test]
fn reply_queue_in_the_wrong_direction() {
    assert_eq!(
        error(&format!(
            "{TWO}[queues.requests]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\nreply = \"more\"\n\
             [queues.more]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:8:9: queue 'requests': reply queue 'more' runs from 'ping' to 'pong', not back from 'pong' to 'ping'"
    );
}

#[test]
fn reply_queue_shared_by_two_calls() {
    let queue = |name: &str, from: &str, to: &str, reply: &str| {
        format!(
            "[queues.{name}]\nfrom = \"{from}\"\nto = \"{to}\"\nslot_size = 8\nslots = 2\n{reply}"
        )
    };
    let text = format!(
        "{TWO}{}{}{}",
        queue("one", "ping", "pong", "reply = \"back\"\n"),
        queue("two", "ping", "pong", "reply = \"back\"\n"),
        queue("back", "pong", "ping", "")
    );
    assert_eq!(
        error(&text),
        "main.toml:14:9: queue 'back' is the reply queue of both 'one' and 'two'"
    );
}

#[test]
fn priority_inversion_on_a_call_path() {
    assert_eq!(
        error(
            "[components.ping]\npriority = 100\n[components.pong]\npriority = 50\n\
             [queues.requests]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\nreply = \"replies\"\n\
             [queues.replies]\nfrom = \"pong\"\nto = \"ping\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:5:9: priority inversion on call path 'requests' -> 'replies': server 'pong' (priority 50) runs below its client 'ping' (priority 100) (help: a client waiting for its reply is delayed by everything between the two priorities; give 'pong' priority 100 or more)"
    );
}

#[test]
fn queues_without_reply_are_not_call_paths() {
    common::system(
        "[components.ping]\npriority = 100\n[components.pong]\npriority = 50\n\
         [queues.requests]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\n",
    );
}

#[test]
fn call_cycle() {
    let call = |name: &str, from: &str, to: &str| {
        format!(
            "[queues.{name}]\nfrom = \"{from}\"\nto = \"{to}\"\nslot_size = 8\nslots = 2\nreply = \"{name}-reply\"\n\
             [queues.{name}-reply]\nfrom = \"{to}\"\nto = \"{from}\"\nslot_size = 8\nslots = 2\n"
        )
    };
    let text = format!(
        "{TWO}{}{}",
        call("forth", "ping", "pong"),
        call("back", "pong", "ping")
    );
    assert_eq!(
        error(&text),
        "main.toml:1:13: call cycle: ping calls pong calls ping (help: components that wait for each other's replies can deadlock)"
    );
}

// --------------------------------------------------------- notifications

#[test]
fn notification_unknown_end() {
    assert_eq!(
        errors(&format!(
            "{TWO}[notifications.kick]\nfrom = \"pnig\"\nto = \"x\"\n"
        )),
        [
            "main.toml:4:8: notification 'kick': unknown sender 'pnig' (help: did you mean 'ping'?)",
            "main.toml:5:6: notification 'kick': unknown receiver 'x'",
        ]
    );
}

#[test]
fn notification_to_itself() {
    assert_eq!(
        error(&format!(
            "{TWO}[notifications.kick]\nfrom = \"pong\"\nto = \"pong\"\n"
        )),
        "main.toml:5:6: notification 'kick' connects 'pong' to itself"
    );
}

// ----------------------------------------------------------------- calls

#[test]
fn call_unknown_ends() {
    assert_eq!(
        errors(&format!("{TWO}[calls.echo]\nfrom = \"pnig\"\nto = \"x\"\n")),
        [
            "main.toml:4:8: call 'echo': unknown client 'pnig' (help: did you mean 'ping'?)",
            "main.toml:5:6: call 'echo': unknown server 'x'",
        ]
    );
}

#[test]
fn call_to_itself() {
    assert_eq!(
        error(&format!(
            "{TWO}[calls.echo]\nfrom = \"pong\"\nto = \"pong\"\n"
        )),
        "main.toml:5:6: call 'echo' connects 'pong' to itself (help: a component cannot call itself: it would wait for its own reply)"
    );
}

#[test]
fn a_client_calls_a_server_through_one_call() {
    assert_eq!(
        error(&format!(
            "{TWO}[calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
             [calls.again]\nfrom = \"ping\"\nto = \"pong\"\n"
        )),
        "main.toml:6:8: calls 'echo' and 'again' both let 'ping' call 'pong' (help: a server knows each client by one badge: declare one call per client and server ('echo' is at main.toml:3:8))"
    );
}

#[test]
fn unknown_call_fields() {
    assert_eq!(
        errors(&format!(
            "{TWO}[calls.echo]\nfrom = \"ping\"\nto = \"pong\"\nbadge = 1\n\
             [calls.other]\nfrom = \"pong\"\ntoo = \"ping\"\n"
        )),
        [
            "main.toml:6:1: call 'echo': unknown field 'badge' (help: the fields are: from, to)",
            "main.toml:7:1: call 'other' is missing 'to'",
            "main.toml:9:1: call 'other': unknown field 'too' (help: did you mean 'to'?)",
        ]
    );
}

#[test]
fn invalid_call_name() {
    assert_eq!(
        error(&format!(
            "{TWO}[calls.Echo]\nfrom = \"ping\"\nto = \"pong\"\n"
        )),
        "main.toml:3:8: call name 'Echo' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
    );
}

#[test]
fn calls_that_is_not_a_table() {
    assert_eq!(
        error(&format!("calls = 3\n{TWO}")),
        "main.toml:1:1: 'calls' must be a table of calls (help: write [calls.NAME])"
    );
}

#[test]
fn priority_inversion_on_a_call() {
    assert_eq!(
        error(
            "[components.ping]\npriority = 100\n[components.pong]\npriority = 50\n\
             [calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n"
        ),
        "main.toml:5:8: priority inversion on call 'echo': server 'pong' (priority 50) runs below its client 'ping' (priority 100) (help: a client waiting for its reply is delayed by everything between the two priorities; give 'pong' priority 100 or more)"
    );
    // A server above its client is fine.
    common::system(
        "[components.ping]\npriority = 50\n[components.pong]\npriority = 100\n\
         [calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n",
    );
}

#[test]
fn a_call_cycle_through_endpoints_and_queues() {
    // ping calls pong through an endpoint, pong calls ping on a queue pair.
    assert_eq!(
        error(&format!(
            "{TWO}[calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
             [queues.back]\nfrom = \"pong\"\nto = \"ping\"\nslot_size = 8\nslots = 2\nreply = \"answers\"\n\
             [queues.answers]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:1:13: call cycle: ping calls pong calls ping (help: components that wait for each other's replies can deadlock)"
    );
    assert_eq!(
        error(&format!(
            "{TWO}[calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
             [calls.back]\nfrom = \"pong\"\nto = \"ping\"\n"
        )),
        "main.toml:1:13: call cycle: ping calls pong calls ping (help: components that wait for each other's replies can deadlock)"
    );
}

#[test]
fn a_call_needs_a_capability_name_of_its_own() {
    assert_eq!(
        error(&format!(
            "{TWO}[notifications.echo]\nfrom = \"ping\"\nto = \"pong\"\n\
             [calls.echo]\nfrom = \"ping\"\nto = \"pong\"\n"
        )),
        "main.toml:1:13: component 'ping' would hold two capabilities named 'echo' (help: queues, notifications, calls and supervised components it holds need distinct names)"
    );
}

#[test]
fn calls_count_toward_the_clients_capabilities() {
    // 30 notifications and three calls: 33 capabilities.
    let mut text = String::from(
        "[components.a]\n[components.b]\n[components.c]\n[components.ping]\n[components.pong]\n",
    );
    for i in 0..30 {
        text.push_str(&format!("[notifications.n{i}]\nfrom = \"a\"\nto = \"b\"\n"));
    }
    for server in ["c", "ping", "pong"] {
        text.push_str(&format!(
            "[calls.{server}]\nfrom = \"a\"\nto = \"{server}\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:1:13: component 'a' would hold 33 capabilities; a component holds at most 32"
    );
}

#[test]
fn callers_count_toward_the_servers_start_page() {
    // 30 callers and 19 notifications from one of them: 49 resources.
    let mut text = String::from("[components.s]\nprogram = \"a\"\nmemory = \"1MiB\"\n");
    for i in 0..30 {
        text.push_str(&format!(
            "[components.c{i}]\nprogram = \"a\"\nmemory = \"1MiB\"\n[calls.c{i}]\nfrom = \"c{i}\"\nto = \"s\"\n"
        ));
    }
    for i in 0..19 {
        text.push_str(&format!(
            "[notifications.n{i}]\nfrom = \"c0\"\nto = \"s\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:1:13: component 's' would be given 49 resources (capabilities, queue ends, notifications, grants); its start page lists at most 48"
    );
}

// ---------------------------------------------------------------- grants

/// A system head naming component `c` its interrupt forwarder.
const FORWARDER: &str = "[system]\ninterrupt_forwarder = \"c\"\n[components.c]\n";

#[test]
fn device_grants_load_and_the_cores_ports_are_refused() {
    let loaded = common::load_files(
        &[(
            "main.toml",
            "[components.a]\nports = [\"0x2f8-0x2ff\", 0x80]\nmmio = [{ physical = \"0xfebd0000\", size = \"4KiB\" }]\n",
        )],
        &capdl::Options::default(),
    );
    assert!(loaded.is_ok(), "ports and device memory load");
    // The core's own ports are refused with what they are.
    assert_eq!(
        errors("[components.a]\nports = [\"0x3f0-0x3f8\", 0x61]\n"),
        [
            "main.toml:2:10: component 'a': ports 0x3f0-0x3f8 include COM1, the core's console, which the core keeps for itself (help: the core's own ports are 0x20-0x21, 0x40-0x43, 0x61, 0xa0-0xa1, 0xf4, 0x3f8-0x3ff, 0xcf8-0xcff)",
            "main.toml:2:25: component 'a': port 0x61 is the PIT's gate, which the core keeps for itself (help: the core's own ports are 0x20-0x21, 0x40-0x43, 0x61, 0xa0-0xa1, 0xf4, 0x3f8-0x3ff, 0xcf8-0xcff)",
        ]
    );
}

#[test]
fn dma_buffers_are_whole_pages_up_to_the_limit() {
    assert_eq!(
        errors(
            "[components.a]\ndma = [{ size = \"6KiB\" }, { size = \"8MiB\", below_4g = true }, { size = 4096, colour = 1 }]\n"
        ),
        [
            "main.toml:2:17: component 'a': dma size 6KiB is not a multiple of the 4KiB page size from 4KiB to 4MiB (a buffer is physically contiguous)",
            "main.toml:2:36: component 'a': dma size 8MiB is not a multiple of the 4KiB page size from 4KiB to 4MiB (a buffer is physically contiguous)",
            "main.toml:2:78: component 'a': unknown field 'colour' in 'dma[2]' (help: the fields are: size, below_4g)",
        ]
    );
}

#[test]
fn pci_functions_are_checked() {
    assert_eq!(
        errors(
            "[components.a]\npci = { vendor = \"0x11af4\", device = \"0x1042\", address = \"0:3\", bars = [1, 6, 1], msi = 9 }\n"
        ),
        [
            "main.toml:2:18: component 'a': pci vendor 0x11af4 is not a 16-bit ID",
            "main.toml:2:58: component 'a': pci address \"0:3\" is not bus:device.function (such as \"00:03.0\")",
            "main.toml:2:76: component 'a': pci bar 6 is not a BAR (0 to 5)",
            "main.toml:2:79: component 'a': pci bar 1 is listed twice",
            "main.toml:2:89: component 'a': pci msi 9 is more than the 8 MSI vectors the core has",
        ]
    );
    assert_eq!(
        error("[components.a]\npci = { vendor = 1, device = 2, bars = [] }\n"),
        "main.toml:2:18: component 'a': pci bars = [] maps no BAR; leave it out to map every memory BAR"
    );
    // MSI vectors are interrupt lines: they need the forwarder.
    assert_eq!(
        error("[components.a]\npci = { vendor = 0x1af4, device = 0x1042, msi = 1 }\n"),
        "main.toml:2:7: component 'a' lists interrupt lines (or MSI vectors), but the system has no interrupt forwarder to deliver them (help: name one in `[system] interrupt_forwarder = \"...\"` (a component running the irq-forwarder program))"
    );
    // One function per bus address; at most eight vectors in all.
    assert_eq!(
        errors(&format!(
            "{FORWARDER}[components.a]\npci = {{ vendor = 1, device = 2, address = \"00:03.0\", msi = 5 }}\n\
             [components.b]\npci = {{ vendor = 1, device = 2, address = \"00:03.0\", msi = 4 }}\n"
        )),
        [
            "main.toml:6:13: component 'b': pci address 00:03.0 is already given to 'a'",
            "main.toml:6:13: component 'b': the system asks for more than the 8 MSI vectors the core has",
        ]
    );
}

#[test]
fn machine_disks_are_a_size_or_an_image() {
    assert_eq!(
        errors(
            "[machine]\ndisks = [{ size = \"6KiB\" }, { size = \"8MiB\", image = \"a.img\" }, {}, { colour = 1 }]\n[components.a]\n"
        ),
        [
            "main.toml:2:19: [machine] disk size 6KiB is not a multiple of 4KiB from 4KiB to 4GiB",
            "main.toml:2:29: [machine] a disk is `{ size = \"8MiB\" }` (fresh, zeroed) or `{ image = \"path\" }` (a copy of a file), one of the two",
            "main.toml:2:65: [machine] a disk is `{ size = \"8MiB\" }` (fresh, zeroed) or `{ image = \"path\" }` (a copy of a file), one of the two",
            "main.toml:2:71: [machine]: unknown field 'colour' in 'disks[3]' (help: the fields are: size, image)",
        ]
    );
}

#[test]
fn interrupt_lines_need_a_forwarder() {
    // Without one nothing would deliver them: refused, and the grant
    // checks still run so a second mistake is not hidden.
    assert_eq!(
        errors("[components.a]\ninterrupts = [3, 3]\n"),
        [
            "main.toml:2:15: component 'a' lists interrupt lines (or MSI vectors), but the system has no interrupt forwarder to deliver them (help: name one in `[system] interrupt_forwarder = \"...\"` (a component running the irq-forwarder program))",
            "main.toml:2:18: component 'a': interrupt line 3 is listed twice",
        ]
    );
    assert_eq!(
        error(&format!("{FORWARDER}interrupts = [8]\n")),
        "main.toml:4:15: component 'c' is the interrupt forwarder and cannot own interrupt lines itself (help: it is named the forwarder at main.toml:2:23)"
    );
    assert_eq!(
        error("[system]\ninterrupt_forwarder = \"irq\"\n[components.a]\n"),
        "main.toml:2:23: [system] interrupt_forwarder: unknown component 'irq'"
    );
    assert!(
        common::load_files(
            &[(
                "main.toml",
                &format!("{FORWARDER}[components.a]\ninterrupts = [8, \"9 level-high\"]\n")
            )],
            &capdl::Options::default(),
        )
        .is_ok()
    );
    assert_eq!(
        error(&format!(
            "{FORWARDER}[components.a]\ninterrupts = [\"9 level\"]\n"
        )),
        "main.toml:5:15: component 'a': invalid 'interrupts[0]': interrupt line \"9 level\": unknown wiring 'level' (edge-high, edge-low, level-high or level-low)"
    );
}

#[test]
fn overlapping_ports_between_components() {
    assert_eq!(
        error("[components.a]\nports = [\"0x2f8-0x2ff\"]\n[components.b]\nports = [\"0x2fc\"]\n"),
        "main.toml:3:13: component 'b': ports 0x2fc overlap ports 0x2f8-0x2ff granted to 'a'"
    );
}

#[test]
fn overlapping_ports_within_a_component() {
    assert_eq!(
        error("[components.a]\nports = [\"0x70-0x74\", \"0x74\"]\n"),
        "main.toml:1:13: component 'a': ports 0x74 overlap its own ports 0x70-0x74"
    );
}

#[test]
fn mmio_not_page_aligned() {
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0xfebd0010\", size = \"4KiB\" }]\n"),
        "main.toml:2:22: component 'a': mmio physical address 0xfebd0010 is not page-aligned (help: device memory is granted in whole 4KiB pages; 0xfebd0000 is the page start)"
    );
}

#[test]
fn mmio_size_not_whole_pages() {
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0xfebd0000\", size = 100 }]\n"),
        "main.toml:2:43: component 'a': mmio size 100B is not a positive multiple of the 4KiB page size"
    );
}

#[test]
fn mmio_beyond_physical_memory() {
    assert_eq!(
        error(
            "[components.a]\nmmio = [{ physical = \"0xffff_ffff_ffff_0000\", size = \"64KiB\" }]\n"
        ),
        "main.toml:2:22: component 'a': mmio region 0xffffffffffff0000 + 64KiB ends beyond the 52-bit physical address space"
    );
}

#[test]
fn overlapping_mmio_between_components() {
    assert_eq!(
        error(
            "[components.a]\nmmio = [{ physical = \"0xfebd0000\", size = \"8KiB\" }]\n\
             [components.b]\nmmio = [{ physical = \"0xfebd1000\", size = \"4KiB\" }]\n"
        ),
        "main.toml:3:13: component 'b': mmio 0xfebd1000-0xfebd1fff overlaps mmio 0xfebd0000-0xfebd1fff granted to 'a'"
    );
}

#[test]
fn interrupt_line_out_of_range() {
    assert_eq!(
        error(&format!(
            "{FORWARDER}[components.a]\ninterrupts = [3, 24]\n"
        )),
        "main.toml:5:18: component 'a': interrupt line 24 is out of range (the IOAPIC's inputs 0 to 23)"
    );
}

#[test]
fn interrupt_line_listed_twice() {
    assert_eq!(
        error(&format!("{FORWARDER}[components.a]\ninterrupts = [3, 3]\n")),
        "main.toml:5:18: component 'a': interrupt line 3 is listed twice"
    );
}

#[test]
fn interrupt_line_granted_to_two_components() {
    assert_eq!(
        error(&format!(
            "{FORWARDER}[components.a]\ninterrupts = [3]\n[components.b]\ninterrupts = [3]\n"
        )),
        "main.toml:6:13: component 'b': interrupt line 3 is already delivered to 'a' (help: an interrupt line goes to one component)"
    );
}

#[test]
fn the_console_line_is_the_cores() {
    assert_eq!(
        error("[components.a]\ninterrupts = [4]\n"),
        "main.toml:2:15: component 'a': interrupt line 4 is the system console's (COM1), which the core owns (help: a VM reads the console with `console_input = true`)"
    );
}

#[test]
fn console_input_goes_to_one_vm() {
    let text = "[components.ws-a]\nprogram = \"world-switcher\"\n\
                [components.ws-b]\nprogram = \"world-switcher\"\n\
                [vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\nconsole_input = true\n\
                [vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\nconsole_input = true\n";
    assert_eq!(
        errors(text),
        [
            "main.toml:12:17: VM 'b': console_input: the console's input already goes to VM 'a' (help: one VM reads the system console)"
        ]
    );
}

#[test]
fn too_many_port_grants() {
    // Even ports from 0x100, clear of the core's own.
    let ports: Vec<String> = (0..65).map(|i| format!("\"{}\"", 0x100 + i * 2)).collect();
    assert_eq!(
        error(&format!("[components.a]\nports = [{}]\n", ports.join(", "))),
        "main.toml:1:13: the system grants 65 port ranges; the core supports at most 64"
    );
}

// ---------------------------------------------------------------- layout

#[test]
fn too_many_notification_bits() {
    // Three bits per forwarded line (fired, acknowledged, restarted): 15
    // lines and 20 notifications need 65 bits of the forwarder (and more
    // start-page entries than it has: each line is also a capability and
    // an interrupt entry).
    let lines: Vec<String> = (0..16)
        .filter(|&line| line != 4)
        .map(|line: u32| line.to_string())
        .collect();
    let mut text = format!(
        "{FORWARDER}[components.a]\ninterrupts = [{}]\n[components.b]\n",
        lines.join(", ")
    );
    for i in 0..20 {
        text.push_str(&format!("[notifications.n{i}]\nfrom = \"b\"\nto = \"c\"\n"));
    }
    assert_eq!(
        errors(&text),
        [
            "main.toml:3:13: component 'c' needs 65 notification bits (20 notification, 45 interrupt); a notification word has 64",
            "main.toml:3:13: component 'c' would be given 80 resources (capabilities, queue ends, notifications, grants); its start page lists at most 48",
        ]
    );
}

#[test]
fn too_many_capabilities() {
    let mut text = String::from("[components.a]\n[components.b]\n");
    for i in 0..33 {
        text.push_str(&format!("[notifications.n{i}]\nfrom = \"a\"\nto = \"b\"\n"));
    }
    assert_eq!(
        error(&text),
        "main.toml:1:13: component 'a' would hold 33 capabilities; a component holds at most 32"
    );
}

#[test]
fn two_capabilities_with_one_name() {
    assert_eq!(
        error(
            "[components.a]\n[components.b]\nsupervisor = \"a\"\n\
             [notifications.b]\nfrom = \"a\"\nto = \"b\"\n"
        ),
        "main.toml:1:13: component 'a' would hold two capabilities named 'b' (help: queues, notifications, calls and supervised components it holds need distinct names)"
    );
}

#[test]
fn capability_name_too_long() {
    let long = "abcdefghijklmnopqrstuvwxyz012345";
    assert_eq!(
        error(&format!(
            "[components.{long}]\nprogram = \"a\"\n[components.b]\nobserve = [\"{long}\"]\n"
        )),
        format!(
            "main.toml:3:13: component 'b' would hold a capability named '{long}.sc', longer than 32 characters (help: shorten the component name to 29 characters or fewer)"
        )
    );
}

// -------------------------------------------------------------- together

#[test]
fn errors_from_every_part_are_reported_together_in_order() {
    let all = errors(
        "[components.ping]\npriority = 300\n[components.pong]\nsupervisor = \"pnog\"\n\
         [queues.q]\nfrom = \"ping\"\nto = \"pomg\"\nslot_size = 12\nslots = 3\n",
    );
    assert_eq!(
        all,
        [
            "main.toml:2:12: component 'ping': priority 300 is out of range (0 to 255, higher runs first)",
            "main.toml:4:14: component 'pong': unknown supervisor 'pnog' (help: did you mean 'pong'?)",
            "main.toml:7:6: queue 'q': unknown receiver 'pomg' (help: did you mean 'pong'?)",
            "main.toml:8:13: queue 'q': slot_size 12 is not a positive multiple of 8 bytes",
            "main.toml:9:9: queue 'q': slots 3 is not a power of two (help: use 2 or 4)",
        ]
    );
}

#[test]
fn rendering_matches_rustc() {
    let diagnostics = load_files(
        &[("main.toml", "[components.a]\nprogram = \"pnog\"\n")],
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        capdl::Diagnostics(diagnostics).to_string(),
        "error: component 'a': no program 'pnog' in components/system/ or components/test/\n  --> main.toml:2:11\n  = help: did you mean 'pong'?\n\n\
         error: the system description has 1 error"
    );
}

#[test]
fn a_wrong_value_is_not_replaced_by_its_default() {
    assert_eq!(
        errors(
            "[components.a]\nprogram = 3\nsupervisor = 4\nstart = \"supervisor\"\nrestart = { max = 1 }\n\
             budget = \"20ms\"\n"
        ),
        [
            "main.toml:2:11: component 'a': 'program' expects a string, found integer `3`",
            "main.toml:3:14: component 'a': 'supervisor' expects a string, found integer `4`",
            "main.toml:6:10: component 'a': budget 20ms is longer than its period 10ms (help: a budget is at most its period (equal means never throttled))",
        ]
    );
}

#[test]
fn too_many_capabilities_in_the_system() {
    let mut text = String::new();
    for i in 0..32 {
        let observed: Vec<String> = (1..=17).map(|k| format!("\"c{}\"", (i + k) % 32)).collect();
        text.push_str(&format!(
            "[components.c{i}]\nprogram = \"a\"\nmemory = \"1MiB\"\nobserve = [{}]\n",
            observed.join(", ")
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:125:13: the system has 544 capabilities; the core supports at most 512"
    );
}

// ------------------------------------------------------------------- VMs

const WS: &str = "[components.ws]\nprogram = \"world-switcher\"\n";

/// One VM `g` run by `ws`, with `extra` lines in its table.
fn vm(extra: &str) -> String {
    format!("{WS}[vms.g]\nswitcher = \"ws\"\n{extra}")
}

#[test]
fn vm_unknown_field() {
    assert_eq!(
        error(&vm("memroy = \"2MiB\"\n")),
        "main.toml:5:1: VM 'g': unknown field 'memroy' (help: did you mean 'memory'?)"
    );
    assert_eq!(
        error(&vm("colour = 1\n")),
        "main.toml:5:1: VM 'g': unknown field 'colour' (help: the fields are: switcher, image, kernel, initrd, cmdline, kind, memory, entry, priority, budget, period, poke, console_input)"
    );
}

#[test]
fn unmodified_guests_name_their_files_relative_to_the_system_file() {
    let text = vm(
        "kernel = \"guests/vmlinuz\"\ninitrd = \"guests/initrd.cpio\"\ncmdline = \"console=ttyS0 quiet\"\n",
    );
    let files = [("dir/main.toml", text.as_str())];
    let system = common::load_files(&files, &capdl::Options::default()).unwrap();
    let kernel = system.vms[0].kernel.as_ref().unwrap();
    assert_eq!(kernel.kind, capdl::GuestKind::Linux);
    assert_eq!(kernel.kernel, Path::new("dir/guests/vmlinuz"));
    assert_eq!(
        kernel.initrd.as_deref(),
        Some(Path::new("dir/guests/initrd.cpio"))
    );
    assert_eq!(kernel.command_line, "console=ttyS0 quiet");
    assert_eq!(system.vms[0].image, "g", "packed under the VM's name");
    let text = vm("kernel = \"mb.elf\"\nkind = \"multiboot\"\n");
    let system =
        common::load_files(&[("main.toml", text.as_str())], &capdl::Options::default()).unwrap();
    let kernel = system.vms[0].kernel.as_ref().unwrap();
    assert_eq!(
        (
            kernel.kind,
            kernel.initrd.clone(),
            kernel.command_line.as_str()
        ),
        (capdl::GuestKind::Multiboot, None, "")
    );
}

#[test]
fn unmodified_guest_mistakes() {
    assert_eq!(
        error(&vm("kernel = \"k\"\nimage = \"hello\"\n")),
        "main.toml:6:9: VM 'g': a VM starts from a test VM image or from a kernel, not both"
    );
    assert_eq!(
        error(&vm("kernel = \"k\"\nentry = \"real\"\n")),
        "main.toml:6:9: VM 'g': 'entry' applies to test VM images; a kernel's own format says how it starts"
    );
    assert_eq!(
        error(&vm("initrd = \"i\"\n")),
        "main.toml:5:10: VM 'g': 'initrd' needs a 'kernel' (help: an unmodified guest is `kernel = \"path\"` with an optional `initrd`, `cmdline` and `kind`)"
    );
    assert_eq!(
        error(&vm("kind = \"linux\"\n")),
        "main.toml:5:8: VM 'g': 'kind' needs a 'kernel' (help: an unmodified guest is `kernel = \"path\"` with an optional `initrd`, `cmdline` and `kind`)"
    );
    assert_eq!(
        error(&vm("kernel = \"\"\n")),
        "main.toml:5:10: VM 'g': 'kernel' is not a file path"
    );
    assert_eq!(
        error(&vm("kernel = \"k\"\ncmdline = \"a\\nb\"\n")),
        "main.toml:6:11: VM 'g': the command line holds the control character '\\n' (U+000A)"
    );
    let long = format!("kernel = \"k\"\ncmdline = \"{}\"\n", "x".repeat(2048));
    assert_eq!(
        error(&vm(&long)),
        "main.toml:6:11: VM 'g': the command line is 2048 bytes; a guest takes at most 2047"
    );
    assert_eq!(
        error(&vm("kernel = \"k\"\nkind = \"windows\"\n")),
        "main.toml:6:8: VM 'g': 'kind' must be \"linux\" or \"multiboot\", not \"windows\""
    );
    let clash = format!(
        "{WS}[components.ws2]\nprogram = \"world-switcher\"\n[vms.g]\nswitcher = \"ws\"\nkernel = \"k\"\n[vms.h]\nswitcher = \"ws2\"\nimage = \"g\"\n"
    );
    assert_eq!(
        error(&clash),
        "main.toml:8:6: VM 'h' starts from image 'g', the name under which VM 'g' packs its kernel (help: name VM 'g' or the image differently)"
    );
}

#[test]
fn vm_without_switcher() {
    assert_eq!(
        error(&format!("{WS}[vms.g]\nimage = \"hello\"\n")),
        "main.toml:3:1: VM 'g' is missing 'switcher'"
    );
}

#[test]
fn vms_that_are_not_tables() {
    assert_eq!(
        error("vms = 3\n[components.a]\n"),
        "main.toml:1:1: 'vms' must be a table of vms (help: write [vms.NAME])"
    );
    assert_eq!(
        error("[components.a]\n[vms]\ng = 3\n"),
        "main.toml:3:1: VM 'g' must be a table (help: write [vms.g] followed by its fields)"
    );
}

#[test]
fn invalid_vm_name() {
    assert_eq!(
        error(&format!("{WS}[vms.G]\nswitcher = \"ws\"\n")),
        "main.toml:3:6: VM name 'G' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
    );
}

#[test]
fn vm_named_core() {
    assert_eq!(
        error(&format!("{WS}[vms.core]\nswitcher = \"ws\"\n")),
        "main.toml:3:6: VM name 'core' is reserved for the microvisor core"
    );
}

#[test]
fn vm_named_like_a_component() {
    assert_eq!(
        error(&format!("{WS}[vms.ws]\nswitcher = \"ws\"\n")),
        "main.toml:3:6: VM 'ws' has the same name as component 'ws' (help: components and VMs share one name space; the component is defined at main.toml:1:13)"
    );
}

#[test]
fn vm_defined_in_two_files() {
    let table = "[vms.g]\nswitcher = \"ws\"\n";
    assert_eq!(
        errors_of(&[
            ("main.toml", &format!("include = [\"base.toml\"]\n{table}")),
            ("base.toml", &format!("{WS}{table}")),
        ]),
        [
            "main.toml:2:6: VM 'g' is defined in both base.toml and main.toml (help: first defined at base.toml:3:6)"
        ]
    );
}

#[test]
fn vm_name_too_long_for_its_capabilities() {
    let long = "abcdefghijklmnopqrstuvwxyz01";
    assert_eq!(
        error(&format!("{WS}[vms.{long}]\nswitcher = \"ws\"\n")),
        format!(
            "main.toml:3:6: VM name '{long}' is longer than 27 characters: its capabilities '{long}.vmcs' and '{long}.vcpu' must fit in 32"
        )
    );
}

#[test]
fn vm_unknown_switcher() {
    assert_eq!(
        error(&format!("{WS}[vms.g]\nswitcher = \"wss\"\n")),
        "main.toml:4:12: VM 'g': unknown switcher 'wss' (help: did you mean 'ws'?)"
    );
}

#[test]
fn a_switcher_must_run_a_world_switcher() {
    let text = "[components.ws]\nprogram = \"hello\"\n[vms.g]\nswitcher = \"ws\"\n";
    assert_eq!(
        error(text),
        "main.toml:4:12: VM 'g': its switcher 'ws' runs program 'hello', which is not a world switcher (help: a switcher runs a program whose Cargo.toml declares [package.metadata.microvisor] role = \"world-switcher\" (here: world-switcher))"
    );
    // Without roles (a set of names alone), capdl cannot tell.
    let read = |_: &std::path::Path| Ok(text.as_bytes().to_vec());
    let programs = capdl::ProgramSet::new("components/", ["hello"]);
    let path = std::path::Path::new("main.toml");
    assert!(capdl::load_from(path, &read, &programs, &Options::default()).is_ok());
}

#[test]
fn one_vm_per_switcher() {
    assert_eq!(
        error(&format!(
            "{WS}[vms.a]\nswitcher = \"ws\"\n[vms.b]\nswitcher = \"ws\"\n"
        )),
        "main.toml:6:12: component 'ws' already runs VM 'a'; a world switcher runs one VM (help: declare another component to switch this VM)"
    );
}

#[test]
fn vm_image_name() {
    assert_eq!(
        error(&vm("image = \"Hello\"\n")),
        "main.toml:5:9: VM 'g': image name 'Hello' is not 1 to 29 characters of a-z, 0-9, '_' and '-' (help: the boot image holds it as 'vm-Hello', at most 32 characters)"
    );
    let long = "abcdefghijklmnopqrstuvwxyz0123";
    assert_eq!(
        error(&vm(&format!("image = \"{long}\"\n"))),
        format!(
            "main.toml:5:9: VM 'g': image name '{long}' is not 1 to 29 characters of a-z, 0-9, '_' and '-' (help: the boot image holds it as 'vm-{long}', at most 32 characters)"
        )
    );
}

#[test]
fn vm_memory_zero_or_not_whole_pages() {
    assert_eq!(
        error(&vm("memory = 0\n")),
        "main.toml:5:10: VM 'g': memory 0B is not a positive multiple of the 4KiB page size"
    );
    assert_eq!(
        error(&vm("memory = \"1001KiB\"\n")),
        "main.toml:5:10: VM 'g': memory 1001KiB is not a positive multiple of the 4KiB page size"
    );
}

#[test]
fn vm_memory_too_large() {
    assert_eq!(
        error(&vm("memory = \"2GiB\"\n")),
        "main.toml:5:10: VM 'g': memory 2GiB is more than a VM may have (1GiB)"
    );
}

#[test]
fn vm_memory_unit() {
    assert_eq!(
        error(&vm("memory = \"2M\"\n")),
        "main.toml:5:10: VM 'g': invalid 'memory': \"2M\" has an unknown unit 'M' (use B, KiB, MiB or GiB; did you mean 'MiB'?)"
    );
}

#[test]
fn vm_entry_mode() {
    assert_eq!(
        error(&vm("entry = \"rael\"\n")),
        "main.toml:5:9: VM 'g': 'entry' must be \"long\" or \"real\", not \"rael\" (help: did you mean 'real'?)"
    );
}

#[test]
fn vm_scheduling_is_checked_like_a_components() {
    assert_eq!(
        error(&vm("priority = 256\n")),
        "main.toml:5:12: VM 'g': priority 256 is out of range (0 to 255, higher runs first)"
    );
    assert_eq!(
        error(&vm("budget = \"20ms\"\n")),
        "main.toml:5:10: VM 'g': budget 20ms is longer than its period 10ms (help: a budget is at most its period (equal means never throttled))"
    );
    assert_eq!(
        error(&vm("period = \"0ms\"\n")),
        "main.toml:5:10: VM 'g': period must be longer than zero"
    );
    assert_eq!(
        error(&vm("budget = \"1500ns\"\n")),
        "main.toml:5:10: VM 'g': budget 1500ns is not a whole number of microseconds"
    );
}

#[test]
fn vm_scheduling_on_both_the_vm_and_its_switcher() {
    assert_eq!(
        error(&format!(
            "{WS}priority = 3\n[vms.g]\nswitcher = \"ws\"\nbudget = \"2ms\"\n"
        )),
        "main.toml:6:10: set the scheduling of VM 'g' on the VM or on its switcher 'ws', not both (help: the VM's vCPU runs on the switcher's scheduling context; 'ws' sets priority at main.toml:3:12)"
    );
    assert_eq!(
        errors(&format!(
            "{WS}period = 5\n[vms.g]\nswitcher = \"ws\"\npriority = 7\n"
        )),
        [
            "main.toml:3:10: component 'ws': 'period' expects a duration such as \"10ms\", found integer `5`",
            "main.toml:6:12: set the scheduling of VM 'g' on the VM or on its switcher 'ws', not both (help: the VM's vCPU runs on the switcher's scheduling context; 'ws' sets period in its table at main.toml:1:13)",
        ]
    );
}

#[test]
fn vm_poke() {
    assert_eq!(
        errors(&format!(
            "{WS}[components.vmctl]\n[vms.g]\nswitcher = \"ws\"\npoke = [\"vmctrl\", \"ws\", \"vmctl\", \"vmctl\"]\n"
        )),
        [
            "main.toml:6:9: VM 'g': poke names unknown component 'vmctrl' (help: did you mean 'vmctl'?)",
            "main.toml:6:19: VM 'g': poke names its switcher 'ws', which already holds 'g.vcpu' (help: poke lists the other components that may stop the vCPU)",
            "main.toml:6:34: VM 'g': poke names 'vmctl' twice",
        ]
    );
}

#[test]
fn component_names_starting_with_vm_are_reserved() {
    assert_eq!(
        error("[components.vm-hello]\nprogram = \"a\"\n"),
        "main.toml:1:13: component name 'vm-hello' starts with 'vm-', which the boot image reserves for guest images (help: rename the component; a guest is declared as [vms.NAME])"
    );
    assert_eq!(
        error("[components.a]\nprogram = \"vm-hello\"\n"),
        "main.toml:2:11: component 'a': program name 'vm-hello' starts with 'vm-', which the boot image reserves for guest images"
    );
}

#[test]
fn too_many_vms() {
    let mut text = String::new();
    for i in 0..17 {
        text.push_str(&format!(
            "[components.ws{i}]\nprogram = \"world-switcher\"\nmemory = \"1MiB\"\n[vms.g{i}]\nswitcher = \"ws{i}\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:84:6: the system has 17 VMs; the core supports at most 16"
    );
}

#[test]
fn vm_capabilities_count_toward_the_limit() {
    let mut text = format!("{WS}[components.b]\nprogram = \"a\"\n[vms.g]\nswitcher = \"ws\"\n");
    for i in 0..31 {
        text.push_str(&format!(
            "[notifications.n{i}]\nfrom = \"ws\"\nto = \"b\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:1:13: component 'ws' would hold 33 capabilities; a component holds at most 32"
    );
}

#[test]
fn vm_memory_counts_toward_the_machine() {
    assert_eq!(
        error(&format!(
            "{WS}memory = \"300MiB\"\n[vms.g]\nswitcher = \"ws\"\nmemory = \"1GiB\"\n"
        )),
        "main.toml:1:13: the system needs 1324MiB (components 300MiB, queues 0B, VMs 1GiB) but the machine has 448MiB (help: the largest components: 'ws' 300MiB)"
    );
}

#[test]
fn vm_scheduling_takes_part_in_call_paths() {
    // The VM's priority is its switcher's: a server below its client.
    assert_eq!(
        error(
            "[components.ws]\nprogram = \"world-switcher\"\n[components.client]\nprogram = \"a\"\npriority = 100\n\
             [vms.g]\nswitcher = \"ws\"\npriority = 50\n\
             [queues.requests]\nfrom = \"client\"\nto = \"ws\"\nslot_size = 8\nslots = 2\nreply = \"replies\"\n\
             [queues.replies]\nfrom = \"ws\"\nto = \"client\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:9:9: priority inversion on call path 'requests' -> 'replies': server 'ws' (priority 50) runs below its client 'client' (priority 100) (help: a client waiting for its reply is delayed by everything between the two priorities; give 'ws' priority 100 or more)"
    );
}

#[test]
fn mmio_grants_over_ram_or_the_cores_devices_are_refused() {
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0x200000\", size = \"4KiB\" }]\n"),
        "main.toml:2:22: component 'a': mmio 0x200000 + 4KiB lies in RAM (below 640KiB, or between 1MiB and the machine's 448MiB), not device memory (help: device memory lies above the machine's RAM (QEMU's PCI window starts at 0xe0000000) or in the legacy window 0xa0000-0xfffff)"
    );
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0xfee00000\", size = \"4KiB\" }]\n"),
        "main.toml:2:22: component 'a': mmio 0xfee00000 + 4KiB includes the local APIC's registers, which the core keeps for itself"
    );
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0xfebff000\", size = \"8KiB\" }]\n"),
        "main.toml:2:22: component 'a': mmio 0xfebff000 + 8KiB includes the IOAPIC's registers, which the core keeps for itself"
    );
}

#[test]
fn device_window_overflow() {
    assert_eq!(
        error("[components.a]\nmmio = [{ physical = \"0x100000000\", size = \"32768GiB\" }]\n"),
        "main.toml:1:13: component 'a': its mmio regions and DMA buffers need more than its device window of 16384GiB (with a guard page after each)"
    );
}

// -------------------------------------------------------- component list

/// Options of the build tool: it can apply these corruptions.
fn build_options() -> Options {
    Options {
        corruptions: vec!["bad-magic".into(), "truncated".into()],
        ..Options::default()
    }
}

fn list_errors(text: &str) -> Vec<String> {
    match load_files(&[("main.toml", text)], &build_options()) {
        Ok(_) => panic!("expected errors, but the system loaded"),
        Err(diagnostics) => render(&diagnostics),
    }
}

#[test]
fn list_entry_without_a_name() {
    assert_eq!(
        list_errors("[[component]]\nprogram = \"hello\"\n"),
        ["main.toml:1:1: [[component]] entry 1 is missing 'name'"]
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"hello\"\n[[component]]\nname = 5\n"),
        ["main.toml:4:8: [[component]] entry 2: 'name' expects a string, found integer `5`"]
    );
}

#[test]
fn list_entry_fields_are_strict() {
    assert_eq!(
        list_errors("[[component]]\nname = \"hello\"\nprogam = \"hello\"\n"),
        [
            "main.toml:3:1: component 'hello': unknown field 'progam' (help: did you mean 'program'?)"
        ]
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"x\"\nprogram = \"helo\"\nargs = 5\n"),
        [
            "main.toml:3:11: component 'x': no program 'helo' in components/system/ or components/test/ (help: did you mean 'hello'?)",
            "main.toml:4:8: component 'x': 'args' expects a string, found integer `5`",
        ]
    );
}

#[test]
fn list_entries_are_checked_like_components() {
    assert_eq!(
        list_errors("[[component]]\nname = \"Hello\"\n"),
        [
            "main.toml:2:8: component name 'Hello' is not 1 to 32 characters of a-z, 0-9, '_' and '-'"
        ]
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"hello\"\n[[component]]\nname = \"hello\"\n"),
        [
            "main.toml:4:8: component 'hello' is defined twice in main.toml (help: first defined at main.toml:2:8)"
        ]
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"helo\"\n"),
        [
            "main.toml:2:8: component 'helo': no program 'helo' in components/system/ or components/test/ (the program defaults to the component's name) (help: did you mean 'hello'?)"
        ]
    );
    assert_eq!(
        list_errors("[components.hello]\n[[component]]\nname = \"hello\"\n"),
        [
            "main.toml:3:8: component 'hello' is defined twice in main.toml (help: first defined at main.toml:1:13)"
        ]
    );
}

#[test]
fn component_that_is_not_a_list_of_tables() {
    for text in ["component = 3\n", "component = [1]\n"] {
        assert_eq!(
            list_errors(text),
            [
                "main.toml:1:1: 'component' must be a list of tables (help: write [[component]] followed by name = \"NAME\")"
            ]
        );
    }
}

#[test]
fn corruption_is_only_for_the_build_tools_tests() {
    assert_eq!(
        error("[[component]]\nname = \"hello\"\ncorrupt = \"bad-magic\"\n"),
        "main.toml:3:11: component 'hello': corrupt = \"bad-magic\" asks to damage the program before packing, which only the build tool's tests can do (help: remove corrupt, or boot this system with cargo run -p build)"
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"hello\"\ncorrupt = \"bad-magik\"\n"),
        [
            "main.toml:3:11: component 'hello': unknown corruption 'bad-magik' (help: did you mean 'bad-magic'?)"
        ]
    );
    assert_eq!(
        list_errors("[[component]]\nname = \"hello\"\ncorrupt = \"zzzzzzzzzz\"\n"),
        [
            "main.toml:3:11: component 'hello': unknown corruption 'zzzzzzzzzz' (help: the corruptions are: bad-magic, truncated)"
        ]
    );
    assert_eq!(
        error("[components.hello]\ncorrupt = \"bad-magic\"\n"),
        "main.toml:2:1: component 'hello': unknown field 'corrupt' (help: the fields are: program, args, priority, budget, period, stack, memory, start, supervisor, restart, observe, ports, mmio, dma, pci, interrupts)"
    );
}

#[test]
fn a_corrupted_copy_needs_an_entry_name_of_its_own() {
    assert_eq!(
        list_errors(
            "[[component]]\nname = \"hello\"\ncorrupt = \"bad-magic\"\n[[component]]\nname = \"x\"\nprogram = \"hello\"\n"
        ),
        [
            "main.toml:2:8: component 'hello': its corrupted program is packed as the boot-image entry 'hello', which holds program 'hello' for component 'x' (help: rename the corrupted component)"
        ]
    );
    assert_eq!(
        list_errors(
            "[[component]]\nname = \"spec\"\nprogram = \"hello\"\ncorrupt = \"bad-magic\"\n"
        ),
        [
            "main.toml:2:8: component 'spec': its program would be packed as the boot-image entry 'spec', which holds the boot spec (help: rename the component)"
        ]
    );
}

#[test]
fn a_top_level_description_belongs_in_system() {
    assert_eq!(
        error("description = \"x\"\n[[component]]\nname = \"a\"\n"),
        "main.toml:1:1: unknown top-level key 'description' (help: a system's description is written in its [system] table: description = \"...\")"
    );
}

#[test]
fn host_keys_of_the_root_file_are_skipped() {
    let options = Options {
        host_keys: vec!["timeout".into(), "expect".into()],
        ..Options::default()
    };
    let text = "timeout = 20\nexpect = [\"x\"]\n[[component]]\nname = \"hello\"\n";
    let system = load_files(&[("main.toml", text)], &options).unwrap();
    assert_eq!(system.components.len(), 1);
    // Only the root file's: an included file is a plain system file.
    let files = [
        (
            "main.toml",
            "include = [\"base.toml\"]\ntimeout = 1\n[[component]]\nname = \"hello\"\n",
        ),
        ("base.toml", "timeout = 2\n"),
    ];
    assert_eq!(
        render(&load_files(&files, &options).unwrap_err()),
        [
            "base.toml:1:1: unknown top-level key 'timeout' (help: a system file has only include, system, test, machine, components, component, queues, notifications, calls, vms, disks, networks)"
        ]
    );
}

// ---------------------------------------------------- messages (issue 10)

#[test]
fn duplicate_keys_are_named_with_their_first_place() {
    assert_eq!(
        error("[components.a]\npriority = 1\n[components.a]\nstack = 2\n"),
        "main.toml:3:13: duplicate key 'a' in [components] (help: first set at main.toml:1:13)"
    );
    assert_eq!(
        list_errors(
            "[[component]]\nname = \"hello\"\n[[component]]\nname = \"crasher\"\nargs = \"\"\nargs = \"x\"\n"
        ),
        [
            "main.toml:6:1: duplicate key 'args' in [[component]] entry 2 (help: first set at main.toml:5:1)"
        ]
    );
    assert_eq!(
        error("include = []\ninclude = []\n[components.a]\n"),
        "main.toml:2:1: duplicate key 'include' at the top level (help: first set at main.toml:1:1)"
    );
    assert_eq!(
        error("[components.a]\nrestart = { max = 1, max = 2 }\n"),
        "main.toml:2:22: duplicate key 'max' in [components.a.restart] (help: first set at main.toml:2:13)"
    );
}

#[test]
fn every_bad_entry_of_a_list_is_reported() {
    assert_eq!(
        errors("[components.a]\nobserve = [1, \"b\", 2]\n[components.b]\n"),
        [
            "main.toml:2:12: component 'a': 'observe[0]' expects a string, found integer `1`",
            "main.toml:2:20: component 'a': 'observe[2]' expects a string, found integer `2`",
        ]
    );
    assert_eq!(
        errors("[components.a]\nports = [\"0x3ff-0x3f8\", \"zz\"]\n"),
        [
            "main.toml:2:10: component 'a': invalid 'ports[0]': port range \"0x3ff-0x3f8\" ends before it starts",
            "main.toml:2:25: component 'a': invalid 'ports[1]': \"zz\" is not a number (write decimal, or hex such as \"0x3f8\")",
        ]
    );
    assert_eq!(
        errors("[components.a]\nmmio = [{ physical = \"0x1000\" }, { physical = \"0x2000\" }]\n"),
        [
            "main.toml:2:9: component 'a' is missing 'mmio[0].size'",
            "main.toml:2:34: component 'a' is missing 'mmio[1].size'",
        ]
    );
}

#[test]
fn a_close_name_with_a_non_ascii_letter_says_so() {
    assert_eq!(
        error(
            "[components.ping]\n[components.pong]\n[queues.q]\nfrom = \"ping\"\nto = \"p\u{43e}ng\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:5:6: queue 'q': unknown receiver 'p\u{43e}ng' (help: did you mean 'pong'? ('p\u{43e}ng' has the non-ASCII character '\u{43e}' (U+043E, drawn like 'o') at position 2))"
    );
    assert_eq!(
        error("[components.\"p\u{43e}ng\"]\n"),
        "main.toml:1:13: component name 'p\u{43e}ng' is not 1 to 32 characters of a-z, 0-9, '_' and '-' (help: 'p\u{43e}ng' has the non-ASCII character '\u{43e}' (U+043E, drawn like 'o') at position 2)"
    );
    assert_eq!(
        error("[components.p\u{43e}ng]\n"),
        "main.toml:1:14: TOML syntax: invalid unquoted key, expected letters, numbers, `-`, `_` (help: '\u{43e}' (U+043E, drawn like 'o') is not ASCII; names are a-z, 0-9, '_' and '-')"
    );
}

#[test]
fn microseconds_with_a_greek_mu_and_whole_fractions() {
    let system = common::system("[components.a]\nperiod = \"500\u{3bc}s\"\nbudget = \"0.25ms\"\n");
    assert_eq!(
        (
            system.components[0].period_us,
            system.components[0].budget_us
        ),
        (500, 250)
    );
    assert_eq!(
        error("[components.a]\nbudget = \"1.0005ms\"\n"),
        "main.toml:2:10: component 'a': budget 1000500ns is not a whole number of microseconds"
    );
    assert_eq!(
        error("[components.a]\nbudget = \"1.5ns\"\n"),
        "main.toml:2:10: component 'a': invalid 'budget': \"1.5ns\" is not a whole number of nanoseconds"
    );
}

#[test]
fn a_vm_named_where_a_component_belongs_is_called_a_vm() {
    assert_eq!(
        error(
            "[components.ws]\nprogram = \"world-switcher\"\n[components.a]\n[vms.hello]\nswitcher = \"ws\"\n\
             [queues.q]\nfrom = \"a\"\nto = \"hello\"\nslot_size = 8\nslots = 2\n"
        ),
        "main.toml:8:6: queue 'q': unknown receiver 'hello' (help: 'hello' is a VM, not a component; the component that runs it is its switcher 'ws')"
    );
}

#[test]
fn text_that_is_not_utf8_is_located() {
    let directory = std::env::temp_dir().join(format!("capdl-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("main.toml");
    std::fs::write(&path, b"[components.a]\nargs = \"\xffx\"\n").unwrap();
    let errors = common::disk_errors(&path);
    std::fs::remove_dir_all(&directory).unwrap();
    assert_eq!(
        errors,
        [format!(
            "{}:2:9: the file is not UTF-8 text: byte 0xff cannot start or continue a character here (help: save the file as UTF-8)",
            path.display()
        )]
    );
}

#[test]
fn files_too_large_are_refused() {
    let big = format!("[components.a]\n#{}\n", "x".repeat(capdl::MAX_FILE_BYTES));
    assert_eq!(
        render(&load_files(&[("main.toml", &big)], &Options::default()).unwrap_err()),
        ["main.toml: the file is larger than 1MiB, the most a system file may be"]
    );
    let included = format!("#{}\n", "x".repeat(capdl::MAX_FILE_BYTES));
    assert_eq!(
        errors_of(&[
            ("main.toml", "include = [\"big.toml\"]\n"),
            ("big.toml", &included)
        ]),
        [
            "main.toml:1:12: cannot read included file 'big.toml' (big.toml): the file is larger than 1MiB, the most a system file may be"
        ]
    );
    // Files under the limit each, over it together.
    let part = format!("#{}\n", "x".repeat(capdl::MAX_FILE_BYTES - 16));
    let names: Vec<String> = (0..5).map(|index| format!("\"p{index}.toml\"")).collect();
    let main = format!("include = [{}]\n", names.join(", "));
    let mut files = vec![("main.toml".to_string(), main)];
    files.extend((0..5).map(|index| (format!("p{index}.toml"), part.clone())));
    assert_eq!(
        errors_of(&files),
        [
            "main.toml:1:45: cannot read included file 'p3.toml' (p3.toml): the system's files would hold more than 4MiB together"
        ]
    );
}

#[test]
fn device_files_and_directories_are_not_read() {
    let directory = std::env::temp_dir().join(format!("capdl-special-{}", std::process::id()));
    std::fs::create_dir_all(directory.join("sub.toml")).unwrap();
    std::fs::write(
        directory.join("main.toml"),
        "include = [\"/dev/zero\", \"sub.toml\"]\n[components.a]\n",
    )
    .unwrap();
    let errors = common::disk_errors(&directory.join("main.toml"));
    let dir = directory.display();
    assert_eq!(
        errors,
        [
            format!(
                "{dir}/main.toml:1:12: cannot read included file '/dev/zero' (/dev/zero): it is a character device, not a regular file"
            ),
            format!(
                "{dir}/main.toml:1:25: cannot read included file 'sub.toml' ({dir}/sub.toml): it is a directory, not a regular file"
            ),
        ]
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

// ---------------------------------------------------------------- disks

/// A store, a switcher and a VM, for `[disks.NAME]` tests.
const DISK_BASE: &str = "[components.store]\nprogram = \"block-store\"\n[components.ws]\nprogram = \"world-switcher\"\n[vms.guest]\nswitcher = \"ws\"\nimage = \"hello\"\n";

#[test]
fn a_disk_becomes_a_queue_pair_and_the_stores_size_argument() {
    let system = common::system(&format!(
        "{DISK_BASE}[disks.data]\nstore = \"store\"\nvm = \"guest\"\nsize = \"4MiB\"\nslots = 8\n"
    ));
    let names: Vec<(&str, usize, usize, u32, u32)> = system
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.sender, q.receiver, q.slot_size, q.slots))
        .collect();
    assert_eq!(
        names,
        [
            ("data-requests", 1, 0, 4128, 8),
            ("data-completions", 0, 1, 4128, 8)
        ]
    );
    assert_eq!(system.components[0].args, "disks=data:4194304");
}

#[test]
fn a_disks_store_and_vm_must_exist_and_the_store_be_the_block_store() {
    assert_eq!(
        errors(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"stor\"\nvm = \"gust\"\nsize = \"1MiB\"\n"
        )),
        [
            "main.toml:9:9: disk 'd': unknown store component 'stor' (help: did you mean 'store'?)",
            "main.toml:10:6: disk 'd': unknown VM 'gust' (help: did you mean 'guest'?)",
        ]
    );
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"ws\"\nvm = \"guest\"\nsize = \"1MiB\"\n"
        )),
        "main.toml:9:9: disk 'd': its store 'ws' runs program 'world-switcher', not the block store (help: a disk's store runs program = \"block-store\")"
    );
}

#[test]
fn a_disks_size_and_queues_are_checked() {
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nsize = 1000\n"
        )),
        "main.toml:11:8: disk 'd': size 1000B is not a positive multiple of 512 bytes"
    );
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nsize = \"1MiB\"\n[queues.d-requests]\nfrom = \"ws\"\nto = \"store\"\nslot_size = 64\nslots = 4\n"
        )),
        "main.toml:8:8: disk 'd' needs the queue 'd-requests', which the system declares itself (help: a disk's queues are made for it: remove [queues.d-requests] or rename the disk)"
    );
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nsize = \"1MiB\"\nslots = 3\n"
        )),
        "main.toml:12:9: disk 'd': slots 3 is not a power of two (help: use 2 or 4)"
    );
}

#[test]
fn a_disk_from_a_file_goes_into_the_one_fresh_machine_disk() {
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nsize = \"1MiB\"\nfrom = \"d.img\"\n"
        )),
        "main.toml:12:8: disk 'd': `from` needs exactly one fresh [machine] disk for the store's file system, which the build tool makes (the system has 0) (help: [machine] disks = [{ size = \"32MiB\" }])"
    );
    let system = common::system(&format!(
        "[machine]\ndisks = [{{ size = \"8MiB\" }}]\n{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nsize = \"1MiB\"\nfrom = \"d.img\"\n[disks.e]\nstore = \"store\"\nvm = \"guest\"\nsize = \"2MiB\"\n"
    ));
    assert_eq!(
        system.disks[0].files,
        [
            capdl::StoreFile {
                name: "d".into(),
                kind: capdl::StoreFileKind::Disk {
                    size: 1 << 20,
                    from: Some("d.img".into()),
                },
            },
            capdl::StoreFile {
                name: "e".into(),
                kind: capdl::StoreFileKind::Disk {
                    size: 2 << 20,
                    from: None,
                },
            },
        ]
    );
}

/// Two VMs, each with its switcher, and a fresh machine disk.
const SHARED_BASE: &str = "[machine]\ndisks = [{ size = \"32MiB\" }]\n[components.store]\nprogram = \"block-store\"\n[components.ws-a]\nprogram = \"world-switcher\"\n[components.ws-b]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n[vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\n";

#[test]
fn a_shared_base_with_a_redo_log_per_vm() {
    let system = common::system(&format!(
        "{SHARED_BASE}[disks.base]\nstore = \"store\"\nsize = \"4MiB\"\nfrom = \"base.img\"\n[disks.a-log]\nstore = \"store\"\nvm = \"a\"\nbase = \"base\"\n[disks.b-log]\nstore = \"store\"\nvm = \"b\"\nbase = \"base\"\n"
    ));
    // The base has no VM, so no queues; each log has its pair.
    let names: Vec<&str> = system.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a-log-requests",
            "a-log-completions",
            "b-log-requests",
            "b-log-completions"
        ]
    );
    assert_eq!(system.components[0].args, "disks=a-log:log,b-log:log");
    let log = |name: &str| capdl::StoreFile {
        name: name.into(),
        kind: capdl::StoreFileKind::RedoLog {
            base: "base".into(),
        },
    };
    assert_eq!(
        system.disks[0].files,
        [
            capdl::StoreFile {
                name: "base".into(),
                kind: capdl::StoreFileKind::Disk {
                    size: 4 << 20,
                    from: Some("base.img".into()),
                },
            },
            log("a-log"),
            log("b-log"),
        ]
    );
    // A VM may see the base itself, read-only.
    let system = common::system(&format!(
        "{SHARED_BASE}[disks.base]\nstore = \"store\"\nvm = \"a\"\nread_only = true\nsize = \"4MiB\"\n[disks.b-log]\nstore = \"store\"\nvm = \"b\"\nbase = \"base\"\n"
    ));
    assert_eq!(system.components[0].args, "disks=base:ro,b-log:log");
}

#[test]
fn redo_logs_and_read_only_disks_are_checked() {
    let disk = |rest: &str| {
        format!("{SHARED_BASE}[disks.base]\nstore = \"store\"\nsize = \"4MiB\"\n{rest}")
    };
    assert_eq!(
        errors(&disk(
            "[disks.a-log]\nstore = \"store\"\nvm = \"a\"\nbase = \"bsae\"\nsize = \"1MiB\"\nfrom = \"x.img\"\n"
        )),
        [
            "main.toml:15:8: disk 'base': no VM sees it and no redo log is over it (help: give it vm = \"...\", or name it as another disk's base)",
            "main.toml:21:8: disk 'a-log': unknown base disk 'bsae' (help: did you mean 'base'?)",
            "main.toml:22:8: disk 'a-log': a redo log has the size of its base 'bsae' (help: remove size)",
            "main.toml:23:8: disk 'a-log': a redo log starts empty over its base; `from` belongs to the base 'bsae'",
        ]
    );
    assert_eq!(
        errors(&disk(
            "vm = \"b\"\n[disks.a-log]\nstore = \"store\"\nvm = \"a\"\nbase = \"base\"\n[disks.c]\nstore = \"store\"\nvm = \"a\"\nbase = \"a-log\"\n"
        )),
        [
            "main.toml:18:6: disk 'base': the redo log 'a-log' over it freezes it, so VM 'b' can only see it read-only (help: read_only = true)",
            "main.toml:26:8: disk 'c': its base 'a-log' is a redo log itself; a redo log's base is a disk",
        ]
    );
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\nread_only = true\nsize = \"1MiB\"\n"
        )),
        "main.toml:11:13: disk 'd': a read-only disk needs exactly one fresh [machine] disk for the store's file system, which the build tool makes (the system has 0) (help: [machine] disks = [{ size = \"32MiB\" }])"
    );
    assert_eq!(
        error(&format!(
            "{DISK_BASE}[disks.d]\nstore = \"store\"\nvm = \"guest\"\n"
        )),
        "main.toml:8:8: disk 'd' has no size (help: give it size = \"...\", or base = \"DISK\" to make it a redo log over another disk)"
    );
    assert_eq!(
        error(&format!(
            "{}[disks.a-long-disk-name]\nstore = \"store\"\nvm = \"guest\"\nsize = \"1MiB\"\n",
            DISK_BASE.replace(
                "program = \"block-store\"\n",
                "program = \"block-store\"\nargs = \"crash_every=1000 crashes=20 size=123456789\"\n"
            )
        ))
        .split(" (help")
        .next()
        .unwrap(),
        "main.toml:1:13: component 'store': its args with the disks= its [disks.NAME] tables add are 73 bytes (\"crash_every=1000 crashes=20 size=123456789 disks=a-long-disk-name:1048576\"); at most 64 fit"
    );
}

// ---------------------------------------------------------------- networks

/// A bridge and two VMs, each with its switcher, for `[networks.NAME]`
/// tests (the network's table starts on line 13).
const NET_BASE: &str = "[components.bridge]\nprogram = \"netbridge\"\n[components.ws-a]\nprogram = \"world-switcher\"\n[components.ws-b]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n[vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\n";

/// `NET_BASE` with VM `name` and its switcher `ws-NAME` added.
fn with_vm(base: &str, name: &str) -> String {
    format!(
        "{base}[components.ws-{name}]\nprogram = \"world-switcher\"\n[vms.{name}]\nswitcher = \"ws-{name}\"\nimage = \"hello\"\n"
    )
}

#[test]
fn a_network_becomes_a_queue_pair_per_member_and_the_bridges_networks_argument() {
    let system = common::system(&format!(
        "{}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\nslots = 16\n[networks.dmz]\nbridge = \"bridge\"\nmembers = [\"b\"]\n",
        NET_BASE.replace(
            "program = \"netbridge\"\n",
            "program = \"netbridge\"\nargs = \"crash_every=100\"\n"
        )
    ));
    let queues: Vec<(&str, usize, usize, u32, u32)> = system
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.sender, q.receiver, q.slot_size, q.slots))
        .collect();
    assert_eq!(
        queues,
        [
            ("lan-a-tx", 1, 0, 1528, 16),
            ("lan-a-rx", 0, 1, 1528, 16),
            ("lan-b-tx", 2, 0, 1528, 16),
            ("lan-b-rx", 0, 2, 1528, 16),
            ("dmz-b-tx", 2, 0, 1528, 64),
            ("dmz-b-rx", 0, 2, 1528, 64),
        ]
    );
    assert_eq!(
        system.components[0].args,
        "crash_every=100 networks=lan,dmz"
    );
    let nic = |name: &str, vm: usize| capdl::Nic {
        name: name.into(),
        vm,
        mac: net_api::mac_of(name),
    };
    assert_eq!(
        system.networks,
        [
            capdl::Network {
                name: "lan".into(),
                bridge: 0,
                slots: 16,
                nics: vec![nic("lan-a", 0), nic("lan-b", 1)],
                uplink: None,
            },
            capdl::Network {
                name: "dmz".into(),
                bridge: 0,
                slots: 64,
                nics: vec![nic("dmz-b", 1)],
                uplink: None,
            },
        ]
    );
    common::assert_round_trip(&system);
}

#[test]
fn a_networks_bridge_must_exist_and_run_the_network_bridge() {
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"brigde\"\nmembers = [\"a\"]\n"
        )),
        "main.toml:14:10: network 'lan': unknown bridge component 'brigde' (help: did you mean 'bridge'?)"
    );
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"ws-b\"\nmembers = [\"a\"]\n"
        )),
        "main.toml:14:10: network 'lan': its bridge 'ws-b' runs program 'world-switcher', not the network bridge (help: a network's bridge runs program = \"netbridge\")"
    );
}

#[test]
fn a_networks_members_are_declared_vms_each_once() {
    assert_eq!(
        errors(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"bb\", \"ws-a\", \"zzz\", \"a\"]\n"
        )),
        [
            "main.toml:15:17: network 'lan': unknown VM 'bb' (help: did you mean 'b'?)",
            "main.toml:15:23: network 'lan': unknown VM 'ws-a' (help: 'ws-a' is a component; a network's members are VMs ([vms.NAME]))",
            "main.toml:15:31: network 'lan': unknown VM 'zzz' (help: the VMs are a, b)",
            "main.toml:15:38: network 'lan': VM 'a' is listed twice in members (help: a VM has one NIC on a network)",
        ]
    );
    assert_eq!(
        error(
            "[components.bridge]\nprogram = \"netbridge\"\n[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\n"
        ),
        "main.toml:5:12: network 'lan': unknown VM 'a' (help: the system declares no VMs ([vms.NAME]))"
    );
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = []\n"
        )),
        "main.toml:15:11: network 'lan' has no members (help: list the VMs with a NIC on it: members = [\"VM\", ...])"
    );
    // A VM that is declared but broken is reported where it is declared.
    assert_eq!(
        error(&format!(
            "{NET_BASE}[vms.c]\nimage = \"hello\"\n[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"c\"]\n"
        )),
        "main.toml:13:1: VM 'c' is missing 'switcher'"
    );
    assert_eq!(
        error(&format!("{NET_BASE}[networks.lan]\nbridge = \"bridge\"\n")),
        "main.toml:13:1: network 'lan' is missing 'members'"
    );
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nvlan = 3\n"
        )),
        "main.toml:16:1: network 'lan': unknown field 'vlan' (help: the fields are: bridge, members, slots, uplink, uplink_mode)"
    );
}

#[test]
fn a_networks_slots_are_a_power_of_two_that_fits_a_queue() {
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nslots = 48\n"
        )),
        "main.toml:16:9: network 'lan': slots 48 is not a power of two (help: use 32 or 64)"
    );
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nslots = 4096\n"
        )),
        "main.toml:16:9: network 'lan': slots 4096 is more than 256"
    );
}

#[test]
fn a_nics_queues_are_named_within_32_characters_and_not_declared() {
    assert_eq!(
        error(&format!(
            "{}[networks.office-network]\nbridge = \"bridge\"\nmembers = [\"a-rather-long-vm\"]\n",
            with_vm(NET_BASE, "a-rather-long-vm")
        )),
        "main.toml:20:12: network 'office-network': the queues of VM 'a-rather-long-vm''s NIC, 'office-network-a-rather-long-vm-tx' and 'office-network-a-rather-long-vm-rx', are longer than 32 characters (help: a NIC's queues are named NETWORK-VM-tx and NETWORK-VM-rx: shorten the network's or the VM's name)"
    );
    assert_eq!(
        error(&format!(
            "{NET_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\n[queues.lan-b-rx]\nfrom = \"bridge\"\nto = \"ws-b\"\nslot_size = 64\nslots = 4\n"
        )),
        "main.toml:15:17: network 'lan' needs the queue 'lan-b-rx' for VM 'b''s NIC, which the system declares itself (help: a NIC's queues are made for it: remove [queues.lan-b-rx] or rename the network)"
    );
}

#[test]
fn two_nics_may_share_neither_a_name_nor_a_mac_address() {
    // `lan` + `a-b` and `lan-a` + `b` are both NIC `lan-a-b` (which their
    // bridge would also put on `lan-a`, the longer network).
    let base = with_vm(&with_vm(NET_BASE, "a-b"), "c");
    assert_eq!(
        errors(&format!(
            "{base}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a-b\"]\n[networks.lan-a]\nbridge = \"bridge\"\nmembers = [\"c\", \"b\"]\n"
        )),
        [
            "main.toml:25:12: network 'lan': VM 'a-b''s NIC 'lan-a-b' would be put on network 'lan-a' by their bridge 'bridge', which puts a NIC on the longest of its networks its name starts with (help: rename network 'lan-a' or the VM, or serve one of the networks from another bridge)",
            "main.toml:28:17: network 'lan-a': VM 'b''s NIC would be named 'lan-a-b', as is network 'lan''s NIC for VM 'a-b' (help: a NIC is named NETWORK-VM, and so are its queues: rename a network or a VM)",
        ]
    );
    // MAC addresses are 46 bits of a hash of the NIC's name: these two
    // names were found by a birthday search.
    assert_eq!(
        net_api::mac_of("n-vb2cjase5c9"),
        net_api::mac_of("n-vwpchiz6zdd")
    );
    let base = with_vm(&with_vm(NET_BASE, "vb2cjase5c9"), "vwpchiz6zdd");
    assert_eq!(
        error(&format!(
            "{base}[networks.n]\nbridge = \"bridge\"\nmembers = [\"a\", \"vb2cjase5c9\", \"vwpchiz6zdd\"]\n"
        )),
        "main.toml:25:32: network 'n': VM 'vwpchiz6zdd''s NIC 'n-vwpchiz6zdd' would have the MAC address 9e:5e:0f:85:02:03 of NIC 'n-vb2cjase5c9' (help: a NIC's MAC address is derived from its name, NETWORK-VM: rename the network or the VM)"
    );
}

#[test]
fn a_nic_is_on_the_longest_network_its_name_starts_with() {
    // The bridge would take `lan-a-x` (network `lan`, VM `a-x`) for a NIC
    // of network `lan-a`.
    let base = with_vm(NET_BASE, "a-x");
    let networks = "[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a-x\", \"b\"]\n[networks.lan-a]\nbridge = \"other\"\nmembers = [\"b\"]\n";
    assert_eq!(
        error(&format!("{base}{networks}").replace("\"other\"", "\"bridge\"")),
        "main.toml:20:12: network 'lan': VM 'a-x''s NIC 'lan-a-x' would be put on network 'lan-a' by their bridge 'bridge', which puts a NIC on the longest of its networks its name starts with (help: rename network 'lan-a' or the VM, or serve one of the networks from another bridge)"
    );
    // Another bridge does not see `lan-a-x`.
    let system = common::system(&format!(
        "{base}[components.other]\nprogram = \"netbridge\"\n{networks}"
    ));
    assert_eq!(system.components[0].args, "networks=lan");
    assert_eq!(system.components[4].args, "networks=lan-a");
}

#[test]
fn a_vm_has_at_most_four_nics() {
    let networks: String = (1..=5)
        .map(|n| format!("[networks.n{n}]\nbridge = \"bridge\"\nmembers = [\"a\"]\n"))
        .collect();
    assert_eq!(
        error(&format!("{NET_BASE}{networks}")),
        "main.toml:27:12: network 'n5': VM 'a' would have 5 NICs; a VM has at most 4 (help: its world switcher shows at most 4 virtio-net functions; it is on 'n1', 'n2', 'n3', 'n4' already)"
    );
}

#[test]
fn the_bridges_args_and_the_queue_count_are_checked() {
    let network = "[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\n";
    assert_eq!(
        error(&format!(
            "{}{network}",
            NET_BASE.replace(
                "program = \"netbridge\"\n",
                "program = \"netbridge\"\nargs = \"networks=lan\"\n"
            )
        )),
        "main.toml:1:13: component 'bridge': its args say networks=, which its [networks.NAME] tables write"
    );
    assert_eq!(
        error(&format!(
            "{}[networks.a-long-network-name]\nbridge = \"bridge\"\nmembers = [\"a\"]\n",
            NET_BASE.replace(
                "program = \"netbridge\"\n",
                "program = \"netbridge\"\nargs = \"crash_every=1000 crashes=20 seed=12345\"\n"
            )
        )),
        "main.toml:1:13: component 'bridge': its args with the networks= its [networks.NAME] tables add are 67 bytes (\"crash_every=1000 crashes=20 seed=12345 networks=a-long-network-name\"); at most 64 fit (help: shorten the networks' names, or serve some from another bridge)"
    );
    // 62 queues of its own and two NICs' four.
    let queues: String = (0..62)
        .map(|n| {
            format!("[queues.q{n}]\nfrom = \"ws-a\"\nto = \"ws-b\"\nslot_size = 8\nslots = 1\n")
        })
        .collect();
    let all = errors(&format!(
        "{NET_BASE}{queues}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\n"
    ));
    assert_eq!(
        all,
        [
            "main.toml:323:11: the system has 66 queues with those of its networks; the core supports at most 64 (help: each NIC takes two queues (4 for the networks' NICs))"
        ]
    );
}

/// `NET_BASE` with the driver `nic` of the machine's NIC and that NIC (the
/// network's table starts on line 18).
const UPLINK_BASE: &str = "[components.bridge]\nprogram = \"netbridge\"\n[components.ws-a]\nprogram = \"world-switcher\"\n[components.ws-b]\nprogram = \"world-switcher\"\n[vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n[vms.b]\nswitcher = \"ws-b\"\nimage = \"hello\"\n[components.nic]\nprogram = \"virtio-net\"\npci = { vendor = \"0x1af4\", device = \"0x1041\" }\n[machine]\nnics = [{ backend = \"user\" }]\n";

#[test]
fn uplink_base_extends_net_base() {
    assert!(UPLINK_BASE.starts_with(NET_BASE));
    assert_eq!(UPLINK_BASE.lines().count(), 17);
}

#[test]
fn machine_nics_are_user_mode_with_a_unicast_mac() {
    let system = common::system("[components.a]\n[machine]\nnics = [{ backend = \"user\" }]\n");
    assert_eq!(
        system.nics,
        [capdl::MachineNic {
            backend: capdl::NicBackend::User,
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        }]
    );
    let system = common::system(
        "[components.a]\n[machine]\nnics = [{ backend = \"user\", mac = \"02:00:5E:10:00:01\" }]\n",
    );
    assert_eq!(system.nics[0].mac, [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
    assert!(common::system("[components.a]\n").nics.is_empty());
    assert_eq!(
        errors(
            "[components.a]\n[machine]\nnics = [{ backend = \"tap\" }, { backend = \"usr\" }]\n"
        ),
        [
            "main.toml:3:21: [machine] nic backend \"tap\" is not supported; the only backend is \"user\" (QEMU's user-mode network)",
            "main.toml:3:30: [machine] the system has 2 NICs; the machine has at most 1 (help: one network's uplink drives the machine's one NIC)",
            "main.toml:3:42: [machine] nic backend \"usr\" is not supported; the only backend is \"user\" (QEMU's user-mode network) (help: did you mean 'user'?)",
        ]
    );
    let mac = |mac: &str| {
        error(&format!(
            "[components.a]\n[machine]\nnics = [{{ backend = \"user\", mac = \"{mac}\" }}]\n"
        ))
    };
    assert_eq!(
        mac("52:54:00:12:34"),
        "main.toml:3:35: [machine] nic mac \"52:54:00:12:34\" is not six hex bytes separated by ':' (such as \"52:54:00:12:34:56\")"
    );
    assert_eq!(
        mac("52-54-00-12-34-56"),
        "main.toml:3:35: [machine] nic mac \"52-54-00-12-34-56\" is not six hex bytes separated by ':' (such as \"52:54:00:12:34:56\")"
    );
    assert_eq!(
        mac("00:00:00:00:00:00"),
        "main.toml:3:35: [machine] nic mac 00:00:00:00:00:00 is all zeros, which is no NIC's address"
    );
    assert_eq!(
        mac("53:54:00:12:34:56"),
        "main.toml:3:35: [machine] nic mac 53:54:00:12:34:56 is a group (multicast) address: the low bit of its first byte is set (help: a NIC's own address is unicast, such as 52:54:00:12:34:56)"
    );
    assert_eq!(
        mac("ff:ff:ff:ff:ff:ff"),
        "main.toml:3:35: [machine] nic mac ff:ff:ff:ff:ff:ff is a group (multicast) address: the low bit of its first byte is set (help: a NIC's own address is unicast, such as fe:ff:ff:ff:ff:ff)"
    );
    assert_eq!(
        errors(
            "[components.a]\n[machine]\nnics = [{ mac = \"52:54:00:12:34:56\" }, { backend = \"user\", model = \"e1000\" }]\n"
        ),
        [
            "main.toml:3:9: [machine] is missing 'nics[0].backend'",
            "main.toml:3:60: [machine]: unknown field 'model' in 'nics[1]' (help: the fields are: backend, mac)",
        ]
    );
}

#[test]
fn an_uplink_is_a_queue_pair_of_its_own_and_adds_no_args() {
    let system = common::system(&format!(
        "{UPLINK_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\nuplink = \"nic\"\nslots = 16\n"
    ));
    let queues: Vec<(&str, usize, usize, u32, u32)> = system
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.sender, q.receiver, q.slot_size, q.slots))
        .collect();
    assert_eq!(
        queues,
        [
            ("lan-a-tx", 1, 0, 1528, 16),
            ("lan-a-rx", 0, 1, 1528, 16),
            ("lan-b-tx", 2, 0, 1528, 16),
            ("lan-b-rx", 0, 2, 1528, 16),
            ("lan-nic-in", 3, 0, 1528, 16),
            ("lan-nic-out", 0, 3, 1528, 16),
        ]
    );
    assert_eq!(system.components[0].args, "networks=lan");
    assert_eq!(system.components[3].args, "");
    assert_eq!(
        system.networks[0].uplink,
        Some(capdl::Uplink {
            component: 3,
            name: "lan-nic".into(),
            mode: capdl::UplinkMode::Shared,
            mac: capdl::DEFAULT_NIC_MAC,
        })
    );
    assert_eq!(system.nics[0].mac, capdl::DEFAULT_NIC_MAC);
    common::assert_round_trip(&system);
    // A card's own MAC is the uplink's in shared mode.
    let system = common::system(&format!(
        "{}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\nuplink_mode = \"shared\"\n",
        UPLINK_BASE.replace(
            "backend = \"user\" }",
            "backend = \"user\", mac = \"02:11:22:33:44:55\" }"
        )
    ));
    let uplink = system.networks[0].uplink.as_ref().unwrap();
    assert_eq!(uplink.mac, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(system.nics[0].mac, uplink.mac);
}

#[test]
fn an_exclusive_uplink_gives_the_card_its_vms_mac() {
    let system = common::system(&format!(
        "{UPLINK_BASE}[networks.out]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"nic\"\nuplink_mode = \"exclusive\"\n"
    ));
    let mac = net_api::mac_of("out-b");
    assert_eq!(
        system.networks[0].uplink,
        Some(capdl::Uplink {
            component: 3,
            name: "out-nic".into(),
            mode: capdl::UplinkMode::Exclusive,
            mac,
        })
    );
    assert_eq!(
        system.nics,
        [capdl::MachineNic {
            backend: capdl::NicBackend::User,
            mac,
        }]
    );
    common::assert_round_trip(&system);
}

#[test]
fn an_uplink_runs_the_virtio_net_driver_of_the_machines_nic() {
    let network = |uplink: &str| {
        format!("[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"{uplink}\"\n")
    };
    assert_eq!(
        error(&format!("{UPLINK_BASE}{}", network("nci"))),
        "main.toml:21:10: network 'lan': unknown uplink component 'nci' (help: did you mean 'nic'?)"
    );
    assert_eq!(
        error(&format!("{UPLINK_BASE}{}", network("a"))),
        "main.toml:21:10: network 'lan': unknown uplink component 'a' (help: 'a' is a VM, not a component; the component that runs it is its switcher 'ws-a')"
    );
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace("\"virtio-net\"", "\"driver\""),
            network("nic")
        )),
        "main.toml:21:10: network 'lan': its uplink 'nic' runs program 'driver', not the virtio-net driver (help: an uplink runs program = \"virtio-net\", the driver of the machine's NIC)"
    );
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace("pci = { vendor = \"0x1af4\", device = \"0x1041\" }\n", ""),
            network("nic")
        )),
        "main.toml:20:10: network 'lan': its uplink 'nic' has no pci grant for the machine's NIC (1af4:1041, virtio-net-pci) (help: give it pci = { vendor = \"0x1af4\", device = \"0x1041\" })"
    );
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace("\"0x1041\"", "\"0x1000\""),
            network("nic")
        )),
        "main.toml:21:10: network 'lan': its uplink 'nic' drives PCI 1af4:1000, not the machine's NIC (1af4:1041, virtio-net-pci) (help: give it pci = { vendor = \"0x1af4\", device = \"0x1041\" })"
    );
    // A pci table written wrong is reported where it is written.
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace("\"0x1041\"", "\"0x11041\""),
            network("nic")
        )),
        "main.toml:15:37: component 'nic': pci device 0x11041 is not a 16-bit ID"
    );
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace("[machine]\nnics = [{ backend = \"user\" }]\n", ""),
            network("nic")
        )),
        "main.toml:19:10: network 'lan': its uplink 'nic' drives the machine's NIC, but the system has no [machine] nics (help: [machine] nics = [{ backend = \"user\" }])"
    );
    // A machine NIC written wrong is reported where it is written.
    assert_eq!(
        error(&format!(
            "{}{}",
            UPLINK_BASE.replace(
                "backend = \"user\"",
                "backend = \"user\", model = \"e1000\""
            ),
            network("nic")
        )),
        "main.toml:17:29: [machine]: unknown field 'model' in 'nics[0]' (help: the fields are: backend, mac)"
    );
}

#[test]
fn the_system_has_one_uplink() {
    let base = format!(
        "{UPLINK_BASE}[components.nic2]\nprogram = \"virtio-net\"\npci = {{ vendor = \"0x1af4\", device = \"0x1041\", address = \"00:05.0\" }}\n"
    );
    assert_eq!(
        error(&format!(
            "{base}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\n[networks.dmz]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"nic\"\n"
        )),
        "main.toml:28:10: network 'dmz': component 'nic' is already the uplink of network 'lan' (help: a driver connects one network to the outside)"
    );
    assert_eq!(
        error(&format!(
            "{base}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\n[networks.dmz]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"nic2\"\n"
        )),
        "main.toml:28:10: network 'dmz': network 'lan' has the uplink already; the machine has at most 1 NIC, so the system has at most one uplink (help: connect one network to the outside)"
    );
}

#[test]
fn an_uplinks_queues_and_name_are_its_own() {
    let long = UPLINK_BASE.replace("[components.nic]", "[components.the-uplink-driver]");
    assert_eq!(
        error(&format!(
            "{long}[networks.office-network]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"the-uplink-driver\"\n"
        )),
        "main.toml:21:10: network 'office-network': the queues of its uplink 'the-uplink-driver', 'office-network-the-uplink-driver-in' and 'office-network-the-uplink-driver-out', are longer than 32 characters (help: an uplink's queues are named NETWORK-COMPONENT-in and NETWORK-COMPONENT-out: shorten the network's or the component's name)"
    );
    assert_eq!(
        error(&format!(
            "{UPLINK_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\n[queues.lan-nic-out]\nfrom = \"bridge\"\nto = \"nic\"\nslot_size = 64\nslots = 4\n"
        )),
        "main.toml:21:10: network 'lan' needs the queue 'lan-nic-out' for its uplink 'nic', which the system declares itself (help: an uplink's queues are made for it: remove [queues.lan-nic-out] or rename the network)"
    );
    // `lan` + component `x-a` and `lan-x` + VM `a` are both `lan-x-a`,
    // which the bridge would also put on `lan-x`.
    let clash = UPLINK_BASE.replace("[components.nic]", "[components.x-a]");
    assert_eq!(
        errors(&format!(
            "{clash}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"x-a\"\n[networks.lan-x]\nbridge = \"bridge\"\nmembers = [\"a\"]\n"
        )),
        [
            "main.toml:21:10: network 'lan': its uplink 'x-a' would be named 'lan-x-a', as is network 'lan-x''s NIC for VM 'a' (help: an uplink is named NETWORK-COMPONENT and a NIC NETWORK-VM: rename a network, the component or the VM)",
            "main.toml:21:10: network 'lan': its uplink 'x-a' ('lan-x-a') would be put on network 'lan-x' by their bridge 'bridge', which puts a port on the longest of its networks its name starts with (help: rename network 'lan-x' or the component, or serve one of the networks from another bridge)"
        ]
    );
    // Another bridge does not see `lan-x-a` as a port of `lan-x`, but
    // the names still clash.
    assert_eq!(
        errors(&format!(
            "{clash}[components.other]\nprogram = \"netbridge\"\n[networks.lan]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"x-a\"\n[networks.lan-x]\nbridge = \"other\"\nmembers = [\"a\"]\n"
        )),
        [
            "main.toml:23:10: network 'lan': its uplink 'x-a' would be named 'lan-x-a', as is network 'lan-x''s NIC for VM 'a' (help: an uplink is named NETWORK-COMPONENT and a NIC NETWORK-VM: rename a network, the component or the VM)"
        ]
    );
    // The uplink alone on the longer prefix.
    assert_eq!(
        errors(&format!(
            "{clash}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"b\"]\nuplink = \"x-a\"\n[networks.lan-x]\nbridge = \"bridge\"\nmembers = [\"b\"]\n"
        )),
        [
            "main.toml:21:10: network 'lan': its uplink 'x-a' ('lan-x-a') would be put on network 'lan-x' by their bridge 'bridge', which puts a port on the longest of its networks its name starts with (help: rename network 'lan-x' or the component, or serve one of the networks from another bridge)"
        ]
    );
}

#[test]
fn uplink_modes_are_shared_or_exclusive() {
    let network =
        "[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\"]\nuplink = \"nic\"\n";
    assert_eq!(
        error(&format!(
            "{UPLINK_BASE}{network}uplink_mode = \"exclusiv\"\n"
        )),
        "main.toml:22:15: network 'lan': 'uplink_mode' must be \"shared\" or \"exclusive\", not \"exclusiv\" (help: did you mean 'exclusive'?)"
    );
    assert_eq!(
        error(&format!(
            "{UPLINK_BASE}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink_mode = \"shared\"\n"
        )),
        "main.toml:21:15: network 'lan': uplink_mode needs an uplink (help: name the driver of the machine's NIC: uplink = \"COMPONENT\" (a component running program \"virtio-net\"))"
    );
    assert_eq!(
        error(&format!(
            "{UPLINK_BASE}{network}uplink_mode = \"exclusive\"\n"
        )),
        "main.toml:22:15: network 'lan': in exclusive mode one VM owns the machine's NIC, but the network has 2 members (help: list the one VM that owns the card (the outside sees it as the card), or use uplink_mode = \"shared\")"
    );
    assert_eq!(
        error(&format!(
            "{}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\nuplink_mode = \"exclusive\"\n",
            UPLINK_BASE.replace(
                "backend = \"user\" }",
                "backend = \"user\", mac = \"52:54:00:12:34:57\" }"
            )
        )),
        "main.toml:17:35: [machine] nic mac 52:54:00:12:34:57: network 'lan' is exclusive, and in exclusive mode the card takes VM 'a''s NIC's MAC (32:b5:18:55:ec:0b) (help: remove the card's mac, or use uplink_mode = \"shared\")"
    );
    // Shared: the card's MAC is no NIC's.
    let taken = net_api::MacText(net_api::mac_of("lan-b")).to_string();
    assert_eq!(
        error(&format!(
            "{}{network}",
            UPLINK_BASE.replace(
                "backend = \"user\" }",
                &format!("backend = \"user\", mac = \"{taken}\" }}")
            )
        )),
        "main.toml:17:35: network 'lan': the card of its uplink 'nic' would have the MAC address 7e:b3:18:55:ec:0a of NIC 'lan-b' (help: in shared mode the card keeps its own MAC ([machine] nics' mac, default 52:54:00:12:34:56), which no NIC may have: give the card another)"
    );
}

#[test]
fn an_uplinks_queues_count_like_any_others() {
    // Three VMs on four networks are twelve NICs, 48 resources of the
    // bridge's start page: the uplink's two queues are two capabilities
    // and two queue ends more.
    let base = with_vm(UPLINK_BASE, "c");
    let networks: String = (1..=4)
        .map(|n| {
            let uplink = if n == 1 { "uplink = \"nic\"\n" } else { "" };
            format!(
                "[networks.n{n}]\nbridge = \"bridge\"\nmembers = [\"a\", \"b\", \"c\"]\n{uplink}"
            )
        })
        .collect();
    assert_eq!(
        errors(&format!("{base}{networks}")),
        [
            "main.toml:1:13: component 'bridge' would be given 52 resources (capabilities, queue ends, notifications, grants); its start page lists at most 48"
        ]
    );
    // 61 queues of its own, one NIC's two and the uplink's two.
    let queues: String = (0..61)
        .map(|n| {
            format!("[queues.q{n}]\nfrom = \"ws-a\"\nto = \"ws-b\"\nslot_size = 8\nslots = 1\n")
        })
        .collect();
    assert_eq!(
        errors(&format!(
            "{UPLINK_BASE}{queues}[networks.lan]\nbridge = \"bridge\"\nmembers = [\"a\"]\nuplink = \"nic\"\n"
        )),
        [
            "main.toml:323:11: the system has 65 queues with those of its networks; the core supports at most 64 (help: each NIC and each uplink takes two queues (4 for the networks' NICs and uplink))"
        ]
    );
}

// ------------------------------------------------------- fault injection

/// An injector, three components it may inject into, and a VM `g`.
const INJECTION: &str = "[components.injector]\nprogram = \"a\"\n\
     [components.store]\nprogram = \"b\"\n\
     [components.bridge]\nprogram = \"c\"\n\
     [components.irq]\nprogram = \"c\"\n\
     [components.ws]\nprogram = \"world-switcher\"\n[vms.g]\nswitcher = \"ws\"\n";

#[test]
fn the_test_table_is_strict() {
    assert_eq!(
        errors(&format!(
            "[test]\ninjector = \"injector\"\ntarget = [\"store\"]\n{INJECTION}"
        )),
        [
            "main.toml:1:1: [test] is missing 'targets'",
            "main.toml:3:1: [test]: unknown field 'target' (help: did you mean 'targets'?)",
        ]
    );
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = \"store\"\n{INJECTION}"
        )),
        "main.toml:3:11: [test]: 'targets' expects a list, found string \"store\""
    );
    assert_eq!(
        error(&format!("test = \"injector\"\n{INJECTION}")),
        "main.toml:1:1: 'test' must be a table (help: write [test] with injector = \"NAME\" and targets = [\"NAME\", ...])"
    );
}

#[test]
fn the_test_table_is_given_once() {
    assert_eq!(
        errors_of(&[
            (
                "main.toml",
                format!(
                    "include = [\"base.toml\"]\n[test]\ninjector = \"injector\"\ntargets = [\"bridge\"]\n{INJECTION}"
                )
                .as_str()
            ),
            (
                "base.toml",
                "[test]\ninjector = \"injector\"\ntargets = [\"store\"]\n"
            ),
        ]),
        [
            "main.toml:2:2: [test] is written in both base.toml and main.toml (help: a system has one [test] table; the first is at base.toml:1:2)"
        ]
    );
}

#[test]
fn the_injector_is_a_declared_component() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injecter\"\ntargets = [\"store\"]\n{INJECTION}"
        )),
        "main.toml:2:12: [test] injector: unknown component 'injecter' (help: did you mean 'injector'?)"
    );
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"g\"\ntargets = [\"store\"]\n{INJECTION}"
        )),
        "main.toml:2:12: [test] injector: 'g' is a VM, not a component (help: a component injects faults; the component that runs 'g' is its world switcher 'ws')"
    );
}

#[test]
fn the_targets_are_not_empty() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = []\n{INJECTION}"
        )),
        "main.toml:3:11: [test] targets is empty (help: list the components 'injector' may inject faults into: targets = [\"NAME\", ...])"
    );
}

#[test]
fn a_target_is_a_declared_component() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"brigde\"]\n{INJECTION}"
        )),
        "main.toml:3:21: [test] targets: unknown component 'brigde' (help: did you mean 'bridge'?)"
    );
}

#[test]
fn a_target_is_listed_once() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"irq\", \"store\"]\n{INJECTION}"
        )),
        "main.toml:3:28: [test] targets: 'store' is listed twice (help: first listed at main.toml:3:12)"
    );
}

#[test]
fn the_injector_does_not_inject_into_itself() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"injector\"]\n{INJECTION}"
        )),
        "main.toml:3:21: [test] targets: the injector 'injector' cannot inject faults into itself (help: remove 'injector' from targets)"
    );
}

#[test]
fn a_vm_is_injected_into_through_its_world_switcher() {
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"g\"]\n{INJECTION}"
        )),
        "main.toml:3:12: [test] targets: 'g' is a VM, not a component (help: inject into its world switcher: targets = [\"ws\"])"
    );
}

#[test]
fn every_test_table_mistake_is_reported() {
    assert_eq!(
        errors(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"sotre\", \"g\", \"irq\", \"irq\", \"injector\"]\n{INJECTION}"
        )),
        [
            "main.toml:3:12: [test] targets: unknown component 'sotre' (help: did you mean 'store'?)",
            "main.toml:3:21: [test] targets: 'g' is a VM, not a component (help: inject into its world switcher: targets = [\"ws\"])",
            "main.toml:3:33: [test] targets: 'irq' is listed twice (help: first listed at main.toml:3:26)",
            "main.toml:3:40: [test] targets: the injector 'injector' cannot inject faults into itself (help: remove 'injector' from targets)",
        ]
    );
}

#[test]
fn fault_injection_is_granted_only_by_the_test_table() {
    assert_eq!(
        error(&format!(
            "{INJECTION}[components.campaign]\nprogram = \"a\"\ninject = [\"store\", \"irq\"]\n"
        )),
        "main.toml:15:1: component 'campaign': unknown field 'inject': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"campaign\" and targets = [\"store\", \"irq\"])"
    );
    assert_eq!(
        error(&format!(
            "{INJECTION}[components.x]\nprogram = \"a\"\ninject_into = \"store\"\n"
        )),
        "main.toml:15:1: component 'x': unknown field 'inject_into': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"x\" and targets = [\"store\"])"
    );
    // `injector` in a component names who injects into it.
    assert_eq!(
        error(&format!(
            "{INJECTION}[components.x]\nprogram = \"a\"\ninjector = \"injector\"\n"
        )),
        "main.toml:15:1: component 'x': unknown field 'injector': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"injector\" and targets = [\"x\"])"
    );
    assert_eq!(
        error(&format!(
            "{INJECTION}[components.x]\nprogram = \"a\"\ninjection = true\n"
        )),
        "main.toml:15:1: component 'x': unknown field 'injection': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"x\" and targets = [\"NAME\", ...])"
    );
    // The short form, and other tables.
    assert_eq!(
        error("[[component]]\nname = \"hello\"\ninject = [\"hello\"]\n"),
        "main.toml:3:1: component 'hello': unknown field 'inject': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"hello\" and targets = [\"hello\"])"
    );
    assert_eq!(
        error(&format!("[system]\ninjector = \"injector\"\n{INJECTION}")),
        "main.toml:2:1: [system]: unknown field 'injector': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"NAME\" and targets = [\"NAME\", ...])"
    );
    assert_eq!(
        error(&format!("{INJECTION}inject = [\"irq\"]\n")),
        "main.toml:13:1: VM 'g': unknown field 'inject': fault injection is granted only by a system's [test] table (help: write [test] with injector = \"NAME\" and targets = [\"NAME\", ...])"
    );
}

#[test]
fn the_targets_must_fit_the_injectors_capabilities() {
    // 30 capabilities of its own (notifications to 'store') and three targets.
    let mut text = format!(
        "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"bridge\", \"irq\"]\n{INJECTION}"
    );
    for i in 0..30 {
        text.push_str(&format!(
            "[notifications.n{i}]\nfrom = \"injector\"\nto = \"store\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:3:11: [test] targets: the injector 'injector' would hold 33 capabilities, 3 of them to inject faults; a component holds at most 32 (help: 'injector' holds 30 capabilities besides them, so it may inject into at most 2 components: list fewer targets, or inject from a component that holds fewer capabilities)"
    );
    // Two targets fit.
    let system = common::system(&text.replace(", \"irq\"]", "]"));
    assert_eq!(system.layout.capabilities[0].len(), 32);
}

#[test]
fn the_targets_must_fit_the_injectors_start_page() {
    // 16 queues (a capability and a queue end each), 13 incoming
    // notifications and the console it reads its plan from are 46
    // resources of the injector's start page; three targets make 49.
    let mut text = format!(
        "[test]\ninjector = \"injector\"\ntargets = [\"store\", \"bridge\", \"irq\"]\n{INJECTION}"
    );
    for i in 0..16 {
        text.push_str(&format!(
            "[queues.q{i}]\nfrom = \"injector\"\nto = \"store\"\nslot_size = 8\nslots = 2\n"
        ));
    }
    for i in 0..13 {
        text.push_str(&format!(
            "[notifications.n{i}]\nfrom = \"bridge\"\nto = \"injector\"\n"
        ));
    }
    assert_eq!(
        error(&text),
        "main.toml:3:11: [test] targets: the injector 'injector' would be given 49 resources, 3 of them capabilities to inject faults; its start page lists at most 48 (help: 'injector' is given 46 resources besides them, so it may inject into at most 2 components: list fewer targets, or inject from a component that is given fewer resources)"
    );
    common::system(&text.replace(", \"irq\"]", "]"));
}

#[test]
fn an_injection_capability_needs_a_name_of_its_own() {
    // A supervisor holds its children's control capabilities under their
    // names, which are also the names of injection capabilities.
    let supervised = INJECTION.replace(
        "program = \"b\"\n",
        "program = \"b\"\nsupervisor = \"injector\"\n",
    );
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"bridge\", \"store\"]\n{supervised}"
        )),
        "main.toml:3:22: [test] targets: the injector 'injector' already holds a capability named 'store' (the control capability of a component it supervises); its capability to inject faults into 'store' would have the same name (help: a component finds its capabilities by name: inject from a component that holds no other capability named 'store')"
    );
    // So does a queue's end.
    assert_eq!(
        error(&format!(
            "[test]\ninjector = \"injector\"\ntargets = [\"store\"]\n{INJECTION}\
             [queues.store]\nfrom = \"injector\"\nto = \"bridge\"\nslot_size = 8\nslots = 2\n"
        )),
        "main.toml:3:12: [test] targets: the injector 'injector' already holds a capability named 'store' (a notification capability, for a queue, a notification or an interrupt line); its capability to inject faults into 'store' would have the same name (help: a component finds its capabilities by name: inject from a component that holds no other capability named 'store')"
    );
}
