//! The signed apk repository the real-boot bench's guest installs from: OpenSSH, dropbear,
//! extlinux and a shell built from Debian's source packages as static musl programs, the rest of a
//! cloud image as stand-ins of realistic size (`packages/catalog.toml`), packaged under
//! Alpine's names and split by the image's own apk-tools 3 (`apk mkpkg`, `apk mkndx`) in a
//! chroot, and signed with a bench key. Programs, key and repository are each built once
//! and cached outside the checkout (`image::cache()`), in a scratch path renamed into place.
//!
//! The image's own packages (curl, sudo, dhcpcd, linux-virt, ...) are in the same index:
//! the sandbox's rebuilds of them from the image's installed tree (`sandbox::repack`, apk v2
//! packages, which apk 3 installs), so that undo.sh can install again what the script
//! removed and `apk fix --reinstall linux-virt` brings back the pruned modules. One builder
//! for both repositories would be neater; this one reuses the sandbox's for those packages.
//!
//! Layout: `Repository::dir` holds `x86_64/APKINDEX.tar.gz` (an apk 3 index, signed) and
//! `x86_64/NAME-VERSION.apk`, as apk expects for a `/path` or URL line in
//! `/etc/apk/repositories`; the guest trusts `public_key` as `/etc/apk/keys/KEY_NAME`.
//! `Repository::upgrade` (`dir/upgrade`) is a second signed repository of the same shape
//! with one package: linux-virt one build later (`-r1`), the bench's kernel upgrade.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::image;
use crate::sandbox::{Release, repack};

/// The file name of the bench key under /etc/apk/keys.
pub const KEY_NAME: &str = "mingen-bench.rsa.pub";

/// What a cloud image of the guide has installed beyond the stock wheel image (the names
/// to `apk add` when building the bench disk). Their dependencies and `-openrc` packages
/// follow (cloud-init brings python3 and the py3-* libraries, chrony its libraries).
pub const CLOUD_IMAGE_PACKAGES: &[&str] = &[
    "openssh",
    "chrony",
    "tzdata",
    "doas",
    "cloud-init",
    "dhclient",
    "syslinux",
    "bash",
    "qemu-guest-agent",
    "nvme-cli",
    "mtools",
    "numactl",
];

/// The signed repository, ready to be copied into a guest.
pub struct Repository {
    /// The repository root: `x86_64/APKINDEX.tar.gz` and `x86_64/*.apk`.
    pub dir: PathBuf,
    /// The public key that verifies the index and the packages.
    pub public_key: PathBuf,
    /// Its file name under /etc/apk/keys.
    pub key_name: String,
    /// The kernel upgrade's repository: the image's linux-virt rebuilt as `kernel_upgrade`.
    pub upgrade: PathBuf,
    /// The version of that linux-virt (the image's, one build later: `6.18.56-r1`).
    pub kernel_upgrade: String,
}

/// The subdirectory of the repository that holds the kernel upgrade's repository.
const UPGRADE_DIR: &str = "upgrade";
/// The kernel package the upgrade rebuilds.
const KERNEL_PACKAGE: &str = "linux-virt";

/// Bumped whenever the build of the programs changes: their cache is named after it.
const PROGRAMS_VERSION: &str = "v2";
/// The Debian release whose source packages are built: the build below is written for
/// their versions (OpenSSH 9.2p1, OpenSSL 3.0, dropbear 2022.83, busybox 1.35.0, musl 1.2.3).
const DEBIAN_SUITE: &str = "bookworm";
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The Debian source packages the programs are built from (musl for its crypt(), OpenSSL
/// for OpenSSH's RSA and ECDSA keys).
const SOURCES: &[&str] = &["openssh", "openssl", "dropbear", "busybox", "musl"];
/// The programs built, as they are named in the programs cache and in the catalog.
const PROGRAMS: &[&str] =
    &["sshd", "ssh", "ssh-keygen", "sftp-server", "dropbear", "dropbearkey", "dropbearconvert", "bash"];
const ARCH: &str = "x86_64";
/// The mtime of every packaged file: a rebuild of the repository is byte-identical.
const EPOCH: &str = "@1763000000";

/// Why the repository cannot be built here, or None when it can (or is already built).
pub fn why_not() -> Option<String> {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    WHY_NOT
        .get_or_init(|| {
            if let Some(why) = image::why_not() {
                return Some(why);
            }
            if !is_root() {
                return Some("the bench repository is built with the image's apk in a chroot: that needs root".into());
            }
            let build_programs =
                !image::cache().join(programs_dir_name()).is_dir() || !image::cache().join(EXTLINUX_DIR).is_dir();
            let mut tools = vec![("chroot", "--version", "coreutils")];
            if !image::cache().join(KEY_DIR).is_dir() {
                tools.push(("openssl", "version", "openssl"));
            }
            if build_programs {
                tools.extend([
                    ("musl-gcc", "--version", "musl-tools"),
                    ("gcc", "--version", "gcc"),
                    ("make", "--version", "make"),
                    ("ar", "--version", "binutils"),
                    ("strip", "--version", "binutils"),
                    ("apt-get", "--version", "apt"),
                    ("dpkg-source", "--version", "dpkg-dev"),
                    ("perl", "-v", "perl"),
                    ("xz", "--version", "xz-utils"),
                    ("bzip2", "--help", "bzip2"),
                ]);
            }
            if let Some((tool, _, package)) = tools.into_iter().find(|(tool, arg, _)| !runs(tool, arg)) {
                return Some(format!(
                    "`{tool}` is not installed (Debian package {package}; it builds the bench repository)"
                ));
            }
            if !image::cache().join(EXTLINUX_DIR).is_dir() {
                for (path, package) in [(DEBIAN_EXTLINUX, "extlinux"), ("/usr/include/linux/fs.h", "linux-libc-dev")] {
                    if !Path::new(path).is_file() {
                        return Some(format!(
                            "{path} is missing (Debian package {package}; it builds the bench's extlinux)"
                        ));
                    }
                }
            }
            if build_programs && !Path::new(DEBIAN_KEYRING).is_file() {
                return Some(format!(
                    "{DEBIAN_KEYRING} is missing (debian-archive-keyring): it verifies Debian's sources"
                ));
            }
            None
        })
        .clone()
}

/// The repository, built on first use (programs, key and repository each cached on disk).
pub fn repository() -> &'static Repository {
    static REPOSITORY: OnceLock<Repository> = OnceLock::new();
    REPOSITORY.get_or_init(|| {
        if let Some(why) = why_not() {
            panic!("the bench repository cannot be built here: {why}");
        }
        let programs = programs();
        let key = signing_key();
        let catalog = Catalog::read();
        let image_apks = repack::image_apks(Release::V3_23);
        let kernel_upgrade = kernel_upgrade_version();
        let name = format!("bench-repo-{}", catalog.fingerprint(&programs, &key, &image_apks));
        let dir = cached(image::cache().join(name), |scratch| {
            build_repository(scratch, &catalog, &programs, &key, &image_apks, &kernel_upgrade)
        });
        Repository {
            upgrade: dir.join(UPGRADE_DIR),
            dir,
            public_key: key.public,
            key_name: KEY_NAME.into(),
            kernel_upgrade,
        }
    })
}

