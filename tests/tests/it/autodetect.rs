//! (h) Uplink autodetection on nodes with two NICs (eth0 on 172.30.0.0/24,
//! eth1 on 172.30.5.0/24): each IP_AUTODETECTION_METHOD picks the expected
//! NIC, the Node registers that address, and the other node's routes to
//! this node's block go via it.

use crate::common::{Lab, require};
use manx_e2e::lab::Mode;

fn case(id: &str, method: &str, expect_subnet: u8) {
    let mut spec = Lab::spec(id, 2, Mode::Direct);
    spec.second_nic = true;
    spec.autodetect = method.to_string();
    let lab = Lab::up(spec);
    let node = lab
        .0
        .manxctl(&lab.0.nodes[0], &["get", "node", "node2", "-o", "yaml"])
        .unwrap();
    let want = format!("ipv4Address: 172.30.{expect_subnet}.12/24");
    assert!(node.contains(&want), "{method}: expected {want} in\n{node}");
    lab.assert_all_ping();
    let r = lab.routes(0);
    let via = format!(
        "via 172.30.{expect_subnet}.12 dev eth{} proto 77",
        if expect_subnet == 0 { 0 } else { 1 }
    );
    assert!(
        r.contains(&via),
        "{method}: node1 should route node2's block {via}:\n{r}"
    );
}

#[test]
fn interface_regex_picks_eth1() {
    if require() {
        case("e2eh1", "interface=eth1", 5);
    }
}

#[test]
fn skip_interface_skips_eth0() {
    if require() {
        case("e2eh2", "skip-interface=eth0", 5);
    }
}

#[test]
fn can_reach_picks_the_nic_with_the_route() {
    if require() {
        case("e2eh3", "can-reach=172.30.5.1", 5);
    }
}

#[test]
fn cidr_picks_the_matching_address() {
    if require() {
        case("e2eh4", "cidr=172.30.5.0/24", 5);
    }
}

#[test]
fn first_found_picks_the_first_nic() {
    if require() {
        case("e2eh5", "first-found", 0);
    }
}
