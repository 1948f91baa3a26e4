//! Generated objects survive struct → YAML/JSON → struct unchanged, and
//! omitted fields stay omitted.

use datastore::model::{
    AllowedUse, AsNumber, BGPPeer, BGPPeerSpec, EncapMode, IPPool, NextHopMode, Node, NodeBGPSpec,
    ObjectMeta, Resource, SourceAddress, parse_manifests_unvalidated, to_json, to_yaml,
};
use proptest::prelude::*;

fn meta() -> impl Strategy<Value = ObjectMeta> {
    (
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        prop::collection::btree_map("[a-z]{1,5}(/[a-z]{1,5})?", "[a-zA-Z0-9 :'\"-]{0,8}", 0..3),
        prop::option::of("[0-9]{1,6}"),
    )
        .prop_map(|(name, labels, rv)| ObjectMeta {
            name,
            labels,
            resource_version: rv,
            ..Default::default()
        })
}

fn encap() -> impl Strategy<Value = Option<EncapMode>> {
    prop::option::of(prop_oneof![
        Just(EncapMode::Always),
        Just(EncapMode::CrossSubnet),
        Just(EncapMode::Never)
    ])
}

fn pool() -> impl Strategy<Value = IPPool> {
    (
        meta(),
        any::<[u8; 2]>(),
        prop::option::of(20u8..=32),
        encap(),
        encap(),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::of(Just("rack == 'r1'".to_string())),
        prop::option::of(prop::collection::vec(
            prop_oneof![Just(AllowedUse::Workload), Just(AllowedUse::Tunnel)],
            0..3,
        )),
    )
        .prop_map(
            |(metadata, net, bs, ipip, vxlan, nat, disabled, sel, uses)| {
                let mut p = IPPool::new(
                    metadata.name.clone(),
                    format!("10.{}.{}.0/24", net[0], net[1]).parse().unwrap(),
                );
                p.metadata = metadata;
                p.spec.block_size = bs;
                p.spec.ipip_mode = ipip;
                p.spec.vxlan_mode = vxlan;
                p.spec.nat_outgoing = nat;
                p.spec.disabled = disabled;
                p.spec.node_selector = sel;
                p.spec.allowed_uses = uses;
                p
            },
        )
}

fn peer() -> impl Strategy<Value = BGPPeer> {
    (
        meta(),
        prop::option::of(prop_oneof![
            Just("10.0.0.1".to_string()),
            Just("10.0.0.1:1179".to_string()),
            Just("[fd00::1]:179".to_string())
        ]),
        prop::option::of(any::<u32>().prop_map(AsNumber)),
        prop::option::of(prop_oneof![
            Just(SourceAddress::UseNodeIP),
            Just(SourceAddress::None)
        ]),
        prop::option::of(prop_oneof![
            Just(NextHopMode::Auto),
            Just(NextHopMode::SelfHop),
            Just(NextHopMode::Keep)
        ]),
        prop::option::of("[0-9]{1,3}s"),
    )
        .prop_map(|(metadata, peer_ip, as_number, src, nh, mrt)| BGPPeer {
            metadata,
            spec: BGPPeerSpec {
                peer_ip,
                as_number,
                source_address: src,
                next_hop_mode: nh,
                max_restart_time: mrt,
                ..Default::default()
            },
        })
}

fn node() -> impl Strategy<Value = Node> {
    (
        meta(),
        prop::option::of(("10.0.0.[0-9]{1,2}/24", prop::option::of("244.0.0.[0-9]"))),
        prop::option::of(Just(serde_json::json!({"podCIDRs": ["10.0.0.0/24"]}))),
    )
        .prop_map(|(metadata, bgp, status)| {
            let mut n = Node::new(metadata.name.clone());
            n.metadata = metadata;
            n.spec.bgp = bgp.map(|(a, rr)| NodeBGPSpec {
                ipv4_address: Some(a),
                route_reflector_cluster_id: rr,
                ..Default::default()
            });
            n.status = status;
            n
        })
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        pool().prop_map(Resource::from),
        peer().prop_map(Resource::from),
        node().prop_map(Resource::from),
    ]
}

proptest! {
    #[test]
    fn yaml_round_trip(r in resource()) {
        let yaml = to_yaml(&r);
        let back = parse_manifests_unvalidated(&yaml, "gen.yaml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&back, &vec![r.clone()], "{}", yaml);
        // Printing again gives the same text.
        prop_assert_eq!(to_yaml(&back[0]), yaml);
    }

    #[test]
    fn json_round_trip(r in resource()) {
        let json = to_json(&r);
        let back = parse_manifests_unvalidated(&json, "gen.json")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{json}")))?;
        prop_assert_eq!(&back, &vec![r], "{}", json);
    }

    #[test]
    fn omitted_fields_stay_omitted(p in pool()) {
        let yaml = to_yaml(&p);
        prop_assert_eq!(yaml.contains("blockSize"), p.spec.block_size.is_some());
        prop_assert_eq!(yaml.contains("ipipMode"), p.spec.ipip_mode.is_some());
        prop_assert_eq!(yaml.contains("natOutgoing"), p.spec.nat_outgoing.is_some());
        prop_assert_eq!(yaml.contains("allowedUses"), p.spec.allowed_uses.is_some());
    }
}
