#!/bin/sh
# boot-trial.sh: written by mingen (rule boot-trial). The new boot configuration is
# tried once: /boot/extlinux.conf keeps the configuration from before the run as the
# label mingen-previous, which stays the default, and `extlinux --once=LABEL` (in
# syslinux's ADV) boots the new label at the next boot only.
#   sh boot-trial.sh default-label CONF          the label CONF boots by default
#   sh boot-trial.sh initrd CONF LABEL           LABEL's INITRD file
#   sh boot-trial.sh final CONF LABEL OLD        CONF without the fallback label
#   sh boot-trial.sh trial CONF LABEL OLD        CONF (final) with OLD's LABEL before
#                                                it as the fallback label, the default
#   sh boot-trial.sh fingerprint CONF LABEL INITRAMFS   what a boot of LABEL takes
#   sh boot-trial.sh confirm                     after a boot (the one-shot): confirm
#                                                the new configuration, or record that
#                                                it failed
set -eu

state=/var/lib/mingen
fallback=mingen-previous
ports=""

# extlinux_awk MODE LABEL CONF [OLD]: CONF read by label blocks (a LABEL line and the
# indented lines under it); keywords are case-insensitive. CONF is read twice.
extlinux_awk() {
	MODE=$1 LABEL=$2 OLD=${4:-} FALLBACK=$fallback awk '
	function key(line,    k) { k = line; sub(/^[ \t]+/, "", k); sub(/[ \t].*/, "", k); return toupper(k) }
	function value(line,    v) { v = line; sub(/^[ \t]*[^ \t]+[ \t]*/, "", v); sub(/[ \t]+$/, "", v); return v }
	function is_menu_default(line) { return key(line) == "MENU" && toupper(value(line)) ~ /^DEFAULT$/ }
	function indented(line) { return line ~ /^[ \t]+[^ \t]/ }
	function before_value(line) { return substr(line, 1, length(line) - length(value(line))) }
	BEGIN {
		mode = ENVIRON["MODE"]; label = ENVIRON["LABEL"]; fb = ENVIRON["FALLBACK"]
		if (mode == "trial" || mode == "final") {
			# The fallback block: the old configuration of LABEL under its own name,
			# first and the default, booting the kept initramfs.
			while ((getline line < ENVIRON["OLD"]) > 0) {
				if (key(line) == "LABEL") {
					inside = (value(line) == label)
					if (inside) { old[++n] = "LABEL " fb; old[++n] = "  MENU DEFAULT" }
					continue
				}
				if (!inside || !indented(line)) { inside = 0; continue }
				if (is_menu_default(line)) { old_menu_default = 1; continue }
				if (key(line) == "INITRD") line = before_value(line) value(line) "." fb
				if (key(line) == "MENU" && toupper(value(line)) ~ /^LABEL[ \t]/) line = line " (before mingen)"
				old[++n] = line
			}
			if (n == 0) { failed = 1; exit 1 }
		}
	}
	# The first reading: which label is the default, and where MENU DEFAULT is.
	FNR == NR {
		if (key($0) == "LABEL") { cur = value($0); labels[cur] = 1; if (first == "") first = cur; next }
		if (!indented($0)) cur = ""
		if (key($0) == "DEFAULT") default = value($0)
		if (cur != "" && is_menu_default($0)) { if (menu == "") menu = cur; has_menu_default[cur] = 1 }
		if (cur == label && key($0) == "INITRD" && mode == "initrd") print value($0)
		if (cur == label && key($0) == "APPEND" && mode == "append") print value($0)
		next
	}
	FNR == 1 { cur = "" }
	mode == "final" {
		if (key($0) == "LABEL") {
			cur = value($0)
			if (cur == fb) next
			print
			# LABEL had the MENU DEFAULT before the run: it goes back.
			if (cur == label && old_menu_default && !has_menu_default[label]) print "  MENU DEFAULT"
			next
		}
		if (indented($0) && cur == fb) next
		if (!indented($0)) cur = ""
		if (key($0) == "DEFAULT" && value($0) == fb) { print before_value($0) label; next }
		print
		next
	}
	mode == "trial" {
		if (key($0) == "LABEL") {
			cur = value($0)
			if (cur == label) for (i = 1; i <= n; i++) print old[i]
			print
			next
		}
		if (!indented($0)) cur = ""
		if (cur == label && is_menu_default($0)) next
		if (key($0) == "DEFAULT" && value($0) == label) { print before_value($0) fb; next }
		print
		next
	}
	END {
		if (failed) exit 1
		if (mode == "default-label") {
			if (default != "" && (default in labels)) print default
			else if (menu != "") print menu
			else print first
		}
	}' "$3" "$3"
}

