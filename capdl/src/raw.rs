//! Reading config files: TOML syntax, includes, the strict schema, merging.
//!
//! This is the only module that sees TOML. It parses each file into a
//! spanned tree, follows `include`s depth-first (includes before the
//! including file's own declarations, each file once, cycles refused), and
//! deserializes every `[components.NAME]`, `[queues.NAME]`,
//! `[notifications.NAME]`, `[vms.NAME]` and `[system]` table into the `Raw*` structs
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

use crate::diagnostic::{Diagnostic, SourceMap, Spot, file_error, suggest};
use crate::units::{Duration, Number, PortRange, Size};

/// The keys a config file may have at its top level.
pub const TOP_LEVEL_KEYS: [&str; 7] = [
    "include",
    "system",
    "components",
    "component",
    "queues",
    "notifications",
    "vms",
];
/// How deep includes may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// `[system]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub description: Option<Spanned<String>>,
    pub scheduling_controller: Option<Spanned<String>>,
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

/// `restart = { max = 3, backoff = "10ms" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub max: Option<Spanned<Number>>,
    pub backoff: Option<Spanned<Duration>>,
}

/// One entry of `mmio = [{ physical = "0xfebd0000", size = "4KiB" }]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMmio {
    pub physical: Spanned<Number>,
    pub size: Spanned<Size>,
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
    pub interrupts: Option<Vec<Spanned<Number>>>,
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

/// `[notifications.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
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

/// `[vms.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    /// The component whose thread runs the vCPU.
    pub switcher: Spanned<String>,
    pub image: Option<Spanned<String>>,
    pub memory: Option<Spanned<Size>>,
    pub entry: Option<Spanned<VmEntry>>,
    pub priority: Option<Spanned<Number>>,
    pub budget: Option<Spanned<Duration>>,
    pub period: Option<Spanned<Duration>>,
    /// Components that may poke the vCPU.
    pub poke: Option<Vec<Spanned<String>>>,
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
    pub components: Vec<Entry<RawComponent>>,
    pub queues: Vec<Entry<RawQueue>>,
    pub notifications: Vec<Entry<RawNotification>>,
    pub vms: Vec<Entry<RawVm>>,
    /// Whether a file had a TOML syntax error or an include failed: the
    /// document is incomplete, so checking stops after loading (references
    /// into the missing part would only add noise).
    pub incomplete: bool,
    /// Whether a top-level key was unknown or not of its kind (a
    /// `components` that is not a table, a `[[component]]` entry without a
    /// name): already reported, and "no components" would be noise.
    pub broken_sections: bool,
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
    read: &'r dyn Fn(&Path) -> io::Result<String>,
    /// Top-level keys of the root file that belong to a format embedding
    /// the system (a scenario's `timeout`): skipped, not refused.
    host_keys: &'r [String],
    document: Document,
    errors: Vec<Diagnostic>,
    /// Normalized paths of the files being loaded (innermost last).
    stack: Vec<PathBuf>,
    /// Normalized paths of every file loaded.
    loaded: Vec<PathBuf>,
}

/// Loads `root` and everything it includes, reading files with `read`;
/// `host_keys` are top-level keys of `root` that are not the system's.
pub fn load_document(
    root: &Path,
    read: &dyn Fn(&Path) -> io::Result<String>,
    host_keys: &[String],
) -> (Document, Vec<Diagnostic>) {
    let mut loader = Loader {
        read,
        host_keys,
        document: Document::default(),
        errors: Vec::new(),
        stack: Vec::new(),
        loaded: Vec::new(),
    };
    match read(root) {
        Ok(text) => loader.load(root, text),
        Err(error) => loader.errors.push(file_error(
            root.display().to_string(),
            format!("cannot read the system description: {error}"),
        )),
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
                self.error(&spot, format!("TOML syntax: {message}"));
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
                "vms" => {
                    let entries = self.entries(file, value, &spot, "vms", "VM");
                    self.document.vms.extend(entries);
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
            match (self.read)(&included) {
                Ok(text) => self.load(&included, text),
                Err(error) => {
                    self.document.incomplete = true;
                    let siblings = std::fs::read_dir(directory)
                        .map(|entries| {
                            entries
                                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                                .filter(|entry| entry.ends_with(".toml"))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    let help = suggest(name.get_ref(), siblings.iter().map(String::as_str));
                    self.error(
                        &spot,
                        format!(
                            "cannot read included file '{}' ({}): {error}",
                            name.get_ref(),
                            included.display()
                        ),
                    )
                    .help = help;
                }
            }
        }
    }

    fn system(&mut self, file: usize, value: &Spanned<DeValue<'_>>) {
        let (Some(system), _) = self.deserialize::<RawSystem>(file, value, "[system]") else {
            return;
        };
        let fields = [
            ("description", system.description, 0),
            ("scheduling_controller", system.scheduling_controller, 1),
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
            let existing = if slot == 0 {
                &mut self.document.description
            } else {
                &mut self.document.scheduling_controller
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
        let mut value = value.clone();
        let mut dropped: Vec<String> = Vec::new();
        loop {
            let error = match T::deserialize(value.clone().into_deserializer()) {
                Ok(parsed) => return (Some(parsed), dropped),
                Err(error) => error,
            };
            let message = error.message().trim().replace('\n', " ");
            let span = error.span().unwrap_or_else(|| value.span());
            let path = key_path(&value, &span);
            if let Some(missing) = between(&message, "missing field `", "`") {
                if !dropped.iter().any(|key| key == missing) {
                    let spot = Spot {
                        file,
                        span: span_at(&value, &path),
                    };
                    let what = missing_in(&path, missing);
                    self.error(&spot, format!("{context} is missing '{what}'"));
                }
                return (None, dropped);
            }
            let (text, help) = describe(context, &path, &message);
            let spot = Spot { file, span };
            self.error(&spot, text).help = help;
            // Drop the key the error is about and try again; an error that
            // cannot be pinned to a key ends the table.
            let Some(first) = path.first().cloned() else {
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
            dropped.push(first);
        }
    }
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
