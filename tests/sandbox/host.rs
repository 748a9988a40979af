//! A provisioned sandbox host ([`Host`]): building it from a profile (once
//! per profile per process, then copied), running commands in it under
//! `chroot` in a private network namespace, and reading its state back.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use super::profile::Profile;
use super::tree::Tree;
use super::{Release, apk, check, extract_minirootfs, paths, work_dir};

/// Paths that `tree()` and `du_kb()` leave out (with everything beneath):
/// - `/.sandbox`: the harness's own directory: the stand-ins' call log
///   (`calls.log`), the local apk repository (`repo/`) and the real tools
///   that have a recorder in front (`real/`);
/// - `/root/script.sh`: where `run_script` puts the script it runs.
pub const EXCLUDED: &[&str] = &["/.sandbox", "/root/script.sh"];

/// Where the stand-ins append their calls, one line each.
pub const CALL_LOG: &str = "/.sandbox/calls.log";
/// The local repository inside the host, the only line of /etc/apk/repositories.
pub const REPO_PATH: &str = "/.sandbox/repo";

/// Set in every run, so that the real mkinitfs is reproducible (a run cut
/// short and run again must end like a clean run, byte for byte).
pub const SOURCE_DATE_EPOCH: &str = "1763000000";

/// Longest a single `run` may take before it is killed.
const RUN_TIMEOUT_SECS: &str = "300";

/// One recorded stand-in call: program name (`rc-update`) and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
}

impl Call {
    /// The call as one line, program and arguments joined by spaces.
    pub fn line(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

/// A fake Alpine host in a temporary directory, removed on drop.
pub struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    profile: Profile,
}

impl Host {
    /// A fresh host for `tests/hosts/<profile>`: the first build of a profile
    /// in this process provisions a template, later ones copy it (`cp -a`).
    pub fn build(profile: &str) -> Host {
        let started = Instant::now();
        let template = template(profile);
        let host = Host::empty(Profile::load(profile));
        copy_root(&template, &host.root, LINKED);
        eprintln!("sandbox: host `{profile}` ready in {:.2?}", started.elapsed());
        host
    }

    /// A host provisioned from scratch, bypassing the per-process template
    /// (to check that provisioning itself is deterministic).
    pub fn build_fresh(profile: &str) -> Host {
        let host = Host::empty(Profile::load(profile));
        provision(&host.profile, &host.root);
        host
    }

    fn empty(profile: Profile) -> Host {
        let dir = tempfile::Builder::new()
            .prefix(&format!("host-{}-", profile.name))
            .tempdir_in(work_dir())
            .expect("create host temp dir");
        let root = dir.path().join("root");
        Host { _dir: dir, root, profile }
    }

    /// The host's root directory, as seen from outside.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Runs `/bin/sh -c cmd` inside the host: `chroot` under `unshare --net`
    /// (eth0 carries the profile's documentation-range addresses; nothing
    /// leaves the namespace), with only PATH, [`SOURCE_DATE_EPOCH`] and `env`
    /// set, stdin empty.
    pub fn run(&self, cmd: &str, env: &[(&str, &str)]) -> Output {
        run_in(&self.root, &self.profile, cmd, env)
    }

    /// Copies `script` to /root/script.sh and runs `sh /root/script.sh`.
    pub fn run_script(&self, script: &str, env: &[(&str, &str)]) -> Output {
        self.write("/root/script.sh", script);
        self.run("sh /root/script.sh", env)
    }

    /// Snapshot of every path, minus [`EXCLUDED`].
    pub fn tree(&self) -> Tree {
        Tree::scan(&self.root, EXCLUDED)
    }

    /// The path outside the host that `path` (absolute, inside) names,
    /// following symlinks inside the host's root as the chroot would.
    pub fn host_path(&self, path: &str) -> PathBuf {
        resolve(&self.root, path)
    }

