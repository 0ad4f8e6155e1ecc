//! System files: what a boot image holds.
//!
//! Every system file is a capdl system description (`docs/CAPDL.md`),
//! written in full (`[components.NAME]`, `[queues.NAME]`, `[vms.NAME]`, ...)
//! or as a `[[component]]` list, the short form for tests of independent
//! programs:
//!
//! ```toml
//! [[component]]
//! name = "hello"           # 1-32 of [a-z0-9_-], unique
//! program = "hello"        # crate under components/ (default: name)
//! args = "count=3"         # optional, at most 64 bytes
//! corrupt = "bad-magic"    # optional, tests only: damage the ELF before packing
//! ```
//!
//! capdl reads both into one model, checks it (every error with file, line
//! and column, and "did you mean" where a name is close) and lowers it to a
//! boot spec, so every image this tool makes carries a spec. The image
//! holds the spec, each program entry the spec names once (a corrupted copy
//! under its component's own name, [`crate::corrupt`]) and each guest image
//! its VMs start from once (as `vm-<image>`; [`crate::pack::guest_images`]
//! reads them from the spec). This module is the only place that asks capdl
//! for a system: a scenario's `[[component]]` list is read by capdl from the
//! scenario file itself ([`load_embedded`]), skipping the scenario's own
//! keys. [`Source`] and [`ConfigError`] locate this tool's own config errors
//! (the keys of scenario files).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use crate::corrupt::Corruption;

/// A configuration error located in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line and column, when the error has a place.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(formatter, "{}:{line}:{column}: {}", self.file, self.message)
            }
            None => write!(formatter, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A configuration file's text and the name errors call it by.
pub struct Source {
    pub file: String,
    pub text: String,
}

impl Source {
    /// Reads a file; its name in errors is the path relative to the current
    /// directory when it lies below it, else the path as given.
    /// Read as capdl reads system files: a regular file of at most
    /// [`capdl::MAX_FILE_BYTES`], UTF-8.
    pub fn read(path: &Path) -> Result<Self> {
        let file = shown(path);
        let text =
            capdl::read_text(path, &file).map_err(|error| anyhow::anyhow!("{}", error.brief()))?;
        Ok(Self { file, text })
    }

    /// The 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        capdl::diagnostic::line_column(&self.text, offset)
    }

    /// An error at a span of this file.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: Some(self.position(span.start)),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: None,
            message: message.into(),
        }
    }

    /// Parses the text as strict TOML into `T`, turning TOML and serde
    /// errors into located [`ConfigError`]s.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|error| {
            let message = error.message().trim().replace('\n', " ");
            match error.span() {
                Some(span) => self.error_at(span, message),
                None => self.error(message),
            }
        })
    }
}

/// A program entry of the boot image: the ELF of `program`, damaged by
/// `corruption` if set, under the name `entry` (the name the spec's
/// component records give as their program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageProgram {
    pub entry: String,
    pub program: String,
    pub corruption: Option<Corruption>,
}

/// A checked, lowered system.
#[derive(Clone, Debug)]
pub struct System {
    pub path: PathBuf,
    pub description: Option<String>,
    /// How many components the spec declares.
    pub components: usize,
    /// The program entries the image holds, each once.
    pub programs: Vec<ImageProgram>,
    /// The boot spec.
    pub spec: Vec<u8>,
    /// The unmodified guests' bundles to pack: entry name, files and
    /// command line.
    pub kernels: Vec<(String, capdl::KernelGuest)>,
    /// The capDL-style listing.
    pub cdl: String,
    /// Disks the emulator attaches (`[machine] disks`).
    pub disks: Vec<capdl::MachineDisk>,
    /// NICs the emulator attaches after the disks (`[machine] nics`).
    pub nics: Vec<capdl::MachineNic>,
}

impl System {
    /// The file name without its extension: names the packed image.
    pub fn stem(&self) -> String {
        file_stem(&self.path)
    }
}

