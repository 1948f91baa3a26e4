#!/bin/sh
# Init container: install the CNI binaries and the conflist on the host.
set -eu
install -m 0755 /usr/local/bin/manx /usr/local/bin/manx-ipam /host/opt/cni/bin/
mtu=${CNI_MTU:-0}
[ "$mtu" = 0 ] && mtu=1440
conf=$(printf '%s' "$CNI_NETWORK_CONFIG" | sed -e "s|__ETCD_ENDPOINTS__|${ETCD_ENDPOINTS:-}|g" -e "s|__CNI_MTU__|$mtu|g")
tmp=/host/etc/cni/net.d/.10-manx.conflist.tmp
printf '%s\n' "$conf" > "$tmp"
mv "$tmp" /host/etc/cni/net.d/10-manx.conflist
echo "manx: installed CNI binaries and /etc/cni/net.d/10-manx.conflist"
