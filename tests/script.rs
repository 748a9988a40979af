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
fn nvme() {
    check("nvme", &["--disk", "nvme0n1"]);
}

#[test]
fn grub_uefi() {
    check("grub_uefi", &["--boot-loader", "grub"]);
}

#[test]
fn efi_stub() {
    check("efi_stub", &["--boot-loader", "efi-stub"]);
}

#[test]
fn xen() {
    check("xen", &["--hypervisor", "xen", "--disk", "xvda"]);
}

#[test]
fn diskless() {
    check("diskless", &["--install", "diskless"]);
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

/// The script for the guide's host, as `mingen > minimise.sh` prints it, stays within
/// its size budget (issue 12, item 4). The goal is 32 KiB; without dropping a
/// check, the undo or the programs the host keeps, it is at this budget for now, and a
/// change that makes it larger must raise the budget knowingly: 60 KiB, then 62 KiB for
/// the disk goal of issue 9 (rule initramfs-backup-drop's boot script, and the pruning of
/// what never loads: 1.6 KB for 11 MB less disk used), then 74 KiB for the boot trial
/// (issue 10, 11 KiB with its program).
const GUIDE_SCRIPT_BUDGET: usize = 74 * 1024;

#[test]
fn the_guide_hosts_script_stays_within_its_size_budget() {
    let size = script(&[]).len();
    assert!(
        size <= GUIDE_SCRIPT_BUDGET,
        "the guide host's script is {size} bytes, over its budget of {GUIDE_SCRIPT_BUDGET}"
    );
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

/// `--compact` drops comment lines, blank lines and indentation and nothing else:
/// every other line, and every line of the files it writes (heredocs) but the later
/// comment lines of a file that opens with one, is kept in order; it stays
/// shellcheck-clean; `--gzip` of user-data fits EC2's 16 KiB without the boot trial,
/// and says when it does not.
#[test]
fn compact_scripts_keep_every_line_but_comments_and_user_data_fits_gzipped() {
    for args in [&[][..], &["--format", "user-data"][..], &["--disk", "sda", "--ssh", "openssh"][..], &["probe"][..]] {
        let full = script(args);
        let compact = script(&[args, &["--compact"][..]].concat());
        common::shellcheck(&format!("{args:?} --compact"), &compact);
        let mut kept = compact.lines().peekable();
        let mut in_heredoc: Option<String> = None;
        // In a file the script writes: its first line, once read.
        let mut first_line: Option<&str> = None;
        for line in full.lines() {
            // Comments go, but not in the files the script writes: only in mingen's
            // own programs (undo.sh, the pruning program, the scripts the rules write).
            let own = ["MINGEN_UNDO", "MINGEN_PRUNE", "MINGEN_PROGRAM", "MINGEN_TRIAL"];
            let in_file = in_heredoc.as_deref().is_some_and(|end| !own.contains(&end) || line == end);
            let file_comment = in_file
                && in_heredoc.as_deref() != Some(line)
                && first_line.is_some_and(|first| first.starts_with('#') && !first.starts_with("#!"))
                && line.starts_with('#');
            if in_file && first_line.is_none() {
                first_line = Some(line);
            }
            let dropped = file_comment
                || !in_file
                    && (line.trim().is_empty()
                        || (line.trim_start().starts_with('#')
                            && !line.trim_start().starts_with("#!")
                            && !line.trim_start().starts_with("# shellcheck ")));
            let expected = if in_file { line } else { line.trim_start() };
            if let Some(end) = &in_heredoc {
                if line == end {
                    in_heredoc = None;
                }
            } else if let Some((_, rest)) = line.split_once("<<'") {
                in_heredoc = rest.split_once('\'').map(|(end, _)| end.to_string());
                first_line = None;
            }
            if dropped {
                continue;
            }
            assert_eq!(kept.next(), Some(expected), "{args:?}: the compact form lost or changed a line");
        }
        assert_eq!(kept.next(), None, "{args:?}: the compact form has lines the commented one lacks");
        assert!(compact.len() < full.len(), "{args:?}: compact {} vs {} bytes", compact.len(), full.len());
    }
    // Gzip'd compact user-data fits EC2's 16 KiB without the boot trial; with it (the
    // default on extlinux) it does not, and mingen says so on stderr.
    for (extra, fits) in [(&[][..], false), (&["--boot-trial", "off"][..], true)] {
        let args = [&["--format", "user-data", "--compact", "--gzip"][..], extra].concat();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mingen")).args(&args).output().expect("run mingen");
        assert!(out.status.success());
        let (size, said) = (out.stdout.len(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(size < 16 * 1024, fits, "{args:?}: gzipped user-data is {size} bytes");
        let warned = said.contains(&format!("this user-data is {size} bytes, over EC2's limit of 16384"));
        assert_eq!(warned, !fits, "{args:?}: {said}");
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&out.stdout[..]), &mut unzipped)
            .expect("gunzip");
        let plain: Vec<&str> = args.iter().copied().filter(|a| *a != "--gzip").collect();
        assert_eq!(unzipped, script(&plain));
    }
}

/// The scripts a generated script writes (undo.sh, the pruning program, the boot
/// and apk hooks) are generated scripts too: each is shellcheck-clean.
#[test]
fn every_script_the_script_writes_is_shellcheck_clean() {
    let text = script(&["--format", "user-data"]);
    let mut found = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((_, rest)) = line.split_once("<<'") else { continue };
        let Some((end, _)) = rest.split_once('\'') else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != end).collect();
        if body.first() == Some(&"#!/bin/sh") {
            found += 1;
            common::shellcheck(&format!("the heredoc {end} after `{}`", line.trim()), &(body.join("\n") + "\n"));
        }
    }
    assert!(found >= 6, "undo.sh, prune-modules.sh, two apk hooks, two boot scripts and the one-shot: found {found}");
}
