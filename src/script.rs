//! Rendering: a plan into the self-contained ash script (with its undo.sh inside),
//! and facts into an editable facts file. Values reach shell only through `sh`.

use askama::Template;
use std::collections::BTreeSet;

use crate::error::Error;
use crate::facts::{self, Facts, Ipv6, RootLogin, YesNo};
use crate::plan::{Plan, push_new};
use crate::target::{Action, BootLoader, Check, Target};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the script will be run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Run by an operator: pasted into a console or copied over and run.
    Script,
    /// Run by cloud-init as user-data: removing cloud-init and
    /// the reboot wait until cloud-init has finished; a second run is a no-op.
    UserData,
}

/// The heredoc delimiter of file contents; a content line equal to it would end the heredoc.
const HEREDOC_END: &str = "MINGEN_EOF";
/// Ends a file the script writes that is a program of mingen's (it starts with `#!`):
/// `compact` drops its comments too.
const PROGRAM_END: &str = "MINGEN_PROGRAM";

mod filters {
    /// Quote a value as one shell word.
    #[askama::filter_fn]
    pub fn sh(value: impl std::fmt::Display, _: &dyn askama::Values) -> askama::Result<String> {
        super::quote(&value.to_string()).map_err(askama::Error::custom)
    }
}

/// One shell word for any string: plain when it is safe as is, else single-quoted.
pub fn quote(value: &str) -> Result<String, String> {
    shlex::try_quote(value).map(|q| q.into_owned()).map_err(|e| format!("cannot quote {value:?}: {e}"))
}

struct RuleView {
    id: String,
    deferred: bool,
    func: String,
    summary: String,
    announce: String,
    /// The stage's heading, on the first rule of each stage.
    heading: Option<String>,
    steps: Vec<Action<String>>,
}

#[derive(Template)]
#[template(path = "minimise.sh")]
struct MinimiseScript<'a> {
    version: &'a str,
    format: &'static str,
    target: &'a crate::target::Target,
    disk: String,
    hypervisor: String,
    install: String,
    /// The boot loader: only its helpers are in the script.
    boot_loader: String,
    facts: Vec<(String, String)>,
    applied: Vec<RuleView>,
    skipped: Vec<(String, String)>,
    needs: Vec<String>,
    backup_paths: Vec<String>,
    add_names: String,
    add_if_installed: String,
    remove_names: String,
    remove_prefixes: String,
    remove_names_under_cloud_init: String,
    remove_prefixes_under_cloud_init: String,
    add_after: String,
    remove_after: String,
    dropbear_opts: String,
    /// Whether a rule tries the new boot configuration once (rule boot-trial).
    boot_trial: bool,
    /// The ports the boot trial checks SSH on: dropbear's, or empty (sshd's own, read then).
    trial_ports: String,
    deferred_one_shot: &'static str,
    undo: String,
}

#[derive(Template)]
#[template(path = "undo.sh")]
struct UndoScript;

struct FactView {
    name: &'static str,
    meaning: &'static str,
    allowed: Vec<String>,
    value: String,
}

#[derive(Template)]
#[template(path = "facts.toml")]
struct FactsFile<'a> {
    version: &'a str,
    facts: Vec<FactView>,
}

/// dropbear's options that carry sshd's port(s) and login policy.
pub fn dropbear_opts(facts: &Facts) -> String {
    let mut opts: Vec<String> = facts
        .ssh_ports
        .0
        .iter()
        .map(|port| match facts.ipv6 {
            // With IPv6 off, dropbear must be told to listen on IPv4 or it finds no port.
            Ipv6::Unused => format!("-p 0.0.0.0:{port}"),
            Ipv6::Used => format!("-p {port}"),
        })
        .collect();
    if facts.ssh_password_auth == YesNo::No {
        opts.push("-s".into());
    }
    match facts.ssh_root_login {
        RootLogin::Yes => {}
        RootLogin::ProhibitPassword => opts.push("-g".into()),
        RootLogin::No => opts.push("-w".into()),
    }
    opts.join(" ")
}

