//! The real-boot bench: a cloud-VPS-like BIOS disk built from the real Alpine 3.23.6 image
//! (cached outside the checkout), QEMU booting copy-on-write overlays of it on virtio-blk,
//! virtio-scsi or NVMe with a serial log and a monitor socket, and real SSH into it over a
//! loopback port. A `Vm` is killed when dropped: no VM outlives its test.
//!
//! The disk undoes what the image's container build did (`rc_sys="lxc"`, no root in fstab,
//! its agent, 9p, setup-dns, no mdev) and gets a cloud image's runlevels, gettys (tty1-6 and
//! ttyS0), static IPv4 for QEMU's user network, root by UUID in fstab and extlinux.conf, a
//! test key and a password for root, and the cloud image's packages from the signed bench
//! repository (`packages.rs`), installed by the image's own apk in a chroot. The guest's
//! apk then reaches that repository over HTTP at `REPO_URL`, served from the host for each
//! VM (`serve.sh`, run by QEMU's user network): it is not on the guest's disk, so the disk
//! used that the bench measures is the host's own.
#![allow(dead_code)]

pub mod packages;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::image;
use crate::sandbox::{Release, repack};

/// Bumped whenever what goes onto the disk changes: the cached disk is named after it.
const DISK_VERSION: &str = "v4";
/// The root filesystem's UUID, in fstab and on the kernel command line.
pub const ROOT_UUID: &str = "0b5e7a1c-3d2f-4e8a-9c61-5f4d2b7a8e90";
pub const HOSTNAME: &str = "vps";
/// root's password: sshd refuses passwords on the bench host, and so must dropbear after.
pub const PASSWORD: &str = "bench-root-password";
/// The mingen flags that describe the bench host truthfully, besides `--disk`.
pub const FACT_ARGS: &[&str] = &["--ssh-password-auth", "no"];
/// Where the guest reaches the bench repository: QEMU's user network forwards the guest's
/// connections to this address (and nothing else) to `serve.sh` on the host.
const REPO_ADDRESS: &str = "10.0.2.100";
pub const REPO_URL: &str = "http://10.0.2.100/";
/// The kernel upgrade's repository (`packages::Repository::upgrade`), for `apk --repository`.
pub const UPGRADE_URL: &str = "http://10.0.2.100/upgrade";
/// How long a boot (firmware to login prompt) may take under TCG with another VM beside it.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

const SYSLINUX: &str = "/usr/lib/syslinux";
/// The diskless host's boot medium (the disk's one partition): where the initramfs mounts
/// it (/media/vda1), lbu's LBU_MEDIA and the apk cache's home.
pub const MEDIUM: &str = "vda1";
/// Bumped whenever what `stage_medium` puts on the diskless medium changes.
const MEDIUM_VERSION: &str = "m4";
/// The cloud image's packages a diskless host leaves out: the tmpfs root holds every
/// installed package in RAM, and cloud-init with python3 (about 45 MB installed) would not
/// fit in the guest's RAM beside the rest; Alpine's own diskless images configure
/// themselves from the apkovl (or tiny-cloud), not cloud-init.
const DISKLESS_LEFT_OUT: &[&str] = &["cloud-init"];
/// The kernel's `modules=` on both bench disks, as Alpine's installer writes it.
const BOOT_MODULES: &str = "sd-mod,usb-storage,ext4";

/// The bench's own files under tests/realboot/.
pub fn file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/realboot").join(name)
}

/// A test that cannot run says why (the project's one skip rule, tests/skip/): SKIPPED on
/// stderr and in the skip log, or a panic under CI=true.
pub fn skip(reason: &str) {
    crate::common::skip::cannot_run("the real-boot bench", reason);
}

/// Why the bench cannot run here, or None when it can.
pub fn why_not() -> Option<String> {
    why_not_boot().or_else(packages::why_not)
}

/// Why the disk cannot be built and booted here (packages aside), or None when it can.
pub fn why_not_boot() -> Option<String> {
    static WHY_NOT: OnceLock<Option<String>> = OnceLock::new();
    WHY_NOT
        .get_or_init(|| {
            if !nix_is_root() {
                return Some("the real-boot bench needs root (loop devices, mount, chroot)".into());
            }
            let tools = [
                ("qemu-system-x86_64", "--version"),
                ("qemu-img", "--version"),
                ("sfdisk", "--version"),
                ("mkfs.ext4", "-V"),
                ("extlinux", "--version"),
                ("losetup", "--version"),
                ("unshare", "--version"),
                ("ssh", "-V"),
                ("ssh-keygen", "-?"),
                ("openssl", "version"),
                ("timeout", "--version"),
            ];
            for (tool, arg) in tools {
                let found = Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
                if !found {
                    return Some(format!(
                        "`{tool}` is not installed (qemu-system-x86, qemu-utils, fdisk, extlinux, openssh-client)"
                    ));
                }
            }
            for path in
                ["mbr/mbr.bin", "modules/bios/menu.c32", "modules/bios/libutil.c32", "modules/bios/libcom32.c32"]
            {
                if !Path::new(SYSLINUX).join(path).is_file() {
                    return Some(format!("{SYSLINUX}/{path} is missing (syslinux-common)"));
                }
            }
            image::why_not()
        })
        .clone()
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Run COMMAND; panic with its output if it fails (one helper for the image and the bench).
pub use crate::image::run;

fn write(path: &Path, text: &str, mode: u32) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    let _ = fs::remove_file(path);
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Build PATH with BUILD (given a scratch path beside it) unless it exists; renamed into place.
fn cached(path: PathBuf, build: impl FnOnce(&Path)) -> PathBuf {
    if path.exists() {
        return path;
    }
    let scratch = path.with_extension(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let _ = fs::remove_file(&scratch);
    build(&scratch);
    if fs::rename(&scratch, &path).is_err() {
        let _ = fs::remove_dir_all(&scratch);
        let _ = fs::remove_file(&scratch);
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The test key: root's authorized key on the disk. Kept in the cache beside the disk.
pub struct Key {
    pub private: PathBuf,
    pub public: String,
}

pub fn key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = cached(image::cache().join("realboot-key"), |scratch| {
            fs::create_dir_all(scratch).expect("create the key directory");
            run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench@mingen", "-f"])
                    .arg(scratch.join("id_ed25519")),
                "ssh-keygen for the test key",
            );
        });
        Key { private: dir.join("id_ed25519"), public: read(&dir.join("id_ed25519.pub")) }
    })
}

// ------------------------------------------------------------------ the disk

