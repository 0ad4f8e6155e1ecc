//! The `run` command: build everything, pack a system file's image, boot it,
//! stream the console to stdout, and exit with the system's verdict.
//!
//! Exit statuses: 0 the system halted with success, 1 with failure, 2 the
//! emulator or this tool failed (including configuration errors), 124 the
//! timeout passed first. The console goes to stdout unchanged; this tool's
//! own messages go to stderr prefixed `mvbuild: `. Also home of the boot
//! helper the `test` and `bench` commands share ([`boot_system`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::console::Verdict;
use crate::emulator::{BootRequest, ConsoleFeed, Emulator, Ending, Outcome, boot};
use crate::pack::pack;
use crate::system::{self, ImageProgram, System};
use crate::workspace::{Artifacts, Workspace};

/// The system `run` boots when none is named.
pub const DEFAULT_SYSTEM: &str = "examples/default.toml";
/// Exit status when the run hit its time limit (as `timeout(1)` does).
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit status for emulator and tool errors.
pub const EXIT_ERROR: u8 = 2;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArguments {
    /// The system file to boot [default: examples/default.toml]
    pub system: Option<PathBuf>,
    /// Boot through GRUB multiboot2 from an ISO in Bochs instead of QEMU.
    #[arg(long)]
    pub bochs: bool,
    /// Start QEMU halted, waiting for gdb on port 1234 (no timeout).
    #[arg(long, conflicts_with = "bochs")]
    pub gdb: bool,
    /// Give up after this many seconds [default: 60 for QEMU, 120 for Bochs].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Deterministic instruction counting (QEMU `-icount shift=0`): the TSC
    /// advances one tick per instruction.
    #[arg(long, conflicts_with = "bochs")]
    pub icount: bool,
    /// The core's boot command line, e.g. `selftest=core-fault`: at most
    /// 256 bytes of ASCII words (letters, digits, - _ . , : = / + @ %)
    /// separated by single spaces.
    #[arg(long = "cmdline")]
    pub command_line: Option<String>,
    /// Type into the system console: this terminal's input goes to the VM
    /// that reads it (`console_input = true`), and there is no time limit
    /// unless --timeout is given. QEMU only.
    #[arg(long, conflicts_with_all = ["bochs", "gdb"])]
    pub interactive: bool,
    /// Connect this terminal to VM NAME: the system console's input goes
    /// to it (as `console_input = true` in its table would say), with
    /// --interactive's terminal and time limit.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["bochs", "gdb"])]
    pub console: Option<String>,
}

/// The time limit when none is given: far above the measured times (QEMU
/// boots the default system in 0.2-0.4 s; Bochs through GRUB in about 2 s,
/// plus 0.3 s to make the ISO), since a loaded machine and larger systems
/// run slower.
pub fn default_timeout(emulator: Emulator) -> Duration {
    match emulator {
        Emulator::Qemu => Duration::from_secs(60),
        Emulator::Bochs => Duration::from_secs(120),
    }
}

/// This tool's exit status for a run's ending.
pub fn exit_status(ending: &Ending) -> u8 {
    match ending {
        Ending::Halted(Verdict::Success) => 0,
        Ending::Halted(Verdict::Failure { .. }) => 1,
        Ending::EmulatorError(_) => EXIT_ERROR,
        Ending::Timeout(_) => EXIT_TIMEOUT,
    }
}

/// Runs `run`.
pub fn command(arguments: RunArguments) -> Result<ExitCode> {
    if let Some(line) = &arguments.command_line {
        crate::command_line::check(line).map_err(|error| anyhow::anyhow!("--cmdline: {error}"))?;
    }
    let workspace = Workspace::load()?;
    let path = arguments
        .system
        .unwrap_or_else(|| workspace.root.join(DEFAULT_SYSTEM));
    let programs = workspace.programs()?;
    let system = system::load_with_console(&path, &programs, arguments.console.as_deref())?;
    let interactive = arguments.interactive || arguments.console.is_some();
    let emulator = if arguments.bochs {
        Emulator::Bochs
    } else {
        Emulator::Qemu
    };
    let timeout = match (arguments.gdb || interactive, arguments.timeout) {
        (_, Some(seconds)) if !arguments.gdb => Some(Duration::from_secs(seconds)),
        (true, _) => None,
        (false, _) => Some(default_timeout(emulator)),
    };
    crate::setup::emulators(&[emulator])?;
    let needed = programs_of(&system.programs);
    let artifacts = workspace.build_target(&needed)?;
    let stem = system.stem();
    eprintln!(
        "mvbuild: booting {} ({} component{}) in {emulator}{}",
        system::shown(&path),
        system.components,
        if system.components == 1 { "" } else { "s" },
        system
            .description
            .as_ref()
            .map_or_else(String::new, |description| format!(": {description}"))
    );
    let outcome = boot_system(
        &workspace,
        &artifacts,
        &system,
        &stem,
        BootOptions {
            emulator,
            timeout,
            icount: arguments.icount,
            gdb: arguments.gdb,
            command_line: arguments.command_line.clone().unwrap_or_default(),
            input: if interactive {
                ConsoleFeed::Terminal
            } else {
                ConsoleFeed::Nothing
            },
        },
        &mut |line| println!("{line}"),
    )?;
    let seconds = outcome.elapsed.as_secs_f64();
    match &outcome.ending {
        Ending::Halted(verdict) => {
            eprintln!("mvbuild: system halted: {verdict} ({emulator}, {seconds:.1} s)")
        }
        Ending::Timeout(limit) => eprintln!(
            "mvbuild: timed out after {} s without the core's halt line; {emulator} was \
             stopped (use --timeout to allow longer)",
            limit.as_secs()
        ),
        Ending::EmulatorError(message) => eprintln!("mvbuild: {message}"),
    }
    Ok(ExitCode::from(exit_status(&outcome.ending)))
}

