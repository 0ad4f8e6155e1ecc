//! Reading config files: TOML syntax, includes, the strict schema, merging.
//!
//! This is the only module that sees TOML. It parses each file into a
//! spanned tree, follows `include`s depth-first (includes before the
//! including file's own declarations, each file once, cycles refused), and
//! deserializes every `[components.NAME]`, `[queues.NAME]`,
//! `[notifications.NAME]`, `[calls.NAME]`, `[vms.NAME]`, `[disks.NAME]`,
//! `[networks.NAME]`, `[system]` and `[test]` table into the `Raw*` structs
//! below, which are the format's schema (a `[[component]]` entry, the short
//! form, becomes the `[components.NAME]` entry it stands for): `#[serde(deny_unknown_fields)]`,
//! every value spanned. A table is deserialized repeatedly, dropping the
//! offending key after each error, so one run reports every unknown field
//! and every badly typed value, not just the first. The result is a
//! [`Document`]: the merged entries in declaration order, with the text of
//! every file for locating later errors. Meaning (references, limits) is
//! checked by `crate::check`, not here.

use std::io;
use std::path::{Component as PathComponent, Path, PathBuf};

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{
    Diagnostic, SourceMap, Spot, describe_character, file_error, line_column, suggest,
};
use crate::units::{Duration, InterruptLine, Number, PortRange, Size};

/// The keys a config file may have at its top level.
pub const TOP_LEVEL_KEYS: [&str; 12] = [
    "include",
    "system",
    "test",
    "machine",
    "components",
    "component",
    "queues",
    "notifications",
    "calls",
    "vms",
    "disks",
    "networks",
];
/// How deep includes may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// The largest file a system may be made of.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The most bytes a system file and everything it includes may hold.
pub const MAX_SYSTEM_BYTES: usize = 4 << 20;

/// Reads a system file from disk: only a regular file (a directory, device,
/// FIFO or socket is refused before it is opened, so that `/dev/zero` or a
/// pipe is never read), and at most one byte more than [`MAX_FILE_BYTES`]
/// (the loader refuses that much, so a file that grows while it is read is
/// not read without bound).
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            file_kind(&kind)
        };
        return Err(io::Error::other(format!(
            "it is {what}, not a regular file"
        )));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What a special file is, for messages.
#[cfg(unix)]
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// What a special file is, for messages.
#[cfg(not(unix))]
fn file_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// The text of a file read as `bytes`, named `name` in messages: at most
/// [`MAX_FILE_BYTES`], and UTF-8 (an error points at the first byte that
/// is not).
pub fn decode(name: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(file_error(
            name,
            format!(
                "the file is larger than {}, the most a system file may be",
                crate::units::format_size(MAX_FILE_BYTES as u64)
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        let at = error.utf8_error().valid_up_to();
        let bytes = error.as_bytes();
        let text = String::from_utf8_lossy(bytes);
        let (line, column) = line_column(&text, at);
        Diagnostic {
            file: name.to_string(),
            line,
            column,
            message: format!(
                "the file is not UTF-8 text: byte {:#04x} cannot start or continue a character here",
                bytes[at]
            ),
            help: Some("save the file as UTF-8".into()),
        }
    })
}

/// "did you mean" over the `.toml` files next to a file that does not
/// exist, as `written` would name them.
fn file_suggestion(written: &str, path: &Path, error: &io::Error) -> Option<String> {
    if error.kind() != io::ErrorKind::NotFound {
        return None;
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let siblings: Vec<String> = std::fs::read_dir(directory)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|entry| entry.ends_with(".toml"))
        .collect();
    let name = path.file_name()?.to_str()?;
    let close = crate::diagnostic::closest(name, siblings.iter().map(String::as_str))?;
    let shown = Path::new(written).with_file_name(close);
    Some(format!("did you mean '{}'?", shown.display()))
}

/// `[system]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub description: Option<Spanned<String>>,
    pub scheduling_controller: Option<Spanned<String>>,
    pub interrupt_forwarder: Option<Spanned<String>>,
}

/// When a component first runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// At boot.
    Boot,
    /// When its supervisor starts it.
    Supervisor,
}

/// `restart = { max = 3, backoff = "10ms", watchdog = "1s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub max: Option<Spanned<Number>>,
    pub backoff: Option<Spanned<Duration>>,
    /// Restart the component when it has been runnable this long without
    /// coming back to `Wait` (default: no watchdog).
    pub watchdog: Option<Spanned<Duration>>,
}

/// `[test]`: the only place fault injection is granted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    /// The component that may inject faults.
    pub injector: Spanned<String>,
    /// The components it may inject faults into.
    pub targets: Spanned<Vec<Spanned<String>>>,
}

/// The `[test]` table and where it was written.
#[derive(Debug)]
pub struct TestTable {
    /// Where its name (`test` in `[test]`) is written.
    pub spot: Spot,
    /// `None` when it could not be read (errors already reported).
    pub value: Option<RawTest>,
}

impl TestTable {
    /// The spot of a value inside the table.
    pub fn at<V>(&self, value: &Spanned<V>) -> Spot {
        Spot {
            file: self.spot.file,
            span: value.span(),
        }
    }
}

/// One entry of `mmio = [{ physical = "0xfebd0000", size = "4KiB" }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmio {
    pub physical: Spanned<Number>,
    pub size: Spanned<Size>,
}

