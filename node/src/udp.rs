//! The UDP backend's data path as a process of its own (`manx-node udp-datapath`), and the
//! agent's supervisor that starts it.
//!
//! Why a separate process: the agent restarts (an upgrade, a crash, a datastore outage
//! that ends in an exit) must not stop pod traffic, as they do not stop the kernel's VXLAN
//! or IPIP. The data path needs nothing from the agent: felix-lite's routes `<block> via
//! <node> dev udp.manx` are its block-owner map and stay in the kernel across agent
//! restarts. So the agent only makes sure one copy runs while a pool uses `udpMode`
//! (`$MANX_RUN_DIR/udp.lock` is held by the running copy): a new agent finds it running
//! and leaves it alone. The data path exits by itself when felix-lite deletes `udp.manx`
//! (no UDP pool any more). It runs in a process group of its own, so signals to the
//! agent's group do not reach it; under systemd use `KillMode=process` for the agent's unit
//! (or give the data path a unit of its own) to keep it across agent restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use felix::{DataplaneInput, Tunnel};
use tokio::sync::watch;

/// `manx-node udp-datapath`: the UDP backend's packet forwarder.
#[derive(Debug, Parser)]
#[command(name = "manx-node udp-datapath")]
pub struct UdpArgs {
    /// The TUN device felix-lite creates.
    #[arg(long, default_value = felix::tunnel::udp::DEVICE)]
    pub device: String,
    /// UDP port, local and remote.
    #[arg(long, default_value_t = felix::tunnel::udp::PORT)]
    pub port: u16,
    /// TUN queues and worker threads (0: one per CPU, at most 8).
    #[arg(long, default_value_t = 0)]
    pub queues: usize,
    /// Lock file held while running (a second copy exits at once).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Log level.
    #[arg(long, env = "MANX_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Entry point of `manx-node udp-datapath`; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let args = UdpArgs::parse_from(args);
    crate::logging::init("text", &args.log_level, true);
    let cfg = felix::udp::UdpConfig {
        device: args.device,
        port: args.port,
        queues: args.queues,
        lock: args.lock,
    };
    match felix::udp::run(&cfg) {
        Ok(_) | Err(felix::udp::UdpError::DeviceGone(_)) => 0,
        Err(e @ felix::udp::UdpError::AlreadyRunning(_)) => {
            tracing::info!("{e}");
            0
        }
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

/// The lock the running data path holds.
pub fn lock_path(run_dir: &Path) -> PathBuf {
    run_dir.join("udp.lock")
}

/// Whether a data path holds `lock` (an absent file: none).
fn running(lock: &Path) -> bool {
    let Ok(f) = std::fs::File::options().write(true).open(lock) else {
        return false;
    };
    // Taking the lock means nobody holds it; it is released when `f` drops.
    !matches!(felix::udp::sys::try_lock(&f), Ok(true))
}

/// Keep one data path running while the dataplane input has a pool with `udpMode`:
/// checked on every input change and every 2 s (a data path that died is started again).
pub async fn supervise(mut input: watch::Receiver<DataplaneInput>, run_dir: PathBuf) {
    let lock = lock_path(&run_dir);
    loop {
        let wanted = input
            .borrow_and_update()
            .pools
            .iter()
            .any(|p| p.tunnel() == Some(Tunnel::Udp));
        if wanted && !running(&lock) {
            start(&run_dir, &lock).await;
        }
        tokio::select! {
            r = input.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn start(run_dir: &Path, lock: &Path) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the UDP data path: no path to manx-node");
            return;
        }
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("udp-datapath").arg("--lock").arg(lock);
    crate::detached::spawn(
        cmd,
        &run_dir.join("udp-datapath.log"),
        "the UDP data path",
        true,
    );
}
