//! Scenario tests: a system image plus what its console must and must not
//! say, the verdict it must reach, and how long it may take.
//!
//! A scenario file (`build/scenarios/<name>.toml`; benchmarks in
//! `build/benchmarks/` use the same format) is strict TOML:
//!
//! ```toml
//! description = "..."
//! boot = "qemu"            # or "bochs"
//! timeout = 60             # seconds
//! exit = "success"         # expected verdict: "success" or "failure"
//! icount = false           # QEMU -icount shift=0
//! cmdline = "selftest=..."  # the core's boot command line (checked by
//!                           # crate::command_line::check)
//! expect = ["...", "..."]  # substrings that must appear, in this order
//! expect_anywhere = [...]   # substrings that must each appear, in any order
//! forbid = ["..."]         # substrings that must not appear anywhere
//! bounds = [{ after = "...", at_most = 2000 }]
//!                          # the number right after `after` in the first
//!                          # line with it (the last with `last = true`)
//!                          # must be at most `at_most` and at least
//!                          # `at_least` (either or both)
//! host_time = [{ from = "...", to = "...", seconds = 1.0, within = 0.05 }]
//!                          # the host time between the first line with
//!                          # `from` and the next with `to`: `seconds`,
//!                          # give or take the fraction `within`; without
//!                          # `seconds`, the guest's own clock: each of the
//!                          # two lines ends with the guest's time in
//!                          # seconds, and the host's interval must match
//!                          # the guest's (needs a run without -icount)
//! alone = true             # runs alone, after the others, as host_time
//!                          # scenarios do: its figures (CPU shares over a
//!                          # second) hold only when the emulator has the
//!                          # host to itself (a stalled emulator is time
//!                          # charged to whatever ran)
//! export = [{ disk = "disk0", sha256_after = "..." }]
//!                          # after the run, the virtual disk `disk` is
//!                          # exported from the block store's image (the
//!                          # `[machine]` disk holding it) as `disk export`
//!                          # does, and its SHA-256 must be the 64 hex
//!                          # digits that follow `sha256_after` in the
//!                          # last console line with that text; or, with
//!                          # `same_as = "file"` instead, it must equal
//!                          # that host file (relative to the scenario)
//! input = [{ after = "...", send = "...\n" }]
//!                          # typed into the system console (QEMU's serial
//!                          # input) once a line with `after` is seen, in
//!                          # order; a VM reads it with console_input = true
//! [[component]]            # as in system files (see crate::system)
//! ```
//!
//! The system is a `[[component]]` list, which capdl reads from the
//! scenario file itself (skipping the keys above, [`HOST_KEYS`]), or a
//! system file named by `system = "..."`. Instead of a system, a QEMU
//! scenario may boot one test VM image directly, without the core:
//! `guest = "cpuid"` boots `test-vms/cpuid` (through its PVH note, or with
//! `guest_entry = "real"` through its real-mode entry; with
//! `guest_disk_mib = N` QEMU gives it a fresh N MiB virtio-blk-pci disk;
//! see [`crate::qemu::run_guest`]). Its verdict is its exit status: "success"
//! when it wrote 0 to the status port, "failure" for any other status or a
//! reset (triple fault).
//!
//! [`judge`] decides pass or fail from an [`Outcome`]: it ended within the
//! timeout, no forbidden text appeared, every expectation appeared in
//! order, and the verdict matches. Called by the `test` and `bench`
//! commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use capdl::diagnostic::closest;
use microvisor_abi::image::{NameKind, is_valid_name};
use serde::Deserialize;
use toml::Spanned;

use crate::console::{VerdictKind, first_forbidden, first_unmet};
use crate::emulator::{ConsoleFeed, Emulator, Ending, Outcome, Send};
use crate::qemu::{GuestEntry, GuestRequest, run_guest};
use crate::run::{BootOptions, boot_system};
use crate::system::{Source, System, file_stem};
use crate::workspace::{Artifacts, TEST_VMS, Workspace};

/// The longest timeout a scenario may ask for.
pub const TIMEOUT_MAX: u64 = 3600;

/// The top-level keys of a scenario file that are not its system's: capdl
/// skips them when it reads the file's `[[component]]` list.
pub const HOST_KEYS: [&str; 18] = [
    "description",
    "boot",
    "timeout",
    "exit",
    "icount",
    "cmdline",
    "system",
    "guest",
    "guest_entry",
    "guest_disk_mib",
    "expect",
    "expect_anywhere",
    "forbid",
    "bounds",
    "host_time",
    "alone",
    "export",
    "input",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    description: String,
    #[serde(default = "default_boot")]
    boot: Emulator,
    timeout: Spanned<u64>,
    exit: VerdictKind,
    icount: Option<Spanned<bool>>,
    /// The core's boot command line.
    cmdline: Option<Spanned<String>>,
    /// A capdl system description to boot, relative to this file (instead
    /// of a `[[component]]` list).
    system: Option<Spanned<String>>,
    /// A test VM image to boot without the core (instead of a system).
    guest: Option<Spanned<String>>,
    /// How that image is entered.
    guest_entry: Option<Spanned<GuestEntry>>,
    /// A fresh zeroed disk of this many MiB given to that image as QEMU's
    /// own virtio-blk PCI function.
    guest_disk_mib: Option<Spanned<u64>>,
    #[serde(default)]
    expect: Vec<String>,
    /// Texts that must each appear somewhere, in any order (lines of VMs
    /// that run at once interleave as the scheduler has it).
    #[serde(default)]
    expect_anywhere: Vec<String>,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    bounds: Vec<Bound>,
    #[serde(default)]
    host_time: Vec<HostTime>,
    /// Runs alone, after the others.
    #[serde(default)]
    alone: bool,
    /// Virtual disks checked against the guest's own reading of them.
    export: Option<Spanned<Vec<Export>>>,
    /// What is typed into the console, and when.
    input: Option<Spanned<Vec<Send>>>,
    /// The `[[component]]` list, read and checked by capdl.
    component: Option<Spanned<toml::Value>>,
}

