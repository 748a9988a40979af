#!/bin/sh
# undo.sh: written by mingen's minimise.sh. Puts back what it changed: the packages
# (as /etc/apk/world was), every file it changed or created, the runlevels and the
# started services, sshd in place of dropbear, and the initramfs.
# Run it as root; it needs the package repository (`apk update` first).
set -eu

STATE=/var/lib/mingen
BACKUP=$STATE/backup

say() {
	printf 'mingen undo: %s\n' "$*" >&2 || true
}

err() {
	say "error: $*"
	exit 1
}

{# lines_missing A B: the lines of file B that file A lacks. -#}
lines_missing() {
	awk 'FNR == NR { have[$0] = 1; next } $0 != "" && !($0 in have)' "$1" "$2"
}

started() {
	rc-service "$1" status >/dev/null 2>&1
}

restore_files() {
	local path
	{#- Deepest first, so a directory the run created is empty when its turn comes. #}
	sort -r "$BACKUP/absent.list" 2>/dev/null | while IFS= read -r path; do
		if [ -d "$path" ] && [ ! -L "$path" ]; then
			say "delete $path"
			rmdir "$path" || say "$path is not empty: left in place"
		elif [ -e "$path" ] || [ -L "$path" ]; then
			say "delete $path"
			rm -f "$path" || err "cannot delete $path"
		fi
	done
	(cd "$BACKUP" && find . -type f ! -name absent.list) | while IFS= read -r path; do
		path=${path#.}
		case $path in
		/sys/* | /proc/*) cat "$BACKUP$path" >"$path" || say "could not restore $path" ;;
		*)
			if ! cmp -s "$BACKUP$path" "$path"; then
				say "restore $path"
				{ mkdir -p "${path%/*}" && cp -p "$BACKUP$path" "$path"; } || err "cannot restore $path"
			fi
			{#- apk leaves its own copy beside a changed config file it reinstalls. #}
			if [ -e "$path.apk-new" ] && [ ! -e "$BACKUP$path.apk-new" ]; then
				rm -f "$path.apk-new"
			fi
			;;
		esac
	done
}

restore_runlevels() {
	local now level name
	now=$(mktemp)
	for name in /etc/runlevels/*/*; do
		if [ -L "$name" ] || [ -e "$name" ]; then
			level=${name%/*}
			printf '%s %s\n' "${level##*/}" "${name##*/}"
		fi
	done >"$now"
	lines_missing "$STATE/runlevels.before" "$now" | while read -r level name; do
		say "take $name out of runlevel $level"
		rc-update del "$name" "$level" >/dev/null </dev/null || err "could not take $name out of $level"
	done
	lines_missing "$now" "$STATE/runlevels.before" | while read -r level name; do
		say "put $name in runlevel $level"
		rc-update add "$name" "$level" >/dev/null </dev/null || err "could not put $name in $level"
	done
	rm -f "$now"
}

{# restore_modules: reinstall the kernel package whose modules rule modules-prune removed. -#}
restore_modules() {
	local list kver package missing
	for list in "$STATE"/modules-removed.*; do
		[ -f "$list" ] || continue
		kver=${list##*/modules-removed.}
		if [ -s "$list" ] && [ -f "/lib/modules/$kver/modules.dep" ]; then
			package=$(FILE="lib/modules/$kver/modules.order" awk '
			/^P:/ { p = substr($0, 3) }
			/^F:/ { d = substr($0, 3) }
			/^R:/ && d "/" substr($0, 3) == ENVIRON["FILE"] { print p; exit }' /lib/apk/db/installed)
			say "reinstall ${package:-the kernel} for the modules removed from /lib/modules/$kver"
			if [ -z "$package" ] || ! apk fix --reinstall "$package"; then
				err "apk could not reinstall the modules of $kver (is the repository reachable? try apk update)"
			fi
			{#- apk skips, and exits 0, when the repository no longer has the installed build. #}
			missing=$(while IFS= read -r path; do [ -e "/lib/modules/$kver/$path" ] || echo "$path"; done <"$list" | grep -c . || :)
			if [ "$missing" != 0 ]; then
				err "apk did not bring back $missing modules of $kver: the repository may not have $package at the installed version any more (apk upgrade brings a kernel with every module); $list names them"
			fi
			depmod "$kver" || say "depmod $kver failed"
		fi
		rm -f "$list"
	done
}

{# restore_sshd: the reverse switch, sshd started in the step that stops dropbear. -#}
restore_sshd() {
	if grep -qx sshd "$STATE/started.before" && ! started sshd && started dropbear; then
		say "stopping dropbear and starting sshd in one step"
		(
			trap '' HUP INT TERM
			rc-service dropbear stop
			rc-service sshd start
		) >/dev/null 2>&1 </dev/null || true
		if ! started sshd; then
			rc-service dropbear start >/dev/null 2>&1 </dev/null || true
			err "sshd did not start, so dropbear was started again"
		fi
	fi
}

restore_started() {
	local name
	while IFS= read -r name; do
		if ! started "$name"; then
			say "start $name"
			rc-service "$name" start >/dev/null 2>&1 </dev/null || say "could not start $name"
		fi
	done <"$STATE/started.before"
	for name in /run/openrc/started/*; do
		[ -e "$name" ] || [ -L "$name" ] || continue
		name=${name##*/}
		if ! grep -qx "$name" "$STATE/started.before"; then
			say "stop $name"
			rc-service "$name" stop >/dev/null 2>&1 </dev/null || say "could not stop $name"
		fi
	done
}

main() {
	local add del kver
	[ "$(id -u)" = 0 ] || err "run this as root"
	[ -f "$BACKUP/etc/apk/world" ] || err "no backup in $BACKUP: nothing to undo"
	trap '' HUP
	add=$(lines_missing /etc/apk/world "$BACKUP/etc/apk/world" | tr '\n' ' ')
	del=$(lines_missing "$BACKUP/etc/apk/world" /etc/apk/world | tr '\n' ' ')
	if [ -n "$add" ]; then
		say "install $add"
		# shellcheck disable=SC2086 # one word per world entry
		apk add --quiet $add || err "apk could not install $add (is the repository reachable? try apk update)"
	fi
	restore_files
	restore_runlevels
	restore_sshd
	restore_started
	if [ -n "$del" ]; then
		say "remove $del"
		# shellcheck disable=SC2086 # one word per world entry
		apk del --quiet $del || err "apk could not remove $del"
	fi
	{#- After the last package change: apk fix reads the world file restore_files put back. #}
	restore_modules
	# A diskless host (no installed kernel) has no initramfs of its own: lbu saves instead.
	kver=$(cat "$STATE/kernel-version")
	if [ -n "$kver" ]; then
		say "rebuild the initramfs"
		mkinitfs "$kver" || err "mkinitfs failed: the old initramfs is in place"
	fi
	if [ -e "$STATE/lbu" ]; then
		say "save the files put back to the boot media (lbu commit)"
		lbu commit || err "lbu commit failed: the boot media still has the minimised configuration"
	fi
	rm -f "$STATE/reboot-pending"
	say "done: reboot to boot the host as it was"
}

main "$@" || exit 1