/// How the bench disk boots: the shapes of cloud images that `build-disk.sh` lays out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// BIOS: MBR, one ext4 partition, extlinux (`boot_loader = "extlinux"`).
    Extlinux,
    /// UEFI, as alpine-make-vm-image lays it out: GPT, the EFI system partition (FAT32)
    /// mounted at /boot with the kernel, its initramfs and startup.nsh, whose one line the
    /// UEFI shell runs (the kernel's EFI stub, `boot_loader = "efi-stub"`); ext4 root.
    EfiStub,
    /// BIOS, Alpine's diskless mode (`install = "diskless"`): MBR, one ext4 partition (the
    /// boot medium, vda1, no root filesystem on the disk) with extlinux, the image's kernel
    /// and initramfs, the modloop, the apkovl and the apk cache with the installed packages
    /// (`stage_medium`); the initramfs fills a tmpfs root from them at every boot.
    Diskless,
}

impl Layout {
    /// The layout's name for build-disk.sh.
    fn name(self) -> &'static str {
        match self {
            Layout::Extlinux => "extlinux",
            Layout::EfiStub => "efi-stub",
            Layout::Diskless => "diskless",
        }
    }

    /// The firmware that boots it.
    pub fn firmware(self) -> Firmware {
        match self {
            Layout::Extlinux | Layout::Diskless => Firmware::Bios,
            Layout::EfiStub => Firmware::Uefi,
        }
    }
}

/// The cloud-VPS-like disk (raw, 1 GiB, MBR + extlinux + ext4), built once and cached.
/// Boot overlays of it (`Vm::boot`); never write it.
pub fn disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| build_disk(Layout::Extlinux)).clone()
}

/// The EFI-stub disk (raw, 1 GiB, GPT + EFI system partition at /boot + ext4), built once
/// and cached. Boot overlays of it with `Firmware::Uefi`; never write it.
pub fn efi_stub_disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| build_disk(Layout::EfiStub)).clone()
}

/// The diskless host's boot medium (raw, 1 GiB, MBR + extlinux + one ext4 partition),
/// built once and cached. Boot overlays of it; never write it.
pub fn diskless_disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| build_disk(Layout::Diskless)).clone()
}

fn build_disk(layout: Layout) -> PathBuf {
    // Without the bench repository (while packages.rs is unavailable) the disk boots, without SSH.
    let repo = if packages::why_not().is_none() { Some(packages::repository()) } else { None };
    let mut index = Vec::new();
    if let Some(repo) = repo {
        list_files(&repo.dir, &mut index);
    }
    index.sort();
    let scripts = [read(&file("build-disk.sh")), read(&file("mdev.initd"))].concat();
    // The image's packages carry the rebuilt identities (`adopt_identities`).
    let stamp = short_hash(&format!("{DISK_VERSION}\n{}\n{}\n{scripts}", index.join("\n"), key().public));
    let path = match layout {
        Layout::Extlinux => image::cache().join(format!("realboot-disk-{stamp}.raw")),
        Layout::EfiStub => image::cache().join(format!("realboot-disk-{}-{stamp}.raw", layout.name())),
        Layout::Diskless => {
            image::cache().join(format!("realboot-disk-{}-{MEDIUM_VERSION}-{stamp}.raw", layout.name()))
        }
    };
    cached(path, |scratch| {
        let stage = scratch.with_extension("stage");
        let _ = Command::new("rm").arg("-rf").arg(&stage).status();
        run(Command::new("cp").arg("-a").arg(image::root()).arg(&stage), "copy the image's root tree");
        stage_root(&stage, repo, layout);
        // The diskless disk holds the boot medium, made from the staged root.
        let medium = scratch.with_extension("medium");
        let tree = if layout == Layout::Diskless {
            let repo = repo.unwrap_or_else(|| panic!("the diskless medium needs the bench repository"));
            stage_medium(&stage, &medium, repo);
            &medium
        } else {
            &stage
        };
        run(
            Command::new("bash").arg(file("build-disk.sh")).arg(layout.name()).arg(tree).arg(scratch).arg(ROOT_UUID),
            "build-disk.sh",
        );
        let _ = Command::new("rm").arg("-rf").arg(&stage).arg(&medium).status();
    })
}

/// `path size` of every file under DIR, recursively.
fn list_files(dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())).flatten() {
        let meta = entry.metadata().expect("stat");
        if meta.is_dir() {
            list_files(&entry.path(), out);
        } else {
            out.push(format!("{} {}", entry.path().display(), meta.len()));
        }
    }
}

fn short_hash(text: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..6])
}

/// The cloud image's runlevels (FACTS.md), where the service exists.
const SYSINIT: &[&str] = &["devfs", "dmesg", "mdev", "hwdrivers"];
const BOOT: &[&str] = &["acpid", "bootmisc", "hostname", "hwclock", "modules", "swap", "sysctl", "syslog"];
const DEFAULT: &[&str] = &["chronyd", "networking", "sshd", "cloud-init-hotplugd", "qemu-guest-agent"];
const SHUTDOWN: &[&str] = &["killprocs", "mount-ro", "savecache"];

