#!/usr/bin/env bash
# The whole test suite: installs what the tests need (servers, clients, validators), then runs every
# test — unit, end-to-end with real clients, deploy checks, the benches once in test mode — and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: lighttpd serves git http-backend; git, curl and openssl are clients; prometheus
# (with promtool) checks and scrapes deploy/.
missing=()
for tool in lighttpd:lighttpd curl:curl git:git openssl:openssl prometheus:prometheus promtool:prometheus python3:python3-venv; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
git_backend="$(git --exec-path)/git-http-backend"
[ -x "$git_backend" ] || { echo "missing $git_backend"; exit 1; }

# PyPI tools in a venv of our own.
venv=target/tools/venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0
fi
export KUBERNETES_VALIDATE="$PWD/$venv/bin/kubernetes-validate"

cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
