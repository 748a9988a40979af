//! Host facts: each declared once (its key, type, default, meaning and flag) in the
//! `facts!` table below, and everything that table gives: the typed `Facts`, the
//! facts file (TOML, checked with its lines), the command-line flags, and the
//! key/value view that rule conditions and placeholders read.

use clap::ValueEnum;
use clap::builder::ValueParser;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

use crate::error::Error;

/// What a fact's type knows: how it reads from the facts file and from its flag,
/// how conditions and files see it, and which values a rule condition may name.
pub trait FactValue: Sized + Clone + Send + Sync + 'static {
    /// The values a rule condition may name; empty when the fact cannot be a condition.
    fn choices() -> Vec<String> {
        Vec::new()
    }
    /// The value from its TOML form; the message says what is wrong.
    fn from_toml(value: &toml::Value) -> Result<Self, String>;
    /// The flag's parser (clap reports its errors with the flag's name).
    fn flag_parser() -> ValueParser;
    /// As conditions and `@fact@` placeholders see it; lists are joined by spaces.
    fn text(&self) -> String;
    /// As a TOML literal, for `mingen facts` and the script's header.
    fn toml(&self) -> String {
        format!("\"{}\"", self.text())
    }
}

/// One fact: its key, what it means, the values a condition may name, and the
/// fact that decides whether it takes effect at all.
pub struct FactKey {
    pub name: &'static str,
    pub meaning: &'static str,
    pub choices: fn() -> Vec<String>,
    /// `(fact, value)`: this fact only takes effect when that fact has that value.
    pub applies_when: Option<(&'static str, &'static str)>,
}

/// A fact's `when fact = "value"` clause, as `FactKey::applies_when`.
macro_rules! applies_when {
    () => {
        None
    };
    ($fact:ident = $value:literal) => {
        Some((stringify!($fact), $value))
    };
}

/// The one table of facts. Each line: `key: Type = default, "meaning"`, then
/// optionally `, when fact = "value"` (it only takes effect then) and
/// `, alias "flag"` (a second name for its flag).
macro_rules! facts {
    ($(
        $name:ident : $ty:ty = $default:expr, $meaning:literal
        $(, when $when_fact:ident = $when_value:literal)?
        $(, alias $alias:literal)?
        ;
    )*) => {
        /// The checked facts about one host.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Facts {
            $(pub $name: $ty,)*
        }

        impl Default for Facts {
            /// The guide's host.
            fn default() -> Self {
                Facts { $($name: $default,)* }
            }
        }

        /// Every fact, in the order `mingen facts` prints them.
        pub const KEYS: &[FactKey] = &[$(
            FactKey {
                name: stringify!($name),
                meaning: $meaning,
                choices: <$ty as FactValue>::choices,
                applies_when: applies_when!($($when_fact = $when_value)?),
            },
        )*];

        impl Facts {
            /// The value of a fact as conditions see it (lists joined by spaces).
            pub fn get(&self, name: &str) -> Option<String> {
                match name {
                    $(stringify!($name) => Some(self.$name.text()),)*
                    _ => None,
                }
            }

            /// The value as a TOML literal, for `mingen facts`.
            pub fn toml_value(&self, name: &str) -> Option<String> {
                match name {
                    $(stringify!($name) => Some(self.$name.toml()),)*
                    _ => None,
                }
            }

            /// Set a fact from its TOML value; None for an unknown key.
            fn set_from_toml(&mut self, name: &str, value: &toml::Value) -> Option<Result<(), String>> {
                match name {
                    $(stringify!($name) => Some(<$ty as FactValue>::from_toml(value).map(|v| self.$name = v)),)*
                    _ => None,
                }
            }
        }

        /// One flag per fact, each overriding the facts file.
        #[derive(clap::Args, Debug, Default)]
        pub struct FactFlags {
            $(
                #[arg(long, global = true, help = $meaning, value_parser = <$ty as FactValue>::flag_parser()
                    $(, visible_alias = $alias)?)]
                $name: Option<$ty>,
            )*
        }

        impl FactFlags {
            /// Put the flags given over FACTS; the names of the facts they set.
            pub fn apply(&self, facts: &mut Facts) -> Vec<&'static str> {
                let mut set = Vec::new();
                $(
                    if let Some(value) = &self.$name {
                        facts.$name = value.clone();
                        set.push(stringify!($name));
                    }
                )*
                set
            }
        }
    };
}

