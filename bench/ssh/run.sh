#!/usr/bin/env bash
# SSH gateway benchmark: the same OpenSSH client, the same account key and the same VM, reached
#   gateway: ssh <name>-<id>@127.0.0.1 -p <gateway port>   (what users do)
#   direct:  ssh developer@<vm-ip> from inside the node namespace (the reference: no gateway)
# Measures, alternating, N times each (default 10 setups, 3 transfers):
#   session setup: wall time of `ssh … true` (connect, key exchange, auth, exec, exit);
#   scp throughput: SIZE MiB (default 100) up, then down, SFTP protocol (scp's default).
# Prints medians and the ratios gateway/direct. Starts its own `rigboxd up --vmm qemu` (release
# build) with one workspace, in a node namespace of its own, and removes everything at the end.
# Run as root, alone on the machine (these machines are shared and noisy).
#
#   bench/ssh/run.sh [N_SETUP] [N_SCP] [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
n_setup="${1:-10}" n_scp="${2:-3}" size="${3:-100}"
target="${CARGO_TARGET_DIR:-target}"
for c in jq curl ssh scp ssh-keygen; do
    command -v "$c" >/dev/null || { echo "run.sh: needs $c (apt-get install $c)" >&2; exit 1; }
done

echo "==> building (release) and the guest image"
cargo build -q --release -p rigboxd -p rigbox-cli
rigboxd="$target/release/rigboxd"
"$rigboxd" image build base >/dev/null

work="$(mktemp -d)"
ns="rbxbench-ssh-$$"
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # VMs still running (rigboxd leaves them for re-adoption when it cannot stop them).
    for f in "$work"/data/vms/*/state.json; do
        [ -f "$f" ] || continue
        vm="$(jq -r '.vm.pid // empty' "$f")"
        [ -n "$vm" ] && kill -9 "$vm" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

printf '[node]\nnetns = "%s"\n' "$ns" > "$work/rigboxd.toml"
"$rigboxd" up --vmm qemu --tls off --http-port 0 --ssh-port 0 --stop-vms-on-exit \
    --config "$work/rigboxd.toml" --data-dir "$work/data" > "$work/rigboxd.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -f "$work/data/ready.json" ] && break; sleep 0.1; done
[ -f "$work/data/ready.json" ] || { echo "rigboxd did not start:" >&2; cat "$work/rigboxd.log" >&2; exit 1; }
api="$(jq -r .api_url "$work/data/ready.json")/api/v1"
port="$(jq -r .ssh.port "$work/data/ready.json")"

echo "==> account, key and workspace"
printf 'bench-password-1\n' | "$rigboxd" admin --data-dir "$work/data" user create --email bench@example.com >/dev/null
session="$(curl -sf "$api/auth/login" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-password-1"}' | jq -r .token)"
token="$(curl -sf "$api/api-keys" -H "authorization: Bearer $session" -H 'content-type: application/json' \
    -d '{"name":"bench"}' | jq -r .key)"
call() { curl -sf "$api$2" -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' ${3:+-d "$3"}; }
ssh-keygen -q -t ed25519 -N '' -C bench -f "$work/key"
call POST /ssh-keys "$(jq -n --arg k "$(cat "$work/key.pub")" '{name: "bench", public_key: $k}')" >/dev/null
id="$(call POST /workspaces '{"name":"bench"}' | jq -r .id)"
wait_for() {
    for _ in $(seq 1 900); do
        [ "$(call GET "/workspaces/$id" | jq -r .status)" = "$1" ] && return 0
        sleep 0.2
    done
    echo "workspace never reached $1" >&2; tail -20 "$work/rigboxd.log" >&2; exit 1
}
wait_for provisioned
call POST "/workspaces/$id/start" '{}' >/dev/null
wait_for running
ws="$(call GET "/workspaces/$id")"
user="$(echo "$ws" | jq -r .ssh.user)"
ip="$(echo "$ws" | jq -r .ip_address)"
echo "workspace $id at $ip; gateway 127.0.0.1:$port as $user"

opts=(-F /dev/null -i "$work/key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
      -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
gw_ssh() { ssh "${opts[@]}" -p "$port" "$user@127.0.0.1" "$@"; }
direct_ssh() { ip netns exec "$ns" ssh "${opts[@]}" "developer@$ip" "$@"; }
gw_scp() { scp "${opts[@]}" -P "$port" "$1" "$2"; }
direct_scp() { ip netns exec "$ns" scp "${opts[@]}" "$1" "$2"; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

# Warm both paths once (the first connection starts sshd's socket unit in the guest).
gw_ssh true; direct_ssh true

echo "==> session setup, $n_setup each, alternating"
: > "$work/setup.gw"; : > "$work/setup.direct"
for i in $(seq 1 "$n_setup"); do
    t0="$(now)"; gw_ssh true; t1="$(now)"; direct_ssh true; t2="$(now)"
    ms "$t0" "$t1" >> "$work/setup.gw"; ms "$t1" "$t2" >> "$work/setup.direct"
    echo "  #$i gateway $(ms "$t0" "$t1") ms, direct $(ms "$t1" "$t2") ms"
done

echo "==> scp ${size} MiB up and down, $n_scp each, alternating"
dd if=/dev/urandom of="$work/blob" bs=1M count="$size" status=none
sum="$(sha256sum < "$work/blob")"
for f in up.gw down.gw up.direct down.direct; do : > "$work/$f"; done
rate() { echo "scale=1; $size * 1000 / $(ms "$1" "$2")" | bc; }
for i in $(seq 1 "$n_scp"); do
    for path in gw direct; do
        rm -f "$work/back"
        t0="$(now)"; "${path}_scp" "$work/blob" "$( [ $path = gw ] && echo "$user@127.0.0.1" || echo "developer@$ip"):/tmp/blob"
        t1="$(now)"; "${path}_scp" "$( [ $path = gw ] && echo "$user@127.0.0.1" || echo "developer@$ip"):/tmp/blob" "$work/back"
        t2="$(now)"
        [ "$(sha256sum < "$work/back")" = "$sum" ] || { echo "checksum mismatch ($path)" >&2; exit 1; }
        rate "$t0" "$t1" >> "$work/up.$path"; rate "$t1" "$t2" >> "$work/down.$path"
        echo "  #$i $path: up $(rate "$t0" "$t1") MiB/s, down $(rate "$t1" "$t2") MiB/s"
    done
done

s_gw="$(median < "$work/setup.gw")"; s_d="$(median < "$work/setup.direct")"
u_gw="$(median < "$work/up.gw")"; u_d="$(median < "$work/up.direct")"
d_gw="$(median < "$work/down.gw")"; d_d="$(median < "$work/down.direct")"
echo
echo "median session setup: gateway ${s_gw} ms, direct ${s_d} ms, gateway/direct = $(echo "scale=2; $s_gw / $s_d" | bc)x (target <= 1.3x)"
echo "median scp up:        gateway ${u_gw} MiB/s, direct ${u_d} MiB/s, gateway/direct = $(echo "scale=2; $u_gw / $u_d" | bc)x (target >= 0.8x)"
echo "median scp down:      gateway ${d_gw} MiB/s, direct ${d_d} MiB/s, gateway/direct = $(echo "scale=2; $d_gw / $d_d" | bc)x (target >= 0.8x)"
