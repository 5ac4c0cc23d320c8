#!/usr/bin/env bash
# Stage 1 of a guest image: the Debian 12 tree with every package of the template, packed as a
# tarball. Slow (downloads and configures a few hundred packages), so build.sh caches its output
# by a hash of this script and the package lists.
#
#   images/rootfs/bootstrap.sh TEMPLATE OUT_TAR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
template="${1:?usage: bootstrap.sh base|dev OUT_TAR}"
out="${2:?usage: bootstrap.sh base|dev OUT_TAR}"

# The mirror this machine already uses (never a hard-coded host).
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror="$(awk '/^URIs:/ {print $2; exit}' "$f")"
    [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt/sources.list.d/*.sources or sources.list" >&2; exit 1; }

packages() { grep -v -e '^#' -e '^$' "$here/packages.$1"; }
list="$(packages base)"
[ "$template" = base ] || list="$list $(packages "$template")"

work="$(mktemp -d /var/tmp/rigbox-rootfs.XXXXXX)"
root="$work/root"
cleanup() {
    for m in proc sys dev/pts dev; do umount "$root/$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase \
    --include=systemd-sysv,dbus,udev,iproute2,procps,e2fsprogs,less,kmod \
    bookworm "$root" "$mirror" 2>&1 | grep -E '^I: (Retrieving|Validating|Extracting|Installing|Configuring) [a-z]' | awk 'NR % 25 == 1' || true
[ -x "$root/bin/systemctl" ] || { echo "debootstrap failed" >&2; exit 1; }

echo "==> installing the $template packages"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"
chroot "$root" apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $list >/dev/null
rm -f "$root/usr/sbin/policy-rc.d"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
for m in dev/pts dev sys proc; do umount "$root/$m"; done

echo "==> packing the tree"
tar -C "$root" --numeric-owner --xattrs -cf "$out.tmp" .
mv "$out.tmp" "$out"
