//! The generated scripts run for real: under Alpine's busybox ash, in a chroot
//! built from the minirootfs, with the real apk (tests/sandbox/). Each scenario
//! reads the resulting files, runlevels, world file and the stand-ins' calls.

mod common;
mod sandbox;

use std::collections::BTreeSet;
use std::process::Output;

use sandbox::Host;

/// A host profile with the mingen flags that describe it truthfully.
struct Case {
    profile: &'static str,
    args: &'static [&'static str],
}

const GUIDE: Case = Case { profile: "guide", args: &[] };
const SDA: Case = Case { profile: "sda", args: &["--disk", "sda"] };
const NVME: Case = Case { profile: "nvme", args: &["--disk", "nvme0n1"] };
const ALPINE_322: Case = Case { profile: "alpine-3.22", args: &["--target", "alpine-3.22-kvm"] };
const DHCP: Case = Case { profile: "dhcp", args: &["--network", "dhcp"] };
const IPV6: Case = Case { profile: "ipv6", args: &["--ipv6", "used"] };
const SSH_2222: Case = Case { profile: "ssh-2222", args: &["--ssh-port", "2222", "--ssh-password-auth", "no"] };
const GRUB_UEFI: Case = Case { profile: "grub-uefi", args: &["--boot-loader", "grub"] };
const EFI_STUB: Case = Case { profile: "efi-stub", args: &["--boot-loader", "efi-stub"] };
const XEN_HVM: Case = Case { profile: "xen-hvm", args: &["--hypervisor", "xen", "--disk", "xvda"] };
const XEN_PV: Case = Case { profile: "xen-pv", args: &["--hypervisor", "xen", "--disk", "xvda"] };
const DISKLESS: Case = Case { profile: "diskless", args: &["--install", "diskless"] };

