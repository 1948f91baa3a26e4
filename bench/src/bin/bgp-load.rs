//! `bgp-load`: BGP route-reflector load test, Manx vs BIRD, plus a full
//! mesh of in-process Manx speakers. See bench/README.md.
//!
//! K iBGP clients (distinct 127.1.x.y source addresses) connect to a route
//! reflector on 127.0.0.1, each announces P /26s; we time until every
//! client holds all K×P routes (its own P plus (K−1)×P reflected) and read
//! the reflector's peak RSS (VmHWM).
//!
//! # Measured (2 cores, release build, same run for both reflectors)
//!
//! K=1000, P=4 (`bgp-load`, defaults), 2026-11-22:
//!
//! | reflector | converged | peak RSS  |
//! |-----------|-----------|-----------|
//! | manx-bgpd | 3.943 s   | 21.0 MiB  |
//! | bird2     | 543.154 s | 27.5 MiB  |
//!
//! Ratio BIRD / manx: convergence 137.74×, peak RSS 1.31× (> 1: manx is
//! better). Manx alone over repeated runs: 17.8–21 MiB, 2.4–4.4 s (the
//! peak depends on how much output is queued at once). Full mesh of 100
//! in-process speakers: 1.584 s.
//!
//! Before (same machine, K=1000, P=4): manx 75.8 MiB, 5.9 s; bird2
//! 27.6 MiB, 356 s. What took the memory and what changed (bgpd):
//! per-session 16 KiB read chunk + 16 KiB read buffer + a write buffer
//! that grew to the largest batch and stayed (≈ 70 KiB × 1000 sessions):
//! now one read scratch buffer per worker thread and queued `Bytes`
//! written as they are (`session/conn.rs`); every session's initial table
//! was built as ~1000 `Update` values queued per peer: now encoded once per
//! update group and shared (`speaker/table.rs`); one export per received
//! UPDATE (K × K queued messages): now one per burst of session events.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::{PeerConfig, RouteFeed, RouteUpdate, Speaker, SpeakerConfig, config::ListenConfig};
use clap::Parser;
use manx_bench::bgp_client::{ASN, client_addr, prefix, run_client};
use manx_bench::reflector::{self, RrSetup};

#[derive(Debug, Parser)]
#[command(about = "BGP route-reflector load test: manx-bgpd vs BIRD, and a Manx full mesh")]
struct Args {
    /// Route-reflector clients.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// /26 prefixes announced by each client.
    #[arg(long, default_value_t = 4)]
    prefixes: u32,
    /// TCP port of the reflector under test.
    #[arg(long, default_value_t = 17900)]
    port: u16,
    /// manx-bgpd binary (default: next to this one).
    #[arg(long)]
    manx: Option<PathBuf>,
    /// BIRD 2 binary (the baseline).
    #[arg(long, default_value = "/usr/sbin/bird")]
    bird: PathBuf,
    /// Skip the BIRD baseline.
    #[arg(long)]
    no_bird: bool,
    /// Speakers in the in-process full mesh (0: skip).
    #[arg(long, default_value_t = 100)]
    mesh: u32,
    /// Give up after this many seconds per run.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// One reflector run.
#[derive(Debug)]
struct RrResult {
    converge: Duration,
    peak_rss_kib: u64,
}

fn setup(args: &Args) -> RrSetup {
    RrSetup {
        port: args.port,
        clients: (0..args.clients).map(client_addr).collect(),
        hold_time: 240,
    }
}

async fn run_rr(name: &str, cmd: Command, args: &Args) -> anyhow::Result<RrResult> {
    let rr = setup(args).addr();
    let guard = reflector::start(name, cmd, rr).await?;
    let pid = guard.0.id();
    let total = (args.clients * args.prefixes) as usize;
    let own = args.prefixes as usize;
    let timeout = Duration::from_secs(args.timeout);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let prefixes = (0..args.prefixes)
                .map(|j| prefix(i * args.prefixes + j))
                .collect();
            tokio::spawn(run_client(
                client_addr(i),
                rr,
                prefixes,
                total - own,
                timeout,
            ))
        })
        .collect();
    let mut last = start;
    let mut sessions = Vec::new();
    for t in tasks {
        let r = t.await??;
        last = last.max(r.done);
        sessions.push(r.session);
    }
    let converge = last - start;
    let peak_rss_kib = reflector::peak_rss_kib(pid)?;
    drop(sessions);
    drop(guard);
    println!(
        "{name:>10}: {} clients × {} prefixes: converged in {:.3} s, peak RSS {:.1} MiB",
        args.clients,
        args.prefixes,
        converge.as_secs_f64(),
        peak_rss_kib as f64 / 1024.0
    );
    Ok(RrResult {
        converge,
        peak_rss_kib,
    })
}

