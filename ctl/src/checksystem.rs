//! `manxctl node checksystem`: does this kernel and host have what Manx
//! needs? Probes run in a throwaway network namespace so they change nothing
//! on the host.

use std::process::{Command, Stdio};

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What does not work without it.
    pub breaks: &'static str,
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    match cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run {:?}: {e}", cmd.get_program())),
    }
}

/// A namespace that lives as long as the probe.
struct ProbeNs(String);

impl ProbeNs {
    fn new() -> Result<ProbeNs, String> {
        let name = format!("manx-checksystem-{}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(ProbeNs(name))
    }
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.0, "ip"])
                .args(args),
        )
    }
    fn exec(&self, prog: &str, args: &[&str]) -> Result<(), String> {
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.0, prog])
                .args(args),
        )
    }
}

impl Drop for ProbeNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{}", path.replace('.', "/")))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Run every probe.
pub fn checksystem() -> Vec<Check> {
    let mut checks = Vec::new();
    let ns = ProbeNs::new();
    let probe =
        |name: &'static str, breaks: &'static str, f: &dyn Fn(&ProbeNs) -> Result<(), String>| {
            match &ns {
                Ok(ns) => match f(ns) {
                    Ok(()) => Check {
                        name,
                        ok: true,
                        detail: "supported".into(),
                        breaks,
                    },
                    Err(e) => Check {
                        name,
                        ok: false,
                        detail: e,
                        breaks,
                    },
                },
                Err(e) => Check {
                    name,
                    ok: false,
                    detail: format!("cannot create a probe namespace (root needed?): {e}"),
                    breaks,
                },
            }
        };
    checks.push(probe(
        "netns+veth",
        "pods: the CNI plugin wires pods with veth pairs",
        &|ns| {
            ns.ip(&[
                "link", "add", "mxp0", "type", "veth", "peer", "name", "mxp1",
            ])
        },
    ));
    checks.push(probe(
        "ipip (CONFIG_NET_IPIP)",
        "IP pools with ipipMode Always/CrossSubnet (tunl0); use vxlanMode instead",
        &|ns| {
            ns.ip(&[
                "link",
                "add",
                "mxt0",
                "type",
                "ipip",
                "local",
                "198.51.100.1",
            ])
        },
    ));
    checks.push(probe(
        "vxlan (CONFIG_VXLAN)",
        "IP pools with vxlanMode Always/CrossSubnet (vxlan.manx)",
        &|ns| {
            ns.ip(&[
                "link",
                "add",
                "mxv0",
                "type",
                "vxlan",
                "id",
                "4096",
                "dstport",
                "4789",
                "nolearning",
            ])
        },
    ));
    checks.push(probe(
        "tun (CONFIG_TUN, /dev/net/tun)",
        "IP pools with udpMode Always/CrossSubnet (udp.manx, Flannel's UDP backend)",
        // The device the UDP backend uses: a multi-queue TUN.
        &|ns| ns.ip(&["tuntap", "add", "dev", "mxu0", "mode", "tun", "multi_queue"]),
    ));
    checks.push(probe(
        "wireguard (CONFIG_WIREGUARD)",
        "FelixConfiguration wireguardEnabled (wireguard.manx): pod traffic between nodes \
         stays unencrypted in the pools' own encapsulation",
        &|ns| ns.ip(&["link", "add", "mxw0", "type", "wireguard"]),
    ));
    checks.push(probe(
        "nftables (nft)",
        "natOutgoing on IP pools (masquerade in table ip manx)",
        &|ns| ns.exec("nft", &["add", "table", "ip", "manxprobe"]),
    ));
    drop(ns);
    for (key, want, breaks) in [
        (
            "net.ipv4.ip_forward",
            "1",
            "forwarding between pods and nodes (manx-node sets it in its namespace)",
        ),
        (
            "net.ipv6.conf.all.forwarding",
            "1",
            "IPv6 pod traffic (manx-node sets it when an IPv6 pool exists)",
        ),
    ] {
        let (ok, detail) = match read_sysctl(key) {
            Some(v) if v == want => (true, format!("{key} = {v}")),
            Some(v) => (false, format!("{key} = {v} (manx-node will set {want})")),
            None => (false, format!("{key} not readable")),
        };
        checks.push(Check {
            name: "sysctl",
            ok,
            detail,
            breaks,
        });
    }
    checks
}

/// Render like calicoctl's checksystem report, plus a summary line.
pub fn render(checks: &[Check]) -> String {
    let mut t = crate::table::Table::new(&["CHECK", "STATUS", "DETAIL", "WITHOUT IT"]);
    for c in checks {
        t.push(vec![
            c.name.to_string(),
            if c.ok { "OK".into() } else { "MISSING".into() },
            c.detail.clone(),
            if c.ok {
                String::new()
            } else {
                c.breaks.to_string()
            },
        ]);
    }
    let missing = checks.iter().filter(|c| !c.ok).count();
    let mut out = t.render();
    if missing == 0 {
        out.push_str("System meets Manx's requirements.\n");
    } else {
        out.push_str(&format!(
            "{missing} check(s) failed: see WITHOUT IT for what breaks.\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WireGuard probe runs in its throwaway namespace: on this build kernel (no
    /// WireGuard) it is MISSING with the kernel's reason and says what breaks; on one with
    /// WireGuard it is OK. Either way no probe namespace is left behind.
    #[test]
    fn checksystem_reports_wireguard() {
        if !nix_is_root() {
            eprintln!("skipped: checksystem probes need root (ip netns add)");
            return;
        }
        let checks = checksystem();
        let wg = checks
            .iter()
            .find(|c| c.name.starts_with("wireguard"))
            .expect("a wireguard check");
        if !wg.ok {
            assert!(!wg.detail.is_empty());
            let out = render(&checks);
            assert!(out.contains("wireguardEnabled"), "{out}");
        }
        let ours = format!("/run/netns/manx-checksystem-{}", std::process::id());
        assert!(
            !std::path::Path::new(&ours).exists(),
            "{ours} was left behind"
        );
    }

    fn nix_is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }
}
