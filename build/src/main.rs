//! `mvbuild`, the microvisor build tool (xtask-style; `cargo mv ...` is an
//! alias for `cargo run -q -p build -- ...`).
//!
//! Subcommands: `run` builds the core and components, packs a system's boot
//! image and boots it in QEMU (or Bochs through GRUB) with the console on
//! stdout; `test` runs the host unit tests and the scenario tests and ends
//! with one `N passed, N failed` line; `bench` prints the benchmark
//! systems' figures; `lint` runs rustfmt and clippy as CI does; `cdl`
//! prints a system description's object and capability listing. Commands
//! set up what a fresh Debian/Ubuntu machine lacks before they need it (the
//! Rust target and components, the emulator packages; see [`setup`]). Every
//! command exits 2 with one `error: ...` line on a tool or configuration
//! error; `run` adds 1 (system failure) and 124 (timeout), see
//! [`run::exit_status`]; `disk` adds 141, with nothing on stderr, when its
//! standard output is closed early ([`disk::EXIT_OUTPUT_CLOSED`]). Nothing
//! here needs a terminal or stdin.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bochs;
mod campaign;
mod command_line;
mod console;
mod corrupt;
mod debian;
mod disk;
mod elf32;
mod emulator;
mod host_tests;
mod initramfs;
mod layers;
mod lint;
mod pack;
mod qemu;
mod run;
mod scenario;
mod setup;
mod suite;
mod system;
mod tools;
mod workspace;

/// The microvisor build tool: build, boot, test, measure, lint.
#[derive(Debug, Parser)]
#[command(name = "mvbuild", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build everything, pack a system image, boot it and stream its console.
    Run(run::RunArguments),
    /// Run the host unit tests and the scenario tests; ends with `N passed, N failed`.
    Test(suite::TestArguments),
    /// Boot the build/benchmarks systems with -icount and print their figures.
    Bench,
    /// Inject faults into a running system's components one after
    /// another and tally what survives (see docs/RELIABILITY.md).
    Campaign(campaign::CampaignArguments),
    /// Check formatting and run clippy with -D warnings (host and target).
    Lint,
    /// Check a system description and print its capDL-style listing of
    /// every object and capability.
    Cdl {
        /// The system file [default: examples/default.toml]
        system: Option<std::path::PathBuf>,
    },
    /// Fetch the Debian cloud kernel and build a busybox initramfs for it
    /// (cached under target/guests/debian-cloud/); with --bare, boot them
    /// on bare QEMU (the baseline the hypervisor's Linux boot is measured
    /// against).
    Guest {
        /// Boot the guest on bare QEMU (microvm with ACPI, LAPIC, IOAPIC,
        /// RTC and COM1) and stream its console.
        #[arg(long)]
        bare: bool,
        /// With --bare: run under -icount shift=0 (the TSC counts
        /// instructions).
        #[arg(long, requires = "bare")]
        icount: bool,
    },
    /// Create, inspect, check and change VMKFS disk images.
    Disk {
        #[command(subcommand)]
        command: disk::DiskCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(arguments) => run::command(arguments),
        Command::Test(arguments) => Ok(suite::command(arguments)),
        Command::Bench => bench::command(),
        Command::Campaign(arguments) => campaign::command(arguments),
        Command::Lint => lint::command(),
        Command::Cdl { system } => system::print_listing(system),
        Command::Disk { command } => disk::run(command),
        Command::Guest { bare, icount } => debian::command(bare, icount),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // Standard error may be closed or full too; then there is nowhere
            // left to say so, and the exit status tells.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(run::EXIT_ERROR)
        }
    }
}
