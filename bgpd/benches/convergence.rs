//! Convergence benchmark: speaker A originates N prefixes, speaker B (eBGP,
//! over 127.0.0.0/8) learns them; measured from session start until B's
//! route feed holds all N (read in batches, changes collapsed per prefix:
//! only the final state matters).
//!
//! Baseline, measured in the same run: the codec alone on the same
//! UPDATEs (build, encode, decode, no sockets, no RIB). The ratio says what
//! sessions, framing, the actor and the RIB cost on top of the wire format.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bgpd::config::ListenConfig;
use bgpd::packet::{Message, SessionCaps, decode_message, encode_message};
use bgpd::rib::PathAttrs;
use bgpd::rib::export::build_updates;
use bgpd::{PeerConfig, RouteFeed, RouteUpdate, Speaker, SpeakerConfig};
use ipnetwork::{IpNetwork, Ipv4Network};

const N: u32 = 20_000;

fn prefixes() -> Vec<IpNetwork> {
    (0..N)
        .map(|i| {
            IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect()
}

fn codec_only() -> Duration {
    let start = Instant::now();
    let mut attrs = PathAttrs::local();
    attrs.next_hop = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 61)));
    attrs.as_path.prepend(64512);
    let attrs = std::sync::Arc::new(attrs);
    let updates = build_updates(prefixes().into_iter().map(|p| (p, Some(attrs.clone()))));
    let caps = SessionCaps::default();
    let mut wire = Vec::new();
    for u in updates {
        encode_message(&Message::Update(u), &caps, &mut wire).unwrap();
    }
    let (mut at, mut seen) = (0, 0);
    while let Some((Message::Update(u), used)) = decode_message(&wire[at..], &caps).unwrap() {
        seen += u.nlri.len();
        at += used;
    }
    assert_eq!(seen, N as usize);
    start.elapsed()
}

async fn end_to_end() -> Duration {
    let mut a_cfg = SpeakerConfig::new(64512, "127.0.0.61".parse().unwrap());
    a_cfg.listen = Some(ListenConfig {
        address: "127.0.0.61".parse().unwrap(),
        port: 0,
    });
    a_cfg.networks = prefixes();
    let mut b_cfg = SpeakerConfig::new(65001, "127.0.0.62".parse().unwrap());
    b_cfg.listen = Some(ListenConfig {
        address: "127.0.0.62".parse().unwrap(),
        port: 0,
    });
    let feed = RouteFeed::new();
    let a = Speaker::start(a_cfg, None).unwrap();
    let b = Speaker::start_with_feed(b_cfg, feed.clone()).unwrap();
    let start = Instant::now();
    let mut to_b = PeerConfig::new("127.0.0.62".parse().unwrap(), 65001);
    to_b.port = b.listen_addr().unwrap().port();
    to_b.source_address = Some("127.0.0.61".parse().unwrap());
    let mut to_a = PeerConfig::new("127.0.0.61".parse().unwrap(), 64512);
    to_a.passive = true;
    a.handle().set_peers(vec![to_b]);
    b.handle().set_peers(vec![to_a]);
    let mut learnt = std::collections::HashSet::new();
    while learnt.len() < N as usize {
        let Ok(batch) = tokio::time::timeout(Duration::from_secs(60), feed.recv()).await else {
            panic!("convergence stalled at {} of {N} prefixes", learnt.len());
        };
        for u in batch {
            match u {
                RouteUpdate::Add { prefix, .. } => {
                    learnt.insert(prefix);
                }
                RouteUpdate::Remove { prefix } => {
                    learnt.remove(&prefix);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    a.shutdown("bench done").await;
    b.shutdown("bench done").await;
    elapsed
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = 3;
    let mut base = Vec::new();
    let mut e2e = Vec::new();
    for _ in 0..runs {
        base.push(codec_only());
        e2e.push(rt.block_on(end_to_end()));
    }
    base.sort();
    e2e.sort();
    let (b, e) = (base[runs / 2], e2e[runs / 2]);
    let rate = |d: Duration| f64::from(N) / d.as_secs_f64();
    println!("convergence of {N} IPv4 prefixes (median of {runs})");
    println!(
        "  baseline codec-only (build+encode+decode): {:>10.1} ms  {:>12.0} prefixes/s",
        b.as_secs_f64() * 1e3,
        rate(b)
    );
    println!(
        "  manx speaker A -> B over loopback:         {:>10.1} ms  {:>12.0} prefixes/s",
        e.as_secs_f64() * 1e3,
        rate(e)
    );
    println!(
        "  ratio end-to-end / codec-only: {:.1}x",
        e.as_secs_f64() / b.as_secs_f64()
    );
}
