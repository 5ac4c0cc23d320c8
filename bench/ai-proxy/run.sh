#!/usr/bin/env bash
# AI proxy benchmark, in one run, against the same fake upstream (rigbox-fake-ai, OpenAI/OpenRouter
# wire format) on loopback:
#   direct:  client -> fake upstream
#   ours:    client -> rigboxd's bridge (the managed AI proxy: caller identified by its source
#            address, price, reserve a hold, forward, meter, settle; every hold and charge is
#            committed to SQLite by the wallet's group-commit writer) -> fake upstream
#   litellm: client -> LiteLLM proxy (PyPI, pinned, one model routed to the fake's
#            OpenAI-compatible base with a key; no database) -> fake upstream
# Everything (the fake, rigboxd, LiteLLM and the client) runs in a network namespace of its own
# with only `lo` up: nothing can leave the machine. rigboxd runs the simulated VMM with
# `[sim] bridge_port`; the client connects from 127.16.0.N, which stands for the workspace VM
# holding 172.16.0.N.
# For each: latency of non-streaming chat completions (sequential, 1 keep-alive connection),
# time to first byte of streaming chat completions (sequential, 1 connection), and throughput
# (requests/s over CONNS keep-alive connections for DURATION seconds, closed loop). Prints
# medians of ROUNDS alternating rounds, the latency each proxy adds over direct, and the
# throughput ratio ours/LiteLLM. The load generator is bench/ai-proxy/loadgen (a workspace
# member; wrk cannot bind a source address or time the first byte of a stream). Also the latency
# of Anthropic's count_tokens, direct and through ours, which relays it unmetered (no rewrite of
# the body, no metering, no hold, no charge), one at a time and under load: the difference to chat
# completions is what metering and the wallet cost together. At the end, the wallet is checked:
# no open hold, one charge per request sent.
#
#   bench/ai-proxy/run.sh      (root, for `ip netns`; needs python3 with venv, jq; PyPI the first
#                               time, for the LiteLLM venv cached in ~/.cache/rigbox)
# Knobs: ROUNDS (3), N requests per sequential run for direct and ours (2000; N_STREAM for
# streams, 1000), N_LITELLM for LiteLLM (300), DURATION seconds per throughput run (5), CONNS
# (32), LITELLM_WORKERS (2, one per core), LITELLM=0 (leave LiteLLM out: a quick run of direct
# and ours while working on the proxy; no ratio to LiteLLM), PROFILE=1 (perf record rigboxd
# during one extra throughput run of ours and print where its CPU goes; PROFILE_OUT=FILE keeps
# perf.data; PROFILE_SCOPE=all records the whole machine instead: the fake upstream and the load
# generator share its cores with rigboxd), BIN=DIR (run the binaries in DIR, built beforehand,
# instead of building the checkout: to compare two builds side by side, alternate runs with BIN
# of each; CARGO_TARGET_DIR alone is no A/B, as the checkout is built into it). For the sides served by rigboxd, each run
# also reports rigboxd's CPU time and times scheduled onto a CPU per request (all its threads).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-3}" n="${N:-2000}" n_stream="${N_STREAM:-1000}" n_litellm="${N_LITELLM:-300}" duration="${DURATION:-5}"
conns="${CONNS:-32}" workers="${LITELLM_WORKERS:-2}" profile="${PROFILE:-0}" with_litellm="${LITELLM:-1}"
sides="direct ours"
[ "$with_litellm" = 1 ] && sides="$sides litellm"
target="${CARGO_TARGET_DIR:-target}"
litellm_pin='litellm[proxy]==1.81.13'
model="openai/gpt-4o-mini"
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (ip netns)" >&2; exit 1; }
for c in ip python3 jq flock sha256sum; do
    command -v "$c" >/dev/null || { echo "run.sh: needs $c (apt-get install iproute2 python3-venv jq util-linux coreutils)" >&2; exit 1; }
done
[ "$profile" = 1 ] && { command -v perf >/dev/null || { echo "run.sh: PROFILE=1 needs perf" >&2; exit 1; }; }
if [ -n "${BIN:-}" ]; then
    bin="$BIN"
else
    cargo build -q --release -p rigboxd -p rigbox-testkit -p rigbox-ai-loadgen --bins
    bin="$target/release"
fi

