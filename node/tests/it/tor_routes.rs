//! Routes from an explicit BGPPeer outside every IP pool reach the kernel,
//! as calico-node's BIRD programs them: manx-node in a namespace, against an
//! embedded datastore, peers with a BIRD 2 "ToR" (eBGP, AS 65001) that
//! exports 10.200.0.0/26, a default route and two more prefixes. The node's
//! kernel gets `10.200.0.0/26 via <tor> dev eth0 proto 77` and the default
//! route; a prefix whose next hop it cannot reach is not installed and says
//! why in the status (`manxctl node status --routes` reads the same socket)
//! until the node's kernel learns a route to that next hop (then it goes in
//! via that route's gateway, BIRD's `gateway recursive`); a prefix the host
//! already routes itself is left to the host. The routes stay through a
//! manx-node restart, and a withdrawal removes them.
//!
//! Everything lives in two namespaces on 198.19.50.0/24 (pool 10.19.0.0/16,
//! ToR prefixes in 10.200.0.0/16 and 192.0.2.0/24). The IPv6 test does the
//! same over an IPv6 session on fd31:50::/64 and checks the other way too:
//! the ToR receives the node's IPv6 block; a BGPFilter's `importV6` rule
//! keeps one of the ToR's IPv6 prefixes out of the node's kernel.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{
    AsNumber, BGPFilter, BGPFilterRule, BGPFilterSpec, BGPPeer, BGPPeerSpec, FilterAction,
    MatchOperator, ObjectMeta, PrefixLength,
};
use manx_status::{NodeStatus, RouteRow};
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const TOR: &str = "198.19.50.1";
const NODE: &str = "198.19.50.2";
/// Long enough for manx-node to start, peer and sync on a loaded 2-core box.
const LIMIT: Duration = Duration::from_secs(60);

/// The ToR: static prefixes exported to the node, 10.202.0.0/24 with a
/// third-party next hop the node has no route to.
fn bird_conf() -> String {
    format!(
        "router id {TOR};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         protocol static tor_net {{ ipv4; route 10.200.0.0/26 blackhole; }}\n\
         protocol static tor_default {{ ipv4; route 0.0.0.0/0 blackhole; }}\n\
         protocol static tor_more {{ ipv4; route 10.202.0.0/24 blackhole; \
         route 10.203.0.0/24 blackhole; }}\n\
         protocol bgp manx {{\n  local {TOR} as 65001;\n  neighbor {NODE} as 64512;\n  \
         hold time 9; connect retry time 1; connect delay time 1; error wait time 1, 5;\n  \
         ipv4 {{ import all; export filter {{\n    if source != RTS_STATIC then reject;\n    \
         if net = 10.202.0.0/24 then bgp_next_hop = 192.0.2.1;\n    accept;\n  }}; }};\n}}\n"
    )
}