/// A path for messages: relative to the current directory when it lies
/// below it, else as given.
pub fn shown(path: &Path) -> String {
    let current = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&current)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A path's file name without extension, or `system` if it has none.
pub fn file_stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || "system".into(),
        |stem| stem.to_string_lossy().into_owned(),
    )
}

/// What this tool asks of capdl: the corruptions it can apply, and the
/// keys of the file that embeds the system (none for a system file).
fn options(host_keys: &[&str]) -> capdl::Options {
    capdl::Options {
        corruptions: Corruption::names(),
        host_keys: host_keys.iter().map(|key| key.to_string()).collect(),
        ..capdl::Options::default()
    }
}

/// Reads, checks and lowers a system file (and its includes) against the
/// programs that exist.
pub fn load(path: &Path, programs: &capdl::ProgramSet) -> Result<System> {
    load_with_console(path, programs, None)
}

/// [`load`], giving the system console's input to VM `console` as if its
/// table said `console_input = true`.
pub fn load_with_console(
    path: &Path,
    programs: &capdl::ProgramSet,
    console: Option<&str>,
) -> Result<System> {
    let named = PathBuf::from(shown(path));
    let options = capdl::Options {
        console: console.map(str::to_string),
        ..options(&[])
    };
    let system = capdl::load_with(&named, programs, &options)
        .map_err(|diagnostics| anyhow::anyhow!("{}", diagnostics.brief()))?;
    lower(path, &system)
}

/// Checks and lowers the `[[component]]` list of a file of another format
/// (a scenario), whose own top-level keys are `host_keys`.
pub fn load_embedded(
    source: &Source,
    path: &Path,
    host_keys: &[&str],
    programs: &capdl::ProgramSet,
) -> Result<System> {
    let named = PathBuf::from(&source.file);
    let read = |file: &Path| {
        if file == named {
            Ok(source.text.clone().into_bytes())
        } else {
            capdl::read_file(file)
        }
    };
    let system = capdl::load_from(&named, &read, programs, &options(host_keys))
        .map_err(|diagnostics| anyhow::anyhow!("{}", diagnostics.brief()))?;
    lower(path, &system)
}

fn lower(path: &Path, system: &capdl::System) -> Result<System> {
    let lowered = system.lower();
    let programs = lowered
        .image_programs()
        .into_iter()
        .map(|program| {
            let corruption = match &program.corrupt {
                None => None,
                Some(name) => Some(
                    Corruption::from_name(name)
                        .with_context(|| format!("capdl passed an unknown corruption '{name}'"))?,
                ),
            };
            Ok(ImageProgram {
                entry: program.entry,
                program: program.program,
                corruption,
            })
        })
        .collect::<Result<_>>()?;
    Ok(System {
        path: path.to_path_buf(),
        description: (!system.description.is_empty()).then(|| system.description.clone()),
        components: system.components.len(),
        programs,
        spec: lowered.spec,
        kernels: lowered.kernels,
        cdl: lowered.cdl,
        disks: system.disks.clone(),
        nics: system.nics.clone(),
    })
}

