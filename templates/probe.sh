#!/bin/sh
# probe.sh: read an Alpine host's facts for mingen {{ version }}, changing nothing.
#
# Run it on the host, as root (`sshd -T` needs root):
#   ssh root@host sh -s < probe.sh > host.toml
# It prints the facts as TOML that `mingen --facts host.toml` reads unchanged.
# What it cannot decide is a comment starting with `# CHECK:` that says what to
# look at, never a guessed value; a fact left out takes mingen's default.
#
# It only reads: files under /etc, /boot, /proc and /sys, `apk info`,
# `rc-service NAME status` and `sshd -T`. Everything else it would need is
# optional: a missing tool makes it read files instead. Diagnostics go to stderr.

set -eu

# ---------------------------------------------------------------- vocabulary

say() {
	printf 'probe: %s\n' "$*" >&2 || true
}

err() {
	say "error: $*"
	exit 1
}

have() {
	command -v "$1" >/dev/null 2>&1
}

# tool NAME: the path of command NAME, on PATH or in /sbin or /usr/sbin (a
# user's PATH may lack them); nothing if it is not installed.
tool() {
	local dir
	if command -v "$1" 2>/dev/null; then
		return 0
	fi
	for dir in /sbin /usr/sbin; do
		if [ -x "$dir/$1" ]; then
			printf '%s\n' "$dir/$1"
			return 0
		fi
	done
	return 0
}

# note TEXT: one TOML comment line (printable ASCII only, whatever the host holds).
note() {
	printf '# %s\n' "$(printf '%s' "$*" | tr '\n\t' '  ' | tr -cd ' -~')"
}

# check TEXT: a comment that asks for a decision.
check() {
	note "CHECK: $*"
}

# fact KEY VALUE: one fact; VALUE is one of the values mingen allows.
fact() {
	printf '%s = "%s"\n' "$1" "$2"
}

# first_line FILE: FILE's first line, or nothing if it cannot be read.
first_line() {
	head -n 1 "$1" 2>/dev/null || :
}

# ssh_note TEXT: a line for the ssh section (TEXT starting with `!` is a check).
ssh_note() {
	SSH_NOTES="$SSH_NOTES$1
"
}

# notes TEXT: each line of TEXT as a comment (lines starting with `!` as checks).
notes() {
	local line
	printf '%s' "$1" | while IFS= read -r line; do
		case $line in
		'!'*) check "${line#!}" ;;
		?*) note "$line" ;;
		esac
	done
}

# started NAME: OpenRC says service NAME is started.
started() {
	if [ -n "$RC_SERVICE" ]; then
		"$RC_SERVICE" "$1" status >/dev/null 2>&1
	else
		[ -L "/run/openrc/started/$1" ] || [ -e "/run/openrc/started/$1" ]
	fi
}

# runlevels_of NAME: the runlevels service NAME is in, separated by spaces.
runlevels_of() {
	local link level out=""
	for link in /etc/runlevels/*/"$1"; do
		if [ -L "$link" ] || [ -e "$link" ]; then
			level=${link%/*}
			out="$out ${level##*/}"
		fi
	done
	printf '%s' "${out# }"
}

# service_state NAME: "started", "in runlevel(s) X" or "stopped and in no runlevel".
service_state() {
	local levels
	levels=$(runlevels_of "$1")
	if started "$1"; then
		printf 'started%s' "${levels:+, in runlevel(s) $levels}"
	elif [ -n "$levels" ]; then
		printf 'stopped, in runlevel(s) %s' "$levels"
	else
		printf 'stopped and in no runlevel'
	fi
}

# installed NAME: package NAME is installed (apk info -e, else apk's database).
installed() {
	if [ -n "$APK" ]; then
		"$APK" info -e "$1" >/dev/null 2>&1
	else
		grep -qxF -e "P:$1" /lib/apk/db/installed 2>/dev/null
	fi
}

# world_names: the names in /etc/apk/world, without versions or tags.
world_names() {
	awk '{ for (i = 1; i <= NF; i++) { n = $i; sub(/[<>=~@].*/, "", n); print n } }' /etc/apk/world 2>/dev/null || :
}

# ---------------------------------------------------------------- the disk and sshd, as the script reads them

{% include "host_reading.sh" %}

# sshd_effective: the same four settings as sshd itself has them (`sshd -T`, with
# the config file and arguments OpenRC starts it with).
sshd_effective() {
	local out
	# shellcheck disable=SC2046 # the arguments from /etc/conf.d/sshd, one word each, as OpenRC passes them
	out=$("$SSHD" -T -f "$(sshd_cfgfile)" $(sshd_args) 2>/dev/null) || return 1
	printf '%s\n' "$out" | awk '
	{ k = tolower($1) }
	k == "port" || k == "listenaddress" { print k, $2 }
	(k == "passwordauthentication" || k == "permitrootlogin") && !(k in seen) { seen[k] = 1; print k, tolower($2) }'
}

# setting SETTINGS KEYWORD DEFAULT: the first value of KEYWORD, or DEFAULT.
setting() {
	local value
	value=$(printf '%s\n' "$1" | awk -v k="$2" '$1 == k { print $2; exit }')
	[ "$value" != without-password ] || value=prohibit-password
	printf '%s' "${value:-$3}"
}