fn start_node(ns: &Netns, dir: &Path) -> Daemon {
    crate::support::start_manx_node(ns, dir, "mxtor-node", "10.19.0.0/16", &[])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The node's status, if its socket answers.
fn status(dir: &Path) -> Option<NodeStatus> {
    runtime()
        .block_on(manx_status::query(&dir.join("run")))
        .ok()
}

fn route_row(dir: &Path, prefix: &str) -> Option<RouteRow> {
    status(dir)?.routes.into_iter().find(|r| r.prefix == prefix)
}

fn has_route(ns: &Netns, line: &str) -> bool {
    ns.ip(&["route", "show"]).lines().any(|l| l.trim() == line)
}

#[test]
fn tor_routes_outside_the_pools_are_programmed_via_the_bgp_next_hop() {
    if !Prereqs::new().root().commands(&["ip", BIRD, BIRDC]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tor = Netns::new("mxtor");
    let node = Netns::new("mxtor");
    veth(&tor, "eth0", &node, "eth0");
    tor.ip(&["addr", "add", &format!("{TOR}/24"), "dev", "eth0"]);
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "eth0"]);
    // The host routes 10.203.0.0/24 itself: the ToR's must not replace it.
    node.ip(&[
        "route",
        "add",
        "10.203.0.0/24",
        "via",
        TOR,
        "dev",
        "eth0",
        "proto",
        "static",
    ]);

    // The ToR is an explicit BGPPeer of every node.
    runtime().block_on(async {
        let store = EmbeddedStore::open(dir.path().join("manx.db"))
            .await
            .unwrap();
        let client = Client::new(Arc::new(store));
        let peer = BGPPeer {
            metadata: ObjectMeta::named("tor"),
            spec: BGPPeerSpec {
                peer_ip: Some(TOR.into()),
                as_number: Some(AsNumber(65001)),
                ..Default::default()
            },
        };
        client.create(&peer).await.unwrap();
    });

    let conf = dir.path().join("bird.conf");
    let sock = dir.path().join("bird.ctl");
    std::fs::write(&conf, bird_conf()).unwrap();
    let _bird = crate::support::spawn_bird(&tor, dir.path(), &conf, &sock);
    let birdc = |args: &[&str]| {
        testkit::run(Command::new(BIRDC).arg("-s").arg(&sock).args(args));
    };
    let mut manx = start_node(&node, dir.path());

    // Direct next hop: the ToR, on the uplink's subnet.
    let tor_net = format!("10.200.0.0/26 via {TOR} dev eth0 proto 77");
    let default = format!("default via {TOR} dev eth0 proto 77");
    assert!(
        eventually(LIMIT, || has_route(&node, &tor_net)
            && has_route(&node, &default)),
        "{}\n{}",
        node.ip(&["route", "show"]),
        manx.log_text()
    );
    // The status socket follows within a monitor tick.
    let installed = format!("via {TOR} dev eth0");
    assert!(
        eventually(LIMIT, || route_row(dir.path(), "10.200.0.0/26")
            .is_some_and(|r| r.state == "installed" && r.info == installed)),
        "{:?}",
        status(dir.path())
    );

    // A next hop nothing covers: not installed, and the status says why.
    let far = || route_row(dir.path(), "10.202.0.0/24");
    assert!(
        eventually(LIMIT, || far().is_some_and(|r| r.state == "unreachable")),
        "{:?}",
        status(dir.path())
    );
    assert_eq!(
        far().unwrap().info,
        "next hop 192.0.2.1 is unreachable: no connected subnet or kernel route covers it"
    );
    assert!(!node.ip(&["route", "show"]).contains("10.202.0.0/24"));
    // The host's own route is kept, and said so.
    let kept = route_row(dir.path(), "10.203.0.0/24").unwrap();
    assert_eq!(
        (kept.state.as_str(), kept.info.as_str()),
        (
            "refused",
            "kernel already has a route for 10.203.0.0/24 (proto static); not replaced"
        )
    );
    assert!(has_route(
        &node,
        &format!("10.203.0.0/24 via {TOR} dev eth0 proto static")
    ));
    let st = status(dir.path()).unwrap();
    assert!(
        st.warnings
            .iter()
            .any(|w| w.starts_with("2 of 4 BGP routes from outside the IP pools not installed")),
        "{:?}",
        st.warnings
    );

    // The node learns a route to that next hop: the next kernel scan installs
    // the prefix via the route's gateway (recursive).
    node.ip(&["route", "add", "192.0.2.0/24", "via", TOR, "dev", "eth0"]);
    let recursive = format!("10.202.0.0/24 via {TOR} dev eth0 proto 77");
    assert!(
        eventually(LIMIT, || has_route(&node, &recursive)),
        "{}\n{:?}",
        node.ip(&["route", "show"]),
        far()
    );
    assert!(eventually(LIMIT, || far().is_some_and(|r| r.info
        == format!(
            "via {TOR} dev eth0, resolved through 192.0.2.0/24"
        ))));

    // A restart keeps them in the kernel throughout (the new process holds
    // the dataplane until BGP is relearnt), then owns them again.
    assert_eq!(manx.terminate(Duration::from_secs(20)), Some(0));
    assert!(has_route(&node, &tor_net) && has_route(&node, &default));
    let mut manx = start_node(&node, dir.path());
    let mut flapped = Vec::new();
    assert!(
        eventually(LIMIT, || {
            for line in [&tor_net, &default, &recursive] {
                if !has_route(&node, line) {
                    flapped.push(line.clone());
                }
            }
            route_row(dir.path(), "10.200.0.0/26").is_some_and(|r| r.state == "installed")
        }),
        "{}",
        manx.log_text()
    );
    assert!(
        flapped.is_empty(),
        "routes gone during the restart: {flapped:?}"
    );

    // Withdrawn by the ToR: removed from the kernel and from the status.
    birdc(&["disable", "tor_net"]);
    assert!(
        eventually(LIMIT, || !node
            .ip(&["route", "show"])
            .contains("10.200.0.0/26")),
        "{}",
        node.ip(&["route", "show"])
    );
    assert!(eventually(LIMIT, || status(dir.path()).is_some_and(|s| !s
        .routes
        .iter()
        .any(|r| r.prefix == "10.200.0.0/26"))));
    assert!(has_route(&node, &default));
    manx.terminate(Duration::from_secs(20));
}

