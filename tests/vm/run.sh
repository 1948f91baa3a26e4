#!/usr/bin/env bash
# IPIP and WireGuard end to end in a real kernel: build static Manx binaries and run, in one boot
# of a Debian 6.1 kernel under qemu (through ../shared/vm/run-in-vm.sh, the repository's sibling
# `shared/` checkout), tests/vm/guest.sh: tests/vm/ipip-cluster.sh (a 4-node manx-lab cluster,
# ipipMode Always then CrossSubnet), then tests/vm/wireguard-cluster.sh (3 nodes with WireGuard:
# uplink capture, key rotation).
#
#   tests/vm/run.sh            # from anywhere; exit 0 = every check passed
#
# Exit status: 0 pass; 77 = this machine cannot run the VM (runner, qemu or kernel unavailable:
# the reason is printed as "vm-skip: <reason>"); anything else = a failure (guest output above).
# Environment:
#   STATIC_TARGET_DIR  CARGO_TARGET_DIR of the static build (default <repo>/target/static; reused)
#   MANX_VM_RUNNER     run-in-vm.sh to use (default <repo>/../shared/vm/run-in-vm.sh)
#   VM_MEM, VM_TIMEOUT passed to run-in-vm.sh (defaults here 2048 MiB, 1200 s: qemu TCG is slow)
#   MANX_VM_TESTS      guest scripts to run (default "ipip-cluster wireguard-cluster")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNNER=${MANX_VM_RUNNER:-$(dirname "$ROOT")/shared/vm/run-in-vm.sh}
skip() { echo "vm-skip: $*" >&2; exit 77; }
[ -f "$RUNNER" ] || skip "no VM runner at $RUNNER (clone shared/ beside the repo or set MANX_VM_RUNNER)"
[ "$(uname -m)" = x86_64 ] || skip "the VM image is x86_64; this machine is $(uname -m)"

