//! `manx-bgpd --config FILE`: the standalone BGP speaker; `manx-bgpd
//! --from-datastore`: a route reflector whose peers come from the datastore
//! (env `NODENAME` and the datastore environment). Thin: the logic is in
//! the `bgpd` library. SIGTERM/SIGINT send every peer a CEASE with an
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
    #[arg(
        long,
        short = 'c',
        env = "MANX_BGPD_CONFIG",
        required_unless_present = "from_datastore"
    )]
    config: Option<PathBuf>,
    /// Be a route reflector configured from the datastore (Node `NODENAME`).
    #[arg(long, conflicts_with = "config")]
    from_datastore: bool,
    /// Node name (with --from-datastore).
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// Directory of BGP password secrets (with --from-datastore).
    #[arg(long, env = "MANX_SECRETS_DIR", default_value = "/etc/manx/secrets")]
    secrets_dir: PathBuf,
    /// Control socket (with --from-datastore).
    #[arg(long, env = "MANX_BGPD_CONTROL")]
    control_socket: Option<PathBuf>,
    /// Shutdown message sent to peers on SIGTERM/SIGINT (RFC 8203).
    #[arg(long, default_value = "manx-bgpd shutting down")]
    shutdown_message: String,
}

fn main() -> anyhow::Result<()> {
    bgpd::alloc::one_malloc_arena();
    bgpd::alloc::trim_periodically(std::time::Duration::from_secs(5));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MANX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (speaker, control_path, follow) = if args.from_datastore {
        let name = args
            .nodename
            .clone()
            .context("--from-datastore needs the node name: set NODENAME or --nodename")?;
        let (speaker, follow) =
            bgpd::reflector::start(name, args.secrets_dir.clone(), args.control_socket.clone())
                .await?;
        let follow: std::pin::Pin<Box<dyn Future<Output = _>>> = Box::pin(follow);
        (speaker, args.control_socket.clone(), follow)
    } else {
        let path = args.config.clone().context("--config FILE is required")?;
        let cfg = bgpd::SpeakerConfig::load(&path)?;
        let control_path = cfg.control_socket.clone();
        let follow: std::pin::Pin<Box<dyn Future<Output = _>>> = Box::pin(std::future::pending());
        (bgpd::Speaker::start(cfg, None)?, control_path, follow)
    };
    let _control = match &control_path {
        Some(path) => Some(
            bgpd::control::serve(path, speaker.handle())
                .with_context(|| format!("control socket {}: cannot listen", path.display()))?,
        ),
        None => None,
    };
    tokio::select! {
        r = follow => {
            if let Err(e) = r {
                tracing::error!(error = %e, "following the datastore failed");
            }
        }
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    speaker.shutdown(&args.shutdown_message).await;
    if let Some(path) = control_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
