//! Dataplane scenarios on [`MemNetlink`]: every encapsulation mode, restart/resync write
//! counts, the no-IPIP kernel path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnetwork::IpNetwork;

use crate::clock::FakeClock;
use crate::nat::MemNat;
use crate::netlink::{KernelRoute, LinkKind, MemNetlink, NeighTable, Neighbour, RouteKind};
use crate::sysctl::MemSysctl;
use crate::tunnel::{Tunnel, Vtep};
use crate::types::*;
use crate::{Dataplane, DataplaneConfig, MANX_ROUTE_PROTOCOL};

type MemDataplane = Dataplane<Arc<MemNetlink>, Arc<MemSysctl>, Arc<MemNat>, Arc<FakeClock>>;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Rig {
    nl: Arc<MemNetlink>,
    sys: Arc<MemSysctl>,
    nat: Arc<MemNat>,
    clock: Arc<FakeClock>,
    eth: u32,
    cali: u32,
}

impl Rig {
    fn new() -> Self {
        let nl = Arc::new(MemNetlink::new());
        let eth = nl.add_host_link("eth0", 1500, &[net("198.19.1.1/24")]);
        let cali = nl.add_host_link("cali0123456789a", 1500, &[]);
        Rig {
            nl,
            sys: Arc::new(MemSysctl::default()),
            nat: Arc::new(MemNat::default()),
            clock: Arc::new(FakeClock::default()),
            eth,
            cali,
        }
    }
    fn dataplane(&self) -> MemDataplane {
        Dataplane::new(
            self.nl.clone(),
            self.sys.clone(),
            self.nat.clone(),
            self.clock.clone(),
            DataplaneConfig::default(),
        )
    }
    fn route(&self, dst: &str) -> Option<KernelRoute> {
        self.nl
            .route_table()
            .into_iter()
            .find(|r| r.dst == net(dst))
    }
}

/// The shared fixture ([`crate::calc::fixture`]), its pool with natOutgoing.
fn input(ipip: EncapMode, vxlan: EncapMode) -> DataplaneInput {
    let mut inp = crate::calc::fixture::input(ipip, vxlan);
    inp.pools[0].nat_outgoing = true;
    inp
}

#[tokio::test]
async fn ipip_always_programs_tunl0_and_onlink_routes() {
    let rig = Rig::new();
    let mut dp = rig.dataplane();
    let rep = dp
        .apply(&input(EncapMode::Always, EncapMode::Never))
        .await
        .unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let links = rig.nl.link_list();
    let tunl = links.iter().find(|l| l.name == "tunl0").unwrap();
    assert_eq!(
        (tunl.kind.clone(), tunl.mtu, tunl.up),
        (LinkKind::Ipip, 1480, true)
    );
    assert!(
        rig.nl
            .address_list()
            .iter()
            .any(|a| a.index == tunl.index && a.addr == net("10.19.0.1/32"))
    );
    let r = rig.route("10.19.1.0/26").unwrap();
    assert_eq!(
        (r.gateway, r.oif, r.onlink, r.protocol),
        (
            Some(ip("198.19.1.2")),
            Some(tunl.index),
            true,
            MANX_ROUTE_PROTOCOL
        )
    );
    assert!(dp.supports(Tunnel::Ipip));
    assert!(dp.degraded_pools().is_empty());
}

