#!/usr/bin/env bash
# bench/api: throughput and latency of the workspace API (get, list, create) on a release build
# (get/list: a pro account at its 10 workspaces; page50: full 50-item pages; create: unique names)
# with SQLite, against a reference measured in the same run: GET /api/v1/templates on the same
# server (same HTTP stack, no auth, no database). Every scenario runs ROUNDS times; medians are
# printed as a Markdown table with the ratio to the reference. Traffic stays on 127.0.0.1;
# everything started here is stopped by PID.
#
#   bench/api/run.sh            # ROUNDS=5 DURATION=5 RATE=500 CONCURRENCY=16
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
RATE=${RATE:-500}
CONCURRENCY=${CONCURRENCY:-16}

echo "==> building (release)" >&2
cargo build --release -p rigboxd >&2
cargo build --release --manifest-path bench/api/loadgen/Cargo.toml >&2
LOADGEN=bench/api/loadgen/target/release/rigbox-loadgen

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat > "$work/rigboxd.toml" <<TOML
[control.rate_limits]
auth = 100000000
workspaces = 100000000
apps = 100000000
[sim]
provision_ms = 10
boot_ms = 100
stop_ms = 10
TOML
RIGBOX_LOG=warn target/release/rigboxd up --config "$work/rigboxd.toml" --data-dir "$work/data" --http-port 0 --vmm sim --tls off >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -f "$work/data/ready.json" ] && break; sleep 0.05; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_url"])' "$work/data/ready.json")
admin() { target/release/rigboxd admin --data-dir "$work/data" "$@" >/dev/null; }
new_key() { # email: a pro account and an API key for it
    echo 'bench-password-1' | admin user create --email "$1" --plan pro
    local token
    token=$(curl -sf "$url/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"bench-password-1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    curl -sf -X POST "$url/api/v1/api-keys" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
seed() { # key count prefix
    for i in $(seq "$2"); do
        curl -sf -X POST "$url/api/v1/workspaces" -H "authorization: Bearer $1" -H 'content-type: application/json' -d "{\"name\":\"$3-$i\"}" >/dev/null
    done
}
# A pro account at its plan's 10 workspaces: get and list (one full list is 10 items).
key=$(new_key bench@example.com)
seed "$key" 10 seed
ws=$(curl -sf "$url/api/v1/workspaces?limit=1" -H "authorization: Bearer $key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
# An account without limits: creates, and full 50-item pages.
big=$(new_key big@example.com)
admin user set-limit --email big@example.com --key max_vms --value 1000000
admin user set-limit --email big@example.com --key max_disk_total_mb --value 1000000000000
seed "$big" 60 page

results="$work/results.jsonl"
run() { # name mode url [extra args]
    local name=$1; shift
    "$LOADGEN" "$@" --duration "$DURATION" | python3 -c "import json,sys; d=json.load(sys.stdin); d['name']='$name'; print(json.dumps(d))" >>"$results"
}
for r in $(seq "$ROUNDS"); do
    echo "==> round $r/$ROUNDS" >&2
    run reference-closed closed "$url/api/v1/templates" --concurrency "$CONCURRENCY"
    run get-closed closed "$url/api/v1/workspaces/$ws" --token "$key" --concurrency "$CONCURRENCY"
    run list-closed closed "$url/api/v1/workspaces" --token "$key" --concurrency "$CONCURRENCY"
    run reference-open open "$url/api/v1/templates" --rate "$RATE"
    run get-open open "$url/api/v1/workspaces/$ws" --token "$key" --rate "$RATE"
    run list-open open "$url/api/v1/workspaces" --token "$key" --rate "$RATE"
    run page50-closed closed "$url/api/v1/workspaces?limit=50" --token "$big" --concurrency "$CONCURRENCY"
    run page50-open open "$url/api/v1/workspaces?limit=50" --token "$big" --rate "$RATE"
    run create-closed closed "$url/api/v1/workspaces" --method POST --token "$big" --concurrency "$CONCURRENCY" --prefix "r$r" --max-requests 400
done

python3 - "$results" "$RATE" "$CONCURRENCY" "$ROUNDS" "$DURATION" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, conc, rounds, dur = sys.argv[2:6]
def med(name, key):
    v = [r[key] for r in rows if r["name"] == name]
    return statistics.median(v) if v else float("nan")
def errs(name):
    return sum(r["errors"] for r in rows if r["name"] == name)
print(f"Medians of {rounds} rounds of {dur} s; closed loop = {conc} concurrent clients, open loop = {rate} req/s.\n")
print("| scenario | req/s | p50 ms | p99 ms | errors | req/s vs reference | p99 vs reference |")
print("|---|---|---|---|---|---|---|")
for name, ref in [("reference-closed", None), ("get-closed", "reference-closed"), ("list-closed", "reference-closed"),
                  ("page50-closed", "reference-closed"), ("create-closed", "reference-closed"),
                  ("reference-open", None), ("get-open", "reference-open"), ("list-open", "reference-open"),
                  ("page50-open", "reference-open")]:
    rps, p50, p99 = med(name, "rps"), med(name, "p50_ms"), med(name, "p99_ms")
    if ref:
        r1 = f"{rps / med(ref, 'rps'):.2f}x"
        r2 = f"{p99 / med(ref, 'p99_ms'):.2f}x"
    else:
        r1 = r2 = "1.00x"
    print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs(name)} | {r1} | {r2} |")
PY