# setting_ports SETTINGS SORT_FLAGS: the port values, sorted, separated by spaces (default 22).
setting_ports() {
	local ports
	ports=$(printf '%s\n' "$1" | awk '$1 == "port" { print $2 }' | sort "$2" | tr '\n' ' ')
	ports=${ports% }
	printf '%s' "${ports:-22}"
}

# listen_hosts SETTINGS: the listenaddress values without their port
# (0.0.0.0:22 -> 0.0.0.0, [::]:22 -> ::), one a line.
listen_hosts() {
	printf '%s\n' "$1" | awk '
	$1 != "listenaddress" { next }
	{
		a = $2
		if (substr(a, 1, 1) == "[") { a = substr(a, 2); sub(/\].*/, "", a) }
		else if (gsub(/:/, ":", a) == 1) sub(/:[0-9]*$/, "", a)
		print a
	}'
}

# ---------------------------------------------------------------- what the probe finds

APK=
RC_SERVICE=
SSHD=
IP=
INSTALL=sys
HYPERVISOR=none
HYPERVISOR_TEXT=
XEN_MODE=
SSH_FROM=
SSH_SERVER=dropbear
SSH_PORTS=22
SSH_PASSWORD=yes
SSH_ROOT=prohibit-password
SSH_LISTEN6=
SSH_NOTES=

detect_hypervisor() {
	local type vendor product clock flag=no seen=""
	type=$(first_line /sys/hypervisor/type)
	vendor=$(first_line /sys/class/dmi/id/sys_vendor)
	product=$(first_line /sys/class/dmi/id/product_name)
	clock=$(first_line /sys/devices/system/clocksource/clocksource0/current_clocksource)
	if awk '$1 == "flags" && / hypervisor( |$)/ { found = 1 } END { exit !found }' /proc/cpuinfo 2>/dev/null; then
		flag=yes
	fi
	[ -z "$type" ] || seen="$seen, /sys/hypervisor/type $type"
	[ -z "$vendor" ] || seen="$seen, DMI vendor $vendor"
	[ -z "$product" ] || seen="$seen, DMI product $product"
	[ -z "$clock" ] || seen="$seen, clocksource $clock"
	[ "$flag" = no ] || seen="$seen, cpuinfo flag hypervisor"
	HYPERVISOR_TEXT=${seen#, }
	case "$type|$vendor|$product|$clock" in
	xen\|* | *Xen* | *"HVM domU"* | *\|xen)
		HYPERVISOR=xen
		# An HVM guest has firmware tables (DMI); a PV guest has none.
		if [ -n "$vendor$product" ]; then
			XEN_MODE=HVM
		else
			XEN_MODE=PV
		fi
		;;
	*QEMU* | *KVM* | *\|kvm-clock) HYPERVISOR=kvm ;;
	*)
		if [ "$flag" = yes ] || [ -n "$vendor$clock" ]; then
			HYPERVISOR=other
		fi
		;;
	esac
}

# detect_install: INSTALL is diskless where the root is a tmpfs and a modloop is
# mounted (Alpine's diskless mode), other where the root is a tmpfs without one.
detect_install() {
	if [ "$(root_fstype)" = tmpfs ]; then
		if [ -n "$(modloop)" ]; then
			INSTALL=diskless
		else
			INSTALL=other
		fi
	fi
}

# read_ssh: the SSH server's settings, from sshd (sshd -T, else its config) or,
# on a host where dropbear runs instead, from DROPBEAR_OPTS.
read_ssh() {
	local sshd_up=no dropbear_up=no
	if started sshd; then
		sshd_up=yes
	fi
	if started dropbear; then
		dropbear_up=yes
	fi
	if [ -n "$SSHD" ] && { [ "$sshd_up" = yes ] || [ "$dropbear_up" = no ]; }; then
		read_sshd "$sshd_up"
	elif [ -f /etc/conf.d/dropbear ] && { [ "$dropbear_up" = yes ] || installed dropbear; }; then
		read_dropbear "$dropbear_up"
	else
		SSH_FROM=
	fi
}