/// Turn the image's container root into a cloud image's root.
fn stage_root(stage: &Path, repo: Option<&packages::Repository>, layout: Layout) {
    let at = |p: &str| stage.join(p.trim_start_matches('/'));
    // What the container build did, undone.
    let _ = fs::remove_file(at("/.dockerenv"));
    let rc_conf = read(&at("/etc/rc.conf"));
    assert!(rc_conf.contains("\nrc_sys=\"lxc\"\n"), "the image's rc.conf no longer sets rc_sys=\"lxc\"");
    // The image also starts services in parallel; a cloud image keeps OpenRC's default.
    let rc_conf = rc_conf
        .replace("\nrc_sys=\"lxc\"\n", "\n#rc_sys=\"\"\n")
        .replace("\nrc_parallel=\"YES\"\n", "\n#rc_parallel=\"NO\"\n");
    write(&at("/etc/rc.conf"), &rc_conf, 0o644);
    let fstab = read(&at("/etc/fstab"));
    let esp = match layout {
        Layout::Extlinux => "",
        // A diskless host's fstab names its boot medium, not a root (the initramfs moves the
        // medium's mount there and remounts it with these options; lbu commit writes to it).
        Layout::Diskless => "",
        // alpine-make-vm-image's line for the EFI system partition.
        Layout::EfiStub => {
            "LABEL=EFI\t/boot\tvfat\trw,relatime,fmask=0133,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro\t0 2\n"
        }
    };
    let root = match layout {
        // setup-lbu's line (`noauto,ro`), with the `noauto` that setup-apkcache takes away:
        // the medium is mounted at boot, read-only; lbu and apk remount it to write.
        Layout::Diskless => format!("UUID={ROOT_UUID}\t/media/{MEDIUM}\text4\tro 0 0\n"),
        _ => format!("UUID={ROOT_UUID}\t/\text4\trw,relatime 0 1\n"),
    };
    write(&at("/etc/fstab"), &format!("{root}{esp}{fstab}"), 0o644);
    write(&at("/etc/modules"), "af_packet\nipv6\n", 0o644);
    write(&at("/etc/init.d/mdev"), &read(&file("mdev.initd")), 0o755);
    // The cloud image's identity, console and network.
    write(&at("/etc/hostname"), &format!("{HOSTNAME}\n"), 0o644);
    write(
        &at("/etc/hosts"),
        &format!("127.0.0.1\t{HOSTNAME} localhost.localdomain localhost\n::1\t\tlocalhost localhost.localdomain\n"),
        0o644,
    );
    write(&at("/etc/resolv.conf"), "nameserver 10.0.2.3\n", 0o644);
    write(
        &at("/etc/network/interfaces"),
        "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 10.0.2.15/24\n\tgateway 10.0.2.2\n",
        0o644,
    );
    let inittab = read(&at("/etc/inittab"));
    let serial = "#ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100";
    assert!(inittab.contains(serial), "the image's inittab has no commented ttyS0 getty");
    write(&at("/etc/inittab"), &inittab.replace(serial, &serial[1..]), 0o644);
    match layout {
        // The boot loader's configuration, as update-extlinux keeps it on a cloud image.
        Layout::Extlinux => {
            write(
                &at("/etc/mkinitfs/mkinitfs.conf"),
                "features=\"ata base cdrom ext4 keymap kms mmc nvme raid scsi usb virtio \"\n",
                0o644,
            );
            write(&at("/etc/update-extlinux.conf"), &update_extlinux_conf(), 0o644);
            write(&at("/boot/extlinux.conf"), &extlinux_conf(), 0o644);
        }
        // alpine-make-vm-image's initramfs features and startup.nsh (build-disk.sh puts
        // /boot on the EFI system partition).
        Layout::EfiStub => {
            write(&at("/etc/mkinitfs/mkinitfs.conf"), "features=\"base ext4 kms scsi virtio\"\n", 0o644);
            write(&at("/boot/startup.nsh"), &startup_nsh(), 0o644);
        }
        // The boot medium's extlinux.conf is written by `stage_medium`.
        Layout::Diskless => {}
    }
    // root: the test key, and a password for the password test.
    let hash = run(Command::new("openssl").args(["passwd", "-6", "-salt", "benchsalt", PASSWORD]), "openssl passwd");
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    let shadow = read(&at("/etc/shadow"));
    let shadow: String = shadow
        .lines()
        .map(|l| if l.starts_with("root:") { format!("root:{hash}:20000:0:::::\n") } else { format!("{l}\n") })
        .collect();
    write(&at("/etc/shadow"), &shadow, 0o640);
    fs::create_dir_all(at("/root/.ssh")).expect("mkdir /root/.ssh");
    fs::set_permissions(at("/root/.ssh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    write(&at("/root/.ssh/authorized_keys"), &key().public, 0o600);
    // The cloud image's packages, from the bench repository, by the image's own apk; the
    // image's own packages known to apk by the identities of their rebuilds in that
    // repository, as a host's packages are those of its mirror (undo reinstalls them).
    if let Some(repo) = repo {
        repack::adopt_identities(stage, Release::V3_23);
        install_packages(stage, repo, layout);
        // sshd refuses passwords (the first value wins in sshd_config); host keys made once,
        // as a cloud image's first boot would.
        let sshd_config = at("/etc/ssh/sshd_config");
        let config = read(&sshd_config);
        write(
            &sshd_config,
            &format!("# The bench host refuses passwords.\nPasswordAuthentication no\n\n{config}"),
            0o644,
        );
        run(Command::new("ssh-keygen").arg("-A").arg("-f").arg(stage), "ssh-keygen -A for the host keys");
    }
    // Runlevels: exactly the cloud image's.
    // A diskless host mounts its modloop at sysinit (as Alpine's initramfs sets it up).
    let sysinit = [SYSINIT, if layout == Layout::Diskless { &["modloop"] } else { &[] }].concat();
    for (level, services) in [("sysinit", &sysinit[..]), ("boot", BOOT), ("default", DEFAULT), ("shutdown", SHUTDOWN)] {
        let dir = at(&format!("/etc/runlevels/{level}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a runlevel");
        for service in services {
            if at(&format!("/etc/init.d/{service}")).exists() {
                std::os::unix::fs::symlink(format!("/etc/init.d/{service}"), dir.join(service))
                    .expect("link a service");
            }
        }
    }
    if repo.is_some() {
        assert!(at("/etc/runlevels/default/sshd").symlink_metadata().is_ok(), "the packages brought no sshd service");
    }
}

fn update_extlinux_conf() -> String {
    format!(
        "# Written by the real-boot bench in the shape of syslinux's /etc/update-extlinux.conf\n\
         overwrite=1\n\
         vesa_menu=0\n\
         default_kernel_opts=\"console=ttyS0,115200n8 quiet\"\n\
         modules={BOOT_MODULES}\n\
         root=UUID={ROOT_UUID}\n\
         verbose=0\n\
         hidden=1\n\
         timeout=1\n\
         default=virt\n\
         serial_port=\n\
         serial_baud=115200\n\
         xen_opts=dom0_mem=384M\n\
         password=''\n\
         disable_trigger=0\n"
    )
}

fn extlinux_conf() -> String {
    format!(
        "# Generated by update-extlinux 6.04_pre1-r16\n\
         DEFAULT menu.c32\n\
         PROMPT 0\n\
         MENU TITLE Alpine/Linux Boot Menu\n\
         MENU HIDDEN\n\
         MENU AUTOBOOT Alpine will be booted automatically in # seconds.\n\
         TIMEOUT 10\n\
         LABEL virt\n  \
           MENU DEFAULT\n  \
           MENU LABEL Linux virt\n  \
           LINUX vmlinuz-virt\n  \
           INITRD initramfs-virt\n  \
           APPEND root=UUID={ROOT_UUID} modules={BOOT_MODULES} console=ttyS0,115200n8 quiet\n\
         \n\
         MENU SEPARATOR\n\n"
    )
}

/// The one line of the EFI-stub disk's /boot/startup.nsh, which the UEFI shell runs: the
/// kernel (its EFI stub) and its command line, as alpine-make-vm-image writes it, with the
/// bench's modules= (those of the extlinux disk, where the rules have something to drop)
/// and its console on the serial port, where the bench reads the boot.
fn startup_nsh() -> String {
    format!(
        "vmlinuz-virt initrd=initramfs-virt root=UUID={ROOT_UUID} rootfstype=ext4 modules={BOOT_MODULES} \
         console=ttyS0,115200n8\n"
    )
}

/// Install the cloud image's packages from the repository (bound into the staged root for
/// the time of `apk add`), then point apk at `REPO_URL`, where the guest finds it.
fn install_packages(stage: &Path, repo: &packages::Repository, layout: Layout) {
    let mount_point = "/tmp/bench-repo";
    fs::create_dir_all(stage.join(mount_point.trim_start_matches('/'))).expect("mkdir the repository's mount point");
    write(&stage.join("etc/apk/repositories"), &format!("{mount_point}\n"), 0o644);
    write(&stage.join("etc/apk/keys").join(&repo.key_name), &read(&repo.public_key), 0o644);
    // alpine-make-vm-image's UEFI image has no boot loader package; a diskless host's boot
    // loader is on its medium, it runs alpine-base (lbu), and it has no cloud-init (see
    // `DISKLESS_LEFT_OUT`).
    let mut names: Vec<&str> = packages::CLOUD_IMAGE_PACKAGES
        .iter()
        .copied()
        .filter(|name| layout == Layout::Extlinux || *name != "syslinux")
        .filter(|name| layout != Layout::Diskless || !DISKLESS_LEFT_OUT.contains(name))
        .collect();
    if layout == Layout::Diskless {
        names.push("alpine-base");
    }
    let names = names.join(" ");
    let script = format!(
        "set -e; mount --rbind /dev \"$1/dev\"; mount -t proc proc \"$1/proc\"; \
         mount --bind \"$2\" \"$1{mount_point}\"; \
         chroot \"$1\" /sbin/apk add --no-network --quiet --no-progress {names}"
    );
    run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script, "stage"])
            .arg(stage)
            .arg(&repo.dir),
        "apk add of the cloud image's packages in the staged root",
    );
    fs::remove_dir(stage.join(mount_point.trim_start_matches('/'))).expect("remove the repository's mount point");
    write(&stage.join("etc/apk/repositories"), &format!("{REPO_URL}\n"), 0o644);
    // The index in apk's cache, as `apk update` leaves it: apk reads it from there (and
    // `apk add --simulate`, the script's preflight, reads nothing else); apk fetches a
    // newer one over HTTP once it is older than apk's cache age.
    let cache = stage.join("var/cache/apk");
    let _ = fs::remove_dir_all(&cache);
    fs::create_dir_all(&cache).expect("mkdir /var/cache/apk");
    let index = cache.join(format!("APKINDEX.{}.tar.gz", index_cache_id(REPO_URL)));
    fs::copy(repo.dir.join("x86_64/APKINDEX.tar.gz"), &index).expect("copy the index into apk's cache");
    let found = run(
        Command::new("chroot").arg(stage).args(["/sbin/apk", "--no-network", "search", "-x", "dropbear"]),
        "apk search in the staged root",
    );
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("dropbear-"),
        "apk does not read the cached index {}: {}",
        index.display(),
        String::from_utf8_lossy(&found.stderr)
    );
}

