//! `bindMode: NodeIP` and `listenPort` act on a running manx-node: its BGP
//! listener moves from every address to the node's IP, then to the new
//! port, without restarting manx-node (the speaker restarts once each).
//! One namespace with a veth uplink on 198.19.51.0/24; embedded datastore.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{BGPConfiguration, BGPConfigurationSpec, BindMode, ObjectMeta};
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const NODE: &str = "198.19.51.2";
const OTHER: &str = "198.19.51.1";
const LIMIT: Duration = Duration::from_secs(60);

fn start_node(ns: &Netns, dir: &Path) -> Daemon {
    crate::support::start_manx_node(ns, dir, "mxbind-node", "10.21.0.0/16", &[])
}

/// The node namespace's listening TCP sockets, as `addr:port` words.
fn listening(ns: &Netns) -> Vec<String> {
    ns.exec("ss", &["-ltnH"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

fn set_config(db: &Path, spec: BGPConfigurationSpec) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = Client::new(Arc::new(EmbeddedStore::open(db).await.unwrap()));
            client
                .apply(&BGPConfiguration {
                    metadata: ObjectMeta::named("default"),
                    spec,
                })
                .await
                .unwrap();
        });
}

#[test]
fn bind_mode_node_ip_and_listen_port_move_the_listener() {
    if !Prereqs::new().root().commands(&["ip", "ss"]).ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = Netns::new("mxbind");
    let node = Netns::new("mxbind");
    veth(&other, "eth0", &node, "eth0");
    other.ip(&["addr", "add", &format!("{OTHER}/24"), "dev", "eth0"]);
    node.ip(&["addr", "add", &format!("{NODE}/24"), "dev", "eth0"]);
    let mut daemon = start_node(&node, dir.path());
    let ok = eventually(LIMIT, || {
        listening(&node).iter().any(|l| l == "0.0.0.0:179")
    });
    assert!(ok, "{:?}\n{}", listening(&node), daemon.log_text());

    set_config(
        &dir.path().join("manx.db"),
        BGPConfigurationSpec {
            bind_mode: Some(BindMode::NodeIP),
            ..Default::default()
        },
    );
    let want = format!("{NODE}:179");
    let ok = eventually(LIMIT, || {
        let l = listening(&node);
        l.contains(&want) && !l.iter().any(|a| a.ends_with(":179") && a != &want)
    });
    assert!(ok, "{:?}\n{}", listening(&node), daemon.log_text());

    set_config(
        &dir.path().join("manx.db"),
        BGPConfigurationSpec {
            bind_mode: Some(BindMode::NodeIP),
            listen_port: Some(1179),
            ..Default::default()
        },
    );
    let want = format!("{NODE}:1179");
    let ok = eventually(LIMIT, || {
        let l = listening(&node);
        l.contains(&want) && !l.iter().any(|a| a.ends_with(":179"))
    });
    assert!(ok, "{:?}\n{}", listening(&node), daemon.log_text());
    assert!(daemon.alive(), "manx-node itself kept running");
    assert!(
        daemon
            .log_text()
            .contains("bindMode or listenPort changed: restarting the BGP speaker"),
        "{}",
        daemon.log_text()
    );
}
