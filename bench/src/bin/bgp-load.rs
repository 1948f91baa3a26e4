//! `bgp-load`: BGP route-reflector load test, manx-bgpd against BIRD 2,
//! FRR, GoBGP and OpenBGPD in the same run, plus a full mesh of in-process
//! Manx speakers. See bench/README.md.
//!
//! K iBGP clients (distinct source addresses) connect to a route reflector,
//! each announces P /26s; the clock runs until every client holds the
//! (K−1)×P routes of the others. All of it runs in a network namespace of
//! its own (100.64.0.0/16 on its `lo`), so nothing touches the host's. Two measurements per daemon, each on
//! a freshly started daemon:
//!
//! * **steady**: clients are admitted through a window of W (default 4)
//!   connections between TCP connect and the reflector's OPEN, so no
//!   daemon's listen queue can overflow (the smallest shipped backlog is
//!   OpenBGPD's 5; BIRD hard-codes 8). No daemon is changed: the clients
//!   connect at the rate the daemon accepts.
//! * **storm**: every client connects at once, each daemon as shipped (a
//!   reflector restart in a large cluster). A daemon whose backlog is
//!   smaller than the storm has its handshakes dropped and retried on
//!   TCP's doubling timer: the ListenOverflows column shows it.
//!
//! Optional `--churn S`: after the steady convergence, 1% of the clients
//! (`--churn-percent`) flap every second for S seconds (close, reconnect,
//! re-announce); then the time to converge again, session drops among the
//! other clients, RSS before and after, CPU seconds during the churn.
//!
//! Each daemon's CPU and RSS are sampled and printed every 5 s while it is
//! measured, and its configuration (with two clients; the run has one
//! such neighbour per client) is printed before its runs.
//!
//! # Measured
//!
//! See bench/README.md for the latest run and the history.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::{PeerConfig, RouteFeed, RouteUpdate, Speaker, SpeakerConfig, config::ListenConfig};
use clap::Parser;
use manx_bench::baselines::Daemon;
use manx_bench::bgp_client::{ASN, LOAD_NET, RR_ADDR, client_addr, prefix};
use manx_bench::load_client::{self, Client, Gate, Plan};
use manx_bench::procs;
use manx_bench::reflector::{self, RrSetup};

#[derive(Debug, Parser)]
#[command(
    about = "BGP route-reflector load test: manx-bgpd vs BIRD 2, FRR, GoBGP, OpenBGPD; and a Manx full mesh"
)]
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
    /// Daemons to measure, comma-separated (manx-bgpd, bird2, frr, gobgp,
    /// openbgpd); a missing binary is skipped with a note.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "manx-bgpd,bird2,frr,gobgp,openbgpd"
    )]
    daemons: Vec<String>,
    /// Measurements, comma-separated: steady, storm.
    #[arg(long, value_delimiter = ',', default_value = "steady,storm")]
    measure: Vec<String>,
    /// Steady: connections admitted between connect and OPEN at once.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Churn after the steady convergence, seconds (0: none).
    #[arg(long, default_value_t = 0)]
    churn: u64,
    /// Share of the clients that flap each second of churn, percent.
    #[arg(long, default_value_t = 1.0)]
    churn_percent: f64,
    /// manx-bgpd binary (default: next to this one).
    #[arg(long)]
    manx: Option<PathBuf>,
    /// BIRD 2 binary.
    #[arg(long, default_value = "/usr/sbin/bird")]
    bird: PathBuf,
    /// FRR bgpd binary.
    #[arg(long, default_value = "/usr/lib/frr/bgpd")]
    frr: PathBuf,
    /// GoBGP daemon binary.
    #[arg(long, default_value = "/usr/bin/gobgpd")]
    gobgp: PathBuf,
    /// OpenBGPD binary.
    #[arg(long, default_value = "/usr/sbin/bgpd")]
    openbgpd: PathBuf,
    /// Speakers in the in-process full mesh (0: skip).
    #[arg(long, default_value_t = 100)]
    mesh: u32,
    /// Give up after this many seconds per measurement.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

impl Args {
    fn binary(&self, d: Daemon) -> anyhow::Result<PathBuf> {
        Ok(match d {
            Daemon::Manx => reflector::manx_binary(self.manx.as_deref())?,
            Daemon::Bird => self.bird.clone(),
            Daemon::Frr => self.frr.clone(),
            Daemon::Gobgp => self.gobgp.clone(),
            Daemon::Openbgpd => self.openbgpd.clone(),
        })
    }
}

