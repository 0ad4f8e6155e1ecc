//! `disk`: build and inspect VMKFS images on the host (the storage engine is
//! the `vmkfs` crate; this is its command line).
//!
//! Purpose: prepare the disk images a system boots with, and look inside
//! them. An image is one host file per device (`--image` repeated, in
//! file-system order, for a multi-device file system). Commands:
//! `mkfs`, `create`, `import`, `export`, `ls`, `stat`, `rm`, `rename`,
//! `resize`, `fsck`, `snapshot` (start a redo log), `commit`, `discard`,
//! `bench`.
//!
//! Invariants: every command that changes an image unmounts it (flushing the
//! journal and data) before reporting success; sizes accept binary units
//! (`64K`, `512M`, `1G`); errors name the image and the file involved.
//! Image files are locked while a command uses them (exclusively by the
//! commands that change them, shared by those that only read): a command
//! that finds its image in use stops at once with an error instead of
//! waiting or racing the other (`vmkfs::host::lock`).
//! Output is written once, at the end: a full disk is an error (exit 2), a
//! closed pipe ends the command quietly (exit [`EXIT_OUTPUT_CLOSED`]).
//! `VMKFS_KILL_AT_WRITE=N` is a hook for the crash tests only: the tool
//! kills itself just before its Nth device write ([`arm_kill_hook`]).
//!
//! Callers: `cargo run -p build -- disk <command> ...`. The system-config code
//! that names an image and the files backing each VM's disk can call
//! `vmkfs::host::ensure_disk` directly.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use vmkfs::bench::{BenchDevice, BenchOptions};
use vmkfs::host::{self, parse_size};
use vmkfs::{FileKind, FormatOptions};

/// The image files of one file system, in order.
#[derive(Args, Debug)]
pub struct ImageArguments {
    /// Image file (repeat for a file system spanning several devices, in order).
    #[arg(long = "image", short = 'i', required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DiskCommand {
    /// Create image files and lay out an empty file system over them.
    Mkfs {
        /// Image files to create (one per device, in order).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Size of each image file (e.g. 64M, 4G).
        #[arg(long)]
        size: String,
        /// Data block size: a power of two from 4K to 64M.
        #[arg(long, default_value = "1M")]
        block_size: String,
        /// File-descriptor table slots.
        #[arg(long, default_value_t = 256)]
        max_files: u32,
        /// Pointer blocks per file (1 to 480): bounds the largest file.
        #[arg(long, default_value_t = 480)]
        pointer_blocks_per_file: u32,
        /// Overwrite existing image files.
        #[arg(long)]
        force: bool,
    },
    /// Create a preallocated, zeroed virtual disk.
    Create {
        #[command(flatten)]
        image: ImageArguments,
        name: String,
        /// Length of the disk (rounded up to 512-byte sectors).
        #[arg(long)]
        size: String,
    },
    /// Copy a host file into the image as a new virtual disk.
    Import {
        #[command(flatten)]
        image: ImageArguments,
        /// Host file to copy in. A pipe, FIFO or character device (`<(cmd)`,
        /// `/dev/stdin`, `/dev/zero`) needs --size and is read up to it.
        source: PathBuf,
        /// Name in the image (default: the host file's name).
        #[arg(long)]
        name: Option<String>,
        /// Length of the disk (default: the host file's size); bytes past the file read as zero.
        #[arg(long)]
        size: Option<String>,
    },
    /// Copy a virtual disk (seen through its redo logs, if it is one) to a host file.
    Export {
        #[command(flatten)]
        image: ImageArguments,
        name: String,
        target: PathBuf,
    },
    /// List the files, their sizes, kinds and redo-log chains, and the free space.
    Ls {
        #[command(flatten)]
        image: ImageArguments,
    },
    /// Show one file.
    Stat {
        #[command(flatten)]
        image: ImageArguments,
        name: String,
    },
    /// Delete a file (a redo log is discarded).
    Rm {
        #[command(flatten)]
        image: ImageArguments,
        name: String,
    },
    /// Rename a file.
    Rename {
        #[command(flatten)]
        image: ImageArguments,
        from: String,
        to: String,
    },
    /// Grow (new bytes read as zero) or shrink a virtual disk.
    Resize {
        #[command(flatten)]
        image: ImageArguments,
        name: String,
        #[arg(long)]
        size: String,
    },
    /// Check the file system; with --repair, fix what can be fixed safely.
    Fsck {
        #[command(flatten)]
        image: ImageArguments,
        #[arg(long)]
        repair: bool,
    },
    /// Start a copy-on-write redo log over a file (it may have several); the file is frozen while it has any.
    Snapshot {
        #[command(flatten)]
        image: ImageArguments,
        base: String,
        redo_log: String,
    },
    /// Merge a redo log into the file under it; it must be that file's only redo log.
    Commit {
        #[command(flatten)]
        image: ImageArguments,
        redo_log: String,
    },
    /// Drop a redo log and everything written to it.
    Discard {
        #[command(flatten)]
        image: ImageArguments,
        redo_log: String,
    },
    /// Measure 4 KiB random I/O through the store against the raw device, and metadata I/O.
    Bench {
        /// Run on a host file at this path instead of a RAM device.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Device size.
        #[arg(long, default_value = "256M")]
        size: String,
        #[arg(long, default_value = "1M")]
        block_size: String,
        /// 4 KiB operations per phase.
        #[arg(long, default_value_t = 100_000)]
        operations: u64,
        #[arg(long, default_value_t = 7)]
        rounds: u32,
    },
}