# fingerprint CONF LABEL INITRAMFS: LABEL's APPEND line and the initramfs's checksum.
fingerprint() {
	extlinux_awk append "$2" "$1"
	cksum <"$3"
}

say() {
	printf 'mingen boot-trial: %s\n' "$*" >&2
}

# booted_initrd: the initramfs this boot took (syslinux adds initrd=FILE to the command line).
booted_initrd() {
	local word initrd="" cmdline
	read -r cmdline </proc/cmdline || cmdline=""
	for word in $cmdline; do
		case $word in
		initrd=*) initrd=${word#initrd=} ;;
		esac
	done
	printf '%s' "${initrd##*/}"
}

# not_up: what of a good boot is missing (root read-write, a network route on an
# interface that is up, the SSH server on each of the ports); nothing when all is up.
not_up() {
	local port iface
	awk '$2 == "/" && $4 ~ /^rw(,|$)/ { found = 1 } END { exit !found }' /proc/mounts ||
		printf 'the root filesystem is not mounted read-write; '
	iface=$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route)
	if [ -z "$iface" ]; then
		printf 'no default route; '
	elif [ "$(cat "/sys/class/net/$iface/operstate" 2>/dev/null)" != up ]; then
		printf 'the default route'"'"'s interface %s is not up; ' "$iface"
	fi
	for port in $ports; do
		netstat -ltn 2>/dev/null | awk -v port="$port" '$1 ~ /^tcp/ && $4 ~ (":" port "$") { found = 1 } END { exit !found }' ||
			printf 'nothing listens on TCP port %s; ' "$port"
	done
}

# failed WHAT: the new configuration did not come up; record it (the run and the report say it).
failed() {
	mv -f "$state/boot-trial" "$state/boot-trial.failed"
	record "the new boot configuration (label $label, armed $armed) $1; the previous one (label $fallback) stays the default, and nothing is tried again by itself. /var/lib/mingen has boot-failed (this), boot-trial.failed, backup/ and undo.sh; the log is /var/log/mingen.log. To try once more: delete /var/lib/mingen/boot-failed and run the script again; to undo the run, sh /var/lib/mingen/undo.sh." boot-failed
}

# record TEXT FILE: TEXT goes to $state/FILE, to the report and to stderr.
record() {
	printf '%s\n' "$1" >"$state/$2"
	printf 'boot: %s\n' "$1" >"$state/boot-outcome"
	say "$1"
}

confirm() {
	local initrd missing waited=0 conf=/boot/extlinux.conf label="" initramfs="" kept="" remove="" armed
	[ -f "$state/boot-trial" ] || return 0
	# shellcheck disable=SC1091 # written by the run: label, initramfs, kept, ports, remove
	. "$state/boot-trial"
	armed=$(date -r "$state/boot-trial" '+%Y-%m-%d %H:%M' 2>/dev/null || echo "by the last run")
	initrd=$(booted_initrd)
	if [ "$initrd" != "$initramfs" ]; then
		failed "did not come up: this boot took initramfs ${initrd:-unknown}"
		return 0
	fi
	# The one-shot runs last at boot; the SSH server may still be binding its ports.
	while missing=$(not_up) && [ -n "$missing" ] && [ "$waited" -lt 60 ]; do
		sleep 2
		waited=$((waited + 2))
	done
	if [ -n "$missing" ]; then
		failed "booted but did not come up within 60 s (${missing% }): the host reboots into the previous one"
		reboot
		return 1
	fi
	cp -p "$conf" "$conf.mingen-new"
	extlinux_awk final "$label" "$conf" /var/lib/mingen/backup/boot/extlinux.conf >"$conf.mingen-new"
	mv -f "$conf.mingen-new" "$conf"
	rm -f "/boot/$kept"
	fingerprint "$conf" "$label" "/boot/$initramfs" >"$state/boot-confirmed"
	for name in $remove; do
		! apk --no-network info -e "$name" >/dev/null 2>&1 || apk --no-network del --quiet "$name" || say "apk could not remove $name"
	done
	rm -f "$state/boot-trial" "$state/boot-trial.failed"
	record "the new boot configuration (label $label) came up (root read-write, network up, SSH on port(s) $ports) and is the default now; the fallback label and /boot/$kept are gone${remove:+, and so is $remove}." boot-confirmed.text
}

case ${1:-} in
default-label) extlinux_awk default-label "" "$2" ;;
initrd) extlinux_awk initrd "$3" "$2" ;;
final) extlinux_awk final "$3" "$2" "$4" ;;
trial) extlinux_awk trial "$3" "$2" "$4" ;;
fingerprint) fingerprint "$2" "$3" "$4" ;;
confirm) confirm ;;
*)
	say "unknown command \`${1:-}\`"
	exit 1
	;;
esac
