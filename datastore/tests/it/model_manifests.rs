//! Calico's documented example manifests parse, validate and round-trip
//! YAML → struct → YAML with no field lost or gained.

use std::path::PathBuf;

use datastore::model::{
    AllowedUse, AsNumber, BGPConfiguration, BGPPeer, EncapMode, IPAMConfiguration, IPPool,
    IPReservation, Kind, KindId, NextHopMode, Node, Resource, WorkloadEndpoint, list_to_json,
    list_to_yaml, parse_manifests, to_json, to_yaml,
};
use serde::Deserialize;

fn testdata(name: &str) -> (String, String) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/testdata/manifests", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (text, name.to_string())
}

fn all_files() -> Vec<String> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/testdata/manifests"]
        .iter()
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The resource documents of a YAML stream as value trees, with List items
/// expanded (what the round trip must reproduce).
fn yaml_objects(text: &str) -> Vec<serde_norway::Value> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_norway::Value::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind.ends_with("List") {
            out.extend(
                v.get("items")
                    .unwrap()
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .cloned(),
            );
        } else {
            out.push(v);
        }
    }
    out
}

#[test]
fn every_example_parses_validates_and_round_trips_as_yaml() {
    let files = all_files();
    assert!(files.len() >= 10, "testdata missing: {files:?}");
    for name in files.iter().filter(|n| n.ends_with(".yaml")) {
        let (text, source) = testdata(name);
        let resources = parse_manifests(&text, &source).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        let expected = yaml_objects(&text);
        assert_eq!(resources.len(), expected.len(), "{name}");
        for (r, want) in resources.iter().zip(&expected) {
            let printed = to_yaml(r);
            let got: serde_norway::Value = serde_norway::from_str(&printed).unwrap();
            assert_eq!(&got, want, "{name}: {} did not round-trip:\n{printed}", r);
            // And the printed form parses back to the same struct.
            let again = parse_manifests(&printed, "printed").unwrap();
            assert_eq!(&again[0], r);
        }
    }
}

#[test]
fn json_example_round_trips_as_json() {
    let (text, source) = testdata("pools.json");
    let resources = parse_manifests(&text, &source).unwrap();
    assert_eq!(resources.len(), 1);
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let got: serde_json::Value = serde_json::from_str(&to_json(&resources[0])).unwrap();
    assert_eq!(got, want);
}

#[test]
fn lists_print_as_calicoctl_and_parse_back() {
    let (text, source) = testdata("ippools-multi.yaml");
    let resources = parse_manifests(&text, &source).unwrap();
    let yaml = list_to_yaml(&resources);
    assert!(yaml.contains("kind: IPPoolList"), "{yaml}");
    assert_eq!(parse_manifests(&yaml, "list").unwrap(), resources);
    let json = list_to_json(&resources);
    assert_eq!(parse_manifests(&json, "list.json").unwrap(), resources);

    // Mixed kinds print as a plain List.
    let mut mixed = resources.clone();
    mixed.extend(parse_manifests(&testdata("bgppeer-global.yaml").0, "p").unwrap());
    let yaml = list_to_yaml(&mixed);
    assert!(yaml.contains("kind: List\n"), "{yaml}");
    assert_eq!(parse_manifests(&yaml, "mixed").unwrap(), mixed);
}

#[test]
fn json_array_is_accepted() {
    let (text, _) = testdata("ippools-multi.yaml");
    let resources = parse_manifests(&text, "x").unwrap();
    let array = serde_json::to_string(&resources).unwrap();
    assert_eq!(parse_manifests(&array, "a.json").unwrap(), resources);
}

fn one<K: Kind>(name: &str) -> Vec<K> {
    let (text, source) = testdata(name);
    parse_manifests(&text, &source)
        .unwrap()
        .into_iter()
        .map(|r| K::from_resource(r).unwrap())
        .collect()
}

