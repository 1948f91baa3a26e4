//! Delegation to an IPAM plugin through the CNI exec protocol (CNI spec 1.1
//! "Delegated plugins"): find the binary in `CNI_PATH`, run it with the
//! same stdin configuration and `CNI_*` variables, read its result or error
//! from stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use crate::env::{CniEnv, Command};
use crate::error::{CniError, ErrorCode};
use crate::result::AddResult;

/// An IPAM plugin binary found in `CNI_PATH`.
#[derive(Debug, Clone)]
pub struct IpamPlugin {
    /// `ipam.type`.
    pub name: String,
    /// Full path of the binary.
    pub path: PathBuf,
}

/// One invocation's `CNI_*` variables.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    /// More variables for the plugin (the datastore settings,
    /// [`crate::store::datastore_vars`]).
    pub extra_env: Vec<(String, String)>,
}

impl Invocation {
    /// The same variables the plugin itself got, for `command`.
    pub fn from_env(env: &CniEnv, command: Command) -> Invocation {
        Invocation {
            command,
            container_id: env.container_id.clone(),
            netns: env
                .netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ifname: env.ifname.clone(),
            args: env.raw_args.clone(),
            path: env.raw_path.clone(),
            extra_env: Vec::new(),
        }
    }
}

impl IpamPlugin {
    /// Finds `name` in the `CNI_PATH` directories (first match, as libcni's
    /// `FindInPath`).
    pub fn find(name: &str, dirs: &[PathBuf]) -> Result<IpamPlugin, CniError> {
        for dir in dirs {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(IpamPlugin {
                    name: name.to_string(),
                    path: candidate,
                });
            }
        }
        Err(CniError::config(format!(
            "IPAM plugin {name:?} was not found in CNI_PATH ({}): install it there or fix ipam.type",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        )))
    }

    /// Runs the plugin; returns its stdout on success, its CNI error (or a
    /// description of the crash) otherwise.
    pub fn exec(&self, inv: &Invocation, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let mut child = Process::new(&self.path)
            .env("CNI_COMMAND", inv.command.as_str())
            .env("CNI_CONTAINERID", &inv.container_id)
            .env("CNI_NETNS", &inv.netns)
            .env("CNI_IFNAME", &inv.ifname)
            .env("CNI_ARGS", &inv.args)
            .env("CNI_PATH", &inv.path)
            .envs(inv.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CniError::io(format!(
                    "cannot run IPAM plugin {}: {e}",
                    self.path.display()
                ))
            })?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin that exits before reading all of stdin is judged by
            // its exit status and output, not by this write.
            let _ = input.write_all(stdin);
        }
        let out = child.wait_with_output().map_err(|e| {
            CniError::io(format!(
                "waiting for IPAM plugin {}: {e}",
                self.path.display()
            ))
        })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        match CniError::from_json(&out.stdout) {
            Some(mut e) => {
                e.msg = format!(
                    "IPAM plugin {} {} failed: {}",
                    self.name,
                    inv.command.as_str(),
                    e.msg
                );
                Err(e)
            }
            None => Err(CniError::internal(format!(
                "IPAM plugin {} {} failed ({}) without a CNI error",
                self.name,
                inv.command.as_str(),
                out.status
            ))
            .with_details(format!(
                "stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                stderr.trim()
            ))),
        }
    }

    /// ADD: the addresses (and routes/DNS) the plugin assigned.
    pub fn add(&self, inv: &Invocation, stdin: &[u8]) -> Result<AddResult, CniError> {
        let out = self.exec(inv, stdin)?;
        let value: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::decode(format!(
                "IPAM plugin {} printed a result that is not JSON: {e}",
                self.name
            ))
        })?;
        let result = AddResult::from_json(&value)
            .map_err(|e| e.context(format!("IPAM plugin {}", self.name)))?;
        if result.ips.is_empty() {
            return Err(CniError::internal(format!(
                "IPAM plugin {} returned no addresses: check its pools/ranges",
                self.name
            )));
        }
        Ok(result)
    }

    /// The versions the plugin speaks (VERSION command).
    pub fn supported_versions(&self, inv: &Invocation) -> Result<Vec<String>, CniError> {
        let mut inv = inv.clone();
        inv.command = Command::Version;
        let out = self.exec(&inv, br#"{"cniVersion":"1.0.0"}"#)?;
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            CniError::decode(format!("IPAM plugin {} VERSION output: {e}", self.name))
        })?;
        Ok(v["supportedVersions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether the plugin speaks CNI 1.1 (STATUS and GC).
    pub fn speaks_1_1(&self, inv: &Invocation) -> bool {
        self.supported_versions(inv)
            .map(|v| v.iter().any(|s| s == "1.1.0"))
            .unwrap_or(false)
    }
}

/// Is `e` the IPAM plugin saying it does not know the command or version?
pub fn is_unsupported(e: &CniError) -> bool {
    e.code == ErrorCode::IncompatibleVersion as u32
        || e.code == ErrorCode::InvalidEnvironment as u32
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(cmd: Command) -> Invocation {
        Invocation {
            command: cmd,
            container_id: "mxcnunit".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: String::new(),
            path: "/usr/lib/cni".into(),
            extra_env: Vec::new(),
        }
    }

    #[test]
    fn not_found_names_the_path() {
        let e = IpamPlugin::find("no-such-ipam", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.contains("no-such-ipam") && e.msg.contains("/nonexistent"),
            "{}",
            e.msg
        );
    }

    /// A plugin that fails prints its CNI error; the code is kept.
    #[test]
    fn plugin_error_is_propagated() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fail-ipam");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"pool exhausted\"}'\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = IpamPlugin::find("fail-ipam", &[dir.path().to_path_buf()]).unwrap();
        let e = p.add(&inv(Command::Add), b"{}").unwrap_err();
        assert_eq!(e.code, 11);
        assert!(
            e.msg.contains("fail-ipam ADD failed: pool exhausted"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn crash_without_json_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("crash-ipam");
        std::fs::write(&script, "#!/bin/sh\necho boom >&2\nexit 2\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = IpamPlugin::find("crash-ipam", &[dir.path().to_path_buf()]).unwrap();
        let e = p.exec(&inv(Command::Del), b"{}").unwrap_err();
        assert!(e.msg.contains("without a CNI error"));
        assert!(e.details.contains("boom"));
    }

    /// Debian's host-local speaks up to 1.0.0 (no STATUS/GC).
    #[test]
    fn host_local_versions() {
        let dirs = [PathBuf::from("/usr/lib/cni")];
        let Ok(p) = IpamPlugin::find("host-local", &dirs) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "host-local missing in /usr/lib/cni (containernetworking-plugins)"
            );
            eprintln!("skipped: /usr/lib/cni/host-local not installed");
            return;
        };
        let v = p.supported_versions(&inv(Command::Version)).unwrap();
        assert!(v.contains(&"1.0.0".to_string()), "{v:?}");
    }
}
