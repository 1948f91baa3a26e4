//! RFC 4271 §8.2.2: a session that fails in OpenSent (the peer accepted
//! TCP, then closed) goes to Active and keeps accepting: the peer's own
//! connection, a moment later, is answered with our OPEN, not refused in
//! Idle until a back-off runs out. Loopback only (127.0.61.0/24).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::config::{ListenConfig, PeerConfig, SpeakerConfig};
use crate::fsm::State;
use crate::packet::{Message, Open, SessionCaps, decode_message, encode_message};
use crate::speaker::Speaker;

const ASN: u32 = 64512;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn state(sp: &Speaker, peer: IpAddr) -> Option<State> {
    sp.handle()
        .peers()
        .await
        .into_iter()
        .find(|p| p.address == peer)
        .map(|p| p.state)
}

#[tokio::test]
async fn a_failure_in_open_sent_keeps_accepting_the_peers_connection() {
    let us = ip("127.0.61.1");
    let them = ip("127.0.61.2");
    // The peer's listener: it takes our connection and closes it once our
    // OPEN is in (a peer restarting, or one that is not ready).
    let listener = TcpListener::bind(SocketAddr::new(them, 0)).await.unwrap();
    let their_port = listener.local_addr().unwrap().port();

    let mut cfg = SpeakerConfig::new(ASN, "127.0.61.1".parse().unwrap());
    cfg.listen = Some(ListenConfig {
        address: us,
        port: 0,
    });
    cfg.connect_retry_time = 30;
    let mut peer = PeerConfig::new(them, ASN);
    peer.port = their_port;
    peer.source_address = Some(us);
    cfg.peers = vec![peer];
    let sp = Speaker::start(cfg, None).unwrap();
    let our_addr = sp.listen_addr().unwrap();

    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the speaker dials")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(n > 0, "our OPEN arrives");
    drop(conn);
    drop(listener);

    // The speaker has seen the close: no longer OpenSent.
    let mut after = None;
    for _ in 0..200 {
        match state(&sp, them).await {
            Some(State::OpenSent) | None => tokio::time::sleep(Duration::from_millis(10)).await,
            s => {
                after = s;
                break;
            }
        }
    }
    assert_eq!(
        after,
        Some(State::Active),
        "RFC 4271 §8.2.2 OpenSent + Event 18"
    );

    // Now the peer dials us: we answer with an OPEN.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(them, 0)).unwrap();
    let mut stream = sock.connect(our_addr).await.unwrap();
    let open = Open::new(ASN, 90, "127.0.61.2".parse().unwrap(), vec![]);
    let caps = SessionCaps::default();
    let mut out = Vec::new();
    encode_message(&Message::Open(open), &caps, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some((msg, _)) = decode_message(&got, &caps).unwrap() {
                return Some(msg);
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    assert!(
        matches!(answered, Some(Message::Open(_))),
        "the speaker answers our connection with an OPEN, got {answered:?}"
    );
    sp.shutdown("test done").await;
}
