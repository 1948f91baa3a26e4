//! Manifest decode errors: source name, line, column, object, field path,
//! and unknown fields reported (never dropped).

use datastore::model::{ManifestError, parse_manifests, parse_manifests_unvalidated};

fn err(text: &str, source: &str) -> ManifestError {
    match parse_manifests(text, source) {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e,
    }
}

const TYPO: &str = "\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 192.168.0.0/16
  blockSzie: 26
  natOutgoing: true
";

#[test]
fn unknown_field_has_line_column_object_path_and_hint() {
    let e = err(TYPO, "pools.yaml");
    assert_eq!(e.problems.len(), 1);
    assert_eq!(
        e.to_string(),
        "pools.yaml:7:3: IPPool default-ipv4-ippool: spec.blockSzie: unknown field (did you mean blockSize?)"
    );
    let p = &e.problems[0];
    assert_eq!((p.line, p.column), (7, Some(3)));
    assert_eq!(p.path.as_deref(), Some("spec.blockSzie"));
}

#[test]
fn lines_count_across_documents() {
    let text = format!(
        "# header\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: ok\nspec:\n  cidr: 10.0.0.0/16\n---\n{TYPO}"
    );
    let e = err(&text, "multi.yaml");
    // The typo is on line 7 of the second document, which starts at line 10.
    assert_eq!(e.problems[0].line, 16, "{e}");
    assert!(
        e.to_string()
            .starts_with("multi.yaml:16:3: IPPool default-ipv4-ippool: ")
    );
}

#[test]
fn every_bad_document_is_reported() {
    let text = format!("{TYPO}---\n{}", TYPO.replace("blockSzie", "natOutgoin"));
    let e = err(&text, "two.yaml");
    assert_eq!(e.problems.len(), 2, "{e}");
    assert!(
        e.problems[1].message.contains("did you mean natOutgoing?"),
        "{e}"
    );
    assert_eq!(e.problems[1].line, 9 + 7);
}

#[test]
fn unknown_top_level_and_metadata_fields() {
    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\n  lables: {a: b}\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 64512\n";
    let e = err(text, "p.yaml");
    assert_eq!(e.problems[0].path.as_deref(), Some("metadata.lables"));
    assert!(
        e.problems[0].message.contains("did you mean labels?"),
        "{e}"
    );
    assert_eq!(e.problems[0].line, 5);

    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspecs: {}\n";
    let e = err(text, "p.yaml");
    assert_eq!(e.problems[0].path.as_deref(), Some("specs"));
    assert!(e.problems[0].message.contains("did you mean spec?"), "{e}");
}

#[test]
fn bad_enum_value_names_the_choices() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  ipipMode: Alwys\n";
    let e = err(text, "p.yaml");
    let p = &e.problems[0];
    assert_eq!(p.path.as_deref(), Some("spec.ipipMode"));
    assert_eq!(p.message, "unknown value \"Alwys\" (did you mean Always?)");
    assert_eq!(p.line, 7);
}

#[test]
fn unknown_field_in_list_item_names_the_item() {
    let text = "apiVersion: projectcalico.org/v3\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: IPPool\n  metadata:\n    name: a\n  spec:\n    cidr: 10.0.0.0/16\n- apiVersion: projectcalico.org/v3\n  kind: BGPPeer\n  metadata:\n    name: second\n  spec:\n    peerIp: 10.0.0.1\n";
    let e = err(text, "list.yaml");
    let p = &e.problems[0];
    assert_eq!(p.path.as_deref(), Some("items[1].spec.peerIp"), "{e}");
    assert_eq!(p.object.as_deref(), Some("BGPPeer second"));
    assert_eq!(p.line, 15);
    assert!(p.message.contains("did you mean peerIP?"), "{e}");
}

#[test]
fn wrong_api_version_and_kind() {
    let text = "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n";
    let e = err(text, "p.yaml");
    assert!(e.to_string().contains("use projectcalico.org/v3"), "{e}");

    let text = "apiVersion: projectcalico.org/v3\nkind: IpPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n";
    let e = err(text, "p.yaml");
    assert!(e.to_string().contains("did you mean IPPool?"), "{e}");

    let text =
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\n";
    let e = err(text, "p.yaml");
    assert!(
        e.to_string()
            .contains("unknown kind \"GlobalNetworkPolicy\""),
        "{e}"
    );
}

/// A Calico FelixConfiguration reads; each field Manx does not act on is refused by
/// name at its line, and a misspelt one is an unknown field with a hint.
#[test]
fn felixconfiguration_refuses_calico_fields_by_name_and_line() {
    let text = "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  wireguardListeningPort: 51821\n  ipipMTU: 1400\n  wireguardMtu: 1400\n";
    let e = err(text, "felix.yaml");
    let s = e.to_string();
    assert!(
        s.contains(
            "felix.yaml:7:3: FelixConfiguration default: spec.ipipMTU is not supported by Manx yet"
        ),
        "{s}"
    );
    assert!(
        s.contains("felix.yaml:8:3:") && s.contains("(did you mean wireguardMTU?)"),
        "{s}"
    );
    assert_eq!(e.problems.len(), 2, "{s}");
}

#[test]
fn missing_required_fields() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  natOutgoing: true\n";
    let e = err(text, "p.yaml");
    assert!(e.to_string().contains("missing field `cidr`"), "{e}");
    assert_eq!(e.problems[0].object.as_deref(), Some("IPPool p"));

    let text = "kind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n";
    let e = err(text, "p.yaml");
    assert!(
        e.to_string()
            .contains("add apiVersion: projectcalico.org/v3"),
        "{e}"
    );
}

#[test]
fn yaml_syntax_error_has_source_line() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\n---\nmetadata:\n  name: [a\n";
    let e = err(text, "bad.yaml");
    // Both documents are reported: the first lacks metadata, the second is
    // not valid YAML.
    assert_eq!(e.problems.len(), 2, "{e}");
    assert_eq!(e.problems[0].line, 1, "{e}");
    let p = &e.problems[1];
    assert!(p.line >= 5, "{e}");
    // No stale document-relative "at line N" left in the message.
    assert!(!p.message.contains(" at line "), "{e}");
}

#[test]
fn bad_values_have_line_and_column() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/33\n";
    let e = err(text, "p.yaml");
    assert_eq!(e.problems[0].line, 6, "{e}");
    assert!(e.to_string().contains("10.0.0.0/33"), "{e}");

    let text = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 4294967296\n";
    let e = err(text, "p.yaml");
    assert_eq!(e.problems[0].line, 7, "{e}");
    assert!(e.to_string().contains("larger than 4294967295"), "{e}");
}

#[test]
fn json_errors_have_line_and_column() {
    let text = "{\n  \"apiVersion\": \"projectcalico.org/v3\",\n  \"kind\": \"IPPool\",\n  \"metadata\": {\"name\": \"j\"},\n  \"spec\": {\"cidr\": \"10.0.0.0/16\", \"blockSzie\": 26}\n}\n";
    let e = err(text, "p.json");
    let p = &e.problems[0];
    assert_eq!(p.line, 5, "{e}");
    assert!(p.column.is_some());
    assert_eq!(p.object.as_deref(), Some("IPPool j"));
    assert!(p.message.contains("did you mean blockSize?"), "{e}");
}

#[test]
fn spec_before_kind_still_decodes_and_checks_fields() {
    let text = "spec:\n  cidr: 10.0.0.0/16\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: late\n";
    let r = parse_manifests(text, "x").unwrap();
    assert_eq!(r[0].name(), "late");
    let text = "spec:\n  cidr: 10.0.0.0/16\n  bogus: 1\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: late\n";
    let e = err(text, "x");
    assert!(e.to_string().contains("spec.bogus"), "{e}");
}

#[test]
fn status_only_on_nodes() {
    let text = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: n1\nspec: {}\nstatus:\n  podCIDRs: [10.0.0.0/24]\n";
    parse_manifests(text, "n").unwrap();
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\nstatus: {}\n";
    assert!(parse_manifests(text, "p").is_err());
}

#[test]
fn empty_input_is_no_resources() {
    assert!(parse_manifests("", "e").unwrap().is_empty());
    assert!(
        parse_manifests("# only a comment\n---\n", "e")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unvalidated_parse_skips_validation_only() {
    let text = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  blockSize: 40\n";
    assert!(parse_manifests(text, "p").is_err());
    assert_eq!(parse_manifests_unvalidated(text, "p").unwrap().len(), 1);
    assert!(parse_manifests_unvalidated(TYPO, "p").is_err());
}

#[test]
fn as_numbers_in_all_notations() {
    let peer = |asn: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  peerIP: 10.0.0.1\n  asNumber: {asn}\n"
        )
    };
    let asn = |text: &str| match &parse_manifests(text, "p").unwrap()[0] {
        datastore::model::Resource::BGPPeer(p) => p.spec.as_number.unwrap().0,
        other => panic!("{other:?}"),
    };
    assert_eq!(asn(&peer("64512")), 64512);
    assert_eq!(asn(&peer("'64512'")), 64512);
    // RFC 5396 asdot, quoted as Calico requires.
    assert_eq!(asn(&peer("'1.10'")), 65546);
    let e = err(&peer("1.10"), "p.yaml");
    assert!(e.to_string().contains("write asdot notation quoted"), "{e}");
    assert_eq!(e.problems[0].line, 7);
    let e = err(&peer("-1"), "p.yaml");
    assert!(e.to_string().contains("AS number -1 is negative"), "{e}");
}

/// Calico's documented BGPConfiguration example (docs: BGP configuration
/// resource), with `bindMode: NodeIP`: every field of it acts (communities,
/// prefixAdvertisements and ignoredInterfaces included) and is accepted; a
/// bad value is refused by name and line.
const CALICO_BGPCONFIG: &str = "\
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: true
  asNumber: 63400
  bindMode: NodeIP
  serviceClusterIPs:
    - cidr: 10.96.0.0/12
  serviceExternalIPs:
    - cidr: 104.244.42.129/32
    - cidr: 172.217.3.0/24
  listenPort: 178
  communities:
    - name: bgp-large-community
      value: 63400:300:100
  prefixAdvertisements:
    - cidr: 172.218.4.0/26
      communities:
        - bgp-large-community
        - 63400:120
";

#[test]
fn calico_bgpconfig_example_is_accepted_and_bad_values_refused_by_name_and_line() {
    parse_manifests(CALICO_BGPCONFIG, "bgpconfig.yaml").unwrap();
    let head = CALICO_BGPCONFIG
        .split("  communities:")
        .next()
        .unwrap()
        .to_string();
    // Empty lists ask for nothing and are accepted too.
    parse_manifests(
        &(head.clone() + "  communities: []\n  ignoredInterfaces: []\n"),
        "ok.yaml",
    )
    .unwrap();
    // ignoredInterfaces acts: names and BIRD patterns, as libcalico-go checks them.
    parse_manifests(
        &(head.clone() + "  ignoredInterfaces:\n    - eth9\n    - vpn*\n    - eth1.100\n"),
        "ok.yaml",
    )
    .unwrap();
    for (bad, why) in [
        ("\"*\"", "\"*\" would ignore every interface"),
        ("eth 1", "\"eth 1\" is not an interface name or pattern"),
        (
            "averyveryverylongname",
            "is not an interface name or pattern",
        ),
    ] {
        let e = err(
            &(head.clone() + &format!("  ignoredInterfaces:\n    - {bad}\n")),
            "bgpconfig.yaml",
        );
        assert!(
            e.to_string()
                .contains("BGPConfiguration default: spec.ignoredInterfaces[0] ")
                && e.to_string().contains(why),
            "{bad}: {e}"
        );
    }
    // Calico reads it from `default` only.
    let node = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.n1\nspec:\n  ignoredInterfaces:\n    - eth9\n";
    let e = err(node, "node.yaml");
    assert!(
        e.to_string().contains(
            "spec.ignoredInterfaces can only be set in the BGPConfiguration named \"default\""
        ),
        "{e}"
    );
}

#[test]
fn bgppeer_fields_act_and_bad_values_are_refused() {
    let peer = |extra: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.1\n  asNumber: 65001\n{extra}"
        )
    };
    // sourceAddress, ttlSecurity, numAllowedLocalASNumbers, filters and reachableBy
    // act, and are accepted: no BGPPeer field is refused any more.
    parse_manifests(
        &peer("  sourceAddress: None\n  ttlSecurity: 2\n  numAllowedLocalASNumbers: 2\n  filters: [export-only]\n  reachableBy: 10.0.0.254\n"),
        "ok.yaml",
    )
    .unwrap();
    let e = err(&peer("  filters: [Export_Only]\n"), "peer.yaml");
    assert!(
        e.to_string()
            .contains("BGPPeer tor: spec.filters[0] is not a BGPFilter name"),
        "{e}"
    );
    let e = err(&peer("  numAllowedLocalASNumbers: 256\n"), "peer.yaml");
    assert!(
        e.to_string()
            .contains("spec.numAllowedLocalASNumbers 256 is out of range 0..=255"),
        "{e}"
    );
}

/// Calico's BGPFilter sample reads; a rule's problems are refused by field
/// at their line, a newer Calico field by name, a misspelt one as unknown.
#[test]
fn bgpfilter_rules_are_checked_by_field_and_line() {
    let sample = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: my-filter\nspec:\n  exportV4:\n    - action: Accept\n      matchOperator: In\n      cidr: 77.0.0.0/16\n      source: RemotePeers\n  importV4:\n    - action: Accept\n      matchOperator: In\n      cidr: 55.0.0.0/16\n      prefixLength:\n        min: 30\n    - action: Reject\n      matchOperator: NotIn\n      cidr: 44.0.0.0/16\n  exportV6:\n    - action: Reject\n      source: RemotePeers\n  importV6:\n    - action: Accept\n      matchOperator: Equal\n      cidr: 5000::0/64\n    - action: Reject\n";
    let got = parse_manifests(sample, "filter.yaml").unwrap();
    assert_eq!(got.len(), 1);
    let bad = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor\nspec:\n  importV4:\n    - action: Reject\n      cidr: 10.0.0.0/8\n      source: RemotePeers\n";
    let e = err(bad, "filter.yaml");
    let s = e.to_string();
    assert!(
        s.contains("filter.yaml:8:7: BGPFilter tor: spec.importV4[0].cidr needs matchOperator"),
        "{s}"
    );
    assert!(
        s.contains("filter.yaml:9:7: BGPFilter tor: spec.importV4[0].source is not applicable to import rules"),
        "{s}"
    );
    // The second rule's problem is at the second rule's line.
    let second = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor\nspec:\n  exportV4:\n  - action: Reject\n    matchOperator: In\n    cidr: 10.0.0.0/8\n  - action: Reject\n    cidr: 10.1.0.0/16\n";
    let s = err(second, "filter.yaml").to_string();
    assert!(
        s.starts_with("filter.yaml:11:5: BGPFilter tor: spec.exportV4[1].cidr needs matchOperator"),
        "{s}"
    );
    let newer = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor\nspec:\n  exportV4:\n    - action: Accept\n      peerType: eBGP\n";
    let s = err(newer, "filter.yaml").to_string();
    assert!(
        s.contains("spec.exportV4[0].peerType is not supported by Manx yet"),
        "{s}"
    );
    let typo = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor\nspec:\n  exportV4:\n    - action: Accept\n      cidrs: 10.0.0.0/8\n";
    let s = err(typo, "filter.yaml").to_string();
    assert!(s.contains("cidrs") && s.contains("unknown field"), "{s}");
}

/// `reachableBy` acts (a host route to the peer via the gateway): a gateway of
/// the peer's family, not the peer itself, and only with `peerIP`.
#[test]
fn bgppeer_reachable_by_is_a_gateway_of_the_peers_family() {
    let peer = |spec: &str| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n{spec}"
        )
    };
    parse_manifests(
        &peer("  peerIP: 10.0.1.1\n  asNumber: 65001\n  reachableBy: 10.0.0.254\n"),
        "ok.yaml",
    )
    .unwrap();
    for (spec, want) in [
        (
            "  peerIP: 10.0.1.1\n  asNumber: 65001\n  reachableBy: gw1\n",
            "BGPPeer tor: spec.reachableBy \"gw1\" is not an IP address: give the gateway the peer is reached through",
        ),
        (
            "  peerIP: fd00::1\n  asNumber: 65001\n  reachableBy: 10.0.0.254\n",
            "BGPPeer tor: spec.reachableBy 10.0.0.254 and peerIP fd00::1 are of different address families",
        ),
        (
            "  peerIP: 10.0.1.1\n  asNumber: 65001\n  reachableBy: 10.0.1.1\n",
            "BGPPeer tor: spec.reachableBy 10.0.1.1 is peerIP itself",
        ),
        (
            "  peerSelector: rr == 'true'\n  reachableBy: 10.0.0.254\n",
            "BGPPeer tor: spec.reachableBy needs peerIP",
        ),
    ] {
        let e = err(&peer(spec), "peer.yaml").to_string();
        assert!(e.contains(want), "{spec}: {e}");
    }
}