fn setup(args: &Args, clients: u32) -> RrSetup {
    RrSetup {
        address: RR_ADDR,
        port: args.port,
        clients: (0..clients).map(client_addr).collect(),
        hold_time: 240,
    }
}

/// One measurement of one daemon.
#[derive(Debug)]
struct Run {
    daemon: Daemon,
    measure: &'static str,
    converge: Duration,
    peak_rss_kib: u64,
    peak_pss_kib: u64,
    cpu_s: f64,
    backlog: u32,
    overflows: u64,
    failed_attempts: u32,
    churn: Option<Churn>,
}

#[derive(Debug)]
struct Churn {
    flaps: u64,
    reconverge: Duration,
    other_drops: u32,
    rss_before_kib: u64,
    rss_after_kib: u64,
    peak_rss_kib: u64,
    cpu_s: f64,
}

fn guard_alive(g: &reflector::ChildGuard) -> bool {
    std::fs::metadata(format!("/proc/{}", g.0.id())).is_ok()
        && !std::fs::read_to_string(format!("/proc/{}/stat", g.0.id()))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

/// Sample the daemon's PSS every 250 ms into `peak_pss` and print a
/// progress line every 5 s until aborted (CPU % of one core since the last
/// line, RSS, sessions up, clients done).
fn watch(
    name: &'static str,
    pid: u32,
    clients: std::sync::Arc<Vec<std::sync::Arc<load_client::ClientState>>>,
    target: u32,
    peak_pss: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last_cpu = procs::tree_cpu_seconds(pid);
        let mut last = Instant::now();
        loop {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                peak_pss.fetch_max(procs::tree_pss_kib(pid), Ordering::Relaxed);
            }
            let cpu = procs::tree_cpu_seconds(pid);
            let done = clients
                .iter()
                .filter(|c| c.learnt.load(Ordering::Relaxed) >= target)
                .count();
            let up = clients
                .iter()
                .filter(|c| c.up.load(Ordering::Relaxed))
                .count();
            println!(
                "    {name} t={:>5.1}s  cpu {:>5.1}%  rss {:>6.1} MiB  sessions up {up}/{}  clients done {done}",
                start.elapsed().as_secs_f64(),
                (cpu - last_cpu) / last.elapsed().as_secs_f64() * 100.0,
                procs::tree_rss_kib(pid) as f64 / 1024.0,
                clients.len(),
            );
            last_cpu = cpu;
            last = Instant::now();
        }
    })
}

async fn measure(
    args: &Args,
    d: Daemon,
    bin: &std::path::Path,
    measure: &'static str,
) -> anyhow::Result<Run> {
    let dir = reflector::work_dir(&format!("bgp-load-{}-{measure}", d.name()))?;
    let s = setup(args, args.clients);
    let (cmd, _conf) = d.command(bin, &s, &dir)?;
    let log = dir.join("daemon.log");
    let guard = reflector::start_logged(d.name(), cmd, s.addr(), Some(&log)).await?;
    let pid = guard.0.id();
    let backlog = procs::listen_backlog(args.port).unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: String = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let (of0, _) = procs::listen_overflows()?;
    let cpu0 = procs::tree_cpu_seconds(pid);
    let k = args.clients;
    let p = args.prefixes;
    let start = Instant::now();
    let plan = Plan {
        rr: s.addr(),
        target: k * p - p,
        universe: k * p,
        hold_time: s.hold_time,
        start,
        gate: Gate::new((measure == "steady").then_some(args.window)),
    };
    let clients: Vec<Client> = (0..k)
        .map(|i| {
            load_client::spawn(
                client_addr(i),
                (0..p).map(|j| prefix(i * p + j)).collect(),
                plan.clone(),
            )
        })
        .collect();
    let states = std::sync::Arc::new(clients.iter().map(|c| c.state.clone()).collect::<Vec<_>>());
    let peak_pss = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = watch(d.name(), pid, states, k * p - p, peak_pss.clone());
    let deadline = start + Duration::from_secs(args.timeout);
    let r = load_client::wait_all(
        &clients,
        k * p - p,
        deadline,
        &format!("{} {measure}", d.name()),
    )
    .await;
    if let Err(e) = r {
        watcher.abort();
        let alive = match guard_alive(&guard) {
            true => "still running",
            false => "exited",
        };
        return Err(e.context(format!("the daemon {alive}; its output: {}", log.display())));
    }
    let converge = clients
        .iter()
        .map(|c| Duration::from_nanos(c.state.first_done_ns.load(Ordering::Relaxed)))
        .max()
        .unwrap_or_default();
    let peak_rss_kib = procs::tree_peak_rss_kib(pid);
    peak_pss.fetch_max(procs::tree_pss_kib(pid), Ordering::Relaxed);
    let peak_pss_kib = peak_pss.load(Ordering::Relaxed);
    let cpu_s = procs::tree_cpu_seconds(pid) - cpu0;
    let (of1, _) = procs::listen_overflows()?;
    let failed_attempts = clients
        .iter()
        .map(|c| c.state.failed_attempts.load(Ordering::Relaxed))
        .sum();
    println!(
        "  {} {measure}: {k} clients × {p} prefixes converged in {:.3} s; peak RSS {:.1} MiB (VmHWM), {:.1} MiB (PSS, sampled); CPU {:.1} s; backlog {backlog}; listen overflows {}; failed connects {failed_attempts}; load average before {load}",
        d.name(),
        converge.as_secs_f64(),
        peak_rss_kib as f64 / 1024.0,
        peak_pss_kib as f64 / 1024.0,
        cpu_s,
        of1 - of0,
    );
    let churn = if measure == "steady" && args.churn > 0 {
        Some(churn(args, d, pid, &clients).await?)
    } else {
        None
    };
    watcher.abort();
    drop(clients);
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run {
        daemon: d,
        measure,
        converge,
        peak_rss_kib,
        peak_pss_kib,
        cpu_s,
        backlog,
        overflows: of1 - of0,
        failed_attempts,
        churn,
    })
}