fn block_size(text: &str) -> Result<u32> {
    let size = parse_size(text)?;
    u32::try_from(size).with_context(|| format!("block size {text} is too large"))
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Disk => "disk",
        FileKind::RedoLog => "redo-log",
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The line `import` prints: the disk, and how much of it came from the
/// source when that is not all of it, or when the source had more.
fn import_report(source: &std::path::Path, name: &str, imported: host::Imported) -> String {
    let host::Imported { length, read, cut } = imported;
    let source = source.display();
    if cut {
        format!(
            "imported the first {read} bytes of {source} as '{name}' ({}); the source has more: --size bounds the import",
            human(length)
        )
    } else if read < length {
        format!(
            "imported {source} as '{name}' ({}): {read} bytes from {source}, the rest zero",
            human(length)
        )
    } else {
        format!("imported {source} as '{name}' ({})", human(length))
    }
}

/// Mounts read-write, runs `change`, unmounts (flushing), and reports `done`.
fn change(
    out: &mut String,
    image: &ImageArguments,
    done: &str,
    change: impl FnOnce(&mut vmkfs::Store<vmkfs::FileDevice>) -> Result<()>,
) -> Result<()> {
    let mut store = host::mount_image(&image.images, true)?;
    change(&mut store)?;
    store.unmount().map_err(host::HostError::from)?;
    writeln!(out, "{done}")?;
    Ok(())
}

/// Exit status when standard output was closed before everything was
/// written (`disk ls | head -1`): 128 + SIGPIPE, what a shell reports for a
/// program that SIGPIPE ended, and nothing on standard error.
pub const EXIT_OUTPUT_CLOSED: u8 = 141;

/// Runs a disk command. Its output is collected and written at the end in
/// one go, so every write error is seen here: a closed pipe ends the command
/// quietly with [`EXIT_OUTPUT_CLOSED`], any other (a full disk) is an error.
/// What a failed command printed before failing (fsck's report) is written
/// too.
pub fn run(command: DiskCommand) -> Result<ExitCode> {
    let mut out = String::new();
    let result = arm_kill_hook().and_then(|()| execute(command, &mut out));
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => result.map(|()| ExitCode::SUCCESS),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => {
            result.map(|()| ExitCode::from(EXIT_OUTPUT_CLOSED))
        }
        Err(error) => {
            result?;
            Err(anyhow::Error::new(error).context("cannot write to standard output"))
        }
    }
}

/// The test hook's environment variable: see [`arm_kill_hook`].
pub const KILL_AT_WRITE: &str = "VMKFS_KILL_AT_WRITE";

