//! The speaker actor end to end on 127.0.0.0/8, in-process: two speakers
//! (or one and a hand-written fake peer) without namespaces or external
//! daemons. Covers connection collisions (RFC 4271 §6.8), route exchange
//! and withdrawal, the RouteUpdate channel, CEASE with an RFC 8203 message,
//! and the hold timer on a paused clock.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bgpd::config::ListenConfig;
use bgpd::fsm::State;
use bgpd::{PeerConfig, RouteUpdate, Speaker, SpeakerConfig};
use testkit::eventually_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn speaker_config(asn: u32, addr: &str) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(asn, addr.parse().unwrap());
    cfg.listen = Some(ListenConfig {
        address: ip(addr),
        port: 0,
    });
    cfg.hold_time = 9;
    cfg.connect_retry_time = 1;
    cfg
}

fn peer(addr: &str, port: u16, asn: u32, source: &str) -> PeerConfig {
    let mut p = PeerConfig::new(ip(addr), asn);
    p.port = port;
    p.source_address = Some(ip(source));
    p
}

async fn state_of(s: &bgpd::SpeakerHandle, addr: &str) -> Option<State> {
    s.peers()
        .await
        .into_iter()
        .find(|p| p.address == ip(addr))
        .map(|p| p.state)
}

/// Two active speakers dial each other at once: §6.8 collision detection
/// leaves exactly one session, routes flow both ways, withdrawals too, and
/// a shutdown reaches the other side as CEASE with its message.
#[tokio::test]
async fn two_speakers_collide_exchange_and_shut_down() {
    let (route_tx, mut route_rx) = mpsc::unbounded_channel();
    let mut a_cfg = speaker_config(64512, "127.0.0.11");
    a_cfg.networks = vec!["10.65.1.0/26".parse().unwrap()];
    let mut b_cfg = speaker_config(65001, "127.0.0.12");
    b_cfg.networks = vec!["10.66.1.0/26".parse().unwrap()];
    let a = Speaker::start(a_cfg, Some(route_tx)).unwrap();
    let b = Speaker::start(b_cfg, None).unwrap();
    let (ah, bh) = (a.handle(), b.handle());
    // Both peers active: each dials the other, so the connections collide.
    ah.set_peers(vec![peer(
        "127.0.0.12",
        b.listen_addr().unwrap().port(),
        65001,
        "127.0.0.11",
    )]);
    bh.set_peers(vec![peer(
        "127.0.0.11",
        a.listen_addr().unwrap().port(),
        64512,
        "127.0.0.12",
    )]);

    let up = eventually_async(Duration::from_secs(30), || async {
        state_of(&ah, "127.0.0.12").await == Some(State::Established)
            && state_of(&bh, "127.0.0.11").await == Some(State::Established)
    })
    .await;
    assert!(
        up,
        "no session: {:?} / {:?}",
        ah.peers().await,
        bh.peers().await
    );

    let learnt = eventually_async(Duration::from_secs(10), || async {
        ah.routes()
            .await
            .iter()
            .any(|r| r.prefix.to_string() == "10.66.1.0/26")
            && bh
                .routes()
                .await
                .iter()
                .any(|r| r.prefix.to_string() == "10.65.1.0/26")
    })
    .await;
    assert!(
        learnt,
        "routes did not flow: {:?} / {:?}",
        ah.routes().await,
        bh.routes().await
    );
    // eBGP: B prepended its AS and set itself as next hop.
    let r = ah
        .routes()
        .await
        .into_iter()
        .find(|r| r.prefix.to_string() == "10.66.1.0/26")
        .unwrap();
    assert_eq!(r.as_path, vec![65001]);
    assert_eq!(r.next_hop, Some(ip("127.0.0.12")));
    // The kernel channel heard of it.
    let update = tokio::time::timeout(Duration::from_secs(5), route_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        update,
        RouteUpdate::Add {
            prefix: "10.66.1.0/26".parse().unwrap(),
            next_hops: vec![ip("127.0.0.12")],
            peer: ip("127.0.0.12")
        }
    );

    // Withdraw on B → gone on A, and the kernel channel says Remove.
    bh.withdraw("10.66.1.0/26".parse().unwrap()).await;
    let gone = eventually_async(Duration::from_secs(10), || async {
        !ah.routes()
            .await
            .iter()
            .any(|r| r.prefix.to_string() == "10.66.1.0/26")
    })
    .await;
    assert!(gone);
    let update = tokio::time::timeout(Duration::from_secs(5), route_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        update,
        RouteUpdate::Remove {
            prefix: "10.66.1.0/26".parse().unwrap()
        }
    );
    let status = ah.peers().await;
    assert_eq!(
        (status[0].prefixes_received, status[0].prefixes_advertised),
        (0, 1),
        "{status:?}"
    );

    // Shutdown of B: A sees CEASE / Administrative Shutdown with the message.
    b.shutdown("maintenance window").await;
    let ceased = eventually_async(Duration::from_secs(10), || async {
        ah.peers().await[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("6/2") && e.contains("maintenance window"))
    })
    .await;
    assert!(ceased, "{:?}", ah.peers().await);
    assert_ne!(state_of(&ah, "127.0.0.12").await, Some(State::Established));
    a.shutdown("done").await;
}