T=${STATIC_TARGET_DIR:-$ROOT/target/static}
TRIPLE=x86_64-unknown-linux-gnu
echo "vm: static build into $T (reused between runs)" >&2
t0=$(date +%s)
# Outer cargo (e.g. when run from a test) may export flags meant for the host build: the static
# build must see only crt-static.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
# No debuginfo in the guest binaries: they are copied into the VM image, and CI disks are small.
(cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=false RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$T" "${CARGO:-cargo}" build \
  --release --target "$TRIPLE" -p manx-node -p manx-cni -p manx-ipam -p manxctl -p manx-e2e --bins)
BIN=$T/$TRIPLE/release
FILES=()
for b in manx-node manx manx-ipam manxctl manx-lab; do
  f=$BIN/$b
  [ -x "$f" ] || { echo "vm: $f missing after the build" >&2; exit 1; }
  # The guest has no libc: a dynamic binary would fail there with a confusing "not found".
  if ! ldd "$f" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    echo "vm: $f is dynamically linked (ldd: $(ldd "$f" 2>&1 | head -n3 | tr '\n' ' ')); check RUSTFLAGS" >&2
    exit 1
  fi
  FILES+=("$f")
done
t1=$(date +%s)
echo "vm: static build took $((t1 - t0)) s" >&2

# First use fetches qemu and the kernel into the VM cache: probe that with a trivial boot so a
# machine that cannot get them reports "cannot run" (77), not a failing cluster.
C=${VM_CACHE:-/var/cache/manx-vm}
if [ ! -x "$C/qemu/usr/bin/qemu-system-x86_64" ] || [ ! -d "$C/kernel/lib/modules" ]; then
  probe=$(mktemp /tmp/vm-probe.XXXXXX.sh)
  echo 'echo vm-probe-ok' >"$probe"
  if ! out=$(VM_TIMEOUT=300 bash "$RUNNER" "$probe" 2>&1) || ! grep -q vm-probe-ok <<<"$out"; then
    rm -f "$probe"
    echo "$out" | tail -n 20 >&2
    skip "cannot fetch or boot the VM (qemu-system-x86, busybox-static, linux-image from apt into $C)"
  fi
  rm -f "$probe"
fi

# The lab's L2 segments are Linux bridges; run-in-vm.sh loads no bridge module, so ship the
# kernel's own (llc, stp, bridge: in dependency order) and ipip-cluster.sh insmods them.
KMOD=$(ls -d "$C"/kernel/lib/modules/*/kernel 2>/dev/null | head -n1)
for m in net/llc/llc net/802/stp net/bridge/bridge; do
  f=$(ls "$KMOD/$m.ko"* 2>/dev/null | head -n1) || true
  [ -n "$f" ] || { echo "vm: $m.ko not found under $KMOD: the lab needs bridges" >&2; exit 1; }
  FILES+=("$f")
done

# manx-node runs `nft` (NAT outgoing; with the lab's natOutgoing=false only `nft list`), and the
# guest has none: ship this machine's nft with its libraries, behind a wrapper that points the
# loader at /opt, plus the nf_tables modules so `nft list` talks to a real nf_tables.
for m in lib/libcrc32c net/netfilter/nfnetlink net/netfilter/nf_tables; do
  f=$(ls "$KMOD/$m.ko"* 2>/dev/null | head -n1) || true
  [ -n "$f" ] && FILES+=("$f")
done
NFT=$(command -v nft || true)
[ -n "$NFT" ] || { echo "vm: no nft on this machine (apt-get install -y nftables): manx-node needs it" >&2; exit 1; }
X=$(mktemp -d /tmp/vm-extra.XXXXXX); trap 'rm -rf "$X"' EXIT
cp -L "$NFT" "$X/nft.bin"
printf '#!/bin/sh\nLD_LIBRARY_PATH=/opt exec /opt/nft.bin "$@"\n' >"$X/nft"; chmod +x "$X/nft"
FILES+=("$X/nft" "$X/nft.bin")
for l in $(ldd "$NFT" | grep -oE '/[^ ]+\.so[^ ]*' | grep -vE '/(libc\.so|ld-linux)'); do
  FILES+=("$l")
done

# WireGuard: the module and the crypto it needs (modules.dep of this kernel: wireguard needs
# libcurve25519-generic, curve25519-x86_64, libchacha20poly1305 (poly1305-x86_64,
# chacha-x86_64 -> libchacha), udp_tunnel and ip6_udp_tunnel, the last two loaded by the
# runner); wireguard-cluster.sh insmods them in dependency order.
for m in lib/crypto/libcurve25519-generic arch/x86/crypto/curve25519-x86_64 lib/crypto/libchacha \
         arch/x86/crypto/chacha-x86_64 arch/x86/crypto/poly1305-x86_64 lib/crypto/libchacha20poly1305 \
         drivers/net/wireguard/wireguard; do
  f=$(ls "$KMOD/$m.ko"* 2>/dev/null | head -n1) || true
  [ -n "$f" ] || { echo "vm: $m.ko not found under $KMOD: the WireGuard test needs it" >&2; exit 1; }
  FILES+=("$f")
done

# tcpdump for the WireGuard test's uplink capture: this machine's, with its libraries, behind a
# wrapper like nft's (.ci/run installs tcpdump).
TCPDUMP=$(command -v tcpdump || true)
[ -n "$TCPDUMP" ] || { echo "vm: no tcpdump on this machine (apt-get install -y tcpdump): the WireGuard test captures with it" >&2; exit 1; }
cp -L "$TCPDUMP" "$X/tcpdump.bin"
printf '#!/bin/sh\nLD_LIBRARY_PATH=/opt exec /opt/tcpdump.bin "$@"\n' >"$X/tcpdump"; chmod +x "$X/tcpdump"
FILES+=("$X/tcpdump" "$X/tcpdump.bin")
for l in $(ldd "$TCPDUMP" | grep -oE '/[^ ]+\.so[^ ]*' | grep -vE '/(libc\.so|ld-linux)'); do
  FILES+=("$l")
done

TESTS=${MANX_VM_TESTS:-ipip-cluster wireguard-cluster}
echo "$TESTS" >"$X/vm-tests"
FILES+=("$X/vm-tests")
for t in $TESTS; do
  [ -f "$ROOT/tests/vm/$t.sh" ] || { echo "vm: MANX_VM_TESTS names $t, but tests/vm/$t.sh does not exist" >&2; exit 1; }
  FILES+=("$ROOT/tests/vm/$t.sh")
done

export VM_MEM=${VM_MEM:-2048} VM_TIMEOUT=${VM_TIMEOUT:-1200}
rc=0
bash "$RUNNER" "$ROOT/tests/vm/guest.sh" "${FILES[@]}" || rc=$?
t2=$(date +%s)
echo "vm: guest run took $((t2 - t1)) s (exit $rc); total $((t2 - t0)) s" >&2
exit "$rc"
