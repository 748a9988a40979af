//! The real-boot bench: the real Alpine 3.23.6 image booted under QEMU (tests/realboot/),
//! the script run over real SSH as an operator runs it, the host booted again and logged
//! into; the guide's literal commands as a control that must not boot; undo; a second run
//! and a kernel upgrade. After each run and its reboot, every module loaded before the run
//! (but those mingen blacklists) loads again from the pruned /lib/modules (issue 9).
//!
//! The runs of the script on vda and on sda are made once each (`minimised`) and shared: the
//! end-to-end tests assert on what they saw, and the undo and second-run tests boot their
//! own copy-on-write overlays of the vda host as it was left (powered off after its reboot).

mod common;
mod sandbox;
use sandbox::image;
#[path = "realboot/mod.rs"]
mod realboot;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use realboot::{Boot, Bus, Firmware, HostKey, Vm, WorkDir};

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

/// What `modules.sh figures` reads of a host: /lib/modules, disk used, the loaded modules.
#[derive(Clone, Debug, Default)]
struct Figures {
    modules_kb: u64,
    modules_count: u64,
    disk_used_kb: u64,
    /// What of disk_used_kb the bench put there (the image's guest agent, the uploads to /root).
    bench_kb: u64,
    loaded: Vec<String>,
}

impl Figures {
    fn of(vm: &Vm) -> Figures {
        let out = vm.ssh_ok("sh /root/modules.sh figures", HostKey::Strict);
        let mut figures = Figures::default();
        for line in out.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("modules.sh figures: {line:?}"));
            match key {
                "modules_kb" => figures.modules_kb = number(),
                "modules_count" => figures.modules_count = number(),
                "disk_used_kb" => figures.disk_used_kb = number(),
                "bench_kb" => figures.bench_kb = number(),
                "loaded" => figures.loaded.push(value.to_string()),
                _ => panic!("modules.sh figures: {line:?}"),
            }
        }
        assert!(figures.modules_count > 0 && figures.disk_used_kb > 0, "modules.sh figures:\n{out}");
        figures
    }

    fn show(&self) -> String {
        format!(
            "/lib/modules {:.1} MB in {} module files, disk used {:.1} MB (of which the bench's own files {:.1} MB), {} modules loaded",
            self.modules_kb as f64 / 1024.0,
            self.modules_count,
            self.disk_used_kb as f64 / 1024.0,
            self.bench_kb as f64 / 1024.0,
            self.loaded.len()
        )
    }
}

/// Put modules.sh at /root/modules.sh on the guest.
fn upload_modules_sh(vm: &Vm) {
    let script = std::fs::read_to_string(realboot::file("modules.sh")).expect("read modules.sh");
    realboot::upload(vm, "/root/modules.sh", &script, HostKey::Strict);
}

/// `modprobe` on the guest of each module of BEFORE (the modules loaded before the run).
fn modprobe_again(vm: &Vm, before: &Figures) -> String {
    upload_modules_sh(vm);
    vm.ssh_ok(&format!("sh /root/modules.sh modprobe {}", before.loaded.join(" ")), HostKey::Strict)
}

/// Every module loaded before the run loads again (modprobe output MODPROBE), but those
/// mingen blacklists.
fn assert_modules_load_again(what: &str, before: &Figures, modprobe: &str) {
    let fails: Vec<&str> =
        modprobe.lines().filter(|l| !l.starts_with("loads ") && !l.starts_with("blacklisted ")).collect();
    assert!(fails.is_empty(), "{what}: modules loaded before the run that do not load now:\n{}", fails.join("\n"));
    let loads = modprobe.lines().filter(|l| l.starts_with("loads ")).count();
    assert_eq!(
        modprobe.lines().count(),
        before.loaded.len(),
        "{what}: modules.sh answered for each module:\n{modprobe}"
    );
    assert!(loads > 0, "{what}: no module loaded again:\n{modprobe}");
    eprintln!(
        "{what}: {loads} of the {} modules loaded before the run load again ({} blacklisted)",
        before.loaded.len(),
        before.loaded.len() - loads
    );
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
    /// The stock host's figures and `modules.sh inventory` (packages, module files), before the run.
    stock: Figures,
    stock_inventory: String,
    /// The figures after the run and its reboot, and `modules.sh modprobe` of the stock's modules.
    after_figures: Figures,
    modprobe: String,
    /// The figures once the after-boot one-shots have run (the report is written): the
    /// disk used after the whole run.
    settled_figures: Figures,
    minutes: f64,
}

