//! `capdl`: the system-description compiler.
//!
//! A system is described in a strict TOML format (`docs/CAPDL.md`):
//! components with their programs, scheduling, memory, start and restart
//! policy, supervision and device grants (checked, but refused while the
//! core does not apply them); queues and notifications between
//! them, and synchronous calls (`[calls.NAME]`) through endpoints;
//! virtual machines run by world-switcher components, with virtual
//! disks of a block store and NICs on virtual networks of a network
//! bridge; for tests, fault injection (`[test]`); optionally included base files. A `[[component]]` list, the short form for systems
//! of independent programs, is read into the same model. This crate reads such a
//! description, checks it against every rule the core and the format impose
//! (reporting all errors at once, each with file, line, column and a "did
//! you mean" where a name is close), and lowers a valid one to the binary
//! boot spec the core instantiates (`microvisor_abi::spec`) and to a
//! capDL-style listing for people.
//!
//! The build tool calls [`load`] (or [`load_with`]) and then
//! [`System::lower`]; the `capdl` command does the same from the command
//! line. Nothing here touches the target: it is a host-only library.
//! Module map: `raw` reads TOML and includes, `check` holds the rules and
//! the layout decisions, `lower` writes the outputs, `units` parses
//! durations and sizes, `diagnostic` locates and renders errors.
#![forbid(unsafe_code)]

use std::io;
use std::path::Path;

mod check;
pub mod diagnostic;
mod lower;
mod model;
mod programs;
mod raw;
pub mod units;

pub use check::{
    DEFAULT_MAX_RESTARTS, DEFAULT_MEMORY, DEFAULT_PERIOD_NS, DEFAULT_PRIORITY, DEFAULT_STACK,
    DEFAULT_VM_MEMORY, DEVICE_WINDOW, MAX_IMAGE_NAME, MAX_VM_NAME, QUEUE_WINDOW, VM_IMAGE_ADDRESS,
    VM_MEMORY_ADDRESS, VM_STATE_ADDRESS,
};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use lower::{ImageProgram, Lowered, ProgramUse};
pub use model::{
    Call, Capability, Component, DEFAULT_NIC_MAC, DmaGrant, FaultInjection, ForwarderBits,
    GUEST_ENTRY_PREFIX, GuestKind, KernelGuest, Layout, LineGrant, MachineDisk, MachineNic,
    MmioGrant, Network, Nic, NicBackend, Notification, PciGrant, PortGrant, Queue, QueuePlacement,
    SPEC_ENTRY, Start, StoreFile, StoreFileKind, System, Uplink, UplinkMode, Vm, guest_entry_name,
};
pub use programs::{PROGRAM_GROUPS, ProgramSet, ROLES, WORLD_SWITCHER, check_role};
pub use raw::{MAX_FILE_BYTES, MAX_SYSTEM_BYTES, read_file};

/// Reads a text file the way system files are read ([`read_file`]: only a
/// regular file, at most [`MAX_FILE_BYTES`], UTF-8), for tools that read
/// files of their own format holding a system (the build tool's scenario
/// files). The error names the file as `name` and, for text that is not
/// UTF-8, the line and column of the first bad byte.
pub fn read_text(path: &Path, name: &str) -> Result<String, Diagnostic> {
    let bytes = read_file(path)
        .map_err(|error| diagnostic::file_error(name, format!("cannot read the file: {error}")))?;
    raw::decode(name, bytes)
}

/// The machine memory a system must fit in unless told otherwise.
pub const DEFAULT_MACHINE_MEMORY: u64 = 448 << 20;

/// Settings of a check that are not part of the description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Bytes of memory the components' memory and the queues must fit in.
    pub machine_memory: u64,
    /// The values a `[[component]]` entry's `corrupt` may take: the ELF
    /// defects the build tool can put into a program before packing (for
    /// tests of the core's loader). Empty (the default) refuses `corrupt`.
    pub corruptions: Vec<String>,
    /// Top-level keys of the root file that belong to a format embedding
    /// the system, such as a scenario's `timeout` and `expect`: skipped
    /// rather than refused as unknown.
    pub host_keys: Vec<String>,
    /// The VM the system console's input goes to, as if its table said
    /// `console_input = true` (the build tool's `run --console NAME`).
    pub console: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            machine_memory: DEFAULT_MACHINE_MEMORY,
            corruptions: Vec::new(),
            host_keys: Vec::new(),
            console: None,
        }
    }
}

/// Loads and checks the system described by `path` (and its includes)
/// against the programs that exist, with default [`Options`].
pub fn load(path: &Path, programs: &ProgramSet) -> Result<System, Diagnostics> {
    load_with(path, programs, &Options::default())
}

/// [`load`] with explicit options.
pub fn load_with(
    path: &Path,
    programs: &ProgramSet,
    options: &Options,
) -> Result<System, Diagnostics> {
    load_from(path, &raw::read_file, programs, options)
}

/// [`load_with`] reading files through `read` (tests use an in-memory file
/// system). Include paths are joined to the including file's directory and
/// normalized lexically before `read` sees them. Whatever `read` returns is
/// held to the limits of [`read_file`]: at most [`MAX_FILE_BYTES`] a file,
/// [`MAX_SYSTEM_BYTES`] in all, UTF-8.
pub fn load_from(
    path: &Path,
    read: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    programs: &ProgramSet,
    options: &Options,
) -> Result<System, Diagnostics> {
    let (document, mut errors) = raw::load_document(path, read, &options.host_keys);
    if document.incomplete || document.sources.files.is_empty() {
        return Err(Diagnostics(errors));
    }
    let files: Vec<String> = document
        .sources
        .files
        .iter()
        .map(|file| file.name.clone())
        .collect();
    match check::check(document, programs, options) {
        Ok(system) if errors.is_empty() => return Ok(system),
        Ok(_) => {}
        Err(more) => errors.extend(more),
    }
    // Files in load order (includes before the files including them), then
    // by position; a whole-file error comes first in its file.
    errors.sort_by_key(|error| {
        let file = files.iter().position(|name| *name == error.file);
        (file, error.line, error.column)
    });
    Err(Diagnostics(errors))
}
