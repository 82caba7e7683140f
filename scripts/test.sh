#!/usr/bin/env bash
# The whole test suite: installs what the tests need (servers and clients), then runs every test —
# unit, end-to-end with real clients, and the benches once in test mode — and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests drive: lighttpd serves git http-backend; git and curl are clients.
missing=()
command -v lighttpd >/dev/null || missing+=(lighttpd)
command -v curl >/dev/null || missing+=(curl)
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
git_backend="$(git --exec-path)/git-http-backend"
[ -x "$git_backend" ] || { echo "missing $git_backend"; exit 1; }

cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
