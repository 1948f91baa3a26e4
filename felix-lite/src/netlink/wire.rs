//! Netlink messages (built with netlink-packet-route) and a small synchronous rtnetlink socket
//! that can pipeline many requests in one `sendmsg`.
//!
//! Why not one `rtnetlink::Handle` request per route: each request is a channel round trip
//! and a syscall pair. The kernel processes every message of one `sendmsg` in order, so we
//! write hundreds of route requests in one buffer, ask an ACK only for the last one (errors
//! are always reported), and read back only the errors plus that final ACK.

use std::io;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteNextHopFlags,
    RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{KernelNextHop, KernelRoute, RouteKind, Scope};

/// Requests per `sendmsg` in a batch. Bounded so error ACKs cannot overflow the receive
/// buffer (each queued ACK costs roughly a page of socket memory).
pub(crate) const BATCH_CHUNK: usize = 256;

/// What went wrong on the socket.
#[derive(Debug)]
pub(crate) enum WireError {
    /// The kernel answered with this errno, and its extended-ACK message if any.
    Errno(i32, Option<String>),
    /// Socket I/O failed.
    Io(io::Error),
    /// A reply did not decode.
    Decode(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Errno(e, None) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
            WireError::Errno(e, Some(m)) => {
                write!(f, "{} ({m})", io::Error::from_raw_os_error(*e))
            }
            WireError::Io(e) => write!(f, "netlink socket: {e}"),
            WireError::Decode(e) => write!(f, "netlink decode: {e}"),
        }
    }
}

