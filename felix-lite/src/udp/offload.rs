//! TUN offloads without I/O: the `virtio_net_hdr` that an `IFF_VNET_HDR` TUN puts in front
//! of every packet, Internet checksums (RFC 1071), cutting a TSO/USO packet read from the
//! TUN into MTU-sized datagrams, and joining received TCP segments of one flow into one
//! TSO packet to write back (what the kernel's GRO does for a NIC).
//!
//! ```text
//!   struct virtio_net_hdr (include/uapi/linux/virtio_net.h; native byte order, legacy)
//!    0       1          2         4          6            8             10
//!   +-------+----------+---------+----------+------------+-------------+
//!   | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//!   +-------+----------+---------+----------+------------+-------------+
//! ```
//!
//! Send side: every segment gets complete checksums (IPv4 header, TCP/UDP over its pseudo
//! header), so what goes on the wire is the plain IPv4 packet Flannel's UDP backend sends,
//! which any receiver can write to its TUN as it is. Receive side: segments join only
//! when each one's checksums verify (as the kernel's GRO and wireguard-go's), and the
//! joined packet is written with `NEEDS_CSUM` and the pseudo-header sum in its TCP
//! checksum field (what the kernel's own TSO packets carry: CHECKSUM_PARTIAL).

use std::net::Ipv4Addr;