/// The diskless boot medium in MEDIUM_DIR, from the staged root STAGE, as Alpine's
/// initramfs reads it (mkinitfs 3.13.0, initramfs-init and nlplug-findfs): with no `root=`
/// it mounts each partition read-only at /media/DEV, takes `*.apkovl.tar.gz` at its top
/// and each directory with `.boot_repository` beside it as a repository, unpacks the
/// apkovl into a tmpfs root, installs /etc/apk/world (and alpine-base) into it from those
/// repositories and the apk cache (`--no-network` without `ip=`), and moves the medium's
/// mount into the new root, where the modloop service finds `modloop=` on it.
/// This medium has no boot repository: the apk cache holds every installed package (as
/// on a host installed from a network mirror, after setup-apkcache and `apk cache
/// download`), so a package the run installs from the mirror comes back at boot only
/// from the cache, where apk keeps it.
/// On the medium: boot/ (extlinux, the image's kernel, an initramfs with squashfs, the modloop, a
/// squashfs of `modules/KVER/`), the apkovl that `lbu package` makes of the staged root
/// (LBU_MEDIA=vda1, the apk cache on the medium as setup-apkcache links it, root's
/// key included) and cache/ (the bench repository's index and the installed packages, as
/// apk caches them, for the initramfs's apk and the host's to read offline).
fn stage_medium(stage: &Path, medium: &Path, repo: &packages::Repository) {
    let at = |p: &str| stage.join(p.trim_start_matches('/'));
    let _ = Command::new("rm").arg("-rf").arg(medium).status();
    let boot = medium.join("boot");
    fs::create_dir_all(&boot).expect("create the medium's /boot");
    fs::copy(at("/boot/vmlinuz-virt"), boot.join("vmlinuz-virt")).expect("copy the kernel");
    let kernels: Vec<_> = fs::read_dir(at("/lib/modules")).expect("read /lib/modules").flatten().collect();
    assert_eq!(kernels.len(), 1, "one kernel's modules in the image");
    let kver = kernels[0].file_name().to_string_lossy().into_owned();
    let modloop = medium.with_extension("modloop");
    let _ = Command::new("rm").arg("-rf").arg(&modloop).status();
    fs::create_dir_all(modloop.join("modules")).expect("create the modloop tree");
    run(Command::new("cp").arg("-a").arg(kernels[0].path()).arg(modloop.join("modules")), "copy the modules");
    run(
        Command::new("mksquashfs").arg(&modloop).arg(boot.join("modloop-virt")).args([
            "-comp",
            "xz",
            "-all-root",
            "-noappend",
            "-no-progress",
            "-quiet",
        ]),
        "mksquashfs of the modloop",
    );
    let _ = Command::new("rm").arg("-rf").arg(&modloop).status();
    write(&boot.join("extlinux.conf"), &diskless_extlinux_conf(), 0o644);
    // The staged root becomes what a diskless host saves: no kernel package (its kernel
    // and modules are the medium's; mkinitfs goes with it), lbu saving to the medium,
    // the apk cache on it, and root's authorized key among what lbu saves, with the
    // bench's mdev service (`stage_root`; busybox-mdev-openrc's on a real host, which
    // apk audit leaves out of the apkovl as a new file under /etc/init.d).
    // The initramfs: the image's has no squashfs (its features lack `squashfs`), and the
    // modloop service, in the new root with no modules but the modloop's, then cannot
    // mount the modloop ("Invalid argument", seen): made again by the image's mkinitfs
    // with the image's features and `squashfs`, as Alpine's ISOs are.
    let apkovl = format!("/tmp/{HOSTNAME}.apkovl.tar.gz");
    let script = format!(
        "set -e; mount --rbind /dev \"$1/dev\"; mount -t proc proc \"$1/proc\"; \
         . \"$1/etc/mkinitfs/mkinitfs.conf\"; \
         chroot \"$1\" /sbin/mkinitfs -F \"$features squashfs\" -o /tmp/initramfs-virt {kver}; \
         chroot \"$1\" /sbin/apk del --no-network --quiet linux-virt; \
         sed -i 's/^# LBU_MEDIA=usb$/LBU_MEDIA={MEDIUM}/' \"$1/etc/lbu/lbu.conf\"; \
         grep -qx 'LBU_MEDIA={MEDIUM}' \"$1/etc/lbu/lbu.conf\"; \
         mkdir -p \"$1/media/{MEDIUM}\"; ln -s /media/{MEDIUM}/cache \"$1/etc/apk/cache\"; \
         chroot \"$1\" /sbin/lbu include /root/.ssh /etc/init.d/mdev; \
         chroot \"$1\" /sbin/lbu package {apkovl}"
    );
    run(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script, "stage"]).arg(stage),
        "lbu package of the staged root",
    );
    fs::rename(at(&apkovl), medium.join(format!("{HOSTNAME}.apkovl.tar.gz"))).expect("move the apkovl");
    fs::rename(at("/tmp/initramfs-virt"), boot.join("initramfs-virt")).expect("move the initramfs");
    let cache = medium.join("cache");
    fs::create_dir_all(&cache).expect("create cache/");
    fs::copy(
        repo.dir.join("x86_64/APKINDEX.tar.gz"),
        cache.join(format!("APKINDEX.{}.tar.gz", index_cache_id(REPO_URL))),
    )
    .expect("copy the index into the medium's apk cache");
    // The installed packages in the cache, as `apk cache download` leaves them there:
    // `NAME-VERSION.HASH.apk`, HASH the first 8 hex digits of the package's hash in the
    // index (apk adbdump; seen: apk cached dropbear as dropbear-2022.83-r0.59d0f233.apk).
    let installed = read(&at("/lib/apk/db/installed"));
    let mut names = Vec::new();
    for block in installed.split("\n\n") {
        let field = |key: &str| block.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
        if let (Some(name), Some(version)) = (field("P:"), field("V:")) {
            names.push(format!("{name}-{version}"));
        }
    }
    let index = stage.join("tmp/APKINDEX.adb");
    fs::copy(repo.dir.join("x86_64/APKINDEX.tar.gz"), &index).expect("copy the index into the staged root");
    let dump = run(
        Command::new("chroot").arg(stage).args(["/sbin/apk", "adbdump", "--allow-untrusted", "/tmp/APKINDEX.adb"]),
        "apk adbdump of the bench index",
    );
    let _ = fs::remove_file(&index);
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let mut hashes = std::collections::BTreeMap::new();
    let (mut name, mut version) = (String::new(), String::new());
    for line in dump.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- name: ") {
            name = n.to_string();
        } else if let Some(v) = line.strip_prefix("version: ") {
            version = v.to_string();
        } else if let Some(h) = line.strip_prefix("hashes: ") {
            hashes.insert(format!("{name}-{version}"), h[..8].to_string());
        }
    }
    for package in &names {
        let hash = hashes.get(package).unwrap_or_else(|| panic!("{package} is not in the bench index"));
        fs::copy(repo.dir.join("x86_64").join(format!("{package}.apk")), cache.join(format!("{package}.{hash}.apk")))
            .unwrap_or_else(|e| panic!("cache {package}: {e}"));
    }
}

