//! The command line: raw arguments (clap) turned into checked facts in one place,
//! and each subcommand's output.

use clap::{Args, Parser, Subcommand};
use std::fmt::Write as _;

use crate::error::Error;
use crate::facts::{FactFlags, Facts};
use crate::plan::Plan;
use crate::script;
use crate::target::{self, Target};

const EXAMPLES: &str = "\
Examples:
  mingen > minimise.sh                        the guide's host: Alpine 3.23, vda, static IPv4
  mingen --disk sda --ipv6 used > minimise.sh a virtio-scsi host that uses IPv6
  mingen --format user-data > user-data.sh    to attach as user-data: cloud-init runs it
  mingen facts > host.toml                    write the facts to edit
  mingen --facts host.toml > minimise.sh      a script for the host host.toml describes
  mingen --facts host.toml plan               which rules apply, and why
  mingen explain kernel-cmdline               what a rule does, risks, and how to undo it
  mingen probe > probe.sh; ssh root@host sh -s < probe.sh > host.toml
                                              read a host's facts from the host itself

Then, on the host as root: MINGEN_DRY_RUN=1 sh minimise.sh, then sh minimise.sh.";

/// Generate a reviewed, self-contained ash script that minimises an Alpine Linux VPS.
#[derive(Parser, Debug)]
#[command(name = "mingen", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How the script will be run: by an operator, or by cloud-init as user-data.
    #[arg(long, value_enum, default_value = "script")]
    format: script::Format,
    /// Leave out the script's comments (not the files it writes): the same program,
    /// smaller, for user-data limits. The commented form is what to review.
    #[arg(long, global = true)]
    compact: bool,
    /// Compress the script with gzip, as cloud-init accepts user-data.
    #[arg(long, global = true)]
    gzip: bool,
    #[command(flatten)]
    facts: FactArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the script (the default).
    Script,
    /// Print the effective facts as a commented TOML file to edit and pass to --facts.
    Facts,
    /// Print every rule of the target: applied or skipped, the fact that decided, what it changes.
    Plan,
    /// Print a rule's full explanation: what it does, why, what it risks, how to undo it.
    Explain {
        /// The rule's id, as `mingen plan` lists it.
        rule: String,
    },
    /// List the targets.
    Targets,
    /// Print a probe script: run on a host, it prints the host's facts as TOML for --facts.
    Probe,
}

/// Facts: read from --facts, each flag overriding the file.
#[derive(Args, Debug)]
struct FactArgs {
    /// A facts file (TOML); `mingen facts` writes one to start from.
    #[arg(long, global = true, value_name = "FILE")]
    facts: Option<String>,
    #[command(flatten)]
    flags: FactFlags,
}

impl FactArgs {
    /// The checked facts: defaults, then the file, then the flags. A flag for a
    /// fact that the other facts leave without effect is an error.
    fn resolve(&self) -> Result<Facts, Error> {
        let mut facts = match &self.facts {
            Some(path) => Facts::read(path)?,
            None => Facts::default(),
        };
        let given = self.flags.apply(&mut facts);
        if let Some((name, why)) = facts.without_effect(&given).into_iter().next() {
            return Err(Error::Usage(format!("--{} has no effect: {why}", name.replace('_', "-"))));
        }
        Ok(facts)
    }

    /// Whether any fact was given, for the subcommands that read no facts.
    fn any_given(&self) -> bool {
        self.facts.is_some() || !self.flags.apply(&mut Facts::default()).is_empty()
    }
}

/// What a command prints on stdout, whether it is a script to run on a host, and a
/// warning for stderr.
pub struct Output {
    pub bytes: Vec<u8>,
    pub is_script: bool,
    pub warning: Option<String>,
}

/// EC2's limit on user-data (raw, before base64), the smallest of the common clouds'.
pub const EC2_USER_DATA_LIMIT: usize = 16 * 1024;

