//! The real-boot bench's package repository, proven on the real Alpine 3.23.6 userland: in
//! a chroot of a copy of the image, the image's own apk-tools 3 trusts the signed index
//! (and nothing unsigned), installs OpenSSH, dropbear and the cloud image's stand-ins with
//! their scripts and `-openrc` packages, the built programs run there, and `apk del`
//! removes it all again; and the image's own packages, rebuilt into the same repository,
//! come back after their removal as undo.sh brings them back, with the kernel's modules.

mod common;
mod sandbox;
use sandbox::image;
#[path = "realboot/mod.rs"]
mod realboot;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use realboot::packages;

/// Where the repository sits in the chroot (the bench guest reaches it over HTTP instead).
const GUEST_REPO: &str = "/var/lib/bench-repo";

/// Mount /dev and /proc in the chroot at $1, in a private mount, network and pid namespace:
/// whatever runs there (a daemon too) ends with it, and the host's network is out of reach.
const NAMESPACE: &str = "mount --rbind /dev \"$1/dev\" && mount -t proc proc \"$1/proc\" && ip link set lo up";

/// Run SCRIPT with the host's sh inside NAMESPACE; its arguments are ARGS, the chroot first.
fn in_namespace(script: &str, args: &[&OsStr]) -> Output {
    Command::new("unshare")
        .args(["--mount", "--net", "--pid", "--fork", "--propagation", "private", "sh", "-c"])
        .arg(format!("{NAMESPACE} || exit 1\n{script}"))
        .arg("namespace")
        .args(args)
        .output()
        .expect("run unshare")
}

/// Run SCRIPT with the image's /bin/sh in a chroot of ROOT, inside NAMESPACE.
fn in_chroot(root: &Path, script: &str) -> Output {
    in_namespace("exec chroot \"$1\" /bin/sh -c \"$2\"", &[root.as_os_str(), OsStr::new(script)])
}

/// In NAMESPACE, in the chroot at $1: sshd on port 2222 (its default policy), dropbear on
/// 2223, and sshd on 2224 with root's password allowed. A key login (key $2, known_hosts $3,
/// strict checking) to sshd and dropbear with each host key algorithm prints the release; then
/// root's password, right ($4 prints it) and wrong ($5), on each port: `in` or `refused`.
const LOGINS: &str = r#"chroot "$1" /usr/sbin/sshd -p 2222 && chroot "$1" /usr/sbin/dropbear -p 127.0.0.1:2223 &&
	chroot "$1" /usr/sbin/sshd -p 2224 -o PermitRootLogin=yes || exit 1
for port in 2222 2223; do
	for algorithm in rsa-sha2-256 ecdsa-sha2-nistp256 ssh-ed25519; do
		release=$(ssh -i "$2" -o UserKnownHostsFile="$3" -o StrictHostKeyChecking=yes -o BatchMode=yes \
			-o HostKeyAlgorithms="$algorithm" -p "$port" root@127.0.0.1 cat /etc/alpine-release) || exit 1
		echo "key login on $port with $algorithm: $release"
	done
done
password() {
	if SSH_ASKPASS="$1" SSH_ASKPASS_REQUIRE=force ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no \
		-o PubkeyAuthentication=no -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 \
		-p "$3" root@127.0.0.1 true </dev/null >/dev/null 2>&1; then
		echo "$2 password on $3: in"
	else
		echo "$2 password on $3: refused"
	fi
}
for port in 2222 2223 2224; do
	password "$4" right "$port"
	password "$5" wrong "$port"
done"#;

/// In NAMESPACE, the OpenRC services of the chroot at $1 run by its own OpenRC (with a fresh
/// /run, dependencies aside), from no host keys: each started daemon runs, sshd makes way
/// for dropbear, every daemon stops; then cloud-init's result and the processes left.
const SERVICES: &str = r#"R=$1
rc() { chroot "$R" /sbin/rc-service --nodeps "$@" || exit 1; }
running() { kill -0 "$(cat "$R/run/$1.pid")" || exit 1; }
mount -t tmpfs tmpfs "$R/run" && mkdir "$R/run/openrc" && touch "$R/run/openrc/softlevel" || exit 1
rm -f "$R"/etc/ssh/ssh_host_* "$R"/etc/dropbear/dropbear_*_host_key
for service in sshd chronyd qemu-guest-agent cloud-init-local cloud-init cloud-config cloud-final cloud-init-hotplugd; do
	rc "$service" start