/// The diskless medium's /boot/extlinux.conf: the command line of Alpine's ISO (no `root=`:
/// diskless mode; the modloop's name on the medium), with the bench's serial console.
/// `ext4` joins `modules=` for the medium's filesystem; `alpine_dev=` is left out, for
/// mkinitfs has ignored it since 2024 ("init: remove unused boot options").
fn diskless_extlinux_conf() -> String {
    "DEFAULT virt\n\
     PROMPT 0\n\
     TIMEOUT 10\n\
     LABEL virt\n  \
       LINUX vmlinuz-virt\n  \
       INITRD initramfs-virt\n  \
       APPEND modules=loop,squashfs,sd-mod,usb-storage,ext4 modloop=/boot/modloop-virt console=ttyS0,115200n8\n"
        .to_string()
}

/// The name apk gives the cached index of repository URL: the first 4 bytes of the sha1 of
/// the index's URL, in hex.
fn index_cache_id(url: &str) -> String {
    use sha1::Digest;
    let index = format!("{}/x86_64/APKINDEX.tar.gz", url.trim_end_matches('/'));
    hex::encode(&sha1::Sha1::digest(index.as_bytes())[..4])
}

/// The repository the VMs' apk reaches at `REPO_URL`, when the bench has one here.
fn served_repository() -> Option<&'static Path> {
    packages::why_not().is_none().then(|| packages::repository().dir.as_path())
}

// ------------------------------------------------------------------ VMs

/// How the disk is attached, and the name the guest gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    /// virtio-blk: /dev/vda
    Virtio,
    /// virtio-scsi: /dev/sda
    Scsi,
    /// NVMe: /dev/nvme0n1
    Nvme,
}

impl Bus {
    pub fn disk(self) -> &'static str {
        match self {
            Bus::Virtio => "vda",
            Bus::Scsi => "sda",
            Bus::Nvme => "nvme0n1",
        }
    }

    /// QEMU's arguments for the disk OVERLAY on this bus. Under OVMF the disk is the one
    /// boot entry (bootindex) and PXE is off (`Firmware::qemu_args`): OVMF tries the disk,
    /// then starts its shell, with no network boot first (PXE and HTTP over IPv4 and IPv6
    /// took minutes under TCG).
    fn qemu_args(self, overlay: &Path, firmware: Firmware) -> Vec<String> {
        let file = overlay.display();
        let boot = if firmware == Firmware::Uefi { ",bootindex=0" } else { "" };
        match self {
            Bus::Virtio => vec![
                "-drive".into(),
                format!("file={file},if=none,id=root,format=qcow2"),
                "-device".into(),
                format!("virtio-blk-pci,drive=root{boot}"),
            ],
            Bus::Scsi => vec![
                "-drive".into(),
                format!("file={file},if=none,id=root,format=qcow2"),
                "-device".into(),
                "virtio-scsi-pci,id=scsi0".into(),
                "-device".into(),
                format!("scsi-hd,drive=root,bus=scsi0.0{boot}"),
            ],
            Bus::Nvme => vec![
                "-drive".into(),
                format!("file={file},if=none,id=root,format=qcow2"),
                "-device".into(),
                format!("nvme,serial=bench0001,drive=root{boot}"),
            ],
        }
    }
}

