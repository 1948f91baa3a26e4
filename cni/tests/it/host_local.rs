//! The plugin in real namespaces with Debian's `host-local` IPAM (no
//! datastore): ADD / CHECK / DEL per CNI version, pod-to-pod traffic through
//! the node, chaining, rollback, idempotent DEL.

use crate::common::*;

fn add_check_del(version: &str) {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf(version, data.path(), "10.20.1.0/24");
    let call = Call::new("ADD", "ctr-a", &pod, "web-0");

    let result = manx(&node, &call, &conf.to_string()).ok();
    assert_eq!(result["cniVersion"], version);
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 1);
    // 0.3.x/0.4.0 results carry "version" in ips; 1.0.0 does not.
    if version == "0.4.0" {
        assert_eq!(ips[0]["version"], "4");
    } else {
        assert!(ips[0].get("version").is_none(), "{result}");
    }
    let ip = result_ip(&result);
    assert!(ips[0]["address"].as_str().unwrap().ends_with("/32"));
    assert_eq!(ips[0]["interface"], 1);
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        host_if.starts_with("cali") && host_if.len() == 15,
        "{host_if}"
    );
    assert_eq!(result["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], pod.cni_netns());

    // Node side: the veth, up, proxy ARP, the /32 route.
    assert_eq!(node.cali_links(), vec![host_if.clone()]);
    let routes = node.routes();
    assert!(
        routes.contains(&format!("{ip} dev {host_if} scope link")),
        "{routes}"
    );
    let proxy_arp = node.exec(
        "cat",
        &[&format!("/proc/sys/net/ipv4/conf/{host_if}/proxy_arp")],
    );
    assert_eq!(proxy_arp.trim(), "1");
    let delay = node.exec(
        "cat",
        &[&format!("/proc/sys/net/ipv4/neigh/{host_if}/proxy_delay")],
    );
    assert_eq!(delay.trim(), "0");
    let link = node.ip_json(&["link", "show", "dev", &host_if]);
    assert_eq!(link[0]["mtu"], 1400);
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );

    // Pod side: address /32, link route to 169.254.1.1, default via it.
    assert_eq!(pod.addrs("eth0"), vec![format!("{ip}/32")]);
    let pod_routes = pod.routes();
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    assert!(
        pod_routes.contains("169.254.1.1 dev eth0 scope link"),
        "{pod_routes}"
    );
    assert_eq!(
        host_local_allocations(data.path(), "mxcn-net"),
        vec![ip.clone()]
    );

    // CHECK passes on the untouched pod.
    let check_conf = with_prev(&conf, &result);
    manx(
        &node,
        &call.clone().command("CHECK"),
        &check_conf.to_string(),
    )
    .ok();

    // DEL removes everything; a second DEL is fine.
    manx(&node, &call.clone().command("DEL"), &check_conf.to_string()).ok();
    assert!(node.cali_links().is_empty());
    assert!(!pod.links().contains(&"eth0".to_string()));
    assert!(!node.routes().contains(&ip));
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    manx(&node, &call.clone().command("DEL"), &conf.to_string()).ok();
}

#[test]
fn add_check_del_cni_1_0_0() {
    add_check_del("1.0.0");
}

#[test]
fn add_check_del_cni_0_4_0() {
    add_check_del("0.4.0");
}

#[test]
fn add_del_cni_0_3_1_and_1_1_0() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let data = tempfile::tempdir().unwrap();
    for (i, version) in ["0.3.1", "1.1.0"].iter().enumerate() {
        let pod = netns();
        let conf = host_local_conf(version, data.path(), "10.20.2.0/24");
        let call = Call::new("ADD", &format!("ctr-v{i}"), &pod, &format!("v{i}"));
        let out = manx(&node, &call, &conf.to_string());
        if *version == "1.1.0" {
            // The delegated plugin gets the same stdin (CNI spec
            // "Delegated plugins"); Debian's host-local speaks up to 1.0.0,
            // so it refuses and ADD fails cleanly with its code 1.
            out.err(1, "host-local");
            assert!(node.cali_links().is_empty());
            continue;
        }
        let result = out.ok();
        assert_eq!(result["cniVersion"], "0.3.1");
        assert_eq!(result["ips"][0]["version"], "4");
        manx(&node, &call.clone().command("DEL"), &conf.to_string()).ok();
    }
    assert!(node.cali_links().is_empty());
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
}