read_sshd() {
	local config="" effective="" cfg_ports cfg_password cfg_root cfg_listen listen host opts
	if [ "$1" = no ]; then
		ssh_note "sshd is installed but not started"
	fi
	if [ ! -f "$(sshd_cfgfile)" ]; then
		SSH_FROM="sshd (no $(sshd_cfgfile))"
		SSH_SERVER=openssh
		ssh_note "!/etc/ssh/sshd_config is missing: its settings cannot be carried to dropbear (the script's preflight stops on that), so OpenSSH stays"
		if [ "$(id -u)" = 0 ] && effective=$(sshd_effective) && [ -n "$effective" ]; then
			SSH_FROM="sshd -T"
		else
			return 0
		fi
	else
		config=$(sshd_settings)
		if [ "$(id -u)" = 0 ] && effective=$(sshd_effective) && [ -n "$effective" ]; then
			SSH_FROM="sshd -T"
		else
			if [ "$(id -u)" != 0 ]; then
				say "not root: reading /etc/ssh/sshd_config instead of \`sshd -T\`"
			else
				say "\`sshd -T\` failed: reading /etc/ssh/sshd_config instead"
			fi
			SSH_FROM=/etc/ssh/sshd_config
			effective=$config
		fi
	fi
	SSH_PORTS=$(setting_ports "$effective" -nu)
	SSH_PASSWORD=$(setting "$effective" passwordauthentication yes)
	SSH_ROOT=$(setting "$effective" permitrootlogin prohibit-password)
	listen=""
	for host in $(listen_hosts "$effective"); do
		case $host in
		0.0.0.0) ;;
		::) SSH_LISTEN6="$SSH_LISTEN6 [::]" ;;
		*:*) SSH_LISTEN6="$SSH_LISTEN6 $host" && listen="$listen $host" ;;
		*) listen="$listen $host" ;;
		esac
	done
	SSH_LISTEN6=${SSH_LISTEN6# }

	case $SSH_PASSWORD in
	yes | no) ;;
	*)
		SSH_SERVER=openssh
		ssh_note "!sshd has PasswordAuthentication $SSH_PASSWORD, which mingen does not know: OpenSSH stays"
		;;
	esac
	case $SSH_ROOT in
	yes | no | prohibit-password) ;;
	*)
		SSH_SERVER=openssh
		ssh_note "!sshd has PermitRootLogin $SSH_ROOT, which dropbear cannot carry: OpenSSH stays"
		;;
	esac
	if [ -n "$listen" ]; then
		SSH_SERVER=openssh
		ssh_note "!sshd listens only on${listen} (ListenAddress), which mingen does not carry to dropbear: OpenSSH stays"
	fi
	opts=$(sshd_uncarried "$config")
	if [ -n "$opts" ]; then
		SSH_SERVER=openssh
		ssh_note "!sshd has $(printf '%s\n' "$opts" | awk '{ printf "%s%s", sep, $0; sep = "; " }'), which dropbear cannot carry: OpenSSH stays"
	fi
	[ -n "$config" ] || return 0

	# The script's preflight reads sshd_config, not sshd -T: where the two
	# disagree it would stop, so OpenSSH stays.
	cfg_ports=$(setting_ports "$config" -n)
	cfg_password=$(setting "$config" passwordauthentication yes)
	cfg_root=$(setting "$config" permitrootlogin prohibit-password)
	cfg_listen=$(printf '%s\n' "$config" | awk '$1 == "listenaddress" && $2 != "0.0.0.0" && $2 != "::" { printf " %s", $2 }')
	if [ -n "$cfg_listen" ] && [ -z "$listen" ]; then
		SSH_SERVER=openssh
		ssh_note "!/etc/ssh/sshd_config has ListenAddress${cfg_listen}; the script carries only 0.0.0.0 and :: (written so) to dropbear and its preflight stops on anything else: OpenSSH stays"
	fi
	if [ "$cfg_ports|$cfg_password|$cfg_root" != "$SSH_PORTS|$SSH_PASSWORD|$SSH_ROOT" ]; then
		SSH_SERVER=openssh
		ssh_note "!sshd -T says port(s) $SSH_PORTS, PasswordAuthentication $SSH_PASSWORD, PermitRootLogin $SSH_ROOT, but /etc/ssh/sshd_config read the way the script reads it says port(s) $cfg_ports, $cfg_password, $cfg_root (Match blocks, nested Include?): the script's preflight would stop, so OpenSSH stays until they agree"
	fi
}

read_dropbear() {
	local opts found word
	SSH_FROM=/etc/conf.d/dropbear
	ssh_note "dropbear runs, not sshd (a host the script already ran on?): the settings are read back from DROPBEAR_OPTS in /etc/conf.d/dropbear"
	if [ "$1" = no ]; then
		ssh_note "!dropbear is installed but not started, and there is no sshd: check how you log in"
	fi
	opts=$(sed -n 's/^[[:space:]]*DROPBEAR_OPTS=//p' /etc/conf.d/dropbear | tail -n 1 | tr -d "\"'")
	# One finding a line: `port [ADDR:]PORT`, `flag s|g|w`, `other OPTION`.
	found=$(printf '%s\n' "$opts" | awk '
	{
		for (i = 1; i <= NF; i++) {
			w = $i
			if (substr(w, 1, 1) != "-") { print "other", w; continue }
			for (j = 2; j <= length(w); j++) {
				c = substr(w, j, 1)
				if (c == "p" || index("brPWKITc", c)) {
					v = substr(w, j + 1)
					if (v == "") v = $(++i)
					if (c == "p") print "port", v
					else print "other", "-" c " " v
					break
				}
				if (c == "s" || c == "g" || c == "w") print "flag", c
				else print "other", "-" c
			}
		}
	}')
	SSH_PORTS=$(printf '%s\n' "$found" | awk '$1 == "port" { n = $2; sub(/.*:/, "", n); print n }' | sort -nu | tr '\n' ' ')
	SSH_PORTS=${SSH_PORTS% }
	SSH_PORTS=${SSH_PORTS:-22}
	SSH_PASSWORD=yes
	SSH_ROOT=yes
	for word in $(printf '%s\n' "$found" | awk '$1 == "flag" { print $2 }'); do
		case $word in
		s) SSH_PASSWORD=no ;;
		g) [ "$SSH_ROOT" = no ] || SSH_ROOT=prohibit-password ;;
		w) SSH_ROOT=no ;;
		esac
	done
	word=$(printf '%s\n' "$found" | awk '$1 == "port" && index($2, ":") { a = $2; sub(/:[^:]*$/, "", a); if (a != "0.0.0.0") printf " %s", $2 }')
	if [ -n "$word" ]; then
		ssh_note "!dropbear listens on${word}: the facts carry ports only"
	fi
	word=$(printf '%s\n' "$found" | awk '$1 == "other" { $1 = ""; printf "%s", $0 }')
	if [ -n "$word" ]; then
		ssh_note "DROPBEAR_OPTS also holds${word}, which the facts do not carry"
	fi
}

