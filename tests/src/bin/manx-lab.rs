//! `manx-lab`: a whole Manx cluster on one machine (see `manx_e2e::lab`).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use manx_e2e::lab::{self, IpFamily, LabSpec, LabState, Mode, Runtime, StoreKind, progress};

#[derive(Parser, Debug)]
#[command(
    name = "manx-lab",
    about = "A Manx cluster of network namespaces on one machine"
)]
struct Cli {
    /// Lab id: prefixes every namespace (mxlab-<id>-...).
    #[arg(long, global = true, default_value = "lab")]
    id: String,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which pod pairs `up` and `status` ping (in parallel, one thread per
/// source pod).
#[derive(clap::Args, Debug)]
struct PingArgs {
    /// Ping every pod from every other pod (P(P-1) pairs) instead of a sample.
    #[arg(long)]
    ping_all: bool,
    /// The sample: every pod pings this many others, plus one pod pair for
    /// each pair of nodes.
    #[arg(long, default_value_t = 3)]
    ping_sample: usize,
}

impl PingArgs {
    fn plan(&self) -> lab::PingPlan {
        if self.ping_all {
            lab::PingPlan::Full
        } else {
            lab::PingPlan::Sample {
                k: self.ping_sample,
            }
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create the nodes, start manx-node in each, create pods, ping them all.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "direct")]
        mode: Mode,
        #[arg(long, default_value_t = 0)]
        route_reflectors: usize,
        /// ipv4, ipv6 (IPv6 pods and sessions only) or dual (every pod an
        /// address of each family, a session per family between nodes).
        #[arg(long, default_value = "ipv4")]
        ip_family: IpFamily,
        #[arg(long, default_value = "embedded")]
        datastore: StoreKind,
        #[arg(long, default_value_t = 1)]
        pods_per_node: usize,
        /// What makes the pods: cni (the plugin run by hand in a namespace),
        /// containerd (`ctr run --cni`) or podman (CNI backend), each node's
        /// runtime in a private mount namespace.
        #[arg(long, default_value = "cni")]
        runtime: Runtime,
        /// manx-node's stale-workload grace (MANX_STALE_WORKLOAD_GRACE_SECS).
        #[arg(long)]
        stale_grace_secs: Option<u64>,
        /// manx-node's stale-workload scan period (MANX_STALE_WORKLOAD_SCAN_SECS).
        #[arg(long)]
        stale_scan_secs: Option<f64>,
        #[command(flatten)]
        ping: PingArgs,
    },
    /// Show the nodes, their BGP peers and routes, and ping pod pairs.
    Status {
        #[command(flatten)]
        ping: PingArgs,
    },
    /// Remove every namespace, link, process and file the lab made.
    Down,
    /// Restart manx-node on one node (SIGTERM, then start it again with the
    /// same environment; waits until it is ready). Delete the node's
    /// `wireguard.key` in its run dir first to rotate its WireGuard key.
    RestartNode {
        /// The node's name (node1, node2, ...).
        node: String,
    },
    /// Each manx-node's resident memory (VmRSS) and CPU over a window
    /// (utime + stime from /proc/<pid>/stat), and the host's neighbour table.
    Stats {
        /// The window, in seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    /// Measure convergence: CNI ADD of a pod that claims a new block until
    /// the block's route is in every other node's kernel (a route monitor
    /// per node), beside the ADD alone, its steps and the nodes' CPU per
    /// ADD (its own lab per size, torn down after).
    BenchConvergence {
        #[arg(long, default_value_t = 50)]
        trials: usize,
        /// Cluster sizes, comma-separated: one lab after another, same
        /// build; with two or more, the largest is compared with the
        /// smallest (is the ADD's cost independent of the size?).
        #[arg(long, value_delimiter = ',', default_value = "3")]
        nodes: Vec<usize>,
        /// Reflectors (nodes 1..=R, mesh off) instead of the full mesh.
        #[arg(long, default_value_t = 0)]
        route_reflectors: usize,
        /// dual: every pod claims an IPv4 and an IPv6 block, and the IPv6
        /// figure is printed beside the IPv4 one of the same trials.
        #[arg(long, default_value = "ipv4")]
        ip_family: IpFamily,
    },
    /// Measure pod-to-pod TCP throughput (iperf3) and ping-flood p99 for each mode in the
    /// same run: one 2-node lab per mode (ids <id>-<mode>), rounds interleaved, torn down
    /// after. The UDP backend against VXLAN and direct routes.
    BenchEncap {
        /// Modes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "direct,vxlan,udp")]
        modes: Vec<Mode>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// iperf3 seconds per round.
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Pings per round (1 ms apart).
        #[arg(long, default_value_t = 2000)]
        pings: usize,
    },
    /// Measure failover: a node dies to the network (its switch port goes
    /// down) -> every other node removed its routes, with BFD and without
    /// (hold-timer expiry), trials interleaved in one run (two labs, ids
    /// <id>-fbfd and <id>-fhold, torn down after).
    BenchFailover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// BFD minRx and minTx, ms.
        #[arg(long, default_value_t = 100)]
        bfd_interval_ms: u32,
        #[arg(long, default_value_t = 3)]
        bfd_multiplier: u8,
        /// keepaliveTime of both arms' BGPPeer, s (hold time 3x, at least 3 s).
        #[arg(long, default_value_t = 1)]
        keepalive_secs: u32,
    },
    /// Measure a runtime's pod create (CNI ADD) and delete (CNI DEL) with
    /// Manx beside the same with bridge + host-local (/usr/lib/cni), trials
    /// interleaved in one run (its own 2-node lab, torn down after).
    BenchRuntime {
        #[arg(long, default_value = "podman")]
        runtime: Runtime,
        #[arg(long, default_value_t = 30)]
        trials: usize,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("manx-lab: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            nodes,
            mode,
            route_reflectors,
            ip_family,
            datastore,
            pods_per_node,
            runtime,
            stale_grace_secs,
            stale_scan_secs,
            ping,
        } => {
            if nodes < 2 {
                bail!("--nodes {nodes}: a lab needs at least 2 nodes");
            }
            if route_reflectors >= nodes {
                bail!("--route-reflectors {route_reflectors}: must be fewer than --nodes {nodes}");
            }
            let mut spec = LabSpec::new(&cli.id, nodes, mode);
            spec.route_reflectors = route_reflectors;
            spec.ip_family = ip_family;
            spec.datastore = datastore;
            spec.pods_per_node = pods_per_node;
            spec.runtime = runtime;
            spec.stale_grace_secs = stale_grace_secs;
            spec.stale_scan_secs = stale_scan_secs;
            progress(format!(
                "bringing up lab {:?}: {nodes} nodes, mode {mode:?}, {ip_family}, {route_reflectors} route reflectors, {datastore:?} datastore, pods by {runtime:?}",
                cli.id
            ));
            let t0 = std::time::Instant::now();
            let state = lab::up(spec)?;
            progress(format!(
                "lab {:?} set up in {:.1} s",
                cli.id,
                t0.elapsed().as_secs_f64()
            ));
            report(&state, ping.plan())
        }
        Cmd::Status { ping } => report(&LabState::load(&cli.id)?, ping.plan()),
        Cmd::BenchConvergence {
            trials,
            nodes,
            route_reflectors,
            ip_family,
        } => bench_convergence(&cli.id, trials, &nodes, route_reflectors, ip_family),
        Cmd::BenchRuntime { runtime, trials } => bench_runtime(&cli.id, runtime, trials),
        Cmd::BenchEncap {
            modes,
            rounds,
            secs,
            pings,
        } => {
            print!(
                "{}",
                lab::encap_bench::run_bench(&cli.id, &modes, rounds, secs, pings)?
            );
            Ok(())
        }
        Cmd::BenchFailover {
            trials,
            nodes,
            bfd_interval_ms,
            bfd_multiplier,
            keepalive_secs,
        } => {
            let spec = lab::failover_bench::FailoverSpec {
                trials,
                nodes,
                bfd_interval_ms,
                bfd_multiplier,
                keepalive_secs,
            };
            print!("{}", lab::failover_bench::run_bench(&cli.id, &spec)?);
            Ok(())
        }
        Cmd::Stats { secs } => stats(&LabState::load(&cli.id)?, secs),
        Cmd::RestartNode { node } => {
            let t0 = std::time::Instant::now();
            lab::restart_node(&cli.id, &node)?;
            progress(format!(
                "{node} restarted and ready in {:.1} s",
                t0.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Cmd::Down => {
            lab::down(&cli.id)?;
            progress(format!("lab {:?} removed", cli.id));
            Ok(())
        }
    }
}

fn report(state: &LabState, plan: lab::PingPlan) -> Result<()> {
    for node in &state.nodes {
        println!("=== {} ({}) manxctl node status", node.name, node.ip);
        match state.manxctl(node, &["node", "status"]) {
            Ok(out) => print!("{out}"),
            Err(e) => println!("  (unavailable: {e:#})"),
        }
    }
    for (node, routes) in lab::routes(state) {
        println!("=== {node}: ip route");
        print!("{routes}");
    }
    let pairs = lab::ping_pairs(&state.pods, plan).len();
    progress(format!(
        "pinging {pairs} pod pairs ({}, {} pods), in parallel",
        match plan {
            lab::PingPlan::Full => "every pod from every other pod".to_string(),
            lab::PingPlan::Sample { k } => format!(
                "a sample: each pod to {k} others, one pair per node pair; --ping-all for all"
            ),
        },
        state.pods.len()
    ));
    let t0 = std::time::Instant::now();
    let m = lab::ping(state, plan, Duration::from_secs(10));
    // Every pair when they are few; the failures always.
    if m.ok.len() + m.failed.len() <= 64 {
        for (a, b) in &m.ok {
            println!("ping {a} -> {b}: ok");
        }
    }
    for (a, b) in &m.failed {
        println!("ping {a} -> {b}: FAILED");
    }
    println!(
        "{} pod pairs reachable, {} failed ({:.1} s)",
        m.ok.len(),
        m.failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if !m.failed.is_empty() {
        bail!("{} pod pairs cannot reach each other", m.failed.len());
    }
    Ok(())
}

/// One size's results of `bench-convergence`.
struct ConvergenceRun {
    nodes: usize,
    trials: Vec<lab::Trial>,
    /// Mean of each ADD step over the trials, in first-seen order.
    steps: Vec<(String, Duration)>,
    /// manx-node CPU, summed over every node: idle (per second, before the
    /// trials) and during the trials.
    idle_cpu_per_s: Duration,
    trial_cpu: Duration,
    trial_wall: Duration,
}

impl ConvergenceRun {
    fn adds(&self) -> Vec<Duration> {
        self.trials.iter().map(|t| t.add).collect()
    }

    /// Per trial, for family `v6`: (last other node had it, the ADD).
    fn convergence(&self, v6: bool) -> Vec<(Duration, Duration)> {
        self.trials
            .iter()
            .filter_map(|t| {
                let c = t.convergence();
                c.iter()
                    .find(|(ip, _)| ip.is_ipv6() == v6)
                    .map(|(_, d)| (*d, t.add))
            })
            .collect()
    }

    fn step(&self, name: &str) -> Option<Duration> {
        self.steps.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// manx-node CPU per ADD over every node, less what they use idle.
    fn cpu_per_add(&self) -> (Duration, Duration) {
        let n = self.trials.len().max(1) as u32;
        let idle = self.idle_cpu_per_s.mul_f64(self.trial_wall.as_secs_f64());
        (self.trial_cpu / n, self.trial_cpu.saturating_sub(idle) / n)
    }
}

/// utime + stime of every running manx-node of the lab.
fn nodes_cpu(state: &LabState) -> Duration {
    let ticks: u64 = state
        .nodes
        .iter()
        .filter_map(|n| n.pid.and_then(cpu_ticks))
        .sum();
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_convergence(
    id: &str,
    trials: usize,
    sizes: &[usize],
    route_reflectors: usize,
    family: IpFamily,
) -> Result<()> {
    if trials == 0 {
        bail!("--trials 0: nothing to measure");
    }
    if let Some(n) = sizes.iter().find(|&&n| n < 2 || route_reflectors >= n) {
        bail!("--nodes {n}: a lab needs at least 2 nodes, and more than --route-reflectors");
    }
    let bin_dir = lab::default_bin_dir();
    let build = if bin_dir.ends_with("release") {
        "release"
    } else if bin_dir.ends_with("debug") {
        "debug"
    } else {
        "binaries"
    };
    println!(
        "bench-convergence: {trials} trials per size, {family}, {}, {build} build ({}); load average at start {}",
        if route_reflectors > 0 {
            format!("{route_reflectors} route reflectors")
        } else {
            "full mesh".into()
        },
        bin_dir.display(),
        loadavg()
    );
    let mut runs = Vec::new();
    for &nodes in sizes {
        let run = convergence_size(id, trials, nodes, route_reflectors, family)?;
        print_convergence(&run, family);
        runs.push(run);
    }
    if let [first, .., last] = &runs[..] {
        print_scaling(first, last);
    }
    Ok(())
}

/// Bring up a lab of `nodes`, run the trials, tear it down.
fn convergence_size(
    id: &str,
    trials: usize,
    nodes: usize,
    route_reflectors: usize,
    family: IpFamily,
) -> Result<ConvergenceRun> {
    let id = format!("{id}-conv");
    let mut spec = LabSpec::new(&id, nodes, Mode::Direct);
    spec.pods_per_node = 0;
    spec.ip_family = family;
    spec.route_reflectors = route_reflectors;
    let t_up = std::time::Instant::now();
    let mut state = lab::up(spec)?;
    progress(format!(
        "{nodes}-node lab up in {:.1} s; load average {}",
        t_up.elapsed().as_secs_f64(),
        loadavg()
    ));
    let res = (|| -> Result<ConvergenceRun> {
        lab::convergence_setup(&state)?;
        let netns: Vec<String> = state.nodes.iter().map(|n| n.netns.clone()).collect();
        let monitors = lab::RouteMonitors::start(&netns)?;
        // The nodes' idle CPU, after the pool change has settled.
        std::thread::sleep(Duration::from_secs(2));
        let idle_window = Duration::from_secs(5);
        let c0 = nodes_cpu(&state);
        std::thread::sleep(idle_window);
        let idle_cpu_per_s = (nodes_cpu(&state).saturating_sub(c0)).div_f64(5.0);
        let (c1, w1) = (nodes_cpu(&state), std::time::Instant::now());
        let mut done = Vec::new();
        for t in 0..trials {
            done.push(lab::convergence_trial(
                &mut state,
                &monitors,
                t % nodes,
                1000 + t,
            )?);
        }
        let (trial_cpu, trial_wall) = (nodes_cpu(&state).saturating_sub(c1), w1.elapsed());
        let mut steps: Vec<(String, Duration)> = Vec::new();
        let with_steps = done.iter().filter(|t| !t.steps.is_empty()).count().max(1) as u32;
        for t in &done {
            for (name, d) in &t.steps {
                match steps.iter_mut().find(|(n, _)| n == name) {
                    Some((_, sum)) => *sum += *d,
                    None => steps.push((name.clone(), *d)),
                }
            }
        }
        for (_, d) in &mut steps {
            *d /= with_steps;
        }
        Ok(ConvergenceRun {
            nodes,
            trials: done,
            steps,
            idle_cpu_per_s,
            trial_cpu,
            trial_wall,
        })
    })();
    let _ = lab::down(&id);
    res
}

fn print_convergence(run: &ConvergenceRun, family: IpFamily) {
    let n = run.nodes;
    println!(
        "{n} nodes, {} trials (CNI ADD claiming a new block -> its route in every other node's kernel, seen by a route monitor per node); load average {}:",
        run.trials.len(),
        loadavg()
    );
    let mut adds = run.adds();
    let (a50, a99) = (
        lab::percentile(&mut adds, 50.0),
        lab::percentile(&mut adds, 99.0),
    );
    let mut p99s = Vec::new();
    for (label, v6) in [("IPv4", false), ("IPv6", true)] {
        if (v6 && !family.v6()) || (!v6 && !family.v4()) {
            continue;
        }
        let pairs = run.convergence(v6);
        let mut c: Vec<Duration> = pairs.iter().map(|(c, _)| *c).collect();
        let mut after: Vec<Duration> = pairs.iter().map(|(c, a)| c.saturating_sub(*a)).collect();
        let (c50, c99) = (lab::percentile(&mut c, 50.0), lab::percentile(&mut c, 99.0));
        println!(
            "  {label} block on the last other node: p50 {:8.1} ms   p99 {:8.1} ms;  after the ADD returned   p50 {:8.1} ms   p99 {:8.1} ms",
            ms(c50),
            ms(c99),
            ms(lab::percentile(&mut after, 50.0)),
            ms(lab::percentile(&mut after, 99.0))
        );
        p99s.push((label, c50, c99));
    }
    println!(
        "  baseline: the CNI ADD alone    p50 {:8.1} ms   p99 {:8.1} ms",
        ms(a50),
        ms(a99)
    );
    if !run.steps.is_empty() {
        let parts: Vec<String> = run
            .steps
            .iter()
            .map(|(s, d)| format!("{s} {:.1}", ms(*d)))
            .collect();
        println!(
            "  CNI ADD steps, mean ms (MANX_CNI_TIMING; (parenthesised) ran alongside): {}",
            parts.join(" | ")
        );
    }
    let (cpu, above_idle) = run.cpu_per_add();
    println!(
        "  manx-node CPU summed over the {n} nodes: idle {:.1}% of a core ({:.2}% per node); per ADD {:.1} ms ({:.1} ms above idle, {:.2} ms per node)",
        run.idle_cpu_per_s.as_secs_f64() * 100.0,
        run.idle_cpu_per_s.as_secs_f64() * 100.0 / n as f64,
        ms(cpu),
        ms(above_idle),
        ms(above_idle) / n as f64
    );
    for (label, _, c99) in &p99s {
        println!(
            "  {label}: ratio convergence/ADD at p99: {:.2}; target p99 < 200 ms: {}",
            ms(*c99) / ms(a99).max(0.001),
            if ms(*c99) < 200.0 { "met" } else { "NOT met" }
        );
    }
    if let [(_, v4_50, v4_99), (_, v6_50, v6_99)] = p99s[..] {
        println!(
            "  IPv6 / IPv4 convergence (same trials): p50 {:.2}x, p99 {:.2}x",
            ms(v6_50) / ms(v4_50).max(0.001),
            ms(v6_99) / ms(v4_99).max(0.001)
        );
    }
}

/// The largest size against the smallest, same run and build: is the ADD's
/// cost independent of the cluster's size?
fn print_scaling(small: &ConvergenceRun, large: &ConvergenceRun) {
    let (mut s, mut l) = (small.adds(), large.adds());
    let ratio = |a: f64, b: f64| a / b.max(0.001);
    println!(
        "CNI ADD at {} nodes against {} nodes (baseline), same run and build:",
        large.nodes, small.nodes
    );
    println!(
        "  ADD p50 {:.1} vs {:.1} ms ({:.2}x), p99 {:.1} vs {:.1} ms ({:.2}x)",
        ms(lab::percentile(&mut l, 50.0)),
        ms(lab::percentile(&mut s, 50.0)),
        ratio(
            ms(lab::percentile(&mut l, 50.0)),
            ms(lab::percentile(&mut s, 50.0))
        ),
        ms(lab::percentile(&mut l, 99.0)),
        ms(lab::percentile(&mut s, 99.0)),
        ratio(
            ms(lab::percentile(&mut l, 99.0)),
            ms(lab::percentile(&mut s, 99.0))
        ),
    );
    let names: Vec<&String> = large.steps.iter().map(|(n, _)| n).collect();
    let parts: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let (a, b) = (large.step(n)?, small.step(n)?);
            Some(format!(
                "{n} {:.1} vs {:.1} ({:.2}x)",
                ms(a),
                ms(b),
                ratio(ms(a), ms(b))
            ))
        })
        .collect();
    if !parts.is_empty() {
        println!("  steps, mean ms: {}", parts.join(" | "));
    }
    let (lc, sc) = (large.cpu_per_add().1, small.cpu_per_add().1);
    println!(
        "  manx-node CPU per ADD above idle, all nodes: {:.1} vs {:.1} ms ({:.2}x for {:.1}x the nodes)",
        ms(lc),
        ms(sc),
        ratio(ms(lc), ms(sc)),
        large.nodes as f64 / small.nodes as f64
    );
}

fn bench_runtime(id: &str, runtime: Runtime, trials: usize) -> Result<()> {
    if runtime != Runtime::Podman {
        bail!(
            "--runtime {runtime:?}: only podman is benchmarked (ctr run --cni always uses the first conflist, so it cannot run the bridge baseline beside Manx)"
        );
    }
    if trials == 0 {
        bail!("--trials 0: nothing to measure");
    }
    let id = format!("{id}-rtb");
    let mut spec = LabSpec::new(&id, 2, Mode::Direct);
    spec.pods_per_node = 0;
    spec.runtime = runtime;
    let state = lab::up(spec)?;
    let res = (|| -> Result<[Vec<Duration>; 4]> {
        lab::runtime::add_baseline_network(&state, 0)?;
        let node = state.nodes[0].clone();
        let mut r: [Vec<Duration>; 4] = Default::default();
        // One warm-up of each, not counted (first use of the network, caches).
        for net in [lab::runtime::NETWORK, lab::runtime::BASELINE_NETWORK] {
            lab::runtime::podman_trial(&state, &node, net, "warmup")?;
        }
        for t in 0..trials {
            // Alternate which goes first, so drift hits both alike.
            let order = if t % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let net = [lab::runtime::NETWORK, lab::runtime::BASELINE_NETWORK][k];
                let (add, del) =
                    lab::runtime::podman_trial(&state, &node, net, &format!("bench{t}-{k}"))?;
                r[2 * k].push(add);
                r[2 * k + 1].push(del);
            }
        }
        Ok(r)
    })();
    let _ = lab::down(&id);
    let [mut madd, mut mdel, mut badd, mut bdel] = res?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "podman 4.3, {trials} trials each, interleaved (podman run -d --network N = create + CNI ADD + start; podman rm -f -t 0 = stop + CNI DEL + remove):"
    );
    let row = |what: &str, m: &mut Vec<Duration>, b: &mut Vec<Duration>| {
        let (m50, m99) = (lab::percentile(m, 50.0), lab::percentile(m, 99.0));
        let (b50, b99) = (lab::percentile(b, 50.0), lab::percentile(b, 99.0));
        println!(
            "  {what}  manx p50 {:7.1} ms p99 {:7.1} ms | baseline bridge+host-local p50 {:7.1} ms p99 {:7.1} ms | ratio manx/baseline p50 {:.2} p99 {:.2}",
            ms(m50),
            ms(m99),
            ms(b50),
            ms(b99),
            ms(m50) / ms(b50).max(0.001),
            ms(m99) / ms(b99).max(0.001)
        );
    };
    row("ADD (run)", &mut madd, &mut badd);
    row("DEL (rm) ", &mut mdel, &mut bdel);
    Ok(())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn stats(state: &LabState, secs: f64) -> Result<()> {
    let pids: Vec<(String, u32)> = state
        .nodes
        .iter()
        .filter_map(|n| n.pid.map(|p| (n.name.clone(), p)))
        .collect();
    let before: Vec<Option<u64>> = pids.iter().map(|(_, p)| cpu_ticks(*p)).collect();
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let wall = t0.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for ((name, pid), b) in pids.iter().zip(before) {
        let (Some(b), Some(a), Some(r)) = (b, cpu_ticks(*pid), rss_kib(*pid)) else {
            println!("{name}: manx-node {pid} not running");
            continue;
        };
        let pct = (a - b) as f64 / hz / wall * 100.0;
        cpu.push(pct);
        rss.push(r as f64 / 1024.0);
        println!(
            "{name}: pid {pid} rss {:.1} MiB, cpu {pct:.2}% of a core",
            r as f64 / 1024.0
        );
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (p(0.0), p(0.5), p(1.0))
    };
    if cpu.is_empty() {
        bail!("no manx-node of lab {:?} is running", state.spec.id);
    }
    let (r0, r50, r100) = summary(&mut rss);
    let (c0, c50, c100) = summary(&mut cpu);
    println!(
        "{} nodes over {wall:.1} s: manx-node rss min/p50/max {r0:.1} / {r50:.1} / {r100:.1} MiB; cpu min/p50/max {c0:.2} / {c50:.2} / {c100:.2}% of a core (targets: < 30 MiB, < 0.5%)",
        cpu.len()
    );
    // One line per CPU: `entries` is the table's, the counters per CPU.
    if let Ok(t) = std::fs::read_to_string("/proc/net/stat/arp_cache") {
        let rows: Vec<Vec<u64>> = t
            .lines()
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|x| u64::from_str_radix(x, 16).ok())
                    .collect::<Vec<u64>>()
            })
            .filter(|r| r.len() >= 13)
            .collect();
        if let Some(first) = rows.first() {
            let sum = |i: usize| rows.iter().map(|r| r[i]).sum::<u64>();
            println!(
                "host neighbour table (all namespaces): {} entries, {} forced gc runs, {} table-full events; gc_thresh3 {}",
                first[0],
                sum(10),
                sum(12),
                std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
                    .unwrap_or_default()
                    .trim()
            );
        }
    }
    Ok(())
}