/// `set_networks` reconciles the originated prefixes: the peer sees the
/// additions and the withdrawals.
#[tokio::test]
async fn set_networks_reconciles_originated_prefixes() {
    let mut a_cfg = speaker_config(64512, "127.0.0.91");
    a_cfg.networks = vec![
        "10.65.9.0/26".parse().unwrap(),
        "10.65.9.64/26".parse().unwrap(),
    ];
    let a = Speaker::start(a_cfg, None).unwrap();
    let b = Speaker::start(speaker_config(65092, "127.0.0.92"), None).unwrap();
    let (ah, bh) = (a.handle(), b.handle());
    ah.set_peers(vec![peer(
        "127.0.0.92",
        b.listen_addr().unwrap().port(),
        65092,
        "127.0.0.91",
    )]);
    let mut p = peer(
        "127.0.0.91",
        a.listen_addr().unwrap().port(),
        64512,
        "127.0.0.92",
    );
    p.passive = true;
    bh.set_peers(vec![p]);
    let prefixes = |h: bgpd::SpeakerHandle| async move {
        let mut v: Vec<String> = h
            .routes()
            .await
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        v.sort();
        v
    };
    let first = eventually_async(Duration::from_secs(30), || async {
        prefixes(bh.clone()).await == ["10.65.9.0/26", "10.65.9.64/26"]
    })
    .await;
    assert!(first, "{:?}", bh.routes().await);
    ah.set_networks(vec![
        "10.65.9.64/26".parse().unwrap(),
        "10.65.9.128/26".parse().unwrap(),
    ]);
    let second = eventually_async(Duration::from_secs(10), || async {
        prefixes(bh.clone()).await == ["10.65.9.128/26", "10.65.9.64/26"]
    })
    .await;
    assert!(second, "{:?}", bh.routes().await);
}

