//! `BGPPeer`: a BGP session to configure, either from every node (global),
//! from one node (`node`), or from the nodes a `nodeSelector` picks; the far
//! end is a fixed `peerIP` or the nodes a `peerSelector` picks (route
//! reflector topologies).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::bfd::BFDSpec;
use crate::model::meta::{AsNumber, ObjectMeta, SecretSource, parse_go_duration};
use crate::model::validate::{Checker, ValidationErrors};
use crate::selector::Selector;

/// A BGP peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPPeer {
    pub metadata: ObjectMeta,
    pub spec: BGPPeerSpec,
}

/// Source address of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceAddress {
    /// Bind to the node's IP (default).
    UseNodeIP,
    /// Let the kernel choose.
    None,
}

/// Next-hop handling towards this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextHopMode {
    /// Standard BGP rules (default).
    Auto,
    /// Always set next hop to self.
    #[serde(rename = "Self")]
    SelfHop,
    /// Keep the original next hop.
    Keep,
}

/// `BGPPeer.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// Only this node peers (empty: see `nodeSelector`; neither: all nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// `10.0.0.1`, `10.0.0.1:1179`, `fd00::1` or `[fd00::1]:1179`.
    #[serde(default, rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Peer with the nodes this selects (instead of `peerIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<SourceAddress>,
    /// Go duration: graceful-restart time (default 120s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    /// Go duration: keepalive time (default 30s, hold 3x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<NextHopMode>,
    /// Deprecated form of `nextHopMode: Keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,
    /// Calico spells it `numAllowedLocalASNumbers`.
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// The gateway `peerIP` is reached through: a host route to the peer
    /// via it (Calico's BIRD static `route <peerIP>/32 via <reachableBy>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    /// `BGPFilter` names, applied in order on import and export; a name
    /// with no BGPFilter is skipped (as Calico does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<String>>,
    /// BFD on the sessions this peering makes (a Manx extension; IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BFDSpec>,
}

/// Parse a `peerIP`: `ip`, `ipv4:port` or `[ipv6]:port`.
pub fn parse_peer_ip(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match t.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok((sa.ip(), Some(sa.port()))),
        Ok(_) => Err(format!("{text:?}: port 0 is not a port; use 1..=65535")),
        Err(_) => Err(format!(
            "{text:?} is not an IP address: write 10.0.0.1, 10.0.0.1:1179, fd00::1 or [fd00::1]:1179"
        )),
    }
}

impl BGPPeerSpec {
    /// The peer address and optional port, if `peerIP` is set and valid.
    pub fn peer_addr(&self) -> Option<(IpAddr, Option<u16>)> {
        self.peer_ip.as_deref().and_then(|p| parse_peer_ip(p).ok())
    }
    pub fn source_address(&self) -> SourceAddress {
        self.source_address.unwrap_or(SourceAddress::UseNodeIP)
    }
    /// Effective next-hop mode (`keepOriginalNextHop: true` means `Keep`).
    pub fn next_hop_mode(&self) -> NextHopMode {
        match (self.next_hop_mode, self.keep_original_next_hop) {
            (Some(m), _) => m,
            (None, Some(true)) => NextHopMode::Keep,
            _ => NextHopMode::Auto,
        }
    }
    pub fn max_restart_time(&self) -> Duration {
        self.max_restart_time
            .as_deref()
            .and_then(|s| parse_go_duration(s).ok())
            .unwrap_or(Duration::from_secs(120))
    }
    pub fn keepalive_time(&self) -> Duration {
        self.keepalive_time
            .as_deref()
            .and_then(|s| parse_go_duration(s).ok())
            .unwrap_or(Duration::from_secs(30))
    }
    /// Does this peering apply to (is it configured on) the given node?
    /// `node` must equal its name; else `nodeSelector` must match its
    /// labels; with neither, every node. An invalid selector (rejected by
    /// validation) matches nothing.
    pub fn applies_to_node(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        if let Some(n) = self.node.as_deref().filter(|n| !n.is_empty()) {
            return n == node_name;
        }
        match self
            .node_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(sel) => Selector::parse(sel).is_ok_and(|s| s.matches(labels)),
            None => true,
        }
    }

    /// The parsed `peerSelector`, if set (and valid).
    pub fn peer_selector(&self) -> Option<Selector> {
        self.peer_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| Selector::parse(s).ok())
    }

    /// True when no `node` and no `nodeSelector`: every node peers.
    pub fn is_global(&self) -> bool {
        self.node.as_deref().unwrap_or("").is_empty()
            && self
                .node_selector
                .as_deref()
                .unwrap_or("")
                .trim()
                .is_empty()
    }
}