    /// Content of a file inside the host (symlinks followed inside the root).
    pub fn read(&self, path: &str) -> String {
        let p = self.host_path(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {path} in host: {e}"))
    }

    /// Like `test -e` inside the host.
    pub fn exists(&self, path: &str) -> bool {
        self.host_path(path).exists()
    }

    /// Writes a file inside the host (parents created), mode 0644.
    pub fn write(&self, path: &str, content: &str) {
        write_file(&self.root, path, content.as_bytes(), 0o644);
    }

    /// Every (runlevel, service) link under /etc/runlevels.
    pub fn runlevels(&self) -> BTreeSet<(String, String)> {
        let mut set = BTreeSet::new();
        for level in list_dir(&self.root.join("etc/runlevels")) {
            for svc in list_dir(&self.root.join("etc/runlevels").join(&level)) {
                set.insert((level.clone(), svc));
            }
        }
        set
    }

    /// Services marked started (/run/openrc/started).
    pub fn started(&self) -> BTreeSet<String> {
        list_dir(&self.root.join("run/openrc/started")).into_iter().collect()
    }

    /// The names in /etc/apk/world, in file order.
    pub fn world(&self) -> Vec<String> {
        self.read("/etc/apk/world").split_whitespace().map(str::to_string).collect()
    }

    /// Installed package names (`P:` lines of /lib/apk/db/installed).
    pub fn installed(&self) -> BTreeSet<String> {
        self.read("/lib/apk/db/installed").lines().filter_map(|l| l.strip_prefix("P:")).map(str::to_string).collect()
    }

    /// Installed packages with their versions (`P:` and `V:` of /lib/apk/db/installed).
    pub fn installed_versions(&self) -> BTreeSet<(String, String)> {
        let db = self.read("/lib/apk/db/installed");
        let mut set = BTreeSet::new();
        let mut name = None;
        for line in db.lines() {
            if let Some(p) = line.strip_prefix("P:") {
                name = Some(p.to_string());
            } else if let (Some(v), Some(n)) = (line.strip_prefix("V:"), name.take()) {
                set.insert((n, v.to_string()));
            }
        }
        set
    }

    /// The stand-ins' calls since the host was built (or last cleared), in order.
    pub fn calls(&self) -> Vec<Call> {
        let log = self.root.join(CALL_LOG.trim_start_matches('/'));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut parts = l.split('\t').map(str::to_string);
                let program = parts.next().unwrap_or_default();
                Call { program, args: parts.collect() }
            })
            .collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        let log = self.root.join(CALL_LOG.trim_start_matches('/'));
        let _ = std::fs::remove_file(log);
    }

    /// The files in /boot/initramfs-virt: path (no leading slash) -> content.
    /// A real initramfs (gzip'd newc cpio, from the real mkinitfs) is read as
    /// such; the 3.22 stand-in's text form is read into the same shape, its
    /// modules under `lib/modules/<kernel>/` (content empty).
    pub fn initramfs(&self) -> BTreeMap<String, Vec<u8>> {
        let bytes = std::fs::read(self.host_path("/boot/initramfs-virt")).expect("read /boot/initramfs-virt");
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut cpio = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(bytes.as_slice()), &mut cpio)
                .expect("gunzip the initramfs");
            return newc_files(&cpio);
        }
        let text = String::from_utf8(bytes).expect("the stand-in's initramfs is text");
        let kernel = text.lines().find_map(|l| l.strip_prefix("kernel=")).unwrap_or_default().to_string();
        let mut files = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(m) = line.strip_prefix("module ") {
                files.insert(format!("lib/modules/{kernel}/{m}"), Vec::new());
            } else if let Some(f) = line.strip_prefix("file /") {
                files.insert(f.to_string(), Vec::new());
                current = Some(f.to_string());
                continue;
            } else if let (Some(c), Some(content)) = (&current, line.strip_prefix("| ")) {
                let data = files.get_mut(c).expect("the current file");
                data.extend_from_slice(content.as_bytes());
                data.push(b'\n');
                continue;
            }
            current = None;
        }
        files
    }

    /// Disk blocks used by the tree (minus [`EXCLUDED`]), in KiB, hard links
    /// counted once: what `du -sk` would say of the host's disk.
    pub fn du_kb(&self) -> u64 {
        let mut seen = HashSet::new();
        du(&self.root, "", &mut seen) / 1024
    }
}

