//! The `campaign` command: fault-injection campaigns against a running
//! system.
//!
//! A campaign boots a system whose `[test]` table gives an injector
//! (`components/test/injector`) injection capabilities, lets the guests'
//! own workloads run, and types a plan into the system console one fault
//! at a time: `inject <n> <target> <kind> <delay_ms> <seed>`. After each
//! fault it waits until every workload has shown progress twice since the
//! injection (`CHECK <workload> ok <n>` lines from the guests: the second
//! one covers a whole unit of work begun after the fault) — the system
//! recovered, and the time that took is its time to recover — and then
//! sends the next. A system that does not recover within the limit, or
//! halts, is booted afresh and the campaign goes on from the next fault.
//!
//! Everything the console says is tallied per target and kind (the
//! [`Tally`]): faults injected, restarts and watchdog restarts the
//! supervisor made, workloads that continued, acknowledged writes lost
//! (`CHECK ... LOST`), other silent breakage (`CHECK ... BROKEN`), faults
//! of components other than the target, core faults (`FATAL`), times to
//! recover. Every fault that broke an invariant is listed with its own
//! seed, so `--replay` injects exactly it again. The plan is drawn from
//! the campaign's seed alone (targets and kinds in shuffled rounds, so a
//! campaign covers every pair evenly); console timing is the host's, so a
//! replay repeats the faults, not the instant they land.
//!
//! The logic that reads lines and keeps the tally is pure and
//! host-tested; [`run`] drives QEMU.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::console::LineSplitter;
use crate::emulator::{ConsoleFeed, Emulator};
use crate::run::{BootOptions, programs_of};
use crate::system;
use crate::workspace::{Artifacts, Workspace};

/// The kinds of fault, as the injector names them
/// (`microvisor_abi::inject::Kind::name`).
pub const KINDS: [&str; 5] = ["crash", "hang", "memory", "queue", "flood"];

/// Options of `campaign`.
#[derive(Debug, Clone, clap::Args)]
pub struct CampaignArguments {
    /// The system file (with a `[test]` table naming its injector).
    pub system: PathBuf,
    /// How many faults to inject in all.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub faults: u64,
    /// The campaign's seed: it alone decides the plan.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only these targets (comma-separated) [default: every target the
    /// injector holds].
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Only these kinds (comma-separated: crash, hang, memory, queue,
    /// flood) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Inject exactly this fault ("TARGET KIND SEED", as a report names
    /// it), --faults times.
    #[arg(long, value_name = "FAULT")]
    pub replay: Option<String>,
    /// Seconds a system may take to recover from one fault before it
    /// counts as broken and is booted afresh.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub recover_timeout: u64,
    /// Faults per boot at most (0: as many as the system survives).
    #[arg(long, default_value_t = 0)]
    pub per_boot: u64,
    /// Also write the report as JSON here [default:
    /// target/campaigns/<system>-seed<seed>.json].
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// How many workloads the system runs (the first boot waits for
    /// them) [default: those that show progress before none is new for
    /// 10 s].
    #[arg(long)]
    pub workloads: Option<usize>,
    /// Print every console line (otherwise only progress lines).
    #[arg(long)]
    pub verbose: bool,
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub number: u64,
    pub target: String,
    pub kind: String,
    pub delay_ms: u64,
    pub seed: u64,
}

impl Fault {
    /// The plan line the injector reads.
    pub fn line(&self) -> String {
        format!(
            "inject {} {} {} {} {}\n",
            self.number, self.target, self.kind, self.delay_ms, self.seed
        )
    }

