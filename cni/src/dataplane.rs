//! Pod wiring over rtnetlink: the veth pair, addresses, routes and sysctls.
//!
//! ```text
//!   node netns (the plugin runs here)         pod netns (CNI_NETNS)
//!   caliXXXXXXXXXXX  ee:ee:ee:ee:ee:ee  <==>  eth0  10.20.0.5/32
//!     proxy_arp=1, proxy_delay=0               169.254.1.1/32 dev eth0 scope link
//!     10.20.0.5/32 dev caliX scope link        169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT
//!                                              default via 169.254.1.1 dev eth0
//!                                              default via fe80::ecee:eeff:feee:eeee (v6)
//! ```
//!
//! The pod never learns a real gateway: it ARPs for 169.254.1.1 and the node
//! answers with proxy ARP, so every pod packet goes to the node, which routes
//! it by the /32 host routes (Calico's model). IPv6 uses the host veth's
//! link-local address, derived by the kernel from the fixed MAC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::CniError;
use crate::netns::{self, NetNs};

/// MAC of every host-side veth (Calico's).
pub const HOST_MAC: [u8; 6] = [0xee; 6];
/// The IPv4 next hop pods use; the node answers for it by proxy ARP.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 next hop: the link-local address the kernel derives (EUI-64)
/// from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// Bytes subtracted from the uplink MTU when the MTU is detected: VXLAN's
/// 50, the largest overhead of the encapsulations Manx uses, so one value
/// fits every pool.
pub const ENCAP_OVERHEAD: u32 = 50;
/// MTU when none is configured and no default route exists to detect from.
pub const DEFAULT_MTU: u32 = 1500;

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

/// A netlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the namespace of the calling thread. Needs a tokio
    /// runtime.
    pub fn current() -> Result<Netlink, CniError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| CniError::io(format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection in `ns`: the socket is opened on a thread inside it.
    pub fn in_netns(ns: &NetNs) -> Result<Netlink, CniError> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = ns
            .run(|| {
                let _guard = rt.enter();
                rtnetlink::new_connection()
            })?
            .map_err(|e| {
                CniError::io(format!(
                    "cannot open a netlink socket in {}: {e}",
                    ns.path().display()
                ))
            })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link named `name`, or `None`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, CniError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if is_errno(&e, &[ENODEV, ENOENT]) => Ok(None),
            Err(e) => Err(nl_err(format!("looking up interface {name}"), e)),
        }
    }

    /// Deletes a link by index; "already gone" is success.
    pub async fn delete_link(&self, index: u32, name: &str) -> Result<(), CniError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, &[ENODEV, ENOENT]) => Ok(()),
            Err(e) => Err(nl_err(format!("deleting interface {name}"), e)),
        }
    }

    /// Deletes the link named `name` if it exists; returns whether it did.
    pub async fn delete_link_by_name(&self, name: &str) -> Result<bool, CniError> {
        match self.link_by_name(name).await? {
            Some(link) => {
                self.delete_link(link.header.index, name).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<(), CniError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| nl_err(format!("setting interface {name} up"), e))
    }

    async fn add_address(&self, index: u32, name: &str, ip: IpAddr) -> Result<(), CniError> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            // No DAD: the address is ours alone on a point-to-point veth, and
            // DAD would keep it tentative (unusable) for a second.
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(|e| nl_err(format!("adding address {ip}/{prefix} to {name}"), e))
    }

    /// Add a route, replacing one to the same destination: a stale route of
    /// a previous pod with this address, or the node's blackhole for a
    /// block that is this single address (blockSize 32 / 128), must give
    /// way to this pod's route.
    async fn add_route(&self, route: RouteMessage, what: String) -> Result<(), CniError> {
        match self.handle.route().add(route).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(nl_err(format!("adding route {what}"), e)),
        }
    }

    /// Addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpAddr>, CniError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing addresses".into(), e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            })
            .collect())
    }

    /// Routes of the main table of one family.
    pub async fn routes(&self, v6: bool) -> Result<Vec<RouteMessage>, CniError> {
        let query = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        self.handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("listing routes".into(), e))
    }
}

