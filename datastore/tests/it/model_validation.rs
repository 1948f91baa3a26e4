//! Every validation rule, with the exact message an operator sees.

use datastore::model::{
    AsNumber, BFDSpec, BGPConfiguration, BGPPeer, BGPPeerSpec, EncapMode, IPAMConfiguration,
    IPPool, IPReservation, Kind, Node, NodeBGPSpec, Resource, WorkloadEndpoint, parse_manifests,
    validate_all,
};

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, cidr.parse().unwrap())
}

/// The messages of a failed validation.
fn errors<K: Kind>(obj: &K) -> Vec<String> {
    match obj.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_error<K: Kind>(obj: &K, expected: &str) {
    let errs = errors(obj);
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?}, got {errs:#?}"
    );
}

#[test]
fn valid_pools_pass() {
    assert!(errors(&pool("pool1", "10.0.0.0/16")).is_empty());
    assert!(errors(&pool("v6", "fd00:10::/64")).is_empty());
}

#[test]
fn block_size_out_of_range() {
    let mut p = pool("pool1", "10.0.0.0/16");
    p.spec.block_size = Some(33);
    assert_error(
        &p,
        "ippool pool1: spec.blockSize 33 is out of range 20..=32 for IPv4",
    );
    p.spec.block_size = Some(19);
    assert_error(
        &p,
        "ippool pool1: spec.blockSize 19 is out of range 20..=32 for IPv4",
    );
    let mut p = pool("pool6", "fd00::/64");
    p.spec.block_size = Some(112);
    assert_error(
        &p,
        "ippool pool6: spec.blockSize 112 is out of range 116..=128 for IPv6",
    );
}

#[test]
fn pool_smaller_than_a_block() {
    let p = pool("tiny", "10.0.0.0/28");
    assert_error(
        &p,
        "ippool tiny: spec.blockSize 26 makes blocks larger than the pool 10.0.0.0/28: use a blockSize of at least 28 or a larger pool",
    );
}

#[test]
fn host_bits_set() {
    let p = pool("pool1", "10.0.0.1/16");
    assert_error(
        &p,
        "ippool pool1: spec.cidr 10.0.0.1/16 has host bits set; did you mean 10.0.0.0/16?",
    );
}

#[test]
fn both_encapsulations() {
    let mut p = pool("pool1", "10.0.0.0/16");
    p.spec.ipip_mode = Some(EncapMode::Always);
    p.spec.vxlan_mode = Some(EncapMode::CrossSubnet);
    assert_error(
        &p,
        "ippool pool1: spec sets both ipipMode (Always) and vxlanMode (CrossSubnet): a pool uses one encapsulation; set one of them to Never",
    );
    // Never + Always is fine.
    p.spec.vxlan_mode = Some(EncapMode::Never);
    assert!(errors(&p).is_empty());
    // udpMode (a Manx extension) counts as an encapsulation too.
    p.spec.udp_mode = Some(EncapMode::Always);
    assert_error(
        &p,
        "ippool pool1: spec sets both ipipMode (Always) and udpMode (Always): a pool uses one encapsulation; set one of them to Never",
    );
    p.spec.ipip_mode = Some(EncapMode::Never);
    assert!(errors(&p).is_empty());
}

#[test]
fn udp_on_ipv6() {
    let mut p = pool("v6", "fd00::/64");
    p.spec.udp_mode = Some(EncapMode::CrossSubnet);
    assert_error(
        &p,
        "ippool v6: spec.udpMode must be Never for an IPv6 pool: the UDP backend carries IPv4 only; use vxlanMode",
    );
}

#[test]
fn ipip_on_ipv6() {
    let mut p = pool("v6", "fd00::/64");
    p.spec.ipip_mode = Some(EncapMode::Always);
    assert_error(
        &p,
        "ippool v6: spec.ipipMode must be Never for an IPv6 pool: IPIP carries IPv4 only; use vxlanMode",
    );
}

#[test]
fn invalid_selector_reports_column() {
    let mut p = pool("pool1", "10.0.0.0/16");
    p.spec.node_selector = Some("a == 'x' &&".into());
    assert_error(
        &p,
        "ippool pool1: spec.nodeSelector is invalid: selector \"a == 'x' &&\": expected an expression at column 12",
    );
}

#[test]
fn empty_allowed_uses() {
    let mut p = pool("pool1", "10.0.0.0/16");
    p.spec.allowed_uses = Some(vec![]);
    assert_error(
        &p,
        "ippool pool1: spec.allowedUses is empty: list Workload and/or Tunnel, or omit it for both",
    );
}

#[test]
fn names_must_be_dns_1123() {
    let p = pool("Pool_1", "10.0.0.0/16");
    assert_error(
        &p,
        "ippool Pool_1: metadata.name \"Pool_1\" contains 'P'; use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
    );
    let p = pool("", "10.0.0.0/16");
    assert_error(
        &p,
        "ippool <unnamed>: metadata.name is empty: every resource needs a name",
    );
}