// ------------------------------------------------------------------ helpers

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn runs(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

use super::run;

/// Run COMMAND with its output in LOG; panic with the log's end if it fails.
fn run_logged(cmd: &mut Command, log: &Path, what: &str) {
    let file = fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = file.try_clone().expect("clone the log's handle");
    let status = cmd.stdout(file).stderr(err).status().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !status.success() {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("{what} failed ({status}); the end of {}:\n{}", log.display(), tail.join("\n"));
    }
}

/// Build PATH with BUILD (given a scratch path beside it) unless it exists; renamed into place,
/// so racing test processes or a killed build never leave half an item.
fn cached(path: PathBuf, build: impl FnOnce(&Path)) -> PathBuf {
    if path.exists() {
        return path;
    }
    remove_dead_scratches(&path);
    let scratch = path.with_extension(format!("partial-{}", std::process::id()));
    remove(&scratch);
    build(&scratch);
    // Another process may have finished first; its copy is as good as ours.
    if fs::rename(&scratch, &path).is_err() {
        remove(&scratch);
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Scratch paths of PATH (and what grew beside them) left by processes that died mid-build.
fn remove_dead_scratches(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!("{}.partial-", name.to_string_lossy());
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = entry_name.strip_prefix(&prefix) else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
            remove(&entry.path());
        }
    }
}

fn remove(path: &Path) {
    let _ = fs::remove_dir_all(path);
    let _ = fs::remove_file(path);
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(dir) = path.parent() {
        mkdir(dir);
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/realboot/packages")
}

// ------------------------------------------------------------------ programs

/// The programs built from Debian's sources: `bin/NAME` for each of PROGRAMS, and
/// `versions` (`SOURCE VERSION` lines, upstream versions of the sources built).
struct Programs {
    dir: PathBuf,
    versions: BTreeMap<String, String>,
    /// The static extlinux (`build_extlinux`), cached on its own.
    extlinux: PathBuf,
}

impl Programs {
    fn path(&self, name: &str) -> PathBuf {
        if name == "extlinux" {
            return self.extlinux.join("bin/extlinux");
        }
        assert!(PROGRAMS.contains(&name), "catalog.toml: `{name}` is not a built program ({PROGRAMS:?}, extlinux)");
        self.dir.join("bin").join(name)
    }
}

fn programs_dir_name() -> String {
    format!("bench-programs-{PROGRAMS_VERSION}")
}

fn programs() -> Programs {
    let dir = cached(image::cache().join(programs_dir_name()), build_programs);
    let text = String::from_utf8(read(&dir.join("versions"))).expect("utf-8 versions");
    let versions = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(source, version)| (source.to_string(), version.to_string()))
        .collect();
    let extlinux = cached(image::cache().join(EXTLINUX_DIR), build_extlinux);
    Programs { dir, versions, extlinux }
}

/// Fetch the Debian sources, build musl's crypt(), then dropbear, OpenSSH and busybox
/// (side by side: configure scripts use one core each), strip and check the programs.
fn build_programs(scratch: &Path) {
    let started = std::time::Instant::now();
    let work = scratch.join("work");
    let logs = scratch.join("logs");
    mkdir(&work);
    mkdir(&logs);
    let sources = fetch_sources(&work, &logs, SOURCES);
    let crypt = build_crypt(&sources["musl"], &work.join("crypt"), &logs);
    let bin = scratch.join("bin");
    mkdir(&bin);
    std::thread::scope(|threads| {
        let dropbear = threads.spawn(|| build_dropbear(&sources["dropbear"], &crypt, &logs));
        let openssh = threads.spawn(|| {
            let openssl = build_libcrypto(&sources["openssl"], &logs);
            build_openssh(&sources["openssh"], &crypt, &openssl, &logs)
        });
        let busybox = threads.spawn(|| build_busybox(&sources["busybox"], &logs));
        let built: Vec<(&str, PathBuf)> = [dropbear, openssh, busybox]
            .into_iter()
            .flat_map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        for (name, path) in built {
            let out = bin.join(name);
            run(Command::new("strip").arg("-o").arg(&out).arg(&path), &format!("strip {name}"));
            assert!(is_static_elf(&out), "{} is not a static ELF program", out.display());
        }
    });
    let versions: String = sources
        .iter()
        .map(|(source, dir)| {
            let name = dir.file_name().expect("a source directory").to_string_lossy().into_owned();
            format!("{source} {}\n", &name[source.len() + 1..])
        })
        .collect();
    write(&scratch.join("versions"), versions.as_bytes(), 0o644);
    remove(&work);
    let took = format!("built in {} s\n", started.elapsed().as_secs());
    write(&logs.join("took"), took.as_bytes(), 0o644);
}

/// `apt-get source` of SOURCES from Debian 12 (bookworm), whatever the host runs, with a
/// private apt configuration: the host's own apt configuration is neither needed nor changed.
fn fetch_sources(work: &Path, logs: &Path, sources: &[&str]) -> BTreeMap<String, PathBuf> {
    let apt = work.join("apt");
    for dir in ["parts", "lists/partial", "cache/archives/partial", "src"] {
        mkdir(&apt.join(dir));
    }
    let entry = format!(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: {DEBIAN_SUITE}\nComponents: main\n\
         Signed-By: {DEBIAN_KEYRING}\n"
    );
    write(&apt.join("parts/debian-src.sources"), entry.as_bytes(), 0o644);
    let options: Vec<String> = [
        "Dir::Etc::SourceList=/dev/null".to_string(),
        format!("Dir::Etc::SourceParts={}", apt.join("parts").display()),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        "Debug::NoLocking=1".to_string(),
        "APT::Sandbox::User=root".to_string(),
    ]
    .into_iter()
    .flat_map(|option| ["-o".to_string(), option])
    .collect();
    run_logged(Command::new("apt-get").args(&options).arg("update"), &logs.join("apt-update.log"), "apt-get update");
    let src = work.join("src");
    mkdir(&src);
    run_logged(
        Command::new("apt-get").args(&options).arg("source").args(sources).current_dir(&src),
        &logs.join("apt-source.log"),
        "apt-get source",
    );
    sources
        .iter()
        .map(|source| {
            let prefix = format!("{source}-");
            let dir = fs::read_dir(&src)
                .expect("read the sources")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                .unwrap_or_else(|| panic!("apt-get source unpacked no {source}-VERSION directory"));
            (source.to_string(), dir)
        })
        .collect()
}

/// Debian's musl leaves crypt() out of libc.a: build musl's own src/crypt (same source
/// package, same version) into a libcrypt.a, and its crypt.h, for dropbear and sshd.
fn build_crypt(musl: &Path, out: &Path, logs: &Path) -> PathBuf {
    run_logged(
        Command::new("./configure").arg("--disable-shared").env("CC", "gcc").current_dir(musl),
        &logs.join("musl-configure.log"),
        "musl's configure",
    );
    let sources: Vec<String> = fs::read_dir(musl.join("src/crypt"))
        .expect("read musl's src/crypt")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".c").map(str::to_string))
        .collect();
    let objects: Vec<String> = sources.iter().map(|name| format!("obj/src/crypt/{name}.o")).collect();
    run_logged(
        Command::new("make").arg("-j2").args(&objects).current_dir(musl),
        &logs.join("musl-crypt.log"),
        "make musl's crypt objects",
    );
    mkdir(&out.join("include"));
    fs::copy(musl.join("include/crypt.h"), out.join("include/crypt.h")).expect("copy musl's crypt.h");
    run(Command::new("ar").arg("rcs").arg(out.join("libcrypt.a")).args(&objects).current_dir(musl), "ar libcrypt.a");
    out.to_path_buf()
}

