# Shared by the benchmarks that run rigboxd (bench/edge, bench/ai-proxy): start it, wait until
# it is ready, and give it a user with an API key and a running workspace. Source it after
# setting `bin` (the directory of the release binaries), `work` (the run's scratch directory,
# holding `rigboxd.toml`) and `pids` (the processes the script's cleanup kills). `RUN` is an
# optional command prefix for rigboxd and every API call (bench/ai-proxy: `ip netns exec NS`).

# rigboxd_up ARGS...: starts `rigboxd up ARGS` on $work's config and data directory (log in
# $work/rigboxd.log) and waits for its ready.json. Sets rigboxd_pid and api (the API's base URL).
rigboxd_up() {
    ${RUN:-} "$bin/rigboxd" up "$@" --config "$work/rigboxd.toml" --data-dir "$work/data" \
        > "$work/rigboxd.log" 2>&1 &
    rigboxd_pid=$!
    pids+=("$rigboxd_pid")
    for _ in $(seq 1 300); do [ -f "$work/data/ready.json" ] && break; sleep 0.1; done
    [ -f "$work/data/ready.json" ] || { cat "$work/rigboxd.log" >&2; exit 1; }
    api="$(jq -r .api_url "$work/data/ready.json")/api/v1"
}

# ready FIELD: a field of rigboxd's ready.json (bridge_url, https_url, ...).
ready() { jq -r ".$1" "$work/data/ready.json"; }

# admin ARGS...: `rigboxd admin` on the running platform's data.
admin() { "$bin/rigboxd" admin --config "$work/rigboxd.toml" --data-dir "$work/data" "$@"; }

# call METHOD PATH [BODY]: an API call as the bench user (after bench_user).
call() {
    ${RUN:-} curl -sf "$api$2" -X "$1" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' ${3:+-d "$3"}
}

# bench_user: creates bench@example.com and signs it in with an API key (sets token).
bench_user() {
    printf 'bench-password-1\n' | admin user create --email bench@example.com >/dev/null
    local session
    session="$(${RUN:-} curl -sf "$api/auth/login" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"bench-password-1"}' | jq -r .token)"
    token="$(${RUN:-} curl -sf "$api/api-keys" -H "authorization: Bearer $session" \
        -H 'content-type: application/json' -d '{"name":"bench"}' | jq -r .key)"
}

# bench_workspace: creates the workspace "bench" and starts it (sets ws_id once it runs).
bench_workspace() {
    ws_id="$(call POST /workspaces '{"name":"bench"}' | jq -r .id)"
    for _ in $(seq 1 100); do [ "$(call GET "/workspaces/$ws_id" | jq -r .status)" = provisioned ] && break; sleep 0.1; done
    call POST "/workspaces/$ws_id/start" '{}' >/dev/null
    for _ in $(seq 1 100); do [ "$(call GET "/workspaces/$ws_id" | jq -r .status)" = running ] && break; sleep 0.1; done
    [ "$(call GET "/workspaces/$ws_id" | jq -r .status)" = running ] || { echo "the bench workspace does not run" >&2; exit 1; }
}
