//! Shared by the end-to-end tests: skip-or-fail rules and a lab guard that
//! always tears down.

#![allow(dead_code)]

use std::time::Duration;

use manx_e2e::lab::{self, LabSpec, LabState, Mode, default_bin_dir};
use testkit::Prereqs;

/// Root and the Manx binaries are needed. Outside CI a missing piece skips
/// the test with a printed reason; in CI (CI=true) it fails.
pub fn require() -> bool {
    let bin = default_bin_dir();
    let missing: Vec<&str> = ["manx-node", "manx", "manx-ipam", "manxctl"]
        .into_iter()
        .filter(|b| !bin.join(b).exists())
        .collect();
    Prereqs::new()
        .root()
        .check(
            missing.is_empty(),
            format!(
                "{} in {} (cargo build --workspace --bins)",
                missing.join(", "),
                bin.display()
            ),
        )
        .ok()
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