/// A synchronous NETLINK_ROUTE socket bound in the network namespace of the thread that
/// created it.
#[derive(Debug)]
pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl NlSocket {
    pub(crate) fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Error ACKs without the echoed request: smaller, so more fit in the buffer.
        sock.set_cap_ack(true)?;
        // Extended ACKs carry the kernel's reason ("Nexthop has invalid gateway").
        let _ = sock.set_ext_ack(true);
        // Best effort: capped by net.core.rmem_max without CAP_NET_ADMIN tricks.
        let _ = sock.set_rx_buf_sz(4 * 1024 * 1024);
        Ok(NlSocket {
            sock,
            seq: 0,
            rx: Vec::with_capacity(1 << 20),
            tx: Vec::with_capacity(64 * 1024),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
        }
        self.seq
    }

    fn push(&mut self, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let start = self.tx.len();
        let len = nl.buffer_len();
        // Netlink messages are 4-byte aligned.
        self.tx.resize(start + ((len + 3) & !3), 0);
        nl.serialize(&mut self.tx[start..start + len]);
        seq
    }

    fn flush(&mut self) -> Result<(), WireError> {
        let res = self.sock.send(&self.tx, 0).map_err(WireError::Io);
        self.tx.clear();
        res.map(|_| ())
    }

    /// Receive one datagram and hand each message in it to `f`.
    fn recv_each(
        &mut self,
        mut f: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        self.rx.clear();
        self.sock.recv(&mut self.rx, 0).map_err(WireError::Io)?;
        let mut off = 0;
        let buf = std::mem::take(&mut self.rx);
        let mut result = Ok(());
        while off + 16 <= buf.len() {
            let len =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            if len < 16 || off + len > buf.len() {
                result = Err(WireError::Decode(format!("bad message length {len}")));
                break;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len]) {
                Ok(m) => {
                    if let Err(e) = f(m) {
                        result = Err(e);
                        break;
                    }
                }
                // A dump entry we cannot decode: skip it, keep the rest.
                Err(e) => tracing::debug!(error = %e, "skipping undecodable netlink message"),
            }
            off += (len + 3) & !3;
        }
        self.rx = buf;
        result
    }

    /// One request, waiting for its ACK.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), WireError> {
        let seq = self.push(msg, flags | NLM_F_REQUEST | NLM_F_ACK);
        self.flush()?;
        let mut done: Option<Result<(), WireError>> = None;
        while done.is_none() {
            self.recv_each(|m| {
                if m.header.sequence_number == seq
                    && let NetlinkPayload::Error(e) = &m.payload
                {
                    done = Some(match e.code {
                        None => Ok(()),
                        Some(c) => Err(WireError::Errno(-c.get(), ext_ack_message(&e.header))),
                    });
                }
                Ok(())
            })?;
        }
        done.unwrap_or(Ok(()))
    }

    /// A dump request; returns every message of the reply.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, WireError> {
        let seq = self.push(msg, NLM_F_REQUEST | NLM_F_DUMP);
        self.flush()?;
        let mut out = Vec::new();
        let mut finished = false;
        let mut failure = None;
        let mut interrupted = false;
        while !finished {
            self.recv_each(|m| {
                if m.header.sequence_number != seq {
                    return Ok(());
                }
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Done(_) => finished = true,
                    NetlinkPayload::Error(e) => {
                        finished = true;
                        if let Some(c) = e.code {
                            failure = Some(WireError::Errno(-c.get(), ext_ack_message(&e.header)));
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        match failure {
            Some(e) => Err(e),
            // The table changed during the dump: the snapshot may be inconsistent, so the
            // caller retries rather than acting on it (a purge could hit a live route).
            None if interrupted => Err(WireError::Decode(
                "dump interrupted by a concurrent change (NLM_F_DUMP_INTR); retry".into(),
            )),
            None => Ok(out),
        }
    }

    /// Many write requests, pipelined. One result per request, in order.
    pub(crate) fn batch(
        &mut self,
        msgs: Vec<(RouteNetlinkMessage, u16)>,
    ) -> Vec<Result<(), WireError>> {
        let mut results: Vec<Result<(), WireError>> = Vec::with_capacity(msgs.len());
        let mut iter = msgs.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<_> = iter.by_ref().take(BATCH_CHUNK).collect();
            let base = results.len();
            let n = chunk.len();
            let mut first_seq = 0;
            let mut last_seq = 0;
            for (i, (msg, flags)) in chunk.into_iter().enumerate() {
                // Only the last request asks for an ACK: errors come back regardless, and the
                // final ACK tells us the kernel has processed the whole buffer.
                let ack = if i + 1 == n { NLM_F_ACK } else { 0 };
                let seq = self.push(msg, flags | NLM_F_REQUEST | ack);
                if i == 0 {
                    first_seq = seq;
                }
                last_seq = seq;
            }
            results.extend((0..n).map(|_| Ok(())));
            if let Err(e) = self.flush() {
                let msg = e.to_string();
                for r in &mut results[base..] {
                    *r = Err(WireError::Io(io::Error::other(msg.clone())));
                }
                continue;
            }
            let mut finished = false;
            while !finished {
                let res = self.recv_each(|m| {
                    let seq = m.header.sequence_number;
                    if let NetlinkPayload::Error(e) = &m.payload {
                        if seq.wrapping_sub(first_seq) < n as u32 {
                            let idx = base + seq.wrapping_sub(first_seq) as usize;
                            if let Some(c) = e.code {
                                results[idx] =
                                    Err(WireError::Errno(-c.get(), ext_ack_message(&e.header)));
                            }
                        }
                        if seq == last_seq {
                            finished = true;
                        }
                    }
                    Ok(())
                });
                if let Err(e) = res {
                    // Lost ACKs (ENOBUFS) or a broken socket: we cannot tell what happened,
                    // so report the chunk as failed; the caller resyncs.
                    let msg = e.to_string();
                    for r in &mut results[base..] {
                        if r.is_ok() {
                            *r = Err(WireError::Io(io::Error::other(msg.clone())));
                        }
                    }
                    finished = true;
                }
            }
        }
        results
    }
}

/// The `NLMSGERR_ATTR_MSG` string of an extended ACK. `after_code` is the error payload after
/// the errno: the echoed request header (16 bytes, capped) then TLVs (netlink(7)).
pub(crate) fn ext_ack_message(after_code: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut off = 16;
    while off + 4 <= after_code.len() {
        let len = u16::from_ne_bytes([after_code[off], after_code[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([after_code[off + 2], after_code[off + 3]]) & 0x3fff;
        if len < 4 || off + len > after_code.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &after_code[off + 4..off + len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|s| !s.is_empty());
        }
        off += (len + 3) & !3;
    }
    None
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The route message for a write; `delete` leaves out what deletion must not match on.
pub(crate) fn route_message(r: &KernelRoute, delete: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(r.dst.ip());
    m.header.destination_prefix_length = r.dst.prefix();
    m.header.table = if r.table < 256 { r.table as u8 } else { 252 };
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.kind = match r.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Other(t) => RouteType::from(t),
    };
    m.header.scope = if delete {
        // RT_SCOPE_NOWHERE on delete means "any scope", as iproute2 sends it.
        RouteScope::NoWhere
    } else {
        match r.scope {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Other(s) => RouteScope::from(s),
        }
    };
    if r.onlink && !delete {
        m.header.flags = RouteFlags::Onlink;
    }
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            r.dst.network(),
        )));
    if r.table >= 256 {
        m.attributes.push(RouteAttribute::Table(r.table));
    }
    if !delete {
        if let Some(gw) = r.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = r.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if !r.multipath.is_empty() {
            let hops = r
                .multipath
                .iter()
                .map(|nh| {
                    let mut hop = RouteNextHop::default();
                    if nh.onlink {
                        hop.flags = RouteNextHopFlags::Onlink;
                    }
                    hop.interface_index = nh.oif;
                    hop.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(nh.gateway)));
                    hop
                })
                .collect();
            m.attributes.push(RouteAttribute::MultiPath(hops));
        }
    }
    if r.metric != 0 {
        m.attributes.push(RouteAttribute::Priority(r.metric));
    }
    m
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Decode a dumped route; `None` for families and shapes felix-lite never owns.
pub(crate) fn parse_route(m: &RouteMessage) -> Option<KernelRoute> {
    let unspecified: IpAddr = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut gateway = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    let mut metric = 0;
    let mut multipath = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d)?,
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(hops) => {
                multipath = hops
                    .iter()
                    .filter_map(|h| {
                        let gateway = h.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => route_addr(g),
                            _ => None,
                        })?;
                        Some(KernelNextHop {
                            gateway,
                            oif: h.interface_index,
                            onlink: h.flags.contains(RouteNextHopFlags::Onlink),
                        })
                    })
                    .collect();
            }
            _ => {}
        }
    }
    let kind = match m.header.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole => RouteKind::Blackhole,
        other => RouteKind::Other(u8::from(other)),
    };
    let scope = match m.header.scope {
        RouteScope::Universe => Scope::Universe,
        RouteScope::Link => Scope::Link,
        other => Scope::Other(u8::from(other)),
    };
    Some(KernelRoute {
        dst: IpNetwork::new(dst, m.header.destination_prefix_length).ok()?,
        kind,
        gateway,
        oif,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        scope,
        protocol: u8::from(m.header.protocol),
        table,
        metric,
        multipath,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, Parseable};

    fn sample() -> KernelRoute {
        KernelRoute {
            dst: "10.19.1.0/26".parse().unwrap(),
            kind: RouteKind::Unicast,
            gateway: Some("198.19.0.2".parse().unwrap()),
            oif: Some(7),
            onlink: true,
            scope: Scope::Universe,
            protocol: crate::MANX_ROUTE_PROTOCOL,
            table: 254,
            metric: 0,
            multipath: Vec::new(),
        }
    }

    fn multipath_sample() -> KernelRoute {
        let hop = |gw: &str, oif, onlink| KernelNextHop {
            gateway: gw.parse().unwrap(),
            oif,
            onlink,
        };
        KernelRoute {
            dst: "10.200.0.0/26".parse().unwrap(),
            gateway: None,
            oif: None,
            onlink: false,
            multipath: vec![hop("198.19.0.1", 7, false), hop("198.19.1.1", 8, true)],
            ..sample()
        }
    }

    // rtnetlink(7): RTA_MULTIPATH (9) holds one struct rtnexthop per hop: u16 length, u8
    // flags (RTNH_F_ONLINK = 4), u8 hops (weight - 1), i32 ifindex, then the hop's own
    // attributes (RTA_GATEWAY), as `ip route add ... nexthop via A dev X nexthop via B dev Y`.
    #[test]
    fn multipath_route_bytes_are_rta_multipath_with_one_rtnexthop_per_hop() {
        let m = route_message(&multipath_sample(), false);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // After the header and RTA_DST: RTA_MULTIPATH of 4 + 2 * (8 + 8) octets.
        assert_eq!(&buf[20..24], &[36, 0, 9, 0]);
        assert_eq!(&buf[24..32], &[16, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&buf[32..40], &[8, 0, 5, 0, 198, 19, 0, 1]);
        assert_eq!(&buf[40..48], &[16, 0, 4, 0, 8, 0, 0, 0]);
        assert_eq!(&buf[48..56], &[8, 0, 5, 0, 198, 19, 1, 1]);
        assert_eq!(buf.len(), 56);
    }

    #[test]
    fn multipath_route_round_trips_through_bytes() {
        let r = multipath_sample();
        let m = route_message(&r, false);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let parsed = RouteMessage::parse(buf.as_slice()).unwrap();
        assert_eq!(parse_route(&parsed), Some(r));
    }

    // rtnetlink(7): struct rtmsg is family, dst_len, src_len, tos, table, protocol, scope,
    // type, then u32 flags; RTA_DST=1, RTA_OIF=4, RTA_GATEWAY=5.
    #[test]
    fn route_message_bytes_match_rtmsg_layout() {
        let m = route_message(&sample(), false);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        assert_eq!(
            &buf[..12],
            &[
                2,
                26,
                0,
                0,
                254,
                crate::MANX_ROUTE_PROTOCOL,
                0,
                1,
                4,
                0,
                0,
                0
            ]
        );
        // RTA_DST 10.19.1.0, then RTA_GATEWAY 198.19.0.2, then RTA_OIF 7.
        assert_eq!(&buf[12..20], &[8, 0, 1, 0, 10, 19, 1, 0]);
        assert_eq!(&buf[20..28], &[8, 0, 5, 0, 198, 19, 0, 2]);
        assert_eq!(&buf[28..36], &[8, 0, 4, 0, 7, 0, 0, 0]);
    }

    #[test]
    fn route_round_trips_through_bytes() {
        let r = sample();
        let m = route_message(&r, false);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let parsed = RouteMessage::parse(buf.as_slice()).unwrap();
        assert_eq!(parse_route(&parsed), Some(r));
    }

    #[test]
    fn delete_message_matches_any_scope_and_protocol_is_kept() {
        let m = route_message(&sample(), true);
        assert_eq!(m.header.scope, RouteScope::NoWhere);
        assert_eq!(u8::from(m.header.protocol), crate::MANX_ROUTE_PROTOCOL);
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Gateway(_)))
        );
    }

    #[test]
    fn ext_ack_message_is_read_from_the_tlvs_after_the_echoed_header() {
        let mut payload = vec![0u8; 16];
        let msg = b"Nexthop has invalid gateway\0";
        let len = (4 + msg.len()) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&1u16.to_ne_bytes());
        payload.extend_from_slice(msg);
        assert_eq!(
            ext_ack_message(&payload).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(ext_ack_message(&payload[..16]), None);
    }

    proptest::proptest! {
        // rtnetlink(7): any route we emit decodes back to the same route.
        #[test]
        fn any_manx_route_round_trips(
            v6 in proptest::bool::ANY,
            bits in proptest::num::u128::ANY,
            prefix_seed in 0u8..=128,
            gw_bits in proptest::option::of(proptest::num::u128::ANY),
            oif in proptest::option::of(1u32..100_000),
            onlink in proptest::bool::ANY,
            blackhole in proptest::bool::ANY,
            metric in 0u32..2000,
        ) {
            let (dst, gateway) = if v6 {
                let p = prefix_seed % 129;
                let n = ipnetwork::Ipv6Network::new(std::net::Ipv6Addr::from(bits), p).unwrap();
                (
                    IpNetwork::V6(ipnetwork::Ipv6Network::new(n.network(), p).unwrap()),
                    gw_bits.map(|g| IpAddr::V6(std::net::Ipv6Addr::from(g))),
                )
            } else {
                let p = prefix_seed % 33;
                let n = ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::from(bits as u32), p)
                    .unwrap();
                (
                    IpNetwork::V4(ipnetwork::Ipv4Network::new(n.network(), p).unwrap()),
                    gw_bits.map(|g| IpAddr::V4(std::net::Ipv4Addr::from(g as u32))),
                )
            };
            let r = KernelRoute {
                dst,
                kind: if blackhole { RouteKind::Blackhole } else { RouteKind::Unicast },
                gateway,
                oif,
                onlink,
                scope: Scope::Universe,
                protocol: crate::MANX_ROUTE_PROTOCOL,
                table: 254,
                metric,
                multipath: Vec::new(),
            };
            let m = route_message(&r, false);
            let mut buf = vec![0u8; m.buffer_len()];
            m.emit(&mut buf);
            let parsed = RouteMessage::parse(buf.as_slice()).unwrap();
            proptest::prop_assert_eq!(parse_route(&parsed), Some(r));
        }
    }
}