/// A preflight line for one check of a rule.
fn check_line(check: Check, plan: &Plan) -> Result<String, Error> {
    let facts = &plan.facts;
    Ok(match check {
        Check::StaticNetwork => "check_static_network".into(),
        Check::LoginShells => "check_login_shells".into(),
        Check::SudoDoas => format!("check_sudo_doas {}", q(&facts.get("sudo_doas").expect("known fact"))?),
        Check::Ipv6Unused => "check_ipv6_unused".into(),
        Check::NoContainers => format!("check_no_containers {}", q(&facts.get("containers").expect("known fact"))?),
        Check::SshdSettings => {
            let ports = facts.ssh_ports.sorted().iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
            format!(
                "check_sshd_settings {} {} {}",
                q(&ports)?,
                q(&facts.get("ssh_password_auth").expect("known fact"))?,
                q(&facts.get("ssh_root_login").expect("known fact"))?
            )
        }
    })
}

/// A rendered text, ending in a newline (askama drops a template's last one): a
/// script pasted into a console must end its last line.
fn finished(rendered: askama::Result<String>) -> Result<String, Error> {
    let mut text = rendered.map_err(|e| Error::Internal(e.to_string()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn q(value: &str) -> Result<String, Error> {
    quote(value).map_err(Error::Internal)
}

/// The preflight lines that check the files a step edits have the shape it expects.
fn step_needs(step: &Action<String>) -> Result<Vec<String>, Error> {
    let parent = |path: &str| path.rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default();
    Ok(match step {
        Action::WriteFile { path, create_dir: false, .. } => vec![format!("need_dir {}", q(&parent(path))?)],
        Action::EditList { path, key, .. } => vec![format!("need_assignment {} {}", q(path)?, q(key)?)],
        Action::Replace { path, find, replace, into } => {
            let mut needs = vec![format!("need_text {} {} {}", q(path)?, q(find)?, q(replace)?)];
            if let Some(into) = into {
                needs.push(format!("need_dir {}", q(&parent(into))?));
            }
            needs
        }
        Action::KernelCmdline { boot_loader, .. } => {
            let mut needs = vec![format!("check_boot_loader {}", q(&facts::FactValue::text(boot_loader))?)];
            needs.extend(match boot_loader {
                BootLoader::Extlinux => [
                    "need_assignment /etc/update-extlinux.conf modules",
                    "need_assignment /etc/update-extlinux.conf default_kernel_opts",
                    "need_append_line /boot/extlinux.conf",
                ]
                .map(String::from)
                .to_vec(),
                BootLoader::Grub => [
                    "need_assignment /etc/default/grub GRUB_CMDLINE_LINUX_DEFAULT",
                    "need_program grub-mkconfig",
                    "need_dir /boot/grub",
                ]
                .map(String::from)
                .to_vec(),
                BootLoader::EfiStub => vec!["need_kernel_line /boot/startup.nsh".into()],
            });
            needs
        }
        Action::Mkinitfs {} => vec!["need_program mkinitfs".into()],
        Action::PruneModules { .. } => {
            vec!["need_program depmod".into(), "need_program modprobe".into(), "need_modules_dep".into()]
        }
        Action::CheckInitramfs { .. } => vec!["need_program cpio".into()],
        // The rule is pinned to extlinux (its condition).
        Action::BootTrial { .. } => vec!["need_boot_trial".into()],
        Action::PackagesAdd { names, only_if_installed: false } if !names.is_empty() => {
            let names = names.iter().map(|n| q(n)).collect::<Result<Vec<_>, _>>()?;
            vec![format!("need_installable {}", names.join(" "))]
        }
        Action::ServiceOn { name, provided_by: None, .. } => vec![format!("need_init_script {}", q(name)?)],
        Action::WriteValue { path, .. } => vec![format!("need_file {}", q(path)?)],
        Action::GettysKeep { consoles } => vec![format!("need_console_gettys {}", q(&consoles.join(" "))?)],
        Action::LbuCommit { .. } => vec!["need_lbu".into()],
        _ => Vec::new(),
    })
}

/// The files a step may change, for the backup.
fn step_files(step: &Action<String>, target: &Target) -> Vec<String> {
    match step {
        Action::WriteFile { path, create_dir: true, .. } => {
            vec![path.rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default(), path.clone()]
        }
        Action::WriteFile { path, .. }
        | Action::EditList { path, .. }
        | Action::Replace { path, into: None, .. }
        | Action::Replace { into: Some(path), .. }
        | Action::WriteValue { path, .. } => vec![path.clone()],
        Action::GettysKeep { .. } => vec!["/etc/inittab".into()],
        // The initramfs is kept by rebuild_initramfs, just before mkinitfs replaces it (a run
        // that does not rebuild it keeps no copy), until the new one has booted (rule
        // initramfs-backup-drop).
        Action::KernelCmdline { boot_loader, .. } => match boot_loader {
            BootLoader::Extlinux => vec!["/etc/update-extlinux.conf".into(), "/boot/extlinux.conf".into()],
            BootLoader::Grub => vec!["/etc/default/grub".into(), "/boot/grub/grub.cfg".into()],
            BootLoader::EfiStub => vec!["/boot/startup.nsh".into()],
        },
        // lbu's include list.
        Action::LbuCommit { .. } => vec!["/etc/apk/protected_paths.d/lbu.list".into()],
        // The kept initramfs: undo.sh deletes it (it did not exist before the run).
        Action::BootTrial { .. } => {
            vec!["/boot/extlinux.conf".into(), format!("/boot/initramfs-{}.mingen-previous", target.kernel_flavor)]
        }
        Action::SshSwitch {} => {
            let mut files = vec!["/etc/conf.d/dropbear".to_string()];
            files.extend(["rsa", "ecdsa", "ed25519"].map(|t| format!("/etc/dropbear/dropbear_{t}_host_key")));
            files
        }
        _ => Vec::new(),
    }
}

/// What mingen says on stderr beside a script: its size and sha256, and the
/// command that checks a copy (pasted or sent) on the host before it runs.
pub fn integrity_note(bytes: &[u8]) -> String {
    use sha2::Digest;
    let sum = hex_digest(&sha2::Sha256::digest(bytes));
    format!(
        "mingen: the script is {} bytes, sha256 {sum}; check a copy on the host with:\n  \
         echo '{sum}  minimise.sh' | sha256sum -c - && wc -c minimise.sh",
        bytes.len()
    )
}

/// The heredocs that hold mingen's own programs (undo.sh, the pruning program, the
/// boot trial, the boot scripts and hooks the rules write), which `compact` leaves without comments
/// too; every other heredoc is a file the host keeps as written.
pub const OWN_PROGRAMS: &[&str] = &["MINGEN_UNDO", "MINGEN_PRUNE", PROGRAM_END, "MINGEN_TRIAL"];

/// The script without its comment lines, blank lines and indentation: the same
/// program, smaller. Of the files it writes (heredocs) mingen's own programs lose
/// their comments too; any other file keeps every line, but for the comment lines
/// after the first of a file whose first line is a `#` comment (the files that say
/// "Written by mingen", in formats where `#` opens a comment). The first line of the
/// script and shellcheck's directives stay. No line of the script or of its programs
/// continues a shell string, so indentation is only layout (awk programs spread over
/// lines do not mind); tests/script.rs checks that every other line is kept.
pub fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut heredoc_end: Option<&str> = None;
    // In a file the host keeps: whether its comment lines may go (None: on its first line).
    let mut file_comments_go: Option<bool> = None;
    for (number, line) in text.lines().enumerate() {
        let in_file = heredoc_end.is_some_and(|end| !OWN_PROGRAMS.contains(&end));
        let keep = match heredoc_end {
            Some(end) if line == end => {
                heredoc_end = None;
                true
            }
            _ if in_file => match file_comments_go {
                None => {
                    file_comments_go = Some(line.starts_with('#') && !line.starts_with("#!"));
                    true
                }
                Some(go) => !(go && line.starts_with('#')),
            },
            _ => {
                if heredoc_end.is_none()
                    && let Some((_, rest)) = line.split_once("<<'")
                {
                    heredoc_end = rest.split_once('\'').map(|(end, _)| end);
                    file_comments_go = None;
                }
                let trimmed = line.trim_start();
                let comment =
                    trimmed.starts_with('#') && !trimmed.starts_with("#!") && !trimmed.starts_with("# shellcheck ");
                number == 0 || !(comment || trimmed.is_empty())
            }
        };
        if keep {
            out.push_str(if in_file { line } else { line.trim_start() });
            out.push('\n');
        }
    }
    out
}

/// The text, gzip-compressed (cloud-init reads gzip'd user-data). Zopfli's gzip is
/// about 3% smaller than zlib's best, which keeps compact user-data within EC2's
/// 16 KiB; it takes a fraction of a second.
pub fn gzip(text: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    zopfli::compress(zopfli::Options::default(), zopfli::Format::Gzip, text.as_bytes(), &mut out)
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(out)
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one-shot that finishes a user-data run at boot, if nothing finished it before.
pub const DEFERRED_ONE_SHOT: &str = "/etc/local.d/mingen-deferred.start";

/// Render the plan as the script to run on the host.
pub fn render(plan: &Plan, format: Format) -> Result<String, Error> {
    let target = plan.target;
    let user_data = format == Format::UserData;
    let mut needs = Vec::new();
    let mut backup_paths = vec!["/etc/apk/world".to_string()];
    if user_data {
        backup_paths.push(DEFERRED_ONE_SHOT.to_string());
    }
    let mut checks = BTreeSet::new();
    for decision in plan.applied() {
        checks.extend(decision.rule.requires.iter().copied());
        for step in &decision.steps {
            push_new(&mut needs, &step_needs(step)?);
            push_new(&mut backup_paths, &step_files(step, target));
            if let Action::WriteFile { path, content, .. } = step
                && let Some(end) = content.lines().find(|line| [HEREDOC_END, PROGRAM_END].contains(line))
            {
                return Err(Error::Internal(format!("content of {path} holds the line {end}")));
            }
        }
    }
    for check in checks {
        needs.push(check_line(check, plan)?);
    }
    let (add_after, remove_after) = plan.transaction_points();
    let (remove_names, remove_prefixes) = plan.packages_to_remove();
    let (remove_names_now, remove_prefixes_now) = plan.packages_to_remove_under_cloud_init();
    let undo = finished(UndoScript.render())?;
    let mut stage = None;
    if undo.lines().any(|line| line == "MINGEN_UNDO") {
        return Err(Error::Internal("undo.sh holds its own heredoc delimiter".into()));
    }
    let script = MinimiseScript {
        version: VERSION,
        format: if user_data { "user-data" } else { "script" },
        target,
        disk: plan.facts.get("disk").expect("known fact"),
        hypervisor: plan.facts.get("hypervisor").expect("known fact"),
        install: plan.facts.get("install").expect("known fact"),
        boot_loader: plan.facts.get("boot_loader").expect("known fact"),
        facts: facts::KEYS
            .iter()
            .map(|k| (k.name.to_string(), plan.facts.toml_value(k.name).expect("known fact")))
            .collect(),
        applied: plan
            .applied()
            .map(|d| RuleView {
                id: d.rule.id.clone(),
                deferred: user_data && d.rule.defer_under_cloud_init,
                func: d.rule.id.replace('-', "_"),
                summary: d.rule.summary.clone(),
                announce: format!("rule {}", d.rule.id),
                heading: (stage.replace(d.rule.stage) != Some(d.rule.stage)).then(|| d.rule.stage.to_string()),
                steps: d.steps.clone(),
            })
            .collect(),
        skipped: plan
            .decisions
            .iter()
            .filter(|d| !d.applied)
            .map(|d| (d.rule.id.clone(), d.decided_by.clone()))
            .collect(),
        needs,
        backup_paths,
        add_names: plan.packages_to_add(false).join(" "),
        add_if_installed: plan.packages_to_add(true).join(" "),
        remove_names: remove_names.join(" "),
        remove_prefixes: remove_prefixes.join(" "),
        remove_names_under_cloud_init: remove_names_now.join(" "),
        remove_prefixes_under_cloud_init: remove_prefixes_now.join(" "),
        add_after: add_after.unwrap_or_default(),
        remove_after: remove_after.unwrap_or_default(),
        dropbear_opts: dropbear_opts(&plan.facts),
        boot_trial: plan.applied().any(|d| d.steps.iter().any(|s| matches!(s, Action::BootTrial { .. }))),
        trial_ports: match plan.facts.ssh {
            facts::Ssh::Dropbear => {
                plan.facts.ssh_ports.sorted().iter().map(u16::to_string).collect::<Vec<_>>().join(" ")
            }
            facts::Ssh::Openssh => String::new(),
        },
        deferred_one_shot: DEFERRED_ONE_SHOT,
        undo,
    };
    finished(script.render())
}

#[derive(Template)]
#[template(path = "probe.sh")]
struct ProbeScript<'a> {
    version: &'a str,
    /// (target id, Alpine release) for each target, for the probe to name the target.
    targets: Vec<(String, String)>,
}

/// Render the probe script, which prints a host's facts as TOML.
pub fn render_probe() -> Result<String, Error> {
    let targets = crate::target::names()
        .into_iter()
        .map(|name| crate::target::Target::load(&name).map(|t| (t.id, t.release)))
        .collect::<Result<Vec<_>, _>>()?;
    finished(ProbeScript { version: VERSION, targets }.render())
}

/// Render facts as a commented TOML file that `--facts` reads back.
pub fn render_facts(facts: &Facts) -> Result<String, Error> {
    let file = FactsFile {
        version: VERSION,
        facts: facts::KEYS
            .iter()
            .map(|k| FactView {
                name: k.name,
                meaning: k.meaning,
                allowed: (k.choices)(),
                value: facts.toml_value(k.name).expect("known fact"),
            })
            .collect(),
    };
    finished(file.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Ports, Ssh};

    #[test]
    fn quoting_keeps_plain_words_and_quotes_the_rest() {
        assert_eq!(quote("vda").unwrap(), "vda");
        assert_eq!(quote("-p 22").unwrap(), "'-p 22'");
        assert_eq!(quote("it's").unwrap(), "\"it's\"");
        assert_eq!(quote("").unwrap(), "''");
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn dropbear_carries_port_password_and_root_policy() {
        let guide = Facts::default();
        assert_eq!(dropbear_opts(&guide), "-p 0.0.0.0:22 -g");
        let strict = Facts {
            ssh_ports: Ports(vec![2222]),
            ssh_password_auth: YesNo::No,
            ssh_root_login: RootLogin::No,
            ipv6: Ipv6::Used,
            ..Facts::default()
        };
        assert_eq!(dropbear_opts(&strict), "-p 2222 -s -w");
    }

    #[test]
    fn facts_file_round_trips() {
        let facts = Facts { ssh: Ssh::Openssh, ssh_ports: Ports(vec![22, 2222]), ..Facts::default() };
        let text = render_facts(&facts).unwrap();
        assert_eq!(Facts::from_toml("facts.toml", &text).unwrap(), facts);
        assert!(text.contains("# one of: vda, sda"), "{text}");
    }
}