    /// How a report names it, and `--replay` takes it.
    pub fn name(&self) -> String {
        format!("{} {} {}", self.target, self.kind, self.seed)
    }
}

/// The plan's random stream: the core's injection stream (xorshift64*).
struct Random(microvisor_abi::inject::Stream);

impl Random {
    fn new(seed: u64) -> Self {
        // SplitMix64's finaliser: every seed its own stream.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self(microvisor_abi::inject::Stream::new(z ^ (z >> 31)))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// The plan: `faults` faults over every (target, kind) pair in rounds,
/// each round shuffled, each fault with its own seed and a delay of up to
/// 100 ms (so faults land at different points of the workloads).
pub fn plan(targets: &[String], kinds: &[String], faults: u64, seed: u64) -> Vec<Fault> {
    let mut random = Random::new(seed);
    let pairs: Vec<(&String, &String)> = targets
        .iter()
        .flat_map(|target| kinds.iter().map(move |kind| (target, kind)))
        .collect();
    let mut plan = Vec::new();
    let mut round = pairs.clone();
    while (plan.len() as u64) < faults && !pairs.is_empty() {
        for index in (1..round.len()).rev() {
            round.swap(index, random.below(index + 1));
        }
        for (target, kind) in &round {
            if plan.len() as u64 == faults {
                break;
            }
            plan.push(Fault {
                number: plan.len() as u64 + 1,
                target: (*target).clone(),
                kind: (*kind).clone(),
                delay_ms: random.next() % 100,
                seed: random.next() >> 1,
            });
        }
    }
    plan
}

/// What one console line means to a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The injector is ready, holding these targets.
    Ready(Vec<String>),
    /// The injector carried out fault `number` (`detail`: what it did).
    Injected {
        number: u64,
        detail: String,
    },
    /// The injector refused a plan line.
    InjectError(String),
    /// A workload (`vm:name`) completed a checked unit.
    Progress {
        workload: String,
        count: u64,
    },
    /// A workload found an acknowledged write lost.
    Lost {
        workload: String,
        detail: String,
    },
    /// A workload found other silent breakage.
    Broken {
        workload: String,
        detail: String,
    },
    /// The supervisor restarts a component.
    Restarting(String),
    /// The supervisor's watchdog found a component unresponsive.
    Unresponsive(String),
    /// A component faulted (as the core or the supervisor reports it).
    Faulted(String),
    /// The core itself failed.
    CoreFault(String),
    /// The core halted the system.
    Halted(String),
    /// The system-call fuzzer's running total.
    FuzzTotal(u64),
    /// The fuzzer's monitor saw a fault its rules did not predict, a
    /// predicted one that did not come, or a fault that is no call
    /// refusal: the core did something its rules do not say.
    FuzzWrong(String),
    /// A component exited or was stopped for good (its name).
    Ended(String),
    /// A hostile VM was stopped or reset by its world switcher (its
    /// name).
    HostileStopped(String),
    /// Another VM stopped, rebooted or was refused (its name).
    VmStopped(String),
    Other,
}

/// The name inside quotes after `prefix` in `text`.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(prefix)?;
    let end = rest.find('\'')?;
    Some(&rest[..end])
}

/// Reads one console line.
pub fn classify(line: &str) -> Event {
    let Some((source, text)) = line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    else {
        return Event::Other;
    };
    if source == "core" {
        // The core's log levels: `[core] ERROR ...`, `[core] WARNING ...`.
        let text = text
            .strip_prefix("ERROR ")
            .or_else(|| text.strip_prefix("WARNING "))
            .unwrap_or(text);
        if let Some(rest) = text.strip_prefix("FATAL: ") {
            return Event::CoreFault(rest.to_string());
        }
        if let Some(rest) = text.strip_prefix("system halted: ") {
            return Event::Halted(rest.to_string());
        }
        if let Some(name) = quoted_after(text, "component '") {
            let rest = &text[name.len() + 12..];
            if rest.starts_with(" faulted:") {
                return Event::Faulted(name.to_string());
            }
            if rest.starts_with(" exited") || rest.starts_with(" stopped by its supervisor") {
                return Event::Ended(name.to_string());
            }
        }
        return Event::Other;
    }
    if let Some(rest) = text.strip_prefix("INJECTOR ready: targets ") {
        let targets = rest.split(';').next().unwrap_or("");
        return Event::Ready(
            targets
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    if let Some(rest) = text.strip_prefix("INJECT ") {
        let (first, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        return match first.parse::<u64>() {
            Ok(number) if !detail.starts_with("error") => Event::Injected {
                number,
                detail: detail.to_string(),
            },
            _ => Event::InjectError(rest.to_string()),
        };
    }
    if let Some(rest) = text.strip_prefix("CHECK ") {
        let mut words = rest.splitn(3, ' ');
        let (Some(name), Some(what)) = (words.next(), words.next()) else {
            return Event::Other;
        };
        let workload = format!("{source}:{name}");
        let detail = words.next().unwrap_or("").to_string();
        return match what {
            "ok" => match detail.parse() {
                Ok(count) => Event::Progress { workload, count },
                Err(_) => Event::Broken {
                    workload,
                    detail: format!("a progress line without a count: '{rest}'"),
                },
            },
            "LOST" => Event::Lost { workload, detail },
            "BROKEN" => Event::Broken { workload, detail },
            _ => Event::Other,
        };
    }
    {
        if let Some(name) = quoted_after(text, "restarting '") {
            return Event::Restarting(name.to_string());
        }
        if let Some(name) = quoted_after(text, "'")
            && text[name.len() + 2..].starts_with(" unresponsive")
        {
            return Event::Unresponsive(name.to_string());
        }
        if let Some(name) = quoted_after(text, "'")
            && text[name.len() + 2..].starts_with(" faulted:")
        {
            return Event::Faulted(name.to_string());
        }
    }
    if let Some(rest) = text.strip_prefix("FUZZ total ")
        && let Some(number) = rest.split(' ').next().and_then(|n| n.parse().ok())
    {
        return Event::FuzzTotal(number);
    }
    if let Some(rest) = text.strip_prefix("FUZZ faults: ") {
        // `..., <n> other; <n> not predicted; <n> predicted calls returned`
        let count = |what: &str| {
            rest.split([',', ';'])
                .map(str::trim)
                .find_map(|part| part.strip_suffix(what)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let wrong = count("other") + count("not predicted") + count("predicted calls returned");
        if wrong > 0 {
            return Event::FuzzWrong(rest.to_string());
        }
        return Event::Other;
    }
    if let Some(name) = quoted_after(text, "VM '") {
        let rest = &text[name.len() + 5..];
        let stopped = [
            " rebooting",
            " stopped",
            " powered off",
            " finished",
            " halted",
            ": restart refused",
            " not started",
        ]
        .iter()
        .any(|what| rest.starts_with(what));
        if stopped {
            return if is_hostile(name) {
                if rest.starts_with(" rebooting") {
                    Event::HostileStopped(name.to_string())
                } else {
                    Event::Other
                }
            } else {
                Event::VmStopped(name.to_string())
            };
        }
    }
    Event::Other
}

/// The tally of one (target, kind) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub injected: u64,
    /// Queue faults for a target without such a queue: nothing done.
    pub skipped: u64,
    /// Faults the injector found the target not running for.
    pub not_running: u64,
    pub restarts: u64,
    pub watchdog_restarts: u64,
    /// Workloads that were running when a fault came, and how many of
    /// them continued after it.
    pub workloads: u64,
    pub continued: u64,
    pub writes_lost: u64,
    pub broken: u64,
    /// Faults of components other than the target.
    pub collateral: u64,
    pub core_faults: u64,
    /// Faults after which the system was booted afresh.
    pub reboots: u64,
    /// Milliseconds from the injection until every workload had
    /// completed a unit begun after it.
    pub recover_ms: Vec<u64>,
}

impl Cell {
    fn add(&mut self, other: &Cell) {
        self.injected += other.injected;
        self.skipped += other.skipped;
        self.not_running += other.not_running;
        self.restarts += other.restarts;
        self.watchdog_restarts += other.watchdog_restarts;
        self.workloads += other.workloads;
        self.continued += other.continued;
        self.writes_lost += other.writes_lost;
        self.broken += other.broken;
        self.collateral += other.collateral;
        self.core_faults += other.core_faults;
        self.reboots += other.reboots;
        self.recover_ms.extend(&other.recover_ms);
    }

    /// Median and maximum time to recover.
    pub fn recovery(&self) -> Option<(u64, u64)> {
        let mut times = self.recover_ms.clone();
        times.sort_unstable();
        Some((*times.get(times.len() / 2)?, *times.last()?))
    }
}

/// A fault that broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    pub fault: Fault,
    pub what: String,
}

/// What a campaign found.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub cells: BTreeMap<(String, String), Cell>,
    pub breaches: Vec<Breach>,
    pub boots: u64,
    pub fuzz_calls: u64,
    pub hostile_stops: u64,
    /// Boots QEMU itself aborted (its own assertion); the fault in flight
    /// was injected again in a fresh boot.
    pub emulator_aborts: u64,
    pub seconds: f64,
}

impl Tally {
    fn cell(&mut self, fault: &Fault) -> &mut Cell {
        self.cells
            .entry((fault.target.clone(), fault.kind.clone()))
            .or_default()
    }

    /// Every cell added up.
    pub fn total(&self) -> Cell {
        let mut total = Cell::default();
        for cell in self.cells.values() {
            total.add(cell);
        }
        total
    }

    /// Whether every invariant held: no core fault, every workload
    /// continued, no acknowledged write lost, nothing silently broken.
    pub fn invariants_hold(&self) -> bool {
        let total = self.total();
        self.breaches.is_empty()
            && total.core_faults == 0
            && total.continued == total.workloads
            && total.writes_lost == 0
            && total.broken == 0
    }
}

/// What one fault is waiting for and has seen, from its injection on.
#[derive(Debug)]
pub struct Watch {
    pub fault: Fault,
    /// When the injector said it was done (None: not yet).
    pub injected_at: Option<Instant>,
    /// Progress lines of each workload since then.
    pub progress: BTreeMap<String, u32>,
    pub recovered_at: Option<Instant>,
    pub cell: Cell,
    pub breaches: Vec<String>,
    /// The boot cannot go on (the core failed or halted).
    pub ended: Option<String>,
    /// Every target of the campaign: restartable components, whose
    /// faults and restarts the system survives by design. When one that
    /// is not this fault's target goes down (a cascade, or the late
    /// effect of corruption injected before), it is counted among the
    /// others but is no breach; any other component is.
    pub targets: BTreeSet<String>,
    /// A hang's end: the fault is recovered from only once the target
    /// runs again (its hang ended, or its watchdog restarted it).
    pub hang_until: Option<Instant>,
    pub target_restarted: bool,
    /// What went down besides the target, each once.
    pub others: Vec<String>,
}

impl Watch {
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            injected_at: None,
            progress: BTreeMap::new(),
            recovered_at: None,
            cell: Cell {
                injected: 1,
                ..Cell::default()
            },
            breaches: Vec::new(),
            ended: None,
            targets: BTreeSet::new(),
            hang_until: None,
            target_restarted: false,
            others: Vec::new(),
        }
    }

    /// The same, knowing the campaign's targets.
    pub fn among(fault: Fault, targets: &BTreeSet<String>) -> Self {
        Self {
            targets: targets.clone(),
            ..Self::new(fault)
        }
    }

    /// Marks the fault recovered at `at` once every workload progressed
    /// twice since it and a hung target runs again.
    fn check_recovered(&mut self, at: Instant, workloads: &BTreeSet<String>) {
        let workloads_on = workloads
            .iter()
            .all(|name| self.progress.get(name).is_some_and(|&count| count >= 2));
        let target_on = self.target_restarted || self.hang_until.is_none_or(|until| at >= until);
        if self.recovered_at.is_none() && self.injected_at.is_some() && workloads_on && target_on {
            self.recovered_at = Some(at);
        }
    }

    /// Takes one event of the console, arrived at `at`; `workloads` are
    /// the ones the system runs.
    pub fn see(&mut self, event: &Event, at: Instant, workloads: &BTreeSet<String>) {
        match event {
            Event::Injected { number, detail } if *number == self.fault.number => {
                self.injected_at = Some(at);
                if let Some(ms) = detail
                    .split("hung for ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    self.hang_until = Some(at + Duration::from_millis(ms));
                }
                if detail.ends_with("not running") {
                    self.cell.not_running += 1;
                    self.breaches
                        .push(format!("{} was not running", self.fault.target));
                }
                if detail.ends_with("no such queue") {
                    // Nothing was done: not a fault of this campaign.
                    self.cell.injected = 0;
                    self.cell.skipped = 1;
                }
            }
            Event::InjectError(text) => self.breaches.push(format!("the injector said: {text}")),
            Event::Progress { workload, .. } if self.injected_at.is_some() => {
                *self.progress.entry(workload.clone()).or_default() += 1;
            }
            Event::Lost { workload, detail } => {
                self.cell.writes_lost += 1;
                self.breaches
                    .push(format!("{workload} lost an acknowledged write: {detail}"));
            }
            Event::Broken { workload, detail } => {
                self.cell.broken += 1;
                self.breaches.push(format!("{workload} broken: {detail}"));
            }
            Event::Restarting(name) if *name == self.fault.target => {
                self.cell.restarts += 1;
                self.target_restarted = true;
            }
            Event::Unresponsive(name) if *name == self.fault.target => {
                self.cell.watchdog_restarts += 1
            }
            Event::Faulted(name) | Event::Unresponsive(name) | Event::Ended(name)
                if *name != self.fault.target && !is_hostile(name) =>
            {
                self.collateral(&format!("component '{name}'"), "faulted, hung or ended");
            }
            Event::Ended(name) if *name == self.fault.target => {
                self.collateral(&format!("component '{name}'"), "ended for good");
            }
            Event::VmStopped(name) => self.collateral(&format!("VM '{name}'"), "stopped"),
            Event::FuzzWrong(what) => {
                self.breaches
                    .push(format!("the fuzzer saw the core break its rules: {what}"));
            }
            Event::CoreFault(what) => {
                self.cell.core_faults += 1;
                self.breaches.push(format!("the core failed: {what}"));
                self.ended = Some(format!("the core failed: {what}"));
            }
            Event::Halted(verdict) => {
                self.breaches.push(format!("the system halted: {verdict}"));
                self.ended = Some(format!("the system halted: {verdict}"));
            }
            _ => {}
        }
        self.check_recovered(at, workloads);
    }

    /// Something besides the target went down: counted once per fault
    /// and name (the core and the supervisor both report a fault).
    fn collateral(&mut self, who: &str, what: &str) {
        let breach = format!("{who} {what} too");
        if self.others.contains(&breach) {
            return;
        }
        self.cell.collateral += 1;
        self.others.push(breach.clone());
        let restartable = who
            .strip_prefix("component '")
            .and_then(|rest| rest.strip_suffix('\''))
            .is_some_and(|name| self.targets.contains(name) && name != self.fault.target);
        if !restartable {
            self.breaches.push(breach);
        }
    }

    /// Closes the fault: the workloads that did not recover in time did
    /// not continue. Returns whether the boot can go on.
    pub fn finish(&mut self, workloads: &BTreeSet<String>) -> bool {
        self.cell.workloads = workloads.len() as u64;
        self.cell.continued = workloads
            .iter()
            .filter(|name| self.progress.get(*name).is_some_and(|&count| count >= 2))
            .count() as u64;
        if let (Some(from), Some(to)) = (self.injected_at, self.recovered_at) {
            self.cell
                .recover_ms
                .push(to.duration_since(from).as_millis() as u64);
        }
        if self.cell.continued < self.cell.workloads {
            let stalled: Vec<&str> = workloads
                .iter()
                .filter(|name| self.progress.get(*name).is_none_or(|&count| count < 2))
                .map(String::as_str)
                .collect();
            self.breaches.push(format!(
                "workloads did not continue: {}",
                stalled.join(", ")
            ));
        }
        let go_on = self.ended.is_none() && self.cell.continued == self.cell.workloads;
        if !go_on {
            self.cell.reboots += 1;
        }
        go_on
    }
}

/// The components and VMs a campaign expects to be stopped, again and
/// again: the system-call fuzzer (`hostile`) and the hostile VM
/// (`hostile-vm`). Nothing else, not even their world switcher or
/// monitor, may fault or stop.
pub const HOSTILE: [&str; 2] = ["hostile", "hostile-vm"];

fn is_hostile(name: &str) -> bool {
    HOSTILE.contains(&name)
}

/// One booted system: QEMU with its console lines arriving on a channel.
struct Boot {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<(Instant, String)>,
    /// Every console line, with its time since the boot began.
    log: std::io::BufWriter<std::fs::File>,
    started: Instant,
    /// Where QEMU's stderr goes.
    stderr: PathBuf,
}

impl Boot {
    fn start(command: &mut Command, log: &Path) -> Result<Self> {
        let stderr_path = log.with_extension("stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("could not start QEMU")?;
        let mut stdout = child.stdout.take().context("QEMU's stdout is not a pipe")?;
        let stdin = child.stdin.take().context("QEMU's stdin is not a pipe")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut splitter = LineSplitter::default();
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = stdout.read(&mut buffer) {
                for line in splitter.push(&buffer[..count]) {
                    if sender.send((Instant::now(), line)).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
            log: std::io::BufWriter::new(log),
            started: Instant::now(),
            stderr: stderr_path,
        })
    }

    /// When QEMU died of its own assertion (SIGABRT: "tcg fatal error",
    /// which some random instruction bytes of the hostile guest hit in its
    /// translator), what it said: the emulator's failure, not the
    /// system's. `None` while it runs or when it ended otherwise.
    fn emulator_abort(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return None,
            }
        };
        (status.signal() == Some(6)).then(|| {
            let said = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            format!(
                "QEMU aborted (signal 6): {}",
                said.trim().replace('\n', " / ")
            )
        })
    }

