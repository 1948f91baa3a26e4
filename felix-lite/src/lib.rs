//! Manx dataplane programmer: routes, tunnels, neighbours, NAT and uplink autodetection
