//! manx-bfdd, started by manx-node: BFD in a process of its own so that a
//! restart of manx-node (kill -9, upgrade) keeps the BFD sessions Up and
//! its peers keep our routes through graceful restart, while a dead node
//! still loses them within the detection time (RFC 5882 §4.3.2; see
//! `bgpd::bfd::daemon`).
//!
//! manx-node starts it (not a unit of its own) for the same reason it
//! starts the UDP data path: one thing to deploy, and it is needed only
//! once a peer has BFD. It runs in its own process group, so signals to
//! the agent's group (a restart) leave it running; its socket is
//! `$MANX_RUN_DIR/bfdd.sock` (0600), its log `$MANX_RUN_DIR/bfdd.log`.
//! Under systemd the agent's unit needs `KillMode=process` for it to
//! survive a restart of the unit (deploy/ does so).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

/// manx-bfdd's control socket in `run_dir`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("bfdd.sock")
}

/// The manx-bfdd binary beside manx-node, if there is one.
pub fn binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.join("manx-bfdd");
    bin.exists().then_some(bin)
}

/// Whether a manx-bfdd answers on `socket`.
fn running(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Keep manx-bfdd running while `wanted` (a peer has BFD): checked on every
/// change and every 2 s (one that died is started again). A manx-bfdd left
/// by an earlier manx-node is used as it is.
pub async fn supervise(bin: PathBuf, run_dir: PathBuf, mut wanted: watch::Receiver<bool>) {
    let socket = socket_path(&run_dir);
    loop {
        if *wanted.borrow_and_update() && !running(&socket) {
            start(&bin, &run_dir, &socket).await;
        }
        tokio::select! {
            r = wanted.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn start(bin: &Path, run_dir: &Path, socket: &Path) {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--socket").arg(socket);
    if crate::detached::spawn(cmd, &run_dir.join("bfdd.log"), "manx-bfdd", false) {
        // Give it a moment to bind before the next check.
        for _ in 0..20 {
            if running(socket) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_lives_in_the_run_dir() {
        assert_eq!(
            socket_path(Path::new("/var/run/manx")),
            Path::new("/var/run/manx/bfdd.sock")
        );
    }
}