/// Removing a peer sends it CEASE / Peer De-configured and drops its routes.
#[tokio::test]
async fn removing_a_peer_ceases_and_flushes() {
    let a = Speaker::start(speaker_config(64512, "127.0.0.21"), None).unwrap();
    let mut b_cfg = speaker_config(64512, "127.0.0.22");
    b_cfg.networks = vec!["10.66.2.0/26".parse().unwrap()];
    let b = Speaker::start(b_cfg, None).unwrap();
    let (ah, bh) = (a.handle(), b.handle());
    ah.set_peers(vec![peer(
        "127.0.0.22",
        b.listen_addr().unwrap().port(),
        64512,
        "127.0.0.21",
    )]);
    // B is passive: only A dials.
    let mut p = peer(
        "127.0.0.21",
        a.listen_addr().unwrap().port(),
        64512,
        "127.0.0.22",
    );
    p.passive = true;
    bh.set_peers(vec![p]);
    let learnt = eventually_async(Duration::from_secs(30), || async {
        ah.routes()
            .await
            .iter()
            .any(|r| r.prefix.to_string() == "10.66.2.0/26")
    })
    .await;
    assert!(learnt, "{:?}", ah.peers().await);
    // iBGP: LOCAL_PREF 100, AS path empty, next hop B.
    let r = ah.routes().await.into_iter().next().unwrap();
    assert_eq!(
        (r.as_path.len(), r.local_pref, r.next_hop),
        (0, Some(100), Some(ip("127.0.0.22")))
    );

    ah.set_peers(Vec::new());
    let flushed = eventually_async(Duration::from_secs(10), || async {
        ah.routes().await.is_empty() && ah.peers().await.is_empty()
    })
    .await;
    assert!(flushed);
    let ceased = eventually_async(Duration::from_secs(10), || async {
        bh.peers().await[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("6/3"))
    })
    .await;
    assert!(ceased, "{:?}", bh.peers().await);
}

/// A fake peer that completes the handshake with hold time 3 and then goes
/// silent: on a paused clock, the speaker keeps sending KEEPALIVEs every
/// second and sends NOTIFICATION 4/0 once 3 s pass without a message
/// (RFC 4271 §4.4, §6.5, §10).
#[tokio::test(start_paused = true)]
async fn hold_timer_expires_on_a_silent_peer() {
    let fake = tokio::net::TcpListener::bind("127.0.0.31:0").await.unwrap();
    let fake_port = fake.local_addr().unwrap().port();
    let mut cfg = speaker_config(64512, "127.0.0.32");
    cfg.listen = None;
    cfg.peers = vec![peer("127.0.0.31", fake_port, 65031, "127.0.0.32")];
    let speaker = Speaker::start(cfg, None).unwrap();

    let (mut conn, _) = fake.accept().await.unwrap();
    let (t, _) = read_msg(&mut conn).await;
    assert_eq!(t, 1, "OPEN first");
    // OPEN: version 4, AS 65031, hold 3, id 127.0.0.31, no capabilities.
    let mut open = vec![0xff; 16];
    open.extend_from_slice(&29u16.to_be_bytes());
    open.push(1);
    open.extend_from_slice(&[4, 0xfe, 0x07, 0, 3, 127, 0, 0, 31, 0]);
    conn.write_all(&open).await.unwrap();
    let mut keepalive = vec![0xff; 16];
    keepalive.extend_from_slice(&[0, 19, 4]);
    conn.write_all(&keepalive).await.unwrap();

    let start = tokio::time::Instant::now();
    let mut keepalives = 0;
    let notification = loop {
        match read_msg(&mut conn).await {
            (4, _) => keepalives += 1,
            (3, body) => break body,
            (2, _) => {} // End-of-RIB
            (t, _) => panic!("unexpected message type {t}"),
        }
    };
    assert_eq!(&notification[..2], &[4, 0], "Hold Timer Expired");
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "fired early: {:?}",
        start.elapsed()
    );
    // KEEPALIVE on entering OpenConfirm, then one per second (hold / 3).
    assert!(keepalives >= 2, "keepalives: {keepalives}");
    let st = speaker.handle().peers().await;
    assert!(
        st[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("4/0")),
        "{st:?}"
    );
}

async fn read_msg(conn: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 19];
    conn.read_exact(&mut header).await.unwrap();
    let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
    let mut body = vec![0u8; len - 19];
    conn.read_exact(&mut body).await.unwrap();
    (header[18], body)
}

