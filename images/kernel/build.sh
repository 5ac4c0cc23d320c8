#!/usr/bin/env bash
# Builds the Rigbox guest kernel from Debian's linux-source package: `make tinyconfig` with
# rigbox.config merged over it, everything built in, no modules, no initramfs.
#
#   images/kernel/build.sh OUT_DIR     -> OUT_DIR/vmlinux (ELF, booted by QEMU through PVH)
#                                         OUT_DIR/config  (the final .config)
#
# Needs: linux-source, make, gcc, bc, bison, flex, libelf-dev, libssl-dev, xz-utils
# (scripts/setup installs them; this script installs nothing). The work tree is a sibling of
# OUT_DIR and is removed on exit. Rationale and measurements: docs/guest-kernel.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
tarball="$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$tarball" ]; then
    echo "build.sh: no /usr/src/linux-source-*.tar.xz: install the linux-source package (apt-get install linux-source)" >&2
    exit 1
fi
for tool in make gcc bc bison flex xz; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (see scripts/setup)" >&2; exit 1; }
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "$out.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start="$(date +%s)"

echo "==> extracting $(basename "$tarball")"
tar -C "$work" -xJf "$tarball"
src="$(ls -d "$work"/linux-source-*)"
cd "$src"

echo "==> configuring (tinyconfig + rigbox.config)"
make -s ARCH=x86_64 tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/rigbox.config" >/dev/null
make -s ARCH=x86_64 olddefconfig >/dev/null
# Every option of the fragment must have survived olddefconfig: a missing dependency silently
# drops an option (and the kernel then boots without, say, its root disk).
bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qx "$line" .config || { echo "config: $line did not stick" >&2; bad=1; } ;;
        "# CONFIG_"*" is not set")
            opt="${line#\# }"; opt="${opt%% *}"
            if grep -q "^$opt=" .config; then echo "config: $opt is still set" >&2; bad=1; fi ;;
    esac
done < "$here/rigbox.config"
[ "$bad" = 0 ] || exit 1

echo "==> building vmlinux with $(nproc) jobs"
log="$work/build.log"
if ! make ARCH=x86_64 KBUILD_BUILD_USER=rigbox KBUILD_BUILD_HOST=rigbox -j"$(nproc)" vmlinux >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build.sh: kernel build failed" >&2
    exit 1
fi
cp vmlinux "$out/vmlinux.tmp" && mv "$out/vmlinux.tmp" "$out/vmlinux"
cp .config "$out/config"
echo "==> kernel ready: $out/vmlinux ($(du -h "$out/vmlinux" | cut -f1), $(( $(date +%s) - start )) s)"
