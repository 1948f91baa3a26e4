# Guest script (run by tests/vm/guest.sh in the VM tests/vm/run.sh boots): a 4-node Manx
# cluster with IPIP in a real kernel. Its exit status is 0 when every check passed.
#
#  1. `manx-lab up --mode ipip` (ipipMode Always, 4 nodes on one L2 segment): every node's tunl0
#     carries its IPAM tunnel address (manxctl's ipv4IPIPTunnelAddr) with MTU = uplink MTU - 20,
#     every remote block is routed `via <node> dev tunl0 onlink`, and every pod pings every other
#     pod with the packets counted on tunl0.
#  2. `manx-lab up --mode ipip-crosssubnet` (ipipMode CrossSubnet, nodes 1-2 on 172.30.0.0/24,
#     nodes 3-4 on 172.30.1.0/24 behind a router): same-subnet pairs go direct over eth0 and
#     leave every tunl0 counter still, cross-router pairs go through tunl0 and move the counters
#     of both ends. A table shows the path each pair took.
(
set -u
NODES=4
FAILS=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }

# "RX-packets TX-packets" of tunl0 in namespace $1.
tunl_counters() {
  ip -n "$1" -s link show tunl0 | awk '/RX:/{getline; rx=$2} /TX:/{getline; tx=$2} END{print rx+0, tx+0}'
}
# First IPv4 address (no prefix length) of device $2 in namespace $1.
addr_of() {
  ip -n "$1" -4 -o addr show dev "$2" | awk '{split($4, a, "/"); print a[1]; exit}'
}
mtu_of() {
  ip -n "$1" -o link show dev "$2" | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'
}
manxctl_lab() { # lab-id, manxctl args...
  id=$1; shift
  DATASTORE_TYPE=embedded MANX_DB="/run/manx-lab/$id/manx.db" manxctl "$@"
}

# Node/pod facts of lab $1, as shell variables NODE_IP_<i>, POD_IP_<i>.
collect() {
  id=$1
  i=1
  while [ $i -le $NODES ]; do
    eval "NODE_IP_$i=\$(addr_of mxlab-$id-n$i eth0)"
    eval "POD_IP_$i=\$(addr_of mxlab-$id-node$i-p1 eth0)"
    eval "echo \"node$i: eth0 \$NODE_IP_$i, pod mxlab-$id-node$i-p1 \$POD_IP_$i\""
    i=$((i + 1))
  done
}
node_ip() { eval "echo \$NODE_IP_$1"; }
pod_ip() { eval "echo \$POD_IP_$1"; }
subnet_of() { echo "$1" | cut -d. -f1-3; }

# tunl0 of every node: address = IPAM tunnel address, MTU = uplink - 20; print route + link.
check_tunnels() {
  id=$1
  i=1
  while [ $i -le $NODES ]; do
    ns=mxlab-$id-n$i
    echo "=== node$i: ip route"
    ip -n "$ns" route
    echo "=== node$i: ip -d link show tunl0"
    ip -n "$ns" -d link show tunl0
    have=$(addr_of "$ns" tunl0)
    want=$(manxctl_lab "$id" get node "node$i" -o yaml | awk '/ipv4IPIPTunnelAddr:/{gsub(/["'"'"']/, "", $2); print $2}')
    if [ -n "$want" ] && [ "$have" = "$want" ]; then
      pass "[$id] node$i tunl0 address $have = ipv4IPIPTunnelAddr"
    else
      fail "[$id] node$i tunl0 address '${have}' != manxctl ipv4IPIPTunnelAddr '${want}'"
    fi
    up_mtu=$(mtu_of "$ns" eth0)
    t_mtu=$(mtu_of "$ns" tunl0)
    if [ -n "$up_mtu" ] && [ "$t_mtu" = "$((up_mtu - 20))" ]; then
      pass "[$id] node$i tunl0 mtu $t_mtu = eth0 mtu $up_mtu - 20"
    else
      fail "[$id] node$i tunl0 mtu '${t_mtu}', eth0 mtu '${up_mtu}' (want eth0 - 20)"
    fi
    if ip -n "$ns" link show tunl0 | grep -q ',UP'; then
      pass "[$id] node$i tunl0 is up"
    else
      fail "[$id] node$i tunl0 is not up"
    fi
    i=$((i + 1))
  done
}

# Expected path between nodes $1 and $2 in lab mode $3: tunnel | direct.
expected_path() {
  if [ "$3" = ipip ]; then echo tunnel; return; fi
  if [ "$(subnet_of "$(node_ip "$1")")" = "$(subnet_of "$(node_ip "$2")")" ]; then
    echo direct
  else
    echo tunnel
  fi
}

# On node $1, the route to node $2's pod goes the expected way.
check_route() {
  id=$1; a=$2; b=$3; path=$4
  ns=mxlab-$id-n$a
  gw=$(node_ip "$b")
  got=$(ip -n "$ns" route get "$(pod_ip "$b")" | head -n1)
  if [ "$path" = tunnel ]; then
    line=$(ip -n "$ns" route show proto 77 | grep " via $gw dev tunl0 " | head -n1)
    case "$got" in
      *" via $gw dev tunl0 "*)
        case "$line" in
          *onlink*) pass "[$id] node$a -> node$b pod: $got ($line)" ;;
          *) fail "[$id] node$a route to node$b's block is not onlink: '$line'" ;;
        esac ;;
      *) fail "[$id] node$a -> node$b pod should go via $gw dev tunl0, got: $got" ;;
    esac
  else
    case "$got" in
      *" via $gw dev eth0 "*) pass "[$id] node$a -> node$b pod: $got" ;;
      *) fail "[$id] node$a -> node$b pod should go via $gw dev eth0 (same subnet), got: $got" ;;
    esac
  fi
}

