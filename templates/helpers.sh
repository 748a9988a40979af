MINGEN_STATE=/var/lib/mingen
MINGEN_BACKUP=$MINGEN_STATE/backup
MINGEN_LOG=/var/log/mingen.log
MINGEN_DRY_RUN=${MINGEN_DRY_RUN:-0}
MINGEN_REBOOT=${MINGEN_REBOOT:-0}
KERNEL_VERSION=
INITRAMFS_STALE=0
PREFLIGHT_FAILED=0
LOGGING=0
WORK=

# ---------------------------------------------------------------- vocabulary

# say TEXT: tell the operator. Once the run logs (see start_log), the text goes
# to the log and, while it is there, to the terminal (file descriptor 3).
say() {
	printf 'mingen: %s\n' "$*" >&2 || true
	if [ "$LOGGING" = 1 ]; then
		printf 'mingen: %s\n' "$*" >&3 2>/dev/null || true
	fi
}

err() {
	say "error: $*"
	exit 1
}

dry_run() {
	[ "$MINGEN_DRY_RUN" = 1 ]
}

need_cmd() {
	command -v "$1" >/dev/null 2>&1 || err "\`$1\` is needed and is not installed"
}

# start_log: from here on, every command's output goes to the log, and the run
# carries on to its end when the terminal goes away: a hang-up is ignored (by
# every command it starts, too), and writes to a closed terminal only fail.
start_log() {
	trap '' HUP
	exec 3>&2 >>"$MINGEN_LOG" 2>&1 </dev/null
	LOGGING=1
	printf '\n' || true
	say "run of $(date '+%Y-%m-%dT%H:%M:%S'); the full output goes to $MINGEN_LOG"
}

# change WHAT COMMAND [ARG...]: make one change and say so, or in a dry run say
# what would change. Every change to the host goes through here.
change() {
	local what=$1
	shift
	if dry_run; then
		say "would $what"
		return 0
	fi
	say "$what"
	: >"$MINGEN_STATE/reboot-pending" || err "cannot write to $MINGEN_STATE"
	# A daemon a command starts must not hold the terminal's copy (fd 3): the
	# operator's SSH session would never end.
	"$@" 3>&- || err "could not $what (\`$*\` failed)"
}

# ---------------------------------------------------------------- files

