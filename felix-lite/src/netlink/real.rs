//! [`Netlink`] on the kernel, with netlink-packet-route messages over a NETLINK_ROUTE socket
//! (rtnetlink's re-exported `netlink-sys`). The socket belongs to the network namespace of
//! the thread that called [`RealNetlink::new`].

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteMessage;

use super::wire::{NlSocket, WireError, parse_route, route_message};
use super::{
    KernelAddr, KernelLink, KernelRoute, LinkKind, LinkSpec, NeighTable, Neighbour, Netlink,
    NlError, RT_TABLE_MAIN, RouteOp,
};
use crate::types::MacAddr;

/// The kernel of the current network namespace.
#[derive(Debug, Clone)]
pub struct RealNetlink {
    sock: Arc<Mutex<NlSocket>>,
}

impl RealNetlink {
    /// Open a NETLINK_ROUTE socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, NlError> {
        let sock = NlSocket::new()
            .map_err(|e| NlError::other("open socket", "NETLINK_ROUTE", e.to_string()))?;
        Ok(RealNetlink {
            sock: Arc::new(Mutex::new(sock)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut NlSocket) -> T + Send + 'static,
    ) -> T {
        let sock = self.sock.clone();
        let job = move || {
            let mut guard = sock.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        };
        // Off the async worker: a 100k-route batch keeps the socket busy for a while.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h
                .spawn_blocking(job)
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
            Err(_) => job(),
        }
    }
}

fn wire_err(op: &str, object: impl Into<String>, e: WireError) -> NlError {
    match e {
        WireError::Errno(n, None) => NlError::errno(op, object, n),
        WireError::Errno(n, Some(m)) => NlError {
            message: format!("{} ({m})", std::io::Error::from_raw_os_error(n)),
            ..NlError::errno(op, object, n)
        },
        other => NlError::other(op, object, other.to_string()),
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn parse_link(m: &LinkMessage) -> KernelLink {
    let mut link = KernelLink {
        index: m.header.index,
        name: String::new(),
        kind: LinkKind::Other(None),
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    let mut vni = None;
    let mut port = 4789;
    let mut local = None;
    let mut parent = None;
    let mut kind_name: Option<String> = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(v) => link.mtu = *v,
            LinkAttribute::Address(b) => link.mac = MacAddr::try_from(b.as_slice()).ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind_name = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            for x in v {
                                match x {
                                    InfoVxlan::Id(id) => vni = Some(*id),
                                    InfoVxlan::Port(p) => port = *p,
                                    InfoVxlan::Local(a) => local = Some(IpAddr::V4(*a)),
                                    InfoVxlan::Local6(a) => local = Some(IpAddr::V6(*a)),
                                    InfoVxlan::Link(l) => parent = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link.kind = match kind_name.as_deref() {
        Some("ipip") => LinkKind::Ipip,
        Some("tun") => LinkKind::Tun,
        Some("vxlan") => LinkKind::Vxlan {
            vni: vni.unwrap_or(0),
            port,
            local: local.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            parent,
        },
        _ => LinkKind::Other(kind_name),
    };
    link
}

fn new_link_message(spec: &LinkSpec) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
    m.attributes.push(LinkAttribute::Mtu(spec.mtu));
    if let Some(mac) = spec.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    let info = match &spec.kind {
        LinkKind::Ipip => vec![LinkInfo::Kind(InfoKind::IpIp)],
        LinkKind::Vxlan {
            vni,
            port,
            local,
            parent,
        } => {
            let mut data = vec![InfoVxlan::Id(*vni)];
            match local {
                IpAddr::V4(a) => data.push(InfoVxlan::Local(*a)),
                IpAddr::V6(a) => data.push(InfoVxlan::Local6(*a)),
            }
            data.push(InfoVxlan::Port(*port));
            // Calico programs every remote VTEP statically; learning would add stale entries.
            data.push(InfoVxlan::Learning(false));
            if let Some(p) = parent {
                data.push(InfoVxlan::Link(*p));
            }
            vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(data)),
            ]
        }
        // Never sent: add_link creates TUNs through /dev/net/tun.
        LinkKind::Tun => vec![LinkInfo::Kind(InfoKind::Tun)],
        LinkKind::Other(k) => vec![LinkInfo::Kind(InfoKind::Other(
            k.clone().unwrap_or_default(),
        ))],
    };
    m.attributes.push(LinkAttribute::LinkInfo(info));
    m
}

fn address_message(index: u32, addr: IpNetwork) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(addr.ip());
    m.header.prefix_len = addr.prefix();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(addr.ip()));
    m.attributes.push(AddressAttribute::Address(addr.ip()));
    m
}