/// What to build for one workload.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Host-side name (`caliXXXXXXXXXXX`).
    pub host_ifname: String,
    /// Pod-side name (`CNI_IFNAME`).
    pub pod_ifname: String,
    /// MTU of both ends.
    pub mtu: u32,
    /// The pod's addresses (assigned as /32 and /128).
    pub addresses: Vec<IpAddr>,
}

/// The veth pair [`create_pair`] made, before any address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Index of the host side in the node namespace.
    pub host_index: u32,
    /// Index of the pod side in the pod namespace.
    pub pod_index: u32,
    /// MAC of the host side.
    pub host_mac: String,
    /// MAC of the pod side.
    pub pod_mac: String,
}

/// Fails (code 100) when `pod_ifname` already exists in the pod namespace:
/// the container is already attached, and nothing may be touched, not even
/// its addresses. Run before asking IPAM for addresses.
pub async fn ensure_pod_ifname_free(
    pod: &Netlink,
    ns: &NetNs,
    pod_ifname: &str,
) -> Result<(), CniError> {
    if pod.link_by_name(pod_ifname).await?.is_some() {
        return Err(CniError::internal(format!(
            "interface {pod_ifname} already exists in {}: the container is already attached (run DEL first)",
            ns.path().display()
        )));
    }
    Ok(())
}

