//! The `bench` command: boots every `build/benchmarks/*.toml` system (the
//! scenario format) under QEMU with `-icount shift=0`, so the TSC counts
//! executed instructions, and prints every benchmark line as a table.
//!
//! A benchmark line is a component console line of the form
//! `[<component>] BENCH <name> <value> <unit> [notes...]`, where value is a
//! number. A run fails when its scenario checks fail (expectations,
//! verdict, timeout) or when it prints no benchmark line; the command then
//! exits with status 1. Figures are only printed, never judged: recording
//! them belongs in docs/BENCHMARKS.md with the command that produced them.
//!
//! A benchmark may also boot a test VM on bare QEMU (`guest = "..."`, its
//! lines counted as the component `guest`): named `<name>-native`, it is
//! the baseline of benchmark `<name>`, and every figure they share gets a
//! `<figure>-ratio` line from the same run.
//!
//! A benchmark with `icount = false` measures host time instead: its
//! figures come from pairs of lines `[<component>] TIMED-START <name>` and
//! `[<component>] TIMED-END <name> <bytes> bytes`, whose arrival times
//! give `<name>-throughput` in MiB/s ([`timed_figures`]); its BENCH lines
//! (TSC ticks that are not instructions without icount) are ignored, as
//! are TIMED lines under icount.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::emulator::{ConsoleFeed, Emulator};
use crate::run::{BootOptions, boot_system, programs_of};
use crate::scenario::{self, judge};
use crate::workspace::Workspace;

/// Where benchmark systems live, relative to the workspace root.
pub const BENCHMARK_DIRECTORY: &str = "build/benchmarks";

/// One parsed benchmark line.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub system: String,
    pub component: String,
    pub name: String,
    pub value: f64,
    pub value_text: String,
    pub unit: String,
    pub notes: String,
}