facts! {
    target: TargetName = TargetName(DEFAULT_TARGET.into()),
        "the rule set to use (`mingen targets` lists them)";
    install: Install = Install::Sys,
        "sys: installed on a disk; diskless: runs from RAM (Alpine's diskless mode): the modules come from a modloop, so no pruning and no mkinitfs, and `lbu commit` keeps the changes";
    disk: Disk = Disk::Vda,
        "the root disk: vda (virtio-blk), sda (virtio-scsi, keeps `scsi` in the initramfs), nvme0n1 (keeps `nvme`) or xvda (Xen's blkfront, built into linux-virt)",
        when install = "sys";
    hypervisor: Hypervisor = Hypervisor::Kvm,
        "kvm: a KVM guest (virtio devices); xen: a Xen guest, PV or HVM (xen-blkfront and xen-netfront, built into linux-virt): the virtio-only steps are skipped";
    boot_loader: BootLoader = BootLoader::Extlinux,
        "where the kernel command line persists: extlinux (/etc/update-extlinux.conf), grub (/etc/default/grub, then grub-mkconfig) or efi-stub (/boot/startup.nsh)",
        when install = "sys";
    ipv6: Ipv6 = Ipv6::Unused,
        "used: IPv6 stays on; unused: `ipv6.disable=1` and the sysctl fix";
    guest_agent: Keep = Keep::Remove,
        "qemu-guest-agent: keep it if the provider uses QEMU guest operations (snapshots, password reset)";
    balloon: Keep = Keep::Remove,
        "virtio_balloon: keep it if the provider reclaims memory by ballooning",
        when hypervisor = "kvm";
    ntp: Ntp = Ntp::Busybox,
        "busybox: busybox ntpd replaces chrony; none: no NTP (kvm-clock keeps time); chrony: keep chrony";
    python: Keep = Keep::Remove,
        "python3: keep it, or remove it with cloud-init";
    network: Network = Network::Static,
        "static: the address is in /etc/network/interfaces and dhcpcd and dhclient go; dhcp: they stay";
    ssh: Ssh = Ssh::Dropbear,
        "dropbear: OpenSSH is replaced by dropbear; openssh: OpenSSH stays";
    ssh_ports: Ports = Ports(vec![22]),
        "the port(s) sshd listens on now, comma-separated; dropbear listens on the same",
        when ssh = "dropbear", alias "ssh-port";
    ssh_password_auth: YesNo = YesNo::Yes,
        "sshd's PasswordAuthentication now; `no` becomes dropbear's -s",
        when ssh = "dropbear";
    ssh_root_login: RootLogin = RootLogin::ProhibitPassword,
        "sshd's PermitRootLogin now; prohibit-password becomes -g, no becomes -w",
        when ssh = "dropbear";
    modules_prune: ModulesPrune = ModulesPrune::Virtual,
        "virtual: keep in /lib/modules what the host loads and needs to boot, plus every bus a hypervisor may switch it to; host: without those; off: keep every module",
        when install = "sys";
    modules_keep: Words = Words(Vec::new()),
        "modules to keep beside those (names, or paths such as kernel/net/netfilter), comma-separated as a flag";
    sudo_doas: SudoDoas = SudoDoas::Auto,
        "sudo and doas: auto removes them only where root can log in over SSH directly (checked on the host); keep; remove";
    consoles: Terminals = Terminals(vec!["ttyS0".into(), "tty1".into()]),
        "the terminals whose gettys stay (the provider's panel: serial and VGA); gettys on other terminals go";
    ram_budget_mb: MegaBytes = MegaBytes(23),
        "the RAM used (busybox `free`) the host must end within; the guide ended at 23 MB";
    disk_budget_mb: MegaBytes = MegaBytes(72),
        "the disk used (`df /`) the host must end within; the guide ended at 72 MB";
    containers: Containers = Containers::None,
        "none: no container runtime limits memory with cgroups, so kernel-memory accounting goes (`cgroup.memory=nokmem`); used: it stays";
    boot_trial: BootTrial = BootTrial::Once,
        "once: the new boot configuration is tried once (extlinux --once) and the previous one stays the default until the boot is confirmed; off: the new one is the default at once (no extlinux, or /boot/ldlinux.sys missing)",
        when install = "sys";
}

