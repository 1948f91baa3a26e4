//! `rr-slow-peer`: a route reflector with misbehaving clients, manx-bgpd vs
//! BIRD 2 in the same run. See bench/README.md.
//!
//! Three iBGP rr clients on loopback connect to the reflector on
//! 127.0.0.1: A (127.0.3.1), B (127.0.3.2) and C (127.0.3.3).
//!
//! * `stall`: A establishes and then never reads again (its TCP window
//!   closes) but keeps sending KEEPALIVEs; B announces and withdraws
//!   `--prefixes` /26s, round after round, as fast as TCP takes them, for
//!   `--duration` seconds; C reads everything.
//! * `flood`: everyone reads; B sends an UPDATE flood of `--flood` /26s
//!   (as fast as TCP takes it), then announces and withdraws `--prefixes`
//!   other /26s as fast as TCP takes them for `--churn` seconds; then A
//!   announces a marker /26 and the time until C gets it is measured.
//!
//! The reflector's RSS and peak RSS (VmHWM) are sampled, its CPU time is
//! printed, and its view of each session is polled every second (manx's
//! control socket, `birdc show protocols`), beside each client's own view.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bgpd::packet::Message;
use clap::{Parser, ValueEnum};
use manx_bench::bgp_client::{announcement, prefix};
use manx_bench::reflector::{self, Kind, RrSetup, cpu_seconds, open_fds, peak_rss_kib, rss_kib};
use manx_bench::sim_peer::{self, Seen, SimPeer};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// A stops reading while B churns.
    Stall,
    /// B floods, then churns; A's marker must reach C.
    Flood,
    /// Both, one after the other.
    Both,
}