/// Reads `[<component>] BENCH <name> <value> <unit> [notes...]`.
pub fn parse_line(system: &str, line: &str) -> Option<Measurement> {
    let rest = line.strip_prefix('[')?;
    let (component, rest) = rest.split_once("] ")?;
    let rest = rest.strip_prefix("BENCH ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    let value_text = words.next()?;
    let value: f64 = value_text.parse().ok()?;
    let unit = words.next()?;
    Some(Measurement {
        system: system.to_string(),
        component: component.to_string(),
        name: name.to_string(),
        value,
        value_text: value_text.to_string(),
        unit: unit.to_string(),
        notes: words.collect::<Vec<_>>().join(" "),
    })
}

/// Formats measurements as an aligned text table.
pub fn table(measurements: &[Measurement]) -> String {
    let header = ["system", "component", "benchmark", "value", "unit", "notes"];
    let rows: Vec<[&str; 6]> = measurements
        .iter()
        .map(|m| {
            [
                m.system.as_str(),
                m.component.as_str(),
                m.name.as_str(),
                m.value_text.as_str(),
                m.unit.as_str(),
                m.notes.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column == 3 {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Runs `bench`.
pub fn command() -> Result<ExitCode> {
    let workspace = Workspace::load()?;
    let directory = workspace.root.join(BENCHMARK_DIRECTORY);
    let files = if directory.is_dir() {
        scenario::files_in(&directory)?
    } else {
        Vec::new()
    };
    if files.is_empty() {
        bail!(
            "no benchmark systems in {}: add a *.toml there (scenario format)",
            directory.display()
        );
    }
    let programs = workspace.programs()?;
    let benchmarks = files
        .iter()
        .map(|path| scenario::load(path, &programs))
        .collect::<Result<Vec<_>>>()?;
    for benchmark in &benchmarks {
        if benchmark.emulator != Emulator::Qemu {
            bail!(
                "{}: benchmarks run in QEMU (icount); remove `boot`",
                benchmark.path.display()
            );
        }
    }
    let needed = programs_of(
        &benchmarks
            .iter()
            .filter_map(|benchmark| benchmark.system())
            .flat_map(|system| system.programs.iter().cloned())
            .collect::<Vec<_>>(),
    );
    crate::setup::emulators(&[Emulator::Qemu])?;
    let artifacts = workspace.build_target(&needed)?;
    let mut measurements = Vec::new();
    let mut failed = false;
    for benchmark in &benchmarks {
        let outcome = match benchmark.system() {
            Some(system) => {
                let options = BootOptions {
                    emulator: Emulator::Qemu,
                    timeout: Some(benchmark.timeout),
                    icount: benchmark.icount,
                    gdb: false,
                    command_line: String::new(),
                    input: ConsoleFeed::Nothing,
                };
                let stem = format!("bench-{}", benchmark.name);
                boot_system(&workspace, &artifacts, system, &stem, options, &mut |_| {})
            }
            // A test VM on bare QEMU: a baseline.
            None => scenario::boot(&workspace, &artifacts, benchmark, &mut |_| {}),
        }
        .with_context(|| format!("benchmark {} did not run", benchmark.name))?;
        // A test VM on bare QEMU prints its lines without a component.
        let native = benchmark.system().is_none();
        let lines: Vec<String> = match native {
            true => outcome
                .lines
                .iter()
                .map(|line| format!("[guest] {line}"))
                .collect(),
            false => outcome.lines.clone(),
        };
        let found: Vec<Measurement> = if benchmark.icount {
            lines
                .iter()
                .filter_map(|line| parse_line(&benchmark.name, line))
                .collect()
        } else {
            timed_figures(&benchmark.name, &lines, &outcome.arrivals)
        };
        let seconds = outcome.elapsed.as_secs_f64();
        match judge(benchmark, &outcome) {
            Err(reason) => {
                failed = true;
                println!(
                    "benchmark {} ... FAIL: {reason} ({seconds:.1} s)",
                    benchmark.name
                );
                for line in crate::console::tail(&outcome.lines, 30) {
                    println!("    | {line}");
                }
            }
            Ok(()) if found.is_empty() => {
                failed = true;
                println!(
                    "benchmark {} ... FAIL: no BENCH lines ({seconds:.1} s)",
                    benchmark.name
                );
            }
            Ok(()) => println!(
                "benchmark {} ... {} figure{} ({seconds:.1} s)",
                benchmark.name,
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ),
        }
        measurements.extend(found);
    }
    measurements.extend(native_ratios(&measurements));
    if let Some(ours) = measurements
        .iter()
        .find(|m| m.name == LINUX_FIGURE)
        .map(|m| m.value)
    {
        match bare_linux(&workspace) {
            Ok(bare) => {
                println!(
                    "benchmark bare-qemu ... 1 figure (the Debian guest without the hypervisor)"
                );
                measurements.push(Measurement {
                    system: "bare-qemu".into(),
                    component: "-".into(),
                    name: LINUX_FIGURE.into(),
                    value: bare,
                    value_text: format!("{bare}"),
                    unit: "instructions".into(),
                    notes:
                        "(the same kernel, initramfs and command line on QEMU's microvm machine)"
                            .into(),
                });
                let ratio = ours / bare;
                measurements.push(Measurement {
                    system: "linux-boot".into(),
                    component: "-".into(),
                    name: "linux-userspace-ratio".into(),
                    value: ratio,
                    value_text: format!("{ratio:.3}"),
                    unit: "x".into(),
                    notes: "(under the hypervisor against bare QEMU, this run)".into(),
                });
            }
            Err(error) => {
                failed = true;
                println!("benchmark bare-qemu ... FAIL: {error:#}");
            }
        }
    }
    println!();
    print!("{}", table(&measurements));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The throughput figures of a run without icount: for each
/// `[<component>] TIMED-END <name> <bytes> bytes` line, the bytes over the
/// host time since the last `[<component>] TIMED-START <name>` line before
/// it (`arrivals[i]` is when line `i` arrived), as `<name>-throughput` in
/// MiB/s. An end without its start, or lines that arrived at the same
/// instant, give no figure.
pub fn timed_figures(
    system: &str,
    lines: &[String],
    arrivals: &[std::time::Duration],
) -> Vec<Measurement> {
    let mut figures = Vec::new();
    for (end, line) in lines.iter().enumerate() {
        let Some((component, rest)) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("] TIMED-END "))
        else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(bytes), Some("bytes")) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(bytes) = bytes.parse::<u64>() else {
            continue;
        };
        let start_line = format!("[{component}] TIMED-START {name}");
        let Some(start) = lines[..end]
            .iter()
            .rposition(|line| line.trim_end() == start_line)
        else {
            continue;
        };
        let (Some(from), Some(to)) = (arrivals.get(start), arrivals.get(end)) else {
            continue;
        };
        let seconds = to.saturating_sub(*from).as_secs_f64();
        if seconds <= 0.0 {
            continue;
        }
        let value = bytes as f64 / seconds / f64::from(1u32 << 20);
        figures.push(Measurement {
            system: system.to_string(),
            component: component.to_string(),
            name: format!("{name}-throughput"),
            value,
            value_text: format!("{value:.2}"),
            unit: "MiB/s".into(),
            notes: format!("({bytes} bytes in {seconds:.3} s of host time, no icount)"),
        });
    }
    figures
}

/// For each figure of a benchmark `NAME-native` (a test VM on bare QEMU),
/// the same figure of benchmark `NAME` against it: `<figure>-ratio`,
/// measured in this run.
fn native_ratios(measurements: &[Measurement]) -> Vec<Measurement> {
    let mut ratios = Vec::new();
    for native in measurements {
        let Some(ours_system) = native.system.strip_suffix("-native") else {
            continue;
        };
        let Some(ours) = measurements
            .iter()
            .find(|m| m.system == ours_system && m.name == native.name)
        else {
            continue;
        };
        if native.value <= 0.0 {
            continue;
        }
        let ratio = ours.value / native.value;
        ratios.push(Measurement {
            system: ours_system.into(),
            component: "-".into(),
            name: format!("{}-ratio", native.name),
            value: ratio,
            value_text: format!("{ratio:.2}"),
            unit: "x".into(),
            notes: format!("(against {}, this run)", native.system),
        });
    }
    ratios
}

/// The benchmark line the Debian guest's initramfs prints.
const LINUX_FIGURE: &str = "linux-userspace";
/// How long the bare-QEMU baseline may take.
const BARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(240);

/// The same Debian guest on bare QEMU under `-icount`: the instructions to
/// its first userspace instruction, from the `BENCH` line its initramfs
/// prints (there is no component prefix without the hypervisor).
fn bare_linux(workspace: &Workspace) -> Result<f64> {
    use std::io::BufRead;
    let guest = crate::debian::fetch(&crate::debian::cache_directory(&workspace.target_directory))?;
    let qemu = crate::tools::require(crate::tools::QEMU)?;
    let mut child = crate::debian::bare_command(&qemu, &guest, true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("could not start QEMU for the bare baseline")?;
    let stdout = child.stdout.take().context("QEMU's stdout is not a pipe")?;
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| bare_figure(&line))
    });
    let start = std::time::Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > BARE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("bare QEMU did not finish in {} s", BARE_TIMEOUT.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    reader
        .join()
        .ok()
        .flatten()
        .context("bare QEMU printed no BENCH linux-userspace line")
}

/// The figure of a bare guest's `BENCH linux-userspace N ...` line.
fn bare_figure(line: &str) -> Option<f64> {
    let rest = line.trim().strip_prefix("BENCH ")?;
    let mut words = rest.split_whitespace();
    (words.next()? == LINUX_FIGURE)
        .then(|| words.next()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_baseline_gives_each_shared_figure_a_ratio() {
        let figure = |system: &str, name: &str, value: f64| Measurement {
            system: system.into(),
            component: "c".into(),
            name: name.into(),
            value,
            value_text: format!("{value}"),
            unit: "instructions/request".into(),
            notes: String::new(),
        };
        let measurements = [
            figure("guest-disk", "read", 25_000.0),
            figure("guest-disk", "write", 30_000.0),
            figure("guest-disk-native", "read", 10_000.0),
            figure("guest-disk-native", "other", 1.0),
            figure("lonely-native", "read", 5.0),
        ];
        let ratios = native_ratios(&measurements);
        assert_eq!(ratios.len(), 1);
        assert_eq!(
            (
                ratios[0].system.as_str(),
                ratios[0].name.as_str(),
                ratios[0].value_text.as_str()
            ),
            ("guest-disk", "read-ratio", "2.50")
        );
    }

    #[test]
    fn timed_lines_give_throughput_from_their_arrival_times() {
        let lines: Vec<String> = [
            "[guest] TIMED-START read",
            "[other] TIMED-END read 1048576 bytes",
            "[guest] noise",
            "[guest] TIMED-END read 1048576 bytes",
            "[guest] TIMED-END lonely 10 bytes",
            "[guest] TIMED-START same",
            "[guest] TIMED-END same 10 bytes",
        ]
        .map(String::from)
        .to_vec();
        let at = |ms: u64| std::time::Duration::from_millis(ms);
        let arrivals = [
            at(1000),
            at(1100),
            at(1200),
            at(1500),
            at(1600),
            at(1700),
            at(1700),
        ];
        let figures = timed_figures("disk", &lines, &arrivals);
        assert_eq!(figures.len(), 1, "{figures:?}");
        assert_eq!(
            (
                figures[0].component.as_str(),
                figures[0].name.as_str(),
                figures[0].value_text.as_str(),
                figures[0].unit.as_str()
            ),
            ("guest", "read-throughput", "2.00", "MiB/s")
        );
        assert!(
            figures[0].notes.contains("in 0.500 s"),
            "{}",
            figures[0].notes
        );
    }

    #[test]
    fn parses_benchmark_lines() {
        let measurement = parse_line(
            "syscall",
            "[bench] BENCH null-syscall 64 instructions/call median of 1000",
        )
        .unwrap();
        assert_eq!(measurement.component, "bench");
        assert_eq!(measurement.name, "null-syscall");
        assert_eq!(measurement.value, 64.0);
        assert_eq!(measurement.unit, "instructions/call");
        assert_eq!(measurement.notes, "median of 1000");
        assert!(parse_line("s", "[bench] BENCH x 1.5 ms").is_some());
        assert!(parse_line("s", "[bench] BENCH x fast ms").is_none());
        assert!(parse_line("s", "[bench] BENCH x 3").is_none());
        assert!(parse_line("s", "[bench] hello BENCH x 3 ms").is_none());
        assert!(parse_line("s", "BENCH x 3 ms").is_none());
    }

    #[test]
    fn reads_the_bare_guests_figure() {
        assert_eq!(
            bare_figure("BENCH linux-userspace 634100000 instructions (from ...)"),
            Some(634_100_000.0)
        );
        assert_eq!(bare_figure("BENCH other 5 x"), None);
        assert_eq!(bare_figure("guest: userspace reached at TSC 5"), None);
        assert_eq!(bare_figure("BENCH linux-userspace soon"), None);
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [
            parse_line("sys", "[bench] BENCH null-syscall 64 instructions/call").unwrap(),
            parse_line(
                "sys",
                "[bench] BENCH ipc 1200 instructions/round-trip two queues",
            )
            .unwrap(),
        ];
        let text = table(&rows);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("system  component  benchmark     value  unit"));
        assert!(lines[1].contains("null-syscall     64  instructions/call"));
        assert!(lines[2].ends_with("1200  instructions/round-trip  two queues"));
    }
}
