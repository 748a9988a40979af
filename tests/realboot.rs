//! The real-boot bench: the real Alpine 3.23.6 image booted under QEMU (tests/realboot/),
//! the script run over real SSH as an operator runs it, the host booted again and logged
//! into; the guide's literal commands as a control that must not boot; undo; a second run.
//!
//! The runs of the script on vda and on sda are made once each (`minimised`) and shared: the
//! end-to-end tests assert on what they saw, and the undo and second-run tests boot their
//! own copy-on-write overlays of the vda host as it was left (powered off after its reboot).

mod common;
mod image;
#[path = "realboot/mod.rs"]
mod realboot;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use realboot::{Boot, Bus, HostKey, Vm, WorkDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The bench can run here; else the test says why and returns (or fails under CI=true).
fn ready() -> bool {
    match realboot::why_not() {
        Some(why) => {
            realboot::skip(&why);
            false
        }
        None => true,
    }
}

/// The mingen flags for a host on BUS.
fn mingen_args(bus: Bus) -> Vec<&'static str> {
    let mut args = vec!["--disk", bus.disk()];
    args.extend_from_slice(realboot::FACT_ARGS);
    args
}

/// What SSH showed of a host: whether the key logged in, and `ssh -v`'s text.
struct SshView {
    key_login: bool,
    key_text: String,
    password_login: bool,
    password_text: String,
}

impl SshView {
    fn of(vm: &Vm, host_key: HostKey) -> SshView {
        let (key_login, key_text) = vm.ssh_verbose(host_key);
        let (password_login, password_text) = vm.ssh_password();
        SshView { key_login, key_text, password_login, password_text }
    }

    /// The server's software as ssh -v reports it (`OpenSSH_9.9`, `dropbear_2025.88`).
    fn software(&self) -> String {
        self.key_text
            .lines()
            .find_map(|l| l.split("remote software version ").nth(1))
            .unwrap_or("(none)")
            .trim()
            .to_string()
    }

    /// The methods the server offers after the password was refused.
    fn methods(&self) -> String {
        self.password_text
            .lines()
            .rev()
            .find_map(|l| l.split("Authentications that can continue: ").nth(1))
            .unwrap_or("(none)")
            .trim()
            .to_string()
    }
}

/// One run of the script on a fresh host, from SSH, then a reboot.
struct Minimised {
    _work: WorkDir,
    /// The host's disk as the run and its reboot left it (powered off): boot overlays of it.
    image: PathBuf,
    /// The client's known_hosts from before the run.
    known_hosts: PathBuf,
    before: SshView,
    status: Option<i32>,
    output: String,
    boot: Boot,
    after: SshView,
    /// `pidof`, the runlevels and the report, read over SSH after the reboot.
    after_state: String,
    minutes: f64,
}

fn produce(bus: Bus) -> Minimised {
    let start = Instant::now();
    let name = format!("mingen-{}", bus.disk());
    let work = WorkDir::new(&name);
    let mut vm = realboot::boot_ready(&name, &realboot::disk(), work.path(), bus);
    let before = SshView::of(&vm, HostKey::Strict);
    let script = common::script(&mingen_args(bus));
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- {name}: the script's output ---\n{output}");
    let mark = vm.reboot(HostKey::Strict);
    let boot = vm.wait_boot(mark);
    let (after, after_state) = if boot == Boot::LoginPrompt {
        let _ = vm.wait_ssh(HostKey::Strict);
        let state = vm.ssh(
            "echo sshd: $(pidof sshd); echo dropbear: $(pidof dropbear); rc-update show default; \
             echo started: $(ls /run/openrc/started); echo cmdline: $(cat /proc/cmdline); \
             echo syslinux: $(apk --no-network info -e syslinux); echo boot: $(ls /boot); \
             echo labels: $(grep -e '^LABEL' -e 'MENU DEFAULT' /boot/extlinux.conf); cat /var/lib/mingen/report",
            b"",
            HostKey::Strict,
        );
        (SshView::of(&vm, HostKey::Strict), format!("{}{}", text(&state.stdout), text(&state.stderr)))
    } else {
        (SshView::of(&vm, HostKey::Strict), vm.tail())
    };
    let known_hosts = work.path().join("before.known_hosts");
    std::fs::copy(&vm.known_hosts, &known_hosts).expect("keep known_hosts");
    let image = if boot == Boot::LoginPrompt { vm.poweroff(HostKey::Strict) } else { vm.overlay.clone() };
    Minimised {
        _work: work,
        image,
        known_hosts,
        before,
        status,
        output,
        boot,
        after,
        after_state,
        minutes: start.elapsed().as_secs_f64() / 60.0,
    }
}

