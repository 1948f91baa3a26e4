//! manx-node entry point (thin: see the `manx_node` library).

use clap::Parser;
use manx_node::config::NodeConfig;

fn main() {
    let cfg = NodeConfig::parse();
    manx_node::logging::init(&cfg.log_format, &cfg.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(manx_node::agent::run(cfg)) {
        tracing::error!("manx-node: {e:#}");
        eprintln!("manx-node: {e:#}");
        std::process::exit(1);
    }
}
