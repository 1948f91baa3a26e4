//! `manx-bgpd --from-datastore` as a dedicated route reflector (Calico's
//! route-reflector deployment), driven only through the datastore: an
//! embedded (SQLite) store file written with `datastore::client::Client`,
//! read by the daemon (`DATASTORE_TYPE=embedded`, `MANX_DB`).
//!
//! The world is Calico's documented RR topology: `BGPConfiguration default`
//! turns the mesh off and sets `listenPort: 1179`; Node `rr1` carries
//! `routeReflectorClusterID` and the label `route-reflector: "true"`; one
//! `BGPPeer` (`nodeSelector: all()`, `peerSelector: route-reflector ==
//! 'true'`) peers every node with it. Scripted peers (our codec) act as
//! the client nodes c1, c2 (later c3) and connect from their node
//! addresses; the reflector is passive toward them (Calico: the higher
//! address connects).
//!
//! Checked: client → client reflection with ORIGINATOR_ID / CLUSTER_LIST
//! (RFC 4456 §6, §8), then live datastore changes — a Node added (its
//! session appears and gets the reflected table), an explicit `BGPPeer`
//! (`peerIP`, iBGP non-client, dialled by the reflector) added, a Node
//! deleted (CEASE Peer De-configured, its routes withdrawn everywhere), a
//! label edit that changes no session, the `BGPPeer` deleted — each
//! without disturbing the other sessions (no NOTIFICATION, no close, the
//! same `since`). The explicit peer names a `BGPFilter` that does not
//! exist at first (skipped, as Calico does); created live, it withdraws a
//! client block from that peer and keeps one of its prefixes from the
//! clients, on the same session.
//!
//! Everything runs in a network namespace of our own (`mxsc-<pid>-<n>`,
//! addresses 127.0.80.0/24 on its loopback), so the reflector's `0.0.0.0`
//! listener and its dialling never touch the host. Needs root (CI is
//! root): skipped otherwise, failed when `CI=true`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bgpd::fsm::State;
use bgpd::packet::{Message, Update};
use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{Node, parse_manifests};
use ipnetwork::IpNetwork;
use testkit::{Daemon, Netns, Prereqs, eventually_async};

use crate::speaker_golden::peer::{Attrs, Event, PeerSpec, ScriptedPeer};
use crate::support::MANX_LOG;

const PORT: u16 = 1179;
/// The explicit peer's port (its `peerIP` carries it): the reflector already
/// listens on 0.0.0.0:1179 in the namespace.
const TOR_PORT: u16 = 1180;
const LIMIT: Duration = Duration::from_secs(30);

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

// ---- the datastore ---------------------------------------------------------

fn node_yaml(name: &str, addr: &str, rr: bool) -> String {
    node_yaml_labelled(name, addr, rr, "")
}

/// A Node; `extra_labels` are more `key: value` label lines.
fn node_yaml_labelled(name: &str, addr: &str, rr: bool, extra_labels: &str) -> String {
    let (mut labels, cluster) = if rr {
        (
            "  labels:\n    route-reflector: \"true\"\n".to_string(),
            "    routeReflectorClusterID: 244.0.0.1\n",
        )
    } else {
        (String::new(), "")
    };
    if !extra_labels.is_empty() {
        if labels.is_empty() {
            labels.push_str("  labels:\n");
        }
        labels.push_str(&format!("    {extra_labels}\n"));
    }
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{labels}spec:\n  bgp:\n    ipv4Address: {addr}/24\n{cluster}"
    )
}

const WORLD: &str = "---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
  asNumber: 64512
  listenPort: 1179
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: peer-with-route-reflectors
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
";

const TOR: &str = "---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: tor
spec:
  node: rr1
  peerIP: 127.0.80.20:1180
  asNumber: 64512
  filters: [tor-out]
";

/// The BGPFilter `tor` names, created later (until then it does not exist
/// and the peer goes without it, as in Calico).
const TOR_FILTER: &str = "---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: tor-out
spec:
  exportV4:
  - action: Reject
    matchOperator: Equal
    cidr: 10.80.1.0/26
  importV4:
  - action: Reject
    matchOperator: In
    cidr: 10.80.21.0/24
";

async fn apply(client: &Client, yaml: &str) {
    for r in parse_manifests(yaml, "test").expect("valid manifests") {
        client.apply_resource(&r).await.expect("apply");
    }
}

// ---- observing ---------------------------------------------------------------