/// The run on BUS, made once per process; a failed production fails every test that needs it.
fn minimised(bus: Bus) -> &'static Minimised {
    static VDA: OnceLock<Result<Minimised, String>> = OnceLock::new();
    static SDA: OnceLock<Result<Minimised, String>> = OnceLock::new();
    let cell = if bus == Bus::Scsi { &SDA } else { &VDA };
    let made = cell.get_or_init(|| {
        std::panic::catch_unwind(|| produce(bus)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match made {
        Ok(m) => m,
        Err(why) => panic!("the run of the script on {} failed: {why}", bus.disk()),
    }
}

/// The pids on the `NAME: PIDS` line that `echo NAME: $(pidof NAME)` printed ("" for none).
fn pids(state: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    let line = state.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} line:\n{state}"));
    line[prefix.len()..].trim().to_string()
}

/// The end-to-end promises on BUS: the run ends well, the host boots, dropbear answers with
/// sshd's host key, the key logs in, and passwords are still refused.
fn end_to_end(bus: Bus) {
    let m = minimised(bus);
    eprintln!("{}: run, reboot and checks in {:.1} min", bus.disk(), m.minutes);
    // Before: OpenSSH, the key logs in, passwords are refused (sshd's PasswordAuthentication no).
    assert!(m.before.key_login, "the key did not log in before the run:\n{}", m.before.key_text);
    assert!(m.before.software().starts_with("OpenSSH"), "before: {}", m.before.software());
    assert!(!m.before.password_login, "sshd took a password before the run");
    assert_eq!(m.status, Some(0), "the script failed on {}:\n{}", bus.disk(), m.output);
    assert!(m.output.contains("preflight: the host matches the facts"), "{}", m.output);
    // After the reboot: it booted, dropbear answers with the same host key (strict checking
    // against the known_hosts from before), the key logs in, passwords are refused.
    assert_eq!(m.boot, Boot::LoginPrompt, "{} did not boot after the run:\n{}", bus.disk(), m.after_state);
    assert!(m.after.key_login, "the key did not log in after the reboot:\n{}", m.after.key_text);
    assert!(m.after.software().starts_with("dropbear"), "after: {}", m.after.software());
    assert!(!m.after.password_login, "dropbear took root's password; sshd refused passwords");
    assert!(!m.after.methods().contains("password"), "dropbear offers passwords: {}", m.after.methods());
    assert!(m.after.methods().contains("publickey"), "{}", m.after.password_text);
    assert_eq!(pids(&m.after_state, "sshd"), "", "sshd runs after the reboot:\n{}", m.after_state);
    assert_ne!(pids(&m.after_state, "dropbear"), "", "dropbear does not run:\n{}", m.after_state);
    assert!(m.after_state.contains("after the first boot:"), "no report after the boot:\n{}", m.after_state);
    // OpenRC no longer starts hwclock for syslog's `need clock`: osclock provides it.
    let started = m.after_state.lines().find_map(|l| l.strip_prefix("started:")).unwrap_or_default();
    let started: Vec<&str> = started.split_whitespace().collect();
    assert!(started.contains(&"osclock") && !started.contains(&"hwclock"), "started after the reboot: {started:?}");
    // The boot trial: the run left label mingen-previous (the configuration from before) the
    // default and set virt to boot once; virt booted (its command line and initramfs), the
    // one-shot confirmed it, made it the default and removed the fallback and syslinux.
    assert!(m.output.contains("boot label virt once at the next boot (extlinux --once=virt /boot)"), "{}", m.output);
    let line = |name: &str| line_of(&m.after_state, name);
    let cmdline = line("cmdline");
    assert!(cmdline.contains(" panic=10") && cmdline.contains(" audit=0"), "not the new label: {cmdline}");
    assert!(cmdline.contains("initrd=initramfs-virt") && !cmdline.contains("mingen-previous"), "{cmdline}");
    assert!(
        m.after_state.contains("boot: the new boot configuration (label virt) came up"),
        "the one-shot did not confirm the boot:\n{}",
        m.after_state
    );
    assert_eq!(line("labels"), "LABEL virt MENU DEFAULT", "extlinux.conf after the confirmation");
    assert!(!line("boot").contains("mingen-previous"), "the kept initramfs is still in /boot: {}", line("boot"));
    assert_eq!(line("syslinux"), "", "syslinux is still installed after the confirmation");
}

/// What follows `NAME:` on its line of STATE.
fn line_of(state: &str, name: &str) -> String {
    let prefix = format!("{name}:");
    let line = state.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} line:\n{state}"));
    line[prefix.len()..].trim().to_string()
}

