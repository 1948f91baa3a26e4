//! Malformed input driven by ExaBGP 4.2: an UPDATE carrying an
//! unrecognized well-known attribute (type 99, flags 0x40). RFC 4271 §6.3
//! (unchanged by RFC 7606) prescribes NOTIFICATION 3/2 Unrecognized
//! Well-known Attribute with the attribute as data. The well-formed route
//! ExaBGP sends first is installed, then dropped with the session.

use std::time::Duration;

use testkit::{Daemon, Prereqs, eventually};

use crate::support::{Lab, Manx, ManxPeer, PEER_V4};

const EXABGP: &str = "/usr/sbin/exabgp";

#[test]
fn heavy_malformed_exabgp_unrecognized_well_known_attribute() {
    if !Prereqs::new()
        .root()
        .command("ip")
        .file(EXABGP, "exabgp")
        .ok()
    {
        return;
    }
    let lab = Lab::new();
    let conf = lab.path("exabgp.conf");
    std::fs::write(
        &conf,
        r#"
neighbor 198.18.0.1 {
    router-id 198.18.0.2;
    local-address 198.18.0.2;
    local-as 65002;
    peer-as 64512;
    hold-time 9;
    family { ipv4 unicast; }
    static {
        route 10.204.0.0/24 next-hop 198.18.0.2;
        route 10.205.0.0/24 next-hop 198.18.0.2 attribute [ 0x63 0x40 0x0102 ];
    }
}
"#,
    )
    .unwrap();
    let manx = Manx::start(
        &lab,
        64512,
        &[ManxPeer::new(PEER_V4, 65002)],
        &["10.65.0.0/26"],
    );
    let env = [
        ("exabgp.daemon.user", "root"),
        ("exabgp.daemon.daemonize", "false"),
        ("exabgp.api.cli", "false"),
        ("exabgp.log.destination", "stdout"),
        ("exabgp.tcp.connections", "0"),
    ];
    let exa = Daemon::spawn(
        &lab.peer,
        lab.dir.path(),
        "exabgp",
        EXABGP,
        &[conf.to_str().unwrap()],
        &env,
    );

    let reset = eventually(Duration::from_secs(60), || {
        manx.peers()
            .first()
            .and_then(|p| p.last_error.clone())
            .is_some_and(|e| e.contains("sent NOTIFICATION 3/2"))
    });
    assert!(
        reset,
        "manx-bgpd never sent 3/2: {:#?}\n{}",
        manx.peers(),
        exa.log_text()
    );
    // The route from the reset session is gone, and the daemon lives on.
    assert!(!manx.has_route("10.205.0.0/24"));
    assert!(manx.control.exists() && !manx.daemon.log_text().contains("panicked"));
}
