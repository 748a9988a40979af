//! Host facts: their typed values, the facts file (raw TOML -> checked), and
//! the key/value view that rule conditions and placeholders read.

use clap::ValueEnum;
use std::fmt;
use toml::Spanned;

use crate::error::Error;

/// Which kind of disk holds the root filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Disk {
    /// virtio-blk, `/dev/vda`
    Vda,
    /// virtio-scsi, `/dev/sda`
    Sda,
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

/// The checked facts about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub target: String,
    pub disk: Disk,
    pub ipv6: Ipv6,
    pub guest_agent: Keep,
    pub balloon: Keep,
    pub ntp: Ntp,
    pub python: Keep,
    pub network: Network,
    pub ssh: Ssh,
    pub ssh_ports: Vec<u16>,
    pub ssh_password_auth: YesNo,
    pub ssh_root_login: RootLogin,
}

pub const DEFAULT_TARGET: &str = "alpine-3.23-kvm";

impl Default for Facts {
    /// The guide's host.
    fn default() -> Self {
        Facts {
            target: DEFAULT_TARGET.to_string(),
            disk: Disk::Vda,
            ipv6: Ipv6::Unused,
            guest_agent: Keep::Remove,
            balloon: Keep::Remove,
            ntp: Ntp::Busybox,
            python: Keep::Remove,
            network: Network::Static,
            ssh: Ssh::Dropbear,
            ssh_ports: vec![22],
            ssh_password_auth: YesNo::Yes,
            ssh_root_login: RootLogin::ProhibitPassword,
        }
    }
}

/// One fact key: its name, what it means, and the values a condition may name.
pub struct FactKey {
    pub name: &'static str,
    pub meaning: &'static str,
    /// Allowed values; empty for facts that are not one-of choices.
    pub values: fn() -> Vec<String>,
}

fn names<E: ValueEnum>() -> Vec<String> {
    E::value_variants().iter().map(value_name).collect()
}

fn no_values() -> Vec<String> {
    Vec::new()
}

/// Every fact, in the order `mingen facts` prints them.
pub const KEYS: &[FactKey] = &[
    FactKey { name: "target", meaning: "the rule set to use (`mingen targets` lists them)", values: no_values },
    FactKey {
        name: "disk",
        meaning: "the root disk: vda (virtio-blk) or sda (virtio-scsi, keeps `scsi` in the initramfs)",
        values: names::<Disk>,
    },
    FactKey {
        name: "ipv6",
        meaning: "used: IPv6 stays on; unused: `ipv6.disable=1` and the sysctl fix",
        values: names::<Ipv6>,
    },
    FactKey {
        name: "guest_agent",
        meaning: "qemu-guest-agent: keep it if the provider uses QEMU guest operations (snapshots, password reset)",
        values: names::<Keep>,
    },
    FactKey {
        name: "balloon",
        meaning: "virtio_balloon: keep it if the provider reclaims memory by ballooning",
        values: names::<Keep>,
    },
    FactKey {
        name: "ntp",
        meaning: "busybox: busybox ntpd replaces chrony; none: no NTP (kvm-clock keeps time); chrony: keep chrony",
        values: names::<Ntp>,
    },
    FactKey { name: "python", meaning: "python3: keep it, or remove it with cloud-init", values: names::<Keep> },
    FactKey {
        name: "network",
        meaning: "static: the address is in /etc/network/interfaces and dhcpcd goes; dhcp: dhcpcd stays",
        values: names::<Network>,
    },
    FactKey {
        name: "ssh",
        meaning: "dropbear: OpenSSH is replaced by dropbear; openssh: OpenSSH stays",
        values: names::<Ssh>,
    },
    FactKey {
        name: "ssh_ports",
        meaning: "the port(s) sshd listens on now; dropbear listens on the same",
        values: no_values,
    },
    FactKey {
        name: "ssh_password_auth",
        meaning: "sshd's PasswordAuthentication now; `no` becomes dropbear's -s",
        values: names::<YesNo>,
    },
    FactKey {
        name: "ssh_root_login",
        meaning: "sshd's PermitRootLogin now; prohibit-password becomes -g, no becomes -w",
        values: names::<RootLogin>,
    },
];

pub fn key(name: &str) -> Option<&'static FactKey> {
    KEYS.iter().find(|k| k.name == name)
}

fn value_name<E: ValueEnum>(value: &E) -> String {
    value.to_possible_value().expect("no skipped variants").get_name().to_string()
}

impl Facts {
    /// The value of a fact as the facts file spells it (lists joined by spaces).
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "target" => self.target.clone(),
            "disk" => value_name(&self.disk),
            "ipv6" => value_name(&self.ipv6),
            "guest_agent" => value_name(&self.guest_agent),
            "balloon" => value_name(&self.balloon),
            "ntp" => value_name(&self.ntp),
            "python" => value_name(&self.python),
            "network" => value_name(&self.network),
            "ssh" => value_name(&self.ssh),
            "ssh_ports" => self.ssh_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" "),
            "ssh_password_auth" => value_name(&self.ssh_password_auth),
            "ssh_root_login" => value_name(&self.ssh_root_login),
            _ => return None,
        })
    }

    /// The value as a TOML literal, for `mingen facts`.
    pub fn toml_value(&self, name: &str) -> String {
        match name {
            "ssh_ports" => format!("[{}]", self.ssh_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")),
            _ => format!("\"{}\"", self.get(name).expect("known fact")),
        }
    }
}

