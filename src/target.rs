//! Targets and their rules as data: the serde shape of `targets/*.toml`, and the
//! checked `Target` that nothing but `Target::load` can build.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

use crate::error::Error;
use crate::facts;
pub use crate::facts::BootLoader;

/// The target files, compiled in: nothing under `targets/` is read at run time.
const TARGET_FILES: &[(&str, &str)] = &[
    ("alpine-3.23-kvm", include_str!("../targets/alpine-3.23-kvm.toml")),
    ("alpine-3.22-kvm", include_str!("../targets/alpine-3.22-kvm.toml")),
];

/// The names of all targets, in the order `mingen targets` lists them.
pub fn names() -> Vec<String> {
    TARGET_FILES.iter().map(|(name, _)| name.to_string()).collect()
}

/// A value that is either given once or as a list (`ntp = "busybox"` or `ntp = ["busybox", "none"]`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A when-condition: every named fact must have one of the listed values.
pub type Condition = BTreeMap<String, OneOrMany>;

/// An item of a list that a rule writes: plain, or present only when its condition holds.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Item {
    Plain(String),
    When { value: String, when: Condition },
}

/// What a rule does, one step at a time. `I` is `Item` as written and `String`
/// once evaluated for a host (conditions applied, `@fact@` placeholders filled).
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields, bound(deserialize = "I: Deserialize<'de>"))]
pub enum Action<I = Item> {
    /// Write a whole file.
    WriteFile {
        path: String,
        mode: String,
        content: String,
        /// Create the file's directory when it is missing (else that is a preflight mismatch).
        #[serde(default)]
        create_dir: bool,
    },
    /// Edit the list in a `KEY="a b c"` (or `KEY=a,b,c`) shell assignment.
    EditList {
        path: String,
        key: String,
        separator: String,
        #[serde(default)]
        set: Vec<I>,
        #[serde(default)]
        add: Vec<I>,
        #[serde(default)]
        remove: Vec<I>,
    },
    /// On each line holding `find` and not yet `replace`, put `replace` in its place;
    /// the result goes to `into` when given (a file that overrides `path`), else to `path`.
    Replace {
        path: String,
        find: String,
        replace: String,
        #[serde(default)]
        into: Option<String>,
    },
    /// Comment out each getty in /etc/inittab that runs on a terminal other than `consoles`.
    GettysKeep { consoles: Vec<I> },
    /// Edit the kernel command line where the boot loader keeps it (the rule's
    /// condition pins the `boot_loader` fact to the same loader).
    KernelCmdline {
        #[serde(default)]
        boot_loader: BootLoader,
        #[serde(default)]
        remove_modules: Vec<I>,
        #[serde(default)]
        add_options: Vec<I>,
    },
    /// Rebuild the initramfs once, for the installed kernel, if its inputs changed.
    Mkinitfs {},
    /// Keep in /lib/modules only what the host needs (see templates/prune_modules.sh),
    /// with `keep` beside it; the same for each kernel apk installs later (a commit hook).
    PruneModules { keep: Vec<I> },
    /// The new initramfs holds every module named (and their dependencies), or the
    /// previous one is put back and the run stops before any reboot.
    CheckInitramfs { modules: Vec<I> },
    /// Packages to install (one apk transaction for the whole script).
    PackagesAdd {
        names: Vec<I>,
        #[serde(default)]
        only_if_installed: bool,
    },
    /// Packages to remove, by name or name prefix (one apk transaction for the whole script).
    PackagesRemove {
        #[serde(default)]
        names: Vec<I>,
        #[serde(default)]
        prefixes: Vec<I>,
    },
    /// Take a service out of a runlevel (or all), stopping it first if asked.
    ServiceOff {
        name: String,
        #[serde(default)]
        runlevel: Option<String>,
        #[serde(default)]
        stop: bool,
    },
    /// Put a service in a runlevel, starting it if asked.
    ServiceOn {
        name: String,
        runlevel: String,
        #[serde(default)]
        start: bool,
        /// The package that brings the init script, when the script installs it.
        #[serde(default)]
        provided_by: Option<String>,
    },
    /// Carry the OpenSSH host keys and settings to dropbear, then switch in one step.
    SshSwitch {},
    /// Empty a directory.
    ClearDir { path: String },
    /// Write a value into a kernel file (sysfs) now.
    WriteValue { path: String, value: String },
    /// Save the changes of a diskless host to its boot media (`lbu commit`), with
    /// `include` (paths lbu does not save by default) added to lbu's list first and
    /// `exclude` (paths under those that hold only the current boot's state) kept out;
    /// `lbu status` must then list nothing.
    LbuCommit {
        include: Vec<I>,
        #[serde(default)]
        exclude: Vec<I>,
    },
    /// Try the new boot configuration once (the boot loader's boot-once), with the one from
    /// before the run as the default until the after-boot one-shot confirms the new one and
    /// removes `remove_when_confirmed`.
    BootTrial {
        #[serde(default)]
        remove_when_confirmed: Vec<I>,
    },
    /// Reboot at the end (when asked to) or say that a reboot is due.
    Reboot {},
}

