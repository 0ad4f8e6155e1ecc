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
//! with each process's share of the VM's time and its switches).
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
use qos_policy::{Demand, Entity, MAX_ENTITIES, WHOLE, allot, budget_us, lookup, names};
use runtime::arguments::OrExit;
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
    for (list, what) in [(reserve, "reserve"), (limit, "limit")] {
        for name in names(list) {
            if !matches!(lookup(shares, name), Ok(Some(_))) {
                println!("qos: {what}= names '{name}', which shares= does not");
                return 2;
            }
        }
    }
    for name in processes.split(',').filter(|name| !name.is_empty()) {
        if !names(shares).any(|managed| managed == name) {
            println!("qos: processes= names '{name}', which shares= does not");
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
                "qos: processes= names '{name}', which is no VM's world switcher (no '{name}{}' queue)",
                qos_api::CONTROL_SUFFIX
            );
            return 2;
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
            wanted: if processes.split(',').any(|listed| listed == name) {
                control::TRACK_PROCESSES
            } else {
                0
            },
            quantum_us: 0,
        });
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
    let mut line = runtime::LineWriter::new();
    for (index, m) in managed.iter_mut().flatten().enumerate() {
        m.fraction = fractions[index];
        m.budget_us = budget_us(m.fraction, period_us);
        syscall::configure_scheduling(
            control,
            m.context,
            (m.budget_us, period_us),
            priority,
            (m.entity.slack(), m.quantum_us),
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
        "qos: managing {} (generation {})",
        core::str::from_utf8(line.as_bytes()).unwrap_or(""),
        start.generation()
    );

    let mut window_at = started;
    let mut report_at = started;
    let mut own_at_report = syscall::consumed_ns(None);
    loop {
        syscall::wait(Some(window_ms * 1000));
        let now = syscall::time_ns();
        let window_ns = now.saturating_sub(window_at).max(1);
        let mut ended = 0;
        for (index, m) in managed.iter_mut().flatten().enumerate() {
            let (used, gone) = syscall::scheduling_read(m.context);
            let use_ppm = ((used - m.used_at_window) * u64::from(WHOLE) / window_ns)
                .min(u64::from(WHOLE)) as u32;
            demands[index] = Demand::observe(m.fraction, use_ppm);
            m.used_at_window = used;
            ended += usize::from(gone);
            m.take_statistics();
            // A restarted switcher follows nothing: ask again.
            if m.latest.sequence > 0 && m.latest.following != m.wanted && !gone {
                m.ask();
            }
            let idle = matches!(demands[index], Demand::Idle(_));
            if idle != m.idle && !gone {
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
        }
        if ended == count {
            println!("qos: every managed component has ended; done");
            return 0;
        }
        window_at = now;
        if let Ok(fractions) = allot(&entities[..count], &demands[..count]) {
            for (index, m) in managed.iter_mut().flatten().enumerate() {
                let budget = budget_us(fractions[index], period_us);
                m.fraction = fractions[index];
                if budget != m.budget_us {
                    m.budget_us = budget;
                    syscall::configure_scheduling(
                        control,
                        m.context,
                        (budget, period_us),
                        priority,
                        (m.entity.slack(), m.quantum_us),
                    );
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
                if m.statistics.is_some() {
                    let _ = write_statistics(&mut line, &m.latest, &m.at_report);
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

impl Managed<'_> {
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
                Ok(()) => {}
                // A restarted switcher counts from zero again.
                Err(QueueError::PeerRestarted(_)) => self.at_report = VmStatistics::default(),
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

/// `, N exits/s (most: KIND), H% halted` between two reports of a VM.
fn write_statistics(
    line: &mut runtime::LineWriter,
    now: &VmStatistics,
    then: &VmStatistics,
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
    write!(line, ", {}.{}% halted", halted / 10, halted % 10)
}
