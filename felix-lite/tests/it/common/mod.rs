//! Real-kernel test helpers: namespaces named `mxfx-<pid>-<n>`, addresses in 198.19.0.0/16
//! and fd42:19::/48, pods in 10.19.0.0/16, everything inside our own namespaces.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use felix::nat::NftCli;
use felix::netns::{NetnsGuard, block_on_in};
use felix::sysctl::ProcSysctl;
use felix::{Dataplane, DataplaneConfig, DataplaneInput, RealNetlink, SystemClock};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique namespace name.
pub fn ns_name() -> String {
    format!(
        "mxfx-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Whether real-kernel tests can run; prints why not. Under CI=true a missing prerequisite
/// is a failure.
pub fn kernel_ok(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for t in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            missing.push(t.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("skipping real-kernel test: missing {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true)");
    }
    eprintln!("{msg}");
    false
}

/// A fresh namespace.
pub fn netns() -> NetnsGuard {
    NetnsGuard::new(&ns_name()).expect("creating a network namespace")
}

/// Connect `a` and `b` with a veth pair named `ifa` in `a` and `ifb` in `b`, both up.
pub fn veth(a: &NetnsGuard, ifa: &str, b: &NetnsGuard, ifb: &str) {
    a.ip(&[
        "link",
        "add",
        ifa,
        "type",
        "veth",
        "peer",
        "name",
        ifb,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", ifa, "up"]);
    b.ip(&["link", "set", ifb, "up"]);
}

/// A pod namespace behind `node`: host side `cali`, pod `eth0` with `ip/32` and Calico's
/// `default via 169.254.1.1`.
pub fn pod(node: &NetnsGuard, cali: &str, ip: &str) -> NetnsGuard {
    let p = netns();
    veth(node, cali, &p, "eth0");
    p.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    p.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    p.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    p
}

/// Apply inputs in order with one Dataplane (one process lifetime) inside `ns`; returns the
/// reports.
pub fn run_dataplane(
    ns: &NetnsGuard,
    cfg: DataplaneConfig,
    inputs: Vec<DataplaneInput>,
) -> Vec<felix::dataplane::ApplyReport> {
    block_on_in(ns.name(), move || async move {
        let nl = RealNetlink::new().expect("netlink socket");
        let mut dp = Dataplane::new(
            nl,
            ProcSysctl::default(),
            NftCli::default(),
            SystemClock,
            cfg,
        );
        let mut out = Vec::new();
        for i in inputs {
            out.push(dp.apply(&i).await.expect("dataplane apply"));
        }
        out
    })
    .expect("entering the namespace")
}

/// Ping once from `ns`; true on a reply.
pub fn ping(ns: &NetnsGuard, dst: &str) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            dst,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