    /// The next line, or `None` when `deadline` passes or QEMU is gone.
    fn next(&mut self, deadline: Instant) -> Option<(Instant, String)> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (at, line) = self.lines.recv_timeout(wait).ok()?;
        let seconds = at.duration_since(self.started).as_secs_f64();
        let _ = writeln!(self.log, "{seconds:10.3} {line}");
        Some((at, line))
    }

    fn send(&mut self, text: &str) -> Result<()> {
        let seconds = self.started.elapsed().as_secs_f64();
        let _ = write!(self.log, "{seconds:10.3} >>> {text}");
        self.stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush())
            .context("QEMU's console input closed")
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a campaign boots its system.
pub struct Setup<'a> {
    pub workspace: &'a Workspace,
    pub artifacts: &'a Artifacts,
    pub system: &'a system::System,
}

/// Settings of one campaign.
#[derive(Clone, Debug)]
pub struct Settings {
    pub faults: u64,
    pub seed: u64,
    pub targets: Vec<String>,
    pub kinds: Vec<String>,
    pub replay: Option<Fault>,
    pub recover_timeout: Duration,
    pub per_boot: u64,
    pub workloads: Option<usize>,
    pub verbose: bool,
    /// Where each boot's console goes.
    pub logs: PathBuf,
}

