//! Host unit tests: `cargo test` over the crates that run on the build
//! machine, counted test by test.
//!
//! Which crates: every workspace member except the component programs and
//! the runtime (they only build for the bare-metal target), plus the core's
//! library and the component runtime's (`-p microvisor -p runtime --lib`;
//! the core's binary and the runtime's entry point are target-only). See
//! [`Workspace::host_packages`]. cargo's output (stdout and stderr merged,
//! so "Running" lines stay next to their results) is read as it comes; its
//! JSON artifact messages tell which package each test binary belongs to.
//! Each test binary becomes one report line, with its failures' output
//! printed when it has any. A binary that stops without a `test result:` line, or a
//! cargo run that fails without any failed test (a build error), counts as
//! one failure, so nothing broken is ever counted as zero. Called by the
//! `test` command.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::workspace::{CORE, RUNTIME, Workspace, cargo};

/// How many tests passed and failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

/// What one test binary reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryReport {
    /// For example `microvisor_abi unittests src/lib.rs`.
    pub label: String,
    pub passed: usize,
    pub failed: usize,
    /// Names of failed tests.
    pub failures: Vec<String>,
    /// The harness's `failures:` section, for display.
    pub details: Vec<String>,
    /// Whether its `test result:` line was seen.
    pub finished: bool,
}

/// One of cargo's JSON messages (`--message-format json-...`); only
/// compiler artifacts with an executable matter here.
#[derive(Deserialize)]
struct Message {
    reason: String,
    manifest_path: Option<PathBuf>,
    executable: Option<PathBuf>,
}

/// Reads cargo test output line by line.
#[derive(Default)]
pub struct OutputParser {
    /// Package directories and names, to name test binaries.
    packages: Vec<(PathBuf, String)>,
    /// Test executable file name → package name.
    owners: HashMap<String, String>,
    current: Option<BinaryReport>,
    in_failures: bool,
}

impl OutputParser {
    /// A parser that names binaries after these packages (directory, name).
    pub fn new(packages: Vec<(PathBuf, String)>) -> Self {
        Self {
            packages,
            ..Self::default()
        }
    }

    /// Whether a line is one of cargo's JSON messages rather than text.
    pub fn is_message(line: &str) -> bool {
        line.starts_with("{\"reason\":")
    }

    /// Feeds one line; returns a binary's report when it is complete (its
    /// result line, or the start of the next binary when it had none).
    pub fn line(&mut self, line: &str) -> Option<BinaryReport> {
        if Self::is_message(line) {
            self.record_artifact(line);
            return None;
        }
        let trimmed = line.trim();
        if let Some(label) = self.binary_label(trimmed) {
            let previous = self.current.take();
            self.current = Some(BinaryReport {
                label,
                ..BinaryReport::default()
            });
            self.in_failures = false;
            return previous;
        }
        let current = self.current.as_mut()?;
        if let Some(result) = trimmed.strip_prefix("test result: ") {
            current.passed = count_of(result, "passed");
            current.failed = count_of(result, "failed");
            current.finished = true;
            self.in_failures = false;
            return self.current.take();
        }
        if trimmed == "failures:" {
            self.in_failures = true;
        }
        if self.in_failures {
            current.details.push(line.to_string());
        } else if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            current.failures.push(name.to_string());
        }
        None
    }

    /// The report of a binary still open when the output ended.
    pub fn finish(&mut self) -> Option<BinaryReport> {
        self.current.take()
    }

    /// Notes which package a test executable belongs to.
    fn record_artifact(&mut self, line: &str) {
        let Ok(message) = serde_json::from_str::<Message>(line) else {
            return;
        };
        let (Some(manifest), Some(executable)) = (message.manifest_path, message.executable) else {
            return;
        };
        if message.reason != "compiler-artifact" {
            return;
        }
        let directory = manifest.parent().unwrap_or(Path::new(""));
        let package = self
            .packages
            .iter()
            .find(|(path, _)| path == directory)
            .map(|(_, name)| name.clone());
        if let (Some(package), Some(file)) = (package, executable.file_name()) {
            self.owners
                .insert(file.to_string_lossy().into_owned(), package);
        }
    }

    /// `Running tests/crash.rs (target/debug/deps/crash-0123abcd)` →
    /// `vmkfs tests/crash.rs` (the package from the artifact messages, else
    /// the binary's name); `Doc-tests vmkfs` → `vmkfs doc-tests`.
    fn binary_label(&self, line: &str) -> Option<String> {
        if let Some(rest) = line.strip_prefix("Running ") {
            let (what, path) = rest.rsplit_once(" (")?;
            let file = path.trim_end_matches(')').rsplit('/').next()?;
            let name = match self.owners.get(file) {
                Some(package) => package.as_str(),
                None => file.rsplit_once('-').map_or(file, |(name, _hash)| name),
            };
            return Some(format!("{name} {what}"));
        }
        line.strip_prefix("Doc-tests ")
            .map(|name| format!("{name} doc-tests"))
    }
}

