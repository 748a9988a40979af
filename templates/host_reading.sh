# What the script and the probe read of a host, the same way in both.

# root_disk: the disk holding the root filesystem, without its partition.
root_disk() {
	local dev
	dev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts 2>/dev/null || :)
	dev=${dev#/dev/}
	case $dev in
	nvme*p[0-9]*) dev=${dev%p*} ;;
	nvme*) ;;
	*) dev=${dev%%[0-9]*} ;;
	esac
	printf '%s\n' "$dev"
}

# sshd_config_lines FILE: FILE with its Include lines replaced by the files they name.
sshd_config_lines() {
	local line file
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		[Ii]nclude[[:space:]]*)
			# shellcheck disable=SC2086 # the Include value is a glob to expand
			for file in ${line#*[[:space:]]}; do
				case $file in
				/*) ;;
				*) file=/etc/ssh/$file ;;
				esac
				if [ -f "$file" ]; then
					cat "$file"
				fi
			done
			;;
		*) printf '%s\n' "$line" ;;
		esac
	done <"$1"
}

# sshd_settings: sshd's effective port, listenaddress, passwordauthentication and
# permitrootlogin, one `keyword value` a line (first value wins, as in sshd).
sshd_settings() {
	sshd_config_lines /etc/ssh/sshd_config | awk '
	{ sub(/^[ \t]+/, ""); sub(/=/, " ") }
	/^#/ || NF < 2 { next }
	{ k = tolower($1); v = $2 }
	k == "match" { exit }
	k == "port" || k == "listenaddress" { print k, v; next }
	(k == "passwordauthentication" || k == "permitrootlogin") && !(k in seen) { seen[k] = 1; print k, tolower(v) }'
}

# interfaces_lines: /etc/network/interfaces with its `source` and
# `source-directory` lines replaced by the files they name, as ifupdown reads them.
interfaces_lines() {
	local line file
	while IFS= read -r line || [ -n "$line" ]; do
		case $line in
		source[[:space:]]* | source-directory[[:space:]]*)
			file=${line#*[[:space:]]}
			case $file in
			/*) ;;
			*) file=/etc/network/$file ;;
			esac
			case $line in
			source-directory*) file="$file/*" ;;
			esac
			# shellcheck disable=SC2086 # the value is a glob to expand
			for file in $file; do
				if [ -f "$file" ]; then
					cat "$file"
				fi
			done
			;;
		*) printf '%s\n' "$line" ;;
		esac
	done </etc/network/interfaces
}
