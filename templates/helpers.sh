MINGEN_STATE=/var/lib/mingen
MINGEN_BACKUP=$MINGEN_STATE/backup
MINGEN_LOG=/var/log/mingen.log
MINGEN_DRY_RUN=${MINGEN_DRY_RUN:-0}
MINGEN_REBOOT=${MINGEN_REBOOT:-0}
{# KEPT: packages a rule would remove that someone needs to log in (keep_package). -#}
KERNEL_VERSION='' INITRAMFS_STALE=0 PREFLIGHT_FAILED=0 LOGGING=0 WORK='' KEPT=''
{%- if boot_loader == "grub" %}
GRUB_STALE=0
{%- endif %}

# ---- vocabulary

{# say TEXT: tell the operator; once the run logs (start_log), the log and the terminal (fd 3). -#}
say() {
	printf 'mingen: %s\n' "$*" >&2 || true
	[ "$LOGGING" = 0 ] || printf 'mingen: %s\n' "$*" >&3 2>/dev/null || true
}

err() {
	say "error: $*"
	exit 1
}

dry_run() {
	[ "$MINGEN_DRY_RUN" = 1 ]
}

need_cmd() {
	local cmd
	for cmd; do
		command -v "$cmd" >/dev/null 2>&1 || err "\`$cmd\` is needed and is not installed"
	done
}

{# start_log: all output goes to the log; the run ignores a hang-up (its commands too),
   and writes to a closed terminal only fail. -#}
# start_log: from here on the output goes to the log, and a hang-up does not stop the run.
start_log() {
	trap '' HUP
	exec 3>&2 >>"$MINGEN_LOG" 2>&1 </dev/null
	LOGGING=1
	printf '\n' || true
	say "run of $(date '+%Y-%m-%dT%H:%M:%S'); the full output goes to $MINGEN_LOG"
}

{# change WHAT COMMAND...: make one change and say so, or in a dry run what would change.
   Every change goes through here. A daemon the command starts must not hold fd 3 (the
   terminal): the operator's SSH session would never end. -#}
# change WHAT COMMAND...: every change to the host goes through here; a dry run only says it.
change() {
	local what=$1
	shift
	if dry_run; then
		say "would $what"
		return 0
	fi
	say "$what"
	: >"$MINGEN_STATE/reboot-pending" || err "cannot write to $MINGEN_STATE"
	"$@" 3>&- || err "could not $what (\`$*\` failed)"
}

# ---- files

{# put_file PATH MODE NEW: give PATH the content of the file NEW, atomically; an
   existing PATH keeps its mode and owner. -#}
put_file() {
	if [ -f "$1" ] && cmp -s "$3" "$1"; then
		return 0
	fi
	case $1 in
	/etc/mkinitfs/* | /etc/modprobe.d/*) initramfs_stale ;;
{%- if boot_loader == "grub" %}
	{#- grub.cfg is made from it: the same, for grub-mkconfig. #}
	/etc/default/grub)
		GRUB_STALE=1
		dry_run || : >"$MINGEN_STATE/grub-stale" || err "cannot write to $MINGEN_STATE"
		;;
{%- endif %}
	esac
	if dry_run; then
		say "would write $1:"
		if [ -f "$1" ]; then
			diff -u "$1" "$3" >&2 || true
		else
			sed 's/^/+/' "$3" >&2
		fi
		return 0
	fi
	change "write $1" install_file "$@"
}

install_file() {
	if [ -f "$1" ]; then
		cp -p "$1" "$1.mingen-new" && cat "$3" >"$1.mingen-new"
	else
		cp "$3" "$1.mingen-new" && chmod "$2" "$1.mingen-new"
	fi && mv -f "$1.mingen-new" "$1"
}

{# initramfs_stale: the initramfs must be rebuilt, noted before the change that makes
   it so, so that a run cut short after it still rebuilds. -#}
initramfs_stale() {
	INITRAMFS_STALE=1
	dry_run || : >"$MINGEN_STATE/initramfs-stale" || err "cannot write to $MINGEN_STATE"
}

make_parent_dir() {
	[ -d "${1%/*}" ] || change "create ${1%/*}" mkdir -p "${1%/*}"
}

{# write_file PATH MODE: give PATH the content read from standard input. -#}
write_file() {
	cat >"$WORK/new" || err "cannot write to $WORK"
	put_file "$1" "$2" "$WORK/new"
}

{# edit_lists MODE <FILE: FILE with lists edited, per KEY, SEP, SET, ADD, REMOVE (items
   split on spaces). assign: each `KEY=list` line (quoted or not) gets SET, or loses
   REMOVE and gains ADD; append: each APPEND line of extlinux.conf loses REMOVE from
   `modules=` and gains the options ADD; cmdline: the same in the command line that is
   the value of `KEY=` (GRUB_CMDLINE_LINUX_DEFAULT); lines: the same in each line that
   is not empty or a comment (an EFI stub's startup.nsh); check: exit 1 unless a
   plain `KEY=` list exists. -#}
edit_lists() {
	MODE=$1 awk '
	function join(a, b, sep) { return a == "" ? b : a sep b }
	function cmdline(v,    n, i, t, w, out) {
		out = ""
		n = split(v, w, " ")
		for (i = 1; i <= n; i++) {
			t = w[i]
			if (index(t, "modules=") == 1) t = "modules=" edit(substr(t, 9), ",", "", "", ENVIRON["REMOVE"])
			out = join(out, t, " ")
		}
		return edit(out, " ", "", ENVIRON["ADD"], "")
	}
	function edit(list, sep, set, add, remove,    n, i, m, items, extra, drop, have, out) {
		out = ""
		if (set != "") {
			m = split(set, extra, " ")
			for (i = 1; i <= m; i++) out = join(out, extra[i], sep)
			return out
		}
		m = split(remove, extra, " ")
		for (i = 1; i <= m; i++) drop[extra[i]] = 1
		n = split(list, items, sep)
		for (i = 1; i <= n; i++) {
			if (items[i] == "" || items[i] in drop) continue
			have[items[i]] = 1
			out = join(out, items[i], sep)
		}
		m = split(add, extra, " ")
		for (i = 1; i <= m; i++) {
			if (extra[i] in have) continue
			have[extra[i]] = 1
			out = join(out, extra[i], sep)
		}
		return out
	}
	function unquote(v,    f) {
		quote = ""
		f = substr(v, 1, 1)
		if (length(v) >= 2 && (f == "\"" || f == "\047") && substr(v, length(v)) == f) {
			quote = f
			v = substr(v, 2, length(v) - 2)
		}
		return v
	}
	BEGIN { mode = ENVIRON["MODE"]; key = ENVIRON["KEY"] "=" }
{%- if boot_loader == "grub" %}
	mode == "cmdline" && index($0, key) == 1 {
		v = cmdline(unquote(substr($0, length(key) + 1)))
		if (quote == "" && index(v, " ")) quote = "\""
		print key quote v quote
		next
	}
{%- endif %}
{%- if boot_loader == "efi-stub" %}
	mode == "lines" && NF && $1 !~ /^#/ { print cmdline($0); next }
{%- endif %}
	(mode == "assign" || mode == "check") && index($0, key) == 1 {
		v = unquote(substr($0, length(key) + 1))
		if (mode == "check") {
			found = 1
			if (v ~ /["$`\\]/ || v ~ /\047/ || (quote == "" && v ~ /[ \t]/)) bad = 1
			next
		}
		v = edit(v, ENVIRON["SEP"], ENVIRON["SET"], ENVIRON["ADD"], ENVIRON["REMOVE"])
		if (quote == "" && index(v, " ")) quote = "\""
		print key quote v quote
		next
	}
	{#- The fallback label of a boot trial (rule boot-trial) keeps the command line from before. #}
	$1 == "LABEL" { fallback_label = ($2 == "mingen-previous") }
	mode == "append" && $1 == "APPEND" && !fallback_label {
		v = $0
		sub(/^[ \t]*APPEND[ \t]*/, "", v)
		print substr($0, 1, index($0, "APPEND") - 1) "APPEND " cmdline(v)
		next
	}
	mode != "check" { print }
	END { if (mode == "check") exit !(found && !bad) }'
}

{# edit_assignment PATH KEY SEP SET ADD REMOVE -#}
edit_assignment() {
	KEY=$2 SEP=$3 SET=$4 ADD=$5 REMOVE=$6 edit_lists assign <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

{# edit_append_lines PATH REMOVE_MODULES ADD_OPTIONS -#}
edit_append_lines() {
	REMOVE=$2 ADD=$3 edit_lists append <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

{% if boot_loader == "grub" -%}
{# edit_cmdline_assignment PATH KEY REMOVE_MODULES ADD_OPTIONS: the command line
   that is the value of PATH's `KEY=`. -#}
edit_cmdline_assignment() {
	KEY=$2 REMOVE=$3 ADD=$4 edit_lists cmdline <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

{% endif -%}
{% if boot_loader == "efi-stub" -%}
{# edit_kernel_lines PATH REMOVE_MODULES ADD_OPTIONS: each command line of PATH. -#}
edit_kernel_lines() {
	REMOVE=$2 ADD=$3 edit_lists lines <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

{% endif -%}
{# set_assignment PATH KEY VALUE: PATH holds `KEY="VALUE"`, in place of its first KEY= line or at the end. -#}
set_assignment() {
	local from=/dev/null
	[ ! -f "$1" ] || from=$1
	KEY=$2 VALUE=$3 awk '
	BEGIN { line = ENVIRON["KEY"] "=\"" ENVIRON["VALUE"] "\"" }
	index($0, ENVIRON["KEY"] "=") == 1 { if (!done) print line; done = 1; next }
	{ print }
	END { if (!done) print line }' "$from" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

{# replace_text PATH FIND REPLACE INTO: the first FIND on each line of PATH that lacks
   REPLACE becomes REPLACE; the result goes to INTO. -#}
replace_text() {
	FIND=$2 REPL=$3 awk '
	{
		i = index($0, ENVIRON["FIND"])
		if (i && !index($0, ENVIRON["REPL"])) $0 = substr($0, 1, i - 1) ENVIRON["REPL"] substr($0, i + length(ENVIRON["FIND"]))
		print
	}' <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$4" 0644 "$WORK/new"
}

{# inittab_gettys: the terminal of each getty /etc/inittab starts (busybox init:
   the id field is the terminal the process runs on). -#}
inittab_gettys() {
	awk -F: '$0 !~ /^[ 	]*#/ && $3 == "respawn" && $4 ~ /getty/ { print $1 }' /etc/inittab
}

{# keep_gettys CONSOLE...: comment out each getty in /etc/inittab that runs on
   another terminal. It takes effect at the next boot. -#}
keep_gettys() {
	KEEP=$* awk -F: '
	BEGIN { n = split(ENVIRON["KEEP"], k, " "); for (i = 1; i <= n; i++) keep[k[i]] = 1 }
	$0 !~ /^[ 	]*#/ && $3 == "respawn" && $4 ~ /getty/ && !($1 in keep) { print "#" $0; next }
	{ print }' </etc/inittab >"$WORK/new" || err "could not read /etc/inittab"
	put_file /etc/inittab 0644 "$WORK/new"
}

{# write_value PATH VALUE: write a kernel setting (sysfs) now. -#}
write_value() {
	[ "$(cat "$1")" = "$2" ] || change "set $1 to $2" write_to "$1" "$2"
}

write_to() {
	printf '%s\n' "$2" >"$1"
}

clear_dir() {
	[ -z "$(ls -A "$1" 2>/dev/null)" ] || change "empty $1" find "$1" -mindepth 1 -delete
}

# ---- services

service_started() {
	rc-service "$1" status >/dev/null 2>&1
}

{# service_off NAME RUNLEVEL STOP: stop NAME (STOP=yes); take it out of RUNLEVEL, or of every one. -#}
service_off() {
	local link level
	if [ "$3" = yes ] && service_started "$1"; then
		change "stop $1" rc-service "$1" stop
	fi
	for link in /etc/runlevels/*/"$1"; do
		level=${link%/*}
		level=${level##*/}
		if { [ -L "$link" ] || [ -e "$link" ]; } && [ "${2:-$level}" = "$level" ]; then
			change "take $1 out of runlevel $level" rc-update del "$1" "$level"
		fi
	done
}

{# service_on NAME RUNLEVEL START: put NAME in RUNLEVEL; start it (START=yes). -#}
service_on() {
	if [ ! -L "/etc/runlevels/$2/$1" ] && [ ! -e "/etc/runlevels/$2/$1" ]; then
		change "put $1 in runlevel $2" rc-update add "$1" "$2"
	fi
	if [ "$3" = yes ] && ! service_started "$1"; then
		change "start $1" rc-service "$1" start
	fi
}

# ---- packages

{# world_has NAME: NAME is in /etc/apk/world (with or without a version or tag). -#}
world_has() {
	NAME=$1 awk '{ sub(/[<>=~@].*/, ""); if ($0 == ENVIRON["NAME"]) found = 1 } END { exit !found }' /etc/apk/world
}

{# installed NAME...: the NAMEs that are installed (offline). -#}
installed() {
	apk --no-network info -e "$@" 2>/dev/null || true
}

{# removal_candidates NAMES PREFIXES: the installed packages among NAMES or starting with a PREFIX. -#}
removal_candidates() {
	# shellcheck disable=SC2086 # one word per package name
	installed $1
	{#- apk's database, read directly: plain `apk info` refreshes the indexes first. #}
	PREFIXES=$2 awk '
	BEGIN { n = split(ENVIRON["PREFIXES"], p, " ") }
	/^P:/ { for (i = 1; i <= n; i++) if (index($0, "P:" p[i]) == 1) { print substr($0, 3); next } }' \
		/lib/apk/db/installed 2>/dev/null || :
}

{# apk_install NAMES IF_INSTALLED: one `apk add` of NAMES, and of IF_INSTALLED where
   installed, that are not in the world file yet. -#}
apk_install() {
	local names="" name
	# shellcheck disable=SC2086 # one word per package name
	for name in $1 $(installed $2); do
		world_has "$name" || names="$names $name"
	done
	if [ -n "$names" ]; then
		# shellcheck disable=SC2086 # one word per package name
		change "install$names" apk add --quiet $names
	fi
}

{# apk_remove NAMES PREFIXES: one `apk del` of the installed packages named, but KEPT,
   if one is still in the world file (else apk would only say it keeps them). -#}
apk_remove() {
	local names="" name in_world=no
	for name in $(removal_candidates "$1" "$2" | sort -u); do
		case " $KEPT " in
		*" $name "*) continue ;;
		esac
		names="$names $name"
		if world_has "$name"; then
			in_world=yes
		fi
	done
	if [ "$in_world" = yes ]; then
		# shellcheck disable=SC2086 # one word per package name
		change "remove$names" apk --no-network del --quiet $names
	fi
}

# ---- initramfs and modules

{# rebuild_initramfs: mkinitfs once, when its inputs changed; the initramfs it replaces is
   kept first (check_initramfs puts it back; rule initramfs-backup-drop deletes the copy
   once the new one has booted, and undo.sh makes it again with mkinitfs). -#}
rebuild_initramfs() {
	if [ "$INITRAMFS_STALE" = 1 ] || [ -e "$MINGEN_STATE/initramfs-stale" ]; then
		dry_run || backup_file /boot/initramfs-{{ target.kernel_flavor }}
		change "rebuild the initramfs for kernel $KERNEL_VERSION" mkinitfs "$KERNEL_VERSION"
		INITRAMFS_STALE=0
		dry_run || rm -f "$MINGEN_STATE/initramfs-stale"
	fi
}

{% if boot_loader == "grub" -%}
# ---- GRUB
{# update_grub_cfg REMOVE_MODULES ADD_OPTIONS: when /etc/default/grub changed (in this
   run or in one cut short), make /boot/grub/grub.cfg again as Alpine's update-grub
   does; its first `linux` line (the default entry; a recovery entry has only
   GRUB_CMDLINE_LINUX) must then carry ADD_OPTIONS, and no `linux` line may load one
   of REMOVE_MODULES, or the previous grub.cfg goes back and the run stops. -#}
update_grub_cfg() {
	local cfg=/boot/grub/grub.cfg found
	if [ "$GRUB_STALE" = 1 ] || [ -e "$MINGEN_STATE/grub-stale" ]; then
		change "make $cfg again (grub-mkconfig)" write_grub_cfg "$cfg"
		GRUB_STALE=0
		if dry_run; then
			return 0
		fi
		rm -f "$MINGEN_STATE/grub-stale"
	fi
	found=$(REMOVE=$1 ADD=$2 awk '
	BEGIN { na = split(ENVIRON["ADD"], add, " "); nr = split(ENVIRON["REMOVE"], rm, " ") }
	$1 == "linux" {
		split("", have)
		mods = ""
		for (i = 2; i <= NF; i++) { have[$i] = 1; if (index($i, "modules=") == 1) mods = "," substr($i, 9) "," }
		for (j = 1; j <= na; j++) if (!lines && !(add[j] in have)) { print "lacks " add[j]; exit }
		for (j = 1; j <= nr; j++) if (index(mods, "," rm[j] ",")) { print "still loads " rm[j]; exit }
		lines++
	}
	END { if (!lines) print "has no linux line" }' "$cfg" 2>&1)
	if [ -n "$found" ]; then
		if [ -f "$MINGEN_BACKUP$cfg" ]; then
			cp -p "$MINGEN_BACKUP$cfg" "$cfg" || :
		fi
		: >"$MINGEN_STATE/grub-stale" || :
		err "$cfg, made from /etc/default/grub, $found: the previous grub.cfg is back; check /etc/default/grub and /etc/grub.d"
	fi
}

write_grub_cfg() {
	grub-mkconfig -o "$1.new" && mv -f "$1.new" "$1"
}

{% endif -%}
# ---- boot trial
{# stop_after_failed_boot: a new boot configuration that did not come up is not tried again by itself. -#}
stop_after_failed_boot() {
	[ -f "$MINGEN_STATE/boot-failed" ] || return 0
	say "$(cat "$MINGEN_STATE/boot-failed")"
	err "the reboot after the last run did not come up on the new boot configuration ($MINGEN_STATE/boot-failed): this run changes nothing"
}

{% if boot_trial -%}
{# The boot-trial program, shared by the run and the after-boot one-shot. -#}
write_boot_trial_program() {
	cat <<'MINGEN_TRIAL'
{% include "boot_trial.sh" %}
MINGEN_TRIAL
}

{# can_boot_once: extlinux can set a label to boot once (its ADV in /boot/ldlinux.sys). -#}
can_boot_once() {
	command -v extlinux >/dev/null 2>&1 && [ -f /boot/ldlinux.sys ]
}

{# need_boot_trial: can_boot_once, unless a boot was confirmed already (syslinux may be gone then). -#}
need_boot_trial() {
	[ -f "$MINGEN_STATE/boot-confirmed" ] || can_boot_once ||
		mismatch "fact \`boot_trial\` is once, but extlinux cannot boot a label once here (no extlinux, or no /boot/ldlinux.sys): set boot_trial = \"off\""
}

{# arm_boot_trial REMOVE PORTS: when the next boot takes a boot configuration that has
   not booted yet, keep the one from before the run as the default label mingen-previous
   (its APPEND line, and its initramfs beside the new one), and have extlinux boot the
   new label once. The one-shot confirms it (root read-write, network, SSH on PORTS, or
   the ports sshd is configured with) and then removes REMOVE (split on spaces). -#}
arm_boot_trial() {
	local conf=/boot/extlinux.conf old label initramfs kept previous ports=$2 now before confirmed
	old=$MINGEN_BACKUP$conf
	if dry_run; then
		say "would boot the new configuration once (extlinux --once), the previous one staying the default until the after-boot one-shot confirms the new one"
		return 0
	fi
	write_boot_trial_program >"$WORK/boot-trial.sh" || err "cannot write to $WORK"
	label=$(sh "$WORK/boot-trial.sh" default-label "$old") || err "cannot read $old"
	initramfs=$(sh "$WORK/boot-trial.sh" initrd "$old" "$label") || err "cannot read $old"
	case $initramfs in
	"" | */* | *,*)
		say "label $label of $old boots initramfs '$initramfs', not one file in /boot: no boot trial"
		return 0
		;;
	esac
	kept=$initramfs.mingen-previous
	# The initramfs from before the run, or (its copy dropped once a boot of the run's
	# had been confirmed: rule initramfs-backup-drop) the one in /boot, which has booted.
	previous=$MINGEN_BACKUP/boot/$initramfs
	[ -f "$previous" ] || previous=/boot/$initramfs
	sh "$WORK/boot-trial.sh" final "$conf" "$label" "$old" >"$WORK/extlinux.final" || err "cannot read $conf"
	now=$(sh "$WORK/boot-trial.sh" fingerprint "$WORK/extlinux.final" "$label" "/boot/$initramfs") || err "cannot read /boot/$initramfs"
	before=$(sh "$WORK/boot-trial.sh" fingerprint "$old" "$label" "$MINGEN_BACKUP/boot/$initramfs" 2>/dev/null || :)
	confirmed=$(cat "$MINGEN_STATE/boot-confirmed" 2>/dev/null || :)
	if [ "$now" = "$before" ] || [ "$now" = "$confirmed" ]; then
		return 0 # this configuration has booted already
	fi
	if ! can_boot_once; then
		say "extlinux cannot boot a label once here: no boot trial"
		return 0
	fi
	if [ -z "$ports" ]; then
		ports=$(sshd_settings 2>/dev/null | awk '$1 == "port" { print $2 }' | sort -nu | tr '\n' ' ')
		ports=${ports% }
		ports=${ports:-22}
	fi
	sh "$WORK/boot-trial.sh" trial "$WORK/extlinux.final" "$label" "$old" >"$WORK/extlinux.trial" ||
		err "cannot make the fallback label from label $label of $old"
	printf "label='%s'\ninitramfs='%s'\nkept='%s'\nports='%s'\nremove='%s'\n" \
		"$label" "$initramfs" "$kept" "$ports" "$1" >"$WORK/boot-trial" || err "cannot write to $WORK"
	# The state file, written last, says that the trial is armed.
	if cmp -s "$WORK/boot-trial" "$MINGEN_STATE/boot-trial" && cmp -s "$WORK/extlinux.trial" "$conf" &&
		cmp -s "$previous" "/boot/$kept"; then
		return 0
	fi
	put_state boot-trial.sh
	if ! cmp -s "$previous" "/boot/$kept"; then
		change "keep the initramfs from before the run as /boot/$kept" cp -p "$previous" "/boot/$kept"
	fi
	put_file "$conf" 0644 "$WORK/extlinux.trial"
	change "boot label $label once at the next boot (extlinux --once=$label /boot); label mingen-previous, the configuration from before the run, stays the default until the new one is confirmed" \
		extlinux --once="$label" /boot
	put_state boot-trial
}

{% endif -%}
need_modules_dep() {
	[ -z "$KERNEL_VERSION" ] || [ -f "/lib/modules/$KERNEL_VERSION/modules.dep" ] ||
		mismatch "/lib/modules/$KERNEL_VERSION/modules.dep is missing"
}

{# The pruning program, for the run and for the apk hook (later kernels). -#}
write_prune_program() {
	cat <<'MINGEN_PRUNE'
{% include "prune_modules.sh" %}
MINGEN_PRUNE
}

{# prune_modules KEEP: keep in /lib/modules only what the host needs, and KEEP (names or paths). -#}
prune_modules() {
	local count file
	write_prune_program >"$WORK/prune-modules.sh" || err "cannot write to $WORK"
	{#- The modules loaded at the first run stay: after a boot with the blacklist fewer
	    are loaded, and the set must not shrink. #}
	if [ -f "$MINGEN_STATE/modules-loaded" ]; then
		cp "$MINGEN_STATE/modules-loaded" "$WORK/modules-loaded"
	else
		awk '{ print $1 }' /proc/modules >"$WORK/modules-loaded" 2>/dev/null || : >"$WORK/modules-loaded"
	fi || err "cannot write to $WORK"
	# shellcheck disable=SC2086 # one module name or path a word
	{ printf '%s\n' $1 && cat "$WORK/modules-loaded"; } >"$WORK/modules-keep" || err "cannot write to $WORK"
	if dry_run; then
		sh "$WORK/prune-modules.sh" "$KERNEL_VERSION" "$WORK/modules-keep" --dry-run || err "the pruning program failed"
		return 0
	fi
	for file in modules-loaded prune-modules.sh modules-keep; do
		put_state "$file"
	done
	count=$(sh "$MINGEN_STATE/prune-modules.sh" "$KERNEL_VERSION" "$MINGEN_STATE/modules-keep" --count) ||
		err "the pruning program failed"
	if [ "$count" -gt 0 ]; then
		initramfs_stale
		change "remove $count unneeded modules from /lib/modules/$KERNEL_VERSION" \
			sh "$MINGEN_STATE/prune-modules.sh" "$KERNEL_VERSION" "$MINGEN_STATE/modules-keep"
	fi
}

{# check_initramfs MODULES: the new initramfs holds MODULES and what modules.dep says they
   need; else the previous one goes back and the run stops, before any reboot. -#}
# check_initramfs MODULES: the new initramfs holds MODULES and their dependencies, or the old one goes back.
check_initramfs() {
	local image=/boot/initramfs-{{ target.kernel_flavor }} magic missing builtin
	if dry_run; then
		say "would check that $image holds $1 and their dependencies"
		return 0
	fi
	# shellcheck disable=SC2086 # one module name a word
	printf '%s\n' $1 | awk -v dep="/lib/modules/$KERNEL_VERSION/modules.dep" '
	function name_of(p) { sub(/.*\//, "", p); sub(/\.ko.*$/, "", p); gsub(/-/, "_", p); return p }
	FILENAME != dep { n = $1; gsub(/-/, "_", n); want[n] = 1; next }
	{ p = $1; sub(/:$/, "", p); if (name_of(p) in want) for (i = 2; i <= NF; i++) need[name_of($i)] = 1 }
	END { for (n in want) print n; for (n in need) print n }' - "/lib/modules/$KERNEL_VERSION/modules.dep" | sort -u >"$WORK/wanted"
	{#- A driver built into the kernel (modules.builtin) needs no module: xen-blkfront in linux-virt. #}
	awk '{ sub(/.*\//, ""); sub(/\.ko.*$/, ""); gsub(/-/, "_"); print }' "/lib/modules/$KERNEL_VERSION/modules.builtin" 2>/dev/null |
		sort -u >"$WORK/builtin" || err "cannot write to $WORK"
	{#- gzip, xz, zstd or plain cpio #}
	magic=$(od -An -tx1 -N4 "$image" | tr -d ' \n')
	case $magic in
	1f8b*) gzip -dc "$image" ;;
	fd377a58) xz -dc "$image" ;;
	28b52ffd) zstd -dc "$image" ;;
	30373037) cat "$image" ;;
	esac | cpio -t 2>/dev/null | awk '/\.ko/ { sub(/.*\//, ""); sub(/\.ko.*$/, ""); gsub(/-/, "_"); print }' |
		sort -u - "$WORK/builtin" | comm -13 - "$WORK/wanted" >"$WORK/missing"
	missing=$(tr '\n' ' ' <"$WORK/missing")
	if [ -n "$missing" ]; then
		if [ -f "$MINGEN_BACKUP$image" ]; then
			cp -p "$MINGEN_BACKUP$image" "$image" || err "cannot put the previous initramfs back: $image lacks $missing"
		fi
		: >"$MINGEN_STATE/initramfs-stale" || :
		err "the new initramfs lacks ${missing% }, which the root disk needs: the previous initramfs is back in $image, and nothing reboots"
	fi
	builtin=$(comm -12 "$WORK/wanted" "$WORK/builtin" | tr '\n' ' ')
	say "the initramfs holds $(comm -23 "$WORK/wanted" "$WORK/builtin" | tr '\n' ' ')${builtin:+(built into the kernel: ${builtin% })}"
}

# ---- ssh

{% include "host_reading.sh" %}

{# check_sshd_settings PORTS PASSWORD ROOT_LOGIN: sshd's settings (its config and
   /etc/conf.d/sshd) are the facts', and dropbear can carry every one of them. -#}
check_sshd_settings() {
	local settings ports password root listen found live
	command -v sshd >/dev/null 2>&1 || return 0 # OpenSSH is gone: an earlier run carried its settings
	if [ ! -f "$(sshd_cfgfile)" ]; then
		mismatch "fact \`ssh\` is dropbear, but sshd's config file $(sshd_cfgfile) is missing, so its settings cannot be carried"
		return 0
	fi
	settings=$(sshd_settings)
	ports=$(sshd_setting "$settings" port | sort -nu | tr '\n' ' ')
	password=$(sshd_setting "$settings" passwordauthentication)
	root=$(sshd_setting "$settings" permitrootlogin)
	listen=$(sshd_setting "$settings" listenaddress | grep -vxF -e 0.0.0.0 -e :: | tr '\n' ' ')
	live=$(netstat -ltnp 2>/dev/null | awk '$NF ~ /\/sshd/ { sub(/.*:/, "", $4); print $4 }' | sort -nu | tr '\n' ' ')
	ports=${ports% } live=${live% }
	[ "$root" != without-password ] || root=prohibit-password
	[ "${ports:-22}" = "$1" ] ||
		mismatch "fact \`ssh_ports\` is [$1], but sshd listens on port(s) ${ports:-22} (its config and /etc/conf.d/sshd)"
	[ -z "$live" ] || [ "$live" = "$1" ] ||
		mismatch "fact \`ssh_ports\` is [$1], but the running sshd listens on port(s) $live (netstat)"
	[ "${password:-yes}" = "$2" ] ||
		mismatch "fact \`ssh_password_auth\` is $2, but sshd has PasswordAuthentication ${password:-yes}"
	case ${root:=prohibit-password} in
	yes | no | prohibit-password)
		[ "$root" = "$3" ] || mismatch "fact \`ssh_root_login\` is $3, but sshd has PermitRootLogin $root"
		;;
	*) mismatch "sshd has PermitRootLogin $root, which dropbear cannot carry: keep OpenSSH (ssh = \"openssh\")" ;;
	esac
	[ -z "$listen" ] ||
		mismatch "sshd has ListenAddress ${listen% }, which mingen does not carry to dropbear: keep OpenSSH (ssh = \"openssh\")"
	found=$(sshd_uncarried "$settings")
	if [ -n "$found" ]; then
		printf '%s\n' "$found" | while IFS= read -r setting; do
			say "preflight: sshd has $setting, which dropbear cannot carry: keep OpenSSH (ssh = \"openssh\")"
		done
		PREFLIGHT_FAILED=1
	fi
}

{# keep_package NAME WHY: apk_remove leaves NAME installed; the reason is said once. -#}
keep_package() {
	case " $KEPT " in
	*" $1 "*) return 0 ;;
	esac
	KEPT="$KEPT $1"
	say "preflight: keeps $1: $2"
}

{# check_login_shells: a package the run removes that holds the login shell of an
   account that can log in is kept. -#}
check_login_shells() {
	local removed name shell home owner
	removed=" $(removal_candidates "$REMOVE_NAMES" "$REMOVE_PREFIXES" | tr '\n' ' ') "
	login_accounts >"$WORK/accounts"
	while read -r name shell home; do
		owner=$(owner_of "$shell")
		case $removed in
		*" ${owner:-?} "*) keep_package "$owner" "account $name logs in with $shell, which $owner holds" ;;
		esac
	done <"$WORK/accounts"
}

{# check_sudo_doas auto|remove: auto keeps sudo and doas unless root can log in directly;
   a run that came through the one to remove stops. -#}
check_sudo_doas() {
	local tool user
	for tool in sudo doas; do
		[ -n "$(installed "$tool")" ] || continue
		if [ "$1" = auto ] && ! root_can_log_in; then
			keep_package "$tool" "root cannot log in over SSH directly (no key line without a forced command, or PermitRootLogin no); set sudo_doas = \"remove\" to remove it anyway"
			continue
		fi
		user=${DOAS_USER:-}
		[ "$tool" = doas ] || user=${SUDO_USER:-}
		[ -z "$user" ] ||
			mismatch "this run came through $tool (as $user), which the run would remove: run it as root directly, or set sudo_doas = \"keep\""
	done
}

{# carry_host_keys: clients see the same host keys after the switch. -#}
carry_host_keys() {
	local type
	[ -d /etc/dropbear ] || change "create /etc/dropbear" mkdir -p -m 0700 /etc/dropbear
	for type in rsa ecdsa ed25519; do
		if [ -f "/etc/ssh/ssh_host_${type}_key" ] && [ ! -f "/etc/dropbear/dropbear_${type}_host_key" ]; then
			change "convert the OpenSSH $type host key for dropbear" dropbearconvert openssh dropbear \
				"/etc/ssh/ssh_host_${type}_key" "/etc/dropbear/dropbear_${type}_host_key"
		fi
	done
}

{# ssh_switch DROPBEAR_OPTS: carry the host keys and settings to dropbear, then stop
   sshd and start dropbear in one step that a hang-up cannot cut. -#}
# ssh_switch DROPBEAR_OPTS: stop sshd and start dropbear in one step a hang-up cannot cut.
ssh_switch() {
	carry_host_keys
	set_assignment /etc/conf.d/dropbear DROPBEAR_OPTS "$1"
	if service_started dropbear && ! service_started sshd; then
		return 0
	fi
	if dry_run; then
		say "would stop sshd and start dropbear in one step"
		return 0
	fi
	say "stopping sshd and starting dropbear in one step (if the session drops, reconnect on the same port)"
	: >"$MINGEN_STATE/reboot-pending" || err "cannot write to $MINGEN_STATE"
	(
		trap '' HUP INT TERM
		rc-service sshd stop
		rc-service dropbear start
	) 3>&- || true
	if ! service_started dropbear; then
		rc-service sshd start || true
		err "dropbear did not start, so sshd was started again; see $MINGEN_LOG"
	fi
}

# ---- preflight

mismatch() {
	say "preflight: $*"
	PREFLIGHT_FAILED=1
}

{# need_program NAME: a preflight check (need_cmd stops at once). -#}
need_program() {
	command -v "$1" >/dev/null 2>&1 || mismatch "\`$1\` is not installed"
}

need_file() {
	[ -f "$1" ] || {
		mismatch "$1 is missing"
		return 1
	}
}

{# need_console_gettys CONSOLES: a getty stays on one of CONSOLES (fact `consoles`),
   and each console the kernel's console= names keeps its getty. -#}
need_console_gettys() {
	local gettys cmdline word name
	need_file /etc/inittab || return 0
	gettys=" $(inittab_gettys | tr '\n' ' ')"
	for name in $1 ''; do
		case $gettys in " " | *" $name "*) break ;; esac
		[ -n "$name" ] || mismatch "fact \`consoles\` is [$1], but /etc/inittab has gettys only on${gettys% }: none would stay"
	done
	read -r cmdline </proc/cmdline || cmdline=''
	for word in $cmdline; do
		case $word in console=tty0*) name=tty1 ;; console=*) name=${word#console=} name=${name%%,*} ;; *) continue ;; esac
		case "$gettys" in *" $name "*) case " $1 " in *" $name "*) ;; *) mismatch "fact \`consoles\` is [$1], but the kernel's console=$name has a getty that would go" ;; esac ;; esac
	done
}

{# check_no_containers none|used: with `containers = none`, no container runtime is
   installed (by apk or by hand). -#}
check_no_containers() {
	local tool
	[ "$1" = none ] || return 0
	for tool in dockerd podman containerd lxc-start incusd runc; do
		! command -v $tool >/dev/null || mismatch "fact \`containers\` is none, but $tool is installed: set containers = \"used\""
	done
}

need_dir() {
	[ -d "$1" ] || mismatch "directory $1 is missing"
}

{# need_assignment PATH KEY: PATH has a `KEY=` line with a plain list. -#}
need_assignment() {
	if need_file "$1" && ! KEY=$2 edit_lists check <"$1"; then
		mismatch "$1 has no plain \`$2=\` line to edit"
	fi
}

{# need_text PATH FIND REPLACE: PATH holds FIND, or REPLACE from an earlier run. -#}
need_text() {
	if need_file "$1" && ! grep -qF -e "$2" -e "$3" "$1"; then
		mismatch "$1 does not hold \`$2\`"
	fi
}

need_append_line() {
	if need_file "$1" && ! grep -q '^[[:space:]]*APPEND[[:space:]]' "$1"; then
		mismatch "$1 has no APPEND line"
	fi
}

{% if boot_loader == "efi-stub" -%}
# need_kernel_line PATH: PATH holds one command line, and it starts the kernel
# (an EFI stub's startup.nsh: `vmlinuz-virt initrd=... root=...`).
need_kernel_line() {
	local lines
	if [ ! -f "$1" ]; then
		mismatch "$1 is missing"
		return 0
	fi
	lines=$(awk 'NF && $1 !~ /^#/ { n++; if ($1 !~ /vmlinuz/) other = 1 } END { print n + 0, other + 0 }' "$1")
	if [ "$lines" != "1 0" ]; then
		mismatch "$1 does not hold exactly one command line that starts the kernel (vmlinuz-...)"
	fi
}

{% endif -%}
{% if install == "diskless" -%}
# check_diskless: the host runs from RAM, with its modules from a modloop.
check_diskless() {
	local type
	type=$(root_fstype)
	if [ "$type" != tmpfs ]; then
		mismatch "fact \`install\` is diskless, but the root filesystem is ${type:-not in /proc/mounts}, not tmpfs"
	fi
	if [ -z "$(modloop)" ]; then
		mismatch "fact \`install\` is diskless, but no modloop is mounted at /.modloop (/proc/mounts)"
	fi
}

# need_lbu: lbu knows where to save (LBU_MEDIA or LBU_BACKUPDIR in
# /etc/lbu/lbu.conf), and, before the first run, nothing is left unsaved that
# the run's lbu commit would save unseen.
need_lbu() {
	local where status
	if ! command -v lbu >/dev/null 2>&1; then
		mismatch "\`lbu\` is not installed"
		return 0
	fi
	where=$(
		LBU_MEDIA='' LBU_BACKUPDIR=''
		# shellcheck disable=SC1091 # the host's file, sourced as lbu sources it
		. /etc/lbu/lbu.conf >/dev/null 2>&1 || :
		printf '%s' "${LBU_BACKUPDIR:-${LBU_MEDIA:+/media/$LBU_MEDIA}}"
	)
	if [ -z "$where" ]; then
		mismatch "/etc/lbu/lbu.conf sets neither LBU_MEDIA nor LBU_BACKUPDIR: lbu commit would not know where to save"
	elif [ ! -d "$where" ]; then
		mismatch "lbu saves to $where, which is not a directory"
	elif [ ! -e "$MINGEN_STATE/undo.sh" ]; then
		status=$(lbu status 2>&1 | tr '\n' ' ')
		if [ -n "$status" ]; then
			mismatch "lbu status lists changes not saved yet ($status): commit or revert them first, or the run's lbu commit saves them too"
		fi
	fi
}

# lbu_commit INCLUDE EXCLUDE: add INCLUDE (paths, split on spaces) to what lbu saves
# and keep EXCLUDE out of it, save every change to the boot media, and check that lbu
# status then lists nothing.
lbu_commit() {
	local path status
	for path in $1; do
		if ! grep -qxF "+${path#/}" /etc/apk/protected_paths.d/lbu.list 2>/dev/null; then
			change "add $path to what lbu saves" lbu include "$path"
		fi
	done
	for path in $2; do
		if ! grep -qxF -- "-${path#/}" /etc/apk/protected_paths.d/lbu.list 2>/dev/null; then
			change "keep $path out of what lbu saves" lbu exclude "$path"
		fi
	done
	if dry_run; then
		say "would save the changes to the boot media (lbu commit)"
		return 0
	fi
	# For undo.sh: it saves the files it puts back the same way.
	[ -e "$MINGEN_STATE/lbu" ] || : >"$MINGEN_STATE/lbu" || err "cannot write to $MINGEN_STATE"
	if [ -n "$(lbu status 2>&1)" ]; then
		change "save the changes to the boot media (lbu commit)" lbu commit
	fi
	status=$(lbu status 2>&1 | tr '\n' ' ')
	if [ -n "$status" ]; then
		err "after lbu commit, lbu status still lists changes: $status"
	fi
}

{% endif -%}
# check_boot_loader LOADER: the host has the files of boot loader LOADER (fact `boot_loader`).
check_boot_loader() {
	local found
	found=$(boot_loaders | tr '\n' ' ')
	case " $found" in
	*" $1 "*) ;;
	*) mismatch "fact \`boot_loader\` is $1, but this host has the files of ${found:-no boot loader mingen knows}" ;;
	esac
}

need_init_script() {
	[ -f "/etc/init.d/$1" ] || mismatch "service $1 has no init script (/etc/init.d/$1)"
}

{# need_installable NAME...: apk can resolve them (installed, or in an index it has). -#}
need_installable() {
	local missing name
	missing=$(for name; do apk --no-network info -e "$name" >/dev/null 2>&1 || printf ' %s' "$name"; done)
	if [ -n "$missing" ] && ! apk add --simulate --quiet "$@" >/dev/null 2>&1; then
		mismatch "apk cannot install$missing: is the repository reachable? (try \`apk update\`)"
	fi
}

{# check_static_network: /etc/network/interfaces has a complete static stanza for the
   interface with the default route, and no DHCP. -#}
check_static_network() {
	local found
	if [ ! -f /etc/network/interfaces ]; then
		mismatch "fact \`network\` is static, but /etc/network/interfaces is missing"
		return 0
	fi
	found=$(interfaces_lines | awk -v want="$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)" '
	$1 == "iface" {
		iface = $2; static = $3 == "inet" && $4 == "static"
		if ($4 == "dhcp" || ($3 == "inet6" && $4 == "auto")) dhcp = dhcp " " $2 " " $3 " " $4
		next
	}
	$1 == "use" && $2 == "dhcp" { dhcp = dhcp " " iface " use dhcp" }
	static && $1 == "address" { addr[iface] = 1; if (index($2, "/")) mask[iface] = 1 }
	static && $1 == "netmask" { mask[iface] = 1 }
	static && $1 == "gateway" { gw[iface] = 1 }
	END {
		if (dhcp != "") { print "it configures DHCP (iface" dhcp ")"; exit }
		for (i in addr) if (mask[i] && gw[i] && (want == "" || want == i)) exit
		print "it has no complete static stanza (address, netmask or prefix, gateway)" (want == "" ? "" : " for " want ", the interface with the default route")
	}')
	[ -z "$found" ] ||
		mismatch "fact \`network\` is static, but in /etc/network/interfaces $found: keep dhcpcd (network = \"dhcp\")"
}

{# check_ipv6_unused: no global IPv6 address is in use or configured. -#}
check_ipv6_unused() {
	local found
	found=$(awk '$4 == "00" { print $1 " on " $6; exit }' /proc/net/if_inet6 2>/dev/null)
	[ -z "$found" ] ||
		mismatch "fact \`ipv6\` is unused, but a global IPv6 address is in use ($found): set ipv6 = \"used\""
	found=$(interfaces_lines 2>/dev/null | awk '$1 == "iface" && $3 == "inet6" && $4 != "loopback" { print $2 " inet6 " $4; exit }')
	[ -z "$found" ] ||
		mismatch "fact \`ipv6\` is unused, but /etc/network/interfaces configures IPv6 (iface $found): set ipv6 = \"used\""
	if [ -f /etc/ssh/sshd_config ] && command -v sshd >/dev/null 2>&1; then
		found=$(sshd_setting "$(sshd_settings)" listenaddress | grep -m 1 :)
		[ -z "$found" ] ||
			mismatch "fact \`ipv6\` is unused, but sshd listens on the IPv6 address $found: set ipv6 = \"used\""
	fi
}

# ---- backup and undo

{# backup_file PATH: keep the first copy of PATH (mode and owner too), or note that it
   did not exist, so that undo.sh puts it back or deletes it (a directory too). -#}
# backup_file PATH: keep the first copy of PATH, or note that it did not exist, for undo.sh.
backup_file() {
	local copy=$MINGEN_BACKUP$1
	if [ -e "$copy" ] || grep -qxF -e "$1" "$MINGEN_BACKUP/absent.list" 2>/dev/null || [ -d "$1" ]; then
		return 0 # kept already, or a directory that exists (only one the run creates goes)
	elif [ -e "$1" ]; then
		{ mkdir -p "${copy%/*}" && cp -p "$1" "$copy.tmp" && mv -f "$copy.tmp" "$copy"; } ||
			err "cannot back up $1 to $copy"
	else
		printf '%s\n' "$1" >>"$MINGEN_BACKUP/absent.list" || err "cannot write to $MINGEN_BACKUP"
	fi
}

list_runlevels() {
	local link level
	for link in /etc/runlevels/*/*; do
		if [ -L "$link" ] || [ -e "$link" ]; then
			level=${link%/*}
			printf '%s %s\n' "${level##*/}" "${link##*/}"
		fi
	done
}

list_started() {
	ls /run/openrc/started 2>/dev/null || :
}

{# keep_once NAME COMMAND...: COMMAND's output becomes $MINGEN_STATE/NAME, unless that exists. -#}
keep_once() {
	local file=$MINGEN_STATE/$1
	shift
	[ -e "$file" ] || { "$@" >"$file.tmp" && mv -f "$file.tmp" "$file"; } || err "cannot write $file"
}

{# put_state NAME: $WORK/NAME becomes $MINGEN_STATE/NAME (mingen's own files, without ceremony). -#}
put_state() {
	cmp -s "$WORK/$1" "$MINGEN_STATE/$1" || cp "$WORK/$1" "$MINGEN_STATE/$1" || err "cannot write $MINGEN_STATE/$1"
}

{# forget_killed_runs: a run killed outright leaves its scratch directory behind. -#}
forget_killed_runs() {
	local dir
	for dir in /tmp/mingen.*; do
		if [ -d "$dir" ] && [ "$dir" != "$WORK" ]; then
			rm -rf "$dir"
		fi
	done
}

figures() {
	free -m
	df -m /
}

figure_values() {
	free | awk '$1 == "Mem:" { print "ram_used_kb " $3 }'
	df -Pk / | awk 'NR == 2 { print "disk_used_kb " $3 }'
}