# put_file PATH MODE NEW: give PATH the content of the file NEW, unless it has it.
# An existing PATH keeps its mode and owner; the new content lands atomically.
put_file() {
	local path=$1 mode=$2 new=$3
	if [ -f "$path" ] && cmp -s "$new" "$path"; then
		return 0
	fi
	if dry_run; then
		say "would write $path:"
		if [ -f "$path" ]; then
			diff -u "$path" "$new" >&2 || true
		else
			sed 's/^/+/' "$new" >&2
		fi
	fi
	case $path in
	/etc/mkinitfs/* | /etc/modprobe.d/*)
		# The initramfs holds these: note that it must be rebuilt before the
		# change, so a run cut short after it still rebuilds.
		INITRAMFS_STALE=1
		if ! dry_run; then
			: >"$MINGEN_STATE/initramfs-stale" || err "cannot write to $MINGEN_STATE"
		fi
		;;
	esac
	if dry_run; then
		return 0
	fi
	change "write $path" install_file "$path" "$mode" "$new"
}

install_file() {
	local path=$1 mode=$2 new=$3
	if [ -f "$path" ]; then
		cp -p "$path" "$path.mingen-new" && cat "$new" >"$path.mingen-new"
	else
		cp "$new" "$path.mingen-new" && chmod "$mode" "$path.mingen-new"
	fi && mv -f "$path.mingen-new" "$path"
}

# make_parent_dir PATH: create the directory PATH goes in, if it is missing.
make_parent_dir() {
	if [ ! -d "${1%/*}" ]; then
		change "create ${1%/*}" mkdir -p "${1%/*}"
	fi
}

# write_file PATH MODE: give PATH the content read from standard input.
write_file() {
	cat >"$WORK/new" || err "cannot write to $WORK"
	put_file "$1" "$2" "$WORK/new"
}

# edit_lists MODE < FILE: print FILE with lists edited. The lists to edit are
# given in the environment: KEY, SEP, SET, ADD, REMOVE (items split on spaces).
#   MODE=assign: the list in each `KEY=list` line (quoted or not) becomes SET, or
#                loses REMOVE and gains ADD; it is quoted if it holds a space.
#   MODE=append: in each `APPEND` line of extlinux.conf, `modules=` loses REMOVE
#                and the options gain ADD.
#   MODE=check:  exit 1 unless a `KEY=` line exists with a plain list value.
edit_lists() {
	MODE=$1 awk '
	function join(a, b, sep) { return a == "" ? b : a sep b }
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
	mode != "append" && index($0, key) == 1 {
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
	# The fallback label of a boot trial (rule boot-trial) keeps the command line from before.
	$1 == "LABEL" { fallback_label = ($2 == "mingen-previous") }
	mode == "append" && $1 == "APPEND" && !fallback_label {
		out = "APPEND"
		for (i = 2; i <= NF; i++) {
			t = $i
			if (index(t, "modules=") == 1) t = "modules=" edit(substr(t, 9), ",", "", "", ENVIRON["REMOVE"])
			out = out " " t
		}
		opts = edit(substr(out, 8), " ", "", ENVIRON["ADD"], "")
		print substr($0, 1, index($0, "APPEND") - 1) "APPEND " opts
		next
	}
	mode != "check" { print }
	END { if (mode == "check") exit !(found && !bad) }'
}

# edit_assignment PATH KEY SEP SET ADD REMOVE
edit_assignment() {
	KEY=$2 SEP=$3 SET=$4 ADD=$5 REMOVE=$6 edit_lists assign <"$1" >"$WORK/new" ||
		err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

# edit_append_lines PATH REMOVE_MODULES ADD_OPTIONS
edit_append_lines() {
	REMOVE=$2 ADD=$3 edit_lists append <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$1" 0644 "$WORK/new"
}

# set_assignment PATH KEY VALUE: make PATH hold `KEY="VALUE"` (in place of the
# first KEY= line, or added at the end).
set_assignment() {
	local path=$1 key=$2 value=$3
	if [ -f "$path" ]; then
		KEY=$key VALUE=$value awk '
		index($0, ENVIRON["KEY"] "=") == 1 {
			if (!done) print ENVIRON["KEY"] "=\"" ENVIRON["VALUE"] "\""
			done = 1
			next
		}
		{ print }
		END { if (!done) print ENVIRON["KEY"] "=\"" ENVIRON["VALUE"] "\"" }' "$path" >"$WORK/new" ||
			err "could not read $path"
	else
		printf '%s="%s"\n' "$key" "$value" >"$WORK/new" || err "cannot write to $WORK"
	fi
	put_file "$path" 0644 "$WORK/new"
}

# replace_text PATH FIND REPLACE INTO: on each line of PATH holding FIND and not
# REPLACE, put REPLACE in the place of the first FIND; the result goes to INTO.
replace_text() {
	FIND=$2 REPL=$3 awk '
	{
		line = $0
		i = index(line, ENVIRON["FIND"])
		if (i && !index(line, ENVIRON["REPL"]))
			line = substr(line, 1, i - 1) ENVIRON["REPL"] substr(line, i + length(ENVIRON["FIND"]))
		print line
	}' <"$1" >"$WORK/new" || err "could not read $1"
	put_file "$4" 0644 "$WORK/new"
}

# write_value PATH VALUE: write a kernel setting (sysfs) now.
write_value() {
	if [ "$(cat "$1")" != "$2" ]; then
		change "set $1 to $2" write_to "$1" "$2"
	fi
}

write_to() {
	printf '%s\n' "$2" >"$1"
}

# clear_dir PATH: delete everything under PATH.
clear_dir() {
	if [ -n "$(ls -A "$1" 2>/dev/null)" ]; then
		change "empty $1" find "$1" -mindepth 1 -delete
	fi
}

# ---------------------------------------------------------------- services

service_started() {
	rc-service "$1" status >/dev/null 2>&1
}

in_runlevel() {
	[ -L "/etc/runlevels/$2/$1" ] || [ -e "/etc/runlevels/$2/$1" ]
}

# service_off NAME [RUNLEVEL] STOP: stop NAME (STOP=yes) and take it out of
# RUNLEVEL, or of every runlevel it is in.
service_off() {
	local name=$1 only=$2 stop=$3 link level
	if [ "$stop" = yes ] && service_started "$name"; then
		change "stop $name" rc-service "$name" stop
	fi
	for link in /etc/runlevels/*/"$name"; do
		if [ -L "$link" ] || [ -e "$link" ]; then
			level=${link%/*}
			level=${level##*/}
			if [ -z "$only" ] || [ "$only" = "$level" ]; then
				change "take $name out of runlevel $level" rc-update del "$name" "$level"
			fi
		fi
	done
}

