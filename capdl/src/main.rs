//! The `capdl` command: checks a system description and writes its boot
//! spec or its capDL-style listing.
//!
//! `capdl [--emit check|cdl|spec] [--programs DIR] [--machine-memory SIZE]
//! [-o OUT] FILE`. Errors go to standard error in rustc's format and the
//! exit status is 1; `--emit spec` needs `-o` (the spec is binary). The
//! build tool uses the library directly; this command is for people and
//! scripts.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Emit {
    /// Only check the description.
    Check,
    /// The capDL-style listing of every object and capability.
    Cdl,
    /// The binary boot spec.
    Spec,
}

/// Check a system description and lower it to a boot spec or a listing.
#[derive(Debug, Parser)]
#[command(name = "capdl", version)]
struct Arguments {
    /// The system description (TOML).
    file: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "cdl")]
    emit: Emit,
    /// Where to write it (default: standard output; required for spec).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The directory whose group folders (system/, test/) hold the
    /// component programs systems may name.
    #[arg(long, default_value = "components")]
    programs: PathBuf,
    /// The machine memory the system must fit in, such as "448MiB".
    #[arg(long, default_value = "448MiB", value_parser = capdl::units::parse_size)]
    machine_memory: u64,
}

fn run(arguments: &Arguments) -> Result<bool> {
    let programs = capdl::ProgramSet::scan(&arguments.programs).with_context(|| {
        format!(
            "cannot list the programs in {}",
            arguments.programs.display()
        )
    })?;
    let options = capdl::Options {
        machine_memory: arguments.machine_memory,
        ..capdl::Options::default()
    };
    let system = match capdl::load_with(&arguments.file, &programs, &options) {
        Ok(system) => system,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(false);
        }
    };
    let bytes = match arguments.emit {
        Emit::Check => {
            let vms = match system.vms.len() {
                0 => String::new(),
                1 => ", 1 VM".to_string(),
                count => format!(", {count} VMs"),
            };
            eprintln!(
                "{}: {} components, {} queues, {} notifications{vms}: ok",
                arguments.file.display(),
                system.components.len(),
                system.queues.len(),
                system.notifications.len()
            );
            return Ok(true);
        }
        Emit::Cdl => system.cdl().into_bytes(),
        Emit::Spec => {
            if arguments.output.is_none() {
                bail!("--emit spec writes binary: name a file with -o");
            }
            system.spec()
        }
    };
    match &arguments.output {
        Some(path) => std::fs::write(path, bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{}", String::from_utf8_lossy(&bytes)),
    }
    Ok(true)
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    match run(&arguments) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
