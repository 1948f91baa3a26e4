//! Every bad environment or configuration, through the binary: the CNI
//! error code, a message naming what to fix, exit code 1, and nothing
//! created on the node.

use crate::common::*;

#[test]
fn bad_environment_and_config_give_codes_and_messages() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.11.0/24").to_string();
    let good = Call::new("ADD", "ctr-err", &pod, "err");
    let set = |f: &dyn Fn(&mut Call)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let env_cases: Vec<(Call, u32, &str)> = vec![
        (
            set(&|c| c.command = String::new()),
            4,
            "CNI_COMMAND is not set",
        ),
        (
            set(&|c| c.command = "UP".into()),
            4,
            "CNI_COMMAND \"UP\" is not a CNI command",
        ),
        (
            set(&|c| c.container_id = String::new()),
            4,
            "CNI_CONTAINERID is not set",
        ),
        (
            set(&|c| c.container_id = "_bad".into()),
            4,
            "CNI_CONTAINERID \"_bad\" is not valid",
        ),
        (set(&|c| c.netns = String::new()), 4, "CNI_NETNS is not set"),
        (
            set(&|c| c.netns = "/var/run/netns/../netns/x".into()),
            4,
            "'..'",
        ),
        (
            set(&|c| c.netns = "/var/run/netns/mxcn-missing".into()),
            4,
            "does not exist",
        ),
        (
            set(&|c| c.ifname = "eth0/x".into()),
            4,
            "CNI_IFNAME \"eth0/x\" is not a valid interface name: at most 15 characters, no '/', ':' or spaces",
        ),
        (
            set(&|c| c.ifname = "averyveryverylongname".into()),
            4,
            "at most 15 characters",
        ),
        (
            set(&|c| c.args = "K8S_POD_NAME=x;FOO=1".into()),
            4,
            "unknown key \"FOO\"",
        ),
        (set(&|c| c.path = String::new()), 4, "CNI_PATH is not set"),
        (
            set(&|c| c.path = "/nonexistent".into()),
            7,
            "IPAM plugin \"host-local\" was not found in CNI_PATH",
        ),
    ];
    for (call, code, needle) in env_cases {
        let out = manx(&node, &call, &conf);
        let v = out.err(code, needle);
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    let mut no_ipam: serde_json::Value = serde_json::from_str(&conf).unwrap();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    let config_cases: Vec<(String, u32, &str)> = vec![
        ("".into(), 6, "not valid JSON"),
        ("{\"cniVersion\":".into(), 6, "not valid JSON"),
        ("[1,2]".into(), 6, "JSON object"),
        (r#"{"cniVersion":"0.2.0","name":"n","ipam":{"type":"host-local"}}"#.into(), 1, "cniVersion \"0.2.0\" is not supported"),
        (r#"{"cniVersion":"1.0.0","ipam":{"type":"host-local"}}"#.into(), 7, "no \"name\""),
        (no_ipam.to_string(), 7, "no \"ipam\" section"),
        (r#"{"cniVersion":"1.0.0","name":"n","mtu":20,"ipam":{"type":"host-local"}}"#.into(), 7, "mtu 20 is not valid"),
        (r#"{"cniVersion":"1.0.0","name":"n","datastore_type":"kubernetes","ipam":{"type":"host-local"}}"#.into(), 2, "datastore_type \"kubernetes\" is not supported"),
    ];
    for (stdin, code, needle) in config_cases {
        manx(&node, &good, &stdin).err(code, needle);
    }
    // Nothing was created by any of them.
    assert!(node.cali_links().is_empty());
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
}

/// VERSION answers without a configuration.
#[test]
fn version_lists_supported_versions() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let call = Call::new("VERSION", "", &pod, "v");
    let v = manx(&node, &call, r#"{"cniVersion":"0.4.0"}"#).ok();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(
        v["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let v = manx(&node, &call, "").ok();
    assert_eq!(v["cniVersion"], "1.1.0");
}

/// The shipped conflist parses, and its manx entry is a valid config.
#[test]
fn deploy_conflist_is_valid() {
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/cni/10-manx.conflist"
    ))
    .unwrap();
    let list: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(list["name"], "k8s-pod-network");
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins[0]["type"], "manx");
    assert_eq!(plugins[1]["type"], "portmap");
    assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
    // As libcni does: each plugin gets name and cniVersion from the list.
    let mut manx_conf = plugins[0].clone();
    manx_conf["name"] = list["name"].clone();
    manx_conf["cniVersion"] = list["cniVersion"].clone();
    let conf = cni::config::NetConf::parse(manx_conf.to_string().as_bytes()).unwrap();
    assert_eq!(conf.ipam_type.as_deref(), Some("manx-ipam"));
    assert_eq!(conf.datastore.datastore_type.as_deref(), Some("etcdv3"));
    assert_eq!(conf.nodename_file, "/var/lib/manx/nodename");
}
