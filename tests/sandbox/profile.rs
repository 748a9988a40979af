//! Host profiles as data: `tests/hosts/<name>/host.toml` (plus an optional
//! `files/` overlay beside it), read, merged with its `base` profile and
//! checked into a [`Profile`].
//!
//! A profile may name `base = "other"`: its tables are merged key by key
//! over the base's (`[files]` and `[edits]` per path, `[runlevels]` per
//! level); any other value, arrays included, replaces the base's. Overlays
//! apply base first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{Release, paths};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    base: Option<String>,
    release: String,
    alpine_release: String,
    disk: String,
    world: Vec<String>,
    #[serde(default)]
    ssh_host_keys: bool,
    #[serde(default)]
    started: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    runlevels: BTreeMap<String, Vec<String>>,
    network: RawNetwork,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    shared: BTreeMap<String, String>,
    #[serde(default)]
    edits: BTreeMap<String, Vec<Edit>>,
    #[serde(default)]
    run: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    ipv4: String,
    gateway4: String,
    #[serde(default)]
    ipv6: Option<String>,
}

/// One exact text replacement in a file; it must match exactly once.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub find: String,
    pub replace: String,
}

/// Addresses carried by `eth0` inside the host's network namespace.
#[derive(Clone, Debug)]
pub struct Network {
    pub ipv4: String,
    pub gateway4: String,
    pub ipv6: Option<String>,
}

/// A checked host profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub release: Release,
    /// Content of /etc/alpine-release, e.g. `3.23.6`.
    pub alpine_release: String,
    /// The root disk, e.g. `vda` or `sda`.
    pub disk: String,
    /// What `apk add` installs (and so what /etc/apk/world ends up naming).
    pub world: Vec<String>,
    /// Install the machine's real OpenSSH host keys into /etc/ssh.
    pub ssh_host_keys: bool,
    /// runlevel -> services linked in it.
    pub runlevels: BTreeMap<String, Vec<String>>,
    /// Services marked started (/run/openrc/started).
    pub started: Vec<String>,
    /// Paths deleted after packages are installed and the profile's files
    /// written (files the minirootfs has that the imitated release does not,
    /// or that a base profile writes and this host lacks).
    pub remove: Vec<String>,
    pub network: Network,
    /// Absolute path -> content, written after packages (fake /proc and
    /// /sys files included); `{disk}` in a path or content becomes `disk`.
    pub files: BTreeMap<String, String>,
    /// Absolute path -> a real file under ../shared/alpine/files (e.g. what an
    /// installer writes, `_variants/...`), written after `files`.
    pub shared: BTreeMap<String, String>,
    /// Path -> its edits; an empty list edits nothing (a profile whose host
    /// lacks a file its base edits).
    pub edits: BTreeMap<String, Vec<Edit>>,
    /// Commands run in the host last, after its boot files are made (what the
    /// host's own history did: a diskless host's modloop, its first lbu commit).
    pub run: Vec<String>,
    /// `files/` overlay directories, base first.
    pub overlays: Vec<PathBuf>,
}

impl Profile {
    /// Loads `tests/hosts/<name>/host.toml`, merged over its base.
    pub fn load(name: &str) -> Profile {
        let (value, overlays) = load_merged(name, 0);
        let raw: RawProfile = value.try_into().unwrap_or_else(|e| panic!("tests/hosts/{name}/host.toml: {e}"));
        for svc in &raw.started {
            assert!(
                raw.runlevels.values().any(|l| l.contains(svc)),
                "tests/hosts/{name}: started service `{svc}` is in no runlevel"
            );
        }
        Profile {
            name: name.to_string(),
            release: Release::parse(&raw.release),
            alpine_release: raw.alpine_release,
            disk: raw.disk,
            world: raw.world,
            ssh_host_keys: raw.ssh_host_keys,
            runlevels: raw.runlevels,
            started: raw.started,
            remove: raw.remove,
            network: Network { ipv4: raw.network.ipv4, gateway4: raw.network.gateway4, ipv6: raw.network.ipv6 },
            files: raw.files,
            shared: raw.shared,
            edits: raw.edits,
            run: raw.run,
            overlays,
        }
    }

    /// Names of every profile under tests/hosts.
    pub fn all() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(paths::hosts())
            .expect("read tests/hosts")
            .flatten()
            .filter(|e| e.path().join("host.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn load_merged(name: &str, depth: usize) -> (toml::Table, Vec<PathBuf>) {
    assert!(depth < 8, "tests/hosts/{name}: `base` chain too deep");
    let dir = paths::hosts().join(name);
    let path = dir.join("host.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut own: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let base = own.remove("base");
    let (mut merged, mut overlays) = match base {
        Some(toml::Value::String(base)) => load_merged(&base, depth + 1),
        Some(_) => panic!("{}: `base` must be a profile name", path.display()),
        None => (toml::Table::new(), Vec::new()),
    };
    merge(&mut merged, own);
    if dir.join("files").is_dir() {
        overlays.push(dir.join("files"));
    }
    (merged, overlays)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