impl Case {
    /// The value of a fact flag the case gives, or `default`.
    fn fact(&self, flag: &str, default: &'static str) -> &'static str {
        self.args.iter().position(|a| *a == flag).map_or(default, |i| self.args[i + 1])
    }
}

/// The real apk, with each call recorded in the stand-ins' call log: a wrapper
/// in /usr/sbin, which comes before /sbin in the script's PATH.
const APK_RECORDER: &str = "#!/bin/sh\n\
line=apk; for a in \"$@\"; do line=\"$line\t$a\"; done\n\
printf '%s\\n' \"$line\" >> /.sandbox/calls.log\n\
exec /sbin/apk \"$@\"\n";

fn host(case: &Case) -> Host {
    let host = Host::build(case.profile);
    host.write("/usr/sbin/apk", APK_RECORDER);
    let out = host.run("chmod 0755 /usr/sbin/apk", &[]);
    assert!(out.status.success());
    host.clear_calls();
    host
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(host: &Host, script: &str, env: &[(&str, &str)]) -> Output {
    host.run_script(script, env)
}

fn assert_success(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({:?}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
}

/// The calls that change state: everything but status queries and read-only apk.
/// The apk applet of a call (`info`, `add`, `del`...), after apk's global options.
fn apk_applet(call: &sandbox::Call) -> Option<&str> {
    call.args.iter().map(String::as_str).find(|a| !a.starts_with("--"))
}

fn state_changing_calls(host: &Host) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter(|c| {
            let read_only_apk = c.program == "apk"
                && (matches!(apk_applet(c), Some("info" | "audit")) || c.args.iter().any(|a| a == "--simulate"));
            let status = c.program == "rc-service" && c.args.get(1).is_some_and(|a| a == "status");
            let lbu_reads = c.program == "lbu" && c.args.first().is_some_and(|a| a == "status" || a == "list");
            !(read_only_apk || status || lbu_reads)
        })
        .map(|c| c.line())
        .collect()
}

fn apk_transactions(host: &Host) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter(|c| c.program == "apk" && matches!(apk_applet(c), Some("add" | "del")))
        .filter(|c| !c.args.iter().any(|a| a == "--simulate"))
        .map(|c| c.line())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What the guide's end state is for a host described truthfully by `case`.
fn assert_guide_end_state(
    host: &Host,
    case: &Case,
    runlevels_before: &BTreeSet<(String, String)>,
    world_before: &[String],
) {
    let disk = host.profile().disk.clone();
    let disk = disk.as_str();
    let xen = case.fact("--hypervisor", "kvm") == "xen";
    let diskless = case.fact("--install", "sys") == "diskless";

    // Stage 1: the blacklist, the features, the command line in both places, one mkinitfs.
    let blacklist = host.read("/etc/modprobe.d/blacklist-unnecessary.conf");
    for line in [
        "blacklist drm\n",
        "install drm /bin/true\n",
        "blacklist gve\n",
        "install loop /bin/true\n",
        "blacklist qemu_fw_cfg\n",
    ] {
        assert!(blacklist.contains(line), "blacklist lacks {line:?}");
    }
    // Xen's balloon driver is built into linux-virt: there is nothing to blacklist.
    if xen {
        assert!(!host.exists("/etc/modprobe.d/blacklist-balloon.conf"));
    } else {
        let balloon = host.read("/etc/modprobe.d/blacklist-balloon.conf");
        assert_eq!(balloon.lines().last(), Some("blacklist virtio_balloon"));
    }
    // Beyond the guide: QEMU's display driver (whose helpers load when drm is blocked)
    // and AES-NI are blacklisted; gettys stay on ttyS0 and tty1 only (the cloud image's
    // inittab has tty1-tty6 and ttyS0).
    let unused = host.read("/etc/modprobe.d/mingen-unused.conf");
    for line in ["blacklist bochs\n", "blacklist qxl\n", "blacklist aesni_intel\n"] {
        assert!(unused.contains(line), "mingen-unused.conf lacks {line:?}");
    }
    let inittab = host.read("/etc/inittab");
    let gettys: Vec<&str> = inittab
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(":respawn:") && l.contains("getty"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(!gettys.is_empty() && gettys.iter().all(|t| ["tty1", "ttyS0"].contains(t)), "{inittab}");
    if diskless {
        assert_modloop_and_boot_media_untouched(host);
    } else {
        assert_kernel_and_initramfs(host, case, disk);
    }
    assert_installed_and_runlevels(host, case, runlevels_before, world_before);
}

/// Stage 1 on a host installed on a disk: the features, the command line, one
/// mkinitfs, and what the new initramfs holds.
fn assert_kernel_and_initramfs(host: &Host, case: &Case, disk: &str) {
    let xen = case.fact("--hypervisor", "kvm") == "xen";
    let features = match disk {
        "sda" => "base ext4 scsi virtio",
        "nvme0n1" => "base ext4 nvme virtio",
        "xvda" => "base ext4",
        _ => "base ext4 virtio",
    };
    assert_eq!(host.read("/etc/mkinitfs/mkinitfs.conf"), format!("features=\"{features}\"\n"));
    let added = if case.profile == "ipv6" { "audit=0 nowatchdog" } else { "ipv6.disable=1 audit=0 nowatchdog" };
    // Beyond the guide: the memory options follow (no container runtime on these hosts).
    let added = format!("{added} cgroup.memory=nokmem kfence.sample_interval=0");
    assert_kernel_cmdline(host, case, &added);
    if case.fact("--boot-loader", "extlinux") == "extlinux" {
        assert_boot_trial(host, &format!("console=ttyS0,115200n8 quiet {added}"));
    }
    let mkinitfs: Vec<_> = host.calls().into_iter().filter(|c| c.program == "mkinitfs").collect();
    let kver = host.read("/usr/share/kernel/virt/kernel.release");
    assert_eq!(mkinitfs.len(), 1, "mkinitfs runs exactly once");
    assert_eq!(mkinitfs[0].args, vec![kver.trim().to_string()]);
    // The features, read from what the initramfs holds (real on 3.23): scsi keeps
    // the virtio-scsi disk's driver, nvme the NVMe disk's; ata and usb are gone.
    let initramfs = host.initramfs();
    let has = |m: &str| initramfs.keys().any(|p| p.contains("/modules/") && p.contains(&format!("/{m}.ko")));
    assert_eq!(has("virtio_scsi"), disk == "sda", "virtio_scsi in the initramfs ({features})");
    assert_eq!(has("nvme"), disk == "nvme0n1", "nvme in the initramfs ({features})");
    assert!(has("ext4") && !has("usb-storage"), "{features}");
    // On Xen no virtio module at all: the disk's driver, xen-blkfront, is built in.
    let virtio = initramfs.keys().filter(|p| p.contains("/modules/") && p.contains("virtio")).count();
    assert_eq!(virtio == 0, xen, "virtio modules in the initramfs ({features}): {virtio}");
    assert_eq!(has("virtio_blk"), !xen, "{features}");
    let blacklist = initramfs.get("etc/modprobe.d/blacklist-unnecessary.conf").map(|b| text(b)).unwrap_or_default();
    assert!(blacklist.contains("install drm /bin/true"), "the blacklist reaches the initramfs");
    if !xen {
        let balloon = initramfs.get("etc/modprobe.d/blacklist-balloon.conf").map(|b| text(b)).unwrap_or_default();
        assert!(balloon.contains("blacklist virtio_balloon"), "the balloon blacklist reaches the initramfs");
    }
    assert_eq!(host.read(&format!("/sys/block/{disk}/queue/read_ahead_kb")).trim(), "128");
    assert!(
        host.read("/etc/local.d/readahead.start")
            .contains(&format!("echo 128 > /sys/block/{disk}/queue/read_ahead_kb"))
    );
    assert!(host.run("ls -A /var/cache/apk", &[]).stdout.is_empty(), "apk cache cleared");
}

/// Stage 1 on a diskless host: the modloop, the boot configuration and the
/// initramfs stay as they are (no pruning, no mkinitfs, no command line).
fn assert_modloop_and_boot_media_untouched(host: &Host) {
    // Its kernel and initramfs are the boot media's: mkinitfs went with linux-virt.
    assert!(!host.calls().iter().any(|c| c.program == "mkinitfs"), "no mkinitfs on a diskless host");
    assert!(!host.exists("/boot/initramfs-virt") && !host.exists("/etc/mkinitfs/mkinitfs.conf"));
    assert!(host.read("/etc/update-extlinux.conf").contains("\nmodules=sd-mod,usb-storage,ext4\n"));
    // Every module modules.dep names is still on the modloop, which /lib/modules links to.
    let out = host.run(
        "cd /lib/modules/*/ && test -L /lib/modules && awk -F: '{ print $1 }' modules.dep | while read -r m; do test -e \"$m\" || echo \"$m\"; done",
        &[],
    );
    assert_success(&out, "list the modloop's modules");
    assert_eq!(text(&out.stdout), "", "modules gone from the modloop");
    assert!(
        !host.exists("/etc/apk/commit_hooks.d/mingen-modules.hook") && !host.exists("/etc/local.d/readahead.start")
    );
    assert!(!host.exists("/etc/sysctl.d/00-alpine.conf"), "IPv6 stays in a kernel whose command line is not edited");
}

/// Stages 2 to 6, as on every host.
fn assert_installed_and_runlevels(
    host: &Host,
    case: &Case,
    runlevels_before: &BTreeSet<(String, String)>,
    world_before: &[String],
) {
    let ipv6_used = case.profile == "ipv6";
    let dhcp = case.profile == "dhcp";
    let diskless = case.fact("--install", "sys") == "diskless";
    // Stage 2: dropbear in, OpenSSH out, keys carried.
    let installed = host.installed();
    for name in ["dropbear", "dropbear-openrc", "dropbear-convert"] {
        assert!(installed.contains(name), "{name} is installed");
    }
    for key in ["rsa", "ecdsa", "ed25519"] {
        assert!(host.exists(&format!("/etc/dropbear/dropbear_{key}_host_key")), "{key} key converted");
    }
    let opts = match (case.profile, ipv6_used) {
        ("ssh-2222", _) => "-p 0.0.0.0:2222 -s -g",
        (_, true) => "-p 22 -g",
        _ => "-p 0.0.0.0:22 -g",
    };
    assert!(
        host.read("/etc/conf.d/dropbear").contains(&format!("\nDROPBEAR_OPTS=\"{opts}\"\n")),
        "{}",
        host.read("/etc/conf.d/dropbear")
    );
    let started = host.started();
    assert!(started.contains("dropbear") && !started.contains("sshd"));
    assert_eq!(
        host.read("/root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTheSandboxOnly0000000000000 operator@example\n",
        "authorized_keys is left untouched"
    );

    // Stages 3 and 4: what is gone and what stays.
    let removed = |p: &String| {
        p.starts_with("openssh")
            || p.starts_with("cloud-")
            || p.starts_with("py3-")
            || p.starts_with("python3")
            || [
                "chrony",
                "qemu-guest-agent",
                "bash",
                "sudo",
                "doas",
                "nvme-cli",
                "mtools",
                "numactl",
                "curl",
                "e2fsprogs-extra",
                "partx",
                "tzdata",
                "shadow",
                "pyc",
            ]
            .contains(&p.as_str())
            || (!dhcp && (p.starts_with("dhcpcd") || p == "dhclient"))
    };
    // syslinux stays until the boot trial is confirmed, and mtools with it (out of the world).
    assert_eq!(
        installed.iter().filter(|p| removed(p) && *p != "mtools").collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "removed packages are gone"
    );
    // syslinux stays where it is installed until the new boot is confirmed (boot_trial =
    // once); the GRUB and EFI-stub hosts have none.
    assert_eq!(
        installed.contains("syslinux"),
        world_before.iter().any(|p| p == "syslinux"),
        "syslinux stays until the new boot is confirmed"
    );
    assert_eq!(installed.contains("dhcpcd"), dhcp, "dhcpcd stays exactly on a DHCP host");
    if world_before.iter().any(|p| p == "dhclient") {
        assert_eq!(installed.contains("dhclient"), dhcp, "dhclient stays exactly on a DHCP host");
    }
    assert!(installed.contains("busybox"));
    assert_eq!(installed.contains("mkinitfs"), !diskless);
    assert_eq!(installed.contains("linux-virt"), !diskless, "a diskless host's kernel is the boot media's");
    let world: BTreeSet<String> = host.world().into_iter().collect();
    let mut expected_world: BTreeSet<String> = world_before.iter().filter(|p| !removed(p)).cloned().collect();
    expected_world.extend(set(&["dropbear", "dropbear-convert"]));
    assert_eq!(world, expected_world, "/etc/apk/world");

    // Stage 5 and the runlevel changes of the others.
    let mut expected: BTreeSet<(String, String)> = runlevels_before
        .iter()
        .filter(|(level, name)| {
            let off = [
                "sshd",
                "cloud-init-local",
                "cloud-init",
                "cloud-config",
                "cloud-final",
                "cloud-init-hotplugd",
                "chronyd",
                "qemu-guest-agent",
            ]
            .contains(&name.as_str())
                || (level == "boot" && ["acpid", "swap"].contains(&name.as_str()))
                // A diskless host's initramfs puts hwclock back at every boot: it stays.
                || (level == "boot" && name == "hwclock" && !diskless)
                || (!dhcp && name == "dhcpcd");
            !off
        })
        .cloned()
        .collect();
    for name in ["dropbear", "ntpd", "local"] {
        expected.insert(("default".into(), name.into()));
    }
    // osclock provides `clock`, so that OpenRC does not start hwclock for syslog.
    if !diskless {
        expected.insert(("boot".into(), "osclock".into()));
    }
    assert_eq!(host.runlevels(), expected, "runlevels");

    // Stage 6: the IPv6 sysctls are commented out in a copy under /etc, which
    // OpenRC's sysctl reads in place of the /usr/lib file an upgrade may replace.
    let shipped = host.read("/usr/lib/sysctl.d/00-alpine.conf");
    assert!(!shipped.contains("# net.ipv6"), "the shipped file stays as shipped:\n{shipped}");
    if ipv6_used || diskless {
        assert!(!host.exists("/etc/sysctl.d/00-alpine.conf"));
    } else {
        let copy = host.read("/etc/sysctl.d/00-alpine.conf");
        assert_eq!(copy, shipped.replace("net.ipv6", "# net.ipv6"));
    }
    let sysfs = host.read("/etc/init.d/sysfs");
    assert!(sysfs.contains("\t\t\t: #mount -n -t debugfs -o ${sysfs_opts} debugfs /sys/kernel/debug"), "{sysfs}");
    assert!(!sysfs.lines().any(
        |l| l.trim_start().starts_with("mount -n -t debugfs") || l.trim_start().starts_with("mount -n -t tracefs")
    ));
    let syntax = host.run("sh -n /etc/init.d/sysfs", &[]);
    assert_success(&syntax, "sh -n /etc/init.d/sysfs");
    assert!(host.read("/etc/sysctl.d/10-minvps.conf").contains("\nkernel.pid_max = 4096\n"));
    assert_eq!(host.read("/etc/conf.d/syslog"), "SYSLOGD_OPTS=\"-t -C64\"\n");
    assert!(host.exists("/var/lib/mingen/undo.sh") && host.exists("/var/lib/mingen/backup/etc/apk/world"));
}

/// The boot trial (rule boot-trial) on an extlinux host, before the reboot: label virt
/// holds the new command line (OPTS, then panic=10) and initramfs; the default label
/// mingen-previous, the ones from before the run; extlinux boots virt once.
fn assert_boot_trial(host: &Host, opts: &str) {
    // The boot trial: label virt holds the new command line (with panic=10) and initramfs;
    // the default label mingen-previous, the ones from before the run; extlinux boots virt once.
    let extlinux = host.read("/boot/extlinux.conf");
    let old = host.read("/var/lib/mingen/backup/boot/extlinux.conf");
    let label = |conf: &str, name: &str| -> Vec<String> {
        let start =
            conf.lines().position(|l| l == format!("LABEL {name}")).unwrap_or_else(|| panic!("no {name}:\n{conf}"));
        conf.lines().skip(start + 1).take_while(|l| l.starts_with("  ")).map(|l| l.trim().to_string()).collect()
    };
    let new = label(&extlinux, "virt");
    let append = new.iter().find(|l| l.starts_with("APPEND ")).expect("virt's APPEND");
    assert!(append.contains(" modules=sd-mod,ext4 ") && append.ends_with(&format!(" {opts} panic=10")), "{append}");
    assert!(
        new.contains(&"INITRD initramfs-virt".to_string()) && !new.contains(&"MENU DEFAULT".to_string()),
        "{new:?}"
    );
    let fallback = label(&extlinux, "mingen-previous");
    let before = label(&old, "virt");
    assert_eq!(fallback.iter().find(|l| l.starts_with("APPEND ")), before.iter().find(|l| l.starts_with("APPEND ")));
    assert!(fallback.contains(&"MENU DEFAULT".to_string()), "the fallback is the default:\n{extlinux}");
    assert!(fallback.contains(&"INITRD initramfs-virt.mingen-previous".to_string()), "{fallback:?}");
    let bytes = |path: &str| std::fs::read(host.host_path(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(
        bytes("/boot/initramfs-virt.mingen-previous"),
        bytes("/var/lib/mingen/backup/boot/initramfs-virt"),
        "the kept initramfs is the one from before the run"
    );
    let once: Vec<_> = host.calls().into_iter().filter(|c| c.program == "extlinux").collect();
    assert_eq!(once.len(), 1, "extlinux runs once: {once:?}");
    assert_eq!(once[0].args, vec!["--once=virt".to_string(), "/boot".to_string()]);
    assert!(host.read("/var/lib/mingen/boot-trial").contains("label='virt'\n"));
}

/// The kernel command line where the case's boot loader keeps it: usb-storage
/// out of `modules=`, the options `added` at its end; for GRUB also in the
/// grub.cfg that grub-mkconfig made once, GRUB kept, syslinux never installed.
fn assert_kernel_cmdline(host: &Host, case: &Case, added: &str) {
    let grub_mkconfig = host.calls().into_iter().filter(|c| c.program == "grub-mkconfig").count();
    match case.fact("--boot-loader", "extlinux") {
        "extlinux" => {
            let conf = host.read("/etc/update-extlinux.conf");
            assert!(conf.contains("\nmodules=sd-mod,ext4\n"), "{conf}");
            // With the boot trial (the default), extlinux's rule adds panic=10.
            let opts = format!("console=ttyS0,115200n8 quiet {added} panic=10");
            assert!(conf.contains(&format!("\ndefault_kernel_opts=\"{opts}\"\n")), "{conf}");
            let extlinux = host.read("/boot/extlinux.conf");
            // The APPEND lines but the fallback label's, which keeps the one from before.
            let mut fallback = false;
            let append: Vec<&str> = extlinux
                .lines()
                .filter(|l| {
                    if let Some(label) = l.trim_start().strip_prefix("LABEL ") {
                        fallback = label.trim() == "mingen-previous";
                    }
                    !fallback && l.trim_start().starts_with("APPEND ")
                })
                .collect();
            assert!(!append.is_empty());
            for line in append {
                assert!(line.contains(" modules=sd-mod,ext4 ") && line.ends_with(&format!(" {opts}")), "{line}");
                // The cloud image finds its root by LABEL; the edit keeps it as it was.
                assert!(line.trim_start().starts_with("APPEND root=LABEL=/ "), "{line}");
            }
            assert_eq!(grub_mkconfig, 0);
        }
        "grub" => {
            // The cloud image's /etc/default/grub (files/_variants), edited as a list.
            let cmdline = format!("modules=sd-mod,ext4 console=ttyS0,115200n8 {added}");
            let grub = host.read("/etc/default/grub");
            assert!(grub.starts_with(&format!("GRUB_CMDLINE_LINUX_DEFAULT=\"{cmdline}\"\n")), "{grub}");
            assert!(grub.contains("\nGRUB_TIMEOUT=0\n"), "the rest of the file stays: {grub}");
            let cfg = host.read("/boot/grub/grub.cfg");
            let linux: Vec<&str> = cfg.lines().filter(|l| l.trim_start().starts_with("linux")).collect();
            assert!(!linux.is_empty(), "{cfg}");
            for line in linux {
                assert!(line.ends_with(&format!(" {cmdline}")), "grub.cfg: {line}");
            }
            assert_eq!(grub_mkconfig, 1, "grub-mkconfig runs once");
            let installed = host.installed();
            assert!(installed.contains("grub") && installed.contains("grub-efi") && !installed.contains("syslinux"));
            assert!(host.world().contains(&"grub-efi".to_string()), "grub-efi stays in the world file");
            assert!(!host.exists("/boot/extlinux.conf"));
        }
        "efi-stub" => {
            let line = format!(
                "vmlinuz-virt initrd=initramfs-virt root=UUID=0b9e3c4a-5d6f-4e1a-9b2c-3d4e5f607182 \
                 rootfstype=ext4 modules=kms,scsi,virtio console=tty0 {added}\n"
            );
            assert_eq!(host.read("/boot/startup.nsh"), line);
            assert_eq!(grub_mkconfig, 0);
            assert!(!host.exists("/boot/extlinux.conf") && !host.exists("/boot/grub/grub.cfg"));
        }
        other => panic!("no assertions for boot loader {other}"),
    }
}

/// A clean run, a second run, and the end state, for one truthfully described host.
/// Returns the host and the first run's calls (as tab-separated lines).
fn clean_then_again(case: &Case) -> (Host, Vec<String>) {
    let script = common::script(case.args);
    let host = host(case);
    let (runlevels_before, world_before) = (host.runlevels(), host.world());
    let out = run(&host, &script, &[]);
    assert_success(&out, "the clean run");
    assert_guide_end_state(&host, case, &runlevels_before, &world_before);
    let transactions = apk_transactions(&host);
    let apk_calls = host.calls().iter().filter(|c| c.program == "apk").count();
    eprintln!(
        "{}: {apk_calls} apk calls, of which {} change state: {transactions:?}",
        case.profile,
        transactions.len()
    );
    assert_eq!(transactions.len(), 2, "one apk add and one apk del: {transactions:?}");
    assert!(!host.calls().iter().any(|c| c.program == "reboot"), "no reboot unless asked");

    let log_after_first = host.read("/var/log/mingen.log");
    let mut after_first = host.tree();
    let first_calls: Vec<String> = host
        .calls()
        .iter()
        .map(|c| std::iter::once(c.program.clone()).chain(c.args.clone()).collect::<Vec<_>>().join("\t"))
        .collect();
    host.clear_calls();
    let out = run(&host, &script, &[]);
    assert_success(&out, "the second run");
    // Every run appends to its log; nothing else may change.
    let mut after_second = host.tree();
    after_first.0.remove("/var/log/mingen.log");
    after_second.0.remove("/var/log/mingen.log");
    let diff = after_first.diff(&after_second);
    assert!(diff.is_empty(), "the second run changed the tree: {diff:?}");
    let second_log = host.read("/var/log/mingen.log");
    let second_log = second_log.strip_prefix(&log_after_first).expect("the log is appended to");
    let verbs = [
        "write", "take", "put", "install", "remove", "stop", "start", "rebuild", "convert", "create", "empty", "set",
        "stopping",
    ];
    for line in second_log.lines() {
        assert!(
            !verbs.iter().any(|v| line.starts_with(&format!("mingen: {v} "))),
            "the second run made a change: {line}"
        );
    }
    assert!(second_log.contains("mingen: next: reboot"), "{second_log}");
    assert_eq!(state_changing_calls(&host), Vec::<String>::new(), "the second run changes nothing");
    (host, first_calls)
}

#[test]
fn guide_host_clean_run_second_run_and_footprint() {
    if !sandbox::require() {
        return;
    }
    let before = host(&GUIDE).du_kb();
    let (host, _) = clean_then_again(&GUIDE);
    let after = host.du_kb();
    eprintln!("guide host disk footprint: {before} KiB before, {after} KiB after, {} KiB saved", before - after);
    assert!(after < before);

    // The next boot: local runs the one-shot, which writes the report once.
    // (`now`: at once; at boot it waits in the background for the gettys, which the
    // real-boot bench shows.)
    good_boot(&host);
    let out = host.run("sh /etc/local.d/mingen-report.start now && sh /etc/local.d/readahead.start", &[]);
    assert_success(&out, "the boot scripts");
    let report = host.read("/var/lib/mingen/report");
    assert!(report.starts_with("boot: the new boot configuration (label virt) came up"), "{report}");
    for line in ["ram_used_kb: ", "disk_used_kb: ", "ram_taken_kb: ", "still running: ", "modules loaded: "] {
        assert!(report.lines().any(|l| l.starts_with(line)), "no `{line}` line in the report:\n{report}");
    }
    // The budgets are the facts' (the guide's figures by default), each within or over.
    assert!(report.contains("(budget 23552: within)") || report.contains("(budget 23552: over)"), "{report}");
    assert!(report.contains("(budget 73728: within)") || report.contains("(budget 73728: over)"), "{report}");
    let json = host.read("/var/lib/mingen/report.json");
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import json, sys; r = json.load(sys.stdin); print(r['ram'], r['disk'], r['ram_budget_kb'], len(r['modules']) > 0)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(json.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run python3 to read report.json");
    let summary = String::from_utf8_lossy(&parsed.stdout);
    assert!(parsed.status.success() && summary.trim_end().ends_with("23552 True"), "report.json: {json}\n{summary}");
    // Confirmed: virt is the default again, the fallback label and the kept initramfs are
    // gone, and so are syslinux and mtools.
    let extlinux = host.read("/boot/extlinux.conf");
    assert!(extlinux.contains("LABEL virt\n  MENU DEFAULT\n") && !extlinux.contains("mingen-previous"), "{extlinux}");
    assert!(!host.exists("/boot/initramfs-virt.mingen-previous") && !host.exists("/var/lib/mingen/boot-trial"));
    let installed = host.installed();
    assert!(
        !installed.contains("syslinux") && !installed.contains("mtools"),
        "syslinux goes once the boot is confirmed"
    );
    assert!(!host.world().contains(&"syslinux".to_string()));
    assert!(!host.exists("/var/lib/mingen/reboot-pending"), "the boot clears the pending reboot");
    assert_success(&host.run("sh /etc/local.d/mingen-report.start", &[]), "a later boot");
    assert_eq!(host.read("/var/lib/mingen/report"), report, "later boots leave the report alone");
    // After that boot a run has nothing to do, and says so: the confirmed configuration is
    // not tried again (extlinux is gone with syslinux).
    let out = run(&host, &common::script(&[]), &[("MINGEN_REBOOT", "1")]);
    assert_success(&out, "a run after the boot");
    assert!(host.read("/var/log/mingen.log").contains("nothing to do: this host is minimised and has booted since"));
    assert!(!host.calls().iter().any(|c| c.program == "reboot"), "nothing to reboot for");
}

/// The host's files as a good boot of the new label leaves them: the kernel's command line
/// names the new initramfs, eth0 (the default route's) is up, and a server listens on port 22.
fn good_boot(host: &Host) {
    let cmdline = host.read("/proc/cmdline");
    assert!(cmdline.contains("initrd=initramfs-virt "), "{cmdline}");
    host.write("/sys/class/net/eth0/operstate", "up\n");
    host.write(
        "/proc/net/tcp",
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
         0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0\n",
    );
}

/// A failed boot of the new label: the previous configuration booted (its kept initramfs on
/// the command line). The one-shot records the failure and leaves the previous configuration
/// the default; the next run stops, naming what was recorded, and changes nothing; deleting
/// boot-failed lets a run try the new configuration once more.
#[test]
fn after_a_failed_boot_the_previous_configuration_stays_and_nothing_is_tried_again() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GUIDE);
    assert_success(&run(&host, &common::script(&[]), &[]), "the run");
    let trial = host.read("/boot/extlinux.conf");
    let cmdline = host.read("/proc/cmdline");
    host.write("/proc/cmdline", &cmdline.replace("initrd=initramfs-virt ", "initrd=initramfs-virt.mingen-previous "));
    // (`now`: the report at once; at boot it is written once the gettys are up.)
    assert_success(&host.run("sh /etc/local.d/mingen-report.start now", &[]), "the one-shot");
    let report = host.read("/var/lib/mingen/report");
    assert!(report.starts_with("boot: the new boot configuration (label virt"), "{report}");
    for recorded in ["did not come up", "boot-failed (this)", "boot-trial.failed", "undo.sh", "/var/log/mingen.log"] {
        assert!(report.contains(recorded), "the report does not name {recorded:?}:\n{report}");
    }
    assert!(host.exists("/var/lib/mingen/boot-failed") && host.exists("/var/lib/mingen/boot-trial.failed"));
    assert_eq!(host.read("/boot/extlinux.conf"), trial, "the previous configuration stays the default");
    assert!(host.installed().contains("syslinux"));

    let before = host.tree();
    host.clear_calls();
    let out = run(&host, &common::script(&[]), &[("MINGEN_REBOOT", "1")]);
    let said = text(&out.stderr);
    assert!(!out.status.success(), "a run after a failed boot goes on:\n{said}");
    assert!(said.contains("did not come up on the new boot configuration (/var/lib/mingen/boot-failed)"), "{said}");
    assert!(said.contains("delete /var/lib/mingen/boot-failed"), "{said}");
    assert!(before.diff(&host.tree()).is_empty(), "the run after the failed boot changed the tree");
    assert_eq!(state_changing_calls(&host), Vec::<String>::new(), "nor did it change state");

    // The operator deletes boot-failed: the next run tries the new configuration once more.
    host.write("/proc/cmdline", &cmdline);
    assert_success(&host.run("rm /var/lib/mingen/boot-failed", &[]), "rm boot-failed");
    assert_success(&run(&host, &common::script(&[]), &[]), "the run after boot-failed was deleted");
    let once: Vec<_> = host.calls().into_iter().filter(|c| c.program == "extlinux").collect();
    assert_eq!(once.len(), 1, "extlinux --once runs again: {once:?}");
    assert_eq!(host.read("/boot/extlinux.conf"), trial);
}

#[test]
fn reboot_when_asked_exactly_once_at_the_end() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GUIDE);
    assert_success(&run(&host, &common::script(&[]), &[("MINGEN_REBOOT", "1")]), "the run");
    let calls = host.calls();
    assert_eq!(calls.iter().filter(|c| c.program == "reboot").count(), 1);
    assert_eq!(calls.last().map(|c| c.program.as_str()), Some("reboot"), "the reboot is the last call");
}

#[test]
fn sda_host_keeps_scsi_and_reads_ahead_on_sda() {
    if sandbox::require() {
        clean_then_again(&SDA);
    }
}

#[test]
fn nvme_host_keeps_nvme_and_reads_ahead_on_nvme0n1() {
    if sandbox::require() {
        clean_then_again(&NVME);
    }
}

#[test]
fn grub_uefi_host_edits_etc_default_grub_and_runs_grub_mkconfig() {
    if sandbox::require() {
        clean_then_again(&GRUB_UEFI);
    }
}

/// A grub.cfg whose default entry lacks the new options (here a grub-mkconfig
/// that leaves GRUB_CMDLINE_LINUX_DEFAULT out) stops the run before any reboot,
/// with the previous grub.cfg back in place.
#[test]
fn a_grub_cfg_without_the_options_is_caught_and_the_old_one_put_back() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GRUB_UEFI);
    let before = host.read("/boot/grub/grub.cfg");
    host.write(
        "/usr/sbin/grub-mkconfig",
        "#!/bin/sh\nprintf 'menuentry Alpine {\\n\\tlinux\\t/boot/vmlinuz-virt root=/dev/vda2 ro\\n}\\n' > \"$2\"\n",
    );
    assert_success(&host.run("chmod 0755 /usr/sbin/grub-mkconfig", &[]), "chmod");
    let out = run(&host, &common::script(GRUB_UEFI.args), &[]);
    assert!(!out.status.success(), "the run went on:\n{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("lacks ipv6.disable=1") && said.contains("the previous grub.cfg is back"), "{said}");
    assert_eq!(host.read("/boot/grub/grub.cfg"), before, "the previous grub.cfg is back");
    assert!(!host.calls().iter().any(|c| c.program == "reboot" || c.program == "mkinitfs"), "it stopped there");
}

#[test]
fn efi_stub_host_edits_startup_nsh() {
    if sandbox::require() {
        clean_then_again(&EFI_STUB);
    }
}

/// A Xen guest keeps what Xen needs, read from linux-virt: xen-blkfront and
/// xen-netfront are built in (modules.builtin), so the initramfs needs no disk
/// module and the check counts the built-in one; no virtio stays on disk, and
/// xen-scsifront (a module) does.
fn xen_host(case: &Case) {
    let (host, _) = clean_then_again(case);
    let kver = host.read("/usr/share/kernel/virt/kernel.release").trim().to_string();
    let builtin = host.read(&format!("/lib/modules/{kver}/modules.builtin"));
    for driver in ["kernel/drivers/block/xen-blkfront.ko", "kernel/drivers/net/xen-netfront.ko"] {
        assert!(builtin.lines().any(|l| l == driver), "linux-virt has {driver} built in");
    }
    let log = host.read("/var/log/mingen.log");
    assert!(log.contains("(built into the kernel: xen_blkfront)"), "{log}");
    let modules = module_files(&host, &kver);
    assert!(modules.contains("xen_scsifront"), "xen-scsifront stays");
    let virtio: Vec<&String> = modules.iter().filter(|m| m.starts_with("virtio")).collect();
    assert!(virtio.is_empty(), "no virtio module stays on a Xen guest: {virtio:?}");
}

#[test]
fn xen_hvm_host_keeps_what_xen_needs() {
    if sandbox::require() {
        xen_host(&XEN_HVM);
    }
}

#[test]
fn xen_pv_host_keeps_what_xen_needs() {
    if sandbox::require() {
        xen_host(&XEN_PV);
    }
}

#[test]
fn preflight_stops_on_the_wrong_hypervisor() {
    if sandbox::require() {
        assert_stops(
            &GUIDE,
            XEN_HVM.args,
            "",
            &["fact `hypervisor` is xen, but /sys/hypervisor/type says nothing", "fact `disk` is xvda"],
        );
        assert_stops(&XEN_PV, &[], "", &["fact `hypervisor` is kvm, but /sys/hypervisor/type says xen", "on xvda"]);
    }
}

#[test]
fn undo_on_a_xen_host_puts_everything_back() {
    if sandbox::require() {
        undo_puts_everything_back(&XEN_PV);
    }
}

/// A diskless host: lbu commit saves the run's changes to the boot media once,
/// lbu status lists nothing after it, and the apkovl holds what the next boot
/// needs: the world file without the removed packages, dropbear's settings,
/// the blacklist and mingen's state with undo.sh.
#[test]
fn diskless_host_saves_its_changes_with_lbu() {
    if !sandbox::require() {
        return;
    }
    let (host, first_run) = clean_then_again(&DISKLESS);
    let commits = first_run.iter().filter(|c| *c == "lbu\tcommit").count();
    assert_eq!(commits, 1, "one lbu commit: {first_run:#?}");
    let status = host.run("lbu status", &[]);
    assert_success(&status, "lbu status");
    assert_eq!(text(&status.stdout), "", "nothing left unsaved");
    let ovl = "/media/vda1/vps.apkovl.tar.gz";
    let listing = host.run(&format!("tar -tzf {ovl}"), &[]);
    assert_success(&listing, "list the apkovl");
    let listing = text(&listing.stdout);
    for path in [
        "etc/apk/world",
        "etc/conf.d/dropbear",
        "etc/dropbear/dropbear_ed25519_host_key",
        "etc/modprobe.d/blacklist-unnecessary.conf",
        "etc/runlevels/default/dropbear",
        // Edited by rule sysfs-debug-off; apk audit lists no edit under /etc/init.d.
        "etc/init.d/sysfs",
        "var/lib/mingen/undo.sh",
        "var/lib/mingen/backup/etc/apk/world",
    ] {
        assert!(listing.lines().any(|l| l == path), "the apkovl lacks {path}:\n{listing}");
    }
    let saved = host.run(&format!("tar -xzOf {ovl} etc/apk/world"), &[]);
    assert_eq!(text(&saved.stdout), host.read("/etc/apk/world"), "the saved world file is the host's");
    // The current boot's state stays out: a saved reboot-pending would come back at every
    // boot, and the report the one-shot writes after a boot leaves lbu status clean.
    assert!(!listing.lines().any(|l| l == "var/lib/mingen/reboot-pending"), "reboot-pending is saved:\n{listing}");
    let after_boot = host.run(
        "rm /var/lib/mingen/reboot-pending && for f in report report.json ps mods; do echo x > /var/lib/mingen/$f; done \
         && lbu status",
        &[],
    );
    assert_success(&after_boot, "lbu status after the one-shot's files");
    assert_eq!(text(&after_boot.stdout), "", "the one-shot's files are left for lbu to save");
}

#[test]
fn preflight_stops_on_a_diskless_host_described_as_installed_and_the_reverse() {
    if sandbox::require() {
        assert_stops(&DISKLESS, &[], "", &["fact `install` is sys, but the root filesystem is tmpfs"]);
        assert_stops(
            &GUIDE,
            DISKLESS.args,
            "",
            &["fact `install` is diskless, but the root filesystem is ext4", "no modloop is mounted at /.modloop"],
        );
        // Changes from before the run that lbu has not saved: the run's commit would save them unseen.
        assert_stops(
            &DISKLESS,
            DISKLESS.args,
            "echo 10.0.0.1 other >> /etc/hosts",
            &["lbu status lists changes not saved yet (U etc/hosts"],
        );
    }
}

#[test]
fn undo_on_a_diskless_host_puts_everything_back_and_saves_it() {
    if sandbox::require() {
        undo_puts_everything_back(&DISKLESS);
    }
}

#[test]
fn alpine_322_host_without_tracefs() {
    if sandbox::require() {
        clean_then_again(&ALPINE_322);
    }
}

#[test]
fn dhcp_host_keeps_dhcpcd() {
    if sandbox::require() {
        clean_then_again(&DHCP);
    }
}

#[test]
fn ipv6_host_keeps_ipv6() {
    if sandbox::require() {
        clean_then_again(&IPV6);
    }
}

#[test]
fn ssh_on_2222_without_passwords_carries_over() {
    if sandbox::require() {
        let first_run = clean_then_again(&SSH_2222).1;
        // Every host key is converted before dropbear starts, and sshd stops in the same step.
        let position = |line: &str| {
            first_run.iter().position(|c| c == line).unwrap_or_else(|| panic!("no call {line:?} in {first_run:#?}"))
        };
        let start = position("rc-service\tdropbear\tstart");
        assert_eq!(position("rc-service\tsshd\tstop") + 1, start);
        for key in ["rsa", "ecdsa", "ed25519"] {
            assert!(
                position(&format!(
                    "dropbearconvert\topenssh\tdropbear\t/etc/ssh/ssh_host_{key}_key\t/etc/dropbear/dropbear_{key}_host_key"
                )) < start
            );
        }
        // The daemon itself was started with sshd's port and password policy.
        assert!(first_run.iter().any(|c| c == "dropbear\t-p\t0.0.0.0:2222\t-s\t-g"), "{first_run:#?}");
    }
}

#[test]
fn dry_run_changes_nothing_and_says_what_it_would_do() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GUIDE);
    let before = host.tree();
    let out = run(&host, &common::script(&[]), &[("MINGEN_DRY_RUN", "1")]);
    assert_success(&out, "the dry run");
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "the dry run changed the tree: {diff:?}");
    assert_eq!(state_changing_calls(&host), Vec::<String>::new());
    let said = text(&out.stderr);
    for line in [
        "would write /etc/mkinitfs/mkinitfs.conf",
        "would rebuild the initramfs",
        "would install dropbear dropbear-convert",
        "would stop sshd and start dropbear",
        "would take acpid out of runlevel boot",
        "+features=\"base ext4 virtio\"",
    ] {
        assert!(said.contains(line), "dry run does not say {line:?}:\n{said}");
    }
    // The same by argument, for tools that pass arguments (Ansible's script module).
    let out = host.run("sh /root/script.sh --dry-run", &[]);
    assert_success(&out, "the dry run by argument");
    assert!(text(&out.stderr).contains("would stop sshd and start dropbear"));
    let out = host.run("sh /root/script.sh --dry-rn", &[]);
    assert!(!out.status.success() && text(&out.stderr).contains("unknown argument `--dry-rn`"));
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "the dry runs changed the tree: {diff:?}");
}

