//! CNI plugin protocol tests (CNI spec 1.1 sections 2 and 5) on an
//! in-memory store.

use std::sync::Arc;

use cni_proto::Outcome;
use datastore::memory::MemoryStore;
use serde_json::json;

use super::*;
use crate::topology::{Pool, StaticTopology};

fn connector(ipam: Arc<Ipam>) -> Connector {
    Box::new(move |_, _| {
        let ipam = ipam.clone();
        Box::pin(async move { Ok(ipam) })
    })
}

fn setup() -> (Arc<Ipam>, Connector) {
    let topo = StaticTopology::new();
    topo.add_pool(Pool::new("v4", "10.30.0.0/24").unwrap());
    topo.add_pool(Pool::new("v6", "fd30::/120").unwrap());
    let ipam = Arc::new(Ipam::new(Arc::new(MemoryStore::new()), Arc::new(topo)));
    (ipam.clone(), connector(ipam))
}

fn env(cmd: &str, cid: &str) -> HashMap<String, String> {
    [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn conf(version: &str, v6: &str) -> Vec<u8> {
    json!({
        "cniVersion": version, "name": "k8s-pod-network", "type": "manx",
        "nodename": "n1",
        "ipam": {"type": "manx-ipam", "assign_ipv4": "true", "assign_ipv6": v6}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn add_returns_host_prefixes_and_records_pod_attributes() {
    let (ipam, c) = setup();
    let out = run(&env("ADD", "c1"), &conf("1.0.0", "true"), &c)
        .await
        .unwrap()
        .unwrap();
    let ips = out["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(
        ips[0]["address"].as_str().unwrap().ends_with("/32"),
        "{out}"
    );
    assert!(
        ips[1]["address"].as_str().unwrap().ends_with("/128"),
        "{out}"
    );
    assert!(ips[0].get("version").is_none(), "no version field in 1.0.0");
    assert_eq!(out["cniVersion"], "1.0.0");
    let held = ipam.ips_by_handle("k8s-pod-network.c1").await.unwrap();
    assert_eq!(held.len(), 2);
    let info = crate::ops::show_ip(&ipam, held[0]).await.unwrap();
    let attrs = info.attributes.unwrap();
    assert_eq!(attrs.secondary["pod"], "web-1");
    assert_eq!(attrs.secondary["namespace"], "default");
    assert_eq!(attrs.secondary["node"], "n1");
    // A repeated ADD gives the same addresses.
    let again = run(&env("ADD", "c1"), &conf("1.0.0", "true"), &c)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again["ips"], out["ips"]);
}

#[tokio::test]
async fn old_versions_carry_the_ip_version_field() {
    let (_, c) = setup();
    let out = run(&env("ADD", "c2"), &conf("0.3.1", "false"), &c)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out["ips"][0]["version"], "4");
    assert_eq!(out["ips"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn del_is_idempotent_and_check_follows_state() {
    let (ipam, c) = setup();
    let out = run(&env("ADD", "c3"), &conf("1.1.0", "false"), &c)
        .await
        .unwrap()
        .unwrap();
    let mut check_conf: Value = serde_json::from_slice(&conf("1.1.0", "false")).unwrap();
    check_conf["prevResult"] = out.clone();
    let check_bytes = check_conf.to_string().into_bytes();
    assert_eq!(
        run(&env("CHECK", "c3"), &check_bytes, &c).await.unwrap(),
        None
    );
    assert_eq!(
        run(&env("DEL", "c3"), &conf("1.1.0", "false"), &c)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        run(&env("DEL", "c3"), &conf("1.1.0", "false"), &c)
            .await
            .unwrap(),
        None
    );
    assert!(
        ipam.ips_by_handle("k8s-pod-network.c3")
            .await
            .unwrap()
            .is_empty()
    );
    let err = run(&env("CHECK", "c3"), &check_bytes, &c)
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::CHECK_FAILED);
}

#[tokio::test]
async fn errors_carry_spec_codes() {
    let (_, c) = setup();
    let code = |e: ErrorCode| e as u32;
    let e = run(&env("ADD", "c"), b"{not json", &c).await.unwrap_err();
    assert_eq!(e.code, code(ErrorCode::DecodeFailure));
    let e = run(&env("ADD", "c"), &conf("0.2.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::IncompatibleVersion));
    let e = run(&env("ADD", ""), &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidEnvironment));
    assert!(e.msg.starts_with("CNI_CONTAINERID is not set"), "{}", e.msg);
    let e = run(&HashMap::new(), &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidEnvironment));
    assert!(e.msg.starts_with("CNI_COMMAND is not set"), "{}", e.msg);
    // The environment is checked as the manx plugin checks it.
    let mut relative = env("ADD", "c");
    relative.insert("CNI_NETNS".into(), "var/run/netns/x".into());
    let e = run(&relative, &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidEnvironment));
    assert!(e.msg.contains("absolute path"), "{}", e.msg);
    // CHECK and GC need their versions; CHECK needs prevResult.
    let e = run(&env("CHECK", "c"), &conf("0.3.1", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::IncompatibleVersion));
    let e = run(&env("GC", ""), &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::IncompatibleVersion));
    let e = run(&env("CHECK", "c"), &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidNetworkConfig));
    assert!(e.msg.contains("prevResult"), "{}", e.msg);
    let mut bad: Value = serde_json::from_slice(&conf("1.0.0", "false")).unwrap();
    bad["ipam"]["assign_ipv4"] = json!("false");
    let e = run(&env("ADD", "c"), bad.to_string().as_bytes(), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidNetworkConfig));
    bad["ipam"]["assign_ipv4"] = json!("maybe");
    let stdin = bad.to_string().into_bytes();
    let e = run(&env("ADD", "c"), &stdin, &c).await.unwrap_err();
    assert_eq!(e.code, code(ErrorCode::InvalidNetworkConfig));
    let out = Outcome::new(&stdin, &Err(e));
    assert_eq!(out.exit_code, 1);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["code"], 7);
    assert_eq!(json["cniVersion"], "1.0.0");
    assert!(json["msg"].as_str().unwrap().contains("assign_ipv4"));
    // A datastore_type Manx does not know is code 2, as in the manx plugin.
    bad["ipam"]["assign_ipv4"] = json!("true");
    bad["datastore_type"] = json!("kubernetes");
    let e = run(&env("ADD", "c"), bad.to_string().as_bytes(), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, code(ErrorCode::UnsupportedField));
}

