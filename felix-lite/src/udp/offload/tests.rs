//! Segmentation and coalescing against hand-built packets; every checksum is checked with
//! a plain 16-bit-word implementation of RFC 1071, independent of [`sum`].

use super::*;

/// RFC 1071 §1 the slow way: 16-bit big-endian words, end-around carry.
fn naive(data: &[u8], initial: u32) -> u16 {
    let mut s = u64::from(initial);
    for w in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(ip: &[u8], proto: u8, len: usize) -> u32 {
    u32::from(naive(&ip[12..20], 0)) + u32::from(proto) + len as u32
}

/// The IPv4 header and the transport checksum of packet `p` both verify.
fn assert_checksums_valid(p: &[u8]) {
    let ihl = usize::from(p[0] & 0xf) * 4;
    assert_eq!(naive(&p[..ihl], 0), 0xffff, "IPv4 header checksum");
    let t = &p[ihl..];
    assert_eq!(
        naive(t, pseudo(p, p[9], t.len())),
        0xffff,
        "transport checksum"
    );
}

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

#[test]
fn sum_matches_rfc1071_example_and_the_slow_way() {
    // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    assert_eq!(
        sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0),
        0xddf2
    );
    for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 1000, 1473, 65_535] {
        let d = bytes(len, len as u32);
        for initial in [0, 1, 0xffff, 0x1_2345] {
            assert_eq!(
                sum(&d, initial),
                naive(&d, initial),
                "len {len} initial {initial:#x}"
            );
        }
    }
    let ones = vec![0xff; 4096];
    assert_eq!(sum(&ones, 0), naive(&ones, 0));
}

#[test]
fn vnet_hdr_round_trips() {
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4 | GSO_ECN,
        hdr_len: 52,
        gso_size: 1420,
        csum_start: 20,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.encode()), Some(h));
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
}

const SRC: [u8; 4] = [10, 65, 1, 2];
const DST: [u8; 4] = [10, 65, 2, 3];

/// An IPv4 + TCP packet with a timestamp option (32-byte TCP header), as a TSO packet
/// from the TUN: total length of the whole, TCP checksum field holding the pseudo-header
/// sum (CHECKSUM_PARTIAL).
fn tso_packet(payload: &[u8], flags: u8, seq: u32) -> Vec<u8> {
    let thl = 32;
    let mut p = vec![0u8; 20 + thl];
    p[0] = 0x45;
    p[1] = 0x02; // ECT(0)
    p[2..4].copy_from_slice(&((20 + thl + payload.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes()); // wraps on the third segment
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = ((thl / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&502u16.to_be_bytes());
    t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
    let ipc = !naive(&p[..20], 0);
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    p.extend_from_slice(payload);
    let ps = naive(&[], pseudo(&p, 6, thl + payload.len()));
    p[36..38].copy_from_slice(&ps.to_be_bytes());
    p
}

fn tso_hdr(mss: u16) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4 | GSO_ECN,
        hdr_len: 0, // a hint only: split reads the headers
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    }
}

fn split_all(h: &VnetHdr, pkt: &[u8]) -> Vec<Vec<u8>> {
    let mut scratch = vec![0u8; 64 * SEG_HDR_ROOM];
    let mut segs = [Segment::default(); 64];
    let n = split(h, pkt, &mut scratch, &mut segs).unwrap();
    segs[..n]
        .iter()
        .map(|s| {
            let mut v = scratch[s.header..s.header + s.header_len].to_vec();
            v.extend_from_slice(&pkt[s.payload..s.payload + s.payload_len]);
            v
        })
        .collect()
}

/// tcp_gso_segment's rules (net/ipv4/tcp_offload.c): seq advances by the MSS, FIN/PSH
/// only on the last segment, CWR only on the first; the IPv4 id counts up; every
/// checksum complete.
#[test]
fn split_cuts_a_tso_packet_into_checksummed_segments() {
    let payload = bytes(3 * 1000 + 500, 7);
    let flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR;
    let pkt = tso_packet(&payload, flags, 0xffff_fc00);
    let segs = split_all(&tso_hdr(1000), &pkt);
    assert_eq!(segs.len(), 4);
    let mut data = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let len = if i == 3 { 500 } else { 1000 };
        assert_eq!(s.len(), 52 + len);
        assert_eq!(usize::from(be16(s, 2)), s.len(), "total length");
        assert_eq!(be16(s, 4), 0xfffeu16.wrapping_add(i as u16), "IPv4 id");
        let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
        assert_eq!(seq, 0xffff_fc00u32.wrapping_add(1000 * i as u32));
        let want = match i {
            0 => TCP_ACK | TCP_CWR,
            3 => TCP_ACK | TCP_PSH | TCP_FIN,
            _ => TCP_ACK,
        };
        assert_eq!(s[33], want, "flags of segment {i}");
        assert_eq!(s[20..24], pkt[20..24], "ports");
        assert_eq!(s[40..52], pkt[40..52], "options");
        assert_checksums_valid(s);
        data.extend_from_slice(&s[52..]);
    }
    assert_eq!(data, payload);
}

