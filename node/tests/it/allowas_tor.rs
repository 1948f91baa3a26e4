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
//! Two namespaces on 198.19.55.0/24; pool 10.22.0.0/16.

use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{
    AsNumber, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, CidrEntry, Community,
    ObjectMeta, PrefixAdvertisement,
};
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const SPINE: &str = "198.19.55.1";
const NODE: &str = "198.19.55.2";
const LIMIT: Duration = Duration::from_secs(60);

/// Another rack's prefix (our AS once) and a looped one (our AS twice),
/// plus a plain spine prefix as the marker that routes arrived.
fn bird_conf() -> String {
    format!(
        "router id {SPINE};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         protocol static racks {{ ipv4; route 10.220.1.0/26 blackhole; \
         route 10.220.2.0/26 blackhole; route 10.220.9.0/26 blackhole; }}\n\
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
                    ..Default::default()
                },
            };
            let client = Client::new(Arc::new(store));
            client.create(&peer).await.unwrap();
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
    let _bird = Daemon::spawn(
        &spine,
        dir.path(),
        "bird",
        BIRD,
        &[
            "-f",
            "-s",
            sock.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ],
        &[],
    );
    let mut manx =
        crate::support::start_manx_node(&node, dir.path(), "mxallow-node", "10.22.0.0/16", &[]);
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
    // Our originated service range carries both communities at the spine.
    let show = || {
        let out = std::process::Command::new(BIRDC)
            .arg("-s")
            .arg(&sock)
            .args(["show", "route", "all", "10.96.0.0/12"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        eventually(LIMIT, || {
            let s = show();
            s.contains("BGP.community: (65001,100)")
                && s.contains("BGP.large_community: (65001, 1, 2)")
        }),
        "{}",
        show()
    );
    manx.terminate(Duration::from_secs(20));
}
