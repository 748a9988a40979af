#!/bin/sh
# shellcheck shell=busybox
# state.sh: what a run of the script could change on the guest, one line per item, sorted:
# every file, directory and link on the root filesystem (type, mode, owner, size, mtime,
# link target), the world file, the installed packages, the runlevels and the started
# services. Left out: /tmp and /var/tmp (scratch), /var/log (logs grow), and root's shell
# history. Other filesystems (/proc, /sys, /dev, /run) are not crossed.

main() {
	find / -xdev \( -path /tmp -o -path /var/tmp -o -path /var/log -o -path /root/.ash_history \) -prune -o -print0 |
		xargs -0 stat -c 'file %N %F %a %u:%g %s %Y' | sort
	sed 's/^/world /' /etc/apk/world
	apk info -v --no-network 2>/dev/null | sort | sed 's/^/installed /'
	for level in /etc/runlevels/*; do
		for service in "$level"/*; do
			[ -e "$service" ] || [ -L "$service" ] || continue
			printf 'runlevel %s %s\n' "${level##*/}" "${service##*/}"
		done
	done
	for service in /run/openrc/started/*; do
		[ -e "$service" ] || [ -L "$service" ] || continue
		printf 'started %s\n' "${service##*/}"
	done
}

main "$@"