/// A number a console line must show within bounds (`bounds`): a figure
/// the system measures and prints, judged by the test rather than by the
/// system itself.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// The text the number follows, in the first line that has it (the
    /// last with `last = true`).
    pub after: String,
    pub at_least: Option<f64>,
    pub at_most: Option<f64>,
    #[serde(default)]
    pub last: bool,
}

/// A host-time interval between two console lines (`host_time`): what a
/// guest's own clock cannot show, since it only measures itself.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostTime {
    /// Text of the line that starts the interval (its first occurrence).
    pub from: String,
    /// Text of the first later line that ends it.
    pub to: String,
    /// The expected interval; `None`: the difference of the guest times
    /// the two lines end with.
    pub seconds: Option<f64>,
    /// The tolerance, a fraction of the expected interval.
    pub within: f64,
}

/// A virtual disk exported after the run (`export`) and compared with
/// what the guest read of it, or with a host file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// The virtual disk's name in the block store's image.
    pub disk: String,
    /// The text in a console line that the guest's SHA-256 of the whole
    /// disk follows.
    pub sha256_after: Option<String>,
    /// A host file the export must equal byte for byte (relative to the
    /// scenario file; resolved when the scenario is read).
    pub same_as: Option<PathBuf>,
}

/// The time in seconds a console line ends with (its last word).
fn ends_with_seconds(line: &str) -> Option<f64> {
    let seconds: f64 = line.split_whitespace().last()?.parse().ok()?;
    seconds.is_finite().then_some(seconds)
}

fn default_boot() -> Emulator {
    Emulator::Qemu
}

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file stem: how the scenario is named in reports and filters.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub emulator: Emulator,
    pub timeout: Duration,
    pub exit: VerdictKind,
    pub icount: bool,
    /// The core's boot command line.
    pub command_line: String,
    pub expect: Vec<String>,
    /// Texts that must each appear, in any order.
    pub expect_anywhere: Vec<String>,
    pub forbid: Vec<String>,
    pub bounds: Vec<Bound>,
    pub host_time: Vec<HostTime>,
    /// Runs alone, after the others (as do scenarios with `host_time`).
    pub alone: bool,
    pub export: Vec<Export>,
    /// What the console receives.
    pub input: ConsoleFeed,
    pub boots: Boots,
}

/// What a scenario boots.
#[derive(Clone, Debug)]
pub enum Boots {
    /// A system, with the core.
    System(System),
    /// A test VM image, without the core.
    Guest(NativeGuest),
}

impl Scenario {
    /// The system it boots, if it boots one.
    pub fn system(&self) -> Option<&System> {
        match &self.boots {
            Boots::System(system) => Some(system),
            Boots::Guest(_) => None,
        }
    }
}

/// A test VM image a scenario boots directly in QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeGuest {
    /// The image name: `cpuid` for `test-vms/cpuid`.
    pub image: String,
    pub entry: GuestEntry,
    /// Bytes of a fresh disk QEMU gives it (virtio-blk-pci), if any.
    pub disk_bytes: Option<u64>,
}

/// Whether `name` can name a test VM image: a boot-image name short enough
/// that its entry `vm-<name>` is one too.
fn is_valid_guest_name(name: &str) -> bool {
    is_valid_name(name, NameKind::Plain) && name.len() <= capdl::MAX_IMAGE_NAME
}

/// Reads and checks a scenario file.
pub fn load(path: &Path, programs: &capdl::ProgramSet) -> Result<Scenario> {
    let source = Source::read(path)?;
    parse(&source, path, programs)
}