/// The number before `word` in `ok. 5 passed; 1 failed; ...`.
fn count_of(text: &str, word: &str) -> usize {
    text.split(';')
        .find_map(|part| {
            let mut words = part
                .split_whitespace()
                .filter(|token| *token != "ok." && *token != "FAILED.");
            let number = words.next()?;
            (words.next()? == word).then(|| number.parse().ok())?
        })
        .unwrap_or(0)
}

/// Runs the host tests (names containing `filter`, if given), printing one
/// line per test binary.
pub fn run(workspace: &Workspace, filter: Option<&str>) -> Result<Tally> {
    let mut tally = Tally::default();
    let packages: Vec<String> = workspace
        .host_packages()
        .iter()
        .map(|package| package.name.clone())
        .collect();
    let mut invocations: Vec<Vec<String>> = Vec::new();
    if !packages.is_empty() {
        invocations.push(
            packages
                .iter()
                .flat_map(|name| ["-p".to_string(), name.clone()])
                .collect(),
        );
    }
    if workspace.has_package(CORE) {
        let mut invocation = vec!["-p".into(), CORE.into()];
        if workspace.has_package(RUNTIME) {
            invocation.extend(["-p".into(), RUNTIME.into()]);
        }
        invocation.push("--lib".into());
        invocations.push(invocation);
    }
    for selection in invocations {
        let counted = run_cargo_test(workspace, &selection, filter)?;
        tally.passed += counted.passed;
        tally.failed += counted.failed;
    }
    Ok(tally)
}