fn neighbour_message(table: NeighTable, n: &Neighbour) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = n.index;
    m.header.state = NeighbourState::Permanent;
    let dst = match n.ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    match table {
        NeighTable::Neigh => m.header.family = family_of(n.ip),
        NeighTable::Fdb => {
            m.header.family = AddressFamily::Bridge;
            // NTF_SELF: the entry belongs to the vxlan device itself, as `bridge fdb ... self`.
            m.header.flags = NeighbourFlags::Own;
        }
    }
    m.attributes.push(NeighbourAttribute::Destination(dst));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.0.to_vec()));
    m
}

fn parse_neighbour(m: &NeighbourMessage) -> Option<Neighbour> {
    // NUD_PERMANENT (0x80), possibly with NUD_NOARP as `bridge fdb add … permanent` sets.
    if u16::from(m.header.state) & 0x80 == 0 {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(IpAddr::V4(*v)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                ip = Some(IpAddr::V6(*v))
            }
            // FDB dumps are AF_BRIDGE, so the parser cannot know NDA_DST's family.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                ip = match b.len() {
                    4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::try_from(b.as_slice()).ok(),
            _ => {}
        }
    }
    Some(Neighbour {
        index: m.header.ifindex,
        ip: ip?,
        mac: mac?,
    })
}