# ---------------------------------------------------------------- one section per fact

header() {
	local name
	name=$(first_line /etc/hostname)
	note "Facts of ${name:-this host}, read by mingen {{ version }} probe.sh."
	note "Read every comment, decide each CHECK, then: mingen --facts FILE > minimise.sh"
	note "The targets: $(known_targets | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
}

# known_targets: each target with its Alpine release, one a line.
known_targets() {
{%- for (id, release) in targets %}
	printf '%s (Alpine %s)\n' {{ id|sh }} {{ release|sh }}
{%- endfor %}
}

# targets_for RELEASE: the targets for Alpine RELEASE (3.23.1 is 3.23), one a line.
targets_for() {
{%- for (id, release) in targets %}
	case $1 in {{ release|sh }} | {{ release|sh }}.*) printf '%s\n' {{ id|sh }} ;; esac
{%- endfor %}
}

host_section() {
	local gettys consoles loaders count
	printf '\n'
	case $HYPERVISOR in
	kvm)
		note "hypervisor: KVM ($HYPERVISOR_TEXT)"
		fact hypervisor kvm
		;;
	xen)
		note "hypervisor: Xen, $XEN_MODE guest ($HYPERVISOR_TEXT): its disk and network drivers are built into linux-virt, and the virtio-only steps are skipped"
		fact hypervisor xen
		;;
	other) check "hypervisor: not KVM or Xen, or not recognised ($HYPERVISOR_TEXT): hypervisor is left out (kvm, the default); the targets are for KVM and Xen guests" ;;
	*) note "hypervisor: none recognised (no /sys/hypervisor/type, DMI vendor, clocksource or cpuinfo flag); hypervisor is left out (kvm, the default)" ;;
	esac

	loaders=$(boot_loaders | tr '\n' ' ')
	loaders=${loaders% }
	count=$(printf '%s' "$loaders" | wc -w)
	if [ "$INSTALL" = diskless ]; then
		note "boot loader: on the boot media of a diskless host, which the script leaves alone (boot_loader does not apply)"
	elif [ "$count" = 1 ]; then
		case $loaders in
		extlinux)
			if [ -f /etc/update-extlinux.conf ]; then
				note "boot loader: extlinux (/etc/update-extlinux.conf, /boot/extlinux.conf)"
			else
				check "boot loader: extlinux, but /etc/update-extlinux.conf is missing; the script's preflight needs it beside /boot/extlinux.conf"
			fi
			;;
		grub)
			if [ -f /etc/default/grub ]; then
				note "boot loader: GRUB (/boot/grub/grub.cfg, made by grub-mkconfig from /etc/default/grub)"
			else
				check "boot loader: GRUB, but /etc/default/grub is missing; the script's preflight needs it"
			fi
			;;
		efi-stub) note "boot loader: none, the kernel's EFI stub, started by /boot/startup.nsh" ;;
		esac
		fact boot_loader "$loaders"
	elif [ "$count" = 0 ]; then
		check "boot loader: none found (no /boot/extlinux.conf, /boot/grub/grub.cfg or /boot/startup.nsh): boot_loader is left out, and the script's preflight will stop"
	else
		check "more than one boot loader is configured ($loaders): check which one boots and set boot_loader to it; it is left out"
	fi

	gettys=$(awk -F: '
	/^[ \t]*#/ { next }
	$3 == "respawn" && $4 ~ /getty/ { t = $1; if (t == "") { n = split($4, w, " "); t = w[n] } printf " %s", t }' /etc/inittab 2>/dev/null || :)
	consoles=$(cat /proc/cmdline 2>/dev/null | tr ' ' '\n' | sed -n 's/^console=//p' | tr '\n' ' ' || :)
	consoles=${consoles% }
	note "consoles with a getty (/etc/inittab):${gettys:- none}; kernel console= (/proc/cmdline): ${consoles:-none}"
}

install_section() {
	local where
	printf '\n'
	case $INSTALL in
	diskless)
		where=$(
			LBU_MEDIA='' LBU_BACKUPDIR=''
			# shellcheck disable=SC1091 # the host's file, sourced as lbu sources it
			. /etc/lbu/lbu.conf >/dev/null 2>&1 || :
			printf '%s' "${LBU_BACKUPDIR:-${LBU_MEDIA:+/media/$LBU_MEDIA}}"
		)
		note "diskless: the root is a tmpfs and the modules come from the modloop ($(modloop) at /.modloop); lbu saves to ${where:-nowhere yet}"
		if [ -z "$where" ]; then
			check "/etc/lbu/lbu.conf sets neither LBU_MEDIA nor LBU_BACKUPDIR: set one, or the script's preflight stops (its lbu commit would not know where to save)"
		fi
		fact install diskless
		;;
	other) check "the root is a tmpfs but no modloop is mounted at /.modloop: not a diskless Alpine host that mingen knows (a container?); install is left out (sys, the default) and the script's preflight will stop" ;;
	*)
		note "installed on a disk (the root is $(root_fstype))"
		fact install sys
		;;
	esac
}