pub const DEFAULT_TARGET: &str = "alpine-3.23-kvm";

pub fn key(name: &str) -> Option<&'static FactKey> {
    KEYS.iter().find(|k| k.name == name)
}

// ---------------------------------------------------------------- the types of facts

/// Implements `FactValue` for a one-of-several choice (a clap `ValueEnum`).
macro_rules! choice {
    ($($ty:ty),*) => {$(
        impl FactValue for $ty {
            fn choices() -> Vec<String> {
                <$ty as ValueEnum>::value_variants().iter().map(|v| v.text()).collect()
            }
            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                let text = value.as_str().ok_or_else(|| format!("expected a string, one of: {}", Self::choices().join(", ")))?;
                <$ty as ValueEnum>::from_str(text, false)
                    .map_err(|_| format!("`{text}` is not allowed; allowed values: {}", Self::choices().join(", ")))
            }
            fn flag_parser() -> ValueParser {
                ValueParser::new(clap::builder::EnumValueParser::<$ty>::new())
            }
            fn text(&self) -> String {
                self.to_possible_value().expect("no skipped variants").get_name().to_string()
            }
        }
    )*};
}

choice!(
    Install,
    Disk,
    Hypervisor,
    BootLoader,
    Ipv6,
    Keep,
    Ntp,
    Network,
    Ssh,
    YesNo,
    RootLogin,
    SudoDoas,
    ModulesPrune,
    Containers,
    BootTrial
);

/// How Alpine is installed: on a disk, or running from RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Install {
    /// on a disk (setup-disk's `sys` mode, every cloud image)
    Sys,
    /// from RAM, with its configuration saved by `lbu commit` (diskless mode)
    Diskless,
}

/// Which kind of disk holds the root filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Disk {
    /// virtio-blk, `/dev/vda`
    Vda,
    /// virtio-scsi, `/dev/sda`
    Sda,
    /// NVMe, `/dev/nvme0n1`
    #[value(name = "nvme0n1")]
    Nvme0n1,
    /// Xen's virtual block device, `/dev/xvda`
    Xvda,
}

/// Which hypervisor the guest runs on: what its devices are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Hypervisor {
    /// KVM: virtio devices
    Kvm,
    /// Xen, PV or HVM: the Xen front-ends, built into linux-virt
    Xen,
}

/// Where the kernel command line persists, and what makes it take effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootLoader {
    /// `/etc/update-extlinux.conf`, regenerated into `/boot/extlinux.conf` (BIOS)
    #[default]
    Extlinux,
    /// `GRUB_CMDLINE_LINUX_DEFAULT` in `/etc/default/grub`, then `grub-mkconfig` (UEFI)
    Grub,
    /// the one line of `/boot/startup.nsh` that the UEFI shell runs (alpine-make-vm-image)
    EfiStub,
}

/// Whether the host uses IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ipv6 {
    Used,
    Unused,
}

/// Keep or remove an optional part of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Keep {
    Keep,
    Remove,
}

/// Which NTP client the host ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ntp {
    /// busybox ntpd (no extra package)
    Busybox,
    /// no NTP at all: kvm-clock keeps time
    None,
    /// keep chrony
    Chrony,
}

/// How the host gets its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Network {
    Static,
    Dhcp,
}

/// Which SSH server the host ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ssh {
    Dropbear,
    Openssh,
}

/// Whether the SSH server accepts passwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    Yes,
    No,
}

/// sshd's `PermitRootLogin`, as dropbear can carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RootLogin {
    Yes,
    ProhibitPassword,
    No,
}

/// Whether a container runtime limits memory with cgroups (and so needs kernel-memory accounting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Containers {
    /// no container runtime on the host
    None,
    /// a container runtime limits memory with cgroups
    Used,
}

/// How the reboot takes the new boot configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BootTrial {
    /// try it once, with the previous configuration as the default until it is confirmed
    Once,
    /// make it the default at once
    Off,
}

