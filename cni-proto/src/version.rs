//! CNI spec versions: which ones the Manx plugins speak, and how results differ
//! between them.

use crate::env::Command;
use crate::error::{CniError, ErrorCode};

/// Versions this plugin accepts in `cniVersion` (VERSION command output).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version this plugin prefers (and reports when asked with no version).
pub const CURRENT_VERSION: &str = "1.1.0";

/// A parsed `major.minor.patch` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    /// Parses `major.minor.patch` (missing parts are 0).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.');
        let mut next = || -> Option<u16> {
            match parts.next() {
                None => Some(0),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok(),
                Some(_) => None,
            }
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Results of 0.3.x and 0.4.0 carry `"version": "4"|"6"` in `ips`;
    /// 1.0.0 dropped it.
    pub fn ips_have_version(self) -> bool {
        self < Version(1, 0, 0)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_gc(self) -> bool {
        self >= Version(1, 1, 0)
    }
}

/// Checks that `cniVersion` is one this plugin speaks; code 1 otherwise.
pub fn require_supported(version: &str) -> Result<Version, CniError> {
    if SUPPORTED_VERSIONS.contains(&version)
        && let Some(v) = Version::parse(version)
    {
        return Ok(v);
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!(
            "cniVersion {version:?} is not supported: use one of {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

/// Checks that the configuration's version has `command`: CHECK from
/// 0.4.0, STATUS and GC from 1.1.0; code 1 otherwise.
pub fn require_command(command: Command, cni_version: &str) -> Result<(), CniError> {
    let v = require_supported(cni_version)?;
    let (has, needs) = match command {
        Command::Check => (v.has_check(), "0.4.0"),
        Command::Status | Command::Gc => (v.has_status_gc(), "1.1.0"),
        Command::Add | Command::Del | Command::Version => return Ok(()),
    };
    if has {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!(
            "{} needs cniVersion {needs} or newer; the configuration says {cni_version}",
            command.as_str()
        ),
    ))
}

/// The VERSION command's answer.
pub fn version_info(cni_version: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(Version::parse("1.0.0"), Some(Version(1, 0, 0)));
        assert_eq!(Version::parse("0.4"), Some(Version(0, 4, 0)));
        assert_eq!(Version::parse("1.x"), None);
        assert_eq!(Version::parse("1.0.0.0"), None);
        assert!(Version(0, 4, 0) < Version(1, 0, 0));
        assert!(Version(0, 3, 1).ips_have_version());
        assert!(!Version(1, 0, 0).ips_have_version());
        assert!(!Version(0, 3, 1).has_check());
        assert!(Version(1, 1, 0).has_status_gc());
    }

    /// Spec "Version": unsupported versions fail with code 1.
    #[test]
    fn unsupported_is_code_1() {
        let e = require_supported("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
        assert!(require_supported("1.0.0").is_ok());
    }

    #[test]
    fn commands_need_their_versions() {
        let e = require_command(Command::Check, "0.3.1").unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(
            e.msg,
            "CHECK needs cniVersion 0.4.0 or newer; the configuration says 0.3.1"
        );
        let e = require_command(Command::Gc, "1.0.0").unwrap_err();
        assert_eq!(
            e.msg,
            "GC needs cniVersion 1.1.0 or newer; the configuration says 1.0.0"
        );
        assert!(require_command(Command::Status, "1.1.0").is_ok());
        assert!(require_command(Command::Check, "0.4.0").is_ok());
        assert!(require_command(Command::Add, "0.3.0").is_ok());
    }
}