target_section() {
	local release ids count
	printf '\n'
	release=$(first_line /etc/alpine-release)
	if [ -z "$release" ]; then
		check "no /etc/alpine-release: is this Alpine? target is left out"
		return 0
	fi
	ids=$(targets_for "$release")
	count=$(printf '%s' "$ids" | grep -c . || :)
	if [ "$count" = 0 ]; then
		check "Alpine $release (/etc/alpine-release): no target is for this release; target is left out, and the script's preflight will stop"
	elif [ "$count" != 1 ]; then
		check "Alpine $release: several targets are for it ($(printf '%s' "$ids" | tr '\n' ' ')); set target to one"
	else
		note "Alpine $release (/etc/alpine-release)"
		fact target "$ids"
	fi
}

disk_section() {
	local dev disk path scsi=no
	printf '\n'
	if [ "$INSTALL" = diskless ]; then
		note "diskless: no root disk (disk does not apply)"
		return 0
	fi
	dev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts 2>/dev/null || :)
	disk=$(root_disk)
	path=$(readlink -f "/sys/block/$disk" 2>/dev/null || :)
	if grep -q '^virtio_scsi ' /proc/modules 2>/dev/null || [ -d /sys/bus/virtio/drivers/virtio_scsi ]; then
		scsi=yes
	fi
	case $disk in
	vda)
		note "the root filesystem is on $dev: vda, a virtio-blk disk"
		fact disk vda
		;;
	sda)
		case "$scsi|$path" in
		*/virtio*)
			note "the root filesystem is on $dev: sda, on virtio-scsi ($path)"
			fact disk sda
			;;
		*/ata[0-9]* | */usb* | */vmbus* | */VMBUS*)
			check "the root filesystem is on $dev: sda, but its controller is not virtio-scsi ($path): the sda target keeps only scsi and virtio in the initramfs; no target supports this disk yet, so disk is left out and the script's preflight will stop"
			;;
		yes\|*)
			note "the root filesystem is on $dev: sda, virtio-scsi (virtio_scsi is loaded)"
			fact disk sda
			;;
		*)
			check "the root filesystem is on $dev: sda, but nothing confirms virtio-scsi (no virtio_scsi in /proc/modules, /sys/block/sda is no device link): make sure it is not SATA (ahci), which the sda target's initramfs would lack"
			fact disk sda
			;;
		esac
		;;
	xvda)
		if [ "$HYPERVISOR" = xen ]; then
			note "the root filesystem is on $dev: xvda, a Xen disk (xen-blkfront, built into linux-virt)"
			fact disk xvda
		else
			check "the root filesystem is on $dev: xvda, a Xen disk, but the hypervisor is not recognised as Xen (no /sys/hypervisor/type saying xen): disk is left out and the script's preflight will stop"
		fi
		;;
	xvd*) check "the root filesystem is on $dev: $disk, a Xen disk other than the first: only xvda is supported; disk is left out and the script's preflight will stop" ;;
	nvme0n1)
		note "the root filesystem is on $dev: nvme0n1, an NVMe disk (the initramfs keeps nvme)"
		fact disk nvme0n1
		;;
	nvme*) check "the root filesystem is on $dev: $disk, an NVMe disk other than the first: only nvme0n1 is supported; disk is left out and the script's preflight will stop" ;;
	'') check "no root filesystem in /proc/mounts: disk is left out; the script's preflight reads /proc/mounts and will stop" ;;
	*) check "the root filesystem is on $dev ($disk): only vda (virtio-blk), sda (virtio-scsi), nvme0n1 and xvda (Xen) are supported; disk is left out and the script's preflight will stop" ;;
	esac
}

ipv6_section() {
	local global stanzas
	printf '\n'
	if [ -r /proc/net/if_inet6 ]; then
		global=$(awk '$4 == "00" {
			a = ""
			for (i = 1; i <= 29; i += 4) {
				g = substr($1, i, 4)
				sub(/^0+/, "", g)
				a = a (i > 1 ? ":" : "") (g == "" ? "0" : g)
			}
			printf " %s on %s", a, $6
		}' /proc/net/if_inet6)
	else
		global=""
		note "no /proc/net/if_inet6: IPv6 is off in the kernel (ipv6.disable=1?)"
	fi
	stanzas=$(interfaces_lines 2>/dev/null | awk '$1 == "iface" && $3 == "inet6" && $4 != "loopback" { printf "; iface %s inet6 %s", $2, $4 }')
	if [ -n "$global$stanzas" ]; then
		[ -z "$global" ] || note "global IPv6 address(es) in use:$global"
		[ -z "$stanzas" ] || note "/etc/network/interfaces configures IPv6: ${stanzas#; }"
		note "IPv6 stays on"
		fact ipv6 used
	else
		note "no global IPv6 address and no inet6 stanza: the script switches IPv6 off (ipv6.disable=1)"
		if [ -n "$SSH_LISTEN6" ]; then
			note "sshd listens on IPv6 too ($SSH_LISTEN6); dropbear will listen on 0.0.0.0 only, which is all that reaches it without a global IPv6 address"
		fi
		fact ipv6 unused
	fi
}