/// Directories of a template that its hosts share as hard links, not copies:
/// files nothing changes in place (the apk repository, which apk only reads).
/// Everything else is copied: the kernel's modules too, which rule modules-prune
/// and undo's `apk fix --reinstall` change, and which a shared inode would carry
/// into every other host at once.
const LINKED: &[&str] = &[".sandbox/repo"];

/// `cp -a from to`, but for the `linked` directories (relative), `cp -al`.
fn copy_root(from: &Path, to: &Path, linked: &[&str]) {
    if linked.iter().any(|l| l.is_empty()) {
        check(Command::new("cp").arg("-al").arg(from).arg(to), "link a directory of the host template");
        return;
    }
    if linked.is_empty() || !from.is_dir() {
        check(Command::new("cp").arg("-a").arg(from).arg(to), "copy the host template");
        return;
    }
    std::fs::create_dir(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let meta = std::fs::metadata(from).expect("stat a template directory");
    std::fs::set_permissions(to, meta.permissions()).expect("chmod a host directory");
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid())).expect("chown a host directory");
    for name in list_dir(from) {
        let inner: Vec<&str> = linked
            .iter()
            .filter_map(|l| if *l == name { Some("") } else { l.strip_prefix(&format!("{name}/")) })
            .collect();
        copy_root(&from.join(&name), &to.join(&name), &inner);
    }
}

