//! Sandbox hosts for integration tests: a realistic Alpine VPS in a chroot, to
//! run generated scripts for real and read their effects back. A 3.23 host is
//! the real Alpine 3.23.6 userland (`image::root()`: busybox 1.37, apk-tools 3,
//! OpenRC's rc-update, mkinitfs, kmod, the kernel's modules); a 3.22 host is the
//! 3.20.3 minirootfs (busybox, apk-tools 2.14) with stand-ins for OpenRC and the
//! boot tools. Both get the real config files from `../shared/alpine/files`, the
//! profile's configuration, and the packages the image lacks from a local signed
//! repository; what a chroot cannot run (daemons, reboot) is a logging stand-in.
//! `README.md` ("Tests that run the script for real") lists which is which.
//!
//! ```ignore
//! mod sandbox;
//! #[test]
//! fn example() {
//!     if !sandbox::require() { return; }
//!     let host = sandbox::Host::build("guide");
//!     let out = host.run("rc-update del sshd default", &[]);
//!     assert!(out.status.success());
//! }
//! ```
//!
//! Layout: `apk.rs` builds the repository from `packages.toml` (and the
//! image's own packages, rebuilt from its installed tree), `profile.rs` reads
//! `tests/hosts/<name>/host.toml`, `host.rs` provisions and drives a host,
//! `tree.rs` snapshots and diffs a host's file tree, and `standins/` holds the
//! shell stand-ins (and `record`, the recorder put before a real tool).
#![allow(dead_code)]

mod apk;
mod host;
#[path = "../image/mod.rs"]
pub mod image;
mod profile;
// The bench's repository takes the image's own packages from here too.
pub mod repack;
// A test crate may load the skip rule through `common` too: the same file, one rule.
#[allow(clippy::duplicate_mod)]
#[path = "../skip/mod.rs"]
mod skip;
mod tree;

// Each test crate uses its own subset of the API.
#[allow(unused_imports)]
pub use host::{CALL_LOG, Call, EXCLUDED, Host};
#[allow(unused_imports)]
pub use profile::Profile;
#[allow(unused_imports)]
pub use tree::{Entry, Kind, Tree, TreeDiff};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Alpine release a host imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Release {
    V3_22,
    V3_23,
}

impl Release {
    pub fn parse(s: &str) -> Release {
        match s {
            "3.22" => Release::V3_22,
            "3.23" => Release::V3_23,
            other => panic!("unknown release `{other}` (expected 3.22 or 3.23)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Release::V3_22 => "3.22",
            Release::V3_23 => "3.23",
        }
    }
}

/// Where the harness finds its inputs and puts its scratch files.
pub mod paths {
    use super::Release;
    use std::path::PathBuf;

    pub fn crate_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }
    /// `../shared/alpine` beside the crate: read-only facts, never copied in.
    pub fn alpine() -> PathBuf {
        crate_root().join("../shared/alpine")
    }
    pub fn minirootfs() -> PathBuf {
        alpine().join("minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz")
    }
    pub fn sandbox() -> PathBuf {
        crate_root().join("tests/sandbox")
    }
    pub fn hosts() -> PathBuf {
        crate_root().join("tests/hosts")
    }
    /// `files/<rel>`, or `files/_3.22/<rel>` when that exists on a 3.22 host.
    /// `rel` may itself start with `_3.22/` or `_older/` to name a variant.
    pub fn shared_file(rel: &str, release: Release) -> PathBuf {
        let files = alpine().join("files");
        if release == Release::V3_22 {
            let older = files.join("_3.22").join(rel);
            if older.exists() {
                return older;
            }
        }
        files.join(rel)
    }
}

/// Whether sandbox tests can run here, for hosts of every release (3.23 hosts
/// need the real Alpine image: [`image::why_not`]). If not, prints
/// `SKIPPED: <reason>` on stderr and returns false (the test then returns
/// early), except under `CI=true`, where a missing prerequisite fails the
/// test. The one place for this policy.
pub fn require() -> bool {
    decide(why_not_base().or_else(image::why_not))
}

/// Like [`require`], for a test that builds only hosts of `profile`'s release.
pub fn require_for(profile: &str) -> bool {
    let why = why_not_base().or_else(|| match Profile::load(profile).release {
        Release::V3_23 => image::why_not(),
        Release::V3_22 => None,
    });
    decide(why)
}

fn decide(why_not: Option<String>) -> bool {
    match why_not {
        None => true,
        // The project's one skip rule: fails under CI=true, else says so and is
        // listed by tests/run.sh as skipped, not passed.
        Some(why) => {
            skip::cannot_run("sandbox", &why);
            false
        }
    }
}

/// Why no sandbox host can be built here (root, tools, the minirootfs).
fn why_not_base() -> Option<String> {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    WHY_NOT
        .get_or_init(|| {
            // The effective uid is the second field of /proc/self/status's Uid: line.
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let euid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
            if euid.as_deref() != Some("0") {
                return Some("not running as root (chroot needs it)".to_string());
            }
            if !paths::minirootfs().is_file() {
                return Some(format!("{} is missing", paths::minirootfs().display()));
            }
            for tool in
                ["chroot", "unshare", "openssl", "ssh-keygen", "tar", "ip", "timeout", "cp", "sha256sum", "xargs"]
            {
                let found = Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if !found {
                    return Some(format!("`{tool}` is not installed"));
                }
            }
            let netns = Command::new("unshare").args(["--net", "true"]).status();
            if !matches!(netns, Ok(s) if s.success()) {
                return Some("`unshare --net` does not work here".to_string());
            }
            None
        })
        .clone()
}

/// This process's scratch directory under target/tmp; directories left by
/// earlier test processes that are no longer running are removed.
pub fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sandbox");
        std::fs::create_dir_all(&base).expect("create target/tmp/sandbox");
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.strip_prefix("proc-").and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create sandbox work dir");
        dir
    })
}

/// Runs a command and panics with its output when it fails.
pub(crate) fn check(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Extracts the Alpine minirootfs into `dest` (created), owners kept.
pub(crate) fn extract_minirootfs(dest: &Path) {
    std::fs::create_dir_all(dest).expect("create root dir");
    check(
        Command::new("tar").args(["-xzpf"]).arg(paths::minirootfs()).args(["--numeric-owner", "-C"]).arg(dest),
        "extract minirootfs",
    );
}