#[tokio::test]
async fn vxlan_always_programs_device_arp_fdb_and_routes() {
    let rig = Rig::new();
    let mut dp = rig.dataplane();
    let mut inp = input(EncapMode::Never, EncapMode::Always);
    dp.apply(&inp).await.unwrap();
    let links = rig.nl.link_list();
    let vx = links.iter().find(|l| l.name == "vxlan.manx").unwrap();
    assert_eq!(vx.mtu, 1450);
    assert_eq!(vx.mac, Some(MacAddr::from_seed("a")));
    assert_eq!(
        dp.tunnel_mac(Tunnel::Vxlan, "a"),
        Some(MacAddr::from_seed("a"))
    );
    assert!(matches!(
        vx.kind,
        LinkKind::Vxlan { vni: 4096, port: 4789, local, parent: Some(p) }
            if local == ip("198.19.1.1") && p == rig.eth
    ));
    let r = rig.route("10.19.2.0/26").unwrap();
    assert_eq!(
        (r.gateway, r.oif, r.onlink),
        (Some(ip("10.19.2.0")), Some(vx.index), true)
    );
    let n = |i: &str, m: u8| Neighbour {
        index: vx.index,
        ip: ip(i),
        mac: MacAddr([2, 0, 0, 0, 0, m]),
    };
    assert_eq!(
        rig.nl.neighbour_table(NeighTable::Neigh),
        vec![n("10.19.1.0", 0xb), n("10.19.2.0", 0xc)]
    );
    let mut fdb = rig.nl.neighbour_table(NeighTable::Fdb);
    fdb.sort_by_key(|x| x.mac);
    assert_eq!(fdb, vec![n("198.19.1.2", 0xb), n("198.19.9.3", 0xc)]);

    // Node c leaves: its route, ARP and FDB entries go.
    inp.peers.pop();
    inp.remote_blocks.pop();
    rig.nl.clear_log();
    let rep = dp.apply(&inp).await.unwrap();
    assert_eq!((rep.routes_deleted, rep.link_writes), (1, 2));
    assert!(rig.route("10.19.2.0/26").is_none());
    assert_eq!(
        rig.nl.neighbour_table(NeighTable::Neigh),
        vec![n("10.19.1.0", 0xb)]
    );

    // Pool switched to Never: vxlan.manx is removed and routes go direct.
    let never = input(EncapMode::Never, EncapMode::Never);
    dp.apply(&never).await.unwrap();
    assert!(rig.nl.index_of("vxlan.manx").is_none());
    assert_eq!(rig.route("10.19.1.0/26").unwrap().oif, Some(rig.eth));
}

#[tokio::test]
async fn ipv6_vxlan_programs_vxlan_v6_with_ndp_fdb_and_the_remote_block_route() {
    let rig = Rig::new();
    let mut dp = rig.dataplane();
    let mut inp = input(EncapMode::Never, EncapMode::Never);
    let mut pool6 = PoolInfo::new(net("fd42:19:1::/64"));
    pool6.encap = Some((Tunnel::Vxlan6, EncapMode::Always));
    inp.pools.push(pool6);
    inp.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
    inp.tunnel_addrs.insert(Tunnel::Vxlan6, ip("fd42:19:1::1"));
    inp.remote_blocks.push(RemoteBlock {
        block: net("fd42:19:1::40/122"),
        node: "b".into(),
        node_ip: ip("fd42:19::2"),
    });
    let mac_b = MacAddr([2, 0, 0, 0, 6, 0xb]);
    inp.peers[0].ip_v6 = Some(ip("fd42:19::2"));
    inp.peers[0].vteps.insert(
        Tunnel::Vxlan6,
        Vtep {
            addr: ip("fd42:19:1::41"),
            mac: mac_b,
        },
    );
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);

    let links = rig.nl.link_list();
    let vx = links
        .iter()
        .find(|l| l.name == crate::VXLAN_V6_DEVICE)
        .unwrap();
    assert_eq!((vx.mtu, vx.up), (1430, true));
    assert_eq!(vx.mac, dp.tunnel_mac(Tunnel::Vxlan6, "a"));
    assert_ne!(
        dp.tunnel_mac(Tunnel::Vxlan6, "a"),
        dp.tunnel_mac(Tunnel::Vxlan, "a")
    );
    assert!(matches!(
        vx.kind,
        LinkKind::Vxlan { vni: 4096, port: 4789, local, parent: Some(p) }
            if local == ip("fd42:19::1") && p == rig.eth
    ));
    // The v4 pool is Never: no vxlan.manx.
    assert!(rig.nl.index_of(crate::VXLAN_DEVICE).is_none());
    assert!(
        rig.nl
            .address_list()
            .iter()
            .any(|a| a.index == vx.index && a.addr == net("fd42:19:1::1/128"))
    );
    let r = rig.route("fd42:19:1::40/122").unwrap();
    assert_eq!(
        (r.gateway, r.oif, r.onlink, r.protocol),
        (
            Some(ip("fd42:19:1::41")),
            Some(vx.index),
            true,
            MANX_ROUTE_PROTOCOL
        )
    );
    let n = |i: &str| Neighbour {
        index: vx.index,
        ip: ip(i),
        mac: mac_b,
    };
    assert_eq!(
        rig.nl.neighbour_table(NeighTable::Neigh),
        vec![n("fd42:19:1::41")]
    );
    assert_eq!(
        rig.nl.neighbour_table(NeighTable::Fdb),
        vec![n("fd42:19::2")]
    );
    // The IPv4 blocks still route directly.
    assert_eq!(rig.route("10.19.1.0/26").unwrap().oif, Some(rig.eth));

    // Peer b without its IPv6 VTEP yet: its block's route waits for it.
    inp.peers[0].vteps.remove(&Tunnel::Vxlan6);
    dp.apply(&inp).await.unwrap();
    assert!(rig.route("fd42:19:1::40/122").is_none());
}

