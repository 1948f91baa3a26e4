//! The node's local status socket (`<run dir>/status.sock`): one JSON
//! request line in, one JSON response line out. `manxctl node status` and
//! `manxctl node ready` are its clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

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
}

/// What the status socket reports.
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
}

/// Where the socket lives in a run directory.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("status.sock")
}

/// Serve `status()` on the socket until the task is dropped.
pub async fn serve(
    path: PathBuf,
    status: Arc<dyn Fn() -> NodeStatus + Send + Sync>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&path)?;
    loop {
        let (sock, _) = listener.accept().await?;
        let status = status.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let body = serde_json::to_string(&status()).unwrap_or_default();
            let _ = w.write_all(body.as_bytes()).await;
            let _ = w.write_all(b"\n").await;
        });
    }
}

/// Ask the node at `run_dir` for its status.
pub async fn query(run_dir: &Path) -> Result<NodeStatus, String> {
    let path = socket_path(run_dir);
    let sock = UnixStream::connect(&path).await.map_err(|e| {
        format!(
            "cannot reach manx-node at {}: {e}: is manx-node running here (or set MANX_RUN_DIR)?",
            path.display()
        )
    })?;
    let (r, mut w) = sock.into_split();
    w.write_all(b"{\"cmd\":\"status\"}\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer from {}: {e}", path.display()))
}

/// calicoctl's `node status` text.
pub fn render(status: &NodeStatus) -> String {
    let mut out = String::new();
    out.push_str(if status.ready {
        "Manx process is running.\n\n"
    } else {
        "Manx process is running but not ready.\n\n"
    });
    if !status.not_ready.is_empty() {
        out.push_str(&format!("Not ready: {}\n\n", status.not_ready));
    }
    for w in &status.warnings {
        out.push_str(&format!("Warning: {w}\n"));
    }
    out.push_str("IPv4 BGP status\n");
    let rows: Vec<&PeerRow> = status
        .peers
        .iter()
        .filter(|p| !p.address.contains(':'))
        .collect();
    out.push_str(&peer_table(&rows));
    out.push_str("\nIPv6 BGP status\n");
    let rows6: Vec<&PeerRow> = status
        .peers
        .iter()
        .filter(|p| p.address.contains(':'))
        .collect();
    if rows6.is_empty() {
        out.push_str("No IPv6 peers found.\n");
    } else {
        out.push_str(&peer_table(&rows6));
    }
    out
}

fn peer_table(rows: &[&PeerRow]) -> String {
    let headers = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|p| {
            [
                p.address.clone(),
                p.peer_type.clone(),
                p.state.clone(),
                p.since.clone(),
                p.info.clone(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let line = |cells: [&str; 5]| {
        let inner: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!(" {:<w$} ", c, w = widths[i]))
            .collect();
        format!("|{}|\n", inner.join("|"))
    };
    let mut out = format!("+{sep}+\n");
    out.push_str(&line(headers));
    out.push_str(&format!("+{sep}+\n"));
    for r in &cells {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    out.push_str(&format!("+{sep}+\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_calicoctl_style_table() {
        let s = NodeStatus {
            node: "n1".into(),
            ready: true,
            not_ready: String::new(),
            peers: vec![PeerRow {
                address: "172.30.0.12".into(),
                peer_type: "node-to-node mesh".into(),
                state: "up".into(),
                since: "01:02:03".into(),
                info: "Established".into(),
                prefixes_received: 1,
                prefixes_accepted: 1,
                prefixes_advertised: 1,
            }],
            warnings: vec![],
        };
        let text = render(&s);
        assert!(
            text.contains("| PEER ADDRESS | PEER TYPE         | STATE | SINCE    | INFO        |"),
            "{text}"
        );
        assert!(
            text.contains("| 172.30.0.12  | node-to-node mesh | up    | 01:02:03 | Established |"),
            "{text}"
        );
        assert!(text.contains("No IPv6 peers found."));
    }

    #[tokio::test]
    async fn socket_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let task = tokio::spawn(serve(
            path.clone(),
            Arc::new(|| NodeStatus {
                node: "n9".into(),
                ready: true,
                ..Default::default()
            }),
        ));
        let mut got = None;
        for _ in 0..100 {
            if let Ok(s) = query(dir.path()).await {
                got = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        assert_eq!(got.unwrap().node, "n9");
    }
}
