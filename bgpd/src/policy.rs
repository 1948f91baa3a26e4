//! Per-peer route filters (Calico's `BGPFilter`, referenced in order by
//! `BGPPeer.spec.filters`): pure data and pure functions, no I/O.
//!
//! A peer's [`Policy`] is its filters in order. For a route in one
//! direction (import from the peer, export to it) and one family, the
//! rules of the first filter are tried in order, then those of the next;
//! the first rule that matches decides ([`Action::Accept`] or
//! [`Action::Reject`]). A route no rule matches gets the default: on import
//! it is accepted, on export the session's usual rules decide (RFC 4271
//! §9.1.3, RFC 4456 reflection, split horizon). This is what calico-node's
//! BIRD config does: each filter is a BIRD function whose `accept` or
//! `reject` ends the whole filter, called in order before `accept` (import)
//! or Calico's usual export function.
//!
//! An accepting export rule never exports what the session's rules hold
//! back (a path back to the peer it came from, an iBGP path to an iBGP
//! peer without reflection): BIRD applies those before any filter too.
//!
//! Import filters act on the Adj-RIB-In, which keeps every path the peer
//! sent, accepted or not ("soft reconfiguration inbound"): a changed import
//! policy is applied to the paths already held, so no ROUTE-REFRESH
//! (RFC 2918) needs to be asked of the peer, and the session stays up.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Accept,
    Reject,
}

/// How a route's prefix is compared with a rule's CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOperator {
    /// The prefix is the CIDR.
    Equal,
    /// The prefix is not the CIDR.
    NotEqual,
    /// The prefix is inside the CIDR (or is it), its length in range.
    In,
    /// Not `In`.
    NotIn,
}

/// A prefix match: the CIDR and, for `In` / `NotIn`, the admitted lengths
/// (already clamped to the CIDR's length and the family's maximum, as
/// Calico renders `[ cidr{min,max} ]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixMatch {
    pub operator: MatchOperator,
    pub cidr: IpNetwork,
    pub min_length: u8,
    pub max_length: u8,
}

impl PrefixMatch {
    /// A match of `cidr` with `operator`; `min` / `max` narrow the lengths
    /// an `In` / `NotIn` admits (each bounded by the CIDR's own length and
    /// 32 / 128).
    pub fn new(operator: MatchOperator, cidr: IpNetwork, min: Option<u8>, max: Option<u8>) -> Self {
        let cidr = crate::rib::normalize(cidr);
        let family_max = if cidr.is_ipv4() { 32 } else { 128 };
        PrefixMatch {
            operator,
            cidr,
            min_length: min.map_or(cidr.prefix(), |m| m.max(cidr.prefix())),
            max_length: max.map_or(family_max, |m| m.min(family_max)),
        }
    }

    /// Does `prefix` match?
    pub fn matches(&self, prefix: &IpNetwork) -> bool {
        let inside = || {
            prefix.is_ipv4() == self.cidr.is_ipv4()
                && self.cidr.prefix() <= prefix.prefix()
                && self.cidr.contains(prefix.network())
                && (self.min_length..=self.max_length).contains(&prefix.prefix())
        };
        match self.operator {
            MatchOperator::Equal => crate::rib::normalize(*prefix) == self.cidr,
            MatchOperator::NotEqual => crate::rib::normalize(*prefix) != self.cidr,
            MatchOperator::In => inside(),
            MatchOperator::NotIn => !inside(),
        }
    }
}

/// One rule: every match it sets must hold; with none it matches all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixMatch>,
    /// Calico's `source: RemotePeers`: only routes learnt from a BGP peer
    /// (export; every imported route is one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote_peers_only: bool,
}

impl Rule {
    /// A rule matching every route.
    pub fn any(action: Action) -> Rule {
        Rule {
            action,
            prefix: None,
            remote_peers_only: false,
        }
    }

    /// A rule matching `prefix`.
    pub fn prefix(action: Action, prefix: PrefixMatch) -> Rule {
        Rule {
            prefix: Some(prefix),
            ..Rule::any(action)
        }
    }

    fn matches(&self, prefix: &IpNetwork, learnt: bool) -> bool {
        self.prefix.as_ref().is_none_or(|m| m.matches(prefix))
            && (learnt || !self.remote_peers_only)
    }
}

/// One filter (a `BGPFilter`): four ordered rule lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// The `BGPFilter` it came from (for logs and status).
    pub name: String,
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<Rule>,
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<Rule>,
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<Rule>,
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<Rule>,
}

/// Which way a route goes through a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Import,
    Export,
}

impl Filter {
    fn rules(&self, direction: Direction, prefix: &IpNetwork) -> &[Rule] {
        match (direction, prefix.is_ipv4()) {
            (Direction::Import, true) => &self.import_v4,
            (Direction::Import, false) => &self.import_v6,
            (Direction::Export, true) => &self.export_v4,
            (Direction::Export, false) => &self.export_v6,
        }
    }
}

/// A peer's filters, in order. Empty: everything passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    filters: Vec<Filter>,
}

impl Policy {
    /// The policy of these filters, in order.
    pub fn new(filters: Vec<Filter>) -> Policy {
        Policy { filters }
    }