/// A check that must pass before the script changes anything.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// `/etc/network/interfaces` holds a complete static stanza and no DHCP.
    StaticNetwork,
    /// No global IPv6 address is configured or in use.
    Ipv6Unused,
    /// sshd's ports, password and root-login policy are the facts', and dropbear can carry them.
    SshdSettings,
    /// No account that can log in loses its login shell with the packages removed.
    LoginShells,
    /// Removing sudo and doas leaves root a way in (fact `sudo_doas`).
    SudoDoas,
    /// With `containers = none`, no container runtime is installed.
    NoContainers,
}

/// The guide's stages, in order.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Modules,
    Ssh,
    CloudInit,
    Packages,
    Services,
    Tuning,
    Report,
    Reboot,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Modules => "stage 1: kernel modules and initramfs",
            Stage::Ssh => "stage 2: OpenSSH to dropbear",
            Stage::CloudInit => "stage 3: cloud-init and Python",
            Stage::Packages => "stage 4: package cleanup",
            Stage::Services => "stage 5: services",
            Stage::Tuning => "stage 6: system tuning",
            Stage::Report => "report",
            Stage::Reboot => "reboot",
        })
    }
}

/// A rule as the file writes it; in a derived target every field but `id` may be left out.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    stage: Option<Stage>,
    summary: Option<String>,
    what: Option<String>,
    why: Option<String>,
    risk: Option<String>,
    undo: Option<String>,
    when: Option<Condition>,
    requires: Option<Vec<Check>>,
    defer_under_cloud_init: Option<bool>,
    saved: Option<Saving>,
    action: Option<Vec<Action>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    id: String,
    base: Option<String>,
    summary: String,
    release: String,
    kernel_flavor: Option<String>,
    min_free_kb: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    target: RawHeader,
    bench: Option<BenchFigures>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// What a rule saved on the real-boot bench (RAM used as busybox `free` counts it,
/// disk used as `df /` does), and the kernel it was measured on.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Saving {
    pub ram_kb: u64,
    pub disk_kb: u64,
    pub kernel: String,
}

/// RAM used and disk used of one host state on the bench.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub ram_used_kb: u64,
    pub disk_used_kb: u64,
}

/// The bench's medians for this target with the default facts: the stock host,
/// after the guide's literal commands and after mingen's script (`cargo bench --bench realboot`).
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BenchFigures {
    pub kernel: String,
    pub boots: u32,
    pub stock: Figures,
    pub guide: Figures,
    pub mingen: Figures,
}

/// A checked rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub stage: Stage,
    pub summary: String,
    pub what: String,
    pub why: String,
    pub risk: String,
    pub undo: String,
    pub when: Condition,
    pub requires: Vec<Check>,
    /// In user-data form, wait until cloud-init has finished (it would stop cloud-init).
    pub defer_under_cloud_init: bool,
    /// What it saved on the bench, where that was measured.
    pub saved: Option<Saving>,
    pub actions: Vec<Action>,
}

/// A checked target: the host it is for and its rules, in the order they run.
#[derive(Clone, Debug)]
pub struct Target {
    pub id: String,
    pub summary: String,
    pub release: String,
    pub kernel_flavor: String,
    pub min_free_kb: u64,
    pub bench: Option<BenchFigures>,
    pub rules: Vec<Rule>,
}