#[tokio::test]
async fn never_and_cross_subnet_route_directly_in_subnet() {
    for (ipip, vxlan) in [
        (EncapMode::Never, EncapMode::Never),
        (EncapMode::CrossSubnet, EncapMode::Never),
        (EncapMode::Never, EncapMode::CrossSubnet),
    ] {
        let rig = Rig::new();
        let mut dp = rig.dataplane();
        dp.apply(&input(ipip, vxlan)).await.unwrap();
        let r = rig.route("10.19.1.0/26").unwrap();
        assert_eq!(
            (r.gateway, r.oif, r.onlink),
            (Some(ip("198.19.1.2")), Some(rig.eth), false)
        );
        let far = rig.route("10.19.2.0/26").unwrap();
        if ipip == EncapMode::Never && vxlan == EncapMode::Never {
            // Not in the subnet and no tunnel: the kernel would need a route to the gateway;
            // MemNetlink does not check that, the kernel test does.
            assert_eq!(far.oif, Some(rig.eth));
        } else {
            assert!(far.onlink);
            assert_ne!(far.oif, Some(rig.eth));
        }
    }
}

#[tokio::test]
async fn local_blocks_blackhole_and_workloads_get_routes_and_sysctls() {
    let rig = Rig::new();
    let mut dp = rig.dataplane();
    dp.apply(&input(EncapMode::Never, EncapMode::Never))
        .await
        .unwrap();
    assert_eq!(
        rig.route("10.19.0.0/26").unwrap().kind,
        RouteKind::Blackhole
    );
    let w = rig.route("10.19.0.5/32").unwrap();
    assert_eq!((w.oif, w.gateway), (Some(rig.cali), None));
    assert_eq!(w.scope, crate::netlink::Scope::Link);
    for (path, want) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv4/conf/cali0123456789a/rp_filter", "1"),
        ("net/ipv4/conf/cali0123456789a/proxy_arp", "1"),
        ("net/ipv4/neigh/cali0123456789a/proxy_delay", "0"),
    ] {
        assert_eq!(
            crate::sysctl::Sysctls::read(&*rig.sys, path).unwrap(),
            want,
            "{path}"
        );
    }
    assert_eq!(
        rig.sys
            .get("net/ipv4/conf/cali0123456789a/rp_filter")
            .as_deref(),
        Some("1")
    );
    assert!(rig.sys.get("net/ipv6/conf/all/forwarding").is_none());
    let t = rig.nat.table(false).unwrap();
    assert!(t.contains("ip saddr @pools ip daddr != @allpools masquerade"));
}

