//! Scenario tests: a system image plus what its console must and must not
//! say, the verdict it must reach, and how long it may take.
//!
//! A scenario file (`build/scenarios/<name>.toml`; benchmarks in
//! `build/benchmarks/` use the same format) is strict TOML:
//!
//! ```toml
//! description = "..."
//! boot = "qemu"            # or "bochs"
//! timeout = 60             # seconds
//! exit = "success"         # expected verdict: "success" or "failure"
//! icount = false           # QEMU -icount shift=0
//! expect = ["...", "..."]  # substrings that must appear, in this order
//! forbid = ["..."]         # substrings that must not appear anywhere
//! [[component]]            # as in system files (see crate::system)
//! ```
//!
//! [`judge`] decides pass or fail from an [`Outcome`]: it ended within the
//! timeout, no forbidden text appeared, every expectation appeared in
//! order, and the verdict matches. Called by the `test` and `bench`
//! commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::console::{VerdictKind, first_forbidden, first_unmet};
use crate::emulator::{Emulator, Ending, Outcome};
use crate::system::{Component, ComponentEntry, ConfigError, Source, check_components, file_stem};

/// The longest timeout a scenario may ask for.
pub const TIMEOUT_MAX: u64 = 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    description: String,
    #[serde(default = "default_boot")]
    boot: Emulator,
    timeout: Spanned<u64>,
    exit: VerdictKind,
    icount: Option<Spanned<bool>>,
    /// The core's boot command line.
    #[serde(default)]
    cmdline: String,
    /// A capdl system description to boot, relative to this file (instead
    /// of a `[[component]]` list).
    system: Option<Spanned<String>>,
    #[serde(default)]
    expect: Vec<String>,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    component: Vec<ComponentEntry>,
}

fn default_boot() -> Emulator {
    Emulator::Qemu
}

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file stem: how the scenario is named in reports and filters.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub emulator: Emulator,
    pub timeout: Duration,
    pub exit: VerdictKind,
    pub icount: bool,
    /// The core's boot command line.
    pub command_line: String,
    /// The boot spec, when the scenario boots a capdl description.
    pub spec: Option<Vec<u8>>,
    pub expect: Vec<String>,
    pub forbid: Vec<String>,
    pub components: Vec<Component>,
}

/// Reads and checks a scenario file.
pub fn load(path: &Path, programs: &[String]) -> Result<Scenario> {
    let source = Source::read(path)?;
    Ok(parse(&source, path, programs)?)
}

/// Parses and checks scenario text.
pub fn parse(source: &Source, path: &Path, programs: &[String]) -> Result<Scenario, ConfigError> {
    let file: ScenarioFile = source.parse()?;
    let timeout = *file.timeout.get_ref();
    if timeout == 0 || timeout > TIMEOUT_MAX {
        return Err(source.error_at(
            file.timeout.span(),
            format!("timeout must be 1 to {TIMEOUT_MAX} seconds, not {timeout}"),
        ));
    }
    let icount = file.icount.as_ref().is_some_and(|icount| *icount.get_ref());
    if let Some(span) = file.icount.as_ref().map(Spanned::span)
        && icount
        && file.boot == Emulator::Bochs
    {
        return Err(source.error_at(span, "icount needs QEMU; a Bochs scenario cannot use it"));
    }
    let (components, spec) = match &file.system {
        Some(system) if !file.component.is_empty() => {
            return Err(source.error_at(
                system.span(),
                "a scenario names either a system file or a [[component]] list, not both",
            ));
        }
        Some(system) => {
            let described = path
                .parent()
                .unwrap_or(Path::new("."))
                .join(system.get_ref());
            let loaded = crate::system::load_description(&described, programs)
                .map_err(|error| source.error_at(system.span(), format!("{error:#}")))?;
            (loaded.components, loaded.spec)
        }
        None => (check_components(source, file.component, programs)?, None),
    };
    Ok(Scenario {
        name: file_stem(path),
        path: path.to_path_buf(),
        description: file.description,
        emulator: file.boot,
        timeout: Duration::from_secs(timeout),
        exit: file.exit,
        icount,
        command_line: file.cmdline,
        spec,
        expect: file.expect,
        forbid: file.forbid,
        components,
    })
}

