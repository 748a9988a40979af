# What the script and the probe read of a host, the same way in both.

{# root_disk: the disk holding the root filesystem, without its partition. -#}
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

{# root_fstype: the type of the filesystem mounted at / (tmpfs on a diskless host). -#}
root_fstype() {
	awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts 2>/dev/null || :
}

{# modloop: `DEVICE TYPE` of the modloop mounted at /.modloop, where a diskless
   host's kernel modules come from; nothing if none is mounted. -#}
modloop() {
	awk '$2 == "/.modloop" { print $1, $3 }' /proc/mounts 2>/dev/null || :
}

{# boot_loaders: the boot loaders whose files this host has, one a line: extlinux
   (/boot/extlinux.conf), grub (/boot/grub/grub.cfg), efi-stub (/boot/startup.nsh). -#}
boot_loaders() {
	[ ! -f /boot/extlinux.conf ] || echo extlinux
	[ ! -f /boot/grub/grub.cfg ] || echo grub
	[ ! -f /boot/startup.nsh ] || echo efi-stub
}

{# sshd_config_lines FILE: FILE with its Include lines replaced by the files they name. -#}
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
				[ ! -f "$file" ] || cat "$file"
			done
			;;
		*) printf '%s\n' "$line" ;;
		esac
	done <"$1"
}

{# interfaces_lines: /etc/network/interfaces with its `source` and `source-directory`
   lines replaced by the files they name, as ifupdown reads them. -#}
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
				[ ! -f "$file" ] || cat "$file"
			done
			;;
		*) printf '%s\n' "$line" ;;
		esac
	done </etc/network/interfaces
}

{# sshd_conf: how OpenRC starts sshd, from /etc/conf.d/sshd read as Alpine's init script
   reads it: the config file (cfgfile, else SSHD_CONFIG or SSHD_CONFDIR) on the first
   line, the extra arguments (command_args, else SSHD_OPTS) on the second. -#}
sshd_conf() {
	(
		cfgfile='' SSHD_CONFIG='' SSHD_CONFDIR='' command_args='' SSHD_OPTS=''
		if [ -f /etc/conf.d/sshd ]; then
			# shellcheck disable=SC1091 # the host's own file, sourced as OpenRC sources it
			. /etc/conf.d/sshd >/dev/null 2>&1 || :
		fi
		printf '%s\n%s\n' "${cfgfile:-${SSHD_CONFIG:-${SSHD_CONFDIR:-/etc/ssh}/sshd_config}}" "${command_args:-${SSHD_OPTS:-}}"
	)
}

sshd_cfgfile() {
	sshd_conf | sed -n 1p
}

sshd_args() {
	sshd_conf | sed -n 2p
}

{# sshd_settings: sshd's settings as OpenRC starts it: the arguments from /etc/conf.d/sshd
   (`-p`, `-o`, `-f`) over its config file, Includes read in place. One `keyword value...`
   a line, keywords in lower case: every `port` and `listenaddress`, the first value of
   any other keyword (as sshd takes it), `match` when a Match block follows, and
   `argument ARG` for each argument that is not `-p`, `-o` or `-f`. -#}
sshd_settings() {
	local cfg args
	cfg=$(sshd_cfgfile)
	args=$(sshd_args)
	{#- A `-f FILE` argument names the config file instead. #}
	cfg=$(ARGS=$args CFG=$cfg awk 'BEGIN {
		n = split(ENVIRON["ARGS"], a, " "); f = ENVIRON["CFG"]
		for (i = 1; i <= n; i++) if (a[i] == "-f") f = a[++i]; else if (a[i] ~ /^-f./) f = substr(a[i], 3)
		print f }')
	[ -f "$cfg" ] || return 0
	sshd_config_lines "$cfg" | ARGS=$args awk '
	function take(k, v) {
		if (k == "port") { if (!cmdport) print k, v; return }
		if (k == "listenaddress") { print k, v; return }
		if (k in seen) return
		seen[k] = 1
		if (k == "passwordauthentication" || k == "permitrootlogin") v = tolower(v)
		print k, v
	}
	BEGIN {
		n = split(ENVIRON["ARGS"], a, " ")
		for (i = 1; i <= n; i++) {
			w = a[i]
			if (w == "-p" || w == "-o" || w == "-f") w = w a[++i]
			c = substr(w, 1, 2); v = substr(w, 3)
			if (c == "-o") { k = v; sub(/=.*/, "", k); sub(/^[^=]*=/, "", v); k = tolower(k) }
			if (c == "-p" || (c == "-o" && k == "port")) { print "port", v; cmdport = 1 }
			else if (c == "-o") take(k, v)
			else if (c != "-f") print "argument", w
		}
	}
	{ sub(/^[ \t]+/, ""); sub(/=/, " ") }
	/^#/ || NF < 2 { next }
	{ k = tolower($1); v = $2; for (i = 3; i <= NF; i++) v = v " " $i }
	k == "match" { print "match"; exit }
	{ take(k, v) }'
}

{# sshd_setting SETTINGS KEYWORD: the first word of each KEYWORD line of sshd_settings' output. -#}
sshd_setting() {
	printf '%s\n' "$1" | awk -v k="$2" '$1 == k { print $2 }'
}

{# sshd_uncarried SETTINGS: what in sshd_settings' output dropbear cannot carry (dropping it
   would let in more than before, or lock out who logs in through it), one a line. -#}
sshd_uncarried() {
	printf '%s\n' "$1" | awk '
	{ v = $0; sub(/^[^ ]+ /, "", v) }
	$1 == "authorizedkeysfile" && v != ".ssh/authorized_keys" && v != ".ssh/authorized_keys .ssh/authorized_keys2" && v != "%h/.ssh/authorized_keys" {
		print "AuthorizedKeysFile " v " (dropbear reads only ~/.ssh/authorized_keys)"
	}
	$1 == "trustedusercakeys" && tolower($2) != "none" { print "TrustedUserCAKeys " $2 " (dropbear has no certificates)" }
	$1 == "authorizedkeyscommand" && tolower($2) != "none" { print "AuthorizedKeysCommand " $2 }
	$1 == "authenticationmethods" && tolower($2) != "any" { print "AuthenticationMethods " $2 }
	$1 ~ /^(allow|deny)(users|groups)$/ {
		k = $1; sub(/^allow/, "Allow", k); sub(/^deny/, "Deny", k); sub(/users$/, "Users", k); sub(/groups$/, "Groups", k)
		print k " " v " (dropping it lets in more users than before)"
	}
	$1 == "match" { print "a Match block (dropbear has no per-user settings)" }
	$1 == "argument" { print "the argument " $2 " in /etc/conf.d/sshd" }'
}

{# login_accounts: `NAME SHELL HOME` for each account that can log in: it has a usable
   password (not locked, `!` or `*`) or an authorized_keys file. -#}
login_accounts() {
	awk -F: 'FILENAME == "/etc/shadow" { if ($2 !~ /^[!*]/) pw[$1] = 1; next }
	$7 != "" && $7 !~ /(nologin|false)$/ { print $1, $7, $6, ($1 in pw) ? "password" : "" }' \
		/etc/shadow /etc/passwd 2>/dev/null |
		while read -r name shell home password; do
			if [ -n "$password" ] || [ -s "$home/.ssh/authorized_keys" ]; then
				printf '%s %s %s\n' "$name" "$shell" "$home"
			fi
		done
}

{# owner_of PATH: the installed package that holds PATH (apk's database, offline). -#}
owner_of() {
	FILE=${1#/} awk '
	/^P:/ { p = substr($0, 3) }
	/^F:/ { d = substr($0, 3) }
	/^R:/ && d "/" substr($0, 3) == ENVIRON["FILE"] { print p; exit }' /lib/apk/db/installed
}

{# root_can_log_in: root can log in over SSH without sudo or doas: sshd (or dropbear)
   lets root in, and root has a key line with no forced command, or a password where
   passwords are allowed. -#}
root_can_log_in() {
	local settings root password shadow opts
	if command -v sshd >/dev/null 2>&1; then
		settings=$(sshd_settings)
		root=$(sshd_setting "$settings" permitrootlogin)
		password=$(sshd_setting "$settings" passwordauthentication)
		root=${root:-prohibit-password}
		[ "$root" != without-password ] || root=prohibit-password
	else
		opts=" $(sed -n 's/^[[:space:]]*DROPBEAR_OPTS=//p' /etc/conf.d/dropbear 2>/dev/null | tail -n 1) "
		root=yes password=yes
		case $opts in *" -g "*) root=prohibit-password ;; esac
		case $opts in *" -w "*) root=no ;; esac
		case $opts in *" -s "*) password=no ;; esac
	fi
	[ "$root" != no ] || return 1
	if [ "$root" = yes ] && [ "${password:-yes}" = yes ]; then
		shadow=$(awk -F: '$1 == "root" { print $2 }' /etc/shadow 2>/dev/null)
		case $shadow in
		'' | '!'* | '*'*) ;;
		*) return 0 ;;
		esac
	fi
	[ "$root" = yes ] || [ "$root" = prohibit-password ] || return 1
	awk '
	/^[ \t]*(#|$)/ { next }
	$1 ~ /^(ssh-|ecdsa-|sk-)/ { found = 1; exit }
	$1 !~ /(^|,)command=/ && $2 ~ /^(ssh-|ecdsa-|sk-)/ { found = 1; exit }
	END { exit !found }' /root/.ssh/authorized_keys 2>/dev/null
}
