#!/bin/sh
# minimise.sh: strip an Alpine Linux VPS to its minimum without losing it.
# Written by mingen {{ version }} for {{ target.id }}: {{ target.summary }}.
#
# Run it as root: `sh minimise.sh` (--dry-run: say what would change; --reboot:
# reboot at the end; or MINGEN_DRY_RUN=1, MINGEN_REBOOT=1). It checks first that
# the host is the one the facts describe and changes nothing if not; it copies
# every file it changes to /var/lib/mingen/backup and writes /var/lib/mingen/undo.sh.
# Run again, it ends where one clean run ends. Each rule_* function is one rule:
# `mingen explain RULE-ID` says what it does, why, what it risks and its undo.
{%- if format == "user-data" %}
# User-data form: removing cloud-init and the reboot wait until cloud-init has
# finished (or the next boot); once /var/lib/mingen/done exists a run does nothing.
{%- endif %}
#
# Facts:
{%- for (name, value) in facts %}
#   {{ name }} = {{ value }}
{%- endfor %}
# Rules skipped:
{%- for (id, reason) in skipped %}
#   {{ id }} ({{ reason }})
{%- else %}
#   none
{%- endfor %}

# `main "$@" || exit 1` turns `set -e` off in main: each command that can fail is checked where it runs.
set -eu
# A paste cut short defines functions and never reaches `main`: say so, and fail.
MINGEN_MAIN_RAN=0
trap '[ "$MINGEN_MAIN_RAN" = 1 ] || { echo "mingen: this script ended before main ran: it was cut short (compare its size and sha256 with what mingen printed)" >&2; exit 1; }' EXIT
{%- if format == "user-data" %}
# 1 in the run that finishes the job after cloud-init (see finish_after_cloud_init).
MINGEN_DEFERRED=${MINGEN_DEFERRED:-0}
{%- endif %}
# The packages the rules remove (those installed, in one apk del): names, and name prefixes.
REMOVE_NAMES={{ remove_names|sh }}
REMOVE_PREFIXES={{ remove_prefixes|sh }}
{% include "helpers.sh" %}

# ---------------------------------------------------------------- this host

preflight() {
	local release avail hypervisor found{% if install == "sys" %} disk{% endif %}
	[ "$(id -u)" = 0 ] || err "run this as root"
	release=$(cat /etc/alpine-release 2>/dev/null || echo "no /etc/alpine-release")
	case $release in
	{{ target.release }} | {{ target.release }}.*) ;;
	*) mismatch "target \`{{ target.id }}\` is for Alpine {{ target.release }}, but this host is $release" ;;
	esac
{%- if install == "diskless" %}
	check_diskless
{%- else %}
	disk=$(root_disk)
	if [ "$(root_fstype)" = tmpfs ]; then
		mismatch "fact \`install\` is sys, but the root filesystem is tmpfs: a host that runs from RAM (install = \"diskless\")"
	elif [ "$disk" != {{ disk|sh }} ]; then
		mismatch "fact \`disk\` is {{ disk }}, but the root filesystem is on ${disk:-an unknown device} (/proc/mounts)"
	fi
{%- endif %}
	{#- A Xen guest, PV or HVM, has `xen` there; a KVM guest has no such file. #}
	found=$(cat /sys/hypervisor/type 2>/dev/null || :)
	hypervisor=kvm
	[ "$found" != xen ] || hypervisor=xen
	[ "$hypervisor" = {{ hypervisor|sh }} ] ||
		mismatch "fact \`hypervisor\` is {{ hypervisor }}, but /sys/hypervisor/type says ${found:-nothing (it is missing)}"
	avail=$(df -Pk / | awk 'NR == 2 { print $4 }')
	[ "${avail:-0}" -ge {{ target.min_free_kb }} ] || mismatch "only ${avail:-0} KiB are free on /; {{ target.min_free_kb }} KiB are needed"
{%- if install == "sys" %}
	KERNEL_VERSION=$(cat /usr/share/kernel/{{ target.kernel_flavor }}/kernel.release 2>/dev/null || :)
	if [ -z "$KERNEL_VERSION" ] || [ ! -d "/lib/modules/$KERNEL_VERSION" ]; then
		mismatch "no installed {{ target.kernel_flavor }} kernel: /usr/share/kernel/{{ target.kernel_flavor }}/kernel.release names '${KERNEL_VERSION}', /lib/modules holds: $(find /lib/modules -mindepth 1 -maxdepth 1 2>/dev/null | tr '\n' ' ')"
	fi
{%- endif %}
{%- for need in needs %}
	{{ need }}
{%- endfor %}
{%- if format == "user-data" %}
	if under_cloud_init && [ ! -f "$0" ]; then
		mismatch "as user-data the script must run from a file ($0 is not one), to finish after cloud-init"
	fi
{%- endif %}
	[ "$PREFLIGHT_FAILED" = 0 ] || err "this host does not match the facts; nothing was changed"
	say "preflight: the host matches the facts"
}