/// The provisioned template of a profile, built once per process.
fn template(name: &str) -> PathBuf {
    static TEMPLATES: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let cell = {
        let mut map = TEMPLATES.get_or_init(Default::default).lock().expect("template lock");
        map.entry(name.to_string()).or_default().clone()
    };
    cell.get_or_init(|| {
        let started = Instant::now();
        let profile = Profile::load(name);
        let root = work_dir().join(format!("template-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        provision(&profile, &root);
        eprintln!("sandbox: profile `{name}` provisioned in {:.2?}", started.elapsed());
        root
    })
    .clone()
}

/// Builds a host for `profile` at `root` (which must not exist yet).
fn provision(profile: &Profile, root: &Path) {
    let image = profile.release == Release::V3_23;
    if image {
        // The real Alpine 3.23.6 install, made a cloud VPS's again.
        let copy_started = Instant::now();
        check(Command::new("cp").arg("-a").arg(super::image::root()).arg(root), "copy the image's root tree");
        eprintln!("sandbox: profile `{}`: image copied in {:.2?}", profile.name, copy_started.elapsed());
        undo_container_build(root);
        restore_special_modes(root);
        super::repack::adopt_identities(root, profile.release);
    } else {
        extract_minirootfs(root);
    }
    let repo = apk::repo(profile.release);

    // Release configuration files. On the minirootfs, those no package of the
    // repository ships (alpine-baselayout's); on the image, all of them: they
    // are its own bytes, but for what its container build changed.
    let shipped: HashSet<&str> = repo.package_paths.iter().map(String::as_str).collect();
    for rel in shared_config_files(profile) {
        let abs = format!("/{rel}");
        let in_shipped_dir = repo.shared_dirs.iter().any(|d| abs.starts_with(&format!("{d}/")));
        if image || (!shipped.contains(abs.as_str()) && !in_shipped_dir) {
            let data = std::fs::read(paths::shared_file(&rel, profile.release)).expect("read shared file");
            write_file(root, &rel, &data, 0o644);
        }
    }
    set_os_release(root, &profile.alpine_release);

    // apk: the local signed repository is the only one.
    std::fs::create_dir_all(root.join(".sandbox")).expect("create /.sandbox");
    check(
        Command::new("cp").arg("-a").arg(&repo.dir).arg(root.join(REPO_PATH.trim_start_matches('/'))),
        "copy the repository into the host",
    );
    std::fs::copy(&repo.public_key, root.join("etc/apk/keys").join(apk::KEY_NAME)).expect("install apk key");
    write_file(root, "/etc/apk/repositories", format!("{REPO_PATH}\n").as_bytes(), 0o644);

    // The device nodes scripts and apk use (no devtmpfs in the chroot).
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let _ = std::fs::remove_file(root.join("dev").join(name));
        check(
            Command::new("mknod").args(["-m", "666"]).arg(root.join("dev").join(name)).args([
                "c",
                &major.to_string(),
                &minor.to_string(),
            ]),
            "mknod",
        );
    }

    let apk_started = Instant::now();
    let out = run_in(root, profile, &format!("apk add --no-progress {}", profile.world.join(" ")), &[]);
    eprintln!("sandbox: profile `{}`: apk add of its world in {:.2?}", profile.name, apk_started.elapsed());
    if !out.status.success() {
        panic!(
            "profile `{}`: apk add failed:\n{}{}",
            profile.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The profile: removals, files, keys, services, overlays, edits.
    write_file(root, "/etc/alpine-release", format!("{}\n", profile.alpine_release).as_bytes(), 0o644);
    for (path, content) in &profile.files {
        write_file(
            root,
            &path.replace("{disk}", &profile.disk),
            content.replace("{disk}", &profile.disk).as_bytes(),
            0o644,
        );
    }
    for (path, rel) in &profile.shared {
        let data = std::fs::read(paths::alpine().join("files").join(rel))
            .unwrap_or_else(|e| panic!("profile `{}`: read shared file {rel}: {e}", profile.name));
        write_file(root, path, &data, 0o644);
    }
    // Last, so that a profile can take away what its base wrote.
    for path in &profile.remove {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("profile `{}`: remove {path}: {e}", profile.name));
    }
    if profile.ssh_host_keys {
        for (name, data) in ssh_host_keys() {
            let mode = if name.ends_with(".pub") { 0o644 } else { 0o600 };
            write_file(root, &format!("/etc/ssh/{name}"), data, mode);
        }
    }
    // The profile's runlevels are the whole of them (the image's own links go).
    for level in list_dir(&root.join("etc/runlevels")) {
        for svc in list_dir(&root.join("etc/runlevels").join(&level)) {
            std::fs::remove_file(root.join("etc/runlevels").join(&level).join(svc)).expect("unlink service");
        }
    }
    for (level, services) in &profile.runlevels {
        let dir = root.join("etc/runlevels").join(level);
        std::fs::create_dir_all(&dir).expect("create runlevel dir");
        for svc in services {
            assert!(
                root.join("etc/init.d").join(svc).exists(),
                "profile `{}`: runlevel {level} names `{svc}`, which has no /etc/init.d script",
                profile.name
            );
            std::os::unix::fs::symlink(format!("/etc/init.d/{svc}"), dir.join(svc)).expect("link service");
        }
    }
    let started = root.join("run/openrc/started");
    std::fs::create_dir_all(&started).expect("create /run/openrc/started");
    if image {
        // The rest of the state directories a booted OpenRC has (librc's).
        for dir in OPENRC_STATE_DIRS {
            std::fs::create_dir_all(root.join("run/openrc").join(dir)).expect("create an OpenRC state directory");
        }
    }
    for svc in &profile.started {
        std::os::unix::fs::symlink(format!("/etc/init.d/{svc}"), started.join(svc)).expect("mark started");
    }
    write_file(root, "/run/openrc/softlevel", b"default\n", 0o644);
    for overlay in &profile.overlays {
        check(
            Command::new("cp").arg("-a").arg(format!("{}/.", overlay.display())).arg(root),
            "copy the profile's files/ overlay",
        );
    }
    for (path, edits) in profile.edits.iter().filter(|(_, edits)| !edits.is_empty()) {
        let p = resolve(root, path);
        let mut text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("edit {path}: {e}"));
        for e in edits {
            let n = text.matches(&e.find).count();
            assert_eq!(n, 1, "profile `{}`: edit of {path}: `{}` matches {n} times", profile.name, e.find);
            text = text.replace(&e.find, &e.replace);
        }
        std::fs::write(&p, text).expect("write edited file");
    }
    // busybox's reboot would act on the machine: the stand-in only records.
    install_standin(root, "/sbin/reboot", "reboot");
    if image {
        // Real OpenRC, but nothing may start a daemon: rc-service, openrc and
        // openrc-run (every init script's interpreter) are stand-ins. The real
        // tools the script changes state with get a recorder in front.
        for (path, standin) in
            [("/sbin/rc-service", "rc-service"), ("/sbin/openrc", "openrc"), ("/sbin/openrc-run", "openrc-run")]
        {
            install_standin(root, path, standin);
        }
        for path in RECORDED {
            let name = path.rsplit('/').next().expect("a file name");
            let real = root.join(REAL_DIR.trim_start_matches('/')).join(name);
            std::fs::create_dir_all(real.parent().expect("parent")).expect("create the real tools' directory");
            std::fs::rename(root.join(path.trim_start_matches('/')), &real).expect("move a real tool aside");
            install_standin(root, path, "record");
        }
    }

    // Boot files as the kernel's install leaves them: its trigger runs
    // mkinitfs (on the image too: the host's initramfs is built from the
    // host's own configuration, reproducibly), whose new initramfs fires
    // syslinux's update-extlinux (its installer puts ldlinux.sys in /boot), or grub's
    // update-grub (its trigger).
    let out = run_in(
        root,
        profile,
        "set -e; mkinitfs \"$(cat /usr/share/kernel/virt/kernel.release)\" >/dev/null; \
         if [ -x /sbin/update-extlinux ]; then update-extlinux; fi; \
         if [ -x /usr/sbin/update-grub ]; then update-grub 2>/dev/null; fi; \
         if [ -x /sbin/extlinux ]; then extlinux --install /boot; fi",
        &[],
    );
    assert!(out.status.success(), "boot files: {}", String::from_utf8_lossy(&out.stderr));
    for command in &profile.run {
        let out = run_in(root, profile, command, &[]);
        assert!(
            out.status.success(),
            "profile `{}`: {command}: {}{}",
            profile.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(root.join(CALL_LOG.trim_start_matches('/')));
    if image {
        // apk-tools 3 logs each transaction with its time: the harness's own
        // installs are not the host's history, and would make builds differ.
        std::fs::copy(super::image::root().join("var/log/apk.log"), root.join("var/log/apk.log"))
            .expect("put the image's apk.log back");
    }
}

/// The state directories under /run/openrc, besides `started`, that the real
/// rc-update and rc-status of OpenRC 0.63 make when they are missing (seen): a
/// booted host has them.
const OPENRC_STATE_DIRS: &[&str] =
    &["daemons", "failed", "hotplugged", "inactive", "scheduled", "starting", "stopping", "wasinactive"];

/// Real tools of the image that change state, recorded in the call log by
/// `standins/record` at their own path, which then runs the real one, moved to
/// [`REAL_DIR`].
pub const RECORDED: &[&str] = &["/sbin/rc-update", "/sbin/mkinitfs"];
/// Where the recorded real tools live inside a host.
pub const REAL_DIR: &str = "/.sandbox/real";

/// Replaces `path` (a file or symlink, or nothing) with a stand-in, mode 0755.
fn install_standin(root: &Path, path: &str, standin: &str) {
    let data = std::fs::read(paths::sandbox().join("standins").join(standin)).expect("read a stand-in");
    let _ = std::fs::remove_file(root.join(path.trim_start_matches('/')));
    write_file(root, path, &data, 0o755);
}

/// Gives back the setuid, setgid and sticky bits that the image's cached root
/// tree lacks (`debugfs rdump` drops them: `/usr/bin/sudo` 4755, `/tmp` 1777),
/// from the modes apk's database records for each path.
fn restore_special_modes(root: &Path) {
    let db = std::fs::read_to_string(root.join("lib/apk/db/installed")).expect("read the installed database");
    let (mut dir, mut last) = (String::new(), String::new());
    for line in db.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let mode = || value.rsplit(':').next().and_then(|m| u32::from_str_radix(m, 8).ok()).unwrap_or(0);
        match key {
            "F" => {
                dir = value.to_string();
                last = dir.clone();
            }
            "R" => last = format!("{dir}/{value}"),
            "a" | "M" if mode() & 0o7000 != 0 => {
                let path = root.join(if key == "M" { &dir } else { &last });
                if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode()))
                        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
                }
            }
            _ => {}
        }
    }
}

