//! The `test` command: host unit tests, then every scenario in
//! `build/scenarios/`, then exactly one summary line, `N passed, N failed`,
//! as the last line of output (host tests and scenarios counted together).
//!
//! Scenarios are checked first (a malformed file fails that scenario only),
//! then what their emulators need is installed if missing
//! ([`crate::setup::emulators`]; a scenario whose emulator stays missing
//! fails), then the core and every program they use are built in one cargo
//! invocation, then they boot `--jobs` at a time (default 2: QEMU's TCG
//! keeps about one core busy), except those that time the host's clock
//! (`host_time`), which boot one by one at the end, with nothing beside
//! them to delay their console lines. Each prints one line when it ends, followed
//! by its last console lines if it failed. Nothing that goes wrong here is
//! fatal before the summary: errors count as failures. A `--filter` that
//! selects no test at all is one of them (with "did you mean" over the
//! scenario names), so a typo cannot pass as "0 passed, 0 failed". The exit
//! status is 0 only when nothing failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;

use crate::console::tail;
use crate::emulator::{Emulator, Outcome};
use crate::host_tests::{self, Tally};
use crate::run::programs_of;
use crate::scenario::{self, Scenario, judge};
use crate::workspace::{Artifacts, Workspace};

/// Where scenario files live, relative to the workspace root.
pub const SCENARIO_DIRECTORY: &str = "build/scenarios";
/// How many console lines a failed scenario shows.
const TAIL_LINES: usize = 30;

