//! UPDATE codec throughput: decode and encode of a realistic corpus (100k
//! IPv4 /26 prefixes in UPDATEs of 500, plus 20k IPv6 /64 in MP_REACH
//! UPDATEs of 400), with `bgp-rs` decoding the same bytes in the same run as
//! the baseline. Prints prefixes/s, MB/s and the ratio.
//!
//! Run: `cargo bench -p manx-bgpd --bench codec`

use std::hint::black_box;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bgpd::packet::{
    AfiSafi, AsPath, Message, MpReach, Nlri, Origin, PathAttribute, Prefix, SessionCaps, Update,
    decode_message, encode_message,
};

const V4_PREFIXES: u32 = 100_000;
const V4_PER_UPDATE: u32 = 500;
const V6_PREFIXES: u32 = 20_000;
const V6_PER_UPDATE: u32 = 400;

fn common_attributes() -> Vec<PathAttribute> {
    vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::from_sequence(vec![64512, 65001, 4_200_000_001])),
        PathAttribute::MultiExitDisc(0),
        PathAttribute::LocalPref(100),
        PathAttribute::Communities(vec![0xfc00_0064, 0xffff_ff01]),
        PathAttribute::LargeCommunities(vec![(64512, 1, 2)]),
    ]
}

fn corpus() -> Vec<Update> {
    let mut updates = Vec::new();
    for chunk in 0..V4_PREFIXES / V4_PER_UPDATE {
        let mut attributes = common_attributes();
        attributes.insert(2, PathAttribute::NextHop(Ipv4Addr::new(198, 18, 200, 1)));
        let nlri = (0..V4_PER_UPDATE)
            .map(|i| {
                let n = chunk * V4_PER_UPDATE + i;
                // 10.0.0.0/8 carved in /26 blocks, as a Calico-style pool.
                let ip = Ipv4Addr::from(0x0a00_0000 | (n << 6));
                Nlri::new(Prefix::new(IpAddr::V4(ip), 26).unwrap())
            })
            .collect();
        updates.push(Update {
            attributes,
            nlri,
            ..Update::default()
        });
    }
    for chunk in 0..V6_PREFIXES / V6_PER_UPDATE {
        let mut attributes = common_attributes();
        let nlri = (0..V6_PER_UPDATE)
            .map(|i| {
                let n = u128::from(chunk * V6_PER_UPDATE + i);
                let ip = Ipv6Addr::from((0xfd42_0018_0200u128 << 80) | (n << 64));
                Nlri::new(Prefix::new(IpAddr::V6(ip), 64).unwrap())
            })
            .collect();
        attributes.insert(
            2,
            PathAttribute::MpReach(MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hops: vec!["fd42:18:200::1".parse().unwrap()],
                nlri,
            }),
        );
        updates.push(Update {
            attributes,
            ..Update::default()
        });
    }
    updates
}

/// Runs `f` repeatedly for about `budget`, returns the best time of one run.
fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn report(name: &str, prefixes: u64, bytes: usize, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    let pps = prefixes as f64 / secs;
    println!(
        "{name:<28} {:>8.2} ms  {:>7.2} M prefixes/s  {:>8.1} MB/s",
        secs * 1e3,
        pps / 1e6,
        bytes as f64 / secs / 1e6
    );
    pps
}

fn main() {
    let caps = SessionCaps {
        four_octet_as: true,
        ..SessionCaps::default()
    };
    let updates = corpus();
    let messages: Vec<Message> = updates.into_iter().map(Message::Update).collect();
    let mut stream = Vec::new();
    for m in &messages {
        encode_message(m, &caps, &mut stream).expect("corpus encodes");
    }
    let prefixes = u64::from(V4_PREFIXES + V6_PREFIXES);
    println!(
        "corpus: {} UPDATEs, {prefixes} prefixes, {} bytes",
        messages.len(),
        stream.len()
    );
    let budget = Duration::from_secs(3);

    let decode = best_of(budget, || {
        let mut at = 0;
        let mut n = 0usize;
        while let Some((msg, used)) = decode_message(&stream[at..], &caps).unwrap() {
            n += match &msg {
                Message::Update(u) => u.nlri.len() + u.mp_reach().map_or(0, |r| r.nlri.len()),
                _ => 0,
            };
            black_box(msg);
            at += used;
        }
        assert_eq!(n as u64, prefixes);
    });
    let mut out = Vec::with_capacity(stream.len());
    let encode = best_of(budget, || {
        out.clear();
        for m in &messages {
            encode_message(m, &caps, &mut out).unwrap();
        }
        black_box(&out);
    });
    assert_eq!(out, stream);

    let mut bgp_rs_caps = bgp_rs::Capabilities {
        FOUR_OCTET_ASN_SUPPORT: true,
        ..Default::default()
    };
    bgp_rs_caps
        .MP_BGP_SUPPORT
        .insert((bgp_rs::AFI::IPV6, bgp_rs::SAFI::Unicast));
    let baseline = best_of(budget, || {
        let mut reader = bgp_rs::Reader {
            stream: Cursor::new(&stream[..]),
            capabilities: &bgp_rs_caps,
        };
        let mut n = 0usize;
        for _ in 0..messages.len() {
            let (_, msg) = reader.read().expect("bgp-rs decodes the corpus");
            if let bgp_rs::Message::Update(u) = &msg {
                n += u.announced_routes.len();
                for a in &u.attributes {
                    if let bgp_rs::PathAttribute::MP_REACH_NLRI(r) = a {
                        n += r.announced_routes.len();
                    }
                }
            }
            black_box(msg);
        }
        assert_eq!(n as u64, prefixes);
    });

    let ours = report("manx decode", prefixes, stream.len(), decode);
    report("manx encode", prefixes, stream.len(), encode);
    let theirs = report(
        "bgp-rs 0.6 decode (baseline)",
        prefixes,
        stream.len(),
        baseline,
    );
    println!("ratio decode manx / bgp-rs: {:.2}x", ours / theirs);
}
