//! Shared by the end-to-end tests: skip-or-fail rules and a lab guard that
//! always tears down.

#![allow(dead_code)]

use std::time::Duration;

use manx_e2e::lab::{self, LabSpec, LabState, Mode, default_bin_dir};

/// Root and the Manx binaries are needed. Outside CI a missing piece skips
/// the test with a printed reason; in CI (CI=true) it fails.
pub fn require() -> bool {
    let mut missing = Vec::new();
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout);
    if uid
        .map(|u| String::from_utf8_lossy(&u).trim() != "0")
        .unwrap_or(true)
    {
        missing.push("root (network namespaces)".to_string());
    }
    let bin = default_bin_dir();
    for b in ["manx-node", "manx", "manx-ipam", "manxctl"] {
        if !bin.join(b).exists() {
            missing.push(format!(
                "{b} in {} (cargo build --workspace --bins)",
                bin.display()
            ));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("needs {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    false
}

/// A lab torn down on drop, even when the test panics.
pub struct Lab(pub LabState);

impl Lab {
    pub fn up(spec: LabSpec) -> Lab {
        match lab::up(spec) {
            Ok(s) => Lab(s),
            Err(e) => panic!("lab up failed: {e:#}"),
        }
    }

    pub fn spec(id: &str, nodes: usize, mode: Mode) -> LabSpec {
        LabSpec::new(id, nodes, mode)
    }

    /// Every pod reaches every other pod; on failure, print the routes.
    pub fn assert_all_ping(&self) {
        let m = lab::ping_all(&self.0, Duration::from_secs(15));
        if !m.failed.is_empty() {
            for (n, r) in lab::routes(&self.0) {
                eprintln!("=== {n}\n{r}");
            }
            eprintln!("{}", lab::tail_logs(&self.0));
            panic!(
                "{} pod pairs cannot reach each other: {:?}",
                m.failed.len(),
                m.failed
            );
        }
        assert!(!m.ok.is_empty(), "no pod pairs at all");
    }

    pub fn routes(&self, node: usize) -> String {
        lab::routes(&self.0)
            .remove(&self.0.nodes[node].name)
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab::down(&self.0.spec.id);
    }
}
