//! Smoke tests of the sandbox host harness itself (tests/sandbox/): hosts
//! build, the real apk accepts the local signed repository and behaves as
//! FACTS.md says, the stand-ins keep state the way the real tools do, and
//! tree() sees every change.

mod sandbox;

use std::collections::BTreeSet;
use std::process::Output;

use sandbox::{Host, Profile};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` and asserts it succeeds; returns stdout.
fn ok(host: &Host, cmd: &str) -> String {
    let out = host.run(cmd, &[]);
    assert!(out.status.success(), "`{cmd}` failed: {}\n{}", stdout(&out), stderr(&out));
    stdout(&out)
}

#[test]
fn guide_host_is_provisioned_from_the_local_signed_repository() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let out = host.run("apk info -e openssh-server cloud-init nosuchpkg", &[]);
    assert_eq!(out.status.code(), Some(1), "one name is not installed");
    assert_eq!(stdout(&out), "openssh-server\ncloud-init\n");
    // The only repository is the local one, trusted through /etc/apk/keys.
    assert_eq!(host.read("/etc/apk/repositories"), "/.sandbox/repo\n");
    assert!(host.exists("/etc/apk/keys/mingen-sandbox.rsa.pub"));
    let out = host.run("apk --no-network search -x dropbear", &[]);
    assert!(stderr(&out).is_empty(), "no untrusted-signature warning: {}", stderr(&out));
    assert!(stdout(&out).starts_with("dropbear-2025.88-r1"), "{}", stdout(&out));
    assert_eq!(host.read("/etc/alpine-release"), "3.23.6\n");
    assert!(host.read("/etc/os-release").contains("VERSION_ID=3.23.6\n"));
    // Real configuration bytes from ../shared, through packages and overlay.
    assert_eq!(host.read("/etc/conf.d/syslog"), "SYSLOGD_OPTS=\"-t\"\n");
    assert!(host.read("/etc/conf.d/ntpd").contains("NTPD_OPTS=\"-N -p pool.ntp.org\""));
    assert!(host.read("/usr/lib/sysctl.d/00-alpine.conf").contains("net.ipv6.conf.all.use_tempaddr = 2"));
    assert!(!host.exists("/lib/sysctl.d/00-alpine.conf"));
    assert!(host.read("/etc/inittab").contains("\nttyS0::respawn:"));
    assert!(host.exists("/etc/mkinitfs/features.d/memdisk.modules"), "3.23 features");
    // The real 3.23.6 userland, its container build undone (FACTS.md).
    assert!(ok(&host, "apk --version").starts_with("apk-tools 3.0.8"));
    assert!(ok(&host, "busybox --help 2>&1 | head -n 1").starts_with("BusyBox v1.37.0"));
    assert!(!host.exists("/.dockerenv") && !host.exists("/etc/init.d/setup-dns"));
    assert!(!host.read("/etc/rc.conf").contains("rc_sys=\"lxc\""));
    assert_eq!(host.read("/etc/modules"), "af_packet\nipv6\n");
    assert!(host.read("/etc/fstab").contains("\nLABEL=/\t/\text4\t"));
    // The special modes apk's database records (the image's cached tree lacks them).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(host.host_path(p)).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode("/usr/bin/sudo"), 0o4755);
    assert_eq!(mode("/tmp"), 0o1777);
    // Building leaves no calls behind.
    assert!(host.calls().is_empty(), "{:?}", host.calls());
}

#[test]
fn apk_del_with_an_unknown_name_removes_nothing() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let before = host.installed();
    let out = host.run("apk del bash cloud-init-nonexistent", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("No such package: cloud-init-nonexistent"), "{}", stderr(&out));
    assert_eq!(host.installed(), before);
    assert!(host.exists("/bin/bash"));
}

#[test]
fn guide_package_removals_keep_what_is_still_needed() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let du_before = host.du_kb();
    // Stage 3: cloud-init and Python, with the guide's own command line.
    ok(
        &host,
        r#"apk del $(grep "^P:" /lib/apk/db/installed | sed 's/^P://' | grep -E "^(cloud-init|cloud-utils|py3-|python3|pyc)")"#,
    );
    assert!(!host.installed().iter().any(|p| p.starts_with("py3-") || p.starts_with("python3")));
    assert!(!host.exists("/etc/init.d/cloud-init"));
    // The literal run leaves the runlevel links dangling.
    assert!(host.runlevels().contains(&("default".into(), "cloud-final".into())));
    // Stage 4.
    ok(&host, "apk del chrony chrony-openrc");
    ok(
        &host,
        "apk del bash sudo doas nvme-cli syslinux mtools numactl curl e2fsprogs-extra partx qemu-guest-agent qemu-guest-agent-openrc",
    );
    let out = host.run(
        "apk del readline gdbm mpdecimal sqlite-libs yaml p11-kit libtasn1 gnutls nettle gmp libidn2 \
         libunistring libexpat libedit libffi shadow tzdata libseccomp libncursesw libpanelw ncurses-terminfo-base",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    // apk-tools 3 names the world entry that still needs a package.
    assert!(text.contains("not removed due to:\n  libedit: openssh\n"), "{text}");
    assert!(text.contains("\n  libncursesw: openssh\n"), "{text}");
    let installed = host.installed();
    assert!(installed.contains("libedit"), "openssh-client-default still needs it");
    assert!(installed.contains("libncursesw"), "libedit still needs it");
    assert!(!installed.contains("gnutls") && !installed.contains("tzdata"));
    assert!(!installed.contains("libseccomp"), "nothing left needs it (the real kmod does not)");
    ok(&host, "apk del dhcpcd dhcpcd-openrc");
    assert!(!host.exists("/etc/init.d/dhcpcd"));
    let du_after = host.du_kb();
    assert!(du_after + 8_000 < du_before, "du {du_before} KiB -> {du_after} KiB");
}

#[test]
fn apk_del_of_a_needed_package_reports_not_removed_due_to() {
    if !sandbox::require() {
        return;
    }
    // The real apk-tools 3 and the image's real packages: zlib is needed by
    // apk-tools (libapk), kmod and others.
    let host = Host::build("guide");
    host.run("apk add --quiet zlib", &[]);
    let out = host.run("apk del zlib", &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("not removed due to:\n  zlib: "), "{text}");
    assert!(host.installed().contains("zlib"));
    // The same on the 3.22 host (apk-tools 2.14, the stand-ins' invented kmod -> libseccomp).
    let old = Host::build("alpine-3.22");
    let out = old.run("apk del libseccomp", &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("not removed due to:\n  libseccomp: "), "{text}");
    assert!(old.installed().contains("libseccomp"));
}

/// apk-tools 3 on the image (FACTS.md): removing e2fsprogs-extra purges
/// e2fsprogs too when e2fsprogs is not in the world file, as on the image
/// itself; with e2fsprogs in the world file (the guide's cloud image) it stays.
/// (cloud-init needs e2fsprogs-extra, so it goes in the same transaction.)
#[test]
fn apk_del_e2fsprogs_extra_purges_e2fsprogs_unless_it_is_in_world() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    assert!(host.world().contains(&"e2fsprogs".to_string()));
    ok(&host, "apk del --quiet e2fsprogs-extra cloud-init");
    assert!(!host.installed().contains("e2fsprogs-extra"));
    assert!(host.installed().contains("e2fsprogs") && host.exists("/sbin/e2fsck"));
    let host = Host::build("guide");
    ok(&host, "sed -i '/^e2fsprogs$/d' /etc/apk/world");
    let out = ok(&host, "apk del e2fsprogs-extra cloud-init");
    assert!(out.contains("Purging e2fsprogs ("), "{out}");
    assert!(!host.installed().contains("e2fsprogs") && !host.exists("/sbin/e2fsck"));
}

#[test]
fn apk_add_dropbear_pulls_its_init_script_through_install_if() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    assert!(!host.exists("/etc/init.d/dropbear"));
    ok(&host, "apk add dropbear dropbear-convert");
    let installed = host.installed();
    for p in ["dropbear", "dropbear-openrc", "dropbear-convert"] {
        assert!(installed.contains(p), "{p} not installed");
    }
    assert!(host.world().contains(&"dropbear".to_string()));
    assert!(!host.world().contains(&"dropbear-openrc".to_string()));
    assert!(host.read("/etc/init.d/dropbear").contains("command=/usr/sbin/dropbear"));
    assert!(host.read("/etc/conf.d/dropbear").contains("DROPBEAR_OPTS=\"\""));
    // The guide's switch, with the host keys carried over first.
    ok(
        &host,
        "for t in rsa ecdsa ed25519; do dropbearconvert openssh dropbear /etc/ssh/ssh_host_${t}_key /etc/dropbear/dropbear_${t}_host_key; done",
    );
    ok(&host, r#"sed -i 's/^DROPBEAR_OPTS=.*/DROPBEAR_OPTS="-s -p 22"/' /etc/conf.d/dropbear"#);
    ok(&host, "rc-service sshd stop && rc-service dropbear start");
    let started_with = host.calls().into_iter().find(|c| c.program == "dropbear").expect("dropbear ran");
    assert_eq!(started_with.args, ["-s", "-p", "22"]);
    assert!(host.started().contains("dropbear") && !host.started().contains("sshd"));
    let key = host.read("/etc/dropbear/dropbear_ed25519_host_key");
    assert!(key.starts_with("sandbox dropbear key: converted from /etc/ssh/ssh_host_ed25519_key"), "{key}");
    let programs: Vec<String> = host.calls().iter().map(|c| c.program.clone()).collect();
    assert!(!programs.contains(&"dropbearkey".to_string()), "no fresh keys: {programs:?}");
}

#[test]
fn dropbear_without_converted_keys_gets_fresh_ones() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let out = host.run("rc-service dropbear start", &[]);
    assert_eq!(out.status.code(), Some(1), "no init script yet");
    ok(&host, "apk add dropbear && rc-service dropbear start");
    assert!(host.read("/etc/dropbear/dropbear_rsa_host_key").contains("FRESH rsa"));
    let lines: Vec<String> = host.calls().iter().map(|c| c.line()).collect();
    assert!(lines.contains(&"dropbearkey -t ecdsa -f /etc/dropbear/dropbear_ecdsa_host_key".to_string()), "{lines:?}");
}

#[test]
fn rc_update_keeps_runlevels_as_symlinks_and_logs_calls() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let sshd = ("default".to_string(), "sshd".to_string());
    assert!(host.runlevels().contains(&sshd));
    assert_eq!(
        std::fs::read_link(host.root().join("etc/runlevels/default/sshd")).expect("link"),
        std::path::PathBuf::from("/etc/init.d/sshd")
    );
    ok(&host, "rc-update del sshd default");
    assert!(!host.runlevels().contains(&sshd));
    let out = host.run("rc-update del sshd default", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not in the runlevel"), "{}", stderr(&out));
    let out = host.run("rc-update add nosuchsvc default", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"));
    // `add` without a level uses the current one (default); twice is fine.
    ok(&host, "rc-update add local && rc-update add local");
    assert!(host.runlevels().contains(&("default".into(), "local".into())));
    let lines: Vec<String> = host.calls().iter().map(|c| c.line()).collect();
    assert_eq!(
        lines,
        [
            "rc-update del sshd default",
            "rc-update del sshd default",
            "rc-update add nosuchsvc default",
            "rc-update add local",
            "rc-update add local"
        ]
    );
    host.clear_calls();
    assert!(host.calls().is_empty());
}

#[test]
fn rc_service_tracks_started_services() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let want: BTreeSet<String> = host.profile().started.iter().cloned().collect();
    assert_eq!(host.started(), want);
    ok(&host, "rc-service chronyd status");
    ok(&host, "rc-service chronyd stop");
    assert_eq!(host.run("rc-service chronyd status", &[]).status.code(), Some(3));
    ok(&host, "rc-service ntpd start");
    assert!(host.started().contains("ntpd"));
    // Removing the daemon removes its init script (install_if) ...
    ok(&host, "apk del chrony");
    assert!(!host.exists("/etc/init.d/chronyd"));
    assert_eq!(host.run("rc-service chronyd start", &[]).status.code(), Some(1));
    // ... and a service whose `command=` binary is gone cannot start.
    let out = host.run("rm /usr/bin/qemu-ga && rc-service qemu-guest-agent restart", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/usr/bin/qemu-ga does not exist"), "{}", stderr(&out));
    assert!(!host.started().contains("qemu-guest-agent"));
    // The rc-status stand-in reports the same state.
    let status = ok(&host, "rc-status default");
    assert!(status.contains("sshd") && status.contains("started"), "{status}");
}

/// Whether `files` (an initramfs) holds the kernel module NAME.
fn has_module(files: &std::collections::BTreeMap<String, Vec<u8>>, name: &str) -> bool {
    files
        .keys()
        .any(|p| p.contains("/modules/") && p.rsplit('/').next().is_some_and(|f| f.starts_with(&format!("{name}.ko"))))
}

#[test]
fn real_mkinitfs_builds_from_the_kernel_modules_and_modprobe_config() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("sda");
    let kver = sandbox::image::KERNEL_VERSION;
    assert_eq!(host.read("/usr/share/kernel/virt/kernel.release"), format!("{kver}\n"));
    assert!(host.exists(&format!("/lib/modules/{kver}/kernel/drivers/scsi/virtio_scsi.ko.gz")));
    assert!(host.exists("/boot/vmlinuz-virt"));
    // The host's initramfs, built at provisioning with the package default features.
    assert!(
        host.read("/etc/mkinitfs/mkinitfs.conf")
            .contains("features=\"ata base cdrom ext4 keymap kms mmc nvme raid scsi usb virtio\"")
    );
    let initramfs = host.initramfs();
    assert!(has_module(&initramfs, "virtio_scsi") && has_module(&initramfs, "sd_mod"));
    // The guide's literal stage 1 on this virtio-scsi host.
    host.write("/etc/modprobe.d/blacklist-unnecessary.conf", "blacklist drm\ninstall loop /bin/true\n");
    ok(&host, r#"sed -i 's/^features=.*/features="base ext4 virtio"/' /etc/mkinitfs/mkinitfs.conf"#);
    // Bare `mkinitfs` uses `uname -r`: the machine's kernel, not the host's.
    let out = host.run("mkinitfs", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("does not exist") || stderr(&out).contains("does not exist"), "{}", stderr(&out));
    ok(&host, &format!("mkinitfs {kver}"));
    let initramfs = host.initramfs();
    assert!(!has_module(&initramfs, "virtio_scsi"), "the sda host lost its disk driver");
    assert!(!has_module(&initramfs, "sd_mod"));
    assert!(has_module(&initramfs, "virtio_blk") && has_module(&initramfs, "ext4"));
    assert_eq!(
        initramfs.get("etc/modprobe.d/blacklist-unnecessary.conf").map(Vec::as_slice),
        Some(b"blacklist drm\ninstall loop /bin/true\n".as_slice())
    );
    // The real tool runs behind a recorder.
    let calls: Vec<String> = host.calls().iter().map(|c| c.line()).collect();
    assert_eq!(calls, ["mkinitfs", &format!("mkinitfs {kver}")]);
    // Same inputs, same bytes (SOURCE_DATE_EPOCH is set in every run).
    let first = std::fs::read(host.host_path("/boot/initramfs-virt")).expect("read");
    ok(&host, &format!("mkinitfs {kver}"));
    assert!(std::fs::read(host.host_path("/boot/initramfs-virt")).expect("read") == first);
}

#[test]
fn mkinitfs_stand_in_records_kernel_features_and_modprobe_config_on_322() {
    if !sandbox::require_for("alpine-3.22") {
        return;
    }
    let host = Host::build("alpine-3.22");
    let kver = host.read("/usr/share/kernel/virt/kernel.release");
    assert_eq!(kver, "6.12.58-0-virt\n");
    assert!(host.exists("/lib/modules/6.12.58-0-virt/modules.dep"));
    assert!(host.exists("/boot/vmlinuz-virt"));
    // Provisioning ran it with the package default features.
    let note = |host: &Host| String::from_utf8(host.initramfs()["sandbox-initramfs"].clone()).expect("text");
    assert!(note(&host).contains("\nfeatures=ata base cdrom ext4 keymap kms mmc nvme raid scsi usb virtio\n"));
    assert!(has_module(&host.initramfs(), "virtio_scsi"));
    host.write("/etc/modprobe.d/blacklist-unnecessary.conf", "blacklist drm\ninstall loop /bin/true\n");
    ok(&host, r#"sed -i 's/^features=.*/features="base ext4 virtio"/' /etc/mkinitfs/mkinitfs.conf"#);
    let out = host.run("mkinitfs", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("does not exist"));
    ok(&host, "mkinitfs $(cat /usr/share/kernel/virt/kernel.release)");
    assert_eq!(note(&host), "kernel=6.12.58-0-virt\nfeatures=base ext4 virtio\n");
    let files = host.initramfs();
    assert!(!has_module(&files, "virtio_scsi"), "the sda host lost its disk driver");
    assert!(has_module(&files, "virtio_blk"));
    assert_eq!(
        files.get("etc/modprobe.d/blacklist-unnecessary.conf").map(Vec::as_slice),
        Some(b"blacklist drm\ninstall loop /bin/true\n".as_slice())
    );
    let calls = host.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].program, "mkinitfs");
    assert_eq!(calls[1].args, ["6.12.58-0-virt"]);
    let first = host.initramfs();
    ok(&host, "mkinitfs 6.12.58-0-virt");
    assert_eq!(host.initramfs(), first, "same inputs, same content");
}

#[test]
fn update_extlinux_writes_the_real_format() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    let conf = host.read("/boot/extlinux.conf");
    assert!(
        conf.contains("\n  APPEND root=LABEL=/ modules=sd-mod,usb-storage,ext4 console=ttyS0,115200n8 quiet\n"),
        "{conf}"
    );
    // Fed the configuration the real update-extlinux was run with, the
    // stand-in writes what it wrote (but for the version in the header).
    let alpine = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/alpine/files/_variants");
    let used = std::fs::read_to_string(alpine.join("update-extlinux.conf.used-for-generation")).expect("read");
    let real = std::fs::read_to_string(alpine.join("boot-extlinux.conf.generated")).expect("read");
    host.write("/etc/update-extlinux.conf", &used);
    ok(&host, "update-extlinux");
    let ours = host.read("/boot/extlinux.conf");
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&ours), body(&real));
    // The guide's edit of the persistent config, then a regeneration.
    ok(&host, r#"sed -i 's/^modules=.*/modules=sd-mod,ext4/' /etc/update-extlinux.conf && update-extlinux"#);
    assert!(host.read("/boot/extlinux.conf").contains(
        "  APPEND root=UUID=1aaef596-4ea8-4f43-95f3-089262e88d90 modules=sd-mod,ext4 quiet rootfstype=ext4\n"
    ));
    assert_eq!(host.calls().iter().filter(|c| c.program == "update-extlinux").count(), 2);
}

#[test]
fn sshd_stand_in_reports_the_effective_port_and_password_setting() {
    if !sandbox::require() {
        return;
    }
    let guide = Host::build("guide");
    let t = ok(&guide, "sshd -T");
    assert!(t.contains("port 22\n") && t.contains("passwordauthentication yes\n"), "{t}");
    let custom = Host::build("ssh-2222");
    let t = ok(&custom, "sshd -T");
    assert!(t.contains("port 2222\n") && t.contains("passwordauthentication no\n"), "{t}");
    // A drop-in read through Include wins over the main file, as in sshd.
    custom.write("/etc/ssh/sshd_config.d/10-port.conf", "Port 2200\n");
    assert!(ok(&custom, "sshd -T").contains("port 2200\n"));
}

#[test]
fn run_uses_a_clean_env_and_a_private_network() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("ipv6");
    let out = host.run_script("#!/bin/sh\necho \"$PATH|$FOO|${HOME:-unset}\"\n", &[("FOO", "bar")]);
    assert_eq!(stdout(&out), "/usr/sbin:/usr/bin:/sbin:/bin|bar|unset\n");
    assert!(host.exists("/root/script.sh"));
    let addrs = ok(&host, "ip addr show eth0");
    assert!(addrs.contains("inet 203.0.113.5/24") && addrs.contains("inet6 2001:db8::5/64"), "{addrs}");
    assert!(ok(&host, "ip route").contains("default via 203.0.113.1 dev eth0"));
    let links = ok(&host, "ls /sys/class/net 2>/dev/null; ip -o link | cut -d: -f2");
    assert_eq!(links.split_whitespace().collect::<Vec<_>>().len(), 3, "lo, eth0, its peer only: {links}");
    assert!(host.read("/proc/net/if_inet6").contains("20010db8000000000000000000000005 02 40 00 80     eth0"));
}

#[test]
fn tree_is_reproducible_and_sees_a_one_byte_change() {
    if !sandbox::require() {
        return;
    }
    // Two independent provisionings, no shared template.
    let a = Host::build_fresh("guide");
    let b = Host::build_fresh("guide");
    let (ta, tb) = (a.tree(), b.tree());
    assert!(ta.len() > 800, "{} paths", ta.len());
    let diff = ta.diff(&tb);
    assert!(diff.is_empty(), "two builds differ:\n{diff}");
    // The template copy is identical too.
    assert!(Host::build("guide").tree().diff(&ta).is_empty());
    // One byte.
    ok(&b, "printf x >> /etc/conf.d/syslog");
    let diff = ta.diff(&b.tree());
    assert!(diff.added.is_empty() && diff.removed.is_empty());
    assert_eq!(diff.changed.len(), 1, "{diff}");
    assert_eq!(diff.changed[0].0, "/etc/conf.d/syslog");
    assert!(diff.to_string().starts_with("~ /etc/conf.d/syslog: file 18B"), "{diff}");
    // Excluded paths: the call log and the script do not count.
    b.run_script("rc-update -u", &[]);
    assert_eq!(b.calls().len(), 1);
    assert_eq!(ta.diff(&b.tree()).changed.len(), 1);
    // A mode change and a removal do.
    ok(&a, "chmod 600 /etc/hostname && rm /etc/motd");
    let diff = ta.diff(&a.tree());
    assert_eq!(diff.removed, ["/etc/motd"]);
    assert_eq!(diff.changed.len(), 1);
}

#[test]
fn every_profile_builds_with_its_own_facts() {
    if !sandbox::require() {
        return;
    }
    let names = Profile::all();
    for want in [
        "guide",
        "sda",
        "alpine-3.22",
        "dhcp",
        "ipv6",
        "ssh-2222",
        "grub-uefi",
        "efi-stub",
        "xen-hvm",
        "xen-pv",
        "diskless",
    ] {
        assert!(names.iter().any(|n| n == want), "profile {want} missing");
    }
    for name in &names {
        let host = Host::build(name);
        let p = host.profile().clone();
        let mounts = host.read("/proc/mounts");
        let diskless = mounts.starts_with("tmpfs / tmpfs ");
        if diskless {
            // Diskless: the root is a tmpfs, the modules are the modloop's.
            assert!(mounts.contains(" /.modloop squashfs ro,"), "{name}: {mounts}");
            assert!(ok(&host, "readlink /lib/modules").trim() == "/.modloop/modules", "{name}: /lib/modules");
        } else {
            // The root is the disk itself, or one of its partitions (vda2, xvda1, nvme0n1p1).
            let root = mounts.split_whitespace().next().unwrap_or_default();
            let partition = root.strip_prefix(&format!("/dev/{}", p.disk)).unwrap_or("?");
            let number = partition.strip_prefix('p').unwrap_or(partition);
            assert!(partition.is_empty() || number.parse::<u32>().is_ok(), "{name}: {mounts}");
            assert!(mounts.lines().next().is_some_and(|l| l.ends_with(" / ext4 rw,relatime 0 0")), "{name}: {mounts}");
            assert!(ok(&host, "df /").contains(&format!("/dev/{}", p.disk)), "{name}: busybox df");
        }
        assert_eq!(host.read(&format!("/sys/block/{}/queue/read_ahead_kb", p.disk)), "8192\n");
        assert_eq!(host.read("/etc/alpine-release"), format!("{}\n", p.alpine_release));
        let want: BTreeSet<(String, String)> =
            p.runlevels.iter().flat_map(|(l, s)| s.iter().map(move |s| (l.clone(), s.clone()))).collect();
        assert_eq!(host.runlevels(), want, "{name}");
        for w in &p.world {
            // What the profile's own history removed (a diskless host's kernel package).
            if p.run.iter().any(|c| c.starts_with("apk del") && c.split_whitespace().any(|a| a == w)) {
                assert!(!host.installed().contains(w), "{name}: {w} is still installed");
                continue;
            }
            assert!(host.world().contains(w), "{name}: {w} not in world");
            assert!(host.installed().contains(w), "{name}: {w} not installed");
        }
        let sysfs = host.read("/etc/init.d/sysfs");
        assert!(sysfs.contains("\n\t\t\tmount -n -t debugfs -o ${sysfs_opts} debugfs /sys/kernel/debug\n"));
        let tracefs = sysfs.contains("\n\t\t\tmount -n -t tracefs -o ${sysfs_opts} tracefs /sys/kernel/tracing\n");
        assert_eq!(tracefs, p.release == sandbox::Release::V3_23, "{name}: tracefs block");
        assert!(ok(&host, "free").contains("Mem:"), "{name}: busybox free");
        eprintln!("sandbox: profile `{name}`: {} KiB", host.du_kb());
    }
    let old = Host::build("alpine-3.22");
    assert!(old.read("/etc/os-release").contains("PRETTY_NAME=\"Alpine Linux v3.22\""));
    assert!(!old.exists("/etc/mkinitfs/features.d/memdisk.modules"), "3.22 features.d");
    assert!(old.installed().contains("openrc"));
    assert!(ok(&old, "apk info -e -v openrc").starts_with("openrc-0.62.6-r0"));
    let dhcp = Host::build("dhcp");
    assert!(dhcp.read("/etc/network/interfaces").contains("iface eth0 inet dhcp\n"));
    let guide = Host::build("guide");
    assert!(guide.read("/etc/network/interfaces").contains("iface eth0 inet static\n\taddress 203.0.113.5/24\n"));
    assert!(guide.read("/proc/net/if_inet6").lines().all(|l| !l.starts_with("2")));
    let key = guide.read("/etc/ssh/ssh_host_ed25519_key");
    assert!(key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
}

#[test]
fn reboot_only_records() {
    if !sandbox::require() {
        return;
    }
    let host = Host::build("guide");
    ok(&host, "reboot");
    let calls = host.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].program, "reboot");
    assert!(calls[0].args.is_empty());
}

#[test]
fn stand_ins_pass_shellcheck() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox/standins");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("read standins").flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let out = match std::process::Command::new("shellcheck").args(["-s", "sh"]).args(&files).output() {
        Ok(out) => out,
        Err(_) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("sandbox: skipping: shellcheck is not installed");
            return;
        }
        Err(e) => panic!("shellcheck: {e}"),
    };
    assert!(out.status.success(), "{}", stdout(&out));
}