/// A host that does not match the facts: the script stops before its first
/// change, naming the fact and what it found.
fn assert_stops(case: &Case, args: &[&str], prepare: &str, expected: &[&str]) {
    let host = host(case);
    if !prepare.is_empty() {
        assert_success(&host.run(prepare, &[]), prepare);
    }
    host.clear_calls();
    let before = host.tree();
    let out = run(&host, &common::script(args), &[]);
    assert!(!out.status.success(), "the script went on:\n{}", text(&out.stderr));
    let said = text(&out.stderr);
    for words in expected {
        assert!(said.contains(words), "the message lacks {words:?}:\n{said}");
    }
    assert!(said.contains("nothing was changed"), "{said}");
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "a failed preflight changed the tree: {diff:?}");
    assert_eq!(state_changing_calls(&host), Vec::<String>::new());
}

#[test]
fn preflight_stops_on_the_wrong_disk() {
    if sandbox::require() {
        assert_stops(&GUIDE, &["--disk", "sda"], "", &["fact `disk` is sda", "on vda"]);
    }
}

/// boot_trial = once needs extlinux's boot-once (its ADV in /boot/ldlinux.sys).
#[test]
fn preflight_stops_when_extlinux_cannot_boot_a_label_once() {
    if sandbox::require() {
        let expected =
            ["fact `boot_trial` is once, but extlinux cannot boot a label once here", "boot_trial = \"off\""];
        assert_stops(&GUIDE, &[], "rm /boot/ldlinux.sys", &expected);
        assert_stops(&GUIDE, &[], "rm /sbin/extlinux", &expected);
    }
}