#[tokio::test]
async fn restart_and_periodic_resync_with_unchanged_state_write_nothing() {
    for (ipip, vxlan) in [
        (EncapMode::Always, EncapMode::Never),
        (EncapMode::Never, EncapMode::Always),
        (EncapMode::Never, EncapMode::Never),
    ] {
        let rig = Rig::new();
        let inp = input(ipip, vxlan);
        let mut dp = rig.dataplane();
        let first = dp.apply(&inp).await.unwrap();
        assert!(first.writes() > 0);
        // Steady state, incremental.
        rig.nl.clear_log();
        let rep = dp.apply(&inp).await.unwrap();
        assert_eq!(
            (rep.writes(), rig.nl.writes()),
            (0, 0),
            "{ipip:?}/{vxlan:?}"
        );
        // Periodic full resync.
        rig.clock.advance(Duration::from_secs(91));
        let rep = dp.apply(&inp).await.unwrap();
        assert!(rep.full_resync);
        assert_eq!(
            (rep.writes(), rig.nl.writes()),
            (0, 0),
            "{ipip:?}/{vxlan:?}"
        );
        // Restart: a new Dataplane over the same kernel.
        let nat_before = rig.nat.applies();
        let sys_before = rig.sys.writes();
        let mut again = rig.dataplane();
        let rep = again.apply(&inp).await.unwrap();
        assert!(rep.full_resync);
        assert_eq!(rig.nl.writes(), 0, "{:?}", rig.nl.log());
        assert_eq!(rep.writes(), 0);
        assert_eq!(
            (rig.nat.applies(), rig.sys.writes()),
            (nat_before, sys_before)
        );
    }
}

#[tokio::test]
async fn errors_trigger_a_resync_on_the_next_apply() {
    let rig = Rig::new();
    let inp = input(EncapMode::Never, EncapMode::Never);
    let mut dp = rig.dataplane();
    rig.nl.fail_route(net("10.19.1.0/26"), libc::ENOMEM);
    let rep = dp.apply(&inp).await.unwrap();
    assert_eq!(rep.errors.len(), 1);
    assert!(rep.errors[0].contains("10.19.1.0/26"), "{}", rep.errors[0]);
    rig.nl.fail_route(net("10.19.1.0/26"), 0);
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.full_resync, "an error forces a full resync");
    assert_eq!(rep.routes_added, 1);
    let rep = dp.apply(&inp).await.unwrap();
    assert!(!rep.full_resync);
}

/// Counts events whose message contains a needle (no tracing-subscriber dependency).
struct Counter {
    needle: &'static str,
    hits: Arc<AtomicUsize>,
    lines: Arc<Mutex<Vec<String>>>,
}