/// `[machine]`: what the emulator gives the system besides the core.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMachine {
    pub disks: Option<Vec<Spanned<RawDisk>>>,
    pub nics: Option<Vec<Spanned<RawNic>>>,
}

/// One entry of `nics = [{ backend = "user", mac = "52:54:00:12:34:56" }]`:
/// a virtio-net PCI card on a network of the emulator's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNic {
    /// What the card is connected to (only `user`, checked with a message
    /// of its own).
    pub backend: Spanned<String>,
    /// Its MAC address, `xx:xx:xx:xx:xx:xx` (default QEMU's).
    pub mac: Option<Spanned<String>>,
}

/// One entry of `disks = [{ size = "8MiB" }]` or `[{ image = "disk.img" }]`:
/// a virtio-blk PCI disk, fresh and zeroed or a copy of a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub size: Option<Spanned<Size>>,
    pub image: Option<Spanned<String>>,
}

/// `pci = { vendor = "0x1af4", device = "0x1042", address = "00:03.0",
/// bars = [4], msi = 1 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPci {
    pub vendor: Spanned<Number>,
    pub device: Spanned<Number>,
    pub address: Option<Spanned<String>>,
    pub bars: Option<Vec<Spanned<Number>>>,
    pub msi: Option<Spanned<Number>>,
}

/// One entry of `dma = [{ size = "64KiB", below_4g = true }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDma {
    pub size: Spanned<Size>,
    pub below_4g: Option<Spanned<bool>>,
}

/// `[components.NAME]`, or a `[[component]]` entry lowered to one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponent {
    pub program: Option<Spanned<String>>,
    pub args: Option<Spanned<String>>,
    pub priority: Option<Spanned<Number>>,
    pub budget: Option<Spanned<Duration>>,
    pub period: Option<Spanned<Duration>>,
    pub stack: Option<Spanned<Size>>,
    pub memory: Option<Spanned<Size>>,
    pub start: Option<Spanned<Start>>,
    pub supervisor: Option<Spanned<String>>,
    pub restart: Option<Spanned<RawRestart>>,
    pub observe: Option<Vec<Spanned<String>>>,
    pub ports: Option<Vec<Spanned<PortRange>>>,
    pub mmio: Option<Vec<Spanned<RawMmio>>>,
    pub dma: Option<Vec<Spanned<RawDma>>>,
    pub pci: Option<Spanned<RawPci>>,
    pub interrupts: Option<Vec<Spanned<InterruptLine>>>,
    /// Only from a `[[component]]` entry (tests): the defect the build tool
    /// puts into the program's ELF before packing.
    #[serde(skip)]
    pub corrupt: Option<Spanned<String>>,
}

/// One `[[component]]` entry: the short form of `[components.NAME]` for
/// systems of independent programs (tests), with every other setting at
/// its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListComponent {
    pub name: Spanned<String>,
    pub program: Option<Spanned<String>>,
    pub args: Option<Spanned<String>>,
    /// Tests only: a defect the build tool puts into the ELF before packing.
    pub corrupt: Option<Spanned<String>>,
}

/// `[queues.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub slot_size: Spanned<Number>,
    pub slots: Spanned<Number>,
    /// The queue on which `from` waits for the replies to what it sends.
    pub reply: Option<Spanned<String>>,
}

/// `[disks.NAME]`: a virtual disk the block store `store` serves to VM
/// `vm` (the pair of queues between them is generated), or a redo log over
/// another such disk (`base`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVirtualDisk {
    /// The block-store component that keeps it.
    pub store: Spanned<String>,
    /// The VM that sees it (its world switcher gets the queues); none for
    /// a disk that is only the base of redo logs.
    pub vm: Option<Spanned<String>>,
    /// Its size when the store creates it (a multiple of 512 bytes); a
    /// redo log has its base's.
    pub size: Option<Spanned<Size>>,
    /// Requests in flight between the switcher and the store (default 16).
    pub slots: Option<Spanned<Number>>,
    /// A file (raw disk bytes, such as an ext4 image) the build tool
    /// imports as the disk's contents, relative to this file.
    pub from: Option<Spanned<String>>,
    /// The VM sees it read-only (the store opens it shared).
    pub read_only: Option<Spanned<bool>>,
    /// This disk is a redo log over the disk `base`: its VM's writes land
    /// in the log and `base` stays as it was.
    pub base: Option<Spanned<String>>,
}

/// `[networks.NAME]`: a virtual network the bridge `bridge` switches
/// between its `members`, VMs with one NIC each on it (the pair of queues
/// between each member's world switcher and the bridge is generated).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// The component running the network bridge.
    pub bridge: Spanned<String>,
    /// The VMs on the network, one NIC each, in the order their queues are
    /// made.
    pub members: Spanned<Vec<Spanned<String>>>,
    /// Frames in flight each way per NIC (default 64).
    pub slots: Option<Spanned<Number>>,
    /// The component driving the machine's NIC (program `virtio-net`),
    /// which connects the network to the outside.
    pub uplink: Option<Spanned<String>>,
    /// How the network shares the machine's NIC (default `shared`).
    pub uplink_mode: Option<Spanned<UplinkMode>>,
}

