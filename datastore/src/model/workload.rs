//! `WorkloadEndpoint`: one pod interface (namespaced), written by the CNI
//! plugin and read by the node agent.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::model::meta::ObjectMeta;
use crate::model::node::is_mac;
use crate::model::validate::{Checker, ValidationErrors, dns1123_label};

/// A workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    pub metadata: ObjectMeta,
    pub spec: WorkloadEndpointSpec,
}

/// `WorkloadEndpoint.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    /// `k8s`, `cni`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Interface name inside the pod, e.g. `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The pod's addresses, `10.65.0.5/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<IpNetwork>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(
        default,
        rename = "ipv4Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_gateway: Option<String>,
    #[serde(
        default,
        rename = "ipv6Gateway",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Host side veth, e.g. `cali1234567890a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// MAC of the pod interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
}

/// A 1:1 NAT of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    #[serde(rename = "externalIP")]
    pub external_ip: String,
}

/// A named port of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `TCP`, `UDP`, `SCTP` or a protocol number.
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A protocol by name or number, as Calico's `numorstring.Protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    Number(u8),
    Name(String),
}

impl WorkloadEndpoint {
    /// Calico's endpoint name: `<node>-<orchestrator>-<workload>-<endpoint>`,
    /// each part with `-` doubled so the name splits back unambiguously.
    pub fn calico_name(node: &str, orchestrator: &str, workload: &str, endpoint: &str) -> String {
        [node, orchestrator, workload, endpoint]
            .iter()
            .map(|p| p.replace('-', "--"))
            .collect::<Vec<_>>()
            .join("-")
    }

    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let mut metadata = ObjectMeta::named(name);
        metadata.namespace = Some(namespace.into());
        WorkloadEndpoint {
            metadata,
            spec: WorkloadEndpointSpec::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("workloadendpoint", &self.metadata.name);
        c.name(&self.metadata.name);
        match self.metadata.namespace.as_deref() {
            None | Some("") => c.error(
                "metadata.namespace",
                "is required: workload endpoints live in a namespace",
            ),
            Some(ns) => {
                if let Err(why) = dns1123_label(ns) {
                    c.error("metadata.namespace", why);
                }
            }
        }
        let s = &self.spec;
        for (i, net) in s.ip_networks.iter().enumerate() {
            c.network(&format!("spec.ipNetworks[{i}]"), net);
        }
        if let Some(m) = &s.mac
            && !is_mac(m)
        {
            c.error(
                "spec.mac",
                format!("{m:?} is not a MAC address like ee:ee:ee:ee:ee:ee"),
            );
        }
        if let Some(ifname) = &s.interface_name {
            // Linux IFNAMSIZ is 16 including the NUL.
            if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
                c.error(
                    "spec.interfaceName",
                    format!("{ifname:?} is not a Linux interface name (1..=15 characters, no '/' or spaces)"),
                );
            }
        }
        for (i, p) in s.ports.iter().enumerate() {
            if let Protocol::Name(n) = &p.protocol
                && !["TCP", "UDP", "SCTP"].contains(&n.to_ascii_uppercase().as_str())
            {
                c.error(
                    &format!("spec.ports[{i}].protocol"),
                    format!("{n:?} is not TCP, UDP, SCTP or a protocol number"),
                );
            }
            if p.port == 0 {
                c.error(
                    &format!("spec.ports[{i}].port"),
                    "0 is not a port; use 1..=65535",
                );
            }
        }
        c.finish()
    }
}
