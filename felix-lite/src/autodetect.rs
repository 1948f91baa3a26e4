//! Uplink autodetection with calico-node's `IP_AUTODETECTION_METHOD` syntax:
//!
//! * `first-found` — the first interface (by index) with a valid address, skipping Calico's
//!   default list (`docker*`, `cbr*`, `dummy*`, `podman*`, `virbr*`, `lxcbr*`, `veth*`, `lo`,
//!   `br-*`, `cali*`, `tunl*`, `flannel*`, `kube-ipvs*`, `cni*`, `vxlan.manx*`,
//!   `vxlan-v6.manx*`, `nodelocaldns*`);
//! * `interface=<regex>,…` — the first interface whose name matches one of the regexes;
//! * `skip-interface=<regex>,…` — the first interface matching none of them;
//! * `can-reach=<ip or host>` — the interface holding the source address the kernel picks
//!   for that destination (a UDP `connect`, no packet is sent);
//! * `cidr=<cidr>,…` — the first address inside one of the CIDRs.
//!
//! User regexes match anywhere in the name, as Go's `MatchString` does in Calico (anchor them
//! with `^…$` for exact names). Valid addresses are global unicast: not loopback,
//! link-local, multicast or unspecified. Interfaces that are administratively down are
//! skipped.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::str::FromStr;

use ipnetwork::IpNetwork;
use regex::Regex;

use crate::netlink::{KernelAddr, KernelLink, Netlink, NlError};
use crate::types::Uplink;

/// Calico's default interface exclusions for `first-found`, anchored at the start.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^podman.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^br-.*",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^vxlan\\.manx.*",
    "^vxlan-v6\\.manx.*",
    "^nodelocaldns.*",
];

/// Address family to detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// A parsed autodetection method.
#[derive(Debug, Clone)]
pub enum AutodetectMethod {
    /// `first-found`.
    FirstFound,
    /// `interface=<regex>,…`.
    Interface(Vec<Regex>),
    /// `skip-interface=<regex>,…`.
    SkipInterface(Vec<Regex>),
    /// `can-reach=<ip or host>`.
    CanReach(String),
    /// `cidr=<cidr>,…`.
    Cidr(Vec<IpNetwork>),
}

impl fmt::Display for AutodetectMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join_re = |v: &[Regex]| {
            v.iter()
                .map(|r| r.as_str().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            AutodetectMethod::FirstFound => write!(f, "first-found"),
            AutodetectMethod::Interface(v) => write!(f, "interface={}", join_re(v)),
            AutodetectMethod::SkipInterface(v) => write!(f, "skip-interface={}", join_re(v)),
            AutodetectMethod::CanReach(h) => write!(f, "can-reach={h}"),
            AutodetectMethod::Cidr(v) => write!(
                f,
                "cidr={}",
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Autodetection failures.
#[derive(Debug, thiserror::Error)]
pub enum AutodetectError {
    /// The method string does not parse.
    #[error(
        "invalid IP autodetection method {0:?}: expected first-found, interface=REGEX[,REGEX…], \
         skip-interface=REGEX[,REGEX…], can-reach=IP|HOST or cidr=CIDR[,CIDR…]"
    )]
    UnknownMethod(String),
    /// A regex or CIDR in the method does not parse.
    #[error("invalid IP autodetection method {method:?}: {item:?} {problem}")]
    BadArgument {
        /// The whole method string.
        method: String,
        /// The bad item.
        item: String,
        /// What is wrong.
        problem: String,
    },
    /// No interface qualified.
    #[error("IP autodetection method {method} found no {family} address; looked at: {looked_at}")]
    NotFound {
        /// The method.
        method: String,
        /// The family.
        family: IpFamily,
        /// Every interface considered, with what was wrong with it.
        looked_at: String,
    },
    /// `can-reach` could not resolve or connect.
    #[error("IP autodetection method {method}: {problem}")]
    CannotReach {
        /// The method.
        method: String,
        /// What failed.
        problem: String,
    },
    /// The kernel dump failed.
    #[error("IP autodetection: {0}")]
    Netlink(#[from] NlError),
}

fn parse_list<T>(
    method: &str,
    args: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, AutodetectError> {
    let items: Vec<&str> = args
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(AutodetectError::BadArgument {
            method: method.into(),
            item: args.into(),
            problem: "is empty: give at least one value".into(),
        });
    }
    items
        .into_iter()
        .map(|i| {
            parse(i).map_err(|problem| AutodetectError::BadArgument {
                method: method.into(),
                item: i.into(),
                problem,
            })
        })
        .collect()
}

impl FromStr for AutodetectMethod {
    type Err = AutodetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let re = |x: &str| Regex::new(x).map_err(|e| format!("is not a valid regex: {e}"));
        if s == "first-found" {
            return Ok(AutodetectMethod::FirstFound);
        }
        let Some((key, args)) = s.split_once('=') else {
            return Err(AutodetectError::UnknownMethod(s.into()));
        };
        match key {
            "interface" => Ok(AutodetectMethod::Interface(parse_list(s, args, re)?)),
            "skip-interface" => Ok(AutodetectMethod::SkipInterface(parse_list(s, args, re)?)),
            "cidr" => Ok(AutodetectMethod::Cidr(parse_list(s, args, |x| {
                x.parse::<IpNetwork>()
                    .map_err(|e| format!("is not a CIDR: {e}"))
            })?)),
            "can-reach" => {
                let target = args.trim();
                if target.is_empty() {
                    return Err(AutodetectError::BadArgument {
                        method: s.into(),
                        item: args.into(),
                        problem: "is empty: give an IP address or host name".into(),
                    });
                }
                Ok(AutodetectMethod::CanReach(target.into()))
            }
            _ => Err(AutodetectError::UnknownMethod(s.into())),
        }
    }
}

/// The detected interface and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Interface name.
    pub iface: String,
    /// Address with prefix length.
    pub addr: IpNetwork,
    /// Interface MTU.
    pub mtu: u32,
}