#[derive(Debug, Parser)]
#[command(
    about = "A reflector with a client that stops reading while another churns, or one that floods: manx-bgpd vs BIRD"
)]
struct Args {
    /// Which scenario(s) to run.
    #[arg(long, value_enum, default_value_t = Scenario::Both)]
    scenario: Scenario,
    /// Seconds of churn (stall scenario).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// /26 prefixes announced then withdrawn by the churning client, per round.
    #[arg(long, default_value_t = 5000)]
    prefixes: u32,
    /// RSS samples printed during the churn (stall scenario).
    #[arg(long, default_value_t = 6)]
    samples: u32,
    /// /26 prefixes of B's flood (flood scenario).
    #[arg(long, default_value_t = 100_000)]
    flood: u32,
    /// Seconds of churn after the flood (flood scenario).
    #[arg(long, default_value_t = 10)]
    churn: u64,
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

/// Bound on each wait of the flood scenario.
const FLOOD_WAIT: Duration = Duration::from_secs(120);

/// One reflector's stall run.
#[derive(Debug)]
struct Outcome {
    start_peak_kib: u64,
    end_peak_kib: u64,
    rounds: u64,
    /// CPU seconds the reflector used during the churn.
    cpu: f64,
}

/// One reflector's flood run.
#[derive(Debug)]
struct FloodOutcome {
    start_peak_kib: u64,
    end_peak_kib: u64,
    /// From B's first write until C held every flooded prefix.
    flood_reached: Duration,
    rounds: u64,
    /// From the end of B's churn until C got A's marker.
    marker: Option<Duration>,
    cpu: f64,
    /// Whether any client was ever seen down, by the reflector or itself.
    dropped: Vec<String>,
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

/// One client's session as the reflector reported it: the client, times
/// polled, times not Established, the last such state.
type SessionRow = (Ipv4Addr, u32, u32, String);

/// The reflector watched in the background: RSS every `every`, and its
/// view of each session every second.
struct Watcher {
    samples: Arc<Mutex<Vec<(f64, u64, u64)>>>,
    sessions: Arc<Mutex<Vec<SessionRow>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(pid: u32, kind: Kind, setup: RrSetup, dir: PathBuf, every: Duration) -> Watcher {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sessions = Arc::new(Mutex::new(
            setup
                .clients
                .iter()
                .map(|c| (*c, 0, 0, String::new()))
                .collect::<Vec<_>>(),
        ));
        let began = Instant::now();
        let task = {
            let samples = samples.clone();
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let mut last_poll: Option<Instant> = None;
                loop {
                    if let (Ok(rss), Ok(hwm)) = (rss_kib(pid), peak_rss_kib(pid)) {
                        samples.lock().expect("samples").push((
                            began.elapsed().as_secs_f64(),
                            rss,
                            hwm,
                        ));
                    }
                    if last_poll.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_poll = Some(Instant::now());
                        let (k, s, d) = (kind.clone(), setup.clone(), dir.clone());
                        let got = tokio::task::spawn_blocking(move || k.sessions(&s, &d)).await;
                        let mut table = sessions.lock().expect("sessions");
                        match got {
                            Ok(Ok(states)) => {
                                for (c, state) in states {
                                    if let Some(row) = table.iter_mut().find(|r| r.0 == c) {
                                        row.1 += 1;
                                        if state != "Established" {
                                            row.2 += 1;
                                            row.3 = state;
                                        }
                                    }
                                }
                            }
                            // An unanswered poll counts against every session.
                            Ok(Err(e)) => table.iter_mut().for_each(|r| {
                                r.1 += 1;
                                r.2 += 1;
                                r.3 = format!("no answer: {e:#}");
                            }),
                            Err(e) => table.iter_mut().for_each(|r| r.3 = format!("poll: {e}")),
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        Watcher {
            samples,
            sessions,
            task,
        }
    }

    /// Stop; print the RSS curve (one value per second) and the sessions.
    /// Returns the highest peak RSS seen (KiB: `VmHWM` is updated lazily and
    /// can miss a short high that a sample caught) and the clients seen
    /// not Established.
    fn finish(self, name: &str) -> (u64, Vec<String>) {
        self.task.abort();
        let samples = self.samples.lock().expect("samples");
        let mut curve = Vec::new();
        let mut next = 0.0;
        for (t, rss, _) in samples.iter() {
            if *t >= next {
                curve.push(format!("{:.1}", mib(*rss)));
                next += 1.0;
            }
        }
        let peak = samples.iter().map(|s| s.1.max(s.2)).max().unwrap_or(0);
        println!(
            "{name:>10}: RSS every 1 s (MiB): {}; peak {:.1} MiB",
            curve.join(" "),
            mib(peak)
        );
        let mut dropped = Vec::new();
        for (c, polls, down, last) in self.sessions.lock().expect("sessions").iter() {
            if *down == 0 {
                println!("{name:>10}: its session with {c}: Established in all {polls} polls");
            } else {
                println!(
                    "{name:>10}: its session with {c}: NOT Established in {down} of {polls} polls (last: {last})"
                );
                dropped.push(format!("{c} (reflector's view)"));
            }
        }
        (peak, dropped)
    }
}

async fn run(
    name: &str,
    kind: Kind,
    cmd: Command,
    setup: &RrSetup,
    dir: &Path,
    args: &Args,
) -> anyhow::Result<Outcome> {
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
    let c_seen = Arc::new(Seen::default());
    let SimPeer {
        rd: a_rd, caps: _, ..
    } = a; // A never reads again (a_rd kept open, unread).
    // B's rounds, pre-encoded: announce all, withdraw all.
    let round = churn_round(0, args.prefixes, &b)?;
    let b_read = sim_peer::watch(b.rd, b.caps.clone(), Arc::default(), None);
    let c_read = sim_peer::watch(c.rd, c.caps.clone(), c_seen.clone(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_peak_kib = peak_rss_kib(pid)?;
    println!(
        "{name:>10}: stall: sessions up; peak RSS {:.1} MiB, RSS {:.1} MiB, {} fds",
        mib(start_peak_kib),
        mib(rss_kib(pid)?),
        open_fds(pid).unwrap_or(0)
    );
    let watcher = Watcher::start(
        pid,
        kind,
        setup.clone(),
        dir.to_path_buf(),
        Duration::from_millis(500),
    );
    let duration = Duration::from_secs(args.duration);
    let cpu_before = cpu_seconds(pid)?;
    let began = Instant::now();
    let rounds = Arc::new(AtomicU64::new(0));
    let churn = churn(b.wr.clone(), round, began + duration, rounds.clone());
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
            c_seen.updates.load(Ordering::Relaxed),
        );
    }
    let why = churn.await.context("churn task")?;
    let (watched_peak, _) = watcher.finish(name);
    let end_peak_kib = peak_rss_kib(pid)?.max(watched_peak);
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

/// One churn round of `count` /26s from the `first`-th, pre-encoded for
/// `peer`: announce all, then withdraw all.
fn churn_round(first: u32, count: u32, peer: &SimPeer) -> anyhow::Result<Vec<u8>> {
    let prefixes: Vec<_> = (first..first + count).map(prefix).collect();
    let mut round: Vec<Message> = announcement(peer.src, &prefixes)
        .into_iter()
        .map(Message::Update)
        .collect();
    round.extend(
        sim_peer::withdrawal(&prefixes)
            .into_iter()
            .map(Message::Update),
    );
    sim_peer::encode(&round, &peer.caps)
}

/// Write `round` again and again, as fast as TCP takes it, until `until`;
/// returns why it stopped early (empty: it did not).
fn churn(
    wr: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    round: Vec<u8>,
    until: Instant,
    rounds: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        while Instant::now() < until {
            // One announce+withdraw round per lock: keepalives go between.
            if let Err(e) = wr.lock().await.write_all(&round).await {
                return format!("churn write failed: {e}");
            }
            rounds.fetch_add(1, Ordering::Relaxed);
        }
        String::new()
    })
}

/// Wait (polling) until `done` holds, for at most `bound`.
async fn wait_for(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + bound;
    while !done() {
        if Instant::now() > give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

async fn run_flood(
    name: &str,
    kind: Kind,
    cmd: Command,
    setup: &RrSetup,
    dir: &Path,
    args: &Args,
) -> anyhow::Result<FloodOutcome> {
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
    // The marker is past the flood's and the churn's prefixes.
    let marker = prefix(args.flood + args.prefixes + 1);
    let c_seen = Arc::new(Seen::default());
    let round = churn_round(args.flood, args.prefixes, &b)?;
    let a_read = sim_peer::watch(a.rd, a.caps.clone(), Arc::default(), None);
    let b_read = sim_peer::watch(b.rd, b.caps.clone(), Arc::default(), None);
    let c_read = sim_peer::watch(c.rd, c.caps.clone(), c_seen.clone(), Some(marker));
    let (a_wr, a_caps) = (a.wr.clone(), a.caps.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_peak_kib = peak_rss_kib(pid)?;
    println!(
        "{name:>10}: flood: sessions up; peak RSS {:.1} MiB, RSS {:.1} MiB",
        mib(start_peak_kib),
        mib(rss_kib(pid)?),
    );
    let flood: Vec<_> = (0..args.flood).map(prefix).collect();
    let flood = sim_peer::encode(
        &announcement(B, &flood)
            .into_iter()
            .map(Message::Update)
            .collect::<Vec<_>>(),
        &b.caps,
    )?;
    let watcher = Watcher::start(
        pid,
        kind,
        setup.clone(),
        dir.to_path_buf(),
        Duration::from_millis(100),
    );
    let cpu_before = cpu_seconds(pid)?;
    let began = Instant::now();
    b.wr.lock()
        .await
        .write_all(&flood)
        .await
        .context("B's flood")?;
    let written = began.elapsed();
    let n = u64::from(args.flood);
    if !wait_for(FLOOD_WAIT, || c_seen.announced.load(Ordering::Relaxed) >= n).await {
        bail!(
            "{name}: C got {} of the {n} flooded prefixes in {FLOOD_WAIT:?}",
            c_seen.announced.load(Ordering::Relaxed)
        );
    }
    let flood_reached = began.elapsed();
    println!(
        "{name:>10}: flood of {n} /26s written by B in {:.2} s, all at C after {:.2} s; RSS {:.1} MiB, peak {:.1} MiB",
        written.as_secs_f64(),
        flood_reached.as_secs_f64(),
        mib(rss_kib(pid)?),
        mib(peak_rss_kib(pid)?),
    );
    let rounds = Arc::new(AtomicU64::new(0));
    let churned = Instant::now();
    let why = churn(
        b.wr.clone(),
        round,
        churned + Duration::from_secs(args.churn),
        rounds.clone(),
    )
    .await
    .context("churn task")?;
    let churn_end = Instant::now();
    let marker_msg = sim_peer::encode(
        &announcement(A, &[marker])
            .into_iter()
            .map(Message::Update)
            .collect::<Vec<_>>(),
        &a_caps,
    )?;
    a_wr.lock()
        .await
        .write_all(&marker_msg)
        .await
        .context("A's marker")?;
    let marker_at = if wait_for(FLOOD_WAIT, || c_seen.marker_at.get().is_some()).await {
        c_seen.marker_at.get().map(|t| t.duration_since(churn_end))
    } else {
        None
    };
    println!(
        "{name:>10}: churn: {} rounds of {} /26s in {:.1} s{}; marker from A at C {}; RSS {:.1} MiB, peak {:.1} MiB",
        rounds.load(Ordering::Relaxed),
        args.prefixes,
        churn_end.duration_since(churned).as_secs_f64(),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        },
        marker_at.map_or_else(
            || format!("never (within {FLOOD_WAIT:?})"),
            |d| format!("{:.2} s after the churn ended", d.as_secs_f64())
        ),
        mib(rss_kib(pid)?),
        mib(peak_rss_kib(pid)?),
    );
    // Let the reflector settle, still watched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (watched_peak, mut dropped) = watcher.finish(name);
    let end_peak_kib = peak_rss_kib(pid)?.max(watched_peak);
    let cpu = cpu_seconds(pid)? - cpu_before;
    println!(
        "{name:>10}: end: peak RSS {:.1} MiB (start {:.1}), CPU {:.1} s in {:.1} s; clients' view: A {}, B {}, C {}",
        mib(end_peak_kib),
        mib(start_peak_kib),
        cpu,
        began.elapsed().as_secs_f64(),
        fate(&[("keepalive write", &ka[0]), ("read", &a_read)]),
        fate(&[("keepalive write", &ka[1]), ("read", &b_read)]),
        fate(&[("keepalive write", &ka[2]), ("read", &c_read)]),
    );
    for (who, tasks) in [
        ("A", [&ka[0], &a_read]),
        ("B", [&ka[1], &b_read]),
        ("C", [&ka[2], &c_read]),
    ] {
        if tasks.iter().any(|t| t.is_finished()) {
            dropped.push(format!("{who} (its own view)"));
        }
    }
    for t in ka.into_iter().chain([a_read, b_read, c_read]) {
        t.abort();
    }
    drop(guard);
    Ok(FloodOutcome {
        start_peak_kib,
        end_peak_kib,
        flood_reached,
        rounds: rounds.load(Ordering::Relaxed),
        marker: marker_at,
        cpu,
        dropped,
    })
}

fn flood_line(name: &str, o: &FloodOutcome) -> String {
    format!(
        "{name}: peak {:.1} MiB (start {:.1}), flood at C in {:.2} s, {} churn rounds, marker {}, CPU {:.1} s, dropped: {}",
        mib(o.end_peak_kib),
        mib(o.start_peak_kib),
        o.flood_reached.as_secs_f64(),
        o.rounds,
        o.marker.map_or_else(
            || "never".to_string(),
            |d| format!("{:.2} s", d.as_secs_f64())
        ),
        o.cpu,
        if o.dropped.is_empty() {
            "none".to_string()
        } else {
            o.dropped.join(", ")
        }
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = reflector::work_dir("rr-slow-peer")?;
    let setup = RrSetup {
        address: std::net::Ipv4Addr::LOCALHOST,
        port: args.port,
        clients: vec![A, B, C],
        hold_time: args.hold_time,
    };
    let manx = reflector::manx_binary(args.manx.as_deref())?;
    let bird = (!args.no_bird && args.bird.exists()).then_some(&args.bird);
    if !args.no_bird && bird.is_none() {
        println!("BIRD baseline skipped: {} not found", args.bird.display());
    }
    let manx_cmd = || reflector::manx_command(&manx, &setup, &dir);
    let bird_cmd = |b: &Path| reflector::bird_command(b, &setup, &dir);
    if matches!(args.scenario, Scenario::Stall | Scenario::Both) {
        let ours = run("manx-bgpd", Kind::Manx, manx_cmd()?, &setup, &dir, &args).await?;
        if let Some(b) = bird {
            let kind = Kind::Bird(b.clone());
            let bird = run("bird2", kind, bird_cmd(b)?, &setup, &dir, &args).await?;
            println!(
                "stall: ratio (BIRD / manx): end peak RSS {:.2}× (> 1: manx is better); growth during the churn: manx {:+.1} MiB, bird2 {:+.1} MiB; churn rounds: manx {}, bird2 {}; CPU: manx {:.1} s, bird2 {:.1} s",
                bird.end_peak_kib as f64 / ours.end_peak_kib as f64,
                mib(ours.end_peak_kib) - mib(ours.start_peak_kib),
                mib(bird.end_peak_kib) - mib(bird.start_peak_kib),
                ours.rounds,
                bird.rounds,
                ours.cpu,
                bird.cpu,
            );
        }
    }
    if matches!(args.scenario, Scenario::Flood | Scenario::Both) {
        let ours = run_flood("manx-bgpd", Kind::Manx, manx_cmd()?, &setup, &dir, &args).await?;
        println!("flood: {}", flood_line("manx-bgpd", &ours));
        if let Some(b) = bird {
            let kind = Kind::Bird(b.clone());
            let bird = run_flood("bird2", kind, bird_cmd(b)?, &setup, &dir, &args).await?;
            println!("flood: {}", flood_line("bird2", &bird));
            println!(
                "flood: ratio (BIRD / manx): peak RSS {:.2}× (> 1: manx is better; target ≥ 0.5× or manx under 24 MiB: {}); flood at C {:.2}×",
                bird.end_peak_kib as f64 / ours.end_peak_kib as f64,
                if ours.end_peak_kib <= 2 * bird.end_peak_kib || ours.end_peak_kib < 24 * 1024 {
                    "met"
                } else {
                    "missed"
                },
                bird.flood_reached.as_secs_f64() / ours.flood_reached.as_secs_f64(),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
