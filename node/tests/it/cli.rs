//! manx-node's command line: the calico-node settings it reads, and a bad
//! setting refused with a message that names it and the fix. (Building this
//! test also makes cargo build the manx-node binary the e2e suite runs.)

use std::process::Command;

#[test]
fn help_lists_the_calico_node_settings() {
    let help = testkit::run(Command::new(env!("CARGO_BIN_EXE_manx-node")).arg("--help"));
    for var in [
        "NODENAME",
        "IP_AUTODETECTION_METHOD",
        "IP6",
        "MANX_IPV4POOL_CIDR",
        "MANX_IPV4POOL_IPIP",
        "MANX_IPV4POOL_VXLAN",
        "MANX_IPV4POOL_NAT_OUTGOING",
        "IP6_AUTODETECTION_METHOD",
        "MANX_IPV6POOL_CIDR",
        "MANX_IPV6POOL_BLOCK_SIZE",
        "MANX_IPV6POOL_VXLAN",
        "MANX_IPV6POOL_NAT_OUTGOING",
    ] {
        assert!(help.contains(var), "--help should mention {var}:\n{help}");
    }
}

#[test]
fn a_bad_ip_setting_is_refused_with_the_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_manx-node"))
        .env("IP", "10.0.0.300")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IP=\"10.0.0.300\"") && err.contains("autodetect"),
        "{err}"
    );
}
