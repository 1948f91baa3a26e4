//! manx-bfdd (issue 20, part 2): BFD sessions that outlive the speaker that
//! asked for them. The real `manx-bfdd` binary runs in the Manx namespace;
//! the peer is an in-process BFD task in the peer namespace. A client
//! (what the speaker uses) asks for a session, goes away (as manx-node
//! under kill -9), and the peer sees no Down; a new client is told the
//! session is Up at once; the peer sees the C bit; killing manx-bfdd itself
//! is seen by the peer within the detection time.

use std::time::Duration;

use bgpd::bfd::State;
use bgpd::bfd::daemon;
use bgpd::bfd::io::{self, Event, Hops, PeerSpec, Sockets};
use testkit::{Daemon, Prereqs};
use tokio::sync::mpsc;

use crate::support::{Lab, MANX_LOG, MANX_V4, PEER_V4};

fn spec(peer: &str) -> PeerSpec {
    PeerSpec {
        peer: peer.parse().unwrap(),
        hops: Hops::Single,
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        detect_mult: 3,
        passive: false,
    }
}

/// The next event reaching `to` within `limit`, if any.
async fn next_to(rx: &mut mpsc::Receiver<Event>, to: State, limit: Duration) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.to == to => return Some(e),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

#[test]
fn sessions_survive_their_client_and_carry_the_c_bit() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let lab = Lab::new();
    let sock = lab.path("bfdd.sock");
    let mut bfdd = Daemon::spawn(
        &lab.manx,
        lab.dir.path(),
        "manx-bfdd",
        env!("CARGO_BIN_EXE_manx-bfdd"),
        &["--socket", sock.to_str().unwrap()],
        &[MANX_LOG],
    );
    let peer_sockets = lab
        .peer
        .run_in(|| Sockets::bind(PEER_V4.parse().unwrap()).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (peer_tx, mut peer_rx) = mpsc::channel(64);
        let peer = io::spawn(peer_sockets, peer_tx).unwrap();
        peer.add(spec(MANX_V4)).await;

        // The first "speaker" asks for the session.
        let (tx1, mut rx1) = mpsc::channel(64);
        let client1 = daemon::connect(sock.clone(), tx1);
        client1.add(spec(PEER_V4)).await;
        let up = next_to(&mut peer_rx, State::Up, Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("peer never Up:\n{}", bfdd.log_text()));
        assert!(
            up.remote_control_plane_independent,
            "manx-bfdd must set the C bit: {up:?}"
        );
        assert!(
            next_to(&mut rx1, State::Up, Duration::from_secs(5))
                .await
                .is_some()
        );

        // The speaker dies (its client and socket go): the session stays.
        drop(client1);
        drop(rx1);
        let flap = next_to(&mut peer_rx, State::Down, Duration::from_secs(2)).await;
        assert!(
            flap.is_none(),
            "the session went down with its client: {flap:?}"
        );

        // A new speaker hears at once that the session is Up, and asking
        // for it again changes nothing at the peer.
        let (tx2, mut rx2) = mpsc::channel(64);
        let client2 = daemon::connect(sock.clone(), tx2);
        let snap = next_to(&mut rx2, State::Up, Duration::from_secs(3))
            .await
            .expect("a new client is told the session is Up");
        assert_eq!(
            snap.from,
            State::Up,
            "a snapshot, not a transition: {snap:?}"
        );
        client2.add(spec(PEER_V4)).await;
        let flap = next_to(&mut peer_rx, State::Down, Duration::from_secs(1)).await;
        assert!(flap.is_none(), "re-adding flapped the session: {flap:?}");

        // manx-bfdd itself dies: the peer sees it within the detection time.
        bfdd.kill9();
        let down = next_to(&mut peer_rx, State::Down, Duration::from_secs(3)).await;
        assert!(down.is_some(), "the peer never noticed manx-bfdd die");
        drop(client2);
    });
}