#[test]
fn preflight_stops_when_no_getty_would_stay_or_a_container_runtime_is_installed() {
    if sandbox::require() {
        assert_stops(&GUIDE, &["--consoles", "tty7"], "", &["fact `consoles` is [tty7]", "none would stay"]);
        // The sandbox reads the machine's /proc/cmdline; a console= there with a getty
        // in the host's inittab must keep it.
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if cmdline.split_whitespace().any(|w| w.starts_with("console=ttyS0")) {
            assert_stops(
                &GUIDE,
                &["--consoles", "tty1"],
                "",
                &["the kernel's console=ttyS0 has a getty that would go"],
            );
        }
        assert_stops(
            &GUIDE,
            &[],
            "printf '#!/bin/sh\\n' >/usr/bin/dockerd && chmod 755 /usr/bin/dockerd",
            &["fact `containers` is none, but dockerd is installed", "containers = \"used\""],
        );
    }
}

#[test]
fn preflight_stops_on_the_wrong_boot_loader() {
    if sandbox::require() {
        assert_stops(&GUIDE, &["--boot-loader", "grub"], "", &["fact `boot_loader` is grub", "the files of extlinux"]);
        assert_stops(&GRUB_UEFI, &[], "", &["fact `boot_loader` is extlinux", "the files of grub"]);
        assert_stops(
            &EFI_STUB,
            &["--boot-loader", "grub"],
            "",
            &["fact `boot_loader` is grub", "the files of efi-stub"],
        );
        // An EFI stub's startup.nsh with a second command line is not the one line it edits.
        assert_stops(
            &EFI_STUB,
            EFI_STUB.args,
            "echo 'fs0:\\EFI\\BOOT\\BOOTX64.EFI' >> /boot/startup.nsh",
            &["/boot/startup.nsh does not hold exactly one command line"],
        );
    }
}

