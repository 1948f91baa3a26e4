//! The CNI IPAM socket this agent serves (issue 17): `manx-ipam` ADDs and
//! DELs for this node go to one long-lived allocator here
//! ([`ipam::service`]) instead of each plugin process connecting to the
//! datastore and re-reading the node's blocks; a plugin finding no socket,
//! or no answer in time, allocates directly under the host claim lock.
//!
//! The socket is `ipam-<node>-agent.sock` in the claim lock folder the
//! plugins use: `MANX_IPAM_LOCK_DIR` if set, else this agent's run dir
//! (`MANX_RUN_DIR`, default /var/run/manx, manx-ipam's default folder).
//! The allocator takes the same host claim lock and empty-block grace as
//! the plugins, so served and direct allocations coordinate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datastore::Datastore;
use ipam::resources::DatastoreTopology;
use ipam::{Ipam, IpamOptions};

/// The plugins' claim lock folder variable.
pub const LOCK_DIR_ENV: &str = "MANX_IPAM_LOCK_DIR";

/// The serving socket; stops serving and removes the file when dropped.
#[derive(Debug)]
pub struct IpamSocket {
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IpamSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The folder of the socket: `MANX_IPAM_LOCK_DIR`, else `run_dir`.
pub fn folder(run_dir: &Path) -> PathBuf {
    std::env::var_os(LOCK_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| run_dir.to_path_buf())
}

/// Serves `node`'s IPAM socket in `dir` over `store` (`datastore` is its
/// `DatastoreConfig::describe`, which requests must name). `None`, logged,
/// when the socket cannot be bound: the plugins then allocate directly.
pub fn start(
    store: Arc<dyn Datastore>,
    datastore: &str,
    node: &str,
    dir: &Path,
    grace: Duration,
) -> Option<IpamSocket> {
    let opts = IpamOptions {
        claim_lock_dir: Some(dir.to_path_buf()),
        empty_block_grace: grace,
        ..Default::default()
    };
    let topo = DatastoreTopology::new(store.clone());
    let ipam = Arc::new(Ipam::new(store, Arc::new(topo)).with_options(opts));
    let server = ipam::service::Server::new(ipam, node, datastore);
    match server.bind(dir) {
        Ok((listener, path)) => {
            tracing::info!(path = %path.display(), "serving CNI IPAM on a local socket");
            Some(IpamSocket {
                path,
                task: tokio::spawn(server.serve(listener)),
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the CNI IPAM socket; manx-ipam allocates directly");
            None
        }
    }
}
