//! `manx-lab bench-failover`: how long a dead node's routes outlive it on
//! every other node, with BFD and — the baseline, in the same run — the
//! same failure found by the BGP hold timer alone (issue 20).
//!
//! Two labs are up at once, `<id>-fbfd` and `<id>-fhold`, each N nodes
//! (direct routes, one pod each, so every node holds a route to each other
//! node's block). Both replace the node-to-node mesh with one global
//! `BGPPeer` (`peerSelector: all()`) with the same short timers:
//! `keepaliveTime` (default 1 s, so hold time 3 s, the least Manx
//! negotiates) and `maxRestartTime: 0s` (no graceful-restart retention, so
//! the baseline is hold-timer expiry itself, not hold time + restart time);
//! the BFD lab's peer adds `bfd: {minRx, minTx, multiplier}`.
//!
//! A trial kills a node to the network: the switch port of its uplink (its
//! veth's end in the lab's hub) goes down, so its BFD and BGP packets stop
//! as when a node loses power or its cable. The clock runs from that `ip
//! link set down` until *every* other node has removed the victim's
//! routes, as each node's own netlink route listener
//! ([`super::route_watch`]) was told by its kernel. Then the port comes
//! back and the trial waits until every session (and BFD session) is up
//! again and every node has its routes back before the next trial. Trials
//! alternate between the labs (the order flips every trial) and the victim
//! rotates over the nodes, so load on the machine hits both alike.
//!
//! `flock /work/e2e.lock manx-lab --id bfdb bench-failover` (20 trials,
//! BFD 100 ms x 3), 2026-12-04, debug build on the shared 2-core machine
//! (load average 11-15 from other builds and tests; bench/README.md):
//!
//! ```text
//!   BFD         every peer: p50     290 ms  p99     358 ms  max     358 ms | per peer p50     275 ms p99     358 ms | recovery p50 6.2 s
//!   hold timer  every peer: p50    2752 ms  p99    3001 ms  max    3001 ms | per peer p50    2743 ms p99    3001 ms | recovery p50 1.6 s
//!   hold timer / BFD: p50 9.5x, p99 8.4x; BFD p99 < 1 s: met
//! ```
//!
//! At the default 300 ms x 3 (`--bfd-interval-ms 300`, load ~15) BFD p50
//! 870 / p99 1117 ms against the hold timer's 2640 / 2986 ms (3.0x / 2.7x):
//! the 1 s target is not met at the default timers.
//!
//! With 20 trials p99 is the largest sample. The hold-timer arm is the
//! best case without BFD (hold time 3 s, no restart time); with Calico's
//! defaults a silent node keeps its routes for hold time + restart time
//! (90 s + 120 s), while the BFD arm's times depend on neither.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ipnetwork::IpNetwork;

use super::route_watch::{LOOK_EVERY, RouteWatch};
use super::{LabSpec, LabState, Mode, percentile, progress};
use crate::netns::{Netns, wait_for};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FailoverSpec {
    pub trials: usize,
    pub nodes: usize,
    /// BFD minRx = minTx, ms.
    pub bfd_interval_ms: u32,
    pub bfd_multiplier: u8,
    /// BGPPeer keepaliveTime, s (hold time three times it, at least 3 s).
    pub keepalive_secs: u32,
}

/// One lab of the benchmark and its listeners.
struct Arm {
    label: &'static str,
    bfd: bool,
    state: LabState,
    watches: Vec<RouteWatch>,
    /// Per trial: until every other node removed the routes.
    all_gone: Vec<Duration>,
    /// Per trial and node: until that node removed them.
    per_node: Vec<Duration>,
    /// Per trial: port up -> every session (and BFD) and route back.
    recovery: Vec<Duration>,
}

