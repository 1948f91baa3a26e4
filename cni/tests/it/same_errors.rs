//! The `manx` plugin and the `manx-ipam` IPAM plugin speak one CNI protocol
//! (crate `manx-cni-proto`): for the same bad environment or configuration
//! header both print the same error object (cniVersion, code, msg) and exit
//! 1.

use crate::common::*;

#[test]
fn both_plugins_give_the_same_error_for_the_same_bad_input() {
    if !prereqs().ok() {
        return;
    }
    let ipam_bin = manx_ipam_bin();
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = manx_ipam_conf("1.0.0", &data.path().join("manx.db"));
    let good_conf = conf.to_string();
    let good = Call::new("ADD", "ctr-same", &pod, "same");
    let set = |f: &dyn Fn(&mut Call)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let with = |field: &str, value: serde_json::Value| {
        let mut c = conf.clone();
        c[field] = value;
        c.to_string()
    };
    let cases: Vec<(&str, Call, String, u32)> = vec![
        (
            "relative CNI_NETNS",
            set(&|c| c.netns = "var/run/netns/x".into()),
            good_conf.clone(),
            4,
        ),
        (
            "CNI_NETNS with '..'",
            set(&|c| c.netns = "/var/run/netns/../netns/x".into()),
            good_conf.clone(),
            4,
        ),
        (
            "missing CNI_NETNS",
            set(&|c| c.netns = "/var/run/netns/mxcn-missing".into()),
            good_conf.clone(),
            4,
        ),
        (
            "bad container id",
            set(&|c| c.container_id = "_bad".into()),
            good_conf.clone(),
            4,
        ),
        (
            "no container id",
            set(&|c| c.container_id = String::new()),
            good_conf.clone(),
            4,
        ),
        (
            "bad ifname",
            set(&|c| c.ifname = "eth0/x".into()),
            good_conf.clone(),
            4,
        ),
        (
            "unknown command",
            set(&|c| c.command = "UP".into()),
            good_conf.clone(),
            4,
        ),
        (
            "no command",
            set(&|c| c.command = String::new()),
            good_conf.clone(),
            4,
        ),
        (
            "unknown CNI_ARGS key",
            set(&|c| c.args = "K8S_POD_NAME=x;FOO=1".into()),
            good_conf.clone(),
            4,
        ),
        (
            "no CNI_PATH",
            set(&|c| c.path = String::new()),
            good_conf.clone(),
            4,
        ),
        (
            "unsupported cniVersion",
            good.clone(),
            with("cniVersion", "0.2.0".into()),
            1,
        ),
        (
            "no cniVersion",
            good.clone(),
            with("cniVersion", serde_json::Value::Null),
            7,
        ),
        ("not JSON", good.clone(), "{\"cniVersion\":".into(), 6),
        ("no name", good.clone(), with("name", "".into()), 7),
        ("bad name", good.clone(), with("name", "a b".into()), 7),
        (
            "unknown datastore_type",
            good.clone(),
            with("datastore_type", "kubernetes".into()),
            2,
        ),
        (
            "undecodable prevResult",
            good.clone(),
            with("prevResult", serde_json::json!({"ips": [{"address": "x"}]})),
            6,
        ),
        (
            "CHECK before 0.4.0",
            good.clone().command("CHECK"),
            with("cniVersion", "0.3.1".into()),
            1,
        ),
        (
            "CHECK without prevResult",
            good.clone().command("CHECK"),
            good_conf.clone(),
            7,
        ),
        (
            "GC before 1.1.0",
            good.clone().command("GC"),
            good_conf.clone(),
            1,
        ),
    ];
    for (what, call, stdin, code) in cases {
        let from_manx = manx(&node, &call, &stdin);
        let from_ipam = run(&node, &ipam_bin, &call, &stdin);
        let (m, i) = (from_manx.err(code, ""), from_ipam.err(code, ""));
        assert_eq!(m, i, "{what}: manx and manx-ipam differ");
        assert!(
            !m["msg"].as_str().unwrap_or_default().is_empty(),
            "{what}: no message"
        );
    }
    // Nothing was created by any of them.
    assert!(node.cali_links().is_empty());
}
