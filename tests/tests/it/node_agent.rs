//! manx-node in a namespace on the embedded store: registers its Node,
//! programs its blackhole and tunnel, answers /readyz, `manxctl node status`
//! shows its peers, and /metrics is valid Prometheus text whose counters
//! move as pods and peers come.

use std::collections::BTreeMap;

use crate::common::{Lab, require};
use manx_e2e::lab::{self, LabState, Mode};
use manx_e2e::netns::Netns;

/// GET `path` from the node's health listener, from inside its namespace.
fn http_get(state: &LabState, node: usize, path: &str) -> String {
    let n = &state.nodes[node];
    let script = format!(
        "exec 3<>/dev/tcp/{}/9099; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        n.ip
    );
    let out = Netns::adopt(&n.netns)
        .command("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parse the Prometheus text exposition format strictly: every line is a
/// comment (`# HELP name text`, `# TYPE name counter|gauge|...`) or a
/// sample `name{label="value",...} number`. Returns samples by full name.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.splitn(3, ' ');
            let (kw, name) = (w.next().unwrap(), w.next().expect("metric name"));
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            if kw == "TYPE" {
                let t = w.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
                typed.insert(name.to_string());
            } else {
                assert_eq!(kw, "HELP", "{line}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(!k.is_empty() && v.starts_with('"'), "{line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn node_registers_programs_reports_and_exports_metrics() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2enode", 2, Mode::Vxlan);
    spec.pods_per_node = 0;
    let mut lab = Lab::up(spec);
    let n1 = lab.0.nodes[0].clone();
    // Registered Node with its address, VXLAN tunnel address and MAC.
    let node = lab
        .0
        .manxctl(&n1, &["get", "node", "node1", "-o", "yaml"])
        .unwrap();
    assert!(node.contains("ipv4Address: 172.30.0.11/24"), "{node}");
    assert!(node.contains("ipv4VXLANTunnelAddr: 10.65."), "{node}");
    assert!(node.contains("vxlanTunnelMACAddr:"), "{node}");
    // Readiness and the peer table.
    assert!(
        http_get(&lab.0, 0, "/readyz").starts_with("HTTP/1.1 200"),
        "readyz"
    );
    assert!(
        http_get(&lab.0, 0, "/livez").starts_with("HTTP/1.1 200"),
        "livez"
    );
    let status = lab.0.manxctl(&n1, &["node", "status"]).unwrap();
    assert!(
        status.contains("| 172.30.0.12") && status.contains("node-to-node mesh"),
        "{status}"
    );
    assert!(status.contains("Established"), "{status}");
    // The tunnel device carries the tunnel address.
    let ns = Netns::adopt(&n1.netns);
    let link = ns.ip(&["-d", "addr", "show", "vxlan.manx"]).unwrap();
    assert!(
        link.contains("vxlan id 4096") && link.contains("inet 10.65."),
        "{link}"
    );

    let body = |t: String| t.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    let before = parse_prometheus(&body(http_get(&lab.0, 0, "/metrics")));
    assert_eq!(
        before.get("manx_bgp_sessions{state=\"Established\"}"),
        Some(&1.0),
        "{before:?}"
    );
    let events_before = before["manx_datastore_events_total"];
    for p in 0..3 {
        lab::add_pod(&mut lab.0, &n1, 50 + p).unwrap();
    }
    lab.assert_all_ping();
    // A new (unreachable) global peer: one more session in the gauge.
    let manifest = lab.0.dir.join("peer.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 172.30.0.99\n  asNumber: 64512\n",
    )
    .unwrap();
    lab.0
        .manxctl(&n1, &["apply", "-f", &manifest.display().to_string()])
        .unwrap();
    let sessions = |m: &BTreeMap<String, f64>| {
        m.iter()
            .filter(|(k, _)| k.starts_with("manx_bgp_sessions{"))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    manx_e2e::netns::wait_for(
        "the new peer in the metrics",
        std::time::Duration::from_secs(10),
        || {
            let m = parse_prometheus(&body(http_get(&lab.0, 0, "/metrics")));
            Ok((sessions(&m) == 2.0).then_some(()))
        },
    )
    .unwrap();
    let after = parse_prometheus(&body(http_get(&lab.0, 0, "/metrics")));
    assert_eq!(after["manx_local_workloads"], 3.0, "{after:?}");
    assert!(
        after["manx_datastore_events_total"] > events_before,
        "{after:?}"
    );
    assert!(
        after["manx_dataplane_reconcile_runs_total"] >= 2.0,
        "{after:?}"
    );
    assert_eq!(
        after.get("manx_routes_programmed{kind=\"workload\"}"),
        Some(&3.0),
        "{after:?}"
    );
}

/// One request over manx-node's bgpd control socket, as the control clients
/// send it (one JSON line out, one JSON line back).
fn bgp_control(sock: &std::path::Path, request: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// The peer addresses in a `{"cmd":"peers"}` answer that says ok.
fn control_peers(sock: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let resp = bgp_control(sock, r#"{"cmd":"peers"}"#)?;
    anyhow::ensure!(resp["ok"] == true, "not ok: {resp}");
    Ok(resp["peers"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no peers in {resp}"))?
        .iter()
        .map(|p| p["address"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[test]
fn node_serves_the_bgpd_control_socket_for_its_running_speaker() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2ebgpsock", 2, Mode::Vxlan);
    spec.pods_per_node = 0;
    let lab = Lab::up(spec);
    let n1 = lab.0.nodes[0].clone();
    let sock = n1.run_dir.join("bgp.sock");
    let established = |what: &str| {
        manx_e2e::netns::wait_for(what, std::time::Duration::from_secs(30), || {
            let resp = bgp_control(&sock, r#"{"cmd":"peers"}"#)?;
            anyhow::ensure!(resp["ok"] == true, "not ok: {resp}");
            let up = resp["peers"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["address"] == "172.30.0.12" && p["state"] == "Established")
            });
            anyhow::ensure!(up, "node2 not Established: {resp}");
            Ok(Some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", lab::tail_logs(&lab.0)))
    };
    established("node2 Established over bgp.sock").unwrap();
    assert_eq!(control_peers(&sock).unwrap(), vec!["172.30.0.12"]);
    let routes = bgp_control(&sock, r#"{"cmd":"routes"}"#).unwrap();
    assert_eq!(routes["ok"], true, "{routes}");
    assert!(
        routes["routes"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["source"]["kind"] == "local")),
        "node1 originates its tunnel block: {routes}"
    );

    // A route-reflector cluster id restarts the speaker: the socket must
    // answer from the new one (the stopped one says "speaker stopped"),
    // which node1 gave its block again.
    lab.0
        .manxctl(
            &n1,
            &[
                "patch",
                "node",
                "node1",
                "-p",
                r#"{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.9"}}}"#,
            ],
        )
        .unwrap();
    let log = n1.run_dir.join("manx-node.log");
    manx_e2e::netns::wait_for(
        "the second speaker in the log",
        std::time::Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&log)?;
            Ok((text.contains("restarting the BGP speaker")
                && text.matches("BGP speaker started").count() >= 2)
                .then_some(()))
        },
    )
    .unwrap();
    manx_e2e::netns::wait_for(
        "bgp.sock answering from the restarted speaker",
        std::time::Duration::from_secs(10),
        || {
            let resp = bgp_control(&sock, r#"{"cmd":"routes"}"#)?;
            anyhow::ensure!(resp["ok"] == true, "not ok: {resp}");
            let local = resp["routes"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["source"]["kind"] == "local"));
            anyhow::ensure!(local, "no local route: {resp}");
            Ok(Some(()))
        },
    )
    .unwrap();

    // SIGTERM: manx-node exits and takes the socket file with it.
    let pid = n1.pid.expect("node1 runs manx-node") as i32;
    manx_e2e::netns::signal(pid, libc::SIGTERM);
    // (The lab does not reap it: gone or a zombie both mean it exited.)
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    };
    manx_e2e::netns::wait_for(
        "manx-node to exit",
        std::time::Duration::from_secs(20),
        || Ok(exited().then_some(())),
    )
    .unwrap();
    assert!(!sock.exists(), "{} left behind", sock.display());
}