async fn churn(args: &Args, d: Daemon, pid: u32, clients: &[Client]) -> anyhow::Result<Churn> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = procs::tree_rss_kib(pid);
    let drops_before: u32 = clients
        .iter()
        .map(|c| c.state.drops.load(Ordering::Relaxed))
        .sum();
    let cpu0 = procs::tree_cpu_seconds(pid);
    let per_sec = ((clients.len() as f64) * args.churn_percent / 100.0)
        .ceil()
        .max(1.0) as usize;
    let mut next = 0usize;
    let mut flaps = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..args.churn {
        for _ in 0..per_sec {
            clients[next % clients.len()].flap();
            next += 1;
            flaps += 1;
        }
        tick.tick().await;
    }
    let churn_end = Instant::now();
    let k = (args.clients - 1) * args.prefixes;
    let done = load_client::wait_all(
        clients,
        k,
        churn_end + Duration::from_secs(args.timeout),
        &format!("{} after churn", d.name()),
    )
    .await?;
    let reconverge = done - churn_end;
    let cpu_s = procs::tree_cpu_seconds(pid) - cpu0;
    let peak_rss_kib = procs::tree_peak_rss_kib(pid);
    // RSS once the churn is over: 10 s after the reconvergence (a daemon may
    // give freed memory back on a timer; manx-bgpd trims every 5 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_after_kib = procs::tree_rss_kib(pid);
    let other_drops = clients
        .iter()
        .map(|c| c.state.drops.load(Ordering::Relaxed))
        .sum::<u32>()
        - drops_before;
    println!(
        "  {} churn: {flaps} flaps in {} s ({per_sec}/s); converged again {:.3} s after the last; sessions dropped by the reflector {other_drops}; RSS {:.1} → {:.1} MiB 10 s later ({:+.1}%), peak {:.1} MiB; CPU {cpu_s:.1} s",
        d.name(),
        args.churn,
        reconverge.as_secs_f64(),
        rss_before_kib as f64 / 1024.0,
        rss_after_kib as f64 / 1024.0,
        (rss_after_kib as f64 / rss_before_kib as f64 - 1.0) * 100.0,
        peak_rss_kib as f64 / 1024.0,
    );
    Ok(Churn {
        flaps,
        reconverge,
        other_drops,
        rss_before_kib,
        rss_after_kib,
        peak_rss_kib,
        cpu_s,
    })
}