if [ "$with_litellm" = 1 ]; then
# LiteLLM, pinned, in a cached venv (created in place under a lock: its scripts' shebangs).
cache="${RIGBOX_CACHE:-$HOME/.cache/rigbox}"
venv="$cache/venv-litellm-$(printf '%s\n' "$litellm_pin" | sha256sum | cut -c1-12)"
if [ ! -f "$venv/.rigbox-complete" ]; then
    mkdir -p "$cache"
    (
        flock 9
        if [ ! -f "$venv/.rigbox-complete" ]; then
            echo "creating $venv ($litellm_pin; a few minutes)"
            rm -rf "$venv"
            python3 -m venv "$venv"
            "$venv/bin/python" -m pip install -q --no-input --disable-pip-version-check "$litellm_pin"
            printf '%s\n' "$litellm_pin" > "$venv/.rigbox-complete"
        fi
    ) 9>"$venv.lock"
fi
fi

work="$(mktemp -d)"
ns="rigbox-bench-ai-$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    # Whatever still runs in the namespace was started by this script (LiteLLM's workers).
    for p in "${pids[@]}" $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
. bench/lib.sh
ip netns add "$ns"
ip -n "$ns" link set lo up
[ "$(ip -n "$ns" -o link | wc -l)" = 1 ] || { echo "the namespace has more than lo" >&2; exit 1; }
nsx() { ip netns exec "$ns" "$@"; }
echo "load before: $(uptime)"

# The fake upstream.
# (Background processes start with `ip netns exec` itself, not a shell function, so that $! is
# their PID.)
ip netns exec "$ns" "$bin/rigbox-fake-ai" --listen 127.0.0.1:0 > "$work/fake.env" 2> "$work/fake.log" &
fake_pid=$!
pids+=("$fake_pid")
for _ in $(seq 1 100); do grep -q FAKE_AI_OPENROUTER_URL "$work/fake.env" && break; sleep 0.1; done
fake_url="$(sed -n 's/^FAKE_AI_OPENROUTER_URL=//p' "$work/fake.env")"
[ -n "$fake_url" ] || { cat "$work/fake.log" >&2; exit 1; }
fake_anthropic="$(sed -n 's/^FAKE_AI_ANTHROPIC_URL=//p' "$work/fake.env")"
fake_key="sk-or-fake"

# rigboxd: simulated VMs, the bridge (and its AI proxy) on loopback.
cat > "$work/rigboxd.toml" <<EOF
[sim]
provision_ms = 50
boot_ms = 200
stop_ms = 50
bridge_port = 0

[ai]
base_url = "$fake_url"
api_key = "$fake_key"
price_refresh = false

[[ai.prices]]
model = "$model"
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.6

[ai.anthropic]
base_url = "$fake_anthropic"
api_key = "sk-ant-fake"
EOF
RUN="ip netns exec $ns"
rigboxd_up --vmm sim --tls off --http-port 0 --ssh-port 0
bridge="$(ready bridge_url)"
bench_user
admin credits adjust --email bench@example.com --credits 1000000 --note bench >/dev/null
bench_workspace
lease="$(call GET "/workspaces/$ws_id" | jq -r .ip_address)"
case "$lease" in 172.16.0.*) local_ip="127.16.0.${lease##*.}" ;; *) echo "unexpected lease $lease" >&2; exit 1 ;; esac

if [ "$with_litellm" = 1 ]; then
# LiteLLM: one model, routed to the fake's OpenAI-compatible base with the fake's key.
litellm_port="$(nsx python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/litellm.yaml" <<EOF
model_list:
  - model_name: $model
    litellm_params:
      model: openai/$model
      api_base: $fake_url
      api_key: $fake_key