/// Whether sudo and doas go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SudoDoas {
    /// remove them only where root can log in over SSH directly
    Auto,
    /// keep them
    Keep,
    /// remove them: root has another way in
    Remove,
}

/// Which kernel modules stay on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModulesPrune {
    /// what the host needs, and every bus a hypervisor may move it to
    Virtual,
    /// what the host needs now
    Host,
    /// keep every module
    Off,
}

/// A list of plain words (module names, paths): letters, digits and `_-./`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

impl Words {
    fn checked(words: Vec<String>) -> Result<Words, String> {
        for word in &words {
            let plain = !word.is_empty()
                && !word.starts_with('/')
                && !word.contains("..")
                && word.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            if !plain {
                return Err(format!("`{word}` is not a module name or a path under /lib/modules/VERSION"));
            }
        }
        Ok(Words(words))
    }
}

/// A TOML list of strings (EXAMPLE shows one in the error).
fn string_list(value: &toml::Value, example: &str) -> Result<Vec<String>, String> {
    let list = value.as_array().ok_or_else(|| format!("expected a list of strings, e.g. {example}"))?;
    list.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("{v} is not a string"))).collect()
}

/// A flag's comma-separated list, blanks and empty items dropped.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// A list of strings as a TOML literal.
fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", "))
}

impl FactValue for Words {
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::checked(string_list(value, "[\"wireguard\"]")?)
    }
    fn flag_parser() -> ValueParser {
        ValueParser::new(|text: &str| Words::checked(comma_list(text)))
    }
    fn text(&self) -> String {
        self.0.join(" ")
    }
    fn toml(&self) -> String {
        toml_list(&self.0)
    }
}

/// A size in MB, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MegaBytes(pub u32);

impl MegaBytes {
    fn checked(value: i64) -> Result<MegaBytes, String> {
        match u32::try_from(value) {
            Ok(mb) if mb > 0 => Ok(MegaBytes(mb)),
            _ => Err(format!("{value} is not a size in MB (1 to {})", u32::MAX)),
        }
    }
}

impl FactValue for MegaBytes {
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::checked(value.as_integer().ok_or("expected a whole number of MB, e.g. 20")?)
    }
    fn flag_parser() -> ValueParser {
        ValueParser::new(|text: &str| {
            Self::checked(text.trim().parse::<i64>().map_err(|_| format!("`{text}` is not a whole number of MB"))?)
        })
    }
    fn text(&self) -> String {
        self.0.to_string()
    }
    fn toml(&self) -> String {
        self.text()
    }
}

/// Terminal names (`tty1`, `ttyS0`, `hvc0`), as `/etc/inittab` gives a getty's terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminals(pub Vec<String>);

impl Terminals {
    fn checked(names: Vec<String>) -> Result<Terminals, String> {
        if names.is_empty() {
            return Err(
                "expected at least one terminal: a host without a getty cannot be reached from the panel".into()
            );
        }
        for name in &names {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("`{name}` is not a terminal name such as tty1 or ttyS0"));
            }
        }
        Ok(Terminals(names))
    }
}

impl FactValue for Terminals {
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::checked(string_list(value, "[\"ttyS0\", \"tty1\"]")?)
    }
    fn flag_parser() -> ValueParser {
        ValueParser::new(|text: &str| Terminals::checked(comma_list(text)))
    }
    fn text(&self) -> String {
        self.0.join(" ")
    }
    fn toml(&self) -> String {
        toml_list(&self.0)
    }
}

/// The name of a target (`targets/NAME.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetName(pub String);

impl TargetName {
    fn parse(text: &str) -> Result<TargetName, String> {
        let known = crate::target::names();
        if known.iter().any(|name| name == text) {
            Ok(TargetName(text.to_string()))
        } else {
            Err(format!("`{text}` is not a target; targets: {}", known.join(", ")))
        }
    }
}

impl FactValue for TargetName {
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        Self::parse(value.as_str().ok_or("expected a string: a target's name")?)
    }
    fn flag_parser() -> ValueParser {
        ValueParser::new(|text: &str| TargetName::parse(text))
    }
    fn text(&self) -> String {
        self.0.clone()
    }
}