/// dropbear, dropbearkey and dropbearconvert: static, bundled libtom, no zlib, crypt() found.
fn build_dropbear(source: &Path, crypt: &Path, logs: &Path) -> Vec<(&'static str, PathBuf)> {
    // Alpine's path for the sftp server (its dropbear-options_sftp-server_path.patch).
    let local_options = "#define SFTPSERVER_PATH \"/usr/lib/ssh/sftp-server\"\n";
    write(&source.join("localoptions.h"), local_options.as_bytes(), 0o644);
    run_logged(
        Command::new("./configure")
            .args(["--prefix=/usr", "--sysconfdir=/etc", "--enable-static", "--disable-zlib", "--disable-pam"])
            .args(["--disable-lastlog", "--disable-utmp", "--disable-utmpx", "--disable-wtmp", "--disable-wtmpx"])
            .args(["--disable-pututline", "--disable-pututxline"])
            .env("CC", "musl-gcc")
            .env("CPPFLAGS", format!("-I{}", crypt.join("include").display()))
            .env("LDFLAGS", format!("-L{}", crypt.display()))
            .current_dir(source),
        &logs.join("dropbear-configure.log"),
        "dropbear's configure",
    );
    let config = String::from_utf8_lossy(&read(&source.join("config.h"))).into_owned();
    assert!(
        config.lines().any(|l| l.trim() == "#define HAVE_CRYPT 1"),
        "dropbear's configure did not find crypt(): its server would have no password logins"
    );
    let programs = ["dropbear", "dropbearkey", "dropbearconvert"];
    run_logged(
        Command::new("make").arg("-j2").arg(format!("PROGRAMS={}", programs.join(" "))).current_dir(source),
        &logs.join("dropbear-make.log"),
        "make dropbear",
    );
    programs.into_iter().map(|p| (p, source.join(p))).collect()
}

