//! The node's local status socket (`<run dir>/status.sock`): manx-node
//! serves it here. The protocol (request, answer, encoding, socket path,
//! the client `manxctl node status|ready` uses) is the `manx-status` crate.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

pub use manx_status::{NodeStatus, PeerRow, Request, socket_path};

/// Serve `status()` on the socket until the task is dropped. Every request
/// line is answered with one status line (status is the only request; a
/// line that is not one is answered the same, as before the protocol had
/// a request type, and logged).
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
            match manx_status::decode_request(&line) {
                Ok(Request::Status) => {}
                Err(e) => tracing::debug!("status socket: {e}"),
            }
            let body = manx_status::encode_status(&status());
            let _ = w.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// manx-node's server and manx-status's client (manxctl's) agree.
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
            if let Ok(s) = manx_status::query(dir.path()).await {
                got = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        task.abort();
        let got = got.expect("no answer from the status socket");
        assert_eq!(got.node, "n9");
        assert!(got.ready);
    }
}
