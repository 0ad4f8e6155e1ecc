//! System files: what a boot image holds.
//!
//! A system file is either a **capdl system description** (`docs/CAPDL.md`:
//! `[components.NAME]`, `[queues.NAME]`, `[vms.NAME]`, ...), which the
//! `capdl` crate checks and lowers to a boot spec — the image then holds the
//! spec, each distinct program once and each guest image its VMs start from
//! once (as `vm-<image>`; [`crate::pack::guest_images`] reads them from the
//! spec) — or a **quick component
//! list**, for tests
//! that need no queues or supervision (every program then runs with default
//! settings, as the core does for an image without a spec):
//!
//! ```toml
//! description = "..."      # optional
//! [[component]]
//! name = "hello"           # 1-32 of [a-z0-9_-], unique
//! program = "hello"        # crate under components/ (default: name)
//! args = "count=3"         # optional, at most 64 bytes
//! corrupt = "bad-magic"    # optional, tests only: damage the ELF before packing
//! ```
//!
//! Every error is one sentence prefixed with `file:line:column` (from the
//! TOML span) and, for a mistyped program, says "did you mean ...?" and lists
//! the programs that exist. This module is the only place that reads system
//! files; scenario files ([`crate::scenario`]) reuse its component table and
//! error helpers. A file with a top-level `component` array is a quick
//! list; anything else goes to `capdl`, whose diagnostics are shown as they
//! are.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capdl::diagnostic::closest;
use microvisor_abi::image::{MAX_ENTRIES, is_valid_name};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::corrupt::Corruption;

/// The longest argument string the boot image format carries.
pub const ARGS_MAX: usize = 64;

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
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        Ok(Self {
            file: shown(path),
            text,
        })
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

/// One `[[component]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    pub name: Spanned<String>,
    pub program: Option<Spanned<String>>,
    pub args: Option<Spanned<String>>,
    pub corrupt: Option<Corruption>,
}

/// A checked component: a program to pack under a name, with arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub program: String,
    pub args: String,
    pub corruption: Option<Corruption>,
}