/// Parses and checks scenario text.
pub fn parse(source: &Source, path: &Path, programs: &capdl::ProgramSet) -> Result<Scenario> {
    let file: ScenarioFile = source.parse()?;
    let timeout = *file.timeout.get_ref();
    if timeout == 0 || timeout > TIMEOUT_MAX {
        return Err(source
            .error_at(
                file.timeout.span(),
                format!("timeout must be 1 to {TIMEOUT_MAX} seconds, not {timeout}"),
            )
            .into());
    }
    let icount = file.icount.as_ref().is_some_and(|icount| *icount.get_ref());
    if let Some(span) = file.icount.as_ref().map(Spanned::span)
        && icount
        && file.boot == Emulator::Bochs
    {
        return Err(source
            .error_at(span, "icount needs QEMU; a Bochs scenario cannot use it")
            .into());
    }
    if let Some(span) = file.icount.as_ref().map(Spanned::span)
        && icount
        && !file.host_time.is_empty()
    {
        return Err(source
            .error_at(
                span,
                "host_time measures the host's clock, from which -icount detaches the guest's; \
                 a scenario cannot have both",
            )
            .into());
    }
    let input = match &file.input {
        Some(steps) if file.guest.is_some() || file.boot != Emulator::Qemu => {
            return Err(source
                .error_at(
                    steps.span(),
                    "input goes to the core's console: it needs a system booted in QEMU",
                )
                .into());
        }
        Some(steps) if steps.get_ref().is_empty() => {
            return Err(source
                .error_at(steps.span(), "input lists no steps; leave it out instead")
                .into());
        }
        Some(steps) => ConsoleFeed::Script(steps.get_ref().clone()),
        None => ConsoleFeed::Nothing,
    };
    if let (None, Some(disk)) = (&file.guest, &file.guest_disk_mib) {
        return Err(source
            .error_at(
                disk.span(),
                "guest_disk_mib applies only to a scenario that boots a guest image (guest = \"...\")",
            )
            .into());
    }
    if let Some(disk) = &file.guest_disk_mib
        && !(1..=1024).contains(disk.get_ref())
    {
        return Err(source
            .error_at(disk.span(), "guest_disk_mib is from 1 to 1024")
            .into());
    }
    if let (Some(_), Some(export)) = (&file.guest, &file.export) {
        return Err(source
            .error_at(
                export.span(),
                "export reads the block store's image: it needs a system, not a guest image",
            )
            .into());
    }
    if let Some(export) = &file.export
        && let Some(wrong) = export.get_ref().iter().find(|export| {
            export.disk.is_empty()
                || export.sha256_after.as_deref() == Some("")
                || export.sha256_after.is_some() == export.same_as.is_some()
        })
    {
        return Err(source
            .error_at(
                export.span(),
                format!(
                    "export of '{}': name the disk, and one of sha256_after (non-empty) or same_as",
                    wrong.disk
                ),
            )
            .into());
    }
    if let (None, Some(entry)) = (&file.guest, &file.guest_entry) {
        return Err(source
            .error_at(
                entry.span(),
                "guest_entry applies only to a scenario that boots a guest image (guest = \"...\")",
            )
            .into());
    }
    if let Some(guest) = &file.guest {
        let name = guest.get_ref();
        let conflict = if file.system.is_some() {
            Some("a system file")
        } else if file.component.is_some() {
            Some("a [[component]] list")
        } else if file
            .cmdline
            .as_ref()
            .is_some_and(|line| !line.get_ref().is_empty())
        {
            Some("a core command line (cmdline)")
        } else if file.boot != Emulator::Qemu {
            Some("Bochs (guest images boot in QEMU)")
        } else {
            None
        };
        if let Some(conflict) = conflict {
            return Err(source
                .error_at(
                    guest.span(),
                    format!(
                        "a scenario that boots guest image '{name}' cannot also have {conflict}"
                    ),
                )
                .into());
        }
        if !is_valid_guest_name(name) {
            return Err(source.error_at(
                guest.span(),
                format!(
                    "guest image name '{name}' is invalid: use 1-29 characters of a-z, 0-9, '-' \
                     and '_' (the directory under {TEST_VMS}/)"
                ),
            ).into());
        }
        return Ok(Scenario {
            name: file_stem(path),
            path: path.to_path_buf(),
            description: file.description,
            emulator: file.boot,
            timeout: Duration::from_secs(timeout),
            exit: file.exit,
            icount,
            command_line: String::new(),
            expect: file.expect,
            expect_anywhere: file.expect_anywhere,
            forbid: file.forbid,
            bounds: file.bounds,
            host_time: file.host_time,
            alone: file.alone,
            export: Vec::new(),
            input,
            boots: Boots::Guest(NativeGuest {
                image: name.clone(),
                entry: file
                    .guest_entry
                    .map(|entry| *entry.get_ref())
                    .unwrap_or_default(),
                disk_bytes: file.guest_disk_mib.map(|mib| *mib.get_ref() << 20),
            }),
        });
    }
    let command_line = match file.cmdline {
        Some(line) => {
            crate::command_line::check(line.get_ref())
                .map_err(|error| source.error_at(line.span(), format!("cmdline: {error}")))?;
            line.into_inner()
        }
        None => String::new(),
    };
    let system = match (&file.system, &file.component) {
        (Some(system), Some(_)) => {
            return Err(source
                .error_at(
                    system.span(),
                    "a scenario names either a system file or a [[component]] list, not both",
                )
                .into());
        }
        (Some(system), None) => {
            let described = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(system.get_ref());
            crate::system::load(&described, programs).map_err(|error| {
                source.error_at(
                    system.span(),
                    format!("the system file it names has errors:\n{error:#}"),
                )
            })?
        }
        (None, Some(_)) => crate::system::load_embedded(source, path, &HOST_KEYS, programs)?,
        (None, None) => {
            return Err(source
                .error(
                    "boots nothing: name a system file (system = \"...\"), list components \
                     ([[component]]) or name a guest image (guest = \"...\")",
                )
                .into());
        }
    };
    Ok(Scenario {
        name: file_stem(path),
        path: path.to_path_buf(),
        description: file.description,
        emulator: file.boot,
        timeout: Duration::from_secs(timeout),
        exit: file.exit,
        icount,
        command_line,
        expect: file.expect,
        expect_anywhere: file.expect_anywhere,
        forbid: file.forbid,
        bounds: file.bounds,
        host_time: file.host_time,
        alone: file.alone,
        export: file
            .export
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .map(|export| Export {
                same_as: export
                    .same_as
                    .map(|file| path.parent().unwrap_or(Path::new(".")).join(file)),
                ..export
            })
            .collect(),
        input,
        boots: Boots::System(system),
    })
}

/// Boots a scenario: packs and boots its system, or boots its guest image
/// without the core. Emulator files go to `images/scenario-<name>.*`.
pub fn boot(
    workspace: &Workspace,
    artifacts: &Artifacts,
    scenario: &Scenario,
    sink: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let stem = format!("scenario-{}", scenario.name);
    let guest = match &scenario.boots {
        Boots::System(system) => {
            let options = BootOptions {
                emulator: scenario.emulator,
                timeout: Some(scenario.timeout),
                icount: scenario.icount,
                gdb: false,
                command_line: scenario.command_line.clone(),
                input: scenario.input.clone(),
            };
            return boot_system(workspace, artifacts, system, &stem, options, sink);
        }
        Boots::Guest(guest) => guest,
    };
    let Some(image) = artifacts.guests.get(&guest.image) else {
        anyhow::bail!("{}", unknown_guest(&guest.image, artifacts));
    };
    // QEMU's `-kernel` takes a multiboot kernel only as ELF32.
    let image = match (guest.entry, artifacts.multiboot.get(&guest.image)) {
        (GuestEntry::Pvh, Some(copy)) => copy,
        _ => image,
    };
    let request = GuestRequest {
        image: image.clone(),
        entry: guest.entry,
        work_directory: workspace.images_directory().join(format!("{stem}.guest")),
        timeout: Some(scenario.timeout),
        icount: scenario.icount,
        disk_bytes: guest.disk_bytes,
    };
    run_guest(&request, sink)
}