#[test]
fn ippool_fields_and_defaults() {
    let pools = one::<IPPool>("ippool.yaml");
    let p = &pools[0].spec;
    assert_eq!(p.cidr.to_string(), "10.1.0.0/16");
    assert_eq!(p.block_size, None, "omitted blockSize must stay omitted");
    assert_eq!(p.block_size(), 26);
    assert_eq!(p.ipip_mode(), EncapMode::CrossSubnet);
    assert_eq!(p.vxlan_mode(), EncapMode::Never);
    assert!(p.nat_outgoing());
    assert!(p.allows(AllowedUse::Tunnel));

    let pools = one::<IPPool>("ippools-multi.yaml");
    assert_eq!(pools[1].spec.node_selector(), "zone == \"us-east-1a\"");
    assert_eq!(pools[2].spec.block_size(), 122);
    assert!(pools[2].spec.disable_bgp_export());
    // Defaults of a bare pool.
    let bare = IPPool::new("bare", "fd00:1::/64".parse().unwrap());
    assert_eq!(bare.spec.block_size(), 122);
    assert_eq!(bare.spec.node_selector(), "all()");
    assert_eq!(
        bare.spec.allowed_uses(),
        vec![AllowedUse::Workload, AllowedUse::Tunnel]
    );
    assert!(!bare.spec.nat_outgoing() && !bare.spec.disabled());
    // A bare pool prints only what was set.
    let yaml = to_yaml(&bare);
    assert!(!yaml.contains("blockSize"), "{yaml}");
}

#[test]
fn bgp_peer_fields() {
    let peers = one::<BGPPeer>("bgppeer-global.yaml");
    assert!(peers[0].spec.is_global());
    assert_eq!(
        peers[0].spec.peer_addr(),
        Some(("192.20.30.40".parse().unwrap(), None))
    );
    assert_eq!(peers[0].spec.as_number, Some(AsNumber(64567)));

    let node = one::<BGPPeer>("bgppeer-node.yaml");
    assert_eq!(node[0].spec.node.as_deref(), Some("rack1-host1"));
    assert_eq!(node[0].spec.max_restart_time().as_secs(), 120);
    let secret = node[0]
        .spec
        .password
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("bgp-secrets", "rr-password")
    );

    let rr = one::<BGPPeer>("bgppeer-rr.yaml");
    assert_eq!(
        rr[0].spec.peer_selector.as_deref(),
        Some("route-reflector == 'true'")
    );
    assert_eq!(rr[1].spec.next_hop_mode(), NextHopMode::SelfHop);
    assert_eq!(
        rr[2].spec.peer_addr(),
        Some(("2001:db8::1".parse().unwrap(), Some(1179)))
    );
    assert_eq!(rr[2].spec.next_hop_mode(), NextHopMode::Keep);
}

#[test]
fn bgp_configuration_fields() {
    let cfgs = one::<BGPConfiguration>("bgpconfig.yaml");
    let d = &cfgs[0];
    assert!(d.is_default());
    assert_eq!(d.spec.as_number(), AsNumber(63400));
    assert_eq!(d.spec.listen_port(), 178);
    assert!(d.spec.node_to_node_mesh_enabled());
    assert_eq!(d.spec.node_mesh_max_restart_time().as_secs(), 120);
    assert_eq!(cfgs[1].node_name(), Some("rack1-host1"));
    // Defaults of an empty one.
    let empty = BGPConfiguration::new("default");
    assert_eq!(empty.spec.as_number(), AsNumber(64512));
    assert_eq!(empty.spec.listen_port(), 179);
    assert!(empty.spec.node_to_node_mesh_enabled());
}

#[test]
fn node_fields() {
    let nodes = one::<Node>("node-rr.yaml");
    let n = &nodes[0];
    assert_eq!(n.ipv4_address(), Some(("10.0.0.10".parse().unwrap(), 24)));
    assert_eq!(n.ipv4_subnet().unwrap().to_string(), "10.0.0.0/24");
    assert_eq!(
        n.ipv6_address(),
        Some(("2001:db8:85a3::8a2e:370:7334".parse().unwrap(), 120))
    );
    assert_eq!(
        n.route_reflector_cluster_id(),
        Some("244.0.0.1".parse().unwrap())
    );
    assert_eq!(
        n.ipv4_ipip_tunnel_addr(),
        Some("192.168.10.1".parse().unwrap())
    );
    assert_eq!(
        n.ipv4_vxlan_tunnel_addr(),
        Some("192.168.10.2".parse().unwrap())
    );
    assert_eq!(n.metadata.labels["route-reflector"], "true");
}