/// The `*.toml` files of a directory, sorted by name.
pub fn files_in(directory: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("could not list {}", directory.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("could not list {}", directory.display()))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Judges a finished run: `Ok` if the scenario passed, else the reason in
/// one line.
pub fn judge(scenario: &Scenario, outcome: &Outcome) -> Result<(), String> {
    if let Some((text, line)) = first_forbidden(&scenario.forbid, &outcome.lines) {
        return Err(format!(
            "forbidden text seen: \"{}\" in line {}",
            scenario.forbid[text],
            line + 1
        ));
    }
    let unmet = first_unmet(&scenario.expect, &outcome.lines);
    let verdict = match &outcome.ending {
        Ending::Timeout(limit) => {
            let mut message = format!("timed out after {} s", limit.as_secs());
            if let Some(index) = unmet {
                message.push_str(&format!(
                    "; expected line not seen: \"{}\"",
                    scenario.expect[index]
                ));
            }
            return Err(message);
        }
        Ending::EmulatorError(message) => return Err(message.clone()),
        Ending::Halted(verdict) => verdict,
    };
    if let Some(index) = unmet {
        return Err(format!(
            "expected line not seen: \"{}\"",
            scenario.expect[index]
        ));
    }
    if verdict.kind() != scenario.exit {
        return Err(format!(
            "the system halted with {verdict}, expected {}",
            scenario.exit
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Verdict;

    fn programs() -> Vec<String> {
        vec!["crasher".into(), "hello".into()]
    }

    fn parse_text(text: &str) -> Result<Scenario, ConfigError> {
        let source = Source {
            file: "build/scenarios/sample.toml".into(),
            text: text.into(),
        };
        parse(
            &source,
            Path::new("build/scenarios/sample.toml"),
            &programs(),
        )
    }

    const SAMPLE: &str = r#"
description = "hello and a crash"
timeout = 20
exit = "failure"
expect = ["microvisor ", "[hello] done"]
forbid = ["panic"]

[[component]]
name = "crasher"
args = "mode=panic"

[[component]]
name = "hello"
"#;

    fn outcome(ending: Ending, lines: &[&str]) -> Outcome {
        Outcome {
            ending,
            lines: lines.iter().map(|line| line.to_string()).collect(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let scenario = parse_text(SAMPLE).unwrap();
        assert_eq!(scenario.name, "sample");
        assert_eq!(scenario.emulator, Emulator::Qemu);
        assert_eq!(scenario.timeout, Duration::from_secs(20));
        assert_eq!(scenario.exit, VerdictKind::Failure);
        assert!(!scenario.icount);
        assert_eq!(scenario.components.len(), 2);
        assert_eq!(scenario.components[0].args, "mode=panic");
    }

    #[test]
    fn errors_are_located() {
        let text = SAMPLE.replace("timeout = 20", "timeout = 0");
        assert_eq!(
            parse_text(&text).unwrap_err().to_string(),
            "build/scenarios/sample.toml:3:11: timeout must be 1 to 3600 seconds, not 0"
        );
        let text = SAMPLE.replace("exit = \"failure\"", "exit = \"failed\"");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:4:8: unknown variant `failed`"),
            "{message}"
        );
        let text = SAMPLE.replace("forbid", "forbidden");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:6:1: unknown field `forbidden`"),
            "{message}"
        );
        let text = SAMPLE.replace("timeout = 20\n", "");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(message.contains("missing field `timeout`"), "{message}");
        let text = SAMPLE.replace(
            "timeout = 20",
            "timeout = 20\nboot = \"bochs\"\nicount = true",
        );
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("build/scenarios/sample.toml:5:10: icount needs QEMU"),
            "{message}"
        );
        let text = SAMPLE.replace("name = \"hello\"", "name = \"hello\"\nprogram = \"hellp\"");
        let message = parse_text(&text).unwrap_err().to_string();
        assert!(
            message.contains(":14:11: unknown program 'hellp': did you mean 'hello'?"),
            "{message}"
        );
    }

    #[test]
    fn judging() {
        let scenario = parse_text(SAMPLE).unwrap();
        let failure = || {
            Ending::Halted(Verdict::Failure {
                reason: "fault".into(),
            })
        };
        let good = [
            "microvisor 0.1",
            "[core] component 'crasher' faulted",
            "[hello] done",
        ];
        assert_eq!(judge(&scenario, &outcome(failure(), &good)), Ok(()));
        assert_eq!(
            judge(&scenario, &outcome(Ending::Halted(Verdict::Success), &good)),
            Err("the system halted with success, expected failure".into())
        );
        assert_eq!(
            judge(&scenario, &outcome(failure(), &["microvisor 0.1"])),
            Err("expected line not seen: \"[hello] done\"".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(
                    failure(),
                    &["microvisor 0.1", "[crasher] panic", "[hello] done"]
                )
            ),
            Err("forbidden text seen: \"panic\" in line 2".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(
                    Ending::Timeout(Duration::from_secs(20)),
                    &["microvisor 0.1"]
                )
            ),
            Err("timed out after 20 s; expected line not seen: \"[hello] done\"".into())
        );
        assert_eq!(
            judge(
                &scenario,
                &outcome(Ending::EmulatorError("boom".into()), &good)
            ),
            Err("boom".into())
        );
    }
}