EOF
(cd "$work" && exec env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_PROXY='*' \
    ip netns exec "$ns" "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 \
    --port "$litellm_port" --num_workers "$workers" --telemetry False > "$work/litellm.log" 2>&1) &
pids+=($!)
# Every worker up: uvicorn's supervisor restarts a worker whose start outlasts its health check
# (LiteLLM's imports take seconds on a loaded machine), so wait for all of them (5 minutes).
litellm_up() {
    [ "$(grep -c 'Application startup complete' "$work/litellm.log")" -ge "$workers" ] &&
        nsx curl -sf "http://127.0.0.1:$litellm_port/health/liveliness" >/dev/null 2>&1
}
for _ in $(seq 1 1500); do litellm_up && break; sleep 0.2; done
litellm_up || { grep -v '^ ' "$work/litellm.log" | tail -30 >&2; echo "LiteLLM did not start" >&2; exit 1; }
litellm_restarts="$(grep -c 'died' "$work/litellm.log" || true)"
fi

body='{"model":"'"$model"'","messages":[{"role":"user","content":"Say hello to everyone reading the proxy benchmark"}],"max_tokens":64}'
# The proxy without its wallet, for where the time goes: Anthropic's count_tokens is relayed
# unmetered (caller identified, account read, key injected, forwarded), no hold, no charge.
ct_body='{"model":"claude-sonnet-4","messages":[{"role":"user","content":"Say hello to everyone reading the proxy benchmark"}]}'
stream_body='{"model":"'"$model"'","messages":[{"role":"user","content":"Say hello to everyone reading the proxy benchmark"}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true}}'
# loadgen SIDE KIND ROUND MODE [args]: one run against SIDE; its JSON, tagged, goes to results.
loadgen() {
    local side="$1" kind="$2" round="$3" out
    shift 3
    local t=()
    case "$side" in
        direct) t=(--url "$fake_url/chat/completions" --header "authorization: Bearer $fake_key") ;;
        ours) t=(--url "$bridge/v1/chat/completions" --local "$local_ip") ;;
        litellm) t=(--url "http://127.0.0.1:$litellm_port/v1/chat/completions") ;;
        direct_passthrough) t=(--url "$fake_anthropic/v1/messages/count_tokens" --header "x-api-key: sk-ant-fake" --header "anthropic-version: 2023-06-01") ;;
        ours_passthrough) t=(--url "$bridge/v1/messages/count_tokens" --local "$local_ip" --header "anthropic-version: 2023-06-01") ;;
    esac
    local before after
    before="$(cpu_of "$rigboxd_pid"), $(cpu_of "$fake_pid")"
    out="$(nsx "$bin/rigbox-ai-loadgen" "$@" "${t[@]}" 2>>"$work/loadgen.err")"
    after="$(cpu_of "$rigboxd_pid"), $(cpu_of "$fake_pid")"
    # CPU time per request of the fake upstream (every side), of rigboxd and its times scheduled
    # onto a CPU (the sides it serves), and of the load generator (it measures its own): the
    # three share the machine's cores (warm-ups included: they are requests served).
    out="$(echo "$out" | jq -c --argjson b "[$before]" --argjson a "[$after]" --arg side "$side" '
        (.sent // 0) as $n | if $n > 0 then
            . + {fake_cpu_us_per_req: (($a[2] - $b[2]) / 1000 / $n), loadgen_cpu_us_per_req: (.cpu_ns / 1000 / $n)}
            + if ($side | startswith("ours")) then {cpu_us_per_req: (($a[0] - $b[0]) / 1000 / $n), runs_per_req: (($a[1] - $b[1]) / $n)} else {} end
        else . end')"
    echo "$out" | jq -c --arg side "$side" --arg kind "$kind" --argjson round "$round" '. + {side: $side, kind: $kind, round: $round}' >> "$work/results.jsonl"
    echo "$out" | jq -r --arg side "$side" --arg kind "$kind" '"  \($kind) \($side): ok \(.ok) errors \(.errors) p50 \(.p50_us) us p99 \(.p99_us) us\(if .end_p50_us then " (stream end p50 \(.end_p50_us) us)" else "" end) req/s \(.rps | floor)\(if .cpu_us_per_req then "; rigboxd CPU \(.cpu_us_per_req | round) us, \(.runs_per_req * 10 | round / 10) runs per request" else "" end)\(if .fake_cpu_us_per_req then "; fake \(.fake_cpu_us_per_req | round) us, loadgen \(.loadgen_cpu_us_per_req | round) us" else "" end)"'
}
# cpu_of PID: "NS, RUNS": CPU time (ns) and times scheduled onto a CPU, summed over its threads
# (/proc/PID/task/*/schedstat).
cpu_of() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ns += $1; runs += $3} END {printf "%.0f, %.0f", ns, runs}'; }
# n_of SIDE [N]: requests of a sequential run (LiteLLM is two orders of magnitude slower).
n_of() { if [ "$1" = litellm ]; then echo "$n_litellm"; else echo "${2:-$n}"; fi; }

# Every side answers, with usage (ours: its cost header is checked by the e2e tests).
for side in $sides; do
    loadgen "$side" smoke 0 latency --n 3 --warmup 0 --body "$body" --expect '"completion_tokens"' >/dev/null
    loadgen "$side" smoke 0 ttfb --n 3 --warmup 0 --body "$stream_body" --expect 'data: [DONE]' >/dev/null
done
for side in direct_passthrough ours_passthrough; do
    loadgen "$side" smoke 0 latency --n 3 --warmup 0 --body "$ct_body" --expect '"input_tokens"' >/dev/null