/// Creates the veth pair, the pod end straight in the pod namespace, both
/// ends down and without addresses (that is [`configure`], once IPAM has
/// answered: the pair is made while IPAM runs). A host veth of the same
/// name is replaced. On error the caller deletes the host veth.
pub async fn create_pair(
    host: &Netlink,
    pod: &Netlink,
    ns: &NetNs,
    host_ifname: &str,
    pod_ifname: &str,
    mtu: u32,
) -> Result<Pair, CniError> {
    let veth = || {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(pod_ifname.to_string())
            .mtu(mtu)
            .setns_by_fd(ns.file().as_raw_fd())
            .build();
        LinkVeth::new(host_ifname, pod_ifname)
            .mtu(mtu)
            .address(HOST_MAC.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build()
    };
    let created = match host.handle.link().add(veth()).execute().await {
        // A host veth of the same name is left over from an earlier sandbox
        // of the same pod whose DEL never came: it is ours to replace
        // (Calico too). Tried after the create fails, not before: one
        // netlink request less (each waits for the kernel's RTNL lock).
        Err(e) if is_errno(&e, &[EEXIST]) && host.delete_link_by_name(host_ifname).await? => {
            tracing::warn!(veth = %host_ifname, "replaced a stale host veth");
            host.handle.link().add(veth()).execute().await
        }
        other => other,
    };
    created.map_err(|e| {
        let mut err = nl_err(
            format!("creating veth {host_ifname} <-> {pod_ifname}"),
            e.clone(),
        );
        if is_errno(&e, &[EEXIST]) {
            err.msg
                .push_str(": an interface of that name already exists");
        }
        err
    })?;
    let host_link = host.link_by_name(host_ifname).await?.ok_or_else(|| {
        CniError::internal(format!("veth {host_ifname} vanished right after creation"))
    })?;
    let pod_link = pod.link_by_name(pod_ifname).await?.ok_or_else(|| {
        CniError::internal(format!(
            "interface {pod_ifname} did not appear in {}",
            ns.path().display()
        ))
    })?;
    Ok(Pair {
        host_index: host_link.header.index,
        pod_index: pod_link.header.index,
        host_mac: format_mac(&HOST_MAC),
        pod_mac: link_mac(&pod_link).unwrap_or_default(),
    })
}

/// Configures a [`Pair`] for `w.addresses`: host sysctls, both ends up,
/// the pod's addresses, gateway neighbour and routes, and the host routes.
/// On error the caller deletes the host veth (which removes the pair and
/// its routes).
pub async fn configure(
    host: &Netlink,
    pod: &Netlink,
    ns: &NetNs,
    w: &Wiring,
    pair: &Pair,
) -> Result<(), CniError> {
    let has_v4 = w.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = w.addresses.iter().any(IpAddr::is_ipv6);
    let host_index = pair.host_index;
    let pod_index = pair.pod_index;

    // Host-side sysctls (Calico's configureSysctls), in the node namespace
    // this thread runs in.
    let h = &w.host_ifname;
    if has_v4 {
        netns::write_sysctl(&format!("net/ipv4/conf/{h}/proxy_arp"), "1")?;
        netns::write_sysctl(&format!("net/ipv4/neigh/{h}/proxy_delay"), "0")?;
        netns::write_sysctl(&format!("net/ipv4/conf/{h}/forwarding"), "1")?;
    }
    if has_v6 {
        netns::write_sysctl(&format!("net/ipv6/conf/{h}/disable_ipv6"), "0")?;
        netns::write_sysctl(&format!("net/ipv6/conf/{h}/accept_ra"), "0")?;
        netns::write_sysctl(&format!("net/ipv6/conf/{h}/proxy_ndp"), "1")?;
        netns::write_sysctl(&format!("net/ipv6/conf/{h}/forwarding"), "1")?;
    }
    host.set_up(host_index, h).await?;

    // Pod side.
    if has_v6 {
        let ifname = w.pod_ifname.clone();
        ns.run(move || -> Result<(), CniError> {
            netns::write_sysctl("net/ipv6/conf/all/disable_ipv6", "0")?;
            netns::write_sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
            netns::write_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")
        })??;
    }
    pod.set_up(pod_index, &w.pod_ifname).await?;
    for ip in &w.addresses {
        pod.add_address(pod_index, &w.pod_ifname, *ip).await?;
    }
    if has_v4 {
        let link_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(GATEWAY_V4, 32)
            .output_interface(pod_index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build();
        pod.add_route(link_route, format!("{GATEWAY_V4}/32 dev {}", w.pod_ifname))
            .await?;
        // A permanent neighbour for the gateway (as Calico): the pod needs no
        // ARP round trip, and does not depend on the node's proxy ARP, which
        // only answers when the node has a route to 169.254.1.1.
        pod.handle
            .neighbours()
            .add(pod_index, IpAddr::V4(GATEWAY_V4))
            .link_layer_address(&HOST_MAC)
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    format!("adding neighbour {GATEWAY_V4} on {}", w.pod_ifname),
                    e,
                )
            })?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(GATEWAY_V4)
            .output_interface(pod_index)
            .protocol(RouteProtocol::Boot)
            .build();
        pod.add_route(
            default,
            format!("default via {GATEWAY_V4} dev {}", w.pod_ifname),
        )
        .await?;
    }
    if has_v6 {
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .gateway(GATEWAY_V6)
            .output_interface(pod_index)
            .protocol(RouteProtocol::Boot)
            .build();
        pod.add_route(
            default,
            format!("default via {GATEWAY_V6} dev {}", w.pod_ifname),
        )
        .await?;
    }

    // Host routes to the pod.
    for ip in &w.addresses {
        let route = host_route(*ip, host_index);
        host.add_route(route, format!("{ip} dev {h} scope link"))
            .await?;
    }
    Ok(())
}