guest_agent_section() {
	printf '\n'
	if ! installed qemu-guest-agent; then
		note "qemu-guest-agent is not installed: nothing to remove"
		fact guest_agent remove
	elif started qemu-guest-agent; then
		note "qemu-guest-agent is installed and started: kept because it runs; set \"remove\" if the provider does not use QEMU guest operations (snapshots, freeze, password reset)"
		if [ ! -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
			check "/dev/virtio-ports/org.qemu.guest_agent.0 is absent: the hypervisor may offer no agent channel, in which case the agent serves nothing"
		fi
		fact guest_agent keep
	else
		note "qemu-guest-agent is installed but $(service_state qemu-guest-agent): removed; set \"keep\" if the provider uses QEMU guest operations"
		fact guest_agent remove
	fi
}

balloon_section() {
	local inflated
	printf '\n'
	if [ "$HYPERVISOR" = xen ]; then
		note "Xen's balloon driver is built into linux-virt: no blacklist reaches it, and the balloon fact does not apply"
		return 0
	fi
	if grep -q '^virtio_balloon ' /proc/modules 2>/dev/null || [ -d /sys/bus/virtio/drivers/virtio_balloon ]; then
		inflated=$(awk '$1 == "balloon_inflate" { print $2 }' /proc/vmstat 2>/dev/null || :)
		case $inflated in
		'' | 0)
			note "virtio_balloon is loaded, but the balloon has not inflated since boot (${inflated:-no balloon_inflate in /proc/vmstat}): blacklisted, the guide's choice; set \"keep\" if the provider reclaims memory by ballooning"
			fact balloon remove
			;;
		*)
			note "virtio_balloon is loaded and the balloon has inflated since boot (balloon_inflate $inflated in /proc/vmstat): the provider reclaims memory by ballooning, so it stays"
			fact balloon keep
			;;
		esac
	else
		note "virtio_balloon is not loaded: blacklisting it costs nothing"
		fact balloon remove
	fi
}

