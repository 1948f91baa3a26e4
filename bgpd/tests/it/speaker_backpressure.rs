//! Backpressure of the speaker against real sockets on loopback
//! (127.0.72.x): a route-reflector client that stops reading while another
//! churns. Its pending output collapses to the latest state per prefix
//! (what it learns when it reads again is the final table, End-of-RIB
//! included), and a client that reads nothing for the send stall timeout
//! is dropped with Cease / Out of Resources (RFC 4486 §4, subcode 8).
//! No timing is asserted: the waits are generous bounds on outcomes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd::config::ListenConfig;
use bgpd::fsm::State;
use bgpd::packet::{
    AfiSafi, AsPath, Capability, Message, Nlri, Open, Origin, PathAttribute, SessionCaps, Update,
    decode_message, encode_message,
};
use bgpd::{PeerConfig, Speaker, SpeakerConfig};
use ipnetwork::{IpNetwork, Ipv4Network};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ASN: u32 = 64512;
const BOUND: Duration = Duration::from_secs(120);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn prefix(n: u32) -> IpNetwork {
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + n * 64), 26).unwrap())
}

fn speaker(me: &str, clients: &[&str], stall: u64) -> Speaker {
    let mut cfg = SpeakerConfig::new(ASN, ip(me));
    cfg.listen = Some(ListenConfig {
        address: IpAddr::V4(ip(me)),
        port: 0,
    });
    cfg.cluster_id = Some(ip("1.1.1.1"));
    cfg.send_stall_timeout = stall;
    cfg.peers = clients
        .iter()
        .map(|c| {
            let mut p = PeerConfig::new(IpAddr::V4(ip(c)), ASN);
            p.passive = true;
            p.rr_client = true;
            p
        })
        .collect();
    Speaker::start(cfg, None).expect("speaker starts")
}

fn encode(msgs: &[Message], caps: &SessionCaps) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_message(m, caps, &mut out).unwrap();
    }
    out
}

/// Connect from `src` (small receive buffer: a non-reader blocks us soon)
/// and exchange OPEN/KEEPALIVE; returns the stream, the caps and what was
/// read past the KEEPALIVE.
async fn establish(src: &str, rr: SocketAddr) -> (TcpStream, SessionCaps, Vec<u8>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(ip(src)), 0)).unwrap();
    let mut s = sock.connect(rr).await.expect("connect");
    let open = Open::new(
        ASN,
        30,
        ip(src),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(ASN),
        ],
    );
    let mut caps = SessionCaps::default();
    s.write_all(&encode(
        &[Message::Open(open.clone()), Message::Keepalive],
        &caps,
    ))
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut got_open = false;
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "{src}: closed before Established");
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some((msg, used)) = decode_message(&buf[start..], &caps).unwrap() {
            start += used;
            match msg {
                Message::Open(o) => {
                    caps = SessionCaps::negotiate(&open, &o);
                    got_open = true;
                }
                Message::Keepalive if got_open => return (s, caps, buf[start..].to_vec()),
                other => panic!("{src}: unexpected {other:?}"),
            }
        }
        buf.drain(..start);
    }
}

/// B's churn: `rounds` times announce every prefix then withdraw every
/// other one; the final table is the odd prefixes announced.
fn churn(src: &str, n: u32, rounds: u32, caps: &SessionCaps) -> Vec<u8> {
    let all: Vec<Nlri> = (0..n).map(|i| Nlri::new(prefix(i))).collect();
    let even: Vec<Nlri> = (0..n).step_by(2).map(|i| Nlri::new(prefix(i))).collect();
    let mut msgs = Vec::new();
    for _ in 0..rounds {
        for c in all.chunks(400) {
            msgs.push(Message::Update(Update {
                attributes: vec![
                    PathAttribute::Origin(Origin::Igp),
                    PathAttribute::AsPath(AsPath::default()),
                    PathAttribute::NextHop(ip(src)),
                    PathAttribute::LocalPref(100),
                ],
                nlri: c.to_vec(),
                ..Default::default()
            }));
        }
        for c in even.chunks(400) {
            msgs.push(Message::Update(Update {
                withdrawn: c.to_vec(),
                ..Default::default()
            }));
        }
    }
    encode(&msgs, caps)
}

/// One UPDATE round announcing `n` prefixes with MULTI_EXIT_DISC `med`.
fn announce_with_med(src: &str, n: u32, med: u32, caps: &SessionCaps) -> Vec<u8> {
    let all: Vec<Nlri> = (0..n).map(|i| Nlri::new(prefix(i))).collect();
    let msgs: Vec<Message> = all
        .chunks(400)
        .map(|c| {
            Message::Update(Update {
                attributes: vec![
                    PathAttribute::Origin(Origin::Igp),
                    PathAttribute::AsPath(AsPath::default()),
                    PathAttribute::NextHop(ip(src)),
                    PathAttribute::MultiExitDisc(med),
                    PathAttribute::LocalPref(100),
                ],
                nlri: c.to_vec(),
                ..Default::default()
            })
        })
        .collect();
    encode(&msgs, caps)
}