/// How long a boot may take to reach the first fault (the injector ready
/// and every workload making progress).
const WARM_UP: Duration = Duration::from_secs(90);
/// QEMU's own aborts a campaign rides out before it stops.
const MAX_EMULATOR_ABORTS: u64 = 10;

/// Boots in a row that may fail to come up before a campaign gives up.
const MAX_FAILED_BOOTS: u32 = 3;
/// How long a fault's window stays open after the system recovered, for
/// what comes late (a loss found by the next read-back, a fault).
const AFTER_RECOVERY: Duration = Duration::from_millis(300);
/// How long the console is read after the last fault.
const FINAL_TAIL: Duration = Duration::from_secs(3);

/// How long after the last new workload's first progress another may
/// still appear (a netcheck pair finds its peer and calibrates its clock
/// first), unless `--workloads` says how many to wait for.
const SETTLE: Duration = Duration::from_secs(10);

/// Runs a campaign; `say` gets its progress lines.
pub fn campaign(
    setup: &Setup<'_>,
    settings: &Settings,
    say: &mut dyn FnMut(&str),
) -> Result<Tally> {
    let qemu = crate::tools::require(crate::tools::QEMU)?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut plan: Option<Vec<Fault>> = None;
    let mut workloads: Option<BTreeSet<String>> = None;
    let mut next = 0usize;
    let mut failed_boots = 0;
    while plan.as_ref().is_none_or(|plan| next < plan.len()) {
        tally.boots += 1;
        let request = crate::run::prepare(
            setup.workspace,
            setup.artifacts,
            setup.system,
            &setup.system.stem(),
            BootOptions {
                emulator: Emulator::Qemu,
                timeout: None,
                icount: false,
                gdb: false,
                command_line: String::new(),
                input: ConsoleFeed::Nothing,
            },
        )?;
        let log = settings.logs.join(format!(
            "{}-seed{}-boot{}.log",
            setup.system.stem(),
            settings.seed,
            tally.boots
        ));
        let mut boot = Boot::start(&mut crate::qemu::command(&qemu, &request), &log)?;
        say(&format!(
            "campaign: boot {} (console in {}) ...",
            tally.boots,
            system::shown(&log)
        ));
        // Warm up: the injector's targets and the workloads. After a
        // reboot, what the console says until then (a lost write found
        // on the way up, a fault, a core failure) is the previous fault's
        // aftermath.
        let deadline = Instant::now() + WARM_UP;
        let mut offered: Option<Vec<String>> = None;
        let mut seen = BTreeSet::new();
        let mut last_new: Option<Instant> = None;
        let mut fuzz = 0;
        let previous = next
            .checked_sub(1)
            .and_then(|at| plan.as_ref().map(|plan| plan[at].clone()));
        let mut aftermath = previous.clone().map(|fault| {
            let mut watch = Watch::among(fault, &targets_of(plan.as_ref()));
            watch.cell.injected = 0;
            watch
        });
        let mut failed: Option<String> = None;
        loop {
            let ready = offered.is_some()
                && match (&workloads, settings.workloads) {
                    (Some(expected), _) => expected.is_subset(&seen),
                    (None, Some(count)) => seen.len() >= count,
                    (None, None) => last_new.is_some_and(|at| at.elapsed() >= SETTLE),
                };
            if ready || failed.is_some() {
                break;
            }
            let Some((at, line)) = boot.next(deadline.min(Instant::now() + SETTLE)) else {
                if Instant::now() >= deadline {
                    failed = Some(format!(
                        "within {} s the injector said {} and workloads {:?} showed progress",
                        WARM_UP.as_secs(),
                        if offered.is_some() {
                            "it was ready"
                        } else {
                            "nothing"
                        },
                        seen
                    ));
                }
                continue;
            };
            if settings.verbose {
                say(&line);
            }
            let event = classify(&line);
            match &event {
                Event::Ready(targets) => offered = Some(targets.clone()),
                Event::Progress { workload, .. } if !seen.contains(workload) => {
                    seen.insert(workload.clone());
                    last_new = Some(at);
                }
                Event::CoreFault(what) => failed = Some(format!("the core failed: {what}")),
                Event::Halted(verdict) => failed = Some(format!("the system halted: {verdict}")),
                Event::FuzzTotal(total) => fuzz = *total,
                Event::HostileStopped(_) => tally.hostile_stops += 1,
                _ => {}
            }
            if let Some(watch) = aftermath.as_mut() {
                watch.see(&event, at, &BTreeSet::new());
            }
        }
        tally.fuzz_calls += fuzz;
        if let Some(mut watch) = aftermath {
            watch.ended = None;
            tally.cell(&watch.fault).add(&watch.cell);
            for what in watch.breaches {
                tally.breaches.push(Breach {
                    fault: watch.fault.clone(),
                    what: format!("after the reboot: {what}"),
                });
            }
        }
        if failed.is_some()
            && let Some(why) = boot.emulator_abort()
        {
            say(&format!("campaign: boot {} again: {why}", tally.boots));
            tally.emulator_aborts += 1;
            if tally.emulator_aborts > MAX_EMULATOR_ABORTS {
                bail!("QEMU aborted {} times: {why}", tally.emulator_aborts);
            }
            continue;
        }
        if let Some(why) = failed {
            let Some(fault) = previous else {
                bail!("boot {}: {why}", tally.boots);
            };
            say(&format!(
                "campaign: boot {} did not come up: {why}",
                tally.boots
            ));
            tally.breaches.push(Breach {
                fault,
                what: format!("boot {} after it did not come up: {why}", tally.boots),
            });
            failed_boots += 1;
            if failed_boots == MAX_FAILED_BOOTS {
                say("campaign: giving up: the system does not come up any more");
                break;
            }
            continue;
        }
        failed_boots = 0;
        let offered = offered.unwrap_or_default();
        let expected = workloads.get_or_insert_with(|| seen.clone()).clone();
        if expected.is_empty() {
            bail!(
                "no workload printed a 'CHECK <name> ok <n>' line: nothing would show whether the guests survive"
            );
        }
        let plan = plan.get_or_insert_with(|| make_plan(settings, &offered));
        if plan.is_empty() {
            bail!("nothing to inject: the injector offers {offered:?}");
        }
        for fault in plan.iter() {
            if !offered.contains(&fault.target) {
                bail!(
                    "the injector holds no capability for '{}' (it offers {})",
                    fault.target,
                    offered.join(", ")
                );
            }
        }
        if tally.boots == 1 {
            say(&format!(
                "campaign: {} faults over targets {} and kinds {}; workloads {}",
                plan.len(),
                unique(plan.iter().map(|f| f.target.as_str())).join(","),
                unique(plan.iter().map(|f| f.kind.as_str())).join(","),
                expected.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut in_boot = 0;
        let mut fuzz_more = 0;
        let targets = targets_of(Some(plan));
        while next < plan.len() {
            let fault = plan[next].clone();
            next += 1;
            in_boot += 1;
            boot.send(&fault.line())?;
            let mut watch = Watch::among(fault, &targets);
            let limit = Duration::from_millis(watch.fault.delay_ms) + settings.recover_timeout;
            let deadline = Instant::now() + limit;
            let mut window_end: Option<Instant> = None;
            while watch.ended.is_none() && window_end.is_none_or(|end| Instant::now() < end) {
                let Some((at, line)) = boot.next(window_end.unwrap_or(deadline)) else {
                    break;
                };
                if settings.verbose {
                    say(&line);
                }
                let event = classify(&line);
                match &event {
                    Event::FuzzTotal(total) => {
                        fuzz_more = total.saturating_sub(fuzz);
                    }
                    Event::HostileStopped(_) => tally.hostile_stops += 1,
                    _ => {}
                }
                watch.see(&event, at, &expected);
                // Recovered: the window stays open a little longer.
                if watch.recovered_at.is_some() && window_end.is_none() {
                    let last = next == plan.len();
                    window_end =
                        Some(Instant::now() + if last { FINAL_TAIL } else { AFTER_RECOVERY });
                }
            }
            if watch.recovered_at.is_none()
                && let Some(why) = boot.emulator_abort()
            {
                say(&format!(
                    "campaign: fault {} is injected again in a fresh boot: {why}",
                    watch.fault.number
                ));
                tally.emulator_aborts += 1;
                next -= 1;
                break;
            }
            let go_on = watch.finish(&expected);
            let recovered = match (watch.injected_at, watch.recovered_at) {
                (Some(from), Some(to)) => {
                    format!("recovered in {} ms", to.duration_since(from).as_millis())
                }
                (None, _) => "never injected".into(),
                _ => "did not recover".into(),
            };
            say(&format!(
                "campaign: fault {}/{} {}: {recovered}{}",
                watch.fault.number,
                plan.len(),
                watch.fault.name(),
                if watch.breaches.is_empty() {
                    String::new()
                } else {
                    format!("; BREACH: {}", watch.breaches.join("; "))
                }
            ));
            tally.cell(&watch.fault).add(&watch.cell);
            for what in watch.breaches.drain(..) {
                tally.breaches.push(Breach {
                    fault: watch.fault.clone(),
                    what,
                });
            }
            if !go_on || (settings.per_boot > 0 && in_boot >= settings.per_boot) {
                break;
            }
        }
        tally.fuzz_calls += fuzz_more;
        drop(boot);
    }
    tally.seconds = started.elapsed().as_secs_f64();
    Ok(tally)
}

/// The targets of a plan.
fn targets_of(plan: Option<&Vec<Fault>>) -> BTreeSet<String> {
    plan.into_iter()
        .flatten()
        .map(|fault| fault.target.clone())
        .collect()
}

fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// The plan for `settings`, once the injector's targets are known.
fn make_plan(settings: &Settings, offered: &[String]) -> Vec<Fault> {
    if let Some(fault) = &settings.replay {
        return (1..=settings.faults)
            .map(|number| Fault {
                number,
                ..fault.clone()
            })
            .collect();
    }
    let targets = if settings.targets.is_empty() {
        offered.to_vec()
    } else {
        settings.targets.clone()
    };
    plan(&targets, &settings.kinds, settings.faults, settings.seed)
}

/// Parses `--replay`'s "TARGET KIND SEED".
pub fn parse_replay(text: &str) -> Result<Fault> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [target, kind, seed] = words[..] else {
        bail!("--replay takes \"TARGET KIND SEED\" (as a report names a fault), not '{text}'");
    };
    if !KINDS.contains(&kind) {
        bail!("--replay: unknown kind '{kind}' ({})", KINDS.join(", "));
    }
    let seed = seed
        .parse()
        .with_context(|| format!("--replay: the seed '{seed}' is not a number"))?;
    Ok(Fault {
        number: 0,
        target: target.to_string(),
        kind: kind.to_string(),
        delay_ms: 0,
        seed,
    })
}

/// The report as a table.
pub fn report(tally: &Tally, settings: &Settings) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "{:<12} {:<7} {:>6} {:>7} {:>8} {:>8} {:>11} {:>5} {:>6} {:>6} {:>5} {:>7} {:>9} {:>9}\n",
        "target",
        "kind",
        "faults",
        "skipped",
        "restarts",
        "watchdog",
        "continued",
        "lost",
        "broken",
        "others",
        "core",
        "reboots",
        "median ms",
        "max ms"
    ));
    let mut rows: Vec<(String, String, Cell)> = tally
        .cells
        .iter()
        .map(|((target, kind), cell)| (target.clone(), kind.clone(), cell.clone()))
        .collect();
    rows.push(("all".into(), "".into(), tally.total()));
    for (target, kind, cell) in rows {
        let (median, max) = cell
            .recovery()
            .map_or(("-".to_string(), "-".to_string()), |(median, max)| {
                (median.to_string(), max.to_string())
            });
        text.push_str(&format!(
            "{target:<12} {kind:<7} {:>6} {:>7} {:>8} {:>8} {:>11} {:>5} {:>6} {:>6} {:>5} {:>7} {median:>9} {max:>9}\n",
            cell.injected,
            cell.skipped + cell.not_running,
            cell.restarts,
            cell.watchdog_restarts,
            format!("{}/{}", cell.continued, cell.workloads),
            cell.writes_lost,
            cell.broken,
            cell.collateral,
            cell.core_faults,
            cell.reboots,
        ));
    }
    text.push_str(&format!(
        "boots {}, {:.0} s; system calls fuzzed {}; hostile VM stops {}; QEMU's own aborts {}\n",
        tally.boots, tally.seconds, tally.fuzz_calls, tally.hostile_stops, tally.emulator_aborts
    ));
    if tally.breaches.is_empty() {
        text.push_str(&format!(
            "every invariant held (campaign seed {})\n",
            settings.seed
        ));
    } else {
        text.push_str(&format!(
            "{} breaches (campaign seed {}; replay one with --replay \"TARGET KIND SEED\"):\n",
            tally.breaches.len(),
            settings.seed
        ));
        for breach in &tally.breaches {
            text.push_str(&format!(
                "  fault {} \"{}\": {}\n",
                breach.fault.number,
                breach.fault.name(),
                breach.what
            ));
        }
    }
    text
}