fn produce(bus: Bus) -> Minimised {
    produce_with(bus, &format!("mingen-{}", bus.disk()), &[])
}

/// One run of the script with mingen_args(bus) and EXTRA on a fresh host named NAME, then a reboot.
fn produce_with(bus: Bus, name: &str, extra: &[&str]) -> Minimised {
    let start = Instant::now();
    let work = WorkDir::new(name);
    let mut vm = realboot::boot_ready(name, &realboot::disk(), work.path(), bus);
    let before = SshView::of(&vm, HostKey::Strict);
    upload_modules_sh(&vm);
    let stock = Figures::of(&vm);
    let stock_inventory = vm.ssh_ok("sh /root/modules.sh inventory", HostKey::Strict);
    let mut args = mingen_args(bus);
    args.extend_from_slice(extra);
    let script = common::script(&args);
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- {name}: the script's output ---\n{output}");
    let mark = vm.reboot(HostKey::Strict);
    let boot = vm.wait_boot(mark);
    let (mut after_figures, mut modprobe, mut settled_figures) =
        (Figures::default(), String::new(), Figures::default());
    let (after, after_state) = if boot == Boot::LoginPrompt {
        let _ = vm.wait_ssh(HostKey::Strict);
        // Measured before modprobe loads anything more.
        after_figures = Figures::of(&vm);
        modprobe = modprobe_again(&vm, &stock);
        let state = vm.ssh(
            "for i in $(seq 120); do [ -e /var/lib/mingen/report ] && break; sleep 5; done; \
             echo sshd: $(pidof sshd); echo dropbear: $(pidof dropbear); rc-update show default; \
             echo started: $(ls /run/openrc/started); echo cmdline: $(cat /proc/cmdline); \
             echo syslinux: $(apk --no-network info -e syslinux); echo boot: $(ls /boot); \
             echo labels: $(grep -e '^LABEL' -e 'MENU DEFAULT' /boot/extlinux.conf); \
             cat /var/lib/mingen/report /var/lib/mingen/report.json; \
             echo \"initramfs copy: $(ls /var/lib/mingen/backup/boot/initramfs-virt 2>/dev/null)\"",
            b"",
            HostKey::Strict,
        );
        // The report is written: every after-boot one-shot has run.
        settled_figures = Figures::of(&vm);
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
        stock,
        stock_inventory,
        after_figures,
        modprobe,
        settled_figures,
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
    // The report, written once the gettys are up: RAM and disk used within the default
    // budgets (the guide's 23 and 72 MB), and report.json beside it.
    assert!(m.after_state.contains("ram_used_kb: "), "no report after the boot:\n{}", m.after_state);
    assert!(m.after_state.contains("(budget 23552: within)"), "RAM over its budget:\n{}", m.after_state);
    assert!(m.after_state.contains("{\"ram_used_kb\":"), "no report.json:\n{}", m.after_state);
    // OpenRC no longer starts hwclock for syslog's `need clock`: osclock provides it.
    let started = m.after_state.lines().find_map(|l| l.strip_prefix("started:")).unwrap_or_default();
    let started: Vec<&str> = started.split_whitespace().collect();
    assert!(started.contains(&"osclock") && !started.contains(&"hwclock"), "started after the reboot: {started:?}");
    // modules-prune (modules_prune = virtual): fewer module files, and what ran before loads again.
    eprintln!("{} before the run: {}", bus.disk(), m.stock.show());
    eprintln!("{} after the run and its reboot (modules_prune = virtual): {}", bus.disk(), m.after_figures.show());
    assert!(m.after_figures.modules_count < m.stock.modules_count, "modules-prune removed no module file");
    assert_modules_load_again(bus.disk(), &m.stock, &m.modprobe);
    // The copy of the initramfs from before the run went once the new one had booted
    // (rule initramfs-backup-drop).
    assert!(m.after_state.contains("\ninitramfs copy: \n"), "the initramfs copy is still kept:\n{}", m.after_state);
    eprintln!("{} after the whole run (the after-boot one-shots done): {}", bus.disk(), m.settled_figures.show());
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

/// Issue 9's goal: on the vda host, disk used (`df /`, everything the bench put there
/// included) is at most 40 MB once the whole run is done.
const DISK_GOAL_KB: u64 = 40 * 1024;

#[test]
fn vda_host_end_to_end_over_ssh() {
    if ready() {
        end_to_end(Bus::Virtio);
        let settled = &minimised(Bus::Virtio).settled_figures;
        assert!(
            settled.disk_used_kb <= DISK_GOAL_KB,
            "vda: disk used {} KB after the whole run, over the goal of {DISK_GOAL_KB} KB: {}",
            settled.disk_used_kb,
            settled.show()
        );
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

/// undo.sh on the minimised vda host, with the bench repository (which has the image's own
/// packages), then a reboot: the host boots, sshd (not dropbear) answers on port 22 with the
/// host key from before the run under strict checking, the key logs in and passwords are
/// refused as before, every package is back at its version, and every module file under
/// /lib/modules is back byte for byte (`apk fix --reinstall linux-virt`, fetched from the
/// bench repository over HTTP).
#[test]
fn undo_brings_back_the_packages_the_modules_and_sshd_and_the_host_boots() {
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
    let (status, output) = realboot::run_script(&vm, "/var/lib/mingen/undo.sh", HostKey::Strict);
    eprintln!("--- undo.sh ---\n{output}");
    assert_eq!(status, Some(0), "undo.sh failed:\n{output}");
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the host did not boot after undo:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after undo and its reboot: {e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login, "the key did not log in after undo:\n{}", view.key_text);
    assert!(view.software().starts_with("OpenSSH"), "after undo: {}", view.software());
    assert!(!view.password_login, "sshd took a password after undo; it refused them before the run");
    let state =
        text(&vm.ssh("echo sshd: $(pidof sshd); echo dropbear: $(pidof dropbear)", b"", HostKey::Strict).stdout);
    assert_ne!(pids(&state, "sshd"), "", "sshd does not run after undo:\n{state}");
    assert_eq!(pids(&state, "dropbear"), "", "dropbear runs after undo:\n{state}");
    // The packages at their versions, and every module file, as on the stock host.
    let inventory = vm.ssh_ok("sh /root/modules.sh inventory", HostKey::Strict);
    for kind in ["installed ", "module "] {
        let lines =
            |text: &str| -> Vec<String> { text.lines().filter(|l| l.starts_with(kind)).map(String::from).collect() };
        let (stock, now) = (lines(&m.stock_inventory), lines(&inventory));
        let gone: Vec<&String> = stock.iter().filter(|l| !now.contains(l)).collect();
        let new: Vec<&String> = now.iter().filter(|l| !stock.contains(l)).collect();
        assert!(stock.len() > 10, "the stock inventory has no `{kind}` lines");
        assert!(
            gone.is_empty() && new.is_empty(),
            "after undo, `{kind}` lines differ from the stock host:\n-{gone:?}\n+{new:?}"
        );
    }
    let figures = Figures::of(&vm);
    eprintln!("vda after undo and its reboot: {}", figures.show());
    assert_eq!(figures.modules_count, m.stock.modules_count, "the module files after undo");
    // They came from the bench repository, over HTTP from the host.
    let log = std::fs::read_to_string(work.path().join("undo-vda.repo.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.starts_with("GET /x86_64/linux-virt-") && l.ends_with(" 200")),
        "repository log:\n{log}"
    );
    vm.quit();
}

/// A second run on the minimised vda host (real apk, real rc-update) changes nothing: the
/// file tree, the world, the installed packages, the runlevels and the started services.
/// Then, on the same boot, a kernel upgrade (`kernel_upgrade`).
#[test]
fn second_run_changes_nothing_then_a_kernel_upgrade_is_pruned_and_boots() {
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
    let boot = vm.ssh_ok(
        "echo cmdline: $(cat /proc/cmdline); echo labels: $(grep '^LABEL' /boot/extlinux.conf)",
        HostKey::Strict,
    );
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
    kernel_upgrade(m, vm);
}

/// The kernel upgrade after mingen's run: apk installs linux-virt one build later (the bench
/// repository's `upgrade`: the same kernel and modules, as an in-place reinstall brings, for
/// a new kernel cannot be built offline). mingen's commit hook prunes the fresh module tree
/// to the same keep-set, runs depmod, and rebuilds the initramfs after the pruning; the host
/// then boots, with networking and dropbear answering with sshd's host key, and the modules
/// loaded before the run load again.
fn kernel_upgrade(m: &Minimised, mut vm: Vm) {
    let repo = realboot::packages::repository();
    let kver = vm.ssh_ok("cat /usr/share/kernel/virt/kernel.release", HostKey::Strict).trim().to_string();
    let removed = |vm: &Vm| vm.ssh_ok(&format!("grep -c . /var/lib/mingen/modules-removed.{kver}"), HostKey::Strict);
    let removed_before = removed(&vm);
    let out = vm.ssh(&format!("apk upgrade --repository {} linux-virt", realboot::UPGRADE_URL), b"", HostKey::Strict);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("--- the kernel upgrade ---\n{said}");
    assert!(out.status.success(), "apk upgrade of linux-virt failed:\n{said}");
    let version = vm.ssh_ok(
        "awk '/^P:/ { p = substr($0, 3) } /^V:/ && p == \"linux-virt\" { print substr($0, 3) }' /lib/apk/db/installed",
        HostKey::Strict,
    );
    assert_eq!(version.trim(), repo.kernel_upgrade, "the installed linux-virt after the upgrade");
    // The hook pruned the fresh tree to what the run kept, depmod resolves what stayed, and
    // the initramfs was built after that (newer than depmod's modules.dep).
    let figures = Figures::of(&vm);
    eprintln!("vda after the kernel upgrade: {}", figures.show());
    assert_eq!(figures.modules_count, m.after_figures.modules_count, "the hook kept what the run kept");
    assert_ne!(removed(&vm), removed_before, "the hook listed nothing it removed from the fresh tree");
    let dep = format!("/lib/modules/{kver}/modules.dep");
    vm.ssh_ok(
        &format!("modprobe -n virtio_blk && modprobe -n ext4 && [ -n \"$(find /boot/initramfs-virt -newer {dep})\" ]"),
        HostKey::Strict,
    );
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the host did not boot after the kernel upgrade:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after the kernel upgrade's reboot: {e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("dropbear"), "after the kernel upgrade: {}", view.software());
    let network = vm.ssh_ok("ip -4 addr show eth0; ip route", HostKey::Strict);
    assert!(network.contains("10.0.2.15/24") && network.contains("default via 10.0.2.2"), "{network}");
    let modprobe = modprobe_again(&vm, &m.stock);
    assert_modules_load_again("vda after the kernel upgrade", &m.stock, &modprobe);
    vm.quit();
}

/// The disk boots to a login prompt on NVMe (nvme0n1) with no service failing; the probe
/// reads `disk = "nvme0n1"`, the script for it runs over SSH, and the host boots again
/// with the nvme driver in its initramfs, where dropbear answers with sshd's host key.
/// This run prunes with `modules_prune = host` (vda and sda run the default, `virtual`):
/// what the host had loaded still loads after the reboot.
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
    upload_modules_sh(&vm);
    let stock = Figures::of(&vm);
    let mut args = mingen_args(Bus::Nvme);
    args.extend(["--modules-prune", "host"]);
    let script = common::script(&args);
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    assert_eq!(status, Some(0), "the script failed on nvme0n1:\n{output}");
    assert!(output.contains("the initramfs holds") && output.contains("nvme"), "{output}");
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "nvme0n1 did not boot after the run:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after the reboot: {e}"));
    let state = vm.ssh("echo dropbear: $(pidof dropbear)", b"", HostKey::Strict);
    assert!(!pids(&text(&state.stdout), "dropbear").is_empty(), "dropbear answers after the reboot");
    let after = Figures::of(&vm);
    eprintln!("nvme0n1 before the run: {}", stock.show());
    eprintln!("nvme0n1 after the run and its reboot (modules_prune = host): {}", after.show());
    assert!(after.modules_count < stock.modules_count, "modules-prune removed no module file");
    assert_modules_load_again("nvme0n1", &stock, &modprobe_again(&vm, &stock));
    vm.quit();
}

/// What the one-shot and the boot left, read over SSH after a boot, once the report is
/// written (local has run the one-shot, which deletes an earlier report on a new
/// outcome; the report waits for the gettys).
const BOOT_STATE: &str = "for i in $(seq 120); do [ -e /run/openrc/started/local ] && [ -e /var/lib/mingen/report ] \
                          && break; sleep 5; done; \
                          echo cmdline: $(cat /proc/cmdline); echo failed: $(ls /var/lib/mingen/boot-failed); \
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
        assert!(
            cmdline.contains("initrd=initramfs-virt.mingen-previous"),
            "after {what}: not the previous one: {state}"
        );
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
    vm.ssh_ok(
        "rm /var/lib/mingen/boot-failed && mkinitfs \"$(cat /usr/share/kernel/virt/kernel.release)\"",
        HostKey::Strict,
    );
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

/// The EFI-stub host (alpine-make-vm-image's UEFI layout) boots under OVMF: with no boot
/// entry the firmware starts its UEFI shell, which runs /boot/startup.nsh from the EFI
/// system partition, whose one line starts the kernel's EFI stub. The probe reads
/// `boot_loader = "efi-stub"`; the script made from the probed facts edits startup.nsh,
/// and the host boots again through it: still EFI-booted, with the options of rule
/// kernel-cmdline-efi on its command line and usb-storage gone from `modules=`, and
/// dropbear answers with sshd's host key.
#[test]
fn efi_stub_host_probed_minimised_and_booted_again() {
    if let Some(why) = realboot::why_not_uefi() {
        return realboot::skip(&why);
    }
    let start = Instant::now();
    let work = WorkDir::new("efi-stub");
    let disk = realboot::efi_stub_disk();
    let mut vm = Vm::boot_with("efi-stub", &disk, work.path(), Bus::Virtio, Firmware::Uefi);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{}", vm.tail());
    eprintln!("efi-stub: built and booted through OVMF in {:.1} min", start.elapsed().as_secs_f64() / 60.0);
    let serial = vm.serial_text();
    // OVMF's console is on the serial port too: its shell ran startup.nsh.
    assert!(serial.contains("startup.nsh"), "the UEFI shell did not run startup.nsh:\n{}", vm.tail());
    vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
    let boot_state = "[ -d /sys/firmware/efi ] && echo efi-booted; echo cmdline: $(cat /proc/cmdline); \
                      echo startup.nsh: $(cat /boot/startup.nsh); awk '$2 == \"/boot\" { print \"boot:\", $3 }' /proc/mounts";
    let before = vm.ssh_ok(boot_state, HostKey::Strict);
    eprintln!("efi-stub before the run:\n{before}");
    assert!(before.lines().any(|l| l == "efi-booted") && before.contains("boot: vfat"), "{before}");
    let cmdline_before = words_of(&before, "cmdline");
    assert!(cmdline_before.contains(&"modules=sd-mod,usb-storage,ext4".to_string()), "{before}");
    assert!(!cmdline_before.contains(&"audit=0".to_string()), "{before}");

    // The probe's facts, read over SSH, and the script made from them.
    let probe = common::mingen(&["probe"]).stdout;
    let facts = text(&vm.ssh("sh -s", probe.as_bytes(), HostKey::Strict).stdout);
    eprintln!("efi-stub: the probe says:\n{facts}");
    for fact in ["boot_loader = \"efi-stub\"", "disk = \"vda\"", "ipv6 = \"unused\"", "containers = \"none\""] {
        assert!(facts.lines().any(|l| l == fact), "the probe does not say {fact}:\n{facts}");
    }
    let facts_file = work.path().join("host.toml");
    std::fs::write(&facts_file, &facts).expect("write the probed facts");
    let script = common::script(&["--facts", &facts_file.to_string_lossy()]);
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- efi-stub: the script's output ---\n{output}");
    assert_eq!(status, Some(0), "the script failed on the EFI-stub host:\n{output}");
    assert!(output.contains("preflight: the host matches the facts"), "{output}");

    // Booted again through the edited startup.nsh: the same host key (strict checking).
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the EFI-stub host did not boot after the run:\n{}", vm.tail());
    assert!(vm.power_cycles > 0, "the host did not reboot");
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after the reboot: {e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("dropbear"), "after the reboot: {}", view.software());
    let after = vm.ssh_ok(boot_state, HostKey::Strict);
    eprintln!("efi-stub after the run and its reboot:\n{after}");
    assert!(after.lines().any(|l| l == "efi-booted") && after.contains("boot: vfat"), "{after}");
    let cmdline = words_of(&after, "cmdline");
    for option in ["audit=0", "nowatchdog", "ipv6.disable=1", "cgroup.memory=nokmem", "kfence.sample_interval=0"] {
        assert!(cmdline.contains(&option.to_string()), "/proc/cmdline lacks {option}:\n{after}");
    }
    assert!(cmdline.contains(&"modules=sd-mod,ext4".to_string()), "modules= after the run:\n{after}");
    // The running command line is the one startup.nsh gives the kernel.
    let line = words_of(&after, "startup.nsh");
    assert!(cmdline.iter().all(|w| line.contains(w)), "/proc/cmdline is not startup.nsh's line:\n{after}");
    eprintln!("efi-stub: probe, run, reboot and checks in {:.1} min", start.elapsed().as_secs_f64() / 60.0);
    vm.quit();
}

/// The words after `NAME:` on its line of STATE.
fn words_of(state: &str, name: &str) -> Vec<String> {
    line_of(state, name).split_whitespace().map(String::from).collect()
}

/// The bench's guest scripts are shellcheck-clean (busybox ash); the host-side one (bash) too.
#[test]
fn bench_scripts_are_shellcheck_clean() {
    for name in ["guide.sh", "measure.sh", "state.sh", "modules.sh", "mdev.initd"] {
        let script = std::fs::read_to_string(realboot::file(name)).expect("read a bench script");
        common::shellcheck(name, &script);
    }
    if common::shellcheck_dialect().is_some() {
        let out = std::process::Command::new("shellcheck")
            .arg("--severity=style")
            .arg(realboot::file("build-disk.sh"))
            .arg(realboot::file("serve.sh"))
            .output()
            .expect("run shellcheck");
        assert!(out.status.success(), "build-disk.sh, serve.sh: {}", text(&out.stdout));
    }
}

/// The guest's RAM for the diskless host, in MiB. Its root is a tmpfs (half the RAM by
/// default) that holds every installed package; the stock 128 MiB leaves 46 MB of tmpfs,
/// less than the host's packages (see `DISKLESS_LEFT_OUT` in realboot/mod.rs).
const DISKLESS_MEMORY: &str = "256";

/// What a diskless host shows of itself over SSH: the root's type, the modloop, the world,
/// the installed packages, lbu status and the apk cache on the medium.
const DISKLESS_STATE: &str = "echo root: $(awk '$2 == \"/\" { print $3 }' /proc/mounts); \
    echo modloop: $(awk '$2 == \"/.modloop\" { print $1, $3 }' /proc/mounts); \
    echo medium: $(awk '$2 == \"/media/vda1\" { print $3, $4 }' /proc/mounts); \
    echo world: $(cat /etc/apk/world); echo installed: $(apk --no-network info 2>/dev/null | sort); \
    echo lbu-status: $(lbu status 2>&1); echo cache: $(ls /media/vda1/cache | grep -c '\\.apk$'); \
    echo dropbear-cached: $(ls /media/vda1/cache | grep '^dropbear-[0-9]'); \
    echo mem: $(free -k | awk '/Mem:/ { print $2, $3 }'); df -k / | tail -1";

/// `lbu diff` on the host: what lbu status lists, in full (for messages).
fn lbu_diff(vm: &Vm) -> String {
    let out = vm.ssh("lbu diff", b"", HostKey::Strict);
    format!("--- lbu diff ---\n{}{}", text(&out.stdout), text(&out.stderr))
}

/// A diskless host (Alpine's diskless mode, issue 11) boots from its medium under BIOS:
/// the initramfs fills a tmpfs root from the apkovl and the packages of its world, and
/// the modloop service mounts the medium's modloop. The probe reads `install = "diskless"`;
/// the script made from the probed facts runs over SSH and ends with lbu commit done and
/// lbu status clean. The host boots again from the medium with the run's changes (dropbear
/// answering with sshd's host key, the world and the installed packages as the run left
/// them); a second run changes nothing; undo.sh, then a reboot, bring OpenSSH back.
#[test]
fn diskless_host_probed_minimised_and_booted_again_from_its_medium() {
    if let Some(why) = realboot::why_not_diskless() {
        return realboot::skip(&why);
    }
    let start = Instant::now();
    let work = WorkDir::new("diskless");
    let disk = realboot::diskless_disk();
    let mut vm = Vm::boot_with_memory("diskless", &disk, work.path(), Bus::Virtio, DISKLESS_MEMORY);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{}", vm.tail());
    eprintln!("diskless: built and booted from its medium in {:.1} min", start.elapsed().as_secs_f64() / 60.0);
    let serial = vm.serial_text();
    assert!(serial.contains("Loading user settings from /media/vda1/vps.apkovl.tar.gz"), "{}", vm.tail());
    assert!(!serial.contains("apkovl packages install completed with errors"), "{}", vm.tail());
    vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
    // The operator's first `lbu commit`, as after setting up a diskless host: the apkovl was
    // packed from the staged root, where the image's packages' scripts never ran, so the
    // first boot's install adds what they add (busybox's klogd user, seen in lbu diff) and
    // the image's own /etc/mtab file goes. The run's preflight wants nothing unsaved.
    let first = vm.ssh_ok("lbu status", HostKey::Strict);
    eprintln!("diskless: lbu status at the first boot (committed before the run):\n{first}");
    vm.ssh_ok("lbu commit", HostKey::Strict);
    let before = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    eprintln!("diskless before the run:\n{before}");
    assert_eq!(line_of(&before, "root"), "tmpfs", "{before}");
    assert!(line_of(&before, "modloop").ends_with("squashfs"), "{before}");
    assert_eq!(line_of(&before, "lbu-status"), "", "{before}\n{}", lbu_diff(&vm));
    // The medium's apk cache holds the installed packages (the initramfs installed them
    // from there, offline); dropbear is not among them yet.
    assert!(line_of(&before, "cache").parse::<usize>().unwrap_or(0) > 50, "{before}");
    assert_eq!(line_of(&before, "dropbear-cached"), "", "{before}");
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("OpenSSH"), "before: {}", view.software());
    assert!(!view.password_login, "sshd took a password before the run");

    // The probe's facts, read over SSH, and the script made from them.
    let probe = common::mingen(&["probe"]).stdout;
    let facts = text(&vm.ssh("sh -s", probe.as_bytes(), HostKey::Strict).stdout);
    eprintln!("diskless: the probe says:\n{facts}");
    assert!(
        facts.lines().any(|l| l == "install = \"diskless\""),
        "the probe does not say install = \"diskless\":\n{facts}"
    );
    for absent in ["disk =", "boot_loader =", "boot_trial ="] {
        assert!(!facts.lines().any(|l| l.starts_with(absent)), "a diskless host has no {absent}\n{facts}");
    }
    let facts_file = work.path().join("host.toml");
    std::fs::write(&facts_file, &facts).expect("write the probed facts");
    let script = common::script(&["--facts", &facts_file.to_string_lossy()]);
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- diskless: the script's output ---\n{output}");
    assert_eq!(status, Some(0), "the script failed on the diskless host:\n{output}");
    assert!(output.contains("preflight: the host matches the facts"), "{output}");
    assert!(output.contains("save the changes to the boot media (lbu commit)"), "{output}");
    let run = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    eprintln!("diskless after the run:\n{run}");
    assert_eq!(line_of(&run, "lbu-status"), "", "lbu status after the run:\n{run}\n{}", lbu_diff(&vm));
    assert_ne!(line_of(&run, "world"), line_of(&before, "world"), "the run left the world as it was");
    assert_ne!(line_of(&run, "dropbear-cached"), "", "dropbear is not in the apk cache on the medium:\n{run}");

    // Booted again from the medium: the run's changes are there, dropbear answers with
    // sshd's host key (strict checking against the known_hosts from before).
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the diskless host did not boot after the run:\n{}", vm.tail());
    // The initramfs (no network: no ip=) installed the world, dropbear included, from the cache.
    let boot_log = text(std::fs::read(&vm.serial).unwrap_or_default().get(mark..).unwrap_or_default());
    assert!(boot_log.contains("Installing dropbear"), "dropbear was not installed at boot:\n{}", vm.tail());
    assert!(!boot_log.contains("apkovl packages install completed with errors"), "{}", vm.tail());
    assert!(vm.power_cycles > 0, "the host did not reboot");
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after the reboot: {e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("dropbear"), "after the reboot: {}", view.software());
    assert!(!view.password_login, "dropbear took root's password; sshd refused passwords");
    let booted = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    eprintln!("diskless after the run and its reboot:\n{booted}");
    assert_eq!(line_of(&booted, "root"), "tmpfs", "{booted}");
    for line in ["world", "installed"] {
        assert_eq!(line_of(&booted, line), line_of(&run, line), "{line} after the reboot:\n{booted}\n{run}");
    }

    // rule sysfs-debug-off's edit of /etc/init.d/sysfs came back from the apkovl, and
    // this boot mounted no debugfs.
    let sysfs = vm.ssh_ok(
        "grep -c ': #mount -n -t debugfs' /etc/init.d/sysfs; awk '$3 == \"debugfs\"' /proc/mounts",
        HostKey::Strict,
    );
    assert_eq!(sysfs.trim(), "1", "the sysfs edit did not last, or debugfs is mounted:\n{sysfs}");
    // Nothing to save after the boot: the boot changed nothing lbu keeps (the initramfs
    // put hwclock back in the boot runlevel, where rule clock-osclock leaves it here).
    assert_eq!(line_of(&booted, "lbu-status"), "", "lbu status after the reboot:\n{booted}\n{}", lbu_diff(&vm));

    // A second run (the script sent again: /root is not saved, but /root/.ssh) changes
    // nothing, and leaves nothing for lbu to save.
    realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
    let (status, again) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
    eprintln!("--- diskless: the second run's output ---\n{again}");
    assert_eq!(status, Some(0), "the second run failed:\n{again}");
    assert!(again.contains("nothing to do: this host is minimised"), "the second run changed something:\n{again}");
    assert!(!again.contains("lbu commit"), "the second run saved changes:\n{again}");
    let second = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    assert_eq!(line_of(&second, "lbu-status"), "", "lbu status after the second run:\n{second}\n{}", lbu_diff(&vm));

    // Undo, saved by lbu: after a reboot, OpenSSH is back with the same host key, and the
    // world and the packages are those from before the run.
    let (status, undo) = realboot::run_script(&vm, "/var/lib/mingen/undo.sh", HostKey::Strict);
    eprintln!("--- diskless: undo.sh's output ---\n{undo}");
    assert_eq!(status, Some(0), "undo.sh failed:\n{undo}");
    let undone = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    assert_eq!(line_of(&undone, "lbu-status"), "", "lbu status after undo:\n{undone}\n{}", lbu_diff(&vm));
    let mark = vm.reboot(HostKey::Strict);
    assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the diskless host did not boot after undo:\n{}", vm.tail());
    vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("after undo's reboot: {e}"));
    let view = SshView::of(&vm, HostKey::Strict);
    assert!(view.key_login && view.software().starts_with("OpenSSH"), "after undo: {}", view.software());
    let back = vm.ssh_ok(DISKLESS_STATE, HostKey::Strict);
    eprintln!("diskless after undo and its reboot:\n{back}");
    for line in ["world", "installed"] {
        assert_eq!(line_of(&back, line), line_of(&before, line), "{line} after undo:\n{back}\n{before}");
    }
    eprintln!(
        "diskless: probe, run, reboot, second run, undo and reboot in {:.1} min",
        start.elapsed().as_secs_f64() / 60.0
    );
    vm.quit();
}