/// Undoes what building the image as a container changed (FACTS.md), so that
/// it is an installed VPS again: `rc_sys="lxc"` (OpenRC would skip services),
/// `/.dockerenv`, its agent and `setup-dns` service (not Alpine's; their
/// runlevel links go with the profile's runlevels). `/etc/modules` (9p) gets
/// Alpine's text back with the release files, and `/etc/fstab` a root line
/// from the profile.
fn undo_container_build(root: &Path) {
    for path in [
        "/.dockerenv",
        "/etc/init.d/quicksand-guest-agent",
        "/usr/local/bin/quicksand-guest-agent",
        "/etc/init.d/setup-dns",
        "/etc/resolv.conf.quicksand",
    ] {
        std::fs::remove_file(root.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("the image has no {path} to remove: {e}"));
    }
    let rc_conf = root.join("etc/rc.conf");
    let text = std::fs::read_to_string(&rc_conf).expect("read the image's rc.conf");
    assert_eq!(text.matches("\nrc_sys=\"lxc\"\n").count(), 1, "the image's rc.conf sets rc_sys=\"lxc\" once");
    std::fs::write(&rc_conf, text.replace("\nrc_sys=\"lxc\"\n", "\n#rc_sys=\"\"\n")).expect("write rc.conf");
}

/// Relative paths of the release's files under ../shared/alpine/files
/// (`_*` variant directories and SOURCES.md left out; 3.22 adds `_3.22/`).
fn shared_config_files(profile: &Profile) -> BTreeSet<String> {
    let files = paths::alpine().join("files");
    let mut set = BTreeSet::new();
    collect_files(&files, "", &mut set);
    if profile.release == Release::V3_22 {
        collect_files(&files.join("_3.22"), "", &mut set);
    }
    set
}

