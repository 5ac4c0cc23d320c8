#!/usr/bin/env bash
# Builds the Rigbox guest kernel from Debian's linux-source package: `make tinyconfig` with
# rigbox.config merged over it, everything built in, no modules, no initramfs.
#
#   images/kernel/build.sh OUT_DIR     -> OUT_DIR/vmlinux (ELF, booted by QEMU through PVH)
#                                         OUT_DIR/config  (the final .config)
#
# Needs: linux-source, make, gcc, bc, bison, flex, libelf-dev, libssl-dev (scripts/setup).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
tarball="$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$tarball" ]; then
    echo "linux-source is not installed (apt-get install linux-source)" >&2
    exit 1
fi
mkdir -p "$out"
work="$(mktemp -d "${out%/}.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "==> extracting $(basename "$tarball")"
tar -C "$work" -xJf "$tarball"
src="$(ls -d "$work"/linux-source-*)"
cd "$src"
echo "==> configuring (tinyconfig + rigbox.config)"
make -s ARCH=x86_64 tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/rigbox.config" >/dev/null
make -s ARCH=x86_64 olddefconfig >/dev/null
# Every option asked for must have survived olddefconfig (a dependency missing drops it).
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*) grep -qx "$line" .config || { echo "config: $line did not stick" >&2; missing=1; } ;;
    esac
done < "$here/rigbox.config"
[ "$missing" = 0 ] || exit 1
echo "==> building vmlinux with $(nproc) jobs"
make -s ARCH=x86_64 -j"$(nproc)" vmlinux 2>&1 | grep -v -e '^  ' || true
[ -f vmlinux ] || { echo "kernel build failed" >&2; exit 1; }
cp vmlinux "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
cp .config "$out/config"
echo "==> kernel ready: $out/vmlinux ($(du -h "$out/vmlinux" | cut -f1))"