/// How a network shares the machine's NIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// The card keeps its own MAC; the bridge forwards by MAC among the
    /// members and the outside.
    Shared,
    /// The network's one VM owns the card, whose MAC is that VM's NIC's:
    /// the outside sees the VM as the card.
    Exclusive,
}

impl UplinkMode {
    /// The name the system file uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Exclusive => "exclusive",
        }
    }
}

/// `[notifications.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

/// `[calls.NAME]`: `from` (the client) may call `to` (the server)
/// synchronously, through an endpoint capability named NAME.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
}

/// How a VM's CPU starts (`microvisor_abi::vcpu::EntryMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmEntry {
    /// 64-bit long mode at the image's ELF entry.
    Long,
    /// 16-bit real mode, as a CPU leaves reset.
    Real,
}

/// What kind of kernel an unmodified guest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A Linux bzImage, or an ELF `vmlinux` with a PVH note.
    Linux,
    /// A Multiboot (v1) kernel.
    Multiboot,
}

impl GuestKind {
    /// The name the system file uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Linux => "linux",
            Self::Multiboot => "multiboot",
        }
    }
}

/// `[vms.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    /// The component whose thread runs the vCPU.
    pub switcher: Spanned<String>,
    pub image: Option<Spanned<String>>,
    /// An unmodified guest's kernel file (relative to this file).
    pub kernel: Option<Spanned<String>>,
    /// Its initial RAM disk (relative to this file).
    pub initrd: Option<Spanned<String>>,
    /// Its command line.
    pub cmdline: Option<Spanned<String>>,
    /// What kind of kernel it is (default `linux`).
    pub kind: Option<Spanned<GuestKind>>,
    pub memory: Option<Spanned<Size>>,
    pub entry: Option<Spanned<VmEntry>>,
    pub priority: Option<Spanned<Number>>,
    pub budget: Option<Spanned<Duration>>,
    pub period: Option<Spanned<Duration>>,
    /// Components that may poke the vCPU.
    pub poke: Option<Vec<Spanned<String>>>,
    /// The system console's input goes to this VM (its world switcher).
    pub console_input: Option<Spanned<bool>>,
}

/// A named table from one file. `value` is `None` when the table could not
/// be read at all (errors already reported); the name still exists, so
/// references to it do not add spurious "unknown" errors. `dropped` names
/// the keys that were present but wrong (also reported): checks must not
/// treat them as absent and apply a default.
#[derive(Debug)]
pub struct Entry<T> {
    pub name: String,
    /// Where the name is written.
    pub spot: Spot,
    pub value: Option<T>,
    pub dropped: Vec<String>,
}

impl<T> Entry<T> {
    /// Whether `key` was written but dropped because it was wrong.
    pub fn was_dropped(&self, key: &str) -> bool {
        self.dropped.iter().any(|dropped| dropped == key)
    }
}

impl<T> Entry<T> {
    /// The spot of a value inside this entry.
    pub fn at<V>(&self, value: &Spanned<V>) -> Spot {
        Spot {
            file: self.spot.file,
            span: value.span(),
        }
    }
}

/// A `[system]` field and where it was set.
#[derive(Debug)]
pub struct Setting {
    pub value: String,
    pub spot: Spot,
}

/// Every file of a system, merged.
#[derive(Debug, Default)]
pub struct Document {
    pub sources: SourceMap,
    pub description: Option<Setting>,
    pub scheduling_controller: Option<Setting>,
    pub interrupt_forwarder: Option<Setting>,
    /// `[test]`: fault injection, from whichever file wrote it (at most
    /// one).
    pub test: Option<TestTable>,
    pub components: Vec<Entry<RawComponent>>,
    pub queues: Vec<Entry<RawQueue>>,
    pub notifications: Vec<Entry<RawNotification>>,
    /// `[calls.NAME]`: synchronous calls through endpoints.
    pub calls: Vec<Entry<RawCall>>,
    pub vms: Vec<Entry<RawVm>>,
    /// `[disks.NAME]`: virtual disks of a block store.
    pub virtual_disks: Vec<Entry<RawVirtualDisk>>,
    /// `[networks.NAME]`: virtual networks of a network bridge.
    pub networks: Vec<Entry<RawNetwork>>,
    /// `[machine] disks`, from whichever file wrote them.
    pub disks: Vec<(Spot, RawDisk)>,
    /// `[machine] nics`, from whichever file wrote them.
    pub nics: Vec<(Spot, RawNic)>,
    /// Whether a file had a TOML syntax error or an include failed: the
    /// document is incomplete, so checking stops after loading (references
    /// into the missing part would only add noise).
    pub incomplete: bool,
    /// Whether a top-level key was unknown or not of its kind (a
    /// `components` that is not a table, a `[[component]]` entry without a
    /// name): already reported, and "no components" would be noise.
    pub broken_sections: bool,
    /// Whether a `[machine] nics` entry (or the list) was wrong and is
    /// left out (already reported): an uplink then does not also miss it.
    pub broken_nics: bool,
}

/// Removes `.` and resolves `..` without touching the file system, so that
/// the same file reached by two spellings is recognised.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            PathComponent::CurDir => {}
            PathComponent::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