/// A checked system description.
#[derive(Clone, Debug)]
pub struct System {
    pub path: PathBuf,
    pub description: Option<String>,
    /// The image's program entries, in order.
    pub components: Vec<Component>,
    /// The boot spec, for a capdl description.
    pub spec: Option<Vec<u8>>,
    /// The capDL-style listing, for a capdl description.
    pub cdl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemFile {
    description: Option<String>,
    #[serde(default)]
    component: Vec<ComponentEntry>,
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

/// Reads and checks a system file against the available programs.
pub fn load(path: &Path, programs: &[String]) -> Result<System> {
    let source = Source::read(path)?;
    if !is_component_list(&source.text) {
        return load_description(path, programs);
    }
    let (description, components) = parse(&source, programs)?;
    Ok(System {
        path: path.to_path_buf(),
        description,
        components,
        spec: None,
        cdl: None,
    })
}

/// Runs `cdl`: checks a capdl system description and prints its listing.
pub fn print_listing(path: Option<PathBuf>) -> Result<std::process::ExitCode> {
    let workspace = crate::workspace::Workspace::load()?;
    let path = path.unwrap_or_else(|| workspace.root.join(crate::run::DEFAULT_SYSTEM));
    let system = load(&path, &workspace.programs()?)?;
    let Some(listing) = system.cdl else {
        anyhow::bail!(
            "{} is a quick component list, not a system description: it has no capabilities to list",
            shown(&path)
        );
    };
    print!("{listing}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Whether `text` is a quick component list (a top-level `component`
/// array) rather than a capdl description.
pub fn is_component_list(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|table| table.contains_key("component"))
}

/// Loads a capdl system description and lowers it.
pub fn load_description(path: &Path, programs: &[String]) -> Result<System> {
    let set = capdl::ProgramSet::new("components", programs.iter().cloned());
    let system = capdl::load(path, &set).map_err(|diagnostics| anyhow::anyhow!("{diagnostics}"))?;
    let lowered = system.lower();
    let components = lowered
        .distinct_programs()
        .into_iter()
        .map(|program| Component {
            name: program.to_string(),
            program: program.to_string(),
            args: String::new(),
            corruption: None,
        })
        .collect();
    Ok(System {
        path: path.to_path_buf(),
        description: (!system.description.is_empty()).then(|| system.description.clone()),
        components,
        spec: Some(lowered.spec),
        cdl: Some(lowered.cdl),
    })
}

/// Parses and checks system text.
pub fn parse(
    source: &Source,
    programs: &[String],
) -> Result<(Option<String>, Vec<Component>), ConfigError> {
    let file: SystemFile = source.parse()?;
    let components = check_components(source, file.component, programs)?;
    Ok((file.description, components))
}

/// Checks a component list: at least one, at most the image's capacity,
/// well-formed unique names, existing programs, arguments that fit.
pub fn check_components(
    source: &Source,
    entries: Vec<ComponentEntry>,
    programs: &[String],
) -> Result<Vec<Component>, ConfigError> {
    if entries.is_empty() {
        return Err(source.error("defines no components: add a [[component]] table"));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(source.error(format!(
            "defines {} components; a boot image holds at most {MAX_ENTRIES}",
            entries.len()
        )));
    }
    let mut components: Vec<Component> = Vec::with_capacity(entries.len());
    let mut name_spans: Vec<Range<usize>> = Vec::new();
    for entry in entries {
        let name = entry.name.get_ref();
        if !is_valid_name(name) {
            return Err(source.error_at(
                entry.name.span(),
                format!(
                    "component name '{name}' is invalid: use 1-32 characters of a-z, 0-9, '-' and '_'"
                ),
            ));
        }
        if let Some(index) = components.iter().position(|other| &other.name == name) {
            let (line, _) = source.position(name_spans[index].start);
            return Err(source.error_at(
                entry.name.span(),
                format!("component name '{name}' is used twice (first on line {line})"),
            ));
        }
        let (program, program_span, defaulted) = match &entry.program {
            Some(program) => (program.get_ref().clone(), program.span(), false),
            None => (name.clone(), entry.name.span(), true),
        };
        if !programs.contains(&program) {
            let mut message = format!("unknown program '{program}'");
            if let Some(suggestion) = closest(&program, programs.iter().map(String::as_str)) {
                message.push_str(&format!(": did you mean '{suggestion}'?"));
            }
            if defaulted {
                message.push_str(" (A component's program defaults to its name.)");
            }
            message.push_str(&format!(
                " Available programs: {}.",
                if programs.is_empty() {
                    "none (no components/<name>/src/main.rs)".to_string()
                } else {
                    programs.join(", ")
                }
            ));
            return Err(source.error_at(program_span, message));
        }
        let args = match &entry.args {
            Some(args) if args.get_ref().len() > ARGS_MAX => {
                return Err(source.error_at(
                    args.span(),
                    format!(
                        "the args of component '{name}' are {} bytes; at most {ARGS_MAX} fit",
                        args.get_ref().len()
                    ),
                ));
            }
            Some(args) => args.get_ref().clone(),
            None => String::new(),
        };
        name_spans.push(entry.name.span());
        components.push(Component {
            name: name.clone(),
            program,
            args,
            corruption: entry.corrupt,
        });
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs() -> Vec<String> {
        vec!["crasher".into(), "hello".into()]
    }

    fn source(text: &str) -> Source {
        Source {
            file: "examples/test.toml".into(),
            text: text.into(),
        }
    }

    fn parse_error(text: &str) -> String {
        parse(&source(text), &programs()).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_system() {
        let text = r#"
description = "two"
[[component]]
name = "hello"
args = "count=3"

[[component]]
name = "boom"
program = "crasher"
corrupt = "wx-segment"
"#;
        let (description, components) = parse(&source(text), &programs()).unwrap();
        assert_eq!(description.as_deref(), Some("two"));
        assert_eq!(
            components,
            [
                Component {
                    name: "hello".into(),
                    program: "hello".into(),
                    args: "count=3".into(),
                    corruption: None,
                },
                Component {
                    name: "boom".into(),
                    program: "crasher".into(),
                    args: String::new(),
                    corruption: Some(Corruption::WxSegment),
                },
            ]
        );
    }

    #[test]
    fn misspelt_program_gets_line_and_suggestion() {
        let message = parse_error("[[component]]\nname = \"a\"\nprogram = \"helo\"\n");
        assert!(
            message.starts_with(
                "examples/test.toml:3:11: unknown program 'helo': did you mean 'hello'?"
            ),
            "{message}"
        );
        assert!(
            message.ends_with("Available programs: crasher, hello."),
            "{message}"
        );
    }

    #[test]
    fn defaulted_program_is_explained() {
        let message = parse_error("[[component]]\nname = \"crashr\"\n");
        assert!(message.starts_with("examples/test.toml:2:8: unknown program 'crashr'"));
        assert!(
            message.contains("(A component's program defaults to its name.) Available"),
            "{message}"
        );
        assert!(message.contains("did you mean 'crasher'?"));
        let message = parse_error("[[component]]\nname = \"zzzzzz\"\n");
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn unknown_keys_are_located() {
        let message = parse_error("[[component]]\nname = \"hello\"\ncount = 3\n");
        assert!(
            message.starts_with("examples/test.toml:3:1: unknown field `count`"),
            "{message}"
        );
        let message = parse_error("descripton = \"x\"\n[[component]]\nname = \"hello\"\n");
        assert!(
            message.starts_with("examples/test.toml:1:1: unknown field `descripton`"),
            "{message}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let message = parse_error("[[component]]\nname = \"hello\n");
        assert!(message.starts_with("examples/test.toml:2:"), "{message}");
    }

    #[test]
    fn unknown_corruption_lists_valid_ones() {
        let message = parse_error("[[component]]\nname = \"hello\"\ncorrupt = \"bad\"\n");
        assert!(
            message.starts_with("examples/test.toml:3:11: unknown variant `bad`"),
            "{message}"
        );
        for corruption in Corruption::ALL {
            assert!(message.contains(corruption.name()), "{message}");
        }
    }

    #[test]
    fn names_and_args_are_checked() {
        let message = parse_error("[[component]]\nname = \"Hello\"\nprogram = \"hello\"\n");
        assert!(message.starts_with("examples/test.toml:2:8: component name 'Hello' is invalid"));
        let message =
            parse_error("[[component]]\nname = \"hello\"\n\n[[component]]\nname = \"hello\"\n");
        assert_eq!(
            message,
            "examples/test.toml:5:8: component name 'hello' is used twice (first on line 2)"
        );
        let long = "x".repeat(65);
        let message = parse_error(&format!(
            "[[component]]\nname = \"hello\"\nargs = \"{long}\"\n"
        ));
        assert!(
            message.contains("are 65 bytes; at most 64 fit"),
            "{message}"
        );
        let message = parse_error("description = \"empty\"\n");
        assert_eq!(
            message,
            "examples/test.toml: defines no components: add a [[component]] table"
        );
    }

    #[test]
    fn descriptions_name_their_guests() {
        let directory =
            std::env::temp_dir().join(format!("mvbuild-system-vms-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("vms.toml");
        std::fs::write(
            &path,
            "[components.ws-a]\nprogram = \"world-switcher\"\n\
             [components.ws-b]\nprogram = \"world-switcher\"\n\
             [vms.a]\nswitcher = \"ws-a\"\nimage = \"hello\"\n\
             [vms.b]\nswitcher = \"ws-b\"\nimage = \"dos\"\nentry = \"real\"\n",
        )
        .unwrap();
        let system = load(&path, &["world-switcher".to_string()]).unwrap();
        let guests: Vec<String> = crate::pack::guest_images(system.spec.as_deref())
            .unwrap()
            .into_iter()
            .map(|guest| guest.image)
            .collect();
        assert_eq!(guests, ["hello", "dos"]);
        let packed: Vec<&str> = system.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(packed, ["world-switcher"]);
        assert!(system.cdl.unwrap().contains("a = vm (index: 0"));
        std::fs::remove_dir_all(&directory).unwrap();

        let (_, components) =
            parse(&source("[[component]]\nname = \"hello\"\n"), &programs()).unwrap();
        assert_eq!(components.len(), 1);
    }

    #[test]
    fn positions_count_lines_and_columns() {
        let source = source("ab\ncd\n");
        assert_eq!(source.position(0), (1, 1));
        assert_eq!(source.position(4), (2, 2));
        assert_eq!(source.position(100), (3, 1));
    }
}
