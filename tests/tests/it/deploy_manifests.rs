//! Every deployment file parses and carries what its consumer requires:
//! Kubernetes objects (apiVersion, kind, metadata.name, workload selectors
//! matching template labels, containers with name and image), the CNI config
//! the init container installs, and the systemd units.

use std::path::{Path, PathBuf};

use serde_norway::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn check_pod_template(obj: &Value, what: &str) {
    let spec = &obj["spec"];
    let selector = spec["selector"]["matchLabels"]
        .as_mapping()
        .expect("selector.matchLabels");
    let labels = spec["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("template labels");
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{what}: selector {k:?} must match the template labels"
        );
    }
    let containers = spec["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert!(!containers.is_empty(), "{what}: no containers");
    let init = spec["template"]["spec"]["initContainers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    for c in containers.iter().chain(init.iter()) {
        assert!(
            s(c, &["name"]).is_some(),
            "{what}: container without a name"
        );
        assert!(
            s(c, &["image"]).is_some(),
            "{what}: container without an image"
        );
    }
}

#[test]
fn kubernetes_manifests_have_required_fields() {
    let mut kinds = Vec::new();
    for f in [
        "kubernetes/manx-node.yaml",
        "kubernetes/route-reflector.yaml",
    ] {
        for obj in docs(&deploy().join(f)) {
            let kind = s(&obj, &["kind"]).unwrap_or_else(|| panic!("{f}: object without kind"));
            assert!(
                s(&obj, &["apiVersion"]).is_some(),
                "{f}: {kind} without apiVersion"
            );
            let name = s(&obj, &["metadata", "name"])
                .unwrap_or_else(|| panic!("{f}: {kind} without metadata.name"));
            let what = format!("{f}: {kind} {name}");
            match kind {
                "DaemonSet" | "Deployment" => check_pod_template(&obj, &what),
                "ClusterRoleBinding" => {
                    assert!(obj["roleRef"]["name"].as_str().is_some(), "{what}: roleRef");
                    assert!(
                        obj["subjects"].as_sequence().is_some_and(|s| !s.is_empty()),
                        "{what}: subjects"
                    );
                }
                "ClusterRole" => assert!(obj["rules"].as_sequence().is_some(), "{what}: rules"),
                "ConfigMap" => {
                    for (k, v) in obj["data"].as_mapping().expect("data") {
                        assert!(v.is_string(), "{what}: data.{k:?} must be a string");
                    }
                    // The CNI config the init container installs is JSON once
                    // its placeholders are filled.
                    let conf = obj["data"]["cni_network_config"].as_str().unwrap();
                    let conf = conf
                        .replace("__ETCD_ENDPOINTS__", "https://10.0.0.1:2379")
                        .replace("__CNI_MTU__", "1440");
                    let v: serde_json::Value =
                        serde_json::from_str(&conf).expect("cni_network_config is JSON");
                    assert_eq!(v["plugins"][0]["type"], "manx");
                    assert_eq!(v["plugins"][0]["ipam"]["type"], "manx-ipam");
                }
                _ => {}
            }
            kinds.push(kind.to_string());
        }
    }
    for k in [
        "DaemonSet",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in deploy/kubernetes");
    }
}

#[test]
fn conflist_and_systemd_units() {
    let conflist = std::fs::read_to_string(deploy().join("cni/10-manx.conflist")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&conflist).unwrap();
    assert!(v["name"].is_string() && v["cniVersion"].is_string());
    assert_eq!(v["plugins"][0]["type"], "manx");
    for unit in ["systemd/manx-node.service", "systemd/manx-bgpd.service"] {
        let text = std::fs::read_to_string(deploy().join(unit)).unwrap();
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(text.contains(section), "{unit}: missing {section}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("ExecStart=/usr/local/bin/")),
            "{unit}: ExecStart"
        );
    }
    let containerfile = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    assert!(containerfile.contains("FROM ") && containerfile.contains("manx-node"));
}

/// manx-bfdd runs in a DaemonSet of its own (so a restart or update of the
/// manx-node pod leaves BFD Up, issue 20), on the host network, with its
/// socket in the /var/run/manx hostPath that manx-node mounts, and
/// manx-node is told not to start one (`MANX_BFDD=external`).
#[test]
fn manx_bfdd_runs_outside_the_agent_pod() {
    let objs = docs(&deploy().join("kubernetes/manx-node.yaml"));
    let daemonset = |name: &str| {
        objs.iter()
            .find(|o| {
                s(o, &["kind"]) == Some("DaemonSet") && s(o, &["metadata", "name"]) == Some(name)
            })
            .unwrap_or_else(|| panic!("no DaemonSet {name} in manx-node.yaml"))
    };
    let container = |ds: &Value, name: &str| -> Value {
        ds["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .and_then(|c| c.iter().find(|c| s(c, &["name"]) == Some(name)).cloned())
            .unwrap_or_else(|| panic!("no container {name}"))
    };
    let mounts_run_dir = |ds: &Value, c: &Value| {
        let volume = c["volumeMounts"]
            .as_sequence()
            .and_then(|m| {
                m.iter()
                    .find(|m| s(m, &["mountPath"]) == Some("/var/run/manx"))
            })
            .and_then(|m| s(m, &["name"]))
            .map(str::to_string);
        ds["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|v| {
                volume.as_deref() == s(v, &["name"])
                    && s(v, &["hostPath", "path"]) == Some("/var/run/manx")
            })
    };
    let (node, bfdd) = (daemonset("manx-node"), daemonset("manx-bfdd"));
    let (agent, daemon) = (container(node, "manx-node"), container(bfdd, "manx-bfdd"));
    assert!(bfdd["spec"]["template"]["spec"]["hostNetwork"].as_bool() == Some(true));
    let command: Vec<&str> = daemon["command"]
        .as_sequence()
        .expect("manx-bfdd command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        command,
        [
            "/usr/local/bin/manx-bfdd",
            "--socket",
            "/var/run/manx/bfdd.sock"
        ]
    );
    assert!(
        mounts_run_dir(node, &agent),
        "manx-node does not mount /var/run/manx"
    );
    assert!(
        mounts_run_dir(bfdd, &daemon),
        "manx-bfdd does not mount /var/run/manx"
    );
    let external = agent["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|e| s(e, &["name"]) == Some("MANX_BFDD") && s(e, &["value"]) == Some("external"));
    assert!(
        external,
        "manx-node would start its own manx-bfdd (set MANX_BFDD=external)"
    );
}