/// Run the command line; the output for stdout, or the error for stderr.
pub fn run(cli: Cli) -> Result<Output, Error> {
    let is_script = matches!(cli.command, None | Some(Command::Script | Command::Probe));
    if (cli.compact || cli.gzip) && !is_script {
        return Err(Error::Usage("--compact and --gzip apply to scripts: the script and the probe".into()));
    }
    let (compact, gzip, user_data) = (cli.compact, cli.gzip, cli.format == script::Format::UserData);
    let mut text = run_command(cli)?;
    if compact {
        text = script::compact(&text);
    }
    let bytes = if gzip { script::gzip(&text)? } else { text.into_bytes() };
    let warning = (user_data && bytes.len() > EC2_USER_DATA_LIMIT).then(|| {
        format!(
            "mingen: warning: this user-data is {} bytes, over EC2's limit of {EC2_USER_DATA_LIMIT} \
             (other clouds allow more): {}",
            bytes.len(),
            if gzip && compact {
                "without the boot trial (--boot-trial off) it is smaller"
            } else {
                "--compact --gzip makes it smaller"
            }
        )
    });
    Ok(Output { bytes, is_script, warning })
}

fn run_command(cli: Cli) -> Result<String, Error> {
    if let Some(command @ (Command::Probe | Command::Targets)) = &cli.command
        && cli.facts.any_given()
    {
        let name = if matches!(command, Command::Probe) { "probe" } else { "targets" };
        return Err(Error::Usage(format!("`mingen {name}` reads no facts: leave out --facts and the fact flags")));
    }
    if let Some(Command::Probe) = cli.command {
        return script::render_probe();
    }
    if let Some(Command::Targets) = cli.command {
        let mut out = String::new();
        for name in target::names() {
            let target = Target::load(&name)?;
            writeln!(out, "{name}: {}", target.summary).expect("write to String");
        }
        return Ok(out);
    }
    let facts = cli.facts.resolve()?;
    let target = Target::load(&facts.target.0)?;
    match cli.command {
        None | Some(Command::Script) => script::render(&Plan::new(&target, &facts), cli.format),
        Some(Command::Facts) => script::render_facts(&facts),
        Some(Command::Plan) => Ok(plan_text(&Plan::new(&target, &facts))),
        Some(Command::Explain { rule }) => Ok(explain_text(&target, &rule)?),
        Some(Command::Targets | Command::Probe) => unreachable!("handled above"),
    }
}

fn changes(steps: &[crate::target::Action<String>]) -> String {
    use crate::target::Action;
    let text: Vec<String> = steps
        .iter()
        .map(|step| match step {
            Action::WriteFile { path, .. } => format!("writes {path}"),
            Action::EditList { path, key, .. } => format!("edits {key}= in {path}"),
            Action::Replace { path, into: None, .. } => format!("edits {path}"),
            Action::Replace { path, into: Some(into), .. } => format!("writes {into}, an edited copy of {path}"),
            Action::KernelCmdline { .. } => "edits the kernel command line".into(),
            Action::Mkinitfs {} => "runs mkinitfs".into(),
            Action::PruneModules { .. } => {
                "removes unneeded modules from /lib/modules, now and for later kernels".into()
            }
            Action::CheckInitramfs { modules } => format!("checks the initramfs holds {}", modules.join(", ")),
            Action::PackagesAdd { .. } => "installs packages".into(),
            Action::PackagesRemove { .. } => "removes packages".into(),
            Action::ServiceOff { name, .. } => format!("disables {name}"),
            Action::ServiceOn { name, runlevel, .. } => format!("enables {name} in {runlevel}"),
            Action::SshSwitch {} => "switches sshd to dropbear".into(),
            Action::ClearDir { path } => format!("empties {path}"),
            Action::WriteValue { path, .. } => format!("sets {path}"),
            Action::GettysKeep { consoles } => format!("keeps gettys only on {}", consoles.join(", ")),
            Action::BootTrial { .. } => {
                "keeps the previous boot configuration as the default label and boots the new one \
                                         once (extlinux --once); the after-boot one-shot makes it the default"
                    .into()
            }
            Action::Reboot {} => "reboots (MINGEN_REBOOT=1)".into(),
            Action::LbuCommit { .. } => "saves the changes to the boot media (lbu commit)".into(),
        })
        .collect();
    let mut unique = Vec::new();
    crate::plan::push_new(&mut unique, &text);
    unique.join("; ")
}

fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    writeln!(out, "target {}: {}", plan.target.id, plan.target.summary).expect("write to String");
    writeln!(out, "facts: {}", plan.facts).expect("write to String");
    let mut stage = None;
    for d in &plan.decisions {
        if stage != Some(d.rule.stage) {
            stage = Some(d.rule.stage);
            writeln!(out, "\n{}", d.rule.stage).expect("write to String");
        }
        let state = if d.applied { "applied" } else { "skipped" };
        let by = if d.decided_by.is_empty() { "always".to_string() } else { d.decided_by.clone() };
        writeln!(out, "  {:<24} {state}  [{by}]", d.rule.id).expect("write to String");
        writeln!(out, "  {:<24} {}", "", d.rule.summary).expect("write to String");
        writeln!(out, "  {:<24} {}", "", changes(&d.steps)).expect("write to String");
        if let Some(saved) = &d.rule.saved {
            writeln!(
                out,
                "  {:<24} saved on the bench: RAM {} KB, disk {} KB (kernel {})",
                "", saved.ram_kb, saved.disk_kb, saved.kernel
            )
            .expect("write to String");
        }
    }
    out.push_str(&expected_text(plan));
    out
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// What the bench leads one to expect, against the budgets.
fn expected_text(plan: &Plan) -> String {
    let (Some(bench), Some(expected)) = (&plan.target.bench, plan.expected()) else {
        return "\nexpected: this target has no figures from the real-boot bench\n".into();
    };
    let (ram, disk): (u64, u64) =
        plan.applied().filter_map(|d| d.rule.saved.as_ref()).fold((0, 0), |(r, d), s| (r + s.ram_kb, d + s.disk_kb));
    let verdict = |kb: u64, budget_mb: u32| {
        let state = if kb <= u64::from(budget_mb) * 1024 { "within" } else { "over" };
        format!("{state} the budget of {budget_mb} MB")
    };
    format!(
        "\nexpected after the run (real-boot bench, kernel {kernel}, medians of {boots} boots with the default facts, \
         adjusted by the measured savings of the rules these facts add or leave out):\n  \
         RAM used  {ram_used}: {ram_verdict}\n  \
         disk used {disk_used}: {disk_verdict}\n  \
         bench, RAM used / disk used: stock {stock_ram} / {stock_disk}; the guide's commands {guide_ram} / {guide_disk}; mingen {mingen_ram} / {mingen_disk}\n  \
         measured savings of the rules that apply: RAM {saved_ram}, disk {saved_disk} (rules without a figure count as none)\n",
        kernel = bench.kernel,
        boots = bench.boots,
        ram_used = mb(expected.ram_used_kb),
        ram_verdict = verdict(expected.ram_used_kb, plan.facts.ram_budget_mb.0),
        disk_used = mb(expected.disk_used_kb),
        disk_verdict = verdict(expected.disk_used_kb, plan.facts.disk_budget_mb.0),
        stock_ram = mb(bench.stock.ram_used_kb),
        stock_disk = mb(bench.stock.disk_used_kb),
        guide_ram = mb(bench.guide.ram_used_kb),
        guide_disk = mb(bench.guide.disk_used_kb),
        mingen_ram = mb(bench.mingen.ram_used_kb),
        mingen_disk = mb(bench.mingen.disk_used_kb),
        saved_ram = mb(ram),
        saved_disk = mb(disk),
    )
}

fn explain_text(target: &Target, id: &str) -> Result<String, Error> {
    let rule = target.rule(id)?;
    let when = if rule.when.is_empty() {
        "always".to_string()
    } else {
        rule.when.iter().map(|(k, v)| format!("{k} = {}", v.values().join(" | "))).collect::<Vec<_>>().join(", ")
    };
    Ok(format!(
        "{id} ({stage}, target {target})\n{summary}\n\nApplies when: {when}\n\nWhat it does:\n{what}\n\nWhy:\n{why}\n\nRisk:\n{risk}\n\nUndo:\n{undo}\n",
        stage = rule.stage,
        target = target.id,
        summary = rule.summary,
        what = rule.what.trim(),
        why = rule.why.trim(),
        risk = rule.risk.trim(),
        undo = rule.undo.trim(),
    ))
}