struct Loader<'r> {
    read: &'r dyn Fn(&Path) -> io::Result<Vec<u8>>,
    /// Top-level keys of the root file that belong to a format embedding
    /// the system (a scenario's `timeout`): skipped, not refused.
    host_keys: &'r [String],
    document: Document,
    errors: Vec<Diagnostic>,
    /// Normalized paths of the files being loaded (innermost last).
    stack: Vec<PathBuf>,
    /// Normalized paths of every file loaded.
    loaded: Vec<PathBuf>,
    /// Bytes of every file read so far.
    bytes: usize,
}

/// Loads `root` and everything it includes, reading files with `read`;
/// `host_keys` are top-level keys of `root` that are not the system's.
pub fn load_document(
    root: &Path,
    read: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    host_keys: &[String],
) -> (Document, Vec<Diagnostic>) {
    let mut loader = Loader {
        read,
        host_keys,
        document: Document::default(),
        errors: Vec::new(),
        stack: Vec::new(),
        loaded: Vec::new(),
        bytes: 0,
    };
    let name = root.display().to_string();
    match read(root) {
        Ok(bytes) => match decode(&name, bytes) {
            Ok(text) => {
                loader.bytes = text.len();
                loader.load(root, text);
            }
            Err(error) => loader.errors.push(error),
        },
        Err(error) => loader.errors.push(
            file_error(
                name.clone(),
                format!("cannot read the system description: {error}"),
            )
            .with_optional_help(file_suggestion(&name, root, &error)),
        ),
    }
    (loader.document, loader.errors)
}