/// Options of `test`.
#[derive(Debug, clap::Args)]
pub struct TestArguments {
    /// Only host tests and scenarios whose names contain this text.
    #[arg(long, value_name = "SUBSTRING")]
    pub filter: Option<String>,
    /// Only the host unit tests.
    #[arg(long, conflicts_with = "scenarios_only")]
    pub host_only: bool,
    /// Only the scenarios.
    #[arg(long)]
    pub scenarios_only: bool,
    /// How many scenarios boot at the same time.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

/// Runs `test`.
pub fn command(arguments: TestArguments) -> ExitCode {
    let mut tally = Tally::default();
    let filter = arguments.filter.as_deref();
    match Workspace::load() {
        Err(error) => {
            println!("error: {error:#}");
            tally.failed += 1;
        }
        Ok(workspace) => {
            // Tests a filter selected (a failure to run them counts as one).
            let mut selected = 0;
            if !arguments.scenarios_only {
                let host = host_tests::run(&workspace, filter).unwrap_or_else(|error| {
                    println!("host tests ... FAIL: {error:#}");
                    Tally {
                        passed: 0,
                        failed: 1,
                    }
                });
                selected += host.passed + host.failed;
                add(&mut tally, host);
            }
            if !arguments.host_only {
                let scenarios = run_scenarios(&workspace, filter, usize::from(arguments.jobs));
                selected += scenarios.passed + scenarios.failed;
                add(&mut tally, scenarios);
                let campaigns = run_campaigns(&workspace, filter);
                selected += campaigns.passed + campaigns.failed;
                add(&mut tally, campaigns);
            }
            if let Some(filter) = filter
                && selected == 0
            {
                let names = scenario::files_in(&workspace.root.join(SCENARIO_DIRECTORY))
                    .unwrap_or_default()
                    .iter()
                    .map(|path| crate::system::file_stem(path))
                    .collect::<Vec<_>>();
                println!("error: {}", unmatched_filter(filter, &arguments, &names));
                tally.failed += 1;
            }
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why a `--filter` that selected no test is an error: what it searched,
/// and the closest scenario name when one is close (a typo such as
/// `hello-qemy` would otherwise pass as "0 passed, 0 failed").
fn unmatched_filter(filter: &str, arguments: &TestArguments, scenarios: &[String]) -> String {
    let searched = if arguments.host_only {
        "no host test"
    } else if arguments.scenarios_only {
        "no scenario"
    } else {
        "no host test and no scenario"
    };
    let mut message = format!("--filter '{filter}' matches {searched}");
    let close = (!arguments.host_only)
        .then(|| capdl::diagnostic::closest(filter, scenarios.iter().map(String::as_str)))
        .flatten();
    match close {
        Some(name) => message.push_str(&format!("; did you mean '{name}'?")),
        None if !arguments.host_only => message.push_str(&format!(
            " (scenarios are the file names in {SCENARIO_DIRECTORY}/, host tests the names cargo test lists)"
        )),
        None => message.push_str(" (host tests are the names cargo test lists)"),
    }
    message
}

fn add(total: &mut Tally, part: Tally) {
    total.passed += part.passed;
    total.failed += part.failed;
}

/// Loads, builds and boots the scenarios matching `filter`.
fn run_scenarios(workspace: &Workspace, filter: Option<&str>, jobs: usize) -> Tally {
    let mut tally = Tally::default();
    let directory = workspace.root.join(SCENARIO_DIRECTORY);
    let files: Vec<PathBuf> = match scenario::files_in(&directory) {
        Ok(files) => files,
        Err(error) => {
            println!("scenarios ... FAIL: {error:#}");
            tally.failed += 1;
            return tally;
        }
    };
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|path| filter.is_none_or(|text| crate::system::file_stem(path).contains(text)))
        .collect();
    if files.is_empty() {
        println!("scenarios: none match");
        return tally;
    }
    let programs = match workspace.programs() {
        Ok(programs) => programs,
        Err(error) => {
            println!("scenarios ... FAIL: {error:#}");
            tally.failed += files.len();
            return tally;
        }
    };
    let mut scenarios = Vec::new();
    for path in &files {
        match scenario::load(path, &programs) {
            Ok(scenario) => scenarios.push(scenario),
            Err(error) => {
                let name = crate::system::file_stem(path);
                println!("scenario {name} ... FAIL: {error:#}");
                tally.failed += 1;
            }
        }
    }
    if scenarios.is_empty() {
        return tally;
    }
    if let Err(error) = crate::setup::emulators(&emulators_of(&scenarios)) {
        // Scenarios whose emulator is there still run.
        println!("scenarios: {error:#}");
        let (ready, unready): (Vec<Scenario>, Vec<Scenario>) = scenarios
            .into_iter()
            .partition(|scenario| crate::setup::is_ready(scenario.emulator));
        for scenario in &unready {
            println!(
                "scenario {} ... FAIL: what {} runs need is missing (see above)",
                scenario.name, scenario.emulator
            );
        }
        tally.failed += unready.len();
        scenarios = ready;
        if scenarios.is_empty() {
            return tally;
        }
    }
    // Start the slow Bochs boots first so that QEMU runs fill the other job.
    scenarios.sort_by_key(|scenario| scenario.emulator != Emulator::Bochs);
    let needed = programs_of(
        &scenarios
            .iter()
            .filter_map(|scenario| scenario.system())
            .flat_map(|system| system.programs.iter().cloned())
            .collect::<Vec<_>>(),
    );
    if needed.is_empty() {
        println!("scenarios: building the core and the test VMs");
    } else {
        println!(
            "scenarios: building the core, the test VMs and {}",
            needed.join(", ")
        );
    }
    let artifacts = match workspace.build_target(&needed) {
        Ok(artifacts) => artifacts,
        Err(error) => {
            println!("scenarios: {error:#}");
            for scenario in &scenarios {
                println!(
                    "scenario {} ... FAIL: the core or a component did not build",
                    scenario.name
                );
            }
            tally.failed += scenarios.len();
            return tally;
        }
    };
    // Scenarios that time the host's clock (host_time), or ask to, run
    // alone, after the others: a second emulator on a two-core machine can
    // delay one's console lines by more than their tolerance, or stall it
    // for time its guests are charged.
    let (alone, shared): (Vec<&Scenario>, Vec<&Scenario>) = scenarios
        .iter()
        .partition(|scenario| !scenario.host_time.is_empty() || scenario.alone);
    println!(
        "scenarios: running {} ({} at a time), then {} that need the host to themselves, alone",
        shared.len(),
        jobs.min(shared.len()).max(1),
        alone.len()
    );
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(shared.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(scenario) = shared.get(index) else {
                        break;
                    };
                    let passed = run_one(workspace, &artifacts, scenario);
                    let mut results = results.lock().unwrap_or_else(|poison| poison.into_inner());
                    if passed {
                        results.passed += 1;
                    } else {
                        results.failed += 1;
                    }
                }
            });
        }
    });
    add(
        &mut tally,
        results
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner()),
    );
    for scenario in alone {
        if run_one(workspace, &artifacts, scenario) {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
    }
    tally
}

/// The emulators the scenarios boot in, each once: what the set-up must
/// install (guest-image scenarios boot in QEMU too).
pub fn emulators_of(scenarios: &[Scenario]) -> Vec<Emulator> {
    let mut emulators = Vec::new();
    for scenario in scenarios {
        if !emulators.contains(&scenario.emulator) {
            emulators.push(scenario.emulator);
        }
    }
    emulators
}

/// Runs the fault-injection campaigns of `build/campaigns/` one by one,
/// after the scenarios (each keeps the host busy): one line each,
/// `campaign NAME ... PASS (...)` or `FAIL: <why>` with its report.
fn run_campaigns(workspace: &Workspace, filter: Option<&str>) -> Tally {
    let mut tally = Tally::default();
    let directory = workspace.root.join(crate::campaign::TEST_DIRECTORY);
    let files = match scenario::files_in(&directory) {
        Ok(files) => files,
        Err(error) => {
            println!("campaigns ... FAIL: {error:#}");
            tally.failed += 1;
            return tally;
        }
    };
    for path in files
        .iter()
        .filter(|path| filter.is_none_or(|text| crate::system::file_stem(path).contains(text)))
    {
        let name = crate::system::file_stem(path);
        let started = std::time::Instant::now();
        let result = crate::campaign::run_test(workspace, path);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(summary) => {
                println!("campaign {name} ... PASS ({summary}; {seconds:.1} s)");
                tally.passed += 1;
            }
            Err(why) => {
                println!("campaign {name} ... FAIL: {why} ({seconds:.1} s)");
                tally.failed += 1;
            }
        }
    }
    tally
}

