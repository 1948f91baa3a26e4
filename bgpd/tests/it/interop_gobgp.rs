//! Interop with GoBGP (`gobgpd` + `gobgp` CLI) in network namespaces.

use crate::support;
use crate::support::peers::Kind;
use crate::support::scenario;

#[test]
fn heavy_interop_gobgp_ebgp_v4_v6() {
    scenario::exchange(Kind::Gobgp, false);
}

#[test]
fn heavy_interop_gobgp_ibgp_v4_v6() {
    scenario::exchange(Kind::Gobgp, true);
}

#[test]
fn heavy_interop_gobgp_peer_restart() {
    scenario::peer_restart(Kind::Gobgp);
}

#[test]
fn heavy_interop_gobgp_md5_right_password() {
    scenario::md5(Kind::Gobgp, true);
}

#[test]
fn heavy_interop_gobgp_graceful_notification() {
    scenario::graceful_notification(support::peers::GrNotification::On);
}

#[test]
fn heavy_interop_gobgp_graceful_restart_without_notification() {
    scenario::graceful_notification(support::peers::GrNotification::Off);
}