#[test]
fn overlapping_pools() {
    let existing = vec![pool("a", "10.0.0.0/16"), pool("v6", "fd00::/48")];
    let p = pool("b", "10.0.128.0/17");
    let e = p.validate_pool_against(&existing).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ippool b: spec.cidr 10.0.128.0/17 overlaps ippool a (10.0.0.0/16): pools must not overlap; pick a disjoint CIDR"
    );
    assert!(
        pool("c", "10.1.0.0/16")
            .validate_pool_against(&existing)
            .is_ok()
    );
    // Its own earlier version does not count.
    assert!(
        pool("a", "10.0.0.0/15")
            .validate_pool_against(&existing)
            .is_ok()
    );
    // A larger pool containing an existing one overlaps too.
    assert!(
        pool("d", "10.0.0.0/8")
            .validate_pool_against(&existing)
            .is_err()
    );
}

fn peer(spec: BGPPeerSpec) -> BGPPeer {
    BGPPeer::new("peer1", spec)
}

/// BFD is a Manx extension: bad timers and an IPv6 peer are refused by
/// field, and a node's own BGPConfiguration cannot set the mesh's BFD.
#[test]
fn bfd_rules() {
    let spec = |peer_ip: &str, bfd: BFDSpec| BGPPeerSpec {
        peer_ip: Some(peer_ip.into()),
        as_number: Some(AsNumber(64512)),
        bfd: Some(bfd),
        ..Default::default()
    };
    assert!(errors(&peer(spec("10.0.0.1", BFDSpec::default()))).is_empty());
    assert_error(
        &peer(spec(
            "10.0.0.1",
            BFDSpec {
                min_tx: Some("1ms".into()),
                ..Default::default()
            },
        )),
        "bgppeer peer1: spec.bfd.minTx \"1ms\" is out of range 10ms..=60s (default 300ms)",
    );
    assert_error(
        &peer(spec("fd00::1", BFDSpec::default())),
        "bgppeer peer1: spec.bfd is IPv4-only in Manx so far and peerIP is IPv6: remove bfd or set enabled: false",
    );
    let off = BFDSpec {
        enabled: Some(false),
        ..Default::default()
    };
    assert!(errors(&peer(spec("fd00::1", off))).is_empty());

    let mut node_cfg = BGPConfiguration::new("node.n1");
    node_cfg.spec.node_mesh_bfd = Some(BFDSpec::default());
    assert_error(
        &node_cfg,
        "bgpconfiguration node.n1: spec.nodeMeshBFD can only be set in the BGPConfiguration named \"default\"; move it there",
    );
    let mut default = BGPConfiguration::new("default");
    default.spec.node_mesh_bfd = Some(BFDSpec {
        multiplier: Some(256),
        ..Default::default()
    });
    assert_error(
        &default,
        "bgpconfiguration default: spec.nodeMeshBFD.multiplier 256 is out of range 1..=255 (default 3)",
    );
}

#[test]
fn bgp_peer_rules() {
    let ok = BGPPeerSpec {
        peer_ip: Some("10.0.0.1".into()),
        as_number: Some(AsNumber(64512)),
        ..Default::default()
    };
    assert!(errors(&peer(ok.clone())).is_empty());

    let p = peer(BGPPeerSpec {
        peer_ip: Some("10.0.0.300".into()),
        ..ok.clone()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec.peerIP \"10.0.0.300\" is not an IP address: write 10.0.0.1, 10.0.0.1:1179, fd00::1 or [fd00::1]:1179",
    );

    let p = peer(BGPPeerSpec {
        as_number: Some(AsNumber(0)),
        ..ok.clone()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec.asNumber 0 cannot be used: AS 0 is reserved (RFC 7607); pick a private AS like 64512",
    );

    let p = peer(BGPPeerSpec {
        as_number: None,
        ..ok.clone()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec.asNumber is required with peerIP: give the peer's AS number",
    );

    let p = peer(BGPPeerSpec::default());
    assert_error(
        &p,
        "bgppeer peer1: spec.peerIP is required (or set peerSelector to peer with selected nodes)",
    );

    let p = peer(BGPPeerSpec {
        node: Some("n1".into()),
        node_selector: Some("all()".into()),
        ..ok.clone()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec sets both node and nodeSelector: use node for one node or nodeSelector for a set",
    );

    let p = peer(BGPPeerSpec {
        peer_selector: Some("has(route-reflector)".into()),
        ..ok.clone()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec sets peerSelector together with peerIP/asNumber: the selected nodes give both; remove peerIP and asNumber",
    );

    let p = peer(BGPPeerSpec {
        peer_selector: Some("has(".into()),
        ..Default::default()
    });
    assert_error(
        &p,
        "bgppeer peer1: spec.peerSelector is invalid: selector \"has(\": expected a label name at column 5",
    );

    let p = peer(BGPPeerSpec {
        max_restart_time: Some("2 minutes".into()),
        ..ok.clone()
    });
    assert!(
        errors(&p)[0].starts_with("bgppeer peer1: spec.maxRestartTime duration \"2 minutes\""),
        "{:?}",
        errors(&p)
    );
}

#[test]
fn bgp_configuration_rules() {
    let mut c = BGPConfiguration::new("default");
    c.spec.as_number = Some(AsNumber(23456));
    c.spec.log_severity_screen = Some("Verbose".into());
    c.spec.listen_port = Some(0);
    c.spec.node_mesh_max_restart_time = Some("10".into());
    let errs = errors(&c);
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.asNumber 23456 cannot be used")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e == "bgpconfiguration default: spec.logSeverityScreen \"Verbose\" is not a log level; use one of Debug, Info, Warning, Error, Fatal, None"), "{errs:?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.listenPort 0 is not a port")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.nodeMeshMaxRestartTime duration \"10\": missing unit")),
        "{errs:?}"
    );

    let mut n = BGPConfiguration::new("node.host1");
    n.spec.node_to_node_mesh_enabled = Some(false);
    assert_error(
        &n,
        "bgpconfiguration node.host1: spec.nodeToNodeMeshEnabled can only be set in the BGPConfiguration named \"default\"; move it there",
    );
    let other = BGPConfiguration::new("custom");
    assert_error(
        &other,
        "bgpconfiguration custom: metadata.name must be \"default\" (cluster-wide) or \"node.<nodename>\" (one node)",
    );

    let mut c = BGPConfiguration::new("default");
    c.spec.prefix_advertisements = Some(vec![datastore::model::PrefixAdvertisement {
        cidr: "10.0.0.0/24".into(),
        communities: vec!["nope".into()],
    }]);
    assert_error(
        &c,
        "bgpconfiguration default: spec.prefixAdvertisements[0].communities[0] \"nope\" is neither a community defined in spec.communities nor a value like 65001:100",
    );
}

