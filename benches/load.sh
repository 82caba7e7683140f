#!/usr/bin/env bash
# Load benchmark: jobgate (enforcing a job token: verify is cached, decide, forward) next to Caddy (a plain
# TLS reverse proxy, no token checks) in front of the same nginx upstream, alternating, same wrk settings.
# Report ratios, not absolute numbers: these machines are shared 2-core VMs and wrk runs on the same cores.
#   benches/load.sh [ROUNDS] [SECONDS] [CONNECTIONS]     (needs: cargo build --release; apt caddy wrk nginx)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} seconds=${2:-8} conns=${3:-32}
bin=target/release/jobgate
[ -x "$bin" ] || cargo build --release
for tool in caddy wrk nginx; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install caddy wrk nginx)"; exit 1; }; done

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
. benches/common.sh
up=$(port) jg=$(port) jga=$(port) cd_=$(port)

mkdir -p "$dir/policies"
start_nginx "$dir" "$up"

"$bin" certs generate --out "$dir/certs" >/dev/null
"$bin" keys generate --out "$dir/keys" >/dev/null
echo "projects: { acme/app: { id: 42 } }" > "$dir/policies/p.yaml"
cat > "$dir/jobgate.yaml" <<YAML
listen: { public: "127.0.0.1:$jg", admin: "127.0.0.1:$jga" }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers: [ { name: ci, iss: bench, audiences: [jobgate], jwks_file: keys/jwks.json } ]
policy_dir: policies
upstreams: { git: { url: "http://127.0.0.1:$up" } }
audit: { file: /dev/null }
YAML
RUST_LOG=error "$bin" serve --config "$dir/jobgate.yaml" 2>/dev/null &
cat > "$dir/Caddyfile" <<CADDY
{
  admin off
  auto_https off
}
https://127.0.0.1:$cd_ {
  bind 127.0.0.1
  tls $dir/certs/server.pem $dir/certs/server-key.pem
  reverse_proxy 127.0.0.1:$up
}
CADDY
caddy run --config "$dir/Caddyfile" --adapter caddyfile >/dev/null 2>&1 &
token=$("$bin" token mint --key "$dir/keys/signing-key.pem" --iss bench --aud jobgate --project-path acme/app --project-id 42 --job-id 1)
for p in $up $jg $cd_; do for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
path="/acme/app.git/info/refs?service=git-upload-pack"
curl -sk -o /dev/null -w "jobgate answers %{http_code}\n" -H "JOB-TOKEN: $token" "https://127.0.0.1:$jg$path"
curl -sk -o /dev/null -w "caddy answers %{http_code}\n" "https://127.0.0.1:$cd_$path"

run() { wrk -t2 -c"$conns" -d"${seconds}s" --latency "$@" | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'; }
printf "%-6s %-8s %12s %10s\n" round proxy req/s p99
for r in $(seq "$rounds"); do
    read -r rps p99 < <(run -H "JOB-TOKEN: $token" "https://127.0.0.1:$jg$path"); printf "%-6s %-8s %12s %10s\n" "$r" jobgate "$rps" "$p99"; echo "jobgate $rps" >> "$dir/results"
    read -r rps p99 < <(run "https://127.0.0.1:$cd_$path"); printf "%-6s %-8s %12s %10s\n" "$r" caddy "$rps" "$p99"; echo "caddy $rps" >> "$dir/results"
done
awk '{s[$1]+=$2; n[$1]++} END {j=s["jobgate"]/n["jobgate"]; c=s["caddy"]/n["caddy"]; printf "mean req/s: jobgate %.0f, caddy %.0f, ratio jobgate/caddy %.2f\n", j, c, j/c}' "$dir/results"