done
for daemon in sshd chronyd qemu-ga cloud-init-hotplugd; do running "$daemon"; done
rc sshd stop
rc dropbear start
# dropbear writes its pidfile once it has forked.
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s "$R/run/dropbear.pid" ] || sleep 0.5; done
running dropbear
for service in dropbear chronyd qemu-guest-agent cloud-init-hotplugd; do rc "$service" stop; done
cat "$R/run/cloud-init/result.json" && chroot "$R" ps -o comm"#;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Run SCRIPT in the chroot; panic with its output unless it succeeds. Returns its output.
fn ok(root: &Path, script: &str) -> String {
    let out = in_chroot(root, script);
    assert!(out.status.success(), "`{script}` failed ({}):\n{}", out.status, text(&out));
    text(&out)
}

/// The host's tools that drive the chroot and log into it.
fn missing_client_tools() -> Option<String> {
    let tools = [("unshare", "--version"), ("ip", "-V"), ("ssh", "-V"), ("ssh-keygen", "-?")];
    let missing = tools.into_iter().find(|(tool, arg)| Command::new(tool).arg(arg).output().is_err())?;
    Some(format!("`{}` is not installed (util-linux, iproute2, openssh-client)", missing.0))
}

/// The bench repository and a copy of the image's root (`root` in the scratch
/// directory), or None when this cannot run (said through the one skip rule).
fn image_copy() -> Option<(&'static packages::Repository, tempfile::TempDir)> {
    if let Some(why) = image::why_not().or_else(packages::why_not).or_else(missing_client_tools) {
        common::skip::cannot_run("the bench repository", &why);
        return None;
    }
    let repo = packages::repository();
    let work = tempfile::TempDir::new_in(image::cache()).expect("a scratch directory in the cache");
    copy_tree(&image::root(), &work.path().join("root"));
    Some((repo, work))
}

#[test]
fn the_bench_repository_installs_and_removes_on_the_real_userland() {
    let Some((repo, work)) = image_copy() else { return };
    let root = work.path().join("root");
    copy_tree(&repo.dir, &root.join(GUEST_REPO.trim_start_matches('/')));
    fs::write(root.join("etc/apk/repositories"), format!("{GUEST_REPO}\n")).unwrap();

    // Without the bench key, apk refuses the index: the signature is what it trusts.
    let untrusted = in_chroot(&root, "apk add --no-network dropbear");
    assert!(
        !untrusted.status.success(),
        "apk installed from the bench repository without its key:\n{}",
        text(&untrusted)
    );
    assert!(
        text(&untrusted).contains("UNTRUSTED"),
        "apk's refusal names no untrusted signature:\n{}",
        text(&untrusted)
    );

    fs::copy(&repo.public_key, root.join("etc/apk/keys").join(&repo.key_name)).unwrap();
    let mut names: Vec<&str> = packages::CLOUD_IMAGE_PACKAGES.to_vec();
    names.extend(["dropbear", "dropbear-convert"]);
    let added = ok(&root, &format!("apk add --no-network {}", names.join(" ")));
    assert!(!added.contains("UNTRUSTED"), "{added}");
    assert_installed(&root, &added);

    let host_keys = assert_programs_run(&root);
    assert_logins(&root, work.path(), &host_keys);
    assert_services(&root);

    // And apk removes it all: bash's pre-deinstall takes /bin/bash out of /etc/shells.
    ok(&root, &format!("apk del --no-network {}", names.join(" ")));
    let left = in_chroot(&root, &format!("apk info -e {} {}", names.join(" "), SPLIT.join(" ")));
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "still installed:\n{}", text(&left));
    let shells = fs::read_to_string(root.join("etc/shells")).unwrap();
    assert!(!shells.lines().any(|l| l == "/bin/bash"), "/etc/shells still has bash:\n{shells}");
    for path in ["bin/bash", "usr/sbin/sshd", "usr/sbin/dropbear", "etc/init.d/sshd", "usr/lib/libpython3.12.so.1.0"] {
        assert!(!root.join(path).exists(), "/{path} is still there after apk del");
    }
}