#[async_trait]
impl Netlink for RealNetlink {
    async fn links(&self) -> Result<Vec<KernelLink>, NlError> {
        let msgs = self
            .with(|s| s.dump(RouteNetlinkMessage::GetLink(LinkMessage::default())))
            .await
            .map_err(|e| wire_err("dump", "links", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    async fn add_link(&self, spec: &LinkSpec) -> Result<(), NlError> {
        if spec.kind == LinkKind::Tun {
            // The tun driver creates devices only through its character device. The ioctl
            // acts in the calling thread's namespace, which is this socket's.
            return crate::udp::tun::create_persistent(&spec.name).map_err(|e| {
                match e.raw_os_error() {
                    // No /dev/net/tun: a kernel without TUN, like a missing link kind.
                    Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => {
                        NlError::errno("add link", spec.name.clone(), super::EOPNOTSUPP)
                    }
                    Some(n) => NlError::errno("add link", spec.name.clone(), n),
                    None => NlError::other("add link", spec.name.clone(), e.to_string()),
                }
            });
        }
        let msg = RouteNetlinkMessage::NewLink(new_link_message(spec));
        self.with(move |s| s.request(msg, NLM_F_CREATE | NLM_F_EXCL))
            .await
            .map_err(|e| wire_err("add link", spec.name.clone(), e))
    }

    async fn del_link(&self, index: u32) -> Result<(), NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.with(move |s| s.request(RouteNetlinkMessage::DelLink(m), 0))
            .await
            .map_err(|e| wire_err("delete link", format!("index {index}"), e))
    }

    async fn set_link(&self, index: u32, mtu: u32, up: bool) -> Result<(), NlError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.with(move |s| s.request(RouteNetlinkMessage::SetLink(m), 0))
            .await
            .map_err(|e| wire_err("set link", format!("index {index}"), e))
    }

    async fn addresses(&self) -> Result<Vec<KernelAddr>, NlError> {
        let msgs = self
            .with(|s| s.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default())))
            .await
            .map_err(|e| wire_err("dump", "addresses", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    // IFA_LOCAL is the interface's own address on point-to-point links;
                    // IFA_ADDRESS is the peer there. Prefer IFA_LOCAL.
                    let mut ip = None;
                    for attr in &a.attributes {
                        match attr {
                            AddressAttribute::Local(l) => ip = Some(*l),
                            AddressAttribute::Address(x) if ip.is_none() => ip = Some(*x),
                            _ => {}
                        }
                    }
                    Some(KernelAddr {
                        index: a.header.index,
                        addr: IpNetwork::new(ip?, a.header.prefix_len).ok()?,
                        global: a.header.scope == AddressScope::Universe,
                    })
                }
                _ => None,
            })
            .collect())
    }

    async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        let msg = RouteNetlinkMessage::NewAddress(address_message(index, addr));
        self.with(move |s| s.request(msg, NLM_F_CREATE | NLM_F_EXCL))
            .await
            .map_err(|e| wire_err("add address", format!("{addr} on index {index}"), e))
    }

    async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        let msg = RouteNetlinkMessage::DelAddress(address_message(index, addr));
        self.with(move |s| s.request(msg, 0))
            .await
            .map_err(|e| wire_err("delete address", format!("{addr} on index {index}"), e))
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, NlError> {
        let msgs = self
            .with(|s| s.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default())))
            .await
            .map_err(|e| wire_err("dump", "routes", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .filter(|r| r.table == RT_TABLE_MAIN)
            .collect())
    }

    async fn apply_routes(&self, ops: Vec<RouteOp>) -> Vec<Result<(), NlError>> {
        let labels: Vec<(&'static str, String)> = ops
            .iter()
            .map(|op| match op {
                RouteOp::Add(r) => ("add route", r.to_string()),
                RouteOp::Replace(r) => ("replace route", r.to_string()),
                RouteOp::Delete(r) => ("delete route", r.to_string()),
            })
            .collect();
        let msgs: Vec<(RouteNetlinkMessage, u16)> = ops
            .iter()
            .map(|op| match op {
                RouteOp::Add(r) => (
                    RouteNetlinkMessage::NewRoute(route_message(r, false)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                RouteOp::Replace(r) => (
                    RouteNetlinkMessage::NewRoute(route_message(r, false)),
                    NLM_F_CREATE | NLM_F_REPLACE,
                ),
                RouteOp::Delete(r) => (RouteNetlinkMessage::DelRoute(route_message(r, true)), 0),
            })
            .collect();
        let results = self.with(move |s| s.batch(msgs)).await;
        results
            .into_iter()
            .zip(labels)
            .map(|(r, (op, obj))| r.map_err(|e| wire_err(op, obj, e)))
            .collect()
    }

    async fn neighbours(&self, table: NeighTable, index: u32) -> Result<Vec<Neighbour>, NlError> {
        let mut m = NeighbourMessage::default();
        m.header.family = match table {
            NeighTable::Neigh => AddressFamily::Unspec,
            NeighTable::Fdb => AddressFamily::Bridge,
        };
        let msgs = self
            .with(move |s| s.dump(RouteNetlinkMessage::GetNeighbour(m)))
            .await
            .map_err(|e| wire_err("dump", "neighbours", e))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => {
                    let is_fdb = n.header.family == AddressFamily::Bridge;
                    if n.header.ifindex != index || is_fdb != (table == NeighTable::Fdb) {
                        return None;
                    }
                    parse_neighbour(n)
                }
                _ => None,
            })
            .collect())
    }

    async fn set_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        let msg = RouteNetlinkMessage::NewNeighbour(neighbour_message(table, n));
        let obj = format!("{} lladdr {} index {}", n.ip, n.mac, n.index);
        self.with(move |s| s.request(msg, NLM_F_CREATE | NLM_F_REPLACE))
            .await
            .map_err(|e| wire_err("set neighbour", obj, e))
    }

    async fn del_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        let msg = RouteNetlinkMessage::DelNeighbour(neighbour_message(table, n));
        let obj = format!("{} lladdr {} index {}", n.ip, n.mac, n.index);
        self.with(move |s| s.request(msg, 0))
            .await
            .map_err(|e| wire_err("delete neighbour", obj, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, Parseable};

    fn bytes(m: &LinkMessage) -> Vec<u8> {
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    fn find(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    // rtnetlink(7) / if_link.h: IFLA_LINKINFO(18) { IFLA_INFO_KIND(1) "ipip\0" }, as
    // `ip link add tunl0 type ipip` sends it. This is the IPIP path the build machines'
    // kernel cannot run.
    #[test]
    fn ipip_link_message_carries_kind_ipip_name_and_mtu() {
        let spec = LinkSpec {
            name: "tunl0".into(),
            kind: LinkKind::Ipip,
            mtu: 1480,
            mac: None,
        };
        let b = bytes(&new_link_message(&spec));
        // IFLA_IFNAME(3) "tunl0\0", padded to 12.
        assert!(find(&b, &[10, 0, 3, 0, b't', b'u', b'n', b'l', b'0', 0]));
        // IFLA_MTU(4) 1480.
        assert!(find(&b, &[8, 0, 4, 0]));
        assert!(find(&b, &1480u32.to_ne_bytes()));
        // IFLA_INFO_KIND(1) "ipip\0".
        assert!(find(&b, &[9, 0, 1, 0, b'i', b'p', b'i', b'p', 0]));
        let parsed = LinkMessage::parse(b.as_slice()).unwrap();
        let l = parse_link(&parsed);
        assert_eq!(
            (l.name.as_str(), l.mtu, l.kind),
            ("tunl0", 1480, LinkKind::Ipip)
        );
    }

    // if_link.h: IFLA_VXLAN_ID(1) u32, IFLA_VXLAN_LOCAL(4) be32, IFLA_VXLAN_LEARNING(7) u8,
    // IFLA_VXLAN_PORT(15) be16.
    #[test]
    fn vxlan_link_message_has_vni_local_port_and_learning_off() {
        let spec = LinkSpec {
            name: "vxlan.manx".into(),
            kind: LinkKind::Vxlan {
                vni: 4096,
                port: 4789,
                local: "198.19.1.1".parse().unwrap(),
                parent: Some(3),
            },
            mtu: 1450,
            mac: Some(MacAddr([0x66, 1, 2, 3, 4, 5])),
        };
        let b = bytes(&new_link_message(&spec));
        assert!(find(&b, &[8, 0, 1, 0, 0x00, 0x10, 0, 0])); // VNI 4096 (host order, LE)
        assert!(find(&b, &[8, 0, 4, 0, 198, 19, 1, 1]));
        assert!(find(&b, &[5, 0, 7, 0, 0]));
        assert!(find(&b, &[6, 0, 15, 0, 0x12, 0xb5])); // 4789 big-endian
        // IFLA_ADDRESS(1) with the MAC.
        assert!(find(&b, &[10, 0, 1, 0, 0x66, 1, 2, 3, 4, 5]));
        let parsed = LinkMessage::parse(b.as_slice()).unwrap();
        assert_eq!(parse_link(&parsed).kind, spec.kind);
    }

    // neighbour(7)/bridge(8): an FDB entry is AF_BRIDGE(7) with NTF_SELF and NUD_PERMANENT.
    #[test]
    fn fdb_message_is_af_bridge_self_permanent() {
        let n = Neighbour {
            index: 9,
            ip: "198.19.1.2".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 0xb]),
        };
        let m = neighbour_message(NeighTable::Fdb, &n);
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        // ndmsg: family, pad×3, ifindex, state u16, flags u8, type u8.
        assert_eq!(b[0], 7);
        assert_eq!(&b[4..8], &9i32.to_ne_bytes());
        assert_eq!(&b[8..10], &0x80u16.to_ne_bytes());
        assert_eq!(b[10], 0x02);
        assert_eq!(parse_neighbour(&m), Some(n));
    }
}