/// Bytes of a `virtio_net_hdr` (the TUN's default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start`, stored at `+csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO, Linux 6.2).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP packet has CWR set (first segment only).
pub const GSO_ECN: u8 = 0x80;
/// The most segments [`tcp_run`] joins: the kernel's UDP_GRO_CNT_MAX, what one
/// `UDP_GRO` receive holds.
pub const MAX_RUN: usize = 64;
/// Bytes reserved per segment header in [`split`]'s scratch: IPv4 (≤ 60) + TCP (≤ 60).
pub const SEG_HDR_ROOM: usize = 128;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Headers' length (the kernel's value is a hint; [`split`] reads the headers).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts (the transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Decode the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            b[i..i + 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// Why a packet from the TUN could not be cut or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Headers that do not match the `virtio_net_hdr` or are cut short.
    #[error("malformed offload packet: {0}")]
    Malformed(&'static str),
    /// More segments than the caller has room for.
    #[error("offload packet of {0} segments is more than one send takes")]
    TooManySegments(usize),
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The one's-complement sum (RFC 1071) of `data` as big-endian 16-bit words, a trailing
/// odd byte padded with zero, plus `initial`; folded, not complemented.
pub fn sum(data: &[u8], initial: u32) -> u16 {
    // 8 bytes at a time in native order with end-around carry: the sum of byte-swapped
    // words is the byte-swapped sum (RFC 1071 §2(B)), so one swap at the end.
    let mut acc: u128 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc += u128::from(u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u128::from(u64::from_ne_bytes(tail));
    let s = (acc >> 64) as u64;
    let (lo, c) = (acc as u64).overflowing_add(s);
    let mut x = u64::from(c) + (lo & 0xffff_ffff) + (lo >> 32);
    x = (x & 0xffff_ffff) + (x >> 32);
    let native = fold(x);
    fold(u64::from(u16::from_be(native)) + u64::from(initial))
}

/// The IPv4 pseudo-header sum (RFC 793 §3.1, RFC 768) of packet `ip` for a transport
/// segment of `len` bytes of protocol `proto`.
fn pseudo_v4(ip: &[u8], proto: u8, len: usize) -> u32 {
    u32::from(sum(&ip[12..20], 0)) + u32::from(proto) + len as u32
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn put16(b: &mut [u8], i: usize, v: u16) {
    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

/// The checksum to store: complemented, with 0 sent as 0xffff (RFC 768; the same value
/// in one's complement, and the kernel's `CSUM_MANGLED_0`).
fn finish(s: u16) -> u16 {
    match !s {
        0 => 0xffff,
        c => c,
    }
}

fn ipv4_header_checksum(h: &mut [u8]) {
    put16(h, 10, 0);
    let c = !sum(h, 0);
    put16(h, 10, c);
}

/// Complete the checksum of a packet read with `NEEDS_CSUM` and no GSO: the sum from
/// `csum_start` to the end, plus the partial sum already in the field (the pseudo header).
pub fn finish_checksum(h: &VnetHdr, pkt: &mut [u8]) -> Result<(), OffloadError> {
    let (start, at) = (
        usize::from(h.csum_start),
        usize::from(h.csum_start) + usize::from(h.csum_offset),
    );
    if at + 2 > pkt.len() {
        return Err(OffloadError::Malformed("checksum offset past the end"));
    }
    let initial = be16(pkt, at);
    put16(pkt, at, 0);
    let c = finish(sum(&pkt[start..], u32::from(initial)));
    put16(pkt, at, c);
    Ok(())
}

/// One datagram cut from a GSO packet: its headers in the scratch, its payload in the
/// packet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the headers in the scratch (a multiple of [`SEG_HDR_ROOM`]).
    pub header: usize,
    /// Bytes of headers (IPv4 + TCP or UDP).
    pub header_len: usize,
    /// Payload start in the packet.
    pub payload: usize,
    /// Payload bytes.
    pub payload_len: usize,
}

/// Cut `pkt`, an IPv4 TCP (TSO) or UDP (USO) packet read from the TUN after header `h`,
/// into segments of `h.gso_size` payload bytes (the last may be shorter), as the kernel's
/// `tcp_gso_segment` / `__udp_gso_segment` do: per segment the IPv4 total length, id (+1
/// each) and header checksum; TCP sequence number, FIN/PSH on the last only, CWR on the
/// first only; UDP length; and the transport checksum over the pseudo header, header and
/// payload. Headers go to `scratch` (`SEG_HDR_ROOM` bytes each), the segments to `segs`;
/// returns how many.
pub fn split(
    h: &VnetHdr,
    pkt: &[u8],
    scratch: &mut [u8],
    segs: &mut [Segment],
) -> Result<usize, OffloadError> {
    use OffloadError::Malformed;
    let proto = match h.gso_type & !GSO_ECN {
        GSO_TCPV4 => PROTO_TCP,
        GSO_UDP_L4 => PROTO_UDP,
        _ => return Err(Malformed("not an IPv4 TCP or UDP GSO packet")),
    };
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return Err(Malformed("not IPv4"));
    }
    let ihl = usize::from(pkt[0] & 0xf) * 4;
    let min_thl = if proto == PROTO_TCP { 20 } else { 8 };
    if ihl < 20 || pkt.len() < ihl + min_thl || pkt[9] != proto {
        return Err(Malformed("IPv4 header does not match the GSO type"));
    }
    if usize::from(h.csum_start) != ihl {
        return Err(Malformed("transport header is not after the IPv4 header"));
    }
    if be16(pkt, 6) & 0x3fff != 0 {
        return Err(Malformed("a fragment"));
    }
    let thl = if proto == PROTO_TCP {
        usize::from(pkt[ihl + 12] >> 4) * 4
    } else {
        8
    };
    let hlen = ihl + thl;
    let mss = usize::from(h.gso_size);
    if thl < min_thl || hlen > SEG_HDR_ROOM || pkt.len() <= hlen || mss == 0 {
        return Err(Malformed("headers, payload or gso_size out of range"));
    }
    let n = (pkt.len() - hlen).div_ceil(mss);
    if n > segs.len() || n * SEG_HDR_ROOM > scratch.len() {
        return Err(OffloadError::TooManySegments(n));
    }
    let id = be16(pkt, 4);
    let seq = if proto == PROTO_TCP {
        u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]])
    } else {
        0
    };
    let base = pseudo_v4(pkt, proto, 0);
    for (i, seg) in segs.iter_mut().enumerate().take(n) {
        let payload = hlen + i * mss;
        let len = mss.min(pkt.len() - payload);
        let last = i + 1 == n;
        let hdr = &mut scratch[i * SEG_HDR_ROOM..i * SEG_HDR_ROOM + hlen];
        hdr.copy_from_slice(&pkt[..hlen]);
        put16(hdr, 2, (hlen + len) as u16);
        put16(hdr, 4, id.wrapping_add(i as u16));
        ipv4_header_checksum(&mut hdr[..ihl]);
        let t = &mut hdr[ihl..];
        if proto == PROTO_TCP {
            t[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
            if !last {
                t[13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                t[13] &= !TCP_CWR;
            }
            put16(t, 16, 0);
        } else {
            put16(t, 4, (thl + len) as u16);
            put16(t, 6, 0);
        }
        // The header's length is even, so the payload's sum continues it.
        let s = sum(
            &pkt[payload..payload + len],
            u32::from(sum(t, base + (thl + len) as u32)),
        );
        put16(t, if proto == PROTO_TCP { 16 } else { 6 }, finish(s));
        *seg = Segment {
            header: i * SEG_HDR_ROOM,
            header_len: hlen,
            payload,
            payload_len: len,
        };
    }
    Ok(n)
}

/// What [`tcp_candidate`] needs of a TCP segment to join it to others.
#[derive(Debug, Clone, Copy)]
struct TcpSeg {
    thl: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// A segment that may join a TSO packet: IPv4 without options, not a fragment, TCP with
/// only ACK (and PSH) set, some payload, and valid IPv4 and TCP checksums.
fn tcp_candidate(p: &[u8]) -> Option<TcpSeg> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != PROTO_TCP || usize::from(be16(p, 2)) != p.len() {
        return None;
    }
    if be16(p, 6) & 0x3fff != 0 {
        return None;
    }
    let thl = usize::from(p[32] >> 4) * 4;
    if thl < 20 || 20 + thl >= p.len() {
        return None;
    }
    let flags = p[33];
    if flags & !TCP_PSH != TCP_ACK {
        return None;
    }
    if sum(&p[..20], 0) != 0xffff {
        return None;
    }
    let tcp = &p[20..];
    if sum(tcp, pseudo_v4(p, PROTO_TCP, tcp.len())) != 0xffff {
        return None;
    }
    Some(TcpSeg {
        thl,
        payload: p.len() - 20 - thl,
        seq: u32::from_be_bytes([p[24], p[25], p[26], p[27]]),
        psh: flags & TCP_PSH != 0,
    })
}

/// Whether `b` continues `a`'s flow as the kernel's `tcp_gro_receive` requires: same
/// addresses, ports, ack, TOS, DF, TTL and TCP options.
fn same_flow(a: &[u8], b: &[u8], thl: usize) -> bool {
    a[1] == b[1]
        && a[6] >> 5 == b[6] >> 5
        && a[8] == b[8]
        && a[12..20] == b[12..20]
        && a[20..24] == b[20..24]
        && a[28..32] == b[28..32]
        && a[40..20 + thl] == b[40..20 + thl]
}

/// A run of TCP segments that [`merge_run`] joins into one TSO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Segments in the run (1: write the first by itself).
    pub count: usize,
    /// Their payload bytes together.
    pub payload: usize,
    /// IPv4 + TCP header bytes of each (where a later segment's payload starts).
    pub header_len: usize,
    /// The first segment's payload bytes: the `gso_size` of the join.
    pub mss: usize,
    /// The last segment has PSH.
    pub psh: bool,
}

/// The packets in `data` cut at every `seg` bytes (a `UDP_GRO` receive), from packet
/// `first`: how many in a row are TCP segments of one flow, in sequence, of one payload
/// size (the last may be shorter, and it alone may have PSH), at most 64 KiB and
/// [`MAX_RUN`] together.
/// None: `first` is not such a segment (write it by itself).
pub fn tcp_run(data: &[u8], seg: usize, first: usize) -> Option<Run> {
    let at = |i: usize| data.get(i * seg..((i + 1) * seg).min(data.len()));
    let head = at(first)?;
    let h = tcp_candidate(head)?;
    let mut run = Run {
        count: 1,
        payload: h.payload,
        header_len: 20 + h.thl,
        mss: h.payload,
        psh: h.psh,
    };
    let mut next = h.seq.wrapping_add(h.payload as u32);
    let mut prev = h;
    while let Some(p) = at(first + run.count) {
        if run.count == MAX_RUN || prev.psh || prev.payload != h.payload {
            break;
        }
        match tcp_candidate(p) {
            Some(s)
                if s.thl == h.thl
                    && s.seq == next
                    && s.payload <= h.payload
                    && run.header_len + run.payload + s.payload <= 65_535
                    && same_flow(head, p, h.thl) =>
            {
                run.count += 1;
                run.payload += s.payload;
                run.psh = s.psh;
                next = s.seq.wrapping_add(s.payload as u32);
                prev = s;
            }
            _ => break,
        }
    }
    Some(run)
}

/// Rewrite the first segment of `run` (at `data[first * seg..]`) into the headers of
/// the join: IPv4 total length and header checksum, PSH if the last had it, and the
/// pseudo-header sum in the TCP checksum (`NEEDS_CSUM`: the kernel takes it as
/// CHECKSUM_PARTIAL, as its own TSO packets). Returns the `virtio_net_hdr` to write in
/// front. A run of one is left as it is, with an empty header.
pub fn merge_run(data: &mut [u8], seg: usize, first: usize, run: &Run) -> VnetHdr {
    if run.count < 2 {
        return VnetHdr::default();
    }
    let p = &mut data[first * seg..];
    let tcp_len = run.header_len - 20 + run.payload;
    put16(p, 2, (20 + tcp_len) as u16);
    ipv4_header_checksum(&mut p[..20]);
    if run.psh {
        p[33] |= TCP_PSH;
    }
    let ps = fold(u64::from(pseudo_v4(p, PROTO_TCP, tcp_len)));
    put16(p, 36, ps);
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: run.header_len as u16,
        gso_size: run.mss as u16,
        csum_start: 20,
        csum_offset: 16,
    }
}

/// The destination of an IPv4 packet.
pub fn ipv4_dst(p: &[u8]) -> Option<Ipv4Addr> {
    (p.len() >= 20 && p[0] >> 4 == 4).then(|| Ipv4Addr::new(p[16], p[17], p[18], p[19]))
}

#[cfg(test)]
mod tests;
