#!/usr/bin/env bash
# build-disk.sh STAGE DISK UUID: lay the staged root tree STAGE onto a new raw
# disk DISK the way a cloud image is built for BIOS: an MBR with one bootable
# ext4 partition at sector 2048, root by UUID, extlinux in /boot, Debian's
# mbr.bin. Runs on the build machine, as root (loop device, mount).
set -euo pipefail

stage=$1 disk=$2 uuid=$3
syslinux=/usr/lib/syslinux
size_mib=1024
offset=$((2048 * 512))

loop=
mnt=$(mktemp -d)
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt"; fi
	rmdir "$mnt"
	if [ -n "$loop" ]; then losetup -d "$loop"; fi
}
trap cleanup EXIT

rm -f "$disk"
truncate -s "${size_mib}M" "$disk"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$disk"
part_bytes=$(((size_mib * 1024 * 1024) - offset))
loop=$(losetup --show -f -o "$offset" --sizelimit "$part_bytes" "$disk")
mkfs.ext4 -q -O ^64bit -U "$uuid" -L / "$loop"
mount "$loop" "$mnt"
cp -a "$stage/." "$mnt/"
for module in menu.c32 libutil.c32 libcom32.c32; do
	cp "$syslinux/modules/bios/$module" "$mnt/boot/"
done
extlinux --install "$mnt/boot" >/dev/null
sync
umount "$mnt"
losetup -d "$loop"
loop=
dd if="$syslinux/mbr/mbr.bin" of="$disk" bs=440 count=1 conv=notrunc status=none