#[test]
fn split_refuses_what_it_cannot_cut() {
    let pkt = tso_packet(&bytes(3000, 1), TCP_ACK, 1);
    let mut scratch = vec![0u8; 2 * SEG_HDR_ROOM];
    let mut segs = [Segment::default(); 2];
    assert_eq!(
        split(&tso_hdr(1000), &pkt, &mut scratch, &mut segs),
        Err(OffloadError::TooManySegments(3))
    );
    let mut s64 = [Segment::default(); 64];
    let mut sc64 = vec![0u8; 64 * SEG_HDR_ROOM];
    let bad_start = VnetHdr {
        csum_start: 24,
        ..tso_hdr(1000)
    };
    assert!(split(&bad_start, &pkt, &mut sc64, &mut s64).is_err());
    let udp_type = VnetHdr {
        gso_type: GSO_UDP_L4,
        ..tso_hdr(1000)
    };
    assert!(
        split(&udp_type, &pkt, &mut sc64, &mut s64).is_err(),
        "TCP packet, UDP type"
    );
    let mut frag = pkt.clone();
    frag[6] |= 0x20;
    assert!(split(&tso_hdr(1000), &frag, &mut sc64, &mut s64).is_err());
    assert!(split(&tso_hdr(0), &pkt, &mut sc64, &mut s64).is_err());
}

/// USO (`__udp_gso_segment`): each datagram its own UDP length and checksum.
#[test]
fn split_cuts_a_uso_packet() {
    let payload = bytes(2500, 3);
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    p[20..22].copy_from_slice(&9000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9001u16.to_be_bytes());
    p.extend_from_slice(&payload);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_UDP_L4,
        hdr_len: 28,
        gso_size: 1200,
        csum_start: 20,
        csum_offset: 6,
    };
    let segs = split_all(&h, &p);
    assert_eq!(
        segs.iter().map(Vec::len).collect::<Vec<_>>(),
        [1228, 1228, 128]
    );
    for s in &segs {
        assert_eq!(usize::from(be16(s, 24)), s.len() - 20, "UDP length");
        assert_checksums_valid(s);
    }
}

/// A packet read with NEEDS_CSUM and no GSO (a pod's UDP or a bare ACK): the partial sum
/// in the field plus the rest gives a valid checksum.
#[test]
fn finish_checksum_completes_a_partial_one() {
    let mut p = tso_packet(&bytes(333, 5), TCP_ACK, 9);
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    finish_checksum(&h, &mut p).unwrap();
    assert_checksums_valid(&p);
    let past = VnetHdr {
        csum_offset: 400,
        ..h
    };
    assert!(finish_checksum(&past, &mut p).is_err());
}

/// Segments as a UDP_GRO receive gives them: back to back, each `seg` bytes but the last.
fn gro_buffer(segs: &[Vec<u8>]) -> (Vec<u8>, usize) {
    (segs.concat(), segs[0].len())
}

/// The join as the TUN gets it: the first packet whole, then the others' payloads.
fn joined(data: &[u8], seg: usize, first: usize, run: &Run) -> Vec<u8> {
    let mut out = Vec::new();
    for k in first..first + run.count {
        let p = &data[k * seg..((k + 1) * seg).min(data.len())];
        out.extend_from_slice(if k == first { p } else { &p[run.header_len..] });
    }
    out
}