    /// No rule in any filter: nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.filters.iter().all(|f| {
            f.import_v4.is_empty()
                && f.import_v6.is_empty()
                && f.export_v4.is_empty()
                && f.export_v6.is_empty()
        })
    }

    /// The first rule matching `prefix` (learnt from a peer or originated
    /// here), across the filters in order: its action, or `None` (the
    /// default behaviour applies).
    pub fn decide(&self, direction: Direction, prefix: &IpNetwork, learnt: bool) -> Option<Action> {
        self.filters
            .iter()
            .flat_map(|f| f.rules(direction, prefix))
            .find(|r| r.matches(prefix, learnt))
            .map(|r| r.action)
    }

    /// Is a path for `prefix` from the peer imported? No match: yes.
    pub fn imports(&self, prefix: &IpNetwork) -> bool {
        self.decide(Direction::Import, prefix, true) != Some(Action::Reject)
    }

    /// May `prefix` (learnt from `from`, or originated here) be exported
    /// to the peer? No match: yes (the session's rules still apply).
    pub fn exports(&self, prefix: &IpNetwork, from: Option<IpAddr>) -> bool {
        self.decide(Direction::Export, prefix, from.is_some()) != Some(Action::Reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use MatchOperator::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn m(op: MatchOperator, cidr: &str) -> PrefixMatch {
        PrefixMatch::new(op, net(cidr), None, None)
    }

    /// The four operators, as calico-node renders them into BIRD: `net =`,
    /// `net !=`, `net ~` (inside or equal), `net !~`.
    #[test]
    fn operators_match_as_calicos_bird_functions() {
        let p = net("10.1.2.0/24");
        assert!(m(Equal, "10.1.2.0/24").matches(&p));
        assert!(!m(Equal, "10.1.0.0/16").matches(&p));
        assert!(m(NotEqual, "10.1.0.0/16").matches(&p));
        assert!(m(In, "10.1.0.0/16").matches(&p));
        assert!(m(In, "10.1.2.0/24").matches(&p));
        assert!(
            !m(In, "10.1.2.0/25").matches(&p),
            "a shorter prefix is not inside"
        );
        assert!(!m(In, "10.2.0.0/16").matches(&p));
        assert!(m(NotIn, "10.2.0.0/16").matches(&p));
        assert!(
            !m(In, "fd00::/8").matches(&p),
            "another family never matches In"
        );
        assert!(m(NotIn, "fd00::/8").matches(&p));
        // Host bits in the route's prefix do not matter.
        assert!(m(Equal, "10.1.2.0/24").matches(&net("10.1.2.7/24")));
    }

    /// `prefixLength`: `[ cidr{max(len, min), min(32, max)} ]`.
    #[test]
    fn prefix_length_narrows_in_and_not_in() {
        let r = PrefixMatch::new(In, net("55.0.0.0/16"), Some(30), None);
        assert_eq!((r.min_length, r.max_length), (30, 32));
        assert!(r.matches(&net("55.0.1.4/30")));
        assert!(!r.matches(&net("55.0.1.0/24")));
        let r = PrefixMatch::new(NotIn, net("88.7.0.0/16"), None, Some(24));
        assert_eq!((r.min_length, r.max_length), (16, 24));
        assert!(!r.matches(&net("88.7.1.0/24")));
        assert!(r.matches(&net("88.7.1.0/26")), "too long: not In, so NotIn");
        let r = PrefixMatch::new(In, net("10.0.0.0/16"), Some(8), Some(40));
        assert_eq!((r.min_length, r.max_length), (16, 32), "clamped");
        let r = PrefixMatch::new(In, net("fd00::/8"), None, None);
        assert_eq!(r.max_length, 128);
    }

    /// First match decides, across filters in order; no match: default.
    #[test]
    fn first_matching_rule_of_the_filters_in_order_decides() {
        let f1 = Filter {
            name: "one".into(),
            import_v4: vec![Rule::prefix(Accept, m(In, "10.1.1.0/24"))],
            ..Default::default()
        };
        let f2 = Filter {
            name: "two".into(),
            import_v4: vec![Rule::prefix(Reject, m(In, "10.1.0.0/16"))],
            import_v6: vec![Rule::any(Reject)],
            ..Default::default()
        };
        let p = Policy::new(vec![f1.clone(), f2.clone()]);
        assert!(
            p.imports(&net("10.1.1.0/26")),
            "f1 accepts before f2 rejects"
        );
        assert!(!p.imports(&net("10.1.2.0/26")), "f2 rejects");
        assert!(p.imports(&net("10.9.0.0/26")), "no match: accepted");
        assert!(!p.imports(&net("fd00::/64")), "v6 list of f2");
        assert!(p.exports(&net("10.1.2.0/26"), None), "no export rules");
        let swapped = Policy::new(vec![f2, f1]);
        assert!(!swapped.imports(&net("10.1.1.0/26")), "order matters");
        assert!(Policy::default().is_empty());
    }

    /// `source: RemotePeers` matches learnt routes only.
    #[test]
    fn remote_peers_matches_learnt_routes_only() {
        let f = Filter {
            name: "f".into(),
            export_v4: vec![Rule {
                remote_peers_only: true,
                ..Rule::any(Reject)
            }],
            ..Default::default()
        };
        let p = Policy::new(vec![f]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!p.exports(&net("10.200.0.0/26"), Some(peer)));
        assert!(p.exports(&net("10.19.0.0/26"), None), "our own block");
    }
}