#[test]
fn preflight_stops_on_the_wrong_release() {
    if sandbox::require() {
        assert_stops(&ALPINE_322, &[], "", &["for Alpine 3.23", "this host is 3.22"]);
    }
}

#[test]
fn preflight_stops_on_dhcp_when_static_is_claimed() {
    if sandbox::require() {
        assert_stops(&DHCP, &[], "", &["fact `network` is static", "DHCP", "eth0"]);
    }
}

#[test]
fn preflight_stops_on_ipv6_in_use_when_unused_is_claimed() {
    if sandbox::require() {
        assert_stops(&IPV6, &[], "", &["fact `ipv6` is unused", "global IPv6 address", "inet6"]);
    }
}

#[test]
fn preflight_stops_on_a_missing_file() {
    if sandbox::require() {
        assert_stops(&GUIDE, &[], "rm /etc/conf.d/syslog", &["/etc/conf.d/syslog is missing"]);
    }
}

#[test]
fn preflight_stops_on_a_missing_program_and_says_all_it_found() {
    if sandbox::require() {
        assert_stops(
            &GUIDE,
            &[],
            "rm \"$(command -v mkinitfs)\" /etc/conf.d/syslog",
            &["`mkinitfs` is not installed", "/etc/conf.d/syslog is missing"],
        );
    }
}

#[test]
fn preflight_stops_when_the_default_route_has_no_complete_static_stanza() {
    if !sandbox::require() {
        return;
    }
    // The static stanza is for eth1, but the default route leaves by eth0.
    assert_stops(
        &GUIDE,
        &[],
        "sed -i 's/eth0/eth1/g' /etc/network/interfaces",
        &["fact `network` is static", "no complete static stanza", "for eth0, the interface with the default route"],
    );
    // A stanza without a gateway is not complete.
    assert_stops(
        &GUIDE,
        &[],
        "sed -i '/gateway/d' /etc/network/interfaces",
        &["fact `network` is static", "no complete static stanza"],
    );
}

#[test]
fn preflight_stops_when_sshd_listens_on_ipv6_and_ipv6_is_to_go() {
    if sandbox::require() {
        assert_stops(
            &GUIDE,
            &["--ssh", "openssh"],
            "echo 'ListenAddress 2001:db8::5' >> /etc/ssh/sshd_config",
            &["fact `ipv6` is unused, but sshd listens on the IPv6 address 2001:db8::5"],
        );
    }
}

#[test]
fn preflight_stops_on_dhcp_configured_in_a_sourced_file_or_by_use_dhcp() {
    if !sandbox::require() {
        return;
    }
    assert_stops(
        &GUIDE,
        &[],
        "mkdir -p /etc/network/interfaces.d && printf 'auto eth1\\niface eth1 inet dhcp\\n' > /etc/network/interfaces.d/eth1 && echo 'source-directory interfaces.d' >> /etc/network/interfaces",
        &["fact `network` is static", "DHCP (iface eth1 inet dhcp)"],
    );
    assert_stops(
        &GUIDE,
        &[],
        "printf '\\tuse dhcp\\n' >> /etc/network/interfaces",
        &["fact `network` is static", "eth0 use dhcp"],
    );
}

#[test]
fn preflight_stops_when_sshd_options_override_its_config() {
    if sandbox::require() {
        // Alpine's init script passes command_args (else SSHD_OPTS) and cfgfile to sshd.
        for (conf, said) in [
            ("command_args=\"-p 2222\"", "but sshd listens on port(s) 2222"),
            ("SSHD_OPTS=\"-o Port=2200\"", "but sshd listens on port(s) 2200"),
            ("command_args=\"-o AllowUsers=alice\"", "sshd has AllowUsers alice"),
            ("command_args=\"-u0\"", "the argument -u0 in /etc/conf.d/sshd"),
        ] {
            assert_stops(&GUIDE, &[], &format!("echo '{conf}' >> /etc/conf.d/sshd"), &[said]);
        }
        // cfgfile names another config file, whose port is the one sshd listens on.
        let prepare = "sed 's/^#Port 22$/Port 2022/' /etc/ssh/sshd_config > /etc/ssh/other_config && \
            echo 'cfgfile=/etc/ssh/other_config' >> /etc/conf.d/sshd";
        assert_stops(&GUIDE, &[], prepare, &["but sshd listens on port(s) 2022"]);
    }
}

#[test]
fn preflight_stops_on_sshd_settings_dropbear_cannot_carry() {
    if sandbox::require() {
        for setting in [
            "AuthorizedKeysFile /etc/ssh/keys/%u",
            "TrustedUserCAKeys /etc/ssh/ca.pub",
            "AuthorizedKeysCommand /usr/bin/keys",
            "AuthenticationMethods publickey,password",
            "AllowUsers alice",
            "DenyUsers bob",
            "AllowGroups wheel",
            "DenyGroups guests",
        ] {
            let keyword = setting.split(' ').next().unwrap();
            let prepare = format!("sed -i '1i {setting}' /etc/ssh/sshd_config");
            assert_stops(&GUIDE, &[], &prepare, &[&format!("sshd has {keyword}"), "which dropbear cannot carry"]);
        }
        assert_stops(
            &GUIDE,
            &[],
            "printf 'Match User alice\\n\\tPasswordAuthentication no\\n' >> /etc/ssh/sshd_config",
            &["a Match block"],
        );
    }
}

#[test]
fn preflight_stops_when_sshd_settings_differ_from_the_facts() {
    if sandbox::require() {
        assert_stops(
            &SSH_2222,
            &[],
            "",
            &["fact `ssh_ports` is [22]", "port(s) 2222", "fact `ssh_password_auth` is yes"],
        );
    }
}

/// Rule initramfs-backup-drop: the run keeps the initramfs from before it (just before
/// mkinitfs replaces it); the boot script deletes that copy only once the new initramfs has
/// booted: not when the boot loader booted another one (a boot trial's fallback), nor while
/// a mkinitfs is due or a boot trial is pending or has failed. A second run then changes
/// nothing and keeps no copy again, and undo makes the initramfs from before the run again
/// with mkinitfs, byte for byte.
#[test]
fn the_initramfs_copy_goes_once_the_new_one_has_booted_and_undo_makes_it_again() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GUIDE);
    let initramfs = |host: &Host| std::fs::read(host.host_path("/boot/initramfs-virt")).expect("read the initramfs");
    let stock = initramfs(&host);
    let script = common::script(GUIDE.args);
    assert_success(&run(&host, &script, &[]), "the run");
    let copy = "/var/lib/mingen/backup/boot/initramfs-virt";
    assert_ne!(initramfs(&host), stock, "the run made a new initramfs");
    assert_eq!(
        std::fs::read(host.host_path(copy)).expect("read the copy"),
        stock,
        "the copy is the initramfs from before"
    );
    let one_shot = "/etc/local.d/mingen-trim-backup.start";
    // local.d runs its scripts in name order: after the report's, which confirms a boot trial.
    assert!(host.exists("/etc/local.d/mingen-report.start") && one_shot > "/etc/local.d/mingen-report.start");
    let boot = |cmdline: &str| {
        host.write("/proc/cmdline", &format!("{cmdline}\n"));
        assert_success(&host.run(&format!("sh {one_shot}"), &[]), "the boot script");
    };
    let new = "BOOT_IMAGE=vmlinuz-virt initrd=initramfs-virt root=UUID=0b5e7a1c modules=sd-mod,ext4 quiet";
    boot("BOOT_IMAGE=vmlinuz-virt initrd=initramfs-virt.mingen-previous root=UUID=0b5e7a1c quiet");
    assert!(host.exists(copy), "the copy stays when another initramfs booted");
    for mark in ["initramfs-stale", "boot-failed"] {
        host.write(&format!("/var/lib/mingen/{mark}"), "");
        boot(new);
        assert!(host.exists(copy), "the copy stays while /var/lib/mingen/{mark} exists");
        assert_success(&host.run(&format!("rm /var/lib/mingen/{mark}"), &[]), "rm");
    }
    // The run armed the boot trial: the copy stays until the report's one-shot (before
    // this one at boot) has confirmed the new boot.
    assert!(host.exists("/var/lib/mingen/boot-trial"), "the run armed no boot trial");
    boot(new);
    assert!(host.exists(copy), "the copy stays while the boot trial is pending");
    good_boot(&host);
    assert_success(&host.run("sh /etc/local.d/mingen-report.start now", &[]), "the report's one-shot");
    assert!(!host.exists("/var/lib/mingen/boot-trial"), "the one-shot confirmed the boot");
    boot(new);
    assert!(!host.exists(copy), "the copy is gone once the new initramfs booted");
    boot(new);

    // A second run changes nothing: it keeps no copy of the initramfs that booted.
    let before = host.tree();
    host.clear_calls();
    assert_success(&run(&host, &script, &[]), "the second run");
    let mut after = host.tree();
    after.0.remove("/var/log/mingen.log");
    let mut before = before;
    before.0.remove("/var/log/mingen.log");
    let diff = before.diff(&after);
    assert!(diff.is_empty(), "the second run changed the tree: {diff:?}");
    assert!(!host.calls().iter().any(|c| c.program == "mkinitfs"), "no mkinitfs in the second run");

    // undo: mkinitfs makes the initramfs from before the run again, from the restored inputs.
    assert_success(&host.run("apk update --quiet", &[]), "apk update");
    let out = host.run("sh /var/lib/mingen/undo.sh", &[]);
    assert_success(&out, "undo.sh");
    assert!(text(&out.stderr).contains("rebuild the initramfs"), "{}", text(&out.stderr));
    assert_eq!(initramfs(&host), stock, "undo made the initramfs from before the run again");
    assert!(!host.exists(one_shot), "undo deleted the boot script");
}

