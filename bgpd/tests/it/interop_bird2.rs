//! Interop with BIRD 2 (`/usr/sbin/bird`) in network namespaces.

use crate::support::peers::Kind;
use crate::support::scenario;

#[test]
fn heavy_interop_bird2_ebgp_v4_v6() {
    scenario::exchange(Kind::Bird2, false);
}

#[test]
fn heavy_interop_bird2_ibgp_v4_v6() {
    scenario::exchange(Kind::Bird2, true);
}

#[test]
fn heavy_interop_bird2_peer_restart() {
    scenario::peer_restart(Kind::Bird2);
}

#[test]
fn heavy_interop_bird2_md5_right_password() {
    scenario::md5(Kind::Bird2, true);
}

#[test]
fn heavy_interop_bird2_md5_wrong_password() {
    scenario::md5(Kind::Bird2, false);
}

#[test]
fn heavy_interop_bird2_gtsm_both_sides() {
    scenario::gtsm(Kind::Bird2, true);
}

#[test]
fn heavy_interop_bird2_gtsm_rejects_ttl1_peer() {
    scenario::gtsm(Kind::Bird2, false);
}