/// The reflector's peer table (its control socket).
fn rr_peers(control: &Path) -> Vec<bgpd::PeerStatus> {
    bgpd::query_peers(control).unwrap_or_default()
}

async fn wait_peers(control: &Path, what: &str, f: impl Fn(&[bgpd::PeerStatus]) -> bool) {
    let reached = eventually_async(LIMIT, || {
        let done = f(&rr_peers(control));
        async move { done }
    })
    .await;
    assert!(
        reached,
        "{what}: not reached; reflector peers: {:#?}",
        rr_peers(control)
    );
}

/// Read UPDATEs until one satisfies `until`; a close or NOTIFICATION fails.
async fn expect(
    peer: &mut ScriptedPeer,
    who: &str,
    until: impl Fn(&Update) -> bool,
) -> Vec<Update> {
    let mut seen = Vec::new();
    loop {
        match peer.recv(LIMIT).await {
            Some(Event::Msg(Message::Update(u))) => {
                let done = until(&u);
                seen.push(u);
                if done {
                    return seen;
                }
            }
            Some(Event::Msg(Message::Keepalive)) => {}
            other => panic!("{who}: expected an UPDATE, got {other:?} after {seen:?}"),
        }
    }
}

fn announces(u: &Update, p: IpNetwork) -> bool {
    u.announcements().iter().any(|(_, n, _)| n.prefix == p)
}

/// Nothing but UPDATEs arrived since the last read: no NOTIFICATION, no close.
fn undisturbed(peer: &mut ScriptedPeer, who: &str) {
    while let Some(ev) = peer.try_recv() {
        assert!(
            matches!(ev, Event::Msg(Message::Update(_) | Message::Keepalive)),
            "{who} was disturbed: {ev:?}"
        );
    }
}

/// Read until the speaker closes the session; the NOTIFICATIONs it sent.
async fn ceased(peer: &mut ScriptedPeer, who: &str) -> Vec<(u8, u8)> {
    let mut notifications = Vec::new();
    loop {
        match peer.recv(LIMIT).await {
            Some(Event::Msg(Message::Notification(n))) => notifications.push((n.code, n.subcode)),
            Some(Event::Closed(_)) => return notifications,
            Some(Event::Msg(_)) => {}
            None => panic!("{who}: the session was not closed"),
        }
    }
}

fn spec(last: u8) -> PeerSpec {
    PeerSpec {
        asn: 64512,
        router_id: Ipv4Addr::new(10, 80, 0, last),
        restart_time: Some(120),
        notification: false,
    }
}

async fn client(addr: &str, last: u8) -> ScriptedPeer {
    let rr = SocketAddr::new(a("127.0.80.1"), PORT);
    let mut p = ScriptedPeer::connect_retrying(a(addr), rr, &spec(last), LIMIT).await;
    // The initial table ends with End-of-RIB.
    expect(&mut p, addr, |u| u.is_end_of_rib().is_some()).await;
    p
}

fn since(control: &Path, addr: &str) -> u64 {
    rr_peers(control)
        .iter()
        .find(|p| p.address == a(addr))
        .filter(|p| p.state == State::Established)
        .unwrap_or_else(|| panic!("{addr} not established on the reflector"))
        .since_unix
}

#[test]
fn from_datastore_reflects_and_follows_live_changes() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let ns = Netns::new("mxsc");
    let dir = tempfile::Builder::new().prefix("mxsc-").tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    // The daemon's command, made here: the scenario runs on a thread that
    // has entered the namespace (the sockets it creates live there).
    let manx = ns.command(env!("CARGO_BIN_EXE_manx-bgpd"));
    ns.block_on(move || async move { scenario(manx, &dir_path).await });
    drop(ns);
}

