//! The network configuration on stdin, with Calico's field names.
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"k8s-pod-network","type":"manx",
//!  "datastore_type":"etcdv3","etcd_endpoints":"https://10.0.0.1:2379",
//!  "nodename_file":"/var/lib/manx/nodename","mtu":1450,
//!  "ipam":{"type":"manx-ipam","assign_ipv4":"true"}}
//! ```
//!
//! Unknown fields are kept (IPAM plugins and chained plugins read them from
//! the same bytes) and ignored here.

use serde::Deserialize;
use serde_json::Value;

use crate::error::CniError;
use crate::result::AddResult;
use crate::version::Version;

/// Default `nodename_file`, like Calico's `/var/lib/calico/nodename`.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/manx/nodename";

/// Where the node name and datastore come from, and how to wire pods.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion`, checked against [`crate::version::SUPPORTED_VERSIONS`]
    /// (with `name` and `datastore_type`, by [`cni_proto::conf::parse`]).
    pub cni_version: String,
    /// The parsed version.
    pub version: Version,
    /// `name`: the network name (part of the IPAM handle).
    pub name: String,
    /// `type`: normally `manx`.
    pub plugin_type: String,
    /// `ipam.type`: the IPAM plugin to run (`manx-ipam`, `host-local`…).
    pub ipam_type: Option<String>,
    /// `mtu`: the pod interface MTU; `None` = detect.
    pub mtu: Option<u32>,
    /// Datastore settings.
    pub datastore: DatastoreSettings,
    /// `nodename`: overrides everything else.
    pub nodename: Option<String>,
    /// `nodename_file`.
    pub nodename_file: String,
    /// `nodename_file_optional`: fall back to the hostname when the file is
    /// missing.
    pub nodename_file_optional: bool,
    /// `log_level` (`debug`, `info`, `warning`, `error`).
    pub log_level: Option<String>,
    /// `log_file_path`.
    pub log_file_path: Option<String>,
    /// `prevResult`, when chained after another plugin or for CHECK.
    pub prev_result: Option<AddResult>,
    /// `cni.dev/valid-attachments` (GC, spec 1.1).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The raw bytes, passed as-is to the IPAM plugin.
    pub raw: Vec<u8>,
}

/// Datastore fields (Calico names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatastoreSettings {
    /// `datastore_type`: `etcdv3`, `embedded`, or `none` (no
    /// WorkloadEndpoint records: standalone use with another IPAM).
    pub datastore_type: Option<String>,
    /// `etcd_endpoints`: comma-separated URLs.
    pub etcd_endpoints: Option<String>,
    pub etcd_key_file: Option<String>,
    pub etcd_cert_file: Option<String>,
    pub etcd_ca_cert_file: Option<String>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    /// `manx_db` (alias `datastore_path`): the embedded store's file, as
    /// manx-ipam reads it (`MANX_DB` in the environment otherwise).
    pub manx_db: Option<String>,
}