/// N in-process speakers in full mesh on 127.0.1.x, one /26 each; time
/// until every speaker has learnt every other's prefix.
async fn run_mesh(n: u32, port: u16) -> anyhow::Result<Duration> {
    let addr = |i: u32| Ipv4Addr::new(127, 0, 1, (i + 1) as u8);
    if n > 250 {
        bail!("--mesh is at most 250 (127.0.1.1 – 127.0.1.250)");
    }
    let start = Instant::now();
    let mut speakers = Vec::new();
    let mut feeds = Vec::new();
    for i in 0..n {
        let mut cfg = SpeakerConfig::new(ASN, addr(i));
        cfg.listen = Some(ListenConfig {
            address: IpAddr::V4(addr(i)),
            port,
        });
        cfg.connect_retry_time = 1;
        cfg.networks = vec![prefix(100_000 + i)];
        cfg.peers = (0..n)
            .filter(|j| *j != i)
            .map(|j| {
                let mut p = PeerConfig::new(IpAddr::V4(addr(j)), ASN);
                p.port = port;
                p.source_address = Some(IpAddr::V4(addr(i)));
                // Only the lower address dials (as cluster.rs does).
                p.passive = j < i;
                p
            })
            .collect();
        // Only the final state matters: changes collapsed per prefix.
        let feed = RouteFeed::new();
        speakers.push(Speaker::start_with_feed(cfg, feed.clone()).context("start a mesh speaker")?);
        feeds.push(feed);
    }
    let want = (n - 1) as usize;
    let waits: Vec<_> = feeds
        .into_iter()
        .map(|feed| {
            tokio::spawn(async move {
                let mut have = std::collections::HashSet::new();
                while have.len() < want {
                    for u in feed.recv().await {
                        match u {
                            RouteUpdate::Add { prefix, .. } => {
                                have.insert(prefix);
                            }
                            RouteUpdate::Remove { prefix } => {
                                have.remove(&prefix);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in waits {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .context("a mesh speaker did not converge within 120 s")??;
    }
    let took = start.elapsed();
    for s in speakers {
        s.shutdown("bench done").await;
    }
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = manx_bench::rlimit::raise_nofile().context("raise RLIMIT_NOFILE")?;
    if u64::from(args.clients) * 2 + 64 > limit {
        bail!(
            "open-file limit {limit} is too low for {} clients; raise the hard limit (ulimit -Hn)",
            args.clients
        );
    }
    let dir = reflector::work_dir("bgp-load")?;
    let manx = reflector::manx_binary(args.manx.as_deref())?;
    let cmd = reflector::manx_command(&manx, &setup(&args), &dir)?;
    let ours = run_rr("manx-bgpd", cmd, &args).await?;
    let bird = if args.no_bird {
        None
    } else if !args.bird.exists() {
        println!("BIRD baseline skipped: {} not found", args.bird.display());
        None
    } else {
        let cmd = reflector::bird_command(&args.bird, &setup(&args), &dir)?;
        Some(run_rr("bird2", cmd, &args).await?)
    };
    if let Some(b) = &bird {
        println!(
            "ratio (BIRD / manx): convergence {:.2}×, peak RSS {:.2}× (> 1 means manx is better)",
            b.converge.as_secs_f64() / ours.converge.as_secs_f64(),
            b.peak_rss_kib as f64 / ours.peak_rss_kib as f64
        );
    }
    if args.mesh > 1 {
        let took = run_mesh(args.mesh, args.port + 1).await?;
        println!(
            "full mesh: {} in-process manx speakers converged in {:.3} s",
            args.mesh,
            took.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