/// The firmware QEMU starts the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default: the MBR's boot code.
    Bios,
    /// OVMF (Debian's `ovmf`): UEFI, with a copy of its variable store per VM; with no boot
    /// entry it starts the UEFI shell, which runs startup.nsh from the EFI system partition.
    Uefi,
}

/// OVMF's code (read-only) and the pristine variable store copied for each VM.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Firmware {
    /// The guest's RAM (QEMU's -m). Under OVMF with 128 MiB the kernel's EFI stub stops with
    /// "Failed to decompress kernel": no free 16 MiB-aligned range for the kernel's 38 MB
    /// (its init_size) is left beside the firmware, the loaded kernel and the initramfs.
    fn memory(self) -> &'static str {
        match self {
            Firmware::Bios => "128",
            Firmware::Uefi => "256",
        }
    }

    /// QEMU's arguments for it; VARS is the VM's own variable store.
    fn qemu_args(self, vars: &Path) -> Vec<String> {
        match self {
            Firmware::Bios => vec![],
            Firmware::Uefi => vec![
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
                // No PXE (see `Bus::qemu_args`).
                "-fw_cfg".into(),
                "name=opt/org.tianocore/IPv4PXESupport,string=n".into(),
                "-fw_cfg".into(),
                "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
            ],
        }
    }
}

/// Why an EFI-stub host cannot be built and booted here (OVMF, mtools and mkfs.fat besides
/// the bench), or None when it can.
pub fn why_not_uefi() -> Option<String> {
    if let Some(why) = why_not() {
        return Some(why);
    }
    for path in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(path).is_file() {
            return Some(format!("{path} is missing (ovmf)"));
        }
    }
    for (tool, arg, package) in [("mkfs.fat", "--help", "dosfstools"), ("mcopy", "--version", "mtools")] {
        if Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Some(format!("`{tool}` is not installed ({package})"));
        }
    }
    None
}

/// Why the diskless host's medium cannot be built and booted here (mksquashfs for its
/// modloop besides the bench), or None when it can.
pub fn why_not_diskless() -> Option<String> {
    if let Some(why) = why_not() {
        return Some(why);
    }
    if Command::new("mksquashfs").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("`mksquashfs` is not installed (squashfs-tools)".into());
    }
    None
}

/// At most two VMs at once on this machine (2 cores, TCG), across test and bench processes:
/// a VM holds the lock of one of two slot files in the cache while it runs.
const MAX_VMS: usize = 2;

struct Slot(fs::File);