fn keys_in_order<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(
    &'a Spanned<std::borrow::Cow<'i, str>>,
    &'a Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

impl Loader<'_> {
    fn error(&mut self, spot: &Spot, message: impl Into<String>) -> &mut Diagnostic {
        let diagnostic = self.document.sources.error(spot, message);
        self.errors.push(diagnostic);
        self.errors.last_mut().expect("just pushed")
    }

    fn load(&mut self, path: &Path, text: String) {
        let file = self.document.sources.add(path.display().to_string(), text);
        let normalized = normalize(path);
        self.stack.push(normalized.clone());
        self.loaded.push(normalized);
        let text = self.document.sources.files[file].text.clone();
        let (root, syntax) = DeTable::parse_recoverable(&text);
        if !syntax.is_empty() {
            self.document.incomplete = true;
            for error in syntax {
                let spot = Spot {
                    file,
                    span: error.span().unwrap_or(0..0),
                };
                let message = error.message().trim().replace('\n', " ");
                let duplicate = (message == "duplicate key")
                    .then(|| first_definition(&text, spot.span.clone()))
                    .flatten();
                match duplicate {
                    Some((key, table, first)) => {
                        let first = Spot { file, span: first };
                        let at = self.document.sources.error(&first, "").location();
                        self.error(&spot, format!("duplicate key '{key}' {table}"))
                            .help = Some(format!("first set at {at}"));
                    }
                    None => {
                        // A letter that is not ASCII, where TOML wants a
                        // bare key, is worth naming: it may look like one.
                        let help = text
                            .get(spot.span.start..)
                            .and_then(|rest| rest.chars().next())
                            .filter(|character| !character.is_ascii())
                            .map(|character| {
                                format!(
                                    "{} is not ASCII; names are a-z, 0-9, '_' and '-'",
                                    describe_character(character)
                                )
                            });
                        self.error(&spot, format!("TOML syntax: {message}")).help = help;
                    }
                }
            }
            self.stack.pop();
            return;
        }
        let table = root.into_inner();
        if let Some(include) = table
            .iter()
            .find(|(key, _)| key.get_ref() == "include")
            .map(|(_, value)| value)
        {
            self.includes(file, path, include);
        }
        let first_component = self.document.components.len();
        let is_root = self.stack.len() == 1;
        for (key, value) in keys_in_order(&table) {
            let spot = Spot {
                file,
                span: key.span(),
            };
            match key.get_ref().as_ref() {
                "include" => {}
                host if is_root && self.host_keys.iter().any(|key| key == host) => {}
                "system" => self.system(file, value),
                "test" => self.test(file, value, &spot),
                "machine" => self.machine(file, value),
                "components" => {
                    let entries = self.entries(file, value, &spot, "components", "component");
                    self.document.components.extend(entries);
                }
                "component" => self.component_list(file, value, &spot),
                "queues" => {
                    let entries = self.entries(file, value, &spot, "queues", "queue");
                    self.document.queues.extend(entries);
                }
                "notifications" => {
                    let entries = self.entries(file, value, &spot, "notifications", "notification");
                    self.document.notifications.extend(entries);
                }
                "calls" => {
                    let entries = self.entries(file, value, &spot, "calls", "call");
                    self.document.calls.extend(entries);
                }
                "vms" => {
                    let entries = self.entries(file, value, &spot, "vms", "VM");
                    self.document.vms.extend(entries);
                }
                "disks" => {
                    let entries = self.entries(file, value, &spot, "disks", "disk");
                    self.document.virtual_disks.extend(entries);
                }
                "networks" => {
                    let entries = self.entries(file, value, &spot, "networks", "network");
                    self.document.networks.extend(entries);
                }
                "description" => {
                    self.document.broken_sections = true;
                    self.error(&spot, "unknown top-level key 'description'").help = Some(
                        "a system's description is written in its [system] table: description = \"...\"".into(),
                    );
                }
                other => {
                    self.document.broken_sections = true;
                    let help = suggest(other, TOP_LEVEL_KEYS).unwrap_or_else(|| {
                        format!("a system file has only {}", TOP_LEVEL_KEYS.join(", "))
                    });
                    self.error(&spot, format!("unknown top-level key '{other}'"))
                        .help = Some(help);
                }
            }
        }
        // Components are numbered in the order written, whichever form
        // declares them.
        self.document.components[first_component..].sort_by_key(|entry| entry.spot.span.start);
        self.stack.pop();
    }

    /// `[[component]]` entries, each lowered to the `[components.NAME]`
    /// entry that sets only its program and arguments.
    fn component_list(&mut self, file: usize, value: &Spanned<DeValue<'_>>, spot: &Spot) {
        let tables = value
            .get_ref()
            .as_array()
            .filter(|array| array.iter().all(|element| element.get_ref().is_table()));
        let Some(tables) = tables else {
            self.document.broken_sections = true;
            self.error(spot, "'component' must be a list of tables")
                .help = Some("write [[component]] followed by name = \"NAME\"".into());
            return;
        };
        for (index, table) in tables.iter().enumerate() {
            let name = table
                .get_ref()
                .get("name")
                .and_then(|name| name.get_ref().as_str());
            let context = match name {
                Some(name) => format!("component '{name}'"),
                None => format!("[[component]] entry {}", index + 1),
            };
            let (raw, dropped) = self.deserialize::<RawListComponent>(file, table, &context);
            let Some(raw) = raw else {
                // No usable name (reported): nothing can refer to it, and
                // "no components" would be noise.
                self.document.broken_sections = true;
                continue;
            };
            self.document.components.push(Entry {
                name: raw.name.get_ref().clone(),
                spot: Spot {
                    file,
                    span: raw.name.span(),
                },
                value: Some(RawComponent {
                    program: raw.program,
                    args: raw.args,
                    corrupt: raw.corrupt,
                    ..RawComponent::default()
                }),
                dropped,
            });
        }
    }

    fn includes(&mut self, file: usize, path: &Path, value: &Spanned<DeValue<'_>>) {
        let names = match Vec::<Spanned<String>>::deserialize(value.clone().into_deserializer()) {
            Ok(names) => names,
            Err(_) => {
                self.document.incomplete = true;
                let spot = Spot {
                    file,
                    span: value.span(),
                };
                self.error(&spot, "'include' must be a list of file names")
                    .help = Some("write include = [\"base.toml\"]".into());
                return;
            }
        };
        let directory = path.parent().unwrap_or(Path::new(""));
        for name in names {
            let spot = Spot {
                file,
                span: name.span(),
            };
            let included = directory.join(name.get_ref());
            let normalized = normalize(&included);
            if let Some(start) = self.stack.iter().position(|open| *open == normalized) {
                let mut chain: Vec<String> = self.stack[start..]
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                chain.push(normalized.display().to_string());
                self.document.incomplete = true;
                self.error(&spot, format!("include cycle: {}", chain.join(" -> ")));
                continue;
            }
            if self.loaded.contains(&normalized) {
                continue;
            }
            if self.stack.len() >= MAX_INCLUDE_DEPTH {
                self.document.incomplete = true;
                self.error(
                    &spot,
                    format!("includes nest more than {MAX_INCLUDE_DEPTH} files deep"),
                );
                continue;
            }
            if self.bytes > MAX_SYSTEM_BYTES {
                // Reported at the include that crossed the limit.
                continue;
            }
            let read = (self.read)(&included);
            let cannot = |reason: String| {
                format!(
                    "cannot read included file '{}' ({}): {reason}",
                    name.get_ref(),
                    included.display()
                )
            };
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.document.incomplete = true;
                    self.error(&spot, cannot(error.to_string())).help =
                        file_suggestion(name.get_ref(), &included, &error);
                    continue;
                }
            };
            self.bytes += bytes.len();
            if self.bytes > MAX_SYSTEM_BYTES {
                self.document.incomplete = true;
                let limit = crate::units::format_size(MAX_SYSTEM_BYTES as u64);
                self.error(
                    &spot,
                    cannot(format!(
                        "the system's files would hold more than {limit} together"
                    )),
                );
                continue;
            }
            match decode(&included.display().to_string(), bytes) {
                Ok(text) => self.load(&included, text),
                Err(error) if error.line == 0 => {
                    self.document.incomplete = true;
                    self.error(&spot, cannot(error.message));
                }
                Err(error) => {
                    self.document.incomplete = true;
                    self.errors.push(error);
                }
            }
        }
    }

    fn machine(&mut self, file: usize, value: &Spanned<DeValue<'_>>) {
        let (machine, dropped) = self.deserialize::<RawMachine>(file, value, "[machine]");
        if dropped.iter().any(|key| key == "nics") {
            self.document.broken_nics = true;
        }
        let Some(machine) = machine else {
            return;
        };
        for disk in machine.disks.into_iter().flatten() {
            let spot = Spot {
                file,
                span: disk.span(),
            };
            self.document.disks.push((spot, disk.into_inner()));
        }
        for nic in machine.nics.into_iter().flatten() {
            let spot = Spot {
                file,
                span: nic.span(),
            };
            self.document.nics.push((spot, nic.into_inner()));
        }
    }

    /// `[test]`: one table in the whole system.
    fn test(&mut self, file: usize, value: &Spanned<DeValue<'_>>, spot: &Spot) {
        if let Some(first) = &self.document.test {
            let first_spot = first.spot.clone();
            let first_at = self.document.sources.error(&first_spot, "").location();
            let first_file = self.document.sources.files[first_spot.file].name.clone();
            let this_file = self.document.sources.files[file].name.clone();
            self.error(
                spot,
                format!("[test] is written in both {first_file} and {this_file}"),
            )
            .help = Some(format!(
                "a system has one [test] table; the first is at {first_at}"
            ));
            return;
        }
        let value = if value.get_ref().is_table() {
            self.deserialize::<RawTest>(file, value, "[test]").0
        } else {
            self.error(spot, "'test' must be a table").help = Some(TEST_FORM_HELP.into());
            None
        };
        self.document.test = Some(TestTable {
            spot: spot.clone(),
            value,
        });
    }

    fn system(&mut self, file: usize, value: &Spanned<DeValue<'_>>) {
        let (Some(system), _) = self.deserialize::<RawSystem>(file, value, "[system]") else {
            return;
        };
        let fields = [
            ("description", system.description, 0),
            ("scheduling_controller", system.scheduling_controller, 1),
            ("interrupt_forwarder", system.interrupt_forwarder, 2),
        ];
        for (name, field, slot) in fields {
            let Some(field) = field else { continue };
            let spot = Spot {
                file,
                span: field.span(),
            };
            let setting = Setting {
                value: field.into_inner(),
                spot,
            };
            let existing = match slot {
                0 => &mut self.document.description,
                1 => &mut self.document.scheduling_controller,
                _ => &mut self.document.interrupt_forwarder,
            };
            match existing {
                None => *existing = Some(setting),
                Some(first) => {
                    let first_spot = first.spot.clone();
                    let first_at = self.document.sources.error(&first_spot, "").location();
                    let first_file = self.document.sources.files[first_spot.file].name.clone();
                    let this_file = self.document.sources.files[file].name.clone();
                    self.error(
                        &setting.spot,
                        format!("[system] {name} is set in both {first_file} and {this_file}"),
                    )
                    .help = Some(format!("first set at {first_at}"));
                }
            }
        }
    }

    fn entries<T: DeserializeOwned>(
        &mut self,
        file: usize,
        value: &Spanned<DeValue<'_>>,
        spot: &Spot,
        section: &str,
        kind: &str,
    ) -> Vec<Entry<T>> {
        let Some(table) = value.get_ref().as_table() else {
            self.document.broken_sections = true;
            self.error(spot, format!("'{section}' must be a table of {section}"))
                .help = Some(format!("write [{section}.NAME]"));
            return Vec::new();
        };
        let mut entries = Vec::new();
        for (key, value) in keys_in_order(table) {
            let name = key.get_ref().to_string();
            let spot = Spot {
                file,
                span: key.span(),
            };
            let context = format!("{kind} '{name}'");
            let (value, dropped) = if value.get_ref().is_table() {
                self.deserialize::<T>(file, value, &context)
            } else {
                self.error(&spot, format!("{context} must be a table")).help =
                    Some(format!("write [{section}.{name}] followed by its fields"));
                (None, Vec::new())
            };
            entries.push(Entry {
                name,
                spot,
                value,
                dropped,
            });
        }
        entries
    }

    /// Deserializes a table into `T`, reporting every error: after each
    /// failure the offending key is dropped and the table tried again.
    /// Returns the value read without the dropped keys (or `None` when a
    /// required key is missing) and the dropped keys.
    fn deserialize<T: DeserializeOwned>(
        &mut self,
        file: usize,
        value: &Spanned<DeValue<'_>>,
        context: &str,
    ) -> (Option<T>, Vec<String>) {
        let original = value;
        let mut value = value.clone();
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let error = match T::deserialize(value.clone().into_deserializer()) {
                Ok(parsed) => return (Some(parsed), dropped),
                Err(error) => error,
            };
            let message = error.message().trim().replace('\n', " ");
            let span = error.span().unwrap_or_else(|| value.span());
            // Spans survive removals, so the path in the original value
            // names list entries by the index people see.
            let path = key_path(original, &span);
            if let Some(missing) = between(&message, "missing field `", "`") {
                // A required key that was written wrong is reported already.
                if !dropped.iter().any(|key| key == missing) {
                    let spot = Spot {
                        file,
                        span: span_at(original, &path),
                    };
                    let what = missing_in(&path, missing);
                    self.error(&spot, format!("{context} is missing '{what}'"));
                }
            } else {
                let (text, help) = injection_key(context, original, &path, &message)
                    .unwrap_or_else(|| describe(context, &path, &message));
                self.error(
                    &Spot {
                        file,
                        span: span.clone(),
                    },
                    text,
                )
                .help = help;
            }
            if let Some(first) = path.first()
                && !dropped.contains(first)
            {
                dropped.push(first.clone());
            }
            // Drop what the error is about and try again: the list entry
            // holding it (so that the other entries are still read), else
            // the key; an error that cannot be pinned down ends the table.
            if remove_entry(&mut value, &span) {
                continue;
            }
            let missing_here = between(&message, "missing field `", "`").is_some();
            let Some(first) = path.first().filter(|_| !missing_here) else {
                return (None, dropped);
            };
            let DeValue::Table(table) = value.get_mut() else {
                return (None, dropped);
            };
            let Some(key) = table
                .keys()
                .find(|key| key.get_ref().as_ref() == first)
                .cloned()
            else {
                return (None, dropped);
            };
            table.remove(&key);
        }
    }
}

