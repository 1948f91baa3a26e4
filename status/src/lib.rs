//! manx-node's local status socket (`<run dir>/status.sock`): one JSON
//! request line in, one JSON answer line out. manx-node serves it
//! (`manx_node::status::serve`); `manxctl node status` and `manxctl node
//! ready` are clients ([`query`]). This crate is the protocol both sides
//! share, so manxctl does not link the agent.
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"node":"n1","ready":true,"not_ready":"","peers":[...],"warnings":[],"routes":[...]}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The run directory when `MANX_RUN_DIR` is not set.
pub const DEFAULT_RUN_DIR: &str = "/var/run/manx";

/// Where the socket lives in a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("status.sock")
}

/// A request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// The node's [`NodeStatus`].
    Status,
}

/// One BGP peer, as `manxctl node status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub address: String,
    /// `node-to-node mesh`, `global` or `node specific`.
    #[serde(rename = "type")]
    pub peer_type: String,
    /// `up`, `start`, `connect`, `active`, `opensent`, `openconfirm`
    /// (calicoctl prints BIRD's words: up when Established).
    pub state: String,
    /// When it entered the state (RFC 3339 or HH:MM:SS today).
    pub since: String,
    /// `Established`, or the last error.
    pub info: String,
    #[serde(default)]
    pub prefixes_received: u64,
    #[serde(default)]
    pub prefixes_accepted: u64,
    #[serde(default)]
    pub prefixes_advertised: u64,
    /// The BFD session's state (`up`, `down`, `init`, `admindown`); empty
    /// for a peer without BFD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bfd: String,
}

/// One best BGP route from outside the IP pools (a ToR's network, a default
/// route), as `manxctl node status --routes` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub prefix: String,
    /// Its BGP next hop.
    pub next_hop: String,
    /// `installed`, `unreachable` (its next hop cannot be resolved),
    /// `refused` (it would replace or shadow a route it must not) or
    /// `failed` (the kernel refused it).
    pub state: String,
    /// Installed: the kernel route (`via 198.19.50.1 dev eth0`); otherwise
    /// one line saying why not.
    pub info: String,
}

/// The answer to [`Request::Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub ready: bool,
    /// Why not ready (empty when ready).
    #[serde(default)]
    pub not_ready: String,
    pub peers: Vec<PeerRow>,
    /// Lines the operator should see (e.g. an IPIP pool this kernel cannot serve).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The BGP routes from outside the IP pools and what the dataplane made
    /// of each (the pools' own routes are not listed).
    #[serde(default)]
    pub routes: Vec<RouteRow>,
}

/// A request as its line on the socket (newline included).
pub fn encode_request(request: Request) -> String {
    line(&request)
}

/// Reads a request line.
pub fn decode_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad status request {line:?}: {e}"))
}

/// An answer as its line on the socket (newline included).
pub fn encode_status(status: &NodeStatus) -> String {
    line(status)
}

/// Reads an answer line.
pub fn decode_status(line: &str) -> Result<NodeStatus, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad status answer: {e}"))
}

fn line(v: &impl Serialize) -> String {
    // Plain structs of strings, bools and numbers: serialising cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_default();
    s.push('\n');
    s
}

/// Asks the node at `run_dir` for its status.
pub async fn query(run_dir: &Path) -> Result<NodeStatus, String> {
    let path = socket_path(run_dir);
    let sock = UnixStream::connect(&path).await.map_err(|e| {
        format!(
            "cannot reach manx-node at {}: {e}: is manx-node running here (or set MANX_RUN_DIR)?",
            path.display()
        )
    })?;
    let (r, mut w) = sock.into_split();
    w.write_all(encode_request(Request::Status).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    decode_status(&line).map_err(|e| format!("{} from {}", e, path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(encode_request(Request::Status), "{\"cmd\":\"status\"}\n");
        assert_eq!(
            decode_request("{\"cmd\":\"status\"}\n").unwrap(),
            Request::Status
        );
        assert!(decode_request("{\"cmd\":\"reboot\"}").is_err());
        let s = NodeStatus {
            node: "n1".into(),
            ready: false,
            not_ready: "waiting for BGP peers".into(),
            peers: vec![PeerRow {
                bfd: String::new(),
                address: "172.30.0.12".into(),
                peer_type: "global".into(),
                state: "active".into(),
                since: "01:02:03".into(),
                info: "Connect".into(),
                prefixes_received: 0,
                prefixes_accepted: 0,
                prefixes_advertised: 2,
            }],
            warnings: vec!["no IPIP".into()],
            routes: vec![RouteRow {
                prefix: "10.200.0.0/26".into(),
                next_hop: "203.0.113.7".into(),
                state: "unreachable".into(),
                info: "next hop 203.0.113.7 is unreachable".into(),
            }],
        };
        let line = encode_status(&s);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        assert!(line.contains("\"type\":\"global\""), "{line}");
        assert_eq!(decode_status(&line).unwrap(), s);
        assert!(line.contains("\"next_hop\":\"203.0.113.7\""), "{line}");
        // Older nodes may leave the defaulted fields out.
        let old = r#"{"node":"n2","ready":true,"peers":[]}"#;
        assert_eq!(decode_status(old).unwrap().node, "n2");
        assert!(decode_status(old).unwrap().routes.is_empty());
        assert!(decode_status("not json").is_err());
    }

    #[tokio::test]
    async fn query_names_the_socket_when_no_node_runs() {
        let dir = tempfile::tempdir().unwrap();
        let e = query(dir.path()).await.unwrap_err();
        assert!(
            e.contains(&socket_path(dir.path()).display().to_string())
                && e.contains("MANX_RUN_DIR"),
            "{e}"
        );
    }
}
