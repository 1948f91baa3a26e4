//! What a plugin prints on stdout and how it exits (CNI spec 1.1, "Section
//! 2: Execution Protocol"): a result (or nothing) and exit code 0, or the
//! error object and exit code 1.

use crate::error::CniError;
use crate::version::{CURRENT_VERSION, SUPPORTED_VERSIONS};

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// JSON for stdout (empty for a successful DEL/CHECK/STATUS/GC).
    pub stdout: Vec<u8>,
    /// 0 on success, 1 on a CNI error.
    pub exit_code: i32,
}

impl Outcome {
    /// The output for a command's result; an error object carries the
    /// `cniVersion` of `stdin` (see [`requested_version`]).
    pub fn new(stdin: &[u8], result: &Result<Option<serde_json::Value>, CniError>) -> Outcome {
        match result {
            Ok(out) => Outcome {
                stdout: out
                    .as_ref()
                    .map(|v| v.to_string().into_bytes())
                    .unwrap_or_default(),
                exit_code: 0,
            },
            Err(e) => Outcome {
                stdout: e
                    .to_json(&requested_version(stdin))
                    .to_string()
                    .into_bytes(),
                exit_code: 1,
            },
        }
    }
}

/// Reads the network configuration from the process's stdin; code 5 if
/// that fails.
pub fn read_stdin() -> Result<Vec<u8>, CniError> {
    use std::io::Read;
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
        CniError::io(format!(
            "cannot read the network configuration from stdin: {e}"
        ))
    })?;
    Ok(stdin)
}

/// Writes the outcome to stdout; returns the exit code. Nothing useful can
/// be done if stdout is closed: the exit code stays.
pub fn emit(outcome: &Outcome) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&outcome.stdout);
    let _ = out.flush();
    outcome.exit_code
}

/// `cniVersion` of stdin if it is readable and supported, else
/// [`CURRENT_VERSION`]: the version of error objects and of the VERSION
/// answer.
pub fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_uses_the_requested_version() {
        let e = CniError::env("CNI_IFNAME is not set");
        let o = Outcome::new(br#"{"cniVersion":"0.4.0"}"#, &Err(e.clone()));
        assert_eq!(o.exit_code, 1);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["code"], 4);
        // Unsupported or unreadable: the current version.
        for stdin in [&br#"{"cniVersion":"0.1.0"}"#[..], b"{", b""] {
            let o = Outcome::new(stdin, &Err(e.clone()));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["cniVersion"], CURRENT_VERSION);
        }
    }

    #[test]
    fn success_prints_the_result_or_nothing() {
        let o = Outcome::new(b"", &Ok(None));
        assert_eq!((o.exit_code, o.stdout.is_empty()), (0, true));
        let o = Outcome::new(b"", &Ok(Some(serde_json::json!({"a": 1}))));
        assert_eq!(o.stdout, br#"{"a":1}"#);
    }
}
