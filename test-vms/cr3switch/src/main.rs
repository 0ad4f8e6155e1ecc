//! Checks the world switcher's per-process accounting (the PROCESS
//! hypercall): the guest runs as two "processes", two page-table roots
//! over the same memory, and compares what the hypervisor charged each
//! with what it measured itself.
//!
//! Process A is the boot root (the PML4 the runtime built); process B is
//! [`SECOND_ROOT`], a static page holding a copy of A's PML4, so both map
//! the same memory ([`guest_runtime::paging`]). Under our hypervisor the
//! guest first waits until the switcher tracks processes: it asks PROCESS
//! about A until the answer counts at least one process tracked, yielding
//! between calls, and fails after 10 s by the TSC (or [`MAX_POLLS`]
//! calls). It then reads PROCESS for A and for B, runs [`ROUNDS`] rounds
//! of: load B, spin [`B_MICROSECONDS`] of arithmetic timed by the TSC,
//! load A, spin [`A_MICROSECONDS`] (about 3 s in all), summing each
//! loop's TSC ticks per process, and reads PROCESS for A and B again. The
//! TSC's rate comes from the paravirtual clock (natively: measured against
//! the PIT; [`guest_runtime::clock`]).
//!
//! Then it times [`BENCH_ROUNDS`] writes of A's root again (`rdtsc; mov
//! cr3; rdtsc`, an exit each while tracked; the minimum, the empty pair's
//! minimum subtracted): `BENCH cr3-write-exit <n> ticks/round-trip
//! (median <m>, ...)`, instructions under `-icount shift=0`
//! (`cargo run -p build -- bench`). Natively the same line is the cost
//! of a MOV to CR3 without a hypervisor.
//!
//! Checked from the differences of the two readings: CR3 writes seen at
//! least 2 × [`ROUNDS`] (exactly that many expected), switches into A and
//! into B exactly [`ROUNDS`] each, exactly 2 processes tracked, the ratio
//! of the time charged to A to that charged to B within [`TOLERANCE`] of
//! the ratio of the TSC time measured in A's loops to that in B's, and
//! each process's charged time within [`TOLERANCE`] of its measured time.
//!
//! Prints `cr3switch: TSC at <f> MHz (from the paravirtual clock|against
//! the PIT)`, `cr3switch: process A is CR3 <hex> (the boot tables),
//! process B is CR3 <hex> (a copy of their PML4)`, under our hypervisor
//! `cr3switch: tracking on after <n> PROCESS calls (<ms> ms), <p>
//! process(es) tracked`, then `cr3switch: measured A <ms> ms and B <ms> ms
//! in <n> rounds (<pauses> pauses over 100 us inside the loops, <ms> ms,
//! the longest <us> us)`, and the line of checks: `cr3switch: <w> CR3
//! writes seen (<2K> expected), <a> switches into A and <b> into B (<K>
//! each expected), <p> processes tracked (2 expected); charged A <ms> ms
//! and B <ms> ms, ratio <r>; measured ratio <r>: ratios <x>% apart;
//! charged over measured A <x>%, B <x>%`. Natively (or under another
//! hypervisor) it runs the same rounds, which proves both roots work, and
//! prints `cr3switch: running native, no accounting to check` instead of
//! the tracking and check lines. Last line `TEST cr3switch PASS`, or
//! `TEST cr3switch FAIL: <why>` (exit status 1).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::fmt;
use core::hint::black_box;

use guest_runtime::api::OK;
use guest_runtime::clock::{self, TscRate};
use guest_runtime::hypervisor::{self, ProcessCost};
use guest_runtime::paging::{self, PageTableRoot};
use guest_runtime::{Hypervisor, fail, println, rdtsc, rdtsc_ordered};

guest_runtime::entry!("cr3switch", main);

/// Rounds of B then A.
const ROUNDS: u64 = 50;
/// Time spun in B per round.
const B_MICROSECONDS: u64 = 20_000;
/// Time spun in A per round: twice B's.
const A_MICROSECONDS: u64 = 40_000;
/// How long to wait for the switcher to track processes.
const TRACKING_TIMEOUT_MICROSECONDS: u64 = 10_000_000;
/// PROCESS calls to wait at most, whatever the TSC says.
const MAX_POLLS: u64 = 10_000_000;
/// How far charged and measured time (and their ratios) may differ.
const TOLERANCE: f64 = 0.02;
/// Two TSC reads in a loop this far apart: the loop was paused (the VM not
/// run, or an exit); counted, to explain a failure.
const PAUSE_MICROSECONDS: u64 = 100;

/// CR3 writes timed for the benchmark line.
const BENCH_ROUNDS: usize = 1000;

/// Process B's root: a copy of the boot PML4.
static SECOND_ROOT: PageTableRoot = PageTableRoot::new();

/// Process indices.
const A: usize = 0;
const B: usize = 1;

/// What the loops measured.
#[derive(Default)]
struct Measured {
    /// TSC ticks spent in each process's loops.
    ticks: [u64; 2],
    /// Pauses of more than [`PAUSE_MICROSECONDS`] inside the loops, their
    /// total and the longest, in TSC ticks.
    pauses: u64,
    paused: u64,
    longest: u64,
}

