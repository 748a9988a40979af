//! Rule evaluation: a target's rules against one host's facts, giving which rules
//! apply, why, and the concrete steps they take (conditions resolved, placeholders filled).

use crate::facts::{self, Facts};
use crate::target::{Action, Condition, Figures, Item, Rule, Target};

/// One rule's outcome for a host.
#[derive(Debug)]
pub struct Decision<'t> {
    pub rule: &'t Rule,
    pub applied: bool,
    /// The facts that decided it, e.g. `ipv6 = unused`; empty for an unconditional rule.
    pub decided_by: String,
    /// The steps, resolved for this host (what they would be, for a skipped rule).
    pub steps: Vec<Action<String>>,
}

/// Every rule of a target, decided for one host.
#[derive(Debug)]
pub struct Plan<'t> {
    pub target: &'t Target,
    pub facts: Facts,
    pub decisions: Vec<Decision<'t>>,
}

fn holds(when: &Condition, facts: &Facts) -> bool {
    when.iter().all(|(name, values)| {
        let actual = facts.get(name).expect("conditions name known facts (checked at load)");
        values.values().contains(&actual)
    })
}

fn describe(when: &Condition, facts: &Facts) -> String {
    when.iter()
        .map(|(name, values)| {
            let actual = facts.get(name).expect("known fact");
            let wanted = values.values();
            if wanted.len() == 1 {
                format!("{name} = {actual}")
            } else {
                format!("{name} = {actual} (applies for {})", wanted.join(" | "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fill `@fact@` placeholders with the facts' values.
fn fill(text: &str, facts: &Facts) -> String {
    let mut out = text.to_string();
    for key in facts::KEYS {
        let placeholder = format!("@{}@", key.name);
        if out.contains(&placeholder) {
            out = out.replace(&placeholder, &facts.get(key.name).expect("known fact"));
        }
    }
    out
}

fn items(list: &[Item], facts: &Facts) -> Vec<String> {
    list.iter()
        .filter_map(|item| match item {
            Item::Plain(value) => Some(fill(value, facts)),
            Item::When { value, when } => holds(when, facts).then(|| fill(value, facts)),
        })
        .collect()
}

fn resolve(action: &Action, facts: &Facts) -> Action<String> {
    let f = |s: &str| fill(s, facts);
    match action {
        Action::WriteFile { path, mode, content, create_dir } => {
            Action::WriteFile { path: f(path), mode: mode.clone(), content: f(content), create_dir: *create_dir }
        }
        Action::EditList { path, key, separator, set, add, remove } => Action::EditList {
            path: f(path),
            key: key.clone(),
            separator: separator.clone(),
            set: items(set, facts),
            add: items(add, facts),
            remove: items(remove, facts),
        },
        Action::Replace { path, find, replace, into } => {
            Action::Replace { path: f(path), find: f(find), replace: f(replace), into: into.as_deref().map(f) }
        }
        Action::KernelCmdline { boot_loader, remove_modules, add_options } => Action::KernelCmdline {
            boot_loader: *boot_loader,
            remove_modules: items(remove_modules, facts),
            add_options: items(add_options, facts),
        },
        Action::Mkinitfs {} => Action::Mkinitfs {},
        Action::PruneModules { keep } => Action::PruneModules { keep: items(keep, facts) },
        Action::CheckInitramfs { modules } => Action::CheckInitramfs { modules: items(modules, facts) },
        Action::PackagesAdd { names, only_if_installed } => {
            Action::PackagesAdd { names: items(names, facts), only_if_installed: *only_if_installed }
        }
        Action::PackagesRemove { names, prefixes } => {
            Action::PackagesRemove { names: items(names, facts), prefixes: items(prefixes, facts) }
        }
        Action::ServiceOff { name, runlevel, stop } => {
            Action::ServiceOff { name: f(name), runlevel: runlevel.clone(), stop: *stop }
        }
        Action::ServiceOn { name, runlevel, start, provided_by } => Action::ServiceOn {
            name: f(name),
            runlevel: runlevel.clone(),
            start: *start,
            provided_by: provided_by.clone(),
        },
        Action::SshSwitch {} => Action::SshSwitch {},
        Action::ClearDir { path } => Action::ClearDir { path: f(path) },
        Action::WriteValue { path, value } => Action::WriteValue { path: f(path), value: f(value) },
        Action::GettysKeep { consoles } => Action::GettysKeep { consoles: items(consoles, facts) },
        Action::BootTrial { remove_when_confirmed } => {
            Action::BootTrial { remove_when_confirmed: items(remove_when_confirmed, facts) }
        }
        Action::Reboot {} => Action::Reboot {},
        Action::LbuCommit { include, exclude } => {
            Action::LbuCommit { include: items(include, facts), exclude: items(exclude, facts) }
        }
    }
}

impl<'t> Plan<'t> {
    pub fn new(target: &'t Target, facts: &Facts) -> Plan<'t> {
        let decisions = target
            .rules
            .iter()
            .map(|rule| {
                let applied = holds(&rule.when, facts);
                Decision {
                    rule,
                    applied,
                    decided_by: describe(&rule.when, facts),
                    steps: rule.actions.iter().map(|a| resolve(a, facts)).collect(),
                }
            })
            .collect();
        Plan { target, facts: facts.clone(), decisions }
    }

    pub fn applied(&self) -> impl Iterator<Item = &Decision<'t>> {
        self.decisions.iter().filter(|d| d.applied)
    }

    /// RAM used and disk used (KB) to expect after the run: the bench's end state for
    /// the default facts, plus what the rules these facts leave out saved there, minus
    /// what the rules they add saved. A rule without a measured saving counts as none.
    /// None when the target has no bench figures.
    pub fn expected(&self) -> Option<Figures> {
        let bench = self.target.bench.as_ref()?;
        let default = Plan::new(self.target, &Facts::default());
        let (mut ram, mut disk) = (bench.mingen.ram_used_kb as i64, bench.mingen.disk_used_kb as i64);
        for (here, there) in self.decisions.iter().zip(&default.decisions) {
            let Some(saved) = &here.rule.saved else { continue };
            let sign = i64::from(there.applied) - i64::from(here.applied);
            ram += sign * saved.ram_kb as i64;
            disk += sign * saved.disk_kb as i64;
        }
        Some(Figures { ram_used_kb: ram.max(0) as u64, disk_used_kb: disk.max(0) as u64 })
    }

    /// All packages to install, in rule order, without repeats.
    pub fn packages_to_add(&self, only_if_installed: bool) -> Vec<String> {
        let mut names = Vec::new();
        for step in self.applied().flat_map(|d| &d.steps) {
            if let Action::PackagesAdd { names: n, only_if_installed: o } = step
                && *o == only_if_installed
            {
                push_new(&mut names, n);
            }
        }
        names
    }

    /// All packages to remove: exact names, and name prefixes matched on the host.
    pub fn packages_to_remove(&self) -> (Vec<String>, Vec<String>) {
        self.packages_removed_by(|_| true)
    }

    /// The packages to remove while cloud-init runs the script (user-data form).
    pub fn packages_to_remove_under_cloud_init(&self) -> (Vec<String>, Vec<String>) {
        self.packages_removed_by(|d| !d.rule.defer_under_cloud_init)
    }

    fn packages_removed_by(&self, rule: impl Fn(&Decision) -> bool) -> (Vec<String>, Vec<String>) {
        let (mut names, mut prefixes) = (Vec::new(), Vec::new());
        for step in self.applied().filter(|d| rule(d)).flat_map(|d| &d.steps) {
            if let Action::PackagesRemove { names: n, prefixes: p } = step {
                push_new(&mut names, n);
                push_new(&mut prefixes, p);
            }
        }
        (names, prefixes)
    }

    /// The id of the rule after which a transaction runs: the first rule that
    /// installs (so later rules can use what it brings), the last that removes
    /// (so every rule has stopped what it takes away first).
    pub fn transaction_points(&self) -> (Option<String>, Option<String>) {
        let adds =
            |d: &&Decision| d.steps.iter().any(|s| matches!(s, Action::PackagesAdd { names, .. } if !names.is_empty()));
        let removes = |d: &&Decision| {
            d.steps.iter().any(|s| matches!(s, Action::PackagesRemove { names, prefixes } if !names.is_empty() || !prefixes.is_empty()))
        };
        let first_add = self.applied().find(adds).map(|d| d.rule.id.clone());
        let last_remove = self.applied().filter(removes).last().map(|d| d.rule.id.clone());
        (first_add, last_remove)
    }
}

/// Append the items `into` does not hold yet, keeping their order.
pub fn push_new(into: &mut Vec<String>, from: &[String]) {
    for name in from {
        if !into.contains(name) {
            into.push(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Disk, Ipv6, Keep, Network, Ntp, Ssh};

    fn plan_for(facts: &Facts) -> (Target, Facts) {
        (Target::load(&facts.target.0).unwrap(), facts.clone())
    }

    fn applied_ids(target: &Target, facts: &Facts) -> Vec<String> {
        Plan::new(target, facts).applied().map(|d| d.rule.id.clone()).collect()
    }

    #[test]
    fn the_guide_host_applies_every_rule_but_the_kept_ones() {
        let (target, facts) = plan_for(&Facts::default());
        let plan = Plan::new(&target, &facts);
        let skipped: Vec<_> = plan.decisions.iter().filter(|d| !d.applied).map(|d| d.rule.id.as_str()).collect();
        // The other boot loaders' command lines, and what only a diskless host needs.
        assert_eq!(skipped, vec!["kernel-cmdline-grub", "kernel-cmdline-efi", "python-keep", "lbu-commit"]);
    }

    #[test]
    fn sda_keeps_scsi_in_the_initramfs_and_reads_ahead_on_sda() {
        let facts = Facts { disk: Disk::Sda, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        let plan = Plan::new(&target, &facts);
        let steps: Vec<_> = plan.applied().flat_map(|d| d.steps.clone()).collect();
        assert!(steps.iter().any(
            |s| matches!(s, Action::EditList { key, set, .. } if key == "features" && set.contains(&"scsi".to_string()))
        ));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Action::WriteValue { path, .. } if path == "/sys/block/sda/queue/read_ahead_kb"))
        );
        let text = format!("{steps:?}");
        assert!(!text.contains("/sys/block/vda"), "{text}");
        let vda = Plan::new(&target, &Facts::default());
        let vda_steps = format!("{:?}", vda.applied().flat_map(|d| d.steps.clone()).collect::<Vec<_>>());
        assert!(!vda_steps.contains("\"scsi\""), "{vda_steps}");
    }

    #[test]
    fn ipv6_used_keeps_ipv6_on() {
        let facts = Facts { ipv6: Ipv6::Used, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        let ids = applied_ids(&target, &facts);
        assert!(!ids.contains(&"sysctl-ipv6-off".to_string()));
        let plan = Plan::new(&target, &facts);
        let text = format!("{:?}", plan.applied().flat_map(|d| d.steps.clone()).collect::<Vec<_>>());
        assert!(!text.contains("ipv6.disable=1"), "{text}");
        assert!(text.contains("audit=0"), "{text}");
    }

    #[test]
    fn dhcp_keeps_dhcpcd_and_ntp_choices_decide_chrony() {
        let facts = Facts { network: Network::Dhcp, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        assert!(!applied_ids(&target, &facts).contains(&"dhcpcd-remove".to_string()));
        let (names, _) = Plan::new(&target, &facts).packages_to_remove();
        assert!(!names.contains(&"dhcpcd".to_string()));

        let chrony = Facts { ntp: Ntp::Chrony, ..Facts::default() };
        let ids = applied_ids(&target, &chrony);
        assert!(!ids.contains(&"chrony-remove".to_string()) && !ids.contains(&"ntpd-on".to_string()));
        let none = Facts { ntp: Ntp::None, ..Facts::default() };
        let ids = applied_ids(&target, &none);
        assert!(ids.contains(&"chrony-remove".to_string()) && !ids.contains(&"ntpd-on".to_string()));
    }

    #[test]
    fn openssh_kept_means_no_switch_and_openssh_stays() {
        let facts = Facts { ssh: Ssh::Openssh, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        let plan = Plan::new(&target, &facts);
        let (names, _) = plan.packages_to_remove();
        assert!(names.iter().all(|n| !n.starts_with("openssh")), "{names:?}");
        assert!(plan.packages_to_add(false).is_empty());
        assert!(!applied_ids(&target, &facts).contains(&"ssh-switch".to_string()));
    }

    #[test]
    fn kept_python_and_guest_agent_stay() {
        let facts = Facts { python: Keep::Keep, guest_agent: Keep::Keep, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        let plan = Plan::new(&target, &facts);
        let (names, prefixes) = plan.packages_to_remove();
        assert!(!names.contains(&"qemu-guest-agent".to_string()));
        assert!(!prefixes.contains(&"py3-".to_string()) && prefixes.contains(&"cloud-init".to_string()));
        assert_eq!(plan.packages_to_add(true), vec!["python3", "e2fsprogs"]);
    }

    #[test]
    fn one_install_and_one_removal_transaction() {
        let (target, facts) = plan_for(&Facts::default());
        let plan = Plan::new(&target, &facts);
        let (first_add, last_remove) = plan.transaction_points();
        assert_eq!(first_add.as_deref(), Some("dropbear-install"));
        assert_eq!(last_remove.as_deref(), Some("dhcpcd-remove"));
        assert_eq!(plan.packages_to_add(false), vec!["dropbear", "dropbear-convert"]);
    }

    fn steps_of(facts: &Facts) -> String {
        let (target, facts) = plan_for(facts);
        format!("{:?}", Plan::new(&target, &facts).applied().flat_map(|d| d.steps.clone()).collect::<Vec<_>>())
    }

    #[test]
    fn one_command_line_rule_per_boot_loader() {
        use crate::facts::BootLoader;
        for (loader, id) in [
            (BootLoader::Extlinux, "kernel-cmdline"),
            (BootLoader::Grub, "kernel-cmdline-grub"),
            (BootLoader::EfiStub, "kernel-cmdline-efi"),
        ] {
            let (target, facts) = plan_for(&Facts { boot_loader: loader, ..Facts::default() });
            let ids: Vec<_> =
                applied_ids(&target, &facts).into_iter().filter(|id| id.starts_with("kernel-cmdline")).collect();
            assert_eq!(ids, vec![id.to_string()]);
        }
        // syslinux goes only where it is the boot loader.
        let (target, facts) = plan_for(&Facts { boot_loader: BootLoader::Grub, ..Facts::default() });
        assert!(!Plan::new(&target, &facts).packages_to_remove().0.contains(&"syslinux".to_string()));
    }

    #[test]
    fn xen_skips_the_virtio_steps_and_checks_blkfront() {
        use crate::facts::Hypervisor;
        let facts = Facts { hypervisor: Hypervisor::Xen, disk: Disk::Xvda, ..Facts::default() };
        let (target, facts) = plan_for(&facts);
        assert!(!applied_ids(&target, &facts).contains(&"balloon-blacklist".to_string()));
        let steps = steps_of(&facts);
        for virtio in ["\"virtio\"", "virtio_blk", "virtio_net", "virtio_balloon"] {
            assert!(!steps.contains(virtio), "{virtio} in {steps}");
        }
        assert!(steps.contains("\"xen_blkfront\", \"ext4\"") && steps.contains("xen_scsifront"), "{steps}");
    }

    #[test]
    fn diskless_keeps_the_modloop_and_commits_with_lbu() {
        use crate::facts::Install;
        let (target, facts) = plan_for(&Facts { install: Install::Diskless, ..Facts::default() });
        let ids = applied_ids(&target, &facts);
        for skipped in ["modules-prune", "initramfs-rebuild", "initramfs-check", "kernel-cmdline", "apk-cache-clear"] {
            assert!(!ids.contains(&skipped.to_string()), "{skipped}");
        }
        assert_eq!(ids[ids.len() - 2..], ["lbu-commit".to_string(), "reboot".to_string()]);
    }

    #[test]
    fn placeholders_are_filled() {
        let facts = Facts { disk: Disk::Sda, ..Facts::default() };
        assert_eq!(fill("/sys/block/@disk@/x", &facts), "/sys/block/sda/x");
        assert_eq!(fill("no placeholder", &facts), "no placeholder");
    }
}