/// Split then join gives the original TSO packet back: the kernel's GRO of the
/// segments (net/ipv4/tcp_offload.c tcp_gro_receive), checksum left partial.
#[test]
fn a_run_of_segments_joins_into_the_original_tso_packet() {
    let payload = bytes(5 * 1000 + 10, 11);
    let orig = tso_packet(&payload, TCP_ACK | TCP_PSH, 77);
    let segs = split_all(&tso_hdr(1000), &orig);
    let (mut data, seg) = gro_buffer(&segs);
    let run = tcp_run(&data, seg, 0).unwrap();
    assert_eq!(
        run,
        Run {
            count: 6,
            payload: payload.len(),
            header_len: 52,
            mss: 1000,
            psh: true
        }
    );
    let h = merge_run(&mut data, seg, 0, &run);
    assert_eq!(
        h,
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16
        }
    );
    let j = joined(&data, seg, 0, &run);
    assert_eq!(j.len(), orig.len());
    assert_eq!(
        naive(&j[..20], 0),
        0xffff,
        "IPv4 header checksum of the join"
    );
    // Same bytes as the TSO packet but the id (the first segment's) and IPv4 checksum.
    let mut want = orig.clone();
    want[10..12].copy_from_slice(&j[10..12]);
    assert_eq!(j, want);
    // The kernel finishing CHECKSUM_PARTIAL gives a valid TCP checksum.
    let mut done = j.clone();
    finish_checksum(&h, &mut done).unwrap();
    assert_checksums_valid(&done);
    // The sum the receiver stored is the pseudo header's.
    assert_eq!(be16(&j, 36), naive(&[], pseudo(&j, 6, j.len() - 20)));
}

#[test]
fn runs_break_where_gro_would_flush() {
    let payload = bytes(4 * 1000, 13);
    let segs = split_all(&tso_hdr(1000), &tso_packet(&payload, TCP_ACK, 500));
    let run_of = |segs: &[Vec<u8>], first: usize| {
        let (data, seg) = gro_buffer(segs);
        tcp_run(&data, seg, first).map(|r| r.count)
    };
    assert_eq!(run_of(&segs, 0), Some(4));
    assert_eq!(run_of(&segs, 2), Some(2));

    // A corrupted payload byte: that segment fails its checksum and is not joined.
    let mut bad = segs.clone();
    bad[2][700] ^= 1;
    assert_eq!(run_of(&bad, 0), Some(2));
    assert_eq!(run_of(&bad, 2), None);

    // Another flow (port), a gap in the sequence, another ack: each ends the run.
    for (at, byte) in [(21, 1), (27, 1), (31, 1)] {
        let mut other = segs.clone();
        other[2][at] ^= byte;
        let t = &mut other[2];
        let (ps, len) = (pseudo(t, 6, t.len() - 20), t.len());
        t[36..38].fill(0);
        let c = !naive(&t[20..len], ps);
        t[36..38].copy_from_slice(&c.to_be_bytes());
        assert_checksums_valid(&other[2]);
        assert_eq!(run_of(&other, 0), Some(2), "byte {at}");
    }

    // PSH in the middle ends the run after it.
    let mut psh = segs.clone();
    psh[1][33] |= TCP_PSH;
    let t = &mut psh[1];
    let ps = pseudo(t, 6, t.len() - 20);
    t[36..38].fill(0);
    let c = !naive(&t[20..], ps);
    t[36..38].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run_of(&psh, 0), Some(2));

    // Not candidates: a SYN (with data), a bare ACK, IPv4 options.
    let partial = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let mut syn = tso_packet(&bytes(10, 1), 0x02, 1);
    finish_checksum(&partial, &mut syn).unwrap();
    assert_checksums_valid(&syn);
    assert_eq!(tcp_run(&syn, syn.len(), 0), None, "SYN");
    let mut ack = tso_packet(&[], TCP_ACK, 1);
    finish_checksum(&partial, &mut ack).unwrap();
    assert_eq!(tcp_run(&ack, ack.len(), 0), None, "no payload");
    let mut opts = segs[0].clone();
    opts[0] = 0x46;
    assert_eq!(tcp_run(&opts, opts.len(), 0), None, "IPv4 options");

    // A lone segment is a run of one, written as it is with an empty header.
    let (mut one, seg) = gro_buffer(&segs[..1]);
    let r = tcp_run(&one, seg, 0).unwrap();
    assert_eq!(r.count, 1);
    let before = one.clone();
    assert_eq!(merge_run(&mut one, seg, 0, &r), VnetHdr::default());
    assert_eq!(one, before);
}