/// OpenSSL's libcrypto.a for musl, static, without what OpenSSH does not use; returns the
/// source directory, which then holds `include/` and `libcrypto.a`.
fn build_libcrypto(source: &Path, logs: &Path) -> PathBuf {
    let left_out = "shared tests module engine dso async afalgeng ktls ssl3 dtls srp psk idea seed camellia aria \
                    sm2 sm3 sm4 whirlpool rc2 rc4 rc5 mdc2 cast bf cms ts ocsp ct comp legacy siphash blake2 scrypt \
                    cmac gost srtp sctp nextprotoneg rfc3779 ec2m";
    run_logged(
        Command::new("./Configure")
            .arg("linux-x86_64")
            .args(left_out.split_whitespace().map(|feature| format!("no-{feature}")))
            // The kernel's headers (linux/*.h), which musl-gcc leaves out, from the host.
            .args(["-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"])
            .env("CC", "musl-gcc")
            .current_dir(source),
        &logs.join("openssl-configure.log"),
        "OpenSSL's Configure",
    );
    run_logged(
        Command::new("make").args(["-j2", "build_generated"]).current_dir(source),
        &logs.join("openssl-generate.log"),
        "make OpenSSL's generated files",
    );
    run_logged(
        Command::new("make").args(["-j2", "libcrypto.a"]).current_dir(source),
        &logs.join("openssl-make.log"),
        "make OpenSSL's libcrypto.a",
    );
    source.to_path_buf()
}

/// sshd, ssh, ssh-keygen and sftp-server: static, with OpenSSL's libcrypto (RSA, ECDSA and
/// Ed25519 keys, as Alpine's), without zlib or PAM, with Alpine's paths.
fn build_openssh(source: &Path, crypt: &Path, openssl: &Path, logs: &Path) -> Vec<(&'static str, PathBuf)> {
    // Debian's patches change configure.ac (GSSAPI, SELinux, systemd: all left out here);
    // the configure script shipped in the source stays valid for this build.
    run(Command::new("touch").arg(source.join("configure")), "touch OpenSSH's configure");
    run_logged(
        Command::new("./configure")
            .args(["--prefix=/usr", "--sysconfdir=/etc/ssh", "--libexecdir=/usr/lib/ssh", "--with-pid-dir=/run"])
            .args(["--with-privsep-path=/var/empty", "--with-privsep-user=sshd", "--with-mantype=doc"])
            .args(["--without-zlib", "--without-pam", "--without-libedit", "--without-pie"])
            .args(["--without-selinux", "--without-kerberos5", "--without-security-key-builtin"])
            .args(["--disable-lastlog", "--disable-utmp", "--disable-utmpx", "--disable-wtmp", "--disable-wtmpx"])
            .env("CC", "musl-gcc")
            .env("CPPFLAGS", format!("-I{} -I{}", crypt.join("include").display(), openssl.join("include").display()))
            .env("LDFLAGS", format!("-L{} -L{} -static", crypt.display(), openssl.display()))
            .current_dir(source),
        &logs.join("openssh-configure.log"),
        "OpenSSH's configure",
    );
    let programs = ["sshd", "ssh", "ssh-keygen", "sftp-server"];
    run_logged(
        Command::new("make").arg("-j2").args(programs).current_dir(source),
        &logs.join("openssh-make.log"),
        "make OpenSSH",
    );
    programs.into_iter().map(|p| (p, source.join(p))).collect()
}