/// Two pods on one node reach each other through the node: /32 routes and
/// proxy ARP (the pods' only neighbour is 169.254.1.1).
#[test]
fn two_pods_ping_through_the_node() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let a = netns();
    let b = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.3.0/24").to_string();
    let ra = manx(&node, &Call::new("ADD", "ctr-a", &a, "pod-a"), &conf).ok();
    let rb = manx(&node, &Call::new("ADD", "ctr-b", &b, "pod-b"), &conf).ok();
    let ip_a = result_ip(&ra);
    let ip_b = result_ip(&rb);
    assert_ne!(ip_a, ip_b);
    assert!(
        a.try_exec("ping", &["-c", "2", "-W", "2", &ip_b]),
        "pod a cannot reach {ip_b}"
    );
    assert!(
        b.try_exec("ping", &["-c", "2", "-W", "2", &ip_a]),
        "pod b cannot reach {ip_a}"
    );
    // The node reaches pods by their /32 routes too.
    assert!(node.try_exec("ping", &["-c", "1", "-W", "2", &ip_a]));
    // The pod's neighbour for 169.254.1.1 is the node's fixed MAC.
    let neigh = a.ip(&["neigh", "show", "169.254.1.1"]);
    assert!(
        neigh.contains("ee:ee:ee:ee:ee:ee") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    // Without that entry, the node's proxy ARP answers for 169.254.1.1.
    a.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]);
    assert!(
        a.try_exec("ping", &["-c", "1", "-W", "2", &ip_b]),
        "proxy ARP did not answer for 169.254.1.1"
    );
    let neigh = a.ip(&["neigh", "show", "169.254.1.1"]);
    assert!(neigh.contains("ee:ee:ee:ee:ee:ee"), "{neigh}");
    manx(&node, &Call::new("DEL", "ctr-a", &a, "pod-a"), &conf).ok();
    // b can no longer reach a's address.
    assert!(!b.try_exec("ping", &["-c", "1", "-W", "1", &ip_a]));
    manx(&node, &Call::new("DEL", "ctr-b", &b, "pod-b"), &conf).ok();
    assert!(node.cali_links().is_empty());
}

/// manx first, then Debian's `tuning` with manx's result as prevResult
/// (a conflist as containerd runs it), then CHECK and DEL in reverse order.
#[test]
fn chained_before_tuning() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.4.0/24");
    let call = Call::new("ADD", "ctr-chain", &pod, "chained");
    let r1 = manx(&node, &call, &conf.to_string()).ok();

    let tuning = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "mxcn-net",
        "type": "tuning",
        "mtu": 1300,
        "sysctl": {"net.ipv4.conf.eth0.rp_filter": "0"},
        "prevResult": r1,
    });
    let tuning_bin = std::path::Path::new(DEBIAN_CNI).join("tuning");
    let r2 = run(&node, &tuning_bin, &call, &tuning.to_string()).ok();
    // tuning passes manx's result through.
    assert_eq!(r2["ips"], r1["ips"]);
    assert_eq!(r2["interfaces"][0]["name"], r1["interfaces"][0]["name"]);
    let link = pod.ip_json(&["link", "show", "dev", "eth0"]);
    assert_eq!(link[0]["mtu"], 1300);

    // CHECK with the final result, for both plugins.
    let check_conf = with_prev(&conf, &r2);
    manx(
        &node,
        &call.clone().command("CHECK"),
        &check_conf.to_string(),
    )
    .ok();
    let mut tuning_check = tuning.clone();
    tuning_check["prevResult"] = r2.clone();
    run(
        &node,
        &tuning_bin,
        &call.clone().command("CHECK"),
        &tuning_check.to_string(),
    )
    .ok();

    // DEL in reverse order.
    run(
        &node,
        &tuning_bin,
        &call.clone().command("DEL"),
        &tuning_check.to_string(),
    )
    .ok();
    manx(&node, &call.clone().command("DEL"), &check_conf.to_string()).ok();
    assert!(node.cali_links().is_empty());
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
}