fn valid_addr(a: &KernelAddr, family: IpFamily) -> bool {
    let ip = a.addr.ip();
    let fam_ok = matches!(
        (family, ip),
        (IpFamily::V4, IpAddr::V4(_)) | (IpFamily::V6, IpAddr::V6(_))
    );
    let unicast = match ip {
        IpAddr::V4(v) => {
            !v.is_loopback() && !v.is_link_local() && !v.is_multicast() && !v.is_unspecified()
        }
        IpAddr::V6(v) => {
            !v.is_loopback()
                && !v.is_multicast()
                && !v.is_unspecified()
                && (v.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    fam_ok && unicast && a.global
}

/// Pure selection over dumped links and addresses. `reach_source` is the local address the
/// kernel chose for `can-reach` (ignored by other methods).
pub fn select(
    links: &[KernelLink],
    addrs: &[KernelAddr],
    method: &AutodetectMethod,
    family: IpFamily,
    reach_source: Option<IpAddr>,
) -> Result<Detected, AutodetectError> {
    let excludes: Vec<Regex> = DEFAULT_EXCLUDES
        .iter()
        .map(|r| Regex::new(r).expect("default exclusion regexes are valid"))
        .collect();
    let mut sorted: Vec<&KernelLink> = links.iter().collect();
    sorted.sort_by_key(|l| l.index);
    let mut looked_at = Vec::new();
    for link in sorted {
        let name_ok = match method {
            AutodetectMethod::FirstFound => !excludes.iter().any(|r| r.is_match(&link.name)),
            AutodetectMethod::Interface(v) => v.iter().any(|r| r.is_match(&link.name)),
            AutodetectMethod::SkipInterface(v) => !v.iter().any(|r| r.is_match(&link.name)),
            AutodetectMethod::CanReach(_) | AutodetectMethod::Cidr(_) => true,
        };
        if !name_ok {
            looked_at.push(format!("{} (name excluded)", link.name));
            continue;
        }
        if !link.up {
            looked_at.push(format!("{} (down)", link.name));
            continue;
        }
        let own: Vec<&KernelAddr> = addrs.iter().filter(|a| a.index == link.index).collect();
        let found = own.iter().find(|a| {
            valid_addr(a, family)
                && match method {
                    AutodetectMethod::Cidr(v) => v.iter().any(|c| c.contains(a.addr.ip())),
                    AutodetectMethod::CanReach(_) => Some(a.addr.ip()) == reach_source,
                    _ => true,
                }
        });
        match found {
            Some(a) => {
                return Ok(Detected {
                    iface: link.name.clone(),
                    addr: a.addr,
                    mtu: link.mtu,
                });
            }
            None => {
                let list: Vec<String> = own.iter().map(|a| a.addr.to_string()).collect();
                looked_at.push(format!(
                    "{} ({})",
                    link.name,
                    if list.is_empty() {
                        "no addresses".to_string()
                    } else {
                        format!("no matching {family} address among {}", list.join(" "))
                    }
                ));
            }
        }
    }
    Err(AutodetectError::NotFound {
        method: method.to_string(),
        family,
        looked_at: if looked_at.is_empty() {
            "no interfaces".into()
        } else {
            looked_at.join(", ")
        },
    })
}

/// The source address the kernel would use towards `target` (IP or host name), found with a
/// UDP `connect` in the calling thread's network namespace. Sends nothing.
pub fn route_source(target: &str, family: IpFamily) -> Result<IpAddr, String> {
    let dest = match target.parse::<IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, 80),
        Err(_) => (target, 80)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {target}: {e}"))?
            .find(|a| {
                matches!(
                    (family, a.ip()),
                    (IpFamily::V4, IpAddr::V4(_)) | (IpFamily::V6, IpAddr::V6(_))
                )
            })
            .ok_or_else(|| format!("{target} has no {family} address"))?,
    };
    if (family == IpFamily::V4) != dest.is_ipv4() {
        return Err(format!("{target} is not an {family} address"));
    }
    let bind = if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("udp socket: {e}"))?;
    sock.connect(dest)
        .map_err(|e| format!("no route to {dest}: {e}"))?;
    sock.local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("reading the local address: {e}"))
}