fn host_route(ip: IpAddr, host_index: u32) -> RouteMessage {
    match ip {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .output_interface(host_index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(host_index)
            .protocol(RouteProtocol::Boot)
            .build(),
    }
}

/// Removes the pair: through the pod end when the namespace is there (the
/// kernel deletes the peer and its routes), and the host end by name in any
/// case. Everything missing is fine (DEL is idempotent).
pub async fn unwire(
    host: &Netlink,
    pod: Option<&Netlink>,
    host_ifname: &str,
    pod_ifname: &str,
) -> Result<(), CniError> {
    if let Some(pod) = pod {
        // CNI_IFNAME in this sandbox is ours to manage (spec: the runtime
        // gives each plugin its interface name).
        pod.delete_link_by_name(pod_ifname).await?;
    }
    host.delete_link_by_name(host_ifname).await?;
    Ok(())
}

/// [`unwire`] on a thread of its own with its own netlink sockets and
/// runtime. The kernel deletes a veth inside the `sendmsg` of the request,
/// which takes milliseconds (RCU grace periods): on the caller's
/// single-threaded runtime that would stall every other task (the
/// datastore request running alongside) for as long.
pub async fn unwire_detached(
    ns: Option<NetNs>,
    host_ifname: String,
    pod_ifname: String,
) -> Result<(), CniError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("unwire".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CniError::io(format!("cannot start the async runtime: {e}")))
                .and_then(|rt| {
                    rt.block_on(async {
                        let host = Netlink::current()?;
                        let pod = match &ns {
                            Some(ns) => Some(Netlink::in_netns(ns)?),
                            None => None,
                        };
                        unwire(&host, pod.as_ref(), &host_ifname, &pod_ifname).await
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(|e| CniError::io(format!("cannot start a thread: {e}")))?;
    rx.await.unwrap_or_else(|_| {
        Err(CniError::internal(
            "the thread removing the veth pair panicked",
        ))
    })
}

/// Verifies the wiring against what ADD returned (CHECK). The first
/// mismatch is the error, naming the interface, address or route.
pub async fn check(
    host: &Netlink,
    pod: &Netlink,
    ns: &NetNs,
    w: &Wiring,
    expected_pod_mac: &str,
) -> Result<(), CniError> {
    let fail = |m: String| CniError::internal(m);
    let pod_link = pod.link_by_name(&w.pod_ifname).await?.ok_or_else(|| {
        fail(format!(
            "CHECK: interface {} is missing in {}",
            w.pod_ifname,
            ns.path().display()
        ))
    })?;
    if !pod_link.header.flags.contains(LinkFlags::Up) {
        return Err(fail(format!(
            "CHECK: interface {} in the pod is down",
            w.pod_ifname
        )));
    }
    let mac = link_mac(&pod_link).unwrap_or_default();
    if !expected_pod_mac.is_empty() && !mac.eq_ignore_ascii_case(expected_pod_mac) {
        return Err(fail(format!(
            "CHECK: interface {} has MAC {mac}, prevResult says {expected_pod_mac}",
            w.pod_ifname
        )));
    }
    let have = pod.addresses(pod_link.header.index).await?;
    for ip in &w.addresses {
        if !have.contains(ip) {
            return Err(fail(format!(
                "CHECK: address {ip} from prevResult is missing on {} in the pod",
                w.pod_ifname
            )));
        }
    }
    let pod_index = pod_link.header.index;
    if w.addresses.iter().any(IpAddr::is_ipv4) {
        let routes = pod.routes(false).await?;
        if !has_route(
            &routes,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            0,
            Some(IpAddr::V4(GATEWAY_V4)),
            pod_index,
        ) {
            return Err(fail(format!(
                "CHECK: route default via {GATEWAY_V4} dev {} is missing in the pod",
                w.pod_ifname
            )));
        }
        if !has_route(&routes, IpAddr::V4(GATEWAY_V4), 32, None, pod_index) {
            return Err(fail(format!(
                "CHECK: route {GATEWAY_V4}/32 dev {} is missing in the pod",
                w.pod_ifname
            )));
        }
    }
    if w.addresses.iter().any(IpAddr::is_ipv6) {
        let routes = pod.routes(true).await?;
        if !has_route(
            &routes,
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            0,
            Some(IpAddr::V6(GATEWAY_V6)),
            pod_index,
        ) {
            return Err(fail(format!(
                "CHECK: route default via {GATEWAY_V6} dev {} is missing in the pod",
                w.pod_ifname
            )));
        }
    }
    let host_link = host.link_by_name(&w.host_ifname).await?.ok_or_else(|| {
        fail(format!(
            "CHECK: host veth {} is missing on the node",
            w.host_ifname
        ))
    })?;
    if !host_link.header.flags.contains(LinkFlags::Up) {
        return Err(fail(format!("CHECK: host veth {} is down", w.host_ifname)));
    }
    for ip in &w.addresses {
        let routes = host.routes(ip.is_ipv6()).await?;
        let len = if ip.is_ipv4() { 32 } else { 128 };
        if !has_route(&routes, *ip, len, None, host_link.header.index) {
            return Err(fail(format!(
                "CHECK: host route {ip}/{len} dev {} is missing on the node",
                w.host_ifname
            )));
        }
    }
    Ok(())
}

fn has_route(routes: &[RouteMessage], dst: IpAddr, len: u8, gw: Option<IpAddr>, oif: u32) -> bool {
    routes.iter().any(|r| {
        if r.header.destination_prefix_length != len {
            return false;
        }
        let mut r_dst = None;
        let mut r_gw = None;
        let mut r_oif = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(a) => r_dst = route_ip(a),
                RouteAttribute::Gateway(a) => r_gw = route_ip(a),
                RouteAttribute::Oif(i) => r_oif = Some(*i),
                _ => {}
            }
        }
        let dst_ok = if len == 0 {
            r_dst.is_none() || r_dst == Some(dst)
        } else {
            r_dst == Some(dst)
        };
        dst_ok && r_oif == Some(oif) && (gw.is_none() || r_gw == gw)
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The pod MTU when none is configured: the MTU of the interface of the
/// node's IPv4 default route minus [`ENCAP_OVERHEAD`], else
/// [`DEFAULT_MTU`].
pub async fn detect_mtu(host: &Netlink) -> Result<u32, CniError> {
    let routes = host.routes(false).await?;
    let oif = routes.iter().find_map(|r| {
        if r.header.destination_prefix_length != 0 {
            return None;
        }
        r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    });
    let Some(oif) = oif else {
        return Ok(DEFAULT_MTU);
    };
    let mut links = host.handle.link().get().match_index(oif).execute();
    let link = links
        .try_next()
        .await
        .map_err(|e| nl_err(format!("looking up uplink interface {oif}"), e))?;
    let mtu = link
        .and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        })
        .unwrap_or(DEFAULT_MTU + ENCAP_OVERHEAD);
    Ok(mtu.saturating_sub(ENCAP_OVERHEAD).max(68))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC of a link.
pub fn link_mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) => Some(format_mac(b)),
        _ => None,
    })
}

