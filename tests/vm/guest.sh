# Guest script for shared/vm/run-in-vm.sh (run by tests/vm/run.sh): the real-kernel tests of
# one VM boot, one after the other (a boot and the lab binaries are paid once):
#   ipip-cluster.sh       4 nodes, ipipMode Always then CrossSubnet
#   wireguard-cluster.sh  3 nodes, WireGuard: capture on the uplink, key rotation
# Each prints its PASS/FAIL lines and a RESULT line. run.sh writes the list to run in
# /opt/vm-tests (MANX_VM_TESTS, default both). The VM's init sources this file, so it
# runs in a subshell: its `exit` status is the VM's exit status (0: both passed).
(
rc=0
for t in $(cat /opt/vm-tests); do
  s=$(date +%s)
  # Sourced, as the runner's init sources this file: each script is a subshell and keeps
  # init's `ip` function (iproute2's ip over busybox's applet).
  . "/opt/$t.sh" || rc=1
  echo "vm-guest: $t took $(( $(date +%s) - s )) s"
done
exit $rc
)