/// A static busybox holding only ash, which answers to the name `bash` (BASH_IS_ASH).
fn build_busybox(source: &Path, logs: &Path) -> Vec<(&'static str, PathBuf)> {
    run_logged(
        Command::new("make").arg("allnoconfig").current_dir(source),
        &logs.join("busybox-config.log"),
        "busybox allnoconfig",
    );
    let wanted = [
        "STATIC",
        "LONG_OPTS",
        "ASH",
        "SH_IS_ASH",
        "BASH_IS_ASH",
        "ASH_OPTIMIZE_FOR_SIZE",
        "ASH_BASH_COMPAT",
        "ASH_JOB_CONTROL",
        "ASH_ALIAS",
        "ASH_GETOPTS",
        "ASH_CMDCMD",
        "ASH_ECHO",
        "ASH_PRINTF",
        "ASH_TEST",
        "FEATURE_EDITING",
        "FEATURE_EDITING_HISTORY",
        "FEATURE_TAB_COMPLETION",
        "FEATURE_SH_MATH",
    ];
    let config_path = source.join(".config");
    let config = String::from_utf8_lossy(&read(&config_path)).into_owned();
    let config: String = config
        .lines()
        .map(|line| match line.strip_prefix("# CONFIG_").and_then(|l| l.strip_suffix(" is not set")) {
            Some(option) if wanted.contains(&option) => format!("CONFIG_{option}=y\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    write(&config_path, config.as_bytes(), 0o644);
    run_logged(
        Command::new("sh").args(["-c", "yes '' | make oldconfig"]).current_dir(source),
        &logs.join("busybox-oldconfig.log"),
        "busybox oldconfig",
    );
    let config = String::from_utf8_lossy(&read(&config_path)).into_owned();
    for option in ["STATIC", "ASH", "BASH_IS_ASH"] {
        assert!(config.lines().any(|l| l == format!("CONFIG_{option}=y")), "busybox's .config lost CONFIG_{option}");
    }
    run_logged(
        Command::new("make").args(["-j2", "CC=musl-gcc", "busybox"]).current_dir(source),
        &logs.join("busybox-make.log"),
        "make busybox",
    );
    vec![("bash", source.join("busybox"))]
}

/// An x86-64 ELF executable with no program interpreter (PT_INTERP): statically linked.
fn is_static_elf(path: &Path) -> bool {
    let bytes = read(path);
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")) as usize;
    if bytes.len() < 64 || &bytes[..5] != b"\x7fELF\x02" || u16_at(0x10) != 2 || u16_at(0x12) != 0x3e {
        return false;
    }
    let (table, entry_size, entries) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..entries).all(|i| u32_at(table + i * entry_size) != PT_INTERP)
}

// ------------------------------------------------------------------ extlinux

/// Bumped whenever the build of extlinux changes: its cache is named after it.
const EXTLINUX_DIR: &str = "bench-extlinux-v1";
/// The extlinux that builds the bench disk (build-disk.sh): its boot images are the guest's.
const DEBIAN_EXTLINUX: &str = "/usr/bin/extlinux";

/// A static musl extlinux for the guest, whose `--once` writes the ADV the bench disk's
/// ldlinux.sys reads: extlinux/main.c and libinstaller from Debian's syslinux source,
/// with the boot images it installs (ldlinux.bss, ldlinux.sys, ldlinux.c32) taken from
/// the build of that source which installed the disk's boot loader: Debian's own
/// extlinux, the installer build-disk.sh runs. Building them again needs the whole
/// 16/32-bit boot loader tool chain (nasm, gcc -m32) for no gain: the check below
/// proves the copies are the same bytes, because both installers put the same boot
/// sector, ldlinux.sys, ldlinux.c32 and ADV on a fresh filesystem.
fn build_extlinux(scratch: &Path) {
    let work = scratch.join("work");
    let logs = scratch.join("logs");
    mkdir(&work);
    mkdir(&logs);
    let source = fetch_sources(&work, &logs, &["syslinux"]).remove("syslinux").expect("the syslinux source");
    let generated = work.join("generated");
    mkdir(&generated.join("uuid"));
    // xfs_sb.h names the uuid_t type only; extlinux calls nothing of libuuid.
    write(&generated.join("uuid/uuid.h"), b"typedef unsigned char uuid_t[16];\n", 0o644);
    run(
        Command::new("perl")
            .arg(source.join("version.pl"))
            .arg(source.join("version"))
            .arg(generated.join("version.h"))
            .arg("#define < @"),
        "syslinux's version.pl",
    );
    for (name, bytes) in debian_boot_images(&read(Path::new(DEBIAN_EXTLINUX))) {
        write(&generated.join(format!("{name}_bin.c")), c_table(name, &bytes).as_bytes(), 0o644);
    }
    let out = work.join("extlinux");
    let sources = ["extlinux/main.c", "extlinux/mountinfo.c"]
        .into_iter()
        .map(|file| source.join(file))
        .chain(
            ["syslxmod", "syslxopt", "syslxcom", "syslxrw", "setadv", "advio"]
                .map(|f| source.join("libinstaller").join(format!("{f}.c"))),
        )
        .chain(
            ["syslinux_bootsect", "syslinux_ldlinuxc32", "syslinux_ldlinux"]
                .map(|n| generated.join(format!("{n}_bin.c"))),
        );
    run_logged(
        Command::new("musl-gcc")
            .args(["-static", "-Os", "-D_FILE_OFFSET_BITS=64", "-o"])
            .arg(&out)
            .arg("-I")
            .arg(&generated)
            .arg("-I")
            .arg(source.join("extlinux"))
            .arg("-I")
            .arg(source.join("libinstaller"))
            // The kernel's headers (linux/*.h), which musl-gcc leaves out, from the host.
            .args(["-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"])
            .args(sources),
        &logs.join("extlinux-build.log"),
        "build extlinux",
    );
    let bin = scratch.join("bin");
    mkdir(&bin);
    run(Command::new("strip").arg("-o").arg(bin.join("extlinux")).arg(&out), "strip extlinux");
    assert!(is_static_elf(&bin.join("extlinux")), "extlinux is not a static ELF program");
    check_installs_like_debian(&bin.join("extlinux"), &work);
    let name = source.file_name().expect("a source directory").to_string_lossy().into_owned();
    write(&scratch.join("versions"), format!("syslinux {}\n", &name["syslinux-".len()..]).as_bytes(), 0o644);
    remove(&work);
}

/// The boot images Debian's extlinux embeds, as libinstaller's bin2c.pl tables name them:
/// the boot sector (512 bytes, `EB 58 90 "SYSLINUX"`, ending 55 AA), ldlinux.c32 (the ELF
/// that follows it) and ldlinux.sys (`"\r\nSYSLINUX "`, after that). Their lengths are the
/// `_len` words the binary keeps side by side: 512, mtime, ldlinux.c32's, mtime, ldlinux.sys's.
fn debian_boot_images(binary: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let find =
        |needle: &[u8], from: usize| binary[from..].windows(needle.len()).position(|w| w == needle).map(|at| at + from);
    let u32_at = |at: usize| u32::from_le_bytes(binary[at..at + 4].try_into().expect("4 bytes")) as usize;
    let bootsect_at = find(b"\xeb\x58\x90SYSLINUX", 0).expect("Debian's extlinux holds no boot sector");
    let bootsect = &binary[bootsect_at..bootsect_at + 512];
    assert_eq!(&bootsect[510..], b"\x55\xaa", "the boot sector in Debian's extlinux does not end in 55 AA");
    let c32_at = find(b"\x7fELF", bootsect_at + 512).expect("Debian's extlinux holds no ldlinux.c32");
    let lengths = (0..binary.len() - 20)
        .step_by(4)
        .find(|&at| {
            u32_at(at) == 512 && u32_at(at + 4) == u32_at(at + 12) && u32_at(at + 4) != 0 && {
                let (c32_len, sys_len) = (u32_at(at + 8), u32_at(at + 16));
                c32_len > 0 && sys_len > 0 && sys_len % 512 == 0 && c32_at + c32_len <= binary.len()
            }
        })
        .expect("Debian's extlinux holds no table of its boot images' lengths");
    let (c32_len, sys_len) = (u32_at(lengths + 8), u32_at(lengths + 16));
    let c32 = &binary[c32_at..c32_at + c32_len];
    let sys_at = find(b"\r\nSYSLINUX ", c32_at + c32_len).expect("Debian's extlinux holds no ldlinux.sys");
    let sys = &binary[sys_at..sys_at + sys_len];
    const LDLINUX_MAGIC: [u8; 4] = 0x3eb2_02fe_u32.to_le_bytes();
    assert!(sys[..512].windows(4).any(|w| w == LDLINUX_MAGIC), "ldlinux.sys from Debian's extlinux has no magic");
    vec![
        ("syslinux_bootsect", bootsect.to_vec()),
        ("syslinux_ldlinuxc32", c32.to_vec()),
        ("syslinux_ldlinux", sys.to_vec()),
    ]
}

/// BYTES as the C table libinstaller's bin2c.pl writes (the mtime left at 0).
fn c_table(name: &str, bytes: &[u8]) -> String {
    let body: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    format!(
        "unsigned char {name}[] = {{\n{}\n}};\n\nconst unsigned int {name}_len = {};\n\nconst int {name}_mtime = 0;\n",
        body.join(","),
        bytes.len()
    )
}

/// Install with EXTLINUX and with Debian's extlinux onto two fresh, identical ext4
/// filesystems, then set a boot-once label with each: the boot sector, ldlinux.sys (with
/// its ADV) and ldlinux.c32 must be the same bytes.
fn check_installs_like_debian(extlinux: &Path, work: &Path) {
    let uuid = super::ROOT_UUID;
    let mut results = Vec::new();
    for (who, installer) in [("debian", Path::new(DEBIAN_EXTLINUX)), ("bench", extlinux)] {
        let image = work.join(format!("{who}.img"));
        let mount = work.join(format!("{who}.mnt"));
        mkdir(&mount);
        run(Command::new("truncate").args(["-s", "32M"]).arg(&image), "truncate");
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-O", "^64bit", "-U", uuid, "-E", &format!("hash_seed={uuid}")])
                .arg(&image),
            "mkfs.ext4 for the extlinux check",
        );
        let script = "set -e; mount -o loop \"$2\" \"$3\"; trap 'umount \"$3\"' EXIT; mkdir \"$3/boot\"; \
                      \"$1\" --install \"$3/boot\" 2>/dev/null; \"$1\" --once=mingen-check \"$3/boot\"; \
                      cat \"$3/boot/ldlinux.sys\" \"$3/boot/ldlinux.c32\"";
        let files = run(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c", script, "check"])
                .arg(installer)
                .arg(&image)
                .arg(&mount),
            &format!("install the boot loader with {}", installer.display()),
        );
        let mut bytes = read(&image)[..512].to_vec();
        bytes.extend_from_slice(&files.stdout);
        results.push(bytes);
    }
    assert!(
        results[0] == results[1],
        "the bench's extlinux installs other bytes than Debian's (boot sector, ldlinux.sys, ldlinux.c32)"
    );
    assert!(
        results[0].windows(b"mingen-check".len()).any(|w| w == b"mingen-check"),
        "extlinux --once wrote no boot-once label into ldlinux.sys's ADV"
    );
}

// ------------------------------------------------------------------ signing key

const KEY_DIR: &str = "bench-repo-key";

/// The bench's RSA key pair: `private` signs the packages and the index.
struct SigningKey {
    private: PathBuf,
    public: PathBuf,
}

fn signing_key() -> SigningKey {
    let dir = cached(image::cache().join(KEY_DIR), |scratch| {
        mkdir(scratch);
        let private = scratch.join("mingen-bench.rsa");
        run(Command::new("openssl").args(["genrsa", "-out"]).arg(&private).arg("2048"), "openssl genrsa");
        run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(scratch.join(KEY_NAME)),
            "openssl rsa -pubout",
        );
    });
    SigningKey { private: dir.join("mingen-bench.rsa"), public: dir.join(KEY_NAME) }
}

