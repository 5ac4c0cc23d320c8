#!/usr/bin/env bash
# Edge benchmark, in one run, against the same backend on loopback (an nginx of its own serving a
# small static response):
#   direct:  wrk -> backend
#   nginx:   wrk -> nginx (Debian) as a TLS reverse proxy -> backend (proxy_pass defaults; TLS 1.2
#            and 1.3, as Debian's stock nginx.conf enables them)
#   edge:    wrk -> rigboxd's edge (TLS, visibility public) -> backend
#   nginx-tls12 (new connections only, for reference): the same nginx proxy limited to TLS 1.2,
#            whose session resumption skips the key exchange that TLS 1.3 resumption does
# rigboxd runs the simulated VMM with `[sim] app_upstream` pointing at the backend, so the edge
# forwards exactly as it does to a VM, minus the node namespace.
# For each: requests/s, p50/p99 latency and the proxy's CPU time per request (user+system of the
# nginx proxy's processes or of rigboxd: steadier than req/s when other work shares the machine)
# with keep-alive connections, and with a new TLS connection per request (`Connection: close`).
# Then the time from an app-create API response to the route serving through the edge, with 1 and
# with 1,000 routes.
# Medians of ROUNDS (default 3) alternating runs of DURATION seconds (default 10). Run alone: the
# machine's load average is printed at the start and the end.
#
#   bench/edge/run.sh            (needs wrk, nginx, openssl, python3, jq, curl)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-3}" duration="${DURATION:-10}" conns="${CONNS:-32}"
target="${CARGO_TARGET_DIR:-target}"
for c in wrk nginx openssl python3 jq curl; do
    command -v "$c" >/dev/null || { echo "run.sh: needs $c (apt-get install wrk nginx-light openssl python3 jq curl)" >&2; exit 1; }
done
cargo build -q --release -p rigboxd
bin="$target/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
. bench/lib.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend="$(free_port)" proxy="$(free_port)" proxy12="$(free_port)"
echo "load at start: $(uptime)"

