#!/usr/bin/env bash
# build-disk.sh LAYOUT STAGE DISK UUID: lay the staged root tree STAGE onto a new raw
# disk DISK the way a cloud image is built, root by UUID, in one of two layouts:
#   extlinux  for BIOS: an MBR with one bootable ext4 partition at sector 2048,
#             extlinux in /boot, Debian's mbr.bin;
#   efi-stub  for UEFI, as alpine-make-vm-image lays it out: GPT, a 128 MiB EFI system
#             partition (FAT32, label EFI) that holds the files of STAGE's /boot (the
#             kernel, its initramfs and startup.nsh, which the UEFI shell runs) and is
#             mounted at /boot, then the ext4 root (label root) with /boot empty;
#   diskless  for BIOS, Alpine's diskless mode: an MBR with one bootable ext4 partition
#             (label ALPINE) holding STAGE, the boot medium (no root filesystem),
#             extlinux in its /boot, Debian's mbr.bin.
# Runs on the build machine, as root (loop device, mount). The EFI system partition is
# written with mtools, for the build machine's kernel may have no vfat.
set -euo pipefail

layout=$1 stage=$2 disk=$3 uuid=$4
syslinux=/usr/lib/syslinux
size_mib=1024

loop=
mnt=$(mktemp -d)
scratch=$(mktemp -d)
cleanup() {
	if mountpoint -q "$mnt"; then umount "$mnt"; fi
	rmdir "$mnt"
	rm -rf "$scratch"
	if [ -n "$loop" ]; then losetup -d "$loop"; fi
}
trap cleanup EXIT

# partition N: "START SECTORS" of partition N of DISK.
partition() {
	partx -g -n "$1" -o START,SECTORS "$disk"
}

# mount_root N LABEL: a new ext4 filesystem (UUID, LABEL) on partition N of DISK,
# holding STAGE, mounted at MNT.
mount_root() {
	local start sectors
	read -r start sectors < <(partition "$1")
	loop=$(losetup --show -f -o $((start * 512)) --sizelimit $((sectors * 512)) "$disk")
	mkfs.ext4 -q -O ^64bit -U "$uuid" -L "$2" "$loop"
	mount "$loop" "$mnt"
	cp -a "$stage/." "$mnt/"
}

unmount_root() {
	sync
	umount "$mnt"
	losetup -d "$loop"
	loop=
}

rm -f "$disk"
truncate -s "${size_mib}M" "$disk"
case $layout in
extlinux)
	printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$disk"
	mount_root 1 /
	for module in menu.c32 libutil.c32 libcom32.c32; do
		cp "$syslinux/modules/bios/$module" "$mnt/boot/"
	done
	extlinux --install "$mnt/boot" >/dev/null
	unmount_root
	dd if="$syslinux/mbr/mbr.bin" of="$disk" bs=440 count=1 conv=notrunc status=none
	;;
diskless)
	printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet "$disk"
	mount_root 1 ALPINE
	extlinux --install "$mnt/boot" >/dev/null
	unmount_root
	dd if="$syslinux/mbr/mbr.bin" of="$disk" bs=440 count=1 conv=notrunc status=none
	;;
efi-stub)
	printf 'label: gpt\nname=efi, start=2048, size=128MiB, type=U, bootable\nname=system, type=L\n' |
		sfdisk --quiet "$disk"
	mount_root 2 root
	# /boot on the root is the mount point of the EFI system partition only.
	rm -rf "${mnt:?}/boot"
	install -d -m 000 "$mnt/boot"
	unmount_root
	read -r start sectors < <(partition 1)
	esp=$scratch/esp.fat
	truncate -s $((sectors * 512)) "$esp"
	mkfs.fat -F 32 -n EFI "$esp" >/dev/null
	find "$stage/boot" -maxdepth 1 -type f -exec mcopy -i "$esp" {} ::/ \;
	dd if="$esp" of="$disk" bs=512 seek="$start" conv=notrunc status=none
	;;
*)
	echo "build-disk.sh: no layout $layout (extlinux, efi-stub or diskless)" >&2
	exit 2
	;;
esac
