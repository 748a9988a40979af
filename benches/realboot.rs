//! `cargo bench --bench realboot`: the real Alpine 3.23.6 bench host (tests/realboot/, vda)
//! stock, after the guide's literal commands and after mingen's script (with the default
//! `modules_prune = virtual`, and with `host`), side by side: RAM used (busybox `free`;
//! MemTotal - MemAvailable; and the guest's System RAM - MemAvailable, which counts what
//! the kernel reserves before MemTotal), disk used (`df /`), /lib/modules, loaded modules
//! and userspace processes, measured once the boot has finished and the gettys on ttyS0
//! and tty1 run, by a detached process after SSH has gone (tests/realboot/measure.sh).
//! Median and spread (min-max) of `REALBOOT_BOOTS` boots (default 5) of each.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/sandbox/mod.rs"]
mod sandbox;
use sandbox::image;
#[path = "../tests/realboot/mod.rs"]
mod realboot;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use realboot::{Boot, Bus, HostKey, Vm, WorkDir};

/// Seconds the guest settles after the gettys are up, before it is measured.
const SETTLE_SECS: u64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Stock,
    Guide,
    Mingen,
    MingenHost,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Stock => "stock",
            Variant::Guide => "guide",
            Variant::Mingen => "mingen",
            Variant::MingenHost => "mingen (prune host)",
        }
    }

    /// The name in file and VM names (no spaces: QEMU's guestfwd command is split at them).
    fn slug(self) -> &'static str {
        match self {
            Variant::MingenHost => "mingen-host",
            other => other.name(),
        }
    }
}