/// A facts file as written: every key optional, each value with its place.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFacts {
    target: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    ipv6: Option<Spanned<String>>,
    guest_agent: Option<Spanned<String>>,
    balloon: Option<Spanned<String>>,
    ntp: Option<Spanned<String>>,
    python: Option<Spanned<String>>,
    network: Option<Spanned<String>>,
    ssh: Option<Spanned<String>>,
    ssh_ports: Option<Spanned<Vec<u16>>>,
    ssh_password_auth: Option<Spanned<String>>,
    ssh_root_login: Option<Spanned<String>>,
}

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

fn choice<E: ValueEnum>(source: &Source, key: &str, raw: &Option<Spanned<String>>, slot: &mut E) -> Result<(), Error> {
    let Some(raw) = raw else { return Ok(()) };
    *slot = E::from_str(raw.get_ref(), false).map_err(|_| {
        source.error(
            key,
            raw.span().start,
            format!("`{}` is not allowed; allowed values: {}", raw.get_ref(), names::<E>().join(", ")),
        )
    })?;
    Ok(())
}

impl Facts {
    /// Parse a facts file over the defaults. Every error names the file, line and key.
    pub fn from_toml(path: &str, text: &str) -> Result<Facts, Error> {
        let source = Source { path, text };
        let raw: RawFacts = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
            let line_text = text[line_start..].lines().next().unwrap_or("");
            let key = line_text.split('=').next().unwrap_or("").trim().to_string();
            source.error(&key, offset, e.message().trim().to_string())
        })?;
        let mut facts = Facts::default();
        if let Some(target) = &raw.target {
            let known = crate::target::names();
            if !known.contains(target.get_ref()) {
                let message = format!("`{}` is not a target; targets: {}", target.get_ref(), known.join(", "));
                return Err(source.error("target", target.span().start, message));
            }
            facts.target = target.get_ref().clone();
        }
        choice(&source, "disk", &raw.disk, &mut facts.disk)?;
        choice(&source, "ipv6", &raw.ipv6, &mut facts.ipv6)?;
        choice(&source, "guest_agent", &raw.guest_agent, &mut facts.guest_agent)?;
        choice(&source, "balloon", &raw.balloon, &mut facts.balloon)?;
        choice(&source, "ntp", &raw.ntp, &mut facts.ntp)?;
        choice(&source, "python", &raw.python, &mut facts.python)?;
        choice(&source, "network", &raw.network, &mut facts.network)?;
        choice(&source, "ssh", &raw.ssh, &mut facts.ssh)?;
        choice(&source, "ssh_password_auth", &raw.ssh_password_auth, &mut facts.ssh_password_auth)?;
        choice(&source, "ssh_root_login", &raw.ssh_root_login, &mut facts.ssh_root_login)?;
        if let Some(ports) = &raw.ssh_ports {
            check_ports(ports.get_ref()).map_err(|message| source.error("ssh_ports", ports.span().start, message))?;
            facts.ssh_ports = ports.get_ref().clone();
        }
        Ok(facts)
    }
}

/// Ports must be a non-empty list of distinct non-zero ports.
pub fn check_ports(ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() {
        return Err("at least one port is needed".into());
    }
    if ports.contains(&0) {
        return Err("port 0 is not a port".into());
    }
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != ports.len() {
        return Err("a port is listed twice".into());
    }
    Ok(())
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
        assert_eq!(facts.ssh_ports, vec![2222]);
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
        assert!(text.contains("`dsik`"), "{text}");
    }

    #[test]
    fn an_unknown_target_is_named_with_its_line() {
        let text = Facts::from_toml("h.toml", "disk = \"vda\"\ntarget = \"alpine-3.9-kvm\"\n").unwrap_err().to_string();
        assert!(text.contains("h.toml:2") && text.contains("`target`") && text.contains("alpine-3.22-kvm"), "{text}");
        let facts = Facts::from_toml("h.toml", "target = \"alpine-3.22-kvm\"\n").unwrap();
        assert_eq!(facts.target, "alpine-3.22-kvm");
    }

    #[test]
    fn wrong_type_and_bad_ports_are_errors() {
        let text = Facts::from_toml("h.toml", "ssh_ports = \"22\"\n").unwrap_err().to_string();
        assert!(text.contains("`ssh_ports`") && text.contains("h.toml:1"), "{text}");
        let text = Facts::from_toml("h.toml", "ssh_ports = []\n").unwrap_err().to_string();
        assert!(text.contains("at least one port"), "{text}");
        let text = Facts::from_toml("h.toml", "ssh_ports = [22, 22]\n").unwrap_err().to_string();
        assert!(text.contains("twice"), "{text}");
    }

    #[test]
    fn every_key_has_a_value() {
        let facts = Facts::default();
        for k in KEYS {
            assert!(facts.get(k.name).is_some(), "{}", k.name);
        }
        assert_eq!(facts.get("nope"), None);
    }
}
