#!/usr/bin/env bash
# BIRD 1.6 (the BIRD Calico is built on) and bird2 both install /usr/sbin/bird.
# Keep bird2 installed and unpack bird 1.6 into /opt/bird1 with apt-get download + dpkg -x.
# Interop tests find it at /opt/bird1/usr/sbin/bird (override: MANX_BIRD1).
set -euo pipefail
dest=${1:-/opt/bird1}
if [ -x "$dest/usr/sbin/bird" ]; then exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q bird >/dev/null)
mkdir -p "$dest"
dpkg -x "$tmp"/bird_*.deb "$dest"
"$dest/usr/sbin/bird" --version 2>&1 | head -n1
