//! `manx-lab bench-encap`: pod-to-pod TCP throughput (iperf3) and the p99 round trip of a
//! ping flood between pods on two lab nodes, for each encapsulation, in the same run.
//! The baselines are VXLAN (the kernel's tunnel) and direct routes (no tunnel): one
//! 2-node lab per mode, all up at once, and the rounds interleave the modes (the order
//! rotates every round) so load on the machine hits every mode alike.
//!
//! `manx-lab --id benc bench-encap --rounds 3 --secs 4 --pings 1000`, 2026-12-04, debug
//! build on the shared 2-core machine (load ~13), UDP GSO/GRO on (bench/README.md):
//!
//! ```text
//!   Direct  throughput median    10345 Mbit/s   ping p50 0.017 ms  p99 0.045 ms  lost 0/3000
//!   Vxlan   throughput median     9560 Mbit/s   ping p50 0.026 ms  p99 0.057 ms  lost 0/3000
//!   Udp     throughput median      894 Mbit/s   ping p50 0.077 ms  p99 0.164 ms  lost 0/3000
//!   UDP / VXLAN: throughput 0.09x (target >= 0.5x: NOT met), ping p99 2.88x
//!   Udp / Direct: throughput 0.09x, ping p99 3.64x
//!   Vxlan / Direct: throughput 0.92x, ping p99 1.27x
//! ```

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{LabSpec, LabState, Mode};
use crate::netns::{Netns, run};

/// One mode's samples.
#[derive(Debug, Default)]
struct Samples {
    /// Receiver-side TCP throughput of each round, bits/s.
    bps: Vec<f64>,
    /// Every ping round trip, ms.
    rtt: Vec<f64>,
    /// Pings sent and lost.
    sent: usize,
    lost: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// iperf3 from pod 0 to pod 1 for `secs`: receiver bits/s.
fn iperf(state: &LabState, secs: u32) -> Result<f64> {
    let (src, dst) = (&state.pods[0], &state.pods[1]);
    let server = Netns::adopt(&dst.netns)
        .command("iperf3")
        .args(["-s", "-1", "-p", "5299"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 -s")?;
    let mut server = scopeguard(server);
    std::thread::sleep(Duration::from_millis(300));
    let out = run(Netns::adopt(&src.netns).command("iperf3").args([
        "-c",
        &dst.ip,
        "-p",
        "5299",
        "-t",
        &secs.to_string(),
        "-J",
    ]))?;
    let _ = server.0.wait();
    server.1 = true;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's output")
}

/// A child killed on drop unless marked done.
struct Guard(std::process::Child, bool);
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c, false)
}
impl Drop for Guard {
    fn drop(&mut self) {
        if !self.1 {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `count` pings 1 ms apart from pod 0 to pod 1: the round trips (ms) and the lost count.
fn ping_flood(state: &LabState, count: usize) -> Result<(Vec<f64>, usize)> {
    let (src, dst) = (&state.pods[0], &state.pods[1]);
    let out = Netns::adopt(&src.netns)
        .command("ping")
        .args([
            "-n",
            "-i",
            "0.001",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            &dst.ip,
        ])
        .output()
        .context("ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rtt: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let lost = count.saturating_sub(rtt.len());
    Ok((rtt, lost))
}

/// Run the benchmark; returns the report.
pub fn run_bench(
    id: &str,
    modes: &[Mode],
    rounds: usize,
    secs: u32,
    pings: usize,
) -> Result<String> {
    if modes.is_empty() || rounds == 0 {
        bail!("nothing to measure: give at least one mode and one round");
    }
    let mut labs: Vec<(Mode, LabState)> = Vec::new();
    let ids: Vec<String> = modes
        .iter()
        .map(|m| format!("{id}-{}", format!("{m:?}").to_lowercase()))
        .collect();
    let res = (|| -> Result<String> {
        for (m, lid) in modes.iter().zip(&ids) {
            let mut spec = LabSpec::new(lid, 2, *m);
            spec.pods_per_node = 1;
            super::progress(format!("bench-encap: bringing up {lid} ({m:?})"));
            labs.push((*m, super::up(spec)?));
        }
        let mut samples: Vec<Samples> = modes.iter().map(|_| Samples::default()).collect();
        // Warm-up: one short run each, not counted.
        for (_, s) in &labs {
            iperf(s, 1)?;
        }
        for r in 0..rounds {
            for k in 0..labs.len() {
                let i = (k + r) % labs.len();
                let (m, s) = &labs[i];
                let bps = iperf(s, secs)?;
                let (rtt, lost) = ping_flood(s, pings)?;
                super::progress(format!(
                    "bench-encap: round {r} {m:?}: {:.0} Mbit/s, ping p99 {:.3} ms, {lost} lost",
                    bps / 1e6,
                    pct(&mut rtt.clone(), 99.0)
                ));
                let x = &mut samples[i];
                x.bps.push(bps);
                x.rtt.extend(rtt);
                x.sent += pings;
                x.lost += lost;
            }
        }
        let mut out = format!(
            "bench-encap: 2 nodes, pod to pod, {rounds} interleaved rounds per mode; iperf3 TCP {secs} s (receiver), then {pings} pings 1 ms apart\n"
        );
        let mut summary = Vec::new();
        for (i, (m, _)) in labs.iter().enumerate() {
            let x = &mut samples[i];
            let (tput, p50, p99) = (
                median(&mut x.bps),
                pct(&mut x.rtt, 50.0),
                pct(&mut x.rtt, 99.0),
            );
            out += &format!(
                "  {:<7} throughput median {:8.0} Mbit/s   ping p50 {:.3} ms  p99 {:.3} ms  lost {}/{}\n",
                format!("{m:?}"),
                tput / 1e6,
                p50,
                p99,
                x.lost,
                x.sent
            );
            summary.push((*m, tput, p99));
        }
        let get = |m: Mode| summary.iter().find(|s| s.0 == m).copied();
        if let (Some(u), Some(v)) = (get(Mode::Udp), get(Mode::Vxlan)) {
            let ratio = u.1 / v.1.max(1.0);
            out += &format!(
                "  UDP / VXLAN: throughput {ratio:.2}x (target >= 0.5x: {}), ping p99 {:.2}x\n",
                if ratio >= 0.5 { "met" } else { "NOT met" },
                u.2 / v.2.max(1e-6)
            );
        }
        for m in [Mode::Udp, Mode::Vxlan] {
            if let (Some(a), Some(d)) = (get(m), get(Mode::Direct)) {
                out += &format!(
                    "  {m:?} / Direct: throughput {:.2}x, ping p99 {:.2}x\n",
                    a.1 / d.1.max(1.0),
                    a.2 / d.2.max(1e-6)
                );
            }
        }
        Ok(out)
    })();
    for lid in &ids {
        let _ = super::down(lid);
    }
    res
}
