#!/usr/bin/env bash
# Builds a Rigbox guest image: the Debian 12 tree of bootstrap.sh (cached), plus the platform's
# files (overlay/), user `developer`, the `rig` binary and, unless TRIM=0, the boot trimming;
# packed with `mkfs.ext4 -d` into OUT_DIR/rootfs.ext4.
#
#   RIG_BIN=target/release/rig images/rootfs/build.sh base|dev OUT_DIR
#
# Env: RIG_BIN (required), TRIM (1 = trimmed for boot speed, 0 = the untrimmed reference),
#      STAGE_DIR (where the bootstrap tarball is cached; default: OUT_DIR's parent).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
template="${1:?usage: build.sh base|dev OUT_DIR}"
out="${2:?usage: build.sh base|dev OUT_DIR}"
rig="${RIG_BIN:?RIG_BIN must name the rig binary to install}"
trim="${TRIM:-1}"
case "$template" in base|dev) ;; *) echo "unknown template $template" >&2; exit 2 ;; esac
stage_dir="${STAGE_DIR:-$(dirname "$out")}"
mkdir -p "$out" "$stage_dir"

# Stage 1, cached by the hash of what it is made of.
stage_hash="$(cat "$here/bootstrap.sh" "$here/packages.base" "$here/packages.$template" | sha256sum | cut -c1-16)"
stage="$stage_dir/bootstrap-$template-$stage_hash.tar"
if [ ! -f "$stage" ] || [ "${FORCE_BOOTSTRAP:-0}" = 1 ]; then
    "$here/bootstrap.sh" "$template" "$stage"
else
    echo "==> bootstrap tree cached ($(basename "$stage"))"
fi

work="$(mktemp -d /var/tmp/rigbox-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"
echo "==> unpacking the tree"
tar -C "$root" --numeric-owner --xattrs -xf "$stage"

echo "==> platform files, user developer, rig"
cp -a "$here/overlay/." "$root/"
chmod 0440 "$root/etc/sudoers.d/developer"
chroot "$root" useradd -m -u 1000 -U -s /bin/bash -G sudo developer
chroot "$root" usermod -p '*' developer   # no password, but not "locked" for sshd
install -d -m 0700 -o 1000 -g 1000 "$root/home/developer/.ssh" "$root/home/developer/.rigbox"
chmod 0755 "$root/home/developer/.rigbox"
# Env vars in every SSH session: bash sources ~/.bashrc for sshd's non-interactive commands, so
# the export goes before the interactive-only part.
{
    echo '# Workspace environment variables (written by the guest agent), for every SSH session.'
    echo '[ -r /etc/rigbox/env ] && { set -a; . /etc/rigbox/env; set +a; }'
    cat "$root/etc/skel/.bashrc"
} > "$root/home/developer/.bashrc"
chown 1000:1000 "$root/home/developer/.bashrc"
install -d -m 0755 "$root/etc/rigbox" "$root/etc/rigbox/ssh"
install -m 0755 "$rig" "$root/usr/local/bin/rig"
strip --strip-debug "$root/usr/local/bin/rig" 2>/dev/null || true
ln -sf rig "$root/usr/local/bin/rigbox"
rm -f "$root"/etc/ssh/ssh_host_*
# Every VM gets its own machine ID at boot (the node passes one derived from the workspace ID);
# dbus must not keep the build's.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
echo rigbox > "$root/etc/hostname"
echo UTC > "$root/etc/timezone"
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
# The kernel mounts the root read-write (root=/dev/vda rw): no fstab entry, so nothing waits for
# a device unit of it.
echo '# Root is mounted by the kernel (root=/dev/vda rw); add other filesystems here.' > "$root/etc/fstab"
echo 'LANG=C.UTF-8' > "$root/etc/locale.conf"
# An empty machine-id makes every VM's first boot a "first boot": never prompt on the console.
chroot "$root" systemctl mask -q systemd-firstboot.service
chroot "$root" systemctl enable -q rigbox-net.service rigbox-agent.service ssh.service
if [ "$trim" = 1 ]; then
    echo "==> trimming the boot"
    cp -a "$here/trim/." "$root/"
    # Periodic maintenance and hardware a workspace VM does not have.
    chroot "$root" systemctl mask -q \
        apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
        fstrim.timer getty@tty1.service systemd-networkd-wait-online.service \
        systemd-pstore.service modprobe@.service kmod-static-nodes.service \
        systemd-modules-load.service sys-kernel-tracing.mount sys-kernel-debug.mount \
        sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
        systemd-hwdb-update.service ldconfig.service \
        serial-getty@ttyS0.service dpkg-db-backup.timer \
        2>/dev/null || true
    # Generators for hardware and setups a workspace VM never has.
    mkdir -p "$root/etc/systemd/system-generators"
    for g in systemd-gpt-auto-generator systemd-sysv-generator systemd-cryptsetup-generator \
             systemd-veritysetup-generator systemd-integritysetup-generator \
             systemd-hibernate-resume-generator systemd-bless-boot-generator \
             systemd-getty-generator systemd-system-update-generator systemd-debug-generator; do
        ln -sf /dev/null "$root/etc/systemd/system-generators/$g"
    done
    # Device coldplug off the critical path: sshd and the agent start before udev is done.
    chroot "$root" systemctl mask -q systemd-udev-trigger.service
    chroot "$root" systemctl enable -q rigbox-udev-trigger.service
    chroot "$root" systemctl disable -q ssh.service
    chroot "$root" systemctl enable -q ssh.socket
fi

echo "==> packing rootfs.ext4"
used_mb="$(du -sm "$root" | cut -f1)"
size_mb=$(( used_mb * 5 / 4 + 256 ))
rm -f "$out/rootfs.ext4.tmp"
mkfs.ext4 -q -L rigbox-root -d "$root" "$out/rootfs.ext4.tmp" "${size_mb}M"
mv "$out/rootfs.ext4.tmp" "$out/rootfs.ext4"
echo "==> image ready: $out/rootfs.ext4 (${size_mb} MiB, ${used_mb} MiB used)"