struct MessageVisitor(String);
impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Counter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        if v.0.contains(self.needle) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            self.lines.lock().unwrap().push(v.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn kernel_without_ipip_logs_one_line_per_pool_and_keeps_other_pools() {
    let hits = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Counter {
        needle: "cannot be programmed",
        hits: hits.clone(),
        lines: lines.clone(),
    });
    let rig = Rig::new();
    rig.nl.set_ipip_unsupported(true);
    let mut inp = input(EncapMode::Always, EncapMode::Never);
    let mut vx = PoolInfo::new(net("10.20.0.0/16"));
    vx.encap = Some((Tunnel::Vxlan, EncapMode::Always));
    inp.pools.push(vx);
    inp.remote_blocks.push(RemoteBlock {
        block: net("10.20.1.0/26"),
        node: "b".into(),
        node_ip: ip("198.19.1.2"),
    });
    let mut dp = rig.dataplane();
    for _ in 0..3 {
        let rep = dp.apply(&inp).await.unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        rig.clock.advance(Duration::from_secs(100));
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "{:?}",
        lines.lock().unwrap()
    );
    assert_eq!(
        lines.lock().unwrap()[0],
        "IPIP pool 10.19.0.0/16 cannot be programmed: this kernel has no ipip support \
         (CONFIG_NET_IPIP); use vxlanMode or ipipMode: Never"
    );
    assert!(!dp.supports(Tunnel::Ipip));
    let degraded = dp.degraded_pools();
    assert_eq!(degraded.len(), 1);
    assert_eq!(degraded[0].cidr, net("10.19.0.0/16"));
    // IPIP routes skipped; the VXLAN pool, blackholes and workloads are programmed.
    assert!(rig.route("10.19.1.0/26").is_none());
    assert!(rig.route("10.20.1.0/26").is_some());
    assert!(rig.route("10.19.0.0/26").is_some());
    assert!(rig.route("10.19.0.5/32").is_some());
    // Creating tunl0 was tried once, not on every resync.
    let tries = rig
        .nl
        .log()
        .iter()
        .filter(|o| matches!(o, crate::netlink::Op::AddLink(n) if n == "tunl0"))
        .count();
    assert_eq!(tries, 1);
}

#[tokio::test(start_paused = true)]
async fn run_applies_each_new_input_and_stops_when_the_sender_goes() {
    let rig = Rig::new();
    let dp = rig.dataplane();
    let (tx, rx) = tokio::sync::watch::channel(input(EncapMode::Never, EncapMode::Never));
    let task = tokio::spawn(dp.run(rx));
    // Let the first apply happen (paused time auto-advances while idle).
    while rig.route("10.19.1.0/26").is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = input(EncapMode::Never, EncapMode::Never);
    next.remote_blocks.clear();
    tx.send(next).unwrap();
    while rig.route("10.19.1.0/26").is_some() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn run_observed_reports_every_apply_and_resyncs_on_its_own() {
    let rig = Rig::new();
    let dp = Dataplane::new(
        rig.nl.clone(),
        rig.sys.clone(),
        rig.nat.clone(),
        rig.clock.clone(),
        DataplaneConfig {
            resync_interval: Duration::from_secs(5),
            ..Default::default()
        },
    );
    let (tx, rx) = tokio::sync::watch::channel(input(EncapMode::Never, EncapMode::Never));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(dp.run_observed(rx, move |a| {
        log.lock().unwrap().push((
            a.result.as_ref().map(|r| r.full_resync).ok(),
            a.input.remote_blocks.len(),
        ));
    }));
    while seen.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first apply is a full resync; the resync period brings another
    // without any new input.
    rig.clock.advance(Duration::from_secs(6));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut next = input(EncapMode::Never, EncapMode::Never);
    next.remote_blocks.clear();
    tx.send(next).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tx);
    task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (Some(true), 2), "{seen:?}");
    assert_eq!(seen[1], (Some(true), 2), "periodic resync: {seen:?}");
    assert_eq!(
        seen.last().unwrap().1,
        0,
        "the new input was applied: {seen:?}"
    );
}

fn foreign_route(dst: &str, gw: &str, oif: u32, protocol: u8, metric: u32) -> KernelRoute {
    KernelRoute {
        protocol,
        metric,
        ..crate::reconcile::routes::manx_route(
            net(dst),
            RouteKind::Unicast,
            Some(ip(gw)),
            Some(oif),
            false,
        )
    }
}

fn external_state(dp: &MemDataplane, prefix: &str) -> (crate::ExternalState, String) {
    let e = dp
        .external_routes()
        .iter()
        .find(|e| e.prefix == net(prefix))
        .unwrap_or_else(|| panic!("{prefix} not reported: {:?}", dp.external_routes()));
    (e.state, e.detail.clone())
}

