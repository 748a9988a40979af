#!/bin/sh
# shellcheck shell=busybox
# modules.sh: the guest's modules and disk, for the bench (issue 9), one item a line.
#   sh modules.sh figures      /lib/modules in KiB and module files, disk used, what of it
#                              the bench put there (bench_kb), loaded modules
#   sh modules.sh inventory    the installed packages, and every module file with its md5sum
#   sh modules.sh modprobe M.. each module M that mingen does not blacklist, loaded with
#                              modprobe: `loads M`, `fails M: WHY`, or `blacklisted M` (also
#                              when M needs a module mingen blacklists)

figures() {
	printf 'modules_kb %s\n' "$(du -sk /lib/modules | cut -f1)"
	printf 'modules_count %s\n' "$(find /lib/modules -type f -name '*.ko*' | grep -c .)"
	printf 'disk_used_kb %s\n' "$(df -k / | awk 'NR == 2 { print $3 }')"
	# The bench's own files, which a real host does not have: the image's guest agent and
	# what the tests upload to /root.
	printf 'bench_kb %s\n' "$(du -ck /usr/local/bin/quicksand-guest-agent /root/*.sh /root/*.out 2>/dev/null | awk 'END { print $1 + 0 }')"
	cut -d ' ' -f 1 /proc/modules | sort | sed 's/^/loaded /'
}

inventory() {
	apk info -v --no-network 2>/dev/null | sort | sed 's/^/installed /'
	(cd /lib/modules && find . -type f -name '*.ko*' -exec md5sum {} + | sort -k 2 | sed 's/^/module /')
}

# blacklisted: the modules /etc/modprobe.d blacklists or replaces (`install M /bin/true`).
blacklisted() {
	cat /etc/modprobe.d/*.conf 2>/dev/null |
		awk '$1 == "blacklist" || ($1 == "install" && $3 == "/bin/true") { n = $2; gsub(/-/, "_", n); print n }'
}

load() {
	local skip name why dependency
	skip=$(blacklisted | tr '\n' ' ')
	for name in "$@"; do
		case " $skip " in
		*" $name "*)
			printf 'blacklisted %s\n' "$name"
			continue
			;;
		esac
		# A module that needs one mingen blacklists (bochs needs drm) cannot load: by design.
		for dependency in $(modprobe -D "$name" 2>/dev/null | awk '$1 == "insmod" { n = $2; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); print n }'); do
			case " $skip " in
			*" $dependency "*)
				printf 'blacklisted %s (it needs %s)\n' "$name" "$dependency"
				continue 2
				;;
			esac
		done
		if why=$(modprobe "$name" 2>&1) && grep -q "^$name " /proc/modules; then
			printf 'loads %s\n' "$name"
		else
			printf 'fails %s: %s\n' "$name" "$(printf '%s' "${why:-not in /proc/modules}" | tr '\n' ' ')"
		fi
	done
}

case ${1:-} in
figures) figures ;;
inventory) inventory ;;
modprobe)
	shift
	load "$@"
	;;
*)
	echo "usage: sh modules.sh figures | inventory | modprobe MODULE..." >&2
	exit 2
	;;
esac