/// "no test VM 'x' was built", with a suggestion and the ones that were.
fn unknown_guest(image: &str, artifacts: &Artifacts) -> String {
    let built: Vec<String> = artifacts.guests.keys().cloned().collect();
    let mut message = format!("unknown guest image '{image}': no {TEST_VMS}/{image}/ was built");
    if let Some(close) = closest(image, built.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean '{close}'?"));
    }
    if built.is_empty() {
        message.push_str(" (there are no test VMs)");
    } else {
        message.push_str(&format!(" (test VMs: {})", built.join(", ")));
    }
    message
}

/// The `*.toml` files of a directory, sorted by name.
pub fn files_in(directory: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("could not list {}", directory.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("could not list {}", directory.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Checks one `bounds` entry: the number right after `bound.after` in the
/// first line that has it (digits, with a decimal point, or a sign,
/// allowed).
fn bound_met(bound: &Bound, lines: &[String]) -> Result<(), String> {
    let found = |line: &'_ String| {
        line.find(bound.after.as_str())
            .map(|at| (line.clone(), line[at + bound.after.len()..].to_string()))
    };
    let hit = if bound.last {
        lines.iter().rev().find_map(found)
    } else {
        lines.iter().find_map(found)
    };
    let Some((line, rest)) = hit else {
        return Err(format!("bounds: no line with \"{}\"", bound.after));
    };
    let number: String = rest
        .chars()
        .enumerate()
        .take_while(|&(at, c)| c.is_ascii_digit() || c == '.' || (at == 0 && c == '-'))
        .map(|(_, c)| c)
        .collect();
    let Ok(value) = number.trim_end_matches('.').parse::<f64>() else {
        return Err(format!(
            "bounds: no number after \"{}\" in \"{line}\"",
            bound.after
        ));
    };
    if bound.at_least.is_some_and(|least| value < least)
        || bound.at_most.is_some_and(|most| value > most)
    {
        return Err(format!(
            "bounds: {value} after \"{}\" is outside {}..={}",
            bound.after,
            bound.at_least.map_or("".into(), |least| least.to_string()),
            bound.at_most.map_or("".into(), |most| most.to_string())
        ));
    }
    Ok(())
}

/// Checks one `host_time` interval against the lines' arrival times.
fn host_time_met(interval: &HostTime, outcome: &Outcome) -> Result<(), String> {
    let find = |text: &str, after: usize| {
        outcome.lines[after..]
            .iter()
            .position(|line| line.contains(text))
            .map(|index| index + after)
    };
    let Some(from) = find(&interval.from, 0) else {
        return Err(format!("host time: line \"{}\" not seen", interval.from));
    };
    let Some(to) = find(&interval.to, from + 1) else {
        return Err(format!(
            "host time: no line \"{}\" after \"{}\"",
            interval.to, interval.from
        ));
    };
    let (Some(start), Some(end)) = (outcome.arrivals.get(from), outcome.arrivals.get(to)) else {
        return Err("host time: the run kept no arrival times".to_string());
    };
    let took = end.saturating_sub(*start).as_secs_f64();
    let (expected, source) = match interval.seconds {
        Some(seconds) => (seconds, ""),
        None => {
            let guest = |index: usize| {
                ends_with_seconds(&outcome.lines[index]).ok_or_else(|| {
                    format!(
                        "host time: line {} does not end with the guest's time in seconds: \"{}\"",
                        index + 1,
                        outcome.lines[index]
                    )
                })
            };
            (guest(to)? - guest(from)?, " (the guest's clock)")
        }
    };
    if expected <= 0.0 || (took - expected).abs() > expected * interval.within {
        return Err(format!(
            "host time from \"{}\" to \"{}\": {took:.3} s, expected {expected} s{source} within {}%",
            interval.from,
            interval.to,
            interval.within * 100.0
        ));
    }
    Ok(())
}

/// Judges a finished run: `Ok` if the scenario passed, else the reason in
/// one line.
pub fn judge(scenario: &Scenario, outcome: &Outcome) -> Result<(), String> {
    if let Some((text, line)) = first_forbidden(&scenario.forbid, &outcome.lines) {
        return Err(format!(
            "forbidden text seen: \"{}\" in line {}",
            scenario.forbid[text],
            line + 1
        ));
    }
    let unmet = first_unmet(&scenario.expect, &outcome.lines);
    let missing = scenario.expect_anywhere.iter().find(|text| {
        !outcome
            .lines
            .iter()
            .any(|line| line.contains(text.as_str()))
    });
    let verdict = match &outcome.ending {
        Ending::Timeout(limit) => {
            let mut message = format!("timed out after {} s", limit.as_secs());
            if let Some(index) = unmet {
                message.push_str(&format!(
                    "; expected line not seen: \"{}\"",
                    scenario.expect[index]
                ));
            }
            return Err(message);
        }
        Ending::EmulatorError(message) => return Err(message.clone()),
        Ending::Halted(verdict) => verdict,
    };
    if let Some(index) = unmet {
        return Err(format!(
            "expected line not seen: \"{}\"",
            scenario.expect[index]
        ));
    }
    if let Some(text) = missing {
        return Err(format!("expected line not seen anywhere: \"{text}\""));
    }
    for bound in &scenario.bounds {
        bound_met(bound, &outcome.lines)?;
    }
    for interval in &scenario.host_time {
        host_time_met(interval, outcome)?;
    }
    if verdict.kind() != scenario.exit {
        return Err(format!(
            "the system halted with {verdict}, expected {}",
            scenario.exit
        ));
    }
    for export in &scenario.export {
        export_met(export, outcome)?;
    }
    Ok(())
}

/// Exports `export.disk` from the `[machine]` disk image that holds it
/// (through the same engine calls as `disk export`, to a file next to the
/// image) and compares its SHA-256 with the guest's.
fn export_met(export: &Export, outcome: &Outcome) -> Result<(), String> {
    let (expected, whose) = match (&export.sha256_after, &export.same_as) {
        (Some(after), _) => (guest_sha256(export, after, outcome)?, "the guest read"),
        (None, Some(file)) => {
            let bytes = std::fs::read(file).map_err(|error| {
                format!(
                    "export of '{}': reading {}: {error}",
                    export.disk,
                    file.display()
                )
            })?;
            (sha256_hex(&bytes), "the file it must equal has")
        }
        (None, None) => {
            return Err(format!(
                "export of '{}': nothing to compare with",
                export.disk
            ));
        }
    };
    let mut searched = Vec::new();
    for image in &outcome.disks {
        let Ok(mut store) = vmkfs::host::mount_image(std::slice::from_ref(image), false) else {
            searched.push(format!("{} (not a VMKFS image)", image.display()));
            continue;
        };
        if store.stat(&export.disk).is_err() {
            searched.push(format!("{} (no such disk)", image.display()));
            continue;
        }
        let target = image.with_extension(format!("{}.export", export.disk));
        vmkfs::host::export_file(&mut store, &export.disk, &target).map_err(|error| {
            format!(
                "export of '{}' from {}: {error}",
                export.disk,
                image.display()
            )
        })?;
        let bytes = std::fs::read(&target)
            .map_err(|error| format!("reading {}: {error}", target.display()))?;
        let host = sha256_hex(&bytes);
        if host != expected {
            return Err(format!(
                "export of '{}' ({} bytes) has SHA-256 {host}; {whose} {expected}",
                export.disk,
                bytes.len()
            ));
        }
        return Ok(());
    }
    Err(format!(
        "export of '{}': no machine disk holds it (searched: {})",
        export.disk,
        if searched.is_empty() {
            "none; the system has no [machine] disks".to_string()
        } else {
            searched.join(", ")
        }
    ))
}

/// The SHA-256 (64 hex digits) that follows `after` in the last console
/// line with it.
fn guest_sha256(export: &Export, after: &str, outcome: &Outcome) -> Result<String, String> {
    outcome
        .lines
        .iter()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once(after)?;
            let digest = rest.get(..64)?;
            digest
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit())
                .then(|| digest.to_ascii_lowercase())
        })
        .ok_or_else(|| {
            format!(
                "export of '{}': no console line with \"{after}\" followed by a SHA-256",
                export.disk
            )
        })
}

