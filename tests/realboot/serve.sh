#!/usr/bin/env bash
# The bench repository's HTTP server, for one connection: QEMU's user network runs it
# (guestfwd=tcp:10.0.2.100:80-cmd:...) for each connection the guest opens to
# 10.0.2.100:80, with that connection as its stdin, stdout and stderr.
#   bash serve.sh DIR LOG
# It answers GET and HEAD of the files under DIR, 404 for anything else, and appends
# `METHOD PATH STATUS` to LOG. Nothing may go to stderr: the guest would read it.
exec 2>/dev/null
set -u
root=$1
log=$2
IFS=' ' read -r method path _ || exit 0
# The request's headers, up to the empty line; none of them matters here.
while IFS= read -r line; do
	line=${line%$'\r'}
	[ -n "$line" ] || break
done
path=${path%%\?*}
file=$root/${path#/}
if [[ $method == @(GET|HEAD) && $path == /* && $path != *..* && -f $file ]]; then
	status=200
	printf 'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
		"$(stat -c %s "$file")"
	[ "$method" = HEAD ] || cat "$file"
else
	status=404
	printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
fi
printf '%s %s %s\n' "$method" "$path" "$status" >>"$log"
