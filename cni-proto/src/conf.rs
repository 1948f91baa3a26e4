//! The part of the network configuration (stdin) every Manx plugin reads
//! the same way: it is JSON (code 6), has a supported `cniVersion` (code 7
//! when missing, 1 when unsupported) and a valid `name` (code 7), and a
//! `datastore_type` Manx knows (code 2), and a readable `prevResult`
//! (code 6). Each plugin then decodes its own
//! fields from the returned JSON value.

use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::result::AddResult;
use crate::version::{self, Version};

/// The fields every plugin checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfHeader {
    /// `cniVersion`, one of [`version::SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// The parsed version.
    pub version: Version,
    /// `name`: the network name (part of the IPAM handle).
    pub name: String,
    /// `prevResult` (CHECK, chained plugins), in any supported shape.
    pub prev_result: Option<AddResult>,
}

/// `prevResult`, which CHECK needs; code 7 when it is missing.
pub fn require_prev_result(prev: Option<&AddResult>) -> Result<&AddResult, CniError> {
    prev.ok_or_else(|| {
        CniError::config("CHECK needs prevResult in the configuration (the result of ADD)")
    })
}

/// `datastore_type` values (Calico's field): `none` means no datastore
/// (the manx plugin then writes no WorkloadEndpoints; manx-ipam needs one).
pub const DATASTORE_TYPES: [&str; 3] = ["etcdv3", "embedded", "none"];

/// Parses stdin as a JSON object and checks its header. Never panics.
pub fn parse(bytes: &[u8]) -> Result<(Value, ConfHeader), CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::decode(format!(
            "network configuration on stdin is not valid JSON: {e}"
        ))
    })?;
    let Some(obj) = value.as_object() else {
        return Err(CniError::decode(
            "network configuration on stdin must be a JSON object",
        ));
    };
    let string = |field: &str| -> Result<Option<String>, CniError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(CniError::decode(format!(
                "cannot decode the network configuration: \"{field}\" must be a string, not {other}"
            ))),
        }
    };
    let cni_version = string("cniVersion")?;
    let name = string("name")?;
    let datastore_type = string("datastore_type")?;
    let cni_version = cni_version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CniError::config("network configuration has no \"cniVersion\""))?;
    let version = version::require_supported(&cni_version)?;
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::config("network configuration has no \"name\""))?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(CniError::config(format!(
            "network name {name:?} is not valid: use letters, digits, '_', '.' and '-'"
        )));
    }
    if let Some(t) = &datastore_type
        && !DATASTORE_TYPES.contains(&t.as_str())
    {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            format!(
                "datastore_type {t:?} is not supported: use one of {}",
                DATASTORE_TYPES.join(", ")
            ),
        ));
    }
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            AddResult::from_json(v).map_err(|e| e.context("prevResult in the configuration"))?,
        ),
    };
    let header = ConfHeader {
        cni_version,
        version,
        name,
        prev_result,
    };
    Ok((value, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_header() {
        let (v, h) = parse(br#"{"cniVersion":"0.4.0","name":"k8s-pod-network","x":1}"#).unwrap();
        assert_eq!(h.cni_version, "0.4.0");
        assert_eq!(h.version, Version(0, 4, 0));
        assert_eq!(h.name, "k8s-pod-network");
        assert_eq!(v["x"], 1);
        assert_eq!(h.prev_result, None);
        let e = require_prev_result(h.prev_result.as_ref()).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                7,
                "CHECK needs prevResult in the configuration (the result of ADD)"
            )
        );
        let (_, h) = parse(br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/32"}]}}"#).unwrap();
        assert_eq!(
            require_prev_result(h.prev_result.as_ref()).unwrap().ips[0]
                .address
                .to_string(),
            "10.0.0.1/32"
        );
    }

    #[test]
    fn error_codes() {
        let cases: &[(&str, u32, &str)] = &[
            ("", 6, "not valid JSON"),
            ("{", 6, "not valid JSON"),
            ("[]", 6, "must be a JSON object"),
            (
                r#"{"cniVersion":1,"name":"n"}"#,
                6,
                "\"cniVersion\" must be a string",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":["n"]}"#,
                6,
                "\"name\" must be a string",
            ),
            (r#"{"name":"n"}"#, 7, "no \"cniVersion\""),
            (r#"{"cniVersion":"","name":"n"}"#, 7, "no \"cniVersion\""),
            (
                r#"{"cniVersion":"0.2.0","name":"n"}"#,
                1,
                "cniVersion \"0.2.0\" is not supported",
            ),
            (r#"{"cniVersion":"1.0.0"}"#, 7, "no \"name\""),
            (
                r#"{"cniVersion":"1.0.0","name":"a b"}"#,
                7,
                "network name \"a b\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","datastore_type":"kdd"}"#,
                2,
                "datastore_type \"kdd\" is not supported",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","datastore_type":""}"#,
                2,
                "datastore_type \"\" is not supported",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"x"}]}}"#,
                6,
                "prevResult in the configuration: cannot decode CNI result",
            ),
        ];
        for (raw, code, needle) in cases {
            let e = parse(raw.as_bytes()).unwrap_err();
            assert_eq!(e.code, *code, "{raw}: {e:?}");
            assert!(e.msg.contains(needle), "{raw}: {}", e.msg);
        }
    }
}
