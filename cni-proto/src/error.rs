//! CNI errors: the spec's well-known codes and the JSON error object a plugin
//! prints on stdout (CNI spec 1.1, "Error" section).

use serde::{Deserialize, Serialize};

/// The spec's reserved error codes (CNI spec 1.1, section "Error"). Codes
/// 1–99 are reserved by the spec; plugins may use 100+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in the network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    IoFailure = 5,
    /// 6: failed to decode content.
    DecodeFailure = 6,
    /// 7: invalid network config.
    InvalidNetworkConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS, spec 1.1).
    PluginNotAvailable = 50,
    /// 51: the plugin cannot service ADDs at the moment (STATUS, spec 1.1).
    LimitedConnectivity = 51,
    /// 100: a Manx-specific failure (netlink, datastore logic) with no
    /// better code. Plugins may define more of their own from 100 on
    /// ([`CniError::plugin`]).
    Internal = 100,
}

/// A failed CNI operation: the code, a message naming what to fix, and
/// optional details (the underlying error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// One of the spec codes, or 100+ for Manx's own.
    pub code: u32,
    /// What failed and what to do.
    pub msg: String,
    /// The underlying cause, if any.
    pub details: String,
}

impl CniError {
    /// An error with a well-known code.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details (the underlying error) to the error.
    pub fn with_details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    /// Prefixes the message with context, keeping the code.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// Code 4.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }

    /// Code 7.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidNetworkConfig, msg)
    }

    /// Code 6.
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::DecodeFailure, msg)
    }

    /// Code 5.
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::IoFailure, msg)
    }

    /// Code 11.
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::TryAgainLater, msg)
    }

    /// Code 100.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, msg)
    }

    /// A plugin-specific code (100 or more; the spec reserves 1-99).
    pub fn plugin(code: u32, msg: impl Into<String>) -> Self {
        debug_assert!(code >= 100, "CNI reserves codes below 100");
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The error object as printed on stdout, in the given CNI version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let wire = WireError {
            cni_version: cni_version.to_string(),
            code: self.code,
            msg: self.msg.clone(),
            details: (!self.details.is_empty()).then(|| self.details.clone()),
        };
        serde_json::to_value(wire).unwrap_or_default()
    }

    /// Parses an error object printed by another plugin (an IPAM plugin).
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        let wire: WireError = serde_json::from_slice(bytes).ok()?;
        Some(CniError {
            code: wire.code,
            msg: wire.msg,
            details: wire.details.unwrap_or_default(),
        })
    }
}

/// The error object on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<String>,
}

/// Result alias for CNI operations.
pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// CNI spec 1.1 "Error": `cniVersion`, `code`, `msg`, optional `details`.
    #[test]
    fn error_json_has_spec_fields() {
        let e = CniError::env("CNI_IFNAME is not set").with_details("empty");
        let v = e.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_IFNAME is not set");
        assert_eq!(v["details"], "empty");
        let back = CniError::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn details_omitted_when_empty() {
        let v = CniError::config("bad").to_json("0.4.0");
        assert!(v.get("details").is_none());
        assert_eq!(v["code"], 7);
    }
}