impl Target {
    /// Load a target by name, with its base target's rules under it.
    pub fn load(name: &str) -> Result<Target, Error> {
        let text = TARGET_FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .ok_or_else(|| Error::UnknownTarget { name: name.to_string(), known: names() })?;
        let bad = |message: String| Error::Target { target: name.to_string(), message };
        let raw: RawTarget = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if raw.target.id != name {
            return Err(bad(format!("file declares id `{}`", raw.target.id)));
        }
        let header = raw.target;
        let target = match &header.base {
            Some(base) => {
                let mut target = Target::load(base)?;
                for raw_rule in raw.rule {
                    let rule = target
                        .rules
                        .iter_mut()
                        .find(|r| r.id == raw_rule.id)
                        .ok_or_else(|| bad(format!("rule `{}` overrides nothing in `{base}`", raw_rule.id)))?;
                    rule.override_with(raw_rule);
                }
                target.id = header.id;
                target.summary = header.summary;
                target.release = header.release;
                target.kernel_flavor = header.kernel_flavor.unwrap_or(target.kernel_flavor);
                target.min_free_kb = header.min_free_kb.unwrap_or(target.min_free_kb);
                target.bench = raw.bench.or(target.bench);
                target
            }
            None => {
                let rules = raw.rule.into_iter().map(Rule::from_raw).collect::<Result<Vec<_>, _>>().map_err(bad)?;
                Target {
                    id: header.id,
                    summary: header.summary,
                    release: header.release,
                    kernel_flavor: header.kernel_flavor.ok_or_else(|| bad("`kernel_flavor` is missing".into()))?,
                    min_free_kb: header.min_free_kb.ok_or_else(|| bad("`min_free_kb` is missing".into()))?,
                    bench: raw.bench,
                    rules,
                }
            }
        };
        target.validate().map_err(bad)?;
        Ok(target)
    }

    pub fn rule(&self, id: &str) -> Result<&Rule, Error> {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| Error::UnknownRule { id: id.to_string(), target: self.id.clone() })
    }

    fn validate(&self) -> Result<(), String> {
        check_word("release", &self.release, "0123456789.")?;
        check_word("kernel_flavor", &self.kernel_flavor, "-")?;
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.rules {
            if !seen.insert(rule.id.as_str()) {
                return Err(format!("rule `{}` is defined twice", rule.id));
            }
            rule.validate().map_err(|e| format!("rule `{}`: {e}", rule.id))?;
        }
        Ok(())
    }
}

impl Rule {
    fn from_raw(raw: RawRule) -> Result<Rule, String> {
        let missing = |field: &str| format!("rule `{}`: `{field}` is missing", raw.id);
        Ok(Rule {
            stage: raw.stage.ok_or_else(|| missing("stage"))?,
            summary: raw.summary.clone().ok_or_else(|| missing("summary"))?,
            what: raw.what.clone().ok_or_else(|| missing("what"))?,
            why: raw.why.clone().ok_or_else(|| missing("why"))?,
            risk: raw.risk.clone().ok_or_else(|| missing("risk"))?,
            undo: raw.undo.clone().ok_or_else(|| missing("undo"))?,
            when: raw.when.unwrap_or_default(),
            requires: raw.requires.unwrap_or_default(),
            defer_under_cloud_init: raw.defer_under_cloud_init.unwrap_or(false),
            saved: raw.saved,
            actions: raw.action.ok_or_else(|| missing("action"))?,
            id: raw.id,
        })
    }

    /// A derived target's rule replaces the fields it sets.
    fn override_with(&mut self, raw: RawRule) {
        if let Some(v) = raw.stage {
            self.stage = v;
        }
        if let Some(v) = raw.summary {
            self.summary = v;
        }
        if let Some(v) = raw.what {
            self.what = v;
        }
        if let Some(v) = raw.why {
            self.why = v;
        }
        if let Some(v) = raw.risk {
            self.risk = v;
        }
        if let Some(v) = raw.undo {
            self.undo = v;
        }
        if let Some(v) = raw.when {
            self.when = v;
        }
        if let Some(v) = raw.requires {
            self.requires = v;
        }
        if let Some(v) = raw.defer_under_cloud_init {
            self.defer_under_cloud_init = v;
        }
        if let Some(v) = raw.saved {
            self.saved = Some(v);
        }
        if let Some(v) = raw.action {
            self.actions = v;
        }
    }

