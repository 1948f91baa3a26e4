//! `BGPFilter`: ordered accept/reject rules on the routes a BGP session
//! imports from and exports to its peer, as Calico's kind of the same name
//! (`projectcalico.org/v3`, the Calico 3.26+ schema). A `BGPPeer` names the
//! filters it uses in `spec.filters`, in order.
//!
//! Semantics (Calico's, from the BIRD functions calico-node renders): the
//! rules of each filter are tried in order and the first that matches
//! decides (`Accept` or `Reject`); a route no rule of any of the peer's
//! filters matches gets the default behaviour (import: accepted; export:
//! whatever the session exports anyway). A rule matches when every match it
//! sets holds:
//!
//! * `cidr` + `matchOperator`: `Equal` / `NotEqual` compare the route's
//!   prefix with `cidr` exactly; `In` / `NotIn` ask whether the prefix lies
//!   inside `cidr` (or is it) with a length in `prefixLength` (`min`
//!   defaults to the CIDR's length, `max` to 32 / 128);
//! * `source: RemotePeers` (export rules only): the route was learnt from a
//!   BGP peer, not originated by this node;
//! * a rule with no match at all matches every route (a catch-all).

use serde::{Deserialize, Serialize};

use crate::model::meta::ObjectMeta;
use crate::model::validate::{Checker, NOT_SUPPORTED, ValidationErrors, dns1123_subdomain};

/// A BGP filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPFilter {
    pub metadata: ObjectMeta,
    pub spec: BGPFilterSpec,
}

/// `BGPFilter.spec`: four ordered rule lists, by direction and family.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterSpec {
    /// Rules on the IPv4 routes exported to a peer.
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BGPFilterRule>,
    /// Rules on the IPv4 routes imported from a peer.
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BGPFilterRule>,
    /// Rules on the IPv6 routes exported to a peer.
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BGPFilterRule>,
    /// Rules on the IPv6 routes imported from a peer.
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BGPFilterRule>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterAction {
    Accept,
    Reject,
}

/// How a route's prefix is compared with a rule's `cidr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MatchOperator {
    /// The prefix is `cidr`.
    Equal,
    /// The prefix is not `cidr`.
    NotEqual,
    /// The prefix is inside `cidr` (or is it), with a length in `prefixLength`.
    In,
    /// Not `In`.
    NotIn,
}

/// Where a route came from (export rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FilterSource {
    /// Learnt from a BGP peer (re-advertised), not originated here.
    RemotePeers,
}

/// `prefixLength`: the lengths an `In` / `NotIn` match admits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// One rule of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterRule {
    pub action: FilterAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FilterSource>,
    /// Calico: the route's outgoing interface matches this pattern. Not
    /// acted on by Manx yet, so refused by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Newer Calico match fields and operations (3.31+): read so a manifest
    /// that has them gets a clear refusal by name, never acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_type: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "asPathPrefix",
        skip_serializing_if = "Option::is_none"
    )]
    pub as_path_prefix: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<serde_json::Value>,
}

impl BGPFilterRule {
    /// A rule with only an action (a catch-all), to build on.
    pub fn new(action: FilterAction) -> BGPFilterRule {
        BGPFilterRule {
            action,
            match_operator: None,
            cidr: None,
            prefix_length: None,
            source: None,
            interface: None,
            peer_type: None,
            communities: None,
            as_path_prefix: None,
            priority: None,
            operations: None,
        }
    }

    /// A rule matching `cidr` with `op`.
    pub fn cidr(action: FilterAction, op: MatchOperator, cidr: &str) -> BGPFilterRule {
        BGPFilterRule {
            match_operator: Some(op),
            cidr: Some(cidr.to_string()),
            ..BGPFilterRule::new(action)
        }
    }
}

