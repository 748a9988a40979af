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
	# The first time (the stock host): the modules.dep lines of the loaded modules, for
	# `load` after mingen has removed those that need a module it blacklists.
	[ -e "$DEPS_BEFORE" ] || LOADED=$(cut -d ' ' -f 1 /proc/modules | tr '\n' ' ') awk '
		BEGIN { k = split(ENVIRON["LOADED"], l, " "); for (i = 1; i <= k; i++) { m = l[i]; gsub(/-/, "_", m); loaded[m] = 1 } }
		{ n = $1; sub(/:$/, "", n); sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); if (n in loaded) print }' /lib/modules/*/modules.dep >"$DEPS_BEFORE"
	printf 'modules_kb %s\n' "$(du -sk /lib/modules | cut -f1)"
	printf 'modules_count %s\n' "$(find /lib/modules -type f -name '*.ko*' | grep -c .)"
	printf 'disk_used_kb %s\n' "$(df -k / | awk 'NR == 2 { print $3 }')"
	# The bench's own files, which a real host does not have: the image's guest agent and
	# what the tests upload to /root.
	printf 'bench_kb %s\n' "$(du -ck /usr/local/bin/quicksand-guest-agent /root/*.sh /root/*.out "$DEPS_BEFORE" 2>/dev/null | awk 'END { print $1 + 0 }')"
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

# needed_before M: `insmod PATH` for each module M needed on the stock host (modules.dep,
# recursively), as modprobe -D says it.
needed_before() {
	NAME=$1 awk '
	function name_of(p) { sub(/.*\//, "", p); sub(/\.ko.*$/, "", p); gsub(/-/, "_", p); return p }
	{ p = $1; sub(/:$/, "", p); deps[name_of(p)] = $0 }
	function walk(n,    d, i, k) { if (n in seen) return; seen[n] = 1; k = split(deps[n], d, " "); for (i = 2; i <= k; i++) print "insmod " d[i]; }
	END { walk(ENVIRON["NAME"]) }' "$DEPS_BEFORE" 2>/dev/null
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
		# What it needs: modprobe -D, or, where mingen removed it, modules.dep from before.
		for dependency in $({ modprobe -D "$name" 2>/dev/null || needed_before "$name"; } | awk '$1 == "insmod" { n = $2; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); print n }'); do
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

DEPS_BEFORE=/root/modules-deps.before

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