# service_on NAME RUNLEVEL START: put NAME in RUNLEVEL, and start it (START=yes).
service_on() {
	if ! in_runlevel "$1" "$2"; then
		change "put $1 in runlevel $2" rc-update add "$1" "$2"
	fi
	if [ "$3" = yes ] && ! service_started "$1"; then
		change "start $1" rc-service "$1" start
	fi
}

# ---------------------------------------------------------------- packages

# world_has NAME: NAME is in /etc/apk/world (with or without a version or tag).
world_has() {
	NAME=$1 awk '
	{ n = $0; sub(/[<>=~@].*/, "", n); if (n == ENVIRON["NAME"]) found = 1 }
	END { exit !found }' /etc/apk/world
}

# installed NAME...: print the NAMEs that are installed (apk info -e, offline).
installed() {
	apk --no-network info -e "$@" 2>/dev/null || true
}

# removal_candidates NAMES PREFIXES: the installed packages among NAMES or
# starting with one of PREFIXES, one a line.
removal_candidates() {
	# shellcheck disable=SC2086 # one word per package name
	installed $1
	# apk's database, read directly: plain `apk info` refreshes the indexes first.
	PREFIXES=$2 awk '
	BEGIN { n = split(ENVIRON["PREFIXES"], p, " ") }
	/^P:/ { name = substr($0, 3); for (i = 1; i <= n; i++) if (index(name, p[i]) == 1) { print name; next } }' \
		/lib/apk/db/installed 2>/dev/null || :
}

# apk_install NAMES IF_INSTALLED: one `apk add` for NAMES, and for IF_INSTALLED
# where installed, that are not yet in the world file.
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

# apk_remove NAMES PREFIXES: one `apk del` for the installed packages named, if
# one of them is still in the world file (else apk would only say it keeps them).
apk_remove() {
	local candidates="" name in_world=no
	for name in $(removal_candidates "$1" "$2" | sort -u); do
		case " $KEPT " in
		*" $name "*) ;;
		*) candidates="$candidates$name " ;;
		esac
	done
	for name in $candidates; do
		if world_has "$name"; then
			in_world=yes
		fi
	done
	if [ "$in_world" = yes ]; then
		# shellcheck disable=SC2086 # one word per package name
		change "remove ${candidates% }" apk --no-network del --quiet $candidates
	fi
}

# ---------------------------------------------------------------- initramfs

rebuild_initramfs() {
	if [ "$INITRAMFS_STALE" = 1 ] || [ -e "$MINGEN_STATE/initramfs-stale" ]; then
		change "rebuild the initramfs for kernel $KERNEL_VERSION" mkinitfs "$KERNEL_VERSION"
		INITRAMFS_STALE=0
		if ! dry_run; then
			rm -f "$MINGEN_STATE/initramfs-stale"
		fi
	fi
}

# ---------------------------------------------------------------- boot trial

# The boot-trial program, shared by the run and the after-boot one-shot.
write_boot_trial_program() {
	cat <<'MINGEN_TRIAL'
{% include "boot_trial.sh" %}
MINGEN_TRIAL
}

# need_boot_trial: extlinux can set a label to boot once (its ADV in /boot/ldlinux.sys),
# unless a boot was confirmed already (syslinux may be gone then).
need_boot_trial() {
	[ ! -f "$MINGEN_STATE/boot-confirmed" ] || return 0
	if ! command -v extlinux >/dev/null 2>&1; then
		mismatch "fact \`boot_trial\` is once, but extlinux is not installed: set boot_trial = \"off\" (the new boot configuration is then the default at once)"
	elif [ ! -f /boot/ldlinux.sys ]; then
		mismatch "fact \`boot_trial\` is once, but /boot/ldlinux.sys is missing (extlinux does not boot this host from /boot): set boot_trial = \"off\""
	fi
}

