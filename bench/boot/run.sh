#!/usr/bin/env bash
# Boot benchmark: QEMU start -> ssh-ready (sshd's banner on the VM's port 22) for
#   ours:      the Rigbox guest kernel (built in, no initramfs) + the trimmed base image
#   reference: Debian 12's stock cloud kernel + a busybox initramfs loading the virtio modules
#              + the same base image built untrimmed (TRIM=0)
# with the same QEMU flags as the node's driver, alternating, N boots each (default 5), then the
# RSS of each idle VM 10 s after ssh-ready. Prints medians and ratios. Run as root, alone on the
# machine (these machines are shared and noisy: one benchmark at a time).
#
#   bench/boot/run.sh [N]                   builds (or reuses) every artefact
#   bench/boot/run.sh OUR_KERNEL OUR_IMAGE REF_KERNEL REF_INITRD REF_IMAGE [N]
set -euo pipefail
# Paths given as arguments are relative to the caller's directory.
args=()
for a in "$@"; do if [ -e "$a" ]; then args+=("$(realpath "$a")"); else args+=("$a"); fi; done
set -- "${args[@]}"
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cache="${RIGBOX_CACHE_DIR:-$HOME/.cache/rigbox}"

if [ $# -ge 5 ]; then
    our_kernel="$1" our_image="$2" ref_kernel="$3" ref_initrd="$4" ref_image="$5"
    n="${6:-5}"
    for f in "$our_kernel" "$our_image" "$ref_kernel" "$ref_initrd" "$ref_image"; do
        [ -f "$f" ] || { echo "run.sh: $f does not exist" >&2; exit 1; }
    done
else
    n="${1:-5}"
    echo "==> artefacts"
    cargo build -q -p rigboxd -p rigbox-cli
    ours="$("$target/debug/rigboxd" image build base 2>/dev/null | awk '{print $3}')"
    our_kernel="$(echo "$ours" | sed -n 1p)"
    our_image="$(echo "$ours" | sed -n 2p)"
    ref_dir="$cache/bench-reference"
    [ -f "$ref_dir/vmlinuz" ] || bench/boot/reference-kernel.sh "$ref_dir"
    ref_kernel="$ref_dir/vmlinuz" ref_initrd="$ref_dir/initramfs.cpio.gz"
    untrimmed="$cache/bench-untrimmed"
    if [ ! -f "$untrimmed/rootfs.ext4" ] || [ "$our_image" -nt "$untrimmed/rootfs.ext4" ]; then
        TRIM=0 RIG_BIN="$target/debug/rig" STAGE_DIR="$cache/stage" images/rootfs/build.sh base "$untrimmed" >/dev/null
    fi
    ref_image="$untrimmed/rootfs.ext4"
fi
echo "ours:      $our_kernel + $our_image"
echo "reference: $ref_kernel + $ref_initrd + $ref_image"

ns="rbxbench-$$"
work="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add 172.16.0.1/24 dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" link set tap0 master br0
ip -n "$ns" link set tap0 up
khz="$(awk -F: '/cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)"
append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 quiet panic=-1 net.ifnames=0 rigbox.ip=172.16.0.2/24 rigbox.gw=172.16.0.1 tsc_early_khz=$khz"

# boot NAME KERNEL IMAGE [INITRD] -> prints "seconds rss_mb"
boot() {
    local kernel="$2" image="$3" initrd="${4:-}"
    rm -f "$work/disk.qcow2" "$work/console.log"
    qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2" 3072M
    local extra=()
    [ -n "$initrd" ] && extra=(-initrd "$initrd")
    local t0
    t0="$(date +%s%N)"
    ip netns exec "$ns" qemu-system-x86_64 -M microvm,rtc=on -accel tcg,tb-size=128 -cpu max \
        -bios qboot.rom -m 512 -smp 1 -nodefaults -no-user-config -nographic \
        -chardev "file,id=console,path=$work/console.log" -serial chardev:console \
        -kernel "$kernel" "${extra[@]}" -append "$append" \
        -drive "id=root,file=$work/disk.qcow2,format=qcow2,if=none,discard=unmap" \
        -device virtio-blk-device,drive=root \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device virtio-net-device,netdev=n0,mac=52:54:00:10:00:02 -device virtio-rng-device \
        -no-reboot -pidfile "$work/qemu.pid" -daemonize
    pid="$(cat "$work/qemu.pid")"
    local ready=""
    # A deadline, not a count: one probe can take seconds (ARP or the banner timing out).
    local deadline=$(( $(date +%s) + 120 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if ip netns exec "$ns" timeout 10 bash -c 'exec 3<>/dev/tcp/172.16.0.2/22 && head -c 4 <&3' 2>/dev/null | grep -q SSH; then
            ready="$(date +%s%N)"
            break
        fi
        sleep 0.1
    done
    # (This runs in a command substitution: the EXIT trap does not see $pid, so kill it here.)
    [ -n "$ready" ] || { echo "$1: no ssh within 120 s" >&2; tail -20 "$work/console.log" >&2; kill -9 "$pid"; exit 1; }
    sleep 10
    local rss
    rss="$(awk '/VmRSS/ {printf "%d", $2 / 1024}' "/proc/$pid/status")"
    kill -9 "$pid"; pid=""
    sleep 0.5
    echo "$(( (ready - t0) / 1000000 )) $rss"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

: > "$work/ours" ; : > "$work/ref"
for i in $(seq 1 "$n"); do
    r="$(boot ours "$our_kernel" "$our_image")"; echo "$r" >> "$work/ours"
    echo "  ours      #$i: ssh-ready $(echo "$r" | awk '{print $1}') ms, RSS $(echo "$r" | awk '{print $2}') MiB"
    r="$(boot ref "$ref_kernel" "$ref_image" "$ref_initrd")"; echo "$r" >> "$work/ref"
    echo "  reference #$i: ssh-ready $(echo "$r" | awk '{print $1}') ms, RSS $(echo "$r" | awk '{print $2}') MiB"
done
o_ms="$(awk '{print $1}' "$work/ours" | median)"; r_ms="$(awk '{print $1}' "$work/ref" | median)"
o_rss="$(awk '{print $2}' "$work/ours" | median)"; r_rss="$(awk '{print $2}' "$work/ref" | median)"
echo
echo "median start -> ssh-ready: ours ${o_ms} ms, reference ${r_ms} ms, reference/ours = $(echo "scale=2; $r_ms / $o_ms" | bc)x"
echo "median QEMU RSS of an idle VM (512 MiB guest, tb-size 128): ours ${o_rss} MiB, reference ${r_rss} MiB"
