#!/bin/sh
# shellcheck shell=busybox
# measure.sh SETTLE: run detached on the guest. Waits until the gettys on ttyS0
# and tty1 run (the end of the boot), SETTLE seconds more, then prints RAM, disk,
# /lib/modules (KiB and module files), loaded modules and userspace processes as `key value` lines and `end`. Processes of
# this script's own session (started with setsid) are left out.

# procs: `sid command line` of each userspace process.
procs() {
	local dir cmd sid
	for dir in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
		[ -n "$cmd" ] || continue
		sid=$(sed 's/.*) //' "$dir/stat" 2>/dev/null | cut -d' ' -f4) || continue
		printf '%s %s\n' "$sid" "${cmd% }"
	done
}

gettys_up() {
	local list
	list=$(procs)
	printf '%s\n' "$list" | grep -q 'getty .*ttyS0' && printf '%s\n' "$list" | grep -q 'getty .*tty1$'
}

main() {
	local settle=${1:-30} waited=0 me
	me=$(sed 's/.*) //' "/proc/$$/stat" | cut -d' ' -f4)
	until gettys_up; do
		if [ "$waited" -ge 600 ]; then
			echo "error the gettys on ttyS0 and tty1 did not start within 600 s"
			echo end
			return 1
		fi
		sleep 2
		waited=$((waited + 2))
	done
	echo "gettys_after $waited"
	sleep "$settle"
	free | awk '$1 == "Mem:" { print "free_used", $3 }'
	awk '$1 == "MemTotal:" { t = $2 } $1 == "MemAvailable:" { a = $2 } END { print "mem_total", t; print "mem_available", a }' /proc/meminfo
	# The guest's physical RAM, as the firmware gave it: what the kernel reserves
	# before MemTotal (its image, the KFENCE pool) counts against the host too.
	awk '/System RAM/ { split($1, r, "-"); kb += (("0x" r[2]) - ("0x" r[1]) + 1) / 1024 } END { printf "system_ram %d\n", kb }' /proc/iomem
	df -Pk / | awk 'NR == 2 { print "disk_used", $3 }'
	printf 'modules_kb %s\n' "$(du -sk /lib/modules | cut -f1)"
	printf 'module_files %s\n' "$(find /lib/modules -type f -name '*.ko*' | grep -c .)"
	awk '{ print "module", $1 }' /proc/modules
	procs | awk -v me="$me" '$1 != me { $1 = ""; sub(/^ /, ""); print "process", $0 }'
	echo end
}

main "$@"
