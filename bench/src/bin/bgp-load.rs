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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::{PeerConfig, RouteUpdate, Speaker, SpeakerConfig, config::ListenConfig};
use clap::Parser;
use manx_bench::bgp_client::{ASN, client_addr, prefix, run_client};

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

/// The reflector child; killed on drop.
#[derive(Debug)]
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn work_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bgp-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn manx_config(args: &Args, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(127, 0, 0, 1));
    cfg.listen = Some(ListenConfig {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: args.port,
    });
    cfg.hold_time = 240;
    cfg.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
    cfg.peers = (0..args.clients)
        .map(|i| {
            let mut p = PeerConfig::new(IpAddr::V4(client_addr(i)), ASN);
            p.passive = true;
            p.rr_client = true;
            p
        })
        .collect();
    let path = dir.join("manx-rr.yaml");
    std::fs::write(&path, serde_norway_yaml(&cfg)?)?;
    Ok(path)
}

fn serde_norway_yaml(cfg: &SpeakerConfig) -> anyhow::Result<String> {
    // The daemon reads YAML; JSON is YAML.
    Ok(serde_json::to_string_pretty(cfg)?)
}

fn bird_config(args: &Args, dir: &Path) -> anyhow::Result<PathBuf> {
    use std::fmt::Write;
    let mut s = format!(
        "router id 127.0.0.1;\n\
         protocol device {{ }}\n\
         protocol direct {{ ipv4; interface \"lo\"; }}\n\
         template bgp rrc {{\n  local 127.0.0.1 port {port} as {ASN};\n  rr client;\n  rr cluster id 1.1.1.1;\n  passive on;\n  hold time 240;\n  ipv4 {{ import all; export all; }};\n}}\n",
        port = args.port
    );
    for i in 0..args.clients {
        writeln!(
            s,
            "protocol bgp c{i} from rrc {{ neighbor {} as {ASN}; }}",
            client_addr(i)
        )?;
    }
    let path = dir.join("bird-rr.conf");
    std::fs::write(&path, s)?;
    Ok(path)
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Some(st) = child.try_wait()? {
            bail!("the reflector exited early: {st}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr} after 10 s")
}

async fn run_rr(name: &str, mut cmd: Command, args: &Args) -> anyhow::Result<RrResult> {
    let rr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {name}"))?;
    let mut guard = ChildGuard(child);
    wait_listening(rr, &mut guard.0).await?;
    // The probe connection is refused/closed by the reflector; let it settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let peak_rss_kib = peak_rss_kib(pid)?;
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
    let mut rxs = Vec::new();
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
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        speakers.push(Speaker::start(cfg, Some(tx)).context("start a mesh speaker")?);
        rxs.push(rx);
    }
    let want = (n - 1) as usize;
    let waits: Vec<_> = rxs
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let mut have = std::collections::HashSet::new();
                while have.len() < want {
                    match rx.recv().await {
                        Some(RouteUpdate::Add { prefix, .. }) => {
                            have.insert(prefix);
                        }
                        Some(RouteUpdate::Remove { prefix }) => {
                            have.remove(&prefix);
                        }
                        None => break,
                    }
                }
                have.len() >= want
            })
        })
        .collect();
    for w in waits {
        if !tokio::time::timeout(Duration::from_secs(120), w).await?? {
            bail!("a mesh speaker stopped before converging");
        }
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
    let dir = work_dir()?;
    let manx = match &args.manx {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the current executable")?
            .join("manx-bgpd"),
    };
    let mut cmd = Command::new(&manx);
    cmd.arg("--config").arg(manx_config(&args, &dir)?);
    let ours = run_rr("manx-bgpd", cmd, &args).await?;
    let bird = if args.no_bird {
        None
    } else if !args.bird.exists() {
        println!("BIRD baseline skipped: {} not found", args.bird.display());
        None
    } else {
        let conf = bird_config(&args, &dir)?;
        let mut cmd = Command::new(&args.bird);
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(dir.join("bird.ctl"));
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