/// The report as JSON.
pub fn json(tally: &Tally, settings: &Settings, system: &str) -> serde_json::Value {
    let cell = |cell: &Cell| {
        let (median, max) = cell.recovery().unzip();
        serde_json::json!({
            "faults": cell.injected,
            "skipped_no_such_queue": cell.skipped,
            "not_running": cell.not_running,
            "restarts": cell.restarts,
            "watchdog_restarts": cell.watchdog_restarts,
            "workloads": cell.workloads,
            "workloads_continued": cell.continued,
            "acknowledged_writes_lost": cell.writes_lost,
            "broken": cell.broken,
            "other_components_faulted": cell.collateral,
            "core_faults": cell.core_faults,
            "reboots": cell.reboots,
            "recover_ms_median": median,
            "recover_ms_max": max,
        })
    };
    serde_json::json!({
        "system": system,
        "seed": settings.seed,
        "faults": settings.faults,
        "boots": tally.boots,
        "seconds": tally.seconds,
        "fuzzed_system_calls": tally.fuzz_calls,
        "hostile_vm_stops": tally.hostile_stops,
        "emulator_aborts": tally.emulator_aborts,
        "invariants_hold": tally.invariants_hold(),
        "total": cell(&tally.total()),
        "cells": tally.cells.iter().map(|((target, kind), c)| {
            let mut value = cell(c);
            value["target"] = target.clone().into();
            value["kind"] = kind.clone().into();
            value
        }).collect::<Vec<_>>(),
        "breaches": tally.breaches.iter().map(|breach| serde_json::json!({
            "fault": breach.fault.number,
            "target": breach.fault.target,
            "kind": breach.fault.kind,
            "seed": breach.fault.seed,
            "replay": breach.fault.name(),
            "what": breach.what,
        })).collect::<Vec<_>>(),
    })
}