#[tokio::test]
async fn external_routes_install_resolve_withdraw_and_never_take_over() {
    use crate::ExternalState::*;
    let rig = Rig::new();
    // The host reaches 192.0.2.0/24 through a router of its own (proto static).
    rig.nl
        .insert_route(foreign_route("192.0.2.0/24", "198.19.1.250", rig.eth, 4, 0));
    let mut inp = input(EncapMode::Never, EncapMode::Never);
    inp.external_routes = [
        (net("10.200.0.0/26"), vec![ip("198.19.1.254")]),
        (net("10.201.0.0/24"), vec![ip("192.0.2.7")]),
        (net("10.202.0.0/24"), vec![ip("203.0.113.7")]),
    ]
    .into();
    let mut dp = rig.dataplane();
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let direct = rig.route("10.200.0.0/26").expect("direct route");
    assert_eq!(
        (direct.gateway, direct.oif, direct.protocol),
        (Some(ip("198.19.1.254")), Some(rig.eth), MANX_ROUTE_PROTOCOL)
    );
    let recursive = rig.route("10.201.0.0/24").expect("recursive route");
    assert_eq!(recursive.gateway, Some(ip("198.19.1.250")));
    assert_eq!(
        external_state(&dp, "10.201.0.0/24"),
        (
            Installed,
            "via 198.19.1.250 dev eth0, resolved through 192.0.2.0/24".into()
        )
    );
    assert!(rig.route("10.202.0.0/24").is_none());
    assert_eq!(external_state(&dp, "10.202.0.0/24").0, Unreachable);

    // Steady state and restart write nothing.
    rig.nl.clear_log();
    dp.apply(&inp).await.unwrap();
    rig.dataplane().apply(&inp).await.unwrap();
    assert_eq!(rig.nl.writes(), 0, "{:?}", rig.nl.log());

    // The kernel learns a route to the unreachable next hop: the next scan installs it.
    rig.nl.insert_route(foreign_route(
        "203.0.113.0/24",
        "198.19.1.251",
        rig.eth,
        4,
        0,
    ));
    rig.clock
        .advance(DataplaneConfig::default().kernel_scan_interval);
    dp.apply(&inp).await.unwrap();
    assert_eq!(
        rig.route("10.202.0.0/24").and_then(|r| r.gateway),
        Some(ip("198.19.1.251"))
    );

    // A host default route appears between two scans, and the ToR's default arrives:
    // the add finds the key taken and leaves the host's route alone.
    rig.nl
        .insert_route(foreign_route("0.0.0.0/0", "198.19.1.1", rig.eth, 3, 0));
    inp.external_routes
        .insert(net("0.0.0.0/0"), vec![ip("198.19.1.254")]);
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let default = rig.route("0.0.0.0/0").unwrap();
    assert_eq!(
        (default.protocol, default.gateway),
        (3, Some(ip("198.19.1.1")))
    );
    assert_eq!(external_state(&dp, "0.0.0.0/0").0, Refused);
    // The next scan knows why.
    rig.clock
        .advance(DataplaneConfig::default().kernel_scan_interval);
    dp.apply(&inp).await.unwrap();
    assert_eq!(
        external_state(&dp, "0.0.0.0/0"),
        (
            Refused,
            "kernel already has a route for 0.0.0.0/0 (proto boot); not replaced".into()
        )
    );
    for op in rig.nl.log() {
        if let crate::netlink::Op::Route(op) = op {
            assert_eq!(op.route().protocol, MANX_ROUTE_PROTOCOL, "{op:?}");
        }
    }

    // Withdrawn: gone from the kernel and from the status.
    inp.external_routes.remove(&net("10.200.0.0/26"));
    dp.apply(&inp).await.unwrap();
    assert!(rig.route("10.200.0.0/26").is_none());
    assert!(
        !dp.external_routes()
            .iter()
            .any(|e| e.prefix == net("10.200.0.0/26"))
    );
    // All withdrawn: every Manx route left is a pool's.
    inp.external_routes.clear();
    dp.apply(&inp).await.unwrap();
    assert!(dp.external_routes().is_empty());
    assert!(rig.route("10.201.0.0/24").is_none() && rig.route("10.202.0.0/24").is_none());
    assert_eq!(rig.route("0.0.0.0/0").unwrap().protocol, 3);
}