async fn state_of(speaker: &Speaker, peer: &str) -> (State, Option<String>) {
    let p = speaker
        .handle()
        .peers()
        .await
        .into_iter()
        .find(|p| p.address == IpAddr::V4(ip(peer)))
        .expect("configured peer");
    (p.state, p.last_error)
}

/// A client that stops reading while another churns learns, once it reads
/// again, exactly the final table (latest state per prefix; End-of-RIB
/// after its initial table), and its session stays up meanwhile: its
/// KEEPALIVEs are read while our writes to it wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_the_final_table() {
    let sp = speaker("127.0.72.1", &["127.0.72.2", "127.0.72.3"], 0);
    let rr = sp.listen_addr().unwrap();
    let (mut a, a_caps, mut a_buf) = establish("127.0.72.2", rr).await;
    let (mut b, b_caps, _) = establish("127.0.72.3", rr).await;
    let n = 2000;
    let wire = churn("127.0.72.3", n, 30, &b_caps);
    let ka = encode(&[Message::Keepalive], &a_caps);
    // A sends KEEPALIVEs, reads nothing, while B churns (B's writes are
    // paced by the reflector).
    let writer = tokio::spawn(async move {
        b.write_all(&wire).await.unwrap();
        b
    });
    let _b = loop {
        a.write_all(&ka).await.unwrap();
        if writer.is_finished() {
            break writer.await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state_of(&sp, "127.0.72.2").await.0, State::Established);
    let want: BTreeSet<IpNetwork> = (1..n).step_by(2).map(prefix).collect();
    let mut have = BTreeSet::new();
    let mut eor = false;
    let mut chunk = vec![0u8; 65536];
    let read_all = async {
        while !(eor && have == want) {
            let mut start = 0;
            while let Some((msg, used)) = decode_message(&a_buf[start..], &a_caps).unwrap() {
                start += used;
                match msg {
                    Message::Update(u) if u.is_end_of_rib().is_some() => eor = true,
                    Message::Update(u) => {
                        for w in &u.withdrawn {
                            have.remove(&w.prefix);
                        }
                        have.extend(u.nlri.iter().map(|x| x.prefix));
                    }
                    Message::Keepalive => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            a_buf.drain(..start);
            if eor && have == want {
                continue;
            }
            let got = a.read(&mut chunk).await.unwrap();
            assert!(got > 0, "the reflector closed A's session");
            a_buf.extend_from_slice(&chunk[..got]);
        }
    };
    tokio::time::timeout(BOUND, read_all)
        .await
        .expect("A converges to the final table");
    assert_eq!(state_of(&sp, "127.0.72.2").await.0, State::Established);
    sp.shutdown("test done").await;
}

/// A client that reads nothing is dropped after the send stall timeout
/// (RFC 9687) with Cease / Out of Resources, its status says so, and its
/// connection is closed (reset) rather than kept with bytes queued; the
/// client that churns meanwhile stays Established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_dropped_with_out_of_resources() {
    let sp = speaker("127.0.72.11", &["127.0.72.12", "127.0.72.13"], 1);
    let rr = sp.listen_addr().unwrap();
    let (mut a, a_caps, a_rest) = establish("127.0.72.12", rr).await;
    let (mut b, b_caps, _) = establish("127.0.72.13", rr).await;
    // B re-announces its table with new attributes, round after round,
    // until A is dropped: more than any socket buffers hold.
    tokio::spawn(async move {
        for med in 0u32.. {
            if b.write_all(&announce_with_med("127.0.72.13", 2000, med, &b_caps))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let ka = encode(&[Message::Keepalive], &a_caps);
    let dropped = async {
        loop {
            // A keeps sending KEEPALIVEs (until its connection is gone).
            let _ = a.write_all(&ka).await;
            let (state, err) = state_of(&sp, "127.0.72.12").await;
            if state != State::Established
                && let Some(e) = err
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let err = tokio::time::timeout(BOUND, dropped)
        .await
        .expect("A is dropped");
    assert!(
        err.contains("send stall: no write progress"),
        "last error: {err}"
    );
    assert!(err.contains("Out of Resources"), "last error: {err}");
    // The connection is gone on our side: A reads what was queued, then
    // the end (EOF or a reset), within the bound.
    let mut chunk = vec![0u8; 65536];
    let mut got = a_rest;
    let end = async {
        loop {
            match a.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, end)
        .await
        .expect("A's connection is closed by the reflector");
    // The NOTIFICATION waits behind what A never read, so it is seldom
    // written before the reset; if it was, it is Cease / Out of Resources.
    let mut at = 0;
    while let Ok(Some((msg, used))) = decode_message(&got[at..], &a_caps) {
        at += used;
        if let Message::Notification(n) = msg {
            assert_eq!((n.code, n.subcode), (6, 8), "{}", n.describe());
        }
    }
    // The other client was never held up by A.
    assert_eq!(state_of(&sp, "127.0.72.13").await.0, State::Established);
    sp.shutdown("test done").await;
}
