#!/bin/sh
# prune-modules.sh KVER KEEP_FILE [--dry-run | --count]: written by mingen (rule
# modules-prune); the apk hook runs it for kernels installed later. Keeps in
# /lib/modules/KVER/kernel the modules in /etc/modules, those the initramfs features
# take, and KEEP_FILE's (names or paths), closed under modules.dep and soft
# dependencies; removes the rest, or puts them back if `modprobe -n` then fails.
# Never kept: what /etc/modprobe.d replaces with /bin/true or /bin/false, and what needs it.
# It also removes /boot/System.map-KVER, which nothing reads at run time.
set -eu

kver=$1 keep_file=$2 mode=${3:-apply}
dir=/lib/modules/$kver
aside=$dir.mingen-pruned
list=/var/lib/mingen/modules-removed.$kver

say() {
	printf 'prune-modules: %s\n' "$*" >&2
}

[ -f "$dir/modules.dep" ] || {
	say "no $dir/modules.dep"
	exit 1
}

{# wanted: the names and paths to keep, one a line. -#}
wanted() {
	if [ -f /etc/modules ]; then
		sed 's/#.*//' /etc/modules | awk 'NF { print $1 }'
	fi
	features=$(
		features=''
		if [ -f /etc/mkinitfs/mkinitfs.conf ]; then
			# shellcheck disable=SC1091 # mkinitfs reads its configuration as shell
			. /etc/mkinitfs/mkinitfs.conf
		fi
		printf '%s' "$features"
	)
	for feature in $features; do
		if [ -f "/etc/mkinitfs/features.d/$feature.modules" ]; then
			cat "/etc/mkinitfs/features.d/$feature.modules"
		fi
	done
	cat "$keep_file"
}

{# never_loaded: the modules /etc/modprobe.d replaces with a command that loads nothing. -#}
never_loaded() {
	cat /etc/modprobe.d/*.conf 2>/dev/null |
		awk '$1 == "install" && NF == 3 && ($3 == "/bin/true" || $3 == "/bin/false") { n = $2; gsub(/-/, "_", n); print n }'
}

{# kept WORK: the paths of the modules to keep (as modules.dep names them), one a line. -#}
kept() {
	local softdeps=$dir/modules.softdep
	[ -f "$softdeps" ] || softdeps=/dev/null
	wanted >"$1.wanted"
	never_loaded >"$1.never"
	awk -v wanted_file="$1.wanted" -v never_file="$1.never" -v softdeps="$softdeps" -v dep="$dir/modules.dep" '
	function name_of(path,    n) { n = path; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); return n }
	function never(path,    i, n, d) {
		if (path in blocked) return blocked[path]
		blocked[path] = 0
		if (name_of(path) in never_name) return blocked[path] = 1
		n = split(deps[path], d, " ")
		for (i = 1; i <= n; i++) if (never(d[i])) return blocked[path] = 1
		return 0
	}
	function keep(path,    i, n, d) {
		if ((path in kept) || never(path)) return
		kept[path] = 1
		n = split(deps[path], d, " ")
		for (i = 1; i <= n; i++) keep(d[i])
		n = split(soft[name_of(path)], d, " ")
		for (i = 1; i <= n; i++) if (d[i] in by_name) keep(by_name[d[i]])
	}
	FILENAME == wanted_file { sub(/^[ \t]+/, ""); sub(/[ \t]+$/, ""); if ($0 != "" && $0 !~ /^#/) want[++wanted] = $0; next }
	FILENAME == never_file { never_name[$1] = 1; next }
	FILENAME == dep {
		path = $1; sub(/:$/, "", path)
		paths[path] = 1; by_name[name_of(path)] = path
		deps[path] = ""
		for (i = 2; i <= NF; i++) deps[path] = deps[path] " " $i
		next
	}
	FILENAME == softdeps && $1 == "softdep" {
		n = $2; gsub(/-/, "_", n)
		for (i = 3; i <= NF; i++) if ($i != "pre:" && $i != "post:") { m = $i; gsub(/-/, "_", m); soft[n] = soft[n] " " m }
	}
	END {
		for (w = 1; w <= wanted; w++) {
			item = want[w]
			if (index(item, "/")) {
				re = item
				gsub(/[.+^$()|{}\[\]]/, "\\\\&", re)
				gsub(/\*/, "[^/]*", re)
				gsub(/\?/, "[^/]", re)
				re = "^" re "(/.*)?$"
				for (p in paths) if (p ~ re) keep(p)
			} else {
				n = item; gsub(/-/, "_", n)
				if (n in by_name) keep(by_name[n])
			}
		}
		for (p in kept) print p
	}' "$1.wanted" "$1.never" "$dir/modules.dep" "$softdeps" | sort
}

{# removable: the module files under kernel/ that are not kept, one a line. -#}
removable() {
	kept "$1" >"$1.kept"
	(cd "$dir" && find kernel -type f -name '*.ko*') | sort | comm -23 - "$1.kept"
}

kb_of() {
	(cd "$1" && xargs -r du -k <"$2" 2>/dev/null | awk '{ kb += $1 } END { print kb + 0 }')
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
removable "$work/list" >"$work/remove"
count=$(grep -c . "$work/remove" || :)
kept_count=$(grep -c . "$work/list.kept" || :)
case $mode in
--count)
	printf '%s\n' "$count"
	exit 0
	;;
--dry-run)
	say "would keep $kept_count modules and remove $count ($(kb_of "$dir" "$work/remove") KiB) from $dir"
	exit 0
	;;
esac
mkdir -p "${list%/*}"
# The kernel's symbol map: nothing reads it at run time (the running kernel's symbols
# are in /proc/kallsyms). Undo's `apk fix --reinstall` brings it back with the modules.
if [ -f "/boot/System.map-$kver" ]; then
	rm -f "/boot/System.map-$kver"
	say "removed /boot/System.map-$kver"
fi
if [ "$count" = 0 ]; then
	: >>"$list"
	exit 0
fi
removed_kb=$(kb_of "$dir" "$work/remove")

# Move aside, check, then delete (or put back).
rm -rf "$aside"
while IFS= read -r path; do
	mkdir -p "$aside/${path%/*}" && mv "$dir/$path" "$aside/$path"
done <"$work/remove"
put_back() {
	(cd "$aside" && find . -type f) | while IFS= read -r path; do
		mkdir -p "$dir/${path%/*}" && mv "$aside/$path" "$dir/$path"
	done
	rm -rf "$aside"
	depmod "$kver" || :
}
if ! depmod "$kver"; then
	put_back
	say "depmod failed: every module is back"
	exit 1
fi
failed=''
while IFS= read -r path; do
	name=${path##*/}
	name=${name%%.ko*}
	modprobe -n -q -S "$kver" "$name" 2>/dev/null || failed="$failed $name"
done <"$work/list.kept"
if [ -n "$failed" ]; then
	put_back
	say "after pruning, modprobe could not resolve:$failed; every module is back"
	exit 1
fi
cat "$work/remove" >>"$list"
rm -rf "$aside"
find "$dir/kernel" -depth -type d -empty -delete
say "kept $kept_count modules, removed $count ($removed_kb KiB) from $dir; the list is in $list"
