//! The QoS controller: the one component that changes scheduling
//! contexts (it holds the scheduling-control capability: `[system]
//! scheduling_controller = "qos"`), giving the components it manages —
//! VMs' world switchers, whose contexts their vCPUs run on — CPU in
//! proportion to their shares, with reservations and limits. The core
//! only enforces the budgets it sets; the policy is `qos_policy`.
//!
//! Arguments: `shares=NAME:S,...` (required: the managed components and
//! their shares), `reserve=NAME:P,...` and `limit=NAME:P,...` (percent of
//! the processor), `period_ms=N` (the budgets' period, default 10),
//! `window_ms=N` (how often it observes and adjusts, default 100),
//! `report_ms=N` (how often it prints what each got, default 1000; 0:
//! never), `priority=N` (the managed contexts' priority, default 100,
//! the system file's default: the core's configure call sets it too) and
//! `processes=NAME,...` (VMs whose world switchers are asked to account
//! CPU time per guest process: each report then has a line per such VM
//! with each process's share of the VM's time and its switches),
//! `realtime=NAME,...` (VMs whose real-time need is learned: see below)
//! and `quanta=1` (processor-state quanta and the debt ledger: below).
//!
//! Real time: the switcher of a VM in `realtime=` measures its guest's
//! timer periods (the CPU time from each wake-up to the next HLT, and
//! the periods whose next tick came first); each window a
//! `qos_policy::realtime::Learner` turns them into "X µs every Y µs",
//! which the controller sets on the VM's context at a priority above the
//! managed ones, without slack (a budget that is too small shows as
//! missed deadlines, which the learner answers by growing it), and the
//! rest of the processor goes to the others by their shares. A line says
//! when the need is learned, how long it took and how far above the
//! measured need the budget is.
//!
//! Quanta: with `quanta=1` every managed VM's switcher counts its WBINVD
//! exits, and each window a `qos_policy::quanta::History` profiles the VM
//! from its exits, flushes and halted time: a tight loop gets a long
//! quantum on its context (it keeps its caches warm against equals), an
//! exit-heavy VM a short one, and a VM that flushes its caches a short
//! one and a yield at every WBINVD (asked of its switcher). A
//! `qos_policy::ledger::Ledger` pays back, over the next windows, what a
//! busy VM received short of its allotment while another was ahead, so
//! the long-run split stays at the shares.
//!
//! At start, and every window after, it reads each managed context's
//! consumed time, finds which left part of its allotment unused (idle:
//! `qos_policy::Demand`), allots the processor again
//! (`qos_policy::allot`: reservations, then limits and idle entities'
//! needs, the rest by shares) and sets each context whose budget changed
//! to its fraction of the period. Entities without a limit may run on
//! slack: when nothing with budget left is ready, a spent context runs
//! anyway, so the processor is not left idle while a managed VM could
//! use it. A report line per `report_ms` says what each got:
//! `qos: 1000 ms: ws-a 66.6% (2 shares, budget 6666 us), ws-b ...; the
//! controller itself 312 us` (its own CPU time over the report's span).
//!
//! It ends when every managed component has ended (the core says so when
//! it reads their contexts).
//!
//! Restart: the settings live in the core, so while the controller is
//! down they stay in force; a new life reads the contexts again and goes
//! on. For fault-injection tests, `crash_after_ms=N` makes its first life
//! panic N ms after it starts.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt::Write;

use qos_api::{Control, VmStatistics, control};
use qos_policy::ledger::{Ledger, entitlement};
use qos_policy::quanta::{History, Profile, Sample};
use qos_policy::realtime::{Learner, Observation, Reservation};
use qos_policy::{Demand, Entity, MAX_ENTITIES, WHOLE, allot, budget_us, lookup, names};
use runtime::arguments::OrExit;
use runtime::hints::GuestHints;
use runtime::queue::{QueueError, Receiver, Sender};
use runtime::{println, syscall};

runtime::component!(main);