/// The SHA-256 of `bytes` in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Verdict;

    fn programs() -> capdl::ProgramSet {
        capdl::ProgramSet::new("components/", ["crasher", "hello"])
    }

    fn parse_text(text: &str) -> Result<Scenario> {
        let source = Source {
            file: "build/scenarios/sample.toml".into(),
            text: text.into(),
        };
        parse(
            &source,
            Path::new("build/scenarios/sample.toml"),
            &programs(),
        )
    }

    const SAMPLE: &str = r#"
description = "hello and a crash"
timeout = 20
exit = "failure"
expect = ["microvisor ", "[hello] done"]
forbid = ["panic"]

[[component]]
name = "crasher"
args = "mode=panic"

[[component]]
name = "hello"
"#;

    fn outcome(ending: Ending, lines: &[&str]) -> Outcome {
        Outcome {
            ending,
            lines: lines.iter().map(|line| line.to_string()).collect(),
            arrivals: (0..lines.len() as u64).map(Duration::from_secs).collect(),
            elapsed: Duration::from_secs(1),
            disks: Vec::new(),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let scenario = parse_text(SAMPLE).unwrap();
        assert_eq!(scenario.name, "sample");
        assert_eq!(scenario.emulator, Emulator::Qemu);
        assert_eq!(scenario.timeout, Duration::from_secs(20));
        assert_eq!(scenario.exit, VerdictKind::Failure);
        assert!(!scenario.icount);
        let system = scenario.system().unwrap();
        assert_eq!(system.components, 2);
        assert!(
            system
                .cdl
                .contains("crasher = component (index: 0, program: crasher, args: \"mode=panic\""),
            "{}",
            system.cdl
        );
    }

    #[test]
    fn every_scenario_key_but_the_list_is_skipped_by_capdl() {
        let text = SAMPLE.replace(
            "timeout = 20",
            "timeout = 20\nboot = \"bochs\"\nicount = false\ncmdline = \"x\"",
        );
        assert_eq!(parse_text(&text).unwrap().system().unwrap().components, 2);
    }

    #[test]
    fn a_scenario_boots_something() {
        let text = SAMPLE[..SAMPLE.find("[[component]]").unwrap()].to_string();
        assert_eq!(
            parse_text(&text).unwrap_err().to_string(),
            "build/scenarios/sample.toml: boots nothing: name a system file (system = \"...\"), \
             list components ([[component]]) or name a guest image (guest = \"...\")"
        );
    }

    #[test]
    fn errors_are_located() {
        let text = SAMPLE.replace("timeout = 20", "timeout = 0");
        assert_eq!(
            parse_text(&text).unwrap_err().to_string(),
            "build/scenarios/sample.toml:3:11: timeout must be 1 to 3600 seconds, not 0"
        );
        let text = SAMPLE.replace("exit = \"failure\"", "exit = \"failed\"");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:4:8: unknown variant `failed`"),
            "{message}"
        );
        let text = SAMPLE.replace("forbid", "forbidden");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:6:1: unknown field `forbidden`"),
            "{message}"
        );
        let text = SAMPLE.replace("timeout = 20\n", "");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(message.contains("missing field `timeout`"), "{message}");
        let text = SAMPLE.replace(
            "timeout = 20",
            "timeout = 20\nboot = \"bochs\"\nicount = true",
        );
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:5:10: icount needs QEMU"),
            "{message}"
        );
        let text = SAMPLE.replace("name = \"hello\"", "name = \"hello\"\nprogram = \"hellp\"");
        let message = parse_text(&text).unwrap_err().to_string();
        assert_eq!(
            message,
            "build/scenarios/sample.toml:14:11: component 'hello': no program 'hellp' in \
             components/system/ or components/test/\n  = help: did you mean 'hello'?"
        );
    }

    #[test]
    fn command_lines_are_checked_where_they_stand() {
        let text = SAMPLE.replace(
            "timeout = 20",
            "timeout = 20\ncmdline = \"selftest=core-fault\"",
        );
        assert_eq!(
            parse_text(&text).unwrap().command_line,
            "selftest=core-fault"
        );
        assert_eq!(parse_text(SAMPLE).unwrap().command_line, "");
        let text = SAMPLE.replace("timeout = 20", "timeout = 20\ncmdline = \"x\\nboot\"");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "build/scenarios/sample.toml:4:11: cmdline: the boot command line has a newline \
                 at column 2"
            ),
            "{message}"
        );
        let long = format!("timeout = 20\ncmdline = \"{}\"", "x".repeat(300));
        let message = parse_text(&SAMPLE.replace("timeout = 20", &long))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(
                ":4:11: cmdline: the boot command line is 300 bytes long; the core \
                 keeps at most 256"
            ),
            "{message}"
        );
    }

    const GUEST: &str = r#"