/// Boots one scenario and prints its report; returns whether it passed.
fn run_one(workspace: &Workspace, artifacts: &Artifacts, scenario: &Scenario) -> bool {
    let mut result: Result<Outcome> = scenario::boot(workspace, artifacts, scenario, &mut |_| {});
    // QEMU aborting on its own assertion (SIGABRT: "tcg fatal error",
    // which some random instruction bytes of the hostile guest hit in its
    // translator) is the emulator's bug, not a verdict on the system: the
    // scenario boots once more, and says so.
    let mut retried = None;
    if let Ok(outcome) = &result
        && let crate::emulator::Ending::EmulatorError(why) = &outcome.ending
        && why.contains("(signal 6)")
    {
        retried = Some(why.clone());
        result = scenario::boot(workspace, artifacts, scenario, &mut |_| {});
    }
    let (verdict, seconds, lines) = match &result {
        Ok(outcome) => (
            judge(scenario, outcome),
            outcome.elapsed.as_secs_f64(),
            &outcome.lines[..],
        ),
        Err(error) => (Err(format!("{error:#}")), 0.0, &[][..]),
    };
    // One print call per report so parallel scenarios never interleave.
    let report = match &verdict {
        Ok(()) => match &retried {
            None => format!("scenario {} ... PASS ({seconds:.1} s)\n", scenario.name),
            Some(why) => format!(
                "scenario {} ... PASS ({seconds:.1} s; booted again after the emulator failed on its own: {why})\n",
                scenario.name
            ),
        },
        Err(reason) => {
            let mut text = format!(
                "scenario {} ... FAIL: {reason} ({seconds:.1} s)\n    what it checks: {}\n",
                scenario.name, scenario.description
            );
            if !lines.is_empty() {
                text.push_str(&format!(
                    "    last {} console lines:\n",
                    tail(lines, TAIL_LINES).len()
                ));
                for line in tail(lines, TAIL_LINES) {
                    text.push_str(&format!("    | {line}\n"));
                }
            }
            text
        }
    };
    print!("{report}");
    verdict.is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::console::VerdictKind;

    fn scenario(name: &str, emulator: Emulator) -> Scenario {
        Scenario {
            name: name.into(),
            path: PathBuf::from(format!("build/scenarios/{name}.toml")),
            description: String::new(),
            emulator,
            timeout: Duration::from_secs(1),
            exit: VerdictKind::Success,
            icount: false,
            command_line: String::new(),
            expect: Vec::new(),
            expect_anywhere: Vec::new(),
            forbid: Vec::new(),
            bounds: Vec::new(),
            host_time: Vec::new(),
            alone: false,
            export: Vec::new(),
            input: crate::emulator::ConsoleFeed::Nothing,
            boots: crate::scenario::Boots::Guest(crate::scenario::NativeGuest {
                image: "hello".into(),
                entry: crate::qemu::GuestEntry::Pvh,
                disk_bytes: None,
            }),
        }
    }

    #[test]
    fn a_filter_that_selects_nothing_names_what_it_searched_and_the_closest_scenario() {
        let names = ["hello-qemu".to_string(), "hello-bochs".to_string()];
        let arguments = |host_only, scenarios_only| TestArguments {
            filter: None,
            host_only,
            scenarios_only,
            jobs: 2,
        };
        assert_eq!(
            unmatched_filter("hello-qemy", &arguments(false, false), &names),
            "--filter 'hello-qemy' matches no host test and no scenario; did you mean 'hello-qemu'?"
        );
        assert_eq!(
            unmatched_filter("hello-qemy", &arguments(false, true), &names),
            "--filter 'hello-qemy' matches no scenario; did you mean 'hello-qemu'?"
        );
        let far = unmatched_filter("zzz", &arguments(false, false), &names);
        assert!(far.ends_with("(scenarios are the file names in build/scenarios/, host tests the names cargo test lists)"), "{far}");
        let host = unmatched_filter("hello-qemy", &arguments(true, false), &names);
        assert_eq!(
            host,
            "--filter 'hello-qemy' matches no host test (host tests are the names cargo test lists)"
        );
    }

    #[test]
    fn the_selected_scenarios_decide_which_emulators_are_set_up() {
        let qemu = scenario("hello-qemu", Emulator::Qemu);
        let bochs = scenario("hello-bochs", Emulator::Bochs);
        assert_eq!(emulators_of(&[]), []);
        assert_eq!(
            emulators_of(&[qemu.clone(), qemu.clone()]),
            [Emulator::Qemu]
        );
        assert_eq!(
            emulators_of(&[bochs.clone(), qemu, bochs]),
            [Emulator::Bochs, Emulator::Qemu]
        );
    }
}