fn peer_manifest(s: &FailoverSpec, bfd: bool) -> String {
    let mut m = format!(
        "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeToNodeMeshEnabled: false
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: bench-failover
spec:
  peerSelector: all()
  keepaliveTime: {}s
  maxRestartTime: 0s
",
        s.keepalive_secs
    );
    if bfd {
        m.push_str(&format!(
            "  bfd:\n    minRx: {0}ms\n    minTx: {0}ms\n    multiplier: {1}\n",
            s.bfd_interval_ms, s.bfd_multiplier
        ));
    }
    m
}

/// The columns of `manxctl node status`'s peer table: (state, type, BFD) per
/// peer row.
fn peer_rows(status: &str) -> Vec<(String, String, Option<String>)> {
    let mut header: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in status.lines() {
        let cells: Vec<String> = line
            .split('|')
            .map(|c| c.trim().to_string())
            .collect::<Vec<_>>();
        if cells.iter().any(|c| c == "PEER ADDRESS") {
            header = cells;
            continue;
        }
        if header.is_empty() || !line.starts_with("| ") {
            continue;
        }
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| cells.get(i).cloned())
        };
        if let (Some(state), Some(kind)) = (col("STATE"), col("PEER TYPE")) {
            rows.push((state, kind, col("BFD")));
        }
    }
    rows
}

/// Manx routes in `netns` via `gateway` (`ip -o route`: a multipath route
/// is one line).
fn routes_via(netns: &str, gateway: IpAddr) -> Result<Vec<IpNetwork>> {
    let out = Netns::adopt(netns).ip(&["-o", "route", "show", "proto", "77"])?;
    let via = format!("via {gateway} ");
    Ok(out
        .lines()
        .filter(|l| l.contains(&via))
        .filter_map(|l| {
            let dst = l.split_whitespace().next()?;
            if dst.contains('/') {
                dst.parse().ok()
            } else {
                format!("{dst}/32").parse().ok()
            }
        })
        .collect())
}

