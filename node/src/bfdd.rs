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
//! survive a restart of the unit (deploy/ does so). In a container it
//! cannot outlive the container (its PID namespace ends with manx-node):
//! there something else runs it (the `manx-bfdd` DaemonSet) and manx-node,
//! with `MANX_BFDD=external`, only connects ([`plan`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::BfddMode;

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

/// Where the speaker's BFD goes and what manx-node supervises, for
/// `MANX_BFDD` `mode` and the binary beside manx-node: (the control socket,
/// if BFD goes through manx-bfdd; the binary to keep running, if manx-node
/// starts it). `external` always uses the socket and starts nothing;
/// `spawn` without a binary leaves BFD in-process.
pub fn plan(
    mode: BfddMode,
    binary: Option<PathBuf>,
    run_dir: &Path,
) -> (Option<PathBuf>, Option<PathBuf>) {
    match (mode, binary) {
        (BfddMode::External, _) => (Some(socket_path(run_dir)), None),
        (BfddMode::Spawn, Some(bin)) => (Some(socket_path(run_dir)), Some(bin)),
        (BfddMode::Spawn, None) => (None, None),
    }
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
    fn external_uses_the_socket_and_starts_nothing() {
        let run = Path::new("/var/run/manx");
        let sock = Some(PathBuf::from("/var/run/manx/bfdd.sock"));
        let bin = Some(PathBuf::from("/usr/local/bin/manx-bfdd"));
        assert_eq!(
            plan(BfddMode::External, bin.clone(), run),
            (sock.clone(), None)
        );
        assert_eq!(plan(BfddMode::External, None, run), (sock.clone(), None));
        assert_eq!(plan(BfddMode::Spawn, bin.clone(), run), (sock, bin));
        assert_eq!(plan(BfddMode::Spawn, None, run), (None, None));
    }

    #[test]
    fn manx_bfdd_mode_parses_from_its_variable_and_refuses_others() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::config::NodeConfig::try_parse_from(
                std::iter::once("manx-node").chain(args.iter().copied()),
            )
        };
        assert_eq!(parse(&[]).unwrap().bfdd, BfddMode::Spawn);
        assert_eq!(
            parse(&["--bfdd", "External"]).unwrap().bfdd,
            BfddMode::External
        );
        let err = parse(&["--bfdd", "sidecar"]).unwrap_err().to_string();
        assert!(err.contains("spawn") && err.contains("external"), "{err}");
    }

    #[test]
    fn the_socket_lives_in_the_run_dir() {
        assert_eq!(
            socket_path(Path::new("/var/run/manx")),
            Path::new("/var/run/manx/bfdd.sock")
        );
    }
}