/// The distinct programs whose ELFs these image entries hold, sorted.
pub fn programs_of(entries: &[ImageProgram]) -> Vec<String> {
    let mut programs: Vec<String> = entries.iter().map(|entry| entry.program.clone()).collect();
    programs.sort();
    programs.dedup();
    programs
}

/// How to boot a packed system.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub emulator: Emulator,
    /// None: no limit.
    pub timeout: Option<Duration>,
    pub icount: bool,
    pub gdb: bool,
    /// The core's boot command line.
    pub command_line: String,
    /// What the system console receives.
    pub input: ConsoleFeed,
}

/// Packs `system` as `images/<stem>.img` and boots it, with the
/// emulator's files in `images/<stem>.<emulator>/`.
pub fn boot_system(
    workspace: &Workspace,
    artifacts: &Artifacts,
    system: &System,
    stem: &str,
    options: BootOptions,
    sink: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    let request = prepare(workspace, artifacts, system, stem, options)?;
    boot(&request, sink)
}

/// Packs `system` as `images/<stem>.img`, makes its disks afresh and
/// returns the request that boots it (the `campaign` command boots it
/// itself, to type into its console as it runs).
pub fn prepare(
    workspace: &Workspace,
    artifacts: &Artifacts,
    system: &System,
    stem: &str,
    options: BootOptions,
) -> Result<BootRequest> {
    let images = workspace.images_directory();
    let image = images.join(format!("{stem}.img"));
    crate::debian::fetch_if_named(workspace, &system.kernels, &system.disks)?;
    pack(
        &system.programs,
        &system.spec,
        &system.kernels,
        artifacts,
        &image,
    )?;
    let work = work_directory(&images, stem, options.emulator);
    let disks = prepare_disks(&system.disks, &work)?;
    Ok(BootRequest {
        emulator: options.emulator,
        core: artifacts.core.clone(),
        image,
        disks,
        nics: system.nics.clone(),
        work_directory: work,
        timeout: options.timeout,
        icount: options.icount,
        gdb: options.gdb,
        command_line: options.command_line,
        input: options.input,
    })
}

/// Makes each `[machine]` disk's image in `work`, fresh for every boot:
/// zeroed to its size, or a copy of the file it names (so a run never
/// changes the original).
fn prepare_disks(disks: &[capdl::MachineDisk], work: &Path) -> Result<Vec<PathBuf>> {
    if disks.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let mut paths = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let path = work.join(format!("disk{index}.img"));
        match (&disk.image, disk.size) {
            (Some(image), _) => {
                std::fs::copy(image, &path).with_context(|| {
                    format!(
                        "copying the disk image {} for disk {index}",
                        image.display()
                    )
                })?;
            }
            (None, size) => {
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                file.set_len(size.unwrap_or(0))
                    .with_context(|| format!("sizing {}", path.display()))?;
                drop(file);
                if !disk.files.is_empty() {
                    make_store_image(&path, size.unwrap_or(0), &disk.files).with_context(|| {
                        format!("making the block store's image for disk {index}")
                    })?;
                }
            }
        }
        paths.push(path);
    }
    Ok(paths)
}