/// Every node has its N-1 sessions of the bench's peer up (and their BFD
/// with `bfd`) and a route via every other node.
fn converged(state: &LabState, bfd: bool) -> Result<Option<()>> {
    let n = state.nodes.len();
    for node in &state.nodes {
        let status = state.manxctl(node, &["node", "status"])?;
        let rows = peer_rows(&status);
        let good = rows.len() == n - 1
            && rows.iter().all(|(st, kind, b)| {
                st == "up" && kind == "global" && (!bfd || b.as_deref() == Some("up"))
            });
        if !good {
            bail!("{}: sessions not all up yet:\n{status}", node.name);
        }
        for other in state.nodes.iter().filter(|o| o.name != node.name) {
            if routes_via(&node.netns, other.ip.into())?.is_empty() {
                bail!("{}: no route via {} yet", node.name, other.name);
            }
        }
    }
    Ok(Some(()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The victim's uplink at the switch: its veth's end in the hub.
fn set_port(state: &LabState, victim: usize, up: bool) -> Result<()> {
    let hub = Netns::adopt(&format!("mxlab-{}-hub", state.spec.id));
    hub.ip(&[
        "link",
        "set",
        &format!("n{}", victim + 1),
        if up { "up" } else { "down" },
    ])?;
    Ok(())
}

/// One trial on one arm: node `victim` dies, until every other node
/// dropped its routes; then it comes back.
fn trial(arm: &mut Arm, victim: usize, timeout: Duration) -> Result<()> {
    let (gone, recovery) = kill_and_revive(arm, victim, timeout)?;
    let all = *gone.iter().max().unwrap();
    progress(format!(
        "bench-failover: {} node{} dead -> routes gone on every other node in {:.0} ms ({}); back in {:.1} s",
        arm.label,
        victim + 1,
        ms(all),
        gone.iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "),
        recovery.as_secs_f64()
    ));
    arm.per_node.extend(&gone);
    arm.all_gone.push(all);
    arm.recovery.push(recovery);
    Ok(())
}

/// The trial itself: (per other node, until it dropped the routes; port
/// up until converged again).
fn kill_and_revive(
    arm: &Arm,
    victim: usize,
    timeout: Duration,
) -> Result<(Vec<Duration>, Duration)> {
    let state = &arm.state;
    let gw: IpAddr = state.nodes[victim].ip.into();
    let mut expect: Vec<(usize, Vec<IpNetwork>)> = Vec::new();
    for (i, node) in state.nodes.iter().enumerate() {
        if i == victim {
            continue;
        }
        let dsts = routes_via(&node.netns, gw)?;
        if dsts.is_empty() {
            bail!("{}: no route via {} before the trial", node.name, gw);
        }
        expect.push((i, dsts));
    }
    let t0 = Instant::now();
    set_port(state, victim, false)?;
    let mut gone: Vec<Option<Duration>> = vec![None; expect.len()];
    let deadline = t0 + timeout;
    while gone.iter().any(Option::is_none) {
        for (k, (i, dsts)) in expect.iter().enumerate() {
            if gone[k].is_none()
                && let Some(at) = arm.watches[*i].lost_all(dsts, gw, t0)?
            {
                gone[k] = Some(at - t0);
            }
        }
        if Instant::now() > deadline {
            set_port(state, victim, true)?;
            bail!(
                "{} lab: node{}'s routes still on some node {timeout:?} after its port went down ({gone:?})",
                arm.label,
                victim + 1
            );
        }
        std::thread::sleep(LOOK_EVERY);
    }
    let back = Instant::now();
    set_port(state, victim, true)?;
    wait_for(
        &format!(
            "{} lab to converge again after node{}'s port came back",
            arm.label,
            victim + 1
        ),
        Duration::from_secs(120),
        || converged(state, arm.bfd),
    )?;
    Ok((gone.into_iter().flatten().collect(), back.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Run the benchmark; returns the report.
pub fn run_bench(id: &str, spec: &FailoverSpec) -> Result<String> {
    if spec.trials == 0 {
        bail!("--trials 0: nothing to measure");
    }
    if spec.nodes < 2 {
        bail!("--nodes {}: a failover needs at least 2 nodes", spec.nodes);
    }
    let hold = (spec.keepalive_secs * 3).max(3);
    let ids = [format!("{id}-fbfd"), format!("{id}-fhold")];
    let load_before = load_average();
    let res = (|| -> Result<String> {
        let mut arms: Vec<Arm> = Vec::new();
        for (lid, bfd) in ids.iter().zip([true, false]) {
            let mut s = LabSpec::new(lid, spec.nodes, Mode::Direct);
            s.pods_per_node = 1;
            progress(format!("bench-failover: bringing up {lid}"));
            let state = super::up(s)?;
            let manifest = state.dir.join("bench-failover.yaml");
            let text = peer_manifest(spec, bfd);
            std::fs::write(&manifest, &text)?;
            state
                .manxctl(
                    &state.nodes[0],
                    &["apply", "-f", &manifest.display().to_string()],
                )
                .context("applying the bench's BGPPeer")?;
            wait_for(
                &format!("{lid}: the bench's sessions up"),
                Duration::from_secs(120),
                || converged(&state, bfd),
            )?;
            let watches = state
                .nodes
                .iter()
                .map(|n| RouteWatch::start(&n.netns))
                .collect::<Result<Vec<_>>>()?;
            arms.push(Arm {
                label: if bfd { "BFD" } else { "hold timer" },
                bfd,
                state,
                watches,
                all_gone: Vec::new(),
                per_node: Vec::new(),
                recovery: Vec::new(),
            });
        }
        for t in 0..spec.trials {
            let victim = t % spec.nodes;
            let order = if t % 2 == 0 { [0, 1] } else { [1, 0] };
            for a in order {
                let timeout = Duration::from_secs(u64::from(hold) + 30);
                trial(&mut arms[a], victim, timeout)?;
            }
        }
        let mut out = format!(
            "bench-failover: {} nodes, {} trials per arm, interleaved; node death = its uplink's switch port down (veth in the hub); \
             time = port down -> every other node's kernel reported the node's routes removed (netlink listener per node)\n  \
             both arms: BGPPeer peerSelector all(), keepaliveTime {}s (hold time {hold} s), maxRestartTime 0s; \
             BFD arm: bfd minRx/minTx {} ms x {} (detection {} ms)\n  load average before: {load_before}, after: {}\n",
            spec.nodes,
            spec.trials,
            spec.keepalive_secs,
            spec.bfd_interval_ms,
            spec.bfd_multiplier,
            spec.bfd_interval_ms * u32::from(spec.bfd_multiplier),
            load_average()
        );
        let mut p = Vec::new();
        for arm in &mut arms {
            let (p50, p99, max) = (
                percentile(&mut arm.all_gone, 50.0),
                percentile(&mut arm.all_gone, 99.0),
                percentile(&mut arm.all_gone, 100.0),
            );
            let (n50, n99) = (
                percentile(&mut arm.per_node, 50.0),
                percentile(&mut arm.per_node, 99.0),
            );
            out += &format!(
                "  {:<10}  every peer: p50 {:7.0} ms  p99 {:7.0} ms  max {:7.0} ms | per peer p50 {:7.0} ms p99 {:7.0} ms | recovery p50 {:.1} s\n",
                arm.label,
                ms(p50),
                ms(p99),
                ms(max),
                ms(n50),
                ms(n99),
                percentile(&mut arm.recovery, 50.0).as_secs_f64()
            );
            p.push((p50, p99));
        }
        let ((b50, b99), (h50, h99)) = (p[0], p[1]);
        out += &format!(
            "  hold timer / BFD: p50 {:.1}x, p99 {:.1}x; BFD p99 < 1 s: {}\n",
            ms(h50) / ms(b50).max(0.001),
            ms(h99) / ms(b99).max(0.001),
            if b99 < Duration::from_secs(1) {
                "met"
            } else {
                "NOT met"
            }
        );
        Ok(out)
    })();
    for lid in &ids {
        let _ = super::down(lid);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_rows_reads_state_type_and_bfd_by_column() {
        let status = "\
+--------------+-----------+-------+-----+----------+-------------+
| PEER ADDRESS | PEER TYPE | STATE | BFD |  SINCE   |    INFO     |
+--------------+-----------+-------+-----+----------+-------------+
| 172.30.0.12  | global    | up    | up  | 21:30:01 | Established |
| 172.30.0.13  | global    | start | down| 21:30:02 | Connect     |
+--------------+-----------+-------+-----+----------+-------------+
";
        assert_eq!(
            peer_rows(status),
            vec![
                ("up".into(), "global".into(), Some("up".into())),
                ("start".into(), "global".into(), Some("down".into())),
            ]
        );
        let no_bfd = "\
| PEER ADDRESS | PEER TYPE | STATE |  SINCE   |    INFO     |
| 172.30.0.12  | global    | up    | 21:30:01 | Established |
";
        assert_eq!(
            peer_rows(no_bfd),
            vec![("up".into(), "global".into(), None)]
        );
    }

    #[test]
    fn the_bfd_arm_differs_from_the_baseline_only_by_bfd() {
        let s = FailoverSpec {
            trials: 1,
            nodes: 3,
            bfd_interval_ms: 100,
            bfd_multiplier: 3,
            keepalive_secs: 1,
        };
        let (with, without) = (peer_manifest(&s, true), peer_manifest(&s, false));
        assert!(with.starts_with(&without), "{with}");
        assert_eq!(
            &with[without.len()..],
            "  bfd:\n    minRx: 100ms\n    minTx: 100ms\n    multiplier: 3\n"
        );
        assert!(without.contains("keepaliveTime: 1s\n  maxRestartTime: 0s\n"));
    }
}