/// Runs `cdl`: checks a system file and prints its listing.
pub fn print_listing(path: Option<PathBuf>) -> Result<std::process::ExitCode> {
    let workspace = crate::workspace::Workspace::load()?;
    let path = path.unwrap_or_else(|| workspace.root.join(crate::run::DEFAULT_SYSTEM));
    let system = load(&path, &workspace.programs()?)?;
    print!("{}", system.cdl);
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs() -> capdl::ProgramSet {
        capdl::ProgramSet::new("components/", ["crasher", "hello", "world-switcher"])
    }

    /// Writes a system file into a fresh directory and loads it.
    fn load_text(tag: &str, text: &str) -> Result<System> {
        let directory =
            std::env::temp_dir().join(format!("mvbuild-system-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("system.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path, &programs());
        std::fs::remove_dir_all(&directory).unwrap();
        loaded
    }

    #[test]
    fn a_component_list_is_a_system_with_a_spec() {
        let system = load_text(
            "list",
            "[system]\ndescription = \"two\"\n\
             [[component]]\nname = \"hello\"\nargs = \"count=3\"\n\
             [[component]]\nname = \"boom\"\nprogram = \"hello\"\ncorrupt = \"wx-segment\"\n",
        )
        .unwrap();
        assert_eq!(system.description.as_deref(), Some("two"));
        assert_eq!(system.components, 2);
        assert_eq!(
            system.programs,
            [
                ImageProgram {
                    entry: "boom".into(),
                    program: "hello".into(),
                    corruption: Some(Corruption::WxSegment),
                },
                ImageProgram {
                    entry: "hello".into(),
                    program: "hello".into(),
                    corruption: None,
                },
            ]
        );
        let spec = microvisor_abi::spec::Spec::parse(&system.spec).unwrap();
        assert_eq!(spec.components.len(), 2);
        assert!(
            system
                .cdl
                .contains("hello = component (index: 0, program: hello")
        );
    }

    /// capdl's errors read as this tool's own: `file:line:column: ...`,
    /// after the one `error: ` the tool prints (not `error: error: ...`).
    #[test]
    fn errors_in_a_component_list_are_located() {
        let message = load_text(
            "errors",
            "[[component]]\nname = \"a\"\nprogram = \"helo\"\n\
             [[component]]\nname = \"b\"\nprogram = \"hello\"\ncorrupt = \"bad-magik\"\n",
        )
        .unwrap_err()
        .to_string();
        let file = std::env::temp_dir()
            .join(format!("mvbuild-system-errors-{}", std::process::id()))
            .join("system.toml");
        let file = shown(&file);
        assert_eq!(
            message,
            format!(
                "{file}:3:11: component 'a': no program 'helo' in components/system/ or components/test/\n  = help: did you mean 'hello'?\n\
                 {file}:7:11: component 'b': unknown corruption 'bad-magik'\n  = help: did you mean 'bad-magic'?"
            )
        );
        let message = load_text("syntax", "[components.a]\npriority = \n")
            .unwrap_err()
            .to_string();
        assert!(
            message.ends_with(
                "system.toml:2:12: TOML syntax: string values must be quoted, expected literal string"
            ) && !message.contains("error"),
            "{message}"
        );
    }

    #[test]
    fn files_that_are_not_system_text_are_refused_with_a_reason() {
        let message = load(Path::new("/dev/zero"), &programs())
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "/dev/zero: cannot read the system description: it is a character device, not a regular file"
        );
        let message = Source::read(Path::new("/dev/null"))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "/dev/null: cannot read the file: it is a character device, not a regular file"
        );
    }

    #[test]
    fn descriptions_name_their_guests() {
        let system = load_text(
            "vms",
            "[components.ws-a]\nprogram = \"world-switcher\"\n\
             [components.ws-b]\nprogram = \"world-switcher\"\n\
             [vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n\
             [vms.b]\nswitcher = \"ws-b\"\nimage = \"dos\"\nentry = \"real\"\n",
        )
        .unwrap();
        let guests: Vec<String> = crate::pack::guest_images(&system.spec)
            .unwrap()
            .into_iter()
            .map(|guest| guest.image)
            .collect();
        assert_eq!(guests, ["hello", "dos"]);
        let packed: Vec<&str> = system.programs.iter().map(|p| p.entry.as_str()).collect();
        assert_eq!(packed, ["world-switcher"]);
        assert!(system.cdl.contains("a = vm (index: 0"));
    }

    #[test]
    fn positions_count_lines_and_columns() {
        let source = Source {
            file: "examples/test.toml".into(),
            text: "ab\ncd\n".into(),
        };
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(4), (2, 2));
        assert_eq!(source.position(100), (3, 1));
    }
}