/// The image's own packages are in the bench repository, under the identities the bench disk's
/// database gives them (`repack::adopt_identities`): on a copy of the image, what mingen's
/// script removes (curl, sudo, e2fsprogs-extra, dhcpcd, cloud-utils-growpart) installs again,
/// `apk fix --reinstall linux-virt` brings back a removed module (undo.sh's way back from
/// modules-prune), and the kernel upgrade's repository installs linux-virt one build later
/// with the same module tree.
#[test]
fn the_image_packages_come_back_from_the_bench_repository() {
    let Some((repo, work)) = image_copy() else { return };
    let root = work.path().join("root");
    sandbox::repack::adopt_identities(&root, sandbox::Release::V3_23);
    let guest_repo = root.join(GUEST_REPO.trim_start_matches('/'));
    let linked = Command::new("cp").arg("-al").arg(&repo.dir).arg(&guest_repo).status().expect("run cp -al");
    assert!(linked.success(), "cp -al of the repository");
    fs::write(root.join("etc/apk/repositories"), format!("{GUEST_REPO}\n")).unwrap();
    fs::copy(&repo.public_key, root.join("etc/apk/keys").join(&repo.key_name)).unwrap();

    let removed = "curl sudo e2fsprogs-extra dhcpcd cloud-utils-growpart";
    ok(&root, &format!("apk del --no-network --quiet {removed}"));
    assert!(!root.join("usr/bin/curl").exists() && !root.join("usr/bin/sudo").exists(), "apk del left curl or sudo");
    let added = ok(&root, &format!("apk add --no-network {removed} && apk info -e {removed}"));
    for name in removed.split(' ') {
        assert!(added.lines().any(|l| l == name), "{name} did not come back:\n{added}");
    }
    assert!(!added.contains("UNTRUSTED"), "{added}");
    let curl = ok(&root, "curl --version");
    assert!(curl.starts_with("curl "), "curl --version: {curl}");

    // A module removed as modules-prune removes it, brought back by apk as undo.sh asks.
    let kver = fs::read_dir(root.join("lib/modules")).unwrap().flatten().next().expect("a kernel").file_name();
    let kver = kver.to_string_lossy().into_owned();
    let module = format!("lib/modules/{kver}/kernel/fs/btrfs/btrfs.ko.gz");
    let bytes = fs::read(root.join(&module)).unwrap_or_else(|e| panic!("/{module}: {e}"));
    fs::remove_file(root.join(&module)).unwrap();
    let fixed = ok(&root, "apk fix --no-network --reinstall linux-virt");
    assert_eq!(
        fs::read(root.join(&module)).ok(),
        Some(bytes.clone()),
        "apk fix did not bring /{module} back:\n{fixed}"
    );

    // The kernel upgrade: one build later, the same modules, installed over the old build.
    let upgrade = format!("{GUEST_REPO}/upgrade");
    let upgraded = ok(&root, &format!("apk upgrade --no-network --repository {upgrade} linux-virt"));
    let db = fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
    let version = db.split("\n\n").find(|r| r.contains("\nP:linux-virt\n") || r.starts_with("P:linux-virt\n"));
    let version = version.and_then(|r| r.lines().find_map(|l| l.strip_prefix("V:"))).unwrap_or("(none)");
    assert_eq!(version, repo.kernel_upgrade, "apk upgrade did not install the kernel upgrade:\n{upgraded}");
    assert_eq!(fs::read(root.join(&module)).ok(), Some(bytes), "the upgrade's /{module} differs");
}

/// `cp -a` of FROM's contents into a new directory TO.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let copied = Command::new("cp").arg("-a").arg(from.join(".")).arg(to).status().expect("run cp");
    assert!(copied.success(), "cp -a {} {}", from.display(), to.display());
}

