//! The probe script (`mingen probe`): linted and snapshotted, then run on every
//! sandbox host profile. On each it must change nothing, print facts that
//! `mingen --facts` accepts and that describe the host truthfully (the script
//! generated from them passes its preflight and runs), and comment rather than
//! guess where the host is one no target supports.

mod common;
mod sandbox;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use sandbox::Host;

/// The real apk, with each call recorded in the stand-ins' call log (as in
/// tests/host.rs): a wrapper in /usr/sbin, which comes before /sbin in PATH.
const APK_RECORDER: &str = "#!/bin/sh\n\
line=apk; for a in \"$@\"; do line=\"$line\t$a\"; done\n\
printf '%s\\n' \"$line\" >> /.sandbox/calls.log\n\
exec /sbin/apk \"$@\"\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn probe_script() -> String {
    common::script(&["probe"])
}

fn host(profile: &str) -> Host {
    let host = Host::build(profile);
    host.write("/usr/sbin/apk", APK_RECORDER);
    let out = host.run("chmod 0755 /usr/sbin/apk", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    host.clear_calls();
    host
}

/// The calls that could change state: everything but service status queries,
/// `sshd -T` (with the config file and arguments sshd is started with) and
/// read-only apk.
fn state_changing_calls(host: &Host) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter(|c| {
            let first = c.args.first().map(String::as_str);
            let read_only = match c.program.as_str() {
                // The applet comes after apk's global options (--no-network).
                "apk" => c.args.iter().find(|a| !a.starts_with('-')).map(String::as_str) == Some("info"),
                "rc-service" => c.args.len() == 2 && c.args[1] == "status",
                // -T: print the effective configuration and exit, whatever follows.
                "sshd" => first == Some("-T"),
                _ => false,
            };
            !read_only
        })
        .map(|c| c.line())
        .collect()
}

/// Every path under the host's root (minus the harness's own, [`sandbox::EXCLUDED`])
/// with its size, mode, owner, mtime and ctime: any write, chmod, creation or
/// removal shows, and it is quick to take (no content hashing).
fn stat_tree(host: &Host) -> BTreeMap<String, [i64; 8]> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, prefix: &str, map: &mut BTreeMap<String, [i64; 8]>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let entry = entry.expect("dir entry");
            let path = format!("{prefix}/{}", entry.file_name().to_string_lossy());
            if sandbox::EXCLUDED.contains(&path.as_str()) {
                continue;
            }
            let m = std::fs::symlink_metadata(entry.path()).expect("lstat");
            map.insert(
                path.clone(),
                [
                    m.size() as i64,
                    m.mode() as i64,
                    m.uid() as i64,
                    m.gid() as i64,
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                ],
            );
            if m.is_dir() {
                walk(&entry.path(), &path, map);
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(host.root(), "", &mut map);
    map
}

/// How two stat trees differ, one line a path.
fn stat_diff(before: &BTreeMap<String, [i64; 8]>, after: &BTreeMap<String, [i64; 8]>) -> Vec<String> {
    let mut diff: Vec<String> = before
        .iter()
        .filter(|(path, stat)| after.get(*path) != Some(stat))
        .map(|(path, _)| format!("{path} {}", if after.contains_key(path) { "changed" } else { "removed" }))
        .collect();
    diff.extend(after.keys().filter(|p| !before.contains_key(*p)).map(|p| format!("{p} added")));
    diff
}

