//! Route programming speed: felix-lite's reconciler (pipelined netlink batches) against
//! `ip -batch` doing the same routes, each in a fresh network namespace, in the same run.
//!
//! Scenarios: install 10k routes, install 100k routes, apply 1k changes (500 replaced,
//! 250 deleted, 250 added) to a full 100k table. Prints both times and the ratio
//! (ip -batch time / felix time: above 1 means felix-lite is faster). Needs root.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use felix::netlink::RouteKind;
use felix::reconcile::RouteReconciler;
use felix::reconcile::routes::{RouteMap, manx_route};
use felix::{MANX_ROUTE_PROTOCOL, RealNetlink};
use ipnetwork::IpNetwork;
use testkit::{Netns, Prereqs};

const GW_A: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);

/// `n` distinct prefixes inside 10.19.0.0/16: every /32, then /31s, then /30s.
fn prefixes(n: usize) -> Vec<IpNetwork> {
    let mut out = Vec::with_capacity(n);
    'outer: for (len, step) in [(32u8, 1u32), (31, 2), (30, 4)] {
        let mut a = 0u32;
        while a < 65536 {
            if out.len() == n {
                break 'outer;
            }
            let ip = Ipv4Addr::from(0x0a13_0000 | a);
            out.push(IpNetwork::new(IpAddr::V4(ip), len).unwrap());
            a += step;
        }
    }
    assert_eq!(out.len(), n, "not enough prefixes in 10.19.0.0/16");
    out
}

fn namespace(tag: &str) -> Netns {
    let ns = Netns::new(&format!("mxfx-{tag}"));
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "eth0p", "up"]);
    ns.ip(&["addr", "add", "198.19.0.1/16", "dev", "eth0"]);
    ns
}

fn oif(ns: &Netns) -> u32 {
    let out = ns.exec("cat", &["/sys/class/net/eth0/ifindex"]);
    out.trim().parse().expect("ifindex")
}

fn desired(pfx: &[IpNetwork], gw: Ipv4Addr, oif: u32) -> RouteMap {
    pfx.iter()
        .map(|p| {
            (
                *p,
                manx_route(
                    *p,
                    RouteKind::Unicast,
                    Some(IpAddr::V4(gw)),
                    Some(oif),
                    false,
                ),
            )
        })
        .collect()
}

/// Run `ip -batch` with `lines` in `ns`; returns the elapsed time.
fn ip_batch(ns: &Netns, lines: &[String]) -> Duration {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.flush().unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let t = Instant::now();
    let out = ns.command("ip").args(["-batch", &path]).output().unwrap();
    let el = t.elapsed();
    assert!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    el
}

fn add_line(p: &IpNetwork, gw: Ipv4Addr) -> String {
    format!("route add {p} via {gw} dev eth0 proto {MANX_ROUTE_PROTOCOL}")
}

fn count_routes(ns: &Netns) -> usize {
    ns.ip(&["route", "show", "proto", &MANX_ROUTE_PROTOCOL.to_string()])
        .lines()
        .count()
}

/// Install `n` routes with felix-lite into a fresh namespace; returns the time.
fn felix_install(n: usize, tag: &str) -> Duration {
    let ns = namespace(tag);
    let want = desired(&prefixes(n), GW_A, oif(&ns));
    let el = ns.block_on(move || async move {
        let nl = RealNetlink::new().unwrap();
        let mut r = RouteReconciler::new();
        let t = Instant::now();
        let s = r.apply(&nl, &want, true).await.unwrap();
        let el = t.elapsed();
        assert!(
            s.errors.is_empty(),
            "{:?}",
            &s.errors[..s.errors.len().min(3)]
        );
        assert_eq!(s.added, n);
        el
    });
    assert_eq!(count_routes(&ns), n);
    el
}

fn ip_install(n: usize, tag: &str) -> Duration {
    let ns = namespace(tag);
    let lines: Vec<String> = prefixes(n).iter().map(|p| add_line(p, GW_A)).collect();
    let el = ip_batch(&ns, &lines);
    assert_eq!(count_routes(&ns), n);
    el
}

/// 1k changes to a full table of `n`: 500 replaced, 250 deleted, 250 added.
fn change_sets(
    n: usize,
) -> (
    Vec<IpNetwork>,
    Vec<IpNetwork>,
    Vec<IpNetwork>,
    Vec<IpNetwork>,
) {
    let all = prefixes(n + 250);
    let base = all[..n].to_vec();
    let replaced = base[..500].to_vec();
    let deleted = base[500..750].to_vec();
    let added = all[n..].to_vec();
    (base, replaced, deleted, added)
}

fn felix_changes(n: usize) -> Duration {
    let ns = namespace("chg-felix");
    let idx = oif(&ns);
    let (base, replaced, deleted, added) = change_sets(n);
    let el = ns.block_on(move || async move {
        let nl = RealNetlink::new().unwrap();
        let mut r = RouteReconciler::new();
        let mut want = desired(&base, GW_A, idx);
        r.apply(&nl, &want, true).await.unwrap();
        for p in &replaced {
            want.get_mut(p).unwrap().gateway = Some(IpAddr::V4(GW_B));
        }
        for p in &deleted {
            want.remove(p);
        }
        want.extend(desired(&added, GW_A, idx));
        let t = Instant::now();
        let s = r.apply(&nl, &want, false).await.unwrap();
        let el = t.elapsed();
        assert!(s.errors.is_empty());
        assert_eq!((s.added, s.replaced, s.deleted), (250, 500, 250));
        el
    });
    assert_eq!(count_routes(&ns), n);
    el
}

fn ip_changes(n: usize) -> Duration {
    let ns = namespace("chg-ip");
    let (base, replaced, deleted, added) = change_sets(n);
    let lines: Vec<String> = base.iter().map(|p| add_line(p, GW_A)).collect();
    ip_batch(&ns, &lines);
    let mut lines = Vec::new();
    for p in &replaced {
        lines.push(format!(
            "route replace {p} via {GW_B} dev eth0 proto {MANX_ROUTE_PROTOCOL}"
        ));
    }
    for p in &deleted {
        lines.push(format!("route del {p} proto {MANX_ROUTE_PROTOCOL}"));
    }
    for p in &added {
        lines.push(add_line(p, GW_A));
    }
    let el = ip_batch(&ns, &lines);
    assert_eq!(count_routes(&ns), n);
    el
}

fn report(name: &str, felix: Duration, ip: Duration) {
    let ratio = ip.as_secs_f64() / felix.as_secs_f64();
    println!(
        "{name:<28} felix-lite {:>9.1} ms   ip -batch {:>9.1} ms   speed ratio (ip/felix) {ratio:.2}x",
        felix.as_secs_f64() * 1e3,
        ip.as_secs_f64() * 1e3,
    );
}

fn main() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let started = Instant::now();
    // Best of 3 for the small case, one run for the big ones (runtime budget).
    let mut f10 = Duration::MAX;
    let mut i10 = Duration::MAX;
    for k in 0..3 {
        f10 = f10.min(felix_install(10_000, &format!("f10k{k}")));
        i10 = i10.min(ip_install(10_000, &format!("i10k{k}")));
    }
    report("install 10k routes", f10, i10);
    let f100 = felix_install(100_000, "f100k");
    let i100 = ip_install(100_000, "i100k");
    report("install 100k routes", f100, i100);
    let fc = felix_changes(100_000);
    let ic = ip_changes(100_000);
    report("1k changes on a 100k table", fc, ic);
    println!("baseline: ip -batch (iproute2); target ratio >= 0.80");
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());
}