/// TCP ports: at least one, each from 1 to 65535, none twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

impl Ports {
    fn port(value: i64) -> Result<u16, String> {
        u16::try_from(value)
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| format!("{value} is not a port: ports are 1 to 65535"))
    }

    fn checked(ports: Vec<u16>) -> Result<Ports, String> {
        if ports.is_empty() {
            return Err("at least one port is needed".into());
        }
        if let Some(twice) = ports.iter().enumerate().find(|(i, p)| ports[..*i].contains(p)) {
            return Err(format!("port {} is listed twice", twice.1));
        }
        Ok(Ports(ports))
    }

    /// The ports in ascending order, as the script compares them with sshd's.
    pub fn sorted(&self) -> Vec<u16> {
        let mut ports = self.0.clone();
        ports.sort_unstable();
        ports
    }
}

impl FactValue for Ports {
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let list = value.as_array().ok_or("expected a list of ports, e.g. [22]")?;
        let ports = list
            .iter()
            .map(|v| {
                v.as_integer().ok_or_else(|| format!("{v} is not a port: ports are 1 to 65535")).and_then(Self::port)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::checked(ports)
    }
    fn flag_parser() -> ValueParser {
        ValueParser::new(|text: &str| {
            let ports = text
                .split(',')
                .map(|p| p.trim().parse::<i64>().map_err(|_| format!("`{p}` is not a port")).and_then(Ports::port))
                .collect::<Result<Vec<_>, _>>()?;
            Ports::checked(ports)
        })
    }
    fn text(&self) -> String {
        self.0.iter().map(u16::to_string).collect::<Vec<_>>().join(" ")
    }
    fn toml(&self) -> String {
        format!("[{}]", self.0.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))
    }
}

// ---------------------------------------------------------------- the facts file

/// A facts file larger than this is not a facts file.
pub const MAX_FACTS_FILE: u64 = 64 * 1024;

/// Where a facts file came from, for error messages.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn error(&self, key: &str, offset: usize, message: String) -> Error {
        Error::Facts { file: self.path.to_string(), line: self.line_of(offset), key: key.to_string(), message }
    }
}

impl Facts {
    /// Read a facts file: at most `MAX_FACTS_FILE` bytes of UTF-8 TOML.
    pub fn read(path: &str) -> Result<Facts, Error> {
        use std::io::Read;
        let read_error = |message: String| Error::Read { path: path.to_string(), message };
        let file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_FACTS_FILE + 1).read_to_end(&mut bytes).map_err(|e| read_error(e.to_string()))?;
        if bytes.len() as u64 > MAX_FACTS_FILE {
            return Err(read_error(format!("it is larger than {} KiB, which no facts file is", MAX_FACTS_FILE / 1024)));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            read_error(format!("line {line} is not UTF-8 text"))
        })?;
        Facts::from_toml(path, &text)
    }

    /// Parse a facts file over the defaults. Every error names the file, line and key.
    pub fn from_toml(path: &str, text: &str) -> Result<Facts, Error> {
        let source = Source { path, text };
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
            let line_text = text[line_start..].lines().next().unwrap_or("");
            let key = line_text.split('=').next().unwrap_or("").trim().to_string();
            source.error(&key, offset, e.message().trim().to_string())
        })?;
        let mut facts = Facts::default();
        for (key, value) in &table {
            let name = key.get_ref();
            match facts.set_from_toml(name, value.get_ref()) {
                None => {
                    let known: Vec<_> = KEYS.iter().map(|k| k.name).collect();
                    let message = format!("unknown fact; the facts are: {}", known.join(", "));
                    return Err(source.error(name, key.span().start, message));
                }
                Some(Err(message)) => return Err(source.error(name, value.span().start, message)),
                Some(Ok(())) => {}
            }
        }
        Ok(facts)
    }

    /// The facts among NAMES that take no effect with these facts, each with the reason.
    pub fn without_effect<'n>(&self, names: &[&'n str]) -> Vec<(&'n str, String)> {
        names
            .iter()
            .filter_map(|&name| {
                let (fact, value) = key(name)?.applies_when?;
                let actual = self.get(fact).expect("applies_when names a fact");
                (actual != value).then(|| (name, format!("it applies when {fact} = {value}, and {fact} is {actual}")))
            })
            .collect()
    }
}