/// One managed component.
struct Managed<'a> {
    name: &'a str,
    context: u64,
    entity: Entity,
    /// Its fraction now (parts per million) and the budget set for it.
    fraction: u32,
    budget_us: u64,
    /// Consumed time at the last window, and at the last report.
    used_at_window: u64,
    used_at_report: u64,
    /// A VM's world switcher's reports (`<name>-stats`), the latest, and
    /// the one the last report line started from.
    statistics: Option<Receiver<VmStatistics>>,
    latest: VmStatistics,
    at_report: VmStatistics,
    /// Whether it was idle at the last window.
    idle: bool,
    /// Where to ask its world switcher for observations
    /// (`<name>-control`), and what to ask for ([`control`] bits).
    requests: Option<Sender<Control>>,
    wanted: u64,
    /// Its quantum (µs; 0: the core's round robin).
    quantum_us: u64,
    /// What is set on its context now: (budget, period) µs, priority,
    /// slack, quantum µs.
    set: Option<((u64, u64), u32, bool, u64)>,
    /// The statistics at the last window, and the longest completed
    /// period among the reports read since.
    at_window: VmStatistics,
    window_busy_max: u64,
    /// With `realtime=`: its learner, what it answered last, when it
    /// first knew a period, and whether its convergence was reported.
    learner: Option<Learner>,
    reservation: Option<Reservation>,
    learning_since: Option<u64>,
    converged_reported: bool,
    /// With `quanta=1`: its profile's history.
    history: Option<History>,
    /// Its VM's guest-hints page (every VM's is granted to a QoS
    /// scheduling controller), and what it said at the last window.
    hints: Option<GuestHints>,
    no_work: bool,
    urgent: bool,
    /// When the current second of hint lines began, the lines said in it
    /// and the changes not said (a guest toggling its hints must not
    /// flood the console).
    hint_said_at: u64,
    hint_lines: u32,
    hint_changes: u32,
    /// Its learned real-time need was held to its cap.
    capped: bool,
}