/// What comes with the names added, beyond them: Alpine's split of OpenSSH, every `-openrc`
/// package by install_if, and the dependencies of the stand-ins.
const SPLIT: &[&str] = &[
    "openssh-server",
    "openssh-server-common",
    "openssh-server-common-openrc",
    "openssh-keygen",
    "openssh-client-default",
    "openssh-client-common",
    "openssh-sftp-server",
    "dropbear-openrc",
    "chrony-openrc",
    "cloud-init-openrc",
    "qemu-guest-agent-openrc",
    "python3",
    "py3-yaml",
    "readline",
    "gnutls",
];

/// The split, the files of the -openrc packages, the size of the stand-ins, bash's post-install.
fn assert_installed(root: &Path, added: &str) {
    let installed = ok(root, &format!("apk info -e {}", SPLIT.join(" ")));
    for name in SPLIT {
        assert!(installed.lines().any(|l| l == *name), "{name} is not installed:\n{installed}\n{added}");
    }
    for path in [
        "etc/init.d/sshd",
        "etc/conf.d/sshd",
        "etc/ssh/sshd_config",
        "etc/init.d/dropbear",
        "etc/conf.d/dropbear",
        "etc/init.d/chronyd",
        "etc/init.d/cloud-init-local",
        "etc/init.d/cloud-final",
        "etc/init.d/cloud-init-hotplugd",
        "etc/init.d/qemu-guest-agent",
        "usr/lib/ssh/sftp-server",
    ] {
        assert!(root.join(path).exists(), "/{path} is not installed");
    }
    // A cloud image's worth of disk: python3 and its kin are stand-ins of realistic size.
    let python = fs::metadata(root.join("usr/lib/libpython3.12.so.1.0")).unwrap().len();
    assert!(python > 4_000_000, "libpython3.12 is {python} bytes");
    // bash's post-install added it to /etc/shells; it is a working shell.
    let shells = fs::read_to_string(root.join("etc/shells")).unwrap();
    assert!(shells.lines().any(|l| l == "/bin/bash"), "/etc/shells:\n{shells}");
    assert_eq!(ok(root, "/bin/bash -c 'echo $((6 * 7))'").trim(), "42");
}

/// OpenSSH's host key types, as Alpine's sshd makes them with `ssh-keygen -A`.
const HOST_KEY_TYPES: [&str; 3] = ["rsa", "ecdsa", "ed25519"];

/// The built programs run on the real userland. Returns sshd's public host keys (`TYPE BLOB`
/// lines), each converted for dropbear to /etc/dropbear/dropbear_TYPE_host_key (as mingen's
/// script does) and checked to be the same key.
fn assert_programs_run(root: &Path) -> String {
    let keys = ok(root, "ssh-keygen -A && ls /etc/ssh");
    for kind in HOST_KEY_TYPES {
        assert!(keys.contains(&format!("ssh_host_{kind}_key.pub")), "no {kind} host key:\n{keys}");
    }
    ok(root, "/usr/sbin/sshd -t");
    let config = ok(root, "/usr/sbin/sshd -T");
    for line in ["permitrootlogin without-password", "subsystem sftp /usr/lib/ssh/sftp-server", "pidfile /run/sshd.pid"]
    {
        assert!(config.lines().any(|l| l == line), "sshd -T has no `{line}`:\n{config}");
    }
    let version = in_chroot(root, "/usr/sbin/dropbear -V");
    assert!(text(&version).contains("Dropbear v20"), "dropbear -V:\n{}", text(&version));
    let generated = ok(root, "dropbearkey -t ed25519 -f /tmp/k");
    assert!(generated.contains("ssh-ed25519 AAAA"), "{generated}");
    let mut host_keys = String::new();
    for kind in HOST_KEY_TYPES {
        let (from, to) = (format!("/etc/ssh/ssh_host_{kind}_key"), format!("/etc/dropbear/dropbear_{kind}_host_key"));
        let converted = ok(root, &format!("dropbearconvert openssh dropbear {from} {to} && dropbearkey -y -f {to}"));
        let openssh_key = fs::read_to_string(root.join(format!("{}.pub", &from[1..]))).unwrap();
        let host_key: Vec<&str> = openssh_key.split_whitespace().take(2).collect();
        assert!(converted.contains(host_key[1]), "the converted {kind} key is not sshd's:\n{converted}\n{openssh_key}");
        host_keys.push_str(&format!("{}\n", host_key.join(" ")));
    }
    host_keys
}