/// A VMKFS file system on `path` (`size` bytes, laid out as the block
/// store formats a blank disk: 64 KiB blocks) holding `files` in order:
/// each disk at its declared size (zeroed, or its first bytes from its
/// file), each redo log started over its base.
fn make_store_image(path: &Path, size: u64, files: &[capdl::StoreFile]) -> Result<()> {
    let options = vmkfs::FormatOptions {
        block_size: 64 << 10,
        file_system: vmkfs::host::new_file_system_id(),
        ..vmkfs::FormatOptions::default()
    };
    let mut store = vmkfs::host::format_image(&[path.to_path_buf()], size, &options, true)?;
    for file in files {
        let name = &file.name;
        match &file.kind {
            capdl::StoreFileKind::Disk {
                size,
                from: Some(from),
            } => {
                let length = std::fs::metadata(from)
                    .with_context(|| format!("disk '{name}': reading {}", from.display()))?
                    .len();
                if length > *size {
                    anyhow::bail!(
                        "disk '{name}': {} holds {length} bytes, more than the disk's {size}",
                        from.display(),
                    );
                }
                vmkfs::host::import_file(&mut store, name, from, None)?;
                if length < *size {
                    store
                        .resize(name, *size)
                        .map_err(vmkfs::host::HostError::from)?;
                }
            }
            capdl::StoreFileKind::Disk { size, from: None } => store
                .create(name, *size)
                .map_err(vmkfs::host::HostError::from)
                .with_context(|| format!("disk '{name}'"))?,
            capdl::StoreFileKind::RedoLog { base } => store
                .snapshot(base, name)
                .map_err(vmkfs::host::HostError::from)
                .with_context(|| format!("redo log '{name}' over '{base}'"))?,
        }
    }
    store.unmount().map_err(vmkfs::host::HostError::from)?;
    Ok(())
}

fn work_directory(images: &Path, stem: &str, emulator: Emulator) -> PathBuf {
    let suffix = match emulator {
        Emulator::Qemu => "qemu",
        Emulator::Bochs => "bochs",
    };
    images.join(format!("{stem}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_image_holds_each_disk_at_its_declared_size_and_the_logs_over_them() {
        let directory = tempfile::tempdir().unwrap();
        let source = directory.path().join("source.img");
        let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &bytes).unwrap();
        let disk = |name: &str, size: u64, from: Option<&Path>| capdl::StoreFile {
            name: name.into(),
            kind: capdl::StoreFileKind::Disk {
                size,
                from: from.map(Path::to_path_buf),
            },
        };
        let log = |name: &str, base: &str| capdl::StoreFile {
            name: name.into(),
            kind: capdl::StoreFileKind::RedoLog { base: base.into() },
        };
        let disks = [capdl::MachineDisk {
            size: Some(8 << 20),
            image: None,
            files: vec![
                disk("disk0", 1 << 20, Some(&source)),
                disk("blank", 64 << 10, None),
                log("a", "disk0"),
                log("b", "disk0"),
            ],
        }];
        let work = directory.path().join("work");
        let paths = prepare_disks(&disks, &work).unwrap();
        let mut store = vmkfs::host::mount_image(&paths, false).unwrap();
        for name in ["disk0", "a", "b"] {
            let handle = store.open(name, vmkfs::OpenMode::ReadOnly).unwrap();
            assert_eq!(store.length(handle).unwrap(), 1 << 20);
            let mut read = vec![0u8; 40_960];
            store.read(handle, 0, &mut read).unwrap();
            assert_eq!(&read[..bytes.len()], &bytes[..], "{name}");
            assert!(read[bytes.len()..].iter().all(|&byte| byte == 0));
            store.close(handle).unwrap();
        }
        assert_eq!(store.stat("a").unwrap().parent.as_deref(), Some("disk0"));
        assert_eq!(store.stat("disk0").unwrap().redo_logs, ["a", "b"]);
        assert_eq!(store.stat("blank").unwrap().length, 64 << 10);
        drop(store);
        // A file larger than its disk is refused, naming both.
        let too_big = [capdl::MachineDisk {
            files: vec![disk("small", 4096, Some(&source))],
            ..disks[0].clone()
        }];
        let error = format!("{:#}", prepare_disks(&too_big, &work).unwrap_err());
        assert!(
            error.contains("disk 'small'") && error.contains("more than the disk's 4096"),
            "{error}"
        );
        // A log over a disk that is not there is refused, naming both.
        let orphan = [capdl::MachineDisk {
            files: vec![log("a", "nothing")],
            ..disks[0].clone()
        }];
        let error = format!("{:#}", prepare_disks(&orphan, &work).unwrap_err());
        assert!(error.contains("redo log 'a' over 'nothing'"), "{error}");
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status(&Ending::Halted(Verdict::Success)), 0);
        assert_eq!(
            exit_status(&Ending::Halted(Verdict::Failure {
                reason: "fault".into()
            })),
            1
        );
        assert_eq!(exit_status(&Ending::EmulatorError("x".into())), 2);
        assert_eq!(exit_status(&Ending::Timeout(Duration::from_secs(1))), 124);
    }

    #[test]
    fn programs_are_deduplicated() {
        let entry = |entry: &str, program: &str| ImageProgram {
            entry: entry.into(),
            program: program.into(),
            corruption: None,
        };
        let entries = [
            entry("hello", "hello"),
            entry("crasher", "crasher"),
            entry("broken", "hello"),
        ];
        assert_eq!(programs_of(&entries), ["crasher", "hello"]);
        assert_eq!(
            work_directory(Path::new("/t/images"), "default", Emulator::Bochs),
            Path::new("/t/images/default.bochs")
        );
    }
}