/// For tests only: with `VMKFS_KILL_AT_WRITE=N` in the environment, the tool
/// kills itself with SIGKILL just before its Nth device write (counting from
/// 1, over every image file it writes), as a crash would stop it. The disk
/// crash tests (`build/tests/disk_kill.rs`) run a command with N = 1, 2, ...
/// until it completes, and check the image after each kill. Without the
/// variable nothing is installed and writes cost nothing extra.
fn arm_kill_hook() -> Result<()> {
    let Some(value) = std::env::var_os(KILL_AT_WRITE) else {
        return Ok(());
    };
    let target: u64 = value
        .to_str()
        .and_then(|text| text.parse().ok())
        .filter(|&target| target >= 1)
        .with_context(|| {
            format!("{KILL_AT_WRITE} must be a write number from 1 up, not {value:?}")
        })?;
    let writes = AtomicU64::new(0);
    vmkfs::device::set_write_hook(Box::new(move || {
        if writes.fetch_add(1, Ordering::SeqCst) + 1 == target {
            kill_self();
        }
    }));
    Ok(())
}

/// Ends the process at once, as `kill -9` would: no destructor runs, no
/// buffer is flushed, nothing more reaches the image.
fn kill_self() -> ! {
    // SAFETY: kill(2) takes two integers and touches none of this process's
    // memory; SIGKILL cannot be caught, so it does not return here.
    unsafe {
        libc::kill(std::process::id() as libc::pid_t, libc::SIGKILL);
    }
    std::process::abort()
}