ntp_section() {
	local chrony ntpd openntpd refclocks servers
	printf '\n'
	chrony=$(service_state chronyd)
	ntpd=$(service_state ntpd)
	openntpd=$(service_state openntpd)
	case $chrony in
	stopped\ and*)
		case $openntpd in
		stopped\ and*) ;;
		*)
			note "openntpd is in use ($openntpd): the script leaves it alone, and \"none\" adds no second NTP client; \"busybox\" would add busybox ntpd at boot beside it"
			fact ntp none
			return 0
			;;
		esac
		case $ntpd in
		stopped\ and*) note "no NTP client runs (chronyd and ntpd are stopped and in no runlevel): busybox ntpd is added at boot, the guide's choice; \"none\" leaves time to kvm-clock" ;;
		*) note "busybox ntpd is set up ($ntpd): it stays, the guide's choice; \"none\" would leave time to kvm-clock" ;;
		esac
		fact ntp busybox
		return 0
		;;
	esac
	refclocks=$(cat /etc/chrony/chrony.conf /etc/chrony/conf.d/*.conf 2>/dev/null | awk '$1 == "refclock" { printf " %s", $2 }' || :)
	servers=$(cat /etc/chrony/chrony.conf /etc/chrony/conf.d/*.conf /etc/chrony/sources.d/*.sources 2>/dev/null |
		awk '($1 == "server" || $1 == "pool" || $1 == "peer") && $2 != "pool.ntp.org" { printf " %s", $2 }' || :)
	if [ -n "$refclocks" ]; then
		note "chronyd is in use ($chrony) with a reference clock (refclock$refclocks), which busybox ntpd cannot read: chrony stays; \"busybox\" (the guide's choice) or \"none\" would drop it"
		fact ntp chrony
		return 0
	fi
	note "chronyd is in use ($chrony): busybox ntpd replaces it, the guide's choice; \"chrony\" keeps it, \"none\" leaves time to kvm-clock"
	if [ -n "$servers" ]; then
		check "chrony uses server(s)$servers; busybox ntpd will use /etc/conf.d/ntpd (-p pool.ntp.org): put them there after the run, or set \"chrony\""
	fi
	fact ntp busybox
}

python_section() {
	local kept
	printf '\n'
	kept=$(world_names | awk '$1 == "python3" || $1 ~ /^python3-/ || $1 ~ /^py3-/ { printf " %s", $1 }')
	if [ -n "$kept" ]; then
		note "/etc/apk/world asks for Python (${kept# }): python3 stays when cloud-init goes"
		fact python keep
	elif installed python3; then
		note "python3 is installed only as a dependency (it is not in /etc/apk/world): it goes with cloud-init; set \"keep\" if you use it"
		fact python remove
	else
		note "python3 is not installed"
		fact python remove
	fi
}

# interfaces_summary: /etc/network/interfaces read the way the script's
# preflight reads it, one finding a line:
#   dhcp IFACE FAMILY METHOD a DHCP stanza (inet6 auto and `use dhcp` count)
#   static IFACE LACKS ADDR  an inet static stanza; LACKS is - when complete
#   source PATH              a source line (the script does not follow it)
interfaces_summary() {
	interfaces_lines | awk '
	$1 == "iface" {
		iface = $2; family = $3; method = $4
		if (method == "dhcp" || (family == "inet6" && method == "auto")) print "dhcp", iface, family, method
		if (family == "inet" && method == "static") static[iface] = 1
		next
	}
	$1 == "use" && $2 == "dhcp" { print "dhcp", iface, "use", "dhcp"; next }
	family == "inet" && method == "static" && $1 == "address" { addr[iface] = $2; if (index($2, "/")) mask[iface] = 1 }
	family == "inet" && method == "static" && $1 == "netmask" { mask[iface] = 1 }
	family == "inet" && method == "static" && $1 == "gateway" { gw[iface] = 1 }
	END {
		for (i in static) {
			lacks = ""
			if (!(i in addr)) lacks = lacks ",address"
			if (!mask[i]) lacks = lacks ",netmask"
			if (!gw[i]) lacks = lacks ",gateway"
			print "static", i, (lacks == "" ? "-" : substr(lacks, 2)), (i in addr ? addr[i] : "-")
		}
	}'
}

network_section() {
	local route_if summary dhcp chosen lacks address in_use dhcpcd
	printf '\n'
	route_if=$(awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null || :)
	if [ ! -f /etc/network/interfaces ]; then
		check "there is no /etc/network/interfaces: the network is set up some other way; dhcp keeps dhcpcd (the safe value)"
		fact network dhcp
		return 0
	fi
	summary=$(interfaces_summary)
	dhcp=$(printf '%s\n' "$summary" | awk '$1 == "dhcp" { printf "; iface %s %s %s", $2, $3, $4 }')
	if [ -n "$dhcp" ]; then
		note "/etc/network/interfaces configures DHCP (${dhcp#; }): dhcpcd stays"
		fact network dhcp
		return 0
	fi
	if [ -n "$route_if" ]; then
		chosen=$route_if
	else
		note "no default route in /proc/net/route (unreadable?): reading every inet static stanza"
		chosen=$(printf '%s\n' "$summary" | awk '$1 == "static" { print $2 }')
		if [ "$(printf '%s\n' "$chosen" | grep -c .)" != 1 ]; then
			check "no default route found and not exactly one inet static stanza (${chosen:-none}): which interface reaches the gateway? dhcp keeps dhcpcd (the safe value); set static once a complete stanza (address, netmask or prefix, gateway) is there"
			fact network dhcp
			return 0
		fi
	fi
	lacks=$(printf '%s\n' "$summary" | awk -v i="$chosen" '$1 == "static" && $2 == i { print $3 }')
	address=$(printf '%s\n' "$summary" | awk -v i="$chosen" '$1 == "static" && $2 == i { a = $4; sub(/\/.*/, "", a); print a }')
	if [ -z "$lacks" ]; then
		check "$chosen has the default route but no inet static stanza in /etc/network/interfaces (and no DHCP stanza): how does it get its address? dhcp keeps dhcpcd (the safe value)"
		fact network dhcp
		return 0
	fi
	if [ "$lacks" != - ]; then
		check "the inet static stanza of $chosen lacks: $lacks; the script's preflight needs address, netmask or prefix, and gateway. dhcp keeps dhcpcd (the safe value); set static once it is complete"
		fact network dhcp
		return 0
	fi
	in_use=""
	if [ -n "$IP" ]; then
		in_use=$("$IP" -o -4 addr show dev "$chosen" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "inet") { a = $(i + 1); sub(/\/.*/, "", a); printf " %s", a } }' || :)
	fi
	case "$in_use " in
	" ")
		note "$chosen: complete inet static stanza ($address), not compared with the address in use (\`ip\` shows none)"
		;;
	*" $address "*)
		note "$chosen has the default route and a complete inet static stanza; its address $address is the one in use"
		;;
	*)
		check "the inet static stanza of $chosen says $address, but $chosen has${in_use} now: is the address from DHCP? dhcp keeps dhcpcd (the safe value)"
		fact network dhcp
		return 0
		;;
	esac
	dhcpcd=$(service_state dhcpcd)
	case $dhcpcd in
	stopped\ and*) ;;
	*) check "dhcpcd is $dhcpcd although the address is static; it goes with network = static: make sure it does not set any address" ;;
	esac
	note "static: dhcpcd goes"
	fact network static
}