impl fmt::Display for Facts {
    /// One line: `key=value` pairs, for the script header and `plan`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = KEYS
            .iter()
            .map(|k| format!("{}={}", k.name, self.get(k.name).expect("known fact").replace(' ', ",")))
            .collect();
        f.write_str(&pairs.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_guide_host() {
        assert_eq!(Facts::from_toml("f.toml", "").unwrap(), Facts::default());
    }

    #[test]
    fn values_override_defaults() {
        let facts = Facts::from_toml("f.toml", "disk = \"sda\"\nssh_ports = [2222]\nntp = \"none\"\n").unwrap();
        assert_eq!(facts.disk, Disk::Sda);
        assert_eq!(facts.ssh_ports, Ports(vec![2222]));
        assert_eq!(facts.ntp, Ntp::None);
        assert_eq!(facts.ipv6, Ipv6::Unused);
    }

    #[test]
    fn bad_value_names_key_line_and_allowed_values() {
        let err = Facts::from_toml("host.toml", "ipv6 = \"used\"\n\ndisk = \"hda\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("host.toml:3"), "{text}");
        assert!(text.contains("`disk`"), "{text}");
        assert!(text.contains("`hda`"), "{text}");
        assert!(text.contains("vda, sda"), "{text}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = Facts::from_toml("h.toml", "disk = \"vda\"\ndsik = \"sda\"\n").unwrap_err().to_string();
        assert!(text.contains("h.toml:2"), "{text}");
        assert!(text.contains("`dsik`") && text.contains("unknown fact"), "{text}");
    }

    #[test]
    fn an_unknown_target_is_named_with_its_line() {
        let text = Facts::from_toml("h.toml", "disk = \"vda\"\ntarget = \"alpine-3.9-kvm\"\n").unwrap_err().to_string();
        assert!(text.contains("h.toml:2") && text.contains("`target`") && text.contains("alpine-3.22-kvm"), "{text}");
        let facts = Facts::from_toml("h.toml", "target = \"alpine-3.22-kvm\"\n").unwrap();
        assert_eq!(facts.target, TargetName("alpine-3.22-kvm".into()));
    }

    #[test]
    fn wrong_type_and_bad_ports_are_errors() {
        for (text, wanted) in [
            ("ssh_ports = \"22\"\n", "expected a list of ports"),
            ("ssh_ports = []\n", "at least one port"),
            ("ssh_ports = [22, 22]\n", "port 22 is listed twice"),
            ("ssh_ports = [-1]\n", "-1 is not a port: ports are 1 to 65535"),
            ("ssh_ports = [0]\n", "0 is not a port"),
            ("ssh_ports = [65536]\n", "65536 is not a port"),
            ("ssh_ports = [\"22\"]\n", "is not a port"),
        ] {
            let message = Facts::from_toml("h.toml", text).unwrap_err().to_string();
            assert!(message.contains("`ssh_ports`") && message.contains("h.toml:1"), "{message}");
            assert!(message.contains(wanted), "{text}: {message}");
        }
    }

    #[test]
    fn every_key_has_a_value_and_a_toml_form_that_reads_back() {
        let facts = Facts::default();
        let mut text = String::new();
        for k in KEYS {
            assert!(facts.get(k.name).is_some(), "{}", k.name);
            text.push_str(&format!("{} = {}\n", k.name, facts.toml_value(k.name).unwrap()));
        }
        assert_eq!(Facts::from_toml("f.toml", &text).unwrap(), facts);
        assert_eq!(facts.get("nope"), None);
    }

    #[test]
    fn ssh_facts_take_no_effect_when_openssh_stays() {
        let facts = Facts { ssh: Ssh::Openssh, ..Facts::default() };
        let idle = facts.without_effect(&["ssh_password_auth", "disk"]);
        assert_eq!(idle.len(), 1);
        assert_eq!(idle[0].0, "ssh_password_auth");
        assert!(idle[0].1.contains("ssh = dropbear"), "{}", idle[0].1);
        assert!(Facts::default().without_effect(&["ssh_password_auth"]).is_empty());
    }
}
