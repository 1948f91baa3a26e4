//! The CNI ADD result and its per-version JSON shapes.
//!
//! One in-memory [`AddResult`]; [`AddResult::to_json`] writes the shape of
//! the version asked for and [`AddResult::from_json`] reads any supported
//! one. The differences (CNI spec 0.3.1/0.4.0 vs 1.0.0 "Result"):
//! * 0.3.x and 0.4.0: each `ips[]` entry has `"version": "4"|"6"`.
//! * 1.0.0 and 1.1.0: no `version`; 1.1.0 adds optional route/interface
//!   fields (`mtu`, `scope`, `table`…) that this plugin does not emit.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::CniError;
use crate::version::Version;

/// One interface of the result (`interfaces[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name (`caliXXXX` on the host, `CNI_IFNAME` in the pod).
    pub name: String,
    /// MAC address, `aa:bb:…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for a pod interface; absent for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address of the result (`ips[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address with its prefix length (`10.20.0.5/32`).
    pub address: IpNetwork,
    /// The gateway, if the IPAM plugin gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface carrying the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of the result (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop; absent for the default gateway of the IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings (`dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// A successful ADD result (also what IPAM plugins return, with no
/// interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// `ips[]` on the wire: `version` only before 1.0.0.
#[derive(Debug, Serialize, Deserialize)]
struct WireIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireResult {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    dns: Dns,
}

impl AddResult {
    /// The result in the JSON shape of `cni_version` (a supported version).
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let with_version = Version::parse(cni_version)
            .map(Version::ips_have_version)
            .unwrap_or(false);
        let wire = WireResult {
            cni_version: cni_version.to_string(),
            interfaces: self.interfaces.clone(),
            ips: self
                .ips
                .iter()
                .map(|ip| WireIp {
                    version: with_version
                        .then(|| if ip.address.is_ipv4() { "4" } else { "6" }.to_string()),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
        };
        let mut v = serde_json::to_value(wire).unwrap_or_default();
        // 0.3.x/0.4.0 consumers (and the spec examples) expect `dns` present.
        if let Some(obj) = v.as_object_mut() {
            obj.entry("dns").or_insert_with(|| serde_json::json!({}));
        }
        v
    }

    /// Reads a result of any 0.3.0+ version (the `version` field of 0.3.x/0.4.0
    /// `ips` is checked against the address family and then dropped).
    pub fn from_json(value: &serde_json::Value) -> Result<AddResult, CniError> {
        let wire: WireResult = serde_json::from_value(value.clone())
            .map_err(|e| CniError::decode(format!("cannot decode CNI result: {e}")))?;
        if !wire.cni_version.is_empty() {
            match Version::parse(&wire.cni_version) {
                Some(v) if v >= Version(0, 3, 0) => {}
                _ => {
                    return Err(CniError::new(
                        crate::error::ErrorCode::IncompatibleVersion,
                        format!(
                            "result cniVersion {:?} cannot be read: 0.3.0 or newer is needed",
                            wire.cni_version
                        ),
                    ));
                }
            }
        }
        let mut ips = Vec::with_capacity(wire.ips.len());
        for ip in wire.ips {
            if let Some(ver) = &ip.version {
                let expected = if ip.address.is_ipv4() { "4" } else { "6" };
                if ver != expected {
                    return Err(CniError::decode(format!(
                        "result ip {} says version {ver:?} but is IPv{expected}",
                        ip.address
                    )));
                }
            }
            if let Some(i) = ip.interface
                && i >= wire.interfaces.len()
                && !wire.interfaces.is_empty()
            {
                return Err(CniError::decode(format!(
                    "result ip {} names interface {i} but there are only {} interfaces",
                    ip.address,
                    wire.interfaces.len()
                )));
            }
            ips.push(IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            });
        }
        Ok(AddResult {
            interfaces: wire.interfaces,
            ips,
            routes: wire.routes,
            dns: wire.dns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cali0123456789a".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    sandbox: String::new(),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    sandbox: "/var/run/netns/p".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.20.0.5/32".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd20::5/128".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: Dns::default(),
        }
    }

    /// CNI spec 0.4.0 "Result": ips carry "version".
    #[test]
    fn v040_has_ip_version() {
        let v = sample().to_json("0.4.0");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["ips"][0]["address"], "10.20.0.5/32");
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(AddResult::from_json(&v).unwrap(), sample());
    }

    /// CNI spec 1.0.0 "Result": no "version" in ips.
    #[test]
    fn v100_has_no_ip_version() {
        let v = sample().to_json("1.0.0");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"][0]["gw"], "169.254.1.1");
        assert_eq!(AddResult::from_json(&v).unwrap(), sample());
    }

    #[test]
    fn reads_host_local_result() {
        let raw = r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.20.1.2/24","gateway":"10.20.1.1"}],"dns":{}}"#;
        let r = AddResult::from_json(&serde_json::from_str(raw).unwrap()).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.20.1.2/24");
        assert_eq!(r.ips[0].gateway, Some("10.20.1.1".parse().unwrap()));
    }

    #[test]
    fn rejects_wrong_family_and_old_versions() {
        let raw = r#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.20.1.2/24"}]}"#;
        assert_eq!(
            AddResult::from_json(&serde_json::from_str(raw).unwrap())
                .unwrap_err()
                .code,
            6
        );
        let raw = r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.1/24"}}"#;
        assert_eq!(
            AddResult::from_json(&serde_json::from_str(raw).unwrap())
                .unwrap_err()
                .code,
            1
        );
    }
}