/// Runs the probe on `host` and asserts that it changed nothing (no path
/// written, created, removed or chmod-ed; with `hash`, the harness's content
/// tree is compared too) and made no state-changing call, and that mingen
/// reads its output. Returns the output and the facts file's path (in `dir`).
fn probe(host: &Host, dir: &tempfile::TempDir, hash: bool) -> (String, String) {
    host.write("/root/script.sh", &probe_script());
    host.clear_calls();
    let tree = hash.then(|| host.tree());
    let before = stat_tree(host);
    let out: Output = host.run("sh /root/script.sh", &[]);
    assert!(out.status.success(), "the probe failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(stat_diff(&before, &stat_tree(host)), Vec::<String>::new(), "the probe changed the host");
    if let Some(tree) = tree {
        let diff = tree.diff(&host.tree());
        assert!(diff.is_empty(), "the probe changed the host:\n{diff}");
    }
    assert_eq!(state_changing_calls(host), Vec::<String>::new(), "the probe made state-changing calls");
    let output = text(&out.stdout);
    let file = dir.path().join("host.toml");
    std::fs::write(&file, &output).expect("write the facts file");
    let file = file.to_string_lossy().into_owned();
    let run = common::mingen(&["--facts", &file]);
    assert_eq!(run.status, 0, "mingen does not read the probe's output:\n{}\n{output}", run.stderr);
    (output, file)
}

/// The facts the probe wrote (`key = value` lines), values as TOML literals.
fn facts(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.split_once(" = ").unwrap_or_else(|| panic!("not a fact line: {l:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// Whether the machine's kernel (whose /proc/cmdline the sandbox's hosts read) has
/// `console=ttyS0`, where every profile but those that say otherwise has a getty.
fn machine_console_is_ttys0() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w.starts_with("console=ttyS0"))
}

/// The guide's host as the probe must see it, with `changes` over it.
fn expected(changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut facts: BTreeMap<String, String> = [
        ("target", "\"alpine-3.23-kvm\""),
        ("install", "\"sys\""),
        ("disk", "\"vda\""),
        ("hypervisor", "\"kvm\""),
        ("boot_loader", "\"extlinux\""),
        ("ipv6", "\"unused\""),
        // The guide host runs qemu-guest-agent: kept because it runs.
        ("guest_agent", "\"keep\""),
        ("balloon", "\"remove\""),
        ("ntp", "\"busybox\""),
        ("python", "\"remove\""),
        ("network", "\"static\""),
        ("ssh", "\"dropbear\""),
        ("ssh_ports", "[22]"),
        ("ssh_password_auth", "\"yes\""),
        ("ssh_root_login", "\"prohibit-password\""),
        // root logs in with the operator's key (no forced command): sudo and doas may go.
        ("sudo_doas", "\"auto\""),
        // extlinux boots the host from /boot: the new boot configuration is tried once.
        ("boot_trial", "\"once\""),
        // The gettys of the kernel's console= (the sandbox reads the machine's
        // /proc/cmdline) and of tty1 stay; no container runtime is installed.
        ("consoles", if machine_console_is_ttys0() { "[\"ttyS0\", \"tty1\"]" } else { "[\"tty1\"]" }),
        ("containers", "\"none\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in changes {
        facts.insert(k.to_string(), v.to_string());
    }
    facts
}

/// Probe the profile's host, check the facts, run the script generated from
/// them on the same host (its preflight must pass), then probe again: the
/// facts read back from the minimised host (dropbear's options included) are
/// the same.
fn round_trip(profile: &str, changes: &[(&str, &str)]) {
    round_trip_without(profile, changes, &[]);
}

/// [`round_trip`], where the facts in `absent` are left out.
fn round_trip_without(profile: &str, changes: &[(&str, &str)], absent: &[&str]) {
    let host = host(profile);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, file) = probe(&host, &dir, true);
    eprintln!("{profile}: the probe says:\n{output}");
    let mut want = expected(changes);
    for key in absent {
        want.remove(*key);
    }
    assert_eq!(facts(&output), want, "{profile}: facts\n{output}");

    let script = common::script(&["--facts", &file]);
    let out = host.run_script(&script, &[]);
    assert!(
        out.status.success(),
        "{profile}: the script from the probe's facts failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("preflight: the host matches the facts"));

    let dir_after = tempfile::tempdir().expect("temp dir");
    let (after, _) = probe(&host, &dir_after, false);
    eprintln!("{profile}: after the run, the probe says:\n{after}");
    assert!(after.contains("DROPBEAR_OPTS"), "{profile}: read back from dropbear:\n{after}");
    assert_eq!(facts(&after), want, "{profile}: facts read back after the run\n{after}");
}

#[test]
fn probe_is_shellcheck_clean_and_snapshotted() {
    let text = probe_script();
    common::shellcheck("probe", &text);
    assert!(text.trim_end().ends_with("main \"$@\" || exit 1"), "main is called last");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description("mingen probe");
    settings.bind(|| insta::assert_snapshot!("probe", common::without_version(&text)));
}

#[test]
fn guide_host() {
    if sandbox::require() {
        round_trip("guide", &[]);
    }
}

#[test]
fn sda_host() {
    if sandbox::require() {
        round_trip("sda", &[("disk", "\"sda\"")]);
    }
}

#[test]
fn alpine_322_host() {
    if sandbox::require_for("alpine-3.22") {
        round_trip("alpine-3.22", &[("target", "\"alpine-3.22-kvm\"")]);
    }
}

#[test]
fn dhcp_host() {
    if sandbox::require() {
        round_trip("dhcp", &[("network", "\"dhcp\"")]);
    }
}

#[test]
fn ipv6_host() {
    if sandbox::require() {
        round_trip("ipv6", &[("ipv6", "\"used\"")]);
    }
}

#[test]
fn ssh_2222_host() {
    if sandbox::require() {
        round_trip("ssh-2222", &[("ssh_ports", "[2222]"), ("ssh_password_auth", "\"no\"")]);
    }
}

#[test]
fn grub_uefi_host() {
    if sandbox::require() {
        round_trip("grub-uefi", &[("boot_loader", "\"grub\""), ("boot_trial", "\"off\"")]);
    }
}

#[test]
fn efi_stub_host() {
    if sandbox::require() {
        // Its kernel's console is tty0 (alpine-make-vm-image): the gettys of tty1 stay.
        round_trip(
            "efi-stub",
            &[("boot_loader", "\"efi-stub\""), ("consoles", "[\"tty1\"]"), ("boot_trial", "\"off\"")],
        );
    }
}

/// A Xen guest, HVM and PV: /sys/hypervisor/type says xen, the disk is xvda;
/// no qemu-guest-agent runs, and the balloon fact does not apply.
#[test]
fn xen_hosts() {
    if sandbox::require() {
        let xen = [("hypervisor", "\"xen\""), ("disk", "\"xvda\""), ("guest_agent", "\"remove\"")];
        round_trip_without("xen-hvm", &xen, &["balloon"]);
        // A PV guest's console is hvc0, where its inittab has no getty: tty1's stays.
        let pv = [xen[0], xen[1], xen[2], ("consoles", "[\"tty1\"]")];
        round_trip_without("xen-pv", &pv, &["balloon"]);
    }
}

/// A diskless host: the root is a tmpfs and a modloop is mounted; no disk and
/// no boot loader and no boot trial to name.
#[test]
fn diskless_host() {
    if sandbox::require() {
        round_trip_without("diskless", &[("install", "\"diskless\"")], &["disk", "boot_loader", "boot_trial"]);
    }
}

/// A Xen disk where the hypervisor is not seen to be Xen: the probe writes no
/// `disk` (a guess would be `vda`, the default) and says why; the rest still parses.
#[test]
fn xen_disk_is_a_comment_not_a_guess() {
    if !sandbox::require() {
        return;
    }
    let host = host("guide");
    let mounts = host.read("/proc/mounts").replace("/dev/vda ", "/dev/xvda1 ");
    host.write("/proc/mounts", &mounts);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, _) = probe(&host, &dir, false);
    eprintln!("{output}");
    let facts = facts(&output);
    assert!(!facts.contains_key("disk"), "{output}");
    let comment = output
        .lines()
        .find(|l| l.starts_with("# CHECK:") && l.contains("xvda"))
        .unwrap_or_else(|| panic!("no comment about xvda:\n{output}"));
    assert!(comment.contains("not recognised as Xen") && comment.contains("preflight will stop"), "{comment}");
    assert_eq!(facts.get("target").map(String::as_str), Some("\"alpine-3.23-kvm\""));
}

/// One change to the guide's host: files to write, then a command to run; the
/// facts that change, the ones left out, and what the comments must say.
struct Variation {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    prepare: &'static str,
    changes: &'static [(&'static str, &'static str)],
    absent: &'static [&'static str],
    says: &'static [&'static str],
}