/// Removes the entry of the outermost list under `value` whose span holds
/// `span`; false when no list entry holds it.
fn remove_entry(value: &mut Spanned<DeValue<'_>>, span: &std::ops::Range<usize>) -> bool {
    let holds = |inner: &Spanned<DeValue<'_>>| {
        inner.span().start <= span.start && span.end <= inner.span().end
    };
    match value.get_mut() {
        DeValue::Table(table) => table
            .iter_mut()
            .find(|(_, inner)| holds(inner))
            .is_some_and(|(_, inner)| remove_entry(inner, span)),
        DeValue::Array(array) => {
            let Some(index) = array.iter().position(holds) else {
                return false;
            };
            *array = array
                .iter()
                .enumerate()
                .filter(|(at, _)| *at != index)
                .map(|(_, inner)| inner.clone())
                .collect();
            true
        }
        _ => false,
    }
}

/// For a "duplicate key" error at `span` of `text`: the key, the table it
/// is in (`in [components.a]`, `at the top level`) and where the key was first
/// set. The parser reports only the second place, so the text is parsed
/// again with the duplicate renamed; the renamed key sits in the same table
/// as the first one.
fn first_definition(
    text: &str,
    span: std::ops::Range<usize>,
) -> Option<(String, String, std::ops::Range<usize>)> {
    const PLACEHOLDER: &str = "capdl duplicate key";
    let key = text
        .get(span.clone())?
        .trim_matches(['"', '\''])
        .to_string();
    let renamed = format!(
        "{}\"{PLACEHOLDER}\"{}",
        &text[..span.start],
        &text[span.end..]
    );
    let (root, _) = DeTable::parse_recoverable(&renamed);
    let root = Spanned::new(0..renamed.len(), DeValue::Table(root.into_inner()));
    let mut path = Vec::new();
    let table = table_holding(&root, PLACEHOLDER, &mut path)?;
    let (first, _) = table
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == key)?;
    let element = path
        .last()
        .and_then(|last| last.strip_prefix('['))
        .and_then(|index| index.trim_end_matches(']').parse::<usize>().ok());
    let place = match element {
        _ if path.is_empty() => "at the top level".to_string(),
        Some(index) => format!(
            "in [[{}]] entry {}",
            join_path(&path[..path.len() - 1]),
            index + 1
        ),
        None => format!("in [{}]", join_path(&path)),
    };
    // Spans before the renamed key are the same in both texts.
    (first.span().end <= span.start).then(|| (key, place, first.span()))
}

