#!/usr/bin/env bash
# Builds the jobgate container image with buildah, from scratch: the binary, the shared libraries it
# links (found with ldd), CA certificates, a non-root user (10001) and nothing else — no shell, no
# package manager. Needs no container engine and no daemon (vfs storage, chroot isolation).
#
#   deploy/image/build.sh [--binary PATH] [--tag NAME:VERSION] [--out DIR]
#
# Without --binary it builds `cargo build --release --locked`. The image is committed to buildah's
# storage under target/image/storage and written as an OCI layout to DIR (default target/image/oci),
# from where `skopeo copy oci:target/image/oci:0.1.0 docker://REGISTRY/…/jobgate:0.1.0` pushes it.
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=""
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="jobgate:$version"
out="target/image/oci"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
command -v buildah >/dev/null || { echo "buildah is missing (Debian: apt-get install buildah)" >&2; exit 1; }
if [ -z "$binary" ]; then
    cargo build --release --locked
    binary=target/release/jobgate
fi
[ -x "$binary" ] || { echo "$binary is not an executable" >&2; exit 1; }

root="$(mktemp -d "${TMPDIR:-/tmp}/jobgate-rootfs.XXXXXX")"
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$binary" "$root/usr/local/bin/jobgate"
# Every shared library the binary loads, and the dynamic loader, at the paths it looks for them.
ldd "$binary" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]*ld-linux/ { print $1 }' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/etc/jobgate" "$root/var/lib/jobgate" "$root/tmp"
chmod 1777 "$root/tmp"
chown 10001:10001 "$root/var/lib/jobgate"
printf 'root:x:0:0:root:/:/nonexistent\njobgate:x:10001:10001:jobgate:/var/lib/jobgate:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\njobgate:x:10001:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

storage=(--storage-driver vfs --root "$PWD/target/image/storage" --runroot "$PWD/target/image/run")
export BUILDAH_ISOLATION=chroot
container="$(buildah "${storage[@]}" from scratch)"
trap 'buildah "${storage[@]}" rm "$container" >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
buildah "${storage[@]}" copy "$container" "$root" / >/dev/null
buildah "${storage[@]}" config \
    --user 10001:10001 \
    --workingdir /var/lib/jobgate \
    --entrypoint '["/usr/local/bin/jobgate"]' \
    --cmd '["serve", "--config", "/etc/jobgate/jobgate.yaml"]' \
    --port 8443/tcp --port 9443/tcp \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.title=jobgate \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    "$container"
buildah "${storage[@]}" commit --quiet --format oci "$container" "$tag" >/dev/null
rm -rf "$out"
mkdir -p "$(dirname "$out")"
buildah "${storage[@]}" push --quiet "$tag" "oci:$out:${tag##*:}"
echo "built $tag: oci:$out:${tag##*:}"