const VARIATIONS: &[Variation] = &[
    Variation {
        name: "sshd -T as OpenSSH prints it: listenaddress with ports, without-password",
        files: &[(
            "/usr/sbin/sshd",
            "#!/bin/sh\nprintf 'port 22\\nlistenaddress [::]:22\\nlistenaddress 0.0.0.0:22\\n\
             passwordauthentication yes\\npermitrootlogin without-password\\n'\n",
        )],
        prepare: "chmod 0755 /usr/sbin/sshd",
        changes: &[],
        absent: &[],
        says: &["# SSH settings from sshd -T: port(s) 22,", "sshd listens on IPv6 too ([::])"],
    },
    Variation {
        name: "tools missing: no rc-service, apk or ip",
        files: &[],
        prepare: "rm /sbin/rc-service /sbin/apk /usr/sbin/apk /sbin/ip",
        changes: &[],
        absent: &[],
        says: &["not compared with the address in use"],
    },
    Variation {
        name: "the agent stopped",
        files: &[],
        prepare: "rm /run/openrc/started/qemu-guest-agent",
        changes: &[("guest_agent", "\"remove\"")],
        absent: &[],
        says: &["qemu-guest-agent is installed but stopped, in runlevel(s) default: removed"],
    },
    Variation {
        name: "python3 asked for, chrony on a PTP clock, the balloon inflated",
        files: &[("/proc/vmstat", "nr_free_pages 1000\nballoon_inflate 5120\nballoon_deflate 0\n")],
        prepare: "echo python3 >>/etc/apk/world && echo 'refclock PHC /dev/ptp0 poll 2' >>/etc/chrony/chrony.conf",
        changes: &[("python", "\"keep\""), ("ntp", "\"chrony\""), ("balloon", "\"keep\"")],
        absent: &[],
        says: &["/etc/apk/world asks for Python (python3)", "reference clock (refclock PHC)", "balloon_inflate 5120"],
    },
    Variation {
        name: "a Xen guest on xvda, with GRUB files too",
        files: &[
            ("/sys/hypervisor/type", "xen\n"),
            ("/sys/class/dmi/id/sys_vendor", "Xen\n"),
            ("/sys/class/dmi/id/product_name", "HVM domU\n"),
            ("/sys/devices/system/clocksource/clocksource0/current_clocksource", "xen\n"),
            ("/boot/grub/grub.cfg", ""),
        ],
        prepare: "sed -i 's|^/dev/vda |/dev/xvda1 |' /proc/mounts",
        changes: &[("hypervisor", "\"xen\""), ("disk", "\"xvda\"")],
        absent: &["boot_loader", "balloon"],
        says: &[
            "# hypervisor: Xen, HVM guest",
            "# the root filesystem is on /dev/xvda1: xvda, a Xen disk (xen-blkfront, built into linux-virt)",
            "# CHECK: more than one boot loader is configured (extlinux grub)",
        ],
    },
    Variation {
        name: "no default route readable, DHCP for a second interface the ifupdown-ng way",
        files: &[],
        prepare: "rm /proc/net/route && printf '\\nauto eth1\\niface eth1\\n\\tuse dhcp\\n' >>/etc/network/interfaces",
        changes: &[("network", "\"dhcp\"")],
        absent: &[],
        says: &["configures DHCP (iface eth1 use dhcp): dhcpcd stays"],
    },
    Variation {
        name: "dropbear already runs, with options the facts carry and some they do not",
        files: &[],
        prepare: "apk add --quiet dropbear && rc-service sshd stop >/dev/null && rc-service dropbear start >/dev/null \
            && echo 'DROPBEAR_OPTS=\"-w -p [2001:db8::5]:2200 -p 22 -W 65536 -s\"' >>/etc/conf.d/dropbear",
        changes: &[("ssh_ports", "[22, 2200]"), ("ssh_password_auth", "\"no\""), ("ssh_root_login", "\"no\"")],
        absent: &[],
        says: &[
            "# SSH settings from /etc/conf.d/dropbear: port(s) 22 2200,",
            "# CHECK: dropbear listens on [2001:db8::5]:2200: the facts carry ports only",
            "DROPBEAR_OPTS also holds -W 65536",
        ],
    },
];