done
if [ "$(jq -s '[.[] | select(.kind == "smoke") | .errors] | add' "$work/results.jsonl")" != 0 ]; then
    echo "a side does not answer:" >&2; cat "$work/loadgen.err" >&2; tail -20 "$work/litellm.log" >&2; exit 1
fi

for r in $(seq 1 "$rounds"); do
    echo "round $r"
    for side in $sides; do
        loadgen "$side" latency "$r" latency --n "$(n_of "$side")" --warmup 50 --body "$body" --expect '"completion_tokens"'
    done
    for side in direct_passthrough ours_passthrough; do
        loadgen "$side" latency "$r" latency --n "$n" --warmup 50 --body "$ct_body" --expect '"input_tokens"'
    done
    for side in $sides; do
        loadgen "$side" ttfb "$r" ttfb --n "$(n_of "$side" "$n_stream")" --warmup 50 --body "$stream_body" --expect 'data: [DONE]'
    done
    for side in $sides; do
        loadgen "$side" throughput "$r" throughput --conns "$conns" --secs "$duration" --warmup-secs 1 --body "$body" --expect '"completion_tokens"'
    done
    # The unmetered relay's ceiling: what the hop alone costs under load.
    loadgen ours_passthrough throughput "$r" throughput --conns "$conns" --secs "$duration" --warmup-secs 1 --body "$ct_body" --expect '"input_tokens"'
done

if [ "$profile" = 1 ]; then
    if [ "${PROFILE_SCOPE:-rigboxd}" = all ]; then
        echo "profile: perf record of the whole machine during one more throughput run of ours"
        scope=(-a)
    else
        echo "profile: perf record of rigboxd during one more throughput run of ours"
        scope=(-p "$rigboxd_pid")
    fi
    perf record -F 999 -g "${scope[@]}" -o "$work/perf.data" -- sleep "$((duration + 1))" 2>/dev/null &
    perf_pid=$!
    loadgen ours profile 0 throughput --conns "$conns" --secs "$duration" --warmup-secs 0.5 --body "$body" --expect '"completion_tokens"'
    wait "$perf_pid" || true
    if [ -n "${PROFILE_OUT:-}" ]; then cp "$work/perf.data" "$PROFILE_OUT"; fi
    # perf's --stdio rows end in empty columns; strip them.
    report() { perf report -i "$work/perf.data" --stdio -g none "$@" 2>/dev/null | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | grep '%' || true; }
    echo "  rigboxd's CPU by thread (rigbox-wallet = the wallet writer, sqlx-sqlite-wor = sqlx's SQLite threads):"
    report --no-children --sort comm | head -4 || true
    echo "  inclusive share of: SQL statements, BEGIN/COMMIT, WAL checkpoints, fsync, cross-thread wake-ups, JSON:"
    report --children --sort symbol | grep -E '\] (sqlite3_step|sqlite3_exec|walCheckpoint|fsync|<flume::signal::SyncSignal as flume::signal::Signal>::fire|serde_json::value::de::<impl serde_core::de::Deserialize for serde_json::value::Value>::deserialize|rigbox_ai::meter::meter_body)$' | awk '!seen[$NF]++'
    echo "  top symbols (self):"
    report --no-children --sort dso,symbol | head -20 | cut -c1-140 || true
fi
echo "load after: $(uptime)"
if [ "$with_litellm" = 1 ]; then
    echo "LiteLLM worker restarts: $litellm_restarts while starting, $(( $(grep -c 'died' "$work/litellm.log" || true) - litellm_restarts )) during the measurements"
fi

# Every request through ours was charged exactly once and nothing stays reserved. (A hold the
# wallet settles in the batch that applies it has no row of its own: its charge records it.)
ours_sent="$(jq -s '[.[] | select(.side == "ours") | .sent] | add' "$work/results.jsonl")"
books="$(python3 - "$work/data/rigbox.db" "$ours_sent" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
sent = int(sys.argv[2])
holds = dict(db.execute("SELECT state, count(*) FROM ai_holds GROUP BY state").fetchall())
charges, distinct = db.execute(
    "SELECT count(*), count(DISTINCT request_id) FROM ledger WHERE kind = 'charge'").fetchone()
ok = holds.get("open", 0) == 0 and charges == distinct == sent
print(f"{sent} requests sent, {charges} charges ({distinct} requests), hold rows by state {holds}: "
      f"{'every request charged once' if ok else 'MISMATCH'}")