fn main() -> u32 {
    let found = guest_runtime::detect();
    let ours = matches!(found, Hypervisor::Microvisor { .. });
    if let Hypervisor::Microvisor { version, .. } = found
        && !found.has_process()
    {
        fail(format_args!(
            "the hypervisor (interface version {version}) offers no PROCESS hypercall"
        ));
    }
    let rate = clock::tsc_rate();
    println!(
        "cr3switch: TSC at {}.{:03} MHz ({})",
        rate.hz / 1_000_000,
        rate.hz / 1_000 % 1_000,
        rate.source
    );
    let a = paging::current();
    if a != paging::boot_root() {
        fail(format_args!(
            "CR3 is {a:#x}, not the boot tables at {:#x}",
            paging::boot_root()
        ));
    }
    SECOND_ROOT.copy_current();
    let b = SECOND_ROOT.cr3();
    println!(
        "cr3switch: process A is CR3 {a:#x} (the boot tables), process B is CR3 {b:#x} (a copy of their PML4)"
    );
    if !ours {
        println!("cr3switch: running native, no accounting to check");
        let measured = rounds(&rate);
        report_measured(&rate, &measured);
        bench();
        println!("TEST cr3switch PASS");
        return 0;
    }

    wait_for_tracking(a, &rate);
    let before = [process(a), process(b)];
    let measured = rounds(&rate);
    let after = [process(a), process(b)];
    report_measured(&rate, &measured);
    match check(&rate, &measured, &before, &after) {
        None => {
            bench();
            println!("TEST cr3switch PASS");
            0
        }
        Some(why) => fail(format_args!("{why}")),
    }
}

/// PROCESS for `cr3`, failing the test unless it answers OK.
fn process(cr3: u64) -> ProcessCost {
    let answer = hypervisor::process(cr3);
    if answer.status != OK {
        fail(format_args!(
            "PROCESS for CR3 {cr3:#x} answered {:#x}",
            answer.status
        ));
    }
    answer
}

/// Asks PROCESS about `a` until it counts a process tracked; fails after
/// [`TRACKING_TIMEOUT_MICROSECONDS`] or [`MAX_POLLS`] calls.
fn wait_for_tracking(a: u64, rate: &TscRate) {
    let start = rdtsc();
    let limit = rate.ticks(TRACKING_TIMEOUT_MICROSECONDS);
    let mut polls = 0u64;
    loop {
        let answer = process(a);
        polls += 1;
        if answer.tracked >= 1 {
            println!(
                "cr3switch: tracking on after {polls} PROCESS calls ({} ms), {} process(es) tracked",
                rate.microseconds(rdtsc() - start) / 1000,
                answer.tracked
            );
            return;
        }
        if rdtsc() - start > limit || polls >= MAX_POLLS {
            fail(format_args!(
                "the world switcher did not track processes within {} s ({polls} PROCESS calls)",
                TRACKING_TIMEOUT_MICROSECONDS / 1_000_000
            ));
        }
        hypervisor::yield_now();
    }
}

/// The [`ROUNDS`] rounds of B then A; returns to A.
fn rounds(rate: &TscRate) -> Measured {
    let mut measured = Measured::default();
    let (b_ticks, a_ticks) = (rate.ticks(B_MICROSECONDS), rate.ticks(A_MICROSECONDS));
    let pause = rate.ticks(PAUSE_MICROSECONDS);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..ROUNDS {
        SECOND_ROOT.load();
        spin(B, b_ticks, pause, &mut state, &mut measured);
        paging::load_boot_root();
        spin(A, a_ticks, pause, &mut state, &mut measured);
    }
    black_box(state);
    measured
}

/// Arithmetic until `ticks` TSC ticks have passed since it started; adds
/// the ticks it took to `process`'s.
fn spin(process: usize, ticks: u64, pause: u64, state: &mut u64, measured: &mut Measured) {
    let start = rdtsc_ordered();
    let end = start + ticks;
    let mut last = start;
    loop {
        for _ in 0..16 {
            *state = guest_runtime::compute_step(*state);
        }
        let now = rdtsc();
        let gap = now.wrapping_sub(last);
        if gap > pause {
            measured.pauses += 1;
            measured.paused += gap;
        }
        measured.longest = measured.longest.max(gap);
        last = now;
        if now >= end {
            break;
        }
    }
    measured.ticks[process] += last - start;
}

fn report_measured(rate: &TscRate, measured: &Measured) {
    println!(
        "cr3switch: measured A {} and B {} in {ROUNDS} rounds ({} pauses over {PAUSE_MICROSECONDS} us inside the loops, {}, the longest {} us)",
        Ms(rate.nanoseconds(measured.ticks[A])),
        Ms(rate.nanoseconds(measured.ticks[B])),
        measured.pauses,
        Ms(rate.nanoseconds(measured.paused)),
        rate.microseconds(measured.longest)
    );
}

