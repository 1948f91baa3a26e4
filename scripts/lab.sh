#!/usr/bin/env bash
# The main job on a fresh machine: install what the lab needs, build Manx,
# run `manx-lab` with the given arguments (default: `up --nodes 3`).
#   scripts/lab.sh up --nodes 3 --mode vxlan
#   scripts/lab.sh status
#   scripts/lab.sh down
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "manx-lab: needs root for network namespaces: sudo $0 $*" >&2; exit 1
fi
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler libprotobuf-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v nft >/dev/null || need+=(nftables)
if [ "${#need[@]}" -gt 0 ]; then
  echo "manx-lab: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
echo "manx-lab: building (cargo build --release)" >&2
cargo build --release -q --workspace --bins
[ $# -gt 0 ] || set -- up --nodes 3
exec target/release/manx-lab "$@"
