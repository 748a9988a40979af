//! The one rule for a test that cannot run here: under `CI=true` it fails; elsewhere
//! it says `SKIPPED` with its reason on stderr and adds a line to the file named by
//! `MINGEN_SKIP_LOG`, which `tests/run.sh` lists in its summary.
#![allow(dead_code)]

use std::io::Write;

/// Whether this is CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Report that WHAT cannot run here because of REASON; panics under `CI=true`.
pub fn cannot_run(what: &str, reason: &str) {
    assert!(!in_ci(), "{what} cannot run, and CI=true: {reason}");
    eprintln!("SKIPPED: {what}: {reason}");
    if let Some(path) = std::env::var_os("MINGEN_SKIP_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        // libtest names each test's thread after the test: one line per skipped test.
        let test = std::thread::current().name().unwrap_or("a test").to_string();
        let _ = writeln!(file, "{test}\t{what}: {reason}");
    }
}
