//! Real-kernel test helpers over `testkit`: namespaces named `mxfx-<pid>-<n>`, addresses in
//! 198.19.0.0/16 and fd42:19::/48, pods in 10.19.0.0/16, everything inside our own
//! namespaces.

#![allow(dead_code)]

use felix::nat::NftCli;
use felix::sysctl::ProcSysctl;
use felix::{Dataplane, DataplaneConfig, DataplaneInput, RealNetlink, SystemClock};
pub use testkit::netns::veth;
pub use testkit::{Netns, Prereqs};

/// A fresh namespace.
pub fn netns() -> Netns {
    Netns::new("mxfx")
}

/// A pod namespace behind `node`: host side `cali`, pod `eth0` with `ip/32` and Calico's
/// `default via 169.254.1.1`.
pub fn pod(node: &Netns, cali: &str, ip: &str) -> Netns {
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
    ns: &Netns,
    cfg: DataplaneConfig,
    inputs: Vec<DataplaneInput>,
) -> Vec<felix::dataplane::ApplyReport> {
    ns.block_on(move || async move {
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
}

/// Ping once from `ns`; true on a reply.
pub fn ping(ns: &Netns, dst: &str) -> bool {
    ns.command("ping")
        .args(["-c", "1", "-W", "2", dst])
        .output()
        .is_ok_and(|o| o.status.success())
}