// ------------------------------------------------------------------ catalog

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    package: Vec<RawPackage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: String,
    version: Option<String>,
    version_from: Option<String>,
    description: String,
    origin: Option<String>,
    #[serde(default)]
    depends: Vec<String>,
    #[serde(default)]
    install_if: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    scripts: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    mode: Option<u32>,
    built: Option<String>,
    data: Option<String>,
    text: Option<String>,
    bytes: Option<usize>,
    link: Option<String>,
    #[serde(default)]
    dir: bool,
    pad_to: Option<usize>,
}

/// `packages/catalog.toml`, parsed, with the text of every data file it names.
struct Catalog {
    text: String,
    packages: Vec<RawPackage>,
    data: BTreeMap<String, Vec<u8>>,
}

impl Catalog {
    fn read() -> Catalog {
        let path = data_dir().join("catalog.toml");
        let text = String::from_utf8(read(&path)).expect("utf-8 catalog.toml");
        let raw: RawCatalog = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut data = BTreeMap::new();
        for package in &raw.package {
            let names = package.files.iter().filter_map(|f| f.data.as_ref()).chain(package.scripts.values());
            for name in names {
                data.entry(name.clone()).or_insert_with(|| read(&data_dir().join(name)));
            }
        }
        Catalog { text, packages: raw.package, data }
    }