fn collect_files(dir: &Path, prefix: &str, set: &mut BTreeSet<String>) {
    for name in list_dir(dir) {
        if prefix.is_empty() && (name.starts_with('_') || name == "SOURCES.md") {
            continue;
        }
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let full = dir.join(&name);
        if full.is_dir() {
            collect_files(&full, &rel, set);
        } else {
            set.insert(rel);
        }
    }
}

/// Rewrites VERSION_ID and PRETTY_NAME of /etc/os-release for the release.
fn set_os_release(root: &Path, alpine_release: &str) {
    let p = resolve(root, "/etc/os-release");
    let text = std::fs::read_to_string(&p).expect("read os-release");
    let branch: String = alpine_release.split('.').take(2).collect::<Vec<_>>().join(".");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("VERSION_ID=") {
                format!("VERSION_ID={alpine_release}\n")
            } else if l.starts_with("PRETTY_NAME=") {
                format!("PRETTY_NAME=\"Alpine Linux v{branch}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&p, text).expect("write os-release");
}

/// Real OpenSSH host keys made by this machine's ssh-keygen, once per process.
fn ssh_host_keys() -> &'static [(String, Vec<u8>)] {
    static KEYS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = work_dir().join("ssh-host-keys");
        std::fs::create_dir_all(&dir).expect("create ssh key dir");
        let mut keys = Vec::new();
        for kind in ["rsa", "ecdsa", "ed25519"] {
            let name = format!("ssh_host_{kind}_key");
            let path = dir.join(&name);
            check(
                Command::new("ssh-keygen").args(["-q", "-t", kind, "-N", "", "-C", "root@sandbox", "-f"]).arg(&path),
                "ssh-keygen",
            );
            keys.push((name.clone(), std::fs::read(&path).expect("read key")));
            keys.push((format!("{name}.pub"), std::fs::read(dir.join(format!("{name}.pub"))).expect("read key")));
        }
        keys
    })
}

