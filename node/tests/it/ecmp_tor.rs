//! ECMP from two ToRs (BIRD's `merge paths`, on by default for eBGP):
//! manx-node in a namespace with two uplinks peers over eBGP with two BIRD 2
//! ToRs of one rack (both AS 65001) that both export 10.210.0.0/26. The
//! node's kernel gets one multipath route, `nexthop via <tor1> dev eth0
//! nexthop via <tor2> dev eth1`; when one ToR's session goes down the route
//! is replaced by the single path via the other (the time it took is
//! printed), and it is multipath again when the ToR is back.
//!
//! Namespaces on 198.19.53.0/24 (node eth0, tor1) and 198.19.54.0/24 (node
//! eth1, tor2); pool 10.21.0.0/16.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{AsNumber, BGPPeer, BGPPeerSpec, ObjectMeta};
use testkit::netns::veth;
use testkit::{Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const TORS: [(&str, &str, &str); 2] = [
    // (ToR address, node address, node device)
    ("198.19.53.1", "198.19.53.2", "eth0"),
    ("198.19.54.1", "198.19.54.2", "eth1"),
];
const PREFIX: &str = "10.210.0.0/26";
/// Long enough for manx-node to start, peer and sync on a loaded 2-core box.
const LIMIT: Duration = Duration::from_secs(60);

fn bird_conf(tor: &str, node: &str) -> String {
    format!(
        "router id {tor};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         protocol static rack {{ ipv4; route {PREFIX} blackhole; }}\n\
         protocol bgp manx {{\n  local {tor} as 65001;\n  neighbor {node} as 64512;\n  \
         hold time 9; connect retry time 1; connect delay time 1; error wait time 1, 5;\n  \
         ipv4 {{ import all; export where source = RTS_STATIC; }};\n}}\n"
    )
}

fn route(ns: &Netns) -> String {
    ns.ip(&["route", "show", PREFIX])
}

fn multipath(ns: &Netns) -> bool {
    let r = route(ns);
    TORS.iter()
        .all(|(tor, _, dev)| r.contains(&format!("nexthop via {tor} dev {dev} ")))
        && r.contains("proto 77")
}

#[test]
fn equal_paths_from_two_tors_are_one_multipath_route() {
    if !Prereqs::new().root().commands(&["ip", BIRD, BIRDC]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Netns::new("mxecmp");
    let mut tors = Vec::new();
    for (tor, addr, dev) in TORS {
        let ns = Netns::new("mxecmp");
        veth(&ns, "eth0", &node, dev);
        ns.ip(&["addr", "add", &format!("{tor}/24"), "dev", "eth0"]);
        node.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
        tors.push((ns, tor, addr));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap();
            let client = Client::new(Arc::new(store));
            for (i, (tor, _, _)) in TORS.iter().enumerate() {
                let peer = BGPPeer {
                    metadata: ObjectMeta::named(format!("tor{}", i + 1)),
                    spec: BGPPeerSpec {
                        peer_ip: Some((*tor).into()),
                        as_number: Some(AsNumber(65001)),
                        ..Default::default()
                    },
                };
                client.create(&peer).await.unwrap();
            }
        });
    let mut birds = Vec::new();
    let mut socks = Vec::new();
    for (i, (ns, tor, addr)) in tors.iter().enumerate() {
        let sub = dir.path().join(format!("tor{}", i + 1));
        std::fs::create_dir_all(&sub).unwrap();
        let conf = sub.join("bird.conf");
        let sock = sub.join("bird.ctl");
        std::fs::write(&conf, bird_conf(tor, addr)).unwrap();
        birds.push(crate::support::spawn_bird(ns, &sub, &conf, &sock));
        socks.push(sock);
    }
    let birdc = |sock: &Path, args: &[&str]| {
        testkit::run(Command::new(BIRDC).arg("-s").arg(sock).args(args));
    };
    let mut manx =
        crate::support::start_manx_node(&node, dir.path(), "mxecmp-node", "10.21.0.0/16", &[]);

    assert!(
        eventually(LIMIT, || multipath(&node)),
        "{}\n{}",
        node.ip(&["route", "show"]),
        manx.log_text()
    );

    // tor2's session goes down (Cease): the single path via tor1 replaces
    // the multipath route.
    let single = format!("{PREFIX} via {} dev eth0 proto 77", TORS[0].0);
    let t0 = Instant::now();
    birdc(&socks[1], &["disable", "manx"]);
    let mut took = None;
    while t0.elapsed() < LIMIT {
        if route(&node).trim() == single {
            took = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = took.unwrap_or_else(|| {
        panic!(
            "still {:?} after tor2's session went down\n{}",
            route(&node),
            manx.log_text()
        )
    });
    println!(
        "ECMP: single path via tor1 {} ms after `birdc disable` closed tor2's session",
        took.as_millis()
    );

    // tor2 back: multipath again.
    birdc(&socks[1], &["enable", "manx"]);
    assert!(
        eventually(LIMIT, || multipath(&node)),
        "{}\n{}",
        route(&node),
        manx.log_text()
    );
    manx.terminate(Duration::from_secs(20));
    drop(birds);
}