# Backend and nginx proxy: two nginx instances, so the proxy's CPU time is its own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
mkdir -p "$work/backend/logs" "$work/proxy/logs"
cat > "$work/backend.conf" <<EOF
worker_processes 2;
pid $work/backend.pid;
error_log $work/backend/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server { listen 127.0.0.1:$backend; location / { return 200 "hello from the backend\n"; } }
}
EOF
cat > "$work/proxy.conf" <<EOF
worker_processes 2;
pid $work/proxy.pid;
error_log $work/proxy/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    server {
        listen 127.0.0.1:$proxy ssl http2; ssl_protocols TLSv1.2 TLSv1.3;
        location / { proxy_pass http://127.0.0.1:$backend; }
    }
    server {
        listen 127.0.0.1:$proxy12 ssl http2; ssl_protocols TLSv1.2;
        location / { proxy_pass http://127.0.0.1:$backend; }
    }
}
EOF
nginx -c "$work/backend.conf" -p "$work/backend" -g 'daemon off;' &
pids+=($!)
nginx -c "$work/proxy.conf" -p "$work/proxy" -g 'daemon off;' &
nginx_proxy=$!
pids+=($nginx_proxy)

# rigboxd with the edge on HTTPS (local CA), simulated VMs serving from the backend.
printf '[sim]\nprovision_ms = 50\nboot_ms = 200\nstop_ms = 50\napp_upstream = "127.0.0.1:%s"\n[control.rate_limits]\napps = 1000000\n' "$backend" > "$work/rigboxd.toml"
rigboxd_up --vmm sim --tls local-ca --https-port 0 --http-port 0 --ssh-port 0
rigboxd="$rigboxd_pid"
edge="$(ready https_url)"
bench_user
admin user set-limit --email bench@example.com --key max_apps_per_vm --value 2000 >/dev/null
bench_workspace
id="$ws_id"
call POST /apps "{\"workspace_id\":\"$id\",\"name\":\"bench\",\"port\":80,\"visibility\":\"public\"}" >/dev/null
host="bench.rigbox.localhost"
curl -sfk "$edge/" -H "host: $host" | grep -q "hello from the backend" || { echo "the edge does not serve the app" >&2; tail "$work/rigboxd.log" >&2; exit 1; }

# CPU ticks (user + system) of processes and their children (nginx's workers).
ticks() {
    local t=0 p q
    for p in "$@"; do
        for q in "$p" $(pgrep -P "$p"); do
            t=$((t + $(awk '{print $14 + $15}' "/proc/$q/stat" 2>/dev/null || echo 0)))
        done
    done
    echo "$t"
}
hz="$(getconf CLK_TCK)"
# run_wrk PIDS [wrk args] -> "rps p50_ms p99_ms cpu_us_per_request" (CPU of PIDS; "" for none)
run_wrk() {
    local measured="$1" out t0 t1
    shift
    t0="$(ticks $measured)"
    out="$(wrk -t2 -c"$conns" -d"${duration}s" --latency "$@" 2>&1)"
    t1="$(ticks $measured)"
    local rps p50 p99 n cpu=-
    rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
    p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
    p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
    n="$(echo "$out" | awk '/requests in/ {print $1}')"
    if [ -n "$measured" ]; then
        cpu="$(awk -v d="$((t1 - t0))" -v hz="$hz" -v n="$n" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')"
    fi
    ms() { echo "$1" | awk '/us$/ {sub("us","");print $1/1000; next} /ms$/ {sub("ms","");print $1; next} /s$/ {sub("s","");print $1*1000}'; }
    echo "$rps $(ms "$p50") $(ms "$p99") $cpu"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) exit; if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

for mode in keepalive newconn; do
    extra=()
    [ "$mode" = newconn ] && extra=(-H "Connection: close")
    for r in $(seq 1 "$rounds"); do
        echo "direct $(run_wrk "" "${extra[@]}" "http://127.0.0.1:$backend/")" >> "$work/$mode"
        echo "nginx $(run_wrk "$nginx_proxy" "${extra[@]}" "https://127.0.0.1:$proxy/")" >> "$work/$mode"
        echo "edge $(run_wrk "$rigboxd" "${extra[@]}" -H "Host: $host" "$edge/")" >> "$work/$mode"
        lines=3
        if [ "$mode" = newconn ]; then
            echo "nginx-tls12 $(run_wrk "$nginx_proxy" "${extra[@]}" "https://127.0.0.1:$proxy12/")" >> "$work/$mode"
            lines=4
        fi
        echo "  $mode round $r: $(tail -"$lines" "$work/$mode" | tr '\n' ';')"
    done
done

# Route changes: from the create response to the first 200 through the edge.
cat > "$work/route.py" <<'EOF'
import http.client, json, ssl, sys, time
api, edge_port, token, ws, prefix, n = sys.argv[1:7]
ctx = ssl._create_unverified_context()
host, port = api.split("//")[1].split("/")[0].split(":")
def create(name):
    c = http.client.HTTPConnection(host, int(port))
    c.request("POST", "/api/v1/apps", json.dumps({"workspace_id": ws, "name": name, "port": 80, "visibility": "public"}),
              {"authorization": "Bearer " + token, "content-type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
out = []
e = http.client.HTTPSConnection("127.0.0.1", int(edge_port), context=ctx)
for i in range(int(n)):
    name = f"{prefix}{i}"
    create(name)
    t0 = time.perf_counter()
    while True:
        e.request("GET", "/", headers={"host": f"{name}.rigbox.localhost"})
        r = e.getresponse(); r.read()
        if r.status == 200:
            break
    out.append((time.perf_counter() - t0) * 1000)
out.sort()
print(f"{out[len(out)//2]:.2f}")
EOF
edge_port="${edge##*:}"
one="$(python3 "$work/route.py" "$api" "$edge_port" "$token" "$id" first 5)"
for i in $(seq 1 1000); do echo "{\"workspace_id\":\"$id\",\"name\":\"filler-$i\",\"port\":80,\"visibility\":\"public\"}"; done \
    | while read -r body; do call POST /apps "$body" >/dev/null; done
thousand="$(python3 "$work/route.py" "$api" "$edge_port" "$token" "$id" later 5)"

echo
echo "load at end: $(uptime)"
printf '%-10s %-12s %10s %9s %9s %11s\n' mode path rps p50_ms p99_ms cpu_us/req
for mode in keepalive newconn; do
    paths="direct nginx edge"
    [ "$mode" = newconn ] && paths="$paths nginx-tls12"
    for path in $paths; do
        rps="$(awk -v p="$path" '$1 == p {print $2}' "$work/$mode" | median)"
        p50="$(awk -v p="$path" '$1 == p {print $3}' "$work/$mode" | median)"
        p99="$(awk -v p="$path" '$1 == p {print $4}' "$work/$mode" | median)"
        cpu="$(awk -v p="$path" '$1 == p && $5 != "-" {print $5}' "$work/$mode" | median)"
        printf '%-10s %-12s %10s %9s %9s %11s\n' "$mode" "$path" "$rps" "$p50" "$p99" "${cpu:--}"
        echo "$path $rps $p99 ${cpu:-0}" >> "$work/$mode.medians"
    done
    awk '{r[$1]=$2; q[$1]=$3; c[$1]=$4} END {printf "  edge/nginx: rps %.2fx (target >= 1.2x), p99 %.2fx (target <= 1x), cpu/request %.2fx\n", r["edge"]/r["nginx"], q["edge"]/q["nginx"], c["edge"]/c["nginx"]}' "$work/$mode.medians"
done
echo "route live after create (median of 5): ${one} ms with 1 route, ${thousand} ms with 1,000 routes (target <= 10 ms)"