fn run_in(root: &Path, profile: &Profile, cmd: &str, env: &[(&str, &str)]) -> Output {
    let net = &profile.network;
    let mut setup =
        format!("ip link set lo up && ip link add eth0 type veth peer name eth1 && ip addr add {} dev eth0", net.ipv4);
    if let Some(v6) = &net.ipv6 {
        setup.push_str(&format!(" && ip -6 addr add {v6} dev eth0 nodad"));
    }
    setup.push_str(&format!(
        " && ip link set eth0 up && ip link set eth1 up && ip route add default via {} dev eth0 onlink",
        net.gateway4
    ));
    // $1 = root, $2 = the command: the host's shell sets the namespace up,
    // then the chroot's busybox sh runs the command.
    let wrapper = format!("{{ {setup}; }} || exit 125; exec chroot \"$1\" /bin/sh -c \"$2\"");
    let mut c = Command::new("timeout");
    c.args(["-k", "5", RUN_TIMEOUT_SECS, "unshare", "--net", "--", "/bin/sh", "-c", &wrapper, "sandbox-run"])
        .arg(root)
        .arg(cmd)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // The real mkinitfs then builds the same bytes from the same inputs.
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run a command in the sandbox")
}

/// The regular files of a newc cpio archive: path -> content.
fn newc_files(mut cpio: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).expect("cpio header"), 16).expect("cpio hex");
    let pad = |n: usize| (4 - n % 4) % 4;
    let mut files = BTreeMap::new();
    while cpio.len() >= 110 {
        assert!(&cpio[..6] == b"070701", "not a newc cpio header");
        let mode = hex(&cpio[14..22]);
        let size = hex(&cpio[54..62]) as usize;
        let name_len = hex(&cpio[94..102]) as usize;
        let name = String::from_utf8_lossy(&cpio[110..110 + name_len - 1]).into_owned();
        let data_start = 110 + name_len + pad(110 + name_len);
        if name == "TRAILER!!!" {
            break;
        }
        if mode & 0o170000 == 0o100000 {
            files.insert(name.trim_start_matches("./").to_string(), cpio[data_start..data_start + size].to_vec());
        }
        cpio = &cpio[data_start + size + pad(size)..];
    }
    files
}

/// Resolves `path` inside `root` the way the chroot would (symlinks,
/// absolute or relative, stay inside the root; `..` stops at the root).
fn resolve(root: &Path, path: &str) -> PathBuf {
    let mut todo: Vec<String> = path.split('/').rev().filter(|c| !c.is_empty()).map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let candidate = done.iter().fold(root.to_path_buf(), |p, c| p.join(c)).join(&c);
        match std::fs::read_link(&candidate) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    done.clear();
                }
                for comp in target.components().rev() {
                    if let Component::Normal(s) = comp {
                        todo.push(s.to_string_lossy().into_owned());
                    } else if comp == Component::ParentDir {
                        todo.push("..".to_string());
                    }
                }
            }
            _ => done.push(c),
        }
    }
    done.iter().fold(root.to_path_buf(), |p, c| p.join(c))
}

fn write_file(root: &Path, path: &str, data: &[u8], mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create parent of {path}: {e}"));
    }
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {path}: {e}"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sorted names in a directory; empty when it does not exist.
fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn du(dir: &Path, prefix: &str, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let mut total = 0;
    for name in list_dir(dir) {
        let path = format!("{prefix}/{name}");
        if EXCLUDED.contains(&path.as_str()) {
            continue;
        }
        let full = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += du(&full, &path, seen);
        }
    }
    total
}
