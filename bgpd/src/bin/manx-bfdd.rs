//! `manx-bfdd`: the BFD sessions of a node's BGP speaker in a process of
//! their own, so that they survive a restart of manx-node and advertise the
//! C bit (RFC 5880 §4.1, RFC 5882 §4.3.2; FRR's `bfdd` is the same idea).
//! Thin: the logic is in `bgpd::bfd::{io, daemon}`. Controlled over a
//! root-only unix socket (`--socket`, mode 0600): desired sessions in,
//! state changes out (see `bgpd::bfd::daemon`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;
use bgpd::bfd::{daemon, io};
use clap::Parser;
use tokio::sync::mpsc;

/// Manx BFD daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The control socket.
    #[arg(
        long,
        env = "MANX_BFDD_SOCKET",
        default_value = "/var/run/manx/bfdd.sock"
    )]
    socket: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    bgpd::alloc::one_malloc_arena();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MANX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let sockets = io::Sockets::bind(Ipv4Addr::UNSPECIFIED)
        .context("binding BFD's UDP ports 3784/4784 (is another BFD daemon running?)")?;
    let (events_tx, events) = mpsc::channel(256);
    let bfd = io::spawn_with(sockets, events_tx, true).context("starting the BFD task")?;
    let listener = daemon::bind(&args.socket)
        .with_context(|| format!("binding the control socket {}", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), "manx-bfdd serving");
    daemon::serve(listener, bfd, events, daemon::CLAIM_WINDOW).await;
    Ok(())
}