/// One live attachment named in `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The wire form; loose where Calico is loose (`mtu` may be a string).
#[derive(Debug, Deserialize)]
struct WireConf {
    #[serde(rename = "type", default)]
    plugin_type: Option<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    mtu: Option<Value>,
    #[serde(default)]
    datastore_type: Option<String>,
    #[serde(default)]
    etcd_endpoints: Option<String>,
    #[serde(default)]
    etcd_key_file: Option<String>,
    #[serde(default)]
    etcd_cert_file: Option<String>,
    #[serde(default)]
    etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    etcd_username: Option<String>,
    #[serde(default)]
    etcd_password: Option<String>,
    #[serde(default, alias = "datastore_path")]
    manx_db: Option<String>,
    #[serde(default)]
    nodename: Option<String>,
    #[serde(default)]
    nodename_file: Option<String>,
    #[serde(default)]
    nodename_file_optional: Option<bool>,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    log_file_path: Option<String>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses and validates the stdin configuration. Decode errors are code 6,
    /// bad values code 7, an unsupported `cniVersion` code 1, an unknown
    /// `datastore_type` code 2 (the header checks are `manx-ipam`'s too).
    /// Never panics.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let (value, header) = cni_proto::conf::parse(bytes)?;
        let wire: WireConf = serde_json::from_value(value).map_err(|e| {
            CniError::decode(format!("cannot decode the network configuration: {e}"))
        })?;
        let ipam_type = match &wire.ipam {
            None | Some(Value::Null) => None,
            Some(Value::Object(obj)) => match obj.get("type") {
                Some(Value::String(t)) if valid_plugin_type(t) => Some(t.clone()),
                Some(Value::String(t)) => {
                    return Err(CniError::config(format!(
                        "ipam.type {t:?} is not a valid plugin name: no '/', '..' or spaces"
                    )));
                }
                _ => {
                    return Err(CniError::config(
                        "ipam section has no \"type\": set it to \"manx-ipam\" (or another IPAM plugin)",
                    ));
                }
            },
            Some(_) => return Err(CniError::config("\"ipam\" must be a JSON object")),
        };
        let mtu = match wire.mtu {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => None,
                Some(m) if (68..=65535).contains(&m) => Some(m as u32),
                _ => return Err(bad_mtu(&n.to_string())),
            },
            Some(Value::String(s)) => match s.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(m) if (68..=65535).contains(&m) => Some(m as u32),
                _ => return Err(bad_mtu(&s)),
            },
            Some(other) => return Err(bad_mtu(&other.to_string())),
        };
        Ok(NetConf {
            cni_version: header.cni_version,
            version: header.version,
            name: header.name,
            plugin_type: wire.plugin_type.unwrap_or_default(),
            ipam_type,
            mtu,
            datastore: DatastoreSettings {
                datastore_type: wire.datastore_type,
                etcd_endpoints: wire.etcd_endpoints.filter(|s| !s.is_empty()),
                etcd_key_file: wire.etcd_key_file.filter(|s| !s.is_empty()),
                etcd_cert_file: wire.etcd_cert_file.filter(|s| !s.is_empty()),
                etcd_ca_cert_file: wire.etcd_ca_cert_file.filter(|s| !s.is_empty()),
                etcd_username: wire.etcd_username.filter(|s| !s.is_empty()),
                etcd_password: wire.etcd_password.filter(|s| !s.is_empty()),
                manx_db: wire.manx_db.filter(|s| !s.is_empty()),
            },
            nodename: wire.nodename.filter(|s| !s.is_empty()),
            nodename_file: wire
                .nodename_file
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_NODENAME_FILE.to_string()),
            nodename_file_optional: wire.nodename_file_optional.unwrap_or(false),
            log_level: wire.log_level,
            log_file_path: wire.log_file_path.filter(|s| !s.is_empty()),
            prev_result: header.prev_result,
            valid_attachments: wire.valid_attachments,
            raw: bytes.to_vec(),
        })
    }

    /// The IPAM plugin type, or code 7 when the configuration has none.
    pub fn require_ipam(&self) -> Result<&str, CniError> {
        self.ipam_type.as_deref().ok_or_else(|| {
            CniError::config(
                "network configuration has no \"ipam\" section: add {\"type\":\"manx-ipam\"}",
            )
        })
    }

    /// The node this plugin runs on: `nodename`, else `nodename_file`, else
    /// (if the file is optional or absent and not required) the hostname.
    pub fn node_name(&self) -> Result<String, CniError> {
        if let Some(n) = &self.nodename {
            return Ok(n.clone());
        }
        match std::fs::read_to_string(&self.nodename_file) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) | Err(_) if self.nodename_file_optional => {}
            Ok(_) => {
                return Err(CniError::config(format!(
                    "nodename_file {} is empty: is manx-node running on this node?",
                    self.nodename_file
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CniError::io(format!(
                    "cannot read nodename_file {}: {e}",
                    self.nodename_file
                )));
            }
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_lowercase())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                CniError::config(format!(
                    "no node name: set \"nodename\" or write it to {}",
                    self.nodename_file
                ))
            })
    }
}

