#!/bin/bash
# Regenerate the captured BGP messages used by tests/it/packet_captures.rs.
#
# BIRD 2 and GoBGP peer inside two throw-away network namespaces joined by a
# veth pair; tcpdump records the session while both sides announce IPv4 and
# IPv6 (MP_REACH) routes with communities / large / extended communities,
# withdraw them, ask for route refresh and finally BIRD shuts the session
# down with a Cease + shutdown communication. The TCP streams are then cut
# into BGP messages, one hex line each, one file per direction.
#
# Needs root, bird2 (/usr/sbin/bird, birdc), gobgpd/gobgp, tcpdump, tshark,
# python3. Addresses: 198.18.200.0/24 and fd42:18:200::/64 only.
# Usage: capture.sh [output-dir]   (default: the directory of this script)
set -euo pipefail

OUT=$(cd "${1:-$(dirname "$0")}" && pwd)
NS_A="mxpk-$$-bird"
NS_B="mxpk-$$-gobgp"
WORK=$(mktemp -d /tmp/mxpk-capture.XXXXXX)
PIDS=()

cleanup() {
    set +e
    # Everything still running inside our namespaces, then what we started.
    for ns in "$NS_A" "$NS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    done
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$NS_A" 2>/dev/null
    ip netns del "$NS_B" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

A() { ip netns exec "$NS_A" "$@"; }
B() { ip netns exec "$NS_B" "$@"; }

ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add mxpk-a type veth peer name mxpk-b
ip link set mxpk-a netns "$NS_A"
ip link set mxpk-b netns "$NS_B"
A ip link set lo up
B ip link set lo up
A ip addr add 198.18.200.1/24 dev mxpk-a
B ip addr add 198.18.200.2/24 dev mxpk-b
A ip addr add fd42:18:200::1/64 dev mxpk-a nodad
B ip addr add fd42:18:200::2/64 dev mxpk-b nodad
A ip link set mxpk-a up
B ip link set mxpk-b up

cat >"$WORK/bird.conf" <<'CONF'
router id 198.18.200.1;
protocol device {}
protocol static s4 {
    ipv4;
    route 10.10.0.0/24 blackhole;
    route 10.10.1.0/26 blackhole;
    route 10.10.1.64/26 blackhole;
    route 10.10.2.0/23 blackhole;
    route 10.11.0.0/16 blackhole { bgp_med = 50; bgp_path.prepend(65001); };
}
protocol static s6 {
    ipv6;
    route fd42:18:210::/64 blackhole;
    route fd42:18:211::/48 blackhole;
    route fd42:18:212:1::/122 blackhole;
}
filter out_tag {
    bgp_community.add((65001, 100));
    bgp_community.add((65535, 65281));
    bgp_large_community.add((65001, 1, 2));
    bgp_ext_community.add((rt, 65001, 7));
    accept;
}
protocol bgp gobgp {
    local 198.18.200.1 as 65001;
    neighbor 198.18.200.2 as 4200000002;
    hold time 90;
    graceful restart on;
    enable extended messages on;
    ipv4 { import all; export filter out_tag; add paths on; };
    ipv6 { import all; export filter out_tag; add paths on; next hop address fd42:18:200::1; };
}
CONF

cat >"$WORK/gobgpd.toml" <<'CONF'
[global.config]
  as = 4200000002
  router-id = "198.18.200.2"
  port = 179
  local-address-list = ["198.18.200.2"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "198.18.200.1"
    peer-as = 65001
  [neighbors.timers.config]
    hold-time = 90
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
    [neighbors.afi-safis.add-paths.config]
      receive = true
      send-max = 4
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
    [neighbors.afi-safis.add-paths.config]
      receive = true
      send-max = 4
CONF

# `ip netns exec` execs the command, so $! is the daemon's own pid.
ip netns exec "$NS_A" tcpdump -i mxpk-a -U -s 0 -w "$WORK/bgp.pcap" tcp port 179 2>"$WORK/tcpdump.log" &
PIDS+=($!)
sleep 1
ip netns exec "$NS_B" gobgpd -f "$WORK/gobgpd.toml" --api-hosts 127.0.0.1:50051 >"$WORK/gobgpd.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NS_A" bird -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid" -f >"$WORK/bird.log" 2>&1 &
PIDS+=($!)

birdc() { A /usr/sbin/birdc -s "$WORK/bird.ctl" "$@"; }
gobgp() { B /usr/bin/gobgp -u 127.0.0.1 -p 50051 "$@"; }

for _ in $(seq 60); do
    if birdc show protocols gobgp 2>/dev/null | grep -q Established; then break; fi
    sleep 0.5
done
birdc show protocols gobgp | grep -q Established || { cat "$WORK"/*.log; exit 1; }

gobgp global rib add 10.20.0.0/24 community 65002:1 large-community 4200000002:1:2 >/dev/null
gobgp global rib add 10.20.1.0/26 med 10 >/dev/null
gobgp global rib -a ipv6 add fd42:18:220::/64 nexthop fd42:18:200::2 community 65002:6 >/dev/null
gobgp global rib add 10.20.2.0/24 origin incomplete >/dev/null
sleep 3
gobgp global rib del 10.20.0.0/24 >/dev/null
gobgp global rib -a ipv6 del fd42:18:220::/64 >/dev/null
birdc disable s4 >/dev/null
birdc disable s6 >/dev/null
sleep 2
birdc reload in gobgp >/dev/null
gobgp neighbor 198.18.200.1 softresetin >/dev/null
sleep 2
birdc enable s4 >/dev/null
sleep 2
birdc disable gobgp '"manx capture: maintenance"' >/dev/null
sleep 2

kill "${PIDS[0]}"; sleep 1
tshark -r "$WORK/bgp.pcap" -q -z follow,tcp,raw,0 2>/dev/null >"$WORK/follow.txt"

python3 - "$WORK/follow.txt" "$OUT" "$(bird --version 2>&1 | awk '{print $3}')" \
    "$(gobgpd --version | awk '{print $3}')" <<'PY'
import sys
follow, out, bird_ver, gobgp_ver = sys.argv[1:]
streams = {0: bytearray(), 1: bytearray()}
nodes = {}
for line in open(follow):
    if line.startswith("Node "):
        n, addr = line.split(":", 1)
        nodes[int(n.split()[1])] = addr.strip()
        continue
    if line.startswith("=") or line.startswith("Follow") or line.startswith("Filter"):
        continue
    side = 1 if line.startswith("\t") else 0
    hexs = line.strip()
    if hexs:
        streams[side] += bytes.fromhex(hexs)
names = {
    "198.18.200.1": f"bird2 {bird_ver} (AS 65001, 198.18.200.1)",
    "198.18.200.2": f"gobgpd {gobgp_ver} (AS 4200000002, 198.18.200.2)",
}
files = {"198.18.200.1": "bird2-to-gobgpd.hex", "198.18.200.2": "gobgpd-to-bird2.hex"}
for side, data in streams.items():
    src = nodes[side].rsplit(":", 1)[0]
    dst = nodes[1 - side].rsplit(":", 1)[0]
    msgs = []
    while len(data) >= 19:
        n = int.from_bytes(data[16:18], "big")
        msgs.append(bytes(data[:n]))
        data = data[n:]
    assert not data, "trailing bytes"
    with open(f"{out}/{files[src]}", "w") as f:
        f.write(f"# source: {names[src]} -> {names[dst]}\n")
        f.write("# captured by capture.sh on a veth between two network namespaces;\n")
        f.write("# one BGP message per line, hex, in the order sent.\n")
        for m in msgs:
            f.write(m.hex() + "\n")
    print(files[src], len(msgs), "messages")
PY