/// One boot's figures.
#[derive(Debug, Default, Clone)]
struct Sample {
    free_used_kb: u64,
    mem_total_kb: u64,
    mem_available_kb: u64,
    /// The guest's physical RAM (System RAM in /proc/iomem).
    system_ram_kb: u64,
    disk_used_kb: u64,
    modules_kb: u64,
    module_files: u64,
    modules: Vec<String>,
    processes: Vec<String>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The host as VARIANT leaves it after one completed boot, powered off: boot overlays of it.
fn prepare(variant: Variant, work: &Path) -> PathBuf {
    let name = format!("bench-{}-prepare", variant.slug());
    let mut vm = realboot::boot_ready(&name, &realboot::disk(), work, Bus::Virtio);
    match variant {
        Variant::Stock => {}
        Variant::Guide => {
            let guide = std::fs::read_to_string(realboot::file("guide.sh")).expect("read guide.sh");
            realboot::upload(&vm, "/root/guide.sh", &guide, HostKey::Strict);
            let mark = vm.mark();
            let _ = vm.ssh("sh /root/guide.sh >/root/guide.log 2>&1; reboot", b"", HostKey::Strict);
            assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the guide's host did not boot\n{}", vm.tail());
            // Dropbear made fresh host keys: the guide's operator accepts the new one.
            vm.forget_host_keys();
            vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
        }
        Variant::Mingen | Variant::MingenHost => {
            let mut args = vec!["--disk", "vda"];
            args.extend_from_slice(realboot::FACT_ARGS);
            if variant == Variant::MingenHost {
                args.extend(["--modules-prune", "host"]);
            }
            let script = common::script(&args);
            realboot::upload(&vm, "/root/minimise.sh", &script, HostKey::Strict);
            let (status, output) = realboot::run_script(&vm, "/root/minimise.sh", HostKey::Strict);
            assert_eq!(status, Some(0), "mingen's script failed:\n{output}");
            let mark = vm.reboot(HostKey::Strict);
            assert_eq!(vm.wait_boot(mark), Boot::LoginPrompt, "the minimised host did not boot\n{}", vm.tail());
            vm.wait_ssh(HostKey::Strict).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    vm.poweroff(HostKey::AcceptNew)
}

/// With `MINGEN_BENCH_KEEP=DIR`, a standalone copy of the host VARIANT prepared (DIR/VARIANT.qcow2),
/// for a closer look by hand after the bench.
fn keep_prepared(variant: Variant, image: &Path) {
    let Some(dir) = std::env::var_os("MINGEN_BENCH_KEEP") else { return };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create MINGEN_BENCH_KEEP");
    let copy = dir.join(format!("{}.qcow2", variant.name()));
    realboot::run(
        std::process::Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(image).arg(&copy),
        "qemu-img convert of a prepared host",
    );
}

/// Boot IMAGE once and measure it.
fn measure(variant: Variant, image: &Path, work: &Path, boot: usize) -> Sample {
    let name = format!("bench-{}-{boot}", variant.slug());
    let mut vm = Vm::boot(&name, image, work, Bus::Virtio);
    assert_eq!(vm.wait_boot(0), Boot::LoginPrompt, "{name} did not boot\n{}", vm.tail());
    vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
    let measure = std::fs::read_to_string(realboot::file("measure.sh")).expect("read measure.sh");
    realboot::upload(&vm, "/root/measure.sh", &measure, HostKey::Strict);
    // Detached, so the measurement sees the host without this SSH session.
    vm.ssh_ok(
        &format!(
            "setsid sh -c 'sh /root/measure.sh {SETTLE_SECS} >/root/measure.part 2>&1; mv /root/measure.part /root/measure.out' \
             </dev/null >/dev/null 2>&1 &"
        ),
        HostKey::Strict,
    );
    std::thread::sleep(Duration::from_secs(SETTLE_SECS + 15));
    let start = Instant::now();
    let out = loop {
        let out = vm.ssh("cat /root/measure.out 2>/dev/null", b"", HostKey::Strict);
        let out = text(&out.stdout);
        if out.lines().last() == Some("end") {
            break out;
        }
        assert!(start.elapsed() < Duration::from_secs(700), "{name}: no measurement\n{out}\n{}", vm.tail());
        std::thread::sleep(Duration::from_secs(10));
    };
    vm.quit();
    assert!(!out.contains("\nerror "), "{name}: {out}");
    let mut sample = Sample::default();
    for line in out.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        let number = || value.trim().parse::<u64>().unwrap_or_else(|_| panic!("{name}: bad line {line:?}"));
        match key {
            "free_used" => sample.free_used_kb = number(),
            "mem_total" => sample.mem_total_kb = number(),
            "mem_available" => sample.mem_available_kb = number(),
            "system_ram" => sample.system_ram_kb = number(),
            "disk_used" => sample.disk_used_kb = number(),
            "modules_kb" => sample.modules_kb = number(),
            "module_files" => sample.module_files = number(),
            "module" => sample.modules.push(value.to_string()),
            "process" => sample.processes.push(value.to_string()),
            _ => {}
        }
    }
    assert!(sample.free_used_kb > 0 && sample.disk_used_kb > 0 && sample.module_files > 0, "{name}: {out}");
    assert!(
        sample.system_ram_kb > sample.mem_total_kb && sample.mem_total_kb > sample.mem_available_kb,
        "{name}: {out}"
    );
    sample
}

fn median_spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names something else skips this bench.
    if std::env::args().skip(1).any(|a| !a.starts_with("--") && a != "realboot") {
        return;
    }
    if let Some(why) = realboot::why_not() {
        realboot::skip(&why);
        return;
    }
    let boots: usize = std::env::var("REALBOOT_BOOTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let start = Instant::now();
    let disk = realboot::disk();
    eprintln!("realboot bench: disk {} ready after {:.0} s", disk.display(), start.elapsed().as_secs_f64());
    let variants = [Variant::Stock, Variant::Guide, Variant::Mingen, Variant::MingenHost];
    // One thread per variant; at most two VMs run at once (realboot's slots).
    let results: BTreeMap<Variant, Vec<Sample>> = std::thread::scope(|scope| {
        let handles: Vec<_> = variants
            .iter()
            .map(|&variant| {
                scope.spawn(move || {
                    let work = WorkDir::new(&format!("bench-{}", variant.slug()));
                    let image = prepare(variant, work.path());
                    keep_prepared(variant, &image);
                    eprintln!("realboot bench: {} prepared at {:.0} s", variant.name(), start.elapsed().as_secs_f64());
                    let samples: Vec<Sample> = (0..boots)
                        .map(|i| {
                            let s = measure(variant, &image, work.path(), i);
                            eprintln!(
                                "realboot bench: {} boot {i}: free used {} KiB, total-available {} KiB, taken {} KiB, disk {} KiB, {} modules, {} processes ({:.0} s)",
                                variant.name(),
                                s.free_used_kb,
                                s.mem_total_kb - s.mem_available_kb,
                                s.system_ram_kb - s.mem_available_kb,
                                s.disk_used_kb,
                                s.modules.len(),
                                s.processes.len(),
                                start.elapsed().as_secs_f64()
                            );
                            s
                        })
                        .collect();
                    (variant, samples)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a variant's thread panicked")).collect()
    });
    print_table(&results, boots);
    println!("\nwall time: {:.1} min (2 VMs at most at once, TCG)", start.elapsed().as_secs_f64() / 60.0);
}

fn print_table(results: &BTreeMap<Variant, Vec<Sample>>, boots: usize) {
    type Metric = (&'static str, fn(&Sample) -> f64, &'static str);
    let metrics: [Metric; 8] = [
        ("RAM used, free (MiB)", |s| s.free_used_kb as f64 / 1024.0, "{:.1}"),
        ("RAM MemTotal-MemAvailable (MiB)", |s| (s.mem_total_kb - s.mem_available_kb) as f64 / 1024.0, "{:.1}"),
        ("RAM taken, System RAM-MemAvailable", |s| (s.system_ram_kb - s.mem_available_kb) as f64 / 1024.0, "{:.1}"),
        ("disk used, df / (MiB)", |s| s.disk_used_kb as f64 / 1024.0, "{:.1}"),
        ("/lib/modules, du (MiB)", |s| s.modules_kb as f64 / 1024.0, "{:.1}"),
        ("module files in /lib/modules", |s| s.module_files as f64, "{:.0}"),
        ("modules loaded", |s| s.modules.len() as f64, "{:.0}"),
        ("userspace processes", |s| s.processes.len() as f64, "{:.0}"),
    ];
    println!("\nreal-boot bench: Alpine 3.23.6, QEMU TCG -m 128, vda; median (min-max) of {boots} boots\n");
    print!("| {:<32} |", "");
    for variant in results.keys() {
        print!(" {:<22} |", variant.name());
    }
    println!();
    print!("|{}|", "-".repeat(34));
    for _ in results.keys() {
        print!("{}|", "-".repeat(24));
    }
    println!();
    for (label, get, format) in metrics {
        print!("| {label:<32} |");
        for samples in results.values() {
            let mut values: Vec<f64> = samples.iter().map(get).collect();
            let (median, min, max) = median_spread(&mut values);
            let cell = if format == "{:.0}" {
                format!("{median:.0} ({min:.0}-{max:.0})")
            } else {
                format!("{median:.1} ({min:.1}-{max:.1})")
            };
            print!(" {cell:<22} |");
        }
        println!();
    }
    for (variant, samples) in results {
        let first = &samples[0];
        let mut modules = first.modules.clone();
        modules.sort();
        println!("\n{} (boot 0) modules: {}", variant.name(), modules.join(" "));
        println!("{} (boot 0) processes: {}", variant.name(), first.processes.join(" | "));
    }
}