/// Each variation of the guide's host, probed: the facts that change, the
/// ones left out, and the comments that say why.
#[test]
fn variations_of_the_guide_host() {
    if !sandbox::require() {
        return;
    }
    for v in VARIATIONS {
        let host = host("guide");
        for (path, content) in v.files {
            host.write(path, content);
        }
        let out = host.run(v.prepare, &[]);
        assert!(out.status.success(), "{}: prepare: {}", v.name, text(&out.stderr));
        let dir = tempfile::tempdir().expect("temp dir");
        let (output, _) = probe(&host, &dir, false);
        let mut want = expected(v.changes);
        for key in v.absent {
            want.remove(*key);
        }
        assert_eq!(facts(&output), want, "{}: facts\n{output}", v.name);
        for words in v.says {
            assert!(output.contains(words), "{}: no {words:?} in\n{output}", v.name);
        }
    }
}

/// An sda on a SATA controller: the sda target's initramfs (scsi, virtio, no
/// ata) would not boot it, though the preflight would pass, so no `disk`.
#[test]
fn sata_disk_is_a_comment_not_a_guess() {
    if !sandbox::require() {
        return;
    }
    let host = host("sda");
    let device = "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block";
    let out = host.run(
        &format!("mkdir -p {device} && mv /sys/block/sda {device}/sda && ln -s ../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda /sys/block/sda"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, _) = probe(&host, &dir, false);
    assert!(!facts(&output).contains_key("disk"), "{output}");
    assert!(
        output.contains("# CHECK: the root filesystem is on /dev/sda: sda, but its controller is not virtio-scsi"),
        "{output}"
    );
}

/// sshd settings dropbear cannot carry keep OpenSSH, and a value mingen has no
/// word for is left out; a stanza without a gateway keeps dhcpcd. Each is a
/// CHECK comment, and the script from these facts passes its preflight.
#[test]
fn what_cannot_be_carried_keeps_the_safe_value() {
    if !sandbox::require() {
        return;
    }
    let host = host("guide");
    let config = host.read("/etc/ssh/sshd_config");
    let config = config
        .replace("\n#ListenAddress 0.0.0.0\n", "\nListenAddress 203.0.113.5\n")
        .replace("\n#PermitRootLogin prohibit-password\n", "\nPermitRootLogin forced-commands-only\n");
    host.write("/etc/ssh/sshd_config", &config);
    let interfaces = host.read("/etc/network/interfaces").replace("\tgateway 203.0.113.1\n", "");
    host.write("/etc/network/interfaces", &interfaces);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, file) = probe(&host, &dir, false);
    eprintln!("{output}");
    let facts = facts(&output);
    assert_eq!(facts.get("ssh").map(String::as_str), Some("\"openssh\""), "{output}");
    assert!(!facts.contains_key("ssh_root_login"), "{output}");
    assert_eq!(facts.get("network").map(String::as_str), Some("\"dhcp\""), "{output}");
    for words in [
        "CHECK: sshd listens only on 203.0.113.5",
        "CHECK: sshd has PermitRootLogin forced-commands-only",
        "lacks: gateway",
    ] {
        assert!(output.contains(words), "no {words:?}:\n{output}");
    }
    // The preflight agrees: the script from these facts gets past it.
    let out = host.run_script(&common::script(&["--facts", &file]), &[("MINGEN_DRY_RUN", "1")]);
    assert!(out.status.success(), "the dry run failed:\n{}", text(&out.stderr));
}