#[test]
fn undo_puts_files_packages_and_services_back() {
    if !sandbox::require() {
        return;
    }
    // undo.sh reinstalls the pruned kernel modules last: `apk fix` reads the world
    // file it has put back, and would take dropbear away before sshd is back.
    undo_puts_everything_back(&GUIDE);
}

#[test]
fn undo_on_a_grub_host_puts_its_command_line_and_grub_cfg_back() {
    if sandbox::require() {
        undo_puts_everything_back(&GRUB_UEFI);
    }
}

#[test]
fn undo_on_an_efi_stub_host_puts_startup_nsh_back() {
    if sandbox::require() {
        undo_puts_everything_back(&EFI_STUB);
    }
}

fn undo_puts_everything_back(case: &Case) {
    let host = host(case);
    let (runlevels, started, world, installed) = (host.runlevels(), host.started(), host.world(), host.installed());
    let versions = host.installed_versions();
    let before = host.tree();
    assert_success(&run(&host, &common::script(case.args), &[]), "the run");
    // The run emptied the apk cache (the index); undo needs it, as on a real host
    // after `apk update`.
    assert_success(&host.run("apk update --quiet", &[]), "apk update");
    let out = host.run("sh /var/lib/mingen/undo.sh", &[]);
    assert_success(&out, "undo.sh");
    assert_eq!(host.runlevels(), runlevels, "runlevels back");
    assert_eq!(host.started(), started, "started services back");
    assert_eq!(host.world(), world, "world back");
    assert_eq!(host.installed(), installed, "packages back");
    assert_eq!(host.installed_versions(), versions, "the same versions back");
    let diff = before.diff(&host.tree());
    let unexpected = |path: &String| {
        // The image's packages come back from the sandbox repository, rebuilt from
        // the image: the same names, versions and files, but not the same package
        // identity, so apk's database differs byte for byte (compared above).
        let apk_db = ["/lib/apk/db/installed", "/lib/apk/db/scripts.tar.gz"];
        // A diskless host's apkovl is saved again by undo (its content is read below).
        let apkovl = "/media/vda1/vps.apkovl.tar.gz";
        !(path.starts_with("/var/lib/mingen")
            || ["/var/log/mingen.log", "/var/log/apk.log", apkovl].contains(&path.as_str())
            || apk_db.contains(&path.as_str())
            || path.starts_with("/var/cache/apk"))
    };
    let changed: Vec<&String> = diff.changed.iter().map(|(p, _, _)| p).filter(|p| unexpected(p)).collect();
    let added: Vec<&String> = diff.added.iter().filter(|p| unexpected(p)).collect();
    let removed: Vec<&String> = diff.removed.iter().filter(|p| unexpected(p)).collect();
    assert!(
        changed.is_empty() && added.is_empty() && removed.is_empty(),
        "after undo: changed {changed:?} added {added:?} removed {removed:?}"
    );
    if case.fact("--install", "sys") == "diskless" {
        // What undo put back is what the next boot gets: saved, with nothing left over.
        assert!(host.calls().iter().any(|c| c.line() == "lbu commit"), "undo saves with lbu commit");
        assert_eq!(text(&host.run("lbu status", &[]).stdout), "", "nothing left unsaved after undo");
        let saved = host.run("tar -xzOf /media/vda1/vps.apkovl.tar.gz etc/apk/world", &[]);
        assert_eq!(text(&saved.stdout), host.read("/etc/apk/world"), "the saved world file is the one from before");
        let listing = text(&host.run("tar -tzf /media/vda1/vps.apkovl.tar.gz", &[]).stdout);
        assert!(!listing.contains("var/lib/mingen"), "mingen's state is no longer saved:\n{listing}");
    }
}

/// The end state that matters, from one host: the tree without the files whose
/// content depends on the moment (the log's timestamps, `free`'s figures).
fn end_state(host: &Host) -> sandbox::Tree {
    let mut tree = host.tree();
    for volatile in ["/var/log/mingen.log", "/var/lib/mingen/before", "/var/lib/mingen/before.values"] {
        assert!(tree.0.remove(volatile).is_some(), "{volatile} exists");
    }
    // apk-tools 3 logs each transaction with its time.
    tree.0.remove("/var/log/apk.log");
    tree
}

/// Kill the run (SIGKILL) after each of its steps in turn, then run it again:
/// the end state equals one clean run's.
#[test]
fn a_run_killed_after_any_step_ends_like_a_clean_run_when_run_again() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&[]);
    let clean = host(&GUIDE);
    assert_success(&run(&clean, &script, &[]), "the clean run");
    let expected = end_state(&clean);

    // The steps are the calls in main after the preflight.
    let main_body = script.rsplit("\nmain() {\n").next().expect("main");
    let steps: Vec<&str> = main_body
        .lines()
        .take_while(|l| *l != "}")
        .skip_while(|l| l.trim() != "prepare")
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(steps.len() > 20, "{steps:?}");
    let kill_points: Vec<usize> = (0..steps.len()).collect();
    let check = |k: usize| {
        let step = steps[k];
        let cut = script.replacen(&format!("\n{step}\n"), &format!("\n{step}\n\tkill -9 $$\n"), 1);
        assert_ne!(cut, script);
        let host = host(&GUIDE);
        let out = run(&host, &cut, &[]);
        assert!(!out.status.success(), "the cut run after {step:?} was not killed");
        let out = run(&host, &script, &[]);
        assert_success(&out, &format!("the run after a kill after {step:?}"));
        let diff = expected.diff(&end_state(&host));
        assert!(diff.is_empty(), "killed after {step:?} and run again, the host differs from a clean run: {diff:?}");
    };
    std::thread::scope(|scope| {
        for half in kill_points.chunks(kill_points.len().div_ceil(2)) {
            scope.spawn(|| half.iter().for_each(|&k| check(k)));
        }
    });
}

/// The terminal goes away mid-run: hang-ups reach the whole process group (in
/// the middle of the sshd -> dropbear switch too) and the terminal is closed.
/// The run carries on to its end, logging to /var/log/mingen.log.
#[test]
fn a_run_survives_hang_ups_and_a_closed_terminal() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&[]);
    let clean = host(&GUIDE);
    assert_success(&run(&clean, &script, &[]), "the clean run");
    let hup_after = |text: &str, after: &str| text.replacen(after, &format!("{after}\n\tkill -HUP 0"), 1);
    let mut cut = hup_after(&script, "\n\trule_initramfs_rebuild");
    cut = hup_after(&cut, "\n\t\trc-service sshd stop");
    cut = hup_after(&cut, "\n\trule_openssh_remove");
    assert_eq!(cut.matches("kill -HUP 0").count(), 3);
    let host = host(&GUIDE);
    host.write("/root/script.sh", &cut);
    // The script gets a session of its own, as a login shell's would be, so the
    // hang-ups reach it and what it starts; `head` closes the "terminal" a few
    // rules into the run, so later writes to it fail.
    let out = host.run("setsid sh /root/script.sh 2>&1 | head -c 1500 >/dev/null; echo pipeline ended", &[]);
    assert!(text(&out.stdout).contains("pipeline ended"), "{}", text(&out.stderr));
    let diff = end_state(&clean).diff(&end_state(&host));
    assert!(diff.is_empty(), "after hang-ups the host differs from a clean run: {diff:?}");
    let log = host.read("/var/log/mingen.log");
    assert!(log.contains("next: reboot"), "the log has the run to its end:\n{log}");
    assert!(host.started().contains("dropbear"));
}

/// cloud-init's final stage, as far as user-data goes: it runs the user-data
/// script, notes what the host looks like when the script returns (cloud-init is
/// still running then), and only then writes its result.
const CLOUD_INIT_FINAL: &str = r#"#!/bin/sh
sh /var/lib/cloud/instance/scripts/part-001 >>/var/log/cloud-init-output.log 2>&1
echo "user-data exit status: $?" >/var/log/standin-cloud-init
apk info -e cloud-init >>/var/log/standin-cloud-init 2>&1
grep -c '^reboot' /.sandbox/calls.log >>/var/log/standin-cloud-init
sleep 3
mkdir -p /run/cloud-init
echo '{"v1": {"datasource": null, "errors": []}}' >/run/cloud-init/result.json
"#;

