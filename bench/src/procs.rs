//! What `bgp-load` watches of a daemon while it measures: the process tree
//! (OpenBGPD runs three processes), its peak RSS and CPU time summed over
//! the tree, the backlog its listening socket was given (`ss -ltn` prints
//! it as Send-Q), and the kernel's listen-queue overflow counters, so a
//! baseline starved by its own backlog shows in the output instead of
//! passing for a slow daemon.

use std::process::Command;

use anyhow::Context;

use crate::reflector::{cpu_seconds, peak_rss_kib, rss_kib};

/// `pid` and every descendant, from `/proc/*/stat` parent links.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parents.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Sum of the tree's peak RSS (`VmHWM`), KiB (an upper bound of the
/// tree's peak: the processes may peak at different moments).
pub fn tree_peak_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| peak_rss_kib(p).ok())
        .sum()
}

/// Sum of the tree's current RSS, KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().filter_map(|p| rss_kib(p).ok()).sum()
}

/// CPU seconds used so far by the tree's live processes.
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| cpu_seconds(p).ok())
        .sum()
}

/// The backlog of the socket listening on TCP `port` (Send-Q of `ss -ltn`).
pub fn listen_backlog(port: u16) -> anyhow::Result<u32> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .context("run ss")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "LISTEN 0 8 127.0.0.1:17900 0.0.0.0:*"
    text.lines()
        .find_map(|l| l.split_whitespace().nth(2).and_then(|s| s.parse().ok()))
        .with_context(|| format!("no listening socket on port {port} in `ss -ltn`"))
}

/// The kernel's `TcpExt: ListenOverflows` and `ListenDrops` (this network
/// namespace, all sockets).
pub fn listen_overflows() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat")?;
    let mut lines = text.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if !h.starts_with("TcpExt:") {
            continue;
        }
        let names: Vec<&str> = h.split_whitespace().collect();
        let vals: Vec<&str> = v.split_whitespace().collect();
        let get = |n: &str| -> u64 {
            names
                .iter()
                .position(|x| *x == n)
                .and_then(|i| vals.get(i))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        return Ok((get("ListenOverflows"), get("ListenDrops")));
    }
    anyhow::bail!("no TcpExt line in /proc/net/netstat")
}

/// Proportional set size of the tree, KiB (`Pss` of
/// `/proc/<pid>/smaps_rollup`: pages shared by OpenBGPD's forked
/// processes count once in all, where summing their RSS counts them in
/// each).
pub fn tree_pss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}
