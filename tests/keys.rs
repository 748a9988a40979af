//! The host-key conversion exactly as the script emits it, run outside the chroot
//! with the real tools (Debian's openssh-client and dropbear-bin) on real OpenSSH
//! host keys: each dropbear key's public half is the OpenSSH key's.

mod common;

use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a tool");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The `type base64` part of an OpenSSH public key line.
fn public_key(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
        .unwrap_or_else(|| panic!("no public key in {text}"));
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn converted_host_keys_keep_their_public_keys() {
    let missing: Vec<&str> =
        ["ssh-keygen", "dropbearconvert", "dropbearkey", "dash"].into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let reason = format!("{missing:?} not installed (apt-get install openssh-client dropbear-bin)");
        common::skip::cannot_run("host-key conversion", &reason);
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let root_path = root.path().to_str().expect("utf-8 path");
    std::fs::create_dir_all(root.path().join("etc/ssh")).unwrap();
    std::fs::create_dir_all(root.path().join("state")).unwrap();
    for key in ["rsa", "ecdsa", "ed25519"] {
        let path = root.path().join(format!("etc/ssh/ssh_host_{key}_key"));
        run(Command::new("ssh-keygen").args(["-q", "-t", key, "-N", "", "-f"]).arg(&path));
    }
    // The script's own functions (all but its last line, which runs main), with
    // the host's root moved to the temporary directory.
    let script = common::script(&[]);
    let functions = script
        .rsplit_once("\nmain \"$@\" || exit 1")
        .expect("the script ends by calling main")
        .0
        .replace("\"/etc/ssh/", &format!("\"{root_path}/etc/ssh/"))
        .replace("/etc/dropbear", &format!("{root_path}/etc/dropbear"));
    let library = root.path().join("functions.sh");
    std::fs::write(&library, functions).unwrap();
    let out = run(Command::new("dash")
        // MINGEN_MAIN_RAN: this shell uses the functions as main would, so the
        // cut-paste guard (an EXIT trap) must not fire.
        .args([
            "-c",
            &format!(". {library:?} && MINGEN_MAIN_RAN=1 && MINGEN_STATE={root_path}/state && carry_host_keys 2>&1"),
        ]));
    for key in ["rsa", "ecdsa", "ed25519"] {
        assert!(out.contains(&format!("convert the OpenSSH {key} host key for dropbear")), "{out}");
        let openssh = run(Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(root.path().join(format!("etc/ssh/ssh_host_{key}_key"))));
        let dropbear = run(Command::new("dropbearkey")
            .arg("-y")
            .arg("-f")
            .arg(root.path().join(format!("etc/dropbear/dropbear_{key}_host_key"))));
        assert_eq!(public_key(&dropbear), public_key(&openssh), "{key} host key");
    }
    // Converted once: a second call changes nothing.
    let again = run(Command::new("dash")
        // MINGEN_MAIN_RAN: this shell uses the functions as main would, so the
        // cut-paste guard (an EXIT trap) must not fire.
        .args([
            "-c",
            &format!(". {library:?} && MINGEN_MAIN_RAN=1 && MINGEN_STATE={root_path}/state && carry_host_keys 2>&1"),
        ]));
    assert!(!again.contains("convert"), "{again}");
}