impl BGPFilter {
    pub fn new(name: impl Into<String>, spec: BGPFilterSpec) -> Self {
        BGPFilter {
            metadata: ObjectMeta::named(name),
            spec,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("bgpfilter", &self.metadata.name);
        c.name(&self.metadata.name);
        let s = &self.spec;
        for (list, rules, v4, import) in [
            ("exportV4", &s.export_v4, true, false),
            ("importV4", &s.import_v4, true, true),
            ("exportV6", &s.export_v6, false, false),
            ("importV6", &s.import_v6, false, true),
        ] {
            for (i, r) in rules.iter().enumerate() {
                check_rule(&mut c, &format!("spec.{list}[{i}]"), r, v4, import);
            }
        }
        c.finish()
    }
}

fn check_rule(c: &mut Checker, at: &str, r: &BGPFilterRule, v4: bool, import: bool) {
    let BGPFilterRule {
        action: _,
        match_operator,
        cidr,
        prefix_length,
        source,
        interface,
        peer_type,
        communities,
        as_path_prefix,
        priority,
        operations,
    } = r;
    let cidr = cidr.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let family_max: i64 = if v4 { 32 } else { 128 };
    let net = match cidr {
        None => None,
        Some(text) => c.cidr_str(&format!("{at}.cidr"), text).and_then(|n| {
            if n.is_ipv4() == v4 {
                Some(n)
            } else {
                c.error(
                    &format!("{at}.cidr"),
                    format!(
                        "{n} is an IPv{} CIDR in an IPv{} list: move the rule to {}",
                        if v4 { 6 } else { 4 },
                        if v4 { 4 } else { 6 },
                        match (import, v4) {
                            (true, true) => "importV6",
                            (true, false) => "importV4",
                            (false, true) => "exportV6",
                            (false, false) => "exportV4",
                        }
                    ),
                );
                None
            }
        }),
    };
    match (cidr.is_some(), match_operator.is_some()) {
        // Named on the field that is there, so the message has its line.
        (true, false) => c.error(
            &format!("{at}.cidr"),
            "needs matchOperator (Equal, NotEqual, In or NotIn): say how routes compare with it",
        ),
        (false, true) => c.error(
            &format!("{at}.matchOperator"),
            "needs cidr: give the CIDR routes are compared with",
        ),
        _ => {}
    }
    if let Some(pl) = prefix_length {
        let field = format!("{at}.prefixLength");
        if cidr.is_none() {
            c.error(
                &field,
                "needs cidr: it narrows an In or NotIn match of a CIDR",
            );
        }
        if matches!(
            match_operator,
            Some(MatchOperator::Equal | MatchOperator::NotEqual)
        ) {
            c.error(
                &field,
                "only applies with matchOperator In or NotIn: Equal and NotEqual compare the whole prefix, length included",
            );
        }
        for (name, v) in [("min", pl.min), ("max", pl.max)] {
            if let Some(v) = v
                && !(0..=family_max).contains(&v)
            {
                c.error(
                    &format!("{field}.{name}"),
                    format!("{v} is out of range 0..={family_max}"),
                );
            }
        }
        if let (Some(lo), Some(hi)) = (pl.min, pl.max)
            && lo > hi
        {
            c.error(
                &field,
                format!("min {lo} is greater than max {hi}: no prefix length is both"),
            );
        }
        if let (Some(n), Some(hi)) = (net, pl.max)
            && hi < i64::from(n.prefix())
        {
            c.error(
                &format!("{field}.max"),
                format!(
                    "{hi} is shorter than the CIDR's /{}: no prefix inside {n} is that short, so the rule could never match; raise max or shorten the CIDR",
                    n.prefix()
                ),
            );
        }
    }
    if source.is_some() && import {
        c.error(
            &format!("{at}.source"),
            "is not applicable to import rules (every imported route is from a BGP peer): remove it",
        );
    }
    c.unsupported(
        interface.as_deref().is_some_and(|i| !i.trim().is_empty()),
        &format!("{at}.interface"),
    );
    for (set, name) in [
        (peer_type.is_some(), "peerType"),
        (communities.is_some(), "communities"),
        (as_path_prefix.is_some(), "asPathPrefix"),
        (priority.is_some(), "priority"),
        (operations.is_some(), "operations"),
    ] {
        if set {
            c.error(&format!("{at}.{name}"), NOT_SUPPORTED);
        }
    }
}

/// Check the filter names of a `BGPPeer.spec.filters` list.
pub(crate) fn check_filter_names(c: &mut Checker, names: &[String]) {
    for (i, n) in names.iter().enumerate() {
        if let Err(why) = dns1123_subdomain(n) {
            c.error(
                &format!("spec.filters[{i}]"),
                format!("is not a BGPFilter name: {why}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FilterAction::*;
    use MatchOperator::*;

    fn errors(spec: BGPFilterSpec) -> Vec<String> {
        match BGPFilter::new("f", spec).validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn calico_sample_is_valid() {
        let spec = BGPFilterSpec {
            export_v4: vec![
                BGPFilterRule {
                    source: Some(FilterSource::RemotePeers),
                    ..BGPFilterRule::cidr(Accept, In, "77.0.0.0/16")
                },
                BGPFilterRule::new(Reject),
            ],
            import_v4: vec![
                BGPFilterRule {
                    prefix_length: Some(PrefixLength {
                        min: Some(30),
                        max: None,
                    }),
                    ..BGPFilterRule::cidr(Accept, In, "55.0.0.0/16")
                },
                BGPFilterRule::cidr(Reject, NotIn, "44.0.0.0/16"),
            ],
            export_v6: vec![BGPFilterRule {
                source: Some(FilterSource::RemotePeers),
                ..BGPFilterRule::new(Reject)
            }],
            import_v6: vec![
                BGPFilterRule::cidr(Accept, Equal, "5000::0/64"),
                BGPFilterRule::new(Reject),
            ],
        };
        assert_eq!(errors(spec), Vec::<String>::new());
    }

    #[test]
    fn combinations_and_ranges_are_checked_by_field() {
        let e = errors(BGPFilterSpec {
            import_v4: vec![
                // cidr without operator, operator without cidr.
                BGPFilterRule {
                    cidr: Some("10.0.0.0/8".into()),
                    ..BGPFilterRule::new(Accept)
                },
                BGPFilterRule {
                    match_operator: Some(In),
                    ..BGPFilterRule::new(Accept)
                },
                // Wrong family, host bits.
                BGPFilterRule::cidr(Accept, In, "fd00::/8"),
                BGPFilterRule::cidr(Accept, In, "10.0.0.1/8"),
                // source on import.
                BGPFilterRule {
                    source: Some(FilterSource::RemotePeers),
                    ..BGPFilterRule::new(Reject)
                },
                // prefixLength: range, order, with Equal, below the CIDR.
                BGPFilterRule {
                    prefix_length: Some(PrefixLength {
                        min: Some(33),
                        max: Some(8),
                    }),
                    ..BGPFilterRule::cidr(Accept, In, "10.0.0.0/16")
                },
                BGPFilterRule {
                    prefix_length: Some(PrefixLength {
                        min: None,
                        max: Some(24),
                    }),
                    ..BGPFilterRule::cidr(Accept, Equal, "10.0.0.0/16")
                },
                BGPFilterRule {
                    interface: Some("eth0".into()),
                    ..BGPFilterRule::new(Reject)
                },
            ],
            ..Default::default()
        });
        let has = |s: &str| e.iter().any(|m| m.contains(s));
        assert!(has("spec.importV4[0].cidr needs matchOperator"), "{e:#?}");
        assert!(has("spec.importV4[1].matchOperator needs cidr"), "{e:#?}");
        assert!(
            has(
                "spec.importV4[2].cidr fd00::/8 is an IPv6 CIDR in an IPv4 list: move the rule to importV6"
            ),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[3].cidr 10.0.0.1/8 has host bits set"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[4].source is not applicable to import rules"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[5].prefixLength.min 33 is out of range 0..=32"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[5].prefixLength min 33 is greater than max 8"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[5].prefixLength.max 8 is shorter than the CIDR's /16"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[6].prefixLength only applies with matchOperator In or NotIn"),
            "{e:#?}"
        );
        assert!(
            has("spec.importV4[7].interface is not supported by Manx yet"),
            "{e:#?}"
        );
        assert!(e.iter().all(|m| m.starts_with("bgpfilter f: ")), "{e:#?}");
    }

    #[test]
    fn ipv6_lengths_reach_128() {
        let ok = errors(BGPFilterSpec {
            export_v6: vec![BGPFilterRule {
                prefix_length: Some(PrefixLength {
                    min: Some(64),
                    max: Some(128),
                }),
                ..BGPFilterRule::cidr(Reject, NotIn, "fd00::/8")
            }],
            ..Default::default()
        });
        assert!(ok.is_empty(), "{ok:?}");
        let e = errors(BGPFilterSpec {
            export_v6: vec![BGPFilterRule {
                prefix_length: Some(PrefixLength {
                    min: None,
                    max: Some(129),
                }),
                ..BGPFilterRule::cidr(Reject, In, "fd00::/8")
            }],
            ..Default::default()
        });
        assert!(e[0].contains("129 is out of range 0..=128"), "{e:?}");
    }
}
