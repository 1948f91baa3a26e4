//! `rr-slow-peer`: a route reflector with one rr client that stops reading
//! while another churns, manx-bgpd vs BIRD 2 in the same run. See
//! bench/README.md.
//!
//! Three iBGP rr clients on loopback connect to the reflector on
//! 127.0.0.1: A (127.0.3.1) establishes and then never reads again (its
//! TCP window closes) but keeps sending KEEPALIVEs; B (127.0.3.2) announces
//! and withdraws `--prefixes` /26s, round after round, as fast as TCP takes
//! them, for `--duration` seconds; C (127.0.3.3) reads everything. The
//! reflector's RSS is sampled; its peak RSS (VmHWM) is printed when the
//! sessions are up (before the churn) and at the end, with the fate of
//! each session.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bgpd::packet::Message;
use clap::Parser;
use manx_bench::bgp_client::{announcement, prefix};
use manx_bench::reflector::{self, RrSetup, cpu_seconds, open_fds, peak_rss_kib, rss_kib};
use manx_bench::sim_peer::{self, SimPeer};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Parser)]
#[command(
    about = "A reflector with a client that stops reading while another churns: manx-bgpd vs BIRD"
)]
struct Args {
    /// Seconds of churn.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// /26 prefixes announced then withdrawn by the churning client, per round.
    #[arg(long, default_value_t = 5000)]
    prefixes: u32,
    /// RSS samples printed during the churn.
    #[arg(long, default_value_t = 6)]
    samples: u32,
    /// Hold time (the clients send KEEPALIVEs every third of it).
    #[arg(long, default_value_t = 30)]
    hold_time: u16,
    /// TCP port of the reflector under test.
    #[arg(long, default_value_t = 17910)]
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
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 3);

/// One reflector's run.
#[derive(Debug)]
struct Outcome {
    start_peak_kib: u64,
    end_peak_kib: u64,
    rounds: u64,
    /// CPU seconds the reflector used during the churn.
    cpu: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Fate of a peer's session, from its tasks.
fn fate(tasks: &[(&str, &tokio::task::JoinHandle<String>)]) -> String {
    if tasks.iter().all(|(_, t)| !t.is_finished()) {
        "up".to_string()
    } else {
        let ended: Vec<&str> = tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(n, _)| *n)
            .collect();
        format!("ended ({})", ended.join(", "))
    }
}