#[test]
fn user_data_waits_for_cloud_init_then_finishes_once() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&["--format", "user-data"]);
    let host = host(&GUIDE);
    let (runlevels_before, world_before) = (host.runlevels(), host.world());
    host.write("/var/lib/cloud/instance/scripts/part-001", &script);
    host.write("/root/cloud-init-final", CLOUD_INIT_FINAL);
    assert!(!host.exists("/run/cloud-init/result.json"));
    let out = host.run("sh /root/cloud-init-final", &[]);
    assert_success(&out, "the stand-in cloud-init");
    // While cloud-init ran it: the script succeeded, cloud-init was still there, no reboot.
    assert_eq!(host.read("/var/log/standin-cloud-init"), "user-data exit status: 0\ncloud-init\n0\n");
    // Then the detached run finishes the job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !host.exists("/var/lib/mingen/done") {
        assert!(
            std::time::Instant::now() < deadline,
            "the run after cloud-init did not finish:\n{}",
            host.read("/var/log/mingen.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The marker is written just before the reboot: wait for that too.
    while !host.calls().iter().any(|c| c.program == "reboot") {
        assert!(std::time::Instant::now() < deadline, "no reboot after the run:\n{}", host.read("/var/log/mingen.log"));
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!host.installed().contains("cloud-init"), "cloud-init is removed after it finished");
    assert!(!host.exists("/etc/local.d/mingen-deferred.start"), "the one-shot is gone once the job is done");
    assert_eq!(host.calls().iter().filter(|c| c.program == "reboot").count(), 1);
    assert_guide_end_state(&host, &GUIDE, &runlevels_before, &world_before);
    let log = host.read("/var/log/mingen.log");
    assert!(log.contains("waits until cloud-init has finished") && log.contains("rebooting now"), "{log}");

    // Run again (as a re-run of user-data would): nothing changes.
    host.clear_calls();
    let before = host.tree();
    let out = host.run("sh /var/lib/cloud/instance/scripts/part-001", &[]);
    assert_success(&out, "the second user-data run");
    assert!(text(&out.stderr).contains("nothing to do"), "{}", text(&out.stderr));
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "the second user-data run changed the tree: {diff:?}");
    assert_eq!(state_changing_calls(&host), Vec::<String>::new());
}

#[test]
fn what_the_facts_keep_stays_installed_enabled_and_running() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&["--python", "keep", "--guest-agent", "keep", "--ntp", "chrony", "--balloon", "keep"]);
    let host = host(&GUIDE);
    assert_success(&run(&host, &script, &[]), "the run");
    let installed = host.installed();
    for name in ["python3", "qemu-guest-agent", "chrony"] {
        assert!(installed.contains(name), "{name} stays installed");
    }
    assert!(!installed.contains("cloud-init"), "cloud-init still goes");
    assert!(host.world().contains(&"python3".to_string()), "python3 is now in the world file, so it stays");
    let runlevels = host.runlevels();
    for name in ["qemu-guest-agent", "chronyd"] {
        assert!(runlevels.contains(&("default".to_string(), name.to_string())), "{name} stays in default");
        assert!(host.started().contains(name), "{name} keeps running");
    }
    assert!(!runlevels.contains(&("default".to_string(), "ntpd".to_string())), "no ntpd beside chrony");
    assert!(!host.exists("/etc/modprobe.d/blacklist-balloon.conf"));
    assert!(!host.initramfs().contains_key("etc/modprobe.d/blacklist-balloon.conf"));
    let transactions = apk_transactions(&host);
    assert_eq!(transactions.len(), 2, "{transactions:?}");
    assert!(transactions[0].contains("python3"), "{transactions:?}");
}

/// Issue 8: what would lock someone out, or fail in silence, on a real host.
fn stderr_of(out: &Output) -> String {
    text(&out.stderr)
}

#[test]
fn a_login_shell_that_a_removed_package_holds_keeps_its_package() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&[]);
    // alice logs in with bash and a key; bob uses bash too, but cannot log in.
    let host = self::host(&GUIDE);
    let add_users = "echo 'alice:x:1000:1000::/home/alice:/bin/bash' >> /etc/passwd && \
        echo 'alice:!:20000:0:99999:7:::' >> /etc/shadow && \
        mkdir -p /home/alice/.ssh && cp /root/.ssh/authorized_keys /home/alice/.ssh/ && \
        echo 'bob:x:1001:1001::/home/bob:/bin/bash' >> /etc/passwd && \
        echo 'bob:!:20000:0:99999:7:::' >> /etc/shadow";
    assert_success(&host.run(add_users, &[]), "adding the accounts");
    let out = run(&host, &script, &[]);
    assert_success(&out, "the run");
    let said = stderr_of(&out);
    assert!(said.contains("keeps bash: account alice logs in with /bin/bash"), "{said}");
    assert!(!said.contains("account bob"), "bob cannot log in: {said}");
    assert!(host.installed().contains("bash"), "bash stays");
    assert!(!host.installed().contains("nvme-cli"), "the other tools still go");

    // Without an account that logs in with it, bash goes.
    let host = self::host(&GUIDE);
    assert_success(&host.run("echo 'bob:x:1001:1001::/home/bob:/bin/bash' >> /etc/passwd", &[]), "bob");
    assert_success(&run(&host, &script, &[]), "the run");
    assert!(!host.installed().contains("bash"), "bash goes when nobody logs in with it");
}

#[test]
fn sudo_and_doas_stay_unless_root_can_log_in_directly() {
    if !sandbox::require() {
        return;
    }
    let script = common::script(&[]);
    // The guide host: root has a plain key, so sudo and doas go.
    let host = self::host(&GUIDE);
    assert_success(&run(&host, &script, &[]), "the run");
    assert!(!host.installed().contains("sudo") && !host.installed().contains("doas"));

    // cloud-init's stub: root's only key line runs a forced command. They stay.
    let host = self::host(&GUIDE);
    let stub = "printf '%s\\n' 'no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo Please login as the user alpine rather than the user root.;echo;sleep 10;exit 142\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyForTheSandboxOnly0000000000000 operator@example' > /root/.ssh/authorized_keys";
    assert_success(&host.run(stub, &[]), "the stub key");
    let out = run(&host, &script, &[]);
    assert_success(&out, "the run");
    let said = stderr_of(&out);
    assert!(said.contains("keeps sudo: root cannot log in over SSH directly"), "{said}");
    assert!(said.contains("keeps doas"), "{said}");
    assert!(host.installed().contains("sudo") && host.installed().contains("doas"));

    // sudo_doas = keep keeps them without asking; remove removes them even so.
    let host_kept = self::host(&GUIDE);
    assert_success(&run(&host_kept, &common::script(&["--sudo-doas", "keep"]), &[]), "the run");
    assert!(host_kept.installed().contains("sudo"));
    let host = self::host(&GUIDE);
    assert_success(&host.run(stub, &[]), "the stub key");
    assert_success(&run(&host, &common::script(&["--sudo-doas", "remove"]), &[]), "the run");
    assert!(!host.installed().contains("sudo"));
}

#[test]
fn a_run_through_sudo_stops_before_it_removes_sudo() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    let before = host.tree();
    let out = run(&host, &common::script(&[]), &[("SUDO_USER", "alice")]);
    assert!(!out.status.success(), "the run went on");
    let said = stderr_of(&out);
    assert!(said.contains("this run came through sudo (as alice)") && said.contains("nothing was changed"), "{said}");
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "a failed preflight changed the tree: {diff:?}");
}

#[test]
fn e2fsck_stays_when_e2fsprogs_is_not_in_the_world_file() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    assert_success(&host.run("sed -i '/^e2fsprogs$/d' /etc/apk/world", &[]), "editing the world file");
    assert!(!host.world().contains(&"e2fsprogs".to_string()));
    assert_success(&run(&host, &common::script(&[]), &[]), "the run");
    let installed = host.installed();
    assert!(!installed.contains("e2fsprogs-extra"), "e2fsprogs-extra goes");
    assert!(installed.contains("e2fsprogs") && host.exists("/sbin/e2fsck"), "e2fsck stays");
    assert!(host.world().contains(&"e2fsprogs".to_string()), "e2fsprogs is now in the world file");
}

#[test]
fn the_sysfs_edit_survives_an_openrc_upgrade() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    assert_success(&run(&host, &common::script(&[]), &[]), "the run");
    let hook = "/etc/apk/commit_hooks.d/mingen-sysfs.hook";
    let shipped = host.read("/var/lib/mingen/backup/etc/init.d/sysfs");
    // An upgrade that replaced the file, and one that left it as sysfs.apk-new.
    for new_file in ["/etc/init.d/sysfs", "/etc/init.d/sysfs.apk-new"] {
        host.write(new_file, &shipped);
        assert_success(&host.run(&format!("{hook} pre-commit"), &[]), "the hook before a commit");
        assert!(host.exists(new_file) || new_file.ends_with("sysfs"), "pre-commit changes nothing");
        assert_success(&host.run(&format!("{hook} post-commit"), &[]), "the hook after a commit");
        let sysfs = host.read("/etc/init.d/sysfs");
        assert!(sysfs.contains(": #mount -n -t debugfs"), "{new_file}: {sysfs}");
        assert!(!sysfs.lines().any(|l| l.trim_start().starts_with("mount -n -t debugfs")), "{sysfs}");
        assert!(!sysfs.lines().any(|l| l.trim_start().starts_with("mount -n -t tracefs")), "{sysfs}");
        assert!(!host.exists("/etc/init.d/sysfs.apk-new"), "the new file took the old one's place");
        assert_success(&host.run("sh -n /etc/init.d/sysfs && test -x /etc/init.d/sysfs", &[]), "the edited script");
    }
}

/// The real apk, timed: each call is recorded, then `apk-seconds`, how long it took.
const APK_TIMER: &str = "#!/bin/sh\n\
line=apk; for a in \"$@\"; do line=\"$line\t$a\"; done\n\
printf '%s\\n' \"$line\" >> /.sandbox/calls.log\n\
start=$(date +%s)\n\
/sbin/apk \"$@\"\n\
rc=$?\n\
printf 'apk-seconds\t%s\t%s\\n' \"$(($(date +%s) - start))\" \"$*\" >> /.sandbox/calls.log\n\
exit $rc\n";

/// The host keeps the image's own mirrors in /etc/apk/repositories, as a real one
/// does, but cannot reach them (apk-tools 3 then waits about 10 s per refresh).
/// Only `apk add`, which fetches packages, may go to the network: reading what is
/// installed and removing packages must not (issue 8, point 9).
#[test]
fn with_mirrors_listed_only_apk_add_goes_to_the_network() {
    if !sandbox::require() {
        return;
    }
    let host = host(&GUIDE);
    let mirrors = std::fs::read_to_string(sandbox::image::root().join("etc/apk/repositories")).expect("mirrors");
    assert!(mirrors.contains("https://"), "{mirrors}");
    host.write("/etc/apk/repositories", &format!("{}{mirrors}", host.read("/etc/apk/repositories")));
    host.write("/usr/sbin/apk", APK_TIMER);
    assert_success(&host.run("chmod 0755 /usr/sbin/apk", &[]), "chmod");
    assert_success(&run(&host, &common::script(&[]), &[]), "the run");
    let timed: Vec<(u64, String)> = host
        .calls()
        .iter()
        .filter(|c| c.program == "apk-seconds")
        .map(|c| (c.args[0].parse().expect("seconds"), c.args[1].clone()))
        .collect();
    eprintln!("apk calls (seconds, arguments): {timed:?}");
    let slow: Vec<&(u64, String)> = timed
        .iter()
        .filter(|(s, args)| *s >= 5 && args.split(' ').find(|a| !a.starts_with('-')) != Some("add"))
        .collect();
    assert!(slow.is_empty(), "apk calls that waited for the network: {slow:?}");
}

