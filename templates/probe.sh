#!/bin/sh
# probe.sh: read an Alpine host's facts for mingen {{ version }}, changing nothing.
# Run it on the host (as root, for `sshd -T`):  ssh root@host sh -s < probe.sh > host.toml
# It prints facts TOML that `mingen --facts host.toml` reads unchanged.
set -eu

main() {
	printf '# Facts read from %s by mingen {{ version }} probe.sh\n' "$(hostname 2>/dev/null || echo this host)"
{%- for (id, release) in targets %}
	# target {{ id }} is Alpine {{ release }}
{%- endfor %}
}

main "$@" || exit 1