#[tokio::test]
async fn external_ecmp_route_is_one_multipath_route_reconciled_in_place() {
    use crate::ExternalState::*;
    let rig = Rig::new();
    let mut inp = input(EncapMode::Never, EncapMode::Never);
    // Two ToRs on the uplink's subnet announce the same prefix (equal paths merged).
    inp.external_routes = [(
        net("10.200.0.0/26"),
        vec![ip("198.19.1.254"), ip("198.19.1.253")],
    )]
    .into();
    let mut dp = rig.dataplane();
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    let r = rig.route("10.200.0.0/26").expect("multipath route");
    let hops: Vec<(IpAddr, u32)> = r.multipath.iter().map(|h| (h.gateway, h.oif)).collect();
    assert_eq!(
        hops,
        [(ip("198.19.1.253"), rig.eth), (ip("198.19.1.254"), rig.eth)]
    );
    assert_eq!((r.gateway, r.oif), (None, None));
    assert_eq!(
        external_state(&dp, "10.200.0.0/26"),
        (
            Installed,
            "nexthop via 198.19.1.253 dev eth0 nexthop via 198.19.1.254 dev eth0".into()
        )
    );

    // Steady state, the hops listed in another order, and a restart: no write.
    rig.nl.clear_log();
    dp.apply(&inp).await.unwrap();
    inp.external_routes
        .get_mut(&net("10.200.0.0/26"))
        .unwrap()
        .reverse();
    dp.apply(&inp).await.unwrap();
    rig.dataplane().apply(&inp).await.unwrap();
    assert_eq!(rig.nl.writes(), 0, "{:?}", rig.nl.log());

    // One ToR gone: the same route, replaced by a single path.
    inp.external_routes
        .insert(net("10.200.0.0/26"), vec![ip("198.19.1.254")]);
    dp.apply(&inp).await.unwrap();
    let r = rig.route("10.200.0.0/26").unwrap();
    assert!(r.multipath.is_empty(), "{r}");
    assert_eq!(r.gateway, Some(ip("198.19.1.254")));
}

/// A kernel without WireGuard (this build machine's): wireguardEnabled gives one clear line,
/// no `wireguard.manx`, no public key, and every pool keeps its own encapsulation.
#[tokio::test]
async fn without_wireguard_in_the_kernel_pools_keep_their_encapsulation() {
    if crate::tunnel::wireguard::WireguardSocket::open().is_ok() {
        eprintln!("skipped: this kernel has WireGuard; the no-WireGuard path needs one without");
        return;
    }
    let rig = Rig::new();
    let mut dp = rig.dataplane();
    let mut inp = input(EncapMode::Never, EncapMode::Always);
    inp.wireguard = Some(WireguardSettings {
        port: 51820,
        mtu: None,
    });
    inp.peers[0].wireguard_public_key = Some(crate::tunnel::wireguard::base64_encode(&[1; 32]));
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(!dp.supports_wireguard());
    assert_eq!(dp.wireguard_public_key(), None);
    let links = rig.nl.link_list();
    assert!(
        !links.iter().any(|l| l.name == "wireguard.manx"),
        "{links:?}"
    );
    let vx = links.iter().find(|l| l.name == "vxlan.manx").unwrap();
    assert_eq!(rig.route("10.19.1.0/26").unwrap().oif, Some(vx.index));
    // Later applies do not try again (the line is logged once).
    let rep = dp.apply(&inp).await.unwrap();
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(
        !rig.nl
            .link_list()
            .iter()
            .any(|l| l.name == "wireguard.manx")
    );
}