#[test]
fn vda_host_end_to_end_over_ssh() {
    if ready() {
        end_to_end(Bus::Virtio);
    }
}

#[test]
fn sda_host_end_to_end_over_ssh() {
    if ready() {
        end_to_end(Bus::Scsi);
    }
}

/// The control: the guide's literal commands on the virtio-scsi host drop `scsi` from the
/// initramfs, and the host does not boot. The bench must see it.
#[test]
fn guide_literal_commands_leave_the_sda_host_unbootable() {
    if !ready() {
        return;
    }
    let work = WorkDir::new("guide-sda");
    let mut vm = realboot::boot_ready("guide-sda", &realboot::disk(), work.path(), Bus::Scsi);
    let guide = std::fs::read_to_string(realboot::file("guide.sh")).expect("read guide.sh");
    realboot::upload(&vm, "/root/guide.sh", &guide, HostKey::Strict);
    let mark = vm.mark();
    // The guide ends with `reboot`, typed in the same session (its sshd was stopped).
    let out = vm.ssh("sh /root/guide.sh; reboot", b"", HostKey::Strict);
    eprintln!("--- the guide's commands ---\n{}{}", text(&out.stdout), text(&out.stderr));
    let boot = vm.wait_boot(mark);
    assert_eq!(boot, Boot::EmergencyShell, "the guide's commands left a host that boots:\n{}", vm.tail());
    let serial = vm.serial_text();
    assert!(serial[mark..].contains("Mounting root failed"), "{}", vm.tail());
    vm.quit();
}

