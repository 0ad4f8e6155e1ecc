//! The `test` command as a user meets it: the real `mvbuild` binary, its
//! exit status and its last line. Only selections that boot nothing run
//! here (booting is what the suite itself does).

use std::process::Command;

#[test]
fn a_filter_that_matches_nothing_fails_with_a_suggestion() {
    let output = Command::new(env!("CARGO_BIN_EXE_mvbuild"))
        .args(["test", "--scenarios-only", "--filter", "hello-qemy"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("mvbuild runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "error: --filter 'hello-qemy' matches no scenario; did you mean 'hello-qemu'?",
            "0 passed, 1 failed",
        ],
        "{stdout}"
    );
}