fn main(start: &runtime::Start) -> i32 {
    let arguments = start
        .arguments(&[
            "shares",
            "reserve",
            "limit",
            "period_ms",
            "window_ms",
            "report_ms",
            "priority",
            "crash_after_ms",
            "processes",
            "realtime",
            "quanta",
        ])
        .or_exit();
    let Some(control) = start.capability("scheduling") else {
        println!(
            "qos: no scheduling-control capability: the system must name it [system] scheduling_controller"
        );
        return 2;
    };
    let Some(shares) = arguments.text("shares") else {
        println!("qos: nothing to manage (shares=NAME:S,...)");
        return 2;
    };
    let reserve = arguments.text("reserve").unwrap_or("");
    let processes = arguments.text("processes").unwrap_or("");
    let realtime = arguments.text("realtime").unwrap_or("");
    let quanta = arguments.number::<u32>("quanta", 0).or_exit() != 0;
    let limit = arguments.text("limit").unwrap_or("");
    let period_us = arguments.number::<u64>("period_ms", 10).or_exit() * 1000;
    let window_ms = arguments.number::<u64>("window_ms", 100).or_exit();
    let report_ms = arguments.number::<u64>("report_ms", 1000).or_exit();
    let priority = arguments.number::<u32>("priority", 100).or_exit();
    let crash_after_ms: Option<u64> = arguments
        .optional_number("crash_after_ms")
        .or_exit()
        .filter(|_| start.generation() == 1);
    if period_us == 0 || period_us > runtime::abi::syscall::MAX_PERIOD_US || window_ms == 0 {
        println!("qos: period_ms must be 1..=10000 and window_ms at least 1");
        return 2;
    }
    // Urgent and real-time VMs run one and two priorities above.
    if priority > u32::from(u8::MAX) - 2 {
        println!("qos: priority must be 0..=253 (urgent and real-time VMs run above it)");
        return 2;
    }
    for (list, what) in [(reserve, "reserve"), (limit, "limit")] {
        for name in names(list) {
            if !matches!(lookup(shares, name), Ok(Some(_))) {
                println!("qos: {what}= names '{name}', which shares= does not");
                return 2;
            }
        }
    }
    for (list, what) in [(processes, "processes"), (realtime, "realtime")] {
        for name in list.split(',').filter(|name| !name.is_empty()) {
            if !names(shares).any(|managed| managed == name) {
                println!("qos: {what}= names '{name}', which shares= does not");
                return 2;
            }
            if queue_of(
                start,
                name,
                qos_api::CONTROL_SUFFIX,
                Sender::<Control>::open,
            )
            .is_none()
            {
                println!(
                    "qos: {what}= names '{name}', which is no VM's world switcher (no '{name}{}' queue)",
                    qos_api::CONTROL_SUFFIX
                );
                return 2;
            }
        }
    }

    let mut managed: [Option<Managed<'_>>; MAX_ENTITIES] = Default::default();
    let mut count = 0;
    for name in names(shares) {
        let (Ok(Some(weight)), Ok(reserved), Ok(limited)) = (
            lookup(shares, name),
            lookup(reserve, name),
            lookup(limit, name),
        ) else {
            println!(
                "qos: malformed lists (NAME:NUMBER,...): shares='{shares}' reserve='{reserve}' limit='{limit}'"
            );
            return 2;
        };
        let percent = |value: Option<u32>, default: u32| match value {
            Some(p) if p <= 100 => Ok(p * (WHOLE / 100)),
            Some(_) => Err(()),
            None => Ok(default),
        };
        let (Ok(reserve_ppm), Ok(limit_ppm)) = (percent(reserved, 0), percent(limited, WHOLE))
        else {
            println!("qos: '{name}': a reservation or limit above 100%");
            return 2;
        };
        if count == MAX_ENTITIES {
            println!("qos: at most {MAX_ENTITIES} managed components");
            return 2;
        }
        let Some(context) = start.capability_of(name, ".sc") else {
            println!("qos: no scheduling context of '{name}' ('{name}.sc'): is it a component?");
            return 2;
        };
        if managed[..count].iter().flatten().any(|m| m.name == name) {
            println!("qos: '{name}' named twice in shares=");
            return 2;
        }
        managed[count] = Some(Managed {
            name,
            context,
            entity: Entity {
                shares: weight,
                reserve: reserve_ppm,
                limit: limit_ppm,
            },
            fraction: 0,
            budget_us: 0,
            used_at_window: 0,
            used_at_report: 0,
            statistics: queue_of(start, name, qos_api::QUEUE_SUFFIX, Receiver::open),
            latest: VmStatistics::default(),
            at_report: VmStatistics::default(),
            idle: false,
            requests: queue_of(start, name, qos_api::CONTROL_SUFFIX, Sender::open),
            wanted: listed(processes, name, control::TRACK_PROCESSES)
                | listed(realtime, name, control::TRACK_PERIODS),
            quantum_us: 0,
            set: None,
            at_window: VmStatistics::default(),
            window_busy_max: 0,
            learner: named(realtime, name).then(Learner::default),
            reservation: None,
            learning_since: None,
            converged_reported: false,
            history: None,
            hints: GuestHints::open(start, name),
            no_work: false,
            urgent: false,
            hint_said_at: 0,
            hint_lines: 0,
            hint_changes: 0,
            capped: false,
        });
        if let Some(m) = managed[count].as_mut()
            && quanta
            && m.requests.is_some()
        {
            m.wanted |= control::COUNT_FLUSHES;
            m.history = Some(History::new());
        }
        count += 1;
    }
    let mut entities = [Entity::shares(0); MAX_ENTITIES];
    for (slot, m) in entities.iter_mut().zip(managed.iter().flatten()) {
        *slot = m.entity;
    }
    let mut demands = [Demand::Busy; MAX_ENTITIES];
    let fractions = match allot(&entities[..count], &demands[..count]) {
        Ok(fractions) => fractions,
        Err(error) => {
            println!("qos: the reservations and limits cannot be met: {error:?}");
            return 2;
        }
    };
    let started = syscall::time_ns();
    // The context's time includes earlier lives': this life's starts here.
    let own_at_start = syscall::consumed_ns(None);
    let mut line = runtime::LineWriter::new();
    for (index, m) in managed.iter_mut().flatten().enumerate() {
        m.fraction = fractions[index];
        m.budget_us = budget_us(m.fraction, period_us);
        m.apply(
            control,
            (m.budget_us, period_us),
            priority,
            m.entity.slack(),
        );
        m.used_at_window = syscall::consumed_ns(Some(m.context));
        m.used_at_report = m.used_at_window;
        m.ask();
        let _ = write!(
            line,
            "{}{} {} shares{}{} ({} us of every {} us{})",
            if index == 0 { "" } else { ", " },
            m.name,
            m.entity.shares,
            if m.entity.reserve > 0 {
                ", reserved"
            } else {
                ""
            },
            if m.entity.slack() { "" } else { ", limited" },
            m.budget_us,
            period_us,
            if m.entity.slack() { ", and slack" } else { "" }
        );
    }
    println!(
        "qos: managing {} (generation {}){}{}",
        core::str::from_utf8(line.as_bytes()).unwrap_or(""),
        start.generation(),
        if realtime.is_empty() {
            ""
        } else {
            "; learning real-time needs"
        },
        if quanta {
            "; processor-state quanta and the debt ledger"
        } else {
            ""
        }
    );

    // A VM running an urgent thread (its hints page says so) runs one
    // priority above its peers, a real-time VM two: a guest's hint never
    // reaches a reservation's level.
    let urgent_priority = priority + 1;
    let realtime_priority = priority + 2;
    let mut ledger = Ledger::<MAX_ENTITIES>::new();
    let mut allot_refused = false;
    // The allotments of the window under way, before the ledger's moves.
    let mut allotted = fractions;
    let mut window_at = started;
    let mut report_at = started;
    let mut own_at_report = syscall::consumed_ns(None);
    loop {
        syscall::wait(Some(window_ms * 1000));
        let now = syscall::time_ns();
        let window_ns = now.saturating_sub(window_at).max(1);
        let mut ended = 0;
        let mut entitled = [0u64; MAX_ENTITIES];
        let mut received = [0u64; MAX_ENTITIES];
        let mut settled_idle = [false; MAX_ENTITIES];
        for (index, m) in managed.iter_mut().flatten().enumerate() {
            let (used, gone) = syscall::scheduling_read(m.context);
            let used_now = used.saturating_sub(m.used_at_window);
            let use_ppm = (used_now * u64::from(WHOLE) / window_ns).min(u64::from(WHOLE)) as u32;
            demands[index] = Demand::observe(m.fraction, use_ppm);
            entitled[index] = entitlement(allotted[index], window_ns);
            received[index] = used_now;
            m.used_at_window = used;
            ended += usize::from(gone);
            m.take_statistics();
            m.read_hints(now);
            // A VM that used less than its allotment without halting was
            // not idle: it was held back (it yielded at cache flushes, or
            // others ran in its time), and the ledger owes it.
            if matches!(demands[index], Demand::Idle(_)) && m.ran_throughout() {
                demands[index] = Demand::Busy;
            }
            // A restarted switcher follows nothing: ask again. With quanta,
            // a VM that has not reported for two windows (it makes no
            // exits) is asked again too: the message pokes its vCPU and
            // the switcher reports.
            let stale = quanta
                && !m.no_work
                && now.saturating_sub(m.latest.time_ns) > 2 * window_ms * 1_000_000;
            if (m.latest.sequence > 0 && m.latest.following != m.wanted || stale) && !gone {
                m.ask();
            }
            let idle = matches!(demands[index], Demand::Idle(_));
            if idle != m.idle && !gone && m.reservation.is_none() && !m.no_work {
                println!(
                    "qos: '{}' {} (used {}.{}% of its {}.{}% in the last {} ms)",
                    m.name,
                    if idle { "went idle" } else { "is busy again" },
                    use_ppm / 10_000,
                    use_ppm / 1000 % 10,
                    m.fraction / 10_000,
                    m.fraction / 1000 % 10,
                    window_ns / 1_000_000
                );
            }
            m.idle = idle;
            // A reservation is no share: the ledger leaves it out.
            settled_idle[index] = idle || m.reservation.is_some();
            m.observe_window(now, started, used_now);
        }
        if ended == count {
            let own = syscall::consumed_ns(None);
            let run_ms = (now - started) / 1_000_000;
            println!(
                "BENCH qos-controller-cpu {} us/s (its own CPU time over {run_ms} ms, {count} managed, a window every {window_ms} ms)",
                own.saturating_sub(own_at_start) / run_ms.max(1)
            );
            println!("qos: every managed component has ended; done");
            return 0;
        }
        window_at = now;
        if quanta {
            ledger.settle(
                window_ns,
                &entitled[..count],
                &received[..count],
                &settled_idle[..count],
            );
        }
        // Learned real-time needs are fixed fractions; the others share
        // the rest.
        let mut this_window = entities;
        for (index, m) in managed.iter_mut().flatten().enumerate() {
            // A guest that says it has no work gets next to nothing, and
            // no slack, until it says it has.
            if m.no_work && m.reservation.is_none() {
                this_window[index].reserve = 0;
                this_window[index].limit = NO_WORK_PPM;
                demands[index] = Demand::Busy;
            }
            if let Some(reservation) = m.reservation.as_mut() {
                // A learned need is held to the VM's limit, or to
                // REALTIME_MAX_PPM without one: a guest that overruns on
                // purpose cannot take the processor.
                let cap = entities[index].limit.min(REALTIME_MAX_PPM);
                let cap_us = u64::from(cap) * reservation.period_us / u64::from(WHOLE);
                if reservation.budget_us > cap_us {
                    reservation.budget_us = cap_us.max(1);
                    if !m.capped {
                        println!(
                            "qos: '{}' needs more than its real-time cap of {}%: held to {} us every {} us",
                            m.name,
                            cap / 10_000,
                            reservation.budget_us,
                            reservation.period_us
                        );
                    }
                    m.capped = true;
                }
                let ppm = (reservation.budget_us * u64::from(WHOLE) / reservation.period_us)
                    .min(u64::from(cap)) as u32;
                this_window[index].reserve = ppm;
                this_window[index].limit = ppm;
                demands[index] = Demand::Busy;
            }
        }
        let allotment = allot(&this_window[..count], &demands[..count]);
        if let Err(error) = allotment
            && !allot_refused
        {
            println!(
                "qos: the processor cannot be allotted this window ({error:?}): the last settings stay"
            );
        }
        allot_refused = allotment.is_err();
        if let Ok(mut fractions) = allotment {
            allotted = fractions;
            if quanta {
                ledger.adjust(&mut fractions[..count]);
            }
            for (index, m) in managed.iter_mut().flatten().enumerate() {
                m.fraction = fractions[index];
                match m.reservation {
                    Some(reservation) => {
                        m.budget_us = reservation.budget_us;
                        m.apply(
                            control,
                            (reservation.budget_us, reservation.period_us),
                            realtime_priority,
                            false,
                        );
                    }
                    None => {
                        // A quantum longer than the budget of a period
                        // ends with the budget (docs/QOS.md, "Limits").
                        m.budget_us = budget_us(m.fraction, period_us);
                        let slack = this_window[index].slack();
                        // An urgent thread runs above its peers; its share
                        // stays the same.
                        let priority = if m.urgent { urgent_priority } else { priority };
                        m.apply(control, (m.budget_us, period_us), priority, slack);
                    }
                }
            }
        }
        if report_ms > 0 && now.saturating_sub(report_at) >= report_ms * 1_000_000 {
            let span = now - report_at;
            let mut line = runtime::LineWriter::new();
            for (index, m) in managed.iter_mut().flatten().enumerate() {
                let permille = (m.used_at_window - m.used_at_report) * 1000 / span.max(1);
                let _ = write!(
                    line,
                    "{}{} {}.{}% ({} shares, budget {} us",
                    if index == 0 { "" } else { ", " },
                    m.name,
                    permille / 10,
                    permille % 10,
                    m.entity.shares,
                    m.budget_us
                );
                if let Some(reservation) = m.reservation {
                    let _ = write!(
                        line,
                        " of every {} us, real time{}",
                        reservation.period_us,
                        if reservation.converged {
                            ""
                        } else {
                            ", learning"
                        }
                    );
                }
                if m.quantum_us > 0 {
                    let _ = write!(line, ", quantum {} us", m.quantum_us);
                }
                if m.statistics.is_some() {
                    let used = m.used_at_window - m.used_at_report;
                    let _ = write_statistics(&mut line, &m.latest, &m.at_report, used);
                    m.at_report = m.latest;
                }
                let _ = write!(line, ")");
                m.used_at_report = m.used_at_window;
            }
            let own = syscall::consumed_ns(None);
            println!(
                "qos: {} ms: {}; the controller itself {} us",
                span / 1_000_000,
                core::str::from_utf8(line.as_bytes()).unwrap_or(""),
                (own - own_at_report) / 1000
            );
            for m in managed.iter().flatten() {
                if m.wanted & control::TRACK_PROCESSES != 0 {
                    let mut line = runtime::LineWriter::new();
                    let _ = write_processes(&mut line, &m.latest);
                    println!(
                        "qos: {} processes: {}",
                        m.name,
                        core::str::from_utf8(line.as_bytes()).unwrap_or("")
                    );
                }
            }
            own_at_report = own;
            report_at = now;
        }
        if crash_after_ms.is_some_and(|after| now - started >= after * 1_000_000) {
            println!("qos: crashing (crash_after_ms)");
            panic!("crash requested (crash_after_ms)");
        }
    }
}

/// Whether `name` is in the comma-separated `list`.
fn named(list: &str, name: &str) -> bool {
    list.split(',').any(|listed| listed == name)
}

/// `bit` if `name` is in the comma-separated `list`, else 0.
fn listed(list: &str, name: &str, bit: u64) -> u64 {
    if named(list, name) { bit } else { 0 }
}

/// A profile's name for a report.
fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Flushing => "flushing its caches",
        Profile::ExitHeavy => "exit-heavy",
        Profile::TightLoop => "a tight loop",
        Profile::Balanced => "balanced",
    }
}