/// The table under `value` holding a key named `key`, with the path to it.
fn table_holding<'a, 'i>(
    value: &'a Spanned<DeValue<'i>>,
    key: &str,
    path: &mut Vec<String>,
) -> Option<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if table.iter().any(|(name, _)| name.get_ref() == key) {
                return Some(table);
            }
            for (name, inner) in table.iter() {
                path.push(name.get_ref().to_string());
                if let Some(found) = table_holding(inner, key, path) {
                    return Some(found);
                }
                path.pop();
            }
            None
        }
        DeValue::Array(array) => {
            for (index, inner) in array.iter().enumerate() {
                path.push(format!("[{index}]"));
                if let Some(found) = table_holding(inner, key, path) {
                    return Some(found);
                }
                path.pop();
            }
            None
        }
        _ => None,
    }
}

/// How `[test]` is written, for help texts.
pub const TEST_FORM_HELP: &str =
    "write [test] with injector = \"NAME\" and targets = [\"NAME\", ...]";

/// For an unknown key about fault injection (`inject`, `injector`,
/// `inject_into`, ...) anywhere but in `[test]`: a message saying where
/// injection is granted, and help with the `[test]` table this key
/// meant, filled in from the component and the value where they tell.
fn injection_key(
    context: &str,
    original: &Spanned<DeValue<'_>>,
    path: &[String],
    message: &str,
) -> Option<(String, Option<String>)> {
    let unknown = between(message, "unknown field `", "`")?;
    if context == "[test]" || !unknown.starts_with("inject") {
        return None;
    }
    let place = if path.len() > 1 {
        format!(" in '{}'", join_path(&path[..path.len() - 1]))
    } else {
        String::new()
    };
    let text = format!(
        "{context}: unknown field '{unknown}'{place}: fault injection is granted only by a system's [test] table"
    );
    let component = between(context, "component '", "'").filter(|_| path.len() == 1);
    let Some(component) = component else {
        return Some((text, Some(TEST_FORM_HELP.into())));
    };
    let value = value_at(original, path).map(Spanned::get_ref);
    let names: Vec<String> = match value {
        Some(DeValue::String(name)) => vec![name.to_string()],
        Some(DeValue::Array(list)) => list
            .iter()
            .filter_map(|item| item.get_ref().as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let quoted = |names: &[String]| -> String {
        let list: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
        list.join(", ")
    };
    // `injector = "x"` (or `injected_by`) names who injects into this one;
    // any other key names what this one injects into.
    let (injector, targets) = if unknown == "injector" || unknown.starts_with("injected") {
        let injector = names.first().cloned().unwrap_or_else(|| "NAME".into());
        (injector, format!("\"{component}\""))
    } else if names.is_empty() {
        (component.to_string(), "\"NAME\", ...".to_string())
    } else {
        (component.to_string(), quoted(&names))
    };
    let help = format!("write [test] with injector = \"{injector}\" and targets = [{targets}]");
    Some((text, Some(help)))
}

/// The value at `path` inside `value`, if it is there.
fn value_at<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    path: &[String],
) -> Option<&'v Spanned<DeValue<'i>>> {
    let mut current = value;
    for part in path {
        current = match current.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .find(|(key, _)| key.get_ref() == part)
                .map(|(_, inner)| inner)?,
            DeValue::Array(array) => part
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|index| array.get(index))?,
            _ => return None,
        };
    }
    Some(current)
}

