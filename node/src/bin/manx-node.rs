//! manx-node entry point (thin: see the `manx_node` library).

fn main() {
    let cfg = <manx_node::config::NodeConfig as clap::Parser>::parse();
    eprintln!(
        "manx-node {}: not wired yet ({})",
        env!("CARGO_PKG_VERSION"),
        cfg.node_name()
    );
    std::process::exit(1);
}