    /// What the built repository depends on: the catalog, its data, this file, the
    /// programs and the key. The repository's cache is named after it.
    fn fingerprint(&self, programs: &Programs, key: &SigningKey, image_apks: &Path) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(self.text.as_bytes());
        for (name, bytes) in &self.data {
            hash.update(name.as_bytes());
            hash.update(bytes);
        }
        hash.update(include_str!("packages.rs").as_bytes());
        hash.update(programs.dir.to_string_lossy().as_bytes());
        hash.update(programs.extlinux.to_string_lossy().as_bytes());
        hash.update(read(&key.public));
        // The image's rebuilt packages: their cache is named after what they are built from.
        hash.update(image_apks.to_string_lossy().as_bytes());
        hex::encode(&hash.finalize()[..6])
    }
}

/// The package's version: its own, or the built source's (`9.2p1` as Alpine writes it: `9.2_p1`).
fn version_of(package: &RawPackage, programs: &Programs) -> String {
    match (&package.version, &package.version_from) {
        (Some(version), None) => version.clone(),
        (None, Some(source)) => {
            let upstream = programs
                .versions
                .get(source)
                .unwrap_or_else(|| panic!("catalog.toml: {}: no built source `{source}`", package.name));
            let upstream = upstream.split(['-', '+']).next().expect("a version");
            let alpine = match upstream.split_once('p') {
                Some((base, patch)) if patch.chars().all(|c| c.is_ascii_digit()) => format!("{base}_p{patch}"),
                _ => upstream.to_string(),
            };
            format!("{alpine}-r0")
        }
        _ => panic!("catalog.toml: {}: give exactly one of version and version_from", package.name),
    }
}

/// N bytes that depend only on SEED: a 4 KiB pseudo-random block, repeated (so that
/// packages stay small and the installed size is real).
fn filler(seed: &str, n: usize) -> Vec<u8> {
    let mut state =
        seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let block: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    block.iter().copied().cycle().take(n).collect()
}

/// A script padded with comment lines to exactly N bytes (the size of what it stands in for).
fn padded(script: &[u8], n: usize, what: &str) -> Vec<u8> {
    assert!(script.len() + 2 <= n, "catalog.toml: {what}: the script is already {} bytes (pad_to = {n})", script.len());
    let mut out = script.to_vec();
    let line = format!("# {}\n", "stand-in padding, the size of the program it stands in for ".repeat(2).trim_end());
    while out.len() < n {
        let room = n - out.len();
        if room >= line.len() + 2 || room == line.len() {
            out.extend_from_slice(line.as_bytes());
        } else {
            out.extend_from_slice(b"#");
            out.extend(std::iter::repeat_n(b' ', room - 2));
            out.push(b'\n');
        }
    }
    out
}

// ------------------------------------------------------------------ repository

/// The image's linux-virt version, one build later (`6.18.56-r0` -> `6.18.56-r1`).
fn kernel_upgrade_version() -> String {
    let db = String::from_utf8(read(&image::root().join("lib/apk/db/installed"))).expect("utf-8 database");
    let record = db
        .split("\n\n")
        .find(|r| r.lines().any(|l| l == format!("P:{KERNEL_PACKAGE}")))
        .unwrap_or_else(|| panic!("the image has no {KERNEL_PACKAGE}"));
    let version = record.lines().find_map(|l| l.strip_prefix("V:")).expect("a V: line");
    let (base, build) = version.rsplit_once("-r").expect("a version with -rN");
    format!("{base}-r{}", build.parse::<u32>().expect("a build number") + 1)
}

