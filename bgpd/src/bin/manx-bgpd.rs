//! `manx-bgpd --config FILE`: the standalone BGP speaker. Thin: the logic is
//! in the `bgpd` library. SIGTERM/SIGINT send every peer a CEASE with an
//! RFC 8203 shutdown message, then exit 0.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Manx BGP speaker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML configuration file.
    #[arg(long, short = 'c', env = "MANX_BGPD_CONFIG")]
    config: PathBuf,
    /// Shutdown message sent to peers on SIGTERM/SIGINT (RFC 8203).
    #[arg(long, default_value = "manx-bgpd shutting down")]
    shutdown_message: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MANX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = bgpd::SpeakerConfig::load(&args.config)?;
    let control_path = cfg.control_socket.clone();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let speaker = bgpd::Speaker::start(cfg, None)?;
    let _control = match &control_path {
        Some(path) => Some(
            bgpd::control::serve(path, speaker.handle())
                .with_context(|| format!("control socket {}: cannot listen", path.display()))?,
        ),
        None => None,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    speaker.shutdown(&args.shutdown_message).await;
    if let Some(path) = control_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
