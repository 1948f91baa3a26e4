//! `BGPPeer.spec.reachableBy` (Calico 3.26+): a peer two hops away, not on
//! any connected subnet, reached through a gateway. calico-node's BIRD
//! renders a static `route <peerIP>/32 via <reachableBy>` for it; manx-node
//! installs that host route itself (proto 77) before its first dataplane
//! sync (which waits for every session, this one included), keeps it
//! through a restart, resolves the peer's routes through it, and removes it
//! with the BGPPeer.
//!
//! Three namespaces: the node (198.19.60.2) — the gateway (198.19.60.1 and
//! 198.19.61.1, forwarding) — the far peer, BIRD 2 (198.19.61.2, eBGP AS
//! 65002, multihop, exporting 10.204.0.0/24). The node has no route to
//! 198.19.61.0/24 but the one reachableBy makes.
//!
//! The same set-up shows `BGPConfiguration.spec.ignoredInterfaces`: the
//! peer also exports 10.205.0.0/24 with next hop 192.0.2.9, on the subnet of
//! the node's `aux0`: installed via aux0, until `ignoredInterfaces: [aux*]`
//! takes that subnet out of the connected ones (as calico-node's BIRD leaves
//! the interface out of `protocol direct`): then unreachable, said in the
//! status, and gone from the kernel.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{
    AsNumber, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, ObjectMeta,
};
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const NODE: &str = "198.19.60.2";
const GW: &str = "198.19.60.1";
const FAR: &str = "198.19.61.2";
const LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(dir: &Path) -> Client {
    let store = runtime()
        .block_on(EmbeddedStore::open(dir.join("manx.db")))
        .unwrap();
    Client::new(Arc::new(store))
}

fn has_route(ns: &Netns, line: &str) -> bool {
    ns.ip(&["route", "show"]).lines().any(|l| l.trim() == line)
}

/// `text` without its terminal colour codes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn start_node(ns: &Netns, dir: &Path) -> Daemon {
    crate::support::start_manx_node(ns, dir, "mxrb-node", "10.19.0.0/16", &[])
}