fn bad_mtu(v: &str) -> CniError {
    CniError::config(format!(
        "mtu {v} is not valid: use a number from 68 to 65535, or 0 to detect it"
    ))
}

/// A plugin name must be a file name in `CNI_PATH`.
fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty()
        && t != "."
        && t != ".."
        && !t.contains('/')
        && !t.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"manx",
        "mtu":1440,"datastore_type":"etcdv3","etcd_endpoints":"http://127.0.0.1:2379",
        "nodename":"n1","ipam":{"type":"manx-ipam","assign_ipv4":"true"}}"#;

    #[test]
    fn parses_calico_fields() {
        let c = NetConf::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(c.name, "k8s-pod-network");
        assert_eq!(c.ipam_type.as_deref(), Some("manx-ipam"));
        assert_eq!(c.mtu, Some(1440));
        assert_eq!(c.datastore.datastore_type.as_deref(), Some("etcdv3"));
        assert_eq!(c.node_name().unwrap(), "n1");
        assert_eq!(c.raw, GOOD.as_bytes());
    }

    #[test]
    fn mtu_string_and_zero() {
        let c = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n","mtu":"1400"}"#).unwrap();
        assert_eq!(c.mtu, Some(1400));
        let c = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n","mtu":0}"#).unwrap();
        assert_eq!(c.mtu, None);
        let e = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n","mtu":9}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("68 to 65535"), "{}", e.msg);
    }

    #[test]
    fn error_codes() {
        let cases: &[(&str, u32, &str)] = &[
            ("{", 6, "not valid JSON"),
            ("[]", 6, "JSON object"),
            (r#"{"name":"n"}"#, 7, "cniVersion"),
            (r#"{"cniVersion":"0.2.0","name":"n"}"#, 1, "not supported"),
            (r#"{"cniVersion":"1.0.0"}"#, 7, "\"name\""),
            (r#"{"cniVersion":"1.0.0","name":"a b"}"#, 7, "network name"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#,
                7,
                "ipam section has no",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"../x"}}"#,
                7,
                "ipam.type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","ipam":3}"#,
                7,
                "must be a JSON object",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","datastore_type":"kdd"}"#,
                2,
                "datastore_type",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","mtu":true}"#, 7, "mtu"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
                6,
                "prevResult",
            ),
            (r#"{"cniVersion":1,"name":"n"}"#, 6, "decode"),
        ];
        for (raw, code, needle) in cases {
            let e = NetConf::parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.code, *code, "{raw}: {e:?}");
            assert!(e.msg.contains(needle), "{raw}: {}", e.msg);
        }
    }

    #[test]
    fn valid_attachments_for_gc() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "abc".into(),
                ifname: "eth0".into()
            }]
        );
    }

    #[test]
    fn missing_ipam_is_code_7() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
        assert_eq!(c.require_ipam().unwrap_err().code, 7);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Malformed input never panics: arbitrary bytes.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = NetConf::parse(&bytes);
            }

            /// Mutations of a good config never panic.
            #[test]
            fn mutated_config_never_panics(cut in 0usize..300, insert in "[\\[\\]{}\",:0-9a-z]{0,8}") {
                let mut s = GOOD.to_string();
                let cut = cut.min(s.len());
                let mut at = cut;
                while !s.is_char_boundary(at) { at -= 1; }
                s.insert_str(at, &insert);
                let _ = NetConf::parse(s.as_bytes());
                let _ = NetConf::parse(&s.as_bytes()[..at]);
            }

            /// Any JSON value types in known fields never panic.
            #[test]
            fn wrong_types_never_panic(field in prop::sample::select(vec![
                "cniVersion", "name", "ipam", "mtu", "prevResult", "nodename",
                "cni.dev/valid-attachments", "datastore_type"]),
                value in prop::sample::select(vec!["null", "1", "-1", "1e99", "\"\"", "[]", "{}", "true", "[{}]", "{\"type\":1}"])) {
                let s = format!(r#"{{"cniVersion":"1.0.0","name":"n","{field}":{value}}}"#);
                let _ = NetConf::parse(s.as_bytes());
            }
        }
    }
}