/// The same over IPv6 (issue 21): an IPv6-only manx-node (`IP=none`,
/// `IP6=autodetect`) with a BIRD 2 ToR as an explicit BGPPeer at its IPv6
/// address, one IPv6 session between the two IPv6 addresses (eBGP, AS
/// 65001, BIRD's `ipv6` channel as its users write it). A pod address
/// allocated on the node (manx-ipam's library, as a CNI ADD does) claims a
/// /122 block: the ToR receives it via the node's address; the ToR's
/// fd19:200::/64 and its IPv6 default route are programmed into the node's
/// kernel via the ToR's address. fd31:50::/64 for the link, pool
/// fd19:19::/48.
#[test]
fn ipv6_tor_receives_the_blocks_and_its_routes_are_programmed() {
    const TOR6: &str = "fd31:50::1";
    const NODE6: &str = "fd31:50::2";
    if !Prereqs::new().root().commands(&["ip", BIRD, BIRDC]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tor = Netns::new("mxtor6");
    let node = Netns::new("mxtor6");
    veth(&tor, "eth0", &node, "eth0");
    tor.ip(&["addr", "add", &format!("{TOR6}/64"), "dev", "eth0", "nodad"]);
    node.ip(&[
        "addr",
        "add",
        &format!("{NODE6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);

    let store = runtime().block_on(async {
        Arc::new(
            EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap(),
        )
    });
    runtime().block_on(async {
        let client = Client::new(store.clone());
        let peer = BGPPeer {
            metadata: ObjectMeta::named("tor6"),
            spec: BGPPeerSpec {
                peer_ip: Some(TOR6.into()),
                as_number: Some(AsNumber(65001)),
                filters: Some(vec!["tor6".into()]),
                ..Default::default()
            },
        };
        client.create(&peer).await.unwrap();
        // importV6: /64s inside fd19:201::/48 are rejected.
        let filter = BGPFilter::new(
            "tor6",
            BGPFilterSpec {
                import_v6: vec![BGPFilterRule {
                    prefix_length: Some(PrefixLength {
                        min: Some(64),
                        max: None,
                    }),
                    ..BGPFilterRule::cidr(FilterAction::Reject, MatchOperator::In, "fd19:201::/48")
                }],
                ..Default::default()
            },
        );
        client.create(&filter).await.unwrap();
    });

    let conf = dir.path().join("bird.conf");
    let sock = dir.path().join("bird.ctl");
    std::fs::write(
        &conf,
        format!(
            "router id 198.19.51.1;\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
             protocol static tor6_net {{ ipv6; route fd19:200::/64 blackhole; \
             route fd19:201::/64 blackhole; route ::/0 blackhole; }}\n\
             protocol bgp manx {{\n  local {TOR6} as 65001;\n  neighbor {NODE6} as 64512;\n  \
             hold time 9; connect retry time 1; connect delay time 1; error wait time 1, 5;\n  \
             ipv6 {{ import all; export where source = RTS_STATIC; }};\n}}\n"
        ),
    )
    .unwrap();
    let _bird = crate::support::spawn_bird(&tor, dir.path(), &conf, &sock);
    let birdc = |args: &[&str]| testkit::run(Command::new(BIRDC).arg("-s").arg(&sock).args(args));
    let mut manx = crate::support::start_manx_node(
        &node,
        dir.path(),
        "mxtor6-node",
        "10.19.0.0/16",
        &[
            ("IP", "none"),
            ("IP6", "autodetect"),
            ("IP6_AUTODETECTION_METHOD", "interface=eth0"),
            ("MANX_IPV6POOL_CIDR", "fd19:19::/48"),
        ],
    );

    // A pod address on the node, once it has registered and made its pool.
    let ipam = ipam::Ipam::new(
        store.clone(),
        Arc::new(ipam::resources::DatastoreTopology::new(store.clone())),
    );
    let mut pod = None;
    assert!(
        eventually(LIMIT, || {
            let args = ipam::AutoAssignArgs {
                num_v4: 0,
                num_v6: 1,
                handle_id: "k8s-pod-network.tor6-pod".into(),
                attrs: ipam::Attrs {
                    handle_id: "k8s-pod-network.tor6-pod".into(),
                    node: Some("mxtor6-node".into()),
                    ..Default::default()
                },
                hostname: "mxtor6-node".into(),
                ipv4_pools: vec![],
                ipv6_pools: vec![],
                intended_use: ipam::IntendedUse::Workload,
                max_blocks_per_host: None,
            };
            pod = runtime()
                .block_on(ipam.auto_assign(&args))
                .ok()
                .and_then(|r| r.ipv6.first().copied());
            pod.is_some()
        }),
        "no IPv6 address for a pod: {}",
        manx.log_text()
    );
    let pod = pod.unwrap();
    assert!(pod.ip().to_string().starts_with("fd19:19:"), "{pod}");
    let block = ipnetwork::Ipv6Network::new(
        match pod.ip() {
            std::net::IpAddr::V6(a) => a,
            other => panic!("{other}"),
        },
        122,
    )
    .unwrap();
    let block = format!("{}/122", block.network());

    // The ToR receives the node's IPv6 block over the IPv6 session, next
    // hop the node's IPv6 address.
    let mut seen = String::new();
    assert!(
        eventually(LIMIT, || {
            seen = birdc(&["show", "route", "protocol", "manx", "all"]);
            seen.contains(&block) && seen.contains(&format!("via {NODE6} on eth0"))
        }),
        "ToR has no {block}:\n{seen}\n{}",
        manx.log_text()
    );

    // The ToR's IPv6 routes reach the node's kernel via the ToR's address.
    let has6 = |line: &str| {
        node.ip(&["-6", "route", "show"])
            .lines()
            .any(|l| l.starts_with(line))
    };
    let tor_net = format!("fd19:200::/64 via {TOR6} dev eth0 proto 77");
    let default = format!("default via {TOR6} dev eth0 proto 77");
    assert!(
        eventually(LIMIT, || has6(&tor_net) && has6(&default)),
        "{}\n{}",
        node.ip(&["-6", "route", "show"]),
        manx.log_text()
    );
    // The BGPFilter's importV6 rule: fd19:201::/64 came in the same burst
    // and is never programmed.
    assert!(
        !has6("fd19:201::/64"),
        "{}",
        node.ip(&["-6", "route", "show"])
    );
    // One session, IPv6; nothing IPv4 on either side.
    let protocols = birdc(&["show", "protocols", "manx"]);
    assert!(protocols.contains("Established"), "{protocols}");
    assert!(!node.ip(&["route", "show"]).contains("proto 77"));

    // Withdrawn by the ToR: removed from the node's kernel.
    birdc(&["disable", "tor6_net"]);
    assert!(
        eventually(LIMIT, || !has6(&tor_net) && !has6(&default)),
        "{}",
        node.ip(&["-6", "route", "show"])
    );
    manx.terminate(Duration::from_secs(20));
}
