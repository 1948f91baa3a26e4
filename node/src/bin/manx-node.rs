//! manx-node entry point (thin: see the `manx_node` library).

use clap::Parser;
use manx_node::config::NodeConfig;

fn main() {
    // One malloc arena, as manx-bgpd (see bgpd::alloc): before any thread.
    bgpd::alloc::one_malloc_arena();
    // The UDP backend's data path, a process of its own (see manx_node::udp).
    if std::env::args().nth(1).as_deref() == Some("udp-datapath") {
        let args = std::env::args().skip(1);
        std::process::exit(manx_node::udp::main(args));
    }
    bgpd::alloc::trim_periodically(std::time::Duration::from_secs(5));
    let cfg = NodeConfig::parse();
    // A level the operator gave wins over BGPConfiguration logSeverityScreen.
    let explicit = std::env::var_os("MANX_LOG_LEVEL").is_some()
        || std::env::args().any(|a| a.starts_with("--log-level"));
    manx_node::logging::init(&cfg.log_format, &cfg.log_level, explicit);
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