fn raw_open(asn: u16, hold: u16, id: [u8; 4]) -> Vec<u8> {
    let mut open = vec![0xff; 16];
    open.extend_from_slice(&29u16.to_be_bytes());
    open.push(1);
    open.push(4);
    open.extend_from_slice(&asn.to_be_bytes());
    open.extend_from_slice(&hold.to_be_bytes());
    open.extend_from_slice(&id);
    open.push(0);
    open
}

fn raw_keepalive() -> Vec<u8> {
    let mut k = vec![0xff; 16];
    k.extend_from_slice(&[0, 19, 4]);
    k
}

/// Read until a NOTIFICATION (code, subcode) or another message type.
async fn next_non_keepalive(conn: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    loop {
        let m = read_msg(conn).await;
        if m.0 != 4 {
            return m;
        }
    }
}

/// RFC 4271 §6.8 with a fake peer that holds two connections to the
/// speaker: the one the speaker dialled and one it dialled itself. The
/// connection initiated by the higher BGP identifier survives; the other
/// gets CEASE / Connection Collision Resolution (6/7).
async fn collision(fake_id: [u8; 4], fake_addr: &str, speaker_addr: &str, expect_kept: &str) {
    let fake = tokio::net::TcpListener::bind((fake_addr, 0)).await.unwrap();
    let mut cfg = speaker_config(64512, speaker_addr);
    cfg.peers = vec![peer(
        fake_addr,
        fake.local_addr().unwrap().port(),
        65041,
        speaker_addr,
    )];
    let speaker = Speaker::start(cfg, None).unwrap();
    let speaker_port = speaker.listen_addr().unwrap().port();

    // Connection 1: the speaker dials us; it sends OPEN (OpenSent).
    let (mut dialled, _) = fake.accept().await.unwrap();
    assert_eq!(read_msg(&mut dialled).await.0, 1);
    // Connection 2: we dial the speaker from the peer's address.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip(fake_addr), 0)).unwrap();
    let mut ours = sock
        .connect(SocketAddr::new(ip(speaker_addr), speaker_port))
        .await
        .unwrap();
    assert_eq!(
        read_msg(&mut ours).await.0,
        1,
        "the speaker answers the second connection with OPEN"
    );

    // Our OPEN on the connection we initiated reveals our identifier.
    ours.write_all(&raw_open(65041, 9, fake_id)).await.unwrap();
    let (mut winner, mut loser) = if expect_kept == "remote" {
        (ours, dialled)
    } else {
        (dialled, ours)
    };
    if expect_kept == "local" {
        // The speaker's own connection survives: finish the handshake there.
        winner
            .write_all(&raw_open(65041, 9, fake_id))
            .await
            .unwrap();
    }
    let (t, body) = next_non_keepalive(&mut loser).await;
    assert_eq!(
        (t, &body[..2]),
        (3, &[6u8, 7][..]),
        "the losing connection gets CEASE 6/7"
    );
    winner.write_all(&raw_keepalive()).await.unwrap();
    let h = speaker.handle();
    let up = eventually_async(Duration::from_secs(10), || async {
        state_of(&h, fake_addr).await == Some(State::Established)
    })
    .await;
    assert!(up, "{:?}", h.peers().await);
    // The surviving connection carries the session: End-of-RIB arrives on it.
    let (t, _) = next_non_keepalive(&mut winner).await;
    assert_eq!(t, 2, "UPDATE (End-of-RIB) on the surviving connection");
}

#[tokio::test]
async fn collision_keeps_the_connection_of_the_higher_identifier_remote() {
    // Fake id 127.0.0.200 > speaker id 127.0.0.42: keep the fake's connection.
    collision([127, 0, 0, 200], "127.0.0.41", "127.0.0.42", "remote").await;
}

#[tokio::test]
async fn collision_keeps_the_connection_of_the_higher_identifier_local() {
    // Fake id 127.0.0.1 < speaker id 127.0.0.52: keep the speaker's connection.
    collision([127, 0, 0, 1], "127.0.0.51", "127.0.0.52", "local").await;
}