impl Slot {
    fn take() -> Slot {
        let dir = image::cache().join("realboot-slots");
        fs::create_dir_all(&dir).expect("create the slot directory");
        loop {
            for i in 0..MAX_VMS {
                let file = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(i.to_string()))
                    .expect("open a slot file");
                if file.try_lock().is_ok() {
                    return Slot(file);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boot {
    /// The getty on ttyS0 printed its login prompt.
    LoginPrompt,
    /// The initramfs could not mount the root and started its emergency shell.
    EmergencyShell,
}

/// Whether ssh may learn the host key or must find it in known_hosts already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKey {
    AcceptNew,
    Strict,
}

/// Scratch space for a VM's overlay, logs and sockets; `keep` leaves it for a later VM.
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(name: &str) -> WorkDir {
        let root = image::cache().join("realboot-work");
        fs::create_dir_all(&root).expect("create the work directory");
        // Work directories of processes that are gone are left-overs: remove them.
        for entry in fs::read_dir(&root).expect("read the work directory").flatten() {
            let pid = entry.file_name().to_string_lossy().rsplit('-').next().unwrap_or("").to_string();
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a VM's work directory");
        WorkDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running QEMU guest. Dropping it kills QEMU.
pub struct Vm {
    child: Child,
    pub name: String,
    pub dir: PathBuf,
    pub serial: PathBuf,
    monitor: PathBuf,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub overlay: PathBuf,
    bus: Bus,
    firmware: Firmware,
    /// The guest's RAM in MiB (QEMU's -m).
    memory: &'static str,
    /// How many times the guest rebooted (QEMU was started again).
    pub power_cycles: usize,
    _slot: Slot,
}

/// Start QEMU for a VM: TCG, 128 MiB (MemTotal 92136 kB; 256 MiB under OVMF), one CPU, the serial console appended
/// to SERIAL, a monitor socket, user networking with only 127.0.0.1:PORT forwarded to port 22
/// and, from the guest, only `REPO_ADDRESS:80`, where `serve.sh` answers for the repository
/// (each request logged in `NAME.repo.log`).
/// QEMU dies with the thread that started it (setpriv --pdeathsig), and exits when the guest
/// reboots (-no-reboot): `power_cycle` starts it again.
fn spawn_qemu(name: &str, image: &Path, dir: &Path, bus: Bus, firmware: Firmware, memory: &str, port: u16) -> Child {
    let (serial, monitor) = (vm_file(dir, name, "serial.log"), vm_file(dir, name, "monitor"));
    let _ = fs::remove_file(&monitor);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm_file(dir, name, "qemu.log"))
        .expect("open the QEMU log");
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-cpu", "max", "-m", memory, "-smp", "1", "-display", "none", "-no-reboot"])
        .args(["-name", name])
        .arg("-chardev")
        .arg(format!("file,id=serial0,path={},append=on", serial.display()))
        .args(["-serial", "chardev:serial0"])
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        // The guest reaches nothing but the forwarded ports: restrict=on, loopback only.
        .args(["-netdev", &netdev(name, dir, port)])
        .args(["-device", "virtio-net-pci,netdev=net0"])
        .args(["-device", "virtio-rng-pci", "-device", "virtio-balloon-pci"])
        .args(firmware.qemu_args(&vm_file(dir, name, "vars.fd")))
        .args(bus.qemu_args(image, firmware))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start qemu-system-x86_64")
}

/// VM NAME's file SUFFIX in DIR (its serial log, monitor socket, UEFI variable store...).
fn vm_file(dir: &Path, name: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{name}.{suffix}"))
}

fn netdev(name: &str, dir: &Path, port: u16) -> String {
    let mut netdev = format!("user,id=net0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:{port}-:22");
    if let Some(repo) = served_repository() {
        let log = dir.join(format!("{name}.repo.log"));
        let words = [file("serve.sh").display().to_string(), repo.display().to_string(), log.display().to_string()];
        // QEMU splits the option at commas and libslirp the command at spaces.
        assert!(words.iter().all(|w| !w.contains([',', ' '])), "a path with a comma or a space: {words:?}");
        netdev.push_str(&format!(",guestfwd=tcp:{REPO_ADDRESS}:80-cmd:bash {}", words.join(" ")));
    }
    netdev
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A copy-on-write overlay at OVERLAY over BASE.
pub fn overlay(base: &Path, overlay: &Path) {
    let format = if base.extension().is_some_and(|e| e == "raw") { "raw" } else { "qcow2" };
    let _ = fs::remove_file(overlay);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-b"])
            .arg(base)
            .args(["-F", format])
            .arg(overlay),
        "qemu-img create of an overlay",
    );
}

impl Vm {
    /// Boot a new overlay over BASE in DIR on BUS (BIOS). Returns at once; `wait_boot` waits.
    pub fn boot(name: &str, base: &Path, dir: &Path, bus: Bus) -> Vm {
        Vm::boot_with(name, base, dir, bus, Firmware::Bios)
    }

    /// Boot a new overlay over BASE in DIR on BUS with FIRMWARE.
    pub fn boot_with(name: &str, base: &Path, dir: &Path, bus: Bus, firmware: Firmware) -> Vm {
        let image = dir.join(format!("{name}.qcow2"));
        overlay(base, &image);
        Vm::start_with(name, &image, dir, bus, firmware)
    }

    /// Boot IMAGE itself (an overlay the caller made) in DIR on BUS (BIOS).
    pub fn start(name: &str, image: &Path, dir: &Path, bus: Bus) -> Vm {
        Vm::start_with(name, image, dir, bus, Firmware::Bios)
    }

    /// Boot IMAGE itself in DIR on BUS with FIRMWARE; a UEFI guest gets its own copy of
    /// OVMF's variable store, which its reboots keep (as a machine keeps its NVRAM).
    pub fn start_with(name: &str, image: &Path, dir: &Path, bus: Bus, firmware: Firmware) -> Vm {
        Vm::start_with_memory(name, image, dir, bus, firmware, firmware.memory())
    }

    /// Boot a new overlay over BASE in DIR on BUS (BIOS) with MEMORY MiB of RAM, not the
    /// firmware's default (a diskless host holds its root in RAM).
    pub fn boot_with_memory(name: &str, base: &Path, dir: &Path, bus: Bus, memory: &'static str) -> Vm {
        let image = dir.join(format!("{name}.qcow2"));
        overlay(base, &image);
        Vm::start_with_memory(name, &image, dir, bus, Firmware::Bios, memory)
    }

    fn start_with_memory(
        name: &str,
        image: &Path,
        dir: &Path,
        bus: Bus,
        firmware: Firmware,
        memory: &'static str,
    ) -> Vm {
        if firmware == Firmware::Uefi {
            fs::copy(OVMF_VARS, vm_file(dir, name, "vars.fd")).expect("copy OVMF's variable store");
        }
        let slot = Slot::take();
        let serial = vm_file(dir, name, "serial.log");
        let monitor = vm_file(dir, name, "monitor");
        let known_hosts = vm_file(dir, name, "known_hosts");
        let _ = fs::File::create(&known_hosts);
        let _ = fs::File::create(&serial);
        let port = free_port();
        let child = spawn_qemu(name, image, dir, bus, firmware, memory, port);
        Vm {
            child,
            name: name.into(),
            dir: dir.into(),
            serial,
            monitor,
            port,
            known_hosts,
            overlay: image.into(),
            bus,
            firmware,
            memory,
            power_cycles: 0,
            _slot: slot,
        }
    }

    /// QEMU ended because the guest rebooted (`-no-reboot`): start it again on the same disk,
    /// port and serial log. A cold start stands in for the warm reset, which hangs under TCG
    /// here (the kernel's decompressor spins after `system_reset`, with or without la57).
    fn power_cycle(&mut self) {
        let _ = self.child.wait();
        self.power_cycles += 1;
        self.child = spawn_qemu(&self.name, &self.overlay, &self.dir, self.bus, self.firmware, self.memory, self.port);
    }

    /// The serial console so far.
    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// The serial log's length now: a mark to wait from.
    pub fn mark(&self) -> usize {
        fs::metadata(&self.serial).map_or(0, |m| m.len() as usize)
    }

    /// The last lines of the serial console, for messages.
    pub fn tail(&self) -> String {
        let text = self.serial_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("--- {} serial (last 40 lines) ---\n{}", self.name, lines[from..].join("\n"))
    }

    /// Wait (at most BOOT_TIMEOUT) until the serial log past FROM shows a login prompt or the
    /// initramfs emergency shell.
    pub fn wait_boot(&mut self, from: usize) -> Boot {
        let start = Instant::now();
        loop {
            let bytes = fs::read(&self.serial).unwrap_or_default();
            let text = String::from_utf8_lossy(bytes.get(from..).unwrap_or_default());
            if text.contains("initramfs emergency recovery shell") {
                return Boot::EmergencyShell;
            }
            if text.contains(&format!("{HOSTNAME} login: ")) {
                return Boot::LoginPrompt;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The guest rebooted: -no-reboot ended QEMU; a bounded number of restarts.
                let rebooted = String::from_utf8_lossy(&bytes).ends_with_reboot();
                assert!(
                    status.success() && rebooted && self.power_cycles < 20,
                    "QEMU exited ({status}) while {} booted\n{}",
                    self.name,
                    self.tail()
                );
                self.power_cycle();
            }
            assert!(
                start.elapsed() < BOOT_TIMEOUT,
                "{} did not boot within {} s\n{}",
                self.name,
                BOOT_TIMEOUT.as_secs(),
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ssh_command(&self, host_key: HostKey) -> Command {
        let mut cmd = Command::new("timeout");
        let strict = match host_key {
            HostKey::AcceptNew => "accept-new",
            HostKey::Strict => "yes",
        };
        cmd.args(["-k", "5", "900", "ssh", "-p", &self.port.to_string(), "-i"])
            .arg(&key().private)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=8", "-o", "LogLevel=ERROR"])
            // One name for the host whatever its port: known_hosts carries over between VMs.
            .args(["-o", &format!("HostKeyAlias={HOSTNAME}-bench")])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-o")
            .arg(format!("StrictHostKeyChecking={strict}"))
            .arg("root@127.0.0.1");
        cmd
    }

    /// Run SCRIPT in a root shell over SSH with the test key, INPUT on its stdin.
    pub fn ssh(&self, script: &str, input: &[u8], host_key: HostKey) -> Output {
        let mut child = self
            .ssh_command(host_key)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ssh");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("run ssh");
        let _ = feeder.join();
        out
    }

    /// Like `ssh`, and it must succeed.
    pub fn ssh_ok(&self, script: &str, host_key: HostKey) -> String {
        let out = self.ssh(script, b"", host_key);
        assert!(
            out.status.success(),
            "ssh to {} ran `{script}` and failed ({}):\n{}{}\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (at most 300 s) until SSH logs in with the key; the last failure if it never does.
    pub fn wait_ssh(&self, host_key: HostKey) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let out = self.ssh("true", b"", host_key);
            if out.status.success() {
                return Ok(());
            }
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            if start.elapsed() > Duration::from_secs(300) {
                return Err(format!("ssh to {} never logged in: {why}\n{}", self.name, self.tail()));
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// `ssh -v` with the key (for the server's software and methods), as text, success or not.
    pub fn ssh_verbose(&self, host_key: HostKey) -> (bool, String) {
        let out = self.ssh_command(host_key).args(["-v", "true"]).stdin(Stdio::null()).output().expect("run ssh -v");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Try root's password (no key) through SSH_ASKPASS: whether it logged in, and ssh -v's text.
    pub fn ssh_password(&self) -> (bool, String) {
        let askpass = self.dir.join("askpass.sh");
        write(&askpass, &format!("#!/bin/sh\necho '{PASSWORD}'\n"), 0o700);
        let out = Command::new("timeout")
            .args(["-k", "5", "120", "ssh", "-v", "-p", &self.port.to_string()])
            .args(["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive"])
            .args(["-o", "NumberOfPasswordPrompts=1", "-o", "BatchMode=no", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", &format!("HostKeyAlias={HOSTNAME}-bench")])
            .args(["root@127.0.0.1", "true"])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .output()
            .expect("run ssh with a password");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Trust the host keys in KNOWN_HOSTS (another VM's, from before): strict checking uses them.
    pub fn trust(&self, known_hosts: &Path) {
        fs::copy(known_hosts, &self.known_hosts).expect("copy known_hosts");
    }

    /// Forget every host key learnt (a host with fresh keys is then accepted as new).
    pub fn forget_host_keys(&self) {
        fs::write(&self.known_hosts, "").expect("empty known_hosts");
    }

    /// Send a command to the QEMU monitor.
    pub fn monitor(&self, command: &str) {
        if let Ok(mut sock) = std::os::unix::net::UnixStream::connect(&self.monitor) {
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = sock.write_all(format!("{command}\n").as_bytes());
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf);
        }
    }

    /// `reboot` from an SSH session, as an operator types it; the serial mark before it.
    pub fn reboot(&self, host_key: HostKey) -> usize {
        let mark = self.mark();
        let _ = self.ssh("reboot", b"", host_key);
        mark
    }

    /// Wait (at most TIMEOUT) for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// `poweroff` over SSH and wait for QEMU to end, so the overlay is clean to build on.
    pub fn poweroff(mut self, host_key: HostKey) -> PathBuf {
        let _ = self.ssh("poweroff", b"", host_key);
        assert!(self.wait_exit(Duration::from_secs(240)), "{} did not power off\n{}", self.name, self.tail());
        self.overlay.clone()
    }

    /// End QEMU now (the monitor's `quit`, then a kill).
    pub fn quit(mut self) {
        self.monitor("quit");
        if !self.wait_exit(Duration::from_secs(10)) {
            let _ = self.child.kill();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Keep the serial log where a person can read it after the run.
        let logs = image::cache().join("realboot-logs");
        let _ = fs::create_dir_all(&logs);
        let _ = fs::copy(&self.serial, logs.join(format!("{}.serial.log", self.name)));
    }
}

trait EndsWithReboot {
    fn ends_with_reboot(&self) -> bool;
}

impl EndsWithReboot for str {
    /// The serial log's last kernel line is the reboot (not a power-off or a crash), or a
    /// kernel panic's reboot (`panic=N`).
    fn ends_with_reboot(&self) -> bool {
        let restart = self.rfind("reboot: ");
        let panic = self.rfind("Rebooting in ");
        match (restart, panic) {
            (Some(r), p) if p.is_none_or(|p| r > p) => self[r..].starts_with("reboot: Restarting system"),
            (_, Some(p)) => self[..p].rfind("Kernel panic - not syncing").is_some(),
            _ => false,
        }
    }
}

/// Boot BASE on BUS and wait for the login prompt and an SSH login (learning the host key).
pub fn boot_ready(name: &str, base: &Path, dir: &Path, bus: Bus) -> Vm {
    let mut vm = Vm::boot(name, base, dir, bus);
    let boot = vm.wait_boot(0);
    assert_eq!(boot, Boot::LoginPrompt, "{name} did not boot\n{}", vm.tail());
    vm.wait_ssh(HostKey::AcceptNew).unwrap_or_else(|e| panic!("{e}"));
    vm
}

/// Run `sh PATH` as root in an SSH session: its exit status and its output.
///
/// The output goes to a file on the guest first and is printed after the run. Run with the
/// session's stderr, mingen's script never returns: its log set-up keeps the terminal as fd 3
/// (`exec 3>&2` in `start_log`), `rc-service dropbear start` passes fd 3 on to the dropbear
/// daemon, and the SSH session waits for that pipe to close, i.e. until the next boot.
pub fn run_script(vm: &Vm, path: &str, host_key: HostKey) -> (Option<i32>, String) {
    let out = vm.ssh(&format!("sh {path} >{path}.out 2>&1; status=$?; cat {path}.out; exit $status"), b"", host_key);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Send SCRIPT to the guest as PATH over SSH.
pub fn upload(vm: &Vm, path: &str, script: &str, host_key: HostKey) {
    let out = vm.ssh(&format!("cat > {path}"), script.as_bytes(), host_key);
    assert!(out.status.success(), "upload of {path} failed: {}", String::from_utf8_lossy(&out.stderr));
}
