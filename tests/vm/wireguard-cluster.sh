# Guest script (run by tests/vm/guest.sh in the VM tests/vm/run.sh boots): a 3-node Manx
# cluster with WireGuard in a real kernel, the only place wireguard.manx meets one (the build
# machines' kernel has no WireGuard).
#
#  1. `manx-lab up --mode wireguard` (direct pools, FelixConfiguration default
#     wireguardEnabled: true; every pod pair pings during `up`). Each node: wireguard.manx up
#     with MTU = eth0 - 60, its public key in Node.status.wireguardPublicKey (distinct per
#     node), every remote pod routed `dev wireguard.manx`, the private key in no log and not
#     in the datastore. `manxctl node checksystem` says WireGuard is supported.
#  2. Capture: tcpdump on node1's eth0 while node1's pod pings the pods of node2 and node3.
#     Between the nodes there is only UDP to/from the WireGuard port (and BGP on TCP 179):
#     no packet carries a pod address.
#  3. Key rotation: node2's key file is deleted and its manx-node restarted while pod1 pings
#     pod2 (a flow into the rotating node) and pod2 pings pod3 (a flow out of it), every
#     10 ms, with tcpdump on node2's eth0. Asserted: node2 publishes a new key, both flows
#     recover, and no pod packet crossed node2's uplink in clear meanwhile. Printed: each
#     flow's longest time without a reply (the traffic lost to the rotation).
(
set -u
ID=wg
NODES=3
PORT=51820
POOL_PREFIX=10.65.
FAILS=0
# iproute2's ip, not busybox's applet (which has no -n or netns): the runner's init defines
# the same function, but this script may run under a plain `sh`.
ip() { /usr/bin/ip "$@"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
addr_of() { ip -n "$1" -4 -o addr show dev "$2" | awk '{split($4, a, "/"); print a[1]; exit}'; }
mtu_of() { ip -n "$1" -o link show dev "$2" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'; }
lab_ctl() { DATASTORE_TYPE=embedded MANX_DB="/run/manx-lab/$ID/manx.db" manxctl "$@"; }
pubkey_of() { # node name -> Node.status.wireguardPublicKey
  lab_ctl get node "$1" -o yaml | awk '/wireguardPublicKey:/{gsub(/["'"'"']/, "", $2); print $2}'
}
pod_ip() { addr_of "mxlab-$ID-node$1-p1" eth0; }
wg_counters() { # "RX TX" packets of wireguard.manx on node $1
  ip -n "mxlab-$ID-n$1" -s link show wireguard.manx | awk '/RX:/{getline; rx=$2} /TX:/{getline; tx=$2} END{print rx+0, tx+0}'
}
dump_logs() {
  i=1
  while [ $i -le $NODES ]; do
    echo "--- [$ID] node$i manx-node.log (tail)"
    tail -n 40 "/run/manx-lab/$ID/node$i/manx-node.log" 2>/dev/null
    i=$((i + 1))
  done
}
# Start tcpdump on eth0 of node $1, writing text to $2; sets CAP_PID.
capture_start() {
  # --immediate-mode: each packet as it comes (libpcap's default hands over a block of them
  # up to a second late, and the last block is lost when tcpdump is stopped).
  ip netns exec "mxlab-$ID-n$1" tcpdump -Z root --immediate-mode -i eth0 -nn -l -q 'not arp' >"$2" 2>"$2.err" &
  CAP_PID=$!
  # tcpdump says "listening on eth0" once its socket is open.
  n=0
  while ! grep -q 'listening on' "$2.err" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
}
# SIGTERM (a background job of a non-interactive shell ignores SIGINT), after a moment for
# the last packets to be printed.
capture_stop() { sleep 0.3; kill -TERM "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null; }
# Classify the capture $1 (tcpdump -nn -q lines); label $2. Fails on any packet with a pod
# address (a pool address in the outer header) and on any IP packet that is neither the
# WireGuard UDP port nor BGP; prints the counts. Sets WG_PKTS.
classify() {
  cap=$1; label=$2
  set -- $(awk -v port=".$PORT" -v pool="$POOL_PREFIX" '
    $2 != "IP" { other++; next }
    {
      src = $3; dst = $5; sub(/:$/, "", dst)
      if (index(src, pool) == 1 || index(dst, pool) == 1) { pod++; if (pod <= 5) print "POD " $0 > "/dev/stderr"; next }
      if ($6 == "UDP," && (substr(src, length(src) - length(port) + 1) == port || substr(dst, length(dst) - length(port) + 1) == port)) { wg++; next }
      if ($6 == "tcp" && (src ~ /\.179$/ || dst ~ /\.179$/)) { bgp++; next }
      ip_other++; if (ip_other <= 5) print "OTHER " $0 > "/dev/stderr"
    }
    END { print wg + 0, bgp + 0, pod + 0, ip_other + 0, other + 0 }' "$cap")
  WG_PKTS=$1
  echo "=== [$label] uplink capture: $1 WireGuard UDP ($PORT), $2 BGP (tcp 179), $3 with a pod address, $4 other IP, $5 non-IP; first lines:"
  head -n 6 "$cap"
  if [ "$3" -eq 0 ] && [ "$4" -eq 0 ]; then
    pass "[$label] the uplink carried no pod packet in clear and no IP traffic but WireGuard's UDP and BGP"
  else
    fail "[$label] the uplink carried $3 packets with pod addresses and $4 other IP packets (see POD/OTHER lines)"
  fi
}
# The replies in `ping -D` output $1 (lines "... bytes from ...: icmp_seq=N"; error lines
# are not replies): "GAP_MS RUN LOST LAST_SEQ AFTER LAST_S": the longest time without a
# reply (ms), the most requests in a row left unanswered, the requests left unanswered in
# all (up to the last reply), the last reply's sequence number, the replies after the
# longest gap and the last reply's time (epoch s). Under qemu's emulation the guest itself
# stalls at times (a restarting manx-node takes the one CPU), so the time gap can be longer
# than RUN requests at 10 ms.
ping_gap() {
  awk '/bytes from .*icmp_seq=/ {
      t = substr($1, 2, length($1) - 2) + 0
      for (i = 1; i <= NF; i++) if ($i ~ /^icmp_seq=/) { split($i, s, "="); seq = s[2] + 0 }
      if (n > 0 && t - last > gap) { gap = t - last; after = 0 }
      if (n > 0 && seq - prev - 1 > run) run = seq - prev - 1
      last = t; prev = seq; n++; after++
    }
    END { printf "%d %d %d %d %d %d\n", gap * 1000, run, prev - n, prev, after, last }' "$1"
}

echo "##### lab $ID: WireGuard, manx-lab up --nodes $NODES --mode wireguard"
mkdir -p /etc /run/manx-lab /var/run/manx
# tcpdump drops privileges to a named user (-Z root: stay root); the guest has no passwd.
[ -f /etc/passwd ] || echo 'root:x:0:0:root:/:/bin/sh' >/etc/passwd
# Bridges for the lab's segments and nf_tables for manx-node's nft (as ipip-cluster.sh).
for m in llc stp bridge libcrc32c nfnetlink nf_tables; do
  [ -e /sys/module/$m ] || insmod /opt/$m.ko* 2>/dev/null || echo "note: insmod $m failed"
done
# The WireGuard module and its crypto, in dependency order (run.sh ships them in /opt; the
# runner's init already loaded udp_tunnel and ip6_udp_tunnel).
for m in libcurve25519-generic curve25519-x86_64 libchacha chacha-x86_64 poly1305-x86_64 \
         libchacha20poly1305 wireguard; do
  [ -e "/sys/module/$(echo $m | tr - _)" ] || insmod /opt/$m.ko* || fail "insmod $m (WireGuard)"
done
if ip link add mxwgprobe type wireguard 2>/tmp/wgprobe.err; then
  ip link del mxwgprobe
  pass "ip link add type wireguard works in this kernel"
else
  fail "ip link add type wireguard: $(cat /tmp/wgprobe.err)"
fi

if ! manx-lab --id $ID up --nodes $NODES --mode wireguard --pods-per-node 1; then
  fail "[$ID] manx-lab up --mode wireguard failed"
  dump_logs
  manx-lab --id $ID down
  echo "RESULT: FAIL (wireguard: the cluster did not come up)"
  exit 1
fi
pass "[$ID] manx-lab up (wireguard): cluster up, every pod pair pinged"

# 1. Devices, keys, routes.
KEYS=""
i=1
while [ $i -le $NODES ]; do
  ns=mxlab-$ID-n$i
  echo "=== node$i: ip -d link show wireguard.manx; ip route"
  ip -n "$ns" -d link show wireguard.manx
  ip -n "$ns" route
  if ip -n "$ns" link show wireguard.manx | grep -q ',UP'; then
    pass "[$ID] node$i wireguard.manx is up"
  else
    fail "[$ID] node$i has no wireguard.manx up"
  fi
  up_mtu=$(mtu_of "$ns" eth0); wg_mtu=$(mtu_of "$ns" wireguard.manx)
  if [ -n "$up_mtu" ] && [ "$wg_mtu" = "$((up_mtu - 60))" ]; then
    pass "[$ID] node$i wireguard.manx mtu $wg_mtu = eth0 mtu $up_mtu - 60"
  else
    fail "[$ID] node$i wireguard.manx mtu '$wg_mtu', eth0 '$up_mtu' (want eth0 - 60)"
  fi
  key=$(pubkey_of node$i)
  case "$key" in
    *=) [ ${#key} -eq 44 ] && pass "[$ID] node$i publishes its public key $key" \
          || fail "[$ID] node$i Node.status.wireguardPublicKey is '$key' (want 44 base64 characters)" ;;
    *) fail "[$ID] node$i Node.status.wireguardPublicKey is '$key' (want 44 base64 characters)" ;;
  esac
  case " $KEYS " in *" $key "*) fail "[$ID] node$i's public key is another node's too" ;; esac
  KEYS="$KEYS $key"
  priv=$(cat "/run/manx-lab/$ID/node$i/wireguard.key")
  mode=$(stat -c %a "/run/manx-lab/$ID/node$i/wireguard.key")
  [ "$mode" = 600 ] && pass "[$ID] node$i key file is mode 600" || fail "[$ID] node$i key file mode $mode (want 600)"
  if [ -n "$priv" ] && ! cat /run/manx-lab/$ID/manx.db* /run/manx-lab/$ID/node*/*.log 2>/dev/null | grep -q -F "$priv"; then
    pass "[$ID] node$i private key is in no log and not in the datastore"
  else
    fail "[$ID] node$i private key found in a log or the datastore (or the key file is empty)"
  fi
  j=1
  while [ $j -le $NODES ]; do
    if [ $j -ne $i ]; then
      got=$(ip -n "$ns" route get "$(pod_ip $j)" | head -n1)
      case "$got" in
        *" dev wireguard.manx "*) pass "[$ID] node$i -> node$j pod: $got" ;;
        *) fail "[$ID] node$i -> node$j pod should go dev wireguard.manx, got: $got" ;;
      esac
    fi
    j=$((j + 1))
  done
  i=$((i + 1))
done
out=$(ip netns exec "mxlab-$ID-n1" env DATASTORE_TYPE=embedded MANX_DB="/run/manx-lab/$ID/manx.db" manxctl node checksystem 2>&1)
line=$(echo "$out" | grep -i wireguard | head -n1)
case "$line" in
  *OK*|*ok*) pass "[$ID] manxctl node checksystem: $line" ;;
  *) fail "[$ID] manxctl node checksystem does not report WireGuard OK: ${line:-$out}" ;;
esac

# 2. Only WireGuard's UDP between the nodes.
COUNT=20
before=$(wg_counters 1)
capture_start 1 /tmp/cap1
for j in 2 3; do
  got=$(ip netns exec "mxlab-$ID-node1-p1" ping -c $COUNT -i 0.05 -W 2 "$(pod_ip $j)" 2>&1 | sed -n 's/.* \([0-9]*\) received.*/\1/p')
  [ "${got:-0}" = $COUNT ] && pass "[$ID] node1-p1 -> node$j-p1: $COUNT/$COUNT replies" \
    || fail "[$ID] node1-p1 -> node$j-p1: ${got:-0}/$COUNT replies"
done
capture_stop
after=$(wg_counters 1)
set -- $before $after
echo "=== node1 wireguard.manx packets during the pings: RX $(($3 - $1)) TX $(($4 - $2))"
if [ $(($3 - $1)) -ge $((2 * COUNT)) ] && [ $(($4 - $2)) -ge $((2 * COUNT)) ]; then
  pass "[$ID] the pings went through node1's wireguard.manx"
else
  fail "[$ID] node1's wireguard.manx moved RX $(($3 - $1)) TX $(($4 - $2)) (want >= $((2 * COUNT)) each)"
fi
classify /tmp/cap1 "$ID capture node1"
[ "$WG_PKTS" -ge $((4 * COUNT)) ] && pass "[$ID] $WG_PKTS WireGuard packets for $((4 * COUNT)) echo requests and replies" \
  || fail "[$ID] only $WG_PKTS WireGuard packets on node1's uplink for $((4 * COUNT)) pings and replies"

# 3. Key rotation on node2, with a flow into it and one out of it.
old=$(pubkey_of node2)
capture_start 2 /tmp/cap2
ip netns exec "mxlab-$ID-node1-p1" ping -D -n -i 0.01 -w 60 "$(pod_ip 2)" >/tmp/rot.in 2>&1 &
P_IN=$!
ip netns exec "mxlab-$ID-node2-p1" ping -D -n -i 0.01 -w 60 "$(pod_ip 3)" >/tmp/rot.out 2>&1 &
P_OUT=$!
sleep 1
t0=$(date +%s)
rm -f "/run/manx-lab/$ID/node2/wireguard.key"
manx-lab --id $ID restart-node node2 || fail "[$ID] manx-lab restart-node node2"
# Until node2 has published its new key, then 2 s more of pings.
n=0
while [ "$(pubkey_of node2)" = "$old" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
sleep 2
stop=$(date +%s)
# SIGALRM ends iputils ping as its -w deadline does, flushing its output (SIGINT is ignored
# by background jobs here).
kill -ALRM $P_IN $P_OUT 2>/dev/null; wait $P_IN $P_OUT 2>/dev/null
capture_stop
echo "=== key rotation took $(( $(date +%s) - t0 )) s of wall time (restart included)"
new=$(pubkey_of node2)
if [ -n "$new" ] && [ "$new" != "$old" ]; then
  pass "[$ID] node2 published a new public key after its key file was deleted ($old -> $new)"
else
  fail "[$ID] node2's public key did not change on restart without its key file ('$old' -> '$new')"
fi
for flow in in out; do
  f=/tmp/rot.$flow
  set -- $(ping_gap $f)
  gap=$1; run=$2; lost=$3; last=$4; after=$5; last_s=$6
  replies=$((last - lost))
  # Recovered: replies flowed again after the longest gap (>= 50, half a second's worth) and
  # up to the end of the run (the last one within a second of stopping the pings).
  if [ "$replies" -gt 0 ] && [ "$after" -ge 50 ] && [ $((stop - last_s)) -le 1 ]; then
    pass "[$ID] rotation, flow $flow of node2: traffic recovered ($after replies after the gap, up to seq $last)"
  else
    fail "[$ID] rotation, flow $flow of node2: no recovery ($replies replies, $after after the gap, last seq $last at $last_s, stopped at $stop)"
    tail -n 5 $f
  fi
  echo "ROTATION: flow $flow of node2 (pod$([ $flow = in ] && echo '1 -> pod2' || echo '2 -> pod3')): $lost of $last requests (every 10 ms) unanswered, at most $run in a row ($((run * 10)) ms of requests); longest time without a reply ${gap} ms"
done
classify /tmp/cap2 "$ID capture node2 during rotation"

[ $FAILS -eq 0 ] || dump_logs
manx-lab --id $ID down || fail "[$ID] manx-lab down failed"
if [ $FAILS -eq 0 ]; then
  echo "RESULT: PASS (wireguard, $NODES nodes: encrypted paths, capture, key rotation)"
  exit 0
fi
echo "RESULT: FAIL (wireguard: $FAILS checks failed)"
exit 1
)