# prepare: before the first change, keep what undo.sh needs.
prepare() {
	local path
	if dry_run; then
		say "would keep a copy of each file it changes under $MINGEN_BACKUP and write $MINGEN_STATE/undo.sh"
		return 0
	fi
	mkdir -p "$MINGEN_BACKUP" || err "cannot make $MINGEN_BACKUP"
	for path in \
{%- for path in backup_paths %}
		{{ path|sh }} \
{%- endfor %}
		$(removal_candidates "$REMOVE_NAMES" "$REMOVE_PREFIXES" | xargs -r apk --no-network info -L 2>/dev/null | sed -n 's|^etc/|/etc/|p'); do
		backup_file "$path"
	done
	keep_once runlevels.before list_runlevels
	keep_once started.before list_started
	keep_once before figures
	keep_once before.values figure_values
	printf '%s\n' "$KERNEL_VERSION" >"$WORK/kernel-version" || err "cannot write to $WORK"
	write_undo >"$WORK/undo.sh" || err "cannot write to $WORK"
	put_state kernel-version
	put_state undo.sh
	chmod 0700 "$MINGEN_STATE/undo.sh" || err "cannot make $MINGEN_STATE/undo.sh executable"
}

write_undo() {
	cat <<'MINGEN_UNDO'
{{ undo }}MINGEN_UNDO
}