/// Lines a second a VM's hint changes may print.
const HINT_LINES: u32 = 4;

/// The most of the processor a learned real-time need is given without a
/// `limit=` for the VM: half.
const REALTIME_MAX_PPM: u32 = WHOLE / 2;

/// What a VM whose guest says it has no work is given: 0.5% of the
/// processor (50 us of every 10 ms), enough to notice its own work coming
/// back and say so in its hints page.
const NO_WORK_PPM: u32 = WHOLE / 200;

impl Managed<'_> {
    /// Reads its guest-hints page: no work, and whether the guest runs an
    /// urgent thread; says when either changes.
    fn read_hints(&mut self, now: u64) {
        let Some(hints) = self.hints else {
            return;
        };
        let no_work = hints.read_u32(guest_api::hints::NO_WORK).unwrap_or(0) != 0;
        let priority = hints.read_u32(guest_api::hints::PRIORITY).unwrap_or(0);
        let urgent = priority >= guest_api::hints::URGENT;
        let changed = (no_work != self.no_work) || (urgent != self.urgent);
        self.no_work = no_work;
        self.urgent = urgent;
        if !changed {
            return;
        }
        // At most HINT_LINES lines a second; the changes beyond are
        // counted and said with the next line.
        if now.saturating_sub(self.hint_said_at) >= 1_000_000_000 {
            self.hint_said_at = now;
            self.hint_lines = 0;
        }
        if self.hint_lines == HINT_LINES {
            self.hint_changes += 1;
            return;
        }
        self.hint_lines += 1;
        let skipped = core::mem::take(&mut self.hint_changes);
        let mut line = runtime::LineWriter::new();
        let _ = if no_work {
            write!(
                line,
                "it has no work: {}.{}% of the CPU, no slack, until it has",
                NO_WORK_PPM / 10_000,
                NO_WORK_PPM / 1000 % 10
            )
        } else if urgent {
            write!(
                line,
                "it runs an urgent thread (priority {priority}): above its peers, same share"
            )
        } else {
            write!(line, "it has work, nothing urgent")
        };
        println!(
            "qos: '{}' says in its hints page {}",
            self.name,
            core::str::from_utf8(line.as_bytes()).unwrap_or("")
        );
        if skipped > 0 {
            println!(
                "qos: '{}' had changed its hints {skipped} times more before (not each said)",
                self.name
            );
        }
    }

    /// Sets its context to `(budget, period)` µs at `priority`, with or
    /// without slack, and its quantum, unless that is what is set.
    fn apply(
        &mut self,
        control: u64,
        (budget_us, period_us): (u64, u64),
        priority: u32,
        slack: bool,
    ) {
        let wanted = ((budget_us, period_us), priority, slack, self.quantum_us);
        if self.set != Some(wanted) {
            syscall::configure_scheduling(
                control,
                self.context,
                (budget_us, period_us),
                priority,
                (slack, self.quantum_us),
            );
            self.set = Some(wanted);
        }
    }

    /// What its switcher reported over the window now ending, for its
    /// real-time learner and its profile (`running`: its CPU time in the
    /// window).
    fn observe_window(&mut self, now: u64, started: u64, running: u64) {
        let (latest, earlier) = (&self.latest, &self.at_window);
        let delta = |of: fn(&VmStatistics) -> u64| of(latest).saturating_sub(of(earlier));
        let periods = delta(|s| s.periods);
        let overruns = delta(|s| s.overruns);
        let span = delta(|s| s.time_ns);
        let exits = delta(|s| s.exits);
        let flushes = delta(|s| s.by_kind[runtime::abi::vcpu::ExitReason::Wbinvd as usize]);
        let halted = delta(|s| s.halted_ns);
        let timer_period_ns = latest.period_ns;
        self.at_window = self.latest;
        if let Some(learner) = self.learner.as_mut() {
            let observation = Observation {
                timer_period_ns,
                periods: periods.min(u64::from(u32::MAX)) as u32,
                max_period_ns: core::mem::take(&mut self.window_busy_max),
                overruns: overruns.min(u64::from(u32::MAX)) as u32,
            };
            if timer_period_ns > 0 && self.learning_since.is_none() {
                self.learning_since = Some(now);
            }
            self.reservation = learner.update(&observation);
            if let Some(reservation) = self.reservation
                && reservation.converged
                && !self.converged_reported
            {
                self.converged_reported = true;
                // The need per context period (the guest's may differ).
                let need_us = (u128::from(learner.need_ns()) * u128::from(reservation.period_us)
                    / u128::from(timer_period_ns.max(1))) as u64;
                let above =
                    (reservation.budget_us as i64 - need_us as i64) * 1000 / need_us.max(1) as i64;
                println!(
                    "qos: '{}' real-time need learned {} ms after the controller started ({} ms after its first period): {} us every {} us, {}{}.{}% {} the {} us a period takes ({})",
                    self.name,
                    (now - started) / 1_000_000,
                    (now - self.learning_since.unwrap_or(now)) / 1_000_000,
                    reservation.budget_us,
                    reservation.period_us,
                    if above < 0 { "-" } else { "" },
                    above.abs() / 10,
                    above.abs() % 10,
                    if above < 0 { "below" } else { "above" },
                    need_us,
                    if (0..=100).contains(&above) {
                        "within 10% above it"
                    } else {
                        "not within 10% above it"
                    }
                );
            }
            if self.reservation.is_none() {
                self.converged_reported = false;
            }
        }
        if let Some(history) = self.history.as_mut()
            && let Some(sample) = Sample::from_counts(exits, flushes, halted, (span, running))
        {
            let before = history.profile();
            let quantum = history.observe(&sample);
            self.quantum_us = u64::from(quantum.slice_us);
            let wanted = if quantum.yield_on_flush {
                self.wanted | control::YIELD_ON_FLUSH
            } else {
                self.wanted & !control::YIELD_ON_FLUSH
            };
            let changed = wanted != self.wanted;
            if quantum.profile != before {
                println!(
                    "qos: '{}' is {} ({} exits/s, {} WBINVD/s, {}.{}% halted): quantum {} us{}{}",
                    self.name,
                    profile_name(quantum.profile),
                    history.exits_per_s(),
                    history.wbinvd_per_s(),
                    history.halted() / 10_000,
                    history.halted() / 1000 % 10,
                    self.quantum_us,
                    if self.quantum_us == 0 {
                        " (none: round robin)"
                    } else {
                        ""
                    },
                    if quantum.yield_on_flush {
                        ", and a yield at every WBINVD"
                    } else {
                        ""
                    }
                );
            }
            if changed {
                self.wanted = wanted;
                self.ask();
            }
        }
    }

    /// Whether its switcher's reports since the last window say its vCPU
    /// hardly halted (under a twentieth of the time): then it wanted the
    /// processor all along. `false` without reports.
    fn ran_throughout(&self) -> bool {
        let span = self.latest.time_ns.saturating_sub(self.at_window.time_ns);
        let halted = self
            .latest
            .halted_ns
            .saturating_sub(self.at_window.halted_ns);
        span > 0 && halted * 20 < span
    }

    /// Asks its world switcher for what the arguments want observed (a
    /// full queue: the next window asks again, seeing it not followed).
    fn ask(&mut self) {
        if let Some(requests) = self.requests.as_mut() {
            let _ = requests.try_send(&Control { flags: self.wanted });
        }
    }

    /// Takes every report waiting from its world switcher, keeping the
    /// latest (each carries running totals).
    fn take_statistics(&mut self) {
        let Some(queue) = self.statistics.as_mut() else {
            return;
        };
        loop {
            match queue.try_receive_into(&mut self.latest) {
                Ok(()) => self.window_busy_max = self.window_busy_max.max(self.latest.busy_max_ns),
                // A restarted switcher counts from zero again.
                Err(QueueError::PeerRestarted(_)) => {
                    self.latest = VmStatistics::default();
                    self.at_report = VmStatistics::default();
                    self.at_window = VmStatistics::default();
                    self.window_busy_max = 0;
                }
                Err(QueueError::WouldBlock) => break,
            }
        }
    }
}