description = "a guest image on bare QEMU"
timeout = 20
exit = "success"
guest = "cpuid"
expect = ["cpuid: running native", "TEST cpuid PASS"]
"#;

    #[test]
    fn guest_scenarios() {
        let guest = |text: &str| match parse_text(text).unwrap().boots {
            Boots::Guest(guest) => guest,
            Boots::System(_) => panic!("boots a system"),
        };
        assert_eq!(
            guest(GUEST),
            NativeGuest {
                image: "cpuid".into(),
                entry: GuestEntry::Pvh,
                disk_bytes: None,
            }
        );
        assert_eq!(
            guest(&GUEST.replace("guest = \"cpuid\"", "guest = \"cpuid\"\nguest_disk_mib = 4"))
                .disk_bytes,
            Some(4 << 20)
        );
        let text = GUEST.replace(
            "guest = \"cpuid\"",
            "guest = \"hello\"\nguest_entry = \"real\"",
        );
        assert_eq!(guest(&text).entry, GuestEntry::Real);
        let message = |text: &str| parse_text(text).unwrap_err().to_string();
        let text = format!("{GUEST}\n[[component]]\nname = \"hello\"\n");
        assert!(
            message(&text).contains(":5:9: a scenario that boots guest image 'cpuid' cannot also have a [[component]] list"),
            "{}",
            message(&text)
        );
        let text = GUEST.replace("timeout = 20", "timeout = 20\nboot = \"bochs\"");
        assert!(message(&text).contains("cannot also have Bochs"));
        let text = GUEST.replace("timeout = 20", "timeout = 20\ncmdline = \"x\"");
        assert!(message(&text).contains("cannot also have a core command line"));
        let text = GUEST.replace("timeout = 20", "timeout = 20\ncmdline = \"\"");
        assert!(parse_text(&text).is_ok());
        let text = GUEST.replace("\"cpuid\"", "\"CPU id\"");
        assert!(message(&text).contains("guest image name 'CPU id' is invalid"));
        let text = SAMPLE.replace("timeout = 20", "timeout = 20\nguest_entry = \"real\"");
        assert!(message(&text).contains("guest_entry applies only"));
        let text = GUEST.replace(
            "guest = \"cpuid\"",
            "guest = \"cpuid\"\nguest_entry = \"long\"",
        );
        assert!(message(&text).contains("unknown variant `long`"));
    }

    #[test]
    fn unknown_guests_are_explained() {
        let artifacts = Artifacts {
            core: PathBuf::from("/t/microvisor"),
            programs: Default::default(),
            guests: [("cpuid".to_string(), PathBuf::from("/t/vm-cpuid"))].into(),
            multiboot: Default::default(),
        };
        assert_eq!(
            unknown_guest("cpud", &artifacts),
            "unknown guest image 'cpud': no test-vms/cpud/ was built; did you mean 'cpuid'? \
             (test VMs: cpuid)"
        );
        // Swapped neighbours are one edit, as everywhere in capdl.
        assert!(
            unknown_guest("cpiud", &artifacts).contains("did you mean 'cpuid'?"),
            "{}",
            unknown_guest("cpiud", &artifacts)
        );
        let none = Artifacts {
            guests: Default::default(),
            ..artifacts
        };
        assert_eq!(
            unknown_guest("x", &none),
            "unknown guest image 'x': no test-vms/x/ was built (there are no test VMs)"
        );
    }

    #[test]
    fn host_time_between_two_lines() {
        let text = SAMPLE.replace(
            "forbid = [\"panic\"]",
            "forbid = [\"panic\"]\nhost_time = [{ from = \"sleep\", to = \"slept\", seconds = 2.0, within = 0.05 }]",
        );
        let mut scenario = parse_text(&text).unwrap();
        scenario.exit = VerdictKind::Success;
        scenario.expect.clear();
        let success = || Ending::Halted(Verdict::Success);
        // The test outcome's lines arrive one second apart.
        let ok = outcome(success(), &["sleep", "x", "slept"]);
        assert_eq!(judge(&scenario, &ok), Ok(()));
        let short = outcome(success(), &["sleep", "slept"]);
        assert_eq!(
            judge(&scenario, &short),
            Err("host time from \"sleep\" to \"slept\": 1.000 s, expected 2 s within 5%".into())
        );
        let missing = outcome(success(), &["slept", "sleep"]);
        assert_eq!(
            judge(&scenario, &missing),
            Err("host time: no line \"slept\" after \"sleep\"".into())
        );
        let bad = SAMPLE.replace(
            "forbid = [\"panic\"]",
            "forbid = [\"panic\"]\nhost_time = [{ from = \"a\", to = \"b\", seconds = 1.0 }]",
        );
        assert!(parse_text(&bad).is_err(), "`within` is required");
        let icount = text.replace("forbid = [", "icount = true\nforbid = [");
        assert!(
            parse_text(&icount)
                .unwrap_err()
                .to_string()
                .contains("-icount detaches the guest's"),
            "host_time with icount is refused"
        );
    }

    #[test]
    fn input_is_a_script_for_systems_in_qemu() {
        let with = |input: &str| {
            SAMPLE.replace(
                "forbid = [\"panic\"]",
                &format!("forbid = [\"panic\"]\ninput = {input}"),
            )
        };
        let scenario = parse_text(&with("[{ after = \"login\", send = \"root\\n\" }]")).unwrap();
        assert_eq!(
            scenario.input,
            ConsoleFeed::Script(vec![Send {
                after: "login".into(),
                send: "root\n".into()
            }])
        );
        assert_eq!(parse_text(SAMPLE).unwrap().input, ConsoleFeed::Nothing);
        let empty = parse_text(&with("[]")).unwrap_err().to_string();
        assert!(empty.contains("input lists no steps"), "{empty}");
        let bochs = parse_text(&format!(
            "boot = \"bochs\"\n{}",
            with("[{ after = \"a\", send = \"b\" }]")
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bochs.contains("it needs a system booted in QEMU"),
            "{bochs}"
        );
        let unknown = parse_text(&with("[{ after = \"a\", type = \"b\" }]"));
        assert!(unknown.is_err(), "unknown step fields are refused");
    }

    #[test]
    fn host_time_against_the_guest_clock() {
        let text = SAMPLE.replace(
            "forbid = [\"panic\"]",
            "forbid = [\"panic\"]\nhost_time = [{ from = \"clock\", to = \"clock\", within = 0.05 }]",
        );
        let mut scenario = parse_text(&text).unwrap();
        scenario.exit = VerdictKind::Success;
        scenario.expect.clear();
        let success = || Ending::Halted(Verdict::Success);
        // Lines arrive one host second apart: the guest must count 2 s.
        let ok = outcome(success(), &["clock 10.0", "x", "clock 12.02"]);
        assert_eq!(judge(&scenario, &ok), Ok(()));
        let slow = outcome(success(), &["clock 10.0", "x", "clock 11.5"]);
        assert_eq!(
            judge(&scenario, &slow),
            Err("host time from \"clock\" to \"clock\": 2.000 s, expected 1.5 s (the guest's clock) within 5%".into())
        );
        let backwards = outcome(success(), &["clock 10.0", "clock 9.0"]);
        assert!(judge(&scenario, &backwards).is_err());
        let no_time = outcome(success(), &["clock 10.0", "clock soon"]);
        assert_eq!(
            judge(&scenario, &no_time),
            Err(
                "host time: line 2 does not end with the guest's time in seconds: \"clock soon\""
                    .into()
            )
        );
        let not_finite = outcome(success(), &["clock 10.0", "clock inf"]);
        assert!(judge(&scenario, &not_finite).is_err());
    }

    #[test]
    fn anywhere_expectations_need_no_order() {
        let mut scenario = parse_text(SAMPLE).unwrap();
        scenario.exit = VerdictKind::Success;
        scenario.expect.clear();
        scenario.expect_anywhere = vec!["[b] up".into(), "[a] up".into()];
        let ok = outcome(Ending::Halted(Verdict::Success), &["[a] up", "[b] up"]);
        assert_eq!(judge(&scenario, &ok), Ok(()));
        let missing = outcome(Ending::Halted(Verdict::Success), &["[a] up"]);
        assert_eq!(
            judge(&scenario, &missing),
            Err("expected line not seen anywhere: \"[b] up\"".into())
        );
    }

    #[test]
    fn bounds_judge_the_number_after_their_text() {
        let mut scenario = parse_text(SAMPLE).unwrap();
        scenario.exit = VerdictKind::Success;
        scenario.expect.clear();
        let bound = |after: &str, at_least, at_most| Bound {
            after: after.into(),
            at_least,
            at_most,
            last: false,
        };
        let lines = [
            "[q] learned in 1300 ms",
            "[q] above by -2.5% now",
            "[q] none x",
        ];
        let ok = outcome(Ending::Halted(Verdict::Success), &lines);
        scenario.bounds = vec![
            bound("learned in ", None, Some(2000.0)),
            bound("above by ", Some(-3.0), Some(10.0)),
        ];
        assert_eq!(judge(&scenario, &ok), Ok(()));
        scenario.bounds = vec![bound("learned in ", Some(1500.0), None)];
        assert_eq!(
            judge(&scenario, &ok),
            Err("bounds: 1300 after \"learned in \" is outside 1500..=".into())
        );
        scenario.bounds = vec![bound("none ", None, Some(1.0))];
        assert_eq!(
            judge(&scenario, &ok),
            Err("bounds: no number after \"none \" in \"[q] none x\"".into())
        );
        let lines = ["[q] share 10", "[q] share 90"];
        let two = outcome(Ending::Halted(Verdict::Success), &lines);
        scenario.bounds = vec![Bound {
            last: true,
            ..bound("share ", Some(80.0), None)
        }];
        assert_eq!(judge(&scenario, &two), Ok(()));
        scenario.bounds[0].last = false;
        assert!(judge(&scenario, &two).is_err(), "the first is 10");
        scenario.bounds = vec![bound("absent", None, Some(1.0))];
        assert_eq!(
            judge(&scenario, &ok),
            Err("bounds: no line with \"absent\"".into())
        );
        let text = format!("bounds = [{{ after = \"x \", at_most = 2 }}]\n{SAMPLE}");
        assert_eq!(
            parse_text(&text).unwrap().bounds,
            [bound("x ", None, Some(2.0))]
        );
    }

    #[test]
    fn judging() {
        let scenario = parse_text(SAMPLE).unwrap();
        let failure = || {
            Ending::Halted(Verdict::Failure {
                reason: "fault".into(),
            })
        };
        let good = [
            "microvisor 0.1",
            "[core] component 'crasher' faulted",
            "[hello] done",
        ];
        assert_eq!(judge(&scenario, &outcome(failure(), &good)), Ok(()));
        assert_eq!(
            judge(&scenario, &outcome(Ending::Halted(Verdict::Success), &good)),
            Err("the system halted with success, expected failure".into())
        );
        assert_eq!(
            judge(&scenario, &outcome(failure(), &["microvisor 0.1"])),
            Err("expected line not seen: \"[hello] done\"".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(
                    failure(),
                    &["microvisor 0.1", "[crasher] panic", "[hello] done"]
                )
            ),
            Err("forbidden text seen: \"panic\" in line 2".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(
                    Ending::Timeout(Duration::from_secs(20)),
                    &["microvisor 0.1"]
                )
            ),
            Err("timed out after 20 s; expected line not seen: \"[hello] done\"".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(Ending::EmulatorError("boom".into()), &good)
            ),
            Err("boom".into())
        );
    }

    #[test]
    fn an_export_is_compared_with_the_guest_reading_of_the_disk() {
        let directory = tempfile::tempdir().unwrap();
        let image = directory.path().join("disk0.img");
        let source = directory.path().join("source.img");
        let data: Vec<u8> = (0..200_000u32).map(|index| (index % 251) as u8).collect();
        std::fs::write(&source, &data).unwrap();
        let options = vmkfs::FormatOptions {
            block_size: 64 << 10,
            ..vmkfs::FormatOptions::default()
        };
        let mut store =
            vmkfs::host::format_image(std::slice::from_ref(&image), 4 << 20, &options, true)
                .unwrap();
        vmkfs::host::import_file(&mut store, "disk0", &source, None).unwrap();
        store.unmount().unwrap();
        // Imports are whole sectors: the guest sees the data, zero-padded.
        let mut padded = data.clone();
        padded.resize(data.len().div_ceil(512) * 512, 0);
        let digest = sha256_hex(&padded);

        let scenario = parse_text(&SAMPLE.replace(
            "forbid = [\"panic\"]\n",
            "forbid = [\"panic\"]\nexport = [{ disk = \"disk0\", sha256_after = \"vda sha256 \" }]\n",
        ))
        .unwrap();
        let export = &scenario.export[0];
        let run = |lines: &[&str]| {
            let mut outcome = outcome(Ending::Halted(Verdict::Success), lines);
            outcome.disks = vec![image.clone()];
            export_met(export, &outcome)
        };
        let line = format!("[linux] guest: disk: vda sha256 {digest}");
        assert_eq!(run(&[&line]), Ok(()));
        let exported = std::fs::read(directory.path().join("disk0.disk0.export")).unwrap();
        assert_eq!(exported, padded);

        let wrong = format!("vda sha256 {}", "0".repeat(64));
        let error = run(&[&wrong]).unwrap_err();
        assert!(
            error.contains(&format!("has SHA-256 {digest}; the guest read")),
            "{error}"
        );
        let error = run(&["vda sha256 12ab"]).unwrap_err();
        assert!(
            error.contains("no console line with \"vda sha256 \""),
            "{error}"
        );

        // Or the export equals a host file.
        let same = Export {
            disk: "disk0".into(),
            sha256_after: None,
            same_as: Some(directory.path().join("padded.img")),
        };
        std::fs::write(directory.path().join("padded.img"), &padded).unwrap();
        let mut finished = outcome(Ending::Halted(Verdict::Success), &[]);
        finished.disks = vec![image.clone()];
        assert_eq!(export_met(&same, &finished), Ok(()));
        std::fs::write(directory.path().join("padded.img"), &data).unwrap();
        let error = export_met(&same, &finished).unwrap_err();
        assert!(error.contains("the file it must equal has"), "{error}");

        let other = Export {
            disk: "disk9".into(),
            sha256_after: Some("vda sha256 ".into()),
            same_as: None,
        };
        let mut outcome = outcome(Ending::Halted(Verdict::Success), &[&line]);
        outcome.disks = vec![image.clone(), source.clone()];
        let error = export_met(&other, &outcome).unwrap_err();
        assert!(
            error.contains("no machine disk holds it")
                && error.contains("disk0.img (no such disk)")
                && error.contains("source.img (not a VMKFS image)"),
            "{error}"
        );
    }

    #[test]
    fn export_needs_a_system() {
        let error = parse_text(
            "description = \"d\"\ntimeout = 5\nexit = \"success\"\nguest = \"cpuid\"\n\
             export = [{ disk = \"d\", sha256_after = \"x\" }]\n",
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("export reads the block store's image"),
            "{error:#}"
        );
    }
}