# ---------------------------------------------------------------- the rules
{% for rule in applied %}
{%- if let Some(heading) = rule.heading %}
# {{ heading }}
{%- endif %}
# {{ rule.summary }}
rule_{{ rule.func }}() {
	say {{ rule.announce|sh }}
{%- for step in rule.steps %}
{%- match step %}
{%- when Action::WriteFile { path, mode, content, create_dir } %}
{%- if *create_dir %}
	make_parent_dir {{ path|sh }}
{%- endif %}
{%- if content.starts_with("#!") %}
	write_file {{ path|sh }} {{ mode }} <<'MINGEN_PROGRAM'
{{ content }}MINGEN_PROGRAM
{%- else %}
	write_file {{ path|sh }} {{ mode }} <<'MINGEN_EOF'
{{ content }}MINGEN_EOF
{%- endif %}
{%- when Action::EditList { path, key, separator, set, add, remove } %}
	edit_assignment {{ path|sh }} {{ key|sh }} {{ separator|sh }} {{ set.join(" ")|sh }} {{ add.join(" ")|sh }} {{ remove.join(" ")|sh }}
{%- when Action::Replace { path, find, replace, into } %}
	replace_text {{ path|sh }} {{ find|sh }} {{ replace|sh }} {{ into.as_deref().unwrap_or(path)|sh }}
{%- when Action::KernelCmdline { boot_loader, remove_modules, add_options } %}
{%- match boot_loader %}
{%- when BootLoader::Extlinux %}
{%- if !remove_modules.is_empty() %}
	edit_assignment /etc/update-extlinux.conf modules , '' '' {{ remove_modules.join(" ")|sh }}
{%- endif %}
	edit_assignment /etc/update-extlinux.conf default_kernel_opts ' ' '' {{ add_options.join(" ")|sh }} ''
	edit_append_lines /boot/extlinux.conf {{ remove_modules.join(" ")|sh }} {{ add_options.join(" ")|sh }}
{%- when BootLoader::Grub %}
	edit_cmdline_assignment /etc/default/grub GRUB_CMDLINE_LINUX_DEFAULT {{ remove_modules.join(" ")|sh }} {{ add_options.join(" ")|sh }}
	update_grub_cfg {{ remove_modules.join(" ")|sh }} {{ add_options.join(" ")|sh }}
{%- when BootLoader::EfiStub %}
	edit_kernel_lines /boot/startup.nsh {{ remove_modules.join(" ")|sh }} {{ add_options.join(" ")|sh }}
{%- endmatch %}
{%- when Action::Mkinitfs {} %}
	rebuild_initramfs
{%- when Action::PruneModules { keep } %}
	prune_modules {{ keep.join(" ")|sh }}
{%- when Action::CheckInitramfs { modules } %}
	check_initramfs {{ modules.join(" ")|sh }}
{%- when Action::PackagesAdd { names, only_if_installed } %}
	# in the one apk add: {{ names.join(" ") }}{% if *only_if_installed %} (if installed){% endif %}
{%- when Action::PackagesRemove { names, prefixes } %}
	# in the one apk del: {% if !names.is_empty() %}{{ names.join(" ") }}{% endif %}{% if !prefixes.is_empty() %}{% if !names.is_empty() %} and {% endif %}packages named {{ prefixes.join("* ") }}*{% endif %}
{%- when Action::ServiceOff { name, runlevel, stop } %}
	service_off {{ name|sh }} {{ runlevel.as_deref().unwrap_or("")|sh }} {% if *stop %}yes{% else %}no{% endif %}
{%- when Action::ServiceOn { name, runlevel, start, provided_by } %}
	service_on {{ name|sh }} {{ runlevel|sh }} {% if *start %}yes{% else %}no{% endif %}
{%- when Action::SshSwitch {} %}
	ssh_switch {{ dropbear_opts|sh }}
{%- when Action::ClearDir { path } %}
	clear_dir {{ path|sh }}
{%- when Action::GettysKeep { consoles } %}
	keep_gettys {{ consoles.join(" ")|sh }}
{%- when Action::WriteValue { path, value } %}
	write_value {{ path|sh }} {{ value|sh }}
{%- when Action::LbuCommit { include, exclude } %}
	lbu_commit {{ include.join(" ")|sh }} {{ exclude.join(" ")|sh }}
{%- when Action::BootTrial { remove_when_confirmed } %}
	arm_boot_trial {{ remove_when_confirmed.join(" ")|sh }} {{ trial_ports|sh }}
{%- when Action::Reboot {} %}
	finish
{%- endmatch %}
{%- endfor %}
}
{% endfor %}
# The one apk add and the one apk del of the whole run.
apk_install_all() {
	say "packages: install {{ add_names }}{% if !add_if_installed.is_empty() %}, and keep {{ add_if_installed }} if installed{% endif %}"
	apk_install {{ add_names|sh }} {{ add_if_installed|sh }}
}

