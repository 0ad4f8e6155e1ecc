//! The `capdl` command end to end: listing, spec, errors, exit status.

use std::path::PathBuf;
use std::process::Command;

use microvisor_abi::spec::Spec;

fn programs_directory() -> PathBuf {
    let root = std::env::temp_dir().join(format!("capdl-cli-programs-{}", std::process::id()));
    for program in ["ping", "pong"] {
        let main = root.join("test").join(program).join("src").join("main.rs");
        std::fs::create_dir_all(main.parent().unwrap()).unwrap();
        std::fs::write(main, "fn main() {}\n").unwrap();
    }
    root
}

/// Writes a system file for the test and returns its path.
fn system_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("capdl-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

const PING_PONG: &str = "[components.ping]\n[components.pong]\n\
    [queues.requests]\nfrom = \"ping\"\nto = \"pong\"\nslot_size = 64\nslots = 256\nreply = \"replies\"\n\
    [queues.replies]\nfrom = \"pong\"\nto = \"ping\"\nslot_size = 64\nslots = 256\n";

const BUDGET: &str =
    "[components.spinner]\nbudget = \"2ms\"\n[components.measure]\nobserve = [\"spinner\"]\n";

fn capdl(arguments: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_capdl"))
        .args(arguments)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn command_line() {
    let programs = programs_directory();
    let programs = programs.to_str().unwrap();
    let ping_pong = system_file("ping-pong.toml", PING_PONG);
    let ping_pong = ping_pong.to_str().unwrap();

    let (ok, stdout, _) = capdl(&["--programs", programs, "--emit", "cdl", ping_pong]);
    assert!(ok);
    assert!(stdout.contains(
        "  requests = queue (ping -> pong, slot_size: 64, slots: 256, pages: 5, reply: replies)"
    ));

    let (ok, _, stderr) = capdl(&["--programs", programs, "--emit", "check", ping_pong]);
    assert!(ok);
    assert!(
        stderr.ends_with("2 components, 2 queues, 0 notifications: ok\n"),
        "{stderr}"
    );

    let out = std::env::temp_dir().join(format!("capdl-cli-{}.spec", std::process::id()));
    let (ok, _, _) = capdl(&[
        "--programs",
        programs,
        "--emit",
        "spec",
        "-o",
        out.to_str().unwrap(),
        ping_pong,
    ]);
    assert!(ok);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(Spec::parse(&bytes).unwrap().queues.len(), 2);
    std::fs::remove_file(&out).unwrap();

    let (ok, _, stderr) = capdl(&["--programs", programs, "--emit", "spec", ping_pong]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: --emit spec writes binary: name a file with -o\n"
    );

    // budget.toml names programs this directory lacks: every one is reported.
    let budget = system_file("budget.toml", BUDGET);
    let (ok, stdout, stderr) = capdl(&["--programs", programs, budget.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("error: component 'spinner': no program 'spinner' in "),
        "{stderr}"
    );
    assert!(stderr.contains("  --> "), "{stderr}");
    assert!(
        stderr.contains("  = help: the programs are: ping, pong"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: the system description has 2 errors\n"),
        "{stderr}"
    );

    let (ok, _, stderr) = capdl(&[
        "--programs",
        programs,
        "--machine-memory",
        "16MiB",
        ping_pong,
    ]);
    assert!(!ok);
    assert!(stderr.contains("but the machine has 16MiB"), "{stderr}");

    let (ok, _, stderr) = capdl(&["--programs", "/nonexistent", ping_pong]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: cannot list the programs in /nonexistent"),
        "{stderr}"
    );
    for path in [ping_pong.to_string(), budget.display().to_string()] {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::remove_dir_all(programs).unwrap();
}