/// The span of the value at `path` inside `value`.
fn span_at(value: &Spanned<DeValue<'_>>, path: &[String]) -> std::ops::Range<usize> {
    let mut current = value;
    for part in path {
        let next = match current.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .find(|(key, _)| key.get_ref() == part)
                .map(|(_, inner)| inner),
            DeValue::Array(array) => part
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|index| array.get(index)),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => break,
        }
    }
    current.span()
}

/// `missing` qualified by the nested table it is missing from.
fn missing_in(path: &[String], missing: &str) -> String {
    if path.is_empty() {
        missing.to_string()
    } else {
        format!("{}.{missing}", join_path(path))
    }
}

/// The text between `start` and the next `end` in `message`.
fn between<'m>(message: &'m str, start: &str, end: &str) -> Option<&'m str> {
    let rest = &message[message.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// The backquoted words after "expected" in a serde message.
fn expected_words(message: &str) -> Vec<&str> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..].split('`').skip(1).step_by(2).collect()
}

/// `restart.max`, `mmio[0].size`.
fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !part.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// The keys leading from `value` to the innermost value or key containing
/// `span`: `["restart", "max"]`, `["mmio", "[0]", "size"]`.
fn key_path(value: &Spanned<DeValue<'_>>, span: &std::ops::Range<usize>) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = value;
    loop {
        let contains =
            |inner: &std::ops::Range<usize>| inner.start <= span.start && span.end <= inner.end;
        match current.get_ref() {
            DeValue::Table(table) => {
                let Some((key, inner)) = table
                    .iter()
                    .find(|(key, inner)| key.span() == *span || contains(&inner.span()))
                else {
                    return path;
                };
                path.push(key.get_ref().to_string());
                if key.span() == *span {
                    return path;
                }
                current = inner;
            }
            DeValue::Array(array) => {
                let Some((index, inner)) = array
                    .iter()
                    .enumerate()
                    .find(|(_, inner)| contains(&inner.span()))
                else {
                    return path;
                };
                path.push(format!("[{index}]"));
                current = inner;
            }
            _ => return path,
        }
    }
}

/// Turns a serde message about `path` into the format's language.
fn describe(context: &str, path: &[String], message: &str) -> (String, Option<String>) {
    let field = join_path(path);
    if let Some(unknown) = between(message, "unknown field `", "`") {
        let allowed = expected_words(message);
        let help = suggest(unknown, allowed.iter().copied()).or_else(|| {
            Some(if allowed.is_empty() {
                "this table has no fields".to_string()
            } else {
                format!("the fields are: {}", allowed.join(", "))
            })
        });
        let place = if path.len() > 1 {
            format!(" in '{}'", join_path(&path[..path.len() - 1]))
        } else {
            String::new()
        };
        return (format!("{context}: unknown field '{unknown}'{place}"), help);
    }
    if let Some(unknown) = between(message, "unknown variant `", "`") {
        let allowed = expected_words(message);
        let quoted: Vec<String> = allowed.iter().map(|word| format!("\"{word}\"")).collect();
        let help = suggest(unknown, allowed.iter().copied());
        return (
            format!(
                "{context}: '{field}' must be {}, not \"{unknown}\"",
                quoted.join(" or ")
            ),
            help,
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            let expected = match expected {
                "a sequence" => "a list",
                other if other.starts_with("struct ") => "a table",
                other => other,
            };
            return (
                format!("{context}: '{field}' expects {expected}, found {found}"),
                None,
            );
        }
    }
    (format!("{context}: invalid '{field}': {message}"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("a/./b/../c.toml")),
            PathBuf::from("a/c.toml")
        );
        assert_eq!(
            normalize(Path::new("../x.toml")),
            PathBuf::from("../x.toml")
        );
    }

    #[test]
    fn joins_paths() {
        assert_eq!(
            join_path(&["mmio".into(), "[0]".into(), "size".into()]),
            "mmio[0].size"
        );
        assert_eq!(join_path(&["restart".into(), "max".into()]), "restart.max");
    }

    #[test]
    fn reads_expected_lists() {
        assert_eq!(
            expected_words("unknown field `x`, expected one of `a`, `b`"),
            ["a", "b"]
        );
        assert_eq!(
            expected_words("unknown variant `x`, expected `a` or `b`"),
            ["a", "b"]
        );
        assert!(expected_words("unknown field `x`, there are no fields").is_empty());
    }
}