/// Both servers serve a real key login to OpenSSH's client with each of sshd's host keys
/// (HOST_KEY_TYPES): dropbear presents them once converted, so one known_hosts fits both under
/// strict checking, whichever host key algorithm the client asks for.
/// Root's password: refused by sshd's default policy (prohibit-password), taken by dropbear's
/// and by sshd's when allowed (both check it with musl's crypt()), and a wrong one refused.
fn assert_logins(root: &Path, work: &Path, host_keys: &str) {
    let client_key = work.join("id_ed25519");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&client_key).status();
    assert!(keygen.unwrap().success(), "ssh-keygen for the client key");
    let ssh_dir = root.join("root/.ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy(client_key.with_extension("pub"), ssh_dir.join("authorized_keys")).unwrap();
    let known_hosts = work.join("known_hosts");
    let entries: String = ["2222", "2223"]
        .iter()
        .flat_map(|port| host_keys.lines().map(move |key| format!("[127.0.0.1]:{port} {key}\n")))
        .collect();
    fs::write(&known_hosts, entries).unwrap();
    ok(root, "echo 'root:bench-password' | chpasswd");
    let askpass = |name: &str, password: &str| {
        let path = work.join(name);
        fs::write(&path, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        path
    };
    let (right, wrong) = (askpass("askpass-right", "bench-password"), askpass("askpass-wrong", "not-the-password"));
    let args = [root, &client_key, &known_hosts, &right, &wrong].map(Path::as_os_str);
    let logins = in_namespace(LOGINS, &args);
    let said = String::from_utf8_lossy(&logins.stdout);
    assert!(logins.status.success(), "ssh logins to sshd and dropbear failed:\n{}", text(&logins));
    let key_logins: Vec<&str> = said.lines().filter(|l| l.starts_with("key login on ")).collect();
    let expected: Vec<String> = ["2222", "2223"]
        .iter()
        .flat_map(|port| {
            ["rsa-sha2-256", "ecdsa-sha2-nistp256", "ssh-ed25519"]
                .map(|algorithm| format!("key login on {port} with {algorithm}: {}", image::RELEASE))
        })
        .collect();
    assert_eq!(key_logins, expected, "key logins to sshd (2222) and dropbear (2223):\n{}", text(&logins));
    let passwords: Vec<&str> = said.lines().filter(|l| l.contains(" password on ")).collect();
    let expected = [
        "right password on 2222: refused",
        "wrong password on 2222: refused",
        "right password on 2223: in",
        "wrong password on 2223: refused",
        "right password on 2224: in",
        "wrong password on 2224: refused",
    ];
    assert_eq!(passwords, expected, "root's password on sshd (2222, 2224) and dropbear (2223):\n{}", text(&logins));
}

/// The OpenRC services, run by the image's OpenRC 0.63: sshd and dropbear each make their
/// missing host keys, every daemon starts and stops with nothing left behind, and
/// cloud-final leaves cloud-init's result.
fn assert_services(root: &Path) {
    let services = in_namespace(SERVICES, &[root.as_os_str()]);
    let said = text(&services);
    assert!(services.status.success(), "the OpenRC services:\n{said}");
    assert!(said.contains("\"errors\": []"), "cloud-final wrote no result.json:\n{said}");
    let stdout = String::from_utf8_lossy(&services.stdout);
    let left: Vec<&str> = stdout.lines().skip_while(|l| l.trim() != "COMMAND").skip(1).map(str::trim).collect();
    assert!(
        left.iter().all(|c| ["sh", "ps"].contains(c)),
        "processes left after the services stopped: {left:?}\n{said}"
    );
    for key in [
        "ssh/ssh_host_rsa_key",
        "ssh/ssh_host_ecdsa_key",
        "ssh/ssh_host_ed25519_key",
        "dropbear/dropbear_rsa_host_key",
        "dropbear/dropbear_ecdsa_host_key",
        "dropbear/dropbear_ed25519_host_key",
    ] {
        assert!(root.join("etc").join(key).is_file(), "/etc/{key} was not made by its service:\n{said}");
    }
}