async fn run(name: &str, cmd: Command, setup: &RrSetup, args: &Args) -> anyhow::Result<Outcome> {
    let rr = setup.addr();
    let guard = reflector::start(name, cmd, rr).await?;
    let pid = guard.0.id();
    let t = Duration::from_secs(30);
    let (a, b, c) = tokio::try_join!(
        sim_peer::establish(A, rr, args.hold_time, None, t),
        sim_peer::establish(B, rr, args.hold_time, None, t),
        sim_peer::establish(C, rr, args.hold_time, None, t),
    )?;
    let every = Duration::from_secs(u64::from(args.hold_time / 3).max(1));
    let ka: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| sim_peer::keepalives(p, every))
        .collect();
    let c_updates = Arc::new(AtomicU64::new(0));
    let SimPeer {
        rd: a_rd, caps: _, ..
    } = a; // A never reads again (a_rd kept open, unread).
    let b_read = sim_peer::drain(b.rd, b.caps.clone(), Arc::new(AtomicU64::new(0)));
    let c_read = sim_peer::drain(c.rd, c.caps.clone(), c_updates.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_peak_kib = peak_rss_kib(pid)?;
    println!(
        "{name:>10}: sessions up; peak RSS {:.1} MiB, RSS {:.1} MiB, {} fds",
        mib(start_peak_kib),
        mib(rss_kib(pid)?),
        open_fds(pid).unwrap_or(0)
    );
    // B's rounds, pre-encoded: announce all, withdraw all.
    let prefixes: Vec<_> = (0..args.prefixes).map(prefix).collect();
    let mut round: Vec<Message> = announcement(B, &prefixes)
        .into_iter()
        .map(Message::Update)
        .collect();
    round.extend(
        sim_peer::withdrawal(&prefixes)
            .into_iter()
            .map(Message::Update),
    );
    let round = sim_peer::encode(&round, &b.caps)?;
    let duration = Duration::from_secs(args.duration);
    let cpu_before = cpu_seconds(pid)?;
    let began = Instant::now();
    let rounds = Arc::new(AtomicU64::new(0));
    let churn = {
        let wr = b.wr.clone();
        let rounds = rounds.clone();
        tokio::spawn(async move {
            while began.elapsed() < duration {
                // One announce+withdraw round per lock: keepalives go between.
                if let Err(e) = wr.lock().await.write_all(&round).await {
                    return format!("churn write failed: {e}");
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            String::new()
        })
    };
    let samples = args.samples.max(1);
    for i in 1..=samples {
        tokio::time::sleep_until((began + duration * i / samples).into()).await;
        println!(
            "{name:>10}: t={:>5.1} s  RSS {:>7.1} MiB  peak {:>7.1} MiB  fds {:>3}  rounds {:>5}  C got {} UPDATEs",
            began.elapsed().as_secs_f64(),
            mib(rss_kib(pid)?),
            mib(peak_rss_kib(pid)?),
            open_fds(pid).unwrap_or(0),
            rounds.load(Ordering::Relaxed),
            c_updates.load(Ordering::Relaxed),
        );
    }
    let why = churn.await.context("churn task")?;
    let end_peak_kib = peak_rss_kib(pid)?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    println!(
        "{name:>10}: end: peak RSS {:.1} MiB (start {:.1}), {} rounds of {} /26s, CPU {:.1} s in {:.0} s; A {}, B {}, C {}{}",
        mib(end_peak_kib),
        mib(start_peak_kib),
        rounds.load(Ordering::Relaxed),
        args.prefixes,
        cpu,
        began.elapsed().as_secs_f64(),
        fate(&[("keepalive write", &ka[0])]),
        fate(&[("keepalive write", &ka[1]), ("read", &b_read)]),
        fate(&[("keepalive write", &ka[2]), ("read", &c_read)]),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        },
    );
    for t in ka {
        t.abort();
    }
    b_read.abort();
    c_read.abort();
    drop(a_rd);
    drop(guard);
    Ok(Outcome {
        start_peak_kib,
        end_peak_kib,
        rounds: rounds.load(Ordering::Relaxed),
        cpu,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = reflector::work_dir("rr-slow-peer")?;
    let setup = RrSetup {
        port: args.port,
        clients: vec![A, B, C],
        hold_time: args.hold_time,
    };
    let manx = reflector::manx_binary(args.manx.as_deref())?;
    let ours = run(
        "manx-bgpd",
        reflector::manx_command(&manx, &setup, &dir)?,
        &setup,
        &args,
    )
    .await?;
    if !args.no_bird && args.bird.exists() {
        let cmd = reflector::bird_command(&args.bird, &setup, &dir)?;
        let bird = run("bird2", cmd, &setup, &args).await?;
        println!(
            "ratio (BIRD / manx): end peak RSS {:.2}× (> 1: manx is better); growth during the churn: manx {:+.1} MiB, bird2 {:+.1} MiB; churn rounds: manx {}, bird2 {}; CPU: manx {:.1} s, bird2 {:.1} s",
            bird.end_peak_kib as f64 / ours.end_peak_kib as f64,
            mib(ours.end_peak_kib) - mib(ours.start_peak_kib),
            mib(bird.end_peak_kib) - mib(bird.start_peak_kib),
            ours.rounds,
            bird.rounds,
            ours.cpu,
            bird.cpu,
        );
    } else if !args.no_bird {
        println!("BIRD baseline skipped: {} not found", args.bird.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