# Ping every pod from every other pod; the tunl0 counters of the nodes show which path it took.
ping_table() {
  id=$1; mode=$2
  COUNT=3
  table=/tmp/table.$id
  printf '%-10s %-10s %-7s %-10s %-10s %-6s %s\n' from to path "src rx/tx" "dst rx/tx" others verdict >"$table"
  a=1
  while [ $a -le $NODES ]; do
    b=1
    while [ $b -le $NODES ]; do
      if [ $a -ne $b ]; then
        path=$(expected_path $a $b "$mode")
        check_route "$id" $a $b "$path"
        n=1; before=""
        while [ $n -le $NODES ]; do before="$before $(tunl_counters mxlab-$id-n$n)"; n=$((n + 1)); done
        out=$(ip netns exec "mxlab-$id-node$a-p1" ping -c $COUNT -i 0.2 -W 2 "$(pod_ip $b)" 2>&1)
        got=$(echo "$out" | sed -n 's/.* \([0-9]*\) received.*/\1/p')
        n=1; after=""
        while [ $n -le $NODES ]; do after="$after $(tunl_counters mxlab-$id-n$n)"; n=$((n + 1)); done
        # deltas per node: d_rx_n d_tx_n
        set -- $before $after
        n=1; others=0; src=""; dst=""; verdict=ok
        while [ $n -le $NODES ]; do
          eval "brx=\${$((2 * n - 1))} btx=\${$((2 * n))} arx=\${$((2 * NODES + 2 * n - 1))} atx=\${$((2 * NODES + 2 * n))}"
          drx=$((arx - brx)); dtx=$((atx - btx))
          if [ $n -eq $a ]; then src="$drx/$dtx"; s_rx=$drx; s_tx=$dtx
          elif [ $n -eq $b ]; then dst="$drx/$dtx"; d_rx=$drx; d_tx=$dtx
          else others=$((others + drx + dtx)); fi
          n=$((n + 1))
        done
        if [ "${got:-0}" != $COUNT ]; then
          verdict="FAIL(ping $got/$COUNT)"
        elif [ "$path" = tunnel ]; then
          # request out of src and into dst, reply back: >= COUNT each way (no other traffic on tunl0).
          if [ $s_tx -lt $COUNT ] || [ $d_rx -lt $COUNT ] || [ $d_tx -lt $COUNT ] || [ $s_rx -lt $COUNT ]; then
            verdict="FAIL(not via tunl0)"
          fi
        else
          if [ $s_rx -ne 0 ] || [ $s_tx -ne 0 ] || [ $d_rx -ne 0 ] || [ $d_tx -ne 0 ] || [ $others -ne 0 ]; then
            verdict="FAIL(tunl0 used)"
          fi
        fi
        printf '%-10s %-10s %-7s %-10s %-10s %-6s %s\n' "node$a-p1" "node$b-p1" "$path" "$src" "$dst" "$others" "$verdict" >>"$table"
        case "$verdict" in
          ok) pass "[$id] node$a-p1 -> node$b-p1 ($(pod_ip $b)) $COUNT/$COUNT replies, path $path" ;;
          *) fail "[$id] node$a-p1 -> node$b-p1 ($(pod_ip $b)): $verdict"; echo "$out" ;;
        esac
      fi
      b=$((b + 1))
    done
    a=$((a + 1))
  done
  echo "=== [$id] path table: tunl0 packet deltas (RX/TX) on the source and destination node while"
  echo "    pod on 'from' pinged pod on 'to' $COUNT times; 'others' = tunl0 packets on the other nodes"
  cat "$table"
}

dump_logs() {
  id=$1
  i=1
  while [ $i -le $NODES ]; do
    echo "--- [$id] node$i manx-node.log (tail)"
    tail -n 30 "/run/manx-lab/$id/node$i/manx-node.log" 2>/dev/null
    i=$((i + 1))
  done
}

# One lab run: id, manx-lab mode.
run_lab() {
  id=$1; mode=$2
  start_fails=$FAILS
  echo "##### lab $id: manx-lab up --nodes $NODES --mode $mode --pods-per-node 1"
  if manx-lab --id "$id" up --nodes $NODES --mode "$mode" --pods-per-node 1; then
    pass "[$id] manx-lab up ($mode): cluster up, every pod pair pinged"
    collect "$id"
    check_tunnels "$id"
    ping_table "$id" "$mode"
  else
    fail "[$id] manx-lab up --mode $mode failed"
  fi
  [ $FAILS -eq $start_fails ] || dump_logs "$id"
  manx-lab --id "$id" down || fail "[$id] manx-lab down failed"
}

echo "static binaries: $(ls /opt | tr '\n' ' ')"
mkdir -p /run/manx-lab /var/run/manx
# run.sh ships the bridge module (and its deps) in /opt: the VM's init loads none.
for m in llc stp bridge; do
  [ -e /sys/module/$m ] || insmod /opt/$m.ko* || fail "insmod $m (bridge support for the lab's L2 segments)"
done
# nf_tables for manx-node's `nft` (NAT outgoing table; off in the lab, so only listed).
for m in libcrc32c nfnetlink nf_tables; do
  [ -e /sys/module/$m ] || insmod /opt/$m.ko* 2>/dev/null || echo "note: insmod $m failed; nft list will fail (harmless: natOutgoing is off)"
done
nft list tables >/dev/null 2>&1 && echo "nft: works" || echo "nft: $(nft list tables 2>&1 | head -n1)"
run_lab ipip ipip
run_lab xsub ipip-crosssubnet

if [ $FAILS -eq 0 ]; then
  echo "RESULT: PASS (ipip Always and CrossSubnet, $NODES nodes)"
  exit 0
fi
echo "RESULT: FAIL ($FAILS checks failed)"
exit 1
)