# stop_after_failed_boot: a new boot configuration that did not come up is not tried again by itself.
stop_after_failed_boot() {
	[ -f "$MINGEN_STATE/boot-failed" ] || return 0
	say "$(cat "$MINGEN_STATE/boot-failed")"
	err "the reboot after the last run did not come up on the new boot configuration ($MINGEN_STATE/boot-failed): this run changes nothing"
}

# arm_boot_trial REMOVE PORTS: when the next boot takes a boot configuration that has
# not booted yet, keep the one from before the run as the default label mingen-previous
# (its APPEND line, and its initramfs beside the new one), and have extlinux boot the
# new label once. The one-shot confirms it (root read-write, network, SSH on PORTS, or
# the ports sshd is configured with) and then removes REMOVE (split on spaces).
arm_boot_trial() {
	local conf=/boot/extlinux.conf old label initramfs kept ports=$2 now before confirmed
	old=$MINGEN_BACKUP$conf
	if dry_run; then
		say "would keep the boot configuration from before the run as the default label mingen-previous and boot the new one once (extlinux --once), until the after-boot one-shot confirms it"
		return 0
	fi
	write_boot_trial_program >"$WORK/boot-trial.sh" || err "cannot write to $WORK"
	label=$(sh "$WORK/boot-trial.sh" default-label "$old") || err "cannot read $old"
	initramfs=$(sh "$WORK/boot-trial.sh" initrd "$old" "$label") || err "cannot read $old"
	case $initramfs in
	"" | */* | *,*)
		say "label $label in $old boots initramfs '$initramfs', which is not one file in /boot: the new boot configuration is the default at once (no boot trial)"
		return 0
		;;
	esac
	kept=$initramfs.mingen-previous
	sh "$WORK/boot-trial.sh" final "$conf" "$label" "$old" >"$WORK/extlinux.final" || err "cannot read $conf"
	now=$(sh "$WORK/boot-trial.sh" fingerprint "$WORK/extlinux.final" "$label" "/boot/$initramfs") || err "cannot read /boot/$initramfs"
	before=$(sh "$WORK/boot-trial.sh" fingerprint "$old" "$label" "$MINGEN_BACKUP/boot/$initramfs" 2>/dev/null || :)
	confirmed=$(cat "$MINGEN_STATE/boot-confirmed" 2>/dev/null || :)
	if [ "$now" = "$before" ] || [ "$now" = "$confirmed" ]; then
		return 0 # this configuration has booted already
	fi
	if ! command -v extlinux >/dev/null 2>&1 || [ ! -f /boot/ldlinux.sys ]; then
		say "extlinux cannot boot a label once here (it is not installed, or /boot/ldlinux.sys is missing): the new boot configuration is the default at once (no boot trial)"
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
		cmp -s "$MINGEN_BACKUP/boot/$initramfs" "/boot/$kept"; then
		return 0
	fi
	put_state "$MINGEN_STATE/boot-trial.sh" "$WORK/boot-trial.sh"
	if ! cmp -s "$MINGEN_BACKUP/boot/$initramfs" "/boot/$kept"; then
		change "keep the initramfs from before the run as /boot/$kept" cp -p "$MINGEN_BACKUP/boot/$initramfs" "/boot/$kept"
	fi
	put_file "$conf" 0644 "$WORK/extlinux.trial"
	change "boot label $label once at the next boot (extlinux --once=$label /boot); label mingen-previous, the boot configuration from before the run, stays the default until the after-boot one-shot confirms the new one" \
		extlinux --once="$label" /boot
	put_state "$MINGEN_STATE/boot-trial" "$WORK/boot-trial"
}

# ---------------------------------------------------------------- kernel modules

# need_modules_dep: the installed kernel has its module index.
need_modules_dep() {
	[ -z "$KERNEL_VERSION" ] || [ -f "/lib/modules/$KERNEL_VERSION/modules.dep" ] ||
		mismatch "/lib/modules/$KERNEL_VERSION/modules.dep is missing"
}

# The pruning program, shared by the run and the apk hook for later kernels.
write_prune_program() {
	cat <<'MINGEN_PRUNE'
{% include "prune_modules.sh" %}
MINGEN_PRUNE
}

# prune_modules KEEP: keep in /lib/modules only what the host needs, and KEEP
# (names or paths, split on spaces); the apk hook does the same for later kernels.
prune_modules() {
	local count
	write_prune_program >"$WORK/prune-modules.sh" || err "cannot write to $WORK"
	# The modules loaded when the run first ran stay: on a later run, after a boot
	# with the blacklist, fewer are loaded, and the set must not shrink.
	if [ -f "$MINGEN_STATE/modules-loaded" ]; then
		cp "$MINGEN_STATE/modules-loaded" "$WORK/modules-loaded" || err "cannot write to $WORK"
	else
		awk '{ print $1 }' /proc/modules >"$WORK/modules-loaded" 2>/dev/null || : >"$WORK/modules-loaded"
	fi
	# shellcheck disable=SC2086 # one module name or path a word
	{ printf '%s\n' $1 && cat "$WORK/modules-loaded"; } >"$WORK/modules-keep" || err "cannot write to $WORK"
	if dry_run; then
		sh "$WORK/prune-modules.sh" "$KERNEL_VERSION" "$WORK/modules-keep" --dry-run || err "the pruning program failed"
		return 0
	fi
	put_state "$MINGEN_STATE/modules-loaded" "$WORK/modules-loaded"
	put_state "$MINGEN_STATE/prune-modules.sh" "$WORK/prune-modules.sh"
	put_state "$MINGEN_STATE/modules-keep" "$WORK/modules-keep"
	count=$(sh "$MINGEN_STATE/prune-modules.sh" "$KERNEL_VERSION" "$MINGEN_STATE/modules-keep" --count) ||
		err "the pruning program failed"
	if [ "$count" -gt 0 ]; then
		INITRAMFS_STALE=1
		: >"$MINGEN_STATE/initramfs-stale" || err "cannot write to $MINGEN_STATE"
		change "remove $count unneeded modules from /lib/modules/$KERNEL_VERSION" \
			sh "$MINGEN_STATE/prune-modules.sh" "$KERNEL_VERSION" "$MINGEN_STATE/modules-keep"
	fi
}

# initramfs_files IMAGE: the paths an initramfs holds (gzip, xz, zstd or plain cpio).
initramfs_files() {
	local magic
	magic=$(od -An -tx1 -N4 "$1" | tr -d ' \n')
	case $magic in
	1f8b*) gzip -dc "$1" ;;
	fd377a58) xz -dc "$1" ;;
	28b52ffd) zstd -dc "$1" ;;
	30373037) cat "$1" ;;
	*) return 1 ;;
	esac | cpio -t 2>/dev/null
}

# check_initramfs MODULES: the new initramfs holds MODULES (split on spaces) and
# what modules.dep says they need; else the previous one goes back and the run
# stops, before any reboot.
check_initramfs() {
	local image=/boot/initramfs-{{ target.kernel_flavor }} listing wanted missing
	if dry_run; then
		say "would check that $image holds $1 and their dependencies"
		return 0
	fi
	# shellcheck disable=SC2086 # one module name a word
	wanted=$(printf '%s\n' $1 | awk -v dep="/lib/modules/$KERNEL_VERSION/modules.dep" '
	function name_of(p) { sub(/.*\//, "", p); sub(/\.ko.*$/, "", p); gsub(/-/, "_", p); return p }
	FILENAME != dep { n = $1; gsub(/-/, "_", n); want[n] = 1; next }
	{ p = $1; sub(/:$/, "", p); if (name_of(p) in want) for (i = 2; i <= NF; i++) need[name_of($i)] = 1 }
	END { for (n in want) print n; for (n in need) print n }' - "/lib/modules/$KERNEL_VERSION/modules.dep" | sort -u)
	listing=$(initramfs_files "$image" | awk '/\.ko/ { sub(/.*\//, ""); sub(/\.ko.*$/, ""); gsub(/-/, "_"); print }' | sort -u)
	printf '%s\n' "$wanted" >"$WORK/wanted" || err "cannot write to $WORK"
	missing=$(printf '%s\n' "$listing" | comm -13 - "$WORK/wanted" | tr '\n' ' ')
	if [ -n "$missing" ]; then
		if [ -f "$MINGEN_BACKUP$image" ]; then
			cp -p "$MINGEN_BACKUP$image" "$image" || err "cannot put the previous initramfs back: $image lacks $missing"
		fi
		: >"$MINGEN_STATE/initramfs-stale" || :
		err "the new initramfs lacks ${missing% }, which the root disk needs: the previous initramfs is back in $image, and nothing reboots"
	fi
	say "the initramfs holds $(printf '%s' "$wanted" | tr '\n' ' ')"
}

# ---------------------------------------------------------------- ssh

{% include "host_reading.sh" %}

# check_sshd_settings PORTS PASSWORD ROOT_LOGIN: sshd's settings (its config
# file and the arguments in /etc/conf.d/sshd) are the facts', and dropbear can
# carry every one of them.
check_sshd_settings() {
	local settings ports password root listen found live
	if ! command -v sshd >/dev/null 2>&1; then
		return 0 # OpenSSH is gone already: a run before this one carried its settings
	fi
	[ -f "$(sshd_cfgfile)" ] || {
		mismatch "fact \`ssh\` is dropbear, but sshd's config file $(sshd_cfgfile) is missing, so its settings cannot be carried"
		return 0
	}
	settings=$(sshd_settings)
	ports=$(printf '%s\n' "$settings" | awk '$1 == "port" { print $2 }' | sort -nu | tr '\n' ' ')
	ports=${ports% }
	password=$(printf '%s\n' "$settings" | awk '$1 == "passwordauthentication" { print $2 }')
	root=$(printf '%s\n' "$settings" | awk '$1 == "permitrootlogin" { print $2 }')
	listen=$(printf '%s\n' "$settings" | awk '$1 == "listenaddress" && $2 != "0.0.0.0" && $2 != "::" { print $2 }' | tr '\n' ' ')
	[ "$root" != without-password ] || root=prohibit-password
	if [ "${ports:-22}" != "$1" ]; then
		mismatch "fact \`ssh_ports\` is [$1], but sshd listens on port(s) ${ports:-22} (its config and /etc/conf.d/sshd)"
	fi
	live=$(sshd_listening_ports)
	if [ -n "$live" ] && [ "$live" != "$1" ]; then
		mismatch "fact \`ssh_ports\` is [$1], but the running sshd listens on port(s) $live (netstat)"
	fi
	if [ "${password:-yes}" != "$2" ]; then
		mismatch "fact \`ssh_password_auth\` is $2, but sshd has PasswordAuthentication ${password:-yes}"
	fi
	case ${root:-prohibit-password} in
	yes | no | prohibit-password)
		if [ "${root:-prohibit-password}" != "$3" ]; then
			mismatch "fact \`ssh_root_login\` is $3, but sshd has PermitRootLogin ${root:-prohibit-password}"
		fi
		;;
	*) mismatch "sshd has PermitRootLogin $root, which dropbear cannot carry: keep OpenSSH (ssh = \"openssh\")" ;;
	esac
	if [ -n "$listen" ]; then
		mismatch "sshd has ListenAddress ${listen% }, which mingen does not carry to dropbear: keep OpenSSH (ssh = \"openssh\")"
	fi
	# What dropbear has no way to do: dropping it would let in more than before,
	# or lock out who logs in through it.
	found=$(sshd_uncarried "$settings")
	if [ -n "$found" ]; then
		printf '%s\n' "$found" | while IFS= read -r setting; do
			say "preflight: sshd has $setting, which dropbear cannot carry: keep OpenSSH (ssh = \"openssh\")"
		done
		PREFLIGHT_FAILED=1
	fi
}

# sshd_listening_ports: the TCP ports the running sshd listens on, sorted and
# separated by spaces; empty when that cannot be seen (no netstat, not running).
sshd_listening_ports() {
	local ports
	ports=$(netstat -ltnp 2>/dev/null | awk '$NF ~ /\/sshd/ { n = $4; sub(/.*:/, "", n); print n }' | sort -nu | tr '\n' ' ')
	printf '%s' "${ports% }"
}

# ---------------------------------------------------------------- who can still log in

# KEPT: packages a rule would remove that this host needs to let someone log in,
# with the reason said once; apk_remove leaves them installed.
KEPT=

keep_package() {
	case " $KEPT " in
	*" $1 "*) return 0 ;;
	esac
	KEPT="$KEPT $1"
	say "preflight: keeps $1: $2"
}

# check_login_shells NAMES PREFIXES: no account that can log in loses its shell
# with the packages the run removes; a package that holds such a shell is kept.
check_login_shells() {
	local removed name shell home owner
	removed=" $(removal_candidates "$1" "$2" | tr '\n' ' ') "
	login_accounts | while read -r name shell home; do
		owner=$(owner_of "$shell")
		[ -n "$owner" ] || continue
		case $removed in
		*" $owner "*) printf '%s %s %s\n' "$owner" "$name" "$shell" ;;
		esac
	done >"$WORK/shells"
	while read -r owner name shell; do
		keep_package "$owner" "account $name logs in with $shell, which $owner holds"
	done <"$WORK/shells"
}

# check_sudo_doas auto|remove: removing sudo and doas leaves a way in as root.
# auto keeps them unless root can log in directly; a run that came through sudo
# or doas stops before taking that way away.
check_sudo_doas() {
	local tool user
	for tool in sudo doas; do
		[ -n "$(installed "$tool")" ] || continue
		if [ "$1" = auto ] && ! root_can_log_in; then
			keep_package "$tool" "root cannot log in over SSH directly (no key line without a forced command, or PermitRootLogin no); set sudo_doas = \"remove\" to remove it anyway"
			continue
		fi
		case $tool in
		sudo) user=${SUDO_USER:-} ;;
		doas) user=${DOAS_USER:-} ;;
		esac
		if [ -n "$user" ]; then
			mismatch "this run came through $tool (as $user), which the run would remove: run it as root directly, or set sudo_doas = \"keep\""
		fi
	done
}

# carry_host_keys: convert each OpenSSH host key for dropbear, so clients see
# the same host keys after the switch.
carry_host_keys() {
	local type
	if [ ! -d /etc/dropbear ]; then
		change "create /etc/dropbear" mkdir -p -m 0700 /etc/dropbear
	fi
	for type in rsa ecdsa ed25519; do
		if [ -f "/etc/ssh/ssh_host_${type}_key" ] && [ ! -f "/etc/dropbear/dropbear_${type}_host_key" ]; then
			change "convert the OpenSSH $type host key for dropbear" dropbearconvert openssh dropbear \
				"/etc/ssh/ssh_host_${type}_key" "/etc/dropbear/dropbear_${type}_host_key"
		fi
	done
}

# ssh_switch DROPBEAR_OPTS: carry the host keys and settings to dropbear, then
# stop sshd and start dropbear in one step that a hang-up cannot cut.
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

# ---------------------------------------------------------------- preflight

mismatch() {
	say "preflight: $*"
	PREFLIGHT_FAILED=1
}

# need_program NAME: a program the rules run is installed (a preflight check,
# unlike need_cmd, which stops at once).
need_program() {
	command -v "$1" >/dev/null 2>&1 || mismatch "\`$1\` is not installed"
}

need_file() {
	[ -f "$1" ] || mismatch "$1 is missing"
}

need_dir() {
	[ -d "$1" ] || mismatch "directory $1 is missing"
}

# need_assignment PATH KEY: PATH has a `KEY=` line with a plain list.
need_assignment() {
	if [ ! -f "$1" ]; then
		mismatch "$1 is missing"
	elif ! KEY=$2 edit_lists check <"$1"; then
		mismatch "$1 has no plain \`$2=\` line to edit"
	fi
}

# need_text PATH FIND REPLACE: PATH holds FIND, or REPLACE from an earlier run.
need_text() {
	if [ ! -f "$1" ]; then
		mismatch "$1 is missing"
	elif ! grep -qF -e "$2" "$1" && ! grep -qF -e "$3" "$1"; then
		mismatch "$1 does not hold \`$2\`"
	fi
}

need_append_line() {
	if [ ! -f "$1" ]; then
		mismatch "$1 is missing"
	elif ! grep -q '^[[:space:]]*APPEND[[:space:]]' "$1"; then
		mismatch "$1 has no APPEND line"
	fi
}

need_init_script() {
	[ -f "/etc/init.d/$1" ] || mismatch "service $1 has no init script (/etc/init.d/$1)"
}

# need_installable NAME...: apk can resolve the packages (they are installed or
# in a repository index it has).
need_installable() {
	local missing name
	missing=$(for name in "$@"; do apk --no-network info -e "$name" >/dev/null 2>&1 || printf ' %s' "$name"; done)
	if [ -n "$missing" ] && ! apk add --simulate --quiet "$@" >/dev/null 2>&1; then
		mismatch "apk cannot install$missing: is the repository reachable? (try \`apk update\`)"
	fi
}

# check_static_network: /etc/network/interfaces holds a complete static stanza
# for the interface with the default route, and no DHCP.
check_static_network() {
	local route_if found
	route_if=$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null || :)
	if [ ! -f /etc/network/interfaces ]; then
		mismatch "fact \`network\` is static, but /etc/network/interfaces is missing"
		return 0
	fi
	found=$(interfaces_lines | ROUTE_IF=$route_if awk '
	$1 == "iface" {
		iface = $2; family = $3; method = $4
		if (method == "dhcp" || (family == "inet6" && method == "auto")) dhcp = dhcp " " iface " " family " " method
		if (family == "inet" && method == "static") static[iface] = 1
		next
	}
	$1 == "use" && $2 == "dhcp" { dhcp = dhcp " " iface " use dhcp" }
	family == "inet" && method == "static" && $1 == "address" { addr[iface] = 1; if (index($2, "/")) mask[iface] = 1 }
	family == "inet" && method == "static" && $1 == "netmask" { mask[iface] = 1 }
	family == "inet" && method == "static" && $1 == "gateway" { gw[iface] = 1 }
	END {
		if (dhcp != "") { print "it configures DHCP (iface" dhcp ")"; exit }
		want = ENVIRON["ROUTE_IF"]
		for (i in static) if (addr[i] && mask[i] && gw[i] && (want == "" || want == i)) ok = 1
		if (ok) exit
		if (want != "") print "it has no complete static stanza (address, netmask or prefix, gateway) for " want ", the interface with the default route"
		else print "it has no complete static stanza (address, netmask or prefix, gateway)"
	}')
	if [ -n "$found" ]; then
		mismatch "fact \`network\` is static, but in /etc/network/interfaces $found: keep dhcpcd (network = \"dhcp\")"
	fi
}

# check_ipv6_unused: no global IPv6 address is in use or configured.
check_ipv6_unused() {
	local found
	if [ -r /proc/net/if_inet6 ]; then
		found=$(awk '$4 == "00" { print $1 " on " $6; exit }' /proc/net/if_inet6)
		if [ -n "$found" ]; then
			mismatch "fact \`ipv6\` is unused, but a global IPv6 address is in use ($found): set ipv6 = \"used\""
		fi
	fi
	found=$(interfaces_lines 2>/dev/null | awk '$1 == "iface" && $3 == "inet6" && $4 != "loopback" { print $2 " inet6 " $4; exit }')
	if [ -n "$found" ]; then
		mismatch "fact \`ipv6\` is unused, but /etc/network/interfaces configures IPv6 (iface $found): set ipv6 = \"used\""
	fi
	if [ -f /etc/ssh/sshd_config ] && command -v sshd >/dev/null 2>&1; then
		found=$(sshd_settings | awk '$1 == "listenaddress" && index($2, ":") { print $2; exit }')
		if [ -n "$found" ]; then
			mismatch "fact \`ipv6\` is unused, but sshd listens on the IPv6 address $found: set ipv6 = \"used\""
		fi
	fi
}

# ---------------------------------------------------------------- backup and undo

# backup_file PATH: keep the first copy of PATH (mode and owner too), or note
# that it did not exist, so undo.sh can put it back or delete it (a directory too).
backup_file() {
	local copy=$MINGEN_BACKUP$1
	if [ -e "$copy" ] || grep -qxF -e "$1" "$MINGEN_BACKUP/absent.list" 2>/dev/null; then
		return 0
	fi
	if [ -d "$1" ]; then
		return 0 # a directory that exists stays: only one the run creates goes
	elif [ -e "$1" ]; then
		if ! { mkdir -p "${copy%/*}" && cp -p "$1" "$copy.tmp" && mv -f "$copy.tmp" "$copy"; }; then
			err "cannot back up $1 to $copy"
		fi
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

# keep_once FILE COMMAND...: write COMMAND's output to FILE if FILE does not exist.
keep_once() {
	local file=$1
	shift
	if [ ! -e "$file" ]; then
		if ! { "$@" >"$file.tmp" && mv -f "$file.tmp" "$file"; }; then
			err "cannot write $file"
		fi
	fi
}

# forget_killed_runs: a run killed outright leaves its scratch directory behind.
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
	free -m | awk 'NR == 2 { print "ram_used_mb " $3 }'
	df -m / | awk 'NR == 2 { print "disk_used_mb " $3 }'
}