fn execute(command: DiskCommand, out: &mut String) -> Result<()> {
    match command {
        DiskCommand::Mkfs {
            images,
            size,
            block_size: block,
            max_files,
            pointer_blocks_per_file,
            force,
        } => {
            let size = parse_size(&size)?;
            let options = FormatOptions {
                block_size: block_size(&block)?,
                max_files,
                pointer_blocks_per_file,
                pointer_slots: None,
                file_system: host::new_file_system_id(),
                label: [0; 32],
            };
            let store = host::format_image(&images, size, &options, force)?;
            let space = store.space();
            store.unmount().map_err(host::HostError::from)?;
            writeln!(
                out,
                "made a VMKFS file system on {} device(s): {} blocks of {} ({} of data), {} file slots, largest file {}",
                images.len(),
                space.data_blocks,
                human(u64::from(space.block_size)),
                human(space.data_blocks * u64::from(space.block_size)),
                space.max_files,
                human(space.largest_file)
            )?;
        }
        DiskCommand::Create { image, name, size } => {
            let length = host::round_up_to_sector(parse_size(&size)?)?;
            change(
                out,
                &image,
                &format!("created '{name}' ({})", human(length)),
                |store| store.create(&name, length).map_err(Into::into),
            )?;
        }
        DiskCommand::Import {
            image,
            source,
            name,
            size,
        } => {
            let name = match name {
                Some(name) => name,
                None => source
                    .file_name()
                    .and_then(|name| name.to_str())
                    .map(str::to_owned)
                    .with_context(|| {
                        format!("{} has no usable file name; pass --name", source.display())
                    })?,
            };
            let length = size.as_deref().map(parse_size).transpose()?;
            let mut store = host::mount_image(&image.images, true)?;
            let imported = host::import_file(&mut store, &name, &source, length)?;
            store.unmount().map_err(host::HostError::from)?;
            writeln!(out, "{}", import_report(&source, &name, imported))?;
        }
        DiskCommand::Export {
            image,
            name,
            target,
        } => {
            let mut store = host::mount_image(&image.images, false)?;
            let length = host::export_file(&mut store, &name, &target)?;
            writeln!(
                out,
                "exported '{name}' to {} ({})",
                target.display(),
                human(length)
            )?;
        }
        DiskCommand::Ls { image } => {
            let store = host::mount_image(&image.images, false)?;
            let files = store.list();
            writeln!(
                out,
                "{:<32} {:<9} {:>14} {:>10}  chain",
                "name", "kind", "length", "blocks"
            )?;
            for file in &files {
                let mut chain = String::new();
                if let Some(parent) = &file.parent {
                    chain.push_str(&format!("over '{parent}'"));
                }
                if !file.redo_logs.is_empty() {
                    if !chain.is_empty() {
                        chain.push_str(", ");
                    }
                    let logs: Vec<String> = file
                        .redo_logs
                        .iter()
                        .map(|log| format!("'{log}'"))
                        .collect();
                    chain.push_str(&format!("frozen under {}", logs.join(", ")));
                }
                writeln!(
                    out,
                    "{:<32} {:<9} {:>14} {:>10}  {chain}",
                    file.name,
                    kind_name(file.kind),
                    file.length,
                    file.allocated_blocks
                )?;
            }
            let space = store.space();
            writeln!(
                out,
                "{} files; {} of {} blocks of {} free; {} devices",
                files.len(),
                space.free_data_blocks,
                space.data_blocks,
                human(u64::from(space.block_size)),
                space.devices
            )?;
        }
        DiskCommand::Stat { image, name } => {
            let store = host::mount_image(&image.images, false)?;
            let info = store.stat(&name).map_err(host::HostError::from)?;
            writeln!(out, "name:   {}", info.name)?;
            writeln!(out, "kind:   {}", kind_name(info.kind))?;
            writeln!(out, "length: {} ({})", info.length, human(info.length))?;
            writeln!(out, "blocks: {} owned", info.allocated_blocks)?;
            if let Some(parent) = info.parent {
                writeln!(out, "parent: {parent}")?;
            }
            for log in &info.redo_logs {
                writeln!(out, "redo log over it: {log}")?;
            }
        }
        DiskCommand::Rm { image, name } => {
            change(out, &image, &format!("deleted '{name}'"), |store| {
                store.delete(&name).map_err(Into::into)
            })?;
        }
        DiskCommand::Rename { image, from, to } => {
            change(
                out,
                &image,
                &format!("renamed '{from}' to '{to}'"),
                |store| store.rename(&from, &to).map_err(Into::into),
            )?;
        }
        DiskCommand::Resize { image, name, size } => {
            let length = host::round_up_to_sector(parse_size(&size)?)?;
            change(
                out,
                &image,
                &format!("resized '{name}' to {}", human(length)),
                |store| store.resize(&name, length).map_err(Into::into),
            )?;
        }
        DiskCommand::Fsck { image, repair } => {
            let mut devices = host::open_devices(&image.images, repair)?;
            let report = vmkfs::check(&mut devices, repair)
                .map_err(|error| anyhow::anyhow!("{}: {error}", image.images[0].display()))?;
            write!(out, "{report}")?;
            if !report.is_clean() {
                bail!(
                    "{} problem(s) remain{}",
                    report.remaining.len(),
                    if repair { "" } else { " (try --repair)" }
                );
            }
        }
        DiskCommand::Snapshot {
            image,
            base,
            redo_log,
        } => {
            change(
                out,
                &image,
                &format!("started redo log '{redo_log}' over '{base}'"),
                |store| store.snapshot(&base, &redo_log).map_err(Into::into),
            )?;
        }
        DiskCommand::Commit { image, redo_log } => {
            change(
                out,
                &image,
                &format!("committed redo log '{redo_log}'"),
                |store| store.commit_redo_log(&redo_log).map_err(Into::into),
            )?;
        }
        DiskCommand::Discard { image, redo_log } => {
            change(
                out,
                &image,
                &format!("discarded redo log '{redo_log}'"),
                |store| store.discard_redo_log(&redo_log).map_err(Into::into),
            )?;
        }
        DiskCommand::Bench {
            file,
            size,
            block_size: block,
            operations,
            rounds,
        } => {
            let options = BenchOptions {
                device: file.map_or(BenchDevice::Memory, BenchDevice::File),
                size: parse_size(&size)?,
                block_size: block_size(&block)?,
                operations,
                rounds,
                seed: 1,
            };
            let report = vmkfs::bench::run(&options)?;
            writeln!(out, "{report}")?;
            if report.metadata_ios_during_data_io != 0 {
                bail!("the store did metadata I/O during data I/O on a preallocated disk");
            }
        }
    }
    Ok(())
}
