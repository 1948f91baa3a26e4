//! What several node tests share: manx-node started in a test namespace on
//! an embedded datastore in a scratch directory.

use std::path::Path;

use testkit::{Daemon, Netns};

/// Start manx-node in `ns` as node `nodename`: embedded store
/// `<dir>/manx.db`, run dir `<dir>/run`, uplink `eth0`, a default direct
/// IPv4 pool `pool_cidr` without NAT, and `extra` variables on top.
pub fn start_manx_node(
    ns: &Netns,
    dir: &Path,
    nodename: &str,
    pool_cidr: &str,
    extra: &[(&str, &str)],
) -> Daemon {
    let db = dir.join("manx.db");
    let run = dir.join("run");
    let nodename_file = dir.join("nodename");
    let mut env = vec![
        ("DATASTORE_TYPE", "embedded"),
        ("MANX_DB", db.to_str().unwrap()),
        ("NODENAME", nodename),
        ("IP", "autodetect"),
        ("IP_AUTODETECTION_METHOD", "interface=eth0"),
        ("MANX_IPV4POOL_CIDR", pool_cidr),
        ("MANX_IPV4POOL_IPIP", "Never"),
        ("MANX_IPV4POOL_VXLAN", "Never"),
        ("MANX_IPV4POOL_NAT_OUTGOING", "false"),
        ("MANX_RUN_DIR", run.to_str().unwrap()),
        ("MANX_NODENAME_FILE", nodename_file.to_str().unwrap()),
        ("MANX_HEALTH_LISTEN", "127.0.0.1:9099"),
        ("MANX_LOG_LEVEL", "info"),
    ];
    env.extend_from_slice(extra);
    Daemon::spawn(
        ns,
        dir,
        "manx-node",
        env!("CARGO_BIN_EXE_manx-node"),
        &[],
        &env,
    )
}

/// BIRD 2 (`/usr/sbin/bird`) in the foreground in `ns` with the config
/// `conf` and its control socket at `sock`, its log in `dir`: the ToR or
/// peer of the namespace tests.
pub fn spawn_bird(ns: &Netns, dir: &Path, conf: &Path, sock: &Path) -> Daemon {
    Daemon::spawn(
        ns,
        dir,
        "bird",
        "/usr/sbin/bird",
        &[
            "-f",
            "-s",
            sock.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ],
        &[],
    )
}