async fn scenario(manx: Command, dir: &Path) {
    let db = dir.join("manx.db");
    let control = dir.join("rr.sock");
    let secrets = dir.join("secrets");
    let store = EmbeddedStore::open(&db).await.expect("open the datastore");
    let client_ds = Client::new(std::sync::Arc::new(store));
    apply(&client_ds, WORLD).await;
    for (n, addr, rr) in [
        ("rr1", "127.0.80.1", true),
        ("c1", "127.0.80.11", false),
        ("c2", "127.0.80.12", false),
    ] {
        apply(&client_ds, &node_yaml(n, addr, rr)).await;
    }

    let _daemon = Daemon::start(
        manx,
        dir,
        "manx-bgpd",
        &["--from-datastore"],
        &[
            ("NODENAME", "rr1"),
            ("DATASTORE_TYPE", "embedded"),
            ("MANX_DB", db.to_str().unwrap()),
            ("MANX_BGPD_CONTROL", control.to_str().unwrap()),
            ("MANX_SECRETS_DIR", secrets.to_str().unwrap()),
            MANX_LOG,
        ],
    );

    // The reflector peers with both clients, as RR clients, passively.
    wait_peers(&control, "c1 and c2 configured", |p| {
        [a("127.0.80.11"), a("127.0.80.12")]
            .iter()
            .all(|x| p.iter().any(|s| s.address == *x))
    })
    .await;
    let mut c1 = client("127.0.80.11", 11).await;
    let mut c2 = client("127.0.80.12", 12).await;

    // RFC 4456 §6/§8: c1's block reaches c2 with ORIGINATOR_ID = c1's
    // router id, CLUSTER_LIST = [the cluster id from rr1's Node], next hop
    // unchanged (§10).
    let p1 = net("10.80.1.0/26");
    let p2 = net("10.80.2.0/26");
    let mut attrs = Attrs::new(Ipv4Addr::new(127, 0, 80, 11));
    attrs.local_pref = Some(100);
    c1.announce(&[p1], &attrs).await;
    let got = expect(&mut c2, "c2", |u| announces(u, p1)).await;
    let u = got.last().unwrap();
    assert_eq!(u.originator_id(), Some(Ipv4Addr::new(10, 80, 0, 11)));
    assert_eq!(u.cluster_list(), [Ipv4Addr::new(244, 0, 0, 1)]);
    assert_eq!(u.next_hop(), Some(Ipv4Addr::new(127, 0, 80, 11)));
    let mut attrs2 = Attrs::new(Ipv4Addr::new(127, 0, 80, 12));
    attrs2.local_pref = Some(100);
    c2.announce(&[p2], &attrs2).await;
    expect(&mut c1, "c1", |u| announces(u, p2)).await;
    let c1_since = since(&control, "127.0.80.11");
    let c2_since = since(&control, "127.0.80.12");

    // Live: a new Node c3 gets a session and the reflected table.
    apply(&client_ds, &node_yaml("c3", "127.0.80.13", false)).await;
    wait_peers(&control, "c3 configured", |p| {
        p.iter().any(|s| s.address == a("127.0.80.13"))
    })
    .await;
    let rr = SocketAddr::new(a("127.0.80.1"), PORT);
    let mut c3 = ScriptedPeer::connect_retrying(a("127.0.80.13"), rr, &spec(13), LIMIT).await;
    let table = expect(&mut c3, "c3", |u| u.is_end_of_rib().is_some()).await;
    let mut learnt: Vec<IpNetwork> = table
        .iter()
        .flat_map(|u| u.announcements().into_iter().map(|(_, n, _)| n.prefix))
        .collect();
    learnt.sort();
    assert_eq!(learnt, [p1, p2], "c3's initial table");
    undisturbed(&mut c1, "c1");
    undisturbed(&mut c2, "c2");
    assert_eq!(
        since(&control, "127.0.80.11"),
        c1_since,
        "c1's session was reset"
    );
    assert_eq!(
        since(&control, "127.0.80.12"),
        c2_since,
        "c2's session was reset"
    );

    // Live: an explicit BGPPeer (peerIP with port 1180) for rr1 only: an iBGP
    // non-client the reflector dials (not a node: it is not passive).
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(a("127.0.80.20"), TOR_PORT))
        .await
        .expect("listen as the ToR");
    apply(&client_ds, TOR).await;
    let mut tor = tokio::time::timeout(LIMIT, ScriptedPeer::accept(&listener, &spec(20)))
        .await
        .expect("the reflector never dialled the new BGPPeer")
        .expect("session with the reflector");
    // It dials from its node address: a peer configured with `neighbor
    // <reflector's address>` refuses any other source.
    assert_eq!(
        tor.remote.ip(),
        a("127.0.80.1"),
        "the reflector dialled from the wrong source address"
    );
    let table = expect(&mut tor, "tor", |u| u.is_end_of_rib().is_some()).await;
    assert_eq!(
        table.iter().map(|u| u.announcements().len()).sum::<usize>(),
        2,
        "client routes are reflected to a non-client (RFC 4456 §6): {table:?}"
    );
    // Non-client -> every client.
    let p20 = net("10.80.20.0/26");
    let mut attrs20 = Attrs::new(Ipv4Addr::new(127, 0, 80, 20));
    attrs20.local_pref = Some(100);
    tor.announce(&[p20], &attrs20).await;
    for (c, who) in [(&mut c1, "c1"), (&mut c2, "c2"), (&mut c3, "c3")] {
        let got = expect(c, who, |u| announces(u, p20)).await;
        assert_eq!(
            got.last().unwrap().originator_id(),
            Some(Ipv4Addr::new(10, 80, 0, 20))
        );
    }
    assert_eq!(since(&control, "127.0.80.11"), c1_since);
    assert_eq!(since(&control, "127.0.80.12"), c2_since);

    // Live: the BGPFilter tor names appears. Export: c1's block is
    // withdrawn from tor (only); import: of tor's next two prefixes the
    // clients get the one the filter lets in. Same session throughout.
    apply(&client_ds, TOR_FILTER).await;
    expect(&mut tor, "tor", |u| {
        u.withdrawals().iter().any(|(_, n)| n.prefix == p1)
    })
    .await;
    let (p21, p22) = (net("10.80.21.0/26"), net("10.80.22.0/26"));
    tor.announce(&[p21, p22], &attrs20).await;
    for (c, who) in [(&mut c1, "c1"), (&mut c2, "c2"), (&mut c3, "c3")] {
        let got = expect(c, who, |u| announces(u, p22)).await;
        assert!(
            !got.iter().any(|u| announces(u, p21)),
            "{who} got the prefix tor's import filter rejects: {got:?}"
        );
        assert!(
            !got.iter()
                .any(|u| u.withdrawals().iter().any(|(_, n)| n.prefix == p1)),
            "{who} lost c1's block: the filter is tor's only"
        );
    }
    undisturbed(&mut tor, "tor");
    assert_eq!(since(&control, "127.0.80.11"), c1_since);

    // Live: Node c2 deleted: its session ends with CEASE / Peer
    // De-configured (RFC 4486 §4, subcode 3) and its block is withdrawn
    // from everyone else; the other sessions stay.
    client_ds
        .delete::<Node>("c2", None)
        .await
        .expect("delete c2");
    let notifications = ceased(&mut c2, "c2").await;
    // Exactly one NOTIFICATION before the close (RFC 4271 §6).
    assert_eq!(
        notifications,
        vec![(6, 3)],
        "one CEASE / Peer De-configured: {notifications:?}"
    );
    let withdrawn = |u: &Update| u.withdrawals().iter().any(|(_, n)| n.prefix == p2);
    for (c, who) in [(&mut c1, "c1"), (&mut c3, "c3"), (&mut tor, "tor")] {
        expect(c, who, withdrawn).await;
    }
    wait_peers(&control, "c2 removed", |p| {
        !p.iter().any(|s| s.address == a("127.0.80.12"))
    })
    .await;
    undisturbed(&mut c1, "c1");
    undisturbed(&mut c3, "c3");
    undisturbed(&mut tor, "tor");
    assert_eq!(
        since(&control, "127.0.80.11"),
        c1_since,
        "c1's session was reset"
    );
    let c3_since = since(&control, "127.0.80.13");
    since(&control, "127.0.80.20");

    // Live: an edit that changes no session (a label on c3), then the
    // BGPPeer tor deleted. Once tor's session is gone the reflector has
    // seen both changes (watch order); c1 and c3 must not have noticed.
    apply(
        &client_ds,
        &node_yaml_labelled("c3", "127.0.80.13", false, "rack: r1"),
    )
    .await;
    client_ds
        .delete::<datastore::model::BGPPeer>("tor", None)
        .await
        .expect("delete the BGPPeer tor");
    let notifications = ceased(&mut tor, "tor").await;
    assert_eq!(notifications.first(), Some(&(6, 3)), "{notifications:?}");
    let withdrawn = |u: &Update| u.withdrawals().iter().any(|(_, n)| n.prefix == p20);
    for (c, who) in [(&mut c1, "c1"), (&mut c3, "c3")] {
        expect(c, who, withdrawn).await;
    }
    wait_peers(&control, "tor removed", |p| {
        !p.iter().any(|s| s.address == a("127.0.80.20"))
    })
    .await;
    undisturbed(&mut c1, "c1");
    undisturbed(&mut c3, "c3");
    assert_eq!(since(&control, "127.0.80.11"), c1_since);
    assert_eq!(since(&control, "127.0.80.13"), c3_since);
    assert_eq!(
        rr_peers(&control).len(),
        2,
        "only c1 and c3 are left: {:#?}",
        rr_peers(&control)
    );
}