/// The single-address network of an IP (`/32` or `/128`).
pub fn host_network(ip: IpAddr) -> IpNetwork {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(ip, len).unwrap_or_else(|_| IpNetwork::from(ip))
}

fn is_errno(e: &rtnetlink::Error, codes: &[i32]) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let raw = m.raw_code().abs();
            codes.contains(&raw) || (codes.contains(&ENODEV) && raw == ESRCH)
        }
        _ => false,
    }
}

fn nl_err(what: String, e: rtnetlink::Error) -> CniError {
    CniError::internal(format!("netlink: {what} failed")).with_details(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4291 §2.5.1 / Appendix A: modified EUI-64 of ee:ee:ee:ee:ee:ee
    /// flips the U/L bit of 0xee to 0xec and inserts ff:fe.
    #[test]
    fn gateway_v6_is_eui64_of_host_mac() {
        let m = HOST_MAC;
        let iid = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut octets = [0u8; 16];
        octets[0] = 0xfe;
        octets[1] = 0x80;
        octets[8..].copy_from_slice(&iid);
        assert_eq!(Ipv6Addr::from(octets), GATEWAY_V6);
    }

    #[test]
    fn mac_and_host_networks() {
        assert_eq!(format_mac(&HOST_MAC), "ee:ee:ee:ee:ee:ee");
        assert_eq!(
            host_network("10.20.0.1".parse().unwrap()).to_string(),
            "10.20.0.1/32"
        );
        assert_eq!(
            host_network("fd20::1".parse().unwrap()).to_string(),
            "fd20::1/128"
        );
    }
}