/// Prints the line of checks; returns why the test fails, if it does.
fn check(
    rate: &TscRate,
    measured: &Measured,
    before: &[ProcessCost; 2],
    after: &[ProcessCost; 2],
) -> Option<Why> {
    // No CR3 write between the two readings of each pair.
    let writes = after[A].cr3_writes.wrapping_sub(before[B].cr3_writes);
    let switches = [A, B].map(|p| after[p].switches_in.wrapping_sub(before[p].switches_in));
    let charged = [A, B].map(|p| after[p].charged_ns.wrapping_sub(before[p].charged_ns));
    let tracked = after[B].tracked;
    let measured_ns = measured.ticks.map(|ticks| rate.nanoseconds(ticks));
    let ratio = |pair: [u64; 2]| pair[A] as f64 / pair[B].max(1) as f64;
    let (charged_ratio, measured_ratio) = (ratio(charged), ratio(measured_ns));
    let ratios_apart = charged_ratio / measured_ratio - 1.0;
    let over = [A, B].map(|p| charged[p] as f64 / measured_ns[p].max(1) as f64 - 1.0);
    println!(
        "cr3switch: {writes} CR3 writes seen ({} expected), {} switches into A and {} into B ({ROUNDS} each expected), {tracked} processes tracked (2 expected); charged A {} and B {}, ratio {charged_ratio:.4}; measured ratio {measured_ratio:.4}: ratios {}% apart; charged over measured A {}%, B {}%",
        2 * ROUNDS,
        switches[A],
        switches[B],
        Ms(charged[A]),
        Ms(charged[B]),
        Percent(ratios_apart),
        Percent(over[A]),
        Percent(over[B]),
    );
    if writes < 2 * ROUNDS {
        return Some(Why::Writes(writes));
    }
    for (process, name) in [(A, 'A'), (B, 'B')] {
        if switches[process] != ROUNDS {
            return Some(Why::Switches(name, switches[process]));
        }
    }
    if tracked != 2 {
        return Some(Why::Tracked(tracked));
    }
    if charged[A] == 0 || charged[B] == 0 {
        return Some(Why::Uncharged);
    }
    if ratios_apart.abs() > TOLERANCE {
        return Some(Why::Ratio(charged_ratio, measured_ratio));
    }
    for (process, name) in [(A, 'A'), (B, 'B')] {
        if over[process].abs() > TOLERANCE {
            return Some(Why::Time(name, charged[process], measured_ns[process]));
        }
    }
    None
}

/// Why the checks failed.
enum Why {
    Writes(u64),
    Switches(char, u64),
    Tracked(u64),
    Uncharged,
    Ratio(f64, f64),
    Time(char, u64, u64),
}

impl fmt::Display for Why {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = (TOLERANCE * 100.0) as u32;
        match *self {
            Self::Writes(writes) => write!(
                formatter,
                "{writes} CR3 writes seen, fewer than the {} made",
                2 * ROUNDS
            ),
            Self::Switches(name, switches) => write!(
                formatter,
                "{switches} switches into {name} counted, {ROUNDS} made"
            ),
            Self::Tracked(tracked) => {
                write!(formatter, "{tracked} processes tracked, 2 expected")
            }
            Self::Uncharged => write!(formatter, "a process was charged no time"),
            Self::Ratio(charged, measured) => write!(
                formatter,
                "charged A:B ratio {charged:.4} is not within {percent}% of the measured {measured:.4}"
            ),
            Self::Time(name, charged, measured) => write!(
                formatter,
                "{name} was charged {}, not within {percent}% of the {} measured",
                Ms(charged),
                Ms(measured)
            ),
        }
    }
}

/// Nanoseconds shown as milliseconds with three decimals.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}.{:03} ms",
            self.0 / 1_000_000,
            self.0 / 1_000 % 1_000
        )
    }
}

/// A fraction shown as a signed percentage with two decimals.
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:+.2}", self.0 * 100.0)
    }
}

/// Times [`BENCH_ROUNDS`] writes of the boot root (the one loaded: no
/// process switch) and prints the `BENCH cr3-write-exit` line.
fn bench() {
    let mut samples = [0u64; BENCH_ROUNDS];
    let mut timed = |probe: &dyn Fn() -> u64| {
        for _ in 0..BENCH_ROUNDS / 10 {
            probe();
        }
        for sample in samples.iter_mut() {
            *sample = probe();
        }
        samples.sort_unstable();
        (samples[0], samples[BENCH_ROUNDS / 2])
    };
    let (empty, _) = timed(&|| {
        let start = rdtsc();
        rdtsc().wrapping_sub(start)
    });
    let (minimum, median) = timed(&|| {
        let start = rdtsc();
        paging::load_boot_root();
        rdtsc().wrapping_sub(start)
    });
    println!(
        "BENCH cr3-write-exit {} ticks/round-trip (median {}, {BENCH_ROUNDS} rounds, empty rdtsc pair {empty} subtracted)",
        minimum.saturating_sub(empty),
        median.saturating_sub(empty)
    );
}