/// Stage every package of the catalog, pack and sign it with the image's `apk mkpkg`, add
/// the image's own packages (IMAGE_APKS), then index and sign the lot with `apk mkndx`, in
/// a chroot of a copy of the image; the kernel upgrade, indexed on its own, beside it.
fn build_repository(
    scratch: &Path,
    catalog: &Catalog,
    programs: &Programs,
    key: &SigningKey,
    image_apks: &Path,
    kernel_upgrade: &str,
) {
    let builder = PathBuf::from(format!("{}.builder", scratch.display()));
    remove(&builder);
    mkdir(&builder);
    // The tree's contents (`/.`): were the cached root a symlink, `cp -a` would copy the link.
    run(Command::new("cp").arg("-a").arg(image::root().join(".")).arg(&builder), "copy the image's root tree");
    for (name, minor) in [("null", 3), ("zero", 5), ("urandom", 9)] {
        let node = builder.join("dev").join(name);
        let _ = fs::remove_file(&node);
        run(Command::new("mknod").args(["-m", "666"]).arg(&node).args(["c", "1", &minor.to_string()]), "mknod");
    }
    let work = builder.join("work");
    let out = work.join("repo").join(ARCH);
    mkdir(&out);
    write(&work.join("keys").join(KEY_NAME), &read(&key.public), 0o644);
    write(&work.join("key.rsa"), &read(&key.private), 0o600);
    let apk = |args: &[String], what: &str| {
        run(Command::new("chroot").arg(&builder).arg("/sbin/apk").args(["--keys-dir", "/work/keys"]).args(args), what);
    };
    let mut files = Vec::new();
    for package in &catalog.packages {
        let version = version_of(package, programs);
        let stage = work.join("stage").join(&package.name);
        mkdir(&stage);
        stage_files(package, &stage, catalog, programs);
        run(Command::new("find").arg(&stage).args(["-exec", "touch", "-h", "-d", EPOCH, "{}", "+"]), "touch");
        let file = format!("/work/repo/{ARCH}/{}-{version}.apk", package.name);
        let mut args: Vec<String> = vec!["mkpkg".into(), "--sign-key".into(), "/work/key.rsa".into()];
        let with_version =
            |items: &[String]| items.iter().map(|i| i.replace("{version}", &version)).collect::<Vec<_>>();
        let info = [
            ("name", package.name.clone()),
            ("version", version.clone()),
            ("arch", ARCH.to_string()),
            ("description", package.description.clone()),
            ("origin", package.origin.clone().unwrap_or_else(|| package.name.clone())),
            ("license", "custom".to_string()),
            ("depends", with_version(&package.depends).join(" ")),
            ("install-if", with_version(&package.install_if).join(" ")),
            ("provides", with_version(&package.provides).join(" ")),
        ];
        for (field, value) in info.into_iter().filter(|(_, value)| !value.is_empty()) {
            args.extend(["--info".into(), format!("{field}:{value}")]);
        }
        for (kind, name) in &package.scripts {
            let script = work.join("scripts").join(format!("{}.{kind}", package.name));
            write(&script, &catalog.data[name], 0o755);
            args.extend(["--script".into(), format!("{kind}:/work/scripts/{}.{kind}", package.name)]);
        }
        args.extend(["--files".into(), format!("/work/stage/{}", package.name), "--output".into(), file.clone()]);
        apk(&args, &format!("apk mkpkg {}", package.name));
        files.push(file);
    }
    for entry in fs::read_dir(image_apks).expect("read the image's rebuilt packages").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let to = out.join(&name);
        if fs::hard_link(entry.path(), &to).is_err() {
            fs::copy(entry.path(), &to).expect("copy a rebuilt package");
        }
        files.push(format!("/work/repo/{ARCH}/{name}"));
    }
    let upgrade = work.join(UPGRADE_DIR).join(ARCH);
    mkdir(&upgrade);
    let kernel = format!("{KERNEL_PACKAGE}-{kernel_upgrade}.apk");
    write(&upgrade.join(&kernel), &repack::rebuilt_as(KERNEL_PACKAGE, kernel_upgrade, Release::V3_23), 0o644);
    // The rebuilt packages are unsigned (as the sandbox's are): the signed index vouches for
    // them, by their identity, which is what apk checks when it installs one.
    for (repo, files) in [("repo", files), (UPGRADE_DIR, vec![format!("/work/{UPGRADE_DIR}/{ARCH}/{kernel}")])] {
        let mut args: Vec<String> =
            ["mkndx", "--allow-untrusted", "--sign-key", "/work/key.rsa", "--output"].map(String::from).into();
        args.push(format!("/work/{repo}/{ARCH}/APKINDEX.tar.gz"));
        args.extend(files);
        apk(&args, &format!("apk mkndx of {repo}"));
    }
    fs::rename(work.join("repo"), scratch).expect("move the repository out of the builder");
    fs::rename(work.join(UPGRADE_DIR), scratch.join(UPGRADE_DIR)).expect("move the kernel upgrade out of the builder");
    remove(&builder);
}

/// Lay PACKAGE's files out under STAGE, as they are to be installed.
fn stage_files(package: &RawPackage, stage: &Path, catalog: &Catalog, programs: &Programs) {
    for file in &package.files {
        let what = format!("{} {}", package.name, file.path);
        let at = stage.join(file.path.trim_start_matches('/'));
        if let Some(parent) = at.parent() {
            mkdir(parent);
        }
        if file.dir {
            mkdir(&at);
            fs::set_permissions(&at, fs::Permissions::from_mode(file.mode.unwrap_or(0o755))).expect("chmod");
            continue;
        }
        if let Some(target) = &file.link {
            symlink(target, &at).unwrap_or_else(|e| panic!("{what}: symlink: {e}"));
            continue;
        }
        let content = match (&file.built, &file.data, &file.text, file.bytes) {
            (Some(program), None, None, None) => read(&programs.path(program)),
            (None, Some(name), None, None) => catalog.data[name].clone(),
            (None, None, Some(text), None) => text.as_bytes().to_vec(),
            (None, None, None, Some(n)) => filler(&what, n),
            _ => panic!("catalog.toml: {what}: give exactly one of built, data, text, bytes, link, dir"),
        };
        let content = match file.pad_to {
            Some(n) => padded(&content, n, &what),
            None => content,
        };
        let mut out = fs::File::create(&at).unwrap_or_else(|e| panic!("{what}: create: {e}"));
        out.write_all(&content).unwrap_or_else(|e| panic!("{what}: write: {e}"));
        fs::set_permissions(&at, fs::Permissions::from_mode(file.mode.unwrap_or(0o644))).expect("chmod");
    }
}
