//! The generated scripts: one snapshot per fact set (under top-level `snapshots/`),
//! each linted by shellcheck before it is compared.

mod common;

use common::{script, shellcheck, without_version};

/// Lint first, then compare with the snapshot named after the facts.
fn check(name: &str, args: &[&str]) {
    let text = script(args);
    shellcheck(name, &text);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!("mingen {}", args.join(" ")));
    settings.bind(|| insta::assert_snapshot!(name, without_version(&text)));
}

#[test]
fn guide_host() {
    check("guide_host", &[]);
}

#[test]
fn sda() {
    check("sda", &["--disk", "sda"]);
}

#[test]
fn ipv6_used() {
    check("ipv6_used", &["--ipv6", "used"]);
}

#[test]
fn guest_agent_kept() {
    check("guest_agent_kept", &["--guest-agent", "keep"]);
}

#[test]
fn ntp_none() {
    check("ntp_none", &["--ntp", "none"]);
}

#[test]
fn ntp_chrony() {
    check("ntp_chrony", &["--ntp", "chrony"]);
}

#[test]
fn dhcp() {
    check("dhcp", &["--network", "dhcp"]);
}

#[test]
fn openssh_kept() {
    check("openssh_kept", &["--ssh", "openssh"]);
}

#[test]
fn alpine_3_22() {
    check("alpine_3_22", &["--target", "alpine-3.22-kvm"]);
}

#[test]
fn ssh_2222_no_password() {
    check("ssh_2222_no_password", &["--ssh-port", "2222", "--ssh-password-auth", "no"]);
}

#[test]
fn user_data() {
    check("user_data", &["--format", "user-data"]);
}

#[test]
fn python_kept() {
    check("python_kept", &["--python", "keep", "--balloon", "keep"]);
}

/// Every snapshot on disk is linted, whichever test wrote it.
#[test]
fn every_snapshot_is_shellcheck_clean() {
    let dir = common::root().join("snapshots");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("snapshots/ exists") {
        let path = entry.expect("read snapshots/").path();
        if path.extension().is_some_and(|e| e == "snap") {
            let text = std::fs::read_to_string(&path).expect("read snapshot");
            // insta's header is a YAML block between `---` lines; the script follows it.
            let body = text.splitn(3, "---\n").nth(2).expect("insta header");
            assert!(body.starts_with("#!/bin/sh\n"), "{} is not a script", path.display());
            shellcheck(&path.display().to_string(), body);
            seen += 1;
        }
    }
    assert!(seen >= 9, "only {seen} snapshots found in {}", dir.display());
}