#[test]
fn node_rules() {
    let mut n = Node::new("node1");
    n.spec.bgp = Some(NodeBGPSpec {
        ipv4_address: Some("10.0.0.1/33".into()),
        route_reflector_cluster_id: Some("rr1".into()),
        ..Default::default()
    });
    n.spec.vxlan_tunnel_mac_addr = Some("zz:00".into());
    assert_error(
        &n,
        "node node1: spec.bgp.ipv4Address \"10.0.0.1/33\" is not an IPv4 address in CIDR form like 10.0.0.1/24",
    );
    assert_error(
        &n,
        "node node1: spec.bgp.routeReflectorClusterID \"rr1\" is not a cluster ID: write it like an IPv4 address, e.g. 224.0.0.1",
    );
    assert_error(
        &n,
        "node node1: spec.vxlanTunnelMACAddr \"zz:00\" is not a MAC address like ee:ee:ee:ee:ee:ee",
    );
}

#[test]
fn ipam_and_reservation_rules() {
    let mut c = IPAMConfiguration::new(Default::default());
    assert!(errors(&c).is_empty());
    c.metadata.name = "mine".into();
    assert_error(
        &c,
        "ipamconfiguration mine: metadata.name \"mine\" is not allowed: there is one IPAMConfiguration, named \"default\"",
    );
    let r = IPReservation::new("r", vec!["10.0.0.1/24".into(), "nope".into()]);
    assert_error(
        &r,
        "ipreservation r: spec.reservedCIDRs[0] 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
    );
    assert_error(
        &r,
        "ipreservation r: spec.reservedCIDRs[1] \"nope\" is not a valid IP address or CIDR",
    );
}

#[test]
fn namespace_rules() {
    let mut w = WorkloadEndpoint::new("default", "n1-k8s-pod-eth0");
    assert!(errors(&w).is_empty());
    w.metadata.namespace = None;
    assert_error(
        &w,
        "workloadendpoint n1-k8s-pod-eth0: metadata.namespace is required: workload endpoints live in a namespace",
    );
    let mut p = pool("p", "10.0.0.0/16");
    p.metadata.namespace = Some("default".into());
    assert_error(
        &p,
        "ippool p: metadata.namespace must not be set: IPPool is not namespaced",
    );
}

#[test]
fn cross_object_checks() {
    let set: Vec<Resource> = vec![
        pool("a", "10.0.0.0/16").into(),
        pool("b", "10.0.0.0/24").into(),
        pool("a", "10.9.0.0/16").into(),
    ];
    let e = validate_all(&set).unwrap_err().to_string();
    assert!(
        e.contains("ippool b: spec.cidr 10.0.0.0/24 overlaps ippool a"),
        "{e}"
    );
    assert!(e.contains("ippool a: metadata.name appears twice"), "{e}");
}

#[test]
fn manifest_validation_errors_point_at_the_field_line() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool1\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: 33\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool2\nspec:\n  cidr: 10.0.0.0/24\n";
    let e = parse_manifests(text, "pools.yaml").unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains(
            "pools.yaml:7:3: IPPool pool1: spec.blockSize 33 is out of range 20..=32 for IPv4"
        ),
        "{s}"
    );
    assert!(
        s.contains("pools.yaml:14:3: IPPool pool2: spec.cidr 10.0.0.0/24 overlaps ippool pool1"),
        "{s}"
    );
}