ssh_section() {
	local ports port
	printf '\n'
	if [ -z "$SSH_FROM" ]; then
		check "no SSH server found (no sshd, and no dropbear with /etc/conf.d/dropbear): ssh and its settings are left out, so mingen's defaults apply (dropbear on port 22); check how you log in"
		return 0
	fi
	note "SSH settings from $SSH_FROM: port(s) $SSH_PORTS, password logins $SSH_PASSWORD, root logins $SSH_ROOT"
	notes "$SSH_NOTES"
	if [ "$SSH_SERVER" = dropbear ] && [ "$SSH_FROM" != /etc/conf.d/dropbear ]; then
		note "dropbear replaces OpenSSH, the guide's choice, carrying the host keys and these settings"
	fi
	fact ssh "$SSH_SERVER"
	ports=""
	for port in $SSH_PORTS; do
		case $port in
		'' | *[!0-9]*) ports=bad ;;
		*) if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then ports=bad; fi ;;
		esac
		[ "$ports" = bad ] || ports="$ports, $port"
	done
	if [ "$ports" = bad ] || [ -z "$ports" ]; then
		check "the port(s) \"$SSH_PORTS\" are not all ports: ssh_ports is left out"
	else
		printf 'ssh_ports = [%s]\n' "${ports#, }"
	fi
	case $SSH_PASSWORD in
	yes | no) fact ssh_password_auth "$SSH_PASSWORD" ;;
	*) note "ssh_password_auth is left out (see above)" ;;
	esac
	case $SSH_ROOT in
	yes | no | prohibit-password) fact ssh_root_login "$SSH_ROOT" ;;
	*) note "ssh_root_login is left out (see above)" ;;
	esac
}

# access_section: who logs in, and how root is reached: what the script keeps.
access_section() {
	local name shell home owner
	printf '\n'
	if root_can_log_in; then
		note "root can log in over SSH directly (a key line without a forced command, or a password where passwords are allowed): sudo and doas can go"
	else
		check "root cannot log in over SSH directly (no key line without a forced command, no password login): the script keeps sudo and doas, your way in as root; set sudo_doas = \"remove\" only if you have another"
	fi
	fact sudo_doas auto
	login_accounts | while read -r name shell home; do
		owner=$(owner_of "$shell")
		case $owner in
		'' | busybox) ;;
		*) note "account $name logs in with $shell, which package $owner holds: the script keeps $owner" ;;
		esac
	done
}

# boot_section: whether the boot loader can try the new boot configuration once.
boot_section() {
	printf '\n'
	if [ "$INSTALL" = diskless ]; then
		note "boot trial: a diskless host boots from its media, which the script leaves alone (boot_trial does not apply)"
	elif [ -f /boot/ldlinux.sys ] && have extlinux; then
		note "extlinux boots this host from /boot (ldlinux.sys): the reboot tries the new boot configuration once, the previous one stays the default until it is confirmed"
		fact boot_trial once
	else
		check "no extlinux with /boot/ldlinux.sys: the new boot configuration cannot be tried once, so the reboot takes it at once (only the initramfs check protects it)"
		fact boot_trial off
	fi
}

probe() {
	APK=$(tool apk)
	RC_SERVICE=$(tool rc-service)
	SSHD=$(tool sshd)
	IP=$(tool ip)
	[ -n "$APK" ] || say "no \`apk\`: reading /lib/apk/db/installed instead"
	[ -n "$RC_SERVICE" ] || say "no \`rc-service\`: reading /run/openrc/started instead"
	detect_hypervisor
	detect_install
	read_ssh
	header
	host_section
	install_section
	target_section
	disk_section
	ipv6_section
	guest_agent_section
	balloon_section
	ntp_section
	python_section
	network_section
	ssh_section
	access_section
	memory_section
	boot_section
}

# memory_section: the consoles whose gettys stay (the kernel's console= terminals
# and tty1, the panel's VGA console, where they have a getty), and whether a
# container runtime needs kernel-memory accounting.
memory_section() {
	local gettys cmdline word name keep='' tool found=''
	printf '\n'
	gettys=" $(awk -F: '$0 !~ /^[ \t]*#/ && $3 == "respawn" && $4 ~ /getty/ { print $1 }' /etc/inittab 2>/dev/null | tr '\n' ' ')"
	read -r cmdline </proc/cmdline 2>/dev/null || cmdline=''
	for word in $cmdline tty1; do
		case $word in console=tty0*) name=tty1 ;; console=*) name=${word#console=} name=${name%%,*} ;; tty1) name=tty1 ;; *) continue ;; esac
		case "$gettys" in *" $name "*) ;; *) continue ;; esac
		case " $keep " in *" $name "*) ;; *) keep="$keep $name" ;; esac
	done
	if [ -n "$keep" ]; then
		note "gettys run on${gettys% }; the panel's consoles (console= and tty1) keep theirs"
		# shellcheck disable=SC2086 # one terminal a word
		printf 'consoles = [%s]\n' "$(printf '"%s", ' $keep | sed 's/, $//')"
	else
		check "no getty runs on a console= terminal or tty1 (gettys:${gettys% }): consoles is left out; set it to the terminal your provider's panel shows"
	fi
	for tool in dockerd podman containerd lxc-start incusd runc; do
		! command -v $tool >/dev/null 2>&1 || found="$found $tool"
	done
	if [ -n "$found" ]; then
		note "container runtime(s) installed:$found: kernel-memory accounting stays"
		fact containers used
	else
		fact containers none
	fi
}

main() {
	local report checks
	have awk || err "\`awk\` is needed and is not installed"
	report=$(probe) || err "the probe failed; nothing was printed"
	printf '%s\n' "$report"
	checks=$(printf '%s\n' "$report" | grep -c '^# CHECK:' || :)
	say "done: $checks finding(s) to check (lines starting with \`# CHECK:\`)"
}

main "$@" || exit 1