#[test]
fn reachable_by_peer_two_hops_away_comes_up_through_its_gateway() {
    if !Prereqs::new().root().commands(&["ip", BIRD, BIRDC]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Netns::new("mxrb");
    let gw = Netns::new("mxrb");
    let far = Netns::new("mxrb");
    veth(&node, "eth0", &gw, "eth0");
    veth(&gw, "eth1", &far, "eth0");
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "eth0"]);
    gw.ip(&["addr", "add", &format!("{GW}/24"), "dev", "eth0"]);
    gw.ip(&["addr", "add", "198.19.61.1/24", "dev", "eth1"]);
    gw.sysctl("net.ipv4.ip_forward", "1");
    far.ip(&["addr", "add", &format!("{FAR}/24"), "dev", "eth0"]);
    far.ip(&["route", "add", "198.19.60.0/24", "via", "198.19.61.1"]);
    // A second link (a veth pair inside the node: this kernel has no dummy).
    node.ip(&[
        "link", "add", "aux0", "type", "veth", "peer", "name", "aux1",
    ]);
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "aux0"]);
    node.ip(&["link", "set", "aux0", "up"]);
    node.ip(&["link", "set", "aux1", "up"]);

    // The BGPPeer exists before manx-node starts: its first sync waits for
    // this session, which needs the route.
    let store = client(dir.path());
    let peer = BGPPeer {
        metadata: ObjectMeta::named("far"),
        spec: BGPPeerSpec {
            peer_ip: Some(FAR.into()),
            as_number: Some(AsNumber(65002)),
            reachable_by: Some(GW.into()),
            ..Default::default()
        },
    };
    runtime().block_on(store.create(&peer)).unwrap();

    let conf = dir.path().join("bird.conf");
    let sock = dir.path().join("bird.ctl");
    std::fs::write(
        &conf,
        format!(
            "router id {FAR};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
             protocol static far_net {{ ipv4; route 10.204.0.0/24 blackhole; \
             route 10.205.0.0/24 blackhole; }}\n\
             protocol bgp manx {{\n  local {FAR} as 65002;\n  neighbor {NODE} as 64512;\n  \
             multihop;\n  hold time 9; connect retry time 1; connect delay time 1; \
             error wait time 1, 5;\n  \
             ipv4 {{ import all; export filter {{\n    if source != RTS_STATIC then reject;\n    \
             if net = 10.205.0.0/24 then bgp_next_hop = 192.0.2.9;\n    accept;\n  }}; }};\n}}\n"
        ),
    )
    .unwrap();
    let _bird = crate::support::spawn_bird(&far, dir.path(), &conf, &sock);
    // Not `testkit::run`: the control socket may not be there yet.
    let birdc = |args: &[&str]| {
        Command::new(BIRDC)
            .arg("-s")
            .arg(&sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut manx = start_node(&node, dir.path());

    // The host route, the session, and the peer's prefix via the gateway.
    let host_route = format!("{FAR} via {GW} dev eth0 proto 77");
    let far_net = format!("10.204.0.0/24 via {GW} dev eth0 proto 77");
    let mut seen = String::new();
    assert!(
        eventually(LIMIT, || {
            seen = birdc(&["show", "protocols", "manx"]);
            has_route(&node, &host_route)
                && seen.contains("Established")
                && has_route(&node, &far_net)
        }),
        "{seen}\n{}\n{}",
        node.ip(&["route", "show"]),
        manx.log_text()
    );
    // Put in before the first sync, not after it.
    let log = plain(&manx.log_text());
    let early = log
        .find("routes to reachableBy peers before the first sync")
        .expect("no early reachableBy routes line");
    assert!(
        log[early..].lines().next().unwrap().contains("added=1"),
        "{log}"
    );
    assert!(
        log.find("first dataplane sync").is_some_and(|f| f > early),
        "{log}"
    );

    // A restart keeps the route throughout, and the session comes back.
    assert_eq!(manx.terminate(Duration::from_secs(20)), Some(0));
    assert!(has_route(&node, &host_route));
    let mut manx = start_node(&node, dir.path());
    let mut gone = false;
    assert!(
        eventually(LIMIT, || {
            gone |= !has_route(&node, &host_route);
            manx.log_text().contains("first dataplane sync")
                && birdc(&["show", "protocols", "manx"]).contains("Established")
        }),
        "{}",
        manx.log_text()
    );
    assert!(!gone, "the reachableBy route went away during the restart");

    // ignoredInterfaces: the next hop on aux0's subnet is reached over aux0
    // until the subnet no longer counts as connected.
    let on_aux0 = "10.205.0.0/24 via 192.0.2.9 dev aux0 proto 77";
    assert!(
        eventually(LIMIT, || has_route(&node, on_aux0)),
        "{}",
        node.ip(&["route", "show"])
    );
    let cfg = BGPConfiguration {
        metadata: ObjectMeta::named("default"),
        spec: BGPConfigurationSpec {
            ignored_interfaces: Some(vec!["aux*".into()]),
            ..Default::default()
        },
    };
    runtime().block_on(store.create(&cfg)).unwrap();
    let row = || {
        runtime()
            .block_on(manx_status::query(&dir.path().join("run")))
            .ok()?
            .routes
            .into_iter()
            .find(|r| r.prefix == "10.205.0.0/24")
    };
    assert!(
        eventually(LIMIT, || !node
            .ip(&["route", "show"])
            .contains("10.205.0.0/24")
            && row().is_some_and(|r| r.state == "unreachable")),
        "{:?}\n{}",
        row(),
        node.ip(&["route", "show"])
    );
    assert_eq!(
        row().unwrap().info,
        "next hop 192.0.2.9 is on a subnet of aux0, which ignoredInterfaces (or cali*, \
         kube-ipvs*) leaves out, and no other kernel route covers it"
    );
    // The reachableBy route and what follows it are not affected.
    assert!(has_route(&node, &host_route) && has_route(&node, &far_net));

    // The BGPPeer goes: so do its route and the session's prefix.
    runtime()
        .block_on(store.delete::<BGPPeer>("far", None))
        .unwrap();
    assert!(
        eventually(LIMIT, || !has_route(&node, &host_route)
            && !node.ip(&["route", "show"]).contains("10.204.0.0/24")),
        "{}",
        node.ip(&["route", "show"])
    );
    manx.terminate(Duration::from_secs(20));
}