#[test]
fn ipam_configuration_and_reservation() {
    let cfg = one::<IPAMConfiguration>("ipamconfig.yaml");
    assert_eq!(cfg[0].spec.max_blocks_per_host(), Some(4));
    assert!(!cfg[0].spec.strict_affinity());
    assert!(cfg[0].spec.auto_allocate_blocks());
    let defaults = IPAMConfiguration::new(Default::default());
    assert_eq!(defaults.spec.max_blocks_per_host(), None);
    assert!(defaults.spec.auto_allocate_blocks());

    let res = one::<IPReservation>("ipreservation.yaml");
    let nets: Vec<String> = res[0]
        .spec
        .reserved_networks()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["192.168.2.3/32", "10.0.2.3/32", "cafe:f00d::/123"]);
    // Written forms are kept (a bare IP stays bare).
    assert_eq!(res[0].spec.reserved_cidrs[0], "192.168.2.3");
}

#[test]
fn workload_endpoint_fields() {
    let weps = one::<WorkloadEndpoint>("workloadendpoint.yaml");
    let w = &weps[0];
    assert_eq!(w.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(w.spec.ip_networks[0].to_string(), "192.168.0.0/32");
    assert_eq!(
        w.metadata.name,
        WorkloadEndpoint::calico_name("node1", "k8s", "my-nginx-b1337a", "eth0")
    );
    assert_eq!(Resource::from(w.clone()).kind(), KindId::WorkloadEndpoint);
}

#[test]
fn kind_names_as_calicoctl() {
    use datastore::model::kind_from_name;
    for (name, kind) in [
        ("ippool", KindId::IPPool),
        ("pools", KindId::IPPool),
        ("IPPool", KindId::IPPool),
        ("bgpp", KindId::BGPPeer),
        ("bps", KindId::BGPPeer),
        ("bgpconfig", KindId::BGPConfiguration),
        ("bgpconfigurations", KindId::BGPConfiguration),
        ("no", KindId::Node),
        ("nodes", KindId::Node),
        ("ipamconfig", KindId::IPAMConfiguration),
        ("ipreservations", KindId::IPReservation),
        ("wep", KindId::WorkloadEndpoint),
        ("workloadendpoints", KindId::WorkloadEndpoint),
        ("ippools.projectcalico.org", KindId::IPPool),
    ] {
        assert_eq!(kind_from_name(name), Some(kind), "{name}");
    }
    assert_eq!(
        kind_from_name("felixconfig"),
        Some(KindId::FelixConfiguration)
    );
    assert_eq!(kind_from_name("globalnetworkpolicy"), None);
    assert_eq!(<IPPool as Kind>::PLURAL, "ippools");
    const { assert!(<WorkloadEndpoint as Kind>::NAMESPACED) };
    const { assert!(!<Node as Kind>::NAMESPACED) };
}

/// The examples in the resource reference (`docs/resources/*.md`) are valid.
#[test]
fn reference_doc_examples_parse_and_validate() {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "docs", "resources"]
        .iter()
        .collect();
    let mut examples = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let yaml = block.split("```").next().unwrap();
            let parsed = parse_manifests(yaml, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(!parsed.is_empty(), "{path:?}");
            examples += 1;
        }
    }
    assert!(examples >= 7, "found only {examples} examples in {dir:?}");
}

#[test]
fn selector_helpers_for_ipam_and_bgp() {
    use std::collections::BTreeMap;
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let pools = one::<IPPool>("ippools-multi.yaml");
    assert!(pools[0].spec.selects_node(&labels(&[])));
    assert!(
        pools[1]
            .spec
            .selects_node(&labels(&[("zone", "us-east-1a")]))
    );
    assert!(!pools[1].spec.selects_node(&labels(&[("zone", "eu")])));

    let global = &one::<BGPPeer>("bgppeer-global.yaml")[0];
    assert!(global.spec.applies_to_node("any", &labels(&[])));
    let node = &one::<BGPPeer>("bgppeer-node.yaml")[0];
    assert!(node.spec.applies_to_node("rack1-host1", &labels(&[])));
    assert!(!node.spec.applies_to_node("rack2-host1", &labels(&[])));
    let rr = one::<BGPPeer>("bgppeer-rr.yaml");
    assert!(
        rr[1]
            .spec
            .applies_to_node("h", &labels(&[("rack", "rack-1")]))
    );
    assert!(
        !rr[1]
            .spec
            .applies_to_node("h", &labels(&[("rack", "rack-2")]))
    );
    let sel = rr[0].spec.peer_selector().unwrap();
    assert!(sel.matches(&labels(&[("route-reflector", "true")])));
    assert!(global.spec.peer_selector().is_none());
}
