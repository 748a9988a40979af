//! The command line, driven through the real binary: subcommands, facts from file
//! and flags, and the errors bad input gets (nothing on stdout, exit status 1).

mod common;

use common::{mingen, script};
use std::io::Write;

fn facts_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
    file.write_all(text.as_bytes()).expect("write facts");
    file
}

#[test]
fn default_output_is_the_script_for_the_guide_host() {
    let text = script(&[]);
    assert!(text.starts_with("#!/bin/sh\n"));
    assert!(text.ends_with("\nmain \"$@\" || exit 1\n"), "the last line ends with a newline");
    assert!(text.contains("#   disk = \"vda\""));
    assert_eq!(text, script(&["script"]));
}

#[test]
fn a_facts_file_feeds_the_script_and_flags_override_it() {
    let file = facts_file("disk = \"sda\"\nntp = \"none\"\n");
    let path = file.path().to_str().unwrap();
    let text = script(&["--facts", path]);
    assert!(text.contains("#   disk = \"sda\"") && text.contains("#   ntp = \"none\""));
    let text = script(&["--facts", path, "--disk", "vda"]);
    assert!(text.contains("#   disk = \"vda\"") && text.contains("#   ntp = \"none\""));
}

#[test]
fn facts_prints_a_file_that_reads_back_to_the_same_script() {
    let run = mingen(&["facts", "--disk", "sda", "--ipv6", "used", "--ssh-port", "2222"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("disk = \"sda\"") && run.stdout.contains("# one of: vda, sda"));
    let file = facts_file(&run.stdout);
    let from_file = script(&["--facts", file.path().to_str().unwrap()]);
    assert_eq!(from_file, script(&["--disk", "sda", "--ipv6", "used", "--ssh-port", "2222"]));
}

#[test]
fn a_bad_value_names_file_line_key_and_allowed_values() {
    let file = facts_file("ipv6 = \"unused\"\ndisk = \"hda\"\n");
    let path = file.path().to_str().unwrap();
    let run = mingen(&["--facts", path]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(run.stderr.contains(&format!("{path}:2")), "{}", run.stderr);
    assert!(
        run.stderr.contains("`disk`") && run.stderr.contains("`hda`") && run.stderr.contains("vda, sda"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_key_a_wrong_type_and_a_bad_file_are_errors() {
    for (text, key, line) in [
        ("disk = \"vda\"\n\ndsik = \"sda\"\n", "dsik", 3),
        ("ssh_ports = 22\n", "ssh_ports", 1),
        ("ssh_ports = [0]\n", "ssh_ports", 1),
        ("network = \"dhcp\"\nssh = true\n", "ssh", 2),
    ] {
        let file = facts_file(text);
        let path = file.path().to_str().unwrap();
        let run = mingen(&["--facts", path]);
        assert_eq!(run.status, 1, "{text}");
        assert!(run.stdout.is_empty());
        assert!(
            run.stderr.contains(&format!("{path}:{line}")) && run.stderr.contains(&format!("`{key}`")),
            "{text}: {}",
            run.stderr
        );
    }
    let file = facts_file("disk = \"vda\n");
    let run = mingen(&["--facts", file.path().to_str().unwrap()]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty() && run.stderr.contains(":1:"), "{}", run.stderr);
    let run = mingen(&["--facts", "/nonexistent/host.toml"]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("/nonexistent/host.toml"), "{}", run.stderr);
}

#[test]
fn a_bad_flag_or_target_is_an_error_with_nothing_on_stdout() {
    let run = mingen(&["--disk", "hda"]);
    assert_ne!(run.status, 0);
    assert!(run.stdout.is_empty() && run.stderr.contains("hda"), "{}", run.stderr);
    let run = mingen(&["--target", "alpine-9-kvm"]);
    assert_ne!(run.status, 0);
    assert!(run.stdout.is_empty() && run.stderr.contains("alpine-3.23-kvm"), "{}", run.stderr);
}

#[test]
fn a_bad_port_names_the_flag_or_the_line_and_says_what_a_port_is() {
    for (args, wanted) in [
        (&["--ssh-port", "0"][..], "0 is not a port: ports are 1 to 65535"),
        (&["--ssh-ports", "22,22"][..], "port 22 is listed twice"),
        (&["--ssh-ports", "ssh"][..], "`ssh` is not a port"),
    ] {
        let run = mingen(args);
        assert_ne!(run.status, 0, "{args:?}");
        assert!(run.stdout.is_empty());
        assert!(run.stderr.contains("--ssh-ports") && run.stderr.contains(wanted), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("command line:0"), "{}", run.stderr);
    }
    let file = facts_file("disk = \"vda\"\nssh_ports = [-1]\n");
    let run = mingen(&["--facts", file.path().to_str().unwrap()]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains(":2:") && run.stderr.contains("-1 is not a port"), "{}", run.stderr);
    assert!(!run.stderr.contains("u16"), "{}", run.stderr);
    let run = mingen(&["--ssh-ports", "2222,22"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("ssh_ports = [2222, 22]"));
}

#[test]
fn a_facts_file_that_is_not_text_or_is_endless_is_refused_with_its_line() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
    file.write_all(b"disk = \"vda\"\nntp = \"\xff\"\n").expect("write facts");
    let run = mingen(&["--facts", file.path().to_str().unwrap()]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty() && run.stderr.contains("line 2 is not UTF-8"), "{}", run.stderr);
    let started = std::time::Instant::now();
    let run = mingen(&["--facts", "/dev/zero"]);
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("/dev/zero") && run.stderr.contains("larger than"), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "reading /dev/zero must stop early");
}

#[test]
fn facts_that_cannot_take_effect_and_facts_given_to_probe_are_errors() {
    let run = mingen(&["--ssh", "openssh", "--ssh-password-auth", "no"]);
    assert_ne!(run.status, 0);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("--ssh-password-auth has no effect") && run.stderr.contains("ssh is openssh"),
        "{}",
        run.stderr
    );
    for args in [&["probe", "--disk", "sda"][..], &["targets", "--ntp", "none"][..]] {
        let run = mingen(args);
        assert_ne!(run.status, 0, "{args:?}");
        assert!(run.stdout.is_empty() && run.stderr.contains("reads no facts"), "{args:?}: {}", run.stderr);
    }
    assert_eq!(mingen(&["probe"]).status, 0);
}

#[test]
fn plan_lists_every_rule_with_its_decision() {
    let run = mingen(&["plan", "--network", "dhcp"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let line = |id: &str| {
        run.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} missing:\n{}", run.stdout))
            .to_string()
    };
    assert!(line("dhcpcd-remove").contains("skipped") && line("dhcpcd-remove").contains("network = dhcp"));
    assert!(line("module-blacklist").contains("applied") && line("module-blacklist").contains("always"));
    assert!(line("ntpd-on").contains("applied") && line("ntpd-on").contains("ntp = busybox"));
    // every rule of the target appears, and in the script too
    let script = script(&["--network", "dhcp"]);
    for id in [
        "module-blacklist",
        "initramfs-features",
        "kernel-cmdline",
        "initramfs-rebuild",
        "dropbear-install",
        "ssh-switch",
        "ssh-runlevels",
        "openssh-remove",
        "cloud-init-remove",
        "chrony-remove",
        "ntpd-on",
        "tools-remove",
        "guest-agent-remove",
        "orphans-remove",
        "apk-cache-clear",
        "boot-services-off",
        "clock-osclock",
        "sysctl-ipv6-off",
        "sysfs-debug-off",
        "sysctl-tuning",
        "syslog-ring-buffer",
        "read-ahead",
        "report-after-boot",
        "reboot",
    ] {
        assert!(line(id).contains("applied"), "{id}");
        assert!(script.contains(&format!("rule_{}()", id.replace('-', "_"))), "{id} not in the script");
    }
}

#[test]
fn explain_gives_the_whole_explanation_or_names_the_unknown_rule() {
    let run = mingen(&["explain", "boot-services-off"]);
    assert_eq!(run.status, 0);
    for section in ["What it does:", "Why:", "Risk:", "Undo:", "power button"] {
        assert!(run.stdout.contains(section), "{section}: {}", run.stdout);
    }
    let run = mingen(&["explain", "no-such-rule"]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty() && run.stderr.contains("no-such-rule"), "{}", run.stderr);
}

#[test]
fn targets_lists_both_releases_and_help_has_examples() {
    let run = mingen(&["targets"]);
    assert!(run.stdout.contains("alpine-3.23-kvm") && run.stdout.contains("alpine-3.22-kvm"));
    let run = mingen(&["--help"]);
    assert_eq!(run.status, 0);
    assert!(run.stdout.contains("Examples:") && run.stdout.contains("--facts"));
    let run = mingen(&["--version"]);
    assert!(run.stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_script_comes_with_its_size_and_sha256_and_a_cut_paste_fails_loudly() {
    use sha2::Digest;
    let run = mingen(&[]);
    assert_eq!(run.status, 0);
    let sum: String = sha2::Sha256::digest(run.stdout.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(run.stderr.contains(&format!("{} bytes, sha256 {sum}", run.stdout.len())), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("echo '{sum}  minimise.sh' | sha256sum -c -")), "{}", run.stderr);
    assert!(mingen(&["plan"]).stderr.is_empty(), "only scripts carry the note");
    // A paste that lost its end: the functions are defined, main never runs.
    let cut: String = run.stdout.lines().take_while(|l| !l.starts_with("main \"$@\"")).collect::<Vec<_>>().join("\n");
    let out = std::process::Command::new("sh").arg("-c").arg(&cut).output().expect("run sh");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ended before main ran"));
}

#[test]
fn plan_fills_every_placeholder_even_for_skipped_rules() {
    let run = mingen(&["plan", "--disk", "sda", "--network", "dhcp"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("sets /sys/block/sda/queue/read_ahead_kb"), "{}", run.stdout);
    assert!(!run.stdout.contains('@'), "an unfilled placeholder:\n{}", run.stdout);
}

#[test]
fn plan_compares_the_expected_figures_with_the_budgets() {
    let run = mingen(&["plan"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let expected = run.stdout.split("\nexpected after the run").nth(1).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        expected.contains("within the budget of 23 MB") && expected.contains("within the budget of 72 MB"),
        "{expected}"
    );
    assert!(run.stdout.contains("saved on the bench: RAM "), "rules carry their measured savings");
    let tight = mingen(&["plan", "--ram-budget-mb", "10", "--disk-budget-mb", "20"]);
    assert!(tight.stdout.contains("over the budget of 10 MB") && tight.stdout.contains("over the budget of 20 MB"));
    // Facts that leave out a measured rule expect what it saved back.
    let disk = |out: &str| -> f64 {
        let line = out.lines().find(|l| l.trim_start().starts_with("disk used")).expect("a disk line");
        line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let unpruned = mingen(&["plan", "--modules-prune", "off"]);
    assert!(disk(&unpruned.stdout) > disk(&run.stdout) + 30.0, "{}", unpruned.stdout);

    let file = facts_file("ram_budget_mb = 0\n");
    let bad = mingen(&["plan", "--facts", file.path().to_str().unwrap()]);
    assert_eq!(bad.status, 1);
    assert!(
        bad.stderr.contains(":1") && bad.stderr.contains("ram_budget_mb") && bad.stderr.contains("1 to"),
        "{}",
        bad.stderr
    );
}
