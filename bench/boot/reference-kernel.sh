#!/usr/bin/env bash
# The boot benchmark's reference kernel (DESIGN §2 baseline): Debian 12's stock cloud kernel,
# whose virtio drivers are modules, with a busybox initramfs that loads them and switches to
# the root disk.
#
#   bench/boot/reference-kernel.sh OUT_DIR   -> OUT_DIR/vmlinuz, OUT_DIR/initramfs.cpio.gz
#
# Needs busybox-static and cpio (the script installs nothing).
set -euo pipefail
out="${1:?usage: reference-kernel.sh OUT_DIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
echo "==> downloading $pkg"
apt-get download -q "$pkg" 2>/dev/null
dpkg-deb -x ./*.deb x
ver="$(ls x/lib/modules)"
mods="x/lib/modules/$ver/kernel"
mkdir -p init/bin init/dev init/proc init/sys init/newroot init/lib/modules
cp "$(command -v busybox)" init/bin/busybox
# In dependency order (modules.dep of this kernel).
order="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio
       drivers/block/virtio_blk net/core/failover drivers/net/net_failover drivers/net/virtio_net"
for m in $order; do cp "$mods/$m.ko" init/lib/modules/; done
cat > init/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net; do
    insmod /lib/modules/$m.ko
done
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
mount -o rw /dev/vda /newroot
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod 755 init/init
(cd init && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
cp "x/boot/vmlinuz-$ver" "$out/vmlinuz"
echo "==> reference kernel $ver: $out/vmlinuz, $out/initramfs.cpio.gz"
