//! Issue 18: a `CNI_NETNS` that is the namespace the plugin itself runs in
//! (`/proc/self/ns/net`, or `/run/netns/<name>` of that same namespace) is
//! refused with code 4 before anything is changed: ADD would otherwise put
//! the pod address and `default via 169.254.1.1` on the node's interfaces.
//! Also the Kubernetes name rules for `K8S_POD_NAME`/`K8S_POD_NAMESPACE`.
//! The plugin runs inside a test node namespace, never the root one.

use crate::common::*;

/// Everything ADD or DEL could change in `ns`.
fn state(ns: &Netns) -> String {
    [
        ns.ip(&["-d", "link", "show"]),
        ns.ip(&["addr", "show"]),
        ns.ip(&["-4", "route", "show", "table", "all"]),
        ns.ip(&["-6", "route", "show", "table", "all"]),
        ns.ip(&["rule", "show"]),
        ns.ip(&["neigh", "show", "proxy"]),
    ]
    .join("\n")
}

#[test]
fn own_namespace_as_cni_netns_is_code_4_and_changes_nothing() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.18.0/24").to_string();
    let before = state(&node);
    // The plugin runs in `node`; both paths name `node` itself.
    for path in ["/proc/self/ns/net".to_string(), node.cni_netns()] {
        for command in ["ADD", "DEL"] {
            let mut call = Call::new(command, "ctr-own", &node, "own");
            call.netns = path.clone();
            let out = manx(&node, &call, &conf);
            out.err(4, &format!("CNI_NETNS {path:?} is not valid"));
            out.err(4, "the network namespace the plugin itself runs in");
            assert_eq!(state(&node), before, "{command} with CNI_NETNS={path}");
        }
    }
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    // A namespace that is not the plugin's own is still accepted.
    let pod = netns();
    let call = Call::new("ADD", "ctr-own", &pod, "own");
    manx(&node, &call, &conf).ok();
    manx(&node, &call.clone().command("DEL"), &conf).ok();
}

#[test]
fn bad_kubernetes_names_are_code_4_and_change_nothing() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.19.0/24").to_string();
    let (node_before, pod_before) = (state(&node), state(&pod));
    let cases = [
        (
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../x",
            "K8S_POD_NAME \"../../x\" is not a Kubernetes pod name",
        ),
        (
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web_0",
            "K8S_POD_NAME \"Web_0\"",
        ),
        (
            "K8S_POD_NAMESPACE=a/b;K8S_POD_NAME=web",
            "K8S_POD_NAMESPACE \"a/b\" is not a Kubernetes namespace name",
        ),
    ];
    for (args, needle) in cases {
        for command in ["ADD", "DEL"] {
            let mut call = Call::new(command, "ctr-k8s", &pod, "web");
            call.args = args.into();
            manx(&node, &call, &conf).err(4, needle);
        }
    }
    assert_eq!(state(&node), node_before);
    assert_eq!(state(&pod), pod_before);
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
}
