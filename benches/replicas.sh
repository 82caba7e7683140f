#!/usr/bin/env bash
# Does sharing revocations through Redis cost the request path anything? Two jobgate processes in
# front of one nginx, alike but for `revocations.redis`; wrk against each in alternating rounds, each
# while a second client revokes 50 jobs a second through its admin listener (so the Redis one's
# writes and subscription are busy, and both pay the same for the revoking client). Report the ratio, not the absolute numbers: these machines are shared
# 2-core VMs and wrk runs on the same cores.
#   benches/replicas.sh [ROUNDS] [SECONDS] [CONNECTIONS]   (needs: cargo build --release; apt wrk nginx redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} seconds=${2:-8} conns=${3:-32}
bin=target/release/jobgate
[ -x "$bin" ] || cargo build --release
for tool in wrk nginx redis-server curl; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx redis-server curl)"; exit 1; }; done

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
. benches/common.sh
up=$(port) redis=$(port)

mkdir -p "$dir/policies"
start_nginx "$dir" "$up"
redis-server --bind 127.0.0.1 --port "$redis" --save "" --appendonly yes --appendfsync always --dir "$dir" >/dev/null &

"$bin" certs generate --out "$dir/certs" >/dev/null
"$bin" keys generate --out "$dir/keys" >/dev/null
echo "projects: { acme/app: { id: 42 } }" > "$dir/policies/p.yaml"
echo bench-admin > "$dir/admin-token"
declare -A public admin
for variant in local redis; do
    public[$variant]=$(port) admin[$variant]=$(port)
    shared=""
    [ "$variant" = redis ] && shared="redis: { url: 'redis://127.0.0.1:$redis', key_prefix: bench }"
    cat > "$dir/$variant.yaml" <<YAML
listen: { public: "127.0.0.1:${public[$variant]}", admin: "127.0.0.1:${admin[$variant]}" }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers: [ { name: ci, iss: bench, audiences: [jobgate], jwks_file: keys/jwks.json } ]
policy_dir: policies
upstreams: { git: { url: "http://127.0.0.1:$up" } }
audit: { file: /dev/null }
admin: { token_file: admin-token }
revocations: { $shared }
YAML
    RUST_LOG=error "$bin" --log-format text serve --config "$dir/$variant.yaml" 2>>"$dir/jobgate.err" &
done
token=$("$bin" token mint --key "$dir/keys/signing-key.pem" --iss bench --aud jobgate --project-path acme/app --project-id 42 --job-id 1)
for p in $up "${public[local]}" "${public[redis]}"; do for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$p") 2>/dev/null && break; sleep 0.1; done; done
path="/acme/app.git/info/refs?service=git-upload-pack"
for variant in local redis; do
    curl -sk -o /dev/null -w "jobgate ($variant) answers %{http_code}\n" -H "JOB-TOKEN: $token" "https://127.0.0.1:${public[$variant]}$path"
done

revoke_stream() { # 50 revocations a second at variant $1, each a job the benchmark's token is not
    local job=100000
    while true; do
        curl -s -o /dev/null -H "Authorization: Bearer bench-admin" --data "{\"job_id\": $job}" "http://127.0.0.1:${admin[$1]}/-/revocations" || true
        job=$((job + 1)); sleep 0.02
    done
}
run() { wrk -t2 -c"$conns" -d"${seconds}s" --latency -H "JOB-TOKEN: $token" "$1" | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'; }
printf "%-6s %-22s %12s %10s\n" round jobgate req/s p99
for r in $(seq "$rounds"); do
    for variant in local redis; do
        revoke_stream "$variant" & streamer=$!
        read -r rps p99 < <(run "https://127.0.0.1:${public[$variant]}$path")
        kill "$streamer"; wait "$streamer" 2>/dev/null || true
        printf "%-6s %-22s %12s %10s\n" "$r" "$variant, revoking 50/s" "$rps" "$p99"; echo "$variant $rps" >> "$dir/results"
    done
done
held=$(curl -s -H "Authorization: Bearer bench-admin" "http://127.0.0.1:${admin[redis]}/-/revocations" | grep -o '"job_id"' | wc -l)
echo "revocations held by the redis replica afterwards: $held"
awk '{s[$1]+=$2; n[$1]++} END {l=s["local"]/n["local"]; r=s["redis"]/n["redis"]; printf "mean req/s: local %.0f, redis %.0f, ratio redis/local %.2f\n", l, r, r/l}' "$dir/results"