/// Checks `--kinds`.
pub fn kinds_of(kinds: &[String]) -> Result<Vec<String>> {
    if kinds.is_empty() {
        return Ok(KINDS.iter().map(|kind| kind.to_string()).collect());
    }
    for kind in kinds {
        if !KINDS.contains(&kind.as_str()) {
            bail!("--kinds: unknown kind '{kind}' ({})", KINDS.join(", "));
        }
    }
    Ok(kinds.to_vec())
}

/// Builds what `system` needs and loads it.
pub fn load(workspace: &Workspace, path: &Path) -> Result<(system::System, Artifacts)> {
    let programs = workspace.programs()?;
    let system = system::load(path, &programs)?;
    crate::setup::emulators(&[Emulator::Qemu])?;
    let artifacts = workspace.build_target(&programs_of(&system.programs))?;
    Ok((system, artifacts))
}

/// The `campaign` command.
pub fn command(arguments: CampaignArguments) -> Result<ExitCode> {
    let workspace = Workspace::load()?;
    let settings = Settings {
        faults: arguments.faults,
        seed: arguments.seed,
        targets: arguments.targets.clone(),
        kinds: kinds_of(&arguments.kinds)?,
        replay: arguments.replay.as_deref().map(parse_replay).transpose()?,
        recover_timeout: Duration::from_secs(arguments.recover_timeout),
        per_boot: arguments.per_boot,
        workloads: arguments.workloads,
        verbose: arguments.verbose,
        logs: workspace.target_directory.join("campaigns"),
    };
    std::fs::create_dir_all(&settings.logs)
        .with_context(|| format!("creating {}", settings.logs.display()))?;
    let (system, artifacts) = load(&workspace, &arguments.system)?;
    let setup = Setup {
        workspace: &workspace,
        artifacts: &artifacts,
        system: &system,
    };
    let tally = campaign(&setup, &settings, &mut |line| println!("{line}"))?;
    print!("{}", report(&tally, &settings));
    let path = arguments.json.unwrap_or_else(|| {
        workspace.target_directory.join("campaigns").join(format!(
            "{}-seed{}.json",
            system.stem(),
            settings.seed
        ))
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let value = json(&tally, &settings, &system::shown(&arguments.system));
    std::fs::write(&path, serde_json::to_string_pretty(&value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("campaign: report written to {}", system::shown(&path));
    Ok(if tally.invariants_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn plans_cover_every_pair_evenly_and_replay_from_the_seed() {
        let targets = names(&["store", "bridge", "irq"]);
        let kinds = names(&KINDS);
        let plan_a = plan(&targets, &kinds, 45, 7);
        assert_eq!(plan_a, plan(&targets, &kinds, 45, 7));
        assert_ne!(plan_a, plan(&targets, &kinds, 45, 8));
        assert_eq!(plan_a.len(), 45);
        let mut counts = BTreeMap::new();
        for fault in &plan_a {
            *counts
                .entry((fault.target.clone(), fault.kind.clone()))
                .or_insert(0) += 1;
            assert!(fault.delay_ms < 100);
        }
        assert_eq!(counts.len(), 15);
        assert!(counts.values().all(|&count| count == 3), "{counts:?}");
        assert_eq!(
            plan_a.iter().map(|f| f.number).collect::<Vec<_>>(),
            (1..=45).collect::<Vec<_>>()
        );
        assert!(plan(&[], &kinds, 10, 1).is_empty());
    }

    #[test]
    fn lines_are_read_as_events() {
        assert_eq!(
            classify("[injector] INJECTOR ready: targets store,bridge; kinds crash"),
            Event::Ready(names(&["store", "bridge"]))
        );
        assert_eq!(
            classify("[injector] INJECT 4 store memory seed=9 3 bytes from 0x1000"),
            Event::Injected {
                number: 4,
                detail: "store memory seed=9 3 bytes from 0x1000".into()
            }
        );
        assert!(matches!(
            classify("[injector] INJECT 4 error: no injection capability for 'x'"),
            Event::InjectError(_)
        ));
        assert_eq!(
            classify("[diskcheck] CHECK disk ok 17"),
            Event::Progress {
                workload: "diskcheck:disk".into(),
                count: 17
            }
        );
        assert_eq!(
            classify("[a] CHECK net LOST block 3"),
            Event::Lost {
                workload: "a:net".into(),
                detail: "block 3".into()
            }
        );
        assert!(matches!(
            classify("[a] CHECK net ok many"),
            Event::Broken { .. }
        ));
        assert_eq!(
            classify("[supervisor] restarting 'store' after 0 ms (restart 3 of 9)"),
            Event::Restarting("store".into())
        );
        assert_eq!(
            classify("[supervisor] 'store' unresponsive for 1200 ms (watchdog 1000 ms)"),
            Event::Unresponsive("store".into())
        );
        assert_eq!(
            classify(
                "[supervisor] 'bridge' faulted: page fault (address 0x0, rip 0x1), fault 1 of its life"
            ),
            Event::Faulted("bridge".into())
        );
        assert_eq!(
            classify(
                "[core] ERROR component 'ws-a' faulted: page fault, read at 0x0 (not mapped, error code 0x4), rip 0x1, rsp 0x2; stopped"
            ),
            Event::Faulted("ws-a".into())
        );
        assert_eq!(
            classify("[core] ERROR FATAL: page fault (#PF) (vector 14) in the core"),
            Event::CoreFault("page fault (#PF) (vector 14) in the core".into())
        );
        assert_eq!(
            classify("[core] component 'ws-a' exited"),
            Event::Ended("ws-a".into())
        );
        assert_eq!(
            classify("[monitor] restarting 'hostile' after 0 ms"),
            Event::Restarting("hostile".into())
        );
        assert!(matches!(
            classify(
                "[monitor] FUZZ faults: 3 unknown call, 1 bad pointer, 0 bad argument, 0 bad capability, 0 panic, 0 other; 1 not predicted; 0 predicted calls returned"
            ),
            Event::FuzzWrong(_)
        ));
        assert_eq!(
            classify(
                "[monitor] FUZZ faults: 3 unknown call, 1 bad pointer, 0 bad argument, 0 bad capability, 0 panic, 0 other; 0 not predicted; 0 predicted calls returned"
            ),
            Event::Other
        );
        assert_eq!(
            classify("[core] system halted: success"),
            Event::Halted("success".into())
        );
        assert_eq!(
            classify("[monitor] FUZZ total 120000 calls, 3 faults, 3 restarts"),
            Event::FuzzTotal(120_000)
        );
        assert_eq!(
            classify("[ws-hostile] VM 'hostile' rebooting (boot 7)"),
            Event::HostileStopped("hostile".into())
        );
        assert_eq!(
            classify("[ws-a] VM 'a' stopped: triple fault"),
            Event::VmStopped("a".into())
        );
        assert_eq!(
            classify("[ws-a] VM 'a' booting: 3 segment(s)"),
            Event::Other
        );
        assert_eq!(classify("[core] component 'x' restarted"), Event::Other);
        assert_eq!(classify("no brackets"), Event::Other);
        assert_eq!(classify("[x] CHECK"), Event::Other);
    }

    fn fault() -> Fault {
        Fault {
            number: 3,
            target: "store".into(),
            kind: "crash".into(),
            delay_ms: 0,
            seed: 5,
        }
    }

    fn both() -> BTreeSet<String> {
        ["vm:disk".to_string(), "vm:net".to_string()].into()
    }

    #[test]
    fn a_fault_is_recovered_when_every_workload_progressed_twice_after_it() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let workloads = both();
        let mut watch = Watch::new(fault());
        let progress = |workload: &str| Event::Progress {
            workload: workload.into(),
            count: 1,
        };
        // Progress before the injection does not count.
        watch.see(&progress("vm:disk"), at(0), &workloads);
        watch.see(
            &Event::Injected {
                number: 3,
                detail: "store crash seed=5 faulted at 0xdead0000".into(),
            },
            at(10),
            &workloads,
        );
        watch.see(&Event::Restarting("store".into()), at(20), &workloads);
        watch.see(&Event::Restarting("bridge".into()), at(20), &workloads);
        for (workload, ms) in [("vm:disk", 100), ("vm:net", 150), ("vm:disk", 200)] {
            watch.see(&progress(workload), at(ms), &workloads);
            assert_eq!(watch.recovered_at, None);
        }
        watch.see(&progress("vm:net"), at(310), &workloads);
        assert_eq!(watch.recovered_at, Some(at(310)));
        assert!(watch.finish(&workloads));
        assert_eq!(watch.cell.recover_ms, [300]);
        assert_eq!((watch.cell.continued, watch.cell.workloads), (2, 2));
        assert_eq!(watch.cell.restarts, 1);
        assert!(watch.breaches.is_empty());
    }

    #[test]
    fn a_hang_is_recovered_from_when_its_target_runs_again() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let workloads = both();
        let targets: BTreeSet<String> = ["store".to_string(), "qos".to_string()].into();
        let mut hang = fault();
        hang.kind = "hang".into();
        let mut watch = Watch::among(hang, &targets);
        let injected = Event::Injected {
            number: 3,
            detail: "store hang seed=5 hung for 1000 ms".into(),
        };
        watch.see(&injected, at(0), &workloads);
        for ms in [100, 150, 200, 250] {
            for workload in ["vm:disk", "vm:net"] {
                let progress = Event::Progress {
                    workload: workload.into(),
                    count: 1,
                };
                watch.see(&progress, at(ms), &workloads);
            }
        }
        assert_eq!(watch.recovered_at, None, "the store is still hung");
        // Another target going down meanwhile is counted, not a breach;
        // a world switcher is a breach.
        watch.see(&Event::Unresponsive("qos".into()), at(300), &workloads);
        assert!(watch.breaches.is_empty(), "{:?}", watch.breaches);
        watch.see(&Event::Restarting("store".into()), at(600), &workloads);
        assert_eq!(watch.recovered_at, Some(at(600)));
        watch.see(&Event::Faulted("ws-disk".into()), at(700), &workloads);
        assert_eq!(watch.breaches.len(), 1);
        assert_eq!(watch.cell.collateral, 2);
        // Without a restart, the hang's end does it.
        let mut watch = Watch::among(fault(), &targets);
        watch.see(&injected, at(0), &workloads);
        for workload in ["vm:disk", "vm:net", "vm:disk", "vm:net"] {
            let progress = Event::Progress {
                workload: workload.into(),
                count: 1,
            };
            watch.see(&progress, at(1200), &workloads);
        }
        assert!(watch.recovered_at.is_some());
    }

    #[test]
    fn a_stalled_workload_a_lost_write_and_a_core_fault_are_breaches() {
        let start = Instant::now();
        let workloads = both();
        let mut watch = Watch::new(fault());
        watch.see(
            &Event::Injected {
                number: 3,
                detail: "x".into(),
            },
            start,
            &workloads,
        );
        watch.see(
            &Event::Progress {
                workload: "vm:disk".into(),
                count: 9,
            },
            start,
            &workloads,
        );
        watch.see(
            &Event::Lost {
                workload: "vm:disk".into(),
                detail: "block 7".into(),
            },
            start,
            &workloads,
        );
        watch.see(&Event::Faulted("ws-a".into()), start, &workloads);
        // The core and the supervisor both report it: counted once.
        watch.see(&Event::Faulted("ws-a".into()), start, &workloads);
        watch.see(&Event::Faulted("hostile".into()), start, &workloads);
        assert!(!watch.finish(&workloads));
        assert_eq!(watch.cell.writes_lost, 1);
        assert_eq!(watch.cell.collateral, 1);
        assert_eq!((watch.cell.continued, watch.cell.workloads), (0, 2));
        assert_eq!(watch.cell.reboots, 1);
        assert_eq!(watch.breaches.len(), 3, "{:?}", watch.breaches);

        let mut tally = Tally::default();
        tally.cell(&watch.fault).add(&watch.cell);
        assert!(!tally.invariants_hold());
        let mut core = Watch::new(fault());
        core.see(&Event::CoreFault("#PF".into()), start, &workloads);
        assert!(core.ended.is_some());
        assert_eq!(core.cell.core_faults, 1);
    }

    #[test]
    fn replays_and_kinds_are_checked() {
        let fault = parse_replay("store memory 1234").unwrap();
        assert_eq!(fault.name(), "store memory 1234");
        assert!(parse_replay("store memory").is_err());
        assert!(parse_replay("store melt 1").is_err());
        assert!(parse_replay("store memory x").is_err());
        assert_eq!(kinds_of(&[]).unwrap().len(), 5);
        assert!(kinds_of(&names(&["hang", "boil"])).is_err());
    }

    #[test]
    fn the_report_names_the_seed_of_every_breach() {
        let mut tally = Tally::default();
        let mut cell = Cell {
            injected: 2,
            workloads: 4,
            continued: 4,
            recover_ms: vec![30, 10, 20],
            ..Cell::default()
        };
        tally
            .cells
            .insert(("store".into(), "crash".into()), cell.clone());
        cell.writes_lost = 1;
        tally.cells.insert(("store".into(), "hang".into()), cell);
        tally.breaches.push(Breach {
            fault: fault(),
            what: "vm:disk lost an acknowledged write: block 7".into(),
        });
        let settings = Settings {
            faults: 4,
            seed: 11,
            targets: vec![],
            kinds: vec![],
            replay: None,
            recover_timeout: Duration::from_secs(1),
            per_boot: 0,
            workloads: None,
            verbose: false,
            logs: PathBuf::new(),
        };
        let text = report(&tally, &settings);
        assert!(
            text.contains("fault 3 \"store crash 5\": vm:disk lost"),
            "{text}"
        );
        assert!(text.contains("campaign seed 11"), "{text}");
        let value = json(&tally, &settings, "x.toml");
        assert_eq!(value["total"]["faults"], 4);
        assert_eq!(value["total"]["acknowledged_writes_lost"], 1);
        assert_eq!(value["total"]["recover_ms_median"], 20);
        assert_eq!(value["breaches"][0]["replay"], "store crash 5");
        assert_eq!(value["invariants_hold"], false);
    }
}

/// Where the test suite's campaigns live, relative to the workspace root.
pub const TEST_DIRECTORY: &str = "build/campaigns";

/// A campaign the test suite runs (`build/campaigns/*.toml`): a short
/// campaign whose invariants must hold, or one against a deliberately
/// broken system that must find the breach and name its seed.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignTest {
    pub description: String,
    /// The system file, relative to the test's file.
    pub system: PathBuf,
    pub faults: u64,
    pub seed: u64,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<String>,
    /// How many workloads the system runs.
    pub workloads: usize,
    /// Seconds one fault may take to recover from.
    #[serde(default = "default_recover")]
    pub recover_timeout: u64,
    /// What it must find: `"invariants"` (every invariant held) or a text
    /// some breach must contain (then the campaign must name its seed).
    pub expect: String,
}

fn default_recover() -> u64 {
    30
}

/// Runs one campaign test; `Ok` with its summary, or why it failed.
pub fn run_test(workspace: &Workspace, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("reading it: {error}"))?;
    let test: CampaignTest = toml::from_str(&text).map_err(|error| format!("{error}"))?;
    run_checked(workspace, path, &test)
        .map_err(|why| format!("{why}\n    what it checks: {}", test.description))
}

fn run_checked(workspace: &Workspace, path: &Path, test: &CampaignTest) -> Result<String, String> {
    let system_path = path.parent().unwrap_or(Path::new(".")).join(&test.system);
    let (system, artifacts) =
        load(workspace, &system_path).map_err(|error| format!("{error:#}"))?;
    let settings = Settings {
        faults: test.faults,
        seed: test.seed,
        targets: test.targets.clone(),
        kinds: kinds_of(&test.kinds).map_err(|error| format!("{error:#}"))?,
        replay: None,
        recover_timeout: Duration::from_secs(test.recover_timeout),
        per_boot: 0,
        workloads: Some(test.workloads),
        verbose: false,
        logs: workspace.target_directory.join("campaigns"),
    };
    std::fs::create_dir_all(&settings.logs).map_err(|error| format!("{error}"))?;
    let setup = Setup {
        workspace,
        artifacts: &artifacts,
        system: &system,
    };
    let tally = campaign(&setup, &settings, &mut |_| {}).map_err(|error| format!("{error:#}"))?;
    let text = report(&tally, &settings);
    let total = tally.total();
    let summary = format!(
        "{} faults, {} restarts, {}/{} workloads continued, {} boots",
        total.injected,
        total.restarts + total.watchdog_restarts,
        total.continued,
        total.workloads,
        tally.boots
    );
    if test.expect == "invariants" {
        if tally.invariants_hold() && total.injected + total.skipped == test.faults {
            Ok(summary)
        } else {
            Err(format!("an invariant broke ({summary}):\n{text}"))
        }
    } else {
        let found = tally
            .breaches
            .iter()
            .find(|breach| breach.what.contains(&test.expect));
        let Some(breach) = found else {
            return Err(format!(
                "no breach says \"{}\" ({summary}):\n{text}",
                test.expect
            ));
        };
        // The seed the report names must replay it: the same fault,
        // injected again (twelve times, in a fresh boot: a crash loses a
        // write only when it lands while one is held), breaks the same
        // invariant.
        let replay = Settings {
            faults: 12,
            replay: Some(breach.fault.clone()),
            ..settings.clone()
        };
        let again = campaign(&setup, &replay, &mut |_| {}).map_err(|error| format!("{error:#}"))?;
        if !again.breaches.iter().any(|b| b.what.contains(&test.expect)) {
            return Err(format!(
                "--replay \"{}\" did not break the invariant again:\n{}",
                breach.fault.name(),
                report(&again, &replay)
            ));
        }
        Ok(format!(
            "{summary}; found \"{}\" at fault {}, and --replay \"{}\" finds it again",
            test.expect,
            breach.fault.number,
            breach.fault.name()
        ))
    }
}
