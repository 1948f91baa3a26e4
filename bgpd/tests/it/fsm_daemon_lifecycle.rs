//! The `manx-bgpd` binary's lifecycle on 127.0.0.0/8 (no namespaces):
//! starts from YAML, serves the control socket, exits 0 on SIGTERM, and
//! refuses a bad configuration with a message naming the file and the fix.

use std::process::Command;
use std::time::Duration;

use testkit::{Daemon, eventually};

#[test]
fn daemon_serves_control_socket_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bgpd.sock");
    let cfg = dir.path().join("bgpd.yaml");
    std::fs::write(
        &cfg,
        format!(
            "asNumber: 64512\nrouterId: 198.18.0.1\nlisten: {{address: 127.0.0.81, port: 0}}\n\
             controlSocket: {}\npeers:\n  - {{address: 127.0.0.82, asNumber: 65082, passive: true, type: node specific}}\n\
             networks: [10.65.8.0/26]\n",
            sock.display()
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(
        Command::new(env!("CARGO_BIN_EXE_manx-bgpd")),
        dir.path(),
        "manx-bgpd",
        &["--config", cfg.to_str().unwrap()],
        &[],
    );
    assert!(
        eventually(Duration::from_secs(10), || bgpd::query_peers(&sock).is_ok()),
        "control socket never answered"
    );
    let peers = bgpd::query_peers(&sock).unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_type, bgpd::PeerType::NodeSpecific);
    assert_eq!(peers[0].state, bgpd::fsm::State::Active);
    assert!(
        peers[0].since.ends_with('Z'),
        "RFC 3339 UTC: {}",
        peers[0].since
    );
    let routes = bgpd::query_routes(&sock).unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].prefix.to_string(), "10.65.8.0/26");

    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "manx-bgpd did not exit 0 within 10 s of SIGTERM"
    );
    assert!(!sock.exists(), "control socket left behind");
}

#[test]
fn daemon_refuses_a_bad_config_with_a_useful_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "routerId: 198.18.0.1\nholdTime: 2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_manx-bgpd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holdTime 2") && err.contains("at least 3"),
        "{err}"
    );

    let missing = dir.path().join("missing.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_manx-bgpd"))
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.yaml") && err.contains("cannot read"),
        "{err}"
    );
}
