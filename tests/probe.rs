//! The probe script (`mingen probe`): linted and snapshotted, then run on every
//! sandbox host profile. On each it must change nothing, print facts that
//! `mingen --facts` accepts and that describe the host truthfully (the script
//! generated from them passes its preflight and runs), and comment rather than
//! guess where the host is one no target supports.

mod common;
mod sandbox;

use std::collections::BTreeMap;
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
/// `sshd -T` and read-only apk.
fn state_changing_calls(host: &Host) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter(|c| {
            let first = c.args.first().map(String::as_str);
            let read_only = match c.program.as_str() {
                "apk" => first == Some("info"),
                "rc-service" => c.args.len() == 2 && c.args[1] == "status",
                "sshd" => c.args == ["-T"],
                _ => false,
            };
            !read_only
        })
        .map(|c| c.line())
        .collect()
}

/// Runs the probe on `host`, asserts it changed nothing and that mingen reads
/// its output; returns the output and the facts file's path (kept in `dir`).
fn probe(host: &Host, dir: &tempfile::TempDir) -> (String, String) {
    host.clear_calls();
    let before = host.tree();
    let out: Output = host.run_script(&probe_script(), &[]);
    assert!(out.status.success(), "the probe failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    let diff = before.diff(&host.tree());
    assert!(diff.is_empty(), "the probe changed the host:\n{diff}");
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

/// The guide's host as the probe must see it, with `changes` over it.
fn expected(changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut facts: BTreeMap<String, String> = [
        ("target", "\"alpine-3.23-kvm\""),
        ("disk", "\"vda\""),
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
    let host = host(profile);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, file) = probe(&host, &dir);
    eprintln!("{profile}: the probe says:\n{output}");
    let want = expected(changes);
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
    let (after, _) = probe(&host, &dir_after);
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
    if sandbox::require() {
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

/// A Xen disk: no target supports it, so the probe writes no `disk` (a guess
/// would be `vda`, the default) and says why; the rest still parses.
#[test]
fn xen_disk_is_a_comment_not_a_guess() {
    if !sandbox::require() {
        return;
    }
    let host = host("guide");
    let mounts = host.read("/proc/mounts").replace("/dev/vda ", "/dev/xvda1 ");
    host.write("/proc/mounts", &mounts);
    let dir = tempfile::tempdir().expect("temp dir");
    let (output, _) = probe(&host, &dir);
    eprintln!("{output}");
    let facts = facts(&output);
    assert!(!facts.contains_key("disk"), "{output}");
    let comment = output
        .lines()
        .find(|l| l.starts_with("# CHECK:") && l.contains("xvda"))
        .unwrap_or_else(|| panic!("no comment about xvda:\n{output}"));
    assert!(comment.contains("no target supports it") && comment.contains("preflight will stop"), "{comment}");
    assert_eq!(facts.get("target").map(String::as_str), Some("\"alpine-3.23-kvm\""));
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
    let (output, _) = probe(&host, &dir);
    assert!(!facts(&output).contains_key("disk"), "{output}");
    assert!(output.contains("# CHECK: the root filesystem is on /dev/sda: sda, but its controller is not virtio-scsi"), "{output}");
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
    let (output, file) = probe(&host, &dir);
    eprintln!("{output}");
    let facts = facts(&output);
    assert_eq!(facts.get("ssh").map(String::as_str), Some("\"openssh\""), "{output}");
    assert!(!facts.contains_key("ssh_root_login"), "{output}");
    assert_eq!(facts.get("network").map(String::as_str), Some("\"dhcp\""), "{output}");
    for words in ["CHECK: sshd listens only on 203.0.113.5", "CHECK: sshd has PermitRootLogin forced-commands-only", "lacks: gateway"] {
        assert!(output.contains(words), "no {words:?}:\n{output}");
    }
    // The preflight agrees: the script from these facts gets past it.
    let out = host.run_script(&common::script(&["--facts", &file]), &[("MINGEN_DRY_RUN", "1")]);
    assert!(out.status.success(), "the dry run failed:\n{}", text(&out.stderr));
}
