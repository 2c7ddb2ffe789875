#!/usr/bin/env bash
# MicroVM runtime: QEMU (TCG or KVM), the tools that build the guest image
# (busybox-static for the default rootfs, e2fsprogs for mkfs.ext4 -d, cpio,
# lz4/zstd/xz for unpacking the kernel payload) and qemu-utils for overlays.
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && file -L /bin/busybox 2>/dev/null | grep -q static || need+=(busybox-static)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
command -v lz4 >/dev/null || need+=(lz4)
command -v zstd >/dev/null || need+=(zstd)
command -v xz >/dev/null || need+=(xz-utils)
command -v file >/dev/null || need+=(file)
command -v umoci >/dev/null || need+=(umoci)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian's qemu-system-x86 7.2 conflicts with a newer backported qemu-utils
# and apt removes it; put the matching qemu-img back.
if ! command -v qemu-img >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils
fi
# The image builder resolves the kernel package from apt's metadata.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi
