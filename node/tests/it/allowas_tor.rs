//! allowas-in (`BGPPeer.spec.numAllowedLocalASNumbers`, BIRD's `allow local
//! as N` in calico-node's config): every rack in one AS (64512) behind a
//! BIRD 2 spine (eBGP, AS 65001). The spine passes on another rack's
//! prefix, whose AS_PATH then holds our AS once ([65001 64512]); with
//! `numAllowedLocalASNumbers: 1` manx-node accepts it and programs it, and
//! still drops as a loop a path with our AS twice.
//!
//! The same spine sees the communities of the prefixes the node
//! originates (`prefixAdvertisements`, a named standard community and a
//! large one by value, on `serviceClusterIPs` 10.96.0.0/12) in `birdc show
//! route all`.
//!
//! A `BGPFilter` on the spine's BGPPeer (`filters: [spine]`) rejects one of
//! two spine prefixes on import (10.220.8.0/26: never in the node's kernel
//! while 10.220.9.0/26 is) and one of the node's two blocks on export
//! (10.22.1.0/26: absent from `birdc show route` while 10.22.0.0/26 is);
//! then the filter is edited live to no rules and both appear, in the
//! kernel and at the spine, with the BGP session never reset (BIRD's
//! `show protocols` keeps the same Established-since time).
//!
//! Two namespaces on 198.19.55.0/24; pool 10.22.0.0/16.

use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{
    AsNumber, BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPFilterRule, BGPFilterSpec,
    BGPPeer, BGPPeerSpec, CidrEntry, Community, FilterAction, MatchOperator, ObjectMeta,
    PrefixAdvertisement, parse_manifests,
};
use testkit::netns::veth;
use testkit::{Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const SPINE: &str = "198.19.55.1";
const NODE: &str = "198.19.55.2";
const LIMIT: Duration = Duration::from_secs(60);
const NODENAME: &str = "mxallow-node";

/// The spine's filter: with `rules`, reject the spine's 10.220.8.0/26 on
/// import and the node's block 10.22.1.0/26 on export; without, nothing.
fn spine_filter(rules: bool) -> BGPFilter {
    let mut spec = BGPFilterSpec::default();
    if rules {
        spec.import_v4 = vec![BGPFilterRule::cidr(
            FilterAction::Reject,
            MatchOperator::Equal,
            "10.220.8.0/26",
        )];
        spec.export_v4 = vec![BGPFilterRule::cidr(
            FilterAction::Reject,
            MatchOperator::In,
            "10.22.1.0/26",
        )];
    }
    BGPFilter::new("spine", spec)
}

/// Another rack's prefix (our AS once) and a looped one (our AS twice),
/// plus a plain spine prefix as the marker that routes arrived.
fn bird_conf() -> String {
    format!(
        "router id {SPINE};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         protocol static racks {{ ipv4; route 10.220.1.0/26 blackhole; \
         route 10.220.2.0/26 blackhole; route 10.220.8.0/26 blackhole; \
         route 10.220.9.0/26 blackhole; }}\n\
         protocol bgp manx {{\n  local {SPINE} as 65001;\n  neighbor {NODE} as 64512;\n  \
         hold time 9; connect retry time 1; connect delay time 1; error wait time 1, 5;\n  \
         ipv4 {{ import all; export filter {{\n    if source != RTS_STATIC then reject;\n    \
         if net = 10.220.1.0/26 then bgp_path.prepend(64512);\n    \
         if net = 10.220.2.0/26 then {{ bgp_path.prepend(64512); bgp_path.prepend(65010); \
         bgp_path.prepend(64512); }}\n    accept;\n  }}; }};\n}}\n"
    )
}

fn has_route(ns: &Netns, prefix: &str) -> bool {
    ns.ip(&["route", "show", prefix])
        .contains(&format!("{prefix} via {SPINE} dev eth0 proto 77"))
}

#[test]
fn num_allowed_local_as_numbers_accepts_our_as_from_another_rack() {
    if !Prereqs::new().root().commands(&["ip", BIRD, BIRDC]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spine = Netns::new("mxallow");
    let node = Netns::new("mxallow");
    veth(&spine, "eth0", &node, "eth0");
    spine.ip(&["addr", "add", &format!("{SPINE}/24"), "dev", "eth0"]);
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "eth0"]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap();
            let peer = BGPPeer {
                metadata: ObjectMeta::named("spine"),
                spec: BGPPeerSpec {
                    peer_ip: Some(SPINE.into()),
                    as_number: Some(AsNumber(65001)),
                    num_allowed_local_as_numbers: Some(1),
                    filters: Some(vec!["spine".into()]),
                    ..Default::default()
                },
            };
            let store: Arc<dyn datastore::Datastore> = Arc::new(store);
            let client = Client::new(store.clone());
            client.create(&peer).await.unwrap();
            client.create(&spine_filter(true)).await.unwrap();
            // The pool, and two blocks of the node (claimed as a pod start
            // would), before manx-node starts.
            let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: 10.22.0.0/16\n  blockSize: 26\n  ipipMode: Never\n  vxlanMode: Never\n  natOutgoing: false\n";
            for r in parse_manifests(pool, "pool.yaml").unwrap() {
                client.create_resource(&r).await.unwrap();
            }
            let topo = ipam::resources::DatastoreTopology::new(store.clone());
            let ipam = ipam::Ipam::new(store, Arc::new(topo));
            for (ip, pod) in [("10.22.0.1", "a"), ("10.22.1.1", "b")] {
                ipam.assign_ip(ip.parse().unwrap(), pod, &ipam::Attrs::default(), NODENAME)
                    .await
                    .unwrap();
            }
            let cfg = BGPConfiguration {
                metadata: ObjectMeta::named("default"),
                spec: BGPConfigurationSpec {
                    service_cluster_ips: Some(vec![CidrEntry {
                        cidr: "10.96.0.0/12".into(),
                    }]),
                    communities: Some(vec![Community {
                        name: "rack".into(),
                        value: "65001:100".into(),
                    }]),
                    prefix_advertisements: Some(vec![PrefixAdvertisement {
                        cidr: "10.96.0.0/12".into(),
                        communities: vec!["rack".into(), "65001:1:2".into()],
                    }]),
                    ..Default::default()
                },
            };
            client.create(&cfg).await.unwrap();
        });
    let conf = dir.path().join("bird.conf");
    let sock = dir.path().join("bird.ctl");
    std::fs::write(&conf, bird_conf()).unwrap();
    let _bird = crate::support::spawn_bird(&spine, dir.path(), &conf, &sock);
    let mut manx =
        crate::support::start_manx_node(&node, dir.path(), NODENAME, "10.22.0.0/16", &[]);
    assert!(
        eventually(LIMIT, || has_route(&node, "10.220.9.0/26")
            && has_route(&node, "10.220.1.0/26")),
        "{}\n{}",
        node.ip(&["route", "show"]),
        manx.log_text()
    );
    // Our AS twice is more than allowed: a loop, never installed (it came
    // in the same burst as the marker).
    assert!(
        !has_route(&node, "10.220.2.0/26"),
        "{}",
        node.ip(&["route", "show"])
    );
    // The import filter: 10.220.8.0/26 came in the same burst, rejected.
    assert!(
        !has_route(&node, "10.220.8.0/26"),
        "{}",
        node.ip(&["route", "show"])
    );
    let birdc = |args: &[&str]| {
        let out = std::process::Command::new(BIRDC)
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Our originated service range carries both communities at the spine.
    let show = || birdc(&["show", "route", "all", "10.96.0.0/12"]);
    assert!(
        eventually(LIMIT, || {
            let s = show();
            s.contains("BGP.community: (65001,100)")
                && s.contains("BGP.large_community: (65001, 1, 2)")
        }),
        "{}",
        show()
    );
    // The export filter: block 10.22.0.0/26 reaches the spine, 10.22.1.0/26
    // (originated with it) does not.
    let at_spine = |p: &str| birdc(&["show", "route", p]).contains(&format!("{p} "));
    assert!(
        eventually(LIMIT, || at_spine("10.22.0.0/26")),
        "{}",
        birdc(&["show", "route"])
    );
    assert!(!at_spine("10.22.1.0/26"), "{}", birdc(&["show", "route"]));
    // The session's Established-since time, to see it is never reset.
    let session = || {
        birdc(&["show", "protocols", "manx"])
            .lines()
            .find(|l| l.starts_with("manx "))
            .unwrap_or_default()
            .to_string()
    };
    let before = session();
    assert!(before.contains("Established"), "{before}");
    // Live edit: the filter loses its rules; both prefixes appear.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap();
            Client::new(Arc::new(store))
                .apply(&spine_filter(false))
                .await
                .unwrap();
        });
    assert!(
        eventually(LIMIT, || has_route(&node, "10.220.8.0/26")
            && at_spine("10.22.1.0/26")),
        "kernel:\n{}\nspine:\n{}\n{}",
        node.ip(&["route", "show"]),
        birdc(&["show", "route"]),
        manx.log_text()
    );
    assert_eq!(session(), before, "the BGP session was not reset");
    assert!(
        manx.log_text().contains("filters changed"),
        "{}",
        manx.log_text()
    );
    manx.terminate(Duration::from_secs(20));
}