fn summary(args: &Args, runs: &[Run]) {
    println!(
        "\n== summary: K={} clients × P={} prefixes, steady window {}",
        args.clients, args.prefixes, args.window
    );
    println!(
        "| reflector | measure | converged | peak RSS (VmHWM) | peak PSS (sampled) | CPU | backlog | listen overflows | failed connects | ratio to manx-bgpd (time, PSS) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let ours = runs
            .iter()
            .find(|o| o.daemon == Daemon::Manx && o.measure == r.measure);
        let ratio = ours.map_or_else(
            || "–".to_string(),
            |o| {
                format!(
                    "{:.2}× / {:.2}×",
                    r.converge.as_secs_f64() / o.converge.as_secs_f64(),
                    r.peak_pss_kib as f64 / o.peak_pss_kib as f64
                )
            },
        );
        println!(
            "| {} | {} | {:.3} s | {:.1} MiB | {:.1} MiB | {:.1} s | {} | {} | {} | {ratio} |",
            r.daemon.name(),
            r.measure,
            r.converge.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.peak_pss_kib as f64 / 1024.0,
            r.cpu_s,
            r.backlog,
            r.overflows,
            r.failed_attempts,
        );
    }
    for r in runs {
        if r.measure == "storm"
            && let Some(s) = runs
                .iter()
                .find(|o| o.daemon == r.daemon && o.measure == "steady")
        {
            println!(
                "{}: storm / steady convergence {:.2}× (target ≤ 2×)",
                r.daemon.name(),
                r.converge.as_secs_f64() / s.converge.as_secs_f64()
            );
        }
    }
    let churns: Vec<_> = runs
        .iter()
        .filter_map(|r| r.churn.as_ref().map(|c| (r.daemon, c)))
        .collect();
    if !churns.is_empty() {
        println!(
            "\n| reflector | flaps | converged after churn | sessions dropped | RSS before → after | peak RSS | CPU during churn |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (d, c) in churns {
            println!(
                "| {} | {} | {:.3} s | {} | {:.1} → {:.1} MiB ({:+.1}%) | {:.1} MiB | {:.1} s |",
                d.name(),
                c.flaps,
                c.reconverge.as_secs_f64(),
                c.other_drops,
                c.rss_before_kib as f64 / 1024.0,
                c.rss_after_kib as f64 / 1024.0,
                (c.rss_after_kib as f64 / c.rss_before_kib as f64 - 1.0) * 100.0,
                c.peak_rss_kib as f64 / 1024.0,
                c.cpu_s,
            );
        }
    }
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before any thread exists: the runtime's threads and every daemon
    // inherit the namespace.
    enter_private_netns()?;
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

/// A new network namespace with `lo` up and [`LOAD_NET`] on it.
#[allow(unsafe_code)]
fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: unshare has no memory effects; single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWNET): {} (bgp-load needs root)",
            std::io::Error::last_os_error()
        );
    }
    let addr = format!(
        "{RR_ADDR}/{}",
        LOAD_NET.rsplit_once('/').map_or("16", |(_, l)| l)
    );
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", addr.as_str(), "dev", "lo"],
    ] {
        let st = std::process::Command::new("ip")
            .args(&args)
            .status()
            .context("run ip")?;
        if !st.success() {
            bail!("ip {} failed in the bench's namespace", args.join(" "));
        }
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let limit = manx_bench::rlimit::raise_nofile().context("raise RLIMIT_NOFILE")?;
    if u64::from(args.clients) * 2 + 64 > limit {
        bail!(
            "open-file limit {limit} is too low for {} clients; raise the hard limit (ulimit -Hn)",
            args.clients
        );
    }
    let daemons = args
        .daemons
        .iter()
        .map(|s| Daemon::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let measures: Vec<&'static str> = args
        .measure
        .iter()
        .map(|m| match m.as_str() {
            "steady" => Ok("steady"),
            "storm" => Ok("storm"),
            other => Err(anyhow::anyhow!(
                "unknown measurement {other:?}: use steady or storm"
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    println!(
        "bgp-load: K={} clients × P={} /26s, hold {} s, steady window {}, net.core.somaxconn {}",
        args.clients,
        args.prefixes,
        240,
        args.window,
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap_or_default()
            .trim()
    );
    let mut runs = Vec::new();
    for d in daemons {
        let bin = args.binary(d)?;
        if !bin.exists() {
            println!("\n== {}: skipped: {} not found", d.name(), bin.display());
            continue;
        }
        // The configuration, as written for two clients.
        let dir = reflector::work_dir(&format!("bgp-load-{}-show", d.name()))?;
        let (_, conf) = d.command(&bin, &setup(&args, 2), &dir)?;
        println!(
            "\n== {} ({}); its configuration, shown with 2 clients (the run has one such neighbour per client):\n{}",
            d.name(),
            bin.display(),
            std::fs::read_to_string(&conf)?.trim_end()
        );
        let _ = std::fs::remove_dir_all(&dir);
        for m in &measures {
            match measure(&args, d, &bin, m).await {
                Ok(r) => runs.push(r),
                Err(e) => println!("  {} {m}: FAILED: {e:#}", d.name()),
            }
        }
    }
    summary(&args, &runs);
    if args.mesh > 1 {
        let took = run_mesh(args.mesh, args.port + 1).await?;
        println!(
            "\nfull mesh: {} in-process manx speakers converged in {:.3} s",
            args.mesh,
            took.as_secs_f64()
        );
    }
    Ok(())
}