/// `--compact` leaves out comments, blank lines and indentation only: on the same
/// host it ends where the commented script ends.
#[test]
fn the_compact_script_ends_where_the_commented_one_does() {
    if !sandbox::require() {
        return;
    }
    let full = self::host(&GUIDE);
    assert_success(&run(&full, &common::script(&[]), &[]), "the commented script");
    let compact = self::host(&GUIDE);
    assert_success(&run(&compact, &common::script(&["--compact"]), &[]), "the compact script");
    // mingen's own programs (undo.sh, the pruning program, every script a rule writes)
    // are written without their comments, blank lines and indentation, and the files
    // that open with a `#` comment without their later comment lines; all else is the same.
    let code = |host: &Host, path: &str| -> Vec<String> {
        let text = host.read(path);
        text.lines()
            .map(str::trim_start)
            .filter(|t| !t.is_empty() && (!t.starts_with('#') || t.starts_with("#!") || t.starts_with("# shellcheck ")))
            .map(str::to_string)
            .collect()
    };
    let (mut full_tree, mut compact_tree) = (end_state(&full), end_state(&compact));
    let own: Vec<String> = full_tree.diff(&compact_tree).changed.iter().map(|(path, _, _)| path.clone()).collect();
    assert!(own.iter().any(|p| p == "/var/lib/mingen/undo.sh"), "undo.sh is written without its comments: {own:?}");
    // The initramfs holds /etc/modprobe.d (whose files lose comment lines): the same files.
    let initramfs = "/boot/initramfs-virt";
    let listing = |host: &Host| text(&host.run(&format!("gzip -dc {initramfs} | cpio -t 2>/dev/null"), &[]).stdout);
    let listed = listing(&full);
    assert!(listed.contains("etc/modprobe.d/blacklist-unnecessary.conf"), "{initramfs} holds:\n{listed}");
    assert_eq!(listed, listing(&compact), "{initramfs} holds other files");
    for path in own.iter().filter(|p| *p != initramfs) {
        assert!(full.read(path).starts_with('#'), "{path} differs, but it has no `#` comments");
        assert_eq!(code(&full, path), code(&compact, path), "{path}");
        full_tree.0.remove(path);
        compact_tree.0.remove(path);
    }
    full_tree.0.remove(initramfs);
    compact_tree.0.remove(initramfs);
    let diff = full_tree.diff(&compact_tree);
    assert!(diff.is_empty(), "the two runs end differently: {diff:?}");
}

/// Issue 9: /lib/modules keeps what the host needs, the initramfs is checked
/// before any reboot, and a kernel apk installs later is pruned the same way.
fn module_files(host: &Host, kver: &str) -> BTreeSet<String> {
    let out = host.run(&format!("cd /lib/modules/{kver}/kernel && find . -name '*.ko*'"), &[]);
    text(&out.stdout)
        .lines()
        .map(|l| l.rsplit('/').next().unwrap_or(l).split(".ko").next().unwrap_or(l).replace('-', "_"))
        .collect()
}

#[test]
fn modules_are_pruned_to_what_the_host_and_its_possible_buses_need() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    let kver = host.read("/usr/share/kernel/virt/kernel.release").trim().to_string();
    let before = module_files(&host, &kver);
    let map = format!("/boot/System.map-{kver}");
    assert!(host.exists(&map), "the image has {map}");
    let out = run(&host, &common::script(&[]), &[]);
    assert_success(&out, "the run");
    let after = module_files(&host, &kver);
    assert!(!host.exists(&map), "{map} went with the modules");
    for name in ["virtio_blk", "virtio_scsi", "sd_mod", "nvme", "virtio_net", "ext4", "jbd2", "mbcache"] {
        assert!(!before.contains(name) || after.contains(name), "{name} must stay: {after:?}");
    }
    assert!(after.len() * 4 < before.len(), "kept {} of {} modules", after.len(), before.len());
    // What never loads goes although the features' globs name it (virtio: drm/virtio;
    // base: simpledrm, loop): module-blacklist replaces drm, simpledrm, fb and loop with
    // /bin/true, and virtio-gpu and drm_kms_helper need drm. Not in the initramfs either.
    let initramfs = host.initramfs();
    for name in ["drm", "drm_kms_helper", "virtio_gpu", "simpledrm", "loop"] {
        assert!(before.contains(name), "the image has {name}");
        assert!(!after.contains(name), "{name} never loads, yet it was kept: {after:?}");
        let file = format!("/{}.ko", name.replace('_', "-"));
        assert!(
            !initramfs.keys().any(|p| p.contains(&file) || p.contains(&format!("/{name}.ko"))),
            "{name} in the initramfs"
        );
    }
    let removed = host.read(&format!("/var/lib/mingen/modules-removed.{kver}"));
    assert_eq!(removed.lines().count(), before.len() - after.len(), "the list names what went");
    // depmod ran: every kept module resolves, none that went is known.
    let kept_ok = host.run(&format!("modprobe -n -S {kver} virtio_scsi && modprobe -n -S {kver} nvme"), &[]);
    assert_success(&kept_ok, "modprobe -n of kept modules");
    if before.contains("floppy") {
        assert!(!host.run(&format!("modprobe -n -S {kver} floppy"), &[]).status.success(), "floppy went");
    }
    let said = stderr_of(&out);
    assert!(said.contains("unneeded modules") && said.contains("the initramfs holds"), "{said}");
    // After the reboot fewer modules are loaded (the blacklist holds): a second run
    // keeps the same set and changes nothing (seen on the real-boot bench).
    host.write("/proc/modules", "ext4 1069056 1 - Live 0x0000000000000000\n");
    let tree = host.tree();
    assert_success(&run(&host, &common::script(&[]), &[]), "the second run");
    assert_eq!(module_files(&host, &kver), after, "the second run kept the same modules");
    let diff = tree.diff(&host.tree());
    let changed: Vec<_> = diff.changed.iter().map(|c| &c.0).filter(|p| !p.starts_with("/var/log")).collect();
    assert!(changed.is_empty() && diff.added.is_empty() && diff.removed.is_empty(), "the second run: {diff:?}");
    // With `host`, the buses the host does not use go too; with `off`, nothing goes.
    let host_only = self::host(&GUIDE);
    assert_success(&run(&host_only, &common::script(&["--modules-prune", "host"]), &[]), "the run");
    let host_kept = module_files(&host_only, &kver);
    assert!(host_kept.contains("virtio_blk") && !host_kept.contains("nvme"), "{host_kept:?}");
    let untouched = self::host(&GUIDE);
    assert_success(&run(&untouched, &common::script(&["--modules-prune", "off"]), &[]), "the run");
    assert_eq!(module_files(&untouched, &kver), before);
}

#[test]
fn an_initramfs_without_the_disk_driver_is_caught_and_the_old_one_put_back() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    let old = std::fs::read(host.host_path("/boot/initramfs-virt")).expect("the initramfs");
    // A feature list that no longer takes the virtio block driver.
    let broken = "sed -i '/drivers\\/block\\/virtio/d' /etc/mkinitfs/features.d/virtio.modules";
    assert_success(&host.run(broken, &[]), "breaking the feature");
    let out = run(&host, &common::script(&[]), &[("MINGEN_REBOOT", "1")]);
    assert!(!out.status.success(), "the run went on:\n{}", stderr_of(&out));
    let said = stderr_of(&out);
    assert!(said.contains("the new initramfs lacks virtio_blk") && said.contains("nothing reboots"), "{said}");
    let now = std::fs::read(host.host_path("/boot/initramfs-virt")).expect("the initramfs");
    assert!(now == old, "the initramfs from before the run is back");
    assert!(!host.calls().iter().any(|c| c.program == "reboot"), "no reboot");
}

#[test]
fn a_kernel_installed_later_is_pruned_and_gets_its_initramfs() {
    if !sandbox::require() {
        return;
    }
    let host = self::host(&GUIDE);
    let kver = host.read("/usr/share/kernel/virt/kernel.release").trim().to_string();
    let next = "6.18.99-0-virt";
    // A kernel package under a new version: the same modules, copied before the run.
    let stage = format!(
        "mkdir -p /tmp/next/lib/modules && cp -a /lib/modules/{kver} /tmp/next/lib/modules/{next} && \
         rm -f /tmp/next/lib/modules/{next}/vmlinuz"
    );
    assert_success(&host.run(&stage, &[]), "staging the next kernel");
    assert_success(&run(&host, &common::script(&[]), &[]), "the run");
    let add = "apk mkpkg --info name:linux-virt-next --info version:6.18.99-r0 --info arch:x86_64 \
         --info description:next --files /tmp/next --output /tmp/next.apk && \
         apk add --no-network --allow-untrusted /tmp/next.apk";
    let out = host.run(add, &[]);
    if !out.status.success() && text(&out.stderr).contains("mkpkg") {
        // apk-tools 2 (the 3.22 userland) has no mkpkg: this test is for apk 3.
        panic!("apk mkpkg is missing: {}", text(&out.stderr));
    }
    assert_success(&out, "installing the next kernel");
    assert!(host.exists(&format!("/var/lib/mingen/modules-removed.{next}")), "the hook pruned {next}");
    let now = module_files(&host, next);
    assert_eq!(now, module_files(&host, &kver), "the same keep-set on the new kernel");
    assert_success(&host.run(&format!("modprobe -n -S {next} virtio_scsi"), &[]), "depmod ran for {next}");
    let mkinitfs: Vec<_> = host.calls().into_iter().filter(|c| c.program == "mkinitfs").collect();
    assert!(mkinitfs.iter().any(|c| c.args == vec![next.to_string()]), "{mkinitfs:?}");
    // The running kernel's package put in place again (a new build of the same version does
    // the same): every module is back, and the hook prunes the tree again.
    let pruned = module_files(&host, &kver);
    let hook_mkinitfs =
        || host.calls().into_iter().filter(|c| c.program == "mkinitfs" && c.args == [kver.clone()]).count();
    let before = hook_mkinitfs();
    assert_success(&host.run("apk fix --no-network --reinstall linux-virt", &[]), "reinstalling linux-virt");
    assert_eq!(module_files(&host, &kver), pruned, "the hook pruned the reinstalled {kver}");
    assert_success(&host.run(&format!("modprobe -n -S {kver} virtio_scsi"), &[]), "depmod ran for {kver}");
    assert_eq!(hook_mkinitfs(), before + 1, "the hook rebuilt {kver}'s initramfs after the reinstall");
}