/// undo.sh on the minimised host, offline. The bench's repository carries OpenSSH,
/// dropbear and the cloud image's stand-ins, but not the image's own packages (curl,
/// sudo, dhcpcd, e2fsprogs-extra, cloud-utils-growpart, linux-virt for the pruned
/// modules), so undo cannot finish here: it must say which packages apk could not
/// install and stop before it changes anything, and the host must still boot and let
/// the key in through dropbear. (A whole undo needs the image's packages in the
/// bench's repository: issue 7, left open.)
#[test]
fn undo_without_the_packages_stops_cleanly_and_the_host_still_boots() {
    if !ready() {
        return;
    }
    let m = minimised(Bus::Virtio);
    assert_eq!(m.boot, Boot::LoginPrompt, "the minimised host did not boot");
    let work = WorkDir::new("undo-vda");
    let mut vm = Vm::boot("undo-vda", &m.image, work.path(), Bus::Virtio);
    vm.trust(&m.known_hosts);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("{e}"));
    let before = vm.ssh_ok("ls /etc/runlevels/default; cat /etc/apk/world", HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/var/lib/mingen/undo.sh", HostKey::Strict);
    eprintln!("--- undo.sh ---\n{output}");
    assert_ne!(status, Some(0), "undo.sh cannot finish without the image's packages:\n{output}");
    assert!(output.contains("apk could not install") && output.contains("curl"), "{output}");
    let after = vm.ssh_ok("ls /etc/runlevels/default; cat /etc/apk/world", HostKey::Strict);
    assert_eq!(after, before, "the stopped undo changed the runlevels or the world file");
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the host did not boot after the stopped undo:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("{e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("dropbear"), "after the stopped undo: {}", view.software());
    vm.quit();
}

/// A second run on the minimised vda host (real apk, real rc-update) changes nothing: the
/// file tree, the world, the installed packages, the runlevels and the started services.
#[test]
fn second_run_changes_nothing() {
    if !ready() {
        return;
    }
    let m = minimised(Bus::Virtio);
    assert_eq!(m.boot, Boot::LoginPrompt, "the minimised host did not boot");
    let work = WorkDir::new("again-vda");
    let mut vm = Vm::boot("again-vda", &m.image, work.path(), Bus::Virtio);
    vm.trust(&m.known_hosts);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("{e}"));
    // A boot after the confirmed one takes the new configuration by default: no fallback is left.
    let boot = vm.ssh_ok("echo cmdline: $(cat /proc/cmdline); echo labels: $(grep '^LABEL' /boot/extlinux.conf)", HostKey::Strict);
    assert!(line_of(&boot, "cmdline").contains(" panic=10"), "{boot}");
    assert_eq!(line_of(&boot, "labels"), "LABEL virt", "{boot}");
    let state = std::fs::read_to_string(realboot::file("state.sh")).expect("read state.sh");
    realboot::upload(&vm, "/tmp/state.sh", &state, HostKey::Strict);
    let before = vm.ssh_ok("sh /tmp/state.sh", HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- the second run ---\n{output}");
    assert_eq!(status, Some(0), "the second run failed:\n{output}");
    let after = vm.ssh_ok("sh /tmp/state.sh", HostKey::Strict);
    assert!(before.lines().filter(|l| l.starts_with("installed ")).count() > 10, "state.sh read no packages");
    // run_script keeps the run's output in /root/minimise.sh.out: the bench's file, not the host's.
    let ours = |l: &&str| !l.contains("/root/minimise.sh.out");
    let gone: Vec<&str> = before.lines().filter(ours).filter(|l| !after.lines().any(|a| a == *l)).collect();
    let new: Vec<&str> = after.lines().filter(ours).filter(|l| !before.lines().any(|b| b == *l)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "the second run changed the host:\n-{}\n+{}",
        gone.join("\n-"),
        new.join("\n+")
    );
    vm.quit();
}

/// The disk boots to a login prompt on NVMe (nvme0n1) with no service failing; the probe
/// reads `disk = "nvme0n1"`, the script for it runs over SSH, and the host boots again
/// with the nvme driver in its initramfs, where dropbear answers with sshd's host key.
#[test]
fn nvme_host_probed_minimised_and_booted_again() {
    if let Some(why) = realboot::why_not_boot() {
        return realboot::skip(&why);
    }
    let work = WorkDir::new("nvme");
    let mut vm = Vm::boot("nvme", &realboot::disk(), work.path(), Bus::Nvme);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{}", vm.tail());
    let serial = vm.serial_text();
    for bad in ["ERROR:", "needs service", "[LXC]", "failed to start"] {
        assert!(!serial.contains(bad), "the boot log has {bad:?}\n{}", vm.tail());
    }
    if let Some(why) = realboot::why_not() {
        vm.quit();
        return realboot::skip(&format!("NVMe booted; the SSH part cannot run: {why}"));
    }
    vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
    let probe = common::mingen(&["probe"]).stdout;
    let facts = vm.ssh("sh -s", probe.as_bytes(), HostKey::Strict);
    let facts = text(&facts.stdout);
    assert!(facts.contains("disk = \"nvme0n1\""), "{facts}");
    let script = common::script(&mingen_args(Bus::Nvme));
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    assert_eq!(status, Some(0), "the script failed on nvme0n1:\n{output}");
    assert!(output.contains("the initramfs holds") && output.contains("nvme"), "{output}");
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "nvme0n1 did not boot after the run:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after the reboot: {e}"));
    let state = vm.ssh("echo dropbear: $(pidof dropbear)", b"", HostKey::Strict);
    assert!(!pids(&text(&state.stdout), "dropbear").is_empty(), "dropbear answers after the reboot");
    vm.quit();
}

/// What the one-shot and the boot left, read over SSH after a boot.
const BOOT_STATE: &str = "echo cmdline: $(cat /proc/cmdline); echo failed: $(ls /var/lib/mingen/boot-failed); \
                          echo labels: $(grep -e '^LABEL' -e 'MENU DEFAULT' /boot/extlinux.conf); \
                          cat /var/lib/mingen/report";

