//! Interop with BIRD 1.6 (`/opt/bird1/usr/sbin/bird` and `bird6`, the BIRD
//! Calico is built on) in network namespaces.

use crate::support::peers::Kind;
use crate::support::scenario;

#[test]
fn heavy_interop_bird1_ebgp_v4_v6() {
    scenario::exchange(Kind::Bird1, false);
}

#[test]
fn heavy_interop_bird1_ibgp_v4_v6() {
    scenario::exchange(Kind::Bird1, true);
}