/// The queue `<name><suffix>` of managed component `name`, opened with
/// `open`, if the system gives one (capdl makes `-stats` and `-control`
/// for each VM's world switcher).
fn queue_of<Q, E>(
    start: &runtime::Start,
    name: &str,
    suffix: &str,
    open: impl FnOnce(&runtime::Start, &str) -> Result<Q, E>,
) -> Option<Q> {
    let mut buffer = [0u8; 32];
    let suffix = suffix.as_bytes();
    let queue = buffer.get_mut(..name.len() + suffix.len())?;
    queue[..name.len()].copy_from_slice(name.as_bytes());
    queue[name.len()..].copy_from_slice(suffix);
    open(start, core::str::from_utf8(queue).ok()?).ok()
}

/// `N seen, W CR3 writes: KEY P% (S switches), ...`: each process's share
/// of the time charged to all, from a VM's latest report.
fn write_processes(line: &mut runtime::LineWriter, latest: &VmStatistics) -> core::fmt::Result {
    if latest.following & control::TRACK_PROCESSES == 0 {
        return write!(line, "not tracked yet");
    }
    let seen = &latest.processes[..(latest.process_count as usize).min(qos_api::MAX_PROCESSES)];
    let total: u64 = seen.iter().map(|process| process.ns).sum();
    write!(
        line,
        "{} seen, {} CR3 writes",
        seen.len(),
        latest.by_kind[runtime::abi::vcpu::ExitReason::Cr3Write as usize]
    )?;
    for process in seen {
        let permille = process.ns * 1000 / total.max(1);
        if process.key == qos_api::processes::OTHERS {
            write!(line, ", others")?;
        } else {
            write!(line, ", {:#x}", process.key)?;
        }
        write!(
            line,
            " {}.{}% ({} ms, {} switches)",
            permille / 10,
            permille % 10,
            process.ns / 1_000_000,
            process.switches
        )?;
    }
    Ok(())
}