/// Boot trials that fail, on the virtio-scsi host: the host comes back on the previous
/// configuration by itself, and the one-shot and the next run say so.
/// 1. A kernel panic: the run's new initramfs is overwritten with junk (test-only, after the
///    run's initramfs check), the kernel cannot mount the root, panics, and panic=10 reboots
///    it; syslinux has spent the boot-once label, so the previous configuration boots.
/// 2. The guide's literal mistake: after boot-failed is deleted, a run tries the new
///    configuration again, and the test swaps in an initramfs without `scsi` (mkinitfs -F,
///    past the run's check). Without `panic=` it would stop in the initramfs emergency
///    shell (the guide's control test); with panic=10 Alpine's initramfs panics instead
///    (its init: "emergency shell disabled. let kernel panic instead"), and the host reboots
///    into the previous configuration by itself: no reset from the panel is needed.
#[test]
fn failed_boot_trials_come_back_on_the_previous_configuration_by_themselves() {
    if !ready() {
        return;
    }
    let start = Instant::now();
    let work = WorkDir::new("fallback-sda");
    let mut vm = realboot::boot_ready("fallback-sda", &realboot::disk(), work.path(), Bus::Scsi);
    let script = common::script(&mingen_args(Bus::Scsi));
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let arm = |vm: &Vm| {
        let (status, output) = realboot::run_script(vm, "/root/minimise.sh", HostKey::Strict);
        assert_eq!(status, Some(0), "the run failed:\n{output}");
        assert!(output.contains("(extlinux --once=virt /boot)"), "the run set no boot-once label:\n{output}");
    };
    let came_back = |vm: &mut Vm, what: &str| {
        // The one-shot has run once the login prompt is up (local starts last).
        vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after {what}: {e}"));
        let state = vm.ssh_ok(BOOT_STATE, HostKey::Strict);
        let cmdline = line_of(&state, "cmdline");
        assert!(cmdline.contains("initrd=initramfs-virt.mingen-previous"), "after {what}: not the previous one: {state}");
        assert!(!cmdline.contains("panic=10"), "after {what}: {cmdline}");
        assert!(state.contains("boot: the new boot configuration (label virt"), "after {what}: {state}");
        assert!(state.contains("did not come up") && state.contains("boot-failed (this)"), "after {what}: {state}");
        assert_eq!(line_of(&state, "failed"), "/var/lib/mingen/boot-failed", "after {what}");
        assert_eq!(line_of(&state, "labels"), "LABEL mingen-previous MENU DEFAULT LABEL virt", "after {what}");
    };

    // 1. A kernel panic on the new label.
    arm(&vm);
    vm.ssh_ok("head -c 65536 /dev/urandom > /boot/initramfs-virt && sync", HostKey::Strict);
    let panic_reboot = |vm: &mut Vm, what: &str| -> String {
        let cycles = vm.power_cycles;
        let mark = vm.reboot(HostKey::Strict);
        assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the host did not come back after {what}:\n{}", vm.tail());
        let serial = vm.serial_text()[mark..].to_string();
        assert!(serial.contains("Kernel panic - not syncing") && serial.contains("Rebooting in 10 seconds"), "{what}");
        assert!(!serial.contains("emergency recovery shell"), "{what}: the emergency shell started\n{}", vm.tail());
        assert_eq!(vm.power_cycles, cycles + 2, "{what}: the reboot, then the panic's: QEMU started twice");
        came_back(vm, what);
        serial
    };
    let serial = panic_reboot(&mut vm, "the junk initramfs");
    assert!(serial.contains("VFS: Unable to mount root fs"), "{serial}");
    // The next run stops, names what was recorded, and changes nothing.
    let before = vm.ssh_ok("cat /boot/extlinux.conf; stat -c '%n %s %Y' /boot/* /var/lib/mingen/*", HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    assert_ne!(status, Some(0), "a run after the failed boot went on:\n{output}");
    assert!(output.contains("(/var/lib/mingen/boot-failed): this run changes nothing"), "{output}");
    assert!(output.contains("to undo the run, sh /var/lib/mingen/undo.sh"), "{output}");
    let after = vm.ssh_ok("cat /boot/extlinux.conf; stat -c '%n %s %Y' /boot/* /var/lib/mingen/*", HostKey::Strict);
    assert_eq!(after, before, "the stopped run changed /boot or /var/lib/mingen");

    // 2. The guide's mistake: an initramfs without the disk's driver, and a reset.
    vm.ssh_ok("rm /var/lib/mingen/boot-failed && mkinitfs \"$(cat /usr/share/kernel/virt/kernel.release)\"", HostKey::Strict);
    arm(&vm);
    vm.ssh_ok(
        "mkinitfs -F 'base ext4 virtio' \"$(cat /usr/share/kernel/virt/kernel.release)\" && sync",
        HostKey::Strict,
    );
    let serial = panic_reboot(&mut vm, "the initramfs without scsi");
    assert!(serial.contains("Mounting root failed"), "{serial}");
    eprintln!("failed boot trials: {:.1} min", start.elapsed().as_secs_f64() / 60.0);
    vm.quit();
}

/// The bench's guest scripts are shellcheck-clean (busybox ash); the host-side one (bash) too.
#[test]
fn bench_scripts_are_shellcheck_clean() {
    for name in ["guide.sh", "measure.sh", "state.sh", "mdev.initd"] {
        let script = std::fs::read_to_string(realboot::file(name)).expect("read a bench script");
        common::shellcheck(name, &script);
    }
    if common::shellcheck_dialect().is_some() {
        let out = std::process::Command::new("shellcheck")
            .arg("--severity=style")
            .arg(realboot::file("build-disk.sh"))
            .output()
            .expect("run shellcheck");
        assert!(out.status.success(), "build-disk.sh: {}", text(&out.stdout));
    }
}