apk_remove_all() {
	say "packages: remove what is installed of the packages the rules above name"
{%- if format == "user-data" %}
	if under_cloud_init; then
		{#- The same names but cloud-init's own (its prefixes go after cloud-init has finished). #}
		apk_remove {% if remove_names_under_cloud_init == remove_names %}"$REMOVE_NAMES"{% else %}{{ remove_names_under_cloud_init|sh }}{% endif %} {{ remove_prefixes_under_cloud_init|sh }}
		return 0
	fi
{%- endif %}
	apk_remove "$REMOVE_NAMES" "$REMOVE_PREFIXES"
}
{%- if format == "user-data" %}

# under_cloud_init: this is the user-data form's first run, by cloud-init itself.
under_cloud_init() {
	[ "$MINGEN_DEFERRED" != 1 ]
}

# finish_after_cloud_init: what would stop cloud-init (removing it, rebooting) waits: a
# detached run starts once cloud-init has written its result, and a one-shot at the next
# boot finishes the job if that run never did.
finish_after_cloud_init() {
	if dry_run; then
		say "would finish the run once cloud-init has finished"
		return 0
	fi
	cmp -s "$0" "$MINGEN_STATE/minimise.sh" || cp "$0" "$MINGEN_STATE/minimise.sh" ||
		err "cannot copy this script to $MINGEN_STATE/minimise.sh"
	write_file {{ deferred_one_shot|sh }} 0755 <<'MINGEN_EOF'
#!/bin/sh
# Written by mingen (user-data): finish the run cloud-init started, at boot.
MINGEN_DEFERRED=1 MINGEN_REBOOT=1 sh /var/lib/mingen/minimise.sh
MINGEN_EOF
	service_on local default no
	say "cloud-init is running this script: removing cloud-init and the reboot wait until it has finished"
	# shellcheck disable=SC2016 # expanded by the detached shell, not here
	setsid sh -c '
		waited=0
		until [ -e /run/cloud-init/result.json ] || [ "$waited" -ge 3600 ]; do
			sleep 2
			waited=$((waited + 2))
		done
		if [ -e /run/cloud-init/result.json ]; then
			MINGEN_DEFERRED=1 MINGEN_REBOOT=1 exec sh /var/lib/mingen/minimise.sh
		fi' </dev/null >/dev/null 2>&1 &
}
{%- endif %}

finish() {
{%- if format == "user-data" %}
	if under_cloud_init; then
		finish_after_cloud_init
		return 0
	fi
{%- endif %}
	if dry_run; then
		say "dry run: nothing was changed"
		return 0
	fi
{%- if format == "user-data" %}
	: >"$MINGEN_STATE/done" || err "cannot write $MINGEN_STATE/done"
	if [ -e {{ deferred_one_shot|sh }} ]; then
		change "delete the one-shot {{ deferred_one_shot }}" rm -f {{ deferred_one_shot|sh }}
	fi
{%- endif %}
	if [ ! -e "$MINGEN_STATE/reboot-pending" ]; then
		say "nothing to do: this host is minimised and has booted since"
		return 0
	fi
	say "done. To undo: sh $MINGEN_STATE/undo.sh"
	say "after the next boot, $MINGEN_STATE/report shows RAM and disk used before and after"
	if [ "$MINGEN_REBOOT" = 1 ]; then
		say "rebooting now"
		reboot
	else
		say "next: reboot (or run with MINGEN_REBOOT=1 to reboot at the end)"
	fi
}

main() {
	local arg
	MINGEN_MAIN_RAN=1
	for arg; do
		case $arg in
		--dry-run) MINGEN_DRY_RUN=1 ;;
		--reboot) MINGEN_REBOOT=1 ;;
		*) err "unknown argument \`$arg\` (known: --dry-run, --reboot)" ;;
		esac
	done
	# Output that cannot be written (a closed terminal) must not end the run.
	trap '' PIPE
{%- if format == "user-data" %}
	if [ -e "$MINGEN_STATE/done" ]; then
		say "this host was minimised already ($MINGEN_STATE/done): nothing to do"
		return 0
	fi
{%- endif %}
	need_cmd apk rc-update rc-service awk
	WORK=$(mktemp -d /tmp/mingen.XXXXXX) || err "cannot make a temporary directory"
	trap 'rm -rf "$WORK"' EXIT
	dry_run || forget_killed_runs
	say "before:"
	figures >&2 || true
	stop_after_failed_boot
	preflight
	if dry_run; then
		say "dry run: nothing will be changed"
	else
		start_log
	fi
	prepare
{%- for rule in applied %}
{%- if rule.deferred %}
	if under_cloud_init; then
		say "rule {{ rule.id }}: waits until cloud-init has finished"
	else
		rule_{{ rule.func }}
	fi
{%- else %}
	rule_{{ rule.func }}
{%- endif %}
{%- if rule.id == add_after %}
	apk_install_all
{%- endif %}
{%- if rule.id == remove_after %}
	apk_remove_all
{%- endif %}
{%- endfor %}
}

main "$@" || exit 1
