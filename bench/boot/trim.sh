#!/usr/bin/env bash
# bench/boot/trim.sh KERNEL N NAME=IMAGE... (root): boots each image N times, alternating, with
# the same kernel and the node driver's QEMU flags, in a network namespace it creates and deletes;
# prints QEMU start -> sshd banner on the VM's port 22 in ms, and the medians. Used to measure the
# image's boot trimming step by step (docs/guest-image.md), e.g.
#   TRIM=0 RIG_BIN=... STAGE_DIR=~/.cache/rigbox/stage images/rootfs/build.sh base /var/tmp/untrimmed
#   bench/boot/trim.sh ~/.cache/rigbox/kernel-*/vmlinux 5 trimmed=<image> untrimmed=/var/tmp/untrimmed/rootfs.ext4
set -euo pipefail
kernel="$1"; n="$2"; shift 2
ns="rbximg-$$"
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
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 172.16.0.1/24 dev tap0
ip -n "$ns" link set tap0 up
khz="$(awk -F: '/cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)"
append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 quiet panic=-1 net.ifnames=0 rigbox.ip=172.16.0.2/24 rigbox.gw=172.16.0.1 systemd.machine_id=0123456789abcdef0123456789abcdef tsc_early_khz=$khz"
boot() {
    local name="$1" image="$2"
    rm -f "$work/disk.qcow2" "$work/console.log"
    qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2" 3072M
    local t0; t0="$(date +%s%N)"
    ip netns exec "$ns" qemu-system-x86_64 -M microvm,rtc=on -accel tcg,tb-size=128 -cpu max \
        -bios qboot.rom -m 512 -smp 1 -nodefaults -no-user-config -nographic \
        -chardev "file,id=console,path=$work/console.log" -serial chardev:console \
        -kernel "$kernel" -append "$append" \
        -drive "id=root,file=$work/disk.qcow2,format=qcow2,if=none,discard=unmap" \
        -device virtio-blk-device,drive=root \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device virtio-net-device,netdev=n0,mac=52:54:00:10:00:02 -device virtio-rng-device \
        -no-reboot -pidfile "$work/qemu.pid" -daemonize
    pid="$(cat "$work/qemu.pid")"
    local ready=""
    for _ in $(seq 1 1200); do
        if ip netns exec "$ns" timeout 10 bash -c 'exec 3<>/dev/tcp/172.16.0.2/22 && head -c 4 <&3' 2>/dev/null | grep -q SSH; then
            ready="$(date +%s%N)"; break
        fi
        sleep 0.1
    done
    if [ -z "$ready" ]; then echo "$name: no ssh within 120 s" >&2; tail -20 "$work/console.log" >&2; kill -9 "$pid"; pid=""; echo "fail"; return; fi
    if [ -n "${KEEP_LOG:-}" ]; then cp "$work/console.log" "$KEEP_LOG.$name"; fi
    kill -9 "$pid"; pid=""
    sleep 0.5
    echo "$(( (ready - t0) / 1000000 ))"
}
declare -A res
for i in $(seq 1 "$n"); do
    for spec in "$@"; do
        name="${spec%%=*}"; image="${spec#*=}"
        r="$(boot "$name" "$image")"
        res[$name]="${res[$name]:-} $r"
        echo "  $name #$i: $r ms (load $(cut -d' ' -f1 /proc/loadavg))"
    done
done
for spec in "$@"; do
    name="${spec%%=*}"
    echo "$name: ${res[$name]}  median $(echo ${res[$name]} | tr ' ' '\n' | grep -v fail | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms"
done