EOF
)"
echo "ours, every run (smoke tests and warm-ups included): $books"
if [ -s "$work/loadgen.err" ]; then echo "load generator errors (first of each run):"; sort "$work/loadgen.err" | uniq -c | head -10 || true; fi

echo
summary='
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def m($side; $kind; $f): [.[] | select(.side == $side and .kind == $kind) | .[$f]] | median;
  def f0: if . == null then "-" else (. | round | tostring) end;
  def r1: if . == null then "-" else (. * 10 | round / 10 | tostring) end;
  def r2: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
  def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
  def added($s; $kind; $f): m($s; $kind; $f) as $a | m("direct"; $kind; $f) as $d | if $a == null or $d == null then null else $a - $d end;
'
jq -rs "$summary"'
  ["side", "latency_p50_us", "latency_p99_us", "ttfb_p50_us", "ttfb_p99_us", "stream_end_p50_us", "req/s", "loaded_p50_us", "loaded_p99_us", "cpu_us/req", "loaded_cpu_us/req", "errors"],
  (["direct", "ours", "litellm", "direct_passthrough", "ours_passthrough"][] as $s | [$s,
      (m($s; "latency"; "p50_us") | f0), (m($s; "latency"; "p99_us") | f0),
      (m($s; "ttfb"; "p50_us") | f0), (m($s; "ttfb"; "p99_us") | f0), (m($s; "ttfb"; "end_p50_us") | f0),
      (m($s; "throughput"; "rps") | f0),
      (m($s; "throughput"; "p50_us") | f0), (m($s; "throughput"; "p99_us") | f0),
      (m($s; "latency"; "cpu_us_per_req") | f0), (m($s; "throughput"; "cpu_us_per_req") | f0),
      ([.[] | select(.side == $s and .kind != "smoke") | .errors] | add | tostring)])
  | @tsv' "$work/results.jsonl" | column -t -s $'\t'
echo
jq -rs --arg rounds "$rounds" --arg conns "$conns" "$summary"'
  "medians of \($rounds) rounds; added = side - direct (µs); throughput with \($conns) connections",
  (["ours", "litellm"][] as $s | select(m($s; "latency"; "p50_us") != null)
    | "  \($s) adds: latency p50 \(added($s; "latency"; "p50_us") | f0), p99 \(added($s; "latency"; "p99_us") | f0); ttfb p50 \(added($s; "ttfb"; "p50_us") | f0), p99 \(added($s; "ttfb"; "p99_us") | f0)"),
  "  target: ours adds < 200 µs at p50 and < 1000 µs at p99",
  "  ours relaying unmetered (count_tokens: no rewrite, no metering, no wallet) adds: latency p50 \(m("ours_passthrough"; "latency"; "p50_us") - m("direct_passthrough"; "latency"; "p50_us") | f0), p99 \(m("ours_passthrough"; "latency"; "p99_us") - m("direct_passthrough"; "latency"; "p99_us") | f0)",
  "  rigboxd CPU per request: metered \(m("ours"; "latency"; "cpu_us_per_req") | f0) µs one at a time, \(m("ours"; "throughput"; "cpu_us_per_req") | f0) µs under load; unmetered \(m("ours_passthrough"; "latency"; "cpu_us_per_req") | f0) µs one at a time, \(m("ours_passthrough"; "throughput"; "cpu_us_per_req") | f0) µs under load (\(m("ours_passthrough"; "throughput"; "rps") | f0) req/s)",
  "  under load, on the same cores, per request: fake upstream \(m("ours"; "throughput"; "fake_cpu_us_per_req") | f0) µs, load generator \(m("ours"; "throughput"; "loadgen_cpu_us_per_req") | f0) µs (direct: \(m("direct"; "throughput"; "fake_cpu_us_per_req") | f0) and \(m("direct"; "throughput"; "loadgen_cpu_us_per_req") | f0) µs)",
  "  added latency litellm/ours: p50 \(div(added("litellm"; "latency"; "p50_us"); added("ours"; "latency"; "p50_us")) | r1)x, ttfb p50 \(div(added("litellm"; "ttfb"; "p50_us"); added("ours"; "ttfb"; "p50_us")) | r1)x",
  "  throughput ours/litellm: \(div(m("ours"; "throughput"; "rps"); m("litellm"; "throughput"; "rps")) | r1)x (target >= 100x); ours/direct: \(div(m("ours"; "throughput"; "rps"); m("direct"; "throughput"; "rps")) | r2)x"
' "$work/results.jsonl"