/// Detect the uplink address of one family in the current network namespace.
pub async fn autodetect<N: Netlink + ?Sized>(
    nl: &N,
    method: &AutodetectMethod,
    family: IpFamily,
) -> Result<Detected, AutodetectError> {
    let reach = match method {
        AutodetectMethod::CanReach(target) => Some(route_source(target, family).map_err(
            |problem| AutodetectError::CannotReach {
                method: method.to_string(),
                problem,
            },
        )?),
        _ => None,
    };
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    select(&links, &addrs, method, family, reach)
}

/// Detect the node's [`Uplink`]: IPv4 with `v4`, IPv6 with `v6` (each optional). The uplink
/// interface and MTU are the IPv4 one's when both are given.
pub async fn detect_uplink<N: Netlink + ?Sized>(
    nl: &N,
    v4: Option<&AutodetectMethod>,
    v6: Option<&AutodetectMethod>,
) -> Result<Uplink, AutodetectError> {
    let d4 = match v4 {
        Some(m) => Some(autodetect(nl, m, IpFamily::V4).await?),
        None => None,
    };
    let d6 = match v6 {
        Some(m) => Some(autodetect(nl, m, IpFamily::V6).await?),
        None => None,
    };
    let main = d4
        .as_ref()
        .or(d6.as_ref())
        .ok_or_else(|| AutodetectError::NotFound {
            method: "none".into(),
            family: IpFamily::V4,
            looked_at: "no autodetection method given for IPv4 or IPv6".into(),
        })?;
    Ok(Uplink {
        iface: main.iface.clone(),
        v4: d4.as_ref().map(|d| d.addr),
        v6: d6.as_ref().map(|d| d.addr),
        mtu: main.mtu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::MemNetlink;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    /// lo, docker0, eth0 (198.19.1.0/24), eth1 (198.19.2.0/24 + v6), cali veth.
    fn host() -> MemNetlink {
        let nl = MemNetlink::new();
        nl.add_host_link("docker0", 1500, &[net("172.17.0.1/16")]);
        nl.add_host_link("eth0", 1500, &[net("198.19.1.10/24"), net("fe80::1/64")]);
        nl.add_host_link(
            "eth1",
            9000,
            &[net("198.19.2.10/24"), net("fd42:19:2::10/64")],
        );
        nl.add_host_link("cali0123456789a", 1500, &[net("198.19.3.1/24")]);
        nl
    }

    async fn detect(nl: &MemNetlink, m: &str, f: IpFamily) -> Result<Detected, AutodetectError> {
        autodetect(nl, &m.parse().unwrap(), f).await
    }

    #[tokio::test]
    async fn first_found_skips_the_default_exclusions() {
        let nl = host();
        let d = detect(&nl, "first-found", IpFamily::V4).await.unwrap();
        assert_eq!((d.iface.as_str(), d.addr), ("eth0", net("198.19.1.10/24")));
        // eth0 has only a link-local IPv6 address.
        let d = detect(&nl, "first-found", IpFamily::V6).await.unwrap();
        assert_eq!((d.iface.as_str(), d.mtu), ("eth1", 9000));
    }

    #[tokio::test]
    async fn interface_skip_interface_and_cidr_pick_the_named_nic() {
        let nl = host();
        let d = detect(&nl, "interface=eth1", IpFamily::V4).await.unwrap();
        assert_eq!(d.addr, net("198.19.2.10/24"));
        let d = detect(&nl, "interface=nope,^eth[1-9]$", IpFamily::V4)
            .await
            .unwrap();
        assert_eq!(d.iface, "eth1");
        let d = detect(&nl, "skip-interface=docker.*,eth0", IpFamily::V4)
            .await
            .unwrap();
        assert_eq!(d.iface, "eth1");
        let d = detect(&nl, "cidr=10.0.0.0/8,198.19.2.0/24", IpFamily::V4)
            .await
            .unwrap();
        assert_eq!(d.iface, "eth1");
    }

    #[tokio::test]
    async fn down_interfaces_are_skipped_and_failures_name_what_was_seen() {
        let nl = host();
        nl.set_host_link_up("eth0", false);
        let d = detect(&nl, "first-found", IpFamily::V4).await.unwrap();
        assert_eq!(d.iface, "eth1");
        let err = detect(&nl, "interface=eth0", IpFamily::V4)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("IP autodetection method interface=eth0 found no IPv4 address"));
        assert!(msg.contains("eth0 (down)"), "{msg}");
        assert!(msg.contains("eth1 (name excluded)"), "{msg}");
    }

    #[test]
    fn method_strings_parse_or_say_what_is_wrong() {
        assert!(matches!(
            "first-found".parse(),
            Ok(AutodetectMethod::FirstFound)
        ));
        assert!(matches!(
            "can-reach=198.19.2.1".parse(),
            Ok(AutodetectMethod::CanReach(h)) if h == "198.19.2.1"
        ));
        let e = "bogus".parse::<AutodetectMethod>().unwrap_err().to_string();
        assert!(e.contains("\"bogus\"") && e.contains("first-found"), "{e}");
        let e = "interface=eth["
            .parse::<AutodetectMethod>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"eth[\" is not a valid regex"), "{e}");
        let e = "cidr=10.0.0.0/33"
            .parse::<AutodetectMethod>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"10.0.0.0/33\" is not a CIDR"), "{e}");
        let e = "cidr=".parse::<AutodetectMethod>().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = "can-reach="
            .parse::<AutodetectMethod>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn can_reach_selects_the_interface_holding_the_source_address() {
        let nl = host();
        let links = nl.link_list();
        let addrs = nl.address_list();
        let m: AutodetectMethod = "can-reach=198.19.2.1".parse().unwrap();
        let d = select(
            &links,
            &addrs,
            &m,
            IpFamily::V4,
            Some("198.19.2.10".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(d.iface, "eth1");
    }

    #[tokio::test]
    async fn detect_uplink_combines_families() {
        let nl = host();
        let v4: AutodetectMethod = "interface=eth1".parse().unwrap();
        let v6: AutodetectMethod = "first-found".parse().unwrap();
        let up = detect_uplink(&nl, Some(&v4), Some(&v6)).await.unwrap();
        assert_eq!(up.iface, "eth1");
        assert_eq!(up.v4, Some(net("198.19.2.10/24")));
        assert_eq!(up.v6, Some(net("fd42:19:2::10/64")));
        assert_eq!(up.mtu, 9000);
    }
}
