//! What real runtimes do to a plugin. podman's CNI backend (libcni 1.1, vendored) as users run it: it validates
//! every network configuration with VERSION and `CNI_NETNS=dummy
//! CNI_IFNAME=dummy CNI_PATH=dummy`, and drops a network whose plugin
//! refuses that (`network not found` later). Only `podman network ls`
//! runs: no container, no image, nothing in the root network namespace;
//! podman's state (root, runroot and engine tmp_dir, which defaults to the
//! host's /run/libpod) lives in a temporary directory.

use std::path::Path;
use std::process::Command;

use testkit::Prereqs;

use crate::common::{manx_bin, manx_ipam_bin};

#[test]
fn podman_lists_the_manx_network() {
    if !Prereqs::new().command("podman").ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bin, netd) = (d.join("bin"), d.join("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::copy(manx_bin(), bin.join("manx")).unwrap();
    std::fs::copy(manx_ipam_bin(), bin.join("manx-ipam")).unwrap();
    let log = d.join("manx.log");
    std::fs::write(
        netd.join("10-manx.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "manx-pods",
            "plugins": [{
                "type": "manx",
                "log_level": "debug",
                "log_file_path": log,
                "datastore_type": "embedded",
                "ipam": {"type": "manx-ipam"}
            }]
        })
        .to_string(),
    )
    .unwrap();
    let conf = d.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[engine]\ntmp_dir = \"{}\"\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{}\"\n",
            d.join("tmp").display(),
            bin.display(),
            netd.display()
        ),
    )
    .unwrap();
    let out = podman(
        d,
        &conf,
        &["network", "ls", "--format", "{{.Name}} {{.Driver}}"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "podman network ls: {stderr}");
    assert!(
        stdout.lines().any(|l| l == "manx-pods manx"),
        "podman dropped the Manx network:\n{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("Error validating CNI config"),
        "libcni's VERSION probe failed: {stderr}"
    );
    let inspect = podman(d, &conf, &["network", "inspect", "manx-pods"]);
    assert!(
        inspect.status.success(),
        "podman network inspect: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

fn podman(state: &Path, conf: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .arg("--root")
        .arg(state.join("root"))
        .arg("--runroot")
        .arg(state.join("runroot"))
        .args(args)
        .output()
        .expect("run podman")
}

/// With `log_file_path` set, the plugin logs there and only there: `ctr run
/// --cni` and podman show a plugin's stderr on the user's terminal. The
/// error still reaches the runtime as the CNI error result on stdout.
#[test]
fn with_a_log_file_nothing_goes_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cni.log");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "manx-pods",
        "type": "manx",
        "log_level": "debug",
        "log_file_path": log,
        "datastore_type": "embedded",
        "ipam": {"type": "manx-ipam"}
    });
    let mut child = Command::new(manx_bin())
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "logcheck")
        .env("CNI_NETNS", "/nonexistent/manx-logcheck")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 4, "{err}");
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("CNI command failed"), "log file: {logged}");
}