fn run_cargo_test(
    workspace: &Workspace,
    selection: &[String],
    filter: Option<&str>,
) -> Result<Tally> {
    let description = format!("cargo test {}", selection.join(" "));
    println!("host tests: {description}");
    let (reader, writer) = std::io::pipe().context("could not create a pipe for cargo test")?;
    let mut child = {
        let mut command = cargo();
        command
            .args([
                "test",
                "--no-fail-fast",
                "--message-format=json-render-diagnostics",
            ])
            .args(selection)
            .current_dir(&workspace.root)
            .stdin(Stdio::null())
            .stdout(
                writer
                    .try_clone()
                    .context("could not share the pipe for cargo test")?,
            )
            .stderr(writer);
        if let Some(filter) = filter {
            command.args(["--", filter]);
        }
        command
            .spawn()
            .with_context(|| format!("could not start {description}"))?
        // The command, holding the pipe's write ends, is dropped here, so
        // reading ends when cargo and its children exit.
    };
    let mut parser = OutputParser::new(
        workspace
            .packages
            .iter()
            .map(|package| (package.directory.clone(), package.name.clone()))
            .collect(),
    );
    let mut tally = Tally::default();
    let mut recent: Vec<String> = Vec::new();
    let report = |binary: BinaryReport, tally: &mut Tally| {
        tally.passed += binary.passed;
        tally.failed += binary.failed;
        if !binary.finished {
            tally.failed += 1;
            println!(
                "host {} ... FAIL: stopped without a test result",
                binary.label
            );
        } else if binary.failed > 0 {
            println!(
                "host {} ... {} passed, {} FAILED: {}",
                binary.label,
                binary.passed,
                binary.failed,
                binary.failures.join(", ")
            );
            for line in &binary.details {
                println!("    {line}");
            }
        } else if binary.passed > 0 {
            println!("host {} ... {} passed", binary.label, binary.passed);
        }
    };
    for line in BufReader::new(reader).lines() {
        let line = line.context("could not read cargo test's output")?;
        if let Some(binary) = parser.line(&line) {
            report(binary, &mut tally);
        }
        if OutputParser::is_message(&line) {
            continue;
        }
        recent.push(line);
        if recent.len() > 200 {
            recent.drain(..100);
        }
    }
    if let Some(binary) = parser.finish() {
        report(binary, &mut tally);
    }
    let status = child.wait().context("could not wait for cargo test")?;
    if !status.success() && tally.failed == 0 {
        tally.failed += 1;
        println!(
            "host {description} ... FAIL: cargo failed without a failing test; its last lines:"
        );
        for line in crate::console::tail(&recent, 30) {
            println!("    {line}");
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = r#"   Compiling vmkfs v0.1.0 (/w/components/lib/vmkfs)
{"reason":"compiler-artifact","package_id":"path+file:///w/components/lib/vmkfs#0.1.0","manifest_path":"/w/components/lib/vmkfs/Cargo.toml","target":{"name":"props"},"executable":"/w/target/debug/deps/props-1234","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/components/lib/vmkfs#0.1.0","manifest_path":"/w/components/lib/vmkfs/Cargo.toml","executable":null,"fresh":true}
{"reason":"build-finished","success":true}
    Finished `test` profile [unoptimized + debuginfo] target(s) in 2.01s
     Running unittests src/lib.rs (target/debug/deps/microvisor_abi-0d1f2e3c4b5a6978)

running 3 tests
test image::tests::round_trip ... ok
test image::tests::refuses_bad_headers ... FAILED
test image::tests::never_panics_on_noise ... ok

failures:

---- image::tests::refuses_bad_headers stdout ----
thread 'image::tests::refuses_bad_headers' panicked at src/image.rs:1:1:
assertion failed

failures:
    image::tests::refuses_bad_headers

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running unittests src/main.rs (target/debug/deps/mvbuild-99aa)

running 2 tests
test a ... ok
     Running tests/props.rs (target/debug/deps/props-1234)

running 1 test
test p ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests vmkfs

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
"#;

    #[test]
    fn parses_binaries_results_and_failures() {
        let mut parser = OutputParser::new(vec![(
            PathBuf::from("/w/components/lib/vmkfs"),
            "vmkfs".into(),
        )]);
        let mut reports: Vec<BinaryReport> = OUTPUT
            .lines()
            .filter_map(|line| parser.line(line))
            .collect();
        reports.extend(parser.finish());
        let summary: Vec<_> = reports
            .iter()
            .map(|report| {
                (
                    report.label.as_str(),
                    report.passed,
                    report.failed,
                    report.finished,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("microvisor_abi unittests src/lib.rs", 2, 1, true),
                ("mvbuild unittests src/main.rs", 0, 0, false),
                ("vmkfs tests/props.rs", 1, 0, true),
                ("vmkfs doc-tests", 0, 0, true),
            ]
        );
        assert_eq!(reports[0].failures, ["image::tests::refuses_bad_headers"]);
        assert!(
            reports[0]
                .details
                .iter()
                .any(|line| line.contains("assertion failed"))
        );
        assert_eq!(reports[0].details[0], "failures:");
    }

    #[test]
    fn counts() {
        assert_eq!(count_of("ok. 12 passed; 0 failed; 1 ignored", "passed"), 12);
        assert_eq!(
            count_of("FAILED. 2 passed; 3 failed; 0 ignored", "failed"),
            3
        );
        assert_eq!(count_of("garbage", "passed"), 0);
    }
}
