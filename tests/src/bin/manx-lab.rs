//! `manx-lab`: a whole Manx cluster on one machine (see `manx_e2e::lab`).

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use manx_e2e::lab::{self, LabSpec, LabState, Mode, StoreKind, progress};

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
        #[arg(long, default_value = "embedded")]
        datastore: StoreKind,
        #[arg(long, default_value_t = 1)]
        pods_per_node: usize,
    },
    /// Show the nodes, their BGP peers and routes, and ping every pod pair.
    Status,
    /// Remove every namespace, link, process and file the lab made.
    Down,
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
            datastore,
            pods_per_node,
        } => {
            if nodes < 2 {
                bail!("--nodes {nodes}: a lab needs at least 2 nodes");
            }
            if route_reflectors >= nodes {
                bail!("--route-reflectors {route_reflectors}: must be fewer than --nodes {nodes}");
            }
            let mut spec = LabSpec::new(&cli.id, nodes, mode);
            spec.route_reflectors = route_reflectors;
            spec.datastore = datastore;
            spec.pods_per_node = pods_per_node;
            progress(format!(
                "bringing up lab {:?}: {nodes} nodes, mode {mode:?}, {route_reflectors} route reflectors, {datastore:?} datastore",
                cli.id
            ));
            let state = lab::up(spec)?;
            report(&state)
        }
        Cmd::Status => report(&LabState::load(&cli.id)?),
        Cmd::Down => {
            lab::down(&cli.id)?;
            progress(format!("lab {:?} removed", cli.id));
            Ok(())
        }
    }
}

fn report(state: &LabState) -> Result<()> {
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
    progress(format!(
        "pinging every pod from every other pod ({} pods)",
        state.pods.len()
    ));
    let m = lab::ping_all(state, Duration::from_secs(10));
    for (a, b) in &m.ok {
        println!("ping {a} -> {b}: ok");
    }
    for (a, b) in &m.failed {
        println!("ping {a} -> {b}: FAILED");
    }
    println!(
        "{} pod pairs reachable, {} failed",
        m.ok.len(),
        m.failed.len()
    );
    if !m.failed.is_empty() {
        bail!("{} pod pairs cannot reach each other", m.failed.len());
    }
    Ok(())
}
