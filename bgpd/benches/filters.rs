//! What BGPFilters cost the RIB: one eBGP peer sends N IPv4 prefixes (one
//! UPDATE per 400), and the table is exported to another peer, with and
//! without a Calico-style filter of R rules on both ways (rules that miss,
//! so every prefix walks them all, then a catch-all Accept: the worst
//! case). Then a live import-filter change re-applied to the held paths
//! (what replaces a ROUTE-REFRESH round trip).
//!
//! Baselines, measured in the same run: the same RIB and export with no
//! filter; for the live change, importing the whole table again (what the
//! RIB does with a ROUTE-REFRESH answer, before any network time).
//! Printed: medians of 5 and the ratios.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgpd::packet::{AfiSafi, AsPath, Nlri, Origin, PathAttribute, Update};
use bgpd::policy::{Action, Filter, MatchOperator, Policy, PrefixMatch, Rule};
use bgpd::rib::export::{ExportTarget, Exporter};
use bgpd::rib::{PeerMeta, Rib};
use ipnetwork::{IpNetwork, Ipv4Network};

const N: u32 = 100_000;
const RULES: u32 = 10;

fn prefixes() -> Vec<IpNetwork> {
    (0..N)
        .map(|i| {
            IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect()
}

fn updates() -> Vec<Update> {
    prefixes()
        .chunks(400)
        .map(|c| Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::from_sequence(vec![65001])),
                PathAttribute::NextHop(Ipv4Addr::new(198, 18, 0, 2)),
            ],
            nlri: c.iter().map(|p| Nlri::new(*p)).collect(),
            ..Default::default()
        })
        .collect()
}

/// R rules that match nothing the peer sends (192.168.x.0/24 In, with a
/// length range), then Accept.
fn filter(name: &str) -> Filter {
    let mut rules: Vec<Rule> = (0..RULES)
        .map(|i| {
            let cidr: IpNetwork = format!("192.168.{i}.0/24").parse().unwrap();
            Rule::prefix(
                Action::Reject,
                PrefixMatch::new(MatchOperator::In, cidr, Some(25), None),
            )
        })
        .collect();
    rules.push(Rule::any(Action::Accept));
    Filter {
        name: name.into(),
        import_v4: rules.clone(),
        export_v4: rules,
        ..Default::default()
    }
}

struct Times {
    import: Duration,
    export: Duration,
    reapply: Duration,
}

fn run(filtered: bool, updates: &[Update]) -> Times {
    let tor: IpAddr = "198.18.0.2".parse().unwrap();
    let mut rib = Rib::new(64512, Ipv4Addr::new(198, 18, 0, 1));
    rib.peer_up(PeerMeta {
        address: tor,
        ibgp: false,
        router_id: Ipv4Addr::new(198, 18, 0, 2),
        rr_client: false,
        allow_local_as: 0,
    });
    let policy = filtered.then(|| Arc::new(Policy::new(vec![filter("tor")])));
    rib.set_import_policy(tor, policy.clone());
    let start = Instant::now();
    for u in updates {
        rib.apply_update(tor, u);
    }
    let import = start.elapsed();
    assert_eq!(rib.loc_rib().count(), N as usize);
    let target = ExportTarget {
        peer: "198.18.0.3".parse().unwrap(),
        ibgp: false,
        local_as: 64512,
        local_addr: "198.18.0.1".parse().unwrap(),
        families: BTreeSet::from([AfiSafi::IPV4_UNICAST]),
        rr_client: false,
        cluster_id: None,
        next_hop_mode: bgpd::config::NextHopMode::Auto,
        policy,
    };
    let start = Instant::now();
    let mut ex = Exporter::new(&target);
    let sent = rib
        .loc_rib()
        .filter(|(p, b)| ex.export(p, Some(b)).is_some())
        .count();
    let export = start.elapsed();
    assert_eq!(sent, N as usize);
    // A live import change: two filters of that size, every held path
    // walked through both.
    let start = Instant::now();
    let next = Arc::new(Policy::new(vec![filter("tor-v2"), filter("x")]));
    rib.set_import_policy(tor, Some(next));
    let reapply = start.elapsed();
    Times {
        import,
        export,
        reapply,
    }
}

fn main() {
    let updates = updates();
    let runs = 5;
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(run(false, &updates));
        with.push(run(true, &updates));
    }
    let median = |v: &[Times], f: fn(&Times) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(f).collect();
        d.sort();
        d[d.len() / 2]
    };
    println!(
        "BGPFilter cost: {N} IPv4 prefixes, filter of {RULES} missing rules + Accept (median of {runs})"
    );
    for (what, f) in [
        (
            "import (apply_update)",
            (|t: &Times| t.import) as fn(&Times) -> Duration,
        ),
        ("export (Exporter, whole table)", |t: &Times| t.export),
    ] {
        let (b, w) = (median(&plain, f), median(&with, f));
        println!(
            "  {what:<42} no filter {:>8.1} ms   filtered {:>8.1} ms   ratio {:.2}x",
            b.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e3,
            w.as_secs_f64() / b.as_secs_f64().max(1e-9)
        );
    }
    let (b, w) = (median(&plain, |t| t.import), median(&with, |t| t.reapply));
    println!(
        "  live import change: re-apply to held paths {:>8.1} ms   vs re-import of the table (ROUTE-REFRESH answer) {:>8.1} ms   ratio {:.2}x",
        w.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        w.as_secs_f64() / b.as_secs_f64().max(1e-9)
    );
}