/// manx after another plugin: its interfaces and IPs are appended to the
/// prevResult it got.
#[test]
fn chained_after_a_previous_result() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let prev = serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": pod.cni_netns()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
    });
    let conf = with_prev(
        &host_local_conf("1.0.0", data.path(), "10.20.5.0/24"),
        &prev,
    );
    let call = Call::new("ADD", "ctr-after", &pod, "after");
    let r = manx(&node, &call, &conf.to_string()).ok();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][1]["interface"], 2);
    manx(&node, &call.command("DEL"), &conf.to_string()).ok();
}

/// CHECK names what is wrong.
#[test]
fn check_reports_what_differs() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.6.0/24");
    let call = Call::new("ADD", "ctr-check", &pod, "checked");
    let r = manx(&node, &call, &conf.to_string()).ok();
    let check = call.clone().command("CHECK");
    let check_conf = with_prev(&conf, &r).to_string();

    // No prevResult: code 7.
    manx(&node, &check, &conf.to_string()).err(7, "prevResult");
    // Default route removed in the pod.
    pod.ip(&["route", "del", "default"]);
    manx(&node, &check, &check_conf).err(100, "route default via 169.254.1.1 dev eth0 is missing");
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    manx(&node, &check, &check_conf).ok();
    // Host route removed on the node.
    let ip = result_ip(&r);
    node.ip(&["route", "del", &format!("{ip}/32")]);
    manx(&node, &check, &check_conf).err(100, &format!("host route {ip}/32"));
    // Address removed in the pod.
    pod.ip(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    manx(&node, &check, &check_conf).err(100, &format!("address {ip} from prevResult is missing"));
    // Host veth gone.
    let host_if = r["interfaces"][0]["name"].as_str().unwrap();
    node.ip(&["link", "del", host_if]);
    manx(&node, &check, &check_conf).err(100, "interface eth0 is missing");
    // CHECK with 0.3.1 is not defined.
    let mut old = with_prev(&conf, &r);
    old["cniVersion"] = "0.3.1".into();
    manx(&node, &check, &old.to_string()).err(1, "0.4.0 or newer");
    manx(&node, &call.command("DEL"), &check_conf).ok();
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
}

/// DEL after the pod namespace is gone still removes the host veth and
/// releases the address.
#[test]
fn del_without_the_netns() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.7.0/24").to_string();
    let call = Call::new("ADD", "ctr-gone", &pod, "gone");
    manx(&node, &call, &conf).ok();
    let path = pod.cni_netns();
    drop(pod); // deletes the namespace (and with it the pod end of the veth)
    let mut del = call.clone().command("DEL");
    del.netns = path;
    manx(&node, &del, &conf).ok();
    assert!(node.cali_links().is_empty());
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    // And with no CNI_NETNS at all.
    del.netns = String::new();
    manx(&node, &del, &conf).ok();
}

/// A failed ADD leaves nothing: no veth, no allocation.
#[test]
fn failed_add_rolls_back() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.8.0/24").to_string();
    // The pod already has an eth0: the veth cannot be made after IPAM ADD.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    let call = Call::new("ADD", "ctr-fail", &pod, "failing");
    manx(&node, &call, &conf).err(100, "interface eth0 already exists");
    assert!(node.cali_links().is_empty());
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    assert!(!node.routes().contains("10.20.8."));

    // An exhausted range: IPAM's error comes back with its message.
    pod.ip(&["link", "del", "eth0"]);
    let tiny = serde_json::json!({
        "cniVersion": "1.0.0", "name": "mxcn-tiny", "type": "manx", "datastore_type": "none",
        "nodename": "node1",
        "ipam": {"type": "host-local", "dataDir": data.path().display().to_string(),
                 "ranges": [[{"subnet": "10.20.9.0/30"}]]}
    })
    .to_string();
    let other = netns();
    manx(&node, &Call::new("ADD", "ctr-t1", &other, "t1"), &tiny).ok();
    let out = manx(&node, &Call::new("ADD", "ctr-t2", &pod, "t2"), &tiny);
    assert_eq!(out.code, 1);
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .contains("host-local ADD failed"),
        "{out:?}"
    );
    assert_eq!(node.cali_links().len(), 1);
    manx(&node, &Call::new("DEL", "ctr-t1", &other, "t1"), &tiny).ok();
}

/// MTU: configured, or detected from the default route's interface minus
/// the 50-byte VXLAN overhead.
#[test]
fn mtu_detected_from_the_uplink() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns_with_uplink_mtu(9000);
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let mut conf = host_local_conf("1.0.0", data.path(), "10.20.10.0/24");
    conf["mtu"] = 0.into();
    let call = Call::new("ADD", "ctr-mtu", &pod, "mtu");
    manx(&node, &call, &conf.to_string()).ok();
    let link = pod.ip_json(&["link", "show", "dev", "eth0"]);
    assert_eq!(link[0]["mtu"], 8950);
    manx(&node, &call.command("DEL"), &conf.to_string()).ok();
}

/// A second ADD for a container that is attached fails, and touches
/// nothing: IPAM is not asked again (an IPAM that answers a repeated ADD
/// with the held addresses would otherwise see them released by the
/// rollback), and the pod keeps its interface and address.
#[test]
fn repeated_add_keeps_the_attached_pod() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.12.0/24").to_string();
    let call = Call::new("ADD", "ctr-twice", &pod, "twice");
    let ip = result_ip(&manx(&node, &call, &conf).ok());
    manx(&node, &call, &conf).err(100, "already attached");
    assert_eq!(
        host_local_allocations(data.path(), "mxcn-net"),
        vec![ip.clone()]
    );
    assert_eq!(pod.addrs("eth0"), vec![format!("{ip}/32")]);
    assert_eq!(node.cali_links().len(), 1);
    assert!(node.routes().contains(&ip), "{}", node.routes());
    manx(&node, &call.command("DEL"), &conf).ok();
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    assert!(node.cali_links().is_empty());
}

/// A failure after IPAM ADD and the veth pair (the datastore cannot be
/// opened, so the WorkloadEndpoint cannot be written) rolls both back.
#[test]
fn unusable_datastore_rolls_back_veth_and_allocation() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    // The store's directory would have to be inside a regular file.
    let blocker = data.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let mut conf = host_local_conf("1.0.0", data.path(), "10.20.13.0/24");
    conf["datastore_type"] = "embedded".into();
    conf["manx_db"] = blocker.join("manx.db").display().to_string().into();
    let call = Call::new("ADD", "ctr-nostore", &pod, "nostore");
    let out = manx(&node, &call, &conf.to_string());
    assert_eq!(out.code, 1, "{out:?}");
    let msg = out.json()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("not-a-dir"), "{msg}");
    assert!(node.cali_links().is_empty(), "{:?}", node.cali_links());
    assert!(pod.links().iter().all(|l| l != "eth0"));
    assert!(host_local_allocations(data.path(), "mxcn-net").is_empty());
    assert!(!node.routes().contains("10.20.13."));
}

/// A host veth left by an earlier sandbox of the same pod (whose DEL never
/// came) is replaced by the new pair.
#[test]
fn stale_host_veth_is_replaced() {
    if !prereqs().ok() {
        return;
    }
    let node = node_netns();
    let pod = netns();
    let data = tempfile::tempdir().unwrap();
    let conf = host_local_conf("1.0.0", data.path(), "10.20.14.0/24").to_string();
    let stale = cni::names::host_veth_name("default.reborn");
    node.ip(&[
        "link", "add", &stale, "type", "veth", "peer", "name", "oldpeer",
    ]);
    let call = Call::new("ADD", "ctr-reborn", &pod, "reborn");
    let result = manx(&node, &call, &conf).ok();
    assert_eq!(result["interfaces"][0]["name"], stale.as_str());
    assert_eq!(node.cali_links(), vec![stale.clone()]);
    // The old pair is gone with its peer; the new one reaches the pod.
    assert!(!node.links().contains(&"oldpeer".to_string()));
    let ip = result_ip(&result);
    assert_eq!(pod.addrs("eth0"), vec![format!("{ip}/32")]);
    assert!(
        node.routes()
            .contains(&format!("{ip} dev {stale} scope link")),
        "{}",
        node.routes()
    );
    manx(&node, &call.command("DEL"), &conf).ok();
    assert!(node.cali_links().is_empty());
}