impl BGPPeer {
    pub fn new(name: impl Into<String>, spec: BGPPeerSpec) -> Self {
        BGPPeer {
            metadata: ObjectMeta::named(name),
            spec,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("bgppeer", &self.metadata.name);
        c.name(&self.metadata.name);
        let s = &self.spec;
        let has = |o: &Option<String>| o.as_deref().is_some_and(|v| !v.trim().is_empty());
        if has(&s.node) && has(&s.node_selector) {
            c.error(
                "spec",
                "sets both node and nodeSelector: use node for one node or nodeSelector for a set",
            );
        }
        if let Some(sel) = s.node_selector.as_deref().filter(|v| !v.trim().is_empty()) {
            c.selector("spec.nodeSelector", sel);
        }
        if has(&s.peer_selector) {
            if let Some(sel) = &s.peer_selector {
                c.selector("spec.peerSelector", sel);
            }
            if has(&s.peer_ip) || s.as_number.is_some() {
                c.error(
                    "spec",
                    "sets peerSelector together with peerIP/asNumber: the selected nodes give both; remove peerIP and asNumber",
                );
            }
        } else {
            match s.peer_ip.as_deref().filter(|v| !v.trim().is_empty()) {
                None => c.error(
                    "spec.peerIP",
                    "is required (or set peerSelector to peer with selected nodes)",
                ),
                Some(p) => {
                    if let Err(why) = parse_peer_ip(p) {
                        c.error("spec.peerIP", why);
                    }
                }
            }
            match s.as_number {
                None => c.error(
                    "spec.asNumber",
                    "is required with peerIP: give the peer's AS number",
                ),
                Some(asn) => c.as_number("spec.asNumber", asn),
            }
        }
        for (value, field) in [
            (&s.max_restart_time, "spec.maxRestartTime"),
            (&s.keepalive_time, "spec.keepaliveTime"),
        ] {
            if let Some(d) = value
                && let Err(why) = parse_go_duration(d)
            {
                c.error(field, why);
            }
        }
        if let Some(pw) = &s.password
            && pw.secret_key_ref.is_none()
        {
            c.error("spec.password", "needs secretKeyRef {name, key}");
        }
        if s.next_hop_mode.is_some() && s.keep_original_next_hop == Some(true) {
            c.error(
                "spec.keepOriginalNextHop",
                "conflicts with nextHopMode: drop keepOriginalNextHop and use nextHopMode: Keep",
            );
        }
        if let Some(ttl) = s.ttl_security
            && ttl > 254
        {
            c.error(
                "spec.ttlSecurity",
                format!("{ttl} is out of range 0..=254 hops"),
            );
        }
        if let Some(bfd) = &s.bfd {
            bfd.check(&mut c, "spec.bfd");
            if bfd.timers().is_some() && s.peer_addr().is_some_and(|(ip, _)| ip.is_ipv6()) {
                c.error(
                    "spec.bfd",
                    "is IPv4-only in Manx so far and peerIP is IPv6: remove bfd or set enabled: false",
                );
            }
        }
        if let Some(n) = s.num_allowed_local_as_numbers
            && n > 255
        {
            c.error(
                "spec.numAllowedLocalASNumbers",
                format!(
                    "{n} is out of range 0..=255 (times our AS may appear in a received AS_PATH)"
                ),
            );
        }
        if let Some(names) = &s.filters {
            crate::model::bgpfilter::check_filter_names(&mut c, names);
        }
        if let Some(rb) = s.reachable_by.as_deref().filter(|r| !r.trim().is_empty()) {
            match (rb.trim().parse::<IpAddr>(), s.peer_addr()) {
                (Err(_), _) => c.error(
                    "spec.reachableBy",
                    format!("{rb:?} is not an IP address: give the gateway the peer is reached through"),
                ),
                (Ok(_), None) => c.error(
                    "spec.reachableBy",
                    "needs peerIP: the route it makes is to the peer's address; with peerSelector, remove reachableBy",
                ),
                (Ok(gw), Some((peer, _))) if gw.is_ipv4() != peer.is_ipv4() => c.error(
                    "spec.reachableBy",
                    format!("{gw} and peerIP {peer} are of different address families: give a gateway of the peer's family"),
                ),
                (Ok(gw), Some((peer, _))) if gw == peer => c.error(
                    "spec.reachableBy",
                    format!("{gw} is peerIP itself: give the gateway the peer is reached through, or remove reachableBy"),
                ),
                (Ok(gw), _) if gw.is_unspecified() || gw.is_multicast() => c.error(
                    "spec.reachableBy",
                    format!("{gw} cannot be a gateway: give a unicast address"),
                ),
                _ => {}
            }
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ip_forms() {
        assert_eq!(
            parse_peer_ip("10.0.0.1").unwrap(),
            ("10.0.0.1".parse().unwrap(), None)
        );
        assert_eq!(
            parse_peer_ip("10.0.0.1:1179").unwrap(),
            ("10.0.0.1".parse().unwrap(), Some(1179))
        );
        assert_eq!(
            parse_peer_ip("fd00::1").unwrap(),
            ("fd00::1".parse().unwrap(), None)
        );
        assert_eq!(
            parse_peer_ip("[fd00::1]:1179").unwrap(),
            ("fd00::1".parse().unwrap(), Some(1179))
        );
        assert!(parse_peer_ip("10.0.0.1:0").is_err());
        assert!(parse_peer_ip("10.0.0.300").is_err());
        assert!(parse_peer_ip("fd00::1:1179x").is_err());
    }
}