    fn validate(&self) -> Result<(), String> {
        check_word("id", &self.id, "-")?;
        for (field, text) in [
            ("summary", &self.summary),
            ("what", &self.what),
            ("why", &self.why),
            ("risk", &self.risk),
            ("undo", &self.undo),
        ] {
            if text.trim().is_empty() {
                return Err(format!("`{field}` is empty"));
            }
        }
        if self.summary.contains('\n') {
            return Err("`summary` must be one line".into());
        }
        check_condition(&self.when)?;
        if self.actions.is_empty() {
            return Err("no action".into());
        }
        for action in &self.actions {
            action.validate()?;
            if let Action::KernelCmdline { boot_loader, .. } = action {
                let loader = facts::FactValue::text(boot_loader);
                let pinned = self.when.get("boot_loader").is_some_and(|v| v.values() == [loader.clone()]);
                if !pinned {
                    return Err(format!(
                        "its kernel-cmdline action edits {loader}'s: its condition must be boot_loader = \"{loader}\""
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_condition(when: &Condition) -> Result<(), String> {
    for (name, values) in when {
        let key = facts::key(name).ok_or_else(|| format!("condition names unknown fact `{name}`"))?;
        let allowed = (key.choices)();
        if allowed.is_empty() {
            return Err(format!("fact `{name}` cannot be used in a condition"));
        }
        for value in values.values() {
            if !allowed.contains(&value) {
                return Err(format!("condition `{name} = {value}`: allowed values are {}", allowed.join(", ")));
            }
        }
    }
    Ok(())
}

/// Letters, digits, `_` and the given extra characters; not empty.
fn check_word(what: &str, value: &str, extra: &str) -> Result<(), String> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c));
    if ok { Ok(()) } else { Err(format!("{what} `{value}` has a character it may not have")) }
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains("..") || path.contains("//") {
        return Err(format!("path `{path}` must be absolute and plain"));
    }
    check_word("path", path, "/.-@")
}

fn check_items(items: &[Item]) -> Result<(), String> {
    for item in items {
        match item {
            Item::Plain(value) => check_word("item", value, ".,=:/+-@")?,
            Item::When { value, when } => {
                check_word("item", value, ".,=:/+-@")?;
                check_condition(when)?;
            }
        }
    }
    Ok(())
}

impl Action {
    fn validate(&self) -> Result<(), String> {
        match self {
            Action::WriteFile { path, mode, content, .. } => {
                check_path(path)?;
                if !(mode.len() == 4 && mode.starts_with('0') && mode.chars().all(|c| ('0'..='7').contains(&c))) {
                    return Err(format!("mode `{mode}` must be four octal digits"));
                }
                if content.is_empty() || !content.ends_with('\n') {
                    return Err(format!("content of `{path}` must end with a newline"));
                }
                Ok(())
            }
            Action::EditList { path, key, separator, set, add, remove } => {
                check_path(path)?;
                check_word("key", key, "")?;
                if separator != " " && separator != "," {
                    return Err(format!("separator `{separator}` must be a space or a comma"));
                }
                let edits = !(add.is_empty() && remove.is_empty());
                if !set.is_empty() && edits {
                    return Err("`set` replaces the list: it cannot go with `add` or `remove`".into());
                }
                if set.is_empty() && add.is_empty() && remove.is_empty() {
                    return Err("edit-list changes nothing".into());
                }
                check_items(set)?;
                check_items(add)?;
                check_items(remove)
            }
            Action::Replace { path, find, replace, into } => {
                check_path(path)?;
                if let Some(into) = into {
                    check_path(into)?;
                }
                if find.is_empty() || find.contains('\n') || replace.contains('\n') || find == replace {
                    return Err(format!("replace in `{path}`: `find` and `replace` must be different single lines"));
                }
                Ok(())
            }
            Action::GettysKeep { consoles } => check_items(consoles),
            Action::KernelCmdline { remove_modules, add_options, .. } => {
                check_items(remove_modules)?;
                check_items(add_options)
            }
            Action::PackagesAdd { names, .. } => check_items(names),
            Action::PackagesRemove { names, prefixes } => {
                check_items(names)?;
                check_items(prefixes)
            }
            Action::ServiceOff { name, runlevel, .. } => {
                check_word("service", name, "-.")?;
                runlevel.as_deref().map_or(Ok(()), |r| check_word("runlevel", r, ""))
            }
            Action::ServiceOn { name, runlevel, provided_by, .. } => {
                check_word("service", name, "-.")?;
                check_word("runlevel", runlevel, "")?;
                provided_by.as_deref().map_or(Ok(()), |p| check_word("package", p, "-.+"))
            }
            Action::ClearDir { path } => check_path(path),
            Action::WriteValue { path, value } => {
                check_path(path)?;
                check_word("value", value, "")
            }
            Action::PruneModules { keep } => check_items(keep),
            Action::LbuCommit { include, exclude } => {
                check_items(include)?;
                check_items(exclude)?;
                include.iter().chain(exclude).try_for_each(|item| match item {
                    Item::Plain(path) | Item::When { value: path, .. } => check_path(path),
                })
            }
            Action::BootTrial { remove_when_confirmed } => check_items(remove_when_confirmed),
            Action::CheckInitramfs { modules } if modules.is_empty() => Err("check-initramfs names no module".into()),
            Action::CheckInitramfs { modules } => check_items(modules),
            Action::Mkinitfs {} | Action::SshSwitch {} | Action::Reboot {} => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_loads() {
        for name in names() {
            let target = Target::load(&name).unwrap_or_else(|e| panic!("{e}"));
            assert!(!target.rules.is_empty());
        }
    }

    #[test]
    fn unknown_target_is_named() {
        let err = Target::load("alpine-9-kvm").unwrap_err().to_string();
        assert!(err.contains("alpine-9-kvm") && err.contains("alpine-3.23-kvm"), "{err}");
    }

    #[test]
    fn the_322_target_overrides_only_the_sysfs_rule() {
        let new = Target::load("alpine-3.23-kvm").unwrap();
        let old = Target::load("alpine-3.22-kvm").unwrap();
        assert_eq!(old.release, "3.22");
        let ids = |t: &Target| t.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&new), ids(&old));
        for (a, b) in new.rules.iter().zip(&old.rules) {
            if a.id == "sysfs-debug-off" {
                assert_ne!(a.actions, b.actions);
                assert!(b.actions.iter().all(|x| !format!("{x:?}").contains("tracefs")));
            } else {
                assert_eq!(a.actions, b.actions, "{}", a.id);
            }
        }
    }

    #[test]
    fn conditions_are_checked_against_the_facts() {
        let mut when = Condition::new();
        when.insert("disk".into(), OneOrMany::One("hda".into()));
        assert!(check_condition(&when).unwrap_err().contains("vda, sda"));
        let mut when = Condition::new();
        when.insert("colour".into(), OneOrMany::One("red".into()));
        assert!(check_condition(&when).unwrap_err().contains("colour"));
        let mut when = Condition::new();
        when.insert("ssh_ports".into(), OneOrMany::One("22".into()));
        assert!(check_condition(&when).is_err());
    }

    #[test]
    fn a_command_line_edit_is_pinned_to_its_boot_loader() {
        let target = Target::load("alpine-3.23-kvm").unwrap();
        let mut rule = target.rule("kernel-cmdline-grub").unwrap().clone();
        assert!(rule.validate().is_ok());
        rule.when.remove("boot_loader");
        let err = rule.validate().unwrap_err();
        assert!(err.contains("boot_loader = \"grub\""), "{err}");
        rule.when.insert("boot_loader".into(), OneOrMany::One("extlinux".into()));
        assert!(rule.validate().is_err());
    }

    #[test]
    fn unsafe_paths_and_items_are_refused() {
        assert!(check_path("etc/passwd").is_err());
        assert!(check_path("/etc/../passwd").is_err());
        assert!(check_path("/etc/$(reboot)").is_err());
        assert!(check_items(&[Item::Plain("a b".into())]).is_err());
        assert!(check_items(&[Item::Plain("x';reboot;'".into())]).is_err());
        assert!(check_items(&[Item::Plain("ipv6.disable=1".into())]).is_ok());
    }
}