#[tokio::test]
async fn exhaustion_is_one_clear_line() {
    let topo = StaticTopology::new();
    topo.add_pool(
        Pool::new("tiny", "10.31.0.0/30")
            .unwrap()
            .with_block_size(30),
    );
    let ipam = Arc::new(Ipam::new(Arc::new(MemoryStore::new()), Arc::new(topo)));
    let c = connector(ipam);
    for i in 0..4 {
        run(&env("ADD", &format!("c{i}")), &conf("1.0.0", "false"), &c)
            .await
            .unwrap();
    }
    let e = run(&env("ADD", "c9"), &conf("1.0.0", "false"), &c)
        .await
        .unwrap_err();
    assert_eq!(e.code, codes::NO_ADDRESS);
    assert!(e.msg.starts_with("no address for node n1: "), "{}", e.msg);
    assert!(!e.msg.contains('\n'));
}

#[tokio::test]
async fn version_status_and_gc() {
    let (ipam, c) = setup();
    let v = run(&env("VERSION", ""), b"", &c).await.unwrap().unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    let v040 = run(&env("VERSION", ""), br#"{"cniVersion":"0.4.0"}"#, &c)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v040["cniVersion"], "0.4.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.1.0"))
    );
    assert_eq!(
        run(&env("STATUS", ""), &conf("1.1.0", "true"), &c)
            .await
            .unwrap(),
        None
    );
    for cid in ["keep", "stale"] {
        run(&env("ADD", cid), &conf("1.1.0", "false"), &c)
            .await
            .unwrap();
    }
    let mut gc: Value = serde_json::from_slice(&conf("1.1.0", "false")).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    run(&env("GC", ""), gc.to_string().as_bytes(), &c)
        .await
        .unwrap();
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.keep")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        ipam.ips_by_handle("k8s-pod-network.stale")
            .await
            .unwrap()
            .is_empty()
    );
}

/// GC is one runtime's view of one node: another node's pods, and
/// everything when the list is missing, are left alone.
#[tokio::test]
async fn gc_releases_only_this_nodes_unlisted_attachments() {
    let (ipam, c) = setup();
    let on = |node: &str| {
        let mut v: Value = serde_json::from_slice(&conf("1.1.0", "false")).unwrap();
        v["nodename"] = json!(node);
        v
    };
    for (node, cid) in [("n1", "mine-live"), ("n1", "mine-stale"), ("n2", "theirs")] {
        run(&env("ADD", cid), on(node).to_string().as_bytes(), &c)
            .await
            .unwrap();
    }
    let held = |cid: &str| {
        let ipam = ipam.clone();
        let h = format!("k8s-pod-network.{cid}");
        async move { ipam.ips_by_handle(&h).await.unwrap().len() }
    };
    // No list: an error naming the field, and nothing released.
    let err = run(&env("GC", ""), on("n1").to_string().as_bytes(), &c)
        .await
        .unwrap_err();
    assert_eq!(err.code, cni_proto::ErrorCode::InvalidNetworkConfig as u32);
    assert!(err.msg.contains("cni.dev/valid-attachments"), "{}", err.msg);
    for cid in ["mine-live", "mine-stale", "theirs"] {
        assert_eq!(held(cid).await, 1, "{cid}");
    }
    // n1's runtime lists its live pod: its stale one goes, n2's stays.
    let mut gc = on("n1");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "mine-live", "ifname": "eth0"}]);
    run(&env("GC", ""), gc.to_string().as_bytes(), &c)
        .await
        .unwrap();
    assert_eq!(held("mine-live").await, 1);
    assert_eq!(held("mine-stale").await, 0);
    assert_eq!(held("theirs").await, 1, "another node's pod was released");
}

#[test]
fn datastore_selection_config_overrides_env() {
    let c: NetConf = serde_json::from_value(json!({
        "name": "n", "datastore_type": "etcdv3", "etcd_endpoints": "http://127.0.0.1:1"
    }))
    .unwrap();
    let env: HashMap<String, String> = [("MANX_DB".to_string(), "/tmp/x.db".to_string())].into();
    assert!(matches!(
        c.datastore(&env).unwrap(),
        DatastoreConfig::Etcd(_)
    ));
    let c: NetConf = serde_json::from_value(json!({"name": "n"})).unwrap();
    match c.datastore(&env).unwrap() {
        DatastoreConfig::Embedded { path } => assert_eq!(path.to_str(), Some("/tmp/x.db")),
        other => panic!("{other:?}"),
    }
}