/// `, N exits/s (most: KIND), S us a slice, H% halted` between two
/// reports of a VM (`used_ns`: its CPU time between them).
fn write_statistics(
    line: &mut runtime::LineWriter,
    now: &VmStatistics,
    then: &VmStatistics,
    used_ns: u64,
) -> core::fmt::Result {
    let span = now.time_ns.saturating_sub(then.time_ns);
    if span == 0 {
        return write!(line, ", no report yet");
    }
    let exits = now.exits.saturating_sub(then.exits);
    let halted = now.halted_ns.saturating_sub(then.halted_ns) * 1000 / span;
    write!(
        line,
        ", {} exits/s",
        u128::from(exits) * 1_000_000_000 / u128::from(span)
    )?;
    if let Some((kind, _)) = now.busiest_kind_since(then) {
        write!(line, " (most: {})", qos_api::kind_name(kind))?;
    }
    let yields = now.flush_yields.saturating_sub(then.flush_yields);
    if yields > 0 {
        write!(line, ", {yields} yields at WBINVD")?;
    }
    // CPU time per slice: from one guest entry to the next exit, the
    // exit's handling included.
    let entries = now.entries.saturating_sub(then.entries);
    if let Some(slice_ns) = used_ns.checked_div(entries) {
        write!(line, ", {} us a slice", slice_ns / 1000)?;
    }
    write!(line, ", {}.{}% halted", halted / 10, halted % 10)
}
